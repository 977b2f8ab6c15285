"""The subscription state machine, through the services, with hand-computed dates.

The customer lives in New York; `now` is 2024-01-15 17:00 UTC, i.e. noon on 15 January there.
"""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from djmoney.money import Money

from billing.errors import InvalidTransition
from contracts.models import ContractPrice, Subscription, SubscriptionChange
from contracts.selectors import current_period
from contracts.services import subscriptions as subs
from contracts.services.contracts import create_contract
from tests.factories import CustomerFactory, PlanFactory, PlanVersionFactory

pytestmark = pytest.mark.django_db
S = Subscription.Status
A = SubscriptionChange.Action


def at(y, m, d, hour=17):
    return datetime(y, m, d, hour, tzinfo=UTC)


@pytest.fixture
def customer():
    return CustomerFactory(timezone="America/New_York")


@pytest.fixture
def plans():
    """Three published monthly versions of different prices."""
    return {
        name: PlanVersionFactory(plan=PlanFactory(code=f"plan-{name}"), base_fee=Money(Decimal(fee), "USD"))
        for name, fee in (("basic", "100"), ("premium", "200"), ("cheap", "50"))
    }


def phases(subscription):
    return [
        (p.plan_version.plan.code, p.quantity, p.start_date, p.end_date)
        for p in subscription.phases.order_by("start_date")
    ]


def create(customer, plans, actor, now, **kw):
    kw.setdefault("plan_version", plans["basic"])
    return subs.create_subscription(customer=customer, actor=actor, now=now, **kw)


def test_create_starts_today_in_the_customers_timezone(customer, plans, actor):
    # 03:00 UTC on the 16th is still the 15th in New York.
    sub = create(customer, plans, actor, datetime(2024, 1, 16, 3, tzinfo=UTC))
    assert sub.status == S.ACTIVE and sub.start_date == date(2024, 1, 15)
    assert phases(sub) == [("plan-basic", Decimal("1"), date(2024, 1, 15), None)]
    created = sub.changes.get(action=A.CREATE)
    assert created.status == SubscriptionChange.Status.APPLIED and created.actor_label == "system:tests"
    period = current_period(sub, now=datetime(2024, 1, 16, 3, tzinfo=UTC))
    assert (period.start, period.end, period.full_start, period.full_days) == (
        date(2024, 1, 15), date(2024, 2, 1), date(2024, 1, 1), 31
    )


def test_future_start_is_pending_then_activated_on_its_day(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 2, 1))
    assert sub.status == S.PENDING
    assert subs.apply_due_changes(now=at(2024, 1, 31)) == 0
    # Midnight UTC on 1 February is still 31 January in New York: not yet.
    assert subs.apply_due_changes(now=datetime(2024, 2, 1, 0, 30, tzinfo=UTC)) == 0
    assert subs.apply_due_changes(now=at(2024, 2, 1)) == 1
    sub.refresh_from_db()
    assert sub.status == S.ACTIVE
    assert subs.apply_due_changes(now=at(2024, 2, 1)) == 0  # idempotent


def test_trial_ends_on_its_day(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, trial_days=14)
    assert (sub.status, sub.trial_end_date) == (S.TRIALING, date(2024, 1, 29))
    subs.apply_due_changes(now=at(2024, 1, 28))
    sub.refresh_from_db()
    assert sub.status == S.TRIALING
    subs.apply_due_changes(now=at(2024, 1, 29))
    sub.refresh_from_db()
    assert sub.status == S.ACTIVE


def test_backdated_creation_applies_what_has_happened_since(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2023, 11, 1), trial_days=30, end_date=date(2024, 1, 1))
    assert sub.status == S.ENDED
    assert phases(sub) == [("plan-basic", Decimal("1"), date(2023, 11, 1), date(2024, 1, 1))]
    applied = set(sub.changes.filter(status="applied").values_list("action", flat=True))
    assert applied == {A.CREATE, A.END_TRIAL, A.END}


