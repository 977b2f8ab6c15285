"""POST /api/v1/events and /api/v1/events/batch over HTTP: answers, bad input, auth, the OpenAPI schema."""

import json

import orjson
import pytest
from django.test import Client

from billing.api.models import APIKey
from tests.api.conftest import error_of, make_key
from tests.usage.conftest import event
from usage.models import EventKey, RejectedEvent, UsageEvent

pytestmark = pytest.mark.django_db

ONE = "/api/v1/events"
BATCH = "/api/v1/events/batch"


@pytest.fixture
def key(db):
    return make_key()


@pytest.fixture
def post(key):
    client = Client()

    def send(path: str, body, *, content_type: str = "application/json", auth: str | None = None, **headers):
        data = body if isinstance(body, bytes | str) else orjson.dumps(body)
        return client.post(path, data=data, content_type=content_type,
                           HTTP_AUTHORIZATION=auth if auth is not None else f"Api-Key {key.raw}", **headers)

    return send


# --- answers ------------------------------------------------------------------------------------------------------


def test_single_event_accepted_then_duplicate_then_rejected(metering, post):
    accepted = post(ONE, event("s1", meter="tokens", properties={"tokens": 5}))
    assert accepted.status_code == 201
    assert accepted["Content-Type"] == "application/json"
    assert accepted.json() == {"transaction_id": "s1", "status": "accepted", "reason_code": None, "reason": None}

    again = post(ONE, event("s1", meter="tokens", timestamp="2020-01-01T00:00:00Z", properties={"tokens": 5}))
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"

    rejected = post(ONE, event("s2", customer="nobody"))
    assert rejected.status_code == 422
    body = rejected.json()
    assert (body["status"], body["reason_code"]) == ("rejected", "unknown_customer")
    assert body["error"]["code"] == "unknown_customer"
    assert body["error"]["fields"] == {"customer_external_id": [body["reason"]]}
    assert UsageEvent.objects.count() == 1
    assert RejectedEvent.objects.get().transaction_id == "s2"


def test_batch_answers_each_event_in_order(metering, post):
    events = [
        event("a"),
        event("b", customer="nobody"),
        event("a"),
        event("c", meter="tokens", properties={"tokens": "x"}),
        event("d", meter="peak_gb", properties={"gb": 12.5}),
    ]
    response = post(BATCH, {"events": events})
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 2)
    assert [(r["transaction_id"], r["status"], r["reason_code"]) for r in body["results"]] == [
        ("a", "accepted", None),
        ("b", "rejected", "unknown_customer"),
        ("a", "duplicate", None),
        ("c", "rejected", "invalid_value"),
        ("d", "accepted", None),
    ]
    assert "properties.tokens" in body["results"][3]["reason"]
    assert set(UsageEvent.objects.values_list("transaction_id", flat=True)) == {"a", "d"}
    assert RejectedEvent.objects.count() == 2

    retried = post(BATCH, {"events": events}).json()
    assert [r["status"] for r in retried["results"]] == ["duplicate", "rejected", "duplicate", "rejected", "duplicate"]
    assert UsageEvent.objects.count() == 2


def test_an_empty_batch_is_answered(metering, post):
    assert post(BATCH, {"events": []}).json() == {"accepted": 0, "duplicates": 0, "rejected": 0, "results": []}


def test_absurd_numbers_reject_their_event_only(metering, post):
    head = b'{"customer_external_id": "acme", "meter_code": "tokens", '
    body = (
        b'{"events": ['
        + head + b'"transaction_id": "huge", "properties": {"tokens": 1e400}},'
        + head + b'"transaction_id": "tiny", "properties": {"tokens": 1e-400}},'
        + head + b'"transaction_id": "long", "properties": {"tokens": 123456789012345678901234567.5}},'
        + head + b'"transaction_id": "ok", "properties": {"tokens": 2}}'
        b"]}"
    )
    results = post(BATCH, body).json()["results"]
    assert [(r["status"], r["reason_code"]) for r in results] == [
        ("rejected", "invalid_value"), ("rejected", "invalid_value"), ("rejected", "invalid_value"), ("accepted", None)
    ]
    assert "too large" in results[0]["reason"] and "decimal places" in results[1]["reason"]


def test_hostile_strings_are_rejected_per_event_and_kept(metering, post):
    events = [
        event("<script>alert(1)</script>"),  # printable: a valid (if odd) id, stored as text
        event("tab\there"),
        event("nul", properties={"x": "\u0000"}),
        event("'; DROP TABLE usage_usageevent; --", customer="'; DROP TABLE customers_customer; --"),
        event("x" * 10_000),
        event("rtl", customer="\u202eacme"),
    ]
    results = post(BATCH, {"events": events}).json()["results"]
    assert [(r["status"], r["reason_code"]) for r in results] == [
        ("accepted", None),
        ("rejected", "malformed"),
        ("rejected", "malformed"),
        ("rejected", "unknown_customer"),
        ("rejected", "malformed"),
        ("rejected", "malformed"),
    ]
    assert UsageEvent.objects.get().transaction_id == "<script>alert(1)</script>"
    assert RejectedEvent.objects.count() == 5
    long_id = RejectedEvent.objects.get(reason_code="malformed", transaction_id__startswith="xxx").transaction_id
    assert len(long_id) == 255


