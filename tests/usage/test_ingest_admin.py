"""The admin over the event store: events read only, rejected events filtered, re-processed and discarded."""

import pytest

from tests.admin.support import client_for
from tests.factories import CustomerFactory
from tests.usage.conftest import event
from usage import events_admin  # noqa: F401 - registers the admin classes under test
from usage.ingestion import ingest_events
from usage.models import RejectedEvent, UsageEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(metering, now):
    ingest_events(
        [
            event("ok-1", meter="tokens", properties={"tokens": 3}),
            event("late-1", customer="newco"),
            event("bad-1", meter="tokens", properties={"tokens": "three"}),
        ],
        source="api",
        now=now,
    )


def test_events_are_listed_searchable_and_read_only(sent):
    client = client_for(superuser=True)
    listing = client.get("/admin/usage/usageevent/")
    assert listing.status_code == 200 and b"ok-1" in listing.content
    found = client.get("/admin/usage/usageevent/", {"q": "ok-1"})
    assert b"ok-1" in found.content
    assert b"ok-1" in client.get("/admin/usage/usageevent/", {"q": "acme"}).content
    assert b"ok-1" not in client.get("/admin/usage/usageevent/", {"q": "nothing"}).content
    stored = UsageEvent.objects.get()
    detail = client.get(f"/admin/usage/usageevent/{stored.pk}/change/")
    assert detail.status_code == 200 and b"tokens" in detail.content
    assert client.get("/admin/usage/usageevent/add/").status_code == 403
    assert client.post(f"/admin/usage/usageevent/{stored.pk}/delete/", {"post": "yes"}).status_code == 403
    assert UsageEvent.objects.count() == 1


def test_rejected_events_are_filtered_by_reason_and_status(sent):
    client = client_for(superuser=True)
    page = client.get("/admin/usage/rejectedevent/", {"reason_code": "unknown_customer", "status": "open"})
    assert page.status_code == 200
    assert b"late-1" in page.content and b"bad-1" not in page.content
    rejected = RejectedEvent.objects.get(transaction_id="late-1")
    detail = client.get(f"/admin/usage/rejectedevent/{rejected.pk}/change/")
    assert b"newco" in detail.content and b"payload" in detail.content


def test_reprocess_action_after_the_customer_is_created(sent):
    client = client_for(superuser=True)
    CustomerFactory(external_id="newco")
    ids = list(RejectedEvent.objects.values_list("pk", flat=True))
    response = client.post(
        "/admin/usage/rejectedevent/", {"action": "reprocess", "_selected_action": ids}, follow=True
    )
    assert b"1 accepted, 0 already counted (duplicates), 1 still rejected" in response.content
    assert RejectedEvent.objects.get(transaction_id="late-1").status == "reprocessed"
    assert RejectedEvent.objects.get(transaction_id="bad-1").status == "open"
    assert UsageEvent.objects.filter(transaction_id="late-1").exists()


def test_discard_keeps_the_record(sent):
    client = client_for(superuser=True)
    bad = RejectedEvent.objects.get(transaction_id="bad-1")
    client.post("/admin/usage/rejectedevent/", {"action": "discard", "_selected_action": [bad.pk]}, follow=True)
    bad.refresh_from_db()
    assert bad.status == "discarded" and bad.resolved_at is not None


def test_reprocessing_needs_its_permission(sent):
    from django.contrib.auth.models import Permission

    client = client_for(username="viewer")
    client.user.user_permissions.add(*Permission.objects.filter(codename__in=["view_rejectedevent",
                                                                              "change_rejectedevent"]))
    ids = list(RejectedEvent.objects.values_list("pk", flat=True))
    client.post("/admin/usage/rejectedevent/", {"action": "reprocess", "_selected_action": ids}, follow=True)
    CustomerFactory(external_id="newco")
    assert not RejectedEvent.objects.exclude(status="open").exists()
