from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from djmoney.money import Money

from billing.errors import InvalidTransition
from contracts.models import Feature, PlanVersion
from contracts.selectors import entitlements_for_customer
from contracts.services import catalog
from contracts.services import subscriptions as subs
from contracts.services.contracts import (
    add_commitment,
    cancel_contract,
    create_contract,
    set_contract_entitlement,
    set_contract_price,
)
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanEntitlementFactory,
    PlanFactory,
    PlanVersionFactory,
    ProductFactory,
)

pytestmark = pytest.mark.django_db


def test_plan_versions_copy_prices_and_published_ones_are_immutable(actor, now):
    meter = MeterFactory()
    plan = catalog.create_plan(code="api", name="API", product=ProductFactory(), currency="USD", interval="month",
                               actor=actor, base_fee="49.00", trial_days=7)
    v1 = plan.versions.get()
    catalog.add_charge(v1, actor=actor, meter=meter, charge_model="graduated", properties={"tiers": [
        {"up_to": "1000", "unit_price": "0"}, {"up_to": None, "unit_price": "0.002"}]}, group_by=["region"])
    catalog.add_fixed_charge(v1, actor=actor, code="support", name="Support", amount="20")
    catalog.publish_plan_version(v1, actor=actor, now=now)
    with pytest.raises(InvalidTransition, match="create a new version"):
        catalog.add_charge(v1, actor=actor, meter=meter, charge_model="standard", properties={"unit_price": "1"})
    with pytest.raises(InvalidTransition):
        catalog.update_plan_version(v1, actor=actor, base_fee="59")

    v2 = catalog.create_plan_version(plan, actor=actor)
    assert (v2.version, v2.status, v2.base_fee, v2.trial_days) == (2, "draft", Money(Decimal("49"), "USD"), 7)
    assert v2.charges.get().properties == v1.charges.get().properties
    assert v2.fixed_charges.get().amount == Money(20, "USD")
    with pytest.raises(InvalidTransition, match="already has a draft"):
        catalog.create_plan_version(plan, actor=actor)
    catalog.update_plan_version(v2, actor=actor, base_fee="59")
    v1.refresh_from_db()
    assert v1.base_fee == Money(49, "USD")  # the published version kept its price


def test_charge_validation_and_currency_checks(actor):
    plan = catalog.create_plan(code="p", name="P", product=ProductFactory(), currency="EUR", interval="month",
                               actor=actor)
    version = plan.versions.get()
    with pytest.raises(ValidationError) as info:
        catalog.add_charge(version, actor=actor, meter=MeterFactory(), charge_model="volume",
                           properties={"tiers": [{"up_to": "10", "unit_price": "1"}]})
    assert "tiers[0].up_to" in info.value.message_dict
    with pytest.raises(ValidationError, match="in EUR"):
        catalog.add_fixed_charge(version, actor=actor, code="x", name="X", amount=Money(1, "USD"))
    with pytest.raises(ValidationError, match="billed in advance"):
        catalog.add_charge(version, actor=actor, meter=MeterFactory(aggregation="max", field_name="gb"),
                           charge_model="standard", properties={"unit_price": "1"}, billing_timing="advance")


def test_migrate_subscriptions_moves_them_at_period_end(actor, now):
    v1 = PlanVersionFactory()
    v2 = PlanVersionFactory(plan=v1.plan, base_fee=Money(120, "USD"))
    customer = CustomerFactory()
    sub = subs.create_subscription(customer=customer, plan_version=v1, actor=actor, now=now)
    assert catalog.migrate_subscriptions(v1, v2, actor=actor, now=now) == 1
    sub.refresh_from_db()
    assert sub.plan_version == v1
    subs.apply_due_changes(now=datetime(2024, 2, 1, 17, tzinfo=UTC))
    sub.refresh_from_db()
    assert sub.plan_version == v2


