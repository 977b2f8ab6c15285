"""Money in and out of a customer's account: payments, their allocations to invoices, the customer's credit
balance, refunds, saved payment methods (gateway tokens only) and the gateway events received.

An invoice's amount due always follows from its allocations (DESIGN: payment):

    amount_due = total - prepaid credit - sum(allocations)

where an allocation is a payment or credit balance applied (positive), a credit note applied (positive), or
a payment reversal or refund taking money back off the invoice (negative). Nothing is ever deleted: a
mistaken payment is reversed by negative allocations, a refund is its own row.
"""

from decimal import Decimal

from django.db import models
from django.db.models import Q
from djmoney.models.fields import CurrencyField
from simple_history.models import HistoricalRecords

from billing.common import TimestampedModel
from customers.models import BillingEntity, Customer
from invoicing.pricing.rounding import currency_exponent

from .invoices import MONEY, ZERO, Invoice


def _shown(amount: Decimal, currency: str) -> str:
    return f"{amount.quantize(Decimal(1).scaleb(-currency_exponent(str(currency))))} {currency}"


class PaymentMethod(TimestampedModel):
    """A customer's saved way to pay, held by a gateway: Accrual keeps the gateway's tokens, never card data."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="payment_methods")
    gateway = models.CharField(max_length=30)
    gateway_customer_id = models.CharField(max_length=100, help_text="The gateway's customer token (cus_...).")
    gateway_payment_method_id = models.CharField(max_length=100, help_text="The gateway's token (pm_...).")
    brand = models.CharField(max_length=30, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    is_default = models.BooleanField(default=True, help_text="Charged automatically when an invoice is finalized.")
    is_active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["customer", "-is_default", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "gateway_payment_method_id"], name="payment_method_token_unique"
            ),
            models.UniqueConstraint(
                fields=["customer"], condition=Q(is_default=True, is_active=True), name="payment_method_one_default"
            ),
        ]

    def __str__(self) -> str:
        card = f"{self.brand} ···{self.last4}" if self.last4 else self.gateway_payment_method_id
        return f"{self.gateway}: {card}"


class Payment(TimestampedModel):
    class Method(models.TextChoices):
        CARD = "card", "Card (gateway)"
        BANK_TRANSFER = "bank_transfer", "Bank transfer"
        CHECK = "check", "Check"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        REQUIRES_ACTION = "requires_action", "Requires customer action"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REVERSED = "reversed", "Reversed"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="payments")
    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="payments")
    currency = CurrencyField(max_length=3)
    amount = models.DecimalField(**MONEY)
    method = models.CharField(max_length=14, choices=Method.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUCCEEDED, db_index=True)
    received_on = models.DateField(help_text="Value date: the day the money arrived.")
    reference = models.CharField(max_length=200, blank=True, help_text="Bank reference, check number, ...")
    gateway = models.CharField(max_length=30, default="manual")
    gateway_reference = models.CharField(max_length=100, blank=True, help_text="e.g. the PaymentIntent id.")
    payment_method = models.ForeignKey(
        PaymentMethod, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    invoice = models.ForeignKey(
        Invoice,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="gateway_payments",
        help_text="The invoice a gateway charge was made for.",
    )
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    gateway_updated_at = models.DateTimeField(
        null=True, blank=True, help_text="When the gateway produced the last event applied (older ones are ignored)."
    )
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversal_reason = models.CharField(max_length=300, blank=True)
    memo = models.TextField(blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["-received_on", "-id"]
        permissions = [
            ("reverse_payment", "Can reverse payments recorded by mistake"),
            ("refund_payment", "Can refund payments and credit balances"),
            ("allocate_payment", "Can allocate payments and credit balances to invoices"),
        ]
        indexes = [models.Index(fields=["customer", "status"]), models.Index(fields=["received_on"])]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.UniqueConstraint(
                fields=["gateway", "gateway_reference"],
                condition=~Q(gateway_reference=""),
                name="payment_gateway_reference_unique",
            ),
            models.CheckConstraint(
                condition=Q(status="reversed", reversed_at__isnull=False)
                | (~Q(status="reversed") & Q(reversed_at__isnull=True)),
                name="payment_reversed_has_date",
            ),
        ]

    def __str__(self) -> str:
        return f"Payment #{self.pk} {_shown(self.amount, self.currency)} ({self.get_method_display()})"


class CustomerBalance(TimestampedModel):
    """Credit the customer holds with us in one currency: overpayments, credit notes credited to the balance,
    the credit of a negative invoice. Applied to later invoices or refunded; never below zero."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_balances")
    currency = CurrencyField(max_length=3)
    balance = models.DecimalField(**MONEY, default=ZERO)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "currency"], name="customer_balance_one_per_currency"),
            models.CheckConstraint(condition=Q(balance__gte=0), name="customer_balance_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.customer.external_id}: {self.balance} {self.currency}"


class CustomerBalanceTransaction(models.Model):
    """The credit balance's ledger; the balance is the sum of its amounts."""

    class Kind(models.TextChoices):
        OVERPAYMENT = "overpayment", "Overpayment"
        CREDIT_NOTE = "credit_note", "Credit note credited"
        INVOICE_CREDIT = "invoice_credit", "Credit from a negative invoice"
        APPLIED = "applied", "Applied to an invoice"
        REFUND = "refund", "Refunded"
        REFUND_FAILED = "refund_failed", "Refund failed, credit restored"
        PAYMENT_REVERSAL = "payment_reversal", "Payment reversed"

    balance = models.ForeignKey(CustomerBalance, on_delete=models.PROTECT, related_name="transactions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(**MONEY, help_text="Positive: credit to the customer; negative: credit used.")
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    credit_note = models.ForeignKey(
        "invoicing.CreditNote", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    refund = models.ForeignKey("invoicing.Refund", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["balance", "created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["overpayment", "credit_note", "invoice_credit", "refund_failed"]) & Q(amount__gt=0)
                )
                | (Q(kind__in=["applied", "refund", "payment_reversal"]) & Q(amount__lt=0)),
                name="customer_balance_transaction_sign",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount}"


class Refund(TimestampedModel):
    """Money paid back to the customer: through the gateway of the payment refunded, or by hand."""

    class Source(models.TextChoices):
        PAYMENT = "payment", "A payment (its invoices become due again)"
        CREDIT_BALANCE = "credit_balance", "The customer's credit balance"
        CREDIT_NOTE = "credit_note", "A credit note"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="refunds")
    currency = CurrencyField(max_length=3)
    amount = models.DecimalField(**MONEY)
    source = models.CharField(max_length=14, choices=Source.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SUCCEEDED, db_index=True)
    payment = models.ForeignKey(
        Payment,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refunds",
        help_text="The payment whose instrument is paid back (through its gateway).",
    )
    credit_note = models.ForeignKey(
        "invoicing.CreditNote", null=True, blank=True, on_delete=models.PROTECT, related_name="refunds"
    )
    gateway = models.CharField(max_length=30, default="manual")
    gateway_reference = models.CharField(max_length=100, blank=True)
    refunded_on = models.DateField()
    reason = models.CharField(max_length=300)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    failure_message = models.CharField(max_length=500, blank=True)
    gateway_updated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["-refunded_on", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.CheckConstraint(
                condition=~Q(source="payment") | Q(payment__isnull=False), name="refund_of_payment_names_it"
            ),
            models.CheckConstraint(
                condition=~Q(source="credit_note") | Q(credit_note__isnull=False), name="refund_of_credit_note_names_it"
            ),
            models.UniqueConstraint(
                fields=["gateway", "gateway_reference"],
                condition=~Q(gateway_reference=""),
                name="refund_gateway_reference_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"Refund #{self.pk} {_shown(self.amount, self.currency)}"


class Allocation(models.Model):
    """Money applied to (positive) or taken back from (negative) one invoice. The invoice's amount_paid and
    amount_credited are the sums of these rows, kept in step by the services under the invoice's row lock."""

    class Kind(models.TextChoices):
        PAYMENT = "payment", "Payment"
        CREDIT_BALANCE = "credit_balance", "Credit balance"
        CREDIT_NOTE = "credit_note", "Credit note"
        PAYMENT_REVERSAL = "payment_reversal", "Payment reversed"
        REFUND = "refund", "Payment refunded"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="allocations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(
        **MONEY,
        help_text="Positive: applied to the invoice; negative: taken back (a reversal, a refund, or a negative "
        "invoice's credit moved to the balance).",
    )
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="allocations")
    credit_note = models.ForeignKey(
        "invoicing.CreditNote", null=True, blank=True, on_delete=models.PROTECT, related_name="allocations"
    )
    refund = models.ForeignKey(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="allocations")
    balance_transaction = models.OneToOneField(
        CustomerBalanceTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="allocation"
    )
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["invoice", "created_at", "id"]
        indexes = [models.Index(fields=["payment"]), models.Index(fields=["credit_note"])]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="allocation_not_zero"),
            models.CheckConstraint(
                condition=(Q(kind="payment") & Q(payment__isnull=False) & Q(amount__gt=0))
                | (Q(kind="payment_reversal") & Q(payment__isnull=False) & Q(amount__lt=0))
                | (Q(kind="refund") & Q(payment__isnull=False) & Q(refund__isnull=False) & Q(amount__lt=0))
                | (Q(kind="credit_note") & Q(credit_note__isnull=False) & Q(amount__gt=0))
                | (Q(kind="credit_balance") & Q(balance_transaction__isnull=False)),
                name="allocation_kind_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount} on {self.invoice}"


class GatewayEvent(models.Model):
    """A webhook delivery, stored once per gateway event id: a second delivery is acknowledged and ignored."""

    gateway = models.CharField(max_length=30)
    event_id = models.CharField(max_length=100)
    event_type = models.CharField(max_length=100)
    occurred_at = models.DateTimeField(help_text="When the gateway says the event happened.")
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=300, blank=True)
    payload = models.JSONField(default=dict)

    class Meta:
        ordering = ["-received_at"]
        constraints = [models.UniqueConstraint(fields=["gateway", "event_id"], name="gateway_event_once")]

    def __str__(self) -> str:
        return f"{self.gateway} {self.event_type} {self.event_id}"


class PaymentEvent(models.Model):
    """The audit trail of money on a customer's account that is not an invoice event: payment recorded,
    allocated, reversed, refunded, credit balance applied; who did it and when."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="payment_events")
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    refund = models.ForeignKey(Refund, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=30)
    details = models.JSONField(default=dict, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["customer", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.action} ({self.customer_id})"


__all__ = [
    "Allocation",
    "CustomerBalance",
    "CustomerBalanceTransaction",
    "GatewayEvent",
    "Payment",
    "PaymentEvent",
    "PaymentMethod",
    "Refund",
]


class Receivable(Invoice):
    """Invoices seen as money owed: the admin's receivables pages (open items, aging, statements, DSO)."""

    class Meta:
        proxy = True
        verbose_name = "receivable"
        verbose_name_plural = "receivables"
        permissions = [("export_receivable", "Can export receivables reports and customer statements")]
