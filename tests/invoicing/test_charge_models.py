"""Charge models with hand-computed figures (the arithmetic is in the comments) and hypothesis properties."""

from decimal import ROUND_CEILING, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.charge_models import validate_charge_properties
from invoicing.pricing.charge_models import minimum_true_up, price_usage
from invoicing.pricing.rounding import round_money

D = Decimal


def props(model: str, raw: dict) -> dict:
    """Properties as the catalog stores them: validated and normalised."""
    return validate_charge_properties(model, raw)


TIERS = {"tiers": [
    {"up_to": "100", "unit_price": "1.00", "flat_fee": "10"},
    {"up_to": "1000", "unit_price": "0.50", "flat_fee": "5"},
    {"up_to": None, "unit_price": "0.10", "flat_fee": "0"},
]}


# --- standard ---------------------------------------------------------------------------------------------

def test_standard_token_price_with_12_decimal_places() -> None:
    p = props("standard", {"unit_price": "0.0000015"})
    result = price_usage("standard", p, D("1234567"))
    # 1,234,567 x 0.0000015 = 18,518,505 x 10^-7 = 1.8518505 exactly, 1.85 once rounded.
    assert result.amount == D("1.8518505")
    assert round_money(result.amount, "USD") == D("1.85")
    assert [(line.units, line.unit_price) for line in result.lines] == [(D("1234567"), D("0.0000015"))]


def test_standard_smallest_price_and_huge_quantity_stay_exact() -> None:
    p = props("standard", {"unit_price": "0.000000000001"})
    # 10^15 x 10^-12 = 1000
    assert price_usage("standard", p, D("1e15")).amount == D("1000")
    big = props("standard", {"unit_price": "123456.789012345678"})
    q = D("987654321098765.432109")
    assert Fraction(price_usage("standard", big, q).amount) == Fraction(q) * Fraction(D("123456.789012345678"))


def test_standard_zero_and_fractional() -> None:
    p = props("standard", {"unit_price": "0.25"})
    assert price_usage("standard", p, D(0)).amount == 0
    assert price_usage("standard", p, D("2.5")).amount == D("0.625")  # 2.5 x 0.25


# --- graduated --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("quantity", "expected", "tiers_reached"), [
    (D("0"), D("10"), 1),  # first tier always reached: 0 x 1 + 10
    (D("50"), D("60"), 1),  # 50 x 1 + 10
    (D("100"), D("110"), 1),  # exactly on the bound: 100 x 1 + 10, tier 2 not reached
    (D("100.5"), D("115.25"), 2),  # 110 + 0.5 x 0.50 + 5
    (D("1000"), D("565"), 2),  # 110 + 900 x 0.50 + 5
    (D("1500"), D("615"), 3),  # 565 + 500 x 0.10 + 0
])
def test_graduated(quantity: Decimal, expected: Decimal, tiers_reached: int) -> None:
    result = price_usage("graduated", props("graduated", TIERS), quantity)
    assert result.amount == expected
    assert len(result.lines) == tiers_reached
    assert sum(line.amount for line in result.lines) == result.amount
    assert sum(line.units for line in result.lines) == quantity


def test_graduated_breakdown() -> None:
    lines = price_usage("graduated", props("graduated", TIERS), D("1500")).lines
    assert [(line.tier, line.lower, line.upper, line.units, line.unit_price, line.flat_fee, line.amount)
            for line in lines] == [
        (1, D(0), D(100), D(100), D("1.00"), D(10), D(110)),
        (2, D(100), D(1000), D(900), D("0.50"), D(5), D(455)),
        (3, D(1000), None, D(500), D("0.10"), D(0), D(50)),
    ]


# --- volume -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("quantity", "expected", "tier"), [
    (D("0"), D("10"), 1),  # 0 falls in tier 1: 0 x 1 + 10
    (D("100"), D("110"), 1),  # on the bound: lower tier, 100 x 1 + 10
    (D("100.5"), D("55.25"), 2),  # 100.5 x 0.50 + 5
    (D("1000"), D("505"), 2),  # 1000 x 0.50 + 5
    (D("1000.001"), D("100.0001"), 3),  # 1000.001 x 0.10 + 0
    (D("1500"), D("150"), 3),  # 1500 x 0.10
])
def test_volume(quantity: Decimal, expected: Decimal, tier: int) -> None:
    result = price_usage("volume", props("volume", TIERS), quantity)
    assert result.amount == expected
    assert [line.tier for line in result.lines] == [tier]
    assert result.lines[0].units == quantity


# --- package ----------------------------------------------------------------------------------------------

