"""Credit note PDFs: the same A4 look as invoices (invoicing/pdf.py, whose building blocks are reused here).

Shows what the note stores and nothing recomputed: its number and date, the invoice it credits, the reason,
the lines credited with their service periods, the tax given back per rate, the total, and how it was settled
(applied to the invoice, refunded, credited to the balance, offset against another invoice).
"""

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, Spacer, Table, TableStyle

from invoicing.models import CreditNote, CreditNoteLine
from invoicing.pdf import (
    CELL_PADDING,
    CONTENT_WIDTH,
    EN_DASH,
    HEADER_FILL,
    INK,
    RULE,
    STYLES,
    _breakdown,
    _cell,
    _money_or_raw,
    _party,
    _party_block,
    _text,
    format_date,
    format_money,
    format_number,
    format_percent,
    format_period,
    render_a4,
)


def _title_block(note: CreditNote) -> list[Flowable]:
    return [
        Paragraph("CREDIT NOTE", STYLES["title"]),
        Paragraph(f"No. {_text(note.number)}", STYLES["number"]),
    ]


def _details_block(note: CreditNote, currency: str) -> list[Flowable]:
    invoice = note.invoice
    rows = [
        ("Issue date", format_date(note.issue_date)),
        ("Credits invoice", f"{invoice.number} of {format_date(invoice.issue_date)}"),
        ("Reason", note.get_reason_display()),
        ("Currency", currency),
    ]
    markup = "<br/>".join(f"<font color='#6e7781'>{label}:</font> {_text(value)}" for label, value in rows)
    return [Paragraph(markup, STYLES["meta"])]


def _header(note: CreditNote, seller: Mapping[str, Any], buyer: Mapping[str, Any], currency: str) -> Table:
    half = CONTENT_WIDTH / 2
    table = Table(
        [
            [_party_block(seller, None), _title_block(note)],
            [_party_block(buyer, "CREDIT TO"), _details_block(note, currency)],
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


def _tax_cell(line: CreditNoteLine) -> str:
    treatment = line.invoice_line.tax_treatment if line.invoice_line_id else "standard"
    if treatment == "exempt":
        return "exempt"
    if treatment == "not_taxable":
        return "—"
    text = format_percent(line.tax_percent)
    return f"{text} RC" if treatment == "reverse_charge" else text


def _lines_table(lines: Sequence[CreditNoteLine], currency: str) -> Table:
    widths = [64, 60, 76, 60, 42]
    widths.insert(0, CONTENT_WIDTH - sum(widths))
    cell, right, head, head_right = STYLES["cell"], STYLES["cell_right"], STYLES["head"], STYLES["head_right"]
    rows: list[list[Any]] = [[
        Paragraph("Description", head),
        Paragraph("Service period", head),
        Paragraph("Quantity", head_right),
        Paragraph(f"Credited ({currency})", head_right),
        Paragraph(f"Tax ({currency})", head_right),
        Paragraph("Rate", head_right),
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
        if len(rows) > 1:
            commands.append(("LINEABOVE", (0, len(rows)), (-1, len(rows)), 0.4, RULE))
        period = format_period(line.period_start, line.period_end).replace(f" {EN_DASH} ", f" {EN_DASH}\n")
        rows.append([
            _cell(line.description, cell, widths[0]),
            _cell(period, cell, widths[1]),
            _cell(format_number(line.quantity) if line.quantity is not None else "", right, widths[2]),
            _cell(format_money(line.amount, currency, with_code=False), right, widths[3]),
            _cell(format_money(line.tax_amount, currency, with_code=False), right, widths[4]),
            _cell(_tax_cell(line), right, widths[5]),
        ])
    commands.append(("LINEBELOW", (0, -1), (-1, -1), 0.75, INK))
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle(commands))
    return table


def _totals_table(note: CreditNote, currency: str) -> Table:
    label, value = STYLES["total_label"], STYLES["total_value"]
    rows: list[list[Paragraph]] = []

    def add(text: str, amount: str, *, grand: bool = False) -> None:
        rows.append([
            Paragraph(text, STYLES["grand_label"] if grand else label),
            Paragraph(_text(amount), STYLES["grand_value"] if grand else value),
        ])

    add("Subtotal credited", format_money(note.subtotal, currency))
    for tax in _breakdown(note.tax_breakdown):
        name = _text(tax.get("name") or "Tax")
        basis = f"{format_percent(tax.get('percent'))} of {_money_or_raw(tax.get('taxable_amount'), currency)}"
        if tax.get("treatment") == "reverse_charge":
            basis += ", reverse charge"
        elif tax.get("treatment") == "exempt":
            basis += ", exempt"
        add(f"{name} <font size='7' color='#6e7781'>({_text(basis)})</font>",
            _money_or_raw(tax.get("tax_amount"), currency))
    total_row = len(rows)
    add("Total credited", format_money(note.total, currency), grand=True)
    table = Table(rows, colWidths=[CONTENT_WIDTH * 0.36, CONTENT_WIDTH * 0.22], hAlign="RIGHT")
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LINEABOVE", (0, total_row), (-1, total_row), 0.75, INK),
    ]))
    return table


