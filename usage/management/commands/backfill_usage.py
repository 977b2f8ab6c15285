"""manage.py backfill_usage FILE.csv [--batch-size 5000] [--dry-run]

Streams a usage CSV of any size through the API's validation and deduplication (usage.ingestion.backfill_csv),
printing progress (rows, rows/s) to stderr and a summary at the end. Columns: transaction_id,
customer_external_id, meter_code, timestamp (optional) and either a `properties` JSON column or
`properties.<name>` columns (docs/usage.md).
"""

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from usage.ingestion import BackfillFileError, BackfillSummary, backfill_csv

MAX_BATCH_SIZE = 50_000


class Command(BaseCommand):
    help = "Backfill usage events from a CSV file, with the same validation and deduplication as the API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The CSV file ('-' reads standard input).")
        parser.add_argument("--batch-size", type=int, default=5000, help="Events per transaction (default 5000).")
        parser.add_argument("--dry-run", action="store_true", help="Validate and count; store nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise CommandError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}.")
        path = options["file"]
        dry_run = options["dry_run"]

        def progress(summary: BackfillSummary) -> None:
            self.stderr.write(
                f"\r{summary.rows:,} rows  {summary.rows_per_second:,.0f} rows/s  "
                f"accepted {summary.accepted:,}  duplicates {summary.duplicates:,}  rejected {summary.rejected:,}",
                ending="",
            )
            self.stderr.flush()

        try:
            if path == "-":
                summary = backfill_csv(sys.stdin, now=timezone.now(), batch_size=batch_size, dry_run=dry_run,
                                       progress=progress)
            else:
                file = Path(path)
                if not file.is_file():
                    raise CommandError(f"No such file: {path}")
                with file.open(newline="", encoding="utf-8-sig", errors="strict") as lines:
                    summary = backfill_csv(lines, now=timezone.now(), batch_size=batch_size, dry_run=dry_run,
                                           progress=progress)
        except BackfillFileError as exc:
            raise CommandError(str(exc)) from None
        except UnicodeDecodeError as exc:
            raise CommandError(f"The file is not UTF-8 text ({exc}); rows before it were ingested.") from None
        self.stderr.write("")
        self.stdout.write(format_summary(summary, dry_run=dry_run))


def format_summary(summary: BackfillSummary, *, dry_run: bool) -> str:
    verb = "would be" if dry_run else "were"
    lines = [
        f"{'Dry run: ' if dry_run else ''}{summary.rows:,} rows in {summary.seconds:.1f} s "
        f"({summary.rows_per_second:,.0f} rows/s)",
        f"  accepted:   {summary.accepted:,}" + (" (would be)" if dry_run else ""),
        f"  duplicates: {summary.duplicates:,} (already counted; {verb} not counted again)",
        f"  rejected:   {summary.rejected:,}" + ("" if dry_run else " (kept in the rejected events, see the admin)"),
    ]
    for code, count in sorted(summary.rejected_by_reason.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"    {code}: {count:,}")
    if summary.examples:
        lines.append("  first rejections:")
        lines.extend(f"    line {line}: {code}: {reason}" for line, code, reason in summary.examples)
    return "\n".join(lines)
