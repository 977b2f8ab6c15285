"""Hypothesis properties of the fee arithmetic (invoicing.pricing.fees), pure: no database.

- round_running rounds on the running total, so its pieces add up to the rounded exact total, and pieces of
  a period at one price never add up to more than the rounded price of the whole period;
- advance_adjustment settles an in-advance fee so that billed - credit + charges is the rounded exact price
  of what the period turned out to be, whatever the billed terms were.
"""

import itertools
from datetime import date, timedelta
from decimal import Decimal, localcontext

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from invoicing.pricing import exact_context
from invoicing.pricing.fees import BilledFee, FeeSegment, FeeTerm, advance_adjustment, fee_segments, round_running
from invoicing.pricing.rounding import round_money

ZERO = Decimal(0)
ORIGIN = date(2023, 12, 1)

currencies = st.sampled_from(["USD", "JPY", "KWD"])
# Unit prices carry up to 12 decimals (DESIGN: money); quantities up to 6 (seats, fractional units).
prices = st.decimals(min_value=0, max_value=Decimal("100000"), places=12, allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000"), places=6, allow_nan=False,
                         allow_infinity=False)


@st.composite
def periods(draw: st.DrawFn) -> tuple[date, date, date, date]:
    """A full period of 1 to 400 days and a piece [start, end) of it (possibly the whole)."""
    full_days = draw(st.integers(min_value=1, max_value=400))
    full_start = ORIGIN + timedelta(days=draw(st.integers(min_value=0, max_value=1500)))
    full_end = full_start + timedelta(days=full_days)
    a = draw(st.integers(min_value=0, max_value=full_days))
    b = draw(st.integers(min_value=0, max_value=full_days))
    lo, hi = sorted((a, b))
    return full_start + timedelta(days=lo), full_start + timedelta(days=hi), full_start, full_end


def change_days(draw: st.DrawFn, start: date, end: date, max_changes: int = 6) -> list[date]:
    days = (end - start).days
    if days <= 1:
        return []
    offsets = draw(st.lists(st.integers(min_value=1, max_value=days - 1), max_size=max_changes, unique=True))
    return [start + timedelta(days=o) for o in sorted(offsets)]


def total(amounts: list[Decimal]) -> Decimal:
    with localcontext(exact_context()):
        return sum(amounts, ZERO)


# --- round_running --------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    amounts=st.lists(st.decimals(min_value=Decimal("-100000"), max_value=Decimal("100000"), places=14,
                                 allow_nan=False, allow_infinity=False), max_size=12),
    opening=st.decimals(min_value=0, max_value=Decimal("100000"), places=14, allow_nan=False, allow_infinity=False),
    currency=currencies,
)
def test_running_pieces_add_up_to_the_rounded_total(amounts, opening, currency) -> None:
    pieces = round_running(amounts, currency)
    assert total(pieces) == round_money(total(amounts), currency)
    assert all(piece == round_money(piece, currency) for piece in pieces)  # every piece is a whole minor unit
    with localcontext(exact_context()):
        expected = round_money(opening + total(amounts), currency) - round_money(opening, currency)
    assert total(round_running(amounts, currency, opening=opening)) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.data(), period=periods(), price=prices, quantity=quantities, currency=currencies)
def test_pieces_of_a_period_at_one_price_never_exceed_the_whole(data, period, price, quantity, currency) -> None:
    _, _, full_start, full_end = period
    # The whole period cut at random change days (e.g. a quantity change back to the same figure), one price.
    cuts = change_days(data.draw, full_start, full_end)
    bounds = [full_start, *cuts, full_end]
    terms = [FeeTerm(s, e, "plan", price, quantity, "Plan") for s, e in itertools.pairwise(bounds)]
    segments = fee_segments(start=full_start, end=full_end, full_start=full_start, full_end=full_end, terms=terms)
    with localcontext(exact_context()):
        whole = round_money(price * quantity, currency)
    pieces = round_running([seg.exact_amount for seg in segments], currency)
    assert [(s.start, s.end) for s in segments] == list(itertools.pairwise(bounds))
    assert total(pieces) == whole
    assert all(piece >= 0 for piece in pieces)
    # Any leading run of the pieces (a period cut short by a cancellation) stays within the whole.
    for k in range(len(pieces) + 1):
        assert total(pieces[:k]) <= whole
    # With days excluded (a trial, a pause), the billed pieces still never exceed the whole.
    ex_start, ex_end, _, _ = period
    served = fee_segments(start=full_start, end=full_end, full_start=full_start, full_end=full_end, terms=terms,
                          excluded=[(ex_start, ex_end)])
    assert total(round_running([seg.exact_amount for seg in served], currency)) <= whole


