"""Invoice PDFs: what a reader sees (text extracted with pypdf), pagination, hostile text, storage."""

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from hypothesis import given
from hypothesis import strategies as st
from pypdf import PdfReader

from customers.models import BillingEntity, Customer
from invoicing.models import Invoice, InvoiceLine
from invoicing.pdf import (
    format_money,
    format_period,
    invoice_pdf_name,
    party_snapshot_for_customer,
    party_snapshot_for_entity,
    render_invoice_pdf,
    store_invoice_pdf,
)
from invoicing.pricing.rounding import round_money
from invoicing.pricing.tax import REVERSE_CHARGE_MENTION
from tests.factories import BillingEntityFactory, CustomerFactory

D = Decimal
DASH = "\u2013"  # between the first and last day of a period
TIMES = "\u00d7"  # units x unit price in a tier breakdown
ISSUED = date(2024, 2, 1)
FINALIZED_AT = datetime(2024, 2, 1, 6, 0, tzinfo=UTC)


# --- helpers -------------------------------------------------------------------------------------------------------


def pages_text(pdf: bytes) -> list[str]:
    """Each page's text with whitespace runs collapsed, so wrapped lines read as one sentence."""
    return [" ".join((page.extract_text() or "").split()) for page in PdfReader(BytesIO(pdf)).pages]


def pdf_text(pdf: bytes) -> str:
    return " ".join(pages_text(pdf))


@pytest.fixture
def entity() -> BillingEntity:
    return BillingEntityFactory(
        code="acme-us", name="Acme Cloud", legal_name="Acme Cloud Inc.", address_line1="1 Market Street",
        city="San Francisco", state="CA", postal_code="94105", tax_id="US-EIN-12-3456789",
        email="billing@acme.example", invoice_prefix="ACME", credit_note_prefix="ACMECN",
    )


@pytest.fixture
def customer(entity: BillingEntity) -> Customer:
    return CustomerFactory(
        billing_entity=entity, external_id="cus_globex", name="Globex", legal_name="Globex Corporation",
        address_line1="500 Oak Avenue", city="Springfield", postal_code="12345", tax_id="US-99-1234567",
        billing_emails=["ap@globex.example", "cfo@globex.example"], payment_terms_days=15,
    )


def make_invoice(
    entity: BillingEntity,
    customer: Customer,
    lines: list[dict[str, Any]],
    *,
    status: str = Invoice.Status.FINALIZED,
    currency: str = "USD",
    number: str = "ACME-000042",
    taxes: Sequence[tuple[str, str, str]] = (),  # (name, percent, treatment)
    prepaid: Decimal = Decimal(0),
    **fields: Any,
) -> Invoice:
    """An invoice whose totals add up from `lines` (dicts of InvoiceLine fields) as finalization leaves them.

    Each tax rate applies to the lines whose tax_percent matches it; tax is rounded once per rate.
    """
    amounts = [round_money(D(line["quantity"]) * D(line["unit_price"]), currency) for line in lines]
    subtotal = sum(amounts, D(0))
    discount_total = sum((D(line.get("discount_amount", 0)) for line in lines), D(0))
    tax_breakdown = []
    for name, percent, treatment in taxes:
        taxable = sum(
            (amount - D(line.get("discount_amount", 0)) for line, amount in zip(lines, amounts, strict=True)
             if D(line.get("tax_percent", 0)) == D(percent)),
            D(0),
        )
        tax = round_money(taxable * D(percent) / 100, currency)
        tax_breakdown.append({"name": name, "percent": percent, "taxable_amount": str(taxable),
                              "tax_amount": str(tax), "treatment": treatment})
    tax_total = sum((D(t["tax_amount"]) for t in tax_breakdown), D(0))
    total = subtotal - discount_total + tax_total
    finalized = status != Invoice.Status.DRAFT
    values: dict[str, Any] = {
        "billing_entity": entity, "customer": customer, "status": status, "currency": currency,
        "number": number if finalized else None, "sequence_number": 42 if finalized else None,
        "issue_date": ISSUED if finalized else None, "due_date": ISSUED + timedelta(days=15) if finalized else None,
        "finalized_at": FINALIZED_AT if finalized else None,
        "period_start": date(2024, 1, 1), "period_end": date(2024, 2, 1),
        "subtotal": subtotal, "discount_total": discount_total, "tax_total": tax_total, "total": total,
        "prepaid_credit_applied": prepaid, "amount_due": total - prepaid, "tax_breakdown": tax_breakdown,
        "seller": party_snapshot_for_entity(entity) if finalized else {},
        "buyer": party_snapshot_for_customer(customer) if finalized else {},
    }
    if status == Invoice.Status.VOID:
        values["voided_at"] = FINALIZED_AT + timedelta(days=1)
    if status == Invoice.Status.PAID:  # paid in full: the allocations' sum is in amount_paid
        values["amount_paid"], values["amount_due"] = total - prepaid, D(0)
    values.update(fields)
    # Lines go in while the invoice is a draft: the database refuses to change a finalized invoice's lines.
    final_status = values.pop("status")
    invoice = Invoice.objects.create(**{**values, **_DRAFT_FIELDS})
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice, position=position, customer=customer, amount=amount,
            **{"kind": InvoiceLine.Kind.SUBSCRIPTION_FEE, "period_start": date(2024, 1, 1),
               "period_end": date(2024, 2, 1), **line},
        )
        for position, (line, amount) in enumerate(zip(lines, amounts, strict=True))
    )
    if final_status != Invoice.Status.DRAFT:
        Invoice.objects.filter(pk=invoice.pk).update(status=final_status, **{k: values[k] for k in _DRAFT_FIELDS})
        invoice.refresh_from_db()
    return invoice


