"""Money through payment gateways: charging a customer's saved payment method for an invoice, applying the
gateway's webhooks, sending gateway refunds, and the saved payment methods themselves (tokens only).

A charge is recorded first (a pending Payment with its idempotency key, committed under the customer lock),
then sent to the gateway outside any transaction, then its outcome is applied through the payments service.
A lost answer leaves the payment pending and raises `GatewayRetryableError`: the retry finds the same
payment and asks the gateway again with the same key, which answers with the same charge.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime

from django.db import transaction

from billing.actors import Actor
from billing.errors import BillingError
from contracts.selectors import customer_today
from customers.models import Customer
from invoicing.gateways import (
    FAILED,
    PENDING,
    REQUIRES_ACTION,
    SUCCEEDED,
    ChargeResult,
    GatewayError,
    GatewayRetryableError,
    RefundResult,
    gateway_names,
    get_gateway,
)
from invoicing.gateways.base import CARD_NUMBER_MESSAGE, looks_like_card_number
from invoicing.models import GatewayEvent, Invoice, Payment, PaymentMethod, Refund
from invoicing.pricing.rounding import round_money
from invoicing.services.payments import (
    lock_customer,
    mark_payment_failed,
    mark_payment_succeeded,
    mark_refund_failed,
    mark_refund_succeeded,
    record_payment,
    record_payment_event,
)

logger = logging.getLogger(__name__)

INITIAL = "initial"
_ATTEMPT = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_BRAND = re.compile(r"^[A-Za-z0-9 _-]{0,30}$")
_IN_FLIGHT = (Payment.Status.PENDING, Payment.Status.REQUIRES_ACTION)


# --- keys ---------------------------------------------------------------------------------------------------


def charge_idempotency_key(gateway: str, invoice_number: str, attempt: str = INITIAL) -> str:
    """Our payment's key: `stripe:INV-000042`, `stripe:INV-000042:retry:2` for a dunning retry."""
    return f"{gateway}:{gateway_charge_key(invoice_number, attempt)}"


def gateway_charge_key(invoice_number: str, attempt: str = INITIAL) -> str:
    """The key sent to the gateway: the invoice number itself for the first charge."""
    return invoice_number if attempt == INITIAL else f"{invoice_number}:retry:{attempt}"


def refund_idempotency_key(refund: Refund) -> str:
    return f"refund:{refund.pk}"


# --- payment methods ----------------------------------------------------------------------------------------


def default_payment_method(customer: Customer | int) -> PaymentMethod | None:
    customer_id = customer if isinstance(customer, int) else customer.pk
    return PaymentMethod.objects.filter(customer_id=customer_id, is_default=True, is_active=True).first()


