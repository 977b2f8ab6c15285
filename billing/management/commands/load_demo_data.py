"""Load the demo company (billing/demo.py) into an empty database; a second run does nothing."""

from pathlib import Path
from typing import Any

from django.conf import settings
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
        # Today's bank statement: import it in the admin (Bank statements -> Import a statement).
        path = Path(settings.VAR_DIR) / "demo" / "first-harbor-bank-statement.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(summary.todays_statement)
        self.stdout.write(f"  today's bank statement to import (format 'First Harbor Bank (USD)'): {path}")
