"""/api/v1/invoices (+ lines, pdf, finalize, void, refresh, explain, recompute), upcoming invoices, tax rates,
and a customer's coupons, credits, wallet, one-off charges and installment plans.

Thin shells: serializers check shapes, every write goes through invoicing.services (documents, cycle,
credits), and writes accept an Idempotency-Key (billing/api/idempotency.py).
"""

from __future__ import annotations

import json
from typing import Any

import django_filters
from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import re_path
from djmoney.money import Money
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, renderers, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.api.fields import format_amount
from billing.api.views import CODE_REGEX, APIViewSet, BaseAPIView, save_clean
from contracts.models import Coupon, Subscription
from contracts.selectors import customer_today
from customers.models import Customer
from invoicing import serializers as s
from invoicing.models import (
    AppliedCoupon,
    CreditGrant,
    InstallmentPlan,
    Invoice,
    InvoiceLine,
    PendingCharge,
    TaxRate,
    Wallet,
    WalletTransaction,
)
from invoicing.pdf import render_invoice_pdf
from invoicing.services import credits
from invoicing.services.cycle import preview_customer, refresh_draft
from invoicing.services.documents import (
    ManualLine,
    add_line,
    create_one_off_invoice,
    finalize_invoice,
    remove_line,
    void_invoice,
)

ID_REGEX = r"\d+"
CUSTOMER_PATH_PARAMETER = OpenApiParameter(
    "customer_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The customer's external_id."
)
SUBSCRIPTION_PATH_PARAMETER = OpenApiParameter(
    "subscription_external_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The subscription's external_id."
)
LINE_PATH_PARAMETER = OpenApiParameter("line_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The line's id.")


class PDFRenderer(renderers.BaseRenderer):
    media_type = "application/pdf"
    format = "pdf"
    charset = None
    render_style = "binary"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        # An error raised on the way (404, 401) still carries the API's JSON error body.
        if isinstance(data, bytes):
            return data
        return json.dumps(data, default=str).encode()


def _manual_line(data: dict[str, Any]) -> ManualLine:
    return ManualLine(
        description=data["description"], unit_price=data["unit_price"], quantity=data.get("quantity") or 1,
        product=data.get("product"), period_start=data.get("period_start"), period_end=data.get("period_end"),
    )


def _customer(external_id: str) -> Customer:
    return get_object_or_404(Customer.objects.select_related("billing_entity"), external_id=external_id)


def _formula(line: InvoiceLine) -> str:
    """A person's reading of how the line's amount came about, from its stored explanation."""
    explanation = line.explanation or {}
    currency = str(line.invoice.currency)
    amount = format_amount(line.amount, currency)
    tiers = explanation.get("tiers")
    if tiers:
        parts = []
        for tier in tiers:
            piece = f"{tier.get('label', 'tier')}: {tier.get('units')} x {tier.get('unit_price')}"
            if tier.get("flat_fee") not in (None, "0", "0.00"):
                piece += f" + {tier.get('flat_fee')}"
            parts.append(piece)
        exact = explanation.get("exact_amount")
        suffix = f" = {exact}, rounded to {amount} {currency}" if exact is not None else ""
        return f"{explanation.get('charge_model', 'usage')} on {explanation.get('quantity', line.quantity)}: " + \
            "; ".join(parts) + suffix
    base = explanation.get("formula") or f"{line.unit_price.normalize():f} x {line.quantity.normalize():f}"
    return f"{base} = {amount} {currency}"


# --- invoices -----------------------------------------------------------------------------------------------


class InvoiceFilter(django_filters.FilterSet):
    customer = django_filters.CharFilter(field_name="customer__external_id", help_text="The customer's external_id.")
    status = django_filters.MultipleChoiceFilter(choices=Invoice.Status.choices)
    kind = django_filters.MultipleChoiceFilter(choices=Invoice.Kind.choices)
    number = django_filters.CharFilter(field_name="number")
    currency = django_filters.CharFilter(field_name="currency", lookup_expr="iexact")
    issue_date_from = django_filters.DateFilter(field_name="issue_date", lookup_expr="gte", help_text="On or after.")
    issue_date_to = django_filters.DateFilter(field_name="issue_date", lookup_expr="lte", help_text="On or before.")

    class Meta:
        model = Invoice
        fields = ("customer", "status", "kind", "number", "currency")


def _invoices() -> QuerySet[Invoice]:
    return Invoice.objects.select_related("customer", "billing_entity")


