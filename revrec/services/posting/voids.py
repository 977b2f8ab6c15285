"""Posting the void of a finalized invoice: the mirror of the invoice's entry (receivable, tax, prepaid credit
back where they were) and its performance obligations cancelled: their contracts' billed and recognised totals
come down by what the invoice billed and what its obligations had recognised (revenue already recognised is
reversed, Dr revenue per product), with the contract's position moving accordingly."""

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum

from billing.actors import Actor
from invoicing.models import Invoice, WalletTransaction
from revrec.models import (
    JournalEntry,
    JournalLine,
    ObligationAdjustment,
    PerformanceObligation,
    PostedSource,
    Recognition,
    RevenueContract,
)
from revrec.services.chart import Chart
from revrec.services.journal import Posting, claim, post_entry
from revrec.services.periods import posting_period
from revrec.services.posting.breakage import wallet_expiry_source
from revrec.services.posting.invoices import contract_move, invoice_source
from revrec.services.posting.payments import NotReady, local_day
from revrec.services.recognition import lock_entity_revenue

ZERO = Decimal("0")
POSITION_ROLES = ("deferred_revenue", "contract_asset")


def void_source(invoice: Invoice | int) -> str:
    return f"invoice_void:{invoice if isinstance(invoice, int) else invoice.pk}"


def mirror_postings(entry: JournalEntry) -> list[Posting]:
    """The invoice entry's lines with debit and credit swapped, but for the contracts' position lines: the
    cancelled obligations move those from the contracts' current figures."""
    postings = []
    for line in JournalLine.objects.filter(entry=entry).select_related("account"):
        if line.account.role in POSITION_ROLES:
            continue
        postings.append(Posting(line.account.role, line.credit - line.debit, product_id=line.product_id,
                                customer_id=line.customer_id, revenue_contract_id=line.revenue_contract_id,
                                memo=f"Void: {line.memo}"[:300]))
    return postings


def post_invoice_void(invoice: Invoice, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """Post the void once, in one transaction; raises AlreadyPosted when it was posted before."""
    if invoice.status != Invoice.Status.VOID or invoice.finalized_at is None or invoice.voided_at is None:
        raise NotReady(f"Invoice {invoice} is not a voided finalized invoice.")
    source = void_source(invoice)
    with transaction.atomic():
        posted = PostedSource.objects.filter(source=invoice_source(invoice)).first()
        if posted is None:
            raise NotReady(f"Invoice {invoice} is not posted yet.")
        claimed = claim([source], now=now)
        lock_entity_revenue(invoice.billing_entity_id)
        day = local_day(invoice.customer, invoice.voided_at)
        effective_on = posting_period(invoice.billing_entity_id, day)[1]
        postings = mirror_postings(posted.entry) if posted.entry_id else []
        obligations = list(PerformanceObligation.objects.select_for_update()
                           .filter(invoice_line__invoice=invoice).exclude(status=PerformanceObligation.Status.CANCELLED)
                           .order_by("pk"))
        adjusted = {row["obligation"]: row["s"] for row in ObligationAdjustment.objects.filter(
            obligation__in=obligations).values("obligation").annotate(s=Sum("billed_delta"))}
        groups: dict[int, list[PerformanceObligation]] = defaultdict(list)
        for obligation in obligations:
            groups[obligation.revenue_contract_id].append(obligation)
        contracts = list(RevenueContract.objects.select_for_update().filter(pk__in=groups).order_by("pk"))
        billed_of = {o.pk: o.billed_amount + adjusted.get(o.pk, ZERO) for o in obligations}
        for contract in contracts:
            group = groups[contract.pk]
            revenue: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
            for obligation in group:
                revenue[obligation.product_id] -= obligation.recognized_amount
            postings.extend(contract_move(
                contract, -sum((billed_of[o.pk] for o in group), ZERO), sum(revenue.values(), ZERO),
                customer_id=contract.customer_id, revenue=list(revenue.items()),
                memo=f"Void of {invoice.number} {contract.reference}",
            ))
            contract.transaction_price -= sum((o.allocated_price for o in group), ZERO)
        # The top-up a voided purchase gave back is reversed by the mirror (Dr prepaid credit): not breakage.
        expiries = WalletTransaction.objects.filter(kind=WalletTransaction.Kind.EXPIRY, lot__invoice=invoice)
        claims = [wallet_expiry_source(pk) for pk in expiries.values_list("pk", flat=True)]
        claims = [c for c in claims if not PostedSource.objects.filter(source=c).exists()]
        entry = post_entry(
            chart=chart, kind=JournalEntry.Kind.INVOICE_VOID, source_key=source, claim_source=False, claims=claims,
            on=day, currency=invoice.currency, description=f"Invoice {invoice.number} voided: {invoice.void_reason}",
            postings=postings, actor=actor, now=now, customer_id=invoice.customer_id, invoice=invoice,
        )
        if entry is not None:
            PostedSource.objects.filter(pk__in=[c.pk for c in claimed]).update(entry=entry)
            effective_on = entry.entry_date
        _cancel(obligations, billed_of, invoice, entry=entry, effective_on=effective_on, source=source, now=now)
        RevenueContract.objects.bulk_update(contracts, ["billed", "recognized", "transaction_price"])
        return entry


def _cancel(obligations: list[PerformanceObligation], billed_of: dict[int, Decimal], invoice: Invoice, *,
            entry: JournalEntry | None, effective_on: object, source: str, now: datetime) -> None:
    """Cancel the obligations: nothing billed, allocated or recognised remains. What they had recognised is
    taken back by a negative Recognition row on the void's day, so the revenue reports and the deferred
    revenue roll-forward (which rebuild positions from Recognition rows) agree with the ledger."""
    adjustments, reversals = [], []
    for obligation in obligations:
        adjustments.append(ObligationAdjustment(
            obligation=obligation, revenue_contract_id=obligation.revenue_contract_id,
            kind=ObligationAdjustment.Kind.VOID, effective_on=effective_on, billed_delta=-billed_of[obligation.pk],
            allocated_delta=-obligation.allocated_price, entry=entry, source_key=source, created_at=now,
        ))
        if obligation.recognized_amount and entry is not None:
            reversals.append(Recognition(
                obligation=obligation, revenue_contract_id=obligation.revenue_contract_id,
                customer_id=invoice.customer_id, product_id=obligation.product_id, currency=invoice.currency,
                recognized_on=entry.entry_date, kind=Recognition.Kind.VOID,
                amount=-obligation.recognized_amount, entry=entry,
            ))
        obligation.status = PerformanceObligation.Status.CANCELLED
        obligation.allocated_price = ZERO
        obligation.recognized_amount = ZERO
    PerformanceObligation.objects.bulk_update(obligations, ["status", "allocated_price", "recognized_amount"])
    ObligationAdjustment.objects.bulk_create(adjustments)
    Recognition.objects.bulk_create(reversals)
