"""The unbilled revenue accrual of a period end.

Usage and fees billed in arrears are earned as the service is delivered, but the invoice that bills them
comes later: when a billing period runs across the month end (a customer billed on the 15th), or when the
invoice of a period that ended with the month is not finalized and posted yet at the close. What was
delivered by the period end and is not on a posted invoice is revenue of the period (a right to invoice):
one entry per currency on the period's last day, Dr contract asset / Cr revenue per product and customer,
and its reversal on the next period's first day, so the invoice that bills it next month nets out.

How it is identified in the ledger (the roll-forward and the unbilled revenue report must know it, as the
revenue contracts' running totals never include it): entries of kind ACCRUAL (`accrual:{entity}:{period
start}:{currency}`) and ACCRUAL_REVERSAL (`accrual_reversal:{entity}:{period start}:{currency}`); their
lines carry the customer and (revenue side) the product, never a revenue contract. Once the reversal is
dated, an accrual's net effect on every account is zero from the next period on.

The figures come from the invoicing rating code (fees in arrears prorated by day to the period end; usage
rated over the events received up to the period end, in the customer's timezone). Fees billed in advance are
not accrued (they are billed when their period starts), nor are minimum-spend true-ups (earned only at the
end of their billing period) or late usage of periods already invoiced.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext

from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from billing.actors import Actor
from billing.errors import BillingError
from contracts.models import Subscription
from contracts.periods import Period, periods_between
from customers.models import BillingEntity, Customer
from invoicing.models import BilledPeriod
from invoicing.pricing.rounding import round_money
from invoicing.rating import BILLABLE_STATUSES, CatalogCache, Rater, billed_subscriptions, load_inputs
from revrec.models import AccountingPeriod, JournalEntry, PostedSource
from revrec.services.chart import Chart
from revrec.services.journal import AlreadyPosted, Posting, claim, credit, debit, post_entry

ZERO = Decimal("0")
ARREARS = BilledPeriod.Timing.ARREARS


@dataclass(frozen=True)
class AccruedAmount:
    """Revenue delivered by the period end and not yet on a posted invoice, exact (not yet rounded)."""

    customer_id: int
    product_id: int | None
    currency: str
    amount: Decimal
    what: str


@dataclass
class AccrualResult:
    period: AccountingPeriod
    amounts: dict[str, Decimal] = field(default_factory=dict)
    entries: list[JournalEntry] = field(default_factory=list)
    already_done: bool = False


def accrual_marker(entity_id: int, period_start: date) -> str:
    """Claimed once per entity and period: the accrual ran (even when it had nothing to post)."""
    return f"accrual:{entity_id}:{period_start.isoformat()}"


def accrual_source(entity_id: int, period_start: date, currency: str) -> str:
    return f"accrual:{entity_id}:{period_start.isoformat()}:{currency}"


def reversal_source(entity_id: int, period_start: date, currency: str) -> str:
    return f"accrual_reversal:{entity_id}:{period_start.isoformat()}:{currency}"


def is_accrued(period: AccountingPeriod) -> bool:
    return PostedSource.objects.filter(source=accrual_marker(period.billing_entity_id, period.start_date)).exists()


def _posted_arrears_periods(subscription_ids: list[int]) -> set[tuple[int, date]]:
    """(subscription, period start) of arrears periods already on a posted invoice, or settled with nothing
    to bill: their revenue is in the ledger already (posting an invoice recognises its usage on the last day
    of the usage period)."""
    posted = PostedSource.objects.filter(source=OuterRef("invoice_source"))
    rows = (
        BilledPeriod.objects.filter(subscription_id__in=subscription_ids, timing=ARREARS, released=False)
        .annotate(invoice_source=_invoice_source_expr())
        .filter(Q(invoice__isnull=True) | Exists(posted))
        .values_list("subscription_id", "period_start")
    )
    return set(rows)


def _invoice_source_expr():  # type: ignore[no-untyped-def]
    from django.db.models import CharField, Value
    from django.db.models.functions import Cast, Concat

    return Concat(Value("invoice:"), Cast("invoice_id", CharField()), output_field=CharField())


def unbilled_for_customer(bill_to: Customer, start: date, end: date, catalog: CatalogCache) -> list[AccruedAmount]:
    """What `bill_to`'s subscriptions delivered in [start, end) that no posted invoice carries yet: fees in
    arrears prorated by day, and usage rated over the events of the delivered days."""
    last_day = end - timedelta(days=1)
    subscriptions = [s for s in billed_subscriptions(bill_to, catalog=catalog) if s.start_date <= last_day]
    if not subscriptions:
        return []
    inputs = load_inputs(subscriptions, catalog)
    rater = Rater(bill_to, last_day, catalog, late_usage=False)
    done = _posted_arrears_periods([s.pk for s in subscriptions])
    out: list[AccruedAmount] = []
    for sub in subscriptions:
        sub_inputs = inputs[sub.pk]
        plan = catalog.versions[sub.plan_version_id].plan
        periods = periods_between(start, end, interval=plan.interval, anchor=sub.billing_anchor,
                                  start_date=sub.start_date, bill_cycle_day=sub.bill_cycle_day,
                                  end_date=sub.end_date)
        for period in periods:
            if (sub.pk, period.start) in done:
                continue
            # The part of the billing period delivered by the accounting period's end.
            delivered = Period(period.start, min(period.end, end), period.full_start, period.full_end)
            out.extend(_arrears_fees(rater, sub_inputs, period, delivered))
            out.extend(_usage(rater, sub_inputs, delivered))
    return out


def _arrears_fees(rater: Rater, inputs, period: Period, delivered: Period) -> list[AccruedAmount]:  # type: ignore[no-untyped-def]
    """Fees billed in arrears: the exact amount of each fee segment times the share of its days delivered."""
    out = []
    for item in rater._fee_items(inputs).values():
        if item["timing"] != ARREARS or not item["terms"]:
            continue
        segments, _ = rater._segments(inputs, item, period)
        fixed = item["fixed"]
        product_id = fixed.product_id if fixed is not None and fixed.product_id else item["version"].plan.product_id
        for seg in segments:
            days = (min(seg.end, delivered.end) - seg.start).days
            if days <= 0 or not seg.exact_amount or not seg.days:
                continue
            with localcontext() as ctx:
                ctx.prec = 60
                amount = seg.exact_amount * days / seg.days
            out.append(AccruedAmount(inputs.subscription.customer_id, product_id, item["version"].plan.currency,
                                     amount, f"{seg.label} {seg.start}..{min(seg.end, delivered.end)}"))
    return out


def _usage(rater: Rater, inputs, delivered: Period) -> list[AccruedAmount]:  # type: ignore[no-untyped-def]
    version = rater._version_on(inputs, delivered.end - timedelta(days=1))
    out = []
    for charge in rater.catalog.charges[version.pk]:
        for line, exact in rater.usage_for_charge(inputs, charge, delivered):
            if exact:
                out.append(AccruedAmount(line.customer_id, line.product_id, line.currency, exact,
                                         f"{line.description} {delivered.start}..{delivered.end}"))
    return out


def bill_to_customers(entity: BillingEntity) -> list[Customer]:
    """The entity's customers that receive invoices and have a subscription (their own or a child's)."""
    subs = Subscription.objects.filter(status__in=BILLABLE_STATUSES)
    own = Exists(subs.filter(customer_id=OuterRef("pk")))
    childs = Exists(subs.filter(customer__parent_id=OuterRef("pk"), customer__invoice_to_parent=True))
    return list(
        Customer.objects.filter(billing_entity=entity)
        .filter(Q(invoice_to_parent=False) | Q(parent__isnull=True))
        .filter(own | childs)
        .order_by("pk")
    )


Amounts = dict[str, dict[tuple[int, int | None], Decimal]]


def compute_unbilled(entity: BillingEntity, period: AccountingPeriod) -> Amounts:
    """Per currency, the amount to accrue per (customer, product), each rounded once to the minor unit."""
    catalog = CatalogCache()
    exact: dict[str, dict[tuple[int, int | None], Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    for customer in bill_to_customers(entity):
        for item in unbilled_for_customer(customer, period.start_date, period.end_date, catalog):
            exact[item.currency][(item.customer_id, item.product_id)] += item.amount
    rounded: dict[str, dict[tuple[int, int | None], Decimal]] = {}
    for currency, amounts in exact.items():
        kept = {key: round_money(amount, currency) for key, amount in amounts.items()}
        kept = {key: amount for key, amount in kept.items() if amount > 0}
        if kept:
            rounded[currency] = kept
    return rounded


def accrue_unbilled(entity: BillingEntity, period: AccountingPeriod, *, actor: Actor, now: datetime) -> AccrualResult:
    """Post the period's unbilled revenue accrual and its reversal, once per entity and period (a second
    call, or a concurrent one, finds the marker claimed and posts nothing)."""
    if period.billing_entity_id != entity.pk:
        raise BillingError("The period belongs to another billing entity.", field="period")
    if not period.is_open:
        raise BillingError(f"Period {period.label} is closed: its accrual can no longer be posted.", field="period")
    result = AccrualResult(period=period)
    last_day = period.end_date - timedelta(days=1)
    with transaction.atomic():
        try:
            claim([accrual_marker(entity.pk, period.start_date)], now=now)
        except AlreadyPosted:
            result.already_done = True
            return result
        amounts = compute_unbilled(entity, period)
        if not amounts:
            return result
        chart = Chart.load(entity)
        for currency, per_key in sorted(amounts.items()):
            accrual: list[Posting] = []
            for (customer_id, product_id), amount in sorted(per_key.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
                memo = "Unbilled revenue accrued at the period end"
                accrual.append(debit("contract_asset", amount, customer_id=customer_id, memo=memo))
                accrual.append(credit("revenue", amount, product_id=product_id, customer_id=customer_id, memo=memo))
            reversal = [Posting(p.role, -p.amount, p.product_id, p.customer_id, None, "Accrual reversed")
                        for p in accrual]
            entry = post_entry(
                chart=chart, kind=JournalEntry.Kind.ACCRUAL, source_key=accrual_source(entity.pk, period.start_date,
                                                                                        currency),
                on=last_day, currency=currency, description=f"Unbilled revenue accrued at {last_day}",
                postings=accrual, actor=actor, now=now,
            )
            back = post_entry(
                chart=chart, kind=JournalEntry.Kind.ACCRUAL_REVERSAL,
                source_key=reversal_source(entity.pk, period.start_date, currency), on=period.end_date,
                currency=currency, description=f"Unbilled revenue accrual of {period.label} reversed",
                postings=reversal, actor=actor, now=now,
            )
            result.amounts[currency] = sum(per_key.values(), ZERO)
            result.entries.extend(e for e in (entry, back) if e is not None)
    return result
