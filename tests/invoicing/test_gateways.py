"""Card payments through Stripe: the real `stripe` client against a local stand-in of Stripe's API.

Charging at finalization, declines, customer authentication, a lost answer retried under the same key (one
PaymentIntent), webhooks (verified, applied once, reordered deliveries), and refunds through the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from billing.celery import app as celery_app
from billing.errors import BillingError
from invoicing.gateways import GatewayError, GatewayRetryableError, get_gateway
from invoicing.gateways.base import card_number_paths, looks_like_card_number
from invoicing.gateways.stripe_gateway import from_minor_units, to_minor_units
from invoicing.models import (
    Allocation,
    CustomerBalanceTransaction,
    GatewayEvent,
    Invoice,
    Payment,
    PaymentEvent,
    PaymentMethod,
    Refund,
)
from invoicing.services.charges import (
    charge_invoice,
    deactivate_payment_method,
    handle_webhook,
    save_payment_method,
    send_refund,
)
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.payments import credit_balance, credit_customer_balance, lock_customer, refund_payment
from invoicing.tasks import charge_invoice_task
from tests.factories import BillingEntityFactory, CustomerFactory
from tests.invoicing.stripe_standin import (
    WEBHOOK_SECRET,
    StripeStandIn,
    configure,
    running_standin,
    signed_event,
)

pytestmark = pytest.mark.django_db

D = Decimal
PI_PATH = "/v1/payment_intents"


@pytest.fixture
def stripe_api(settings) -> Iterator[StripeStandIn]:
    with running_standin() as standin:
        configure(settings, standin)
        yield standin


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Tasks run in-process when enqueued (the test database is not visible to a worker)."""
    saved = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture
def customer():
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0, default_payment_terms_days=30)
    return CustomerFactory(billing_entity=entity, timezone="UTC")


def save_card(customer, token: str, actor, now, *, default: bool = True) -> PaymentMethod:
    return save_payment_method(customer, gateway="stripe", gateway_customer_id="cus_Standin42",
                               gateway_payment_method_id=token, brand="visa", last4="4242", exp_month=12,
                               exp_year=2030, make_default=default, actor=actor, now=now)


def invoice_for(customer, actor, now, amount: str = "120.00") -> Invoice:
    return create_one_off_invoice(customer, [ManualLine(description="Implementation", unit_price=D(amount))],
                                  actor=actor, now=now, finalize=True)


def reloaded(invoice: Invoice) -> Invoice:
    return Invoice.objects.get(pk=invoice.pk)


def webhook(event_type: str, obj: dict, *, now, created: int | None = None, event_id: str | None = None):
    payload, headers = signed_event(event_type, obj, created=created, event_id=event_id)
    return handle_webhook("stripe", payload, headers, now=now)


# --- charging -----------------------------------------------------------------------------------------------


def test_finalizing_charges_the_saved_card_and_the_invoice_is_paid(
    stripe_api, eager_celery, customer, actor, now, django_capture_on_commit_callbacks
):
    save_card(customer, "pm_card_visa", actor, now)
    with django_capture_on_commit_callbacks(execute=True):
        invoice = invoice_for(customer, actor, now, "120.00")
    invoice = reloaded(invoice)
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (Invoice.Status.PAID, D("120.00"), D("0.00"))
    payment = Payment.objects.get(invoice=invoice)
    [intent] = stripe_api.intents.values()
    assert (payment.status, payment.amount, payment.method, payment.gateway) == (
        Payment.Status.SUCCEEDED, D("120.00"), Payment.Method.CARD, "stripe")
    assert payment.idempotency_key == f"stripe:{invoice.number}"
    assert payment.gateway_reference == intent["id"]
    [call] = stripe_api.calls_to("POST", PI_PATH)
    assert call.idempotency_key == invoice.number  # the invoice number itself, as Stripe's key
    assert call.params["amount"] == "12000" and call.params["currency"] == "usd"
    assert (call.params["customer"], call.params["payment_method"]) == ("cus_Standin42", "pm_card_visa")
    assert call.params["off_session"] == call.params["confirm"] == "true"
    assert call.params["metadata"] == {"accrual_payment_id": str(payment.pk), "accrual_invoice": invoice.number,
                                       "accrual_customer": customer.external_id}
    assert list(Allocation.objects.filter(payment=payment).values_list("kind", "amount")) == [("payment", D("120.00"))]


