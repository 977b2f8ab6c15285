"""/api/v1/products, features, plans (+ versions), coupons, contracts, subscriptions (+ changes).

Serializers parse and check shapes; every write goes through contracts.services (catalog, contracts,
subscriptions). Products, features and coupons have no rules beyond their models', which full_clean checks.
"""

from typing import Any

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import F, Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.api.fields import (
    DecimalStringField,
    JSONObjectField,
    JSONValueField,
    MoneyField,
    django_errors_under,
)
from billing.api.serializers import InputSerializer, WritableModelSerializer, update_variant
from billing.api.views import CODE_REGEX, APIViewSet, BaseAPIView, save_clean
from contracts.charge_models import validate_charge_properties, validate_filters, validate_group_by
from contracts.models import (
    BillingInterval,
    BillingTiming,
    Charge,
    Contract,
    ContractCommitment,
    ContractEntitlement,
    ContractPrice,
    Coupon,
    Feature,
    FixedCharge,
    Plan,
    PlanEntitlement,
    PlanVersion,
    Product,
    Subscription,
    SubscriptionChange,
)
from contracts.selectors import current_period, customer_today, entitlements_for_customer
from contracts.services import catalog
from contracts.services import contracts as contract_services
from contracts.services import subscriptions as subscription_services
from customers.models import Customer

# The catalog names a meter without importing the usage app (it sits above contracts).
Meter = Charge._meta.get_field("meter").related_model

# The database columns' precision (contracts.models), so that a value that parses is storable.
QUANTITY_DIGITS = {"max_places": 6, "max_digits": 24}
PERCENT_DIGITS = {"max_places": 6, "max_digits": 9}
NEW_CONTRACT_STATUSES = (("draft", "Draft"), ("active", "Active"))
TIMING_CHOICES = (("immediate", "Now, prorated"), ("period_end", "At the end of the current period"))


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObject(JSONValueField):
    pass


@extend_schema_field({"type": "array", "items": {}})
class JSONArray(JSONValueField):
    pass


def _slug(queryset: QuerySet, field: str = "code", **kwargs: Any) -> serializers.SlugRelatedField:
    return serializers.SlugRelatedField(slug_field=field, queryset=queryset, **kwargs)


def _domain_errors(exc: DjangoValidationError, field: str) -> serializers.ValidationError:
    """Errors of a domain validator about one JSON field, keyed by their path inside it."""
    if hasattr(exc, "error_dict") and set(exc.message_dict) == {field}:
        return serializers.ValidationError(exc.message_dict)
    return django_errors_under(exc, field)


# --- products, features ---------------------------------------------------------------------------------


class ProductSerializer(WritableModelSerializer):
    create_only_fields = ("code",)

    class Meta:
        model = Product
        fields = ("code", "name", "description", "tax_code", "is_active", "created_at", "updated_at")
        read_only_fields = ("created_at", "updated_at")


class FeatureSerializer(WritableModelSerializer):
    create_only_fields = ("code", "kind")

    class Meta:
        model = Feature
        fields = ("code", "name", "description", "kind", "unit", "created_at", "updated_at")
        read_only_fields = ("created_at", "updated_at")


class CatalogViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, APIViewSet
):
    # Plain catalog rows: created and edited with every model rule checked, never deleted (deactivate them).
    # (A comment, not a docstring: the schema generator would copy it into every subclass's operations.)

    lookup_field = "code"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_serializer_class(self) -> type:
        if self.action == "partial_update":
            return update_variant(self.serializer_class)
        return self.serializer_class

    def perform_create(self, serializer: WritableModelSerializer) -> None:
        model = serializer.Meta.model
        serializer.instance = save_clean(model(), actor=self.actor, **serializer.validated_data)

    def perform_update(self, serializer: WritableModelSerializer) -> None:
        save_clean(serializer.instance, actor=self.actor, **serializer.validated_data)


@extend_schema_view(
    list=extend_schema(summary="List products"),
    retrieve=extend_schema(summary="Get a product by code"),
    create=extend_schema(summary="Create a product"),
    partial_update=extend_schema(summary="Update a product"),
)
class ProductViewSet(CatalogViewSet):
    queryset = Product.objects.all()
    serializer_class = ProductSerializer
    filterset_fields = ("is_active", "tax_code")
    search_fields = ("code", "name")
    ordering_fields = ("code", "name", "created_at")


@extend_schema_view(
    list=extend_schema(summary="List features"),
    retrieve=extend_schema(summary="Get a feature by code"),
    create=extend_schema(summary="Create a feature"),
    partial_update=extend_schema(summary="Update a feature"),
)
class FeatureViewSet(CatalogViewSet):
    queryset = Feature.objects.all()
    serializer_class = FeatureSerializer
    filterset_fields = ("kind",)
    search_fields = ("code", "name")
    ordering_fields = ("code", "name", "created_at")


# --- plans and versions ----------------------------------------------------------------------------------


class ChargeSerializer(serializers.ModelSerializer):
    meter = serializers.SlugRelatedField(slug_field="code", read_only=True)
    product = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    properties = serializers.JSONField(help_text="The charge model's prices (decimal strings).")
    filters = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    group_by = serializers.ListField(child=serializers.CharField())
    minimum_amount = MoneyField(allow_null=True)

    class Meta:
        model = Charge
        fields = (
            "id", "meter", "product", "charge_model", "properties", "filters", "group_by", "billing_timing",
            "minimum_amount", "display_name", "position",
        )
        read_only_fields = fields


class FixedChargeSerializer(serializers.ModelSerializer):
    product = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    amount = MoneyField()
    quantity = DecimalStringField()

    class Meta:
        model = FixedCharge
        fields = ("id", "code", "name", "product", "amount", "quantity", "billing_timing", "recurring", "prorated")
        read_only_fields = fields


class PlanEntitlementSerializer(serializers.ModelSerializer):
    feature = serializers.SlugRelatedField(slug_field="code", read_only=True)
    limit = DecimalStringField(allow_null=True)

    class Meta:
        model = PlanEntitlement
        fields = ("feature", "enabled", "limit", "per_unit")
        read_only_fields = fields


class PlanVersionSerializer(serializers.ModelSerializer):
    plan = serializers.SlugRelatedField(slug_field="code", read_only=True)
    base_fee = MoneyField()
    minimum_commitment = MoneyField(allow_null=True)
    charges = ChargeSerializer(many=True, read_only=True)
    fixed_charges = FixedChargeSerializer(many=True, read_only=True)
    entitlements = PlanEntitlementSerializer(many=True, read_only=True)

    class Meta:
        model = PlanVersion
        fields = (
            "plan", "version", "status", "base_fee", "base_fee_timing", "trial_days", "minimum_commitment",
            "published_at", "charges", "fixed_charges", "entitlements", "created_at", "updated_at",
        )
        read_only_fields = fields


class PlanVersionSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = PlanVersion
        fields = ("version", "status", "published_at")
        read_only_fields = fields


class PlanSerializer(WritableModelSerializer):
    # Created through PlanCreateSerializer; afterwards only the name, description and activity change (prices
    # change by a new version).
    product = _slug(Product.objects.all(), help_text="The product's code.")
    currency = serializers.CharField()
    versions = PlanVersionSummarySerializer(many=True, read_only=True)

    create_only_fields = ("code", "product", "currency", "interval")

    class Meta:
        model = Plan
        fields = (
            "code", "name", "description", "product", "currency", "interval", "is_active", "versions",
            "created_at", "updated_at",
        )
        read_only_fields = ("versions", "created_at", "updated_at")


class PlanCreateSerializer(InputSerializer):
    code = serializers.RegexField(CODE_REGEX, max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    product = _slug(Product.objects.all(), help_text="The product's code.")
    currency = serializers.CharField(max_length=3)
    interval = serializers.ChoiceField(choices=BillingInterval.choices)
    base_fee = MoneyField(required=False, help_text="In the plan's currency. Default: 0.")
    base_fee_timing = serializers.ChoiceField(choices=BillingTiming.choices, required=False)
    trial_days = serializers.IntegerField(min_value=0, max_value=3650, required=False)
    minimum_commitment = MoneyField(required=False, allow_null=True, allow_zero=False)

    def validate_currency(self, value: str) -> str:
        from billing.api.fields import CurrencyCodeField

        return CurrencyCodeField().run_validation(value)

    def validate_code(self, value: str) -> str:
        if Plan.objects.filter(code=value).exists():
            raise serializers.ValidationError("A plan with this code already exists.")
        return value


class PlanVersionCreateSerializer(InputSerializer):
    copy_from = serializers.IntegerField(
        min_value=1, required=False, help_text="The version number to copy; default: the latest version."
    )


class PlanVersionUpdateSerializer(InputSerializer):
    base_fee = MoneyField(required=False)
    base_fee_timing = serializers.ChoiceField(choices=BillingTiming.choices, required=False)
    trial_days = serializers.IntegerField(min_value=0, max_value=3650, required=False)
    minimum_commitment = MoneyField(required=False, allow_null=True, allow_zero=False)


class ChargeInputSerializer(InputSerializer):
    meter = _slug(Meter.objects.all(), help_text="The meter's code.")
    charge_model = serializers.ChoiceField(choices=Charge.Model.choices)
    properties = JSONObject(help_text="The charge model's prices: decimal strings, tiers as upper bounds.")
    filters = JSONObject(required=False, exact_numbers=False, help_text='{"region": ["eu"]} bills only those events.')
    group_by = JSONArray(required=False, exact_numbers=False, help_text='Property names, e.g. ["region"].')
    billing_timing = serializers.ChoiceField(choices=BillingTiming.choices, required=False)
    minimum_amount = MoneyField(required=False, allow_null=True, allow_zero=False)
    display_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    product = _slug(Product.objects.all(), required=False, allow_null=True, help_text="Default: the plan's.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Report tier and price problems at their path (properties.tiers[1].up_to) before any write.
        errors: dict[str, Any] = {}
        if "properties" in attrs or "charge_model" in attrs:
            model = attrs.get("charge_model") or getattr(self.instance, "charge_model", "")
            properties = attrs.get("properties", getattr(self.instance, "properties", None))
            try:
                attrs["properties"] = validate_charge_properties(model, properties)
            except DjangoValidationError as exc:
                errors.update(_domain_errors(exc, "properties").detail)
        for name, validate in (("filters", validate_filters), ("group_by", validate_group_by)):
            if name in attrs:
                try:
                    attrs[name] = validate(attrs[name], name)
                except DjangoValidationError as exc:
                    errors.update(exc.message_dict)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ChargeUpdateSerializer(ChargeInputSerializer):
    meter = None  # a charge keeps its meter: remove it and add another instead

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for field in fields.values():
            field.required = False
        return fields


class FixedChargeInputSerializer(InputSerializer):
    code = serializers.RegexField(CODE_REGEX, max_length=100)
    name = serializers.CharField(max_length=200)
    amount = MoneyField(help_text="In the plan's currency.")
    quantity = DecimalStringField(required=False, **QUANTITY_DIGITS)
    billing_timing = serializers.ChoiceField(choices=BillingTiming.choices, required=False)
    recurring = serializers.BooleanField(required=False)
    prorated = serializers.BooleanField(required=False)
    product = _slug(Product.objects.all(), required=False, allow_null=True)


class EntitlementInputSerializer(InputSerializer):
    feature = _slug(Feature.objects.all(), help_text="The feature's code.")
    enabled = serializers.BooleanField(required=False, default=True)
    limit = DecimalStringField(required=False, allow_null=True, **QUANTITY_DIGITS, min_value=0)
    per_unit = serializers.BooleanField(required=False, default=False)


class MigrateSubscriptionsSerializer(InputSerializer):
    to_version = serializers.IntegerField(min_value=1, help_text="A published version of the same plan.")
    timing = serializers.ChoiceField(choices=TIMING_CHOICES, required=False, default="period_end")


class MigrateSubscriptionsResultSerializer(serializers.Serializer):
    migrated = serializers.IntegerField(help_text="How many live subscriptions were moved.")


class PlanFilter(django_filters.FilterSet):
    product = django_filters.CharFilter(field_name="product__code", help_text="The product's code.")
    currency = django_filters.CharFilter(field_name="currency", lookup_expr="iexact")

    class Meta:
        model = Plan
        fields = ("product", "currency", "interval", "is_active")


def _plan_versions() -> QuerySet[PlanVersion]:
    return PlanVersion.objects.select_related("plan").prefetch_related(
        Prefetch("charges", queryset=Charge.objects.select_related("meter", "product")),
        Prefetch("fixed_charges", queryset=FixedCharge.objects.select_related("product")),
        Prefetch("entitlements", queryset=PlanEntitlement.objects.select_related("feature").order_by("feature__code")),
    )


@extend_schema_view(
    list=extend_schema(summary="List plans"),
    retrieve=extend_schema(summary="Get a plan by code"),
    create=extend_schema(
        summary="Create a plan with a draft version 1",
        request=PlanCreateSerializer,
        responses={201: PlanVersionSerializer},
        description="Returns the draft version 1; add its charges, then publish it.",
    ),
    partial_update=extend_schema(summary="Rename, describe or (de)activate a plan"),
)
class PlanViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, APIViewSet
):
    queryset = Plan.objects.select_related("product").prefetch_related("versions")
    serializer_class = PlanSerializer
    lookup_field = "code"
    filterset_class = PlanFilter
    search_fields = ("code", "name")
    ordering_fields = ("code", "name", "created_at")
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_serializer_class(self) -> type:
        if self.action == "create":
            return PlanCreateSerializer
        if self.action == "partial_update":
            return update_variant(PlanSerializer)
        return PlanSerializer

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(PlanCreateSerializer)
        plan = catalog.create_plan(actor=self.actor, **data)
        return self.render(_plan_versions().get(plan=plan, version=1), PlanVersionSerializer, status.HTTP_201_CREATED)

    def perform_update(self, serializer: PlanSerializer) -> None:
        save_clean(serializer.instance, actor=self.actor, **serializer.validated_data)


PLAN_PATH_PARAMETER = OpenApiParameter(
    "plan_code", OpenApiTypes.STR, OpenApiParameter.PATH, description="The plan's code."
)
VERSION_PATH_PARAMETER = OpenApiParameter(
    "version", OpenApiTypes.INT, OpenApiParameter.PATH, description="The version number."
)
CHARGE_PATH_PARAMETER = OpenApiParameter(
    "charge_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The charge's id."
)


@extend_schema_view(
    list=extend_schema(summary="List a plan's versions", parameters=[PLAN_PATH_PARAMETER]),
    retrieve=extend_schema(
        summary="Get a plan version with its charges, fixed charges and entitlements",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
    ),
    create=extend_schema(
        summary="Create a new draft version (a copy of the latest, or of copy_from)",
        parameters=[PLAN_PATH_PARAMETER],
        request=PlanVersionCreateSerializer,
        responses={201: PlanVersionSerializer},
    ),
    partial_update=extend_schema(
        summary="Change a draft version's base fee, timing, trial or minimum",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
        request=PlanVersionUpdateSerializer,
        responses={200: PlanVersionSerializer},
    ),
)
class PlanVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, APIViewSet
):
    serializer_class = PlanVersionSerializer
    lookup_field = "version"
    lookup_value_regex = r"\d+"
    filterset_fields = ("status",)
    ordering_fields = ("version", "published_at")
    ordering = ("-version",)
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def plan(self) -> Plan:
        if not hasattr(self, "_plan"):
            self._plan = get_object_or_404(Plan, code=self.kwargs["plan_code"])
        return self._plan

    def get_queryset(self) -> QuerySet[PlanVersion]:
        if getattr(self, "swagger_fake_view", False):
            return PlanVersion.objects.none()
        return _plan_versions().filter(plan=self.plan())

    def _reload(self, version: PlanVersion) -> PlanVersion:
        return _plan_versions().get(pk=version.pk)

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(PlanVersionCreateSerializer)
        plan = self.plan()
        copy_from = None
        if "copy_from" in data:
            copy_from = plan.versions.filter(version=data["copy_from"]).first()
            if copy_from is None:
                message = f"Plan {plan.code} has no version {data['copy_from']}."
                raise serializers.ValidationError({"copy_from": [message]})
        version = catalog.create_plan_version(plan, actor=self.actor, copy_from=copy_from)
        return self.render(self._reload(version), PlanVersionSerializer, status.HTTP_201_CREATED)

    def partial_update(self, request, *args: Any, **kwargs: Any) -> Response:
        version = self.get_object()
        data = self.parse(PlanVersionUpdateSerializer)
        version = catalog.update_plan_version(version, actor=self.actor, **data)
        return self.render(self._reload(version), PlanVersionSerializer)

    @extend_schema(
        summary="Publish a draft version (its prices become immutable)",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
        request=None,
        responses={200: PlanVersionSerializer},
    )
    @action(detail=True, methods=["post"])
    def publish(self, request, *args: Any, **kwargs: Any) -> Response:
        version = catalog.publish_plan_version(self.get_object(), actor=self.actor, now=self.now())
        return self.render(self._reload(version), PlanVersionSerializer)

    @extend_schema(
        summary="Archive a published version (no new subscriptions; existing ones keep it)",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
        request=None,
        responses={200: PlanVersionSerializer},
    )
    @action(detail=True, methods=["post"])
    def archive(self, request, *args: Any, **kwargs: Any) -> Response:
        version = catalog.archive_plan_version(self.get_object(), actor=self.actor)
        return self.render(self._reload(version), PlanVersionSerializer)

    @extend_schema(
        summary="Add a usage charge to a draft version",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
        request=ChargeInputSerializer,
        responses={201: ChargeSerializer},
    )
    @action(detail=True, methods=["post"])
    def charges(self, request, *args: Any, **kwargs: Any) -> Response:
        version = self.get_object()
        data = self.parse(ChargeInputSerializer)
        charge = catalog.add_charge(version, actor=self.actor, **data)
        return self.render(charge, ChargeSerializer, status.HTTP_201_CREATED)

    @extend_schema(
        methods=["PATCH"],
        summary="Change a usage charge of a draft version",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER, CHARGE_PATH_PARAMETER],
        request=ChargeUpdateSerializer,
        responses={200: ChargeSerializer},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Remove a usage charge from a draft version",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER, CHARGE_PATH_PARAMETER],
        request=None,
        responses={204: None},
    )
    @action(detail=True, methods=["patch", "delete"], url_path=r"charges/(?P<charge_id>\d+)")
    def charge(self, request, *args: Any, charge_id: str, **kwargs: Any) -> Response:
        version = self.get_object()
        charge = get_object_or_404(version.charges.all(), pk=int(charge_id))
        if request.method == "DELETE":
            catalog.remove_charge(charge, actor=self.actor)
            return Response(status=status.HTTP_204_NO_CONTENT)
        serializer = ChargeUpdateSerializer(instance=charge, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        charge = catalog.update_charge(charge, actor=self.actor, **serializer.validated_data)
        return self.render(Charge.objects.select_related("meter", "product").get(pk=charge.pk), ChargeSerializer)

    @extend_schema(
        summary="Add a fixed charge to a draft version",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
        request=FixedChargeInputSerializer,
        responses={201: FixedChargeSerializer},
    )
    @action(detail=True, methods=["post"], url_path="fixed-charges")
    def fixed_charges(self, request, *args: Any, **kwargs: Any) -> Response:
        version = self.get_object()
        data = self.parse(FixedChargeInputSerializer)
        if version.plan.versions.filter(pk=version.pk, fixed_charges__code=data["code"]).exists():
            raise serializers.ValidationError({"code": ["This version already has a fixed charge with this code."]})
        fixed = catalog.add_fixed_charge(version, actor=self.actor, **data)
        return self.render(fixed, FixedChargeSerializer, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Grant (or change) a feature on a draft version",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
        request=EntitlementInputSerializer,
        responses={200: PlanEntitlementSerializer},
    )
    @action(detail=True, methods=["post"])
    def entitlements(self, request, *args: Any, **kwargs: Any) -> Response:
        version = self.get_object()
        data = self.parse(EntitlementInputSerializer)
        entitlement = catalog.set_entitlement(version, actor=self.actor, **data)
        return self.render(entitlement, PlanEntitlementSerializer)

    @extend_schema(
        summary="Move every live subscription of this version to another version of the plan",
        parameters=[PLAN_PATH_PARAMETER, VERSION_PATH_PARAMETER],
        request=MigrateSubscriptionsSerializer,
        responses={200: MigrateSubscriptionsResultSerializer},
    )
    @action(detail=True, methods=["post"], url_path="migrate-subscriptions")
    def migrate_subscriptions(self, request, *args: Any, **kwargs: Any) -> Response:
        version = self.get_object()
        data = self.parse(MigrateSubscriptionsSerializer)
        target = version.plan.versions.filter(version=data["to_version"]).first()
        if target is None:
            raise serializers.ValidationError({"to_version": [f"Plan {version.plan.code} has no such version."]})
        with transaction.atomic():
            moved = catalog.migrate_subscriptions(
                version, target, actor=self.actor, now=self.now(), timing=data["timing"]
            )
        return Response({"migrated": moved})


# --- coupons ---------------------------------------------------------------------------------------------


class CouponSerializer(WritableModelSerializer):
    percent_off = DecimalStringField(required=False, allow_null=True, **PERCENT_DIGITS, min_value=0)
    amount_off = MoneyField(required=False, allow_null=True, allow_zero=False)
    applies_to_plans = _slug(Plan.objects.all(), many=True, required=False, help_text="Plan codes; empty: all.")
    applies_to_meters = _slug(
        Meter.objects.all(), many=True, required=False, help_text="Only charges on these meters; empty: all."
    )

    create_only_fields = ("code", "discount_type", "percent_off", "amount_off", "duration", "duration_periods")

    class Meta:
        model = Coupon
        fields = (
            "code", "name", "discount_type", "percent_off", "amount_off", "duration", "duration_periods",
            "applies_to_plans", "applies_to_meters", "max_redemptions", "redeem_by", "is_active",
            "created_at", "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The discount must match its type, and a repeating coupon needs its number of periods. (The database
        # check passes NULLs, as SQL CHECKs do, so a coupon without any discount would otherwise get in.)
        if self.instance is not None:
            return attrs
        errors: dict[str, list[str]] = {}
        kind, duration = attrs.get("discount_type"), attrs.get("duration", Coupon.Duration.ONCE)
        if kind == Coupon.DiscountType.PERCENTAGE:
            if attrs.get("percent_off") is None:
                errors["percent_off"] = ["A percentage coupon needs percent_off (above 0, at most 100)."]
            if attrs.get("amount_off") is not None:
                errors["amount_off"] = ["A percentage coupon takes no amount_off."]
        elif kind == Coupon.DiscountType.FIXED:
            if attrs.get("amount_off") is None:
                errors["amount_off"] = ["A fixed coupon needs amount_off."]
            if attrs.get("percent_off") is not None:
                errors["percent_off"] = ["A fixed coupon takes no percent_off."]
        if duration == Coupon.Duration.REPEATING and not attrs.get("duration_periods"):
            errors["duration_periods"] = ["A repeating coupon needs its number of periods."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


@extend_schema_view(
    list=extend_schema(summary="List coupons"),
    retrieve=extend_schema(summary="Get a coupon by code"),
    create=extend_schema(summary="Create a coupon"),
    partial_update=extend_schema(summary="Update a coupon (its discount is fixed once created)"),
)
class CouponViewSet(CatalogViewSet):
    queryset = Coupon.objects.prefetch_related("applies_to_plans", "applies_to_meters")
    serializer_class = CouponSerializer
    filterset_fields = ("is_active", "discount_type", "duration")
    search_fields = ("code", "name")
    ordering_fields = ("code", "name", "created_at")

    def _save(self, coupon: Coupon, data: dict[str, Any]) -> Coupon:
        plans = data.pop("applies_to_plans", None)
        meters = data.pop("applies_to_meters", None)
        with transaction.atomic():
            save_clean(coupon, actor=self.actor, **data)
            if plans is not None:
                coupon.applies_to_plans.set(plans)
            if meters is not None:
                coupon.applies_to_meters.set(meters)
        return self.get_queryset().get(pk=coupon.pk)

    def perform_create(self, serializer: CouponSerializer) -> None:
        serializer.instance = self._save(Coupon(), dict(serializer.validated_data))

    def perform_update(self, serializer: CouponSerializer) -> None:
        serializer.instance = self._save(serializer.instance, dict(serializer.validated_data))


# --- contracts ---------------------------------------------------------------------------------------------


class ContractPriceSerializer(serializers.ModelSerializer):
    plan = serializers.CharField(source="plan_version.plan.code", read_only=True)
    plan_version = serializers.IntegerField(source="plan_version.version", read_only=True)
    charge = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True, help_text="The usage charge's id.")
    fixed_charge = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    amount = MoneyField(allow_null=True)
    charge_model = serializers.ChoiceField(
        choices=Charge.Model.choices, allow_blank=True, read_only=True, help_text="Empty unless target=charge."
    )
    properties = serializers.JSONField()

    class Meta:
        model = ContractPrice
        fields = (
            "id", "target", "plan", "plan_version", "charge", "fixed_charge", "amount", "charge_model",
            "properties", "effective_from", "effective_to",
        )
        read_only_fields = fields


class ContractCommitmentSerializer(serializers.ModelSerializer):
    amount = MoneyField()

    class Meta:
        model = ContractCommitment
        fields = ("id", "kind", "amount", "period", "start_date", "end_date", "description")
        read_only_fields = fields


class ContractEntitlementSerializer(serializers.ModelSerializer):
    feature = serializers.SlugRelatedField(slug_field="code", read_only=True)
    limit = DecimalStringField(allow_null=True)

    class Meta:
        model = ContractEntitlement
        fields = ("feature", "enabled", "limit")
        read_only_fields = fields


class ContractSerializer(serializers.ModelSerializer):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    currency = serializers.CharField(read_only=True)
    renewal_uplift_percent = DecimalStringField()
    metadata = JSONObjectField()
    prices = ContractPriceSerializer(many=True, read_only=True)
    commitments = ContractCommitmentSerializer(many=True, read_only=True)
    entitlements = ContractEntitlementSerializer(many=True, read_only=True)
    subscriptions = serializers.SlugRelatedField(
        slug_field="external_id", many=True, read_only=True, help_text="External ids of its subscriptions."
    )

    class Meta:
        model = Contract
        fields = (
            "reference", "customer", "name", "status", "currency", "start_date", "end_date", "auto_renew",
            "renewal_term_months", "renewal_uplift_percent", "signed_at", "notes", "metadata", "prices",
            "commitments", "entitlements", "subscriptions", "created_at", "updated_at",
        )
        read_only_fields = fields


class ContractCreateSerializer(InputSerializer):
    customer = _slug(Customer.objects.all(), "external_id", help_text="The customer's external_id.")
    reference = serializers.RegexField(CODE_REGEX, max_length=100)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=NEW_CONTRACT_STATUSES, required=False, help_text="Default: active.")
    currency = serializers.CharField(max_length=3, required=False, help_text="Default: the customer's.")
    start_date = serializers.DateField()
    end_date = serializers.DateField(required=False, allow_null=True, help_text="First day after the term.")
    auto_renew = serializers.BooleanField(required=False)
    renewal_term_months = serializers.IntegerField(min_value=1, max_value=120, required=False, allow_null=True)
    renewal_uplift_percent = DecimalStringField(required=False, **PERCENT_DIGITS, min_value=0)
    signed_at = serializers.DateField(required=False, allow_null=True)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    metadata = JSONObjectField(required=False)

    def validate_currency(self, value: str) -> str:
        from billing.api.fields import CurrencyCodeField

        return CurrencyCodeField().run_validation(value)

    def validate_reference(self, value: str) -> str:
        if Contract.objects.filter(reference=value).exists():
            raise serializers.ValidationError("A contract with this reference already exists.")
        return value


class PlanVersionRefMixin(serializers.Serializer):
    """A plan version named by plan code and version number (default: the latest published version)."""

    plan = serializers.CharField(max_length=100, help_text="The plan's code.")
    plan_version = serializers.IntegerField(
        min_value=1, required=False, help_text="The version number; default: the latest published version."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        attrs["plan_version"] = resolve_plan_version(attrs.pop("plan"), attrs.get("plan_version"))
        return attrs


def resolve_plan_version(plan_code: str, number: int | None) -> PlanVersion:
    plan = Plan.objects.filter(code=plan_code).first()
    if plan is None:
        raise serializers.ValidationError({"plan": [f"Unknown plan '{plan_code[:100]}'."]})
    versions = plan.versions.select_related("plan")
    if number is None:
        version = versions.filter(status=PlanVersion.Status.PUBLISHED).order_by("-version").first()
        if version is None:
            raise serializers.ValidationError({"plan_version": [f"Plan {plan.code} has no published version."]})
        return version
    version = versions.filter(version=number).first()
    if version is None:
        raise serializers.ValidationError({"plan_version": [f"Plan {plan.code} has no version {number}."]})
    return version


class ContractPriceInputSerializer(PlanVersionRefMixin, InputSerializer):
    target = serializers.ChoiceField(choices=ContractPrice.Target.choices)
    plan_version = serializers.IntegerField(min_value=1, help_text="The version number.")
    charge = serializers.IntegerField(required=False, allow_null=True, help_text="target=charge: the charge's id.")
    fixed_charge = serializers.CharField(
        required=False, allow_null=True, help_text="target=fixed_charge: the fixed charge's code."
    )
    amount = MoneyField(required=False, allow_null=True, help_text="target=base_fee or fixed_charge.")
    charge_model = serializers.ChoiceField(choices=Charge.Model.choices, required=False, allow_blank=True)
    properties = JSONObject(required=False, help_text="target=charge: the negotiated prices.")
    effective_from = serializers.DateField(required=False, allow_null=True)
    effective_to = serializers.DateField(required=False, allow_null=True, help_text="First day no longer priced so.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        version: PlanVersion = attrs["plan_version"]
        if attrs.get("charge") is not None:
            charge = version.charges.filter(pk=attrs["charge"]).first()
            if charge is None:
                raise serializers.ValidationError({"charge": [f"{version} has no charge {attrs['charge']}."]})
            attrs["charge"] = charge
        if attrs.get("fixed_charge"):
            fixed = version.fixed_charges.filter(code=attrs["fixed_charge"]).first()
            if fixed is None:
                raise serializers.ValidationError({"fixed_charge": [f"{version} has no fixed charge with this code."]})
            attrs["fixed_charge"] = fixed
        if attrs.get("properties") is not None and attrs.get("target") == ContractPrice.Target.CHARGE:
            model = attrs.get("charge_model") or (attrs["charge"].charge_model if attrs.get("charge") else "")
            try:
                attrs["properties"] = validate_charge_properties(model, attrs["properties"])
            except DjangoValidationError as exc:
                raise _domain_errors(exc, "properties") from None
        return attrs


class CommitmentInputSerializer(InputSerializer):
    kind = serializers.ChoiceField(choices=ContractCommitment.Kind.choices)
    amount = MoneyField(allow_zero=False, help_text="In the contract's currency.")
    period = serializers.ChoiceField(choices=ContractCommitment.Period.choices, required=False)
    start_date = serializers.DateField(required=False, allow_null=True)
    end_date = serializers.DateField(required=False, allow_null=True)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)


class ContractEntitlementInputSerializer(InputSerializer):
    feature = _slug(Feature.objects.all(), help_text="The feature's code.")
    enabled = serializers.BooleanField(required=False, default=True)
    limit = DecimalStringField(required=False, allow_null=True, **QUANTITY_DIGITS, min_value=0)


class CancelInputSerializer(InputSerializer):
    at_period_end = serializers.BooleanField(
        required=False, default=False, help_text="False: now (prorated, with a credit); true: at period end."
    )
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ContractFilter(django_filters.FilterSet):
    customer = django_filters.CharFilter(field_name="customer__external_id", help_text="The customer's external_id.")
    currency = django_filters.CharFilter(field_name="currency", lookup_expr="iexact")
    start_after = django_filters.DateFilter(field_name="start_date", lookup_expr="gte")
    start_before = django_filters.DateFilter(field_name="start_date", lookup_expr="lt")

    class Meta:
        model = Contract
        fields = ("customer", "status", "currency", "auto_renew")


def _contracts() -> QuerySet[Contract]:
    return Contract.objects.select_related("customer").prefetch_related(
        Prefetch(
            "prices",
            queryset=ContractPrice.objects.select_related("plan_version__plan", "fixed_charge").order_by(
                "target", "plan_version_id", "charge_id", "fixed_charge_id", F("effective_from").asc(nulls_first=True)
            ),
        ),
        "commitments",
        Prefetch("entitlements", queryset=ContractEntitlement.objects.select_related("feature")),
        Prefetch("subscriptions", queryset=Subscription.objects.only("id", "external_id", "contract_id")),
    )


CONTRACT_ACTION_RESPONSES = {200: ContractSerializer}


@extend_schema_view(
    list=extend_schema(summary="List contracts"),
    retrieve=extend_schema(summary="Get a contract by reference, with its prices, commitments and entitlements"),
    create=extend_schema(
        summary="Create a contract", request=ContractCreateSerializer, responses={201: ContractSerializer}
    ),
)
class ContractViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, APIViewSet):
    serializer_class = ContractSerializer
    lookup_field = "reference"
    filterset_class = ContractFilter
    search_fields = ("reference", "name", "customer__external_id", "customer__name")
    ordering_fields = ("start_date", "end_date", "reference", "created_at")
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[Contract]:
        return _contracts()

    def get_serializer_class(self) -> type:
        return ContractCreateSerializer if self.action == "create" else ContractSerializer

    def _rendered(self, contract: Contract, code: int = status.HTTP_200_OK) -> Response:
        return self.render(_contracts().get(pk=contract.pk), ContractSerializer, code)

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(ContractCreateSerializer)
        contract = contract_services.create_contract(actor=self.actor, **data)
        return self._rendered(contract, status.HTTP_201_CREATED)

    @extend_schema(summary="Activate a draft contract", request=None, responses=CONTRACT_ACTION_RESPONSES)
    @action(detail=True, methods=["post"])
    def activate(self, request, reference: str) -> Response:
        return self._rendered(contract_services.activate_contract(self.get_object(), actor=self.actor))

    @extend_schema(
        summary="Renew the contract's term (with its uplift); its subscriptions follow",
        request=None,
        responses=CONTRACT_ACTION_RESPONSES,
    )
    @action(detail=True, methods=["post"])
    def renew(self, request, reference: str) -> Response:
        contract = contract_services.renew_contract(self.get_object(), actor=self.actor, now=self.now())
        return self._rendered(contract)

    @extend_schema(
        summary="Cancel the contract and its live subscriptions", request=CancelInputSerializer,
        responses=CONTRACT_ACTION_RESPONSES,
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, reference: str) -> Response:
        contract = self.get_object()
        data = self.parse(CancelInputSerializer)
        contract = contract_services.cancel_contract(contract, actor=self.actor, now=self.now(), **data)
        return self._rendered(contract)

    @extend_schema(
        summary="Set a negotiated price (several with consecutive dates form a ramp)",
        request=ContractPriceInputSerializer,
        responses={201: ContractPriceSerializer},
    )
    @action(detail=True, methods=["post"])
    def prices(self, request, reference: str) -> Response:
        contract = self.get_object()
        data = self.parse(ContractPriceInputSerializer)
        price = contract_services.set_contract_price(contract, actor=self.actor, **data)
        price = ContractPrice.objects.select_related("plan_version__plan", "fixed_charge").get(pk=price.pk)
        return self.render(price, ContractPriceSerializer, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Add a minimum-spend or prepaid commitment",
        request=CommitmentInputSerializer,
        responses={201: ContractCommitmentSerializer},
    )
    @action(detail=True, methods=["post"])
    def commitments(self, request, reference: str) -> Response:
        contract = self.get_object()
        data = self.parse(CommitmentInputSerializer)
        commitment = contract_services.add_commitment(contract, actor=self.actor, **data)
        return self.render(commitment, ContractCommitmentSerializer, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Set a negotiated entitlement (replaces the plan's for this contract)",
        request=ContractEntitlementInputSerializer,
        responses={200: ContractEntitlementSerializer},
    )
    @action(detail=True, methods=["post"])
    def entitlements(self, request, reference: str) -> Response:
        contract = self.get_object()
        data = self.parse(ContractEntitlementInputSerializer)
        entitlement = contract_services.set_contract_entitlement(contract, actor=self.actor, **data)
        return self.render(entitlement, ContractEntitlementSerializer)


# --- subscriptions -------------------------------------------------------------------------------------------


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField(help_text="First day of the next period.")


class PlanVersionRefSerializer(serializers.Serializer):
    plan = serializers.CharField(help_text="The plan's code.")
    version = serializers.IntegerField()


extend_schema_field_period = extend_schema_field(PeriodSerializer(allow_null=True))
extend_schema_field_version = extend_schema_field(PlanVersionRefSerializer(allow_null=True))


class SubscriptionSerializer(serializers.ModelSerializer):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    contract = serializers.SlugRelatedField(slug_field="reference", read_only=True, allow_null=True)
    plan = serializers.CharField(source="plan_version.plan.code", read_only=True)
    plan_version = serializers.IntegerField(source="plan_version.version", read_only=True)
    quantity = DecimalStringField()
    metadata = JSONObjectField()
    current_period = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = (
            "external_id", "customer", "contract", "plan", "plan_version", "quantity", "status",
            "billing_anchor", "bill_cycle_day", "start_date", "trial_end_date", "end_date", "canceled_at",
            "paused_on", "current_period", "metadata", "created_at", "updated_at",
        )
        read_only_fields = fields

    @extend_schema_field_period
    def get_current_period(self, subscription: Subscription) -> dict[str, Any] | None:
        period = current_period(subscription, now=self.context["now"]) if "now" in self.context else None
        return None if period is None else PeriodSerializer(period).data


class SubscriptionCreateSerializer(PlanVersionRefMixin, InputSerializer):
    external_id = serializers.RegexField(CODE_REGEX, max_length=100, required=False, help_text="Default: generated.")
    customer = _slug(Customer.objects.all(), "external_id", help_text="The customer's external_id.")
    contract = _slug(Contract.objects.all(), "reference", required=False, allow_null=True)
    quantity = DecimalStringField(required=False, **QUANTITY_DIGITS, allow_zero=False, min_value=0)
    start_date = serializers.DateField(required=False, help_text="Default: today in the customer's timezone.")
    billing_anchor = serializers.ChoiceField(choices=Subscription.Anchor.choices, required=False)
    bill_cycle_day = serializers.IntegerField(min_value=1, max_value=31, required=False, allow_null=True)
    trial_days = serializers.IntegerField(min_value=0, max_value=3650, required=False, allow_null=True)
    end_date = serializers.DateField(required=False, allow_null=True, help_text="First day no longer served.")
    metadata = JSONObjectField(required=False)

    def validate_external_id(self, value: str) -> str:
        if Subscription.objects.filter(external_id=value).exists():
            raise serializers.ValidationError("A subscription with this external_id already exists.")
        return value


class ChangePlanSerializer(PlanVersionRefMixin, InputSerializer):
    plan = serializers.CharField(max_length=100, required=False, help_text="Default: the current plan.")
    timing = serializers.ChoiceField(
        choices=TIMING_CHOICES, required=False, allow_null=True,
        help_text="Default: upgrades now (prorated), downgrades at period end.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "plan" not in attrs:
            attrs["plan"] = self.context["subscription"].plan_version.plan.code
        return super().validate(attrs)


class ChangeQuantitySerializer(InputSerializer):
    quantity = DecimalStringField(**QUANTITY_DIGITS, allow_zero=False, min_value=0)
    timing = serializers.ChoiceField(
        choices=TIMING_CHOICES, required=False, allow_null=True,
        help_text="Default: increases now (prorated), decreases at period end.",
    )


class RenewInputSerializer(InputSerializer):
    new_end_date = serializers.DateField(
        required=False, allow_null=True, help_text="Default: the contract's renewal term, or a year."
    )


class SubscriptionChangeSerializer(serializers.ModelSerializer):
    subscription = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    from_plan_version = serializers.SerializerMethodField()
    to_plan_version = serializers.SerializerMethodField()
    from_quantity = DecimalStringField(allow_null=True)
    to_quantity = DecimalStringField(allow_null=True)
    details = serializers.JSONField()
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = SubscriptionChange
        fields = (
            "id", "subscription", "action", "status", "effective_date", "from_status", "to_status",
            "from_plan_version", "to_plan_version", "from_quantity", "to_quantity", "details", "actor",
            "created_at", "applied_at",
        )
        read_only_fields = fields

    @staticmethod
    def _version(version: PlanVersion | None) -> dict[str, Any] | None:
        return None if version is None else {"plan": version.plan.code, "version": version.version}

    @extend_schema_field_version
    def get_from_plan_version(self, change: SubscriptionChange) -> dict[str, Any] | None:
        return self._version(change.from_plan_version)

    @extend_schema_field_version
    def get_to_plan_version(self, change: SubscriptionChange) -> dict[str, Any] | None:
        return self._version(change.to_plan_version)


class SubscriptionActionResultSerializer(serializers.Serializer):
    subscription = SubscriptionSerializer()
    change = SubscriptionChangeSerializer(help_text="The change recorded: applied now, or scheduled.")


class SubscriptionFilter(django_filters.FilterSet):
    customer = django_filters.CharFilter(field_name="customer__external_id", help_text="The customer's external_id.")
    plan = django_filters.CharFilter(field_name="plan_version__plan__code", help_text="The plan's code.")
    plan_version = django_filters.NumberFilter(field_name="plan_version__version")
    contract = django_filters.CharFilter(field_name="contract__reference", help_text="The contract's reference.")
    status = django_filters.MultipleChoiceFilter(choices=Subscription.Status.choices)
    start_after = django_filters.DateFilter(field_name="start_date", lookup_expr="gte")
    start_before = django_filters.DateFilter(field_name="start_date", lookup_expr="lt")

    class Meta:
        model = Subscription
        fields = ("customer", "plan", "plan_version", "contract", "status", "billing_anchor")


def _subscriptions() -> QuerySet[Subscription]:
    return Subscription.objects.select_related("customer", "contract", "plan_version__plan")


@extend_schema_view(
    list=extend_schema(summary="List subscriptions"),
    retrieve=extend_schema(summary="Get a subscription by external_id"),
    create=extend_schema(
        summary="Subscribe a customer to a plan version",
        request=SubscriptionCreateSerializer,
        responses={201: SubscriptionSerializer},
    ),
)
class SubscriptionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, APIViewSet):
    serializer_class = SubscriptionSerializer
    lookup_field = "external_id"
    filterset_class = SubscriptionFilter
    search_fields = ("external_id", "customer__external_id", "customer__name")
    ordering_fields = ("start_date", "end_date", "created_at", "external_id")
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[Subscription]:
        return _subscriptions()

    def get_serializer_class(self) -> type:
        return SubscriptionCreateSerializer if self.action == "create" else SubscriptionSerializer

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "now": self.now()}

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(SubscriptionCreateSerializer)
        subscription = subscription_services.create_subscription(actor=self.actor, now=self.now(), **data)
        return self.render(_subscriptions().get(pk=subscription.pk), SubscriptionSerializer, status.HTTP_201_CREATED)

    def _result(self, change: SubscriptionChange) -> Response:
        change = SubscriptionChange.objects.select_related("from_plan_version__plan", "to_plan_version__plan").get(
            pk=change.pk
        )
        body = {"subscription": _subscriptions().get(pk=change.subscription_id), "change": change}
        return self.render(body, SubscriptionActionResultSerializer)

    @extend_schema(
        summary="Change plan (upgrades now with proration, downgrades at period end, unless timing says)",
        request=ChangePlanSerializer,
        responses={200: SubscriptionActionResultSerializer},
    )
    @action(detail=True, methods=["post"], url_path="change-plan")
    def change_plan(self, request, external_id: str) -> Response:
        subscription = self.get_object()
        data = self.parse(ChangePlanSerializer, subscription=subscription)
        change = subscription_services.change_plan(
            subscription, data["plan_version"], actor=self.actor, now=self.now(), timing=data.get("timing")
        )
        return self._result(change)

    @extend_schema(
        summary="Change the quantity (seats)",
        request=ChangeQuantitySerializer,
        responses={200: SubscriptionActionResultSerializer},
    )
    @action(detail=True, methods=["post"], url_path="change-quantity")
    def change_quantity(self, request, external_id: str) -> Response:
        subscription = self.get_object()
        data = self.parse(ChangeQuantitySerializer)
        change = subscription_services.change_quantity(
            subscription, data["quantity"], actor=self.actor, now=self.now(), timing=data.get("timing")
        )
        return self._result(change)

    @extend_schema(
        summary="Pause service and billing", request=None, responses={200: SubscriptionActionResultSerializer}
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, external_id: str) -> Response:
        change = subscription_services.pause_subscription(self.get_object(), actor=self.actor, now=self.now())
        return self._result(change)

    @extend_schema(summary="Resume a paused subscription", request=None,
                   responses={200: SubscriptionActionResultSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, external_id: str) -> Response:
        change = subscription_services.resume_subscription(self.get_object(), actor=self.actor, now=self.now())
        return self._result(change)

    @extend_schema(
        summary="Cancel now (prorated, with a credit) or at period end",
        request=CancelInputSerializer,
        responses={200: SubscriptionActionResultSerializer},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, external_id: str) -> Response:
        subscription = self.get_object()
        data = self.parse(CancelInputSerializer)
        change = subscription_services.cancel_subscription(subscription, actor=self.actor, now=self.now(), **data)
        return self._result(change)

    @extend_schema(
        summary="Extend the subscription's term",
        request=RenewInputSerializer,
        responses={200: SubscriptionActionResultSerializer},
    )
    @action(detail=True, methods=["post"])
    def renew(self, request, external_id: str) -> Response:
        subscription = self.get_object()
        data = self.parse(RenewInputSerializer)
        change = subscription_services.renew_subscription(
            subscription, actor=self.actor, now=self.now(), new_end_date=data.get("new_end_date")
        )
        return self._result(change)


CUSTOMER_PATH_PARAMETER = OpenApiParameter(
    "customer_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The customer's external_id."
)
SUBSCRIPTION_PATH_PARAMETER = OpenApiParameter(
    "subscription_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The subscription's external_id."
)


class SubscriptionChangeFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=SubscriptionChange.Status.choices)
    action = django_filters.MultipleChoiceFilter(choices=SubscriptionChange.Action.choices)

    class Meta:
        model = SubscriptionChange
        fields = ("status", "action")


@extend_schema_view(
    list=extend_schema(
        summary="A subscription's changes: applied history and scheduled changes (?status=scheduled)",
        parameters=[SUBSCRIPTION_PATH_PARAMETER],
    ),
    retrieve=extend_schema(summary="Get one change", parameters=[SUBSCRIPTION_PATH_PARAMETER]),
)
class SubscriptionChangeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = SubscriptionChangeSerializer
    lookup_value_regex = r"\d+"
    filterset_class = SubscriptionChangeFilter
    ordering_fields = ("effective_date", "created_at")
    ordering = ("created_at", "id")
    http_method_names = ["get", "post", "head", "options"]

    def subscription(self) -> Subscription:
        if not hasattr(self, "_subscription"):
            self._subscription = get_object_or_404(Subscription, external_id=self.kwargs["subscription_external_id"])
        return self._subscription

    def get_queryset(self) -> QuerySet[SubscriptionChange]:
        if getattr(self, "swagger_fake_view", False):
            return SubscriptionChange.objects.none()
        return SubscriptionChange.objects.filter(subscription=self.subscription()).select_related(
            "subscription", "from_plan_version__plan", "to_plan_version__plan"
        )

    @extend_schema(
        summary="Revoke a scheduled downgrade, quantity decrease or cancellation",
        parameters=[SUBSCRIPTION_PATH_PARAMETER],
        request=None,
        responses={200: SubscriptionChangeSerializer},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, *args: Any, **kwargs: Any) -> Response:
        change = subscription_services.revoke_scheduled_change(self.get_object(), actor=self.actor, now=self.now())
        return self.render(self.get_queryset().get(pk=change.pk), SubscriptionChangeSerializer)


# --- entitlements ------------------------------------------------------------------------------------------


class EntitlementSerializer(serializers.Serializer):
    feature_code = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=Feature.Kind.choices)
    enabled = serializers.BooleanField()
    limit = DecimalStringField(allow_null=True, help_text="Null: unlimited, or an on/off feature.")
    sources = serializers.ListField(
        child=serializers.CharField(), help_text="What grants it: subscription:<external_id> or contract:<id>."
    )


