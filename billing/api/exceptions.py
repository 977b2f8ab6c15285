"""One error shape for every API failure.

    {"error": {"code": "validation_error", "message": "...", "fields": {"name": ["..."], "tiers[1].up_to": ["..."]}}}
"""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from billing.errors import BillingError, InvalidTransition


class ConflictError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


def flatten_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as a flat {"field.sub[0]": [messages]} map."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if not prefix else (f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}")
            for k, v in flatten_errors(value, name).items():
                flat.setdefault(k, []).extend(v)
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            flat.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item:
                    for k, v in flatten_errors(item, f"{prefix}[{index}]").items():
                        flat.setdefault(k, []).extend(v)
    else:
        flat.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return flat


def api_exception_handler(exc, context):
    if isinstance(exc, InvalidTransition):
        exc = ConflictError(detail=exc.message, code=exc.code)
    elif isinstance(exc, BillingError):
        exc = exceptions.ValidationError(detail={exc.field or "non_field_errors": [exc.message]})
    elif isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = {
            "error": {
                "code": "validation_error",
                "message": "The request has invalid fields.",
                "fields": flatten_errors(exc.detail),
            }
        }
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        body = {"error": {"code": code if isinstance(code, str) else "error", "message": str(detail), "fields": {}}}
    return Response(body, status=response.status_code, headers=dict(response.items()))
