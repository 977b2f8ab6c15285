"""Revenue downloads: any report as CSV, and a period's journal in the layout an ERP imports
(docs/revrec-journal-export.md, column by column).

CSV: UTF-8, comma-separated, one header row, amounts as plain decimal strings ("-12.50"; no exponent, no
thousands separators), dates ISO 8601. A text cell a spreadsheet would run as a formula (= + - @ tab) gets a
leading apostrophe (customers.resources.escape_formula), as every other export of the project does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from billing.api.fields import format_amount
from customers.models import BillingEntity
from customers.resources import escape_formula
from revrec.models import AccountingPeriod, JournalLine
from revrec.selectors.report_types import Report

JOURNAL_EXPORT_COLUMNS = (
    "entry_number", "entry_date", "period", "currency", "account_code", "account_name", "debit", "credit",
    "description", "customer_external_id", "product_code", "source_key", "original_date", "entry_kind",
    "line_memo",
)


def cell(value: Any, currency: str | None = None) -> str:
    """One CSV cell: a Decimal plain (never 1E+2; to the currency's minor unit, more when it carries
    more), a date ISO, None empty, text made inert."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format_amount(value, currency) if currency else f"{value:f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool | int):
        return str(value)
    return escape_formula(str(value))


def _write(header: Sequence[str], rows: Iterable[Sequence[Any]], currency: str | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(name) for name in header])
    for row in rows:
        writer.writerow([cell(value, currency) for value in row])
    return out.getvalue()


def report_csv(report: Report) -> str:
    """The report's table: its columns, its rows, then its totals row when it has one."""
    rows: list[Sequence[Any]] = list(report.rows)
    if report.totals is not None:
        rows.append(report.totals)
    return _write(report.columns, rows, report.currency)


def report_filename(report: Report) -> str:
    parts = [report.key, report.currency.lower()]
    for name in ("start", "end", "as_of"):
        value = report.parameters.get(name)
        if isinstance(value, date):
            parts.append(value.isoformat())
    return "-".join(parts) + ".csv"


def journal_export_rows(entity: BillingEntity, period: AccountingPeriod) -> list[list[Any]]:
    """One row per journal line of the period's entries, entry by entry (each entry's rows balance)."""
    if period.billing_entity_id != entity.pk:
        raise ValueError(f"Period {period} is not one of {entity.code}'s.")
    lines = (
        JournalLine.objects.filter(entry__period=period)
        .select_related("entry", "account", "customer", "product")
        .order_by("entry__entry_date", "entry_id", "id")
    )
    rows = []
    for line in lines:
        entry = line.entry
        currency = str(entry.currency)
        rows.append([
            entry.pk, entry.entry_date, period.label, currency, line.account.code, line.account.name,
            format_amount(line.debit, currency), format_amount(line.credit, currency), entry.description,
            line.customer.external_id if line.customer else "", line.product.code if line.product else "",
            entry.source_key, entry.original_date, entry.kind, line.memo,
        ])
    return rows


def journal_export_csv(entity: BillingEntity, period: AccountingPeriod) -> str:
    return _write(JOURNAL_EXPORT_COLUMNS, journal_export_rows(entity, period))


def journal_export_filename(entity: BillingEntity, period: AccountingPeriod) -> str:
    return f"journal-{entity.code}-{period.label}.csv"
