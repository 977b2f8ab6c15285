"""The ledger's guards in PostgreSQL (migration 0002), exercised by writing rows directly with the ORM or SQL,
past `post_entry`: an unbalanced entry or one whose stated total differs is refused at commit; posted entries,
lines and recognitions are never changed or deleted; nothing is dated in a closed period or outside its own;
a closed period is never reopened. And `post_entry` itself: an event of a closed period lands on the first
day of the next open one, and one source is posted once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from revrec.models import AccountingPeriod, JournalEntry, JournalLine, PostedSource, Recognition
from revrec.services.chart import Chart
from revrec.services.journal import AlreadyPosted, UnbalancedEntry, credit, debit, post_entry
from revrec.services.periods import period_for
from revrec.services.recognition import recognize_through
from tests.revrec.factories import NOW, buyer, posted_invoice, seller, term

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the guards are PostgreSQL triggers"),
]

D = Decimal


@pytest.fixture
def entity():
    return seller("USD")


@pytest.fixture
def chart(entity) -> Chart:
    return Chart.load(entity)


def raw_entry(entity, *, on: date, total: str, key: str, period: AccountingPeriod | None = None) -> JournalEntry:
    """An entry row written directly, as a buggy rule bypassing post_entry would."""
    return JournalEntry.objects.create(
        billing_entity=entity, period=period or period_for(entity, on), entry_date=on, original_date=on,
        kind=JournalEntry.Kind.MANUAL, currency="USD", source_key=key, description="direct write", total=D(total),
        created_at=NOW,
    )


def raw_line(entry: JournalEntry, chart: Chart, role: str, *, debit: str = "0", credit: str = "0") -> JournalLine:
    return JournalLine.objects.create(entry=entry, account=chart.account(role), debit=D(debit), credit=D(credit))


@contextmanager
def refused(pattern: str) -> Iterator[None]:
    """The block's transaction is refused by the database (at a statement or at its commit)."""
    with pytest.raises(IntegrityError, match=pattern), transaction.atomic():
        yield


def close(period: AccountingPeriod) -> None:
    AccountingPeriod.objects.filter(pk=period.pk).update(status="closed", closed_at=NOW, closed_by="tests")


def posted(chart: Chart, actor, *, key: str = "manual:1", on: date = date(2024, 1, 20), amount: str = "100.00"):
    with transaction.atomic():
        return post_entry(
            chart=chart, kind=JournalEntry.Kind.MANUAL, source_key=key, on=on, currency="USD",
            description="Cash sale", postings=[debit("cash", D(amount)), credit("revenue", D(amount))],
            actor=actor, now=NOW,
        )


# --- balance, checked at commit -----------------------------------------------------------------------------

def test_an_entry_with_one_sided_lines_is_refused_at_commit(entity, chart):
    # Two debits of 60.00 and 40.00 and no credit: debits 100.00 <> credits 0.
    with refused(r"is unbalanced: debits 100\.0000 <> credits 0\.0000"):
        entry = raw_entry(entity, on=date(2024, 1, 10), total="100.00", key="bad:1")
        raw_line(entry, chart, "receivable", debit="60.00")
        raw_line(entry, chart, "cash", debit="40.00")
        # Inside the transaction the rows are there: the trigger is deferred to the commit.
        assert JournalLine.objects.filter(entry=entry).count() == 2
    assert not JournalEntry.objects.exists()
    assert not JournalLine.objects.exists()


def test_an_entry_with_a_single_line_is_refused(entity, chart):
    with refused(r"has 1 line\(s\): an entry needs a debit and a credit"):
        entry = raw_entry(entity, on=date(2024, 1, 10), total="100.00", key="bad:2")
        raw_line(entry, chart, "receivable", debit="100.00")
    assert not JournalEntry.objects.exists()


def test_an_entry_without_lines_is_refused(entity):
    with refused(r"has 0 line\(s\)"):
        raw_entry(entity, on=date(2024, 1, 10), total="0", key="bad:3")
    assert not JournalEntry.objects.exists()


def test_an_entry_whose_stated_total_differs_is_refused(entity, chart):
    # Balanced lines (100.00 each side) but the entry says 90.00.
    with refused(r"states a total of 90\.0000 but its debits are 100\.0000"):
        entry = raw_entry(entity, on=date(2024, 1, 10), total="90.00", key="bad:4")
        raw_line(entry, chart, "cash", debit="100.00")
        raw_line(entry, chart, "revenue", credit="100.00")
    assert not JournalEntry.objects.exists()


def test_a_balanced_direct_entry_commits(entity, chart):
    """The guard is not over-eager: 70.00 + 30.00 debits against one 100.00 credit is fine."""
    with transaction.atomic():
        entry = raw_entry(entity, on=date(2024, 1, 10), total="100.00", key="ok:1")
        raw_line(entry, chart, "cash", debit="70.00")
        raw_line(entry, chart, "receivable", debit="30.00")
        raw_line(entry, chart, "revenue", credit="100.00")
    assert JournalEntry.objects.get().total == D("100.00")


