"""Dunning: chasing overdue invoices step by step, "as of" a moment.

A policy (the billing entity's default, or the customer's override; an override without a policy means the
customer is never dunned) lists steps by days relative to the due date. `run_dunning` runs, for every open
invoice, the steps whose date (due date + offset, in the customer's time zone) has come, in offset order, each
once: the unique (invoice, step) row is inserted under the customer's and the invoice's row locks, after checking
that the invoice still owes money, so two runs racing, a retried task or a second run on the same day do nothing
twice, and nothing runs once the invoice is paid (or written off: uncollectible invoices are no longer dunned).

Catch-up: when several steps are due at once (a policy assigned late, a missed day), every one of them runs,
but only the latest e-mail is sent (reminders, final notices and the suspension notice; the older ones are
recorded as skipped), and only the latest payment retry charges the card: no flood of mail or charges.

A failed step (e-mail server down, a template error, a gateway error) is recorded as failed with its error and
is not retried by later runs; `retry_dunning_action` (the admin's "Retry" action) runs it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.models import Subscription
from contracts.selectors import customer_today
from contracts.services.subscriptions import pause_subscription, resume_subscription
from customers.models import BillingEntity, Customer
from invoicing.emails import TemplateRenderError, one_line, recipients_for, render_file, render_string, send_email
from invoicing.models import (
    CustomerDunningOverride,
    DunningAction,
    DunningPolicy,
    DunningStep,
    DunningSuspension,
    EmailMessage,
    Invoice,
)
from invoicing.pricing.rounding import currency_exponent
from invoicing.services.payments import lock_customer, mark_uncollectible

logger = logging.getLogger(__name__)

A = DunningStep.Action
S = DunningAction.Status
EMAIL_ACTIONS = (A.REMINDER, A.FINAL_NOTICE, A.SUSPEND)  # steps that write to the customer
TEMPLATES = {A.REMINDER: "reminder", A.FINAL_NOTICE: "final_notice", A.SUSPEND: "suspended"}
# The earliest a step can be due, relative to today in UTC: offsets go down to -90 days, and a customer's
# today is at most a day ahead of UTC's.
LOOKAHEAD_DAYS = 92
INTERRUPTED = "The step was interrupted before it finished; retry it."


# --- policies -----------------------------------------------------------------------------------------------


def policy_for(customer: Customer) -> DunningPolicy | None:
    """The policy that dunns the customer: its override's (none: never dunned), else its entity's default.
    An inactive policy dunns no one."""
    override = CustomerDunningOverride.objects.filter(customer_id=customer.pk).select_related("policy").first()
    if override is not None:
        policy = override.policy
    else:
        policy = DunningPolicy.objects.filter(billing_entity_id=customer.billing_entity_id, is_default=True).first()
    return policy if policy is not None and policy.is_active else None


STANDARD_STEPS = (
    (-3, A.REMINDER),
    (1, A.REMINDER),
    (7, A.RETRY_PAYMENT),
    (14, A.FINAL_NOTICE),
    (21, A.SUSPEND),
    (30, A.MARK_UNCOLLECTIBLE),
)


def create_standard_policy(entity: BillingEntity, *, name: str = "Standard", default: bool = True) -> DunningPolicy:
    """A ready-made policy (D-3 and D+1 reminders, D+7 retry, D+14 final notice, D+21 suspension, D+30
    write-off) for set-up and the demo; returns the existing one of that name unchanged."""
    with transaction.atomic():
        policy, created = DunningPolicy.objects.get_or_create(
            billing_entity=entity, name=name,
            defaults={"is_default": default and not DunningPolicy.objects.filter(
                billing_entity=entity, is_default=True).exists()},
        )
        if created:
            DunningStep.objects.bulk_create(
                [DunningStep(policy=policy, offset_days=offset, action=action) for offset, action in STANDARD_STEPS]
            )
    return policy


def set_dunning_override(
    customer: Customer, *, policy: DunningPolicy | None, actor: Actor, note: str = ""
) -> CustomerDunningOverride:
    """Give the customer its own policy, or none (never dunned). The policy must be an active one of the
    customer's billing entity."""
    if len(note) > 300:
        raise BillingError("The note has at most 300 characters.", field="note")
    with transaction.atomic():
        customer = lock_customer(customer)
        if policy is not None:
            if policy.billing_entity_id != customer.billing_entity_id:
                raise BillingError(
                    f"Policy {policy.name!r} belongs to another billing entity than the customer's "
                    f"({customer.billing_entity.code}).", field="policy",
                )
            if not policy.is_active:
                raise BillingError(f"Policy {policy.name!r} is inactive.", field="policy")
        override = CustomerDunningOverride.objects.filter(customer=customer).first() or CustomerDunningOverride(
            customer=customer
        )
        override.policy = policy
        override.note = note.strip()
        override._history_user = actor.user  # type: ignore[attr-defined]
        override._change_reason = actor.label  # type: ignore[attr-defined]
        override.save()
        return override


