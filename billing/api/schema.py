"""OpenAPI generation: the Idempotency-Key header on every write and the error shape on every operation."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from billing.api import idempotency


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable, e.g. validation_error, not_found, invalid_transition.")
    message = serializers.CharField(help_text="A human-readable explanation.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='Messages by input path, e.g. {"properties.tiers[1].up_to": ["..."]}; empty unless invalid.',
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_ERRORS_ALWAYS = {
    "401": "Missing, unknown, revoked or expired API key.",
    "403": "The API key may not do this (e.g. a read-only key writing).",
    "429": "Too many requests for this API key; retry after the Retry-After header's seconds.",
}
_ERRORS_WRITE = {
    "400": "Invalid input: `error.fields` says what and where.",
    "409": "Refused in the current state (illegal lifecycle transition, Idempotency-Key conflict).",
    "413": "The request body is too large.",
    "415": "The request body is not JSON.",
}
_ERROR_NOT_FOUND = {"404": "No such resource."}


class AccrualAutoSchema(AutoSchema):
    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self.method in idempotency.METHODS:
            parameters = [
                *parameters,
                OpenApiParameter(
                    idempotency.HEADER,
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    required=False,
                    description=(
                        "Makes the request safe to retry: the first response is stored for 24 hours and "
                        "replayed (with `Idempotent-Replayed: true`) for a repeat with the same key and body. "
                        f"At most {idempotency.MAX_KEY_LENGTH} printable ASCII characters, e.g. a UUID."
                    ),
                ),
            ]
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        errors = dict(_ERRORS_ALWAYS)
        if self.method in idempotency.METHODS:
            errors.update(_ERRORS_WRITE)
        elif self.get_filter_backends() or "{" in self.path:
            errors["400"] = "Invalid query parameters."
        if "{" in self.path:
            errors.update(_ERROR_NOT_FOUND)
        for code, description in errors.items():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = description
                responses[code] = response
        return responses
