"""Admin for bank reconciliation: the statement formats (one per bank layout), imported statements with an
"Import a statement" page, and the reconciliation queue (statement lines, unmatched by default) with a
per-line "Match" page and ignore / put back / match-again actions.

Every write goes through invoicing.services.bank with the user as actor; importing and matching need
`invoicing.reconcile_bankstatement` (finance admins and billing operators), editing formats the model's
change permission (finance admins).
"""

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.actors import Actor
from billing.admin_tools import ReadOnlyAdminMixin
from billing.api.fields import format_amount
from customers.admin import SERVICE_ERRORS, action_with_form, error_text
from customers.models import Customer
from invoicing.models import BankStatement, BankStatementFormat, BankStatementLine, Invoice
from invoicing.services import bank
from invoicing.services.payments import OPEN_STATUSES, AllocationRequest, money_amount

LINES_INLINE_LIMIT = 500  # a bigger statement links to its lines in the queue instead of listing them
CUSTOMERS_FOUND = 20
RECONCILE = "invoicing.reconcile_bankstatement"


def _can_reconcile(request: HttpRequest) -> bool:
    return request.user.has_perm(RECONCILE)


# --- formats ------------------------------------------------------------------------------------------------


class BankStatementFormatForm(forms.ModelForm):
    class Meta:
        model = BankStatementFormat
        fields = ("name", "billing_entity", "encoding", "delimiter", "has_header", "skip_rows", "date_column",
                  "date_format", "amount_column", "credit_column", "debit_column", "currency_column",
                  "default_currency", "reference_column", "description_column", "counterparty_column",
                  "transaction_id_column", "decimal_separator", "thousands_separator")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = BankStatementFormat(**{k: v for k, v in cleaned.items() if k in self.Meta.fields})
        for problem in bank.format_problems(candidate):
            self.add_error(None, problem.reason)
        return cleaned


@admin.register(BankStatementFormat)
class BankStatementFormatAdmin(admin.ModelAdmin):
    form = BankStatementFormatForm
    list_display = ("name", "billing_entity", "delimiter", "encoding", "date_format", "default_currency")
    list_filter = ("billing_entity",)
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "billing_entity")}),
        ("File", {"fields": ("encoding", "delimiter", "has_header", "skip_rows"),
                  "description": "Without a header row, name columns by position: 1 for the first."}),
        ("Columns", {"fields": ("date_column", "date_format", "amount_column", "credit_column", "debit_column",
                                "currency_column", "default_currency", "reference_column", "description_column",
                                "counterparty_column", "transaction_id_column")}),
        ("Numbers", {"fields": ("decimal_separator", "thousands_separator")}),
    )


# --- statements and the import page -------------------------------------------------------------------------------


class ImportStatementForm(forms.Form):
    format = forms.ModelChoiceField(queryset=BankStatementFormat.objects.select_related("billing_entity"),
                                    help_text="The bank's layout (Bank statement formats).")
    file = forms.FileField(help_text="The statement as the bank exports it (CSV).")

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > bank.max_bytes():
            raise forms.ValidationError(f"The file is larger than {bank.max_bytes() // 1024} KiB; split it into "
                                        "smaller statements.")
        return upload


class StatementLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = BankStatementLine
    fk_name = "statement"
    extra = 0
    fields = ("line_number", "booked_on", "amount", "currency", "reference", "counterparty", "status", "customer",
              "payment", "note")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "lines"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("customer", "payment").order_by("line_number")


