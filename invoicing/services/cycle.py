"""The cycle close: every subscription whose period has ended in its customer's timezone is invoiced, once.

`start_cycle_close` finds the customers with something due "as of" a moment, records a CycleRun and fans out
one task per customer (on commit). `close_customer` rates a customer under its row lock and stores one draft
invoice per currency together with the billed periods it settles; the unique constraint on (subscription,
period, timing) makes a second worker, a retry or a concurrent manual close fail instead of billing twice.
A customer's failure is recorded on the run and does not stop the others.
"""

from __future__ import annotations

import logging
import traceback
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.models import Subscription, SubscriptionChange
from contracts.periods import period_containing
from contracts.selectors import customer_today, period_for_day
from contracts.services.subscriptions import apply_due_changes_for
from customers.models import Customer
from invoicing.models import BilledPeriod, CycleRun, CycleRunCustomer, Invoice, PendingCharge
from invoicing.rating import BILLABLE_STATUSES, CatalogCache, LineDraft, Rater, Rating, billed_subscriptions
from invoicing.services.documents import finalize_invoice, record_event, release_for_refresh, save_draft
from invoicing.services.pricing import PricedInvoice, price_invoice, pricing_inputs

logger = logging.getLogger(__name__)
ADVANCE = BilledPeriod.Timing.ADVANCE
ARREARS = BilledPeriod.Timing.ARREARS


# --- who is due -----------------------------------------------------------------------------------------------


def due_customer_ids(*, now: datetime, customer_ids: list[int] | None = None) -> list[int]:
    """The bill-to customers with a subscription period to invoice (or a one-off charge due) as of `now`.

    Cheap enough for every subscription: two queries and period arithmetic in Python. A customer found due
    that has nothing left to bill (another close got there first) closes to nothing.
    """
    horizon = (now + timedelta(hours=14)).date()  # no timezone is further ahead of UTC
    subs = (
        Subscription.objects.filter(status__in=BILLABLE_STATUSES, start_date__lte=horizon)
        .select_related("customer", "plan_version__plan")
        .only(
            "pk",
            "status",
            "start_date",
            "end_date",
            "billing_anchor",
            "bill_cycle_day",
            "trial_end_date",
            "customer__id",
            "customer__timezone",
            "customer__parent_id",
            "customer__invoice_to_parent",
            "plan_version__plan__interval",
            "plan_version__base_fee",
            "plan_version__base_fee_currency",
            "plan_version__base_fee_timing",
        )
    )
    if customer_ids is not None:
        subs = subs.filter(Q(customer_id__in=customer_ids) | Q(customer__parent_id__in=customer_ids))
    last: dict[tuple[int, str], date] = {
        (row["subscription_id"], row["timing"]): row["end"]
        for row in BilledPeriod.objects.filter(released=False)
        .values("subscription_id", "timing")
        .annotate(end=Max("period_end"))
    }
    due: set[int] = set()
    for sub in subs.iterator(chunk_size=5000):
        customer = sub.customer
        bill_to = customer.parent_id if customer.invoice_to_parent and customer.parent_id else customer.pk
        if bill_to in due:
            continue
        today = now.astimezone(customer.timezone).date()
        if sub.start_date > today:
            continue
        interval = sub.plan_version.plan.interval
        arrears_from = last.get((sub.pk, ARREARS), sub.start_date)
        advance_from = last.get((sub.pk, ADVANCE), sub.start_date)
        if sub.end_date is not None and arrears_from >= sub.end_date:
            if advance_from > arrears_from:
                due.add(bill_to)  # a period billed in advance beyond the end: its fee is to be credited
            continue
        try:
            if arrears_from < (sub.end_date or date.max):
                period = period_containing(
                    arrears_from,
                    interval=interval,
                    anchor=sub.billing_anchor,
                    start_date=sub.start_date,
                    bill_cycle_day=sub.bill_cycle_day,
                    end_date=sub.end_date,
                )
                if period.end <= today:
                    due.add(bill_to)
                    continue
            if advance_from <= today and advance_from < (sub.end_date or date.max):
                due.add(bill_to)  # a period has started whose fees in advance are not billed yet
        except ValueError:
            logger.warning("Subscription %s has no billing period on %s", sub.pk, arrears_from)
    pending = PendingCharge.objects.filter(invoice__isnull=True, bill_on__lte=horizon)
    if customer_ids is not None:
        pending = pending.filter(customer_id__in=customer_ids)
    for customer_id, parent_id, to_parent in pending.values_list(
        "customer_id", "customer__parent_id", "customer__invoice_to_parent"
    ):
        due.add(parent_id if to_parent and parent_id else customer_id)
    return sorted(due)


