"""/api/v1/meters: serializers, filters and the viewset; writes go through usage.services."""

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers

from billing.api.serializers import WritableModelSerializer, update_variant
from billing.api.views import APIViewSet
from usage import services
from usage.models import Meter


class MeterSerializer(WritableModelSerializer):
    filters = serializers.JSONField(
        required=False, help_text='Only events whose properties match, e.g. {"region": ["eu", "us"]}.'
    )
    group_by = serializers.JSONField(required=False, help_text='Property names, e.g. ["region"].')

    create_only_fields = ("code",)

    class Meta:
        model = Meter
        fields = (
            "code", "name", "description", "unit", "aggregation", "field_name", "filters", "group_by",
            "carries_over", "rounding", "rounding_precision", "is_active", "created_at", "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")


@extend_schema_view(
    list=extend_schema(summary="List meters"),
    retrieve=extend_schema(summary="Get a meter by code"),
    create=extend_schema(summary="Create a meter"),
    partial_update=extend_schema(
        summary="Update a meter",
        description="A meter that published plans bill from keeps its definition (aggregation, property, filters).",
    ),
)
class MeterViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, APIViewSet
):
    queryset = Meter.objects.all()
    serializer_class = MeterSerializer
    lookup_field = "code"
    filterset_fields = ("aggregation", "carries_over", "is_active")
    search_fields = ("code", "name")
    ordering_fields = ("code", "name", "created_at")
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_serializer_class(self) -> type:
        if self.action == "partial_update":
            return update_variant(MeterSerializer)
        return MeterSerializer

    def perform_create(self, serializer: MeterSerializer) -> None:
        serializer.instance = services.create_meter(actor=self.actor, **serializer.validated_data)

    def perform_update(self, serializer: MeterSerializer) -> None:
        serializer.instance = services.update_meter(serializer.instance, actor=self.actor, **serializer.validated_data)


def register(router: Any) -> None:
    router.register("meters", MeterViewSet, basename="meter")
