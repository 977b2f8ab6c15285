"""usage.ingestion: validation, deduplication, rejected events and re-processing, rollups kept exact.

Runs on the database the suite runs on (PostgreSQL: the COPY + single-statement path); the SQLite path is
exercised by test_ingest_sqlite.py, which runs this same module against SQLite.
"""

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.models import Count, Max, Sum

from tests.factories import CustomerFactory, MeterFactory
from tests.usage.conftest import event
from usage.ingestion import ingest_events, parse_json, reprocess_rejected
from usage.models import EventKey, RejectedEvent, UsageEvent, UsageHourlyRollup

D = Decimal
pytestmark = pytest.mark.django_db
# Django's SQLite backend keeps 15 significant digits in decimal columns; PostgreSQL keeps them all.
ALL_DIGITS = pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite stores 15 significant digits")


def statuses(results) -> list[str]:
    return [r.status for r in results]


def same_json(stored, sent) -> bool:
    """Equal as JSON documents: numbers compare by value (1e300 comes back from the database as digits)."""
    if isinstance(sent, float | int) and not isinstance(sent, bool):
        return isinstance(stored, float | int) and D(repr(stored)) == D(repr(sent))
    if isinstance(sent, dict):
        return isinstance(stored, dict) and stored.keys() == sent.keys() and all(
            same_json(stored[k], sent[k]) for k in sent
        )
    if isinstance(sent, list):
        return isinstance(stored, list) and len(stored) == len(sent) and all(map(same_json, stored, sent))
    return stored == sent and type(stored) is type(sent)


def rollups_from_events() -> dict:
    """The hourly totals recomputed from the raw events, in Python: what the rollups must equal."""
    expected: dict = {}
    for e in UsageEvent.objects.order_by("timestamp", "id"):
        key = (e.customer_id, e.meter_id, e.timestamp.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
        entry = expected.setdefault(key, {"event_count": 0, "value_sum": D(0), "value_max": None,
                                          "latest_timestamp": None, "latest_value": None, "latest_event_id": None})
        entry["event_count"] += 1
        entry["value_sum"] += e.value or 0
        if e.value is not None and (entry["value_max"] is None or e.value > entry["value_max"]):
            entry["value_max"] = e.value
        # Ordered by (timestamp, id): the last one seen is the latest.
        entry["latest_timestamp"], entry["latest_value"], entry["latest_event_id"] = e.timestamp, e.value, e.pk
    return expected


def stored_rollups() -> dict:
    return {
        (r.customer_id, r.meter_id, r.hour): {
            "event_count": r.event_count, "value_sum": r.value_sum, "value_max": r.value_max,
            "latest_timestamp": r.latest_timestamp, "latest_value": r.latest_value,
            "latest_event_id": r.latest_event_id,
        }
        for r in UsageHourlyRollup.objects.all()
    }


# --- accepted events -----------------------------------------------------------------------------------------


def test_accepted_events_are_stored_with_their_value_and_time(metering, now):
    results = ingest_events(
        [
            event("e1", meter="tokens", timestamp="2024-01-15T18:30:00+02:00", properties={"tokens": 1200}),
            event("e2", properties={"region": "eu"}),  # no timestamp: it happened now
            event("e3", meter="tokens", timestamp=1705330800, properties={"tokens": "0.000000000001"}),
        ],
        source="api",
        now=now,
    )
    assert statuses(results) == ["accepted"] * 3
    assert [r.transaction_id for r in results] == ["e1", "e2", "e3"]
    e1, e2, e3 = (UsageEvent.objects.get(transaction_id=t) for t in ("e1", "e2", "e3"))
    assert e1.timestamp == datetime(2024, 1, 15, 16, 30, tzinfo=UTC)
    assert e1.value == D(1200) and e1.properties == {"tokens": 1200}
    assert e1.customer == metering.customer and e1.meter == metering.tokens
    assert e1.source == "api" and e1.received_at == now
    assert e2.timestamp == now and e2.value is None and e2.properties == {"region": "eu"}
    assert e3.timestamp == datetime(2024, 1, 15, 15, 0, tzinfo=UTC) and e3.value == D("0.000000000001")
    assert EventKey.objects.get(transaction_id="e1").event_timestamp == e1.timestamp
    assert not RejectedEvent.objects.exists()


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (0.1, D("0.1")),  # a JSON float is read through its text, never through binary arithmetic
        (1e-7, D("0.0000001")),
        pytest.param("12345678901234567890.123456789012", D("12345678901234567890.123456789012"), marks=ALL_DIGITS),
        ("-4.5", D("-4.5")),
        ("1.500000000000000000", D("1.5")),  # trailing zeros are not precision
        (10**25, D(10**25)),
        ("7E+3", D(7000)),
    ],
)
def test_numeric_values_are_exact(metering, now, sent, stored):
    (result,) = ingest_events([event("n", meter="tokens", properties={"tokens": sent})], source="api", now=now)
    assert result.status == "accepted", result
    assert UsageEvent.objects.get(transaction_id="n").value == stored


