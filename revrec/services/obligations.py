"""Steps 1 to 4 for a finalized invoice: find (or open) the revenue contract of each line, identify its
performance obligation, take the transaction price (net of discounts, before tax) and allocate it by
relative standalone selling price. Called by the invoice posting, in its transaction."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from invoicing.models import Invoice, InvoiceLine
from revrec.arithmetic import AllocationError, ObligationPrice, allocate_transaction_price, ssp_for_period
from revrec.models import PerformanceObligation, ProductRevenueRule, RevenueContract, StandaloneSellingPrice

ZERO = Decimal("0")
Kind = PerformanceObligation.Kind
Pattern = PerformanceObligation.Pattern
Line = InvoiceLine.Kind

# Variable consideration billed as the customer uses the service: recognised as invoiced (ASC 606-10-55-18).
USAGE_LINES = {Line.USAGE, Line.LATE_USAGE, Line.MINIMUM_TRUE_UP, Line.COMMITMENT_TRUE_UP}
# Not revenue: a prepayment, a liability until the credits are used or expire.
PREPAYMENT_LINES = {Line.CREDIT_PURCHASE}


def line_net(line: InvoiceLine) -> Decimal:
    return line.amount - line.discount_amount


def revenue_lines(invoice: Invoice) -> list[InvoiceLine]:
    lines = invoice.lines.select_related("subscription__contract").order_by("position", "pk")
    return [line for line in lines if line.kind not in PREPAYMENT_LINES]


def revenue_contract_for(invoice: Invoice, line: InvoiceLine, *, now: datetime) -> RevenueContract:
    """The line's revenue contract, locked: its customer contract's, or the invoice's own."""
    contract_id = line.subscription.contract_id if line.subscription_id else None
    if contract_id is not None:
        contract, _ = RevenueContract.objects.get_or_create(
            contract_id=contract_id,
            defaults={
                "billing_entity_id": invoice.billing_entity_id,
                "customer_id": line.subscription.customer_id,
                "reference": f"RC-{line.subscription.contract.reference}",
                "currency": invoice.currency,
                "created_at": now,
            },
        )
    else:
        contract, _ = RevenueContract.objects.get_or_create(
            invoice=invoice,
            defaults={
                "billing_entity_id": invoice.billing_entity_id,
                "customer_id": invoice.customer_id,
                # "/" never appears in a contract reference (code_validator), so the two kinds never collide.
                "reference": f"RC-INV/{invoice.number}",
                "currency": invoice.currency,
                "created_at": now,
            },
        )
    return RevenueContract.objects.select_for_update().get(pk=contract.pk)


@dataclass
class PriceBook:
    """The SSP rows and revenue rules of an invoice's products, loaded once for all its lines."""

    ssps: dict[int, list[StandaloneSellingPrice]]  # per product, latest effective date first
    on_delivery: set[int]  # products whose one-time items are recognised when delivered

    @classmethod
    def for_lines(cls, lines: list[InvoiceLine], currency: str) -> "PriceBook":
        products = {line.product_id for line in lines if line.product_id is not None}
        ssps: dict[int, list[StandaloneSellingPrice]] = defaultdict(list)
        for row in StandaloneSellingPrice.objects.filter(product_id__in=products, currency=currency).order_by(
            "product_id", "-effective_from"
        ):
            ssps[row.product_id].append(row)
        on_delivery = set(ProductRevenueRule.objects.filter(
            product_id__in=products, one_time=ProductRevenueRule.OneTime.ON_DELIVERY
        ).values_list("product_id", flat=True))
        return cls(ssps, on_delivery)

    def ssp(self, product_id: int | None, on: date) -> StandaloneSellingPrice | None:
        """The product's SSP in effect on `on`."""
        return next((row for row in self.ssps.get(product_id or 0, []) if row.effective_from <= on), None)


@dataclass
class Identified:
    obligation: PerformanceObligation
    price: ObligationPrice


