"""The subscription lifecycle: an explicit state machine over services.

Every action locks the subscription row, checks the transition table, writes the new state, keeps the
phase history (plan version and quantity over time, which invoicing prorates) and records a
SubscriptionChange with its actor. Actions that take effect later (a downgrade or a cancellation at
period end, the end of a trial, the end of the term) are stored as scheduled changes, which
`apply_due_changes` applies once their day has come in the customer's timezone; it is safe to run
concurrently and repeatedly.
"""

import logging
import secrets
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.models import Contract, PlanVersion, Subscription, SubscriptionChange, SubscriptionPhase
from contracts.periods import add_months, validate_anchor
from contracts.selectors import customer_today, period_for_day
from contracts.services._common import record_actor
from customers.models import Customer

logger = logging.getLogger(__name__)

S = Subscription.Status
A = SubscriptionChange.Action

LIVE_STATUSES = (S.PENDING, S.TRIALING, S.ACTIVE, S.PAUSED)

# The state machine: which statuses each action may start from.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    A.ACTIVATE: (S.PENDING,),
    A.END_TRIAL: (S.TRIALING, S.PAUSED),
    A.CHANGE_PLAN: (S.PENDING, S.TRIALING, S.ACTIVE, S.PAUSED),
    A.CHANGE_QUANTITY: (S.PENDING, S.TRIALING, S.ACTIVE, S.PAUSED),
    A.PAUSE: (S.TRIALING, S.ACTIVE),
    A.RESUME: (S.PAUSED,),
    A.CANCEL: (S.PENDING, S.TRIALING, S.ACTIVE, S.PAUSED),
    A.RENEW: (S.TRIALING, S.ACTIVE, S.PAUSED),
    A.END: (S.TRIALING, S.ACTIVE, S.PAUSED),
}
# Changes an operator may take back before they apply; the others follow from dates.
REVOCABLE_ACTIONS = (A.CHANGE_PLAN, A.CHANGE_QUANTITY, A.CANCEL)

# Average days per interval, to compare the price of plans with different intervals.
DAYS_PER_INTERVAL = {
    "week": Decimal(7), "month": Decimal("30.4375"), "quarter": Decimal("91.3125"),
    "half_year": Decimal("182.625"), "year": Decimal("365.25"),
}
MAX_ACTIONS_PER_RUN = 10_000


def _check_transition(subscription: Subscription, action: str) -> None:
    allowed = ALLOWED_FROM[action]
    if subscription.status not in allowed:
        raise InvalidTransition(
            f"Cannot {A(action).label.lower()} subscription {subscription.external_id}: it is {subscription.status}; "
            f"allowed only when {' or '.join(allowed)}."
        )


def _lock(subscription: Subscription) -> Subscription:
    return (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("customer", "plan_version__plan", "contract")
        .get(pk=subscription.pk)
    )


def _record(
    subscription: Subscription,
    action: str,
    *,
    actor: Actor,
    now: datetime,
    effective_date: date,
    status: str = SubscriptionChange.Status.APPLIED,
    from_status: str = "",
    **fields: Any,
) -> SubscriptionChange:
    return SubscriptionChange.objects.create(
        subscription=subscription, action=action, status=status, effective_date=effective_date,
        from_status=from_status, actor=actor.user, actor_label=actor.label,
        applied_at=now if status == SubscriptionChange.Status.APPLIED else None, **fields,
    )


def _schedule(subscription: Subscription, action: str, effective_date: date, *, actor: Actor, now: datetime,
              **fields: Any) -> SubscriptionChange:
    """Schedule `action`, replacing a scheduled change of the same kind (at most one is pending)."""
    _revoke_scheduled(subscription, [action], now=now, reason="replaced")
    return _record(subscription, action, actor=actor, now=now, effective_date=effective_date,
                   status=SubscriptionChange.Status.SCHEDULED, **fields)


def _revoke_scheduled(subscription: Subscription, actions: list[str] | None, *, now: datetime, reason: str) -> None:
    pending = subscription.changes.filter(status=SubscriptionChange.Status.SCHEDULED)
    if actions is not None:
        pending = pending.filter(action__in=actions)
    for change in pending:
        change.status = SubscriptionChange.Status.REVOKED
        change.details = {**change.details, "revoked_because": reason, "revoked_at": now.isoformat()}
        change.save(update_fields=["status", "details"])


def _save(subscription: Subscription, actor: Actor) -> None:
    record_actor(subscription, actor)
    subscription.full_clean()
    subscription.save()


