"""/api/v1/: every app registers its viewsets on this one router."""

from django.urls import re_path
from rest_framework.routers import DefaultRouter

from billing.api.views import not_found


class APIRouter(DefaultRouter):
    # Codes and external ids may contain dots, so "/customers/acme.json" must not mean "format=json".
    include_format_suffixes = False


router = APIRouter(trailing_slash=False)


def _app_urls() -> list:
    """Each app's api module registers its viewsets and may add single endpoints (`urlpatterns`)."""
    from contracts import api as contracts_api
    from customers import api as customers_api
    from invoicing import api as invoicing_api
    from revrec import api as revrec_api
    from usage import api as usage_api

    extra: list = []
    for module in (customers_api, contracts_api, usage_api, invoicing_api, revrec_api):
        module.register(router)
        extra.extend(getattr(module, "urlpatterns", []))
    return extra


urlpatterns = [
    *_app_urls(),
    *router.urls,
    # Anything else under /api/v1/ answers 404 in the API's error shape.
    re_path(r"^.*$", not_found),
]
