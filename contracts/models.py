"""Catalog (products, features, plans and their versions, charges, coupons) and contracts/subscriptions.

Dates here are calendar days in the customer's timezone; a date range is [start, end): `end_date` is
the first day no longer served. Timestamps (`*_at`) are UTC.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from djmoney.models.fields import CurrencyField, MoneyField
from simple_history.models import HistoricalRecords

from billing.common import TimestampedModel
from customers.models import Customer, code_validator

PRICE_DIGITS = {"max_digits": 28, "decimal_places": 12}  # unit prices carry up to 12 decimals (DESIGN)
QUANTITY_DIGITS = {"max_digits": 24, "decimal_places": 6}
PERCENT_DIGITS = {"max_digits": 9, "decimal_places": 6}


class Product(TimestampedModel):
    code = models.CharField(max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    tax_code = models.CharField(
        max_length=50, default="saas", help_text="Chooses the tax rate together with the jurisdictions."
    )
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Feature(TimestampedModel):
    class Kind(models.TextChoices):
        SWITCH = "switch", "On / off"
        LIMIT = "limit", "Numeric limit"

    code = models.CharField(max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.SWITCH)
    unit = models.CharField(max_length=50, blank=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


class BillingInterval(models.TextChoices):
    WEEK = "week", "Weekly"
    MONTH = "month", "Monthly"
    QUARTER = "quarter", "Quarterly"
    HALF_YEAR = "half_year", "Half-yearly"
    YEAR = "year", "Yearly"


class BillingTiming(models.TextChoices):
    ADVANCE = "advance", "In advance"
    ARREARS = "arrears", "In arrears"


class Plan(TimestampedModel):
    code = models.CharField(max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="plans")
    currency = CurrencyField(max_length=3)
    interval = models.CharField(max_length=10, choices=BillingInterval.choices, default=BillingInterval.MONTH)
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class PlanVersion(TimestampedModel):
    """The prices of a plan from one point on. Published versions are immutable: edit by a new version."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        ARCHIVED = "archived", "Archived"

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    base_fee = MoneyField(**PRICE_DIGITS, default=Decimal("0"), default_currency="USD")
    base_fee_timing = models.CharField(max_length=8, choices=BillingTiming.choices, default=BillingTiming.ADVANCE)
    trial_days = models.PositiveSmallIntegerField(default=0)
    minimum_commitment = MoneyField(
        **PRICE_DIGITS, null=True, blank=True, default_currency="USD",
        help_text="Minimum spend per billing period; a shortfall is billed as a true-up line.",
    )
    published_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["plan", "-version"]
        permissions = [
            ("publish_planversion", "Can publish plan versions"),
            ("archive_planversion", "Can archive plan versions"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["plan", "version"], name="plan_version_unique"),
            models.CheckConstraint(condition=Q(base_fee__gte=0), name="plan_version_base_fee_not_negative"),
            models.CheckConstraint(
                condition=Q(minimum_commitment__isnull=True) | Q(minimum_commitment__gt=0),
                name="plan_version_minimum_positive",
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(published_at__isnull=False),
                name="plan_version_published_has_date",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.code} v{self.version}"


class Charge(TimestampedModel):
    """A usage price on a plan version: a meter, a charge model and its properties."""

    class Model(models.TextChoices):
        STANDARD = "standard", "Standard (per unit)"
        GRADUATED = "graduated", "Graduated tiers"
        VOLUME = "volume", "Volume tiers"
        PACKAGE = "package", "Package"
        PERCENTAGE = "percentage", "Percentage"
        GRADUATED_PERCENTAGE = "graduated_percentage", "Graduated percentage"

    plan_version = models.ForeignKey(PlanVersion, on_delete=models.CASCADE, related_name="charges")
    # A lazy reference: the catalog names a meter without importing the usage app's code.
    meter = models.ForeignKey("usage.Meter", on_delete=models.PROTECT, related_name="charges")
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.PROTECT, related_name="charges",
        help_text="For revenue and tax; empty: the plan's product.",
    )
    charge_model = models.CharField(max_length=24, choices=Model.choices)
    properties = models.JSONField(default=dict, help_text="The charge model's prices; see the API docs.")
    filters = models.JSONField(default=dict, blank=True, help_text='{"region": ["eu"]} bills only those events.')
    group_by = models.JSONField(default=list, blank=True, help_text="One invoice line per group value.")
    billing_timing = models.CharField(max_length=8, choices=BillingTiming.choices, default=BillingTiming.ARREARS)
    minimum_amount = MoneyField(
        **PRICE_DIGITS, null=True, blank=True, default_currency="USD",
        help_text="Minimum spend per period; a shortfall is billed as a true-up line.",
    )
    display_name = models.CharField(max_length=200, blank=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["plan_version", "position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(minimum_amount__isnull=True) | Q(minimum_amount__gt=0),
                name="charge_minimum_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or f"{self.meter_id} {self.get_charge_model_display()}"


class FixedCharge(TimestampedModel):
    """A fixed price on a plan version: recurring every period (e.g. support) or once (e.g. set-up)."""

    plan_version = models.ForeignKey(PlanVersion, on_delete=models.CASCADE, related_name="fixed_charges")
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    code = models.CharField(max_length=100, validators=[code_validator])
    name = models.CharField(max_length=200)
    amount = MoneyField(**PRICE_DIGITS, default_currency="USD")
    quantity = models.DecimalField(**QUANTITY_DIGITS, default=Decimal("1"))
    billing_timing = models.CharField(max_length=8, choices=BillingTiming.choices, default=BillingTiming.ADVANCE)
    recurring = models.BooleanField(default=True, help_text="Off: billed once, on the first invoice.")
    prorated = models.BooleanField(default=True)

    class Meta:
        ordering = ["plan_version", "code"]
        constraints = [
            models.UniqueConstraint(fields=["plan_version", "code"], name="fixed_charge_code_unique"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="fixed_charge_amount_not_negative"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="fixed_charge_quantity_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class PlanEntitlement(models.Model):
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.CASCADE, related_name="entitlements")
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="+")
    enabled = models.BooleanField(default=True)
    limit = models.DecimalField(**QUANTITY_DIGITS, null=True, blank=True, help_text="Limit features only.")
    per_unit = models.BooleanField(default=False, help_text="Multiply the limit by the subscription's quantity.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan_version", "feature"], name="plan_entitlement_unique"),
            models.CheckConstraint(condition=Q(limit__isnull=True) | Q(limit__gte=0), name="plan_ent_limit_ok"),
        ]

    def __str__(self) -> str:
        return f"{self.feature} on {self.plan_version}"


