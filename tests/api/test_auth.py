"""API keys: every failure is a 401 in the error shape; read-only keys cannot write; usage is recorded."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from billing.api.models import APIKey
from billing.api.throttling import APIKeyRateThrottle
from customers.models import Customer
from tests.api.conftest import client_for, error_of, make_key

pytestmark = pytest.mark.django_db

NEW_PRODUCT = {"code": "analytics", "name": "Analytics"}


def test_missing_key_is_401_with_the_scheme_named():
    response = client_for(None).get("/api/v1/customers")
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(
    "header",
    ["Bearer abc", "Api-Key", "Api-Key ", "api-key acc_00000000_nope", "Api-Key acc_00000000_unknown"],
)
def test_malformed_or_unknown_key_is_401(header):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/customers")
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"


def test_revoked_key_is_refused():
    key = make_key(revoked_at=timezone.now() - timedelta(seconds=1))
    response = client_for(key).get("/api/v1/customers")
    assert response.status_code == 401
    assert "revoked or expired" in error_of(response)["message"]


def test_expired_key_is_refused_and_a_future_expiry_is_not():
    expired = make_key(expires_at=timezone.now() - timedelta(minutes=1))
    assert client_for(expired).get("/api/v1/customers").status_code == 401
    valid = make_key(expires_at=timezone.now() + timedelta(days=1))
    assert client_for(valid).get("/api/v1/customers").status_code == 200


def test_read_scope_key_reads_but_cannot_write(read_api, entity):
    assert read_api.get("/api/v1/billing-entities/acme-us").status_code == 200
    response = read_api.post("/api/v1/products", NEW_PRODUCT, format="json")
    assert response.status_code == 403
    assert error_of(response)["code"] == "permission_denied"
    assert read_api.patch("/api/v1/billing-entities/acme-us", {"name": "X"}, format="json").status_code == 403
    payload = {"external_id": "c1", "billing_entity": "acme-us", "name": "C", "country": "US"}
    assert read_api.post("/api/v1/customers", payload, format="json").status_code == 403
    assert not Customer.objects.exists()


def test_write_scope_key_writes(api):
    response = api.post("/api/v1/products", NEW_PRODUCT, format="json")
    assert response.status_code == 201, response.json()


def test_last_used_at_is_recorded_at_minute_resolution(write_key, api):
    assert write_key.model.last_used_at is None
    before = timezone.now()
    assert api.get("/api/v1/products").status_code == 200
    write_key.model.refresh_from_db()
    first = write_key.model.last_used_at
    assert first is not None and first >= before
    # Within the resolution the row is not rewritten on every request.
    assert api.get("/api/v1/products").status_code == 200
    write_key.model.refresh_from_db()
    assert write_key.model.last_used_at == first
    APIKey.objects.filter(pk=write_key.model.pk).update(last_used_at=first - timedelta(minutes=5))
    assert api.get("/api/v1/products").status_code == 200
    write_key.model.refresh_from_db()
    assert write_key.model.last_used_at > first - timedelta(minutes=5)


def test_throttled_key_gets_429_in_the_error_shape(api, monkeypatch):
    cache.clear()
    monkeypatch.setattr(APIKeyRateThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    assert api.get("/api/v1/products").status_code == 200
    assert api.get("/api/v1/products").status_code == 200
    response = api.get("/api/v1/products")
    assert response.status_code == 429
    assert error_of(response)["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
    # The budget is per key: another key is not throttled.
    assert client_for(make_key(name="other")).get("/api/v1/products").status_code == 200
    cache.clear()
