"""/api/v1/receivables/aging and /dso, /api/v1/customers/{external_id}/balance and /statement: figures of the
hand-computed book of tests/invoicing/test_receivables.py, formats, and every kind of bad query parameter."""

from __future__ import annotations

import csv
import io

import pytest
from django.utils import timezone

from contracts.selectors import customer_today
from tests.api.conftest import client_for, error_of
from tests.invoicing.test_receivables import build_book

pytestmark = pytest.mark.django_db

AGING = "/api/v1/receivables/aging"
DSO = "/api/v1/receivables/dso"


@pytest.fixture
def book():
    return build_book()


def money(amount: str, currency: str = "USD") -> dict:
    return {"amount": amount, "currency": currency}


def test_authentication_is_required(book):
    for url in (AGING, f"{DSO}?billing_entity=acme-us", "/api/v1/customers/acme/balance", f"{AGING}?format=csv",
                "/api/v1/customers/acme/statement", "/api/v1/customers/acme/statement?format=pdf"):
        response = client_for(None).get(url)
        assert response.status_code == 401, url
        assert response["Content-Type"] == "application/json"
        assert error_of(response)["code"] == "not_authenticated"


def test_aging_json(book, read_api):
    response = read_api.get(AGING, {"as_of": "2024-04-30"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["as_of"] == "2024-04-30" and body["include_uncollectible"] is False
    [row] = body["rows"]
    assert row["customer"] == "acme" and row["billing_entity"] == "acme-us" and "items" not in row
    assert row["buckets"] == {"current": money("0.00"), "days_1_30": money("200.00"), "days_31_60": money("500.00"),
                              "days_61_90": money("750.00"), "days_over_90": money("30.00")}
    assert (row["total"], row["unapplied_credit"], row["net"]) == (money("1480.00"), money("0.00"),
                                                                   money("1480.00"))
    assert body["totals"] == [{"billing_entity": "acme-us", "currency": "USD", "customers": 1,
                               "buckets": row["buckets"], "total": money("1480.00"),
                               "unapplied_credit": money("0.00"), "net": money("1480.00")}]


def test_aging_items_and_filters(book, read_api):
    body = read_api.get(AGING, {"as_of": "2024-03-31", "items": "true", "customer": "acme", "currency": "usd",
                                "billing_entity": "acme-us"}).json()
    items = body["rows"][0]["items"]
    assert [(i["number"], i["days_overdue"], i["bucket"], i["open_amount"]["amount"]) for i in items] == [
        (book.e.number, 152, "days_over_90", "80.00"), (book.a.number, 51, "days_31_60", "700.00"),
        (book.b.number, 29, "days_1_30", "500.00"), (book.c.number, 0, "current", "100.00"),
    ]
    assert read_api.get(AGING, {"as_of": "2024-03-31", "currency": "EUR"}).json()["rows"] == []


def test_aging_csv(book, read_api):
    response = read_api.get(AGING, {"as_of": "2024-04-30", "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="aging-2024-04-30.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["row", "billing_entity", "customer_external_id", "customer_name", "currency", "current",
                       "days_1_30", "days_31_60", "days_61_90", "days_over_90", "total", "unapplied_credit", "net"]
    assert rows[1:] == [
        ["customer", "acme-us", "acme", "Acme", "USD", "0.00", "200.00", "500.00", "750.00", "30.00", "1480.00",
         "0.00", "1480.00"],
        ["total", "acme-us", "", "", "USD", "0.00", "200.00", "500.00", "750.00", "30.00", "1480.00", "0.00",
         "1480.00"],
    ]
    items = read_api.get(AGING, {"as_of": "2024-04-30", "format": "csv", "items": "1"})
    lines = list(csv.reader(io.StringIO(items.content.decode())))
    assert lines[0][4:7] == ["invoice_number", "issue_date", "due_date"] and len(lines) == 5


def test_aging_defaults_to_today(book, read_api):
    body = read_api.get(AGING).json()
    assert body["as_of"] == timezone.now().date().isoformat()
    assert body["rows"][0]["net"] == money("1480.00")


@pytest.mark.parametrize(("params", "field"), [
    ({"as_of": "2024-02-30"}, "as_of"),
    ({"as_of": "yesterday"}, "as_of"),
    ({"as_of": "0001-01-01"}, "as_of"),
    ({"as_of": "9999-12-31"}, "as_of"),
    ({"billing_entity": "nope"}, "billing_entity"),
    ({"billing_entity": "x" * 51}, "billing_entity"),
    ({"currency": "XYZ"}, "currency"),
    ({"currency": "DOLLARS"}, "currency"),
    ({"customer": "ghost"}, "customer"),
    ({"customer": "c" * 5000}, "customer"),
    ({"include_uncollectible": "maybe"}, "include_uncollectible"),
    ({"format": "xml"}, "format"),
    ({"asof": "2024-01-01"}, "asof"),
    ({"customer": "' OR 1=1 --"}, "customer"),
])
def test_aging_refuses_bad_parameters(book, read_api, params, field):
    response = read_api.get(AGING, params)
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in error["fields"], error


def test_repeated_and_nul_parameters_are_refused(book, read_api):
    response = read_api.get(f"{AGING}?as_of=2024-01-01&as_of=2024-02-01")
    assert error_of(response)["fields"] == {"as_of": ["Give this parameter once."]}
    assert read_api.get(AGING, {"customer": "ac\x00me"}).status_code == 400


def test_dso(book, read_api):
    response = read_api.get(DSO, {"billing_entity": "acme-us", "as_of": "2024-04-30"})
    assert response.status_code == 200, response.content
    assert response.json() == {"billing_entity": "acme-us", "currency": "USD", "as_of": "2024-04-30", "days": 90,
                               "receivables": money("1480.00"), "credit_sales": money("650.00"), "dso": "204.92"}
    no_sales = read_api.get(DSO, {"billing_entity": "acme-us", "as_of": "2024-04-30", "days": 30}).json()
    assert no_sales["dso"] is None and no_sales["credit_sales"] == money("-50.00")


@pytest.mark.parametrize(("params", "field"), [
    ({}, "billing_entity"),
    ({"billing_entity": "nope"}, "billing_entity"),
    ({"billing_entity": "acme-us", "days": "0"}, "days"),
    ({"billing_entity": "acme-us", "days": "100000"}, "days"),
    ({"billing_entity": "acme-us", "days": "ninety"}, "days"),
    ({"billing_entity": "acme-us", "as_of": "2024-13-01"}, "as_of"),
    ({"billing_entity": "acme-us", "currency": "usdx"}, "currency"),
])
def test_dso_refuses_bad_parameters(book, read_api, params, field):
    response = read_api.get(DSO, params)
    assert response.status_code == 400
    assert field in error_of(response)["fields"]


def test_balance_at_a_date(book, read_api):
    response = read_api.get("/api/v1/customers/acme/balance", {"as_of": "2024-04-30", "currency": "USD"})
    assert response.status_code == 200
    assert response.json() == {
        "customer": "acme", "currency": "USD", "as_of": "2024-04-30", "balance": money("1480.00"),
        "invoiced": money("1730.00"), "voided": money("0.00"), "payments": money("650.00"),
        "reversals": money("300.00"), "credit_notes": money("0.00"), "refunds": money("100.00"),
    }
    assert read_api.get("/api/v1/customers/acme/balance", {"as_of": "2024-03-31"}).json()["balance"] == money(
        "1380.00")
    today = read_api.get("/api/v1/customers/acme/balance").json()
    assert today["as_of"] == customer_today(book.customer, timezone.now()).isoformat()
    assert today["balance"] == money("1480.00")
    assert read_api.get("/api/v1/customers/acme/balance", {"currency": "JPY"}).json()["balance"] == money("0", "JPY")


def test_balance_refuses_bad_parameters(book, read_api):
    assert read_api.get("/api/v1/customers/ghost/balance").status_code == 404
    for params, field in [({"currency": "ABC"}, "currency"), ({"as_of": "2024-1-1x"}, "as_of"),
                          ({"start": "2024-01-01"}, "start")]:
        response = read_api.get("/api/v1/customers/acme/balance", params)
        assert response.status_code == 400
        assert field in error_of(response)["fields"]


def test_statement_json(book, read_api):
    response = read_api.get("/api/v1/customers/acme/statement", {"start": "2024-04-01", "end": "2024-04-30"})
    assert response.status_code == 200
    body = response.json()
    assert (body["opening_balance"], body["closing_balance"]) == (money("1380.00"), money("1480.00"))
    assert [(line["date"], line["type"], line["amount"]["amount"], line["balance"]["amount"])
            for line in body["lines"]] == [
        ("2024-04-05", "invoice", "-50.00", "1330.00"), ("2024-04-10", "payment", "-250.00", "1080.00"),
        ("2024-04-12", "payment_reversal", "300.00", "1380.00"), ("2024-04-20", "refund", "100.00", "1480.00"),
    ]
    assert [item["number"] for item in body["open_items"]] == [book.e.number, book.a.number, book.b.number,
                                                               book.c.number]
    assert body["aging"]["days_61_90"] == money("750.00")


def test_statement_csv_and_pdf(book, read_api):
    url = "/api/v1/customers/acme/statement"
    response = read_api.get(url, {"start": "2024-04-01", "end": "2024-04-30", "format": "csv"})
    assert response["Content-Disposition"] == 'attachment; filename="statement-acme-USD-2024-04-01-2024-04-30.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["type"], r["debit"], r["credit"], r["balance"]) for r in rows] == [
        ("opening_balance", "", "", "1380.00"), ("invoice", "", "50.00", "1330.00"),
        ("payment", "", "250.00", "1080.00"), ("payment_reversal", "300.00", "", "1380.00"),
        ("refund", "100.00", "", "1480.00"), ("closing_balance", "", "", "1480.00"),
    ]
    pdf = read_api.get(url, {"start": "2024-04-01", "end": "2024-04-30", "format": "pdf"})
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")


@pytest.mark.parametrize(("params", "field"), [
    ({"start": "2024-05-01", "end": "2024-04-01"}, "start"),
    ({"start": "2019-04-01", "end": "2024-04-01"}, "end"),
    ({"start": "2024-04-31"}, "start"),
    ({"end": "2024/04/30"}, "end"),
    ({"format": "docx"}, "format"),
    ({"currency": "usd;drop"}, "currency"),
    ({"as_of": "2024-01-01"}, "as_of"),
])
def test_statement_refuses_bad_parameters(book, read_api, params, field):
    for fmt in ("json", "pdf"):
        response = read_api.get("/api/v1/customers/acme/statement", {"format": fmt, **params})
        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert field in error_of(response)["fields"]


def test_statement_of_an_unknown_customer_is_404(db, read_api):
    response = read_api.get("/api/v1/customers/ghost/statement", {"format": "pdf"})
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_the_endpoints_are_read_only(book, api):
    for url in (AGING, DSO, "/api/v1/customers/acme/balance", "/api/v1/customers/acme/statement"):
        assert api.post(url, {}, format="json").status_code == 405
