"""usage.selectors on PostgreSQL: every SQL path (rollups + raw edges, raw aggregates, latest, weighted sums)
gives exactly what the pure reference (usage.aggregation) gives over the same stored events."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from tests.factories import CustomerFactory, MeterFactory
from usage import aggregation, selectors
from usage.aggregation import Event, Spec
from usage.models import Meter, UsageEvent, UsageHourlyRollup

pytestmark = [
    pytest.mark.django_db,
    # The SQL paths under test are PostgreSQL's; the SQLite default is covered by test_selectors_sqlite.py.
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL paths"),
]

D = Decimal
KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")


def rebuild_rollups() -> None:
    """The rollups as ingestion keeps them, recomputed from the stored events (tests insert rows directly)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {UsageHourlyRollup._meta.db_table}")
        cursor.execute(
            f"""
            INSERT INTO {UsageHourlyRollup._meta.db_table}
                (customer_id, meter_id, hour, event_count, value_sum, value_max,
                 latest_timestamp, latest_value, latest_event_id)
            SELECT customer_id, meter_id, date_trunc('hour', "timestamp", 'UTC'), count(*),
                   coalesce(sum(value), 0), max(value),
                   (array_agg("timestamp" ORDER BY "timestamp" DESC, id DESC))[1],
                   (array_agg(value ORDER BY "timestamp" DESC, id DESC))[1],
                   (array_agg(id ORDER BY "timestamp" DESC, id DESC))[1]
            FROM {UsageEvent._meta.db_table} GROUP BY 1, 2, 3
            """
        )


def store(customer, meter, rows) -> list[Event]:
    """Insert (timestamp, value, properties) rows as events and refresh the rollups; returns them as the
    pure functions see them."""
    now = datetime(2024, 6, 1, tzinfo=UTC)
    created = UsageEvent.objects.bulk_create(
        UsageEvent(
            transaction_id=f"tx-{customer.pk}-{meter.pk}-{index}-{random.random()}",
            customer=customer,
            meter=meter,
            timestamp=timestamp,
            value=None if value is None else D(str(value)),
            properties=properties,
            received_at=now,
        )
        for index, (timestamp, value, properties) in enumerate(rows)
    )
    rebuild_rollups()
    return [Event(timestamp=e.timestamp, value=e.value, properties=e.properties, id=e.pk) for e in created]


def pure(events, spec, start, end):
    """The reference, with the selectors' presentation (trailing zeros dropped)."""
    return aggregation.aggregate(events, spec, start, end)


def python_path(customer, meter, spec, start, end):
    """The path the SQLite default takes (events read, pure functions run), exercised here on PostgreSQL."""
    return selectors._finish(spec, selectors._in_python(customer.pk, meter.pk, spec, start, end))


# --- hand-computed -------------------------------------------------------------------------------------------


def test_count_over_a_month_in_india_reads_whole_hours_and_half_hour_edges():
    customer = CustomerFactory(timezone="Asia/Kolkata")
    meter = MeterFactory(aggregation="count")
    start = datetime(2024, 3, 1, tzinfo=KOLKATA)  # 2024-02-29 18:30 UTC
    end = datetime(2024, 4, 1, tzinfo=KOLKATA)  # 2024-03-31 18:30 UTC
    store(
        customer,
        meter,
        [
            (datetime(2024, 2, 29, 18, 29, 59, 999999, tzinfo=UTC), None, {}),  # February in India: out
            (datetime(2024, 2, 29, 18, 30, tzinfo=UTC), None, {}),  # the first instant: in (edge)
            (datetime(2024, 2, 29, 18, 59, tzinfo=UTC), None, {}),  # edge
            (datetime(2024, 2, 29, 19, 0, tzinfo=UTC), None, {}),  # first whole hour
            (datetime(2024, 3, 15, 12, 0, tzinfo=UTC), None, {}),
            (datetime(2024, 3, 31, 18, 0, tzinfo=UTC), None, {}),  # last edge
            (datetime(2024, 3, 31, 18, 29, 59, tzinfo=UTC), None, {}),  # last edge
            (datetime(2024, 3, 31, 18, 30, tzinfo=UTC), None, {}),  # April in India: out
        ],
    )
    assert selectors.meter_quantity(customer, meter, start, end) == 6
    # Rolled up by UTC hour, the two edge hours hold events on both sides of the range.
    assert (
        UsageHourlyRollup.objects.get(
            customer=customer, meter=meter, hour=datetime(2024, 2, 29, 18, tzinfo=UTC)
        ).event_count
        == 3
    )


