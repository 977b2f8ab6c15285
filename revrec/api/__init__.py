"""The revrec app's API under /api/v1/revrec/: reports (JSON or CSV), the ledger (periods, accounts, journal
entries, a period's journal export and its close), revenue contracts and recognition runs."""

from typing import Any

from . import ledger, modifications, reports, revenue

AREAS = (reports, ledger, revenue, modifications)

urlpatterns = [pattern for area in AREAS for pattern in getattr(area, "urlpatterns", [])]


def register(router: Any) -> None:
    for area in AREAS:
        area.register(router)
