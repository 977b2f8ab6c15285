"""factory-boy factories shared by every test module. They build rows directly; lifecycle tests go
through the services instead, so that the rules under test are the services' own."""

from datetime import UTC, date, datetime
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from djmoney.money import Money

from contracts.models import (
    Charge,
    Contract,
    Coupon,
    Feature,
    FixedCharge,
    Plan,
    PlanEntitlement,
    PlanVersion,
    Product,
)
from customers.models import BillingEntity, Contact, Customer
from usage.models import Meter


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.django.Password("correct-horse-battery-staple")
    is_staff = True


class BillingEntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BillingEntity

    code = factory.Sequence(lambda n: f"entity-{n}")
    name = factory.Sequence(lambda n: f"Seller {n}")
    legal_name = factory.LazyAttribute(lambda e: f"{e.name} Inc.")
    country = "US"
    default_currency = "USD"
    timezone = "America/New_York"
    invoice_prefix = factory.Sequence(lambda n: f"INV{n}")
    credit_note_prefix = factory.Sequence(lambda n: f"CN{n}")


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    billing_entity = factory.SubFactory(BillingEntityFactory)
    external_id = factory.Sequence(lambda n: f"cus_{n:05d}")
    name = factory.Sequence(lambda n: f"Customer {n}")
    legal_name = factory.LazyAttribute(lambda c: f"{c.name} LLC")
    billing_emails = factory.LazyAttribute(lambda c: [f"ap@{c.external_id.replace('_', '-')}.example.test"])
    country = "US"
    currency = factory.LazyAttribute(lambda c: str(c.billing_entity.default_currency))
    timezone = "America/New_York"


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    customer = factory.SubFactory(CustomerFactory)
    name = "Pat Payable"
    email = factory.Sequence(lambda n: f"contact{n}@example.test")


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    code = factory.Sequence(lambda n: f"product-{n}")
    name = factory.Sequence(lambda n: f"Product {n}")


class FeatureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feature

    code = factory.Sequence(lambda n: f"feature-{n}")
    name = factory.Sequence(lambda n: f"Feature {n}")


class MeterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Meter

    code = factory.Sequence(lambda n: f"meter-{n}")
    name = factory.Sequence(lambda n: f"Meter {n}")
    aggregation = Meter.Aggregation.COUNT


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    code = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.Sequence(lambda n: f"Plan {n}")
    product = factory.SubFactory(ProductFactory)
    currency = "USD"
    interval = "month"


class PlanVersionFactory(factory.django.DjangoModelFactory):
    """A published version (the usual state of a version customers subscribe to)."""

    class Meta:
        model = PlanVersion

    plan = factory.SubFactory(PlanFactory)
    version = factory.Sequence(lambda n: n + 1)
    status = PlanVersion.Status.PUBLISHED
    published_at = factory.LazyFunction(lambda: datetime(2024, 1, 1, tzinfo=UTC))
    base_fee = factory.LazyAttribute(lambda v: Money(Decimal("100.00"), str(v.plan.currency)))


class ChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charge

    plan_version = factory.SubFactory(PlanVersionFactory)
    meter = factory.SubFactory(MeterFactory)
    charge_model = Charge.Model.STANDARD
    properties = factory.LazyFunction(lambda: {"unit_price": "0.0010"})


class FixedChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FixedCharge

    plan_version = factory.SubFactory(PlanVersionFactory)
    code = factory.Sequence(lambda n: f"fixed-{n}")
    name = "Premium support"
    amount = factory.LazyAttribute(lambda f: Money(Decimal("50.00"), str(f.plan_version.plan.currency)))


class PlanEntitlementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanEntitlement

    plan_version = factory.SubFactory(PlanVersionFactory)
    feature = factory.SubFactory(FeatureFactory)


class CouponFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Coupon

    code = factory.Sequence(lambda n: f"COUPON{n}")
    name = "Launch discount"
    discount_type = Coupon.DiscountType.PERCENTAGE
    percent_off = Decimal("10")


class ContractFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contract

    customer = factory.SubFactory(CustomerFactory)
    reference = factory.Sequence(lambda n: f"CT-{n:05d}")
    currency = factory.LazyAttribute(lambda c: str(c.customer.currency))
    start_date = date(2024, 1, 1)
    status = Contract.Status.ACTIVE
