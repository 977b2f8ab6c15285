"""One error shape for every 4xx, with field paths that say what and where."""

import json

import pytest

from contracts.models import Plan, Product
from customers.models import Customer
from tests.api.conftest import error_of
from tests.factories import CustomerFactory, MeterFactory, ProductFactory

pytestmark = pytest.mark.django_db


def customer_payload(**overrides):
    payload = {"external_id": "cus_1", "billing_entity": "acme-us", "name": "Initech", "country": "US"}
    payload.update(overrides)
    return payload


def test_unknown_path_is_a_json_404(api):
    for path in ("/api/v1/nothing-here", "/api/v1/customers/", "/api/v1/customers/a/b/c"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "not_found"


def test_unknown_path_is_a_404_for_writes_too_never_a_csrf_page(api):
    response = api.post("/api/v1/nothing-here", {"a": 1}, format="json")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    response = api.post("/api/v1/products/", {"code": "p", "name": "P"}, format="json")
    assert "no trailing slash" in error_of(response)["message"]


def test_unknown_resource_is_a_json_404(api, entity):
    response = api.get("/api/v1/customers/nobody")
    assert response.status_code == 404
    assert error_of(response) == {"code": "not_found", "message": "Not found.", "fields": {}}
    assert api.get("/api/v1/customers/nobody/contacts").status_code == 404
    assert api.get("/api/v1/plans/none/versions/1").status_code == 404


def test_method_not_allowed_is_405(api, entity):
    response = api.delete("/api/v1/billing-entities/acme-us")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert api.put("/api/v1/products", {}, format="json").status_code == 405


def test_non_json_body_is_415(api, entity):
    response = api.post("/api/v1/customers", "external_id=x&name=y", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    response = api.post("/api/v1/customers", "<customer/>", content_type="text/xml")
    assert response.status_code == 415
    assert not Customer.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        '{"external_id": "cus_1",',  # truncated
        "{'external_id': 'cus_1'}",  # not JSON
        '{"name": NaN}',  # NaN is not JSON
        '{"name": "a", "name": "b"}',  # duplicate keys
        '{"name": "nul \\u0000 byte"}',  # PostgreSQL cannot store it
        "[" * 100_000 + "]" * 100_000,  # nested beyond any reason
        b"\xff\xfe{}",  # not UTF-8
    ],
)
def test_malformed_json_is_a_400_parse_error(api, entity, body):
    response = api.post("/api/v1/customers", body, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"


def test_oversized_body_is_413(api, entity, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    body = json.dumps(customer_payload(legal_name="x" * 5_000))
    response = api.post("/api/v1/customers", body, content_type="application/json")
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    assert not Customer.objects.exists()


def test_validation_error_lists_every_field(api, entity):
    response = api.post(
        "/api/v1/customers",
        {"external_id": "has space", "billing_entity": "nope", "country": "XX", "currency": "ZZZ",
         "timezone": "Mars/Olympus_Mons", "payment_terms_days": "soon", "billing_emails": ["ok@example.test", "no"]},
        format="json",
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    fields = error["fields"]
    assert set(fields) >= {
        "external_id", "billing_entity", "name", "country", "currency", "timezone", "payment_terms_days",
        "billing_emails[1]",
    }
    assert "ISO 4217" in fields["currency"][0]
    assert "IANA" in fields["timezone"][0]
    assert "ISO 3166" in fields["country"][0]
    assert fields["payment_terms_days"] == ["A valid integer is required."]
    assert "billing_emails[0]" not in fields


def test_wrong_types_are_reported_per_field(api, entity):
    response = api.post(
        "/api/v1/customers",
        customer_payload(name=["a list"], tax_exempt="perhaps", metadata="not an object", billing_emails="a@b.c"),
        format="json",
    )
    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert set(fields) == {"name", "tax_exempt", "metadata", "billing_emails"}
    assert fields["metadata"] == ["Must be a JSON object."]


def test_body_that_is_not_an_object_is_a_validation_error(api, entity):
    response = api.post("/api/v1/customers", [customer_payload()], format="json")
    assert response.status_code == 400
    assert "non_field_errors" in error_of(response)["fields"]


def test_unknown_fields_are_refused_not_ignored(api, entity):
    response = api.post("/api/v1/customers", customer_payload(nmae="typo", currnecy="USD"), format="json")
    assert response.status_code == 400
    assert error_of(response)["fields"] == {"nmae": ["Unknown field."], "currnecy": ["Unknown field."]}
    assert not Customer.objects.exists()


def test_domain_rule_errors_come_back_in_the_same_shape(api, entity):
    parent = CustomerFactory(external_id="parent", billing_entity=entity, currency="EUR")
    response = api.post(
        "/api/v1/customers", customer_payload(parent="parent", invoice_to_parent=True), format="json"
    )
    assert response.status_code == 400
    assert "invoice_to_parent" in error_of(response)["fields"]
    assert parent.children.count() == 0


def test_bad_tier_structure_is_reported_at_its_path(api):
    ProductFactory(code="api")
    MeterFactory(code="calls")
    assert api.post(
        "/api/v1/plans",
        {"code": "pro", "name": "Pro", "product": "api", "currency": "USD", "interval": "month"},
        format="json",
    ).status_code == 201
    response = api.post(
        "/api/v1/plans/pro/versions/1/charges",
        {
            "meter": "calls",
            "charge_model": "graduated",
            "properties": {"tiers": [
                {"up_to": "1000", "unit_price": "0"},
                {"up_to": "500", "unit_price": "abc"},
                {"up_to": None, "unit_price": "0.001", "colour": "red"},
            ]},
        },
        format="json",
    )
    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert set(fields) == {"properties.tiers[1].up_to", "properties.tiers[1].unit_price", "properties.tiers[2].colour"}
    assert "greater than the previous" in fields["properties.tiers[1].up_to"][0]
    assert not Plan.objects.get(code="pro").versions.get().charges.exists()


def test_money_amounts_are_validated(api):
    ProductFactory(code="api")
    response = api.post(
        "/api/v1/plans",
        {"code": "p", "name": "P", "product": "api", "currency": "USD", "interval": "month",
         "base_fee": {"amount": "1e400", "currency": "USD"},
         "minimum_commitment": {"amount": "10.0000000000001", "currency": "usd"}},
        format="json",
    )
    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert set(fields) == {"base_fee.amount", "minimum_commitment.amount"}
    response = api.post(
        "/api/v1/plans",
        {"code": "p", "name": "P", "product": "api", "currency": "USD", "interval": "month",
         "base_fee": {"amount": "49.00", "currency": "EUR"}},
        format="json",
    )
    assert response.status_code == 400
    assert error_of(response)["fields"] == {"base_fee": ["Must be in USD, not EUR."]}
    assert not Plan.objects.exists()


@pytest.mark.parametrize(
    "hostile",
    [
        "'; DROP TABLE customers_customer; --",
        "<script>alert(1)</script>",
        "Robert\u202e\u0000",  # NUL is refused below; the rest is stored as given
        "😀" * 50,
        "../../../etc/passwd",
        "%s%s%n",
    ],
)
def test_hostile_strings_are_data_not_code(api, entity, hostile):
    name = hostile.replace("\u0000", "")
    response = api.post("/api/v1/customers", customer_payload(name=name, metadata={"note": name}), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["name"] == name
    assert response["Content-Type"] == "application/json"
    fetched = api.get("/api/v1/customers/cus_1").json()
    assert fetched["name"] == name and fetched["metadata"] == {"note": name}
    # A hostile filter or search is a value to look for, not SQL.
    assert api.get("/api/v1/customers", {"search": hostile.replace("\u0000", "")}).status_code == 200
    assert api.get("/api/v1/customers", {"country": "US' OR 1=1 --"}).json()["count"] == 0
    assert Customer.objects.count() == 1


def test_nul_characters_in_query_parameters_are_400(api, entity):
    for params in ({"search": "a\x00b"}, {"country": "\x00"}, {"ordering": "name\x00"}):
        response = api.get("/api/v1/customers", params)
        assert response.status_code == 400, params
        assert error_of(response)["code"] == "validation_error"
    assert api.get("/api/v1/customers/acme/entitlements", {"on": "\x00"}).status_code in (400, 404)
    assert api.get("/api/v1/customers", {"search": "plain"}).status_code == 200


def test_hostile_keys_and_lookups(api, entity):
    response = api.post("/api/v1/customers", customer_payload(**{"x" * 10_000: 1}), format="json")
    assert response.status_code == 400
    [key] = error_of(response)["fields"]
    assert len(key) <= 100
    assert api.get("/api/v1/customers/" + "%27%20OR%201=1").status_code == 404
    response = api.post("/api/v1/customers", customer_payload(name="x" * 201), format="json")
    assert error_of(response)["fields"] == {"name": ["Ensure this field has no more than 200 characters."]}


def test_integer_overflow_and_out_of_range_values_are_400(api, entity):
    response = api.post("/api/v1/customers", customer_payload(payment_terms_days=10**30), format="json")
    assert response.status_code == 400
    assert "payment_terms_days" in error_of(response)["fields"]
    assert not Product.objects.exists()
