"""API test fixtures: real keys created through the model, clients that send them."""

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from billing.api.models import APIKey, hash_key
from tests.factories import BillingEntityFactory


@dataclass
class Key:
    model: APIKey
    raw: str


def make_key(*, scope: str = APIKey.Scope.WRITE, name: str = "tests", **fields) -> Key:
    raw, prefix = APIKey.generate()
    api_key = APIKey.objects.create(name=name, prefix=prefix, hashed_key=hash_key(raw), scope=scope, **fields)
    return Key(api_key, raw)


def client_for(key: Key | None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key.raw}")
    return client


@pytest.fixture
def write_key(db) -> Key:
    return make_key()


@pytest.fixture
def read_key(db) -> Key:
    return make_key(scope=APIKey.Scope.READ, name="warehouse")


@pytest.fixture
def api(write_key) -> APIClient:
    return client_for(write_key)


@pytest.fixture
def read_api(read_key) -> APIClient:
    return client_for(read_key)


@pytest.fixture
def entity(db):
    return BillingEntityFactory(code="acme-us", default_currency="USD", timezone="America/New_York", country="US")


def error_of(response) -> dict:
    """The error body, checked for the API's one error shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def today_utc() -> datetime:
    return timezone.now().astimezone(UTC)
