"""Reads over contracts and subscriptions: today's date for a customer, current periods, entitlements."""

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Q

from contracts.models import ContractEntitlement, Feature, PlanEntitlement, Subscription, SubscriptionPhase
from contracts.periods import Period, period_containing
from customers.models import Customer

ENTITLED_STATUSES = (Subscription.Status.TRIALING, Subscription.Status.ACTIVE)


def customer_today(customer: Customer, now: datetime) -> date:
    """The calendar day it is for the customer at `now` (period boundaries use the customer's timezone)."""
    return now.astimezone(customer.timezone).date()


def current_period(subscription: Subscription, *, now: datetime) -> Period | None:
    """The billing period in progress, or None for a subscription not yet started or already over."""
    if subscription.status in (Subscription.Status.PENDING, Subscription.Status.CANCELED, Subscription.Status.ENDED):
        return None
    return period_for_day(subscription, customer_today(subscription.customer, now))


def period_for_day(subscription: Subscription, day: date) -> Period | None:
    if day < subscription.start_date or (subscription.end_date and day >= subscription.end_date):
        return None
    return period_containing(
        day,
        interval=subscription.plan_version.plan.interval,
        anchor=subscription.billing_anchor,
        start_date=subscription.start_date,
        bill_cycle_day=subscription.bill_cycle_day,
        end_date=subscription.end_date,
    )


@dataclass(frozen=True)
class Entitlement:
    feature_code: str
    name: str
    kind: str
    enabled: bool
    limit: Decimal | None
    sources: list[str] = field(default_factory=list)


def entitlements_for_customer(customer: Customer, *, now: datetime, on: date | None = None) -> dict[str, Entitlement]:
    """What the customer may use: the union over its trialing and active subscriptions.

    A contract's negotiated entitlement replaces its plan's for the same feature. Switches are on when any
    subscription turns them on; limits add up across subscriptions (a per-unit limit times the quantity).
    Paused, pending and ended subscriptions grant nothing.
    """
    day = on or customer_today(customer, now)
    phases = list(
        SubscriptionPhase.objects.filter(
            subscription__customer=customer,
            subscription__status__in=ENTITLED_STATUSES,
            start_date__lte=day,
        )
        .filter(Q(end_date__isnull=True) | Q(end_date__gt=day))
        .select_related("subscription")
    )
    version_ids = {p.plan_version_id for p in phases}
    contract_ids = {p.subscription.contract_id for p in phases if p.subscription.contract_id}
    plan_rows: dict[int, list[PlanEntitlement]] = {}
    for row in PlanEntitlement.objects.filter(plan_version_id__in=version_ids).select_related("feature"):
        plan_rows.setdefault(row.plan_version_id, []).append(row)
    contract_rows: dict[int, list[ContractEntitlement]] = {}
    for row in ContractEntitlement.objects.filter(contract_id__in=contract_ids).select_related("feature"):
        contract_rows.setdefault(row.contract_id, []).append(row)

    grants: dict[str, dict] = {}

    def grant(feature: Feature, enabled: bool, limit: Decimal | None, source: str) -> None:
        entry = grants.setdefault(
            feature.code, {"feature": feature, "enabled": False, "limit": None, "sources": []}
        )
        entry["sources"].append(source)
        if not enabled:
            return
        entry["enabled"] = True
        if feature.kind == Feature.Kind.LIMIT and limit is not None:
            entry["limit"] = (entry["limit"] or Decimal(0)) + limit

    granted_contracts: set[int] = set()
    for phase in phases:
        subscription = phase.subscription
        overrides = {row.feature_id: row for row in contract_rows.get(subscription.contract_id, [])}
        for row in plan_rows.get(phase.plan_version_id, []):
            if row.feature_id in overrides:
                continue
            limit = row.limit * phase.quantity if (row.per_unit and row.limit is not None) else row.limit
            grant(row.feature, row.enabled, limit, f"subscription:{subscription.external_id}")
        if subscription.contract_id not in granted_contracts:
            # A negotiated entitlement is granted once per contract, however many subscriptions it holds.
            granted_contracts.add(subscription.contract_id)
            for row in overrides.values():
                grant(row.feature, row.enabled, row.limit, f"contract:{subscription.contract_id}")

    return {
        code: Entitlement(
            feature_code=code, name=entry["feature"].name, kind=entry["feature"].kind,
            enabled=entry["enabled"], limit=entry["limit"] if entry["enabled"] else None, sources=entry["sources"],
        )
        for code, entry in sorted(grants.items())
    }
