"""Posting money on the customer's account: payments, their reversals, refunds (and refunds that failed), and
every allocation of money to an invoice.

The customer_credit account is the clearing account for cash not yet applied and for credit balances: cash in
and out goes through it, and each Allocation moves its amount from it to the receivable (Dr customer_credit,
Cr receivable; a negative allocation the other way). So the receivable holds what invoices still owe and
customer_credit what customers hold as credit, and both reconcile with the invoicing ledgers. An allocation
on an invoice already written off is a recovery: the write-off is taken back by the same amount."""

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction

from billing.actors import Actor
from contracts.selectors import customer_today
from invoicing.models import Allocation, Invoice, Payment, Refund
from revrec.models import JournalEntry, PostedSource
from revrec.services.chart import Chart
from revrec.services.journal import Posting, credit, debit, is_posted, post_entry

ZERO = Decimal("0")


class NotReady(Exception):
    """A document depends on one the ledger does not hold yet (e.g. a payment of an unposted invoice)."""


def allocation_source(allocation: Allocation | int) -> str:
    return f"allocation:{allocation if isinstance(allocation, int) else allocation.pk}"


def local_day(customer: object, moment: datetime) -> date:
    """The customer's calendar day at `moment` (documents are dated in the customer's timezone)."""
    return customer_today(customer, moment)  # type: ignore[arg-type]


def require_invoice_posted(invoice_id: int) -> None:
    if not is_posted(f"invoice:{invoice_id}"):
        raise NotReady(f"Invoice {invoice_id} is not posted yet.")


def is_recovery(allocation: Allocation, invoice: Invoice) -> bool:
    """Money applied to (or taken back from) an invoice after it was written off."""
    marked = invoice.marked_uncollectible_at
    return marked is not None and allocation.created_at > marked


def allocation_postings(allocations: Iterable[Allocation], *, chart: Chart, actor: Actor,
                        now: datetime) -> list[Posting]:
    """Dr customer_credit / Cr receivable per allocation (signed), plus Dr receivable / Cr bad_debt for a
    recovery. A recovery needs the write-off in the ledger first: it is posted here when it is not yet."""
    from revrec.services.posting.write_offs import post_write_off, write_off_source

    postings: list[Posting] = []
    for allocation in allocations:
        invoice = allocation.invoice
        require_invoice_posted(invoice.pk)
        memo = f"{allocation.get_kind_display()} on {invoice.number}"
        customer_id = invoice.customer_id
        postings += [debit("customer_credit", allocation.amount, customer_id=customer_id, memo=memo),
                     credit("receivable", allocation.amount, customer_id=customer_id, memo=memo)]
        if is_recovery(allocation, invoice):
            if not is_posted(write_off_source(invoice)):
                post_write_off(invoice, chart=chart, actor=actor, now=now)
            memo = f"Recovery of written-off {invoice.number}"
            postings += [debit("receivable", allocation.amount, customer_id=customer_id, memo=memo),
                         credit("bad_debt", allocation.amount, customer_id=customer_id, memo=memo)]
    return postings


def _unposted(rows: Iterable[Allocation]) -> list[Allocation]:
    rows = list(rows)
    claimed = set(PostedSource.objects.filter(source__in=[allocation_source(a) for a in rows])
                  .values_list("source", flat=True))
    return [a for a in rows if allocation_source(a) not in claimed]


def unposted_allocations_of(**filters: object) -> list[Allocation]:
    return _unposted(Allocation.objects.filter(**filters).select_related("invoice").order_by("created_at", "pk"))


