"""DESIGN's mid-term upgrade through revenue recognition: 100.00/month upgraded to 200.00/month on 15 January
is billed 45.16 + 109.68 for January; recognised, January's revenue is exactly that (154.84), prospectively
(the first 14 days keep the old price, nothing is restated), and the change is recorded as a prospective
contract modification (ASC 606-10-25-13a)."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db.models import Sum
from djmoney.money import Money

from contracts.services.subscriptions import change_plan, create_subscription
from invoicing.services.cycle import close_customer
from revrec.models import ContractModification, Recognition
from revrec.services.posting import post_pending
from revrec.services.recognition import recognize_through
from tests.factories import BillingEntityFactory, CustomerFactory, PlanFactory, PlanVersionFactory

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def revenue_between(start: date, end: date) -> Decimal:
    return Recognition.objects.filter(recognized_on__gte=start, recognized_on__lt=end).aggregate(
        total=Sum("amount"))["total"] or D(0)


def test_mid_month_upgrade_is_recognised_prospectively(actor):
    customer = CustomerFactory(billing_entity=BillingEntityFactory(timezone="UTC", invoice_grace_days=0),
                               timezone="UTC")
    plan = PlanFactory()
    basic = PlanVersionFactory(plan=plan, base_fee=Money("100.00", "USD"))
    pro = PlanVersionFactory(plan=PlanFactory(product=plan.product), base_fee=Money("200.00", "USD"))
    sub = create_subscription(customer=customer, plan_version=basic, actor=actor, now=at(date(2024, 1, 1)),
                              start_date=date(2024, 1, 1))
    close_customer(customer, now=at(date(2024, 1, 1)), actor=actor)
    post_pending(now=at(date(2024, 1, 1)), actor=actor)
    recognize_through(date(2024, 1, 14), actor=actor, now=at(date(2024, 1, 15)))
    # 100 x 14/31 = 45.16 for the first fourteen days, at the old price.
    assert revenue_between(date(2024, 1, 1), date(2024, 1, 15)) == D("45.16")

    change_plan(sub, pro, actor=actor, now=at(date(2024, 1, 15)))
    recognize_through(date(2024, 1, 31), actor=actor, now=at(date(2024, 2, 1), 1))
    close_customer(customer, now=at(date(2024, 2, 1)), actor=actor)
    summary = post_pending(now=at(date(2024, 2, 1), 13), actor=actor)
    assert summary.failures == [] and summary.posted["subscription_change"] == 1

    # The February invoice's proration lines were earned in January (dated 31 January): -54.84 for the unused
    # old days, +109.68 for the new ones; January = 100.00 - 54.84 + 109.68 = 45.16 + 109.68 = 154.84.
    assert revenue_between(date(2024, 1, 1), date(2024, 2, 1)) == D("154.84")
    assert revenue_between(date(2024, 1, 1), date(2024, 1, 15)) == D("45.16")  # nothing restated
    recognize_through(date(2024, 2, 29), actor=actor, now=at(date(2024, 3, 1)))
    assert revenue_between(date(2024, 2, 1), date(2024, 3, 1)) == D("200.00")

    modification = ContractModification.objects.get()
    assert (modification.change, modification.treatment, modification.effective_date) == (
        "upgrade", "prospective", date(2024, 1, 15))
    assert modification.rationale.startswith("25-13(a)")
    assert modification.details["obligations_served"][0]["allocated"] == "100.0000"
    # Recording is idempotent: a second sweep records nothing more.
    assert "subscription_change" not in post_pending(now=at(date(2024, 2, 2)), actor=actor).posted