def test_upgrade_applies_today_with_the_day_at_the_new_price(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 1, 1))
    change = subs.change_plan(sub, plans["premium"], actor=actor, now=now)
    sub.refresh_from_db()
    assert change.status == "applied" and change.details["kind"] == "upgrade"
    assert sub.plan_version == plans["premium"]
    assert phases(sub) == [
        ("plan-basic", Decimal("1"), date(2024, 1, 1), date(2024, 1, 15)),
        ("plan-premium", Decimal("1"), date(2024, 1, 15), None),
    ]


def test_downgrade_waits_for_period_end_and_can_be_revoked(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 1, 1))
    change = subs.change_plan(sub, plans["cheap"], actor=actor, now=now)
    assert (change.status, change.effective_date) == ("scheduled", date(2024, 2, 1))
    sub.refresh_from_db()
    assert sub.plan_version == plans["basic"]
    subs.revoke_scheduled_change(change, actor=actor, now=now)
    assert subs.apply_due_changes(now=at(2024, 2, 1)) == 0

    change = subs.change_plan(sub, plans["cheap"], actor=actor, now=now)
    assert subs.apply_due_changes(now=at(2024, 2, 1)) == 1
    sub.refresh_from_db()
    assert sub.plan_version == plans["cheap"]
    assert phases(sub) == [
        ("plan-basic", Decimal("1"), date(2024, 1, 1), date(2024, 2, 1)),
        ("plan-cheap", Decimal("1"), date(2024, 2, 1), None),
    ]
    with pytest.raises(InvalidTransition, match="already applied"):
        subs.revoke_scheduled_change(change, actor=actor, now=now)


def test_downgrade_can_be_forced_now_and_upgrade_deferred(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 1, 1))
    assert subs.change_plan(sub, plans["cheap"], actor=actor, now=now, timing="immediate").status == "applied"
    assert subs.change_plan(sub, plans["premium"], actor=actor, now=now, timing="period_end").status == "scheduled"


def test_a_second_scheduled_downgrade_replaces_the_first(customer, plans, actor, now):
    premium_sub = create(customer, plans, actor, now, plan_version=plans["premium"], start_date=date(2024, 1, 1))
    first = subs.change_plan(premium_sub, plans["basic"], actor=actor, now=now)
    second = subs.change_plan(premium_sub, plans["cheap"], actor=actor, now=now)
    first.refresh_from_db()
    assert first.status == "revoked" and second.status == "scheduled"


def test_quantity_increase_now_decrease_at_period_end(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 1, 1), quantity=5)
    subs.change_quantity(sub, 8, actor=actor, now=now)
    decrease = subs.change_quantity(sub, 3, actor=actor, now=now)
    assert decrease.status == "scheduled" and decrease.effective_date == date(2024, 2, 1)
    subs.apply_due_changes(now=at(2024, 2, 1))
    sub.refresh_from_db()
    assert sub.quantity == 3
    assert phases(sub) == [
        ("plan-basic", Decimal("5"), date(2024, 1, 1), date(2024, 1, 15)),
        ("plan-basic", Decimal("8"), date(2024, 1, 15), date(2024, 2, 1)),
        ("plan-basic", Decimal("3"), date(2024, 2, 1), None),
    ]


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "NaN", "1.0000001"])
def test_bad_quantities_are_refused(customer, plans, actor, now, bad):
    sub = create(customer, plans, actor, now)
    with pytest.raises(ValidationError) as info:
        subs.change_quantity(sub, bad, actor=actor, now=now)
    assert "quantity" in info.value.message_dict


def test_pause_and_resume(customer, plans, actor, now):
    sub = create(customer, plans, actor, now)
    subs.pause_subscription(sub, actor=actor, now=now)
    sub.refresh_from_db()
    assert (sub.status, sub.paused_on) == (S.PAUSED, date(2024, 1, 15))
    resumed = subs.resume_subscription(sub, actor=actor, now=at(2024, 1, 20))
    sub.refresh_from_db()
    assert (sub.status, sub.paused_on) == (S.ACTIVE, None)
    assert resumed.details == {"paused_on": "2024-01-15"}