def post_payment(payment: Payment, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """Cash in (Dr cash, Cr customer_credit) and, in the same entry, its allocations not yet posted: a
    payment of one invoice reads Dr cash / Cr receivable, an overpayment leaves the rest in customer_credit."""
    if payment.status not in (Payment.Status.SUCCEEDED, Payment.Status.REVERSED):
        raise NotReady(f"{payment} is {payment.status}: only money received is posted.")
    with transaction.atomic():
        allocations = unposted_allocations_of(payment=payment, kind=Allocation.Kind.PAYMENT)
        customer_id = payment.customer_id

        def postings() -> list[Posting]:
            return [debit("cash", payment.amount, customer_id=customer_id, memo=f"Payment #{payment.pk}"),
                    credit("customer_credit", payment.amount, customer_id=customer_id, memo=f"Payment #{payment.pk}"),
                    *allocation_postings(allocations, chart=chart, actor=actor, now=now)]

        return post_entry(
            chart=chart, kind=JournalEntry.Kind.PAYMENT, source_key=f"payment:{payment.pk}",
            claims=[allocation_source(a) for a in allocations], on=payment.received_on, currency=payment.currency,
            description=f"Payment #{payment.pk} from {payment.customer.name}"
            + (f" ({payment.reference})" if payment.reference else ""),
            postings=postings, actor=actor, now=now, customer_id=customer_id, payment=payment,
        )


def post_payment_reversal(payment: Payment, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """A payment undone (recorded by mistake, bounced): the cash goes back out, its allocations come off."""
    if payment.status != Payment.Status.REVERSED or payment.reversed_at is None:
        raise NotReady(f"{payment} is not reversed.")
    with transaction.atomic():
        if not is_posted(f"payment:{payment.pk}"):
            raise NotReady(f"{payment} is not posted yet.")
        allocations = unposted_allocations_of(payment=payment, kind=Allocation.Kind.PAYMENT_REVERSAL)
        customer_id = payment.customer_id
        memo = f"Payment #{payment.pk} reversed"

        def postings() -> list[Posting]:
            return [debit("customer_credit", payment.amount, customer_id=customer_id, memo=memo),
                    credit("cash", payment.amount, customer_id=customer_id, memo=memo),
                    *allocation_postings(allocations, chart=chart, actor=actor, now=now)]

        return post_entry(
            chart=chart, kind=JournalEntry.Kind.PAYMENT_REVERSAL, source_key=f"payment_reversal:{payment.pk}",
            claims=[allocation_source(a) for a in allocations], on=local_day(payment.customer, payment.reversed_at),
            currency=payment.currency, description=f"{memo}: {payment.reversal_reason}", postings=postings,
            actor=actor, now=now, customer_id=customer_id, payment=payment,
        )


def post_refund(refund: Refund, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """Money paid back (committed when the refund is created): Dr customer_credit / Cr cash, with what it took
    off invoices (negative allocations: the invoices are due again)."""
    with transaction.atomic():
        allocations = unposted_allocations_of(refund=refund)
        customer_id = refund.customer_id
        memo = f"Refund #{refund.pk}"

        def postings() -> list[Posting]:
            return [debit("customer_credit", refund.amount, customer_id=customer_id, memo=memo),
                    credit("cash", refund.amount, customer_id=customer_id, memo=memo),
                    *allocation_postings(allocations, chart=chart, actor=actor, now=now)]

        return post_entry(
            chart=chart, kind=JournalEntry.Kind.REFUND, source_key=f"refund:{refund.pk}",
            claims=[allocation_source(a) for a in allocations], on=refund.refunded_on, currency=refund.currency,
            description=f"{memo} to {refund.customer.name}: {refund.reason}", postings=postings, actor=actor,
            now=now, customer_id=customer_id, refund=refund, payment_id=refund.payment_id,
            credit_note_id=refund.credit_note_id,
        )


def refund_failure_day(refund: Refund) -> date:
    return local_day(refund.customer, refund.gateway_updated_at or refund.updated_at)


def post_refund_failure(refund: Refund, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """A refund the gateway could not pay: the cash never left (Dr cash / Cr customer_credit), and the
    payment's money goes back on the invoices it came off."""
    if refund.status != Refund.Status.FAILED:
        raise NotReady(f"{refund} has not failed.")
    with transaction.atomic():
        if not is_posted(f"refund:{refund.pk}"):
            raise NotReady(f"{refund} is not posted yet.")
        allocations = []
        if refund.payment_id is not None:
            allocations = unposted_allocations_of(payment_id=refund.payment_id, kind=Allocation.Kind.PAYMENT,
                                       note__startswith=f"Refund #{refund.pk} failed")
        customer_id = refund.customer_id
        memo = f"Refund #{refund.pk} failed"

        def postings() -> list[Posting]:
            return [debit("cash", refund.amount, customer_id=customer_id, memo=memo),
                    credit("customer_credit", refund.amount, customer_id=customer_id, memo=memo),
                    *allocation_postings(allocations, chart=chart, actor=actor, now=now)]

        return post_entry(
            chart=chart, kind=JournalEntry.Kind.REFUND_FAILED, source_key=f"refund_failed:{refund.pk}",
            claims=[allocation_source(a) for a in allocations], on=refund_failure_day(refund),
            currency=refund.currency, description=f"{memo}: {refund.failure_message}", postings=postings,
            actor=actor, now=now, customer_id=customer_id, refund=refund,
        )


def post_allocation(allocation: Allocation, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """An allocation no document entry took (credit balance applied, a payment allocated later, a negative
    invoice's credit moved to the balance...)."""
    invoice = allocation.invoice
    with transaction.atomic():
        return post_entry(
            chart=chart, kind=JournalEntry.Kind.ALLOCATION, source_key=allocation_source(allocation),
            on=local_day(invoice.customer, allocation.created_at), currency=invoice.currency,
            description=f"{allocation.get_kind_display()} {allocation.amount} on invoice {invoice.number}",
            postings=lambda: allocation_postings([allocation], chart=chart, actor=actor, now=now),
            actor=actor, now=now, customer_id=invoice.customer_id, invoice=invoice,
            payment_id=allocation.payment_id, credit_note_id=allocation.credit_note_id, refund_id=allocation.refund_id,
        )
