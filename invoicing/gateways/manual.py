"""The manual gateway: money moved by people (bank transfers, checks, cash). It charges nothing by itself and
receives no webhooks; a refund through it is paid by hand, so it is done as soon as it is recorded."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from billing.errors import BillingError

from .base import SUCCEEDED, ChargeResult, GatewayWebhookEvent, RefundResult


class ManualGateway:
    name = "manual"
    charges_automatically = False

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
        raise BillingError("The manual gateway charges nothing automatically: record the payment when it arrives.",
                           field="gateway")

    def refund(
        self,
        *,
        charge_reference: str,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        return RefundResult(status=SUCCEEDED)

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> GatewayWebhookEvent:
        raise BillingError("The manual gateway receives no webhooks.", field="gateway")

    def is_configured(self) -> bool:
        return True

    def check_tokens(self, *, customer_token: str, payment_method_token: str) -> None:
        raise BillingError("The manual gateway holds no payment methods.", field="gateway")
