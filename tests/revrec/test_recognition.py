"""The daily recognition run: running totals across month ends and a leap day, one entry per entity and
currency, contract-asset netting, repeat and catch-up, the ORM fallback, delivery, usage, the run record and
the beat task."""

from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import count

import pytest

from billing.errors import BillingError, InvalidTransition
from invoicing.models import InvoiceLine
from invoicing.services.documents import ManualLine, create_one_off_invoice, finalize_invoice
from revrec.models import (
    JournalEntry,
    JournalLine,
    PerformanceObligation,
    ProductRevenueRule,
    Recognition,
    RecognitionRun,
    RevenueContract,
)
from revrec.services import recognition
from revrec.services.chart import Chart
from revrec.services.delivery import mark_delivered
from revrec.services.posting.invoices import post_invoice
from revrec.services.recognition import recognize_through, run_daily_recognition, run_recognition
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory

D = Decimal
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
REFERENCES = count(1)


def obligation(customer, price: str, start: date, end: date, *, billed: str | None = None, product=None,
               currency: str = "USD") -> PerformanceObligation:
    """A revenue contract with one ratable obligation, `billed` already billed (default: the price)."""
    contract = RevenueContract.objects.create(
        billing_entity=customer.billing_entity, customer=customer, reference=f"RC-T{next(REFERENCES)}",
        currency=currency, transaction_price=D(price), billed=D(billed if billed is not None else price),
        created_at=NOW,
    )
    return PerformanceObligation.objects.create(
        revenue_contract=contract, product=product, description="Subscription", kind="subscription",
        pattern="ratable", service_start=start, service_end=end, billed_amount=D(price), billed_on=start,
        ssp=D(price), allocated_price=D(price), created_at=NOW,
    )


def lines_of(entry: JournalEntry) -> set[tuple[str, Decimal, Decimal]]:
    return {(line.account.role, line.debit, line.credit) for line in entry.lines.select_related("account")}


@pytest.fixture
def customer():
    entity = BillingEntityFactory(default_currency="USD", timezone="UTC")
    return CustomerFactory(billing_entity=entity, currency="USD")


@pytest.mark.django_db(transaction=True)
def test_leap_year_schedule_month_by_month(customer, actor) -> None:
    """1,000.00 over 2024-01-15 .. 2024-04-15 = 91 days (Feb 2024 has 29), billed up front, run at each month
    end: January round(1000 x 17/91) = 186.81; February round(1000 x 46/91) - 186.81 = 505.49 - 186.81 = 318.68;
    March round(1000 x 77/91) - 505.49 = 846.15 - 505.49 = 340.66; April 1000 - 846.15 = 153.85. Total 1,000.00.
    Each run is one balanced entry: revenue credited, deferred revenue debited."""
    po = obligation(customer, "1000.00", date(2024, 1, 15), date(2024, 4, 15))
    amounts = []
    for day in (date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)):
        run = run_recognition(day, actor=actor, now=NOW)
        assert run.status == RecognitionRun.Status.COMPLETED and run.entries == 1 and run.obligations == 1
        amounts.append(D(run.amounts["USD"]))
    assert amounts == [D("186.81"), D("318.68"), D("340.66"), D("153.85")]
    assert sum(amounts) == D("1000.00")
    po.refresh_from_db()
    assert (po.recognized_amount, po.status, po.recognized_through) == (D("1000.00"), "complete", date(2024, 4, 30))
    february = JournalEntry.objects.get(entry_date=date(2024, 2, 29))
    assert lines_of(february) == {("revenue", D(0), D("318.68")), ("deferred_revenue", D("318.68"), D(0))}
    assert Recognition.objects.filter(obligation=po).count() == 4
    contract = po.revenue_contract
    contract.refresh_from_db()
    assert contract.recognized == D("1000.00")