def _switch_phase(subscription: Subscription, day: date, plan_version: PlanVersion, quantity: Decimal) -> None:
    """From `day` on, `plan_version` at `quantity` is in force (the day itself at the new terms)."""
    current = (
        subscription.phases.select_for_update()
        .filter(start_date__lte=day)
        .filter(Q(end_date__isnull=True) | Q(end_date__gt=day))
        .first()
    )
    if current is None:
        raise BillingError(f"Subscription {subscription.external_id} is not in force on {day}.")
    if current.start_date == day:
        current.plan_version = plan_version
        current.quantity = quantity
        current.save(update_fields=["plan_version", "quantity"])
        return
    old_end = current.end_date
    current.end_date = day
    current.save(update_fields=["end_date"])
    SubscriptionPhase.objects.create(
        subscription=subscription, plan_version=plan_version, quantity=quantity, start_date=day, end_date=old_end
    )


def _close_phases(subscription: Subscription, end: date) -> None:
    """Nothing is in force from `end` on: phases are cut there and those starting later are dropped."""
    subscription.phases.filter(start_date__gte=end).delete()
    subscription.phases.filter(Q(end_date__isnull=True) | Q(end_date__gt=end)).update(end_date=end)


def _extend_phases(subscription: Subscription, old_end: date, new_end: date) -> None:
    subscription.phases.filter(end_date=old_end).update(end_date=new_end)


def _schedule_term_end(subscription: Subscription, *, actor: Actor, now: datetime) -> None:
    """At the end of its term a subscription renews (auto-renewing contract) or ends."""
    _revoke_scheduled(subscription, [A.END, A.RENEW], now=now, reason="term changed")
    if subscription.end_date is None:
        return
    contract = subscription.contract
    action = A.RENEW if contract is not None and contract.auto_renew else A.END
    _record(subscription, action, actor=actor, now=now, effective_date=subscription.end_date,
            status=SubscriptionChange.Status.SCHEDULED)


def _new_external_id() -> str:
    return f"sub_{secrets.token_hex(8)}"


def create_subscription(
    *,
    customer: Customer,
    plan_version: PlanVersion,
    actor: Actor,
    now: datetime,
    external_id: str | None = None,
    contract: Contract | None = None,
    quantity: Decimal | int | str = Decimal(1),
    start_date: date | None = None,
    billing_anchor: str = Subscription.Anchor.CALENDAR,
    bill_cycle_day: int | None = None,
    trial_days: int | None = None,
    end_date: date | None = None,
    metadata: dict[str, Any] | None = None,
) -> Subscription:
    """Subscribe `customer` to `plan_version` from `start_date` (default: the customer's today).

    A start in the future makes a pending subscription; a start in the past is allowed (backfills) and
    the changes that would have happened since are applied at once.
    """
    # Decide on the stored state, not on what the caller may have read earlier.
    customer = Customer.objects.select_related("billing_entity").get(pk=customer.pk)
    plan_version = PlanVersion.objects.select_related("plan").get(pk=plan_version.pk)
    today = customer_today(customer, now)
    start = start_date or today
    plan = plan_version.plan
    errors: dict[str, list[str]] = {}
    if customer.status != Customer.Status.ACTIVE:
        errors["customer"] = ["The customer is archived."]
    if plan_version.status != PlanVersion.Status.PUBLISHED:
        errors["plan_version"] = [
            f"{plan_version} is {plan_version.status}; only a published version takes subscriptions."
        ]
    if str(plan.currency) != str(customer.currency):
        errors["plan_version"] = [f"The plan is in {plan.currency} but the customer is billed in {customer.currency}."]
    try:
        quantity = Decimal(str(quantity))
    except ArithmeticError:
        errors["quantity"] = ["Must be a number."]
        quantity = Decimal(1)
    if not quantity.is_finite() or quantity <= 0:
        errors["quantity"] = ["Must be greater than zero."]
    try:
        validate_anchor(plan.interval, billing_anchor, bill_cycle_day)
    except ValueError as exc:
        errors["billing_anchor"] = [str(exc)]
    if contract is not None:
        if contract.customer_id != customer.pk:
            errors["contract"] = ["The contract belongs to another customer."]
        elif contract.status not in (Contract.Status.DRAFT, Contract.Status.ACTIVE):
            errors["contract"] = [f"The contract is {contract.status}."]
        elif str(contract.currency) != str(plan.currency):
            errors["contract"] = [f"The contract is in {contract.currency}, the plan in {plan.currency}."]
        else:
            if start < contract.start_date:
                errors["start_date"] = [f"The contract starts on {contract.start_date}."]
            if end_date is None:
                end_date = contract.end_date
            if contract.end_date and (start >= contract.end_date or end_date > contract.end_date):
                errors["end_date"] = [f"The contract's term ends on {contract.end_date}."]
    trial = plan_version.trial_days if trial_days is None else trial_days
    if trial < 0:
        errors["trial_days"] = ["Must be 0 or more."]
    trial_end = start + timedelta(days=trial) if trial > 0 else None
    if end_date is not None and end_date <= start:
        errors["end_date"] = ["Must be after the start date."]
    elif end_date is not None and trial_end is not None and trial_end >= end_date:
        errors["trial_days"] = ["The trial would outlast the subscription."]
    if errors:
        raise ValidationError(errors)

    status = S.PENDING if start > today else (S.TRIALING if trial_end else S.ACTIVE)
    with transaction.atomic():
        subscription = Subscription(
            customer=customer, contract=contract, plan_version=plan_version,
            external_id=external_id or _new_external_id(), quantity=quantity, status=status,
            billing_anchor=billing_anchor, bill_cycle_day=bill_cycle_day, start_date=start,
            trial_end_date=trial_end, end_date=end_date, metadata=metadata or {},
        )
        _save(subscription, actor)
        SubscriptionPhase.objects.create(
            subscription=subscription, plan_version=plan_version, quantity=quantity, start_date=start, end_date=end_date
        )
        _record(subscription, A.CREATE, actor=actor, now=now, effective_date=start, to_status=status,
                to_plan_version=plan_version, to_quantity=quantity)
        scheduled = SubscriptionChange.Status.SCHEDULED
        if status == S.PENDING:
            _record(subscription, A.ACTIVATE, actor=actor, now=now, effective_date=start, status=scheduled)
        if trial_end is not None:
            _record(subscription, A.END_TRIAL, actor=actor, now=now, effective_date=trial_end, status=scheduled)
        _schedule_term_end(subscription, actor=actor, now=now)
        _apply_due_for(subscription, today=today, now=now, actor=actor)
    subscription.refresh_from_db()
    return subscription


