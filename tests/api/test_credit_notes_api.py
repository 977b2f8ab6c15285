"""/api/v1/credit-notes: issue (lines, amount, full), list with filters, detail, PDF; bad and hostile input,
authentication, scopes and Idempotency-Key."""

from datetime import date, timedelta
from decimal import Decimal
from io import BytesIO

import pytest
from pypdf import PdfReader

from billing.actors import Actor
from invoicing.models import CreditNote, DocumentSequence, Invoice, TaxRate
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.payments import credit_balance, record_payment
from tests.api.conftest import client_for, error_of, make_key, today_utc
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
D = Decimal
URL = "/api/v1/credit-notes"
ACTOR = Actor.system("tests")


def eur(amount: str) -> dict:
    return {"amount": amount, "currency": "EUR"}


@pytest.fixture
def customer(entity):
    TaxRate.objects.create(name="VAT FR", country="FR", percent=D("20"))
    return CustomerFactory(billing_entity=entity, external_id="acme", country="FR", kind="individual",
                           currency="EUR", timezone="UTC")


def invoice_for(customer, now, *lines) -> Invoice:
    lines = lines or (ManualLine("Platform fee", D("100.00")), ManualLine("Seats", D("15.00"), D("10")))
    return create_one_off_invoice(customer, list(lines), actor=ACTOR, now=now, finalize=True)


@pytest.fixture
def invoice(customer, now) -> Invoice:
    invoice = invoice_for(customer, now)
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (D("250.00"), D("50.00"), D("300.00"))
    return invoice


def issue(api, credited, **body):
    return api.post(URL, {"invoice": credited.pk, "reason": "billing_error", **body}, format="json")


def test_issue_by_lines_then_read_it_back(api, invoice):
    platform, seats = invoice.lines.order_by("position")
    response = issue(api, invoice, memo="Seats billed twice", lines=[
        {"invoice_line": platform.pk, "amount": eur("40.00")}, {"invoice_line": seats.pk, "quantity": "2"},
    ])
    assert response.status_code == 201, response.json()
    body = response.json()
    # 40.00 + 2 x 15.00 = 70.00 net; VAT round(50.00 x 70 / 250) = 14.00.
    assert body["number"] == f"{invoice.billing_entity.credit_note_prefix}-000001"
    assert (body["subtotal"], body["tax_total"], body["total"]) == (eur("70.00"), eur("14.00"), eur("84.00"))
    assert body["invoice"] == invoice.pk and body["invoice_number"] == invoice.number
    assert body["customer"] == "acme" and body["reason"] == "billing_error" and body["memo"] == "Seats billed twice"
    assert body["settlement"] == "credit_balance" and body["applied_to_invoice"] == eur("84.00")
    assert [(line["description"], line["amount"], line["tax"], line["quantity"]) for line in body["lines"]] == [
        ("Platform fee", eur("40.00"), eur("8.00"), None), ("Seats", eur("30.00"), eur("6.00"), "2")]
    assert body["tax_breakdown"][0]["tax_amount"] == "14.00"
    assert api.get(f"{URL}/{body['id']}").json() == body
    invoice_body = api.get(f"/api/v1/invoices/{invoice.pk}").json()
    assert invoice_body["amount_due"] == eur("216.00") and invoice_body["credit_notes_total"] == eur("84.00")


def test_issue_by_amount_and_in_full(api, invoice):
    by_amount = issue(api, invoice, amount=eur("100.00"))
    assert by_amount.status_code == 201 and by_amount.json()["total"] == eur("120.00")
    full = issue(api, invoice, full=True, reason="duplicate")
    assert full.status_code == 201 and full.json()["total"] == eur("180.00")
    again = issue(api, invoice, full=True)
    assert again.status_code == 400 and "invoice" in error_of(again)["fields"]