# --- advance_adjustment -------------------------------------------------------------------------------------


@st.composite
def actual_period(draw: st.DrawFn) -> tuple[list[FeeSegment], tuple[date, date, date, date]]:
    """What a period turned out to be: terms changing on random days (plan, price or quantity), a random
    stretch not served (pause, trial) and possibly an early end (cancellation)."""
    start, end, full_start, full_end = draw(periods())
    assume(start < end)
    cuts = change_days(draw, start, end)
    bounds = [start, *cuts, end]
    keys = st.sampled_from(["basic", "pro"])
    terms = [
        FeeTerm(s, e, draw(keys), draw(prices), draw(quantities), "Plan")
        for s, e in itertools.pairwise(bounds)
    ]
    excluded: list[tuple[date, date | None]] = []
    if draw(st.booleans()):
        days = (end - start).days
        a = draw(st.integers(min_value=0, max_value=days))
        b = draw(st.integers(min_value=a, max_value=days))
        excluded.append((start + timedelta(days=a), start + timedelta(days=b) if draw(st.booleans()) else None))
    served_end = end
    if draw(st.booleans()):
        served_end = start + timedelta(days=draw(st.integers(min_value=0, max_value=(end - start).days)))
    segments = fee_segments(start=start, end=served_end, full_start=full_start, full_end=full_end, terms=terms,
                            excluded=excluded)
    return segments, (start, end, full_start, full_end)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), case=actual_period(), currency=currencies)
def test_billed_minus_credit_plus_charges_is_the_rounded_actual(data, case, currency) -> None:
    actual, (start, end, full_start, full_end) = case
    full_days = (full_end - full_start).days
    exact_actual = total([seg.exact_amount for seg in actual])
    # What the in-advance invoice billed: either the terms of the first served day (as the rating bills them)
    # or terms that changed before the period started being served (a change on its first day).
    if actual and data.draw(st.booleans()):
        first = actual[0]
        key, price, quantity, billed_start = first.key, first.unit_price, first.quantity, first.start
    else:
        key, price, quantity = data.draw(st.sampled_from(["basic", "pro"])), data.draw(prices), data.draw(quantities)
        billed_start = start
    with localcontext(exact_context()):
        billed_exact = price * quantity * (end - billed_start).days / full_days
    billed = BilledFee(billed_start, end, key, price, quantity, round_money(billed_exact, currency))

    adjustment = advance_adjustment(billed, actual, currency)
    charges = [amount for _, amount in adjustment.charges]
    assert billed.amount - adjustment.credit + total(charges) == round_money(exact_actual, currency)
    assert adjustment.credit >= 0  # the billed terms served at most the days they were billed for
    assert adjustment.credit <= billed.amount
    assert all(amount >= 0 for amount in charges)
    assert [seg for seg, _ in adjustment.charges] == actual[len(actual) - len(charges):]

    # Nothing billed ahead (a paused period): the charges alone are the rounded actual price.
    unbilled = advance_adjustment(None, actual, currency)
    assert unbilled.credit == 0
    assert total([amount for _, amount in unbilled.charges]) == round_money(exact_actual, currency)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), period=periods(), price=prices, quantity=quantities, currency=currencies)
def test_a_period_served_as_billed_needs_no_settlement(data, period, price, quantity, currency) -> None:
    start, end, full_start, full_end = period
    assume(start < end)
    cuts = change_days(data.draw, start, end)
    bounds = [start, *cuts, end]
    # Same terms, cut into several pieces (a ramp to the same price): nothing to credit, nothing to charge.
    terms = [FeeTerm(s, e, "plan", price, quantity, "Plan") for s, e in itertools.pairwise(bounds)]
    actual = fee_segments(start=start, end=end, full_start=full_start, full_end=full_end, terms=terms)
    with localcontext(exact_context()):
        billed_exact = price * quantity * (end - start).days / (full_end - full_start).days
    billed = BilledFee(start, end, "plan", price, quantity, round_money(billed_exact, currency))
    adjustment = advance_adjustment(billed, actual, currency)
    assert (adjustment.credit, adjustment.charges) == (ZERO, [])