@pytest.mark.django_db
@pytest.mark.parametrize("bulk", [True, False], ids=["copy", "orm"])
def test_one_entry_nets_deferred_and_contract_asset_per_contract(customer, actor, monkeypatch, bulk) -> None:
    """Two products, three contracts, one day (2024-01-10, the 10th of 31 days):
    A 310.00 Jan, billed: round(310 x 10/31) = 100.00 -> deferred revenue debited 100.00.
    B 620.00 Jan, not billed: 200.00 -> contract asset debited 200.00.
    C 930.00 Jan, billed 250.00: 300.00 recognised, 250.00 out of deferred, 50.00 into contract asset.
    One entry: revenue product P 100 + 300 = 400.00, default product 200.00; Dr deferred 350.00, Dr asset 250.00.
    The PostgreSQL path (COPY and set-based SQL) and the ORM path write the same."""
    monkeypatch.setattr(recognition, "use_bulk_sql", lambda: bulk)
    product = ProductFactory(code="p")
    jan = (date(2024, 1, 1), date(2024, 2, 1))
    a = obligation(customer, "310.00", *jan, product=product)
    b = obligation(customer, "620.00", *jan, billed="0")
    c = obligation(customer, "930.00", *jan, billed="250.00", product=product)
    result = recognize_through(date(2024, 1, 10), actor=actor, now=NOW)
    assert result.amounts == {"USD": D("600.00")} and result.obligations == 3 and len(result.entries) == 1
    entry = result.entries[0]
    assert entry.total == D("600.00")
    rows = [(line.account.role, line.product_id, line.debit, line.credit)
            for line in JournalLine.objects.filter(entry=entry).select_related("account")]
    assert sorted(rows, key=str) == sorted([
        ("revenue", product.pk, D(0), D("400.00")), ("revenue", None, D(0), D("200.00")),
        ("deferred_revenue", None, D("350.00"), D(0)), ("contract_asset", None, D("250.00"), D(0)),
    ], key=str)
    assert {r.obligation_id: r.amount for r in Recognition.objects.all()} == {
        a.pk: D("100.00"), b.pk: D("200.00"), c.pk: D("300.00")}
    assert [RevenueContract.objects.get(pk=o.revenue_contract_id).recognized for o in (a, b, c)] == [
        D("100.00"), D("200.00"), D("300.00")]
    # The same day again: nothing twice.
    again = recognize_through(date(2024, 1, 10), actor=actor, now=NOW)
    assert again.obligations == 0 and again.entries == []
    assert Recognition.objects.count() == 3


@pytest.mark.django_db
def test_a_late_obligation_catches_up_and_a_second_run_the_same_day_numbers_its_entry(customer, actor) -> None:
    """Run through 2024-01-10, then an obligation posted late (310.00 for January) appears: a second run the
    same day recognises its 10 days at once (100.00) under the key ...#2; the next day only the 11th (10.00
    each)."""
    obligation(customer, "310.00", date(2024, 1, 1), date(2024, 2, 1))
    recognize_through(date(2024, 1, 10), actor=actor, now=NOW)
    late = obligation(customer, "310.00", date(2024, 1, 1), date(2024, 2, 1))
    second = recognize_through(date(2024, 1, 10), actor=actor, now=NOW)
    assert second.amounts == {"USD": D("100.00")} and second.obligations == 1
    assert second.entries[0].source_key.endswith("#2")
    nxt = recognize_through(date(2024, 1, 11), actor=actor, now=NOW)
    assert nxt.amounts == {"USD": D("20.00")}
    late.refresh_from_db()
    assert late.recognized_amount == D("110.00")


@pytest.mark.django_db
def test_currencies_get_their_own_entries(customer, actor) -> None:
    """USD 310.00 and JPY 31,000 over January: through the 1st, 10.00 USD and 1,000 JPY, one entry each."""
    obligation(customer, "310.00", date(2024, 1, 1), date(2024, 2, 1))
    obligation(customer, "31000", date(2024, 1, 1), date(2024, 2, 1), currency="JPY")
    result = recognize_through(date(2024, 1, 1), actor=actor, now=NOW)
    assert result.amounts == {"JPY": D("1000"), "USD": D("10.00")}
    assert sorted(e.currency for e in result.entries) == ["JPY", "USD"]


