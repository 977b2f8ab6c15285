"""Rating: what a customer owes at a cycle close, as invoice line drafts, read-only.

`rate_customer` reads the customer's subscriptions (and those of the children it invoices), their phases,
negotiated prices, charges, usage and what earlier invoices billed, and returns the lines due "as of" a day
together with the billing periods they settle (the claims the cycle close inserts to bill each period once).
It writes nothing, so previews and recomputation run through exactly the same code as the close. The
arithmetic is invoicing.pricing's (pure); this module only gathers its inputs.

Per subscription and billing period P (periods in the customer's timezone):
- when P has started: fees billed in advance for P (base fee, recurring fixed charges), trial and paused
  days excluded, prorated by day;
- when P has ended: usage of every charge (one line per group), per-charge minimum true-ups, fees billed in
  arrears, the settlement of P's in-advance fees against what P turned out to be (upgrade, quantity change,
  cancellation, pause: unused-time credit and remaining-time charges), the plan's minimum commitment and
  the contract's minimum-spend commitments, and late usage of earlier periods whose invoices are final.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.db.models import Exists, OuterRef, Q

from contracts.models import (
    Charge,
    ContractCommitment,
    ContractPrice,
    FixedCharge,
    PlanVersion,
    Subscription,
    SubscriptionChange,
    SubscriptionPhase,
)
from contracts.periods import Period, add_months, period_containing, periods_between
from customers.models import Customer
from invoicing.models import BilledPeriod, Invoice, InvoiceLine, PendingCharge
from invoicing.pricing import exact_context
from invoicing.pricing.charge_models import UsagePrice, minimum_true_up, price_usage
from invoicing.pricing.fees import BilledFee, FeeSegment, FeeTerm, advance_adjustment, fee_segments, round_running
from invoicing.pricing.rounding import round_money
from usage import aggregation
from usage.aggregation import Spec
from usage.models import UsageEvent
from usage.selectors import day_start, quantities_for_spec

ZERO = Decimal(0)
ADVANCE = BilledPeriod.Timing.ADVANCE
ARREARS = BilledPeriod.Timing.ARREARS
K = InvoiceLine.Kind
# Late events are looked for among those received after a finalized invoice was computed, minus this margin
# for events in flight during the close; the billed quantities make the check exact, the margin only widens it.
LATE_USAGE_MARGIN = timedelta(hours=1)
# How far back a close looks for late usage of finalized periods.
LATE_USAGE_LOOKBACK_DAYS = 400
BILLABLE_STATUSES = (
    Subscription.Status.TRIALING,
    Subscription.Status.ACTIVE,
    Subscription.Status.PAUSED,
    Subscription.Status.CANCELED,
    Subscription.Status.ENDED,
)


@dataclass
class LineDraft:
    kind: str
    description: str
    customer_id: int
    currency: str
    amount: Decimal  # rounded to the currency's minor unit
    quantity: Decimal = Decimal(1)
    unit_price: Decimal = ZERO
    subscription_id: int | None = None
    plan_id: int | None = None
    charge_id: int | None = None
    fixed_charge_id: int | None = None
    meter_id: int | None = None
    product_id: int | None = None
    tax_code: str = ""
    group: dict[str, Any] = field(default_factory=dict)
    period_start: date | None = None
    period_end: date | None = None
    explanation: dict[str, Any] = field(default_factory=dict)
    pending_charge_id: int | None = None


@dataclass(frozen=True)
class Claim:
    subscription_id: int
    timing: str
    period_start: date
    period_end: date


@dataclass
class Rating:
    lines: list[LineDraft] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    pending_charge_ids: list[int] = field(default_factory=list)


def _s(value: Decimal) -> str:
    """Decimals as exact strings in explanations (JSON has no decimal type)."""
    return format(value, "f")


def _dates(period: Period) -> dict[str, str]:
    return {
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "full_start": period.full_start.isoformat(),
        "full_end": period.full_end.isoformat(),
    }


def _last_day(period: Period) -> date:
    return period.end - timedelta(days=1)


# --- inputs -------------------------------------------------------------------------------------------------


@dataclass
class SubscriptionInputs:
    subscription: Subscription
    phases: list[SubscriptionPhase]
    prices: list[ContractPrice]
    pauses: list[tuple[date, date | None]]
    billed: set[tuple[str, date]]  # (timing, period_start) already claimed
    next_arrears_start: date
    next_advance_start: date
    advance_lines: dict[tuple[date, str], BilledFee]  # (period start, fee key) -> what was billed
    one_time_billed: set[int]  # one-time fixed charges already billed
    arrears_history: list[tuple[date, date, datetime]]  # finalized arrears periods: start, end, invoice as_of


@dataclass
class CatalogCache:
    """Plan versions, charges and fixed charges by plan version, loaded once per close."""

    versions: dict[int, PlanVersion] = field(default_factory=dict)
    charges: dict[int, list[Charge]] = field(default_factory=dict)
    fixed: dict[int, list[FixedCharge]] = field(default_factory=dict)
    # Within one cycle run (`for_run`), which customers have coupons, promotional credits or one-off charges at
    # all, and the tax-rate table, are read once instead of once per customer. Something added after the run's
    # moment is billed by the next close.
    for_run: bool = False
    _hints: RunHints | None = None

    def hints(self) -> RunHints | None:
        if not self.for_run:
            return None
        if self._hints is None:
            self._hints = RunHints.load()
        return self._hints

    def load(self, version_ids: Iterable[int]) -> None:
        missing = set(version_ids) - set(self.versions)
        if not missing:
            return
        for version in PlanVersion.objects.filter(pk__in=missing).select_related("plan__product"):
            self.versions[version.pk] = version
            self.charges[version.pk] = []
            self.fixed[version.pk] = []
        for charge in Charge.objects.filter(plan_version_id__in=missing).select_related("meter", "product"):
            self.charges[charge.plan_version_id].append(charge)
        for fixed in FixedCharge.objects.filter(plan_version_id__in=missing).select_related("product"):
            self.fixed[fixed.plan_version_id].append(fixed)
        for rows in self.charges.values():
            rows.sort(key=lambda c: (c.position, c.pk))


@dataclass
class RunHints:
    coupon_customers: set[int]
    credit_customers: set[int]
    pending_customers: set[int]
    consolidating_parents: set[int]
    wallet_customers: set[int]
    paused_subscriptions: set[int]
    tax_rates: list[Any]

    @classmethod
    def load(cls) -> RunHints:
        from invoicing.models import AppliedCoupon, CreditGrant, Wallet
        from invoicing.services.pricing import tax_rate_table

        def bill_to(rows: Iterable[tuple[int, int | None, bool]]) -> set[int]:
            return {parent if to_parent and parent else pk for pk, parent, to_parent in rows}

        columns = ("customer_id", "customer__parent_id", "customer__invoice_to_parent")
        return cls(
            coupon_customers=bill_to(AppliedCoupon.objects.filter(status="active").values_list(*columns)),
            credit_customers=bill_to(CreditGrant.objects.filter(remaining__gt=0).values_list(*columns)),
            pending_customers=bill_to(PendingCharge.objects.filter(invoice__isnull=True).values_list(*columns)),
            wallet_customers=set(Wallet.objects.filter(balance__gt=0).values_list("customer_id", flat=True)),
            paused_subscriptions=set(
                SubscriptionChange.objects.filter(
                    action=SubscriptionChange.Action.PAUSE, status=SubscriptionChange.Status.APPLIED
                ).values_list("subscription_id", flat=True)
            ),
            consolidating_parents=set(
                Customer.objects.filter(invoice_to_parent=True, parent__isnull=False).values_list(
                    "parent_id", flat=True
                )
            ),
            tax_rates=tax_rate_table(),
        )


def bill_to_customer_ids(bill_to: Customer, catalog: CatalogCache | None = None) -> list[int]:
    """The customer and its children invoiced to it. Ids rather than a join on the parent, so PostgreSQL reads
    the rows through their customer index; a cycle run knows which customers have such children at all."""
    hints = catalog.hints() if catalog is not None else None
    if hints is not None and bill_to.pk not in hints.consolidating_parents:
        return [bill_to.pk]
    children = Customer.objects.filter(parent_id=bill_to.pk, invoice_to_parent=True).values_list("pk", flat=True)
    return [bill_to.pk, *children]


def billed_subscriptions(
    bill_to: Customer, *, changes_due_by: date | None = None, catalog: CatalogCache | None = None
) -> list[Subscription]:
    """The subscriptions a customer's invoices carry: its own and those of children invoiced to it. With
    `changes_due_by`, each is annotated `has_due_changes` (a scheduled change effective by that day)."""
    customer_ids = bill_to_customer_ids(bill_to, catalog)
    rows = (
        Subscription.objects.filter(customer_id__in=customer_ids, status__in=BILLABLE_STATUSES)
        .select_related("plan_version__plan")
        .order_by("start_date", "pk")
    )
    if len(customer_ids) > 1:
        rows = rows.select_related("customer")  # children's rows carry their own customer
    if changes_due_by is not None:
        rows = rows.annotate(
            has_due_changes=Exists(
                SubscriptionChange.objects.filter(
                    subscription=OuterRef("pk"),
                    status=SubscriptionChange.Status.SCHEDULED,
                    effective_date__lte=changes_due_by,
                )
            )
        )
    subscriptions = list(rows)
    for sub in subscriptions:
        if sub.customer_id == bill_to.pk:
            sub.customer = bill_to  # the row the caller holds (and may have locked): no join, no second copy
    return subscriptions


def _pauses(changes: list[SubscriptionChange]) -> list[tuple[date, date | None]]:
    """Paused ranges [paused_on, resumed_on) from the applied pause and resume changes."""
    ranges: list[tuple[date, date | None]] = []
    started: date | None = None
    for change in sorted(changes, key=lambda c: (c.effective_date, c.pk)):
        if change.action == SubscriptionChange.Action.PAUSE:
            started = change.effective_date
        elif change.action == SubscriptionChange.Action.RESUME:
            paused_on = change.details.get("paused_on")
            start = date.fromisoformat(paused_on) if paused_on else started
            if start is not None and change.effective_date > start:
                ranges.append((start, change.effective_date))
            started = None
    if started is not None:
        ranges.append((started, None))
    return ranges


def load_inputs(subscriptions: list[Subscription], catalog: CatalogCache) -> dict[int, SubscriptionInputs]:
    ids = [s.pk for s in subscriptions]
    if not ids:
        return {}
    phases: dict[int, list[SubscriptionPhase]] = defaultdict(list)
    for phase in SubscriptionPhase.objects.filter(subscription_id__in=ids).order_by("start_date"):
        phases[phase.subscription_id].append(phase)
    catalog.load(
        {p.plan_version_id for rows in phases.values() for p in rows} | {s.plan_version_id for s in subscriptions}
    )
    contract_ids = {s.contract_id for s in subscriptions if s.contract_id}
    prices: dict[int, list[ContractPrice]] = defaultdict(list)
    if contract_ids:
        for price in ContractPrice.objects.filter(contract_id__in=contract_ids):
            prices[price.contract_id].append(price)
    changes: dict[int, list[SubscriptionChange]] = defaultdict(list)
    hints = catalog.hints()
    if hints is None or not hints.paused_subscriptions.isdisjoint(ids):
        for change in SubscriptionChange.objects.filter(
            subscription_id__in=ids,
            status=SubscriptionChange.Status.APPLIED,
            action__in=[SubscriptionChange.Action.PAUSE, SubscriptionChange.Action.RESUME],
        ):
            changes[change.subscription_id].append(change)

    billed: dict[int, set[tuple[str, date]]] = defaultdict(set)
    next_start: dict[tuple[int, str], date] = {}
    history: dict[int, list[tuple[date, date, datetime]]] = defaultdict(list)
    for row in (
        BilledPeriod.objects.filter(subscription_id__in=ids, released=False)
        .select_related("invoice")
        .only(
            "subscription_id",
            "timing",
            "period_start",
            "period_end",
            "invoice__status",
            "invoice__as_of",
            "invoice__created_at",
        )
    ):
        billed[row.subscription_id].add((row.timing, row.period_start))
        key = (row.subscription_id, row.timing)
        next_start[key] = max(next_start.get(key, row.period_end), row.period_end)
        if row.timing == ARREARS and row.invoice_id and row.invoice.status not in (Invoice.Status.DRAFT,):
            history[row.subscription_id].append(
                (row.period_start, row.period_end, row.invoice.as_of or row.invoice.created_at)
            )

    advance_lines: dict[int, dict[tuple[date, str], BilledFee]] = defaultdict(dict)
    one_time: dict[int, set[int]] = defaultdict(set)
    # One read for both: what earlier invoices billed in advance, and which one-time fixed charges are billed.
    # Both kinds of line are billed with an advance claim: without one, there is nothing to read.
    advance_billed = [sub_id for (sub_id, timing) in next_start if timing == ADVANCE]
    line_rows = (
        InvoiceLine.objects.filter(subscription_id__in=advance_billed)
        .filter(Q(explanation__timing=ADVANCE) | Q(fixed_charge__recurring=False))
        .exclude(invoice__status=Invoice.Status.VOID)
        .values_list("subscription_id", "amount", "explanation", "fixed_charge_id", "fixed_charge__recurring")
    )
    for sub_id, amount, explanation, fixed_id, recurring in line_rows if advance_billed else ():
        if fixed_id is not None and recurring is False:
            one_time[sub_id].add(fixed_id)
        fee = explanation.get("fee") or {} if explanation.get("timing") == ADVANCE else {}
        if not fee:
            continue
        period_start = date.fromisoformat(explanation["period"]["start"])
        advance_lines[sub_id][(period_start, explanation["item"])] = BilledFee(
            start=date.fromisoformat(fee["start"]),
            end=date.fromisoformat(fee["end"]),
            key=fee["key"],
            unit_price=Decimal(fee["unit_price"]),
            quantity=Decimal(fee["quantity"]),
            amount=amount,
        )

    inputs: dict[int, SubscriptionInputs] = {}
    for sub in subscriptions:
        inputs[sub.pk] = SubscriptionInputs(
            subscription=sub,
            phases=phases[sub.pk],
            prices=prices.get(sub.contract_id, []) if sub.contract_id else [],
            pauses=_pauses(changes[sub.pk]),
            billed=billed[sub.pk],
            next_arrears_start=next_start.get((sub.pk, ARREARS), sub.start_date),
            next_advance_start=next_start.get((sub.pk, ADVANCE), sub.start_date),
            advance_lines=advance_lines[sub.pk],
            one_time_billed=one_time[sub.pk],
            arrears_history=history[sub.pk],
        )
    return inputs


# --- the rating itself --------------------------------------------------------------------------------------


@dataclass
class Rater:
    """Rates the subscriptions of one bill-to customer as of `today` (a day in the customer's timezone)."""

    bill_to: Customer
    today: date
    catalog: CatalogCache
    late_usage: bool = True

    def rate(self, subscriptions: list[Subscription] | None = None) -> Rating:
        subscriptions = billed_subscriptions(self.bill_to) if subscriptions is None else subscriptions
        inputs = load_inputs(subscriptions, self.catalog)
        rating = Rating()
        for sub in subscriptions:
            self._rate_subscription(inputs[sub.pk], rating)
        self._commitments(subscriptions, inputs, rating)
        self._pending_charges(rating)
        return rating

    # periods -----------------------------------------------------------------------------------------------

    def _periods(self, sub: Subscription, first_day: date) -> list[Period]:
        plan = self.catalog.versions[sub.plan_version_id].plan
        return periods_between(
            first_day,
            self.today + timedelta(days=1),
            interval=plan.interval,
            anchor=sub.billing_anchor,
            start_date=sub.start_date,
            bill_cycle_day=sub.bill_cycle_day,
            end_date=sub.end_date,
        )

    def _version_on(self, inputs: SubscriptionInputs, day: date) -> PlanVersion:
        for phase in inputs.phases:
            if phase.start_date <= day and (phase.end_date is None or day < phase.end_date):
                return self.catalog.versions[phase.plan_version_id]
        # Before the first phase or after the last: the nearest one (phases always cover the subscription).
        if inputs.phases:
            nearest = inputs.phases[0] if day < inputs.phases[0].start_date else inputs.phases[-1]
            return self.catalog.versions[nearest.plan_version_id]
        return self.catalog.versions[inputs.subscription.plan_version_id]

    def _rate_subscription(self, inputs: SubscriptionInputs, rating: Rating) -> None:
        sub = inputs.subscription
        if sub.start_date > self.today:
            return
        first = min(inputs.next_arrears_start, inputs.next_advance_start)
        for period in self._periods(sub, first):
            if period.start >= inputs.next_advance_start and (ADVANCE, period.start) not in inputs.billed:
                self._advance(inputs, period, rating)
            if period.end <= self.today and (ARREARS, period.start) not in inputs.billed:
                self._arrears(inputs, period, rating)
        self._credit_unserved_advance(inputs, rating)
        if self.late_usage:
            self._late_usage(inputs, rating)

    def _credit_unserved_advance(self, inputs: SubscriptionInputs, rating: Rating) -> None:
        """Credit in full the in-advance fees of a period the subscription never reached: cancelled or ended on
        that period's first day after its close had billed it. Such a period is past the end date, so the
        period loop never settles it."""
        sub = inputs.subscription
        if sub.end_date is None or sub.end_date > self.today:
            return
        starts = sorted(
            {
                start
                for start, _ in inputs.advance_lines
                if start >= sub.end_date and (ARREARS, start) not in inputs.billed
            }
        )
        for start in starts:
            claim_end = start
            for (period_start, item_key), billed in sorted(inputs.advance_lines.items(), key=lambda kv: kv[0][1]):
                if period_start != start or not billed.amount:
                    continue
                version_pk = int(str(billed.key).split(":")[0])
                self.catalog.load([version_pk])
                version = self.catalog.versions[version_pk]
                code = item_key.removeprefix("fixed:") if item_key.startswith("fixed:") else None
                fixed = next((f for f in self.catalog.fixed[version_pk] if f.code == code), None)
                full = period_containing(
                    start,
                    interval=version.plan.interval,
                    anchor=sub.billing_anchor,
                    start_date=sub.start_date,
                    bill_cycle_day=sub.bill_cycle_day,
                )
                period = Period(start, billed.end, full.full_start, full.full_end)
                item = {"version": version, "fixed": fixed, "prorated": fixed.prorated if fixed else True}
                seg = FeeSegment(
                    billed.start,
                    billed.end,
                    billed.key,
                    billed.unit_price,
                    billed.quantity,
                    fixed.name if fixed else version.plan.name,
                    ZERO,
                )
                line = self._fee_line(
                    inputs, item_key, item, seg, -billed.amount, period, K.PRORATION_CREDIT, ARREARS, {}
                )
                line.explanation["formula"] = (
                    f"billed {_s(billed.amount)} for {billed.start}..{billed.end}; service ended on {sub.end_date}"
                )
                line.explanation["billed_amount"] = _s(billed.amount)
                line.explanation["used_exact"] = "0"  # none of the billed days was served
                rating.lines.append(line)
                claim_end = max(claim_end, billed.end)
            if claim_end > start:
                rating.claims.append(Claim(sub.pk, ARREARS, start, claim_end))

    # fees --------------------------------------------------------------------------------------------------

    def _excluded(self, inputs: SubscriptionInputs) -> list[tuple[date, date | None]]:
        sub = inputs.subscription
        excluded = list(inputs.pauses)
        if sub.trial_end_date:
            excluded.append((sub.start_date, sub.trial_end_date))
        return excluded

    def _price_terms(
        self,
        inputs: SubscriptionInputs,
        start: date,
        end: date | None,
        version: PlanVersion,
        target: str,
        default: Decimal,
        fixed: FixedCharge | None = None,
    ) -> list[tuple[date, date | None, Decimal, str]]:
        """Split [start, end) by the contract's negotiated prices (ramps) for a base fee or fixed charge."""
        overrides = [
            p
            for p in inputs.prices
            if p.target == target
            and p.plan_version_id == version.pk
            and (fixed is None or p.fixed_charge_id == fixed.pk)
        ]
        bounds = {start}
        for p in overrides:
            for day in (p.effective_from, p.effective_to):
                if day and start < day and (end is None or day < end):
                    bounds.add(day)
        ordered = sorted(bounds)
        pieces = []
        for i, piece_start in enumerate(ordered):
            piece_end = ordered[i + 1] if i + 1 < len(ordered) else end
            price, source = default, "plan"
            for p in overrides:
                if (p.effective_from or date.min) <= piece_start < (p.effective_to or date.max):
                    price, source = p.amount.amount, f"contract price #{p.pk}"
            pieces.append((piece_start, piece_end, price, source))
        return pieces

    def _fee_items(self, inputs: SubscriptionInputs) -> dict[str, dict[str, Any]]:
        """Every fee the subscription's phases carry: base fee and recurring fixed charges, with their terms."""
        items: dict[str, dict[str, Any]] = {}
        for phase in inputs.phases:
            version = self.catalog.versions[phase.plan_version_id]
            base = items.setdefault(
                "base",
                {"terms": [], "timing": version.base_fee_timing, "prorated": True, "fixed": None, "version": version},
            )
            for start, end, price, source in self._price_terms(
                inputs,
                phase.start_date,
                phase.end_date,
                version,
                ContractPrice.Target.BASE_FEE,
                version.base_fee.amount,
            ):
                if price:
                    base["terms"].append(
                        (FeeTerm(start, end, version.pk, price, phase.quantity, f"{version.plan.name}"), source)
                    )
            for fixed in self.catalog.fixed[version.pk]:
                if not fixed.recurring:
                    continue
                item = items.setdefault(
                    f"fixed:{fixed.code}",
                    {
                        "terms": [],
                        "timing": fixed.billing_timing,
                        "prorated": fixed.prorated,
                        "fixed": fixed,
                        "version": version,
                    },
                )
                item["fixed"] = fixed
                for start, end, price, source in self._price_terms(
                    inputs,
                    phase.start_date,
                    phase.end_date,
                    version,
                    ContractPrice.Target.FIXED_CHARGE,
                    fixed.amount.amount,
                    fixed,
                ):
                    if price:
                        item["terms"].append(
                            (
                                FeeTerm(start, end, f"{version.pk}:{fixed.code}", price, fixed.quantity, fixed.name),
                                source,
                            )
                        )
        return items

    def _fee_line(
        self,
        inputs: SubscriptionInputs,
        item_key: str,
        item: dict[str, Any],
        seg: FeeSegment,
        amount: Decimal,
        period: Period,
        kind: str,
        timing: str,
        sources: dict[Any, str],
    ) -> LineDraft:
        sub = inputs.subscription
        version: PlanVersion = item["version"]
        # An item spans every phase: the segment's key names the plan version it bills (base "pk", fixed
        # "pk:code"), so a line after an upgrade carries its own plan (coupons limited to plans read it).
        key_version = str(seg.key).split(":", 1)[0]
        if key_version.isdigit() and int(key_version) in self.catalog.versions:
            version = self.catalog.versions[int(key_version)]
        fixed: FixedCharge | None = item["fixed"]
        product = (fixed.product if fixed and fixed.product_id else None) or version.plan.product
        quantity = seg.quantity
        what = seg.label if fixed else f"{seg.label} subscription"
        prefix = {K.PRORATION_CHARGE: "Remaining time on ", K.PRORATION_CREDIT: "Unused time on "}.get(kind, "")
        seats = f" x {quantity.normalize():f}" if quantity != 1 else ""
        return LineDraft(
            kind=K.FIXED if fixed and kind == K.SUBSCRIPTION_FEE else kind,
            description=f"{prefix}{what}{seats}",
            customer_id=sub.customer_id,
            currency=version.plan.currency,
            amount=amount,
            quantity=quantity,
            unit_price=seg.unit_price,
            subscription_id=sub.pk,
            plan_id=version.plan_id,
            fixed_charge_id=fixed.pk if fixed else None,
            product_id=product.pk,
            tax_code=product.tax_code,
            period_start=seg.start,
            period_end=seg.end,
            explanation={
                "timing": timing,
                "item": item_key,
                "period": _dates(period),
                "fee": {
                    "key": seg.key,
                    "start": seg.start.isoformat(),
                    "end": seg.end.isoformat(),
                    "unit_price": _s(seg.unit_price),
                    "quantity": _s(seg.quantity),
                    "days": seg.days,
                    "full_days": period.full_days,
                    "exact_amount": _s(seg.exact_amount),
                    "prorated": item["prorated"],
                },
                "price_source": sources.get((seg.key, seg.start), "plan"),
                "formula": f"{_s(seg.unit_price)} x {_s(seg.quantity)} x {seg.days}/{period.full_days} days",
            },
        )

    def _segments(
        self, inputs: SubscriptionInputs, item: dict[str, Any], period: Period
    ) -> tuple[list[FeeSegment], dict]:
        terms = [t for t, _ in item["terms"]]
        sources = {(t.key, t.start): s for t, s in item["terms"]}
        segments = fee_segments(
            start=period.start,
            end=period.end,
            full_start=period.full_start,
            full_end=period.full_end,
            terms=terms,
            excluded=self._excluded(inputs),
            prorated=item["prorated"],
        )
        # Sources are looked up by the term a segment came from: key and the term's start.
        by_key = {}
        for t, s in item["terms"]:
            for seg in segments:
                if seg.key == t.key and t.start <= seg.start and (t.end is None or seg.start < t.end):
                    by_key[(seg.key, seg.start)] = s
        return segments, by_key or sources

    def _advance(self, inputs: SubscriptionInputs, period: Period, rating: Rating) -> None:
        sub = inputs.subscription
        # A trial ending inside the period: nothing is invoiced during the trial; the paid part of the period
        # is billed in advance by the first close on or after the trial's end (the period stays unclaimed).
        if sub.trial_end_date and period.start < sub.trial_end_date < period.end and self.today < sub.trial_end_date:
            return
        for item_key, item in self._fee_items(inputs).items():
            if item["timing"] != "advance" or not item["terms"]:
                continue
            segments, sources = self._segments(inputs, item, period)
            if not segments:
                continue
            # In advance, the terms in force on the period's first served day are billed for the whole period;
            # changes later in the period are settled when it closes.
            first = segments[0]
            billed_end = period.end
            # Nothing is billed ahead for paused days; resumed days are charged when the period closes.
            if sub.paused_on and sub.status == Subscription.Status.PAUSED:
                billed_end = min(billed_end, max(sub.paused_on, first.start))
            if billed_end <= first.start:
                continue
            with localcontext(exact_context()):
                exact = first.unit_price * first.quantity * (billed_end - first.start).days / period.full_days
                if not item["prorated"]:
                    exact = first.unit_price * first.quantity
            seg = FeeSegment(first.start, billed_end, first.key, first.unit_price, first.quantity, first.label, exact)
            rating.lines.append(
                self._fee_line(
                    inputs,
                    item_key,
                    item,
                    seg,
                    round_money(exact, item["version"].plan.currency),
                    period,
                    K.SUBSCRIPTION_FEE,
                    ADVANCE,
                    sources,
                )
            )
        # One-time fixed charges go on the subscription's first invoice with a paid day (none for a period
        # spent in trial, nor for a trial cancelled before its end).
        in_trial = sub.trial_end_date is not None and sub.trial_end_date >= period.end
        for version_id in [] if in_trial else [self._version_on(inputs, period.start).pk]:
            for fixed in self.catalog.fixed[version_id]:
                if fixed.recurring or fixed.pk in inputs.one_time_billed:
                    continue
                version = self.catalog.versions[version_id]
                product = fixed.product or version.plan.product
                with localcontext(exact_context()):
                    exact = fixed.amount.amount * fixed.quantity
                rating.lines.append(
                    LineDraft(
                        kind=K.FIXED,
                        description=fixed.name,
                        customer_id=sub.customer_id,
                        currency=version.plan.currency,
                        amount=round_money(exact, version.plan.currency),
                        quantity=fixed.quantity,
                        unit_price=fixed.amount.amount,
                        subscription_id=sub.pk,
                        plan_id=version.plan_id,
                        fixed_charge_id=fixed.pk,
                        product_id=product.pk,
                        tax_code=product.tax_code,
                        period_start=period.start,
                        period_end=period.end,
                        explanation={
                            "timing": "once",
                            "formula": f"{_s(fixed.amount.amount)} x {_s(fixed.quantity)}",
                            "exact_amount": _s(exact),
                        },
                    )
                )
                inputs.one_time_billed.add(fixed.pk)
        rating.claims.append(Claim(sub.pk, ADVANCE, period.start, period.end))

    def _arrears(self, inputs: SubscriptionInputs, period: Period, rating: Rating) -> None:
        sub = inputs.subscription
        start_index = len(rating.lines)
        for item_key, item in self._fee_items(inputs).items():
            if not item["terms"]:
                continue
            segments, sources = self._segments(inputs, item, period)
            currency = item["version"].plan.currency
            if item["timing"] == "advance":
                billed = inputs.advance_lines.get((period.start, item_key)) or self._billed_in_rating(
                    rating, sub.pk, period.start, item_key
                )
                adjustment = advance_adjustment(billed, segments, currency)
                if adjustment.credit and billed is not None:
                    credit_seg = FeeSegment(
                        adjustment.credit_from or period.start,
                        billed.end,
                        billed.key,
                        billed.unit_price,
                        billed.quantity,
                        segments[0].label if segments else item["version"].plan.name,
                        ZERO,
                    )
                    line = self._fee_line(
                        inputs,
                        item_key,
                        item,
                        credit_seg,
                        -adjustment.credit,
                        period,
                        K.PRORATION_CREDIT,
                        ARREARS,
                        sources,
                    )
                    line.quantity = billed.quantity
                    line.explanation["formula"] = (
                        f"billed {_s(billed.amount)} for {billed.start}..{billed.end}; unused from {credit_seg.start}"
                    )
                    line.explanation["billed_amount"] = _s(billed.amount)
                    line.explanation["used_exact"] = _s(adjustment.used_exact)
                    rating.lines.append(line)
                kind = K.PRORATION_CHARGE if billed is not None else K.SUBSCRIPTION_FEE
                for seg, amount in adjustment.charges:
                    line = self._fee_line(inputs, item_key, item, seg, amount, period, kind, ARREARS, sources)
                    line.explanation["opening_exact"] = _s(adjustment.used_exact)
                    rating.lines.append(line)
            else:
                amounts = round_running([seg.exact_amount for seg in segments], currency)
                for seg, amount in zip(segments, amounts, strict=True):
                    rating.lines.append(
                        self._fee_line(
                            inputs, item_key, item, seg, amount, period, K.SUBSCRIPTION_FEE, ARREARS, sources
                        )
                    )
        self._usage(inputs, period, rating)
        self._plan_minimum(inputs, period, rating, start_index)
        rating.claims.append(Claim(sub.pk, ARREARS, period.start, period.end))

    @staticmethod
    def _billed_in_rating(rating: Rating, subscription_id: int, start: date, item_key: str) -> BilledFee | None:
        """An advance line for this period produced earlier in the same rating (a catch-up close)."""
        for line in rating.lines:
            if (
                line.subscription_id == subscription_id
                and line.explanation.get("timing") == ADVANCE
                and line.explanation.get("item") == item_key
                and line.explanation["period"]["start"] == start.isoformat()
            ):
                fee = line.explanation["fee"]
                return BilledFee(
                    date.fromisoformat(fee["start"]),
                    date.fromisoformat(fee["end"]),
                    fee["key"],
                    Decimal(fee["unit_price"]),
                    Decimal(fee["quantity"]),
                    line.amount,
                )
        return None

    # usage -------------------------------------------------------------------------------------------------

    def _charge_terms(self, inputs: SubscriptionInputs, charge: Charge, day: date) -> tuple[str, dict, str]:
        for price in inputs.prices:
            if (
                price.target == ContractPrice.Target.CHARGE
                and price.charge_id == charge.pk
                and ((price.effective_from or date.min) <= day < (price.effective_to or date.max))
            ):
                return price.charge_model, price.properties, f"contract price #{price.pk}"
        return charge.charge_model, charge.properties, "plan"

    def usage_for_charge(
        self, inputs: SubscriptionInputs, charge: Charge, period: Period, *, kind: str = K.USAGE
    ) -> list[tuple[LineDraft, Decimal]]:
        """One line per group of a charge's usage over `period`, with each line's exact amount."""
        sub = inputs.subscription
        customer = sub.customer
        start, end = day_start(period.start, customer), day_start(period.end, customer)
        model, properties, source = self._charge_terms(inputs, charge, _last_day(period))
        spec = Spec.for_meter(charge.meter, filters=charge.filters, group_by=charge.group_by)
        quantities = quantities_for_spec(customer, charge.meter, spec, start, end)
        version = self.catalog.versions[charge.plan_version_id]
        product = charge.product or version.plan.product
        currency = version.plan.currency
        needs_events = model == "percentage" and any(
            properties.get(k) not in (None, "", "0")
            for k in (
                "fixed_fee",
                "free_units_per_events",
                "free_amount",
                "per_transaction_min_amount",
                "per_transaction_max_amount",
            )
        )
        events_by_group = transaction_amounts(customer.pk, charge.meter_id, spec, start, end) if needs_events else {}
        out = []
        for group, quantity in quantities.items():
            priced: UsagePrice = price_usage(
                model, properties, quantity, events=events_by_group.get(group, []) if needs_events else None
            )
            group_values = dict(zip(spec.group_by, group, strict=True))
            name = charge.display_name or charge.meter.name
            label = name + (
                " (" + ", ".join(f"{k}: {v}" for k, v in group_values.items()) + ")" if group_values else ""
            )
            amount = round_money(priced.amount, currency)
            with localcontext(exact_context()):
                unit_price = (priced.amount / quantity).quantize(Decimal("1e-12")) if quantity else ZERO
            line = LineDraft(
                kind=kind,
                description=label,
                customer_id=sub.customer_id,
                currency=currency,
                amount=amount,
                quantity=quantity,
                unit_price=unit_price,
                subscription_id=sub.pk,
                plan_id=version.plan_id,
                charge_id=charge.pk,
                meter_id=charge.meter_id,
                product_id=product.pk,
                tax_code=product.tax_code,
                group=dict(group_values),
                period_start=period.start,
                period_end=period.end,
                explanation={
                    "timing": ARREARS,
                    "period": _dates(period),
                    "meter": charge.meter.code,
                    "aggregation": charge.meter.aggregation,
                    "events_from": start.isoformat(),
                    "events_to": end.isoformat(),
                    "charge_model": model,
                    "properties": properties,
                    "price_source": source,
                    "quantity": _s(quantity),
                    "exact_amount": _s(priced.amount),
                    "tiers": [
                        {
                            "label": t.label,
                            "units": _s(t.units),
                            "unit_price": _s(t.unit_price),
                            "flat_fee": _s(t.flat_fee),
                            "amount": _s(t.amount),
                        }
                        for t in priced.lines
                    ],
                },
            )
            out.append((line, priced.amount))
        return out

    def _usage(self, inputs: SubscriptionInputs, period: Period, rating: Rating) -> None:
        version = self._version_on(inputs, _last_day(period))
        for charge in self.catalog.charges[version.pk]:
            priced = self.usage_for_charge(inputs, charge, period)
            total = ZERO
            for line, exact in priced:
                if line.quantity or line.amount:
                    rating.lines.append(line)
                total += exact
            shortfall = minimum_true_up(total, charge.minimum_amount.amount if charge.minimum_amount else None)
            if shortfall:
                minimum = charge.minimum_amount.amount
                rating.lines.append(
                    self._true_up_line(
                        inputs,
                        version,
                        period,
                        shortfall,
                        f"Minimum spend on {charge.display_name or charge.meter.name}",
                        charge=charge,
                        detail={
                            "minimum": _s(minimum),
                            "usage_amount": _s(total),
                            "formula": f"{_s(minimum)} - {_s(total)}",
                        },
                    )
                )

    def _true_up_line(
        self,
        inputs: SubscriptionInputs,
        version: PlanVersion,
        period: Period,
        shortfall: Decimal,
        description: str,
        *,
        charge: Charge | None = None,
        detail: dict[str, str],
    ) -> LineDraft:
        """A minimum true-up line of a subscription's period (a charge's minimum, or the plan's)."""
        currency = version.plan.currency
        product = (charge.product if charge else None) or version.plan.product
        return LineDraft(
            kind=K.MINIMUM_TRUE_UP,
            description=description,
            customer_id=inputs.subscription.customer_id,
            currency=currency,
            amount=round_money(shortfall, currency),
            unit_price=shortfall,
            subscription_id=inputs.subscription.pk,
            plan_id=version.plan_id,
            charge_id=charge.pk if charge else None,
            meter_id=charge.meter_id if charge else None,
            product_id=product.pk,
            tax_code=product.tax_code,
            period_start=period.start,
            period_end=period.end,
            explanation={"timing": ARREARS, "period": _dates(period), **detail},
        )

    def _plan_minimum(self, inputs: SubscriptionInputs, period: Period, rating: Rating, start_index: int) -> None:
        version = self._version_on(inputs, _last_day(period))
        if version.minimum_commitment is None:
            return
        minimum = version.minimum_commitment.amount
        spent = sum((line.amount for line in rating.lines[start_index:]), ZERO)
        spent += sum((fee.amount for (start, _), fee in inputs.advance_lines.items() if start == period.start), ZERO)
        spent += sum(
            (
                line.amount
                for line in rating.lines[:start_index]
                if line.subscription_id == inputs.subscription.pk
                and line.explanation.get("timing") == ADVANCE
                and line.explanation.get("period", {}).get("start") == period.start.isoformat()
            ),
            ZERO,
        )
        shortfall = minimum - spent
        if shortfall > 0:
            rating.lines.append(
                self._true_up_line(
                    inputs,
                    version,
                    period,
                    shortfall,
                    f"Minimum commitment of {version.plan.name}",
                    detail={"minimum": _s(minimum), "spent": _s(spent), "formula": f"{_s(minimum)} - {_s(spent)}"},
                )
            )

    # late usage --------------------------------------------------------------------------------------------

    def _late_usage(self, inputs: SubscriptionInputs, rating: Rating) -> None:
        """Usage of a finalized period that arrived after its invoice: billed now as late usage, for the
        difference between what the period's events price at today and what was billed for them."""
        sub = inputs.subscription
        horizon = self.today - timedelta(days=LATE_USAGE_LOOKBACK_DAYS)
        for period_start, period_end, as_of in inputs.arrears_history:
            if period_end < horizon:
                continue
            version = self._version_on(inputs, period_end - timedelta(days=1))
            charges = self.catalog.charges[version.pk]
            if not charges:
                continue
            start, end = day_start(period_start, sub.customer), day_start(period_end, sub.customer)
            late = UsageEvent.objects.filter(
                customer_id=sub.customer_id,
                meter_id__in=[c.meter_id for c in charges],
                timestamp__gte=start,
                timestamp__lt=end,
                received_at__gt=as_of - LATE_USAGE_MARGIN,
            ).exists()
            if not late:
                continue
            period = Period(period_start, period_end, period_start, period_end)
            billed = billed_usage(sub.pk, period_start)
            for charge in charges:
                for line, _ in self.usage_for_charge(inputs, charge, period, kind=K.LATE_USAGE):
                    key = (charge.pk, tuple(sorted(line.group.items())))
                    was = billed.get(key)
                    before_qty, before_amount = was if was else (ZERO, ZERO)
                    if line.quantity == before_qty and line.amount == before_amount:
                        continue
                    extra_qty = line.quantity - before_qty
                    extra = line.amount - before_amount
                    if extra_qty <= 0 and extra <= 0:
                        continue  # a carried-over or max meter may fall; a credit note corrects an overcharge
                    line.description = f"Late usage: {line.description}"
                    line.explanation.update(
                        {
                            "billed_quantity": _s(before_qty),
                            "billed_amount": _s(before_amount),
                            "late_quantity": _s(extra_qty),
                            "quantity_now": _s(line.quantity),
                        }
                    )
                    line.quantity = extra_qty
                    line.amount = extra
                    with localcontext(exact_context()):
                        line.unit_price = (extra / extra_qty).quantize(Decimal("1e-12")) if extra_qty else ZERO
                    rating.lines.append(line)

    # contract commitments ----------------------------------------------------------------------------------

    def _commitments(
        self, subscriptions: list[Subscription], inputs: dict[int, SubscriptionInputs], rating: Rating
    ) -> None:
        """Minimum-spend commitments of a contract: a true-up when a commitment window closes short."""
        contracts = {s.contract_id: s.contract for s in subscriptions if s.contract_id}
        if not contracts:
            return
        closing = sorted(
            {(c.subscription_id, c.period_start, c.period_end) for c in rating.claims if c.timing == ARREARS}
        )
        for commitment in ContractCommitment.objects.filter(
            contract_id__in=contracts, kind=ContractCommitment.Kind.MINIMUM_SPEND
        ):
            contract = contracts[commitment.contract_id]
            subs = [s for s in subscriptions if s.contract_id == contract.pk]
            for sub in subs:
                for sub_id, period_start, period_end in closing:
                    if sub_id != sub.pk:
                        continue
                    window = self._commitment_window(commitment, contract, period_start, period_end)
                    if window is None:
                        continue
                    self._true_up(commitment, contract, subs, window, rating)

    @staticmethod
    def _commitment_window(
        commitment: ContractCommitment, contract: Any, period_start: date, period_end: date
    ) -> tuple[date, date] | None:
        """The commitment window that the billing period [period_start, period_end) closes, if any."""
        start = commitment.start_date or contract.start_date
        end = commitment.end_date or contract.end_date
        if period_end <= start or (end is not None and period_start >= end):
            return None
        if commitment.period == ContractCommitment.Period.BILLING_PERIOD:
            return period_start, period_end
        if commitment.period == ContractCommitment.Period.YEAR:
            k = 1
            while True:
                year_end = add_months(start, 12 * k)
                if end is not None and year_end > end:
                    year_end = end
                if year_end == period_end:
                    return add_months(start, 12 * (k - 1)), year_end
                if year_end > period_end or k > 100:
                    return None
                k += 1
        if end is not None and period_end == end:
            return start, end
        return None

    def _true_up(
        self,
        commitment: ContractCommitment,
        contract: Any,
        subs: list[Subscription],
        window: tuple[date, date],
        rating: Rating,
    ) -> None:
        start, end = window
        marker = {"commitment_id": commitment.pk, "window_start": start.isoformat()}
        # Key lookups rather than JSON containment: SQLite (the embedded default) has no containment operator.
        if InvoiceLine.objects.filter(
            kind=K.COMMITMENT_TRUE_UP,
            explanation__commitment_id=commitment.pk,
            explanation__window_start=start.isoformat(),
        ).exclude(invoice__status=Invoice.Status.VOID).exists() or any(
            line.kind == K.COMMITMENT_TRUE_UP
            and line.explanation.get("commitment_id") == commitment.pk
            and line.explanation.get("window_start") == start.isoformat()
            for line in rating.lines
        ):
            return
        ids = [s.pk for s in subs]
        spent = sum(
            InvoiceLine.objects.filter(
                subscription_id__in=ids,
                period_start__gte=start,
                period_end__lte=end,
            )
            .exclude(invoice__status=Invoice.Status.VOID)
            .exclude(kind=K.COMMITMENT_TRUE_UP)
            .values_list("amount", flat=True),
            ZERO,
        )
        spent += sum(
            (
                line.amount
                for line in rating.lines
                if line.subscription_id in ids
                and line.period_start
                and line.period_start >= start
                and line.period_end
                and line.period_end <= end
            ),
            ZERO,
        )
        shortfall = commitment.amount.amount - spent
        if shortfall <= 0:
            return
        currency = contract.currency
        sub = subs[0]
        version = self.catalog.versions[sub.plan_version_id]
        rating.lines.append(
            LineDraft(
                kind=K.COMMITMENT_TRUE_UP,
                description=(
                    f"Commitment true-up, contract {contract.reference} "
                    f"({start:%d %b %Y} to {end - timedelta(days=1):%d %b %Y})"
                ),
                customer_id=sub.customer_id,
                currency=currency,
                amount=round_money(shortfall, currency),
                unit_price=shortfall,
                subscription_id=sub.pk,
                plan_id=version.plan_id,
                product_id=version.plan.product_id,
                tax_code=version.plan.product.tax_code,
                period_start=start,
                period_end=end,
                explanation={
                    **marker,
                    "contract": contract.reference,
                    "commitment": _s(commitment.amount.amount),
                    "spent": _s(spent),
                    "formula": f"{_s(commitment.amount.amount)} - {_s(spent)}",
                },
            )
        )

    # one-off charges ---------------------------------------------------------------------------------------

    def _pending_charges(self, rating: Rating) -> None:
        hints = self.catalog.hints()
        if hints is not None and self.bill_to.pk not in hints.pending_customers:
            return
        rows = PendingCharge.objects.filter(
            customer_id__in=bill_to_customer_ids(self.bill_to, self.catalog),
            invoice__isnull=True,
            bill_on__lte=self.today,
        ).select_related("product", "installment_plan")
        for charge in rows:
            with localcontext(exact_context()):
                exact = charge.unit_price * charge.quantity
            kind = K.INSTALLMENT if charge.installment_plan_id else K.ONE_OFF
            description = charge.description
            if charge.installment_plan_id:
                description = (
                    f"{charge.installment_plan.description}: installment {charge.installment_number} "
                    f"of {charge.installment_plan.installments}"
                )
            rating.lines.append(
                LineDraft(
                    kind=kind,
                    description=description,
                    customer_id=charge.customer_id,
                    currency=charge.currency,
                    amount=round_money(exact, charge.currency),
                    quantity=charge.quantity,
                    unit_price=charge.unit_price,
                    subscription_id=charge.subscription_id,
                    product_id=charge.product_id,
                    tax_code=charge.product.tax_code if charge.product else "",
                    period_start=charge.bill_on,
                    period_end=charge.bill_on + timedelta(days=1),
                    explanation={
                        "pending_charge_id": charge.pk,
                        "exact_amount": _s(exact),
                        "formula": f"{_s(charge.unit_price)} x {_s(charge.quantity)}",
                    },
                    pending_charge_id=charge.pk,
                )
            )
            rating.pending_charge_ids.append(charge.pk)


def billed_usage(subscription_id: int, period_start: date) -> dict[tuple[int, tuple], tuple[Decimal, Decimal]]:
    """What live invoices billed for each charge and group of a period: (quantity, amount), late usage included."""
    billed: dict[tuple[int, tuple], tuple[Decimal, Decimal]] = {}
    rows = (
        InvoiceLine.objects.filter(
            subscription_id=subscription_id,
            period_start=period_start,
            kind__in=[K.USAGE, K.LATE_USAGE],
        )
        .exclude(invoice__status=Invoice.Status.VOID)
        .values_list("charge_id", "group", "quantity", "amount")
    )
    for charge_id, group, quantity, amount in rows:
        key = (charge_id, tuple(sorted((group or {}).items())))
        q, a = billed.get(key, (ZERO, ZERO))
        billed[key] = (q + quantity, a + amount)
    return billed


def transaction_amounts(
    customer_id: int, meter_id: int, spec: Spec, start: datetime, end: datetime
) -> dict[tuple, list[Decimal]]:
    """The individual transaction amounts of a percentage charge, per group, in event-time order."""
    rows = (
        UsageEvent.objects.filter(customer_id=customer_id, meter_id=meter_id, timestamp__gte=start, timestamp__lt=end)
        .order_by("timestamp", "id")
        .values_list("value", "properties")
    )
    out: dict[tuple, list[Decimal]] = defaultdict(list)
    for value, properties in rows.iterator(chunk_size=5000):
        properties = properties or {}
        if not aggregation.matches(properties, spec.filters):
            continue
        out[aggregation.group_key(properties, spec.group_by)].append(value or ZERO)
    return out
