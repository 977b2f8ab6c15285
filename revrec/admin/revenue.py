"""ASC 606 records in the admin: standalone selling prices and product revenue rules (edited by finance
admins and revenue accountants, history kept), revenue contracts and their obligations (read only, built by
the services), "Mark delivered…" on obligations awaiting delivery, and recognition runs with a "Run
recognition…" page.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from billing.actors import Actor
from billing.admin_tools import NoRevertHistoryMixin, ReadOnlyAdminMixin
from billing.errors import BillingError
from customers.admin import action_with_form, error_text
from customers.models import BillingEntity
from revrec.admin.common import DELIVER, RUN_RECOGNITION, amount, page
from revrec.admin.modifications import ModificationAdminMixin
from revrec.models import (
    ContractModification,
    ObligationAdjustment,
    PerformanceObligation,
    ProductRevenueRule,
    Recognition,
    RecognitionRun,
    RevenueContract,
    StandaloneSellingPrice,
)

DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
EARLIEST = date(2000, 1, 1)
RECOGNITIONS_SHOWN = 400  # daily rows of a long obligation: the latest ones, the reports have the rest


def _period(start: date | None, end: date | None) -> str:
    if start is None:
        return "-"
    return f"{start} to {end - timedelta(days=1)}" if end else f"from {start}"


# --- Standalone selling prices and revenue rules --------------------------------------------------------------


@admin.register(StandaloneSellingPrice)
class StandaloneSellingPriceAdmin(NoRevertHistoryMixin, SimpleHistoryAdmin):
    list_display = ("product", "currency", "effective_from", "price", "per", "method", "is_uncertain", "note")
    list_filter = ("currency", "method", "is_uncertain", "per")
    search_fields = ("product__code", "product__name", "note")
    list_select_related = ("product",)
    date_hierarchy = "effective_from"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the SSP history is the allocation's evidence: add a row with a later date instead


@admin.register(ProductRevenueRule)
class ProductRevenueRuleAdmin(NoRevertHistoryMixin, SimpleHistoryAdmin):
    list_display = ("product", "one_time")
    list_filter = ("one_time",)
    search_fields = ("product__code", "product__name")
    list_select_related = ("product",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # set it back to "when invoiced" instead, so its history stays with the product


# --- Revenue contracts and obligations ------------------------------------------------------------------------


class ObligationInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PerformanceObligation
    extra = 0
    can_delete = False
    fields = ("obligation", "kind", "pattern", "service_period", "ssp_text", "allocated", "recognised",
              "remaining_text", "status")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("revenue_contract")

    @admin.display(description="obligation")
    def obligation(self, o: PerformanceObligation) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:revrec_performanceobligation_change", args=[o.pk]),
                           o.description)

    @admin.display(description="service period")
    def service_period(self, o: PerformanceObligation) -> str:
        return _period(o.service_start, o.service_end) if o.service_start else (str(o.satisfied_on or "-"))

    @admin.display(description="SSP")
    def ssp_text(self, o: PerformanceObligation) -> str:
        return amount(o.ssp, str(o.revenue_contract.currency))

    @admin.display(description="allocated")
    def allocated(self, o: PerformanceObligation) -> str:
        return amount(o.allocated_price, str(o.revenue_contract.currency))

    @admin.display(description="recognised")
    def recognised(self, o: PerformanceObligation) -> str:
        return amount(o.recognized_amount, str(o.revenue_contract.currency))

    @admin.display(description="remaining")
    def remaining_text(self, o: PerformanceObligation) -> str:
        return amount(o.remaining, str(o.revenue_contract.currency))


class ModificationInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ContractModification
    fk_name = "revenue_contract"
    extra = 0
    can_delete = False
    fields = ("change", "treatment", "effective_date", "price_change", "catch_up_amount", "rationale", "created_by")
    readonly_fields = fields


@admin.register(RevenueContract)
class RevenueContractAdmin(ModificationAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("reference", "customer", "billing_entity", "currency", "price_text", "billed_text",
                    "recognised_text", "deferred_text", "asset_text", "created_at")
    list_filter = ("billing_entity", "currency")
    search_fields = ("reference", "customer__external_id", "customer__name")
    list_select_related = ("customer", "billing_entity")
    fields = ("reference", "billing_entity", "customer", "contract", "invoice", "parent", "currency", "price_text",
              "billed_text", "recognised_text", "deferred_text", "asset_text", "created_at")
    readonly_fields = fields
    inlines = (ObligationInline, ModificationInline)

    @admin.display(description="transaction price", ordering="transaction_price")
    def price_text(self, c: RevenueContract) -> str:
        return amount(c.transaction_price, str(c.currency))

    @admin.display(description="billed", ordering="billed")
    def billed_text(self, c: RevenueContract) -> str:
        return amount(c.billed, str(c.currency))

    @admin.display(description="recognised", ordering="recognized")
    def recognised_text(self, c: RevenueContract) -> str:
        return amount(c.recognized, str(c.currency))

    @admin.display(description="deferred")
    def deferred_text(self, c: RevenueContract) -> str:
        return amount(c.deferred, str(c.currency))

    @admin.display(description="contract asset")
    def asset_text(self, c: RevenueContract) -> str:
        return amount(c.contract_asset, str(c.currency))


@admin.register(ContractModification)
class ContractModificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Modifications are made by the modification service (its rule is recorded with it); here they are read."""

    list_display = ("revenue_contract", "change", "treatment", "effective_date", "price_change", "catch_up_amount",
                    "created_by")
    list_filter = ("change", "treatment")
    search_fields = ("revenue_contract__reference", "source_key")
    list_select_related = ("revenue_contract",)


class RecognitionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Recognition
    extra = 0
    can_delete = False
    fields = ("recognized_on", "kind", "amount", "entry_link")
    readonly_fields = fields
    ordering = ("-recognized_on", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Inline querysets cannot be sliced (the formset filters them), so keep the latest rows by date.
        queryset = super().get_queryset(request)
        latest = list(queryset.order_by("-recognized_on", "-id").values_list("pk", flat=True)[:RECOGNITIONS_SHOWN])
        return queryset.filter(pk__in=latest)

    @admin.display(description="journal entry")
    def entry_link(self, r: Recognition) -> str:
        return format_html('<a href="{}">JE {}</a>', reverse("admin:revrec_journalentry_change", args=[r.entry_id]),
                           r.entry_id)


class AdjustmentInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ObligationAdjustment
    extra = 0
    can_delete = False
    fields = ("kind", "effective_on", "billed_delta", "allocated_delta", "source_key", "entry")
    readonly_fields = fields


class DeliveryForm(forms.Form):
    delivered_on = forms.DateField(widget=DATE_WIDGET, help_text="The day it was delivered or the milestone reached.")

    def clean_delivered_on(self) -> date:
        day = self.cleaned_data["delivered_on"]
        if day < EARLIEST or day > timezone.now().date():
            raise forms.ValidationError("Choose a day that has come, from 2000 on.")
        return day


@admin.register(PerformanceObligation)
class PerformanceObligationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "description", "revenue_contract", "customer", "kind", "pattern", "status",
                    "service_period", "allocated", "recognised", "remaining_text", "recognized_through")
    list_filter = ("status", "kind", "pattern", "revenue_contract__billing_entity")
    search_fields = ("description", "revenue_contract__reference", "revenue_contract__customer__external_id")
    list_select_related = ("revenue_contract__customer",)
    fields = ("revenue_contract", "description", "product", "invoice_line", "kind", "pattern", "status", "quantity",
              "service_period", "satisfied_on", "billed_amount", "billed_on", "ssp", "ssp_source", "allocated",
              "recognised", "remaining_text", "recognized_through", "rebased_on", "rebased_amount", "created_at")
    readonly_fields = fields
    inlines = (AdjustmentInline, RecognitionInline)
    actions = ("mark_delivered",)

    def has_deliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(DELIVER)

    @admin.display(description="customer")
    def customer(self, o: PerformanceObligation) -> str:
        return str(o.revenue_contract.customer)

    @admin.display(description="service period")
    def service_period(self, o: PerformanceObligation) -> str:
        return _period(o.service_start, o.service_end)

    @admin.display(description="allocated", ordering="allocated_price")
    def allocated(self, o: PerformanceObligation) -> str:
        return amount(o.allocated_price, str(o.revenue_contract.currency))

    @admin.display(description="recognised", ordering="recognized_amount")
    def recognised(self, o: PerformanceObligation) -> str:
        return amount(o.recognized_amount, str(o.revenue_contract.currency))

    @admin.display(description="remaining")
    def remaining_text(self, o: PerformanceObligation) -> str:
        return amount(o.remaining, str(o.revenue_contract.currency))

    @admin.action(description="Mark delivered…", permissions=["deliver"])
    def mark_delivered(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        from revrec.services.delivery import mark_delivered  # imported when used (tests stand in for it)

        awaiting = queryset.filter(status=PerformanceObligation.Status.AWAITING_DELIVERY)

        def apply(data: dict[str, Any]) -> None:
            skipped = queryset.exclude(status=PerformanceObligation.Status.AWAITING_DELIVERY).count()
            done = 0
            for obligation in awaiting.select_related("revenue_contract"):
                try:
                    mark_delivered(obligation, delivered_on=data["delivered_on"], actor=Actor.for_user(request.user),
                                   now=timezone.now())
                except BillingError as exc:
                    self.message_user(request, f"{obligation}: {error_text(exc)}", messages.ERROR)
                else:
                    done += 1
            if done:
                self.message_user(request, f"Marked {done} obligation(s) delivered on {data['delivered_on']}; the "
                                           "next recognition run recognises them.", messages.SUCCESS)
            if skipped:
                self.message_user(request, f"Skipped {skipped} obligation(s) not awaiting delivery.",
                                  messages.WARNING)

        return action_with_form(self, request, awaiting, form_class=DeliveryForm, title="Mark delivered",
                                submit_label="Mark delivered", apply=apply)


# --- Recognition runs -----------------------------------------------------------------------------------------


class RunRecognitionForm(forms.Form):
    through = forms.DateField(widget=DATE_WIDGET, label="Recognise through",
                              help_text="Revenue due through the end of this day is recognised.")
    billing_entity = forms.ModelChoiceField(BillingEntity.objects.order_by("code"), required=False,
                                            to_field_name="code", empty_label="Every billing entity")

    def clean_through(self) -> date:
        day = self.cleaned_data["through"]
        if day < EARLIEST or day > timezone.now().date():
            raise forms.ValidationError("Choose a day from 2000 up to today: revenue is never recognised ahead.")
        return day


def _outcome(result: Any) -> dict[str, Any]:
    """What a run did, from a RecognitionRun row or the service's RecognitionResult."""
    entries = result.entries if isinstance(result.entries, int) else len(result.entries)
    amounts = {str(cur): Decimal(str(value)) for cur, value in (result.amounts or {}).items()}
    return {"obligations": result.obligations, "entries": entries,
            "amounts": [(cur, amount(value, cur)) for cur, value in sorted(amounts.items())],
            "run": result if isinstance(result, RecognitionRun) else None}


@admin.register(RecognitionRun)
class RecognitionRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("started_at", "through_date", "status", "obligations", "entries", "amounts_text",
                    "triggered_by", "finished_at")
    list_filter = ("status",)
    date_hierarchy = "through_date"
    fields = ("through_date", "status", "obligations", "entries", "amounts_text", "error", "triggered_by",
              "started_at", "finished_at")
    readonly_fields = fields

    @admin.display(description="recognised")
    def amounts_text(self, run: RecognitionRun) -> str:
        return ", ".join(f"{amount(Decimal(str(v)), cur)} {cur}" for cur, v in sorted((run.amounts or {}).items()))

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_RECOGNITION)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"can_run": self.has_run_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [path("run/", view(self.run_view), name="revrec_recognitionrun_run"), *super().get_urls()]

    def run_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_run_permission(request):
            raise PermissionDenied
        from revrec.services import recognition

        form = RunRecognitionForm(request.POST or None, initial={"through": timezone.now().date() - timedelta(days=1)})
        outcome = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                result = recognition.run_recognition(data["through"], actor=Actor.for_user(request.user),
                                                     now=timezone.now(), entity=data["billing_entity"])
            except (BillingError, LookupError) as exc:
                form.add_error(None, error_text(exc) if isinstance(exc, BillingError) else str(exc))
            else:
                outcome = _outcome(result)
                self.message_user(request, f"Recognised through {data['through']}: {outcome['obligations']} "
                                           f"obligation(s), {outcome['entries']} journal entr(ies).", messages.SUCCESS)
        return page(self, request, "recognitionrun/run.html", "Run revenue recognition", form=form,
                    outcome=outcome, media=self.media + form.media)