class CustomerEntitlementsSerializer(serializers.Serializer):
    customer = serializers.CharField(help_text="The customer's external_id.")
    on = serializers.DateField(help_text="The day (in the customer's timezone) the answer is for.")
    entitlements = serializers.DictField(child=EntitlementSerializer(), help_text="By feature code.")


class EntitlementsQuerySerializer(serializers.Serializer):
    on = serializers.DateField(required=False, help_text="Default: today in the customer's timezone.")


class CustomerEntitlementsView(BaseAPIView):
    serializer_class = CustomerEntitlementsSerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(
        summary="What the customer is entitled to",
        description=(
            "Every feature granted by the customer's trialing and active subscriptions (a contract's negotiated "
            "entitlements replace its plans', limits add up across subscriptions), as of today in the "
            "customer's timezone or the given day."
        ),
        parameters=[CUSTOMER_PATH_PARAMETER, EntitlementsQuerySerializer],
        responses={200: CustomerEntitlementsSerializer},
        tags=["customers"],
    )
    def get(self, request, customer_external_id: str) -> Response:
        customer = get_object_or_404(Customer, external_id=customer_external_id)
        query = EntitlementsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        now = self.now()
        on = query.validated_data.get("on") or customer_today(customer, now)
        body = {
            "customer": customer.external_id,
            "on": on,
            "entitlements": entitlements_for_customer(customer, now=now, on=on),
        }
        return Response(CustomerEntitlementsSerializer(body).data)


urlpatterns = [
    re_path(
        rf"^customers/(?P<customer_external_id>{CODE_REGEX})/entitlements$",
        CustomerEntitlementsView.as_view(),
        name="customer-entitlements",
    ),
]


def register(router: Any) -> None:
    router.register("products", ProductViewSet, basename="product")
    router.register("features", FeatureViewSet, basename="feature")
    router.register("plans", PlanViewSet, basename="plan")
    router.register(rf"plans/(?P<plan_code>{CODE_REGEX})/versions", PlanVersionViewSet, basename="plan-version")
    router.register("coupons", CouponViewSet, basename="coupon")
    router.register("contracts", ContractViewSet, basename="contract")
    router.register("subscriptions", SubscriptionViewSet, basename="subscription")
    router.register(
        rf"subscriptions/(?P<subscription_external_id>{CODE_REGEX})/changes",
        SubscriptionChangeViewSet,
        basename="subscription-change",
    )

