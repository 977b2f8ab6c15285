"""What the revrec admin pages share: permission names, the page renderer, downloads, amounts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from invoicing.pdf import format_money

VIEW_LEDGER = "revrec.view_journalentry"
CLOSE_PERIOD = "revrec.close_accountingperiod"
RUN_RECOGNITION = "revrec.run_recognition"
DELIVER = "revrec.change_performanceobligation"
# Downloads (report CSVs, the journal export) leave the system with customer data in them: like the
# receivables downloads, they are for the roles that keep the books (finance admins and revenue
# accountants, who hold the close permission), not for read-only roles.
DOWNLOAD = CLOSE_PERIOD


def can_download(request: HttpRequest) -> bool:
    return request.user.has_perm(VIEW_LEDGER) and request.user.has_perm(DOWNLOAD)


def amount(value: Decimal | None, currency: str) -> str:
    if value is None:
        return ""
    try:
        return format_money(value, currency, with_code=False)
    except (ValueError, KeyError, LookupError):
        return f"{value:f}"  # a currency moneyed does not know: the figure as stored


def page(model_admin: admin.ModelAdmin, request: HttpRequest, template: str, title: str,
         **context: Any) -> TemplateResponse:
    return TemplateResponse(request, f"admin/revrec/{template}", {
        **model_admin.admin_site.each_context(request), "opts": model_admin.opts, "title": title, **context,
    })


def download(content: str | bytes, filename: str, content_type: str = "text/csv; charset=utf-8") -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def check_rows(checks: Any) -> list[dict[str, Any]]:
    """A checklist (CheckResult objects from the close service, or the dicts stored at the close) as dicts
    the template reads: name, passed, blocking, detail, items."""
    rows = []
    for check in checks or []:
        get = check.get if isinstance(check, dict) else (lambda name, default=None, c=check: getattr(c, name, default))
        rows.append({
            "name": get("name", "") or get("key", ""), "passed": bool(get("passed", False)),
            "blocking": bool(get("blocking", True)), "detail": get("detail", "") or "",
            "items": [str(item) for item in (get("items", None) or [])],
        })
    return rows
