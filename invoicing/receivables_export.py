"""Receivables downloads: the aging report and its open items as CSV, a customer statement as CSV and PDF.

CSV: UTF-8, comma-separated, one header row, amounts as plain decimal strings to the currency's minor unit
("-12.50"; never thousands separators), dates ISO 8601. A text cell that a spreadsheet would run as a formula
(starting with = + - @ or a tab) gets a leading apostrophe, as in the CSV exports of customers
(customers.resources.escape_formula). Columns are listed in docs/receivables.md.

PDF: the A4 look of invoices (invoicing/pdf.py building blocks), built-in fonts only, every text escaped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from io import BytesIO
from typing import Any

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.platypus import BaseDocTemplate, Flowable, Frame, PageTemplate, Paragraph, Spacer, Table, TableStyle

from billing.api.fields import format_amount
from customers.resources import escape_formula
from invoicing.pdf import (
    BOTTOM_MARGIN,
    CELL_PADDING,
    CONTENT_WIDTH,
    HEADER_FILL,
    INK,
    MARGIN,
    PAGE_HEIGHT,
    RULE,
    STYLES,
    _cell,
    _page_decorator,
    _PageCountCanvas,
    _party,
    _party_block,
    _text,
    format_date,
    format_money,
    party_snapshot_for_customer,
    party_snapshot_for_entity,
)
from invoicing.services.receivables import BUCKET_LABELS, BUCKETS, AgingReport, Statement

AGING_COLUMNS = (
    "row", "billing_entity", "customer_external_id", "customer_name", "currency", *BUCKETS, "total",
    "unapplied_credit", "net",
)
AGING_ITEM_COLUMNS = (
    "billing_entity", "customer_external_id", "customer_name", "currency", "invoice_number", "issue_date",
    "due_date", "days_overdue", "bucket", "open_amount", "uncollectible",
)
STATEMENT_COLUMNS = (
    "date", "type", "number", "description", "reference", "due_date", "debit", "credit", "balance", "currency",
)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow([escape_formula("" if value is None else str(value)) for value in row])
    return out.getvalue()


def _amount(value: Decimal, currency: str) -> str:
    return format_amount(value, currency)


def _day(value: date | None) -> str:
    return value.isoformat() if value else ""


def aging_csv(report: AgingReport) -> str:
    """One row per billing entity, customer and currency ("customer"), then one per entity and currency
    ("total")."""
    rows: list[list[Any]] = []
    for row in report.rows:
        cur = row.currency
        rows.append(["customer", row.billing_entity_code, row.customer_external_id, row.customer_name, cur,
                      *(_amount(row.buckets[b], cur) for b in BUCKETS), _amount(row.total, cur),
                      _amount(row.unapplied_credit, cur), _amount(row.net, cur)])
    for total in report.totals:
        cur = total.currency
        rows.append(["total", total.billing_entity_code, "", "", cur,
                      *(_amount(total.buckets[b], cur) for b in BUCKETS), _amount(total.total, cur),
                      _amount(total.unapplied_credit, cur), _amount(total.net, cur)])
    return _csv(AGING_COLUMNS, rows)


def aging_items_csv(report: AgingReport) -> str:
    """The open invoices behind the aging report, one per row."""
    rows = []
    for row in report.rows:
        for item in row.items:
            rows.append([row.billing_entity_code, row.customer_external_id, row.customer_name, item.currency,
                         item.number, _day(item.issue_date), _day(item.due_date), item.days_overdue, item.bucket,
                         _amount(item.open_amount, item.currency), "yes" if item.uncollectible else "no"])
    return _csv(AGING_ITEM_COLUMNS, rows)


def statement_csv(statement: Statement) -> str:
    """An opening_balance row, one row per document in date order with the running balance, a
    closing_balance row."""
    cur = statement.currency
    rows: list[list[Any]] = [[_day(statement.start), "opening_balance", "", "Opening balance", "", "", "", "",
                              _amount(statement.opening_balance, cur), cur]]
    for line in statement.lines:
        rows.append([_day(line.day), line.type, line.number, line.description, line.reference, _day(line.due_date),
                     _amount(line.debit, cur) if line.debit else "", _amount(line.credit, cur) if line.credit else "",
                     _amount(line.balance, cur), cur])
    rows.append([_day(statement.end), "closing_balance", "", "Closing balance", "", "", "", "",
                 _amount(statement.closing_balance, cur), cur])
    return _csv(STATEMENT_COLUMNS, rows)


def statement_filename(statement: Statement, extension: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in statement.customer.external_id)[:80]
    return f"statement-{safe}-{statement.currency}-{statement.start}-{statement.end}.{extension}"


# --- PDF --------------------------------------------------------------------------------------------------


def _statement_title(statement: Statement) -> list[Flowable]:
    period = f"{format_date(statement.start)} to {format_date(statement.end)}"
    return [
        Paragraph("STATEMENT", STYLES["title"]),
        Paragraph(_text(period), STYLES["number"]),
        Paragraph(f"<font color='#6e7781'>Currency:</font> {_text(statement.currency)}", STYLES["meta"]),
    ]


def _statement_header(statement: Statement, seller: dict[str, Any], buyer: dict[str, Any]) -> Table:
    half = CONTENT_WIDTH / 2
    summary = [
        ("Opening balance", format_money(statement.opening_balance, statement.currency)),
        ("Closing balance", format_money(statement.closing_balance, statement.currency)),
    ]
    markup = "<br/>".join(f"<font color='#6e7781'>{label}:</font> {_text(value)}" for label, value in summary)
    table = Table(
        [[_party_block(seller, None), _statement_title(statement)],
         [_party_block(buyer, "ACCOUNT OF"), [Paragraph(markup, STYLES["meta"])]]],
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


def _grid(rows: list[list[Any]], widths: list[float], *, right_from: int, bold_last: bool = False) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1)
    commands: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
        ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
        ("TEXTCOLOR", (0, 0), (-1, -1), INK),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
        ("LINEBELOW", (0, 0), (-1, -1), 0.4, RULE),
        ("ALIGN", (right_from, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PADDING),
    ]
    if bold_last:
        commands.append(("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 8))
    table.setStyle(TableStyle(commands))
    return table


def _documents_table(statement: Statement) -> Table:
    cur = statement.currency
    widths = [60, 70, 70, 70, 74]
    widths.insert(2, CONTENT_WIDTH - sum(widths))
    style = STYLES["cell"]

    def money(value: Decimal) -> str:
        return format_money(value, cur, with_code=False) if value else ""

    rows: list[list[Any]] = [["Date", "Document", "Description", "Debit", "Credit", "Balance"]]
    rows.append([format_date(statement.start), "", "Opening balance", "", "",
                 format_money(statement.opening_balance, cur, with_code=False)])
    for line in statement.lines:
        text = line.description + (f" — {line.reference}" if line.reference else "")
        if line.due_date:
            text += f" (due {format_date(line.due_date)})"
        rows.append([format_date(line.day), _cell(line.number, style, widths[1]), _cell(text, style, widths[2]),
                     money(line.debit), money(line.credit), format_money(line.balance, cur, with_code=False)])
    rows.append([format_date(statement.end), "", "Closing balance", "", "",
                 format_money(statement.closing_balance, cur, with_code=False)])
    return _grid(rows, widths, right_from=3, bold_last=True)


def _open_items_table(statement: Statement) -> Table:
    cur = statement.currency
    widths = [72, 72, 72, 60, 80]
    widths.insert(0, CONTENT_WIDTH - sum(widths))
    rows: list[list[Any]] = [["Invoice", "Issued", "Due", "Days overdue", "Aging", "Open"]]
    for item in statement.open_items:
        rows.append([item.number, format_date(item.issue_date), format_date(item.due_date), str(item.days_overdue),
                     BUCKET_LABELS[item.bucket], format_money(item.open_amount, cur, with_code=False)])
    rows.append(["Total open", "", "", "", "", format_money(statement.open_total, cur, with_code=False)])
    return _grid(rows, widths, right_from=3, bold_last=True)


def _aging_table(statement: Statement) -> Table:
    cur = statement.currency
    rows = [[BUCKET_LABELS[b] for b in BUCKETS] + ["Total"],
            [format_money(statement.aging[b], cur, with_code=False) for b in BUCKETS]
            + [format_money(statement.open_total, cur, with_code=False)]]
    width = CONTENT_WIDTH / (len(BUCKETS) + 1)
    return _grid(rows, [width] * (len(BUCKETS) + 1), right_from=0)


def render_statement_pdf(statement: Statement, *, compress: bool = True) -> bytes:
    """The statement as an A4 PDF; the same statement gives the same bytes."""
    customer = statement.customer
    seller = _party(party_snapshot_for_entity(customer.billing_entity))
    buyer = _party(party_snapshot_for_customer(customer))
    title = f"Statement {statement.start.isoformat()} to {statement.end.isoformat()}"
    buffer = BytesIO()
    doc = BaseDocTemplate(
        buffer, pagesize=A4, title=title, author=str(seller["legal_name"] or seller["name"]),
        subject=f"{title} for {buyer['name']}", creator="Accrual", invariant=1, pageCompression=1 if compress else 0,
    )
    frame = Frame(MARGIN, BOTTOM_MARGIN, CONTENT_WIDTH, PAGE_HEIGHT - MARGIN - BOTTOM_MARGIN,
                  leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0, id="content")
    footer = f"{seller['name']} · {title} · {customer.external_id}"
    doc.addPageTemplates([PageTemplate(id="statement", frames=[frame], onPage=_page_decorator(footer, None))])
    story: list[Flowable] = [
        _statement_header(statement, seller, buyer),
        Spacer(1, 8 * mm),
        _documents_table(statement),
        Spacer(1, 8 * mm),
        Paragraph(f"Open invoices on {_text(format_date(statement.end))}", STYLES["party_name"]),
        Spacer(1, 2 * mm),
    ]
    if statement.open_items:
        story += [_open_items_table(statement), Spacer(1, 4 * mm), _aging_table(statement)]
    else:
        story.append(Paragraph("No invoice is open.", STYLES["body"]))
    credit = statement.unapplied_credit
    if credit > 0:
        story += [Spacer(1, 4 * mm), Paragraph(
            _text(f"Unapplied credit held: {format_money(credit, statement.currency)}; it is applied to the next "
                  "invoices or refunded on request."), STYLES["body"])]
    doc.build(story, canvasmaker=_PageCountCanvas)
    return buffer.getvalue()
