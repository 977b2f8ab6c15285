"""Closing an accounting period: the pre-close checklist, and the close itself.

The checklist is pure reads (the admin page and the API show it before anyone closes). `close_period` takes
the period's row lock, accrues the unbilled revenue, re-runs the checklist inside the lock and refuses with
every failing blocking check; once closed, the database keeps the period closed and refuses any entry into
it, and a later event dated in it is posted on the next open period's first day (see periods.posting_period).
"""

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from customers.models import BillingEntity
from revrec.models import (
    Account,
    AccountingPeriod,
    JournalEntry,
    JournalLine,
    PerformanceObligation,
    RevenueContract,
)
from revrec.selectors.positions import ACCRUAL_KINDS, ledger_balance, position_totals, positions_as_of
from revrec.selectors.unposted import unposted_documents
from revrec.services.accruals import accrue_unbilled, is_accrued
from revrec.services.periods import month_start, next_month, period_for
from revrec.services.recognition import lock_entity_revenue, recognizable

SUM_TOLERANCE = Decimal("0.000001")
ZERO = Decimal("0")
MAX_ITEMS = 50


@dataclass
class CheckResult:
    """One line of the pre-close checklist. A failing blocking check refuses the close; a non-blocking one
    is a warning shown with it."""

    key: str
    name: str
    passed: bool
    detail: str
    items: list[str] = field(default_factory=list)
    blocking: bool = True

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def capped(items: list[str], total: int | None = None) -> list[str]:
    """At most MAX_ITEMS items, then how many more there are."""
    total = len(items) if total is None else total
    kept = items[:MAX_ITEMS]
    if total > len(kept):
        kept.append(f"and {total - len(kept)} more")
    return kept


def last_day(period: AccountingPeriod) -> date:
    return period.end_date - timedelta(days=1)


# --- the checks ---------------------------------------------------------------------------------------------


def check_period_ended(period: AccountingPeriod, entity: BillingEntity, now: datetime) -> CheckResult:
    today = now.astimezone(entity.timezone).date()
    ended = today >= period.end_date
    detail = (f"The period ended on {last_day(period)} ({entity.timezone})." if ended else
              f"The period ends on {last_day(period)}; it is {today} in {entity.timezone}: a month is closed "
              "only once it is over.")
    return CheckResult("period_ended", "The period is over", ended, detail)


def check_previous_closed(period: AccountingPeriod) -> CheckResult:
    earlier = AccountingPeriod.objects.filter(
        billing_entity_id=period.billing_entity_id, start_date__lt=period.start_date,
        status=AccountingPeriod.Status.OPEN,
    ).order_by("start_date")
    labels = [p.label for p in earlier[: MAX_ITEMS + 1]]
    total = earlier.count() if len(labels) > MAX_ITEMS else len(labels)
    detail = ("Every earlier period is closed." if not labels else
              f"{total} earlier period(s) still open: periods are closed in order.")
    return CheckResult("previous_closed", "Earlier periods closed", not labels, detail, capped(labels, total))


def check_documents_posted(period: AccountingPeriod) -> CheckResult:
    documents = unposted_documents(period.billing_entity_id, period.end_date)
    labels = [f"{d.label} ({d.date})" for d in documents]
    detail = ("Every document dated in or before the period is in the ledger." if not labels else
              f"{len(labels)} document(s) dated before {period.end_date} are not in the ledger: post them first.")
    return CheckResult("documents_posted", "Every document posted", not labels, detail, capped(labels))


def check_recognition_complete(period: AccountingPeriod) -> CheckResult:
    through = last_day(period)
    pending = recognizable(through, period.billing_entity_id).select_related("revenue_contract").order_by("pk")
    rows = list(pending[: MAX_ITEMS + 1])
    total = pending.count() if len(rows) > MAX_ITEMS else len(rows)
    labels = [
        f"{o.revenue_contract.reference}: {o.description} (recognised through {o.recognized_through or 'never'})"
        for o in rows
    ]
    detail = (f"Revenue is recognised through {through}." if not rows else
              f"{total} obligation(s) have revenue due through {through} not yet recognised: run recognition "
              f"through {through}.")
    return CheckResult("recognition_complete", "Recognition run through the period end", not rows, detail,
                       capped(labels, total))


