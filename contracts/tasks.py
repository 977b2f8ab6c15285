from celery import shared_task
from django.utils import timezone

from billing.actors import Actor
from contracts.services.subscriptions import apply_due_changes


@shared_task(name="contracts.tasks.apply_due_subscription_changes", acks_late=True)
def apply_due_subscription_changes() -> int:
    """Beat task: apply scheduled lifecycle changes that have come due. Idempotent: applying marks each change
    applied under its subscription's row lock, so a repeat or a concurrent run finds nothing left to do."""
    return apply_due_changes(now=timezone.now(), actor=Actor.system("beat:apply_due_subscription_changes"))
