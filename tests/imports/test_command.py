"""`manage.py import_csv`: good files import every row, a bad file reports every bad row and imports none."""

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from contracts.models import Plan, PlanVersion, Subscription
from contracts.resources import SubscriptionExportResource
from customers.models import Customer
from customers.resources import CustomerExportResource, escape_formula, unescape_formula
from tests.factories import CustomerFactory, PlanFactory, UserFactory
from tests.imports.conftest import FIXTURES

pytestmark = pytest.mark.django_db


def run(kind: str, path: Path | str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_csv", kind, str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(kind: str, path: Path | str, *args: str) -> tuple[str, list[str]]:
    err = io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("import_csv", kind, str(path), *args, stdout=io.StringIO(), stderr=err)
    return str(failure.value), err.getvalue().splitlines()


def write(tmp_path: Path, content: str | bytes, name: str = "file.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- customers --------------------------------------------------------------------------------------------


def test_customers_file_imports_every_row(reference):
    out, _ = run("customers", FIXTURES / "customers_good.csv")
    assert "Imported 4 row(s) of customers." in out
    group = Customer.objects.get(external_id="acme-group")
    labs = Customer.objects.get(external_id="acme-labs")
    assert (labs.parent, labs.invoice_to_parent, str(labs.currency)) == (group, True, "USD")  # entity's currency
    assert group.billing_emails == ["ap@acme.example", "finance@acme.example"]
    assert group.metadata == {"crm_id": "001A"}
    assert group.payment_terms_days == 45
    globex = Customer.objects.get(external_id="globex")
    assert (globex.billing_entity, str(globex.currency), globex.tax_exempt) == (reference.eu, "EUR", True)
    assert globex.history.first().history_change_reason == "system:import_csv"


def test_formula_cells_are_stored_as_text_and_exported_inert(reference):
    run("customers", FIXTURES / "customers_good.csv")
    assert Customer.objects.get(external_id="initech").name == "-Initech; =1+2"
    assert Customer.objects.get(external_id="globex").name == "@SUM(1+1)"

    exported = CustomerExportResource().export(Customer.objects.order_by("external_id")).csv
    rows = {row["external_id"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert rows["initech"]["name"] == "'-Initech; =1+2"
    assert rows["globex"]["name"] == "'@SUM(1+1)"
    assert rows["acme-group"]["name"] == "Acme Group"
    assert rows["acme-labs"]["parent_external_id"] == "acme-group"
    assert rows["acme-group"]["billing_emails"] == "ap@acme.example; finance@acme.example"
    # The apostrophe comes off again on import, so an exported file imports back unchanged.
    assert unescape_formula(rows["initech"]["name"]) == "-Initech; =1+2"


def test_exported_customers_import_back(reference, tmp_path):
    run("customers", FIXTURES / "customers_good.csv")
    exported = CustomerExportResource().export(Customer.objects.order_by("pk")).csv
    before = {c.external_id: (c.name, c.parent_id is not None, c.billing_emails) for c in Customer.objects.all()}
    reader = list(csv.reader(io.StringIO(exported)))
    header = [h for h in reader[0] if h != "status"]
    status_index = reader[0].index("status")
    renamed = [[f"copy-{row[0]}", *row[1:status_index], *row[status_index + 1:]] for row in reader[1:]]
    for row in renamed:
        parent = header.index("parent_external_id")
        row[parent] = f"copy-{row[parent]}" if row[parent] else ""
    lines = io.StringIO()
    csv.writer(lines).writerows([header, *renamed])
    run("customers", write(tmp_path, lines.getvalue()))
    for external_id, (name, has_parent, emails) in before.items():
        copy = Customer.objects.get(external_id=f"copy-{external_id}")
        assert (copy.name, copy.parent_id is not None, copy.billing_emails) == (name, has_parent, emails)


def test_dry_run_checks_everything_and_writes_nothing(reference):
    out, _ = run("customers", FIXTURES / "customers_good.csv", "--dry-run")
    assert "Dry run: 4 row(s) of customers would be imported; nothing was written." in out
    assert not Customer.objects.exists()


def test_a_bad_customers_file_reports_every_bad_row_and_imports_nothing(reference):
    CustomerFactory(billing_entity=reference.us, external_id="existing-customer")
    message, problems = run_failing("customers", FIXTURES / "customers_bad.csv")
    assert problems == [
        "line 3, column 'external_id': 'ok-1' is already on line 2 of this file.",
        "line 4, column 'external_id': 'existing-customer' already exists.",
        "line 5, column 'metadata': Malformed JSON: Expecting property name enclosed in double quotes at character 9.",
        "line 6, column 'billing_entity': No billing entity with code 'nowhere'.",
        "line 6, column 'tax_exempt': 'maybe' is not true or false (use true/false, yes/no or 1/0).",
        "line 7, column 'external_id': Use letters, digits, '_', '-', '.' or ':' and start with a letter or digit.",
        "line 8, column 'name': This column is required.",
        "line 9, column 'parent_external_id': No customer with external id 'missing-parent'.",
        "line 10, column 'tax_exemption_reason': "
        "A tax-exempt customer needs the reason (e.g. the exemption certificate).",
    ]
    assert "9 problem(s)" in message and "nothing was imported" in message
    # Line 2 was valid, and is not imported either: all or nothing.
    assert list(Customer.objects.values_list("external_id", flat=True)) == ["existing-customer"]


def test_actor_can_be_a_user(reference):
    user = UserFactory(username="migrator")
    run("customers", FIXTURES / "customers_good.csv", "--user", "migrator")
    assert Customer.objects.get(external_id="acme-group").history.first().history_user == user
    with pytest.raises(CommandError, match="No user 'ghost'"):
        run("customers", FIXTURES / "customers_good.csv", "--user", "ghost")


# --- plans ------------------------------------------------------------------------------------------------


def test_plans_file_creates_plans_versions_and_charges(reference):
    out, _ = run("plans", FIXTURES / "plans_good.csv")
    assert "Imported 4 row(s) of plans." in out
    starter = Plan.objects.get(code="starter").versions.get()
    assert (starter.status, starter.base_fee.amount, starter.trial_days) == (
        PlanVersion.Status.PUBLISHED, Decimal("49.00"), 14)
    api, storage = starter.charges.order_by("position")
    assert (api.meter, api.charge_model, api.properties) == (reference.api_calls, "standard",
                                                            {"unit_price": "0.0000015"})
    assert storage.properties == {"tiers": [
        {"up_to": "100", "unit_price": "0", "flat_fee": "0"},
        {"up_to": "1000", "unit_price": "0.10", "flat_fee": "0"},
        {"up_to": None, "unit_price": "0.05", "flat_fee": "0"},
    ]}
    assert storage.group_by == ["region", "tier"]
    growth = Plan.objects.get(code="growth").versions.get()
    assert growth.status == PlanVersion.Status.DRAFT  # publish=false
    assert growth.charges.get().properties["tiers"][0] == {"up_to": "1000000", "unit_price": "0.000002",
                                                           "flat_fee": "0"}
    enterprise = Plan.objects.get(code="enterprise")
    assert (enterprise.interval, enterprise.versions.get().status, enterprise.versions.get().charges.count()) == (
        "year", PlanVersion.Status.PUBLISHED, 0)


def test_a_bad_plans_file_reports_every_bad_row(reference):
    PlanFactory(code="existing-plan")
    _, problems = run_failing("plans", FIXTURES / "plans_bad.csv")
    assert problems == [
        "line 2, column 'properties': Malformed JSON: Expecting ',' delimiter at character 22.",
        "line 3, column 'currency': 'EUR' differs from line 2, the first row of plan 'pro'.",
        "line 4, column 'tier_2_up_to': tiers[1].up_to: The last tier must be open: \"up_to\": null.",
        "line 4, column 'tier_2_up_to': tiers[1].up_to: Must be greater than the previous tier's bound (500).",
        "line 5, column 'base_fee': 'abc' is not a number; write it like 1234.56 (a '.' for decimals).",
        "line 5, column 'interval': 'fortnight' is not one of: week, month, quarter, half_year, year.",
        "line 5, column 'properties': Give the prices either here or in the flat columns (unit_price), not both.",
        "line 6, column 'meter_code': No meter with code 'no-such-meter'.",
        "line 6, column 'product_code': No product with code 'no-such-product'.",
        "line 7, column 'plan_code': A plan 'existing-plan' already exists; an import creates new plans only "
        "(add a version in the admin).",
    ]
    assert list(Plan.objects.values_list("code", flat=True)) == ["existing-plan"]


def test_charge_property_errors_from_json_name_the_property(reference, tmp_path):
    path = write(tmp_path, "plan_code,plan_name,product_code,currency,interval,meter_code,charge_model,properties\n"
                           'p1,P1,platform,USD,month,api_calls,package,"{""package_size"": ""0""}"\n')
    _, problems = run_failing("plans", path)
    assert problems == [
        "line 2, column 'properties': package_price: This property is required.",
        "line 2, column 'properties': package_size: Must be greater than zero.",
    ]


# --- subscriptions ----------------------------------------------------------------------------------------


def test_subscriptions_file_imports_every_row(reference):
    run("customers", FIXTURES / "customers_good.csv")
    run("plans", FIXTURES / "plans_good.csv")
    out, _ = run("subscriptions", FIXTURES / "subscriptions_good.csv")
    assert "Imported 3 row(s) of subscriptions." in out
    acme = Subscription.objects.get(external_id="sub-acme-1")
    assert (acme.customer.external_id, acme.plan_version.plan.code, acme.quantity, acme.metadata) == (
        "acme-group", "starter", Decimal(5), {"source": "legacy"})
    labs = Subscription.objects.get(external_id="sub-acme-2")
    assert (str(labs.start_date), str(labs.end_date), labs.billing_anchor) == ("2024-02-15", "2025-02-15",
                                                                               "anniversary")
    initech = Subscription.objects.get(external_id="sub-initech")
    assert (initech.quantity, initech.billing_anchor, initech.bill_cycle_day) == (Decimal("2.5"), "day_of_month", 15)

    exported = SubscriptionExportResource().export(Subscription.objects.order_by("external_id")).csv
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["external_id"] for r in rows] == ["sub-acme-1", "sub-acme-2", "sub-initech"]
    assert rows[2]["quantity"] == "2.5" and rows[2]["plan_code"] == "starter" and rows[2]["plan_version"] == "1"


def test_a_bad_subscriptions_file_reports_every_bad_row(reference):
    run("customers", FIXTURES / "customers_good.csv")
    run("plans", FIXTURES / "plans_good.csv")
    run("subscriptions", write_subscription_row("sub-existing"))
    before = set(Subscription.objects.values_list("external_id", flat=True))
    _, problems = run_failing("subscriptions", FIXTURES / "subscriptions_bad.csv")
    assert problems == [
        "line 3, column 'external_id': 'sub-1' is already on line 2 of this file.",
        "line 4, column 'external_id': 'sub-existing' already exists.",
        "line 5, column 'customer_external_id': No customer with external id 'nobody'.",
        "line 5, column 'start_date': '01/02/2024' is not a date; write it as YYYY-MM-DD.",
        "line 6, column 'billing_anchor': 'sometimes' is not one of: calendar, anniversary, day_of_month.",
        "line 6, column 'plan_version': Plan 'starter' has no version 7.",
        "line 7, column 'billing_anchor': A bill-cycle day is only used with the day-of-month anchor.",
        "line 8, column 'plan_version': The plan is in USD but the customer is billed in EUR.",
        "line 9, column 'metadata': Malformed JSON: Expecting property name enclosed in double quotes at character 2.",
        "line 9, column 'plan_code': No plan with code 'no-plan'.",
    ]
    assert set(Subscription.objects.values_list("external_id", flat=True)) == before


def write_subscription_row(external_id: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "one.csv"
    path.write_text(f"external_id,customer_external_id,plan_code\n{external_id},acme-group,starter\n")
    return path


# --- files that are not what they should be ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", ["file: The file is empty."]),
        (b"\n \n\r\n", ["file: The file is empty."]),
        (b"\xef\xbb\xbfexternal_id,name,billing_entity,country\n", ["file: The file has a header but no data rows."]),
        (b"external_id,name,billing_entity,country\nc1,Caf\xe9,acme-us,FR\n",
         ["line 2: The file is not UTF-8 text (byte 0xe9 cannot be read). "
          "Save it as 'CSV UTF-8' and upload it again."]),
        (b"external_id,name\nc1,N\x00ame\n", ["file: The file contains NUL bytes: it is not a CSV text file."]),
        (b"external_id,name,country\nc1,Name,US\n", [
            "line 1, column 'billing_entity': This required column is missing from the header.",
        ]),
        (b"external_id,nmae,name,billing_entity,country\nc1,x,Name,acme-us,US\n", [
            "line 1, column 'nmae': Unknown column; the columns are: external_id, name, billing_entity, country, "
            "currency, legal_name, kind, billing_emails, tax_id, tax_exempt, tax_exemption_reason, timezone, "
            "payment_terms_days, parent_external_id, invoice_to_parent, address_line1, address_line2, city, state, "
            "postal_code, metadata.",
        ]),
        (b"external_id,name,name,billing_entity,country\nc1,a,b,acme-us,US\n", [
            "line 1, column 'name': This column appears twice in the header.",
        ]),
        (b"external_id,name,billing_entity,country\nc1,A,acme-us,US\nc2,B,acme-us\nc3,C,acme-us,US,extra\n"
         b"c4,D,acme-us,US,,\n", [
             "line 3: The row has 3 cells but the header has 4 columns.",
             "line 4: The row has 5 cells but the header has 4 columns.",
         ]),
        (b'external_id,name,billing_entity,country\nc1,"unterminated,acme-us,US\n', [
            "line 2: The file is not valid CSV: unexpected end of data.",
        ]),
    ],
    ids=["empty", "blank-lines", "header-only", "latin-1", "nul-bytes", "missing-column", "unknown-column",
         "duplicate-column", "ragged-rows", "unterminated-quote"],
)
def test_unreadable_files_are_explained(reference, tmp_path, content, expected):
    _, problems = run_failing("customers", write(tmp_path, content))
    assert problems == expected
    assert not Customer.objects.exists()


def test_header_names_are_trimmed_and_case_insensitive_and_blank_rows_skipped(reference, tmp_path):
    path = write(tmp_path, " External_ID ,Name,BILLING_ENTITY,country,\r\n\r\nc1,One,acme-us,US,\r\n,,,,\r\n"
                           "c2,Two,acme-us,US,\r\n")
    out, _ = run("customers", path)
    assert "Imported 2 row(s)" in out
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"c1", "c2"}


def test_line_numbers_count_blank_lines_and_multiline_cells(reference, tmp_path):
    path = write(tmp_path, 'external_id,name,billing_entity,country\n\nc1,"Two\nlines",acme-us,US\nc2,X,nope,US\n')
    _, problems = run_failing("customers", path)
    assert problems == ["line 5, column 'billing_entity': No billing entity with code 'nope'."]


def test_too_many_rows_is_refused_before_any_row_is_read(reference, tmp_path, settings):
    settings.ACCRUAL_IMPORT_MAX_ROWS = 3
    rows = "".join(f"c{n},Name {n},acme-us,US\n" for n in range(4))
    _, problems = run_failing("customers", write(tmp_path, "external_id,name,billing_entity,country\n" + rows))
    assert problems == ["file: The file has more than 3 data rows, the limit of one import; split it into smaller "
                        "files."]
    assert not Customer.objects.exists()


def test_too_large_a_file_is_refused(reference, tmp_path, settings):
    settings.ACCRUAL_IMPORT_MAX_BYTES = 1024
    path = write(tmp_path, "external_id,name,billing_entity,country\n" + "c,N,acme-us,US\n" * 200)
    with pytest.raises(CommandError, match="larger than 1 KiB"):
        run("customers", path)


def test_missing_file(reference):
    with pytest.raises(CommandError, match="No file"):
        run("customers", "/nonexistent/customers.csv")


@pytest.mark.parametrize(
    ("stored", "exported"),
    [("=1+2", "'=1+2"), ("+SUM(A1)", "'+SUM(A1)"), ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
     ("@SUM(1)", "'@SUM(1)"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("-12.5", "-12.5"), ("+3", "+3"),
     ("Acme", "Acme"), ("a=b", "a=b"), ("'quoted", "'quoted")],
)
def test_formula_escaping_round_trips(stored, exported):
    assert escape_formula(stored) == exported
    assert unescape_formula(escape_formula(stored)) == stored


def test_an_import_resource_without_create_is_refused_when_defined():
    from customers.resources import CsvImportResource

    with pytest.raises(TypeError, match="must define create"):
        type("Incomplete", (CsvImportResource,), {"__module__": __name__})
