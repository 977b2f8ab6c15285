"""GET /api/v1/customers/{external_id}/usage with estimated amounts.

The usage app reports quantities and sits below invoicing, so the estimate is added here: the same view and
quantities, each charge and group priced with the charge model and terms the close would use (the contract's
negotiated price included), through invoicing.rating — an estimate because the period is not over.
"""

from decimal import Decimal
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api.fields import MoneySchema, format_amount
from customers.models import Customer
from invoicing.rating import CatalogCache, Rater, load_inputs
from usage import usage_views
from usage.usage_views import CUSTOMER_PATH_PARAMETER, CustomerUsageView

ZERO = Decimal(0)


class TierSerializer(serializers.Serializer):
    label = serializers.CharField()
    units = serializers.CharField()
    unit_price = serializers.CharField()
    flat_fee = serializers.CharField()
    amount = serializers.CharField()


class EstimatedGroupSerializer(usage_views.UsageGroupSerializer):
    estimated_amount = MoneySchema(help_text="The group's price so far, rounded to the currency.")
    tiers = TierSerializer(many=True)


class EstimatedChargeSerializer(usage_views.ChargeUsageSerializer):
    estimated_amount = MoneySchema(help_text="The charge's price so far (every group), before minimums and tax.")
    tiers = TierSerializer(many=True, required=False, help_text="The breakdown, for a charge without group-by.")
    groups = EstimatedGroupSerializer(many=True)  # type: ignore[assignment]


class EstimatedSubscriptionSerializer(usage_views.SubscriptionUsageSerializer):
    charges = EstimatedChargeSerializer(many=True)  # type: ignore[assignment]


class EstimatedCustomerUsageSerializer(usage_views.CustomerUsageSerializer):
    subscriptions = EstimatedSubscriptionSerializer(many=True)  # type: ignore[assignment]


def _money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": format_amount(amount, currency), "currency": currency}


class CustomerUsageWithEstimatesView(CustomerUsageView):
    @extend_schema(
        summary="The customer's usage and its estimated cost in the current billing periods",
        description=(
            "For each active or trialing subscription whose billing period is in progress: the quantity of every "
            "metered charge so far (filters and group-by applied, one quantity per group) and its estimated "
            "amount, priced as the cycle close would price it now (negotiated contract prices included), with "
            "the tier breakdown. Minimum-spend true-ups, discounts and taxes are applied on the invoice."
        ),
        parameters=[CUSTOMER_PATH_PARAMETER],
        responses={200: EstimatedCustomerUsageSerializer},
        tags=["customers"],
    )
    def get(self, request: Request, customer_external_id: str) -> Response:
        customer = get_object_or_404(Customer, external_id=customer_external_id)
        raw = self.usage_body(customer, self.now())
        usages = raw["subscriptions"]
        body: dict[str, Any] = usage_views.CustomerUsageSerializer(raw).data
        catalog = CatalogCache()
        inputs = load_inputs([u.subscription for u in usages], catalog) if usages else {}
        for usage, sub_body in zip(usages, body["subscriptions"], strict=True):
            rater = Rater(usage.subscription.customer, usage.period.start, catalog, late_usage=False)
            for charge_usage, charge_body in zip(usage.charges, sub_body["charges"], strict=True):
                priced = rater.usage_for_charge(inputs[usage.subscription.pk], charge_usage.charge, usage.period)
                currency = usage.subscription.plan_version.plan.currency
                total = sum((line.amount for line, _ in priced), ZERO)
                charge_body["estimated_amount"] = _money(total, str(currency))
                by_group = {tuple(line.group.values()): line for line, _ in priced}
                if not charge_body["groups"] and priced:
                    charge_body["tiers"] = priced[0][0].explanation["tiers"]
                for group_body in charge_body["groups"]:
                    line = by_group.get(tuple(group_body["group"].values()))
                    group_body["estimated_amount"] = _money(line.amount if line else ZERO, str(currency))
                    group_body["tiers"] = line.explanation["tiers"] if line else []
        return Response(body)