def test_contract_price_ramps_refuse_overlaps(actor):
    customer = CustomerFactory()
    contract = create_contract(customer=customer, reference="CT-9", start_date=date(2024, 1, 1),
                               end_date=date(2027, 1, 1), actor=actor)
    version = PlanVersionFactory()
    charge = ChargeFactory(plan_version=version)
    for start, end, price in ((date(2024, 1, 1), date(2025, 1, 1), "80"), (date(2025, 1, 1), date(2026, 1, 1), "90"),
                              (date(2026, 1, 1), None, "100")):
        set_contract_price(contract, actor=actor, target="base_fee", plan_version=version, amount=price,
                           effective_from=start, effective_to=end)
    with pytest.raises(ValidationError, match="Overlaps"):
        set_contract_price(contract, actor=actor, target="base_fee", plan_version=version, amount="70",
                           effective_from=date(2025, 6, 1), effective_to=date(2025, 7, 1))
    usage = set_contract_price(contract, actor=actor, target="charge", plan_version=version, charge=charge,
                               properties={"unit_price": "0.0008"})
    assert usage.charge_model == "standard"
    with pytest.raises(ValidationError) as info:
        set_contract_price(contract, actor=actor, target="fixed_charge", plan_version=version, amount="1")
    assert "fixed_charge" in info.value.message_dict
    with pytest.raises(ValidationError, match="term ends"):
        set_contract_price(contract, actor=actor, target="base_fee", plan_version=PlanVersionFactory(), amount="1",
                           effective_from=date(2027, 1, 1))


def test_commitments_validate_amount_and_dates(actor):
    contract = create_contract(customer=CustomerFactory(), reference="CT-C", start_date=date(2024, 1, 1),
                               end_date=date(2025, 1, 1), actor=actor)
    commitment = add_commitment(contract, actor=actor, kind="minimum_spend", amount="12000.00")
    assert commitment.amount == Money(12000, "USD")
    with pytest.raises(ValidationError):
        add_commitment(contract, actor=actor, kind="prepaid", amount="-5")
    with pytest.raises(ValidationError, match="term ends"):
        add_commitment(contract, actor=actor, kind="prepaid", amount="5", end_date=date(2026, 1, 1))


def test_contract_creation_rules(actor):
    customer = CustomerFactory()
    with pytest.raises(ValidationError, match="billed in USD"):
        create_contract(customer=customer, reference="A", start_date=date(2024, 1, 1), currency="EUR", actor=actor)
    with pytest.raises(ValidationError, match="renewal term"):
        create_contract(customer=customer, reference="B", start_date=date(2024, 1, 1), end_date=date(2025, 1, 1),
                        auto_renew=True, actor=actor)
    with pytest.raises(ValidationError):
        create_contract(customer=customer, reference="C", start_date=date(2024, 1, 1), end_date=date(2023, 1, 1),
                        actor=actor)


def test_cancel_contract_cancels_its_subscriptions(actor, now):
    customer = CustomerFactory()
    contract = create_contract(customer=customer, reference="CT-K", start_date=date(2024, 1, 1), actor=actor)
    version = PlanVersionFactory()
    a = subs.create_subscription(customer=customer, plan_version=version, contract=contract, actor=actor, now=now)
    b = subs.create_subscription(customer=customer, plan_version=version, contract=contract, actor=actor, now=now)
    subs.pause_subscription(b, actor=actor, now=now)
    cancel_contract(contract, actor=actor, now=now)
    contract.refresh_from_db()
    a.refresh_from_db()
    b.refresh_from_db()
    assert (contract.status, contract.end_date) == ("canceled", date(2024, 1, 15))
    assert (a.status, b.status) == ("canceled", "canceled")
    with pytest.raises(InvalidTransition):
        set_contract_entitlement(contract, actor=actor, feature=FeatureFactory())