def _invoice_detail(pk: int) -> Invoice:
    lines = InvoiceLine.objects.select_related("customer", "subscription", "product", "meter", "invoice")
    return _invoices().prefetch_related(Prefetch("lines", queryset=lines)).get(pk=pk)


@extend_schema_view(
    list=extend_schema(summary="List invoices"),
    retrieve=extend_schema(summary="Get an invoice with its lines", responses={200: s.InvoiceDetailSerializer}),
    create=extend_schema(
        summary="Create a one-off invoice (a draft, or finalized at once)",
        request=s.InvoiceCreateSerializer,
        responses={201: s.InvoiceDetailSerializer},
    ),
)
class InvoiceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, APIViewSet):
    serializer_class = s.InvoiceSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = InvoiceFilter
    search_fields = ("number", "customer__external_id", "customer__name")
    ordering_fields = ("created_at", "issue_date", "due_date", "total", "number")
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Invoice]:
        return _invoices()

    def get_serializer_class(self) -> type:
        if self.action == "create":
            return s.InvoiceCreateSerializer
        if self.action == "list":
            return s.InvoiceSerializer
        return s.InvoiceDetailSerializer

    def _detail(self, invoice: Invoice, code: int = status.HTTP_200_OK) -> Response:
        return self.render(_invoice_detail(invoice.pk), s.InvoiceDetailSerializer, code)

    def retrieve(self, request, *args: Any, **kwargs: Any) -> Response:
        return self._detail(self.get_object())

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = self.parse(s.InvoiceCreateSerializer)
        customer = Customer.objects.filter(external_id=data["customer"]).select_related("billing_entity").first()
        if customer is None:
            raise serializers.ValidationError({"customer": ["No customer with this external_id."]})
        invoice = create_one_off_invoice(
            customer, [_manual_line(line) for line in data["lines"]], currency=data.get("currency"),
            actor=self.actor, now=self.now(), memo=data.get("memo", ""), finalize=data.get("finalize", False),
        )
        return self._detail(invoice, status.HTTP_201_CREATED)

    @extend_schema(
        summary="The invoice as a PDF",
        responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="The PDF document.")},
    )
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, PDFRenderer])
    def pdf(self, request, *args: Any, **kwargs: Any) -> HttpResponse:
        invoice = self.get_object()
        content: bytes | None = None
        if invoice.pdf:
            try:
                with invoice.pdf.open("rb") as stored:
                    content = stored.read()
            except OSError:
                content = None  # the file went missing: render it again
        if content is None:
            content = render_invoice_pdf(invoice)
        name = invoice.number or f"draft-{invoice.pk}"
        response = HttpResponse(content, content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{name}.pdf"'
        return response

    @extend_schema(summary="Finalize a draft (number, snapshots, prepaid credit, PDF)", request=None,
                   responses={200: s.InvoiceDetailSerializer})
    @action(detail=True, methods=["post"])
    def finalize(self, request, *args: Any, **kwargs: Any) -> Response:
        invoice = finalize_invoice(self.get_object(), actor=self.actor, now=self.now())
        return self._detail(invoice)

    @extend_schema(summary="Void a draft or an unpaid finalized invoice", request=s.VoidInputSerializer,
                   responses={200: s.InvoiceDetailSerializer})
    @action(detail=True, methods=["post"])
    def void(self, request, *args: Any, **kwargs: Any) -> Response:
        invoice = self.get_object()
        data = self.parse(s.VoidInputSerializer)
        invoice = void_invoice(invoice, reason=data["reason"], actor=self.actor, now=self.now())
        return self._detail(invoice)

    @extend_schema(summary="Recompute a cycle draft as of now (keeps the lines a person added)", request=None,
                   responses={200: s.InvoiceDetailSerializer})
    @action(detail=True, methods=["post"])
    def refresh(self, request, *args: Any, **kwargs: Any) -> Response:
        invoice = refresh_draft(self.get_object(), actor=self.actor, now=self.now())
        return self._detail(invoice)

    @extend_schema(summary="Add a manual line to a draft", request=s.ManualLineInputSerializer,
                   responses={201: s.InvoiceDetailSerializer})
    @action(detail=True, methods=["post"])
    def lines(self, request, *args: Any, **kwargs: Any) -> Response:
        invoice = self.get_object()
        data = self.parse(s.ManualLineInputSerializer)
        invoice = add_line(invoice, _manual_line(data), actor=self.actor, now=self.now())
        return self._detail(invoice, status.HTTP_201_CREATED)

    @extend_schema(summary="Remove a manual line from a draft", parameters=[LINE_PATH_PARAMETER], request=None,
                   responses={200: s.InvoiceDetailSerializer})
    @action(detail=True, methods=["delete"], url_path=r"lines/(?P<line_id>\d+)")
    def line(self, request, *args: Any, line_id: str, **kwargs: Any) -> Response:
        invoice = self.get_object()
        line = get_object_or_404(InvoiceLine, invoice=invoice, pk=int(line_id))
        invoice = remove_line(line, actor=self.actor, now=self.now())
        return self._detail(invoice)

    @extend_schema(summary="How each line's amount was computed", responses={200: s.InvoiceExplanationSerializer})
    @action(detail=True, methods=["get"])
    def explain(self, request, *args: Any, **kwargs: Any) -> Response:
        invoice = self.get_object()
        lines = invoice.lines.select_related("invoice").order_by("position", "id")
        body = {
            "invoice": invoice.pk,
            "number": invoice.number,
            "lines": [
                {"id": line.pk, "kind": line.kind, "description": line.description,
                 "amount": Money(line.amount, str(invoice.currency)), "formula": _formula(line),
                 "explanation": line.explanation}
                for line in lines
            ],
        }
        return Response(s.InvoiceExplanationSerializer(body).data)

    @extend_schema(summary="Recompute the invoice from stored events and prices; does it still match?",
                   responses={200: s.RecomputeSerializer})
    @action(detail=True, methods=["get"])
    def recompute(self, request, *args: Any, **kwargs: Any) -> Response:
        # Imported here: recomputation pulls in the usage read path, which the other endpoints do not need.
        from invoicing.services.recompute import recompute_invoice

        report = recompute_invoice(self.get_object())
        body = {"matches": report.matches, "late_events": report.late_events, "lines": report.lines,
                "differences": report.differences}
        return Response(s.RecomputeSerializer(body).data)


# --- upcoming invoices --------------------------------------------------------------------------------------


class _PreviewView(BaseAPIView):
    serializer_class = s.UpcomingInvoiceSerializer
    pagination_class = None
    filter_backends: list = []

    def _preview(self, customer: Customer, subscription: Subscription | None = None) -> Response:
        # Read-only: rating and pricing write nothing, and nothing is locked.
        preview = preview_customer(customer, now=self.now(), subscription=subscription)
        return Response(s.UpcomingInvoiceSerializer(s.preview_body(preview)).data)


class CustomerUpcomingInvoiceView(_PreviewView):
    @extend_schema(
        summary="Preview the customer's upcoming invoice (writes nothing)",
        description="What the close at the end of the current period would bill, with the usage received so far.",
        parameters=[CUSTOMER_PATH_PARAMETER],
        responses={200: s.UpcomingInvoiceSerializer},
        tags=["customers"],
    )
    def get(self, request, customer_external_id: str) -> Response:
        return self._preview(_customer(customer_external_id))


class SubscriptionUpcomingInvoiceView(_PreviewView):
    @extend_schema(
        summary="Preview a subscription's upcoming invoice (writes nothing)",
        parameters=[SUBSCRIPTION_PATH_PARAMETER],
        responses={200: s.UpcomingInvoiceSerializer},
        tags=["subscriptions"],
    )
    def get(self, request, subscription_external_id: str) -> Response:
        subscription = get_object_or_404(Subscription.objects.select_related("customer"),
                                         external_id=subscription_external_id)
        return self._preview(subscription.customer, subscription)


# --- tax rates ----------------------------------------------------------------------------------------------


class TaxRateFilter(django_filters.FilterSet):
    country = django_filters.CharFilter(field_name="country", lookup_expr="iexact")

    class Meta:
        model = TaxRate
        fields = ("country", "region", "tax_code", "is_active")


@extend_schema_view(
    list=extend_schema(summary="List tax rates"),
    retrieve=extend_schema(summary="Get a tax rate"),
    create=extend_schema(summary="Create a tax rate"),
    partial_update=extend_schema(summary="Update a tax rate"),
    destroy=extend_schema(summary="Delete a tax rate no invoice line uses (otherwise deactivate it)"),
)
class TaxRateViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin,
    mixins.DestroyModelMixin, APIViewSet,
):
    queryset = TaxRate.objects.all()
    serializer_class = s.TaxRateSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = TaxRateFilter
    search_fields = ("name", "tax_code")
    ordering_fields = ("country", "name", "percent", "valid_from", "created_at")

    def perform_create(self, serializer: s.TaxRateSerializer) -> None:
        # A tax rate is a reference row with no rule beyond its model's, which full_clean checks.
        serializer.instance = save_clean(TaxRate(), actor=self.actor, **serializer.validated_data)

    def perform_update(self, serializer: s.TaxRateSerializer) -> None:
        save_clean(serializer.instance, actor=self.actor, **serializer.validated_data)

    def perform_destroy(self, instance: TaxRate) -> None:
        instance.delete()


