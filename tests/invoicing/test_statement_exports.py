"""Receivables downloads: aging and statement CSV columns and values, formula injection neutralised, and the
statement PDF read back with pypdf (figures, many pages, hostile text)."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from io import BytesIO

import pytest
from pypdf import PdfReader

from invoicing.receivables_export import (
    AGING_COLUMNS,
    AGING_ITEM_COLUMNS,
    STATEMENT_COLUMNS,
    aging_csv,
    aging_items_csv,
    render_statement_pdf,
    statement_csv,
    statement_filename,
)
from invoicing.services.receivables import aging_report, customer_statement
from tests.factories import BillingEntityFactory, CustomerFactory
from tests.invoicing.test_receivables import build_book, invoice, pay

pytestmark = pytest.mark.django_db

D = Decimal


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def pages_of(pdf: bytes) -> list[str]:
    return [" ".join((page.extract_text() or "").split()) for page in PdfReader(BytesIO(pdf)).pages]


@pytest.fixture
def book():
    return build_book()


def test_aging_csv_columns_and_values(book):
    report = aging_report(as_of=date(2024, 3, 31))
    rows = rows_of(aging_csv(report))
    assert tuple(rows[0]) == AGING_COLUMNS
    assert rows[1:] == [
        ["customer", "acme-us", "acme", "Acme", "USD", "100.00", "500.00", "700.00", "0.00", "80.00", "1380.00",
         "0.00", "1380.00"],
        ["total", "acme-us", "", "", "USD", "100.00", "500.00", "700.00", "0.00", "80.00", "1380.00", "0.00",
         "1380.00"],
    ]
    items = rows_of(aging_items_csv(report))
    assert tuple(items[0]) == AGING_ITEM_COLUMNS
    assert items[1] == ["acme-us", "acme", "Acme", "USD", book.e.number, "2023-10-01", "2023-10-31", "152",
                        "days_over_90", "80.00", "no"]
    assert [row[4] for row in items[1:]] == [book.e.number, book.a.number, book.b.number, book.c.number]


def test_statement_csv(book):
    statement = customer_statement(book.customer, "USD", date(2024, 4, 1), date(2024, 4, 30))
    rows = rows_of(statement_csv(statement))
    assert tuple(rows[0]) == STATEMENT_COLUMNS
    assert rows[1] == ["2024-04-01", "opening_balance", "", "Opening balance", "", "", "", "", "1380.00", "USD"]
    assert rows[2] == ["2024-04-05", "invoice", book.d.number, f"Invoice {book.d.number}", "", "2024-05-05", "",
                       "50.00", "1330.00", "USD"]
    assert rows[3][:6] == ["2024-04-10", "payment", f"P-{book.p3.pk}", "Payment (Bank transfer)", "wire", ""]
    assert [(r[1], r[6], r[7], r[8]) for r in rows[3:]] == [
        ("payment", "", "250.00", "1080.00"), ("payment_reversal", "300.00", "", "1380.00"),
        ("refund", "100.00", "", "1480.00"), ("closing_balance", "", "", "1480.00"),
    ]
    assert rows[4][4] == "Bounced" and rows[5][4] == "Paid twice by mistake"
    assert statement_filename(statement, "csv") == "statement-acme-USD-2024-04-01-2024-04-30.csv"


def test_formulas_in_text_are_neutralised_and_numbers_are_not():
    entity = BillingEntityFactory(code="evil", timezone="UTC", default_payment_terms_days=0, invoice_grace_days=0)
    customer = CustomerFactory(billing_entity=entity, timezone="UTC", name='=HYPERLINK("http://x.test","y")',
                               external_id="evil-1")
    inv = invoice(customer, "10.00", date(2024, 1, 1))
    payment = pay(customer, "25.00", date(2024, 1, 2))
    payment.reference = "@SUM(A1:A9)"
    payment.save(update_fields=["reference"])
    aging = rows_of(aging_csv(aging_report(as_of=date(2024, 1, 31), customer=customer)))
    assert aging[1][3] == "'=HYPERLINK(\"http://x.test\",\"y\")"
    assert aging[1][-1] == "-15.00"  # a negative number stays a number
    statement = rows_of(statement_csv(customer_statement(customer, "USD", date(2024, 1, 1), date(2024, 1, 31))))
    assert [row[4] for row in statement if row[1] == "payment"] == ["'@SUM(A1:A9)"]
    assert statement[-1][8] == "-15.00"
    assert inv.number in {row[2] for row in statement}
    assert statement_filename(customer_statement(customer, "USD", date(2024, 1, 1), date(2024, 1, 2)), "pdf") == (
        "statement-evil-1-USD-2024-01-01-2024-01-02.pdf")


def test_statement_pdf_reads_back(book):
    statement = customer_statement(book.customer, "USD", date(2024, 4, 1), date(2024, 4, 30))
    pdf = render_statement_pdf(statement)
    assert pdf == render_statement_pdf(statement)  # deterministic
    [text] = pages_of(pdf)
    assert "STATEMENT" in text and "01 Apr 2024 to 30 Apr 2024" in text
    assert "Opening balance: 1,380.00 USD" in text and "Closing balance: 1,480.00 USD" in text
    for figure in ("1,330.00", "1,080.00", "300.00", "Bounced", "Paid twice by mistake"):
        assert figure in text, figure
    assert f"Invoice {book.d.number}" in text and "Open invoices on 30 Apr 2024" in text
    assert f"{book.e.number} 01 Oct 2023 31 Oct 2023 182 Over 90 days 30.00" in text
    assert "Total open 1,480.00" in text
    assert "Page 1 of 1" in text


def test_statement_pdf_with_credit_many_pages_and_hostile_text():
    entity = BillingEntityFactory(code="multi", timezone="UTC", default_payment_terms_days=0, invoice_grace_days=0)
    customer = CustomerFactory(billing_entity=entity, timezone="UTC", name="<b>Bold & Co</b>", external_id="bold")
    for day in range(1, 29):
        invoice(customer, "10.00", date(2024, 2, day))
        payment = pay(customer, "12.00", date(2024, 2, day))
        payment.reference = "<font size=40>huge</font> & </para>"
        payment.save(update_fields=["reference"])
    statement = customer_statement(customer, "USD", date(2024, 2, 1), date(2024, 2, 29))
    assert statement.closing_balance == D("-56.00") and statement.unapplied_credit == D("56.00")
    pages = pages_of(render_statement_pdf(statement))
    assert len(pages) >= 2 and pages[-1].count(f"Page {len(pages)} of {len(pages)}") == 1
    text = " ".join(pages)
    assert "<b>Bold & Co</b>" in text and "<font size=40>huge</font> & </para>" in text
    assert "No invoice is open." in text and "Unapplied credit held: 56.00 USD" in text
