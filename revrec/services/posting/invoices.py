"""Posting a finalized invoice: receivable (less the prepaid credit it used), tax payable, and the revenue
side per revenue contract: revenue for what is recognised at once (usage as invoiced, delivered one-time
items), deferred revenue for the rest (or less contract asset, when the contract had recognised ahead of
billing). A prepaid credit purchase is a liability, not revenue."""

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from billing.actors import Actor
from invoicing.models import Invoice
from revrec.arithmetic import position_change
from revrec.models import JournalEntry, PerformanceObligation, Recognition, RevenueContract
from revrec.services.chart import Chart
from revrec.services.journal import Posting, credit, debit, post_entry
from revrec.services.obligations import PREPAYMENT_LINES, create_obligations, line_net, recognised_at_posting
from revrec.services.periods import posting_period

ZERO = Decimal("0")


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
    """Post a finalized invoice once: its revenue contracts and obligations are created in the same
    transaction. Raises AlreadyPosted when it was posted before."""
    if invoice.finalized_at is None or invoice.issue_date is None:
        raise ValueError(f"Invoice {invoice} is not finalized: only finalized invoices are posted.")
    with transaction.atomic():
        customer_id = invoice.customer_id
        billed_on = posting_period(invoice.billing_entity_id, invoice.issue_date)[1]
        lines = list(invoice.lines.all())
        postings: list[Posting] = [
            debit("receivable", invoice.total - invoice.prepaid_credit_applied, customer_id=customer_id),
            debit("prepaid_credit", invoice.prepaid_credit_applied, customer_id=customer_id),
            credit("tax_payable", invoice.tax_total, customer_id=customer_id),
        ]
        for line in lines:
            if line.kind in PREPAYMENT_LINES:
                postings.append(credit("prepaid_credit", line_net(line), customer_id=customer_id,
                                       memo=line.description))

        # post_entry claims the invoice before calling revenue_side, so a racing posting stops before it
        # creates obligations.
        recognised: list[tuple[PerformanceObligation, Decimal]] = []
        contracts: list[RevenueContract] = []

        def revenue_side() -> list[Posting]:
            for contract, obligations in create_obligations(invoice, billed_on=billed_on, now=now).items():
                billed = sum((o.billed_amount for o in obligations), ZERO)
                now_recognised = [(o, recognised_at_posting(o, invoice.issue_date)) for o in obligations]
                by_product: dict[int | None, Decimal] = {}
                for obligation, amount in now_recognised:
                    if amount:
                        by_product[obligation.product_id] = by_product.get(obligation.product_id, ZERO) + amount
                        recognised.append((obligation, amount))
                postings.extend(contract_move(
                    contract, billed, sum(by_product.values(), ZERO), customer_id=contract.customer_id,
                    revenue=list(by_product.items()), memo=f"{invoice.number} {contract.reference}",
                ))
                contracts.append(contract)
            return postings

        entry = post_entry(
            chart=chart,
            kind=JournalEntry.Kind.INVOICE,
            source_key=invoice_source(invoice),
            on=invoice.issue_date,
            currency=invoice.currency,
            description=f"Invoice {invoice.number} to {invoice.customer.name}",
            postings=revenue_side,
            actor=actor,
            now=now,
            customer_id=customer_id,
            invoice=invoice,
        )
        for contract in contracts:
            contract.save(update_fields=["billed", "recognized", "transaction_price"])
        if recognised and entry is not None:
            _record_recognitions(recognised, entry, invoice.currency)
        return entry


def _record_recognitions(
    recognised: list[tuple[PerformanceObligation, Decimal]], entry: JournalEntry, currency: str
) -> None:
    rows = []
    for obligation, amount in recognised:
        obligation.recognized_amount += amount
        obligation.recognized_through = entry.entry_date
        obligation.status = PerformanceObligation.Status.COMPLETE
        rows.append(Recognition(
            obligation=obligation, revenue_contract_id=obligation.revenue_contract_id,
            customer_id=obligation.revenue_contract.customer_id, product_id=obligation.product_id,
            currency=currency, recognized_on=entry.entry_date, amount=amount, entry=entry,
        ))
    PerformanceObligation.objects.bulk_update(
        [o for o, _ in recognised], ["recognized_amount", "recognized_through", "status"]
    )
    Recognition.objects.bulk_create(rows)
