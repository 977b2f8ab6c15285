"""GET /api/v1/customers/{external_id}/usage gains estimated amounts priced as the close would price them."""

from datetime import UTC, date, datetime

import pytest
from djmoney.money import Money

from contracts.services.subscriptions import create_subscription
from tests.api.conftest import client_for, make_key
from tests.factories import ChargeFactory, CustomerFactory, MeterFactory, PlanVersionFactory
from usage.ingestion import ingest_events
from usage.usage_views import CustomerUsageView

pytestmark = pytest.mark.django_db
NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)


def test_usage_has_estimated_amounts_per_charge_and_group(monkeypatch, actor):
    monkeypatch.setattr(CustomerUsageView, "now", lambda self: NOW)
    customer = CustomerFactory(external_id="acme-est", timezone="UTC", currency="USD")
    calls = MeterFactory(code="calls-est", aggregation="count")
    tokens = MeterFactory(code="tokens-est", aggregation="sum", field_name="tokens", group_by=["region"])
    version = PlanVersionFactory(base_fee=Money("0", "USD"))
    ChargeFactory(plan_version=version, meter=calls, charge_model="graduated", properties={"tiers": [
        {"up_to": "2", "unit_price": "1.00", "flat_fee": "0"}, {"up_to": None, "unit_price": "0.25", "flat_fee": "0"},
    ]})
    ChargeFactory(plan_version=version, meter=tokens, charge_model="standard", properties={"unit_price": "0.001"})
    create_subscription(customer=customer, plan_version=version, actor=actor, now=NOW, start_date=date(2024, 3, 1))
    events = [{"transaction_id": f"c{i}", "customer_external_id": "acme-est", "meter_code": "calls-est",
               "timestamp": "2024-03-10T10:00:00Z"} for i in range(6)]
    events += [{"transaction_id": f"t{i}", "customer_external_id": "acme-est", "meter_code": "tokens-est",
                "timestamp": "2024-03-11T10:00:00Z", "properties": {"tokens": 1500, "region": region}}
               for i, region in enumerate(["eu", "eu", "us"])]
    assert all(r.status == "accepted" for r in ingest_events(events, now=NOW))

    response = client_for(make_key(scope="read")).get("/api/v1/customers/acme-est/usage")
    assert response.status_code == 200, response.content
    [subscription] = response.json()["subscriptions"]
    calls_body, tokens_body = subscription["charges"]
    # 2 x 1.00 + 4 x 0.25 = 3.00
    assert calls_body["estimated_amount"] == {"amount": "3.00", "currency": "USD"}
    assert [t["amount"] for t in calls_body["tiers"]] == ["2.00", "1.00"]
    # eu: 3000 x 0.001 = 3.00; us: 1500 x 0.001 = 1.50
    assert tokens_body["estimated_amount"] == {"amount": "4.50", "currency": "USD"}
    by_region = {g["group"]["region"]: g["estimated_amount"]["amount"] for g in tokens_body["groups"]}
    assert by_region == {"eu": "3.00", "us": "1.50"}


def test_unknown_customer_is_404():
    response = client_for(make_key(scope="read")).get("/api/v1/customers/nobody/usage")
    assert response.status_code == 404
