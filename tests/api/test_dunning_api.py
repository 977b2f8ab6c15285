"""Dunning API: an invoice's dunning state, the policies with their steps, and a customer's override, with
authentication, read-only keys, and malformed, missing, oversized and hostile input."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from billing.actors import Actor
from contracts.selectors import customer_today
from invoicing.models import CustomerDunningOverride, DunningPolicy, DunningStep
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.dunning import create_standard_policy, run_dunning
from tests.api.conftest import client_for, error_of
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
A = DunningStep.Action


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, external_id="cus_dun", timezone="UTC", payment_terms_days=10,
                           billing_emails=["ap@buyer.test"])


@pytest.fixture
def standard(entity):
    return create_standard_policy(entity)


def overdue_invoice(customer, days_overdue: int = 3):
    """An invoice issued so that its due date was `days_overdue` days ago (10 days' terms)."""
    issued = timezone.now() - timedelta(days=10 + days_overdue)
    return create_one_off_invoice(customer, [ManualLine("Setup", Decimal("250.00"), 1)], actor=ACTOR, now=issued,
                                  finalize=True)


def url(customer_id: str = "cus_dun") -> str:
    return f"/api/v1/customers/{customer_id}/dunning-override"


# --- an invoice's dunning state -----------------------------------------------------------------------------


def test_invoice_dunning_state(api, read_api, customer, standard):
    invoice = overdue_invoice(customer, days_overdue=3)
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        run_dunning(now=timezone.now(), actor=ACTOR)
    today = customer_today(customer, timezone.now())
    due = invoice.due_date
    assert (today - due).days == 3

    response = read_api.get(f"/api/v1/invoices/{invoice.pk}/dunning")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["invoice"], body["number"], body["status"], body["due_date"]) == (
        invoice.pk, invoice.number, "finalized", due.isoformat())
    assert body["amount_due"] == {"amount": "250.00", "currency": "USD"}
    assert (body["dunned"], body["policy"], body["policy_source"], body["suspended"], body["suspension"]) == (
        True, {"id": standard.pk, "name": "Standard"}, "entity_default", False, None)
    assert [(s["offset_days"], s["action"], s["status"], s["scheduled_for"]) for s in body["steps"]] == [
        (-3, "reminder", "skipped", (due - timedelta(days=3)).isoformat()),  # caught up: only the latest e-mail
        (1, "reminder", "done", (due + timedelta(days=1)).isoformat()),
        (7, "retry_payment", "upcoming", (due + timedelta(days=7)).isoformat()),
        (14, "final_notice", "upcoming", (due + timedelta(days=14)).isoformat()),
        (21, "suspend", "upcoming", (due + timedelta(days=21)).isoformat()),
        (30, "mark_uncollectible", "upcoming", (due + timedelta(days=30)).isoformat()),
    ]
    assert body["steps"][1]["details"]["to"] == ["ap@buyer.test"] and body["steps"][1]["ran_at"]
    assert body["steps"][2]["ran_at"] is None
    assert (body["next_step"]["offset_days"], body["next_step"]["action"]) == (7, "retry_payment")
    assert api.get(f"/api/v1/invoices/{invoice.pk}/dunning").json() == body


def test_invoice_dunning_state_shows_the_suspension(api, customer, standard):
    from tests.invoicing.test_contract_terms import subscribe, version

    subscription = subscribe(customer, version("10.00"), ACTOR, start=timezone.now().date() - timedelta(days=60))
    invoice = overdue_invoice(customer, days_overdue=25)
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        run_dunning(now=timezone.now(), actor=ACTOR)

    body = api.get(f"/api/v1/invoices/{invoice.pk}/dunning").json()

    assert body["suspended"] is True
    suspension = body["suspension"]
    assert (suspension["invoice"], suspension["subscriptions"]) == (invoice.pk, [subscription.external_id])
    assert [s["status"] for s in body["steps"]] == ["skipped", "skipped", "skipped", "skipped", "done", "upcoming"]
    assert body["steps"][4]["details"]["subscriptions"] == [subscription.external_id]


