"""/api/v1/invoices/{id}/dunning (where an invoice stands in dunning), /api/v1/dunning-policies (with their steps)
and /api/v1/customers/{external_id}/dunning-override (a customer's own policy, or none: never dunned).

Thin shells over invoicing.services.dunning. Policies are configured in the admin; the API reads them.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.response import Response

from billing.api.serializers import InputSerializer
from billing.api.views import CODE_REGEX, APIViewSet, BaseAPIView
from customers.models import Customer
from invoicing.models import CustomerDunningOverride, DunningPolicy, DunningStep, Invoice
from invoicing.serializers import DocumentMoneyField
from invoicing.services.dunning import (
    StepState,
    dunning_state,
    policy_for,
    remove_dunning_override,
    set_dunning_override,
)

ID_REGEX = r"\d+"
MAX_ID = 2**63 - 1  # bigint: a larger id names nothing
CUSTOMER_PATH_PARAMETER = OpenApiParameter(
    "customer_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The customer's external_id."
)
INVOICE_PATH_PARAMETER = OpenApiParameter("invoice_id", OpenApiTypes.INT, OpenApiParameter.PATH,
                                          description="The invoice's id.")
STEP_STATUSES = ("done", "failed", "skipped", "due", "upcoming", "not_run")


def _choice_text(values: Any, **kwargs: Any) -> serializers.CharField:
    # A plain string listing its values (an enum named "status" or "action" would collide in the components).
    return serializers.CharField(read_only=True, help_text="One of: " + ", ".join(values) + ".", **kwargs)


# --- serializers --------------------------------------------------------------------------------------------


class DunningStepSerializer(serializers.ModelSerializer):
    action = _choice_text(DunningStep.Action.values)
    email_subject = serializers.CharField(read_only=True, help_text="Empty: the shipped template's subject.")
    email_body = serializers.CharField(read_only=True, help_text="Empty: the shipped template.")

    class Meta:
        model = DunningStep
        fields = ("id", "offset_days", "action", "email_subject", "email_body")
        read_only_fields = fields


class DunningPolicySerializer(serializers.ModelSerializer):
    billing_entity = serializers.SlugRelatedField(slug_field="code", read_only=True)
    steps = DunningStepSerializer(many=True, read_only=True)

    class Meta:
        model = DunningPolicy
        fields = ("id", "name", "billing_entity", "is_default", "is_active", "steps", "created_at", "updated_at")
        read_only_fields = fields


class PolicyRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class StepStateSerializer(serializers.Serializer):
    step = serializers.IntegerField(source="step_id", read_only=True)
    offset_days = serializers.IntegerField(read_only=True, help_text="Days after the due date (negative: before).")
    action = _choice_text(DunningStep.Action.values)
    scheduled_for = serializers.DateField(read_only=True, help_text="Due date + offset, in the customer's timezone.")
    status = _choice_text(STEP_STATUSES)
    ran_at = serializers.DateTimeField(read_only=True, allow_null=True)
    details = serializers.JSONField(read_only=True, help_text="What the step did: e-mail, recipients, error, ...")


class SuspensionSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    invoice = serializers.IntegerField(source="invoice_id", read_only=True)
    suspended_at = serializers.DateTimeField(read_only=True)
    subscriptions = serializers.ListField(child=serializers.CharField(), read_only=True,
                                          help_text="External ids of the subscriptions dunning paused.")


class InvoiceDunningSerializer(serializers.Serializer):
    invoice = serializers.IntegerField(read_only=True)
    number = serializers.CharField(read_only=True, allow_null=True)
    status = serializers.CharField(read_only=True)
    amount_due = DocumentMoneyField()
    due_date = serializers.DateField(read_only=True, allow_null=True)
    today = serializers.DateField(read_only=True, help_text="Today in the customer's timezone.")
    dunned = serializers.BooleanField(read_only=True, help_text="The invoice owes money and a policy chases it.")
    policy = PolicyRefSerializer(read_only=True, allow_null=True)
    policy_source = _choice_text(("override", "override_none", "entity_default", "none"))
    steps = StepStateSerializer(many=True, read_only=True)
    next_step = StepStateSerializer(read_only=True, allow_null=True)
    suspended = serializers.BooleanField(read_only=True)
    suspension = SuspensionSerializer(read_only=True, allow_null=True)


class DunningOverrideSerializer(serializers.Serializer):
    customer = serializers.CharField(read_only=True)
    has_override = serializers.BooleanField(read_only=True, help_text="False: the entity's default policy applies.")
    policy = PolicyRefSerializer(read_only=True, allow_null=True,
                                 help_text="The override's policy; null with an override: never dunned.")
    note = serializers.CharField(read_only=True)
    effective_policy = PolicyRefSerializer(read_only=True, allow_null=True,
                                           help_text="The policy that dunns the customer now (null: none).")


class DunningOverrideInputSerializer(InputSerializer):
    policy = serializers.IntegerField(allow_null=True, min_value=1, max_value=MAX_ID,
                                      help_text="A dunning policy id of the customer's billing entity; null: the "
                                                "customer is never dunned.")
    note = serializers.CharField(max_length=300, allow_blank=True, required=False, default="",
                                 help_text="Why (kept with the override).")


def _ref(policy: DunningPolicy | None) -> dict[str, Any] | None:
    return {"id": policy.pk, "name": policy.name} if policy is not None else None


def _override_body(customer: Customer) -> dict[str, Any]:
    override = CustomerDunningOverride.objects.filter(customer=customer).select_related("policy").first()
    return {
        "customer": customer.external_id,
        "has_override": override is not None,
        "policy": _ref(override.policy) if override is not None else None,
        "note": override.note if override is not None else "",
        "effective_policy": _ref(policy_for(customer)),
    }


def _step_body(step: StepState) -> dict[str, Any]:
    return {"step_id": step.step_id, "offset_days": step.offset_days, "action": step.action,
            "scheduled_for": step.scheduled_for, "status": step.status, "ran_at": step.ran_at,
            "details": step.details}


# --- views --------------------------------------------------------------------------------------------------


class _SingleView(BaseAPIView):
    pagination_class = None
    filter_backends: list = []


class InvoiceDunningView(_SingleView):
    serializer_class = InvoiceDunningSerializer

    @extend_schema(summary="Where the invoice stands in dunning: policy, steps run, next step, suspension",
                   parameters=[INVOICE_PATH_PARAMETER], responses={200: InvoiceDunningSerializer}, tags=["invoices"])
    def get(self, request, invoice_id: str) -> Response:
        if int(invoice_id) > MAX_ID:
            raise Http404
        invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=int(invoice_id))
        state = dunning_state(invoice, now=self.now())
        suspension = state.suspension
        body = {
            "invoice": invoice.pk, "number": invoice.number or None, "status": invoice.status,
            "amount_due": invoice.amount_due, "currency": str(invoice.currency), "due_date": invoice.due_date,
            "today": state.today, "dunned": state.dunned, "policy": _ref(state.policy),
            "policy_source": state.policy_source, "steps": [_step_body(s) for s in state.steps],
            "next_step": _step_body(state.next_step) if state.next_step else None,
            "suspended": state.suspended,
            "suspension": None if suspension is None else {
                "id": suspension.pk, "invoice_id": suspension.invoice_id, "suspended_at": suspension.suspended_at,
                "subscriptions": list(suspension.customer.subscriptions.filter(
                    pk__in=suspension.subscription_ids).order_by("pk").values_list("external_id", flat=True)),
            },
        }
        return Response(InvoiceDunningSerializer(body).data)


class CustomerDunningOverrideView(_SingleView):
    serializer_class = DunningOverrideSerializer

    def _customer(self, external_id: str) -> Customer:
        return get_object_or_404(Customer.objects.select_related("billing_entity"), external_id=external_id)

    @extend_schema(summary="The customer's dunning override and the policy that dunns it",
                   parameters=[CUSTOMER_PATH_PARAMETER], responses={200: DunningOverrideSerializer},
                   tags=["customers"])
    def get(self, request, customer_external_id: str) -> Response:
        return Response(DunningOverrideSerializer(_override_body(self._customer(customer_external_id))).data)

    @extend_schema(summary="Give the customer its own dunning policy, or none (never dunned)",
                   parameters=[CUSTOMER_PATH_PARAMETER], request=DunningOverrideInputSerializer,
                   responses={200: DunningOverrideSerializer}, tags=["customers"])
    def put(self, request, customer_external_id: str) -> Response:
        customer = self._customer(customer_external_id)
        serializer = DunningOverrideInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        policy = None
        if data["policy"] is not None:
            policy = DunningPolicy.objects.filter(pk=data["policy"]).first()
            if policy is None:
                raise serializers.ValidationError({"policy": ["No dunning policy with this id."]})
        set_dunning_override(customer, policy=policy, note=data["note"], actor=self.actor)
        return Response(DunningOverrideSerializer(_override_body(customer)).data)

    @extend_schema(summary="Remove the customer's override: its entity's default policy applies again",
                   parameters=[CUSTOMER_PATH_PARAMETER], request=None, responses={200: DunningOverrideSerializer},
                   tags=["customers"])
    def delete(self, request, customer_external_id: str) -> Response:
        customer = self._customer(customer_external_id)
        remove_dunning_override(customer, actor=self.actor)
        return Response(DunningOverrideSerializer(_override_body(customer)).data)


class DunningPolicyFilter(django_filters.FilterSet):
    billing_entity = django_filters.CharFilter(field_name="billing_entity__code", help_text="The entity's code.")

    class Meta:
        model = DunningPolicy
        fields = ("billing_entity", "is_default", "is_active")


@extend_schema_view(
    list=extend_schema(summary="List dunning policies with their steps"),
    retrieve=extend_schema(summary="Get a dunning policy with its steps"),
)
class DunningPolicyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = DunningPolicySerializer
    lookup_value_regex = ID_REGEX
    filterset_class = DunningPolicyFilter
    search_fields = ("name",)
    ordering_fields = ("name", "created_at")
    http_method_names = ["get", "head", "options"]

    def get_queryset(self) -> QuerySet[DunningPolicy]:
        steps = DunningStep.objects.order_by("offset_days", "id")
        return (DunningPolicy.objects.select_related("billing_entity")
                .prefetch_related(Prefetch("steps", queryset=steps)).order_by("billing_entity__code", "name", "id"))

    def get_object(self) -> DunningPolicy:
        if int(self.kwargs["pk"]) > MAX_ID:
            raise Http404
        return super().get_object()


urlpatterns = [
    re_path(rf"^invoices/(?P<invoice_id>{ID_REGEX})/dunning$", InvoiceDunningView.as_view(), name="invoice-dunning"),
    re_path(rf"^customers/(?P<customer_external_id>{CODE_REGEX})/dunning-override$",
            CustomerDunningOverrideView.as_view(), name="customer-dunning-override"),
]


def register(router: Any) -> None:
    router.register("dunning-policies", DunningPolicyViewSet, basename="dunning-policy")

