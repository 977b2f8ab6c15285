from rest_framework.permissions import SAFE_METHODS, BasePermission

from billing.api.models import APIKey


class HasAPIKeyScope(BasePermission):
    """Every call needs a valid key; writes need a key with the write scope."""

    message = "This API key may only read."

    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, APIKey):
            return False
        return request.method in SAFE_METHODS or api_key.scope == APIKey.Scope.WRITE
