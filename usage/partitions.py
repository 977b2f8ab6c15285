"""Monthly partitions of the event table (PostgreSQL only; SQLite keeps one plain table).

`usage_usageevent` is partitioned by RANGE of its event time into `usage_usageevent_pYYYYMM` tables plus a
DEFAULT partition that catches any event outside them (late or far-future data), so an insert never fails
for want of a partition. The beat task `usage.tasks.ensure_event_partitions` creates the current month
and three ahead; the CSV backfill creates the months it meets.

Creating a month whose events already sit in the DEFAULT partition (PostgreSQL refuses to create the
partition while such rows exist) moves them, in ONE transaction that holds an exclusive lock on the
event table: the rows are deleted from DEFAULT into a temporary table, the partition is created, and the
rows are inserted into it, ids and all. Either everything commits or nothing does, so no event is lost
or duplicated, and ingestion simply waits for the lock. This relocation is physical only: the events
themselves (ids, values, times) are unchanged, which keeps the "never updated or deleted" rule.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db import connection, transaction

PARENT = "usage_usageevent"
DEFAULT_PARTITION = f"{PARENT}_default"


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime
    end: datetime


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def partition_for(month: date) -> Partition:
    first = month_start(month)
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    following = add_months(first, 1)
    end = datetime(following.year, following.month, 1, tzinfo=UTC)
    return Partition(f"{PARENT}_p{first.year:04d}{first.month:02d}", start, end)


def is_partitioned() -> bool:
    return connection.vendor == "postgresql"


def existing_partitions() -> set[str]:
    if not is_partitioned():
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname FROM pg_inherits
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            WHERE parent.relname = %s
            """,
            [PARENT],
        )
        return {row[0] for row in cursor.fetchall()}


def ensure_partitions(start_month: date, months: int) -> list[str]:
    """Create the monthly partitions from `start_month` for `months` months; returns those created.

    Idempotent: existing partitions are left alone. Safe to run concurrently with ingestion and with itself
    (the lock serialises creators; each re-checks under it).
    """
    if not is_partitioned() or months <= 0:
        return []
    wanted = [partition_for(add_months(month_start(start_month), offset)) for offset in range(months)]
    present = existing_partitions()
    created = []
    for partition in wanted:
        if partition.name in present:
            continue
        if _create_partition(partition):
            created.append(partition.name)
    return created


_MOVE_FROM_DEFAULT = f"""
WITH moved AS (
    DELETE FROM {DEFAULT_PARTITION} WHERE "timestamp" >= %s AND "timestamp" < %s RETURNING *
)
INSERT INTO usage_partition_move SELECT * FROM moved
"""  # noqa: S608 - table names are constants


def _create_partition(partition: Partition) -> bool:
    with transaction.atomic(), connection.cursor() as cursor:
        # SHARE ROW EXCLUSIVE blocks inserts (and other creators) but not readers while we check; creating
        # the partition then takes ACCESS EXCLUSIVE for the rest of this short transaction.
        cursor.execute(f"LOCK TABLE {PARENT} IN SHARE ROW EXCLUSIVE MODE")
        if partition.name in existing_partitions():
            return False  # another process created it while we waited for the lock
        cursor.execute(
            f'SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE "timestamp" >= %s AND "timestamp" < %s)',  # noqa: S608
            [partition.start, partition.end],
        )
        has_stray_rows = cursor.fetchone()[0]
        if has_stray_rows:
            # Dropped at commit; dropped first too, for a caller that creates two months in one transaction.
            cursor.execute("DROP TABLE IF EXISTS pg_temp.usage_partition_move")
            cursor.execute(f"CREATE TEMPORARY TABLE usage_partition_move (LIKE {PARENT}) ON COMMIT DROP")
            cursor.execute(_MOVE_FROM_DEFAULT, [partition.start, partition.end])
        cursor.execute(
            f"CREATE TABLE {partition.name} PARTITION OF {PARENT} FOR VALUES FROM (%s) TO (%s)",
            [partition.start, partition.end],
        )
        if has_stray_rows:
            cursor.execute(f"INSERT INTO {partition.name} SELECT * FROM usage_partition_move")  # noqa: S608
    return True


def ensure_partitions_for(days: set[date]) -> list[str]:
    """The partitions of the months these dates fall in (used by the CSV backfill for historical months)."""
    created: list[str] = []
    for month in sorted({month_start(day) for day in days}):
        created.extend(ensure_partitions(month, 1))
    return created


def default_partition_rows() -> int:
    """How many events sit in the DEFAULT partition (0 on SQLite): a non-zero count is worth a look."""
    if not is_partitioned():
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}")  # noqa: S608
        return cursor.fetchone()[0]