def test_a_line_added_later_to_a_posted_entry_is_refused(entity, chart, actor):
    """Adding a (one-sided) line in a later transaction unbalances a posted entry: refused at that commit."""
    entry = posted(chart, actor)
    with refused("is unbalanced"):
        raw_line(entry, chart, "cash", debit="5.00")
    assert entry.lines.count() == 2


def test_post_entry_refuses_unbalanced_postings_before_writing(chart, actor):
    with pytest.raises(UnbalancedEntry, match=r"off by 0\.01"), transaction.atomic():
        post_entry(chart=chart, kind="manual", source_key="manual:x", on=date(2024, 1, 20), currency="USD",
                   description="Off by a cent", postings=[debit("cash", D("10.01")), credit("revenue", D("10"))],
                   actor=actor, now=NOW)
    assert not JournalEntry.objects.exists() and not PostedSource.objects.exists()


# --- immutability ----------------------------------------------------------------------------------------------

IMMUTABLE = "rows are posted and never changed or deleted: post a correcting entry"


def sql(statement: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_posted_entries_and_lines_are_never_updated_or_deleted(chart, actor):
    entry = posted(chart, actor)
    line = entry.lines.first()
    with pytest.raises(IntegrityError, match=f"revrec_journalentry {IMMUTABLE}"), transaction.atomic():
        JournalEntry.objects.filter(pk=entry.pk).update(description="edited")
    with pytest.raises(IntegrityError, match=f"revrec_journalline {IMMUTABLE}"), transaction.atomic():
        JournalLine.objects.filter(pk=line.pk).update(memo="edited")
    # Amounts changed on both sides at once (still balanced) are refused just the same.
    with pytest.raises(IntegrityError, match=f"revrec_journalline {IMMUTABLE}"), transaction.atomic():
        JournalLine.objects.filter(entry=entry, debit__gt=0).update(debit=D("1.00"))
    with pytest.raises(IntegrityError, match=f"revrec_journalline {IMMUTABLE}"):
        sql("DELETE FROM revrec_journalline WHERE id = %s", [line.pk])
    with pytest.raises(IntegrityError, match=f"revrec_journalentry {IMMUTABLE}"):
        # Django would stop at PROTECT; SQL reaches the trigger.
        sql("DELETE FROM revrec_journalentry WHERE id = %s", [entry.pk])
    entry.refresh_from_db()
    assert entry.description == "Cash sale"
    assert sorted((li.debit, li.credit) for li in entry.lines.all()) == [
        (D("0"), D("100.00")), (D("100.00"), D("0"))]


def test_recognitions_are_never_updated_or_deleted(actor):
    customer = buyer(seller("USD"))
    # January billed on the 15th: 14 days earned at posting (100 x 14/31 = 45.16), recognised on the 14th.
    posted_invoice(customer, [term("Jan", "100.00", date(2024, 1, 1), date(2024, 2, 1))], actor=actor)
    recognize_through(date(2024, 1, 20), actor=actor, now=NOW)
    row = Recognition.objects.order_by("recognized_on").first()
    assert row is not None and row.amount == D("45.16")
    with pytest.raises(IntegrityError, match=f"revrec_recognition {IMMUTABLE}"), transaction.atomic():
        Recognition.objects.filter(pk=row.pk).update(amount=D("1.00"))
    with pytest.raises(IntegrityError, match=f"revrec_recognition {IMMUTABLE}"), transaction.atomic():
        Recognition.objects.filter(pk=row.pk).delete()
    row.refresh_from_db()
    assert row.amount == D("45.16")


# --- periods ---------------------------------------------------------------------------------------------------

def test_no_entry_is_written_into_a_closed_period(entity, chart):
    january = period_for(entity, date(2024, 1, 1))
    close(january)
    with refused("accounting period starting 2024-01-01 is closed"):
        entry = raw_entry(entity, on=date(2024, 1, 20), total="10.00", key="late:1", period=january)
        raw_line(entry, chart, "cash", debit="10.00")
        raw_line(entry, chart, "revenue", credit="10.00")
    assert not JournalEntry.objects.exists()


@pytest.mark.parametrize("day", [date(2024, 2, 1), date(2023, 12, 31)])
def test_no_entry_is_dated_outside_its_period(entity, chart, day):
    january = period_for(entity, date(2024, 1, 1))  # [2024-01-01, 2024-02-01)
    with refused(f"journal entry dated {day} is outside its period " r"\(2024-01-01 to 2024-02-01\)"):
        raw_entry(entity, on=day, total="10.00", key="out:1", period=january)
    assert not JournalEntry.objects.exists()


def test_no_entry_is_written_into_another_entitys_period(entity, chart):
    other = seller("USD")
    theirs = period_for(other, date(2024, 1, 1))
    with pytest.raises(IntegrityError, match="is outside its period"), transaction.atomic():
        raw_entry(entity, on=date(2024, 1, 5), total="10.00", key="other:1", period=theirs)


def test_a_closed_period_is_never_reopened_changed_or_deleted(entity):
    january = period_for(entity, date(2024, 1, 1))
    close(january)
    with refused("accounting period starting 2024-01-01 is closed and never changes"):
        AccountingPeriod.objects.filter(pk=january.pk).update(status="open", closed_at=None)
    with pytest.raises(IntegrityError, match="is closed and never changes"), transaction.atomic():
        AccountingPeriod.objects.filter(pk=january.pk).update(close_checklist=["tampered"])
    with pytest.raises(IntegrityError, match="accounting periods are never deleted"):
        sql("DELETE FROM revrec_accountingperiod WHERE id = %s", [january.pk])
    january.refresh_from_db()
    assert (january.status, january.close_checklist) == ("closed", [])


def test_an_open_period_keeps_its_dates(entity):
    february = period_for(entity, date(2024, 2, 10))
    assert (february.start_date, february.end_date) == (date(2024, 2, 1), date(2024, 3, 1))
    with pytest.raises(IntegrityError, match="an accounting period keeps its dates"), transaction.atomic():
        AccountingPeriod.objects.filter(pk=february.pk).update(end_date=date(2024, 3, 2))


def test_an_event_of_a_closed_period_posts_on_the_first_day_of_the_next_open_one(entity, chart, actor):
    close(period_for(entity, date(2024, 1, 1)))
    close(period_for(entity, date(2024, 2, 1)))
    entry = posted(chart, actor, key="manual:late", on=date(2024, 1, 20))
    # January and February are closed: the correction lands on 1 March, remembering 20 January.
    assert (entry.entry_date, entry.original_date, entry.period.start_date) == (
        date(2024, 3, 1), date(2024, 1, 20), date(2024, 3, 1))
    assert entry.is_correction
    on_time = posted(chart, actor, key="manual:march", on=date(2024, 3, 9))
    assert (on_time.entry_date, on_time.original_date) == (date(2024, 3, 9), date(2024, 3, 9))
    assert not on_time.is_correction


def test_a_correction_is_never_backdated_before_its_event(entity, chart):
    """entry_date >= original_date is a CHECK constraint too."""
    with pytest.raises(IntegrityError, match="journal_never_backdated"), transaction.atomic():
        JournalEntry.objects.create(
            billing_entity=entity, period=period_for(entity, date(2024, 1, 1)), entry_date=date(2024, 1, 5),
            original_date=date(2024, 1, 6), kind="manual", currency="USD", source_key="back:1",
            description="x", total=D("1"), created_at=NOW)


# --- exactly once ----------------------------------------------------------------------------------------------

def test_the_same_source_twice_is_already_posted_and_writes_one_entry(chart, actor):
    first = posted(chart, actor, key="payment:7")
    with pytest.raises(AlreadyPosted, match="payment:7"):
        posted(chart, actor, key="payment:7", amount="55.00")
    assert list(JournalEntry.objects.values_list("pk", "total")) == [(first.pk, D("100.00"))]
    assert PostedSource.objects.get(source="payment:7").entry_id == first.pk


def test_a_claimed_row_cannot_be_posted_by_another_entry(chart, actor):
    """Two different entries claiming one money row: the second is refused whole (no entry, no claim)."""
    with transaction.atomic():
        post_entry(chart=chart, kind="manual", source_key="entry:a", claims=["allocation:9"], on=date(2024, 1, 20),
                   currency="USD", description="a", postings=[debit("cash", D(1)), credit("revenue", D(1))],
                   actor=actor, now=NOW)
    with pytest.raises(AlreadyPosted), transaction.atomic():
        post_entry(chart=chart, kind="manual", source_key="entry:b", claims=["allocation:9"],
                   on=date(2024, 1, 20), currency="USD", description="b",
                   postings=[debit("cash", D(1)), credit("revenue", D(1))], actor=actor, now=NOW)
    assert list(JournalEntry.objects.values_list("source_key", flat=True)) == ["entry:a"]
    assert not PostedSource.objects.filter(source="entry:b").exists()


def test_nothing_to_post_marks_the_source_posted_without_an_entry(chart, actor):
    with transaction.atomic():
        entry = post_entry(chart=chart, kind="manual", source_key="zero:1", on=date(2024, 1, 20), currency="USD",
                           description="nets to zero", postings=[debit("cash", D(5)), credit("cash", D(5))],
                           actor=actor, now=NOW)
    assert entry is None
    assert PostedSource.objects.get(source="zero:1").entry is None
    with pytest.raises(AlreadyPosted), transaction.atomic():
        post_entry(chart=chart, kind="manual", source_key="zero:1", on=date(2024, 1, 20), currency="USD",
                   description="again", postings=[debit("cash", D(5)), credit("revenue", D(5))], actor=actor,
                   now=NOW)
    assert not JournalEntry.objects.exists()


def test_post_entry_needs_a_transaction(chart, actor):
    with pytest.raises(RuntimeError, match="must run inside a transaction"):
        post_entry(chart=chart, kind="manual", source_key="nt:1", on=date(2024, 1, 20), currency="USD",
                   description="x", postings=[], actor=actor, now=NOW)

