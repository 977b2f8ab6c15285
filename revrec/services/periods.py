"""Accounting periods: calendar months of each billing entity, opened on demand. An event dated in a closed
period is posted on the first day of the next open one (a correction, never a change to closed books)."""

from datetime import date, timedelta

from django.db import IntegrityError, connection, transaction

from customers.models import BillingEntity
from revrec.models import AccountingPeriod


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_for(entity: BillingEntity | int, day: date) -> AccountingPeriod:
    """The month period holding `day`, opened if it does not exist yet (safe under concurrency)."""
    entity_id = entity if isinstance(entity, int) else entity.pk
    start = month_start(day)
    period = AccountingPeriod.objects.filter(billing_entity_id=entity_id, start_date=start).first()
    if period is not None:
        return period
    try:
        with transaction.atomic():
            return AccountingPeriod.objects.create(
                billing_entity_id=entity_id, start_date=start, end_date=next_month(start)
            )
    except IntegrityError:
        return AccountingPeriod.objects.get(billing_entity_id=entity_id, start_date=start)


def posting_period(entity: BillingEntity | int, day: date) -> tuple[AccountingPeriod, date]:
    """Where an event of `day` is posted: its own period if open, else the first open period after it,
    dated that period's first day."""
    period = period_for(entity, day)
    posted_on = day
    while not _open_for_posting(period):
        posted_on = period.end_date
        period = period_for(entity, posted_on)
    return period, posted_on


def _open_for_posting(period: AccountingPeriod) -> bool:
    """The period's status read under a share lock (PostgreSQL), held to the end of the posting's
    transaction: a close in progress is waited for, then seen, so the entry moves to the next period
    instead of failing on the closed one."""
    if connection.vendor != "postgresql" or not transaction.get_connection().in_atomic_block:
        return period.is_open
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM revrec_accountingperiod WHERE id = %s FOR SHARE", [period.pk])
        row = cursor.fetchone()
    return row is not None and row[0] == AccountingPeriod.Status.OPEN
