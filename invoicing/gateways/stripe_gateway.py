"""Stripe, through the official client library.

Charges are off-session PaymentIntents confirmed at once with the customer's saved payment method; refunds
are Refunds of that PaymentIntent. Every call carries an idempotency key and the client never retries by
itself (`max_network_retries=0`): the Celery task retries with the same key, so a lost answer never
charges twice. Webhooks are verified with the endpoint's signing secret (`Stripe-Signature`).

Settings: STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, STRIPE_API_BASE (None: Stripe's API), STRIPE_TIMEOUT
(seconds), STRIPE_WEBHOOK_TOLERANCE (seconds a signature stays valid).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe
from django.conf import settings

from billing.errors import BillingError
from invoicing.pricing.rounding import currency_exponent

from .base import (
    FAILED,
    PENDING,
    REQUIRES_ACTION,
    SUCCEEDED,
    ChargeResult,
    GatewayError,
    GatewayRetryableError,
    GatewayWebhookEvent,
    RefundResult,
    header,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Stripe-Signature"
_CUSTOMER_TOKEN = re.compile(r"^cus_[A-Za-z0-9]{1,96}$")
_PAYMENT_METHOD_TOKEN = re.compile(r"^(pm|card)_[A-Za-z0-9_]{1,96}$")

# PaymentIntent statuses as Accrual sees them (automatic capture: requires_capture does not occur).
_INTENT_STATUS = {
    "succeeded": SUCCEEDED,
    "processing": PENDING,
    "requires_capture": PENDING,
    "requires_action": REQUIRES_ACTION,
    "requires_confirmation": REQUIRES_ACTION,
    "requires_payment_method": FAILED,
    "canceled": FAILED,
}
# The events Accrual acts on; the event type, not the object's status at sending time, says what happened.
_INTENT_EVENTS = {
    "payment_intent.succeeded": SUCCEEDED,
    "payment_intent.payment_failed": FAILED,
    "payment_intent.canceled": FAILED,
    "payment_intent.requires_action": REQUIRES_ACTION,
    "payment_intent.processing": PENDING,
}
_REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
_REFUND_STATUS = {
    "succeeded": SUCCEEDED,
    "pending": PENDING,
    "requires_action": PENDING,
    "failed": FAILED,
    "canceled": FAILED,
}


def to_minor_units(amount: Decimal, currency: str) -> int:
    """100.25 USD -> 10025; 500 JPY -> 500 (the ISO 4217 exponent, as Stripe counts)."""
    minor = amount.scaleb(currency_exponent(currency))
    if minor != minor.to_integral_value():
        raise BillingError(f"{amount} has more decimals than {currency} allows.", field="amount")
    return int(minor)


def from_minor_units(value: int, currency: str) -> Decimal:
    return Decimal(int(value)).scaleb(-currency_exponent(currency))


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


class StripeGateway:
    name = "stripe"
    charges_automatically = True

    def __init__(
        self,
        *,
        secret_key: str,
        webhook_secret: str,
        api_base: str | None = None,
        timeout: float = 30.0,
        webhook_tolerance: int = 300,
    ) -> None:
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self.api_base = api_base
        self.timeout = timeout
        self.webhook_tolerance = webhook_tolerance

    @classmethod
    def from_settings(cls) -> StripeGateway:
        return cls(
            secret_key=getattr(settings, "STRIPE_SECRET_KEY", "") or "",
            webhook_secret=getattr(settings, "STRIPE_WEBHOOK_SECRET", "") or "",
            api_base=getattr(settings, "STRIPE_API_BASE", None) or None,
            # A network timeout in seconds, not money: the HTTP client takes a float.
            timeout=float(getattr(settings, "STRIPE_TIMEOUT", 30.0)),
            webhook_tolerance=int(getattr(settings, "STRIPE_WEBHOOK_TOLERANCE", 300)),
        )

    def is_configured(self) -> bool:
        return bool(self.secret_key)

    def _client(self) -> stripe.StripeClient:
        if not self.secret_key:
            raise GatewayError("Stripe is not configured: set STRIPE_SECRET_KEY.")
        return stripe.StripeClient(
            self.secret_key,
            base_addresses={"api": self.api_base} if self.api_base else None,
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=self.timeout),
        )

    # --- tokens ---------------------------------------------------------------------------------------------

    def check_tokens(self, *, customer_token: str, payment_method_token: str) -> None:
        if not _CUSTOMER_TOKEN.match(customer_token or ""):
            raise BillingError("A Stripe customer id looks like cus_... (letters and digits).",
                               field="gateway_customer_id")
        if not _PAYMENT_METHOD_TOKEN.match(payment_method_token or ""):
            raise BillingError("A Stripe payment method id looks like pm_... (letters, digits, _).",
                               field="gateway_payment_method_id")

    # --- charges --------------------------------------------------------------------------------------------

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
    ) -> ChargeResult:
        params = {
            "amount": to_minor_units(amount, currency),
            "currency": str(currency).lower(),
            "customer": customer_token,
            "payment_method": payment_method_token,
            "confirm": True,
            "off_session": True,
            "description": description[:1000],
            "metadata": dict(metadata),
        }
        client = self._client()
        try:
            intent = client.v1.payment_intents.create(params=params, options={"idempotency_key": idempotency_key})
        except stripe.CardError as exc:
            return self._declined(exc)
        except (stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError) as exc:
            # Refused before anything was charged (a detached card, a revoked key): a definite failure.
            error = _error_body(exc)
            logger.warning("Stripe refused the charge %s: %s", idempotency_key, exc)
            return ChargeResult(
                status=FAILED, failure_code=str(error.get("code") or error.get("type") or "invalid_request"),
                failure_message=str(error.get("message") or exc)[:500],
            )
        except stripe.IdempotencyError as exc:
            raise GatewayError(f"Stripe refused the idempotency key {idempotency_key}: {exc}") from exc
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
            raise GatewayRetryableError(f"Stripe did not answer the charge {idempotency_key}: {exc}") from exc
        return self.intent_result(intent.to_dict())

    @staticmethod
    def intent_result(intent: Mapping[str, Any]) -> ChargeResult:
        """A PaymentIntent (from an answer or an event) as a charge result."""
        status = _INTENT_STATUS.get(str(intent.get("status")), PENDING)
        error = intent.get("last_payment_error") or {}
        code = message = ""
        if status == FAILED:
            code = str(error.get("decline_code") or error.get("code") or intent.get("status"))
            message = str(error.get("message") or "The payment was not completed.")
        return ChargeResult(
            status=status, reference=str(intent.get("id") or ""), failure_code=code[:100],
            failure_message=message[:500], gateway_time=_timestamp(intent.get("created")),
        )

    @staticmethod
    def _declined(exc: stripe.CardError) -> ChargeResult:
        error = _error_body(exc)
        intent = error.get("payment_intent") if isinstance(error.get("payment_intent"), dict) else {}
        code = str(error.get("code") or exc.code or "card_error")
        # Off-session, a card that needs 3-D Secure is "declined" with authentication_required: the customer
        # has to come back and confirm the payment; that is an action, not a refusal.
        status = REQUIRES_ACTION if code == "authentication_required" else FAILED
        return ChargeResult(
            status=status,
            reference=str(intent.get("id") or ""),
            failure_code=str(error.get("decline_code") or code)[:100],
            failure_message=str(error.get("message") or "The card was declined.")[:500],
            gateway_time=_timestamp(intent.get("created")),
        )

    # --- refunds --------------------------------------------------------------------------------------------

    def refund(
        self,
        *,
        charge_reference: str,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        params = {
            "payment_intent": charge_reference,
            "amount": to_minor_units(amount, currency),
            "metadata": dict(metadata),
        }
        client = self._client()
        try:
            refund = client.v1.refunds.create(params=params, options={"idempotency_key": idempotency_key})
        except (stripe.InvalidRequestError, stripe.CardError) as exc:
            error = _error_body(exc)
            return RefundResult(status=FAILED, failure_message=str(error.get("message") or exc)[:500])
        except stripe.IdempotencyError as exc:
            raise GatewayError(f"Stripe refused the idempotency key {idempotency_key}: {exc}") from exc
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
            raise GatewayRetryableError(f"Stripe did not answer the refund {idempotency_key}: {exc}") from exc
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise GatewayError(f"Stripe refused Accrual's API key: {exc}") from exc
        return self.refund_result(refund.to_dict())

    @staticmethod
    def refund_result(refund: Mapping[str, Any]) -> RefundResult:
        status = _REFUND_STATUS.get(str(refund.get("status")), PENDING)
        message = ""
        if status == FAILED:
            message = str(refund.get("failure_reason") or refund.get("status") or "The refund failed.")
        return RefundResult(status=status, reference=str(refund.get("id") or ""), failure_message=message[:500],
                            gateway_time=_timestamp(refund.get("created")))

    # --- webhooks -------------------------------------------------------------------------------------------

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> GatewayWebhookEvent:
        if not self.webhook_secret:
            raise GatewayError("Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET.")
        signature = header(headers, SIGNATURE_HEADER)
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(text, signature, self.webhook_secret, self.webhook_tolerance)
        except (UnicodeDecodeError, stripe.SignatureVerificationError):
            raise BillingError("The Stripe-Signature header does not match this payload (or is too old).",
                               field=SIGNATURE_HEADER) from None
        if "\x00" in text or "\\u0000" in text:
            raise BillingError("The webhook body contains NUL characters.", field="body")
        try:
            event = json.loads(text)
        except ValueError:
            raise BillingError("The webhook body is not JSON.", field="body") from None
        if not isinstance(event, dict) or event.get("object") != "event":
            raise BillingError("The webhook body is not a Stripe event.", field="body")
        data = event.get("data")
        data_object = data.get("object") if isinstance(data, dict) else None
        occurred_at = _timestamp(event.get("created"))
        event_id, event_type = event.get("id"), event.get("type")
        if not (isinstance(event_id, str) and 0 < len(event_id) <= 100):
            raise BillingError("The event has no valid id.", field="id")
        if not (isinstance(event_type, str) and 0 < len(event_type) <= 100):
            raise BillingError("The event has no valid type.", field="type")
        if occurred_at is None:
            raise BillingError("The event has no valid creation time.", field="created")
        if not isinstance(data_object, dict):
            raise BillingError("The event carries no object.", field="data.object")
        try:
            charge, refunds = self._interpret(event_type, data_object)
        except (TypeError, ValueError, AttributeError, ArithmeticError):
            raise BillingError(f"The {event_type} event's object is malformed.", field="data.object") from None
        return GatewayWebhookEvent(event_id=event_id, event_type=event_type, occurred_at=occurred_at,
                                   payload=event, charge=charge, refunds=refunds)

    def _interpret(self, event_type: str, obj: dict[str, Any]) -> tuple[ChargeResult | None, tuple[RefundResult, ...]]:
        if event_type in _INTENT_EVENTS:
            result = self.intent_result(obj)
            status = _INTENT_EVENTS[event_type]
            code, message = result.failure_code, result.failure_message
            if status == FAILED and not code:
                code, message = str(obj.get("status") or "failed"), "The payment was not completed."
            currency = str(obj.get("currency") or "").upper()
            metadata = obj.get("metadata") or {}
            charge = ChargeResult(
                status=status, reference=result.reference, failure_code=code, failure_message=message,
                gateway_time=result.gateway_time, currency=currency,
                amount=from_minor_units(obj["amount"], currency) if currency and "amount" in obj else None,
                local_id=str(metadata.get("accrual_payment_id") or ""),
            )
            return charge, ()
        if event_type in _REFUND_EVENTS:
            return None, (self._refund_from_event(obj, failed=event_type == "refund.failed"),)
        if event_type == "charge.refunded":
            listed = (obj.get("refunds") or {}).get("data") or []
            return None, tuple(self._refund_from_event(item) for item in listed if isinstance(item, dict))
        return None, ()

    def _refund_from_event(self, obj: dict[str, Any], *, failed: bool = False) -> RefundResult:
        result = self.refund_result(obj)
        metadata = obj.get("metadata") or {}
        status = FAILED if failed else result.status
        return RefundResult(
            status=status, reference=result.reference,
            failure_message=result.failure_message or ("The refund failed." if status == FAILED else ""),
            gateway_time=result.gateway_time, local_id=str(metadata.get("accrual_refund_id") or ""),
        )
