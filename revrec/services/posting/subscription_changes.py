"""Subscription changes applied through the billing cycle (a plan change, a quantity change, a
cancellation) recorded as contract modifications.

The cycle bills such a change with proration lines: a credit for the unused days at the old terms and a
charge for the rest at the new ones. Posted, those lines become obligations over the remaining days, so the
change is accounted for prospectively by construction: the remaining service days are distinct from those
already transferred (a series of distinct periods), nothing recognised is restated (ASC 606-10-25-13a).
This records that decision, with the facts it rests on, against the revenue contract of the obligation
that was being served when the change took effect."""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import CharField, Exists, OuterRef, Value
from django.db.models.functions import Cast, Concat

from billing.actors import Actor
from contracts.models import SubscriptionChange
from revrec.arithmetic import choose_treatment
from revrec.models import ContractModification, PerformanceObligation

Action = SubscriptionChange.Action
RECORDED = (Action.CHANGE_PLAN, Action.CHANGE_QUANTITY, Action.CANCEL)


def source_key(change: SubscriptionChange) -> str:
    return f"subscription_change:{change.pk}"


def unrecorded_changes(entity_id: int | None = None):  # type: ignore[no-untyped-def]
    """Applied changes of billed subscriptions not yet recorded as a modification."""
    changes = (
        SubscriptionChange.objects.filter(status=SubscriptionChange.Status.APPLIED, action__in=RECORDED)
        .filter(Exists(PerformanceObligation.objects.filter(invoice_line__subscription_id=OuterRef("subscription_id"))))
        .annotate(source_ref=Concat(Value("subscription_change:"), Cast("pk", CharField())))
        .exclude(Exists(ContractModification.objects.filter(source_key=OuterRef("source_ref"))))
    )
    if entity_id is not None:
        changes = changes.filter(subscription__customer__billing_entity_id=entity_id)
    return changes


def _kind(change: SubscriptionChange) -> str:
    if change.action == Action.CANCEL:
        return ContractModification.Change.CANCELLATION
    if change.action == Action.CHANGE_QUANTITY:
        return ContractModification.Change.QUANTITY_CHANGE
    before = change.from_plan_version.base_fee.amount if change.from_plan_version_id else None
    after = change.to_plan_version.base_fee.amount if change.to_plan_version_id else None
    if before is not None and after is not None and after < before:
        return ContractModification.Change.DOWNGRADE
    return ContractModification.Change.UPGRADE


def record_subscription_change(
    change: SubscriptionChange, *, actor: Actor, now: datetime
) -> ContractModification | None:
    """Record one applied change; None while no posted obligation served the subscription on that day (the
    change then touched nothing recognised). Safe to repeat and to race: the source key is unique."""
    served = (
        PerformanceObligation.objects.filter(
            invoice_line__subscription_id=change.subscription_id, pattern=PerformanceObligation.Pattern.RATABLE,
            service_start__lte=change.effective_date, service_end__gt=change.effective_date,
        ).exclude(status=PerformanceObligation.Status.CANCELLED).select_related("revenue_contract").order_by("pk")
    )
    obligations = list(served)
    if not obligations:
        return None
    decided = choose_treatment(adds_distinct_goods=False, priced_at_ssp=False, remaining_distinct=True)
    details = {
        "subscription": change.subscription.external_id,
        "action": change.action,
        "from_plan_version": change.from_plan_version_id,
        "to_plan_version": change.to_plan_version_id,
        "from_quantity": str(change.from_quantity) if change.from_quantity is not None else None,
        "to_quantity": str(change.to_quantity) if change.to_quantity is not None else None,
        "obligations_served": [
            {"id": o.pk, "description": o.description, "allocated": str(o.allocated_price),
             "recognized": str(o.recognized_amount), "service_end": o.service_end.isoformat()}
            for o in obligations
        ],
        "billing": "The cycle bills the change with proration lines (unused days credited at the old terms, the "
                   "remaining days charged at the new ones); posted, they are obligations over the remaining days.",
    }
    try:
        with transaction.atomic():
            return ContractModification.objects.create(
                revenue_contract=obligations[0].revenue_contract, change=_kind(change), treatment=decided.treatment,
                effective_date=change.effective_date, rationale=decided.rationale, details=details,
                source_key=source_key(change), created_at=now, created_by=actor.label,
            )
    except IntegrityError:
        return ContractModification.objects.filter(source_key=source_key(change)).first()
