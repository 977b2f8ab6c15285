"""Bank statements over the API: multipart import with row errors, idempotent retries, the reconciliation
queue, matching and ignoring lines; authentication, scopes and hostile input."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from invoicing.models import BankStatement, BankStatementFormat, BankStatementLine, Invoice, Payment
from invoicing.services.documents import ManualLine, create_one_off_invoice
from tests.api.conftest import client_for, error_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

STATEMENTS, LINES = "/api/v1/bank-statements", "/api/v1/bank-statement-lines"
HEADER = "Date,Amount,Currency,Reference,Counterparty"
NOW = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)


@pytest.fixture
def fmt(entity):
    return BankStatementFormat.objects.create(
        name="First Bank", billing_entity=entity, date_column="Date", amount_column="Amount",
        currency_column="Currency", default_currency="USD", reference_column="Reference",
        counterparty_column="Counterparty",
    )


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, external_id="globex", name="Globex Corporation", timezone="UTC")


@pytest.fixture
def inv(customer, actor):
    return create_one_off_invoice(customer, [ManualLine("Services", Decimal("100.00"))], actor=actor, now=NOW,
                                  finalize=True)


def upload(*rows: str, name: str = "statement.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, ("\n".join([HEADER, *rows]) + "\n").encode(), content_type="text/csv")


def post_file(client, file, fmt_name: str = "First Bank", **headers):
    return client.post(STATEMENTS, {"format": fmt_name, "file": file}, format="multipart", **headers)


def test_import_matches_and_lists(api, fmt, inv, customer):
    response = post_file(api, upload(f"2024-01-20,100.00,USD,{inv.number},", "2024-01-21,55.00,USD,who?,",
                                     "2024-01-22,-9.00,USD,fee,"))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["created"], body["new_lines"], body["matched_lines"], body["unmatched_lines"],
            body["ignored_lines"]) == (True, 3, 1, 1, 1)
    assert body["statement"]["format"] == "First Bank" and body["statement"]["unmatched_lines"] == 1
    assert Invoice.objects.get(pk=inv.pk).status == Invoice.Status.PAID
    again = post_file(api, upload(f"2024-01-20,100.00,USD,{inv.number},", "2024-01-21,55.00,USD,who?,",
                                  "2024-01-22,-9.00,USD,fee,", name="renamed.csv"))
    assert again.status_code == 201 and again.json()["created"] is False and again.json()["new_lines"] == 0
    assert BankStatement.objects.count() == 1 and BankStatementLine.objects.count() == 3
    listed = api.get(STATEMENTS).json()
    assert listed["count"] == 1 and listed["results"][0]["filename"] == "statement.csv"
    queue = api.get(LINES, {"status": "unmatched"}).json()["results"]
    assert [(row["reference"], row["amount"]) for row in queue] == [("who?", {"amount": "55.00", "currency": "USD"})]
    matched = api.get(LINES, {"status": "matched"}).json()["results"]
    assert matched[0]["customer"] == "globex" and matched[0]["match_method"] == "invoice_number"
    assert matched[0]["payment"] == Payment.objects.get().pk


def test_broken_rows_answer_400_with_every_row_and_store_nothing(api, fmt):
    response = post_file(api, upload("2024-01-20,100.00,USD,a,", "2024-02-31,1.00,USD,b,", "2024-01-20,1;2,USD,c,",
                                     "2024-01-20,1.00,ZZZ,d,"))
    assert response.status_code == 400
    assert error_of(response)["fields"]["file"] == [
        "line 3, column 'Date': '2024-02-31' is not a date written like 2026-01-31.",
        "line 4, column 'Amount': '1;2' is not an amount (decimal separator '.', thousands 'none').",
        "line 5, column 'Currency': 'ZZZ' is not an ISO 4217 currency.",
    ]
    assert not BankStatement.objects.exists() and not BankStatementLine.objects.exists()


@pytest.mark.parametrize(("data", "field"), [
    ({"file": "x"}, "format"),
    ({"format": "First Bank"}, "file"),
    ({"format": "Other bank", "file": None}, "format"),
    ({"format": "First Bank", "file": None, "extra": "1"}, "extra"),
    ({"format": "First\x00Bank", "file": None}, "format"),
])
def test_malformed_uploads(api, fmt, data, field):
    if "file" in data and data["file"] is None:
        data["file"] = upload("2024-01-20,1.00,USD,a,")
    response = api.post(STATEMENTS, data, format="multipart")
    assert response.status_code == 400
    assert field in error_of(response)["fields"]


def test_hostile_files(api, fmt, settings):
    binary = SimpleUploadedFile("x.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", content_type="image/png")
    assert error_of(post_file(api, binary))["fields"]["file"] == [
        "line 1: The file is not utf-8 text (byte 0x89 cannot be read); check the format's encoding or the file."]
    nul = SimpleUploadedFile("n.csv", HEADER.encode() + b"\n2024-01-20,1.00,USD,a\x00b,\n", content_type="text/csv")
    assert error_of(post_file(api, nul))["fields"]["file"] == [
        "file: The file contains NUL bytes: it is not a CSV text file."]
    empty = SimpleUploadedFile("e.csv", b"", content_type="text/csv")
    assert error_of(post_file(api, empty))["fields"]["file"] == ["file: The file is empty."]
    settings.ACCRUAL_BANK_STATEMENT_MAX_BYTES = 100
    big = upload(*["2024-01-20,1.00,USD,a,"] * 10)
    assert error_of(post_file(api, big))["fields"]["file"] == [
        "The file is larger than 0 KiB; split it into smaller statements."]
    settings.ACCRUAL_BANK_STATEMENT_MAX_BYTES = 10_000_000
    settings.ACCRUAL_BANK_STATEMENT_MAX_ROWS = 2
    many = error_of(post_file(api, upload(*["2024-01-20,1.00,USD,a,"] * 3)))["fields"]["file"]
    assert many == ["file: The file has more than 2 rows, the limit of one statement; split it into smaller files."]
    as_json = api.post(STATEMENTS, {"format": "First Bank", "file": "2024-01-20,1.00"}, format="json")
    assert as_json.status_code == 415
    assert not BankStatement.objects.exists()


def test_import_with_an_idempotency_key(api, fmt):
    first = post_file(api, upload("2024-01-20,1.00,USD,a,"), HTTP_IDEMPOTENCY_KEY="stmt-1")
    assert first.status_code == 201
    replay = post_file(api, upload("2024-01-20,1.00,USD,a,"), HTTP_IDEMPOTENCY_KEY="stmt-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    # Same name, other content: the key cannot replay the first file's answer.
    other = post_file(api, upload("2024-01-21,2.00,USD,b,"), HTTP_IDEMPOTENCY_KEY="stmt-1")
    assert other.status_code == 409 and error_of(other)["code"] == "idempotency_key_reused"
    assert BankStatement.objects.count() == 1


def test_authentication_and_scopes(api, read_api, fmt, customer):
    anonymous = client_for(None)
    assert anonymous.get(STATEMENTS).status_code == 401
    assert anonymous.get(LINES).status_code == 401
    assert post_file(anonymous, upload("2024-01-20,1.00,USD,a,")).status_code == 401
    assert post_file(read_api, upload("2024-01-20,1.00,USD,a,")).status_code == 403
    post_file(api, upload("2024-01-20,1.00,USD,a,"))
    line = BankStatementLine.objects.get()
    assert read_api.get(f"{LINES}/{line.pk}").status_code == 200
    assert anonymous.post(f"{LINES}/{line.pk}/match", {"customer": "globex"}, format="json").status_code == 401
    assert read_api.post(f"{LINES}/{line.pk}/match", {"customer": "globex"}, format="json").status_code == 403
    assert read_api.post(f"{LINES}/{line.pk}/ignore", {"reason": "x"}, format="json").status_code == 403
    assert BankStatementLine.objects.get().status == "unmatched"


def test_match_a_line_by_hand(api, fmt, inv, customer):
    post_file(api, upload("2024-01-20,130.00,USD,no reference,"))
    line = BankStatementLine.objects.get()
    url = f"{LINES}/{line.pk}/match"
    body = {"customer": "globex", "allocations": [{"invoice": inv.pk, "amount": "100.00"}]}
    matched = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="m-1")
    assert matched.status_code == 200, matched.json()
    assert (matched.json()["status"], matched.json()["customer"], matched.json()["match_method"]) == (
        "matched", "globex", "manual")
    replay = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="m-1")
    assert replay.status_code == 200 and replay["Idempotent-Replayed"] == "true"
    again = api.post(url, body, format="json")
    assert again.status_code == 409 and "already matched" in error_of(again)["message"]
    assert Payment.objects.count() == 1 and Invoice.objects.get(pk=inv.pk).status == Invoice.Status.PAID
    assert api.get(LINES, {"status": "unmatched"}).json()["count"] == 0


def test_match_refusals(api, fmt, inv, customer, entity):
    post_file(api, upload("2024-01-20,50.00,USD,no reference,"))
    url = f"{LINES}/{BankStatementLine.objects.get().pk}/match"
    cases = [
        ({}, "customer"),
        ({"customer": "nobody"}, "customer"),
        ({"customer": "globex", "allocations": [{"invoice": inv.pk, "amount": "60.00"}]}, "allocations"),
        ({"customer": "globex", "allocations": [{"invoice": inv.pk, "amount": "0.001"}]}, "allocations[0].amount"),
        ({"customer": "globex", "allocations": [{"invoice": inv.pk, "amount": "abc"}]}, "allocations[0].amount"),
        ({"customer": "globex", "allocations": [{"invoice": 999999, "amount": "1.00"}]}, "allocations[0].invoice"),
        ({"customer": "globex", "allocations": [{"invoice": inv.pk}]}, "allocations[0].amount"),
        ({"customer": "globex", "allocations": "all"}, "allocations"),
        ({"customer": "globex", "surprise": 1}, "surprise"),
        ({"customer": "x" * 101}, "customer"),
    ]
    for body, field in cases:
        response = api.post(url, body, format="json")
        assert response.status_code == 400, (body, response.json())
        assert field in error_of(response)["fields"], (body, error_of(response))
    stranger = CustomerFactory(external_id="stranger")  # another billing entity
    response = api.post(url, {"customer": stranger.external_id}, format="json")
    assert response.status_code == 400 and "customer" in error_of(response)["fields"]
    assert api.post(f"{LINES}/999999/match", {"customer": "globex"}, format="json").status_code == 404
    bad_json = api.post(url, '{"customer": "globex", "customer": "x"}', content_type="application/json")
    assert bad_json.status_code == 400
    assert not Payment.objects.exists() and BankStatementLine.objects.get().status == "unmatched"


def test_ignore_and_put_back(api, fmt):
    post_file(api, upload("2024-01-20,3.21,USD,interest,"))
    line = BankStatementLine.objects.get()
    assert api.post(f"{LINES}/{line.pk}/ignore", {}, format="json").status_code == 400
    assert api.post(f"{LINES}/{line.pk}/ignore", {"reason": "r" * 251}, format="json").status_code == 400
    ignored = api.post(f"{LINES}/{line.pk}/ignore", {"reason": "Bank interest"}, format="json")
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
    assert "Bank interest" in ignored.json()["note"]
    assert api.get(LINES, {"status": "unmatched"}).json()["count"] == 0
    back = api.post(f"{LINES}/{line.pk}/unignore", format="json")
    assert back.status_code == 200 and back.json()["status"] == "unmatched"
    assert api.post(f"{LINES}/{line.pk}/unignore", format="json").status_code == 409
    assert api.get(LINES, {"status": "bogus"}).status_code == 400
