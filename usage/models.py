"""Meters: what usage is measured and how a period's events reduce to one billable quantity."""

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
