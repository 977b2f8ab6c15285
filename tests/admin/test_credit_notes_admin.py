"""Credit notes in the admin: a finance admin issues one from the invoice's page (per line, by amount, in full,
offset), refusals shown on their fields with nothing written, double submission, read-only notes, PDF download,
and the roles that may and may not issue."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.actors import Actor
from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN
from invoicing.models import CreditNote, DocumentSequence, Invoice, TaxRate
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.payments import credit_balance, record_payment
from tests.admin.support import client_for, messages_of
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db
D = Decimal
ACTOR = Actor.system("tests")
NOTES = reverse("admin:invoicing_creditnote_changelist")
KEY = "5f0c6a52-8f7e-4a59-9a0e-0f4c2b7d1e11"


@pytest.fixture
def customer():
    TaxRate.objects.create(name="VAT FR", country="FR", percent=D("20"))
    entity = BillingEntityFactory(code="acme-fr", country="FR", default_currency="EUR", credit_note_prefix="FRCN")
    return CustomerFactory(billing_entity=entity, country="FR", kind="individual", currency="EUR",
                           external_id="fr-buyer", name="Buyer SARL")


def invoice_for(customer, *lines) -> Invoice:
    lines = lines or (ManualLine("Platform fee", D("100.00"), period_start=date(2024, 1, 1),
                                 period_end=date(2024, 2, 1)),
                      ManualLine("Seats", D("15.00"), D("10")))
    return create_one_off_invoice(customer, list(lines), actor=ACTOR, now=timezone.now(), finalize=True)


@pytest.fixture
def invoice(customer) -> Invoice:
    invoice = invoice_for(customer)
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (D("250.00"), D("50.00"), D("300.00"))
    return invoice


def issue_url(invoice) -> str:
    return reverse("admin:invoicing_creditnote_issue", args=[invoice.pk])


def post(client, invoice, **data):
    body = {"mode": "lines", "reason": "billing_error", "settlement": "credit_balance", "memo": "",
            "idempotency_key": KEY, **data}
    return client.post(issue_url(invoice), {k: v for k, v in body.items() if v is not None})


def line_field(invoice, position: int, what: str) -> str:
    return f"line_{invoice.lines.get(position=position).pk}_{what}"


def test_finance_admin_issues_a_credit_note_from_the_invoice_page(invoice):
    admin_client = client_for(FINANCE_ADMIN)
    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))
    assert page.status_code == 200 and issue_url(invoice).encode() in page.content
    form_page = admin_client.get(issue_url(invoice))
    assert form_page.status_code == 200
    html = form_page.content.decode()
    assert "Platform fee" in html and "01 Jan 2024 \u2013 31 Jan 2024" in html
    assert "total 300.00 EUR" in html and "Left to credit: <strong id=\"remaining-creditable\">300.00 EUR" in html

    response = post(admin_client, invoice, memo="Seats billed twice",
                    **{line_field(invoice, 0, "amount"): "40.00", line_field(invoice, 1, "quantity"): "2"})
    note = CreditNote.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:invoicing_creditnote_change",
                                                                           args=[note.pk])
    # 40.00 + 2 x 15.00 = 70.00 net, VAT round(50.00 x 70 / 250) = 14.00.
    assert (note.number, note.subtotal, note.tax_total, note.total) == ("FRCN-000001", D("70.00"), D("14.00"),
                                                                        D("84.00"))
    assert note.created_by == f"user:{admin_client.user.username}" and note.memo == "Seats billed twice"
    assert Invoice.objects.get(pk=invoice.pk).amount_due == D("216.00")
    detail = admin_client.get(response["Location"])
    assert detail.status_code == 200
    assert "FRCN-000001" in detail.content.decode() and "reduces what invoice" in detail.content.decode()
    assert any("Credit note FRCN-000001 issued: 84.00 EUR" in m for m in messages_of(detail))


def test_by_amount_and_in_full(invoice):
    admin_client = client_for(FINANCE_ADMIN)
    post(admin_client, invoice, mode="amount", amount="100.00")
    post(admin_client, invoice, mode="full", idempotency_key="0c5a8b9e-1111-4c2f-8a5e-3f2b1c0d9e8f",
         reason="duplicate")
    assert [(n.number, n.total) for n in CreditNote.objects.order_by("sequence_number")] == [
        ("FRCN-000001", D("120.00")), ("FRCN-000002", D("180.00"))]
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"


def test_offset_of_a_paid_invoice_against_another_open_one(invoice, customer):
    record_payment(customer=customer, amount=D("300.00"), currency="EUR", method="bank_transfer",
                   received_on=date(2024, 1, 20), actor=ACTOR, now=invoice.finalized_at)
    other = invoice_for(customer, ManualLine("Add-on", D("50.00")))  # owes 60.00
    admin_client = client_for(FINANCE_ADMIN)
    page = admin_client.get(issue_url(invoice)).content.decode()
    assert f'value="{other.pk}"' in page and f'value="{invoice.pk}"' not in page  # only other open invoices
    response = post(admin_client, invoice, mode="amount", amount="20.00", settlement="offset",
                    offset_invoice=str(other.pk))
    assert response.status_code == 302
    note = CreditNote.objects.get()
    assert (note.offset_amount, note.offset_invoice_id) == (D("24.00"), other.pk)
    assert Invoice.objects.get(pk=other.pk).amount_due == D("36.00")
    assert credit_balance(customer, "EUR") == 0


@pytest.mark.parametrize(("data", "error_field", "words"), [
    ({"line_0_amount": "100.01"}, "line_0_amount", "left to credit"),
    ({"line_0_amount": "-5"}, "line_0_amount", "greater than zero"),
    ({"line_0_amount": "0"}, "line_0_amount", "greater than zero"),
    ({"line_1_quantity": "11"}, "line_1_quantity", "quantity"),
    ({"line_1_quantity": "abc"}, "line_1_quantity", "Enter a number"),
    ({"line_0_amount": "1.005"}, "line_0_amount", "2 decimal places"),
    ({}, None, "at least one line"),
    ({"mode": "amount"}, "amount", "Enter the amount"),
    ({"mode": "amount", "amount": "250.01"}, "amount", "left to credit"),
    ({"mode": "fast"}, "mode", "Select a valid choice"),
    ({"mode": "amount", "amount": "1", "reason": "because"}, "reason", "Select a valid choice"),
    ({"mode": "amount", "amount": "1", "settlement": "offset"}, "offset_invoice", "Say which open invoice"),
    ({"mode": "amount", "amount": "1", "offset_invoice": "999999"}, "offset_invoice", "Select a valid choice"),
    ({"mode": "amount", "amount": "1", "memo": "m" * 5001}, "memo", "at most 5000"),
    ({"mode": "amount", "amount": "1", "idempotency_key": "not-a-uuid"}, "idempotency_key", "valid UUID"),
])
def test_refusals_are_shown_on_their_field_and_nothing_is_written(invoice, data, error_field, words):
    admin_client = client_for(FINANCE_ADMIN)
    renamed = {line_field(invoice, int(k.split("_")[1]), k.split("_")[2]) if k.startswith("line_") else k: v
               for k, v in data.items()}
    response = post(admin_client, invoice, **renamed)
    assert response.status_code == 200
    form = response.context["form"]
    if error_field is None:
        errors = " ".join(form.non_field_errors())
    else:
        name = (line_field(invoice, int(error_field.split("_")[1]), error_field.split("_")[2])
                if error_field.startswith("line_") else error_field)
        errors = " ".join(form.errors.get(name, []))
    assert words in errors, form.errors
    assert not CreditNote.objects.exists()
    assert not DocumentSequence.objects.filter(kind="credit_note", next_number__gt=1).exists()


def test_a_double_submission_issues_one_note(invoice):
    admin_client = client_for(FINANCE_ADMIN)
    first = post(admin_client, invoice, mode="amount", amount="10.00")
    second = post(admin_client, invoice, mode="amount", amount="10.00")
    assert first["Location"] == second["Location"]
    assert CreditNote.objects.count() == 1


def test_draft_invoice_cannot_be_credited(customer):
    draft = create_one_off_invoice(customer, [ManualLine("Setup", D("10.00"))], actor=ACTOR,
                                   now=timezone.now())
    admin_client = client_for(FINANCE_ADMIN)
    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[draft.pk]))
    assert issue_url(draft).encode() not in page.content
    response = admin_client.get(issue_url(draft))
    assert response.status_code == 302
    assert any("draft" in m for m in messages_of(admin_client.get(response["Location"])))
    assert post(admin_client, draft, mode="amount", amount="1").status_code == 302
    assert not CreditNote.objects.exists()
    assert admin_client.get(reverse("admin:invoicing_creditnote_issue", args=[999999])).status_code == 404


@pytest.mark.parametrize("role", [BILLING_OPERATOR, AUDITOR])
def test_other_roles_cannot_issue(invoice, role):
    user_client = client_for(role)
    page = user_client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))
    assert page.status_code == 200 and issue_url(invoice).encode() not in page.content
    assert user_client.get(issue_url(invoice)).status_code == 403
    assert post(user_client, invoice, mode="amount", amount="10.00").status_code == 403
    assert not CreditNote.objects.exists()


def test_notes_are_read_only_and_their_pdf_downloads(invoice):
    admin_client = client_for(FINANCE_ADMIN)
    post(admin_client, invoice, mode="amount", amount="10.00")
    note = CreditNote.objects.get()
    change = reverse("admin:invoicing_creditnote_change", args=[note.pk])
    for role in (AUDITOR, FINANCE_ADMIN):
        viewer = client_for(role)
        assert viewer.get(NOTES).status_code == 200
        assert note.number in viewer.get(NOTES).content.decode()
        page = viewer.get(change)
        assert page.status_code == 200 and b'name="_save"' not in page.content
        assert viewer.post(change, {"memo": "changed"}).status_code == 403
        pdf = viewer.get(reverse("admin:invoicing_creditnote_pdf", args=[note.pk]))
        assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
        assert b"".join(pdf.streaming_content if pdf.streaming else [pdf.content]).startswith(b"%PDF-")
    assert admin_client.get(reverse("admin:invoicing_creditnote_add")).status_code == 403
    assert admin_client.post(reverse("admin:invoicing_creditnote_delete", args=[note.pk])).status_code == 403
    assert CreditNote.objects.get().memo == ""
    outsider = client_for(None, username="no-role")
    assert outsider.get(reverse("admin:invoicing_creditnote_pdf", args=[note.pk])).status_code == 403
    assert outsider.get(NOTES).status_code == 403
