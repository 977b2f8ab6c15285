"""Billing periods, hand-computed."""

import itertools
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.periods import add_months, period_containing, periods_between


def period(day, **kw):
    p = period_containing(day, **kw)
    return (p.start, p.end, p.full_start, p.full_end)


def test_calendar_month_first_period_is_partial_and_prorates_over_the_full_month():
    assert period(date(2024, 1, 15), interval="month", anchor="calendar", start_date=date(2024, 1, 15)) == (
        date(2024, 1, 15), date(2024, 2, 1), date(2024, 1, 1), date(2024, 2, 1)
    )


def test_anniversary_on_the_31st_clamps_to_month_end_and_recovers():
    kw = {"interval": "month", "anchor": "anniversary", "start_date": date(2024, 1, 31)}
    assert period(date(2024, 2, 10), **kw)[:2] == (date(2024, 1, 31), date(2024, 2, 29))  # leap year
    assert period(date(2024, 3, 5), **kw)[:2] == (date(2024, 2, 29), date(2024, 3, 31))
    assert period(date(2025, 2, 28), **kw)[:2] == (date(2025, 2, 28), date(2025, 3, 31))
    assert period(date(2024, 4, 30), **kw)[:2] == (date(2024, 4, 30), date(2024, 5, 31))


@pytest.mark.parametrize("start_day", [29, 30, 31])
def test_anniversary_days_29_to_31_in_february_of_a_common_year(start_day):
    kw = {"interval": "month", "anchor": "anniversary", "start_date": date(2023, 1, start_day)}
    assert period(date(2023, 2, 28), **kw)[:2] == (date(2023, 2, 28), date(2023, 3, start_day))


def test_bill_cycle_day_gives_a_prorated_first_period_up_to_it():
    kw = {"interval": "month", "anchor": "day_of_month", "start_date": date(2024, 1, 10), "bill_cycle_day": 15}
    assert period(date(2024, 1, 12), **kw) == (
        date(2024, 1, 10), date(2024, 1, 15), date(2023, 12, 15), date(2024, 1, 15)
    )
    assert period(date(2024, 1, 15), **kw) == (
        date(2024, 1, 15), date(2024, 2, 15), date(2024, 1, 15), date(2024, 2, 15)
    )


def test_bill_cycle_day_31_is_clamped_each_month():
    kw = {"interval": "month", "anchor": "day_of_month", "start_date": date(2024, 1, 5), "bill_cycle_day": 31}
    assert period(date(2024, 2, 10), **kw)[:2] == (date(2024, 1, 31), date(2024, 2, 29))
    assert period(date(2024, 3, 1), **kw)[:2] == (date(2024, 2, 29), date(2024, 3, 31))


@pytest.mark.parametrize(
    ("interval", "day", "expected"),
    [
        ("quarter", date(2024, 5, 20), (date(2024, 4, 1), date(2024, 7, 1))),
        ("half_year", date(2024, 8, 1), (date(2024, 7, 1), date(2025, 1, 1))),
        ("year", date(2024, 12, 31), (date(2024, 1, 1), date(2025, 1, 1))),
        ("week", date(2024, 1, 17), (date(2024, 1, 15), date(2024, 1, 22))),  # Monday to Monday
    ],
)
def test_calendar_intervals(interval, day, expected):
    assert period(day, interval=interval, anchor="calendar", start_date=date(2024, 1, 1))[2:] == expected


def test_end_date_cuts_the_last_period_short():
    p = period_containing(date(2024, 3, 20), interval="month", anchor="calendar", start_date=date(2024, 1, 1),
                          end_date=date(2024, 3, 25))
    assert (p.start, p.end, p.full_days, p.days) == (date(2024, 3, 1), date(2024, 3, 25), 31, 24)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="bill-cycle day"):
        period_containing(date(2024, 1, 1), interval="week", anchor="day_of_month", start_date=date(2024, 1, 1),
                          bill_cycle_day=3)
    with pytest.raises(ValueError, match="outside"):
        period_containing(date(2023, 12, 31), interval="month", anchor="calendar", start_date=date(2024, 1, 1))


@given(
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1)),
    span=st.integers(min_value=1, max_value=800),
    interval=st.sampled_from(["week", "month", "quarter", "half_year", "year"]),
    anchor=st.sampled_from(["calendar", "anniversary", "day_of_month"]),
    cycle_day=st.integers(min_value=1, max_value=31),
)
def test_periods_tile_the_life_of_a_subscription(start, span, interval, anchor, cycle_day):
    """Periods cover every day exactly once, each inside its full grid period."""
    if anchor == "day_of_month" and interval == "week":
        return
    kw = {"interval": interval, "anchor": anchor, "start_date": start,
          "bill_cycle_day": cycle_day if anchor == "day_of_month" else None}
    from datetime import timedelta

    end = start + timedelta(days=span)
    periods = periods_between(start, end, **kw, end_date=end)
    assert periods[0].start == start and periods[-1].end == end
    for a, b in itertools.pairwise(periods):
        assert a.end == b.start
    for p in periods:
        assert p.full_start <= p.start < p.end <= p.full_end
        assert p.days <= p.full_days


def test_add_months_clamps():
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2023, 11, 30), 3) == date(2024, 2, 29)
    assert add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)
