from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from billing.api.views import CODE_REGEX
from invoicing.usage_estimates import CustomerUsageWithEstimatesView
from usage.ingest_views import EventBatchView, EventView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Usage ingestion: plain fast views (usage/ingest_views.py), ahead of the API's catch-all 404.
    path("api/v1/events", EventView.as_view(), name="usage-events"),
    path("api/v1/events/batch", EventBatchView.as_view(), name="usage-events-batch"),
    # Current-period usage (usage/usage_views.py) with estimated amounts (invoicing/usage_estimates.py): the
    # usage app sits below invoicing, so the route is the project's.
    re_path(
        rf"^api/v1/customers/(?P<customer_external_id>{CODE_REGEX})/usage$",
        CustomerUsageWithEstimatesView.as_view(),
        name="customer-usage",
    ),
    path("api/v1/", include("billing.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
