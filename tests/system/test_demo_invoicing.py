"""The demo's invoicing: replayed cycle closes left numbered invoices, and a close "as of now" has work to do."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.actors import Actor
from billing.demo import _DemoBuilder, load_demo_data
from customers.models import BillingEntity, Customer
from invoicing.models import (
    AppliedCoupon,
    CreditGrant,
    CycleRun,
    InstallmentPlan,
    Invoice,
    InvoiceLine,
    PendingCharge,
    TaxRate,
    Wallet,
    WalletTransaction,
)
from invoicing.services.cycle import run_cycle_close_inline
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)


@pytest.fixture
def demo() -> None:
    assert load_demo_data(now=NOW).created


def test_replayed_closes_run_monthly_and_leave_the_current_month_open() -> None:
    assert _DemoBuilder(NOW).close_moments() == [
        datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 2, 1, 12, tzinfo=UTC),
        datetime(2026, 3, 1, 12, tzinfo=UTC),
    ]
    # Too early in the month for anything to have ended since the 1st: the replayed closes move back a month.
    assert _DemoBuilder(datetime(2026, 3, 2, 9, tzinfo=UTC)).close_moments()[-1] == datetime(2026, 2, 1, 12, tzinfo=UTC)


def test_historical_closes_finalized_numbered_invoices_without_failures(demo: None) -> None:
    runs = list(CycleRun.objects.order_by("as_of"))
    assert [r.as_of for r in runs] == _DemoBuilder(NOW).close_moments()
    assert all(r.status == CycleRun.Status.COMPLETED and r.failed_customers == 0 for r in runs), [
        (r.as_of, list(r.customers.filter(status="failed").values_list("customer__external_id", "error")))
        for r in runs if r.failed_customers
    ]
    assert all(r.invoices_created > 0 for r in runs)

    numbers: dict[str, list[int]] = defaultdict(list)
    for entity_code, sequence in Invoice.objects.exclude(number__isnull=True).values_list(
        "billing_entity__code", "sequence_number"
    ):
        numbers[entity_code].append(sequence)
    assert set(numbers) == {"northwind-us", "northwind-eu"}
    for sequence in numbers.values():
        assert sorted(sequence) == list(range(1, len(sequence) + 1))  # gapless
    for invoice in Invoice.objects.all():
        lines = list(invoice.lines.all())
        assert invoice.subtotal == sum((line.amount for line in lines), Decimal(0))
        assert invoice.total == invoice.subtotal - invoice.discount_total + invoice.tax_total


def test_grace_periods_and_tax_rates(demo: None) -> None:
    grace = dict(BillingEntity.objects.values_list("code", "invoice_grace_days"))
    assert grace == {"northwind-us": 2, "northwind-eu": 0}
    rates = {(str(r.country), r.region, r.tax_code): r.percent for r in TaxRate.objects.all()}
    assert rates == {("US", "NY", "saas"): Decimal("8.875"), ("DE", "", ""): Decimal(19), ("FR", "", ""): Decimal(20),
                     ("GB", "", ""): Decimal(20), ("NL", "", ""): Decimal(21)}
    lines = InvoiceLine.objects.exclude(invoice__status=Invoice.Status.VOID)
    assert lines.filter(customer__state="NY", tax_percent=Decimal("8.875"), tax_amount__gt=0).exists()
    assert lines.filter(customer__country="DE", tax_percent=Decimal(19)).exists()
    assert lines.filter(tax_treatment="reverse_charge").exists()
    assert lines.filter(customer__tax_exempt=True).exclude(tax_treatment="exempt").filter(tax_amount__gt=0).count() == 0
    # US customers outside New York pay no sales tax here.
    assert not lines.filter(customer__country="US").exclude(customer__state="NY").filter(tax_amount__gt=0).exists()


def test_coupons_credit_wallet_one_off_and_installments(demo: None) -> None:
    assert AppliedCoupon.objects.count() >= 4
    assert Invoice.objects.filter(discount_breakdown__0__source="coupon").exists()

    grant = CreditGrant.objects.get()
    assert grant.remaining < grant.amount  # the promotional credit discounted an invoice

    wallet = Wallet.objects.get()
    assert wallet.customer.external_id == "cus_lumiere"
    # Bought on its own invoice, which the customer has paid since (demo_receivables: prompt payers).
    assert Invoice.objects.filter(kind=Invoice.Kind.CREDIT_PURCHASE, customer=wallet.customer,
                                  status=Invoice.Status.PAID).exists()
    assert WalletTransaction.objects.filter(wallet=wallet, kind="drawdown").exists()
    assert Decimal(0) <= wallet.balance < Decimal("2000.00")
    assert Invoice.objects.filter(customer=wallet.customer, prepaid_credit_applied__gt=0).exists()

    plan = InstallmentPlan.objects.get()
    charges = list(plan.charges.order_by("installment_number"))
    assert [c.unit_price for c in charges] == [Decimal("3333.34"), Decimal("3333.33"), Decimal("3333.33")]
    assert [c.invoice_id is not None for c in charges] == [True, True, False]

    workshop = PendingCharge.objects.get(installment_plan__isnull=True)
    assert workshop.invoice is None and workshop.bill_on == NOW.date()


def test_usage_events_for_the_previous_and_current_period(demo: None) -> None:
    count = UsageEvent.objects.count()
    assert 1000 <= count <= 5000
    month_start = datetime(2026, 3, 1, tzinfo=UTC)
    assert UsageEvent.objects.filter(timestamp__lt=month_start).exists()
    assert UsageEvent.objects.filter(timestamp__gte=month_start).exists()
    usage = InvoiceLine.objects.filter(kind=InvoiceLine.Kind.USAGE, amount__gt=0)
    assert usage.exists()
    for line in usage[:50]:
        assert line.meter_id and line.period_start and line.period_end
        assert line.explanation, "a usage line says what produced it"


def test_a_close_as_of_now_bills_the_open_periods_once(demo: None, actor: Actor) -> None:
    before = set(Invoice.objects.values_list("pk", flat=True))
    run = run_cycle_close_inline(now=NOW + timedelta(minutes=5), actor=actor)
    assert run.failed_customers == 0, list(run.customers.values_list("customer__external_id", "error"))
    new = Invoice.objects.exclude(pk__in=before)
    assert run.invoices_created == new.count() >= 2
    billed = set(new.values_list("customer__external_id", flat=True))
    assert {"cus_aurora", "cus_tidewater"} <= billed
    assert PendingCharge.objects.filter(installment_plan__isnull=True, invoice__in=new).exists()
    assert InvoiceLine.objects.filter(invoice__in=new, kind=InvoiceLine.Kind.LATE_USAGE).exists()
    # USD drafts wait for review; EUR invoices are final at once.
    usd = new.filter(customer__billing_entity__code="northwind-us")
    assert usd.exists() and not usd.exclude(status=Invoice.Status.DRAFT).exists()

    again = run_cycle_close_inline(now=NOW + timedelta(minutes=6), actor=actor)
    assert again.invoices_created == 0


def test_customers_state_follows_their_timezone(demo: None) -> None:
    assert Customer.objects.get(external_id="cus_globex").state == "NY"
    assert Customer.objects.get(external_id="cus_pinecrest").state == "CA"
