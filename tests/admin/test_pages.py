"""Every admin page of the domain apps renders for a superuser, without N+1 queries on the lists."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from contracts.models import (
    Charge,
    Contract,
    Coupon,
    Feature,
    FixedCharge,
    Plan,
    PlanVersion,
    Product,
    Subscription,
)
from contracts.services.subscriptions import create_subscription
from customers.models import BillingEntity, Customer
from tests.admin.support import ACTOR, client_for
from tests.factories import CustomerFactory
from usage.models import Meter

pytestmark = pytest.mark.django_db

ALL_MODELS = [BillingEntity, Customer, Product, Feature, Meter, Plan, PlanVersion, Charge, FixedCharge, Coupon,
              Contract, Subscription]
ADDABLE = [BillingEntity, Customer, Product, Feature, Meter, Plan, Coupon, Contract, Subscription]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def instance_of(book, model):
    return {
        BillingEntity: book.entity, Customer: book.customer, Product: book.product, Feature: book.feature,
        Meter: book.meter, Plan: book.plan, PlanVersion: book.published, Charge: book.charge,
        FixedCharge: book.fixed_charge, Coupon: book.coupon, Contract: book.contract, Subscription: book.subscription,
    }[model]


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m._meta.model_name)
def test_changelist_and_change_pages_render(book, model):
    client = client_for(superuser=True)
    listing = client.get(url(model, "changelist"))
    assert listing.status_code == 200
    assert listing.context["cl"].result_count >= 1
    obj = instance_of(book, model)
    change = client.get(url(model, "change", obj.pk))
    assert change.status_code == 200
    assert str(obj) in change.content.decode()


@pytest.mark.parametrize("model", ADDABLE, ids=lambda m: m._meta.model_name)
def test_add_pages_render(book, model):
    response = client_for(superuser=True).get(url(model, "add"))
    assert response.status_code == 200
    assert "adminform" in response.context


@pytest.mark.parametrize("model", [m for m in ALL_MODELS if hasattr(m, "history")], ids=lambda m: m._meta.model_name)
def test_history_pages_render(book, model):
    obj = instance_of(book, model)
    response = client_for(superuser=True).get(url(model, "history", obj.pk))
    assert response.status_code == 200


def test_draft_version_page_has_editable_price_inlines_and_published_has_none(book):
    client = client_for(superuser=True)
    draft = client.get(url(PlanVersion, "change", book.draft.pk))
    published = client.get(url(PlanVersion, "change", book.published.pk))
    assert draft.status_code == published.status_code == 200
    assert "base_fee" in draft.context["adminform"].form.fields
    assert not published.context["adminform"].form.fields  # every field read only
    # A draft's inline formsets accept new rows; a published version's do not.
    assert [f.formset.max_num > 0 and f.has_add_permission for f in draft.context["inline_admin_formsets"]] == [
        True, True, True
    ]
    assert not any(f.has_add_permission or f.has_change_permission for f in published.context["inline_admin_formsets"])


def test_subscription_change_page_edits_only_metadata(book):
    response = client_for(superuser=True).get(url(Subscription, "change", book.subscription.pk))
    assert list(response.context["adminform"].form.fields) == ["metadata"]
    body = response.content.decode()
    assert "current period" in body.lower()


def test_plan_version_autocomplete_for_subscriptions_offers_published_versions_only(book):
    response = client_for(superuser=True).get(
        reverse("admin:autocomplete"),
        {"app_label": "contracts", "model_name": "subscription", "field_name": "plan_version", "term": "starter"},
    )
    assert response.status_code == 200
    ids = {int(r["id"]) for r in response.json()["results"]}
    assert ids == {book.published.pk}


@pytest.mark.parametrize(
    ("model", "extra"),
    [(Customer, "customers"), (Subscription, "subscriptions")],
)
def test_changelists_do_not_query_per_row(book, model, extra):
    client = client_for(superuser=True)
    client.get(url(model, "changelist"))  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url(model, "changelist")).status_code == 200
    for n in range(6):
        customer = CustomerFactory(billing_entity=book.entity, parent=book.customer)
        if model is Subscription:
            create_subscription(customer=customer, plan_version=book.published, actor=ACTOR, now=timezone.now(),
                                quantity=Decimal(n + 1))
    with CaptureQueriesContext(connection) as many:
        assert client.get(url(model, "changelist")).status_code == 200
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


@pytest.mark.parametrize(
    ("model", "import_", "export"),
    [(Customer, True, True), (Subscription, True, True), (Plan, True, False), (Contract, False, False)],
    ids=lambda v: v._meta.model_name if hasattr(v, "_meta") else str(v),
)
def test_changelists_offer_import_and_export_where_they_exist(book, model, import_, export):
    body = client_for(superuser=True).get(url(model, "changelist")).content.decode()
    base = url(model, "changelist")
    assert (f"{base}import/" in body) is import_
    assert (f"{base}export/" in body) is export
