"""Payments, allocations, refunds and the customer credit balance over the API: figures worked by hand, and every
kind of hostile input refused with its field and nothing written."""

import json
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.actors import Actor
from billing.api.models import IdempotencyRecord
from invoicing.models import Allocation, CustomerBalance, CustomerBalanceTransaction, Invoice, Payment, Refund
from invoicing.services.documents import ManualLine, create_one_off_invoice, void_invoice
from tests.api.conftest import client_for, error_of, make_key
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")
PAYMENTS = "/api/v1/payments"
BALANCE = "/api/v1/customers/acme/credit-balance"


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, external_id="acme", timezone="UTC")


def invoice_of(customer, amount: str, *, finalize: bool = True, currency: str = "USD") -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Services", Decimal(amount))], currency=currency,
                                  actor=ACTOR, now=timezone.now(), finalize=finalize)


@pytest.fixture
def invoices(customer) -> list[Invoice]:
    """Three open invoices, oldest first: 100.00, 250.00 and 40.00 USD."""
    return [invoice_of(customer, "100.00"), invoice_of(customer, "250.00"), invoice_of(customer, "40.00")]


def money(amount: str, currency: str = "USD") -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def due(invoice: Invoice) -> tuple[str, Decimal]:
    invoice.refresh_from_db()
    return invoice.status, invoice.amount_due


def pay(api, amount: str, **extra):
    body = {"customer": "acme", "amount": amount, "currency": "USD", "method": "bank_transfer",
            "received_on": "2024-03-01", "reference": "WIRE 1", **extra}
    return api.post(PAYMENTS, body, format="json")


