"""One error shape for every API failure.

    {"error": {"code": "validation_error", "message": "...", "fields": {"name": ["..."], "tiers[1].up_to": ["..."]}}}
"""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from billing.errors import BillingError, InvalidTransition

logger = logging.getLogger(__name__)


class ConflictError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


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
        if hasattr(exc, "error_dict"):
            detail = {(k if k != "__all__" else "non_field_errors"): v for k, v in exc.message_dict.items()}
        else:
            detail = {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, ProtectedError | RestrictedError):
        exc = ConflictError("Other records still refer to this one, so it cannot be deleted.", code="in_use")
    elif isinstance(exc, DataError):
        # A value the database cannot store (out of range, too long) that validation let through.
        logger.warning("API request refused by the database as invalid data: %s", exc)
        exc = exceptions.ValidationError({"non_field_errors": ["A value is out of range or too long to store."]})
    elif isinstance(exc, IntegrityError):
        # A uniqueness or consistency rule enforced by the database, typically a concurrent duplicate;
        # validation catches the ordinary cases with field-level messages first.
        logger.warning("API request refused by a database constraint: %s", exc)
        exc = ConflictError("The request conflicts with existing data (e.g. a duplicate).", code="conflict")

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "The request has invalid fields.", flatten_errors(exc.detail))
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        body = error_body(code if isinstance(code, str) else "error", str(detail))
    return Response(body, status=response.status_code, headers=dict(response.items()))
