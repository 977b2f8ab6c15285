"""Products, features, meters, plans and their versions (charges, fixed charges, entitlements), coupons."""

from decimal import Decimal

import pytest
from djmoney.money import Money

from contracts.models import Charge, Coupon, Plan, PlanVersion
from tests.api.conftest import error_of
from tests.factories import FeatureFactory, MeterFactory, ProductFactory
from usage.models import Meter

pytestmark = pytest.mark.django_db

GRADUATED = {"tiers": [{"up_to": "1000", "unit_price": "0"}, {"up_to": None, "unit_price": "0.0000015"}]}


@pytest.fixture
def catalog(db):
    ProductFactory(code="api")
    MeterFactory(code="calls", aggregation="count")
    FeatureFactory(code="sso", kind="switch")
    FeatureFactory(code="projects", kind="limit")


def create_plan(api, code="pro", **extra):
    payload = {"code": code, "name": "Pro", "product": "api", "currency": "USD", "interval": "month", **extra}
    response = api.post("/api/v1/plans", payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_products_and_features(api):
    response = api.post("/api/v1/products", {"code": "api", "name": "API", "tax_code": "saas"}, format="json")
    assert response.status_code == 201
    assert api.patch("/api/v1/products/api", {"is_active": False}, format="json").json()["is_active"] is False
    assert api.get("/api/v1/products", {"is_active": "false"}).json()["count"] == 1
    response = api.post("/api/v1/features", {"code": "seats", "name": "Seats", "kind": "limit"}, format="json")
    assert response.status_code == 201
    response = api.patch("/api/v1/features/seats", {"kind": "switch"}, format="json")
    assert error_of(response)["fields"] == {"kind": ["Cannot be changed after creation."]}
    response = api.post("/api/v1/products", {"code": "bad code!", "name": "X"}, format="json")
    assert "code" in error_of(response)["fields"]


def test_meters_go_through_the_meter_service(api):
    response = api.post(
        "/api/v1/meters",
        {"code": "tokens", "name": "Tokens", "aggregation": "sum", "field_name": "tokens",
         "filters": {"model": ["gpt", "claude"]}, "group_by": ["model"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["filters"] == {"model": ["gpt", "claude"]}
    response = api.post(
        "/api/v1/meters", {"code": "m2", "name": "M", "aggregation": "sum"}, format="json"
    )
    assert "field_name" in error_of(response)["fields"]
    response = api.post(
        "/api/v1/meters",
        {"code": "m3", "name": "M", "aggregation": "count", "group_by": "region"},
        format="json",
    )
    assert "group_by" in error_of(response)["fields"]
    assert api.patch("/api/v1/meters/tokens", {"unit": "tokens"}, format="json").json()["unit"] == "tokens"
    assert Meter.objects.count() == 1


def test_create_plan_returns_a_draft_version_1(api, catalog):
    body = create_plan(api, base_fee={"amount": "49", "currency": "USD"}, trial_days=14)
    assert (body["plan"], body["version"], body["status"]) == ("pro", 1, "draft")
    assert body["base_fee"] == {"amount": "49.00", "currency": "USD"}
    assert body["trial_days"] == 14 and body["charges"] == [] and body["minimum_commitment"] is None
    plan = api.get("/api/v1/plans/pro").json()
    assert plan["versions"] == [{"version": 1, "status": "draft", "published_at": None}]
    assert (plan["product"], plan["currency"], plan["interval"]) == ("api", "USD", "month")
    response = api.patch("/api/v1/plans/pro", {"currency": "EUR", "interval": "year"}, format="json")
    assert set(error_of(response)["fields"]) == {"currency", "interval"}
    response = api.patch("/api/v1/plans/pro", {"name": "Pro 2024", "currency": "USD"}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "Pro 2024"
    response = api.post(
        "/api/v1/plans",
        {"code": "pro", "name": "Pro", "product": "api", "currency": "USD", "interval": "month"},
        format="json",
    )
    assert error_of(response)["fields"] == {"code": ["A plan with this code already exists."]}


def test_plan_input_errors(api, catalog):
    response = api.post(
        "/api/v1/plans",
        {"code": "x", "name": "X", "product": "nope", "currency": "XYZ", "interval": "fortnight", "trial_days": -1},
        format="json",
    )
    assert set(error_of(response)["fields"]) == {"product", "currency", "interval", "trial_days"}
    assert not Plan.objects.exists()


def test_build_a_version_and_publish_it(api, catalog):
    create_plan(api)
    response = api.post(
        "/api/v1/plans/pro/versions/1/charges",
        {"meter": "calls", "charge_model": "graduated", "properties": GRADUATED, "group_by": ["region"],
         "minimum_amount": {"amount": "10", "currency": "USD"}, "display_name": "API calls"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    charge = response.json()
    assert charge["meter"] == "calls" and charge["group_by"] == ["region"]
    assert charge["properties"]["tiers"][1]["unit_price"] == "0.0000015"
    assert charge["minimum_amount"] == {"amount": "10.00", "currency": "USD"}

    response = api.post(
        "/api/v1/plans/pro/versions/1/fixed-charges",
        {"code": "support", "name": "Support", "amount": {"amount": "20.5", "currency": "USD"}, "quantity": "2"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["amount"] == {"amount": "20.50", "currency": "USD"} and response.json()["quantity"] == "2"
    duplicate = api.post(
        "/api/v1/plans/pro/versions/1/fixed-charges",
        {"code": "support", "name": "Support", "amount": {"amount": "1", "currency": "USD"}},
        format="json",
    )
    assert "code" in error_of(duplicate)["fields"]

    assert api.post(
        "/api/v1/plans/pro/versions/1/entitlements", {"feature": "sso"}, format="json"
    ).status_code == 200
    response = api.post(
        "/api/v1/plans/pro/versions/1/entitlements", {"feature": "projects", "limit": "5", "per_unit": True},
        format="json",
    )
    assert response.json() == {"feature": "projects", "enabled": True, "limit": "5", "per_unit": True}
    response = api.post("/api/v1/plans/pro/versions/1/entitlements", {"feature": "projects"}, format="json")
    assert "limit" in error_of(response)["fields"]

    response = api.patch(
        "/api/v1/plans/pro/versions/1", {"base_fee": {"amount": "99", "currency": "USD"}}, format="json"
    )
    assert response.status_code == 200 and response.json()["base_fee"]["amount"] == "99.00"

    response = api.post("/api/v1/plans/pro/versions/1/publish")
    assert response.status_code == 200
    version = response.json()
    assert version["status"] == "published" and version["published_at"]
    assert [c["display_name"] for c in version["charges"]] == ["API calls"]
    assert [f["code"] for f in version["fixed_charges"]] == ["support"]
    assert [e["feature"] for e in version["entitlements"]] == ["projects", "sso"]


def test_published_versions_refuse_edits_with_409(api, catalog):
    create_plan(api)
    api.post("/api/v1/plans/pro/versions/1/publish")
    response = api.post("/api/v1/plans/pro/versions/1/publish")
    assert response.status_code == 409
    assert error_of(response)["code"] == "invalid_transition"
    response = api.post(
        "/api/v1/plans/pro/versions/1/charges",
        {"meter": "calls", "charge_model": "standard", "properties": {"unit_price": "1"}},
        format="json",
    )
    assert response.status_code == 409
    assert api.patch("/api/v1/plans/pro/versions/1", {"trial_days": 3}, format="json").status_code == 409
    assert not Charge.objects.exists()


def test_new_version_copies_the_latest_and_archive(api, catalog):
    create_plan(api, base_fee={"amount": "49", "currency": "USD"})
    api.post(
        "/api/v1/plans/pro/versions/1/charges",
        {"meter": "calls", "charge_model": "standard", "properties": {"unit_price": "0.01"}},
        format="json",
    )
    api.post("/api/v1/plans/pro/versions/1/publish")
    response = api.post("/api/v1/plans/pro/versions", {}, format="json")
    assert response.status_code == 201, response.json()
    v2 = response.json()
    assert (v2["version"], v2["status"], v2["base_fee"]["amount"]) == (2, "draft", "49.00")
    assert [c["properties"] for c in v2["charges"]] == [{"unit_price": "0.01"}]
    assert api.post("/api/v1/plans/pro/versions", {}, format="json").status_code == 409  # one draft at a time
    response = api.post("/api/v1/plans/pro/versions", {"copy_from": 9}, format="json")
    assert error_of(response)["fields"] == {"copy_from": ["Plan pro has no version 9."]}

    charge_id = v2["charges"][0]["id"]
    response = api.patch(
        f"/api/v1/plans/pro/versions/2/charges/{charge_id}",
        {"properties": {"unit_price": "0.02"}},
        format="json",
    )
    assert response.status_code == 200 and response.json()["properties"] == {"unit_price": "0.02"}
    assert api.delete(f"/api/v1/plans/pro/versions/2/charges/{charge_id}").status_code == 204
    assert not PlanVersion.objects.get(plan__code="pro", version=2).charges.exists()
    assert PlanVersion.objects.get(plan__code="pro", version=1).charges.count() == 1

    assert api.post("/api/v1/plans/pro/versions/1/archive").json()["status"] == "archived"
    assert api.post("/api/v1/plans/pro/versions/2/archive").status_code == 409  # a draft is not archived
    listed = api.get("/api/v1/plans/pro/versions").json()
    assert [v["version"] for v in listed["results"]] == [2, 1]
    assert api.get("/api/v1/plans/pro/versions", {"status": "archived"}).json()["count"] == 1


def test_charge_properties_errors_for_each_model(api, catalog):
    create_plan(api)
    url = "/api/v1/plans/pro/versions/1/charges"
    cases = [
        ({"charge_model": "standard", "properties": {"unit_price": 0.1}}, None),  # a JSON number, read exactly
        ({"charge_model": "standard", "properties": {"unit_price": "-1"}}, "properties.unit_price"),
        ({"charge_model": "package", "properties": {"package_size": "0", "package_price": "5"}},
         "properties.package_size"),
        ({"charge_model": "volume", "properties": {"tiers": []}}, "properties.tiers"),
        ({"charge_model": "percentage", "properties": {"rate": "150"}}, "properties.rate"),
        ({"charge_model": "standard", "properties": "cheap"}, "properties"),
        ({"charge_model": "magic", "properties": {}}, "charge_model"),
    ]
    for body, field in cases:
        response = api.post(url, {"meter": "calls", **body}, format="json")
        if field is None:
            assert response.status_code == 201, response.json()
            assert response.json()["properties"] == {"unit_price": "0.1"}
        else:
            assert response.status_code == 400, body
            assert field in error_of(response)["fields"], (body, response.json())
    response = api.post(url, {"meter": "nope", "charge_model": "standard", "properties": {"unit_price": "1"}},
                        format="json")
    assert "meter" in error_of(response)["fields"]
    response = api.post(
        url, {"meter": "calls", "charge_model": "standard", "properties": {"unit_price": "1"},
              "filters": {"region": []}},
        format="json",
    )
    assert "filters.region" in error_of(response)["fields"]
    assert Charge.objects.count() == 1


def test_migrate_subscriptions_endpoint(api, catalog):
    create_plan(api)
    api.post("/api/v1/plans/pro/versions/1/publish")
    api.post("/api/v1/plans/pro/versions", {}, format="json")
    response = api.post("/api/v1/plans/pro/versions/1/migrate-subscriptions", {"to_version": 2}, format="json")
    assert response.status_code == 400 and "to_version" in error_of(response)["fields"]  # v2 is a draft
    api.post("/api/v1/plans/pro/versions/2/publish")
    response = api.post("/api/v1/plans/pro/versions/1/migrate-subscriptions", {"to_version": 2}, format="json")
    assert response.json() == {"migrated": 0}


def test_coupons(api, catalog):
    create_plan(api)
    response = api.post(
        "/api/v1/coupons",
        {"code": "LAUNCH", "name": "Launch", "discount_type": "fixed",
         "amount_off": {"amount": "25", "currency": "USD"}, "duration": "repeating", "duration_periods": 3,
         "applies_to_plans": ["pro"], "applies_to_meters": ["calls"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["amount_off"] == {"amount": "25.00", "currency": "USD"} and body["applies_to_plans"] == ["pro"]
    coupon = Coupon.objects.get(code="LAUNCH")
    assert coupon.amount_off == Money(Decimal("25"), "USD") and coupon.percent_off is None
    response = api.patch("/api/v1/coupons/LAUNCH", {"applies_to_plans": [], "is_active": False}, format="json")
    assert response.json()["applies_to_plans"] == [] and response.json()["is_active"] is False
    response = api.patch("/api/v1/coupons/LAUNCH", {"percent_off": "10"}, format="json")
    assert error_of(response)["fields"] == {"percent_off": ["Cannot be changed after creation."]}
    # The model's own consistency rules come back as field errors, nothing is stored.
    response = api.post(
        "/api/v1/coupons",
        {"code": "BAD", "name": "Bad", "discount_type": "percentage", "duration": "repeating"},
        format="json",
    )
    assert response.status_code == 400
    assert not Coupon.objects.filter(code="BAD").exists()