def test_invoice_dunning_state_errors(api, customer):
    assert client_for(None).get("/api/v1/invoices/1/dunning").status_code == 401
    assert error_of(api.get("/api/v1/invoices/999999/dunning"))["code"] == "not_found"
    assert api.get(f"/api/v1/invoices/{2**63}/dunning").status_code == 404
    assert api.get("/api/v1/invoices/abc/dunning").status_code == 404
    invoice = overdue_invoice(customer)
    assert api.post(f"/api/v1/invoices/{invoice.pk}/dunning", {}, format="json").status_code == 405


def test_a_customer_without_policy_is_not_dunned(api, customer):
    invoice = overdue_invoice(customer)
    body = api.get(f"/api/v1/invoices/{invoice.pk}/dunning").json()
    assert (body["dunned"], body["policy"], body["policy_source"], body["steps"], body["next_step"]) == (
        False, None, "none", [], None)


# --- policies -----------------------------------------------------------------------------------------------


def test_policies_with_their_steps(read_api, entity, standard):
    other = BillingEntityFactory(code="acme-eu", default_currency="EUR")
    custom = DunningPolicy.objects.create(billing_entity=other, name="Friendly")
    DunningStep.objects.create(policy=custom, offset_days=5, action=A.REMINDER, email_subject="Hi {{ customer_name }}")

    response = read_api.get("/api/v1/dunning-policies")

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(p["name"], p["billing_entity"], p["is_default"], p["is_active"]) for p in rows] == [
        ("Friendly", "acme-eu", False, True), ("Standard", "acme-us", True, True)]  # by entity code, then name
    assert [(s["offset_days"], s["action"]) for s in rows[1]["steps"]] == [
        (-3, "reminder"), (1, "reminder"), (7, "retry_payment"), (14, "final_notice"), (21, "suspend"),
        (30, "mark_uncollectible")]
    assert rows[0]["steps"][0]["email_subject"] == "Hi {{ customer_name }}"

    filtered = read_api.get("/api/v1/dunning-policies", {"billing_entity": "acme-eu"}).json()["results"]
    assert [p["name"] for p in filtered] == ["Friendly"]
    one = read_api.get(f"/api/v1/dunning-policies/{standard.pk}")
    assert one.status_code == 200 and one.json()["name"] == "Standard"


def test_policies_errors(api, read_api, standard):
    assert client_for(None).get("/api/v1/dunning-policies").status_code == 401
    assert read_api.get("/api/v1/dunning-policies/999999").status_code == 404
    assert read_api.get(f"/api/v1/dunning-policies/{2**64}").status_code == 404
    assert api.post("/api/v1/dunning-policies", {"name": "x"}, format="json").status_code == 405
    assert api.delete(f"/api/v1/dunning-policies/{standard.pk}").status_code == 405
    assert read_api.get("/api/v1/dunning-policies", {"search": "x\x00"}).status_code == 400


# --- the override -------------------------------------------------------------------------------------------


