"""Gateway webhooks (`POST /api/v1/webhooks/stripe`) and a customer's saved payment methods
(`/api/v1/customers/{external_id}/payment-methods`).

The webhook has no API key: the gateway's signature authenticates it. It answers 400 to a bad signature or a
malformed body, 200 to a delivery (a repeat included: it is acknowledged and changes nothing), 413 to a body
over WEBHOOK_MAX_BYTES. Payment methods are gateway tokens only: anything that looks like a card number, in
any field, is refused without being echoed back.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import re_path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from billing.api.exceptions import error_body
from billing.api.serializers import InputSerializer
from billing.api.views import CODE_REGEX
from billing.errors import BillingError
from invoicing.api.invoices import CUSTOMER_PATH_PARAMETER, ID_REGEX, _CustomerScoped
from invoicing.gateways import GatewayError
from invoicing.gateways.base import CARD_NUMBER_MESSAGE, card_number_paths
from invoicing.models import PaymentMethod
from invoicing.services.charges import deactivate_payment_method, handle_webhook, save_payment_method

logger = logging.getLogger(__name__)

# A Stripe event is a few kilobytes; anything far larger is not one.
WEBHOOK_MAX_BYTES = 256 * 1024
WEBHOOK_GATEWAYS = ("stripe",)


# --- webhooks -----------------------------------------------------------------------------------------------


@csrf_exempt  # authenticated by the gateway's signature, not by a session
def gateway_webhook(request: HttpRequest, gateway_name: str) -> JsonResponse:
    if gateway_name not in WEBHOOK_GATEWAYS:
        return JsonResponse(error_body("not_found", "No webhook endpoint for this gateway."), status=404)
    if request.method != "POST":
        response = JsonResponse(error_body("method_not_allowed", f"Method {request.method} is not allowed."),
                                status=405)
        response["Allow"] = "POST"
        return response
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = error_body("request_too_large", f"The request body is larger than {WEBHOOK_MAX_BYTES} bytes.")
    if declared > WEBHOOK_MAX_BYTES:
        return JsonResponse(too_large, status=413)
    payload = request.read(WEBHOOK_MAX_BYTES + 1)
    if len(payload) > WEBHOOK_MAX_BYTES:
        return JsonResponse(too_large, status=413)
    try:
        event = handle_webhook(gateway_name, payload, request.headers, now=timezone.now())
    except BillingError as exc:
        fields = {exc.field or "non_field_errors": [exc.message]}
        return JsonResponse(error_body("validation_error", "The webhook was refused.", fields), status=400)
    except GatewayError as exc:
        # Not configured on our side: 503 makes the gateway deliver the event again later.
        logger.error("Gateway webhook %s could not be processed: %s", gateway_name, exc)
        return JsonResponse(error_body("unavailable", str(exc)), status=503)
    return JsonResponse({
        "received": True,
        "event_id": event.event_id,
        "duplicate": bool(getattr(event, "duplicate", False)),
        "outcome": event.outcome,
    })


# --- payment methods ----------------------------------------------------------------------------------------


class PaymentMethodSerializer(serializers.ModelSerializer):
    class Meta:
        model = PaymentMethod
        fields = ("id", "gateway", "gateway_customer_id", "gateway_payment_method_id", "brand", "last4",
                  "exp_month", "exp_year", "is_default", "is_active", "created_at", "updated_at")
        read_only_fields = fields


class PaymentMethodInputSerializer(InputSerializer):
    gateway = serializers.ChoiceField(choices=("stripe",), default="stripe")
    gateway_customer_id = serializers.CharField(max_length=100, help_text="The gateway's customer id (cus_...).")
    gateway_payment_method_id = serializers.CharField(max_length=100,
                                                      help_text="The gateway's payment method id (pm_...).")
    brand = serializers.CharField(max_length=30, required=False, allow_blank=True, default="")
    last4 = serializers.CharField(max_length=4, required=False, allow_blank=True, default="",
                                  help_text="The last four digits of the card, for display.")
    exp_month = serializers.IntegerField(min_value=1, max_value=12, required=False, allow_null=True, default=None)
    exp_year = serializers.IntegerField(min_value=2000, max_value=2100, required=False, allow_null=True,
                                        default=None)
    is_default = serializers.BooleanField(default=True, help_text="Charge this method when invoices are finalized.")


def refuse_card_numbers(data: Any) -> None:
    """A body that carries something shaped like a card number is refused as a whole, naming where."""
    paths = card_number_paths(data)
    if paths:
        raise serializers.ValidationError({path[:100]: [CARD_NUMBER_MESSAGE] for path in paths})


@extend_schema_view(
    list=extend_schema(summary="A customer's saved payment methods (gateway tokens)",
                       parameters=[CUSTOMER_PATH_PARAMETER]),
    create=extend_schema(
        summary="Save a gateway payment method token (never a card number)",
        description="Send the tokens the gateway gave for the card (pm_..., cus_...) and its brand, last four digits "
        "and expiry for display. Anything that looks like a card number is refused.",
        parameters=[CUSTOMER_PATH_PARAMETER], request=PaymentMethodInputSerializer,
        responses={201: PaymentMethodSerializer},
    ),
    destroy=extend_schema(summary="Deactivate a saved payment method (it is no longer charged)",
                          parameters=[CUSTOMER_PATH_PARAMETER], responses={200: PaymentMethodSerializer}),
)
class CustomerPaymentMethodViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
                                   _CustomerScoped):
    serializer_class = PaymentMethodSerializer
    lookup_value_regex = ID_REGEX
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[PaymentMethod]:
        if getattr(self, "swagger_fake_view", False):
            return PaymentMethod.objects.none()
        return PaymentMethod.objects.filter(customer=self.customer()).order_by("-is_active", "-is_default",
                                                                               "-created_at", "-id")

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        refuse_card_numbers(request.data)  # before any other check, so no error message repeats the number
        customer = self.customer()
        data = self.parse(PaymentMethodInputSerializer)
        method = save_payment_method(
            customer, gateway=data["gateway"], gateway_customer_id=data["gateway_customer_id"],
            gateway_payment_method_id=data["gateway_payment_method_id"], brand=data["brand"], last4=data["last4"],
            exp_month=data["exp_month"], exp_year=data["exp_year"], make_default=data["is_default"],
            actor=self.actor, now=self.now(),
        )
        return self.render(method, PaymentMethodSerializer, status.HTTP_201_CREATED)

    def destroy(self, request, *args: Any, **kwargs: Any) -> Response:
        method = deactivate_payment_method(self.get_object(), actor=self.actor, now=self.now())
        return self.render(method, PaymentMethodSerializer)


urlpatterns = [
    re_path(r"^webhooks/(?P<gateway_name>[a-z0-9_]{1,30})$", gateway_webhook, name="gateway-webhook"),
]


def register(router: Any) -> None:
    router.register(rf"customers/(?P<customer_external_id>{CODE_REGEX})/payment-methods",
                    CustomerPaymentMethodViewSet, basename="customer-payment-method")
