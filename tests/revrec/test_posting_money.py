"""Posting payments, refunds, reversals, write-offs, voids and breakage, with hand-computed figures.

Every invoice here is one set-up line of 100.00 USD (no tax), recognised when invoiced, unless said otherwise.
A ledger balance is Σ debits - Σ credits of the role's accounts: negative for a credit balance."""

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Sum

from invoicing.models import CustomerBalance, Invoice, Payment, Wallet
from invoicing.services.documents import ManualLine, create_one_off_invoice, expire_lots, void_invoice
from invoicing.services.payments import (
    mark_uncollectible,
    record_payment,
    refund_credit_balance,
    refund_payment,
    reverse_payment,
)
from revrec.models import JournalEntry, JournalLine, PerformanceObligation, Recognition, RevenueContract
from revrec.services.posting import post_pending
from revrec.services.recognition import recognize_through
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory

D = Decimal


def balance(role: str, entity_id: int | None = None) -> Decimal:
    lines = JournalLine.objects.filter(account__role=role)
    if entity_id is not None:
        lines = lines.filter(entry__billing_entity_id=entity_id)
    sums = lines.aggregate(d=Sum("debit"), c=Sum("credit"))
    return (sums["d"] or D(0)) - (sums["c"] or D(0))


def lines_of(entry: JournalEntry) -> set[tuple[str, Decimal, Decimal]]:
    return {(line.account.role, line.debit, line.credit) for line in entry.lines.select_related("account")}


def setup_invoice(actor, now, amount: str = "100.00"):  # type: ignore[no-untyped-def]
    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    invoice = create_one_off_invoice(customer, [ManualLine("Set-up", D(amount), product=ProductFactory())],
                                     actor=actor, now=now, finalize=True)
    return entity, customer, invoice


def pay(customer, amount: str, actor, now, **kwargs):  # type: ignore[no-untyped-def]
    return record_payment(customer=customer, amount=D(amount), currency="USD", method="bank_transfer",
                          received_on=now.date(), actor=actor, now=now, **kwargs)


def assert_reconciled(entity) -> None:  # type: ignore[no-untyped-def]
    """Receivable = Σ amount due of open posted invoices; customer_credit = -Σ credit balances."""
    open_due = Invoice.objects.filter(billing_entity=entity, status="finalized").aggregate(s=Sum("amount_due"))["s"]
    uncollectible = Invoice.objects.filter(billing_entity=entity, status="uncollectible")
    assert not uncollectible.exists() or all(
        JournalEntry.objects.filter(source_key=f"write_off:{i.pk}").exists() for i in uncollectible
    )
    assert balance("receivable", entity.pk) == (open_due or D(0))
    held = CustomerBalance.objects.filter(customer__billing_entity=entity).aggregate(s=Sum("balance"))["s"]
    assert balance("customer_credit", entity.pk) == -(held or D(0))


@pytest.mark.django_db(transaction=True)
def test_overpayment_leaves_credit(actor, now):
    """150.00 paid on a 100.00 invoice: Dr cash 150 / Cr receivable 100 / Cr customer credit 50."""
    entity, customer, _invoice = setup_invoice(actor, now)
    payment = pay(customer, "150.00", actor, now)
    summary = post_pending(now=now, actor=actor)
    assert summary.failures == []
    assert summary.posted == {"invoice": 1, "payment": 1}
    entry = JournalEntry.objects.get(source_key=f"payment:{payment.pk}")
    assert lines_of(entry) == {("cash", D("150.00"), D(0)), ("receivable", D(0), D("100.00")),
                               ("customer_credit", D(0), D("50.00"))}
    assert balance("receivable") == 0
    assert balance("customer_credit") == D("-50.00")
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_partial_payment(actor, now):
    """60.00 of 100.00: Dr cash 60 / Cr receivable 60, 40.00 still receivable."""
    entity, customer, _invoice = setup_invoice(actor, now)
    payment = pay(customer, "60.00", actor, now)
    post_pending(now=now, actor=actor)
    entry = JournalEntry.objects.get(source_key=f"payment:{payment.pk}")
    assert lines_of(entry) == {("cash", D("60.00"), D(0)), ("receivable", D(0), D("60.00"))}
    assert balance("receivable") == D("40.00")
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_pending_then_failed_payment_posts_nothing(actor, now):
    from invoicing.services.payments import mark_payment_failed

    _entity, customer, _invoice = setup_invoice(actor, now)
    payment = pay(customer, "100.00", actor, now, status=Payment.Status.PENDING)
    post_pending(now=now, actor=actor)
    mark_payment_failed(payment, code="card_declined", message="Declined", actor=actor, now=now)
    post_pending(now=now, actor=actor)
    assert not JournalEntry.objects.filter(kind="payment").exists()
    assert balance("receivable") == D("100.00")