def record(api, amount: str, **extra) -> dict:
    body = {"customer": "acme", "amount": amount, "currency": "USD", "method": "bank_transfer",
            "received_on": "2024-03-01", "reference": "WIRE 1", **extra}
    response = api.post(PAYMENTS, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# --- recording payments ---------------------------------------------------------------------------------------


def test_one_payment_across_invoices_with_the_rest_to_the_credit_balance(api, customer, invoices):
    inv1, inv2, inv3 = invoices
    body = record(api, "300.00", allocations=[{"invoice": inv1.pk, "amount": "100.00"},
                                              {"invoice": inv2.pk, "amount": "150"}])
    assert body["amount"] == money("300.00") and body["status"] == "succeeded" and body["method"] == "bank_transfer"
    assert body["customer"] == "acme" and body["received_on"] == "2024-03-01" and body["reference"] == "WIRE 1"
    assert [(a["invoice"], a["kind"], a["amount"]) for a in body["allocations"]] == [
        (inv1.pk, "payment", money("100.00")), (inv2.pk, "payment", money("150.00"))]
    assert body["allocated"] == money("250.00")
    assert body["credit_remaining"] == money("50.00")
    assert body["refundable"] == money("300.00")
    assert due(inv1) == ("paid", Decimal("0.00"))
    assert due(inv2) == ("finalized", Decimal("100.00"))
    assert due(inv3) == ("finalized", Decimal("40.00"))

    balance = api.get(BALANCE).json()
    assert balance["customer"] == "acme"
    [usd] = balance["balances"]
    assert usd["currency"] == "USD" and usd["balance"] == money("50.00")
    assert [(t["kind"], t["amount"], t["payment"]) for t in usd["transactions"]] == [
        ("overpayment", money("50.00"), body["id"])]

    detail = api.get(f"{PAYMENTS}/{body['id']}").json()
    assert detail == body


def test_without_allocations_the_oldest_invoices_are_paid_first(api, customer, invoices):
    inv1, inv2, inv3 = invoices
    body = record(api, "120.00")
    assert [(a["invoice"], a["amount"]["amount"]) for a in body["allocations"]] == [(inv1.pk, "100.00"),
                                                                                 (inv2.pk, "20.00")]
    assert body["credit_remaining"] == money("0.00")
    assert due(inv1) == ("paid", Decimal("0.00")) and due(inv2) == ("finalized", Decimal("230.00"))
    assert due(inv3) == ("finalized", Decimal("40.00"))
    partial = record(api, "15.5", method="check", reference="CHK 1042")
    assert [(a["invoice"], a["amount"]["amount"]) for a in partial["allocations"]] == [(inv2.pk, "15.50")]
    assert due(inv2) == ("finalized", Decimal("214.50"))
    kept = record(api, "10.00", auto_allocate=False)
    assert kept["allocations"] == [] and kept["credit_remaining"] == money("10.00")
    assert CustomerBalance.objects.get(customer=customer).balance == Decimal("10.00")


def test_a_received_on_defaults_to_the_customers_today(api, customer):
    body = api.post(PAYMENTS, {"customer": "acme", "amount": "5", "currency": "USD", "method": "other"},
                    format="json").json()
    assert body["received_on"] == timezone.now().date().isoformat()
    assert body["reference"] == "" and body["credit_remaining"] == money("5.00")


def test_list_filters(api, customer, invoices):
    first = record(api, "10.00", method="check", received_on="2024-02-01")
    second = record(api, "20.00", received_on="2024-03-05")
    other = CustomerFactory(billing_entity=customer.billing_entity, external_id="other", timezone="UTC")
    api.post(PAYMENTS, {"customer": "other", "amount": "7", "currency": "USD", "method": "check",
                        "received_on": "2024-03-05"}, format="json")

    def ids(**query) -> list[int]:
        response = api.get(PAYMENTS, query)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids(customer="acme") == [second["id"], first["id"]]
    assert ids(customer="acme", method="check") == [first["id"]]
    assert ids(customer="acme", received_on_from="2024-03-01", received_on_to="2024-03-31") == [second["id"]]
    assert ids(customer="acme", status="reversed") == []
    assert len(ids(status="succeeded")) == 3 and ids(customer=other.external_id, method="bank_transfer") == []
    assert api.get(PAYMENTS, {"received_on_from": "yesterday"}).status_code == 400
    assert api.get(PAYMENTS, {"status": "lost"}).status_code == 400


# --- hostile input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": "-5.00"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "0.00"}, "amount"),
        ({"amount": "10.001"}, "amount"),
        ({"amount": "ten"}, "amount"),
        ({"amount": ""}, "amount"),
        ({"amount": "1e400"}, "amount"),
        ({"amount": "1000000000000000"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": None}, "amount"),
        ({"amount": ["5"]}, "amount"),
        ({"currency": "ZZZ"}, "currency"),
        ({"currency": "JPY", "amount": "100.5"}, "amount"),
        ({"method": "crypto"}, "method"),
        ({"method": "credit_balance"}, "method"),
        ({"customer": "nobody"}, "customer"),
        ({"customer": {"id": 1}}, "customer"),
        ({"received_on": "2024-02-30"}, "received_on"),
        ({"reference": "x" * 201}, "reference"),
        ({"memo": "x" * 2001}, "memo"),
        ({"auto_allocate": "maybe"}, "auto_allocate"),
        ({"amount_paid": "5"}, "amount_paid"),
        ({"allocations": "all"}, "allocations"),
        ({"allocations": [{"invoice": "first", "amount": "5"}]}, "allocations[0].invoice"),
        ({"allocations": [{"invoice": 1}]}, "allocations[0].amount"),
        ({"allocations": [{"invoice": 1, "amount": "5", "extra": 1}]}, "allocations[0].extra"),
        ({"allocations": [{"invoice": 10**30, "amount": "5"}]}, "allocations[0].invoice"),
        ({"allocations": [{"invoice": 1, "amount": "5"}] * 201}, "allocations"),
    ],
)
def test_malformed_payments_are_refused_with_their_field(api, customer, invoices, changes, field):
    body = {"customer": "acme", "amount": "50.00", "currency": "USD", "method": "bank_transfer",
            "received_on": "2024-03-01", **changes}
    response = api.post(PAYMENTS, body, format="json")
    assert response.status_code == 400, response.json()
    assert field in error_of(response)["fields"], error_of(response)
    assert not Payment.objects.exists() and not Allocation.objects.exists()
    assert not CustomerBalanceTransaction.objects.exists()


def test_missing_fields(api, customer):
    response = api.post(PAYMENTS, {}, format="json")
    assert response.status_code == 400
    assert {"customer", "amount", "currency", "method"} <= set(error_of(response)["fields"])


def test_allocations_that_break_the_rules(api, customer, invoices):
    inv1, _, inv3 = invoices
    other = CustomerFactory(billing_entity=customer.billing_entity, external_id="other", timezone="UTC")
    foreign = invoice_of(other, "30.00")
    draft = invoice_of(customer, "20.00", finalize=False)
    voided = void_invoice(invoice_of(customer, "20.00"), reason="Wrong", actor=ACTOR, now=timezone.now())
    euro = invoice_of(customer, "20.00", currency="EUR")
    cases = [
        # over-allocation: more than the payment, more than the invoice owes
        ("50.00", [(inv1.pk, "40.00"), (inv3.pk, "20.00")], "allocations", "add up to more"),
        ("500.00", [(inv1.pk, "100.01")], "allocations[0].amount", "still owes"),
        ("50.00", [(foreign.pk, "30.00")], "allocations[0].invoice", "not this customer's"),
        ("50.00", [(draft.pk, "20.00")], "allocations[0].invoice", "draft"),
        ("50.00", [(voided.pk, "20.00")], "allocations[0].invoice", "void"),
        ("50.00", [(euro.pk, "20.00")], "allocations[0].invoice", "Currency mismatch"),
        ("50.00", [(999_999, "20.00")], "allocations[0].invoice", "No invoice"),
        ("50.00", [(inv1.pk, "10.00"), (inv1.pk, "10.00")], "allocations[1].invoice", "twice"),
        ("50.00", [(inv1.pk, "-10.00")], "allocations[0].amount", "greater than zero"),
        ("50.00", [(inv1.pk, "0")], "allocations[0].amount", "greater than zero"),
        ("50.00", [(inv1.pk, "1.005")], "allocations[0].amount", "decimal places"),
    ]
    for amount, rows, field, words in cases:
        response = pay(api, amount, allocations=[{"invoice": pk, "amount": a} for pk, a in rows])
        assert response.status_code == 400, (rows, response.json())
        error = error_of(response)
        assert words in " ".join(error["fields"].get(field, [])), (rows, error)
    assert not Payment.objects.exists() and not Allocation.objects.filter(kind="payment").exists()
    assert [due(inv) for inv in invoices] == [("finalized", Decimal("100.00")), ("finalized", Decimal("250.00")),
                                              ("finalized", Decimal("40.00"))]
    # The same currency mismatch, the other way round: a EUR payment for a USD invoice.
    response = pay(api, "10.00", currency="EUR", allocations=[{"invoice": inv1.pk, "amount": "10.00"}])
    assert "Currency mismatch" in error_of(response)["fields"]["allocations[0].invoice"][0]


def test_bad_json_oversized_and_nul(api, customer, settings):
    assert error_of(api.post(PAYMENTS, data="{not json", content_type="application/json"))["code"] == "parse_error"
    nan = '{"customer": "acme", "amount": NaN, "currency": "USD", "method": "check"}'
    assert api.post(PAYMENTS, data=nan, content_type="application/json").status_code == 400
    dup = '{"customer": "acme", "amount": "1", "amount": "1000", "currency": "USD", "method": "check"}'
    assert api.post(PAYMENTS, data=dup, content_type="application/json").status_code == 400
    nul = {"customer": "acme", "amount": "1", "currency": "USD", "method": "check", "reference": "a\x00b"}
    assert api.post(PAYMENTS, nul, format="json").status_code == 400
    assert api.post(PAYMENTS, data="customer=acme", content_type="application/x-www-form-urlencoded"
                    ).status_code == 415
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    big = json.dumps({"customer": "acme", "amount": "1", "currency": "USD", "method": "check", "memo": "x" * 5_000})
    response = api.post(PAYMENTS, data=big, content_type="application/json")
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"
    # A JSON number is read exactly, never through a binary float.
    exact = '{"customer": "acme", "amount": 0.1, "currency": "USD", "method": "check"}'
    assert api.post(PAYMENTS, data=exact, content_type="application/json").json()["amount"] == money("0.10")
    assert Payment.objects.count() == 1


# --- double submission ----------------------------------------------------------------------------------------


def test_double_submission_with_one_key_records_one_payment(api, customer, invoices):
    body = {"customer": "acme", "amount": "130.00", "currency": "USD", "method": "bank_transfer",
            "received_on": "2024-03-01"}
    first = api.post(PAYMENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="wire-77")
    again = api.post(PAYMENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="wire-77")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert Payment.objects.count() == 1
    assert due(invoices[0]) == ("paid", Decimal("0.00")) and due(invoices[1]) == ("finalized", Decimal("220.00"))
    payment = Payment.objects.get()
    assert payment.idempotency_key.startswith("api:") and payment.idempotency_key.endswith(":wire-77")

    other_body = api.post(PAYMENTS, {**body, "amount": "131.00"}, format="json", HTTP_IDEMPOTENCY_KEY="wire-77")
    assert other_body.status_code == 409 and error_of(other_body)["code"] == "idempotency_key_reused"

    # After the stored response expired, the key stored on the payment still finds it: no second payment...
    IdempotencyRecord.objects.all().delete()
    late = api.post(PAYMENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="wire-77")
    assert late.status_code == 201 and late.json()["id"] == first.json()["id"]
    IdempotencyRecord.objects.all().delete()
    # ... and a different payment under it is refused rather than answered with the first one.
    changed = api.post(PAYMENTS, {**body, "amount": "5.00"}, format="json", HTTP_IDEMPOTENCY_KEY="wire-77")
    assert changed.status_code == 409
    assert Payment.objects.count() == 1 and due(invoices[1]) == ("finalized", Decimal("220.00"))


def test_keys_are_scoped_to_the_api_key_that_sent_them(api, customer, invoices):
    other_client = client_for(make_key(name="erp"))
    body = {"customer": "acme", "amount": "10.00", "currency": "USD", "method": "check"}
    first = api.post(PAYMENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="1")
    second = other_client.post(PAYMENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="1")
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    long_key = "k" * 255
    assert api.post(PAYMENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=long_key).status_code == 201
    assert len(Payment.objects.latest("id").idempotency_key) <= 200
    assert api.post(PAYMENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256).status_code == 400


# --- allocate, reverse, refund --------------------------------------------------------------------------------


def test_allocate_the_payments_credit(api, customer, invoices):
    inv1, inv2, inv3 = invoices
    payment = record(api, "200.00", auto_allocate=False)
    url = f"{PAYMENTS}/{payment['id']}/allocate"
    body = api.post(url, {"allocations": [{"invoice": inv1.pk, "amount": "100.00"},
                                          {"invoice": inv3.pk, "amount": "40.00"}]}, format="json")
    assert body.status_code == 200, body.json()
    body = body.json()
    assert [(a["invoice"], a["amount"]["amount"]) for a in body["allocations"]] == [(inv1.pk, "100.00"),
                                                                                 (inv3.pk, "40.00")]
    assert body["allocated"] == money("140.00") and body["credit_remaining"] == money("60.00")
    assert due(inv1) == ("paid", Decimal("0.00")) and due(inv3) == ("paid", Decimal("0.00"))
    assert CustomerBalance.objects.get().balance == Decimal("60.00")

    over = api.post(url, {"allocations": [{"invoice": inv2.pk, "amount": "60.01"}]}, format="json")
    assert over.status_code == 400 and "allocations" in error_of(over)["fields"]
    paid = api.post(url, {"allocations": [{"invoice": inv1.pk, "amount": "1.00"}]}, format="json")
    assert paid.status_code == 400 and "allocations[0].invoice" in error_of(paid)["fields"]
    for bad in ({}, {"allocations": []}, {"allocations": [{"invoice": inv2.pk, "amount": "-1"}]}):
        assert api.post(url, bad, format="json").status_code == 400, bad
    assert api.post(f"{PAYMENTS}/999999/allocate", {"allocations": [{"invoice": inv2.pk, "amount": "1"}]},
                    format="json").status_code == 404
    assert CustomerBalance.objects.get().balance == Decimal("60.00") and due(inv2)[1] == Decimal("250.00")


def test_reverse_a_payment_recorded_by_mistake(api, customer, invoices):
    inv1, inv2, _ = invoices
    payment = record(api, "300.00", allocations=[{"invoice": inv1.pk, "amount": "100.00"},
                                                 {"invoice": inv2.pk, "amount": "150.00"}])
    url = f"{PAYMENTS}/{payment['id']}/reverse"
    assert api.post(url, {"reason": " "}, format="json").status_code == 400
    assert api.post(url, {}, format="json").status_code == 400
    assert api.post(url, {"reason": "x" * 301}, format="json").status_code == 400
    response = api.post(url, {"reason": "Booked on the wrong customer"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "reversed" and body["reversal_reason"] == "Booked on the wrong customer"
    assert body["reversed_at"] is not None
    assert [(a["invoice"], a["kind"], a["amount"]["amount"]) for a in body["allocations"]] == [
        (inv1.pk, "payment", "100.00"), (inv2.pk, "payment", "150.00"),
        (inv1.pk, "payment_reversal", "-100.00"), (inv2.pk, "payment_reversal", "-150.00")]
    assert body["allocated"] == money("0.00") and body["credit_remaining"] == money("0.00")
    assert body["refundable"] == money("0.00")
    assert due(inv1) == ("finalized", Decimal("100.00")) and due(inv2) == ("finalized", Decimal("250.00"))
    assert CustomerBalance.objects.get().balance == Decimal("0.00")
    again = api.post(url, {"reason": "Twice"}, format="json")
    assert again.status_code == 409 and error_of(again)["code"] == "invalid_transition"
    # The payment is still there: a reversal is an entry, never a delete.
    assert Payment.objects.filter(pk=payment["id"], amount=Decimal("300.00")).exists()

    allocations = api.get(f"/api/v1/invoices/{inv1.pk}/allocations").json()
    assert allocations["amount_paid"] == money("0.00") and allocations["amount_due"] == money("100.00")
    assert [(a["kind"], a["amount"]["amount"]) for a in allocations["allocations"]] == [
        ("payment", "100.00"), ("payment_reversal", "-100.00")]


def test_refund_a_payment_from_its_credit_then_its_latest_invoice(api, customer, invoices):
    inv1, inv2, _ = invoices
    payment = record(api, "300.00", allocations=[{"invoice": inv1.pk, "amount": "100.00"},
                                                 {"invoice": inv2.pk, "amount": "150.00"}])
    url = f"{PAYMENTS}/{payment['id']}/refund"
    response = api.post(url, {"amount": "80.00", "reason": "Customer asked"}, format="json",
                        HTTP_IDEMPOTENCY_KEY="refund-1")
    assert response.status_code == 201, response.json()
    refund = response.json()
    assert refund["amount"] == money("80.00") and refund["status"] == "succeeded" and refund["source"] == "payment"
    assert refund["payment"] == payment["id"] and refund["customer"] == "acme"
    # 50.00 came out of the credit balance, the other 30.00 off the latest invoice, which is due again.
    assert [(a["invoice"], a["kind"], a["amount"]["amount"]) for a in refund["allocations"]] == [
        (inv2.pk, "refund", "-30.00")]
    assert due(inv2) == ("finalized", Decimal("130.00")) and due(inv1) == ("paid", Decimal("0.00"))
    assert CustomerBalance.objects.get().balance == Decimal("0.00")
    replay = api.post(url, {"amount": "80.00", "reason": "Customer asked"}, format="json",
                      HTTP_IDEMPOTENCY_KEY="refund-1")
    assert replay.json() == refund and Refund.objects.count() == 1

    detail = api.get(f"{PAYMENTS}/{payment['id']}").json()
    assert detail["refundable"] == money("220.00") and [r["id"] for r in detail["refunds"]] == [refund["id"]]
    for bad, field in [({"amount": "220.01", "reason": "x"}, "amount"), ({"amount": "0", "reason": "x"}, "amount"),
                       ({"amount": "-1", "reason": "x"}, "amount"), ({"amount": "1.001", "reason": "x"}, "amount"),
                       ({"amount": "5", "reason": ""}, "reason"), ({"amount": "5"}, "reason")]:
        response = api.post(url, bad, format="json")
        assert response.status_code == 400 and field in error_of(response)["fields"], bad
    assert Refund.objects.count() == 1

    listed = api.get("/api/v1/refunds", {"customer": "acme", "source": "payment"}).json()
    assert [r["id"] for r in listed["results"]] == [refund["id"]]
    assert api.get("/api/v1/refunds", {"payment": payment["id"] + 1}).json()["results"] == []
    assert api.get(f"/api/v1/refunds/{refund['id']}").json() == refund
    # A refunded payment cannot also be reversed.
    assert api.post(f"{PAYMENTS}/{payment['id']}/reverse", {"reason": "x"}, format="json").status_code == 409


# --- the credit balance -------------------------------------------------------------------------------------


def test_apply_the_credit_balance_to_an_open_invoice(api, customer, invoices):
    inv1, inv2, _ = invoices
    assert api.get(BALANCE).json() == {"customer": "acme", "balances": []}
    record(api, "60.00", auto_allocate=False)
    url = f"{BALANCE}/apply"
    for bad, field in [({"invoice": inv2.pk, "amount": "60.01"}, "amount"),
                       ({"invoice": inv2.pk, "amount": "1.001"}, "amount"),
                       ({"invoice": inv2.pk, "amount": "-5"}, "amount"),
                       ({"invoice": 999_999}, "invoice"), ({"amount": "5"}, "invoice"),
                       ({"invoice": "x"}, "invoice"), ({"invoice": inv2.pk, "extra": 1}, "extra")]:
        response = api.post(url, bad, format="json")
        assert response.status_code == 400 and field in error_of(response)["fields"], (bad, response.json())
    other = CustomerFactory(billing_entity=customer.billing_entity, external_id="other", timezone="UTC")
    foreign = invoice_of(other, "30.00")
    response = api.post(url, {"invoice": foreign.pk}, format="json")
    assert response.status_code == 400 and "invoice" in error_of(response)["fields"]

    partly = api.post(url, {"invoice": inv1.pk, "amount": "25.00"}, format="json")
    assert partly.status_code == 201, partly.json()
    assert partly.json()["allocation"]["kind"] == "credit_balance"
    assert partly.json()["allocation"]["amount"] == money("25.00")
    assert partly.json()["invoice"]["amount_due"] == money("75.00") and partly.json()["balance"] == money("35.00")
    rest = api.post(url, {"invoice": inv2.pk}, format="json").json()
    assert rest["allocation"]["amount"] == money("35.00") and rest["invoice"]["amount_due"] == money("215.00")
    assert rest["balance"] == money("0.00")
    empty = api.post(url, {"invoice": inv2.pk}, format="json")
    assert empty.status_code == 400 and "no USD credit" in error_of(empty)["fields"]["invoice"][0]
    [usd] = api.get(BALANCE).json()["balances"]
    assert [(t["kind"], t["amount"]["amount"], t["invoice"]) for t in usd["transactions"]] == [
        ("overpayment", "60.00", None), ("applied", "-25.00", inv1.pk), ("applied", "-35.00", inv2.pk)]


def test_apply_to_an_invoice_that_owes_nothing_is_a_conflict(api, customer):
    record(api, "10.00", auto_allocate=False)
    draft = invoice_of(customer, "20.00", finalize=False)
    response = api.post(f"{BALANCE}/apply", {"invoice": draft.pk}, format="json")
    assert response.status_code == 409 and error_of(response)["code"] == "invalid_transition"


def test_refund_the_credit_balance(api, customer):
    record(api, "50.00", auto_allocate=False)
    url = f"{BALANCE}/refund"
    response = api.post(url, {"currency": "USD", "amount": "20.00", "reason": "Closing the account"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["source"] == "credit_balance" and response.json()["amount"] == money("20.00")
    assert response.json()["status"] == "succeeded" and response.json()["payment"] is None
    for bad, field in [({"currency": "USD", "amount": "30.01", "reason": "x"}, "amount"),
                       ({"currency": "EUR", "amount": "1.00", "reason": "x"}, "amount"),
                       ({"currency": "USD", "amount": "0", "reason": "x"}, "amount"),
                       ({"currency": "USD", "amount": "1.234", "reason": "x"}, "amount"),
                       ({"currency": "ZZZ", "amount": "1", "reason": "x"}, "currency"),
                       ({"currency": "USD", "amount": "1", "reason": ""}, "reason"),
                       ({"currency": "USD", "amount": "1"}, "reason")]:
        bad_response = api.post(url, bad, format="json")
        assert bad_response.status_code == 400 and field in error_of(bad_response)["fields"], bad
    [usd] = api.get(BALANCE).json()["balances"]
    assert usd["balance"] == money("30.00")
    assert [(t["kind"], t["amount"]["amount"]) for t in usd["transactions"]] == [("overpayment", "50.00"),
                                                                                  ("refund", "-20.00")]
    assert Refund.objects.count() == 1
    assert api.post("/api/v1/customers/nobody/credit-balance/refund",
                    {"currency": "USD", "amount": "1", "reason": "x"}, format="json").status_code == 404


# --- authentication, permissions, unknown ids -----------------------------------------------------------------


def test_every_endpoint_needs_a_key_and_writes_need_the_write_scope(api, read_api, customer, invoices):
    payment = record(api, "10.00", auto_allocate=False)
    anonymous = client_for(None)
    reads = [PAYMENTS, f"{PAYMENTS}/{payment['id']}", "/api/v1/refunds", BALANCE,
             f"/api/v1/invoices/{invoices[0].pk}/allocations"]
    writes = [(PAYMENTS, {"customer": "acme", "amount": "1", "currency": "USD", "method": "check"}),
              (f"{PAYMENTS}/{payment['id']}/allocate", {"allocations": [{"invoice": invoices[0].pk, "amount": "1"}]}),
              (f"{PAYMENTS}/{payment['id']}/reverse", {"reason": "x"}),
              (f"{PAYMENTS}/{payment['id']}/refund", {"amount": "1", "reason": "x"}),
              (f"{BALANCE}/apply", {"invoice": invoices[0].pk}),
              (f"{BALANCE}/refund", {"currency": "USD", "amount": "1", "reason": "x"})]
    for url in reads:
        assert anonymous.get(url).status_code == 401, url
        assert read_api.get(url).status_code == 200, url
    for url, body in writes:
        assert anonymous.post(url, body, format="json").status_code == 401, url
        response = read_api.post(url, body, format="json")
        assert response.status_code == 403, url
    assert Payment.objects.count() == 1 and Refund.objects.count() == 0
    assert CustomerBalance.objects.get().balance == Decimal("10.00")
    # Payments are never edited or deleted over the API.
    assert api.patch(f"{PAYMENTS}/{payment['id']}", {"amount": "1"}, format="json").status_code == 405
    assert api.delete(f"{PAYMENTS}/{payment['id']}").status_code == 405


def test_unknown_ids_are_404(api, customer):
    for url in [f"{PAYMENTS}/999999", "/api/v1/refunds/999999", "/api/v1/invoices/999999/allocations",
                "/api/v1/invoices/99999999999999999999999/allocations", "/api/v1/customers/nobody/credit-balance",
                f"{PAYMENTS}/abc"]:
        response = api.get(url)
        assert response.status_code == 404, url
        assert error_of(response)["code"] == "not_found"
    for url, body in [(f"{PAYMENTS}/999999/reverse", {"reason": "x"}),
                      (f"{PAYMENTS}/999999/refund", {"amount": "1", "reason": "x"}),
                      ("/api/v1/customers/nobody/credit-balance/apply", {"invoice": 1})]:
        assert api.post(url, body, format="json").status_code == 404, url


def test_jpy_payments_have_no_decimals(api, customer):
    jpy_entity = BillingEntityFactory(default_currency="JPY", timezone="Asia/Tokyo", country="JP")
    CustomerFactory(billing_entity=jpy_entity, external_id="tokyo", timezone="Asia/Tokyo", currency="JPY")
    body = {"customer": "tokyo", "amount": "5000", "currency": "JPY", "method": "bank_transfer"}
    response = api.post(PAYMENTS, body, format="json")
    assert response.status_code == 201 and response.json()["amount"] == money("5000", "JPY")
    assert api.post(PAYMENTS, {**body, "amount": "5000.5"}, format="json").status_code == 400
