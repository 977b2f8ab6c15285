"""POST /api/v1/events and /api/v1/events/batch: the ingestion hot path.

Plain Django views with orjson: no DRF request parsing, serializers or per-row ORM saves on this path.
They authenticate with the same API keys as the rest of the API (a write-scope key is required), answer
every failure in the API's error shape, and hand the parsed events to usage.ingestion.ingest_events.

The DRF classes at the bottom exist for the OpenAPI schema only: their dispatch goes straight to the
plain views, so drf-spectacular documents the endpoints that really run.

Not applied here: the API's per-key request throttle (a batch of 1,000 events is one request, and a
metering client may legitimately send hundreds of single events a second); deduplication by
transaction_id already makes every retry safe.
"""

import hashlib
import time
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.views import APIView

from billing.api import idempotency
from billing.api.authentication import KEYWORD, APIKeyAuthentication
from billing.api.exceptions import error_body
from billing.api.models import APIKey
from usage.ingestion import ACCEPTED, DUPLICATE, REJECTED, EventResult, ingest_events, parse_json
from usage.models import EventSource, RejectedEvent

MAX_BATCH_EVENTS = 5000
MAX_BATCH_BYTES = 10 * 1024 * 1024
MAX_SINGLE_BYTES = 1024 * 1024
JSON = "application/json"


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, fields: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = _json(status, error_body(code, message, fields), headers)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type=JSON)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# Keys that authenticated in the last few seconds, by a digest of the header: a metering client sends
# hundreds of requests a second, and a database round trip per request is a large part of a single event's
# latency. A revoked or expired key is refused within KEY_CACHE_SECONDS (expiry is re-checked every time).
KEY_CACHE_SECONDS = 5.0
_recent_keys: dict[str, tuple[float, APIKey]] = {}


def _authenticate(request: HttpRequest) -> APIKey:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    digest = hashlib.sha256(header.encode("utf-8", "surrogatepass")).hexdigest() if header else ""
    cached = _recent_keys.get(digest) if digest else None
    if cached is not None and cached[0] > time.monotonic() and cached[1].is_usable:
        api_key = cached[1]
    else:
        try:
            found = APIKeyAuthentication().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            raise _Refusal(401, "authentication_failed", str(exc.detail),
                           headers={"WWW-Authenticate": KEYWORD}) from None
        if found is None:
            raise _Refusal(401, "not_authenticated", "Authentication credentials were not provided.",
                           headers={"WWW-Authenticate": KEYWORD})
        api_key = found[1]
        if len(_recent_keys) > 1000:
            _recent_keys.clear()
        _recent_keys[digest] = (time.monotonic() + KEY_CACHE_SECONDS, api_key)
    if api_key.scope != APIKey.Scope.WRITE:
        raise _Refusal(403, "permission_denied", "This API key may only read.")
    return api_key