def test_whole_hours_come_from_the_rollups_and_edges_from_the_events():
    customer = CustomerFactory()
    meter = MeterFactory(aggregation="sum", field_name="tokens")
    store(
        customer,
        meter,
        [
            (datetime(2024, 3, 1, 10, 15, tzinfo=UTC), 5, {}),
            (datetime(2024, 3, 1, 11, 15, tzinfo=UTC), 7, {}),
            (datetime(2024, 3, 1, 12, 15, tzinfo=UTC), 11, {}),
        ],
    )
    start, end = datetime(2024, 3, 1, 10, 0, tzinfo=UTC), datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    assert selectors.meter_quantity(customer, meter, start, end) == 23
    # Tamper with the rollup of a whole hour (10:00) and of an edge hour (12:00): only the first is read.
    UsageHourlyRollup.objects.filter(customer=customer, hour=datetime(2024, 3, 1, 10, tzinfo=UTC)).update(value_sum=105)
    UsageHourlyRollup.objects.filter(customer=customer, hour=datetime(2024, 3, 1, 12, tzinfo=UTC)).update(value_sum=999)
    assert selectors.meter_quantity(customer, meter, start, end) == 123
    # A filter needs the events' properties: the raw events answer, untouched by the rollups.
    assert selectors.meter_quantity(customer, meter, start, end, filters={"missing": ["x"]}) == 0


def test_other_customers_and_meters_are_not_counted():
    customer, other = CustomerFactory(), CustomerFactory()
    meter = MeterFactory(aggregation="sum", field_name="gb")
    other_meter = MeterFactory(aggregation="sum", field_name="gb")
    moment = datetime(2024, 3, 5, tzinfo=UTC)
    store(customer, meter, [(moment, 1, {})])
    store(other, meter, [(moment, 10, {})])
    store(customer, other_meter, [(moment, 100, {})])
    march = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    assert selectors.meter_quantity(customer, meter, *march) == 1
    assert selectors.meter_quantity(other, meter, *march) == 10
    assert selectors.meter_quantity(customer, other_meter, *march) == 100


def test_weighted_sum_across_a_boundary_carries_the_level_from_the_rollups():
    customer = CustomerFactory(timezone="America/New_York")
    meter = MeterFactory(aggregation="weighted_sum", field_name="gb", carries_over=True)
    store(
        customer,
        meter,
        [
            (datetime(2024, 1, 20, 9, 30, tzinfo=UTC), 10, {}),  # whole hours before March (rollups)
            (datetime(2024, 3, 1, 4, 45, tzinfo=UTC), 5, {}),  # before March 1st 00:00 in New York: carried raw
            (datetime(2024, 3, 16, 4, tzinfo=UTC), 15, {}),  # March 16 00:00 EDT: 15 days into March
        ],
    )
    start, end = datetime(2024, 3, 1, tzinfo=NEW_YORK), datetime(2024, 4, 1, tzinfo=NEW_YORK)
    # 31 days minus the DST hour: 743 hours. 15 GB for 15 x 24 - 1 = 359 hours, 30 GB for 384 hours:
    # (15 x 359 + 30 x 384) / 743 = 16905 / 743 = 22.752355316285|329...
    assert selectors.meter_quantity(customer, meter, start, end) == D("22.752355316285")


