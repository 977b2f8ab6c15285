"""Point in time on delivery: a one-time deliverable whose product is recognised when delivered (a
ProductRevenueRule on_delivery) waits until an operator records the delivery day; the next recognition run
through that day or later recognises it in full."""

from datetime import date, datetime

from django.db import transaction

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from revrec.models import PerformanceObligation
from revrec.services.recognition import lock_entity_revenue

Status = PerformanceObligation.Status


def mark_delivered(obligation: PerformanceObligation, *, delivered_on: date, actor: Actor,
                   now: datetime) -> PerformanceObligation:
    """Record that a deliverable awaiting delivery was delivered on `delivered_on`: not after today, an
    earlier day is fine (deliveries are often recorded late; the next run recognises it in full)."""
    if not isinstance(delivered_on, date) or isinstance(delivered_on, datetime):
        raise BillingError("Give the delivery day as a date.", field="delivered_on")
    if delivered_on > now.date():
        raise BillingError(f"The delivery day {delivered_on} is in the future.", field="delivered_on")
    with transaction.atomic():
        entity_id = obligation.revenue_contract.billing_entity_id
        lock_entity_revenue(entity_id)
        locked = PerformanceObligation.objects.select_for_update().get(pk=obligation.pk)
        if locked.status != Status.AWAITING_DELIVERY:
            raise InvalidTransition(
                f"Obligation {locked.pk} is {locked.get_status_display().lower()}, not awaiting delivery."
            )
        if locked.pattern != PerformanceObligation.Pattern.POINT_IN_TIME:
            raise InvalidTransition(f"Obligation {locked.pk} is not recognised at a point in time.")
        locked.satisfied_on = delivered_on
        locked.status = Status.OPEN
        locked.save(update_fields=["satisfied_on", "status"])
    obligation.satisfied_on, obligation.status = locked.satisfied_on, locked.status
    return locked
