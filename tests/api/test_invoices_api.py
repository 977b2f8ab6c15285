"""/api/v1/invoices, upcoming invoices and tax rates: happy paths, bad input, auth, idempotency, lifecycle."""

import json
from datetime import date
from decimal import Decimal

import pytest
from django.utils import timezone
from djmoney.money import Money

from contracts.services.subscriptions import create_subscription
from invoicing.models import BilledPeriod, Invoice, InvoiceEvent, InvoiceLine, TaxRate
from tests.api.conftest import client_for, error_of
from tests.factories import CustomerFactory, PlanVersionFactory

pytestmark = pytest.mark.django_db
LINE = {"description": "Onboarding workshop", "unit_price": "1500.00", "quantity": "2"}


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, external_id="acme", timezone="UTC")


def create(api, customer, **body):
    return api.post("/api/v1/invoices", {"customer": customer.external_id, "lines": [LINE], **body}, format="json")


def test_create_list_and_detail(api, customer):
    response = create(api, customer, memo="Thanks!")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "draft" and body["kind"] == "one_off" and body["number"] is None
    assert body["subtotal"] == {"amount": "3000.00", "currency": "USD"}
    [line] = body["lines"]
    assert line["amount"] == {"amount": "3000.00", "currency": "USD"}
    assert line["quantity"] == "2" and line["unit_price"] == "1500"
    assert set(line) >= {"kind", "description", "period_start", "period_end", "discount", "tax", "explanation"}

    listed = api.get("/api/v1/invoices", {"customer": "acme", "status": "draft", "kind": "one_off"}).json()
    assert [row["id"] for row in listed["results"]] == [body["id"]]
    assert api.get("/api/v1/invoices", {"customer": "nobody"}).json()["count"] == 0
    assert api.get("/api/v1/invoices", {"status": "paid"}).json()["count"] == 0
    detail = api.get(f"/api/v1/invoices/{body['id']}").json()
    assert detail["memo"] == "Thanks!" and len(detail["lines"]) == 1


def test_finalize_twice_is_a_conflict_and_number_filter(api, customer):
    invoice_id = create(api, customer).json()["id"]
    first = api.post(f"/api/v1/invoices/{invoice_id}/finalize")
    assert first.status_code == 200 and first.json()["status"] == "finalized"
    number = first.json()["number"]
    second = api.post(f"/api/v1/invoices/{invoice_id}/finalize")
    assert second.status_code == 409
    assert error_of(second)["code"] == "invalid_transition"
    assert api.get("/api/v1/invoices", {"number": number}).json()["count"] == 1
    today = timezone.now().date().isoformat()
    assert api.get("/api/v1/invoices", {"issue_date_from": "2000-01-01", "issue_date_to": "2999-01-01"}).json()[
        "count"] == 1
    assert api.get("/api/v1/invoices", {"issue_date_from": "2999-01-01"}).json()["count"] == 0
    assert today


def test_void(api, customer):
    invoice_id = create(api, customer, finalize=True).json()["id"]
    missing = api.post(f"/api/v1/invoices/{invoice_id}/void", {}, format="json")
    assert missing.status_code == 400 and "reason" in error_of(missing)["fields"]
    blank = api.post(f"/api/v1/invoices/{invoice_id}/void", {"reason": ""}, format="json")
    assert blank.status_code == 400
    voided = api.post(f"/api/v1/invoices/{invoice_id}/void", {"reason": "Sent to the wrong entity"}, format="json")
    assert voided.status_code == 200
    assert voided.json()["status"] == "void" and voided.json()["void_reason"] == "Sent to the wrong entity"
    again = api.post(f"/api/v1/invoices/{invoice_id}/void", {"reason": "again"}, format="json")
    assert again.status_code == 409


