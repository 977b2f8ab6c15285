"""A real Celery worker closes a cycle fanned out by start_cycle_close: every due customer is invoiced once,
one customer's failure is recorded without stopping the others, and a redelivered message bills nothing twice."""

from datetime import UTC, date, datetime

import pytest
from djmoney.money import Money

from billing.actors import Actor
from contracts.models import Charge
from contracts.services.subscriptions import create_subscription
from invoicing.models import BilledPeriod, CycleRun, CycleRunCustomer, Invoice
from invoicing.services.cycle import start_cycle_close
from invoicing.tasks import close_customers_task
from tests.factories import BillingEntityFactory, ChargeFactory, CustomerFactory, PlanVersionFactory

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]
ACTOR = Actor.system("tests")


def test_worker_closes_every_customer_once_and_records_a_failure(celery_worker_process, settings) -> None:
    settings.ACCRUAL_CYCLE_CLOSE_QUEUE = celery_worker_process.queue
    settings.ACCRUAL_CYCLE_CLOSE_BATCH = 2
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=3)
    good = PlanVersionFactory(base_fee=Money("30.00", "USD"))
    broken = PlanVersionFactory(base_fee=Money("10.00", "USD"))
    charge = ChargeFactory(plan_version=broken)
    customers = [CustomerFactory(billing_entity=entity, timezone="UTC") for _ in range(4)]
    for customer in customers[:3]:
        create_subscription(customer=customer, plan_version=good, actor=ACTOR,
                            now=datetime(2024, 1, 1, 9, tzinfo=UTC), start_date=date(2024, 1, 1))
    create_subscription(customer=customers[3], plan_version=broken, actor=ACTOR,
                        now=datetime(2024, 1, 1, 9, tzinfo=UTC), start_date=date(2024, 1, 1))
    # A charge model the pricing does not know (written behind the catalog services' back): that close fails.
    Charge.objects.filter(pk=charge.pk).update(charge_model="mystery")

    run = start_cycle_close(now=datetime(2024, 2, 1, 12, tzinfo=UTC), actor=ACTOR)
    assert run.total_customers == 4

    def finished() -> bool:
        run.refresh_from_db()
        return run.status != CycleRun.Status.RUNNING

    celery_worker_process.wait_until(finished, what="the run to finish")
    assert run.status == CycleRun.Status.COMPLETED_WITH_ERRORS
    assert (run.processed_customers, run.failed_customers, run.invoices_created) == (4, 1, 3)
    failed = run.customers.get(status=CycleRunCustomer.Status.FAILED)
    assert failed.customer_id == customers[3].pk and "mystery" in failed.error
    # January in arrears (nothing: fees in advance) and February in advance: one invoice per good customer.
    assert sorted(Invoice.objects.values_list("customer_id", flat=True)) == sorted(c.pk for c in customers[:3])
    assert not BilledPeriod.objects.filter(subscription__customer=customers[3]).exists()

    # The same message delivered again (a worker lost before its ack): nothing is billed twice.
    close_customers_task.apply_async((run.pk, [c.pk for c in customers]), queue=celery_worker_process.queue)
    celery_worker_process.wait_until(
        lambda: "close_customers" in celery_worker_process.output()
        and celery_worker_process.output().count("succeeded") >= 3,
        what="the redelivered message",
    )
    assert Invoice.objects.count() == 3
    assert BilledPeriod.objects.filter(released=False).count() == 3 * 3
