"""Who did something: every service that changes state records its actor for the audit trail."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    label: str
    user: Any = None  # a django.contrib.auth user, when a person acted

    @classmethod
    def for_user(cls, user: Any) -> "Actor":
        return cls(label=f"user:{user.get_username()}", user=user)

    @classmethod
    def for_api_key(cls, api_key: Any) -> "Actor":
        return cls(label=f"api-key:{api_key.prefix} {api_key.name}")

    @classmethod
    def system(cls, what: str) -> "Actor":
        return cls(label=f"system:{what}")

    @classmethod
    def from_request(cls, request: Any) -> "Actor":
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls.for_user(user)
        api_key = getattr(request, "auth", None)
        if api_key is not None and hasattr(api_key, "prefix"):
            return cls.for_api_key(api_key)
        return cls.system("anonymous")
