"""Admin for the event store: accepted events (read only), rejected events (re-process, discard) and CSV
backfills uploaded from the browser.

usage/admin.py imports this module (at its end) to register them; these registrations replace any
earlier plain read-only ones for the same models.
"""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from billing.admin_tools import ReadOnlyAdminMixin
from usage import ingestion
from usage.models import EventKey, RejectedEvent, UsageBackfill, UsageEvent

# Files up to this size are ingested during the upload request; larger ones by a Celery worker.
INLINE_BACKFILL_BYTES = 2 * 1024 * 1024


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    pass


def _pretty_json(value: Any) -> str:
    return format_html("<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


def _register(model: type, model_admin: type) -> type:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
    return model_admin


class UsageEventAdmin(ReadOnlyAdmin):
    """Events are immutable: listed and inspected, never edited or deleted here."""

    list_display = ("transaction_id", "customer", "meter", "timestamp", "value", "source", "received_at")
    list_filter = ("source", "meter")
    list_select_related = ("customer", "meter")
    # The newest first by id: the primary-key index of each partition serves it without sorting the table.
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False
    search_fields = ("=transaction_id",)
    search_help_text = "An exact transaction_id, or a customer's external id."
    fields = ("transaction_id", "customer", "meter", "timestamp", "value", "properties_display", "source",
              "received_at")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # The key knows the event's time: that prunes the search to one partition.
        key = EventKey.objects.filter(transaction_id=term).first()
        if key is not None:
            return queryset.filter(transaction_id=term, timestamp=key.event_timestamp), False
        return queryset.filter(customer__external_id=term), False

    @admin.display(description="properties")
    def properties_display(self, event: UsageEvent) -> str:
        return _pretty_json(event.properties)


class RejectedEventAdmin(admin.ModelAdmin):
    """What could not be accepted, with what the client sent: re-process once the cause is fixed (for
    example after creating the customer), or discard. Nothing is deleted: a discarded event stays listed."""

    list_display = ("received_at", "transaction_id", "external_customer_id", "meter_code", "reason_code",
                    "short_reason", "status", "attempts", "source")
    list_filter = ("status", "reason_code", "source")
    date_hierarchy = "received_at"
    search_fields = ("=transaction_id", "=external_customer_id", "=meter_code")
    search_help_text = "An exact transaction_id, customer external id or meter code."
    ordering = ("-received_at", "-id")
    list_per_page = 100
    actions = ("reprocess", "discard")
    fields = ("transaction_id", "external_customer_id", "meter_code", "reason_code", "reason", "status", "attempts",
              "source", "received_at", "resolved_at", "payload_display")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("usage.reprocess_rejectedevent")

    @admin.display(description="reason")
    def short_reason(self, rejected: RejectedEvent) -> str:
        return rejected.reason if len(rejected.reason) <= 90 else rejected.reason[:89] + "…"

    @admin.display(description="payload (as sent)")
    def payload_display(self, rejected: RejectedEvent) -> str:
        return _pretty_json(rejected.payload)

    @admin.action(description="Re-process the selected rejected events", permissions=["reprocess"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet) -> None:
        counts = ingestion.reprocess_rejected(queryset.values_list("pk", flat=True), now=timezone.now())
        self.message_user(
            request,
            f"Re-processed: {counts['reprocessed']} accepted, {counts['duplicate']} already counted (duplicates), "
            f"{counts['rejected']} still rejected (see their new reason), {counts['skipped']} not open.",
            messages.SUCCESS if not counts["rejected"] else messages.WARNING,
        )

    @admin.action(description="Discard the selected rejected events (never count them)", permissions=["reprocess"])
    def discard(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = ingestion.discard_rejected(queryset.values_list("pk", flat=True), now=timezone.now())
        self.message_user(request, f"Discarded {count} rejected event(s); they stay listed for the record.")


class UsageBackfillForm(forms.ModelForm):
    class Meta:
        model = UsageBackfill
        fields = ("file", "dry_run")
        help_texts = {
            "file": "A UTF-8 CSV with the columns transaction_id, customer_external_id, meter_code, timestamp and "
            "either a 'properties' JSON column or 'properties.<name>' columns (see docs/usage.md).",
        }


class UsageBackfillAdmin(admin.ModelAdmin):
    """Upload a usage CSV; small files are ingested at once, large ones by a worker (refresh to follow)."""

    form = UsageBackfillForm
    list_display = ("created_at", "original_name", "dry_run", "status", "rows", "accepted", "duplicates", "rejected",
                    "finished_at")
    list_filter = ("status", "dry_run")
    ordering = ("-created_at",)
    summary_fields = ("original_name", "dry_run", "status", "rows", "accepted", "duplicates", "rejected",
                      "rejected_by_reason_display", "first_rejections", "error", "created_by", "created_at",
                      "started_at", "finished_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("file", "dry_run") if obj is None else self.summary_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else self.summary_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change page is the summary, shown read only.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="rejected by reason")
    def rejected_by_reason_display(self, backfill: UsageBackfill) -> str:
        if not backfill.rejected_by_reason:
            return "—"
        return ", ".join(f"{code}: {count}" for code, count in sorted(backfill.rejected_by_reason.items()))

    def save_model(self, request: HttpRequest, obj: UsageBackfill, form: Any, change: bool) -> None:
        from usage.tasks import run_usage_backfill

        obj.original_name = getattr(form.cleaned_data["file"], "name", "")[:255]
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if obj.file.size <= INLINE_BACKFILL_BYTES:
            ingestion.run_stored_backfill(obj, now=timezone.now())
            obj.refresh_from_db()
            self.message_user(
                request,
                f"{obj.rows} rows: {obj.accepted} accepted, {obj.duplicates} duplicates, {obj.rejected} rejected"
                + (" (dry run: nothing stored)" if obj.dry_run else "") + (f" — {obj.error}" if obj.error else ""),
                messages.ERROR if obj.status == UsageBackfill.Status.FAILED else messages.SUCCESS,
            )
        else:
            transaction.on_commit(lambda: run_usage_backfill.delay(obj.pk))
            self.message_user(request, "The file is large: a worker is ingesting it. Refresh this page to follow.")


_register(UsageEvent, UsageEventAdmin)
_register(RejectedEvent, RejectedEventAdmin)
_register(UsageBackfill, UsageBackfillAdmin)
