"""Credit notes: per line and by amount, taxes reversed on the running total, the invoice's receivable and the
settlement of the rest (refund, balance, offset), numbering, immutability, idempotency and concurrency.

The reference invoice (EUR, French VAT 20 %): Platform fee 100.00, Seats 10 x 15.00 = 150.00, Support 33.33;
subtotal 283.33, VAT 283.33 x 20 % = 56.666 -> 56.67, total 340.00.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.errors import BillingError, InvalidTransition
from invoicing.models import (
    Allocation,
    CreditNote,
    CreditNoteLine,
    CustomerBalanceTransaction,
    DocumentSequence,
    Invoice,
    InvoiceEvent,
    Refund,
    TaxRate,
)
from invoicing.services.credit_notes import (
    CreditLineRequest,
    credit_in_full,
    creditable,
    issue_credit_note,
)
from invoicing.services.documents import ManualLine, create_one_off_invoice, void_invoice
from invoicing.services.payments import credit_balance, record_payment, refundable
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory

D = Decimal
REFUND = CreditNote.Settlement.REFUND
BALANCE = CreditNote.Settlement.CREDIT_BALANCE
OFFSET = CreditNote.Settlement.OFFSET
JAN = (date(2024, 1, 1), date(2024, 2, 1))


@pytest.fixture
def fr_entity(db):
    TaxRate.objects.create(name="VAT FR", country="FR", percent=D("20"))
    return BillingEntityFactory(code="acme-fr", country="FR", default_currency="EUR", timezone="Europe/Paris",
                                invoice_prefix="FR", credit_note_prefix="FRCN")


@pytest.fixture
def customer(fr_entity):
    return CustomerFactory(billing_entity=fr_entity, country="FR", kind="individual", timezone="Europe/Paris",
                           currency="EUR")


def make_invoice(customer, actor, now, lines=None, currency=None) -> Invoice:
    lines = lines or [
        ManualLine("Platform fee", D("100.00"), period_start=JAN[0], period_end=JAN[1]),
        ManualLine("Seats", D("15.00"), D("10"), period_start=JAN[0], period_end=JAN[1]),
        ManualLine("Support", D("33.33")),
    ]
    return create_one_off_invoice(customer, lines, actor=actor, now=now, finalize=True, currency=currency)


@pytest.fixture
def invoice(customer, actor, now) -> Invoice:
    invoice = make_invoice(customer, actor, now)
    assert (invoice.subtotal, invoice.tax_total, invoice.total, invoice.amount_due) == (
        D("283.33"), D("56.67"), D("340.00"), D("340.00"))
    return invoice


def lines_of(invoice: Invoice) -> list:
    return list(invoice.lines.order_by("position"))


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def partial(invoice, actor, now, settlement=BALANCE, **extra) -> CreditNote:
    """Platform fee: 40.00; Seats: 2 of 10 (30.00)."""
    platform, seats, _ = lines_of(invoice)
    return issue_credit_note(
        invoice, lines=[CreditLineRequest(platform, amount=D("40.00")), CreditLineRequest(seats, quantity=D("2"))],
        reason="billing_error", settlement=settlement, actor=actor, now=now, **extra,
    )


def pay(invoice, actor, now, amount=None):
    return record_payment(customer=invoice.customer, amount=amount or invoice.amount_due, currency="EUR",
                          method="bank_transfer", received_on=date(2024, 1, 20), actor=actor, now=now)


# --- what a note credits --------------------------------------------------------------------------------------


def test_partial_credit_per_line_with_vat_reduces_what_an_unpaid_invoice_owes(invoice, actor, now):
    note = partial(invoice, actor, now, memo="Seats billed twice")
    # Net 70.00; VAT round(56.67 x 70.00 / 283.33) = round(14.0009) = 14.00, split 40:30 -> 8.00 and 6.00.
    assert (note.subtotal, note.tax_total, note.total) == (D("70.00"), D("14.00"), D("84.00"))
    assert [(line.description, line.amount, line.tax_amount, line.quantity) for line in note.lines.all()] == [
        ("Platform fee", D("40.00"), D("8.00"), None), ("Seats", D("30.00"), D("6.00"), D("2")),
    ]
    assert note.tax_breakdown == [{"name": "VAT FR", "percent": "20", "treatment": "standard",
                                   "rate_id": TaxRate.objects.get().pk, "taxable_amount": "70.00",
                                   "tax_amount": "14.00"}]
    assert (note.applied_to_invoice, note.refunded_amount, note.credited_to_balance, note.offset_amount) == (
        D("84.00"), 0, 0, 0)
    assert note.number == "FRCN-000001" and note.issue_date == date(2024, 1, 15) and note.memo == "Seats billed twice"
    assert note.seller["name"] == invoice.billing_entity.name
    assert note.buyer["external_id"] == invoice.customer.external_id
    invoice = fresh(invoice)
    assert (invoice.credit_notes_total, invoice.amount_credited, invoice.amount_due, invoice.status) == (
        D("84.00"), D("84.00"), D("256.00"), "finalized")
    [allocation] = Allocation.objects.filter(credit_note=note)
    assert (allocation.invoice_id, allocation.kind, allocation.amount) == (invoice.pk, "credit_note", D("84.00"))
    event = InvoiceEvent.objects.get(invoice=invoice, action="credit_note.issued")
    assert event.details["number"] == "FRCN-000001" and event.details["total"] == "84.00"
    assert credit_balance(invoice.customer, "EUR") == 0  # nothing left over to settle


def test_an_amount_is_spread_over_the_lines_by_largest_remainder(invoice, actor, now):
    note = issue_credit_note(invoice, amount=D("100.00"), reason="goodwill", settlement=BALANCE, actor=actor,
                             now=now)
    # 100 x 100/283.33 = 35.2945, x 150/283.33 = 52.9418, x 33.33/283.33 = 11.7637: floors 99.99, the cent to
    # the largest remainder (Platform). VAT round(56.67 x 100 / 283.33) = round(20.0014) = 20.00, split
    # 7.06 / 10.588 / 2.352 -> 7.06, 10.59, 2.35.
    assert [(line.amount, line.tax_amount) for line in note.lines.all()] == [
        (D("35.30"), D("7.06")), (D("52.94"), D("10.59")), (D("11.76"), D("2.35"))]
    assert (note.subtotal, note.tax_total, note.total) == (D("100.00"), D("20.00"), D("120.00"))
    assert fresh(invoice).amount_due == D("220.00")


def test_full_credit_gives_back_the_whole_invoice(invoice, actor, now):
    note = credit_in_full(invoice, reason="duplicate", settlement=BALANCE, actor=actor, now=now)
    assert (note.subtotal, note.tax_total, note.total) == (D("283.33"), D("56.67"), D("340.00"))
    assert [(line.amount, line.tax_amount) for line in note.lines.all()] == [
        (line.amount, line.tax_amount) for line in lines_of(invoice)]
    invoice = fresh(invoice)
    assert (invoice.credit_notes_total, invoice.amount_due, invoice.status) == (D("340.00"), 0, "paid")
    with pytest.raises(BillingError) as error:
        credit_in_full(invoice, reason="duplicate", settlement=BALANCE, actor=actor, now=now)
    assert error.value.field == "invoice"


def test_two_partial_notes_give_back_exactly_the_invoices_tax(invoice, actor, now):
    support = lines_of(invoice)[2]
    first = issue_credit_note(invoice, lines=[CreditLineRequest(support, amount=D("33.33"))], reason="other",
                              settlement=BALANCE, actor=actor, now=now)
    # round(56.67 x 33.33 / 283.33) = round(6.6665) = 6.67; then the rest: 56.67 - 6.67 = 50.00.
    assert (first.tax_total, first.total) == (D("6.67"), D("40.00"))
    second = credit_in_full(invoice, reason="other", settlement=BALANCE, actor=actor, now=now)
    assert (second.subtotal, second.tax_total, second.total) == (D("250.00"), D("50.00"), D("300.00"))
    assert first.tax_total + second.tax_total == invoice.tax_total
    assert first.total + second.total == invoice.total


def test_running_total_rounding_makes_good_what_each_note_rounded(customer, actor, now):
    # Three lines of 0.05 at 20 %: the invoice's VAT is round(0.03) = 0.03. Each note crediting 0.05 alone would
    # round 0.01 of tax three times; on the running total the notes give 0.01, 0.01 (0.02 - 0.01), 0.01.
    invoice = make_invoice(customer, actor, now, [ManualLine(f"Item {i}", D("0.05")) for i in range(3)])
    assert invoice.tax_total == D("0.03")
    taxes = []
    for line in lines_of(invoice):
        note = issue_credit_note(invoice, lines=[CreditLineRequest(line.pk, amount=D("0.05"))], reason="other",
                                 settlement=BALANCE, actor=actor, now=now)
        taxes.append(note.tax_total)
    assert taxes == [D("0.01"), D("0.01"), D("0.01")] and sum(taxes) == invoice.tax_total


def test_reverse_charged_and_exempt_lines_credit_no_tax(fr_entity, actor, now):
    de_business = CustomerFactory(billing_entity=fr_entity, country="DE", kind="business", tax_id="DE123456789",
                                  currency="EUR")
    invoice = make_invoice(de_business, actor, now, [ManualLine("Consulting", D("500.00"))])
    assert invoice.lines.get().tax_treatment == "reverse_charge"
    note = issue_credit_note(invoice, amount=D("200.00"), reason="order_change", settlement=BALANCE, actor=actor,
                             now=now)
    assert (note.tax_total, note.total) == (0, D("200.00"))
    assert note.tax_breakdown[0]["treatment"] == "reverse_charge" and note.tax_breakdown[0]["tax_amount"] == "0"


def test_a_discounted_line_credits_its_net_amount(fr_entity, actor, now):
    from invoicing.services.credits import grant_credit

    buyer = CustomerFactory(billing_entity=fr_entity, country="FR", kind="individual", currency="EUR")
    grant_credit(buyer, amount=D("10.00"), currency="EUR", reason="welcome", actor=actor, now=now)
    invoice = make_invoice(buyer, actor, now, [ManualLine("Licence", D("12.50"), D("4"))])
    line = invoice.lines.get()
    assert (line.amount, line.discount_amount, invoice.total) == (D("50.00"), D("10.00"), D("48.00"))
    # 1 of 4 at 12.50 less its share of the discount (10/50): 12.50 x 40/50 = 10.00.
    note = issue_credit_note(invoice, lines=[CreditLineRequest(line, quantity=D("1"))], reason="other",
                             settlement=BALANCE, actor=actor, now=now)
    assert (note.subtotal, note.tax_total) == (D("10.00"), D("2.00"))
    with pytest.raises(BillingError) as error:  # the line's net is 40.00, 30.00 of it left
        issue_credit_note(invoice, lines=[CreditLineRequest(line, amount=D("30.01"))], reason="other",
                          settlement=BALANCE, actor=actor, now=now)
    assert error.value.field == "lines[0].amount" and "30.00" in error.value.message


# --- refusals -------------------------------------------------------------------------------------------------


def assert_nothing_written(invoice):
    assert not CreditNote.objects.exists() and not CreditNoteLine.objects.exists()
    assert not DocumentSequence.objects.filter(kind="credit_note", next_number__gt=1).exists()
    assert fresh(invoice).credit_notes_total == 0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"amount": D("283.34")}, "amount"),
    ({"amount": D("0")}, "amount"),
    ({"amount": D("-5.00")}, "amount"),
    ({"amount": D("10.001")}, "amount"),
    ({"amount": "NaN"}, "amount"),
    ({"amount": "ten"}, "amount"),
    ({"amount": D("1e20")}, "amount"),
    ({"lines": [CreditLineRequest(0, amount=D("100.01"))]}, "lines[0].amount"),
    ({"lines": [CreditLineRequest(0, amount=D("0"))]}, "lines[0].amount"),
    ({"lines": [CreditLineRequest(0, amount=D("-1"))]}, "lines[0].amount"),
    ({"lines": [CreditLineRequest(1, quantity=D("0"))]}, "lines[0].quantity"),
    ({"lines": [CreditLineRequest(1, quantity=D("-2"))]}, "lines[0].quantity"),
    ({"lines": [CreditLineRequest(1, quantity=D("11"))]}, "lines[0].quantity"),
    ({"lines": [CreditLineRequest(1, quantity=D("1e-13"))]}, "lines[0].quantity"),
    ({"lines": [CreditLineRequest(1, amount=D("1"), quantity=D("1"))]}, "lines[0]"),
    ({"lines": [CreditLineRequest(1)]}, "lines[0]"),
    ({"lines": [CreditLineRequest(0, amount=D("1")), CreditLineRequest(0, amount=D("1"))]}, "lines[1].invoice_line"),
    ({"lines": [CreditLineRequest(987654321, amount=D("1"))]}, "lines[0].invoice_line"),
    ({"lines": []}, "lines"),
    ({"lines": [CreditLineRequest(0, amount=D("1"))], "amount": D("1")}, "lines"),
    ({}, "lines"),
    ({"amount": D("1"), "reason": "because"}, "reason"),
    ({"amount": D("1"), "settlement": "cash"}, "settlement"),
    ({"amount": D("1"), "currency": "USD"}, "currency"),
    ({"amount": D("1"), "memo": "x" * 5001}, "memo"),
    ({"amount": D("1"), "offset_invoice": 1}, "offset_invoice"),
    ({"amount": D("1"), "settlement": OFFSET}, "offset_invoice"),
    ({"amount": D("1"), "idempotency_key": "k" * 201}, "idempotency_key"),
])
def test_bad_requests_are_refused_and_write_nothing(invoice, actor, now, kwargs, field):
    ids = [line.pk for line in lines_of(invoice)]
    if "lines" in kwargs:  # positions 0..2 stand for the invoice's lines
        kwargs["lines"] = [CreditLineRequest(ids[r.invoice_line] if r.invoice_line < 3 else r.invoice_line,
                                             amount=r.amount, quantity=r.quantity) for r in kwargs["lines"]]
    options = {"reason": "billing_error", "settlement": BALANCE, **kwargs}
    with pytest.raises(BillingError) as error:
        issue_credit_note(invoice, actor=actor, now=now, **options)
    assert error.value.field == field, error.value.message
    assert_nothing_written(invoice)


def test_over_crediting_after_an_earlier_note_is_refused(invoice, actor, now):
    partial(invoice, actor, now)  # 40.00 of the platform fee, 30.00 of the seats
    platform = lines_of(invoice)[0]
    with pytest.raises(BillingError) as error:
        issue_credit_note(invoice, lines=[CreditLineRequest(platform, amount=D("60.01"))], reason="other",
                          settlement=BALANCE, actor=actor, now=now)
    assert error.value.field == "lines[0].amount" and "60.00" in error.value.message
    with pytest.raises(BillingError) as error:
        issue_credit_note(invoice, amount=D("213.34"), reason="other", settlement=BALANCE, actor=actor, now=now)
    assert error.value.field == "amount" and "213.33" in error.value.message
    note = issue_credit_note(invoice, amount=D("213.33"), reason="other", settlement=BALANCE, actor=actor, now=now)
    # Everything is credited now: the last note's tax is what was left, 56.67 - 14.00.
    assert (note.tax_total, fresh(invoice).credit_notes_total) == (D("42.67"), D("340.00"))


def test_drafts_and_void_invoices_are_not_credited(customer, actor, now):
    draft = create_one_off_invoice(customer, [ManualLine("Setup", D("10.00"))], actor=actor, now=now)
    with pytest.raises(InvalidTransition, match="draft"):
        issue_credit_note(draft, amount=D("1.00"), reason="other", settlement=BALANCE, actor=actor, now=now)
    void = make_invoice(customer, actor, now, [ManualLine("Setup", D("10.00"))])
    void_invoice(void, reason="wrong customer", actor=actor, now=now)
    with pytest.raises(InvalidTransition, match="void"):
        credit_in_full(void, reason="other", settlement=BALANCE, actor=actor, now=now)
    with pytest.raises(BillingError) as error:
        issue_credit_note(987654321, amount=D("1.00"), reason="other", settlement=BALANCE, actor=actor, now=now)
    assert error.value.field == "invoice"
    assert not CreditNote.objects.exists()


# --- settlement -------------------------------------------------------------------------------------------------


def test_paid_invoice_refund_goes_back_through_its_payment(invoice, actor, now):
    payment = pay(invoice, actor, now)
    assert fresh(invoice).status == "paid"
    note = partial(invoice, actor, now, settlement=REFUND)
    assert (note.applied_to_invoice, note.refunded_amount) == (0, D("84.00"))
    refund = Refund.objects.get(credit_note=note)
    assert (refund.amount, refund.source, refund.payment_id, refund.status) == (
        D("84.00"), "credit_note", payment.pk, "succeeded")
    assert refundable(fresh(payment)) == D("256.00")  # 340.00 - 84.00: never refunded twice
    invoice = fresh(invoice)
    assert (invoice.status, invoice.amount_due, invoice.credit_notes_total, invoice.amount_paid) == (
        "paid", 0, D("84.00"), D("340.00"))
    assert credit_balance(invoice.customer, "EUR") == 0


def test_paid_invoice_credit_to_balance(invoice, actor, now):
    pay(invoice, actor, now)
    note = partial(invoice, actor, now, settlement=BALANCE)
    assert note.credited_to_balance == D("84.00")
    assert credit_balance(invoice.customer, "EUR") == D("84.00")
    entry = CustomerBalanceTransaction.objects.get(credit_note=note)
    assert (entry.kind, entry.amount) == ("credit_note", D("84.00"))


def test_paid_invoice_offset_against_another_open_invoice(invoice, customer, actor, now):
    pay(invoice, actor, now)
    other = make_invoice(customer, actor, now, [ManualLine("Add-on", D("100.00"))])  # 120.00 with VAT
    note = partial(invoice, actor, now, settlement=OFFSET, offset_invoice=other)
    assert (note.offset_amount, note.offset_invoice_id) == (D("84.00"), other.pk)
    other = fresh(other)
    assert (other.amount_credited, other.amount_due, other.credit_notes_total) == (D("84.00"), D("36.00"), 0)
    assert Allocation.objects.get(credit_note=note).invoice_id == other.pk


def test_partly_paid_invoice_takes_what_it_owes_and_settles_the_rest(invoice, actor, now):
    pay(invoice, actor, now, amount=D("300.00"))  # 40.00 still owed
    note = partial(invoice, actor, now, settlement=BALANCE)
    assert (note.applied_to_invoice, note.credited_to_balance) == (D("40.00"), D("44.00"))
    invoice = fresh(invoice)
    assert (invoice.amount_due, invoice.status, invoice.amount_credited) == (0, "paid", D("40.00"))
    assert credit_balance(invoice.customer, "EUR") == D("44.00")


def test_offset_refusals_name_the_offset_invoice(invoice, customer, fr_entity, actor, now):
    pay(invoice, actor, now)
    small = make_invoice(customer, actor, now, [ManualLine("Add-on", D("50.00"))])  # owes 60.00
    dollars = make_invoice(customer, actor, now, [ManualLine("Add-on", D("200.00"))], currency="USD")
    stranger = make_invoice(CustomerFactory(billing_entity=fr_entity, country="FR", currency="EUR"), actor, now,
                            [ManualLine("Add-on", D("200.00"))])
    for target, words in [(small, "more than"), (dollars, "Currency mismatch"), (stranger, "another customer"),
                          (invoice, "cannot offset"), (987654321, "No invoice")]:
        with pytest.raises(BillingError, match=words) as error:
            partial(invoice, actor, now, settlement=OFFSET, offset_invoice=target)
        assert error.value.field == "offset_invoice"
    pay(small, actor, now)
    with pytest.raises(BillingError, match="paid") as error:
        partial(invoice, actor, now, settlement=OFFSET, offset_invoice=small)
    assert not CreditNote.objects.exists() and fresh(invoice).credit_notes_total == 0


# --- numbering, immutability, idempotency -----------------------------------------------------------------------


def test_numbers_are_gapless_per_entity_and_separate_from_invoices(invoice, customer, actor, now):
    first = partial(invoice, actor, now)
    with pytest.raises(BillingError):  # a refused note takes no number
        issue_credit_note(invoice, amount=D("999.00"), reason="other", settlement=BALANCE, actor=actor, now=now)
    second = issue_credit_note(invoice, amount=D("10.00"), reason="other", settlement=BALANCE, actor=actor, now=now)
    other_entity = BillingEntityFactory(code="acme-de", country="DE", default_currency="EUR", credit_note_prefix="DECN")
    de_customer = CustomerFactory(billing_entity=other_entity, country="DE", currency="EUR")
    de_invoice = make_invoice(de_customer, actor, now, [ManualLine("Setup", D("10.00"))])
    third = credit_in_full(de_invoice, reason="other", settlement=BALANCE, actor=actor, now=now)
    assert [(n.number, n.sequence_number) for n in (first, second, third)] == [
        ("FRCN-000001", 1), ("FRCN-000002", 2), ("DECN-000001", 1)]
    assert invoice.number.startswith("FR-") and invoice.sequence_number == 1
    assert DocumentSequence.objects.get(billing_entity=invoice.billing_entity, kind="credit_note").next_number == 3
    assert DocumentSequence.objects.get(billing_entity=invoice.billing_entity, kind="invoice").next_number == 2


def test_database_refuses_to_change_or_delete_an_issued_note(invoice, actor, now):
    note = partial(invoice, actor, now)
    for statement in (
        lambda: CreditNote.objects.filter(pk=note.pk).update(total=D("1.00"), subtotal=D("1.00"), tax_total=0),
        lambda: CreditNote.objects.filter(pk=note.pk).update(reason="other"),
        lambda: CreditNote.objects.filter(pk=note.pk).delete(),
        lambda: CreditNoteLine.objects.filter(credit_note=note).update(amount=D("1.00")),
        lambda: CreditNoteLine.objects.filter(credit_note=note).delete(),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            statement()
    # Attaching the PDF is the one change allowed.
    assert CreditNote.objects.filter(pk=note.pk).update(pdf="credit_notes/x.pdf", pdf_sha256="0" * 64) == 1
    assert fresh(note).total == D("84.00")


def test_same_idempotency_key_returns_the_first_note(invoice, actor, now):
    first = partial(invoice, actor, now, idempotency_key="cn-2024-0001")
    again = partial(invoice, actor, now, idempotency_key="cn-2024-0001")
    assert again.pk == first.pk and CreditNote.objects.count() == 1
    assert fresh(invoice).credit_notes_total == D("84.00")
    assert DocumentSequence.objects.get(kind="credit_note").next_number == 2


# --- property: any sequence of notes --------------------------------------------------------------------------------

amounts = st.integers(min_value=1, max_value=99_999).map(lambda cents: D(cents) / 100)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("amount"), st.integers(min_value=1, max_value=100)),
        st.tuples(st.just("line"), st.integers(min_value=0, max_value=3), st.integers(min_value=1, max_value=100)),
        st.tuples(st.just("over"), st.integers(min_value=0, max_value=3)),
    ),
    max_size=5,
)


def per_rate(invoice):
    """{tax percent: (net, tax)} on the invoice and credited by its notes."""
    billed, credited = {}, {}
    for line in invoice.lines.all():
        net, tax = billed.get(line.tax_percent, (D(0), D(0)))
        billed[line.tax_percent] = (net + line.amount - line.discount_amount, tax + line.tax_amount)
    for line in CreditNoteLine.objects.filter(credit_note__invoice=invoice):
        net, tax = credited.get(line.tax_percent, (D(0), D(0)))
        credited[line.tax_percent] = (net + line.amount, tax + line.tax_amount)
    return billed, credited


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prices=st.lists(st.tuples(amounts, st.booleans()), min_size=1, max_size=4), plan=steps)
def test_any_sequence_of_notes_stays_within_the_invoice(fr_entity, actor, now, prices, plan):
    with transaction.atomic():
        TaxRate.objects.create(name="VAT FR books", country="FR", tax_code="ebook", percent=D("5.5"))
        ebook = ProductFactory(tax_code="ebook")
        buyer = CustomerFactory(billing_entity=fr_entity, country="FR", kind="individual", currency="EUR")
        invoice = make_invoice(buyer, actor, now, [
            ManualLine(f"Item {i}", price, product=ebook if is_book else None)
            for i, (price, is_book) in enumerate(prices)
        ])
        lines = lines_of(invoice)
        for step in plan:
            state = creditable(fresh(invoice))
            if state.net == 0:
                break
            if step[0] == "amount":
                wanted = max(D("0.01"), (state.net * step[1] / 100).quantize(D("0.01")))
                issue_credit_note(invoice, amount=wanted, reason="other", settlement=BALANCE, actor=actor, now=now)
            elif step[0] == "line":
                entry = state.lines[lines[step[1] % len(lines)].pk]
                if entry.creditable == 0:
                    continue
                wanted = max(D("0.01"), (entry.creditable * step[2] / 100).quantize(D("0.01")))
                issue_credit_note(invoice, lines=[CreditLineRequest(entry.line, amount=wanted)], reason="other",
                                  settlement=BALANCE, actor=actor, now=now)
            else:
                line = lines[step[1] % len(lines)]
                with pytest.raises(BillingError):
                    issue_credit_note(invoice, lines=[CreditLineRequest(line, amount=state.lines[line.pk].remaining
                                                                        + D("0.01"))],
                                      reason="other", settlement=BALANCE, actor=actor, now=now)
            billed, credited = per_rate(invoice)
            assert fresh(invoice).credit_notes_total <= invoice.total
            for percent, (net, tax) in credited.items():
                assert net <= billed[percent][0] and tax <= billed[percent][1]
        if creditable(fresh(invoice)).net > 0:
            credit_in_full(invoice, reason="other", settlement=BALANCE, actor=actor, now=now)
        billed, credited = per_rate(invoice)
        assert credited == billed  # fully credited: exactly the invoice's net and tax at every rate
        invoice = fresh(invoice)
        assert invoice.credit_notes_total == invoice.total and invoice.amount_due == 0
        assert sum(n.total for n in CreditNote.objects.filter(invoice=invoice)) == invoice.total
        transaction.set_rollback(True)


# --- concurrency --------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_concurrent_notes_on_one_invoice_never_over_credit(actor):
    from tests.invoicing.test_concurrency import race

    now = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)
    TaxRate.objects.create(name="VAT FR", country="FR", percent=D("20"))
    entity = BillingEntityFactory(code="acme-fr", country="FR", default_currency="EUR", credit_note_prefix="FRCN")
    buyer = CustomerFactory(billing_entity=entity, country="FR", kind="individual", currency="EUR")
    invoice = make_invoice(buyer, actor, now)
    notes, errors = race([
        lambda: issue_credit_note(invoice.pk, amount=D("100.00"), reason="other", settlement=BALANCE, actor=actor,
                                  now=now)
        for _ in range(4)
    ])
    # 283.33 before tax: two notes of 100.00 fit, the third and fourth find 83.33 left.
    assert len(notes) == 2 and len(errors) == 2, errors
    assert all(isinstance(e, BillingError) and e.field == "amount" for e in errors)
    assert sorted(n.number for n in notes) == ["FRCN-000001", "FRCN-000002"]
    invoice = fresh(invoice)
    assert invoice.credit_notes_total == sum(n.total for n in notes) == D("240.00")
    assert invoice.amount_due == D("100.00")
