"""`manage.py check --deploy` under the production settings, with the environment a deployment sets."""

import secrets
import subprocess
import sys

from tests.system.conftest import ROOT

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "billing.settings.production",
    "DATABASE_URL": "postgres://accrual:secret@db.internal:5432/accrual",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    "ALLOWED_HOSTS": "billing.example.com",
    "PATH": "/usr/bin:/bin",
}


def run_deploy_check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env={**PRODUCTION_ENV, **env}, capture_output=True, text=True, timeout=120, check=False,
    )


def test_production_settings_pass_the_deploy_check_without_a_warning() -> None:
    result = run_deploy_check(SECRET_KEY=secrets.token_urlsafe(64))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in result.stdout, output
    assert "WARNING" not in output


def test_the_deploy_check_catches_a_weak_secret_key() -> None:
    # The same check fails when production is misconfigured: it is not passing vacuously.
    result = run_deploy_check(SECRET_KEY="short")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_a_secret_key() -> None:
    result = run_deploy_check()
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
