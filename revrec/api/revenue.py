"""/api/v1/revrec/revenue-contracts (list, detail with performance obligations) and
/api/v1/revrec/recognition-runs (list, detail, and POST to recognise revenue through a day).

A run is idempotent twice over: the Idempotency-Key header replays the first response, and recognition
itself never recognises a day twice (a repeated run through the same day finds nothing due)."""

from __future__ import annotations

from datetime import date
from typing import Any

import django_filters
from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from billing.api.views import APIViewSet
from customers.models import BillingEntity
from revrec.api.common import ID_REGEX, LedgerMoneyField, entity_by_code
from revrec.models import PerformanceObligation, RecognitionRun, RevenueContract
from revrec.selectors.reports import MAX_DATE, MIN_DATE
from revrec.services.recognition import run_recognition

# --- serializers --------------------------------------------------------------------------------------------


class ObligationSerializer(serializers.ModelSerializer):
    product = serializers.CharField(source="product.code", read_only=True, allow_null=True, default=None)
    invoice_line = serializers.IntegerField(source="invoice_line_id", read_only=True, allow_null=True)
    billed_amount = LedgerMoneyField(currency_path="revenue_contract.currency")
    ssp = LedgerMoneyField(currency_path="revenue_contract.currency", help_text="Standalone selling price.")
    allocated_price = LedgerMoneyField(currency_path="revenue_contract.currency")
    recognized_amount = LedgerMoneyField(currency_path="revenue_contract.currency")
    remaining = LedgerMoneyField(currency_path="revenue_contract.currency",
                                 help_text="Allocated price not yet recognised.")

    class Meta:
        model = PerformanceObligation
        fields = ("id", "description", "product", "invoice_line", "kind", "pattern", "status", "quantity",
                  "service_start", "service_end", "satisfied_on", "billed_on", "billed_amount", "ssp", "ssp_source",
                  "allocated_price", "recognized_amount", "recognized_through", "remaining", "rebased_on")
        read_only_fields = fields


class RevenueContractSerializer(serializers.ModelSerializer):
    entity = serializers.CharField(source="billing_entity.code", read_only=True)
    customer = serializers.CharField(source="customer.external_id", read_only=True)
    contract = serializers.CharField(source="contract.reference", read_only=True, allow_null=True, default=None,
                                     help_text="The customer contract's reference, when there is one.")
    invoice = serializers.IntegerField(source="invoice_id", read_only=True, allow_null=True,
                                       help_text="The invoice it was made from, when there is no contract.")
    currency = serializers.CharField(read_only=True)
    transaction_price = LedgerMoneyField()
    billed = LedgerMoneyField(help_text="Billed to date, net of credit notes, before tax.")
    recognized = LedgerMoneyField()
    deferred = LedgerMoneyField(help_text="Billed ahead of recognition (contract liability).")
    contract_asset = LedgerMoneyField(help_text="Recognised ahead of billing (unbilled revenue).")

    class Meta:
        model = RevenueContract
        fields = ("id", "reference", "entity", "customer", "contract", "invoice", "currency", "transaction_price",
                  "billed", "recognized", "deferred", "contract_asset", "created_at")
        read_only_fields = fields


class RevenueContractDetailSerializer(RevenueContractSerializer):
    obligations = ObligationSerializer(many=True, read_only=True)

    class Meta(RevenueContractSerializer.Meta):
        fields = (*RevenueContractSerializer.Meta.fields, "obligations")
        read_only_fields = fields


class RecognitionRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = RecognitionRun
        fields = ("id", "through_date", "status", "obligations", "entries", "amounts", "error", "triggered_by",
                  "started_at", "finished_at")
        read_only_fields = fields


class RecognitionRunCreateSerializer(serializers.Serializer):
    through = serializers.DateField(help_text="Recognise everything due through the end of this day.")
    entity = serializers.CharField(max_length=50, required=False, help_text="One billing entity's code (default: all).")

    def validate_through(self, value: date) -> date:
        if not MIN_DATE <= value <= MAX_DATE:
            raise serializers.ValidationError(f"The date must be between {MIN_DATE} and {MAX_DATE}.")
        return value


