"""Meters: what usage is measured and how a period's events reduce to one billable quantity."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from billing.common import TimestampedModel
from customers.models import code_validator


class Meter(TimestampedModel):
    class Aggregation(models.TextChoices):
        COUNT = "count", "Count of events"
        SUM = "sum", "Sum of a property"
        MAX = "max", "Maximum of a property"
        UNIQUE_COUNT = "unique_count", "Count of distinct values"
        LATEST = "latest", "Latest value in the period"
        WEIGHTED_SUM = "weighted_sum", "Time-weighted sum"

    class Rounding(models.TextChoices):
        NONE = "none", "No rounding"
        HALF_UP = "half_up", "Round half up"
        UP = "up", "Round up"
        DOWN = "down", "Round down"

    code = models.CharField(max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    unit = models.CharField(max_length=50, blank=True, help_text="Shown on invoices, e.g. 'API calls' or 'GB'.")
    aggregation = models.CharField(max_length=20, choices=Aggregation.choices)
    field_name = models.CharField(
        max_length=100, blank=True, help_text="The event property aggregated (not used by count)."
    )
    filters = models.JSONField(
        default=dict, blank=True, help_text='Only events whose properties match: {"region": ["eu", "us"]}.'
    )
    group_by = models.JSONField(default=list, blank=True, help_text='Property keys, e.g. ["region"].')
    carries_over = models.BooleanField(
        default=False, help_text="The value carries over between periods (seats, storage)."
    )
    rounding = models.CharField(max_length=10, choices=Rounding.choices, default=Rounding.NONE)
    rounding_precision = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(aggregation="count") | ~Q(field_name=""), name="meter_field_required_unless_count"
            ),
            models.CheckConstraint(
                condition=Q(carries_over=False) | Q(aggregation__in=["latest", "weighted_sum", "max"]),
                name="meter_carry_over_only_for_levels",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class EventSource(models.TextChoices):
    API = "api", "API"
    CSV = "csv", "CSV backfill"
    REPROCESS = "reprocess", "Re-processed rejection"


class UsageEvent(models.Model):
    """One accepted usage event. Immutable: the application never updates or deletes a row.

    On PostgreSQL the table is partitioned by month of `timestamp` (usage.partitions); its physical primary
    key is (id, timestamp), which Django does not need to know about. The customer and meter have no
    database foreign key here: every event's (customer, meter) pair is upserted into UsageHourlyRollup in
    the same transaction, whose foreign keys prove both exist, so the per-row checks would be paid twice.
    """

    id = models.BigAutoField(primary_key=True)
    transaction_id = models.CharField(max_length=255)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="usage_events", db_constraint=False,
        db_index=False,
    )
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="events", db_constraint=False,
                              db_index=False)
    timestamp = models.DateTimeField(help_text="When the usage happened (UTC).")
    properties = models.JSONField(default=dict, blank=True)
    value = models.DecimalField(
        max_digits=38, decimal_places=12, null=True, blank=True,
        help_text="The meter's numeric property, validated at ingestion (empty for count and unique count).",
    )
    received_at = models.DateTimeField()
    source = models.CharField(max_length=12, choices=EventSource.choices, default=EventSource.API)

    class Meta:
        ordering = ["-timestamp"]
        indexes = [models.Index(fields=["customer", "meter", "timestamp"], name="usage_event_cust_meter_ts")]

    def __str__(self) -> str:
        return self.transaction_id


class EventKey(models.Model):
    """Global deduplication: a transaction_id is counted once, ever, whatever timestamp a repeat carries."""

    transaction_id = models.CharField(max_length=255, primary_key=True)
    event_timestamp = models.DateTimeField()
    received_at = models.DateTimeField()

    class Meta:
        verbose_name = "event key"

    def __str__(self) -> str:
        return self.transaction_id


class RejectedEvent(models.Model):
    """An event that could not be accepted, kept with what the client sent and why, until re-processed."""

    class Reason(models.TextChoices):
        UNKNOWN_CUSTOMER = "unknown_customer", "Unknown customer"
        UNKNOWN_METER = "unknown_meter", "Unknown meter"
        INVALID_VALUE = "invalid_value", "Invalid value"
        FUTURE_TIMESTAMP = "future_timestamp", "Timestamp in the future"
        INVALID_TIMESTAMP = "invalid_timestamp", "Invalid timestamp"
        MALFORMED = "malformed", "Malformed event"
        MISSING_FIELD = "missing_field", "Missing field"
        TOO_LARGE = "too_large", "Too large"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        REPROCESSED = "reprocessed", "Re-processed (accepted)"
        DUPLICATE = "duplicate", "Re-processed (already counted)"
        DISCARDED = "discarded", "Discarded"

    transaction_id = models.CharField(max_length=255, blank=True, db_index=True)
    external_customer_id = models.CharField(max_length=255, blank=True)
    meter_code = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(help_text="Exactly what the client sent for this event.")
    reason_code = models.CharField(max_length=20, choices=Reason.choices)
    reason = models.TextField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    attempts = models.PositiveIntegerField(default=1)
    source = models.CharField(max_length=12, choices=EventSource.choices, default=EventSource.API)
    received_at = models.DateTimeField(db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["status", "reason_code"], name="usage_rejected_status_reason")]
        permissions = [("reprocess_rejectedevent", "Can re-process rejected events")]

    def __str__(self) -> str:
        return f"{self.transaction_id or '(no transaction id)'}: {self.reason_code}"


class UsageHourlyRollup(models.Model):
    """Per customer, meter and UTC hour: the unfiltered totals of the events, kept current in the same
    transaction as the event insert. `latest_*` is the event with the greatest (timestamp, id)."""

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="usage_rollups", db_index=False
    )
    # No index of its own: one more index to maintain on every upsert, for a rare meter deletion check.
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="rollups", db_index=False)
    hour = models.DateTimeField(help_text="The UTC hour, truncated.")
    event_count = models.BigIntegerField(default=0)
    # Wider than an event's value: a sum of many 26-digit values must never overflow and fail a batch.
    value_sum = models.DecimalField(max_digits=50, decimal_places=12, default=0)
    value_max = models.DecimalField(max_digits=38, decimal_places=12, null=True, blank=True)
    latest_timestamp = models.DateTimeField(null=True, blank=True)
    latest_value = models.DecimalField(max_digits=38, decimal_places=12, null=True, blank=True)
    latest_event_id = models.BigIntegerField(null=True, blank=True, help_text="Breaks ties between equal timestamps.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "meter", "hour"], name="usage_rollup_unique_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}/{self.meter_id} {self.hour:%Y-%m-%d %H:00}"


class UsageBackfill(models.Model):
    """A usage CSV uploaded in the admin, ingested by a Celery task (small files at once), with its summary."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    file = models.FileField(upload_to="usage-backfills/%Y/%m/")
    original_name = models.CharField(max_length=255, blank=True)
    dry_run = models.BooleanField(default=False, help_text="Validate and count only; store nothing.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    rows = models.BigIntegerField(default=0)
    accepted = models.BigIntegerField(default=0)
    duplicates = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    rejected_by_reason = models.JSONField(default=dict, blank=True)
    first_rejections = models.TextField(blank=True, help_text="Where to look: the first rejected rows by line.")
    error = models.TextField(blank=True, help_text="Why the file could not be read, if it could not.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "usage backfill"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.original_name or self.file.name} ({self.get_status_display()})"
