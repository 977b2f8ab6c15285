"""Load the demo company (billing/demo.py) into an empty database; a second run does nothing."""

from typing import Any

from django.core.management.base import BaseCommand

from billing.demo import load_demo_data


class Command(BaseCommand):
    help = "Build the demo company through the domain services, only if the database has no customers yet."

    def handle(self, *args: Any, **options: Any) -> None:
        summary = load_demo_data()
        if not summary.created:
            self.stdout.write(self.style.WARNING(summary.lines()[0]))
            return
        self.stdout.write(self.style.SUCCESS("Demo data loaded:"))
        for line in summary.lines():
            self.stdout.write(f"  {line}")
