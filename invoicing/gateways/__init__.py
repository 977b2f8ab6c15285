"""Payment gateways: a small interface (base.py), the manual gateway and Stripe. `get_gateway(name)` returns
one configured from the current settings."""

from .base import (
    FAILED,
    PENDING,
    REQUIRES_ACTION,
    SUCCEEDED,
    ChargeResult,
    GatewayError,
    GatewayRetryableError,
    GatewayWebhookEvent,
    PaymentGateway,
    RefundResult,
    gateway_names,
    get_gateway,
    register_gateway,
)
from .manual import ManualGateway
from .stripe_gateway import StripeGateway

register_gateway("manual", ManualGateway)
register_gateway("stripe", StripeGateway.from_settings)

__all__ = [
    "FAILED",
    "PENDING",
    "REQUIRES_ACTION",
    "SUCCEEDED",
    "ChargeResult",
    "GatewayError",
    "GatewayRetryableError",
    "GatewayWebhookEvent",
    "ManualGateway",
    "PaymentGateway",
    "RefundResult",
    "StripeGateway",
    "gateway_names",
    "get_gateway",
    "register_gateway",
]
