"""Invoicing admin: read-only invoices changed only by permission-checked actions, line explanations, PDFs,
cycle runs started from the admin and watched through their progress view, and the close_cycle command."""

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from djmoney.money import Money

from billing.actors import Actor
from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN
from contracts.services.subscriptions import create_subscription
from invoicing.models import CreditGrant, CycleRun, Invoice
from invoicing.services.cycle import close_customer
from tests.admin.support import client_for, messages_of
from tests.factories import BillingEntityFactory, ChargeFactory, CustomerFactory, MeterFactory, PlanVersionFactory

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
INVOICES = reverse("admin:invoicing_invoice_changelist")
RUNS = reverse("admin:invoicing_cyclerun_changelist")
RUN_CLOSE = reverse("admin:invoicing_cyclerun_run")
TIERS = [{"up_to": "10", "unit_price": "1.00", "flat_fee": "5"}, {"up_to": None, "unit_price": "0.50", "flat_fee": "0"}]


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@dataclass
class Billing:
    customer: Any
    meter: Any
    subscription: Any


def build_billing(*, external_id: str = "cus_admin_inv", events: int = 25, grace_days: int = 5) -> Billing:
    """One customer on a plan with a 100.00 monthly base fee and a graduated usage charge (10 units at 1.00
    plus a 5.00 flat fee, then 0.50), subscribed since 1 January 2024 with `events` API calls on 10 January."""
    from usage.ingestion import ingest_events

    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=grace_days)
    customer = CustomerFactory(billing_entity=entity, timezone="UTC", external_id=external_id,
                               name="Invoiced Industries")
    version = PlanVersionFactory(base_fee=Money("100.00", "USD"))
    meter = MeterFactory(code=f"calls-{external_id}", name="API calls")
    ChargeFactory(plan_version=version, meter=meter, charge_model="graduated", properties={"tiers": TIERS},
                  display_name="API calls")
    subscription = create_subscription(customer=customer, plan_version=version, actor=ACTOR,
                                       now=at(date(2024, 1, 1)), start_date=date(2024, 1, 1))
    results = ingest_events(
        [{"transaction_id": f"{external_id}-{i}", "customer_external_id": external_id, "meter_code": meter.code,
          "timestamp": at(date(2024, 1, 10)).isoformat()} for i in range(events)],
        now=at(date(2024, 1, 10)),
    )
    assert all(r.status == "accepted" for r in results), results
    return Billing(customer, meter, subscription)


def act(client, action: str, invoices, **extra):
    return client.post(INVOICES, {"action": action, "_selected_action": [i.pk for i in invoices], **extra},
                       follow=True)


def fresh(invoice: Invoice) -> Invoice:
    return Invoice.objects.get(pk=invoice.pk)


@pytest.fixture
def billing() -> Billing:
    return build_billing()


@pytest.fixture
def draft(billing) -> Invoice:
    [invoice] = close_customer(billing.customer, now=at(date(2024, 2, 1)), actor=ACTOR)
    assert invoice.status == Invoice.Status.DRAFT
    return invoice


# --- invoices -------------------------------------------------------------------------------------------------


