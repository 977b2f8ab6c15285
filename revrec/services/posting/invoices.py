"""Posting a finalized invoice: receivable (less the prepaid credit it used), tax payable, and the revenue
side per revenue contract: revenue for what is recognised at once (usage as invoiced, delivered one-time
items), deferred revenue for the rest (or less contract asset, when the contract had recognised ahead of
billing). A prepaid credit purchase is a liability, not revenue."""

from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import transaction

from billing.actors import Actor
from invoicing.models import Invoice
from revrec.arithmetic import RatableTerms, position_change, ratable_through
from revrec.models import JournalEntry, PerformanceObligation, PostedSource, Recognition, RevenueContract
from revrec.services.chart import Chart
from revrec.services.journal import Posting, claim, credit, debit, post_entry
from revrec.services.obligations import PREPAYMENT_LINES, create_obligations, line_net
from revrec.services.periods import posting_period

ZERO = Decimal("0")
Pattern = PerformanceObligation.Pattern


def invoice_source(invoice: Invoice | int) -> str:
    return f"invoice:{invoice if isinstance(invoice, int) else invoice.pk}"


def contract_move(
    contract: RevenueContract, billed: Decimal, recognized: Decimal, *, customer_id: int,
    revenue: list[tuple[int | None, Decimal]], memo: str,
) -> list[Posting]:
    """The revenue side of a change to one revenue contract: `billed` more billed (before tax) and
    `recognized` more recognised, `revenue` being the recognised amounts per product. Updates the
    contract's running totals (the caller holds its row lock and saves it)."""
    move = position_change(contract.billed, contract.recognized, contract.billed + billed,
                           contract.recognized + recognized)
    contract.billed += billed
    contract.recognized += recognized
    postings = [
        credit("revenue", amount, product_id=product_id, customer_id=customer_id, revenue_contract_id=contract.pk,
               memo=memo)
        for product_id, amount in revenue
        if amount
    ]
    if move.deferred:
        postings.append(credit("deferred_revenue", move.deferred, customer_id=customer_id,
                               revenue_contract_id=contract.pk, memo=memo))
    if move.asset:
        postings.append(debit("contract_asset", move.asset, customer_id=customer_id,
                              revenue_contract_id=contract.pk, memo=memo))
    return postings


