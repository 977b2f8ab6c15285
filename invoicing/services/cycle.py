"""The cycle close: every subscription whose period has ended in its customer's timezone is invoiced, once.

`start_cycle_close` finds the customers with something due "as of" a moment, records a CycleRun and fans the
customers out to the workers (on commit), each closed in its own transaction. `close_customer` rates a
customer under its row lock and stores one draft invoice per currency together with the billed periods it
settles; the unique constraint on (subscription, period, timing) makes a second worker, a retry or a
concurrent manual close fail instead of billing twice. A customer's failure is recorded on the run and does
not stop the others.
"""

from __future__ import annotations

import logging
import traceback
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.models import Subscription
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
    with transaction.atomic():
        # The customer row lock queues concurrent closes of one customer; the claims' unique constraint is the
        # guarantee if anything bypasses it.
        customer = Customer.objects.select_for_update(of=("self",)).select_related("billing_entity").get(pk=pk)
        if customer.invoice_to_parent and customer.parent_id:
            # A child invoiced to its parent is never invoiced itself: a close started from it (a manual close,
            # a retry) closes the parent, whose invoice carries the child's charges.
            customer = (
                Customer.objects.select_for_update(of=("self",))
                .select_related("billing_entity")
                .get(pk=customer.parent_id)
            )
        if connection.vendor == "postgresql" and customer.billing_entity.invoice_grace_days > 0:
            # Only drafts come out of this transaction: should the server crash before its commit reaches disk,
            # the drafts and their claims vanish together and the next close makes them again. Nothing numbered
            # depends on it (finalization commits synchronously), so the close need not wait for the flush.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        manual = []
        if refresh is not None:
            manual = release_for_refresh(refresh, now, actor)
        today = customer_today(customer, now)
        subscriptions = billed_subscriptions(customer, changes_due_by=today, catalog=catalog)
        changed = False
        for sub in subscriptions:
            if sub.has_due_changes:
                changed |= apply_due_changes_for(sub, now=now, actor=actor) > 0
        if changed:
            subscriptions = billed_subscriptions(customer, catalog=catalog)
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
                hints=catalog.hints(),
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
            hints = catalog.hints()
            has_wallet = None if hints is None else customer.pk in hints.wallet_customers
            created = [
                finalize_invoice(inv, actor=actor, now=now, locked=True, has_wallet=has_wallet)
                if inv.status == Invoice.Status.DRAFT
                else inv
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
    """Record a run over every due customer and, when the run commits, fan the customers out to the workers.

    Each customer is closed in its own transaction and recorded on its own, so a failure or a retry concerns one
    customer; the messages carry `settings.ACCRUAL_CYCLE_CLOSE_BATCH` customers each, because publishing a
    message costs about as much as closing a customer (see bench/cycle_close).
    """
    from invoicing.tasks import close_customers_task

    due = due_customer_ids(now=now, customer_ids=customer_ids)
    with transaction.atomic():
        run = CycleRun.objects.create(as_of=now, triggered_by=actor.label, total_customers=len(due))
        CycleRunCustomer.objects.bulk_create([CycleRunCustomer(run=run, customer_id=pk) for pk in due], batch_size=5000)
        if not due:
            CycleRun.objects.filter(pk=run.pk).update(status=CycleRun.Status.COMPLETED, finished_at=timezone.now())
        if enqueue and due:
            run_id = run.pk
            size = max(1, int(getattr(settings, "ACCRUAL_CYCLE_CLOSE_BATCH", 20)))

            queue = getattr(settings, "ACCRUAL_CYCLE_CLOSE_QUEUE", None) or None

            def fan_out() -> None:
                with close_customers_task.app.producer_or_acquire() as producer:
                    for first in range(0, len(due), size):
                        close_customers_task.apply_async(
                            (run_id, due[first : first + size]), producer=producer, queue=queue
                        )

            transaction.on_commit(fan_out)
    run.refresh_from_db()
    return run


# One catalog per run and worker process, as run_cycle_close_inline shares one over its run: the plan versions,
# charges and fixed charges are then read once per process instead of once per customer.
_RUN_CATALOGS: dict[int, CatalogCache] = {}


def _run_catalog(run_id: int) -> CatalogCache:
    if run_id not in _RUN_CATALOGS:
        _RUN_CATALOGS.clear()  # a worker serves one run after another: keep only the current one
        _RUN_CATALOGS[run_id] = CatalogCache(for_run=True)
    return _RUN_CATALOGS[run_id]


def run_customer_close(
    run_id: int, customer_id: int, *, actor: Actor | None = None, run: CycleRun | None = None,
    catalog: CatalogCache | None = None, complete: bool = True,
) -> str:
    """Close one customer of a run as of the run's moment. The customer's invoices and its entry's "done" are
    committed together, so a retried task finds the entry done and does nothing; a failure is recorded on the
    entry in a transaction of its own."""
    actor = actor or Actor.system("cycle_close")
    run = run or CycleRun.objects.get(pk=run_id)
    catalog = catalog or _run_catalog(run_id)
    entries = CycleRunCustomer.objects.filter(run_id=run_id, customer_id=customer_id)
    outcome = ""
    try:
        with transaction.atomic():
            if not entries.select_for_update().filter(status=CycleRunCustomer.Status.PENDING).exists():
                outcome = "already done"
            else:
                invoices = close_customer(customer_id, now=run.as_of, actor=actor, run=run, catalog=catalog)
                entries.update(status=CycleRunCustomer.Status.DONE, invoices_created=len(invoices),
                               finished_at=timezone.now())
                outcome = f"{len(invoices)} invoice(s)"
    except Exception as exc:
        logger.exception("Cycle close of customer %s in run %s failed", customer_id, run_id)
        detail = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        entries.filter(status=CycleRunCustomer.Status.PENDING).update(
            status=CycleRunCustomer.Status.FAILED, error=f"{detail}\n\n{traceback.format_exc(limit=5)}"[:20_000],
            finished_at=timezone.now(),
        )
        outcome = "failed"
    if complete:
        complete_run_if_done(run_id)
    return outcome


def run_counts(run: CycleRun) -> dict[str, int]:
    """Live progress of a run, counted from its entries (the run row is written once, when the run ends, so
    concurrent workers never queue on it)."""
    if run.status != CycleRun.Status.RUNNING:
        return {"total": run.total_customers, "processed": run.processed_customers,
                "failed": run.failed_customers, "invoices": run.invoices_created}
    counts = CycleRunCustomer.objects.filter(run=run).aggregate(
        processed=Count("pk", filter=~Q(status=CycleRunCustomer.Status.PENDING)),
        failed=Count("pk", filter=Q(status=CycleRunCustomer.Status.FAILED)),
        invoices=Sum("invoices_created"),
    )
    return {"total": run.total_customers, "processed": counts["processed"], "failed": counts["failed"],
            "invoices": counts["invoices"] or 0}


def complete_run_if_done(run_id: int) -> bool:
    """Mark the run finished, with its final counts, once no customer is pending (safe to call repeatedly)."""
    if CycleRunCustomer.objects.filter(run_id=run_id, status=CycleRunCustomer.Status.PENDING).exists():
        return False
    run = CycleRun.objects.get(pk=run_id)
    counts = run_counts(run)
    return bool(CycleRun.objects.filter(pk=run_id, status=CycleRun.Status.RUNNING).update(
        status=CycleRun.Status.COMPLETED_WITH_ERRORS if counts["failed"] else CycleRun.Status.COMPLETED,
        processed_customers=counts["processed"], failed_customers=counts["failed"],
        invoices_created=counts["invoices"], finished_at=timezone.now(),
    ))


def run_cycle_close_inline(*, now: datetime, actor: Actor, customer_ids: list[int] | None = None) -> CycleRun:
    """A whole close in this process (the management command's --inline, tests and demos)."""
    run = start_cycle_close(now=now, actor=actor, customer_ids=customer_ids, enqueue=False)
    catalog = CatalogCache(for_run=True)
    for customer_id in CycleRunCustomer.objects.filter(run=run).values_list("customer_id", flat=True):
        run_customer_close(run.pk, customer_id, actor=actor, run=run, catalog=catalog, complete=False)
    complete_run_if_done(run.pk)
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
