"""`manage.py recognize_revenue [--through YYYY-MM-DD] [--entity CODE]`: post every document not yet in the
ledger, then recognise revenue through a day (yesterday by default) — what the nightly beat task does."""

from datetime import date, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.actors import Actor
from customers.models import BillingEntity
from revrec.services.posting import post_pending
from revrec.services.recognition import run_recognition


class Command(BaseCommand):
    help = "Post pending documents to the ledger, then recognise revenue through a day (default: yesterday, UTC)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--through", metavar="YYYY-MM-DD", help="Last day to recognise (default: yesterday).")
        parser.add_argument("--entity", metavar="CODE", help="One billing entity (default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        try:
            through = date.fromisoformat(options["through"]) if options["through"] else now.date() - timedelta(1)
        except ValueError as exc:
            raise CommandError(f"--through: {options['through']!r} is not a date (YYYY-MM-DD).") from exc
        if through > now.date():
            raise CommandError(f"--through: {through} is in the future; revenue is recognised for days that ended.")
        entity = None
        if options["entity"]:
            entity = BillingEntity.objects.filter(code=options["entity"]).first()
            if entity is None:
                raise CommandError(f"--entity: no billing entity with code {options['entity']!r}.")
        actor = Actor.system("recognize_revenue")
        posted = post_pending(now=now, actor=actor, entity=entity)
        self.stdout.write(f"Posted: {posted}")
        run = run_recognition(through, actor=actor, now=now, entity=entity)
        amounts = ", ".join(f"{amount} {currency}" for currency, amount in sorted(run.amounts.items())) or "nothing"
        self.stdout.write(f"Recognised through {through}: {amounts} ({run.obligations} obligations).")
