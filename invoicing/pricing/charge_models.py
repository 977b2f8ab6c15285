"""Usage charge models as pure functions over Decimal (DESIGN: tiers, money).

Properties arrive validated and normalised by contracts.charge_models.validate_charge_properties (decimal
strings; tiers as upper bounds, the last open). Nothing is rounded here: every amount is exact and comes
with a per-tier breakdown; rounding to the currency happens once, in rounding.round_money, when the
amount becomes an invoice line. Fractional quantities work everywhere.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

from invoicing.pricing import exact_context

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class TierLine:
    """One piece of a usage price: a tier, the packages, the free allowance, fees or a fee clamp."""

    label: str  # "tier 1", "packages", "free units", "fixed fees", "minimum fee adjustment", ...
    units: Decimal  # units (or, for percentage models, the amount) priced on this line
    unit_price: Decimal  # price per unit; for percentage models rate / 100
    amount: Decimal  # exact: units x unit_price + flat_fee (or the adjustment itself)
    flat_fee: Decimal = ZERO
    tier: int | None = None  # 1-based tier number for tiered models
    lower: Decimal | None = None  # the tier covers quantities above `lower` ...
    upper: Decimal | None = None  # ... up to `upper` (None: open)
    rate: Decimal | None = None  # percent, for percentage models
    transactions: int | None = None  # how many transactions this line covers (percentage model)


@dataclass(frozen=True)
class UsagePrice:
    amount: Decimal  # exact, unrounded; equals the sum of the lines' amounts
    lines: list[TierLine] = field(default_factory=list)


def _dec(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool | float):
        raise TypeError(f"Prices and quantities are Decimal or decimal strings, not {type(value).__name__}.")
    return Decimal(str(value))


def _quantity(quantity: Any, what: str = "quantity") -> Decimal:
    number = _dec(quantity)
    if not number.is_finite() or number < 0:
        raise ValueError(f"The {what} must be a finite number, 0 or more; got {quantity}.")
    return number


def _opt(value: Any) -> Decimal | None:
    return None if value is None else _dec(value)


def _tiers(properties: dict[str, Any], price_key: str) -> list[tuple[Decimal | None, Decimal, Decimal]]:
    """(up_to, price, flat_fee) per tier, from normalised properties."""
    tiers = properties.get("tiers") or []
    if not tiers:
        raise ValueError("A tiered charge needs at least one tier.")
    return [(_opt(t.get("up_to")), _dec(t.get(price_key) or "0"), _dec(t.get("flat_fee") or "0")) for t in tiers]


def _graduated(quantity: Decimal, tiers: list[tuple[Decimal | None, Decimal, Decimal]], *, percent: bool) -> UsagePrice:
    lines: list[TierLine] = []
    lower = ZERO
    for index, (up_to, price, flat_fee) in enumerate(tiers):
        # A tier is reached when the quantity goes above the previous bound; the first always counts.
        if index > 0 and quantity <= lower:
            break
        top = quantity if up_to is None else min(quantity, up_to)
        units = max(ZERO, top - lower)
        unit_price = price / HUNDRED if percent else price
        lines.append(TierLine(
            label=f"tier {index + 1}", units=units, unit_price=unit_price, flat_fee=flat_fee,
            amount=units * unit_price + flat_fee, tier=index + 1, lower=lower, upper=up_to,
            rate=price if percent else None,
        ))
        if up_to is None:
            break
        lower = up_to
    return UsagePrice(amount=sum((line.amount for line in lines), ZERO), lines=lines)


def _volume(quantity: Decimal, tiers: list[tuple[Decimal | None, Decimal, Decimal]]) -> UsagePrice:
    lower = ZERO
    for index, (up_to, price, flat_fee) in enumerate(tiers):
        # A quantity exactly on a bound belongs to the lower tier; 0 falls in the first tier.
        if up_to is None or quantity <= up_to:
            line = TierLine(
                label=f"tier {index + 1}", units=quantity, unit_price=price, flat_fee=flat_fee,
                amount=quantity * price + flat_fee, tier=index + 1, lower=lower, upper=up_to,
            )
            return UsagePrice(amount=line.amount, lines=[line])
        lower = up_to
    raise ValueError(f"The quantity {quantity} is above the last tier's bound and the last tier is not open.")


def _package(quantity: Decimal, properties: dict[str, Any]) -> UsagePrice:
    size = _dec(properties["package_size"])
    price = _dec(properties.get("package_price") or "0")
    free = _dec(properties.get("free_units") or "0")
    if size <= 0:
        raise ValueError("package_size must be greater than zero.")
    billable = max(ZERO, quantity - free)
    # Every started package is paid in full.
    packages = (billable / size).to_integral_value(rounding=ROUND_CEILING)
    lines: list[TierLine] = []
    if free > 0:
        lines.append(TierLine(label="free units", units=min(quantity, free), unit_price=ZERO, amount=ZERO))
    lines.append(TierLine(label="packages", units=packages, unit_price=price, amount=packages * price))
    return UsagePrice(amount=packages * price, lines=lines)


def _percentage(quantity: Decimal, properties: dict[str, Any], events: Sequence[Any] | None) -> UsagePrice:
    rate = _dec(properties.get("rate") or "0")
    fraction = rate / HUNDRED
    fixed_fee = _dec(properties.get("fixed_fee") or "0")
    free_count: int | None = properties.get("free_units_per_events")
    free_amount = _opt(properties.get("free_amount"))
    low = _opt(properties.get("per_transaction_min_amount"))
    high = _opt(properties.get("per_transaction_max_amount"))

    if events is None:
        if fixed_fee or free_count is not None or low is not None or high is not None:
            raise ValueError(
                "A percentage charge with a fixed fee, free transactions or per-transaction limits needs the "
                "individual transaction amounts (events)."
            )
        # Without per-transaction terms the summed amount is all that matters: one transaction.
        amounts = [quantity]
    else:
        amounts = [_quantity(a, "transaction amount") for a in events]
        if sum(amounts, ZERO) != quantity:
            raise ValueError(f"The transactions sum to {sum(amounts, ZERO)}, not to the quantity {quantity}.")

    # The free allowance runs over the transactions in time order and ends when either the number of free
    # transactions or the free amount runs out, whichever comes first.
    count_left = free_count
    amount_left = free_amount
    active = (count_left is not None or amount_left is not None) and count_left != 0 and amount_left != 0
    free_total, free_transactions = ZERO, 0
    paid_total, paid_transactions = ZERO, 0
    raised, raised_count, lowered, lowered_count = ZERO, 0, ZERO, 0
    for amount in amounts:
        paid_part = amount
        if active:
            if amount_left is not None and amount > amount_left:
                # The allowance ends inside this transaction: the part above it is paid.
                free_total += amount_left
                paid_part = amount - amount_left
                active = False
            else:
                free_total += amount
                free_transactions += 1
                if count_left is not None:
                    count_left -= 1
                if amount_left is not None:
                    amount_left -= amount
                active = count_left != 0 and amount_left != 0
                continue
        paid_total += paid_part
        paid_transactions += 1
        fee = paid_part * fraction + fixed_fee
        if low is not None and fee < low:
            raised += low - fee
            raised_count += 1
        elif high is not None and fee > high:
            lowered += high - fee
            lowered_count += 1

    lines: list[TierLine] = []
    if free_total or free_transactions:
        lines.append(TierLine(label="free", units=free_total, unit_price=ZERO, amount=ZERO, rate=rate,
                              transactions=free_transactions))
    lines.append(TierLine(label="percentage", units=paid_total, unit_price=fraction, amount=paid_total * fraction,
                          rate=rate, transactions=paid_transactions))
    if fixed_fee:
        lines.append(TierLine(label="fixed fees", units=Decimal(paid_transactions), unit_price=fixed_fee,
                              amount=fixed_fee * paid_transactions, transactions=paid_transactions))
    if raised_count:
        lines.append(TierLine(label="minimum fee adjustment", units=ZERO, unit_price=ZERO, amount=raised,
                              transactions=raised_count))
    if lowered_count:
        lines.append(TierLine(label="maximum fee adjustment", units=ZERO, unit_price=ZERO, amount=lowered,
                              transactions=lowered_count))
    return UsagePrice(amount=sum((line.amount for line in lines), ZERO), lines=lines)


def price_usage(
    charge_model: str, properties: dict[str, Any], quantity: Decimal, *, events: Sequence[Decimal] | None = None
) -> UsagePrice:
    """The exact price of `quantity` under a charge model, with its breakdown.

    For "percentage" and "graduated_percentage", `quantity` is the summed transaction amount; "percentage"
    also takes `events`, the individual transaction amounts in time order (needed for fixed fees, free
    transactions and per-transaction limits; they must sum to `quantity`).
    """
    with localcontext(exact_context()):
        quantity = _quantity(quantity)
        if charge_model == "standard":
            unit_price = _dec(properties.get("unit_price") or "0")
            line = TierLine(label="units", units=quantity, unit_price=unit_price, amount=quantity * unit_price)
            return UsagePrice(amount=line.amount, lines=[line])
        if charge_model == "graduated":
            return _graduated(quantity, _tiers(properties, "unit_price"), percent=False)
        if charge_model == "volume":
            return _volume(quantity, _tiers(properties, "unit_price"))
        if charge_model == "package":
            return _package(quantity, properties)
        if charge_model == "percentage":
            return _percentage(quantity, properties, events)
        if charge_model == "graduated_percentage":
            return _graduated(quantity, _tiers(properties, "rate"), percent=True)
    raise ValueError(f"Unknown charge model '{charge_model}'.")


def minimum_true_up(amount: Decimal, minimum: Decimal | None) -> Decimal:
    """The shortfall below a charge's minimum spend for the period (0 if none): billed as a true-up line."""
    if minimum is None:
        return ZERO
    with localcontext(exact_context()):
        return max(ZERO, _dec(minimum) - _dec(amount))
