"""Benchmark: a cycle close of 100,000 subscriptions by real Celery workers (issue 4: >= 300 invoices/s, peak RSS
< 1 GB per process).

    .venv/bin/python bench/cycle_close/run.py                  # build (about 5 minutes), then close
    .venv/bin/python bench/cycle_close/run.py --keep           # reuse the data, reset the invoicing state, close
    .venv/bin/python bench/cycle_close/run.py --subscriptions 20000 --events 2000000 --workers 1

What it does:

1. Creates the PostgreSQL database `accrual_bench_cycle` afresh (unless --keep) and migrates it; builds the data
   set of bench/cycle_close/build.py in bulk: 2 billing entities (USD with a review grace period, so its
   invoices stay drafts; EUR without, so its invoices are finalized in the close: gapless numbers, snapshots),
   3 tax rates, 20 plans covering every charge model, N customers with one monthly subscription started
   2026-10-01, coupons on one customer in ten, and the October usage events with their hourly rollups.
   No October invoice exists, so the close bills October's fees in advance, October's usage and fees in
   arrears, and November's fees in advance.
2. Baseline in the same run: COPY of as many invoice rows as there are customers into a bare copy of the
   invoice table (no index), per second.
3. Starts --workers Celery workers (`celery -A billing worker --concurrency=2 -P prefork`, production settings,
   broker redis://127.0.0.1:6379/14), calls invoicing.services.cycle.start_cycle_close(now=2026-11-01T12:00Z)
   in this process (it fans out one task per customer) and polls the CycleRun until it is finished.
4. Prints customers, invoices, failures, wall time from the start to the last invoice, invoices per second,
   the peak RSS (VmHWM) of every worker process and of this script, and the machine.

--profile N: before the close, cProfile `close_customer` over N customers in this process, in a transaction
that is rolled back, and print the top costs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/accrual_bench_cycle"
BROKER = "redis://127.0.0.1:6379/14"
AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TARGET_RATE = 300.0
TARGET_RSS_MB = 1024.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes, each --concurrency=2 prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="reuse the data set; only reset the invoicing state")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile close_customer on N customers")
    parser.add_argument("--us-grace-days", type=int, default=3)
    parser.add_argument("--eu-grace-days", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=3600, help="give up after this many seconds of closing")
    parser.add_argument(
        "--batch", type=int, default=20, help="customers per fan-out message (ACCRUAL_CYCLE_CLOSE_BATCH)"
    )
    parser.add_argument("--seed", type=int, default=20261101)
    return parser.parse_args()


def environment(url: str) -> dict[str, str]:
    """Production settings for this process and the workers: DEBUG off (no query log), persistent connections."""
    return {
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": BROKER,
        "DJANGO_SETTINGS_MODULE": "billing.settings.production",
        "SECRET_KEY": "bench-cycle-close-not-secret",
        "ALLOWED_HOSTS": "localhost",
        "MEDIA_ROOT": "/tmp/accrual_bench_cycle_media",
        "DEBUG": "false",
    }


# --- database ------------------------------------------------------------------------------------------------


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def reset_close_state() -> None:
    """Forget every earlier close (--keep): invoices, lines, claims, runs, numbers; coupons active again."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename IN "
            "('invoicing_invoice', 'invoicing_historicalinvoice', 'invoicing_cyclerun', 'invoicing_billedperiod',"
            " 'invoicing_documentsequence', 'invoicing_historicalappliedcoupon')"
        )
        tables = [row[0] for row in cursor.fetchall()]
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        cursor.execute("UPDATE invoicing_appliedcoupon SET status = 'active', periods_used = 0")
        cursor.execute("VACUUM ANALYZE")


