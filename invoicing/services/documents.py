"""The invoice lifecycle: draft (created by a close or by hand, refreshed and edited within its grace
period), finalized (gapless number under a lock, snapshots, prepaid credit drawn, PDF, immutable), void.

Every money change records an InvoiceEvent with its actor; coupons, promotional credits, wallet draw-downs
and billed periods consumed by a document are given back when it is voided or refreshed, in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.models import Product
from contracts.selectors import customer_today
from customers.models import Customer
from invoicing.models import (
    AppliedCoupon,
    BilledPeriod,
    CreditGrant,
    DocumentSequence,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    PendingCharge,
    Wallet,
    WalletTransaction,
)
from invoicing.pdf import party_snapshot_for_customer, party_snapshot_for_entity
from invoicing.pricing.rounding import round_money
from invoicing.rating import Claim, LineDraft
from invoicing.services.payments import lock_customer, settle_after_finalize, settle_before_finalize_save
from invoicing.services.pricing import PricedInvoice, PricingInputs, price_invoice, pricing_inputs

ZERO = Decimal(0)
MAX_LINES_PER_INVOICE = 10_000


def record_event(invoice: Invoice, action: str, actor: Actor, now: datetime, **details: object) -> None:
    InvoiceEvent.objects.create(
        invoice=invoice, action=action, details=details, actor=actor.user, actor_label=actor.label, created_at=now
    )


def _lock(invoice: Invoice | int) -> Invoice:
    pk = invoice if isinstance(invoice, int) else invoice.pk
    return (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("customer__billing_entity", "billing_entity")
        .get(pk=pk)
    )


# --- drafts -------------------------------------------------------------------------------------------------


def _consume_discounts(priced: PricedInvoice, inputs: PricingInputs) -> None:
    """Coupons count one more period and promotional credits lose what the invoice took (rows locked)."""
    coupons = {applied.pk: applied for applied, _ in inputs.coupons}
    grants = {grant.pk: grant for grant, _ in inputs.credits}
    for entry in priced.discount_breakdown:
        amount = Decimal(entry["amount"])
        if entry["source"] == "coupon":
            applied = coupons[entry["source_id"]]
            applied.periods_used += 1
            coupon = applied.coupon
            done = coupon.duration == "once" or (
                coupon.duration == "repeating" and applied.periods_used >= (coupon.duration_periods or 0)
            )
            applied.status = AppliedCoupon.Status.EXHAUSTED if done else AppliedCoupon.Status.ACTIVE
            applied.save(update_fields=["periods_used", "status", "updated_at"])
        else:
            CreditGrant.objects.filter(pk=entry["source_id"]).update(remaining=F("remaining") - amount)
            grants[entry["source_id"]].remaining -= amount


def _give_back_discounts(invoice: Invoice) -> None:
    for entry in invoice.discount_breakdown:
        if entry["source"] == "coupon":
            applied = AppliedCoupon.objects.select_for_update().get(pk=entry["source_id"])
            applied.periods_used = max(0, applied.periods_used - 1)
            # Another active application of the same coupon would break the one-active rule: keep this one used.
            if (
                applied.status == AppliedCoupon.Status.EXHAUSTED
                and not AppliedCoupon.objects.filter(
                    customer_id=applied.customer_id, coupon_id=applied.coupon_id, status=AppliedCoupon.Status.ACTIVE
                ).exists()
            ):
                applied.status = AppliedCoupon.Status.ACTIVE
            applied.save(update_fields=["periods_used", "status", "updated_at"])
        else:
            CreditGrant.objects.filter(pk=entry["source_id"]).update(
                remaining=F("remaining") + Decimal(entry["amount"])
            )


def _write_totals(invoice: Invoice, priced: PricedInvoice) -> None:
    invoice.subtotal = priced.subtotal
    invoice.discount_total = priced.discount_total
    invoice.tax_total = priced.tax_total
    invoice.total = priced.total
    invoice.prepaid_credit_applied = ZERO
    invoice.amount_due = priced.total
    invoice.tax_breakdown = priced.tax_breakdown
    invoice.discount_breakdown = priced.discount_breakdown
    invoice.mentions = priced.mentions
    starts = [pl.draft.period_start for pl in priced.lines if pl.draft.period_start]
    ends = [pl.draft.period_end for pl in priced.lines if pl.draft.period_end]
    invoice.period_start = min(starts) if starts else None
    invoice.period_end = max(ends) if ends else None


def _line_rows(invoice: Invoice, priced: PricedInvoice, first_position: int = 0) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            invoice=invoice,
            position=first_position + i,
            kind=pl.draft.kind,
            description=pl.draft.description[:300],
            customer_id=pl.draft.customer_id,
            subscription_id=pl.draft.subscription_id,
            charge_id=pl.draft.charge_id,
            fixed_charge_id=pl.draft.fixed_charge_id,
            meter_id=pl.draft.meter_id,
            product_id=pl.draft.product_id,
            group=pl.draft.group,
            period_start=pl.draft.period_start,
            period_end=pl.draft.period_end,
            quantity=pl.draft.quantity,
            unit_price=pl.draft.unit_price,
            amount=pl.draft.amount,
            discount_amount=pl.discount,
            tax_rate_id=pl.decision.rate_id,
            tax_percent=pl.decision.percent,
            tax_treatment=pl.decision.treatment,
            tax_amount=pl.tax,
            # The plan is kept for plan-limited coupons when a draft is re-priced after an edit.
            explanation={**pl.draft.explanation, "plan_id": pl.draft.plan_id}
            if pl.draft.plan_id
            else pl.draft.explanation,
        )
        for i, pl in enumerate(priced.lines)
    ]


def stored_drafts(invoice: Invoice) -> list[LineDraft]:
    """The invoice's lines as drafts again (to re-price a draft after an edit)."""
    return [
        LineDraft(
            kind=line.kind,
            description=line.description,
            customer_id=line.customer_id,
            currency=invoice.currency,
            amount=line.amount,
            quantity=line.quantity,
            unit_price=line.unit_price,
            subscription_id=line.subscription_id,
            plan_id=line.explanation.get("plan_id"),
            charge_id=line.charge_id,
            fixed_charge_id=line.fixed_charge_id,
            meter_id=line.meter_id,
            product_id=line.product_id,
            tax_code=line.product.tax_code if line.product else "",
            group=line.group,
            period_start=line.period_start,
            period_end=line.period_end,
            explanation=line.explanation,
        )
        for line in invoice.lines.select_related("product").order_by("position", "id")
    ]


