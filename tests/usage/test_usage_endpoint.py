"""GET /api/v1/customers/{external_id}/usage: current period quantities per charge, over real API keys, events
ingested through the write path and subscriptions created through the lifecycle services."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone

from contracts.selectors import current_period
from contracts.services.subscriptions import cancel_subscription, create_subscription, pause_subscription
from tests.api.conftest import client_for, error_of, make_key
from tests.factories import ChargeFactory, CustomerFactory, MeterFactory, PlanVersionFactory
from usage.ingestion import ingest_events
from usage.usage_views import CustomerUsageView

pytestmark = pytest.mark.django_db

NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)


def _quantities_only(charge: dict) -> dict:
    """The usage part of a charge's entry, without invoicing's estimated amounts and tiers."""
    kept = {key: value for key, value in charge.items() if key not in ("estimated_amount", "tiers")}
    kept["groups"] = [{k: v for k, v in g.items() if k not in ("estimated_amount", "tiers")} for g in charge["groups"]]
    return kept


@pytest.fixture
def clock(monkeypatch):
    """The view's clock, fixed (DESIGN: services run 'as of' any moment; a test clock for tests)."""
    monkeypatch.setattr(CustomerUsageView, "now", lambda self: NOW)
    return NOW


@pytest.fixture
def read_api(db):
    return client_for(make_key(scope="read", name="portal"))


@pytest.fixture
def setup(db, actor):
    customer = CustomerFactory(external_id="acme-in", timezone="Asia/Kolkata", currency="USD")
    other = CustomerFactory(external_id="globex", currency="USD")
    calls = MeterFactory(code="api_calls", name="API calls", unit="calls", aggregation="count")
    tokens = MeterFactory(code="tokens", name="Tokens", aggregation="sum", field_name="tokens", group_by=["region"])
    storage = MeterFactory(
        code="storage", name="Storage", unit="GB", aggregation="weighted_sum", field_name="gb", carries_over=True
    )
    seats = MeterFactory(code="seats", name="Seats", aggregation="latest", field_name="seats", carries_over=True)
    version = PlanVersionFactory(plan__code="scale", plan__currency="USD")
    charges = {
        "calls": ChargeFactory(plan_version=version, meter=calls, position=0),
        "large": ChargeFactory(
            plan_version=version,
            meter=tokens,
            position=1,
            display_name="Large model tokens",
            filters={"model": ["large"]},
            group_by=["tier"],
        ),
        "storage": ChargeFactory(plan_version=version, meter=storage, position=2),
        "seats": ChargeFactory(plan_version=version, meter=seats, position=3),
    }
    subscription = create_subscription(
        customer=customer,
        plan_version=version,
        actor=actor,
        now=NOW,
        external_id="sub-acme",
        start_date=date(2024, 1, 1),
    )
    create_subscription(customer=other, plan_version=version, actor=actor, now=NOW, external_id="sub-globex")
    return {"customer": customer, "other": other, "version": version, "charges": charges, "subscription": subscription}


def ingest(*events, now=NOW):
    results = ingest_events(
        [
            {
                "transaction_id": tx,
                "customer_external_id": customer,
                "meter_code": meter,
                "timestamp": at,
                "properties": p,
            }
            for tx, customer, meter, at, p in events
        ],
        now=now,
    )
    assert {result.status for result in results} == {"accepted"}, results


def test_current_period_quantities_per_charge(read_api, setup, clock):
    ingest(
        # March in India starts at 2024-02-29T18:30Z: the first event is February's.
        ("c0", "acme-in", "api_calls", "2024-02-29T18:29:59Z", {}),
        ("c1", "acme-in", "api_calls", "2024-02-29T18:30:00Z", {}),
        ("c2", "acme-in", "api_calls", "2024-03-10T08:00:00Z", {}),
        ("c3", "acme-in", "api_calls", "2024-03-20T11:59:00Z", {}),
        ("c4", "globex", "api_calls", "2024-03-10T08:00:00Z", {}),  # another customer
        (
            "t1",
            "acme-in",
            "tokens",
            "2024-03-02T00:00:00Z",
            {"tokens": 1000, "model": "large", "region": "eu", "tier": "batch"},
        ),
        ("t2", "acme-in", "tokens", "2024-03-03T00:00:00Z", {"tokens": "250.5", "model": "large", "region": "eu"}),
        (
            "t3",
            "acme-in",
            "tokens",
            "2024-03-04T00:00:00Z",
            {"tokens": 40, "model": "large", "region": "us", "tier": "batch"},
        ),
        ("t4", "acme-in", "tokens", "2024-03-05T00:00:00Z", {"tokens": 9999, "model": "small", "region": "eu"}),
        # 31 GB stored since January; 62 GB more from March 16 00:00 in India, 16 days before the end.
        ("s1", "acme-in", "storage", "2024-01-05T00:00:00Z", {"gb": 31}),
        ("s2", "acme-in", "storage", "2024-03-15T18:30:00Z", {"gb": 62}),
        ("p1", "acme-in", "seats", "2024-02-10T00:00:00Z", {"seats": 25}),
    )
    response = read_api.get("/api/v1/customers/acme-in/usage")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["customer"] == "acme-in"
    assert body["timezone"] == "Asia/Kolkata"
    assert body["as_of"] == "2024-03-20T12:00:00Z"
    [subscription] = body["subscriptions"]
    assert {key: subscription[key] for key in ("subscription", "plan", "status", "period_start", "period_end")} == {
        "subscription": "sub-acme",
        "plan": "scale",
        "status": "active",
        "period_start": "2024-03-01",
        "period_end": "2024-04-01",
    }
    assert subscription["starts_at"] == "2024-02-29T18:30:00Z"
    assert subscription["ends_at"] == "2024-03-31T18:30:00Z"
    # Estimated amounts are checked in tests/api/test_usage_estimates.py; here the quantities.
    assert all("estimated_amount" in charge for charge in subscription["charges"])
    calls, large, storage, seats = [_quantities_only(charge) for charge in subscription["charges"]]
    assert calls == {
        "charge_id": setup["charges"]["calls"].pk,
        "display_name": "API calls",
        "meter": "api_calls",
        "unit": "calls",
        "aggregation": "count",
        "filters": {},
        "group_by": [],
        "quantity": "3",
        "groups": [],
    }
    # The meter groups by region, the charge adds tier and keeps only the large model.
    assert large["display_name"] == "Large model tokens"
    assert large["filters"] == {"model": ["large"]} and large["group_by"] == ["region", "tier"]
    assert large["quantity"] is None
    assert large["groups"] == [
        {"group": {"region": "eu", "tier": "batch"}, "quantity": "1000"},
        {"group": {"region": "eu", "tier": None}, "quantity": "250.5"},
        {"group": {"region": "us", "tier": "batch"}, "quantity": "40"},
    ]
    # 31 GB all month, 62 GB more for 16 of its 31 days: 31 + 62 x 16/31 = 63.
    assert storage["quantity"] == "63"
    assert seats["quantity"] == "25"  # carried over from February


