"""Revenue reports in the admin: an index page (listed in the admin's app list under Revrec) and one page per
report of `revrec.selectors.reports.REPORTS`, each with its form, the table (amounts right-aligned, totals
row), the reconciliation problems in red, a chart drawn as inline SVG, and a CSV download.

Pages hang off the journal entry admin and need the journal view permission (every finance role reads
them); the CSV download needs the download permission of `revrec.admin.common` as well.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from moneyed import CurrencyDoesNotExist, get_currency

from billing.errors import BillingError
from customers.models import BillingEntity
from revrec.admin.charts import render_chart
from revrec.admin.common import VIEW_LEDGER, amount, can_download, download, page
from revrec.selectors.report_types import Report, ReportParams, ReportSpec

DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
MONTH = re.compile(r"^(\d{4})-(\d{2})$")
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100
MAX_MONTHS = 120  # ten years of monthly columns is the most a page shows


def reports() -> dict[str, ReportSpec]:
    from revrec.selectors.reports import REPORTS  # imported when used (tests stand in for it)

    return REPORTS


def run(key: str, params: ReportParams) -> Report:
    from revrec.selectors.reports import run_report

    return run_report(key, params)


def _months_back(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


class MonthField(forms.CharField):
    """A month as YYYY-MM (an `<input type="month">`), cleaned to its first day."""

    widget = forms.TextInput(attrs={"type": "month", "placeholder": "YYYY-MM", "size": 8})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=7, **kwargs)

    def clean(self, value: Any) -> date | None:  # type: ignore[override]
        text = (super().clean(value) or "").strip()
        if not text:
            return None
        match = MONTH.match(text)
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise forms.ValidationError("Enter a month as YYYY-MM, e.g. 2024-01.")
        year = int(match.group(1))
        if not EARLIEST_YEAR <= year <= LATEST_YEAR:
            raise forms.ValidationError(f"Choose a year from {EARLIEST_YEAR} to {LATEST_YEAR}.")
        return date(year, int(match.group(2)), 1)


class ReportForm(forms.Form):
    billing_entity = forms.ModelChoiceField(BillingEntity.objects.order_by("code"), to_field_name="code",
                                            empty_label=None)
    currency = forms.CharField(max_length=3, required=False, help_text="Empty: the entity's default currency.")
    start = MonthField(required=False, label="From month", help_text="Empty: 11 months before the last one.")
    end = MonthField(required=False, label="Through month", help_text="Empty: this month.")
    as_of = forms.DateField(required=False, widget=DATE_WIDGET, label="As of",
                            help_text="End of this day; empty: today.")

    def __init__(self, *args: Any, needs: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.needs = needs
        if "as_of" not in needs:
            del self.fields["as_of"]
        if "start" not in needs:
            del self.fields["start"]
        if "end" not in needs:
            del self.fields["end"]

    def clean_currency(self) -> str:
        code = (self.cleaned_data.get("currency") or "").strip().upper()
        if code:
            try:
                get_currency(code)
            except CurrencyDoesNotExist:
                raise forms.ValidationError("Unknown currency: use an ISO 4217 code such as USD.") from None
        return code

    def clean_as_of(self) -> date:
        day = self.cleaned_data.get("as_of") or timezone.now().date()
        if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
            raise forms.ValidationError(f"Choose a day from {EARLIEST_YEAR} to {LATEST_YEAR}.")
        return day

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        entity = data["billing_entity"]
        data["currency"] = data.get("currency") or str(entity.default_currency)
        if "end" in self.fields:
            last = data.get("end") or timezone.now().date().replace(day=1)
            first = data.get("start") or _months_back(last, 11)
            if last < first:
                self.add_error("end", "The last month comes before the first.")
            elif (last.year - first.year) * 12 + last.month - first.month >= MAX_MONTHS:
                self.add_error("start", f"Choose at most {MAX_MONTHS} months.")
            data["start"], data["end"] = first, _next_month(last)  # [start, end): through the whole last month
        elif "start" in self.fields:
            data["start"] = data.get("start") or timezone.now().date().replace(day=1)
        return data

    def params(self) -> ReportParams:
        data = self.cleaned_data
        return ReportParams(entity_id=data["billing_entity"].pk, currency=data["currency"], start=data.get("start"),
                            end=data.get("end"), as_of=data.get("as_of"))


def _initial(needs: tuple[str, ...]) -> dict[str, Any]:
    """The defaults shown when a page is first opened: the first entity, its currency, the last 12 months."""
    entity = BillingEntity.objects.order_by("code").first()
    today = timezone.now().date()
    initial: dict[str, Any] = {}
    if entity is not None:
        initial.update(billing_entity=entity.code, currency=str(entity.default_currency))
    if "end" in needs:
        initial["end"] = f"{today:%Y-%m}"
        initial["start"] = f"{_months_back(today.replace(day=1), 11):%Y-%m}"
    elif "start" in needs:
        initial["start"] = f"{today:%Y-%m}"
    if "as_of" in needs:
        initial["as_of"] = today.isoformat()
    return initial


def _cell(value: Any, currency: str) -> tuple[str, bool]:
    """(text, is a figure) for a table cell: figures are right-aligned."""
    if isinstance(value, bool) or value is None:
        return ("" if value is None else str(value)), False
    if isinstance(value, Decimal):
        return amount(value, currency), True
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, date):
        return value.isoformat(), False
    return str(value), False


class ReportPagesMixin:
    """Adds the report index and pages to a ModelAdmin (the journal entry admin)."""

    admin_site: admin.AdminSite

    def has_reports_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VIEW_LEDGER)

    def report_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("reports/", view(self.reports_index_view), name="revrec_reports"),
            path("reports/<slug:key>/", view(self.report_view), name="revrec_report"),
        ]

    def reports_index_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_reports_permission(request):
            raise PermissionDenied
        items = [{"title": spec.title, "url": reverse("admin:revrec_report", args=[key]),
                  "needs": ", ".join(spec.needs)} for key, spec in reports().items()]
        return page(self, request, "reports/index.html", "Revenue reports", items=items)  # type: ignore[arg-type]

    def report_view(self, request: HttpRequest, key: str) -> HttpResponse:
        if not self.has_reports_permission(request):
            raise PermissionDenied
        spec = reports().get(key)
        if spec is None:
            raise Http404("No such report.")
        wants_csv = request.GET.get("download") == "csv"
        if wants_csv and not can_download(request):
            raise PermissionDenied
        # First visit: the defaults, so the page opens on a report rather than an empty form.
        form = ReportForm(request.GET or _initial(spec.needs), needs=spec.needs)
        context: dict[str, Any] = {"spec": spec, "form": form, "report": None, "can_download": can_download(request),
                                   "index_url": reverse("admin:revrec_reports")}
        if form.is_valid():
            try:
                report = run(key, form.params())
            except BillingError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                if wants_csv:
                    from revrec.exports import report_csv

                    entity = form.cleaned_data["billing_entity"]
                    return download(report_csv(report), f"{key}-{entity.code}-{report.currency}.csv")
                context.update(self._report_context(report))
                query = request.GET.copy()
                query["download"] = "csv"
                context["csv_url"] = f"{request.path}?{query.urlencode()}"
        return page(self, request, "reports/report.html", spec.title, **context)  # type: ignore[arg-type]

    @staticmethod
    def _report_context(report: Report) -> dict[str, Any]:
        def cells(row: list[Any]) -> list[tuple[str, bool]]:
            return [_cell(value, report.currency) for value in row]

        return {
            "report": report,
            "rows": [cells(row) for row in report.rows],
            "totals": cells(report.totals) if report.totals else None,
            "chart": render_chart(report.chart, report.chart_kind, title=report.title),
        }


def add_reports_to_app_list(site: admin.AdminSite) -> None:
    """List "Revenue reports" with the Revrec models in the admin index and sidebar, for users who may read
    them (the reports are pages, not a model, so the site's app list would not show them on its own)."""
    original = site.get_app_list
    if getattr(original, "adds_revenue_reports", False):
        return

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        app_list = original(request, app_label)
        if request.user.has_perm(VIEW_LEDGER):
            for app in app_list:
                if app["app_label"] == "revrec":
                    app["models"].append({
                        "model": None, "name": "Revenue reports", "object_name": "RevenueReports",
                        "perms": {"view": True}, "admin_url": reverse("admin:revrec_reports", current_app=site.name),
                        "add_url": None, "view_only": True,
                    })
                    app["models"].sort(key=lambda m: m["name"])
        return app_list

    get_app_list.adds_revenue_reports = True  # type: ignore[attr-defined]
    site.get_app_list = get_app_list  # type: ignore[method-assign]
