"""Admin for the catalog (products, features, plans, versions, charges, coupons) and for contracts and
subscriptions.

Every write that has a service goes through it: plans are created with their first draft version, a
draft version's prices are edited through the catalog services, published versions are read only, and a
subscription's status, plan and quantity change only through the lifecycle actions.
"""

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from billing.admin_tools import ReadOnlyAdminMixin
from contracts.models import (
    BillingTiming,
    Charge,
    Contract,
    ContractCommitment,
    ContractEntitlement,
    ContractPrice,
    Coupon,
    Feature,
    FixedCharge,
    Plan,
    PlanEntitlement,
    PlanVersion,
    Product,
    Subscription,
    SubscriptionChange,
    SubscriptionPhase,
)
from contracts.resources import PlanImportResource, SubscriptionExportResource, SubscriptionImportResource
from contracts.selectors import current_period
from contracts.services.catalog import (
    add_charge,
    add_fixed_charge,
    archive_plan_version,
    create_plan,
    create_plan_version,
    publish_plan_version,
    remove_charge,
    set_entitlement,
    update_charge,
    update_plan_version,
)
from contracts.services.contracts import (
    activate_contract,
    add_commitment,
    cancel_contract,
    create_contract,
    renew_contract,
    set_contract_entitlement,
    set_contract_price,
)
from contracts.services.subscriptions import (
    REVOCABLE_ACTIONS,
    apply_due_changes,
    cancel_subscription,
    change_plan,
    change_quantity,
    create_subscription,
    pause_subscription,
    renew_subscription,
    resume_subscription,
    revoke_scheduled_change,
)
from customers.admin import (
    IMPORT_EXPORT_LIST_TEMPLATE,
    SERVICE_ERRORS,
    CsvExportAdminMixin,
    CsvImportAdminMixin,
    HistoryAdmin,
    ServiceAdmin,
    ServiceFormError,
    action_with_form,
    adopt,
    changed_values,
    error_text,
    form_values,
    run_for_each,
)

DRAFT = PlanVersion.Status.DRAFT
OPEN_CONTRACT = (Contract.Status.DRAFT, Contract.Status.ACTIVE)


def _has(request: HttpRequest, perm: str) -> bool:
    return request.user.has_perm(f"contracts.{perm}")


# --- Products and features --------------------------------------------------------------------------------


@admin.register(Product)
class ProductAdmin(HistoryAdmin):
    list_display = ("code", "name", "tax_code", "is_active", "created_at")
    list_filter = ("is_active", "tax_code")
    search_fields = ("code", "name")
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "code") if obj else self.readonly_fields


@admin.register(Feature)
class FeatureAdmin(ServiceAdmin):
    list_display = ("code", "name", "kind", "unit")
    list_filter = ("kind",)
    search_fields = ("code", "name")
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Entitlements name the feature by code; a limit feature cannot become a switch under them.
        return (*self.readonly_fields, "code", "kind") if obj else self.readonly_fields


# --- Plans and versions -----------------------------------------------------------------------------------


class PlanAddForm(forms.ModelForm):
    """A new plan and the prices of its first (draft) version."""

    base_fee = forms.DecimalField(max_digits=28, decimal_places=12, min_value=Decimal(0), initial=Decimal(0),
                                  help_text="Per billing period, in the plan's currency.")
    base_fee_timing = forms.ChoiceField(choices=BillingTiming.choices, initial=BillingTiming.ADVANCE)
    trial_days = forms.IntegerField(min_value=0, initial=0)
    minimum_commitment = forms.DecimalField(max_digits=28, decimal_places=12, required=False,
                                            help_text="Minimum spend per period (a shortfall is trued up).")

    class Meta:
        model = Plan
        fields = ("code", "name", "description", "product", "currency", "interval")


