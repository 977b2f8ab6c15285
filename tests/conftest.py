from datetime import UTC, datetime

import pytest

from billing.actors import Actor


@pytest.fixture
def actor() -> Actor:
    return Actor.system("tests")


@pytest.fixture
def now() -> datetime:
    """A fixed 'now' (services take the clock as an argument)."""
    return datetime(2024, 1, 15, 17, 0, tzinfo=UTC)