def _is_upgrade(old: PlanVersion, old_quantity: Decimal, new: PlanVersion, new_quantity: Decimal) -> bool:
    """Upgrade: the new terms cost at least as much per day (compared on base fee)."""
    def daily(version: PlanVersion, quantity: Decimal) -> Decimal:
        return version.base_fee.amount * quantity / DAYS_PER_INTERVAL[version.plan.interval]

    return daily(new, new_quantity) >= daily(old, old_quantity)


def _resolve_timing(timing: str | None, upgrade: bool) -> str:
    if timing is None:
        return "immediate" if upgrade else "period_end"
    if timing not in ("immediate", "period_end"):
        raise ValidationError({"timing": ["Use 'immediate' or 'period_end'."]})
    return timing


def _period_end(subscription: Subscription, today: date) -> date:
    period = period_for_day(subscription, today)
    if period is None:
        raise BillingError(f"Subscription {subscription.external_id} has no billing period on {today}.")
    return period.end


def change_plan(
    subscription: Subscription, plan_version: PlanVersion, *, actor: Actor, now: datetime, timing: str | None = None
) -> SubscriptionChange:
    """Upgrades apply today (the day itself at the new price), downgrades at period end, unless `timing` says."""
    with transaction.atomic():
        subscription = _lock(subscription)
        _check_transition(subscription, A.CHANGE_PLAN)
        old = subscription.plan_version
        plan_version = PlanVersion.objects.select_related("plan").get(pk=plan_version.pk)
        if plan_version.status != PlanVersion.Status.PUBLISHED:
            raise ValidationError({"plan_version": [f"{plan_version} is {plan_version.status}; publish it first."]})
        if plan_version.pk == old.pk:
            raise ValidationError({"plan_version": ["The subscription is already on this plan version."]})
        if str(plan_version.plan.currency) != str(old.plan.currency):
            raise ValidationError({"plan_version": [f"The new plan must be in {old.plan.currency}."]})
        try:
            validate_anchor(plan_version.plan.interval, subscription.billing_anchor, subscription.bill_cycle_day)
        except ValueError as exc:
            raise ValidationError({"plan_version": [str(exc)]}) from exc
        today = customer_today(subscription.customer, now)
        upgrade = _is_upgrade(old, subscription.quantity, plan_version, subscription.quantity)
        when = "immediate" if subscription.status == S.PENDING else _resolve_timing(timing, upgrade)
        details = {"kind": "upgrade" if upgrade else "downgrade", "timing": when}
        if when == "period_end":
            return _schedule(subscription, A.CHANGE_PLAN, _period_end(subscription, today), actor=actor, now=now,
                             from_plan_version=old, to_plan_version=plan_version, details=details)
        _revoke_scheduled(subscription, [A.CHANGE_PLAN], now=now, reason="superseded by an immediate change")
        effective = max(today, subscription.start_date)
        _switch_phase(subscription, effective, plan_version, subscription.quantity)
        subscription.plan_version = plan_version
        _save(subscription, actor)
        return _record(subscription, A.CHANGE_PLAN, actor=actor, now=now, effective_date=effective,
                       from_status=subscription.status, to_status=subscription.status,
                       from_plan_version=old, to_plan_version=plan_version, details=details)