@pytest.mark.django_db(transaction=True)
def test_refund_of_payment(actor, now):
    """100.00 paid, 30.00 refunded from the invoice: the refund reads Dr receivable 30 / Cr cash 30."""
    entity, customer, _invoice = setup_invoice(actor, now)
    payment = pay(customer, "100.00", actor, now)
    post_pending(now=now, actor=actor)
    refund = refund_payment(payment, amount=D("30.00"), reason="Partial refund", actor=actor, now=now)
    summary = post_pending(now=now, actor=actor)
    assert summary.posted == {"refund": 1}
    entry = JournalEntry.objects.get(source_key=f"refund:{refund.pk}")
    assert lines_of(entry) == {("receivable", D("30.00"), D(0)), ("cash", D(0), D("30.00"))}
    assert balance("cash") == D("70.00")
    assert balance("receivable") == D("30.00")
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_refund_of_credit_balance(actor, now):
    """150.00 paid on 100.00, the 50.00 credit refunded: Dr customer credit 50 / Cr cash 50."""
    entity, customer, _invoice = setup_invoice(actor, now)
    pay(customer, "150.00", actor, now)
    refund = refund_credit_balance(customer, currency="USD", amount=D("50.00"), reason="Overpaid", actor=actor,
                                   now=now)
    post_pending(now=now, actor=actor)
    entry = JournalEntry.objects.get(source_key=f"refund:{refund.pk}")
    assert lines_of(entry) == {("customer_credit", D("50.00"), D(0)), ("cash", D(0), D("50.00"))}
    assert balance("cash") == D("100.00")
    assert balance("customer_credit") == 0
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_payment_reversal(actor, now):
    """A 100.00 payment reversed the next day: Dr receivable 100 / Cr cash 100; the invoice owes 100 again."""
    entity, customer, _invoice = setup_invoice(actor, now)
    payment = pay(customer, "100.00", actor, now)
    post_pending(now=now, actor=actor)
    later = now + timedelta(days=1)
    reverse_payment(payment, reason="Bounced", actor=actor, now=later)
    summary = post_pending(now=later, actor=actor)
    assert summary.posted == {"payment_reversal": 1}
    entry = JournalEntry.objects.get(source_key=f"payment_reversal:{payment.pk}")
    assert entry.entry_date == date(2024, 1, 16)
    assert lines_of(entry) == {("receivable", D("100.00"), D(0)), ("cash", D(0), D("100.00"))}
    assert balance("cash") == 0
    assert balance("receivable") == D("100.00")
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_reversal_before_first_posting_posts_both(actor, now):
    entity, customer, _invoice = setup_invoice(actor, now)
    payment = pay(customer, "100.00", actor, now)
    reverse_payment(payment, reason="Recorded twice", actor=actor, now=now)
    summary = post_pending(now=now, actor=actor)
    assert summary.posted == {"invoice": 1, "payment": 1, "payment_reversal": 1}
    assert balance("cash") == 0
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_write_off_and_recovery(actor, now):
    """100.00 written off (Dr bad debt 100 / Cr receivable 100); 40.00 paid later is a recovery: the payment
    nets to Dr cash 40 / Cr bad debt 40, bad debt 60.00."""
    entity, customer, invoice = setup_invoice(actor, now)
    post_pending(now=now, actor=actor)
    mark_uncollectible(invoice, reason="Customer gone", actor=actor, now=now + timedelta(days=30))
    post_pending(now=now, actor=actor)
    entry = JournalEntry.objects.get(source_key=f"write_off:{invoice.pk}")
    assert entry.entry_date == date(2024, 2, 14)
    assert lines_of(entry) == {("bad_debt", D("100.00"), D(0)), ("receivable", D(0), D("100.00"))}
    later = now + timedelta(days=40)
    payment = pay(customer, "40.00", actor, later)
    post_pending(now=later, actor=actor)
    entry = JournalEntry.objects.get(source_key=f"payment:{payment.pk}")
    assert lines_of(entry) == {("cash", D("40.00"), D(0)), ("bad_debt", D(0), D("40.00"))}
    assert balance("bad_debt") == D("60.00")
    assert balance("receivable") == 0
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_recovery_posted_before_its_write_off(actor, now):
    """Marked and then paid in full before any sweep: the payment's recovery posts the write-off first; in
    the end bad debt nets to 0 and the receivable too."""
    entity, customer, invoice = setup_invoice(actor, now)
    mark_uncollectible(invoice, reason="Late", actor=actor, now=now)
    pay(customer, "100.00", actor, now + timedelta(hours=1))
    summary = post_pending(now=now, actor=actor)
    assert summary.failures == []
    assert balance("bad_debt") == 0
    assert balance("receivable") == 0
    assert JournalEntry.objects.filter(kind="write_off").count() == 1
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_void_reverses_invoice_and_recognised_revenue(actor, now):
    """310.00 for January (10.00 a day), issued on the 15th: 14 days (140.00) earned at posting, 15th
    recognised by the run (150.00 in all). Voided on the 16th: every balance of the invoice returns to zero and
    a -150.00 Recognition row takes the revenue back."""
    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    invoice = create_one_off_invoice(customer, [
        ManualLine("Jan", D("310.00"), period_start=date(2024, 1, 1), period_end=date(2024, 2, 1))
    ], actor=actor, now=now, finalize=True)
    post_pending(now=now, actor=actor)
    recognize_through(date(2024, 1, 15), actor=actor, now=now)
    assert balance("revenue") == D("-150.00")
    later = now + timedelta(days=1)
    void_invoice(invoice, reason="Wrong customer", actor=actor, now=later)
    summary = post_pending(now=later, actor=actor)
    assert summary.posted == {"invoice_void": 1}
    entry = JournalEntry.objects.get(source_key=f"invoice_void:{invoice.pk}")
    assert lines_of(entry) == {("revenue", D("150.00"), D(0)), ("deferred_revenue", D("160.00"), D(0)),
                               ("receivable", D(0), D("310.00"))}
    for role in ("receivable", "revenue", "deferred_revenue", "contract_asset"):
        assert balance(role) == 0, role
    obligation = PerformanceObligation.objects.get()
    assert obligation.status == "cancelled"
    assert Recognition.objects.filter(obligation=obligation).aggregate(s=Sum("amount"))["s"] == 0
    contract = RevenueContract.objects.get()
    assert (contract.billed, contract.recognized, contract.transaction_price) == (0, 0, 0)
    assert obligation.adjustments.get().billed_delta == D("-310.00")
    # Recognition has nothing left to do with it.
    assert recognize_through(date(2024, 1, 31), actor=actor, now=later).obligations == 0


