"""A revenue accountant new to Accrual closes last month in the admin, in Chromium: runs recognition,
reads the revenue waterfall and the deferred revenue roll-forward (table and chart), closes the month after
its pre-close checklist passes, and exports its journal. Screenshots go to test-results/."""

import csv
import io
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.actors import Actor
from billing.roles import REVENUE_ACCOUNTANT
from invoicing.services.documents import ManualLine, create_one_off_invoice
from revrec.models import AccountingPeriod, JournalEntry
from revrec.services.posting import post_pending
from tests.admin.support import client_for
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory
from tests.system.conftest import RESULTS_DIR

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PASSWORD = "browser-revrec-7c2e"


@pytest.mark.django_db(transaction=True)
def test_revenue_accountant_recognises_reads_closes_and_exports(live_server, browser_page):
    now = timezone.now()
    month = (now.date().replace(day=1) - timedelta(days=1)).replace(day=1)  # last month
    next_month = now.date().replace(day=1)
    entity = BillingEntityFactory(code="acme-us", timezone="UTC", default_currency="USD", invoice_prefix="AR")
    customer = CustomerFactory(billing_entity=entity, external_id="zenith", name="Zenith Air", timezone="UTC",
                               currency="USD")
    platform, setup = ProductFactory(code="platform"), ProductFactory(code="setup")
    issued = datetime.combine(month, time(12), tzinfo=UTC)
    invoice = create_one_off_invoice(customer, [
        ManualLine("Platform (next 3 months)", Decimal("3000.00"), product=platform, period_start=month,
                   period_end=month + timedelta(days=92)),
        ManualLine("Set-up", Decimal("500.00"), product=setup),
    ], actor=Actor.system("test"), now=issued, finalize=True)
    post_pending(now=issued, actor=Actor.system("test"))

    user = client_for(REVENUE_ACCOUNTANT, username="new-accountant").user
    user.set_password(PASSWORD)
    user.save()
    page, base = browser_page, live_server.url
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "new-accountant")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#logout-form")

    # 1. Run recognition through yesterday (the form's default).
    page.goto(f"{base}/admin/revrec/recognitionrun/run/")
    page.click("#run-recognition-form input[type=submit]")
    page.wait_for_selector(".recognition-outcome")
    page.screenshot(path=str(RESULTS_DIR / "revrec-1-recognition.png"), full_page=True)
    assert "USD" in page.inner_text(".recognition-outcome")
    days = (next_month - month).days
    month_revenue = Decimal("3000.00") * days / 92  # the platform's share of last month, plus the set-up
    assert JournalEntry.objects.filter(kind="recognition").exists()

    # 2. The waterfall: last month's billings, recognised month by month; a chart is drawn.
    page.goto(f"{base}/admin/revrec/journalentry/reports/waterfall/")
    page.wait_for_selector("#report-table")
    page.screenshot(path=str(RESULTS_DIR / "revrec-2-waterfall.png"), full_page=True)
    table = page.inner_text("#report-table")
    assert "3,500.00" in table or "3500.00" in table
    assert page.locator("svg").count() >= 1

    # 3. The roll-forward reconciles with the revenue contracts (no difference listed); last month closes
    #    with 3,000.00 less its days' share: round(3000 x days / 92).
    page.goto(f"{base}/admin/revrec/journalentry/reports/deferred_rollforward/")
    page.wait_for_selector("#report-table")
    page.screenshot(path=str(RESULTS_DIR / "revrec-3-rollforward.png"), full_page=True)
    assert page.locator(".report-problems li").count() == 0
    closing = Decimal("3000.00") - round(month_revenue, 2)
    last_month_row = page.locator("#report-table tr", has_text=f"{month:%Y-%m}").inner_text()
    assert f"{closing:,.2f}" in last_month_row

    # 4. Close last month: every check passes, the period closes.
    period = AccountingPeriod.objects.get(billing_entity=entity, start_date=month)
    page.goto(f"{base}/admin/revrec/accountingperiod/{period.pk}/close/")
    page.wait_for_selector("#close-period-form")
    page.screenshot(path=str(RESULTS_DIR / "revrec-4-checklist.png"), full_page=True)
    assert page.locator("tr.check.failed .check-fail").count() == 0
    page.click("#close-period-form input[type=submit]")
    page.wait_for_selector("ul.messagelist li")
    period.refresh_from_db()
    assert period.status == AccountingPeriod.Status.CLOSED and period.closed_by == "user:new-accountant"

    # 5. Export its journal: balanced entries, the invoice's first.
    page.goto(f"{base}/admin/revrec/accountingperiod/{period.pk}/close/")
    with page.expect_download() as download:
        page.click("a.download-journal")
    content = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115
    rows = list(csv.DictReader(io.StringIO(content)))
    assert rows and any(row["source_key"] == f"invoice:{invoice.pk}" for row in rows)
    debits = sum(Decimal(row["debit"] or "0") for row in rows)
    credits = sum(Decimal(row["credit"] or "0") for row in rows)
    assert debits == credits > 0
