import pytest
from django.core.exceptions import ValidationError

from customers.models import Customer
from customers.services import archive_customer, create_customer, update_customer
from tests.factories import BillingEntityFactory, CustomerFactory, PlanVersionFactory

pytestmark = pytest.mark.django_db


def new(actor, **kw):
    kw.setdefault("billing_entity", BillingEntityFactory())
    kw.setdefault("external_id", "acme")
    kw.setdefault("name", "Acme")
    kw.setdefault("country", "US")
    return create_customer(actor=actor, **kw)


def test_defaults_come_from_the_billing_entity(actor):
    customer = new(actor, contacts=[{"name": "AP", "email": "ap@acme.test"}])
    assert (customer.currency, customer.legal_name, customer.effective_payment_terms_days) == ("USD", "Acme", 30)
    assert customer.contacts.get().email == "ap@acme.test"
    assert customer.history.latest().history_change_reason == "system:tests"


def test_every_field_error_is_reported_with_its_name(actor):
    with pytest.raises(ValidationError) as info:
        new(actor, external_id="bad id!", billing_emails=["ok@x.test", "nope"], timezone="Mars/Olympus",
            tax_exempt=True, country="XX")
    errors = info.value.message_dict
    assert {"external_id", "timezone", "country"} <= set(errors)
    assert Customer.objects.count() == 0


def test_business_rules(actor):
    parent = new(actor, external_id="parent")
    with pytest.raises(ValidationError) as info:
        new(actor, external_id="c1", billing_emails=["ok@x.test", "nope"])
    assert "billing_emails[1]" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        new(actor, external_id="c2", tax_exempt=True)
    assert "needs the reason" in info.value.message_dict["tax_exemption_reason"][0]
    with pytest.raises(ValidationError, match="same billing entity"):
        new(actor, external_id="c3", parent=parent, invoice_to_parent=True, billing_entity=BillingEntityFactory())
    with pytest.raises(ValidationError, match="currency"):
        new(actor, external_id="c4", parent=parent, invoice_to_parent=True, billing_entity=parent.billing_entity,
            currency="EUR")
    child = new(actor, external_id="child", parent=parent, invoice_to_parent=True, billing_entity=parent.billing_entity)
    assert child.invoiced_customer == parent


def test_hierarchy_cycles_are_refused(actor):
    a = new(actor, external_id="a")
    b = new(actor, external_id="b", parent=a, billing_entity=a.billing_entity)
    c = new(actor, external_id="c", parent=b, billing_entity=a.billing_entity)
    with pytest.raises(ValidationError, match="cycle"):
        update_customer(a, actor=actor, parent=c)
    with pytest.raises(ValidationError):
        update_customer(a, actor=actor, parent=a)


def test_external_id_is_immutable_and_currency_locked_once_subscribed(actor, now):
    from contracts.services.subscriptions import create_subscription

    customer = CustomerFactory()
    with pytest.raises(ValidationError, match="external id"):
        update_customer(customer, actor=actor, external_id="other")
    create_subscription(customer=customer, plan_version=PlanVersionFactory(), actor=actor, now=now)
    with pytest.raises(ValidationError, match="cannot change currency"):
        update_customer(customer, actor=actor, currency="EUR")
    assert update_customer(customer, actor=actor, name="Renamed").name == "Renamed"


def test_archive_needs_no_live_subscriptions(actor, now):
    from contracts.services.subscriptions import cancel_subscription, create_subscription

    customer = CustomerFactory()
    sub = create_subscription(customer=customer, plan_version=PlanVersionFactory(), actor=actor, now=now)
    with pytest.raises(ValidationError, match="live subscriptions"):
        archive_customer(customer, actor=actor)
    cancel_subscription(sub, actor=actor, now=now)
    assert archive_customer(customer, actor=actor).status == "archived"
