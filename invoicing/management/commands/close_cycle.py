"""`manage.py close_cycle`: run a cycle close "as of" any moment, for backfills, tests and demos."""

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from billing.actors import Actor
from customers.models import Customer
from invoicing.services.cycle import run_cycle_close_inline, start_cycle_close


def parse_as_of(value: str) -> datetime:
    """An ISO 8601 datetime (naive means UTC) or a date (its midnight, UTC)."""
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            moment = datetime(day.year, day.month, day.day) if day else None
    except ValueError as exc:
        raise CommandError(f"--as-of {value!r} is not a valid date or time: {exc}.") from exc
    if moment is None:
        raise CommandError(f"--as-of {value!r} is not an ISO 8601 date or datetime (e.g. 2024-02-01T00:00:00Z).")
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Close the billing cycle as of a moment: every customer with a period to invoice gets its invoices."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", dest="as_of", help="ISO 8601 datetime (default: now; naive means UTC).")
        parser.add_argument("--customer", dest="customers", action="append", default=[], metavar="EXTERNAL_ID",
                            help="Close only this customer (repeatable).")
        parser.add_argument("--inline", action="store_true",
                            help="Close in this process instead of fanning out tasks to the workers.")

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
        actor = Actor.system("close_cycle command")
        if options["inline"]:
            run = run_cycle_close_inline(now=as_of, actor=actor, customer_ids=customer_ids)
            self.stdout.write(
                f"Cycle run {run.pk} as of {as_of.isoformat()}: {run.processed_customers} customer(s), "
                f"{run.invoices_created} invoice(s), {run.failed_customers} failure(s)."
            )
            if run.failed_customers:
                self.stderr.write("Failed customers are listed on the run's admin page.")
            return
        run = start_cycle_close(now=as_of, actor=actor, customer_ids=customer_ids)
        self.stdout.write(f"Started cycle run {run.pk} as of {as_of.isoformat()} over {run.total_customers} "
                          f"customer(s); the workers are closing them.")
        self.stdout.write(str(run.pk))
