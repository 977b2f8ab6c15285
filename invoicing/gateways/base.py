"""The gateway interface: what Accrual asks of a payment gateway, and what it gets back.

A gateway holds the customer's card; Accrual keeps only its tokens (customer and payment method ids) and
asks it to charge or refund amounts, each under an idempotency key so that a retry never moves money twice.
Results are plain dataclasses; a gateway that cannot be reached raises `GatewayRetryableError` (try again
with the same key), a definite refusal comes back as a result with status `failed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from billing.errors import BillingError

SUCCEEDED = "succeeded"
PENDING = "pending"
REQUIRES_ACTION = "requires_action"
FAILED = "failed"
STATUSES = (SUCCEEDED, PENDING, REQUIRES_ACTION, FAILED)


class GatewayError(Exception):
    """The gateway call could not be completed (misconfiguration, an unexpected answer)."""


class GatewayRetryableError(GatewayError):
    """The gateway was not reached or did not answer: the outcome is unknown, retry with the same key."""


@dataclass(frozen=True)
class ChargeResult:
    status: str
    reference: str = ""  # the gateway's id of the charge (a PaymentIntent id)
    failure_code: str = ""
    failure_message: str = ""
    gateway_time: datetime | None = None  # when the gateway produced this state
    amount: Decimal | None = None  # what the gateway says was charged (events)
    currency: str = ""
    local_id: str = ""  # our payment's id, as the charge's metadata carries it (events)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Unknown charge status {self.status!r}.")


@dataclass(frozen=True)
class RefundResult:
    status: str
    reference: str = ""
    failure_message: str = ""
    gateway_time: datetime | None = None
    local_id: str = ""  # our refund's id, as the refund's metadata carries it (events)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Unknown refund status {self.status!r}.")


@dataclass(frozen=True)
class GatewayWebhookEvent:
    """A verified webhook delivery: the event's id, type and time, and what it says about a charge or about
    refunds (None / empty when it is an event Accrual does not act on)."""

    event_id: str
    event_type: str
    occurred_at: datetime
    payload: dict[str, Any] = field(repr=False)
    charge: ChargeResult | None = None
    refunds: tuple[RefundResult, ...] = ()


class PaymentGateway(Protocol):
    name: str
    charges_automatically: bool

    def charge(
        self,
        *,
        amount: Decimal,
        currency: str,
        customer_token: str,
        payment_method_token: str,
        idempotency_key: str,
        description: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult: ...

    def refund(
        self,
        *,
        charge_reference: str,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult: ...

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> GatewayWebhookEvent: ...

    def check_tokens(self, *, customer_token: str, payment_method_token: str) -> None: ...

    def is_configured(self) -> bool: ...


_REGISTRY: dict[str, Callable[[], PaymentGateway]] = {}


def register_gateway(name: str, factory: Callable[[], PaymentGateway]) -> None:
    _REGISTRY[name] = factory


def gateway_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_gateway(name: str) -> PaymentGateway:
    """The gateway called `name`, configured from the settings as they are now."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise BillingError(f"Unknown payment gateway {str(name)[:30]!r}.", field="gateway")
    return factory()


# 12 to 19 digits, optionally grouped by single spaces or dashes: the shape of a card number (PAN).
_PAN = re.compile(r"(?<!\d)(?:\d[ -]?){11,18}\d(?!\d)")


def looks_like_card_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    return bool(_PAN.search(str(value)))


def card_number_paths(data: object, prefix: str = "") -> list[str]:
    """Where in a request body something looks like a card number (keys and values, at any depth).
    The paths never contain the number itself, so they can be shown back."""
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            if looks_like_card_number(key):
                found.append(prefix or "non_field_errors")
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            found.extend(card_number_paths(value, name))
    elif isinstance(data, list | tuple):
        for index, value in enumerate(data):
            found.extend(card_number_paths(value, f"{prefix}[{index}]"))
    elif looks_like_card_number(data):
        found.append(prefix or "non_field_errors")
    return found


CARD_NUMBER_MESSAGE = (
    "This looks like a card number. Card numbers must never be sent to Accrual: save the card at the gateway "
    "and send its tokens (pm_... and cus_...) instead."
)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header, whatever the case of its name (Django's request.headers or a plain dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None
