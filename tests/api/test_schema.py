"""The OpenAPI document is complete enough for a generated client: it validates, with no generator warning."""

import json

import pytest
from django.core.management import call_command
from openapi_spec_validator import validate
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def test_schema_is_a_valid_openapi_document(schema):
    validate(schema)
    assert schema["openapi"] == "3.1.0"


def test_generation_has_no_warnings(tmp_path):
    # --fail-on-warn turns every "could not resolve" into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi:")


def test_security_scheme_and_error_responses(schema):
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schema["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }
    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    for path, operations in schema["paths"].items():
        assert path.startswith("/api/v1/"), path
        for method, operation in operations.items():
            assert operation["security"] == [{"ApiKeyAuth": []}], (method, path)
            responses = operation["responses"]
            assert {"401", "403", "429"} <= set(responses), (method, path)
            success = [code for code in responses if code.startswith("2")]
            assert len(success) == 1, (method, path)
            if method in ("post", "patch", "delete"):
                assert {"400", "409"} <= set(responses), (method, path)
                names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
                assert "Idempotency-Key" in names, (method, path)
            if success[0] != "204":
                assert "content" in responses[success[0]], (method, path)


def test_every_endpoint_the_brief_names_is_documented(schema):
    paths = schema["paths"]
    for path, method in [
        ("/api/v1/billing-entities", "post"),
        ("/api/v1/customers", "post"),
        ("/api/v1/customers/{external_id}", "patch"),
        ("/api/v1/customers/{customer_external_id}/contacts", "post"),
        ("/api/v1/customers/{customer_external_id}/entitlements", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/features", "post"),
        ("/api/v1/meters", "post"),
        ("/api/v1/plans", "post"),
        ("/api/v1/plans/{plan_code}/versions", "post"),
        ("/api/v1/plans/{plan_code}/versions/{version}/charges", "post"),
        ("/api/v1/plans/{plan_code}/versions/{version}/publish", "post"),
        ("/api/v1/coupons", "post"),
        ("/api/v1/contracts", "post"),
        ("/api/v1/contracts/{reference}/prices", "post"),
        ("/api/v1/contracts/{reference}/commitments", "post"),
        ("/api/v1/contracts/{reference}/renew", "post"),
        ("/api/v1/contracts/{reference}/cancel", "post"),
        ("/api/v1/subscriptions", "post"),
        ("/api/v1/subscriptions/{external_id}/change-plan", "post"),
        ("/api/v1/subscriptions/{external_id}/change-quantity", "post"),
        ("/api/v1/subscriptions/{external_id}/pause", "post"),
        ("/api/v1/subscriptions/{external_id}/resume", "post"),
        ("/api/v1/subscriptions/{external_id}/cancel", "post"),
        ("/api/v1/subscriptions/{external_id}/renew", "post"),
        ("/api/v1/subscriptions/{subscription_external_id}/changes", "get"),
        ("/api/v1/subscriptions/{subscription_external_id}/changes/{id}/revoke", "post"),
    ]:
        assert method in paths.get(path, {}), (method, path)
    money = schema["components"]["schemas"]["Money"]
    assert set(money["required"]) == {"amount", "currency"} and money["properties"]["amount"]["type"] == "string"


def test_docs_page_is_served():
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    # Served from our own static files, so the docs work on an install with no internet access.
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in response.content
    assert b"cdn." not in response.content.lower()
    redoc = APIClient().get("/api/redoc/")
    assert redoc.status_code == 200 and b"/static/drf_spectacular_sidecar/redoc/" in redoc.content


def _response_schema(schema: dict, path: str, method: str, status: int) -> dict:
    operation = schema["paths"][path][method]
    body = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    # Embedded next to the components, the document's "#/components/..." references resolve.
    return {**body, "components": schema["components"]}


def test_real_responses_match_their_documented_schemas(schema, api, entity):
    """What a generated client would parse: every response below is validated against the schema."""
    from openapi_schema_validator import OAS31Validator, oas31_format_checker
    from openapi_schema_validator import validate as validate_instance

    from tests.factories import ContactFactory, CustomerFactory, FeatureFactory, MeterFactory, ProductFactory

    customer = CustomerFactory(external_id="acme", billing_entity=entity, metadata={"k": [1, "x"]})
    ContactFactory(customer=customer)
    CustomerFactory(external_id="child", billing_entity=entity, parent=customer)
    ProductFactory(code="api")
    MeterFactory(code="calls")
    FeatureFactory(code="seats", kind="limit")
    FeatureFactory(code="sso", kind="switch")

    def check(method: str, url: str, path: str, status: int, body=None):
        response = getattr(api, method)(url, body, format="json") if body is not None else getattr(api, method)(url)
        assert response.status_code == status, (url, response.json())
        validate_instance(
            response.json(),
            _response_schema(schema, path, method, status),
            cls=OAS31Validator,
            format_checker=oas31_format_checker,  # dates, e-mails and links must be what they claim
        )
        return response.json()

    check("post", "/api/v1/plans", "/api/v1/plans", 201,
          {"code": "pro", "name": "Pro", "product": "api", "currency": "USD", "interval": "month",
           "minimum_commitment": {"amount": "10", "currency": "USD"}})
    check("post", "/api/v1/plans/pro/versions/1/charges", "/api/v1/plans/{plan_code}/versions/{version}/charges",
          201, {"meter": "calls", "charge_model": "graduated", "properties": {"tiers": [
              {"up_to": "10", "unit_price": "0"}, {"up_to": None, "unit_price": "0.5", "flat_fee": "1"}]}})
    check("post", "/api/v1/plans/pro/versions/1/fixed-charges",
          "/api/v1/plans/{plan_code}/versions/{version}/fixed-charges", 201,
          {"code": "setup", "name": "Set-up", "amount": {"amount": "500", "currency": "USD"}, "recurring": False})
    check("post", "/api/v1/plans/pro/versions/1/entitlements",
          "/api/v1/plans/{plan_code}/versions/{version}/entitlements", 200, {"feature": "seats", "limit": "3"})
    check("post", "/api/v1/plans/pro/versions/1/entitlements",
          "/api/v1/plans/{plan_code}/versions/{version}/entitlements", 200, {"feature": "sso"})
    check("post", "/api/v1/plans/pro/versions/1/publish", "/api/v1/plans/{plan_code}/versions/{version}/publish", 200)
    check("post", "/api/v1/coupons", "/api/v1/coupons", 201,
          {"code": "TEN", "name": "10%", "discount_type": "percentage", "percent_off": "10"})
    check("post", "/api/v1/contracts", "/api/v1/contracts", 201,
          {"customer": "acme", "reference": "CT-1", "start_date": "2024-01-01", "end_date": "2030-01-01"})
    check("post", "/api/v1/contracts/CT-1/prices", "/api/v1/contracts/{reference}/prices", 201,
          {"target": "base_fee", "plan": "pro", "plan_version": 1, "amount": {"amount": "0.000001", "currency": "USD"}})
    check("post", "/api/v1/contracts/CT-1/commitments", "/api/v1/contracts/{reference}/commitments", 201,
          {"kind": "prepaid", "amount": {"amount": "1000", "currency": "USD"}})
    check("post", "/api/v1/subscriptions", "/api/v1/subscriptions", 201,
          {"external_id": "sub_1", "customer": "acme", "plan": "pro", "contract": "CT-1", "quantity": "2"})
    change = check("post", "/api/v1/subscriptions/sub_1/change-quantity",
                   "/api/v1/subscriptions/{external_id}/change-quantity", 200, {"quantity": "1"})
    check("post", f"/api/v1/subscriptions/sub_1/changes/{change['change']['id']}/revoke",
          "/api/v1/subscriptions/{subscription_external_id}/changes/{id}/revoke", 200)

    for url, path in [
        ("/api/v1/billing-entities", "/api/v1/billing-entities"),
        ("/api/v1/customers", "/api/v1/customers"),
        ("/api/v1/customers/child", "/api/v1/customers/{external_id}"),
        ("/api/v1/customers/acme/contacts", "/api/v1/customers/{customer_external_id}/contacts"),
        ("/api/v1/customers/acme/entitlements", "/api/v1/customers/{customer_external_id}/entitlements"),
        ("/api/v1/products", "/api/v1/products"),
        ("/api/v1/features", "/api/v1/features"),
        ("/api/v1/meters", "/api/v1/meters"),
        ("/api/v1/plans", "/api/v1/plans"),
        ("/api/v1/plans/pro/versions", "/api/v1/plans/{plan_code}/versions"),
        ("/api/v1/plans/pro/versions/1", "/api/v1/plans/{plan_code}/versions/{version}"),
        ("/api/v1/coupons", "/api/v1/coupons"),
        ("/api/v1/contracts", "/api/v1/contracts"),
        ("/api/v1/contracts/CT-1", "/api/v1/contracts/{reference}"),
        ("/api/v1/subscriptions", "/api/v1/subscriptions"),
        ("/api/v1/subscriptions/sub_1", "/api/v1/subscriptions/{external_id}"),
        ("/api/v1/subscriptions/sub_1/changes", "/api/v1/subscriptions/{subscription_external_id}/changes"),
    ]:
        check("get", url, path, 200)

    # Errors match the documented error schema too.
    response = api.post("/api/v1/subscriptions/sub_1/resume")
    assert response.status_code == 409
    validate_instance(
        response.json(),
        _response_schema(schema, "/api/v1/subscriptions/{external_id}/resume", "post", 409),
        cls=OAS31Validator,
        format_checker=oas31_format_checker,
    )
