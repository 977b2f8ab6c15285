"""API keys (stored hashed, revocable) and the stored responses behind Idempotency-Key replays."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

KEY_PREFIX_LENGTH = 8


def hash_key(raw_key: str) -> str:
    # The key is 256 random bits, so a fast unsalted hash is safe and lets a lookup hit an index.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class APIKey(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read only"
        WRITE = "write", "Read and write"

    name = models.CharField(max_length=100, help_text="Which system uses this key, e.g. 'CRM sync'.")
    prefix = models.CharField(max_length=KEY_PREFIX_LENGTH, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.WRITE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        permissions = [("revoke_apikey", "Can revoke API keys")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @staticmethod
    def generate() -> tuple[str, str]:
        """A new raw key and its public prefix; the raw key is shown once and never stored."""
        prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
        return f"acc_{prefix}_{secrets.token_urlsafe(32)}", prefix


class IdempotencyRecord(models.Model):
    """The first response to a POST with an Idempotency-Key, replayed for every repeat of that key."""

    api_key = models.ForeignKey(APIKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_unique_per_api_key"),
            models.CheckConstraint(
                condition=Q(completed_at__isnull=True) | Q(status_code__isnull=False),
                name="idempotency_completed_has_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} {self.method} {self.path}"