def test_no_charge_without_a_default_card_when_credit_pays_or_when_auto_charge_is_off(
    stripe_api, eager_celery, customer, actor, now, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        unpaid = invoice_for(customer, actor, now, "80.00")  # no saved card
    assert reloaded(unpaid).amount_due == D("80.00")

    save_card(customer, "pm_card_visa", actor, now)
    with django_capture_on_commit_callbacks(execute=True):
        credit_customer_balance(lock_customer(customer), "USD", D("50.00"),
                                kind=CustomerBalanceTransaction.Kind.OVERPAYMENT, actor=actor, now=now)
        covered = invoice_for(customer, actor, now, "50.00")  # the credit balance pays it all
    assert reloaded(covered).status == Invoice.Status.PAID

    settings.ACCRUAL_AUTO_CHARGE = False
    with django_capture_on_commit_callbacks(execute=True):
        off = invoice_for(customer, actor, now, "30.00")
    assert reloaded(off).status == Invoice.Status.FINALIZED
    assert stripe_api.calls == [] and not Payment.objects.exists()


def test_a_declined_card_fails_the_payment_and_a_later_retry_uses_its_own_key(stripe_api, customer, actor, now):
    save_card(customer, "pm_card_chargeDeclined", actor, now)
    invoice = invoice_for(customer, actor, now, "120.00")

    payment = charge_invoice(invoice, actor=actor, now=now)
    assert (payment.status, payment.failure_code, payment.failure_message) == (
        Payment.Status.FAILED, "generic_decline", "Your card was declined.")
    assert payment.gateway_reference == next(iter(stripe_api.intents))
    invoice = reloaded(invoice)
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (
        Invoice.Status.FINALIZED, D("0.00"), D("120.00"))
    # The same attempt again is the same payment: Stripe is not called twice.
    assert charge_invoice(invoice, actor=actor, now=now) == payment
    assert len(stripe_api.calls_to("POST", PI_PATH)) == 1

    # The customer saves a working card; the dunning retry charges under a key of its own.
    save_card(customer, "pm_card_visa", actor, now)
    retry = charge_invoice(invoice, actor=actor, now=now, attempt="dunning-7")
    assert retry.idempotency_key == f"stripe:{invoice.number}:retry:dunning-7"
    assert stripe_api.calls_to("POST", PI_PATH)[-1].idempotency_key == f"{invoice.number}:retry:dunning-7"
    assert retry.status == Payment.Status.SUCCEEDED
    assert reloaded(invoice).status == Invoice.Status.PAID


def test_requires_action_waits_for_the_webhook_that_confirms_it(stripe_api, customer, actor, now):
    save_card(customer, "pm_card_authenticationRequired", actor, now)
    invoice = invoice_for(customer, actor, now, "75.50")
    payment = charge_invoice(invoice, actor=actor, now=now)
    [intent_id] = stripe_api.intents
    assert (payment.status, payment.gateway_reference) == (Payment.Status.REQUIRES_ACTION, intent_id)
    assert reloaded(invoice).amount_due == D("75.50")
    # While the customer has not acted, dunning's retry does not charge a second time.
    assert charge_invoice(invoice, actor=actor, now=now, attempt="dunning-1") == payment
    assert len(stripe_api.intents) == 1

    # The customer authenticates; Stripe says so by webhook.
    obj = stripe_api.intent_event_object(intent_id, status="succeeded", amount_received=7550)
    event = webhook("payment_intent.succeeded", obj, now=now, created=int(time.time()) + 5)
    assert event.outcome == f"payment #{payment.pk}: requires_action -> succeeded"
    payment.refresh_from_db()
    invoice = reloaded(invoice)
    assert payment.status == Payment.Status.SUCCEEDED
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, D("75.50"))