def save_draft(
    bill_to: Customer,
    drafts: Sequence[LineDraft],
    *,
    currency: str,
    now: datetime,
    actor: Actor,
    kind: str = Invoice.Kind.SUBSCRIPTION,
    claims: Sequence[Claim] = (),
    pending_charge_ids: Sequence[int] = (),
    cycle_run_id: int | None = None,
    memo: str = "",
    invoice: Invoice | None = None,
    hints: Any = None,
) -> Invoice:
    """Price the drafts and store them as a draft invoice (a new one, or `invoice` emptied by a refresh), with
    the billed periods it settles. Call inside a transaction: a claim already taken raises IntegrityError."""
    if len(drafts) > MAX_LINES_PER_INVOICE:
        raise BillingError(f"An invoice holds at most {MAX_LINES_PER_INVOICE} lines; got {len(drafts)}.")
    today = customer_today(bill_to, now)
    inputs = pricing_inputs(bill_to, currency, on=today, lock=True, hints=hints)
    priced = price_invoice(drafts, inputs, currency=currency, on=today)
    entity = bill_to.billing_entity
    if invoice is None:
        invoice = Invoice(
            billing_entity=entity,
            customer=bill_to,
            kind=kind,
            currency=currency,
            cycle_run_id=cycle_run_id,
            memo=memo,
            created_by=actor.label,
        )
    invoice.as_of = now
    invoice.grace_until = now + timedelta(days=entity.invoice_grace_days)
    _write_totals(invoice, priced)
    invoice.save()
    InvoiceLine.objects.bulk_create(_line_rows(invoice, priced))
    _consume_discounts(priced, inputs)
    if claims:
        BilledPeriod.objects.bulk_create(
            [
                BilledPeriod(
                    subscription_id=c.subscription_id,
                    period_start=c.period_start,
                    period_end=c.period_end,
                    timing=c.timing,
                    invoice=invoice,
                )
                for c in claims
            ]
        )
    if pending_charge_ids:
        taken = PendingCharge.objects.filter(pk__in=pending_charge_ids, invoice__isnull=True).update(invoice=invoice)
        if taken != len(pending_charge_ids):
            raise IntegrityError("A one-off charge was billed by another invoice at the same time.")
    return invoice


