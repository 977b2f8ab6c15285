"""Invoices and their lines, tax rates, number series, the exactly-once billing guard, coupons and credits
applied to customers, prepaid wallets, pending one-off charges and cycle-close runs.

Amounts on a document are plain decimals in the document's single `currency` column: a document never mixes
currencies, and one currency column per amount (django-money's layout) would let two of them disagree. Money
is rounded to the currency's minor unit when it becomes a line (DESIGN: money); four decimal places hold
every ISO 4217 minor unit (KWD has three).
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django_countries.fields import CountryField
from djmoney.models.fields import CurrencyField
from simple_history.models import HistoricalRecords

from billing.common import TimestampedModel
from contracts.models import PRICE_DIGITS, Charge, Coupon, FixedCharge, Product, Subscription
from customers.models import BillingEntity, Customer

MONEY = {"max_digits": 20, "decimal_places": 4}
QUANTITY = {"max_digits": 38, "decimal_places": 12}
ZERO = Decimal("0")
SUM_TOLERANCE = Decimal("0.000001")


class TaxRate(TimestampedModel):
    """A tax rate of a jurisdiction (the customer's country and optionally region) for a product tax code."""

    name = models.CharField(max_length=100)
    country = CountryField()
    region = models.CharField(max_length=50, blank=True, help_text="State or province code; empty: whole country.")
    tax_code = models.CharField(max_length=50, blank=True, help_text="Product tax code; empty: every product.")
    percent = models.DecimalField(max_digits=9, decimal_places=6)
    valid_from = models.DateField(null=True, blank=True)
    valid_to = models.DateField(null=True, blank=True, help_text="First day no longer valid.")
    legal_mention = models.CharField(max_length=300, blank=True)
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["country", "region", "tax_code", "-valid_from"]
        constraints = [
            models.CheckConstraint(condition=Q(percent__gte=0) & Q(percent__lte=100), name="tax_rate_percent_range"),
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True) | Q(valid_to__isnull=True) | Q(valid_to__gt=F("valid_from")),
                name="tax_rate_dates_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.percent.normalize()} %)"


class DocumentSequence(models.Model):
    """The next number of a billing entity's series. Finalization locks this row (SELECT ... FOR UPDATE) and
    increments it in the same transaction, so numbers are gapless, unique and never reused."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        CREDIT_NOTE = "credit_note", "Credit note"

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="sequences")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    next_number = models.PositiveBigIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["billing_entity", "kind"], name="document_sequence_unique"),
            models.CheckConstraint(condition=Q(next_number__gte=1), name="document_sequence_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.billing_entity.code} {self.kind} #{self.next_number}"


class CycleRun(models.Model):
    """One cycle close: which customers it covered, how far it got, what it created and what failed."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        COMPLETED_WITH_ERRORS = "completed_with_errors", "Completed with errors"

    as_of = models.DateTimeField(help_text="The moment the close ran 'as of' (UTC).")
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.RUNNING, db_index=True)
    triggered_by = models.CharField(max_length=200, blank=True)
    total_customers = models.PositiveIntegerField(default=0)
    processed_customers = models.PositiveIntegerField(default=0)
    failed_customers = models.PositiveIntegerField(default=0)
    invoices_created = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        permissions = [("run_cycle_close", "Can run a cycle close")]
        constraints = [
            models.CheckConstraint(
                condition=Q(processed_customers__lte=F("total_customers")), name="cycle_run_progress_bounded"
            ),
        ]

    def __str__(self) -> str:
        return f"Cycle close as of {self.as_of:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if not self.total_customers:
            return 100
        return int(100 * self.processed_customers / self.total_customers)