# --- a customer's coupons, credits, wallet, charges -----------------------------------------------------------


class _CustomerScoped(APIViewSet):
    lookup_value_regex = ID_REGEX
    filter_backends: list = []

    def customer(self) -> Customer:
        if not hasattr(self, "_customer"):
            self._customer = _customer(self.kwargs["customer_external_id"])
        return self._customer


@extend_schema_view(
    list=extend_schema(summary="A customer's coupons", parameters=[CUSTOMER_PATH_PARAMETER]),
    create=extend_schema(summary="Apply a coupon", parameters=[CUSTOMER_PATH_PARAMETER],
                         request=s.ApplyCouponSerializer, responses={201: s.AppliedCouponSerializer}),
    destroy=extend_schema(summary="Remove a coupon (no further discounts)", parameters=[CUSTOMER_PATH_PARAMETER],
                          responses={200: s.AppliedCouponSerializer}),
)
class CustomerCouponViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, _CustomerScoped):
    serializer_class = s.AppliedCouponSerializer
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[AppliedCoupon]:
        if getattr(self, "swagger_fake_view", False):
            return AppliedCoupon.objects.none()
        return AppliedCoupon.objects.filter(customer=self.customer()).select_related("coupon").order_by("created_at",
                                                                                                         "id")

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        customer = self.customer()
        data = self.parse(s.ApplyCouponSerializer)
        coupon = Coupon.objects.filter(code=data["coupon"]).first()
        if coupon is None:
            raise serializers.ValidationError({"coupon": ["No coupon with this code."]})
        applied = credits.apply_coupon(customer, coupon, actor=self.actor, now=self.now())
        return self.render(applied, s.AppliedCouponSerializer, status.HTTP_201_CREATED)

    def destroy(self, request, *args: Any, **kwargs: Any) -> Response:
        applied = credits.remove_coupon(self.get_object(), actor=self.actor, now=self.now())
        return self.render(applied, s.AppliedCouponSerializer)


