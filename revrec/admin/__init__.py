"""The revrec app's admin, one module per area (importing a module registers its ModelAdmins)."""

from django.contrib import admin

from . import ledger, revenue  # noqa: F401
from .reports import add_reports_to_app_list

add_reports_to_app_list(admin.site)
