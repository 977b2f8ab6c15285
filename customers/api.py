"""/api/v1/billing-entities, /api/v1/customers (+ contacts): serializers, filters, viewsets.

(A customer's entitlements, /api/v1/customers/{external_id}/entitlements, come from the contracts app: see
contracts/api.py; customers sits below contracts and does not import it.)

Writes go through customers.services; the serializers only check the shape of the input.
"""

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.api.fields import (
    CountryCodeField,
    CurrencyCodeField,
    JSONObjectField,
    TimezoneNameField,
)
from billing.api.serializers import WritableModelSerializer, update_variant
from billing.api.views import CODE_REGEX, APIViewSet, save_clean
from customers import services
from customers.models import BillingEntity, Contact, Customer

ADDRESS_FIELDS = ("address_line1", "address_line2", "city", "state", "postal_code")
MAX_BILLING_EMAILS = 20


# --- billing entities -------------------------------------------------------------------------------


class BillingEntitySerializer(WritableModelSerializer):
    country = CountryCodeField()
    default_currency = CurrencyCodeField()
    timezone = TimezoneNameField(required=False)

    create_only_fields = ("code",)

    class Meta:
        model = BillingEntity
        fields = (
            "code", "name", "legal_name", "country", *ADDRESS_FIELDS, "tax_id", "email", "default_currency",
            "timezone", "invoice_prefix", "credit_note_prefix", "default_payment_terms_days", "is_active",
            "created_at", "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")


class BillingEntityFilter(django_filters.FilterSet):
    country = django_filters.CharFilter(field_name="country", lookup_expr="iexact")
    currency = django_filters.CharFilter(field_name="default_currency", lookup_expr="iexact")

    class Meta:
        model = BillingEntity
        fields = ("country", "currency", "is_active")


@extend_schema_view(
    list=extend_schema(summary="List billing entities"),
    retrieve=extend_schema(summary="Get a billing entity by code"),
    create=extend_schema(summary="Create a billing entity"),
    partial_update=extend_schema(summary="Update a billing entity"),
)
class BillingEntityViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, APIViewSet
):
    queryset = BillingEntity.objects.all()
    serializer_class = BillingEntitySerializer
    lookup_field = "code"
    filterset_class = BillingEntityFilter
    search_fields = ("code", "name", "legal_name")
    ordering_fields = ("name", "code", "created_at")
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_serializer_class(self) -> type:
        if self.action == "partial_update":
            return update_variant(BillingEntitySerializer)
        return BillingEntitySerializer

    def perform_create(self, serializer: BillingEntitySerializer) -> None:
        serializer.instance = services.create_billing_entity(actor=self.actor, **serializer.validated_data)

    def perform_update(self, serializer: BillingEntitySerializer) -> None:
        serializer.instance = services.update_billing_entity(
            serializer.instance, actor=self.actor, **serializer.validated_data
        )


# --- customers and contacts ---------------------------------------------------------------------------


class ContactSerializer(WritableModelSerializer):
    class Meta:
        model = Contact
        fields = ("id", "name", "email", "phone", "role", "receives_invoices", "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")
        # The (customer, email, role) uniqueness is the service's to check: the customer comes from the URL.
        validators: list = []


class CustomerSerializer(WritableModelSerializer):
    billing_entity = serializers.SlugRelatedField(
        slug_field="code", queryset=BillingEntity.objects.all(), help_text="The billing entity's code."
    )
    country = CountryCodeField()
    currency = CurrencyCodeField(required=False, help_text="Default: the billing entity's currency.")
    timezone = TimezoneNameField(required=False)
    billing_emails = serializers.ListField(
        child=serializers.EmailField(), required=False, max_length=MAX_BILLING_EMAILS
    )
    parent = serializers.SlugRelatedField(
        slug_field="external_id", queryset=Customer.objects.all(), required=False, allow_null=True,
        help_text="The parent customer's external_id (hierarchies).",
    )
    metadata = JSONObjectField(required=False)
    contacts = ContactSerializer(
        many=True, required=False, help_text="Given on creation; afterwards use the contacts sub-resource."
    )

    create_only_fields = ("external_id", "contacts")
    fixed_fields = {"status": "Changed only by archiving: POST /api/v1/customers/{external_id}/archive."}

    class Meta:
        model = Customer
        fields = (
            "external_id", "billing_entity", "name", "legal_name", "kind", "status", "billing_emails",
            "country", *ADDRESS_FIELDS, "tax_id", "tax_exempt", "tax_exemption_reason", "currency", "timezone",
            "payment_terms_days", "parent", "invoice_to_parent", "metadata", "contacts", "created_at",
            "updated_at",
        )
        read_only_fields = ("status", "created_at", "updated_at")

    def to_internal_value(self, data: Any) -> Any:
        if self.instance is not None and isinstance(data, dict) and "contacts" in data:
            raise serializers.ValidationError(
                {"contacts": [f"Edit contacts at /api/v1/customers/{self.instance.external_id}/contacts."]}
            )
        return super().to_internal_value(data)