def test_paid_invoice_refund_and_offset(api, invoice, customer, now):
    record_payment(customer=customer, amount=D("300.00"), currency="EUR", method="bank_transfer",
                   received_on=date(2024, 1, 20), actor=ACTOR, now=now)
    refunded = issue(api, invoice, amount=eur("10.00"), settlement="refund")
    assert refunded.status_code == 201 and refunded.json()["refunded_amount"] == eur("12.00")
    other = invoice_for(customer, now, ManualLine("Add-on", D("50.00")))  # owes 60.00
    offset = issue(api, invoice, amount=eur("20.00"), settlement="offset", offset_invoice=other.pk)
    assert offset.status_code == 201 and offset.json()["offset_amount"] == eur("24.00")
    assert Invoice.objects.get(pk=other.pk).amount_due == D("36.00")
    assert credit_balance(customer, "EUR") == 0


def test_list_filters(api, invoice, customer, now):
    first = issue(api, invoice, amount=eur("10.00")).json()
    other = invoice_for(customer, now, ManualLine("Add-on", D("50.00")))
    second = issue(api, other, full=True, reason="goodwill").json()
    CustomerFactory(billing_entity=invoice.billing_entity, external_id="other")

    def ids(**query):
        response = api.get(URL, query)
        assert response.status_code == 200, response.json()
        return sorted(row["id"] for row in response.json()["results"])

    assert ids() == sorted([first["id"], second["id"]])
    assert ids(customer="acme") == sorted([first["id"], second["id"]])
    assert ids(customer="other") == [] and ids(customer="nobody") == []
    assert ids(invoice=invoice.pk) == [first["id"]] and ids(invoice=other.pk) == [second["id"]]
    assert ids(reason="goodwill") == [second["id"]]
    today = today_utc().date()
    assert ids(issue_date_from=today.isoformat(), issue_date_to=today.isoformat()) == sorted([first["id"],
                                                                                              second["id"]])
    assert ids(issue_date_from=(today + timedelta(days=1)).isoformat()) == []
    assert ids(number=second["number"]) == [second["id"]]
    for bad in ({"invoice": "abc"}, {"issue_date_from": "yesterday"}, {"reason": "because"}, {"customer": "a\x00b"}):
        assert api.get(URL, bad).status_code == 400, bad


def test_pdf(api, invoice):
    note_id = issue(api, invoice, amount=eur("10.00")).json()["id"]
    response = api.get(f"{URL}/{note_id}/pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(BytesIO(response.content)).pages)
    assert "CREDIT NOTE" in text and CreditNote.objects.get().number in text
    assert api.get(f"{URL}/999999/pdf").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"amount": eur("0")}, "amount"),
    ({"amount": eur("-5.00")}, "amount.amount"),
    ({"amount": eur("250.01")}, "amount"),
    ({"amount": eur("10.001")}, "amount"),
    ({"amount": eur("1e30")}, "amount.amount"),
    ({"amount": eur("NaN")}, "amount.amount"),
    ({"amount": "10.00"}, "amount"),
    ({"amount": 10.5}, "amount"),
    ({"amount": {"amount": "10.00", "currency": "USD"}}, "currency"),
    ({"amount": {"amount": "10.00", "currency": "XXX1"}}, "amount.currency"),
    ({"amount": eur("10.00"), "currency": "USD"}, "currency"),
    ({"amount": eur("10.00"), "full": True}, "lines"),
    ({}, "lines"),
    ({"lines": []}, "lines"),
    ({"lines": "all"}, "lines"),
    ({"lines": [{"invoice_line": 0, "amount": eur("1.00")}]}, "lines[0].invoice_line"),
    ({"lines": [{"invoice_line": 987654321, "amount": eur("1.00")}]}, "lines[0].invoice_line"),
    ({"lines": [{"invoice_line": "LINE", "amount": eur("1.00")}]}, "lines[0].invoice_line"),
    ({"lines": [{"invoice_line": 1}]}, "lines[0]"),
    ({"lines": [{"invoice_line": 1, "quantity": "1", "amount": eur("1.00")}]}, "lines[0]"),
    ({"lines": [{"invoice_line": 1, "quantity": "1", "colour": "red"}]}, "lines[0].colour"),
    ({"amount": eur("10.00"), "reason": "because"}, "reason"),
    ({"amount": eur("10.00"), "reason": None}, "reason"),
    ({"amount": eur("10.00"), "settlement": "cash"}, "settlement"),
    ({"amount": eur("10.00"), "settlement": "offset"}, "offset_invoice"),
    ({"amount": eur("10.00"), "offset_invoice": -1}, "offset_invoice"),
    ({"amount": eur("10.00"), "memo": "m" * 5001}, "memo"),
    ({"amount": eur("10.00"), "invoice": 987654321}, "invoice"),
    ({"amount": eur("10.00"), "invoice": "1; DROP TABLE invoicing_creditnote"}, "invoice"),
    ({"amount": eur("10.00"), "invoice": None}, "invoice"),
    ({"amount": eur("10.00"), "admin": True}, "admin"),
])
def test_bad_input_is_refused_with_its_field_and_writes_nothing(api, invoice, body, field):
    line_ids = list(invoice.lines.order_by("position").values_list("pk", flat=True))
    for line in body.get("lines", []) if isinstance(body.get("lines"), list) else []:
        if line.get("invoice_line") == 1:
            line["invoice_line"] = line_ids[1]
    response = issue(api, invoice, **body)
    assert response.status_code == 400, response.json()
    fields = error_of(response)["fields"]
    assert field in fields, fields
    assert not CreditNote.objects.exists()
    assert not DocumentSequence.objects.filter(kind="credit_note").exists()