def save_payment_method(
    customer: Customer,
    *,
    gateway: str,
    gateway_customer_id: str,
    gateway_payment_method_id: str,
    brand: str = "",
    last4: str = "",
    exp_month: int | None = None,
    exp_year: int | None = None,
    make_default: bool = True,
    actor: Actor,
    now: datetime,
) -> PaymentMethod:
    """Save a gateway's tokens for a customer's card (never the card itself). Saving a token again updates it;
    the default method is the one charged automatically (the first saved becomes it anyway)."""
    texts = {"gateway": gateway, "gateway_customer_id": gateway_customer_id,
             "gateway_payment_method_id": gateway_payment_method_id, "brand": brand, "last4": last4}
    for name, value in texts.items():
        if looks_like_card_number(value):
            raise BillingError(CARD_NUMBER_MESSAGE, field=name)
    gateway_customer_id, gateway_payment_method_id = gateway_customer_id.strip(), gateway_payment_method_id.strip()
    get_gateway(gateway).check_tokens(customer_token=gateway_customer_id,
                                      payment_method_token=gateway_payment_method_id)
    brand = brand.strip()
    if not _BRAND.match(brand):
        raise BillingError("A brand is up to 30 letters, digits, spaces, '-' or '_'.", field="brand")
    if last4 and not re.fullmatch(r"\d{4}", last4):
        raise BillingError("last4 is the last four digits of the card, nothing more.", field="last4")
    if (exp_month is None) != (exp_year is None):
        raise BillingError("Give both the expiry month and year, or neither.", field="exp_month")
    if exp_month is not None and exp_year is not None:
        if not 1 <= exp_month <= 12:
            raise BillingError("The expiry month is 1 to 12.", field="exp_month")
        if not 2000 <= exp_year <= 2100:
            raise BillingError("The expiry year is a four-digit year.", field="exp_year")
    with transaction.atomic():
        customer = lock_customer(customer)
        if exp_month is not None and exp_year is not None:
            today = customer_today(customer, now)
            if (exp_year, exp_month) < (today.year, today.month):
                raise BillingError(f"The card expired in {exp_month:02d}/{exp_year}.", field="exp_year")
        method = (
            PaymentMethod.objects.select_for_update()
            .filter(gateway=gateway, gateway_payment_method_id=gateway_payment_method_id)
            .first()
        )
        if method is not None and method.customer_id != customer.pk:
            raise BillingError("This payment method is saved for another customer.",
                               field="gateway_payment_method_id")
        others = PaymentMethod.objects.select_for_update().filter(customer=customer, is_default=True, is_active=True)
        if method is not None:
            others = others.exclude(pk=method.pk)
        current_defaults = list(others)
        is_default = make_default or not current_defaults
        if is_default:
            for other in current_defaults:  # one default per customer (a constraint): unset the old one first
                other.is_default = False
                other._change_reason = actor.label
                other.save(update_fields=["is_default", "updated_at"])
        if method is None:
            method = PaymentMethod(customer=customer, gateway=gateway,
                                   gateway_payment_method_id=gateway_payment_method_id, created_by=actor.label)
        method.gateway_customer_id = gateway_customer_id
        method.brand, method.last4, method.exp_month, method.exp_year = brand, last4, exp_month, exp_year
        method.is_default, method.is_active = is_default, True
        method._history_user = actor.user
        method._change_reason = actor.label
        method.save()
        record_payment_event(customer, "payment_method.saved", actor, now, payment_method=method.pk,
                             gateway=gateway, brand=brand, last4=last4, is_default=is_default)
        return method


def deactivate_payment_method(payment_method: PaymentMethod | int, *, actor: Actor, now: datetime) -> PaymentMethod:
    """Stop using a saved method (kept for the payments made with it); no other method becomes the default
    by itself: a customer is only charged automatically on a method chosen as default."""
    with transaction.atomic():
        pk = payment_method if isinstance(payment_method, int) else payment_method.pk
        customer = lock_customer(PaymentMethod.objects.values_list("customer_id", flat=True).get(pk=pk))
        method = PaymentMethod.objects.select_for_update().get(pk=pk)
        if not method.is_active:
            return method
        method.is_active = False
        method.is_default = False
        method._history_user = actor.user
        method._change_reason = actor.label
        method.save(update_fields=["is_active", "is_default", "updated_at"])
        record_payment_event(customer, "payment_method.deactivated", actor, now, payment_method=method.pk)
        return method


# --- charging an invoice ------------------------------------------------------------------------------------


