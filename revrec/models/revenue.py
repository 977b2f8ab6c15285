"""ASC 606 / IFRS 15: revenue contracts, their performance obligations with standalone selling prices and
allocated prices, what has been recognised of each and when, and contract modifications."""

from decimal import Decimal

from django.db import models
from django.db.models import F, Q
from djmoney.models.fields import CurrencyField
from simple_history.models import HistoricalRecords

from contracts.models import Contract, Product
from customers.models import BillingEntity, Customer

MONEY = {"max_digits": 20, "decimal_places": 4}
PRICE = {"max_digits": 30, "decimal_places": 12}
QUANTITY = {"max_digits": 38, "decimal_places": 12}
ZERO = Decimal("0")


class StandaloneSellingPrice(models.Model):
    """The price a product sells for on its own, by currency and effective date (step 4's weights). A price
    marked uncertain is estimated by the residual approach: what is left of the transaction price after the
    obligations with an observable SSP (ASC 606-10-32-34c)."""

    class Per(models.TextChoices):
        UNIT = "unit", "Per unit (one-time)"
        MONTH = "month", "Per unit per month"
        YEAR = "year", "Per unit per year"

    class Method(models.TextChoices):
        OBSERVABLE = "observable", "Observable price"
        ADJUSTED_MARKET = "adjusted_market", "Adjusted market assessment"
        EXPECTED_COST_PLUS = "expected_cost_plus", "Expected cost plus a margin"
        RESIDUAL = "residual", "Residual approach"

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="standalone_selling_prices")
    currency = CurrencyField(max_length=3)
    effective_from = models.DateField()
    price = models.DecimalField(**PRICE, null=True, blank=True, help_text="Empty when uncertain (residual).")
    per = models.CharField(max_length=6, choices=Per.choices, default=Per.MONTH)
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.OBSERVABLE)
    is_uncertain = models.BooleanField(
        default=False, help_text="Highly variable or uncertain: the residual approach estimates it."
    )
    note = models.CharField(max_length=300, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["product", "currency", "-effective_from"]
        verbose_name = "standalone selling price"
        constraints = [
            models.UniqueConstraint(fields=["product", "currency", "effective_from"], name="ssp_unique"),
            models.CheckConstraint(
                condition=(Q(is_uncertain=True) & Q(price__isnull=True))
                | (Q(is_uncertain=False) & Q(price__isnull=False) & Q(price__gte=0)),
                name="ssp_price_unless_uncertain",
            ),
        ]

    def __str__(self) -> str:
        shown = "residual" if self.is_uncertain else f"{self.price.normalize()} {self.currency}/{self.per}"
        return f"{self.product.code} from {self.effective_from}: {shown}"


class RevenueContract(models.Model):
    """Step 1: the contract with a customer. One per customer contract, or one per invoice whose lines have
    no contract. `billed` and `recognized` are running totals kept under a row lock; their difference is the
    contract's net position: deferred revenue when billed is ahead, a contract asset when recognised is."""

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="revenue_contracts")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="revenue_contracts")
    contract = models.OneToOneField(
        Contract, null=True, blank=True, on_delete=models.PROTECT, related_name="revenue_contract"
    )
    invoice = models.OneToOneField(
        "invoicing.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="revenue_contract",
        help_text="The invoice it was made from, when there is no customer contract.",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="separate_contracts",
        help_text="A modification accounted for as a separate contract points at the original.",
    )
    reference = models.CharField(max_length=120, unique=True)
    currency = CurrencyField(max_length=3)
    transaction_price = models.DecimalField(**MONEY, default=ZERO, help_text="Allocated to its obligations.")
    billed = models.DecimalField(**MONEY, default=ZERO, help_text="Billed to date, net of credit notes, before tax.")
    recognized = models.DecimalField(**MONEY, default=ZERO, help_text="Recognised to date.")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(contract__isnull=True) | Q(invoice__isnull=True), name="revenue_contract_one_origin"
            ),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def deferred(self) -> Decimal:
        return max(self.billed - self.recognized, ZERO)

    @property
    def contract_asset(self) -> Decimal:
        return max(self.recognized - self.billed, ZERO)


