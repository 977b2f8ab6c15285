"""Celery tasks of revenue recognition: thin shells over the services, idempotent and safe to retry."""

from celery import shared_task
from django.utils import timezone

from billing.actors import Actor


def _post_pending(actor: Actor) -> object | None:
    """Post the documents not yet in the ledger (the posting rules live in revrec.services.posting)."""
    try:
        from revrec.services.posting import post_pending
    except ImportError:  # an install without the batch posting: documents are posted as they happen
        return None
    return post_pending(now=timezone.now(), actor=actor)


@shared_task(name="revrec.tasks.post_pending_documents", acks_late=True)
def post_pending_documents_task() -> str:
    """Beat task (every 15 minutes): post every finalized invoice, payment, credit note... not yet posted."""
    return repr(_post_pending(Actor.system("beat:post_pending_documents")))


@shared_task(name="revrec.tasks.recognize_revenue_daily", acks_late=True)
def recognize_revenue_daily_task() -> list[int]:
    """Beat task (daily): post what is pending first, so its revenue is in the run, then recognise each
    entity through yesterday in its own timezone. Returns the RecognitionRun ids."""
    from revrec.services.recognition import run_daily_recognition

    actor = Actor.system("beat:recognize_revenue_daily")
    _post_pending(actor)
    return [run.pk for run in run_daily_recognition(now=timezone.now(), actor=actor)]
