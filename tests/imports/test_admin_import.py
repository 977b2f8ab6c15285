"""CSV import in the admin: a dry-run preview that writes nothing, then a confirmed, all-or-nothing import."""

import csv
import io

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN
from contracts.models import Plan, PlanVersion, Subscription
from customers.models import Customer
from customers.resources import ImportProblem
from tests.admin.support import client_for, messages_of
from tests.factories import CustomerFactory
from tests.imports.conftest import fixture_bytes

pytestmark = pytest.mark.django_db

CUSTOMER_IMPORT = reverse("admin:customers_customer_import")
CUSTOMER_CONFIRM = reverse("admin:customers_customer_process_import")


def upload(client, url: str, content: bytes, name: str = "upload.csv"):
    return client.post(url, {"resource": "0", "format": "0",
                             "import_file": SimpleUploadedFile(name, content, content_type="text/csv")})


def confirm(client, url: str, preview):
    form = preview.context["confirm_form"]
    return client.post(url, {name: form.initial.get(name, "") for name in form.fields}, follow=True)


def test_preview_writes_nothing_and_confirm_writes_everything(reference):
    client = client_for(BILLING_OPERATOR)
    assert client.get(CUSTOMER_IMPORT).status_code == 200
    preview = upload(client, CUSTOMER_IMPORT, fixture_bytes("customers_good.csv"))
    assert preview.status_code == 200
    result = preview.context["result"]
    assert preview.context["confirm_form"] is not None
    assert [row.import_type for row in result.valid_rows()] == ["new"] * 4
    assert preview.context["import_problems"] == []
    assert not Customer.objects.exists()  # the preview is a dry run

    done = confirm(client, CUSTOMER_CONFIRM, preview)
    assert done.redirect_chain[-1][0] == reverse("admin:customers_customer_changelist")
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"acme-group", "acme-labs", "initech",
                                                                          "globex"}
    assert any("4 new" in m for m in messages_of(done))
    assert LogEntry.objects.filter(user=client.user, action_flag=ADDITION).count() == 4
    assert Customer.objects.get(external_id="acme-group").history.first().history_user == client.user


def test_a_bad_file_lists_every_problem_and_offers_no_confirmation(reference):
    CustomerFactory(billing_entity=reference.us, external_id="existing-customer")
    client = client_for(BILLING_OPERATOR)
    response = upload(client, CUSTOMER_IMPORT, fixture_bytes("customers_bad.csv"))
    assert response.status_code == 200
    assert "confirm_form" not in response.context or response.context["confirm_form"] is None
    problems = response.context["import_problems"]
    assert [(p.line, p.column) for p in problems] == [
        (3, "external_id"), (4, "external_id"), (5, "metadata"), (6, "billing_entity"), (6, "tax_exempt"),
        (7, "external_id"), (8, "name"), (9, "parent_external_id"), (10, "tax_exemption_reason"),
    ]
    body = response.content.decode()
    assert "9 problems: nothing was imported" in body
    assert "&#x27;ok-1&#x27; is already on line 2 of this file." in body
    assert list(Customer.objects.values_list("external_id", flat=True)) == ["existing-customer"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The submitted file is empty."),  # Django's own check on uploads
        (b"\n \r\n", "The file is empty."),
        (b"external_id,name,billing_entity,country\nc1,Caf\xe9,acme-us,FR\n", "The file is not UTF-8 text"),
        (b"external_id,name,billing_entity,country\n", "The file has a header but no data rows."),
    ],
    ids=["empty", "blank", "latin-1", "header-only"],
)
def test_unreadable_files_are_form_errors(reference, content, message):
    response = upload(client_for(BILLING_OPERATOR), CUSTOMER_IMPORT, content)
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors.get("import_file", []))
    assert message in errors
    assert not Customer.objects.exists()


def test_header_problems_are_listed_on_line_1(reference):
    response = upload(client_for(BILLING_OPERATOR), CUSTOMER_IMPORT,
                      b"external_id,name,colour\nc1,One,blue\n")
    problems = response.context["import_problems"]
    assert ImportProblem(1, "billing_entity", "This required column is missing from the header.") in problems
    assert ImportProblem(1, "country", "This required column is missing from the header.") in problems
    assert [p.message.split(";")[0] for p in problems if p.column == "colour"] == ["Unknown column"]
    assert len(problems) == 3
    assert not Customer.objects.exists()


def test_a_conflict_between_preview_and_confirmation_imports_nothing(reference):
    client = client_for(BILLING_OPERATOR)
    preview = upload(client, CUSTOMER_IMPORT, fixture_bytes("customers_good.csv"))
    CustomerFactory(billing_entity=reference.us, external_id="globex")  # created meanwhile
    done = confirm(client, CUSTOMER_CONFIRM, preview)
    messages = messages_of(done)
    assert "Nothing was imported: the file no longer imports cleanly." in messages
    assert "line 5, column 'external_id': 'globex' already exists." in messages
    assert list(Customer.objects.values_list("external_id", flat=True)) == ["globex"]


def test_plans_import_needs_the_catalog_permission(reference):
    assert upload(client_for(BILLING_OPERATOR), reverse("admin:contracts_plan_import"),
                  fixture_bytes("plans_good.csv")).status_code == 403
    assert upload(client_for(AUDITOR), CUSTOMER_IMPORT, fixture_bytes("customers_good.csv")).status_code == 403
    assert not Plan.objects.exists() and not Customer.objects.exists()


def test_finance_admin_imports_plans_and_subscriptions(reference):
    client = client_for(FINANCE_ADMIN)
    plans_url = reverse("admin:contracts_plan_import")
    preview = upload(client, plans_url, fixture_bytes("plans_good.csv"))
    assert preview.context["import_problems"] == []
    assert not Plan.objects.exists()
    confirm(client, reverse("admin:contracts_plan_process_import"), preview)
    assert set(Plan.objects.values_list("code", flat=True)) == {"starter", "growth", "enterprise"}
    assert PlanVersion.objects.get(plan__code="starter").status == PlanVersion.Status.PUBLISHED

    confirm(client, CUSTOMER_CONFIRM, upload(client, CUSTOMER_IMPORT, fixture_bytes("customers_good.csv")))
    subscriptions_url = reverse("admin:contracts_subscription_import")
    preview = upload(client, subscriptions_url, fixture_bytes("subscriptions_good.csv"))
    assert preview.context["import_problems"] == []
    assert not Subscription.objects.exists()
    confirm(client, reverse("admin:contracts_subscription_process_import"), preview)
    assert Subscription.objects.count() == 3


def test_export_escapes_formulas(reference):
    client = client_for(FINANCE_ADMIN)
    confirm(client, CUSTOMER_CONFIRM, upload(client, CUSTOMER_IMPORT, fixture_bytes("customers_good.csv")))
    auditor = client_for(AUDITOR)
    export_url = reverse("admin:customers_customer_export")
    page = auditor.get(export_url)
    assert page.status_code == 200
    every_column = {name: "on" for name in page.context["form"].fields if name.startswith("customerexportresource_")}
    response = auditor.post(export_url, {"format": "0", "resource": "0", **every_column})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = {r["external_id"]: r for r in csv.DictReader(io.StringIO(response.content.decode("utf-8-sig")))}
    assert rows["globex"]["name"] == "'@SUM(1+1)"
    assert rows["initech"]["name"] == "'-Initech; =1+2"
