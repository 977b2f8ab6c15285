"""Admin for billing entities, customers and contacts, and the admin machinery the domain apps share.

Writes go through the services (customers/services.py), so the admin applies the same rules as the API:
a service's refusal is shown on the form it came from, with nothing saved. Lifecycle actions are
permission-checked and report each object's outcome.
"""

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from import_export.admin import ExportMixin, ImportMixin
from import_export.formats import base_formats
from simple_history.admin import SimpleHistoryAdmin

from billing.actors import Actor
from billing.errors import BillingError
from customers.models import BillingEntity, Contact, Customer
from customers.resources import (
    AccrualCSV,
    CustomerExportResource,
    CustomerImportResource,
    ImportFileError,
    describe_error,
    import_problems,
    service_errors,
)
from customers.services import (
    add_contact,
    archive_customer,
    create_billing_entity,
    create_customer,
    update_billing_entity,
    update_customer,
)

SERVICE_ERRORS = (ValidationError, BillingError)

# --- Shared by every domain admin ------------------------------------------------------------------------


class ServiceFormError(Exception):
    """A service refused a save made from an admin form; `errors` are keyed by form field."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


error_text = describe_error


def _with_service_errors(form_class: type, errors: dict[str, list[str]]) -> type:
    class ServiceErrorsForm(form_class):  # type: ignore[misc,valid-type]
        def _post_clean(self) -> None:
            super()._post_clean()
            for field, messages_ in errors.items():
                if field in self.fields:
                    self.add_error(field, messages_)
                else:
                    prefix = "" if field == NON_FIELD_ERRORS else f"{field}: "
                    self.add_error(None, [prefix + m for m in messages_])

    return ServiceErrorsForm


class ServiceAdminMixin:
    """Saves through services. A refusal raised while saving (ServiceFormError) rolls back the admin's
    transaction and the submitted form is shown again with the service's errors on its fields."""

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
        except ServiceFormError as exc:
            request._service_form_errors = exc.errors  # type: ignore[attr-defined]
            return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> type:
        form = super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]
        errors = getattr(request, "_service_form_errors", None)
        return _with_service_errors(form, errors) if errors else form

    @staticmethod
    def actor(request: HttpRequest) -> Actor:
        return Actor.from_request(request)

    @staticmethod
    def call_service(function: Callable[..., Any], *args: Any, prefix: str = "", **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except SERVICE_ERRORS as exc:
            errors = service_errors(exc)
            if prefix:
                errors = {NON_FIELD_ERRORS: [f"{prefix}: {error_text(exc)}"]}
            raise ServiceFormError(errors) from exc


def form_values(form: Any, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The cleaned values of the form's model fields (many-to-many left to save_m2m)."""
    model_fields = {f.name for f in form._meta.model._meta.concrete_fields}
    wanted = set(names) if names is not None else None
    return {
        name: value for name, value in form.cleaned_data.items()
        if name in model_fields and (wanted is None or name in wanted)
    }


def changed_values(form: Any) -> dict[str, Any]:
    return form_values(form, form.changed_data)


def adopt(saved: models.Model, obj: models.Model) -> None:
    """Make the admin's form instance the row the service saved (the admin logs and redirects with it)."""
    for field in obj._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


def run_for_each(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Iterable[Any],
                 operation: Callable[[Any], Any], *, done: str) -> int:
    """Apply `operation` to each object in its own transaction; each refusal becomes an error message
    naming its object, and one success message counts the rest. Returns the number done."""
    count = 0
    for obj in queryset:
        try:
            with transaction.atomic():
                operation(obj)
        except SERVICE_ERRORS as exc:
            modeladmin.message_user(request, f"{obj}: {error_text(exc)}", messages.ERROR)
        else:
            count += 1
    if count:
        noun = modeladmin.opts.verbose_name if count == 1 else modeladmin.opts.verbose_name_plural
        modeladmin.message_user(request, f"{done} {count} {noun}.", messages.SUCCESS)
    return count


def action_with_form(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any, *, form_class: type,
                     title: str, submit_label: str, apply: Callable[[dict[str, Any]], Any],
                     form_kwargs: dict[str, Any] | None = None) -> HttpResponse | None:
    """An action that needs parameters: the first post shows a form, the second ("apply") runs `apply`
    with the form's cleaned data. Returns None when done (the admin goes back to the changelist)."""
    form_kwargs = {"prefix": "params", **(form_kwargs or {})}
    if "apply" in request.POST:
        form = form_class(request.POST, **form_kwargs)
        if form.is_valid():
            apply(form.cleaned_data)
            return None
    else:
        form = form_class(**form_kwargs)
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "submit_label": submit_label,
        "form": form,
        "objects": list(queryset),
        "opts": modeladmin.opts,
        "action_name": request.POST.get("action", ""),
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media + form.media,
    }
    return TemplateResponse(request, "admin/accrual/action_form.html", context)


class HistoryAdmin(ServiceAdminMixin, SimpleHistoryAdmin):
    """History is read only: reverting to an old version would bypass the services' rules."""

    def revert_disabled(self, request: HttpRequest, obj: Any = None) -> bool:
        return True

    def history_form_view(self, request: HttpRequest, object_id: str, version_id: str,
                          extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "POST":
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)


class ServiceAdmin(ServiceAdminMixin, admin.ModelAdmin):
    pass


class CsvImportAdminMixin(ImportMixin):
    """CSV import with a dry-run preview: every problem listed with its line and column, nothing written
    until the whole file is clean, and the confirmed import all-or-nothing."""

    import_template_name = "admin/accrual/import.html"
    import_formats = [AccrualCSV]
    import_resource_classes: list[type] = []
    import_error_display = ("message",)

    def get_import_formats(self) -> list[type]:
        return list(self.import_formats)

    def get_import_resource_classes(self, request: HttpRequest) -> list[type]:
        return list(self.import_resource_classes)

    def get_import_data_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = super().get_import_data_kwargs(**kwargs)
        kwargs.pop("request", None)
        kwargs["rollback_on_validation_errors"] = True
        kwargs["use_transactions"] = True
        return kwargs

    def add_data_read_fail_error_to_form(self, form: Any, e: Exception) -> None:
        if isinstance(e, ImportFileError):
            for problem in e.problems:
                form.add_error("import_file", str(problem))
        else:
            super().add_data_read_fail_error_to_form(form, e)

    def import_action(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        response = super().import_action(request, **kwargs)
        if isinstance(response, TemplateResponse) and response.context_data:
            result = response.context_data.get("result")
            if result is not None:
                response.context_data["import_problems"] = import_problems(result)
        return response

    def process_result(self, result: Any, request: HttpRequest) -> HttpResponse:
        problems = import_problems(result)
        if problems:
            # The data changed between the preview and the confirmation; nothing was imported.
            self.message_user(request, "Nothing was imported: the file no longer imports cleanly.", messages.ERROR)
            for problem in problems[:50]:
                self.message_user(request, str(problem), messages.ERROR)
            return redirect(f"admin:{self.opts.app_label}_{self.opts.model_name}_import")
        return super().process_result(result, request)


IMPORT_EXPORT_LIST_TEMPLATE = "admin/import_export/change_list_import_export.html"  # both buttons


class CsvExportAdminMixin(ExportMixin):
    export_formats = [base_formats.CSV]
    export_resource_classes: list[type] = []

    def get_export_formats(self) -> list[type]:
        return list(self.export_formats)

    def get_export_resource_classes(self, request: HttpRequest) -> list[type]:
        return list(self.export_resource_classes)


# --- Billing entities -------------------------------------------------------------------------------------


@admin.register(BillingEntity)
class BillingEntityAdmin(HistoryAdmin):
    list_display = ("code", "name", "legal_name", "country", "default_currency", "timezone", "invoice_prefix",
                    "credit_note_prefix", "default_payment_terms_days", "is_active")
    list_filter = ("is_active", "default_currency", "country")
    search_fields = ("code", "name", "legal_name", "tax_id")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("code", "name", "legal_name", "country", "tax_id", "email", "is_active")}),
        ("Invoicing", {"fields": ("default_currency", "timezone", "invoice_prefix", "credit_note_prefix",
                                  "default_payment_terms_days")}),
        ("Address", {"fields": ("address_line1", "address_line2", "city", "state", "postal_code")}),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: BillingEntity | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "code") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # invoices and customers hang off an entity; deactivate it instead

    def save_model(self, request: HttpRequest, obj: BillingEntity, form: Any, change: bool) -> None:
        if change:
            saved = self.call_service(update_billing_entity, BillingEntity.objects.get(pk=obj.pk),
                                      actor=self.actor(request), **changed_values(form))
        else:
            saved = self.call_service(create_billing_entity, actor=self.actor(request), **form_values(form))
        adopt(saved, obj)


