"""Admin for meters (through the meter services) and read-only views of usage: events, rejected events,
hourly rollups and deduplication keys. Events are immutable and nothing here writes them."""

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from billing.admin_tools import ReadOnlyAdminMixin
from customers.admin import HistoryAdmin, adopt, changed_values, form_values
from usage.models import EventKey, Meter, UsageHourlyRollup
from usage.services import DEFINING_FIELDS, create_meter, update_meter


@admin.register(Meter)
class MeterAdmin(HistoryAdmin):
    list_display = (
        "code",
        "name",
        "aggregation",
        "field_name",
        "unit",
        "carries_over",
        "rounding",
        "charge_count",
        "is_active",
    )
    list_filter = ("is_active", "aggregation", "carries_over", "rounding")
    search_fields = ("code", "name", "field_name")
    ordering = ("code",)  # explicit: an annotated (grouped) query drops the model's default ordering
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("code", "name", "description", "unit", "is_active")}),
        (
            "Aggregation",
            {
                "fields": (
                    "aggregation",
                    "field_name",
                    "filters",
                    "group_by",
                    "carries_over",
                    "rounding",
                    "rounding_precision",
                )
            },
        ),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(charge_count=Count("charges"))

    @admin.display(description="charges", ordering="charge_count")
    def charge_count(self, meter: Meter) -> int:
        return meter.charge_count

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return self.readonly_fields
        # Events name the meter by code; once a published plan bills from it, its definition is frozen too
        # (the service refuses the change; showing the fields read only says so up front).
        if obj.charges.exclude(plan_version__status="draft").exists():
            return (*self.readonly_fields, "code", *DEFINING_FIELDS)
        return (*self.readonly_fields, "code")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # events and charges refer to meters; deactivate one instead

    def save_model(self, request: HttpRequest, obj: Meter, form: Any, change: bool) -> None:
        if change:
            values = changed_values(form)
            if not values:
                return
            saved = self.call_service(update_meter, Meter.objects.get(pk=obj.pk), actor=self.actor(request), **values)
        else:
            saved = self.call_service(create_meter, actor=self.actor(request), **form_values(form))
        adopt(saved, obj)


class ReadOnlyUsageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Usage rows are written by ingestion only. The tables are large: exact-match search keeps lookups on
    indexes, and the changelist does not count the whole table a second time."""

    show_full_result_count = False
    list_per_page = 50



@admin.register(UsageHourlyRollup)
class UsageHourlyRollupAdmin(ReadOnlyUsageAdmin):
    list_display = ("customer", "meter", "hour", "event_count", "value_sum", "value_max", "latest_timestamp")
    list_filter = ("meter",)
    list_select_related = ("customer", "meter")
    search_fields = ("=customer__external_id", "=meter__code")
    date_hierarchy = "hour"


@admin.register(EventKey)
class EventKeyAdmin(ReadOnlyUsageAdmin):
    list_display = ("transaction_id", "event_timestamp", "received_at")
    search_fields = ("=transaction_id",)
    date_hierarchy = "received_at"


# Events, rejected events and backfills have their own module, next to ingestion.
from usage import events_admin  # noqa: E402, F401