def test_resume_within_the_trial_returns_to_trialing(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, trial_days=30)
    subs.pause_subscription(sub, actor=actor, now=now)
    subs.resume_subscription(sub, actor=actor, now=at(2024, 1, 20))
    sub.refresh_from_db()
    assert sub.status == S.TRIALING


def test_cancel_now_ends_service_today_and_revokes_what_was_scheduled(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 1, 1))
    downgrade = subs.change_plan(sub, plans["cheap"], actor=actor, now=now)
    subs.cancel_subscription(sub, actor=actor, now=now, reason="customer left")
    sub.refresh_from_db()
    downgrade.refresh_from_db()
    assert (sub.status, sub.end_date, sub.canceled_at) == (S.CANCELED, date(2024, 1, 15), now)
    assert downgrade.status == "revoked"
    assert phases(sub) == [("plan-basic", Decimal("1"), date(2024, 1, 1), date(2024, 1, 15))]


def test_cancel_a_pending_subscription_leaves_no_phase(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 3, 1))
    subs.cancel_subscription(sub, actor=actor, now=now, at_period_end=True)
    sub.refresh_from_db()
    assert (sub.status, sub.end_date) == (S.CANCELED, date(2024, 3, 1))
    assert phases(sub) == []


def test_cancel_at_period_end_then_revoke_or_apply(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 1, 1))
    scheduled = subs.cancel_subscription(sub, actor=actor, now=now, at_period_end=True)
    assert (scheduled.status, scheduled.effective_date) == ("scheduled", date(2024, 2, 1))
    sub.refresh_from_db()
    assert sub.status == S.ACTIVE
    subs.revoke_scheduled_change(scheduled, actor=actor, now=now)
    subs.cancel_subscription(sub, actor=actor, now=now, at_period_end=True)
    subs.apply_due_changes(now=at(2024, 2, 1))
    sub.refresh_from_db()
    assert (sub.status, sub.end_date) == (S.CANCELED, date(2024, 2, 1))
    cancel = sub.changes.get(action=A.CANCEL, status="applied")
    assert (cancel.from_status, cancel.to_status) == (S.ACTIVE, S.CANCELED)


def test_a_subscription_ends_at_the_end_of_its_term(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, end_date=date(2024, 4, 1))
    subs.apply_due_changes(now=at(2024, 4, 1))
    sub.refresh_from_db()
    assert sub.status == S.ENDED
    assert phases(sub)[-1][3] == date(2024, 4, 1)


def test_manual_renewal_extends_the_term(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, end_date=date(2024, 4, 1))
    change = subs.renew_subscription(sub, actor=actor, now=now)
    sub.refresh_from_db()
    assert sub.end_date == date(2025, 4, 1)
    assert change.details == {"old_end_date": "2024-04-01", "new_end_date": "2025-04-01"}
    assert sub.changes.get(action=A.END, status="scheduled").effective_date == date(2025, 4, 1)
    assert phases(sub)[-1][3] == date(2025, 4, 1)
    open_ended = create(customer, plans, actor, now)
    with pytest.raises(InvalidTransition, match="no end date"):
        subs.renew_subscription(open_ended, actor=actor, now=now)


def test_auto_renewing_contract_renews_with_uplift(customer, plans, actor, now):
    contract = create_contract(
        customer=customer, reference="CT-1", start_date=date(2024, 1, 1), end_date=date(2025, 1, 1), actor=actor,
        auto_renew=True, renewal_term_months=12, renewal_uplift_percent=Decimal("10"),
    )
    sub = create(customer, plans, actor, now, contract=contract, start_date=date(2024, 1, 1))
    assert sub.end_date == date(2025, 1, 1)
    assert sub.changes.get(status="scheduled").action == A.RENEW
    assert subs.apply_due_changes(now=at(2025, 1, 1)) == 1
    sub.refresh_from_db()
    contract.refresh_from_db()
    assert (contract.end_date, sub.end_date, sub.status) == (date(2026, 1, 1), date(2026, 1, 1), S.ACTIVE)
    uplifted = ContractPrice.objects.get(contract=contract, target="base_fee")
    assert uplifted.amount == Money(Decimal("110"), "USD")
    assert (uplifted.effective_from, uplifted.effective_to) == (date(2025, 1, 1), date(2026, 1, 1))
    assert sub.changes.get(status="scheduled").effective_date == date(2026, 1, 1)
    # A second year compounds: 110 x 1.1 = 121, and the first uplifted price stays as it was.
    subs.apply_due_changes(now=at(2026, 1, 1))
    amounts = list(ContractPrice.objects.filter(contract=contract).order_by("effective_from").values_list(
        "amount", flat=True))
    assert amounts == [Decimal("110"), Decimal("121")]