# A draft has no number, issue date or finalization time (a check constraint).
_DRAFT_FIELDS = {"number": None, "sequence_number": None, "issue_date": None, "finalized_at": None}


def fee(description: str = "Pro plan", unit_price: str = "1234.56", **extra: Any) -> dict[str, Any]:
    return {"description": description, "quantity": D(1), "unit_price": D(unit_price), **extra}


# --- content -------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_finalized_invoice_shows_number_parties_dates_lines_and_totals(
    entity: BillingEntity, customer: Customer
) -> None:
    invoice = make_invoice(
        entity, customer,
        [fee(tax_percent=D("8.875"), tax_treatment="standard"),
         fee("Premium support", "250", quantity=D(3), tax_percent=D("8.875"), tax_treatment="standard")],
        taxes=[("Sales tax NY", "8.875", "standard")],
        prepaid=D("100.00"),
    )
    pdf = render_invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    for expected in [
        "INVOICE", "No. ACME-000042",
        "Acme Cloud", "Acme Cloud Inc.", "1 Market Street", "Tax ID: US-EIN-12-3456789",
        "BILL TO", "Globex", "Globex Corporation", "500 Oak Avenue", "Customer ID: cus_globex", "ap@globex.example",
        "Issue date: 01 Feb 2024", "Due date: 16 Feb 2024",
        # The stored period end is exclusive: the last service day is printed.
        f"01 Jan 2024 {DASH} 31 Jan 2024",
        "Pro plan", "1,234.56", "Premium support", "750.00", "8.875 %",
        "Subtotal 1,984.56 USD",
        "Sales tax NY (8.875 % of 1,984.56 USD) 176.13 USD",
        "Total 2,160.69 USD", "Prepaid credit applied -100.00 USD", "Amount due 2,060.69 USD",
        "Payment terms: net 15 days. Please pay 2,060.69 USD by 16 Feb 2024, quoting invoice ACME-000042.",
        "Page 1 of 1",
    ]:
        assert expected in text, expected
    assert "DRAFT" not in text
    assert f"31 Jan 2024 {DASH} 01 Feb 2024" not in text and f"01 Feb 2024 {DASH} " not in text

    metadata = PdfReader(BytesIO(pdf)).metadata
    assert metadata.title == "Invoice ACME-000042"
    assert metadata.author == "Acme Cloud Inc."


