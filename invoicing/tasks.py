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


@shared_task(name="invoicing.tasks.render_credit_note_pdf", acks_late=True, max_retries=3, default_retry_delay=30)
def render_credit_note_pdf_task(credit_note_id: int) -> str:
    """Render and store an issued credit note's PDF (re-rendering gives the same bytes)."""
    from invoicing.credit_note_pdf import store_credit_note_pdf
    from invoicing.models import CreditNote

    note = CreditNote.objects.select_related("billing_entity", "invoice", "offset_invoice").filter(
        pk=credit_note_id).first()
    if note is None:
        return "missing"
    store_credit_note_pdf(note)
    return note.pdf_sha256


@shared_task(name="invoicing.tasks.charge_invoice", acks_late=True, bind=True, max_retries=6)
def charge_invoice_task(self, invoice_id: int, attempt: str = "initial") -> str:
    """Charge a finalized invoice to the customer's saved payment method. When the gateway does not answer,
    retried with backoff; every try sends the same idempotency key, so the customer is charged once."""
    from invoicing.gateways import GatewayRetryableError
    from invoicing.services.charges import charge_invoice

    if not Invoice.objects.filter(pk=invoice_id).exists():
        return "missing"
    try:
        payment = charge_invoice(invoice_id, actor=Actor.system("gateway:charge"), now=timezone.now(),
                                 attempt=attempt)
    except GatewayRetryableError as exc:
        raise self.retry(exc=exc, countdown=min(30 * 2**self.request.retries, 3600)) from exc
    return "nothing to charge" if payment is None else f"payment {payment.pk} {payment.status}"


@shared_task(name="invoicing.tasks.send_gateway_refund", acks_late=True, bind=True, max_retries=6)
def send_gateway_refund_task(self, refund_id: int) -> str:
    """Send a pending refund through its payment's gateway (its key is the refund's id: sent once)."""
    from invoicing.gateways import GatewayRetryableError
    from invoicing.models import Refund
    from invoicing.services.charges import send_refund

    if not Refund.objects.filter(pk=refund_id).exists():
        return "missing"
    try:
        refund = send_refund(refund_id, actor=Actor.system("gateway:refund"), now=timezone.now())
    except GatewayRetryableError as exc:
        raise self.retry(exc=exc, countdown=min(30 * 2**self.request.retries, 3600)) from exc
    return f"refund {refund.pk} {refund.status}"


@shared_task(name="invoicing.tasks.run_dunning", acks_late=True)
def run_dunning_task(as_of: str | None = None) -> dict[str, object]:
    """Beat task (daily): run the dunning steps due as of `as_of` (ISO 8601; default now). Safe to repeat:
    each step runs once per invoice."""
    from datetime import UTC, datetime

    from invoicing.services.dunning import run_dunning

    now = datetime.fromisoformat(as_of) if as_of else timezone.now()
    if timezone.is_naive(now):
        now = now.replace(tzinfo=UTC)  # a naive moment means UTC, as for the command
    result = run_dunning(now=now, actor=Actor.system("beat:dunning"))
    return {"as_of": now.isoformat(), **result.summary()}
