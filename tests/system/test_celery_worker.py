"""A real Celery worker process, on the Redis broker, runs the beat task end to end on the test database."""

import re
from datetime import UTC, date, datetime

import pytest
from django.utils import timezone

from billing.actors import Actor
from billing.celery import app
from contracts.models import Subscription, SubscriptionChange
from contracts.services.subscriptions import create_subscription
from tests.factories import CustomerFactory, PlanVersionFactory

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


def test_worker_applies_due_subscription_changes(celery_worker_process) -> None:
    # A trial that ended long ago but whose end was never applied: the worker's run must apply it.
    customer = CustomerFactory(timezone="Europe/Berlin")
    version = PlanVersionFactory(plan__currency=str(customer.currency), trial_days=14)
    subscription = create_subscription(
        customer=customer, plan_version=version, actor=Actor.system("tests"),
        now=datetime(2024, 1, 15, 12, tzinfo=UTC), start_date=date(2024, 1, 15),
    )
    assert subscription.status == Subscription.Status.TRIALING

    sent_at = timezone.now()
    app.send_task("contracts.tasks.apply_due_subscription_changes", queue=celery_worker_process.queue)

    def trial_ended() -> bool:
        subscription.refresh_from_db()
        return subscription.status == Subscription.Status.ACTIVE

    celery_worker_process.wait_until(trial_ended, what="the worker to end the trial")
    change = subscription.changes.get(action=SubscriptionChange.Action.END_TRIAL)
    assert change.status == SubscriptionChange.Status.APPLIED
    assert change.effective_date == date(2024, 1, 29)
    # Applied just now by the worker's run (the task uses the real clock), which reports one change applied.
    assert change.applied_at >= sent_at
    assert re.search(r"apply_due_subscription_changes\[[0-9a-f-]+\] succeeded in [0-9.]+s: 1\b",
                     celery_worker_process.output()), celery_worker_process.output()
