"""Admin for invoices and their lines, cycle-close runs (with a live progress bar), tax rates, credits and the
other invoicing records.

Invoices are written only by the services: the admin shows them read only and changes them through actions
(finalize, refresh, void) that call the services with the user as actor and report each invoice's outcome.
Cycle runs are started from the admin "as of" a moment and watched live on the run's page.
"""

from datetime import datetime
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from billing.actors import Actor
from billing.admin_tools import NoRevertHistoryMixin, ReadOnlyAdminMixin
from customers.admin import SERVICE_ERRORS, HistoryAdmin, action_with_form, adopt, error_text
from invoicing.admin_preview import upcoming_invoice_view
from invoicing.models import (
    AppliedCoupon,
    CreditGrant,
    CycleRun,
    CycleRunCustomer,
    DocumentSequence,
    InstallmentPlan,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    PendingCharge,
    TaxRate,
    Wallet,
    WalletTransaction,
)
from invoicing.pdf import format_period, invoice_pdf_name, render_invoice_pdf
from invoicing.services.credits import add_one_off_charge, apply_coupon, grant_credit, remove_coupon
from invoicing.services.cycle import refresh_draft, run_counts, run_cycle_close_inline, start_cycle_close
from invoicing.services.documents import finalize_many, void_invoice

FAILURES_SHOWN = 200  # a run page lists at most this many failures (the list filter finds the rest)


def _perm(request: HttpRequest, codename: str) -> bool:
    return request.user.has_perm(f"invoicing.{codename}")


# --- Invoices -----------------------------------------------------------------------------------------------


class InvoiceLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = InvoiceLine
    extra = 0
    fields = ("position", "kind", "description", "period", "quantity", "unit_price", "amount", "discount_amount",
              "tax_amount", "explain")
    readonly_fields = fields
    can_delete = False

    @admin.display(description="period")
    def period(self, line: InvoiceLine) -> str:
        if line.period_start is None:
            return "-"
        return format_period(line.period_start, line.period_end)

    @admin.display(description="")
    def explain(self, line: InvoiceLine) -> str:
        if line.pk is None:
            return ""
        url = reverse("admin:invoicing_invoice_explain_line", args=[line.invoice_id, line.pk])
        return format_html('<a href="{}" class="explain-link">Explain</a>', url)


class InvoiceEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = InvoiceEvent
    extra = 0
    fields = ("created_at", "action", "actor_label", "details")
    readonly_fields = fields
    can_delete = False
    verbose_name = "event"
    verbose_name_plural = "audit trail"


class DraftsToReviewFilter(admin.SimpleListFilter):
    """A shortcut for the daily review: the drafts waiting to be finalized, soonest-finalized first."""

    title = "review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("drafts", "Drafts to review")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "drafts":
            return queryset.filter(status=Invoice.Status.DRAFT).order_by("grace_until", "id")
        return queryset


class VoidForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                             help_text="Kept on the invoice and in its audit trail.")


