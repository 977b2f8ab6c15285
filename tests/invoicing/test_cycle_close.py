"""Cycle close end to end through the services: hand-computed figures from DESIGN's proration example."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from djmoney.money import Money

from contracts.services.subscriptions import change_plan, create_subscription
from invoicing.models import BilledPeriod, Invoice
from invoicing.services.cycle import close_customer
from tests.factories import BillingEntityFactory, CustomerFactory, PlanFactory, PlanVersionFactory

pytestmark = pytest.mark.django_db


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def customer():
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0)
    return CustomerFactory(billing_entity=entity, timezone="UTC")


def test_design_upgrade_example(customer, actor):
    plan = PlanFactory()
    basic = PlanVersionFactory(plan=plan, base_fee=Money("100.00", "USD"))
    pro = PlanVersionFactory(plan=PlanFactory(product=plan.product), base_fee=Money("200.00", "USD"))
    sub = create_subscription(customer=customer, plan_version=basic, actor=actor, now=at(date(2024, 1, 1)),
                              start_date=date(2024, 1, 1))
    [opening] = close_customer(customer, now=at(date(2024, 1, 1)), actor=actor)
    assert opening.status == Invoice.Status.FINALIZED
    assert [(line.kind, line.amount) for line in opening.lines.all()] == [("subscription_fee", Decimal("100.00"))]
    assert close_customer(customer, now=at(date(2024, 1, 2)), actor=actor) == []

    change_plan(sub, pro, actor=actor, now=at(date(2024, 1, 15)))
    [closing] = close_customer(customer, now=at(date(2024, 2, 1)), actor=actor)
    lines = [(line.kind, line.amount) for line in closing.lines.order_by("position")]
    assert lines == [
        ("proration_credit", Decimal("-54.84")),
        ("proration_charge", Decimal("109.68")),
        ("subscription_fee", Decimal("200.00")),
    ]
    # January as a whole: 45.16 + 109.68, as DESIGN computes it.
    assert Decimal("100.00") - Decimal("54.84") + Decimal("109.68") == Decimal("45.16") + Decimal("109.68")
    assert closing.total == Decimal("254.84")
    assert BilledPeriod.objects.filter(subscription=sub).count() == 3
    assert opening.number != closing.number

    # Both invoices recompute to the cent from their recorded inputs.
    from invoicing.services.recompute import recompute_invoice

    for invoice in (opening, closing):
        report = recompute_invoice(invoice)
        assert report.matches, report.differences
        assert report.late_events == 0


def _events(customer, meter, day: date, count: int, prefix: str, now: datetime) -> None:
    from usage.ingestion import ingest_events

    results = ingest_events(
        [{"transaction_id": f"{prefix}-{i}", "customer_external_id": customer.external_id, "meter_code": meter.code,
          "timestamp": at(day).isoformat()} for i in range(count)],
        now=now,
    )
    assert all(r.status == "accepted" for r in results), results


def test_usage_line_explained_recomputed_and_late_usage_billed_once(customer, actor):
    from invoicing.services.recompute import recompute_invoice
    from tests.factories import ChargeFactory, MeterFactory

    version = PlanVersionFactory(base_fee=Money("0", "USD"))
    meter = MeterFactory()
    ChargeFactory(plan_version=version, meter=meter, charge_model="graduated", properties={"tiers": [
        {"up_to": "10", "unit_price": "1.00", "flat_fee": "5"}, {"up_to": None, "unit_price": "0.50", "flat_fee": "0"},
    ]})
    create_subscription(customer=customer, plan_version=version, actor=actor, now=at(date(2024, 1, 1)),
                        start_date=date(2024, 1, 1))
    _events(customer, meter, date(2024, 1, 10), 25, "jan", now=at(date(2024, 1, 10)))
    [january] = close_customer(customer, now=at(date(2024, 2, 1)), actor=actor)
    [usage] = january.lines.filter(kind="usage")
    # 10 x 1.00 + 5 flat + 15 x 0.50 = 22.50
    assert (usage.quantity, usage.amount) == (Decimal("25"), Decimal("22.50"))
    assert [t["amount"] for t in usage.explanation["tiers"]] == ["15.00", "7.50"]
    assert recompute_invoice(january).matches

    # Two January events arrive after the invoice: reported by the check, billed once as late usage.
    _events(customer, meter, date(2024, 1, 20), 2, "late", now=at(date(2024, 2, 10)))
    report = recompute_invoice(january)
    assert report.late_events == 2 and report.matches
    [february] = close_customer(customer, now=at(date(2024, 3, 1)), actor=actor)
    [late] = february.lines.filter(kind="late_usage")
    assert (late.quantity, late.amount, late.period_start) == (Decimal("2"), Decimal("1.00"), date(2024, 1, 1))
    [march] = close_customer(customer, now=at(date(2024, 4, 1)), actor=actor) or [None]
    assert march is None or not march.lines.filter(kind="late_usage").exists()

    # The database itself refuses to change a finalized invoice (PostgreSQL trigger).
    from django.db import IntegrityError, transaction

    from invoicing.models import InvoiceLine

    with pytest.raises(IntegrityError), transaction.atomic():
        InvoiceLine.objects.filter(pk=usage.pk).update(amount=Decimal("22.40"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Invoice.objects.filter(pk=january.pk).update(total=Decimal("0"))
    with pytest.raises(IntegrityError), transaction.atomic():
        january.delete()


def test_recompute_reports_a_draft_line_that_no_longer_matches(actor):
    from invoicing.models import InvoiceLine
    from invoicing.services.recompute import recompute_invoice
    from tests.factories import ChargeFactory, MeterFactory

    customer = CustomerFactory(billing_entity=BillingEntityFactory(timezone="UTC", invoice_grace_days=3),
                               timezone="UTC")
    version = PlanVersionFactory(base_fee=Money("10.00", "USD"), base_fee_timing="arrears")
    meter = MeterFactory()
    ChargeFactory(plan_version=version, meter=meter, properties={"unit_price": "0.10"})
    create_subscription(customer=customer, plan_version=version, actor=actor, now=at(date(2024, 1, 1)),
                        start_date=date(2024, 1, 1))
    _events(customer, meter, date(2024, 1, 5), 7, "d", now=at(date(2024, 1, 5)))
    [draft] = close_customer(customer, now=at(date(2024, 2, 1)), actor=actor)
    assert draft.status == Invoice.Status.DRAFT
    assert recompute_invoice(draft).matches
    usage = draft.lines.get(kind="usage")
    InvoiceLine.objects.filter(pk=usage.pk).update(amount=Decimal("0.60"))
    report = recompute_invoice(draft)
    assert not report.matches
    assert [(c.line_id, c.stored_amount, c.recomputed_amount) for c in report.differences] == [
        (usage.pk, Decimal("0.60"), Decimal("0.70"))
    ]
