"""The payments service with hand-computed figures: full, partial and split payments, automatic allocation
oldest due first, overpayment into the credit balance and its later use, negative invoices, reversals,
refunds and their failure, hostile input, idempotency, the append-only ledgers and write-offs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, transaction

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from customers.models import Customer
from invoicing.models import (
    Allocation,
    CustomerBalance,
    CustomerBalanceTransaction,
    Invoice,
    Payment,
    PaymentEvent,
    Refund,
)
from invoicing.services.credit_notes import credit_in_full
from invoicing.services.documents import ManualLine, create_one_off_invoice, void_invoice
from invoicing.services.payments import (
    AllocationRequest,
    allocate_payment,
    apply_credit_balance,
    credit_balance,
    invoice_allocation_sums,
    mark_payment_failed,
    mark_payment_succeeded,
    mark_refund_failed,
    mark_refund_succeeded,
    mark_uncollectible,
    money_amount,
    payment_credit,
    record_payment,
    refund_credit_balance,
    refund_payment,
    refundable,
    reverse_payment,
)
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db

D = Decimal
S = Invoice.Status
NOW = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)


def day(n: int) -> datetime:
    """Noon UTC on the n-th of January 2024 (a finalization on that day is due 30 days later)."""
    return datetime(2024, 1, 1, 12, tzinfo=UTC) + timedelta(days=n - 1)


@pytest.fixture
def customer() -> Customer:
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0, default_payment_terms_days=30)
    return CustomerFactory(billing_entity=entity, timezone="UTC")


def invoice(customer: Customer, amount: str, actor: Actor, now: datetime = NOW, *, currency: str | None = None,
            finalize: bool = True) -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Services", D(amount))], currency=currency, actor=actor,
                                  now=now, finalize=finalize)


def pay(customer: Customer, amount: object, actor: Actor, now: datetime = NOW, *, currency: str = "USD",
        **kwargs: object) -> Payment:
    return record_payment(customer=customer, amount=amount, currency=currency, method=kwargs.pop("method", "check"),
                          received_on=now.date(), actor=actor, now=now, **kwargs)


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def state(inv: Invoice) -> tuple[str, Decimal, Decimal, Decimal]:
    inv = fresh(inv)
    return inv.status, inv.amount_paid, inv.amount_credited, inv.amount_due


def ledger(customer: Customer, currency: str = "USD") -> list[tuple[str, Decimal]]:
    return list(CustomerBalanceTransaction.objects.filter(balance__customer=customer, balance__currency=currency)
                .order_by("id").values_list("kind", "amount"))


def allocations(inv: Invoice) -> list[tuple[str, Decimal]]:
    return list(Allocation.objects.filter(invoice=inv).order_by("id").values_list("kind", "amount"))


def assert_consistent(*invoices: Invoice) -> None:
    """Each invoice's paid/credited columns are its allocation sums, and its due follows from them."""
    for inv in invoices:
        inv = fresh(inv)
        sums = invoice_allocation_sums(inv)
        paid = sums["payment"] + sums["credit_balance"] + sums["payment_reversal"] + sums["refund"]
        assert inv.amount_paid == paid and inv.amount_credited == sums["credit_note"]
        assert inv.amount_due == inv.total - inv.prepaid_credit_applied - paid - sums["credit_note"] >= 0
        assert (inv.status == S.PAID) == (inv.amount_due == 0)


# --- payments and allocation ------------------------------------------------------------------------------


def test_full_payment_settles_the_invoice(customer, actor):
    inv = invoice(customer, "100.00", actor)
    assert state(inv) == (S.FINALIZED, D("0"), D("0"), D("100.00"))
    payment = pay(customer, D("100.00"), actor, method="bank_transfer", reference=" WIRE-1 ")
    assert (payment.status, payment.reference, payment.billing_entity_id) == (
        Payment.Status.SUCCEEDED, "WIRE-1", customer.billing_entity_id)
    assert state(inv) == (S.PAID, D("100.00"), D("0"), D("0"))
    assert fresh(inv).paid_at == NOW
    assert allocations(inv) == [("payment", D("100.00"))]
    assert credit_balance(customer, "USD") == 0 and ledger(customer) == []
    assert PaymentEvent.objects.filter(payment=payment, action="payment.recorded").count() == 1
    assert fresh(inv).events.filter(action="allocation.payment").count() == 1
    assert_consistent(inv)


def test_partial_payments_then_the_rest(customer, actor):
    inv = invoice(customer, "250.00", actor)
    pay(customer, "100.00", actor, method="card")
    assert state(inv) == (S.FINALIZED, D("100.00"), D("0"), D("150.00"))
    assert fresh(inv).paid_at is None
    pay(customer, "150.00", actor, now=NOW + timedelta(days=3))
    assert state(inv) == (S.PAID, D("250.00"), D("0"), D("0"))
    assert fresh(inv).paid_at == NOW + timedelta(days=3)
    assert allocations(inv) == [("payment", D("100.00")), ("payment", D("150.00"))]
    assert_consistent(inv)


