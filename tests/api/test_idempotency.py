"""Idempotency-Key: the first response is stored and replayed; a different body or a busy key is a 409."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing.api import idempotency
from billing.api.models import IdempotencyRecord
from billing.api.tasks import purge_idempotency_records
from contracts.models import Product
from customers.models import Customer
from tests.api.conftest import client_for, error_of, make_key

pytestmark = pytest.mark.django_db

CUSTOMER = {"external_id": "cus_idem", "billing_entity": "acme-us", "name": "Idem Corp", "country": "US"}


def test_replay_returns_the_same_status_and_body_and_creates_nothing_more(api, entity):
    first = api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    # A client that retries after a timeout, even once the customer changed, gets the first answer.
    Customer.objects.filter(external_id="cus_idem").update(name="Renamed meanwhile")
    second = api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert second.json()["name"] == "Idem Corp"
    assert Customer.objects.count() == 1
    record = IdempotencyRecord.objects.get(key="k-1")
    assert (record.status_code, record.method, record.path) == (201, "POST", "/api/v1/customers")
    assert record.completed_at is not None


def test_same_body_with_other_whitespace_or_key_order_is_the_same_request(api, entity):
    import json

    assert api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    reordered = json.dumps(dict(reversed(list(CUSTOMER.items()))), indent=4)
    again = api.post("/api/v1/customers", reordered, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"


def test_same_key_with_a_different_body_is_409(api, entity):
    assert api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="k-2").status_code == 201
    other = {**CUSTOMER, "external_id": "cus_other"}
    response = api.post("/api/v1/customers", other, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_key_reused"
    assert not Customer.objects.filter(external_id="cus_other").exists()


def test_same_key_on_another_endpoint_is_409(api, entity):
    assert api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="k-3").status_code == 201
    response = api.post("/api/v1/products", {"code": "p", "name": "P"}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")
    assert response.status_code == 409
    assert not Product.objects.exists()


def test_a_key_still_in_progress_is_409(api, write_key, entity):
    # The record a first request inserts before running, not yet completed.
    IdempotencyRecord.objects.create(
        api_key=write_key.model, key="busy", method="POST", path="/api/v1/customers", request_hash="x" * 64
    )
    request_hash_of_retry = None
    response = api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="busy")
    assert response.status_code == 409  # a different hash: reused
    IdempotencyRecord.objects.filter(key="busy").delete()

    first = api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="busy")
    assert first.status_code == 201
    request_hash_of_retry = IdempotencyRecord.objects.get(key="busy").request_hash
    IdempotencyRecord.objects.filter(key="busy").update(completed_at=None, status_code=None, response_body=None)
    response = api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="busy")
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_key_in_progress"
    assert IdempotencyRecord.objects.get(key="busy").request_hash == request_hash_of_retry
    assert Customer.objects.count() == 1


def test_errors_are_stored_and_replayed_too(api, entity):
    bad = {**CUSTOMER, "country": "XX"}
    first = api.post("/api/v1/customers", bad, format="json", HTTP_IDEMPOTENCY_KEY="k-bad")
    assert first.status_code == 400
    second = api.post("/api/v1/customers", bad, format="json", HTTP_IDEMPOTENCY_KEY="k-bad")
    assert second.status_code == 400 and second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()


def test_keys_are_scoped_to_the_api_key(api, entity):
    assert api.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="shared").status_code == 201
    other = client_for(make_key(name="other system"))
    body = {**CUSTOMER, "external_id": "cus_2"}
    response = other.post("/api/v1/customers", body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Customer.objects.count() == 2


def test_without_a_key_every_post_runs(api):
    assert api.post("/api/v1/products", {"code": "a", "name": "A"}, format="json").status_code == 201
    response = api.post("/api/v1/products", {"code": "a", "name": "A"}, format="json")
    assert response.status_code == 400  # ran again, and the code is taken
    assert not IdempotencyRecord.objects.exists()


def test_patch_is_idempotent_as_well(api, entity):
    first = api.patch("/api/v1/billing-entities/acme-us", {"name": "Acme"}, format="json", HTTP_IDEMPOTENCY_KEY="p")
    assert first.status_code == 200
    second = api.patch("/api/v1/billing-entities/acme-us", {"name": "Acme"}, format="json", HTTP_IDEMPOTENCY_KEY="p")
    assert second["Idempotent-Replayed"] == "true" and second.json() == first.json()


def test_gets_ignore_the_header(api):
    assert api.get("/api/v1/products", HTTP_IDEMPOTENCY_KEY="g").status_code == 200
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [("x" * 256, "at most 255"), ("   ", "empty"), ("caf\u00e9", "printable ASCII")],
)
def test_invalid_keys_are_400(api, key, message):
    header = key.encode().decode("latin-1")  # as a client would send UTF-8 bytes in a header
    response = api.post("/api/v1/products", {"code": "a", "name": "A"}, format="json", HTTP_IDEMPOTENCY_KEY=header)
    assert response.status_code == 400
    assert message in error_of(response)["fields"]["Idempotency-Key"][0]
    assert not Product.objects.exists()


def test_a_key_of_255_characters_is_fine(api):
    response = api.post("/api/v1/products", {"code": "a", "name": "A"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 255)
    assert response.status_code == 201


def test_purge_deletes_records_older_than_a_day(api, write_key):
    api.post("/api/v1/products", {"code": "a", "name": "A"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    api.post("/api/v1/products", {"code": "b", "name": "B"}, format="json", HTTP_IDEMPOTENCY_KEY="new")
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))
    assert purge_idempotency_records() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert idempotency.purge(now=timezone.now() + timedelta(days=2)) == 1


def test_an_expired_record_not_yet_purged_does_not_replay(api):
    api.post("/api/v1/products", {"code": "a", "name": "A"}, format="json", HTTP_IDEMPOTENCY_KEY="stale")
    IdempotencyRecord.objects.filter(key="stale").update(created_at=timezone.now() - timedelta(hours=25))
    response = api.post("/api/v1/products", {"code": "b", "name": "B"}, format="json", HTTP_IDEMPOTENCY_KEY="stale")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Product.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_run_once():
    """Real concurrency: threads with their own connections race on the record's unique constraint."""
    from tests.factories import BillingEntityFactory

    BillingEntityFactory(code="acme-us")
    key = make_key()
    barrier = threading.Barrier(6)
    responses = []

    def post() -> None:
        try:
            barrier.wait()
            response = client_for(key).post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="race")
            responses.append((response.status_code, response.json(), response.get("Idempotent-Replayed")))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Customer.objects.filter(external_id="cus_idem").count() == 1
    originals = [r for r in responses if r[0] == 201 and r[2] is None]
    assert len(originals) == 1
    for status_code, body, replayed in responses:
        if status_code == 201:
            assert body == originals[0][1]
            assert replayed in (None, "true")
        else:
            assert (status_code, body["error"]["code"]) == (409, "idempotency_key_in_progress")


def test_a_server_error_releases_the_key_so_a_retry_runs(write_key, entity, monkeypatch):
    from customers import services

    client = client_for(write_key)
    client.raise_request_exception = False
    real_create = services.create_customer

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "create_customer", broken)
    response = client.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="flaky")
    assert response.status_code == 500
    assert not IdempotencyRecord.objects.filter(key="flaky").exists()

    monkeypatch.setattr(services, "create_customer", real_create)
    response = client.post("/api/v1/customers", CUSTOMER, format="json", HTTP_IDEMPOTENCY_KEY="flaky")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Customer.objects.filter(external_id="cus_idem").count() == 1