# --- one customer ---------------------------------------------------------------------------------------------


def _group_by_currency(rating: Rating) -> dict[str, tuple[list[LineDraft], list, list[int]]]:
    currencies: dict[str, tuple[list[LineDraft], list, list[int]]] = defaultdict(lambda: ([], [], []))
    for line in rating.lines:
        currencies[line.currency][0].append(line)
        if line.pending_charge_id:
            currencies[line.currency][2].append(line.pending_charge_id)
    return currencies


def close_customer(
    customer: Customer | int,
    *,
    now: datetime,
    actor: Actor,
    run: CycleRun | None = None,
    catalog: CatalogCache | None = None,
    refresh: Invoice | None = None,
) -> list[Invoice]:
    """Invoice everything due for one bill-to customer as of `now`. Idempotent: a second call finds every
    period claimed and creates nothing. Drafts of an entity without a grace period are finalized at once."""
    catalog = catalog or CatalogCache()
    created: list[Invoice] = []
    pk = customer if isinstance(customer, int) else customer.pk
    # A child invoiced to its parent is never invoiced itself: a close started from it (a manual close, a
    # retry) closes the parent, whose invoice carries the child's charges.
    parent_id, to_parent = Customer.objects.filter(pk=pk).values_list("parent_id", "invoice_to_parent").get()
    if to_parent and parent_id:
        pk = parent_id
    with transaction.atomic():
        # The customer row lock queues concurrent closes of one customer; the claims' unique constraint is the
        # guarantee if anything bypasses it.
        customer = Customer.objects.select_for_update(of=("self",)).select_related("billing_entity").get(pk=pk)
        manual = []
        if refresh is not None:
            manual = release_for_refresh(refresh, now, actor)
        subscriptions = billed_subscriptions(customer)
        if any(s.status != Subscription.Status.CANCELED for s in subscriptions):
            changed = False
            scheduled = set(
                SubscriptionChange.objects.filter(
                    subscription__in=subscriptions,
                    status=SubscriptionChange.Status.SCHEDULED,
                ).values_list("subscription_id", flat=True)
            )
            for sub in subscriptions:
                if sub.pk in scheduled:
                    changed |= apply_due_changes_for(sub, now=now, actor=actor) > 0
            if changed:
                subscriptions = billed_subscriptions(customer)
        today = customer_today(customer, now)
        rating = Rater(customer, today, catalog).rate(subscriptions)
        by_currency = _group_by_currency(rating)
        plan_currency = {s.pk: s.plan_version.plan.currency for s in subscriptions}
        claims_by_currency: dict[str, list] = defaultdict(list)
        for claim in rating.claims:
            claims_by_currency[plan_currency[claim.subscription_id]].append(claim)
        currencies = sorted(set(by_currency) | set(claims_by_currency))
        if refresh is not None and refresh.currency not in currencies:
            currencies.append(refresh.currency)
        for currency in currencies:
            drafts, _, pending_ids = by_currency.get(currency, ([], [], []))
            claims = claims_by_currency.get(currency, [])
            reuse = refresh if refresh is not None and refresh.currency == currency else None
            if reuse is not None:
                drafts = drafts + _manual_drafts(manual, currency)
            if not drafts and reuse is None:
                # Nothing to bill (a trial without usage): the periods are settled without an invoice.
                BilledPeriod.objects.bulk_create(
                    [
                        BilledPeriod(
                            subscription_id=c.subscription_id,
                            period_start=c.period_start,
                            period_end=c.period_end,
                            timing=c.timing,
                        )
                        for c in claims
                    ]
                )
                continue
            invoice = save_draft(
                customer,
                drafts,
                currency=currency,
                now=now,
                actor=actor,
                claims=claims,
                pending_charge_ids=pending_ids,
                cycle_run_id=run.pk if run else None,
                invoice=reuse,
            )
            record_event(
                invoice,
                "refreshed" if reuse else "created",
                actor,
                now,
                lines=len(drafts),
                total=str(invoice.total),
                as_of=now.isoformat(),
            )
            created.append(invoice)
        if customer.billing_entity.invoice_grace_days == 0:
            created = [
                finalize_invoice(inv, actor=actor, now=now) if inv.status == Invoice.Status.DRAFT else inv
                for inv in created
            ]
    return created


