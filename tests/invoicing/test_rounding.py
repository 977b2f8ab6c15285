"""Rounding once to the minor unit, allocation by largest remainder and running-total recognition."""

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.pricing.rounding import (
    allocate_by_largest_remainder,
    currency_exponent,
    minor_unit,
    ratable_recognised_between,
    ratable_recognised_through,
    round_money,
)

D = Decimal


@pytest.mark.parametrize(("code", "exponent"), [
    ("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3), ("usd", 2), ("CLF", 4),
])
def test_currency_exponent(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


def test_unknown_currency() -> None:
    with pytest.raises(ValueError, match="Unknown currency code 'QQQ'"):
        currency_exponent("QQQ")


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    ("2.675", "USD", "2.68"),  # half up (a binary float would give 2.67)
    ("-2.675", "USD", "-2.68"),  # half away from zero
    ("2.674999999999", "USD", "2.67"),
    ("1234.5", "JPY", "1235"),
    ("1.2345", "KWD", "1.235"),
    ("1.8518505", "EUR", "1.85"),
    ("0", "USD", "0.00"),
    ("999999999999999999999.995", "USD", "1000000000000000000000.00"),
])
def test_round_money(amount: str, currency: str, expected: str) -> None:
    rounded = round_money(D(amount), currency)
    assert rounded == D(expected)
    assert rounded.as_tuple().exponent == -currency_exponent(currency)


def test_round_money_refuses_floats() -> None:
    with pytest.raises(TypeError):
        round_money(2.675, "USD")  # type: ignore[arg-type]


def test_allocation_by_largest_remainder() -> None:
    # 100.00 / 3 = 33.333...: floors 33.33 x 3 = 99.99, the last cent to the first (ties by order)
    assert allocate_by_largest_remainder(D("100.00"), [D(1), D(1), D(1)], "USD") == [D("33.34"), D("33.33"), D("33.33")]
    # 1.00 x 1/7, 2/7, 4/7 = 0.142857, 0.285714, 0.571428: floors 0.14 + 0.28 + 0.57 = 0.99; the largest
    # remainder (0.005714) is the second's
    assert allocate_by_largest_remainder(D("1.00"), [D(1), D(2), D(4)], "USD") == [D("0.14"), D("0.29"), D("0.57")]
    assert allocate_by_largest_remainder(D("-1.00"), [D(1), D(2), D(4)], "USD") == [D("-0.14"), D("-0.29"), D("-0.57")]
    assert allocate_by_largest_remainder(D("100"), [D(1), D(1), D(1)], "JPY") == [D(34), D(33), D(33)]
    assert allocate_by_largest_remainder(D("10.00"), [D(0), D(1)], "USD") == [D("0.00"), D("10.00")]
    assert allocate_by_largest_remainder(D("0.00"), [D(0), D(0)], "USD") == [D("0.00"), D("0.00")]


def test_allocation_bad_input() -> None:
    with pytest.raises(ValueError, match="not rounded"):
        allocate_by_largest_remainder(D("1.005"), [D(1)], "USD")
    with pytest.raises(ValueError, match="all zero"):
        allocate_by_largest_remainder(D("1.00"), [D(0), D(0)], "USD")
    with pytest.raises(ValueError, match="0 or more"):
        allocate_by_largest_remainder(D("1.00"), [D(1), D(-1)], "USD")
    with pytest.raises(ValueError, match="at least one"):
        allocate_by_largest_remainder(D("1.00"), [], "USD")


def test_running_total_recognition() -> None:
    # 100.00 over 31 days: through day 14, 100 x 14/31 = 45.16; the rest is 100.00 - 45.16 = 54.84
    assert ratable_recognised_through(D("100.00"), 14, 31, "USD") == D("45.16")
    assert ratable_recognised_through(D("100.00"), 31, 31, "USD") == D("100.00")
    assert ratable_recognised_through(D("100.00"), 0, 31, "USD") == D("0.00")
    assert ratable_recognised_between(D("100.00"), 14, 31, 31, "USD") == D("54.84")
    # Day by day: each day 3.2258... would round to 3.23 (31 x 3.23 = 100.13); running totals add up to 100.00
    days = [ratable_recognised_between(D("100.00"), d, d + 1, 31, "USD") for d in range(31)]
    assert sum(days) == D("100.00")
    assert set(days) == {D("3.22"), D("3.23")}
    with pytest.raises(ValueError):
        ratable_recognised_through(D("1"), 32, 31, "USD")


currencies = st.sampled_from(["USD", "JPY", "KWD"])


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.lists(st.decimals(min_value=0, max_value=10**6, places=4), min_size=1, max_size=12),
    currencies,
)
def test_allocation_sums_and_stays_within_one_minor_unit(units: int, weights: list[Decimal], currency: str) -> None:
    if sum(weights) == 0:
        weights = [*weights[:-1], D(1)]
    unit = minor_unit(currency)
    total = units * unit
    parts = allocate_by_largest_remainder(total, weights, currency)
    assert sum(parts) == total
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = total * weight / weight_sum
        assert abs(part - exact) < unit
        assert round_money(part, currency) == part


@settings(max_examples=300, deadline=None)
@given(
    st.decimals(min_value=-(10**9), max_value=10**9, places=3),
    st.integers(min_value=1, max_value=3660),
    st.lists(st.integers(min_value=0, max_value=3660), max_size=20),
    currencies,
)
def test_running_total_pieces_sum_to_the_total(total: Decimal, days: int, cuts: list[int], currency: str) -> None:
    total = round_money(total, currency)
    bounds = sorted({0, days, *(c for c in cuts if c <= days)})
    pieces = [ratable_recognised_between(total, a, b, days, currency) for a, b in itertools.pairwise(bounds)]
    assert sum(pieces) == total