@pytest.mark.django_db
def test_reads_the_lines_in_one_query_and_the_rest_from_the_invoice(
    entity: BillingEntity, customer: Customer, django_assert_num_queries: Any
) -> None:
    invoice = make_invoice(entity, customer, [fee(f"Seat block {n}") for n in range(5)])
    invoice = Invoice.objects.get(pk=invoice.pk)
    with django_assert_num_queries(1):
        text = pdf_text(render_invoice_pdf(invoice))
    assert all(f"Seat block {n}" in text for n in range(5))


@pytest.mark.django_db
def test_prints_the_snapshot_taken_at_finalization_not_the_live_customer(
    entity: BillingEntity, customer: Customer
) -> None:
    invoice = make_invoice(entity, customer, [fee()])
    Customer.objects.filter(pk=customer.pk).update(name="Globex Renamed Later")
    text = pdf_text(render_invoice_pdf(Invoice.objects.get(pk=invoice.pk)))
    assert "Globex Corporation" in text
    assert "Renamed Later" not in text


@pytest.mark.django_db
def test_usage_line_prints_its_tier_breakdown_and_line_discount(entity: BillingEntity, customer: Customer) -> None:
    tiers = [
        {"label": "tier 1", "units": "1000", "unit_price": "0", "flat_fee": "0", "amount": "0"},
        {"label": "tier 2", "units": "9000", "unit_price": "0.0015", "flat_fee": "5", "amount": "18.5"},
        {"label": "tier 3", "units": "1250000", "unit_price": "0.0000015", "flat_fee": "0", "amount": "1.875"},
    ]
    invoice = make_invoice(entity, customer, [
        {"description": "API calls", "kind": InvoiceLine.Kind.USAGE, "quantity": D(1_260_000),
         "unit_price": D("0.000016567460"), "explanation": {"tiers": tiers}, "group": {"region": "eu-west"},
         "discount_amount": D("2.04")},
    ])
    text = pdf_text(render_invoice_pdf(invoice))
    assert "API calls" in text
    assert "1,260,000" in text
    assert "0.00001656746" in text  # unit prices keep their precision: never rounded to cents
    assert "region: eu-west" in text
    assert f"tier 1: 1,000 {TIMES} 0.00 = 0.00" in text
    assert f"tier 2: 9,000 {TIMES} 0.0015 + 5.00 flat fee = 18.50" in text
    assert f"tier 3: 1,250,000 {TIMES} 0.0000015 = 1.875" in text
    assert "Discount: -2.04 USD" in text


@pytest.mark.django_db
def test_taxes_per_rate_and_invoice_discounts(entity: BillingEntity, customer: Customer) -> None:
    invoice = make_invoice(
        entity, customer,
        [fee("Software", "1000.00", tax_percent=D(19), tax_treatment="standard", discount_amount=D("100.00")),
         fee("E-book", "50.00", tax_percent=D(7), tax_treatment="standard")],
        taxes=[("VAT DE standard", "19", "standard"), ("VAT DE reduced", "7", "standard")],
        discount_breakdown=[{"label": "LAUNCH10 (10 % off)", "amount": "100.00"}],
    )
    text = pdf_text(render_invoice_pdf(invoice))
    assert "Discount: LAUNCH10 (10 % off) -100.00 USD" in text
    assert "VAT DE standard (19 % of 900.00 USD) 171.00 USD" in text
    assert "VAT DE reduced (7 % of 50.00 USD) 3.50 USD" in text
    assert "Total 1,124.50 USD" in text


@pytest.mark.django_db
def test_reverse_charge_shows_zero_rate_and_legal_mention(entity: BillingEntity) -> None:
    buyer = CustomerFactory(billing_entity=entity, name="Beispiel GmbH", country="DE", tax_id="DE811907980",
                            currency="EUR")
    invoice = make_invoice(
        entity, buyer, [fee("Consulting", "2000.00", tax_treatment="reverse_charge")], currency="EUR",
        taxes=[("VAT reverse charge", "0", "reverse_charge")], mentions=[REVERSE_CHARGE_MENTION],
    )
    text = pdf_text(render_invoice_pdf(invoice))
    assert "0 % RC" in text
    assert "VAT reverse charge (0 % of 2,000.00 EUR, reverse charge) 0.00 EUR" in text
    assert REVERSE_CHARGE_MENTION in text
    assert "Tax ID: DE811907980" in text


