"""Users in the finance roles, and a small but complete book of records for admin and import tests."""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from billing.actors import Actor
from billing.roles import sync_roles
from contracts.models import Coupon, PlanVersion
from contracts.services.catalog import (
    add_charge,
    add_fixed_charge,
    create_plan,
    create_plan_version,
    publish_plan_version,
    set_entitlement,
)
from contracts.services.contracts import add_commitment, create_contract, set_contract_entitlement, set_contract_price
from contracts.services.subscriptions import create_subscription
from tests.factories import (
    BillingEntityFactory,
    ContactFactory,
    CouponFactory,
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    ProductFactory,
    UserFactory,
)

ACTOR = Actor.system("test setup")


def client_for(role: str | None = None, *, superuser: bool = False, username: str | None = None) -> Client:
    """A test client logged in as a staff user in `role` (a group name from billing.roles)."""
    sync_roles()  # idempotent; also repairs groups if another test flushed the database
    user = UserFactory(username=username or (role or "root").lower().replace(" ", "_"), is_superuser=superuser)
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    client.user = user  # type: ignore[attr-defined]
    return client


@dataclass
class Book:
    entity: Any
    eu_entity: Any
    customer: Any
    contact: Any
    product: Any
    feature: Any
    meter: Any
    storage: Any
    plan: Any
    published: PlanVersion
    draft: PlanVersion
    bigger: PlanVersion
    charge: Any
    fixed_charge: Any
    coupon: Coupon
    contract: Any
    subscription: Any


def build_book() -> Book:
    now = timezone.now()
    entity = BillingEntityFactory(code="acme-us", default_currency="USD")
    eu_entity = BillingEntityFactory(code="acme-eu", default_currency="EUR", country="DE", timezone="Europe/Berlin")
    customer = CustomerFactory(billing_entity=entity, external_id="acme-group", name="Acme Group")
    contact = ContactFactory(customer=customer)
    product = ProductFactory(code="platform", name="Platform")
    feature = FeatureFactory(code="sso", name="Single sign-on")
    meter = MeterFactory(code="api_calls", name="API calls")
    storage = MeterFactory(code="storage_gb", name="Storage", aggregation="max", field_name="gb")

    plan = create_plan(code="starter", name="Starter", product=product, currency="USD", interval="month",
                       actor=ACTOR, base_fee=Decimal("49.00"))
    version = plan.versions.get()
    charge = add_charge(version, actor=ACTOR, meter=meter, charge_model="standard",
                        properties={"unit_price": "0.0000015"}, display_name="API calls")
    fixed_charge = add_fixed_charge(version, actor=ACTOR, code="support", name="Premium support", amount="50")
    set_entitlement(version, actor=ACTOR, feature=feature)
    published = publish_plan_version(version, actor=ACTOR, now=now)
    draft = create_plan_version(plan, actor=ACTOR)

    big_plan = create_plan(code="scale", name="Scale", product=product, currency="USD", interval="month",
                           actor=ACTOR, base_fee=Decimal("199.00"))
    bigger = publish_plan_version(big_plan.versions.get(), actor=ACTOR, now=now)

    coupon = CouponFactory(code="LAUNCH10")
    contract = create_contract(customer=customer, reference="CT-0001", start_date=date(2024, 1, 1), actor=ACTOR,
                               name="Master agreement")
    set_contract_price(contract, actor=ACTOR, target="base_fee", plan_version=published, amount=Decimal("45.00"))
    add_commitment(contract, actor=ACTOR, kind="minimum_spend", amount=Decimal("1000.00"))
    set_contract_entitlement(contract, actor=ACTOR, feature=feature, enabled=True)
    subscription = create_subscription(customer=customer, plan_version=published, actor=ACTOR, now=now,
                                       external_id="sub-acme-1", contract=contract, quantity=Decimal(3))
    return Book(entity, eu_entity, customer, contact, product, feature, meter, storage, plan, published,
                PlanVersion.objects.get(pk=draft.pk), bigger, charge, fixed_charge, coupon, contract, subscription)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []
