"""Admin building blocks shared by the domain apps."""

from typing import Any

from django.http import HttpRequest


class ReadOnlyAdminMixin:
    """For rows that only services write (events, phases, change records): look, never edit.

    Works on a ModelAdmin and on an inline alike (the optional `obj` covers both signatures)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
