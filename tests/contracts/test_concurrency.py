"""Lifecycle writes racing each other on the real PostgreSQL: row locks, not check-then-act."""

import threading
from datetime import UTC, date, datetime

import pytest
from django.db import connection

from contracts.models import PlanVersion, Subscription, SubscriptionChange
from contracts.services import catalog
from contracts.services import subscriptions as subs
from tests.factories import CustomerFactory, PlanFactory, PlanVersionFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run_concurrently(target, count):
    barrier = threading.Barrier(count)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(target())
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_several_schedulers_apply_each_due_change_exactly_once(actor):
    version = PlanVersionFactory()
    now = datetime(2024, 1, 15, 17, tzinfo=UTC)
    created = [
        subs.create_subscription(customer=CustomerFactory(), plan_version=version, actor=actor, now=now,
                                 start_date=date(2024, 2, 1), end_date=date(2024, 3, 1))
        for _ in range(12)
    ]
    results, errors = run_concurrently(lambda: subs.apply_due_changes(now=datetime(2024, 2, 1, 17, tzinfo=UTC)), 4)
    assert errors == []
    assert sum(results) == len(created)
    assert set(Subscription.objects.values_list("status", flat=True)) == {"active"}
    for subscription in created:
        assert subscription.changes.filter(action="activate", status="applied").count() == 1
    assert SubscriptionChange.objects.filter(action="end", status="scheduled").count() == len(created)


def test_concurrent_new_versions_get_distinct_numbers_and_one_draft(actor):
    plan = PlanFactory()
    PlanVersionFactory(plan=plan, version=1)
    results, errors = run_concurrently(lambda: catalog.create_plan_version(plan, actor=actor), 3)
    assert len(results) == 1 and len(errors) == 2
    assert PlanVersion.objects.filter(plan=plan, status="draft").count() == 1


def test_concurrent_pause_of_the_same_subscription_pauses_once(actor):
    now = datetime(2024, 1, 15, 17, tzinfo=UTC)
    subscription = subs.create_subscription(customer=CustomerFactory(), plan_version=PlanVersionFactory(),
                                            actor=actor, now=now)
    results, errors = run_concurrently(lambda: subs.pause_subscription(subscription, actor=actor, now=now), 3)
    assert len(results) == 1 and len(errors) == 2
    assert subscription.changes.filter(action="pause").count() == 1