class CycleRunCustomer(models.Model):
    """A customer's part in a run; the task marks it done once, so a retried task is not counted twice."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(CycleRun, on_delete=models.CASCADE, related_name="customers")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    invoices_created = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "customer"], name="cycle_run_customer_unique")]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"{self.customer_id} in run {self.run_id}: {self.status}"


class Invoice(TimestampedModel):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FINALIZED = "finalized", "Finalized"
        PAID = "paid", "Paid"
        VOID = "void", "Void"
        UNCOLLECTIBLE = "uncollectible", "Uncollectible"

    class Kind(models.TextChoices):
        SUBSCRIPTION = "subscription", "Subscription cycle"
        ONE_OFF = "one_off", "One-off"
        CREDIT_PURCHASE = "credit_purchase", "Prepaid credit purchase"

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="invoices")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SUBSCRIPTION)
    status = models.CharField(max_length=14, choices=Status.choices, default=Status.DRAFT, db_index=True)
    currency = CurrencyField(max_length=3)
    number = models.CharField(max_length=40, null=True, blank=True)
    sequence_number = models.PositiveBigIntegerField(null=True, blank=True)
    issue_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    period_start = models.DateField(null=True, blank=True, help_text="The earliest service day on the invoice.")
    period_end = models.DateField(null=True, blank=True, help_text="First day after the latest service day.")
    grace_until = models.DateTimeField(
        null=True, blank=True, help_text="A draft is finalized automatically at this moment."
    )
    subtotal = models.DecimalField(**MONEY, default=ZERO)
    discount_total = models.DecimalField(**MONEY, default=ZERO)
    tax_total = models.DecimalField(**MONEY, default=ZERO)
    total = models.DecimalField(**MONEY, default=ZERO)
    prepaid_credit_applied = models.DecimalField(**MONEY, default=ZERO)
    amount_paid = models.DecimalField(
        **MONEY,
        default=ZERO,
        help_text="Payments and credit balance applied, net of reversals and refunds (sum of its allocations).",
    )
    amount_credited = models.DecimalField(
        **MONEY,
        default=ZERO,
        help_text="Credit notes applied to what it still owed, its own or offset from another invoice's.",
    )
    credit_notes_total = models.DecimalField(
        **MONEY, default=ZERO, help_text="Total of the credit notes issued against it: never above its total."
    )
    amount_due = models.DecimalField(**MONEY, default=ZERO)
    paid_at = models.DateTimeField(null=True, blank=True)
    marked_uncollectible_at = models.DateTimeField(null=True, blank=True)
    tax_breakdown = models.JSONField(default=list, blank=True)
    discount_breakdown = models.JSONField(default=list, blank=True)
    mentions = models.JSONField(default=list, blank=True, help_text="Legal mentions printed on the invoice.")
    seller = models.JSONField(default=dict, blank=True, help_text="Snapshot taken at finalization.")
    buyer = models.JSONField(default=dict, blank=True, help_text="Snapshot taken at finalization.")
    memo = models.TextField(blank=True)
    cycle_run = models.ForeignKey(CycleRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="invoices")
    as_of = models.DateTimeField(null=True, blank=True, help_text="The moment the draft was computed 'as of'.")
    finalized_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=300, blank=True)
    pdf = models.FileField(upload_to="invoices/%Y/%m/", null=True, blank=True)
    pdf_sha256 = models.CharField(max_length=64, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords(excluded_fields=["pdf", "pdf_sha256", "updated_at"])

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("finalize_invoice", "Can finalize invoices"),
            ("void_invoice", "Can void invoices"),
            ("mark_uncollectible_invoice", "Can mark invoices uncollectible"),
        ]
        indexes = [
            models.Index(fields=["customer", "status"]),
            models.Index(fields=["status", "grace_until"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["billing_entity", "number"], condition=Q(number__isnull=False), name="invoice_number_unique"
            ),
            models.UniqueConstraint(
                fields=["billing_entity", "sequence_number"],
                condition=Q(sequence_number__isnull=False),
                name="invoice_sequence_unique",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "void"], number__isnull=True, finalized_at__isnull=True)
                | (~Q(status="draft") & Q(number__isnull=False, finalized_at__isnull=False, issue_date__isnull=False)),
                name="invoice_number_iff_finalized",
            ),
            # Within a hundredth of the smallest stored unit: exact on PostgreSQL (four decimal places), and
            # still true on SQLite, which adds decimals as binary floats.
            models.CheckConstraint(
                condition=Q(total__range=(
                    F("subtotal") - F("discount_total") + F("tax_total") - SUM_TOLERANCE,
                    F("subtotal") - F("discount_total") + F("tax_total") + SUM_TOLERANCE,
                )),
                name="invoice_total_adds_up",
            ),
            # DESIGN: amount due = total - prepaid credit - payments - credits (+ refunds, which are negative
            # allocations inside amount_paid); the two sums are kept equal to the allocations by the services.
            models.CheckConstraint(
                condition=Q(amount_due__range=(
                    F("total") - F("prepaid_credit_applied") - F("amount_paid") - F("amount_credited")
                    - SUM_TOLERANCE,
                    F("total") - F("prepaid_credit_applied") - F("amount_paid") - F("amount_credited")
                    + SUM_TOLERANCE,
                )),
                name="invoice_amount_due_adds_up",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "void"]) | Q(amount_due__gte=0), name="invoice_amount_due_not_negative"
            ),
            models.CheckConstraint(condition=~Q(status="paid") | Q(amount_due=0), name="invoice_paid_means_settled"),
            models.CheckConstraint(
                condition=Q(credit_notes_total__gte=0)
                & (Q(credit_notes_total=0) | Q(credit_notes_total__lte=F("total"))),
                name="invoice_credit_notes_within_total",
            ),
            models.CheckConstraint(
                condition=Q(amount_credited__gte=0), name="invoice_amount_credited_not_negative",
            ),
            # Tax may be negative: an invoice made of credits (a cancellation) gives its tax back.
            models.CheckConstraint(
                condition=Q(prepaid_credit_applied__gte=0) & Q(discount_total__gte=0),
                name="invoice_credits_not_negative",
            ),
            models.CheckConstraint(
                condition=~Q(status="void") | Q(voided_at__isnull=False), name="invoice_void_has_date"
            ),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft #{self.pk}"

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT


class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        SUBSCRIPTION_FEE = "subscription_fee", "Subscription fee"
        PRORATION_CREDIT = "proration_credit", "Unused time credit"
        PRORATION_CHARGE = "proration_charge", "Remaining time charge"
        USAGE = "usage", "Usage"
        LATE_USAGE = "late_usage", "Late usage"
        MINIMUM_TRUE_UP = "minimum_true_up", "Minimum spend true-up"
        COMMITMENT_TRUE_UP = "commitment_true_up", "Commitment true-up"
        FIXED = "fixed", "Fixed charge"
        ONE_OFF = "one_off", "One-off charge"
        INSTALLMENT = "installment", "Installment"
        CREDIT_PURCHASE = "credit_purchase", "Prepaid credit purchase"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.CharField(max_length=300)
    customer = models.ForeignKey(
        Customer,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Whose charge (a child on a consolidated invoice).",
    )
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    charge = models.ForeignKey(Charge, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    fixed_charge = models.ForeignKey(FixedCharge, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    meter = models.ForeignKey("usage.Meter", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    group = models.JSONField(default=dict, blank=True, help_text="The group-by values of a usage line.")
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True, help_text="First day after the service period.")
    quantity = models.DecimalField(**QUANTITY, default=Decimal("1"))
    unit_price = models.DecimalField(**PRICE_DIGITS, default=ZERO)
    amount = models.DecimalField(**MONEY, help_text="Rounded once to the currency's minor unit.")
    discount_amount = models.DecimalField(**MONEY, default=ZERO)
    tax_rate = models.ForeignKey(TaxRate, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    tax_percent = models.DecimalField(max_digits=9, decimal_places=6, default=ZERO)
    tax_treatment = models.CharField(max_length=16, default="not_taxable")
    tax_amount = models.DecimalField(**MONEY, default=ZERO)
    explanation = models.JSONField(default=dict, blank=True, help_text="What produced the line: inputs and breakdown.")

    class Meta:
        ordering = ["invoice", "position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(period_start__isnull=True)
                | Q(period_end__isnull=True)
                | Q(period_end__gte=F("period_start")),
                name="invoice_line_period_ordered",
            ),
            models.CheckConstraint(condition=Q(discount_amount__gte=0), name="invoice_line_discount_not_negative"),
        ]

    def __str__(self) -> str:
        return self.description


class BilledPeriod(models.Model):
    """The exactly-once guard: a subscription's fee or usage for one period is billed by one live invoice.

    The cycle close inserts these rows in the transaction that creates the invoice; a second worker racing on
    the same period hits the unique constraint and rolls back. Voiding an invoice releases its rows, so the
    period can be billed again on a corrected invoice.
    """

    class Timing(models.TextChoices):
        ADVANCE = "advance", "Fees in advance"
        ARREARS = "arrears", "Usage and fees in arrears"

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="billed_periods")
    period_start = models.DateField()
    period_end = models.DateField()
    timing = models.CharField(max_length=8, choices=Timing.choices)
    invoice = models.ForeignKey(
        Invoice,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="billed_periods",
        help_text="Empty when the period had nothing to bill (a trial without usage).",
    )
    released = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start", "timing"],
                condition=Q(released=False),
                name="billed_period_once",
            ),
            models.CheckConstraint(condition=Q(period_end__gt=F("period_start")), name="billed_period_ordered"),
        ]
        indexes = [models.Index(fields=["subscription", "timing", "period_start"])]

    def __str__(self) -> str:
        return f"{self.subscription_id} {self.timing} {self.period_start}..{self.period_end}"


class AppliedCoupon(TimestampedModel):
    """A coupon redeemed by a customer; its duration counts the invoices it has discounted."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXHAUSTED = "exhausted", "Used up"
        REMOVED = "removed", "Removed"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="applied_coupons")
    coupon = models.ForeignKey(Coupon, on_delete=models.PROTECT, related_name="applications")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    periods_used = models.PositiveSmallIntegerField(default=0)
    created_by = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["customer", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "coupon"], condition=Q(status="active"), name="applied_coupon_once_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.coupon.code} for {self.customer.external_id}"