def test_changes_fall_due_by_each_customers_own_day(plans, actor):
    east = CustomerFactory(timezone="Pacific/Kiritimati")  # UTC+14
    west = CustomerFactory(timezone="Pacific/Pago_Pago")  # UTC-11
    now = datetime(2024, 1, 20, 12, tzinfo=UTC)
    e = subs.create_subscription(customer=east, plan_version=plans["basic"], actor=actor, now=now,
                                 start_date=date(2024, 2, 1))
    w = subs.create_subscription(customer=west, plan_version=plans["basic"], actor=actor, now=now,
                                 start_date=date(2024, 2, 1))
    subs.apply_due_changes(now=datetime(2024, 1, 31, 10, 30, tzinfo=UTC))  # 00:30 on 1 Feb in Kiritimati
    e.refresh_from_db()
    w.refresh_from_db()
    assert (e.status, w.status) == (S.ACTIVE, S.PENDING)
    subs.apply_due_changes(now=datetime(2024, 2, 1, 11, 30, tzinfo=UTC))  # 00:30 on 1 Feb in Pago Pago
    w.refresh_from_db()
    assert w.status == S.ACTIVE


# Every action against every status it must refuse.
ACTIONS = {
    "change_plan": lambda s, p, a, n: subs.change_plan(s, p["premium"], actor=a, now=n),
    "change_quantity": lambda s, p, a, n: subs.change_quantity(s, 7, actor=a, now=n),
    "pause": lambda s, p, a, n: subs.pause_subscription(s, actor=a, now=n),
    "resume": lambda s, p, a, n: subs.resume_subscription(s, actor=a, now=n),
    "cancel": lambda s, p, a, n: subs.cancel_subscription(s, actor=a, now=n),
    "renew": lambda s, p, a, n: subs.renew_subscription(s, actor=a, now=n, new_end_date=date(2030, 1, 1)),
}
ILLEGAL = [
    (action, status)
    for action, allowed in {
        "change_plan": subs.ALLOWED_FROM[A.CHANGE_PLAN], "change_quantity": subs.ALLOWED_FROM[A.CHANGE_QUANTITY],
        "pause": subs.ALLOWED_FROM[A.PAUSE], "resume": subs.ALLOWED_FROM[A.RESUME],
        "cancel": subs.ALLOWED_FROM[A.CANCEL], "renew": subs.ALLOWED_FROM[A.RENEW],
    }.items()
    for status in (S.PENDING, S.TRIALING, S.ACTIVE, S.PAUSED, S.CANCELED, S.ENDED)
    if status not in allowed
]


def subscription_in(status, customer, plans, actor, now):
    if status == S.PENDING:
        return create(customer, plans, actor, now, start_date=date(2024, 3, 1))
    sub = create(customer, plans, actor, now, trial_days=10 if status == S.TRIALING else 0,
                 end_date=date(2024, 12, 1))
    if status == S.PAUSED:
        subs.pause_subscription(sub, actor=actor, now=now)
    elif status == S.CANCELED:
        subs.cancel_subscription(sub, actor=actor, now=now)
    elif status == S.ENDED:
        subs.apply_due_changes(now=at(2024, 12, 1))
    sub.refresh_from_db()
    assert sub.status == status
    return sub


