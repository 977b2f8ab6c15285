"""'Record a modification…' on a revenue contract's admin page, on the annual 12,000.00 obligation of
tests/revrec/test_modifications.py (2026-01-01 .. 2027-01-01, 365 days), upgraded on 2026-07-01 by 6,000.00.

Recognised through 30 June (181 days): round(12000 x 181/365 = 5950.684) = 5,950.68.
- Prospective: 12,000 - 5,950.68 + 6,000 = 12,049.32 over the 184 days from 1 July; July = round(12049.32 x
  31/184 = 2030.0485) = 2,030.05.
- Cumulative catch-up: round(18000 x 181/365 = 8926.027) = 8,926.03 - 5,950.68 = 2,975.35 on 1 July.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN, REVENUE_ACCOUNTANT
from revrec.models import ContractModification, PerformanceObligation
from revrec.services.recognition import recognize_through
from tests.admin.support import client_for
from tests.api.test_revrec_modifications_api import NOW, build_annual
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def annual(actor) -> PerformanceObligation:
    obligation = build_annual()
    assert recognize_through(date(2026, 6, 30), actor=actor, now=NOW).amounts["USD"] == D("5950.68")
    return obligation


def modify_url(obligation: PerformanceObligation) -> str:
    return reverse("admin:revrec_revenuecontract_modify", args=[obligation.revenue_contract_id])


def change_url(obligation: PerformanceObligation) -> str:
    return reverse("admin:revrec_revenuecontract_change", args=[obligation.revenue_contract_id])


def form_data(client, obligation: PerformanceObligation, **overrides) -> dict:
    """The form as shown (its hidden source_key included), filled in for the upgrade."""
    page = client.get(modify_url(obligation))
    assert page.status_code == 200
    key = page.context["form"].initial["source_key"]
    assert key.startswith("admin:")
    data = {"change": "upgrade", "effective_date": "2026-07-01", "adds_distinct_goods": "on",
            "remaining_distinct": "on", "treatment": "", "source_key": key,
            f"price_change_{obligation.pk}": "6000.00", f"new_end_{obligation.pk}": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize("role", [FINANCE_ADMIN, REVENUE_ACCOUNTANT])
def test_prospective_upgrade_and_double_submit(annual, actor, role):
    client = client_for(role)
    page = client.get(change_url(annual))
    assert "Record a modification…" in page.content.decode()
    form = client.get(modify_url(annual)).content.decode()
    assert "25-12(a)" in form and "25-13(a)" in form and "Annual plan" in form
    data = form_data(client, annual)
    response = client.post(modify_url(annual), data, follow=True)
    assert response.redirect_chain[-1][0] == change_url(annual)
    text = " ".join(str(m) for m in response.context["messages"])
    assert "Modification recorded: Prospective" in text and "25-13(a)" in text and "Catch-up: 0.00" in text
    modification = ContractModification.objects.get()
    assert (modification.treatment, modification.price_change, modification.source_key) == (
        "prospective", D("6000.00"), data["source_key"])
    assert modification.details["remaining_reallocated"] == "12049.32"
    annual.refresh_from_db()
    assert (annual.allocated_price, annual.rebased_amount) == (D("18000.00"), D("5950.68"))
    assert recognize_through(date(2026, 7, 31), actor=actor, now=NOW).amounts["USD"] == D("2030.05")
    # The same form submitted again: recorded once.
    again = client.post(modify_url(annual), data, follow=True)
    assert "already recorded" in " ".join(str(m) for m in again.context["messages"])
    assert ContractModification.objects.count() == 1


def test_catch_up(annual):
    client = client_for(REVENUE_ACCOUNTANT)
    data = form_data(client, annual, adds_distinct_goods=None, remaining_distinct=None)
    response = client.post(modify_url(annual), data, follow=True)
    assert "Catch-up: 2,975.35" in " ".join(str(m) for m in response.context["messages"])
    assert ContractModification.objects.get().catch_up_amount == D("2975.35")


@pytest.mark.parametrize("role", [BILLING_OPERATOR, AUDITOR])
def test_other_roles_are_refused(annual, role):
    client = client_for(role)
    page = client.get(change_url(annual))
    assert page.status_code == 200 and "Record a modification" not in page.content.decode()
    assert client.get(modify_url(annual)).status_code == 403
    assert client.post(modify_url(annual), {"change": "upgrade"}).status_code == 403
    assert not ContractModification.objects.exists()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"change": "teleport"}, "change"),
    ({"effective_date": "2026-02-30"}, "effective_date"),
    ({"effective_date": "0001-01-01"}, "effective_date"),
    ({"treatment": "whatever"}, "treatment"),
    ({"source_key": "admin:'; drop table"}, "source_key"),
    ({"price_change_{pk}": "1.001"}, "price_change_{pk}"),
    ({"price_change_{pk}": "NaN"}, "price_change_{pk}"),
    ({"price_change_{pk}": "1e30"}, "price_change_{pk}"),
    ({"new_end_{pk}": "not a date"}, "new_end_{pk}"),
    ({"price_change_{pk}": "", "new_end_{pk}": ""}, "__all__"),
])
def test_bad_input_shows_form_errors(annual, overrides, field):
    client = client_for(FINANCE_ADMIN)
    overrides = {k.format(pk=annual.pk): v for k, v in overrides.items()}
    response = client.post(modify_url(annual), form_data(client, annual, **overrides))
    assert response.status_code == 200
    assert field.format(pk=annual.pk) in response.context["form"].errors
    assert not ContractModification.objects.exists()


def test_service_refusal_is_a_form_error(annual):
    client = client_for(FINANCE_ADMIN)
    # Both 25-12 facts make it a separate contract, which only adds goods: the service refuses it.
    response = client.post(modify_url(annual), form_data(client, annual, priced_at_ssp="on"))
    assert response.status_code == 200
    assert "separate contract" in str(response.context["form"].non_field_errors())
    # A new end before the start.
    response = client.post(modify_url(annual), form_data(client, annual, **{f"new_end_{annual.pk}": "2025-06-01"}))
    assert response.status_code == 200 and response.context["form"].non_field_errors()
    assert not ContractModification.objects.exists()


def test_unknown_contract_is_404():
    client = client_for(FINANCE_ADMIN)
    assert client.get(reverse("admin:revrec_revenuecontract_modify", args=[999999])).status_code == 404


def test_added_product_as_a_separate_contract(annual):
    """A 6,000.00 add-on at its SSP for 2026-07-01 .. 2027-01-01: its own contract RC-ANNUAL-M1."""
    product = ProductFactory(code="addon")
    client = client_for(FINANCE_ADMIN)
    data = form_data(client, annual, change="added_product", priced_at_ssp="on", added_description="Add-on",
                     added_product="addon", added_price="6000.00", added_pattern="ratable", added_start="2026-07-01",
                     added_end="2027-01-01", **{f"price_change_{annual.pk}": ""})
    response = client.post(modify_url(annual), data, follow=True)
    assert "Separate contract" in " ".join(str(m) for m in response.context["messages"])
    new = ContractModification.objects.get().separate_contract
    assert (new.reference, new.transaction_price) == ("RC-ANNUAL-M1", D("6000.00"))
    assert new.obligations.get().product == product
    # A price without a description, and a description without a price: form errors.
    for extra, field in (({"added_price": "1.00"}, "added_description"), ({"added_description": "X"}, "added_price")):
        response = client.post(modify_url(annual), form_data(client, annual, **extra))
        assert field in response.context["form"].errors
