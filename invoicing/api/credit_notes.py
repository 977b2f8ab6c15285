"""/api/v1/credit-notes: list (filters customer, invoice, dates), detail with lines, PDF, and issuing one.

A note is issued with `POST /api/v1/credit-notes` naming the invoice in the body (one resource, one place to
create it); the service (invoicing.services.credit_notes) checks every rule. The Idempotency-Key header
replays the first response; it is also handed to the service (scoped to the API key), so a repeat can never
issue a second note.
"""

from __future__ import annotations

import hashlib
from typing import Any

import django_filters
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, renderers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.api.idempotency import key_from
from billing.api.views import APIViewSet
from invoicing.api.credit_note_serializers import (
    CreditNoteCreateSerializer,
    CreditNoteDetailSerializer,
    CreditNoteSerializer,
)
from invoicing.api.invoices import ID_REGEX, PDFRenderer
from invoicing.credit_note_pdf import render_credit_note_pdf
from invoicing.models import CreditNote, CreditNoteLine
from invoicing.services.credit_notes import CreditLineRequest, credit_in_full, issue_credit_note

urlpatterns: list = []


class CreditNoteFilter(django_filters.FilterSet):
    customer = django_filters.CharFilter(field_name="customer__external_id", help_text="The customer's external_id.")
    invoice = django_filters.NumberFilter(field_name="invoice_id", help_text="The credited invoice's id.")
    number = django_filters.CharFilter(field_name="number")
    reason = django_filters.MultipleChoiceFilter(choices=CreditNote.Reason.choices)
    settlement = django_filters.MultipleChoiceFilter(choices=CreditNote.Settlement.choices)
    issue_date_from = django_filters.DateFilter(field_name="issue_date", lookup_expr="gte", help_text="On or after.")
    issue_date_to = django_filters.DateFilter(field_name="issue_date", lookup_expr="lte", help_text="On or before.")

    class Meta:
        model = CreditNote
        fields = ("customer", "invoice", "number", "reason", "settlement")


def _notes() -> QuerySet[CreditNote]:
    return CreditNote.objects.select_related("customer", "billing_entity", "invoice")


def _service_key(request: Any) -> str | None:
    """The Idempotency-Key scoped to the API key that sent it (another client's key never matches)."""
    key = key_from(request)
    if key is None or request.auth is None:
        return None
    return f"api:{request.auth.pk}:{hashlib.sha256(key.encode()).hexdigest()}"


@extend_schema_view(
    list=extend_schema(summary="List credit notes"),
    retrieve=extend_schema(summary="Get a credit note with its lines", responses={200: CreditNoteDetailSerializer}),
    create=extend_schema(
        summary="Issue a credit note against a finalized, paid or uncollectible invoice",
        description="Exactly one of `lines` (per invoice line: an amount before tax or a quantity), `amount` (before "
                    "tax, spread over the lines in proportion) or `full`. Taxes are given back per rate. What the "
                    "invoice no longer owes is settled as `settlement` says.",
        request=CreditNoteCreateSerializer,
        responses={201: CreditNoteDetailSerializer},
    ),
)
class CreditNoteViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, APIViewSet):
    serializer_class = CreditNoteSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = CreditNoteFilter
    search_fields = ("number", "invoice__number", "customer__external_id", "customer__name")
    ordering_fields = ("issued_at", "issue_date", "total", "number")
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[CreditNote]:
        return _notes()

    def get_serializer_class(self) -> type:
        if self.action == "create":
            return CreditNoteCreateSerializer
        if self.action == "list":
            return CreditNoteSerializer
        return CreditNoteDetailSerializer

    def _detail(self, note: CreditNote, code: int = status.HTTP_200_OK) -> Response:
        lines = CreditNoteLine.objects.select_related("product", "credit_note")
        note = _notes().prefetch_related(Prefetch("lines", queryset=lines)).get(pk=note.pk)
        return self.render(note, CreditNoteDetailSerializer, code)

    def retrieve(self, request, *args: Any, **kwargs: Any) -> Response:
        return self._detail(self.get_object())

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(CreditNoteCreateSerializer)
        common = {
            "reason": data["reason"], "memo": data["memo"], "settlement": data["settlement"],
            "offset_invoice": data.get("offset_invoice"), "currency": data["stated_currency"],
            "actor": self.actor, "now": self.now(), "idempotency_key": _service_key(request),
        }
        if data.get("full"):
            note = credit_in_full(data["invoice"], **common)
        elif "amount" in data:
            note = issue_credit_note(data["invoice"], amount=data["amount"].amount, **common)
        else:
            lines = [
                CreditLineRequest(line["invoice_line"], amount=line["amount"].amount if "amount" in line else None,
                                  quantity=line.get("quantity"))
                for line in data["lines"]
            ]
            note = issue_credit_note(data["invoice"], lines=lines, **common)
        return self._detail(note, status.HTTP_201_CREATED)

    @extend_schema(
        summary="The credit note as a PDF",
        responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="The PDF document.")},
    )
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, PDFRenderer])
    def pdf(self, request, *args: Any, **kwargs: Any) -> HttpResponse:
        note = self.get_object()
        content: bytes | None = None
        if note.pdf:
            try:
                with note.pdf.open("rb") as stored:
                    content = stored.read()
            except OSError:
                content = None  # the file went missing: render it again
        if content is None:
            content = render_credit_note_pdf(note)
        response = HttpResponse(content, content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{note.number}.pdf"'
        return response


def register(router: Any) -> None:
    router.register("credit-notes", CreditNoteViewSet, basename="credit-note")
