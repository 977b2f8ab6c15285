"""The periodic tasks celery-beat runs, kept as django-celery-beat rows in the database.

`ensure_periodic_tasks()` upserts them (bin/start and `manage.py setup_schedule` call it): the task
name and schedule are brought in line with this file, while `enabled` is only set when a row is
created, so that an operator who switched a task off in the admin keeps it off.
"""

from dataclasses import dataclass
from typing import NamedTuple

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class Every:
    minutes: int

    def __str__(self) -> str:
        return f"every {self.minutes} minutes"


@dataclass(frozen=True)
class Daily:
    hour: int
    minute: int

    def __str__(self) -> str:
        return f"daily at {self.hour:02d}:{self.minute:02d} UTC"


@dataclass(frozen=True)
class ScheduledTask:
    name: str  # unique label shown in the admin
    task: str  # registered Celery task name
    when: Every | Daily
    description: str
    # A run not started within this many seconds is dropped: the next one does the same work.
    expire_seconds: int | None = None


SCHEDULE: tuple[ScheduledTask, ...] = (
    ScheduledTask(
        name="Apply due subscription changes",
        task="contracts.tasks.apply_due_subscription_changes",
        when=Every(minutes=15),
        description="Applies scheduled plan changes, cancellations, trial ends and renewals that are due.",
        expire_seconds=14 * 60,
    ),
    ScheduledTask(
        name="Purge old idempotency records",
        task="billing.api.tasks.purge_idempotency_records",
        when=Daily(hour=3, minute=15),
        description="Deletes stored API responses whose Idempotency-Key has expired.",
        expire_seconds=6 * 3600,
    ),
    ScheduledTask(
        name="Create usage event partitions",
        task="usage.tasks.ensure_event_partitions",
        when=Daily(hour=0, minute=30),
        description="Creates the monthly event partitions for this month and the next three (PostgreSQL).",
        expire_seconds=12 * 3600,
    ),
    ScheduledTask(
        name="Close billing cycles",
        task="invoicing.tasks.start_cycle_close",
        when=Every(minutes=60),
        description=(
            "Invoices every subscription whose period has ended in its customer's timezone, one task per "
            "customer; hourly, because customers' midnights fall on every hour of UTC."
        ),
        expire_seconds=55 * 60,
    ),
    ScheduledTask(
        name="Finalize drafts after their grace period",
        task="invoicing.tasks.finalize_due_drafts",
        when=Every(minutes=15),
        description="Finalizes the draft invoices whose review period is over (number, PDF, immutable).",
        expire_seconds=14 * 60,
    ),
    ScheduledTask(
        name="Run dunning",
        task="invoicing.tasks.run_dunning",
        when=Daily(hour=9, minute=0),
        description=(
            "Runs the dunning steps due today in each customer's timezone (reminders, payment retries, final "
            "notices, suspensions, write-offs), each once per invoice, and lifts settled suspensions."
        ),
        expire_seconds=12 * 3600,
    ),
    ScheduledTask(
        name="Post pending documents to the ledger",
        task="revrec.tasks.post_pending_documents",
        when=Every(minutes=15),
        description="Posts every finalized invoice, payment, credit note, refund and write-off not yet in the ledger.",
        expire_seconds=14 * 60,
    ),
    ScheduledTask(
        name="Recognise revenue",
        task="revrec.tasks.recognize_revenue_daily",
        when=Daily(hour=2, minute=30),
        description=(
            "Posts pending documents, then recognises each billing entity's revenue through yesterday in the "
            "entity's timezone (one journal entry per entity and currency, recorded as a recognition run)."
        ),
        expire_seconds=12 * 3600,
    ),
)


class Registered(NamedTuple):
    spec: ScheduledTask
    row: PeriodicTask
    created: bool


def _interval(every: Every) -> IntervalSchedule:
    schedule = IntervalSchedule.objects.filter(every=every.minutes, period=IntervalSchedule.MINUTES).first()
    return schedule or IntervalSchedule.objects.create(every=every.minutes, period=IntervalSchedule.MINUTES)


def _crontab(daily: Daily) -> CrontabSchedule:
    fields = {
        "minute": str(daily.minute),
        "hour": str(daily.hour),
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "UTC",
    }
    return CrontabSchedule.objects.filter(**fields).first() or CrontabSchedule.objects.create(**fields)


@transaction.atomic
def ensure_periodic_tasks() -> list[Registered]:
    """Create or update every task of SCHEDULE. Safe to repeat."""
    results: list[Registered] = []
    for spec in SCHEDULE:
        wanted = {
            "task": spec.task,
            "interval": _interval(spec.when) if isinstance(spec.when, Every) else None,
            "crontab": _crontab(spec.when) if isinstance(spec.when, Daily) else None,
            "description": spec.description,
            "expire_seconds": spec.expire_seconds,
        }
        row = PeriodicTask.objects.select_for_update().filter(name=spec.name).first()
        if row is None:
            row = PeriodicTask.objects.create(name=spec.name, enabled=True, **wanted)
            results.append(Registered(spec, row, True))
            continue
        changed = [field for field, value in wanted.items() if getattr(row, field) != value]
        if changed:
            # Saving bumps beat's change marker, so only save when something differs.
            for field in changed:
                setattr(row, field, wanted[field])
            row.save()
        results.append(Registered(spec, row, False))
    return results