def check_contracts_allocated(period: AccountingPeriod) -> CheckResult:
    """Every contract's transaction price is fully allocated: the allocated prices of its live obligations,
    plus what cancelled obligations recognised before they were cancelled, add up to it."""
    cancelled = PerformanceObligation.Status.CANCELLED
    contracts = (
        RevenueContract.objects.filter(billing_entity_id=period.billing_entity_id)
        .annotate(
            live=Coalesce(Sum("obligations__allocated_price", filter=~Q(obligations__status=cancelled)), ZERO),
            kept=Coalesce(Sum("obligations__recognized_amount", filter=Q(obligations__status=cancelled)), ZERO),
        )
        .annotate(off=F("transaction_price") - F("live") - F("kept"))
        # Within a hundredth of the smallest stored unit: SQLite sums decimals as binary floats.
        .filter(Q(off__gt=SUM_TOLERANCE) | Q(off__lt=-SUM_TOLERANCE))
        .order_by("pk")
    )
    wrong = list(contracts[: MAX_ITEMS + 1])
    total = contracts.count() if len(wrong) > MAX_ITEMS else len(wrong)
    labels = [f"{c.reference}: transaction price {c.transaction_price}, allocated {c.live + c.kept:.4f} {c.currency}"
              for c in wrong]
    detail = ("Every contract's transaction price is allocated to its obligations." if not wrong else
              f"{total} contract(s) whose obligations do not add up to the transaction price.")
    return CheckResult("contracts_allocated", "Contracts fully allocated", not wrong, detail, capped(labels, total))


def check_awaiting_delivery(period: AccountingPeriod) -> CheckResult:
    """A warning: one-time deliverables billed but not delivered by the period end stay deferred."""
    waiting = (
        PerformanceObligation.objects.filter(
            revenue_contract__billing_entity_id=period.billing_entity_id,
            status=PerformanceObligation.Status.AWAITING_DELIVERY,
            billed_on__lt=period.end_date,
        )
        .select_related("revenue_contract")
        .order_by("billed_on", "pk")
    )
    rows = list(waiting[: MAX_ITEMS + 1])
    total = waiting.count() if len(rows) > MAX_ITEMS else len(rows)
    labels = [f"{o.revenue_contract.reference}: {o.description}, billed {o.billed_on}, {o.allocated_price}"
              for o in rows]
    detail = ("No obligation awaits delivery." if not rows else
              f"{total} obligation(s) billed and awaiting delivery: their revenue stays deferred until an operator "
              "records the delivery.")
    return CheckResult("awaiting_delivery", "Deliverables awaiting delivery", not rows, detail,
                       capped(labels, total), blocking=False)


def check_ledger_balanced(period: AccountingPeriod) -> CheckResult:
    totals = (
        JournalLine.objects.filter(entry__period=period)
        .values("entry__currency")
        .annotate(debits=Coalesce(Sum("debit"), ZERO), credits=Coalesce(Sum("credit"), ZERO))
        .order_by("entry__currency")
    )
    off = [f"{t['entry__currency']}: debits {t['debits']}, credits {t['credits']}" for t in totals
           if abs(t["debits"] - t["credits"]) > SUM_TOLERANCE]
    detail = "Debits equal credits in every currency." if not off else "The period's entries do not balance."
    return CheckResult("ledger_balanced", "The ledger balances", not off, detail, off)


def check_rollforward(period: AccountingPeriod) -> CheckResult:
    """Deferred revenue and contract asset in the ledger at the period end (accruals left out: the revenue
    contracts never carry them) equal the revenue contracts' positions rebuilt for that day, per currency."""
    entity_id = period.billing_entity_id
    through = last_day(period)
    currencies = set(RevenueContract.objects.filter(billing_entity_id=entity_id).values_list("currency", flat=True))
    currencies |= set(JournalEntry.objects.filter(billing_entity_id=entity_id, entry_date__lte=through)
                      .values_list("currency", flat=True).distinct())
    off = []
    for currency in sorted(str(c) for c in currencies):
        totals = position_totals(positions_as_of(entity_id, currency, through))
        for role, name, subledger in ((Account.Role.DEFERRED_REVENUE, "deferred revenue", totals.deferred),
                                      (Account.Role.CONTRACT_ASSET, "contract asset", totals.contract_asset)):
            ledger = ledger_balance(entity_id, currency, role, through, exclude_kinds=ACCRUAL_KINDS)
            if ledger != subledger:
                off.append(f"{name} {currency}: ledger {ledger}, contracts {subledger}")
    detail = (f"The ledger's deferred revenue and contract asset equal the revenue contracts' at {through}."
              if not off else f"The ledger and the revenue contracts differ at {through}.")
    return CheckResult("rollforward_reconciles", "Deferred revenue reconciles", not off, detail, off)


