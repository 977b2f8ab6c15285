"""Posting a write-off: what an invoice still owed when it was marked uncollectible moves from the receivable
to bad debt. Money that arrives later is a recovery (see payments.allocation_postings)."""

from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.db.models import Sum

from billing.actors import Actor
from invoicing.models import Allocation, Invoice, InvoiceEvent
from revrec.models import JournalEntry
from revrec.services.chart import Chart
from revrec.services.journal import credit, debit, post_entry
from revrec.services.posting.payments import NotReady, local_day, require_invoice_posted

ZERO = Decimal("0")


def write_off_source(invoice: Invoice | int) -> str:
    return f"write_off:{invoice if isinstance(invoice, int) else invoice.pk}"


def write_off_amount(invoice: Invoice) -> Decimal:
    """What the invoice owed when it was marked: as the mark recorded it, else rebuilt from today's amount due
    and every allocation since (each one changed the amount due by its amount)."""
    event = InvoiceEvent.objects.filter(invoice=invoice, action="marked_uncollectible").order_by("created_at", "pk")
    details = event.values_list("details", flat=True).first()
    if isinstance(details, dict) and details.get("amount_due") is not None:
        try:
            return Decimal(str(details["amount_due"]))
        except InvalidOperation:
            pass
    since = Allocation.objects.filter(invoice=invoice, created_at__gt=invoice.marked_uncollectible_at)
    return invoice.amount_due + (since.aggregate(s=Sum("amount"))["s"] or ZERO)


def post_write_off(invoice: Invoice, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """Dr bad debt / Cr receivable for what the invoice owed when it was marked uncollectible."""
    if invoice.marked_uncollectible_at is None:
        raise NotReady(f"Invoice {invoice} was never marked uncollectible.")
    with transaction.atomic():
        require_invoice_posted(invoice.pk)
        amount = write_off_amount(invoice)
        memo = f"Write-off of {invoice.number}"
        return post_entry(
            chart=chart, kind=JournalEntry.Kind.WRITE_OFF, source_key=write_off_source(invoice),
            on=local_day(invoice.customer, invoice.marked_uncollectible_at), currency=invoice.currency,
            description=f"Invoice {invoice.number} written off as uncollectible",
            postings=[debit("bad_debt", amount, customer_id=invoice.customer_id, memo=memo),
                      credit("receivable", amount, customer_id=invoice.customer_id, memo=memo)],
            actor=actor, now=now, customer_id=invoice.customer_id, invoice=invoice,
        )
