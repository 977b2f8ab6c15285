"""Benchmark: the period-usage query over 10 million events for 10,000 customers (issue 3, target p99 < 50 ms).

    .venv/bin/python bench/usage_query/run.py            # load once (about 5 minutes), then measure
    .venv/bin/python bench/usage_query/run.py --reload   # drop and rebuild the data set

What it does:

1. Creates the PostgreSQL database `accrual_bench_query` (127.0.0.1:5432, user postgres; override with
   --database-url) and runs the project's migrations, so the event table is partitioned exactly as
   production's (monthly partitions + DEFAULT, index on (customer_id, meter_id, timestamp)).
2. Loads, unless already loaded: 10,000 customers in four timezones (UTC, Europe/Berlin, America/New_York,
   Asia/Kolkata), five meters (count, sum, weighted sum, latest, unique count) and 10,000,000 events over six
   months (April to September 2026), skewed like real usage (the busiest customer sends 1 % of all events),
   with COPY straight into the partitioned event table; then the hourly rollups, computed from the events by
   one INSERT ... SELECT ... GROUP BY, as ingestion would have kept them; then VACUUM ANALYZE.
3. Measures usage.selectors.meter_quantities -- the query the usage endpoint and invoicing run -- for one
   customer and one meter over one calendar month in the customer's timezone (so +05:30 and DST months have
   partial-hour edges): 2,000 random (customer, meter, month) queries after 200 warm-up ones, timed in
   process around the selector call (SQL + Python). Also reported: the same per aggregation, the 100
   busiest customers, and a charge filter (the raw-event path).
4. Prints the machine (CPU model, cores, memory, PostgreSQL version and its memory settings).
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/accrual_bench_query"
WINDOW_START = datetime(2026, 4, 1, tzinfo=UTC)
MONTHS = 6  # April to September 2026
TIMEZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
# code, aggregation, field, carries over, share of the events
METERS = [
    ("bench_api_calls", "count", "", False, 0.40),
    ("bench_tokens", "sum", "tokens", False, 0.30),
    ("bench_storage_gb", "weighted_sum", "gb", True, 0.10),
    ("bench_seats", "latest", "seats", True, 0.10),
    ("bench_active_users", "unique_count", "user", False, 0.10),
]
TARGET_P99_MS = 50.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--reload", action="store_true", help="drop the database and load it again")
    parser.add_argument("--explain", action="store_true", help="print the query plans of one query per path")
    parser.add_argument("--seed", type=int, default=20260401)
    return parser.parse_args()


# --- database and Django ---------------------------------------------------------------------------------------


def ensure_database(url: str, *, reload: bool) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and reload:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DEBUG"] = "false"  # DEBUG would record every query in memory
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings.dev")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- loading -----------------------------------------------------------------------------------------------------


def loaded_events() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM usage_usageevent")  # cheap: the id index
        return cursor.fetchone()[0]


def month_starts() -> list[date]:
    months, day = [], WINDOW_START.date()
    for _ in range(MONTHS):
        months.append(day)
        day = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return months


def load(args: argparse.Namespace, rng: random.Random) -> None:
    from django.db import connection, transaction

    from customers.models import BillingEntity, Customer
    from usage.models import Meter
    from usage.partitions import add_months, ensure_partitions

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usageevent, usage_usagehourlyrollup")
    Customer.objects.filter(external_id__startswith="bench-").delete()
    Meter.objects.filter(code__startswith="bench_").delete()

    entity, _ = BillingEntity.objects.get_or_create(
        code="bench-entity",
        defaults={
            "name": "Bench Seller",
            "legal_name": "Bench Seller Inc.",
            "country": "US",
            "default_currency": "USD",
            "timezone": "UTC",
            "invoice_prefix": "BENCH",
            "credit_note_prefix": "BENCHCN",
        },
    )
    Customer.objects.bulk_create(
        [
            Customer(
                billing_entity=entity,
                external_id=f"bench-{index:05d}",
                name=f"Bench customer {index}",
                legal_name=f"Bench customer {index} LLC",
                country="US",
                currency="USD",
                timezone=TIMEZONES[index % len(TIMEZONES)],
            )
            for index in range(args.customers)
        ],
        batch_size=2000,
    )
    customer_ids = list(
        Customer.objects.filter(external_id__startswith="bench-").order_by("external_id").values_list("id", flat=True)
    )
    meters = [
        Meter.objects.create(
            code=code,
            name=code,
            aggregation=aggregation,
            field_name=field,
            carries_over=carries,
            filters={},
            group_by=[],
        )
        for code, aggregation, field, carries, _share in METERS
    ]
    ensure_partitions(WINDOW_START.date(), MONTHS)
    ensure_partitions(add_months(WINDOW_START.date(), MONTHS), 1)
    print(f"  customers and meters: {time.perf_counter() - started:.1f} s", flush=True)

    copy_started = time.perf_counter()
    copy_events(args, rng, customer_ids, meters)
    copied = time.perf_counter() - copy_started
    print(f"  COPY of {args.events:,} events: {copied:.1f} s ({args.events / copied:,.0f} rows/s)", flush=True)

    rollup_started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '512MB'")
        # One sort: the window aggregates give each (customer, meter, hour) its totals, DISTINCT ON keeps the
        # row of its latest event by (timestamp, id), as ingestion keeps latest_*.
        cursor.execute(
            """
            INSERT INTO usage_usagehourlyrollup
                (customer_id, meter_id, hour, event_count, value_sum, value_max,
                 latest_timestamp, latest_value, latest_event_id)
            SELECT DISTINCT ON (customer_id, meter_id, hour)
                   customer_id, meter_id, hour, count(*) OVER w, coalesce(sum(value) OVER w, 0), max(value) OVER w,
                   "timestamp", value, id
            FROM (SELECT customer_id, meter_id, date_trunc('hour', "timestamp", 'UTC') AS hour, "timestamp", value, id
                  FROM usage_usageevent) AS events
            WINDOW w AS (PARTITION BY customer_id, meter_id, hour)
            ORDER BY customer_id, meter_id, hour, "timestamp" DESC, id DESC
            """
        )
        rollups = cursor.rowcount
    print(
        f"  rollups ({rollups:,} rows) by INSERT ... SELECT ... GROUP BY: {time.perf_counter() - rollup_started:.1f} s"
    )

    vacuum_started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE usage_usageevent")  # also every partition
        cursor.execute("VACUUM ANALYZE usage_usagehourlyrollup")
        cursor.execute("ANALYZE customers_customer")
    print(f"  VACUUM ANALYZE: {time.perf_counter() - vacuum_started:.1f} s")
    print(f"  loaded in {time.perf_counter() - started:.0f} s", flush=True)


def copy_events(args: argparse.Namespace, rng: random.Random, customer_ids: list[int], meters: list) -> None:
    """Text-format COPY in 50,000-row chunks straight into the partitioned table (PostgreSQL routes each row
    to its month's partition)."""
    from django.db import connection

    from usage.partitions import add_months

    window_days = (add_months(WINDOW_START.date(), MONTHS) - WINDOW_START.date()).days
    window_micros = window_days * 86_400 * 1_000_000
    # Timestamps are composed from precomputed day and minute texts: datetime objects would make Python,
    # not PostgreSQL, the bottleneck of the load.
    days = [(WINDOW_START.date() + timedelta(days=offset)).isoformat() for offset in range(window_days)]
    minutes = [f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60)]
    received = "2026-10-01 00:00:00+00"
    cumulative, total = [], 0.0
    for *_rest, share in METERS:
        total += share
        cumulative.append(total)
    regions, models = ("eu", "us", "apac"), ("large", "small")
    n_customers = len(customer_ids)
    meter_ids = [meter.pk for meter in meters]
    aggregations = [aggregation for _code, aggregation, *_rest in METERS]
    random_, randrange = rng.random, rng.randrange
    connection.ensure_connection()
    raw = connection.connection  # the psycopg connection
    with (
        raw.cursor() as cursor,
        cursor.copy(
            'COPY usage_usageevent (transaction_id, customer_id, meter_id, "timestamp", properties, value, '
            "received_at, source) FROM STDIN"
        ) as copy,
    ):
        buffer = io.StringIO()
        write = buffer.write
        for index in range(args.events):
            # Skewed: customer rank r gets a share ~ 1/sqrt(r); the busiest sends 1 % of the events.
            customer_id = customer_ids[int(n_customers * random_() ** 2)]
            slot = min(bisect.bisect(cumulative, random_()), len(METERS) - 1)
            seconds, micros = divmod(int(random_() * window_micros), 1_000_000)
            day, seconds = divmod(seconds, 86_400)
            minute, second = divmod(seconds, 60)
            moment = f"{days[day]} {minutes[minute]}{second:02d}.{micros:06d}+00"
            aggregation = aggregations[slot]
            region = regions[index % 3]
            if aggregation == "count":
                properties, value = f'{{"region": "{region}"}}', "\\N"
            elif aggregation == "sum":
                amount = randrange(1, 5000)
                properties = f'{{"model": "{models[index % 2]}", "region": "{region}", "tokens": {amount}}}'
                value = str(amount)
            elif aggregation == "weighted_sum":
                change = randrange(-2, 10)
                properties, value = f'{{"gb": {change}}}', str(change)
            elif aggregation == "latest":
                seats = randrange(1, 500)
                properties, value = f'{{"seats": {seats}}}', str(seats)
            else:
                properties, value = f'{{"user": "u{randrange(0, 400)}"}}', "\\N"
            write(
                f"bench-{index}\t{customer_id}\t{meter_ids[slot]}\t{moment}\t{properties}\t{value}\t{received}\tapi\n"
            )
            if index % 50_000 == 49_999:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
                write = buffer.write
                if index % 1_000_000 == 999_999:
                    print(f"    {index + 1:,} events", flush=True)
        copy.write(buffer.getvalue())
    raw.commit()


