"""Lifecycle actions: they change state through the services, and a refused one says why, per object."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.roles import BILLING_OPERATOR, FINANCE_ADMIN
from contracts.models import Contract, PlanVersion, Subscription, SubscriptionChange
from contracts.selectors import current_period
from contracts.services.subscriptions import create_subscription
from customers.models import Customer
from tests.admin.support import ACTOR, client_for, messages_of
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SUBSCRIPTIONS = reverse("admin:contracts_subscription_changelist")
VERSIONS = reverse("admin:contracts_planversion_changelist")


def act(client, url: str, action: str, objects, **extra):
    return client.post(url, {"action": action, "_selected_action": [o.pk for o in objects], **extra}, follow=True)


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


@pytest.fixture
def operator():
    return client_for(BILLING_OPERATOR)


def test_pause_then_resume(book, operator):
    response = act(operator, SUBSCRIPTIONS, "pause", [book.subscription])
    assert fresh(book.subscription).status == Subscription.Status.PAUSED
    assert "Paused 1 subscription." in messages_of(response)
    change = book.subscription.changes.get(action=SubscriptionChange.Action.PAUSE)
    assert change.actor == operator.user  # the audit trail names the person

    act(operator, SUBSCRIPTIONS, "resume", [book.subscription])
    assert fresh(book.subscription).status == Subscription.Status.ACTIVE


def test_an_illegal_transition_is_an_error_message_and_changes_nothing(book, operator):
    response = act(operator, SUBSCRIPTIONS, "resume", [book.subscription])
    assert fresh(book.subscription).status == Subscription.Status.ACTIVE
    errors = [m for m in messages_of(response) if "sub-acme-1" in m]
    assert errors and "Cannot resume" in errors[0]
    assert not book.subscription.changes.filter(action=SubscriptionChange.Action.RESUME).exists()


def test_each_object_is_reported_on_its_own(book, operator):
    other = create_subscription(customer=book.customer, plan_version=book.published, actor=ACTOR,
                                now=timezone.now(), external_id="sub-paused")
    act(operator, SUBSCRIPTIONS, "pause", [other])
    response = act(operator, SUBSCRIPTIONS, "pause", [book.subscription, other])
    messages = messages_of(response)
    assert fresh(book.subscription).status == Subscription.Status.PAUSED
    assert "Paused 1 subscription." in messages
    assert any(m.startswith("sub-paused: Cannot pause") for m in messages)


def test_cancel_now_and_at_period_end(book, operator):
    later = create_subscription(customer=book.customer, plan_version=book.published, actor=ACTOR,
                                now=timezone.now(), external_id="sub-later")
    act(operator, SUBSCRIPTIONS, "cancel_at_period_end", [later])
    assert fresh(later).status == Subscription.Status.ACTIVE
    scheduled = later.changes.get(action=SubscriptionChange.Action.CANCEL)
    assert scheduled.status == SubscriptionChange.Status.SCHEDULED
    assert scheduled.effective_date == current_period(later, now=timezone.now()).end

    act(operator, SUBSCRIPTIONS, "revoke_scheduled_changes", [later])
    assert fresh(scheduled).status == SubscriptionChange.Status.REVOKED

    act(operator, SUBSCRIPTIONS, "cancel_now", [book.subscription])
    canceled = fresh(book.subscription)
    assert canceled.status == Subscription.Status.CANCELED
    assert canceled.canceled_at is not None


def test_renew_extends_the_term_or_explains_why_not(book, operator):
    open_ended = book.subscription
    termed = create_subscription(customer=book.customer, plan_version=book.published, actor=ACTOR,
                                 now=timezone.now(), external_id="sub-termed", start_date=date(2024, 1, 1),
                                 end_date=date(2030, 1, 1))
    response = act(operator, SUBSCRIPTIONS, "renew", [open_ended, termed])
    assert fresh(termed).end_date == date(2031, 1, 1)
    assert any(m.startswith("sub-acme-1:") and "nothing to renew" in m for m in messages_of(response))
    assert fresh(open_ended).end_date is None


def test_change_plan_through_the_intermediate_form(book, operator):
    form_page = act(operator, SUBSCRIPTIONS, "change_plan_action", [book.subscription])
    assert form_page.status_code == 200
    assert form_page.templates[0].name == "admin/accrual/action_form.html"
    assert "sub-acme-1" in form_page.content.decode()
    assert fresh(book.subscription).plan_version == book.published  # nothing happens before "apply"

    response = act(operator, SUBSCRIPTIONS, "change_plan_action", [book.subscription], apply="1",
                   **{"params-plan_version": book.bigger.pk, "params-timing": ""})
    assert fresh(book.subscription).plan_version == book.bigger  # an upgrade applies now
    assert "Changed the plan of 1 subscription." in messages_of(response)


def test_change_plan_form_errors_are_shown_again(book, operator):
    response = act(operator, SUBSCRIPTIONS, "change_plan_action", [book.subscription], apply="1",
                   **{"params-plan_version": book.draft.pk})  # a draft is not offered
    assert response.templates[0].name == "admin/accrual/action_form.html"
    assert response.context["form"].errors["plan_version"]
    assert fresh(book.subscription).plan_version == book.published


def test_change_quantity_now_and_refusal(book, operator):
    act(operator, SUBSCRIPTIONS, "change_quantity_action", [book.subscription], apply="1",
        **{"params-quantity": "5", "params-timing": "immediate"})
    assert fresh(book.subscription).quantity == Decimal(5)
    response = act(operator, SUBSCRIPTIONS, "change_quantity_action", [book.subscription], apply="1",
                   **{"params-quantity": "5", "params-timing": "immediate"})
    assert any("already 5" in m for m in messages_of(response))


def test_apply_due_changes(book, operator):
    past = create_subscription(customer=book.customer, plan_version=book.published, actor=ACTOR,
                               now=timezone.now(), external_id="sub-due", start_date=date(2024, 1, 1))
    SubscriptionChange.objects.create(subscription=past, action=SubscriptionChange.Action.CHANGE_QUANTITY,
                                      status=SubscriptionChange.Status.SCHEDULED, effective_date=date(2024, 3, 1),
                                      from_quantity=Decimal(1), to_quantity=Decimal(4))
    response = act(operator, SUBSCRIPTIONS, "apply_due_changes_action", [past])
    assert fresh(past).quantity == Decimal(4)
    assert any(m.startswith("Applied ") for m in messages_of(response))


def test_plan_version_publish_copy_and_archive(book):
    client = client_for(FINANCE_ADMIN)
    response = act(client, VERSIONS, "archive_versions", [book.draft])
    assert fresh(book.draft).status == PlanVersion.Status.DRAFT
    assert any("Only a published version can be archived" in m for m in messages_of(response))

    act(client, VERSIONS, "publish_versions", [book.draft])
    assert fresh(book.draft).status == PlanVersion.Status.PUBLISHED
    assert fresh(book.draft).published_at is not None

    act(client, VERSIONS, "archive_versions", [book.published])
    assert fresh(book.published).status == PlanVersion.Status.ARCHIVED

    act(client, VERSIONS, "new_draft_versions", [book.draft])
    newest = book.plan.versions.order_by("-version").first()
    assert (newest.version, newest.status) == (3, PlanVersion.Status.DRAFT)
    assert newest.charges.count() == book.draft.charges.count() == 1

    response = act(client, VERSIONS, "publish_versions", [book.bigger])
    assert any("published prices never change" in m for m in messages_of(response))


def test_new_draft_version_from_the_plan_list(book):
    client = client_for(FINANCE_ADMIN)
    response = act(client, reverse("admin:contracts_plan_changelist"), "new_draft_versions", [book.plan])
    assert any("already has a draft" in m for m in messages_of(response))  # starter v2 is a draft
    scale = book.bigger.plan
    act(client, reverse("admin:contracts_plan_changelist"), "new_draft_versions", [scale])
    assert scale.versions.filter(status=PlanVersion.Status.DRAFT).count() == 1


def test_contract_renew_and_cancel(book, operator):
    contracts = reverse("admin:contracts_contract_changelist")
    response = act(operator, contracts, "renew_contracts", [book.contract])
    assert any("evergreen" in m for m in messages_of(response))

    act(operator, contracts, "cancel_contracts_now", [book.contract])
    assert fresh(book.contract).status == Contract.Status.CANCELED
    assert fresh(book.subscription).status == Subscription.Status.CANCELED


def test_customer_archive_refused_while_live_then_allowed(book, operator):
    customers = reverse("admin:customers_customer_changelist")
    response = act(operator, customers, "archive_customers", [book.customer])
    assert fresh(book.customer).status == Customer.Status.ACTIVE
    assert any("Acme Group (acme-group):" in m and "live subscriptions" in m for m in messages_of(response))

    idle = CustomerFactory(billing_entity=book.entity)
    act(operator, customers, "archive_customers", [idle])
    assert fresh(idle).status == Customer.Status.ARCHIVED
