"""Celery tasks of invoicing: thin shells over the services, idempotent and safe to retry."""

from celery import shared_task
from django.utils import timezone

from billing.actors import Actor
from invoicing.models import Invoice


@shared_task(name="invoicing.tasks.start_cycle_close", acks_late=True)
def start_cycle_close_task() -> int:
    """Beat task: close every customer with a period ended in its own timezone; returns the run id."""
    from invoicing.services.cycle import start_cycle_close

    return start_cycle_close(now=timezone.now(), actor=Actor.system("beat:cycle_close")).pk


@shared_task(name="invoicing.tasks.close_customer", acks_late=True, max_retries=3)
def close_customer_task(run_id: int, customer_id: int) -> str:
    """One customer of a run. A retry after a crash finds its entry done (or its periods claimed)."""
    from invoicing.services.cycle import run_customer_close

    return run_customer_close(run_id, customer_id)


@shared_task(name="invoicing.tasks.close_customers", acks_late=True, max_retries=3)
def close_customers_task(run_id: int, customer_ids: list[int]) -> dict[str, int]:
    """Customers of a run, each closed in its own transaction; a retry skips those already done."""
    from invoicing.services.cycle import complete_run_if_done, run_customer_close

    outcomes: dict[str, int] = {}
    for customer_id in customer_ids:
        outcome = run_customer_close(run_id, customer_id, complete=False)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    complete_run_if_done(run_id)
    return outcomes


@shared_task(name="invoicing.tasks.finalize_due_drafts", acks_late=True)
def finalize_due_drafts_task() -> int:
    """Beat task: finalize the drafts whose grace period has ended."""
    from invoicing.services.documents import finalize_due_drafts

    return finalize_due_drafts(now=timezone.now(), actor=Actor.system("beat:finalize_due_drafts"))


@shared_task(name="invoicing.tasks.render_invoice_pdf", acks_late=True, max_retries=3, default_retry_delay=30)
def render_invoice_pdf_task(invoice_id: int) -> str:
    """Render and store a finalized invoice's PDF (re-rendering gives the same bytes)."""
    from invoicing.pdf import store_invoice_pdf

    invoice = Invoice.objects.select_related("billing_entity", "customer").filter(pk=invoice_id).first()
    if invoice is None:
        return "missing"
    store_invoice_pdf(invoice)
    return invoice.pdf_sha256