@admin.register(Invoice)
class InvoiceAdmin(NoRevertHistoryMixin, SimpleHistoryAdmin):
    list_display = ("display_number", "customer", "status", "kind", "issue_date", "due_date", "total", "amount_due",
                    "currency")
    list_display_links = ("display_number",)
    list_filter = (DraftsToReviewFilter, "status", "kind", "billing_entity", "issue_date")
    list_select_related = ("customer",)
    search_fields = ("number", "customer__external_id", "customer__name")
    date_hierarchy = "issue_date"
    inlines = (InvoiceLineInline, InvoiceEventInline)
    actions = ("finalize_drafts", "refresh_drafts", "void_invoices")
    change_list_template = "admin/invoicing/invoice/change_list.html"
    change_form_template = "admin/invoicing/invoice/change_form.html"
    fieldsets = (
        (None, {"fields": ("number", "status", "kind", "customer", "billing_entity", "currency", "cycle_run")}),
        ("Dates", {"fields": ("issue_date", "due_date", "period_start", "period_end", "as_of", "grace_until",
                              "finalized_at", "voided_at", "void_reason")}),
        ("Totals", {"fields": ("subtotal", "discount_total", "tax_total", "total", "prepaid_credit_applied",
                               "tax_breakdown", "discount_breakdown", "mentions")}),
        ("Payment", {"fields": ("amount_paid", "amount_credited", "credit_notes_total", "amount_due", "paid_at",
                                "marked_uncollectible_at")}),
        ("Parties", {"fields": ("seller", "buyer", "memo"), "classes": ("collapse",)}),
        ("Record", {"fields": ("pdf", "pdf_sha256", "created_by", "created_at", "updated_at"),
                    "classes": ("collapse",)}),
    )

    @admin.display(description="number", ordering="number")
    def display_number(self, invoice: Invoice) -> str:
        return str(invoice)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for _, options in self.fieldsets for f in options["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # cycle closes and the API create invoices

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a number once given is never reused: void instead

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The page of an invoice is read only for everyone (services write every field); the model-level
        # permission still gates the refresh action on the changelist.
        return obj is None and super().has_change_permission(request, obj)

    def has_finalize_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "finalize_invoice")

    def has_void_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "void_invoice")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:invoice_id>/pdf/", view(self.pdf_view), name="invoicing_invoice_pdf"),
            path("<int:invoice_id>/lines/<int:line_id>/explain/", view(self.explain_view),
                 name="invoicing_invoice_explain_line"),
            path("upcoming/", view(upcoming_invoice_view), name="invoicing_invoice_upcoming"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"drafts_count": Invoice.objects.filter(status=Invoice.Status.DRAFT).count(), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def _invoice_or_404(self, request: HttpRequest, invoice_id: int) -> Invoice:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(Invoice.objects.select_related("billing_entity", "customer"), pk=invoice_id)

    def pdf_view(self, request: HttpRequest, invoice_id: int) -> HttpResponse:
        """The stored PDF when it is current, otherwise one rendered now (drafts, or before the task ran)."""
        invoice = self._invoice_or_404(request, invoice_id)
        filename = f"{invoice_pdf_name(invoice).rsplit('/', 1)[-1]}"
        stored = invoice.pdf.name if invoice.pdf else ""
        # A draft's stored file may predate a refresh; a finalized invoice's file never changes.
        if stored and not invoice.is_draft and default_storage.exists(stored):
            return FileResponse(default_storage.open(stored, "rb"), content_type="application/pdf",
                                filename=filename)
        response = HttpResponse(render_invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{filename}"'
        return response

    def explain_view(self, request: HttpRequest, invoice_id: int, line_id: int) -> HttpResponse:
        invoice = self._invoice_or_404(request, invoice_id)
        line = get_object_or_404(InvoiceLine.objects.select_related("subscription", "charge", "meter", "product",
                                                                    "fixed_charge"),
                                 pk=line_id, invoice=invoice)
        explanation = line.explanation or {}
        shown = {"period", "tiers", "formula", "price_source", "events_from", "events_to", "properties", "fee"}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Line {line.position + 1} of {invoice}",
            "subtitle": line.description,
            "invoice": invoice,
            "line": line,
            "period": format_period(line.period_start, line.period_end) if line.period_start else "",
            "explanation": explanation,
            "formula": explanation.get("formula", ""),
            "price_source": explanation.get("price_source", ""),
            "explained_period": explanation.get("period") or {},
            "events_from": explanation.get("events_from", ""),
            "events_to": explanation.get("events_to", ""),
            "tiers": explanation.get("tiers") or [],
            "fee": explanation.get("fee") or {},
            "properties": explanation.get("properties") or {},
            "inputs": sorted((k, v) for k, v in explanation.items() if k not in shown),
            "change_url": reverse("admin:invoicing_invoice_change", args=[invoice.pk]),
        }
        return TemplateResponse(request, "admin/invoicing/invoice/explain_line.html", context)

    # Actions: one message per invoice, so the operator sees each number given and each refusal.

    @admin.action(description="Finalize selected drafts", permissions=["finalize"])
    def finalize_drafts(self, request: HttpRequest, queryset: QuerySet) -> None:
        drafts = {inv.pk: inv for inv in queryset}
        result = finalize_many(sorted(drafts), actor=Actor.for_user(request.user), now=timezone.now())
        for invoice in result.finalized:
            self.message_user(request, f"{drafts[invoice.pk]} finalized as {invoice.number} "
                                       f"(total {invoice.total} {invoice.currency}).", messages.SUCCESS)
        for pk, error in sorted(result.errors.items()):
            self.message_user(request, f"{drafts[pk]}: {error}", messages.ERROR)

    @admin.action(description="Refresh selected drafts (recompute as of now)", permissions=["change"])
    def refresh_drafts(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = Actor.for_user(request.user), timezone.now()
        for invoice in queryset:
            try:
                refreshed = refresh_draft(invoice, actor=actor, now=now)
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"{invoice}: {error_text(exc)}", messages.ERROR)
            else:
                self.message_user(request, f"{invoice} refreshed: {refreshed.lines.count()} line(s), total "
                                           f"{refreshed.total} {refreshed.currency}.", messages.SUCCESS)

    @admin.action(description="Void selected invoices…", permissions=["void"])
    def void_invoices(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        def apply(data: dict[str, Any]) -> None:
            actor, now = Actor.for_user(request.user), timezone.now()
            for invoice in queryset:
                try:
                    void_invoice(invoice, reason=data["reason"], actor=actor, now=now)
                except SERVICE_ERRORS as exc:
                    self.message_user(request, f"{invoice}: {error_text(exc)}", messages.ERROR)
                else:
                    self.message_user(request, f"{invoice} voided.", messages.SUCCESS)

        return action_with_form(self, request, queryset, form_class=VoidForm, title="Void invoices",
                                submit_label="Void", apply=apply)


# --- Cycle runs -----------------------------------------------------------------------------------------------


def _as_of_default() -> datetime:
    return timezone.now().replace(second=0, microsecond=0)


class CycleCloseForm(forms.Form):
    as_of = forms.DateTimeField(initial=_as_of_default, label="As of",
                                help_text="Close every period ended by this moment (server time zone). "
                                          "Use a past moment for a backfill, a future one for a demo.")


def run_progress(run: CycleRun) -> dict[str, Any]:
    """What the run page shows, as JSON for its poller."""
    counts = run_counts(run)
    failures = (CycleRunCustomer.objects.filter(run=run, status=CycleRunCustomer.Status.FAILED)
                .select_related("customer").order_by("finished_at", "id")[:FAILURES_SHOWN])
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "running": run.status == CycleRun.Status.RUNNING,
        **counts,
        "percent": int(100 * counts["processed"] / counts["total"]) if counts["total"] else 100,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "failures": [
            {"customer": f.customer.external_id, "name": f.customer.name, "error": f.error.split("\n\n", 1)[0]}
            for f in failures
        ],
    }


class CycleRunCustomerInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CycleRunCustomer
    extra = 0
    fields = ("customer", "status", "invoices_created", "finished_at")
    readonly_fields = fields
    can_delete = False
    max_num = 0
    verbose_name_plural = "customers"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("customer").order_by("-finished_at", "-id")


@admin.register(CycleRun)
class CycleRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("__str__", "status", "as_of", "progress", "processed_customers", "total_customers",
                    "invoices_created", "failed_customers", "triggered_by", "started_at", "finished_at")
    list_filter = ("status",)
    date_hierarchy = "as_of"
    fields = ("status", "as_of", "triggered_by", "total_customers", "processed_customers", "failed_customers",
              "invoices_created", "started_at", "finished_at")
    readonly_fields = fields
    change_list_template = "admin/invoicing/cyclerun/change_list.html"
    change_form_template = "admin/invoicing/cyclerun/change_form.html"

    @admin.display(description="progress")
    def progress(self, run: CycleRun) -> str:
        return format_html('<progress max="100" value="{}"></progress> {} %', run.progress_percent,
                           run.progress_percent)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "run_cycle_close")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("run/", view(self.run_view), name="invoicing_cyclerun_run"),
            path("<int:run_id>/progress/", view(self.progress_view), name="invoicing_cyclerun_progress"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"can_run": self.has_run_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if run is not None:
            extra["progress"] = run_progress(run)
            extra["progress_url"] = reverse("admin:invoicing_cyclerun_progress", args=[run.pk])
        return super().change_view(request, object_id, form_url, extra)

    def progress_view(self, request: HttpRequest, run_id: int) -> JsonResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = CycleRun.objects.filter(pk=run_id).first()
        if run is None:
            raise Http404("No such cycle run.")
        return JsonResponse(run_progress(run))

    def run_view(self, request: HttpRequest) -> HttpResponse:
        """Start a cycle close as of a moment. Runs on the workers; ACCRUAL_CYCLE_CLOSE_INLINE runs it in this
        request instead (a single-process demo or test without a worker)."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        form = CycleCloseForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            actor = Actor.for_user(request.user)
            as_of = form.cleaned_data["as_of"]
            try:
                if getattr(settings, "ACCRUAL_CYCLE_CLOSE_INLINE", False):
                    run = run_cycle_close_inline(now=as_of, actor=actor)
                else:
                    run = start_cycle_close(now=as_of, actor=actor)
            except SERVICE_ERRORS as exc:
                form.add_error(None, error_text(exc))
            else:
                self.message_user(request, f"Started a cycle close as of {as_of:%Y-%m-%d %H:%M %Z} over "
                                           f"{run.total_customers} customer(s).", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:invoicing_cyclerun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Run a cycle close",
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/invoicing/cyclerun/run.html", context)

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type]:
        return [CycleRunCustomerInline] if obj is not None and obj.total_customers <= 100 else []


# --- Tax rates and number series ------------------------------------------------------------------------------


@admin.register(TaxRate)
class TaxRateAdmin(HistoryAdmin):
    list_display = ("name", "country", "region", "tax_code", "percent", "valid_from", "valid_to", "is_active")
    list_filter = ("is_active", "country", "tax_code")
    search_fields = ("name", "country", "region", "tax_code")
    readonly_fields = ("created_at", "updated_at")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # invoice lines point at their rate: deactivate or end-date it instead


@admin.register(DocumentSequence)
class DocumentSequenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("billing_entity", "kind", "next_number")
    list_filter = ("kind", "billing_entity")


# --- Coupons, credits and wallets -----------------------------------------------------------------------------


class ServiceAddAdmin(HistoryAdmin):
    """Rows created by a service from the add form and read only afterwards."""

    add_fields: tuple[str, ...] = ()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fields if obj is None else super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        return [f.name for f in self.model._meta.fields]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def create(self, request: HttpRequest, data: dict[str, Any]) -> Any:
        raise PermissionDenied  # subclasses say which service creates the row

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            return
        data = {k: v for k, v in form.cleaned_data.items() if k in self.add_fields}
        adopt(self.call_service(self.create, request, data), obj)


@admin.register(AppliedCoupon)
class AppliedCouponAdmin(ServiceAddAdmin):
    list_display = ("coupon", "customer", "status", "periods_used", "created_by", "created_at")
    list_filter = ("status", "coupon")
    list_select_related = ("coupon", "customer")
    search_fields = ("coupon__code", "customer__external_id", "customer__name")
    autocomplete_fields = ("customer", "coupon")
    add_fields = ("customer", "coupon")
    actions = ("remove_coupons",)

    def create(self, request: HttpRequest, data: dict[str, Any]) -> AppliedCoupon:
        return apply_coupon(data["customer"], data["coupon"], actor=self.actor(request), now=timezone.now())

    @admin.action(description="Remove selected coupons (future invoices only)", permissions=["change"])
    def remove_coupons(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = self.actor(request), timezone.now()
        for applied in queryset.select_related("coupon", "customer"):
            try:
                remove_coupon(applied, actor=actor, now=now)
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"{applied}: {error_text(exc)}", messages.ERROR)
            else:
                self.message_user(request, f"{applied} removed.", messages.SUCCESS)


@admin.register(CreditGrant)
class CreditGrantAdmin(ServiceAddAdmin):
    list_display = ("customer", "currency", "amount", "remaining", "expires_on", "reason", "created_by",
                    "created_at")
    list_filter = ("currency",)
    list_select_related = ("customer",)
    search_fields = ("customer__external_id", "customer__name", "reason")
    autocomplete_fields = ("customer",)
    add_fields = ("customer", "currency", "amount", "expires_on", "reason")

    def create(self, request: HttpRequest, data: dict[str, Any]) -> CreditGrant:
        return grant_credit(data["customer"], amount=data["amount"], currency=str(data["currency"]) or None,
                            reason=data["reason"], expires_on=data.get("expires_on"), actor=self.actor(request),
                            now=timezone.now())


class WalletTransactionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WalletTransaction
    fk_name = "wallet"
    extra = 0
    fields = ("created_at", "kind", "amount", "remaining", "expires_on", "invoice", "created_by")
    readonly_fields = fields
    can_delete = False


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("customer", "currency", "balance", "updated_at")
    list_filter = ("currency",)
    list_select_related = ("customer",)
    search_fields = ("customer__external_id", "customer__name")
    inlines = (WalletTransactionInline,)


@admin.register(PendingCharge)
class PendingChargeAdmin(ServiceAddAdmin):
    list_display = ("description", "customer", "currency", "quantity", "unit_price", "bill_on", "invoice",
                    "installment_plan")
    list_filter = ("currency", "bill_on")
    list_select_related = ("customer", "invoice", "installment_plan")
    search_fields = ("description", "customer__external_id", "customer__name")
    autocomplete_fields = ("customer",)
    add_fields = ("customer", "description", "currency", "quantity", "unit_price", "product", "bill_on")

    def create(self, request: HttpRequest, data: dict[str, Any]) -> PendingCharge:
        return add_one_off_charge(
            data["customer"], description=data["description"], unit_price=data["unit_price"],
            quantity=data["quantity"], currency=str(data["currency"]) or None, product=data.get("product"),
            bill_on=data["bill_on"], actor=self.actor(request), now=timezone.now(),
        )


class InstallmentChargeInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PendingCharge
    fk_name = "installment_plan"
    extra = 0
    fields = ("installment_number", "description", "unit_price", "bill_on", "invoice")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "installments"


@admin.register(InstallmentPlan)
class InstallmentPlanAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("description", "customer", "currency", "total", "installments", "created_by", "created_at")
    list_filter = ("currency",)
    list_select_related = ("customer",)
    search_fields = ("description", "customer__external_id", "customer__name")
    inlines = (InstallmentChargeInline,)