def _manual_drafts(lines: list, currency: str) -> list[LineDraft]:
    return [
        LineDraft(
            kind=line.kind,
            description=line.description,
            customer_id=line.customer_id,
            currency=currency,
            amount=line.amount,
            quantity=line.quantity,
            unit_price=line.unit_price,
            product_id=line.product_id,
            tax_code=line.product.tax_code if line.product_id else "",
            period_start=line.period_start,
            period_end=line.period_end,
            explanation=line.explanation,
        )
        for line in lines
    ]


def refresh_draft(invoice: Invoice, *, actor: Actor, now: datetime) -> Invoice:
    """Recompute a cycle draft as of `now` (late events, changed prices), keeping the lines a person added."""
    if invoice.status != Invoice.Status.DRAFT:
        raise InvalidTransition(f"Cannot refresh invoice {invoice}: it is {invoice.status}, not a draft.")
    if invoice.kind != Invoice.Kind.SUBSCRIPTION:
        raise BillingError(f"Invoice {invoice} is not a cycle invoice; edit its lines instead.")
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status != Invoice.Status.DRAFT:
            raise InvalidTransition(f"Cannot refresh invoice {invoice}: it is {locked.status}, not a draft.")
        close_customer(locked.customer_id, now=now, actor=actor, refresh=locked)
    return Invoice.objects.get(pk=invoice.pk)


# --- runs -----------------------------------------------------------------------------------------------------


def start_cycle_close(
    *, now: datetime, actor: Actor, customer_ids: list[int] | None = None, enqueue: bool = True
) -> CycleRun:
    """Record a run over every due customer and enqueue one close task per customer when the run commits."""
    from invoicing.tasks import close_customer_task

    due = due_customer_ids(now=now, customer_ids=customer_ids)
    with transaction.atomic():
        run = CycleRun.objects.create(as_of=now, triggered_by=actor.label, total_customers=len(due))
        CycleRunCustomer.objects.bulk_create([CycleRunCustomer(run=run, customer_id=pk) for pk in due], batch_size=5000)
        if not due:
            CycleRun.objects.filter(pk=run.pk).update(status=CycleRun.Status.COMPLETED, finished_at=timezone.now())
        if enqueue:
            run_id = run.pk

            def fan_out() -> None:
                for customer_id in due:
                    close_customer_task.delay(run_id, customer_id)

            transaction.on_commit(fan_out)
    run.refresh_from_db()
    return run


# One catalog per run and worker process, as run_cycle_close_inline shares one over its run: the plan versions,
# charges and fixed charges are then read once per process instead of once per customer.
_RUN_CATALOGS: dict[int, CatalogCache] = {}


def _run_catalog(run_id: int) -> CatalogCache:
    if run_id not in _RUN_CATALOGS:
        _RUN_CATALOGS.clear()  # a worker serves one run after another: keep only the current one
        _RUN_CATALOGS[run_id] = CatalogCache()
    return _RUN_CATALOGS[run_id]


