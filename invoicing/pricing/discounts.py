"""Coupons and promotional credits on an invoice's lines (DESIGN: credits). Pure: Decimal only.

Coupons and promotional credits are discounts, applied before tax: they reduce each line's net amount,
which is what compute_taxes then taxes. (Purchased prepaid credits are prepayments, applied after tax,
and are not handled here.) Every discount is a whole number of minor units, split over the lines by
largest remainder, so the line discounts add up to the discounts taken exactly.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, localcontext

from invoicing.pricing import exact_context
from invoicing.pricing.rounding import allocate_by_largest_remainder, minor_unit, round_money

ZERO = Decimal(0)
HUNDRED = Decimal(100)

PERCENTAGE = "percentage"
FIXED = "fixed"


@dataclass(frozen=True)
class DiscountableLine:
    key: Hashable
    amount: Decimal  # rounded line amount (may be negative for credits)
    plan_id: int | None = None
    meter_id: int | None = None


@dataclass(frozen=True)
class CouponTerms:
    id: int
    code: str
    discount_type: str  # "percentage" | "fixed"
    percent_off: Decimal | None
    amount_off: Decimal | None  # in the invoice currency
    plan_ids: frozenset[int] = frozenset()  # empty = no limit
    meter_ids: frozenset[int] = frozenset()  # empty = no limit

    def __post_init__(self) -> None:
        if self.discount_type == PERCENTAGE:
            pct = self.percent_off
            if not isinstance(pct, Decimal) or not pct.is_finite() or not ZERO < pct <= HUNDRED:
                raise ValueError(f"Coupon {self.code!r}: percent_off must be a Decimal above 0 and at most 100.")
        elif self.discount_type == FIXED:
            off = self.amount_off
            if not isinstance(off, Decimal) or not off.is_finite() or off <= 0:
                raise ValueError(f"Coupon {self.code!r}: amount_off must be a positive Decimal.")
        else:
            raise ValueError(
                f"Coupon {self.code!r}: unknown discount type {self.discount_type!r}; "
                f"expected {PERCENTAGE!r} or {FIXED!r}."
            )

    def applies_to(self, line: DiscountableLine) -> bool:
        """No filter: every line. One filter: lines it matches. Both: lines that match either."""
        if not self.plan_ids and not self.meter_ids:
            return True
        return (line.plan_id is not None and line.plan_id in self.plan_ids) or (
            line.meter_id is not None and line.meter_id in self.meter_ids
        )

    @property
    def label(self) -> str:
        if self.discount_type == PERCENTAGE and self.percent_off is not None:
            return f"Coupon {self.code} ({_plain(self.percent_off)}% off)"
        return f"Coupon {self.code}"


@dataclass(frozen=True)
class CreditBalance:
    """A promotional credit grant, in the invoice currency."""

    id: int
    remaining: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.remaining, Decimal) or not self.remaining.is_finite() or self.remaining < 0:
            raise ValueError(f"Credit #{self.id}: remaining must be a Decimal, 0 or more.")


@dataclass(frozen=True)
class Discount:
    source: str  # "coupon" | "credit"
    source_id: int
    label: str
    amount: Decimal  # total taken from this source on this invoice


@dataclass(frozen=True)
class DiscountResult:
    line_discounts: dict[Hashable, Decimal]
    discounts: list[Discount]
    total: Decimal


def _plain(value: Decimal) -> str:
    """20.000 -> "20", 12.50 -> "12.5" (normalize alone would print 2E+1)."""
    return format(value.normalize(), "f")


def _floor_to_unit(amount: Decimal, currency: str) -> Decimal:
    # Caps (a coupon's amount_off, a credit's balance) round down: never give more than was granted.
    with localcontext(exact_context()):
        return amount.quantize(minor_unit(currency), rounding=ROUND_DOWN)


def apply_discounts(
    lines: Sequence[DiscountableLine],
    coupons: Sequence[CouponTerms],
    credits: Sequence[CreditBalance],
    currency: str,
) -> DiscountResult:
    """Apply coupons (in order), then promotional credits (in order, the caller sorts them by expiry).

    Each discount is taken from the eligible lines' remaining amounts (amount minus discounts already
    taken), split in proportion to them by largest remainder. A line's discounts never exceed its amount,
    negative lines (credits) are never discounted, and a source that takes nothing is left out of
    `discounts`.
    """
    unit = minor_unit(currency)
    zero = ZERO.quantize(unit)
    remaining: dict[Hashable, Decimal] = {}
    for line in lines:
        if line.key in remaining:
            raise ValueError(f"Two discountable lines share the key {line.key!r}.")
        if not isinstance(line.amount, Decimal) or round_money(line.amount, currency) != line.amount:
            raise ValueError(
                f"Line {line.key!r}: the amount {line.amount} is not rounded to the {currency} minor unit."
            )
        remaining[line.key] = max(line.amount, zero)
    line_discounts: dict[Hashable, Decimal] = {line.key: zero for line in lines}
    discounts: list[Discount] = []

    def take(source: str, source_id: int, label: str, eligible: list[Hashable], amount: Decimal) -> None:
        if amount <= 0:
            return
        parts = allocate_by_largest_remainder(amount, [remaining[key] for key in eligible], currency)
        for key, part in zip(eligible, parts, strict=True):
            # Each part is at most its line's remaining amount: amount <= the eligible total, and a largest-
            # remainder share only rounds up past a fractional exact share that is below the line's amount.
            remaining[key] -= part
            line_discounts[key] += part
        discounts.append(Discount(source=source, source_id=source_id, label=label, amount=amount))

    for coupon in coupons:
        eligible = [line.key for line in lines if remaining[line.key] > 0 and coupon.applies_to(line)]
        base = sum((remaining[key] for key in eligible), zero)
        if coupon.discount_type == PERCENTAGE and coupon.percent_off is not None:
            with localcontext(exact_context()):
                amount = round_money(base * coupon.percent_off / HUNDRED, currency)
        elif coupon.amount_off is not None:
            amount = min(_floor_to_unit(coupon.amount_off, currency), base)
        else:
            amount = zero
        take("coupon", coupon.id, coupon.label, eligible, amount)

    for credit in credits:
        eligible = [line.key for line in lines if remaining[line.key] > 0]
        base = sum((remaining[key] for key in eligible), zero)
        amount = min(_floor_to_unit(credit.remaining, currency), base)
        take("credit", credit.id, f"Promotional credit #{credit.id}", eligible, amount)

    total = sum((d.amount for d in discounts), zero)
    return DiscountResult(line_discounts=line_discounts, discounts=discounts, total=total)