@pytest.mark.django_db
def test_hostile_and_non_latin_names_are_printed_as_text(entity: BillingEntity) -> None:
    hostile = CustomerFactory(
        billing_entity=entity, name="<b>Acme & Co</b>", legal_name="</para><font size=90>Évil & Söhne",
        city="Zürich — 東京", address_line1="Rue de l'Église 5 <br/>", billing_emails=["a&b@example.test"],
    )
    invoice = make_invoice(
        entity, hostile,
        [fee("Widgets <script>alert(1)</script> & more 🎉 " + "very-long-" * 20),
         fee("Tokens — 東京 region", "10.00")],
        status=Invoice.Status.DRAFT, memo="Thanks & <i>see you</i>\nnext month",
    )
    pdf = render_invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert "<b>Acme & Co</b>" in text
    assert "</para><font size=90>Évil & Söhne" in text
    assert "Zürich —" in text  # Helvetica has no CJK glyphs: they may be missing, but nothing breaks
    assert "Rue de l'Église 5 <br/>" in text
    assert "Widgets <script>alert(1)</script> & more" in text
    assert "Thanks & <i>see you</i> next month" in text
    assert PdfReader(BytesIO(pdf)).metadata.subject == f"Draft invoice {invoice.pk} to <b>Acme & Co</b>"


@pytest.mark.django_db
def test_two_hundred_lines_flow_onto_several_pages_with_header_and_page_count(
    entity: BillingEntity, customer: Customer
) -> None:
    lines = [
        fee(f"Workspace {n:03d} subscription with a description long enough to wrap onto a second line", "9.99")
        for n in range(200)
    ]
    invoice = make_invoice(entity, customer, lines)
    pages = pages_text(render_invoice_pdf(invoice))
    assert len(pages) >= 4
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
        # The table header repeats at the top of every page the table runs onto.
        assert "Description Service period Quantity Unit price (USD) Amount (USD) Tax" in page
    text = " ".join(pages)
    assert all(f"Workspace {n:03d} " in text for n in range(200))
    assert "Total 1,998.00 USD" in pages[-1]
    assert "Total" not in pages[0].split("Tax", 1)[1]  # the totals come after the last line, not before


@pytest.mark.django_db
def test_draft_is_marked_and_uses_live_entity_and_customer(entity: BillingEntity, customer: Customer) -> None:
    invoice = make_invoice(entity, customer, [fee()], status=Invoice.Status.DRAFT)
    assert invoice.seller == {} and invoice.buyer == {}
    pdf = render_invoice_pdf(invoice)
    text = pdf_text(pdf)
    assert "DRAFT — not a valid invoice" in text
    assert "No. " not in text
    assert "Acme Cloud" in text and "Globex Corporation" in text and "Customer ID: cus_globex" in text
    assert "Issue date: —" in text
    assert "Payment terms: net 15 days from the issue date." in text
    assert PdfReader(BytesIO(pdf)).metadata.title == f"Draft invoice {invoice.pk}"


@pytest.mark.django_db
def test_void_invoice_is_marked_void(entity: BillingEntity, customer: Customer) -> None:
    invoice = make_invoice(entity, customer, [fee()], status=Invoice.Status.VOID, void_reason="Issued twice")
    text = pdf_text(render_invoice_pdf(invoice))
    assert "No. ACME-000042 VOID" in text
    assert "Issued twice" in text
    assert "This invoice is void" in text
    assert "Please pay" not in text