def test_one_payment_over_three_invoices_explicitly(customer, actor):
    a, b, c = (invoice(customer, x, actor) for x in ("100.00", "200.00", "300.00"))
    payment = pay(customer, "500.00", actor, allocations=[
        AllocationRequest(a, D("100.00")), AllocationRequest(c.pk, D("300.00")), AllocationRequest(b, D("50.00"))])
    assert state(a) == (S.PAID, D("100.00"), D("0"), D("0"))
    assert state(b) == (S.FINALIZED, D("50.00"), D("0"), D("150.00"))
    assert state(c) == (S.PAID, D("300.00"), D("0"), D("0"))
    # 500 - 450 allocated: the 50 left is the customer's credit, attributed to the payment.
    assert credit_balance(customer, "USD") == D("50.00") and payment_credit(payment) == D("50.00")
    assert ledger(customer) == [("overpayment", D("50.00"))]
    assert_consistent(a, b, c)


def test_automatic_allocation_pays_the_oldest_due_first(customer, actor):
    late = invoice(customer, "50.00", actor, day(20))    # due 19 February
    oldest = invoice(customer, "100.00", actor, day(5))  # due 4 February
    middle = invoice(customer, "80.00", actor, day(10))  # due 9 February
    assert (fresh(oldest).due_date, fresh(middle).due_date) == (date(2024, 2, 4), date(2024, 2, 9))
    pay(customer, "150.00", actor, day(21))
    assert state(oldest) == (S.PAID, D("100.00"), D("0"), D("0"))
    assert state(middle) == (S.FINALIZED, D("50.00"), D("0"), D("30.00"))
    assert state(late) == (S.FINALIZED, D("0"), D("0"), D("50.00"))
    # Next: 30 to the middle one, 50 to the late one, 5 to the balance.
    pay(customer, "85.00", actor, day(22))
    assert [state(x)[0] for x in (oldest, middle, late)] == [S.PAID] * 3
    assert credit_balance(customer, "USD") == D("5.00")
    assert_consistent(oldest, middle, late)


def test_automatic_allocation_pays_current_debt_before_a_written_off_invoice(customer, actor):
    written_off = invoice(customer, "40.00", actor, day(1))
    current = invoice(customer, "60.00", actor, day(10))
    mark_uncollectible(written_off, reason="Customer unreachable", actor=actor, now=day(12))
    pay(customer, "70.00", actor, day(13))
    assert state(current) == (S.PAID, D("60.00"), D("0"), D("0"))
    assert state(written_off) == (S.UNCOLLECTIBLE, D("10.00"), D("0"), D("30.00"))


def test_a_payment_made_for_an_invoice_goes_to_it_first(customer, actor):
    older = invoice(customer, "100.00", actor, day(1))
    target = invoice(customer, "40.00", actor, day(10))
    pay(customer, "50.00", actor, day(11), invoice=target)
    assert state(target)[0] == S.PAID and state(older) == (S.FINALIZED, D("10.00"), D("0"), D("90.00"))


def test_auto_allocate_off_puts_everything_in_the_balance(customer, actor):
    inv = invoice(customer, "100.00", actor)
    payment = pay(customer, "30.00", actor, auto_allocate=False)
    assert state(inv)[3] == D("100.00") and payment_credit(payment) == D("30.00")
    # Then allocated from the payment's credit by hand.
    [allocation] = allocate_payment(payment, [AllocationRequest(inv, D("25.00"))], actor=actor, now=NOW)
    assert (allocation.kind, allocation.amount, allocation.payment_id) == ("payment", D("25.00"), payment.pk)
    assert state(inv)[3] == D("75.00")
    assert payment_credit(payment) == D("5.00") and credit_balance(customer, "USD") == D("5.00")
    with pytest.raises(BillingError, match=r"more than the 5\.00"):
        allocate_payment(payment, [AllocationRequest(inv, D("5.01"))], actor=actor, now=NOW)
    with pytest.raises(BillingError) as exc:
        allocate_payment(payment, [], actor=actor, now=NOW)
    assert exc.value.field == "allocations"
    assert state(inv)[3] == D("75.00") and credit_balance(customer, "USD") == D("5.00")
    assert_consistent(inv)


# --- the credit balance -----------------------------------------------------------------------------------


def test_overpayment_goes_to_the_balance_and_pays_the_next_invoice_at_finalization(customer, actor):
    first = invoice(customer, "100.00", actor, day(1))
    payment = pay(customer, "130.00", actor, day(2))
    assert state(first)[0] == S.PAID
    assert credit_balance(customer, "USD") == D("30.00") and payment_credit(payment) == D("30.00")
    second = invoice(customer, "50.00", actor, day(3))
    assert state(second) == (S.FINALIZED, D("30.00"), D("0"), D("20.00"))
    assert allocations(second) == [("credit_balance", D("30.00"))]
    assert credit_balance(customer, "USD") == 0
    assert ledger(customer) == [("overpayment", D("30.00")), ("applied", D("-30.00"))]
    assert_consistent(first, second)


