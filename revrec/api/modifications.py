"""/api/v1/revrec/revenue-contracts/{id}/modifications: list a revenue contract's modifications, and record one
(ASC 606-10-25-12/13) through revrec.services.modifications.modify_contract.

The serializers check shapes (decimals, dates, list sizes, the obligations named belong to the contract); the
service checks the rules (the currency's minor unit, the treatment, service periods). The Idempotency-Key,
scoped to the API key that sent it, is also the modification's source_key, so a repeat after the stored
response expired still finds the first modification.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any
from uuid import uuid4

from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api import idempotency
from billing.api.fields import DecimalStringField
from billing.api.models import APIKey
from billing.api.views import BaseAPIView
from billing.errors import BillingError
from contracts.models import Product
from revrec.api.common import ID_REGEX, LedgerMoneyField
from revrec.models import ContractModification, PerformanceObligation, RevenueContract
from revrec.selectors.reports import MAX_DATE, MIN_DATE
from revrec.services.modifications import AddedObligation, ObligationChange, modify_contract

MAX_ID = 2**63 - 1  # bigint: a larger id names nothing
MAX_ITEMS = 100
SOURCE_KEY_LENGTH = 120  # ContractModification.source_key
# The model's money columns: 20 digits, 4 places (the service then checks the currency's minor unit).
AMOUNT = {"max_places": 4, "max_digits": 20}
CONTRACT_PATH_PARAMETER = OpenApiParameter("contract_id", OpenApiTypes.INT, OpenApiParameter.PATH,
                                           description="The revenue contract's id.")


def _check_date(value: Any) -> Any:
    if value is not None and not MIN_DATE <= value <= MAX_DATE:
        raise serializers.ValidationError(f"The date must be between {MIN_DATE} and {MAX_DATE}.")
    return value


def source_key(request: Request) -> str:
    """The modification's source_key: the Idempotency-Key scoped to its API key (hashed when it would not fit
    the column), or a fresh one when the request has none."""
    key = idempotency.key_from(request)
    if key is None:
        return f"api:{uuid4()}"
    owner = request.auth.pk if isinstance(request.auth, APIKey) else "user"
    scoped = f"api:{owner}:{key}"
    if len(scoped) > SOURCE_KEY_LENGTH:
        scoped = f"api:{owner}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return scoped


# --- serializers --------------------------------------------------------------------------------------------


class ObligationChangeInputSerializer(serializers.Serializer):
    obligation = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="The obligation's id.")
    price_change = DecimalStringField(**AMOUNT, required=False, default=Decimal(0),
                                      help_text="Consideration added (negative: removed), in the contract's currency.")
    new_end = serializers.DateField(required=False, allow_null=True, default=None, validators=[_check_date],
                                    help_text="A new end of the service period (exclusive): extension, earlier end.")


class AddedObligationInputSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=300)
    product = serializers.CharField(max_length=100, required=False, allow_null=True, default=None,
                                    help_text="The product's code.")
    price = DecimalStringField(**AMOUNT, min_value=0, help_text="Consideration for it, in the contract's currency.")
    ssp = DecimalStringField(**AMOUNT, min_value=0, required=False, allow_null=True, default=None,
                             help_text="Its standalone selling price (default: the price).")
    service_start = serializers.DateField(required=False, allow_null=True, default=None, validators=[_check_date])
    service_end = serializers.DateField(required=False, allow_null=True, default=None, validators=[_check_date],
                                        help_text="Exclusive.")
    pattern = serializers.ChoiceField(choices=PerformanceObligation.Pattern.choices,
                                      default=PerformanceObligation.Pattern.RATABLE)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("service_start"), attrs.get("service_end")
        if start and end and end <= start:
            raise serializers.ValidationError({"service_end": ["Must be after service_start."]})
        return attrs


class ContractModificationCreateSerializer(serializers.Serializer):
    change = serializers.ChoiceField(choices=ContractModification.Change.choices)
    effective_date = serializers.DateField(validators=[_check_date],
                                           help_text="The modification applies from the start of this day.")
    treatment = serializers.ChoiceField(
        choices=ContractModification.Treatment.choices, required=False, allow_null=True, default=None,
        help_text="Overrides the treatment ASC 606-10-25-12/13 gives for the three facts (the rationale says so).")
    adds_distinct_goods = serializers.BooleanField(help_text="25-12(a): it adds distinct goods or services.")
    priced_at_ssp = serializers.BooleanField(help_text="25-12(b): their price reflects their standalone selling "
                                                       "prices.")
    remaining_distinct = serializers.BooleanField(help_text="25-13: the remaining goods or services are distinct "
                                                            "from those already transferred.")
    obligation_changes = serializers.ListField(child=ObligationChangeInputSerializer(), required=False, default=list,
                                               max_length=MAX_ITEMS)
    added_obligations = serializers.ListField(child=AddedObligationInputSerializer(), required=False, default=list,
                                              max_length=MAX_ITEMS)

    def validate_obligation_changes(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [row["obligation"] for row in rows]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError("Name each obligation once.")
        return rows


class ContractModificationSerializer(serializers.ModelSerializer):
    revenue_contract = serializers.IntegerField(source="revenue_contract_id", read_only=True)
    price_change = LedgerMoneyField(currency_path="revenue_contract.currency",
                                    help_text="Consideration added (or removed).")
    catch_up_amount = LedgerMoneyField(currency_path="revenue_contract.currency",
                                       help_text="Revenue adjusted on the effective date (cumulative catch-up).")
    details = serializers.JSONField(read_only=True, help_text="The facts, and the obligations before and after.")
    separate_contract = serializers.IntegerField(source="separate_contract_id", read_only=True, allow_null=True,
                                                 help_text="The revenue contract a separate-contract treatment made.")

    class Meta:
        model = ContractModification
        fields = ("id", "revenue_contract", "change", "treatment", "rationale", "effective_date", "price_change",
                  "catch_up_amount", "details", "separate_contract", "created_at", "created_by")
        read_only_fields = fields


# --- the view -----------------------------------------------------------------------------------------------


def _contract(contract_id: str) -> RevenueContract:
    if int(contract_id) > MAX_ID:
        raise Http404
    return get_object_or_404(RevenueContract, pk=int(contract_id))


def _changes(contract: RevenueContract, data: dict[str, Any]) -> list[ObligationChange | AddedObligation]:
    """The body's rows as the service's dataclasses; an obligation of another contract names nothing here."""
    rows = data["obligation_changes"]
    found = {o.pk: o for o in PerformanceObligation.objects.filter(
        revenue_contract=contract, pk__in=[row["obligation"] for row in rows])}
    unknown = [row["obligation"] for row in rows if row["obligation"] not in found]
    if unknown:
        raise serializers.ValidationError(
            {"obligation_changes": [f"No obligation {unknown[0]} in revenue contract {contract.pk}."]})
    changes: list[ObligationChange | AddedObligation] = [
        ObligationChange(found[row["obligation"]], price_change=row["price_change"], new_end=row["new_end"])
        for row in rows
    ]
    codes = {row["product"] for row in data["added_obligations"] if row["product"]}
    products = dict(Product.objects.filter(code__in=codes).values_list("code", "pk"))
    for row in data["added_obligations"]:
        if row["product"] and row["product"] not in products:
            raise serializers.ValidationError({"added_obligations": [f"No product with code {row['product']!r}."]})
        changes.append(AddedObligation(
            description=row["description"], price=row["price"], ssp=row["ssp"], service_start=row["service_start"],
            service_end=row["service_end"], pattern=row["pattern"],
            product_id=products[row["product"]] if row["product"] else None,
            kind=(PerformanceObligation.Kind.SUBSCRIPTION if row["pattern"] == PerformanceObligation.Pattern.RATABLE
                  else PerformanceObligation.Kind.ONE_TIME),
        ))
    return changes


def _modifications(contract: RevenueContract) -> QuerySet[ContractModification]:
    return ContractModification.objects.filter(revenue_contract=contract).select_related("revenue_contract").order_by(
        "-effective_date", "-id")


class ContractModificationsView(BaseAPIView):
    serializer_class = ContractModificationSerializer
    filter_backends: list = []

    @extend_schema(summary="List a revenue contract's modifications", parameters=[CONTRACT_PATH_PARAMETER],
                   responses={200: ContractModificationSerializer(many=True)}, tags=["revenue"])
    def get(self, request: Request, contract_id: str) -> Response:
        queryset = _modifications(_contract(contract_id))
        page = self.paginate_queryset(queryset)
        if page is not None:
            return self.get_paginated_response(ContractModificationSerializer(page, many=True).data)
        return Response(ContractModificationSerializer(queryset, many=True).data)

    @extend_schema(
        summary="Record a contract modification",
        description="An upgrade, downgrade, added product, quantity change, extension, price change or "
                    "cancellation, accounted for as a separate contract (25-12), prospectively (25-13a) or by a "
                    "cumulative catch-up (25-13b): the rule applied to the three facts unless `treatment` overrides "
                    "it. Price changes are consideration not billed as invoice lines of their own. With an "
                    "Idempotency-Key, a repeat returns the first modification.",
        parameters=[CONTRACT_PATH_PARAMETER], request=ContractModificationCreateSerializer,
        responses={201: ContractModificationSerializer}, tags=["revenue"],
    )
    def post(self, request: Request, contract_id: str) -> Response:
        contract = _contract(contract_id)
        serializer = ContractModificationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        changes = _changes(contract, data)
        try:
            modification = modify_contract(
                contract, change=data["change"], effective_date=data["effective_date"], obligation_changes=changes,
                treatment=data["treatment"], adds_distinct_goods=data["adds_distinct_goods"],
                priced_at_ssp=data["priced_at_ssp"], remaining_distinct=data["remaining_distinct"],
                actor=self.actor, now=self.now(), source_key=source_key(request),
            )
        except BillingError as error:
            if error.field == "source_key":  # the key recorded a modification of another contract
                raise idempotency.IdempotencyKeyReused() from error
            raise
        # A key found on an older modification (its stored response expired) must name the same change.
        if (modification.change, modification.effective_date) != (data["change"], data["effective_date"]):
            raise idempotency.IdempotencyKeyReused()
        modification = _modifications(contract).get(pk=modification.pk)
        return Response(ContractModificationSerializer(modification).data, status=status.HTTP_201_CREATED)


urlpatterns = [
    re_path(rf"^revrec/revenue-contracts/(?P<contract_id>{ID_REGEX})/modifications$",
            ContractModificationsView.as_view(), name="revrec-revenue-contract-modifications"),
]


def register(router: Any) -> None:
    """No viewset: the one endpoint is in urlpatterns."""
