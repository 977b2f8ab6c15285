"""Credit notes: corrections of a finalized invoice, numbered in their billing entity's own series.

A credit note first reduces what its invoice still owes; what exceeds that (the invoice was paid) is
refunded, credited to the customer's balance, or offset against another open invoice, as the note says.
Taxes are given back in proportion to the amounts credited (DESIGN: credit note).
"""

from decimal import Decimal

from django.db import models
from django.db.models import F, Q
from djmoney.models.fields import CurrencyField

from billing.common import TimestampedModel
from contracts.models import Product
from customers.models import BillingEntity, Customer

from .invoices import MONEY, QUANTITY, SUM_TOLERANCE, ZERO, Invoice, InvoiceLine, TaxRate


class CreditNote(TimestampedModel):
    class Reason(models.TextChoices):
        BILLING_ERROR = "billing_error", "Billing error"
        DUPLICATE = "duplicate", "Duplicate charge"
        ORDER_CHANGE = "order_change", "Order change"
        PRODUCT_UNSATISFACTORY = "product_unsatisfactory", "Product unsatisfactory"
        SERVICE_OUTAGE = "service_outage", "Service outage (SLA credit)"
        GOODWILL = "goodwill", "Goodwill"
        FRAUDULENT = "fraudulent", "Fraudulent"
        OTHER = "other", "Other"

    class Settlement(models.TextChoices):
        REFUND = "refund", "Refund the customer"
        CREDIT_BALANCE = "credit_balance", "Credit the customer's balance"
        OFFSET = "offset", "Offset against another open invoice"

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="credit_notes")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_notes")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    currency = CurrencyField(max_length=3)
    number = models.CharField(max_length=40)
    sequence_number = models.PositiveBigIntegerField()
    issue_date = models.DateField()
    issued_at = models.DateTimeField()
    reason = models.CharField(max_length=24, choices=Reason.choices)
    memo = models.TextField(blank=True)
    subtotal = models.DecimalField(**MONEY, help_text="Credited before tax.")
    tax_total = models.DecimalField(**MONEY, default=ZERO)
    total = models.DecimalField(**MONEY)
    tax_breakdown = models.JSONField(default=list, blank=True)
    settlement = models.CharField(
        max_length=14, choices=Settlement.choices, help_text="What happens to the part the invoice no longer owed."
    )
    applied_to_invoice = models.DecimalField(**MONEY, default=ZERO, help_text="Reduced the invoice's amount due.")
    refunded_amount = models.DecimalField(**MONEY, default=ZERO)
    credited_to_balance = models.DecimalField(**MONEY, default=ZERO)
    offset_amount = models.DecimalField(**MONEY, default=ZERO)
    offset_invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="offsetting_credit_notes"
    )
    seller = models.JSONField(default=dict, blank=True)
    buyer = models.JSONField(default=dict, blank=True)
    pdf = models.FileField(upload_to="credit_notes/%Y/%m/", null=True, blank=True)
    pdf_sha256 = models.CharField(max_length=64, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        permissions = [("issue_creditnote", "Can issue credit notes")]
        constraints = [
            models.UniqueConstraint(fields=["billing_entity", "number"], name="credit_note_number_unique"),
            models.UniqueConstraint(fields=["billing_entity", "sequence_number"], name="credit_note_sequence_unique"),
            models.CheckConstraint(condition=Q(total__gt=0) & Q(subtotal__gte=0), name="credit_note_positive"),
            models.CheckConstraint(
                condition=Q(total__range=(
                    F("subtotal") + F("tax_total") - SUM_TOLERANCE, F("subtotal") + F("tax_total") + SUM_TOLERANCE
                )),
                name="credit_note_total_adds_up",
            ),
            models.CheckConstraint(
                condition=Q(applied_to_invoice__gte=0, refunded_amount__gte=0, credited_to_balance__gte=0,
                            offset_amount__gte=0)
                & Q(total__range=(
                    F("applied_to_invoice") + F("refunded_amount") + F("credited_to_balance") + F("offset_amount")
                    - SUM_TOLERANCE,
                    F("applied_to_invoice") + F("refunded_amount") + F("credited_to_balance") + F("offset_amount")
                    + SUM_TOLERANCE,
                )),
                name="credit_note_settled_in_full",
            ),
            models.CheckConstraint(
                condition=Q(offset_amount=0) | Q(offset_invoice__isnull=False), name="credit_note_offset_names_invoice"
            ),
        ]

    def __str__(self) -> str:
        return self.number


class CreditNoteLine(models.Model):
    credit_note = models.ForeignKey(CreditNote, on_delete=models.CASCADE, related_name="lines")
    invoice_line = models.ForeignKey(
        InvoiceLine, null=True, blank=True, on_delete=models.PROTECT, related_name="credit_note_lines"
    )
    position = models.PositiveIntegerField(default=0)
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(**QUANTITY, null=True, blank=True)
    amount = models.DecimalField(**MONEY, help_text="Credited before tax (net of the line's discount).")
    tax_rate = models.ForeignKey(TaxRate, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    tax_percent = models.DecimalField(max_digits=9, decimal_places=6, default=Decimal("0"))
    tax_amount = models.DecimalField(**MONEY, default=ZERO)
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["credit_note", "position", "id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="credit_note_line_positive")]

    def __str__(self) -> str:
        return self.description