class Coupon(TimestampedModel):
    class DiscountType(models.TextChoices):
        PERCENTAGE = "percentage", "Percentage"
        FIXED = "fixed", "Fixed amount"

    class Duration(models.TextChoices):
        ONCE = "once", "Once"
        REPEATING = "repeating", "For a number of periods"
        FOREVER = "forever", "Forever"

    code = models.CharField(max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    discount_type = models.CharField(max_length=12, choices=DiscountType.choices)
    percent_off = models.DecimalField(
        **PERCENT_DIGITS, null=True, blank=True,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
    )
    amount_off = MoneyField(**PRICE_DIGITS, null=True, blank=True, default_currency="USD")
    duration = models.CharField(max_length=10, choices=Duration.choices, default=Duration.ONCE)
    duration_periods = models.PositiveSmallIntegerField(null=True, blank=True)
    applies_to_plans = models.ManyToManyField(Plan, blank=True, related_name="coupons")
    applies_to_meters = models.ManyToManyField(
        "usage.Meter", blank=True, related_name="coupons", help_text="Limit to the charges on these meters."
    )
    max_redemptions = models.PositiveIntegerField(null=True, blank=True)
    redeem_by = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    # Explicit not-null tests: a CHECK passes when its condition is NULL.
                    Q(discount_type="percentage", percent_off__isnull=False, percent_off__gt=0, percent_off__lte=100,
                      amount_off__isnull=True)
                    | Q(discount_type="fixed", amount_off__isnull=False, amount_off__gt=0, percent_off__isnull=True)
                ),
                name="coupon_discount_matches_type",
            ),
            models.CheckConstraint(
                condition=(
                    Q(duration="repeating", duration_periods__isnull=False, duration_periods__gt=0)
                    | (~Q(duration="repeating") & Q(duration_periods__isnull=True))
                ),
                name="coupon_periods_only_when_repeating",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class Contract(TimestampedModel):
    """The negotiated agreement with one customer; it holds one or more subscriptions."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        ENDED = "ended", "Ended"
        CANCELED = "canceled", "Canceled"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="contracts")
    reference = models.CharField(max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    currency = CurrencyField(max_length=3)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True, help_text="First day after the term; empty: evergreen.")
    auto_renew = models.BooleanField(default=False)
    renewal_term_months = models.PositiveSmallIntegerField(null=True, blank=True)
    renewal_uplift_percent = models.DecimalField(
        **PERCENT_DIGITS, default=Decimal("0"), help_text="Price increase applied at each renewal."
    )
    signed_at = models.DateField(null=True, blank=True)
    notes = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-start_date", "reference"]
        permissions = [("manage_contract_lifecycle", "Can renew and cancel contracts")]
        constraints = [
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gt=F("start_date")), name="contract_dates_ordered"
            ),
            models.CheckConstraint(
                condition=Q(auto_renew=False) | (Q(renewal_term_months__gt=0) & Q(end_date__isnull=False)),
                name="contract_auto_renew_needs_term",
            ),
            models.CheckConstraint(
                condition=Q(renewal_uplift_percent__gte=0) & Q(renewal_uplift_percent__lte=100),
                name="contract_uplift_range",
            ),
        ]

    def __str__(self) -> str:
        return self.reference


class ContractPrice(TimestampedModel):
    """A negotiated price replacing a plan price within a contract, optionally only between two dates.

    Several rows for the same target with consecutive dates form a ramp.
    """

    class Target(models.TextChoices):
        BASE_FEE = "base_fee", "Base fee"
        CHARGE = "charge", "Usage charge"
        FIXED_CHARGE = "fixed_charge", "Fixed charge"

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="prices")
    target = models.CharField(max_length=12, choices=Target.choices)
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="+")
    charge = models.ForeignKey(Charge, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    fixed_charge = models.ForeignKey(FixedCharge, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    amount = MoneyField(
        **PRICE_DIGITS, null=True, blank=True, default_currency="USD", help_text="Base fee or fixed charge price."
    )
    charge_model = models.CharField(max_length=24, choices=Charge.Model.choices, blank=True)
    properties = models.JSONField(default=dict, blank=True, help_text="Usage charge prices.")
    effective_from = models.DateField(null=True, blank=True, help_text="Empty: from the contract's start.")
    effective_to = models.DateField(null=True, blank=True, help_text="First day no longer at this price.")
    history = HistoricalRecords()

    class Meta:
        ordering = ["contract", "target", "effective_from"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(target="base_fee", charge__isnull=True, fixed_charge__isnull=True, amount__isnull=False,
                      amount__gte=0)
                    | Q(target="fixed_charge", charge__isnull=True, fixed_charge__isnull=False, amount__isnull=False,
                        amount__gte=0)
                    | (
                        Q(target="charge", charge__isnull=False, fixed_charge__isnull=True, amount__isnull=True)
                        & ~Q(charge_model="")
                    )
                ),
                name="contract_price_target_consistent",
            ),
            models.CheckConstraint(
                condition=Q(effective_from__isnull=True) | Q(effective_to__isnull=True)
                | Q(effective_to__gt=F("effective_from")),
                name="contract_price_dates_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contract} {self.get_target_display()} from {self.effective_from or 'start'}"


class ContractCommitment(TimestampedModel):
    class Kind(models.TextChoices):
        MINIMUM_SPEND = "minimum_spend", "Minimum spend (true-up)"
        PREPAID = "prepaid", "Prepaid, drawn down by usage"

    class Period(models.TextChoices):
        BILLING_PERIOD = "billing_period", "Each billing period"
        YEAR = "year", "Each contract year"
        TERM = "term", "The whole term"

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="commitments")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = MoneyField(**PRICE_DIGITS, default_currency="USD")
    period = models.CharField(max_length=16, choices=Period.choices, default=Period.YEAR)
    start_date = models.DateField(null=True, blank=True, help_text="Empty: the contract's start.")
    end_date = models.DateField(null=True, blank=True, help_text="Empty: the contract's end.")
    description = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="commitment_amount_positive"),
            models.CheckConstraint(
                condition=Q(start_date__isnull=True) | Q(end_date__isnull=True) | Q(end_date__gt=F("start_date")),
                name="commitment_dates_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount}"


class ContractEntitlement(models.Model):
    """A negotiated entitlement that replaces the plan's for this contract's subscriptions."""

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="entitlements")
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="+")
    enabled = models.BooleanField(default=True)
    limit = models.DecimalField(**QUANTITY_DIGITS, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contract", "feature"], name="contract_entitlement_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.feature} on {self.contract}"


class Subscription(TimestampedModel):
    """A customer on a plan version with a quantity. `plan_version` and `quantity` are the current ones;
    `phases` keep their history, `changes` every lifecycle action (applied or scheduled)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        TRIALING = "trialing", "Trialing"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CANCELED = "canceled", "Canceled"
        ENDED = "ended", "Ended"

    class Anchor(models.TextChoices):
        CALENDAR = "calendar", "Calendar (1st of the period / week start)"
        ANNIVERSARY = "anniversary", "Anniversary (the start day)"
        DAY_OF_MONTH = "day_of_month", "Bill-cycle day of the month"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    contract = models.ForeignKey(
        Contract, null=True, blank=True, on_delete=models.PROTECT, related_name="subscriptions"
    )
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="subscriptions")
    external_id = models.CharField(max_length=100, unique=True, validators=[code_validator])
    quantity = models.DecimalField(**QUANTITY_DIGITS, default=Decimal("1"))
    status = models.CharField(max_length=10, choices=Status.choices, db_index=True)
    billing_anchor = models.CharField(max_length=14, choices=Anchor.choices, default=Anchor.CALENDAR)
    bill_cycle_day = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(31)]
    )
    start_date = models.DateField()
    trial_end_date = models.DateField(null=True, blank=True, help_text="First day after the trial.")
    end_date = models.DateField(null=True, blank=True, help_text="First day no longer served; empty: open.")
    canceled_at = models.DateTimeField(null=True, blank=True)
    paused_on = models.DateField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-start_date", "external_id"]
        permissions = [
            ("manage_subscription_lifecycle", "Can pause, resume, cancel, renew and change subscriptions"),
        ]
        indexes = [models.Index(fields=["customer", "status"]), models.Index(fields=["status", "end_date"])]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="subscription_quantity_positive"),
            models.CheckConstraint(
                condition=(
                    Q(billing_anchor="day_of_month", bill_cycle_day__isnull=False, bill_cycle_day__gte=1,
                      bill_cycle_day__lte=31)
                    | (~Q(billing_anchor="day_of_month") & Q(bill_cycle_day__isnull=True))
                ),
                name="subscription_cycle_day_only_for_day_anchor",
            ),
            models.CheckConstraint(
                condition=Q(trial_end_date__isnull=True) | Q(trial_end_date__gt=F("start_date")),
                name="subscription_trial_after_start",
            ),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gte=F("start_date")),
                name="subscription_end_after_start",
            ),
            models.CheckConstraint(
                condition=(
                    Q(status="paused", paused_on__isnull=False) | (~Q(status="paused") & Q(paused_on__isnull=True))
                ),
                name="subscription_paused_on_iff_paused",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id


class SubscriptionPhase(models.Model):
    """The plan version and quantity in force over [start_date, end_date): what invoicing prorates."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="phases")
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="+")
    quantity = models.DecimalField(**QUANTITY_DIGITS)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["subscription", "start_date"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "start_date"], name="subscription_phase_start_unique"),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gt=F("start_date")), name="phase_dates_ordered"
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="phase_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.subscription_id}: {self.plan_version} x {self.quantity} from {self.start_date}"


class SubscriptionChange(models.Model):
    """One lifecycle action, applied or scheduled: the audit trail and the queue of future changes."""

    class Action(models.TextChoices):
        CREATE = "create", "Create"
        ACTIVATE = "activate", "Activate"
        END_TRIAL = "end_trial", "End trial"
        CHANGE_PLAN = "change_plan", "Change plan"
        CHANGE_QUANTITY = "change_quantity", "Change quantity"
        PAUSE = "pause", "Pause"
        RESUME = "resume", "Resume"
        CANCEL = "cancel", "Cancel"
        RENEW = "renew", "Renew"
        END = "end", "End"

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        APPLIED = "applied", "Applied"
        REVOKED = "revoked", "Revoked"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="changes")
    action = models.CharField(max_length=16, choices=Action.choices)
    status = models.CharField(max_length=10, choices=Status.choices, db_index=True)
    effective_date = models.DateField()
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10, blank=True)
    from_plan_version = models.ForeignKey(
        PlanVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_plan_version = models.ForeignKey(
        PlanVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    from_quantity = models.DecimalField(**QUANTITY_DIGITS, null=True, blank=True)
    to_quantity = models.DecimalField(**QUANTITY_DIGITS, null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200, blank=True, help_text="User, API key or task.")
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["subscription", "created_at", "id"]
        indexes = [models.Index(fields=["status", "effective_date"])]
        constraints = [
            # At most one pending change of each kind: a second schedule must revoke the first.
            models.UniqueConstraint(
                fields=["subscription", "action"], condition=Q(status="scheduled"),
                name="subscription_one_scheduled_change_per_action",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.subscription_id} on {self.effective_date} ({self.status})"