def charge_invoice(invoice: Invoice | int, *, actor: Actor, now: datetime, attempt: str = INITIAL) -> Payment | None:
    """Charge what a finalized invoice owes to the customer's default payment method.

    None when there is no such method (or it is the manual gateway's) or nothing is due. A charge of the
    invoice still in flight (pending or awaiting the customer) is returned instead of charging again.
    Run it outside a transaction: the pending payment must be committed before the gateway is called."""
    attempt = str(attempt)
    if not _ATTEMPT.match(attempt):
        raise BillingError("An attempt is up to 40 letters, digits, '.', '_' or '-'.", field="attempt")
    pk = invoice if isinstance(invoice, int) else invoice.pk
    with transaction.atomic():
        customer = lock_customer(Invoice.objects.values_list("customer_id", flat=True).get(pk=pk))
        invoice = Invoice.objects.select_for_update(of=("self",)).get(pk=pk)
        if not invoice.number:
            return None
        keys = [charge_idempotency_key(name, invoice.number, attempt) for name in gateway_names()]
        payment = Payment.objects.filter(idempotency_key__in=keys).select_related("payment_method").first()
        if payment is not None and (payment.status != Payment.Status.PENDING or payment.gateway_reference):
            return payment  # this attempt was made and answered: its outcome stands (or arrives by webhook)
        if payment is None:
            if invoice.status != Invoice.Status.FINALIZED or invoice.amount_due <= 0:
                return None
            method = default_payment_method(customer)
            if method is None:
                return None
            gateway = get_gateway(method.gateway)
            if not gateway.charges_automatically:
                return None
            if not gateway.is_configured():
                raise GatewayError(f"The {method.gateway} gateway is not configured: invoice {invoice.number} "
                                   "is not charged.")
            in_flight = Payment.objects.filter(invoice=invoice, status__in=_IN_FLIGHT).first()
            if in_flight is not None:
                return in_flight
            payment = record_payment(
                customer=customer, amount=invoice.amount_due, currency=str(invoice.currency),
                method=Payment.Method.CARD, received_on=customer_today(customer, now), actor=actor, now=now,
                reference=invoice.number, status=Payment.Status.PENDING, gateway=method.gateway, invoice=invoice,
                payment_method=method, idempotency_key=charge_idempotency_key(method.gateway, invoice.number, attempt),
                memo=f"Automatic charge ({attempt}) of invoice {invoice.number}",
            )
            payment.payment_method = method
        # A pending payment without a gateway reference: its call was lost; the same call is made again.
        method = payment.payment_method
        gateway = get_gateway(payment.gateway)
    if method is None:
        raise GatewayError(f"{payment} has no payment method to charge.")
    try:
        result = gateway.charge(
            amount=payment.amount, currency=str(payment.currency), customer_token=method.gateway_customer_id,
            payment_method_token=method.gateway_payment_method_id,
            idempotency_key=gateway_charge_key(invoice.number, attempt),
            description=f"Invoice {invoice.number}",
            metadata={"accrual_payment_id": str(payment.pk), "accrual_invoice": invoice.number,
                      "accrual_customer": customer.external_id},
        )
    except GatewayRetryableError as exc:
        logger.warning("Charge of invoice %s (%s) got no answer; it will be retried: %s", invoice.number,
                       attempt, exc)
        raise
    return apply_charge_result(payment, result, actor=actor, now=now)


def _state_time(answered_at: datetime | None, applied_at: datetime | None, now: datetime) -> datetime:
    """The gateway state's time only moves forward: an answer older than an event already applied does not
    rewind it."""
    when = answered_at or now
    return max(when, applied_at) if applied_at else when


def apply_charge_result(payment: Payment | int, result: ChargeResult, *, actor: Actor, now: datetime) -> Payment:
    """Record what the gateway answered about a charge (also used for webhook events)."""
    with transaction.atomic():
        pk = payment if isinstance(payment, int) else payment.pk
        lock_customer(Payment.objects.values_list("customer_id", flat=True).get(pk=pk))
        payment = Payment.objects.select_for_update().get(pk=pk)
        if result.reference and not payment.gateway_reference:
            payment.gateway_reference = result.reference
            payment.save(update_fields=["gateway_reference", "updated_at"])
        when = _state_time(result.gateway_time, payment.gateway_updated_at, now)
        if result.status == SUCCEEDED:
            return mark_payment_succeeded(payment, actor=actor, now=now, gateway_time=when)
        if result.status == FAILED:
            return mark_payment_failed(payment, code=result.failure_code or "failed",
                                       message=result.failure_message or "The payment failed.", actor=actor, now=now,
                                       gateway_time=when)
        if result.status == REQUIRES_ACTION and payment.status == Payment.Status.PENDING:
            payment.status = Payment.Status.REQUIRES_ACTION
            payment.failure_code = result.failure_code[:100]
            payment.failure_message = (result.failure_message or "The customer must confirm the payment.")[:500]
            payment.gateway_updated_at = when
            payment.save(update_fields=["status", "failure_code", "failure_message", "gateway_updated_at",
                                        "updated_at"])
            record_payment_event(payment.customer_id, "payment.requires_action", actor, now, payment=payment,
                                 reference=payment.gateway_reference)
        return payment