def test_a_lost_answer_is_retried_with_the_same_key_and_charges_once(stripe_api, customer, actor, now):
    save_card(customer, "pm_network_error", actor, now)
    invoice = invoice_for(customer, actor, now, "120.00")
    with pytest.raises(GatewayRetryableError):
        charge_invoice(invoice, actor=actor, now=now)
    payment = Payment.objects.get(invoice=invoice)
    assert (payment.status, payment.gateway_reference) == (Payment.Status.PENDING, "")
    assert reloaded(invoice).amount_due == D("120.00")
    assert len(stripe_api.intents) == 1  # Stripe did charge: only its answer was lost

    # The task's retry asks again with the same key and gets the same PaymentIntent back.
    result = charge_invoice_task.apply(args=[invoice.pk])
    assert result.get() == f"payment {payment.pk} succeeded"
    calls = stripe_api.calls_to("POST", PI_PATH)
    assert [c.idempotency_key for c in calls] == [invoice.number, invoice.number]
    assert len(stripe_api.intents) == 1
    assert Payment.objects.filter(invoice=invoice).count() == 1
    invoice = reloaded(invoice)
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, D("120.00"))


def test_the_task_retries_by_itself_after_a_lost_answer(stripe_api, customer, actor, now):
    save_card(customer, "pm_network_error", actor, now)
    invoice = invoice_for(customer, actor, now, "64.00")
    result = charge_invoice_task.apply(args=[invoice.pk])  # first try dropped, the retry replays
    payment = Payment.objects.get(invoice=invoice)
    assert result.get() == f"payment {payment.pk} succeeded"
    assert len(stripe_api.calls_to("POST", PI_PATH)) == 2 and len(stripe_api.intents) == 1
    assert reloaded(invoice).status == Invoice.Status.PAID


def test_a_webhook_can_settle_a_payment_whose_answer_was_lost(stripe_api, customer, actor, now):
    save_card(customer, "pm_network_error", actor, now)
    invoice = invoice_for(customer, actor, now, "120.00")
    with pytest.raises(GatewayRetryableError):
        charge_invoice(invoice, actor=actor, now=now)
    payment = Payment.objects.get(invoice=invoice)
    [intent_id] = stripe_api.intents
    # The webhook comes first; the payment is found by the id in the PaymentIntent's metadata.
    webhook("payment_intent.succeeded", stripe_api.intent_event_object(intent_id), now=now)
    payment.refresh_from_db()
    assert (payment.status, payment.gateway_reference) == (Payment.Status.SUCCEEDED, intent_id)
    assert charge_invoice(invoice, actor=actor, now=now) == payment  # the retry finds it settled: no call
    assert len(stripe_api.calls_to("POST", PI_PATH)) == 1
    assert reloaded(invoice).amount_paid == D("120.00")


def test_a_charge_in_yen_is_sent_in_whole_yen(stripe_api, actor, now):
    entity = BillingEntityFactory(default_currency="JPY", timezone="Asia/Tokyo", invoice_grace_days=0)
    customer = CustomerFactory(billing_entity=entity, currency="JPY", timezone="Asia/Tokyo")
    save_card(customer, "pm_card_visa", actor, now)
    invoice = invoice_for(customer, actor, now, "5000")
    assert charge_invoice(invoice, actor=actor, now=now).status == Payment.Status.SUCCEEDED
    [call] = stripe_api.calls_to("POST", PI_PATH)
    assert (call.params["amount"], call.params["currency"]) == ("5000", "jpy")


def test_an_unconfigured_gateway_charges_nothing(settings, customer, actor, now):
    settings.STRIPE_SECRET_KEY = ""
    save_card(customer, "pm_card_visa", actor, now)
    invoice = invoice_for(customer, actor, now)
    with pytest.raises(GatewayError, match="not configured"):
        charge_invoice(invoice, actor=actor, now=now)
    assert not Payment.objects.exists()


@given(st.sampled_from(["USD", "JPY", "KWD", "EUR"]), st.integers(min_value=1, max_value=10**12))
def test_minor_units_round_trip(currency, minor):
    assert to_minor_units(from_minor_units(minor, currency), currency) == minor


def test_more_decimals_than_the_currency_has_are_refused():
    with pytest.raises(BillingError, match="more decimals"):
        to_minor_units(D("10.005"), "USD")


# --- webhooks -----------------------------------------------------------------------------------------------


@pytest.fixture
def awaiting(stripe_api, customer, actor, now):
    """An invoice whose card payment awaits the customer's authentication."""
    save_card(customer, "pm_card_authenticationRequired", actor, now)
    invoice = invoice_for(customer, actor, now, "120.00")
    payment = charge_invoice(invoice, actor=actor, now=now)
    return invoice, payment, payment.gateway_reference


