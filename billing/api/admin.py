"""API keys in the admin: the raw key is shown once, on the page that answers its creation, and never again
(only its SHA-256 is stored); keys are revoked, not deleted, so the audit trail keeps their name."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from billing.api.models import APIKey, hash_key

_RAW_KEY_ATTRIBUTE = "_accrual_new_api_key"


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scope", "state", "created_by", "created_at", "last_used_at", "expires_at")
    list_filter = ("scope", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix")
    fields = ("name", "scope", "expires_at", "prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    @admin.display(description="state")
    def state(self, obj: APIKey) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        if obj.expires_at is not None and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None) -> tuple[str, ...]:
        if obj is not None and obj.revoked_at is not None:
            return self.fields  # a revoked key is history
        return self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: APIKey | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("api.revoke_apikey")

    def save_model(self, request: HttpRequest, obj: APIKey, form, change: bool) -> None:
        if not change:
            raw_key, prefix = APIKey.generate()
            while APIKey.objects.filter(prefix=prefix).exists():  # 32 random bits: a clash is rare, not impossible
                raw_key, prefix = APIKey.generate()
            obj.prefix = prefix
            obj.hashed_key = hash_key(raw_key)
            obj.created_by = request.user
            # Kept on the request only, for the response to this very POST; never stored or put in a message.
            setattr(request, _RAW_KEY_ATTRIBUTE, raw_key)
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: APIKey, post_url_continue: str | None = None) -> HttpResponse:
        raw_key = getattr(request, _RAW_KEY_ATTRIBUTE, None)
        if raw_key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "API key created",
            "api_key": obj,
            "raw_key": raw_key,
        }
        response = TemplateResponse(request, "admin/api/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(permissions=["revoke"], description="Revoke the selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} API key(s); they stop working immediately.", messages.SUCCESS)
