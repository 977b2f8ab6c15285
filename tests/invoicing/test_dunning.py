"""Dunning through the services, with e-mails sent over real SMTP to an aiosmtpd server on 127.0.0.1.

The walks move the clock day by day from the invoice's issue to 35 days after its due date and assert which
e-mails arrived on which day and what changed (subscriptions paused, the invoice written off), with a payment
midway stopping everything after it."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.models import Subscription
from contracts.selectors import entitlements_for_customer
from contracts.services.subscriptions import pause_subscription
from invoicing.emails import TemplateRenderError, check_template_source, recipients_for, render_string
from invoicing.models import (
    DunningAction,
    DunningPolicy,
    DunningStep,
    DunningSuspension,
    EmailMessage,
    Invoice,
)
from invoicing.services.documents import ManualLine, create_one_off_invoice, void_invoice
from invoicing.services.dunning import (
    create_standard_policy,
    dunning_state,
    policy_for,
    remove_dunning_override,
    retry_dunning_action,
    run_dunning,
    set_dunning_override,
)
from invoicing.services.payments import record_payment
from tests.factories import (
    BillingEntityFactory,
    ContactFactory,
    CustomerFactory,
    FeatureFactory,
    PlanEntitlementFactory,
)
from tests.invoicing.test_contract_terms import subscribe, version

pytestmark = pytest.mark.django_db

D = Decimal
A = DunningStep.Action
ACTOR = Actor.system("tests")
ISSUED = date(2024, 3, 1)
DUE = date(2024, 3, 15)  # 14 days' terms


def noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def d(offset: int) -> date:
    return DUE + timedelta(days=offset)


# --- a real SMTP server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: Any

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        return self.message.get_content().replace("\r\n", "\n")


@dataclass
class Inbox:
    port: int
    received: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [r.subject for r in self.received]


def smtp_settings(port: int) -> override_settings:
    return override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1", EMAIL_PORT=port,
        EMAIL_HOST_USER="", EMAIL_HOST_PASSWORD="", EMAIL_USE_TLS=False, EMAIL_USE_SSL=False, EMAIL_TIMEOUT=5,
        DEFAULT_FROM_EMAIL="billing@seller.test",
    )


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox(port=free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        with smtp_settings(box.port):
            yield box
    finally:
        controller.stop()


# --- a customer with an unpaid invoice ----------------------------------------------------------------------


@dataclass
class Debtor:
    customer: Any
    invoice: Invoice
    subscription: Subscription
    feature: Any


def make_debtor(entity=None, *, external_id: str = "cus_late", amount: str = "1200.00") -> Debtor:
    entity = entity or BillingEntityFactory(timezone="UTC", email="accounts@seller.test", name="Seller Inc")
    customer = CustomerFactory(billing_entity=entity, timezone="UTC", payment_terms_days=14, external_id=external_id,
                               name="Late Payer", billing_emails=["ap@buyer.test"])
    ContactFactory(customer=customer, name="Pat", email="pat@buyer.test", receives_invoices=True)
    ContactFactory(customer=customer, name="Tech", email="tech@buyer.test", receives_invoices=False)
    plan_version = version("0.00")
    feature = FeatureFactory(code=f"sso-{external_id}")
    PlanEntitlementFactory(plan_version=plan_version, feature=feature, enabled=True)
    subscription = subscribe(customer, plan_version, ACTOR)
    invoice = create_one_off_invoice(customer, [ManualLine("Implementation", D(amount), 1)], actor=ACTOR,
                                     now=noon(ISSUED), finalize=True)
    assert (invoice.status, invoice.due_date, invoice.amount_due) == (Invoice.Status.FINALIZED, DUE, D(amount))
    return Debtor(customer, invoice, subscription, feature)


@pytest.fixture
def debtor() -> Debtor:
    debtor = make_debtor()
    create_standard_policy(debtor.customer.billing_entity)
    return debtor


def walk(inbox: Inbox, start: date, end: date, before: dict[date, Callable[[], Any]] | None = None
         ) -> dict[date, list[Received]]:
    """Run dunning at noon every day from `start` to `end`; what arrived, by day (days with mail only)."""
    arrived: dict[date, list[Received]] = {}
    day = start
    while day <= end:
        if before and day in before:
            before[day]()
        seen = len(inbox.received)
        result = run_dunning(now=noon(day), actor=ACTOR)
        assert not result.errors, result.errors
        if len(inbox.received) > seen:
            arrived[day] = inbox.received[seen:]
        day += timedelta(days=1)
    return arrived


def actions_of(invoice: Invoice) -> list[tuple[int, str, str, date]]:
    return [(a.offset_days, a.action, a.status, a.ran_at.date())
            for a in DunningAction.objects.filter(invoice=invoice).order_by("offset_days")]


def pay(debtor: Debtor, day: date, amount: str = "1200.00") -> None:
    record_payment(customer=debtor.customer, amount=D(amount), currency="USD", method="bank_transfer",
                   received_on=day, actor=ACTOR, now=noon(day))


# --- the walks ----------------------------------------------------------------------------------------------


def test_an_unpaid_invoice_walks_through_the_whole_policy(inbox, debtor):
    number = debtor.invoice.number
    assert entitlements_for_customer(debtor.customer, now=noon(ISSUED))[debtor.feature.code].enabled

    arrived = walk(inbox, ISSUED, d(35))

    assert {day: [r.subject for r in mails] for day, mails in arrived.items()} == {
        d(-3): [f"Invoice {number} is due on 15 March 2024"],
        d(1): [f"Reminder: invoice {number} is 1 day overdue"],
        d(14): [f"Final notice: invoice {number} is 14 days overdue"],
        d(21): [f"Service suspended: invoice {number} is unpaid"],
    }
    for received in inbox.received:
        assert received.recipients == ["ap@buyer.test", "pat@buyer.test"]  # not the contact left out of invoices
        assert received.sender == "billing@seller.test"
        assert received.message["Reply-To"] == "accounts@seller.test"
        assert "Amount due:  1,200.00 USD" in received.body
        assert "write to accounts@seller.test" in " ".join(received.body.split())
    assert "due in 3 days, on 15 March 2024" in arrived[d(-3)][0].body
    assert "is 1 day overdue" in arrived[d(1)][0].body
    assert actions_of(debtor.invoice) == [
        (-3, A.REMINDER, "done", d(-3)),
        (1, A.REMINDER, "done", d(1)),
        (7, A.RETRY_PAYMENT, "skipped", d(7)),  # no saved card to retry
        (14, A.FINAL_NOTICE, "done", d(14)),
        (21, A.SUSPEND, "done", d(21)),
        (30, A.MARK_UNCOLLECTIBLE, "done", d(30)),
    ]
    # D+21: the subscription is paused, so the customer's entitlements are gone.
    debtor.subscription.refresh_from_db()
    assert debtor.subscription.status == Subscription.Status.PAUSED
    assert debtor.subscription.paused_on == d(21)
    assert entitlements_for_customer(debtor.customer, now=noon(d(22))) == {}
    suspension = DunningSuspension.objects.get()
    assert (suspension.invoice_id, suspension.suspended_at, suspension.resumed_at, suspension.subscription_ids) == (
        debtor.invoice.pk, noon(d(21)), None, [debtor.subscription.pk])
    # D+30: written off, and no longer dunned.
    debtor.invoice.refresh_from_db()
    assert debtor.invoice.status == Invoice.Status.UNCOLLECTIBLE
    assert debtor.invoice.marked_uncollectible_at == noon(d(30))
    assert debtor.invoice.amount_due == D("1200.00")
    assert EmailMessage.objects.filter(status="sent").count() == 4
    assert list(EmailMessage.objects.order_by("sent_at").values_list("kind", flat=True)) == [
        "dunning.reminder", "dunning.reminder", "dunning.final_notice", "dunning.suspend"]
    assert all(m.dunning_action_id and m.invoice_id == debtor.invoice.pk for m in EmailMessage.objects.all())


def test_a_payment_midway_stops_the_run(inbox, debtor):
    arrived = walk(inbox, ISSUED, d(35), before={d(10): lambda: pay(debtor, d(10))})

    assert sorted(arrived) == [d(-3), d(1)]
    assert actions_of(debtor.invoice) == [
        (-3, A.REMINDER, "done", d(-3)),
        (1, A.REMINDER, "done", d(1)),
        (7, A.RETRY_PAYMENT, "skipped", d(7)),
    ]
    debtor.invoice.refresh_from_db()
    debtor.subscription.refresh_from_db()
    assert (debtor.invoice.status, debtor.invoice.paid_at) == (Invoice.Status.PAID, noon(d(10)))
    assert debtor.subscription.status == Subscription.Status.ACTIVE
    assert not DunningSuspension.objects.exists()


def test_paying_after_the_suspension_resumes_only_what_dunning_paused(inbox, debtor):
    # A second subscription the customer paused on its own before: dunning must leave it paused.
    other = subscribe(debtor.customer, version("0.00"), ACTOR)
    pause_subscription(other, actor=ACTOR, now=noon(date(2024, 2, 1)))

    walk(inbox, ISSUED, d(21))
    debtor.subscription.refresh_from_db()
    assert debtor.subscription.status == Subscription.Status.PAUSED
    assert DunningSuspension.objects.get().subscription_ids == [debtor.subscription.pk]

    arrived = walk(inbox, d(22), d(35), before={d(23): lambda: pay(debtor, d(23))})

    assert arrived == {}
    debtor.subscription.refresh_from_db()
    other.refresh_from_db()
    assert debtor.subscription.status == Subscription.Status.ACTIVE
    assert debtor.subscription.paused_on is None
    assert other.status == Subscription.Status.PAUSED
    suspension = DunningSuspension.objects.get()
    assert suspension.resumed_at == noon(d(23))
    assert entitlements_for_customer(debtor.customer, now=noon(d(24)))[debtor.feature.code].enabled
    assert [a[0] for a in actions_of(debtor.invoice)] == [-3, 1, 7, 14, 21]  # D+30 never ran


def test_a_partial_payment_does_not_stop_dunning(inbox, debtor):
    arrived = walk(inbox, ISSUED, d(14), before={d(5): lambda: pay(debtor, d(5), "200.00")})

    assert sorted(arrived) == [d(-3), d(1), d(14)]
    assert "Amount due:  1,000.00 USD" in arrived[d(14)][0].body


def test_a_suspension_waits_until_nothing_is_overdue(inbox, debtor):
    # A second overdue invoice of the same customer keeps the service suspended after the first is paid.
    second = create_one_off_invoice(debtor.customer, [ManualLine("Training", D("300.00"), 1)], actor=ACTOR,
                                    now=noon(ISSUED), finalize=True)
    walk(inbox, ISSUED, d(21))
    actions = DunningAction.objects.filter(action=A.SUSPEND).order_by("invoice_id")
    assert [(a.invoice_id, a.status) for a in actions] == [(debtor.invoice.pk, "done"), (second.pk, "skipped")]
    assert "Already suspended" in actions[1].details["reason"]

    record_payment(customer=debtor.customer, amount=D("1200.00"), currency="USD", method="bank_transfer",
                   received_on=d(22), actor=ACTOR, now=noon(d(22)))
    debtor.subscription.refresh_from_db()
    assert debtor.subscription.status == Subscription.Status.PAUSED

    run_dunning(now=noon(d(23)), actor=ACTOR)
    void_invoice(second, reason="Billed in error", actor=ACTOR, now=noon(d(24)))
    result = run_dunning(now=noon(d(24)), actor=ACTOR)  # the run's last pass notices nothing is overdue

    assert [s.customer_id for s in result.resumed] == [debtor.customer.pk]
    debtor.subscription.refresh_from_db()
    assert debtor.subscription.status == Subscription.Status.ACTIVE


# --- policies and overrides ---------------------------------------------------------------------------------


def test_a_customer_override_replaces_the_entity_policy(inbox, debtor):
    entity = debtor.customer.billing_entity
    gentle = DunningPolicy.objects.create(billing_entity=entity, name="Gentle")
    DunningStep.objects.create(policy=gentle, offset_days=2, action=A.REMINDER,
                               email_subject="{{ customer_name }}: {{ invoice_number }} is open",
                               email_body="Please pay {{ amount_due }} {{ currency }} ({{ days_overdue }} days late).")
    set_dunning_override(debtor.customer, policy=gentle, actor=ACTOR, note="Key account")
    assert policy_for(debtor.customer) == gentle

    arrived = walk(inbox, ISSUED, d(35))

    assert {day: [r.subject for r in mails] for day, mails in arrived.items()} == {
        d(2): [f"Late Payer: {debtor.invoice.number} is open"]}
    assert arrived[d(2)][0].body.strip() == "Please pay 1,200.00 USD (2 days late)."
    assert actions_of(debtor.invoice) == [(2, A.REMINDER, "done", d(2))]

    assert remove_dunning_override(debtor.customer, actor=ACTOR) is True
    assert remove_dunning_override(debtor.customer, actor=ACTOR) is False
    assert policy_for(debtor.customer).name == "Standard"


def test_a_no_dunning_override_means_never_dunned(inbox, debtor):
    set_dunning_override(debtor.customer, policy=None, actor=ACTOR, note="Government: pays late, always pays")
    assert policy_for(debtor.customer) is None

    assert walk(inbox, ISSUED, d(35)) == {}
    assert not DunningAction.objects.exists()
    state = dunning_state(debtor.invoice, now=noon(d(5)))
    assert (state.policy, state.policy_source, state.dunned, state.next_step) == (None, "override_none", False, None)


def test_an_inactive_policy_dunns_no_one(inbox, debtor):
    DunningPolicy.objects.update(is_active=False)
    assert policy_for(debtor.customer) is None
    assert walk(inbox, d(-5), d(5)) == {}


def test_override_must_be_an_active_policy_of_the_customer_entity(debtor):
    elsewhere = create_standard_policy(BillingEntityFactory(), name="Other entity")
    with pytest.raises(BillingError) as refused:
        set_dunning_override(debtor.customer, policy=elsewhere, actor=ACTOR)
    assert refused.value.field == "policy"
    dormant = DunningPolicy.objects.create(billing_entity=debtor.customer.billing_entity, name="Dormant",
                                           is_active=False)
    with pytest.raises(BillingError, match="inactive"):
        set_dunning_override(debtor.customer, policy=dormant, actor=ACTOR)
    with pytest.raises(BillingError) as too_long:
        set_dunning_override(debtor.customer, policy=None, actor=ACTOR, note="x" * 301)
    assert too_long.value.field == "note"


def test_customer_timezone_decides_the_day(inbox):
    entity = BillingEntityFactory(timezone="UTC")
    debtor = make_debtor(entity)
    debtor.customer.timezone = "Pacific/Auckland"  # UTC+13 in March
    debtor.customer.save()
    create_standard_policy(entity)
    # 11:00 UTC on D+0 is already D+1 at midnight in Auckland: the D+1 reminder is due.
    run_dunning(now=datetime(2024, 3, 15, 11, 30, tzinfo=UTC), actor=ACTOR)
    assert [(a.offset_days, a.status) for a in DunningAction.objects.order_by("offset_days")] == [
        (-3, "skipped"), (1, "done")]


# --- once, and only once ------------------------------------------------------------------------------------


def test_running_twice_on_one_day_acts_once(inbox, debtor):
    run_dunning(now=noon(d(-3)), actor=ACTOR)
    again = run_dunning(now=noon(d(-3)).replace(hour=18), actor=ACTOR)
    assert again.actions == [] and again.invoices_checked == 1
    assert len(inbox.received) == 1
    assert DunningAction.objects.count() == 1


def test_a_late_policy_catches_up_with_one_email(inbox, debtor):
    """Every overdue step runs once, but only the latest e-mail goes out: no flood of old reminders."""
    result = run_dunning(now=noon(d(25)), actor=ACTOR)

    assert [r.subject for r in inbox.received] == [f"Service suspended: invoice {debtor.invoice.number} is unpaid"]
    assert actions_of(debtor.invoice) == [
        (-3, A.REMINDER, "skipped", d(25)),
        (1, A.REMINDER, "skipped", d(25)),
        (7, A.RETRY_PAYMENT, "skipped", d(25)),
        (14, A.FINAL_NOTICE, "skipped", d(25)),
        (21, A.SUSPEND, "done", d(25)),
    ]
    assert result.summary() == {"invoices_checked": 1, "actions": 5, "done": 1, "skipped": 4, "failed": 0,
                                "errors": 0, "resumed": 0}
    scheduled = list(DunningAction.objects.order_by("offset_days").values_list("scheduled_for", flat=True))
    assert scheduled == [d(-3), d(1), d(7), d(14), d(21)]
    debtor.subscription.refresh_from_db()
    assert debtor.subscription.status == Subscription.Status.PAUSED


def test_a_customer_without_addresses_is_recorded_as_skipped(inbox, debtor):
    debtor.customer.billing_emails = []
    debtor.customer.save()
    debtor.customer.contacts.update(receives_invoices=False)
    run_dunning(now=noon(d(-3)), actor=ACTOR)
    action = DunningAction.objects.get()
    assert action.status == "skipped"
    assert "no billing e-mail" in action.details["reason"]
    assert inbox.received == [] and not EmailMessage.objects.exists()


def test_the_run_can_be_limited_to_some_customers(inbox, debtor):
    other = make_debtor(debtor.customer.billing_entity, external_id="cus_other")
    result = run_dunning(now=noon(d(-3)), actor=ACTOR, customer_ids=[other.customer.pk])
    assert [a.invoice_id for a in result.actions] == [other.invoice.pk]


def test_the_state_shows_steps_done_and_the_next_one(inbox, debtor):
    walk(inbox, d(-3), d(2))
    state = dunning_state(debtor.invoice, now=noon(d(2)))
    assert (state.policy.name, state.policy_source, state.dunned, state.suspended) == (
        "Standard", "entity_default", True, False)
    assert [(s.offset_days, s.status, s.scheduled_for) for s in state.steps] == [
        (-3, "done", d(-3)), (1, "done", d(1)), (7, "upcoming", d(7)), (14, "upcoming", d(14)),
        (21, "upcoming", d(21)), (30, "upcoming", d(30))]
    assert state.steps[0].ran_at == noon(d(-3)) and state.steps[0].details["to"] == ["ap@buyer.test",
                                                                                      "pat@buyer.test"]
    assert (state.next_step.offset_days, state.next_step.scheduled_for) == (7, d(7))

    pay(debtor, d(3))
    debtor.invoice.refresh_from_db()
    state = dunning_state(debtor.invoice, now=noon(d(3)))
    assert not state.dunned and state.next_step is None
    assert [s.status for s in state.steps] == ["done", "done", "not_run", "not_run", "not_run", "not_run"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_concurrent_runs_act_once(inbox):
    debtor = make_debtor()
    create_standard_policy(debtor.customer.billing_entity)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    results = []

    def job() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(run_dunning(now=noon(d(1)), actor=ACTOR))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(r.errors for r in results)
    assert sum(len(r.actions) for r in results) == 2  # D-3 (skipped: caught up) and D+1, by one run or another
    assert [(a.offset_days, a.status) for a in DunningAction.objects.order_by("offset_days")] == [
        (-3, "skipped"), (1, "done")]
    assert len(inbox.received) == 1
    assert EmailMessage.objects.count() == 1


# --- failures -----------------------------------------------------------------------------------------------


def test_smtp_down_is_logged_and_not_resent_until_retried(debtor):
    closed = free_port()
    with smtp_settings(closed):
        run_dunning(now=noon(d(-3)), actor=ACTOR)
        action = DunningAction.objects.get()
        message = EmailMessage.objects.get()
        assert (action.status, message.status, message.dunning_action_id) == ("failed", "failed", action.pk)
        assert "ConnectionRefusedError" in message.error
        assert action.details["error"] == message.error
        assert message.to == ["ap@buyer.test", "pat@buyer.test"]
        assert message.subject == f"Invoice {debtor.invoice.number} is due on 15 March 2024"

        run_dunning(now=noon(d(-2)), actor=ACTOR)  # the next run does not resend a recorded step
        assert DunningAction.objects.count() == 1 and EmailMessage.objects.count() == 1

    box = Inbox(port=closed)
    controller = Controller(box, hostname="127.0.0.1", port=closed)
    controller.start()
    try:
        with smtp_settings(closed):
            retried = retry_dunning_action(action, actor=ACTOR, now=noon(d(-1)))
            assert retried.status == "done"
            assert [r.subject for r in box.received] == [f"Invoice {debtor.invoice.number} is due on 15 March 2024"]
            assert "due in 1 day, on 15 March 2024" in box.received[0].body  # rendered with today's figures
            with pytest.raises(InvalidTransition, match="only a failed step"):
                retry_dunning_action(action, actor=ACTOR, now=noon(d(-1)))
    finally:
        controller.stop()
    assert list(EmailMessage.objects.order_by("id").values_list("status", flat=True)) == ["failed", "sent"]


def test_a_paid_invoice_step_cannot_be_retried(debtor):
    with smtp_settings(free_port()):
        run_dunning(now=noon(d(-3)), actor=ACTOR)
    pay(debtor, d(-2))
    with pytest.raises(InvalidTransition, match="nothing to chase"):
        retry_dunning_action(DunningAction.objects.get(), actor=ACTOR, now=noon(d(-1)))


HOSTILE = [
    ("{% load static %}{% static 'x' %}", "Invalid block tag"),
    ("{% include '/etc/passwd' %}", "Invalid block tag"),
    ("{% extends 'admin/base.html' %}", "Invalid block tag"),
    ("{% debug %}", "Invalid block tag"),
    ("{% for c in invoice_number %}{% for d in invoice_number %}x{% endfor %}{% endfor %}", "Invalid block tag"),
    ("{{ invoice_number|ljust:'999999999' }}", "Invalid filter"),
    ("{{ invoice_number.__class__ }}", "may not begin with underscores"),
    ("{% if %}", "Template error"),
    ("{% if days_overdue %}never closed", "Template error"),
    ("x" * 20_001, "longer than 20000"),
]


@pytest.mark.parametrize(("body", "error"), HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_override_fails_its_step_not_the_run(inbox, body, error):
    bad = make_debtor(external_id="cus_bad")
    entity = bad.customer.billing_entity
    policy = DunningPolicy.objects.create(billing_entity=entity, name="Custom", is_default=True)
    DunningStep.objects.create(policy=policy, offset_days=0, action=A.REMINDER, email_body=body)
    good = make_debtor(entity, external_id="cus_good")
    set_dunning_override(good.customer, policy=create_standard_policy(entity, default=False), actor=ACTOR)

    result = run_dunning(now=noon(d(0)), actor=ACTOR)

    assert not result.errors
    failed = DunningAction.objects.get(invoice=bad.invoice)
    assert failed.status == "failed"
    assert error in failed.details["error"]
    assert not EmailMessage.objects.filter(invoice=bad.invoice).exists()
    # The other customer's reminder went out in the same run.
    assert [r.recipients for r in inbox.received] == [["ap@buyer.test", "pat@buyer.test"]]
    assert DunningAction.objects.get(invoice=good.invoice, offset_days=-3).status == "done"


def test_a_subject_cannot_inject_headers(inbox, debtor):
    DunningStep.objects.filter(offset_days=-3).update(email_subject="Hello\nBcc: thief@evil.test\n{{ invoice_number }}")
    run_dunning(now=noon(d(-3)), actor=ACTOR)
    [received] = inbox.received
    assert received.subject == f"Hello Bcc: thief@evil.test {debtor.invoice.number}"
    assert received.recipients == ["ap@buyer.test", "pat@buyer.test"]
    assert received.message["Bcc"] is None


def test_the_sandbox_renders_plain_text_without_escaping():
    assert render_string("{{ name|upper }} & {{ amount }}", {"name": "<Acme>", "amount": "1,200.00"}) == (
        "<ACME> & 1,200.00")
    check_template_source("{% if days_overdue > 0 %}late{% endif %}")
    with pytest.raises(TemplateRenderError):
        check_template_source("{% url 'admin:index' %}")


def test_recipients_are_billing_emails_then_invoice_contacts_once(db):
    customer = CustomerFactory(billing_emails=["AP@buyer.test", " ", "ap2@buyer.test"])
    ContactFactory(customer=customer, name="B", email="ap@buyer.test")
    ContactFactory(customer=customer, name="A", email="zed@buyer.test")
    ContactFactory(customer=customer, name="C", email="no@buyer.test", receives_invoices=False)
    assert recipients_for(customer) == ["AP@buyer.test", "ap2@buyer.test", "zed@buyer.test"]


def test_a_payment_retry_without_a_saved_method_is_skipped(inbox, debtor):
    run_dunning(now=noon(d(6)), actor=ACTOR)
    result = run_dunning(now=noon(d(7)), actor=ACTOR)
    [retry] = result.actions
    assert (retry.action, retry.status) == (A.RETRY_PAYMENT, "skipped")
    assert "No saved payment method" in DunningAction.objects.get(pk=retry.pk).details["reason"]


# --- task and command ---------------------------------------------------------------------------------------


def test_the_task_and_the_command_run_as_of_a_moment(inbox, debtor):
    from invoicing.tasks import run_dunning_task

    summary = run_dunning_task(as_of=noon(d(-3)).isoformat())
    assert summary["done"] == 1 and summary["as_of"] == noon(d(-3)).isoformat()
    assert len(inbox.received) == 1

    from io import StringIO

    out = StringIO()
    call_command("run_dunning", "--as-of", d(1).isoformat() + "T12:00:00Z", stdout=out)
    assert "1 step(s) done, 0 skipped, 0 failed" in out.getvalue()
    assert len(inbox.received) == 2


def test_the_command_refuses_a_bad_moment_and_unknown_customers(db):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="not an ISO 8601"):
        call_command("run_dunning", "--as-of", "next tuesday")
    with pytest.raises(CommandError, match="Unknown customer"):
        call_command("run_dunning", "--customer", "nobody")