def test_a_duplicate_delivery_is_acknowledged_and_applied_once(stripe_api, awaiting, now):
    invoice, payment, intent_id = awaiting
    obj = stripe_api.intent_event_object(intent_id, status="succeeded", amount_received=12000)
    payload, headers = signed_event("payment_intent.succeeded", obj, event_id="evt_once",
                                    created=int(time.time()) + 1)
    first = handle_webhook("stripe", payload, headers, now=now)
    again = handle_webhook("stripe", payload, headers, now=now + timedelta(minutes=5))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.pk == first.pk and again.processed_at == now
    assert GatewayEvent.objects.filter(event_id="evt_once").count() == 1
    assert list(Allocation.objects.filter(payment=payment).values_list("amount", flat=True)) == [D("120.00")]
    assert PaymentEvent.objects.filter(payment=payment, action="payment.succeeded").count() == 1
    assert reloaded(invoice).amount_paid == D("120.00")


def test_a_late_failure_after_success_changes_nothing(stripe_api, awaiting, now):
    invoice, payment, intent_id = awaiting
    base = int(time.time()) + 10
    succeeded = stripe_api.intent_event_object(intent_id, status="succeeded", amount_received=12000)
    failed = dict(succeeded, status="requires_payment_method",
                  last_payment_error={"code": "card_declined", "message": "Your card was declined."})
    webhook("payment_intent.succeeded", succeeded, now=now, created=base + 20)
    late = webhook("payment_intent.payment_failed", failed, now=now, created=base + 10)
    stale = webhook("payment_intent.requires_action", dict(succeeded, status="requires_action"), now=now,
                    created=base)
    assert late.outcome == stale.outcome == f"ignored: older than the last update of payment #{payment.pk}"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert payment.gateway_updated_at == datetime.fromtimestamp(base + 20, tz=UTC)
    assert reloaded(invoice).status == Invoice.Status.PAID


def test_a_failure_then_a_later_success_ends_succeeded(stripe_api, awaiting, now):
    invoice, payment, intent_id = awaiting
    base = int(time.time()) + 10
    obj = stripe_api.intent_event_object(intent_id)
    failed = dict(obj, status="requires_payment_method",
                  last_payment_error={"code": "card_declined", "decline_code": "insufficient_funds",
                                      "message": "Your card has insufficient funds."})
    webhook("payment_intent.payment_failed", failed, now=now, created=base)
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == (Payment.Status.FAILED, "insufficient_funds")
    assert reloaded(invoice).amount_due == D("120.00")
    webhook("payment_intent.succeeded", dict(obj, status="succeeded", amount_received=12000), now=now,
            created=base + 30)
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == (Payment.Status.SUCCEEDED, "")
    assert reloaded(invoice).status == Invoice.Status.PAID


def test_bad_signatures_are_refused_and_nothing_is_stored(stripe_api, awaiting, now):
    _, payment, intent_id = awaiting
    obj = stripe_api.intent_event_object(intent_id, status="succeeded")
    payload, headers = signed_event("payment_intent.succeeded", obj)
    cases = [
        (payload.replace(b"succeeded", b"succeedeD"), headers),  # tampered body
        (payload, {}),  # no header
        (payload, {"Stripe-Signature": "garbage"}),
        signed_event("payment_intent.succeeded", obj, secret="whsec_someone_else"),
        signed_event("payment_intent.succeeded", obj, signed_at=int(time.time()) - 3600),  # replayed later
        (b"\xff\xfe not utf-8", headers),
    ]
    for body, hdrs in cases:
        with pytest.raises(BillingError) as refused:
            handle_webhook("stripe", body, hdrs, now=now)
        assert refused.value.field == "Stripe-Signature"
    assert not GatewayEvent.objects.exists()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REQUIRES_ACTION


def test_malformed_signed_bodies_are_refused(stripe_api, now):
    for body, field in [("not json", "body"), ('{"object": "list"}', "body"),
                        ('{"object": "event", "id": "evt_1", "type": "x", "created": "soon", "data": {}}', "created"),
                        ('{"object": "event", "id": "evt_1", "type": "x", "created": 1, "data": {}}', "data.object"),
                        ('{"object": "event", "id": "evt_\\u0000", "type": "x", "created": 1}', "body")]:
        header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
        with pytest.raises(BillingError) as refused:
            handle_webhook("stripe", body.encode(), {"stripe-signature": header}, now=now)
        assert refused.value.field == field
    assert not GatewayEvent.objects.exists()


