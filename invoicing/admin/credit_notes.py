"""Credit notes in the admin: read only once issued (list, detail with lines and settlement, PDF), and the
"Issue a credit note" page of an invoice (per line, by amount or in full; reason, settlement, offset invoice),
open to users with `invoicing.issue_creditnote` (finance admins). The page calls the service; a refusal is
shown on the field it names and nothing is written."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from billing.actors import Actor
from billing.admin_tools import ReadOnlyAdminMixin
from billing.errors import BillingError
from invoicing.credit_note_pdf import credit_note_pdf_name, render_credit_note_pdf, settlement_sentences
from invoicing.models import Allocation, CreditNote, CreditNoteLine, Invoice, Refund
from invoicing.pdf import format_money, format_period
from invoicing.services.credit_notes import (
    CREDITABLE_STATUSES,
    OPEN_STATUSES,
    Creditable,
    CreditLineRequest,
    credit_in_full,
    creditable,
    issue_credit_note,
    remaining_creditable,
)

MODES = [
    ("lines", "Per line: the amounts or quantities entered below"),
    ("amount", "An amount before tax, spread over the lines in proportion"),
    ("full", "Everything left to credit on the invoice"),
]


class CreditNoteLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CreditNoteLine
    extra = 0
    fields = ("position", "description", "period", "quantity", "amount", "tax_percent", "tax_amount", "invoice_line")
    readonly_fields = fields
    can_delete = False

    @admin.display(description="period")
    def period(self, line: CreditNoteLine) -> str:
        return format_period(line.period_start, line.period_end) if line.period_start else "-"


class CreditNoteAllocationInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Allocation
    fk_name = "credit_note"
    extra = 0
    fields = ("created_at", "invoice", "amount", "note")
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "applied to invoices"


class CreditNoteRefundInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Refund
    fk_name = "credit_note"
    extra = 0
    fields = ("refunded_on", "amount", "status", "gateway", "payment", "reason")
    readonly_fields = fields
    can_delete = False


class IssueCreditNoteForm(forms.Form):
    mode = forms.ChoiceField(choices=MODES, initial="lines", widget=forms.RadioSelect, label="Credit")
    amount = forms.DecimalField(required=False, max_digits=20, decimal_places=4,
                                help_text="Before tax, in the invoice's currency (with 'An amount').")
    reason = forms.ChoiceField(choices=CreditNote.Reason.choices)
    settlement = forms.ChoiceField(
        choices=CreditNote.Settlement.choices, initial=CreditNote.Settlement.CREDIT_BALANCE,
        help_text="For the part the invoice no longer owes (it was paid); what it still owes is reduced first.",
    )
    offset_invoice = forms.ModelChoiceField(queryset=Invoice.objects.none(), required=False,
                                            help_text="With 'Offset': an open invoice of the same customer.")
    memo = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                           help_text="Printed on the credit note.")
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, state: Creditable, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        invoice = state.invoice
        self.fields["offset_invoice"].queryset = (
            Invoice.objects.filter(customer_id=invoice.customer_id, currency=invoice.currency,
                                   status__in=OPEN_STATUSES, amount_due__gt=0)
            .exclude(pk=invoice.pk).order_by("due_date", "pk")
        )
        self.line_rows: list[dict[str, Any]] = []
        for entry in state.lines.values():
            if entry.net <= 0:
                continue
            amount_name, quantity_name = f"line_{entry.line.pk}_amount", f"line_{entry.line.pk}_quantity"
            self.fields[amount_name] = forms.DecimalField(required=False, max_digits=20, decimal_places=4,
                                                          label=f"{entry.line.description}: amount")
            self.fields[quantity_name] = forms.DecimalField(required=False, max_digits=38, decimal_places=12,
                                                            label=f"{entry.line.description}: quantity")
            self.line_rows.append({"entry": entry, "amount_name": amount_name, "quantity_name": quantity_name})

    def bound_rows(self, currency: str) -> list[dict[str, Any]]:
        rows = []
        for row in self.line_rows:
            entry = row["entry"]
            rows.append({
                **row, "amount": self[row["amount_name"]], "quantity": self[row["quantity_name"]],
                "period": format_period(entry.line.period_start, entry.line.period_end) if entry.line.period_start
                else "",
                "net": format_money(entry.net, currency, with_code=False),
                "credited": format_money(entry.credited, currency, with_code=False),
                "creditable": format_money(entry.creditable, currency, with_code=False),
            })
        return rows

    def requests(self) -> list[tuple[CreditLineRequest, str, str]]:
        """The lines given, each with its two form fields (to show a refusal where it belongs)."""
        chosen = []
        for row in self.line_rows:
            amount = self.cleaned_data.get(row["amount_name"])
            quantity = self.cleaned_data.get(row["quantity_name"])
            if amount is not None or quantity is not None:
                chosen.append((CreditLineRequest(row["entry"].line.pk, amount=amount, quantity=quantity),
                               row["amount_name"], row["quantity_name"]))
        return chosen

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        mode = data.get("mode")
        if mode == "amount" and data.get("amount") is None:
            self.add_error("amount", "Enter the amount to credit.")
        if mode == "lines" and not self.errors and not self.requests():
            raise forms.ValidationError("Enter an amount or a quantity for at least one line.")
        return data


@admin.register(CreditNote)
class CreditNoteAdmin(admin.ModelAdmin):
    list_display = ("number", "customer", "invoice", "issue_date", "reason", "settlement", "total", "currency")
    list_filter = ("reason", "settlement", "billing_entity", "issue_date")
    list_select_related = ("customer", "invoice")
    search_fields = ("number", "invoice__number", "customer__external_id", "customer__name")
    date_hierarchy = "issue_date"
    inlines = (CreditNoteLineInline, CreditNoteAllocationInline, CreditNoteRefundInline)
    change_form_template = "admin/invoicing/creditnote/change_form.html"
    fieldsets = (
        (None, {"fields": ("number", "billing_entity", "customer", "invoice", "currency", "issue_date", "issued_at",
                           "reason", "memo")}),
        ("Amounts", {"fields": ("subtotal", "tax_total", "total", "tax_breakdown")}),
        ("Settlement", {"fields": ("settlement", "settled", "applied_to_invoice", "refunded_amount",
                                   "credited_to_balance", "offset_amount", "offset_invoice")}),
        ("Parties", {"fields": ("seller", "buyer"), "classes": ("collapse",)}),
        ("Record", {"fields": ("pdf", "pdf_sha256", "idempotency_key", "created_by", "created_at"),
                    "classes": ("collapse",)}),
    )

    @admin.display(description="how it was settled")
    def settled(self, note: CreditNote) -> str:
        return " ".join(settlement_sentences(note))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f for _, options in self.fieldsets for f in options["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued from an invoice's page ("Issue a credit note")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an issued note is immutable

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_issue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("invoicing.issue_creditnote")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:note_id>/pdf/", view(self.pdf_view), name="invoicing_creditnote_pdf"),
            path("issue/<int:invoice_id>/", view(self.issue_view), name="invoicing_creditnote_issue"),
            *super().get_urls(),
        ]

    def pdf_view(self, request: HttpRequest, note_id: int) -> HttpResponse:
        """The stored PDF, or one rendered now when the task has not stored it yet."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        note = get_object_or_404(CreditNote.objects.select_related("billing_entity", "invoice", "offset_invoice"),
                                 pk=note_id)
        filename = credit_note_pdf_name(note).rsplit("/", 1)[-1]
        if note.pdf and default_storage.exists(note.pdf.name):
            return FileResponse(default_storage.open(note.pdf.name, "rb"), content_type="application/pdf",
                                filename=filename)
        response = HttpResponse(render_credit_note_pdf(note), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{filename}"'
        return response

    def issue_view(self, request: HttpRequest, invoice_id: int) -> HttpResponse:
        if not self.has_issue_permission(request):
            raise PermissionDenied
        invoice = get_object_or_404(Invoice.objects.select_related("customer", "billing_entity"), pk=invoice_id)
        invoice_url = reverse("admin:invoicing_invoice_change", args=[invoice.pk])
        if invoice.status not in CREDITABLE_STATUSES:
            self.message_user(request, f"Invoice {invoice} is {invoice.get_status_display().lower()}: only a "
                                       "finalized, paid or uncollectible invoice is credited.", messages.ERROR)
            return HttpResponseRedirect(invoice_url)
        state = creditable(invoice)
        currency = str(invoice.currency)
        form = IssueCreditNoteForm(request.POST or None, state=state,
                                   initial={"idempotency_key": uuid.uuid4()})
        if request.method == "POST" and form.is_valid():
            note = self._issue(request, invoice, form)
            if note is not None:
                total = format_money(note.total, str(note.currency))
                self.message_user(request, f"Credit note {note.number} issued: {total} "
                                           f"({' '.join(settlement_sentences(note))})", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:invoicing_creditnote_change", args=[note.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Issue a credit note for invoice {invoice}",
            "invoice": invoice,
            "invoice_url": invoice_url,
            "form": form,
            "rows": form.bound_rows(currency),
            "total": format_money(invoice.total, currency),
            "credited": format_money(invoice.credit_notes_total, currency),
            "due": format_money(invoice.amount_due, currency),
            "remaining": format_money(remaining_creditable(invoice), currency),
            "remaining_net": format_money(state.net, currency),
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/invoicing/creditnote/issue.html", context)

    def _issue(self, request: HttpRequest, invoice: Invoice, form: IssueCreditNoteForm) -> CreditNote | None:
        data = form.cleaned_data
        common = {
            "reason": data["reason"], "memo": data.get("memo") or "", "settlement": data["settlement"],
            "offset_invoice": data.get("offset_invoice"), "actor": Actor.for_user(request.user),
            "now": timezone.now(), "idempotency_key": f"admin:{data['idempotency_key']}",
        }
        requests = form.requests()
        try:
            if data["mode"] == "full":
                return credit_in_full(invoice.pk, **common)
            if data["mode"] == "amount":
                return issue_credit_note(invoice.pk, amount=data["amount"], **common)
            return issue_credit_note(invoice.pk, lines=[r for r, _, _ in requests], **common)
        except BillingError as exc:
            form.add_error(_form_field(exc.field, requests, form), exc.message)
            return None


def _form_field(field: str | None, requests: list[tuple[CreditLineRequest, str, str]],
                form: IssueCreditNoteForm) -> str | None:
    """The form field a service refusal names ("lines[1].amount" is the second line given)."""
    if field and field.startswith("lines[") and "]" in field:
        index_text, _, rest = field[len("lines["):].partition("]")
        if index_text.isdigit() and int(index_text) < len(requests):
            _, amount_name, quantity_name = requests[int(index_text)]
            return quantity_name if rest == ".quantity" else amount_name
        return None
    return field if field in form.fields and field != "idempotency_key" else None
