"""Admin for payments, refunds, the customer credit balance, allocations and the payment audit trail.

Every record here is written by invoicing.services.payments only: the pages below are forms that call a service
with the user as actor, checked by role (record: add_payment; allocate and apply credit: allocate_payment;
reverse: reverse_payment; refunds: refund_payment). Amounts are checked with `money_amount` and every refusal is
shown on the field it concerns, with nothing written.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminDateWidget, AutocompleteSelect
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from moneyed import CurrencyDoesNotExist, get_currency
from simple_history.admin import SimpleHistoryAdmin

from billing.actors import Actor
from billing.admin_tools import NoRevertHistoryMixin, ReadOnlyAdminMixin
from billing.api.fields import format_amount
from billing.errors import BillingError
from contracts.selectors import customer_today
from customers.admin import SERVICE_ERRORS, error_text
from customers.models import Customer
from invoicing.admin.invoices import InvoiceAdmin
from invoicing.models import (
    ZERO,
    Allocation,
    CustomerBalance,
    CustomerBalanceTransaction,
    Invoice,
    Payment,
    PaymentEvent,
    Refund,
)
from invoicing.services import payments as svc

TEMPLATES = "admin/invoicing/payment"


def _perm(request: HttpRequest, codename: str) -> bool:
    return request.user.has_perm(f"invoicing.{codename}")


def _money(amount: Decimal, currency: Any) -> str:
    return f"{format_amount(amount, str(currency))} {currency}"


def _open_invoices(customer: Customer | int, currency: str | None = None) -> QuerySet[Invoice]:
    """The customer's invoices still owing, in the order automatic allocation pays them (read only, unlocked)."""
    invoices = Invoice.objects.filter(customer=customer, status__in=svc.OPEN_STATUSES, amount_due__gt=0)
    if currency:
        invoices = invoices.filter(currency=currency)
    return invoices.order_by("marked_uncollectible_at", "due_date", "sequence_number", "pk")


def _posted(request: HttpRequest) -> Any:
    # An empty POST is still a submission: its form must be bound, so that it shows what is missing.
    return request.POST if request.method == "POST" else None


def _label(payment: Payment) -> str:
    """"Payment #12 (100.00 USD, Bank transfer)": the model's str shows the column's four decimals."""
    return f"Payment #{payment.pk} ({_money(payment.amount, payment.currency)}, {payment.get_method_display()})"


def _amount_column(currency_path: str, field: str = "amount", description: str = "amount") -> Any:
    """A column showing a decimal column in its currency's minor unit ("100.00 USD"; the column keeps four)."""

    @admin.display(description=description, ordering=field)
    def column(self: Any, obj: Any) -> str:
        currency = obj
        for part in currency_path.split("."):
            currency = getattr(currency, part)
        return _money(getattr(obj, field), currency)

    return column


