"""Periodic housekeeping of the API's stored state."""

from celery import shared_task
from django.utils import timezone

from billing.api import idempotency


@shared_task(name="billing.api.tasks.purge_idempotency_records", ignore_result=True)
def purge_idempotency_records() -> int:
    """Delete stored Idempotency-Key responses older than 24 hours (a repeat after that is a new request)."""
    return idempotency.purge(now=timezone.now())
