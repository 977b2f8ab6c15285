"""Pieces the revrec API modules share: strict query parameters, money of ledger rows, CSV downloads."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from djmoney.money import Money
from rest_framework import renderers, serializers

from billing.api.fields import MoneyField
from customers.models import BillingEntity

ID_REGEX = r"\d+"


def entity_by_code(code: str, field: str = "entity") -> BillingEntity:
    entity = BillingEntity.objects.filter(code=code).first()
    if entity is None:
        raise serializers.ValidationError({field: ["No billing entity with this code."]})
    return entity


class LedgerMoneyField(MoneyField):
    """A read-only amount of a row whose currency is on the row or a related one (`currency_path`)."""

    def __init__(self, *, currency_path: str = "currency", **kwargs: Any) -> None:
        self.currency_path = currency_path.split(".")
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def get_attribute(self, instance: Any) -> Any:
        amount = super().get_attribute(instance)
        currency: Any = instance
        for name in self.currency_path:
            currency = getattr(currency, name)
        return Money(amount, str(currency))


class CSVRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/csv` reach the views that answer with a CSV file themselves."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        # Only errors come through here (the file is an HttpResponse): keep them JSON.
        return renderers.JSONRenderer().render(data, "application/json", renderer_context)


def csv_download(content: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
