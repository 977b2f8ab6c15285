"""Dunning: chasing overdue invoices step by step, "as of" a moment."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from billing.actors import Actor
from contracts.models import Subscription
from contracts.selectors import customer_today
from contracts.services.subscriptions import resume_subscription
from customers.models import Customer
from invoicing.models import DunningSuspension, Invoice


def resume_if_settled(customer: Customer | int, *, actor: Actor, now: datetime) -> DunningSuspension | None:
    """Lift the customer's dunning suspension once it owes nothing overdue: resume the subscriptions dunning
    paused (and only those). Runs inside the caller's transaction, after a payment or a credit."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    suspension = (
        DunningSuspension.objects.select_for_update()
        .filter(customer_id=customer_id, resumed_at__isnull=True)
        .select_related("customer")
        .first()
    )
    if suspension is None:
        return None
    today = customer_today(suspension.customer, now)
    overdue = Invoice.objects.filter(
        customer_id=customer_id,
        status__in=(Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE),
        amount_due__gt=0,
        due_date__lt=today,
    ).exists()
    if overdue:
        return None
    with transaction.atomic():
        for subscription in Subscription.objects.filter(
            pk__in=suspension.subscription_ids, status=Subscription.Status.PAUSED
        ):
            resume_subscription(subscription, actor=actor, now=now)
        suspension.resumed_at = now
        suspension.save(update_fields=["resumed_at", "updated_at"])
    return suspension
