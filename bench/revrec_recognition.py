"""Benchmark: recognise one day of revenue for 100,000 active subscriptions (issue 6).

    .venv/bin/python bench/revrec_recognition.py                    # 100,000 contracts
    .venv/bin/python bench/revrec_recognition.py --contracts 20000

1. Creates the PostgreSQL database `accrual_bench_revrec` afresh (DATABASE_URL's server), migrates it, and builds
   in bulk: one billing entity (USD), N customers (bulk_create), N revenue contracts each with one ratable monthly
   obligation (COPY): prices 100.00 to 149.00, service periods starting on 1 to 14 November 2026 for one month,
   billed up front, already recognised through 14 November (each obligation's own running total).
2. Times `run_recognition` through 15 November: every obligation recognises one day (one journal entry, N
   Recognition rows, N obligations and N contracts updated). Then, with tracemalloc on (which slows Python), a
   second run through 16 November for the peak of Python's memory. Prints elapsed seconds, obligations per
   second, tracemalloc's peak and the process's max RSS, and checks the ledger against the obligations.
3. Baseline in the same run: raw COPY of N Recognition-like rows into an index-free table and one UPDATE of
   those N rows.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import sys
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/accrual_bench_revrec"
NOW = datetime(2026, 11, 16, 3, 0, tzinfo=UTC)
DAY = date(2026, 11, 15)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--contracts", type=int, default=100_000)
    return parser.parse_args()


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def machine() -> dict[str, str]:
    from django.db import connection

    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown")
    mem = next((f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB" for line in Path("/proc/meminfo").read_text()
                .splitlines() if line.startswith("MemTotal")), "unknown")
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem, "postgresql": version,
            "python": platform.python_version(), "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def build(n: int) -> None:
    from django.db import connection

    from customers.models import BillingEntity, Customer
    from invoicing.pricing.rounding import ratable_recognised_through
    from revrec.services.chart import ensure_chart

    entity = BillingEntity.objects.create(code="bench", name="Bench Inc", legal_name="Bench Inc", country="US",
                                          default_currency="USD", timezone="UTC", invoice_prefix="B",
                                          credit_note_prefix="BC")
    ensure_chart(entity)
    for first in range(0, n, 10_000):
        Customer.objects.bulk_create([
            Customer(billing_entity=entity, external_id=f"cus_{i:07d}", name=f"Customer {i}", country="US",
                     currency="USD", billing_emails=[f"ap{i}@example.test"])
            for i in range(first, min(first + 10_000, n))
        ])
    customer_ids = list(Customer.objects.order_by("pk").values_list("pk", flat=True))
    figures = []
    for i, customer_id in enumerate(customer_ids):
        price = Decimal(100 + i % 50) * 1
        start = date(2026, 11, 1) + timedelta(days=i % 14)
        end = start.replace(month=12)
        days = (end - start).days
        recognized = ratable_recognised_through(price, (DAY - start).days, days, "USD")
        figures.append((customer_id, price, start, end, recognized))
    stamp = NOW.isoformat()
    raw = connection.connection
    with raw.cursor() as cursor:
        with cursor.copy("COPY revrec_revenuecontract (billing_entity_id, customer_id, reference, currency, "
                         "transaction_price, billed, recognized, created_at) FROM STDIN") as copy:
            buffer = io.StringIO()
            for customer_id, price, _, _, recognized in figures:
                buffer.write(f"{entity.pk}\t{customer_id}\tRC-{customer_id}\tUSD\t{price}\t{price}\t{recognized}\t"
                             f"{stamp}\n")
            copy.write(buffer.getvalue())
        cursor.execute("SELECT id FROM revrec_revenuecontract ORDER BY customer_id")
        contract_ids = [row[0] for row in cursor.fetchall()]
        with cursor.copy("COPY revrec_performanceobligation (revenue_contract_id, description, kind, pattern, status, "
                         "quantity, service_start, service_end, billed_amount, billed_on, ssp, ssp_source, "
                         "allocated_price, recognized_amount, recognized_through, rebased_amount, created_at) "
                         "FROM STDIN") as copy:
            buffer = io.StringIO()
            for contract_id, (_, price, start, end, recognized) in zip(contract_ids, figures, strict=True):
                buffer.write(f"{contract_id}\tMonthly subscription\tsubscription\tratable\topen\t1\t{start}\t{end}\t"
                             f"{price}\t{start}\t{price}\tbench\t{price}\t{recognized}\t{DAY - timedelta(days=1)}\t0\t"
                             f"{stamp}\n")
            copy.write(buffer.getvalue())
        cursor.execute("VACUUM ANALYZE revrec_revenuecontract")
        cursor.execute("VACUUM ANALYZE revrec_performanceobligation")


def baseline(n: int) -> tuple[float, float]:
    """Raw COPY of n Recognition-like rows into an index-free table, then one UPDATE of the n rows."""
    from django.db import connection

    raw = connection.connection
    with raw.cursor() as cursor:
        cursor.execute("CREATE UNLOGGED TABLE IF NOT EXISTS bench_recognition (obligation_id bigint, "
                       "revenue_contract_id bigint, customer_id bigint, product_id bigint, currency varchar(3), "
                       "recognized_on date, kind varchar(12), amount numeric(20, 4), entry_id bigint)")
        cursor.execute("TRUNCATE bench_recognition")
        raw.commit()
        began = time.perf_counter()
        with cursor.copy("COPY bench_recognition FROM STDIN") as copy:
            buffer = io.StringIO()
            for i in range(n):
                buffer.write(f"{i}\t{i}\t{i}\t\\N\tUSD\t{DAY}\tscheduled\t3.45\t1\n")
            copy.write(buffer.getvalue())
        raw.commit()
        copied = time.perf_counter() - began
        began = time.perf_counter()
        cursor.execute("UPDATE bench_recognition SET amount = amount + 1")
        raw.commit()
        return copied, time.perf_counter() - began


def main() -> None:
    args = parse_args()
    os.environ.update({"DATABASE_URL": args.database_url, "DJANGO_SETTINGS_MODULE": "billing.settings.production",
                       "SECRET_KEY": "bench-revrec-not-secret", "CELERY_BROKER_URL": "memory://",
                       "ALLOWED_HOSTS": "localhost", "DEBUG": "false"})
    recreate_database(args.database_url)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Sum

    from billing.actors import Actor
    from revrec.models import JournalLine, PerformanceObligation, Recognition
    from revrec.services.recognition import run_recognition

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    build(args.contracts)
    print(f"built {args.contracts:,} contracts and obligations in {time.perf_counter() - began:.1f} s", flush=True)
    for key, value in machine().items():
        print(f"  {key}: {value}")
    actor = Actor.system("bench")

    began = time.perf_counter()
    run = run_recognition(DAY, actor=actor, now=NOW)
    elapsed = time.perf_counter() - began
    print(f"run through {DAY}: {run.obligations:,} obligations, {run.entries} entry, {run.amounts} "
          f"in {elapsed:.2f} s = {run.obligations / elapsed:,.0f} obligations/s", flush=True)

    tracemalloc.start()
    began = time.perf_counter()
    second = run_recognition(DAY + timedelta(days=1), actor=actor, now=NOW + timedelta(days=1))
    traced = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"run through {DAY + timedelta(days=1)} under tracemalloc: {second.obligations:,} obligations in "
          f"{traced:.2f} s; Python peak {peak / 2**20:.1f} MiB; process max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB", flush=True)

    recognised = Recognition.objects.aggregate(total=Sum("amount"))["total"]
    revenue = JournalLine.objects.filter(account__role="revenue").aggregate(total=Sum("credit"))["total"]
    on_obligations = PerformanceObligation.objects.filter(recognized_through=DAY + timedelta(days=1)).count()
    print(f"check: Recognition rows {Recognition.objects.count():,}, sum {recognised} = revenue credited {revenue}; "
          f"obligations through {DAY + timedelta(days=1)}: {on_obligations:,}")
    assert recognised == revenue and on_obligations == args.contracts

    copied, updated = baseline(args.contracts)
    print(f"baseline: raw COPY of {args.contracts:,} Recognition-like rows {copied:.2f} s, one UPDATE of them "
          f"{updated:.2f} s (together {copied + updated:.2f} s)")


if __name__ == "__main__":
    main()
