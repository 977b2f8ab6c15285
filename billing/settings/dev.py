"""Local development on the embedded defaults: SQLite and a filesystem broker, no servers needed."""

import os

os.environ.setdefault("SECRET_KEY", "dev-only-insecure-key-never-use-in-production")
os.environ.setdefault("DEBUG", "true")

from billing.settings.base import *  # noqa: F403
