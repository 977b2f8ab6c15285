"""Admin for dunning: policies with their steps (finance admins edit, others read), customer overrides, the log of
steps run (with a "Retry" action for failed ones), suspensions, the e-mail log, a page that shows where an
invoice stands in dunning, and "Run dunning as of…" (finance admins), which runs the steps due at that moment
in the request, so a demo can move the clock forward and watch reminders, notices and suspensions happen.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing.actors import Actor
from billing.admin_tools import ReadOnlyAdminMixin
from contracts.models import Subscription
from customers.admin import SERVICE_ERRORS, HistoryAdmin, adopt, error_text
from invoicing.emails import TemplateRenderError, render_string
from invoicing.models import (
    CustomerDunningOverride,
    DunningAction,
    DunningPolicy,
    DunningStep,
    DunningSuspension,
    EmailMessage,
    Invoice,
)
from invoicing.services.dunning import (
    EMAIL_ACTIONS,
    dunning_state,
    remove_dunning_override,
    retry_dunning_action,
    run_dunning,
    set_dunning_override,
)

POLICY_SOURCES = {"override": "the customer's own policy", "override_none": "never dunned (customer override)",
                  "entity_default": "the billing entity's default", "none": "no policy"}
RUN_PERMISSION = "invoicing.change_dunningpolicy"  # running dunning by hand is a finance admin's call
RETRY_PERMISSION = "invoicing.change_dunningaction"

# What a step's own e-mail text is checked against when it is saved (the real values come from the invoice).
SAMPLE_CONTEXT: dict[str, Any] = {
    "customer_name": "Acme Corp", "customer_external_id": "acme", "invoice_number": "INV-000042",
    "amount_due": "1,200.00", "total": "1,200.00", "currency": "USD", "issue_date": date(2024, 3, 1),
    "due_date": date(2024, 3, 31), "days_overdue": 7, "days_until_due": 0, "today": date(2024, 4, 7),
    "entity_name": "Seller Inc", "contact_email": "billing@seller.test",
}


def _offset(days: int) -> str:
    return f"D{'+' if days >= 0 else '-'}{abs(days)}"


# --- policies -------------------------------------------------------------------------------------------------


class DunningStepForm(forms.ModelForm):
    class Meta:
        model = DunningStep
        fields = ("offset_days", "action", "email_subject", "email_body")
        widgets = {"email_body": forms.Textarea(attrs={"rows": 3, "cols": 60})}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        offset = data.get("offset_days")
        if offset is not None and not -90 <= offset <= 365:
            self.add_error("offset_days", "A step runs between 90 days before and 365 days after the due date.")
        action = data.get("action")
        for name in ("email_subject", "email_body"):
            text = (data.get(name) or "").strip()
            if not text:
                continue
            if action and action not in EMAIL_ACTIONS:
                self.add_error(name, "Only reminders, final notices and suspensions send an e-mail.")
                continue
            try:
                rendered = render_string(text, SAMPLE_CONTEXT)
            except TemplateRenderError as exc:
                self.add_error(name, str(exc))
                continue
            if name == "email_subject" and not rendered.strip():
                self.add_error(name, "The subject is empty once rendered.")
        return data


class DunningStepInline(admin.TabularInline):
    model = DunningStep
    form = DunningStepForm
    extra = 0
    fields = ("offset_days", "action", "email_subject", "email_body")
    ordering = ("offset_days", "id")


@admin.register(DunningPolicy)
class DunningPolicyAdmin(HistoryAdmin):
    list_display = ("name", "billing_entity", "is_default", "is_active", "steps_summary", "updated_at")
    list_filter = ("billing_entity", "is_default", "is_active")
    search_fields = ("name",)
    fields = ("name", "billing_entity", "is_default", "is_active")
    inlines = (DunningStepInline,)

    @admin.display(description="steps")
    def steps_summary(self, policy: DunningPolicy) -> str:
        return ", ".join(f"{_offset(s.offset_days)} {s.get_action_display().split(' ')[0].lower()}"
                         for s in policy.steps.order_by("offset_days", "id"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # A policy keeps its entity: its steps' runs and the overrides pointing at it belong there.
        return ("billing_entity",) if obj is not None else ()


@admin.register(CustomerDunningOverride)
class CustomerDunningOverrideAdmin(HistoryAdmin):
    list_display = ("customer", "policy_or_none", "note", "updated_at")
    list_select_related = ("customer", "policy")
    list_filter = ("policy",)
    search_fields = ("customer__external_id", "customer__name", "note")
    autocomplete_fields = ("customer",)
    fields = ("customer", "policy", "note")

    @admin.display(description="policy", ordering="policy__name")
    def policy_or_none(self, override: CustomerDunningOverride) -> str:
        return str(override.policy) if override.policy_id else "No dunning"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("customer",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: CustomerDunningOverride, form: Any, change: bool) -> None:
        saved = self.call_service(set_dunning_override, obj.customer, policy=form.cleaned_data.get("policy"),
                                  note=form.cleaned_data.get("note") or "", actor=self.actor(request))
        adopt(saved, obj)

    def delete_model(self, request: HttpRequest, obj: CustomerDunningOverride) -> None:
        remove_dunning_override(obj.customer, actor=self.actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for override in queryset.select_related("customer"):
            remove_dunning_override(override.customer, actor=self.actor(request))


# --- the log, the run, an invoice's state ---------------------------------------------------------------------


def _as_of_default() -> datetime:
    return timezone.now().replace(second=0, microsecond=0)


class RunDunningForm(forms.Form):
    as_of = forms.DateTimeField(initial=_as_of_default, label="As of",
                                help_text="Run every step due by this moment, in each customer's time zone "
                                          "(server time zone). A later moment moves the clock forward for a demo.")


def _details_text(details: dict[str, Any]) -> str:
    if not details:
        return ""
    for key in ("error", "reason", "notice"):
        if details.get(key):
            return str(details[key])
    if details.get("to"):
        return "E-mailed " + ", ".join(details["to"])
    if details.get("payment"):
        return f"Payment {details['payment']}: {details.get('payment_status', '')}"
    if "subscriptions" in details:
        return "Paused: " + (", ".join(details["subscriptions"]) or "no subscription")
    return ", ".join(f"{k}: {v}" for k, v in details.items())


@admin.register(DunningAction)
class DunningActionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("invoice_link", "customer", "step_label", "scheduled_for", "status", "outcome", "ran_at")
    list_filter = ("status", "action", "scheduled_for")
    list_select_related = ("invoice__customer",)
    search_fields = ("invoice__number", "invoice__customer__external_id", "invoice__customer__name")
    date_hierarchy = "ran_at"
    fields = ("invoice", "step", "action", "offset_days", "scheduled_for", "status", "outcome", "details", "as_of",
              "ran_at", "emails")
    readonly_fields = fields
    actions = ("retry_failed",)
    change_list_template = "admin/invoicing/dunningaction/change_list.html"

    @admin.display(description="invoice", ordering="invoice__number")
    def invoice_link(self, action: DunningAction) -> str:
        url = reverse("admin:invoicing_dunningaction_invoice", args=[action.invoice_id])
        return format_html('<a href="{}">{}</a>', url, action.invoice)

    @admin.display(description="customer", ordering="invoice__customer__name")
    def customer(self, action: DunningAction) -> str:
        return str(action.invoice.customer)

    @admin.display(description="step", ordering="offset_days")
    def step_label(self, action: DunningAction) -> str:
        return f"{_offset(action.offset_days)}: {action.get_action_display()}"

    @admin.display(description="outcome")
    def outcome(self, action: DunningAction) -> str:
        return _details_text(action.details)

    @admin.display(description="e-mails")
    def emails(self, action: DunningAction) -> str:
        rows = action.emails.order_by("sent_at", "id")
        return format_html_join(
            "", '<div><a href="{}">{}</a> ({})</div>',
            ((reverse("admin:invoicing_emailmessage_change", args=[m.pk]), m.subject, m.get_status_display())
             for m in rows),
        ) or "-"

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RETRY_PERMISSION)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("run/", view(self.run_view), name="invoicing_dunningaction_run"),
            path("invoice/<int:invoice_id>/", view(self.invoice_view), name="invoicing_dunningaction_invoice"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"can_run": self.has_run_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra)

    @admin.action(description="Retry selected failed steps (send the e-mail again, charge again, …)",
                  permissions=["retry"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = Actor.for_user(request.user), timezone.now()
        for action in queryset.select_related("invoice"):
            label = f"{action.invoice} {_offset(action.offset_days)} {action.get_action_display().lower()}"
            try:
                retried = retry_dunning_action(action, actor=actor, now=now)
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"{label}: {error_text(exc)}", messages.ERROR)
                continue
            level = messages.SUCCESS if retried.status != DunningAction.Status.FAILED else messages.ERROR
            self.message_user(request, f"{label}: {retried.get_status_display().lower()}. "
                                       f"{_details_text(retried.details)}", level)

    def run_view(self, request: HttpRequest) -> HttpResponse:
        """Run the steps due as of a moment, in this request (a demo's clock, or a catch-up after an outage)."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        form = RunDunningForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            as_of = form.cleaned_data["as_of"]
            result = run_dunning(now=as_of, actor=Actor.for_user(request.user))
            summary = result.summary()
            self.message_user(
                request,
                f"Dunning as of {as_of:%Y-%m-%d %H:%M %Z}: {summary['invoices_checked']} invoice(s) checked, "
                f"{summary['done']} step(s) done, {summary['skipped']} skipped, {summary['failed']} failed, "
                f"{summary['resumed']} suspension(s) lifted.",
                messages.WARNING if summary["failed"] or summary["errors"] else messages.SUCCESS,
            )
            for invoice_id, error in sorted(result.errors.items()):
                self.message_user(request, f"Invoice {invoice_id}: {error}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:invoicing_dunningaction_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Run dunning as of…",
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/invoicing/dunningaction/run.html", context)

    def invoice_view(self, request: HttpRequest, invoice_id: int) -> HttpResponse:
        """Where one invoice stands: its policy, each step with its date and outcome, the next one."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        invoice = get_object_or_404(Invoice.objects.select_related("customer", "billing_entity"), pk=invoice_id)
        state = dunning_state(invoice, now=timezone.now())
        actions = DunningStep.Action
        rows = [
            {"offset": _offset(s.offset_days), "action": actions(s.action).label, "scheduled_for": s.scheduled_for,
             "status": s.status.replace("_", " "), "ran_at": s.ran_at, "outcome": _details_text(s.details),
             "is_next": state.next_step is not None and s == state.next_step}
            for s in state.steps
        ]
        suspended_subscriptions = []
        if state.suspension is not None:
            suspended_subscriptions = list(Subscription.objects.filter(
                pk__in=state.suspension.subscription_ids).order_by("pk").values_list("external_id", flat=True))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Dunning of {invoice}",
            "invoice": invoice,
            "state": state,
            "rows": rows,
            "policy_source": POLICY_SOURCES[state.policy_source],
            "suspended_subscriptions": suspended_subscriptions,
            "invoice_url": reverse("admin:invoicing_invoice_change", args=[invoice.pk]),
            "emails": EmailMessage.objects.filter(invoice=invoice).order_by("sent_at", "id"),
        }
        return TemplateResponse(request, "admin/invoicing/dunningaction/invoice.html", context)


@admin.register(DunningSuspension)
class DunningSuspensionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("customer", "invoice", "suspended_at", "resumed_at", "paused_subscriptions")
    list_select_related = ("customer", "invoice")
    list_filter = (("resumed_at", admin.EmptyFieldListFilter),)
    search_fields = ("customer__external_id", "customer__name", "invoice__number")
    fields = ("customer", "invoice", "suspended_at", "resumed_at", "paused_subscriptions")
    readonly_fields = fields

    @admin.display(description="subscriptions paused by dunning")
    def paused_subscriptions(self, suspension: DunningSuspension) -> str:
        ids = suspension.subscription_ids or []
        return ", ".join(Subscription.objects.filter(pk__in=ids).order_by("pk").values_list("external_id",
                                                                                            flat=True)) or "-"


@admin.register(EmailMessage)
class EmailMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("sent_at", "kind", "recipients", "subject", "status", "customer", "invoice")
    list_filter = ("status", "kind")
    list_select_related = ("customer", "invoice")
    search_fields = ("subject", "customer__external_id", "customer__name", "invoice__number")
    date_hierarchy = "sent_at"
    fields = ("sent_at", "kind", "status", "recipients", "subject", "text", "error", "customer", "invoice",
              "dunning_action")
    readonly_fields = fields

    @admin.display(description="to")
    def recipients(self, message: EmailMessage) -> str:
        return ", ".join(message.to)

    @admin.display(description="body")
    def text(self, message: EmailMessage) -> str:
        return format_html('<pre class="email-body" style="white-space: pre-wrap">{}</pre>', message.body)