@ALL_DIGITS
def test_a_long_json_number_keeps_every_digit(metering, now):
    body = b'[{"transaction_id": "long", "customer_external_id": "acme", "meter_code": "tokens",' \
           b' "properties": {"tokens": 12345678901234567890.123456789012}}]'
    (result,) = ingest_events(parse_json(body), source="api", now=now)
    assert result.status == "accepted"
    stored = UsageEvent.objects.get(transaction_id="long")
    assert stored.value == D("12345678901234567890.123456789012")
    # The stored properties keep the digits too (read as text: Python's json would read a float back).
    with connection.cursor() as cursor:
        cursor.execute("SELECT CAST(properties AS text) FROM usage_usageevent WHERE id = %s", [stored.pk])
        text = cursor.fetchone()[0]
    assert parse_json(text)["tokens"] == D("12345678901234567890.123456789012")


# --- every rejection reason ------------------------------------------------------------------------------------

REJECTIONS = [
    # (event, reason_code, a word the reason must contain)
    (event("r", customer="nobody"), "unknown_customer", "nobody"),
    (event("r", meter="no_such_meter"), "unknown_meter", "no_such_meter"),
    (event("r", meter="tokens", properties={"tokens": "twelve"}), "invalid_value", "properties.tokens"),
    (event("r", meter="tokens", properties={"tokens": True}), "invalid_value", "boolean"),
    (event("r", meter="tokens", properties={"tokens": "NaN"}), "invalid_value", "properties.tokens"),
    (event("r", meter="tokens", properties={"tokens": "Infinity"}), "invalid_value", "properties.tokens"),
    (event("r", meter="tokens", properties={"tokens": "0.0000000000001"}), "invalid_value", "decimal places"),
    (event("r", meter="tokens", properties={"tokens": "1" * 27}), "invalid_value", "too large"),
    (event("r", meter="tokens", properties={"tokens": 1e300}), "invalid_value", "too large"),
    (event("r", meter="tokens", properties={"tokens": {"n": 1}}), "invalid_value", "properties.tokens"),
    (event("r", meter="tokens", properties={"tokens": "1 000"}), "invalid_value", "properties.tokens"),
    (event("r", meter="active_users", properties={"user": ["a"]}), "invalid_value", "properties.user"),
    (event("r", timestamp="2024-01-15T17:06:00Z"), "future_timestamp", "future"),
    (event("r", timestamp="2024-01-15T17:00:00"), "invalid_timestamp", "timezone"),
    (event("r", timestamp="yesterday"), "invalid_timestamp", "ISO 8601"),
    (event("r", timestamp="1999-12-31T23:59:59Z"), "invalid_timestamp", "2000"),
    (event("r", timestamp=1705338000000), "invalid_timestamp", "milliseconds"),
    (event("r", timestamp=True), "invalid_timestamp", "boolean"),
    (event("r", timestamp=["2024-01-15"]), "invalid_timestamp", "list"),
    ("not an event", "malformed", "JSON object"),
    (event("r", value=12), "malformed", "'value'"),
    ({**event("r"), "transaction_id": 12}, "malformed", "transaction_id"),
    (event("r\x07bell"), "malformed", "transaction_id"),
    (event("x" * 256), "malformed", "255"),
    (event("r", customer=["acme"]), "malformed", "customer_external_id"),
    (event("r", properties=["tokens", 1]), "malformed", "properties"),
    (event("r", properties={"note": "a\x00b"}), "malformed", "NUL"),
    ({"customer_external_id": "acme", "meter_code": "api_calls"}, "missing_field", "transaction_id"),
    (event(""), "missing_field", "transaction_id"),
    ({"transaction_id": "r", "meter_code": "api_calls"}, "missing_field", "customer_external_id"),
    ({"transaction_id": "r", "customer_external_id": "acme"}, "missing_field", "meter_code"),
    (event("r", meter="tokens", properties={"other": 1}), "missing_field", "properties.tokens"),
    (event("r", meter="tokens", properties={"tokens": None}), "missing_field", "properties.tokens"),
    (event("r", meter="active_users"), "missing_field", "properties.user"),
    (event("r", properties={f"k{i}": i for i in range(51)}), "too_large", "51 keys"),
    (event("r", properties={"blob": "x" * 10_300}), "too_large", "bytes"),
]


