"""Admin for saved payment methods (gateway tokens, never card numbers) and the gateway webhook log.

A payment method is saved through the charges service from the add form and read only afterwards; the
"Deactivate" action needs the change permission. Gateway events are what the gateways sent: read only.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from billing.admin_tools import ReadOnlyAdminMixin
from customers.admin import SERVICE_ERRORS, error_text
from invoicing.admin.invoices import ServiceAddAdmin
from invoicing.gateways.base import CARD_NUMBER_MESSAGE, looks_like_card_number
from invoicing.models import GatewayEvent, PaymentMethod
from invoicing.services.charges import deactivate_payment_method, save_payment_method


class PaymentMethodForm(forms.ModelForm):
    """Refuses anything shaped like a card number, and blanks it so the page never shows it back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.card_number_fields: list[str] = []
        if self.is_bound:
            data = self.data.copy()
            for name in self.fields:
                key = self.add_prefix(name)
                if looks_like_card_number(data.get(key) or ""):
                    data[key] = ""
                    self.card_number_fields.append(name)
            self.data = data

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in self.card_number_fields:
            self.add_error(name, CARD_NUMBER_MESSAGE)
        return cleaned


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ServiceAddAdmin):
    form = PaymentMethodForm
    list_display = ("__str__", "customer", "gateway", "brand", "last4", "expiry", "is_default", "is_active",
                    "created_at")
    list_filter = ("gateway", "is_active", "is_default")
    list_select_related = ("customer",)
    search_fields = ("customer__external_id", "customer__name", "gateway_payment_method_id", "gateway_customer_id")
    autocomplete_fields = ("customer",)
    add_fields = ("customer", "gateway", "gateway_customer_id", "gateway_payment_method_id", "brand", "last4",
                  "exp_month", "exp_year", "is_default")
    actions = ("deactivate",)

    @admin.display(description="expires")
    def expiry(self, method: PaymentMethod) -> str:
        if method.exp_month is None or method.exp_year is None:
            return "-"
        return f"{method.exp_month:02d}/{method.exp_year}"

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> type:
        form = super().get_form(request, obj, change, **kwargs)
        if obj is None and "gateway" in form.base_fields:
            form.base_fields["gateway"] = forms.ChoiceField(choices=[("stripe", "Stripe")], initial="stripe")
        return form

    def create(self, request: HttpRequest, data: dict[str, Any]) -> PaymentMethod:
        return save_payment_method(
            data["customer"], gateway=data["gateway"], gateway_customer_id=data["gateway_customer_id"],
            gateway_payment_method_id=data["gateway_payment_method_id"], brand=data.get("brand") or "",
            last4=data.get("last4") or "", exp_month=data.get("exp_month"), exp_year=data.get("exp_year"),
            make_default=bool(data.get("is_default")), actor=self.actor(request), now=timezone.now(),
        )

    @admin.action(description="Deactivate selected payment methods (no longer charged)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor, now = self.actor(request), timezone.now()
        for method in queryset.select_related("customer"):
            try:
                deactivate_payment_method(method, actor=actor, now=now)
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"{method}: {error_text(exc)}", messages.ERROR)
            else:
                self.message_user(request, f"{method} of {method.customer} deactivated.", messages.SUCCESS)


@admin.register(GatewayEvent)
class GatewayEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("event_id", "gateway", "event_type", "occurred_at", "received_at", "processed_at", "outcome")
    list_filter = ("gateway", "event_type")
    search_fields = ("event_id", "event_type", "outcome")
    date_hierarchy = "received_at"
    fields = ("gateway", "event_id", "event_type", "occurred_at", "received_at", "processed_at", "outcome",
              "payload")
    readonly_fields = fields