@pytest.mark.django_db
def test_paid_and_fully_prepaid_invoices_ask_for_no_payment(entity: BillingEntity, customer: Customer) -> None:
    paid = make_invoice(entity, customer, [fee()], status=Invoice.Status.PAID)
    prepaid = make_invoice(entity, customer, [fee("Top-up", "20.00")], number="ACME-000043",
                           sequence_number=43, prepaid=D("20.00"))
    assert "This invoice has been paid." in pdf_text(render_invoice_pdf(paid))
    text = pdf_text(render_invoice_pdf(prepaid))
    assert "Prepaid credit applied -20.00 USD Amount due 0.00 USD" in text
    assert "Nothing is due on this invoice." in text
    assert "Please pay" not in text


@pytest.mark.django_db
def test_jpy_amounts_have_no_decimals(entity: BillingEntity) -> None:
    buyer = CustomerFactory(billing_entity=entity, name="Tanaka KK", country="JP", currency="JPY")
    invoice = make_invoice(
        entity, buyer,
        [fee("Enterprise plan", "1234567", tax_percent=D(10), tax_treatment="standard"),
         {"description": "API calls", "quantity": D(3333), "unit_price": D("0.15"), "tax_percent": D(10),
          "tax_treatment": "standard"}],
        currency="JPY", taxes=[("JCT", "10", "standard")],
    )
    text = pdf_text(render_invoice_pdf(invoice))
    assert "Unit price (JPY)" in text
    assert "1,234,567" in text
    assert "500 " in text  # 3,333 x 0.15 = 499.95, rounded half-up once to 500 yen
    assert "Subtotal 1,235,067 JPY" in text
    assert "JCT (10 % of 1,235,067 JPY) 123,507 JPY" in text
    assert "Total 1,358,574 JPY" in text
    assert not re.search(r"\d\.\d{2} JPY", text)


@pytest.mark.django_db
def test_rendering_is_deterministic(entity: BillingEntity, customer: Customer) -> None:
    invoice = make_invoice(entity, customer, [fee()])
    assert render_invoice_pdf(invoice) == render_invoice_pdf(invoice)


@pytest.mark.django_db
def test_uncompressed_output_keeps_content_streams_readable(entity: BillingEntity, customer: Customer) -> None:
    invoice = make_invoice(entity, customer, [fee("Readable line")])
    assert b"(Readable line)" in render_invoice_pdf(invoice, compress=False)
    assert b"(Readable line)" not in render_invoice_pdf(invoice)


def test_unsaved_invoice_renders_from_given_lines() -> None:
    entity = BillingEntity(code="mem", name="In Memory Ltd", legal_name="In Memory Ltd", country="GB",
                           default_currency="GBP", invoice_prefix="MEM", credit_note_prefix="MEMC")
    customer = Customer(billing_entity=entity, external_id="cus_mem", name="Buyer", country="GB", currency="GBP")
    line = InvoiceLine(kind=InvoiceLine.Kind.ONE_OFF, description="Setup", customer=customer, quantity=D(1),
                       unit_price=D("99.5"), amount=D("99.50"))
    invoice = Invoice(billing_entity=entity, customer=customer, status=Invoice.Status.FINALIZED, currency="GBP",
                      number="MEM-1", issue_date=ISSUED, due_date=ISSUED, subtotal=D("99.50"), total=D("99.50"),
                      amount_due=D("99.50"), seller=party_snapshot_for_entity(entity),
                      buyer=party_snapshot_for_customer(customer))
    text = pdf_text(render_invoice_pdf(invoice, lines=[line]))
    assert "Setup" in text and "Amount due 99.50 GBP" in text and "Payment terms: due on receipt." in text


# --- snapshots -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_party_snapshots(entity: BillingEntity, customer: Customer) -> None:
    assert party_snapshot_for_entity(entity) == {
        "name": "Acme Cloud", "legal_name": "Acme Cloud Inc.",
        "address_lines": ["1 Market Street", "94105 San Francisco", "CA", "US"], "country": "US",
        "tax_id": "US-EIN-12-3456789", "email": "billing@acme.example",
    }
    assert party_snapshot_for_customer(customer) == {
        "name": "Globex", "legal_name": "Globex Corporation",
        "address_lines": ["500 Oak Avenue", "12345 Springfield", "US"], "country": "US",
        "tax_id": "US-99-1234567", "email": "ap@globex.example", "external_id": "cus_globex",
    }