@pytest.mark.parametrize(("sent", "code", "word"), REJECTIONS, ids=[f"{c}-{i}" for i, (_, c, _w) in
                                                                    enumerate(REJECTIONS)])
def test_each_rejection_is_answered_and_kept_with_its_payload(metering, now, sent, code, word):
    (result,) = ingest_events([sent], source="api", now=now)
    assert result.status == "rejected"
    assert result.reason_code == code
    assert word in result.reason, result.reason
    assert not UsageEvent.objects.exists() and not EventKey.objects.exists()
    kept = RejectedEvent.objects.get()
    assert kept.reason_code == code and kept.reason == result.reason
    assert kept.status == "open" and kept.attempts == 1 and kept.source == "api" and kept.received_at == now
    has_nul = isinstance(sent, dict) and sent.get("properties") == {"note": "a\x00b"}
    if isinstance(sent, dict) and not has_nul:
        assert same_json(kept.payload, sent)
        assert kept.transaction_id == str(sent.get("transaction_id", ""))[:255]
    elif isinstance(sent, dict):
        # PostgreSQL stores no NUL character: it is kept as the visible text \u0000.
        assert kept.payload["properties"]["note"] == "a\\u0000b"
    else:
        assert kept.payload == sent


def test_an_inactive_meter_rejects_until_it_is_active_again(metering, now):
    metering.calls.is_active = False
    metering.calls.save()
    (result,) = ingest_events([event("i1")], source="api", now=now)
    assert (result.reason_code, result.reason) == ("unknown_meter", "meter 'api_calls' is inactive")


def test_an_event_five_minutes_ahead_is_accepted_and_one_microsecond_more_is_not(metering, now):
    edge = now + timedelta(minutes=5)
    results = ingest_events(
        [
            event("edge", timestamp=edge.isoformat()),
            event("over", timestamp=(edge + timedelta(microseconds=1)).isoformat()),
        ],
        source="api", now=now,
    )
    assert statuses(results) == ["accepted", "rejected"]
    assert results[1].reason_code == "future_timestamp"


# --- one bad event never loses good ones ------------------------------------------------------------------------


def test_bad_events_never_lose_the_good_events_of_the_batch(metering, now):
    batch = [
        event("g1"),
        event("b1", customer="nobody"),
        event("g2", meter="tokens", properties={"tokens": 5}),
        42,
        event("b2", meter="tokens", properties={"tokens": "lots"}),
        event("g3", customer="globex"),
    ]
    results = ingest_events(batch, source="api", now=now)
    assert statuses(results) == ["accepted", "rejected", "accepted", "rejected", "rejected", "accepted"]
    assert set(UsageEvent.objects.values_list("transaction_id", flat=True)) == {"g1", "g2", "g3"}
    assert sorted(RejectedEvent.objects.values_list("reason_code", flat=True)) == [
        "invalid_value", "malformed", "unknown_customer",
    ]


# --- duplicates -------------------------------------------------------------------------------------------------


