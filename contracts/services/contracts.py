"""Contracts: negotiated terms (prices and ramps, commitments, entitlements), renewal with uplift, cancellation."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from djmoney.money import Money

from billing.actors import Actor
from billing.errors import InvalidTransition
from contracts.charge_models import validate_charge_properties
from contracts.models import (
    Charge,
    Contract,
    ContractCommitment,
    ContractEntitlement,
    ContractPrice,
    Feature,
    FixedCharge,
    PlanVersion,
    Subscription,
    SubscriptionChange,
)
from contracts.periods import add_months
from contracts.selectors import customer_today
from contracts.services._common import money_in, record_actor
from customers.models import Customer

PRICE_QUANTUM = Decimal("1e-12")  # prices keep 12 decimals; rounding to the currency happens on invoice lines
# Properties of each charge model that are money (an uplift raises them); rates and tier bounds are not.
MONEY_PROPERTIES = {"unit_price", "flat_fee", "package_price", "fixed_fee", "per_transaction_min_amount",
                    "per_transaction_max_amount"}


def create_contract(
    *,
    customer: Customer,
    reference: str,
    start_date: date,
    actor: Actor,
    end_date: date | None = None,
    currency: str | None = None,
    auto_renew: bool = False,
    renewal_term_months: int | None = None,
    renewal_uplift_percent: Decimal | str | int = Decimal(0),
    name: str = "",
    notes: str = "",
    metadata: dict[str, Any] | None = None,
    status: str = Contract.Status.ACTIVE,
    signed_at: date | None = None,
) -> Contract:
    currency = currency or str(customer.currency)
    if customer.status != Customer.Status.ACTIVE:
        raise ValidationError({"customer": ["The customer is archived."]})
    if str(currency) != str(customer.currency):
        raise ValidationError({"currency": [f"The customer is billed in {customer.currency}."]})
    if status not in (Contract.Status.DRAFT, Contract.Status.ACTIVE):
        raise ValidationError({"status": ["A new contract is a draft or active."]})
    if auto_renew and not renewal_term_months:
        raise ValidationError({"renewal_term_months": ["An auto-renewing contract needs its renewal term."]})
    if auto_renew and end_date is None:
        raise ValidationError({"end_date": ["An auto-renewing contract needs an end date."]})
    contract = Contract(
        customer=customer, reference=reference, start_date=start_date, end_date=end_date, currency=currency,
        auto_renew=auto_renew, renewal_term_months=renewal_term_months,
        renewal_uplift_percent=Decimal(str(renewal_uplift_percent)), name=name, notes=notes,
        metadata=metadata or {}, status=status, signed_at=signed_at,
    )
    contract.full_clean()
    record_actor(contract, actor)
    contract.save()
    return contract


def activate_contract(contract: Contract, *, actor: Actor) -> Contract:
    with transaction.atomic():
        contract = Contract.objects.select_for_update().get(pk=contract.pk)
        if contract.status != Contract.Status.DRAFT:
            raise InvalidTransition(f"Contract {contract.reference} is {contract.status}; only a draft is activated.")
        contract.status = Contract.Status.ACTIVE
        record_actor(contract, actor)
        contract.save(update_fields=["status", "updated_at"])
    return contract


def _require_open(contract: Contract) -> None:
    if contract.status not in (Contract.Status.DRAFT, Contract.Status.ACTIVE):
        raise InvalidTransition(f"Contract {contract.reference} is {contract.status}; its terms are closed.")


def set_contract_price(
    contract: Contract,
    *,
    actor: Actor,
    target: str,
    plan_version: PlanVersion,
    charge: Charge | None = None,
    fixed_charge: FixedCharge | None = None,
    amount: Any = None,
    charge_model: str = "",
    properties: dict[str, Any] | None = None,
    effective_from: date | None = None,
    effective_to: date | None = None,
) -> ContractPrice:
    """A negotiated price for one plan price; rows for the same price with consecutive dates form a ramp.
    Overlapping rows for the same price are refused."""
    with transaction.atomic():
        contract = Contract.objects.select_for_update().get(pk=contract.pk)  # serialises overlap checks
        _require_open(contract)
        errors: dict[str, list[str]] = {}
        if str(plan_version.plan.currency) != str(contract.currency):
            errors["plan_version"] = [
                f"The plan is in {plan_version.plan.currency}, the contract in {contract.currency}."
            ]
        if target == ContractPrice.Target.CHARGE:
            if charge is None or charge.plan_version_id != plan_version.pk:
                errors["charge"] = ["Name a usage charge of this plan version."]
            if amount is not None:
                errors["amount"] = ["A usage charge is priced by charge_model and properties."]
            properties = validate_charge_properties(charge_model or (charge.charge_model if charge else ""),
                                                    properties or {})
            charge_model = charge_model or (charge.charge_model if charge else "")
        elif target in (ContractPrice.Target.BASE_FEE, ContractPrice.Target.FIXED_CHARGE):
            if target == ContractPrice.Target.FIXED_CHARGE and (
                fixed_charge is None or fixed_charge.plan_version_id != plan_version.pk
            ):
                errors["fixed_charge"] = ["Name a fixed charge of this plan version."]
            if amount is None:
                errors["amount"] = ["Give the negotiated amount."]
            if charge_model or properties:
                errors["properties"] = ["Only usage charges take a charge model and properties."]
        else:
            errors["target"] = [f"Use one of {', '.join(ContractPrice.Target.values)}."]
        start = effective_from or contract.start_date
        if start < contract.start_date:
            errors["effective_from"] = [f"The contract starts on {contract.start_date}."]
        if contract.end_date and (start >= contract.end_date or (effective_to and effective_to > contract.end_date)):
            errors["effective_to"] = [f"The contract's term ends on {contract.end_date}."]
        if effective_to is not None and effective_to <= start:
            errors["effective_to"] = ["Must be after effective_from."]
        if errors:
            raise ValidationError(errors)

        overlapping = ContractPrice.objects.filter(
            contract=contract, target=target, plan_version=plan_version, charge=charge, fixed_charge=fixed_charge
        ).filter(Q(effective_to__isnull=True) | Q(effective_to__gt=start))
        if effective_to is not None:
            overlapping = overlapping.filter(Q(effective_from__isnull=True) | Q(effective_from__lt=effective_to))
        clash = overlapping.first()
        if clash is not None:
            raise ValidationError({"effective_from": [
                f"Overlaps the negotiated price from {clash.effective_from or contract.start_date} "
                f"to {clash.effective_to or 'open'}; end that one first."
            ]})
        price = ContractPrice(
            contract=contract, target=target, plan_version=plan_version, charge=charge, fixed_charge=fixed_charge,
            amount=money_in(amount, str(contract.currency), "amount"), charge_model=charge_model,
            properties=properties or {}, effective_from=effective_from, effective_to=effective_to,
        )
        price.full_clean()
        record_actor(price, actor)
        price.save()
    return price


def add_commitment(
    contract: Contract,
    *,
    actor: Actor,
    kind: str,
    amount: Any,
    period: str = ContractCommitment.Period.YEAR,
    start_date: date | None = None,
    end_date: date | None = None,
    description: str = "",
) -> ContractCommitment:
    with transaction.atomic():
        contract = Contract.objects.select_for_update().get(pk=contract.pk)
        _require_open(contract)
        commitment = ContractCommitment(
            contract=contract, kind=kind, amount=money_in(amount, str(contract.currency), "amount"), period=period,
            start_date=start_date, end_date=end_date, description=description,
        )
        if start_date and start_date < contract.start_date:
            raise ValidationError({"start_date": [f"The contract starts on {contract.start_date}."]})
        if end_date and contract.end_date and end_date > contract.end_date:
            raise ValidationError({"end_date": [f"The contract's term ends on {contract.end_date}."]})
        commitment.full_clean()
        record_actor(commitment, actor)
        commitment.save()
    return commitment


def set_contract_entitlement(
    contract: Contract, *, actor: Actor, feature: Feature, enabled: bool = True, limit: Decimal | None = None
) -> ContractEntitlement:
    if feature.kind == Feature.Kind.SWITCH and limit is not None:
        raise ValidationError({"limit": [f"{feature.code} is an on/off feature; it takes no limit."]})
    if limit is not None and limit < 0:
        raise ValidationError({"limit": ["Must be 0 or more."]})
    with transaction.atomic():
        contract = Contract.objects.select_for_update().get(pk=contract.pk)
        _require_open(contract)
        entitlement, _ = ContractEntitlement.objects.update_or_create(
            contract=contract, feature=feature, defaults={"enabled": enabled, "limit": limit}
        )
    return entitlement


def _uplift_properties(properties: Any, factor: Decimal) -> Any:
    if isinstance(properties, dict):
        return {
            key: (
                format((Decimal(value) * factor).quantize(PRICE_QUANTUM).normalize(), "f")
                if key in MONEY_PROPERTIES and value is not None
                else _uplift_properties(value, factor)
            )
            for key, value in properties.items()
        }
    if isinstance(properties, list):
        return [_uplift_properties(item, factor) for item in properties]
    return properties


def _uplift_money(amount: Money, factor: Decimal) -> Money:
    return Money((amount.amount * factor).quantize(PRICE_QUANTUM), str(amount.currency))


def renew_contract(contract: Contract, *, actor: Actor, now: datetime) -> Contract:
    with transaction.atomic():
        return renew_contract_locked(contract, actor=actor, now=now)


def renew_contract_locked(
    contract: Contract, *, actor: Actor, now: datetime, triggered_by: SubscriptionChange | None = None
) -> Contract:
    """Extend the term by the renewal term; with an uplift, every price in force at the end of the old term
    continues from the renewal date raised by the uplift. Live subscriptions ending with the term follow it.
    Must run inside a transaction."""
    from contracts.services.subscriptions import LIVE_STATUSES, _extend_term, _lock, _record

    contract = Contract.objects.select_for_update().get(pk=contract.pk)
    if contract.status != Contract.Status.ACTIVE:
        raise InvalidTransition(f"Contract {contract.reference} is {contract.status}; only an active contract renews.")
    if contract.end_date is None:
        raise InvalidTransition(f"Contract {contract.reference} is evergreen: there is no term to renew.")
    months = contract.renewal_term_months or 12
    old_end, new_end = contract.end_date, add_months(contract.end_date, months)
    factor = 1 + contract.renewal_uplift_percent / Decimal(100)
    subscriptions = [
        _lock(s) for s in contract.subscriptions.filter(status__in=LIVE_STATUSES, end_date=old_end).order_by("pk")
    ]
    contract.end_date = new_end
    record_actor(contract, actor)
    contract.save(update_fields=["end_date", "updated_at"])
    if factor != 1:
        _uplift_prices(contract, old_end, new_end, factor, subscriptions, actor)
    for subscription in subscriptions:
        subscription.contract = contract
        _extend_term(subscription, actor=actor, now=now, new_end_date=new_end)
        details = {"old_end_date": old_end.isoformat(), "new_end_date": new_end.isoformat(),
                   "contract": contract.reference, "uplift_percent": str(contract.renewal_uplift_percent)}
        if triggered_by is not None and triggered_by.subscription_id == subscription.pk:
            # The scheduled renewal that set this off is this subscription's record of it.
            triggered_by.details = {**triggered_by.details, **details}
            triggered_by.save(update_fields=["details"])
            continue
        _record(subscription, SubscriptionChange.Action.RENEW, actor=actor, now=now,
                effective_date=old_end, from_status=subscription.status, to_status=subscription.status,
                details=details)
    return contract


def _uplift_prices(contract: Contract, old_end: date, new_end: date, factor: Decimal,
                   subscriptions: list[Subscription], actor: Actor) -> None:
    """Close every negotiated price in force on the last day of the old term and continue it, uplifted; plan
    prices without a negotiated one become negotiated at the uplifted plan price."""
    last_day_prices = ContractPrice.objects.filter(contract=contract).filter(
        Q(effective_from__isnull=True) | Q(effective_from__lt=old_end)
    ).filter(Q(effective_to__isnull=True) | Q(effective_to__gte=old_end))
    covered: set[tuple[str, int, int | None, int | None]] = set()
    for price in last_day_prices:
        covered.add((price.target, price.plan_version_id, price.charge_id, price.fixed_charge_id))
        if price.effective_to is None or price.effective_to > old_end:
            price.effective_to = old_end
            price.save(update_fields=["effective_to", "updated_at"])
        ContractPrice.objects.create(
            contract=contract, target=price.target, plan_version_id=price.plan_version_id, charge_id=price.charge_id,
            fixed_charge_id=price.fixed_charge_id,
            amount=_uplift_money(price.amount, factor) if price.amount is not None else None,
            charge_model=price.charge_model, properties=_uplift_properties(price.properties, factor),
            effective_from=old_end, effective_to=new_end,
        )
    for version in {s.plan_version for s in subscriptions}:
        if (ContractPrice.Target.BASE_FEE, version.pk, None, None) not in covered and version.base_fee.amount > 0:
            ContractPrice.objects.create(
                contract=contract, target=ContractPrice.Target.BASE_FEE, plan_version=version,
                amount=_uplift_money(version.base_fee, factor), effective_from=old_end, effective_to=new_end,
            )
        for fixed in version.fixed_charges.all():
            if (ContractPrice.Target.FIXED_CHARGE, version.pk, None, fixed.pk) not in covered:
                ContractPrice.objects.create(
                    contract=contract, target=ContractPrice.Target.FIXED_CHARGE, plan_version=version,
                    fixed_charge=fixed, amount=_uplift_money(fixed.amount, factor),
                    effective_from=old_end, effective_to=new_end,
                )
        for charge in version.charges.all():
            if (ContractPrice.Target.CHARGE, version.pk, charge.pk, None) not in covered:
                ContractPrice.objects.create(
                    contract=contract, target=ContractPrice.Target.CHARGE, plan_version=version, charge=charge,
                    charge_model=charge.charge_model, properties=_uplift_properties(charge.properties, factor),
                    effective_from=old_end, effective_to=new_end,
                )


def cancel_contract(contract: Contract, *, actor: Actor, now: datetime, at_period_end: bool = False,
                    reason: str = "") -> Contract:
    """Cancel every live subscription of the contract (now or each at its period end) and stop renewal."""
    from contracts.services.subscriptions import LIVE_STATUSES, cancel_subscription

    with transaction.atomic():
        contract = Contract.objects.select_for_update().select_related("customer").get(pk=contract.pk)
        _require_open(contract)
        for subscription in contract.subscriptions.filter(status__in=LIVE_STATUSES).order_by("pk"):
            paused = subscription.status == Subscription.Status.PAUSED
            cancel_subscription(subscription, actor=actor, now=now, at_period_end=at_period_end and not paused,
                                reason=reason or f"contract {contract.reference} canceled")
        contract.auto_renew = False
        if not at_period_end:
            contract.status = Contract.Status.CANCELED
            today = customer_today(contract.customer, now)
            if today > contract.start_date and (contract.end_date is None or today < contract.end_date):
                contract.end_date = today
        record_actor(contract, actor)
        contract.save()
    return contract