@pytest.mark.django_db
def test_failed_run_is_recorded(customer, actor, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(recognition, "recognize_through", broken)
    with pytest.raises(RuntimeError):
        run_recognition(date(2024, 1, 1), actor=actor, now=NOW)
    run = RecognitionRun.objects.get()
    assert run.status == "failed" and "disk full" in run.error and run.triggered_by == actor.label


@pytest.mark.django_db
def test_daily_run_is_through_yesterday_in_each_entity_timezone(actor) -> None:
    """At 2024-01-11 03:00 UTC it is already the 11th in UTC (run through the 10th) but still the 10th in
    New York (run through the 9th): 310.00 over January -> 100.00 and 90.00."""
    utc = CustomerFactory(billing_entity=BillingEntityFactory(timezone="UTC"), currency="USD")
    new_york = CustomerFactory(billing_entity=BillingEntityFactory(timezone="America/New_York"), currency="USD")
    obligation(utc, "310.00", date(2024, 1, 1), date(2024, 2, 1))
    obligation(new_york, "310.00", date(2024, 1, 1), date(2024, 2, 1))
    runs = run_daily_recognition(now=datetime(2024, 1, 11, 3, 0, tzinfo=UTC), actor=actor)
    assert [(r.through_date, r.amounts) for r in runs] == [
        (date(2024, 1, 10), {"USD": "100.00"}), (date(2024, 1, 9), {"USD": "90.00"})]


@pytest.mark.django_db
def test_beat_tasks_run(customer, actor, monkeypatch) -> None:
    from revrec import tasks

    obligation(customer, "310.00", date(2024, 1, 1), date(2024, 2, 1))
    monkeypatch.setattr(tasks.timezone, "now", lambda: datetime(2024, 1, 2, 3, 0, tzinfo=UTC))
    run_ids = tasks.recognize_revenue_daily_task.run()
    assert RecognitionRun.objects.get(pk=run_ids[0]).amounts == {"USD": "10.00"}
    assert tasks.recognize_revenue_daily_task.run() != run_ids  # a new run, which finds nothing left
    assert Recognition.objects.count() == 1
    tasks.post_pending_documents_task.run()


@pytest.mark.django_db(transaction=True)
def test_point_in_time_on_delivery(actor, now) -> None:
    """An implementation (2,000.00) whose product is recognised on delivery waits; delivered on 2024-01-20,
    the run through the 20th recognises 2,000.00 out of deferred revenue; future days and repeats refused."""
    entity = BillingEntityFactory(default_currency="USD", timezone="UTC")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    implementation = ProductFactory(code="impl")
    ProductRevenueRule.objects.create(product=implementation, one_time="on_delivery")
    invoice = create_one_off_invoice(customer, [ManualLine("Implementation", D("2000.00"), product=implementation)],
                                     actor=actor, now=now, finalize=True)
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=now)
    po = PerformanceObligation.objects.get()
    assert po.status == "awaiting_delivery"
    assert recognize_through(date(2024, 1, 31), actor=actor, now=now).obligations == 0
    later = datetime(2024, 1, 25, tzinfo=UTC)
    with pytest.raises(BillingError):
        mark_delivered(po, delivered_on=date(2024, 1, 26), actor=actor, now=later)
    mark_delivered(po, delivered_on=date(2024, 1, 20), actor=actor, now=later)
    with pytest.raises(InvalidTransition):
        mark_delivered(po, delivered_on=date(2024, 1, 20), actor=actor, now=later)
    assert recognize_through(date(2024, 1, 19), actor=actor, now=later).obligations == 0
    result = recognize_through(date(2024, 1, 20), actor=actor, now=later)
    assert result.amounts == {"USD": D("2000.00")}
    assert lines_of(result.entries[0]) == {("revenue", D(0), D("2000.00")), ("deferred_revenue", D("2000.00"), D(0))}
    po.refresh_from_db()
    assert po.status == "complete"


@pytest.mark.django_db(transaction=True)
def test_usage_is_recognised_as_invoiced(actor, now) -> None:
    """A usage line of 250.00 (service period 1-15 January, invoiced on the 15th) is revenue on its last
    service day, in the invoice posting; the daily run has nothing left to do for it."""
    entity = BillingEntityFactory(default_currency="USD", timezone="UTC")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    invoice = create_one_off_invoice(customer, [
        ManualLine("API calls", D("250.00"), period_start=date(2024, 1, 1), period_end=date(2024, 1, 15))],
        actor=actor, now=now, finalize=False)
    InvoiceLine.objects.filter(invoice=invoice).update(kind=InvoiceLine.Kind.USAGE)
    invoice = finalize_invoice(invoice, actor=actor, now=now)
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=now)
    po = PerformanceObligation.objects.get()
    assert (po.pattern, po.status, po.recognized_amount) == ("as_invoiced", "complete", D("250.00"))
    assert Recognition.objects.get().recognized_on == date(2024, 1, 14)
    assert recognize_through(date(2024, 1, 31), actor=actor, now=now).obligations == 0