def test_only_active_and_trialing_subscriptions_in_progress_are_listed(read_api, setup, actor, clock):
    customer, version = setup["customer"], setup["version"]
    trialing = create_subscription(
        customer=customer,
        plan_version=version,
        actor=actor,
        now=NOW,
        external_id="sub-trial",
        trial_days=30,
        start_date=date(2024, 3, 15),
    )
    paused = create_subscription(
        customer=customer, plan_version=version, actor=actor, now=NOW, external_id="sub-paused"
    )
    pause_subscription(paused, actor=actor, now=NOW)
    canceled = create_subscription(
        customer=customer, plan_version=version, actor=actor, now=NOW, external_id="sub-gone"
    )
    cancel_subscription(canceled, actor=actor, now=NOW)
    create_subscription(
        customer=customer,
        plan_version=version,
        actor=actor,
        now=NOW,
        external_id="sub-later",
        start_date=date(2024, 5, 1),
    )
    trialing.refresh_from_db()
    assert trialing.status == "trialing"
    body = read_api.get("/api/v1/customers/acme-in/usage").json()
    listed = {s["subscription"]: (s["status"], s["period_start"]) for s in body["subscriptions"]}
    # Calendar periods: the trial started mid-month, its first period is cut at its start.
    assert listed == {"sub-acme": ("active", "2024-03-01"), "sub-trial": ("trialing", "2024-03-15")}


def test_a_customer_without_subscriptions_has_an_empty_list(read_api, db, clock):
    CustomerFactory(external_id="lonely")
    response = read_api.get("/api/v1/customers/lonely/usage")
    assert response.status_code == 200
    assert response.json()["subscriptions"] == []


def test_an_unknown_customer_is_a_404_in_the_error_shape(read_api, db):
    response = read_api.get("/api/v1/customers/nobody/usage")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_an_api_key_is_required(db):
    CustomerFactory(external_id="acme")
    response = client_for(None).get("/api/v1/customers/acme/usage")
    assert response.status_code == 401
    assert error_of(response)["code"] in ("not_authenticated", "authentication_failed")


def test_writes_are_not_allowed(setup):
    api = client_for(make_key())
    response = api.post("/api/v1/customers/acme-in/usage", {}, format="json")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_the_real_clock_reads_the_period_in_progress(read_api, db, actor):
    """No test clock: the period is today's, and an event just sent counts at once."""
    now = timezone.now()
    customer = CustomerFactory(external_id="live", currency="USD")
    meter = MeterFactory(code="live_calls", aggregation="count")
    version = PlanVersionFactory(plan__currency="USD")
    ChargeFactory(plan_version=version, meter=meter)
    subscription = create_subscription(
        customer=customer, plan_version=version, actor=actor, now=now, external_id="live-sub"
    )
    period = current_period(subscription, now=now)
    ingest(("l1", "live", "live_calls", (now - timedelta(seconds=1)).isoformat(), {}), now=now)
    body = read_api.get("/api/v1/customers/live/usage").json()
    [entry] = body["subscriptions"]
    assert entry["period_start"] == period.start.isoformat() and entry["period_end"] == period.end.isoformat()
    assert entry["charges"][0]["quantity"] == "1"


def test_the_endpoint_is_in_the_openapi_schema(read_api):
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/customers/{customer_external_id}/usage"]["get"]
    assert operation["security"] == [{"ApiKeyAuth": []}]
    assert {"200", "401", "403", "404", "429"} <= set(operation["responses"])
    component = schema["components"]["schemas"]["EstimatedCharge"]
    assert {"meter", "quantity", "groups", "group_by", "filters", "estimated_amount"} <= set(component["properties"])
