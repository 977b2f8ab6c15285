"""Receivables in the admin: open items (invoices seen as money owed), the aging report with DSO, a customer's
statement and its balance at a chosen date.

Read only: every page calls invoicing.services.receivables. Pages need the receivable view permission (every
finance role has it); CSV and PDF downloads need `invoicing.export_receivable` (finance admins, billing
operators, revenue accountants; not auditors), because a download leaves the system with customer data in it.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from moneyed import CurrencyDoesNotExist, get_currency

from billing.admin_tools import ReadOnlyAdminMixin
from billing.errors import BillingError
from customers.models import BillingEntity, Customer
from invoicing.models import Invoice, Receivable
from invoicing.pdf import format_money
from invoicing.receivables_export import (
    aging_csv,
    aging_items_csv,
    render_statement_pdf,
    statement_csv,
    statement_filename,
)
from invoicing.services.receivables import (
    BUCKET_LABELS,
    BUCKETS,
    aging_report,
    balance_breakdown,
    bucket_for,
    check_date,
    check_period,
    customer_statement,
    dso_figures,
)

OPEN_STATUSES = (Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE)
DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
# Days past due covered by each bucket: (first day, last day); None is open-ended.
BUCKET_DAYS = {"current": (None, 0), "days_1_30": (1, 30), "days_31_60": (31, 60), "days_61_90": (61, 90),
               "days_over_90": (91, None)}


def _amount(value: Decimal, currency: str) -> str:
    return format_money(value, currency, with_code=False)


def _today() -> date:
    # The open items list reckons in UTC days; the reports take an as-of date in the customer's days.
    return timezone.now().date()


# --- forms --------------------------------------------------------------------------------------------------


class _CurrencyField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=3, required=False, **kwargs)

    def clean(self, value: Any) -> str:
        code = (super().clean(value) or "").strip().upper()
        if code:
            try:
                get_currency(code)
            except CurrencyDoesNotExist:
                raise forms.ValidationError(f"Unknown currency '{code}'; use an ISO 4217 code such as USD.") from None
        return code


class _CustomerField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=100, help_text="The customer's external id.", **kwargs)

    def clean(self, value: Any) -> Customer:
        external_id = super().clean(value).strip()
        customer = Customer.objects.select_related("billing_entity").filter(external_id=external_id).first()
        if customer is None:
            raise forms.ValidationError("No customer with this external id.")
        return customer


class AgingForm(forms.Form):
    as_of = forms.DateField(required=False, widget=DATE_WIDGET, help_text="End of this day; empty: today.")
    billing_entity = forms.ModelChoiceField(BillingEntity.objects.order_by("code"), required=False,
                                            to_field_name="code", empty_label="All billing entities")
    currency = _CurrencyField(help_text="Empty: every currency (never added together).")
    include_uncollectible = forms.BooleanField(required=False, label="Include written-off invoices")

    def clean_as_of(self) -> date:
        as_of = self.cleaned_data.get("as_of") or _today()
        try:
            return check_date(as_of, field="as_of")
        except BillingError as exc:
            raise forms.ValidationError(exc.message) from None


class StatementForm(forms.Form):
    customer = _CustomerField()
    currency = _CurrencyField(help_text="Empty: the customer's currency.")
    start = forms.DateField(required=False, widget=DATE_WIDGET, help_text="Empty: the first day of the end's month.")
    end = forms.DateField(required=False, widget=DATE_WIDGET, help_text="Empty: today.")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        customer = data.get("customer")
        if customer is None or self.errors:
            return data
        data["currency"] = data.get("currency") or str(customer.currency)
        data["end"] = data.get("end") or _today()
        data["start"] = data.get("start") or data["end"].replace(day=1)
        try:
            check_period(data["start"], data["end"])
        except BillingError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return data


class BalanceForm(forms.Form):
    customer = _CustomerField()
    currency = _CurrencyField(help_text="Empty: the customer's currency.")
    as_of = forms.DateField(required=False, widget=DATE_WIDGET, help_text="End of this day; empty: today.")

    def clean_as_of(self) -> date:
        as_of = self.cleaned_data.get("as_of") or _today()
        try:
            return check_date(as_of, field="as_of")
        except BillingError as exc:
            raise forms.ValidationError(exc.message) from None


# --- the open items list ------------------------------------------------------------------------------------


class BucketFilter(admin.SimpleListFilter):
    title = "aging"
    parameter_name = "bucket"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(bucket, BUCKET_LABELS[bucket]) for bucket in BUCKETS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in BUCKET_DAYS:
            return queryset
        first, last = BUCKET_DAYS[self.value()]
        today = _today()
        if first is not None:
            queryset = queryset.filter(due_date__lte=today - timedelta(days=first))
        if last is not None:
            queryset = queryset.filter(due_date__gte=today - timedelta(days=last))
        return queryset


@admin.register(Receivable)
class ReceivableAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("invoice_number", "customer_link", "billing_entity", "issue_date", "due_date", "days_overdue",
                    "bucket", "open_amount", "status")
    list_display_links = None
    list_filter = ("billing_entity", "currency", BucketFilter, "status")
    search_fields = ("number", "customer__external_id", "customer__name")
    ordering = ("due_date", "sequence_number")
    list_per_page = 100

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super().get_queryset(request)
            .filter(status__in=OPEN_STATUSES, amount_due__gt=0)
            .select_related("customer", "billing_entity")
        )

    @admin.display(description="invoice", ordering="number")
    def invoice_number(self, obj: Receivable) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:invoicing_invoice_change", args=[obj.pk]),
                           obj.number)

    @admin.display(description="customer", ordering="customer__name")
    def customer_link(self, obj: Receivable) -> str:
        return f"{obj.customer.name} ({obj.customer.external_id})"

    @admin.display(description="days overdue", ordering="due_date")
    def days_overdue(self, obj: Receivable) -> int:
        return max((_today() - obj.due_date).days, 0) if obj.due_date else 0

    @admin.display(description="aging")
    def bucket(self, obj: Receivable) -> str:
        return BUCKET_LABELS[bucket_for((_today() - obj.due_date).days if obj.due_date else 0)]

    @admin.display(description="amount due", ordering="amount_due")
    def open_amount(self, obj: Receivable) -> str:
        return format_money(obj.amount_due, str(obj.currency))

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("invoicing.export_receivable")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("aging/", view(self.aging_view), name="invoicing_receivable_aging"),
            path("statement/", view(self.statement_view), name="invoicing_receivable_statement"),
            path("balance/", view(self.balance_view), name="invoicing_receivable_balance"),
            *super().get_urls(),
        ]

    def _page(self, request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
        return TemplateResponse(request, f"admin/invoicing/receivable/{template}", {
            **self.admin_site.each_context(request), "opts": self.opts, "title": title,
            "can_export": self.has_export_permission(request), **context,
        })

    def _require(self, request: HttpRequest, *, download: bool) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if download and not self.has_export_permission(request):
            raise PermissionDenied

    @staticmethod
    def _download(content: str | bytes, content_type: str, filename: str) -> HttpResponse:
        response = HttpResponse(content, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    # --- aging and DSO ---------------------------------------------------------------------------------------

    def aging_view(self, request: HttpRequest) -> HttpResponse:
        download = request.GET.get("download", "")
        self._require(request, download=bool(download))
        form = AgingForm(request.GET or {"as_of": _today()})
        if not form.is_valid():
            return self._page(request, "aging.html", "Aging report", form=form, report=None)
        data = form.cleaned_data
        report = aging_report(as_of=data["as_of"], billing_entity=data["billing_entity"],
                              currency=data["currency"] or None, include_uncollectible=data["include_uncollectible"])
        if download == "items":
            return self._download(aging_items_csv(report), "text/csv; charset=utf-8",
                                  f"aging-items-{report.as_of.isoformat()}.csv")
        if download:
            return self._download(aging_csv(report), "text/csv; charset=utf-8", f"aging-{report.as_of.isoformat()}.csv")
        rows = [{
            "entity": row.billing_entity_code, "customer": row.customer_name, "external_id": row.customer_external_id,
            "currency": row.currency, "buckets": [_amount(row.buckets[b], row.currency) for b in BUCKETS],
            "total": _amount(row.total, row.currency), "credit": _amount(row.unapplied_credit, row.currency),
            "net": _amount(row.net, row.currency),
        } for row in report.rows]
        entities = {e.pk: e for e in BillingEntity.objects.filter(pk__in={t.billing_entity_id for t in report.totals})}
        totals = []
        for total in report.totals:
            figures = dso_figures(billing_entity=entities[total.billing_entity_id], currency=total.currency,
                                  as_of=report.as_of)
            totals.append({
                "entity": total.billing_entity_code, "currency": total.currency, "customers": total.customers,
                "buckets": [_amount(total.buckets[b], total.currency) for b in BUCKETS],
                "total": _amount(total.total, total.currency),
                "credit": _amount(total.unapplied_credit, total.currency),
                "net": _amount(total.net, total.currency),
                "dso": figures.dso, "credit_sales": _amount(figures.credit_sales, total.currency),
            })
        return self._page(request, "aging.html", "Aging report", form=form, report=report, rows=rows, totals=totals,
                          bucket_labels=[BUCKET_LABELS[b] for b in BUCKETS], query=request.GET.urlencode())

    # --- statement -------------------------------------------------------------------------------------------

    def statement_view(self, request: HttpRequest) -> HttpResponse:
        download = request.GET.get("download", "")
        if download not in ("csv", "pdf"):
            download = ""
        self._require(request, download=bool(download))
        form = StatementForm(request.GET or None)
        if not form.is_valid():
            return self._page(request, "statement.html", "Customer statement", form=form, statement=None)
        data = form.cleaned_data
        statement = customer_statement(data["customer"], data["currency"], data["start"], data["end"])
        if download == "csv":
            return self._download(statement_csv(statement), "text/csv; charset=utf-8",
                                  statement_filename(statement, "csv"))
        if download == "pdf":
            return self._download(render_statement_pdf(statement), "application/pdf",
                                  statement_filename(statement, "pdf"))
        cur = statement.currency
        lines = [{"day": line.day, "label": line.label, "number": line.number, "description": line.description,
                  "reference": line.reference, "debit": _amount(line.debit, cur) if line.debit else "",
                  "credit": _amount(line.credit, cur) if line.credit else "", "balance": _amount(line.balance, cur)}
                 for line in statement.lines]
        items = [{"number": item.number, "invoice_id": item.invoice_id, "issue_date": item.issue_date,
                  "due_date": item.due_date, "days_overdue": item.days_overdue, "bucket": BUCKET_LABELS[item.bucket],
                  "open": _amount(item.open_amount, cur)} for item in statement.open_items]
        return self._page(
            request, "statement.html", f"Statement of {statement.customer.name}", form=form, statement=statement,
            lines=lines, items=items, opening=_amount(statement.opening_balance, cur),
            closing=_amount(statement.closing_balance, cur), open_total=_amount(statement.open_total, cur),
            aging=[(BUCKET_LABELS[b], _amount(statement.aging[b], cur)) for b in BUCKETS],
            query=request.GET.urlencode(),
        )

    # --- balance at a date -----------------------------------------------------------------------------------

    def balance_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, download=False)
        form = BalanceForm(request.GET or None)
        if not form.is_valid():
            return self._page(request, "balance.html", "Customer balance at a date", form=form, balance=None)
        data = form.cleaned_data
        customer = data["customer"]
        currency = data["currency"] or str(customer.currency)
        b = balance_breakdown(customer, currency, data["as_of"])
        parts = [("Invoices issued", b.invoiced), ("Invoices voided", -b.voided), ("Payments received", -b.payments),
                 ("Payments reversed", b.reversals), ("Credit notes", -b.credit_notes), ("Refunds", b.refunds)]
        return self._page(
            request, "balance.html", f"Balance of {customer.name}", form=form, balance=_amount(b.balance, currency),
            owes=b.balance > 0, customer=customer, currency=currency, as_of=data["as_of"],
            parts=[(label, _amount(value, currency)) for label, value in parts],
        )