@extend_schema_view(
    list=extend_schema(summary="A customer's promotional credits", parameters=[CUSTOMER_PATH_PARAMETER]),
    create=extend_schema(summary="Grant promotional credit (a discount before tax)",
                         parameters=[CUSTOMER_PATH_PARAMETER], request=s.GrantCreditSerializer,
                         responses={201: s.CreditGrantSerializer}),
)
class CustomerCreditViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, _CustomerScoped):
    serializer_class = s.CreditGrantSerializer
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[CreditGrant]:
        if getattr(self, "swagger_fake_view", False):
            return CreditGrant.objects.none()
        return CreditGrant.objects.filter(customer=self.customer()).order_by("created_at", "id")

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        customer = self.customer()
        data = self.parse(s.GrantCreditSerializer)
        grant = credits.grant_credit(
            customer, amount=data["amount"].amount, currency=str(data["amount"].currency), reason=data["reason"],
            expires_on=data.get("expires_on"), actor=self.actor, now=self.now(),
        )
        return self.render(grant, s.CreditGrantSerializer, status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(summary="A customer's pending one-off charges", parameters=[CUSTOMER_PATH_PARAMETER]),
    create=extend_schema(summary="Add a one-off charge to the next invoice", parameters=[CUSTOMER_PATH_PARAMETER],
                         request=s.OneOffChargeInputSerializer, responses={201: s.PendingChargeSerializer}),
)
class CustomerOneOffChargeViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, _CustomerScoped):
    serializer_class = s.PendingChargeSerializer
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[PendingCharge]:
        if getattr(self, "swagger_fake_view", False):
            return PendingCharge.objects.none()
        return PendingCharge.objects.filter(customer=self.customer(), installment_plan__isnull=True).select_related(
            "subscription", "product").order_by("bill_on", "id")

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        customer = self.customer()
        data = self.parse(s.OneOffChargeInputSerializer)
        subscription = None
        if data.get("subscription"):
            subscription = Subscription.objects.filter(
                external_id=data["subscription"], customer=customer
            ).select_related("plan_version__plan").first()
            if subscription is None:
                raise serializers.ValidationError({"subscription": ["No subscription of this customer with this id."]})
        now = self.now()
        charge = credits.add_one_off_charge(
            customer, description=data["description"], unit_price=data["unit_price"].amount,
            quantity=data.get("quantity") or 1, currency=str(data["unit_price"].currency), product=data.get("product"),
            bill_on=data.get("bill_on") or customer_today(customer, now), subscription=subscription,
            actor=self.actor, now=now,
        )
        return self.render(charge, s.PendingChargeSerializer, status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(summary="A customer's installment plans", parameters=[CUSTOMER_PATH_PARAMETER]),
    create=extend_schema(summary="Split a fee into monthly installments", parameters=[CUSTOMER_PATH_PARAMETER],
                         request=s.InstallmentPlanInputSerializer, responses={201: s.InstallmentPlanSerializer}),
)
class CustomerInstallmentPlanViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, _CustomerScoped):
    serializer_class = s.InstallmentPlanSerializer
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[InstallmentPlan]:
        if getattr(self, "swagger_fake_view", False):
            return InstallmentPlan.objects.none()
        return InstallmentPlan.objects.filter(customer=self.customer()).select_related("product").prefetch_related(
            Prefetch("charges", queryset=PendingCharge.objects.select_related("product", "subscription")
                     .order_by("installment_number"))
        ).order_by("created_at", "id")

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        customer = self.customer()
        data = self.parse(s.InstallmentPlanInputSerializer)
        now = self.now()
        plan = credits.create_installment_plan(
            customer, description=data["description"], total=data["total"].amount, installments=data["installments"],
            first_bill_on=data.get("first_bill_on") or customer_today(customer, now),
            currency=str(data["total"].currency), product=data.get("product"), actor=self.actor, now=now,
        )
        return self.render(self.get_queryset().get(pk=plan.pk), s.InstallmentPlanSerializer, status.HTTP_201_CREATED)