def test_apply_credit_balance_by_hand(customer, actor):
    inv = invoice(customer, "25.00", actor)
    pay(customer, "40.00", actor, auto_allocate=False)
    assert apply_credit_balance(inv, amount=D("10.00"), actor=actor, now=NOW).amount == D("10.00")
    assert state(inv) == (S.FINALIZED, D("10.00"), D("0"), D("15.00"))
    # Without an amount: all it can (15 of the 30 left).
    assert apply_credit_balance(inv.pk, actor=actor, now=NOW).amount == D("15.00")
    assert state(inv) == (S.PAID, D("25.00"), D("0"), D("0"))
    assert credit_balance(customer, "USD") == D("15.00")
    with pytest.raises(InvalidTransition):
        apply_credit_balance(inv, actor=actor, now=NOW)
    second = create_one_off_invoice(customer, [ManualLine("More", D("100.00"))], actor=actor, now=NOW)
    with pytest.raises(InvalidTransition):  # a draft owes nothing yet
        apply_credit_balance(second, actor=actor, now=NOW)
    assert credit_balance(customer, "USD") == D("15.00")


def test_apply_credit_balance_refusals(customer, actor):
    inv = invoice(customer, "25.00", actor)
    pay(customer, "10.00", actor, auto_allocate=False)
    assert state(inv)[3] == D("25.00")
    with pytest.raises(BillingError, match=r"credit balance is 10\.00") as exc:
        apply_credit_balance(inv, amount=D("10.01"), actor=actor, now=NOW)
    assert exc.value.field == "amount"
    for bad in (D("-1"), D("0"), D("1.001"), "abc"):
        with pytest.raises(BillingError):
            apply_credit_balance(inv, amount=bad, actor=actor, now=NOW)
    assert state(inv)[3] == D("25.00") and credit_balance(customer, "USD") == D("10.00")
    # No balance at all: nothing to apply, nothing written.
    other = CustomerFactory(billing_entity=customer.billing_entity, timezone="UTC")
    empty = invoice(other, "5.00", actor)
    assert apply_credit_balance(empty, actor=actor, now=NOW) is None
    assert not Allocation.objects.filter(invoice=empty).exists()


def test_negative_invoice_credits_the_balance_and_pays_the_next_one(customer, actor):
    credit = create_one_off_invoice(customer, [ManualLine("Goodwill", D("-40.00")), ManualLine("Fee", D("10.00"))],
                                    actor=actor, now=day(1), finalize=True)
    credit = fresh(credit)
    assert (credit.total, credit.status, credit.amount_due, credit.amount_paid) == (
        D("-30.00"), S.PAID, D("0"), D("-30.00"))
    assert allocations(credit) == [("credit_balance", D("-30.00"))]
    assert credit_balance(customer, "USD") == D("30.00")
    assert ledger(customer) == [("invoice_credit", D("30.00"))]
    nxt = invoice(customer, "100.00", actor, day(2))
    assert state(nxt) == (S.FINALIZED, D("30.00"), D("0"), D("70.00"))
    assert credit_balance(customer, "USD") == 0
    assert_consistent(credit, nxt)
    with pytest.raises(InvalidTransition):  # paid by its own credit: a correction is a new document
        void_invoice(credit, reason="oops", actor=actor, now=day(3))


def test_zero_invoice_is_paid_at_finalization(customer, actor):
    inv = create_one_off_invoice(customer, [ManualLine("Free", D("0.00"))], actor=actor, now=NOW, finalize=True)
    assert state(inv) == (S.PAID, D("0"), D("0"), D("0"))
    assert not Allocation.objects.filter(invoice=inv).exists()


# --- reversal ---------------------------------------------------------------------------------------------


def test_reversal_reopens_invoices_and_removes_its_credit(customer, actor):
    a = invoice(customer, "100.00", actor, day(1))
    b = invoice(customer, "30.00", actor, day(2))
    payment = pay(customer, "150.00", actor, day(3))
    assert [state(x)[0] for x in (a, b)] == [S.PAID, S.PAID] and credit_balance(customer, "USD") == D("20.00")
    reversed_ = reverse_payment(payment, reason=" Bounced check ", actor=actor, now=day(4))
    assert (reversed_.status, reversed_.reversed_at, reversed_.reversal_reason) == (
        Payment.Status.REVERSED, day(4), "Bounced check")
    assert state(a) == (S.FINALIZED, D("0"), D("0"), D("100.00"))
    assert state(b) == (S.FINALIZED, D("0"), D("0"), D("30.00"))
    assert fresh(a).paid_at is None
    assert allocations(a) == [("payment", D("100.00")), ("payment_reversal", D("-100.00"))]
    assert credit_balance(customer, "USD") == 0
    assert ledger(customer) == [("overpayment", D("20.00")), ("payment_reversal", D("-20.00"))]
    # Nothing was deleted: the payment and its allocations are still there.
    assert Allocation.objects.filter(payment=payment).count() == 4
    assert refundable(fresh(payment)) == 0
    with pytest.raises(InvalidTransition):
        reverse_payment(payment, reason="again", actor=actor, now=day(5))
    with pytest.raises(InvalidTransition):
        refund_payment(payment, amount=D("1.00"), reason="x", actor=actor, now=day(5))
    assert_consistent(a, b)


