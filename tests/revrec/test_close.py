"""Closing an accounting period: the pre-close checklist refuses with its reasons, a clean close stores it."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from djmoney.money import Money

from billing.errors import BillingError, InvalidTransition
from contracts.services.subscriptions import create_subscription
from invoicing.services.documents import ManualLine, create_one_off_invoice
from revrec.models import AccountingPeriod, JournalEntry
from revrec.services.chart import Chart
from revrec.services.close import close_checklist, close_period, ensure_open_periods
from revrec.services.periods import period_for
from revrec.services.posting.invoices import post_invoice
from revrec.services.recognition import recognize_through
from tests.factories import (
    BillingEntityFactory,
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PlanVersionFactory,
)

D = Decimal
pytestmark = pytest.mark.django_db


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


AFTER_JANUARY = at(date(2024, 2, 5))


@pytest.fixture
def entity():
    return BillingEntityFactory(timezone="UTC", invoice_grace_days=0)


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, timezone="UTC", currency="USD")


def january_invoice(customer, actor, now=None):
    """100.00 of January's subscription, issued on 15 January: 45.16 earned by the 14th (100 x 14/31)."""
    return create_one_off_invoice(customer, [
        ManualLine("Subscription Jan", D("100.00"), period_start=date(2024, 1, 1), period_end=date(2024, 2, 1)),
    ], actor=actor, now=now or at(date(2024, 1, 15)), finalize=True)


def checks_by_key(period, now):
    return {c.key: c for c in close_checklist(period, now=now)}


def test_refused_while_the_period_is_not_over(entity, actor):
    january = period_for(entity, date(2024, 1, 1))
    with pytest.raises(BillingError) as refused:
        close_period(january, actor=actor, now=at(date(2024, 1, 31), 23))
    assert "The period is over" in refused.value.message
    assert "2024-01-31" in refused.value.message
    january.refresh_from_db()
    assert january.is_open and january.close_checklist == []


def test_refused_while_an_earlier_period_is_open(entity, actor):
    period_for(entity, date(2023, 12, 1))
    january = period_for(entity, date(2024, 1, 1))
    with pytest.raises(BillingError) as refused:
        close_period(january, actor=actor, now=AFTER_JANUARY)
    assert "Earlier periods closed" in refused.value.message and "2023-12" in refused.value.message


def test_refused_with_an_unposted_invoice_then_recognition_not_run(entity, customer, actor):
    invoice = january_invoice(customer, actor)
    january = period_for(entity, date(2024, 1, 1))
    with pytest.raises(BillingError) as refused:
        close_period(january, actor=actor, now=AFTER_JANUARY)
    assert "Every document posted" in refused.value.message and invoice.number in refused.value.message

    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=at(date(2024, 1, 15)))
    checks = checks_by_key(january, AFTER_JANUARY)
    assert checks["documents_posted"].passed
    # Recognised through the 14th only: the 15th-31st (100.00 - 45.16 = 54.84) are still due.
    assert not checks["recognition_complete"].passed
    assert checks["recognition_complete"].items == [
        f"{invoice.revenue_contract.reference}: Subscription Jan (recognised through 2024-01-14)"]
    with pytest.raises(BillingError) as refused:
        close_period(january, actor=actor, now=AFTER_JANUARY)
    assert "Recognition run through the period end" in refused.value.message
    assert "Every document posted" not in refused.value.message


def test_clean_close_stores_the_checklist_and_opens_the_next_month(entity, customer, actor):
    invoice = january_invoice(customer, actor)
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=at(date(2024, 1, 15)))
    result = recognize_through(date(2024, 1, 31), actor=actor, now=at(date(2024, 2, 1)), entity=entity)
    assert result.amounts == {"USD": D("54.84")}
    january = period_for(entity, date(2024, 1, 1))
    assert all(c.passed for c in close_checklist(january, now=AFTER_JANUARY) if c.blocking)

    closed = close_period(january, actor=actor, now=AFTER_JANUARY)

    assert (closed.status, closed.closed_at, closed.closed_by) == ("closed", AFTER_JANUARY, actor.label)
    stored = {c["key"]: c for c in closed.close_checklist}
    assert set(stored) == {"period_ended", "previous_closed", "documents_posted", "recognition_complete",
                           "contracts_allocated", "awaiting_delivery", "ledger_balanced", "rollforward_reconciles",
                           "unbilled_accrued"}
    assert all(c["passed"] for c in stored.values())
    assert AccountingPeriod.objects.get(billing_entity=entity, start_date=date(2024, 2, 1)).is_open

    with pytest.raises(InvalidTransition):
        close_period(january, actor=actor, now=AFTER_JANUARY)

    # An invoice dated in January after the close is posted on 1 February, in February.
    late = january_invoice(customer, actor, now=at(date(2024, 1, 20)))
    entry = post_invoice(late, chart=Chart.load(entity), actor=actor, now=AFTER_JANUARY)
    assert (entry.entry_date, entry.original_date, entry.period.start_date) == (
        date(2024, 2, 1), date(2024, 1, 20), date(2024, 2, 1))
    assert not JournalEntry.objects.filter(period=january, created_at=AFTER_JANUARY).exclude(
        kind__in=["accrual"]).exists()