class CustomerWalletView(BaseAPIView):
    serializer_class = s.CustomerWalletsSerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(summary="The customer's prepaid credit: balance and transactions per currency",
                   parameters=[CUSTOMER_PATH_PARAMETER], responses={200: s.CustomerWalletsSerializer},
                   tags=["customers"])
    def get(self, request, customer_external_id: str) -> Response:
        customer = _customer(customer_external_id)
        wallets = Wallet.objects.filter(customer=customer).prefetch_related(
            Prefetch("transactions", queryset=WalletTransaction.objects.select_related("wallet").order_by(
                "created_at", "id"))
        ).order_by("currency")
        return Response(s.CustomerWalletsSerializer({"customer": customer.external_id, "wallets": wallets}).data)

    @extend_schema(summary="Buy prepaid credit (an invoice; finalizing it credits the wallet)",
                   parameters=[CUSTOMER_PATH_PARAMETER], request=s.PurchaseCreditSerializer,
                   responses={201: s.InvoiceDetailSerializer}, tags=["customers"])
    def post(self, request, customer_external_id: str) -> Response:
        customer = _customer(customer_external_id)
        serializer = s.PurchaseCreditSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with transaction.atomic():
            invoice = credits.purchase_prepaid_credit(
                customer, amount=data["amount"].amount, currency=str(data["amount"].currency),
                expires_on=data.get("expires_on"), actor=self.actor, now=self.now(), finalize=data["finalize"],
            )
        return Response(s.InvoiceDetailSerializer(_invoice_detail(invoice.pk)).data, status=status.HTTP_201_CREATED)


urlpatterns = [
    re_path(rf"^customers/(?P<customer_external_id>{CODE_REGEX})/upcoming-invoice$",
            CustomerUpcomingInvoiceView.as_view(), name="customer-upcoming-invoice"),
    re_path(rf"^subscriptions/(?P<subscription_external_id>{CODE_REGEX})/upcoming-invoice$",
            SubscriptionUpcomingInvoiceView.as_view(), name="subscription-upcoming-invoice"),
    re_path(rf"^customers/(?P<customer_external_id>{CODE_REGEX})/wallet$", CustomerWalletView.as_view(),
            name="customer-wallet"),
]


def register(router: Any) -> None:
    router.register("invoices", InvoiceViewSet, basename="invoice")
    router.register("tax-rates", TaxRateViewSet, basename="tax-rate")
    customer = rf"customers/(?P<customer_external_id>{CODE_REGEX})"
    router.register(f"{customer}/coupons", CustomerCouponViewSet, basename="customer-coupon")
    router.register(f"{customer}/credits", CustomerCreditViewSet, basename="customer-credit")
    router.register(f"{customer}/one-off-charges", CustomerOneOffChargeViewSet, basename="customer-one-off-charge")
    router.register(f"{customer}/installment-plans", CustomerInstallmentPlanViewSet,
                    basename="customer-installment-plan")
