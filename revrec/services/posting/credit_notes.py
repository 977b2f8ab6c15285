"""Posting a credit note: tax given back (Dr tax payable), the note's total owed to the customer (Cr
customer_credit, then moved to the receivable by the note's own allocations), and the revenue side.

Per credited line with a performance obligation, the part up to what the obligation has not recognised yet
reduces what remains to recognise (its allocated price and its contract's billed total: Dr deferred revenue,
or the contract's position change); the rest, already recognised, goes to contra-revenue. A ratable
obligation is rebased on the note's day with what it had recognised, so nothing recognised is restated and
the reduced remainder is spread over the days left. Lines without an obligation go to contra-revenue."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import transaction

from billing.actors import Actor
from invoicing.models import CreditNote
from revrec.models import JournalEntry, ObligationAdjustment, PerformanceObligation, PostedSource, RevenueContract
from revrec.services.chart import Chart
from revrec.services.journal import Posting, claim, credit, debit, post_entry
from revrec.services.periods import posting_period
from revrec.services.posting.invoices import contract_move
from revrec.services.posting.payments import (
    allocation_postings,
    allocation_source,
    require_invoice_posted,
    unposted_allocations_of,
)
from revrec.services.recognition import lock_entity_revenue

ZERO = Decimal("0")
Pattern = PerformanceObligation.Pattern
Status = PerformanceObligation.Status


def credit_note_source(note: CreditNote | int) -> str:
    return f"credit_note:{note if isinstance(note, int) else note.pk}"


@dataclass
class Reduction:
    obligation: PerformanceObligation
    amount: Decimal


def reduce_obligation(obligation: PerformanceObligation, amount: Decimal, on: date) -> None:
    """Take `amount` off what the obligation still has to recognise, from day `on` (in memory)."""
    obligation.allocated_price -= amount
    if obligation.pattern == Pattern.RATABLE:
        # Restart the running total after the last day recognised, with what was recognised by then.
        start = max(on, obligation.service_start)
        if obligation.recognized_through is not None:
            start = max(start, obligation.recognized_through + timedelta(days=1))
        obligation.rebased_on = start
        obligation.rebased_amount = obligation.recognized_amount
        if obligation.remaining == 0 and start >= obligation.service_end:
            obligation.status = Status.COMPLETE
    elif obligation.remaining == 0:
        obligation.status = Status.COMPLETE


def post_credit_note(note: CreditNote, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """Post the note once with its allocations, reducing its obligations, in one transaction. Raises
    AlreadyPosted when it was posted before."""
    source = credit_note_source(note)
    with transaction.atomic():
        require_invoice_posted(note.invoice_id)
        claimed = claim([source], now=now)  # first, so a racing posting stops before touching obligations
        lock_entity_revenue(note.billing_entity_id)
        customer_id = note.customer_id
        effective_on = posting_period(note.billing_entity_id, note.issue_date)[1]
        postings: list[Posting] = [
            debit("tax_payable", note.tax_total, customer_id=customer_id, memo=f"Tax on {note.number}"),
            credit("customer_credit", note.total, customer_id=customer_id, memo=note.number),
        ]
        reductions: list[Reduction] = []
        lines = note.lines.select_related("invoice_line").order_by("position", "pk")
        for line in lines:
            obligation = None
            if line.invoice_line_id is not None:
                obligation = (PerformanceObligation.objects.select_for_update()
                              .filter(invoice_line_id=line.invoice_line_id).exclude(status=Status.CANCELLED).first())
            part = min(line.amount, max(obligation.remaining, ZERO)) if obligation is not None else ZERO
            if part > 0:
                reduce_obligation(obligation, part, note.issue_date)  # type: ignore[arg-type]
                reductions.append(Reduction(obligation, part))  # type: ignore[arg-type]
            if line.amount - part > 0:
                product_id = line.product_id or (line.invoice_line.product_id if line.invoice_line_id else None)
                postings.append(debit("contra_revenue", line.amount - part, product_id=product_id,
                                      customer_id=customer_id, memo=f"{note.number}: {line.description}"))
        by_contract: dict[int, Decimal] = defaultdict(lambda: ZERO)
        for reduction in reductions:
            by_contract[reduction.obligation.revenue_contract_id] += reduction.amount
        contracts = list(RevenueContract.objects.select_for_update().filter(pk__in=by_contract).order_by("pk"))
        for contract in contracts:
            postings.extend(contract_move(contract, -by_contract[contract.pk], ZERO, customer_id=contract.customer_id,
                                          revenue=[], memo=f"{note.number} {contract.reference}"))
            contract.transaction_price -= by_contract[contract.pk]
        allocations = unposted_allocations_of(credit_note=note)
        postings.extend(allocation_postings(allocations, chart=chart, actor=actor, now=now))
        entry = post_entry(
            chart=chart, kind=JournalEntry.Kind.CREDIT_NOTE, source_key=source, claim_source=False,
            claims=[allocation_source(a) for a in allocations], on=note.issue_date, currency=note.currency,
            description=f"Credit note {note.number} on invoice {note.invoice.number}", postings=postings,
            actor=actor, now=now, customer_id=customer_id, invoice_id=note.invoice_id, credit_note=note,
        )
        if entry is not None:
            PostedSource.objects.filter(pk__in=[c.pk for c in claimed]).update(entry=entry)
            effective_on = entry.entry_date
        PerformanceObligation.objects.bulk_update(
            [r.obligation for r in reductions], ["allocated_price", "rebased_on", "rebased_amount", "status"]
        )
        RevenueContract.objects.bulk_update(contracts, ["billed", "recognized", "transaction_price"])
        ObligationAdjustment.objects.bulk_create([
            ObligationAdjustment(
                obligation=r.obligation, revenue_contract_id=r.obligation.revenue_contract_id,
                kind=ObligationAdjustment.Kind.CREDIT_NOTE, effective_on=effective_on, billed_delta=-r.amount,
                allocated_delta=-r.amount, entry=entry, source_key=source, created_at=now,
            )
            for r in reductions
        ])
        return entry