# --- measuring ---------------------------------------------------------------------------------------------------


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def month_range(month: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    following = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    return datetime(month.year, month.month, 1, tzinfo=zone), datetime(following.year, following.month, 1, tzinfo=zone)


def measure(label: str, queries: list[tuple], warmup: int) -> dict:
    from usage import selectors

    for customer_id, meter, start, end, filters in queries[:warmup]:
        selectors.meter_quantities(customer_id, meter, start, end, filters=filters)
    timings = []
    for customer_id, meter, start, end, filters in queries[warmup:]:
        began = time.perf_counter()
        selectors.meter_quantities(customer_id, meter, start, end, filters=filters)
        timings.append((time.perf_counter() - began) * 1000)
    result = {
        "label": label,
        "queries": len(timings),
        "p50_ms": statistics.median(timings),
        "p99_ms": percentile(timings, 0.99),
        "max_ms": max(timings),
        "mean_ms": statistics.fmean(timings),
    }
    print(
        f"  {label:<46} n={result['queries']:>5}  p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms"
        f"  max {result['max_ms']:7.2f} ms"
    )
    return result


def run_queries(args: argparse.Namespace, rng: random.Random) -> list[dict]:
    from django.db import connection

    from customers.models import Customer
    from usage.models import Meter

    customers = list(Customer.objects.filter(external_id__startswith="bench-").values_list("id", "timezone"))
    meters = list(Meter.objects.filter(code__startswith="bench_").order_by("code"))
    by_aggregation = {meter.aggregation: meter for meter in meters}
    months = month_starts()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT customer_id FROM usage_usagehourlyrollup GROUP BY customer_id"
            " ORDER BY sum(event_count) DESC LIMIT 100"
        )
        busiest = [row[0] for row in cursor.fetchall()]
    zones = {str(zone): ZoneInfo(str(zone)) for _id, zone in customers}

    def query(customer: tuple, meter: Meter, filters: dict | None = None) -> tuple:
        month = rng.choice(months)
        start, end = month_range(month, zones[str(customer[1])])
        return customer[0], meter, start, end, filters

    total = args.queries + args.warmup
    tz_of = dict(customers)
    results = []
    print("\nperiod-usage query (usage.selectors.meter_quantities), one customer x meter x calendar month:")
    main = [query(rng.choice(customers), rng.choice(meters)) for _ in range(total)]
    results.append(measure("random customer, meter and month (MAIN)", main, args.warmup))
    for aggregation, meter in sorted(by_aggregation.items()):
        sample = [query(rng.choice(customers), meter) for _ in range(args.queries // 4 + args.warmup // 4)]
        results.append(measure(f"  {aggregation}", sample, args.warmup // 4))
    heavy = [query((cid, tz_of[cid]), rng.choice(meters)) for cid in rng.choices(busiest, k=total)]
    results.append(measure("100 busiest customers, random meter and month", heavy, args.warmup))
    filtered = [
        query((cid, tz_of[cid]), by_aggregation["sum"], {"model": ["large"]}) for cid in rng.choices(busiest, k=total)
    ]
    results.append(measure("busiest customers, sum with a charge filter", filtered, args.warmup))

    if args.explain:
        explain(main[0], by_aggregation)
    return results


def explain(sample: tuple, by_aggregation: dict) -> None:
    """The plans of the statements one query of each kind runs (captured from the selector itself)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from usage import selectors

    customer_id, _meter, start, end, _filters = sample
    for aggregation, meter in sorted(by_aggregation.items()):
        with CaptureQueriesContext(connection) as captured:
            selectors.meter_quantities(customer_id, meter, start, end)
        for statement in captured.captured_queries:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement["sql"])
                print(f"\n-- {aggregation}: {statement['sql'][:160]}...")
                print("\n".join(row[0] for row in cursor.fetchall()))


# --- the machine -------------------------------------------------------------------------------------------------


def machine() -> dict:
    from django.db import connection

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0]
        settings = {}
        for name in ("shared_buffers", "work_mem", "effective_cache_size", "random_page_cost", "jit"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_usageevent'::regclass")
        partitions = cursor.fetchone()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15_min": tuple(round(load, 2) for load in os.getloadavg()),
        "postgresql": version,
        "postgresql_settings": settings,
        "database_size": size,
        "event_partitions": partitions,
    }


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    ensure_database(args.database_url, reload=args.reload)
    setup_django(args.database_url)

    have = loaded_events()
    if have != args.events:
        print(f"loading {args.events:,} events for {args.customers:,} customers into {args.database_url} ...")
        load(args, rng)
    else:
        print(f"{have:,} events already loaded in {args.database_url} (--reload to rebuild)")

    info = machine()
    print("\nmachine:")
    for key, value in info.items():
        print(f"  {key}: {value}")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_usagehourlyrollup")
        rollups = cursor.fetchone()[0]
        cursor.execute(
            "SELECT percentile_disc(ARRAY[0.5, 0.99, 1.0]) WITHIN GROUP (ORDER BY n) FROM "
            "(SELECT sum(event_count) AS n FROM usage_usagehourlyrollup GROUP BY customer_id) AS per_customer"
        )
        spread = cursor.fetchone()[0]
    print(
        f"  rollup rows: {rollups:,}; events per customer: median {spread[0]:,}, p99 {spread[1]:,}, max {spread[2]:,}"
    )

    results = run_queries(args, rng)
    main_result = results[0]
    verdict = "MET" if main_result["p99_ms"] < TARGET_P99_MS else "MISSED"
    print(
        f"\nRESULT: p50 {main_result['p50_ms']:.2f} ms, p99 {main_result['p99_ms']:.2f} ms over "
        f"{main_result['queries']:,} queries; target p99 < {TARGET_P99_MS:.0f} ms: {verdict}"
    )
    out = ROOT / "bench" / "results" / "usage_query.json"  # bench/results/ is not versioned
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "results": results}, indent=2, default=str) + "\n")
    print(f"(figures also written to {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
