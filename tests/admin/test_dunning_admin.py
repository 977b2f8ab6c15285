"""Dunning admin: policies edited by finance admins and read by the other roles, step templates checked on save,
customer overrides through the service, the run page and the retry action for finance admins only, and the
read-only logs (steps run, suspensions, e-mails with their body) and an invoice's dunning page."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core import mail
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN, REVENUE_ACCOUNTANT
from invoicing.models import CustomerDunningOverride, DunningAction, DunningPolicy, DunningStep, EmailMessage
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.dunning import create_standard_policy, run_dunning
from tests.admin.support import ACTOR, client_for, messages_of
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db

A = DunningStep.Action
POLICIES = reverse("admin:invoicing_dunningpolicy_changelist")
POLICY_ADD = reverse("admin:invoicing_dunningpolicy_add")
OVERRIDES = reverse("admin:invoicing_customerdunningoverride_changelist")
OVERRIDE_ADD = reverse("admin:invoicing_customerdunningoverride_add")
ACTIONS = reverse("admin:invoicing_dunningaction_changelist")
RUN = reverse("admin:invoicing_dunningaction_run")
DUE = date(2024, 3, 15)


def noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


@pytest.fixture
def entity():
    return BillingEntityFactory(code="seller-us", timezone="UTC", email="accounts@seller.test")


@pytest.fixture
def customer(entity):
    return CustomerFactory(billing_entity=entity, external_id="cus_admin_dun", name="Slow Payer", timezone="UTC",
                           payment_terms_days=14, billing_emails=["ap@slow.test"])


@pytest.fixture
def invoice(customer):
    return create_one_off_invoice(customer, [ManualLine("Setup", Decimal("480.00"), 1)], actor=ACTOR,
                                  now=noon(date(2024, 3, 1)), finalize=True)


@pytest.fixture
def standard(entity):
    return create_standard_policy(entity)


def policy_post(entity, name: str, steps: list[dict], **fields) -> dict:
    data = {"name": name, "billing_entity": entity.pk, "is_active": "on", **fields,
            "steps-TOTAL_FORMS": str(len(steps)), "steps-INITIAL_FORMS": "0", "steps-MIN_NUM_FORMS": "0",
            "steps-MAX_NUM_FORMS": "1000"}
    for i, step in enumerate(steps):
        for key, value in step.items():
            data[f"steps-{i}-{key}"] = value
    return data


def form_errors(response) -> str:
    context = response.context
    errors = [str(context["adminform"].form.errors)] if context and "adminform" in context else []
    for formset in (context.get("inline_admin_formsets") or []) if context else []:
        errors.append(str(formset.formset.errors) + str(formset.formset.non_form_errors()))
    return " ".join(errors)


# --- policies -------------------------------------------------------------------------------------------------


def test_a_finance_admin_creates_a_policy_with_steps(entity):
    admin = client_for(FINANCE_ADMIN)
    data = policy_post(entity, "Firm", [
        {"offset_days": "5", "action": A.REMINDER, "email_subject": "{{ invoice_number }}: {{ days_overdue }} days",
         "email_body": "Please pay {{ amount_due }} {{ currency }}."},
        {"offset_days": "20", "action": A.SUSPEND},
    ], is_default="on")

    response = admin.post(POLICY_ADD, data, follow=True)

    assert response.status_code == 200, form_errors(response)
    policy = DunningPolicy.objects.get(name="Firm")
    assert (policy.billing_entity, policy.is_default) == (entity, True)
    assert list(policy.steps.values_list("offset_days", "action")) == [(5, A.REMINDER), (20, A.SUSPEND)]
    listing = admin.get(POLICIES)
    assert "D+5 reminder, D+20 suspend" in listing.content.decode()


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"offset_days": "5", "action": A.REMINDER, "email_body": "{% include '/etc/passwd' %}"}, "Invalid block tag"),
        ({"offset_days": "5", "action": A.REMINDER, "email_body": "{{ x|ljust:'99999999' }}"}, "Invalid filter"),
        ({"offset_days": "5", "action": A.REMINDER, "email_subject": "{% if %}"}, "Template error"),
        ({"offset_days": "5", "action": A.REMINDER, "email_subject": "{% if 0 %}x{% endif %}"}, "empty once rendered"),
        ({"offset_days": "5", "action": A.RETRY_PAYMENT, "email_body": "Hello"}, "send an e-mail"),
        ({"offset_days": "400", "action": A.REMINDER}, "365 days after the due date"),
        ({"offset_days": "-91", "action": A.REMINDER}, "90 days before"),
        ({"offset_days": "5", "action": "shout"}, "not one of the available choices"),
    ],
)
def test_bad_steps_are_refused_with_their_reason(entity, step, message):
    response = client_for(FINANCE_ADMIN).post(POLICY_ADD, policy_post(entity, "Broken", [step]))
    assert response.status_code == 200
    assert message in form_errors(response)
    assert not DunningPolicy.objects.filter(name="Broken").exists()


def test_a_second_default_policy_is_a_form_error(entity, standard):
    response = client_for(FINANCE_ADMIN).post(POLICY_ADD, policy_post(entity, "Another", [], is_default="on"))
    assert response.status_code == 200
    assert "dunning_policy_one_default" in form_errors(response) or "already exists" in form_errors(response)
    assert DunningPolicy.objects.filter(billing_entity=entity, is_default=True).count() == 1


def test_a_step_that_ran_cannot_be_deleted(invoice, standard):
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        run_dunning(now=noon(DUE), actor=ACTOR)  # D-3 reminder ran
    ran = standard.steps.get(offset_days=-3)
    steps = list(standard.steps.order_by("offset_days", "id"))
    data = {"name": standard.name, "is_default": "on", "is_active": "on",
            "steps-TOTAL_FORMS": str(len(steps)), "steps-INITIAL_FORMS": str(len(steps)),
            "steps-MIN_NUM_FORMS": "0", "steps-MAX_NUM_FORMS": "1000"}
    for i, step in enumerate(steps):
        data.update({f"steps-{i}-id": step.pk, f"steps-{i}-policy": standard.pk,
                     f"steps-{i}-offset_days": step.offset_days, f"steps-{i}-action": step.action})
    data["steps-0-DELETE"] = "on"
    response = client_for(FINANCE_ADMIN).post(reverse("admin:invoicing_dunningpolicy_change", args=[standard.pk]),
                                              data)
    assert response.status_code == 200
    # Its runs are the invoices' history: Django refuses to delete what they protect.
    assert "would require deleting the following protected related objects" in form_errors(response)
    assert DunningStep.objects.filter(pk=ran.pk).exists()


@pytest.mark.parametrize("role", [BILLING_OPERATOR, REVENUE_ACCOUNTANT, AUDITOR])
def test_other_roles_read_policies_but_cannot_change_them(role, entity, standard):
    client = client_for(role)
    assert client.get(POLICIES).status_code == 200
    change_url = reverse("admin:invoicing_dunningpolicy_change", args=[standard.pk])
    page = client.get(change_url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.get(POLICY_ADD).status_code == 403
    assert client.post(change_url, {"name": "Renamed"}).status_code == 403
    assert client.post(POLICY_ADD, policy_post(entity, "Sneaky", [])).status_code == 403
    assert not DunningPolicy.objects.filter(name__in=("Renamed", "Sneaky")).exists()


# --- overrides ------------------------------------------------------------------------------------------------


def test_an_operator_sets_and_removes_a_customer_override(customer, standard):
    operator = client_for(BILLING_OPERATOR)
    response = operator.post(OVERRIDE_ADD, {"customer": customer.pk, "policy": "", "note": "Pays by PO"},
                             follow=True)
    assert response.status_code == 200, form_errors(response)
    override = CustomerDunningOverride.objects.get(customer=customer)
    assert (override.policy, override.note) == (None, "Pays by PO")
    assert override.history.latest().history_change_reason == "user:billing_operator"
    assert "No dunning" in operator.get(OVERRIDES).content.decode()

    delete_url = reverse("admin:invoicing_customerdunningoverride_delete", args=[override.pk])
    operator.post(delete_url, {"post": "yes"}, follow=True)
    assert not CustomerDunningOverride.objects.exists()


def test_an_override_with_another_entitys_policy_is_refused_on_the_form(customer, standard):
    elsewhere = create_standard_policy(BillingEntityFactory(code="seller-eu"), name="EU standard")
    response = client_for(BILLING_OPERATOR).post(OVERRIDE_ADD, {"customer": customer.pk, "policy": elsewhere.pk})
    assert response.status_code == 200
    assert "another billing entity" in form_errors(response)
    assert not CustomerDunningOverride.objects.exists()


def test_an_auditor_cannot_add_an_override(customer):
    assert client_for(AUDITOR).post(OVERRIDE_ADD, {"customer": customer.pk, "policy": ""}).status_code == 403
    assert not CustomerDunningOverride.objects.exists()


# --- running, the log and retrying ----------------------------------------------------------------------------


def test_a_finance_admin_runs_dunning_as_of_a_moment(invoice, standard):
    admin = client_for(FINANCE_ADMIN)
    listing = admin.get(ACTIONS)
    assert RUN in listing.content.decode()
    assert admin.get(RUN).status_code == 200

    response = admin.post(RUN, {"as_of": "2024-03-16 12:00"}, follow=True)

    assert response.redirect_chain[-1][0] == ACTIONS
    assert ("Dunning as of 2024-03-16 12:00 UTC: 1 invoice(s) checked, 1 step(s) done, 1 skipped, 0 failed, "
            "0 suspension(s) lifted.") in messages_of(response)
    assert [(a.offset_days, a.status) for a in DunningAction.objects.order_by("offset_days")] == [
        (-3, "skipped"), (1, "done")]
    [sent] = mail.outbox
    assert sent.subject == f"Reminder: invoice {invoice.number} is 1 day overdue"
    assert sent.to == ["ap@slow.test"]
    page = admin.get(ACTIONS).content.decode()
    assert "E-mailed ap@slow.test" in page and "D+1: Reminder e-mail" in page


def test_the_run_page_refuses_a_bad_moment(invoice, standard):
    response = client_for(FINANCE_ADMIN).post(RUN, {"as_of": "soon"})
    assert response.status_code == 200
    assert "Enter a valid date/time." in str(response.context["form"].errors)
    assert not DunningAction.objects.exists()


@pytest.mark.parametrize("role", [BILLING_OPERATOR, REVENUE_ACCOUNTANT, AUDITOR])
def test_only_finance_admins_run_dunning(role, invoice, standard):
    client = client_for(role)
    assert RUN not in client.get(ACTIONS).content.decode()
    assert client.get(RUN).status_code == 403
    assert client.post(RUN, {"as_of": "2024-03-16 12:00"}).status_code == 403
    assert not DunningAction.objects.exists()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def failed_reminder(invoice) -> DunningAction:
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1",
                           EMAIL_PORT=closed_port(), EMAIL_TIMEOUT=5):
        run_dunning(now=noon(date(2024, 3, 12)), actor=ACTOR)
    action = DunningAction.objects.get()
    assert action.status == "failed"
    return action


def test_a_finance_admin_retries_a_failed_email_step(invoice, standard):
    action = failed_reminder(invoice)
    admin = client_for(FINANCE_ADMIN)
    response = admin.post(ACTIONS, {"action": "retry_failed", "_selected_action": [action.pk]}, follow=True)
    action.refresh_from_db()
    assert action.status == "done"
    assert any(m.startswith(f"{invoice} D-3 reminder e-mail: done.") for m in messages_of(response))
    overdue = (timezone.now().astimezone(UTC).date() - DUE).days  # rendered again with today's figures
    assert [m.subject for m in mail.outbox] == [f"Reminder: invoice {invoice.number} is {overdue} days overdue"]
    assert list(EmailMessage.objects.order_by("id").values_list("status", flat=True)) == ["failed", "sent"]

    again = admin.post(ACTIONS, {"action": "retry_failed", "_selected_action": [action.pk]}, follow=True)
    assert any("only a failed step can be retried" in m for m in messages_of(again))


@pytest.mark.parametrize("role", [BILLING_OPERATOR, AUDITOR])
def test_other_roles_cannot_retry(role, invoice, standard):
    action = failed_reminder(invoice)
    client = client_for(role)
    assert "retry_failed" not in client.get(ACTIONS).content.decode()
    client.post(ACTIONS, {"action": "retry_failed", "_selected_action": [action.pk]}, follow=True)
    action.refresh_from_db()
    assert action.status == "failed" and mail.outbox == []


def test_logs_are_read_only_and_show_what_was_sent(invoice, standard):
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        run_dunning(now=noon(date(2024, 4, 6)), actor=ACTOR)  # D+22: caught up, suspended, notice sent
    auditor = client_for(AUDITOR)
    action = DunningAction.objects.get(action=A.SUSPEND)
    page = auditor.get(reverse("admin:invoicing_dunningaction_change", args=[action.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()

    message = EmailMessage.objects.get()
    body = auditor.get(reverse("admin:invoicing_emailmessage_change", args=[message.pk])).content.decode()
    assert "so we have suspended your service" in body and "480.00 USD" in body
    assert auditor.get(reverse("admin:invoicing_emailmessage_changelist")).status_code == 200
    assert auditor.get(reverse("admin:invoicing_dunningsuspension_changelist")).status_code == 200
    assert auditor.post(reverse("admin:invoicing_emailmessage_delete", args=[message.pk]),
                        {"post": "yes"}).status_code == 403
    assert EmailMessage.objects.filter(pk=message.pk).exists()

    state = auditor.get(reverse("admin:invoicing_dunningaction_invoice", args=[invoice.pk]))
    assert state.status_code == 200
    text = state.content.decode()
    assert "Standard (the billing entity&#x27;s default)" in text
    assert "since " in text and "Service suspended" in text
    assert text.count('class="step-skipped') == 4 and text.count('class="step-done') == 1
    assert "next-step" in text  # D+30 write-off is next


def test_the_invoice_page_needs_a_known_invoice_and_a_staff_user(invoice):
    assert client_for(AUDITOR).get(reverse("admin:invoicing_dunningaction_invoice", args=[999999])).status_code == 404
    from django.test import Client

    anonymous = Client().get(reverse("admin:invoicing_dunningaction_invoice", args=[invoice.pk]))
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]
