"""Billing entities (the seller's legal entities), customers, their hierarchy and contacts."""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django_countries.fields import CountryField
from djmoney.models.fields import CurrencyField
from simple_history.models import HistoricalRecords
from timezone_field import TimeZoneField

from billing.common import PostalAddress, TimestampedModel

code_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
    "Use letters, digits, '_', '-', '.' or ':' and start with a letter or digit.",
)
prefix_validator = RegexValidator(r"^[A-Z0-9-]{1,12}$", "Use 1 to 12 upper-case letters, digits or '-'.")


class BillingEntity(PostalAddress, TimestampedModel):
    """A legal entity of the seller: it issues invoices under its own name, series and currency."""

    code = models.CharField(max_length=50, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    legal_name = models.CharField(max_length=200)
    country = CountryField()
    tax_id = models.CharField("tax registration", max_length=50, blank=True)
    email = models.EmailField(blank=True)
    default_currency = CurrencyField(max_length=3)
    timezone = TimeZoneField(default="UTC", use_pytz=False)
    invoice_prefix = models.CharField(max_length=12, validators=[prefix_validator])
    credit_note_prefix = models.CharField(max_length=12, validators=[prefix_validator])
    default_payment_terms_days = models.PositiveSmallIntegerField(default=30)
    invoice_grace_days = models.PositiveSmallIntegerField(
        default=0, help_text="Days a cycle invoice stays a draft for review before it is finalized; 0: at once."
    )
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name_plural = "billing entities"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["invoice_prefix"], name="billing_entity_invoice_prefix_unique"),
            models.UniqueConstraint(fields=["credit_note_prefix"], name="billing_entity_credit_prefix_unique"),
            models.CheckConstraint(
                condition=~Q(invoice_prefix=F("credit_note_prefix")),
                name="billing_entity_series_prefixes_differ",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Customer(PostalAddress, TimestampedModel):
    class Kind(models.TextChoices):
        BUSINESS = "business", "Business"
        INDIVIDUAL = "individual", "Individual"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ARCHIVED = "archived", "Archived"

    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="customers")
    external_id = models.CharField(
        max_length=100, unique=True, validators=[code_validator], help_text="The key integrations use."
    )
    name = models.CharField(max_length=200)
    legal_name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.BUSINESS)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    billing_emails = models.JSONField(default=list, blank=True, help_text="Addresses invoices are sent to.")
    country = CountryField()
    tax_id = models.CharField(max_length=50, blank=True, help_text="VAT or other tax identification number.")
    tax_exempt = models.BooleanField(default=False)
    tax_exemption_reason = models.CharField(max_length=200, blank=True)
    currency = CurrencyField(max_length=3)
    timezone = TimeZoneField(default="UTC", use_pytz=False)
    payment_terms_days = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Empty: the billing entity's default."
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    invoice_to_parent = models.BooleanField(
        default=False, help_text="Bill this customer's charges on its parent's consolidated invoice."
    )
    metadata = models.JSONField(default=dict, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["billing_entity", "name"])]
        permissions = [("archive_customer", "Can archive customers")]
        constraints = [
            models.CheckConstraint(condition=~Q(parent=F("id")), name="customer_not_own_parent"),
            models.CheckConstraint(
                condition=Q(invoice_to_parent=False) | Q(parent__isnull=False),
                name="customer_invoice_to_parent_needs_parent",
            ),
            models.CheckConstraint(
                condition=Q(tax_exempt=False) | ~Q(tax_exemption_reason=""),
                name="customer_tax_exemption_has_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"

    @property
    def effective_payment_terms_days(self) -> int:
        if self.payment_terms_days is not None:
            return self.payment_terms_days
        return self.billing_entity.default_payment_terms_days

    @property
    def invoiced_customer(self) -> "Customer":
        """The customer whose invoice carries this customer's charges."""
        return self.parent if self.invoice_to_parent and self.parent else self


class Contact(TimestampedModel):
    class Role(models.TextChoices):
        BILLING = "billing", "Billing"
        PRIMARY = "primary", "Primary"
        TECHNICAL = "technical", "Technical"
        LEGAL = "legal", "Legal"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(max_length=200)
    email = models.EmailField()
    phone = models.CharField(max_length=40, blank=True)
    role = models.CharField(max_length=12, choices=Role.choices, default=Role.BILLING)
    receives_invoices = models.BooleanField(default=True)

    class Meta:
        ordering = ["customer", "name"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "email", "role"], name="contact_unique_per_role")
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"

