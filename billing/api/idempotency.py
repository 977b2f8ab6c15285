"""`Idempotency-Key` on API writes: the first response is stored and replayed for every repeat.

A write (POST, PUT, PATCH, DELETE) that carries the header claims the key by inserting its record
*before* the handler runs, in the same transaction as the handler's writes and the stored response; the
unique constraint on (API key, key) makes the insert the lock, so two concurrent requests with one key
can never both run (no check-then-act): the second waits for the first to commit, then replays. Then:

- the same key with the same request (method, path and body) replays the stored status and body, with
  the header `Idempotent-Replayed: true`, and runs nothing;
- the same key with a different request is refused (409 `idempotency_key_reused`);
- the same key while the first request still runs is refused (409 `idempotency_key_in_progress`);
- a response of 5xx, or an unexpected exception, releases the key so that the client can retry.

Keys are scoped to the API key that sent them and expire after RETENTION (purged by a periodic task).
"""

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.request import Request

from billing.api.exceptions import ConflictError
from billing.api.models import APIKey, IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PATH_LENGTH = IdempotencyRecord._meta.get_field("path").max_length


class IdempotencyKeyInProgress(ConflictError):
    default_code = "idempotency_key_in_progress"
    default_detail = (
        "A request with this Idempotency-Key is still in progress; retry once it has finished."
    )


class IdempotencyKeyReused(ConflictError):
    default_code = "idempotency_key_reused"
    default_detail = (
        "This Idempotency-Key was already used for a different request (method, path or body); "
        "use a new key for a new request."
    )


class Replay(Exception):
    """Raised while claiming a key that already has a stored response; carries the replayed response."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__("idempotent replay")
        self.response = response


def key_from(request: Request) -> str | None:
    """The request's Idempotency-Key, validated; None when the request has none."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if not key:
        raise exceptions.ValidationError({HEADER: ["Must not be empty."]})
    if len(key) > MAX_KEY_LENGTH:
        raise exceptions.ValidationError({HEADER: [f"Use at most {MAX_KEY_LENGTH} characters."]})
    if not all(" " <= char <= "~" for char in key):
        raise exceptions.ValidationError({HEADER: ["Use printable ASCII characters only (e.g. a UUID)."]})
    return key


def fingerprint(request: Request) -> str:
    """A digest of what makes two requests 'the same': method, path, query and parsed body."""
    canonical = json.dumps(
        {
            "method": request.method,
            "path": request.path,
            "query": sorted(request.query_params.lists()),
            "body": request.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay_response(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(
        content=bytes(record.response_body or b""),
        status=record.status_code,
        content_type=record.content_type or "application/json",
    )
    response[REPLAY_HEADER] = "true"
    return response


def claim(request: Request, *, now: datetime | None = None) -> IdempotencyRecord | None:
    """Claim the request's key before its handler runs.

    Returns the new (in-progress) record, or None when the request carries no key; raises Replay with
    the stored response, or a 409 when the key is busy or was used for another request.
    """
    if request.method not in METHODS:
        return None
    key = key_from(request)
    api_key = request.auth
    if key is None or not isinstance(api_key, APIKey):
        return None
    digest = fingerprint(request)
    now = now or timezone.now()
    for _attempt in range(3):
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    api_key=api_key,
                    key=key,
                    method=request.method,
                    path=request.path[:_PATH_LENGTH],
                    request_hash=digest,
                )
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if existing is None:
            continue  # purged between our insert and our read: claim it again
        if existing.created_at < now - RETENTION:
            # Expired but not purged yet: a repeat this late is a new request.
            IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        if existing.request_hash != digest:
            raise IdempotencyKeyReused()
        if existing.completed_at is None:
            raise IdempotencyKeyInProgress()
        raise Replay(replay_response(existing))
    raise IdempotencyKeyInProgress()


def complete(record: IdempotencyRecord, response: HttpResponse) -> None:
    """Store the first response; a server error releases the key instead, so the client may retry."""
    if response.status_code >= 500:
        release(record)
        return
    if hasattr(response, "render") and not getattr(response, "is_rendered", True):
        response.render()
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status_code=response.status_code,
        response_body=bytes(response.content),
        content_type=response.get("Content-Type", "")[:100],
        completed_at=timezone.now(),
    )


def release(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, completed_at__isnull=True).delete()


def purge(*, now: datetime, older_than: timedelta = RETENTION) -> int:
    """Delete the records older than the retention period; returns how many went."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=now - older_than).delete()
    return deleted


class IdempotentViewMixin:
    # DRF view mixin: claims the key after authentication, permission and throttle checks, stores the
    # response in finalize_response, and turns a Replay into the stored response. (A comment: the schema
    # generator copies class docstrings of a view's bases into every operation.)

    _idempotency_record: IdempotencyRecord | None = None

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # A write, its key's claim and its stored response commit together or not at all: a process that
        # dies mid-request leaves no half-done write behind and no key stuck "in progress", and a
        # concurrent repeat of the key waits on the claim's unique index, then replays the stored answer.
        if request.method not in METHODS:
            return super().dispatch(request, *args, **kwargs)
        with transaction.atomic():
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self._idempotency_record = claim(request)

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, Replay):
            return exc.response
        try:
            return super().handle_exception(exc)
        except Exception:
            record, self._idempotency_record = self._idempotency_record, None
            if record is not None:
                release(record)
            raise

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        record, self._idempotency_record = self._idempotency_record, None
        if record is not None:
            complete(record, response)
        return response
