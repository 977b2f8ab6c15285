"""Usage test fixtures: customers and meters to send events for (the empty lookup caches: tests/conftest.py)."""

from dataclasses import dataclass
from typing import Any

import pytest

from tests.factories import CustomerFactory, MeterFactory


@dataclass
class Metering:
    customer: Any
    other: Any
    calls: Any  # count
    tokens: Any  # sum of properties.tokens
    peak: Any  # max of properties.gb
    seats: Any  # latest of properties.seats
    storage: Any  # weighted sum of properties.gb_change
    users: Any  # unique count of properties.user


@pytest.fixture
def metering(db) -> Metering:
    return Metering(
        customer=CustomerFactory(external_id="acme"),
        other=CustomerFactory(external_id="globex"),
        calls=MeterFactory(code="api_calls", aggregation="count"),
        tokens=MeterFactory(code="tokens", aggregation="sum", field_name="tokens"),
        peak=MeterFactory(code="peak_gb", aggregation="max", field_name="gb"),
        seats=MeterFactory(code="seats", aggregation="latest", field_name="seats", carries_over=True),
        storage=MeterFactory(code="storage", aggregation="weighted_sum", field_name="gb_change", carries_over=True),
        users=MeterFactory(code="active_users", aggregation="unique_count", field_name="user"),
    )


def event(transaction_id: str, *, customer: str = "acme", meter: str = "api_calls", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"transaction_id": transaction_id, "customer_external_id": customer, "meter_code": meter}
    body.update(extra)
    return body
