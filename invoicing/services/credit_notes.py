"""Credit notes: corrections of a finalized invoice, in full or in part, per line or by amount.

What a note may credit (per line: its amount less its discount less what earlier notes credited on it; per tax
rate: the rate's net on the invoice less what was credited at that rate; in total: the invoice's total less its
credit notes) is computed under the customer's row lock, then the invoice's, so two notes issued at once
queue and never over-credit together.

Taxes are given back per tax rate on the running total: after a note, the tax credited at a rate is
round(rate tax x cumulative net credited / rate net), so notes that together credit the whole invoice give back
exactly its tax. A note first reduces what its invoice still owes; the rest is refunded, credited to the
customer's balance or offset against another open invoice (`CreditNote.Settlement`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation, localcontext

from django.db import transaction
from django.db.models import Sum

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.selectors import customer_today
from customers.models import BillingEntity, Customer
from invoicing.models import (
    ZERO,
    Allocation,
    CreditNote,
    CreditNoteLine,
    CustomerBalanceTransaction,
    DocumentSequence,
    Invoice,
    InvoiceLine,
    Payment,
)
from invoicing.pdf import party_snapshot_for_customer, party_snapshot_for_entity
from invoicing.pricing import exact_context
from invoicing.pricing.rounding import allocate_by_largest_remainder, round_money
from invoicing.pricing.tax import STANDARD
from invoicing.services.payments import (
    _lock_invoice,
    apply_allocation,
    credit_customer_balance,
    lock_customer,
    money_amount,
    refund_credit_balance,
    refundable,
)

CREDITABLE_STATUSES = (Invoice.Status.FINALIZED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)
OPEN_STATUSES = (Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE)
MAX_MEMO_LENGTH = 5_000
MAX_KEY_LENGTH = CreditNote._meta.get_field("idempotency_key").max_length
TREATMENT_NAMES = {"exempt": "Tax exempt", "reverse_charge": "Reverse charge", "not_taxable": "No tax"}

TaxKey = tuple[int | None, Decimal, str]


@dataclass(frozen=True)
class CreditLineRequest:
    """Credit one invoice line: an `amount` before tax, or a `quantity` of it (priced at its unit price net of
    the line's discount share)."""

    invoice_line: InvoiceLine | int
    amount: Decimal | None = None
    quantity: Decimal | None = None


@dataclass
class CreditableLine:
    line: InvoiceLine
    net: Decimal  # amount less discount
    credited: Decimal  # by earlier notes
    creditable: Decimal = ZERO  # what may still be credited, within its line and its tax rate

    @property
    def remaining(self) -> Decimal:
        return max(ZERO, self.net - self.credited)


@dataclass
class TaxGroup:
    """One tax rate of the invoice: its lines' net and tax, and what earlier notes credited of them."""

    key: TaxKey
    name: str
    net: Decimal = ZERO
    tax: Decimal = ZERO
    credited_net: Decimal = ZERO
    credited_tax: Decimal = ZERO
    lines: list[CreditableLine] = field(default_factory=list)

    @property
    def room(self) -> Decimal:
        return max(ZERO, self.net - self.credited_net)

    def tax_through(self, cumulative_net: Decimal, currency: str) -> Decimal:
        """The tax credited at this rate once `cumulative_net` of its net has been credited."""
        if self.key[2] != STANDARD or self.net <= 0:
            return ZERO
        if cumulative_net == self.net:
            return self.tax
        with localcontext(exact_context()):
            return round_money(self.tax * cumulative_net / self.net, currency)


@dataclass
class Creditable:
    """What remains creditable on an invoice, line by line and rate by rate."""

    invoice: Invoice
    lines: dict[int, CreditableLine]
    groups: dict[TaxKey, TaxGroup]

    @property
    def total(self) -> Decimal:
        """The invoice's total less its credit notes (tax included)."""
        return max(ZERO, self.invoice.total - self.invoice.credit_notes_total)

    @property
    def net(self) -> Decimal:
        """What can still be credited before tax, over every line."""
        return sum((line.creditable for line in self.lines.values()), ZERO)


def _money(amount: Decimal, currency: str) -> str:
    """An amount as people read it in a message: '30.00 EUR', not the column's '30.0000'."""
    return f"{round_money(amount, currency)} {currency}"


def _tax_key(line: InvoiceLine) -> TaxKey:
    return (line.tax_rate_id, line.tax_percent.normalize(), line.tax_treatment)


def _group_name(invoice: Invoice, line: InvoiceLine) -> str:
    for entry in invoice.tax_breakdown or []:
        if (
            isinstance(entry, dict)
            and entry.get("rate_id") == line.tax_rate_id
            and entry.get("treatment") == line.tax_treatment
            and _same_percent(entry.get("percent"), line.tax_percent)
        ):
            return str(entry.get("name") or "Tax")
    if line.tax_rate_id is not None:
        return line.tax_rate.name
    return TREATMENT_NAMES.get(line.tax_treatment, "Tax")


def _same_percent(value: object, percent: Decimal) -> bool:
    try:
        return Decimal(str(value)) == percent
    except InvalidOperation:
        return False


def creditable(invoice: Invoice) -> Creditable:
    """What remains creditable on `invoice` (read it under the invoice's lock to act on it)."""
    lines = list(invoice.lines.select_related("tax_rate").order_by("position", "id"))
    credited = {
        row["invoice_line"]: (row["net"], row["tax"])
        for row in CreditNoteLine.objects.filter(invoice_line__invoice=invoice)
        .values("invoice_line")
        .annotate(net=Sum("amount"), tax=Sum("tax_amount"))
    }
    groups: dict[TaxKey, TaxGroup] = {}
    by_line: dict[int, CreditableLine] = {}
    for line in lines:
        key = _tax_key(line)
        group = groups.get(key)
        if group is None:
            group = groups[key] = TaxGroup(key=key, name=_group_name(invoice, line))
        net_credited, tax_credited = credited.get(line.pk, (ZERO, ZERO))
        entry = CreditableLine(line=line, net=line.amount - line.discount_amount, credited=net_credited)
        group.net += entry.net
        group.tax += line.tax_amount
        group.credited_net += net_credited
        group.credited_tax += tax_credited
        if entry.net > 0:
            group.lines.append(entry)
        by_line[line.pk] = entry
    currency = str(invoice.currency)
    for group in groups.values():
        remaining = [entry.remaining for entry in group.lines]
        if sum(remaining, ZERO) <= group.room:
            parts = remaining
        else:
            # Credits on the same rate (an unused-time line) leave less to credit than the lines add up to.
            parts = allocate_by_largest_remainder(group.room, remaining, currency)
        for entry, part in zip(group.lines, parts, strict=True):
            entry.creditable = part
    return Creditable(invoice=invoice, lines=by_line, groups=groups)


def remaining_creditable(invoice: Invoice) -> Decimal:
    """The invoice's total less the credit notes issued against it."""
    return max(ZERO, invoice.total - invoice.credit_notes_total)


# --- what a note credits ---------------------------------------------------------------------------------------


def _quantity(value: object, *, field_name: str) -> Decimal:
    try:
        quantity = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise BillingError(f"{value!r} is not a quantity.", field=field_name) from None
    if not quantity.is_finite() or quantity <= 0:
        raise BillingError("The quantity must be greater than zero.", field=field_name)
    exponent = quantity.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -12:
        raise BillingError("The quantity has too many digits (12 decimal places at most).", field=field_name)
    return quantity


def _amount_of_quantity(entry: CreditableLine, quantity: Decimal, currency: str, *, field_name: str) -> Decimal:
    line = entry.line
    if line.quantity <= 0:
        raise BillingError(f"Line '{line.description}' has no quantity to credit: give an amount.", field=field_name)
    if quantity > line.quantity:
        raise BillingError(f"The line's quantity is {line.quantity.normalize():f}: {quantity.normalize():f} is more.",
                           field=field_name)
    if quantity == line.quantity:
        return entry.net
    with localcontext(exact_context()):
        # The unit price net of the line's share of the discount.
        return round_money(line.unit_price * quantity * entry.net / line.amount, currency)


def _requested_lines(state: Creditable, requests: Sequence[CreditLineRequest]) -> list[tuple[CreditableLine,
                                                                                             Decimal, Decimal | None]]:
    if not requests:
        raise BillingError("Say which lines to credit.", field="lines")
    currency = str(state.invoice.currency)
    chosen: list[tuple[CreditableLine, Decimal, Decimal | None]] = []
    seen: set[int] = set()
    for index, request in enumerate(requests):
        where = f"lines[{index}]"
        if not isinstance(request, CreditLineRequest):
            raise BillingError("Each line is an invoice line with an amount or a quantity.", field=where)
        pk = request.invoice_line if isinstance(request.invoice_line, int) else request.invoice_line.pk
        entry = state.lines.get(pk) if isinstance(pk, int) and not isinstance(pk, bool) else None
        if entry is None:
            raise BillingError(f"Invoice {state.invoice} has no line {pk!r}.", field=f"{where}.invoice_line")
        if pk in seen:
            raise BillingError("The same invoice line is listed twice.", field=f"{where}.invoice_line")
        seen.add(pk)
        if (request.amount is None) == (request.quantity is None):
            raise BillingError("Give either an amount or a quantity for the line.", field=where)
        if entry.net <= 0:
            raise BillingError(f"Line '{entry.line.description}' is a credit or free: there is nothing to credit.",
                               field=f"{where}.invoice_line")
        quantity: Decimal | None = None
        if request.quantity is not None:
            quantity = _quantity(request.quantity, field_name=f"{where}.quantity")
            amount = _amount_of_quantity(entry, quantity, currency, field_name=f"{where}.quantity")
            if amount <= 0:
                raise BillingError("That quantity credits nothing once rounded.", field=f"{where}.quantity")
            amount_field = f"{where}.quantity"
        else:
            amount = money_amount(request.amount, currency, field=f"{where}.amount")
            amount_field = f"{where}.amount"
        if amount > entry.remaining:
            raise BillingError(
                f"{_money(amount, currency)} is more than the {_money(entry.remaining, currency)} left to credit on "
                f"line '{entry.line.description}' (its amount less discount and earlier credit notes).",
                field=amount_field,
            )
        chosen.append((entry, amount, quantity))
    # Lines of one tax rate may not credit more than the rate's net on the invoice (credits on that rate).
    per_group: dict[TaxKey, Decimal] = {}
    for entry, amount, _ in chosen:
        key = _tax_key(entry.line)
        per_group[key] = per_group.get(key, ZERO) + amount
    for key, amount in per_group.items():
        group = state.groups[key]
        if amount > group.room:
            raise BillingError(
                f"Only {_money(group.room, currency)} is left to credit at {group.name} on invoice {state.invoice}.",
                field="lines",
            )
    return chosen


def _spread_amount(state: Creditable, amount: object) -> list[tuple[CreditableLine, Decimal, Decimal | None]]:
    currency = str(state.invoice.currency)
    amount = money_amount(amount, currency, field="amount")
    entries = [entry for entry in state.lines.values() if entry.creditable > 0]
    available = sum((entry.creditable for entry in entries), ZERO)
    if amount > available:
        raise BillingError(
            f"{_money(amount, currency)} is more than the {_money(available, currency)} (before tax) left to credit on "
            f"invoice "
            f"{state.invoice}.",
            field="amount",
        )
    parts = allocate_by_largest_remainder(amount, [entry.creditable for entry in entries], currency)
    return [(entry, part, None) for entry, part in zip(entries, parts, strict=True) if part > 0]


def _in_full(state: Creditable) -> list[tuple[CreditableLine, Decimal, Decimal | None]]:
    chosen = [(entry, entry.creditable, None) for entry in state.lines.values() if entry.creditable > 0]
    if not chosen:
        raise BillingError(f"Nothing is left to credit on invoice {state.invoice}.", field="invoice")
    return chosen


# --- issuing ---------------------------------------------------------------------------------------------------


@dataclass
class _Draft:
    lines: list[CreditNoteLine]
    subtotal: Decimal
    tax_total: Decimal
    tax_breakdown: list[dict[str, object]]


def _draft(state: Creditable, chosen: list[tuple[CreditableLine, Decimal, Decimal | None]]) -> _Draft:
    currency = str(state.invoice.currency)
    by_group: dict[TaxKey, list[tuple[CreditableLine, Decimal, Decimal | None]]] = {}
    for item in chosen:
        by_group.setdefault(_tax_key(item[0].line), []).append(item)
    taxes: dict[int, Decimal] = {}
    breakdown: list[dict[str, object]] = []
    for key, items in by_group.items():
        group = state.groups[key]
        net = sum((amount for _, amount, _ in items), ZERO)
        # Rounded once per rate and note, on the running total: earlier notes' rounding is made good here.
        tax = group.tax_through(group.credited_net + net, currency) - group.credited_tax
        tax = max(tax, ZERO)
        for (entry, _, _), part in zip(items, allocate_by_largest_remainder(tax, [a for _, a, _ in items], currency),
                                       strict=True):
            taxes[entry.line.pk] = part
        breakdown.append({
            "name": group.name,
            "percent": format(key[1], "f"),
            "treatment": key[2],
            "rate_id": key[0],
            "taxable_amount": format(net, "f"),
            "tax_amount": format(tax, "f"),
        })
    breakdown.sort(key=lambda row: (-Decimal(str(row["percent"])), str(row["name"]), str(row["treatment"])))
    ordered = sorted(chosen, key=lambda item: (item[0].line.position, item[0].line.pk))
    rows = [
        CreditNoteLine(
            invoice_line=entry.line,
            position=position,
            description=entry.line.description,
            quantity=quantity,
            amount=amount,
            tax_rate_id=entry.line.tax_rate_id,
            tax_percent=entry.line.tax_percent,
            tax_amount=taxes[entry.line.pk],
            product_id=entry.line.product_id,
            period_start=entry.line.period_start,
            period_end=entry.line.period_end,
        )
        for position, (entry, amount, quantity) in enumerate(ordered)
    ]
    subtotal = sum((row.amount for row in rows), ZERO)
    tax_total = sum((row.tax_amount for row in rows), ZERO)
    return _Draft(rows, subtotal, tax_total, breakdown)


def _next_number(entity: BillingEntity) -> tuple[int, str]:
    """The next number of the entity's credit-note series; the row stays locked until the transaction ends,
    so concurrent notes queue here and a rolled-back one gives its number back (gapless)."""
    series = DocumentSequence.objects.select_for_update().filter(
        billing_entity=entity, kind=DocumentSequence.Kind.CREDIT_NOTE
    )
    sequence = series.first()
    if sequence is None:
        DocumentSequence.objects.bulk_create(
            [DocumentSequence(billing_entity=entity, kind=DocumentSequence.Kind.CREDIT_NOTE)], ignore_conflicts=True
        )
        sequence = series.get()
    number = sequence.next_number
    sequence.next_number = number + 1
    sequence.save(update_fields=["next_number"])
    return number, f"{entity.credit_note_prefix}-{number:06d}"


def _refund_payment_for(invoice: Invoice, amount: Decimal) -> Payment | None:
    """The latest succeeded payment allocated to the invoice that can still pay `amount` back, so a card refund
    goes back through its gateway; None: the refund is made by hand."""
    paid_with = Allocation.objects.filter(invoice=invoice, kind=Allocation.Kind.PAYMENT).values("payment")
    for payment in Payment.objects.filter(pk__in=paid_with, status=Payment.Status.SUCCEEDED).order_by(
        "-received_on", "-pk"
    ):
        if refundable(payment) >= amount:
            return payment
    return None


def _check_offset(offset: Invoice | int | None, settlement: str, invoice: Invoice) -> int | None:
    if offset is None:
        if settlement == CreditNote.Settlement.OFFSET:
            raise BillingError("Say which open invoice the credit offsets.", field="offset_invoice")
        return None
    if settlement != CreditNote.Settlement.OFFSET:
        raise BillingError("An offset invoice is only given with the 'offset' settlement.", field="offset_invoice")
    pk = offset if isinstance(offset, int) else offset.pk
    if pk == invoice.pk:
        raise BillingError("A credit note cannot offset the invoice it credits.", field="offset_invoice")
    return pk


def _lock_offset(pk: int, invoice: Invoice, amount: Decimal) -> Invoice:
    code = str(invoice.currency)
    try:
        offset = _lock_invoice(pk)
    except Invoice.DoesNotExist:
        raise BillingError(f"No invoice {pk}.", field="offset_invoice") from None
    if offset.customer_id != invoice.customer_id:
        raise BillingError(f"Invoice {offset} is another customer's.", field="offset_invoice")
    if str(offset.currency) != str(invoice.currency):
        raise BillingError(f"Currency mismatch: invoice {offset} is in {offset.currency}, the credit note in "
                           f"{invoice.currency}.", field="offset_invoice")
    if offset.status not in OPEN_STATUSES:
        raise BillingError(f"Invoice {offset} is {offset.status}: only an open invoice can be offset.",
                           field="offset_invoice")
    if amount > offset.amount_due:
        raise BillingError(f"{_money(amount, code)} is more than the {_money(offset.amount_due, code)} invoice "
                           f"{offset} still owes.", field="offset_invoice")
    return offset


def _check_inputs(reason: str, memo: str, settlement: str, idempotency_key: str | None) -> None:
    if reason not in CreditNote.Reason.values:
        raise BillingError(f"Unknown reason {str(reason)[:50]!r}; use one of {', '.join(CreditNote.Reason.values)}.",
                           field="reason")
    if settlement not in CreditNote.Settlement.values:
        raise BillingError(f"Unknown settlement {str(settlement)[:50]!r}; use one of "
                           f"{', '.join(CreditNote.Settlement.values)}.", field="settlement")
    if len(memo) > MAX_MEMO_LENGTH:
        raise BillingError(f"The memo is longer than {MAX_MEMO_LENGTH} characters.", field="memo")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_LENGTH:
        raise BillingError(f"The idempotency key has 1 to {MAX_KEY_LENGTH} characters.", field="idempotency_key")


def issue_credit_note(
    invoice: Invoice | int,
    *,
    lines: Sequence[CreditLineRequest] | None = None,
    amount: Decimal | None = None,
    reason: str,
    memo: str = "",
    settlement: str,
    offset_invoice: Invoice | int | None = None,
    currency: str | None = None,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
) -> CreditNote:
    """Credit a finalized, paid or uncollectible invoice: per line (`lines`) or an amount before tax spread over
    what its lines have left to credit (`amount`). `currency`, when a caller states one, must be the invoice's.
    A repeated `idempotency_key` returns the first note."""
    if (lines is None) == (amount is None):
        raise BillingError("Give either lines to credit or an amount, not both.", field="lines")
    if lines is not None:
        requests = list(lines)

        def choose(state: Creditable) -> list[tuple[CreditableLine, Decimal, Decimal | None]]:
            return _requested_lines(state, requests)
    else:

        def choose(state: Creditable) -> list[tuple[CreditableLine, Decimal, Decimal | None]]:
            return _spread_amount(state, amount)

    return _issue(invoice, choose, reason=reason, memo=memo, settlement=settlement, offset_invoice=offset_invoice,
                  currency=currency, actor=actor, now=now, idempotency_key=idempotency_key)


def credit_in_full(
    invoice: Invoice | int,
    *,
    reason: str,
    memo: str = "",
    settlement: str,
    offset_invoice: Invoice | int | None = None,
    currency: str | None = None,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
) -> CreditNote:
    """Credit everything the invoice has left to credit: with earlier notes, its whole total and tax."""
    return _issue(invoice, _in_full, reason=reason, memo=memo, settlement=settlement, offset_invoice=offset_invoice,
                  currency=currency, actor=actor, now=now, idempotency_key=idempotency_key)


def _issue(
    invoice: Invoice | int,
    choose: Callable[[Creditable], list[tuple[CreditableLine, Decimal, Decimal | None]]],
    *,
    reason: str,
    memo: str,
    settlement: str,
    offset_invoice: Invoice | int | None,
    currency: str | None,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None,
) -> CreditNote:
    from invoicing.services.documents import record_event
    from invoicing.tasks import render_credit_note_pdf_task

    memo = (memo or "").strip()
    _check_inputs(reason, memo, settlement, idempotency_key)
    if idempotency_key and (existing := CreditNote.objects.filter(idempotency_key=idempotency_key).first()):
        return existing
    pk = invoice if isinstance(invoice, int) else invoice.pk
    customer_id = Invoice.objects.filter(pk=pk).values_list("customer_id", flat=True).first()
    if customer_id is None:
        raise BillingError(f"No invoice {pk}.", field="invoice")
    with transaction.atomic():
        customer: Customer = lock_customer(customer_id)
        # A concurrent request with the same key waited on the customer lock: it finds the first note now.
        if idempotency_key and (existing := CreditNote.objects.filter(idempotency_key=idempotency_key).first()):
            return existing
        invoice = _lock_invoice(pk)
        code = str(invoice.currency)
        if currency is not None and str(currency).strip().upper() != code:
            raise BillingError(f"Currency mismatch: invoice {invoice} is in {code}, not {str(currency)[:10]}.",
                               field="currency")
        if invoice.status not in CREDITABLE_STATUSES:
            raise InvalidTransition(
                f"Invoice {invoice} is {invoice.status}: only a finalized, paid or uncollectible invoice is credited"
                + (" (a draft is edited or voided instead)." if invoice.status == Invoice.Status.DRAFT else ".")
            )
        if invoice.kind == Invoice.Kind.CREDIT_PURCHASE:
            raise BillingError(f"Invoice {invoice} bought prepaid credit: give the credit back from the wallet, not "
                               "with a credit note.", field="invoice")
        if invoice.total <= 0:
            raise BillingError(f"Invoice {invoice} has nothing to credit (its total is {_money(invoice.total, code)}).",
                               field="invoice")
        offset_pk = _check_offset(offset_invoice, settlement, invoice)
        state = creditable(invoice)
        draft = _draft(state, choose(state))
        total = draft.subtotal + draft.tax_total
        if total > state.total:
            raise BillingError(
                f"The note would credit {_money(total, code)} with tax; only {_money(state.total, code)} of invoice "
                f"{invoice} is left to credit.",
                field="amount",
            )
        applied = min(total, invoice.amount_due) if invoice.status in OPEN_STATUSES else ZERO
        applied = max(applied, ZERO)
        rest = total - applied
        offset = _lock_offset(offset_pk, invoice, rest) if offset_pk is not None else None
        entity = invoice.billing_entity
        sequence_number, number = _next_number(entity)
        note = CreditNote.objects.create(
            billing_entity=entity,
            customer=customer,
            invoice=invoice,
            currency=code,
            number=number,
            sequence_number=sequence_number,
            issue_date=customer_today(customer, now),
            issued_at=now,
            reason=reason,
            memo=memo,
            subtotal=draft.subtotal,
            tax_total=draft.tax_total,
            total=total,
            tax_breakdown=draft.tax_breakdown,
            settlement=settlement,
            applied_to_invoice=applied,
            refunded_amount=rest if settlement == CreditNote.Settlement.REFUND else ZERO,
            credited_to_balance=rest if settlement == CreditNote.Settlement.CREDIT_BALANCE else ZERO,
            offset_amount=rest if settlement == CreditNote.Settlement.OFFSET else ZERO,
            offset_invoice=offset,
            seller=party_snapshot_for_entity(entity),
            buyer=party_snapshot_for_customer(customer),
            idempotency_key=idempotency_key or None,
            created_by=actor.label,
        )
        for row in draft.lines:
            row.credit_note = note
        CreditNoteLine.objects.bulk_create(draft.lines)
        invoice.credit_notes_total += total
        invoice.save(update_fields=["credit_notes_total", "updated_at"])
        label = f"Credit note {number}"
        if applied > 0:
            apply_allocation(invoice, Allocation.Kind.CREDIT_NOTE, applied, actor=actor, now=now, credit_note=note,
                             note=label)
        if rest > 0:
            _settle_rest(note, invoice, offset, rest, customer=customer, label=label, actor=actor, now=now)
        record_event(invoice, "credit_note.issued", actor, now, credit_note=note.pk, number=number,
                     total=str(total), tax=str(draft.tax_total), reason=reason, settlement=settlement,
                     applied_to_invoice=str(applied), rest=str(rest))
        note_id = note.pk
        transaction.on_commit(lambda: render_credit_note_pdf_task.delay(note_id))
    return note


def _settle_rest(note: CreditNote, invoice: Invoice, offset: Invoice | None, rest: Decimal, *, customer: Customer,
                 label: str, actor: Actor, now: datetime) -> None:
    """What the invoice no longer owed: refunded, credited to the balance or offset, as the note says."""
    code = str(invoice.currency)
    if note.settlement == CreditNote.Settlement.REFUND:
        refund_credit_balance(
            customer, currency=code, amount=rest, reason=f"{label} ({note.get_reason_display()})", actor=actor,
            now=now, payment=_refund_payment_for(invoice, rest), credit_note=note,
        )
    elif note.settlement == CreditNote.Settlement.CREDIT_BALANCE:
        credit_customer_balance(customer, code, rest, kind=CustomerBalanceTransaction.Kind.CREDIT_NOTE, actor=actor,
                                now=now, note=label, credit_note=note)
    elif offset is not None:  # _check_offset made sure an offset note names its invoice
        apply_allocation(offset, Allocation.Kind.CREDIT_NOTE, rest, actor=actor, now=now, credit_note=note,
                         note=f"{label} of invoice {invoice}")