# --- storage -------------------------------------------------------------------------------------------------------


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.mark.django_db
def test_store_invoice_pdf_saves_the_file_and_its_sha256(
    entity: BillingEntity, customer: Customer, media_root: Path
) -> None:
    invoice = make_invoice(entity, customer, [fee()])
    store_invoice_pdf(invoice)
    stored = Invoice.objects.get(pk=invoice.pk)
    assert stored.pdf.name == "invoices/acme-us/ACME-000042.pdf" == invoice_pdf_name(invoice)
    path = media_root / "invoices" / "acme-us" / "ACME-000042.pdf"
    content = path.read_bytes()
    assert content.startswith(b"%PDF-")
    assert stored.pdf_sha256 == hashlib.sha256(content).hexdigest() == invoice.pdf_sha256
    assert stored.updated_at == invoice.updated_at  # only the two PDF fields were written

    # Storing again replaces the file rather than adding a second one beside it.
    store_invoice_pdf(invoice)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ACME-000042.pdf"]
    assert Invoice.objects.get(pk=invoice.pk).pdf.name == "invoices/acme-us/ACME-000042.pdf"


@pytest.mark.django_db
def test_a_drafts_pdf_is_replaced_once_the_invoice_is_finalized(
    entity: BillingEntity, customer: Customer, media_root: Path
) -> None:
    invoice = make_invoice(entity, customer, [fee()], status=Invoice.Status.DRAFT)
    store_invoice_pdf(invoice)
    draft_name = f"invoices/acme-us/draft-{invoice.pk}.pdf"
    assert invoice.pdf.name == draft_name and default_storage.exists(draft_name)

    Invoice.objects.filter(pk=invoice.pk).update(
        status=Invoice.Status.FINALIZED, number="ACME-000043", sequence_number=43, issue_date=ISSUED,
        due_date=ISSUED, finalized_at=FINALIZED_AT,
        seller=party_snapshot_for_entity(entity), buyer=party_snapshot_for_customer(customer),
    )
    invoice.refresh_from_db()
    store_invoice_pdf(invoice)
    assert invoice.pdf.name == "invoices/acme-us/ACME-000043.pdf"
    assert not default_storage.exists(draft_name)
    with default_storage.open(invoice.pdf.name, "rb") as handle:
        assert "No. ACME-000043" in pdf_text(handle.read())


# --- formatting ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    (D("1234567.891"), "USD", "1,234,567.89 USD"),
    (D("0.005"), "USD", "0.01 USD"),
    (D("-45.16"), "EUR", "-45.16 EUR"),
    (D("-0.001"), "EUR", "0.00 EUR"),
    (D("1234.5"), "JPY", "1,235 JPY"),
    (D("12.3456"), "KWD", "12.346 KWD"),
    ("1000", "USD", "1,000.00 USD"),
])
def test_format_money(amount: Decimal | str, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


def test_format_money_refuses_floats() -> None:
    with pytest.raises(ValueError, match="Not a money amount"):
        format_money(1.5, "USD")  # type: ignore[arg-type]


@given(st.decimals(min_value=-10**12, max_value=10**12, places=4, allow_nan=False, allow_infinity=False),
       st.sampled_from(["USD", "JPY", "KWD"]))
def test_format_money_reads_back_as_the_rounded_amount(amount: Decimal, currency: str) -> None:
    text = format_money(amount, currency, with_code=False)
    assert D(text.replace(",", "")) == round_money(amount, currency)


def test_format_period_prints_the_last_service_day() -> None:
    assert format_period(date(2024, 2, 1), date(2024, 3, 1)) == f"01 Feb 2024 {DASH} 29 Feb 2024"
    assert format_period(date(2024, 2, 1), date(2024, 2, 2)) == "01 Feb 2024"
    assert format_period(None, None) == ""
