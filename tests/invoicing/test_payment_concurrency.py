"""Receivables under concurrency on PostgreSQL, with real threads each on its own connection: payments racing
for one invoice, the credit balance used twice at once, a refund racing a reversal, one idempotency key sent
twice at once. Whatever the interleaving, no invoice is over-paid and no balance overdrawn."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from customers.models import Customer
from invoicing.models import Allocation, CustomerBalanceTransaction, Invoice, Payment, Refund
from invoicing.services.cycle import close_customer
from invoicing.services.documents import ManualLine, create_one_off_invoice, finalize_invoice
from invoicing.services.payments import (
    AllocationRequest,
    apply_credit_balance,
    credit_balance,
    record_payment,
    refund_credit_balance,
    refund_payment,
    reverse_payment,
)
from tests.factories import BillingEntityFactory, CustomerFactory
from tests.invoicing.test_concurrency import FEB_1, metered_customer, race

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
]

D = Decimal
NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def customer() -> Customer:
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0)
    return CustomerFactory(billing_entity=entity, timezone="UTC")


def invoice(customer: Customer, amount: str, actor: Actor, *, finalize: bool = True) -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Services", D(amount))], actor=actor, now=NOW,
                                  finalize=finalize)


def pay(customer: Customer, amount: str, actor: Actor, **kwargs: object) -> Payment:
    return record_payment(customer=customer, amount=D(amount), currency="USD", method="bank_transfer",
                          received_on=NOW.date(), actor=actor, now=NOW, **kwargs)


def assert_settled_consistently(customer: Customer) -> None:
    """Every invoice's columns follow from its allocations; the balance is its ledger's sum and not negative."""
    for inv in Invoice.objects.filter(customer=customer).exclude(status__in=("draft", "void")):
        allocated = inv.allocations.aggregate(s=Sum("amount"))["s"] or D(0)
        assert inv.amount_paid + inv.amount_credited == allocated
        assert inv.amount_due == inv.total - inv.prepaid_credit_applied - allocated >= 0
        assert (inv.status == Invoice.Status.PAID) == (inv.amount_due == 0)
    ledger = CustomerBalanceTransaction.objects.filter(balance__customer=customer).aggregate(s=Sum("amount"))["s"]
    assert credit_balance(customer, "USD") == (ledger or D(0)) >= 0


@pytest.mark.parametrize(("amount", "field", "due"), [
    ("100.00", "allocations[0].invoice", "0"),  # the second finds the invoice paid
    ("60.00", "allocations[0].amount", "40.00"),  # the second asks 60 of the 40 left
])
def test_two_explicit_payments_on_one_invoice_at_once_never_overpay_it(customer, actor, amount, field, due):
    inv = invoice(customer, "100.00", actor)
    results, errors = race([
        lambda: pay(customer, amount, actor, allocations=[AllocationRequest(inv.pk, D(amount))]) for _ in range(2)
    ])
    # The second, queued on the customer's lock, sees what the first allocated and is refused whole.
    assert len(results) == 1 and len(errors) == 1 and isinstance(errors[0], BillingError), errors
    assert errors[0].field == field
    inv.refresh_from_db()
    assert (inv.amount_paid, inv.amount_due) == (D(amount), D(due))
    assert Payment.objects.count() == 1 and Allocation.objects.count() == 1
    assert_settled_consistently(customer)


def test_two_automatic_payments_at_once_pay_the_invoice_and_leave_the_rest_as_credit(customer, actor):
    inv = invoice(customer, "100.00", actor)
    results, errors = race([lambda amount=amount: pay(customer, amount, actor) for amount in ("60.00", "70.00")])
    assert errors == [] and len(results) == 2
    inv.refresh_from_db()
    assert (inv.status, inv.amount_paid, inv.amount_due) == (Invoice.Status.PAID, D("100.00"), D("0"))
    # 130 received for 100 owed: 30 is credit, whichever payment came second.
    assert credit_balance(customer, "USD") == D("30.00")
    second = CustomerBalanceTransaction.objects.get(kind="overpayment")
    assert second.amount == D("30.00")
    first = Payment.objects.exclude(pk=second.payment_id).get()
    assert list(Allocation.objects.filter(payment=first).values_list("amount", flat=True)) == [first.amount]
    assert list(Allocation.objects.filter(payment=second.payment).values_list("amount", flat=True)) == [
        second.payment.amount - D("30.00")]
    assert_settled_consistently(customer)


def test_four_payments_racing_over_three_invoices_never_overpay(customer, actor):
    invoices = [invoice(customer, amount, actor) for amount in ("50.00", "80.00", "30.00")]
    results, errors = race([lambda: pay(customer, "45.00", actor) for _ in range(4)])
    assert errors == [] and len(results) == 4
    # 180 received, 160 owed: every invoice paid, 20 left as credit.
    for inv in invoices:
        inv.refresh_from_db()
        assert (inv.status, inv.amount_paid) == (Invoice.Status.PAID, inv.total)
    assert credit_balance(customer, "USD") == D("20.00")
    assert_settled_consistently(customer)


def test_the_balance_applied_to_two_invoices_at_once_is_never_overdrawn(customer, actor):
    a, b = invoice(customer, "80.00", actor), invoice(customer, "70.00", actor)
    pay(customer, "100.00", actor, auto_allocate=False)
    results, errors = race([lambda pk=inv.pk: apply_credit_balance(pk, actor=actor, now=NOW) for inv in (a, b)])
    assert errors == [] and len(results) == 2
    # Whichever went first took all it could; the second got what was left of the 100.
    assert sorted(alloc.amount for alloc in results) in ([D("20.00"), D("80.00")], [D("30.00"), D("70.00")])
    assert sum(alloc.amount for alloc in results) == D("100.00")
    assert credit_balance(customer, "USD") == 0
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.amount_due + b.amount_due == D("50.00")
    assert_settled_consistently(customer)


def test_exact_balance_amounts_applied_at_once_one_is_refused(customer, actor):
    a, b = invoice(customer, "80.00", actor), invoice(customer, "70.00", actor)
    pay(customer, "60.00", actor, auto_allocate=False)
    results, errors = race([
        lambda pk=inv.pk: apply_credit_balance(pk, amount=D("60.00"), actor=actor, now=NOW) for inv in (a, b)
    ])
    assert len(results) == 1 and len(errors) == 1 and isinstance(errors[0], BillingError), errors
    assert credit_balance(customer, "USD") == 0
    assert Allocation.objects.filter(kind="credit_balance").count() == 1
    assert_settled_consistently(customer)


def test_finalization_and_a_refund_racing_for_the_balance_never_overdraw_it(customer, actor):
    pay(customer, "50.00", actor)  # nothing owed yet: all credit
    draft = invoice(customer, "40.00", actor, finalize=False)
    results, errors = race([
        lambda: finalize_invoice(Invoice(pk=draft.pk), actor=actor, now=NOW),
        lambda: refund_credit_balance(customer, currency="USD", amount=D("50.00"), reason="Closing the account",
                                      actor=actor, now=NOW),
    ])
    assert len(results) + len(errors) == 2
    draft.refresh_from_db()
    assert draft.status in (Invoice.Status.FINALIZED, Invoice.Status.PAID)
    if errors:  # the finalization took 40 first: the full refund no longer fits
        assert len(errors) == 1 and isinstance(errors[0], BillingError), errors
        assert (draft.amount_due, credit_balance(customer, "USD"), Refund.objects.count()) == (D(0), D("10.00"), 0)
    else:  # the refund went first: the invoice found no credit
        assert (draft.amount_due, credit_balance(customer, "USD"), Refund.objects.count()) == (D("40.00"), 0, 1)
    assert_settled_consistently(customer)


def test_refund_and_reversal_of_the_same_payment_at_once_exactly_one_wins(customer, actor):
    inv = invoice(customer, "100.00", actor)
    payment = pay(customer, "100.00", actor)
    results, errors = race([
        lambda: refund_payment(payment.pk, amount=D("100.00"), reason="Customer asked", actor=actor, now=NOW),
        lambda: reverse_payment(payment.pk, reason="Bounced", actor=actor, now=NOW),
    ])
    assert len(results) == 1 and len(errors) == 1 and isinstance(errors[0], InvalidTransition), errors
    payment.refresh_from_db()
    inv.refresh_from_db()
    if isinstance(results[0], Refund):
        assert payment.status == Payment.Status.SUCCEEDED and Refund.objects.count() == 1
        assert list(inv.allocations.values_list("kind", flat=True)) == ["payment", "refund"]
    else:
        assert payment.status == Payment.Status.REVERSED and not Refund.objects.exists()
        assert list(inv.allocations.values_list("kind", flat=True)) == ["payment", "payment_reversal"]
    # Either way the money came off the invoice exactly once.
    assert (inv.status, inv.amount_paid, inv.amount_due) == (Invoice.Status.FINALIZED, D("0"), D("100.00"))
    assert_settled_consistently(customer)


def test_two_refunds_of_the_whole_payment_at_once_refund_it_once(customer, actor):
    payment = pay(customer, "100.00", actor)  # all credit
    results, errors = race([
        lambda: refund_payment(payment.pk, amount=D("100.00"), reason="Customer asked", actor=actor, now=NOW)
        for _ in range(2)
    ])
    assert len(results) == 1 and len(errors) == 1 and isinstance(errors[0], BillingError), errors
    assert Refund.objects.count() == 1 and credit_balance(customer, "USD") == 0
    assert_settled_consistently(customer)


def test_the_same_idempotency_key_from_four_threads_makes_one_payment(customer, actor):
    inv = invoice(customer, "100.00", actor)
    results, errors = race([lambda: pay(customer, "40.00", actor, idempotency_key="wire-2024-03-01-7")
                            for _ in range(4)])
    assert errors == [] and len(results) == 4
    assert len({payment.pk for payment in results}) == 1
    assert Payment.objects.count() == 1 and Allocation.objects.count() == 1
    inv.refresh_from_db()
    assert inv.amount_due == D("60.00")
    assert_settled_consistently(customer)


def test_finalizing_by_hand_while_the_cycle_closes_the_same_customer_does_not_deadlock(actor):
    """Finalization takes the customer's lock before the invoice's and the number series' (the cycle close
    holds the customer while it numbers its invoice): the other order deadlocked every time."""
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0)
    for _ in range(3):
        customer, _sub = metered_customer(entity, actor)
        pay(customer, "500.00", actor)  # credit that both finalizations draw on
        draft = create_one_off_invoice(customer, [ManualLine("Set-up", D("10.00"))], actor=actor, now=FEB_1)
        results, errors = race([
            lambda pk=draft.pk: finalize_invoice(Invoice(pk=pk), actor=actor, now=FEB_1),
            lambda pk=customer.pk: close_customer(pk, now=FEB_1, actor=actor),
        ])
        assert errors == [] and len(results) == 2
        invoices = Invoice.objects.filter(customer=customer)
        assert sorted(invoices.values_list("total", flat=True)) == [D("10.00"), D("200.10")]
        # Both paid from the 500.00 of credit, whichever was numbered first.
        assert set(invoices.values_list("status", flat=True)) == {Invoice.Status.PAID}
        assert credit_balance(customer, "USD") == D("500.00") - D("10.00") - D("200.10")
        assert_settled_consistently(customer)
    numbers = list(Invoice.objects.filter(billing_entity=entity).values_list("sequence_number", flat=True))
    assert sorted(numbers) == list(range(1, 7))