def remove_dunning_override(customer: Customer, *, actor: Actor) -> bool:
    """Back to the entity's default policy. False when there was no override."""
    with transaction.atomic():
        customer = lock_customer(customer)
        override = CustomerDunningOverride.objects.filter(customer=customer).first()
        if override is None:
            return False
        override._history_user = actor.user  # type: ignore[attr-defined]
        override._change_reason = actor.label  # type: ignore[attr-defined]
        override.delete()
        return True


# --- the run ------------------------------------------------------------------------------------------------


@dataclass
class DunningRunResult:
    as_of: datetime
    invoices_checked: int = 0
    actions: list[DunningAction] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # invoice id -> what stopped its dunning this run
    resumed: list[DunningSuspension] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for action in self.actions if action.status == status)

    def summary(self) -> dict[str, int]:
        return {
            "invoices_checked": self.invoices_checked,
            "actions": len(self.actions),
            "done": self.count(S.DONE),
            "skipped": self.count(S.SKIPPED),
            "failed": self.count(S.FAILED),
            "errors": len(self.errors),
            "resumed": len(self.resumed),
        }


def _is_dunnable(invoice: Invoice) -> bool:
    return invoice.status == Invoice.Status.FINALIZED and invoice.amount_due > 0 and invoice.due_date is not None


def scheduled_for(invoice: Invoice, step: DunningStep) -> date:
    return invoice.due_date + timedelta(days=step.offset_days)


def _lock_invoice(pk: int) -> Invoice:
    return (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("customer", "billing_entity")
        .get(pk=pk)
    )


def _superseded(pending: list[DunningStep]) -> set[int]:
    """Of steps due together, the e-mails and payment retries that the latest of their kind replaces."""
    skipped: set[int] = set()
    for kinds in (EMAIL_ACTIONS, (A.RETRY_PAYMENT,)):
        of_kind = [step for step in pending if step.action in kinds]
        skipped.update(step.pk for step in of_kind[:-1])
    return skipped


class _Policies:
    """Policies and their steps looked up once per run."""

    def __init__(self, customer_ids: Iterable[int]) -> None:
        self.overrides = dict(
            CustomerDunningOverride.objects.filter(customer_id__in=set(customer_ids)).values_list(
                "customer_id", "policy_id"
            )
        )
        self.defaults = dict(DunningPolicy.objects.filter(is_default=True).values_list("billing_entity_id", "pk"))
        self.active = set(DunningPolicy.objects.filter(is_active=True).values_list("pk", flat=True))
        self.steps: dict[int, list[DunningStep]] = {}

    def steps_for(self, customer_id: int, entity_id: int) -> tuple[int | None, list[DunningStep]]:
        policy_id = self.overrides[customer_id] if customer_id in self.overrides else self.defaults.get(entity_id)
        if policy_id is None or policy_id not in self.active:
            return None, []
        if policy_id not in self.steps:
            self.steps[policy_id] = list(DunningStep.objects.filter(policy_id=policy_id).order_by("offset_days", "id"))
        return policy_id, self.steps[policy_id]


