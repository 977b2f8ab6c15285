"""Bank reconciliation: statements imported from CSV (the column layout configured per bank), one row per
statement line, deduplicated by a fingerprint so re-importing a statement (or an overlapping one) stores
nothing twice; credits are matched to invoices automatically or by an operator."""

from django.db import models
from django.db.models import Q
from djmoney.models.fields import CurrencyField

from billing.common import TimestampedModel
from customers.models import BillingEntity, Customer

from .invoices import MONEY
from .payments import Payment


class BankStatementFormat(TimestampedModel):
    """How one bank writes its CSV: columns are named by their header (or 1-based position without header)."""

    class DateOrder(models.TextChoices):
        ISO = "%Y-%m-%d", "2026-01-31"
        DMY_SLASH = "%d/%m/%Y", "31/01/2026"
        MDY_SLASH = "%m/%d/%Y", "01/31/2026"
        DMY_DOT = "%d.%m.%Y", "31.01.2026"
        YMD_COMPACT = "%Y%m%d", "20260131"

    name = models.CharField(max_length=100, unique=True)
    billing_entity = models.ForeignKey(
        BillingEntity, on_delete=models.PROTECT, related_name="bank_formats", help_text="Whose bank account."
    )
    delimiter = models.CharField(max_length=1, default=",")
    encoding = models.CharField(max_length=20, default="utf-8")
    has_header = models.BooleanField(default=True)
    skip_rows = models.PositiveSmallIntegerField(default=0, help_text="Lines before the header (bank banners).")
    date_column = models.CharField(max_length=100)
    date_format = models.CharField(max_length=20, choices=DateOrder.choices, default=DateOrder.ISO)
    amount_column = models.CharField(max_length=100, blank=True, help_text="Signed amount (credits positive).")
    credit_column = models.CharField(max_length=100, blank=True, help_text="Or: credits in their own column...")
    debit_column = models.CharField(max_length=100, blank=True, help_text="...and debits in theirs.")
    currency_column = models.CharField(max_length=100, blank=True)
    default_currency = CurrencyField(max_length=3, help_text="When the file has no currency column.")
    reference_column = models.CharField(max_length=100, blank=True)
    description_column = models.CharField(max_length=100, blank=True)
    counterparty_column = models.CharField(max_length=100, blank=True)
    transaction_id_column = models.CharField(
        max_length=100, blank=True, help_text="The bank's own id of the line, when it gives one."
    )
    decimal_separator = models.CharField(max_length=1, default=".")
    thousands_separator = models.CharField(max_length=1, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(amount_column="") | (~Q(credit_column="") & ~Q(debit_column="")),
                name="bank_format_has_amounts",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class BankStatement(models.Model):
    format = models.ForeignKey(BankStatementFormat, on_delete=models.PROTECT, related_name="statements")
    filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    imported_at = models.DateTimeField()
    imported_by = models.CharField(max_length=200, blank=True)
    line_count = models.PositiveIntegerField(default=0)
    new_lines = models.PositiveIntegerField(default=0)
    duplicate_lines = models.PositiveIntegerField(default=0)
    matched_lines = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-imported_at"]
        permissions = [("reconcile_bankstatement", "Can import statements and match bank lines")]
        constraints = [models.UniqueConstraint(fields=["format", "sha256"], name="bank_statement_file_once")]

    def __str__(self) -> str:
        return f"{self.filename} ({self.imported_at:%Y-%m-%d})"


class BankStatementLine(models.Model):
    class Status(models.TextChoices):
        UNMATCHED = "unmatched", "Unmatched"
        MATCHED = "matched", "Matched"
        IGNORED = "ignored", "Ignored"

    class MatchMethod(models.TextChoices):
        INVOICE_NUMBER = "invoice_number", "Invoice number in the reference"
        AMOUNT_AND_CUSTOMER = "amount_customer", "Amount and customer"
        MANUAL = "manual", "By hand"

    statement = models.ForeignKey(BankStatement, on_delete=models.PROTECT, related_name="lines")
    format = models.ForeignKey(BankStatementFormat, on_delete=models.PROTECT, related_name="+")
    line_number = models.PositiveIntegerField(help_text="Line in the file it was read from.")
    booked_on = models.DateField()
    amount = models.DecimalField(**MONEY, help_text="Positive: money received.")
    currency = CurrencyField(max_length=3)
    reference = models.CharField(max_length=300, blank=True)
    description = models.CharField(max_length=500, blank=True)
    counterparty = models.CharField(max_length=300, blank=True)
    transaction_id = models.CharField(max_length=100, blank=True)
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNMATCHED, db_index=True)
    match_method = models.CharField(max_length=16, choices=MatchMethod.choices, blank=True)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    payment = models.OneToOneField(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="bank_statement_line"
    )
    matched_at = models.DateTimeField(null=True, blank=True)
    matched_by = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["booked_on", "id"]
        constraints = [
            models.UniqueConstraint(fields=["format", "fingerprint"], name="bank_line_once"),
            models.CheckConstraint(
                condition=~Q(status="matched") | Q(payment__isnull=False), name="bank_line_matched_has_payment"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.booked_on} {self.amount} {self.currency} {self.reference}"
