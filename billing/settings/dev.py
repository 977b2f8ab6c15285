"""Local development on the embedded defaults: SQLite and a filesystem broker, no servers needed."""

import os

os.environ.setdefault("SECRET_KEY", "dev-only-insecure-key-never-use-in-production")
os.environ.setdefault("DEBUG", "true")

from billing.settings.base import *  # noqa: F403

if not os.environ.get("EMAIL_URL"):
    # E-mails (dunning) are kept as files under var/mail/ rather than printed over the servers' output.
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")  # noqa: F405