@pytest.mark.django_db(transaction=True)
def test_breakage_of_expired_prepaid_credit(actor, now):
    """200.00 of prepaid credit bought (Cr prepaid credit 200), 80.00 drawn by an invoice, 120.00 expires:
    Dr prepaid credit 120 / Cr breakage 120, the liability is spent."""
    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    from invoicing.services.credits import purchase_prepaid_credit

    purchase = purchase_prepaid_credit(customer, amount=D("200.00"), expires_on=date(2024, 3, 1), actor=actor, now=now)
    pay(customer, "200.00", actor, now)
    create_one_off_invoice(customer, [ManualLine("Set-up", D("80.00"))], actor=actor, now=now, finalize=True)
    post_pending(now=now, actor=actor)
    assert purchase.status == "finalized"
    assert balance("prepaid_credit") == D("-120.00")
    later = datetime(2024, 3, 2, 12, tzinfo=now.tzinfo)
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().get(customer=customer)
        expired = expire_lots(wallet, today=date(2024, 3, 2), now=later, actor=actor)
    assert expired == D("120.00")
    summary = post_pending(now=later, actor=actor)
    assert summary.posted == {"wallet_expiry": 1}
    entry = JournalEntry.objects.get(kind="breakage")
    assert lines_of(entry) == {("prepaid_credit", D("120.00"), D(0)), ("breakage", D(0), D("120.00"))}
    assert balance("prepaid_credit") == 0
    assert_reconciled(entity)
