"""Documents the ledger has not recorded yet: what the posting sweep picks up and what the period-close
checklist refuses to close over. A document is posted when its source key (e.g. `payment:42`) is claimed in
PostedSource; each query is a NOT EXISTS against that unique column, so it stays an index probe per row."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db.models import CharField, Exists, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat

from invoicing.models import Allocation, CreditNote, Invoice, Payment, Refund, WalletTransaction
from revrec.models import PostedSource

# A document finalized and then voided was posted as an invoice first (its number is in the books).
POSTABLE_INVOICE = Q(finalized_at__isnull=False) & Q(
    status__in=[Invoice.Status.FINALIZED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE, Invoice.Status.VOID]
)


def not_posted(prefix: str, field: str = "pk") -> Exists:
    """True for rows whose `prefix:{field}` source key is not claimed (wrap in ~ to filter)."""
    key = Concat(Value(f"{prefix}:"), Cast(OuterRef(field), CharField()), output_field=CharField())
    return ~Exists(PostedSource.objects.filter(source=key))


def unposted_invoices(entity_id: int | None = None) -> QuerySet[Invoice]:
    rows = Invoice.objects.filter(POSTABLE_INVOICE).filter(not_posted("invoice"))
    return rows.filter(billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_payments(entity_id: int | None = None) -> QuerySet[Payment]:
    """Only money that arrived: a pending payment posts once it succeeds, a failed one never."""
    rows = Payment.objects.filter(status__in=[Payment.Status.SUCCEEDED, Payment.Status.REVERSED]).filter(
        not_posted("payment")
    )
    return rows.filter(billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_payment_reversals(entity_id: int | None = None) -> QuerySet[Payment]:
    rows = Payment.objects.filter(status=Payment.Status.REVERSED).filter(not_posted("payment_reversal"))
    return rows.filter(billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_credit_notes(entity_id: int | None = None) -> QuerySet[CreditNote]:
    rows = CreditNote.objects.filter(not_posted("credit_note"))
    return rows.filter(billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_refunds(entity_id: int | None = None) -> QuerySet[Refund]:
    """Every refund: created, the money is committed (a failure posts its own reversing entry)."""
    rows = Refund.objects.filter(not_posted("refund"))
    return rows.filter(customer__billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_refund_failures(entity_id: int | None = None) -> QuerySet[Refund]:
    rows = Refund.objects.filter(status=Refund.Status.FAILED).filter(not_posted("refund_failed"))
    return rows.filter(customer__billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_write_offs(entity_id: int | None = None) -> QuerySet[Invoice]:
    """Invoices marked uncollectible (even when a later payment settled them: the write-off happened)."""
    rows = Invoice.objects.filter(marked_uncollectible_at__isnull=False, finalized_at__isnull=False).filter(
        not_posted("write_off")
    )
    return rows.filter(billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_voids(entity_id: int | None = None) -> QuerySet[Invoice]:
    rows = Invoice.objects.filter(status=Invoice.Status.VOID, finalized_at__isnull=False).filter(
        not_posted("invoice_void")
    )
    return rows.filter(billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_wallet_expiries(entity_id: int | None = None) -> QuerySet[WalletTransaction]:
    """Prepaid credit that expired unused. The 'expiry' a void of the purchase invoice writes is not
    breakage: the void's entry reverses that purchase."""
    rows = (
        WalletTransaction.objects.filter(kind=WalletTransaction.Kind.EXPIRY)
        .exclude(lot__invoice__status=Invoice.Status.VOID)
        .filter(not_posted("wallet_expiry"))
    )
    return rows.filter(wallet__customer__billing_entity_id=entity_id) if entity_id is not None else rows


def unposted_allocations(entity_id: int | None = None) -> QuerySet[Allocation]:
    rows = Allocation.objects.filter(not_posted("allocation"))
    return rows.filter(invoice__billing_entity_id=entity_id) if entity_id is not None else rows


@dataclass(frozen=True)
class UnpostedDocument:
    kind: str
    label: str
    id: int
    date: date


def _local(moment: datetime | None, zone: str) -> date | None:
    return moment.astimezone(ZoneInfo(str(zone))).date() if moment is not None else None


def unposted_documents(entity_id: int, before: date) -> list[UnpostedDocument]:
    """Documents of the entity dated before `before` that the ledger does not hold yet, oldest first.
    Timestamps are read as the customer's calendar day (a day later in UTC at most, hence the margin)."""
    margin = datetime.combine(before + timedelta(days=1), time.min, tzinfo=UTC)
    found: list[UnpostedDocument] = []

    def add(kind: str, rows: QuerySet, label: Callable, day: Callable) -> None:  # type: ignore[type-arg]
        for row in rows:
            when = day(row)
            if when is not None and when < before:
                found.append(UnpostedDocument(kind, label(row), row.pk, when))

    add("invoice", unposted_invoices(entity_id).filter(issue_date__lt=before),
        lambda i: f"Invoice {i.number}", lambda i: i.issue_date)
    add("payment", unposted_payments(entity_id).filter(received_on__lt=before),
        lambda p: f"Payment #{p.pk}", lambda p: p.received_on)
    add("credit_note", unposted_credit_notes(entity_id).filter(issue_date__lt=before),
        lambda n: f"Credit note {n.number}", lambda n: n.issue_date)
    add("refund", unposted_refunds(entity_id).filter(refunded_on__lt=before),
        lambda r: f"Refund #{r.pk}", lambda r: r.refunded_on)
    add("payment_reversal",
        unposted_payment_reversals(entity_id).filter(reversed_at__lt=margin).select_related("customer"),
        lambda p: f"Reversal of payment #{p.pk}", lambda p: _local(p.reversed_at, p.customer.timezone))
    add("refund_failed",
        unposted_refund_failures(entity_id).filter(updated_at__lt=margin).select_related("customer"),
        lambda r: f"Failed refund #{r.pk}",
        lambda r: _local(r.gateway_updated_at or r.updated_at, r.customer.timezone))
    add("write_off",
        unposted_write_offs(entity_id).filter(marked_uncollectible_at__lt=margin).select_related("customer"),
        lambda i: f"Write-off of invoice {i.number}",
        lambda i: _local(i.marked_uncollectible_at, i.customer.timezone))
    add("invoice_void", unposted_voids(entity_id).filter(voided_at__lt=margin).select_related("customer"),
        lambda i: f"Void of invoice {i.number}", lambda i: _local(i.voided_at, i.customer.timezone))
    add("wallet_expiry",
        unposted_wallet_expiries(entity_id).filter(created_at__lt=margin).select_related("wallet__customer"),
        lambda t: f"Prepaid credit expiry #{t.pk}", lambda t: _local(t.created_at, t.wallet.customer.timezone))
    # An allocation made with its payment, note or refund is posted in that document's entry: listed once.
    with_document = (
        Q(kind=Allocation.Kind.PAYMENT, payment__isnull=False) & not_posted("payment", "payment_id")
        | Q(kind=Allocation.Kind.PAYMENT_REVERSAL) & not_posted("payment_reversal", "payment_id")
        | Q(refund__isnull=False) & not_posted("refund", "refund_id")
        | Q(credit_note__isnull=False) & not_posted("credit_note", "credit_note_id")
    )
    add("allocation",
        unposted_allocations(entity_id).filter(created_at__lt=margin).exclude(with_document)
        .select_related("invoice__customer"),
        lambda a: f"{a.get_kind_display()} {a.amount} on invoice {a.invoice.number}",
        lambda a: _local(a.created_at, a.invoice.customer.timezone))
    found.sort(key=lambda d: (d.date, d.kind, d.id))
    return found
