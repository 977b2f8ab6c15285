"""The invoicing app's API, one module per area; each registers its viewsets on the /api/v1/ router and may
add single endpoints (`urlpatterns`)."""

from typing import Any

from . import bank, credit_notes, dunning, gateways, invoices, payments, receivables

AREAS = (invoices, payments, credit_notes, dunning, bank, receivables, gateways)

urlpatterns = [pattern for area in AREAS for pattern in getattr(area, "urlpatterns", [])]


def register(router: Any) -> None:
    for area in AREAS:
        area.register(router)