def _reprice(invoice: Invoice, *, now: datetime) -> None:
    """Re-price a draft's stored lines (after a line was added or removed)."""
    _give_back_discounts(invoice)
    drafts = stored_drafts(invoice)
    today = customer_today(invoice.customer, now)
    inputs = pricing_inputs(invoice.customer, invoice.currency, on=today, lock=True)
    priced = price_invoice(drafts, inputs, currency=invoice.currency, on=today)
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(_line_rows(invoice, priced))
    _consume_discounts(priced, inputs)
    _write_totals(invoice, priced)
    invoice.save()


def _require_draft(invoice: Invoice, action: str) -> None:
    if invoice.status != Invoice.Status.DRAFT:
        raise InvalidTransition(
            f"Cannot {action} invoice {invoice}: it is {invoice.status}. A finalized invoice is corrected by a "
            "credit note or a new invoice, never edited."
        )


@dataclass(frozen=True)
class ManualLine:
    description: str
    unit_price: Decimal
    quantity: Decimal = Decimal(1)
    product: Product | None = None
    period_start: date | None = None
    period_end: date | None = None


def _manual_draft(customer: Customer, currency: str, line: ManualLine, index: int) -> LineDraft:
    if not line.description.strip():
        raise BillingError("A line needs a description.", field=f"lines[{index}].description")
    if line.quantity <= 0:
        raise BillingError("The quantity must be greater than zero.", field=f"lines[{index}].quantity")
    if not line.unit_price.is_finite() or abs(line.unit_price) >= Decimal("1e15"):
        raise BillingError("The unit price is out of range.", field=f"lines[{index}].unit_price")
    amount = round_money(line.unit_price * line.quantity, currency)
    return LineDraft(
        kind=InvoiceLine.Kind.ONE_OFF,
        description=line.description.strip(),
        customer_id=customer.pk,
        currency=currency,
        amount=amount,
        quantity=line.quantity,
        unit_price=line.unit_price,
        product_id=line.product.pk if line.product else None,
        tax_code=line.product.tax_code if line.product else "",
        period_start=line.period_start,
        period_end=line.period_end,
        explanation={"manual": True, "formula": f"{line.unit_price} x {line.quantity}"},
    )


def create_one_off_invoice(
    customer: Customer,
    lines: Sequence[ManualLine],
    *,
    currency: str | None = None,
    actor: Actor,
    now: datetime,
    memo: str = "",
    finalize: bool = False,
) -> Invoice:
    """An invoice outside the cycle (services, set-up, a correction), as a draft or finalized at once."""
    if not lines:
        raise BillingError("A one-off invoice needs at least one line.", field="lines")
    currency = currency or str(customer.currency)
    drafts = [_manual_draft(customer, currency, line, i) for i, line in enumerate(lines)]
    with transaction.atomic():
        invoice = save_draft(
            customer, drafts, currency=currency, now=now, actor=actor, kind=Invoice.Kind.ONE_OFF, memo=memo
        )
        record_event(invoice, "created", actor, now, kind="one_off", lines=len(drafts), total=str(invoice.total))
        if finalize:
            invoice = finalize_invoice(invoice, actor=actor, now=now)
    return invoice


def add_line(invoice: Invoice, line: ManualLine, *, actor: Actor, now: datetime) -> Invoice:
    with transaction.atomic():
        invoice = _lock(invoice)
        _require_draft(invoice, "add a line to")
        draft = _manual_draft(invoice.customer, invoice.currency, line, 0)
        InvoiceLine.objects.create(
            invoice=invoice,
            position=invoice.lines.count(),
            kind=draft.kind,
            description=draft.description,
            customer_id=draft.customer_id,
            product_id=draft.product_id,
            quantity=draft.quantity,
            unit_price=draft.unit_price,
            amount=draft.amount,
            period_start=draft.period_start,
            period_end=draft.period_end,
            explanation=draft.explanation,
        )
        _reprice(invoice, now=now)
        record_event(invoice, "line_added", actor, now, description=draft.description, amount=str(draft.amount))
    return invoice