def test_reversal_is_refused_once_its_credit_was_used(customer, actor):
    payment = pay(customer, "50.00", actor, day(1))
    used = invoice(customer, "30.00", actor, day(2))  # takes 30 of the 50 at finalization
    assert state(used)[0] == S.PAID and credit_balance(customer, "USD") == D("20.00")
    with pytest.raises(BillingError, match=r"credit balance is 20\.00"):
        reverse_payment(payment, reason="Recorded twice", actor=actor, now=day(3))
    assert fresh(payment).status == Payment.Status.SUCCEEDED and credit_balance(customer, "USD") == D("20.00")
    assert ledger(customer) == [("overpayment", D("50.00")), ("applied", D("-30.00"))]
    with pytest.raises(BillingError) as exc:
        reverse_payment(payment, reason="   ", actor=actor, now=day(3))
    assert exc.value.field == "reason"


def test_reversal_of_a_refunded_payment_is_refused(customer, actor):
    payment = pay(customer, "50.00", actor)
    refund_payment(payment, amount=D("10.00"), reason="Partial return", actor=actor, now=NOW)
    with pytest.raises(InvalidTransition, match="refunds"):
        reverse_payment(payment, reason="mistake", actor=actor, now=NOW)


def test_reversal_of_a_written_off_invoice_payment_makes_it_uncollectible_again(customer, actor):
    inv = invoice(customer, "100.00", actor, day(1))
    mark_uncollectible(inv, reason="Bankrupt", actor=actor, now=day(40))
    assert state(inv) == (S.UNCOLLECTIBLE, D("0"), D("0"), D("100.00"))
    payment = pay(customer, "100.00", actor, day(50))
    assert state(inv) == (S.PAID, D("100.00"), D("0"), D("0"))
    assert fresh(inv).marked_uncollectible_at == day(40)
    reverse_payment(payment, reason="Chargeback", actor=actor, now=day(51))
    assert state(inv) == (S.UNCOLLECTIBLE, D("0"), D("0"), D("100.00"))
    with pytest.raises(InvalidTransition):
        mark_uncollectible(invoice(customer, "1.00", actor, day(2), finalize=False), reason="x", actor=actor,
                           now=day(52))


# --- refunds ----------------------------------------------------------------------------------------------


def test_refund_takes_from_the_balance_first_then_reopens_invoices(customer, actor):
    a = invoice(customer, "60.00", actor, day(1))
    b = invoice(customer, "40.00", actor, day(2))
    payment = pay(customer, "150.00", actor, day(3))
    assert credit_balance(customer, "USD") == D("50.00") and refundable(payment) == D("150.00")
    first = refund_payment(payment, amount=D("30.00"), reason="Overpaid", actor=actor, now=day(4))
    assert (first.status, first.source, first.refunded_on) == (Refund.Status.SUCCEEDED, "payment", date(2024, 1, 4))
    assert credit_balance(customer, "USD") == D("20.00")
    assert [state(x)[0] for x in (a, b)] == [S.PAID, S.PAID]
    # 70 more: the 20 left in the balance, then 50 off the latest invoice (b: 40), then a (10).
    refund_payment(payment, amount=D("70.00"), reason="Service cancelled", actor=actor, now=day(5))
    assert credit_balance(customer, "USD") == 0
    assert state(b) == (S.FINALIZED, D("0"), D("0"), D("40.00"))
    assert state(a) == (S.FINALIZED, D("50.00"), D("0"), D("10.00"))
    assert allocations(b) == [("payment", D("40.00")), ("refund", D("-40.00"))]
    assert refundable(fresh(payment)) == D("50.00")
    with pytest.raises(BillingError, match=r"Only 50\.00") as exc:
        refund_payment(payment, amount=D("50.01"), reason="Too much", actor=actor, now=day(6))
    assert exc.value.field == "amount"
    refund_payment(payment, amount=D("50.00"), reason="All of it", actor=actor, now=day(6))
    assert state(a) == (S.FINALIZED, D("0"), D("0"), D("60.00"))
    assert refundable(fresh(payment)) == 0
    assert ledger(customer) == [("overpayment", D("50.00")), ("refund", D("-30.00")), ("refund", D("-20.00"))]
    assert_consistent(a, b)


def test_refund_of_a_payment_whose_credit_was_used_elsewhere_is_refused(customer, actor):
    payment = pay(customer, "50.00", actor, day(1))
    invoice(customer, "50.00", actor, day(2))  # the credit pays it at finalization, not attributed to the payment
    with pytest.raises(BillingError, match="used elsewhere"):
        refund_payment(payment, amount=D("10.00"), reason="Return", actor=actor, now=day(3))
    assert not Refund.objects.exists()