def test_duplicates_within_one_batch_first_wins_whatever_the_timestamp(metering, now):
    results = ingest_events(
        [
            event("d1", meter="tokens", timestamp="2024-01-15T10:00:00Z", properties={"tokens": 1}),
            event("d1", meter="tokens", timestamp="2024-01-15T10:00:00Z", properties={"tokens": 1}),  # same
            event("d1", meter="tokens", timestamp="2024-01-14T10:00:00Z", properties={"tokens": 99}),  # other time
        ],
        source="api", now=now,
    )
    assert statuses(results) == ["accepted", "duplicate", "duplicate"]
    stored = UsageEvent.objects.get()
    assert stored.value == 1 and stored.timestamp == datetime(2024, 1, 15, 10, tzinfo=UTC)
    assert UsageHourlyRollup.objects.get().event_count == 1


def test_duplicates_across_batches_are_never_counted_twice(metering, now):
    ingest_events([event("x1", meter="tokens", timestamp="2024-01-15T10:00:00Z", properties={"tokens": 3})],
                  source="api", now=now)
    later = now + timedelta(days=2)
    results = ingest_events(
        [
            event("x1", meter="tokens", timestamp="2024-01-15T10:00:00Z", properties={"tokens": 3}),  # same
            event("x1", meter="tokens", timestamp="2024-01-16T11:00:00Z", properties={"tokens": 3}),  # other time
            event("x1", customer="globex", meter="api_calls"),  # even another customer and meter
        ],
        source="api", now=later,
    )
    assert statuses(results) == ["duplicate"] * 3
    assert UsageEvent.objects.count() == 1
    assert UsageHourlyRollup.objects.aggregate(n=Sum("event_count"), s=Sum("value_sum")) == {"n": 1, "s": D(3)}


def test_a_retried_batch_is_all_duplicates_and_changes_nothing(metering, now):
    batch = [event(f"b{i}", meter="tokens", properties={"tokens": i}) for i in range(50)]
    batch.append(event("bad", customer="nobody"))
    first = ingest_events(batch, source="api", now=now)
    assert statuses(first) == ["accepted"] * 50 + ["rejected"]
    before = stored_rollups()
    again = ingest_events(batch, source="api", now=now + timedelta(seconds=30))
    assert statuses(again) == ["duplicate"] * 50 + ["rejected"]
    assert UsageEvent.objects.count() == 50
    assert stored_rollups() == before
    # The bad event is kept each time it is sent: nothing a client sends is dropped.
    assert RejectedEvent.objects.count() == 2


def test_a_rejected_event_claims_no_transaction_id(metering, now):
    (bad,) = ingest_events([event("fixme", meter="tokens", properties={"tokens": "n/a"})], source="api", now=now)
    (good,) = ingest_events([event("fixme", meter="tokens", properties={"tokens": 4})], source="api", now=now)
    assert (bad.status, good.status) == ("rejected", "accepted")
    # Within a batch too: the first *valid* occurrence wins.
    results = ingest_events(
        [event("f2", meter="tokens", properties={}), event("f2", meter="tokens", properties={"tokens": 1})],
        source="api", now=now,
    )
    assert statuses(results) == ["rejected", "accepted"]


# --- re-processing ----------------------------------------------------------------------------------------------


