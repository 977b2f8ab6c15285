"""Payments in the admin: record a payment (allocated by hand or oldest first, the rest to the credit balance),
allocate, reverse and refund it, apply or refund the credit balance; every page checked by role, every bad input
shown on its field with nothing written."""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.actors import Actor
from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN, REVENUE_ACCOUNTANT
from invoicing.models import Allocation, CustomerBalance, Invoice, Payment, Refund
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.payments import record_payment, refund_payment
from tests.admin.support import client_for, messages_of
from tests.factories import BillingEntityFactory, CustomerFactory
from tests.system.conftest import browser_page, chromium_executable  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
ADD = reverse("admin:invoicing_payment_add")
PAYMENTS = reverse("admin:invoicing_payment_changelist")
BALANCES = reverse("admin:invoicing_customerbalance_changelist")
BROWSER_PASSWORD = "browser-record-payment-7c2d"


@dataclass
class Books:
    customer: Any
    inv1: Invoice
    inv2: Invoice


def invoice_of(customer, amount: str, currency: str = "USD") -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Consulting", Decimal(amount))], currency=currency,
                                  actor=ACTOR, now=timezone.now(), finalize=True)


@pytest.fixture
def books() -> Books:
    """A customer owing two invoices, oldest first: 100.00 and 250.00 USD."""
    entity = BillingEntityFactory(timezone="UTC")
    customer = CustomerFactory(billing_entity=entity, external_id="globex", name="Globex", timezone="UTC")
    return Books(customer, invoice_of(customer, "100.00"), invoice_of(customer, "250.00"))


@pytest.fixture
def operator():
    return client_for(BILLING_OPERATOR)


@pytest.fixture
def finance():
    return client_for(FINANCE_ADMIN)


def state(invoice: Invoice) -> tuple[str, Decimal]:
    invoice.refresh_from_db()
    return invoice.status, invoice.amount_due


def record_form(client, customer, **values):
    """Open the form for the customer (its open invoices shown), then send it with `values`."""
    page = client.get(ADD, {"customer": customer.pk})
    assert page.status_code == 200
    token = page.context["form"]["token"].value()
    data = {"customer": customer.pk, "currency": "USD", "method": "bank_transfer", "received_on": "2024-03-01",
            "reference": "WIRE 0042", "loaded_for": customer.pk, "token": token, "_record": "1", **values}
    return client.post(ADD, data, follow=True)


def payment_url(payment: Payment, page: str = "change") -> str:
    return reverse(f"admin:invoicing_payment_{page}", args=[payment.pk])


def label(payment: Payment) -> str:
    return f"Payment #{payment.pk} ({payment.amount:.2f} {payment.currency}, {payment.get_method_display()})"


def field_errors(response, field: str) -> list[str]:
    return list(response.context["form"].errors.get(field, []))


# --- record a payment -----------------------------------------------------------------------------------------


def test_operator_records_a_payment_for_one_invoice(operator, books):
    page = operator.get(ADD, {"customer": books.customer.pk})
    assert page.status_code == 200
    assert [invoice for invoice, _ in page.context["form"].invoice_rows()] == [books.inv1, books.inv2]
    assert books.inv1.number in page.content.decode() and page.context["form"]["currency"].value() == "USD"

    response = record_form(operator, books.customer, amount="100.00", **{f"invoice_{books.inv1.pk}": "100.00"})
    payment = Payment.objects.get()
    assert response.redirect_chain[-1][0] == payment_url(payment)
    assert f"Recorded {label(payment)}: 100.00 USD to {books.inv1}." in messages_of(response)
    assert (payment.amount, payment.method, payment.reference, str(payment.received_on)) == (
        Decimal("100.00"), "bank_transfer", "WIRE 0042", "2024-03-01")
    assert payment.created_by == "user:billing_operator"
    assert state(books.inv1) == ("paid", Decimal("0.00"))
    assert state(books.inv2) == ("finalized", Decimal("250.00"))
    # The payment's page shows the allocation, the audit trail and the summary; the invoice's page the allocation.
    body = response.content.decode()
    assert "Allocations to invoices" in body and "payment.recorded" in body and "Allocated to invoices" in body
    invoice_page = operator.get(reverse("admin:invoicing_invoice_change", args=[books.inv1.pk]))
    assert invoice_page.status_code == 200
    assert "Payments and credits (allocations)" in invoice_page.content.decode()
    assert f"Payment #{payment.pk} " in invoice_page.content.decode()
    assert operator.get(payment_url(payment, "history")).status_code == 200