def test_refund_input_refusals(customer, actor):
    payment = pay(customer, "50.00", actor)
    for bad in (D("-5"), D("0"), D("1.001"), D("NaN"), "Infinity", "1e400"):
        with pytest.raises(BillingError) as exc:
            refund_payment(payment, amount=bad, reason="x", actor=actor, now=NOW)
        assert exc.value.field == "amount"
    with pytest.raises(BillingError) as exc:
        refund_payment(payment, amount=D("1"), reason=" ", actor=actor, now=NOW)
    assert exc.value.field == "reason"
    pending = pay(customer, "20.00", actor, status=Payment.Status.PENDING)
    with pytest.raises(InvalidTransition):
        refund_payment(pending, amount=D("1"), reason="x", actor=actor, now=NOW)
    assert not Refund.objects.exists() and credit_balance(customer, "USD") == D("50.00")


def test_refund_idempotency_key_makes_one_refund(customer, actor):
    payment = pay(customer, "50.00", actor)
    one = refund_payment(payment, amount=D("10.00"), reason="x", actor=actor, now=NOW, idempotency_key="rf-1")
    two = refund_payment(payment, amount=D("10.00"), reason="x", actor=actor, now=NOW, idempotency_key="rf-1")
    assert one.pk == two.pk and Refund.objects.count() == 1 and credit_balance(customer, "USD") == D("40.00")


def test_refund_credit_balance(customer, actor):
    credit = create_one_off_invoice(customer, [ManualLine("Credit", D("-30.00"))], actor=actor, now=NOW,
                                    finalize=True)
    assert state(credit)[0] == S.PAID and credit_balance(customer, "USD") == D("30.00")
    refund = refund_credit_balance(customer, currency="USD", amount=D("20.00"), reason="Customer asked",
                                   actor=actor, now=NOW)
    assert (refund.source, refund.status, refund.amount) == ("credit_balance", Refund.Status.SUCCEEDED, D("20.00"))
    assert credit_balance(customer, "USD") == D("10.00")
    with pytest.raises(BillingError, match=r"credit balance is 10\.00"):
        refund_credit_balance(customer, currency="USD", amount=D("10.01"), reason="x", actor=actor, now=NOW)
    with pytest.raises(BillingError):  # no EUR balance at all
        refund_credit_balance(customer, currency="EUR", amount=D("1.00"), reason="x", actor=actor, now=NOW)
    assert Refund.objects.count() == 1 and credit_balance(customer, "USD") == D("10.00")


def test_refund_credit_balance_through_a_payment_is_bounded_by_it(customer, actor):
    small = pay(customer, "10.00", actor)
    create_one_off_invoice(customer, [ManualLine("Credit", D("-90.00"))], actor=actor, now=NOW, finalize=True)
    assert credit_balance(customer, "USD") == D("100.00")
    # The balance holds 100, but the 10.00 payment's instrument can take back at most 10.00.
    with pytest.raises(BillingError, match=r"Only 10\.00") as exc:
        refund_credit_balance(customer, currency="USD", amount=D("50.00"), payment=small, reason="x", actor=actor,
                              now=NOW)
    assert exc.value.field == "amount"
    other = CustomerFactory(billing_entity=customer.billing_entity, timezone="UTC")
    theirs = pay(other, "10.00", actor)
    with pytest.raises(BillingError) as exc:
        refund_credit_balance(customer, currency="USD", amount=D("5.00"), payment=theirs, reason="x", actor=actor,
                              now=NOW)
    assert exc.value.field == "payment"
    refund_credit_balance(customer, currency="USD", amount=D("10.00"), payment=small, reason="x", actor=actor, now=NOW)
    assert credit_balance(customer, "USD") == D("90.00") and refundable(fresh(small)) == 0


def test_failed_refund_from_the_balance_restores_the_credit(customer, actor):
    pay(customer, "50.00", actor)
    refund = refund_credit_balance(customer, currency="USD", amount=D("50.00"), reason="x", actor=actor, now=NOW)
    assert credit_balance(customer, "USD") == 0
    failed = mark_refund_failed(refund, message="Account closed", actor=actor, now=NOW + timedelta(days=1))
    assert (failed.status, failed.failure_message) == (Refund.Status.FAILED, "Account closed")
    assert credit_balance(customer, "USD") == D("50.00")
    assert ledger(customer)[-1] == ("refund_failed", D("50.00"))
    # A second failure notice changes nothing.
    mark_refund_failed(refund, message="again", actor=actor, now=NOW + timedelta(days=2))
    assert credit_balance(customer, "USD") == D("50.00")


