"""The general ledger: a chart of accounts per billing entity, accounting periods, and journal entries.

A journal entry is written once and never changed: the database refuses an entry whose debits and credits
differ (a deferred constraint trigger checked at commit), any change or delete of a posted line or entry,
and any entry dated in a closed period (migration 0002). Corrections are new entries in an open period.
Amounts are plain decimals in the entry's single currency; reports never add two currencies.
"""

from decimal import Decimal

from django.db import models
from django.db.models import F, Q
from djmoney.models.fields import CurrencyField

from contracts.models import Product
from customers.models import BillingEntity, Customer

MONEY = {"max_digits": 20, "decimal_places": 4}
ZERO = Decimal("0")


class Account(models.Model):
    """An account of a billing entity's chart. `role` says what the posting rules use it for; revenue and
    contra-revenue accounts may be kept per product (an empty product is the entity's default)."""

    class Type(models.TextChoices):
        ASSET = "asset", "Asset"
        LIABILITY = "liability", "Liability"
        EQUITY = "equity", "Equity"
        REVENUE = "revenue", "Revenue"
        EXPENSE = "expense", "Expense"

    class Role(models.TextChoices):
        RECEIVABLE = "receivable", "Accounts receivable"
        CASH = "cash", "Cash"
        CONTRACT_ASSET = "contract_asset", "Contract asset (unbilled revenue)"
        DEFERRED_REVENUE = "deferred_revenue", "Deferred revenue (contract liability)"
        PREPAID_CREDIT = "prepaid_credit", "Prepaid credits (contract liability)"
        CUSTOMER_CREDIT = "customer_credit", "Customer credit balances and unapplied cash"
        TAX_PAYABLE = "tax_payable", "Tax payable"
        REVENUE = "revenue", "Revenue"
        BREAKAGE = "breakage", "Revenue from expired prepaid credits"
        CONTRA_REVENUE = "contra_revenue", "Contra-revenue (credit notes)"
        BAD_DEBT = "bad_debt", "Bad debt expense"
        OTHER = "other", "Other"

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="accounts")
    code = models.CharField(max_length=30, help_text="The account number the ERP knows it by.")
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=10, choices=Type.choices)
    role = models.CharField(max_length=20, choices=Role.choices)
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Revenue and contra-revenue only: this product's revenue; empty: every other product.",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["billing_entity", "code"]
        constraints = [
            models.UniqueConstraint(fields=["billing_entity", "code"], name="account_code_unique"),
            models.UniqueConstraint(
                fields=["billing_entity", "role"], condition=Q(product__isnull=True), name="account_role_default_unique"
            ),
            models.UniqueConstraint(
                fields=["billing_entity", "role", "product"],
                condition=Q(product__isnull=False),
                name="account_role_product_unique",
            ),
            models.CheckConstraint(
                condition=Q(product__isnull=True) | Q(role__in=["revenue", "contra_revenue"]),
                name="account_product_only_on_revenue",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"

    @property
    def normal_balance(self) -> str:
        """Which side increases it: debit for assets and expenses, credit for the rest (contra-revenue is a
        debit-balance revenue account)."""
        if self.type in (self.Type.ASSET, self.Type.EXPENSE) or self.role == self.Role.CONTRA_REVENUE:
            return "debit"
        return "credit"


class AccountingPeriod(models.Model):
    """A month of a billing entity's books. Entries are dated inside an open period; once closed, nothing is
    posted into it again and a correction goes into the first open period after it."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="accounting_periods")
    start_date = models.DateField()
    end_date = models.DateField(help_text="First day after the period.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN, db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.CharField(max_length=200, blank=True)
    close_checklist = models.JSONField(default=list, blank=True, help_text="The checks as they stood at the close.")

    class Meta:
        ordering = ["billing_entity", "-start_date"]
        permissions = [("close_accountingperiod", "Can close accounting periods")]
        constraints = [
            models.UniqueConstraint(fields=["billing_entity", "start_date"], name="accounting_period_unique"),
            models.CheckConstraint(condition=Q(end_date__gt=F("start_date")), name="accounting_period_ordered"),
            models.CheckConstraint(
                condition=Q(status="open") | Q(closed_at__isnull=False), name="accounting_period_closed_has_date"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.billing_entity.code} {self.start_date:%Y-%m} ({self.get_status_display()})"

    @property
    def label(self) -> str:
        return f"{self.start_date:%Y-%m}"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class JournalEntry(models.Model):
    """One balanced posting. `source_key` names the event it records (e.g. `invoice:42`): unique, so a
    document is posted exactly once however often or concurrently the posting runs."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice finalized"
        PAYMENT = "payment", "Payment received"
        PAYMENT_REVERSAL = "payment_reversal", "Payment reversed"
        ALLOCATION = "allocation", "Credit applied to an invoice"
        CREDIT_NOTE = "credit_note", "Credit note issued"
        REFUND = "refund", "Refund"
        REFUND_FAILED = "refund_failed", "Refund failed"
        WRITE_OFF = "write_off", "Write-off to bad debt"
        RECOGNITION = "recognition", "Revenue recognised"
        MODIFICATION = "modification", "Contract modification catch-up"
        BREAKAGE = "breakage", "Prepaid credit expired"
        INVOICE_VOID = "invoice_void", "Invoice voided"
        ACCRUAL = "accrual", "Unbilled revenue accrual"
        ACCRUAL_REVERSAL = "accrual_reversal", "Unbilled revenue accrual reversed"
        MANUAL = "manual", "Manual adjustment"

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="journal_entries")
    period = models.ForeignKey(AccountingPeriod, on_delete=models.PROTECT, related_name="entries")
    entry_date = models.DateField(db_index=True)
    original_date = models.DateField(
        help_text="When the event happened; differs from the entry date when its period was already closed."
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, db_index=True)
    currency = CurrencyField(max_length=3)
    source_key = models.CharField(max_length=120, unique=True)
    description = models.CharField(max_length=300)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(
        "invoicing.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="journal_entries"
    )
    payment = models.ForeignKey("invoicing.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    credit_note = models.ForeignKey(
        "invoicing.CreditNote", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    refund = models.ForeignKey("invoicing.Refund", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    total = models.DecimalField(**MONEY, help_text="Sum of the debits (= sum of the credits).")
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-entry_date", "-id"]
        verbose_name_plural = "journal entries"
        indexes = [models.Index(fields=["billing_entity", "entry_date"]), models.Index(fields=["period", "kind"])]
        constraints = [
            models.CheckConstraint(condition=Q(total__gte=0), name="journal_total_not_negative"),
            models.CheckConstraint(condition=Q(entry_date__gte=F("original_date")), name="journal_never_backdated"),
        ]

    def __str__(self) -> str:
        return f"JE {self.pk} {self.entry_date} {self.get_kind_display()}"

    @property
    def is_correction(self) -> bool:
        return self.entry_date != self.original_date


class JournalLine(models.Model):
    """A debit or a credit (never both) on one account. Customer, product and revenue contract are kept on
    each line so reports can be drilled down and reconciled to the ledger."""

    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="lines")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lines")
    debit = models.DecimalField(**MONEY, default=ZERO)
    credit = models.DecimalField(**MONEY, default=ZERO)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    revenue_contract = models.ForeignKey(
        "revrec.RevenueContract", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    memo = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["entry", "id"]
        indexes = [models.Index(fields=["account", "entry"])]
        constraints = [
            models.CheckConstraint(
                condition=(Q(debit__gt=0) & Q(credit=0)) | (Q(credit__gt=0) & Q(debit=0)),
                name="journal_line_one_side",
            ),
        ]

    def __str__(self) -> str:
        side = f"Dr {self.debit}" if self.debit else f"Cr {self.credit}"
        return f"{self.account.code} {side}"


class PostedSource(models.Model):
    """The exactly-once guard of the posting rules: each money row (an allocation, a credit balance move, a
    wallet expiry...) is claimed by the one entry that posted it. A second posting of the same row hits the
    unique constraint and rolls back."""

    source = models.CharField(max_length=120, unique=True)
    entry = models.ForeignKey(
        JournalEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="sources",
        help_text="Empty when the row had nothing to post (e.g. an invoice of 0.00).",
    )
    posted_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.source
