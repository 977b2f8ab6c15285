"""Billing entities, customers (by external_id), contacts; pagination, filtering, search, ordering."""

import pytest

from customers.models import BillingEntity, Contact, Customer
from tests.api.conftest import error_of
from tests.factories import BillingEntityFactory, ContactFactory, CustomerFactory

pytestmark = pytest.mark.django_db


ENTITY = {
    "code": "acme-eu",
    "name": "Acme Europe",
    "legal_name": "Acme Europe GmbH",
    "country": "DE",
    "default_currency": "EUR",
    "timezone": "Europe/Berlin",
    "invoice_prefix": "EU",
    "credit_note_prefix": "EUCN",
}


def test_create_read_update_a_billing_entity(api):
    response = api.post("/api/v1/billing-entities", ENTITY, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["code"] == "acme-eu" and body["timezone"] == "Europe/Berlin" and body["default_currency"] == "EUR"
    assert body["default_payment_terms_days"] == 30
    response = api.patch("/api/v1/billing-entities/acme-eu", {"default_payment_terms_days": 14}, format="json")
    assert response.status_code == 200
    assert BillingEntity.objects.get(code="acme-eu").default_payment_terms_days == 14
    assert api.get("/api/v1/billing-entities/acme-eu").json()["default_payment_terms_days"] == 14


def test_billing_entity_code_is_fixed_and_prefixes_must_differ(api):
    api.post("/api/v1/billing-entities", ENTITY, format="json")
    response = api.patch("/api/v1/billing-entities/acme-eu", {"code": "renamed"}, format="json")
    assert response.status_code == 400
    assert error_of(response)["fields"] == {"code": ["Cannot be changed after creation."]}
    # Sending the unchanged code back (a round-tripped representation) is fine.
    assert api.patch("/api/v1/billing-entities/acme-eu", {"code": "acme-eu"}, format="json").status_code == 200
    response = api.post(
        "/api/v1/billing-entities",
        {**ENTITY, "code": "other", "invoice_prefix": "SAME", "credit_note_prefix": "SAME"},
        format="json",
    )
    assert response.status_code == 400
    assert BillingEntity.objects.count() == 1


def test_create_customer_with_contacts_and_read_it_by_external_id(api, entity):
    payload = {
        "external_id": "cus_acme.42",
        "billing_entity": "acme-us",
        "name": "Initech",
        "country": "us",
        "billing_emails": ["ap@initech.example"],
        "metadata": {"crm_id": "0015g", "score": 1.5, "seats": 10},
        "contacts": [{"name": "Pat", "email": "pat@initech.example", "role": "billing"}],
    }
    response = api.post("/api/v1/customers", payload, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["currency"] == "USD"  # the billing entity's
    assert body["country"] == "US"
    assert body["legal_name"] == "Initech"
    assert body["status"] == "active"
    assert body["metadata"] == {"crm_id": "0015g", "score": 1.5, "seats": 10}
    assert [c["email"] for c in body["contacts"]] == ["pat@initech.example"]
    fetched = api.get("/api/v1/customers/cus_acme.42")
    assert fetched.status_code == 200 and fetched.json() == body


def test_update_customer_and_its_immutable_external_id(api, entity):
    CustomerFactory(external_id="c1", billing_entity=entity)
    response = api.patch("/api/v1/customers/c1", {"name": "New name", "tax_id": "US123"}, format="json")
    assert response.status_code == 200
    assert Customer.objects.get(external_id="c1").name == "New name"
    response = api.patch("/api/v1/customers/c1", {"external_id": "c2"}, format="json")
    assert error_of(response)["fields"] == {"external_id": ["Cannot be changed after creation."]}
    response = api.patch("/api/v1/customers/c1", {"contacts": []}, format="json")
    assert "contacts" in error_of(response)["fields"]


def test_parent_is_named_by_external_id_and_cycles_are_refused(api, entity):
    CustomerFactory(external_id="group", billing_entity=entity)
    response = api.post(
        "/api/v1/customers",
        {"external_id": "sub", "billing_entity": "acme-us", "name": "Sub", "country": "US", "parent": "group",
         "invoice_to_parent": True},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["parent"] == "group"
    response = api.patch("/api/v1/customers/group", {"parent": "sub"}, format="json")
    assert response.status_code == 400
    assert "cycle" in error_of(response)["fields"]["parent"][0]
    response = api.patch("/api/v1/customers/sub", {"parent": "nobody"}, format="json")
    assert "parent" in error_of(response)["fields"]


def test_archive_customer(api, entity):
    CustomerFactory(external_id="c1", billing_entity=entity)
    response = api.patch("/api/v1/customers/c1", {"status": "archived"}, format="json")
    assert "archive" in error_of(response)["fields"]["status"][0]
    assert api.patch("/api/v1/customers/c1", {"status": "active", "name": "Same"}, format="json").status_code == 200
    response = api.post("/api/v1/customers/c1/archive")
    assert response.status_code == 200
    assert response.json()["status"] == "archived"
    assert Customer.objects.get(external_id="c1").status == "archived"


def test_contacts_sub_resource(api, entity):
    customer = CustomerFactory(external_id="c1", billing_entity=entity)
    other = ContactFactory(customer=CustomerFactory(billing_entity=entity))
    response = api.post(
        "/api/v1/customers/c1/contacts", {"name": "Sam", "email": "sam@example.test", "role": "technical"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    contact_id = response.json()["id"]
    listed = api.get("/api/v1/customers/c1/contacts").json()
    assert [c["id"] for c in listed["results"]] == [contact_id]
    assert api.get(f"/api/v1/customers/c1/contacts/{other.pk}").status_code == 404  # another customer's
    response = api.patch(f"/api/v1/customers/c1/contacts/{contact_id}", {"email": "not-an-email"}, format="json")
    assert response.status_code == 400 and "email" in error_of(response)["fields"]
    response = api.patch(f"/api/v1/customers/c1/contacts/{contact_id}", {"phone": "+1 555 0100"}, format="json")
    assert response.json()["phone"] == "+1 555 0100"
    duplicate = api.post(
        "/api/v1/customers/c1/contacts", {"name": "Sam 2", "email": "sam@example.test", "role": "technical"},
        format="json",
    )
    assert duplicate.status_code == 400
    assert api.delete(f"/api/v1/customers/c1/contacts/{contact_id}").status_code == 204
    assert not customer.contacts.exists()
    assert Contact.objects.filter(pk=other.pk).exists()


def test_pagination(api, entity):
    for n in range(7):
        CustomerFactory(external_id=f"c{n}", name=f"Customer {n}", billing_entity=entity)
    page = api.get("/api/v1/customers", {"page_size": 3, "ordering": "external_id"}).json()
    assert page["count"] == 7
    assert [c["external_id"] for c in page["results"]] == ["c0", "c1", "c2"]
    assert page["next"] and page["previous"] is None
    last = api.get("/api/v1/customers", {"page_size": 3, "page": 3, "ordering": "external_id"}).json()
    assert [c["external_id"] for c in last["results"]] == ["c6"] and last["next"] is None
    response = api.get("/api/v1/customers", {"page": 99})
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    # The page size is capped at 500.
    assert len(api.get("/api/v1/customers", {"page_size": 100_000}).json()["results"]) == 7


def test_page_size_ceiling_is_500(api, entity):
    Customer.objects.bulk_create(
        [Customer(billing_entity=entity, external_id=f"bulk{n:04d}", name=f"B{n}", country="US", currency="USD")
         for n in range(501)]
    )
    page = api.get("/api/v1/customers", {"page_size": 1000}).json()
    assert page["count"] == 501 and len(page["results"]) == 500


def test_filters_search_and_ordering(api, entity):
    eu = BillingEntityFactory(code="acme-eu", default_currency="EUR", country="DE")
    parent = CustomerFactory(external_id="parent", name="Zeta Group", billing_entity=entity)
    CustomerFactory(external_id="child", name="Alpha Child", billing_entity=entity, parent=parent)
    CustomerFactory(external_id="berlin", name="Berliner", billing_entity=eu, country="DE", currency="EUR")
    CustomerFactory(external_id="gone", name="Gone Inc", billing_entity=entity, status="archived")

    def ids(**params):
        response = api.get("/api/v1/customers", params)
        assert response.status_code == 200, response.json()
        return [c["external_id"] for c in response.json()["results"]]

    assert ids(billing_entity="acme-eu") == ["berlin"]
    assert ids(country="DE") == ["berlin"]
    assert ids(currency="eur") == ["berlin"]
    assert ids(status="archived") == ["gone"]
    assert ids(parent="parent") == ["child"]
    assert ids(search="berlin") == ["berlin"]
    assert ids(ordering="name", billing_entity="acme-us") == ["child", "gone", "parent"]
    assert ids(ordering="-name", billing_entity="acme-us") == ["parent", "gone", "child"]
    response = api.get("/api/v1/customers", {"status": "sleeping"})
    assert response.status_code == 400 and "status" in error_of(response)["fields"]
