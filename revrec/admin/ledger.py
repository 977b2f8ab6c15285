"""The general ledger in the admin: the chart of accounts, accounting periods (close with the pre-close
checklist, journal export) and journal entries (read only for everyone: only the posting services write).

Permissions: accounts need the model permissions (finance admins and revenue accountants add and change;
nobody deletes: lines point at them). Closing a period needs `revrec.close_accountingperiod`; the journal
export needs the journal view permission plus the download permission of `revrec.admin.common`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing.actors import Actor
from billing.admin_tools import ReadOnlyAdminMixin
from billing.errors import BillingError
from customers.models import BillingEntity
from revrec.admin.common import CLOSE_PERIOD, amount, can_download, check_rows, download, page
from revrec.admin.reports import ReportPagesMixin
from revrec.models import Account, AccountingPeriod, JournalEntry, JournalLine
from revrec.services.chart import DEFAULT_CHART, ensure_chart

FROZEN_WHEN_POSTED = ("billing_entity", "role", "product", "type")

# --- Chart of accounts ----------------------------------------------------------------------------------------


class AccountForm(forms.ModelForm):
    class Meta:
        model = Account
        fields = ("billing_entity", "code", "name", "type", "role", "product", "is_active")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        account = self.instance
        if account.pk and account.lines.exists():
            # Posted lines read the account's entity, role and side: changing them would rewrite the books.
            for name in FROZEN_WHEN_POSTED:
                if name in self.changed_data:
                    self.add_error(name, "This account already has journal lines, so its billing entity, type, "
                                         "role and product cannot change. Create a new account instead.")
        role, product = data.get("role"), data.get("product")
        if product is not None and role not in (Account.Role.REVENUE, Account.Role.CONTRA_REVENUE):
            self.add_error("product", "Only revenue and contra-revenue accounts may be kept per product.")
        default_roles = {chart_role for _, _, _, chart_role in DEFAULT_CHART}
        if data.get("is_active") is False and product is None and role in default_roles:
            self.add_error("is_active", "The posting rules need an active default account for this role; "
                                        "rename or renumber it instead of deactivating it.")
        return data


class ChartForm(forms.Form):
    billing_entity = forms.ModelChoiceField(BillingEntity.objects.order_by("code"), to_field_name="code")


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = ("billing_entity", "code", "name", "type", "role", "product", "is_active", "line_count")
    list_display_links = ("code", "name")
    list_filter = ("billing_entity", "type", "role", "is_active")
    search_fields = ("code", "name", "product__code")
    list_select_related = ("billing_entity", "product")
    ordering = ("billing_entity__code", "code")
    autocomplete_fields = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(line_total=Count("lines"))

    @admin.display(description="lines", ordering="line_total")
    def line_count(self, account: Account) -> int:
        return getattr(account, "line_total", 0)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # journal lines point at accounts: deactivate or rename instead

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [path("default-chart/", view(self.default_chart_view), name="revrec_account_default_chart"),
                *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"can_create_chart": self.has_add_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def default_chart_view(self, request: HttpRequest) -> HttpResponse:
        """Create the default accounts an entity lacks (safe to repeat: existing accounts are kept)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ChartForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            entity = form.cleaned_data["billing_entity"]
            before = Account.objects.filter(billing_entity=entity).count()
            ensure_chart(entity)
            created = Account.objects.filter(billing_entity=entity).count() - before
            self.message_user(request, f"{entity.code}: created {created} default account(s); "
                                       f"{before} already existed.", messages.SUCCESS)
            url = reverse("admin:revrec_account_changelist") + f"?billing_entity__id__exact={entity.pk}"
            return HttpResponseRedirect(url)
        defaults = [{"code": code, "name": name, "type": kind, "role": role}
                    for code, name, kind, role in DEFAULT_CHART]
        return page(self, request, "account/default_chart.html", "Create the default chart of accounts",
                    form=form, defaults=defaults)


# --- Accounting periods ---------------------------------------------------------------------------------------


