from rest_framework.pagination import PageNumberPagination


class CursorOrPagePagination(PageNumberPagination):
    """Page-number pagination; clients choose the page size up to a hard ceiling."""

    page_size_query_param = "page_size"
    max_page_size = 500