class PlanVersionInline(admin.TabularInline):
    model = PlanVersion
    fields = ("version", "status", "base_fee", "base_fee_timing", "trial_days", "published_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Plan)
class PlanAdmin(CsvImportAdminMixin, HistoryAdmin):
    list_display = ("code", "name", "product", "currency", "interval", "version_count", "is_active", "created_at")
    list_filter = ("is_active", "interval", "currency", "product")
    list_select_related = ("product",)
    search_fields = ("code", "name", "product__code", "product__name")
    ordering = ("name",)  # explicit: an annotated (grouped) query drops the model's default ordering
    date_hierarchy = "created_at"
    autocomplete_fields = ("product",)
    readonly_fields = ("created_at", "updated_at")
    inlines = (PlanVersionInline,)
    actions = ("new_draft_versions",)
    import_resource_classes = [PlanImportResource]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(description="versions", ordering="version_count")
    def version_count(self, plan: Plan) -> int:
        return plan.version_count

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> type:
        if obj is None:
            kwargs["form"] = PlanAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["code", "name", "description", "product", "currency", "interval", "base_fee", "base_fee_timing",
                    "trial_days", "minimum_commitment"]
        return ["code", "name", "description", "product", "currency", "interval", "is_active", "created_at",
                "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Versions and subscriptions are priced in the plan's currency and interval: fixed at creation.
        if obj is not None:
            return (*self.readonly_fields, "code", "product", "currency", "interval")
        return self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj: Any) -> tuple[type, ...]:
        return self.inlines if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deactivate a plan (is_active) or archive its versions

    def has_add_version_permission(self, request: HttpRequest) -> bool:
        return _has(request, "add_planversion")

    def save_model(self, request: HttpRequest, obj: Plan, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)  # name, description, is_active only
        data = form.cleaned_data
        saved = self.call_service(
            create_plan, actor=self.actor(request), description=data.get("description", ""),
            base_fee=data["base_fee"], base_fee_timing=data["base_fee_timing"], trial_days=data["trial_days"],
            minimum_commitment=data.get("minimum_commitment"),
            **form_values(form, ("code", "name", "product", "currency", "interval")),
        )
        adopt(saved, obj)
        return None

    @admin.action(description="Create a new draft version (copy of the latest)", permissions=["add_version"])
    def new_draft_versions(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = self.actor(request)
        run_for_each(self, request, queryset, lambda plan: create_plan_version(plan, actor=actor),
                     done="Created a draft version for")


class DraftOnlyInlineMixin:
    """Prices of a draft version are edited in place; a published or archived version's are read only."""

    def _is_draft(self, obj: Any) -> bool:
        return obj is not None and obj.status == DRAFT

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_draft(obj) and super().has_add_permission(request, obj)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_draft(obj) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_draft(obj) and super().has_delete_permission(request, obj)  # type: ignore[misc]


class ChargeInline(DraftOnlyInlineMixin, admin.StackedInline):
    model = Charge
    extra = 0
    fields = ("meter", "charge_model", "properties", "filters", "group_by", "billing_timing", "minimum_amount",
              "display_name", "product")
    autocomplete_fields = ("meter", "product")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("meter", "product")


class FixedChargeInline(DraftOnlyInlineMixin, admin.TabularInline):
    model = FixedCharge
    extra = 0
    fields = ("code", "name", "amount", "quantity", "billing_timing", "recurring", "prorated", "product")
    autocomplete_fields = ("product",)


class PlanEntitlementInline(DraftOnlyInlineMixin, admin.TabularInline):
    model = PlanEntitlement
    extra = 0
    fields = ("feature", "enabled", "limit", "per_unit")
    autocomplete_fields = ("feature",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("feature")


@admin.register(PlanVersion)
class PlanVersionAdmin(HistoryAdmin):
    list_display = ("__str__", "plan", "version", "status", "base_fee", "base_fee_timing", "trial_days",
                    "subscription_count", "published_at")
    list_display_links = ("__str__",)
    list_filter = ("status", "plan__interval", "plan__currency", "plan")
    list_select_related = ("plan",)
    search_fields = ("plan__code", "plan__name")
    ordering = ("plan__code", "-version")
    date_hierarchy = "published_at"
    inlines = (ChargeInline, FixedChargeInline, PlanEntitlementInline)
    actions = ("publish_versions", "new_draft_versions", "archive_versions")
    fields = ("plan", "version", "status", "base_fee", "base_fee_timing", "trial_days", "minimum_commitment",
              "published_at", "created_at", "updated_at")
    always_readonly = ("plan", "version", "status", "published_at", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(subscription_count=Count("subscriptions"))

    @admin.display(description="subscriptions", ordering="subscription_count")
    def subscription_count(self, version: PlanVersion) -> int:
        return version.subscription_count

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is not None and obj.status == DRAFT:
            return self.always_readonly
        return self.fields  # published prices never change: make a new version

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        # Autocomplete for a subscription's plan offers only versions that take subscriptions.
        if request.GET.get("model_name") == "subscription" and request.GET.get("field_name") == "plan_version":
            queryset = queryset.filter(status=PlanVersion.Status.PUBLISHED)
        return queryset, duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from "create a plan" and "create a new draft version"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.status == DRAFT and super().has_delete_permission(request, obj)

    def has_publish_permission(self, request: HttpRequest) -> bool:
        return _has(request, "publish_planversion")

    def has_archive_permission(self, request: HttpRequest) -> bool:
        return _has(request, "archive_planversion")

    def has_add_version_permission(self, request: HttpRequest) -> bool:
        return _has(request, "add_planversion")

    def save_model(self, request: HttpRequest, obj: PlanVersion, form: Any, change: bool) -> None:
        values = changed_values(form)
        if values:
            saved = self.call_service(update_plan_version, PlanVersion.objects.get(pk=obj.pk),
                                      actor=self.actor(request), **values)
            adopt(saved, obj)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        version: PlanVersion = form.instance
        actor = self.actor(request)
        objects = formset.save(commit=False)
        for item in formset.deleted_objects:
            label = f"{formset.model._meta.verbose_name} {item}"
            if isinstance(item, Charge):
                self.call_service(remove_charge, item, actor=actor, prefix=label)
            else:
                if PlanVersion.objects.get(pk=version.pk).status != DRAFT:
                    raise ServiceFormError({"__all__": [f"{label}: {version} is no longer a draft."]})
                item.delete()
        changed = {f.instance.pk: f.changed_data for f in formset.forms if f.instance.pk}
        for index, item in enumerate(objects, 1):
            label = f"{formset.model._meta.verbose_name} {index}"
            if isinstance(item, Charge):
                values = {name: getattr(item, name) for name in ChargeInline.fields}
                if item.pk is None:
                    self.call_service(add_charge, version, actor=actor, prefix=label, **values)
                else:
                    fields = {name: values[name] for name in changed.get(item.pk, []) if name in values}
                    self.call_service(update_charge, item, actor=actor, prefix=label, **fields)
            elif isinstance(item, FixedCharge):
                if item.pk is None:
                    values = {name: getattr(item, name) for name in FixedChargeInline.fields if name != "code"}
                    self.call_service(add_fixed_charge, version, actor=actor, code=item.code, prefix=label, **values)
                else:
                    # No service edits a fixed charge: the draft check is the rule that matters here.
                    if PlanVersion.objects.get(pk=version.pk).status != DRAFT:
                        raise ServiceFormError({"__all__": [f"{label}: {version} is no longer a draft."]})
                    item.save()
            elif isinstance(item, PlanEntitlement):
                self.call_service(set_entitlement, version, actor=actor, feature=item.feature, enabled=item.enabled,
                                  limit=item.limit, per_unit=item.per_unit, prefix=label)

    @admin.action(description="Publish selected draft versions", permissions=["publish"])
    def publish_versions(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = self.actor(request), timezone.now()
        run_for_each(self, request, queryset, lambda v: publish_plan_version(v, actor=actor, now=now),
                     done="Published")

    @admin.action(description="Create a new draft version from each selected version", permissions=["add_version"])
    def new_draft_versions(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = self.actor(request)
        run_for_each(self, request, queryset.select_related("plan"),
                     lambda v: create_plan_version(v.plan, actor=actor, copy_from=v), done="Copied")

    @admin.action(description="Archive selected published versions", permissions=["archive"])
    def archive_versions(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = self.actor(request)
        run_for_each(self, request, queryset, lambda v: archive_plan_version(v, actor=actor), done="Archived")


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A listing for lookups and autocomplete; these rows are edited on their parent's page."""


@admin.register(Charge)
class ChargeAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "plan_version", "meter", "charge_model", "billing_timing", "minimum_amount")
    list_filter = ("charge_model", "billing_timing", "plan_version__status")
    list_select_related = ("plan_version__plan", "meter")
    search_fields = ("display_name", "meter__code", "plan_version__plan__code")


@admin.register(FixedCharge)
class FixedChargeAdmin(ReadOnlyAdmin):
    list_display = ("code", "name", "plan_version", "amount", "quantity", "billing_timing", "recurring")
    list_filter = ("billing_timing", "recurring", "plan_version__status")
    list_select_related = ("plan_version__plan",)
    search_fields = ("code", "name", "plan_version__plan__code")


@admin.register(Coupon)
class CouponAdmin(HistoryAdmin):
    list_display = ("code", "name", "discount_type", "percent_off", "amount_off", "duration", "duration_periods",
                    "max_redemptions", "redeem_by", "is_active")
    list_filter = ("is_active", "discount_type", "duration")
    search_fields = ("code", "name")
    date_hierarchy = "created_at"
    autocomplete_fields = ("applies_to_plans", "applies_to_meters")
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "code") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # invoices name the coupon they applied; deactivate it instead


# --- Contracts --------------------------------------------------------------------------------------------


class ContractTermsInlineMixin:
    """Negotiated terms are added (new rows, through the service) while the contract is open; an existing
    row is never edited in place: end it and add the next one (that is how a ramp is written)."""

    def _is_open(self, obj: Any) -> bool:
        return obj is not None and obj.status in OPEN_CONTRACT

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_open(obj) and super().has_add_permission(request, obj)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_open(obj) and super().has_delete_permission(request, obj)  # type: ignore[misc]


class ContractPriceInline(ContractTermsInlineMixin, admin.StackedInline):
    model = ContractPrice
    extra = 0
    fields = ("target", "plan_version", "charge", "fixed_charge", "amount", "charge_model", "properties",
              "effective_from", "effective_to")
    autocomplete_fields = ("plan_version", "charge", "fixed_charge")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("plan_version__plan", "charge__meter", "fixed_charge")


class ContractCommitmentInline(ContractTermsInlineMixin, admin.TabularInline):
    model = ContractCommitment
    extra = 0
    fields = ("kind", "amount", "period", "start_date", "end_date", "description")


class ContractEntitlementInline(admin.TabularInline):
    model = ContractEntitlement
    extra = 0
    fields = ("feature", "enabled", "limit")
    autocomplete_fields = ("feature",)

    def _is_open(self, obj: Any) -> bool:
        return obj is not None and obj.status in OPEN_CONTRACT

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_open(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_open(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_open(obj) and super().has_delete_permission(request, obj)


class ContractSubscriptionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Subscription
    fields = ("external_id", "plan_version", "quantity", "status", "start_date", "end_date")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False
    verbose_name_plural = "subscriptions (add them from Subscriptions)"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("plan_version__plan")


class ContractAddForm(forms.ModelForm):
    class Meta:
        model = Contract
        fields = ("customer", "reference", "name", "status", "currency", "start_date", "end_date", "auto_renew",
                  "renewal_term_months", "renewal_uplift_percent", "signed_at", "notes", "metadata")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [(s.value, s.label) for s in (Contract.Status.DRAFT, Contract.Status.ACTIVE)]
        self.fields["status"].initial = Contract.Status.ACTIVE
        self.fields["currency"].required = False
        self.fields["currency"].help_text = "Empty: the customer's currency."


@admin.register(Contract)
class ContractAdmin(HistoryAdmin):
    list_display = ("reference", "customer", "name", "status", "currency", "start_date", "end_date", "auto_renew",
                    "renewal_term_months", "renewal_uplift_percent")
    list_filter = ("status", "auto_renew", "currency")
    list_select_related = ("customer",)
    search_fields = ("reference", "name", "customer__external_id", "customer__name")
    date_hierarchy = "start_date"
    autocomplete_fields = ("customer",)
    inlines = (ContractPriceInline, ContractCommitmentInline, ContractEntitlementInline, ContractSubscriptionInline)
    actions = ("activate_contracts", "renew_contracts", "cancel_contracts_now", "cancel_contracts_at_period_end")
    readonly_fields = ("created_at", "updated_at")
    # Status and term change through the actions; what was signed (customer, reference, currency) never.
    fixed_after_creation = ("customer", "reference", "currency", "status", "start_date", "end_date")
    editable_terms = ("name", "auto_renew", "renewal_term_months", "renewal_uplift_percent", "signed_at", "notes",
                      "metadata")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> type:
        if obj is None:
            kwargs["form"] = ContractAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(ContractAddForm.Meta.fields)
        return [*fields, *self.readonly_fields] if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        if obj.status not in OPEN_CONTRACT:
            return (*self.fixed_after_creation, *self.editable_terms, *self.readonly_fields)
        return (*self.fixed_after_creation, *self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # contracts are canceled or end; their history stays

    def has_lifecycle_permission(self, request: HttpRequest) -> bool:
        return _has(request, "manage_contract_lifecycle")

    def save_model(self, request: HttpRequest, obj: Contract, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)  # names, notes and renewal terms only
        values = form_values(form)
        values["currency"] = values.get("currency") or None
        saved = self.call_service(create_contract, actor=self.actor(request), **values)
        adopt(saved, obj)
        return None

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        contract: Contract = form.instance
        actor = self.actor(request)
        objects = formset.save(commit=False)
        for item in formset.deleted_objects:
            item.delete()
        for index, item in enumerate(objects, 1):
            label = f"{formset.model._meta.verbose_name} {index}"
            if isinstance(item, ContractPrice) and item.pk is None:
                values = {name: getattr(item, name) for name in ContractPriceInline.fields}
                values["properties"] = values["properties"] or None
                self.call_service(set_contract_price, contract, actor=actor, prefix=label, **values)
            elif isinstance(item, ContractCommitment) and item.pk is None:
                values = {name: getattr(item, name) for name in ContractCommitmentInline.fields}
                self.call_service(add_commitment, contract, actor=actor, prefix=label, **values)
            elif isinstance(item, ContractEntitlement):
                self.call_service(set_contract_entitlement, contract, actor=actor, feature=item.feature,
                                  enabled=item.enabled, limit=item.limit, prefix=label)

    @admin.action(description="Activate selected draft contracts", permissions=["lifecycle"])
    def activate_contracts(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = self.actor(request)
        run_for_each(self, request, queryset, lambda c: activate_contract(c, actor=actor), done="Activated")

    @admin.action(description="Renew selected contracts (one renewal term)", permissions=["lifecycle"])
    def renew_contracts(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = self.actor(request), timezone.now()
        run_for_each(self, request, queryset, lambda c: renew_contract(c, actor=actor, now=now), done="Renewed")

    @admin.action(description="Cancel selected contracts now", permissions=["lifecycle"])
    def cancel_contracts_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = self.actor(request), timezone.now()
        run_for_each(self, request, queryset, lambda c: cancel_contract(c, actor=actor, now=now), done="Canceled")

    @admin.action(description="Cancel selected contracts at period end", permissions=["lifecycle"])
    def cancel_contracts_at_period_end(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = self.actor(request), timezone.now()
        run_for_each(self, request, queryset,
                     lambda c: cancel_contract(c, actor=actor, now=now, at_period_end=True),
                     done="Scheduled the cancellation of")


# --- Subscriptions ----------------------------------------------------------------------------------------


TIMING_CHOICES = [
    ("", "Automatic: an upgrade now, a downgrade at period end"),
    ("immediate", "Now (prorated)"),
    ("period_end", "At the end of the current period"),
]


class ChangePlanForm(forms.Form):
    plan_version = forms.ModelChoiceField(
        queryset=PlanVersion.objects.filter(status=PlanVersion.Status.PUBLISHED).select_related("plan")
        .order_by("plan__code", "-version"),
        help_text="Only published versions take subscriptions.",
    )
    timing = forms.ChoiceField(choices=TIMING_CHOICES, required=False)


class ChangeQuantityForm(forms.Form):
    quantity = forms.DecimalField(max_digits=24, decimal_places=6, min_value=Decimal("0.000001"))
    timing = forms.ChoiceField(choices=TIMING_CHOICES, required=False,
                               help_text="Automatic: more now, fewer at period end.")


class SubscriptionAddForm(forms.ModelForm):
    trial_days = forms.IntegerField(min_value=0, required=False, help_text="Empty: the plan version's trial.")

    class Meta:
        model = Subscription
        fields = ("customer", "plan_version", "contract", "external_id", "quantity", "start_date", "billing_anchor",
                  "bill_cycle_day", "end_date", "metadata")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["external_id"].required = False
        self.fields["external_id"].help_text = "Empty: one is generated."
        self.fields["start_date"].required = False
        self.fields["start_date"].help_text = "Empty: today in the customer's timezone."

    def _post_clean(self) -> None:
        # The service validates the whole subscription (status, dates, anchor) and reports by field; the
        # model's own checks would run here on a half-built row (no status yet) and mislead.
        pass


class SubscriptionPhaseInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SubscriptionPhase
    fields = ("plan_version", "quantity", "start_date", "end_date")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "phases (plan and quantity over time)"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("plan_version__plan")


class SubscriptionChangeInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SubscriptionChange
    fields = ("action", "status", "effective_date", "from_status", "to_status", "from_plan_version",
              "to_plan_version", "from_quantity", "to_quantity", "actor_label", "created_at", "applied_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "changes (applied and scheduled)"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("from_plan_version__plan", "to_plan_version__plan")


@admin.register(Subscription)
class SubscriptionAdmin(CsvImportAdminMixin, CsvExportAdminMixin, HistoryAdmin):
    list_display = ("external_id", "customer", "plan", "version", "seats", "status", "start_date", "end_date",
                    "period")
    list_filter = ("status", "billing_anchor", "plan_version__plan__interval", "plan_version__plan")
    list_select_related = ("customer", "plan_version__plan", "contract")
    search_fields = ("external_id", "customer__external_id", "customer__name", "plan_version__plan__code",
                     "contract__reference")
    date_hierarchy = "start_date"
    autocomplete_fields = ("customer", "plan_version", "contract")
    inlines = (SubscriptionPhaseInline, SubscriptionChangeInline)
    actions = ("pause", "resume", "cancel_now", "cancel_at_period_end", "renew", "change_plan_action",
               "change_quantity_action", "revoke_scheduled_changes", "apply_due_changes_action")
    import_resource_classes = [SubscriptionImportResource]
    export_resource_classes = [SubscriptionExportResource]
    import_export_change_list_template = IMPORT_EXPORT_LIST_TEMPLATE
    readonly_fields = ("customer", "plan_version", "contract", "external_id", "quantity", "status",
                       "billing_anchor", "bill_cycle_day", "start_date", "trial_end_date", "end_date", "canceled_at",
                       "paused_on", "current_period_display", "created_at", "updated_at")
    change_fields = ("customer", "plan_version", "contract", "external_id", "quantity", "status", "billing_anchor",
                     "bill_cycle_day", "start_date", "trial_end_date", "end_date", "canceled_at", "paused_on",
                     "current_period_display", "metadata", "created_at", "updated_at")

    @admin.display(description="plan", ordering="plan_version__plan__code")
    def plan(self, subscription: Subscription) -> str:
        return subscription.plan_version.plan.code

    @admin.display(description="version", ordering="plan_version__version")
    def version(self, subscription: Subscription) -> int:
        return subscription.plan_version.version

    @admin.display(description="quantity", ordering="quantity")
    def seats(self, subscription: Subscription) -> str:
        # Stored with 6 decimals; shown as entered: 3, not 3.000000, but 2.5 stays 2.5.
        return format(subscription.quantity.normalize(), "f")

    @admin.display(description="current period")
    def period(self, subscription: Subscription) -> str:
        found = current_period(subscription, now=timezone.now())
        if found is None:
            return "—"
        # Periods are [start, end): shown with their last day, as on an invoice.
        return f"{found.start} to {found.end - timedelta(days=1)}"

    @admin.display(description="current period")
    def current_period_display(self, subscription: Subscription) -> str:
        return self.period(subscription)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> type:
        if obj is None:
            kwargs["form"] = SubscriptionAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return [*SubscriptionAddForm.Meta.fields[:7], "trial_days", *SubscriptionAddForm.Meta.fields[7:]]
        return list(self.change_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Status, plan and quantity change only through the lifecycle actions; only metadata is edited here.
        return self.readonly_fields if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # cancel instead: invoices and revenue refer to the subscription

    def has_lifecycle_permission(self, request: HttpRequest) -> bool:
        return _has(request, "manage_subscription_lifecycle")

    def save_model(self, request: HttpRequest, obj: Subscription, form: Any, change: bool) -> None:
        if change:
            obj._history_user = request.user  # type: ignore[attr-defined]
            obj.save(update_fields=["metadata", "updated_at"])
            return
        data = form.cleaned_data
        saved = self.call_service(
            create_subscription, actor=self.actor(request), now=timezone.now(),
            customer=data["customer"], plan_version=data["plan_version"], contract=data.get("contract"),
            external_id=data.get("external_id") or None, quantity=data["quantity"],
            start_date=data.get("start_date"), billing_anchor=data["billing_anchor"],
            bill_cycle_day=data.get("bill_cycle_day"), trial_days=data.get("trial_days"),
            end_date=data.get("end_date"), metadata=data.get("metadata") or {},
        )
        adopt(saved, obj)

    def _lifecycle(self, request: HttpRequest, queryset: QuerySet, operation: Any, done: str) -> None:
        actor, now = self.actor(request), timezone.now()
        run_for_each(self, request, queryset, lambda s: operation(s, actor=actor, now=now), done=done)

    @admin.action(description="Pause selected subscriptions", permissions=["lifecycle"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._lifecycle(request, queryset, pause_subscription, "Paused")

    @admin.action(description="Resume selected subscriptions", permissions=["lifecycle"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._lifecycle(request, queryset, resume_subscription, "Resumed")

    @admin.action(description="Cancel selected subscriptions now (prorated)", permissions=["lifecycle"])
    def cancel_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._lifecycle(request, queryset, cancel_subscription, "Canceled")

    @admin.action(description="Cancel selected subscriptions at period end", permissions=["lifecycle"])
    def cancel_at_period_end(self, request: HttpRequest, queryset: QuerySet) -> None:
        def cancel(subscription: Subscription, **kwargs: Any) -> Any:
            return cancel_subscription(subscription, at_period_end=True, **kwargs)

        self._lifecycle(request, queryset, cancel, "Scheduled the cancellation of")

    @admin.action(description="Renew selected subscriptions (one term)", permissions=["lifecycle"])
    def renew(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._lifecycle(request, queryset, renew_subscription, "Renewed")

    @admin.action(description="Change plan of selected subscriptions…", permissions=["lifecycle"])
    def change_plan_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        def apply(data: dict[str, Any]) -> None:
            actor, now = self.actor(request), timezone.now()
            run_for_each(self, request, queryset, lambda s: change_plan(
                s, data["plan_version"], actor=actor, now=now, timing=data["timing"] or None),
                done="Changed the plan of")

        return action_with_form(self, request, queryset, form_class=ChangePlanForm, title="Change plan",
                                submit_label="Change plan", apply=apply)

    @admin.action(description="Change quantity of selected subscriptions…", permissions=["lifecycle"])
    def change_quantity_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        def apply(data: dict[str, Any]) -> None:
            actor, now = self.actor(request), timezone.now()
            run_for_each(self, request, queryset, lambda s: change_quantity(
                s, data["quantity"], actor=actor, now=now, timing=data["timing"] or None),
                done="Changed the quantity of")

        return action_with_form(self, request, queryset, form_class=ChangeQuantityForm, title="Change quantity",
                                submit_label="Change quantity", apply=apply)

    @admin.action(description="Revoke scheduled plan/quantity changes and cancellations", permissions=["lifecycle"])
    def revoke_scheduled_changes(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = self.actor(request), timezone.now()
        scheduled = SubscriptionChange.objects.filter(
            subscription__in=queryset, status=SubscriptionChange.Status.SCHEDULED, action__in=REVOCABLE_ACTIONS
        ).select_related("subscription")
        revoked = 0
        for change in scheduled:
            try:
                revoke_scheduled_change(change, actor=actor, now=now)
                revoked += 1
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"{change.subscription}: {error_text(exc)}", messages.ERROR)
        self.message_user(request, f"Revoked {revoked} scheduled change(s).",
                          messages.SUCCESS if revoked else messages.WARNING)

    @admin.action(description="Apply every due scheduled change (all subscriptions)", permissions=["lifecycle"])
    def apply_due_changes_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        applied = apply_due_changes(now=timezone.now(), actor=self.actor(request))
        self.message_user(request, f"Applied {applied} due change(s).", messages.SUCCESS)

