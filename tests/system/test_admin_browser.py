"""The admin in a real browser (Debian's Chromium through Playwright) against a live server."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from billing.actors import Actor
from contracts.models import Subscription, SubscriptionChange
from contracts.services.subscriptions import create_subscription
from tests.factories import CustomerFactory, PlanVersionFactory
from tests.system.conftest import RESULTS_DIR

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PASSWORD = "browser-test-password-9f2c"


def screenshot(page, name: str) -> Path:
    path = RESULTS_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_operator_logs_in_browses_customers_and_pauses_a_subscription(live_server, browser_page) -> None:
    get_user_model().objects.create_superuser("operator", "operator@example.test", PASSWORD)
    customer = CustomerFactory(name="Browser Test Industries", external_id="cus_browser")
    version = PlanVersionFactory(plan__code="browser-plan", plan__currency=str(customer.currency))
    subscription = create_subscription(
        customer=customer, plan_version=version, actor=Actor.system("tests"),
        now=timezone.now() - timedelta(days=40), external_id="sub_browser",
    )
    assert subscription.status == Subscription.Status.ACTIVE
    page = browser_page

    # Log in.
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#logout-form")
    assert "operator" in page.text_content("#user-tools").lower()

    # The customer list shows the customer.
    page.goto(f"{live_server.url}/admin/customers/customer/")
    assert page.locator("#result_list").get_by_text("Browser Test Industries").count() >= 1

    # Open the subscription.
    page.goto(f"{live_server.url}/admin/contracts/subscription/{subscription.pk}/change/")
    content = page.text_content("#content")
    assert "sub_browser" in content
    assert "Active" in content

    # Run a lifecycle action on it from the list.
    page.goto(f"{live_server.url}/admin/contracts/subscription/?q=sub_browser")
    page.check(f"input[name=_selected_action][value='{subscription.pk}']")
    page.select_option("select[name=action]", "pause")
    page.click("button[name=index]")
    page.wait_for_selector("ul.messagelist")
    message = page.text_content("ul.messagelist")
    screenshot(page, "admin-subscription-paused")

    subscription.refresh_from_db()
    assert subscription.status == Subscription.Status.PAUSED, message
    change = subscription.changes.get(action=SubscriptionChange.Action.PAUSE)
    assert change.actor_label == "user:operator"

    # The change page now shows the new status and the recorded change.
    page.goto(f"{live_server.url}/admin/contracts/subscription/{subscription.pk}/change/")
    assert "Paused" in page.text_content("#content")
    screenshot(page, "admin-subscription-change-page")


def test_admin_static_files_are_served(live_server, browser_page) -> None:
    # The login page is styled: the admin stylesheet loads (a broken static setup shows an unstyled page).
    responses = []
    browser_page.on("response", lambda response: responses.append(response))
    browser_page.goto(f"{live_server.url}/admin/login/")
    css = [r for r in responses if r.url.endswith("/admin/css/base.css")]
    assert css and css[0].status == 200
    screenshot(browser_page, "admin-login")