# --- bad requests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [ONE, BATCH])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", ""]
)
def test_wrong_content_type_is_415(metering, post, path, content_type):
    response = post(path, b'{"events": []}', content_type=content_type)
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path", [ONE, BATCH])
@pytest.mark.parametrize(
    "body",
    [
        b"   ", b"{", b'{"events": [1, 2', b"\xff\xfe", b'{"events": NaN}', b'{"a": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_invalid_json_is_400(metering, post, path, body):
    response = post(path, body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"
    assert not RejectedEvent.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([event("a")], "events"),  # a bare list
        ({"event": [event("a")]}, "events"),
        ({"events": event("a")}, "events"),
        ({"events": [], "extra": 1}, "extra"),
        ({"events": [event(f"e{i}") for i in range(5001)]}, "events"),
    ],
)
def test_batch_shape_errors_are_400_with_the_field(metering, post, body, field):
    response = post(BATCH, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error" and field in error["fields"]
    assert not UsageEvent.objects.exists()


def test_5000_events_are_accepted(metering, post):
    response = post(BATCH, {"events": [event(f"e{i}") for i in range(5000)]})
    assert response.status_code == 200
    assert response.json()["accepted"] == 5000
    assert UsageEvent.objects.count() == 5000


def test_single_endpoint_wants_one_object(metering, post):
    response = post(ONE, [event("a")])
    assert response.status_code == 400 and error_of(response)["code"] == "validation_error"


def test_oversized_bodies_are_413(metering, post):
    padding = "x" * (10 * 1024 * 1024)
    response = post(BATCH, {"events": [event("big", properties={"p": padding})]})
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    response = post(ONE, event("big", properties={"p": "x" * (1024 * 1024)}))
    assert response.status_code == 413
    assert not RejectedEvent.objects.exists() and not UsageEvent.objects.exists()


def test_an_oversized_event_inside_the_limits_is_rejected_as_too_large(metering, post):
    response = post(ONE, event("big", properties={"p": "x" * 20_000}))
    assert response.status_code == 422 and response.json()["reason_code"] == "too_large"


def test_other_methods_are_405(metering, key):
    response = Client().get(ONE, HTTP_AUTHORIZATION=f"Api-Key {key.raw}")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert error_of(response)["code"] == "method_not_allowed"


# --- authentication -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [ONE, BATCH])
def test_missing_key_is_401(metering, post, path):
    response = post(path, {"events": []}, auth="")
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize("auth", ["Bearer abc", "Api-Key", "Api-Key acc_00000000_unknown"])
def test_bad_key_is_401(metering, post, auth):
    response = post(BATCH, {"events": [event("a")]}, auth=auth)
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"
    assert not UsageEvent.objects.exists()


def test_revoked_key_is_401(metering, post):
    from django.utils import timezone

    revoked = make_key(revoked_at=timezone.now())
    response = post(ONE, event("a"), auth=f"Api-Key {revoked.raw}")
    assert response.status_code == 401 and "revoked" in error_of(response)["message"]


def test_read_only_key_is_403(metering, post):
    reader = make_key(scope=APIKey.Scope.READ)
    for path, body in ((ONE, event("a")), (BATCH, {"events": [event("a")]})):
        response = post(path, body, auth=f"Api-Key {reader.raw}")
        assert response.status_code == 403
        assert error_of(response)["code"] == "permission_denied"
    assert not UsageEvent.objects.exists() and not EventKey.objects.exists()


def test_auth_is_checked_before_the_body(metering, post):
    assert post(BATCH, b"{not json", auth="").status_code == 401


# --- Idempotency-Key ---------------------------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer(metering, post):
    first = post(ONE, event("k1"), HTTP_IDEMPOTENCY_KEY="req-1")
    assert first.status_code == 201
    replay = post(ONE, event("k1"), HTTP_IDEMPOTENCY_KEY="req-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    reused = post(ONE, event("k2"), HTTP_IDEMPOTENCY_KEY="req-1")
    assert reused.status_code == 409 and error_of(reused)["code"] == "idempotency_key_reused"
    assert UsageEvent.objects.count() == 1


# --- OpenAPI ------------------------------------------------------------------------------------------------------


def test_both_endpoints_are_in_the_schema():
    response = Client().get("/api/schema/", {"format": "json"})
    schema = json.loads(response.content)
    one = schema["paths"]["/api/v1/events"]["post"]
    batch = schema["paths"]["/api/v1/events/batch"]["post"]
    assert one["security"] == [{"ApiKeyAuth": []}]
    assert {"201", "422", "400", "401", "403", "413", "415"} <= set(one["responses"])
    assert "200" in batch["responses"]
    request_schema = batch["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "events" in schema["components"]["schemas"][request_schema]["properties"]


def test_a_revoked_key_is_refused_within_seconds(metering, post, key, monkeypatch):
    from django.utils import timezone

    from usage import ingest_views

    assert post(ONE, event("r1")).status_code == 201
    APIKey.objects.filter(pk=key.model.pk).update(revoked_at=timezone.now())
    # Keys are remembered for KEY_CACHE_SECONDS; once that has passed the revocation is seen.
    monkeypatch.setattr(ingest_views.time, "monotonic", lambda: 10**9)
    response = post(ONE, event("r2"))
    assert response.status_code == 401 and "revoked" in error_of(response)["message"]


def test_a_bad_idempotency_key_is_400(metering, post):
    response = post(ONE, event("k"), HTTP_IDEMPOTENCY_KEY="x" * 300)
    assert response.status_code == 400
    assert "Idempotency-Key" in error_of(response)["fields"]
    assert not UsageEvent.objects.exists()
