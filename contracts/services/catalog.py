"""Plans and their versions. A published version is immutable: price changes make a new draft version,
and subscriptions keep their version until migrated on purpose (`migrate_subscriptions`)."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from billing.actors import Actor
from billing.errors import InvalidTransition
from contracts.charge_models import validate_charge_properties, validate_filters, validate_group_by
from contracts.models import Charge, Feature, FixedCharge, Plan, PlanEntitlement, PlanVersion, Product
from contracts.services._common import money_in, record_actor


def create_plan(
    *,
    code: str,
    name: str,
    product: Product,
    currency: str,
    interval: str,
    actor: Actor,
    description: str = "",
    base_fee: Any = Decimal(0),
    base_fee_timing: str = "advance",
    trial_days: int = 0,
    minimum_commitment: Any = None,
) -> Plan:
    """A plan with its first version as a draft, ready for charges."""
    plan = Plan(code=code, name=name, product=product, currency=currency, interval=interval, description=description)
    with transaction.atomic():
        plan.full_clean()
        record_actor(plan, actor)
        plan.save()
        version = PlanVersion(
            plan=plan, version=1, base_fee=money_in(base_fee, currency, "base_fee"),
            base_fee_timing=base_fee_timing, trial_days=trial_days,
            minimum_commitment=money_in(minimum_commitment, currency, "minimum_commitment"),
        )
        version.full_clean()
        record_actor(version, actor)
        version.save()
    return plan


def _require_draft(version: PlanVersion) -> None:
    if version.status != PlanVersion.Status.DRAFT:
        raise InvalidTransition(
            f"{version} is {version.status}: published prices never change; create a new version instead."
        )


def update_plan_version(version: PlanVersion, *, actor: Actor, **fields: Any) -> PlanVersion:
    with transaction.atomic():
        version = PlanVersion.objects.select_for_update().select_related("plan").get(pk=version.pk)
        _require_draft(version)
        currency = str(version.plan.currency)
        for name, value in fields.items():
            if name in ("base_fee", "minimum_commitment"):
                value = money_in(value, currency, name)
            elif name not in ("base_fee_timing", "trial_days"):
                raise ValidationError({name: ["This field cannot be changed on a plan version."]})
            setattr(version, name, value)
        version.full_clean()
        record_actor(version, actor)
        version.save()
    return version


def create_plan_version(plan: Plan, *, actor: Actor, copy_from: PlanVersion | None = None) -> PlanVersion:
    """A new draft version copying `copy_from` (default: the latest version) with all its prices."""
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)  # serialises version numbering
        if plan.versions.filter(status=PlanVersion.Status.DRAFT).exists():
            raise InvalidTransition(f"Plan {plan.code} already has a draft version; edit or publish it first.")
        source = copy_from or plan.versions.order_by("-version").first()
        if source is not None and source.plan_id != plan.pk:
            raise ValidationError({"copy_from": ["That version belongs to another plan."]})
        number = (plan.versions.aggregate(n=Max("version"))["n"] or 0) + 1
        version = PlanVersion(plan=plan, version=number, base_fee=money_in(Decimal(0), str(plan.currency), "base_fee"))
        if source is not None:
            for name in ("base_fee", "base_fee_timing", "trial_days", "minimum_commitment"):
                setattr(version, name, getattr(source, name))
        record_actor(version, actor)
        version.save()
        if source is not None:
            for charge in source.charges.all():
                charge.pk = None
                charge.plan_version = version
                charge.save()
            for fixed in source.fixed_charges.all():
                fixed.pk = None
                fixed.plan_version = version
                fixed.save()
            for entitlement in source.entitlements.all():
                entitlement.pk = None
                entitlement.plan_version = version
                entitlement.save()
    return version


def publish_plan_version(version: PlanVersion, *, actor: Actor, now: datetime) -> PlanVersion:
    with transaction.atomic():
        version = PlanVersion.objects.select_for_update().get(pk=version.pk)
        _require_draft(version)
        version.status = PlanVersion.Status.PUBLISHED
        version.published_at = now
        record_actor(version, actor)
        version.save(update_fields=["status", "published_at", "updated_at"])
    return version


def archive_plan_version(version: PlanVersion, *, actor: Actor) -> PlanVersion:
    """An archived version takes no new subscriptions; existing ones keep it."""
    with transaction.atomic():
        version = PlanVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != PlanVersion.Status.PUBLISHED:
            raise InvalidTransition(f"Only a published version can be archived; {version} is {version.status}.")
        version.status = PlanVersion.Status.ARCHIVED
        record_actor(version, actor)
        version.save(update_fields=["status", "updated_at"])
    return version


def _locked_draft(version: PlanVersion) -> PlanVersion:
    version = PlanVersion.objects.select_for_update().select_related("plan").get(pk=version.pk)
    _require_draft(version)
    return version


def add_charge(
    version: PlanVersion,
    *,
    actor: Actor,
    meter: Any,
    charge_model: str,
    properties: dict[str, Any],
    filters: dict[str, Any] | None = None,
    group_by: list[str] | None = None,
    billing_timing: str = "arrears",
    minimum_amount: Any = None,
    display_name: str = "",
    product: Product | None = None,
) -> Charge:
    with transaction.atomic():
        version = _locked_draft(version)
        currency = str(version.plan.currency)
        normalised = validate_charge_properties(charge_model, properties)
        if billing_timing == "advance" and meter.aggregation not in ("count", "sum"):
            raise ValidationError(
                {"billing_timing": ["Only count and sum meters can be billed in advance."]}
            )
        charge = Charge(
            plan_version=version, meter=meter, charge_model=charge_model, properties=normalised,
            filters=validate_filters(filters or {}), group_by=validate_group_by(group_by or []),
            billing_timing=billing_timing, minimum_amount=money_in(minimum_amount, currency, "minimum_amount"),
            display_name=display_name, product=product,
            position=version.charges.count(),
        )
        charge.full_clean()
        charge.save()
    return charge


def update_charge(charge: Charge, *, actor: Actor, **fields: Any) -> Charge:
    with transaction.atomic():
        version = _locked_draft(charge.plan_version)
        charge = Charge.objects.select_related("meter").get(pk=charge.pk)
        model = fields.get("charge_model", charge.charge_model)
        if "properties" in fields or "charge_model" in fields:
            fields["properties"] = validate_charge_properties(model, fields.get("properties", charge.properties))
        if "filters" in fields:
            fields["filters"] = validate_filters(fields["filters"])
        if "group_by" in fields:
            fields["group_by"] = validate_group_by(fields["group_by"])
        if "minimum_amount" in fields:
            fields["minimum_amount"] = money_in(fields["minimum_amount"], str(version.plan.currency), "minimum_amount")
        for name, value in fields.items():
            setattr(charge, name, value)
        charge.full_clean()
        charge.save()
    return charge


def remove_charge(charge: Charge, *, actor: Actor) -> None:
    with transaction.atomic():
        _locked_draft(charge.plan_version)
        charge.delete()


def add_fixed_charge(
    version: PlanVersion,
    *,
    actor: Actor,
    code: str,
    name: str,
    amount: Any,
    quantity: Decimal = Decimal(1),
    billing_timing: str = "advance",
    recurring: bool = True,
    prorated: bool = True,
    product: Product | None = None,
) -> FixedCharge:
    with transaction.atomic():
        version = _locked_draft(version)
        fixed = FixedCharge(
            plan_version=version, code=code, name=name,
            amount=money_in(amount, str(version.plan.currency), "amount"), quantity=Decimal(quantity),
            billing_timing=billing_timing, recurring=recurring, prorated=prorated, product=product,
        )
        fixed.full_clean()
        fixed.save()
    return fixed


def set_entitlement(
    version: PlanVersion,
    *,
    actor: Actor,
    feature: Feature,
    enabled: bool = True,
    limit: Decimal | None = None,
    per_unit: bool = False,
) -> PlanEntitlement:
    if feature.kind == Feature.Kind.SWITCH and limit is not None:
        raise ValidationError({"limit": [f"{feature.code} is an on/off feature; it takes no limit."]})
    if feature.kind == Feature.Kind.LIMIT and enabled and limit is None:
        raise ValidationError({"limit": [f"{feature.code} is a limit feature; give its limit."]})
    with transaction.atomic():
        version = _locked_draft(version)
        entitlement, _ = PlanEntitlement.objects.update_or_create(
            plan_version=version, feature=feature,
            defaults={"enabled": enabled, "limit": limit, "per_unit": per_unit},
        )
    return entitlement


def migrate_subscriptions(
    from_version: PlanVersion, to_version: PlanVersion, *, actor: Actor, now: datetime, timing: str = "period_end"
) -> int:
    """Move every live subscription on `from_version` to `to_version` (a deliberate price migration)."""
    from contracts.models import Subscription
    from contracts.services.subscriptions import LIVE_STATUSES, change_plan

    if from_version.plan_id != to_version.plan_id:
        raise ValidationError({"to_version": ["Migrate between versions of the same plan."]})
    if to_version.status != PlanVersion.Status.PUBLISHED:
        raise ValidationError({"to_version": ["Publish the target version first."]})
    moved = 0
    ids = Subscription.objects.filter(plan_version=from_version, status__in=LIVE_STATUSES).values_list("pk", flat=True)
    for subscription in Subscription.objects.filter(pk__in=list(ids)):
        change_plan(subscription, to_version, actor=actor, now=now, timing=timing)
        moved += 1
    return moved
