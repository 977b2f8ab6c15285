"""Benchmark: batch ingestion through gunicorn into PostgreSQL with deduplication (issue 3: 50,000 events/s,
>= 0.4 of a raw COPY), and single-event latency at a fixed 200 requests/s (p99 < 20 ms).

    .venv/bin/python bench/ingest/run.py

What it does:

1. Creates the PostgreSQL database `accrual_bench` afresh (127.0.0.1:5432, user postgres; --database-url to
   change) and runs the project's migrations: the partitioned event table, its dedup keys and rollups.
2. Seeds 1,000 customers, two meters (a count and a sum of `tokens`) and a write API key.
3. Starts gunicorn (billing.settings.production, --workers sync workers, default 4: on 2 cores, workers
   waiting on a commit leave the CPU to the others) and sends
   --events events (default 300,000) as batches of 1,000 to POST /api/v1/events/batch from --clients
   client processes (default 3), every event new (so every one goes through the dedup insert), with
   timestamps in the last 10 minutes as a live metering stream has. The rate is events acknowledged as
   accepted per second of wall time, all 200 answers checked; the database count is checked after.
4. In the same run, COPYs the same rows (same columns and values) in one stream into a plain table with no
   index, and prints that rate and the ratio between the two.
5. Sends single events (POST /api/v1/events) at a fixed 200 requests/s for --single-seconds (default 20),
   open loop: latency is measured from each request's scheduled start, so a slow answer delays no one else's
   measurement. Prints p50 / p99 / max. This phase runs first, after the warm-up, so that it measures the
   steady state rather than the checkpoint and autovacuum that follow the bulk phase.
6. Prints the machine (CPU model, cores, memory, load average before the run, PostgreSQL version) and writes
   everything to bench/results/ingest.json (not versioned).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing
import os
import platform
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/accrual_bench"
TARGET_RATE = 50_000
TARGET_RATIO = 0.4
TARGET_P99_MS = 20.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--single-rate", type=int, default=200)
    parser.add_argument("--single-seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=20240115)
    return parser.parse_args()


# --- machine -------------------------------------------------------------------------------------------------------


def machine(url: str) -> dict:
    import psycopg

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    with psycopg.connect(url) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("shared_buffers", "synchronous_commit", "wal_level", "max_wal_size")}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15_min_before": list(os.getloadavg()),
        "postgresql": version,
        "postgresql_settings": settings,
    }


# --- database -----------------------------------------------------------------------------------------------------


def fresh_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=server_env(url), check=True)


def server_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing.settings.production",
        "DATABASE_URL": url,
        "DB_CONN_MAX_AGE": "600",
        "SECRET_KEY": "bench-only-secret-key-not-for-production-use-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def seed(customers: int) -> tuple[str, dict[str, int], dict[str, int]]:
    """Customers, meters and a key; returns the raw key and the ids the raw COPY needs."""
    from billing.api.models import APIKey, hash_key
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
    raw, prefix = APIKey.generate()
    APIKey.objects.create(name="bench", prefix=prefix, hashed_key=hash_key(raw), scope=APIKey.Scope.WRITE)
    return (
        raw,
        dict(Customer.objects.values_list("external_id", "id")),
        dict(Meter.objects.values_list("code", "id")),
    )


# --- events -------------------------------------------------------------------------------------------------------


def make_events(count: int, customers: int, seed_value: int, prefix: str) -> list[dict]:
    rng = random.Random(seed_value)
    now = datetime.now(UTC)
    events = []
    for n in range(count):
        when = now - timedelta(seconds=rng.randrange(600), microseconds=rng.randrange(1_000_000))
        event = {
            "transaction_id": f"{prefix}-{n:09d}",
            "customer_external_id": f"bench-{rng.randrange(customers):05d}",
            "timestamp": when.isoformat().replace("+00:00", "Z"),
        }
        if n % 2:
            event["meter_code"] = "bench_tokens"
            event["properties"] = {"tokens": rng.randrange(1, 20_000), "model": "m-large", "region": "eu"}
        else:
            event["meter_code"] = "bench_calls"
            event["properties"] = {"endpoint": "/v1/chat", "region": "us"}
        events.append(event)
    return events


# --- server -------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(url: str, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "gunicorn", "billing.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--worker-class", "sync", "--backlog", "2048", "--timeout", "120",
        "--worker-tmp-dir", "/dev/shm", "--log-level", "warning",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=server_env(url), stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited:\n{log.read_text(errors='replace')}")
        try:
            if request(port, "/api/v1/events", b"{}", key=None)[0] == 401:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("gunicorn did not start")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def request(port: int, path: str, body: bytes, *, key: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Api-Key {key}"
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def send_batches(port: int, key: str, bodies: list[bytes], start_at: float, results: multiprocessing.Queue) -> None:
    import orjson

    while time.time() < start_at:
        time.sleep(0.001)
    accepted = 0
    for body in bodies:
        status, answer = request(port, "/api/v1/events/batch", body, key=key)
        if status != 200:
            results.put(("error", f"{status} {answer[:300]!r}"))
            return
        accepted += orjson.loads(answer)["accepted"]
    results.put(("ok", accepted, time.time()))


# --- measurements -------------------------------------------------------------------------------------------------


def cpu_seconds() -> dict[str, float]:
    """CPU time used so far by PostgreSQL's processes, gunicorn's, this script's finished children (the clients)
    and the whole machine (all processes, ours or not): where the cycles of a phase went."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {"postgresql": 0.0, "gunicorn": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = (int(fields[11]) + int(fields[12])) / tick
        if command.startswith(b"postgres"):
            groups["postgresql"] += used
        elif b"gunicorn" in command:
            groups["gunicorn"] += used
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    groups["clients"] = children.ru_utime + children.ru_stime
    busy = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    groups["machine"] = (sum(int(v) for v in busy) - int(busy[3]) - int(busy[4])) / tick
    return groups