@pytest.mark.parametrize(("action", "status"), ILLEGAL)
def test_illegal_transitions_are_refused_and_change_nothing(action, status, customer, plans, actor, now):
    sub = subscription_in(status, customer, plans, actor, now)
    changes_before = sub.changes.count()
    with pytest.raises(InvalidTransition, match=f"it is {status}"):
        ACTIONS[action](sub, plans, actor, now)
    after = Subscription.objects.get(pk=sub.pk)
    assert (after.status, after.changes.count()) == (status, changes_before)


def test_the_state_machine_table_covers_every_action():
    assert set(subs.ALLOWED_FROM) == set(A.values) - {A.CREATE}


def test_creation_errors_say_what_and_where(customer, plans, actor, now):
    eur = PlanVersionFactory(plan=PlanFactory(currency="EUR"), base_fee=Money(1, "EUR"))
    with pytest.raises(ValidationError) as info:
        create(customer, plans, actor, now, plan_version=eur)
    assert "billed in USD" in info.value.message_dict["plan_version"][0]
    draft = PlanVersionFactory(plan=PlanFactory(), status="draft", published_at=None)
    with pytest.raises(ValidationError) as info:
        create(customer, plans, actor, now, plan_version=draft)
    assert "published" in info.value.message_dict["plan_version"][0]
    weekly = PlanVersionFactory(plan=PlanFactory(interval="week"))
    with pytest.raises(ValidationError) as info:
        create(customer, plans, actor, now, plan_version=weekly, billing_anchor="day_of_month", bill_cycle_day=3)
    assert "billing_anchor" in info.value.message_dict
    other = create_contract(customer=CustomerFactory(), reference="CT-X", start_date=date(2024, 1, 1), actor=actor)
    with pytest.raises(ValidationError) as info:
        create(customer, plans, actor, now, contract=other)
    assert "another customer" in info.value.message_dict["contract"][0]
    with pytest.raises(ValidationError) as info:
        create(customer, plans, actor, now, quantity=0, end_date=date(2024, 1, 1))
    assert set(info.value.message_dict) == {"quantity", "end_date"}
    assert Subscription.objects.count() == 0


def test_published_plan_change_needs_a_published_target(customer, plans, actor, now):
    sub = create(customer, plans, actor, now)
    draft = PlanVersionFactory(plan=plans["premium"].plan, status="draft", published_at=None)
    with pytest.raises(ValidationError, match="publish it first"):
        subs.change_plan(sub, draft, actor=actor, now=now)
    with pytest.raises(ValidationError, match="already on this plan version"):
        subs.change_plan(sub, plans["basic"], actor=actor, now=now)


def test_auto_renewal_is_recorded_once_per_subscription_with_who_applied_it(customer, plans, actor, now):
    contract = create_contract(
        customer=customer, reference="CT-R", start_date=date(2024, 1, 1), end_date=date(2025, 1, 1), actor=actor,
        auto_renew=True, renewal_term_months=12,
    )
    first = create(customer, plans, actor, now, contract=contract, start_date=date(2024, 1, 1))
    second = create(customer, plans, actor, now, contract=contract, start_date=date(2024, 1, 1),
                    plan_version=plans["premium"])
    subs.apply_due_changes(now=at(2025, 1, 1))
    for sub in (first, second):
        renewals = sub.changes.filter(action=A.RENEW, status="applied")
        assert renewals.count() == 1
        assert renewals.get().details["new_end_date"] == "2026-01-01"
    assert first.changes.get(action=A.RENEW, status="applied").details["applied_by"] == "system:apply_due_changes"


def test_a_paused_subscription_can_change_plan_and_be_migrated(customer, plans, actor, now):
    sub = create(customer, plans, actor, now, start_date=date(2024, 1, 1))
    subs.pause_subscription(sub, actor=actor, now=now)
    from contracts.services.catalog import migrate_subscriptions

    newer = PlanVersionFactory(plan=plans["basic"].plan, base_fee=Money(Decimal("90"), "USD"))
    assert migrate_subscriptions(plans["basic"], newer, actor=actor, now=now) == 1
    subs.apply_due_changes(now=at(2024, 2, 1))
    sub.refresh_from_db()
    assert (sub.status, sub.plan_version) == (S.PAUSED, newer)
