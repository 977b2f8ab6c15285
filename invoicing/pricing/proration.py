"""Proration by calendar day (DESIGN: proration). Pure: Decimal and dates, no rounding.

amount = price x days used / days in the full billing period that the partial period belongs to. Periods
are [start, end) ranges of days in the customer's timezone (as in contracts.periods). A change takes effect
at the start of its day, so the day of an upgrade is billed at the new price. The results are exact; round
them once with rounding.round_money when they become invoice lines.
"""

from datetime import date
from decimal import Decimal, localcontext

from invoicing.pricing import exact_context


def prorate(amount: Decimal, days_used: int, days_in_full_period: int) -> Decimal:
    """amount x days_used / days_in_full_period, exact to 50 significant digits (no rounding to cents)."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"Money amounts are Decimal, not {type(amount).__name__}.")
    if days_in_full_period <= 0:
        raise ValueError(f"The full period must last at least one day, got {days_in_full_period}.")
    if not 0 <= days_used <= days_in_full_period:
        raise ValueError(f"days_used must be between 0 and {days_in_full_period}, got {days_used}.")
    if days_used == days_in_full_period:
        return amount
    with localcontext(exact_context()):
        # Multiply before dividing: one division, so a terminating quotient is exact.
        return amount * days_used / days_in_full_period


def _check_range(start: date, end: date, full_start: date, full_end: date) -> None:
    if not full_start < full_end:
        raise ValueError(f"The full period {full_start}..{full_end} is empty.")
    if not full_start <= start <= end <= full_end:
        raise ValueError(f"The period {start}..{end} is not inside its full period {full_start}..{full_end}.")


def prorate_days(amount: Decimal, *, start: date, end: date, full_start: date, full_end: date) -> Decimal:
    """The price of [start, end), a piece of the full period [full_start, full_end)."""
    _check_range(start, end, full_start, full_end)
    return prorate(amount, (end - start).days, (full_end - full_start).days)


def change_split(
    old_price: Decimal, new_price: Decimal, *, change_day: date, start: date, end: date, full_start: date,
    full_end: date,
) -> tuple[Decimal, Decimal]:
    """An upgrade, downgrade or quantity change on `change_day` within the billed period [start, end).

    Returns (old part, new part): the old price for [start, change_day), the new one for [change_day, end),
    both over the full period's days. In arrears, bill both; in advance, the old part was already billed
    for the whole period, so credit `unused_credit(old_price, ...)` and bill the new part.
    """
    _check_range(start, end, full_start, full_end)
    if not start <= change_day <= end:
        raise ValueError(f"The change day {change_day} is outside the period {start}..{end}.")
    full_days = (full_end - full_start).days
    return (
        prorate(old_price, (change_day - start).days, full_days),
        prorate(new_price, (end - change_day).days, full_days),
    )


def unused_credit(
    price: Decimal, *, from_day: date, start: date, end: date, full_start: date, full_end: date
) -> Decimal:
    """The unused part of an in-advance fee for [start, end) that stops applying on `from_day`
    (cancellation, upgrade or quantity change): price x days from `from_day` to `end` / full days.
    Returned positive; the caller books it as a credit."""
    _check_range(start, end, full_start, full_end)
    if not start <= from_day <= end:
        raise ValueError(f"The day {from_day} is outside the period {start}..{end}.")
    return prorate(price, (end - from_day).days, (full_end - full_start).days)
