"""A customer's coupons, promotional credits, wallet, one-off charges and installment plans over the API."""

import pytest

from invoicing.models import AppliedCoupon, CreditGrant, InstallmentPlan, PendingCharge, Wallet
from tests.api.conftest import error_of
from tests.factories import CouponFactory, CustomerFactory

pytestmark = pytest.mark.django_db
BASE = "/api/v1/customers/acme"


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, external_id="acme", timezone="UTC")


def test_coupons(api, read_api, customer):
    CouponFactory(code="WELCOME")
    applied = api.post(f"{BASE}/coupons", {"coupon": "WELCOME"}, format="json")
    assert applied.status_code == 201, applied.json()
    assert applied.json()["coupon"] == "WELCOME" and applied.json()["status"] == "active"
    twice = api.post(f"{BASE}/coupons", {"coupon": "WELCOME"}, format="json")
    assert twice.status_code == 400 and "coupon" in error_of(twice)["fields"]
    unknown = api.post(f"{BASE}/coupons", {"coupon": "NOPE"}, format="json")
    assert unknown.status_code == 400 and "coupon" in error_of(unknown)["fields"]
    assert api.post("/api/v1/customers/nobody/coupons", {"coupon": "WELCOME"}, format="json").status_code == 404
    assert read_api.post(f"{BASE}/coupons", {"coupon": "WELCOME"}, format="json").status_code == 403
    assert [row["coupon"] for row in read_api.get(f"{BASE}/coupons").json()["results"]] == ["WELCOME"]
    removed = api.delete(f"{BASE}/coupons/{applied.json()['id']}")
    assert removed.status_code == 200 and removed.json()["status"] == "removed"
    assert api.delete(f"{BASE}/coupons/{applied.json()['id']}").status_code == 409
    assert AppliedCoupon.objects.get().status == "removed"


def test_credits(api, customer):
    body = {"amount": {"amount": "25.00", "currency": "USD"}, "reason": "Outage goodwill"}
    granted = api.post(f"{BASE}/credits", body, format="json", HTTP_IDEMPOTENCY_KEY="grant-1")
    assert granted.status_code == 201, granted.json()
    assert granted.json()["remaining"] == {"amount": "25.00", "currency": "USD"}
    replay = api.post(f"{BASE}/credits", body, format="json", HTTP_IDEMPOTENCY_KEY="grant-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert CreditGrant.objects.count() == 1
    assert api.get(f"{BASE}/credits").json()["count"] == 1
    for amount, reason in [("0", "x"), ("-5", "x"), ("1.001", "x"), ("abc", "x"), ("5", ""), ("5", "r" * 201)]:
        bad = api.post(f"{BASE}/credits", {"amount": {"amount": amount, "currency": "USD"}, "reason": reason},
                       format="json")
        assert bad.status_code == 400, (amount, reason)
    assert api.post(f"{BASE}/credits", {"amount": "25", "reason": "x"}, format="json").status_code == 400
    assert CreditGrant.objects.count() == 1


def test_wallet_purchase(api, customer):
    assert api.get(f"{BASE}/wallet").json() == {"customer": "acme", "wallets": []}
    bought = api.post(f"{BASE}/wallet", {"amount": {"amount": "500", "currency": "USD"}, "expires_on": "2999-01-01"},
                      format="json")
    assert bought.status_code == 201, bought.json()
    assert bought.json()["kind"] == "credit_purchase" and bought.json()["status"] == "finalized"
    [wallet] = api.get(f"{BASE}/wallet").json()["wallets"]
    assert wallet["balance"] == {"amount": "500.00", "currency": "USD"}
    assert [t["kind"] for t in wallet["transactions"]] == ["top_up"]
    bad = api.post(f"{BASE}/wallet", {"amount": {"amount": "-1", "currency": "USD"}}, format="json")
    assert bad.status_code == 400
    past = api.post(f"{BASE}/wallet", {"amount": {"amount": "1", "currency": "USD"}, "expires_on": "2000-01-01"},
                    format="json")
    assert past.status_code == 400 and "expires_on" in error_of(past)["fields"]
    assert Wallet.objects.get().balance == 500


def test_one_off_charges_and_installments(api, customer):
    charge = api.post(f"{BASE}/one-off-charges", {"description": "Data migration",
                                                  "unit_price": {"amount": "0.0000015", "currency": "USD"},
                                                  "quantity": "2000000", "bill_on": "2024-03-01"}, format="json")
    assert charge.status_code == 201, charge.json()
    assert charge.json()["unit_price"] == "0.0000015" and charge.json()["bill_on"] == "2024-03-01"
    assert api.get(f"{BASE}/one-off-charges").json()["count"] == 1
    for body in ({"description": "x", "unit_price": {"amount": "-1", "currency": "USD"}},
                 {"description": "x" * 201, "unit_price": {"amount": "1", "currency": "USD"}},
                 {"description": "x", "unit_price": {"amount": "1", "currency": "USD"}, "subscription": "nope"}):
        assert api.post(f"{BASE}/one-off-charges", body, format="json").status_code == 400, body
    plan = api.post(f"{BASE}/installment-plans", {"description": "Implementation", "installments": 3,
                                                  "total": {"amount": "1000.00", "currency": "USD"},
                                                  "first_bill_on": "2024-01-31"}, format="json")
    assert plan.status_code == 201, plan.json()
    assert [c["unit_price"] for c in plan.json()["charges"]] == ["333.34", "333.33", "333.33"]
    assert [c["bill_on"] for c in plan.json()["charges"]] == ["2024-01-31", "2024-02-29", "2024-03-31"]
    bad = api.post(f"{BASE}/installment-plans", {"description": "x", "installments": 0,
                                                 "total": {"amount": "10", "currency": "USD"}}, format="json")
    assert bad.status_code == 400
    assert InstallmentPlan.objects.count() == 1 and PendingCharge.objects.count() == 4
