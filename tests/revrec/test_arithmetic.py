"""The pure arithmetic of recognition (no database): allocation by relative SSP, the residual approach, the
ratable running total across month ends and a leap day, and its property: a schedule always adds up."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.pricing.rounding import minor_unit
from revrec.arithmetic import (
    AllocationError,
    ObligationPrice,
    RatableTerms,
    allocate_transaction_price,
    choose_treatment,
    position_change,
    ratable_by_month,
    ratable_through,
)

D = Decimal


def test_discounted_bundle_allocated_by_relative_ssp() -> None:
    """List 12,000 + 3,000 + 1,200 = 16,200 sold for 15,000; SSPs 12,000 / 5,000 / 2,000 (sum 19,000).

    Exact shares: 15000 x 12000/19000 = 9,473.684210..., 15000 x 5000/19000 = 3,947.368421...,
    15000 x 2000/19000 = 1,578.947368...; rounded down 9,473.68 + 3,947.36 + 1,578.94 = 14,999.98, the two
    cents left go to the largest remainders (.008421 implementation, .007368 support): 3,947.37 and 1,578.95.
    """
    allocation = allocate_transaction_price(D("15000.00"), [
        ObligationPrice(ssp=D("12000"), list_amount=D("12000.00")),
        ObligationPrice(ssp=D("5000"), list_amount=D("3000.00")),
        ObligationPrice(ssp=D("2000"), list_amount=D("1200.00")),
    ], "USD")
    assert allocation.method == "relative_ssp"
    assert allocation.prices == [D("9473.68"), D("3947.37"), D("1578.95")]
    assert sum(allocation.prices) == D("15000.00")


def test_residual_approach() -> None:
    """Subscription SSP 12,000 observable, implementation and training uncertain, price 15,000: the residual
    3,000 goes to the uncertain ones by their billed amounts 2,000 : 1,000 -> 2,000.00 and 1,000.00."""
    allocation = allocate_transaction_price(D("15000.00"), [
        ObligationPrice(ssp=D("12000"), list_amount=D("11000.00")),
        ObligationPrice(ssp=None, list_amount=D("2000.00")),
        ObligationPrice(ssp=None, list_amount=D("1000.00")),
    ], "USD")
    assert allocation.method == "residual"
    assert allocation.prices == [D("12000.00"), D("2000.00"), D("1000.00")]
    with pytest.raises(AllocationError):
        allocate_transaction_price(D("11000.00"), [ObligationPrice(ssp=D("12000")), ObligationPrice(ssp=None)], "USD")


def test_usage_keeps_its_variable_consideration() -> None:
    """Usage billed 250.00 (variable, as invoiced) keeps exactly 250.00; the 1,000.00 fee takes the rest."""
    allocation = allocate_transaction_price(D("1250.00"), [
        ObligationPrice(ssp=D("1200"), list_amount=D("1000.00")),
        ObligationPrice(ssp=D("250.00"), list_amount=D("250.00"), variable=D("250.00")),
    ], "USD")
    assert allocation.prices == [D("1000.00"), D("250.00")]


LEAP = RatableTerms(price=D("1000.00"), start=date(2024, 1, 15), end=date(2024, 4, 15), currency="USD")


def test_daily_schedule_across_month_ends_and_a_leap_day() -> None:
    """1,000.00 over 2024-01-15 .. 2024-04-15 (end exclusive) = 17 + 29 + 31 + 14 = 91 days.

    Through 31 Jan: round(1000 x 17/91 = 186.813) = 186.81.        January  186.81
    Through 29 Feb: round(1000 x 46/91 = 505.494) = 505.49.        February 318.68 (29 days, the leap day)
    Through 31 Mar: round(1000 x 77/91 = 846.153) = 846.15.        March    340.66
    Through 14 Apr: 1000.00.                                        April    153.85
    Total 186.81 + 318.68 + 340.66 + 153.85 = 1,000.00.
    """
    assert ratable_through(LEAP, date(2024, 1, 14)) == 0
    assert ratable_through(LEAP, date(2024, 1, 15)) == D("10.99")  # round(1000/91 = 10.989)
    assert ratable_through(LEAP, date(2024, 1, 31)) == D("186.81")
    assert ratable_through(LEAP, date(2024, 2, 29)) == D("505.49")
    assert ratable_through(LEAP, date(2024, 4, 14)) == D("1000.00")
    assert ratable_through(LEAP, date(2025, 1, 1)) == D("1000.00")
    months = ratable_by_month(LEAP)
    assert months == [(date(2024, 1, 1), D("186.81")), (date(2024, 2, 1), D("318.68")),
                      (date(2024, 3, 1), D("340.66")), (date(2024, 4, 1), D("153.85"))]
    assert sum(amount for _, amount in months) == D("1000.00")
    # What is left after 29 February: March and April only.
    assert ratable_by_month(LEAP, after=date(2024, 2, 29)) == months[2:]


def test_ratable_by_month_after_a_prospective_rebase() -> None:
    """The annual 12,000.00 (2026, 365 days) upgraded on 1 July: 5,950.68 kept, 12,049.32 over 184 days.
    July = round(12049.32 x 31/184 = 2030.0485) = 2,030.05; the schedule adds up to 18,000.00."""
    terms = RatableTerms(price=D("18000.00"), start=date(2026, 1, 1), end=date(2027, 1, 1), currency="USD",
                         rebased_on=date(2026, 7, 1), rebased_amount=D("5950.68"))
    months = ratable_by_month(terms)
    assert months[0] == (date(2026, 7, 1), D("2030.05"))
    assert len(months) == 6
    assert D("5950.68") + sum(amount for _, amount in months) == D("18000.00")


def test_position_and_treatment() -> None:
    # Billed 100, recognised 80 -> 130: deferred 20 -> 0, asset 0 -> 30.
    assert position_change(D(100), D(80), D(100), D(130)).deferred == D(-20)
    assert position_change(D(100), D(80), D(100), D(130)).asset == D(30)
    assert choose_treatment(adds_distinct_goods=True, priced_at_ssp=True, remaining_distinct=False).treatment == (
        "separate_contract")
    assert choose_treatment(adds_distinct_goods=True, priced_at_ssp=False, remaining_distinct=True).treatment == (
        "prospective")
    assert choose_treatment(adds_distinct_goods=False, priced_at_ssp=False, remaining_distinct=False).treatment == (
        "cumulative_catch_up")


@st.composite
def schedules(draw: st.DrawFn) -> tuple[RatableTerms, list[date], list[tuple[date, Decimal]]]:
    currency = draw(st.sampled_from(["USD", "JPY", "KWD"]))
    unit = minor_unit(currency)
    price = draw(st.integers(min_value=1, max_value=10**9)) * unit
    start = date(2023, 1, 1) + timedelta(days=draw(st.integers(0, 900)))
    days = draw(st.integers(1, 800))
    terms = RatableTerms(price=price, start=start, end=start + timedelta(days=days), currency=currency)
    runs = sorted(set(draw(st.lists(st.integers(0, days + 5), max_size=12))))
    rebases = sorted(set(draw(st.lists(st.integers(1, max(days - 1, 1)), max_size=3))))
    changes = [(start + timedelta(days=d), draw(st.integers(-10**6, 10**6)) * unit) for d in rebases if d < days]
    return terms, [start + timedelta(days=d) for d in runs], changes


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_recognitions_add_up_to_the_price(case: tuple[RatableTerms, list[date], list[tuple[date, Decimal]]]) -> None:
    """Any ratable obligation, run on any days, rebased prospectively with any price change (never below what
    is kept): every run's delta is >= 0 and the whole life recognises exactly the final allocated price."""
    terms, runs, changes = case
    recognized = Decimal(0)
    events = sorted([(d, "run", None) for d in runs] + [(d, "rebase", c) for d, c in changes],
                    key=lambda e: (e[0], e[1] == "run"))
    for day, what, change in events:
        if what == "rebase":
            kept = ratable_through(terms, day - timedelta(days=1))
            remaining = terms.price - kept
            new_price = kept + max(remaining + change, Decimal(0))
            terms = RatableTerms(price=new_price, start=terms.start, end=terms.end, currency=terms.currency,
                                 rebased_on=day, rebased_amount=kept)
            continue
        through = ratable_through(terms, day) if terms.rebased_on is None or day >= terms.rebased_on else recognized
        assert through - recognized >= 0
        recognized += through - recognized  # the run's delta
    # The last run, on the last day of service: the deltas add up to the final allocated price exactly.
    recognized += ratable_through(terms, terms.end - timedelta(days=1)) - recognized
    assert recognized == terms.price
