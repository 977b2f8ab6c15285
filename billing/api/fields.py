"""Serializer fields shared by every resource.

Conventions of the API's JSON:
- money is an object {"amount": "100.00", "currency": "USD"}: the amount a decimal string (never a float),
  with at least the currency's minor-unit decimals and as many more as the value carries (12 at most);
- quantities and percentages are decimal strings without trailing zeros ("1", "2.5");
- currencies are ISO 4217 codes, countries ISO 3166 alpha-2 codes, timezones IANA names.
"""

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError as DjangoValidationError
from django_countries import countries
from djmoney.money import Money
from drf_spectacular.utils import extend_schema_field
from moneyed import CurrencyDoesNotExist, get_currency
from rest_framework import serializers

MAX_DECIMAL_PLACES = 12
MAX_DIGITS = 28
MAX_JSON_DEPTH = 20


def minor_unit_places(currency_code: str) -> int:
    """ISO 4217 exponent: 2 for USD, 0 for JPY, 3 for KWD."""
    try:
        sub_unit = get_currency(currency_code).sub_unit
    except CurrencyDoesNotExist:
        return 2
    return len(str(sub_unit)) - 1


def format_decimal(value: Decimal, *, min_places: int = 0) -> str:
    """A plain decimal string (never exponent notation) without trailing zeros beyond `min_places`."""
    normalized = value.normalize()
    places = max(min_places, -normalized.as_tuple().exponent)
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def format_amount(value: Decimal, currency_code: str) -> str:
    return format_decimal(value, min_places=minor_unit_places(currency_code))


def parse_decimal(
    value: Any, *, max_places: int = MAX_DECIMAL_PLACES, max_digits: int = MAX_DIGITS
) -> Decimal:
    """A decimal from a JSON string or number (numbers arrive as exact Decimals from the JSON parser).

    `max_digits` and `max_places` are those of the database column, so a value that passes is storable.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
        raise serializers.ValidationError('Must be a decimal number, e.g. "12.50".')
    if isinstance(value, float):
        value = repr(value)
    text = str(value).strip()
    if len(text) > 100:
        raise serializers.ValidationError("Must be a decimal number of at most 100 characters.")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise serializers.ValidationError('Must be a decimal number, e.g. "12.50".') from None
    if not number.is_finite():
        raise serializers.ValidationError("Must be a finite decimal number.")
    _sign, digits, exponent = number.as_tuple()
    places = max(0, -exponent)
    if places > max_places:
        raise serializers.ValidationError(f"Use at most {max_places} decimal places.")
    whole_digits = max(0, len(digits) + exponent)
    if whole_digits > max_digits - max_places:
        raise serializers.ValidationError(f"Use at most {max_digits - max_places} digits before the decimal point.")
    return number


@extend_schema_field({"type": "string", "format": "decimal", "pattern": r"^-?\d+(\.\d+)?$", "example": "2.5"})
class DecimalStringField(serializers.Field):
    """A decimal as a JSON string; input may be a string or a number (parsed exactly, never as a float)."""

    def __init__(
        self,
        *,
        max_places: int = MAX_DECIMAL_PLACES,
        max_digits: int = MAX_DIGITS,
        min_value: Decimal | None = None,
        allow_zero: bool = True,
        **kwargs: Any,
    ) -> None:
        self.max_places = max_places
        self.max_digits = max_digits
        self.min_value = min_value
        self.allow_zero = allow_zero
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Decimal:
        number = parse_decimal(data, max_places=self.max_places, max_digits=self.max_digits)
        if self.min_value is not None and number < self.min_value:
            raise serializers.ValidationError(f"Must be at least {self.min_value}.")
        if not self.allow_zero and number == 0:
            raise serializers.ValidationError("Must not be zero.")
        return number

    def to_representation(self, value: Decimal) -> str:
        return format_decimal(Decimal(value))


@extend_schema_field(
    {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 currency code", "example": "USD"}
)
class CurrencyCodeField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 3)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        code = super().to_internal_value(data).upper()
        try:
            get_currency(code)
        except CurrencyDoesNotExist:
            raise serializers.ValidationError(
                f"Unknown currency '{code[:10]}'; use an ISO 4217 code such as USD or EUR."
            ) from None
        return code

    def to_representation(self, value: Any) -> str:
        return str(value)


@extend_schema_field(
    {"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1 alpha-2 country code", "example": "US"}
)
class CountryCodeField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 2)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        code = super().to_internal_value(data).upper()
        if code not in dict(countries):
            raise serializers.ValidationError(
                f"Unknown country '{code[:10]}'; use an ISO 3166 alpha-2 code such as US or FR."
            )
        return code

    def to_representation(self, value: Any) -> str:
        return getattr(value, "code", None) or str(value or "")


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


@extend_schema_field({"type": "string", "description": "IANA timezone name", "example": "Europe/Paris"})
class TimezoneNameField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        name = super().to_internal_value(data)
        if name not in _timezones():
            raise serializers.ValidationError(
                f"Unknown timezone '{name[:64]}'; use an IANA name such as Europe/Paris or UTC."
            )
        return name

    def to_representation(self, value: Any) -> str:
        return str(getattr(value, "key", value))


class MoneySchema(serializers.Serializer):
    # Documentation only: the shape of every amount with a currency in the API.
    amount = serializers.CharField(help_text='A decimal string, e.g. "100.00" or "0.0000015".')
    currency = serializers.CharField(help_text="ISO 4217 code, e.g. USD.")

    class Meta:
        ref_name = "Money"


@extend_schema_field(MoneySchema)
class MoneyField(serializers.Field):
    """{"amount": "100.00", "currency": "USD"}: input gives both; the amount may be a string or a number.

    The currency is checked against the resource's own currency by the serializer that knows it.
    """

    def __init__(self, *, allow_negative: bool = False, allow_zero: bool = True, **kwargs: Any) -> None:
        self.allow_negative = allow_negative
        self.allow_zero = allow_zero
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Money:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError('Must be an object like {"amount": "100.00", "currency": "USD"}.')
        errors: dict[str, list[str]] = {}
        unknown = set(data) - {"amount", "currency"}
        for key in sorted(unknown, key=str):
            errors[str(key)[:50]] = ["Unknown field."]
        amount = currency = None
        if "amount" not in data:
            errors["amount"] = ["This field is required."]
        else:
            try:
                amount = parse_decimal(data["amount"])
                if amount < 0 and not self.allow_negative:
                    raise serializers.ValidationError("Must not be negative.")
                if amount == 0 and not self.allow_zero:
                    raise serializers.ValidationError("Must be greater than zero.")
            except serializers.ValidationError as exc:
                errors["amount"] = exc.detail
        if "currency" not in data:
            errors["currency"] = ["This field is required."]
        else:
            try:
                currency = CurrencyCodeField().run_validation(data["currency"])
            except serializers.ValidationError as exc:
                errors["currency"] = exc.detail
        if errors:
            raise serializers.ValidationError(errors)
        return Money(amount, currency)

    def to_representation(self, value: Money) -> dict[str, str]:
        code = str(value.currency)
        return {"amount": format_amount(value.amount, code), "currency": code}


def _json_depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > MAX_JSON_DEPTH:
        return False
    if isinstance(value, Mapping):
        return all(_json_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_json_depth_ok(v, depth + 1) for v in value)
    return True


def plain_json(value: Any) -> Any:
    """JSON numbers arrive as Decimal (exact); opaque JSON stored as-is keeps them as JSON numbers."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    return value