@admin.register(AccountingPeriod)
class AccountingPeriodAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("billing_entity", "month", "status", "closed_at", "closed_by", "entry_count")
    list_filter = ("billing_entity", "status")
    list_select_related = ("billing_entity",)
    ordering = ("billing_entity__code", "-start_date")
    fields = ("billing_entity", "start_date", "end_date", "status", "closed_at", "closed_by", "entry_count",
              "checklist")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(entry_total=Count("entries"))

    @admin.display(description="month", ordering="start_date")
    def month(self, period: AccountingPeriod) -> str:
        return period.label

    @admin.display(description="entries", ordering="entry_total")
    def entry_count(self, period: AccountingPeriod) -> int:
        return getattr(period, "entry_total", None) or period.entries.count()

    def has_close_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CLOSE_PERIOD)

    def _links(self, request: HttpRequest, period: AccountingPeriod) -> str:
        parts = [(reverse("admin:revrec_journalentry_changelist") + f"?period__id__exact={period.pk}", "Entries")]
        if self.has_close_permission(request):
            label = "Close period…" if period.is_open else "Checklist"
            parts.append((reverse("admin:revrec_accountingperiod_close", args=[period.pk]), label))
        if can_download(request):
            parts.append((reverse("admin:revrec_accountingperiod_journal", args=[period.pk]), "Export journal (CSV)"))
        return format_html_join(" · ", '<a href="{}" class="period-{}">{}</a>',
                                ((url, label.split()[0].lower(), label) for url, label in parts))

    def _links_column(self, request: HttpRequest) -> Any:
        # The links depend on the user's permissions; list_display callables only get the row, so bind the
        # request in a closure made for this request (never stored on the shared ModelAdmin).
        @admin.display(description="")
        def links(period: AccountingPeriod) -> str:
            return self._links(request, period)
        return links

    def get_list_display(self, request: HttpRequest) -> Any:
        return (*self.list_display, self._links_column(request))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*self.fields, self._links_column(request))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj)

    @admin.display(description="pre-close checklist")
    def checklist(self, period: AccountingPeriod) -> str:
        if period.is_open:
            return "Not closed yet."
        rows = check_rows(period.close_checklist)
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li>{} <strong>{}</strong>: {}</li>",
            (("✔" if row["passed"] else "✘", row["name"], row["detail"]) for row in rows)))

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:period_id>/close/", view(self.close_view), name="revrec_accountingperiod_close"),
            path("<int:period_id>/journal.csv", view(self.journal_view), name="revrec_accountingperiod_journal"),
            *super().get_urls(),
        ]

    def close_view(self, request: HttpRequest, period_id: int) -> HttpResponse:
        """The pre-close checklist of a period and its Close button; a closed period shows what was stored."""
        if not (self.has_view_permission(request) and self.has_close_permission(request)):
            raise PermissionDenied
        from revrec.services.close import close_checklist, close_period  # imported when used

        period = get_object_or_404(AccountingPeriod.objects.select_related("billing_entity"), pk=period_id)
        error = ""
        if request.method == "POST" and period.is_open:
            try:
                close_period(period, actor=Actor.for_user(request.user), now=timezone.now())
            except BillingError as exc:
                error = exc.message
            else:
                self.message_user(request, f"Closed {period.billing_entity.code} {period.label}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:revrec_accountingperiod_close", args=[period.pk]))
            period.refresh_from_db()
        if period.is_open:
            checks = check_rows(close_checklist(period, now=timezone.now()))
        else:
            checks = check_rows(period.close_checklist)
        blocked = any(not c["passed"] and c["blocking"] for c in checks)
        return page(self, request, "accountingperiod/close.html",
                    f"Close {period.billing_entity.code} {period.label}" if period.is_open
                    else f"{period.billing_entity.code} {period.label} (closed)",
                    period=period, checks=checks, blocked=blocked, error=error,
                    can_download=can_download(request))

    def journal_view(self, request: HttpRequest, period_id: int) -> HttpResponse:
        if not (self.has_view_permission(request) and can_download(request)):
            raise PermissionDenied
        from revrec.exports import journal_export_csv

        period = get_object_or_404(AccountingPeriod.objects.select_related("billing_entity"), pk=period_id)
        return download(journal_export_csv(period.billing_entity, period),
                        f"journal-{period.billing_entity.code}-{period.label}.csv")


# --- Journal entries ------------------------------------------------------------------------------------------


class JournalLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = JournalLine
    extra = 0
    can_delete = False
    fields = ("account", "debit_text", "credit_text", "customer", "product", "revenue_contract", "memo")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("account", "customer", "product", "revenue_contract",
                                                            "entry")

    @admin.display(description="debit")
    def debit_text(self, line: JournalLine) -> str:
        return amount(line.debit, str(line.entry.currency)) if line.debit else ""

    @admin.display(description="credit")
    def credit_text(self, line: JournalLine) -> str:
        return amount(line.credit, str(line.entry.currency)) if line.credit else ""


SOURCE_ADMIN = (("invoice", "admin:invoicing_invoice_change"), ("payment", "admin:invoicing_payment_change"),
                ("credit_note", "admin:invoicing_creditnote_change"), ("refund", "admin:invoicing_refund_change"))


@admin.register(JournalEntry)
class JournalEntryAdmin(ReportPagesMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "entry_date", "original", "kind", "source_key", "description", "total_text", "currency",
                    "billing_entity")
    list_filter = ("billing_entity", "kind", "period", "currency")
    date_hierarchy = "entry_date"
    search_fields = ("source_key", "description", "customer__external_id")
    list_select_related = ("billing_entity",)
    list_per_page = 100
    fields = ("billing_entity", "period", "entry_date", "original_date", "kind", "currency", "total_text",
              "source_key", "description", "source_document", "customer", "created_at", "created_by")
    readonly_fields = fields
    inlines = (JournalLineInline,)

    @admin.display(description="original date", ordering="original_date")
    def original(self, entry: JournalEntry) -> str:
        # A correction: the event belongs to a closed period, so it was posted into the next open one.
        return f"{entry.original_date} (correction)" if entry.is_correction else ""

    @admin.display(description="total", ordering="total")
    def total_text(self, entry: JournalEntry) -> str:
        return amount(entry.total, str(entry.currency))

    @admin.display(description="source document")
    def source_document(self, entry: JournalEntry) -> str:
        links = []
        for field, url_name in SOURCE_ADMIN:
            target = getattr(entry, field)
            if target is not None:
                links.append((reverse(url_name, args=[target.pk]), f"{field.replace('_', ' ')} {target}"))
        return format_html_join(" · ", '<a href="{}">{}</a>', links) or "-"

    def get_urls(self) -> list[URLPattern]:
        return [*self.report_urls(), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"reports_url": reverse("admin:revrec_reports"), **(extra_context or {})}
        return super().changelist_view(request, extra)
