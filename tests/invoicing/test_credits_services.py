"""Coupons, promotional and prepaid credit, one-off charges and installment plans, through the services."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from djmoney.money import Money
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.errors import BillingError, InvalidTransition
from invoicing.models import AppliedCoupon, Invoice, InvoiceLine, PendingCharge, Wallet
from invoicing.pricing.rounding import allocate_by_largest_remainder
from invoicing.services.credits import (
    add_one_off_charge,
    apply_coupon,
    create_installment_plan,
    grant_credit,
    purchase_prepaid_credit,
    remove_coupon,
)
from invoicing.services.documents import ManualLine, create_one_off_invoice
from tests.factories import BillingEntityFactory, CouponFactory, CustomerFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2024, 1, 15, 12, tzinfo=UTC)


@pytest.fixture
def customer():
    return CustomerFactory(billing_entity=BillingEntityFactory(timezone="UTC"), timezone="UTC")


# --- coupons ---------------------------------------------------------------------------------------------------


def test_apply_and_remove_coupon(customer, actor):
    coupon = CouponFactory()
    applied = apply_coupon(customer, coupon, actor=actor, now=NOW)
    assert applied.status == AppliedCoupon.Status.ACTIVE
    with pytest.raises(BillingError, match="already active") as exc:
        apply_coupon(customer, coupon, actor=actor, now=NOW)
    assert exc.value.field == "coupon"
    removed = remove_coupon(applied, actor=actor, now=NOW)
    assert removed.status == AppliedCoupon.Status.REMOVED
    with pytest.raises(InvalidTransition):
        remove_coupon(applied, actor=actor, now=NOW)
    assert apply_coupon(customer, coupon, actor=actor, now=NOW).status == AppliedCoupon.Status.ACTIVE


def test_coupon_rules(customer, actor):
    with pytest.raises(BillingError, match="not active"):
        apply_coupon(customer, CouponFactory(is_active=False), actor=actor, now=NOW)
    with pytest.raises(BillingError, match="redeemed until"):
        apply_coupon(customer, CouponFactory(redeem_by=NOW - timedelta(seconds=1)), actor=actor, now=NOW)
    limited = CouponFactory(max_redemptions=1)
    apply_coupon(customer, limited, actor=actor, now=NOW)
    other = CustomerFactory(billing_entity=customer.billing_entity)
    with pytest.raises(BillingError, match="redemptions"):
        apply_coupon(other, limited, actor=actor, now=NOW)


# --- promotional credit ----------------------------------------------------------------------------------------


def test_grant_credit(customer, actor):
    grant = grant_credit(customer, amount=Decimal("50.00"), currency="usd", reason="Goodwill", actor=actor, now=NOW,
                         expires_on=date(2024, 6, 1))
    assert (grant.amount, grant.remaining, grant.currency) == (Decimal("50.00"), Decimal("50.00"), "USD")


@pytest.mark.parametrize(
    ("amount", "currency", "field"),
    [
        (Decimal("0"), "USD", "amount"),
        (Decimal("-5"), "USD", "amount"),
        (Decimal("1.005"), "USD", "amount"),
        (Decimal("10.5"), "JPY", "amount"),
        (Decimal("1e16"), "USD", "amount"),
        (Decimal("10"), "XXZ", "currency"),
    ],
)
def test_grant_credit_refuses_bad_amounts(customer, actor, amount, currency, field):
    with pytest.raises(BillingError) as exc:
        grant_credit(customer, amount=amount, currency=currency, reason="x", actor=actor, now=NOW)
    assert exc.value.field == field


def test_grant_credit_refuses_past_expiry_and_blank_reason(customer, actor):
    with pytest.raises(BillingError) as exc:
        grant_credit(customer, amount=Decimal(1), currency="USD", reason="x", expires_on=date(2024, 1, 15),
                     actor=actor, now=NOW)
    assert exc.value.field == "expires_on"
    with pytest.raises(BillingError) as exc:
        grant_credit(customer, amount=Decimal(1), currency="USD", reason="  ", actor=actor, now=NOW)
    assert exc.value.field == "reason"


def test_promotional_credit_discounts_next_invoice(customer, actor):
    grant = grant_credit(customer, amount=Decimal("30.00"), currency="USD", reason="Promo", actor=actor, now=NOW)
    invoice = create_one_off_invoice(customer, [ManualLine("Setup", Decimal("100.00"))], actor=actor, now=NOW)
    assert invoice.discount_total == Decimal("30.00")
    grant.refresh_from_db()
    assert grant.remaining == 0


# --- prepaid credit --------------------------------------------------------------------------------------------


def test_purchase_prepaid_credit_tops_up_wallet_and_pays_next_invoice(customer, actor):
    purchase = purchase_prepaid_credit(customer, amount=Decimal("200.00"), expires_on=date(2025, 1, 1), actor=actor,
                                       now=NOW)
    assert purchase.status == Invoice.Status.FINALIZED and purchase.kind == Invoice.Kind.CREDIT_PURCHASE
    [line] = purchase.lines.all()
    assert line.kind == InvoiceLine.Kind.CREDIT_PURCHASE
    assert line.explanation["expires_on"] == "2025-01-01" and line.explanation["manual"] is False
    assert purchase.tax_total == 0 and purchase.total == Decimal("200.00")
    wallet = Wallet.objects.get(customer=customer, currency="USD")
    assert wallet.balance == Decimal("200.00")
    invoice = create_one_off_invoice(customer, [ManualLine("Work", Decimal("120.00"))], actor=actor, now=NOW,
                                     finalize=True)
    assert invoice.prepaid_credit_applied == Decimal("120.00") and invoice.amount_due == 0
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("80.00")


def test_purchase_as_draft_does_not_top_up(customer, actor):
    draft = purchase_prepaid_credit(customer, amount=Decimal("10.00"), actor=actor, now=NOW, finalize=False)
    assert draft.status == Invoice.Status.DRAFT
    assert not Wallet.objects.filter(customer=customer).exists()
    with pytest.raises(BillingError):
        purchase_prepaid_credit(customer, amount=Decimal("-1"), actor=actor, now=NOW)


# --- one-off charges and installments ---------------------------------------------------------------------------


def test_add_one_off_charge(customer, actor):
    charge = add_one_off_charge(customer, description=" Onboarding ", unit_price=Decimal("0.0000015"),
                                quantity=Decimal("1000000"), bill_on=date(2024, 2, 1), actor=actor, now=NOW)
    assert charge.description == "Onboarding" and charge.currency == "USD" and charge.invoice is None
    for kwargs, field in [
        ({"unit_price": Decimal("-1")}, "unit_price"),
        ({"unit_price": Decimal("0")}, "unit_price"),
        ({"quantity": Decimal("0")}, "quantity"),
        ({"description": ""}, "description"),
        ({"description": "x" * 201}, "description"),
    ]:
        args = {"description": "Fee", "unit_price": Decimal("5"), "quantity": Decimal(1), **kwargs}
        with pytest.raises(BillingError) as exc:
            add_one_off_charge(customer, bill_on=date(2024, 2, 1), actor=actor, now=NOW, **args)
        assert exc.value.field == field


def test_installment_plan_splits_exactly_by_month(customer, actor):
    plan = create_installment_plan(customer, description="Implementation", total=Decimal("100.00"), installments=3,
                                   first_bill_on=date(2024, 1, 31), actor=actor, now=NOW)
    charges = list(PendingCharge.objects.filter(installment_plan=plan).order_by("installment_number"))
    assert [c.unit_price for c in charges] == [Decimal("33.34"), Decimal("33.33"), Decimal("33.33")]
    assert [c.bill_on for c in charges] == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31)]
    assert [c.installment_number for c in charges] == [1, 2, 3]


def test_installment_plan_refusals(customer, actor):
    for kwargs, field in [
        ({"installments": 0}, "installments"),
        ({"installments": 121}, "installments"),
        ({"total": Decimal("0.02"), "installments": 3}, "installments"),
        ({"total": Decimal("-10")}, "total"),
    ]:
        args = {"description": "Fee", "total": Decimal("10.00"), "installments": 2, **kwargs}
        with pytest.raises(BillingError) as exc:
            create_installment_plan(customer, first_bill_on=date(2024, 2, 1), actor=actor, now=NOW, **args)
        assert exc.value.field == field


@settings(max_examples=50, deadline=None)
@given(cents=st.integers(min_value=1, max_value=10**12), count=st.integers(min_value=1, max_value=120))
def test_equal_split_adds_up(cents, count):
    total = Decimal(cents).scaleb(-2)
    parts = allocate_by_largest_remainder(total, [Decimal(1)] * count, "USD")
    assert sum(parts) == total
    assert max(parts) - min(parts) <= Decimal("0.01")
    assert parts == sorted(parts, reverse=True)


def test_fixed_coupon_in_other_currency_can_still_be_applied(customer, actor):
    coupon = CouponFactory(discount_type="fixed", percent_off=None, amount_off=Money("5.00", "EUR"))
    assert apply_coupon(customer, coupon, actor=actor, now=NOW).coupon_id == coupon.pk