def _link(obj: Any, label: str | None = None) -> str:
    if obj is None:
        return "-"
    url = reverse(f"admin:invoicing_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def _add_service_error(form: forms.Form, exc: Exception, fields: dict[str, str] | None = None) -> None:
    """A service's refusal on the form field it names (`fields` maps service field paths to form fields)."""
    fields = fields or {}
    field = exc.field if isinstance(exc, BillingError) else None
    target = fields.get(field or "", field)
    message = exc.message if isinstance(exc, BillingError) else error_text(exc)
    form.add_error(target if target in form.fields else None, message)


def _allocation_fields(form: _InvoiceAmountsMixin, rows: list[tuple[Invoice, Decimal]]) -> dict[str, str]:
    """Service paths ("allocations[1].amount") -> the table's input for that invoice."""
    mapping = {}
    for index, (invoice, _amount) in enumerate(rows):
        for part in ("amount", "invoice"):
            mapping[f"allocations[{index}].{part}"] = form.invoice_field(invoice)
    return mapping


class _InvoiceAmountsMixin:
    """One optional amount input per open invoice (the allocation table)."""

    invoices: list[Invoice]

    def add_invoice_fields(self, invoices: list[Invoice]) -> None:
        self.invoices = invoices
        for invoice in invoices:
            invoice.total_text = _money(invoice.total, invoice.currency)  # type: ignore[attr-defined]
            invoice.due_text = _money(invoice.amount_due, invoice.currency)  # type: ignore[attr-defined]
            self.fields[self.invoice_field(invoice)] = forms.CharField(  # type: ignore[attr-defined]
                required=False, max_length=40, label=f"Amount for {invoice}",
                widget=forms.TextInput(attrs={"size": 12, "inputmode": "decimal", "class": "allocation-amount"}),
            )

    @staticmethod
    def invoice_field(invoice: Invoice) -> str:
        return f"invoice_{invoice.pk}"

    def invoice_rows(self) -> list[tuple[Invoice, Any]]:
        return [(invoice, self[self.invoice_field(invoice)]) for invoice in self.invoices]  # type: ignore[index]

    def clean_invoice_amounts(self, currency: str | None) -> list[tuple[Invoice, Decimal]]:
        rows = []
        for invoice in self.invoices:
            name = self.invoice_field(invoice)
            raw = (self.cleaned_data.get(name) or "").strip()  # type: ignore[attr-defined]
            if not raw:
                continue
            try:
                amount = svc.money_amount(raw, currency or str(invoice.currency), field=name)
            except BillingError as exc:
                self.add_error(name, exc.message)  # type: ignore[attr-defined]
                continue
            rows.append((invoice, amount))
        return rows


def _clean_currency(value: str) -> str:
    code = (value or "").strip().upper()
    try:
        get_currency(code)
    except CurrencyDoesNotExist:
        raise forms.ValidationError(f"Unknown currency {code[:10]!r}: use an ISO 4217 code such as USD.") from None
    return code


# --- forms --------------------------------------------------------------------------------------------------


class RecordPaymentForm(_InvoiceAmountsMixin, forms.Form):
    customer = forms.ModelChoiceField(
        Customer.objects.all(), widget=AutocompleteSelect(Payment._meta.get_field("customer"), admin.site),
        help_text="Choose the customer to see its open invoices.",
    )
    amount = forms.CharField(max_length=40, help_text="The amount received, e.g. 1250.00.",
                             widget=forms.TextInput(attrs={"inputmode": "decimal"}))
    currency = forms.CharField(max_length=3, help_text="ISO 4217 code; the customer's currency by default.",
                               widget=forms.TextInput(attrs={"size": 4}))
    method = forms.ChoiceField(choices=Payment.Method.choices, initial=Payment.Method.BANK_TRANSFER)
    received_on = forms.DateField(widget=AdminDateWidget, help_text="Value date: the day the money arrived.")
    reference = forms.CharField(max_length=200, required=False, help_text="Bank reference, check number, ...")
    memo = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))
    # The customer whose invoices the table shows, and a key that makes a double submission record one payment.
    loaded_for = forms.CharField(required=False, widget=forms.HiddenInput)
    token = forms.RegexField(regex=r"^[0-9a-f]{32}$", widget=forms.HiddenInput)

    def __init__(self, *args: Any, invoices: list[Invoice] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_invoice_fields(invoices or [])
        self.allocations: list[tuple[Invoice, Decimal]] = []

    def main_fields(self) -> list[Any]:
        return [self[name] for name in ("customer", "amount", "currency", "method", "received_on", "reference",
                                        "memo")]

    def clean_currency(self) -> str:
        return _clean_currency(self.cleaned_data["currency"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        currency = cleaned.get("currency")
        if currency and cleaned.get("amount") is not None:
            try:
                cleaned["amount"] = svc.money_amount(cleaned["amount"], currency)
            except BillingError as exc:
                self.add_error("amount", exc.message)
        if currency:
            self.allocations = self.clean_invoice_amounts(currency)
        return cleaned


class AllocateForm(_InvoiceAmountsMixin, forms.Form):
    def __init__(self, *args: Any, invoices: list[Invoice], currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.add_invoice_fields(invoices)
        self.allocations: list[tuple[Invoice, Decimal]] = []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.allocations = self.clean_invoice_amounts(self.currency)
        if not self.allocations and not self.errors:
            raise forms.ValidationError("Enter an amount for at least one invoice.")
        return cleaned


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                             help_text="Kept on the record and in the audit trail.")


class RefundForm(ReasonForm):
    amount = forms.CharField(max_length=40, widget=forms.TextInput(attrs={"inputmode": "decimal"}))
    # The page's one-time key: a double submission of the rendered form pays back once.
    token = forms.RegexField(regex=r"^[0-9a-f]{32}$", widget=forms.HiddenInput, required=False)
    field_order = ("amount", "reason")

    def idempotency_key(self) -> str | None:
        token = self.cleaned_data.get("token")
        return f"admin:{token}" if token else None

    def __init__(self, *args: Any, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["amount"].help_text = f"In {currency}."

    def clean_amount(self) -> Decimal:
        try:
            return svc.money_amount(self.cleaned_data["amount"], self.currency)
        except BillingError as exc:
            raise forms.ValidationError(exc.message) from None


def _invoice_choice(invoice: Invoice) -> str:
    return f"{invoice} — due {invoice.due_date}, owes {_money(invoice.amount_due, invoice.currency)}"


class ApplyCreditForm(forms.Form):
    invoice = forms.ModelChoiceField(Invoice.objects.none(), empty_label=None)
    amount = forms.CharField(max_length=40, required=False,
                             help_text="Leave empty to apply as much as the balance and the invoice allow.")

    def __init__(self, *args: Any, customer: Customer, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        field = self.fields["invoice"]
        field.queryset = _open_invoices(customer, currency)  # type: ignore[attr-defined]
        field.label_from_instance = _invoice_choice  # type: ignore[attr-defined]

    def clean_amount(self) -> Decimal | None:
        raw = (self.cleaned_data.get("amount") or "").strip()
        if not raw:
            return None
        try:
            return svc.money_amount(raw, self.currency)
        except BillingError as exc:
            raise forms.ValidationError(exc.message) from None


# --- inlines ------------------------------------------------------------------------------------------------


class _AllocationInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Allocation
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("created_at", "id")
    amount_text = _amount_column("invoice.currency")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("invoice", "payment", "credit_note", "refund")

    @admin.display(description="invoice")
    def invoice_link(self, allocation: Allocation) -> str:
        return _link(allocation.invoice)

    @admin.display(description="from")
    def source(self, allocation: Allocation) -> str:
        if allocation.refund_id:
            return _link(allocation.refund)
        if allocation.payment_id:
            return _link(allocation.payment)
        if allocation.credit_note_id:
            return _link(allocation.credit_note)
        return "Credit balance"


class PaymentAllocationInline(_AllocationInline):
    fk_name = "payment"
    fields = ("created_at", "kind", "invoice_link", "amount_text", "note", "created_by")
    readonly_fields = fields
    verbose_name_plural = "allocations to invoices"


class RefundAllocationInline(_AllocationInline):
    fk_name = "refund"
    fields = ("created_at", "kind", "invoice_link", "amount_text", "note")
    readonly_fields = fields
    verbose_name_plural = "taken back off invoices"


class InvoiceAllocationInline(_AllocationInline):
    """On the invoice page: the allocations behind its amount paid and amount credited."""

    fk_name = "invoice"
    fields = ("created_at", "kind", "source", "amount_text", "note", "created_by")
    readonly_fields = fields
    verbose_name = "allocation"
    verbose_name_plural = "payments and credits (allocations)"


class PaymentRefundInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Refund
    fk_name = "payment"
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("refund_link", "refunded_on", "amount_text", "status", "reason", "created_by")
    readonly_fields = fields
    amount_text = _amount_column("currency")

    @admin.display(description="refund")
    def refund_link(self, refund: Refund) -> str:
        return _link(refund)


class PaymentEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PaymentEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("created_at", "action", "actor_label", "details")
    readonly_fields = fields
    verbose_name = "event"
    verbose_name_plural = "audit trail"


class BalanceTransactionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CustomerBalanceTransaction
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("created_at", "kind", "amount_text", "payment", "invoice", "credit_note", "refund", "note",
              "created_by")
    readonly_fields = fields
    ordering = ("created_at", "id")
    amount_text = _amount_column("balance.currency")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("balance", "payment", "invoice", "credit_note", "refund")
    verbose_name_plural = "transactions"


InvoiceAdmin.inlines = (*InvoiceAdmin.inlines, InvoiceAllocationInline)


# --- payments -----------------------------------------------------------------------------------------------


def _single(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, url_name: str,
            what: str) -> HttpResponse | None:
    """An action that opens a page for one row: with several rows selected it says so and does nothing."""
    if queryset.count() != 1:
        modeladmin.message_user(request, f"Select exactly one {modeladmin.opts.verbose_name} to {what}.",
                                messages.WARNING)
        return None
    return HttpResponseRedirect(reverse(f"admin:{url_name}", args=[queryset.get().pk]))


@admin.register(Payment)
class PaymentAdmin(NoRevertHistoryMixin, SimpleHistoryAdmin):
    list_display = ("payment_number", "customer", "received_on", "amount_text", "method", "status", "reference",
                    "created_by")
    list_filter = ("status", "method", "currency", "billing_entity", "received_on")
    list_select_related = ("customer",)
    search_fields = ("reference", "gateway_reference", "customer__external_id", "customer__name")
    date_hierarchy = "received_on"
    inlines = (PaymentAllocationInline, PaymentRefundInline, PaymentEventInline)
    actions = ("allocate_action", "reverse_action", "refund_action")
    change_form_template = f"{TEMPLATES}/change_form.html"
    change_list_template = f"{TEMPLATES}/change_list.html"
    fieldsets = (
        (None, {"fields": ("customer", "billing_entity", "amount_text", "method", "status", "received_on",
                           "reference", "memo")}),
        ("Gateway", {"fields": ("gateway", "gateway_reference", "payment_method", "invoice", "failure_code",
                                "failure_message", "gateway_updated_at"), "classes": ("collapse",)}),
        ("Reversal", {"fields": ("reversed_at", "reversal_reason")}),
        ("Record", {"fields": ("idempotency_key", "created_by", "created_at", "updated_at"),
                    "classes": ("collapse",)}),
    )

    amount_text = _amount_column("currency")

    @admin.display(description="payment", ordering="id")
    def payment_number(self, payment: Payment) -> str:
        return f"#{payment.pk}"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for _, options in self.fieldsets for f in options["fields"]]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a payment changes only through allocate, reverse and refund

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a mistake is reversed, never deleted

    def has_allocate_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "allocate_payment")

    def has_reverse_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "reverse_payment")

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "refund_payment")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:payment_id>/allocate/", view(self.allocate_view), name="invoicing_payment_allocate"),
            path("<int:payment_id>/reverse/", view(self.reverse_view), name="invoicing_payment_reverse"),
            path("<int:payment_id>/refund/", view(self.refund_view), name="invoicing_payment_refund"),
            *super().get_urls(),
        ]

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **extra}

    def _payment(self, request: HttpRequest, payment_id: int, allowed: bool) -> Payment:
        if not allowed:
            raise PermissionDenied
        return get_object_or_404(Payment.objects.select_related("customer"), pk=payment_id)

    def _done(self, request: HttpRequest, payment: Payment, message: str) -> HttpResponseRedirect:
        self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:invoicing_payment_change", args=[payment.pk]))

    # Record a payment: the add page.

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
                 ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        customer = self._chosen_customer(request)
        invoices = list(_open_invoices(customer)) if customer else []
        if request.method == "POST" and "_record" in request.POST:
            data = request.POST.copy()
            loaded = customer is not None and data.get("loaded_for") == str(customer.pk)
            if customer is not None:
                data["loaded_for"] = str(customer.pk)
            form = RecordPaymentForm(data, invoices=invoices)
            if form.is_valid():
                if not loaded:
                    messages.warning(request, "Review the customer's open invoices below, then record the payment.")
                else:
                    response = self._record(request, form)
                    if response is not None:
                        return response
        else:
            # First visit, or "show the open invoices" of the customer chosen: nothing is checked yet.
            initial: dict[str, Any] = {"token": uuid.uuid4().hex, "received_on": timezone.localdate()}
            if request.method == "POST":
                initial.update((name, value) for name, value in request.POST.items()
                               if name in RecordPaymentForm.base_fields and value)
            if customer is not None:
                if request.POST.get("loaded_for") != str(customer.pk):
                    initial["currency"] = str(customer.currency)  # another customer: its currency
                initial.update(customer=customer, loaded_for=str(customer.pk))
                if request.method != "POST":
                    initial["received_on"] = customer_today(customer, timezone.now())
            form = RecordPaymentForm(initial=initial, invoices=invoices)
        context = self._context(request, "Record a payment", form=form, customer=customer,
                                media=self.media + form.media)
        return TemplateResponse(request, f"{TEMPLATES}/record.html", context)

    def _chosen_customer(self, request: HttpRequest) -> Customer | None:
        raw = request.POST.get("customer") if request.method == "POST" else request.GET.get("customer")
        if not raw or not str(raw).isdecimal() or len(str(raw)) > 18:
            return None
        return Customer.objects.select_related("billing_entity").filter(pk=int(raw)).first()

    def _record(self, request: HttpRequest, form: RecordPaymentForm) -> HttpResponse | None:
        data = form.cleaned_data
        key = f"admin:{data['token']}"
        already = Payment.objects.filter(idempotency_key=key).first()
        requests = [svc.AllocationRequest(invoice=invoice, amount=amount) for invoice, amount in form.allocations]
        try:
            payment = already or svc.record_payment(
                customer=data["customer"], amount=data["amount"], currency=data["currency"], method=data["method"],
                received_on=data["received_on"], actor=Actor.for_user(request.user), now=timezone.now(),
                reference=data["reference"], memo=data["memo"], allocations=requests, idempotency_key=key,
            )
        except SERVICE_ERRORS as exc:
            _add_service_error(form, exc, _allocation_fields(form, form.allocations))
            return None
        if (payment.customer_id, payment.amount, str(payment.currency)) != (data["customer"].pk, data["amount"],
                                                                           data["currency"]):
            form.add_error(None, f"This form already recorded {_label(payment)}: open a new form to record "
                                 "another payment.")
            return None
        if already is not None:
            return self._done(request, payment, f"{_label(payment)} was already recorded (the form was sent twice).")
        return self._done(request, payment, f"Recorded {_label(payment)}: {self._where(payment)}")

    @staticmethod
    def _where(payment: Payment) -> str:
        parts = [f"{_money(a.amount, payment.currency)} to {a.invoice}"
                 for a in payment.allocations.select_related("invoice").order_by("id")]
        credit = svc.payment_credit(payment)
        if credit > 0:
            parts.append(f"{_money(credit, payment.currency)} to the customer's credit balance")
        return "; ".join(parts) + "." if parts else "nothing allocated."

    # The payment's page, and the pages of its actions.

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        payment = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if payment is not None:
            allocated = Allocation.objects.filter(payment=payment).aggregate(s=Sum("amount"))["s"] or ZERO
            succeeded = payment.status == Payment.Status.SUCCEEDED
            credit = svc.payment_credit(payment)
            extra.update(
                summary=[("Allocated to invoices", _money(allocated, payment.currency)),
                         ("Left in the credit balance", _money(credit, payment.currency)),
                         ("Can still be refunded", _money(svc.refundable(payment), payment.currency))],
                can_allocate=succeeded and credit > 0 and self.has_allocate_permission(request),
                can_reverse=succeeded and self.has_reverse_permission(request),
                can_refund=succeeded and self.has_refund_permission(request),
            )
        return super().change_view(request, object_id, form_url, extra)

    def allocate_view(self, request: HttpRequest, payment_id: int) -> HttpResponse:
        payment = self._payment(request, payment_id, self.has_allocate_permission(request))
        invoices = list(_open_invoices(payment.customer_id, str(payment.currency)))
        form = AllocateForm(_posted(request), invoices=invoices, currency=str(payment.currency))
        if request.method == "POST" and form.is_valid():
            requests = [svc.AllocationRequest(invoice=inv, amount=amount) for inv, amount in form.allocations]
            try:
                svc.allocate_payment(payment, requests, actor=Actor.for_user(request.user), now=timezone.now())
            except SERVICE_ERRORS as exc:
                _add_service_error(form, exc, _allocation_fields(form, form.allocations))
            else:
                total = sum((amount for _, amount in form.allocations), ZERO)
                return self._done(request, payment,
                                  f"Allocated {_money(total, payment.currency)} of {_label(payment)}.")
        credit = svc.payment_credit(payment)
        context = self._context(
            request, f"Allocate {_label(payment)}", form=form, payment=payment, media=self.media + form.media,
            facts=[("Customer", payment.customer), ("Left in the credit balance", _money(credit, payment.currency))],
            cancel_url=reverse("admin:invoicing_payment_change", args=[payment.pk]),
        )
        return TemplateResponse(request, f"{TEMPLATES}/allocate.html", context)

    def reverse_view(self, request: HttpRequest, payment_id: int) -> HttpResponse:
        payment = self._payment(request, payment_id, self.has_reverse_permission(request))
        form = ReasonForm(_posted(request))
        if request.method == "POST" and form.is_valid():
            try:
                svc.reverse_payment(payment, reason=form.cleaned_data["reason"], actor=Actor.for_user(request.user),
                                    now=timezone.now())
            except SERVICE_ERRORS as exc:
                _add_service_error(form, exc)
            else:
                return self._done(request, payment, f"{_label(payment)} reversed: its invoices are due again.")
        per_invoice = (Allocation.objects.filter(payment=payment).values("invoice__number", "invoice")
                       .annotate(net=Sum("amount")).filter(net__gt=0).order_by("invoice"))
        facts = [(f"Taken back from invoice {row['invoice__number'] or row['invoice']}",
                  _money(row["net"], payment.currency)) for row in per_invoice]
        facts.append(("Taken out of the credit balance", _money(svc.payment_credit(payment), payment.currency)))
        context = self._context(
            request, f"Reverse {_label(payment)}", form=form, submit_label="Reverse the payment", facts=facts,
            intro="A payment recorded by mistake (or bounced) is reversed by reversing entries: its allocations are "
                  "taken back, so its invoices are due again, and its credit leaves the balance. Nothing is deleted.",
            cancel_url=reverse("admin:invoicing_payment_change", args=[payment.pk]), media=self.media + form.media,
        )
        return TemplateResponse(request, f"{TEMPLATES}/form_page.html", context)

    def refund_view(self, request: HttpRequest, payment_id: int) -> HttpResponse:
        payment = self._payment(request, payment_id, self.has_refund_permission(request))
        available = svc.refundable(payment)
        currency = str(payment.currency)
        form = RefundForm(_posted(request), currency=currency,
                          initial={"amount": format_amount(available, currency), "token": uuid.uuid4().hex})
        if request.method == "POST" and form.is_valid():
            try:
                refund = svc.refund_payment(payment, amount=form.cleaned_data["amount"],
                                            reason=form.cleaned_data["reason"], actor=Actor.for_user(request.user),
                                            now=timezone.now(), idempotency_key=form.idempotency_key())
            except SERVICE_ERRORS as exc:
                _add_service_error(form, exc)
            else:
                return self._done(request, payment, f"Refund #{refund.pk} of {_money(refund.amount, currency)} from "
                                                     f"{_label(payment)} created ({refund.get_status_display()}).")
        context = self._context(
            request, f"Refund {_label(payment)}", form=form, submit_label="Refund",
            facts=[("Can still be refunded", _money(available, currency)),
                   ("Left in the credit balance", _money(svc.payment_credit(payment), currency))],
            intro="The refund comes first out of what the payment left in the credit balance, then off the invoices it "
                  "paid, latest first: those invoices are due again. A card payment is refunded through its gateway.",
            cancel_url=reverse("admin:invoicing_payment_change", args=[payment.pk]), media=self.media + form.media,
        )
        return TemplateResponse(request, f"{TEMPLATES}/form_page.html", context)

    @admin.action(description="Allocate the selected payment's credit…", permissions=["allocate"])
    def allocate_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return _single(self, request, queryset, "invoicing_payment_allocate", "allocate")

    @admin.action(description="Reverse the selected payment…", permissions=["reverse"])
    def reverse_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return _single(self, request, queryset, "invoicing_payment_reverse", "reverse")

    @admin.action(description="Refund the selected payment…", permissions=["refund"])
    def refund_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return _single(self, request, queryset, "invoicing_payment_refund", "refund")


