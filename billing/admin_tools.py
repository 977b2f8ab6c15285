"""Admin building blocks shared by the domain apps."""

from typing import Any

from django.core.exceptions import PermissionDenied
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


class NoRevertHistoryMixin:
    """History pages of money records are read only: simple-history's revert (a POST to a version's page,
    allowed to anyone who may view) would write an old row back past the services' rules."""

    def revert_disabled(self, request: HttpRequest, obj: Any = None) -> bool:
        return True

    def history_form_view(self, request: HttpRequest, object_id: str, version_id: str,
                          extra_context: dict[str, Any] | None = None) -> Any:
        if request.method == "POST":
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)  # type: ignore[misc]