def test_events_about_unknown_or_mismatched_charges_are_stored_and_ignored(stripe_api, awaiting, now):
    invoice, payment, intent_id = awaiting
    stranger = {"id": "pi_elsewhere", "object": "payment_intent", "amount": 100, "currency": "usd",
                "status": "succeeded", "metadata": {}, "created": int(time.time())}
    assert webhook("payment_intent.succeeded", stranger, now=now).outcome == "ignored: no payment for pi_elsewhere"
    wrong_amount = stripe_api.intent_event_object(intent_id, status="succeeded", amount=100)
    assert webhook("payment_intent.succeeded", wrong_amount, now=now).outcome == (
        f"ignored: payment #{payment.pk} is 120.00 USD")
    other = webhook("customer.created", {"id": "cus_x", "object": "customer"}, now=now)
    assert other.outcome == "ignored: not an event Accrual acts on"
    assert GatewayEvent.objects.filter(processed_at=now).count() == 3
    assert reloaded(invoice).amount_paid == D("0.00")


# --- refunds ------------------------------------------------------------------------------------------------


@pytest.fixture
def card_paid(stripe_api, customer, actor, now):
    def pay(token: str = "pm_card_visa", amount: str = "120.00"):
        save_card(customer, token, actor, now)
        invoice = invoice_for(customer, actor, now, amount)
        return invoice, charge_invoice(invoice, actor=actor, now=now)

    return pay


def test_a_refund_goes_back_through_stripe(stripe_api, eager_celery, card_paid, actor, now,
                                           django_capture_on_commit_callbacks):
    invoice, payment = card_paid()
    with django_capture_on_commit_callbacks(execute=True):
        refund = refund_payment(payment, amount=D("50.00"), reason="Goodwill", actor=actor, now=now)
    refund.refresh_from_db()
    [stripe_refund] = stripe_api.refunds.values()
    assert (refund.status, refund.gateway, refund.gateway_reference) == (
        Refund.Status.SUCCEEDED, "stripe", stripe_refund["id"])
    [call] = stripe_api.calls_to("POST", "/v1/refunds")
    assert call.idempotency_key == f"refund:{refund.pk}"
    assert (call.params["payment_intent"], call.params["amount"]) == (payment.gateway_reference, "5000")
    assert call.params["metadata"] == {"accrual_refund_id": str(refund.pk)}
    invoice = reloaded(invoice)
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (
        Invoice.Status.FINALIZED, D("70.00"), D("50.00"))
    # Sending it again (a redelivered task) changes nothing and calls nobody.
    assert send_refund(refund, actor=actor, now=now).status == Refund.Status.SUCCEEDED
    assert len(stripe_api.calls_to("POST", "/v1/refunds")) == 1


def test_a_refund_that_fails_later_gives_the_money_back_to_the_invoice(stripe_api, eager_celery, card_paid, customer,
                                                                       actor, now,
                                                                       django_capture_on_commit_callbacks):
    invoice, payment = card_paid("pm_card_refundFail")
    with django_capture_on_commit_callbacks(execute=True):
        refund = refund_payment(payment, amount=D("120.00"), reason="Cancelled order", actor=actor, now=now)
    refund.refresh_from_db()
    assert refund.status == Refund.Status.SUCCEEDED
    assert reloaded(invoice).amount_due == D("120.00")

    # Days later the bank rejects it: Stripe sends refund.failed.
    obj = stripe_api.refund_event_object(refund.gateway_reference, status="failed",
                                         failure_reason="expired_or_canceled_card")
    event = webhook("refund.failed", obj, now=now, created=int(time.time()) + 60)
    assert event.outcome == f"refund #{refund.pk}: succeeded -> failed"
    refund.refresh_from_db()
    assert (refund.status, refund.failure_message) == (Refund.Status.FAILED, "expired_or_canceled_card")
    # The money never left: it goes back on the invoice it came off, as the payment's money again.
    allocations = list(Allocation.objects.filter(payment=payment).order_by("id").values_list("kind", "amount"))
    assert allocations == [("payment", D("120.00")), ("refund", D("-120.00")), ("payment", D("120.00"))]
    invoice = reloaded(invoice)
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (Invoice.Status.PAID, D("120.00"), D("0"))
    assert credit_balance(customer, "USD") == D("0.00")
    assert not CustomerBalanceTransaction.objects.filter(balance__customer=customer).exists()
    # An older "succeeded" update delivered after the failure is ignored.
    late = webhook("refund.updated", dict(obj, status="succeeded"), now=now, created=int(time.time()))
    assert late.outcome == f"ignored: older than the last update of refund #{refund.pk}"