def test_partial_payment(operator, books):
    record_form(operator, books.customer, amount="40.00", **{f"invoice_{books.inv1.pk}": "40"})
    assert state(books.inv1) == ("finalized", Decimal("60.00"))
    assert Allocation.objects.get().amount == Decimal("40.00")


def test_left_empty_the_oldest_invoices_are_paid_first_and_the_rest_is_credit(operator, books):
    response = record_form(operator, books.customer, amount="400.00")
    payment = Payment.objects.get()
    assert (f"Recorded {label(payment)}: 100.00 USD to {books.inv1}; 250.00 USD to {books.inv2}; 50.00 USD to the "
            "customer's credit balance.") in messages_of(response)
    assert state(books.inv1) == ("paid", Decimal("0.00")) and state(books.inv2) == ("paid", Decimal("0.00"))
    assert CustomerBalance.objects.get(customer=books.customer).balance == Decimal("50.00")
    # A new invoice takes the credit when it is finalized: 80.00 less 50.00 of credit leaves 30.00 due.
    later = invoice_of(books.customer, "80.00")
    assert state(later) == ("finalized", Decimal("30.00"))
    assert CustomerBalance.objects.get(customer=books.customer).balance == Decimal("0.00")


def test_overpayment_then_apply_the_balance_to_an_open_invoice(operator, finance, books):
    record_form(operator, books.customer, amount="150.00", **{f"invoice_{books.inv1.pk}": "100.00"})
    balance = CustomerBalance.objects.get(customer=books.customer)
    assert balance.balance == Decimal("50.00") and state(books.inv2) == ("finalized", Decimal("250.00"))
    page = operator.get(reverse("admin:invoicing_customerbalance_change", args=[balance.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "Apply to an open invoice" in body and "Refund the balance" not in body and "Overpayment" in body

    apply_url = reverse("admin:invoicing_customerbalance_apply", args=[balance.pk])
    form_page = operator.get(apply_url)
    assert list(form_page.context["form"].fields["invoice"].queryset) == [books.inv2]
    too_much = operator.post(apply_url, {"invoice": books.inv2.pk, "amount": "50.01"})
    assert too_much.status_code == 200 and "less than 50.01" in " ".join(field_errors(too_much, "amount"))
    for bad in ("abc", "-1", "1.001"):
        response = operator.post(apply_url, {"invoice": books.inv2.pk, "amount": bad})
        assert response.status_code == 200 and field_errors(response, "amount"), bad
    paid_one = operator.post(apply_url, {"invoice": books.inv1.pk})
    assert paid_one.status_code == 200 and field_errors(paid_one, "invoice")

    done = operator.post(apply_url, {"invoice": books.inv2.pk, "amount": "30.00"}, follow=True)
    assert f"Applied 30.00 USD to {books.inv2}; it owes 220.00 USD." in messages_of(done)
    rest = operator.post(apply_url, {"invoice": books.inv2.pk, "amount": ""}, follow=True)
    assert f"Applied 20.00 USD to {books.inv2}; it owes 200.00 USD." in messages_of(rest)
    assert state(books.inv2) == ("finalized", Decimal("200.00"))
    balance.refresh_from_db()
    assert balance.balance == Decimal("0.00")
    assert list(Allocation.objects.filter(kind="credit_balance").values_list("amount", flat=True)) == [
        Decimal("30.00"), Decimal("20.00")]


def test_bad_input_is_shown_on_its_field_and_nothing_is_written(operator, books):
    euro = invoice_of(books.customer, "20.00", currency="EUR")
    cases = [
        ({"amount": "-5"}, "amount", "greater than zero"),
        ({"amount": "0"}, "amount", "greater than zero"),
        ({"amount": "12.345"}, "amount", "2 decimal places"),
        ({"amount": "lots"}, "amount", "not an amount"),
        ({"amount": ""}, "amount", "required"),
        ({"amount": "10", "currency": "ZZZ"}, "currency", "Unknown currency"),
        ({"amount": "10.5", "currency": "JPY"}, "amount", "0 decimal places"),
        ({"amount": "10", "method": "crypto"}, "method", "valid choice"),
        ({"amount": "10", "received_on": "2024-02-30"}, "received_on", "valid date"),
        ({"amount": "10", "reference": "x" * 201}, "reference", "at most 200"),
        ({"amount": "10", f"invoice_{books.inv1.pk}": "abc"}, f"invoice_{books.inv1.pk}", "not an amount"),
        ({"amount": "10", f"invoice_{books.inv1.pk}": "-3"}, f"invoice_{books.inv1.pk}", "greater than zero"),
        ({"amount": "500", f"invoice_{books.inv1.pk}": "100.01"}, f"invoice_{books.inv1.pk}", "still owes"),
        ({"amount": "20", f"invoice_{euro.pk}": "20.00"}, f"invoice_{euro.pk}", "Currency mismatch"),
    ]
    for values, field, words in cases:
        response = record_form(operator, books.customer, **values)
        assert response.status_code == 200, values
        assert words in " ".join(field_errors(response, field)), (values, response.context["form"].errors)
    over = record_form(operator, books.customer, amount="50.00", **{f"invoice_{books.inv1.pk}": "40",
                                                                     f"invoice_{books.inv2.pk}": "20"})
    assert "add up to more than the 50.00 USD" in " ".join(over.context["form"].non_field_errors())
    hostile_token = record_form(operator, books.customer, amount="10", token="<script>")
    assert hostile_token.status_code == 200 and field_errors(hostile_token, "token")
    assert not Payment.objects.exists() and not Allocation.objects.filter(kind="payment").exists()
    assert state(books.inv1) == ("finalized", Decimal("100.00"))


def test_double_submission_records_one_payment(operator, books):
    page = operator.get(ADD, {"customer": books.customer.pk})
    data = {"customer": books.customer.pk, "amount": "100.00", "currency": "USD", "method": "check",
            "received_on": "2024-03-01", "loaded_for": books.customer.pk, "_record": "1",
            "token": page.context["form"]["token"].value()}
    first = operator.post(ADD, data, follow=True)
    second = operator.post(ADD, data, follow=True)
    payment = Payment.objects.get()
    assert second.redirect_chain[-1][0] == payment_url(payment)
    assert f"{label(payment)} was already recorded (the form was sent twice)." in messages_of(second)
    assert first.status_code == 200 and state(books.inv1) == ("paid", Decimal("0.00"))
    # The same form sent back with another amount is refused, not answered with the first payment.
    changed = operator.post(ADD, {**data, "amount": "90.00"})
    assert changed.status_code == 200 and "already recorded" in " ".join(changed.context["form"].non_field_errors())
    assert Payment.objects.count() == 1


def test_changing_the_customer_shows_its_invoices_before_recording(operator, books):
    other = CustomerFactory(billing_entity=books.customer.billing_entity, external_id="initech", timezone="UTC")
    theirs = invoice_of(other, "75.00")
    page = operator.get(ADD, {"customer": books.customer.pk})
    data = {"customer": other.pk, "amount": "75.00", "currency": "USD", "method": "check",
            "received_on": "2024-03-01", "loaded_for": books.customer.pk, "_record": "1",
            "token": page.context["form"]["token"].value()}
    response = operator.post(ADD, data)
    assert response.status_code == 200 and not Payment.objects.exists()
    assert [invoice for invoice, _ in response.context["form"].invoice_rows()] == [theirs]
    assert "Review the customer's open invoices" in " ".join(messages_of(response))
    done = operator.post(ADD, {**data, "loaded_for": other.pk}, follow=True)
    assert done.redirect_chain and state(theirs) == ("paid", Decimal("0.00"))
    # "Show the open invoices" of a customer checks nothing yet.
    loaded = operator.post(ADD, {"customer": books.customer.pk, "_load": "1"})
    assert loaded.status_code == 200 and not loaded.context["form"].is_bound
    assert [invoice for invoice, _ in loaded.context["form"].invoice_rows()] == [books.inv1, books.inv2]


# --- allocate, reverse, refund --------------------------------------------------------------------------------


def test_allocate_the_payments_credit(operator, books):
    record_form(operator, books.customer, amount="120.00", **{f"invoice_{books.inv1.pk}": "100.00"})
    payment = Payment.objects.get()
    page = operator.get(payment_url(payment))
    assert payment_url(payment, "allocate") in page.content.decode()
    assert payment_url(payment, "reverse") not in page.content.decode()  # the operator cannot reverse
    url = payment_url(payment, "allocate")
    form_page = operator.get(url)
    assert [invoice for invoice, _ in form_page.context["form"].invoice_rows()] == [books.inv2]
    empty = operator.post(url, {})
    assert "at least one invoice" in " ".join(empty.context["form"].non_field_errors())
    over = operator.post(url, {f"invoice_{books.inv2.pk}": "20.01"})
    assert "The allocations add up to more than the 20" in " ".join(over.context["form"].non_field_errors())
    bad = operator.post(url, {f"invoice_{books.inv2.pk}": "2.001"})
    assert field_errors(bad, f"invoice_{books.inv2.pk}")
    done = operator.post(url, {f"invoice_{books.inv2.pk}": "20.00"}, follow=True)
    assert f"Allocated 20.00 USD of {label(payment)}." in messages_of(done)
    assert state(books.inv2) == ("finalized", Decimal("230.00"))
    assert CustomerBalance.objects.get().balance == Decimal("0.00")


def test_only_a_finance_admin_reverses(operator, finance, books):
    record_form(operator, books.customer, amount="150.00", **{f"invoice_{books.inv1.pk}": "100.00"})
    payment = Payment.objects.get()
    url = payment_url(payment, "reverse")
    assert operator.get(url).status_code == 403
    assert operator.post(url, {"reason": "Mistake"}).status_code == 403
    assert Payment.objects.get().status == "succeeded"

    page = finance.get(url)
    assert page.status_code == 200
    assert ("Taken back from invoice " + books.inv1.number, "100.00 USD") in page.context["facts"]
    assert ("Taken out of the credit balance", "50.00 USD") in page.context["facts"]
    blank = finance.post(url, {"reason": "  "})
    assert blank.status_code == 200 and field_errors(blank, "reason")
    done = finance.post(url, {"reason": "Booked on the wrong customer"}, follow=True)
    assert f"{label(payment)} reversed: its invoices are due again." in messages_of(done)
    payment.refresh_from_db()
    assert payment.status == "reversed" and payment.reversal_reason == "Booked on the wrong customer"
    assert state(books.inv1) == ("finalized", Decimal("100.00"))
    assert CustomerBalance.objects.get().balance == Decimal("0.00")
    again = finance.post(url, {"reason": "Twice"})
    assert again.status_code == 200 and "only a succeeded payment" in " ".join(again.context["form"].non_field_errors())


def test_only_a_finance_admin_refunds(operator, finance, books):
    record_form(operator, books.customer, amount="150.00", **{f"invoice_{books.inv1.pk}": "100.00"})
    payment = Payment.objects.get()
    url = payment_url(payment, "refund")
    assert operator.get(url).status_code == 403
    assert operator.post(url, {"amount": "10", "reason": "x"}).status_code == 403
    page = finance.get(url)
    assert page.status_code == 200 and page.context["form"]["amount"].value() == "150.00"
    for amount, words in [("150.01", "can be refunded"), ("0", "greater than zero"), ("abc", "not an amount"),
                          ("1.234", "decimal places")]:
        response = finance.post(url, {"amount": amount, "reason": "Asked"})
        assert response.status_code == 200 and words in " ".join(field_errors(response, "amount")), amount
    assert field_errors(finance.post(url, {"amount": "10", "reason": ""}), "reason")
    assert not Refund.objects.exists()
    done = finance.post(url, {"amount": "80.00", "reason": "Customer asked"}, follow=True)
    refund = Refund.objects.get()
    assert f"Refund #{refund.pk} of 80.00 USD from {label(payment)} created (Succeeded)." in messages_of(done)
    # 50.00 from the payment's credit, 30.00 taken back off the invoice it paid.
    assert state(books.inv1) == ("finalized", Decimal("30.00"))
    assert CustomerBalance.objects.get().balance == Decimal("0.00")
    refund_page = finance.get(reverse("admin:invoicing_refund_change", args=[refund.pk]))
    assert refund_page.status_code == 200 and "Taken back off invoices" in refund_page.content.decode()


def test_refund_the_credit_balance(operator, finance, books):
    record_payment(customer=books.customer, amount=Decimal("60.00"), currency="USD", method="check",
                   received_on=timezone.localdate(), actor=ACTOR, now=timezone.now(), auto_allocate=False)
    balance = CustomerBalance.objects.get()
    url = reverse("admin:invoicing_customerbalance_refund", args=[balance.pk])
    assert operator.get(url).status_code == 403
    assert field_errors(finance.post(url, {"amount": "60.01", "reason": "Closing"}), "amount")
    done = finance.post(url, {"amount": "60.00", "reason": "Closing the account"}, follow=True)
    assert f"Refund #{Refund.objects.get().pk} of 60.00 USD created (Succeeded)." in messages_of(done)
    balance.refresh_from_db()
    assert balance.balance == Decimal("0.00")
    assert Refund.objects.get().source == "credit_balance"


def test_actions_open_the_page_of_one_payment(operator, finance, books):
    record_form(operator, books.customer, amount="10.00")
    record_form(operator, books.customer, amount="20.00")
    first, second = Payment.objects.order_by("id")
    response = finance.post(PAYMENTS, {"action": "reverse_action", "_selected_action": [first.pk]})
    assert response.status_code == 302 and response["Location"] == payment_url(first, "reverse")
    several = finance.post(PAYMENTS, {"action": "refund_action", "_selected_action": [first.pk, second.pk]},
                           follow=True)
    assert "Select exactly one payment to refund." in messages_of(several)
    # Actions the role lacks are not offered.
    actions = operator.get(PAYMENTS).context["action_form"].fields["action"].choices
    names = [name for name, _ in actions]
    assert "allocate_action" in names and "reverse_action" not in names and "refund_action" not in names


# --- roles ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [AUDITOR, REVENUE_ACCOUNTANT])
def test_readers_see_but_cannot_record_or_act(role, books):
    payment = record_payment(customer=books.customer, amount=Decimal("400.00"), currency="USD", method="check",
                             received_on=timezone.localdate(), actor=ACTOR, now=timezone.now())
    reader = client_for(role)
    listing = reader.get(PAYMENTS)
    assert listing.status_code == 200 and "Record a payment" not in listing.content.decode()
    assert reader.get(ADD).status_code == 403
    assert reader.post(ADD, {"customer": books.customer.pk, "amount": "5", "_record": "1"}).status_code == 403
    page = reader.get(payment_url(payment))
    assert page.status_code == 200
    for action in ("allocate", "reverse", "refund"):
        assert payment_url(payment, action) not in page.content.decode()
        assert reader.get(payment_url(payment, action)).status_code == 403
    balance = CustomerBalance.objects.get()
    assert reader.get(reverse("admin:invoicing_customerbalance_change", args=[balance.pk])).status_code == 200
    for name in ("apply", "refund"):
        assert reader.get(reverse(f"admin:invoicing_customerbalance_{name}", args=[balance.pk])).status_code == 403
    for url in (BALANCES, reverse("admin:invoicing_refund_changelist"),
                reverse("admin:invoicing_allocation_changelist") + "?kind=payment",
                reverse("admin:invoicing_paymentevent_changelist")):
        assert reader.get(url).status_code == 200, url
    assert Payment.objects.count() == 1 and not Refund.objects.exists()


def test_payments_are_never_edited_or_deleted(finance, books):
    payment = record_payment(customer=books.customer, amount=Decimal("10.00"), currency="USD", method="check",
                             received_on=timezone.localdate(), actor=ACTOR, now=timezone.now())
    finance.post(payment_url(payment), {"amount": "1.00"})
    assert finance.get(payment_url(payment, "delete")).status_code == 403
    assert Payment.objects.get().amount == Decimal("10.00")
    listing = finance.get(PAYMENTS, {"q": "globex", "status__exact": "succeeded"})
    assert [p.pk for p in listing.context["cl"].result_list] == [payment.pk]


def test_the_customer_autocomplete_and_lists_without_n_plus_one(operator, finance, books):
    found = operator.get(reverse("admin:autocomplete"), {"app_label": "invoicing", "model_name": "payment",
                                                         "field_name": "customer", "term": "glob"})
    assert found.status_code == 200
    assert [row["id"] for row in found.json()["results"]] == [str(books.customer.pk)]

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert finance.get(url).status_code == 200
        return len(captured.captured_queries)

    lists = [PAYMENTS, BALANCES, reverse("admin:invoicing_refund_changelist"),
             reverse("admin:invoicing_allocation_changelist"), reverse("admin:invoicing_paymentevent_changelist")]
    pay = {"customer": books.customer, "currency": "USD", "method": "check", "received_on": timezone.localdate(),
           "actor": ACTOR, "now": timezone.now()}
    refund_of = record_payment(amount=Decimal("400.00"), **pay)
    refund_payment(refund_of, amount=Decimal("60.00"), reason="Asked", actor=ACTOR, now=timezone.now())
    before = [queries(url) for url in lists]
    other = CustomerFactory(billing_entity=books.customer.billing_entity, timezone="UTC")
    invoice_of(other, "30.00")
    more = record_payment(amount=Decimal("80.00"), **{**pay, "customer": other})
    refund_payment(more, amount=Decimal("10.00"), reason="Asked", actor=ACTOR, now=timezone.now())
    assert [queries(url) for url in lists] == before


# --- in a real browser ----------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_a_new_user_records_a_payment_in_the_browser(live_server, browser_page):  # noqa: F811
    """An operator picks the customer in the autocomplete (the page reloads with its open invoices), types the
    amount and a reference, leaves the table empty and records: the oldest invoice is paid, the rest is credit."""
    from tests.system.conftest import RESULTS_DIR

    entity = BillingEntityFactory(timezone="UTC")
    customer = CustomerFactory(billing_entity=entity, external_id="umbrella", name="Umbrella Corp", timezone="UTC")
    oldest = invoice_of(customer, "100.00")
    newer = invoice_of(customer, "250.00")
    user = client_for(BILLING_OPERATOR, username="new-operator").user
    user.set_password(BROWSER_PASSWORD)
    user.save()
    page, base = browser_page, live_server.url
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "new-operator")
    page.fill("#id_password", BROWSER_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#logout-form")

    page.goto(f"{base}{PAYMENTS}")
    page.click("a.record-payment")
    page.click(".select2-selection")
    page.fill(".select2-search__field", "umbrella")
    page.click(".select2-results__option >> text=Umbrella Corp")
    page.wait_for_selector("table.open-invoices")
    assert page.input_value("#id_currency") == "USD"
    assert page.locator("table.open-invoices tbody tr").count() == 2
    page.fill("#id_amount", "120.00")
    page.fill("#id_reference", "WIRE 7781")
    page.screenshot(path=str(RESULTS_DIR / "record-payment-form.png"), full_page=True)
    page.click("#record-payment-form input[name=_record]")
    page.wait_for_selector("ul.messagelist li.success")
    assert "100.00 USD to " + oldest.number in page.inner_text("ul.messagelist")
    page.screenshot(path=str(RESULTS_DIR / "record-payment-done.png"), full_page=True)
    assert state(oldest) == ("paid", Decimal("0.00")) and state(newer) == ("finalized", Decimal("230.00"))
    assert Payment.objects.get().reference == "WIRE 7781"


def test_a_refund_page_submitted_twice_pays_back_once(finance, books):
    record_form(finance, books.customer, amount="150.00", **{f"invoice_{books.inv1.pk}": "100.00"})
    payment = Payment.objects.get()
    url = payment_url(payment, "refund")
    token = finance.get(url).context["form"]["token"].value()
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    for _ in range(2):  # a double click, or the browser resending the form
        finance.post(url, {"amount": "20.00", "reason": "Asked", "token": token})
    assert [r.amount for r in Refund.objects.all()] == [Decimal("20.00")]


def test_history_of_money_records_cannot_be_reverted(finance, books):
    """simple-history's revert (a POST to a version's page) would write an old row back past the services."""
    record_form(finance, books.customer, amount="100.00", **{f"invoice_{books.inv1.pk}": "100.00"})
    payment = Payment.objects.get()
    for model, obj in (("payment", payment), ("invoice", books.inv1)):
        version = obj.history.order_by("history_id").first()
        url = reverse(f"admin:invoicing_{model}_simple_history", args=[obj.pk, version.history_id])
        assert finance.get(url).status_code == 200
        assert finance.post(url, {}).status_code == 403
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED
    assert state(books.inv1) == ("paid", Decimal("0.00"))