class PerformanceObligation(models.Model):
    """Step 2: a promise to transfer a distinct good or service, with its SSP (weight), its allocated price
    (step 4) and how it is recognised (step 5).

    A ratable obligation's revenue through a day is the running total of DESIGN (round(price x days elapsed /
    days)); after a prospective modification or a credit note, the running total restarts from
    `rebased_on` with what had been recognised by then (`rebased_amount`), so nothing already recognised is
    restated.
    """

    class Kind(models.TextChoices):
        SUBSCRIPTION = "subscription", "Subscription term"
        ONE_TIME = "one_time", "One-time deliverable"
        USAGE = "usage", "Usage"
        PREPAID_CREDIT = "prepaid_credit", "Prepaid credits"

    class Pattern(models.TextChoices):
        RATABLE = "ratable", "Ratably over the service period"
        POINT_IN_TIME = "point_in_time", "At a point in time"
        AS_INVOICED = "as_invoiced", "As invoiced (right to invoice)"

    class Status(models.TextChoices):
        OPEN = "open", "Being recognised"
        AWAITING_DELIVERY = "awaiting_delivery", "Awaiting delivery"
        COMPLETE = "complete", "Fully recognised"
        CANCELLED = "cancelled", "Cancelled"

    revenue_contract = models.ForeignKey(RevenueContract, on_delete=models.PROTECT, related_name="obligations")
    invoice_line = models.OneToOneField(
        "invoicing.InvoiceLine", null=True, blank=True, on_delete=models.PROTECT, related_name="obligation"
    )
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    description = models.CharField(max_length=300)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    pattern = models.CharField(max_length=14, choices=Pattern.choices)
    status = models.CharField(max_length=18, choices=Status.choices, default=Status.OPEN, db_index=True)
    quantity = models.DecimalField(**QUANTITY, default=Decimal("1"))
    service_start = models.DateField(null=True, blank=True)
    service_end = models.DateField(null=True, blank=True, help_text="First day after the service period.")
    satisfied_on = models.DateField(
        null=True, blank=True, help_text="Point in time: the day it was delivered (or the milestone reached)."
    )
    billed_amount = models.DecimalField(**MONEY, default=ZERO, help_text="Its line's amount net of discount.")
    billed_on = models.DateField(help_text="The date its invoice was posted in the ledger.")
    ssp = models.DecimalField(**MONEY, default=ZERO, help_text="Standalone selling price of what it promises.")
    ssp_source = models.CharField(max_length=120, blank=True, help_text="Which SSP row or list price it came from.")
    allocated_price = models.DecimalField(**MONEY, default=ZERO)
    recognized_amount = models.DecimalField(**MONEY, default=ZERO)
    recognized_through = models.DateField(null=True, blank=True, help_text="Last day recognised.")
    rebased_on = models.DateField(null=True, blank=True)
    rebased_amount = models.DecimalField(**MONEY, default=ZERO)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["revenue_contract", "id"]
        indexes = [models.Index(fields=["status", "pattern", "service_start"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(pattern="ratable")
                | (Q(service_start__isnull=False) & Q(service_end__gt=F("service_start"))),
                name="obligation_ratable_has_period",
            ),
            models.CheckConstraint(
                condition=Q(rebased_on__isnull=True)
                | (Q(service_start__isnull=False) & Q(rebased_on__gte=F("service_start"))),
                name="obligation_rebase_in_period",
            ),
        ]

    def __str__(self) -> str:
        return self.description

    @property
    def remaining(self) -> Decimal:
        return self.allocated_price - self.recognized_amount


class ObligationAdjustment(models.Model):
    """A later change to what an obligation bills or is allocated (a credit note, a void, a modification):
    with the obligation's first figures and its Recognition rows, the position of any day can be rebuilt,
    which is how the deferred revenue roll-forward is reconciled with the ledger."""

    class Kind(models.TextChoices):
        CREDIT_NOTE = "credit_note", "Credit note"
        VOID = "void", "Invoice voided"
        MODIFICATION = "modification", "Contract modification"

    obligation = models.ForeignKey(PerformanceObligation, on_delete=models.PROTECT, related_name="adjustments")
    revenue_contract = models.ForeignKey(RevenueContract, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=14, choices=Kind.choices)
    effective_on = models.DateField(help_text="The ledger date of the entry that recorded it.")
    billed_delta = models.DecimalField(**MONEY, default=ZERO)
    allocated_delta = models.DecimalField(**MONEY, default=ZERO)
    entry = models.ForeignKey("revrec.JournalEntry", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    source_key = models.CharField(max_length=120, help_text="The credit note, void or modification.")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["effective_on", "id"]
        constraints = [
            models.UniqueConstraint(fields=["obligation", "source_key"], name="obligation_adjustment_once"),
        ]

    def __str__(self) -> str:
        return f"{self.obligation_id} {self.kind} {self.effective_on}"


class Recognition(models.Model):
    """Revenue recognised from one obligation on one day (the waterfall, by product and by customer read
    these). Unique per obligation, day and kind, so a repeated daily run recognises nothing twice."""

    class Kind(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        CATCH_UP = "catch_up", "Cumulative catch-up"
        CREDIT_NOTE = "credit_note", "Credit note"
        VOID = "void", "Invoice voided (reversed)"

    obligation = models.ForeignKey(PerformanceObligation, on_delete=models.PROTECT, related_name="recognitions")
    revenue_contract = models.ForeignKey(RevenueContract, on_delete=models.PROTECT, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="+")
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    currency = CurrencyField(max_length=3)
    recognized_on = models.DateField()
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.SCHEDULED)
    amount = models.DecimalField(**MONEY)
    entry = models.ForeignKey("revrec.JournalEntry", on_delete=models.PROTECT, related_name="recognitions")

    class Meta:
        ordering = ["recognized_on", "id"]
        indexes = [
            models.Index(fields=["recognized_on", "currency"]),
            models.Index(fields=["customer", "recognized_on"]),
        ]
        constraints = [
            models.UniqueConstraint(fields=["obligation", "recognized_on", "kind"], name="recognition_once_per_day"),
        ]

    def __str__(self) -> str:
        return f"{self.obligation_id} {self.recognized_on}: {self.amount}"


class ContractModification(models.Model):
    """A change to a revenue contract and how it was accounted for (ASC 606-10-25-12/13), kept with its
    reasons and the obligations' figures before and after."""

    class Change(models.TextChoices):
        UPGRADE = "upgrade", "Upgrade"
        DOWNGRADE = "downgrade", "Downgrade"
        ADDED_PRODUCT = "added_product", "Added product"
        QUANTITY_CHANGE = "quantity_change", "Quantity change"
        EXTENSION = "extension", "Extension"
        CANCELLATION = "cancellation", "Cancellation"
        PRICE_CHANGE = "price_change", "Price change"

    class Treatment(models.TextChoices):
        SEPARATE_CONTRACT = "separate_contract", "Separate contract (25-12)"
        PROSPECTIVE = "prospective", "Prospective: termination and new contract (25-13a)"
        CUMULATIVE_CATCH_UP = "cumulative_catch_up", "Cumulative catch-up (25-13b)"

    revenue_contract = models.ForeignKey(RevenueContract, on_delete=models.PROTECT, related_name="modifications")
    change = models.CharField(max_length=16, choices=Change.choices)
    treatment = models.CharField(max_length=20, choices=Treatment.choices)
    effective_date = models.DateField()
    price_change = models.DecimalField(**MONEY, default=ZERO, help_text="Added (or removed) consideration.")
    catch_up_amount = models.DecimalField(**MONEY, default=ZERO, help_text="Revenue adjusted on the effective date.")
    rationale = models.TextField(help_text="Why this treatment: the facts the rule was applied to.")
    details = models.JSONField(default=dict, blank=True, help_text="Obligations before and after.")
    separate_contract = models.OneToOneField(
        RevenueContract, null=True, blank=True, on_delete=models.PROTECT, related_name="created_by_modification"
    )
    source_key = models.CharField(max_length=120, unique=True, help_text="Idempotency key of the modification.")
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-effective_date", "-id"]

    def __str__(self) -> str:
        return f"{self.revenue_contract} {self.get_change_display()} on {self.effective_date}"


class RecognitionRun(models.Model):
    """One run of daily recognition (beat, admin or API): through which day, what it recognised."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    through_date = models.DateField(help_text="Revenue recognised through the end of this day.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    obligations = models.PositiveIntegerField(default=0)
    entries = models.PositiveIntegerField(default=0)
    amounts = models.JSONField(default=dict, blank=True, help_text="Recognised per currency.")
    error = models.TextField(blank=True)
    triggered_by = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        permissions = [("run_recognition", "Can run revenue recognition")]

    def __str__(self) -> str:
        return f"Recognition through {self.through_date} ({self.status})"


class ProductRevenueRule(models.Model):
    """How a product's one-time deliverables are recognised: when invoiced (the default: set-up done at
    sale) or when delivered or a milestone is reached (an operator records the day)."""

    class OneTime(models.TextChoices):
        ON_INVOICE = "on_invoice", "When invoiced"
        ON_DELIVERY = "on_delivery", "When delivered (recorded by an operator)"

    product = models.OneToOneField(Product, on_delete=models.PROTECT, related_name="revenue_rule")
    one_time = models.CharField(max_length=12, choices=OneTime.choices, default=OneTime.ON_INVOICE)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return f"{self.product.code}: one-time {self.get_one_time_display().lower()}"
