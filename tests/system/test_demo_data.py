"""The demo company: built through the services, complete as promised, idempotent and reproducible."""

import io
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import F

from billing.demo import load_demo_data
from contracts.models import (
    Charge,
    Contract,
    ContractCommitment,
    ContractPrice,
    Coupon,
    FixedCharge,
    Plan,
    PlanEntitlement,
    PlanVersion,
    Subscription,
    SubscriptionChange,
)
from customers.models import BillingEntity, Contact, Customer
from usage.models import Meter

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
FROM_START = F("effective_from").asc(nulls_first=True)  # an empty effective_from means the contract's start


@pytest.fixture
def demo() -> None:
    summary = load_demo_data(now=NOW)
    assert summary.created


def test_two_billing_entities_with_their_own_currency_timezone_and_series(demo: None) -> None:
    entities = list(BillingEntity.objects.order_by("code"))
    assert len(entities) == 2
    assert {str(e.default_currency) for e in entities} == {"USD", "EUR"}
    assert len({str(e.timezone) for e in entities}) == 2
    prefixes = [p for e in entities for p in (e.invoice_prefix, e.credit_note_prefix)]
    assert len(set(prefixes)) == 4


def test_customers_across_countries_timezones_hierarchies_and_exemptions(demo: None) -> None:
    customers = Customer.objects.all()
    assert 45 <= customers.count() <= 60
    assert len({str(c.country) for c in customers}) >= 15
    assert len({str(c.timezone) for c in customers}) >= 15
    assert all(str(c.currency) == str(c.billing_entity.default_currency) for c in customers)

    children = customers.filter(parent__isnull=False)
    assert children.filter(invoice_to_parent=True).count() >= 3
    assert children.filter(invoice_to_parent=False).exists()
    for child in children.filter(invoice_to_parent=True):
        assert child.parent.billing_entity_id == child.billing_entity_id

    exempt = customers.filter(tax_exempt=True)
    assert exempt.count() >= 3
    assert all(c.tax_exemption_reason.strip() for c in exempt)
    assert customers.filter(kind=Customer.Kind.INDIVIDUAL).exists()
    assert not customers.filter(contacts__isnull=True).exists()
    assert Contact.objects.filter(role=Contact.Role.TECHNICAL).exists()


def test_meters_cover_every_aggregation(demo: None) -> None:
    assert set(Meter.objects.values_list("aggregation", flat=True)) == set(Meter.Aggregation.values)
    assert Meter.objects.filter(carries_over=True).count() >= 2


def test_plans_cover_every_charge_model_in_both_currencies_and_several_intervals(demo: None) -> None:
    for currency in ("USD", "EUR"):
        charges = Charge.objects.filter(plan_version__plan__currency=currency)
        assert set(charges.values_list("charge_model", flat=True)) == set(Charge.Model.values), currency
    assert set(Plan.objects.values_list("interval", flat=True)) == {"week", "month", "quarter", "half_year", "year"}
    assert FixedCharge.objects.filter(recurring=True).exists()
    assert FixedCharge.objects.filter(recurring=False).exists()
    assert PlanEntitlement.objects.filter(limit__isnull=False).exists()
    assert PlanEntitlement.objects.filter(limit__isnull=True, enabled=True).exists()
    # Customers only ever subscribe to versions that were published.
    assert not Subscription.objects.filter(plan_version__status=PlanVersion.Status.DRAFT).exists()


def test_one_plan_has_two_versions_and_its_customers_were_migrated(demo: None) -> None:
    plan = Plan.objects.get(code="growth-usd")
    v1, v2 = plan.versions.order_by("version")
    assert (v1.status, v2.status) == (PlanVersion.Status.ARCHIVED, PlanVersion.Status.PUBLISHED)
    assert v2.base_fee.amount > v1.base_fee.amount
    assert not Subscription.objects.filter(plan_version=v1, status__in=["active", "trialing", "paused"]).exists()
    migrated = SubscriptionChange.objects.filter(
        action="change_plan", status="applied", from_plan_version=v1, to_plan_version=v2
    )
    assert migrated.count() >= 4


