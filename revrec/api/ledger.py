"""/api/v1/revrec/periods (list, detail, the period's journal as CSV, close), /api/v1/revrec/accounts and
/api/v1/revrec/journal-entries (list with filters, detail with lines). Read-only over the ledger, except
the close, which calls revrec.services.close (every check there; a refusal is a 400 with the reasons)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, renderers, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.api.views import APIViewSet
from revrec.api.common import ID_REGEX, CSVRenderer, LedgerMoneyField, csv_download
from revrec.exports import journal_export_csv, journal_export_filename
from revrec.models import Account, AccountingPeriod, JournalEntry, JournalLine

# --- serializers --------------------------------------------------------------------------------------------


class AccountingPeriodSerializer(serializers.ModelSerializer):
    entity = serializers.CharField(source="billing_entity.code", read_only=True, help_text="The entity's code.")
    label = serializers.CharField(read_only=True, help_text="YYYY-MM.")
    end_date = serializers.DateField(read_only=True, help_text="The first day after the period.")

    class Meta:
        model = AccountingPeriod
        fields = ("id", "entity", "label", "start_date", "end_date", "status", "closed_at", "closed_by",
                  "close_checklist")
        read_only_fields = fields


class AccountSerializer(serializers.ModelSerializer):
    entity = serializers.CharField(source="billing_entity.code", read_only=True)
    product = serializers.CharField(source="product.code", read_only=True, allow_null=True, default=None)
    normal_balance = serializers.ChoiceField(choices=["debit", "credit"], read_only=True)

    class Meta:
        model = Account
        fields = ("id", "entity", "code", "name", "type", "role", "product", "normal_balance", "is_active")
        read_only_fields = fields


class JournalLineSerializer(serializers.ModelSerializer):
    account = serializers.CharField(source="account.code", read_only=True, help_text="The account's code.")
    account_name = serializers.CharField(source="account.name", read_only=True)
    role = serializers.CharField(source="account.role", read_only=True)
    debit = LedgerMoneyField(currency_path="entry.currency")
    credit = LedgerMoneyField(currency_path="entry.currency")
    customer = serializers.CharField(source="customer.external_id", read_only=True, allow_null=True, default=None)
    product = serializers.CharField(source="product.code", read_only=True, allow_null=True, default=None)
    revenue_contract = serializers.CharField(source="revenue_contract.reference", read_only=True, allow_null=True,
                                             default=None)

    class Meta:
        model = JournalLine
        fields = ("id", "account", "account_name", "role", "debit", "credit", "customer", "product",
                  "revenue_contract", "memo")
        read_only_fields = fields


class JournalEntrySerializer(serializers.ModelSerializer):
    entity = serializers.CharField(source="billing_entity.code", read_only=True)
    period = serializers.CharField(source="period.label", read_only=True, help_text="YYYY-MM.")
    currency = serializers.CharField(read_only=True)
    total = LedgerMoneyField(help_text="The sum of the debits (= the sum of the credits).")
    customer = serializers.CharField(source="customer.external_id", read_only=True, allow_null=True, default=None)
    is_correction = serializers.BooleanField(read_only=True,
                                             help_text="Posted after its own period closed (entry date differs).")
    lines = JournalLineSerializer(many=True, read_only=True)

    class Meta:
        model = JournalEntry
        fields = ("id", "entity", "period", "entry_date", "original_date", "is_correction", "kind", "currency",
                  "source_key", "description", "customer", "invoice", "payment", "credit_note", "refund", "total",
                  "created_at", "created_by", "lines")
        read_only_fields = fields


# --- filters ------------------------------------------------------------------------------------------------


class PeriodFilter(django_filters.FilterSet):
    entity = django_filters.CharFilter(field_name="billing_entity__code", help_text="The entity's code.")
    status = django_filters.ChoiceFilter(choices=AccountingPeriod.Status.choices)

    class Meta:
        model = AccountingPeriod
        fields = ("entity", "status")


class AccountFilter(django_filters.FilterSet):
    entity = django_filters.CharFilter(field_name="billing_entity__code", help_text="The entity's code.")
    role = django_filters.MultipleChoiceFilter(choices=Account.Role.choices)
    type = django_filters.MultipleChoiceFilter(choices=Account.Type.choices)

    class Meta:
        model = Account
        fields = ("entity", "role", "type", "is_active")


class JournalEntryFilter(django_filters.FilterSet):
    entity = django_filters.CharFilter(field_name="billing_entity__code", help_text="The entity's code.")
    kind = django_filters.MultipleChoiceFilter(choices=JournalEntry.Kind.choices)
    currency = django_filters.CharFilter(field_name="currency", max_length=3)
    period = django_filters.NumberFilter(field_name="period_id", help_text="The period's id.")
    customer = django_filters.CharFilter(field_name="customer__external_id", max_length=100,
                                         help_text="The customer's external_id.")
    source_key = django_filters.CharFilter(field_name="source_key", max_length=120)
    entry_date_from = django_filters.DateFilter(field_name="entry_date", lookup_expr="gte", help_text="On or after.")
    entry_date_to = django_filters.DateFilter(field_name="entry_date", lookup_expr="lte", help_text="On or before.")

    class Meta:
        model = JournalEntry
        fields = ("entity", "kind", "currency", "period", "customer", "source_key")


# --- views --------------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List accounting periods", tags=["revenue"]),
    retrieve=extend_schema(summary="Get an accounting period with its close checklist", tags=["revenue"]),
)
class PeriodViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = AccountingPeriodSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = PeriodFilter
    ordering_fields = ("start_date",)
    search_fields: tuple[str, ...] = ()
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[AccountingPeriod]:
        return AccountingPeriod.objects.select_related("billing_entity").order_by("billing_entity__code",
                                                                                  "-start_date")

    @extend_schema(
        summary="The period's journal as an ERP-importable CSV (docs/revrec-journal-export.md)",
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One row per journal line.")},
        tags=["revenue"],
    )
    @action(detail=True, methods=["get"], url_path="journal.csv", url_name="journal-csv",
            renderer_classes=[renderers.JSONRenderer, CSVRenderer])
    def journal_csv(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        period = self.get_object()
        entity = period.billing_entity
        return csv_download(journal_export_csv(entity, period), journal_export_filename(entity, period))

    @extend_schema(
        summary="Close the period (refused with the failing checks)",
        description="Runs the pre-close checklist (documents posted, recognition complete, contracts allocated, "
                    "ledger balanced, roll-forward reconciled...) and closes the period when every blocking check "
                    "passes, posting the unbilled revenue accrual first. A refusal is a 400 naming `period` with "
                    "the failing checks; an already closed period is a 409.",
        request=None, responses={200: AccountingPeriodSerializer}, tags=["revenue"],
    )
    @action(detail=True, methods=["post"])
    def close(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        from revrec.services.close import close_period  # the close service lives with the other writes

        period = close_period(self.get_object(), actor=self.actor, now=self.now())
        return self.render(AccountingPeriod.objects.select_related("billing_entity").get(pk=period.pk),
                           AccountingPeriodSerializer)


@extend_schema_view(
    list=extend_schema(summary="List the chart of accounts", tags=["revenue"]),
    retrieve=extend_schema(summary="Get an account", tags=["revenue"]),
)
class AccountViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = AccountSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = AccountFilter
    ordering_fields = ("code",)
    search_fields = ("code", "name")
    http_method_names = ["get", "head", "options"]

    def get_queryset(self) -> QuerySet[Account]:
        return Account.objects.select_related("billing_entity", "product").order_by("billing_entity__code", "code")


@extend_schema_view(
    list=extend_schema(summary="List journal entries with their lines", tags=["revenue"]),
    retrieve=extend_schema(summary="Get a journal entry with its lines", tags=["revenue"]),
)
class JournalEntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = JournalEntrySerializer
    lookup_value_regex = ID_REGEX
    filterset_class = JournalEntryFilter
    ordering_fields = ("entry_date", "id", "total")
    search_fields = ("source_key", "description")
    http_method_names = ["get", "head", "options"]

    def get_queryset(self) -> QuerySet[JournalEntry]:
        # Lines come with every entry (an ERP reads both); the page size bounds them.
        lines = JournalLine.objects.select_related("account", "customer", "product", "revenue_contract", "entry")
        return (JournalEntry.objects.select_related("billing_entity", "period", "customer")
                .prefetch_related(Prefetch("lines", queryset=lines)).order_by("-entry_date", "-id"))


def register(router: Any) -> None:
    router.register("revrec/periods", PeriodViewSet, basename="revrec-period")
    router.register("revrec/accounts", AccountViewSet, basename="revrec-account")
    router.register("revrec/journal-entries", JournalEntryViewSet, basename="revrec-journal-entry")