@admin.register(BankStatement)
class BankStatementAdmin(admin.ModelAdmin):
    list_display = ("filename", "format", "imported_at", "imported_by", "line_count", "new_lines",
                    "duplicate_lines", "matched_lines", "to_match")
    list_filter = ("format",)
    list_select_related = ("format",)
    search_fields = ("filename", "sha256")
    date_hierarchy = "imported_at"
    fields = ("format", "filename", "sha256", "imported_at", "imported_by", "line_count", "new_lines",
              "duplicate_lines", "matched_lines", "to_match", "queue_link")
    readonly_fields = fields
    change_list_template = "admin/invoicing/bankstatement/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(
            unmatched=Count("lines", filter=Q(lines__status=BankStatementLine.Status.UNMATCHED)))

    @admin.display(description="to match", ordering="unmatched")
    def to_match(self, statement: BankStatement) -> int:
        return statement.unmatched

    @admin.display(description="lines")
    def queue_link(self, statement: BankStatement) -> str:
        url = reverse("admin:invoicing_bankstatementline_changelist")
        return format_html('<a href="{}?statement__id__exact={}&amp;status=all">All {} line(s) of this statement</a>',
                           url, statement.pk, statement.new_lines)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # statements come from the import page

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # its lines may carry payments; a statement is a record of what the bank said

    def has_import_permission(self, request: HttpRequest) -> bool:
        return _can_reconcile(request) and request.user.has_perm("invoicing.add_bankstatement")

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type]:
        return [StatementLineInline] if obj is not None and obj.new_lines <= LINES_INLINE_LIMIT else []

    def get_urls(self) -> list[URLPattern]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="invoicing_bankstatement_import"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"can_import": self.has_import_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a statement: every bad row listed (nothing imported), or the statement with its summary."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = ImportStatementForm(request.POST or None, request.FILES or None)
        row_errors: list[bank.RowError] = []
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = bank.import_statement(form.cleaned_data["format"], upload.read(),
                                               filename=upload.name or "statement.csv",
                                               actor=Actor.for_user(request.user), now=timezone.now())
            except bank.StatementFileError as exc:
                row_errors = exc.errors
                form.add_error("file", f"{len(exc.errors)} problem(s) found: nothing was imported. Fix the file "
                                       "(or the format) and upload it again.")
            except SERVICE_ERRORS as exc:
                form.add_error(None, error_text(exc))
            else:
                level = messages.SUCCESS if result.created else messages.WARNING
                self.message_user(request, f"{result.statement.filename}: {result.summary()}", level)
                return HttpResponseRedirect(reverse("admin:invoicing_bankstatement_change",
                                                    args=[result.statement.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import a bank statement",
            "form": form,
            "row_errors": row_errors,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/invoicing/bankstatement/import.html", context)


# --- the reconciliation queue -------------------------------------------------------------------------------------


class QueueStatusFilter(admin.SimpleListFilter):
    """Unmatched lines unless asked otherwise: the list opens on what is left to do."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*BankStatementLine.Status.choices, ("all", "All")]

    def value(self) -> str:
        return super().value() or BankStatementLine.Status.UNMATCHED

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "all":
            return queryset
        if value not in BankStatementLine.Status.values:
            return queryset.none()
        return queryset.filter(status=value)

    def choices(self, changelist: Any) -> Any:
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}


class IgnoreForm(forms.Form):
    reason = forms.CharField(max_length=250, widget=forms.TextInput(attrs={"size": 60}),
                             help_text="Why these lines are not customers' payments (interest, a supplier refund, "
                                       "...); kept on each line.")


@admin.register(BankStatementLine)
class BankStatementLineAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("booked_on", "shown_amount", "currency", "reference", "counterparty", "status", "customer",
                    "note", "match_link")
    list_filter = (QueueStatusFilter, "format", "currency", "match_method", "booked_on", "statement")
    list_select_related = ("customer",)
    search_fields = ("reference", "description", "counterparty", "transaction_id", "customer__external_id",
                     "customer__name")
    date_hierarchy = "booked_on"
    actions = ("ignore_lines", "unignore_lines", "match_again")
    fields = ("statement", "format", "line_number", "booked_on", "amount", "currency", "reference", "description",
              "counterparty", "transaction_id", "fingerprint", "status", "match_method", "customer", "payment",
              "matched_at", "matched_by", "note")
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or _can_reconcile(request)

    def has_reconcile_permission(self, request: HttpRequest) -> bool:
        return _can_reconcile(request)

    @admin.display(description="amount", ordering="amount")
    def shown_amount(self, line: BankStatementLine) -> str:
        return format_amount(line.amount, str(line.currency))

    @admin.display(description="")
    def match_link(self, line: BankStatementLine) -> str:
        if line.status != BankStatementLine.Status.UNMATCHED or line.amount <= 0:
            return ""
        url = reverse("admin:invoicing_bankstatementline_match", args=[line.pk])
        return format_html('<a href="{}" class="button match-link">Match</a>', url)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:line_id>/match/", self.admin_site.admin_view(self.match_view),
                 name="invoicing_bankstatementline_match"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Reconciliation queue", **(extra_context or {})})

    # Actions: one message per line refused, one for the rest.

    def _each(self, request: HttpRequest, queryset: QuerySet, operation: Any, done: str) -> None:
        actor, now, count = Actor.for_user(request.user), timezone.now(), 0
        for line in queryset.order_by("pk"):
            try:
                operation(line, actor, now)
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"Line {line.pk} ({line}): {error_text(exc)}", messages.ERROR)
            else:
                count += 1
        if count:
            self.message_user(request, f"{done}: {count} line(s).", messages.SUCCESS)

    @admin.action(description="Ignore selected lines…", permissions=["reconcile"])
    def ignore_lines(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        def apply(data: dict[str, Any]) -> None:
            self._each(request, queryset, lambda line, actor, now: bank.ignore_line(
                line, reason=data["reason"], actor=actor, now=now), "Ignored")

        return action_with_form(self, request, queryset, form_class=IgnoreForm, title="Ignore bank statement lines",
                                submit_label="Ignore", apply=apply)

    @admin.action(description="Put selected lines back in the queue", permissions=["reconcile"])
    def unignore_lines(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, lambda line, actor, now: bank.unignore_line(line, actor=actor, now=now),
                   "Put back in the queue")

    @admin.action(description="Try automatic matching again", permissions=["reconcile"])
    def match_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        lines = list(queryset.filter(status=BankStatementLine.Status.UNMATCHED))
        matched = bank.auto_match_lines(lines, actor=Actor.for_user(request.user), now=timezone.now())
        self.message_user(request, f"{matched} of {len(lines)} unmatched line(s) matched automatically.",
                          messages.SUCCESS if matched else messages.WARNING)

    # The match page.

    def match_view(self, request: HttpRequest, line_id: int) -> HttpResponse:
        """Pick the customer (suggestions from the line, or a search), see its open invoices in the line's
        currency, enter amounts or leave them empty to pay the oldest first; the rest becomes credit."""
        if not self.has_reconcile_permission(request):
            raise PermissionDenied
        line = get_object_or_404(BankStatementLine.objects.select_related("format__billing_entity", "statement",
                                                                          "customer", "payment"), pk=line_id)
        queue_url = reverse("admin:invoicing_bankstatementline_changelist")
        entity = line.format.billing_entity
        customers = Customer.objects.filter(billing_entity=entity)
        query = request.GET.get("q", "").replace("\x00", "").strip()[:100]
        found = []
        if query:
            found = list(customers.filter(Q(external_id__icontains=query) | Q(name__icontains=query)
                                          | Q(legal_name__icontains=query)).order_by("name")[:CUSTOMERS_FOUND])
        customer = None
        raw_customer = request.POST.get("customer") or request.GET.get("customer") or ""
        if raw_customer.isdecimal() and len(raw_customer) <= 18:
            customer = customers.filter(pk=int(raw_customer)).first()
        invoices = list(Invoice.objects.filter(customer=customer, currency=line.currency, status__in=OPEN_STATUSES,
                                               amount_due__gt=0).order_by("due_date", "sequence_number", "pk")
                        ) if customer else []
        errors: list[str] = []
        amounts: dict[int, str] = {}
        if request.method == "POST":
            if customer is None:
                errors.append("Choose the customer who paid.")
            elif line.status != BankStatementLine.Status.UNMATCHED:
                errors.append(f"This line is {line.get_status_display().lower()}: it cannot be matched.")
            else:
                allocations = []
                for invoice in invoices:
                    raw = request.POST.get(f"amount-{invoice.pk}", "").strip()
                    amounts[invoice.pk] = raw[:30]
                    if not raw:
                        continue
                    try:
                        amount = money_amount(raw.replace(",", "."), str(line.currency),
                                              field=f"amount for {invoice}")
                    except SERVICE_ERRORS as exc:
                        errors.append(error_text(exc))
                        continue
                    allocations.append(AllocationRequest(invoice.pk, amount))
                if not errors:
                    try:
                        bank.match_manually(line, customer=customer, allocations=allocations or None,
                                            actor=Actor.for_user(request.user), now=timezone.now())
                    except SERVICE_ERRORS as exc:
                        errors.append(error_text(exc))
                    else:
                        self.message_user(request, f"Line {line.pk} ({line}) matched to {customer}.",
                                          messages.SUCCESS)
                        return HttpResponseRedirect(queue_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Match a bank statement line: {line.amount.normalize():f} {line.currency} on "
                     f"{line.booked_on:%Y-%m-%d}",
            "line": line,
            "amount": _plain(line.amount, str(line.currency)),
            "query": query,
            "found": found,
            "suggested": [] if customer or query else _suggestions(line),
            "customer": customer,
            "invoices": [(invoice, _plain(invoice.amount_due, str(invoice.currency)), amounts.get(invoice.pk, ""))
                         for invoice in invoices],
            "errors": errors,
            "queue_url": queue_url,
            "can_match": line.status == BankStatementLine.Status.UNMATCHED and line.amount > 0,
        }
        return TemplateResponse(request, "admin/invoicing/bankstatementline/match.html", context)


def _plain(amount: Decimal, currency: str) -> str:
    return format_amount(amount, currency)


def _suggestions(line: BankStatementLine) -> list[Customer]:
    """The customers the line's texts name (its reference, counterparty, description)."""
    return bank.customers_named(line)[:CUSTOMERS_FOUND]
