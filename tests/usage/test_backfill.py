"""manage.py backfill_usage and the admin upload: the API's validation and deduplication, a summary with
reasons and line numbers, dry runs that store nothing, header errors that stop before anything is stored."""

import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection

from tests.admin.support import client_for
from usage import events_admin, partitions
from usage.models import RejectedEvent, UsageBackfill, UsageEvent

pytestmark = pytest.mark.django_db

JSON_CSV = """transaction_id,customer_external_id,meter_code,timestamp,properties
c1,acme,tokens,2024-01-10T10:00:00Z,"{""tokens"": 12.5, ""region"": ""eu""}"
c2,acme,api_calls,2024-01-10T11:00:00+01:00,
c3,nobody,api_calls,2024-01-10T11:00:00Z,
c1,acme,tokens,2024-01-11T10:00:00Z,"{""tokens"": 99}"
c4,acme,tokens,2024-01-10T12:00:00Z,"{""tokens"": ""many""}"
c5,acme,tokens,2024-01-10T12:00:00Z,{not json
c6,globex,api_calls,1704880800,
"""

COLUMNS_CSV = """transaction_id,customer_external_id,meter_code,timestamp,properties.tokens,properties.region
p1,acme,tokens,2023-11-05T10:00:00Z,7,eu
p2,acme,tokens,2023-12-05T10:00:00Z,0.000000000001,
p3,acme,tokens,2023-12-05T10:00:00Z,,us
p4,acme,tokens,2023-12-05T10:00:00Z,3,
"""


def write(tmp_path: Path, text: str, name: str = "usage.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("backfill_usage", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_backfill_with_a_properties_json_column(metering, tmp_path):
    out, err = run(write(tmp_path, JSON_CSV), "--batch-size", "3")
    assert "rows/s" in err and "7 rows" in err
    assert "7 rows in" in out
    assert "accepted:   3" in out and "duplicates: 1" in out and "rejected:   3" in out
    assert "unknown_customer: 1" in out and "invalid_value: 1" in out and "malformed: 1" in out
    assert "line 4: unknown_customer" in out and "line 7: malformed" in out
    c1 = UsageEvent.objects.get(transaction_id="c1")
    assert c1.value == Decimal("12.5") and c1.properties == {"tokens": 12.5, "region": "eu"} and c1.source == "csv"
    assert UsageEvent.objects.get(transaction_id="c6").timestamp.isoformat() == "2024-01-10T10:00:00+00:00"
    kept = RejectedEvent.objects.get(transaction_id="c5")
    assert kept.source == "csv" and kept.payload["properties"] == "{not json"

    # Running the same file again is safe: everything is a duplicate or rejected again, nothing counted twice.
    out, _err = run(write(tmp_path, JSON_CSV))
    assert "accepted:   0" in out and "duplicates: 4" in out
    assert UsageEvent.objects.count() == 3


def test_backfill_with_property_columns_and_historical_partitions(metering, tmp_path):
    out, _err = run(write(tmp_path, COLUMNS_CSV))
    assert "accepted:   3" in out and "missing_field: 1" in out
    assert UsageEvent.objects.get(transaction_id="p1").properties == {"tokens": "7", "region": "eu"}
    assert UsageEvent.objects.get(transaction_id="p4").properties == {"tokens": "3"}  # empty cells are absent
    assert RejectedEvent.objects.get().transaction_id == "p3"
    if connection.vendor == "postgresql":
        assert {"usage_usageevent_p202311", "usage_usageevent_p202312"} <= partitions.existing_partitions()


def test_dry_run_stores_nothing(metering, tmp_path):
    run(write(tmp_path, "transaction_id,customer_external_id,meter_code\nold,acme,api_calls\n", "first.csv"))
    out, _err = run(write(tmp_path, JSON_CSV.replace("c1,acme,tokens,2024-01-11", "old,acme,tokens,2024-01-11")),
                    "--dry-run")
    assert out.startswith("Dry run: 7 rows")
    assert "accepted:   3 (would be)" in out and "duplicates: 1" in out and "rejected:   3" in out
    assert list(UsageEvent.objects.values_list("transaction_id", flat=True)) == ["old"]
    assert not RejectedEvent.objects.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("transaction_id,customer_external_id\nx,acme\n", "meter_code"),
        ("transaction_id,customer_external_id,meter_code,value\n", "'value'"),
        ("transaction_id,customer_external_id,meter_code,properties,properties.a\n", "either"),
    ],
)
def test_an_unusable_header_stops_before_anything_is_stored(metering, tmp_path, text, message):
    with pytest.raises(CommandError, match=message):
        run(write(tmp_path, text))
    assert not UsageEvent.objects.exists() and not RejectedEvent.objects.exists()


