"""A finance admin new to Accrual works receivables in the admin, in Chromium: imports a bank statement (two
credits matched by invoice number, one left in the queue), matches the leftover line by hand, issues a credit
note from an invoice's page, runs dunning "as of" a later day and reads what it did, then opens the aging
report. Screenshots go to test-results/."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.actors import Actor
from billing.roles import FINANCE_ADMIN
from invoicing.models import (
    BankStatementFormat,
    BankStatementLine,
    CreditNote,
    DunningAction,
    EmailMessage,
    Invoice,
)
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.dunning import create_standard_policy
from tests.admin.support import client_for
from tests.factories import BillingEntityFactory, CustomerFactory
from tests.system.conftest import RESULTS_DIR

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PASSWORD = "browser-receivables-5f1a"


def invoice_for(customer, amount: str, now) -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Implementation services", Decimal(amount))],
                                  actor=Actor.system("test"), now=now, finalize=True)


@pytest.mark.django_db(transaction=True)
def test_finance_admin_reconciles_credits_and_dunns_in_the_browser(live_server, browser_page, tmp_path):
    now = timezone.now()
    entity = BillingEntityFactory(timezone="UTC", invoice_prefix="NB", credit_note_prefix="NBC",
                                  default_payment_terms_days=14)
    acme = CustomerFactory(billing_entity=entity, external_id="acme", name="Acme Rockets", timezone="UTC",
                           billing_emails=["ap@acme.example"])
    zeta = CustomerFactory(billing_entity=entity, external_id="zeta", name="Zeta Works", timezone="UTC",
                           billing_emails=["ap@zeta.example"])
    first, second = invoice_for(acme, "100.00", now), invoice_for(acme, "250.00", now)
    overdue = invoice_for(zeta, "400.00", now - timedelta(days=20))
    BankStatementFormat.objects.create(
        name="Harbor Bank", billing_entity=entity, date_column="Date", amount_column="Amount",
        reference_column="Reference", counterparty_column="From", default_currency="USD",
    )
    create_standard_policy(entity)
    statement = tmp_path / "harbor.csv"
    statement.write_text(
        "Date,Amount,Reference,From\n"
        f"{now.date()},100.00,Invoice {first.number},Acme Rockets\n"
        f"{now.date()},250.00,{second.number},Acme Rockets\n"
        f"{now.date()},75.00,THANK YOU,Z. Works Treasury\n"
    )
    user = client_for(FINANCE_ADMIN, username="new-finance").user
    user.set_password(PASSWORD)
    user.save()

    page, base = browser_page, live_server.url
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "new-finance")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#logout-form")

    # 1. Import the statement: the two credits naming an invoice pay it.
    page.goto(f"{base}/admin/invoicing/bankstatement/import/")
    page.select_option("#id_format", label="Harbor Bank")
    page.set_input_files("#id_file", str(statement))
    page.screenshot(path=str(RESULTS_DIR / "receivables-1-import.png"), full_page=True)
    page.click("#import-statement-form input[type=submit]")
    page.wait_for_selector("ul.messagelist li")
    page.screenshot(path=str(RESULTS_DIR / "receivables-2-imported.png"), full_page=True)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Invoice.Status.PAID, Invoice.Status.PAID)

    # 2. The queue holds the unknown transfer; match it to Zeta's invoice by hand (a partial payment).
    line = BankStatementLine.objects.get(status="unmatched")
    page.goto(f"{base}/admin/invoicing/bankstatementline/")
    assert "Z. Works Treasury" in page.inner_text("#result_list")
    page.goto(f"{base}/admin/invoicing/bankstatementline/{line.pk}/match/?q=zeta")
    page.click("#found a")
    page.wait_for_selector("#match-form")
    page.fill(f"input[name=amount-{overdue.pk}]", "75.00")
    page.screenshot(path=str(RESULTS_DIR / "receivables-3-match.png"), full_page=True)
    page.click("#match-form input[type=submit]")
    page.wait_for_selector("ul.messagelist li")
    overdue.refresh_from_db()
    assert (overdue.status, overdue.amount_due) == (Invoice.Status.FINALIZED, Decimal("325.00"))

    # 3. Issue a credit note from the paid invoice's page: 40.00 goes to the customer's balance.
    page.goto(f"{base}/admin/invoicing/invoice/{second.pk}/change/")
    page.click("a.issue-credit-note")
    page.wait_for_selector("#issue-credit-note-form")
    page.check("input[name=mode][value=amount]")
    page.fill("#id_amount", "40.00")
    page.select_option("#id_reason", value=CreditNote.Reason.SERVICE_OUTAGE)
    page.screenshot(path=str(RESULTS_DIR / "receivables-4-credit-note.png"), full_page=True)
    page.click("#issue-credit-note-form input[type=submit]")
    page.wait_for_selector("ul.messagelist li")
    note = CreditNote.objects.get()
    assert (note.invoice_id, note.total, note.credited_to_balance) == (second.pk, Decimal("40.00"),
                                                                       Decimal("40.00"))
    assert note.number == "NBC-000001"

    # 4. Run dunning as of today: Zeta's invoice, 6 days overdue, gets its D+1 reminder (once).
    page.goto(f"{base}/admin/invoicing/dunningaction/run/")
    page.click("#run-dunning-form input[type=submit]")
    page.wait_for_selector("ul.messagelist li")
    page.goto(f"{base}/admin/invoicing/dunningaction/")
    page.screenshot(path=str(RESULTS_DIR / "receivables-5-dunning.png"), full_page=True)
    assert overdue.number in page.inner_text("#result_list")
    # D-3 was due too, but only the latest e-mail step of a catch-up is sent.
    action = DunningAction.objects.get(invoice=overdue, status="done")
    assert (action.action, action.offset_days) == ("reminder", 1)
    assert EmailMessage.objects.get().to == ["ap@zeta.example"]

    # 5. The aging report shows Zeta's 325.00 in the 1-30 days bucket.
    page.goto(f"{base}/admin/invoicing/receivable/aging/")
    page.screenshot(path=str(RESULTS_DIR / "receivables-6-aging.png"), full_page=True)
    text = page.inner_text("#content")
    assert "Zeta Works" in text and "325.00" in text
