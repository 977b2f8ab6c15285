"""Wait until the database server and the Celery broker answer (scripts call this before the tests)."""

import time
import warnings
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from kombu import Connection


class Command(BaseCommand):
    help = "Wait until the database server and the message broker accept connections."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=60, help="Seconds to wait in all (default 60).")

    def handle(self, *args: Any, timeout: float, **options: Any) -> None:
        deadline = time.monotonic() + timeout
        self._wait("database", self._database_answers, deadline)
        self._wait("broker", self._broker_answers, deadline)

    def _wait(self, what: str, probe: Any, deadline: float) -> None:
        while True:
            error = probe()
            if error is None:
                self.stdout.write(f"{what} answers")
                return
            if time.monotonic() > deadline:
                raise CommandError(f"The {what} does not answer: {error}")
            time.sleep(1)

    def _database_answers(self) -> str | None:
        connection = connections["default"]
        try:
            # The server, not the named database: the test runner creates its own database.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "falling back to the first database"
                with connection._nodb_cursor() as cursor:
                    cursor.execute("SELECT 1")
        except Exception as exc:
            return f"{connection.settings_dict.get('HOST') or 'local'}: {exc}"
        return None

    def _broker_answers(self) -> str | None:
        url = settings.CELERY_BROKER_URL
        if url.startswith("filesystem://"):
            return None
        try:
            with Connection(url, connect_timeout=3) as broker:
                broker.ensure_connection(max_retries=1)
        except Exception as exc:
            return f"{url}: {exc}"
        return None