# --- Customers --------------------------------------------------------------------------------------------


class ContactInline(admin.TabularInline):
    model = Contact
    extra = 0
    fields = ("name", "email", "phone", "role", "receives_invoices")


@admin.register(Customer)
class CustomerAdmin(CsvImportAdminMixin, CsvExportAdminMixin, HistoryAdmin):
    list_display = ("external_id", "name", "billing_entity", "country", "currency", "parent", "status",
                    "tax_exempt", "created_at")
    list_display_links = ("external_id", "name")
    list_filter = ("status", "billing_entity", "currency", "kind", "tax_exempt", "invoice_to_parent", "country")
    list_select_related = ("billing_entity", "parent")
    search_fields = ("external_id", "name", "legal_name", "tax_id", "contacts__email")
    date_hierarchy = "created_at"
    autocomplete_fields = ("billing_entity", "parent")
    readonly_fields = ("status", "created_at", "updated_at")
    inlines = (ContactInline,)
    actions = ("archive_customers",)
    import_resource_classes = [CustomerImportResource]
    export_resource_classes = [CustomerExportResource]
    import_export_change_list_template = IMPORT_EXPORT_LIST_TEMPLATE
    fieldsets = (
        (None, {"fields": ("external_id", "name", "legal_name", "kind", "status", "billing_entity")}),
        ("Hierarchy", {"fields": ("parent", "invoice_to_parent")}),
        ("Billing", {"fields": ("currency", "billing_emails", "payment_terms_days", "timezone")}),
        ("Tax", {"fields": ("country", "tax_id", "tax_exempt", "tax_exemption_reason")}),
        ("Address", {"fields": ("address_line1", "address_line2", "city", "state", "postal_code")}),
        ("Other", {"fields": ("metadata", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Customer | None = None) -> tuple[str, ...]:
        # The external id is the integrations' key: fixed once the customer exists.
        return (*self.readonly_fields, "external_id") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # customers are archived, never deleted

    def has_archive_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customers.archive_customer")

    def save_model(self, request: HttpRequest, obj: Customer, form: Any, change: bool) -> None:
        if change:
            if not form.changed_data:
                return
            saved = self.call_service(update_customer, Customer.objects.get(pk=obj.pk), actor=self.actor(request),
                                      **changed_values(form))
        else:
            saved = self.call_service(create_customer, actor=self.actor(request), **form_values(form))
        adopt(saved, obj)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Contact:
            return super().save_formset(request, form, formset, change)
        contacts = formset.save(commit=False)
        for contact in formset.deleted_objects:
            contact.delete()
        for contact in contacts:
            if contact.pk is None:
                fields = {f: getattr(contact, f) for f in ContactInline.fields}
                self.call_service(add_contact, form.instance, actor=self.actor(request), prefix=f"Contact {contact}",
                                  **fields)
            else:
                contact.save()
        formset.save_m2m()
        return None

    @admin.action(description="Archive selected customers", permissions=["archive"])
    def archive_customers(self, request: HttpRequest, queryset: Any) -> None:
        actor = self.actor(request)
        run_for_each(self, request, queryset, lambda c: archive_customer(c, actor=actor), done="Archived")