def test_set_read_and_remove_an_override(api, customer, standard, entity):
    gentle = DunningPolicy.objects.create(billing_entity=entity, name="Gentle")
    assert api.get(url()).json() == {"customer": "cus_dun", "has_override": False, "policy": None, "note": "",
                                     "effective_policy": {"id": standard.pk, "name": "Standard"}}

    response = api.put(url(), {"policy": gentle.pk, "note": "Key account"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"customer": "cus_dun", "has_override": True,
                                "policy": {"id": gentle.pk, "name": "Gentle"}, "note": "Key account",
                                "effective_policy": {"id": gentle.pk, "name": "Gentle"}}
    override = CustomerDunningOverride.objects.get(customer=customer)
    assert override.history.latest().history_change_reason.startswith("api-key:")

    never = api.put(url(), {"policy": None}, format="json").json()
    assert (never["has_override"], never["policy"], never["effective_policy"], never["note"]) == (True, None, None, "")

    removed = api.delete(url())
    assert removed.status_code == 200
    assert removed.json()["has_override"] is False
    assert removed.json()["effective_policy"] == {"id": standard.pk, "name": "Standard"}
    assert not CustomerDunningOverride.objects.exists()
    assert api.delete(url()).status_code == 200  # already gone: the same outcome


def test_override_is_idempotent_with_a_key(api, customer, standard):
    headers = {"HTTP_IDEMPOTENCY_KEY": "override-1"}
    first = api.put(url(), {"policy": None, "note": "x"}, format="json", **headers)
    second = api.put(url(), {"policy": None, "note": "x"}, format="json", **headers)
    assert first.status_code == second.status_code == 200
    assert second["Idempotent-Replayed"] == "true"
    assert api.put(url(), {"policy": None, "note": "y"}, format="json", **headers).status_code == 409


def test_override_authentication_and_permissions(read_api, customer, standard):
    assert client_for(None).put(url(), {"policy": None}, format="json").status_code == 401
    assert client_for(None).delete(url()).status_code == 401
    assert client_for(None).get(url()).status_code == 401
    assert read_api.get(url()).status_code == 200
    assert error_of(read_api.put(url(), {"policy": None}, format="json"))["code"] == "permission_denied"
    assert read_api.delete(url()).status_code == 403
    assert not CustomerDunningOverride.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "policy"),  # missing
        ({"policy": "abc"}, "policy"),
        ({"policy": 1.5}, "policy"),
        ({"policy": True}, "policy"),
        ({"policy": 0}, "policy"),
        ({"policy": -4}, "policy"),
        ({"policy": 2**64}, "policy"),
        ({"policy": {"id": 1}}, "policy"),
        ({"policy": 999999}, "policy"),  # no such policy
        ({"policy": None, "note": "x" * 301}, "note"),
        ({"policy": None, "note": ["list"]}, "note"),
        ({"policy": None, "colour": "red"}, "colour"),  # unknown field
        ({"policy": None, "<script>alert(1)</script>": 1}, "<script>alert(1)</script>"),
    ],
)
def test_override_refuses_bad_input(api, customer, standard, body, field):
    response = api.put(url(), body, format="json")
    assert response.status_code == 400, response.content
    assert field in error_of(response)["fields"]
    assert not CustomerDunningOverride.objects.exists()


def test_override_refuses_malformed_and_oversized_bodies(api, customer, standard):
    def put_raw(data: bytes | str, content_type: str = "application/json"):
        return api.generic("PUT", url(), data, content_type=content_type)

    assert put_raw("{not json").status_code == 400
    assert put_raw('["policy", null]').status_code == 400
    assert put_raw('{"policy": null, "policy": 1}').status_code == 400  # duplicate key
    assert put_raw(json.dumps({"policy": None, "note": "a\u0000b"})).status_code == 400
    assert put_raw("policy=1", "application/x-www-form-urlencoded").status_code == 415
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        assert put_raw(json.dumps({"policy": None, "note": "x" * 2000})).status_code == 413
    assert not CustomerDunningOverride.objects.exists()


def test_override_refuses_another_entitys_policy(api, customer, standard):
    elsewhere = create_standard_policy(BillingEntityFactory(code="acme-eu"), name="EU")
    response = api.put(url(), {"policy": elsewhere.pk}, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert "another billing entity" in error["fields"]["policy"][0]
    inactive = DunningPolicy.objects.create(billing_entity=customer.billing_entity, name="Old", is_active=False)
    assert "inactive" in error_of(api.put(url(), {"policy": inactive.pk}, format="json"))["fields"]["policy"][0]
    assert not CustomerDunningOverride.objects.exists()


def test_override_of_an_unknown_customer(api):
    assert api.put(url("nobody"), {"policy": None}, format="json").status_code == 404
    assert api.delete(url("nobody")).status_code == 404
    assert api.get(url("../../etc/passwd")).status_code == 404
    assert api.get(url("cus%00x")).status_code == 404
