"""Monthly partitions of the event table on PostgreSQL: created ahead, idempotent, and rows that landed in
the DEFAULT partition moved into a month's partition when it is created, with nothing lost or changed."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Sum

from tests.usage.conftest import event
from usage import partitions
from usage.ingestion import ingest_events
from usage.models import UsageEvent, UsageHourlyRollup
from usage.tasks import ensure_event_partitions

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="partitions exist on PostgreSQL only"),
]


def rows_in(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


def bounds(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s", [name])
        return cursor.fetchone()[0]


def test_months_are_created_once_with_utc_bounds():
    created = partitions.ensure_partitions(date(2031, 11, 17), 3)
    assert created == ["usage_usageevent_p203111", "usage_usageevent_p203112", "usage_usageevent_p203201"]
    assert bounds("usage_usageevent_p203112") == (
        "FOR VALUES FROM ('2031-12-01 00:00:00+00') TO ('2032-01-01 00:00:00+00')"
    )
    assert partitions.ensure_partitions(date(2031, 11, 1), 3) == []
    assert set(created) <= partitions.existing_partitions()


def test_events_without_a_partition_land_in_default_and_move_when_their_month_is_created(metering):
    later = datetime(2031, 6, 1, tzinfo=UTC)  # "now" for this test: May 2031 has no partition yet
    batch = [event(f"m{i}", meter="tokens", timestamp=(datetime(2031, 5, 1, tzinfo=UTC) + timedelta(hours=7 * i))
                   .isoformat(), properties={"tokens": i}) for i in range(100)]
    batch.append(event("june", timestamp="2031-06-01T00:00:00Z"))
    ingest_events(batch, source="api", now=later)
    assert rows_in("usage_usageevent_default") == 101
    before = sorted(UsageEvent.objects.values_list("id", "transaction_id", "timestamp", "value"))

    assert partitions.ensure_partitions(date(2031, 5, 1), 1) == ["usage_usageevent_p203105"]
    assert rows_in("usage_usageevent_p203105") == 100
    assert rows_in("usage_usageevent_default") == 1  # June's event stays where it is
    assert sorted(UsageEvent.objects.values_list("id", "transaction_id", "timestamp", "value")) == before
    assert UsageHourlyRollup.objects.aggregate(s=Sum("value_sum"))["s"] == sum(range(100))
    # New events of that month now go to its partition.
    ingest_events([event("m-late", timestamp="2031-05-31T23:59:59Z")], source="api", now=later)
    assert rows_in("usage_usageevent_p203105") == 101
    assert partitions.default_partition_rows() == 1


def test_the_beat_task_keeps_the_current_month_and_three_ahead():
    ensure_event_partitions()
    first = partitions.month_start(datetime.now(UTC).date())
    expected = {partitions.partition_for(partitions.add_months(first, n)).name for n in range(4)}
    assert expected <= partitions.existing_partitions()
    assert ensure_event_partitions() == []


def test_two_months_with_stray_rows_in_one_transaction(metering):
    later = datetime(2032, 9, 1, tzinfo=UTC)
    ingest_events(
        [event("jul", timestamp="2032-07-10T00:00:00Z"), event("aug", timestamp="2032-08-10T00:00:00Z")],
        source="api", now=later,
    )
    assert partitions.ensure_partitions(date(2032, 7, 1), 2) == ["usage_usageevent_p203207", "usage_usageevent_p203208"]
    assert rows_in("usage_usageevent_p203207") == rows_in("usage_usageevent_p203208") == 1
    assert UsageEvent.objects.count() == 2
