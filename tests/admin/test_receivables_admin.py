"""Receivables in the admin: open items list, aging report with DSO, customer statement and balance at a date;
every finance role reads them, only a role with invoicing.export_receivable downloads CSV and PDF."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN, REVENUE_ACCOUNTANT
from invoicing.services.documents import ManualLine, create_one_off_invoice
from tests.admin.support import client_for
from tests.invoicing.test_receivables import ACTOR, build_book

pytestmark = pytest.mark.django_db

ROLES = (FINANCE_ADMIN, BILLING_OPERATOR, REVENUE_ACCOUNTANT, AUDITOR)
CHANGELIST = "admin:invoicing_receivable_changelist"
AGING = "admin:invoicing_receivable_aging"
STATEMENT = "admin:invoicing_receivable_statement"
BALANCE = "admin:invoicing_receivable_balance"
APRIL = {"customer": "acme", "currency": "USD", "start": "2024-04-01", "end": "2024-04-30"}


@pytest.fixture
def recv():
    return build_book()


def page(client: Client, name: str, params: dict | None = None):
    return client.get(reverse(name), params or {})


@pytest.mark.parametrize("role", ROLES)
def test_every_finance_role_reads_the_pages(recv, role):
    client = client_for(role)
    index = client.get(reverse("admin:index"))
    assert reverse(CHANGELIST) in index.content.decode()
    for name, params in [(CHANGELIST, {}), (AGING, {"as_of": "2024-04-30"}), (STATEMENT, APRIL),
                         (BALANCE, {"customer": "acme", "as_of": "2024-04-30"})]:
        assert page(client, name, params).status_code == 200, (role, name)


@pytest.mark.parametrize("role", (BILLING_OPERATOR, REVENUE_ACCOUNTANT))
def test_operators_and_accountants_download(recv, role):
    client = client_for(role)
    assert page(client, AGING, {"as_of": "2024-04-30", "download": "csv"}).status_code == 200
    assert page(client, STATEMENT, {**APRIL, "download": "pdf"}).status_code == 200


@pytest.mark.parametrize("role", (AUDITOR,))
def test_downloads_need_the_export_permission(recv, role):
    client = client_for(role)
    assert page(client, AGING, {"as_of": "2024-04-30", "download": "csv"}).status_code == 403
    assert page(client, AGING, {"as_of": "2024-04-30", "download": "items"}).status_code == 403
    assert page(client, STATEMENT, {**APRIL, "download": "pdf"}).status_code == 403
    assert page(client, STATEMENT, {**APRIL, "download": "csv"}).status_code == 403
    body = page(client, AGING, {"as_of": "2024-04-30"}).content.decode()
    assert "download-csv" not in body


def test_a_user_without_a_role_sees_nothing(recv):
    client = client_for(None, username="intern")
    for name in (CHANGELIST, AGING, STATEMENT, BALANCE):
        assert page(client, name).status_code == 403, name
    anonymous = Client().get(reverse(AGING))
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_aging_page_with_dso(recv):
    client = client_for(FINANCE_ADMIN)
    response = page(client, AGING, {"as_of": "2024-04-30"})
    body = response.content.decode()
    row = response.context["rows"][0]
    assert row["buckets"] == ["0.00", "200.00", "500.00", "750.00", "30.00"]
    assert (row["total"], row["credit"], row["net"]) == ("1,480.00", "0.00", "1,480.00")
    [total] = response.context["totals"]
    assert total["dso"] == Decimal("204.92") and total["credit_sales"] == "650.00"
    assert "204.92" in body and "download-csv" in body
    march = page(client, AGING, {"as_of": "2024-03-31", "billing_entity": "acme-us", "currency": "usd"})
    assert march.context["rows"][0]["total"] == "1,380.00"


def test_aging_downloads(recv):
    client = client_for(FINANCE_ADMIN)
    response = page(client, AGING, {"as_of": "2024-04-30", "download": "csv"})
    assert response["Content-Disposition"] == 'attachment; filename="aging-2024-04-30.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["row"], r["customer_external_id"], r["net"]) for r in rows] == [("customer", "acme", "1480.00"),
                                                                               ("total", "", "1480.00")]
    items = page(client, AGING, {"as_of": "2024-04-30", "download": "items"})
    assert [r["invoice_number"] for r in csv.DictReader(io.StringIO(items.content.decode()))] == [
        recv.e.number, recv.a.number, recv.b.number, recv.c.number]


def test_aging_form_errors(recv):
    client = client_for(AUDITOR)
    for params, field in [({"as_of": "2024-02-30"}, "as_of"), ({"as_of": "0001-01-01"}, "as_of"),
                          ({"currency": "XYZ"}, "currency"), ({"billing_entity": "nope"}, "billing_entity")]:
        response = page(client, AGING, params)
        assert response.status_code == 200
        assert field in response.context["form"].errors and response.context["report"] is None
    assert page(client, AGING).context["report"].as_of == timezone.now().date()


def test_statement_page(recv):
    client = client_for(AUDITOR)  # reads, but does not download
    response = page(client, STATEMENT, APRIL)
    assert (response.context["opening"], response.context["closing"]) == ("1,380.00", "1,480.00")
    assert [(line["label"], line["debit"], line["credit"], line["balance"]) for line in response.context["lines"]] == [
        ("Invoice", "", "50.00", "1,330.00"), ("Payment", "", "250.00", "1,080.00"),
        ("Payment reversed", "300.00", "", "1,380.00"), ("Refund", "100.00", "", "1,480.00"),
    ]
    assert [item["number"] for item in response.context["items"]] == [recv.e.number, recv.a.number, recv.b.number,
                                                                       recv.c.number]
    assert "download-pdf" not in response.content.decode()


def test_statement_downloads(recv):
    client = client_for(FINANCE_ADMIN)
    assert "download-pdf" in page(client, STATEMENT, APRIL).content.decode()
    pdf = page(client, STATEMENT, {**APRIL, "download": "pdf"})
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert pdf["Content-Disposition"] == 'attachment; filename="statement-acme-USD-2024-04-01-2024-04-30.pdf"'
    rows = list(csv.DictReader(io.StringIO(page(client, STATEMENT, {**APRIL, "download": "csv"}).content.decode())))
    assert rows[-1]["type"] == "closing_balance" and rows[-1]["balance"] == "1480.00"


def test_statement_form_errors(recv):
    client = client_for(FINANCE_ADMIN)
    for params, field in [
        ({**APRIL, "start": "2024-05-01"}, "start"),
        ({**APRIL, "start": "2019-04-01"}, "end"),
        ({**APRIL, "customer": "ghost"}, "customer"),
        ({**APRIL, "customer": "<script>alert(1)</script>"}, "customer"),
        ({**APRIL, "currency": "ZZZ"}, "currency"),
        ({**APRIL, "end": "not a date"}, "end"),
        ({**APRIL, "customer": "x" * 500}, "customer"),
    ]:
        response = page(client, STATEMENT, {**params, "download": "pdf"})
        assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
        assert field in response.context["form"].errors, params
        assert response.context["statement"] is None
        assert "<script>alert(1)</script>" not in response.content.decode()
    # Nothing asked yet: the empty form.
    assert page(client, STATEMENT).context["statement"] is None


def test_balance_page(recv):
    client = client_for(BILLING_OPERATOR)
    response = page(client, BALANCE, {"customer": "acme", "as_of": "2024-03-31"})
    assert response.context["balance"] == "1,380.00" and response.context["owes"] is True
    response = page(client, BALANCE, {"customer": "acme", "as_of": "2024-04-30", "currency": "USD"})
    assert response.context["balance"] == "1,480.00"
    assert dict(response.context["parts"]) == {
        "Invoices issued": "1,730.00", "Invoices voided": "0.00", "Payments received": "-650.00",
        "Payments reversed": "300.00", "Credit notes": "0.00", "Refunds": "100.00"}
    assert "as_of" in page(client, BALANCE, {"customer": "acme", "as_of": "2024-02-31"}).context["form"].errors


def test_open_items_list_and_bucket_filter(recv):
    fresh = create_one_off_invoice(recv.customer, [ManualLine("Now", Decimal("20.00"))], actor=ACTOR,
                                   now=timezone.now(), finalize=True)
    client = client_for(AUDITOR)
    listed = page(client, CHANGELIST)
    book_open = {recv.e.number, recv.a.number, recv.b.number, recv.c.number}
    # D (a credit) owes nothing and is not money owed.
    assert {obj.number for obj in listed.context["cl"].result_list} == book_open | {fresh.number}
    current = {obj.number for obj in page(client, CHANGELIST, {"bucket": "current"}).context["cl"].result_list}
    assert current == {fresh.number}
    # Everything else was due in 2024: long over 90 days.
    old = {obj.number for obj in page(client, CHANGELIST, {"bucket": "days_over_90"}).context["cl"].result_list}
    assert old == book_open
    body = listed.content.decode()
    assert reverse(AGING) in body and reverse(STATEMENT) in body and reverse(BALANCE) in body
