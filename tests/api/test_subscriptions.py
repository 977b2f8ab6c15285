"""Subscriptions over the API: creation, every lifecycle endpoint (happy path and an illegal transition -> 409),
scheduled changes and their revocation, filters, and the entitlements endpoint."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from djmoney.money import Money

from contracts.models import Subscription, SubscriptionChange
from contracts.selectors import customer_today
from tests.api.conftest import error_of
from tests.factories import (
    CustomerFactory,
    FeatureFactory,
    PlanEntitlementFactory,
    PlanFactory,
    PlanVersionFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(entity):
    customer = CustomerFactory(external_id="acme", billing_entity=entity)
    pro = PlanFactory(code="pro")
    v1 = PlanVersionFactory(plan=pro, version=1, base_fee=Money(Decimal("100"), "USD"))
    v2 = PlanVersionFactory(plan=pro, version=2, base_fee=Money(Decimal("200"), "USD"))
    basic = PlanVersionFactory(plan=PlanFactory(code="basic"), version=1, base_fee=Money(Decimal("10"), "USD"))
    return customer, v1, v2, basic


def subscribe(api, **extra):
    payload = {"external_id": "sub_1", "customer": "acme", "plan": "pro", "plan_version": 1, "quantity": "3", **extra}
    response = api.post("/api/v1/subscriptions", payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_create_and_read_a_subscription(api, world):
    customer = world[0]
    body = subscribe(api, metadata={"source": "crm"})
    today = customer_today(customer, timezone.now())
    assert body["external_id"] == "sub_1" and body["customer"] == "acme"
    assert (body["plan"], body["plan_version"], body["quantity"], body["status"]) == ("pro", 1, "3", "active")
    assert body["start_date"] == today.isoformat()
    assert body["current_period"]["start"] <= today.isoformat() < body["current_period"]["end"]
    assert body["metadata"] == {"source": "crm"}
    assert api.get("/api/v1/subscriptions/sub_1").json() == body


def test_plan_version_defaults_to_the_latest_published(api, world):
    response = api.post("/api/v1/subscriptions", {"customer": "acme", "plan": "pro"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["plan_version"] == 2 and body["external_id"].startswith("sub_")


def test_create_errors(api, world):
    response = api.post(
        "/api/v1/subscriptions",
        {"customer": "nobody", "plan": "ghost", "quantity": "0", "billing_anchor": "lunar"},
        format="json",
    )
    assert set(error_of(response)["fields"]) >= {"customer", "quantity", "billing_anchor"}
    response = api.post(
        "/api/v1/subscriptions", {"customer": "acme", "plan": "ghost"}, format="json"
    )
    assert error_of(response)["fields"] == {"plan": ["Unknown plan 'ghost'."]}
    response = api.post(
        "/api/v1/subscriptions",
        {"customer": "acme", "plan": "pro", "billing_anchor": "calendar", "bill_cycle_day": 15},
        format="json",
    )
    assert "billing_anchor" in error_of(response)["fields"]
    eur = PlanVersionFactory(plan=PlanFactory(code="euro", currency="EUR"), version=1)
    response = api.post("/api/v1/subscriptions", {"customer": "acme", "plan": "euro"}, format="json")
    assert "plan_version" in error_of(response)["fields"] and eur.subscriptions.count() == 0
    subscribe(api)
    response = api.post(
        "/api/v1/subscriptions", {"external_id": "sub_1", "customer": "acme", "plan": "pro"}, format="json"
    )
    assert "external_id" in error_of(response)["fields"]
    assert Subscription.objects.count() == 1


def test_change_quantity_up_now_down_at_period_end_and_revoke(api, world):
    subscribe(api)
    response = api.post("/api/v1/subscriptions/sub_1/change-quantity", {"quantity": "5"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["subscription"]["quantity"] == "5"
    assert (body["change"]["action"], body["change"]["status"]) == ("change_quantity", "applied")
    assert (body["change"]["from_quantity"], body["change"]["to_quantity"]) == ("3", "5")

    response = api.post("/api/v1/subscriptions/sub_1/change-quantity", {"quantity": "2"}, format="json")
    body = response.json()
    assert body["change"]["status"] == "scheduled" and body["subscription"]["quantity"] == "5"
    change_id = body["change"]["id"]
    assert body["change"]["effective_date"] == body["subscription"]["current_period"]["end"]

    scheduled = api.get("/api/v1/subscriptions/sub_1/changes", {"status": "scheduled"}).json()["results"]
    assert change_id in [c["id"] for c in scheduled]
    response = api.post(f"/api/v1/subscriptions/sub_1/changes/{change_id}/revoke")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    response = api.post(f"/api/v1/subscriptions/sub_1/changes/{change_id}/revoke")
    assert response.status_code == 409 and error_of(response)["code"] == "invalid_transition"
    assert SubscriptionChange.objects.get(pk=change_id).status == "revoked"

    response = api.post("/api/v1/subscriptions/sub_1/change-quantity", {"quantity": "0"}, format="json")
    assert "quantity" in error_of(response)["fields"]
    response = api.post("/api/v1/subscriptions/sub_1/change-quantity", {"quantity": "1.1234567"}, format="json")
    assert "quantity" in error_of(response)["fields"]


def test_changes_of_another_subscription_are_not_reachable(api, world):
    subscribe(api)
    subscribe(api, external_id="sub_2")
    other = SubscriptionChange.objects.filter(subscription__external_id="sub_2").first()
    assert api.get(f"/api/v1/subscriptions/sub_1/changes/{other.pk}").status_code == 404
    assert api.post(f"/api/v1/subscriptions/sub_1/changes/{other.pk}/revoke").status_code == 404
    assert api.get("/api/v1/subscriptions/nobody/changes").status_code == 404


def test_change_plan_upgrade_now_downgrade_later(api, world):
    subscribe(api)
    response = api.post("/api/v1/subscriptions/sub_1/change-plan", {"plan_version": 2}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["subscription"]["plan_version"] == 2 and body["change"]["status"] == "applied"
    assert body["change"]["details"]["kind"] == "upgrade"
    assert body["change"]["from_plan_version"] == {"plan": "pro", "version": 1}
    assert body["change"]["to_plan_version"] == {"plan": "pro", "version": 2}

    response = api.post("/api/v1/subscriptions/sub_1/change-plan", {"plan": "basic"}, format="json")
    body = response.json()
    assert body["change"]["status"] == "scheduled" and body["subscription"]["plan"] == "pro"
    response = api.post(
        "/api/v1/subscriptions/sub_1/change-plan", {"plan": "basic", "timing": "immediate"}, format="json"
    )
    assert response.json()["subscription"]["plan"] == "basic"

    response = api.post("/api/v1/subscriptions/sub_1/change-plan", {"plan": "basic"}, format="json")
    assert "plan_version" in error_of(response)["fields"]  # already on it
    response = api.post("/api/v1/subscriptions/sub_1/change-plan", {"plan": "pro", "timing": "whenever"},
                        format="json")
    assert "timing" in error_of(response)["fields"]


def test_pause_resume_and_their_illegal_repeats(api, world):
    subscribe(api)
    response = api.post("/api/v1/subscriptions/sub_1/pause")
    assert response.status_code == 200
    assert response.json()["subscription"]["status"] == "paused" and response.json()["subscription"]["paused_on"]
    response = api.post("/api/v1/subscriptions/sub_1/pause")
    assert response.status_code == 409 and error_of(response)["code"] == "invalid_transition"
    # Seats and plans may change while paused (nothing is billed until it resumes).
    response = api.post("/api/v1/subscriptions/sub_1/change-quantity", {"quantity": "9"}, format="json")
    assert response.status_code == 200 and response.json()["subscription"]["status"] == "paused"
    response = api.post("/api/v1/subscriptions/sub_1/resume")
    assert response.status_code == 200 and response.json()["subscription"]["status"] == "active"
    assert api.post("/api/v1/subscriptions/sub_1/resume").status_code == 409


def test_cancel_at_period_end_then_now_then_nothing_more(api, world):
    subscribe(api)
    response = api.post("/api/v1/subscriptions/sub_1/cancel", {"at_period_end": True, "reason": "budget"},
                        format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["change"]["status"] == "scheduled" and body["subscription"]["status"] == "active"
    assert body["change"]["details"] == {"reason": "budget", "at_period_end": True}

    response = api.post("/api/v1/subscriptions/sub_1/cancel", {}, format="json")
    body = response.json()
    assert body["subscription"]["status"] == "canceled" and body["subscription"]["canceled_at"]
    assert body["change"]["status"] == "applied"

    for path, payload in [("cancel", {}), ("pause", None), ("resume", None), ("renew", {}),
                          ("change-quantity", {"quantity": "4"}), ("change-plan", {"plan_version": 2})]:
        response = api.post(f"/api/v1/subscriptions/sub_1/{path}", payload, format="json")
        assert response.status_code == 409, path
        assert error_of(response)["code"] == "invalid_transition"


def test_renew(api, world):
    customer = world[0]
    end = customer_today(customer, timezone.now()) + timedelta(days=40)
    subscribe(api, end_date=end.isoformat())
    response = api.post("/api/v1/subscriptions/sub_1/renew", {}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["change"]["action"] == "renew"
    assert body["change"]["details"]["old_end_date"] == end.isoformat()
    assert body["subscription"]["end_date"] > end.isoformat()
    new_end = (end + timedelta(days=800)).isoformat()
    response = api.post("/api/v1/subscriptions/sub_1/renew", {"new_end_date": new_end}, format="json")
    assert response.json()["subscription"]["end_date"] == new_end
    response = api.post("/api/v1/subscriptions/sub_1/renew", {"new_end_date": end.isoformat()}, format="json")
    assert "new_end_date" in error_of(response)["fields"]

    subscribe(api, external_id="open_ended")
    response = api.post("/api/v1/subscriptions/open_ended/renew", {}, format="json")
    assert response.status_code == 409


def test_pending_subscription_in_the_future(api, world):
    customer = world[0]
    start = customer_today(customer, timezone.now()) + timedelta(days=10)
    body = subscribe(api, start_date=start.isoformat())
    assert body["status"] == "pending" and body["current_period"] is None
    assert api.post("/api/v1/subscriptions/sub_1/pause").status_code == 409
    scheduled = api.get("/api/v1/subscriptions/sub_1/changes", {"status": "scheduled"}).json()["results"]
    assert [c["action"] for c in scheduled] == ["activate"]
    response = api.post(f"/api/v1/subscriptions/sub_1/changes/{scheduled[0]['id']}/revoke")
    assert response.status_code == 409  # follows from dates


def test_subscription_filters(api, world, entity):
    CustomerFactory(external_id="other", billing_entity=entity)
    subscribe(api)
    subscribe(api, external_id="sub_2", customer="other", plan="basic")
    subscribe(api, external_id="sub_3", customer="other")
    api.post("/api/v1/subscriptions/sub_3/cancel", {}, format="json")

    def ids(**params):
        response = api.get("/api/v1/subscriptions", {**params, "ordering": "external_id"})
        assert response.status_code == 200, response.json()
        return [s["external_id"] for s in response.json()["results"]]

    assert ids(customer="other") == ["sub_2", "sub_3"]
    assert ids(plan="pro") == ["sub_1", "sub_3"]
    assert ids(status="canceled") == ["sub_3"]
    assert ids(status=["active", "canceled"]) == ["sub_1", "sub_2", "sub_3"]
    assert ids(customer="other", status="active") == ["sub_2"]
    assert ids(search="sub_2") == ["sub_2"]


def test_entitlements_endpoint(api, world, entity):
    customer, v1, _, _ = world
    sso = FeatureFactory(code="sso", name="Single sign-on", kind="switch")
    projects = FeatureFactory(code="projects", name="Projects", kind="limit")
    PlanEntitlementFactory(plan_version=v1, feature=sso)
    PlanEntitlementFactory(plan_version=v1, feature=projects, limit=Decimal("5"), per_unit=True)

    empty = api.get("/api/v1/customers/acme/entitlements")
    assert empty.status_code == 200
    assert empty.json()["entitlements"] == {}

    subscribe(api, quantity="3")
    body = api.get("/api/v1/customers/acme/entitlements").json()
    assert body["customer"] == "acme"
    assert body["on"] == customer_today(customer, timezone.now()).isoformat()
    assert body["entitlements"] == {
        "projects": {"feature_code": "projects", "name": "Projects", "kind": "limit", "enabled": True,
                     "limit": "15", "sources": ["subscription:sub_1"]},
        "sso": {"feature_code": "sso", "name": "Single sign-on", "kind": "switch", "enabled": True,
                "limit": None, "sources": ["subscription:sub_1"]},
    }
    api.post("/api/v1/subscriptions/sub_1/pause")
    assert api.get("/api/v1/customers/acme/entitlements").json()["entitlements"] == {}

    response = api.get("/api/v1/customers/acme/entitlements", {"on": "yesterday"})
    assert response.status_code == 400 and "on" in error_of(response)["fields"]
    assert api.get("/api/v1/customers/nobody/entitlements").status_code == 404