def test_a_row_with_the_wrong_number_of_fields_is_rejected_and_kept(metering, tmp_path):
    text = "transaction_id,customer_external_id,meter_code\nok,acme,api_calls\nshort,acme\n"
    out, _err = run(write(tmp_path, text))
    assert "accepted:   1" in out and "line 3: malformed: the row has 2 fields; the header has 3" in out
    assert RejectedEvent.objects.get().payload == {"csv_fields": ["short", "acme"]}


def test_bad_arguments(metering, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        run(str(tmp_path / "missing.csv"))
    with pytest.raises(CommandError, match="batch-size"):
        run(write(tmp_path, JSON_CSV), "--batch-size", "0")


# --- admin upload ----------------------------------------------------------------------------------------------


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def upload(client, text: str, *, dry_run: bool = False):
    data = {"file": SimpleUploadedFile("usage.csv", text.encode(), content_type="text/csv")}
    if dry_run:
        data["dry_run"] = "on"
    return client.post("/admin/usage/usagebackfill/add/", data, follow=True)


def test_admin_upload_of_a_small_file_runs_at_once_and_shows_the_summary(metering, media):
    client = client_for(superuser=True)
    response = upload(client, JSON_CSV)
    assert response.status_code == 200
    assert b"7 rows: 3 accepted, 1 duplicates, 3 rejected" in response.content
    backfill = UsageBackfill.objects.get()
    assert (backfill.status, backfill.rows, backfill.accepted, backfill.duplicates, backfill.rejected) == (
        "done", 7, 3, 1, 3)
    assert backfill.rejected_by_reason == {"unknown_customer": 1, "invalid_value": 1, "malformed": 1}
    assert "line 4: unknown_customer" in backfill.first_rejections
    assert backfill.created_by == client.user
    page = client.get(f"/admin/usage/usagebackfill/{backfill.pk}/change/")
    assert page.status_code == 200 and b"unknown_customer: 1" in page.content
    assert UsageEvent.objects.count() == 3


def test_admin_upload_dry_run(metering, media):
    upload(client_for(superuser=True), JSON_CSV, dry_run=True)
    assert UsageBackfill.objects.get().accepted == 3
    assert not UsageEvent.objects.exists()


def test_admin_upload_of_a_large_file_goes_to_a_worker(metering, media, monkeypatch,
                                                       django_capture_on_commit_callbacks):
    from usage import tasks

    queued: list[int] = []
    monkeypatch.setattr(events_admin, "INLINE_BACKFILL_BYTES", 10)
    monkeypatch.setattr(tasks.run_usage_backfill, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client_for(superuser=True), JSON_CSV)
    assert b"a worker is ingesting it" in response.content
    backfill = UsageBackfill.objects.get()
    assert queued == [backfill.pk] and backfill.status == "pending"
    # What the worker runs:
    assert tasks.run_usage_backfill(backfill.pk)["accepted"] == 3
    backfill.refresh_from_db()
    assert backfill.status == "done" and UsageEvent.objects.count() == 3


def test_admin_upload_with_a_bad_header_fails_clearly(metering, media):
    response = upload(client_for(superuser=True), "a,b\n1,2\n")
    assert b"The header lacks" in response.content
    assert UsageBackfill.objects.get().status == "failed"


@pytest.mark.django_db(transaction=True)
def test_backfill_outside_a_transaction_stores_batches_in_file_order(tmp_path):
    # Outside a transaction the database stores batch N while the next one is read (PostgreSQL); the order of
    # the file still decides which copy of a repeated transaction_id is counted.
    from tests.factories import CustomerFactory, MeterFactory

    CustomerFactory(external_id="acme")
    MeterFactory(code="tokens", aggregation="sum", field_name="tokens")
    lines = ["transaction_id,customer_external_id,meter_code,timestamp,properties.tokens"]
    for n in range(300):
        lines.append(f"o{n},acme,tokens,2023-{1 + n % 12:02d}-10T10:00:00Z,{n}")
    for n in range(0, 300, 3):
        lines.append(f"o{n},acme,tokens,2023-06-10T10:00:00Z,100000")  # later repeats: duplicates
    lines.append("late,nobody,tokens,2023-06-10T10:00:00Z,1")
    out, _err = run(write(tmp_path, "\n".join(lines) + "\n"), "--batch-size", "40")
    assert "401 rows" in out and "accepted:   300" in out and "duplicates: 100" in out and "rejected:   1" in out
    assert UsageEvent.objects.count() == 300
    assert sum(UsageEvent.objects.values_list("value", flat=True)) == sum(range(300))
    assert RejectedEvent.objects.get().transaction_id == "late"
    if connection.vendor == "postgresql":
        assert {f"usage_usageevent_p2023{m:02d}" for m in range(1, 13)} <= partitions.existing_partitions()
