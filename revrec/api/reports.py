"""GET /api/v1/revrec/reports/{key}: any revenue report of revrec.selectors.reports, as JSON or CSV.

`entity` (a billing entity's code) is required; `currency` defaults to the entity's; `start`/`end` (a range
[start, end), by month for the waterfall and the roll-forward) or `as_of` as the report needs. An unknown
key or parameter, a bad or missing date, an end not after the start is a 400 naming the parameter. The
output is the `format` parameter (never the Accept header); an error is always JSON.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers, serializers
from rest_framework.response import Response

from billing.api.fields import CurrencyCodeField, format_amount
from billing.api.query import StrictQuery
from billing.api.views import BaseAPIView
from invoicing.api.receivables import FormatParameterNegotiation
from revrec.api.common import csv_download, entity_by_code
from revrec.exports import report_csv, report_filename
from revrec.selectors.report_types import Report, ReportParams
from revrec.selectors.reports import REPORTS, run_report


class ReportQuerySerializer(StrictQuery):
    entity = serializers.CharField(max_length=50, help_text="The billing entity's code.")
    currency = CurrencyCodeField(required=False, help_text="Default: the entity's currency.")
    start = serializers.DateField(required=False, help_text="First day (waterfall, roll-forward: its month).")
    end = serializers.DateField(required=False, help_text="The day after the last (not included).")
    as_of = serializers.DateField(required=False, help_text="End of this day (point-in-time reports).")
    format = serializers.ChoiceField(choices=["json", "csv"], required=False, default="json")


class PointSerializer(serializers.Serializer):
    label = serializers.CharField()
    value = serializers.CharField(help_text="A decimal string.")


class SeriesSerializer(serializers.Serializer):
    name = serializers.CharField()
    points = PointSerializer(many=True)


class ReportSerializer(serializers.Serializer):
    # Documentation of the body; cells are strings (amounts as decimal strings, dates ISO) or integers.
    key = serializers.ChoiceField(choices=list(REPORTS))
    title = serializers.CharField()
    description = serializers.CharField()
    entity = serializers.CharField()
    currency = serializers.CharField()
    parameters = serializers.DictField(child=serializers.CharField())
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.ListField(child=serializers.JSONField()))
    totals = serializers.ListField(child=serializers.JSONField(), allow_null=True)
    chart_kind = serializers.ChoiceField(choices=["bar", "stacked", "line"])
    chart = SeriesSerializer(many=True)
    problems = serializers.ListField(child=serializers.CharField(),
                                     help_text="Reconciliation failures; empty when everything agrees.")


def json_cell(value: Any, currency: str) -> Any:
    if isinstance(value, Decimal):
        return format_amount(value, currency)
    if isinstance(value, date):
        return value.isoformat()
    return value


def report_body(report: Report, entity_code: str) -> dict[str, Any]:
    cur = report.currency
    return {
        "key": report.key, "title": report.title, "description": report.description, "entity": entity_code,
        "currency": cur,
        "parameters": {k: json_cell(v, cur) for k, v in report.parameters.items() if k != "entity_id"},
        "columns": report.columns,
        "rows": [[json_cell(v, cur) for v in row] for row in report.rows],
        "totals": None if report.totals is None else [json_cell(v, cur) for v in report.totals],
        "chart_kind": report.chart_kind,
        "chart": [{"name": s.name, "points": [{"label": p, "value": json_cell(v, cur)} for p, v in s.points]}
                  for s in report.chart],
        "problems": report.problems,
    }


class ReportView(BaseAPIView):
    pagination_class = None
    filter_backends: list = []
    content_negotiation_class = FormatParameterNegotiation
    renderer_classes = [renderers.JSONRenderer]

    def get_serializer_class(self) -> type:
        return ReportQuerySerializer

    @extend_schema(
        summary="A revenue report (waterfall, roll-forward, recognised by product or customer, unbilled revenue, "
                "remaining performance obligations, trial balance, journal)",
        parameters=[
            OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(REPORTS),
                             description="Which report."),
            ReportQuerySerializer,
        ],
        responses={(200, "application/json"): ReportSerializer,
                   (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The table as CSV.")},
        tags=["revenue"],
    )
    def get(self, request: Any, key: str) -> Any:
        if key not in REPORTS:
            raise serializers.ValidationError({"key": [f"No such report; choose one of {', '.join(REPORTS)}."]})
        query = ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        extra = [name for name in ("start", "end", "as_of") if name in params and name not in REPORTS[key].needs]
        if extra:
            raise serializers.ValidationError({name: ["This report does not take this parameter."] for name in extra})
        entity = entity_by_code(params["entity"])
        currency = params.get("currency") or str(entity.default_currency)
        report = run_report(key, ReportParams(entity_id=entity.pk, currency=currency, start=params.get("start"),
                                              end=params.get("end"), as_of=params.get("as_of")))
        if params["format"] == "csv":
            return csv_download(report_csv(report), f"{entity.code}-{report_filename(report)}")
        return Response(report_body(report, entity.code))


urlpatterns = [
    re_path(r"^revrec/reports/(?P<key>[^/]{1,200})$", ReportView.as_view(), name="revrec-report"),
]


def register(router: Any) -> None:
    """A single endpoint (`urlpatterns`): nothing on the router."""
