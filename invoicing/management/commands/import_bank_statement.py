"""`manage.py import_bank_statement --format NAME FILE`: import a bank statement and match its credits."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.actors import Actor
from billing.errors import BillingError
from invoicing.models import BankStatementFormat
from invoicing.services.bank import StatementFileError, import_statement, max_bytes


class Command(BaseCommand):
    help = ("Import a bank statement (CSV laid out as the named format says) and match its credits to invoices; "
            "the same lines are never stored twice.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", dest="format_name", required=True, metavar="NAME",
                            help="The bank statement format's name (see the admin: Bank statement formats).")
        parser.add_argument("file", help="The statement file.")

    def handle(self, *args: Any, **options: Any) -> None:
        fmt = BankStatementFormat.objects.select_related("billing_entity").filter(name=options["format_name"]).first()
        if fmt is None:
            raise CommandError(f"No bank statement format named {options['format_name']!r}.")
        path = Path(options["file"])
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes() + 1)  # one byte more than allowed is enough to refuse it
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        try:
            result = import_statement(fmt, data, filename=path.name, actor=Actor.system("import_bank_statement"),
                                      now=timezone.now())
        except StatementFileError as exc:
            raise CommandError("Nothing was imported:\n" + "\n".join(f"  {e}" for e in exc.errors)) from exc
        except BillingError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Statement {result.statement.pk} ({result.statement.filename}): {result.summary()}")