def test_entitlements_answer_in_one_call(actor, now):
    customer = CustomerFactory()
    sso = FeatureFactory(code="sso")
    seats = FeatureFactory(code="api-keys", kind=Feature.Kind.LIMIT)
    projects = FeatureFactory(code="projects", kind=Feature.Kind.LIMIT)
    team = PlanVersionFactory()
    PlanEntitlementFactory(plan_version=team, feature=sso)
    PlanEntitlementFactory(plan_version=team, feature=seats, limit=Decimal("2"), per_unit=True)
    PlanEntitlementFactory(plan_version=team, feature=projects, limit=Decimal("10"))
    addon = PlanVersionFactory()
    PlanEntitlementFactory(plan_version=addon, feature=projects, limit=Decimal("5"))
    PlanEntitlementFactory(plan_version=addon, feature=sso, enabled=False)

    contract = create_contract(customer=customer, reference="CT-E", start_date=date(2024, 1, 1), actor=actor)
    subs.create_subscription(customer=customer, plan_version=team, quantity=3, actor=actor, now=now)
    subs.create_subscription(customer=customer, plan_version=addon, contract=contract, actor=actor, now=now)
    set_contract_entitlement(contract, actor=actor, feature=projects, limit=Decimal("50"))

    result = entitlements_for_customer(customer, now=now)
    assert result["sso"].enabled is True
    assert result["api-keys"].limit == Decimal("6")  # 2 per seat x 3 seats
    assert result["projects"].limit == Decimal("60")  # plan 10 + contract 50 (replacing the add-on's 5)

    paused = subs.create_subscription(customer=customer, plan_version=PlanVersionFactory(), actor=actor, now=now)
    PlanEntitlementFactory(plan_version=paused.plan_version, feature=FeatureFactory(code="beta"))
    subs.pause_subscription(paused, actor=actor, now=now)
    assert "beta" not in entitlements_for_customer(customer, now=now)
    assert entitlements_for_customer(CustomerFactory(), now=now) == {}


def test_archived_plan_version_takes_no_new_subscriptions(actor, now):
    version = PlanVersionFactory()
    catalog.archive_plan_version(version, actor=actor)
    assert PlanVersion.objects.get(pk=version.pk).status == "archived"
    with pytest.raises(ValidationError, match="archived"):
        subs.create_subscription(customer=CustomerFactory(), plan_version=version, actor=actor, now=now)
    with pytest.raises(InvalidTransition):
        catalog.archive_plan_version(version, actor=actor)


def test_plan_history_records_who_changed_prices(actor):
    plan = PlanFactory()
    version = catalog.create_plan_version(plan, actor=actor)
    catalog.update_plan_version(version, actor=actor, base_fee="75")
    record = version.history.latest()
    assert record.history_change_reason == "system:tests"
    assert record.base_fee == Money(75, "USD")


def test_meters_validate_and_keep_their_definition_once_billed(actor):
    from usage.services import create_meter, update_meter

    with pytest.raises(ValidationError) as info:
        create_meter(actor=actor, code="gb", name="GB", aggregation="sum", filters={"region": []},
                     group_by="region")
    assert {"field_name", "filters.region", "group_by"} <= set(info.value.message_dict)
    with pytest.raises(ValidationError, match="reads no property"):
        create_meter(actor=actor, code="calls", name="Calls", aggregation="count", field_name="x")
    meter = create_meter(actor=actor, code="storage", name="Storage", aggregation="weighted_sum", field_name="gb",
                         carries_over=True)
    assert update_meter(meter, actor=actor, aggregation="max").aggregation == "max"  # not billed yet
    ChargeFactory(meter=meter)
    with pytest.raises(ValidationError, match="create a new meter"):
        update_meter(meter, actor=actor, aggregation="sum")
    assert update_meter(meter, actor=actor, name="Storage (GB-months)").name == "Storage (GB-months)"
    with pytest.raises(ValidationError):
        create_meter(actor=actor, code="seats", name="Seats", aggregation="count", carries_over=True)


@pytest.mark.parametrize(
    "fields",
    [
        {"discount_type": "percentage", "percent_off": None},
        {"discount_type": "fixed", "percent_off": None, "amount_off": None},
        {"discount_type": "percentage", "percent_off": 10, "duration": "repeating", "duration_periods": None},
    ],
)
def test_the_database_refuses_coupons_missing_their_amount(fields):
    from django.db import IntegrityError, transaction

    from contracts.models import Coupon

    with pytest.raises(IntegrityError), transaction.atomic():
        Coupon.objects.create(code="BROKEN", name="Broken", **fields)
