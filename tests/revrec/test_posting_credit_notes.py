"""Credit notes before, during and after recognition, with hand-computed figures.

The line: 3,100.00 USD ratable over January 2024 (31 days, 100.00 a day), invoiced on 1 January (nothing
earned at posting). No tax. The customer's day is New York's; `at(d)` is 17:00 UTC, noon there."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db.models import Sum

from invoicing.models import CustomerBalance, Invoice
from invoicing.services.credit_notes import CreditLineRequest, issue_credit_note
from invoicing.services.documents import ManualLine, create_one_off_invoice
from revrec.models import JournalEntry, JournalLine, ObligationAdjustment, PerformanceObligation, RevenueContract
from revrec.services.posting import post_pending
from revrec.services.recognition import recognize_through
from tests.factories import BillingEntityFactory, CustomerFactory

D = Decimal


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 17, tzinfo=UTC)


def balance(role: str) -> Decimal:
    sums = JournalLine.objects.filter(account__role=role).aggregate(d=Sum("debit"), c=Sum("credit"))
    return (sums["d"] or D(0)) - (sums["c"] or D(0))


def lines_of(entry: JournalEntry) -> set[tuple[str, Decimal, Decimal]]:
    return {(line.account.role, line.debit, line.credit) for line in entry.lines.select_related("account")}


def january(actor, amount: str = "3100.00", start: date = date(2024, 1, 1), end: date = date(2024, 2, 1)):  # type: ignore[no-untyped-def]
    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    invoice = create_one_off_invoice(customer, [ManualLine("Service", D(amount), period_start=start, period_end=end)],
                                     actor=actor, now=at(date(2024, 1, 1)), finalize=True)
    post_pending(now=at(date(2024, 1, 1)), actor=actor)
    return entity, customer, invoice


def credit(invoice: Invoice, amount: str, day: date, actor, settlement: str = "credit_balance"):  # type: ignore[no-untyped-def]
    line = invoice.lines.get()
    return issue_credit_note(invoice, lines=[CreditLineRequest(line, amount=D(amount))], reason="service_outage",
                             settlement=settlement, actor=actor, now=at(day))


def assert_reconciled() -> None:
    due = Invoice.objects.filter(status="finalized").aggregate(s=Sum("amount_due"))["s"] or D(0)
    assert balance("receivable") == due
    held = CustomerBalance.objects.aggregate(s=Sum("balance"))["s"] or D(0)
    assert balance("customer_credit") == -held


@pytest.mark.django_db(transaction=True)
def test_credit_during_recognition_splits_deferred_and_contra(actor):
    """Recognised through 10 January: 1,000.00; 2,100.00 remains. A 2,500.00 credit on the 11th: 2,100.00
    reduces deferred revenue, 400.00 (already recognised) goes to contra-revenue. The note is applied to the
    unpaid invoice: Dr deferred 2,100 + Dr contra 400 / Cr receivable 2,500. Nothing is left to recognise."""
    _entity, _customer, invoice = january(actor)
    recognize_through(date(2024, 1, 10), actor=actor, now=at(date(2024, 1, 10)))
    note = credit(invoice, "2500.00", date(2024, 1, 11), actor)
    summary = post_pending(now=at(date(2024, 1, 11)), actor=actor)
    assert summary.posted == {"credit_note": 1} and summary.failures == []
    entry = JournalEntry.objects.get(source_key=f"credit_note:{note.pk}")
    assert entry.entry_date == date(2024, 1, 11)
    assert lines_of(entry) == {("deferred_revenue", D("2100.00"), D(0)), ("contra_revenue", D("400.00"), D(0)),
                               ("receivable", D(0), D("2500.00"))}
    obligation = PerformanceObligation.objects.get()
    assert (obligation.allocated_price, obligation.recognized_amount) == (D("1000.00"), D("1000.00"))
    adjustment = ObligationAdjustment.objects.get()
    assert (adjustment.billed_delta, adjustment.allocated_delta, adjustment.entry_id) == (
        D("-2100.00"), D("-2100.00"), entry.pk)
    recognize_through(date(2024, 1, 31), actor=actor, now=at(date(2024, 2, 1)))
    obligation.refresh_from_db()
    assert obligation.recognized_amount == D("1000.00")
    assert obligation.status == "complete"
    assert balance("revenue") == D("-1000.00")
    assert balance("deferred_revenue") == 0
    assert_reconciled()


@pytest.mark.django_db(transaction=True)
def test_credit_within_the_remainder_reduces_only_deferred(actor):
    """1,000.00 credited on 11 January after 1,000.00 recognised: all of it reduces what remains (2,100.00
    → 1,100.00 over the 21 days left, rebased on the 11th); recognised through the 31st: exactly 2,100.00 =
    3,100.00 allocated - 1,000.00 credited."""
    _entity, _customer, invoice = january(actor)
    recognize_through(date(2024, 1, 10), actor=actor, now=at(date(2024, 1, 10)))
    note = credit(invoice, "1000.00", date(2024, 1, 11), actor)
    post_pending(now=at(date(2024, 1, 11)), actor=actor)
    entry = JournalEntry.objects.get(source_key=f"credit_note:{note.pk}")
    assert lines_of(entry) == {("deferred_revenue", D("1000.00"), D(0)), ("receivable", D(0), D("1000.00"))}
    obligation = PerformanceObligation.objects.get()
    assert (obligation.allocated_price, obligation.rebased_on, obligation.rebased_amount) == (
        D("2100.00"), date(2024, 1, 11), D("1000.00"))
    # The 11th: round(1,100 x 1/21) = 52.38 on top of the 1,000.00 (nothing recognised is restated).
    assert recognize_through(date(2024, 1, 11), actor=actor, now=at(date(2024, 1, 11))).amounts == {"USD": D("52.38")}
    recognize_through(date(2024, 1, 31), actor=actor, now=at(date(2024, 2, 1)))
    obligation.refresh_from_db()
    assert obligation.recognized_amount == D("2100.00") == obligation.allocated_price
    assert balance("revenue") == D("-2100.00")
    assert balance("deferred_revenue") == 0
    contract = RevenueContract.objects.get()
    assert (contract.billed, contract.recognized, contract.transaction_price) == (D("2100.00"), D("2100.00"),
                                                                                  D("2100.00"))
    assert_reconciled()


@pytest.mark.django_db(transaction=True)
def test_credit_after_full_recognition_is_contra_revenue(actor):
    """Fully recognised in January; 500.00 credited on 5 February, refunded by hand: Dr contra-revenue 500 /
    Cr customer credit 500 (the note), then Dr customer credit 500 / Cr cash 500 (the refund)."""
    _entity, customer, invoice = january(actor)
    recognize_through(date(2024, 1, 31), actor=actor, now=at(date(2024, 2, 1)))
    from tests.revrec.test_posting_money import pay

    pay(customer, "3100.00", actor, at(date(2024, 2, 1)))
    note = credit(invoice, "500.00", date(2024, 2, 5), actor, settlement="refund")
    summary = post_pending(now=at(date(2024, 2, 5)), actor=actor)
    assert summary.failures == []
    entry = JournalEntry.objects.get(source_key=f"credit_note:{note.pk}")
    assert lines_of(entry) == {("contra_revenue", D("500.00"), D(0)), ("customer_credit", D(0), D("500.00"))}
    assert balance("cash") == D("2600.00")
    assert balance("customer_credit") == 0
    assert balance("revenue") == D("-3100.00")
    assert balance("contra_revenue") == D("500.00")
    assert PerformanceObligation.objects.get().allocated_price == D("3100.00")
    assert not ObligationAdjustment.objects.exists()
    assert_reconciled()


@pytest.mark.django_db(transaction=True)
def test_credit_before_recognition_is_all_deferred(actor):
    """2,900.00 for February 2024 (29 days, 100.00 a day) invoiced on 1 January; 290.00 credited to the
    balance on 20 January, before any recognition: Dr deferred 290 / Cr receivable 290; February recognises
    2,610.00 = 2,900.00 - 290.00."""
    _entity, _customer, invoice = january(actor, "2900.00", date(2024, 2, 1), date(2024, 3, 1))
    note = credit(invoice, "290.00", date(2024, 1, 20), actor)
    post_pending(now=at(date(2024, 1, 20)), actor=actor)
    entry = JournalEntry.objects.get(source_key=f"credit_note:{note.pk}")
    assert lines_of(entry) == {("deferred_revenue", D("290.00"), D(0)), ("receivable", D(0), D("290.00"))}
    obligation = PerformanceObligation.objects.get()
    assert obligation.rebased_on == date(2024, 2, 1)
    recognize_through(date(2024, 2, 29), actor=actor, now=at(date(2024, 3, 1)))
    obligation.refresh_from_db()
    assert obligation.recognized_amount == D("2610.00")
    assert balance("deferred_revenue") == 0
    assert_reconciled()


@pytest.mark.django_db(transaction=True)
def test_credit_note_waits_for_its_invoice(actor):
    """A note whose invoice is not in the ledger yet is not posted (the sweep posts invoices first)."""
    from revrec.services.chart import Chart
    from revrec.services.posting.credit_notes import post_credit_note
    from revrec.services.posting.payments import NotReady

    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    invoice = create_one_off_invoice(customer, [ManualLine("Set-up", D("100.00"))], actor=actor,
                                     now=at(date(2024, 1, 1)), finalize=True)
    note = credit(invoice, "10.00", date(2024, 1, 2), actor)
    with pytest.raises(NotReady):
        post_credit_note(note, chart=Chart.load(entity), actor=actor, now=at(date(2024, 1, 2)))
    summary = post_pending(now=at(date(2024, 1, 2)), actor=actor)
    assert summary.posted == {"invoice": 1, "credit_note": 1}
    # A delivered set-up is recognised at once: the whole credit is contra-revenue.
    entry = JournalEntry.objects.get(source_key=f"credit_note:{note.pk}")
    assert lines_of(entry) == {("contra_revenue", D("10.00"), D(0)), ("receivable", D(0), D("10.00"))}
    assert_reconciled()