def change_quantity(
    subscription: Subscription, quantity: Decimal | int | str, *, actor: Actor, now: datetime, timing: str | None = None
) -> SubscriptionChange:
    """More seats apply today; fewer at period end, unless `timing` says."""
    try:
        quantity = Decimal(str(quantity))
    except ArithmeticError:
        raise ValidationError({"quantity": ["Must be a number."]}) from None
    if not quantity.is_finite() or quantity <= 0:
        raise ValidationError({"quantity": ["Must be greater than zero."]})
    if quantity.as_tuple().exponent < -6:  # type: ignore[operator]
        raise ValidationError({"quantity": ["At most 6 decimal places."]})
    with transaction.atomic():
        subscription = _lock(subscription)
        _check_transition(subscription, A.CHANGE_QUANTITY)
        old = subscription.quantity
        if quantity == old:
            raise ValidationError({"quantity": [f"The quantity is already {old}."]})
        today = customer_today(subscription.customer, now)
        when = "immediate" if subscription.status == S.PENDING else _resolve_timing(timing, quantity > old)
        details = {"timing": when}
        if when == "period_end":
            return _schedule(subscription, A.CHANGE_QUANTITY, _period_end(subscription, today), actor=actor,
                             now=now, from_quantity=old, to_quantity=quantity, details=details)
        _revoke_scheduled(subscription, [A.CHANGE_QUANTITY], now=now, reason="superseded by an immediate change")
        effective = max(today, subscription.start_date)
        _switch_phase(subscription, effective, subscription.plan_version, quantity)
        subscription.quantity = quantity
        _save(subscription, actor)
        return _record(subscription, A.CHANGE_QUANTITY, actor=actor, now=now, effective_date=effective,
                       from_status=subscription.status, to_status=subscription.status,
                       from_quantity=old, to_quantity=quantity, details=details)


def pause_subscription(subscription: Subscription, *, actor: Actor, now: datetime) -> SubscriptionChange:
    """Stop service and billing from today until resumed."""
    with transaction.atomic():
        subscription = _lock(subscription)
        _check_transition(subscription, A.PAUSE)
        today = customer_today(subscription.customer, now)
        before = subscription.status
        subscription.status = S.PAUSED
        subscription.paused_on = today
        _save(subscription, actor)
        return _record(subscription, A.PAUSE, actor=actor, now=now, effective_date=today,
                       from_status=before, to_status=S.PAUSED)


def resume_subscription(subscription: Subscription, *, actor: Actor, now: datetime) -> SubscriptionChange:
    with transaction.atomic():
        subscription = _lock(subscription)
        _check_transition(subscription, A.RESUME)
        today = customer_today(subscription.customer, now)
        paused_on = subscription.paused_on
        in_trial = subscription.trial_end_date is not None and today < subscription.trial_end_date
        subscription.status = S.TRIALING if in_trial else S.ACTIVE
        subscription.paused_on = None
        _save(subscription, actor)
        return _record(subscription, A.RESUME, actor=actor, now=now, effective_date=today, from_status=S.PAUSED,
                       to_status=subscription.status,
                       details={"paused_on": paused_on.isoformat() if paused_on else None})