def remove_line(line: InvoiceLine, *, actor: Actor, now: datetime) -> Invoice:
    """Remove a line a person added. Lines from the cycle are not removed one by one: their period would be
    marked billed without them; refresh the draft, or void it to bill the period again."""
    with transaction.atomic():
        invoice = _lock(line.invoice_id)
        _require_draft(invoice, "remove a line from")
        line = invoice.lines.get(pk=line.pk)
        if not line.explanation.get("manual"):
            raise BillingError(
                f"Line '{line.description}' comes from the billing cycle; refresh or void the draft instead.",
                field="line",
            )
        line.delete()
        _reprice(invoice, now=now)
        record_event(invoice, "line_removed", actor, now, description=line.description, amount=str(line.amount))
    return invoice


# --- finalization -------------------------------------------------------------------------------------------


def _next_number(invoice: Invoice) -> tuple[int, str]:
    """Take the next number of the entity's series: the sequence row stays locked until the transaction ends,
    so concurrent finalizations queue here and a rolled-back one gives its number back."""
    entity = invoice.billing_entity
    series = DocumentSequence.objects.select_for_update().filter(
        billing_entity=entity, kind=DocumentSequence.Kind.INVOICE
    )
    sequence = series.first()
    if sequence is None:
        # The entity's first invoice: create the series (a concurrent first finalization may win), then lock it.
        DocumentSequence.objects.bulk_create(
            [DocumentSequence(billing_entity=entity, kind=DocumentSequence.Kind.INVOICE)], ignore_conflicts=True
        )
        sequence = series.get()
    number = sequence.next_number
    sequence.next_number = number + 1
    sequence.save(update_fields=["next_number"])
    return number, f"{entity.invoice_prefix}-{number:06d}"


def _draw_prepaid_credit(invoice: Invoice, now: datetime, actor: Actor, today: date) -> Decimal:
    """Prepaid wallet credit pays the invoice after tax, oldest-expiring lots first."""
    if invoice.total <= 0 or invoice.kind == Invoice.Kind.CREDIT_PURCHASE:
        return ZERO
    wallet = Wallet.objects.select_for_update().filter(customer=invoice.customer, currency=invoice.currency).first()
    if wallet is None or wallet.balance <= 0:
        return ZERO
    expire_lots(wallet, today=today, now=now, actor=actor)
    wanted = min(invoice.total, wallet.balance)
    drawn = ZERO
    lots = (
        wallet.transactions.select_for_update()
        .filter(kind=WalletTransaction.Kind.TOP_UP, remaining__gt=0)
        .filter(Q(expires_on__isnull=True) | Q(expires_on__gt=today))
        .order_by(F("expires_on").asc(nulls_last=True), "created_at", "pk")
    )
    for lot in lots:
        if drawn >= wanted:
            break
        take = min(lot.remaining, wanted - drawn)
        lot.remaining -= take
        lot.save(update_fields=["remaining"])
        WalletTransaction.objects.create(
            wallet=wallet,
            kind=WalletTransaction.Kind.DRAWDOWN,
            amount=-take,
            lot=lot,
            invoice=invoice,
            created_at=now,
            created_by=actor.label,
        )
        drawn += take
    wallet.balance -= drawn
    wallet.save(update_fields=["balance", "updated_at"])
    return drawn


def expire_lots(wallet: Wallet, *, today: date, now: datetime, actor: Actor) -> Decimal:
    """Take expired lots' remaining credit out of the wallet (locked by the caller)."""
    expired = ZERO
    for lot in wallet.transactions.select_for_update().filter(
        kind=WalletTransaction.Kind.TOP_UP, remaining__gt=0, expires_on__lte=today
    ):
        WalletTransaction.objects.create(
            wallet=wallet,
            kind=WalletTransaction.Kind.EXPIRY,
            amount=-lot.remaining,
            lot=lot,
            created_at=now,
            created_by=actor.label,
        )
        expired += lot.remaining
        lot.remaining = ZERO
        lot.save(update_fields=["remaining"])
    if expired:
        wallet.balance -= expired
        wallet.save(update_fields=["balance", "updated_at"])
    return expired