def test_close_posts_the_unbilled_accrual(entity, customer, actor):
    """A metered customer used 1,000 units x 0.10 in January, not invoiced when January is closed: the close
    accrues 100.00 on the 31st and reverses it on 1 February."""
    from usage.ingestion import ingest_events

    version = PlanVersionFactory(plan=PlanFactory(), base_fee=Money("0", "USD"))
    meter = MeterFactory()
    ChargeFactory(plan_version=version, meter=meter, properties={"unit_price": "0.10"})
    create_subscription(customer=customer, plan_version=version, actor=actor, now=at(date(2024, 1, 1)),
                        start_date=date(2024, 1, 1))
    ingest_events([{"transaction_id": f"e{i}", "customer_external_id": customer.external_id,
                    "meter_code": meter.code, "timestamp": at(date(2024, 1, 9)).isoformat()} for i in range(1000)],
                  now=at(date(2024, 1, 9)))
    january = period_for(entity, date(2024, 1, 1))
    before = checks_by_key(january, AFTER_JANUARY)["unbilled_accrued"]
    assert not before.passed and not before.blocking

    closed = close_period(january, actor=actor, now=AFTER_JANUARY)

    accrual = JournalEntry.objects.get(kind="accrual")
    reversal = JournalEntry.objects.get(kind="accrual_reversal")
    assert (accrual.entry_date, accrual.period_id, accrual.total) == (date(2024, 1, 31), january.pk, D("100.00"))
    assert (reversal.entry_date, reversal.total) == (date(2024, 2, 1), D("100.00"))
    stored = {c["key"]: c for c in closed.close_checklist}
    assert stored["unbilled_accrued"]["passed"] and stored["rollforward_reconciles"]["passed"]


def test_a_refused_close_leaves_no_accrual(entity, customer, actor):
    january_invoice(customer, actor)  # never posted: the close is refused
    january = period_for(entity, date(2024, 1, 1))
    with pytest.raises(BillingError):
        close_period(january, actor=actor, now=AFTER_JANUARY)
    assert not JournalEntry.objects.filter(kind__in=["accrual", "accrual_reversal"]).exists()


def test_ensure_open_periods_fills_the_months(entity):
    period_for(entity, date(2023, 11, 1))
    periods = ensure_open_periods(entity, date(2024, 2, 10))
    assert [p.start_date for p in periods] == [date(2023, 11, 1), date(2023, 12, 1), date(2024, 1, 1),
                                                date(2024, 2, 1)]
    assert AccountingPeriod.objects.filter(billing_entity=entity).count() == 4


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_entries_into_a_closed_period(entity, customer, actor):
    """Belt and braces: even written directly, an entry dated in a closed period is refused."""
    from django.db import IntegrityError, InternalError, transaction

    january = period_for(entity, date(2024, 1, 1))
    close_period(january, actor=actor, now=AFTER_JANUARY)
    with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
        JournalEntry.objects.create(
            billing_entity=entity, period=january, entry_date=date(2024, 1, 31), original_date=date(2024, 1, 31),
            kind="manual", currency="USD", source_key="manual:test", description="x", total=D(0),
            created_at=AFTER_JANUARY,
        )


def test_a_contract_not_fully_allocated_is_reported(entity, customer, actor):
    """A contract whose transaction price (100.00) is raised to 120.00 without a new obligation: 20.00 are
    allocated to nothing, and the close is refused with the contract named."""
    from revrec.models import RevenueContract

    invoice = january_invoice(customer, actor)
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=at(date(2024, 1, 15)))
    contract = RevenueContract.objects.get()
    RevenueContract.objects.filter(pk=contract.pk).update(transaction_price=D("120.00"))
    check = checks_by_key(period_for(entity, date(2024, 1, 1)), AFTER_JANUARY)["contracts_allocated"]
    assert not check.passed and check.blocking
    assert check.items == [f"{contract.reference}: transaction price 120.0000, allocated 100.0000 USD"]
