"""/api/v1/receivables/aging (JSON or CSV), /api/v1/receivables/dso, and a customer's balance at a date and
statement (JSON, CSV or PDF): read-only shells over invoicing.services.receivables.

Query parameters are checked like a body: an unknown or repeated parameter, a bad date, an unknown currency,
billing entity or customer is a 400 in the API's error shape, naming the parameter. The output format is the
`format` parameter (never the Accept header); an error is always JSON.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import re_path
from djmoney.money import Money
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from billing.api.fields import CurrencyCodeField, MoneyField
from billing.api.query import StrictQuery
from billing.api.views import CODE_REGEX, BaseAPIView
from contracts.selectors import customer_today
from customers.models import BillingEntity, Customer
from invoicing.receivables_export import (
    aging_csv,
    aging_items_csv,
    render_statement_pdf,
    statement_csv,
    statement_filename,
)
from invoicing.services.receivables import (
    BUCKETS,
    MAX_DSO_DAYS,
    AgingReport,
    OpenItem,
    Statement,
    aging_report,
    balance_breakdown,
    customer_statement,
    dso_figures,
)

CUSTOMER_PATH_PARAMETER = OpenApiParameter(
    "customer_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The customer's external_id."
)
CSV_RESPONSE = OpenApiResponse(OpenApiTypes.STR, description="CSV (columns in docs/receivables.md).")
PDF_RESPONSE = OpenApiResponse(OpenApiTypes.BINARY, description="The statement as a PDF.")


def _money(amount: Any, currency: str) -> Money:
    return Money(amount, currency)


# --- query parameters ---------------------------------------------------------------------------------------


class AgingQuerySerializer(StrictQuery):
    as_of = serializers.DateField(required=False, help_text="End of this day (default: today, UTC).")
    billing_entity = serializers.CharField(max_length=50, required=False, help_text="A billing entity's code.")
    currency = CurrencyCodeField(required=False)
    customer = serializers.CharField(max_length=100, required=False, help_text="A customer's external_id.")
    include_uncollectible = serializers.BooleanField(required=False, default=False)
    items = serializers.BooleanField(required=False, default=False,
                                     help_text="Include the open invoices behind each row (CSV: one per row).")
    format = serializers.ChoiceField(choices=["json", "csv"], required=False, default="json")


class DSOQuerySerializer(StrictQuery):
    billing_entity = serializers.CharField(max_length=50, help_text="A billing entity's code.")
    currency = CurrencyCodeField(required=False, help_text="Default: the entity's currency.")
    as_of = serializers.DateField(required=False, help_text="Default: today in the entity's timezone.")
    days = serializers.IntegerField(required=False, default=90, min_value=1, max_value=MAX_DSO_DAYS)


class BalanceQuerySerializer(StrictQuery):
    currency = CurrencyCodeField(required=False, help_text="Default: the customer's currency.")
    as_of = serializers.DateField(required=False, help_text="Default: today in the customer's timezone.")


class StatementQuerySerializer(StrictQuery):
    currency = CurrencyCodeField(required=False, help_text="Default: the customer's currency.")
    start = serializers.DateField(required=False, help_text="Default: the first day of the end's month.")
    end = serializers.DateField(required=False, help_text="Default: today in the customer's timezone.")
    format = serializers.ChoiceField(choices=["json", "csv", "pdf"], required=False, default="json")


# --- responses ----------------------------------------------------------------------------------------------


class BucketsSerializer(serializers.Serializer):
    current = MoneyField(help_text="Not yet due.")
    days_1_30 = MoneyField()
    days_31_60 = MoneyField()
    days_61_90 = MoneyField()
    days_over_90 = MoneyField()


class OpenItemSerializer(serializers.Serializer):
    invoice = serializers.IntegerField()
    number = serializers.CharField()
    issue_date = serializers.DateField()
    due_date = serializers.DateField()
    days_overdue = serializers.IntegerField()
    bucket = serializers.ChoiceField(choices=BUCKETS)
    open_amount = MoneyField()
    uncollectible = serializers.BooleanField()


class AgingRowSerializer(serializers.Serializer):
    billing_entity = serializers.CharField(help_text="The billing entity's code.")
    customer = serializers.CharField(help_text="The customer's external_id.")
    customer_name = serializers.CharField()
    currency = serializers.CharField()
    buckets = BucketsSerializer()
    total = MoneyField()
    unapplied_credit = MoneyField(help_text="Credit balance held at the end of as_of.")
    net = MoneyField(help_text="total - unapplied_credit: the customer's balance.")
    items = OpenItemSerializer(many=True, required=False)


class AgingTotalSerializer(serializers.Serializer):
    billing_entity = serializers.CharField()
    currency = serializers.CharField()
    customers = serializers.IntegerField()
    buckets = BucketsSerializer()
    total = MoneyField()
    unapplied_credit = MoneyField()
    net = MoneyField()


class AgingSerializer(serializers.Serializer):
    as_of = serializers.DateField()
    include_uncollectible = serializers.BooleanField()
    rows = AgingRowSerializer(many=True)
    totals = AgingTotalSerializer(many=True, help_text="Per billing entity and currency; currencies never added.")


class DSOSerializer(serializers.Serializer):
    billing_entity = serializers.CharField()
    currency = serializers.CharField()
    as_of = serializers.DateField()
    days = serializers.IntegerField()
    receivables = MoneyField(help_text="Open at the end of as_of, written-off invoices left out.")
    credit_sales = MoneyField(help_text="Invoices issued in the window (total less prepaid credit).")
    dso = serializers.DecimalField(max_digits=20, decimal_places=2, allow_null=True,
                                   help_text="receivables / credit_sales x days; null without sales.")


class BalanceSerializer(serializers.Serializer):
    customer = serializers.CharField()
    currency = serializers.CharField()
    as_of = serializers.DateField()
    balance = MoneyField(help_text="Positive: the customer owes; negative: it holds credit.")
    invoiced = MoneyField()
    voided = MoneyField()
    payments = MoneyField()
    reversals = MoneyField()
    credit_notes = MoneyField()
    refunds = MoneyField()


class StatementLineSerializer(serializers.Serializer):
    date = serializers.DateField()
    type = serializers.ChoiceField(choices=["invoice", "invoice_void", "credit_note", "payment", "refund",
                                            "payment_reversal"])
    number = serializers.CharField()
    description = serializers.CharField()
    reference = serializers.CharField()
    due_date = serializers.DateField(allow_null=True)
    amount = MoneyField(help_text="Signed: positive raises what the customer owes.")
    balance = MoneyField()


class StatementSerializer(serializers.Serializer):
    customer = serializers.CharField()
    currency = serializers.CharField()
    start = serializers.DateField()
    end = serializers.DateField()
    opening_balance = MoneyField()
    lines = StatementLineSerializer(many=True)
    closing_balance = MoneyField()
    open_items = OpenItemSerializer(many=True)
    aging = BucketsSerializer()


def _buckets(values: dict[str, Any], currency: str) -> dict[str, Money]:
    return {bucket: _money(values[bucket], currency) for bucket in BUCKETS}


def _item(item: OpenItem) -> dict[str, Any]:
    return {"invoice": item.invoice_id, "number": item.number, "issue_date": item.issue_date,
            "due_date": item.due_date, "days_overdue": item.days_overdue, "bucket": item.bucket,
            "open_amount": _money(item.open_amount, item.currency), "uncollectible": item.uncollectible}


def aging_body(report: AgingReport, *, items: bool) -> dict[str, Any]:
    rows = []
    for row in report.rows:
        cur = row.currency
        body = {"billing_entity": row.billing_entity_code, "customer": row.customer_external_id,
                "customer_name": row.customer_name, "currency": cur, "buckets": _buckets(row.buckets, cur),
                "total": _money(row.total, cur), "unapplied_credit": _money(row.unapplied_credit, cur),
                "net": _money(row.net, cur)}
        if items:
            body["items"] = [_item(item) for item in row.items]
        rows.append(body)
    totals = [{"billing_entity": t.billing_entity_code, "currency": t.currency, "customers": t.customers,
               "buckets": _buckets(t.buckets, t.currency), "total": _money(t.total, t.currency),
               "unapplied_credit": _money(t.unapplied_credit, t.currency), "net": _money(t.net, t.currency)}
              for t in report.totals]
    return AgingSerializer({"as_of": report.as_of, "include_uncollectible": report.include_uncollectible,
                            "rows": rows, "totals": totals}).data


def statement_body(statement: Statement) -> dict[str, Any]:
    cur = statement.currency
    lines = [{"date": line.day, "type": line.type, "number": line.number, "description": line.description,
              "reference": line.reference, "due_date": line.due_date, "amount": _money(line.amount, cur),
              "balance": _money(line.balance, cur)} for line in statement.lines]
    return StatementSerializer({
        "customer": statement.customer.external_id, "currency": cur, "start": statement.start, "end": statement.end,
        "opening_balance": _money(statement.opening_balance, cur), "lines": lines,
        "closing_balance": _money(statement.closing_balance, cur),
        "open_items": [_item(item) for item in statement.open_items], "aging": _buckets(statement.aging, cur),
    }).data


def _download(content: str | bytes, content_type: str, filename: str, *, inline: bool = False) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{filename}"'
    return response


# --- views --------------------------------------------------------------------------------------------------


class FormatParameterNegotiation(BaseContentNegotiation):
    """Output is chosen by the validated `format` parameter, not by DRF's `?format=` or the Accept header:
    JSON unless the view returns a file itself."""

    def select_parser(self, request: Any, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class _ReportView(BaseAPIView):
    pagination_class = None
    filter_backends: list = []
    content_negotiation_class = FormatParameterNegotiation
    renderer_classes = [renderers.JSONRenderer]
    query_serializer: type[StrictQuery]

    def get_serializer_class(self) -> type:
        return self.query_serializer

    def query(self) -> dict[str, Any]:
        serializer = self.query_serializer(data=self.request.query_params)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


def _entity(code: str) -> BillingEntity:
    entity = BillingEntity.objects.filter(code=code).first()
    if entity is None:
        raise serializers.ValidationError({"billing_entity": ["No billing entity with this code."]})
    return entity


def _customer(external_id: str) -> Customer:
    return get_object_or_404(Customer.objects.select_related("billing_entity"), external_id=external_id)


def _local_today(now: datetime, tz: Any) -> date:
    return now.astimezone(tz).date()


class AgingView(_ReportView):
    query_serializer = AgingQuerySerializer

    @extend_schema(
        summary="Aging report: open receivables by customer in buckets of days past due",
        parameters=[AgingQuerySerializer],
        responses={(200, "application/json"): AgingSerializer, (200, "text/csv"): CSV_RESPONSE},
        tags=["receivables"],
    )
    def get(self, request: Any) -> Any:
        params = self.query()
        entity = _entity(params["billing_entity"]) if params.get("billing_entity") else None
        customer = None
        if params.get("customer"):
            customer = Customer.objects.filter(external_id=params["customer"]).first()
            if customer is None:
                raise serializers.ValidationError({"customer": ["No customer with this external_id."]})
        now = self.now()
        as_of = params.get("as_of") or _local_today(now, entity.timezone if entity else now.tzinfo)
        report = aging_report(as_of=as_of, billing_entity=entity, currency=params.get("currency"),
                              customer=customer, include_uncollectible=params["include_uncollectible"])
        if params["format"] == "csv":
            content = aging_items_csv(report) if params["items"] else aging_csv(report)
            suffix = "-items" if params["items"] else ""
            return _download(content, "text/csv; charset=utf-8", f"aging{suffix}-{as_of.isoformat()}.csv")
        return Response(aging_body(report, items=params["items"]))


class DSOView(_ReportView):
    query_serializer = DSOQuerySerializer

    @extend_schema(summary="Days sales outstanding of a billing entity in one currency",
                   parameters=[DSOQuerySerializer], responses={200: DSOSerializer}, tags=["receivables"])
    def get(self, request: Any) -> Response:
        params = self.query()
        entity = _entity(params["billing_entity"])
        currency = params.get("currency") or str(entity.default_currency)
        as_of = params.get("as_of") or _local_today(self.now(), entity.timezone)
        figures = dso_figures(billing_entity=entity, currency=currency, as_of=as_of, days=params["days"])
        return Response(DSOSerializer({
            "billing_entity": entity.code, "currency": currency, "as_of": as_of, "days": figures.days,
            "receivables": _money(figures.receivables, currency),
            "credit_sales": _money(figures.credit_sales, currency),
            "dso": figures.dso,
        }).data)


class CustomerBalanceView(_ReportView):
    query_serializer = BalanceQuerySerializer

    @extend_schema(summary="The customer's balance at the end of a day, with the sums it is made of",
                   parameters=[CUSTOMER_PATH_PARAMETER, BalanceQuerySerializer], responses={200: BalanceSerializer},
                   tags=["customers"])
    def get(self, request: Any, customer_external_id: str) -> Response:
        customer = _customer(customer_external_id)
        params = self.query()
        currency = params.get("currency") or str(customer.currency)
        as_of = params.get("as_of") or customer_today(customer, self.now())
        b = balance_breakdown(customer, currency, as_of)
        return Response(BalanceSerializer({
            "customer": customer.external_id, "currency": currency, "as_of": as_of,
            **{name: _money(getattr(b, name), currency) for name in (
                "balance", "invoiced", "voided", "payments", "reversals", "credit_notes", "refunds")},
        }).data)


class CustomerStatementView(_ReportView):
    query_serializer = StatementQuerySerializer

    @extend_schema(
        summary="The customer's statement: opening balance, documents with a running balance, closing balance, "
                "open invoices",
        parameters=[CUSTOMER_PATH_PARAMETER, StatementQuerySerializer],
        responses={(200, "application/json"): StatementSerializer, (200, "text/csv"): CSV_RESPONSE,
                   (200, "application/pdf"): PDF_RESPONSE},
        tags=["customers"],
    )
    def get(self, request: Any, customer_external_id: str) -> Any:
        customer = _customer(customer_external_id)
        params = self.query()
        currency = params.get("currency") or str(customer.currency)
        end = params.get("end") or customer_today(customer, self.now())
        start = params.get("start") or end.replace(day=1)
        statement = customer_statement(customer, currency, start, end)
        if params["format"] == "csv":
            return _download(statement_csv(statement), "text/csv; charset=utf-8", statement_filename(statement, "csv"))
        if params["format"] == "pdf":
            return _download(render_statement_pdf(statement), "application/pdf", statement_filename(statement, "pdf"),
                             inline=True)
        return Response(statement_body(statement))


urlpatterns = [
    re_path(r"^receivables/aging$", AgingView.as_view(), name="receivables-aging"),
    re_path(r"^receivables/dso$", DSOView.as_view(), name="receivables-dso"),
    re_path(rf"^customers/(?P<customer_external_id>{CODE_REGEX})/balance$", CustomerBalanceView.as_view(),
            name="customer-balance"),
    re_path(rf"^customers/(?P<customer_external_id>{CODE_REGEX})/statement$", CustomerStatementView.as_view(),
            name="customer-statement"),
]


def register(router: Any) -> None:
    """Single endpoints only (`urlpatterns`): nothing on the router."""
