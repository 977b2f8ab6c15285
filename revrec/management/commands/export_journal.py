"""`manage.py export_journal --entity CODE --period YYYY-MM [-o FILE]`: a period's journal in the ERP
import layout of docs/revrec-journal-export.md."""

from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from revrec.exports import journal_export_csv
from revrec.models import AccountingPeriod


class Command(BaseCommand):
    help = "Write a billing entity's journal for one accounting period as CSV (the ERP import layout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--entity", required=True, metavar="CODE")
        parser.add_argument("--period", required=True, metavar="YYYY-MM")
        parser.add_argument("-o", "--output", metavar="FILE", help="Write here instead of standard output.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            start = date.fromisoformat(f"{options['period']}-01")
        except ValueError as exc:
            raise CommandError(f"--period: {options['period']!r} is not a month (YYYY-MM).") from exc
        period = AccountingPeriod.objects.select_related("billing_entity").filter(
            billing_entity__code=options["entity"], start_date=start
        ).first()
        if period is None:
            raise CommandError(f"No accounting period {options['period']} for entity {options['entity']!r}.")
        content = journal_export_csv(period.billing_entity, period)
        if options["output"]:
            Path(options["output"]).write_text(content, encoding="utf-8")
            self.stdout.write(f"Wrote {options['output']}.")
        else:
            self.stdout.write(content, ending="")
