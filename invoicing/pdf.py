"""Invoice PDFs: an A4 document drawn with reportlab's platypus from the invoice, its lines and its party snapshots.

The PDF shows only what the invoice stores: the seller and buyer as snapshotted at finalization (a draft, which
has no snapshot yet, shows the live billing entity and customer), the rounded line amounts and the stored tax and
discount breakdowns. Nothing is recomputed here, so the PDF always agrees with the invoice it belongs to.

Only the built-in Helvetica fonts are used (no font files, no network). Characters they cannot draw (CJK, emoji)
come out as missing-glyph boxes rather than failing. Every piece of text is XML-escaped before it reaches
reportlab's paragraph markup. Money is Decimal throughout and printed to the currency's ISO 4217 minor unit.
"""

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from customers.models import BillingEntity, Customer
from invoicing.models import Invoice, InvoiceLine
from invoicing.pricing import exact_context
from invoicing.pricing.rounding import currency_exponent, round_money

FONT = "Helvetica"
FONT_BOLD = "Helvetica-Bold"
MARGIN = 16 * mm
PAGE_WIDTH, PAGE_HEIGHT = A4
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN
BOTTOM_MARGIN = MARGIN + 6 * mm  # room for the footer
INK = colors.HexColor("#1f2328")
GREY = colors.HexColor("#6e7781")
RULE = colors.HexColor("#d0d7de")
HEADER_FILL = colors.HexColor("#f3f4f6")
ALERT = colors.HexColor("#b42318")
WATERMARK = colors.HexColor("#eceef0")
EN_DASH = "\u2013"
TIMES = "\u00d7"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# The total page count is only known once every page is laid out: each footer draws this form, which the
# canvas fills in when the document is saved, so a single layout pass suffices.
PAGE_COUNT_FORM = "accrualPageCount"
CELL_PADDING = 3
DETAIL_INDENT = 8
# A line and its breakdown stay on one page unless the breakdown alone is this long.
KEEP_TOGETHER_MAX_DETAILS = 12

PARTY_KEYS = ("name", "legal_name", "address_lines", "country", "tax_id", "email")


def _style(name: str, **overrides: Any) -> ParagraphStyle:
    base: dict[str, Any] = {"fontName": FONT, "fontSize": 9, "leading": 11.5, "textColor": INK}
    return ParagraphStyle(name, **{**base, **overrides})


STYLES = {
    "body": _style("body"),
    "party_name": _style("party_name", fontName=FONT_BOLD, fontSize=10.5, leading=13),
    "label": _style("label", fontName=FONT_BOLD, fontSize=7.5, leading=10, textColor=GREY),
    "title": _style("title", fontName=FONT_BOLD, fontSize=22, leading=26, alignment=TA_RIGHT),
    "status": _style("status", fontName=FONT_BOLD, fontSize=13, leading=16, alignment=TA_RIGHT, textColor=ALERT),
    "number": _style("number", fontName=FONT_BOLD, fontSize=11, leading=14, alignment=TA_RIGHT),
    "meta": _style("meta", fontSize=8.5, leading=11, alignment=TA_RIGHT),
    "cell": _style("cell", fontSize=8, leading=10),
    "cell_right": _style("cell_right", fontSize=8, leading=10, alignment=TA_RIGHT),
    "head": _style("head", fontName=FONT_BOLD, fontSize=7.5, leading=9.5),
    "head_right": _style("head_right", fontName=FONT_BOLD, fontSize=7.5, leading=9.5, alignment=TA_RIGHT),
    "detail": _style("detail", fontSize=7, leading=8.5, textColor=GREY),
    "total_label": _style("total_label", alignment=TA_LEFT),
    "total_value": _style("total_value", alignment=TA_RIGHT),
    "grand_label": _style("grand_label", fontName=FONT_BOLD, fontSize=10.5, leading=13),
    "grand_value": _style("grand_value", fontName=FONT_BOLD, fontSize=10.5, leading=13, alignment=TA_RIGHT),
    "small": _style("small", fontSize=7.5, leading=9.5, textColor=GREY),
}


# --- party snapshots ---------------------------------------------------------------------------------------------


def party_snapshot_for_entity(entity: BillingEntity) -> dict[str, Any]:
    """The seller as printed on an invoice; finalization stores this dict in `Invoice.seller`."""
    return {
        "name": entity.name,
        "legal_name": entity.legal_name,
        "address_lines": entity.address_lines(),
        "country": str(entity.country or ""),
        "tax_id": entity.tax_id,
        "email": entity.email,
    }