# --- refunds ------------------------------------------------------------------------------------------------


def send_refund(refund: Refund | int, *, actor: Actor, now: datetime) -> Refund:
    """Send a pending refund through its payment's gateway (once: the key is the refund's id). A refund the
    gateway accepted but has not paid yet stays pending until its webhook."""
    pk = refund if isinstance(refund, int) else refund.pk
    refund = Refund.objects.select_related("payment").get(pk=pk)
    if refund.status != Refund.Status.PENDING or refund.gateway_reference:
        return refund
    gateway = get_gateway(refund.gateway)
    payment = refund.payment
    if refund.gateway != "manual" and (payment is None or not payment.gateway_reference):
        return mark_refund_failed(refund, message="No gateway charge to refund through: pay it back by hand.",
                                  actor=actor, now=now)
    if not gateway.is_configured():
        raise GatewayError(f"The {refund.gateway} gateway is not configured: refund #{refund.pk} is not sent.")
    result = gateway.refund(
        charge_reference=payment.gateway_reference if payment is not None else "",
        amount=refund.amount, currency=str(refund.currency), idempotency_key=refund_idempotency_key(refund),
        metadata={"accrual_refund_id": str(refund.pk)},
    )
    return apply_refund_result(refund, result, actor=actor, now=now)


def apply_refund_result(refund: Refund | int, result: RefundResult, *, actor: Actor, now: datetime) -> Refund:
    """Record what the gateway answered about a refund (also used for webhook events)."""
    with transaction.atomic():
        pk = refund if isinstance(refund, int) else refund.pk
        lock_customer(Refund.objects.values_list("customer_id", flat=True).get(pk=pk))
        refund = Refund.objects.select_for_update().get(pk=pk)
        if result.reference and not refund.gateway_reference:
            refund.gateway_reference = result.reference
            refund.save(update_fields=["gateway_reference", "updated_at"])
        when = _state_time(result.gateway_time, refund.gateway_updated_at, now)
        if result.status == SUCCEEDED:
            return mark_refund_succeeded(refund, actor=actor, now=now, gateway_reference=result.reference,
                                         gateway_time=when)
        if result.status == FAILED:
            return mark_refund_failed(refund, message=result.failure_message or "The refund failed.", actor=actor,
                                      now=now, gateway_time=when)
        return refund


# --- webhooks -----------------------------------------------------------------------------------------------


