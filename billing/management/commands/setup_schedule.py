"""Register the periodic tasks that celery-beat runs (stored in the database; safe to repeat)."""

from typing import Any

from django.core.management.base import BaseCommand

from billing.schedule import ensure_periodic_tasks


class Command(BaseCommand):
    help = "Create or update the celery-beat periodic tasks (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        for spec, row, created in ensure_periodic_tasks():
            state = "created" if created else ("up to date" if row.enabled else "up to date, disabled")
            self.stdout.write(f"{row.name}: {row.task}, {spec.when} ({state})")
