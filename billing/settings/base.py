"""Settings shared by every environment; every secret and address comes from the environment.

The embedded defaults (SQLite, a filesystem Celery broker) let one machine run the whole back office
with no server process; production overrides them with DATABASE_URL and CELERY_BROKER_URL.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("ACCRUAL_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
env_file = BASE_DIR / ".env"
if env_file.exists():
    environ.Env.read_env(str(env_file))

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "djmoney",
    "django_countries",
    "django_celery_beat",
    "import_export",
    "simple_history",
    "billing",
    "billing.api",
    "customers",
    "contracts",
    "usage",
    "invoicing",
    "revrec",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "billing.urls"
WSGI_APPLICATION = "billing.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'accrual.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets the web server, the worker and beat share the embedded database.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
# Project-wide static files, when there are any (an empty folder is not kept by git).
STATICFILES_DIRS = [path for path in [BASE_DIR / "static"] if path.is_dir()]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# Generated documents (invoice and credit-note PDFs). Any Django storage backend can be named here.
STORAGES = {
    "default": {
        "BACKEND": env.str("DOCUMENT_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage"),
        "OPTIONS": env.json("DOCUMENT_STORAGE_OPTIONS", default={}),
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# E-mail (dunning reminders and notices, logged as EmailMessage rows): EMAIL_URL picks the backend, e.g.
# smtp+tls://user:password@smtp.example.com:587 in production, filemail:////var/lib/accrual/mail to keep each
# message as a file; without it, messages are printed on the console.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
# A dunning step sends while it holds its invoice's lock: a server that does not answer must not hold it long.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@accrual.localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Celery: the default broker is a folder on disk, so a real worker and beat run with no server.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # exchange tables (default: ./control)
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None) or None
if CELERY_RESULT_BACKEND is None:
    CELERY_RESULT_EXPIRES = None  # no results are stored, so beat needs no nightly "backend_cleanup" task
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# Cycle close: customers per fan-out message (each still closed and recorded on its own).
ACCRUAL_CYCLE_CLOSE_BATCH = env.int("ACCRUAL_CYCLE_CLOSE_BATCH", default=20)
# A queue of their own lets dedicated workers close cycles; empty: Celery's default queue.
ACCRUAL_CYCLE_CLOSE_QUEUE = env.str("ACCRUAL_CYCLE_CLOSE_QUEUE", default="")

# Payment gateways (docs/payments-gateways.md). Secrets come from the environment only; no key: no Stripe.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="") or None  # None: Stripe's own API
STRIPE_TIMEOUT = env.float("STRIPE_TIMEOUT", default=30.0)
STRIPE_WEBHOOK_TOLERANCE = env.int("STRIPE_WEBHOOK_TOLERANCE", default=300)
# Charge a customer's default saved payment method when an invoice is finalized.
ACCRUAL_AUTO_CHARGE = env.bool("ACCRUAL_AUTO_CHARGE", default=True)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["billing.api.authentication.APIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["billing.api.permissions.HasAPIKeyScope"],
    "DEFAULT_PAGINATION_CLASS": "billing.api.pagination.CursorOrPagePagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "billing.api.schema.AccrualAutoSchema",
    "EXCEPTION_HANDLER": "billing.api.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["billing.api.throttling.APIKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_THROTTLE_RATE", default="6000/min")},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["billing.api.parsers.StrictJSONParser"],
    "COERCE_DECIMAL_TO_STRING": True,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Accrual API",
    "DESCRIPTION": (
        "Billing and revenue recognition back office.\n\n"
        "**Authentication**: `Authorization: Api-Key <key>` on every request; keys are created in the admin. "
        "A read-only key gets 403 on writes.\n\n"
        "**Resources** are addressed by their natural keys: customers and subscriptions by `external_id`, "
        "plans, products, features, meters, coupons and billing entities by `code`, contracts by `reference`, "
        "plan versions by number. Paths have no trailing slash.\n\n"
        '**Money** is always `{"amount": "100.00", "currency": "USD"}`: the amount a decimal string (send a '
        "string or a number; it is never read as a binary float), up to 12 decimals for unit prices. "
        "Quantities and percentages are decimal strings.\n\n"
        "**Errors** share one shape for every 4xx: "
        '`{"error": {"code": "validation_error", "message": "...", "fields": {"properties.tiers[1].up_to": '
        '["..."]}}}`; `fields` names each invalid input by its path. Unknown fields are refused. An action that '
        "the object's state does not allow is a 409 `invalid_transition`.\n\n"
        "**Retries**: send `Idempotency-Key: <unique value>` on writes; a repeat with the same key and body "
        "gets the first response again (header `Idempotent-Replayed: true`) for 24 hours, the same key with "
        "another body a 409.\n\n"
        "**Lists** are paginated with `page` and `page_size` (at most 500), filtered by the documented query "
        "parameters, searched with `search` and sorted with `ordering` (`-` for descending)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # 3.1: a nullable reference (e.g. an optional Money) is expressible exactly, which 3.0's `nullable` is not.
    "OAS_VERSION": "3.1.0",
    "COMPONENT_NO_READ_ONLY_REQUIRED": False,
    "ENUM_NAME_OVERRIDES": {
        "CustomerKindEnum": "customers.models.Customer.Kind",
        "CustomerStatusEnum": "customers.models.Customer.Status",
        "FeatureKindEnum": "contracts.models.Feature.Kind",
        "CommitmentKindEnum": "contracts.models.ContractCommitment.Kind",
        "BillingTimingEnum": "contracts.models.BillingTiming",
        "PlanVersionStatusEnum": "contracts.models.PlanVersion.Status",
        "ContractStatusEnum": "contracts.models.Contract.Status",
        "NewContractStatusEnum": "contracts.api.NEW_CONTRACT_STATUSES",
        "SubscriptionStatusEnum": "contracts.models.Subscription.Status",
        "SubscriptionChangeStatusEnum": "contracts.models.SubscriptionChange.Status",
        "EventResultStatusEnum": ["accepted", "duplicate", "rejected"],
    },
}

# API request bodies above this size are refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=10 * 1024 * 1024)

CURRENCIES = None  # every ISO 4217 currency
DJANGO_MONEY_RATES = {}

IMPORT_EXPORT_SKIP_ADMIN_LOG = False
IMPORT_EXPORT_USE_TRANSACTIONS = True
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "add"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"

LOGIN_URL = "admin:login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