def cpu_per_event(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, float]:
    """Microseconds of CPU per event, per group; "other" is the rest of the machine (other work, the kernel)."""
    used = {name: (after[name] - before[name]) * 1e6 / events for name in before}
    used["other"] = used["machine"] - used["postgresql"] - used["gunicorn"] - used["clients"]
    return {name: round(value, 1) for name, value in used.items()}


def batch_throughput(port: int, key: str, events: list[dict], batch: int, clients: int) -> dict:
    import orjson

    bodies = [orjson.dumps({"events": events[i : i + batch]}) for i in range(0, len(events), batch)]
    shares = [bodies[c::clients] for c in range(clients)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 1.0
    processes = [context.Process(target=send_batches, args=(port, key, share, start_at, results)) for share in shares]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    errors = [o for o in outcomes if o[0] != "ok"]
    if errors:
        raise SystemExit(f"batch ingestion failed: {errors}")
    accepted = sum(o[1] for o in outcomes)
    seconds = max(o[2] for o in outcomes) - start_at
    return {"events": len(events), "accepted": accepted, "batches": len(bodies), "batch_size": batch,
            "clients": clients, "seconds": seconds, "events_per_second": accepted / seconds}


def raw_copy(url: str, events: list[dict], customer_ids: dict[str, int], meter_ids: dict[str, int]) -> dict:
    """The same rows, same columns, COPYed in one stream into a plain table without any index."""
    import orjson
    import psycopg

    received = datetime.now(UTC).isoformat()
    buffer = io.StringIO()
    for event in events:
        value = event["properties"].get("tokens") if event["meter_code"] == "bench_tokens" else None
        properties = orjson.dumps(event["properties"]).decode().replace("\\", "\\\\")
        buffer.write(
            f"{event['transaction_id']}\t{customer_ids[event['customer_external_id']]}\t"
            f"{meter_ids[event['meter_code']]}\t{event['timestamp']}\t{properties}\t"
            f"{'' if value is None else value}\t{received}\tapi\n".replace("\t\t", "\t\\N\t")
        )
    data = buffer.getvalue()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw_copy")
        conn.execute(
            "CREATE TABLE bench_raw_copy (id bigint GENERATED BY DEFAULT AS IDENTITY, transaction_id varchar(255), "
            "customer_id bigint, meter_id bigint, ts timestamptz, properties jsonb, value numeric(38, 12), "
            "received_at timestamptz, source varchar(12))"
        )
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(
            "COPY bench_raw_copy (transaction_id, customer_id, meter_id, ts, properties, value, received_at, source) "
            "FROM STDIN"
        ) as copy:
            for start in range(0, len(data), 1 << 20):
                copy.write(data[start : start + (1 << 20)])
        seconds = time.perf_counter() - started
        stored = conn.execute("SELECT count(*) FROM bench_raw_copy").fetchone()[0]
        conn.execute("DROP TABLE bench_raw_copy")
    assert stored == len(events), (stored, len(events))
    return {"rows": stored, "seconds": seconds, "rows_per_second": stored / seconds}


def single_latency(port: int, key: str, events: list[dict], rate: int, seconds: float) -> dict:
    """Open loop: request i is due at start + i/rate; its latency counts from then, not from when it got sent."""
    from concurrent.futures import ThreadPoolExecutor

    import orjson

    total = int(rate * seconds)
    bodies = [orjson.dumps(event) for event in events[:total]]
    latencies: list[float] = [0.0] * total
    statuses: list[int] = [0] * total

    def one(index: int, due: float) -> None:
        status, _ = request(port, "/api/v1/events", bodies[index], key=key)
        latencies[index] = time.perf_counter() - due
        statuses[index] = status

    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.perf_counter() + 0.5
        for index in range(total):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, index, due)
    ordered = sorted(latencies)
    bad = [s for s in statuses if s != 201]
    if bad:
        raise SystemExit(f"single events answered {set(bad)}")
    return {
        "requests": total,
        "rate_per_second": rate,
        "p50_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.90 * (total - 1))] * 1000,
        "p99_ms": ordered[int(0.99 * (total - 1))] * 1000,
        "p99_9_ms": ordered[int(0.999 * (total - 1))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def main() -> None:
    args = parse_args()
    for name, value in server_env(args.database_url).items():
        os.environ.setdefault(name, value)
    os.environ["DJANGO_SETTINGS_MODULE"] = "billing.settings.production"
    os.environ["DATABASE_URL"] = args.database_url
    info = machine(args.database_url.rsplit("/", 1)[0] + "/postgres")
    print("machine:", json.dumps(info, indent=2))

    print("creating the database and running migrations ...", flush=True)
    fresh_database(args.database_url)
    import django

    django.setup()
    from django.db import connection

    key, customer_ids, meter_ids = seed(args.customers)
    run = f"r{int(time.time())}"
    events = make_events(args.events, args.customers, args.seed, run)
    warmup = make_events(8 * args.batch, args.customers, args.seed + 1, f"{run}-warm")
    singles = make_events(int(args.single_rate * args.single_seconds), args.customers, args.seed + 2, f"{run}-one")
    connection.close()

    port = free_port()
    log = Path(f"/tmp/accrual-bench-ingest-{port}.log")
    server = start_server(args.database_url, port, args.workers, log)
    try:
        print(f"gunicorn: {args.workers} sync workers on 127.0.0.1:{port}; warming up ...", flush=True)
        batch_throughput(port, key, warmup, args.batch, args.clients)
        print(f"single events at {args.single_rate}/s for {args.single_seconds:.0f} s ...", flush=True)
        single = single_latency(port, key, singles, args.single_rate, args.single_seconds)
        print(f"  p50 {single['p50_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms, max {single['max_ms']:.1f} ms",
              flush=True)
        print(f"sending {args.events:,} events in batches of {args.batch:,} from {args.clients} clients ...",
              flush=True)
        cpu_before = cpu_seconds()
        batch = batch_throughput(port, key, events, args.batch, args.clients)
        batch["cpu_us_per_event"] = cpu_per_event(cpu_before, cpu_seconds(), batch["accepted"])
        print(f"  {batch['events_per_second']:,.0f} events/s ({batch['accepted']:,} accepted in "
              f"{batch['seconds']:.1f} s); CPU per event (us): {batch['cpu_us_per_event']}", flush=True)
    finally:
        stop_server(server)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT transaction_id) FROM usage_usageevent")
        stored, distinct = cursor.fetchone()
        cursor.execute("SELECT sum(event_count) FROM usage_usagehourlyrollup")
        rolled = cursor.fetchone()[0]
    expected = len(events) + len(warmup) + len(singles)
    assert stored == distinct == rolled == expected, (stored, distinct, rolled, expected)
    connection.close()

    print("raw COPY of the same rows into a plain unindexed table ...", flush=True)
    copy = raw_copy(args.database_url, events, customer_ids, meter_ids)
    ratio = batch["events_per_second"] / copy["rows_per_second"]
    summary = {
        "machine": info,
        "batch": batch,
        "raw_copy": copy,
        "ratio_to_raw_copy": ratio,
        "single_events": single,
        "stored_events_checked": stored,
        "targets": {"events_per_second": TARGET_RATE, "ratio": TARGET_RATIO, "single_p99_ms": TARGET_P99_MS},
        "load_average_1_5_15_min_after": list(os.getloadavg()),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "ingest.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(f"batch ingestion (HTTP, gunicorn x{args.workers}, dedup on): {batch['events_per_second']:>10,.0f} events/s"
          f"   target {TARGET_RATE:,}  {'met' if batch['events_per_second'] >= TARGET_RATE else 'MISSED'}")
    print(f"raw COPY, same rows, plain table:              {copy['rows_per_second']:>10,.0f} rows/s")
    print(f"ratio:                                          {ratio:>10.2f}          target {TARGET_RATIO}  "
          f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}")
    print(f"single events at {args.single_rate}/s: p50 {single['p50_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms"
          f"   target p99 < {TARGET_P99_MS:.0f} ms  {'met' if single['p99_ms'] < TARGET_P99_MS else 'MISSED'}")
    print(f"stored and checked: {stored:,} events, each once; rollups agree")


if __name__ == "__main__":
    threading.excepthook = lambda hook: print(hook)
    main()