def run_dunning(*, now: datetime, actor: Actor | None = None, customer_ids: Iterable[int] | None = None
                ) -> DunningRunResult:
    """Run every dunning step due as of `now` (the daily beat task, the admin, `manage.py run_dunning`), then
    lift the suspensions of customers who no longer owe anything overdue. One invoice's failure is recorded
    in the result and does not stop the others."""
    actor = actor or Actor.system("dunning")
    result = DunningRunResult(as_of=now)
    invoices = Invoice.objects.filter(
        status=Invoice.Status.FINALIZED, amount_due__gt=0, due_date__isnull=False,
        due_date__lte=now.date() + timedelta(days=LOOKAHEAD_DAYS),
    )
    if customer_ids is not None:
        customer_ids = list(customer_ids)
        invoices = invoices.filter(customer_id__in=customer_ids)
    rows = list(invoices.order_by("customer_id", "due_date", "pk").values_list("pk", "customer_id",
                                                                              "customer__billing_entity_id"))
    policies = _Policies(customer_id for _, customer_id, _ in rows)
    for invoice_id, customer_id, entity_id in rows:
        policy_id, steps = policies.steps_for(customer_id, entity_id)
        if policy_id is None or not steps:
            continue
        result.invoices_checked += 1
        try:
            result.actions.extend(_dun_invoice(invoice_id, steps, now=now, actor=actor))
        except Exception as exc:  # one invoice's surprise must not stop the whole run; it is logged and reported
            logger.exception("Dunning invoice %s failed", invoice_id)
            result.errors[invoice_id] = f"{type(exc).__name__}: {exc}"
    result.resumed = resume_settled_customers(now=now, actor=actor, customer_ids=customer_ids)
    return result


def _dun_invoice(invoice_id: int, steps: list[DunningStep], *, now: datetime, actor: Actor) -> list[DunningAction]:
    invoice = Invoice.objects.select_related("customer").get(pk=invoice_id)
    today = customer_today(invoice.customer, now)
    done = set(DunningAction.objects.filter(invoice_id=invoice_id).values_list("step_id", flat=True))
    pending = [s for s in steps if s.pk not in done and scheduled_for(invoice, s) <= today]
    superseded = _superseded(pending)
    actions: list[DunningAction] = []
    for step in pending:
        outcome = _run_step(invoice_id, invoice.customer_id, step, superseded=step.pk in superseded, now=now,
                            actor=actor)
        if outcome is _STOP:
            break  # paid, written off or voided meanwhile: nothing more runs
        if isinstance(outcome, DunningAction):
            actions.append(outcome)
    return actions


_STOP = object()
_ALREADY = object()


def _run_step(invoice_id: int, customer_id: int, step: DunningStep, *, superseded: bool, now: datetime,
              actor: Actor) -> Any:
    """One step for one invoice: its own transaction, the customer's lock first, then the invoice's."""
    with transaction.atomic():
        customer = lock_customer(customer_id)
        invoice = _lock_invoice(invoice_id)
        if not _is_dunnable(invoice):
            return _STOP
        today = customer_today(customer, now)
        action = DunningAction(
            invoice=invoice, step=step, action=step.action, offset_days=step.offset_days,
            scheduled_for=scheduled_for(invoice, step), status=S.FAILED, details={"error": INTERRUPTED},
            as_of=now, ran_at=now,
        )
        try:
            with transaction.atomic():
                action.save()
        except IntegrityError:
            return _ALREADY  # another run recorded it first
        if step.action == A.RETRY_PAYMENT and not superseded:
            charge_later = True  # the gateway is called after this commits, with no lock held
        else:
            charge_later = False
            _perform(action, invoice, customer, step, superseded=superseded, today=today, now=now, actor=actor)
    if charge_later:
        _charge(action, now=now, actor=actor)
    return action


def _perform(action: DunningAction, invoice: Invoice, customer: Customer, step: DunningStep, *, superseded: bool,
             today: date, now: datetime, actor: Actor) -> None:
    """Act for a recorded step, inside its transaction; a refusal or an error marks the action failed and
    undoes what the act wrote (a savepoint), never the action row itself."""
    try:
        with transaction.atomic():
            status, details = _act(action, invoice, customer, step, superseded=superseded, today=today, now=now,
                                   actor=actor)
    except (BillingError, InvalidTransition, TemplateRenderError) as exc:
        status, details = S.FAILED, {"error": str(exc)}
    except Exception as exc:  # recorded on the action, so the operator sees it and can retry
        logger.exception("Dunning step %s on invoice %s failed", step.pk, invoice.pk)
        status, details = S.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
    _finish(action, status, details)


def _finish(action: DunningAction, status: str, details: dict[str, Any]) -> None:
    action.status = status
    action.details = details
    action.save(update_fields=["status", "details", "ran_at"])


