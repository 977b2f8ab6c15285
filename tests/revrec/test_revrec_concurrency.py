"""Revenue recognition and the ledger under concurrency on PostgreSQL, with real threads each on its own
connection: one invoice posted by four workers at once, two recognition runs for the same day at once, and a
posting racing the close of its period. Whatever the interleaving, every event is posted exactly once,
nothing is recognised twice and nothing lands in a closed period."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import Count, Sum

from invoicing.models import Invoice
from revrec.models import AccountingPeriod, JournalEntry, PerformanceObligation, PostedSource, Recognition
from revrec.services.chart import Chart
from revrec.services.journal import AlreadyPosted, credit, debit, post_entry
from revrec.services.periods import period_for
from revrec.services.posting.invoices import post_invoice
from revrec.services.recognition import recognize_through
from tests.invoicing.test_concurrency import race
from tests.revrec.factories import (
    NOW,
    buyer,
    invoice,
    one_time,
    post,
    product,
    seller,
    term,
    trial_balance,
    unbalanced_entries,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
]

D = Decimal
JAN_31 = date(2024, 1, 31)
FEB_2 = datetime(2024, 2, 2, 9, tzinfo=UTC)


def assert_ledger_sound() -> None:
    assert unbalanced_entries() == []
    per_book: dict[tuple[int, str], Decimal] = {}
    for (entity_id, currency, _role), amount in trial_balance().items():
        per_book[(entity_id, currency)] = per_book.get((entity_id, currency), D(0)) + amount
    assert all(total == 0 for total in per_book.values()), per_book


def test_four_workers_posting_one_invoice_post_it_once(actor):
    customer = buyer(seller("USD"))
    inv = invoice(customer, [
        term("Subscription Jan", "100.00", date(2024, 1, 1), date(2024, 2, 1)),
        one_time("Set-up", "50.00", product=product("setup")),
    ], actor=actor)

    def work():  # type: ignore[no-untyped-def]
        mine = Invoice.objects.get(pk=inv.pk)
        return post_invoice(mine, chart=Chart.load(mine.billing_entity), actor=actor, now=NOW)

    results, errors = race([work] * 4)
    # One wins; the other three queue on the claim and find it taken.
    assert len(results) == 1 and results[0] is not None, (results, errors)
    assert len(errors) == 3 and all(isinstance(e, AlreadyPosted) for e in errors), errors
    assert JournalEntry.objects.filter(kind="invoice").count() == 1
    assert PerformanceObligation.objects.filter(invoice_line__invoice=inv).count() == 2
    assert PostedSource.objects.filter(source=f"invoice:{inv.pk}").count() == 1
    # As posted once: 150.00 billed; 45.16 earned by the 14th (100 x 14/31), the set-up's 50.00 on the 15th.
    assert sorted(JournalEntry.objects.values_list("kind", "total")) == [
        ("invoice", D("150.00")), ("recognition", D("45.16")), ("recognition", D("50.00"))]
    assert Recognition.objects.aggregate(s=Sum("amount"))["s"] == D("95.16")
    assert_ledger_sound()


def test_two_recognition_runs_for_one_day_recognise_each_obligation_once(actor):
    usd_seller, other_seller = seller("USD"), seller("USD")
    rows = [
        # (customer, line): posted on 15 January, recognised through 31 January.
        (buyer(usd_seller, "USD"), term("A", "100.00", date(2024, 1, 1), date(2024, 2, 1))),
        (buyer(usd_seller, "JPY"), term("B", "31000", date(2024, 1, 1), date(2024, 2, 1))),
        (buyer(other_seller, "USD"), term("C", "62.00", date(2024, 1, 10), date(2024, 2, 10))),
    ]
    for customer, line in rows:
        post(invoice(customer, [line], actor=actor), actor=actor)
    before = Recognition.objects.aggregate(s=Sum("amount"))["s"]
    # Earned at posting (through the 14th): A 100 x 14/31 = 45.16, B 31000 x 14/31 = 14000, C 62 x 5/31 = 10.00.
    assert before == D("45.16") + D("14000") + D("10.00")

    results, errors = race([lambda: recognize_through(JAN_31, actor=actor, now=FEB_2)] * 2)
    assert not errors, errors
    # Through the 31st: A 100.00 (54.84 more), B 31000 (17000 more), C 62 x 22/31 = 44.00 (34.00 more). The
    # second run waits for the first on the entity lock and then finds nothing due.
    totals: Counter[str] = Counter()
    for result in results:
        for currency, amount in result.amounts.items():
            totals[currency] += amount
    assert dict(totals) == {"USD": D("54.84") + D("34.00"), "JPY": D("17000")}
    run_entries = JournalEntry.objects.filter(kind="recognition", original_date=JAN_31)
    assert sorted((e.billing_entity_id, str(e.currency), e.total) for e in run_entries) == sorted([
        (usd_seller.pk, "USD", D("54.84")), (usd_seller.pk, "JPY", D("17000")), (other_seller.pk, "USD", D("34.00"))])
    assert not JournalEntry.objects.filter(source_key__contains="#").exists()
    twice = Recognition.objects.values("obligation", "recognized_on", "kind").annotate(n=Count("id")).filter(n__gt=1)
    assert not twice.exists()
    expected = {"A": D("100.00"), "B": D("31000"), "C": D("44.00")}
    for obligation in PerformanceObligation.objects.all():
        recognised = Recognition.objects.filter(obligation=obligation).aggregate(s=Sum("amount"))["s"]
        assert recognised == obligation.recognized_amount == expected[obligation.description], obligation
        assert obligation.recognized_through == JAN_31
    assert_ledger_sound()


def _close_by_orm(period: AccountingPeriod, hold: float) -> None:
    """What a close does to the row: lock it, (check), mark it closed, commit."""
    with transaction.atomic():
        locked = AccountingPeriod.objects.select_for_update().get(pk=period.pk)
        time.sleep(hold)  # the checklist's time: a posting arrives meanwhile
        locked.status, locked.closed_at, locked.closed_by = "closed", FEB_2, "tests"
        locked.save(update_fields=["status", "closed_at", "closed_by"])


def _post_cash_sale(chart: Chart, actor, key: str, delay: float) -> JournalEntry | None:  # type: ignore[no-untyped-def]
    time.sleep(delay)
    with transaction.atomic():
        return post_entry(chart=chart, kind=JournalEntry.Kind.MANUAL, source_key=key, on=date(2024, 1, 20),
                          currency="USD", description="Cash sale of 20 January",
                          postings=[debit("cash", D("10.00")), credit("revenue", D("10.00"))], actor=actor,
                          now=FEB_2)


def assert_before_close_or_in_next_period(entry: JournalEntry, january: AccountingPeriod) -> None:
    entry.refresh_from_db()
    january.refresh_from_db()
    assert january.status == "closed"
    assert entry.original_date == date(2024, 1, 20)
    if entry.period_id == january.pk:
        # Landed before the close: dated in January, and the close that followed saw it.
        assert entry.entry_date == date(2024, 1, 20)
    else:
        assert (entry.period.start_date, entry.entry_date) == (date(2024, 2, 1), date(2024, 2, 1))


# posting_period reads the period's status without a lock: a posting that queued behind the close's row lock
# (its INSERT trigger takes FOR SHARE) then meets the closed period and is refused instead of moving on to the
# next open period. Fix (revrec/services/periods.py, see the H5 report): read the status FOR SHARE.

def raise_first(errors: list[BaseException]) -> None:
    if errors:
        raise errors[0]


@pytest.mark.parametrize("posting_delay", [0.0, 0.2])
def test_a_posting_racing_a_period_close_never_lands_in_the_closed_period(actor, posting_delay):
    """The close holds January's row lock for 0.5 s. A posting dated 20 January arriving at once or while the
    lock is held (0.2 s: always, today) either lands in January before the close commits, or goes to
    1 February; it is never lost to an error and never written into the closed January."""
    entity = seller("USD")
    chart = Chart.load(entity)
    january = period_for(entity, date(2024, 1, 1))
    period_for(entity, date(2024, 2, 1))
    _, errors = race([
        lambda: _close_by_orm(january, 0.5),
        lambda: _post_cash_sale(chart, actor, "sale:1", posting_delay),
    ])
    raise_first(errors)
    entry = JournalEntry.objects.get(source_key="sale:1")
    assert_before_close_or_in_next_period(entry, january)
    assert_ledger_sound()


def test_postings_racing_close_period_never_land_in_the_closed_period(actor):
    """The real close (checklist, accrual, lock) racing three postings dated in January."""
    from revrec.services.close import close_period

    entity = seller("USD")
    chart = Chart.load(entity)
    january = period_for(entity, date(2024, 1, 1))
    jobs = [lambda: close_period(january, actor=actor, now=FEB_2)]
    jobs += [lambda i=i: _post_cash_sale(chart, actor, f"sale:{i}", 0.05 * i) for i in range(3)]
    _, errors = race(jobs)
    raise_first(errors)
    for entry in JournalEntry.objects.filter(source_key__startswith="sale:"):
        assert_before_close_or_in_next_period(entry, january)
    assert JournalEntry.objects.filter(source_key__startswith="sale:").count() == 3
    assert_ledger_sound()


def test_a_recognition_run_racing_a_close_posts_into_an_open_period(actor):
    """Recognition through 31 January and the close of January at once: the close waits for the run (entity
    lock) and then passes, or refuses because recognition is incomplete; the run's entry is never in a
    closed period."""
    from billing.errors import BillingError
    from revrec.services.close import close_period

    entity = seller("USD")
    customer = buyer(entity)
    post(invoice(customer, [term("Jan", "100.00", date(2024, 1, 1), date(2024, 2, 1))], actor=actor), actor=actor)
    january = period_for(entity, date(2024, 1, 1))
    _, errors = race([
        lambda: recognize_through(JAN_31, actor=actor, now=FEB_2),
        lambda: close_period(january, actor=actor, now=FEB_2),
    ])
    assert all(isinstance(e, BillingError) and "Recognition" in str(e) for e in errors), errors
    entry = JournalEntry.objects.get(kind="recognition", original_date=JAN_31)
    january.refresh_from_db()
    if january.status == "closed":
        assert entry.period_id == january.pk  # the run went first, the close saw it
    else:
        assert errors  # the close went first and refused: recognition was not complete
    assert entry.total == D("54.84")  # 100.00 - 45.16 earned at posting
    assert_ledger_sound()