def party_snapshot_for_customer(customer: Customer) -> dict[str, Any]:
    """The buyer as printed on an invoice; finalization stores this dict in `Invoice.buyer`."""
    emails = [str(e) for e in (customer.billing_emails or []) if e]
    return {
        "name": customer.name,
        "legal_name": customer.legal_name,
        "address_lines": customer.address_lines(),
        "country": str(customer.country or ""),
        "tax_id": customer.tax_id,
        "email": emails[0] if emails else "",
        "external_id": customer.external_id,
    }


# --- formatting --------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Any stored value as markup-safe text: reportlab parses paragraphs as XML."""
    return escape("" if value is None else str(value))


def _decimal(value: Any) -> Decimal | None:
    """A stored number as Decimal; JSON breakdowns hold strings. Floats are refused: money is never binary."""
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, bool | float):
        return None
    if isinstance(value, int | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def format_number(value: Decimal, min_places: int = 0) -> str:
    """`value` with thousands separators and every significant decimal, never rounded, never in E notation."""
    with localcontext(exact_context()):
        exponent = value.normalize().as_tuple().exponent
        places = max(min_places, -exponent if isinstance(exponent, int) and exponent < 0 else 0)
        text = f"{value:,.{places}f}"
    # Decimal keeps the sign of zero ("-0.00"); a document should not.
    return text[1:] if text.startswith("-") and value == 0 else text


def format_money(amount: Decimal | str | int, currency: str, *, with_code: bool = True) -> str:
    """An amount to the currency's minor unit with thousands separators: '1,234.56 USD', '12,000 JPY'."""
    number = _decimal(amount)
    if number is None:
        raise ValueError(f"Not a money amount: {amount!r}.")
    rounded = round_money(number, currency)
    text = format_number(rounded, currency_exponent(currency))
    return f"{text} {currency}" if with_code else text


def _money_or_raw(value: Any, currency: str, *, with_code: bool = True) -> str:
    number = _decimal(value)
    return format_money(number, currency, with_code=with_code) if number is not None else str(value or "")


def _number_or_raw(value: Any, min_places: int = 0) -> str:
    number = _decimal(value)
    return format_number(number, min_places) if number is not None else str(value or "")


def format_date(day: date | None) -> str:
    """'05 Mar 2024', with English month names whatever the server's locale."""
    if day is None:
        return "—"
    return f"{day.day:02d} {MONTHS[day.month - 1]} {day.year}"


def format_period(start: date | None, end_exclusive: date | None) -> str:
    """A service period as printed: periods are stored with an exclusive end, people read the last day."""
    if start is None or end_exclusive is None:
        return ""
    last = end_exclusive - timedelta(days=1)
    if last <= start:
        return format_date(start)
    return f"{format_date(start)} {EN_DASH} {format_date(last)}"


def format_percent(percent: Any) -> str:
    number = _decimal(percent)
    return f"{format_number(number)} %" if number is not None else str(percent or "")


# --- document pieces ---------------------------------------------------------------------------------------------


def _party(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot with every key present, whatever an older or hand-made snapshot held."""
    party = {key: snapshot.get(key) or "" for key in (*PARTY_KEYS, "external_id")}
    lines = snapshot.get("address_lines") or []
    party["address_lines"] = [str(line) for line in lines] if isinstance(lines, list | tuple) else [str(lines)]
    return party


def _party_block(party: Mapping[str, Any], heading: str | None) -> list[Flowable]:
    flowables: list[Flowable] = []
    if heading:
        flowables.append(Paragraph(_text(heading), STYLES["label"]))
    flowables.append(Paragraph(_text(party["name"]), STYLES["party_name"]))
    rows: list[str] = []
    if party["legal_name"] and party["legal_name"] != party["name"]:
        rows.append(_text(party["legal_name"]))
    rows.extend(_text(line) for line in party["address_lines"])
    if party["tax_id"]:
        rows.append(f"Tax ID: {_text(party['tax_id'])}")
    if party.get("external_id"):
        rows.append(f"Customer ID: {_text(party['external_id'])}")
    if party["email"]:
        rows.append(_text(party["email"]))
    if rows:
        flowables.append(Paragraph("<br/>".join(rows), STYLES["body"]))
    return flowables


def _title_block(invoice: Invoice) -> list[Flowable]:
    if invoice.status == Invoice.Status.DRAFT:
        return [
            Paragraph("DRAFT", STYLES["title"]),
            Paragraph("DRAFT — not a valid invoice", STYLES["status"]),
        ]
    flowables: list[Flowable] = [
        Paragraph("INVOICE", STYLES["title"]),
        Paragraph(f"No. {_text(invoice.number)}", STYLES["number"]),
    ]
    if invoice.status == Invoice.Status.VOID:
        flowables.append(Paragraph("VOID", STYLES["status"]))
        if invoice.void_reason:
            flowables.append(Paragraph(_text(invoice.void_reason), STYLES["meta"]))
    return flowables


def _details_block(invoice: Invoice, currency: str) -> list[Flowable]:
    rows = [
        ("Issue date", format_date(invoice.issue_date)),
        ("Due date", format_date(invoice.due_date)),
    ]
    period = format_period(invoice.period_start, invoice.period_end)
    if period:
        rows.append(("Service period", period))
    rows.append(("Currency", currency))
    markup = "<br/>".join(f"<font color='#6e7781'>{label}:</font> {_text(value)}" for label, value in rows)
    return [Paragraph(markup, STYLES["meta"])]


def _header(invoice: Invoice, seller: Mapping[str, Any], buyer: Mapping[str, Any], currency: str) -> Table:
    half = CONTENT_WIDTH / 2
    table = Table(
        [
            [_party_block(seller, None), _title_block(invoice)],
            [_party_block(buyer, "BILL TO"), _details_block(invoice, currency)],
        ],
        colWidths=[half, half],
    )
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 0),
        ("RIGHTPADDING", (0, 0), (-1, -1), 0),
        ("TOPPADDING", (0, 1), (-1, 1), 8 * mm),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
    ]))
    return table


def _tax_cell(line: InvoiceLine) -> str:
    if line.tax_treatment == "exempt":
        return "exempt"
    if line.tax_treatment == "not_taxable":
        return "—"
    text = format_percent(line.tax_percent)
    return f"{text} RC" if line.tax_treatment == "reverse_charge" else text


def _tier_text(tier: Mapping[str, Any], currency: str) -> str:
    exponent = currency_exponent(currency)
    text = (
        f"{tier.get('label') or 'Tier'}: {_number_or_raw(tier.get('units'))} {TIMES} "
        f"{_number_or_raw(tier.get('unit_price'), exponent)}"
    )
    flat_fee = _decimal(tier.get("flat_fee"))
    if flat_fee is not None and flat_fee != 0:
        text += f" + {format_number(flat_fee, exponent)} flat fee"
    elif flat_fee is None and tier.get("flat_fee"):
        text += f" + {tier.get('flat_fee')} flat fee"
    return f"{text} = {_number_or_raw(tier.get('amount'), exponent)}"


def _detail_rows(line: InvoiceLine, currency: str) -> list[str]:
    """The grey rows printed under a line: its group-by values, its tier breakdown and its discount."""
    details: list[str] = []
    if isinstance(line.group, Mapping) and line.group:
        details.append(", ".join(f"{key}: {value}" for key, value in line.group.items()))
    explanation = line.explanation if isinstance(line.explanation, Mapping) else {}
    tiers = explanation.get("tiers") or []
    if isinstance(tiers, list):
        details.extend(_tier_text(tier, currency) for tier in tiers if isinstance(tier, Mapping))
    if line.discount_amount:
        details.append(f"Discount: -{format_money(line.discount_amount, currency)}")
    return details


def _cell(text: str, style: ParagraphStyle, width: float) -> str | Paragraph:
    """A table cell: plain text when every line of it fits the column (reportlab lays strings out many times
    faster than paragraphs), else a paragraph that wraps. Plain cells take their font from the table style."""
    room = width - 2 * CELL_PADDING - style.leftIndent
    if all(stringWidth(part, style.fontName, style.fontSize) <= room for part in text.split("\n")):
        return text
    return Paragraph(_text(text).replace("\n", "<br/>"), style)


def _lines_table(lines: Sequence[InvoiceLine], currency: str) -> Table:
    exponent = currency_exponent(currency)
    widths = [64, 60, 74, 76, 42]
    widths.insert(0, CONTENT_WIDTH - sum(widths))
    cell, right, head, head_right = STYLES["cell"], STYLES["cell_right"], STYLES["head"], STYLES["head_right"]
    detail = STYLES["detail"]
    rows: list[list[Any]] = [[
        Paragraph("Description", head),
        Paragraph("Service period", head),
        Paragraph("Quantity", head_right),
        Paragraph(f"Unit price ({currency})", head_right),
        Paragraph(f"Amount ({currency})", head_right),
        Paragraph("Tax", head_right),
    ]]
    commands: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
        ("LINEBELOW", (0, 0), (-1, 0), 0.75, INK),
        ("LEFTPADDING", (0, 0), (-1, -1), CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PADDING),
        ("FONT", (0, 1), (-1, -1), cell.fontName, cell.fontSize, cell.leading),
        ("TEXTCOLOR", (0, 1), (-1, -1), cell.textColor),
        ("ALIGN", (2, 1), (-1, -1), "RIGHT"),
    ]
    for line in lines:
        first = len(rows)
        # The period breaks after its dash, so that it takes two short lines in its narrow column.
        period = format_period(line.period_start, line.period_end).replace(f" {EN_DASH} ", f" {EN_DASH}\n")
        rows.append([
            _cell(line.description, cell, widths[0]),
            _cell(period, cell, widths[1]),
            _cell(format_number(line.quantity), right, widths[2]),
            _cell(format_number(line.unit_price, exponent), right, widths[3]),
            _cell(format_money(line.amount, currency, with_code=False), right, widths[4]),
            _cell(_tax_cell(line), right, widths[5]),
        ])
        if first > 1:
            commands.append(("LINEABOVE", (0, first), (-1, first), 0.4, RULE))
        details = _detail_rows(line, currency)
        if details:
            # All of a line's details share one spanning row: reportlab's layout time grows with the number
            # of rows times the number of style commands, and a row per tier made long invoices crawl.
            index = len(rows)
            rows.append([_cell("\n".join(details), detail, CONTENT_WIDTH - DETAIL_INDENT), "", "", "", "", ""])
            commands.extend([
                ("SPAN", (0, index), (-1, index)),
                ("FONT", (0, index), (-1, index), detail.fontName, detail.fontSize, detail.leading),
                ("TEXTCOLOR", (0, index), (-1, index), detail.textColor),
                ("LEFTPADDING", (0, index), (-1, index), CELL_PADDING + DETAIL_INDENT),
                ("TOPPADDING", (0, index), (-1, index), 0),
                ("BOTTOMPADDING", (0, index), (-1, index), 2),
            ])
        if details and len(details) <= KEEP_TOGETHER_MAX_DETAILS:
            commands.append(("NOSPLIT", (0, first), (-1, first + 1)))
    if not lines:
        rows.append([Paragraph("No lines.", detail), "", "", "", "", ""])
        commands.append(("SPAN", (0, 1), (-1, 1)))
    commands.append(("LINEBELOW", (0, -1), (-1, -1), 0.75, INK))
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle(commands))
    return table


def _breakdown(value: Any) -> Iterable[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _totals_table(invoice: Invoice, currency: str) -> Table:
    label, value = STYLES["total_label"], STYLES["total_value"]
    rows: list[list[Paragraph]] = []
    commands: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]

    def add(text: str, amount: str, *, grand: bool = False) -> None:
        rows.append([
            Paragraph(text, STYLES["grand_label"] if grand else label),
            Paragraph(_text(amount), STYLES["grand_value"] if grand else value),
        ])

    add("Subtotal", format_money(invoice.subtotal, currency))
    discounts = list(_breakdown(invoice.discount_breakdown))
    for discount in discounts:
        add(f"Discount: {_text(discount.get('label'))}", f"-{_money_or_raw(discount.get('amount'), currency)}")
    if not discounts and invoice.discount_total:
        add("Discounts", f"-{format_money(invoice.discount_total, currency)}")
    taxes = list(_breakdown(invoice.tax_breakdown))
    for tax in taxes:
        name = _text(tax.get("name") or "Tax")
        basis = f"{format_percent(tax.get('percent'))} of {_money_or_raw(tax.get('taxable_amount'), currency)}"
        if tax.get("treatment") == "reverse_charge":
            basis += ", reverse charge"
        elif tax.get("treatment") == "exempt":
            basis += ", exempt"
        add(f"{name} <font size='7' color='#6e7781'>({_text(basis)})</font>",
            _money_or_raw(tax.get("tax_amount"), currency))
    if not taxes and invoice.tax_total:
        add("Tax", format_money(invoice.tax_total, currency))
    total_row = len(rows)
    add("Total", format_money(invoice.total, currency), grand=True)
    commands.append(("LINEABOVE", (0, total_row), (-1, total_row), 0.75, INK))
    if invoice.prepaid_credit_applied:
        add("Prepaid credit applied", f"-{format_money(invoice.prepaid_credit_applied, currency)}")
        due_row = len(rows)
        add("Amount due", format_money(invoice.amount_due, currency), grand=True)
        commands.append(("LINEABOVE", (0, due_row), (-1, due_row), 0.4, RULE))
    else:
        add("Amount due", format_money(invoice.amount_due, currency))
    table = Table(rows, colWidths=[CONTENT_WIDTH * 0.36, CONTENT_WIDTH * 0.22], hAlign="RIGHT")
    table.setStyle(TableStyle(commands))
    return table


def _payment_terms(invoice: Invoice, currency: str) -> str:
    if invoice.status == Invoice.Status.VOID:
        return "This invoice is void: nothing is to be paid on it."
    if invoice.status == Invoice.Status.PAID:
        return "This invoice has been paid. Thank you."
    if invoice.amount_due <= 0:
        return "Nothing is due on this invoice."
    amount = format_money(invoice.amount_due, currency)
    if invoice.issue_date and invoice.due_date:
        days = (invoice.due_date - invoice.issue_date).days
        terms = "due on receipt" if days <= 0 else f"net {days} days"
        reference = f", quoting invoice {invoice.number}" if invoice.number else ""
        return f"Payment terms: {terms}. Please pay {amount} by {format_date(invoice.due_date)}{reference}."
    # A draft has no dates yet: state the terms that finalization will apply.
    days = invoice.customer.effective_payment_terms_days
    terms = "due on receipt" if days <= 0 else f"net {days} days from the issue date"
    return f"Payment terms: {terms}."


def _closing(invoice: Invoice, currency: str) -> list[Flowable]:
    flowables: list[Flowable] = [Spacer(1, 6 * mm), Paragraph(_text(_payment_terms(invoice, currency)), STYLES["body"])]
    mentions = [str(m) for m in invoice.mentions if m] if isinstance(invoice.mentions, list) else []
    if invoice.memo:
        flowables.extend([Spacer(1, 3 * mm), Paragraph(_text(invoice.memo).replace("\n", "<br/>"), STYLES["body"])])
    if mentions:
        flowables.append(Spacer(1, 3 * mm))
        flowables.extend(Paragraph(_text(mention), STYLES["small"]) for mention in mentions)
    return flowables


# --- canvas and document ------------------------------------------------------------------------------------------


class _PageCountCanvas(Canvas):
    """A canvas whose footers can say "of M": the form they draw is filled with the page count on save."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages_shown = 0

    def showPage(self) -> None:
        self._pages_shown += 1
        super().showPage()

    def save(self) -> None:
        self.beginForm(PAGE_COUNT_FORM)
        self.setFont(FONT, 7)
        self.setFillColor(GREY)
        self.drawString(0, 0, str(self._pages_shown))
        self.endForm()
        super().save()


def _page_decorator(footer: str, watermark: str | None) -> Callable[[Canvas, BaseDocTemplate], None]:
    """Draws what every page carries, before its content: the status watermark, then the footer."""

    def decorate(canvas: Canvas, doc: BaseDocTemplate) -> None:
        canvas.saveState()
        if watermark:
            canvas.saveState()
            canvas.setFillColor(WATERMARK)
            canvas.setFont(FONT_BOLD, 110)
            canvas.translate(PAGE_WIDTH / 2, PAGE_HEIGHT / 2)
            canvas.rotate(45)
            canvas.drawCentredString(0, -40, watermark)
            canvas.restoreState()
        canvas.setFont(FONT, 7)
        canvas.setFillColor(GREY)
        canvas.setStrokeColor(RULE)
        canvas.setLineWidth(0.4)
        canvas.line(MARGIN, MARGIN - 3 * mm, PAGE_WIDTH - MARGIN, MARGIN - 3 * mm)
        baseline = MARGIN - 7 * mm
        canvas.drawString(MARGIN, baseline, footer)
        label = f"Page {doc.page} of "
        x = PAGE_WIDTH - MARGIN - 22 * mm
        canvas.drawString(x, baseline, label)
        canvas.translate(x + canvas.stringWidth(label, FONT, 7), baseline)
        canvas.doForm(PAGE_COUNT_FORM)
        canvas.restoreState()

    return decorate


def _document_title(invoice: Invoice) -> str:
    if invoice.number:
        return f"Invoice {invoice.number}"
    return f"Draft invoice {invoice.pk}" if invoice.pk else "Draft invoice"


def _invoice_lines(invoice: Invoice) -> list[InvoiceLine]:
    if invoice.pk is None:
        return []
    # One query: product and subscription come joined, so reading them per line never adds a query.
    return list(invoice.lines.select_related("product", "subscription").order_by("position", "id"))


def render_invoice_pdf(
    invoice: Invoice, *, lines: Sequence[InvoiceLine] | None = None, compress: bool = True
) -> bytes:
    """The invoice as an A4 PDF.

    `lines` defaults to the invoice's stored lines (one query); pass them to render an unsaved invoice.
    `compress=False` leaves the page content streams readable (for inspection). The output depends only on
    the invoice's data, so rendering the same invoice twice gives the same bytes.
    """
    currency = str(invoice.currency)
    lines = list(lines) if lines is not None else _invoice_lines(invoice)
    seller = _party(invoice.seller or party_snapshot_for_entity(invoice.billing_entity))
    buyer = _party(invoice.buyer or party_snapshot_for_customer(invoice.customer))
    title = _document_title(invoice)
    watermark = {Invoice.Status.DRAFT: "DRAFT", Invoice.Status.VOID: "VOID"}.get(invoice.status)

    story = [
        _header(invoice, seller, buyer, currency),
        Spacer(1, 8 * mm),
        _lines_table(lines, currency),
        Spacer(1, 4 * mm),
        _totals_table(invoice, currency),
        *_closing(invoice, currency),
    ]
    return render_a4(story, title=title, seller=seller, buyer=buyer, watermark=watermark, template_id="invoice",
                     compress=compress)


def render_a4(story: list[Any], *, title: str, seller: dict[str, Any], buyer: dict[str, Any],
              watermark: str | None, template_id: str, compress: bool) -> bytes:
    """An A4 document of the seller to the buyer: its metadata, one content frame, the footer (and watermark)
    on every page and "page N of M". Invariant output: the same story gives the same bytes."""
    buffer = BytesIO()
    doc = BaseDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author=str(seller["legal_name"] or seller["name"]),
        subject=f"{title} to {buyer['name']}",
        creator="Accrual",
        invariant=1,
        pageCompression=1 if compress else 0,
    )
    # A frame without padding, so that the content lines up with the footer on the page margins.
    frame = Frame(
        MARGIN, BOTTOM_MARGIN, CONTENT_WIDTH, PAGE_HEIGHT - MARGIN - BOTTOM_MARGIN,
        leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0, id="content",
    )
    footer = f"{seller['name']} · {title}"
    doc.addPageTemplates([PageTemplate(id=template_id, frames=[frame], onPage=_page_decorator(footer, watermark))])
    doc.build(story, canvasmaker=_PageCountCanvas)
    return buffer.getvalue()


def invoice_pdf_name(invoice: Invoice) -> str:
    """Where the invoice's PDF is stored: one file per invoice, named by its number (or draft id)."""
    return f"invoices/{invoice.billing_entity.code}/{invoice.number or f'draft-{invoice.pk}'}.pdf"


def store_invoice_pdf(invoice: Invoice) -> None:
    """Renders the invoice, saves the PDF in the default storage and records its name and SHA-256.

    Only `pdf` and `pdf_sha256` are written: a finalized invoice is otherwise immutable. A re-render replaces
    the file under the same name, and a draft's file is removed once the finalized one takes its place.
    """
    content = render_invoice_pdf(invoice)
    digest = hashlib.sha256(content).hexdigest()
    name = invoice_pdf_name(invoice)
    previous = invoice.pdf.name if invoice.pdf else ""
    # Storage backends pick a fresh name when the file exists; the invoice keeps one file, so replace it.
    if default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(content))
    Invoice.objects.filter(pk=invoice.pk).update(pdf=saved, pdf_sha256=digest)
    invoice.pdf.name = saved
    invoice.pdf_sha256 = digest
    if previous and previous != saved and default_storage.exists(previous):
        default_storage.delete(previous)