@extend_schema_field({"type": "object", "additionalProperties": {}, "example": {"crm_id": "0015g00000XyZ"}})
class JSONObjectField(serializers.Field):
    """A free-form JSON object (metadata): nested up to a sane depth, numbers kept as numbers."""

    def to_internal_value(self, data: Any) -> dict:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError("Must be a JSON object.")
        if not _json_depth_ok(data):
            raise serializers.ValidationError(f"Nest at most {MAX_JSON_DEPTH} levels deep.")
        return plain_json(data)

    def to_representation(self, value: Any) -> Any:
        return value


class JSONValueField(serializers.Field):
    """JSON handed to a domain validator (charge properties, filters): numbers stay exact Decimals, which
    the validators read and normalise to decimal strings before anything is stored."""

    def __init__(self, *, exact_numbers: bool = True, **kwargs: Any) -> None:
        self.exact_numbers = exact_numbers
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not _json_depth_ok(data):
            raise serializers.ValidationError(f"Nest at most {MAX_JSON_DEPTH} levels deep.")
        return data if self.exact_numbers else plain_json(data)

    def to_representation(self, value: Any) -> Any:
        return value


def django_errors_under(exc: DjangoValidationError, prefix: str) -> serializers.ValidationError:
    """A domain ValidationError ({"tiers[1].up_to": [...]}) re-keyed under the request field it came from."""
    if hasattr(exc, "error_dict"):
        detail = {
            (f"{prefix}.{key}" if key not in ("__all__", "non_field_errors") else prefix): messages
            for key, messages in exc.message_dict.items()
        }
    else:
        detail = {prefix: exc.messages}
    return serializers.ValidationError(detail)


__all__ = [
    "CountryCodeField",
    "CurrencyCodeField",
    "DecimalStringField",
    "JSONObjectField",
    "JSONValueField",
    "MoneyField",
    "TimezoneNameField",
    "django_errors_under",
    "format_amount",
    "format_decimal",
    "parse_decimal",
]
