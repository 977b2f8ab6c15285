"""Make sure an admin login exists for a local installation, and say how to log in."""

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Create the superuser 'admin' with a random password the first time (stored in "
        "var/admin-password) and print the admin URL with the login. An existing user is left alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/", help="The admin URL to print.")

    def handle(self, *args: Any, username: str, url: str, **options: Any) -> None:
        password_file = Path(settings.VAR_DIR) / "admin-password"
        stored = password_file.read_text().strip() if password_file.exists() else ""
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()

        if user is None:
            password = stored or secrets.token_urlsafe(12)
            user_model._default_manager.create_superuser(
                username=username, email=f"{username}@accrual.localhost", password=password
            )
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)  # readable by its owner only, before the secret goes in
            password_file.write_text(password + "\n")
            note = f"(created; stored in {password_file})"
        elif stored and user.check_password(stored):
            password, note = stored, f"(stored in {password_file})"
        else:
            # Someone set this password themselves: never overwrite it.
            password, note = "<unchanged>", "(set by hand; `manage.py changepassword admin` resets it)"

        self.stdout.write(self.style.SUCCESS(f"Admin: {url}"))
        self.stdout.write(f"  user: {username}\n  password: {password} {note}")