def _read_json(request: HttpRequest, limit: int) -> Any:
    if request.content_type != JSON or request.content_params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise _Refusal(415, "unsupported_media_type",
                       f"Send the events as {JSON} (UTF-8); got {request.content_type or 'no content type'!r}.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Refusal(400, "parse_error", "The Content-Length header is not a number.") from None
    if declared > limit:
        raise _Refusal(413, "request_too_large", f"The request body is larger than {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise _Refusal(413, "request_too_large", f"The request body is larger than {limit} bytes.")
    if not body.strip():
        raise _Refusal(400, "parse_error", "The request body is empty; send a JSON document.")
    try:
        return parse_json(body)
    except ValueError as exc:
        raise _Refusal(400, "parse_error", f"JSON parse error - {exc}") from None


class _Request:
    """What billing.api.idempotency reads from a request, for a plain Django view."""

    def __init__(self, request: HttpRequest, api_key: APIKey, data: Any) -> None:
        self.method = request.method
        self.path = request.path
        self.headers = request.headers
        self.query_params = request.GET
        self.auth = api_key
        self.data = data


def _run(request: HttpRequest, *, limit: int, handle: Any) -> HttpResponse:
    if request.method != "POST":
        return _json(405, error_body("method_not_allowed", f'Method "{request.method}" not allowed.'),
                     {"Allow": "POST"})
    record = None
    try:
        api_key = _authenticate(request)
        data = _read_json(request, limit)
        if request.headers.get(idempotency.HEADER) is not None:
            try:
                record = idempotency.claim(_Request(request, api_key, data))
            except idempotency.Replay as replay:
                return replay.response
            except exceptions.APIException as exc:
                fields = ({str(k): [str(m) for m in v] for k, v in exc.detail.items()}
                          if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict) else None)
                code = "validation_error" if fields else str(exc.get_codes())
                raise _Refusal(exc.status_code, code, str(exc.detail if not fields else "The request has invalid "
                               "fields."), fields) from None
        response = handle(data)
    except _Refusal as refusal:
        response = refusal.response
    except Exception:
        if record is not None:
            idempotency.release(record)
        raise
    if record is not None:
        idempotency.complete(record, response)
    return response


def _single(data: Any) -> HttpResponse:
    if not isinstance(data, dict):
        raise _Refusal(400, "validation_error", "The body must be one event, a JSON object.",
                       {"non_field_errors": ["Expected a JSON object; send lists to /api/v1/events/batch."]})
    (result,) = ingest_events([data], source=EventSource.API, now=timezone.now())
    body = result.as_dict()
    if result.status == ACCEPTED:
        return _json(201, body)
    if result.status == DUPLICATE:
        return _json(200, body)
    # Kept in the rejected-events store; the error block lets generic clients read it like any 4xx.
    body["error"] = error_body(result.reason_code or "rejected", result.reason or "Rejected.",
                               {result.field or "non_field_errors": [result.reason or ""]})["error"]
    return _json(422, body)


def _batch(data: Any) -> HttpResponse:
    if not isinstance(data, dict) or "events" not in data:
        raise _Refusal(400, "validation_error", "The body must be a JSON object {\"events\": [...]}.",
                       {"events": ["This field is required."]})
    extra = sorted(set(data) - {"events"})
    if extra:
        raise _Refusal(400, "validation_error", "The request has invalid fields.",
                       {name[:100]: ["Unknown field; the body is {\"events\": [...]}."] for name in extra[:10]})
    events = data["events"]
    if not isinstance(events, list):
        raise _Refusal(400, "validation_error", "The request has invalid fields.", {"events": ["Must be a list."]})
    if len(events) > MAX_BATCH_EVENTS:
        raise _Refusal(400, "validation_error", "The request has invalid fields.",
                       {"events": [f"At most {MAX_BATCH_EVENTS} events per request; got {len(events)}."]})
    results = ingest_events(events, source=EventSource.API, now=timezone.now())
    return _json(200, _summary(results))


def _summary(results: list[EventResult]) -> dict[str, Any]:
    counts = {ACCEPTED: 0, DUPLICATE: 0, REJECTED: 0}
    answers = []
    for transaction_id, status, reason_code, reason, _field in results:
        counts[status] += 1
        answers.append({"transaction_id": transaction_id, "status": status, "reason_code": reason_code,
                        "reason": reason})
    return {
        "accepted": counts[ACCEPTED],
        "duplicates": counts[DUPLICATE],
        "rejected": counts[REJECTED],
        "results": answers,
    }


@csrf_exempt
def ingest_one(request: HttpRequest) -> HttpResponse:
    return _run(request, limit=MAX_SINGLE_BYTES, handle=_single)


@csrf_exempt
def ingest_batch(request: HttpRequest) -> HttpResponse:
    return _run(request, limit=MAX_BATCH_BYTES, handle=_batch)


# ------------------------------------------------------------------------- OpenAPI description only


class EventSerializer(serializers.Serializer):
    transaction_id = serializers.CharField(
        max_length=255, help_text="Your unique id for this event: it is counted once, ever, whatever its timestamp."
    )
    customer_external_id = serializers.CharField(max_length=100, help_text="The customer's external_id.")
    meter_code = serializers.CharField(max_length=100, help_text="The meter's code.")
    timestamp = serializers.CharField(
        required=False,
        help_text="When the usage happened: ISO 8601 with a timezone, or epoch seconds (a number). Default: now. "
        "At most 5 minutes in the future, not before 2000.",
    )
    properties = serializers.DictField(
        required=False,
        help_text="At most 50 keys and 10 KB. The meter's numeric property (sum, max, latest, weighted sum) is a "
        "number or a numeric string with at most 12 decimals and 26 integer digits; send long numbers as strings.",
    )


class EventResultSerializer(serializers.Serializer):
    transaction_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=[ACCEPTED, DUPLICATE, REJECTED])
    reason_code = serializers.ChoiceField(
        choices=RejectedEvent.Reason.values,
        allow_null=True,
        help_text="Why the event was rejected (null unless rejected).",
    )
    reason = serializers.CharField(allow_null=True, help_text="A human explanation naming the field.")


