"""E-mails Accrual sends: rendered from text templates, sent through Django's e-mail framework (the backend
comes from EMAIL_URL: console by default, SMTP in production), and logged, sent or failed, as EmailMessage rows.

Templates live in templates/emails/ and are rendered by a sandboxed engine: plain-text output (no escaping),
no template loading from overrides (`include`, `extends`, `load` do not exist), no loops, a short list of
harmless filters, and bounded source and output sizes. Step overrides written in the admin go through the same
engine, so a hostile or broken override fails with a template error instead of reading files or eating memory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage as MailMessage
from django.core.mail import get_connection
from django.template import Context, Engine, Library, defaultfilters, defaulttags

from customers.models import Customer
from invoicing.models import DunningAction, EmailMessage, Invoice

logger = logging.getLogger(__name__)

MAX_TEMPLATE_CHARS = 20_000
MAX_RENDERED_CHARS = 100_000
MAX_SUBJECT_CHARS = 300

SAFE_TAGS = ("comment", "filter", "firstof", "if", "now", "spaceless", "templatetag", "verbatim", "with")
SAFE_FILTERS = (
    "add", "capfirst", "cut", "date", "default", "default_if_none", "length", "lower", "pluralize", "time",
    "title", "truncatechars", "truncatewords", "upper", "wordcount", "yesno",
)


class TemplateRenderError(Exception):
    """A template (a default one or a step's override) could not be compiled or rendered."""


def _safe_library() -> Library:
    library = Library()
    for name in SAFE_TAGS:
        library.tags[name] = defaulttags.register.tags[name]
    for name in SAFE_FILTERS:
        library.filters[name] = defaultfilters.register.filters[name]
    return library


class _SandboxEngine(Engine):
    # Only the library above: no `load`, `include`, `extends`, `debug`, `url`, `for` or padding filters.
    default_builtins: list[str] = []

    def get_template_builtins(self, builtins: list[str]) -> list[Library]:
        return [_safe_library()]


_engine: _SandboxEngine | None = None


def template_engine() -> _SandboxEngine:
    global _engine
    if _engine is None:
        _engine = _SandboxEngine(
            dirs=[settings.BASE_DIR / "templates" / "emails"], app_dirs=False, autoescape=False, debug=False,
            string_if_invalid="", libraries={},
        )
    return _engine


def _check_output(text: str) -> str:
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateRenderError(f"The rendered text is longer than {MAX_RENDERED_CHARS} characters.")
    return text


def check_template_source(source: str) -> None:
    """Compile a template text as the sandbox would; raises TemplateRenderError saying what is wrong."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateRenderError(f"The template is longer than {MAX_TEMPLATE_CHARS} characters.")
    try:
        template_engine().from_string(source)
    except Exception as exc:  # any compile error of user-written text is reported, never raised further
        raise TemplateRenderError(f"Template error: {exc}") from exc


def render_string(source: str, context: Mapping[str, Any]) -> str:
    """Render template text written by a person (a dunning step's subject or body) with plain values."""
    check_template_source(source)
    try:
        text = template_engine().from_string(source).render(Context(dict(context), autoescape=False))
    except Exception as exc:  # a filter fed an odd value, a recursion: the caller records the error
        raise TemplateRenderError(f"Template error: {exc}") from exc
    return _check_output(text)


def render_file(name: str, context: Mapping[str, Any]) -> str:
    """Render one of the shipped templates (templates/emails/<name>)."""
    try:
        text = template_engine().get_template(name).render(Context(dict(context), autoescape=False))
    except Exception as exc:
        raise TemplateRenderError(f"Template {name}: {exc}") from exc
    return _check_output(text)


def one_line(subject: str) -> str:
    """A subject is one line: template newlines collapse into spaces (a raw newline would be refused)."""
    return " ".join(subject.split())[:MAX_SUBJECT_CHARS]


def recipients_for(customer: Customer) -> list[str]:
    """The customer's billing e-mails, then its contacts that receive invoices, each address once."""
    addresses = [str(a).strip() for a in (customer.billing_emails or []) if str(a).strip()]
    addresses += list(
        customer.contacts.filter(receives_invoices=True).order_by("name", "id").values_list("email", flat=True)
    )
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def send_email(
    kind: str,
    *,
    to: list[str],
    subject: str,
    body: str,
    customer: Customer | None = None,
    invoice: Invoice | None = None,
    dunning_action: DunningAction | None = None,
    reply_to: list[str] | None = None,
    now: datetime,
) -> EmailMessage:
    """Send one e-mail now and log it. A failure (server down, refused address, bad header) does not raise: the
    log row says `failed` with the error, and the caller decides what that means."""
    log = EmailMessage(
        kind=kind[:40], to=list(to), subject=subject[:MAX_SUBJECT_CHARS], body=body, customer=customer,
        invoice=invoice, dunning_action=dunning_action, sent_at=now,
    )
    try:
        if not to:
            raise ValueError("No recipient.")
        message = MailMessage(
            subject=subject, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=list(to),
            reply_to=reply_to or None, connection=get_connection(fail_silently=False),
        )
        message.send()
    except Exception as exc:  # SMTP errors, OSError, BadHeaderError: all are logged, none stop the caller
        log.status = EmailMessage.Status.FAILED
        log.error = f"{type(exc).__name__}: {exc}"[:2000]
        logger.warning("E-mail %s to %s failed: %s", kind, ", ".join(to), log.error)
    else:
        log.status = EmailMessage.Status.SENT
        logger.info("E-mail %s sent to %s: %s", kind, ", ".join(to), subject)
    log.save()
    return log