def _top_up_wallet(invoice: Invoice, now: datetime, actor: Actor) -> None:
    """A finalized credit purchase puts its credit in the wallet, once (a unique constraint per invoice)."""
    if invoice.kind != Invoice.Kind.CREDIT_PURCHASE:
        return
    for line in invoice.lines.filter(kind=InvoiceLine.Kind.CREDIT_PURCHASE):
        Wallet.objects.bulk_create(
            [Wallet(customer=invoice.customer, currency=invoice.currency)], ignore_conflicts=True
        )
        wallet = Wallet.objects.select_for_update().get(customer=invoice.customer, currency=invoice.currency)
        expires = line.explanation.get("expires_on")
        WalletTransaction.objects.create(
            wallet=wallet,
            kind=WalletTransaction.Kind.TOP_UP,
            amount=line.amount,
            remaining=line.amount,
            expires_on=date.fromisoformat(expires) if expires else None,
            invoice=invoice,
            created_at=now,
            created_by=actor.label,
        )
        wallet.balance += line.amount
        wallet.save(update_fields=["balance", "updated_at"])


def finalize_invoice(
    invoice: Invoice, *, actor: Actor, now: datetime, locked: bool = False, has_wallet: bool | None = None
) -> Invoice:
    """Number, snapshot and freeze a draft. Finalizing an invoice already finalized is refused (409).

    `locked`: the caller created or locked the draft in its own transaction (the cycle close) and passes it as
    it is; `has_wallet=False`: the caller knows the customer has no prepaid wallet to draw from."""
    from invoicing.tasks import render_invoice_pdf_task

    with transaction.atomic():
        if not locked:
            # Customer first, like every receivables write (the settle hooks use its credit balance): taking the
            # invoice and the number series before it deadlocks with a cycle close of the same customer.
            lock_customer(Invoice.objects.values_list("customer_id", flat=True).get(pk=invoice.pk))
            invoice = _lock(invoice)
        _require_draft(invoice, "finalize")
        customer = invoice.customer
        today = customer_today(customer, now)
        sequence_number, number = _next_number(invoice)
        invoice.sequence_number = sequence_number
        invoice.number = number
        invoice.issue_date = today
        invoice.due_date = today + timedelta(days=customer.effective_payment_terms_days)
        invoice.seller = party_snapshot_for_entity(invoice.billing_entity)
        invoice.buyer = party_snapshot_for_customer(customer)
        invoice.prepaid_credit_applied = (
            ZERO if has_wallet is False else _draw_prepaid_credit(invoice, now, actor, today)
        )
        invoice.amount_due = invoice.total - invoice.prepaid_credit_applied
        invoice.status = Invoice.Status.FINALIZED
        invoice.finalized_at = now
        invoice.grace_until = None
        settle_before_finalize_save(invoice, actor=actor, now=now)
        invoice.save()
        _top_up_wallet(invoice, now, actor)
        settle_after_finalize(invoice, actor=actor, now=now)
        record_event(
            invoice,
            "finalized",
            actor,
            now,
            number=number,
            total=str(invoice.total),
            amount_due=str(invoice.amount_due),
        )
        invoice_id = invoice.pk
        transaction.on_commit(lambda: render_invoice_pdf_task.delay(invoice_id))
    return invoice


@dataclass
class BulkResult:
    finalized: list[Invoice]
    errors: dict[int, str]


def finalize_many(invoice_ids: Sequence[int], *, actor: Actor, now: datetime) -> BulkResult:
    """Finalize several drafts, each in its own transaction: one refusal does not stop the others."""
    result = BulkResult([], {})
    for pk in invoice_ids:
        try:
            result.finalized.append(finalize_invoice(Invoice(pk=pk), actor=actor, now=now))
        except (BillingError, Invoice.DoesNotExist) as exc:
            result.errors[pk] = getattr(exc, "message", str(exc))
    return result


