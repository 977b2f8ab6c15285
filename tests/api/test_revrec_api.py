"""/api/v1/revrec/: reports (JSON and CSV) of the hand-computed book of tests/revrec/test_reports.py, the
ledger (periods, journal export, close, accounts, journal entries), revenue contracts and recognition runs,
and every kind of bad input."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest

from revrec.models import AccountingPeriod, JournalEntry, RecognitionRun
from tests.api.conftest import client_for, error_of
from tests.revrec.test_reports import build_book

pytestmark = pytest.mark.django_db
D = Decimal
REPORTS = "/api/v1/revrec/reports"


@pytest.fixture
def book():
    return build_book("acme-us")


def period(book, year: int, month: int) -> AccountingPeriod:
    return AccountingPeriod.objects.get(billing_entity=book.entity, start_date=date(year, month, 1))


def test_authentication_is_required(book):
    jan = period(book, 2024, 1).pk
    for url in (f"{REPORTS}/waterfall?entity=acme-us&start=2024-01-01&end=2024-03-01", "/api/v1/revrec/periods",
                f"/api/v1/revrec/periods/{jan}/journal.csv", "/api/v1/revrec/accounts",
                "/api/v1/revrec/journal-entries", "/api/v1/revrec/revenue-contracts",
                "/api/v1/revrec/recognition-runs"):
        response = client_for(None).get(url)
        assert response.status_code == 401, url
        assert error_of(response)["code"] == "not_authenticated"


def test_waterfall_json(book, read_api):
    response = read_api.get(f"{REPORTS}/waterfall", {"entity": "acme-us", "start": "2024-01-01", "end": "2024-03-01"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["key"], body["entity"], body["currency"], body["chart_kind"]) == ("waterfall", "acme-us", "USD",
                                                                                   "bar")
    assert body["parameters"] == {"currency": "USD", "start": "2024-01-01", "end": "2024-03-01"}
    assert body["columns"] == ["Billing month", "Billed", "Earlier", "2024-01", "2024-02", "Later"]
    # See tests/revrec/test_reports.py::test_waterfall for the figures.
    assert body["rows"] == [["2024-01", "960.00", "0.00", "360.00", "290.00", "310.00"],
                            ["2024-02", "839.00", "0.00", "0.00", "200.00", "639.00"]]
    assert body["totals"] == ["Total", "1799.00", "0.00", "360.00", "490.00", "949.00"]
    assert body["chart"][1] == {"name": "Recognised", "points": [{"label": "2024-01", "value": "360.00"},
                                                                 {"label": "2024-02", "value": "490.00"}]}
    assert body["problems"] == []


def test_rollforward_csv_and_problems(book, read_api):
    query = {"entity": "acme-us", "currency": "usd", "start": "2024-01-01", "end": "2024-04-01", "format": "csv"}
    response = read_api.get(f"{REPORTS}/deferred_rollforward", query)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == ('attachment; filename="acme-us-deferred_rollforward-usd-2024-01-01-'
                                               '2024-04-01.csv"')
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["Month", "Opening", "Billings", "Recognised", "Other", "Closing", "Subledger closing",
                       "Difference"]
    assert rows[1:] == [
        ["2024-01", "0.00", "820.00", "220.00", "0.00", "600.00", "600.00", "0.00"],
        ["2024-02", "600.00", "839.00", "490.00", "0.00", "949.00", "949.00", "0.00"],
        ["2024-03", "949.00", "0.00", "255.00", "0.00", "694.00", "694.00", "0.00"],
        ["Total", "0.00", "1659.00", "965.00", "0.00", "694.00", "694.00", "0.00"],
    ]


def test_point_in_time_reports(book, read_api):
    body = read_api.get(f"{REPORTS}/trial_balance", {"entity": "acme-us", "as_of": "2024-03-31"}).json()
    assert body["totals"] == ["Total", "", "", "", "2904.00", "2904.00", ""]
    body = read_api.get(f"{REPORTS}/remaining_performance_obligations",
                        {"entity": "acme-us", "as_of": "2024-03-15"}).json()
    assert body["totals"] == ["Total", "", "694.00", "510.00", "184.00"]
    body = read_api.get(f"{REPORTS}/unbilled_revenue", {"entity": "acme-us", "as_of": "2024-01-14"}).json()
    assert body["rows"] == [["acme", book.rc_a, "140.00", "0.00", "140.00", "0.00"]]
    body = read_api.get(f"{REPORTS}/recognised_by_customer",
                        {"entity": "acme-us", "start": "2024-01-01", "end": "2024-04-01"}).json()
    assert body["rows"] == [["acme", "Acme", "800.00"], ["beta", "Beta", "305.00"]]
    body = read_api.get(f"{REPORTS}/journal", {"entity": "acme-us", "start": "2024-02-01", "end": "2024-03-01"}).json()
    assert [row[1] for row in body["rows"]] == ["2024-02-10"] * 2 + ["2024-02-29"] * 2
    assert isinstance(body["rows"][0][0], int)
    # Another currency: an empty book, not an error.
    assert read_api.get(f"{REPORTS}/journal", {"entity": "acme-us", "currency": "EUR", "start": "2024-02-01",
                                               "end": "2024-03-01"}).json()["rows"] == []


@pytest.mark.parametrize(("key", "params", "field"), [
    ("nope", {"start": "2024-01-01", "end": "2024-02-01"}, "key"),
    ("waterfall%00", {}, "key"),
    ("waterfall", {"start": "2024-01-01"}, "end"),
    ("waterfall", {"start": "2024-03-01", "end": "2024-01-01"}, "end"),
    ("waterfall", {"start": "2024-02-30", "end": "2024-04-01"}, "start"),
    ("waterfall", {"start": "yesterday", "end": "2024-04-01"}, "start"),
    ("waterfall", {"start": "0001-01-01", "end": "2024-04-01"}, "start"),
    ("waterfall", {"start": "1990-01-01", "end": "2024-04-01"}, "end"),
    ("waterfall", {"start": "2024-01-01", "end": "2024-02-01", "as_of": "2024-01-01"}, "as_of"),
    ("trial_balance", {}, "as_of"),
    ("trial_balance", {"as_of": "9999-12-31"}, "as_of"),
    ("trial_balance", {"as_of": "2024-01-01", "entity": "nope"}, "entity"),
    ("trial_balance", {"as_of": "2024-01-01", "entity": "x" * 51}, "entity"),
    ("trial_balance", {"as_of": "2024-01-01", "entity": "' OR 1=1 --"}, "entity"),
    ("trial_balance", {"as_of": "2024-01-01", "currency": "XYZ"}, "currency"),
    ("trial_balance", {"as_of": "2024-01-01", "currency": "DOLLARS"}, "currency"),
    ("trial_balance", {"as_of": "2024-01-01", "format": "xml"}, "format"),
    ("trial_balance", {"as_of": "2024-01-01", "asof": "2024-01-01"}, "asof"),
])
def test_reports_refuse_bad_parameters(book, read_api, key, params, field):
    query = {"entity": "acme-us", **params}
    response = read_api.get(f"{REPORTS}/{key}", query)
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in error["fields"], error


def test_missing_entity_and_nul_characters(book, read_api):
    response = read_api.get(f"{REPORTS}/trial_balance", {"as_of": "2024-01-01"})
    assert "entity" in error_of(response)["fields"]
    assert read_api.get(f"{REPORTS}/trial_balance", {"as_of": "2024-01-01", "entity": "ac\x00me"}).status_code == 400
    response = read_api.get(f"{REPORTS}/trial_balance?entity=acme-us&as_of=2024-01-01&as_of=2024-02-01")
    assert error_of(response)["fields"] == {"as_of": ["Give this parameter once."]}


def test_periods_and_journal_export(book, read_api):
    body = read_api.get("/api/v1/revrec/periods", {"entity": "acme-us"}).json()
    assert [p["label"] for p in body["results"]] == ["2024-03", "2024-02", "2024-01"]
    assert body["results"][0]["status"] == "open" and body["results"][0]["end_date"] == "2024-04-01"
    assert read_api.get("/api/v1/revrec/periods", {"entity": "other"}).json()["results"] == []
    feb = period(book, 2024, 2)
    response = read_api.get(f"/api/v1/revrec/periods/{feb.pk}/journal.csv")
    assert response.status_code == 200, response.content
    assert response["Content-Disposition"] == 'attachment; filename="journal-acme-us-2024-02.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["account_code"], r["debit"], r["credit"]) for r in rows] == [
        ("1100", "839.00", "0.00"), ("2100", "0.00", "839.00"), ("4000", "0.00", "490.00"), ("2100", "490.00", "0.00")]
    assert read_api.get("/api/v1/revrec/periods/999999/journal.csv").status_code == 404
    assert read_api.get("/api/v1/revrec/periods/abc/journal.csv").status_code == 404


def test_close_a_period(book, api, read_api):
    jan, mar = period(book, 2024, 1), period(book, 2024, 3)
    assert read_api.post(f"/api/v1/revrec/periods/{jan.pk}/close").status_code == 403
    # March cannot close before February (and its recognition is not complete): refused, with the reasons.
    response = api.post(f"/api/v1/revrec/periods/{mar.pk}/close")
    assert response.status_code == 400, response.content
    assert "period" in error_of(response)["fields"]
    response = api.post(f"/api/v1/revrec/periods/{jan.pk}/close", HTTP_IDEMPOTENCY_KEY="close-jan")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "closed" and response.json()["close_checklist"]
    replay = api.post(f"/api/v1/revrec/periods/{jan.pk}/close", HTTP_IDEMPOTENCY_KEY="close-jan")
    assert replay.status_code == 200 and replay["Idempotent-Replayed"] == "true"
    again = api.post(f"/api/v1/revrec/periods/{jan.pk}/close")
    assert again.status_code == 409, again.content


def test_accounts_and_journal_entries(book, read_api):
    accounts = read_api.get("/api/v1/revrec/accounts", {"entity": "acme-us", "page_size": 100}).json()["results"]
    assert len(accounts) == 11
    assert {a["code"]: a["normal_balance"] for a in accounts}["2100"] == "credit"
    invoices = read_api.get("/api/v1/revrec/journal-entries", {"entity": "acme-us", "kind": "invoice"}).json()
    assert invoices["count"] == 3
    assert {e["total"]["amount"] for e in invoices["results"]} == {"910.00", "50.00", "839.00"}
    february = read_api.get("/api/v1/revrec/journal-entries", {"entity": "acme-us", "entry_date_from": "2024-02-01",
                                                               "entry_date_to": "2024-02-29"}).json()
    assert [e["entry_date"] for e in february["results"]] == ["2024-02-29", "2024-02-10"]
    entry = JournalEntry.objects.get(source_key=f"invoice:{book.a.pk}")
    detail = read_api.get(f"/api/v1/revrec/journal-entries/{entry.pk}").json()
    assert (detail["period"], detail["kind"], detail["customer"], detail["is_correction"]) == (
        "2024-01", "invoice", "acme", False)
    assert {(line["account"], line["debit"]["amount"], line["credit"]["amount"]) for line in detail["lines"]} == {
        ("1100", "910.00", "0.00"), ("1200", "0.00", "140.00"), ("2100", "0.00", "770.00")}
    assert read_api.get("/api/v1/revrec/journal-entries", {"entry_date_from": "someday"}).status_code == 400
    assert read_api.get("/api/v1/revrec/journal-entries", {"kind": "bogus"}).status_code == 400


def test_revenue_contracts(book, read_api):
    body = read_api.get("/api/v1/revrec/revenue-contracts", {"customer": "beta"}).json()
    [contract] = body["results"]
    assert contract["reference"] == book.rc_b and contract["billed"] == {"amount": "839.00", "currency": "USD"}
    assert contract["deferred"]["amount"] == "534.00" and contract["contract_asset"]["amount"] == "0.00"
    detail = read_api.get(f"/api/v1/revrec/revenue-contracts/{contract['id']}").json()
    assert [(o["product"], o["pattern"], o["allocated_price"]["amount"], o["recognized_amount"]["amount"],
             o["remaining"]["amount"]) for o in detail["obligations"]] == [
        ("pro", "ratable", "290.00", "290.00", "0.00"), ("support", "ratable", "549.00", "15.00", "534.00")]


def test_recognition_run(book, api, read_api):
    assert read_api.post("/api/v1/revrec/recognition-runs", {"through": "2024-03-31"}, format="json"
                         ).status_code == 403
    # Through 03-31: A's last 16 days (160.00) and 16 days of support (16.00).
    response = api.post("/api/v1/revrec/recognition-runs", {"through": "2024-03-31", "entity": "acme-us"},
                        format="json", HTTP_IDEMPOTENCY_KEY="run-1")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "completed" and body["through_date"] == "2024-03-31"
    assert D(body["amounts"]["USD"]) == D("176.00")
    replay = api.post("/api/v1/revrec/recognition-runs", {"through": "2024-03-31", "entity": "acme-us"},
                      format="json", HTTP_IDEMPOTENCY_KEY="run-1")
    assert replay.json() == body and replay["Idempotent-Replayed"] == "true"
    assert RecognitionRun.objects.count() == 1
    # Without the key, a repeat recognises nothing more.
    again = api.post("/api/v1/revrec/recognition-runs", {"through": "2024-03-31"}, format="json").json()
    assert D(again["amounts"].get("USD", "0")) == 0
    runs = read_api.get("/api/v1/revrec/recognition-runs").json()
    assert runs["count"] == 2


@pytest.mark.parametrize(("payload", "field"), [
    ({}, "through"),
    ({"through": "2024-02-30"}, "through"),
    ({"through": "0001-01-01"}, "through"),
    ({"through": "2999-01-01"}, "through"),
    ({"through": "2024-03-31", "entity": "nope"}, "entity"),
    ({"through": "2024-03-31", "entity": "e" * 60}, "entity"),
])
def test_recognition_run_refuses_bad_input(book, api, payload, field):
    response = api.post("/api/v1/revrec/recognition-runs", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in error_of(response)["fields"]
