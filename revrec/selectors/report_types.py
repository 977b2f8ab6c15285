"""The shape every revenue report takes, so the admin (table and chart), the CSV export and the API render
any report the same way. Amounts stay Decimals in the document currency; nothing adds two currencies."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Series:
    """One line or bar series of a report's chart: (label, value) points in order."""

    name: str
    points: list[tuple[str, Decimal]]


@dataclass
class Report:
    key: str
    title: str
    description: str
    currency: str
    columns: list[str]
    rows: list[list[Any]]  # str, date, int or Decimal cells, one per column
    totals: list[Any] | None = None
    chart: list[Series] = field(default_factory=list)
    chart_kind: str = "bar"  # "bar", "stacked" or "line"
    # Reconciliations the report performs (e.g. roll-forward against the ledger): a message per failure.
    problems: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportParams:
    """What a report is asked for. `start`/`end`: a range of days ([start, end), months for monthly
    reports); `as_of`: a point in time (end of that day)."""

    entity_id: int
    currency: str
    start: date | None = None
    end: date | None = None
    as_of: date | None = None


@dataclass(frozen=True)
class ReportSpec:
    key: str
    title: str
    needs: tuple[str, ...]  # which of "start", "end", "as_of" it takes
    build: Callable[[ReportParams], Report]