def test_latest_prefers_the_last_received_at_the_same_instant_and_carries_over():
    customer = CustomerFactory()
    meter = MeterFactory(aggregation="latest", field_name="seats", carries_over=True)
    moment = datetime(2024, 2, 10, 8, tzinfo=UTC)
    store(customer, meter, [(moment, 4, {}), (moment, 9, {}), (datetime(2024, 2, 1, tzinfo=UTC), 30, {})])
    february = (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    march = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    assert selectors.meter_quantity(customer, meter, *february) == 9
    assert selectors.meter_quantity(customer, meter, *march) == 9  # nothing in March: carried
    Meter.objects.filter(pk=meter.pk).update(carries_over=False)
    meter.refresh_from_db()
    assert selectors.meter_quantity(customer, meter, *march) == 0


def test_group_by_and_filters_with_rounding():
    customer = CustomerFactory()
    meter = MeterFactory(
        aggregation="sum", field_name="tokens", group_by=["region"], rounding="up", rounding_precision=0
    )
    store(
        customer,
        meter,
        [
            (datetime(2024, 3, 2, tzinfo=UTC), "1.2", {"region": "eu", "model": "large"}),
            (datetime(2024, 3, 3, tzinfo=UTC), "0.3", {"region": "eu", "model": "small"}),
            (datetime(2024, 3, 4, tzinfo=UTC), "2", {"region": "us", "model": "large"}),
            (datetime(2024, 3, 5, tzinfo=UTC), "0.5", {"model": "large"}),
        ],
    )
    march = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    assert selectors.meter_quantities(customer, meter, *march) == {("eu",): 2, ("us",): 2, (None,): 1}
    assert selectors.meter_quantities(customer, meter, *march, filters={"model": ["large"]}) == {
        ("eu",): 2,
        ("us",): 2,
        (None,): 1,
    }
    assert selectors.meter_quantities(customer, meter, *march, filters={"model": ["small"]}, group_by=["model"]) == {
        ("eu", "small"): 1
    }
    with pytest.raises(ValueError, match="groups its events"):
        selectors.meter_quantity(customer, meter, *march)


def test_quantities_drop_the_columns_trailing_zeros():
    customer = CustomerFactory()
    meter = MeterFactory(aggregation="sum", field_name="gb")
    store(
        customer,
        meter,
        [(datetime(2024, 3, 2, tzinfo=UTC), "1.5", {}), (datetime(2024, 3, 2, 1, tzinfo=UTC), "1.5", {})],
    )
    quantity = selectors.meter_quantity(
        customer, meter, datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    )
    assert str(quantity) == "3"


def test_an_empty_or_naive_range_is_refused():
    customer, meter = CustomerFactory(), MeterFactory()
    with pytest.raises(ValueError, match="empty usage range"):
        selectors.meter_quantity(customer, meter, datetime(2024, 3, 2, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware"):
        selectors.meter_quantity(customer, meter, datetime(2024, 3, 1), datetime(2024, 3, 2))


# --- every path against the reference ------------------------------------------------------------------------

SPECS = [
    ("count", {}),
    ("sum", {"field_name": "v"}),
    ("max", {"field_name": "v"}),
    ("max", {"field_name": "v", "carries_over": True}),
    ("unique_count", {"field_name": "user"}),
    ("latest", {"field_name": "v"}),
    ("latest", {"field_name": "v", "carries_over": True}),
    ("weighted_sum", {"field_name": "v"}),
    ("weighted_sum", {"field_name": "v", "carries_over": True}),
]
NARROWINGS = [
    ({}, []),  # unfiltered: the rollup path where there is one
    ({"region": ["eu", "us"]}, []),
    ({}, ["region"]),
    ({"tier": ["gold", "1"]}, ["region", "tier"]),
]


def random_rows(rng: random.Random, count: int) -> list[tuple]:
    origin = datetime(2024, 1, 25, tzinfo=UTC)
    rows = []
    for _ in range(count):
        # Many events on hour boundaries and in the half hours around them, where edges are cut.
        moment = origin + timedelta(hours=rng.randrange(0, 24 * 75))
        moment += rng.choice(
            [timedelta(0), timedelta(minutes=30), timedelta(microseconds=rng.randrange(3_600_000_000))]
        )
        properties = {"user": rng.choice(["a", "b", "c", "d", 7])}
        if rng.random() < 0.85:
            properties["region"] = rng.choice(["eu", "us", "apac"])
        if rng.random() < 0.7:
            properties["tier"] = rng.choice(["gold", "silver", 1, True])
        value = D(rng.randrange(-50_000, 200_000)) / D(1000)
        rows.append((moment, value, properties))
    # Same-instant events, where latest breaks the tie by id.
    rows += [(datetime(2024, 3, 10, 6, tzinfo=UTC), D(value), {"region": "eu", "user": "a"}) for value in (3, 8, 1)]
    return rows


RANGES = [
    (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)),  # an aligned UTC month
    (datetime(2024, 3, 1, tzinfo=KOLKATA), datetime(2024, 4, 1, tzinfo=KOLKATA)),  # +05:30: half-hour edges
    (datetime(2024, 3, 1, tzinfo=NEW_YORK), datetime(2024, 4, 1, tzinfo=NEW_YORK)),  # across DST
    (datetime(2024, 2, 10, 7, 17, 3, 5, tzinfo=UTC), datetime(2024, 2, 10, 9, 45, tzinfo=UTC)),
    (datetime(2024, 3, 10, 6, 10, tzinfo=UTC), datetime(2024, 3, 10, 6, 50, tzinfo=UTC)),  # inside one hour
    (datetime(2024, 3, 10, 6, tzinfo=UTC), datetime(2024, 3, 10, 6, 0, 0, 1, tzinfo=UTC)),  # one microsecond
    (datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC)),  # before any event
    (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)),  # after every event: carried only
    (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),  # everything
]


