"""/api/v1/revrec/revenue-contracts/{id}/modifications, on the annual 12,000.00 obligation of
tests/revrec/test_modifications.py (2026-01-01 .. 2027-01-01, 365 days), upgraded on 2026-07-01 by 6,000.00.

Recognised through 30 June (181 days): round(12000 x 181/365 = 5950.684) = 5,950.68.
- Prospective: 12,000 - 5,950.68 + 6,000 = 12,049.32 over the 184 days from 1 July; July = round(12049.32 x
  31/184 = 2030.0485) = 2,030.05.
- Cumulative catch-up: round(18000 x 181/365 = 8926.027) = 8,926.03 - 5,950.68 = 2,975.35 on 1 July.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from revrec.models import ContractModification, PerformanceObligation, RevenueContract
from revrec.services.recognition import recognize_through
from tests.api.conftest import client_for, error_of
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory

pytestmark = pytest.mark.django_db
D = Decimal
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def build_annual(reference: str = "RC-ANNUAL") -> PerformanceObligation:
    entity = BillingEntityFactory(default_currency="USD", timezone="UTC")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    contract = RevenueContract.objects.create(
        billing_entity=entity, customer=customer, reference=reference, currency="USD",
        transaction_price=D("12000.00"), billed=D("12000.00"), created_at=NOW,
    )
    return PerformanceObligation.objects.create(
        revenue_contract=contract, description="Annual plan", kind="subscription", pattern="ratable",
        service_start=date(2026, 1, 1), service_end=date(2027, 1, 1), billed_amount=D("12000.00"),
        billed_on=date(2026, 1, 1), ssp=D("12000.00"), allocated_price=D("12000.00"), created_at=NOW,
    )


@pytest.fixture
def annual(actor) -> PerformanceObligation:
    obligation = build_annual()
    assert recognize_through(date(2026, 6, 30), actor=actor, now=NOW).amounts["USD"] == D("5950.68")
    return obligation


def url(obligation: PerformanceObligation) -> str:
    return f"/api/v1/revrec/revenue-contracts/{obligation.revenue_contract_id}/modifications"


def body(obligation: PerformanceObligation, **overrides) -> dict:
    return {"change": "upgrade", "effective_date": "2026-07-01", "adds_distinct_goods": True, "priced_at_ssp": False,
            "remaining_distinct": True,
            "obligation_changes": [{"obligation": obligation.pk, "price_change": "6000.00"}], **overrides}


def test_prospective_upgrade(annual, api, actor):
    response = api.post(url(annual), body(annual), format="json", HTTP_IDEMPOTENCY_KEY="upgrade-1")
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["change"], data["treatment"], data["effective_date"]) == ("upgrade", "prospective", "2026-07-01")
    assert "25-13(a)" in data["rationale"]
    assert data["price_change"] == {"amount": "6000.00", "currency": "USD"}
    assert data["catch_up_amount"] == {"amount": "0.00", "currency": "USD"}
    assert data["separate_contract"] is None
    assert data["details"]["remaining_reallocated"] == "12049.32"
    assert data["details"]["facts"] == {"adds_distinct_goods": True, "priced_at_ssp": False,
                                        "remaining_distinct": True}
    modification = ContractModification.objects.get()
    assert modification.source_key.startswith("api:") and modification.source_key.endswith(":upgrade-1")
    annual.refresh_from_db()
    assert (annual.allocated_price, annual.rebased_on, annual.rebased_amount) == (
        D("18000.00"), date(2026, 7, 1), D("5950.68"))
    assert recognize_through(date(2026, 7, 31), actor=actor, now=NOW).amounts["USD"] == D("2030.05")

    # The same key and body: the stored response, nothing recorded twice.
    again = api.post(url(annual), body(annual), format="json", HTTP_IDEMPOTENCY_KEY="upgrade-1")
    assert (again.status_code, again["Idempotent-Replayed"], again.json()["id"]) == (201, "true", data["id"])
    # The same key, another body: refused.
    other = api.post(url(annual), body(annual, change="downgrade"), format="json", HTTP_IDEMPOTENCY_KEY="upgrade-1")
    assert other.status_code == 409
    assert ContractModification.objects.count() == 1

    listed = api.get(url(annual)).json()
    assert [row["id"] for row in listed["results"]] == [data["id"]]
    assert listed["results"][0]["price_change"] == {"amount": "6000.00", "currency": "USD"}


def test_catch_up_and_override(annual, api):
    response = api.post(url(annual), body(annual, adds_distinct_goods=False, remaining_distinct=False),
                        format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["treatment"], data["catch_up_amount"]["amount"]) == ("cumulative_catch_up", "2975.35")
    # The accountant overrides the rule: the rationale says so.
    second = build_annual("RC-OTHER")
    response = api.post(url(second), body(second, treatment="cumulative_catch_up"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["treatment"] == "cumulative_catch_up"
    assert response.json()["rationale"].startswith("Chosen by")


def test_separate_contract_with_an_added_obligation(annual, api):
    ProductFactory(code="addon")
    added = {"description": "Add-on", "product": "addon", "price": "6000.00", "service_start": "2026-07-01",
             "service_end": "2027-01-01", "pattern": "ratable"}
    response = api.post(url(annual), body(annual, change="added_product", priced_at_ssp=True, obligation_changes=[],
                                          added_obligations=[added]), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["treatment"] == "separate_contract"
    new = RevenueContract.objects.get(pk=data["separate_contract"])
    assert (new.reference, new.transaction_price) == ("RC-ANNUAL-M1", D("6000.00"))
    assert new.obligations.get().product.code == "addon"


def test_read_only_key_and_anonymous_are_refused(annual, read_api):
    assert read_api.post(url(annual), body(annual), format="json").status_code == 403
    assert client_for(None).post(url(annual), body(annual), format="json").status_code == 401
    assert read_api.get(url(annual)).status_code == 200
    assert not ContractModification.objects.exists()


def test_unknown_contract_is_404(annual, api):
    for contract_id in ("999999", str(2**70)):
        response = api.post(f"/api/v1/revrec/revenue-contracts/{contract_id}/modifications", body(annual),
                            format="json")
        assert response.status_code == 404


@pytest.mark.parametrize(("overrides", "field"), [
    ({"change": "teleport"}, "change"),
    ({"treatment": "whatever"}, "treatment"),
    ({"effective_date": "2026-02-30"}, "effective_date"),
    ({"effective_date": "0001-01-01"}, "effective_date"),
    ({"adds_distinct_goods": "maybe"}, "adds_distinct_goods"),
    ({"obligation_changes": [{"obligation": 999999, "price_change": "1.00"}]}, "obligation_changes"),
    ({"obligation_changes": [{"obligation": "x"}]}, "obligation_changes"),
    ({"obligation_changes": "nope"}, "obligation_changes"),
    ({"obligation_changes": [{"obligation": 1, "price_change": "NaN"}]}, "obligation_changes"),
    ({"obligation_changes": [{"obligation": 1, "price_change": "Infinity"}]}, "obligation_changes"),
    ({"obligation_changes": [{"obligation": 1, "price_change": "1.00001"}]}, "obligation_changes"),
    ({"obligation_changes": [{"obligation": 1, "price_change": "1e30"}]}, "obligation_changes"),
    ({"obligation_changes": [{"obligation": 1, "price_change": "-1E+400"}]}, "obligation_changes"),
    ({"obligation_changes": [{"obligation": n, "price_change": "1.00"} for n in range(1, 102)]},
     "obligation_changes"),
    ({"added_obligations": [{"description": "x" * 301, "price": "1.00"}]}, "added_obligations"),
    ({"added_obligations": [{"description": "A", "price": "-1.00"}]}, "added_obligations"),
    ({"added_obligations": [{"description": "A", "price": "1.00", "product": "nope"}]}, "added_obligations"),
    ({"added_obligations": [{"description": "A", "price": "1.00", "pattern": "sometimes"}]}, "added_obligations"),
    ({"added_obligations": [{"description": "A", "price": "1.00", "service_start": "2026-07-01",
                             "service_end": "2026-06-01"}]}, "added_obligations"),
    ({"added_obligations": [{"description": "A", "price": "1.00"}] * 101}, "added_obligations"),
])
def test_bad_input_names_the_field(annual, api, overrides, field):
    response = api.post(url(annual), body(annual, **overrides), format="json")
    assert response.status_code == 400, response.content
    assert field in str(error_of(response)["fields"]), error_of(response)
    assert not ContractModification.objects.exists()


def test_rules_of_the_service_are_400(annual, api):
    # Not a cent of USD: refused by the service.
    response = api.post(url(annual), body(annual, obligation_changes=[
        {"obligation": annual.pk, "price_change": "1.001"}]), format="json")
    assert response.status_code == 400
    assert "obligation_changes" in error_of(response)["fields"]
    # An obligation of another contract names nothing in this one.
    other = build_annual("RC-OTHER")
    response = api.post(url(annual), body(annual, obligation_changes=[
        {"obligation": other.pk, "price_change": "1.00"}]), format="json")
    assert response.status_code == 400
    assert "obligation_changes" in error_of(response)["fields"]
    # The same obligation twice.
    response = api.post(url(annual), body(annual, obligation_changes=[
        {"obligation": annual.pk, "price_change": "1.00"}] * 2), format="json")
    assert response.status_code == 400
    # A separate contract only adds goods.
    response = api.post(url(annual), body(annual, priced_at_ssp=True), format="json")
    assert response.status_code == 400
    # Hostile strings: NUL refused by the parser, markup stored as text.
    response = api.post(url(annual), body(annual, change="upgrade\x00"), format="json")
    assert response.status_code == 400
    assert not ContractModification.objects.exists()