def run_customer_close(run_id: int, customer_id: int, *, actor: Actor | None = None) -> str:
    """The body of one fan-out task: close the customer as of the run's moment and record the outcome once."""
    actor = actor or Actor.system("cycle_close")
    run = CycleRun.objects.get(pk=run_id)
    entry = CycleRunCustomer.objects.filter(run_id=run_id, customer_id=customer_id).first()
    if entry is None or entry.status != CycleRunCustomer.Status.PENDING:
        return "already done"
    try:
        invoices = close_customer(customer_id, now=run.as_of, actor=actor, run=run, catalog=_run_catalog(run_id))
    except (BillingError, IntegrityError, ValueError, Customer.DoesNotExist) as exc:
        logger.exception("Cycle close of customer %s in run %s failed", customer_id, run_id)
        detail = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        _finish_entry(run_id, customer_id, failed=True, error=f"{detail}\n\n{traceback.format_exc(limit=5)}")
        return "failed"
    _finish_entry(run_id, customer_id, failed=False, invoices=len(invoices))
    return f"{len(invoices)} invoice(s)"


def _finish_entry(run_id: int, customer_id: int, *, failed: bool, invoices: int = 0, error: str = "") -> None:
    with transaction.atomic():
        updated = CycleRunCustomer.objects.filter(
            run_id=run_id, customer_id=customer_id, status=CycleRunCustomer.Status.PENDING
        ).update(
            status=CycleRunCustomer.Status.FAILED if failed else CycleRunCustomer.Status.DONE,
            invoices_created=invoices,
            error=error[:20_000],
            finished_at=timezone.now(),
        )
        if not updated:
            return  # a retry of a task that already recorded its outcome
        CycleRun.objects.filter(pk=run_id).update(
            processed_customers=F("processed_customers") + 1,
            failed_customers=F("failed_customers") + (1 if failed else 0),
            invoices_created=F("invoices_created") + invoices,
        )
        CycleRun.objects.filter(
            pk=run_id, processed_customers=F("total_customers"), status=CycleRun.Status.RUNNING
        ).update(
            status=CycleRun.Status.COMPLETED_WITH_ERRORS
            if CycleRunCustomer.objects.filter(run_id=run_id, status=CycleRunCustomer.Status.FAILED).exists()
            else CycleRun.Status.COMPLETED,
            finished_at=timezone.now(),
        )


def run_cycle_close_inline(*, now: datetime, actor: Actor, customer_ids: list[int] | None = None) -> CycleRun:
    """A whole close in this process (the management command's --inline, tests and demos)."""
    run = start_cycle_close(now=now, actor=actor, customer_ids=customer_ids, enqueue=False)
    catalog = CatalogCache()
    for customer_id in CycleRunCustomer.objects.filter(run=run).values_list("customer_id", flat=True):
        try:
            invoices = close_customer(customer_id, now=now, actor=actor, run=run, catalog=catalog)
        except (BillingError, IntegrityError, ValueError) as exc:
            logger.exception("Cycle close of customer %s failed", customer_id)
            _finish_entry(
                run.pk, customer_id, failed=True, error=getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            )
            continue
        _finish_entry(run.pk, customer_id, failed=False, invoices=len(invoices))
    run.refresh_from_db()
    return run


# --- preview --------------------------------------------------------------------------------------------------


@dataclass
class Preview:
    customer: Customer
    as_of_day: date
    invoices: list[PricedInvoice]


def preview_customer(customer: Customer, *, now: datetime, subscription: Subscription | None = None) -> Preview:
    """The upcoming invoice: what the close at the end of the current period would bill, with the usage
    received so far, through the same rating and pricing code. Writes nothing."""
    bill_to = customer.invoiced_customer
    subscriptions = billed_subscriptions(bill_to)
    if subscription is not None:
        subscriptions = [s for s in subscriptions if s.pk == subscription.pk]
    today = customer_today(bill_to, now)
    # The day the next period closes: the earliest end of a period in progress.
    ends = [p.end for s in subscriptions if (p := period_for_day(s, today)) is not None]
    as_of_day = min(ends) if ends else today
    rating = Rater(bill_to, as_of_day, CatalogCache(), late_usage=True).rate(subscriptions)
    invoices = []
    for currency, (drafts, _, _) in sorted(_group_by_currency(rating).items()):
        inputs = pricing_inputs(bill_to, currency, on=as_of_day)
        invoices.append(price_invoice(drafts, inputs, currency=currency, on=as_of_day))
    return Preview(customer=bill_to, as_of_day=as_of_day, invoices=invoices)