def cancel_subscription(
    subscription: Subscription, *, actor: Actor, now: datetime, at_period_end: bool = False, reason: str = ""
) -> SubscriptionChange:
    """Cancel today (the day itself is no longer served; invoicing credits the unused part) or at period end."""
    with transaction.atomic():
        subscription = _lock(subscription)
        _check_transition(subscription, A.CANCEL)
        today = customer_today(subscription.customer, now)
        details = {"reason": reason, "at_period_end": at_period_end}
        if at_period_end and subscription.status != S.PENDING:
            if subscription.status == S.PAUSED:
                raise InvalidTransition(
                    f"Subscription {subscription.external_id} is paused: cancel it now or resume it first."
                )
            effective = _period_end(subscription, today)
            if subscription.end_date is not None:
                effective = min(effective, subscription.end_date)
            _revoke_scheduled(subscription, [A.END, A.RENEW, A.CHANGE_PLAN, A.CHANGE_QUANTITY], now=now,
                              reason="cancellation scheduled")
            return _schedule(subscription, A.CANCEL, effective, actor=actor, now=now, details=details)
        return _cancel_now(subscription, max(today, subscription.start_date), actor=actor, now=now, details=details)


def _cancel_now(subscription: Subscription, effective: date, *, actor: Actor, now: datetime,
                details: dict[str, Any]) -> SubscriptionChange:
    before = _end_service(subscription, effective, S.CANCELED, actor=actor, now=now)
    return _record(subscription, A.CANCEL, actor=actor, now=now, effective_date=effective, from_status=before,
                   to_status=S.CANCELED, details=details)


def _end_service(subscription: Subscription, effective: date, status: str, *, actor: Actor, now: datetime) -> str:
    """Stop the subscription from `effective` on with a final status; returns the status it had."""
    before = subscription.status
    _revoke_scheduled(subscription, None, now=now, reason=f"subscription {status}")
    _close_phases(subscription, effective)
    subscription.status = status
    subscription.end_date = effective
    if status == S.CANCELED:
        subscription.canceled_at = now
    subscription.paused_on = None
    _save(subscription, actor)
    return before


def renew_subscription(
    subscription: Subscription, *, actor: Actor, now: datetime, new_end_date: date | None = None
) -> SubscriptionChange:
    """Extend a subscription's term: to `new_end_date`, else by its contract's renewal term, else by a year."""
    with transaction.atomic():
        subscription = _lock(subscription)
        _check_transition(subscription, A.RENEW)
        old_end, new_end = _extend_term(subscription, actor=actor, now=now, new_end_date=new_end_date)
        return _record(subscription, A.RENEW, actor=actor, now=now, effective_date=old_end,
                       from_status=subscription.status, to_status=subscription.status,
                       details={"old_end_date": old_end.isoformat(), "new_end_date": new_end.isoformat()})


def _extend_term(subscription: Subscription, *, actor: Actor, now: datetime,
                 new_end_date: date | None) -> tuple[date, date]:
    old_end = subscription.end_date
    if old_end is None:
        raise InvalidTransition(f"Subscription {subscription.external_id} has no end date: there is nothing to renew.")
    contract = subscription.contract
    if new_end_date is None:
        months = contract.renewal_term_months if contract and contract.renewal_term_months else 12
        new_end_date = add_months(old_end, months)
    if new_end_date <= old_end:
        raise ValidationError({"new_end_date": [f"Must be after the current end date, {old_end}."]})
    if contract is not None and contract.end_date and new_end_date > contract.end_date:
        raise ValidationError(
            {"new_end_date": [f"The contract's term ends on {contract.end_date}; renew the contract first."]}
        )
    _extend_phases(subscription, old_end, new_end_date)
    subscription.end_date = new_end_date
    _save(subscription, actor)
    _schedule_term_end(subscription, actor=actor, now=now)
    return old_end, new_end_date


def revoke_scheduled_change(change: SubscriptionChange, *, actor: Actor, now: datetime) -> SubscriptionChange:
    """Take back a scheduled downgrade, quantity decrease or cancellation before it applies."""
    with transaction.atomic():
        subscription = _lock(change.subscription)
        change = SubscriptionChange.objects.select_for_update().get(pk=change.pk)
        if change.status != SubscriptionChange.Status.SCHEDULED:
            raise InvalidTransition(f"This change is already {change.status}.")
        if change.action not in REVOCABLE_ACTIONS:
            raise InvalidTransition(
                f"A scheduled '{change.get_action_display()}' follows from dates and cannot be revoked."
            )
        change.status = SubscriptionChange.Status.REVOKED
        change.details = {**change.details, "revoked_by": actor.label, "revoked_at": now.isoformat()}
        change.save(update_fields=["status", "details"])
        if change.action == A.CANCEL:
            _schedule_term_end(subscription, actor=actor, now=now)
    return change