PACKAGE = {"package_size": "1000", "package_price": "5.00", "free_units": "100"}


@pytest.mark.parametrize(("quantity", "packages"), [
    (D("0"), 0),  # never below zero
    (D("100"), 0),  # all free
    (D("100.5"), 1),  # 0.5 billable units start a package
    (D("1100"), 1),  # exactly 1000 billable
    (D("1100.0001"), 2),
    (D("10100"), 10),
])
def test_package(quantity: Decimal, packages: int) -> None:
    result = price_usage("package", props("package", PACKAGE), quantity)
    assert result.amount == D("5.00") * packages
    assert result.lines[-1].units == packages


def test_package_fractional_size() -> None:
    p = props("package", {"package_size": "0.5", "package_price": "2"})
    # ceil(1.2 / 0.5) = ceil(2.4) = 3 packages x 2 = 6
    assert price_usage("package", p, D("1.2")).amount == D(6)
    p = props("package", {"package_size": "0.3", "package_price": "1"})
    assert price_usage("package", p, D("0.9")).amount == D(3)  # exactly 3 packages
    assert price_usage("package", p, D("1")).amount == D(4)  # ceil(3.33...)


# --- percentage -------------------------------------------------------------------------------------------

EVENTS = [D(10), D(20), D(30), D(40)]  # sum 100


def pct(**raw: object) -> dict:
    return props("percentage", {"rate": "2.9", "fixed_fee": "0.30", **raw})


def test_percentage_with_fixed_fee_per_transaction() -> None:
    result = price_usage("percentage", pct(), D(100), events=EVENTS)
    # 100 x 2.9% = 2.90, + 4 x 0.30 = 1.20 -> 4.10
    assert result.amount == D("4.10")
    assert {line.label: line.amount for line in result.lines} == {"percentage": D("2.900"), "fixed fees": D("1.20")}


def test_percentage_free_transactions_by_number() -> None:
    result = price_usage("percentage", pct(free_units_per_events=2), D(100), events=EVENTS)
    # 10 and 20 free; (30 + 40) x 2.9% = 2.03, + 2 x 0.30 = 0.60 -> 2.63
    assert result.amount == D("2.63")
    free = result.lines[0]
    assert (free.label, free.units, free.transactions) == ("free", D(30), 2)


def test_percentage_free_amount_ends_inside_a_transaction() -> None:
    result = price_usage("percentage", pct(free_amount="25"), D(100), events=EVENTS)
    # 10 free (15 left); of 20, 15 free and 5 paid; then 30 and 40 paid.
    # (5 + 30 + 40) x 2.9% = 75 x 0.029 = 2.175, + 3 paid transactions x 0.30 = 0.90 -> 3.075
    assert result.amount == D("3.075")
    assert round_money(result.amount, "USD") == D("3.08")


def test_percentage_whichever_allowance_runs_out_first_ends_it() -> None:
    # The count runs out first: only 10 is free; (20 + 30 + 40) x 0.029 = 2.61, + 3 x 0.30 -> 3.51
    by_count = price_usage("percentage", pct(free_units_per_events=1, free_amount="100"), D(100), events=EVENTS)
    assert by_count.amount == D("3.51")
    # The amount runs out first (after 25, inside the second transaction): as with the free amount alone.
    by_amount = price_usage("percentage", pct(free_units_per_events=3, free_amount="25"), D(100), events=EVENTS)
    assert by_amount.amount == D("3.075")
    # Exactly used up by the first transaction: nothing more is free.
    exact = price_usage("percentage", pct(free_units_per_events=3, free_amount="10"), D(100), events=EVENTS)
    assert exact.amount == D("90") * D("0.029") + D("0.90")


def test_percentage_per_transaction_min_and_max() -> None:
    p = props("percentage", {"rate": "2", "per_transaction_min_amount": "0.50", "per_transaction_max_amount": "1.00"})
    result = price_usage("percentage", p, D(140), events=[D(10), D(30), D(100)])
    # fees 0.20 -> 0.50 (min), 0.60, 2.00 -> 1.00 (max): 0.50 + 0.60 + 1.00 = 2.10
    assert result.amount == D("2.10")
    assert {line.label: line.amount for line in result.lines} == {
        "percentage": D("2.80"),  # 140 x 2%
        "minimum fee adjustment": D("0.30"),
        "maximum fee adjustment": D("-1.00"),
    }


