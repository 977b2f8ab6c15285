"""The write path of usage metering: validate events, store each transaction_id once, keep rollups current.

`ingest_events` answers, for every event in the order received, accepted, duplicate or rejected (with a
reason code and a human reason naming the field). Everything happens in one transaction: the event rows,
their deduplication keys, the hourly rollups and the rejected events are committed together or not at
all, so an acknowledged event is stored and counted exactly once, and nothing the client sent is dropped.

On PostgreSQL the batch is COPYed into a per-connection temporary table and one statement inserts the
keys (ON CONFLICT DO NOTHING RETURNING: the database decides what is new, even between concurrent
requests), the events whose key was new, and the rollup upserts grouped by (customer, meter, hour).
SQLite (the embedded single-machine default, whose IMMEDIATE transactions serialise writers) takes a
simpler bulk path with the same behaviour.
"""

import csv
import functools
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, NamedTuple

import orjson
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F, TextField
from django.db.models.functions import Cast

from customers.models import Customer
from usage.models import EventKey, EventSource, Meter, RejectedEvent, UsageHourlyRollup

Reason = RejectedEvent.Reason

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"

EVENT_FIELDS = frozenset({"transaction_id", "customer_external_id", "meter_code", "timestamp", "properties"})
MAX_TRANSACTION_ID_LENGTH = 255
MAX_CODE_LENGTH = 100  # customers' external ids and meters' codes
MAX_PROPERTIES = 50
MAX_PROPERTIES_BYTES = 10 * 1024
MAX_DECIMALS = 12
MAX_INTEGER_DIGITS = 26
FUTURE_TOLERANCE = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EPOCH_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
NUMERIC_AGGREGATIONS = frozenset({"sum", "max", "latest", "weighted_sum"})
_INT_LIMIT = 10**MAX_INTEGER_DIGITS
CACHE_TTL_SECONDS = 10.0
CACHE_MAX_ENTRIES = 200_000
RETRIES = 5  # deadlocks and serialisation failures between concurrent batches are retried whole

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*\Z")
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,4})?\Z")
_EPOCH_TEXT = re.compile(r"\d{1,12}(?:\.\d{1,9})?\Z")
# A JSON number with 16 or more significant digits may not survive a binary double: such bodies are
# parsed again with exact decimals (a false positive, e.g. a long digit run inside a string, only costs time).
_LONG_NUMBER = re.compile(rb"\d[\d.]{15,}")
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


