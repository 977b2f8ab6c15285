"""The unbilled revenue accrual of a period end, with hand-computed figures."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from djmoney.money import Money

from contracts.services.subscriptions import create_subscription
from invoicing.services.cycle import close_customer
from revrec.models import JournalEntry
from revrec.services.accruals import accrue_unbilled, compute_unbilled
from revrec.services.chart import Chart
from revrec.services.periods import period_for
from revrec.services.posting.invoices import post_invoice
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


def events(customer, meter, day: date, count: int, prefix: str) -> None:
    from usage.ingestion import ingest_events

    results = ingest_events(
        [{"transaction_id": f"{prefix}-{i}", "customer_external_id": customer.external_id, "meter_code": meter.code,
          "timestamp": at(day).isoformat()} for i in range(count)],
        now=at(day, 13),
    )
    assert all(r.status == "accepted" for r in results), results


@pytest.fixture
def entity():
    return BillingEntityFactory(timezone="UTC", invoice_grace_days=0)


def metered(entity, actor, *, start: date, base_fee: str = "0", timing: str = "advance", anchor: str = "calendar"):
    """A customer on a plan whose usage costs 0.10 a unit (plus a base fee when asked)."""
    customer = CustomerFactory(billing_entity=entity, timezone="UTC")
    version = PlanVersionFactory(plan=PlanFactory(), base_fee=Money(base_fee, "USD"), base_fee_timing=timing)
    meter = MeterFactory()
    ChargeFactory(plan_version=version, meter=meter, properties={"unit_price": "0.10"})
    create_subscription(customer=customer, plan_version=version, actor=actor, now=at(start), start_date=start,
                        billing_anchor=anchor)
    return customer, meter, version


def lines_of(entry: JournalEntry) -> set[tuple[str, Decimal, Decimal, int | None]]:
    return {(line.account.role, line.debit, line.credit, line.customer_id)
            for line in entry.lines.select_related("account")}


def test_usage_accrued_on_the_last_day_and_reversed_on_the_first(entity, actor):
    """1,000 units x 0.10 in January, not invoiced at the close: 100.00 accrued on 31 January, reversed on
    1 February. The 500 units of 2 February are February's and are left out."""
    customer, meter, version = metered(entity, actor, start=date(2024, 1, 1))
    events(customer, meter, date(2024, 1, 10), 1000, "jan")
    events(customer, meter, date(2024, 2, 2), 500, "feb")
    january = period_for(entity, date(2024, 1, 1))

    result = accrue_unbilled(entity, january, actor=actor, now=at(date(2024, 2, 3)))

    assert result.amounts == {"USD": D("100.00")}
    accrual = JournalEntry.objects.get(kind="accrual")
    reversal = JournalEntry.objects.get(kind="accrual_reversal")
    assert (accrual.entry_date, accrual.period, accrual.total) == (date(2024, 1, 31), january, D("100.00"))
    assert accrual.source_key == f"accrual:{entity.pk}:2024-01-01:USD"
    assert lines_of(accrual) == {("contract_asset", D("100.00"), D(0), customer.pk),
                                 ("revenue", D(0), D("100.00"), customer.pk)}
    assert (reversal.entry_date, reversal.period.start_date, reversal.total) == (
        date(2024, 2, 1), date(2024, 2, 1), D("100.00"))
    assert reversal.source_key == f"accrual_reversal:{entity.pk}:2024-01-01:USD"
    assert lines_of(reversal) == {("contract_asset", D(0), D("100.00"), customer.pk),
                                  ("revenue", D("100.00"), D(0), customer.pk)}
    revenue_line = accrual.lines.get(account__role="revenue")
    assert revenue_line.product_id == version.plan.product_id

    # Once per period, however often it runs.
    again = accrue_unbilled(entity, january, actor=actor, now=at(date(2024, 2, 4)))
    assert again.already_done and not again.entries
    assert JournalEntry.objects.filter(kind__in=["accrual", "accrual_reversal"]).count() == 2


def test_usage_on_a_posted_invoice_is_not_accrued(entity, actor):
    """The close of 1 February bills January's 1,000 units (100.00) and the invoice is posted before the period
    close: its usage is recognised on 31 January already, so nothing is accrued."""
    customer, meter, _ = metered(entity, actor, start=date(2024, 1, 1))
    events(customer, meter, date(2024, 1, 10), 1000, "jan")
    [invoice] = close_customer(customer, now=at(date(2024, 2, 1)), actor=actor)
    assert invoice.total == D("100.00")
    january = period_for(entity, date(2024, 1, 1))
    # Finalized but not posted yet: still accrued.
    assert compute_unbilled(entity, january) == {"USD": {(customer.pk, invoice.lines.get().product_id): D("100.00")}}
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=at(date(2024, 2, 1)))
    assert compute_unbilled(entity, january) == {}
    result = accrue_unbilled(entity, january, actor=actor, now=at(date(2024, 2, 3)))
    assert result.amounts == {} and not result.entries
    assert not JournalEntry.objects.filter(kind="accrual").exists()


def test_period_across_the_month_end_accrues_the_delivered_days(entity, actor):
    """Billed on the 15th, 31.00 a month in arrears: 15 January - 15 February has 31 days, 17 of them in
    January: 31.00 x 17/31 = 17.00, plus 300 units x 0.10 = 30.00 used on 20 January (the 200 units of
    5 February are not January's). Accrued: 47.00."""
    customer, meter, _ = metered(entity, actor, start=date(2024, 1, 15), base_fee="31.00", timing="arrears",
                                 anchor="anniversary")
    events(customer, meter, date(2024, 1, 20), 300, "jan")
    events(customer, meter, date(2024, 2, 5), 200, "feb")
    january = period_for(entity, date(2024, 1, 1))
    result = accrue_unbilled(entity, january, actor=actor, now=at(date(2024, 2, 6)))
    assert result.amounts == {"USD": D("47.00")}
    accrual = JournalEntry.objects.get(kind="accrual")
    assert accrual.total == D("47.00")
    assert lines_of(accrual) == {("contract_asset", D("47.00"), D(0), customer.pk),
                                 ("revenue", D(0), D("47.00"), customer.pk)}