def test_quantity_and_line_amount_refusals(api, invoice):
    seats = invoice.lines.order_by("position").last()
    for line, field in [({"quantity": "0"}, "lines[0].quantity"), ({"quantity": "-1"}, "lines[0].quantity"),
                        ({"quantity": "11"}, "lines[0].quantity"), ({"amount": eur("150.01")}, "lines[0].amount"),
                        ({"amount": eur("0")}, "lines[0].amount"), ({"amount": eur("-1")}, "lines[0].amount.amount")]:
        response = issue(api, invoice, lines=[{"invoice_line": seats.pk, **line}])
        assert response.status_code == 400 and field in error_of(response)["fields"], (line, response.json())
    assert not CreditNote.objects.exists()


def test_draft_and_void_invoices_are_conflicts(api, customer, now):
    draft = create_one_off_invoice(customer, [ManualLine("Setup", D("10.00"))], actor=ACTOR, now=now)
    response = issue(api, draft, amount=eur("1.00"))
    assert response.status_code == 409 and error_of(response)["code"] == "invalid_transition"


def test_oversized_and_malformed_bodies(api, invoice):
    huge = {"invoice": invoice.pk, "reason": "other", "lines": [{"invoice_line": 1, "quantity": "1"}] * 10_001}
    assert api.post(URL, huge, format="json").status_code in (400, 413)
    bad_json = api.post(URL, data="{not json", content_type="application/json")
    assert bad_json.status_code == 400
    assert api.post(URL, data="<xml/>", content_type="application/xml").status_code == 415
    assert not CreditNote.objects.exists()


def test_authentication_and_scopes(invoice, read_api, api):
    assert client_for(None).get(URL).status_code == 401
    assert client_for(None).post(URL, {"invoice": invoice.pk}, format="json").status_code == 401
    assert issue(read_api, invoice, amount=eur("10.00")).status_code == 403
    assert read_api.get(URL).status_code == 200
    assert not CreditNote.objects.exists()
    assert api.delete(f"{URL}/1").status_code == 405


def test_idempotency_key_replays_the_first_note(api, invoice):
    headers = {"HTTP_IDEMPOTENCY_KEY": "cn-req-1"}
    body = {"invoice": invoice.pk, "reason": "other", "amount": eur("10.00")}
    first = api.post(URL, body, format="json", **headers)
    again = api.post(URL, body, format="json", **headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    changed = api.post(URL, {**body, "amount": eur("20.00")}, format="json", **headers)
    assert changed.status_code == 409
    # Another client's identical key is its own request, not a replay of this one.
    other = client_for(make_key(name="crm")).post(URL, body, format="json", **headers)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert CreditNote.objects.count() == 2
