"""`Authorization: Api-Key <key>`: keys are looked up by their SHA-256 and must be neither revoked nor expired."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from billing.api.models import APIKey, hash_key

KEYWORD = "Api-Key"
# Writing last_used_at on every request would make each read a write; a minute's precision is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class APIKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, raw_key = header.partition(" ")
        if keyword != KEYWORD or not raw_key.strip():
            raise exceptions.AuthenticationFailed(f"Use the header 'Authorization: {KEYWORD} <your key>'.")
        try:
            api_key = APIKey.objects.get(hashed_key=hash_key(raw_key.strip()))
        except APIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Unknown API key.") from None
        if not api_key.is_usable:
            raise exceptions.AuthenticationFailed("This API key is revoked or expired.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            APIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
        return (None, api_key)

    def authenticate_header(self, request) -> str:
        return KEYWORD


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "billing.api.authentication.APIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": f"`{KEYWORD} <key>`; keys are created in the admin under API access.",
        }