def settlement_sentences(note: CreditNote) -> list[str]:
    """How the note was settled, in words (the PDF and the admin show these)."""
    currency = str(note.currency)
    sentences = []
    if note.applied_to_invoice:
        sentences.append(f"{format_money(note.applied_to_invoice, currency)} reduces what invoice "
                         f"{note.invoice.number} still owes.")
    if note.refunded_amount:
        sentences.append(f"{format_money(note.refunded_amount, currency)} is refunded to you.")
    if note.credited_to_balance:
        sentences.append(f"{format_money(note.credited_to_balance, currency)} is credited to your account balance "
                         "and used on your next invoices.")
    if note.offset_amount and note.offset_invoice_id:
        sentences.append(f"{format_money(note.offset_amount, currency)} is applied to invoice "
                         f"{note.offset_invoice.number}.")
    return sentences


def _closing(note: CreditNote) -> list[Flowable]:
    flowables: list[Flowable] = [Spacer(1, 6 * mm), Paragraph("How this credit is settled", STYLES["label"])]
    flowables.extend(Paragraph(_text(sentence), STYLES["body"]) for sentence in settlement_sentences(note))
    if note.memo:
        flowables.extend([Spacer(1, 3 * mm), Paragraph(_text(note.memo).replace("\n", "<br/>"), STYLES["body"])])
    mentions = [str(m) for m in note.invoice.mentions if m] if isinstance(note.invoice.mentions, list) else []
    if mentions:
        flowables.append(Spacer(1, 3 * mm))
        flowables.extend(Paragraph(_text(mention), STYLES["small"]) for mention in mentions)
    return flowables


def render_credit_note_pdf(note: CreditNote, *, compress: bool = True) -> bytes:
    """The credit note as an A4 PDF; the same note always gives the same bytes."""
    currency = str(note.currency)
    lines = list(note.lines.select_related("invoice_line").order_by("position", "id"))
    seller, buyer = _party(note.seller or {}), _party(note.buyer or {})
    title = f"Credit note {note.number}"
    story = [
        _header(note, seller, buyer, currency),
        Spacer(1, 8 * mm),
        _lines_table(lines, currency),
        Spacer(1, 4 * mm),
        _totals_table(note, currency),
        *_closing(note),
    ]
    return render_a4(story, title=title, seller=seller, buyer=buyer, watermark=None, template_id="credit_note",
                     compress=compress)


def credit_note_pdf_name(note: CreditNote) -> str:
    return f"credit_notes/{note.billing_entity.code}/{note.number}.pdf"


def store_credit_note_pdf(note: CreditNote) -> None:
    """Render the note and store it with its SHA-256 (the only columns of an issued note that may change)."""
    content = render_credit_note_pdf(note)
    digest = hashlib.sha256(content).hexdigest()
    name = credit_note_pdf_name(note)
    if default_storage.exists(name):
        default_storage.delete(name)  # a re-render replaces the file under the same name
    saved = default_storage.save(name, ContentFile(content))
    CreditNote.objects.filter(pk=note.pk).update(pdf=saved, pdf_sha256=digest)
    note.pdf.name = saved
    note.pdf_sha256 = digest
