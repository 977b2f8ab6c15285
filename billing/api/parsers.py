"""The API's only request format: JSON, bounded in size, with numbers parsed exactly."""

import json
from decimal import Decimal
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:50]!r}")
        result[key] = value
    return result


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class StrictJSONParser(JSONParser):
    """JSON with decimals kept exact (money is never a float), no NaN/Infinity, no duplicate keys.

    The size limit is DATA_UPLOAD_MAX_MEMORY_SIZE: Django enforces it when DRF reads the body (the exception
    handler answers 413); it is checked here too, by what is actually read, for streams read directly.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        # Imported here: exceptions imports DRF's views, which load this parser through the settings.
        from billing.api.exceptions import RequestTooLarge

        parser_context = parser_context or {}
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = parser_context.get("request")
        if limit is not None and request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        raw = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise exceptions.ParseError(f"The request body is not valid {encoding} text.") from None
        try:
            data = json.loads(
                text,
                parse_float=Decimal,
                parse_constant=_reject_constant,
                object_pairs_hook=_no_duplicate_keys,
            )
            # PostgreSQL stores no NUL character in text or jsonb: refuse it here, wherever it hides.
            if _has_nul(data):
                raise ValueError("NUL characters (\\u0000) are not allowed")
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        return data