def test_failed_refund_of_a_payment_settles_its_invoice_again(customer, actor):
    inv = invoice(customer, "100.00", actor, day(1))
    payment = pay(customer, "100.00", actor, day(2))
    refund = refund_payment(payment, amount=D("100.00"), reason="Duplicate", actor=actor, now=day(3))
    assert state(inv) == (S.FINALIZED, D("0"), D("0"), D("100.00")) and refundable(fresh(payment)) == 0
    mark_refund_failed(refund, message="Card expired", actor=actor, now=day(4))
    assert state(inv) == (S.PAID, D("100.00"), D("0"), D("0"))
    assert credit_balance(customer, "USD") == 0
    # The money is the payment's again: it can be refunded (or reversed) once more.
    assert refundable(fresh(payment)) == D("100.00")
    refund_payment(payment, amount=D("100.00"), reason="Retry", actor=actor, now=day(5))
    assert state(inv) == (S.FINALIZED, D("0"), D("0"), D("100.00"))
    assert_consistent(inv)


def test_failed_refund_restores_its_invoice_only_up_to_what_it_still_owes(customer, actor):
    inv = invoice(customer, "100.00", actor, day(1))
    payment = pay(customer, "100.00", actor, day(2))
    refund = refund_payment(payment, amount=D("100.00"), reason="Duplicate", actor=actor, now=day(3))
    pay(customer, "70.00", actor, day(4))  # the customer paid 70 of it again meanwhile
    assert state(inv)[3] == D("30.00")
    mark_refund_failed(refund, message="Card expired", actor=actor, now=day(5))
    assert state(inv) == (S.PAID, D("100.00"), D("0"), D("0"))
    assert credit_balance(customer, "USD") == D("70.00")
    assert_consistent(inv)


def test_gateway_refund_is_pending_until_the_gateway_answers(customer, actor):
    inv = invoice(customer, "100.00", actor)
    payment = pay(customer, "100.00", actor, method="card", gateway="stripe", gateway_reference="pi_1")
    refund = refund_payment(payment, amount=D("40.00"), reason="Partial return", actor=actor, now=NOW)
    # Sent after commit; until the gateway answers, the invoice already owes the 40 again.
    assert (refund.status, refund.gateway) == (Refund.Status.PENDING, "stripe")
    assert state(inv) == (S.FINALIZED, D("60.00"), D("0"), D("40.00"))
    done = mark_refund_succeeded(refund, actor=actor, now=NOW, gateway_reference="re_1")
    assert (done.status, done.gateway_reference) == (Refund.Status.SUCCEEDED, "re_1")
    assert mark_refund_succeeded(refund, actor=actor, now=NOW).status == Refund.Status.SUCCEEDED
    second = refund_payment(payment, amount=D("60.00"), reason="The rest", actor=actor, now=NOW)
    mark_refund_failed(second, message="insufficient_funds", actor=actor, now=NOW)
    assert state(inv) == (S.FINALIZED, D("60.00"), D("0"), D("40.00"))
    assert refundable(fresh(payment)) == D("60.00")
    assert_consistent(inv)


def test_failed_credit_note_refund_is_the_notes_credit_not_the_payments(customer, actor):
    inv = invoice(customer, "100.00", actor, day(1))
    payment = pay(customer, "100.00", actor, day(2))
    note = credit_in_full(inv, reason="duplicate", settlement="refund", actor=actor, now=day(3))
    refund = Refund.objects.get(credit_note=note)
    assert (refund.payment_id, refund.amount, refund.source) == (payment.pk, D("100.00"), "credit_note")
    mark_refund_failed(refund, message="Card closed", actor=actor, now=day(4))
    assert credit_balance(customer, "USD") == D("100.00") and payment_credit(payment) == 0
    # The payment bounces afterwards: its reversal reopens the invoice and leaves the note's credit alone.
    reverse_payment(payment, reason="Chargeback", actor=actor, now=day(5))
    assert state(inv) == (S.FINALIZED, D("0"), D("0"), D("100.00"))
    assert credit_balance(customer, "USD") == D("100.00")
    assert_consistent(inv)


# --- hostile input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [
    D("-1.00"), -1, D("0"), "0.00", "-0", D("10.001"), "0.001", D("NaN"), "nan", D("sNaN"), float("nan"),
    D("Infinity"), "-Infinity", float("inf"), "1e15", "1e400", "9" * 40, "abc", "", "  ", None, "1,00", [1], True,
])
def test_bad_payment_amounts_are_refused(customer, actor, amount):
    inv = invoice(customer, "100.00", actor)
    with pytest.raises(BillingError) as exc:
        pay(customer, amount, actor)
    assert exc.value.field == "amount"
    assert not Payment.objects.exists() and state(inv)[3] == D("100.00")


