"""Celery tasks of the usage app: event partitions ahead of time, and CSV backfills uploaded in the admin."""

from typing import Any

from celery import shared_task
from django.utils import timezone

from usage import partitions

PARTITION_MONTHS_AHEAD = 3


@shared_task(name="usage.tasks.ensure_event_partitions")
def ensure_event_partitions() -> list[str]:
    """The event table's partitions for the current month and the next three (idempotent; beat runs it daily)."""
    this_month = partitions.month_start(timezone.now().date())
    return partitions.ensure_partitions(this_month, PARTITION_MONTHS_AHEAD + 1)


@shared_task(name="usage.tasks.run_usage_backfill", acks_late=True)
def run_usage_backfill(backfill_id: int) -> dict[str, Any]:
    """Ingest an uploaded usage CSV. Safe to run again after a crash: what was stored comes back as duplicates."""
    from usage.ingestion import run_stored_backfill
    from usage.models import UsageBackfill

    backfill = UsageBackfill.objects.get(pk=backfill_id)
    return run_stored_backfill(backfill, now=timezone.now())