class CreditGrant(TimestampedModel):
    """Promotional credit given to a customer: a discount applied before tax until used up or expired."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_grants")
    currency = CurrencyField(max_length=3)
    amount = models.DecimalField(**MONEY)
    remaining = models.DecimalField(**MONEY)
    expires_on = models.DateField(null=True, blank=True, help_text="First day it can no longer be used.")
    reason = models.CharField(max_length=200)
    created_by = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["customer", "expires_on", "created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_grant_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=F("amount")), name="credit_grant_remaining_bounded"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.remaining} / {self.amount} {self.currency} for {self.customer.external_id}"


class Wallet(TimestampedModel):
    """A customer's prepaid credit in one currency, bought on an invoice and drawn down after tax."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="wallets")
    currency = CurrencyField(max_length=3)
    balance = models.DecimalField(**MONEY, default=ZERO)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "currency"], name="wallet_one_per_currency"),
            models.CheckConstraint(condition=Q(balance__gte=0), name="wallet_balance_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.customer.external_id} {self.balance} {self.currency}"


class WalletTransaction(models.Model):
    """The wallet's ledger: top-ups (lots with their own expiry and remaining balance), draw-downs, expiries."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Top-up"
        DRAWDOWN = "drawdown", "Draw-down"
        EXPIRY = "expiry", "Expiry"
        REVERSAL = "reversal", "Reversal of a draw-down"

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="transactions")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount = models.DecimalField(**MONEY, help_text="Positive: into the wallet; negative: out of it.")
    remaining = models.DecimalField(**MONEY, default=ZERO, help_text="Top-ups: what is left of this lot.")
    expires_on = models.DateField(null=True, blank=True)
    lot = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="uses")
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["wallet", "created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(remaining__gte=0), name="wallet_lot_remaining_not_negative"),
            models.CheckConstraint(
                condition=Q(kind="top_up", amount__gt=0, remaining__lte=F("amount"))
                | (~Q(kind="top_up") & Q(remaining=0)),
                name="wallet_transaction_consistent",
            ),
            # One top-up per purchase invoice: finalizing twice cannot credit the wallet twice.
            models.UniqueConstraint(
                fields=["invoice"], condition=Q(kind="top_up"), name="wallet_top_up_once_per_invoice"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount}"


class InstallmentPlan(TimestampedModel):
    """A one-time fee split into equal installments billed on consecutive invoices (the cents that do not
    divide go to the first installments)."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="installment_plans")
    description = models.CharField(max_length=200)
    currency = CurrencyField(max_length=3)
    total = models.DecimalField(**MONEY)
    installments = models.PositiveSmallIntegerField()
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(total__gt=0), name="installment_plan_total_positive"),
            models.CheckConstraint(condition=Q(installments__gte=1), name="installment_plan_count_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.description}: {self.total} {self.currency} in {self.installments}"


class PendingCharge(TimestampedModel):
    """A one-off charge (or one installment) waiting for the customer's next invoice from `bill_on` on."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="pending_charges")
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    description = models.CharField(max_length=200)
    currency = CurrencyField(max_length=3)
    quantity = models.DecimalField(**QUANTITY, default=Decimal("1"))
    unit_price = models.DecimalField(**PRICE_DIGITS)
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    bill_on = models.DateField(help_text="Billed on the first invoice made on or after this day.")
    installment_plan = models.ForeignKey(
        InstallmentPlan, null=True, blank=True, on_delete=models.PROTECT, related_name="charges"
    )
    installment_number = models.PositiveSmallIntegerField(null=True, blank=True)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["customer", "bill_on", "id"]
        indexes = [models.Index(fields=["customer", "invoice", "bill_on"])]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="pending_charge_quantity_positive"),
            models.CheckConstraint(
                condition=Q(installment_plan__isnull=True, installment_number__isnull=True)
                | Q(installment_plan__isnull=False, installment_number__gte=1),
                name="pending_charge_installment_numbered",
            ),
            models.UniqueConstraint(
                fields=["installment_plan", "installment_number"],
                condition=Q(installment_plan__isnull=False),
                name="pending_charge_installment_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.description


class InvoiceEvent(models.Model):
    """The audit trail of an invoice's money: created, refreshed, line added or removed, finalized, voided."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=30)
    details = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["invoice", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.action} {self.invoice_id}"