def post_invoice(invoice: Invoice, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """Post a finalized invoice once, with its revenue contracts and obligations, in one transaction.
    Raises AlreadyPosted when it was posted before.

    Revenue already earned when the invoice is posted is recognised on the day it was earned, in its own
    entry: usage on the last day of its service period (the right to invoice arose as it was used), the
    elapsed part of a fee billed in arrears through the day before billing, a delivered item on its
    delivery day. Those entries are dated before the invoice's when they belong there (a contract asset
    until the invoice bills it), or in the first open period when their own is closed.
    """
    if invoice.finalized_at is None or invoice.issue_date is None:
        raise ValueError(f"Invoice {invoice} is not finalized: only finalized invoices are posted.")
    with transaction.atomic():
        # Claim first, so a racing posting stops before it creates obligations.
        claimed = claim([invoice_source(invoice)], now=now)
        customer_id = invoice.customer_id
        billed_on = posting_period(invoice.billing_entity_id, invoice.issue_date)[1]
        groups = create_obligations(invoice, billed_on=billed_on, now=now)
        due: dict[date, list[tuple[PerformanceObligation, Decimal, date]]] = defaultdict(list)
        for obligations in groups.values():
            for obligation in obligations:
                earned = earned_at_posting(obligation, billed_on, invoice.currency)
                if earned is not None and earned[1]:
                    due[earned[0]].append((obligation, earned[1], earned[0]))
        for day in sorted(d for d in due if d < billed_on):
            _post_earned(invoice, day, due[day], chart=chart, actor=actor, now=now)

        postings: list[Posting] = [
            debit("receivable", invoice.total - invoice.prepaid_credit_applied, customer_id=customer_id),
            debit("prepaid_credit", invoice.prepaid_credit_applied, customer_id=customer_id),
            credit("tax_payable", invoice.tax_total, customer_id=customer_id),
        ]
        for line in invoice.lines.all():
            if line.kind in PREPAYMENT_LINES:
                postings.append(credit("prepaid_credit", line_net(line), customer_id=customer_id,
                                       memo=line.description))
        for contract, obligations in groups.items():
            billed = sum((o.billed_amount for o in obligations), ZERO)
            postings.extend(contract_move(contract, billed, ZERO, customer_id=contract.customer_id, revenue=[],
                                          memo=f"{invoice.number} {contract.reference}"))
        entry = post_entry(
            chart=chart, kind=JournalEntry.Kind.INVOICE, source_key=invoice_source(invoice), claim_source=False,
            on=invoice.issue_date, currency=invoice.currency,
            description=f"Invoice {invoice.number} to {invoice.customer.name}", postings=postings,
            actor=actor, now=now, customer_id=customer_id, invoice=invoice,
        )
        if entry is not None:
            PostedSource.objects.filter(pk__in=[c.pk for c in claimed]).update(entry=entry)
        for day in sorted(d for d in due if d >= billed_on):
            _post_earned(invoice, day, due[day], chart=chart, actor=actor, now=now)
        for contract in groups:
            contract.save(update_fields=["billed", "recognized", "transaction_price"])
        return entry


def earned_at_posting(obligation: PerformanceObligation, billed_on: date, currency: str) -> tuple[date, Decimal] | None:
    """The day and amount an obligation has already earned when its invoice is posted on `billed_on`."""
    if obligation.pattern == Pattern.AS_INVOICED:
        day = billed_on
        if obligation.service_end is not None and obligation.service_end - timedelta(days=1) < billed_on:
            day = obligation.service_end - timedelta(days=1)
        return day, obligation.allocated_price
    if obligation.pattern == Pattern.POINT_IN_TIME:
        if obligation.satisfied_on is not None and obligation.satisfied_on <= billed_on:
            return obligation.satisfied_on, obligation.allocated_price
        return None
    if obligation.service_start is not None and obligation.service_start < billed_on:
        through = min(billed_on, obligation.service_end) - timedelta(days=1)
        terms = RatableTerms(price=obligation.allocated_price, start=obligation.service_start,
                             end=obligation.service_end, currency=currency)
        return through, ratable_through(terms, through)
    return None


def _post_earned(invoice: Invoice, day: date, items: list[tuple[PerformanceObligation, Decimal, date]], *,
                 chart: Chart, actor: Actor, now: datetime) -> None:
    """One recognition entry for what the invoice's obligations earned by `day`."""
    postings: list[Posting] = []
    by_contract: dict[int, list[tuple[PerformanceObligation, Decimal, date]]] = defaultdict(list)
    for item in items:
        by_contract[item[0].revenue_contract_id].append(item)
    for group in by_contract.values():
        contract = group[0][0].revenue_contract
        by_product: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
        for obligation, amount, _ in group:
            by_product[obligation.product_id] += amount
        postings.extend(contract_move(contract, ZERO, sum(by_product.values(), ZERO), customer_id=contract.customer_id,
                                      revenue=list(by_product.items()), memo=f"{invoice.number} {contract.reference}"))
    entry = post_entry(
        chart=chart, kind=JournalEntry.Kind.RECOGNITION, source_key=f"{invoice_source(invoice)}:earned:{day}",
        on=day, currency=invoice.currency, description=f"Revenue earned by {day} on invoice {invoice.number}",
        postings=postings, actor=actor, now=now, customer_id=invoice.customer_id, invoice=invoice,
    )
    if entry is None:
        return
    rows = []
    for obligation, amount, through in items:
        obligation.recognized_amount += amount
        obligation.recognized_through = through
        if obligation.pattern != Pattern.RATABLE or through >= obligation.service_end - timedelta(days=1):
            obligation.status = PerformanceObligation.Status.COMPLETE
        rows.append(Recognition(
            obligation=obligation, revenue_contract_id=obligation.revenue_contract_id,
            customer_id=obligation.revenue_contract.customer_id, product_id=obligation.product_id,
            currency=invoice.currency, recognized_on=entry.entry_date, amount=amount, entry=entry,
        ))
    PerformanceObligation.objects.bulk_update([o for o, _, _ in items],
                                              ["recognized_amount", "recognized_through", "status"])
    Recognition.objects.bulk_create(rows)