def identify(invoice: Invoice, line: InvoiceLine, contract: RevenueContract, *, book: PriceBook, billed_on: date,
             now: datetime) -> Identified:
    """Step 2 for one line: what it promises, how it is recognised, and its SSP."""
    net = line_net(line)
    has_period = bool(line.period_start and line.period_end and line.period_end > line.period_start)
    product_id = line.product_id
    obligation = PerformanceObligation(
        revenue_contract=contract,
        invoice_line=line,
        product_id=product_id,
        description=line.description[:300],
        quantity=line.quantity,
        billed_amount=net,
        billed_on=billed_on,
        created_at=now,
    )
    if line.kind in USAGE_LINES:
        obligation.kind, obligation.pattern = Kind.USAGE, Pattern.AS_INVOICED
        obligation.service_start, obligation.service_end = line.period_start, line.period_end
        obligation.ssp, obligation.ssp_source = net, "variable consideration (usage)"
        return Identified(obligation, ObligationPrice(ssp=net, list_amount=net, variable=net))
    if has_period:
        obligation.kind, obligation.pattern = Kind.SUBSCRIPTION, Pattern.RATABLE
        obligation.service_start, obligation.service_end = line.period_start, line.period_end
    else:
        obligation.kind, obligation.pattern = Kind.ONE_TIME, Pattern.POINT_IN_TIME
        if product_id in book.on_delivery:
            obligation.status = PerformanceObligation.Status.AWAITING_DELIVERY
        else:
            obligation.satisfied_on = invoice.issue_date
    if net < 0:
        # A credit for unused time or a refund of a fee belongs to the time it credits: it keeps its amount.
        obligation.ssp, obligation.ssp_source = net, "credit line (kept as billed)"
        return Identified(obligation, ObligationPrice(ssp=net, list_amount=net, variable=net))
    row = book.ssp(product_id, line.period_start or invoice.issue_date)
    if row is None:
        obligation.ssp, obligation.ssp_source = line.amount, "list price"
        return Identified(obligation, ObligationPrice(ssp=line.amount, list_amount=net))
    if row.is_uncertain:
        obligation.ssp_source = f"residual approach (SSP #{row.pk})"
        return Identified(obligation, ObligationPrice(ssp=None, list_amount=net))
    ssp = ssp_for_period(row.price, row.per, line.quantity, obligation.service_start, obligation.service_end)
    obligation.ssp, obligation.ssp_source = ssp.quantize(Decimal("0.0001")), f"SSP #{row.pk} ({row.get_per_display()})"
    return Identified(obligation, ObligationPrice(ssp=ssp, list_amount=net))


def create_obligations(
    invoice: Invoice, *, billed_on: date, now: datetime
) -> dict[RevenueContract, list[PerformanceObligation]]:
    """Steps 1-4 for a finalized invoice: the obligations of its revenue lines per revenue contract, each
    group's transaction price (its lines net of discounts, before tax) allocated by relative SSP."""
    groups: dict[int | None, tuple[RevenueContract, list[Identified]]] = {}
    lines = revenue_lines(invoice)
    book = PriceBook.for_lines(lines, str(invoice.currency))
    for line in lines:
        # One contract object per customer contract (None: the invoice's own), fetched and locked once: the
        # posting moves its running totals line after line.
        key = line.subscription.contract_id if line.subscription_id else None
        if key not in groups:
            groups[key] = (revenue_contract_for(invoice, line, now=now), [])
        contract = groups[key][0]
        groups[key][1].append(identify(invoice, line, contract, book=book, billed_on=billed_on, now=now))
    result: dict[RevenueContract, list[PerformanceObligation]] = defaultdict(list)
    for contract, identified in groups.values():
        price = sum((item.obligation.billed_amount for item in identified), ZERO)
        try:
            allocation = allocate_transaction_price(price, [item.price for item in identified], invoice.currency)
        except AllocationError:
            # The residual approach leaves nothing (observable SSPs exceed the price): it does not apply,
            # so the uncertain SSPs are estimated at their list prices instead, and the source says so.
            for item in identified:
                if item.price.ssp is None:
                    item.price = ObligationPrice(ssp=abs(item.price.list_amount), list_amount=item.price.list_amount)
                    item.obligation.ssp = abs(item.price.list_amount)
                    item.obligation.ssp_source = "residual not applicable: list price"
            allocation = allocate_transaction_price(price, [item.price for item in identified], invoice.currency)
        for item, allocated, ssp in zip(identified, allocation.prices, allocation.ssps, strict=True):
            item.obligation.allocated_price = allocated
            if item.price.ssp is None:
                item.obligation.ssp = ssp.quantize(Decimal("0.0001"))
        obligations = PerformanceObligation.objects.bulk_create([item.obligation for item in identified])
        contract.transaction_price += price
        contract.save(update_fields=["transaction_price"])
        result[contract] = obligations
    return result
