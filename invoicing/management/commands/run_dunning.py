"""`manage.py run_dunning`: run the dunning steps due "as of" any moment, for backfills, tests and demos."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.actors import Actor
from customers.models import Customer
from invoicing.management.commands.close_cycle import parse_as_of
from invoicing.services.dunning import run_dunning


class Command(BaseCommand):
    help = "Run the dunning steps due as of a moment (reminders, retries, notices, suspensions, write-offs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", dest="as_of", help="ISO 8601 datetime or date (default: now; naive means UTC).")
        parser.add_argument("--customer", dest="customers", action="append", default=[], metavar="EXTERNAL_ID",
                            help="Dun only this customer (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        as_of = parse_as_of(options["as_of"]) if options["as_of"] else timezone.now()
        customer_ids = None
        if options["customers"]:
            wanted = list(dict.fromkeys(options["customers"]))
            found = dict(Customer.objects.filter(external_id__in=wanted).values_list("external_id", "pk"))
            unknown = [external_id for external_id in wanted if external_id not in found]
            if unknown:
                raise CommandError(f"Unknown customer(s): {', '.join(unknown)}.")
            customer_ids = [found[external_id] for external_id in wanted]
        result = run_dunning(now=as_of, actor=Actor.system("run_dunning command"), customer_ids=customer_ids)
        summary = result.summary()
        self.stdout.write(
            f"Dunning as of {as_of.isoformat()}: {summary['invoices_checked']} invoice(s) checked, "
            f"{summary['done']} step(s) done, {summary['skipped']} skipped, {summary['failed']} failed, "
            f"{summary['resumed']} suspension(s) lifted."
        )
        for invoice_id, error in sorted(result.errors.items()):
            self.stderr.write(f"Invoice {invoice_id}: {error}")
