"""Billing periods: pure date arithmetic, no ORM.

Periods are [start, end) ranges of calendar days in the customer's timezone. A subscription's periods
sit on a grid of boundaries fixed by its interval and anchor; the first and last periods may be cut
short by its start and end dates, and proration divides by the length of the full grid period
(DESIGN: "days used / days in the full billing period that the partial period belongs to").
"""

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

MONTHS_PER_INTERVAL = {"month": 1, "quarter": 3, "half_year": 6, "year": 12}
INTERVALS = ("week", *MONTHS_PER_INTERVAL)
ANCHORS = ("calendar", "anniversary", "day_of_month")


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # first day after the period
    full_start: date  # the full grid period this one belongs to (equal to start/end unless cut short)
    full_end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def full_days(self) -> int:
        return (self.full_end - self.full_start).days

    @property
    def is_partial(self) -> bool:
        return self.start != self.full_start or self.end != self.full_end


def clamp_day(year: int, month: int, day: int) -> date:
    """The given day of a month, clamped to the month's last day (the 31st in February is the 28th/29th)."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def add_months(day: date, months: int, *, on_day: int | None = None) -> date:
    index = day.year * 12 + day.month - 1 + months
    return clamp_day(index // 12, index % 12 + 1, on_day or day.day)


def _month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


def validate_anchor(interval: str, anchor: str, bill_cycle_day: int | None) -> None:
    if interval not in INTERVALS:
        raise ValueError(f"Unknown interval '{interval}'; use one of {', '.join(INTERVALS)}.")
    if anchor not in ANCHORS:
        raise ValueError(f"Unknown billing anchor '{anchor}'; use one of {', '.join(ANCHORS)}.")
    if anchor == "day_of_month":
        if interval == "week":
            raise ValueError("A bill-cycle day of the month needs a monthly, quarterly, half-yearly or yearly plan.")
        if bill_cycle_day is None or not 1 <= bill_cycle_day <= 31:
            raise ValueError("The bill-cycle day must be between 1 and 31.")
    elif bill_cycle_day is not None:
        raise ValueError("A bill-cycle day is only used with the day-of-month anchor.")


def _grid_period(
    day: date, interval: str, anchor: str, start_date: date, bill_cycle_day: int | None
) -> tuple[date, date]:
    """The full grid period [start, end) that contains `day`."""
    if interval == "week":
        # Calendar weeks start on Monday (ISO 8601); anniversary weeks on the start date's weekday.
        origin = start_date - timedelta(days=start_date.weekday()) if anchor == "calendar" else start_date
        offset = (day - origin).days // 7
        begin = origin + timedelta(days=7 * offset)
        return begin, begin + timedelta(days=7)

    step = MONTHS_PER_INTERVAL[interval]
    if anchor == "calendar":
        first_month = (_month_index(day) // step) * step
        begin = date(first_month // 12, first_month % 12 + 1, 1)
        return begin, add_months(begin, step)

    anchor_day = start_date.day if anchor == "anniversary" else bill_cycle_day
    assert anchor_day is not None

    def boundary(k: int) -> date:
        return add_months(start_date, k * step, on_day=anchor_day)

    k = (_month_index(day) - _month_index(start_date)) // step
    while boundary(k) > day:
        k -= 1
    while boundary(k + 1) <= day:
        k += 1
    return boundary(k), boundary(k + 1)


def period_containing(
    day: date,
    *,
    interval: str,
    anchor: str,
    start_date: date,
    bill_cycle_day: int | None = None,
    end_date: date | None = None,
) -> Period:
    """The billing period of a subscription that contains `day` (which must be within its life)."""
    validate_anchor(interval, anchor, bill_cycle_day)
    if day < start_date or (end_date is not None and day >= end_date):
        raise ValueError(f"{day} is outside the subscription's life [{start_date}, {end_date or 'open'}).")
    full_start, full_end = _grid_period(day, interval, anchor, start_date, bill_cycle_day)
    return Period(
        start=max(full_start, start_date),
        end=min(full_end, end_date) if end_date else full_end,
        full_start=full_start,
        full_end=full_end,
    )


def periods_between(
    first_day: date,
    last_day_exclusive: date,
    *,
    interval: str,
    anchor: str,
    start_date: date,
    bill_cycle_day: int | None = None,
    end_date: date | None = None,
) -> list[Period]:
    """Every billing period that overlaps [first_day, last_day_exclusive), in order."""
    periods: list[Period] = []
    day = max(first_day, start_date)
    stop = min(last_day_exclusive, end_date) if end_date else last_day_exclusive
    while day < stop:
        period = period_containing(
            day, interval=interval, anchor=anchor, start_date=start_date,
            bill_cycle_day=bill_cycle_day, end_date=end_date,
        )
        periods.append(period)
        day = period.end
    return periods