# --- the credit balance -------------------------------------------------------------------------------------


@admin.register(CustomerBalance)
class CustomerBalanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("customer", "balance_text", "updated_at")
    list_filter = ("currency",)
    list_select_related = ("customer",)
    search_fields = ("customer__external_id", "customer__name")
    fields = ("customer", "balance_text", "created_at", "updated_at")
    readonly_fields = fields
    balance_text = _amount_column("currency", "balance", "credit balance")
    inlines = (BalanceTransactionInline,)
    actions = ("apply_action", "refund_action")
    change_form_template = f"{TEMPLATES}/balance_change_form.html"

    def has_allocate_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "allocate_payment")

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return _perm(request, "refund_payment")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:balance_id>/apply/", view(self.apply_view), name="invoicing_customerbalance_apply"),
            path("<int:balance_id>/refund/", view(self.refund_view), name="invoicing_customerbalance_refund"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        balance = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if balance is not None:
            extra.update(can_apply=balance.balance > 0 and self.has_allocate_permission(request),
                         can_refund=balance.balance > 0 and self.has_refund_permission(request))
        return super().change_view(request, object_id, form_url, extra)

    def _balance(self, balance_id: int, allowed: bool) -> CustomerBalance:
        if not allowed:
            raise PermissionDenied
        return get_object_or_404(CustomerBalance.objects.select_related("customer"), pk=balance_id)

    def _page(self, request: HttpRequest, balance: CustomerBalance, form: forms.Form, title: str,
              submit_label: str, intro: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": title, "form": form,
            "submit_label": submit_label, "intro": intro, "media": self.media + form.media,
            "facts": [("Customer", balance.customer), ("Credit balance", _money(balance.balance, balance.currency))],
            "cancel_url": reverse("admin:invoicing_customerbalance_change", args=[balance.pk]),
        }
        return TemplateResponse(request, f"{TEMPLATES}/form_page.html", context)

    def _done(self, request: HttpRequest, balance: CustomerBalance, message: str) -> HttpResponseRedirect:
        self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:invoicing_customerbalance_change", args=[balance.pk]))

    def apply_view(self, request: HttpRequest, balance_id: int) -> HttpResponse:
        balance = self._balance(balance_id, self.has_allocate_permission(request))
        currency = str(balance.currency)
        form = ApplyCreditForm(_posted(request), customer=balance.customer, currency=currency)
        if request.method == "POST" and form.is_valid():
            invoice = form.cleaned_data["invoice"]
            try:
                allocation = svc.apply_credit_balance(invoice, amount=form.cleaned_data["amount"],
                                                      actor=Actor.for_user(request.user), now=timezone.now())
            except SERVICE_ERRORS as exc:
                _add_service_error(form, exc)
            else:
                if allocation is None:
                    form.add_error(None, f"Nothing to apply: the customer holds no {currency} credit.")
                else:
                    invoice.refresh_from_db()
                    return self._done(request, balance, f"Applied {_money(allocation.amount, currency)} to {invoice}; "
                                                         f"it owes {_money(invoice.amount_due, currency)}.")
        return self._page(request, balance, form, "Apply the credit balance to an open invoice", "Apply",
                          f"The customer's open invoices in {currency}, oldest first.")

    def refund_view(self, request: HttpRequest, balance_id: int) -> HttpResponse:
        balance = self._balance(balance_id, self.has_refund_permission(request))
        currency = str(balance.currency)
        form = RefundForm(_posted(request), currency=currency,
                          initial={"amount": format_amount(balance.balance, currency), "token": uuid.uuid4().hex})
        if request.method == "POST" and form.is_valid():
            try:
                refund = svc.refund_credit_balance(
                    balance.customer, currency=currency, amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"], actor=Actor.for_user(request.user), now=timezone.now(),
                    idempotency_key=form.idempotency_key(),
                )
            except SERVICE_ERRORS as exc:
                _add_service_error(form, exc)
            else:
                return self._done(request, balance, f"Refund #{refund.pk} of {_money(refund.amount, currency)} created "
                                                     f"({refund.get_status_display()}).")
        return self._page(request, balance, form, "Refund the credit balance", "Refund",
                          "Pays back credit the customer holds (paid by hand: record it once the money left).")

    @admin.action(description="Apply to an open invoice…", permissions=["allocate"])
    def apply_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return _single(self, request, queryset, "invoicing_customerbalance_apply", "apply")

    @admin.action(description="Refund the balance…", permissions=["refund"])
    def refund_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return _single(self, request, queryset, "invoicing_customerbalance_refund", "refund")


# --- read-only records --------------------------------------------------------------------------------------


@admin.register(Refund)
class RefundAdmin(NoRevertHistoryMixin, ReadOnlyAdminMixin, SimpleHistoryAdmin):
    list_display = ("refund_number", "customer", "refunded_on", "amount_text", "source", "status", "payment",
                    "created_by")
    list_filter = ("status", "source", "currency", "refunded_on")
    list_select_related = ("customer", "payment")
    search_fields = ("reason", "gateway_reference", "customer__external_id", "customer__name")
    date_hierarchy = "refunded_on"
    inlines = (RefundAllocationInline,)
    amount_text = _amount_column("currency")

    @admin.display(description="refund", ordering="id")
    def refund_number(self, refund: Refund) -> str:
        return f"#{refund.pk}"
    fields = ("customer", "amount_text", "source", "status", "payment", "credit_note", "refunded_on",
              "reason", "gateway", "gateway_reference", "failure_message", "gateway_updated_at", "idempotency_key",
              "created_by", "created_at", "updated_at")
    readonly_fields = fields


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "invoice", "kind", "amount_text", "payment", "credit_note", "refund", "created_at",
                    "created_by")
    list_filter = ("kind", "created_at")
    list_select_related = ("invoice", "payment", "credit_note", "refund")
    search_fields = ("invoice__number", "invoice__customer__external_id", "note")
    fields = ("invoice", "kind", "amount_text", "payment", "credit_note", "refund", "balance_transaction", "note",
              "created_at", "created_by")
    readonly_fields = fields
    amount_text = _amount_column("invoice.currency")


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "customer", "action", "payment", "refund", "actor_label")
    list_filter = ("action",)
    list_select_related = ("customer", "payment", "refund")
    search_fields = ("customer__external_id", "customer__name", "actor_label")
    date_hierarchy = "created_at"
    fields = ("created_at", "customer", "action", "payment", "refund", "details", "actor_label")
    readonly_fields = fields