def test_coupons(demo: None) -> None:
    assert Coupon.objects.filter(discount_type="percentage").exists()
    assert Coupon.objects.filter(discount_type="fixed").exists()
    assert {str(c.amount_off.currency) for c in Coupon.objects.filter(discount_type="fixed")} == {"USD", "EUR"}
    assert Coupon.objects.filter(applies_to_plans__isnull=False).exists()


def test_contracts_with_overrides_a_ramp_commitments_and_an_uplifted_renewal(demo: None) -> None:
    assert ContractPrice.objects.filter(target="charge").exists()
    assert ContractPrice.objects.filter(target="fixed_charge").exists()

    # A ramp: consecutive base-fee prices of one contract, each rising.
    ramp = max(
        (list(c.prices.filter(target="base_fee").order_by(FROM_START)) for c in Contract.objects.all()),
        key=len,
    )
    assert len(ramp) >= 3
    for earlier, later in pairwise(ramp):
        assert earlier.effective_to == later.effective_from
        assert later.amount > earlier.amount

    kinds = set(ContractCommitment.objects.values_list("kind", flat=True))
    assert kinds == {"minimum_spend", "prepaid"}

    renewed = Contract.objects.get(reference="NW-2024-0012")
    assert renewed.auto_renew and renewed.renewal_uplift_percent == Decimal(5)
    before, after = renewed.prices.filter(target="base_fee").order_by(FROM_START)
    assert after.effective_from == before.effective_to
    assert after.amount.amount == before.amount.amount * Decimal("1.05")
    assert Contract.objects.filter(status=Contract.Status.CANCELED).exists()
    assert Contract.objects.filter(status=Contract.Status.DRAFT).exists()


def test_subscriptions_in_every_status_with_a_lifecycle_history(demo: None) -> None:
    statuses = Counter(Subscription.objects.values_list("status", flat=True))
    assert set(statuses) == set(Subscription.Status.values)
    assert sum(statuses.values()) >= 50
    assert set(Subscription.objects.values_list("billing_anchor", flat=True)) == set(Subscription.Anchor.values)

    applied = set(SubscriptionChange.objects.filter(status="applied").values_list("action", flat=True))
    lifecycle = {"create", "end_trial", "change_plan", "change_quantity", "pause", "resume", "cancel", "end", "renew"}
    assert lifecycle <= applied
    scheduled = set(SubscriptionChange.objects.filter(status="scheduled").values_list("action", flat=True))
    assert {"activate", "cancel", "change_plan"} <= scheduled
    # History happened in the past, recorded by people and by the beat task.
    assert SubscriptionChange.objects.filter(applied_at__lt=NOW.replace(year=2025)).exists()
    labels = set(SubscriptionChange.objects.values_list("actor_label", flat=True))
    assert "user:maria.garcia" in labels
    assert any(label.startswith("system:beat") for label in labels)


def test_is_reproducible_for_the_same_now() -> None:
    def snapshot() -> tuple:
        return (
            sorted(Customer.objects.values_list("external_id", "tax_id", "metadata__crm_id")),
            sorted(Contact.objects.values_list("customer__external_id", "email")),
            sorted(Subscription.objects.values_list("external_id", "status", "quantity", "start_date", "end_date")),
        )

    runs = []
    for _ in range(2):
        with transaction.atomic():
            load_demo_data(now=NOW)
            runs.append(snapshot())
            transaction.set_rollback(True)
    assert runs[0] == runs[1]
    assert len(runs[0][2]) >= 50


def test_command_loads_once_then_does_nothing() -> None:
    out = io.StringIO()
    call_command("load_demo_data", stdout=out)
    assert "Demo data loaded" in out.getvalue()
    counts = (Customer.objects.count(), Subscription.objects.count(), SubscriptionChange.objects.count())

    out = io.StringIO()
    call_command("load_demo_data", stdout=out)

    assert "already has data" in out.getvalue()
    assert (Customer.objects.count(), Subscription.objects.count(), SubscriptionChange.objects.count()) == counts


def test_does_nothing_when_the_database_already_has_a_customer(actor) -> None:
    from tests.factories import CustomerFactory

    CustomerFactory()
    summary = load_demo_data(now=NOW)
    assert not summary.created
    assert Customer.objects.count() == 1
    assert not Plan.objects.exists()