def test_jpy_amounts_are_whole_yen(actor):
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0, default_currency="JPY")
    customer = CustomerFactory(billing_entity=entity, timezone="UTC", currency="JPY")
    inv = invoice(customer, "1000", actor, currency="JPY")
    assert fresh(inv).total == D("1000")
    payment = pay(customer, "400.0", actor, currency="JPY")  # trailing zero: still whole yen
    assert payment.amount == D("400") and state(inv)[3] == D("600")
    for bad in ("0.5", "100.5", "1.01"):
        with pytest.raises(BillingError, match="JPY amounts have at most 0 decimal places"):
            pay(customer, bad, actor, currency="JPY")
    assert money_amount("12.00", "USD") == D("12.00") and money_amount("0.001", "KWD") == D("0.001")
    with pytest.raises(BillingError):
        money_amount("0.0001", "KWD")
    assert money_amount("0", "USD", allow_zero=True) == 0


def test_unknown_or_lowercase_currency(customer, actor):
    inv = invoice(customer, "100.00", actor)
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, currency="ZZZ")
    assert exc.value.field == "currency"
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, currency="")
    assert exc.value.field == "currency"
    # "usd" is USD: it pays the USD invoice, not a separate "usd" balance.
    payment = pay(customer, "10.00", actor, currency=" usd ")
    assert payment.currency == "USD" and state(inv)[3] == D("90.00")


def test_currency_mismatch_is_refused(customer, actor):
    inv = invoice(customer, "100.00", actor)
    with pytest.raises(BillingError, match="Currency mismatch") as exc:
        pay(customer, "10.00", actor, currency="EUR", allocations=[AllocationRequest(inv, D("10.00"))])
    assert exc.value.field == "allocations[0].invoice"
    with pytest.raises(BillingError, match="Currency mismatch") as exc:
        pay(customer, "10.00", actor, currency="EUR", invoice=inv)
    assert exc.value.field == "currency"
    assert not Payment.objects.exists()
    # Money in another currency with nothing to pay is credit in that currency, never mixed with USD.
    pay(customer, "10.00", actor, currency="EUR")
    assert state(inv)[3] == D("100.00")
    assert (credit_balance(customer, "EUR"), credit_balance(customer, "USD")) == (D("10.00"), 0)
    with pytest.raises(BillingError, match="Currency mismatch"):
        refund_credit_balance(customer, currency="USD", amount=D("1.00"), reason="x", actor=actor, now=NOW,
                              payment=Payment.objects.get())


@pytest.mark.parametrize("case", [
    "over_allocated", "above_due", "twice", "other_customer", "draft", "void", "paid", "missing", "bad_amount",
])
def test_bad_allocations_are_refused_and_write_nothing(customer, actor, case):
    a = invoice(customer, "100.00", actor)
    b = invoice(customer, "50.00", actor)
    other = invoice(CustomerFactory(billing_entity=customer.billing_entity, timezone="UTC"), "10.00", actor)
    draft = invoice(customer, "10.00", actor, finalize=False)
    void = void_invoice(invoice(customer, "10.00", actor), reason="Wrong", actor=actor, now=NOW)
    paid = invoice(customer, "5.00", actor)
    pay(customer, "5.00", actor, allocations=[AllocationRequest(paid, D("5.00"))])
    requests, field = {
        "over_allocated": ([AllocationRequest(a, D("100.00")), AllocationRequest(b, D("50.00"))], "allocations"),
        "above_due": ([AllocationRequest(b, D("50.01"))], "allocations[0].amount"),
        "twice": ([AllocationRequest(a, D("10.00")), AllocationRequest(a.pk, D("10.00"))], "allocations[1].invoice"),
        "other_customer": ([AllocationRequest(other, D("10.00"))], "allocations[0].invoice"),
        "draft": ([AllocationRequest(draft, D("10.00"))], "allocations[0].invoice"),
        "void": ([AllocationRequest(void, D("10.00"))], "allocations[0].invoice"),
        "paid": ([AllocationRequest(paid, D("1.00"))], "allocations[0].invoice"),
        "missing": ([AllocationRequest(10**9, D("1.00"))], "allocations[0].invoice"),
        "bad_amount": ([AllocationRequest(a, D("-1.00"))], "allocations[0].amount"),
    }[case]
    before = (Payment.objects.count(), Allocation.objects.count(), CustomerBalanceTransaction.objects.count())
    with pytest.raises(BillingError) as exc:
        pay(customer, "120.00", actor, allocations=requests)
    assert exc.value.field == field
    assert (Payment.objects.count(), Allocation.objects.count(), CustomerBalanceTransaction.objects.count()) == before
    assert [state(x)[3] for x in (a, b, other)] == [D("100.00"), D("50.00"), D("10.00")]


def test_other_payment_refusals(customer, actor):
    other_customer = CustomerFactory(billing_entity=customer.billing_entity, timezone="UTC")
    theirs = invoice(other_customer, "10.00", actor)
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, invoice=theirs)
    assert exc.value.field == "invoice"
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, method="bitcoin")
    assert exc.value.field == "method"
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, status=Payment.Status.REVERSED)
    assert exc.value.field == "status"
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, idempotency_key="k" * 201)
    assert exc.value.field == "idempotency_key"
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, gateway_reference="x" * 101)
    assert exc.value.field == "gateway_reference"
    inv = invoice(customer, "10.00", actor)
    with pytest.raises(BillingError) as exc:
        pay(customer, "10.00", actor, status=Payment.Status.PENDING, allocations=[AllocationRequest(inv, D("1"))])
    assert exc.value.field == "allocations"
    assert not Payment.objects.exists()


