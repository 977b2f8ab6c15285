from typing import Any

from rest_framework.pagination import PageNumberPagination


class CursorOrPagePagination(PageNumberPagination):
    """Page-number pagination; clients choose the page size up to a hard ceiling."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        # OpenAPI 3.1 (the API's schema version) writes "may be null" as a type list, not `nullable`.
        link = {"type": ["string", "null"], "format": "uri"}
        return {
            "type": "object",
            "required": ["count", "next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "example": 123, "description": "Items across all pages."},
                "next": {**link, "example": f"https://billing.example.com/api/v1/customers?{self.page_query_param}=3"},
                "previous": {**link, "description": "Null on the first page."},
                "results": schema,
            },
        }
