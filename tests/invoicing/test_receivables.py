"""Receivables selectors over histories built through the real services: open amounts at any past date, aging
buckets, the customer's balance at a date, statements and DSO, with hand-computed figures; and a property test
that the balance is the sum over the customer's documents and equals what its open invoices owe less its credit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.selectors import customer_today
from invoicing.models import Invoice, Payment
from invoicing.services.credit_notes import issue_credit_note, remaining_creditable
from invoicing.services.documents import ManualLine, create_one_off_invoice, void_invoice
from invoicing.services.payments import (
    AllocationRequest,
    apply_credit_balance,
    credit_balance,
    mark_uncollectible,
    record_payment,
    refund_credit_balance,
    refund_payment,
    refundable,
    reverse_payment,
)
from invoicing.services.receivables import (
    aging_report,
    balance_breakdown,
    bucket_for,
    customer_balance_at,
    customer_statement,
    dso,
    dso_figures,
    open_amount_at,
    open_items,
)
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db

D = Decimal
ACTOR = Actor.system("receivables tests")


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def invoice(customer, amount: str, day: date, currency: str | None = None) -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Services", D(amount))], currency=currency, actor=ACTOR,
                                  now=at(day), finalize=True)


def pay(customer, amount: str, day: date, *, to: Invoice | None = None, currency: str = "USD") -> Payment:
    allocations = [AllocationRequest(to, D(amount))] if to is not None else None
    return record_payment(customer=customer, amount=D(amount), currency=currency, method="bank_transfer",
                          received_on=day, actor=ACTOR, now=at(day), allocations=allocations, reference="wire")


@dataclass
class Book:
    customer: object
    e: Invoice
    a: Invoice
    b: Invoice
    c: Invoice
    d: Invoice
    p1: Payment
    p2: Payment
    p3: Payment


def build_book(customer=None) -> Book:
    """One customer's history (UTC, 30-day terms):

    2023-10-01 E 80.00 (due 10-31)         2024-03-20 P2 100 -> C
    2024-01-10 A 1000.00 (due 02-09)       2024-04-05 D -50.00 (a credit: 50 to the balance)
    2024-02-01 B 500.00 (due 03-02)        2024-04-10 P3 250 -> A
    2024-02-15 P1 300 -> A                 2024-04-12 P1 reversed (bounced): A owes 300 again
    2024-03-01 C 200.00 (due 03-31)        2024-04-20 P2 refunded 100: C owes it again

    D's credit settles the oldest invoice owing (E: 80 -> 30) when D is finalized.
    """
    if customer is None:
        entity = BillingEntityFactory(code="acme-us", timezone="UTC", default_payment_terms_days=30,
                                      invoice_grace_days=0)
        customer = CustomerFactory(billing_entity=entity, timezone="UTC", external_id="acme", name="Acme")
    e = invoice(customer, "80.00", date(2023, 10, 1))
    a = invoice(customer, "1000.00", date(2024, 1, 10))
    b = invoice(customer, "500.00", date(2024, 2, 1))
    p1 = pay(customer, "300.00", date(2024, 2, 15), to=a)
    c = invoice(customer, "200.00", date(2024, 3, 1))
    p2 = pay(customer, "100.00", date(2024, 3, 20), to=c)
    d = invoice(customer, "-50.00", date(2024, 4, 5))
    p3 = pay(customer, "250.00", date(2024, 4, 10), to=a)
    reverse_payment(p1, reason="Bounced", actor=ACTOR, now=at(date(2024, 4, 12)))
    refund_payment(p2, amount=D("100.00"), reason="Paid twice by mistake", actor=ACTOR, now=at(date(2024, 4, 20)))
    return Book(customer, e, a, b, c, d, p1, p2, p3)


@pytest.fixture
def book() -> Book:
    return build_book()


def open_by_number(as_of: date, customer) -> dict[str, Decimal]:
    return {inv.number: inv.open_amount for inv in open_amount_at(Invoice.objects.filter(customer=customer), as_of)}


def test_buckets_by_days_past_due():
    assert [bucket_for(days) for days in (-5, 0, 1, 30, 31, 60, 61, 90, 91, 400)] == [
        "current", "current", "days_1_30", "days_1_30", "days_31_60", "days_31_60", "days_61_90", "days_61_90",
        "days_over_90", "days_over_90",
    ]


def test_the_book_today_matches_the_invoices_columns(book):
    for inv in (book.e, book.a, book.b, book.c, book.d):
        inv.refresh_from_db()
    assert [inv.amount_due for inv in (book.e, book.a, book.b, book.c, book.d)] == [
        D("30.00"), D("750.00"), D("500.00"), D("200.00"), D("0.00")]
    assert credit_balance(book.customer, "USD") == D("0")
    today = open_by_number(date(2024, 4, 30), book.customer)
    assert today == {book.e.number: D("30.00"), book.a.number: D("750.00"), book.b.number: D("500.00"),
                     book.c.number: D("200.00"), book.d.number: D("0.00")}


def test_an_earlier_date_shows_what_was_open_then(book):
    # 31 March: P1 (300) and P2 (100) applied; D, P3, the reversal and the refund had not happened.
    assert open_by_number(date(2024, 3, 31), book.customer) == {
        book.e.number: D("80.00"), book.a.number: D("700.00"), book.b.number: D("500.00"), book.c.number: D("100.00"),
    }
    # 11 April: P3 paid 250 more on A; P1 not reversed yet.
    assert open_by_number(date(2024, 4, 11), book.customer)[book.a.number] == D("450.00")
    # Before the first invoice nothing existed.
    assert open_by_number(date(2023, 9, 30), book.customer) == {}


def test_aging_in_the_past_and_today(book):
    march = aging_report(as_of=date(2024, 3, 31))
    [row] = march.rows
    # A due 9 Feb: 51 days late; B due 2 Mar: 29; C due 31 Mar: current; E due 31 Oct: 152.
    assert row.buckets == {"current": D("100.00"), "days_1_30": D("500.00"), "days_31_60": D("700.00"),
                           "days_61_90": D("0"), "days_over_90": D("80.00")}
    assert (row.total, row.unapplied_credit, row.net) == (D("1380.00"), D("0"), D("1380.00"))
    assert [(item.number, item.days_overdue, item.bucket) for item in row.items] == [
        (book.e.number, 152, "days_over_90"), (book.a.number, 51, "days_31_60"), (book.b.number, 29, "days_1_30"),
        (book.c.number, 0, "current"),
    ]
    april = aging_report(as_of=date(2024, 4, 30))
    [row] = april.rows
    # A: 81 days late, B: 59, C: 30, E: 182 (30 left after D's credit).
    assert row.buckets == {"current": D("0"), "days_1_30": D("200.00"), "days_31_60": D("500.00"),
                           "days_61_90": D("750.00"), "days_over_90": D("30.00")}
    assert (row.total, row.unapplied_credit, row.net) == (D("1480.00"), D("0"), D("1480.00"))
    [total] = april.totals
    assert (total.billing_entity_code, total.currency, total.total, total.net, total.customers) == (
        "acme-us", "USD", D("1480.00"), D("1480.00"), 1)
    # 4 April, before D: E still owed 80.
    assert aging_report(as_of=date(2024, 4, 4)).rows[0].buckets["days_over_90"] == D("80.00")


def test_balance_at_a_date_is_the_sum_over_documents(book):
    assert customer_balance_at(book.customer, "USD", date(2023, 9, 30)) == D("0")
    assert customer_balance_at(book.customer, "USD", date(2024, 3, 31)) == D("1380.00")
    april = balance_breakdown(book.customer, "USD", date(2024, 4, 30))
    assert (april.invoiced, april.payments, april.reversals, april.refunds, april.credit_notes, april.voided) == (
        D("1730.00"), D("650.00"), D("300.00"), D("100.00"), D("0"), D("0"))
    assert april.balance == D("1480.00")
    # Today: what the open invoices owe less the credit the customer holds.
    owed = sum(Invoice.objects.filter(customer=book.customer, status="finalized").values_list("amount_due", flat=True))
    assert april.balance == owed - credit_balance(book.customer, "USD") == D("1480.00")
    # Another currency is another account.
    assert customer_balance_at(book.customer, "EUR", date(2024, 4, 30)) == D("0")


def test_statement_of_april(book):
    statement = customer_statement(book.customer, "USD", date(2024, 4, 1), date(2024, 4, 30))
    assert statement.opening_balance == D("1380.00")
    assert [(line.day, line.type, line.amount, line.balance) for line in statement.lines] == [
        (date(2024, 4, 5), "invoice", D("-50.00"), D("1330.00")),
        (date(2024, 4, 10), "payment", D("-250.00"), D("1080.00")),
        (date(2024, 4, 12), "payment_reversal", D("300.00"), D("1380.00")),
        (date(2024, 4, 20), "refund", D("100.00"), D("1480.00")),
    ]
    assert statement.closing_balance == D("1480.00") == customer_balance_at(book.customer, "USD", date(2024, 4, 30))
    assert statement.lines[0].credit == D("50.00") and statement.lines[2].debit == D("300.00")
    assert [item.number for item in statement.open_items] == [book.e.number, book.a.number, book.b.number,
                                                             book.c.number]
    assert statement.aging["days_61_90"] == D("750.00")
    assert (statement.open_total, statement.unapplied_credit) == (D("1480.00"), D("0"))


def test_statement_from_the_beginning_lists_every_document(book):
    statement = customer_statement(book.customer, "USD", date(2023, 1, 1), date(2024, 4, 30))
    assert statement.opening_balance == D("0")
    assert [line.type for line in statement.lines] == [
        "invoice", "invoice", "invoice", "payment", "invoice", "payment", "invoice", "payment", "payment_reversal",
        "refund",
    ]
    assert sum(line.amount for line in statement.lines) == statement.closing_balance == D("1480.00")


def test_statement_period_is_checked(book):
    with pytest.raises(BillingError) as exc:
        customer_statement(book.customer, "USD", date(2024, 5, 1), date(2024, 4, 1))
    assert exc.value.field == "start"
    with pytest.raises(BillingError) as exc:
        customer_statement(book.customer, "USD", date(2019, 4, 1), date(2024, 4, 1))
    assert exc.value.field == "end"
    # Exactly five years less a day is allowed.
    customer_statement(book.customer, "USD", date(2019, 4, 2), date(2024, 4, 1))


def test_written_off_invoices_leave_the_aging_from_the_day_they_are_written_off(book):
    mark_uncollectible(book.e, reason="Customer gone", actor=ACTOR, now=at(date(2024, 4, 25)))
    assert aging_report(as_of=date(2024, 4, 30)).rows[0].total == D("1450.00")
    assert aging_report(as_of=date(2024, 4, 30), include_uncollectible=True).rows[0].total == D("1480.00")
    assert aging_report(as_of=date(2024, 4, 24)).rows[0].total == D("1480.00")
    [item] = [i for i in open_items(date(2024, 4, 30), include_uncollectible=True) if i.uncollectible]
    assert item.number == book.e.number
    # Written off is still owed: the balance keeps it.
    assert customer_balance_at(book.customer, "USD", date(2024, 4, 30)) == D("1480.00")


def test_dso(book):
    entity = book.customer.billing_entity
    # Sales 1 Feb..30 Apr: B 500 + C 200 + D -50 = 650; receivables 1480: 1480 / 650 x 90 = 204.923...
    figures = dso_figures(billing_entity=entity, currency="USD", as_of=date(2024, 4, 30))
    assert (figures.receivables, figures.credit_sales, figures.dso) == (D("1480.00"), D("650.00"), D("204.92"))
    # 30 days: only D (-50) was issued: no sales.
    assert dso(billing_entity=entity, currency="USD", as_of=date(2024, 4, 30), days=30) is None
    assert dso(billing_entity=entity, currency="EUR", as_of=date(2024, 4, 30)) is None
    with pytest.raises(BillingError) as exc:
        dso(billing_entity=entity, currency="USD", as_of=date(2024, 4, 30), days=0)
    assert exc.value.field == "days"


def test_credit_note_and_void_and_credit_balance_refund():
    entity = BillingEntityFactory(timezone="UTC", default_payment_terms_days=10, invoice_grace_days=0)
    customer = CustomerFactory(billing_entity=entity, timezone="UTC")
    paid = invoice(customer, "300.00", date(2024, 5, 1))
    pay(customer, "300.00", date(2024, 5, 2))
    mistaken = invoice(customer, "70.00", date(2024, 5, 3))
    void_invoice(mistaken, reason="Wrong customer", actor=ACTOR, now=at(date(2024, 5, 6)))
    # 120 credited on a paid invoice, to the balance; 20 of it paid back by hand.
    note = issue_credit_note(paid, amount=D("120.00"), reason="billing_error", settlement="credit_balance",
                             actor=ACTOR, now=at(date(2024, 5, 8)))
    refund_credit_balance(customer, currency="USD", amount=D("20.00"), reason="Asked for it", actor=ACTOR,
                          now=at(date(2024, 5, 9)))
    assert customer_balance_at(customer, "USD", date(2024, 5, 5)) == D("70.00")  # the void came on 6 May
    assert customer_balance_at(customer, "USD", date(2024, 5, 7)) == D("0")
    assert customer_balance_at(customer, "USD", date(2024, 5, 31)) == D("-100.00") == -credit_balance(customer, "USD")
    statement = customer_statement(customer, "USD", date(2024, 5, 1), date(2024, 5, 31))
    assert [(line.type, line.number, line.amount) for line in statement.lines] == [
        ("invoice", paid.number, D("300.00")), ("payment", statement.lines[1].number, D("-300.00")),
        ("invoice", mistaken.number, D("70.00")), ("invoice_void", mistaken.number, D("-70.00")),
        ("credit_note", note.number, D("-120.00")), ("refund", statement.lines[5].number, D("20.00")),
    ]
    assert statement.closing_balance == D("-100.00") and statement.open_items == []
    # Paid on 2 May, the first invoice was owing on 1 May.
    assert [(i.number, i.open_amount) for i in open_items(date(2024, 5, 1), customer=customer)] == [
        (paid.number, D("300.00"))]
    # The voided invoice was open on 5 May (due 13 May: current) and is gone from 6 May.
    assert [(i.number, i.bucket) for i in open_items(date(2024, 5, 5), customer=customer)] == [
        (mistaken.number, "current")]
    assert open_items(date(2024, 5, 6), customer=customer) == []
    [row] = aging_report(as_of=date(2024, 5, 31), customer=customer).rows
    assert (row.total, row.unapplied_credit, row.net) == (D("0"), D("100.00"), D("-100.00"))


def test_days_are_the_customers_days():
    """A payment recorded at 03:00 UTC on 1 March is 29 February in New York: it counts for 29 February."""
    entity = BillingEntityFactory(timezone="UTC", default_payment_terms_days=30, invoice_grace_days=0)
    customer = CustomerFactory(billing_entity=entity, timezone="America/New_York")
    inv = invoice(customer, "100.00", date(2024, 2, 1))
    record_payment(customer=customer, amount=D("40.00"), currency="USD", method="check",
                   received_on=date(2024, 2, 29), actor=ACTOR, now=datetime(2024, 3, 1, 3, tzinfo=UTC))
    assert open_by_number(date(2024, 2, 29), customer) == {inv.number: D("60.00")}
    assert open_by_number(date(2024, 2, 28), customer) == {inv.number: D("100.00")}
    assert customer_balance_at(customer, "USD", date(2024, 2, 29)) == D("60.00")


def test_reports_never_add_currencies_and_filter_by_entity():
    us = BillingEntityFactory(code="us", timezone="UTC", default_payment_terms_days=30, invoice_grace_days=0)
    eu = BillingEntityFactory(code="eu", timezone="UTC", default_currency="EUR", default_payment_terms_days=30,
                              invoice_grace_days=0)
    alpha = CustomerFactory(billing_entity=us, timezone="UTC", name="Alpha", currency="USD")
    beta = CustomerFactory(billing_entity=eu, timezone="UTC", name="Beta", currency="EUR")
    invoice(alpha, "10.00", date(2024, 1, 1))
    invoice(alpha, "7.00", date(2024, 1, 1), currency="EUR")
    invoice(beta, "20.00", date(2024, 1, 1))
    report = aging_report(as_of=date(2024, 1, 31))
    assert [(r.billing_entity_code, r.customer_name, r.currency, r.total) for r in report.rows] == [
        ("eu", "Beta", "EUR", D("20.00")), ("us", "Alpha", "EUR", D("7.00")), ("us", "Alpha", "USD", D("10.00")),
    ]
    assert [(t.billing_entity_code, t.currency, t.total) for t in report.totals] == [
        ("eu", "EUR", D("20.00")), ("us", "EUR", D("7.00")), ("us", "USD", D("10.00")),
    ]
    only_us_eur = aging_report(as_of=date(2024, 1, 31), billing_entity=us, currency="EUR")
    assert [(r.customer_name, r.total) for r in only_us_eur.rows] == [("Alpha", D("7.00"))]
    assert aging_report(as_of=date(2024, 1, 31), customer=beta).rows[0].total == D("20.00")


def test_aging_reads_in_a_fixed_number_of_queries(book, django_assert_max_num_queries):
    for _ in range(5):
        invoice(book.customer, "20.00", date(2024, 4, 29))
    with django_assert_max_num_queries(6):
        report = aging_report(as_of=date(2024, 4, 30))
    assert len(report.rows[0].items) == 4 + 5
    assert report.rows[0].total == D("1480.00") + D("100.00")


# --- property: the balance is the sum over the documents -------------------------------------------------------

amounts = st.integers(min_value=1, max_value=200_000).map(lambda c: D(c).scaleb(-2))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("invoice"), st.integers(min_value=-20_000, max_value=200_000).filter(bool)),
        st.tuples(st.just("pay"), amounts),
        st.tuples(st.just("reverse"), st.integers(min_value=0, max_value=9)),
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=9), st.integers(min_value=1, max_value=100)),
        st.tuples(st.just("credit_note"), st.integers(min_value=0, max_value=9), st.integers(min_value=1,
                                                                                              max_value=100),
                  st.sampled_from(["credit_balance", "refund", "offset"])),
        st.tuples(st.just("apply_credit"), st.integers(min_value=0, max_value=9)),
        st.tuples(st.just("void"), st.integers(min_value=0, max_value=9)),
        st.tuples(st.just("write_off"), st.integers(min_value=0, max_value=9)),
        st.tuples(st.just("wait"), st.integers(min_value=0, max_value=40)),
    ),
    min_size=1,
    max_size=14,
).map(lambda ops: [("invoice", 100_000), ("pay", D("400.00")), *ops])  # something to refund, credit, reverse


def _pick(rows: list, index: int):
    return rows[index % len(rows)] if rows else None


def _run(customer, ops: list[tuple], start: datetime) -> datetime:
    now = start
    invoices: list[Invoice] = []
    payments: list[Payment] = []
    for op in ops:
        kind = op[0]
        today = customer_today(customer, now)
        try:
            if kind == "invoice":
                invoices.append(create_one_off_invoice(customer, [ManualLine("x", D(op[1]).scaleb(-2))], actor=ACTOR,
                                                       now=now, finalize=True))
            elif kind == "pay":
                payments.append(record_payment(customer=customer, amount=op[1], currency="USD", method="check",
                                               received_on=today, actor=ACTOR, now=now))
            elif kind == "reverse" and payments:
                reverse_payment(_pick(payments, op[1]), reason="bounced", actor=ACTOR, now=now)
            elif kind == "refund" and payments:
                payment = Payment.objects.get(pk=_pick(payments, op[1]).pk)
                amount = max((refundable(payment) * op[2] / 100).quantize(D("0.01")), D("0.01"))
                refund_payment(payment, amount=amount, reason="asked", actor=ACTOR, now=now)
            elif kind == "credit_note" and invoices:
                target = Invoice.objects.get(pk=_pick(invoices, op[1]).pk)
                offset = Invoice.objects.filter(customer=customer, status="finalized", amount_due__gt=0).exclude(
                    pk=target.pk).first() if op[3] == "offset" else None
                amount = max((remaining_creditable(target) * op[2] / 100).quantize(D("0.01")), D("0.01"))
                issue_credit_note(target, amount=amount, reason="billing_error", settlement=op[3],
                                  offset_invoice=offset, actor=ACTOR, now=now)
            elif kind == "apply_credit" and invoices:
                apply_credit_balance(_pick(invoices, op[1]).pk, actor=ACTOR, now=now)
            elif kind == "void" and invoices:
                void_invoice(_pick(invoices, op[1]), reason="mistake", actor=ACTOR, now=now)
            elif kind == "write_off" and invoices:
                mark_uncollectible(_pick(invoices, op[1]).pk, reason="gone", actor=ACTOR, now=now)
            elif kind == "wait":
                now += timedelta(days=op[1], hours=5)
        except (BillingError, InvalidTransition):
            pass  # the service refused (nothing to reverse, over-refund, ...): nothing was written
    return now


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_balance_equals_documents_and_open_items_less_credit(db, ops):
    with transaction.atomic():
        entity = BillingEntityFactory(timezone="UTC", default_payment_terms_days=15, invoice_grace_days=0)
        customer = CustomerFactory(billing_entity=entity, timezone="America/New_York")
        start = datetime(2024, 1, 2, 15, tzinfo=UTC)
        now = _run(customer, ops, start)
        today = customer_today(customer, now)
        balance = customer_balance_at(customer, "USD", today)

        invoices = Invoice.objects.filter(customer=customer)
        owed = sum(invoices.filter(status__in=["finalized", "uncollectible"]).values_list("amount_due", flat=True),
                   D(0))
        assert balance == owed - credit_balance(customer, "USD")
        # Every invoice's open amount today is its amount due.
        columns = dict(invoices.exclude(status__in=["draft", "void"]).values_list("pk", "amount_due"))
        assert dict(open_amount_at(invoices, today).values_list("pk", "open_amount")) == columns
        # The statement from the first day adds the documents up to the same balance.
        statement = customer_statement(customer, "USD", customer_today(customer, start), today)
        assert statement.opening_balance == D(0)
        assert sum((line.amount for line in statement.lines), D(0)) == statement.closing_balance == balance
        rows = aging_report(as_of=today, customer=customer, include_uncollectible=True).rows
        assert sum((row.net for row in rows), D(0)) == balance
        # On any earlier day the aging's open items are exactly the invoices owing then (paid ones since too).
        for day in (customer_today(customer, start), customer_today(customer, start + (now - start) / 2)):
            owing = {pk: amount for pk, amount in open_amount_at(invoices, day).values_list("pk", "open_amount")
                     if amount > 0}
            assert {i.invoice_id: i.open_amount for i in open_items(day, customer=customer,
                                                                     include_uncollectible=True)} == owing
        transaction.set_rollback(True)
