"""The celery-beat schedule stored in the database: created, kept, and naming real tasks."""

import io

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from billing.celery import app
from billing.schedule import SCHEDULE, Every, ensure_periodic_tasks

pytestmark = pytest.mark.django_db

APPLY_CHANGES = "contracts.tasks.apply_due_subscription_changes"
PURGE_KEYS = "billing.api.tasks.purge_idempotency_records"


def test_creates_the_periodic_tasks() -> None:
    ensure_periodic_tasks()

    apply_changes = PeriodicTask.objects.get(task=APPLY_CHANGES)
    assert apply_changes.enabled
    assert (apply_changes.interval.every, apply_changes.interval.period) == (15, IntervalSchedule.MINUTES)
    assert apply_changes.crontab is None

    purge = PeriodicTask.objects.get(task=PURGE_KEYS)
    assert purge.enabled
    assert purge.interval is None
    assert (purge.crontab.minute, purge.crontab.hour, purge.crontab.day_of_month) == ("15", "3", "*")
    assert str(purge.crontab.timezone) == "UTC"


def test_is_idempotent_and_does_not_wake_beat_when_nothing_changed() -> None:
    ensure_periodic_tasks()
    marker = PeriodicTasks.last_change()

    results = ensure_periodic_tasks()

    assert [registered.created for registered in results] == [False] * len(SCHEDULE)
    assert PeriodicTask.objects.count() == len(SCHEDULE)
    # One interval row per distinct period, shared by the tasks that use it.
    assert IntervalSchedule.objects.count() == len({spec.when for spec in SCHEDULE if isinstance(spec.when, Every)})
    assert PeriodicTasks.last_change() == marker


def test_restores_a_changed_schedule_but_keeps_a_task_switched_off() -> None:
    ensure_periodic_tasks()
    task = PeriodicTask.objects.get(task=APPLY_CHANGES)
    task.enabled = False
    task.interval = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    task.save()

    ensure_periodic_tasks()

    task.refresh_from_db()
    assert not task.enabled
    assert (task.interval.every, task.interval.period) == (15, IntervalSchedule.MINUTES)


def test_setup_schedule_command_reports_each_task() -> None:
    out = io.StringIO()
    call_command("setup_schedule", stdout=out)
    call_command("setup_schedule", stdout=out)
    text = out.getvalue()
    assert f"{APPLY_CHANGES}, every 15 minutes" in text
    assert f"{PURGE_KEYS}, daily at 03:15 UTC" in text
    assert "Create usage event partitions: usage.tasks.ensure_event_partitions, daily at 00:30 UTC" in text
    assert text.count("created") == len(SCHEDULE) and text.count("up to date") == len(SCHEDULE)
    assert PeriodicTask.objects.count() == len(SCHEDULE)


@pytest.mark.parametrize("spec", SCHEDULE, ids=lambda spec: spec.task)
def test_every_scheduled_task_is_registered_with_celery(spec) -> None:
    # beat would send a name no worker knows; the tasks' modules must be found by autodiscovery.
    app.loader.import_default_modules()
    app.autodiscover_tasks(force=True)
    assert spec.task in app.tasks, f"{spec.task} is not a registered Celery task"
