"""The finance roles: what each group can see and do in the admin."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN, REVENUE_ACCOUNTANT, ROLES, sync_roles
from contracts.models import PlanVersion, Subscription
from customers.models import Customer
from tests.admin.support import client_for, messages_of

pytestmark = pytest.mark.django_db


def perms_of(role: str) -> set[str]:
    group = Group.objects.get(name=role)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_the_roles_migration_created_the_groups():
    assert set(Group.objects.filter(name__in=[r.name for r in ROLES]).values_list("name", flat=True)) == {
        FINANCE_ADMIN, BILLING_OPERATOR, REVENUE_ACCOUNTANT, AUDITOR,
    }


def test_sync_is_idempotent_and_removes_hand_added_permissions():
    sync_roles()
    before = perms_of(AUDITOR)
    stray = Permission.objects.get(codename="delete_customer")
    Group.objects.get(name=AUDITOR).permissions.add(stray)
    counts = sync_roles()
    assert perms_of(AUDITOR) == before
    assert counts[AUDITOR] == len(before)


def test_role_permissions():
    sync_roles()
    admin, operator, accountant, auditor = (perms_of(r) for r in
                                            (FINANCE_ADMIN, BILLING_OPERATOR, REVENUE_ACCOUNTANT, AUDITOR))
    assert {"contracts.publish_planversion", "api.add_apikey", "api.revoke_apikey", "auth.view_user",
            "customers.delete_contact", "usage.change_meter"} <= admin
    assert "auth.change_user" not in admin
    assert {"customers.add_customer", "customers.change_customer", "customers.archive_customer",
            "contracts.add_subscription", "contracts.manage_subscription_lifecycle",
            "contracts.manage_contract_lifecycle", "contracts.view_plan", "contracts.view_planversion",
            "usage.view_meter"} <= operator
    assert not {p for p in operator if p.startswith("api.")}
    assert not {"contracts.publish_planversion", "contracts.archive_planversion", "contracts.change_plan",
                "contracts.change_planversion", "contracts.add_plan", "usage.change_meter"} & operator
    # Reads everything; beyond reading: downloading the receivables reports, and keeping the revenue books
    # (chart, SSPs, revenue rules, deliveries, modifications, recognition runs, period closes) -- nothing else.
    revenue_books = {"revrec.add_account", "revrec.change_account", "revrec.add_standalonesellingprice",
                     "revrec.change_standalonesellingprice", "revrec.add_productrevenuerule",
                     "revrec.change_productrevenuerule", "revrec.add_contractmodification",
                     "revrec.change_contractmodification", "revrec.change_performanceobligation",
                     "revrec.close_accountingperiod", "revrec.run_recognition"}
    assert revenue_books <= accountant
    beyond_reading = {"invoicing.export_receivable"} | revenue_books
    assert all(p.split(".")[1].startswith("view_") for p in accountant - beyond_reading)
    assert not {p for p in accountant if p.startswith("revrec.delete_")}
    # Operators read the ledger (what their invoices and payments posted) and do nothing else there.
    assert {"revrec.view_journalentry", "revrec.view_accountingperiod"} <= operator
    assert all(p.split(".")[1].startswith("view_") for p in operator if p.startswith("revrec."))
    assert "revrec.close_accountingperiod" not in auditor and "revrec.run_recognition" not in auditor
    assert "invoicing.export_receivable" in accountant and "invoicing.export_receivable" not in auditor
    assert {"customers.view_customer", "contracts.view_subscription", "usage.view_meter"} <= accountant
    assert all(p.split(".")[1].startswith("view_") for p in auditor)
    assert {"customers.view_historicalcustomer", "auth.view_user", "api.view_apikey",
            "admin.view_logentry"} <= auditor


def test_auditor_reads_everything_but_cannot_add_change_or_act(book):
    client = client_for(AUDITOR)
    customers = client.get(reverse("admin:customers_customer_changelist"))
    assert customers.status_code == 200
    assert customers.context["action_form"] is None  # no actions at all
    subscriptions = client.get(reverse("admin:contracts_subscription_changelist"))
    assert subscriptions.status_code == 200
    assert subscriptions.context["action_form"] is None
    assert client.get(reverse("admin:customers_customer_change", args=[book.customer.pk])).status_code == 200
    assert client.get(reverse("admin:customers_customer_history", args=[book.customer.pk])).status_code == 200
    assert client.get(reverse("admin:customers_customer_add")).status_code == 403
    assert client.get(reverse("admin:contracts_subscription_add")).status_code == 403

    response = client.post(reverse("admin:customers_customer_change", args=[book.customer.pk]),
                           {"name": "Renamed by auditor"})
    assert response.status_code == 403
    # The history "revert" form cannot be used to write either.
    record = book.customer.history.first()
    revert = client.post(reverse("admin:customers_customer_simple_history",
                                 args=[book.customer.pk, record.history_id]), {"name": "Reverted"})
    assert revert.status_code == 403
    # Posting an action by hand does nothing.
    client.post(reverse("admin:contracts_subscription_changelist"),
                {"action": "pause", "_selected_action": [book.subscription.pk]})
    assert Subscription.objects.get(pk=book.subscription.pk).status == Subscription.Status.ACTIVE
    assert Customer.objects.get(pk=book.customer.pk).name == "Acme Group"
    assert client.get(reverse("admin:customers_customer_import")).status_code == 403


def test_billing_operator_runs_subscriptions_but_cannot_publish_plans(book):
    client = client_for(BILLING_OPERATOR)
    subscriptions = client.get(reverse("admin:contracts_subscription_changelist"))
    actions = {name for name, _ in subscriptions.context["action_form"].fields["action"].choices}
    assert {"pause", "resume", "cancel_now", "change_plan_action"} <= actions

    versions = client.get(reverse("admin:contracts_planversion_changelist"))
    assert versions.status_code == 200
    assert versions.context["action_form"] is None  # neither publish, archive nor copy

    client.post(reverse("admin:contracts_planversion_changelist"),
                {"action": "publish_versions", "_selected_action": [book.draft.pk]})
    assert PlanVersion.objects.get(pk=book.draft.pk).status == PlanVersion.Status.DRAFT

    # The catalog is read only for the operator.
    assert client.get(reverse("admin:contracts_plan_add")).status_code == 403
    draft_page = client.get(reverse("admin:contracts_planversion_change", args=[book.draft.pk]))
    assert draft_page.status_code == 200
    assert not draft_page.context["adminform"].form.fields
    assert client.get(reverse("admin:contracts_plan_import")).status_code == 403

    client.post(reverse("admin:contracts_subscription_changelist"),
                {"action": "pause", "_selected_action": [book.subscription.pk]})
    assert Subscription.objects.get(pk=book.subscription.pk).status == Subscription.Status.PAUSED

    assert client.get(reverse("admin:customers_customer_add")).status_code == 200
    assert client.get(reverse("admin:customers_customer_import")).status_code == 200
    assert not client.user.has_perm("api.view_apikey")
    assert not client.user.has_perm("api.add_apikey")


def test_revenue_accountant_views_but_cannot_change_customers(book):
    client = client_for(REVENUE_ACCOUNTANT)
    assert client.get(reverse("admin:customers_customer_changelist")).status_code == 200
    page = client.get(reverse("admin:customers_customer_change", args=[book.customer.pk]))
    assert page.status_code == 200
    assert not page.context["adminform"].form.fields
    response = client.post(reverse("admin:customers_customer_change", args=[book.customer.pk]), {"name": "X"})
    assert response.status_code == 403
    assert client.get(reverse("admin:customers_customer_add")).status_code == 403
    assert client.get(reverse("admin:contracts_subscription_changelist")).context["action_form"] is None
    assert Customer.objects.get(pk=book.customer.pk).name == "Acme Group"


def test_finance_admin_publishes_a_plan_version(book):
    client = client_for(FINANCE_ADMIN)
    response = client.post(reverse("admin:contracts_planversion_changelist"),
                           {"action": "publish_versions", "_selected_action": [book.draft.pk]}, follow=True)
    assert PlanVersion.objects.get(pk=book.draft.pk).status == PlanVersion.Status.PUBLISHED
    assert any("Published 1 plan version" in m for m in messages_of(response))


@pytest.mark.parametrize("role", [FINANCE_ADMIN, BILLING_OPERATOR, REVENUE_ACCOUNTANT, AUDITOR])
def test_every_role_gets_the_admin_index(book, role):
    response = client_for(role).get(reverse("admin:index"))
    assert response.status_code == 200
    labels = {app["app_label"] for app in response.context["app_list"]}
    assert {"customers", "contracts", "usage"} <= labels


def test_finance_admin_sees_users_and_api_keys_but_does_not_manage_users(book):
    client = client_for(FINANCE_ADMIN)
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 200
    assert client.get(reverse("admin:auth_user_add")).status_code == 403
    assert client.get(reverse("admin:api_apikey_changelist")).status_code == 200
    assert client.get(reverse("admin:api_apikey_add")).status_code == 200
    operator = client_for(BILLING_OPERATOR)
    assert operator.get(reverse("admin:api_apikey_changelist")).status_code == 403
    assert operator.get(reverse("admin:auth_user_changelist")).status_code == 403
