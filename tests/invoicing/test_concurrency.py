"""Concurrency on PostgreSQL with real threads, each on its own connection: closes of one customer racing,
finalizations racing for numbers, two cycle runs racing. Exactly one invoice per subscription period and
gapless, unique numbers, whatever the interleaving."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from billing.actors import Actor
from invoicing.models import BilledPeriod, CycleRunCustomer, Invoice, InvoiceLine
from invoicing.services.cycle import close_customer, run_customer_close, start_cycle_close
from invoicing.services.documents import ManualLine, create_one_off_invoice, finalize_invoice
from tests.factories import BillingEntityFactory, ChargeFactory, CustomerFactory, MeterFactory
from tests.invoicing.test_contract_terms import at, count_events, subscribe, version

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
]

D = Decimal
FEB_1 = at(date(2024, 2, 1))


def race(jobs: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Run the jobs at once in threads (a barrier releases them together); each closes its connection."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(job: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            value = job()
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results, errors


def periods_billed_once() -> None:
    counts = Counter(BilledPeriod.objects.filter(released=False).values_list("subscription_id", "timing",
                                                                             "period_start"))
    assert counts and max(counts.values()) == 1
    # And no fee or usage line billed twice for the same subscription period.
    lines = Counter(InvoiceLine.objects.exclude(invoice__status="void").values_list(
        "subscription_id", "kind", "charge_id", "period_start"))
    assert max(lines.values()) == 1


def metered_customer(entity, actor: Actor):
    customer = CustomerFactory(billing_entity=entity, timezone="UTC")
    meter = MeterFactory(aggregation="count")
    pv = version("100.00")
    ChargeFactory(plan_version=pv, meter=meter, properties={"unit_price": "0.01"})
    sub = subscribe(customer, pv, actor)
    count_events(customer, meter, 10)
    return customer, sub


def test_four_threads_closing_the_same_customer_make_one_invoice(actor):
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0)
    customer, sub = metered_customer(entity, actor)
    results, errors = race([lambda: close_customer(customer.pk, now=FEB_1, actor=actor) for _ in range(4)])
    # A close that lost the race either created nothing or failed on the unique claim: never a second invoice.
    assert all(type(e).__name__ == "IntegrityError" for e in errors), errors
    assert sorted(len(r) for r in results) == [0] * (len(results) - 1) + [1]
    assert Invoice.objects.count() == 1
    invoice = Invoice.objects.get()
    assert invoice.status == Invoice.Status.FINALIZED and invoice.sequence_number == 1
    # Advance January and February, arrears January: one row each.
    assert sorted(BilledPeriod.objects.filter(subscription=sub).values_list("timing", "period_start")) == [
        ("advance", date(2024, 1, 1)), ("advance", date(2024, 2, 1)), ("arrears", date(2024, 1, 1)),
    ]
    periods_billed_once()
    assert invoice.total == D("200.10")  # 100.00 January + 100.00 February in advance + 10 x 0.01


def test_eight_finalizations_at_once_get_gapless_unique_numbers(actor):
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=5)
    now = datetime(2024, 3, 1, 12, tzinfo=UTC)
    drafts = [
        create_one_off_invoice(CustomerFactory(billing_entity=entity, timezone="UTC"),
                               [ManualLine("Set-up", D("10.00") + i)], actor=actor, now=now)
        for i in range(8)
    ]
    finalized, errors = race([lambda pk=d.pk: finalize_invoice(Invoice(pk=pk), actor=actor, now=now) for d in drafts])
    assert errors == [] and len(finalized) == 8
    numbers = sorted(Invoice.objects.values_list("sequence_number", flat=True))
    assert numbers == list(range(1, 9))
    assert len(set(Invoice.objects.values_list("number", flat=True))) == 8
    assert all(inv.status == Invoice.Status.FINALIZED for inv in Invoice.objects.all())
    assert entity.sequences.get(kind="invoice").next_number == 9


def test_two_cycle_runs_racing_bill_each_period_once(actor):
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0)
    subs = [metered_customer(entity, actor)[1] for _ in range(3)]
    runs, errors = race([lambda: start_cycle_close(now=FEB_1, actor=actor, enqueue=False) for _ in range(2)])
    assert errors == [] and len(runs) == 2
    entries = list(CycleRunCustomer.objects.filter(run__in=runs).values_list("run_id", "customer_id"))
    assert len(entries) == 6
    outcomes, errors = race([lambda r=r, c=c: run_customer_close(r, c) for r, c in entries])
    assert errors == []
    assert "failed" not in outcomes or all(
        "IntegrityError" in e.error for e in CycleRunCustomer.objects.filter(status="failed"))
    assert Invoice.objects.count() == 3
    assert sorted(Invoice.objects.values_list("customer_id", flat=True)) == sorted(s.customer_id for s in subs)
    periods_billed_once()
    assert sorted(Invoice.objects.values_list("sequence_number", flat=True)) == [1, 2, 3]
    assert not CycleRunCustomer.objects.filter(status="pending").exists()
