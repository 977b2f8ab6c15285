"""GET /api/v1/customers/{external_id}/usage: the customer's usage in its current billing periods.

A thin shell over usage.selectors.current_usage: one entry per active or trialing subscription whose period
is in progress, with the quantity of each metered charge of its plan version (the charge's filters and
group-by applied). Amounts come with invoicing.
"""

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api.fields import DecimalStringField
from billing.api.views import BaseAPIView
from contracts.models import Subscription
from customers.models import Customer
from usage.models import Meter
from usage.selectors import ChargeUsage, current_usage

CUSTOMER_PATH_PARAMETER = OpenApiParameter(
    "customer_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The customer's external_id."
)


class UsageGroupSerializer(serializers.Serializer):
    group = serializers.DictField(
        child=serializers.CharField(allow_null=True),
        help_text='The group-by properties\' values, e.g. {"region": "eu"}; null when an event lacks one.',
    )
    quantity = DecimalStringField()


class ChargeUsageSerializer(serializers.Serializer):
    charge_id = serializers.IntegerField(source="charge.id", help_text="The plan version's charge.")
    display_name = serializers.SerializerMethodField()
    meter = serializers.CharField(source="meter.code", help_text="The meter's code.")
    unit = serializers.CharField(source="meter.unit")
    aggregation = serializers.ChoiceField(source="meter.aggregation", choices=Meter.Aggregation.choices)
    filters = serializers.DictField(
        source="charge.filters",
        child=serializers.ListField(child=serializers.CharField()),
        help_text="The charge's filters (the meter's own apply too).",
    )
    group_by = serializers.ListField(
        source="spec.group_by", child=serializers.CharField(), help_text="The meter's and the charge's keys."
    )
    quantity = DecimalStringField(
        allow_null=True, help_text="The quantity so far; null when the charge groups its usage (see groups)."
    )
    groups = UsageGroupSerializer(many=True, help_text="One quantity per group; empty without group-by.")

    def get_display_name(self, usage: ChargeUsage) -> str:
        return usage.charge.display_name or usage.meter.name


class SubscriptionUsageSerializer(serializers.Serializer):
    subscription = serializers.CharField(source="subscription.external_id", help_text="The subscription's external_id.")
    plan = serializers.CharField(source="subscription.plan_version.plan.code")
    plan_version = serializers.IntegerField(source="subscription.plan_version.version")
    status = serializers.ChoiceField(source="subscription.status", choices=Subscription.Status.choices)
    period_start = serializers.DateField(
        source="period.start", help_text="The period's first day (customer's timezone)."
    )
    period_end = serializers.DateField(source="period.end", help_text="The first day after the period.")
    starts_at = serializers.DateTimeField(source="start", help_text="The period's first instant, in UTC.")
    ends_at = serializers.DateTimeField(source="end", help_text="The instant the period ends, in UTC.")
    charges = ChargeUsageSerializer(many=True)


class CustomerUsageSerializer(serializers.Serializer):
    customer = serializers.CharField(help_text="The customer's external_id.")
    timezone = serializers.CharField(help_text="The customer's timezone: periods are its calendar days.")
    as_of = serializers.DateTimeField(help_text="When the quantities were computed.")
    subscriptions = SubscriptionUsageSerializer(many=True)


class CustomerUsageView(BaseAPIView):
    serializer_class = CustomerUsageSerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(
        summary="The customer's usage in its current billing periods",
        description=(
            "For each active or trialing subscription whose billing period is in progress: the quantity of every "
            "metered charge of its plan over the whole period so far, by the meter's aggregation, with the "
            "charge's filters and group-by applied (one quantity per group). Late events for the period count "
            "as soon as they are accepted. A weighted sum is the period's average if the current level holds "
            "until the period ends; a latest or max meter that carries over includes the level brought in. "
            "Amounts are not included."
        ),
        parameters=[CUSTOMER_PATH_PARAMETER],
        responses={200: CustomerUsageSerializer},
        tags=["customers"],
    )
    def get(self, request: Request, customer_external_id: str) -> Response:
        customer = get_object_or_404(Customer, external_id=customer_external_id)
        return Response(CustomerUsageSerializer(self.usage_body(customer, self.now())).data)

    @staticmethod
    def usage_body(customer: Customer, now: Any) -> dict[str, Any]:
        """The response before serialization (invoicing's view adds estimated amounts to it)."""
        return {
            "customer": customer.external_id,
            "timezone": str(customer.timezone),
            "as_of": now,
            "subscriptions": current_usage(customer, now=now),
        }