# --- filters ------------------------------------------------------------------------------------------------


class RevenueContractFilter(django_filters.FilterSet):
    entity = django_filters.CharFilter(field_name="billing_entity__code", help_text="The entity's code.")
    customer = django_filters.CharFilter(field_name="customer__external_id", max_length=100,
                                         help_text="The customer's external_id.")
    currency = django_filters.CharFilter(field_name="currency", max_length=3)
    reference = django_filters.CharFilter(field_name="reference", max_length=120)

    class Meta:
        model = RevenueContract
        fields = ("entity", "customer", "currency", "reference")


class RecognitionRunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RecognitionRun.Status.choices)
    through_from = django_filters.DateFilter(field_name="through_date", lookup_expr="gte")
    through_to = django_filters.DateFilter(field_name="through_date", lookup_expr="lte")

    class Meta:
        model = RecognitionRun
        fields = ("status",)


# --- views --------------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List revenue contracts", tags=["revenue"]),
    retrieve=extend_schema(summary="Get a revenue contract with its performance obligations",
                           responses={200: RevenueContractDetailSerializer}, tags=["revenue"]),
)
class RevenueContractViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = RevenueContractSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = RevenueContractFilter
    ordering_fields = ("created_at", "reference")
    search_fields = ("reference", "customer__external_id", "customer__name")
    http_method_names = ["get", "head", "options"]

    def get_queryset(self) -> QuerySet[RevenueContract]:
        contracts = RevenueContract.objects.select_related("billing_entity", "customer", "contract")
        if self.action == "retrieve":
            obligations = PerformanceObligation.objects.select_related("product", "revenue_contract")
            contracts = contracts.prefetch_related(Prefetch("obligations", queryset=obligations))
        return contracts.order_by("-created_at", "-id")

    def get_serializer_class(self) -> type:
        return RevenueContractDetailSerializer if self.action == "retrieve" else RevenueContractSerializer


@extend_schema_view(
    list=extend_schema(summary="List recognition runs", tags=["revenue"]),
    retrieve=extend_schema(summary="Get a recognition run", tags=["revenue"]),
    create=extend_schema(
        summary="Recognise revenue through a day",
        description="Recognises everything due through the end of `through` (one billing entity or all): one "
                    "journal entry per entity and currency. A day already recognised recognises nothing again. "
                    "`through` may not be after today in the entity's timezone.",
        request=RecognitionRunCreateSerializer, responses={201: RecognitionRunSerializer}, tags=["revenue"],
    ),
)
class RecognitionRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, APIViewSet):
    serializer_class = RecognitionRunSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = RecognitionRunFilter
    ordering_fields = ("started_at", "through_date")
    search_fields: tuple[str, ...] = ()
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[RecognitionRun]:
        return RecognitionRun.objects.order_by("-started_at", "-id")

    def get_serializer_class(self) -> type:
        return RecognitionRunCreateSerializer if self.action == "create" else RecognitionRunSerializer

    def create(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(RecognitionRunCreateSerializer)
        entity = entity_by_code(data["entity"]) if data.get("entity") else None
        now = self.now()
        entities = [entity] if entity is not None else list(BillingEntity.objects.all())
        # Revenue of a day not yet over is not earned: the latest day allowed is the latest "today" among
        # the entities concerned.
        latest = max((now.astimezone(e.timezone).date() for e in entities), default=now.date())
        if data["through"] > latest:
            raise serializers.ValidationError({"through": [f"Revenue cannot be recognised after today ({latest})."]})
        run = run_recognition(data["through"], actor=self.actor, now=now, entity=entity)
        return self.render(run, RecognitionRunSerializer, status.HTTP_201_CREATED)


def register(router: Any) -> None:
    router.register("revrec/revenue-contracts", RevenueContractViewSet, basename="revrec-revenue-contract")
    router.register("revrec/recognition-runs", RecognitionRunViewSet, basename="revrec-recognition-run")
