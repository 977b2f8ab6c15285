"""Fixtures that run real pieces of the stack: a Celery worker process and Debian's Chromium."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection, connections

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS_DIR = ROOT / "test-results"


def current_database_url() -> str:
    """The URL of the database pytest-django made for this test (per xdist worker), for subprocesses."""
    s = connection.settings_dict
    auth = quote(s["USER"], safe="") + (f":{quote(s['PASSWORD'], safe='')}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "billing.settings.test", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


class WorkerProcess:
    """A `celery -A billing worker` consuming one private queue, on the test database."""

    def __init__(self, queue: str, log: Path, process: subprocess.Popen[bytes]) -> None:
        self.queue = queue
        self.log = log
        self.process = process

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, condition: Any, *, timeout: float = 60, what: str = "the task's effect") -> None:
        """Poll `condition()` until true; fail early, with the worker's log, if the worker died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                pytest.fail(f"The Celery worker exited ({self.process.returncode}):\n{self.output()}")
            time.sleep(0.3)
        pytest.fail(f"Timed out after {timeout}s waiting for {what}. Worker log:\n{self.output()}")


@pytest.fixture
def celery_worker_process(transactional_db: None, tmp_path: Path) -> Iterator[WorkerProcess]:
    # A queue of its own, so that parallel test runs sharing the Redis database never take each other's tasks.
    queue = f"test-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "worker.log"
    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    command = [
        sys.executable, "-m", "celery", "-A", "billing", "worker", "--queues", queue, "--pool", "solo",
        "--hostname", f"{queue}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "INFO",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            env=subprocess_env(DATABASE_URL=current_database_url(), CELERY_BROKER_URL=broker),
        )
    worker = WorkerProcess(queue, log, process)
    try:
        yield worker
    finally:
        # Stop it before pytest-django flushes and later drops the database it is connected to.
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the browser tests.")
        pytest.skip(reason)
    return str(CHROMIUM)


@pytest.fixture
def browser_page(chromium_executable: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls made by the test itself
    # between browser steps are still synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    RESULTS_DIR.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
            # While Playwright's event loop runs, the ORM calls of the test get connections of their own
            # (asgiref keys them by context); close them here or they outlive the test database.
            connections.close_all()
