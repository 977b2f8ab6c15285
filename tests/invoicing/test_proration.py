"""Proration by calendar day (DESIGN: proration), with hand-computed figures."""

import itertools
from datetime import date, timedelta
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.pricing.proration import change_split, prorate, prorate_days, unused_credit
from invoicing.pricing.rounding import round_money

D = Decimal
JAN = {"start": date(2024, 1, 1), "end": date(2024, 2, 1), "full_start": date(2024, 1, 1), "full_end": date(2024, 2, 1)}


def test_design_upgrade_example() -> None:
    # 100.00/month upgraded to 200.00/month on 15 January: the 15th is billed at the new price.
    old, new = change_split(D("100.00"), D("200.00"), change_day=date(2024, 1, 15), **JAN)
    # 100 x 14/31 = 45.1612... -> 45.16; 200 x 17/31 = 109.677... -> 109.68
    assert round_money(old, "USD") == D("45.16")
    assert round_money(new, "USD") == D("109.68")


def test_upgrade_in_advance_credits_the_unused_part() -> None:
    # The whole 100.00 was billed on 1 January; from the 15th, 17 of 31 days are unused: 100 x 17/31 = 54.838...
    credit = unused_credit(D("100.00"), from_day=date(2024, 1, 15), **JAN)
    assert round_money(credit, "USD") == D("54.84")
    # Kept 45.16 of the old price (100.00 - 54.84), exactly the arrears figure.
    assert D("100.00") - round_money(credit, "USD") == D("45.16")


def test_cancellation_on_the_last_and_first_day() -> None:
    # Cancelled on the 31st: the last day is unused, 100 x 1/31 = 3.2258... -> 3.23
    last_day = unused_credit(D("100.00"), from_day=date(2024, 1, 31), **JAN)
    assert round_money(last_day, "USD") == D("3.23")
    assert last_day == prorate(D("100.00"), 1, 31)
    assert unused_credit(D("100.00"), from_day=date(2024, 1, 1), **JAN) == D("100.00")  # nothing used
    assert unused_credit(D("100.00"), from_day=date(2024, 2, 1), **JAN) == 0  # all used


def test_start_mid_period_and_leap_february() -> None:
    # Start on 10 January: 22 of 31 days, 100 x 22/31 = 70.967... -> 70.97
    start = prorate_days(D("100.00"), start=date(2024, 1, 10), end=date(2024, 2, 1),
                         full_start=date(2024, 1, 1), full_end=date(2024, 2, 1))
    assert round_money(start, "USD") == D("70.97")
    # 15 February 2024 (leap year): 15 of 29 days, 100 x 15/29 = 51.724... -> 51.72
    leap = prorate_days(D("100.00"), start=date(2024, 2, 15), end=date(2024, 3, 1),
                        full_start=date(2024, 2, 1), full_end=date(2024, 3, 1))
    assert round_money(leap, "USD") == D("51.72")
    # Same day in 2023: 14 of 28 days = exactly half
    assert prorate_days(D("100.00"), start=date(2023, 2, 15), end=date(2023, 3, 1),
                        full_start=date(2023, 2, 1), full_end=date(2023, 3, 1)) == D("50")


def test_prorate_is_exact_and_unrounded() -> None:
    assert prorate(D("31.00"), 14, 31) == D("14")  # 31 x 14 / 31: multiply first, one division
    assert prorate(D("100"), 31, 31) == D("100")
    assert prorate(D("100"), 0, 31) == 0
    third = prorate(D("1"), 1, 3)
    assert str(third).startswith("0.3333333333333333333333333333333333333")  # far beyond any minor unit
    assert round_money(prorate(D("0.0000015"), 10, 30), "USD") == D("0.00")


def test_bad_ranges() -> None:
    with pytest.raises(ValueError, match="at least one day"):
        prorate(D(1), 0, 0)
    with pytest.raises(ValueError, match="days_used"):
        prorate(D(1), 32, 31)
    with pytest.raises(ValueError, match="not inside"):
        prorate_days(D(1), start=date(2023, 12, 31), end=date(2024, 1, 5),
                     full_start=date(2024, 1, 1), full_end=date(2024, 2, 1))
    with pytest.raises(ValueError, match="outside"):
        change_split(D(1), D(2), change_day=date(2024, 2, 2), **JAN)
    with pytest.raises(TypeError):
        prorate(1.5, 1, 2)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(min_value=0, max_value=10**9, places=2),
    st.integers(min_value=1, max_value=366),
    st.lists(st.integers(min_value=0, max_value=366), max_size=6),
)
def test_exact_pieces_add_up_to_the_whole(amount: Decimal, days: int, cuts: list[int]) -> None:
    full_start = date(2024, 1, 1)
    full_end = full_start + timedelta(days=days)
    bounds = sorted({0, days, *(c for c in cuts if c <= days)})
    pieces = [
        prorate_days(amount, start=full_start + timedelta(days=a), end=full_start + timedelta(days=b),
                     full_start=full_start, full_end=full_end)
        for a, b in itertools.pairwise(bounds)
    ]
    with localcontext() as ctx:
        ctx.prec = 60  # add the 50-digit pieces without losing digits
        assert abs(sum(pieces) - amount) < D("1e-40")