def handle_webhook(gateway_name: str, payload: bytes, headers: Mapping[str, str], *, now: datetime) -> GatewayEvent:
    """Verify, store once and apply a gateway's webhook delivery. A delivery seen before is acknowledged and
    changes nothing (`duplicate` is set on the returned event); an event older than the last one applied to
    its payment or refund is stored and ignored."""
    gateway = get_gateway(gateway_name)
    event = gateway.parse_webhook(payload, headers)
    actor = Actor.system(f"webhook:{gateway_name}")
    with transaction.atomic():
        # The insert is the lock: a concurrent delivery of the same event waits here, then finds it processed.
        GatewayEvent.objects.bulk_create(
            [GatewayEvent(gateway=gateway_name, event_id=event.event_id, event_type=event.event_type,
                          occurred_at=event.occurred_at, received_at=now, payload=event.payload)],
            ignore_conflicts=True,
        )
        stored = GatewayEvent.objects.select_for_update().get(gateway=gateway_name, event_id=event.event_id)
        if stored.processed_at is not None:
            stored.duplicate = True  # type: ignore[attr-defined]
            return stored
        outcomes: list[str] = []
        if event.charge is not None:
            outcomes.append(_apply_charge_event(gateway_name, event.charge, event.occurred_at, actor=actor, now=now))
        for refund_result in event.refunds:
            outcomes.append(_apply_refund_event(gateway_name, refund_result, event.occurred_at, actor=actor, now=now))
        stored.processed_at = now
        stored.outcome = ("; ".join(outcomes) or "ignored: not an event Accrual acts on")[:300]
        stored.save(update_fields=["processed_at", "outcome"])
        stored.duplicate = False  # type: ignore[attr-defined]
        return stored


def _find(model: type, gateway_name: str, reference: str, local_id: str) -> Payment | Refund | None:
    found = None
    if reference:
        found = model.objects.filter(gateway=gateway_name, gateway_reference=reference).first()
    if found is None and local_id.isdigit() and len(local_id) < 19:
        found = model.objects.filter(gateway=gateway_name, pk=int(local_id)).first()
    return found


def _apply_charge_event(gateway_name: str, result: ChargeResult, occurred_at: datetime, *, actor: Actor,
                        now: datetime) -> str:
    payment = _find(Payment, gateway_name, result.reference, result.local_id)
    if payment is None:
        return f"ignored: no payment for {result.reference or 'the charge'}"
    with transaction.atomic():
        lock_customer(payment.customer_id)
        payment = Payment.objects.select_for_update().get(pk=payment.pk)
        if payment.gateway_reference and result.reference and payment.gateway_reference != result.reference:
            return f"ignored: payment #{payment.pk} is charge {payment.gateway_reference}"
        if result.amount is not None and (result.amount != payment.amount or result.currency != str(payment.currency)):
            logger.warning("Gateway event for payment #%s is for %s %s, not %s %s", payment.pk, result.amount,
                           result.currency, payment.amount.normalize(), payment.currency)
            return f"ignored: payment #{payment.pk} is {round_money(payment.amount, str(payment.currency))} " \
                f"{payment.currency}"
        if payment.gateway_updated_at and occurred_at < payment.gateway_updated_at:
            return f"ignored: older than the last update of payment #{payment.pk}"
        before = payment.status
        event_result = ChargeResult(
            status=result.status, reference=result.reference, failure_code=result.failure_code,
            failure_message=result.failure_message, gateway_time=occurred_at,
        )
        payment = apply_charge_result(payment, event_result, actor=actor, now=now)
        return f"payment #{payment.pk}: {before} -> {payment.status}"


def _apply_refund_event(gateway_name: str, result: RefundResult, occurred_at: datetime, *, actor: Actor,
                        now: datetime) -> str:
    refund = _find(Refund, gateway_name, result.reference, result.local_id)
    if refund is None:
        return f"ignored: no refund for {result.reference or 'the refund'}"
    with transaction.atomic():
        lock_customer(refund.customer_id)
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        if refund.gateway_reference and result.reference and refund.gateway_reference != result.reference:
            return f"ignored: refund #{refund.pk} is {refund.gateway_reference}"
        if refund.gateway_updated_at and occurred_at < refund.gateway_updated_at:
            return f"ignored: older than the last update of refund #{refund.pk}"
        if result.status == PENDING:
            return f"refund #{refund.pk}: still {refund.status}"
        before = refund.status
        event_result = RefundResult(status=result.status, reference=result.reference,
                                    failure_message=result.failure_message, gateway_time=occurred_at)
        refund = apply_refund_result(refund, event_result, actor=actor, now=now)
        return f"refund #{refund.pk}: {before} -> {refund.status}"
