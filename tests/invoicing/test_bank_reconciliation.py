"""Bank statements: parsing per bank layout, all-or-nothing imports that store each bank line once, automatic
matching by invoice number or by customer and amount, manual matching and ignoring, and two operators
matching one line at once (real threads on PostgreSQL)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from invoicing.models import (
    Allocation,
    BankStatement,
    BankStatementFormat,
    BankStatementLine,
    CustomerBalance,
    Invoice,
    Payment,
)
from invoicing.services.bank import (
    StatementFileError,
    auto_match,
    ignore_line,
    import_statement,
    invoice_sequence_numbers,
    match_manually,
    parse_amount,
    parse_statement,
    unignore_line,
)
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.payments import AllocationRequest, credit_balance
from tests.factories import BillingEntityFactory, CustomerFactory
from tests.invoicing.test_concurrency import race

pytestmark = pytest.mark.django_db

D = Decimal
Status = BankStatementLine.Status
SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "bank-statement-example.csv"


@pytest.fixture
def entity():
    return BillingEntityFactory(code="acme-us", invoice_prefix="ACME", credit_note_prefix="ACN", timezone="UTC",
                                default_currency="USD", default_payment_terms_days=30)


@pytest.fixture
def fmt(entity):
    return BankStatementFormat.objects.create(
        name="First Bank CSV", billing_entity=entity, date_column="Date", amount_column="Amount",
        currency_column="Currency", default_currency="USD", reference_column="Reference",
        description_column="Description", counterparty_column="Counterparty",
    )


@pytest.fixture
def globex(entity):
    return CustomerFactory(billing_entity=entity, external_id="globex", name="Globex Corporation",
                           legal_name="Globex Corporation Inc.", timezone="UTC")


@pytest.fixture
def initech(entity):
    return CustomerFactory(billing_entity=entity, external_id="initech", name="Initech", legal_name="",
                           timezone="UTC")


def invoice(customer, amount: str, actor, now, currency: str | None = None) -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Services", D(amount))], currency=currency, actor=actor,
                                  now=now, finalize=True)


def csv_of(*rows: str, header: str = "Date,Amount,Currency,Reference,Description,Counterparty") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def fresh(obj):
    obj.refresh_from_db()
    return obj


# --- parsing ------------------------------------------------------------------------------------------------


def test_parses_the_default_layout_exactly(fmt):
    parsed = parse_statement(fmt, csv_of(
        "2024-01-10,1250.00,USD,ACME-000001,Wire in,Globex Corporation",
        '2024-01-11,-35.5,usd,,"Bank fee, January",First Bank',
        "2024-01-12,0.10,JPY,x,,",
    ))
    assert parsed.errors[0].line == 4 and "JPY amounts have at most 0 decimal places" in parsed.errors[0].reason
    first, second = parsed.rows
    assert (first.line_number, first.booked_on, first.amount, first.currency, first.reference, first.counterparty) == (
        2, date(2024, 1, 10), D("1250.00"), "USD", "ACME-000001", "Globex Corporation")
    assert (second.amount, second.currency, second.description) == (D("-35.50"), "USD", "Bank fee, January")
    assert isinstance(second.amount, Decimal)


def test_semicolons_comma_decimals_dotted_dates_banner_and_latin1(entity):
    fmt = BankStatementFormat.objects.create(
        name="Sparkasse", billing_entity=entity, delimiter=";", encoding="latin-1", skip_rows=3,
        date_column="Buchungstag", date_format=BankStatementFormat.DateOrder.DMY_DOT, amount_column="Betrag",
        default_currency="EUR", reference_column="Verwendungszweck", counterparty_column="Auftraggeber",
        decimal_separator=",", thousands_separator=".",
    )
    data = ("Kontoauszug;Sparkasse Köln\nKonto;DE89 3704 0044 0532 0130 00\n\n"
            "Buchungstag;Betrag;Verwendungszweck;Auftraggeber\n"
            "31.01.2024;1.234,56;Rechnung ACME-7;Müller GmbH\n"
            "01.02.2024;-12,00;Gebühr;\n").encode("latin-1")
    parsed = parse_statement(fmt, data)
    assert parsed.errors == []
    assert [(r.line_number, r.booked_on, r.amount, r.currency, r.counterparty) for r in parsed.rows] == [
        (5, date(2024, 1, 31), D("1234.56"), "EUR", "Müller GmbH"),
        (6, date(2024, 2, 1), D("-12.00"), "EUR", ""),
    ]


def test_credit_and_debit_columns_without_header(entity):
    fmt = BankStatementFormat.objects.create(
        name="Positional", billing_entity=entity, has_header=False, date_column="1",
        date_format=BankStatementFormat.DateOrder.MDY_SLASH, credit_column="3", debit_column="4",
        default_currency="USD", reference_column="2", thousands_separator=",",
    )
    parsed = parse_statement(fmt, b'01/31/2024,ACME 3,"1,000.00",\n02/01/2024,Rent,,"2,500.00"\n'
                                  b"02/02/2024,Both,1.00,2.00\n02/03/2024,Neither,,\n")
    assert [(r.booked_on, r.amount, r.reference) for r in parsed.rows] == [
        (date(2024, 1, 31), D("1000.00"), "ACME 3"), (date(2024, 2, 1), D("-2500.00"), "Rent")]
    assert [(e.line, e.column, e.reason) for e in parsed.errors] == [
        (3, "3", "The row has both a credit and a debit."),
        (4, "3", "The row has neither a credit nor a debit."),
    ]


def test_every_broken_row_is_reported_with_line_and_column(fmt):
    data = csv_of(
        "2024-01-10,100.00,USD,ok,,",
        "2024-02-30,100.00,USD,bad date,,",
        "2024-01-10,1e5,USD,exponent,,",
        "2024-01-10,=1+2,USD,formula amount,,",
        "2024-01-10,10.00,XYZ,unknown currency,,",
        "2024-01-10,10.00",
        ",10.00,USD,empty date,,",
        "2024-01-10,,USD,empty amount,,",
        "2024-01-10,99999999999999999,USD,too large,,",
        "2024-01-10,NaN,USD,nan,,",
    )
    parsed = parse_statement(fmt, data)
    assert [r.line_number for r in parsed.rows] == [2]
    got = [(e.line, e.column) for e in parsed.errors]
    assert got == [
        (3, "Date"), (4, "Amount"), (5, "Amount"), (6, "Currency"), (7, "Currency"), (7, "Reference"),
        (7, "Description"), (7, "Counterparty"), (8, "Date"), (9, "Amount"), (10, "Amount"), (11, "Amount"),
    ]
    assert "'2024-02-30' is not a date written like 2026-01-31" in parsed.errors[0].reason
    assert str(parsed.errors[3]) == "line 6, column 'Currency': 'XYZ' is not an ISO 4217 currency."


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "The file is empty."),
    (b"\n  \n", "The file is empty."),
    (b"Date,Amount,Currency,Reference,Description,Counterparty\n", "The file has a header but no statement lines."),
    (b"Day,Sum\n2024-01-01,1\n", "The header has no 'Date' column (the format's date column)."),
    (b"%PDF-1.4\n\x00\x01\x02binary", "The file contains NUL bytes: it is not a CSV text file."),
    ("Date,Amount\n".encode("utf-16"), "The file is not utf-8 text (byte 0xff cannot be read)"),
    (b'Date,Amount,Currency,Reference,Description,Counterparty\n2024-01-01,"1.00,USD\n',
     "The file is not valid CSV"),
])
def test_files_that_are_not_statements(fmt, data, reason):
    parsed = parse_statement(fmt, data)
    assert parsed.rows == [] or reason.startswith("The file is not valid CSV")
    assert any(reason in e.reason for e in parsed.errors), parsed.errors


def test_header_missing_several_columns_lists_each(fmt):
    parsed = parse_statement(fmt, b"Date,Amount\n2024-01-01,1.00\n")
    assert sorted(e.column for e in parsed.errors) == ["Counterparty", "Currency", "Description", "Reference"]
    assert all(e.line == 1 for e in parsed.errors)


def test_too_many_rows_and_too_large(fmt, settings):
    settings.ACCRUAL_BANK_STATEMENT_MAX_ROWS = 3
    four = csv_of(*["2024-01-10,1.00,USD,r,,"] * 4)
    assert [e.reason for e in parse_statement(fmt, four).errors] == [
        "The file has more than 3 rows, the limit of one statement; split it into smaller files."]
    assert parse_statement(fmt, csv_of(*["2024-01-10,1.00,USD,r,,"] * 3)).errors == []
    settings.ACCRUAL_BANK_STATEMENT_MAX_BYTES = 1024
    parsed = parse_statement(fmt, csv_of("2024-01-10,1.00,USD," + "x" * 2000 + ",,"))
    assert [e.reason for e in parsed.errors] == ["The file is larger than 1 KiB; split it into smaller statements."]


def test_formula_text_is_kept_as_text(fmt, actor, now):
    data = csv_of('2024-01-10,5.00,USD,"=HYPERLINK(""http://evil.test"",""x"")",+cmd|\' /C calc\'!A0,@SUM(A1)')
    result = import_statement(fmt, data, filename="evil.csv", actor=actor, now=now)
    line = BankStatementLine.objects.get(statement=result.statement)
    assert line.reference == '=HYPERLINK("http://evil.test","x")'
    assert line.description == "+cmd|' /C calc'!A0" and line.counterparty == "@SUM(A1)"


@pytest.mark.parametrize(("text", "decimal", "thousands", "expected"), [
    ("1.234,56", ",", ".", "1234.56"), ("1 234,56", ",", " ", "1234.56"), ("1\u00a0234,56", ",", "", "1234.56"),
    ("-0,01", ",", ".", "-0.01"), ("12.50-", ".", "", "-12.50"), ("+7", ".", ",", "7"), ("1,000,000.00", ".", ",",
                                                                                          "1000000.00"),
])
def test_amount_separators(text, decimal, thousands, expected):
    assert parse_amount(text, decimal_separator=decimal, thousands_separator=thousands) == D(expected)


@pytest.mark.parametrize("text", ["1,5", "1.234,56", "1e3", "Infinity", "--1", "1.2.3", "0x10", "", "½"])
def test_amounts_refused(text):
    with pytest.raises(ValueError):
        parse_amount(text, decimal_separator=".", thousands_separator="")


@given(st.decimals(min_value=D("-999999999.99"), max_value=D("999999999.99"), places=2))
@settings(max_examples=200, deadline=None)
def test_amount_round_trips_in_european_notation(value):
    sign = "-" if value < 0 else ""
    whole, cents = f"{abs(value):.2f}".split(".")
    grouped = f"{int(whole):,}".replace(",", ".")
    assert parse_amount(f"{sign}{grouped},{cents}", decimal_separator=",", thousands_separator=".") == value


def test_invoice_numbers_in_references():
    assert invoice_sequence_numbers("Payment acme-000012 and ACME 13, ACME00014; ACME-12 again", "ACME") == [12, 13,
                                                                                                           14]
    assert invoice_sequence_numbers("XACME-1 ACME-0 ACMEX-2 ACME-3x", "ACME") == []


# --- importing ----------------------------------------------------------------------------------------------


def test_broken_rows_store_nothing(fmt, actor, now):
    data = csv_of("2024-01-10,100.00,USD,fine,,", "2024-01-32,100.00,USD,bad,,", "2024-01-10,abc,USD,bad,,")
    with pytest.raises(StatementFileError) as caught:
        import_statement(fmt, data, filename="jan.csv", actor=actor, now=now)
    assert [(e.line, e.column) for e in caught.value.errors] == [(3, "Date"), (4, "Amount")]
    assert caught.value.field == "file" and "line 3, column 'Date'" in caught.value.message
    assert not BankStatement.objects.exists() and not BankStatementLine.objects.exists()


def test_reimporting_the_same_file_creates_nothing_twice(fmt, actor, now):
    data = csv_of("2024-01-10,100.00,USD,a,,", "2024-01-11,-20.00,USD,fee,,", "2024-01-11,50.00,USD,b,,")
    first = import_statement(fmt, data, filename="jan.csv", actor=actor, now=now)
    assert (first.created, first.line_count, first.new_lines, first.ignored_lines, first.unmatched_lines) == (
        True, 3, 3, 1, 2)
    debit = BankStatementLine.objects.get(amount=D("-20.00"))
    assert debit.status == Status.IGNORED and debit.note == "Money paid out (a debit), not a receipt."
    again = import_statement(fmt, data, filename="jan-copy.csv", actor=actor, now=now)
    assert (again.created, again.new_lines, again.statement.pk) == (False, 0, first.statement.pk)
    assert "already imported" in again.summary()
    assert BankStatement.objects.count() == 1 and BankStatementLine.objects.count() == 3


def test_overlapping_statement_adds_only_new_lines(fmt, actor, now):
    # Two equal transfers on one day are two lines; the overlap is recognised by content and rank.
    jan = csv_of("2024-01-10,100.00,USD,a,,", "2024-01-10,100.00,USD,a,,", "2024-01-12,7.00,USD,c,,")
    import_statement(fmt, jan, filename="1.csv", actor=actor, now=now)
    overlap = csv_of("2024-01-10,100.00,USD,a,,", "2024-01-10,100.00,USD,a,,", "2024-01-10,100.00,USD,a,,",
                     "2024-01-12,7.00,USD,c,,", "2024-01-13,8.00,USD,d,,")
    result = import_statement(fmt, overlap, filename="2.csv", actor=actor, now=now)
    assert (result.created, result.line_count, result.new_lines, result.duplicate_lines) == (True, 5, 2, 3)
    assert sorted(BankStatementLine.objects.filter(statement=result.statement).values_list("line_number", flat=True)
                  ) == [4, 6]
    assert BankStatementLine.objects.count() == 5


def test_transaction_ids_dedupe_across_files_and_conflicts_are_refused(entity, actor, now):
    fmt = BankStatementFormat.objects.create(
        name="With ids", billing_entity=entity, date_column="date", amount_column="amount", default_currency="USD",
        reference_column="ref", transaction_id_column="id",
    )
    header = "id,date,amount,ref"
    import_statement(fmt, csv_of("T1,2024-01-10,10.00,x", "T2,2024-01-10,10.00,x", header=header),
                     filename="a.csv", actor=actor, now=now)
    # The bank corrected the reference text of T2: still the same bank line.
    result = import_statement(fmt, csv_of("T2,2024-01-10,10.00,x (corrected)", "T3,2024-01-11,5.00,y",
                                          header=header), filename="b.csv", actor=actor, now=now)
    assert (result.new_lines, result.duplicate_lines) == (1, 1)
    with pytest.raises(StatementFileError) as caught:
        import_statement(fmt, csv_of("T9,2024-01-10,10.00,x", "T9,2024-01-11,11.00,x", header=header),
                         filename="c.csv", actor=actor, now=now)
    assert [e.line for e in caught.value.errors] == [3]
    assert BankStatementLine.objects.count() == 3


# --- automatic matching -----------------------------------------------------------------------------------------


def test_match_by_invoice_number_pays_the_invoice(fmt, globex, actor, now):
    inv = invoice(globex, "1250.00", actor, now)
    assert inv.number == "ACME-000001"
    result = import_statement(fmt, csv_of("2024-01-20,1250.00,USD,Invoice acme-000001,,Somebody"),
                              filename="s.csv", actor=actor, now=now)
    assert (result.matched_lines, result.unmatched_lines) == (1, 0)
    assert fresh(result.statement).matched_lines == 1
    line = BankStatementLine.objects.get()
    assert (line.status, line.match_method, line.customer, line.matched_by) == (
        Status.MATCHED, "invoice_number", globex, "system:tests")
    payment = line.payment
    assert (payment.amount, payment.method, payment.received_on, payment.reference, payment.idempotency_key) == (
        D("1250.00"), "bank_transfer", date(2024, 1, 20), "Invoice acme-000001", f"bank-line:{line.pk}")
    inv = fresh(inv)
    assert (inv.status, inv.amount_paid, inv.amount_due) == (Invoice.Status.PAID, D("1250.00"), D("0"))


def test_several_invoice_numbers_are_paid_in_order_and_the_rest_is_credit(fmt, globex, actor, now):
    first, second = invoice(globex, "100.00", actor, now), invoice(globex, "250.00", actor, now)
    import_statement(fmt, csv_of("2024-01-20,400.00,USD,ACME-2 ACME-1,,"), filename="s.csv", actor=actor, now=now)
    payment = BankStatementLine.objects.get().payment
    assert list(Allocation.objects.filter(payment=payment).order_by("pk").values_list("invoice__number", "amount")
                ) == [("ACME-000002", D("250.00")), ("ACME-000001", D("100.00"))]
    assert fresh(first).status == fresh(second).status == Invoice.Status.PAID
    assert credit_balance(globex, "USD") == D("50.00")


def test_partial_payment_leaves_the_invoice_partly_paid(fmt, globex, actor, now):
    inv = invoice(globex, "1000.00", actor, now)
    import_statement(fmt, csv_of("2024-01-20,400.00,USD,ACME-000001,,"), filename="s.csv", actor=actor, now=now)
    inv = fresh(inv)
    assert (inv.status, inv.amount_paid, inv.amount_due) == (Invoice.Status.FINALIZED, D("400.00"), D("600.00"))
    assert credit_balance(globex, "USD") == D("0")


def test_overpayment_goes_to_the_credit_balance(fmt, globex, actor, now):
    inv = invoice(globex, "80.00", actor, now)
    import_statement(fmt, csv_of("2024-01-20,100.00,USD,ACME-1,,"), filename="s.csv", actor=actor, now=now)
    assert fresh(inv).status == Invoice.Status.PAID
    assert CustomerBalance.objects.get(customer=globex, currency="USD").balance == D("20.00")


def test_currency_mismatch_is_refused(fmt, globex, actor, now):
    inv = invoice(globex, "100.00", actor, now, currency="EUR")
    import_statement(fmt, csv_of("2024-01-20,100.00,USD,ACME-000001,,"), filename="s.csv", actor=actor, now=now)
    line = BankStatementLine.objects.get()
    assert line.status == Status.UNMATCHED and line.payment is None
    assert line.note == "Currency mismatch: invoice ACME-000001 is in EUR, the line in USD."
    assert fresh(inv).amount_paid == D("0") and not Payment.objects.exists()


def test_match_by_customer_and_exact_amount(fmt, globex, initech, actor, now):
    invoice(globex, "100.00", actor, now)
    target = invoice(globex, "240.00", actor, now)
    invoice(initech, "240.00", actor, now)
    import_statement(fmt, csv_of("2024-01-20,240.00,USD,payment globex,,"), filename="s.csv", actor=actor, now=now)
    line = BankStatementLine.objects.get()
    assert (line.status, line.match_method, line.customer) == (Status.MATCHED, "amount_customer", globex)
    assert fresh(target).status == Invoice.Status.PAID


def test_match_by_counterparty_name(fmt, globex, initech, actor, now):
    target = invoice(initech, "75.00", actor, now)
    import_statement(fmt, csv_of("2024-01-20,75.00,USD,SEPA 88213,,INITECH"), filename="s.csv", actor=actor, now=now)
    assert BankStatementLine.objects.get().customer == initech
    assert fresh(target).status == Invoice.Status.PAID


def test_ambiguous_lines_stay_unmatched_with_the_reason(fmt, globex, initech, actor, now):
    invoice(globex, "50.00", actor, now)
    invoice(globex, "50.00", actor, now)
    invoice(initech, "30.00", actor, now)
    import_statement(fmt, csv_of(
        "2024-01-20,50.00,USD,,,Globex Corporation",  # two invoices of exactly 50.00
        "2024-01-20,31.00,USD,,,Initech",  # no invoice of that amount
        "2024-01-20,10.00,USD,thanks,,Someone",  # nobody known
        "2024-01-20,80.00,USD,ACME-1 ACME-3,,",  # invoices of two customers
    ), filename="s.csv", actor=actor, now=now)
    notes = list(BankStatementLine.objects.order_by("line_number").values_list("status", "note"))
    assert notes == [
        ("unmatched", "globex has 2 open invoices of exactly 50.00 USD (ACME-000001, ACME-000002): match it by hand."),
        ("unmatched", "initech has no open invoice of exactly 31.00 USD: match it by hand."),
        ("unmatched", "No invoice number or known customer in the reference: match it by hand."),
        ("unmatched", "The reference names invoices of several customers (ACME-000001, ACME-000003): match it by "
                      "hand."),
    ]
    assert not Payment.objects.exists()


def test_auto_match_of_a_matched_line_changes_nothing(fmt, globex, actor, now):
    invoice(globex, "10.00", actor, now)
    import_statement(fmt, csv_of("2024-01-20,10.00,USD,ACME-1,,"), filename="s.csv", actor=actor, now=now)
    line = BankStatementLine.objects.get()
    assert auto_match(line, actor=actor, now=now).payment_id == line.payment_id
    assert Payment.objects.count() == 1


def test_a_paid_invoice_number_is_left_for_a_person(fmt, globex, actor, now):
    invoice(globex, "10.00", actor, now)
    import_statement(fmt, csv_of("2024-01-20,10.00,USD,ACME-1,,"), filename="a.csv", actor=actor, now=now)
    import_statement(fmt, csv_of("2024-01-21,10.00,USD,ACME-1,,"), filename="b.csv", actor=actor, now=now)
    second = BankStatementLine.objects.get(booked_on=date(2024, 1, 21))
    assert second.status == Status.UNMATCHED and "owe nothing (ACME-000001 is paid)" in second.note


# --- manual matching and ignoring ---------------------------------------------------------------------------------


def queued(fmt, actor, now, row: str = "2024-01-20,300.00,USD,unknown,,") -> BankStatementLine:
    import_statement(fmt, csv_of(row), filename=f"{row}.csv", actor=actor, now=now)
    return BankStatementLine.objects.get(reference=row.split(",")[3])


def test_manual_match_allocates_oldest_first_and_keeps_the_rest(fmt, globex, actor, now):
    old, new = invoice(globex, "100.00", actor, now), invoice(globex, "150.00", actor, now)
    line = match_manually(queued(fmt, actor, now), customer=globex, allocations=None, actor=Actor.system("op"),
                          now=now)
    assert (line.status, line.match_method, line.matched_by, line.note) == (Status.MATCHED, "manual", "system:op", "")
    assert fresh(old).status == fresh(new).status == Invoice.Status.PAID
    assert credit_balance(globex, "USD") == D("50.00")


def test_manual_match_with_chosen_allocations(fmt, globex, actor, now):
    old, new = invoice(globex, "100.00", actor, now), invoice(globex, "400.00", actor, now)
    line = queued(fmt, actor, now)
    match_manually(line, customer=globex, allocations=[AllocationRequest(new, D("280.00"))], actor=actor, now=now)
    assert fresh(old).amount_due == D("100.00") and fresh(new).amount_due == D("120.00")
    assert credit_balance(globex, "USD") == D("20.00")


def test_manual_match_refusals_leave_the_line_queued(fmt, globex, initech, actor, now):
    inv = invoice(globex, "100.00", actor, now)
    eur = invoice(globex, "100.00", actor, now, currency="EUR")
    line = queued(fmt, actor, now)
    with pytest.raises(BillingError) as caught:
        match_manually(line, customer=globex, allocations=[AllocationRequest(inv, D("150.00"))], actor=actor, now=now)
    assert caught.value.field == "allocations[0].amount"
    with pytest.raises(BillingError) as caught:
        match_manually(line, customer=globex, allocations=[AllocationRequest(eur, D("10.00"))], actor=actor, now=now)
    assert caught.value.field == "allocations[0].invoice" and "Currency mismatch" in caught.value.message
    with pytest.raises(BillingError) as caught:
        match_manually(line, customer=initech, allocations=[AllocationRequest(inv, D("10.00"))], actor=actor, now=now)
    assert "not this customer's" in caught.value.message
    other_entity = CustomerFactory(external_id="elsewhere")
    with pytest.raises(BillingError) as caught:
        match_manually(line, customer=other_entity, allocations=None, actor=actor, now=now)
    assert caught.value.field == "customer"
    assert fresh(line).status == Status.UNMATCHED and not Payment.objects.exists()
    assert fresh(inv).amount_due == D("100.00")


def test_ignore_and_unignore(fmt, globex, actor, now):
    line = queued(fmt, actor, now)
    with pytest.raises(BillingError):
        ignore_line(line, reason="  ", actor=actor, now=now)
    line = ignore_line(line, reason="Interest from the bank", actor=actor, now=now)
    assert line.status == Status.IGNORED
    assert line.note == "Ignored by system:tests on 2024-01-15: Interest from the bank"
    with pytest.raises(InvalidTransition):
        match_manually(line, customer=globex, allocations=None, actor=actor, now=now)
    line = unignore_line(line, actor=actor, now=now)
    assert line.status == Status.UNMATCHED
    with pytest.raises(InvalidTransition):
        unignore_line(line, actor=actor, now=now)
    match_manually(line, customer=globex, allocations=None, actor=actor, now=now)
    with pytest.raises(InvalidTransition):
        ignore_line(line, reason="oops", actor=actor, now=now)
    with pytest.raises(InvalidTransition):
        match_manually(line, customer=globex, allocations=None, actor=actor, now=now)
    assert Payment.objects.count() == 1


def test_a_debit_cannot_be_matched_or_put_back(fmt, globex, actor, now):
    line = queued(fmt, actor, now, "2024-01-20,-300.00,USD,fee,,")
    assert line.status == Status.IGNORED
    with pytest.raises(BillingError):
        unignore_line(line, actor=actor, now=now)


# --- the sample file and the command -------------------------------------------------------------------------------


def sample_format(entity) -> BankStatementFormat:
    return BankStatementFormat.objects.create(
        name="Example bank", billing_entity=entity, delimiter=";", date_column="Booking date",
        date_format=BankStatementFormat.DateOrder.DMY_DOT, credit_column="Credit", debit_column="Debit",
        currency_column="Currency", default_currency="USD", reference_column="Reference",
        description_column="Details", counterparty_column="Counterparty", transaction_id_column="Transaction ID",
        decimal_separator=",", thousands_separator=".", skip_rows=2,
    )


def test_the_documented_sample_imports(entity, globex, initech, actor, now):
    fmt = sample_format(entity)
    invoice(globex, "1250.00", actor, now)
    invoice(initech, "480.00", actor, now)
    result = import_statement(fmt, SAMPLE.read_bytes(), filename=SAMPLE.name, actor=actor, now=now)
    assert (result.line_count, result.matched_lines, result.ignored_lines, result.unmatched_lines) == (6, 2, 2, 2)


def test_command_imports_and_summarises(entity, globex, actor, now, capsys):
    fmt = sample_format(entity)
    invoice(globex, "1250.00", actor, now)
    call_command("import_bank_statement", "--format", fmt.name, str(SAMPLE))
    out = capsys.readouterr().out
    assert "6 line(s) read: 6 new, 0 already imported; 1 matched, 3 to match by hand, 2 debit(s) ignored." in out
    call_command("import_bank_statement", "--format", fmt.name, str(SAMPLE))
    assert "nothing new" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No bank statement format named 'Nope'"):
        call_command("import_bank_statement", "--format", "Nope", str(SAMPLE))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_bank_statement", "--format", fmt.name, "/nonexistent/file.csv")


def test_command_reports_every_bad_row(fmt, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_of("2024-13-01,1.00,USD,,,", "2024-01-01,x,USD,,,"))
    with pytest.raises(CommandError) as caught:
        call_command("import_bank_statement", "--format", fmt.name, str(bad))
    assert "line 2, column 'Date'" in str(caught.value) and "line 3, column 'Amount'" in str(caught.value)
    assert not BankStatement.objects.exists()


# --- two operators at once --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_two_concurrent_matches_of_one_line_make_one_payment(fmt, globex, initech, actor, now):
    inv = invoice(globex, "300.00", actor, now)
    invoice(initech, "300.00", actor, now)
    line = queued(fmt, actor, now)
    jobs = [
        lambda: match_manually(line.pk, customer=globex, allocations=None, actor=Actor.system("op1"), now=now),
        lambda: match_manually(line.pk, customer=globex, allocations=None, actor=Actor.system("op2"), now=now),
        lambda: match_manually(line.pk, customer=initech, allocations=None, actor=Actor.system("op3"), now=now),
    ]
    results, errors = race(jobs)
    assert len(results) == 1 and len(errors) == 2
    assert all(isinstance(e, InvalidTransition) for e in errors), errors
    assert Payment.objects.count() == 1
    line = fresh(line)
    assert line.status == Status.MATCHED and line.payment == Payment.objects.get()
    paid = Invoice.objects.filter(status=Invoice.Status.PAID)
    assert paid.count() == 1 and paid.get().customer == line.customer
    assert fresh(inv).amount_due in (D("0"), D("300.00"))
