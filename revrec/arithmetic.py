"""The pure arithmetic of revenue recognition: allocation by relative standalone selling price, the ratable
running total, the contract position and the choice of a modification's treatment. Decimals and dates in,
decimals out: no ORM, so the posting, the daily run, previews and the property tests share it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext

from invoicing.pricing import exact_context
from invoicing.pricing.rounding import allocate_by_largest_remainder, ratable_recognised_through, round_money

ZERO = Decimal("0")
DAYS_PER_MONTH = Decimal(365) / Decimal(12)


class AllocationError(ValueError):
    """The figures cannot be allocated as asked (e.g. the residual approach leaves nothing)."""


@dataclass(frozen=True)
class ObligationPrice:
    """What step 4 needs of an obligation.

    `ssp` is its standalone selling price for what it promises (None: uncertain, estimated by the residual
    approach). `variable` is set for variable consideration that relates entirely to this obligation (usage
    billed as it happens): it keeps exactly that amount (ASC 606-10-32-40) and takes no share of the rest.
    `list_amount` is its billed amount, the fall-back weight when no obligation has an SSP.
    """

    ssp: Decimal | None
    list_amount: Decimal = ZERO
    variable: Decimal | None = None


@dataclass(frozen=True)
class Allocation:
    prices: list[Decimal]
    ssps: list[Decimal]  # the SSPs used as weights, the residual estimates included
    method: str  # "relative_ssp", "residual", "list_price" or "none"


def allocate_transaction_price(
    transaction_price: Decimal, obligations: Sequence[ObligationPrice], currency: str
) -> Allocation:
    """Allocate the transaction price over the obligations by relative SSP; the last minor units go by
    largest remainder, so the parts add up to the transaction price exactly.

    A discount (the price below the sum of SSPs) is thereby spread in proportion. Obligations with an
    uncertain SSP share the residual: the price left after every observable SSP (split between them by their
    billed amounts); the residual approach needs that residual to be positive.
    """
    if round_money(transaction_price, currency) != transaction_price:
        raise AllocationError(f"The transaction price {transaction_price} is not rounded to {currency}.")
    if not obligations:
        if transaction_price != 0:
            raise AllocationError("A transaction price needs at least one performance obligation.")
        return Allocation([], [], "none")
    prices: list[Decimal] = [ZERO] * len(obligations)
    ssps: list[Decimal] = [ZERO] * len(obligations)
    rest = transaction_price
    fixed: list[int] = []
    for index, obligation in enumerate(obligations):
        if obligation.variable is not None:
            prices[index] = obligation.variable
            ssps[index] = obligation.variable
            rest -= obligation.variable
        else:
            fixed.append(index)
    if not fixed:
        if rest != 0:
            raise AllocationError(f"{rest} of the transaction price is left with no obligation to take it.")
        return Allocation(prices, ssps, "relative_ssp")
    uncertain = [i for i in fixed if obligations[i].ssp is None]
    method = "relative_ssp"
    with localcontext(exact_context()):
        for i in fixed:
            if obligations[i].ssp is not None:
                ssps[i] = obligations[i].ssp
        if uncertain:
            residual = rest - sum((ssps[i] for i in fixed if i not in uncertain), ZERO)
            if residual <= 0:
                raise AllocationError(
                    f"The residual approach leaves {residual} for the obligations with an uncertain SSP: the "
                    "observable SSPs already exceed the price. Give them an SSP."
                )
            weights = [abs(obligations[i].list_amount) for i in uncertain]
            if sum(weights, ZERO) == 0:
                weights = [Decimal(1)] * len(uncertain)
            weight_sum = sum(weights, ZERO)
            for i, weight in zip(uncertain, weights, strict=True):
                ssps[i] = residual * weight / weight_sum
            method = "residual"
        weights = [ssps[i] for i in fixed]
        if sum(weights, ZERO) == 0:
            weights = [abs(obligations[i].list_amount) for i in fixed]
            method = "list_price"
            if sum(weights, ZERO) == 0:
                weights = [Decimal(1)] * len(fixed)
    parts = allocate_by_largest_remainder(rest, weights, currency)
    for i, part in zip(fixed, parts, strict=True):
        prices[i] = part
    return Allocation(prices, ssps, method)


def ssp_for_period(unit_price: Decimal, per: str, quantity: Decimal, start: date | None, end: date | None) -> Decimal:
    """The SSP of what an obligation promises: a one-time price times the quantity, or a monthly or yearly
    price times the quantity and the length of its service period (in months of 365/12 days)."""
    with localcontext(exact_context()):
        if per == "unit" or start is None or end is None:
            return unit_price * quantity
        months = Decimal((end - start).days) / DAYS_PER_MONTH
        if per == "year":
            return unit_price * quantity * months / 12
        return unit_price * quantity * months


@dataclass(frozen=True)
class RatableTerms:
    """A ratable obligation's schedule: its price over [start, end); after a rebase, what was recognised
    before `rebased_on` stays, and the rest of the price runs from `rebased_on` to the end."""

    price: Decimal
    start: date
    end: date
    currency: str
    rebased_on: date | None = None
    rebased_amount: Decimal = ZERO


def ratable_through(terms: RatableTerms, day: date) -> Decimal:
    """Revenue recognised through the end of `day` (DESIGN's running total): round(price x days elapsed /
    days), days counted from the start (or the rebase) to the day after `day`, capped at the end."""
    if terms.end <= terms.start:
        raise ValueError(f"The service period {terms.start} to {terms.end} is empty.")
    start, amount, base = terms.start, terms.price, ZERO
    if terms.rebased_on is not None:
        if day < terms.rebased_on:
            raise ValueError(f"{day} is before the rebase on {terms.rebased_on}: its figures are history.")
        if terms.rebased_on >= terms.end:
            return round_money(terms.price, terms.currency)
        start, base, amount = terms.rebased_on, terms.rebased_amount, terms.price - terms.rebased_amount
    if day < start:
        return base
    total_days = (terms.end - start).days
    elapsed = min((day - start).days + 1, total_days)
    return base + ratable_recognised_through(amount, elapsed, total_days, terms.currency)


def ratable_by_month(terms: RatableTerms, after: date | None = None) -> list[tuple[date, Decimal]]:
    """The schedule by calendar month (first day of the month, revenue of that month) of what is still to
    be recognised after the day `after` (None: the whole schedule). Each month is a difference of two
    running totals, so the months add up exactly."""
    first = terms.rebased_on or terms.start
    begin = first if after is None or after < first else after + timedelta(days=1)
    if begin >= terms.end:
        return []
    previous = ratable_through(terms, begin - timedelta(days=1)) if begin > first else (
        terms.rebased_amount if terms.rebased_on else ZERO
    )
    months: list[tuple[date, Decimal]] = []
    month = begin.replace(day=1)
    while month < terms.end:
        following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
        last_day = min(following, terms.end) - timedelta(days=1)
        through = ratable_through(terms, last_day)
        months.append((month, through - previous))
        previous = through
        month = following
    return months


@dataclass(frozen=True)
class PositionChange:
    """How a contract's net position moved: positive `deferred` credits deferred revenue, positive `asset`
    debits the contract asset."""

    deferred: Decimal
    asset: Decimal


def position_change(billed_before: Decimal, recognized_before: Decimal, billed_after: Decimal,
                    recognized_after: Decimal) -> PositionChange:
    """A contract is presented net (ASC 606-10-45-1): deferred revenue when billed exceeds recognised, a
    contract asset when recognised exceeds billed, never both."""
    def split(billed: Decimal, recognized: Decimal) -> tuple[Decimal, Decimal]:
        net = billed - recognized
        return (net, ZERO) if net >= 0 else (ZERO, -net)

    deferred_before, asset_before = split(billed_before, recognized_before)
    deferred_after, asset_after = split(billed_after, recognized_after)
    return PositionChange(deferred=deferred_after - deferred_before, asset=asset_after - asset_before)


@dataclass(frozen=True)
class Treatment:
    treatment: str  # separate_contract | prospective | cumulative_catch_up
    rationale: str


def choose_treatment(*, adds_distinct_goods: bool, priced_at_ssp: bool, remaining_distinct: bool) -> Treatment:
    """ASC 606-10-25-12/13 (IFRS 15.20-21) as a decision: a modification that only adds distinct goods or
    services at their standalone selling prices is a separate contract; otherwise, if what remains to be
    transferred is distinct from what has been, the old contract ends and a new one starts (prospective);
    if not, the modification is part of the partially satisfied obligation (cumulative catch-up)."""
    if adds_distinct_goods and priced_at_ssp:
        return Treatment(
            "separate_contract",
            "25-12: the scope grows by distinct goods or services and the price by their standalone selling "
            "prices, so the modification is a separate contract; the original is unchanged.",
        )
    if remaining_distinct:
        return Treatment(
            "prospective",
            "25-13(a): the remaining goods or services are distinct from those already transferred, so the "
            "original contract is treated as ended and a new one begins: the unrecognised consideration plus "
            "the change is allocated to the remaining obligations from the effective date; nothing recognised "
            "is restated.",
        )
    return Treatment(
        "cumulative_catch_up",
        "25-13(b): the remaining goods or services are not distinct and form part of a single, partially "
        "satisfied performance obligation, so the change is recognised as a cumulative catch-up on the "
        "effective date.",
    )