def test_reprocessing_after_the_customer_is_created(metering, now):
    results = ingest_events(
        [
            event("late-1", customer="newco", meter="tokens", properties={"tokens": 7}),  # no timestamp
            event("late-2", customer="newco", timestamp="2024-01-10T08:00:00Z"),
            event("late-3", customer="newco", meter="tokens", properties={"tokens": "bad"}),
        ],
        source="api", now=now,
    )
    assert [r.reason_code for r in results] == ["unknown_customer"] * 3
    ids = list(RejectedEvent.objects.order_by("pk").values_list("pk", flat=True))

    # Before the cause is fixed nothing changes, but the attempt is recorded.
    later = now + timedelta(hours=1)
    assert reprocess_rejected(ids, now=later) == {"reprocessed": 0, "duplicate": 0, "rejected": 3, "skipped": 0}
    assert list(RejectedEvent.objects.order_by("pk").values_list("status", "attempts")) == [("open", 2)] * 3

    newco = CustomerFactory(external_id="newco")
    assert reprocess_rejected(ids, now=later) == {"reprocessed": 2, "duplicate": 0, "rejected": 1, "skipped": 0}
    first, second, third = RejectedEvent.objects.order_by("pk")
    assert (first.status, first.resolved_at, first.attempts) == ("reprocessed", later, 3)
    assert second.status == "reprocessed"
    assert (third.status, third.reason_code, third.attempts) == ("open", "invalid_value", 3)
    assert "properties.tokens" in third.reason
    one = UsageEvent.objects.get(transaction_id="late-1")
    # Sent without a timestamp: it happened when it was first received, not when it was re-processed.
    assert one.timestamp == now and one.customer == newco and one.value == 7 and one.source == "reprocess"
    assert UsageEvent.objects.get(transaction_id="late-2").timestamp == datetime(2024, 1, 10, 8, tzinfo=UTC)
    assert stored_rollups() == rollups_from_events()

    # Resolved ones are skipped; nothing is counted twice.
    assert reprocess_rejected(ids, now=later)["skipped"] == 2
    assert UsageEvent.objects.count() == 2


def test_reprocessing_an_event_already_counted_marks_it_duplicate(metering, now):
    ingest_events([event("dup", customer="newco")], source="api", now=now)
    CustomerFactory(external_id="newco")
    ingest_events([event("dup", customer="newco")], source="api", now=now)  # the client resent it, fixed
    rejected = RejectedEvent.objects.get()
    assert reprocess_rejected([rejected.pk], now=now) == {"reprocessed": 0, "duplicate": 1, "rejected": 0,
                                                          "skipped": 0}
    rejected.refresh_from_db()
    assert rejected.status == "duplicate" and rejected.resolved_at == now
    assert UsageEvent.objects.count() == 1


@ALL_DIGITS
def test_reprocessing_keeps_long_numbers_exact(metering, now):
    body = b'[{"transaction_id": "p", "customer_external_id": "newco", "meter_code": "tokens",' \
           b' "properties": {"tokens": 98765432109876543210.000000000001}}]'
    ingest_events(parse_json(body), source="api", now=now)
    CustomerFactory(external_id="newco")
    reprocess_rejected(RejectedEvent.objects.values_list("pk", flat=True), now=now)
    assert UsageEvent.objects.get().value == D("98765432109876543210.000000000001")


# --- rollups ---------------------------------------------------------------------------------------------------


def test_rollups_equal_the_raw_events(metering, now):
    rng = random.Random(20240115)
    customers = ["acme", "globex"]
    meters = {"api_calls": None, "tokens": "tokens", "peak_gb": "gb", "seats": "seats", "storage": "gb_change"}
    sent = 0
    for batch_number in range(6):
        batch = []
        for _ in range(120):
            meter = rng.choice(list(meters))
            field = meters[meter]
            # Few distinct instants, so that equal timestamps (ties broken by id) happen often.
            when = datetime(2024, 1, 14, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 600, 7))
            properties = {field: str(D(rng.randrange(-500, 5000)) / 100)} if field else {}
            # Some repeats of earlier ids, with other values: duplicates must not reach the rollups.
            transaction_id = f"t{rng.randrange(sent + 1)}" if rng.random() < 0.15 else f"t{sent}"
            sent += 1
            batch.append(event(transaction_id, customer=rng.choice(customers), meter=meter,
                               timestamp=when.isoformat(), properties=properties))
        results = ingest_events(batch, source="api", now=now + timedelta(minutes=batch_number))
        assert "rejected" not in statuses(results)
    assert UsageEvent.objects.count() == EventKey.objects.count()
    assert stored_rollups() == rollups_from_events()
    totals = UsageEvent.objects.aggregate(n=Count("id"), s=Sum("value"), m=Max("value"))
    assert UsageHourlyRollup.objects.aggregate(n=Sum("event_count"))["n"] == totals["n"]


