"""Contracts: creation, negotiated prices and ramps, commitments, entitlements, activate/renew/cancel."""

from datetime import date

import pytest
from djmoney.money import Money

from contracts.models import Contract, ContractPrice
from tests.api.conftest import error_of
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    FeatureFactory,
    FixedChargeFactory,
    PlanFactory,
    PlanVersionFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(entity):
    customer = CustomerFactory(external_id="acme", billing_entity=entity)
    version = PlanVersionFactory(plan=PlanFactory(code="ent"), version=1)
    charge = ChargeFactory(plan_version=version)
    FixedChargeFactory(plan_version=version, code="support")
    FeatureFactory(code="seats", kind="limit")
    return customer, version, charge


def create_contract(api, **extra):
    payload = {
        "customer": "acme", "reference": "CT-1", "start_date": "2024-01-01", "end_date": "2025-01-01",
        "auto_renew": True, "renewal_term_months": 12, "renewal_uplift_percent": "5", **extra,
    }
    response = api.post("/api/v1/contracts", payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_create_and_read_a_contract(api, setup):
    body = create_contract(api, metadata={"deal": "Q4"})
    assert body["customer"] == "acme" and body["status"] == "active" and body["currency"] == "USD"
    assert body["renewal_uplift_percent"] == "5" and body["metadata"] == {"deal": "Q4"}
    assert api.get("/api/v1/contracts/CT-1").json() == body
    response = api.post(
        "/api/v1/contracts", {"customer": "acme", "reference": "CT-1", "start_date": "2024-01-01"}, format="json"
    )
    assert error_of(response)["fields"] == {"reference": ["A contract with this reference already exists."]}
    response = api.post(
        "/api/v1/contracts",
        {"customer": "ghost", "reference": "CT-2", "start_date": "2024-02-30", "currency": "EUR"},
        format="json",
    )
    assert set(error_of(response)["fields"]) == {"customer", "start_date"}
    response = api.post(
        "/api/v1/contracts",
        {"customer": "acme", "reference": "CT-3", "start_date": "2024-01-01", "currency": "EUR"},
        format="json",
    )
    assert "currency" in error_of(response)["fields"]  # the customer is billed in USD
    response = api.post(
        "/api/v1/contracts",
        {"customer": "acme", "reference": "CT-4", "start_date": "2024-01-01", "auto_renew": True},
        format="json",
    )
    assert response.status_code == 400
    assert Contract.objects.count() == 1


def test_prices_ramps_and_overlaps(api, setup):
    _, _, charge = setup
    create_contract(api)
    url = "/api/v1/contracts/CT-1/prices"
    year_one = {"target": "base_fee", "plan": "ent", "plan_version": 1,
                "amount": {"amount": "80", "currency": "USD"}, "effective_to": "2024-07-01"}
    response = api.post(url, year_one, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["amount"] == {"amount": "80.00", "currency": "USD"}
    ramp = {**year_one, "amount": {"amount": "90", "currency": "USD"}, "effective_from": "2024-07-01",
            "effective_to": None}
    assert api.post(url, ramp, format="json").status_code == 201
    overlap = {**year_one, "effective_from": "2024-06-01", "effective_to": "2024-08-01"}
    response = api.post(url, overlap, format="json")
    assert response.status_code == 400 and "effective_from" in error_of(response)["fields"]

    usage = {"target": "charge", "plan": "ent", "plan_version": 1, "charge": charge.pk, "charge_model": "volume",
             "properties": {"tiers": [{"up_to": "10", "unit_price": "1"}, {"up_to": "5", "unit_price": "0.5"}]}}
    response = api.post(url, usage, format="json")
    fields = error_of(response)["fields"]
    assert set(fields) == {"properties.tiers[1].up_to"}
    messages = fields["properties.tiers[1].up_to"]
    assert any("greater than the previous tier's bound (10)" in m for m in messages)
    assert any("last tier must be open" in m for m in messages)
    usage["properties"]["tiers"][1]["up_to"] = None
    assert api.post(url, usage, format="json").status_code == 201
    response = api.post(url, {**usage, "charge": 999_999}, format="json")
    assert "charge" in error_of(response)["fields"]
    response = api.post(url, {**year_one, "plan": "ent", "plan_version": 7}, format="json")
    assert error_of(response)["fields"] == {"plan_version": ["Plan ent has no version 7."]}

    fixed = {"target": "fixed_charge", "plan": "ent", "plan_version": 1, "fixed_charge": "support",
             "amount": {"amount": "0", "currency": "USD"}}
    assert api.post(url, fixed, format="json").status_code == 201

    prices = api.get("/api/v1/contracts/CT-1").json()["prices"]
    assert [(p["target"], p["effective_from"], p["effective_to"]) for p in prices] == [
        ("base_fee", None, "2024-07-01"),
        ("base_fee", "2024-07-01", None),
        ("charge", None, None),
        ("fixed_charge", None, None),
    ]
    assert ContractPrice.objects.get(target="fixed_charge").amount == Money(0, "USD")


def test_commitments_and_entitlements(api, setup):
    create_contract(api)
    response = api.post(
        "/api/v1/contracts/CT-1/commitments",
        {"kind": "minimum_spend", "amount": {"amount": "10000", "currency": "USD"}, "period": "year"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["amount"] == {"amount": "10000.00", "currency": "USD"}
    response = api.post(
        "/api/v1/contracts/CT-1/commitments",
        {"kind": "prepaid", "amount": {"amount": "0", "currency": "USD"}},
        format="json",
    )
    assert "amount.amount" in error_of(response)["fields"]
    response = api.post(
        "/api/v1/contracts/CT-1/commitments",
        {"kind": "prepaid", "amount": {"amount": "5", "currency": "EUR"}},
        format="json",
    )
    assert "amount" in error_of(response)["fields"]
    response = api.post("/api/v1/contracts/CT-1/entitlements", {"feature": "seats", "limit": "250"}, format="json")
    assert response.json() == {"feature": "seats", "enabled": True, "limit": "250"}
    contract = api.get("/api/v1/contracts/CT-1").json()
    assert len(contract["commitments"]) == 1 and contract["entitlements"][0]["limit"] == "250"


def test_activate_renew_cancel_and_illegal_transitions(api, setup):
    create_contract(api, status="draft")
    response = api.post("/api/v1/contracts/CT-1/activate")
    assert response.status_code == 200 and response.json()["status"] == "active"
    response = api.post("/api/v1/contracts/CT-1/activate")
    assert response.status_code == 409 and error_of(response)["code"] == "invalid_transition"

    response = api.post("/api/v1/contracts/CT-1/renew")
    assert response.status_code == 200
    assert response.json()["end_date"] == "2026-01-01"

    response = api.post("/api/v1/contracts/CT-1/cancel", {"reason": "churned"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "canceled" and body["auto_renew"] is False
    assert api.post("/api/v1/contracts/CT-1/cancel", {}, format="json").status_code == 409
    assert api.post("/api/v1/contracts/CT-1/renew").status_code == 409
    response = api.post(
        "/api/v1/contracts/CT-1/commitments",
        {"kind": "prepaid", "amount": {"amount": "5", "currency": "USD"}},
        format="json",
    )
    assert response.status_code == 409


def test_evergreen_contract_cannot_renew(api, setup):
    create_contract(api, reference="EVER", end_date=None, auto_renew=False, renewal_term_months=None)
    response = api.post("/api/v1/contracts/EVER/renew")
    assert response.status_code == 409
    assert "evergreen" in error_of(response)["message"]


def test_contract_filters(api, setup, entity):
    CustomerFactory(external_id="other", billing_entity=entity)
    create_contract(api)
    create_contract(api, customer="other", reference="CT-2", status="draft")
    listed = api.get("/api/v1/contracts", {"customer": "other"}).json()
    assert [c["reference"] for c in listed["results"]] == ["CT-2"]
    assert [c["reference"] for c in api.get("/api/v1/contracts", {"status": "active"}).json()["results"]] == ["CT-1"]
    assert api.get("/api/v1/contracts", {"start_after": date(2025, 1, 1).isoformat()}).json()["count"] == 0
