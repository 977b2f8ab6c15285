"""The shape of each charge model's properties, validated and normalised. Pure: no ORM.

Prices are decimal strings (a JSON number is accepted and read through its shortest text form, never
as a binary float). Tiers are written as upper bounds, the last one open (DESIGN: tiers).

    standard              {"unit_price": "0.0000015"}
    graduated, volume     {"tiers": [{"up_to": "1000", "unit_price": "0", "flat_fee": "0"}, ..., {"up_to": null, ...}]}
    package               {"package_size": "1000", "package_price": "5.00", "free_units": "0"}
    percentage            {"rate": "2.9", "fixed_fee": "0.30", "free_units_per_events": 10, "free_amount": "100",
                           "per_transaction_min_amount": "0.50", "per_transaction_max_amount": "20"}
    graduated_percentage  {"tiers": [{"up_to": "10000", "rate": "2.0", "flat_fee": "0"}, ..., {"up_to": null, ...}]}
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

CHARGE_MODELS = ("standard", "graduated", "volume", "package", "percentage", "graduated_percentage")
MAX_PRICE_DECIMALS = 12
MAX_TIERS = 100
MAX_VALUE = Decimal("1e15")
HUNDRED = Decimal("100")


class _Errors:
    def __init__(self) -> None:
        self.by_path: dict[str, list[str]] = {}

    def add(self, path: str, message: str) -> None:
        self.by_path.setdefault(path, []).append(message)


def _decimal(
    value: Any, path: str, errors: _Errors, *, minimum: Decimal = Decimal(0), strictly_positive: bool = False,
    maximum: Decimal = MAX_VALUE,
) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        errors.add(path, "Must be a decimal number written as a string, e.g. \"0.0015\".")
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        errors.add(path, f"'{str(value)[:40]}' is not a decimal number.")
        return None
    if not number.is_finite():
        errors.add(path, "Must be a finite number.")
        return None
    if number.as_tuple().exponent < -MAX_PRICE_DECIMALS:  # type: ignore[operator]
        errors.add(path, f"At most {MAX_PRICE_DECIMALS} decimal places.")
        return None
    if strictly_positive and number <= 0:
        errors.add(path, "Must be greater than zero.")
        return None
    if number < minimum:
        errors.add(path, f"Must be at least {minimum}.")
        return None
    if number > maximum:
        errors.add(path, f"Must be at most {maximum}.")
        return None
    return number


def _text(number: Decimal | None) -> str | None:
    return None if number is None else format(number.normalize() if number == number.to_integral() else number, "f")


def _check_keys(props: dict[str, Any], allowed: set[str], required: set[str], prefix: str, errors: _Errors) -> None:
    for key in sorted(set(props) - allowed):
        errors.add(f"{prefix}{key}", f"Unknown property; allowed: {', '.join(sorted(allowed))}.")
    for key in sorted(required - set(props)):
        errors.add(f"{prefix}{key}", "This property is required.")


def _tiers(props: dict[str, Any], price_key: str, errors: _Errors) -> list[dict[str, str | None]]:
    tiers = props.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        errors.add("tiers", "Give a non-empty list of tiers, the last with \"up_to\": null.")
        return []
    if len(tiers) > MAX_TIERS:
        errors.add("tiers", f"At most {MAX_TIERS} tiers.")
        return []
    normalised: list[dict[str, str | None]] = []
    previous: Decimal | None = Decimal(0)
    for index, tier in enumerate(tiers):
        path = f"tiers[{index}]"
        if not isinstance(tier, dict):
            errors.add(path, "Each tier is an object.")
            continue
        _check_keys(tier, {"up_to", price_key, "flat_fee"}, {"up_to", price_key}, f"{path}.", errors)
        last = index == len(tiers) - 1
        up_to_raw = tier.get("up_to")
        up_to: Decimal | None = None
        if up_to_raw is None:
            if not last:
                errors.add(f"{path}.up_to", "Only the last tier is open (\"up_to\": null).")
        else:
            up_to = _decimal(up_to_raw, f"{path}.up_to", errors, strictly_positive=True)
            if last and up_to is not None:
                errors.add(f"{path}.up_to", "The last tier must be open: \"up_to\": null.")
            if up_to is not None and previous is not None and up_to <= previous:
                errors.add(f"{path}.up_to", f"Must be greater than the previous tier's bound ({previous}).")
        maximum = HUNDRED if price_key == "rate" else MAX_VALUE
        price = _decimal(tier.get(price_key, "0"), f"{path}.{price_key}", errors, maximum=maximum)
        flat_fee = _decimal(tier.get("flat_fee", "0"), f"{path}.flat_fee", errors)
        previous = up_to
        normalised.append({"up_to": _text(up_to), price_key: _text(price), "flat_fee": _text(flat_fee)})
    return normalised


def validate_charge_properties(charge_model: str, properties: Any) -> dict[str, Any]:
    """Check `properties` for `charge_model` and return them normalised; every problem is reported at once,
    keyed by its path (e.g. "tiers[1].up_to")."""
    if charge_model not in CHARGE_MODELS:
        raise ValidationError({"charge_model": [f"Unknown charge model; use one of {', '.join(CHARGE_MODELS)}."]})
    if not isinstance(properties, dict):
        raise ValidationError({"properties": ["Give the charge model's properties as a JSON object."]})
    errors = _Errors()
    result: dict[str, Any]
    if charge_model == "standard":
        _check_keys(properties, {"unit_price"}, {"unit_price"}, "", errors)
        result = {"unit_price": _text(_decimal(properties.get("unit_price", "0"), "unit_price", errors))}
    elif charge_model in ("graduated", "volume"):
        _check_keys(properties, {"tiers"}, {"tiers"}, "", errors)
        result = {"tiers": _tiers(properties, "unit_price", errors)}
    elif charge_model == "graduated_percentage":
        _check_keys(properties, {"tiers"}, {"tiers"}, "", errors)
        result = {"tiers": _tiers(properties, "rate", errors)}
    elif charge_model == "package":
        _check_keys(properties, {"package_size", "package_price", "free_units"}, {"package_size", "package_price"},
                    "", errors)
        result = {
            "package_size": _text(_decimal(properties.get("package_size", "1"), "package_size", errors,
                                           strictly_positive=True)),
            "package_price": _text(_decimal(properties.get("package_price", "0"), "package_price", errors)),
            "free_units": _text(_decimal(properties.get("free_units", "0"), "free_units", errors)),
        }
    else:  # percentage
        allowed = {"rate", "fixed_fee", "free_units_per_events", "free_amount", "per_transaction_min_amount",
                   "per_transaction_max_amount"}
        _check_keys(properties, allowed, {"rate"}, "", errors)
        result = {
            "rate": _text(_decimal(properties.get("rate", "0"), "rate", errors, maximum=HUNDRED)),
            "fixed_fee": _text(_decimal(properties.get("fixed_fee", "0"), "fixed_fee", errors)),
        }
        free_events = properties.get("free_units_per_events")
        if free_events is not None:
            if isinstance(free_events, bool) or not isinstance(free_events, int) or free_events < 0:
                errors.add("free_units_per_events", "Must be a whole number of transactions, 0 or more.")
            result["free_units_per_events"] = free_events
        else:
            result["free_units_per_events"] = None
        for key in ("free_amount", "per_transaction_min_amount", "per_transaction_max_amount"):
            raw = properties.get(key)
            result[key] = None if raw is None else _text(_decimal(raw, key, errors))
        low, high = result["per_transaction_min_amount"], result["per_transaction_max_amount"]
        if low is not None and high is not None and Decimal(high) < Decimal(low):
            errors.add("per_transaction_max_amount", "Must not be below the per-transaction minimum.")
    if errors.by_path:
        raise ValidationError(errors.by_path)
    return result


def validate_filters(filters: Any, field: str = "filters") -> dict[str, list[str]]:
    """{"property": ["value", ...]}: events match when each named property has one of the values."""
    if not isinstance(filters, dict):
        raise ValidationError({field: ['Give an object like {"region": ["eu", "us"]}.']})
    errors = _Errors()
    normalised: dict[str, list[str]] = {}
    for key, values in filters.items():
        if not isinstance(key, str) or not key.strip() or len(key) > 100:
            errors.add(f"{field}.{key}", "Property names are non-empty strings of at most 100 characters.")
            continue
        if isinstance(values, str | int):
            values = [values]
        if not isinstance(values, list) or not values or not all(isinstance(v, str | int) for v in values):
            errors.add(f"{field}.{key}", "Give a non-empty list of values.")
            continue
        normalised[key] = [str(v) for v in values]
    if errors.by_path:
        raise ValidationError(errors.by_path)
    return normalised


def validate_group_by(group_by: Any, field: str = "group_by") -> list[str]:
    if not isinstance(group_by, list) or not all(isinstance(k, str) and k.strip() for k in group_by):
        raise ValidationError({field: ['Give a list of property names, e.g. ["region"].']})
    if len(set(group_by)) != len(group_by) or len(group_by) > 5:
        raise ValidationError({field: ["At most 5 distinct property names."]})
    return list(group_by)