class RejectedEventResultSerializer(EventResultSerializer):
    error = serializers.DictField(help_text="The same rejection in the API's error shape.")


class BatchRequestSerializer(serializers.Serializer):
    events = EventSerializer(many=True, help_text=f"1 to {MAX_BATCH_EVENTS} events; at most 10 MB in all.")


class BatchResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = EventResultSerializer(many=True, help_text="One per event, in the order sent.")


_EXAMPLE_EVENT = {
    "transaction_id": "evt_01HQ3Z8K7M",
    "customer_external_id": "acme",
    "meter_code": "api_calls",
    "timestamp": "2024-01-15T17:00:00Z",
    "properties": {"region": "eu", "tokens": 1200},
}


class EventView(APIView):
    """Schema shell for POST /api/v1/events; requests are served by the plain view `ingest_one`."""

    @extend_schema(
        operation_id="events_create",
        summary="Send one usage event",
        description=(
            "201 when the event is accepted. A repeat of an already counted transaction_id answers **200** with "
            "status `duplicate` and the same body shape, and is never counted twice. An event that cannot be "
            "accepted answers 422 with its reason; it is kept in the rejected-events store and can be "
            "re-processed once the cause is fixed."
        ),
        tags=["events"],
        request=EventSerializer,
        responses={
            201: EventResultSerializer,
            422: OpenApiResponse(RejectedEventResultSerializer, description="Rejected (and kept for re-processing)."),
        },
        examples=[OpenApiExample("An API call", value=_EXAMPLE_EVENT, request_only=True)],
    )
    def post(self, request: Any) -> Any:
        # The documented operation; dispatch below sends every request to the fast view before DRF runs.
        return ingest_one(getattr(request, "_request", request))

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return ingest_one(request)


class EventBatchView(APIView):
    """Schema shell for POST /api/v1/events/batch; requests are served by the plain view `ingest_batch`."""

    @extend_schema(
        operation_id="events_batch_create",
        summary="Send a batch of usage events",
        description=(
            f"Up to {MAX_BATCH_EVENTS} events and 10 MB per request. Each event is answered in order: accepted, "
            "duplicate (its transaction_id was already counted, in this batch or before) or rejected with a "
            "reason. One bad event never affects the others, and a batch retried after a timeout is always "
            "safe: what was stored the first time comes back as duplicates."
        ),
        tags=["events"],
        request=BatchRequestSerializer,
        responses={200: BatchResponseSerializer},
    )
    def post(self, request: Any) -> Any:
        # The documented operation; dispatch below sends every request to the fast view before DRF runs.
        return ingest_batch(getattr(request, "_request", request))

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return ingest_batch(request)