def finalize_due_drafts(*, now: datetime, actor: Actor | None = None, limit: int = 5_000) -> int:
    """Finalize the drafts whose grace period is over (beat task)."""
    actor = actor or Actor.system("finalize_due_drafts")
    ids = list(
        Invoice.objects.filter(status=Invoice.Status.DRAFT, grace_until__lte=now)
        .order_by("grace_until")
        .values_list("pk", flat=True)[:limit]
    )
    return len(finalize_many(ids, actor=actor, now=now).finalized)


# --- void ---------------------------------------------------------------------------------------------------


def void_invoice(invoice: Invoice, *, reason: str, actor: Actor, now: datetime) -> Invoice:
    """Void a draft or an unpaid finalized invoice: its number stays used (the series keeps no gap), its
    periods can be billed again, and what it consumed (coupons, credits, prepaid credit, one-off charges) is
    given back."""
    if not reason.strip():
        raise BillingError("Say why the invoice is voided.", field="reason")
    with transaction.atomic():
        invoice = _lock(invoice)
        if invoice.status not in (Invoice.Status.DRAFT, Invoice.Status.FINALIZED):
            raise InvalidTransition(f"Cannot void invoice {invoice}: it is {invoice.status}.")
        if invoice.allocations.exists() or invoice.credit_notes_total:
            raise InvalidTransition(
                f"Cannot void invoice {invoice}: payments or credit notes are applied to it; issue a credit note."
            )
        if invoice.kind == Invoice.Kind.CREDIT_PURCHASE and invoice.status == Invoice.Status.FINALIZED:
            _reverse_top_up(invoice, now, actor)
        _release(invoice, now, actor)
        invoice.status = Invoice.Status.VOID
        invoice.voided_at = now
        invoice.void_reason = reason.strip()[:300]
        invoice.grace_until = None
        invoice.save()
        record_event(invoice, "voided", actor, now, reason=invoice.void_reason)
    return invoice


def _release(invoice: Invoice, now: datetime, actor: Actor) -> None:
    BilledPeriod.objects.filter(invoice=invoice, released=False).update(released=True)
    PendingCharge.objects.filter(invoice=invoice).update(invoice=None)
    _give_back_discounts(invoice)
    for draw in WalletTransaction.objects.select_for_update().filter(
        invoice=invoice, kind=WalletTransaction.Kind.DRAWDOWN
    ):
        lot = WalletTransaction.objects.select_for_update().get(pk=draw.lot_id)
        lot.remaining -= draw.amount  # draw.amount is negative
        lot.save(update_fields=["remaining"])
        WalletTransaction.objects.create(
            wallet_id=draw.wallet_id,
            kind=WalletTransaction.Kind.REVERSAL,
            amount=-draw.amount,
            lot=lot,
            invoice=invoice,
            created_at=now,
            created_by=actor.label,
        )
        Wallet.objects.filter(pk=draw.wallet_id).update(balance=F("balance") - draw.amount)


def _reverse_top_up(invoice: Invoice, now: datetime, actor: Actor) -> None:
    for lot in WalletTransaction.objects.select_for_update().filter(
        invoice=invoice, kind=WalletTransaction.Kind.TOP_UP
    ):
        if lot.remaining != lot.amount:
            raise InvalidTransition(
                f"Cannot void invoice {invoice}: {lot.amount - lot.remaining} of the credit it bought is already used."
            )
        WalletTransaction.objects.create(
            wallet_id=lot.wallet_id,
            kind=WalletTransaction.Kind.EXPIRY,
            amount=-lot.amount,
            lot=lot,
            created_at=now,
            created_by=actor.label,
        )
        Wallet.objects.filter(pk=lot.wallet_id).update(balance=F("balance") - lot.amount)
        lot.remaining = ZERO
        lot.save(update_fields=["remaining"])


def release_for_refresh(invoice: Invoice, now: datetime, actor: Actor) -> list[InvoiceLine]:
    """Empty a draft of what the cycle put on it, giving back its claims and discounts; returns the lines a
    person added, which the refreshed draft keeps."""
    manual = [line for line in invoice.lines.all() if line.explanation.get("manual")]
    BilledPeriod.objects.filter(invoice=invoice).delete()  # a draft's claims: nothing was billed yet
    PendingCharge.objects.filter(invoice=invoice).update(invoice=None)
    _give_back_discounts(invoice)
    invoice.discount_breakdown = []
    invoice.lines.all().delete()
    return manual