def test_a_refund_stripe_refuses_fails_at_once_and_restores_the_payment(stripe_api, card_paid, customer, actor, now):
    invoice, payment = card_paid()
    # Someone refunded the whole charge in Stripe's dashboard, outside Accrual.
    client = stripe.StripeClient(stripe_api.secret_key, base_addresses={"api": stripe_api.url})
    client.v1.refunds.create(params={"payment_intent": payment.gateway_reference})

    refund = refund_payment(payment, amount=D("20.00"), reason="Duplicate seat", actor=actor, now=now)
    assert refund.status == Refund.Status.PENDING
    refund = send_refund(refund, actor=actor, now=now)
    assert refund.status == Refund.Status.FAILED
    assert "greater than the unrefunded amount" in refund.failure_message
    invoice = reloaded(invoice)
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, D("120.00"))


# --- payment methods and helpers ----------------------------------------------------------------------------


def test_saving_payment_methods_keeps_one_default_and_refuses_card_numbers(customer, actor, now):
    first = save_card(customer, "pm_first", actor, now)
    second = save_card(customer, "pm_second", actor, now, default=False)
    assert (first.is_default, second.is_default) == (True, False)
    third = save_card(customer, "pm_third", actor, now)
    first.refresh_from_db()
    assert (first.is_default, third.is_default) == (False, True)
    assert save_card(customer, "pm_third", actor, now).pk == third.pk  # saved again: the same row
    other = CustomerFactory()
    with pytest.raises(BillingError, match="another customer"):
        save_card(other, "pm_third", actor, now)
    with pytest.raises(BillingError) as pan:
        save_payment_method(customer, gateway="stripe", gateway_customer_id="cus_1",
                            gateway_payment_method_id="pm_1", brand="4242 4242 4242 4242", actor=actor, now=now)
    assert pan.value.field == "brand" and "4242" not in pan.value.message
    with pytest.raises(BillingError, match="expired in 12/2023"):
        save_payment_method(customer, gateway="stripe", gateway_customer_id="cus_1", gateway_payment_method_id="pm_1",
                            exp_month=12, exp_year=2023, actor=actor, now=now)
    with pytest.raises(BillingError, match="holds no payment methods"):
        save_payment_method(customer, gateway="manual", gateway_customer_id="cus_1",
                            gateway_payment_method_id="pm_1", actor=actor, now=now)
    deactivate_payment_method(third, actor=actor, now=now)
    third.refresh_from_db()
    assert (third.is_active, third.is_default) == (False, False)
    assert PaymentMethod.objects.filter(customer=customer, is_default=True, is_active=True).count() == 0


def test_card_number_detection():
    for pan in ("4242424242424242", "4242 4242 4242 4242", "4000-0566-5566-5556", "378282246310005",
                "card 6011111111111117 here", 4242424242424242):
        assert looks_like_card_number(pan), pan
    for fine in ("pm_1NXWPnLkdIwHu7ixZWPQx8xY", "4242", "12345678901", "2030", "cus_Q1w2e3r4", True, None):
        assert not looks_like_card_number(fine), fine
    assert card_number_paths({"a": {"b": ["x", "4111111111111111"]}, "4111 1111 1111 1111": 1}) == [
        "a.b[1]", "non_field_errors"]


def test_the_manual_gateway_refunds_by_hand_and_charges_nothing():
    manual = get_gateway("manual")
    assert manual.refund(charge_reference="", amount=D("1.00"), currency="USD", idempotency_key="k",
                         metadata={}).status == "succeeded"
    with pytest.raises(BillingError):
        manual.charge(amount=D("1.00"), currency="USD", customer_token="", payment_method_token="",
                      idempotency_key="k", description="", metadata={})
    with pytest.raises(BillingError, match="Unknown payment gateway"):
        get_gateway("paypal")
