"""Dunning: how overdue invoices are chased. A policy (per billing entity, overridable per customer) lists
steps by days relative to the due date; each step runs at most once per invoice (a unique row per invoice
and step), and nothing runs for an invoice once it is paid. Every e-mail sent is logged."""

from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from billing.common import TimestampedModel
from customers.models import BillingEntity, Customer

from .invoices import Invoice


class DunningPolicy(TimestampedModel):
    name = models.CharField(max_length=100)
    billing_entity = models.ForeignKey(BillingEntity, on_delete=models.PROTECT, related_name="dunning_policies")
    is_default = models.BooleanField(
        default=False, help_text="Applies to every customer of the entity without an override."
    )
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["billing_entity", "name"]
        verbose_name_plural = "dunning policies"
        constraints = [
            models.UniqueConstraint(fields=["billing_entity", "name"], name="dunning_policy_name_unique"),
            models.UniqueConstraint(
                fields=["billing_entity"], condition=Q(is_default=True), name="dunning_policy_one_default"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.billing_entity.code})"


class DunningStep(models.Model):
    class Action(models.TextChoices):
        REMINDER = "reminder", "Reminder e-mail"
        RETRY_PAYMENT = "retry_payment", "Retry the payment through the gateway"
        FINAL_NOTICE = "final_notice", "Final notice e-mail"
        SUSPEND = "suspend", "Suspend subscriptions and entitlements"
        MARK_UNCOLLECTIBLE = "mark_uncollectible", "Mark the invoice uncollectible"

    policy = models.ForeignKey(DunningPolicy, on_delete=models.CASCADE, related_name="steps")
    offset_days = models.SmallIntegerField(help_text="Days after the due date (negative: before it).")
    action = models.CharField(max_length=20, choices=Action.choices)
    email_subject = models.CharField(max_length=200, blank=True, help_text="Empty: the template's default.")
    email_body = models.TextField(
        blank=True, help_text="Empty: the default template. Django template syntax; see docs/receivables.md."
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["policy", "offset_days", "id"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "offset_days", "action"], name="dunning_step_unique"),
            models.CheckConstraint(
                condition=Q(offset_days__gte=-90) & Q(offset_days__lte=365), name="dunning_step_offset_range"
            ),
        ]

    def __str__(self) -> str:
        sign = "+" if self.offset_days >= 0 else ""
        return f"D{sign}{self.offset_days}: {self.get_action_display()}"


class CustomerDunningOverride(TimestampedModel):
    """A customer's own policy, or none at all (policy empty: the customer is never dunned)."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="dunning_override")
    policy = models.ForeignKey(DunningPolicy, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=300, blank=True)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return f"{self.customer.external_id}: {self.policy or 'no dunning'}"


class DunningAction(models.Model):
    """A step run for one invoice; the unique (invoice, step) makes each step run once, whatever retries."""

    class Status(models.TextChoices):
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="dunning_actions")
    step = models.ForeignKey(DunningStep, on_delete=models.PROTECT, related_name="runs")
    action = models.CharField(max_length=20, choices=DunningStep.Action.choices)
    offset_days = models.SmallIntegerField()
    scheduled_for = models.DateField(help_text="Due date + offset.")
    status = models.CharField(max_length=8, choices=Status.choices)
    details = models.JSONField(default=dict, blank=True)
    as_of = models.DateTimeField(help_text="The moment the dunning run ran 'as of'.")
    ran_at = models.DateTimeField()

    class Meta:
        ordering = ["invoice", "scheduled_for", "id"]
        constraints = [models.UniqueConstraint(fields=["invoice", "step"], name="dunning_step_once_per_invoice")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} for {self.invoice} ({self.status})"


class DunningSuspension(TimestampedModel):
    """Service suspended for unpaid invoices; resumed (the subscriptions dunning paused) once settled."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="dunning_suspensions")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="+")
    suspended_at = models.DateTimeField()
    resumed_at = models.DateTimeField(null=True, blank=True)
    subscription_ids = models.JSONField(default=list, help_text="The subscriptions dunning paused.")

    class Meta:
        ordering = ["-suspended_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer"], condition=Q(resumed_at__isnull=True), name="dunning_suspension_one_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer.external_id} suspended {self.suspended_at:%Y-%m-%d}"


class EmailMessage(models.Model):
    """Every e-mail Accrual sends, as sent (or the error that stopped it)."""

    class Status(models.TextChoices):
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=40, help_text="e.g. dunning.reminder, credit_note.issued")
    to = models.JSONField(default=list)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    status = models.CharField(max_length=8, choices=Status.choices)
    error = models.TextField(blank=True)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="emails")
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="emails")
    dunning_action = models.ForeignKey(
        DunningAction, null=True, blank=True, on_delete=models.SET_NULL, related_name="emails"
    )
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["-sent_at", "-id"]

    def __str__(self) -> str:
        return f"{self.subject} → {', '.join(self.to)}"
