"""A cycle close in a real browser (Debian's Chromium through Playwright) against a live server: start it from
the admin, watch the run page reach 100 %, open the invoice, explain its usage line and download the PDF.

The close runs in the web request (ACCRUAL_CYCLE_CLOSE_INLINE): no worker process is needed, and the run
page's poller still fetches the progress view once on load, which the test checks.
"""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from invoicing.models import CycleRun, Invoice
from tests.admin.test_invoicing_admin import build_billing
from tests.system.conftest import RESULTS_DIR, browser_page, chromium_executable  # noqa: F401 (fixtures)

# The live server needs committed rows, so the database is flushed afterwards (content types and permissions
# come back through post_migrate; the role groups through `client_for`, which syncs them). No serialized
# rollback: reloading it clashes with content types another flush re-created under new ids.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-cycle-close-password-4e1a"


def screenshot(page, name: str) -> Path:
    path = RESULTS_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_cycle_close_from_the_admin_to_the_pdf(live_server, browser_page, settings) -> None:  # noqa: F811
    settings.ACCRUAL_CYCLE_CLOSE_INLINE = True
    get_user_model().objects.create_superuser("closer", "closer@example.test", PASSWORD)
    billing = build_billing(external_id="cus_browser_close", events=25)
    page = browser_page
    base = live_server.url

    page.goto(f"{base}/admin/")
    page.fill("#id_username", "closer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#logout-form")

    # Start a close as of 1 February 2024 from the runs' list.
    page.goto(f"{base}/admin/invoicing/cyclerun/")
    page.click("a.run-cycle-close")
    page.fill("#id_as_of", "2024-02-01 12:00:00")
    page.click("#run-cycle-close-form input[type=submit]")

    # The run page: the poller has fetched the progress and the bar shows 100 % with one invoice.
    page.wait_for_selector("#cycle-run-progress[data-refreshed]")
    page.wait_for_function("document.getElementById('run-bar').value === 100")
    assert page.text_content("#run-percent").strip() == "100 %"
    assert page.text_content("#run-invoices").strip() == "1"
    assert page.text_content("#run-failed").strip() == "0"
    assert page.get_attribute("#cycle-run-progress", "data-running") == "false"
    screenshot(page, "admin-cycle-run-complete")
    run = CycleRun.objects.get()
    assert run.status == CycleRun.Status.COMPLETED and run.invoices_created == 1

    # Open the invoice from the list.
    invoice = Invoice.objects.get(customer=billing.customer)
    page.goto(f"{base}/admin/invoicing/invoice/?q=cus_browser_close")
    page.click(f"#result_list a[href*='/{invoice.pk}/change/']")
    page.wait_for_selector("a.download-pdf")
    assert "API calls" in page.text_content("#content")

    # Explain the usage line: the tier breakdown of 25 calls (10 x 1.00 + 5 flat, then 15 x 0.50).
    usage = invoice.lines.get(kind="usage")
    page.click(f"a.explain-link[href*='/lines/{usage.pk}/']")
    page.wait_for_selector("#tier-breakdown")
    rows = page.locator("#tier-breakdown tbody tr")
    assert rows.count() == 2
    assert "15.00" in rows.nth(0).text_content() and "7.50" in rows.nth(1).text_content()
    screenshot(page, "admin-invoice-line-explained")

    # Download the PDF.
    page.go_back()
    href = page.get_attribute("a.download-pdf", "href")
    response = page.request.get(f"{base}{href}")
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF")
