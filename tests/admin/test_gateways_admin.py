"""Admin for saved payment methods (tokens only, saved through the service, deactivated by permission) and the
read-only gateway event log."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from billing.actors import Actor
from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN
from invoicing.models import GatewayEvent, PaymentMethod
from invoicing.services.charges import save_payment_method
from tests.admin.support import client_for, messages_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

METHODS = reverse("admin:invoicing_paymentmethod_changelist")
ADD_METHOD = reverse("admin:invoicing_paymentmethod_add")
EVENTS = reverse("admin:invoicing_gatewayevent_changelist")
NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def customer():
    return CustomerFactory(external_id="acme")


@pytest.fixture
def method(customer):
    return save_payment_method(customer, gateway="stripe", gateway_customer_id="cus_A1",
                               gateway_payment_method_id="pm_saved", brand="visa", last4="4242", exp_month=1,
                               exp_year=2031, actor=Actor.system("tests"), now=NOW)


def form(customer, **changes) -> dict:
    return {"customer": customer.pk, "gateway": "stripe", "gateway_customer_id": "cus_B2",
            "gateway_payment_method_id": "pm_new", "brand": "mastercard", "last4": "4444", "exp_month": "6",
            "exp_year": "2032", "is_default": "on", **changes}


def deactivate(client, methods):
    return client.post(METHODS, {"action": "deactivate", "_selected_action": [m.pk for m in methods]}, follow=True)


def test_finance_admin_saves_a_token_through_the_service_and_deactivates_it(customer):
    admin = client_for(FINANCE_ADMIN)
    assert admin.get(ADD_METHOD).status_code == 200
    response = admin.post(ADD_METHOD, form(customer))
    assert response.status_code == 302, response.content[:2000]
    saved = PaymentMethod.objects.get(gateway_payment_method_id="pm_new")
    assert (saved.customer, saved.last4, saved.is_default, saved.created_by) == (
        customer, "4444", True, f"user:{admin.user.username}")
    assert admin.get(reverse("admin:invoicing_paymentmethod_change", args=[saved.pk])).status_code == 200

    result = deactivate(admin, [saved])
    assert f"{saved} of {customer} deactivated." in messages_of(result)
    saved.refresh_from_db()
    assert (saved.is_active, saved.is_default) == (False, False)


def test_a_card_number_in_the_form_is_refused_and_not_shown_back(customer):
    admin = client_for(FINANCE_ADMIN)
    for field, pan in [("gateway_payment_method_id", "4242424242424242"), ("brand", "5555 5555 5555 4444")]:
        response = admin.post(ADD_METHOD, form(customer, **{field: pan}))
        assert response.status_code == 200
        page = response.content.decode()
        assert "looks like a card number" in page
        assert pan not in page and pan.replace(" ", "") not in page
    bad_token = admin.post(ADD_METHOD, form(customer, gateway_payment_method_id="tok_visa"))
    assert "pm_..." in bad_token.content.decode()
    assert not PaymentMethod.objects.exists()


def test_operators_and_auditors_only_read_payment_methods(method):
    for role in (BILLING_OPERATOR, AUDITOR):
        client = client_for(role, username=role.lower().replace(" ", "-"))
        assert client.get(METHODS).status_code == 200
        assert client.get(ADD_METHOD).status_code == 403
        deactivate(client, [method])
        method.refresh_from_db()
        assert method.is_active is True
        assert client.post(reverse("admin:invoicing_paymentmethod_delete", args=[method.pk]), {"post": "yes"}
                           ).status_code == 403


def test_gateway_events_are_read_only_for_everyone(customer):
    event = GatewayEvent.objects.create(gateway="stripe", event_id="evt_1", event_type="payment_intent.succeeded",
                                        occurred_at=NOW, received_at=NOW, processed_at=NOW, outcome="payment #1",
                                        payload={"id": "evt_1"})
    change = reverse("admin:invoicing_gatewayevent_change", args=[event.pk])
    for role in (FINANCE_ADMIN, AUDITOR):
        client = client_for(role, username=f"events-{role.lower().replace(' ', '-')}")
        assert client.get(EVENTS).status_code == 200
        assert client.get(change).status_code == 200
        assert client.get(reverse("admin:invoicing_gatewayevent_add")).status_code == 403
        assert client.post(reverse("admin:invoicing_gatewayevent_delete", args=[event.pk]), {"post": "yes"}
                           ).status_code == 403
        client.post(change, {"outcome": "edited"})
        event.refresh_from_db()
        assert event.outcome == "payment #1"
    root = client_for(superuser=True)
    assert root.get(reverse("admin:invoicing_gatewayevent_add")).status_code == 403