def test_auditor_sees_the_list_the_drafts_shortcut_and_a_read_only_invoice(draft):
    auditor = client_for(AUDITOR)
    response = auditor.get(INVOICES)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Invoiced Industries" in content and "Drafts to review (1)" in content
    assert auditor.get(INVOICES, {"review": "drafts"}).context["cl"].result_count == 1
    assert auditor.get(INVOICES, {"review": "drafts", "status__exact": "finalized"}).context["cl"].result_count == 0
    assert auditor.get(INVOICES, {"q": "cus_admin_inv"}).context["cl"].result_count == 1

    page = auditor.get(reverse("admin:invoicing_invoice_change", args=[draft.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "Download PDF" in body and "Explain" in body and "API calls" in body
    assert 'name="_save"' not in body  # nothing to save: services write every field
    # Auditors run no actions.
    assert auditor.get(INVOICES).context["action_form"] is None
    act(auditor, "finalize_drafts", [draft])
    assert fresh(draft).status == Invoice.Status.DRAFT


def test_change_page_refuses_posts_and_nothing_is_added_or_deleted(draft):
    admin_client = client_for(FINANCE_ADMIN)
    url = reverse("admin:invoicing_invoice_change", args=[draft.pk])
    assert admin_client.post(url, {"memo": "edited"}).status_code == 403
    assert admin_client.get(reverse("admin:invoicing_invoice_add")).status_code == 403
    assert admin_client.get(reverse("admin:invoicing_invoice_delete", args=[draft.pk])).status_code == 403
    assert fresh(draft).memo == ""


def test_operator_finalizes_drafts_and_each_gets_a_number(billing, draft):
    operator = client_for(BILLING_OPERATOR)
    other = build_billing(external_id="cus_admin_other", events=3)
    [second] = close_customer(other.customer, now=at(date(2024, 2, 1)), actor=ACTOR)
    response = act(operator, "finalize_drafts", [draft, second])
    finalized = [fresh(draft), fresh(second)]
    assert [i.status for i in finalized] == [Invoice.Status.FINALIZED] * 2
    notes = messages_of(response)
    for before, after in zip((draft, second), finalized, strict=True):
        assert f"Draft #{before.pk} finalized as {after.number} (total {after.total} USD)." in notes
    assert finalized[0].events.get(action="finalized").actor_label == "user:billing_operator"

    # Finalizing again is refused per invoice, with the reason.
    response = act(operator, "finalize_drafts", [finalized[0]])
    [message] = messages_of(response)
    assert message.startswith(f"{finalized[0].number}: ") and "finalize" in message.lower()


def test_operator_cannot_void_but_finance_admin_can_with_a_reason(draft):
    operator = client_for(BILLING_OPERATOR)
    choices = [value for value, _ in operator.get(INVOICES).context["action_form"].fields["action"].choices]
    assert "finalize_drafts" in choices and "refresh_drafts" in choices and "void_invoices" not in choices
    act(operator, "void_invoices", [draft], **{"apply": "1", "params-reason": "duplicate"})
    assert fresh(draft).status == Invoice.Status.DRAFT

    finance = client_for(FINANCE_ADMIN)
    confirm = finance.post(INVOICES, {"action": "void_invoices", "_selected_action": [draft.pk]})
    assert confirm.status_code == 200 and "Void invoices" in confirm.content.decode()
    assert fresh(draft).status == Invoice.Status.DRAFT  # nothing happens before the confirmation

    # A reason is required.
    blank = act(finance, "void_invoices", [draft], **{"apply": "1", "params-reason": ""})
    assert "This field is required." in blank.content.decode()
    assert fresh(draft).status == Invoice.Status.DRAFT

    response = act(finance, "void_invoices", [draft], **{"apply": "1", "params-reason": "Billed to the wrong entity"})
    voided = fresh(draft)
    assert voided.status == Invoice.Status.VOID and voided.void_reason == "Billed to the wrong entity"
    assert f"Draft #{draft.pk} voided." in messages_of(response)
    # Voiding a void invoice is refused with the service's reason.
    again = act(finance, "void_invoices", [voided], **{"apply": "1", "params-reason": "again"})
    assert any("Cannot void" in m for m in messages_of(again))


def test_refresh_picks_up_late_events(billing, draft):
    from usage.ingestion import ingest_events

    ingest_events([{"transaction_id": "late-1", "customer_external_id": billing.customer.external_id,
                    "meter_code": billing.meter.code, "timestamp": at(date(2024, 1, 20)).isoformat()}],
                  now=at(date(2024, 2, 1), 13))
    response = act(client_for(BILLING_OPERATOR), "refresh_drafts", [draft])
    refreshed = fresh(draft)
    # Refreshed as of the real now, so later periods join too; January's usage counts the late unit.
    january = refreshed.lines.get(kind="usage", period_start=date(2024, 1, 1))
    assert (january.quantity, january.amount) == (Decimal("26"), Decimal("23.00"))
    assert refreshed.events.filter(action="refreshed", actor_label="user:billing_operator").exists()
    assert any(m.startswith(f"Draft #{draft.pk} refreshed:") for m in messages_of(response))


def test_explain_shows_formula_inputs_and_tier_breakdown(draft):
    usage = draft.lines.get(kind="usage")
    response = client_for(AUDITOR).get(reverse("admin:invoicing_invoice_explain_line", args=[draft.pk, usage.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="tier-breakdown"' in body
    assert "15.00" in body and "7.50" in body  # 10 x 1.00 + 5 flat; 15 x 0.50
    assert "graduated" in body and "Events counted" in body and "2024-01-01" in body
    fee = draft.lines.filter(kind="subscription_fee").first()
    fee_page = client_for(AUDITOR).get(reverse("admin:invoicing_invoice_explain_line", args=[draft.pk, fee.pk]))
    assert "Formula" in fee_page.content.decode() and 'id="fee-breakdown"' in fee_page.content.decode()
    # A line of another invoice is not found under this one.
    other = build_billing(external_id="cus_admin_third", events=1)
    [third] = close_customer(other.customer, now=at(date(2024, 2, 1)), actor=ACTOR)
    line = third.lines.first()
    assert client_for(AUDITOR).get(
        reverse("admin:invoicing_invoice_explain_line", args=[draft.pk, line.pk])).status_code == 404


def test_pdf_download_renders_a_draft_and_serves_a_stored_finalized_pdf(draft):
    from invoicing.pdf import store_invoice_pdf

    auditor = client_for(AUDITOR)
    url = reverse("admin:invoicing_invoice_pdf", args=[draft.pk])
    response = auditor.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")

    client_for(BILLING_OPERATOR).post(INVOICES, {"action": "finalize_drafts", "_selected_action": [draft.pk]})
    invoice = fresh(draft)
    store_invoice_pdf(invoice)
    response = auditor.get(url)
    assert response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    assert invoice.number in response["Content-Disposition"]


def test_pdf_and_explain_need_view_permission(draft):
    nobody = client_for(None, username="no_role")
    assert nobody.get(reverse("admin:invoicing_invoice_pdf", args=[draft.pk])).status_code == 403


# --- cycle runs -----------------------------------------------------------------------------------------------


def test_operator_runs_a_cycle_close_and_watches_its_progress(billing, settings):
    settings.ACCRUAL_CYCLE_CLOSE_INLINE = True
    operator = client_for(BILLING_OPERATOR)
    listing = operator.get(RUNS)
    assert "Run a cycle close" in listing.content.decode()
    form = operator.get(RUN_CLOSE)
    assert form.status_code == 200 and 'name="as_of"' in form.content.decode()

    response = operator.post(RUN_CLOSE, {"as_of": "2024-02-01 12:00:00"})
    run = CycleRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:invoicing_cyclerun_change",
                                                                            args=[run.pk])
    assert run.as_of == at(date(2024, 2, 1)) and run.triggered_by == "user:billing_operator"
    assert run.status == CycleRun.Status.COMPLETED and run.invoices_created == 1

    page = operator.get(response["Location"])
    body = page.content.decode()
    assert page.status_code == 200 and 'id="run-bar"' in body and "accrual/cycle_run.js" in body
    assert "<script>" not in body.split('id="cycle-run-progress"', 1)[1]  # no inline script on the page
    progress = operator.get(reverse("admin:invoicing_cyclerun_progress", args=[run.pk])).json()
    assert progress == {
        "id": run.pk, "status": "completed", "status_label": "Completed", "running": False, "total": 1,
        "processed": 1, "failed": 0, "invoices": 1, "percent": 100,
        "finished_at": run.finished_at.isoformat(), "failures": [],
    }
    assert Invoice.objects.get(customer=billing.customer).cycle_run_id == run.pk


def test_run_progress_lists_failures(billing):
    from invoicing.models import CycleRunCustomer

    run = CycleRun.objects.create(as_of=at(date(2024, 2, 1)), total_customers=2, processed_customers=1,
                                  failed_customers=1)
    CycleRunCustomer.objects.create(run=run, customer=billing.customer, status="failed",
                                    error="BillingError: no price\n\nTraceback ...")
    progress = client_for(AUDITOR).get(reverse("admin:invoicing_cyclerun_progress", args=[run.pk])).json()
    assert progress["running"] is True and progress["percent"] == 50
    assert progress["failures"] == [{"customer": "cus_admin_inv", "name": "Invoiced Industries",
                                     "error": "BillingError: no price"}]
    page = client_for(AUDITOR).get(reverse("admin:invoicing_cyclerun_change", args=[run.pk])).content.decode()
    assert "BillingError: no price" in page and 'data-running="true"' in page
    assert client_for(AUDITOR).get(reverse("admin:invoicing_cyclerun_progress", args=[run.pk + 1000])).status_code \
        == 404


def test_auditor_cannot_start_a_run(billing):
    auditor = client_for(AUDITOR)
    assert "Run a cycle close" not in auditor.get(RUNS).content.decode()
    assert auditor.get(RUN_CLOSE).status_code == 403
    assert auditor.post(RUN_CLOSE, {"as_of": "2024-02-01 12:00:00"}).status_code == 403
    assert not CycleRun.objects.exists()


def test_run_form_rejects_a_bad_date(billing):
    response = client_for(BILLING_OPERATOR).post(RUN_CLOSE, {"as_of": "yesterday-ish"})
    assert response.status_code == 200 and "Enter a valid date/time." in response.content.decode()
    assert not CycleRun.objects.exists()


def test_run_without_inline_setting_records_the_run_for_the_workers(billing, settings):
    settings.ACCRUAL_CYCLE_CLOSE_INLINE = False
    # The fan-out happens on commit, which the test's transaction never reaches: only the record is checked.
    response = client_for(BILLING_OPERATOR).post(RUN_CLOSE, {"as_of": "2024-02-01 12:00:00"})
    run = CycleRun.objects.get()
    assert response.status_code == 302
    assert (run.status, run.total_customers, run.processed_customers) == (CycleRun.Status.RUNNING, 1, 0)


# --- other invoicing pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["taxrate", "documentsequence", "appliedcoupon", "creditgrant", "wallet",
                                   "pendingcharge", "installmentplan", "cyclerun", "invoice"])
def test_every_invoicing_list_opens(draft, model):
    for role in (FINANCE_ADMIN, AUDITOR):
        assert client_for(role).get(reverse(f"admin:invoicing_{model}_changelist")).status_code == 200


def test_operator_grants_credit_through_the_service(billing):
    operator = client_for(BILLING_OPERATOR)
    url = reverse("admin:invoicing_creditgrant_add")
    response = operator.post(url, {"customer": billing.customer.pk, "currency": "USD", "amount": "25.00",
                                   "reason": "Outage in March"})
    assert response.status_code == 302, response.content.decode()
    grant = CreditGrant.objects.get()
    assert (grant.amount, grant.remaining, grant.created_by) == (Decimal("25.00"), Decimal("25.00"),
                                                                  "user:billing_operator")
    # Refused by the service (JPY has no minor unit): the form comes back with the error, nothing saved.
    refused = operator.post(url, {"customer": billing.customer.pk, "currency": "JPY", "amount": "10.5",
                                  "reason": "x"})
    assert refused.status_code == 200 and CreditGrant.objects.count() == 1


def test_finance_admin_edits_tax_rates_with_history():
    finance = client_for(FINANCE_ADMIN)
    response = finance.post(reverse("admin:invoicing_taxrate_add"), {
        "name": "California", "country": "US", "region": "CA", "tax_code": "", "percent": "7.25",
        "legal_mention": "", "is_active": "on",
    })
    assert response.status_code == 302
    from invoicing.models import TaxRate

    rate = TaxRate.objects.get()
    assert rate.history.count() == 1 and rate.percent == Decimal("7.25")
    assert client_for(BILLING_OPERATOR).get(reverse("admin:invoicing_taxrate_change", args=[rate.pk])).context[
        "has_change_permission"] is False


# --- management command ---------------------------------------------------------------------------------------


def test_close_cycle_inline_prints_counts(billing):
    out = StringIO()
    call_command("close_cycle", "--as-of", "2024-02-01T12:00:00Z", "--inline", stdout=out)
    run = CycleRun.objects.get()
    assert out.getvalue().strip() == (f"Cycle run {run.pk} as of 2024-02-01T12:00:00+00:00: 1 customer(s), "
                                      "1 invoice(s), 0 failure(s).")
    # Again: everything is billed already, so nothing is due.
    out = StringIO()
    call_command("close_cycle", "--as-of", "2024-02-01", "--customer", "cus_admin_inv", "--inline", stdout=out)
    assert "0 customer(s), 0 invoice(s)" in out.getvalue()
    assert Invoice.objects.count() == 1


def test_close_cycle_without_inline_starts_a_run(billing):
    out = StringIO()
    call_command("close_cycle", "--as-of", "2024-02-01T12:00:00", "--customer", "cus_admin_inv", stdout=out)
    run = CycleRun.objects.get()
    assert out.getvalue().splitlines()[-1] == str(run.pk)
    assert (run.status, run.total_customers, run.as_of) == (CycleRun.Status.RUNNING, 1, at(date(2024, 2, 1)))


@pytest.mark.parametrize(("args", "error"), [
    (["--as-of", "31/01/2024"], "is not an ISO 8601 date or datetime"),
    (["--as-of", "2024-02-30T00:00:00"], "is not a valid date or time"),
    (["--customer", "cus_admin_inv", "--customer", "nobody"], "Unknown customer(s): nobody."),
])
def test_close_cycle_refuses_bad_input(billing, args, error):
    with pytest.raises(CommandError, match=error.replace("(", r"\(").replace(")", r"\)")):
        call_command("close_cycle", *args, "--inline", stdout=StringIO())
    assert not CycleRun.objects.exists()


def test_upcoming_invoice_page_previews_without_writing(client, actor):
    """The admin's upcoming invoice: the next close of a subscription, priced, with nothing stored."""
    from datetime import date

    from django.utils import timezone
    from djmoney.money import Money

    from contracts.services.subscriptions import create_subscription
    from invoicing.models import BilledPeriod, Invoice
    from tests.factories import CustomerFactory, PlanVersionFactory, UserFactory

    user = UserFactory(is_superuser=True)
    client.force_login(user)
    customer = CustomerFactory(external_id="preview-me", timezone="UTC")
    version = PlanVersionFactory(base_fee=Money("120.00", "USD"))
    today = timezone.now().date()
    create_subscription(customer=customer, plan_version=version, actor=actor, now=timezone.now(),
                        start_date=date(today.year, today.month, 1))
    response = client.get("/admin/invoicing/invoice/upcoming/", {"customer": "preview-me"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "120.00" in body and "Total" in body
    assert Invoice.objects.count() == 0 and BilledPeriod.objects.count() == 0
    missing = client.get("/admin/invoicing/invoice/upcoming/", {"customer": "nobody"})
    assert "No customer &#x27;nobody&#x27;." in missing.content.decode()
