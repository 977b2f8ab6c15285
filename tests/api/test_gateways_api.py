"""/api/v1/customers/{id}/payment-methods (gateway tokens only, card numbers refused unseen) and the Stripe
webhook endpoint (signature-authenticated, once per event, bounded)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import stripe
from django.test import Client

from invoicing.api.gateways import WEBHOOK_MAX_BYTES
from invoicing.models import GatewayEvent, Invoice, Payment, PaymentMethod
from invoicing.services.charges import charge_invoice, save_payment_method
from invoicing.services.documents import ManualLine, create_one_off_invoice
from tests.api.conftest import client_for, error_of
from tests.factories import BillingEntityFactory, CustomerFactory
from tests.invoicing.stripe_standin import (
    WEBHOOK_SECRET,
    StripeStandIn,
    configure,
    running_standin,
    signed_event,
)

pytestmark = pytest.mark.django_db

WEBHOOK = "/api/v1/webhooks/stripe"
CARD = {"gateway_customer_id": "cus_Q1w2e3r4", "gateway_payment_method_id": "pm_1NXWPnLkdIwHu7ix",
        "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031}


@pytest.fixture
def customer(db):
    return CustomerFactory(external_id="acme", billing_entity=BillingEntityFactory(timezone="UTC"), timezone="UTC")


def url(external_id: str = "acme") -> str:
    return f"/api/v1/customers/{external_id}/payment-methods"


@pytest.fixture
def stripe_api(settings) -> Iterator[StripeStandIn]:
    with running_standin() as standin:
        configure(settings, standin)
        yield standin


# --- payment methods ----------------------------------------------------------------------------------------


def test_save_list_and_deactivate_a_payment_method(api, customer):
    created = api.post(url(), CARD, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert {k: body[k] for k in ("gateway", "gateway_payment_method_id", "brand", "last4", "exp_month", "exp_year",
                                 "is_default", "is_active")} == {
        "gateway": "stripe", "gateway_payment_method_id": "pm_1NXWPnLkdIwHu7ix", "brand": "visa", "last4": "4242",
        "exp_month": 12, "exp_year": 2031, "is_default": True, "is_active": True}
    second = api.post(url(), {**CARD, "gateway_payment_method_id": "pm_second", "is_default": False}, format="json")
    assert second.json()["is_default"] is False

    listed = api.get(url()).json()
    assert [m["gateway_payment_method_id"] for m in listed["results"]] == ["pm_1NXWPnLkdIwHu7ix", "pm_second"]

    gone = api.delete(f"{url()}/{body['id']}")
    assert gone.status_code == 200
    assert (gone.json()["is_active"], gone.json()["is_default"]) == (False, False)
    assert api.delete(f"{url()}/{body['id']}").status_code == 200  # deactivating twice is harmless
    assert PaymentMethod.objects.get(pk=body["id"]).is_active is False


def test_card_numbers_are_refused_without_being_echoed(api, customer):
    cases = [
        ({**CARD, "gateway_payment_method_id": "4242424242424242"}, "gateway_payment_method_id"),
        ({**CARD, "brand": "4242 4242 4242 4242"}, "brand"),
        ({**CARD, "card_number": "4000-0566-5566-5556"}, "card_number"),
        ({**CARD, "last4": 4111111111111111}, "last4"),
        ({**CARD, "metadata": {"note": ["pan 5555555555554444"]}}, "metadata.note[0]"),
        ({**CARD, "378282246310005": "x"}, "non_field_errors"),
    ]
    for body, field in cases:
        response = api.post(url(), body, format="json", HTTP_IDEMPOTENCY_KEY=f"pan-{field}")
        assert response.status_code == 400, (field, response.content)
        error = error_of(response)
        assert list(error["fields"]) == [field]
        assert "card number" in error["fields"][field][0]
        text = response.content.decode()
        for digits in ("4242424242424242", "4242 4242", "4000-0566", "4111111111111111", "5555555555554444",
                       "378282246310005"):
            assert digits not in text
    assert not PaymentMethod.objects.exists()


def test_malformed_and_hostile_input(api, customer):
    cases = [
        ({}, {"gateway_customer_id", "gateway_payment_method_id"}),
        ({**CARD, "gateway_payment_method_id": "pm_" + "a" * 200}, {"gateway_payment_method_id"}),
        ({**CARD, "gateway_payment_method_id": "tok_<script>"}, {"gateway_payment_method_id"}),
        ({**CARD, "gateway_customer_id": "customer-1"}, {"gateway_customer_id"}),
        ({**CARD, "last4": "12345"}, {"last4"}),
        ({**CARD, "exp_month": 13}, {"exp_month"}),
        ({**CARD, "exp_year": 2023, "exp_month": 1}, {"exp_year"}),
        ({**CARD, "exp_year": None}, {"exp_month"}),
        ({**CARD, "gateway": "manual"}, {"gateway"}),
        ({**CARD, "brand": "visa'; DROP TABLE"}, {"brand"}),
        ({**CARD, "typo": 1}, {"typo"}),
    ]
    for body, fields in cases:
        response = api.post(url(), body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert set(error_of(response)["fields"]) == fields, (body, response.json())
    raw = [b"{not json", b'{"gateway_customer_id": "cus_1\\u0000"}', b"[]", b"\xff"]
    for content in raw:
        response = api.post(url(), content, content_type="application/json")
        assert response.status_code == 400, content
    too_big = api.post(url(), b'{"brand": "' + b"x" * (11 * 1024 * 1024) + b'"}', content_type="application/json")
    assert too_big.status_code == 413
    assert api.post(url("nobody"), CARD, format="json").status_code == 404
    assert api.delete(f"{url()}/999999").status_code == 404
    assert not PaymentMethod.objects.exists()


def test_a_token_saved_for_another_customer_is_refused(api, customer, actor, now):
    other = CustomerFactory(external_id="globex")
    save_payment_method(other, gateway="stripe", gateway_customer_id="cus_G1", gateway_payment_method_id="pm_shared",
                        actor=actor, now=now)
    response = api.post(url(), {**CARD, "gateway_payment_method_id": "pm_shared"}, format="json")
    assert response.status_code == 400
    assert "another customer" in error_of(response)["fields"]["gateway_payment_method_id"][0]
    # Another customer's method is not reachable through this customer's path.
    theirs = PaymentMethod.objects.get(customer=other)
    assert api.delete(f"{url()}/{theirs.pk}").status_code == 404


def test_authentication_permissions_and_idempotent_replay(api, read_api, customer):
    assert client_for(None).get(url()).status_code == 401
    assert client_for(None).post(url(), CARD, format="json").status_code == 401
    assert read_api.get(url()).status_code == 200
    assert read_api.post(url(), CARD, format="json").status_code == 403
    first = api.post(url(), CARD, format="json", HTTP_IDEMPOTENCY_KEY="save-card-1")
    again = api.post(url(), CARD, format="json", HTTP_IDEMPOTENCY_KEY="save-card-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert read_api.delete(f"{url()}/{first.json()['id']}").status_code == 403
    assert PaymentMethod.objects.count() == 1


# --- the webhook endpoint -----------------------------------------------------------------------------------


@pytest.fixture
def awaiting(stripe_api, customer, actor, now):
    save_payment_method(customer, gateway="stripe", gateway_customer_id="cus_Q1", actor=actor, now=now,
                        gateway_payment_method_id="pm_card_authenticationRequired")
    invoice = create_one_off_invoice(customer, [ManualLine(description="Seats", unit_price=Decimal("99.00"))],
                                     actor=actor, now=now, finalize=True)
    payment = charge_invoice(invoice, actor=actor, now=now)
    return invoice, payment


def post_webhook(client: Client, payload: bytes, headers: dict[str, str]):
    return client.post(WEBHOOK, payload, content_type="application/json",
                       **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})


def test_webhook_applies_a_signed_event_once(stripe_api, awaiting):
    invoice, payment = awaiting
    obj = stripe_api.intent_event_object(payment.gateway_reference, status="succeeded", amount_received=9900)
    payload, headers = signed_event("payment_intent.succeeded", obj, event_id="evt_api_1",
                                    created=int(time.time()) + 1)
    client = Client(enforce_csrf_checks=True)  # no API key, no CSRF token: the signature is the authentication
    first = post_webhook(client, payload, headers)
    assert first.status_code == 200, first.content
    assert first.json() == {"received": True, "event_id": "evt_api_1", "duplicate": False,
                            "outcome": f"payment #{payment.pk}: requires_action -> succeeded"}
    again = post_webhook(client, payload, headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert GatewayEvent.objects.count() == 1
    assert Invoice.objects.get(pk=invoice.pk).status == Invoice.Status.PAID
    assert Payment.objects.get(pk=payment.pk).allocations.count() == 1


def test_webhook_refuses_bad_signatures_and_malformed_requests(stripe_api, awaiting):
    _, payment = awaiting
    obj = stripe_api.intent_event_object(payment.gateway_reference, status="succeeded")
    payload, headers = signed_event("payment_intent.succeeded", obj)
    client = Client()
    bad = post_webhook(client, payload, {"Stripe-Signature": headers["Stripe-Signature"].replace("v1=", "v1=0")})
    assert bad.status_code == 400
    assert list(error_of(bad)["fields"]) == ["Stripe-Signature"]
    assert post_webhook(client, payload, {}).status_code == 400
    assert post_webhook(client, payload + b" ", headers).status_code == 400  # the body changed after signing
    unsigned_junk = post_webhook(client, b"\x00\xff" * 10, headers)
    assert unsigned_junk.status_code == 400
    huge = b'{"pad": "' + b"x" * WEBHOOK_MAX_BYTES + b'"}'
    assert post_webhook(client, huge, headers).status_code == 413
    assert client.get(WEBHOOK).status_code == 405
    assert client.post("/api/v1/webhooks/paypal", payload, content_type="application/json").status_code == 404
    assert not GatewayEvent.objects.exists()
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.REQUIRES_ACTION


def test_webhook_without_a_configured_secret_asks_for_redelivery(settings, stripe_api):
    payload, headers = signed_event("customer.created", {"id": "cus_x", "object": "customer"})
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = post_webhook(Client(), payload, headers)
    assert response.status_code == 503
    assert "STRIPE_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert not GatewayEvent.objects.exists()


def test_webhook_answers_in_the_api_error_shape(stripe_api):
    body = json.dumps({"object": "event"})
    header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
    response = post_webhook(Client(), body.encode(), {"Stripe-Signature": header})
    assert response.status_code == 400
    assert set(error_of(response)["fields"]) == {"id"}
