"""The embedded default: the read-path suites (over events written by ingestion) run again, in a subprocess,
on a fresh SQLite database, where the selectors read the events and run the pure aggregation."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
SUITES = ["tests/usage/test_selectors_ingested.py", "tests/usage/test_usage_endpoint.py"]


@pytest.mark.timeout(600)
@pytest.mark.skipif(connection.vendor == "sqlite", reason="this run is already on SQLite")
def test_read_path_suites_pass_on_sqlite(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'accrual.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "billing.settings.test",
        "ACCRUAL_VAR_DIR": str(tmp_path / "var"),
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *SUITES, "-q", "-p", "no:cacheprovider", "-x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