def _act(action: DunningAction, invoice: Invoice, customer: Customer, step: DunningStep, *, superseded: bool,
         today: date, now: datetime, actor: Actor) -> tuple[str, dict[str, Any]]:
    if step.action in (A.REMINDER, A.FINAL_NOTICE):
        if superseded:
            return S.SKIPPED, {"reason": "A later e-mail step was due at the same time; only it was sent."}
        return _email(action, invoice, customer, step, today=today, now=now)
    if step.action == A.SUSPEND:
        return _suspend(action, invoice, customer, step, superseded=superseded, today=today, now=now, actor=actor)
    if step.action == A.MARK_UNCOLLECTIBLE:
        written_off = mark_uncollectible(
            invoice.pk, reason=f"Dunning: {step} of policy {step.policy.name}", actor=actor, now=now
        )
        return S.DONE, {"amount_due": str(written_off.amount_due)}
    if step.action == A.RETRY_PAYMENT:  # only superseded retries get here
        return S.SKIPPED, {"reason": "A later payment retry was due at the same time; only it charged."}
    raise BillingError(f"Unknown dunning action {step.action!r}.", field="action")


# --- e-mails ------------------------------------------------------------------------------------------------


def _display_amount(amount: Decimal, currency: str) -> str:
    places = currency_exponent(currency)
    return f"{amount:,.{places}f}"


def email_context(invoice: Invoice, customer: Customer, today: date) -> dict[str, Any]:
    """The plain values a dunning e-mail template sees (no model objects: templates are user-written)."""
    currency = str(invoice.currency)
    overdue = (today - invoice.due_date).days
    entity = invoice.billing_entity
    return {
        "customer_name": customer.name,
        "customer_external_id": customer.external_id,
        "invoice_number": invoice.number,
        "amount_due": _display_amount(invoice.amount_due, currency),
        "total": _display_amount(invoice.total, currency),
        "currency": currency,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "days_overdue": overdue,
        "days_until_due": max(-overdue, 0),
        "today": today,
        "entity_name": entity.name,
        "contact_email": entity.email or settings.DEFAULT_FROM_EMAIL,
    }


