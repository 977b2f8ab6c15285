"""Subscription and fixed fees over a billing period: pure date and Decimal arithmetic (DESIGN: proration).

A fee's *terms* say which price and quantity are in force over which days (plan phases cut by negotiated
price ramps); `fee_segments` lays them over one billing period, drops the days not served (trial, pause) and
prices every segment by day over the full period's days. Rounding happens on the running total of the
period, so the pieces of a period always add up to the rounded price of the whole and never exceed it.
`advance_adjustment` compares what an in-advance invoice billed for a period with what the period turned out
to be (an upgrade, a quantity change, a cancellation, a pause) and returns the unused-time credit and the
remaining-time charges that settle the difference.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext

from invoicing.pricing import exact_context
from invoicing.pricing.rounding import round_money

ZERO = Decimal(0)


@dataclass(frozen=True)
class FeeTerm:
    """A price and quantity in force over [start, end) (end None: open)."""

    start: date
    end: date | None
    key: Hashable  # what is billed (a plan version, a fixed charge): a change of key is a plan change
    unit_price: Decimal
    quantity: Decimal
    label: str


@dataclass(frozen=True)
class FeeSegment:
    start: date
    end: date
    key: Hashable
    unit_price: Decimal
    quantity: Decimal
    label: str
    exact_amount: Decimal  # unit_price x quantity x days / full days, unrounded

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def same_terms(self, other: "FeeSegment | BilledFee") -> bool:
        return (self.key, self.unit_price, self.quantity) == (other.key, other.unit_price, other.quantity)


@dataclass(frozen=True)
class BilledFee:
    """What an in-advance invoice billed for a period: one price and quantity over [start, end)."""

    start: date
    end: date
    key: Hashable
    unit_price: Decimal
    quantity: Decimal
    amount: Decimal  # as billed, rounded


@dataclass(frozen=True)
class Adjustment:
    credit: Decimal  # the unused part of what was billed, positive (booked as a negative line)
    credit_from: date | None  # first day credited
    charges: list[tuple[FeeSegment, Decimal]]  # segments still to bill, with their rounded amounts
    used_exact: Decimal = ZERO  # the exact price of the billed days that were served as billed


def _served_ranges(start: date, end: date, excluded: Sequence[tuple[date, date | None]]) -> list[tuple[date, date]]:
    """[start, end) minus the excluded ranges."""
    ranges = [(start, end)]
    for ex_start, ex_end in excluded:
        ex_end = ex_end or date.max
        next_ranges = []
        for r_start, r_end in ranges:
            if ex_end <= r_start or ex_start >= r_end:
                next_ranges.append((r_start, r_end))
                continue
            if r_start < ex_start:
                next_ranges.append((r_start, ex_start))
            if ex_end < r_end:
                next_ranges.append((ex_end, r_end))
        ranges = next_ranges
    return sorted(ranges)


def fee_segments(
    *,
    start: date,
    end: date,
    full_start: date,
    full_end: date,
    terms: Sequence[FeeTerm],
    excluded: Sequence[tuple[date, date | None]] = (),
    prorated: bool = True,
) -> list[FeeSegment]:
    """The priced segments of [start, end), a piece of the full period [full_start, full_end).

    Days outside every term or inside an excluded range are not billed. Without proration a fee is billed in
    full for a period with at least one day served, at the terms of its first served day.
    """
    if not (full_start <= start <= end <= full_end and full_start < full_end):
        raise ValueError(f"The period {start}..{end} is not inside its full period {full_start}..{full_end}.")
    full_days = (full_end - full_start).days
    segments: list[FeeSegment] = []
    with localcontext(exact_context()):
        for r_start, r_end in _served_ranges(start, end, excluded):
            for term in sorted(terms, key=lambda t: t.start):
                s = max(r_start, term.start)
                e = min(r_end, term.end or date.max)
                if s >= e:
                    continue
                exact = term.unit_price * term.quantity * (e - s).days / full_days
                segments.append(FeeSegment(s, e, term.key, term.unit_price, term.quantity, term.label, exact))
        segments.sort(key=lambda seg: seg.start)
        if not prorated and segments:
            first = segments[0]
            return [FeeSegment(first.start, segments[-1].end, first.key, first.unit_price, first.quantity,
                               first.label, first.unit_price * first.quantity)]
    return segments


def round_running(exact_amounts: Sequence[Decimal], currency: str, *, opening: Decimal = ZERO) -> list[Decimal]:
    """Round pieces on the running total: piece k = round(opening + sum of the first k) - round(opening + sum
    of the first k-1). The rounded pieces add up to round(opening + total) - round(opening) exactly."""
    rounded: list[Decimal] = []
    with localcontext(exact_context()):
        running = opening
        previous = round_money(opening, currency)
        for amount in exact_amounts:
            running += amount
            current = round_money(running, currency)
            rounded.append(current - previous)
            previous = current
    return rounded


def advance_adjustment(billed: BilledFee | None, actual: Sequence[FeeSegment], currency: str) -> Adjustment:
    """Settle a period billed in advance against what it turned out to be.

    The billed terms hold until the first day the actual segments differ from them (a change takes effect
    at the start of its day); from that day the unused part of the billed fee is credited and the actual
    segments are charged. Both are rounded so that billed - credit + charges is the rounded price of the
    actual period, the same figure an in-arrears invoice would show.
    """
    if billed is None:
        amounts = round_running([seg.exact_amount for seg in actual], currency)
        return Adjustment(ZERO, None, list(zip(actual, amounts, strict=True)))
    with localcontext(exact_context()):
        matched = 0
        day = billed.start
        for seg in actual:
            if seg.start != day or not seg.same_terms(billed) or seg.end > billed.end:
                break
            day = seg.end
            matched += 1
        rest = list(actual[matched:])
        if not rest and day == billed.end:
            return Adjustment(ZERO, None, [])
        # The exact price of the days the billed terms did serve, then the credit for the rest.
        used_exact = sum((seg.exact_amount for seg in actual[:matched]), ZERO)
        used_rounded = round_money(used_exact, currency)
        credit = billed.amount - used_rounded
        amounts = round_running([seg.exact_amount for seg in rest], currency, opening=used_exact)
        return Adjustment(credit, day, list(zip(rest, amounts, strict=True)), used_exact)