def test_every_path_equals_the_reference_over_the_same_events():
    rng = random.Random(20240301)
    customer, other = CustomerFactory(), CustomerFactory()
    compared = 0
    for aggregation_name, options in SPECS:
        meter = MeterFactory(aggregation=aggregation_name, **options)
        events = store(customer, meter, random_rows(rng, 250))
        store(other, meter, random_rows(rng, 50))  # noise the queries must not see
        for filters, group_by in NARROWINGS:
            spec = Spec.for_meter(meter, filters=filters, group_by=group_by)
            for start, end in RANGES:
                expected = pure(events, spec, start, end)
                got = selectors.meter_quantities(customer, meter, start, end, filters=filters, group_by=group_by)
                context = (aggregation_name, options, filters, group_by, start, end)
                assert got == expected, context
                assert list(got) == list(expected), context  # the same groups, in the same order
                assert python_path(customer, meter, spec, start, end) == expected, context
                compared += 1
    assert compared == len(SPECS) * len(NARROWINGS) * len(RANGES)


@pytest.mark.parametrize("rounding", ["half_up", "up", "down"])
def test_rounding_is_the_references_on_every_path(rounding):
    rng = random.Random(7)
    customer = CustomerFactory()
    for aggregation_name, options in SPECS:
        meter = MeterFactory(aggregation=aggregation_name, rounding=rounding, rounding_precision=1, **options)
        events = store(customer, meter, random_rows(rng, 80))
        for start, end in RANGES[:3]:
            for filters, group_by in NARROWINGS[:3]:
                spec = Spec.for_meter(meter, filters=filters, group_by=group_by)
                got = selectors.meter_quantities(customer, meter, start, end, filters=filters, group_by=group_by)
                assert got == pure(events, spec, start, end), (aggregation_name, options, filters, group_by, start)
