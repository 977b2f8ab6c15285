"""The management commands bin/start and bin/test run: admin login, waiting for services."""

import io
import stat
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path: Path) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_ensure_admin_creates_a_superuser_with_a_stored_random_password(var_dir: Path) -> None:
    output = run("ensure_admin", "--url", "http://127.0.0.1:8123/admin/")

    password = (var_dir / "admin-password").read_text().strip()
    assert len(password) >= 16
    assert stat.S_IMODE((var_dir / "admin-password").stat().st_mode) == 0o600
    assert "http://127.0.0.1:8123/admin/" in output
    assert f"password: {password}" in output
    user = authenticate(username="admin", password=password)
    assert user is not None and user.is_superuser and user.is_staff


def test_ensure_admin_is_idempotent_and_prints_the_same_login(var_dir: Path) -> None:
    run("ensure_admin")
    password = (var_dir / "admin-password").read_text().strip()

    output = run("ensure_admin")

    assert f"password: {password}" in output
    assert get_user_model().objects.filter(username="admin").count() == 1
    assert authenticate(username="admin", password=password) is not None


def test_ensure_admin_never_overwrites_a_password_set_by_hand(var_dir: Path) -> None:
    run("ensure_admin")
    user = get_user_model().objects.get(username="admin")
    user.set_password("chosen-by-the-operator-42")
    user.save()

    output = run("ensure_admin")

    assert "<unchanged>" in output
    assert authenticate(username="admin", password="chosen-by-the-operator-42") is not None


def test_wait_for_services_returns_when_database_and_broker_answer() -> None:
    output = run("wait_for_services", "--timeout", "10")
    assert "database answers" in output and "broker answers" in output


def test_wait_for_services_fails_with_the_unreachable_address(settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with pytest.raises(CommandError, match=r"broker does not answer: redis://127\.0\.0\.1:1/0"):
        run("wait_for_services", "--timeout", "1")
