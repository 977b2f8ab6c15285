"""Import customers, plans (with charges) or subscriptions from a CSV file, all or nothing.

    manage.py import_csv customers customers.csv --dry-run
    manage.py import_csv plans plans.csv
    manage.py import_csv subscriptions subscriptions.csv --user alice

Every problem is printed as "line N, column 'x': reason" and the command exits with status 1 without
writing anything. The layouts are documented in docs/imports.md.
"""

import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.actors import Actor
from contracts.resources import PlanImportResource, SubscriptionImportResource
from customers.resources import CsvImportResource, CustomerImportResource, max_bytes, run_import

RESOURCES: dict[str, type[CsvImportResource]] = {
    "customers": CustomerImportResource,
    "plans": PlanImportResource,
    "subscriptions": SubscriptionImportResource,
}


class Command(BaseCommand):
    help = "Import customers, plans with charges, or subscriptions from a CSV file (all rows or none)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=sorted(RESOURCES), help="What the file holds.")
        parser.add_argument("file", help="Path of the CSV file (UTF-8), or - for standard input.")
        parser.add_argument("--dry-run", action="store_true", help="Check every row and write nothing.")
        parser.add_argument("--user", help="Username recorded as the actor (default: the import command).")

    def handle(self, *args: Any, kind: str, file: str, dry_run: bool, user: str | None, **options: Any) -> None:
        actor = self._actor(user)
        data = self._read(file)
        result, problems = run_import(RESOURCES[kind](), data, dry_run=dry_run, actor=actor)
        if problems:
            for problem in problems:
                self.stderr.write(str(problem))
            raise CommandError(
                f"{len(problems)} problem(s) in {file}: nothing was imported. Correct the file and run again."
            )
        count = result.totals["new"]
        if dry_run:
            self.stdout.write(self.style.SUCCESS(f"Dry run: {count} row(s) of {kind} would be imported; "
                                                 "nothing was written."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Imported {count} row(s) of {kind}."))

    def _actor(self, username: str | None) -> Actor:
        if not username:
            return Actor.system("import_csv")
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user '{username}'.")
        return Actor.for_user(user)

    def _read(self, file: str) -> bytes:
        if file == "-":
            return sys.stdin.buffer.read(max_bytes() + 1)  # one byte over the limit is enough to refuse it
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No file {file}.")
        if path.stat().st_size > max_bytes():
            raise CommandError(
                f"{file} is larger than {max_bytes() // 1024} KiB, the limit of one import; "
                "split it into smaller files."
            )
        return path.read_bytes()
