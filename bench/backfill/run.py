"""Benchmark: `manage.py backfill_usage` on a 5,000,000-row CSV (issue 3: rows/s, peak memory < 300 MB RSS).

    .venv/bin/python bench/backfill/run.py              # 5,000,000 rows
    .venv/bin/python bench/backfill/run.py --rows 200000

What it does:

1. Creates the PostgreSQL database `accrual_bench_backfill` afresh (127.0.0.1:5432, user postgres;
   --database-url to change), runs the migrations, seeds 1,000 customers and two meters (count; sum of tokens).
2. Writes the CSV to a temporary folder, streamed row by row (never held in memory): transaction_id,
   customer_external_id, meter_code, timestamp (spread over the three months before today, so the backfill
   creates the historical monthly partitions), properties.tokens, properties.region. 0.5 % of the rows are
   repeats of earlier transaction ids (answered duplicate) and 0.1 % name an unknown customer (rejected and
   kept), as a real export would have.
3. Runs `manage.py backfill_usage FILE --batch-size 5000` as a child process (billing.settings.production)
   and measures its wall time and its peak resident memory (getrusage of the waited-for child: ru_maxrss,
   the high-water mark of the whole process).
4. Checks the stored events and rollups against what the file holds, prints the machine and the figures, and
   writes them to bench/results/backfill.json (not versioned).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "ingest"))

from run import machine, server_env  # noqa: E402  (bench/ingest/run.py: the same machine report and settings)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/accrual_bench_backfill"
TARGET_RSS_MB = 300


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20240301)
    return parser.parse_args()


def fresh_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=server_env(url), check=True)


def seed(customers: int) -> None:
    from customers.models import BillingEntity, Customer
    from usage.models import Meter

    entity = BillingEntity.objects.create(
        code="bench", name="Bench", legal_name="Bench Inc.", country="US", default_currency="USD",
        invoice_prefix="BINV", credit_note_prefix="BCN",
    )
    Customer.objects.bulk_create(
        Customer(billing_entity=entity, external_id=f"bench-{n:05d}", name=f"Bench {n}", country="US", currency="USD")
        for n in range(customers)
    )
    Meter.objects.create(code="bench_calls", name="Calls", aggregation="count")
    Meter.objects.create(code="bench_tokens", name="Tokens", aggregation="sum", field_name="tokens")


def write_csv(path: Path, rows: int, customers: int, seed_value: int) -> dict:
    """Stream the file to disk; returns what it holds (distinct new ids, their token total, rejects)."""
    rng = random.Random(seed_value)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    span = int(timedelta(days=90).total_seconds())
    distinct = 0
    unknown = 0
    repeats = 0
    tokens_total = 0
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["transaction_id", "customer_external_id", "meter_code", "timestamp", "properties.tokens",
                         "properties.region"])
        for n in range(rows):
            draw = rng.random()
            if draw < 0.005 and distinct:
                # A repeat of an earlier id (with other values): a duplicate, never counted twice.
                writer.writerow([f"bf-{rng.randrange(distinct):09d}", "bench-00000", "bench_calls",
                                 (end - timedelta(seconds=rng.randrange(span))).isoformat(), "", "eu"])
                repeats += 1
                continue
            when = (end - timedelta(seconds=rng.randrange(span))).isoformat().replace("+00:00", "Z")
            if draw < 0.006:
                # An unknown customer: rejected with its reason and kept (its id is not claimed).
                writer.writerow([f"bf-unknown-{n}", "unknown-customer", "bench_calls", when, "", "us"])
                unknown += 1
                continue
            customer = f"bench-{rng.randrange(customers):05d}"
            if n % 2:
                value = rng.randrange(1, 20_000)
                writer.writerow([f"bf-{distinct:09d}", customer, "bench_tokens", when, value, "eu"])
                tokens_total += value
            else:
                writer.writerow([f"bf-{distinct:09d}", customer, "bench_calls", when, "", "us"])
            distinct += 1
    return {"rows": rows, "new_ids": distinct, "unknown_customer": unknown, "repeats": repeats,
            "tokens_total": tokens_total}


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    args = parse_args()
    env = server_env(args.database_url)
    os.environ.update({k: v for k, v in env.items() if k not in os.environ or k in ("DATABASE_URL",
                                                                                    "DJANGO_SETTINGS_MODULE")})
    info = machine(args.database_url.rsplit("/", 1)[0] + "/postgres")
    print("machine:", json.dumps(info, indent=2), flush=True)
    print("creating the database and running migrations ...", flush=True)
    fresh_database(args.database_url)
    import django

    django.setup()
    from django.db import connection

    seed(args.customers)
    connection.close()

    with tempfile.TemporaryDirectory(prefix="accrual-backfill-") as folder:
        path = Path(folder) / "usage.csv"
        print(f"writing {args.rows:,} rows to {path} ...", flush=True)
        started = time.perf_counter()
        holds = write_csv(path, args.rows, args.customers, args.seed)
        size_mb = path.stat().st_size / 1024 / 1024
        print(f"  {size_mb:,.0f} MB in {time.perf_counter() - started:.0f} s", flush=True)

        print("running manage.py backfill_usage ...", flush=True)
        log = Path(folder) / "backfill.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        samples: list[tuple[float, float]] = []  # (seconds, RSS MB): constant memory means a flat line
        with log.open("wb") as sink:
            child = subprocess.Popen(
                [sys.executable, "manage.py", "backfill_usage", str(path), "--batch-size", str(args.batch_size)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=sink,
            )
            while child.poll() is None:
                samples.append((time.perf_counter() - started, rss_mb(child.pid)))
                time.sleep(1.0)
            stdout = child.stdout.read() if child.stdout else b""
            result = subprocess.CompletedProcess(child.args, child.returncode, stdout)
        seconds = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        output = result.stdout.decode()
        if result.returncode != 0:
            raise SystemExit(f"backfill failed ({result.returncode}):\n{output}\n{log.read_text()[-3000:]}")
        with log.open(newline="") as text:  # keep the progress display's carriage returns
            progress = text.read().strip().rsplit("\r", 1)[-1]

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT transaction_id) FROM usage_usageevent")
        stored, distinct = cursor.fetchone()
        cursor.execute("SELECT sum(event_count), sum(value_sum) FROM usage_usagehourlyrollup")
        rolled, rolled_sum = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM usage_rejectedevent WHERE reason_code = 'unknown_customer'")
        rejected = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_usageevent'::regclass")
        partitions = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM usage_usageevent_default")
        in_default = cursor.fetchone()[0]
    assert stored == distinct == rolled == holds["new_ids"], (stored, distinct, rolled, holds)
    assert rolled_sum == holds["tokens_total"], (rolled_sum, holds["tokens_total"])
    assert rejected == holds["unknown_customer"], (rejected, holds)

    peak_mb = (peak_kb if peak_kb > before else before) / 1024
    summary = {
        "machine": info,
        "file": {**holds, "size_mb": round(size_mb, 1)},
        "seconds": seconds,
        "rows_per_second": args.rows / seconds,
        "peak_rss_mb": peak_mb,
        "rss_mb_over_time": [(round(t), round(m)) for t, m in samples[:: max(1, len(samples) // 20)]],
        "batch_size": args.batch_size,
        "stored_events": stored,
        "event_partitions": partitions,
        "events_in_default_partition": in_default,
        "command_summary": output,
        "last_progress_line": progress,
        "target_peak_rss_mb": TARGET_RSS_MB,
        "load_average_1_5_15_min_after": list(os.getloadavg()),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "backfill.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(output)
    print(f"backfill of {args.rows:,} rows: {seconds:.0f} s, {args.rows / seconds:,.0f} rows/s")
    quarter = [round(m) for _t, m in samples[:: max(1, len(samples) // 4)]]
    print(f"RSS while running (MB, every quarter of the run): {quarter}")
    print(f"peak RSS of the command: {peak_mb:,.0f} MB   target < {TARGET_RSS_MB} MB  "
          f"{'met' if peak_mb < TARGET_RSS_MB else 'MISSED'}")
    print(f"stored and checked: {stored:,} events once each, {rejected:,} rejected and kept, rollups agree; "
          f"{partitions} partitions, {in_default:,} events in DEFAULT")


if __name__ == "__main__":
    main()
