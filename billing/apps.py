from django.apps import AppConfig


class BillingConfig(AppConfig):
    """The project package as an app: cross-app management commands (start, demo data) and roles."""

    name = "billing"
    verbose_name = "Accrual"