def test_percentage_free_transactions_pay_no_minimum_and_zero_amounts_pay_the_fixed_fee() -> None:
    p = props("percentage", {"rate": "2", "free_units_per_events": 1, "per_transaction_min_amount": "0.50"})
    # first free (0), second 10 x 2% = 0.20 raised to 0.50
    assert price_usage("percentage", p, D(20), events=[D(10), D(10)]).amount == D("0.50")
    # a paid transaction of 0 still pays the fixed fee
    assert price_usage("percentage", pct(), D(0), events=[D(0)]).amount == D("0.30")
    assert price_usage("percentage", pct(), D(0), events=[]).amount == 0


def test_percentage_without_events() -> None:
    assert price_usage("percentage", props("percentage", {"rate": "2.9"}), D(100)).amount == D("2.9")
    # 100 - 25 free = 75 x 2.9% = 2.175
    free = props("percentage", {"rate": "2.9", "free_amount": "25"})
    assert price_usage("percentage", free, D(100)).amount == D("2.175")
    with pytest.raises(ValueError, match="needs the individual transaction amounts"):
        price_usage("percentage", pct(), D(100))
    with pytest.raises(ValueError, match="sum to 100"):
        price_usage("percentage", pct(), D(99), events=EVENTS)


# --- graduated percentage ---------------------------------------------------------------------------------

GP = {"tiers": [{"up_to": "10000", "rate": "2.0", "flat_fee": "0"}, {"up_to": None, "rate": "1.0", "flat_fee": "50"}]}


@pytest.mark.parametrize(("quantity", "expected"), [
    (D("0"), D("0")),
    (D("10000"), D("200")),  # 10,000 x 2%; tier 2 not reached
    (D("15000"), D("300")),  # 200 + 5,000 x 1% + 50
    (D("12345.67"), D("273.4567")),  # 200 + 2,345.67 x 1% = 23.4567, + 50
])
def test_graduated_percentage(quantity: Decimal, expected: Decimal) -> None:
    result = price_usage("graduated_percentage", props("graduated_percentage", GP), quantity)
    assert result.amount == expected
    assert all(line.rate is not None for line in result.lines)


# --- minimum spend and bad input --------------------------------------------------------------------------

def test_minimum_true_up() -> None:
    assert minimum_true_up(D("80.25"), D("100")) == D("19.75")
    assert minimum_true_up(D("120"), D("100")) == 0
    assert minimum_true_up(D("100"), D("100")) == 0
    assert minimum_true_up(D("5"), None) == 0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="Unknown charge model"):
        price_usage("bogus", {}, D(1))
    with pytest.raises(ValueError, match="0 or more"):
        price_usage("standard", {"unit_price": "1"}, D(-1))
    with pytest.raises(TypeError):
        price_usage("standard", {"unit_price": "1"}, 1.5)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw: st.DrawFn) -> dict:
    bounds = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=10**6), max_size=5))))
    ups: list[str | None] = [str(b) for b in bounds]
    ups.append(None)
    return {"tiers": [{"up_to": u, "unit_price": str(draw(prices)), "flat_fee": str(draw(prices))} for u in ups]}


@settings(max_examples=200, deadline=None)
@given(tier_lists(), quantities, quantities)
def test_graduated_is_monotone(tiers: dict, a: Decimal, b: Decimal) -> None:
    p = props("graduated", tiers)
    low, high = min(a, b), max(a, b)
    assert price_usage("graduated", p, low).amount <= price_usage("graduated", p, high).amount


@settings(max_examples=200, deadline=None)
@given(prices, prices, quantities)
def test_volume_and_graduated_agree_with_one_tier(unit_price: Decimal, flat_fee: Decimal, q: Decimal) -> None:
    tiers = {"tiers": [{"up_to": None, "unit_price": str(unit_price), "flat_fee": str(flat_fee)}]}
    assert (price_usage("volume", props("volume", tiers), q).amount
            == price_usage("graduated", props("graduated", tiers), q).amount
            == q * unit_price + flat_fee)


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(min_value=D("0.001"), max_value=10**4, places=3),
    prices,
    st.decimals(min_value=0, max_value=10**4, places=3),
    quantities,
)
def test_package_is_a_step_function(size: Decimal, price: Decimal, free: Decimal, q: Decimal) -> None:
    p = props("package", {"package_size": str(size), "package_price": str(price), "free_units": str(free)})
    amount = price_usage("package", p, q).amount
    packages = max(D(0), (q - free) / size).to_integral_value(rounding=ROUND_CEILING)
    assert amount == packages * price
    # Constant up to the top of its step, one package more just above it.
    top = free + packages * size
    assert price_usage("package", p, top).amount == amount
    assert price_usage("package", p, top + D("0.0001")).amount == amount + price
