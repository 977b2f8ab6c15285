"""Helpers for revenue and ledger tests: a seller and its customers in UTC (so an invoice's issue date is the
day of `now`), invoices of subscription terms, one-time items and usage, posted through the real services,
payments, credit notes and write-offs, and read-outs of the ledger (account balances, the trial balance,
unbalanced entries) and of the revenue contracts. Other test modules import these: keep the names stable."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db import connection
from django.db.models import F, Q, Sum

from billing.actors import Actor
from customers.models import BillingEntity, Customer
from invoicing.models import CreditNote, Invoice, InvoiceLine, Payment
from invoicing.services.documents import ManualLine, create_one_off_invoice, finalize_invoice
from invoicing.services.payments import AllocationRequest, mark_uncollectible, record_payment
from revrec.models import JournalEntry, JournalLine, PerformanceObligation, Recognition, RevenueContract
from revrec.services.chart import Chart
from revrec.services.posting.invoices import post_invoice
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory

D = Decimal
ZERO = D(0)
NOW = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)


def at(day: date, hour: int = 12) -> datetime:
    """A `now` on `day` (UTC, like the sellers and customers made here)."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


# --- parties -------------------------------------------------------------------------------------------------

def seller(currency: str = "USD", **kwargs: object) -> BillingEntity:
    """A billing entity in UTC, no grace days (a finalized invoice is issued on the day of `now`)."""
    kwargs.setdefault("timezone", "UTC")
    kwargs.setdefault("invoice_grace_days", 0)
    return BillingEntityFactory(default_currency=currency, **kwargs)


def buyer(entity: BillingEntity, currency: str | None = None, **kwargs: object) -> Customer:
    kwargs.setdefault("timezone", "UTC")
    return CustomerFactory(billing_entity=entity, currency=currency or str(entity.default_currency), **kwargs)


