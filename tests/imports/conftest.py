from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.factories import BillingEntityFactory, MeterFactory, ProductFactory

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Reference:
    """What the sample files refer to: billing entities, a product and two meters."""

    us: Any
    eu: Any
    product: Any
    api_calls: Any
    storage: Any


@pytest.fixture
def reference(db) -> Reference:
    return Reference(
        us=BillingEntityFactory(code="acme-us", default_currency="USD"),
        eu=BillingEntityFactory(code="acme-eu", default_currency="EUR", country="DE", timezone="Europe/Berlin"),
        product=ProductFactory(code="platform", name="Platform"),
        api_calls=MeterFactory(code="api_calls", name="API calls"),
        storage=MeterFactory(code="storage_gb", name="Storage", aggregation="max", field_name="gb"),
    )


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()