def render_dunning_email(step: DunningStep, context: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of a step's e-mail: its own text when it has some, else the shipped template."""
    name = TEMPLATES[step.action]
    subject = (render_string(step.email_subject, context) if step.email_subject.strip()
               else render_file(f"dunning/{name}_subject.txt", context))
    body = (render_string(step.email_body, context) if step.email_body.strip()
            else render_file(f"dunning/{name}.txt", context))
    subject = one_line(subject)
    if not subject:
        raise TemplateRenderError("The subject is empty once rendered.")
    return subject, body


def _email(action: DunningAction, invoice: Invoice, customer: Customer, step: DunningStep, *, today: date,
           now: datetime) -> tuple[str, dict[str, Any]]:
    to = recipients_for(customer)
    if not to:
        return S.SKIPPED, {"reason": "The customer has no billing e-mail and no contact that receives invoices."}
    subject, body = render_dunning_email(step, email_context(invoice, customer, today))
    entity_email = invoice.billing_entity.email
    message = send_email(
        f"dunning.{step.action}", to=to, subject=subject, body=body, customer=customer, invoice=invoice,
        dunning_action=action, reply_to=[entity_email] if entity_email else None, now=now,
    )
    if message.status == EmailMessage.Status.FAILED:
        return S.FAILED, {"email": message.pk, "to": to, "error": message.error}
    return S.DONE, {"email": message.pk, "to": to}


# --- suspension ---------------------------------------------------------------------------------------------


def _suspend(action: DunningAction, invoice: Invoice, customer: Customer, step: DunningStep, *, superseded: bool,
             today: date, now: datetime, actor: Actor) -> tuple[str, dict[str, Any]]:
    """Pause the customer's active and trialing subscriptions (entitlements follow: a paused subscription
    grants nothing) and record which ones, so that settling resumes those and only those."""
    suspension = DunningSuspension.objects.select_for_update().filter(customer=customer,
                                                                      resumed_at__isnull=True).first()
    if suspension is not None and suspension.pk != action.details.get("suspension"):
        return S.SKIPPED, {"reason": f"Already suspended since {suspension.suspended_at:%Y-%m-%d} "
                                     f"(invoice {suspension.invoice}).", "suspension": suspension.pk}
    if suspension is None:
        subscriptions = list(
            Subscription.objects.filter(
                customer=customer, status__in=(Subscription.Status.ACTIVE, Subscription.Status.TRIALING)
            ).order_by("pk")
        )
        for subscription in subscriptions:
            pause_subscription(subscription, actor=actor, now=now)
        suspension = DunningSuspension.objects.create(
            customer=customer, invoice=invoice, suspended_at=now, subscription_ids=[s.pk for s in subscriptions]
        )
    details: dict[str, Any] = {
        "suspension": suspension.pk,
        "subscriptions": list(
            Subscription.objects.filter(pk__in=suspension.subscription_ids).order_by("pk")
            .values_list("external_id", flat=True)
        ),
    }
    if superseded:
        return S.DONE, {**details, "notice": "not sent: a later e-mail step was due at the same time"}
    status, sent = _email(action, invoice, customer, step, today=today, now=now)
    if status == S.SKIPPED:
        return S.DONE, {**details, "notice": sent["reason"]}
    return status, {**details, **sent}


def resume_if_settled(customer: Customer | int, *, actor: Actor, now: datetime) -> DunningSuspension | None:
    """Lift the customer's dunning suspension once it owes nothing overdue: resume the subscriptions dunning
    paused (and only those, if still paused). Runs inside the caller's transaction, after a payment or a
    credit, with the customer's row locked."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    suspension = (
        DunningSuspension.objects.select_for_update()
        .filter(customer_id=customer_id, resumed_at__isnull=True)
        .select_related("customer")
        .first()
    )
    if suspension is None:
        return None
    today = customer_today(suspension.customer, now)
    overdue = Invoice.objects.filter(
        customer_id=customer_id,
        status__in=(Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE),
        amount_due__gt=0,
        due_date__lt=today,
    ).exists()
    if overdue:
        return None
    with transaction.atomic():
        for subscription in Subscription.objects.filter(
            pk__in=suspension.subscription_ids, status=Subscription.Status.PAUSED
        ).order_by("pk"):
            resume_subscription(subscription, actor=actor, now=now)
        suspension.resumed_at = now
        suspension.save(update_fields=["resumed_at", "updated_at"])
    return suspension


def resume_settled_customers(*, now: datetime, actor: Actor, customer_ids: Iterable[int] | None = None
                             ) -> list[DunningSuspension]:
    """Lift every suspension whose customer no longer owes anything overdue (a voided invoice, a credit note,
    a debt settled while the run was not watching): the run's last pass."""
    open_ = DunningSuspension.objects.filter(resumed_at__isnull=True)
    if customer_ids is not None:
        open_ = open_.filter(customer_id__in=list(customer_ids))
    resumed = []
    for customer_id in open_.values_list("customer_id", flat=True).order_by("customer_id"):
        with transaction.atomic():
            lock_customer(customer_id)
            suspension = resume_if_settled(customer_id, actor=actor, now=now)
        if suspension is not None:
            resumed.append(suspension)
    return resumed


# --- payment retries ----------------------------------------------------------------------------------------


def _charge(action: DunningAction, *, now: datetime, actor: Actor) -> None:
    """Charge the invoice through its customer's saved payment method, outside any lock (the gateway is a
    network call); the attempt key makes a repeat of this step charge at most once."""
    from invoicing.services.charges import charge_invoice

    try:
        payment = charge_invoice(
            Invoice.objects.get(pk=action.invoice_id), actor=actor, now=now, attempt=f"dunning-{action.step_id}"
        )
    except Exception as exc:  # a gateway or network error: the action says so and can be retried
        logger.warning("Dunning payment retry for invoice %s failed: %s", action.invoice_id, exc)
        status, details = S.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
    else:
        if payment is None:
            status, details = S.SKIPPED, {"reason": "No saved payment method to charge (or nothing left to pay)."}
        else:
            status = S.DONE
            details = {"payment": payment.pk, "payment_status": payment.status, "amount": str(payment.amount)}
            if payment.failure_message:
                details["failure"] = payment.failure_message
    with transaction.atomic():
        locked = DunningAction.objects.select_for_update().get(pk=action.pk)
        _finish(locked, status, details)
    action.status, action.details = status, details


# --- retrying a failed step ---------------------------------------------------------------------------------


def retry_dunning_action(action: DunningAction | int, *, actor: Actor, now: datetime) -> DunningAction:
    """Run a failed step again (the admin's "Retry"): an e-mail is rendered and sent again with today's
    figures, a suspension whose notice failed only sends the notice, a payment retry charges with the same
    attempt key. Refused when the step did not fail or the invoice owes nothing any more."""
    pk = action if isinstance(action, int) else action.pk
    row = DunningAction.objects.select_related("invoice").get(pk=pk)
    with transaction.atomic():
        customer = lock_customer(row.invoice.customer_id)
        invoice = _lock_invoice(row.invoice_id)
        action = DunningAction.objects.select_for_update().select_related("step__policy").get(pk=pk)
        if action.status != S.FAILED:
            raise InvalidTransition(f"This step is {action.status}: only a failed step can be retried.")
        if not _is_dunnable(invoice):
            raise InvalidTransition(f"Invoice {invoice} is {invoice.get_status_display().lower()} and owes "
                                    f"{invoice.amount_due} {invoice.currency}: there is nothing to chase.")
        action.ran_at = now
        if action.step.action != A.RETRY_PAYMENT:
            _perform(action, invoice, customer, action.step, superseded=False, today=customer_today(customer, now),
                     now=now, actor=actor)
            return action
        _finish(action, S.FAILED, {"error": INTERRUPTED})
    _charge(action, now=now, actor=actor)
    return action


# --- state, for the API and the admin -----------------------------------------------------------------------


@dataclass(frozen=True)
class StepState:
    step_id: int
    offset_days: int
    action: str
    scheduled_for: date
    status: str  # done, failed, skipped (recorded), due (runs at the next run), upcoming, not_run (stopped)
    ran_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    action_id: int | None = None


@dataclass(frozen=True)
class DunningState:
    invoice: Invoice
    policy: DunningPolicy | None
    policy_source: str  # "override", "override_none" (never dunned), "entity_default", "none"
    dunned: bool  # the invoice owes money and a policy chases it
    today: date
    steps: list[StepState]
    next_step: StepState | None
    suspension: DunningSuspension | None

    @property
    def suspended(self) -> bool:
        return self.suspension is not None


def dunning_state(invoice: Invoice, *, now: datetime) -> DunningState:
    """Where an invoice stands in dunning: its policy, the steps run (with when and how) and the next one."""
    customer = invoice.customer
    today = customer_today(customer, now)
    override = CustomerDunningOverride.objects.filter(customer=customer).select_related("policy").first()
    policy = policy_for(customer)
    if override is not None:
        source = "override" if override.policy_id else "override_none"
    else:
        source = "entity_default" if policy is not None else "none"
    actions = {a.step_id: a for a in DunningAction.objects.filter(invoice=invoice).select_related("step")}
    dunned = policy is not None and _is_dunnable(invoice)
    steps: list[StepState] = []
    policy_steps = list(policy.steps.order_by("offset_days", "id")) if policy is not None else []
    for step in policy_steps:
        recorded = actions.pop(step.pk, None)
        if recorded is not None:
            steps.append(_recorded(recorded))
            continue
        when = scheduled_for(invoice, step) if invoice.due_date else None
        if when is None:
            continue
        status = ("due" if when <= today else "upcoming") if dunned else "not_run"
        steps.append(StepState(step.pk, step.offset_days, step.action, when, status))
    steps.extend(_recorded(a) for a in actions.values())  # steps of a policy no longer in force
    steps.sort(key=lambda s: (s.scheduled_for, s.offset_days, s.step_id))
    next_step = next((s for s in steps if s.status in ("due", "upcoming")), None)
    suspension = (DunningSuspension.objects.filter(customer=customer, resumed_at__isnull=True)
                  .select_related("invoice").first())
    return DunningState(invoice, policy, source, dunned, today, steps, next_step, suspension)


def _recorded(action: DunningAction) -> StepState:
    return StepState(action.step_id, action.offset_days, action.action, action.scheduled_for, action.status,
                     action.ran_at, action.details, action.pk)