def copy_baseline(rows: int) -> float:
    """Rows per second of a raw COPY of invoice rows (the columns a close fills) into an index-free copy of the
    invoice table: what PostgreSQL alone does on this machine, for scale."""
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_invoice_copy")
        cursor.execute("CREATE UNLOGGED TABLE bench_invoice_copy (LIKE invoicing_invoice INCLUDING DEFAULTS)")
        cursor.execute("SELECT min(id), min(billing_entity_id) FROM customers_customer")
        first_customer, entity = cursor.fetchone()
        raw.commit()
        began = time.perf_counter()
        columns = (
            "id, created_at, updated_at, billing_entity_id, customer_id, kind, status, currency, period_start,"
            " period_end, subtotal, discount_total, tax_total, total, prepaid_credit_applied, amount_due,"
            " tax_breakdown, discount_breakdown, mentions, seller, buyer, memo, as_of, void_reason,"
            " pdf_sha256, created_by"
        )
        with cursor.copy(f"COPY bench_invoice_copy ({columns}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for index in range(rows):
                buffer.write(
                    f"{index + 1}\t2026-11-01 12:00:00+00\t2026-11-01 12:00:00+00\t{entity}\t{first_customer + index}"
                    "\tsubscription\tdraft\tUSD\t2026-10-01\t2026-12-01\t128.0000\t0.0000\t11.3600\t139.3600\t0.0000"
                    '\t139.3600\t[{"rate": "8.875", "tax": "11.36"}]\t[]\t[]\t{}\t{}\t\t2026-11-01 12:00:00+00\t\t'
                    "\tsystem:bench\n"
                )
                if index % 20_000 == 19_999:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        raw.commit()
        elapsed = time.perf_counter() - began
        cursor.execute("DROP TABLE bench_invoice_copy")
        raw.commit()
    return rows / elapsed


# --- workers -------------------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_workers(count: int, concurrency: int, env: dict[str, str]) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        workers.append(
            subprocess.Popen(
                [
                    str(ROOT / ".venv" / "bin" / "celery"),
                    "-A",
                    "billing",
                    "worker",
                    f"--concurrency={concurrency}",
                    "-P",
                    "prefork",
                    "-n",
                    f"bench{index}@%h",
                    "-l",
                    "warning",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=open(f"/tmp/accrual_bench_cycle_worker{index}.log", "w"),  # noqa: SIM115 - lives with the worker
            )
        )
    return workers


def wait_for_children(workers: list[subprocess.Popen], concurrency: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(children_of(w.pid)) >= concurrency for w in workers):
            return
        time.sleep(0.5)
    raise RuntimeError("the Celery workers did not start; see /tmp/accrual_bench_cycle_worker*.log")


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


# --- profile -------------------------------------------------------------------------------------------------


def profile_close(count: int) -> str:
    """cProfile close_customer over `count` customers in this process, then roll everything back."""
    from django.db import transaction

    from billing.actors import Actor
    from customers.models import Customer
    from invoicing.services.cycle import close_customer

    ids = list(Customer.objects.order_by("?").values_list("pk", flat=True)[:count])
    profiler = cProfile.Profile()
    actor = Actor.system("bench:profile")
    began = time.perf_counter()
    with transaction.atomic():
        profiler.enable()
        for pk in ids:
            close_customer(pk, now=AS_OF, actor=actor)
        profiler.disable()
        transaction.set_rollback(True)
    elapsed = time.perf_counter() - began
    out = io.StringIO()
    out.write(f"close_customer x {count} in one process: {elapsed:.2f} s, {count / elapsed:.1f} customers/s\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


# --- machine -------------------------------------------------------------------------------------------------


def machine() -> dict:
    from django.db import connection

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    memory = next(
        (
            f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "unknown",
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0]
        settings = {}
        for name in ("shared_buffers", "work_mem", "max_connections", "synchronous_commit"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15_min": tuple(round(x, 2) for x in os.getloadavg()),
        "postgresql": version,
        "postgresql_settings": settings,
        "database_size": size,
    }


def data_summary() -> dict:
    from django.db import connection

    queries = {
        "customers": "SELECT count(*) FROM customers_customer",
        "subscriptions": "SELECT count(*) FROM contracts_subscription",
        "subscription_phases": "SELECT count(*) FROM contracts_subscriptionphase",
        "plans": "SELECT count(*) FROM contracts_plan",
        "charges": "SELECT count(*) FROM contracts_charge",
        "applied_coupons": "SELECT count(*) FROM invoicing_appliedcoupon",
        "events": "SELECT coalesce(max(id), 0) FROM usage_usageevent",
        "rollup_rows": "SELECT count(*) FROM usage_usagehourlyrollup",
        "billed_period_claims_before": "SELECT count(*) FROM invoicing_billedperiod",
    }
    out = {}
    with connection.cursor() as cursor:
        for key, sql in queries.items():
            cursor.execute(sql)
            out[key] = cursor.fetchone()[0]
    return out


# --- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    env = environment(args.database_url)
    os.environ.update(env)
    if not args.keep:
        recreate_database(args.database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from bench.cycle_close.build import build

    build_timings: dict = {}
    if args.keep:
        print("--keep: reusing the data set, resetting the invoicing state", flush=True)
        reset_close_state()
    else:
        print(f"building {args.subscriptions:,} subscriptions and {args.events:,} events ...", flush=True)
        began = time.perf_counter()
        build_timings = build(
            args.subscriptions,
            args.events,
            random.Random(args.seed),
            us_grace_days=args.us_grace_days,
            eu_grace_days=args.eu_grace_days,
        )
        build_timings["total"] = time.perf_counter() - began
        for key, value in build_timings.items():
            print(f"  {key}: {value:,.1f}" + ("" if key == "rollup_rows" else " s"), flush=True)
    summary = data_summary()
    print("data:", json.dumps(summary), flush=True)

    baseline = copy_baseline(summary["customers"])
    print(
        f"baseline: COPY of {summary['customers']:,} invoice rows into an index-free table: {baseline:,.0f} rows/s",
        flush=True,
    )

    profile_text = ""
    if args.profile:
        profile_text = profile_close(args.profile)
        print(profile_text, flush=True)

    from django.db import connection
    from django.db.models import Count, Max, Sum

    from billing.actors import Actor
    from billing.celery import app
    from invoicing.models import CycleRun, Invoice, InvoiceLine
    from invoicing.services.cycle import run_counts, start_cycle_close

    app.control.purge()  # tasks left in the bench broker database by an interrupted run
    workers = start_workers(args.workers, args.concurrency, env)
    try:
        wait_for_children(workers, args.concurrency)
        load_before = os.getloadavg()
        started = datetime.now(UTC)
        began = time.perf_counter()
        from django.conf import settings

        settings.ACCRUAL_CYCLE_CLOSE_BATCH = args.batch
        run = start_cycle_close(now=AS_OF, actor=Actor.system("bench:cycle_close"))
        fanned_out = time.perf_counter() - began
        print(
            f"run {run.pk}: {run.total_customers:,} customers due; due list + {run.total_customers:,} tasks "
            f"enqueued in {fanned_out:.1f} s",
            flush=True,
        )
        last_print = 0.0
        while True:
            run.refresh_from_db()
            elapsed = time.perf_counter() - began
            if run.status != CycleRun.Status.RUNNING:
                break
            if elapsed - last_print >= 10:
                counts = run_counts(run)
                print(
                    f"  {elapsed:6.0f} s: {counts['processed']:,}/{counts['total']:,} customers, "
                    f"{counts['invoices']:,} invoices, {counts['failed']:,} failed",
                    flush=True,
                )
                last_print = elapsed
            if elapsed > args.timeout:
                print("TIMEOUT: the run did not finish", flush=True)
                break
            time.sleep(1)
        run_seconds = time.perf_counter() - began
        rss = {}
        for index, worker in enumerate(workers):
            rss[f"worker{index} main (pid {worker.pid})"] = status_kb(worker.pid, "VmHWM")
            for child in children_of(worker.pid):
                rss[f"worker{index} child (pid {child})"] = status_kb(child, "VmHWM")
        load_after = os.getloadavg()
    finally:
        stop_workers(workers)
    pdf_tasks_left = app.control.purge()  # PDF renders queued by finalizations: bench/pdf measures those
    rss["this script"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    invoices = Invoice.objects.filter(cycle_run=run)
    stats = invoices.aggregate(n=Count("id"), last=Max("created_at"), total=Sum("total"))
    by_status = dict(invoices.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    lines = InvoiceLine.objects.filter(invoice__cycle_run=run).count()
    by_kind = dict(
        InvoiceLine.objects.filter(invoice__cycle_run=run)
        .values_list("kind")
        .annotate(n=Count("id"))
        .values_list("kind", "n")
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM invoicing_billedperiod")
        claims = cursor.fetchone()[0]
    wall = (stats["last"] - started).total_seconds() if stats["last"] else float("nan")
    rate = stats["n"] / wall if stats["n"] else 0.0
    info = machine()
    info["load_average_before_close"] = tuple(round(x, 2) for x in load_before)
    info["load_average_after_close"] = tuple(round(x, 2) for x in load_after)

    print("\nmachine:")
    for key, value in info.items():
        print(f"  {key}: {value}")
    print(
        f"\nworkers: {args.workers} x `celery -A billing worker --concurrency={args.concurrency} -P prefork`"
        f" (billing.settings.production); {args.batch} customer(s) per message"
    )
    print(
        f"customers in the run: {run.total_customers:,}; processed {run.processed_customers:,}; "
        f"failed {run.failed_customers:,}; run status {run.status}"
    )
    print(
        f"invoices created: {stats['n']:,} ({json.dumps(by_status)}); lines: {lines:,} ({json.dumps(by_kind)}); "
        f"billed-period claims: {claims:,}"
    )
    print(
        f"wall time, start_cycle_close call to last invoice: {wall:.1f} s; until the run was marked finished: "
        f"{run_seconds:.1f} s (enqueueing took {fanned_out:.1f} s of it)"
    )
    print(f"invoices per second: {rate:,.1f} (target >= {TARGET_RATE:.0f})")
    print(f"baseline, raw COPY of invoice rows: {baseline:,.0f} rows/s")
    print(f"PDF render tasks left in the queue and purged: {pdf_tasks_left:,}")
    print("peak RSS (VmHWM):")
    for key, kb in rss.items():
        print(f"  {key}: {kb / 1024:,.1f} MB")
    worst = max(rss.values()) / 1024
    print(
        f"\nRESULT: {stats['n']:,} invoices for {run.total_customers:,} customers in {wall:.1f} s = {rate:,.1f} "
        f"invoices/s (target >= {TARGET_RATE:.0f}: {'MET' if rate >= TARGET_RATE else 'MISSED'}); "
        f"failures {run.failed_customers:,}; peak RSS max {worst:,.1f} MB "
        f"(target < {TARGET_RSS_MB:.0f} MB: {'MET' if worst < TARGET_RSS_MB else 'MISSED'})"
    )
    errors = list(run.customers.filter(status="failed").values_list("error", flat=True)[:3])
    for error in errors:
        print("failure sample:", error[:1500])
    out = ROOT / "bench" / "results" / "cycle_close.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": info,
                "args": vars(args),
                "build_seconds": build_timings,
                "data": summary,
                "baseline_copy_rows_per_s": baseline,
                "invoices": stats["n"],
                "by_status": by_status,
                "lines": lines,
                "wall_seconds": wall,
                "run_seconds": run_seconds,
                "enqueue_seconds": fanned_out,
                "invoices_per_s": rate,
                "failed_customers": run.failed_customers,
                "peak_rss_kb": rss,
                "pdf_tasks_purged": pdf_tasks_left,
                "profile": profile_text,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"(figures also written to {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