def check_accrued(period: AccountingPeriod) -> CheckResult:
    done = is_accrued(period)
    detail = ("Unbilled revenue (usage and fees in arrears delivered, not yet invoiced) is accrued." if done else
              "The unbilled revenue accrual has not run: closing the period posts it.")
    return CheckResult("unbilled_accrued", "Unbilled revenue accrued", done, detail, blocking=False)


def close_checklist(period: AccountingPeriod, *, now: datetime) -> list[CheckResult]:
    """Every pre-close check of the period, blocking or not. Reads only."""
    entity = period.billing_entity
    return [
        check_period_ended(period, entity, now),
        check_previous_closed(period),
        check_documents_posted(period),
        check_recognition_complete(period),
        check_contracts_allocated(period),
        check_awaiting_delivery(period),
        check_ledger_balanced(period),
        check_rollforward(period),
        check_accrued(period),
    ]


def blocking_failures(checks: list[CheckResult]) -> list[CheckResult]:
    return [c for c in checks if c.blocking and not c.passed]


def refusal_message(period: AccountingPeriod, failures: list[CheckResult]) -> str:
    reasons = "; ".join(f"{c.name}: {c.detail}" + (f" ({', '.join(c.items[:5])})" if c.items else "")
                        for c in failures)
    return f"Period {period.label} cannot be closed. {reasons}"


# --- the close ----------------------------------------------------------------------------------------------


def close_period(period: AccountingPeriod, *, actor: Actor, now: datetime, accrue: bool = True) -> AccountingPeriod:
    """Close the period once every blocking check passes (there is no force). With `accrue`, the unbilled
    revenue accrual is posted first (in the same transaction: a refused close leaves nothing behind). The
    next month's period is opened so posting continues. Permission checks are the callers'."""
    with transaction.atomic():
        # Recognition runs, credit notes and modifications of the entity wait for the close, and the close for
        # them; the period row lock queues concurrent closes (posting triggers hold it FOR SHARE).
        lock_entity_revenue(period.billing_entity_id)
        locked = (AccountingPeriod.objects.select_for_update(of=("self",)).select_related("billing_entity")
                  .get(pk=period.pk))
        if not locked.is_open:
            raise InvalidTransition(f"Period {locked.label} is already closed.")
        checks = close_checklist(locked, now=now)
        failures = blocking_failures(checks)
        if failures:
            raise BillingError(refusal_message(locked, failures), field="period")
        if accrue and not is_accrued(locked):
            accrue_unbilled(locked.billing_entity, locked, actor=actor, now=now)
            checks = close_checklist(locked, now=now)
            failures = blocking_failures(checks)
            if failures:
                raise BillingError(refusal_message(locked, failures), field="period")
        period_for(locked.billing_entity_id, locked.end_date)
        locked.status = AccountingPeriod.Status.CLOSED
        locked.closed_at = now
        locked.closed_by = actor.label
        locked.close_checklist = [c.as_json() for c in checks]
        locked.save(update_fields=["status", "closed_at", "closed_by", "close_checklist"])
    return locked


def ensure_open_periods(entity: BillingEntity, through: date) -> list[AccountingPeriod]:
    """Every month period of the entity from its first (or the month of `through`) to `through`'s, opened
    when missing (safe to repeat and to run concurrently)."""
    first = (
        AccountingPeriod.objects.filter(billing_entity=entity).order_by("start_date")
        .values_list("start_date", flat=True).first()
    )
    start = month_start(min(first, through) if first else through)
    periods = []
    while start <= through:
        periods.append(period_for(entity, start))
        start = next_month(start)
    return periods
