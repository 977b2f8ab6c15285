"""Credit note PDFs read back with pypdf: number, date, credited invoice, reason, lines with periods, tax per
rate, total, settlement; hostile text; same bytes twice; storage and the render task."""

import hashlib
from datetime import date
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import pytest
from pypdf import PdfReader

from invoicing.credit_note_pdf import credit_note_pdf_name, render_credit_note_pdf, store_credit_note_pdf
from invoicing.models import CreditNote, TaxRate
from invoicing.services.credit_notes import CreditLineRequest, credit_in_full, issue_credit_note
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.payments import record_payment
from invoicing.tasks import render_credit_note_pdf_task
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db
D = Decimal
DASH = "\u2013"


def text_of(pdf: bytes) -> str:
    return " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(BytesIO(pdf)).pages)


@pytest.fixture
def customer():
    TaxRate.objects.create(name="VAT FR", country="FR", percent=D("20"))
    entity = BillingEntityFactory(code="acme-fr", name="Acme Cloud", legal_name="Acme Cloud SAS", country="FR",
                                  default_currency="EUR", invoice_prefix="ACME", credit_note_prefix="ACMECN",
                                  timezone="Europe/Paris")
    return CustomerFactory(billing_entity=entity, name="Buyer SARL", external_id="buyer-1", country="FR",
                           kind="individual", currency="EUR", timezone="Europe/Paris")


@pytest.fixture
def invoice(customer, actor, now):
    return create_one_off_invoice(customer, [
        ManualLine("Platform fee", D("100.00"), period_start=date(2024, 1, 1), period_end=date(2024, 2, 1)),
        ManualLine("Seats", D("15.00"), D("10")),
    ], actor=actor, now=now, finalize=True)


def test_the_pdf_says_what_the_note_credits_and_how_it_was_settled(invoice, actor, now):
    platform, seats = invoice.lines.order_by("position")
    note = issue_credit_note(
        invoice, lines=[CreditLineRequest(platform, amount=D("40.00")), CreditLineRequest(seats, quantity=D("2"))],
        reason="service_outage", memo="SLA credit for the 12 January outage.", settlement="credit_balance",
        actor=actor, now=now,
    )
    text = text_of(render_credit_note_pdf(note))
    assert "CREDIT NOTE" in text and "No. ACMECN-000001" in text
    assert "Issue date: 15 Jan 2024" in text
    assert "Credits invoice: ACME-000001 of 15 Jan 2024" in text
    assert "Reason: Service outage (SLA credit)" in text
    assert "Acme Cloud" in text and "CREDIT TO" in text and "Buyer SARL" in text and "Customer ID: buyer-1" in text
    assert f"Platform fee 01 Jan 2024 {DASH} 31 Jan 2024 40.00 8.00 20 %" in text
    assert "Seats 2 30.00 6.00 20 %" in text
    assert "Subtotal credited 70.00 EUR" in text
    assert "VAT FR (20 % of 70.00 EUR) 14.00 EUR" in text
    assert "Total credited 84.00 EUR" in text
    assert "84.00 EUR reduces what invoice ACME-000001 still owes." in text
    assert "SLA credit for the 12 January outage." in text
    assert "Page 1 of 1" in text


def test_refund_balance_and_offset_sentences(invoice, customer, actor, now):
    record_payment(customer=customer, amount=D("250.00"), currency="EUR", method="bank_transfer",
                   received_on=date(2024, 1, 15), actor=actor, now=now)  # 50.00 still owed
    note = issue_credit_note(invoice, amount=D("100.00"), reason="goodwill", settlement="refund", actor=actor,
                             now=now)
    text = text_of(render_credit_note_pdf(note))
    assert "50.00 EUR reduces what invoice ACME-000001 still owes." in text
    assert "70.00 EUR is refunded to you." in text
    other = create_one_off_invoice(customer, [ManualLine("Add-on", D("200.00"))], actor=actor, now=now,
                                   finalize=True)
    offset = credit_in_full(invoice, reason="goodwill", settlement="offset", offset_invoice=other, actor=actor,
                            now=now)
    assert f"{offset.total:.2f} EUR is applied to invoice {other.number}." in text_of(render_credit_note_pdf(offset))


def test_hostile_text_is_printed_not_interpreted(customer, actor, now):
    invoice = create_one_off_invoice(customer, [ManualLine("<b>Bold</b> & <font size=40>big</font>", D("10.00"))],
                                     actor=actor, now=now, finalize=True)
    note = credit_in_full(invoice, reason="other", memo="<para>memo</para> & \u202eRTL", settlement="credit_balance",
                          actor=actor, now=now)
    text = text_of(render_credit_note_pdf(note))
    assert "<b>Bold</b> & <font size=40>big</font>" in text and "<para>memo</para> &" in text


def test_same_note_same_bytes_and_storage(invoice, actor, now, settings, tmp_path: Path):
    settings.MEDIA_ROOT = tmp_path
    note = credit_in_full(invoice, reason="duplicate", settlement="credit_balance", actor=actor, now=now)
    assert render_credit_note_pdf(note) == render_credit_note_pdf(note)
    store_credit_note_pdf(note)
    stored = CreditNote.objects.get(pk=note.pk)
    assert stored.pdf.name == credit_note_pdf_name(note) == "credit_notes/acme-fr/ACMECN-000001.pdf"
    content = (tmp_path / "credit_notes" / "acme-fr" / "ACMECN-000001.pdf").read_bytes()
    assert content.startswith(b"%PDF-") and stored.pdf_sha256 == hashlib.sha256(content).hexdigest()
    # The task re-renders in place (one file), and a missing note is reported, not an error.
    assert render_credit_note_pdf_task(note.pk) == stored.pdf_sha256
    assert sorted(p.name for p in (tmp_path / "credit_notes" / "acme-fr").iterdir()) == ["ACMECN-000001.pdf"]
    assert render_credit_note_pdf_task(987654321) == "missing"