def _apply_change(subscription: Subscription, change: SubscriptionChange, *, actor: Actor, now: datetime) -> None:
    """Apply one due scheduled change to a locked subscription, or revoke it if it no longer can apply."""
    action, day = change.action, change.effective_date
    before = subscription.status
    if before not in ALLOWED_FROM[action]:
        change.status = SubscriptionChange.Status.REVOKED
        change.details = {**change.details, "revoked_because": f"not applicable to a {before} subscription"}
        change.save(update_fields=["status", "details"])
        return
    # Mark it applied first, so that the revocations the action itself makes leave it alone.
    change.status = SubscriptionChange.Status.APPLIED
    change.applied_at = now
    change.from_status = before
    change.details = {**change.details, "applied_by": actor.label}
    change.save(update_fields=["status", "applied_at", "from_status", "details"])

    contract = subscription.contract
    if action == A.RENEW and contract is not None and contract.auto_renew:
        from contracts.services.contracts import renew_contract_locked

        renew_contract_locked(contract, actor=actor, now=now, triggered_by=change)
        subscription.refresh_from_db()
    elif action in (A.END, A.RENEW):  # a renewal whose contract no longer auto-renews ends instead
        _end_service(subscription, day, S.ENDED, actor=actor, now=now)
    elif action == A.CANCEL:
        _end_service(subscription, day, S.CANCELED, actor=actor, now=now)
    else:
        if action == A.ACTIVATE:
            in_trial = subscription.trial_end_date is not None and day < subscription.trial_end_date
            subscription.status = S.TRIALING if in_trial else S.ACTIVE
        elif action == A.END_TRIAL:
            if subscription.status == S.TRIALING:
                subscription.status = S.ACTIVE
        elif action == A.CHANGE_PLAN:
            _switch_phase(subscription, day, change.to_plan_version, subscription.quantity)
            subscription.plan_version = change.to_plan_version
        elif action == A.CHANGE_QUANTITY:
            _switch_phase(subscription, day, subscription.plan_version, change.to_quantity)
            subscription.quantity = change.to_quantity
        _save(subscription, actor)
    change.to_status = subscription.status
    change.save(update_fields=["to_status"])


def _apply_due_for(subscription: Subscription, *, today: date, now: datetime, actor: Actor) -> int:
    """Apply, in date order, every scheduled change of a locked subscription that is due by `today`."""
    applied = 0
    while True:
        change = (
            subscription.changes.filter(status=SubscriptionChange.Status.SCHEDULED, effective_date__lte=today)
            .order_by("effective_date", "id")
            .first()
        )
        if change is None:
            return applied
        _apply_change(subscription, change, actor=actor, now=now)
        subscription.refresh_from_db()
        applied += 1


def apply_due_changes(*, now: datetime, actor: Actor | None = None) -> int:
    """Apply every scheduled change whose day has come in its customer's timezone. Safe to repeat and to
    run concurrently: each subscription is handled in its own transaction under its row lock, and one
    failure is logged without stopping the others."""
    actor = actor or Actor.system("apply_due_changes")
    # No timezone is more than 14 hours ahead of UTC: anything due anywhere is due by this date.
    horizon = (now + timedelta(hours=14)).date()
    subscription_ids = list(
        SubscriptionChange.objects.filter(status=SubscriptionChange.Status.SCHEDULED, effective_date__lte=horizon)
        .order_by("subscription_id")
        .values_list("subscription_id", flat=True)
        .distinct()[:MAX_ACTIONS_PER_RUN]
    )
    applied = 0
    for subscription_id in subscription_ids:
        try:
            with transaction.atomic():
                subscription = _lock(Subscription(pk=subscription_id))
                today = customer_today(subscription.customer, now)
                applied += _apply_due_for(subscription, today=today, now=now, actor=actor)
        except (BillingError, ValidationError) as exc:
            logger.error("Could not apply the due changes of subscription %s: %s", subscription_id, exc)
    return applied


def default_now() -> datetime:
    return timezone.now()


def apply_due_changes_for(subscription: Subscription, *, now: datetime, actor: Actor) -> int:
    """Apply the due scheduled changes of one subscription (the cycle close does this before billing it, so a
    downgrade at period end is in force when the next period's fee is computed). Call inside a transaction."""
    if not subscription.changes.filter(status=SubscriptionChange.Status.SCHEDULED).exists():
        return 0
    locked = _lock(subscription)
    return _apply_due_for(locked, today=customer_today(locked.customer, now), now=now, actor=actor)
