"""Crash safety: a real gunicorn is SIGKILLed while batches stream in, restarted, and every batch replayed.

Proves on the real stack (HTTP, gunicorn workers, PostgreSQL) that every acknowledged event is stored
exactly once, that a batch cut off mid-flight is stored whole or not at all, and that the replay counts
nothing twice: events == distinct acknowledged ids, and the rollups still equal the raw events.
"""

import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from django.db import connection
from django.db.models import Count, Sum

from tests.api.conftest import make_key
from tests.factories import CustomerFactory, MeterFactory
from usage.models import EventKey, UsageEvent, UsageHourlyRollup

ROOT = Path(__file__).resolve().parents[2]
BATCH_SIZE = 1500
BATCHES_PER_SENDER = 14
SENDERS = 2

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the server under test runs on PostgreSQL")


def database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "billing.settings.test",
            "DATABASE_URL": database_url(),
            "DB_CONN_MAX_AGE": "60",
            "PYTHONUNBUFFERED": "1",
        }
        command = [sys.executable, "-m", "gunicorn", "billing.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
                   "--workers", "2", "--timeout", "60", "--graceful-timeout", "5"]
        with self.log.open("ab") as sink:
            # Its own process group, so that SIGKILL takes the master and its workers at once, as a crash would.
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{self.log.read_text(errors='replace')}")
            try:
                status, _ = post(self.port, "/api/v1/events/batch", b"{}", key=None, timeout=2)
                if status == 401:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"gunicorn did not start:\n{self.log.read_text(errors='replace')}")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def post(port: int, path: str, body: bytes, *, key: str | None, timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Api-Key {key}"
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, orjson.loads(response.read() or b"{}")
    finally:
        conn.close()


def make_batches(sender: int) -> list[list[dict]]:
    rng = random.Random(sender)
    batches: list[list[dict]] = []
    for number in range(BATCHES_PER_SENDER):
        batch = []
        for index in range(BATCH_SIZE):
            if batches and rng.random() < 0.05:
                # A repeat of an id from an earlier batch of this sender: must be answered duplicate.
                earlier = rng.choice(rng.choice(batches))
                batch.append(earlier)
                continue
            meter = "tokens" if index % 2 else "api_calls"
            body = {
                "transaction_id": f"s{sender}-b{number}-e{index}",
                "customer_external_id": f"kill-{index % 7}",
                "meter_code": meter,
                "timestamp": f"2024-01-15T{index % 24:02d}:{index % 60:02d}:00Z",
            }
            if meter == "tokens":
                body["properties"] = {"tokens": f"{rng.randrange(1, 10_000)}.{rng.randrange(100):02d}"}
            batch.append(body)
        batches.append(batch)
    return batches


@pytest.fixture
def server(transactional_db, tmp_path) -> Iterator[Server]:
    running = Server(free_port(), tmp_path / "gunicorn.log")
    try:
        yield running
    finally:
        running.stop()


def other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.mark.timeout(600)
def test_sigkill_mid_stream_then_replay_stores_every_acknowledged_event_exactly_once(server):
    for number in range(7):
        CustomerFactory(external_id=f"kill-{number}")
    MeterFactory(code="api_calls", aggregation="count")
    MeterFactory(code="tokens", aggregation="sum", field_name="tokens")
    key = make_key().raw
    batches = {sender: make_batches(sender) for sender in range(SENDERS)}

    server.start()
    acknowledged: dict[tuple[int, int], list[dict]] = {}  # (sender, batch) -> per-event results
    unanswered: list[tuple[int, int]] = []
    lock = threading.Lock()
    killed = threading.Event()

    def send(sender: int) -> None:
        for number, batch in enumerate(batches[sender]):
            body = orjson.dumps({"events": batch})
            try:
                status, answer = post(server.port, "/api/v1/events/batch", body, key=key)
            except (OSError, http.client.HTTPException):
                with lock:
                    unanswered.append((sender, number))
                if killed.is_set():
                    # The server is gone: everything from here on is unanswered.
                    with lock:
                        unanswered.extend((sender, later) for later in range(number + 1, BATCHES_PER_SENDER))
                    return
                continue
            assert status == 200, answer
            with lock:
                acknowledged[(sender, number)] = answer["results"]

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(SENDERS)]
    for thread in threads:
        thread.start()
    # Kill while batches are in flight: after a few acknowledgements, at a random instant.
    deadline = time.monotonic() + 120
    while len(acknowledged) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.01, 0.15))
    killed.set()
    server.kill()
    for thread in threads:
        thread.join(timeout=120)
    assert acknowledged, "no batch was acknowledged before the kill"
    assert unanswered, "the kill came too late: every batch had been answered"

    # Let PostgreSQL finish with the killed connections (roll back, or complete a commit already sent).
    deadline = time.monotonic() + 30
    while other_backends() and time.monotonic() < deadline:
        time.sleep(0.1)

    def ids(batch: list[dict]) -> set[str]:
        return {event["transaction_id"] for event in batch}

    stored = set(UsageEvent.objects.values_list("transaction_id", flat=True))
    # 1. Every event acknowledged accepted (or duplicate) is stored.
    acked_ids = {r["transaction_id"] for results in acknowledged.values() for r in results}
    assert acked_ids <= stored
    # 2. A batch cut off by the kill is stored whole or not at all (its own ids, not repeats of earlier ones).
    for sender, number in unanswered:
        own = {e["transaction_id"] for e in batches[sender][number] if e["transaction_id"].startswith(
            f"s{sender}-b{number}-")}
        assert own & stored in (set(), own), (sender, number)

    # Restart and replay every batch, answered or not, as a client that is unsure would.
    server.start()
    replayed: dict[tuple[int, int], list[dict]] = {}
    for sender in range(SENDERS):
        for number, batch in enumerate(batches[sender]):
            status, answer = post(server.port, "/api/v1/events/batch", orjson.dumps({"events": batch}), key=key)
            assert status == 200, answer
            replayed[(sender, number)] = answer["results"]
    server.stop()

    every_id = set().union(*(ids(batch) for sender_batches in batches.values() for batch in sender_batches))
    counts = UsageEvent.objects.aggregate(n=Count("id"), distinct=Count("transaction_id", distinct=True))
    assert counts["n"] == counts["distinct"] == len(every_id) == EventKey.objects.count()
    # 3. No id was ever told "accepted" twice, across the first run and the replay.
    accepted = [r["transaction_id"] for answers in (acknowledged, replayed) for results in answers.values()
                for r in results if r["status"] == "accepted"]
    assert len(accepted) == len(set(accepted))
    # An id never answered "accepted" is one whose batch committed just before the kill, answer lost: it was
    # already stored before the replay, which rightly called it a duplicate.
    assert every_id - set(accepted) <= stored - acked_ids
    # Everything acknowledged the first time comes back as a duplicate in the replay.
    for answered in acknowledged:
        assert all(r["status"] == "duplicate" for r in replayed[answered])
    # 4. The rollups equal the raw events: nothing counted twice.
    raw = UsageEvent.objects.values("meter__code").annotate(n=Count("id"), s=Sum("value"))
    expected = {row["meter__code"]: (row["n"], row["s"] or Decimal(0)) for row in raw}
    rolled = UsageHourlyRollup.objects.values("meter__code").annotate(n=Sum("event_count"), s=Sum("value_sum"))
    assert {row["meter__code"]: (row["n"], row["s"]) for row in rolled} == expected
    sent_total = sum(Decimal(e["properties"]["tokens"]) for e in
                     {e["transaction_id"]: e for b in batches.values() for batch in b for e in batch}.values()
                     if e["meter_code"] == "tokens")
    assert expected["tokens"][1] == sent_total