def test_rollups_keep_the_latest_by_time_then_id_across_batches(metering, now):
    at = "2024-01-15T09:30:00Z"
    ingest_events([event("l1", meter="seats", timestamp=at, properties={"seats": 5})], source="api", now=now)
    ingest_events([event("l0", meter="seats", timestamp="2024-01-15T09:10:00Z", properties={"seats": 9})],
                  source="api", now=now)  # earlier in time, later in arrival: not the latest
    ingest_events([event("l2", meter="seats", timestamp=at, properties={"seats": 7})], source="api", now=now)
    rollup = UsageHourlyRollup.objects.get()
    assert (rollup.latest_value, rollup.value_max, rollup.event_count) == (D(7), D(9), 3)
    assert rollup.latest_event_id == UsageEvent.objects.get(transaction_id="l2").pk


# --- concurrency -------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="real concurrent writers need PostgreSQL")
def test_concurrent_overlapping_batches_store_each_event_once(now):
    CustomerFactory(external_id="acme")
    MeterFactory(code="tokens", aggregation="sum", field_name="tokens")
    ids = [f"c{i}" for i in range(400)]
    outcomes: list[list] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def send(seed: int) -> None:
        try:
            rng = random.Random(seed)
            mine = rng.sample(ids, 300)  # overlapping sets, in different orders
            barrier.wait()
            for start in range(0, 300, 100):
                chunk = [event(t, meter="tokens", properties={"tokens": 1}) for t in mine[start : start + 100]]
                outcomes.append(ingest_events(chunk, source="api", now=now))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    accepted = [r.transaction_id for batch in outcomes for r in batch if r.status == "accepted"]
    assert len(accepted) == len(set(accepted))  # nobody was told "accepted" for the same id twice
    assert set(accepted) == set(UsageEvent.objects.values_list("transaction_id", flat=True))
    assert UsageEvent.objects.count() == len(set(accepted))
    assert UsageHourlyRollup.objects.aggregate(s=Sum("value_sum"))["s"] == len(accepted)
    assert connection.vendor == "postgresql"


@pytest.mark.parametrize("size", [1, 200], ids=["one statement with VALUES", "COPY through the staging table"])
def test_text_is_stored_exactly_by_both_write_paths(metering, now, size):
    tricky = {
        "path": "C:\\temp\\new",  # backslashes: COPY's escape character
        "quote": "\"'`",
        "lines": "one\ntwo\tthree\r",
        "unicode": "Zoë 😀 \u2028",
        "json_like": "{\"a\": 1}",
        "nested": {"list": [1, "2", None, True], "empty": {}},
    }
    batch = [event(f"tx\\{i}\\N'\"", meter="tokens", properties={**tricky, "tokens": "1.5"}) for i in range(size)]
    assert statuses(ingest_events(batch, source="api", now=now)) == ["accepted"] * size
    stored = UsageEvent.objects.get(transaction_id="tx\\0\\N'\"")
    assert stored.properties == {**tricky, "tokens": "1.5"}
    assert stored.value == D("1.5")
    assert EventKey.objects.filter(transaction_id="tx\\0\\N'\"").exists()
    assert UsageHourlyRollup.objects.get().value_sum == D("1.5") * size


@pytest.mark.django_db(transaction=True)
def test_a_single_event_outside_any_transaction_is_stored_atomically(now):
    # Outside a transaction block a small batch is one autocommitted statement (keys, events and rollups).
    CustomerFactory(external_id="acme")
    MeterFactory(code="tokens", aggregation="sum", field_name="tokens")
    assert connection.get_autocommit() and not connection.in_atomic_block
    (first,) = ingest_events([event("solo", meter="tokens", properties={"tokens": 2})], source="api", now=now)
    (again,) = ingest_events([event("solo", meter="tokens", properties={"tokens": 2})], source="api", now=now)
    assert (first.status, again.status) == ("accepted", "duplicate")
    assert UsageEvent.objects.count() == 1 and EventKey.objects.count() == 1
    assert UsageHourlyRollup.objects.get().value_sum == 2
    # With a rejection to record as well, everything goes in one transaction as usual.
    results = ingest_events([event("s2", meter="tokens", properties={"tokens": 1}), event("s3", customer="nobody")],
                            source="api", now=now)
    assert statuses(results) == ["accepted", "rejected"]
    assert RejectedEvent.objects.count() == 1
