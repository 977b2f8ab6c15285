"""Writes for meters. A meter that a published plan bills from keeps its definition: changing how it
aggregates would silently change invoices already priced on it."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from billing.actors import Actor
from contracts.charge_models import validate_filters, validate_group_by
from usage.models import Meter

DEFINING_FIELDS = ("aggregation", "field_name", "filters", "group_by", "carries_over", "rounding", "rounding_precision")
MAX_ROUNDING_PRECISION = 12


def _validate(meter: Meter) -> None:
    errors: dict[str, list[str]] = {}
    try:
        meter.filters = validate_filters(meter.filters)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        meter.group_by = validate_group_by(meter.group_by)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if meter.aggregation == Meter.Aggregation.COUNT and meter.field_name:
        errors["field_name"] = ["A count meter counts events; it reads no property."]
    elif meter.aggregation != Meter.Aggregation.COUNT and not meter.field_name:
        errors["field_name"] = [f"A {meter.aggregation} meter needs the event property it reads."]
    if meter.carries_over and meter.aggregation not in ("latest", "weighted_sum", "max"):
        errors["carries_over"] = ["Only levels (latest, max, weighted sum) carry over between periods."]
    if meter.rounding_precision > MAX_ROUNDING_PRECISION:
        errors["rounding_precision"] = [f"At most {MAX_ROUNDING_PRECISION} decimal places."]
    try:
        meter.full_clean(exclude=list(errors))
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)


def create_meter(*, actor: Actor, **fields: Any) -> Meter:
    meter = Meter(**fields)
    _validate(meter)
    meter._history_user = actor.user
    meter._change_reason = actor.label
    meter.save()
    return meter


def update_meter(meter: Meter, *, actor: Actor, **fields: Any) -> Meter:
    with transaction.atomic():
        meter = Meter.objects.select_for_update().get(pk=meter.pk)
        if "code" in fields and fields["code"] != meter.code:
            raise ValidationError({"code": ["Events name the meter by its code; it cannot change."]})
        redefined = [name for name in DEFINING_FIELDS if name in fields and fields[name] != getattr(meter, name)]
        if redefined and meter.charges.exclude(plan_version__status="draft").exists():
            raise ValidationError({
                name: ["Published plans bill from this meter; create a new meter instead."] for name in redefined
            })
        for name, value in fields.items():
            setattr(meter, name, value)
        _validate(meter)
        meter._history_user = actor.user
        meter._change_reason = actor.label
        meter.save()
    return meter
