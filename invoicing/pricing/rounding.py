"""Rounding money to a currency's minor unit, once, and splitting rounded totals without losing a cent.

DESIGN: an amount is computed exactly and rounded once, when it becomes an invoice line, to the currency's
ISO 4217 minor unit with ROUND_HALF_UP. Ratable revenue is rounded on the running total so the pieces add
up, and allocations distribute the last minor units by largest remainder.
"""

from collections.abc import Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, localcontext

import moneyed

from invoicing.pricing import exact_context


def currency_exponent(code: str) -> int:
    """The ISO 4217 exponent (number of decimals of the minor unit): USD 2, JPY 0, KWD 3."""
    try:
        currency = moneyed.get_currency(str(code).strip().upper())
    except moneyed.CurrencyDoesNotExist:
        raise ValueError(f"Unknown currency code '{code}'.") from None
    # py-moneyed stores the minor unit as a power of ten (100 for cents); its digit count minus one.
    return len(str(currency.sub_unit)) - 1


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of the currency: Decimal('0.01') for USD, Decimal('1') for JPY."""
    return Decimal(1).scaleb(-currency_exponent(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up (away from zero on a tie) to the currency's minor unit."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"Money amounts are Decimal, not {type(amount).__name__}.")
    if not amount.is_finite():
        raise ValueError(f"Cannot round a non-finite amount ({amount}).")
    with localcontext(exact_context()):
        return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def allocate_by_largest_remainder(total: Decimal, weights: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Split `total` (already rounded to the minor unit) in proportion to `weights`.

    Each part is its exact share rounded towards zero; the minor units left over go one each to the parts
    with the largest remainders, ties to the earlier part. The parts add up to `total` exactly and each
    differs from its exact share by less than one minor unit.
    """
    unit = minor_unit(currency)
    if round_money(total, currency) != total:
        raise ValueError(f"The total {total} is not rounded to the {currency} minor unit ({unit}).")
    if not weights:
        raise ValueError("Give at least one weight.")
    if any(not isinstance(w, Decimal) or not w.is_finite() or w < 0 for w in weights):
        raise ValueError("Weights are finite Decimals, 0 or more.")
    with localcontext(exact_context()):
        weight_sum = sum(weights, Decimal(0))
        if weight_sum == 0:
            if total == 0:
                return [Decimal(0).quantize(unit) for _ in weights]
            raise ValueError("Cannot allocate a non-zero total over weights that are all zero.")
        # Work on the magnitude so rounding "down" means towards zero for negative totals (credits) too.
        sign = -1 if total < 0 else 1
        magnitude = abs(total)
        exact = [magnitude * w / weight_sum for w in weights]
        parts = [share.quantize(unit, rounding=ROUND_DOWN) for share in exact]
        left_over = int((magnitude - sum(parts, Decimal(0))) / unit)
        # Stable sort: equal remainders keep their original order.
        order = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
        for index in order[:left_over]:
            parts[index] += unit
        return [-part for part in parts] if sign < 0 else parts


def ratable_recognised_through(total: Decimal, days_elapsed: int, total_days: int, currency: str) -> Decimal:
    """Revenue recognised through `days_elapsed` of `total_days`: round(total x elapsed / total days).

    A period's revenue is the difference of two such figures, so the pieces always sum to `total`.
    """
    if total_days <= 0:
        raise ValueError(f"total_days must be positive, got {total_days}.")
    if not 0 <= days_elapsed <= total_days:
        raise ValueError(f"days_elapsed must be between 0 and {total_days}, got {days_elapsed}.")
    if days_elapsed == total_days:
        # The whole amount once the service period is over, even if `total` is not on the minor unit.
        return round_money(total, currency)
    with localcontext(exact_context()):
        return round_money(total * days_elapsed / total_days, currency)


def ratable_recognised_between(
    total: Decimal, from_day: int, to_day: int, total_days: int, currency: str
) -> Decimal:
    """Revenue for days [from_day, to_day) of the service period: the difference of two running totals."""
    if from_day > to_day:
        raise ValueError(f"from_day ({from_day}) is after to_day ({to_day}).")
    return ratable_recognised_through(total, to_day, total_days, currency) - ratable_recognised_through(
        total, from_day, total_days, currency
    )
