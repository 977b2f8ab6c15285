"""/api/v1/payments (+ allocate, reverse, refund), /api/v1/refunds, a customer's credit balance (+ apply, refund)
and an invoice's allocations.

Thin shells over invoicing.services.payments: serializers check shapes, the services check every rule (amounts
against the currency's minor unit, currencies, what an invoice still owes, the customer's lock). Writes accept an
Idempotency-Key (billing/api/idempotency.py); on a payment or a refund the key, scoped to the API key that sent
it, is also stored on the row, so a repeat after the stored response expired still finds the first one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import django_filters
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api import idempotency
from billing.api.models import APIKey
from billing.api.views import CODE_REGEX, APIViewSet, BaseAPIView
from contracts.selectors import customer_today
from customers.models import Customer
from invoicing.api import payment_serializers as ps
from invoicing.models import ZERO, Allocation, CustomerBalance, CustomerBalanceTransaction, Invoice, Payment, Refund
from invoicing.services import payments as svc

ID_REGEX = r"\d+"
MAX_ID = 2**63 - 1  # bigint: a larger id names nothing
KEY_COLUMN_LENGTH = 200  # Payment/Refund.idempotency_key
CUSTOMER_PATH_PARAMETER = OpenApiParameter(
    "customer_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The customer's external_id."
)
INVOICE_PATH_PARAMETER = OpenApiParameter("invoice_id", OpenApiTypes.INT, OpenApiParameter.PATH,
                                          description="The invoice's id.")


def stored_key(request: Request) -> str | None:
    """The request's Idempotency-Key as stored on the payment or refund: scoped to the API key that sent it (two
    integrations may pick the same key), hashed when it would not fit the column."""
    key = idempotency.key_from(request)
    if key is None:
        return None
    owner = request.auth.pk if isinstance(request.auth, APIKey) else "user"
    scoped = f"api:{owner}:{key}"
    if len(scoped) > KEY_COLUMN_LENGTH:
        scoped = f"api:{owner}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return scoped


def _customer(external_id: str) -> Customer:
    return get_object_or_404(Customer.objects.select_related("billing_entity"), external_id=external_id)


def _allocation_requests(rows: list[dict[str, Any]] | None) -> list[svc.AllocationRequest]:
    return [svc.AllocationRequest(invoice=row["invoice"], amount=row["amount"]) for row in rows or []]


def _allocations() -> QuerySet[Allocation]:
    return Allocation.objects.select_related("invoice").order_by("created_at", "id")


def _refunds() -> QuerySet[Refund]:
    return Refund.objects.select_related("customer").prefetch_related(Prefetch("allocations", queryset=_allocations()))


def _payment_detail(pk: int) -> Payment:
    payment = (
        Payment.objects.select_related("customer", "billing_entity")
        .prefetch_related(Prefetch("allocations", queryset=_allocations()),
                          Prefetch("refunds", queryset=_refunds().order_by("created_at", "id")))
        .get(pk=pk)
    )
    payment.allocated = sum((a.amount for a in payment.allocations.all()), ZERO)
    payment.credit_remaining = svc.payment_credit(payment)
    payment.refundable = svc.refundable(payment)
    return payment


# --- payments -----------------------------------------------------------------------------------------------


class PaymentFilter(django_filters.FilterSet):
    customer = django_filters.CharFilter(field_name="customer__external_id", help_text="The customer's external_id.")
    status = django_filters.MultipleChoiceFilter(choices=Payment.Status.choices)
    method = django_filters.MultipleChoiceFilter(choices=Payment.Method.choices)
    currency = django_filters.CharFilter(field_name="currency", lookup_expr="iexact")
    received_on_from = django_filters.DateFilter(field_name="received_on", lookup_expr="gte", help_text="On or after.")
    received_on_to = django_filters.DateFilter(field_name="received_on", lookup_expr="lte", help_text="On or before.")

    class Meta:
        model = Payment
        fields = ("customer", "status", "method", "currency")


@extend_schema_view(
    list=extend_schema(summary="List payments"),
    retrieve=extend_schema(summary="Get a payment with its allocations, refunds and remaining credit",
                           responses={200: ps.PaymentDetailSerializer}),
    create=extend_schema(
        summary="Record a payment received (bank transfer, check, ...)",
        description="Allocated as `allocations` say, or (without them) to the oldest open invoices first; what is "
        "left becomes the customer's credit balance. With an Idempotency-Key, a repeat returns the first payment.",
        request=ps.PaymentCreateSerializer,
        responses={201: ps.PaymentDetailSerializer},
    ),
)
class PaymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, APIViewSet):
    serializer_class = ps.PaymentSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = PaymentFilter
    search_fields = ("reference", "customer__external_id", "customer__name", "gateway_reference")
    ordering_fields = ("received_on", "created_at", "amount")
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[Payment]:
        return Payment.objects.select_related("customer", "billing_entity")

    def get_serializer_class(self) -> type:
        if self.action == "create":
            return ps.PaymentCreateSerializer
        if self.action == "list":
            return ps.PaymentSerializer
        return ps.PaymentDetailSerializer

    def _detail(self, payment: Payment, code: int = status.HTTP_200_OK) -> Response:
        return self.render(_payment_detail(payment.pk), ps.PaymentDetailSerializer, code)

    def retrieve(self, request, *args: Any, **kwargs: Any) -> Response:
        return self._detail(self.get_object())

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(ps.PaymentCreateSerializer)
        customer = Customer.objects.filter(external_id=data["customer"]).select_related("billing_entity").first()
        if customer is None:
            raise serializers.ValidationError({"customer": ["No customer with this external_id."]})
        now = self.now()
        payment = svc.record_payment(
            customer=customer, amount=data["amount"], currency=data["currency"], method=data["method"],
            received_on=data.get("received_on") or customer_today(customer, now), actor=self.actor, now=now,
            reference=data["reference"], memo=data["memo"], allocations=_allocation_requests(data.get("allocations")),
            auto_allocate=data["auto_allocate"], idempotency_key=stored_key(request),
        )
        # A key found on an older payment (its stored response expired) must name the same payment.
        if (payment.customer_id, payment.amount, str(payment.currency)) != (customer.pk, data["amount"],
                                                                             data["currency"]):
            raise idempotency.IdempotencyKeyReused()
        return self._detail(payment, status.HTTP_201_CREATED)

    @extend_schema(summary="Allocate a payment's remaining credit to open invoices",
                   request=ps.PaymentAllocateSerializer, responses={200: ps.PaymentDetailSerializer})
    @action(detail=True, methods=["post"])
    def allocate(self, request, *args: Any, **kwargs: Any) -> Response:
        payment = self.get_object()
        data = self.parse(ps.PaymentAllocateSerializer)
        svc.allocate_payment(payment, _allocation_requests(data["allocations"]), actor=self.actor, now=self.now())
        return self._detail(payment)

    @extend_schema(summary="Reverse a payment recorded by mistake (reversing entries; nothing is deleted)",
                   request=ps.ReasonSerializer, responses={200: ps.PaymentDetailSerializer})
    @action(detail=True, methods=["post"])
    def reverse(self, request, *args: Any, **kwargs: Any) -> Response:
        payment = self.get_object()
        data = self.parse(ps.ReasonSerializer)
        svc.reverse_payment(payment, reason=data["reason"], actor=self.actor, now=self.now())
        return self._detail(payment)

    @extend_schema(summary="Refund (part of) a payment: its credit first, then its invoices (due again)",
                   request=ps.PaymentRefundInputSerializer, responses={201: ps.RefundSerializer})
    @action(detail=True, methods=["post"])
    def refund(self, request, *args: Any, **kwargs: Any) -> Response:
        payment = self.get_object()
        data = self.parse(ps.PaymentRefundInputSerializer)
        refund = svc.refund_payment(payment, amount=data["amount"], reason=data["reason"], actor=self.actor,
                                    now=self.now(), idempotency_key=stored_key(request))
        if refund.payment_id != payment.pk or refund.amount != data["amount"]:
            raise idempotency.IdempotencyKeyReused()
        return self.render(_refunds().get(pk=refund.pk), ps.RefundSerializer, status.HTTP_201_CREATED)


# --- refunds ------------------------------------------------------------------------------------------------


class RefundFilter(django_filters.FilterSet):
    customer = django_filters.CharFilter(field_name="customer__external_id", help_text="The customer's external_id.")
    status = django_filters.MultipleChoiceFilter(choices=Refund.Status.choices)
    source = django_filters.MultipleChoiceFilter(choices=Refund.Source.choices)
    payment = django_filters.NumberFilter(field_name="payment_id", help_text="The payment's id.")
    refunded_on_from = django_filters.DateFilter(field_name="refunded_on", lookup_expr="gte",
                                                 help_text="On or after.")
    refunded_on_to = django_filters.DateFilter(field_name="refunded_on", lookup_expr="lte", help_text="On or before.")

    class Meta:
        model = Refund
        fields = ("customer", "status", "source", "payment")


@extend_schema_view(list=extend_schema(summary="List refunds"), retrieve=extend_schema(summary="Get a refund"))
class RefundViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = ps.RefundSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = RefundFilter
    search_fields = ("reason", "customer__external_id", "gateway_reference")
    ordering_fields = ("refunded_on", "created_at", "amount")
    http_method_names = ["get", "head", "options"]

    def get_queryset(self) -> QuerySet[Refund]:
        return _refunds()


# --- a customer's credit balance ----------------------------------------------------------------------------


class _SingleView(BaseAPIView):
    pagination_class = None
    filter_backends: list = []

    def parse(self, serializer_class: type) -> dict[str, Any]:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class CustomerCreditBalanceView(_SingleView):
    serializer_class = ps.CustomerCreditBalancesSerializer

    @extend_schema(summary="The customer's credit balance per currency, with its transactions",
                   parameters=[CUSTOMER_PATH_PARAMETER], responses={200: ps.CustomerCreditBalancesSerializer},
                   tags=["customers"])
    def get(self, request, customer_external_id: str) -> Response:
        customer = _customer(customer_external_id)
        transactions = CustomerBalanceTransaction.objects.select_related("balance").order_by("created_at", "id")
        balances = (CustomerBalance.objects.filter(customer=customer)
                    .prefetch_related(Prefetch("transactions", queryset=transactions)).order_by("currency"))
        body = {"customer": customer.external_id, "balances": balances}
        return Response(ps.CustomerCreditBalancesSerializer(body).data)


class CreditBalanceApplyView(_SingleView):
    serializer_class = ps.CreditAppliedSerializer

    @extend_schema(summary="Use the customer's credit balance on one of its open invoices",
                   parameters=[CUSTOMER_PATH_PARAMETER], request=ps.CreditApplyInputSerializer,
                   responses={201: ps.CreditAppliedSerializer}, tags=["customers"])
    def post(self, request, customer_external_id: str) -> Response:
        customer = _customer(customer_external_id)
        data = self.parse(ps.CreditApplyInputSerializer)
        invoice = Invoice.objects.filter(pk=data["invoice"], customer=customer).first()
        if invoice is None:
            raise serializers.ValidationError({"invoice": ["No invoice of this customer with this id."]})
        amount = data.get("amount")
        allocation = svc.apply_credit_balance(invoice, actor=self.actor, now=self.now(), amount=amount)
        if allocation is None:
            raise serializers.ValidationError(
                {"invoice": [f"Nothing to apply: the customer holds no {invoice.currency} credit."]}
            )
        invoice = Invoice.objects.select_related("customer", "billing_entity").get(pk=invoice.pk)
        body = {"allocation": Allocation.objects.select_related("invoice").get(pk=allocation.pk), "invoice": invoice,
                "balance": svc.credit_balance(customer, invoice.currency)}
        return Response(ps.CreditAppliedSerializer(body).data, status=status.HTTP_201_CREATED)


class CreditBalanceRefundView(_SingleView):
    serializer_class = ps.RefundSerializer

    @extend_schema(summary="Pay back credit the customer holds", parameters=[CUSTOMER_PATH_PARAMETER],
                   request=ps.CreditRefundInputSerializer, responses={201: ps.RefundSerializer}, tags=["customers"])
    def post(self, request, customer_external_id: str) -> Response:
        customer = _customer(customer_external_id)
        data = self.parse(ps.CreditRefundInputSerializer)
        refund = svc.refund_credit_balance(
            customer, currency=data["currency"], amount=data["amount"], reason=data["reason"], actor=self.actor,
            now=self.now(), idempotency_key=stored_key(request),
        )
        if (refund.customer_id, refund.amount, str(refund.currency)) != (customer.pk, data["amount"],
                                                                           data["currency"]):
            raise idempotency.IdempotencyKeyReused()
        return Response(ps.RefundSerializer(_refunds().get(pk=refund.pk)).data, status=status.HTTP_201_CREATED)


# --- an invoice's allocations -------------------------------------------------------------------------------


class InvoiceAllocationsView(_SingleView):
    serializer_class = ps.InvoiceAllocationsSerializer

    @extend_schema(summary="The allocations behind an invoice's amount paid and amount credited",
                   parameters=[INVOICE_PATH_PARAMETER], responses={200: ps.InvoiceAllocationsSerializer},
                   tags=["invoices"])
    def get(self, request, invoice_id: str) -> Response:
        if int(invoice_id) > MAX_ID:
            raise Http404
        invoice = get_object_or_404(Invoice, pk=int(invoice_id))
        body = {
            "invoice": invoice.pk, "number": invoice.number or None, "currency": str(invoice.currency),
            "status": invoice.status, "total": invoice.total, "prepaid_credit_applied": invoice.prepaid_credit_applied,
            "amount_paid": invoice.amount_paid, "amount_credited": invoice.amount_credited,
            "amount_due": invoice.amount_due, "allocations": _allocations().filter(invoice=invoice),
        }
        return Response(ps.InvoiceAllocationsSerializer(body).data)


CUSTOMER = rf"^customers/(?P<customer_external_id>{CODE_REGEX})/credit-balance"

urlpatterns = [
    re_path(rf"{CUSTOMER}$", CustomerCreditBalanceView.as_view(), name="customer-credit-balance"),
    re_path(rf"{CUSTOMER}/apply$", CreditBalanceApplyView.as_view(), name="customer-credit-balance-apply"),
    re_path(rf"{CUSTOMER}/refund$", CreditBalanceRefundView.as_view(), name="customer-credit-balance-refund"),
    re_path(rf"^invoices/(?P<invoice_id>{ID_REGEX})/allocations$", InvoiceAllocationsView.as_view(),
            name="invoice-allocations"),
]


def register(router: Any) -> None:
    router.register("payments", PaymentViewSet, basename="payment")
    router.register("refunds", RefundViewSet, basename="refund")

