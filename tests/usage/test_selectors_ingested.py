"""The read path over events written by the real write path (usage.ingestion): late events, duplicate replays
and arrival order end up in the totals exactly as the pure reference computes them from the stored events."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.usage.conftest import event
from usage import aggregation, selectors
from usage.aggregation import Event, Spec
from usage.ingestion import ingest_events
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2024, 4, 20, 12, tzinfo=UTC)
MARCH = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
FEBRUARY = (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))


def send(*events, now=NOW):
    results = ingest_events(list(events), now=now)
    return [result.status for result in results]


def stored(customer, meter) -> list[Event]:
    return [
        Event(timestamp=row.timestamp, value=row.value, properties=row.properties, id=row.id)
        for row in UsageEvent.objects.filter(customer=customer, meter=meter)
    ]


def test_a_late_event_lands_in_its_past_period_through_the_rollups(metering):
    assert send(
        event("t1", meter="tokens", timestamp="2024-02-10T10:00:00Z", properties={"tokens": 100}),
        event("t2", meter="tokens", timestamp="2024-03-05T10:00:00Z", properties={"tokens": 7}),
    ) == ["accepted", "accepted"]
    assert selectors.meter_quantity(metering.customer, metering.tokens, *FEBRUARY) == 100
    # Received in April for February, into an hour that already has a rollup: February grows, March does not.
    assert send(event("t3", meter="tokens", timestamp="2024-02-10T10:59:59Z", properties={"tokens": 5})) == ["accepted"]
    assert selectors.meter_quantity(metering.customer, metering.tokens, *FEBRUARY) == 105
    assert selectors.meter_quantity(metering.customer, metering.tokens, *MARCH) == 7


def test_a_late_storage_change_moves_the_level_carried_into_later_periods(metering):
    send(event("s1", meter="storage", timestamp="2024-02-01T00:00:00Z", properties={"gb_change": 10}))
    assert selectors.meter_quantity(metering.customer, metering.storage, *MARCH) == 10
    # A deletion of 4 GB on February 15th, reported late: February averages 10 for 14 days and 6 for 15.
    send(event("s2", meter="storage", timestamp="2024-02-15T00:00:00Z", properties={"gb_change": -4}))
    assert selectors.meter_quantity(metering.customer, metering.storage, *MARCH) == 6
    # (10 x 14 + 6 x 15) / 29 = 230 / 29 = 7.931034482758|620...
    assert selectors.meter_quantity(metering.customer, metering.storage, *FEBRUARY) == D("7.931034482759")


def test_replays_are_never_counted_twice_whatever_timestamp_they_carry(metering):
    first = [event(f"c{i}", timestamp="2024-03-02T00:00:00Z") for i in range(5)]
    assert send(*first) == ["accepted"] * 5
    # The same batch retried, then repeats with other timestamps (one in February), within and across batches.
    assert send(*first) == ["duplicate"] * 5
    assert send(
        event("c0", timestamp="2024-02-02T00:00:00Z"),
        event("c9", timestamp="2024-03-03T00:00:00Z"),
        event("c9", timestamp="2024-03-04T00:00:00Z"),
    ) == ["duplicate", "accepted", "duplicate"]
    assert selectors.meter_quantity(metering.customer, metering.calls, *MARCH) == 6
    assert selectors.meter_quantity(metering.customer, metering.calls, *FEBRUARY) == 0


def test_latest_seats_and_peak_over_ingested_events(metering):
    send(
        event("p1", meter="seats", timestamp="2024-02-20T00:00:00Z", properties={"seats": 12}),
        event("p2", meter="peak_gb", timestamp="2024-03-03T00:00:00Z", properties={"gb": "7.5"}),
        event("p3", meter="peak_gb", timestamp="2024-03-04T00:00:00Z", properties={"gb": 3}),
    )
    assert selectors.meter_quantity(metering.customer, metering.seats, *MARCH) == 12  # carried from February
    send(event("p4", meter="seats", timestamp="2024-03-10T00:00:00Z", properties={"seats": 15}))
    assert selectors.meter_quantity(metering.customer, metering.seats, *MARCH) == 15
    assert selectors.meter_quantity(metering.customer, metering.peak, *MARCH) == D("7.5")


def test_random_batches_with_replays_match_the_reference(metering):
    rng = random.Random(42)
    kolkata = ZoneInfo("Asia/Kolkata")
    meters = {
        "api_calls": metering.calls,
        "tokens": metering.tokens,
        "peak_gb": metering.peak,
        "seats": metering.seats,
        "storage": metering.storage,
        "active_users": metering.users,
    }
    fields = {"tokens": "tokens", "peak_gb": "gb", "seats": "seats", "storage": "gb_change"}
    sent = []
    for index in range(600):
        code = rng.choice(list(meters))
        moment = datetime(2024, 2, 20, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 50 * 86400))
        properties = {"region": rng.choice(["eu", "us"]), "user": rng.choice(["a", "b", "c"])}
        if code in fields:
            properties[fields[code]] = str(D(rng.randrange(-5000, 20000)) / 100)
        sent.append(event(f"r{index}", meter=code, timestamp=moment.isoformat(), properties=properties))
    for start in range(0, len(sent), 100):
        batch = sent[start : start + 100]
        assert set(send(*batch)) == {"accepted"}
        # A retry of the batch and a resend of random earlier events with shifted timestamps.
        assert set(send(*batch)) == {"duplicate"}
        replays = [dict(e, timestamp="2024-03-15T00:00:00Z") for e in rng.sample(sent[: start + 100], 10)]
        assert set(send(*replays)) == {"duplicate"}
    assert UsageEvent.objects.count() == 600

    ranges = [MARCH, (datetime(2024, 3, 1, tzinfo=kolkata), datetime(2024, 4, 1, tzinfo=kolkata))]
    for code, meter in meters.items():
        events = stored(metering.customer, meter)
        for filters, group_by in (({}, []), ({"region": ["eu"]}, []), ({}, ["region"])):
            spec = Spec.for_meter(meter, filters=filters, group_by=group_by)
            for start, end in ranges:
                expected = aggregation.aggregate(events, spec, start, end)
                got = selectors.meter_quantities(
                    metering.customer, meter, start, end, filters=filters, group_by=group_by
                )
                assert got == expected, (code, filters, group_by, start)