def product(code: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return ProductFactory(code=code, **kwargs)


# --- invoices ------------------------------------------------------------------------------------------------

def term(description: str, amount: Decimal | str, start: date, end: date, *, product=None) -> ManualLine:  # type: ignore[no-untyped-def]
    """A subscription term [start, end) billed `amount`: recognised ratably."""
    return ManualLine(description, D(amount), product=product, period_start=start, period_end=end)


def one_time(description: str, amount: Decimal | str, *, product=None, quantity: Decimal | str = "1") -> ManualLine:  # type: ignore[no-untyped-def]
    """A line without a service period: a point-in-time deliverable (delivered on the issue date unless its
    product's revenue rule says on delivery)."""
    return ManualLine(description, D(amount), quantity=D(quantity), product=product)


def invoice(customer: Customer, lines: list[ManualLine], *, actor: Actor, now: datetime = NOW,
            usage: tuple[int, ...] = (), finalize: bool = True) -> Invoice:
    """A one-off invoice of `lines`, finalized on the day of `now`. The lines at the positions in `usage` are
    turned into usage lines (recognised as invoiced) while the invoice is a draft."""
    draft = create_one_off_invoice(customer, lines, actor=actor, now=now, finalize=False)
    if usage:
        ids = list(draft.lines.order_by("position", "id").values_list("pk", flat=True))
        InvoiceLine.objects.filter(pk__in=[ids[i] for i in usage]).update(kind=InvoiceLine.Kind.USAGE)
    if not finalize:
        return draft
    return finalize_invoice(draft, actor=actor, now=now)


def post(inv: Invoice, *, actor: Actor, now: datetime = NOW) -> JournalEntry | None:
    """Post a finalized invoice with the real rule (raises AlreadyPosted the second time)."""
    return post_invoice(inv, chart=Chart.load(inv.billing_entity), actor=actor, now=now)


def posted_invoice(customer: Customer, lines: list[ManualLine], *, actor: Actor, now: datetime = NOW,
                   usage: tuple[int, ...] = ()) -> Invoice:
    inv = invoice(customer, lines, actor=actor, now=now, usage=usage)
    post(inv, actor=actor, now=now)
    return inv


# --- receivables events (posted by the sweep, when it exists) ---------------------------------------------------

def pay(inv: Invoice, amount: Decimal | str | None = None, *, actor: Actor, now: datetime = NOW,
        method: str = "bank_transfer") -> Payment:
    """A payment of `amount` (default: what is due) allocated to `inv`."""
    inv.refresh_from_db()
    value = inv.amount_due if amount is None else D(amount)
    return record_payment(customer=inv.customer, amount=value, currency=inv.currency, method=method,
                          received_on=now.date(), actor=actor, now=now,
                          allocations=[AllocationRequest(inv.pk, min(value, inv.amount_due))])


def credit_note(inv: Invoice, amount: Decimal | str, *, actor: Actor, now: datetime = NOW,
                settlement: str = "credit_balance", reason: str = "billing_error") -> CreditNote:
    from invoicing.services.credit_notes import issue_credit_note

    inv.refresh_from_db()
    return issue_credit_note(inv, amount=D(amount), reason=reason, settlement=settlement, actor=actor, now=now)


def write_off(inv: Invoice, *, actor: Actor, now: datetime = NOW) -> Invoice:
    return mark_uncollectible(inv, reason="Written off", actor=actor, now=now)


def sweep(*, actor: Actor, now: datetime, entity: BillingEntity | None = None):  # type: ignore[no-untyped-def]
    """Run the posting sweep (invoices, payments, credit notes, refunds, write-offs...) and return its summary."""
    from revrec.services.posting import post_pending

    return post_pending(now=now, actor=actor, entity=entity)


# --- ledger read-outs ----------------------------------------------------------------------------------------

def account_balance(entity: BillingEntity | int, role: str, currency: str | None = None) -> Decimal:
    """Debits minus credits of an entity's accounts of `role` (every product's), in one currency or all."""
    rows = JournalLine.objects.filter(entry__billing_entity=entity, account__role=role)
    if currency is not None:
        rows = rows.filter(entry__currency=currency)
    sums = rows.aggregate(d=Sum("debit"), c=Sum("credit"))
    return (sums["d"] or ZERO) - (sums["c"] or ZERO)


def trial_balance(entity: BillingEntity | int | None = None) -> dict[tuple[int, str, str], Decimal]:
    """Debits minus credits per (entity, currency, role); a balanced ledger nets to zero per entity and
    currency."""
    rows = JournalLine.objects.all()
    if entity is not None:
        rows = rows.filter(entry__billing_entity=entity)
    totals: dict[tuple[int, str, str], Decimal] = defaultdict(lambda: ZERO)
    for row in rows.values("entry__billing_entity", "entry__currency", "account__role").annotate(
            d=Sum("debit"), c=Sum("credit")):
        key = (row["entry__billing_entity"], str(row["entry__currency"]), row["account__role"])
        totals[key] += (row["d"] or ZERO) - (row["c"] or ZERO)
    return dict(totals)


def unbalanced_entries() -> list[tuple[int, Decimal, Decimal, Decimal]]:
    """Entries whose debits, credits and stated total do not all agree: (id, total, debits, credits)."""
    rows = JournalEntry.objects.annotate(d=Sum("lines__debit"), c=Sum("lines__credit")).filter(
        Q(d__isnull=True) | ~Q(d=F("c")) | ~Q(d=F("total"))
    )
    return [(e.pk, e.total, e.d, e.c) for e in rows]


def check_deferred_constraints() -> None:
    """Fire the deferred balance triggers now (inside a test transaction that will never commit)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def contract_positions(entity: BillingEntity | int, currency: str) -> Decimal:
    """Σ (billed - recognised) over the entity's revenue contracts in `currency`: deferred revenue less
    contract assets, as the revenue models see it."""
    sums = RevenueContract.objects.filter(billing_entity=entity, currency=currency).aggregate(
        b=Sum("billed"), r=Sum("recognized"))
    return (sums["b"] or ZERO) - (sums["r"] or ZERO)


def recognised_by_obligation() -> dict[int, Decimal]:
    return {row["obligation"]: row["s"] for row in Recognition.objects.values("obligation").annotate(s=Sum("amount"))}


def obligations_of(inv: Invoice) -> list[PerformanceObligation]:
    return list(PerformanceObligation.objects.filter(invoice_line__invoice=inv).order_by("invoice_line__position"))