def test_idempotency_key_twice_makes_one_payment(customer, actor):
    inv = invoice(customer, "100.00", actor)
    one = pay(customer, "60.00", actor, idempotency_key="pay-42")
    two = pay(customer, "60.00", actor, idempotency_key="pay-42")
    assert one.pk == two.pk and Payment.objects.count() == 1
    assert state(inv)[3] == D("40.00") and Allocation.objects.count() == 1


def test_pending_gateway_payment_allocates_when_it_succeeds(customer, actor):
    inv = invoice(customer, "100.00", actor)
    payment = pay(customer, "100.00", actor, method="card", status=Payment.Status.PENDING, invoice=inv,
                  gateway="stripe", gateway_reference="pi_123")
    assert state(inv)[3] == D("100.00")
    mark_payment_succeeded(payment, actor=actor, now=NOW)
    assert state(inv)[0] == S.PAID
    mark_payment_succeeded(payment, actor=actor, now=NOW)  # a redelivered event: nothing more
    assert Allocation.objects.filter(payment=payment).count() == 1
    # A late "failed" never undoes a success.
    assert mark_payment_failed(payment, code="card_declined", message="late", actor=actor,
                               now=NOW).status == Payment.Status.SUCCEEDED
    declined = pay(customer, "10.00", actor, method="card", status=Payment.Status.PENDING)
    failed = mark_payment_failed(declined, code="card_declined", message="Declined", actor=actor, now=NOW)
    assert (failed.status, failed.failure_code) == (Payment.Status.FAILED, "card_declined")
    assert credit_balance(customer, "USD") == 0
    with pytest.raises(InvalidTransition):
        reverse_payment(declined, reason="x", actor=actor, now=NOW)


# --- ledgers, void and write-off --------------------------------------------------------------------------


def test_allocations_and_balance_transactions_are_append_only(customer, actor):
    invoice(customer, "100.00", actor)
    pay(customer, "120.00", actor)
    allocation = Allocation.objects.get()
    entry = CustomerBalanceTransaction.objects.get()
    for rows, change in [
        (Allocation.objects.filter(pk=allocation.pk), {"amount": D("1.00")}),
        (CustomerBalanceTransaction.objects.filter(pk=entry.pk), {"amount": D("999.00")}),
    ]:
        with pytest.raises(DatabaseError, match="never changed"), transaction.atomic():
            rows.update(**change)
        with pytest.raises(DatabaseError, match="never deleted"), transaction.atomic():
            rows.delete()
    assert Allocation.objects.get().amount == D("100.00")
    assert CustomerBalanceTransaction.objects.get().amount == D("20.00")


def test_balance_equals_its_ledger_and_cannot_go_negative(customer, actor):
    pay(customer, "20.00", actor)
    account = CustomerBalance.objects.get(customer=customer)
    with pytest.raises(DatabaseError), transaction.atomic():
        CustomerBalance.objects.filter(pk=account.pk).update(balance=D("-1.00"))
    assert account.balance == sum(account.transactions.values_list("amount", flat=True))


def test_void_is_refused_once_paid_even_partly(customer, actor):
    paid = invoice(customer, "10.00", actor)
    partly = invoice(customer, "100.00", actor)
    pay(customer, "30.00", actor)
    for inv in (paid, partly):
        with pytest.raises(InvalidTransition):
            void_invoice(inv, reason="Wrong customer", actor=actor, now=NOW)
    assert (state(paid)[0], state(partly)[0]) == (S.PAID, S.FINALIZED)


def test_written_off_invoice_is_settled_by_a_later_payment(customer, actor):
    inv = invoice(customer, "80.00", actor, day(1))
    pay(customer, "30.00", actor, day(2))
    with pytest.raises(BillingError) as exc:
        mark_uncollectible(inv, reason=" ", actor=actor, now=day(60))
    assert exc.value.field == "reason"
    written_off = mark_uncollectible(inv, reason="Collections gave up", actor=actor, now=day(60))
    assert (written_off.status, written_off.amount_due, written_off.marked_uncollectible_at) == (
        S.UNCOLLECTIBLE, D("50.00"), day(60))
    assert mark_uncollectible(inv, reason="again", actor=actor, now=day(61)).marked_uncollectible_at == day(60)
    assert fresh(inv).events.filter(action="marked_uncollectible").count() == 1
    pay(customer, "50.00", actor, day(90))
    assert state(inv) == (S.PAID, D("80.00"), D("0"), D("0"))
    assert fresh(inv).paid_at == day(90)
    with pytest.raises(InvalidTransition):
        mark_uncollectible(inv, reason="paid now", actor=actor, now=day(91))
    assert_consistent(inv)