class CustomerFilter(django_filters.FilterSet):
    billing_entity = django_filters.CharFilter(field_name="billing_entity__code", help_text="Billing entity code.")
    country = django_filters.CharFilter(field_name="country", lookup_expr="iexact")
    currency = django_filters.CharFilter(field_name="currency", lookup_expr="iexact")
    parent = django_filters.CharFilter(field_name="parent__external_id", help_text="The parent's external_id.")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Customer
        fields = ("billing_entity", "country", "currency", "status", "kind", "parent", "tax_exempt")


@extend_schema_view(
    list=extend_schema(summary="List customers"),
    retrieve=extend_schema(summary="Get a customer by external_id"),
    create=extend_schema(summary="Create a customer (with its contacts)"),
    partial_update=extend_schema(summary="Update a customer"),
)
class CustomerViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, APIViewSet
):
    queryset = Customer.objects.select_related("billing_entity", "parent").prefetch_related("contacts")
    serializer_class = CustomerSerializer
    lookup_field = "external_id"
    filterset_class = CustomerFilter
    search_fields = ("external_id", "name", "legal_name", "tax_id")
    ordering_fields = ("name", "external_id", "created_at", "updated_at")
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_serializer_class(self) -> type:
        if self.action == "partial_update":
            return update_variant(CustomerSerializer)
        return CustomerSerializer

    def perform_create(self, serializer: CustomerSerializer) -> None:
        data = dict(serializer.validated_data)
        contacts = [dict(contact) for contact in data.pop("contacts", [])]
        customer = services.create_customer(actor=self.actor, contacts=contacts, **data)
        serializer.instance = self.get_queryset().get(pk=customer.pk)

    def perform_update(self, serializer: CustomerSerializer) -> None:
        customer = services.update_customer(serializer.instance, actor=self.actor, **serializer.validated_data)
        serializer.instance = self.get_queryset().get(pk=customer.pk)

    @extend_schema(summary="Archive a customer", request=None, responses={200: CustomerSerializer})
    @action(detail=True, methods=["post"])
    def archive(self, request, external_id: str) -> Response:
        customer = services.archive_customer(self.get_object(), actor=self.actor)
        return Response(CustomerSerializer(self.get_queryset().get(pk=customer.pk)).data)


CUSTOMER_PATH_PARAMETER = OpenApiParameter(
    "customer_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The customer's external_id."
)


@extend_schema_view(
    list=extend_schema(summary="List a customer's contacts", parameters=[CUSTOMER_PATH_PARAMETER]),
    retrieve=extend_schema(summary="Get a contact", parameters=[CUSTOMER_PATH_PARAMETER]),
    create=extend_schema(summary="Add a contact", parameters=[CUSTOMER_PATH_PARAMETER]),
    partial_update=extend_schema(summary="Update a contact", parameters=[CUSTOMER_PATH_PARAMETER]),
    destroy=extend_schema(summary="Remove a contact", parameters=[CUSTOMER_PATH_PARAMETER]),
)
class ContactViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    APIViewSet,
):
    serializer_class = ContactSerializer
    lookup_value_regex = r"\d+"
    ordering_fields = ("name", "email", "created_at")
    search_fields = ("name", "email")
    filterset_fields = ("role", "receives_invoices")

    def customer(self) -> Customer:
        if not hasattr(self, "_customer"):
            self._customer = get_object_or_404(Customer, external_id=self.kwargs["customer_external_id"])
        return self._customer

    def get_queryset(self) -> QuerySet[Contact]:
        if getattr(self, "swagger_fake_view", False):
            return Contact.objects.none()
        return Contact.objects.filter(customer=self.customer())

    def perform_create(self, serializer: ContactSerializer) -> None:
        serializer.instance = services.add_contact(self.customer(), actor=self.actor, **serializer.validated_data)

    def perform_update(self, serializer: ContactSerializer) -> None:
        # Contacts carry no billing rule beyond the model's own, which full_clean checks.
        save_clean(serializer.instance, actor=self.actor, **serializer.validated_data)

    def perform_destroy(self, instance: Contact) -> None:
        instance.delete()


def register(router: Any) -> None:
    router.register("billing-entities", BillingEntityViewSet, basename="billing-entity")
    router.register("customers", CustomerViewSet, basename="customer")
    router.register(
        rf"customers/(?P<customer_external_id>{CODE_REGEX})/contacts", ContactViewSet, basename="customer-contact"
    )

