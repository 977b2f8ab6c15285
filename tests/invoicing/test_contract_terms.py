"""Contract terms through a real cycle close, with hand-computed figures: usage lines of every charge model
(events ingested through usage.ingestion), group-by, minimums and commitments, contract prices, coupons,
promotional credit, prepaid wallet, one-off charges and installments, consolidated invoices and taxes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from djmoney.money import Money

from contracts.charge_models import validate_charge_properties
from contracts.models import ContractCommitment, ContractPrice, Coupon
from contracts.services.subscriptions import create_subscription
from customers.models import Customer
from invoicing.models import (
    AppliedCoupon,
    CreditGrant,
    InstallmentPlan,
    Invoice,
    InvoiceLine,
    PendingCharge,
    TaxRate,
    Wallet,
    WalletTransaction,
)
from invoicing.services.cycle import close_customer
from tests.factories import (
    BillingEntityFactory,
    ChargeFactory,
    ContractFactory,
    CouponFactory,
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PlanVersionFactory,
)
from usage.ingestion import ingest_events
from usage.models import Meter

pytestmark = pytest.mark.django_db

D = Decimal
K = InvoiceLine.Kind


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


FEB_1 = at(date(2024, 2, 1))
MAR_1 = at(date(2024, 3, 1))
APR_1 = at(date(2024, 4, 1))


@pytest.fixture
def entity():
    return BillingEntityFactory(timezone="UTC", invoice_grace_days=0)


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, timezone="UTC")


def version(base_fee: str = "0.00", currency: str = "USD", interval: str = "month", **extra: Any):
    plan = PlanFactory(currency=currency, interval=interval)
    return PlanVersionFactory(plan=plan, base_fee=Money(base_fee, currency), **extra)


def subscribe(customer: Customer, plan_version, actor, *, contract=None, start: date = date(2024, 1, 1)):
    return create_subscription(customer=customer, plan_version=plan_version, actor=actor, now=at(start),
                               start_date=start, contract=contract)


def send(customer: Customer, meter: Meter, rows: list[tuple[str, dict[str, Any]]], *, now: datetime = FEB_1,
         prefix: str = "e") -> None:
    """Ingest events (timestamp, properties) for the customer through the real write path."""
    events = [
        {"transaction_id": f"{prefix}-{meter.code}-{i}", "customer_external_id": customer.external_id,
         "meter_code": meter.code, "timestamp": ts, "properties": props}
        for i, (ts, props) in enumerate(rows)
    ]
    results = ingest_events(events, now=now)
    assert [r.status for r in results] == ["accepted"] * len(rows), [r.reason for r in results]


def count_events(customer: Customer, meter: Meter, n: int, *, day: str = "2024-01-10", now: datetime = FEB_1,
                 prefix: str = "e", **props: Any) -> None:
    send(customer, meter, [(f"{day}T10:00:{i % 60:02d}Z", dict(props)) for i in range(n)], now=now, prefix=prefix)


def lines_of(invoice: Invoice, *kinds: str) -> list[InvoiceLine]:
    rows = invoice.lines.order_by("position")
    return [line for line in rows if not kinds or line.kind in kinds]


def close_one(customer: Customer, now: datetime, actor) -> Invoice:
    [invoice] = close_customer(customer, now=now, actor=actor)
    return invoice


def usage_plan(model: str, properties: dict[str, Any], *, aggregation: str = Meter.Aggregation.SUM,
               field_name: str = "units", **charge_extra: Any):
    meter = MeterFactory(aggregation=aggregation, field_name="" if aggregation == "count" else field_name)
    pv = version()
    charge = ChargeFactory(plan_version=pv, meter=meter, charge_model=model,
                           properties=validate_charge_properties(model, properties), **charge_extra)
    return pv, meter, charge


# --- usage lines of every charge model ---------------------------------------------------------------------------


def test_standard_usage_line(customer, actor):
    pv, meter, _ = usage_plan("standard", {"unit_price": "0.0015"}, aggregation="count")
    subscribe(customer, pv, actor)
    count_events(customer, meter, 1000)
    invoice = close_one(customer, FEB_1, actor)
    [line] = lines_of(invoice, K.USAGE)
    assert (line.quantity, line.amount) == (D("1000"), D("1.50"))  # 1000 x 0.0015
    assert line.period_start == date(2024, 1, 1) and line.period_end == date(2024, 2, 1)
    assert line.explanation["price_source"] == "plan" and line.explanation["quantity"] == "1000"
    assert invoice.total == D("1.50")


def test_graduated_usage_line_with_flat_fees(customer, actor):
    tiers = [{"up_to": "100", "unit_price": "0.10", "flat_fee": "1"}, {"up_to": None, "unit_price": "0.05",
                                                                        "flat_fee": "2"}]
    pv, meter, _ = usage_plan("graduated", {"tiers": tiers})
    subscribe(customer, pv, actor)
    send(customer, meter, [("2024-01-05T00:00:00Z", {"units": 100}), ("2024-01-25T00:00:00Z", {"units": "50"})])
    [line] = lines_of(close_one(customer, FEB_1, actor), K.USAGE)
    # 100 x 0.10 + 1 + 50 x 0.05 + 2 = 15.50
    assert (line.quantity, line.amount) == (D("150"), D("15.50"))
    assert [t["amount"] for t in line.explanation["tiers"]] == ["11.00", "4.50"]


def test_volume_usage_line(customer, actor):
    tiers = [{"up_to": "100", "unit_price": "0.10", "flat_fee": "0"}, {"up_to": None, "unit_price": "0.08",
                                                                        "flat_fee": "5"}]
    pv, meter, _ = usage_plan("volume", {"tiers": tiers})
    subscribe(customer, pv, actor)
    send(customer, meter, [("2024-01-05T00:00:00Z", {"units": 120}), ("2024-01-06T00:00:00Z", {"units": 30})])
    [line] = lines_of(close_one(customer, FEB_1, actor), K.USAGE)
    assert (line.quantity, line.amount) == (D("150"), D("17.00"))  # 150 x 0.08 + 5


def test_package_usage_line_with_free_units(customer, actor):
    pv, meter, _ = usage_plan("package", {"package_size": "100", "package_price": "5", "free_units": "50"})
    subscribe(customer, pv, actor)
    send(customer, meter, [("2024-01-05T00:00:00Z", {"units": 260})])
    [line] = lines_of(close_one(customer, FEB_1, actor), K.USAGE)
    assert (line.quantity, line.amount) == (D("260"), D("15.00"))  # (260 - 50) -> 3 started packages x 5


def test_percentage_usage_line_with_fixed_fee_free_transactions_and_limits(customer, actor):
    pv, meter, _ = usage_plan("percentage", {
        "rate": "2", "fixed_fee": "0.30", "free_units_per_events": 1,
        "per_transaction_min_amount": "0.50", "per_transaction_max_amount": "3.00",
    }, field_name="amount")
    subscribe(customer, pv, actor)
    send(customer, meter, [
        ("2024-01-02T00:00:00Z", {"amount": "10"}),   # free (the first transaction)
        ("2024-01-03T00:00:00Z", {"amount": "100"}),  # 2.00 + 0.30 = 2.30
        ("2024-01-04T00:00:00Z", {"amount": "200"}),  # 4.30 -> max 3.00
        ("2024-01-05T00:00:00Z", {"amount": "500"}),  # 10.30 -> max 3.00
        ("2024-01-06T00:00:00Z", {"amount": "5"}),    # 0.40 -> min 0.50
    ])
    [line] = lines_of(close_one(customer, FEB_1, actor), K.USAGE)
    assert (line.quantity, line.amount) == (D("815"), D("8.80"))


def test_graduated_percentage_usage_line(customer, actor):
    tiers = [{"up_to": "1000", "rate": "1", "flat_fee": "0"}, {"up_to": None, "rate": "0.5", "flat_fee": "1"}]
    pv, meter, _ = usage_plan("graduated_percentage", {"tiers": tiers}, field_name="amount")
    subscribe(customer, pv, actor)
    send(customer, meter, [("2024-01-05T00:00:00Z", {"amount": "3000"})])
    [line] = lines_of(close_one(customer, FEB_1, actor), K.USAGE)
    assert (line.quantity, line.amount) == (D("3000"), D("21.00"))  # 1000 x 1 % + 2000 x 0.5 % + 1


def test_group_by_gives_one_line_per_group(customer, actor):
    pv, meter, _ = usage_plan("standard", {"unit_price": "0.01"}, aggregation="count", group_by=["region"])
    subscribe(customer, pv, actor)
    count_events(customer, meter, 30, region="eu", prefix="eu")
    count_events(customer, meter, 20, region="us", prefix="us")
    lines = lines_of(close_one(customer, FEB_1, actor), K.USAGE)
    assert sorted((line.group["region"], line.quantity, line.amount) for line in lines) == [
        ("eu", D("30"), D("0.30")), ("us", D("20"), D("0.20")),
    ]


def test_per_charge_minimum_true_up(customer, actor):
    pv, meter, _ = usage_plan("standard", {"unit_price": "0.0015"}, aggregation="count",
                              minimum_amount=Money("10.00", "USD"))
    subscribe(customer, pv, actor)
    count_events(customer, meter, 1000)
    invoice = close_one(customer, FEB_1, actor)
    assert [(line.kind, line.amount) for line in lines_of(invoice)] == [
        (K.USAGE, D("1.50")), (K.MINIMUM_TRUE_UP, D("8.50")),
    ]


def test_plan_minimum_commitment(customer, actor):
    meter = MeterFactory(aggregation="count")
    pv = version("20.00", minimum_commitment=Money("50.00", "USD"))
    ChargeFactory(plan_version=pv, meter=meter, properties={"unit_price": "0.0015"})
    subscribe(customer, pv, actor)
    assert [line.amount for line in lines_of(close_one(customer, at(date(2024, 1, 1)), actor))] == [D("20.00")]
    count_events(customer, meter, 1000)
    feb = close_one(customer, FEB_1, actor)
    # January spent 20.00 (fee in advance) + 1.50 (usage): 28.50 short of 50.00.
    assert [(line.kind, line.amount) for line in lines_of(feb, K.USAGE, K.MINIMUM_TRUE_UP)] == [
        (K.USAGE, D("1.50")), (K.MINIMUM_TRUE_UP, D("28.50")),
    ]


# --- contracts -----------------------------------------------------------------------------------------------


def test_contract_minimum_spend_per_billing_period(customer, actor):
    pv, meter, _ = usage_plan("standard", {"unit_price": "0.0015"}, aggregation="count")
    contract = ContractFactory(customer=customer)
    ContractCommitment.objects.create(contract=contract, kind=ContractCommitment.Kind.MINIMUM_SPEND,
                                      amount=Money("100.00", "USD"),
                                      period=ContractCommitment.Period.BILLING_PERIOD)
    subscribe(customer, pv, actor, contract=contract)
    count_events(customer, meter, 1000)
    jan = close_one(customer, FEB_1, actor)
    [true_up] = lines_of(jan, K.COMMITMENT_TRUE_UP)
    assert true_up.amount == D("98.50")  # 100.00 - 1.50
    assert (true_up.period_start, true_up.period_end) == (date(2024, 1, 1), date(2024, 2, 1))
    feb = close_one(customer, MAR_1, actor)
    assert [line.amount for line in lines_of(feb, K.COMMITMENT_TRUE_UP)] == [D("100.00")]  # no usage in February


def test_contract_minimum_spend_per_year(customer, actor):
    pv = version("1000.00", interval="year")
    contract = ContractFactory(customer=customer, end_date=date(2026, 1, 1))
    ContractCommitment.objects.create(contract=contract, kind=ContractCommitment.Kind.MINIMUM_SPEND,
                                      amount=Money("1200.00", "USD"), period=ContractCommitment.Period.YEAR)
    subscribe(customer, pv, actor, contract=contract)
    first = close_one(customer, at(date(2024, 1, 1)), actor)
    assert [(line.kind, line.amount) for line in lines_of(first)] == [(K.SUBSCRIPTION_FEE, D("1000.00"))]
    second = close_one(customer, at(date(2025, 1, 1)), actor)
    # Year 1 spent 1000.00 of 1200.00; year 2's fee (billed on the same invoice) does not count for year 1.
    assert sorted((line.kind, line.amount) for line in lines_of(second)) == [
        (K.COMMITMENT_TRUE_UP, D("200.00")), (K.SUBSCRIPTION_FEE, D("1000.00")),
    ]
    [true_up] = lines_of(second, K.COMMITMENT_TRUE_UP)
    assert (true_up.period_start, true_up.period_end) == (date(2024, 1, 1), date(2025, 1, 1))


def test_contract_price_override_for_a_usage_charge(customer, actor):
    pv, meter, charge = usage_plan("standard", {"unit_price": "0.0015"}, aggregation="count")
    contract = ContractFactory(customer=customer)
    price = ContractPrice.objects.create(contract=contract, target=ContractPrice.Target.CHARGE, plan_version=pv,
                                         charge=charge, charge_model="standard", properties={"unit_price": "0.001"})
    subscribe(customer, pv, actor, contract=contract)
    count_events(customer, meter, 1000)
    [line] = lines_of(close_one(customer, FEB_1, actor), K.USAGE)
    assert line.amount == D("1.00")
    assert line.explanation["price_source"] == f"contract price #{price.pk}"


# --- coupons and credits -------------------------------------------------------------------------------------


def test_percentage_coupon_limited_to_a_plan_for_two_periods(customer, actor):
    plan_a, plan_b = version("100.00"), version("50.00")
    subscribe(customer, plan_a, actor)
    subscribe(customer, plan_b, actor)
    coupon = CouponFactory(percent_off=D("10"), duration=Coupon.Duration.REPEATING, duration_periods=2)
    coupon.applies_to_plans.add(plan_a.plan)
    applied = AppliedCoupon.objects.create(customer=customer, coupon=coupon)
    totals = []
    for now in (at(date(2024, 1, 1)), FEB_1, MAR_1):
        invoice = close_one(customer, now, actor)
        totals.append((invoice.subtotal, invoice.discount_total, invoice.total))
    # 10 % of plan A's 100.00 only, on two invoices.
    assert totals == [(D("150.00"), D("10.00"), D("140.00")), (D("150.00"), D("10.00"), D("140.00")),
                      (D("150.00"), D("0.00"), D("150.00"))]
    applied.refresh_from_db()
    assert (applied.status, applied.periods_used) == (AppliedCoupon.Status.EXHAUSTED, 2)


def test_fixed_coupon_once(customer, actor):
    subscribe(customer, version("100.00"), actor)
    coupon = CouponFactory(discount_type=Coupon.DiscountType.FIXED, percent_off=None,
                           amount_off=Money("15.00", "USD"), duration=Coupon.Duration.ONCE)
    applied = AppliedCoupon.objects.create(customer=customer, coupon=coupon)
    first = close_one(customer, at(date(2024, 1, 1)), actor)
    second = close_one(customer, FEB_1, actor)
    assert (first.discount_total, first.total) == (D("15.00"), D("85.00"))
    assert (second.discount_total, second.total) == (D("0.00"), D("100.00"))
    applied.refresh_from_db()
    assert (applied.status, applied.periods_used) == (AppliedCoupon.Status.EXHAUSTED, 1)
    assert first.discount_breakdown[0]["source"] == "coupon"


@pytest.fixture
def ny_customer(entity):
    TaxRate.objects.create(name="NY sales tax", country="US", region="NY", percent=D("8.875"))
    return CustomerFactory(billing_entity=entity, timezone="UTC", country="US", state="NY")


def test_promotional_credit_is_applied_before_tax(ny_customer, actor):
    subscribe(ny_customer, version("100.00"), actor)
    grant = CreditGrant.objects.create(customer=ny_customer, currency="USD", amount=D("30"), remaining=D("30"),
                                       reason="Goodwill")
    invoice = close_one(ny_customer, at(date(2024, 1, 1)), actor)
    # Tax on the net: 70.00 x 8.875 % = 6.2125 -> 6.21.
    assert (invoice.subtotal, invoice.discount_total, invoice.tax_total, invoice.total) == (
        D("100.00"), D("30.00"), D("6.21"), D("76.21"))
    [line] = lines_of(invoice)
    assert (line.discount_amount, line.tax_amount) == (D("30.00"), D("6.21"))
    grant.refresh_from_db()
    assert grant.remaining == D("0")
    assert close_one(ny_customer, FEB_1, actor).discount_total == D("0")


def wallet_with(customer: Customer, *lots: tuple[str, date | None]) -> Wallet:
    wallet = Wallet.objects.create(customer=customer, currency="USD", balance=sum((D(a) for a, _ in lots), D(0)))
    for i, (amount, expires) in enumerate(lots):
        WalletTransaction.objects.create(wallet=wallet, kind=WalletTransaction.Kind.TOP_UP, amount=D(amount),
                                         remaining=D(amount), expires_on=expires,
                                         created_at=datetime(2023, 12, 1, i, tzinfo=UTC))
    return wallet


def test_prepaid_wallet_is_drawn_after_tax(ny_customer, actor):
    subscribe(ny_customer, version("100.00"), actor)
    wallet = wallet_with(ny_customer, ("50.00", None))
    invoice = close_one(ny_customer, at(date(2024, 1, 1)), actor)
    # The tax is on the full 100.00 (a prepayment is not a discount): 8.88; the wallet then pays 50.00.
    assert (invoice.tax_total, invoice.total, invoice.prepaid_credit_applied, invoice.amount_due) == (
        D("8.88"), D("108.88"), D("50.00"), D("58.88"))
    wallet.refresh_from_db()
    assert wallet.balance == D("0")


def test_expired_wallet_lot_is_not_drawn(customer, actor):
    subscribe(customer, version("100.00"), actor)
    wallet = wallet_with(customer, ("20.00", date(2024, 1, 15)), ("30.00", None))
    close_one(customer, at(date(2024, 1, 1)), actor)  # draws 20.00 from the expiring lot first, then 30.00
    wallet.refresh_from_db()
    assert wallet.balance == D("0")

    wallet2_customer = CustomerFactory(billing_entity=customer.billing_entity, timezone="UTC")
    subscribe(wallet2_customer, version("100.00"), actor, start=date(2024, 2, 1))
    wallet2 = wallet_with(wallet2_customer, ("20.00", date(2024, 1, 15)), ("30.00", None))
    invoice = close_one(wallet2_customer, FEB_1, actor)
    assert (invoice.prepaid_credit_applied, invoice.amount_due) == (D("30.00"), D("70.00"))
    wallet2.refresh_from_db()
    assert wallet2.balance == D("0")
    kinds = sorted(wallet2.transactions.values_list("kind", "amount"))
    assert (WalletTransaction.Kind.EXPIRY, D("-20.00")) in kinds
    assert (WalletTransaction.Kind.DRAWDOWN, D("-30.00")) in kinds


def test_one_off_pending_charge_and_installments_on_next_invoices(customer, actor):
    subscribe(customer, version("100.00"), actor)
    close_one(customer, at(date(2024, 1, 1)), actor)
    PendingCharge.objects.create(customer=customer, description="Onboarding", currency="USD", quantity=D("3"),
                                 unit_price=D("49.995"), bill_on=date(2024, 1, 20))
    plan = InstallmentPlan.objects.create(customer=customer, description="Implementation", currency="USD",
                                          total=D("100.00"), installments=3)
    for n, (amount, day) in enumerate([("33.34", date(2024, 1, 15)), ("33.33", date(2024, 2, 15)),
                                        ("33.33", date(2024, 3, 15))], start=1):
        PendingCharge.objects.create(customer=customer, description="Implementation", currency="USD",
                                     unit_price=D(amount), bill_on=day, installment_plan=plan, installment_number=n)
    feb = close_one(customer, FEB_1, actor)
    assert sorted((line.kind, line.amount) for line in lines_of(feb, K.ONE_OFF, K.INSTALLMENT)) == [
        (K.INSTALLMENT, D("33.34")), (K.ONE_OFF, D("149.99")),  # 3 x 49.995 = 149.985 -> 149.99
    ]
    mar = close_one(customer, MAR_1, actor)
    [installment] = lines_of(mar, K.INSTALLMENT)
    assert installment.amount == D("33.33") and "installment 2 of 3" in installment.description
    assert not lines_of(mar, K.ONE_OFF)
    assert PendingCharge.objects.filter(invoice__isnull=True).count() == 1


def test_consolidated_invoice_of_two_children(entity, actor):
    parent = CustomerFactory(billing_entity=entity, timezone="UTC")
    kids = [CustomerFactory(billing_entity=entity, timezone="UTC", parent=parent, invoice_to_parent=True)
            for _ in range(2)]
    subscribe(kids[0], version("100.00"), actor)
    subscribe(kids[1], version("40.00"), actor)
    invoice = close_one(parent, at(date(2024, 1, 1)), actor)
    assert invoice.customer == parent
    assert sorted((line.customer_id, line.amount) for line in lines_of(invoice)) == sorted(
        [(kids[0].pk, D("100.00")), (kids[1].pk, D("40.00"))])
    assert invoice.total == D("140.00")
    assert close_customer(kids[0], now=at(date(2024, 1, 1)), actor=actor) == []
    assert Invoice.objects.count() == 1


# --- taxes ---------------------------------------------------------------------------------------------------


def test_us_sales_tax_by_region(ny_customer, entity, actor):
    TaxRate.objects.create(name="CA sales tax", country="US", region="CA", percent=D("7.25"))
    subscribe(ny_customer, version("100.00"), actor)
    invoice = close_one(ny_customer, at(date(2024, 1, 1)), actor)
    [line] = lines_of(invoice)
    assert (line.tax_percent, line.tax_amount, line.tax_treatment) == (D("8.875"), D("8.88"), "standard")
    assert invoice.tax_breakdown == [{"name": "NY sales tax", "percent": "8.875000", "treatment": "standard",
                                      "rate_id": line.tax_rate_id, "taxable_amount": "100.00", "tax_amount": "8.88"}]
    other = CustomerFactory(billing_entity=entity, timezone="UTC", country="US", state="OR")
    subscribe(other, version("100.00"), actor)
    assert close_one(other, at(date(2024, 1, 1)), actor).tax_total == D("0")  # no rate for Oregon


@pytest.fixture
def de_entity():
    return BillingEntityFactory(timezone="UTC", invoice_grace_days=0, country="DE", default_currency="EUR",
                                tax_id="DE123456789")


def test_de_vat_rounded_once_per_rate(de_entity, actor):
    TaxRate.objects.create(name="VAT DE", country="DE", percent=D("19"))
    buyer = CustomerFactory(billing_entity=de_entity, timezone="UTC", country="DE", kind="individual")
    subscribe(buyer, version("10.01", "EUR"), actor)
    subscribe(buyer, version("10.02", "EUR"), actor)
    invoice = close_one(buyer, at(date(2024, 1, 1)), actor)
    # Per invoice: 20.03 x 19 % = 3.8057 -> 3.81 (per line it would be 1.90 + 1.90 = 3.80).
    assert (invoice.currency, invoice.subtotal, invoice.tax_total, invoice.total) == (
        "EUR", D("20.03"), D("3.81"), D("23.84"))
    assert sum(line.tax_amount for line in lines_of(invoice)) == D("3.81")
    assert invoice.tax_breakdown[0]["tax_amount"] == "3.81"


def test_eu_reverse_charge_for_a_french_business(de_entity, actor):
    TaxRate.objects.create(name="VAT FR", country="FR", percent=D("20"))
    buyer = CustomerFactory(billing_entity=de_entity, timezone="UTC", country="FR", kind="business",
                            tax_id="FR12345678901")
    subscribe(buyer, version("100.00", "EUR"), actor)
    invoice = close_one(buyer, at(date(2024, 1, 1)), actor)
    [line] = lines_of(invoice)
    assert (line.tax_treatment, line.tax_amount, invoice.tax_total) == ("reverse_charge", D("0"), D("0"))
    assert invoice.mentions and "reverse" in invoice.mentions[0].lower()


def test_exempt_customer_pays_no_tax(entity, actor):
    TaxRate.objects.create(name="NY sales tax", country="US", region="NY", percent=D("8.875"))
    buyer = CustomerFactory(billing_entity=entity, timezone="UTC", country="US", state="NY", tax_exempt=True,
                            tax_exemption_reason="Non-profit 501(c)(3)")
    subscribe(buyer, version("100.00"), actor)
    invoice = close_one(buyer, at(date(2024, 1, 1)), actor)
    assert (invoice.tax_total, invoice.total) == (D("0"), D("100.00"))
    assert lines_of(invoice)[0].tax_treatment == "exempt"
    assert invoice.mentions == ["Tax exempt: Non-profit 501(c)(3)"]


def test_closing_a_child_invoiced_to_its_parent_bills_the_parent(entity, actor):
    parent = CustomerFactory(billing_entity=entity, timezone="UTC")
    kid = CustomerFactory(billing_entity=entity, timezone="UTC", parent=parent, invoice_to_parent=True)
    subscribe(kid, version("100.00"), actor)
    PendingCharge.objects.create(customer=kid, description="Set-up", currency="USD", unit_price=D("25"),
                                 bill_on=date(2024, 1, 1))
    # A close started from the child (a manual close, a retry) still invoices the parent, never the child.
    [invoice] = close_customer(kid, now=at(date(2024, 1, 1)), actor=actor)
    assert invoice.customer == parent
    assert sorted((line.kind, line.customer_id, line.amount) for line in lines_of(invoice)) == [
        (K.ONE_OFF, kid.pk, D("25.00")), (K.SUBSCRIPTION_FEE, kid.pk, D("100.00")),
    ]
    assert not Invoice.objects.filter(customer=kid).exists()


def test_coupon_limited_to_the_plan_upgraded_to(customer, actor):
    from contracts.services.subscriptions import change_plan

    basic = version("100.00")
    pro = PlanVersionFactory(plan=PlanFactory(product=basic.plan.product), base_fee=Money("200.00", "USD"))
    sub = subscribe(customer, basic, actor)
    close_one(customer, at(date(2024, 1, 1)), actor)
    coupon = CouponFactory(percent_off=D("10"), duration=Coupon.Duration.FOREVER)
    coupon.applies_to_plans.add(pro.plan)
    AppliedCoupon.objects.create(customer=customer, coupon=coupon)
    change_plan(sub, pro, actor=actor, now=at(date(2024, 1, 15)))
    invoice = close_one(customer, FEB_1, actor)
    by_kind = {line.kind: line for line in lines_of(invoice)}
    # The pro lines (109.68 for 15-31 January, 200.00 for February) are discounted; basic's credit is not.
    assert by_kind[K.PRORATION_CREDIT].discount_amount == D("0")
    assert (by_kind[K.PRORATION_CHARGE].discount_amount, by_kind[K.SUBSCRIPTION_FEE].discount_amount) == (
        D("10.97"), D("20.00"))
    assert invoice.discount_total == D("30.97")
