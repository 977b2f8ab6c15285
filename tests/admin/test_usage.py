"""Meters are written through the meter services; usage rows are read only in the admin."""

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN
from tests.admin.support import client_for
from usage.models import EventKey, Meter, RejectedEvent, UsageEvent, UsageHourlyRollup

pytestmark = pytest.mark.django_db

USAGE_MODELS = [UsageEvent, RejectedEvent, UsageHourlyRollup, EventKey]


def meter_form(**overrides):
    data = {"code": "tokens", "name": "Tokens", "description": "", "unit": "tokens", "is_active": "on",
            "aggregation": "sum", "field_name": "tokens", "filters": "{}", "group_by": "[]", "rounding": "none",
            "rounding_precision": "0"}
    data.update(overrides)
    return data


@pytest.fixture
def usage_rows(book):
    now = timezone.now()
    event = UsageEvent.objects.create(transaction_id="tx-1", customer=book.customer, meter=book.meter, timestamp=now,
                                      received_at=now, properties={"region": "eu"})
    rejected = RejectedEvent.objects.create(transaction_id="tx-2", external_customer_id="nobody",
                                            meter_code="api_calls", payload={"transaction_id": "tx-2"},
                                            reason_code="unknown_customer", reason="No customer 'nobody'.",
                                            received_at=now)
    rollup = UsageHourlyRollup.objects.create(customer=book.customer, meter=book.meter,
                                              hour=now.replace(minute=0, second=0, microsecond=0), event_count=1,
                                              value_sum=Decimal(0))
    key = EventKey.objects.create(transaction_id="tx-1", event_timestamp=now, received_at=now)
    return {UsageEvent: event, RejectedEvent: rejected, UsageHourlyRollup: rollup, EventKey: key}


@pytest.mark.parametrize("model", USAGE_MODELS, ids=lambda m: m._meta.model_name)
@pytest.mark.parametrize("role", [None, AUDITOR])
def test_usage_pages_are_read_only(usage_rows, model, role):
    client = client_for(role, superuser=role is None)
    info = f"admin:usage_{model._meta.model_name}"
    listing = client.get(reverse(f"{info}_changelist"))
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 1
    if model is RejectedEvent and role is None:
        # Rejected events are re-processed or discarded from the list; only with the permission to.
        actions = [name for name, _ in listing.context["action_form"].fields["action"].choices if name]
        assert set(actions) >= {"reprocess", "discard"}
    else:
        assert listing.context["action_form"] is None
    page = client.get(reverse(f"{info}_change", args=[usage_rows[model].pk]))
    assert page.status_code == 200
    assert not page.context["adminform"].form.fields
    assert client.get(reverse(f"{info}_add")).status_code == 403


def test_event_search_is_exact(usage_rows):
    client = client_for(superuser=True)
    url = reverse("admin:usage_usageevent_changelist")
    assert client.get(url, {"q": "tx-1"}).context["cl"].result_count == 1
    assert client.get(url, {"q": "tx-"}).context["cl"].result_count == 0


def test_meter_created_through_the_service(book):
    client = client_for(FINANCE_ADMIN)
    response = client.post(reverse("admin:usage_meter_add"), meter_form())
    assert response.status_code == 302, response.context["adminform"].form.errors
    meter = Meter.objects.get(code="tokens")
    assert meter.history.first().history_user == client.user

    refused = client.post(reverse("admin:usage_meter_add"), meter_form(code="events", aggregation="count"))
    assert refused.status_code == 200
    assert "reads no property" in " ".join(refused.context["adminform"].form.errors["field_name"])
    assert not Meter.objects.filter(code="events").exists()


def test_a_billed_meter_keeps_its_definition(book):
    client = client_for(FINANCE_ADMIN)
    page = client.get(reverse("admin:usage_meter_change", args=[book.meter.pk]))  # a published plan bills it
    assert set(page.context["adminform"].form.fields) == {"name", "description", "unit", "is_active"}
    unbilled = client.get(reverse("admin:usage_meter_change", args=[book.storage.pk]))
    assert "aggregation" in unbilled.context["adminform"].form.fields


def test_operator_only_views_meters(book):
    client = client_for(BILLING_OPERATOR)
    assert client.get(reverse("admin:usage_meter_changelist")).status_code == 200
    assert client.get(reverse("admin:usage_meter_add")).status_code == 403