def test_pdf(api, customer):
    invoice_id = create(api, customer).json()["id"]
    response = api.get(f"/api/v1/invoices/{invoice_id}/pdf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    accepted = api.get(f"/api/v1/invoices/{invoice_id}/pdf", HTTP_ACCEPT="application/pdf")
    assert accepted.status_code == 200 and accepted.content.startswith(b"%PDF")
    assert api.get("/api/v1/invoices/999999/pdf").status_code == 404


def test_add_and_remove_lines(api, customer):
    invoice_id = create(api, customer).json()["id"]
    added = api.post(f"/api/v1/invoices/{invoice_id}/lines", {"description": "Travel", "unit_price": "250.5"},
                     format="json")
    assert added.status_code == 201, added.json()
    assert added.json()["subtotal"]["amount"] == "3250.50"
    line_id = added.json()["lines"][-1]["id"]
    removed = api.delete(f"/api/v1/invoices/{invoice_id}/lines/{line_id}")
    assert removed.status_code == 200 and removed.json()["subtotal"]["amount"] == "3000.00"
    assert api.delete(f"/api/v1/invoices/{invoice_id}/lines/{line_id}").status_code == 404
    api.post(f"/api/v1/invoices/{invoice_id}/finalize")
    late = api.post(f"/api/v1/invoices/{invoice_id}/lines", LINE, format="json")
    assert late.status_code == 409


def test_explain(api, customer):
    invoice_id = create(api, customer).json()["id"]
    body = api.get(f"/api/v1/invoices/{invoice_id}/explain").json()
    [line] = body["lines"]
    assert line["formula"] == "1500.00 x 2 = 3000.00 USD"
    assert line["explanation"]["manual"] is True


def test_refresh_refuses_one_off(api, customer):
    invoice_id = create(api, customer).json()["id"]
    response = api.post(f"/api/v1/invoices/{invoice_id}/refresh")
    assert response.status_code == 400


def test_idempotent_create_replays(api, customer):
    body = {"customer": "acme", "lines": [LINE]}
    first = api.post("/api/v1/invoices", body, format="json", HTTP_IDEMPOTENCY_KEY="inv-1")
    second = api.post("/api/v1/invoices", body, format="json", HTTP_IDEMPOTENCY_KEY="inv-1")
    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert first.json() == second.json()
    assert Invoice.objects.count() == 1
    other = api.post("/api/v1/invoices", {**body, "memo": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="inv-1")
    assert other.status_code == 409


def test_auth(read_api, customer):
    assert client_for(None).get("/api/v1/invoices").status_code == 401
    assert read_api.get("/api/v1/invoices").status_code == 200
    assert create(read_api, customer).status_code == 403
    assert Invoice.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer": "nobody", "lines": [LINE]}, "customer"),
        ({"customer": "acme", "lines": []}, "lines"),
        ({"customer": "acme"}, "lines"),
        ({"customer": "acme", "lines": [{**LINE, "unit_price": "-1"}]}, "lines[0].unit_price"),
        ({"customer": "acme", "lines": [{**LINE, "quantity": "0"}]}, "lines[0].quantity"),
        ({"customer": "acme", "lines": [{**LINE, "unit_price": "abc"}]}, "lines[0].unit_price"),
        ({"customer": "acme", "lines": [{**LINE, "unit_price": True}]}, "lines[0].unit_price"),
        ({"customer": "acme", "lines": [{**LINE, "unit_price": "1e400"}]}, "lines[0].unit_price"),
        ({"customer": "acme", "lines": [{**LINE, "unit_price": "0.0000000000001"}]}, "lines[0].unit_price"),
        ({"customer": "acme", "lines": [{**LINE, "description": "x" * 301}]}, "lines[0].description"),
        ({"customer": "acme", "lines": [{**LINE, "colour": "red"}]}, "lines[0].colour"),
        ({"customer": "acme", "lines": [LINE], "currency": "ZZZ"}, "currency"),
        ({"customer": "acme", "lines": [LINE], "finalize": "maybe"}, "finalize"),
        ({"customer": ["acme"], "lines": [LINE]}, "customer"),
        ({"customer": "acme", "lines": "everything"}, "lines"),
    ],
)
def test_malformed_create(api, customer, body, field):
    response = api.post("/api/v1/invoices", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in error_of(response)["fields"], error_of(response)
    assert Invoice.objects.count() == 0


def test_too_many_lines(api, customer):
    body = {"customer": "acme", "lines": [{"description": "x", "unit_price": "1"}] * 10_001}
    response = api.post("/api/v1/invoices", body, format="json")
    assert response.status_code in (400, 413)
    assert Invoice.objects.count() == 0


def test_bad_json_and_numbers(api, customer):
    response = api.post("/api/v1/invoices", data="{not json", content_type="application/json")
    assert response.status_code == 400 and error_of(response)["code"] == "parse_error"
    raw = '{"customer": "acme", "lines": [{"description": "x", "unit_price": NaN}]}'
    assert api.post("/api/v1/invoices", data=raw, content_type="application/json").status_code == 400
    # A JSON number that looks like a float is read exactly, never through a binary float.
    exact = '{"customer": "acme", "lines": [{"description": "x", "unit_price": 0.1, "quantity": 3}]}'
    response = api.post("/api/v1/invoices", data=exact, content_type="application/json")
    assert response.status_code == 201
    assert response.json()["subtotal"]["amount"] == "0.30"


def test_hostile_strings_are_kept_as_text(api, customer):
    hostile = "<script>alert(1)</script>'; DROP TABLE invoicing_invoice; -- ☃ \u202e"
    response = api.post("/api/v1/invoices", {"customer": "acme", "lines": [{**LINE, "description": hostile}],
                                             "memo": hostile}, format="json")
    assert response.status_code == 201
    assert response.json()["lines"][0]["description"] == hostile.strip()
    nul = api.post("/api/v1/invoices", {"customer": "acme", "lines": [{**LINE, "description": "a\u0000b"}]},
                   format="json")
    assert nul.status_code == 400
    assert api.get("/api/v1/invoices/abc").status_code == 404


def test_upcoming_invoice_writes_nothing(api, customer, actor):
    version = PlanVersionFactory(base_fee=Money("100.00", "USD"))
    now = timezone.now()
    sub = create_subscription(customer=customer, plan_version=version, actor=actor, now=now,
                              start_date=now.date().replace(day=1), external_id="sub-acme")
    models = (Invoice, InvoiceLine, BilledPeriod, InvoiceEvent)
    before = [m.objects.count() for m in models]
    response = api.get("/api/v1/customers/acme/upcoming-invoice")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["customer"] == "acme"
    [invoice] = body["invoices"]
    assert invoice["currency"] == "USD" and invoice["total"]["currency"] == "USD"
    assert any(line["kind"] == "subscription_fee" for line in invoice["lines"])
    by_sub = api.get(f"/api/v1/subscriptions/{sub.external_id}/upcoming-invoice")
    assert by_sub.status_code == 200
    assert [m.objects.count() for m in models] == before
    assert api.get("/api/v1/customers/nobody/upcoming-invoice").status_code == 404


def test_tax_rates_crud(api, read_api):
    body = {"name": "NY sales tax", "country": "us", "region": "NY", "percent": "8.875"}
    created = api.post("/api/v1/tax-rates", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["percent"] == "8.875" and created.json()["country"] == "US"
    rate_id = created.json()["id"]
    assert read_api.post("/api/v1/tax-rates", body, format="json").status_code == 403
    assert api.get("/api/v1/tax-rates", {"country": "US"}).json()["count"] == 1
    patched = api.patch(f"/api/v1/tax-rates/{rate_id}", {"percent": "9"}, format="json")
    assert patched.status_code == 200 and patched.json()["percent"] == "9"
    for bad in ({"percent": "101"}, {"percent": "-1"}, {"country": "XX"},
                {"valid_from": "2024-02-01", "valid_to": "2024-01-01"}):
        assert api.patch(f"/api/v1/tax-rates/{rate_id}", bad, format="json").status_code == 400, bad
    assert api.delete(f"/api/v1/tax-rates/{rate_id}").status_code == 204
    assert not TaxRate.objects.exists()


def test_json_body_is_exact_for_replay(api, customer):
    # The replayed body is the stored bytes: identical JSON, decimals as strings.
    response = create(api, customer, finalize=True)
    text = json.dumps(response.json())
    assert '"amount": "3000.00"' in text
    assert Decimal(response.json()["total"]["amount"]) == Decimal("3000.00")
    assert date.fromisoformat(response.json()["issue_date"])


def test_recompute(api, customer):
    invoice_id = create(api, customer, finalize=True).json()["id"]
    response = api.get(f"/api/v1/invoices/{invoice_id}/recompute")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["matches"] is True and body["differences"] == []
    assert isinstance(body["lines"], list)
