from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def _fresh_ingestion_caches() -> Iterator[None]:
    """Ingestion caches customer and meter ids (and recent keys) per process; every test's database starts
    over, so a cached id from a rolled-back test (e.g. the demo load) must not outlive it."""
    from usage import ingest_views, ingestion

    ingestion.clear_caches()
    ingest_views._recent_keys.clear()
    yield
    ingestion.clear_caches()
    ingest_views._recent_keys.clear()