class EventResult(NamedTuple):
    """One answer per event (a tuple: thousands are made per batch)."""

    transaction_id: str | None
    status: str
    reason_code: str | None = None
    reason: str | None = None
    field: str | None = None  # the input at fault, for the single-event endpoint's error fields

    def as_dict(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "status": self.status,
            "reason_code": self.reason_code,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class MeterInfo:
    id: int
    code: str
    aggregation: str
    field_name: str
    is_active: bool


class _Rejection(Exception):
    def __init__(self, code: str, reason: str, field: str | None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.field = field


@dataclass(slots=True)
class _Valid:
    index: int
    transaction_id: str
    customer_id: int
    meter_id: int
    timestamp: datetime
    properties: dict[str, Any]
    properties_json: str
    value: Decimal | None


# ---------------------------------------------------------------------------------------------- parsing


def _exact_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> bytes:
    """JSON bytes of parsed input; decimals from the exact parser are written back digit for digit."""
    try:
        return orjson.dumps(value, default=_exact_number)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return orjson.dumps(_big_ints_as_decimals(value), default=_exact_number)


def _big_ints_as_decimals(value: Any) -> Any:
    # orjson writes integers up to 64 bits; a caller's larger Python int goes through its exact text.
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return Decimal(value)
    if isinstance(value, dict):
        return {k: _big_ints_as_decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_big_ints_as_decimals(v) for v in value]
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes | str) -> Any:
    """Parse a request body (or a stored payload) without losing a digit of any number.

    orjson validates and parses (fast; it refuses invalid UTF-8, lone surrogates, NaN and control
    characters). Numbers too long for a double are re-read with decimals. Raises ValueError.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson also refuses numbers beyond a double's range (1e400), which are valid JSON: those events
        # must be answered one by one (invalid_value), not sink the whole batch.
        return _parse_exact(data, orjson_error=str(exc))
    if _LONG_NUMBER.search(data) is None:
        return parsed
    return _parse_exact(data, orjson_error=None)


def _parse_exact(data: bytes, *, orjson_error: str | None) -> Any:
    try:
        parsed = json.loads(data, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant)
        if orjson_error is not None:
            dumps(parsed)  # lone surrogates and the like, which orjson refused, stay refused
    except (ValueError, TypeError, RecursionError, orjson.JSONEncodeError):
        raise ValueError(orjson_error or "the document is invalid or nested too deeply") from None
    return parsed


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_number(raw: Any) -> Decimal:
    """A finite Decimal with at most 12 decimals and 26 integer digits; raises ValueError with the reason.

    JSON numbers are read through their text (a float's shortest repr), never through binary arithmetic.
    """
    if isinstance(raw, bool):
        raise ValueError(f"must be a number, not a boolean ({_show(raw)})")
    if isinstance(raw, int):
        if -(10**MAX_INTEGER_DIGITS) < raw < 10**MAX_INTEGER_DIGITS:
            return Decimal(raw)
        raise ValueError(f"is too large: at most {MAX_INTEGER_DIGITS} digits before the decimal point")
    if isinstance(raw, float):
        number = Decimal(repr(raw))
    elif isinstance(raw, Decimal):
        number = raw
    elif isinstance(raw, str):
        if len(raw) > 80 or not _NUMBER_TEXT.match(raw):
            raise ValueError(f"must be a number, got the text {_show(raw)}")
        number = Decimal(raw)
    else:
        raise ValueError(f"must be a number, got {type(raw).__name__ if raw is not None else 'null'}")
    if not number.is_finite():
        raise ValueError(f"must be a finite number, got {_show(raw)}")
    if not number:
        return Decimal(0)
    _sign, digits, exponent = number.as_tuple()
    count = len(digits)
    # Trailing zeros after the decimal point carry no precision: 1.500 has one decimal.
    while exponent < 0 and count > 1 and digits[count - 1] == 0:
        count -= 1
        exponent += 1
    if exponent < -MAX_DECIMALS:
        raise ValueError(f"has more than {MAX_DECIMALS} decimal places ({_show(raw)})")
    if count + exponent > MAX_INTEGER_DIGITS:
        raise ValueError(f"is too large: at most {MAX_INTEGER_DIGITS} digits before the decimal point")
    return number


def parse_timestamp(raw: Any, *, now: datetime) -> datetime:
    """An aware UTC datetime from ISO 8601 with a timezone or epoch seconds. Raises _Rejection."""
    if isinstance(raw, bool):
        raise _Rejection(
            Reason.INVALID_TIMESTAMP, "timestamp must be ISO 8601 text or epoch seconds, not a boolean", "timestamp"
        )
    if isinstance(raw, str) and _EPOCH_TEXT.match(raw):
        raw = Decimal(raw)
    if isinstance(raw, int | float | Decimal):
        seconds = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
        if not seconds.is_finite() or not (EARLIEST.timestamp() <= seconds <= LATEST_EPOCH_SECONDS):
            hint = " (milliseconds? send seconds)" if seconds.is_finite() and seconds > LATEST_EPOCH_SECONDS else ""
            raise _Rejection(
                Reason.INVALID_TIMESTAMP, f"timestamp {_show(raw)} is out of range for epoch seconds{hint}", "timestamp"
            )
        whole = int(seconds)
        micros = int(((seconds - whole) * 1_000_000).to_integral_value())
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=whole, microseconds=micros)
    elif isinstance(raw, str):
        try:
            if len(raw) > 64:
                raise ValueError
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise _Rejection(
                Reason.INVALID_TIMESTAMP,
                f"timestamp {_show(raw)} is not ISO 8601 (e.g. 2024-01-15T17:00:00Z) nor epoch seconds",
                "timestamp",
            ) from None
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise _Rejection(
                Reason.INVALID_TIMESTAMP,
                f"timestamp {_show(raw)} has no timezone: add Z or an offset such as +02:00",
                "timestamp",
            )
        try:
            moment = moment.astimezone(UTC)
        except (OverflowError, ValueError):
            raise _Rejection(Reason.INVALID_TIMESTAMP, f"timestamp {_show(raw)} is out of range", "timestamp") from None
    else:
        raise _Rejection(
            Reason.INVALID_TIMESTAMP,
            f"timestamp must be ISO 8601 text or epoch seconds, got {type(raw).__name__}",
            "timestamp",
        )
    if moment < EARLIEST:
        raise _Rejection(Reason.INVALID_TIMESTAMP, f"timestamp {moment.isoformat()} is before 2000", "timestamp")
    if moment > now + FUTURE_TOLERANCE:
        raise _Rejection(
            Reason.FUTURE_TIMESTAMP,
            f"timestamp {moment.isoformat()} is more than 5 minutes in the future "
            f"(server time {now.astimezone(UTC).isoformat()})",
            "timestamp",
        )
    return moment


# ------------------------------------------------------------------------------------------------ caches


class _TTLCache:
    """Per-process name → row cache. Only hits are cached: a customer created a second ago must be found."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Any]] = {}

    def split(self, keys: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
        found: dict[str, Any] = {}
        missing: list[str] = []
        clock = time.monotonic()
        entries = self._entries
        for key in keys:
            entry = entries.get(key)
            if entry is not None and entry[0] > clock:
                found[key] = entry[1]
            else:
                missing.append(key)
        return found, missing

    def put_many(self, values: dict[str, Any]) -> None:
        if len(self._entries) + len(values) > CACHE_MAX_ENTRIES:
            self._entries.clear()
        expires = time.monotonic() + self.ttl
        for key, value in values.items():
            self._entries[key] = (expires, value)

    def clear(self) -> None:
        self._entries.clear()


_customers = _TTLCache(CACHE_TTL_SECONDS)
_meters = _TTLCache(CACHE_TTL_SECONDS)


def clear_caches() -> None:
    _customers.clear()
    _meters.clear()


def _resolve_customers(external_ids: set[str]) -> dict[str, int]:
    found, missing = _customers.split(external_ids)
    if missing:
        fetched = dict(Customer.objects.filter(external_id__in=missing).values_list("external_id", "id"))
        _customers.put_many(fetched)
        found.update(fetched)
    return found


def _resolve_meters(codes: set[str]) -> dict[str, MeterInfo]:
    found, missing = _meters.split(codes)
    if missing:
        rows = Meter.objects.filter(code__in=missing).values_list(
            "id", "code", "aggregation", "field_name", "is_active"
        )
        fetched = {row[1]: MeterInfo(*row) for row in rows}
        _meters.put_many(fetched)
        found.update(fetched)
    return found


# ------------------------------------------------------------------------------------------- validation


def _text_field(event: dict[str, Any], name: str, max_length: int) -> str:
    value = event.get(name)
    if value is None or value == "":
        raise _Rejection(Reason.MISSING_FIELD, f"{name} is required", name)
    if not isinstance(value, str):
        raise _Rejection(Reason.MALFORMED, f"{name} must be a string, got {type(value).__name__}", name)
    if len(value) > max_length:
        raise _Rejection(Reason.MALFORMED, f"{name} is longer than {max_length} characters", name)
    if not value.isprintable():
        raise _Rejection(Reason.MALFORMED, f"{name} contains control or unprintable characters", name)
    return value


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An input that could not even be read as an event (e.g. a CSV row with the wrong number of fields):
    rejected as malformed with this reason, and kept with its payload like any other rejection."""

    payload: Any
    reason: str


def _check_structure(
    event: Any, *, now: datetime, default_time: datetime
) -> tuple[str, str, str, datetime, dict, bytes]:
    if isinstance(event, Unreadable):
        raise _Rejection(Reason.MALFORMED, event.reason, None)
    if not isinstance(event, dict):
        raise _Rejection(Reason.MALFORMED, f"an event must be a JSON object, got {type(event).__name__}", None)
    unknown = event.keys() - EVENT_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise _Rejection(
            Reason.MALFORMED,
            f"unknown field {_show(name)}: an event has {', '.join(sorted(EVENT_FIELDS))} "
            f"(put measured values in properties)",
            name[:100],
        )
    transaction_id = _text_field(event, "transaction_id", MAX_TRANSACTION_ID_LENGTH)
    customer_external_id = _text_field(event, "customer_external_id", MAX_CODE_LENGTH * 2)
    meter_code = _text_field(event, "meter_code", MAX_CODE_LENGTH * 2)
    raw_time = event.get("timestamp")
    timestamp = default_time if raw_time is None else parse_timestamp(raw_time, now=now)
    properties = event.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise _Rejection(
            Reason.MALFORMED, f"properties must be a JSON object, got {type(properties).__name__}", "properties"
        )
    if len(properties) > MAX_PROPERTIES:
        raise _Rejection(
            Reason.TOO_LARGE, f"properties has {len(properties)} keys; at most {MAX_PROPERTIES}", "properties"
        )
    try:
        properties_json = dumps(properties)
    except (orjson.JSONEncodeError, TypeError):
        raise _Rejection(
            Reason.MALFORMED, "properties are nested too deeply or hold invalid text", "properties"
        ) from None
    if len(properties_json) > MAX_PROPERTIES_BYTES:
        raise _Rejection(
            Reason.TOO_LARGE,
            f"properties are {len(properties_json)} bytes as JSON; at most {MAX_PROPERTIES_BYTES}",
            "properties",
        )
    if b"\\u0000" in properties_json:
        raise _Rejection(Reason.MALFORMED, "properties contain a NUL character (\\u0000)", "properties")
    return transaction_id, customer_external_id, meter_code, timestamp, properties, properties_json


def _meter_value(meter: MeterInfo, properties: dict[str, Any]) -> Decimal | None:
    if meter.aggregation == "count":
        return None
    field = meter.field_name
    path = f"properties.{field}"
    raw = properties.get(field)
    if raw is None:
        raise _Rejection(
            Reason.MISSING_FIELD, f"{path} is required: meter {meter.code!r} ({meter.aggregation}) reads it", path
        )
    if meter.aggregation not in NUMERIC_AGGREGATIONS:  # unique_count: any scalar, compared as text
        if isinstance(raw, dict | list):
            raise _Rejection(Reason.INVALID_VALUE, f"{path} must be a string or a number to be counted", path)
        return None
    try:
        return parse_number(raw)
    except ValueError as exc:
        raise _Rejection(Reason.INVALID_VALUE, f"{path} {exc}", path) from None
    except InvalidOperation:
        raise _Rejection(Reason.INVALID_VALUE, f"{path} is not a number", path) from None


@dataclass(slots=True)
class _Batch:
    valid: list[_Valid]
    results: list[EventResult | None]
    rejected: list[tuple[int, Any, _Rejection]]  # (index, raw event, why)
    in_batch_duplicates: list[int]


def _validate_batch(raw_events: Sequence[Any], *, now: datetime, default_times: Sequence[datetime] | None) -> _Batch:
    results: list[EventResult | None] = [None] * len(raw_events)
    rejected: list[tuple[int, Any, _Rejection]] = []
    checked: list[tuple[int, str, str, str, datetime, dict, bytes]] = []
    latest_allowed = now + FUTURE_TOLERANCE
    fields = EVENT_FIELDS
    from_iso = datetime.fromisoformat
    plain_dumps = orjson.dumps
    for index, event in enumerate(raw_events):
        default_time = default_times[index] if default_times is not None else now
        # Fast path: the ordinary valid event, checked inline. Anything unusual takes the full checks below,
        # which decide the same way and name the problem.
        if type(event) is dict and event.keys() <= fields:
            tid = event.get("transaction_id")
            cid = event.get("customer_external_id")
            code = event.get("meter_code")
            if (
                type(tid) is str and type(cid) is str and type(code) is str
                and 0 < len(tid) <= MAX_TRANSACTION_ID_LENGTH and 0 < len(cid) <= 2 * MAX_CODE_LENGTH
                and 0 < len(code) <= 2 * MAX_CODE_LENGTH
                and tid.isprintable() and cid.isprintable() and code.isprintable()
            ):
                raw_time = event.get("timestamp")
                moment = None
                if raw_time is None:
                    moment = default_time
                elif type(raw_time) is str and len(raw_time) <= 64 and raw_time[4:5] == "-":
                    try:
                        parsed = from_iso(raw_time)
                    except ValueError:
                        parsed = None
                    if parsed is not None and parsed.tzinfo is not None:
                        if parsed.tzinfo is not UTC:
                            parsed = parsed.astimezone(UTC)
                        if EARLIEST <= parsed <= latest_allowed:
                            moment = parsed
                properties = event.get("properties")
                if properties is None:
                    properties = {}
                if moment is not None and type(properties) is dict and len(properties) <= MAX_PROPERTIES:
                    try:
                        properties_json = plain_dumps(properties)
                    except TypeError:
                        properties_json = None
                    if (
                        properties_json is not None
                        and len(properties_json) <= MAX_PROPERTIES_BYTES
                        and b"\\u0000" not in properties_json
                    ):
                        checked.append((index, tid, cid, code, moment, properties, properties_json))
                        continue
        try:
            checked.append((index, *_check_structure(event, now=now, default_time=default_time)))
        except _Rejection as why:
            rejected.append((index, event, why))

    customers = _resolve_customers({row[2] for row in checked}) if checked else {}
    meters = _resolve_meters({row[3] for row in checked}) if checked else {}

    valid: list[_Valid] = []
    for index, transaction_id, external_id, code, timestamp, properties, properties_json in checked:
        customer_id = customers.get(external_id)
        meter = meters.get(code)
        if customer_id is not None and meter is not None and meter.is_active:
            # Fast path for the common values; the rest goes through _meter_value's full checks.
            aggregation = meter.aggregation
            if aggregation == "count":
                valid.append(_Valid(index, transaction_id, customer_id, meter.id, timestamp, properties,
                                    properties_json.decode(), None))
                continue
            raw = properties.get(meter.field_name)
            if type(raw) is str and raw.isascii() and raw.isdigit() and len(raw) <= MAX_INTEGER_DIGITS:
                raw = int(raw)  # a CSV cell or a number sent as text: "1200"
            if type(raw) is int and aggregation in NUMERIC_AGGREGATIONS and -_INT_LIMIT < raw < _INT_LIMIT:
                valid.append(_Valid(index, transaction_id, customer_id, meter.id, timestamp, properties,
                                    properties_json.decode(), Decimal(raw)))
                continue
        try:
            customer_id = customers.get(external_id)
            if customer_id is None:
                raise _Rejection(
                    Reason.UNKNOWN_CUSTOMER,
                    f"no customer has the external id {_show(external_id)}",
                    "customer_external_id",
                )
            meter = meters.get(code)
            if meter is None:
                raise _Rejection(Reason.UNKNOWN_METER, f"no meter has the code {_show(code)}", "meter_code")
            if not meter.is_active:
                raise _Rejection(Reason.UNKNOWN_METER, f"meter {code!r} is inactive", "meter_code")
            value = _meter_value(meter, properties)
        except _Rejection as why:
            rejected.append((index, raw_events[index], why))
            continue
        valid.append(
            _Valid(index, transaction_id, customer_id, meter.id, timestamp, properties, properties_json.decode(), value)
        )

    # Within a batch the first valid occurrence of a transaction_id wins; a rejected event claims nothing.
    first: dict[str, _Valid] = {}
    duplicates: list[int] = []
    for row in valid:
        if row.transaction_id in first:
            duplicates.append(row.index)
        else:
            first[row.transaction_id] = row
    for index, event, why in rejected:
        payload = event.payload if isinstance(event, Unreadable) else event
        transaction_id = payload.get("transaction_id") if isinstance(payload, dict) else None
        results[index] = EventResult(
            transaction_id if isinstance(transaction_id, str) else None, REJECTED, str(why.code), why.reason, why.field
        )
    return _Batch(list(first.values()), results, rejected, duplicates)


# ------------------------------------------------------------------------------------------------ storage

_STAGE_DDL = """
CREATE TEMPORARY TABLE IF NOT EXISTS usage_ingest_stage (
    transaction_id text COLLATE "C" NOT NULL,
    customer_id bigint NOT NULL,
    meter_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    properties jsonb NOT NULL,
    value numeric
) ON COMMIT DELETE ROWS
"""

# One statement: the staged rows are consumed (so a batch inside an outer transaction leaves nothing
# behind; a small batch comes as VALUES instead), keys inserted in a stable order (concurrent batches sharing
# ids then wait instead of deadlocking), events inserted for the keys that were new, and their hourly totals
# upserted.
_STORE_TEMPLATE = """
WITH staged AS (
    {staged}
), new_keys AS (
    INSERT INTO usage_eventkey (transaction_id, event_timestamp, received_at)
    SELECT transaction_id, ts, %(now)s FROM staged ORDER BY transaction_id COLLATE "C"
    ON CONFLICT (transaction_id) DO NOTHING
    RETURNING transaction_id
), inserted AS (
    INSERT INTO usage_usageevent (transaction_id, customer_id, meter_id, "timestamp", properties, value,
                                  received_at, source)
    SELECT s.transaction_id, s.customer_id, s.meter_id, s.ts, s.properties, s.value, %(now)s, %(source)s
    FROM staged s JOIN new_keys k ON k.transaction_id = s.transaction_id
    ORDER BY s.customer_id, s.meter_id, s.ts
    RETURNING id, customer_id, meter_id, "timestamp", value
), hourly AS (
    SELECT customer_id, meter_id, date_trunc('hour', "timestamp", 'UTC') AS hour,
           count(*) AS event_count, coalesce(sum(value), 0) AS value_sum, max(value) AS value_max,
           max("timestamp") AS latest_timestamp,
           (array_agg(value ORDER BY "timestamp" DESC, id DESC))[1] AS latest_value,
           (array_agg(id ORDER BY "timestamp" DESC, id DESC))[1] AS latest_event_id
    FROM inserted GROUP BY 1, 2, 3
), rolled AS (
    INSERT INTO usage_usagehourlyrollup AS r (customer_id, meter_id, hour, event_count, value_sum, value_max,
                                              latest_timestamp, latest_value, latest_event_id)
    SELECT customer_id, meter_id, hour, event_count, value_sum, value_max, latest_timestamp, latest_value,
           latest_event_id
    FROM hourly ORDER BY customer_id, meter_id, hour
    ON CONFLICT (customer_id, meter_id, hour) DO UPDATE SET
        event_count = r.event_count + EXCLUDED.event_count,
        value_sum = r.value_sum + EXCLUDED.value_sum,
        value_max = GREATEST(r.value_max, EXCLUDED.value_max),
        latest_timestamp = CASE WHEN (EXCLUDED.latest_timestamp, EXCLUDED.latest_event_id)
                                     > (r.latest_timestamp, r.latest_event_id)
                                THEN EXCLUDED.latest_timestamp ELSE r.latest_timestamp END,
        latest_value = CASE WHEN (EXCLUDED.latest_timestamp, EXCLUDED.latest_event_id)
                                 > (r.latest_timestamp, r.latest_event_id)
                            THEN EXCLUDED.latest_value ELSE r.latest_value END,
        latest_event_id = CASE WHEN (EXCLUDED.latest_timestamp, EXCLUDED.latest_event_id)
                                    > (r.latest_timestamp, r.latest_event_id)
                               THEN EXCLUDED.latest_event_id ELSE r.latest_event_id END
)
SELECT transaction_id FROM new_keys
"""


_COPY_NULL = "\\N"


def _copy_text(text: str) -> str:
    # COPY's text format: a backslash starts an escape. Tabs, newlines and other control characters never get
    # here (ids are printable; orjson escapes control characters inside JSON strings).
    return text.replace("\\", "\\\\") if "\\" in text else text


_STORE_FROM_STAGE = _STORE_TEMPLATE.format(staged="DELETE FROM usage_ingest_stage RETURNING *")
# Up to this many events, one statement with the rows as VALUES: no temporary table, COPY or extra round trip,
# which is what a single event's latency is made of.
SMALL_BATCH = 64
_VALUES_ROW = (
    "(%s::text COLLATE \"C\", %s::bigint, %s::bigint, %s::timestamptz, %s::jsonb, %s::numeric)"
)


@functools.lru_cache(maxsize=SMALL_BATCH)
def _store_values_sql(count: int) -> str:
    rows = ", ".join([_VALUES_ROW] * count)
    # Only placeholders are put together here, never values.
    staged = f"SELECT * FROM (VALUES {rows}) AS v (transaction_id, customer_id, meter_id, ts, properties, value)"  # noqa: S608
    return _STORE_TEMPLATE.replace("%(now)s", "%s").replace("%(source)s", "%s").format(staged=staged)


def _store_postgresql(rows: list[_Valid], *, source: str, now: datetime) -> set[str]:
    with connection.cursor() as cursor:
        if len(rows) <= SMALL_BATCH:
            params: list[Any] = []
            for row in rows:
                params.extend((row.transaction_id, row.customer_id, row.meter_id, row.timestamp,
                               row.properties_json, row.value))
            # The statement's own placeholders come after the rows': received_at twice, then the source.
            cursor.execute(_store_values_sql(len(rows)), [*params, now, now, source])
            return {transaction_id for (transaction_id,) in cursor.fetchall()}
        # One COPY buffer built in Python is several times cheaper than a write_row() call per event.
        lines = [
            f"{_copy_text(row.transaction_id)}\t{row.customer_id}\t{row.meter_id}\t{row.timestamp.isoformat()}\t"
            f"{_copy_text(row.properties_json)}\t{_COPY_NULL if row.value is None else row.value}\n"
            for row in rows
        ]
        cursor.execute(_STAGE_DDL)
        with cursor.copy(
            "COPY usage_ingest_stage (transaction_id, customer_id, meter_id, ts, properties, value) FROM STDIN"
        ) as copy:
            copy.write("".join(lines))
        cursor.execute(_STORE_FROM_STAGE, {"now": now, "source": source})
        return {transaction_id for (transaction_id,) in cursor.fetchall()}


def _store_sqlite(rows: list[_Valid], *, source: str, now: datetime) -> set[str]:
    # SQLite transactions here are IMMEDIATE (settings): the write lock is held from the start, so this
    # check-then-insert cannot race another writer.
    existing: set[str] = set()
    ids = [row.transaction_id for row in rows]
    for start in range(0, len(ids), 500):
        existing.update(
            EventKey.objects.filter(transaction_id__in=ids[start : start + 500]).values_list(
                "transaction_id", flat=True
            )
        )
    new_rows = [row for row in rows if row.transaction_id not in existing]
    if not new_rows:
        return set()
    EventKey.objects.bulk_create(
        [EventKey(transaction_id=r.transaction_id, event_timestamp=r.timestamp, received_at=now) for r in new_rows],
        batch_size=500,
    )
    # Raw inserts: the properties go in as the JSON text parsed from the request, every digit kept.
    ops = connection.ops
    received = ops.adapt_datetimefield_value(now)
    events: list[_Stored] = []
    with connection.cursor() as cursor:
        for row in new_rows:
            cursor.execute(
                _INSERT_EVENT_SQLITE,
                [row.transaction_id, row.customer_id, row.meter_id, ops.adapt_datetimefield_value(row.timestamp),
                 row.properties_json, ops.adapt_decimalfield_value(row.value, 38, 12), received, source],
            )
            events.append(_Stored(cursor.fetchone()[0], row.customer_id, row.meter_id, row.timestamp, row.value))
    _upsert_rollups_python(events)
    return {row.transaction_id for row in new_rows}


_INSERT_EVENT_SQLITE = (
    "INSERT INTO usage_usageevent (transaction_id, customer_id, meter_id, timestamp, properties, value, received_at,"
    " source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class _Stored:
    pk: int
    customer_id: int
    meter_id: int
    timestamp: datetime
    value: Decimal | None


def _upsert_rollups_python(events: list[_Stored]) -> None:
    totals: dict[tuple[int, int, datetime], list[Any]] = {}
    with localcontext() as context:
        context.prec = 80  # sums of 38-digit values stay exact
        for event in events:
            hour = event.timestamp.replace(minute=0, second=0, microsecond=0)
            key = (event.customer_id, event.meter_id, hour)
            entry = totals.get(key)
            if entry is None:
                totals[key] = [1, event.value or Decimal(0), event.value, event.timestamp, event.value, event.pk]
                continue
            entry[0] += 1
            entry[1] += event.value or Decimal(0)
            if event.value is not None and (entry[2] is None or event.value > entry[2]):
                entry[2] = event.value
            if (event.timestamp, event.pk) > (entry[3], entry[5]):
                entry[3], entry[4], entry[5] = event.timestamp, event.value, event.pk
        for (customer_id, meter_id, hour), (count, total, largest, latest_at, latest, latest_id) in totals.items():
            rollup = UsageHourlyRollup.objects.filter(customer_id=customer_id, meter_id=meter_id, hour=hour).first()
            if rollup is None:
                UsageHourlyRollup.objects.create(
                    customer_id=customer_id,
                    meter_id=meter_id,
                    hour=hour,
                    event_count=count,
                    value_sum=total,
                    value_max=largest,
                    latest_timestamp=latest_at,
                    latest_value=latest,
                    latest_event_id=latest_id,
                )
                continue
            rollup.event_count += count
            rollup.value_sum += total
            if largest is not None and (rollup.value_max is None or largest > rollup.value_max):
                rollup.value_max = largest
            if rollup.latest_timestamp is None or (latest_at, latest_id) > (
                rollup.latest_timestamp,
                rollup.latest_event_id or 0,
            ):
                rollup.latest_timestamp, rollup.latest_value, rollup.latest_event_id = latest_at, latest, latest_id
            rollup.save()


def _storable(value: Any) -> Any:
    """PostgreSQL stores no NUL character: it is kept as the visible text \\u0000 (the only change made)."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def payload_json(event: Any) -> str:
    text = dumps(event)
    if b"\\u0000" in text:
        text = dumps(_storable(event))
    return text.decode()


def _column(value: Any, length: int) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    text = value if isinstance(value, str) else str(value)
    return text.replace("\x00", "")[:length]


_INSERT_REJECTED = (
    "INSERT INTO usage_rejectedevent (transaction_id, external_customer_id, meter_code, payload, reason_code, "
    "reason, status, attempts, source, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_INSERT_REJECTED_PG = _INSERT_REJECTED.replace("%s, %s, %s, %s,", "%s, %s, %s, %s::jsonb,", 1)


def _record_rejections(rejected: list[tuple[int, Any, _Rejection]], *, source: str, now: datetime) -> None:
    rows = []
    for _index, sent, why in rejected:
        event = sent.payload if isinstance(sent, Unreadable) else sent
        fields = event if isinstance(event, dict) else {}
        rows.append(
            (
                _column(fields.get("transaction_id"), 255),
                _column(fields.get("customer_external_id"), 255),
                _column(fields.get("meter_code"), 255),
                payload_json(event),
                str(why.code),
                why.reason,
                RejectedEvent.Status.OPEN,
                1,
                source,
                now,
            )
        )
    # Raw rows: the payload goes in as the JSON text the client's numbers were parsed from, digit for digit.
    sql = _INSERT_REJECTED_PG if connection.vendor == "postgresql" else _INSERT_REJECTED
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _store(rows: list[_Valid], *, source: str, now: datetime) -> set[str]:
    if not rows:
        return set()
    if connection.vendor == "postgresql":
        return _store_postgresql(rows, source=source, now=now)
    return _store_sqlite(rows, source=source, now=now)


def _one_statement(batch: _Batch, *, record_rejections: bool) -> bool:
    return (
        connection.vendor == "postgresql"
        and 0 < len(batch.valid) <= SMALL_BATCH
        and not (record_rejections and batch.rejected)
        and connection.get_autocommit()
        and not connection.in_atomic_block
    )


def _retryable(exc: Exception) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in _RETRYABLE_SQLSTATES


# ---------------------------------------------------------------------------------------------- services


def _ingest(
    raw_events: Sequence[Any],
    *,
    source: str,
    now: datetime,
    record_rejections: bool,
    default_times: Sequence[datetime] | None = None,
) -> tuple[list[EventResult], _Batch]:
    refreshed = False
    attempt = 0
    while True:
        batch = _validate_batch(raw_events, now=now, default_times=default_times)
        try:
            if _one_statement(batch, record_rejections=record_rejections):
                # A small batch with nothing else to write is one statement, atomic by itself: run outside a
                # transaction block, it saves the BEGIN and COMMIT round trips a single event's latency is made of.
                new = _store(batch.valid, source=source, now=now)
            else:
                with transaction.atomic():
                    new = _store(batch.valid, source=source, now=now)
                    if record_rejections and batch.rejected:
                        _record_rejections(batch.rejected, source=source, now=now)
            break
        except IntegrityError:
            # A cached customer or meter deleted since it was cached: look everything up afresh once.
            if refreshed:
                raise
            refreshed = True
            clear_caches()
        except OperationalError as exc:
            attempt += 1
            if not _retryable(exc) or attempt >= RETRIES:
                raise
            time.sleep(0.01 * attempt)
    results = batch.results
    for row in batch.valid:
        results[row.index] = EventResult(row.transaction_id, ACCEPTED if row.transaction_id in new else DUPLICATE)
    for index in batch.in_batch_duplicates:
        results[index] = EventResult(raw_events[index]["transaction_id"], DUPLICATE)
    return results, batch  # type: ignore[return-value]


def ingest_events(raw_events: Sequence[Any], *, source: str = EventSource.API, now: datetime) -> list[EventResult]:
    """Validate and store a batch of events; one result per event, in the order received.

    Events without a timestamp happened at `now`, which is also their received_at.
    """
    results, _batch = _ingest(raw_events, source=source, now=now, record_rejections=True)
    return results


def reprocess_rejected(ids: Iterable[int], *, now: datetime) -> dict[str, int]:
    """Run open rejected events through ingestion again, with what the client originally sent.

    Accepted → status reprocessed; already counted → duplicate; still bad → stays open with the new reason.
    Every attempt counts. An event sent without a timestamp keeps the time it was first received.
    Returns {"reprocessed", "duplicate", "rejected", "skipped"} (skipped: not open any more).
    """
    wanted = sorted(set(ids))
    counts = {"reprocessed": 0, "duplicate": 0, "rejected": 0, "skipped": 0}
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        with transaction.atomic():
            rows = list(
                RejectedEvent.objects.select_for_update()
                .filter(pk__in=chunk, status=RejectedEvent.Status.OPEN)
                .order_by("pk")
                .annotate(payload_text=Cast("payload", TextField()))
                .values_list("pk", "payload_text", "received_at")
            )
            counts["skipped"] += len(chunk) - len(rows)
            if not rows:
                continue
            events = [parse_json(text) for _pk, text, _received in rows]
            results, _batch = _ingest(
                events,
                source=EventSource.REPROCESS,
                now=now,
                record_rejections=False,
                default_times=[received for _pk, _text, received in rows],
            )
            by_status: dict[str, list[int]] = {ACCEPTED: [], DUPLICATE: []}
            for (pk, _text, _received), result in zip(rows, results, strict=True):
                if result.status == REJECTED:
                    counts["rejected"] += 1
                    RejectedEvent.objects.filter(pk=pk).update(
                        reason_code=result.reason_code, reason=result.reason, attempts=_plus_one()
                    )
                else:
                    by_status[result.status].append(pk)
            for status, new_status, key in (
                (ACCEPTED, RejectedEvent.Status.REPROCESSED, "reprocessed"),
                (DUPLICATE, RejectedEvent.Status.DUPLICATE, "duplicate"),
            ):
                if by_status[status]:
                    counts[key] += RejectedEvent.objects.filter(pk__in=by_status[status]).update(
                        status=new_status, resolved_at=now, attempts=_plus_one()
                    )
    return counts


def discard_rejected(ids: Iterable[int], *, now: datetime) -> int:
    """Close open rejected events that will never be counted (e.g. test traffic); they stay for the record."""
    return RejectedEvent.objects.filter(pk__in=list(ids), status=RejectedEvent.Status.OPEN).update(
        status=RejectedEvent.Status.DISCARDED, resolved_at=now
    )


def _plus_one() -> Any:
    return F("attempts") + 1


def preview_events(raw_events: Sequence[Any], *, now: datetime) -> list[EventResult]:
    """What ingest_events would answer, without writing anything (the CSV dry run)."""
    batch = _validate_batch(raw_events, now=now, default_times=None)
    ids = [row.transaction_id for row in batch.valid]
    known: set[str] = set()
    for start in range(0, len(ids), 1000):
        known.update(EventKey.objects.filter(transaction_id__in=ids[start : start + 1000])
                     .values_list("transaction_id", flat=True))
    results = batch.results
    for row in batch.valid:
        results[row.index] = EventResult(row.transaction_id, DUPLICATE if row.transaction_id in known else ACCEPTED)
    for index in batch.in_batch_duplicates:
        results[index] = EventResult(raw_events[index]["transaction_id"], DUPLICATE)
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------- CSV backfill

CSV_REQUIRED = ("transaction_id", "customer_external_id", "meter_code")
CSV_OPTIONAL = ("timestamp", "properties")
CSV_PROPERTY_PREFIX = "properties."


class BackfillFileError(ValueError):
    """The file cannot be read as a usage CSV at all (header); nothing was ingested."""


@dataclass
class BackfillSummary:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    # The first rejections with their line numbers, to show the operator where to look.
    examples: list[tuple[int, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def add(self, results: list[EventResult], line_numbers: list[int]) -> None:
        self.rows += len(results)
        for line, result in zip(line_numbers, results, strict=True):
            if result.status == ACCEPTED:
                self.accepted += 1
            elif result.status == DUPLICATE:
                self.duplicates += 1
            else:
                self.rejected += 1
                code = result.reason_code or "rejected"
                self.rejected_by_reason[code] = self.rejected_by_reason.get(code, 0) + 1
                if len(self.examples) < 20:
                    self.examples.append((line, code, result.reason or ""))


def _csv_header(header: list[str]) -> list[str]:
    names = [name.strip() for name in header]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BackfillFileError(f"The column {name!r} appears twice in the header.")
        seen.add(name)
    missing = [name for name in CSV_REQUIRED if name not in seen]
    if missing:
        raise BackfillFileError(f"The header lacks the column(s) {', '.join(missing)}; it has {', '.join(names)}.")
    unknown = [n for n in names if n not in CSV_REQUIRED + CSV_OPTIONAL and not n.startswith(CSV_PROPERTY_PREFIX)]
    if unknown:
        raise BackfillFileError(
            f"Unknown column(s) {', '.join(map(repr, unknown))}: use {', '.join(CSV_REQUIRED + CSV_OPTIONAL)} "
            f"or property columns named {CSV_PROPERTY_PREFIX}<name>."
        )
    if "properties" in seen and any(n.startswith(CSV_PROPERTY_PREFIX) for n in names):
        raise BackfillFileError("Use either a 'properties' JSON column or 'properties.<name>' columns, not both.")
    return names


class _CsvRows:
    """Turns CSV rows into the events the API would have received; the header's columns are read once."""

    def __init__(self, names: list[str]) -> None:
        self.width = len(names)
        self.fields = [(i, n) for i, n in enumerate(names) if n in CSV_REQUIRED or n == "timestamp"]
        self.required = [(i, n) for i, n in self.fields if n in CSV_REQUIRED]
        self.optional = [(i, n) for i, n in self.fields if n not in CSV_REQUIRED]
        self.properties = [(i, n[len(CSV_PROPERTY_PREFIX) :]) for i, n in enumerate(names)
                           if n.startswith(CSV_PROPERTY_PREFIX)]
        self.json_at = names.index("properties") if "properties" in names else None

    def event(self, row: list[str]) -> Any:
        """Empty cells are absent values (an empty transaction_id is still sent: it is missing, and says so)."""
        if len(row) != self.width:
            return Unreadable({"csv_fields": row}, f"the row has {len(row)} fields; the header has {self.width}")
        event: dict[str, Any] = {name: row[i] for i, name in self.required}
        for i, name in self.optional:
            if row[i] != "":
                event[name] = row[i]
        if self.properties:
            properties = {key: row[i] for i, key in self.properties if row[i] != ""}
            if properties:
                event["properties"] = properties
        elif self.json_at is not None and row[self.json_at].strip():
            try:
                event["properties"] = parse_json(row[self.json_at])
            except ValueError:
                event["properties"] = row[self.json_at]  # kept as sent; rejected as malformed
        return event


def csv_row_to_event(row: list[str], names: list[str]) -> Any:
    """One CSV row as the event the API would have received (see _CsvRows)."""
    return _CsvRows(names).event(row)


def backfill_csv(
    lines: Iterable[str],
    *,
    now: datetime,
    batch_size: int = 5000,
    dry_run: bool = False,
    progress: Any = None,
) -> BackfillSummary:
    """Stream a usage CSV through the same validation and deduplication as the API, in constant memory.

    `lines` is a text stream (opened with newline=""). Rows go in batches of `batch_size` through
    ingest_events (source "csv"), in file order, or through preview_events for a dry run. `progress(summary)`
    is called after each batch. Raises BackfillFileError, before anything is stored, when the header is
    unusable.

    On PostgreSQL, outside a caller's transaction, batch N is stored by a second thread (its own connection)
    while this one reads and parses batch N+1: the database and Python work at the same time, and at most two
    batches are in memory. Batches are still stored one after the other, in order.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from django.db import connections

    from usage.partitions import ensure_partitions_for

    started = time.monotonic()
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise BackfillFileError("The file is empty: it needs a header row.") from None
    except csv.Error as exc:
        raise BackfillFileError(f"The header cannot be read as CSV: {exc}") from None
    names = _csv_header(header)
    rows_to_events = _CsvRows(names)
    timestamp_at = names.index("timestamp") if "timestamp" in names else None
    summary = BackfillSummary()
    months_ready: set[date] = set()
    batch: list[Any] = []
    line_numbers: list[int] = []
    months: set[date] = set()
    overlap = not dry_run and connection.vendor == "postgresql" and not connection.in_atomic_block
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill") if overlap else None
    pending: tuple[Future, list[int]] | None = None

    def store(events: list[Any], new_months: set[date]) -> list[EventResult]:
        # Historical months get their own partitions rather than filling the DEFAULT one (placement only: an
        # event in a month without a partition is still stored, in DEFAULT).
        if new_months:
            ensure_partitions_for(new_months)
        return ingest_events(events, source=EventSource.CSV, now=now)

    def record(results: list[EventResult], numbers: list[int]) -> None:
        summary.add(results, numbers)
        summary.seconds = time.monotonic() - started
        if progress is not None:
            progress(summary)

    def collect() -> None:
        nonlocal pending
        if pending is not None:
            future, numbers = pending
            pending = None
            record(future.result(), numbers)

    def flush() -> None:
        nonlocal batch, line_numbers, pending
        if not batch:
            return
        events, numbers = batch, line_numbers
        batch, line_numbers = [], []
        if dry_run:
            record(preview_events(events, now=now), numbers)
        else:
            new_months = months - months_ready
            months_ready.update(months)
            if executor is None:
                record(store(events, new_months), numbers)
            else:
                collect()
                pending = (executor.submit(store, events, new_months), numbers)
        months.clear()

    try:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                batch.append(Unreadable({"csv_line": reader.line_num}, f"the row cannot be read as CSV: {exc}"))
                line_numbers.append(reader.line_num)
                continue
            if not row:
                continue  # a blank line: nothing was sent
            batch.append(rows_to_events.event(row))
            line_numbers.append(reader.line_num)
            if timestamp_at is not None and timestamp_at < len(row):
                month = _MONTH.match(row[timestamp_at])
                if month:
                    months.add(date(int(month[1]), int(month[2]), 1))
            if len(batch) >= batch_size:
                flush()
        flush()
        collect()
    finally:
        if executor is not None:
            if pending is not None:
                pending[0].exception()  # let the batch in flight finish (or fail) before closing its connection
            executor.submit(connections.close_all).result()
            executor.shutdown()
    summary.seconds = time.monotonic() - started
    return summary


_MONTH = re.compile(r"(20\d\d)-(0[1-9]|1[0-2])-")


def run_stored_backfill(backfill: Any, *, now: datetime) -> dict[str, Any]:
    """Run an uploaded UsageBackfill (admin): stream its stored file, keep its counters current as it goes."""
    import io

    from usage.models import UsageBackfill

    if backfill.status == UsageBackfill.Status.DONE:
        return {"status": backfill.status}
    UsageBackfill.objects.filter(pk=backfill.pk).update(
        status=UsageBackfill.Status.RUNNING, started_at=now, error="", first_rejections=""
    )

    def progress(summary: BackfillSummary) -> None:
        UsageBackfill.objects.filter(pk=backfill.pk).update(
            rows=summary.rows, accepted=summary.accepted, duplicates=summary.duplicates, rejected=summary.rejected,
            rejected_by_reason=summary.rejected_by_reason,
        )

    try:
        with backfill.file.open("rb") as raw:
            lines = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            summary = backfill_csv(lines, now=now, dry_run=backfill.dry_run, progress=progress)
    except (BackfillFileError, UnicodeDecodeError, OSError) as exc:
        message = str(exc) if isinstance(exc, BackfillFileError) else f"The file cannot be read: {exc}"
        UsageBackfill.objects.filter(pk=backfill.pk).update(
            status=UsageBackfill.Status.FAILED, error=message, finished_at=datetime.now(UTC)
        )
        return {"status": UsageBackfill.Status.FAILED, "error": message}
    progress(summary)
    examples = "\n".join(f"line {line}: {code}: {reason}" for line, code, reason in summary.examples)
    UsageBackfill.objects.filter(pk=backfill.pk).update(
        status=UsageBackfill.Status.DONE, finished_at=datetime.now(UTC), first_rejections=examples
    )
    return {"status": UsageBackfill.Status.DONE, "rows": summary.rows, "accepted": summary.accepted,
            "duplicates": summary.duplicates, "rejected": summary.rejected}
