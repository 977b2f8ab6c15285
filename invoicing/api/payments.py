"""payments API."""

from typing import Any

urlpatterns: list = []


def register(router: Any) -> None:
    """Viewsets of this area are registered here."""
