"""Base viewsets: thin shells that parse input, call a domain service and render the result."""

from datetime import datetime
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, generics, viewsets
from rest_framework.response import Response

from billing.actors import Actor
from billing.api.exceptions import error_body
from billing.api.idempotency import IdempotentViewMixin

# URL keys are the models' codes and external ids (customers.models.code_validator).
CODE_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.:\-]*"


class QueryGuardMixin:
    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # PostgreSQL cannot compare text with a NUL character: refuse it as bad input, not a server error.
        bad = sorted({key for key, values in request.query_params.lists() for v in [key, *values] if "\x00" in v})
        if bad:
            raise exceptions.ValidationError({key[:100]: ["NUL characters are not allowed."] for key in bad})


class APIViewSet(QueryGuardMixin, IdempotentViewMixin, viewsets.GenericViewSet):
    lookup_value_regex = CODE_REGEX
    # PUT replaces nothing that PATCH cannot; one partial update verb keeps clients simple.
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @property
    def actor(self) -> Actor:
        return Actor.from_request(self.request)

    def now(self) -> datetime:
        return timezone.now()

    def parse(self, serializer_class: type, **context: Any) -> dict[str, Any]:
        """The request body, validated by `serializer_class` (shape only: the service checks the rules)."""
        serializer = serializer_class(data=self.request.data, context={**self.get_serializer_context(), **context})
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def render(self, instance: Any, serializer_class: type, status: int = 200) -> Response:
        return Response(serializer_class(instance, context=self.get_serializer_context()).data, status=status)


@csrf_exempt  # any method: an unknown path is a 404 whatever is sent to it, never a CSRF page
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/v1/ answer in the API's error shape, not Django's HTML page."""
    message = "No API endpoint at this path."
    if request.path.endswith("/") and request.path != "/api/v1/":
        message += " API paths have no trailing slash."
    return JsonResponse(error_body("not_found", message), status=404)


def save_clean(instance: Any, *, actor: Actor, **fields: Any) -> Any:
    """Create or update a plain catalog row that has no domain service: every model rule (field validators,
    constraints) is checked by full_clean before anything is written."""
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.full_clean()
    # django-simple-history reads these for the audit row of this save.
    instance._history_user = actor.user
    instance._change_reason = actor.label
    instance.save()
    return instance


class BaseAPIView(QueryGuardMixin, IdempotentViewMixin, generics.GenericAPIView):
    # A single endpoint outside the router's collection/detail pattern.

    @property
    def actor(self) -> Actor:
        return Actor.from_request(self.request)

    def now(self) -> datetime:
        return timezone.now()
