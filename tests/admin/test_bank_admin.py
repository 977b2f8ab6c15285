"""Bank reconciliation in the admin: formats edited by finance admins, statements uploaded from the import page
(every bad row shown, nothing stored), the reconciliation queue with its Match page and actions, and what
each role may not do."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from billing.actors import Actor
from billing.roles import AUDITOR, BILLING_OPERATOR, FINANCE_ADMIN, REVENUE_ACCOUNTANT
from invoicing.models import BankStatement, BankStatementFormat, BankStatementLine, Invoice, Payment
from invoicing.services.bank import import_statement
from invoicing.services.documents import ManualLine, create_one_off_invoice
from invoicing.services.payments import credit_balance
from tests.admin.support import client_for, messages_of
from tests.factories import BillingEntityFactory, CustomerFactory

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
NOW = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)
FORMATS = reverse("admin:invoicing_bankstatementformat_changelist")
STATEMENTS = reverse("admin:invoicing_bankstatement_changelist")
IMPORT = reverse("admin:invoicing_bankstatement_import")
QUEUE = reverse("admin:invoicing_bankstatementline_changelist")
HEADER = "Date,Amount,Currency,Reference,Counterparty"


@pytest.fixture
def entity():
    return BillingEntityFactory(code="acme-us", invoice_prefix="ACME", credit_note_prefix="ACN", timezone="UTC")


@pytest.fixture
def fmt(entity):
    return BankStatementFormat.objects.create(
        name="First Bank", billing_entity=entity, date_column="Date", amount_column="Amount",
        currency_column="Currency", default_currency="USD", reference_column="Reference",
        counterparty_column="Counterparty",
    )


@pytest.fixture
def globex(entity):
    return CustomerFactory(billing_entity=entity, external_id="globex", name="Globex Corporation", timezone="UTC")


def invoice(customer, amount: str) -> Invoice:
    return create_one_off_invoice(customer, [ManualLine("Services", Decimal(amount))], actor=ACTOR, now=NOW,
                                  finalize=True)


def csv_file(*rows: str, name: str = "january.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, ("\n".join([HEADER, *rows]) + "\n").encode(), content_type="text/csv")


def queued(fmt, *rows: str) -> list[BankStatementLine]:
    data = ("\n".join([HEADER, *rows]) + "\n").encode()
    result = import_statement(fmt, data, filename="q.csv", actor=ACTOR, now=NOW)
    return list(BankStatementLine.objects.filter(statement=result.statement).order_by("line_number"))


def match_url(line) -> str:
    return reverse("admin:invoicing_bankstatementline_match", args=[line.pk])


# --- formats --------------------------------------------------------------------------------------------------


def format_form(entity, **changes) -> dict:
    data = {
        "name": "Sparkasse", "billing_entity": entity.pk, "encoding": "latin-1", "delimiter": ";",
        "has_header": "on", "skip_rows": "2", "date_column": "Buchungstag", "date_format": "%d.%m.%Y",
        "amount_column": "Betrag", "credit_column": "", "debit_column": "", "currency_column": "",
        "default_currency": "EUR", "reference_column": "Verwendungszweck", "description_column": "",
        "counterparty_column": "", "transaction_id_column": "", "decimal_separator": ",", "thousands_separator": ".",
    }
    return {**data, **changes}


def test_finance_admin_sets_up_a_format_and_bad_mappings_are_refused(entity):
    client = client_for(FINANCE_ADMIN)
    add = reverse("admin:invoicing_bankstatementformat_add")
    same = client.post(add, format_form(entity, thousands_separator=","))
    assert same.status_code == 200
    assert "The format&#x27;s decimal and thousands separators must differ." in same.content.decode()
    neither = client.post(add, format_form(entity, amount_column=""))
    assert "neither an amount column nor credit and debit columns" in neither.content.decode()
    positional = client.post(add, format_form(entity, has_header=""))
    assert "Without a header row, the date column must be a position" in positional.content.decode()
    encoding = client.post(add, format_form(entity, encoding="klingon"))
    assert "is not one Python knows" in encoding.content.decode()
    assert not BankStatementFormat.objects.exists()
    created = client.post(add, format_form(entity))
    assert created.status_code == 302
    fmt = BankStatementFormat.objects.get()
    assert (fmt.delimiter, fmt.decimal_separator, fmt.skip_rows, str(fmt.default_currency)) == (";", ",", 2, "EUR")


def test_operator_reads_formats_but_cannot_change_them(fmt, entity):
    admin_page = client_for(FINANCE_ADMIN).get(reverse("admin:invoicing_bankstatementformat_change", args=[fmt.pk]))
    assert admin_page.status_code == 200 and "date_column" in admin_page.context["adminform"].form.fields
    client = client_for(BILLING_OPERATOR)
    assert client.get(FORMATS).status_code == 200
    read_only = client.get(reverse("admin:invoicing_bankstatementformat_change", args=[fmt.pk]))
    assert read_only.status_code == 200 and not read_only.context["adminform"].form.fields
    assert client.get(reverse("admin:invoicing_bankstatementformat_add")).status_code == 403
    change = reverse("admin:invoicing_bankstatementformat_change", args=[fmt.pk])
    assert client.post(change, format_form(entity, name="Renamed")).status_code == 403
    assert BankStatementFormat.objects.get().name == "First Bank"


# --- importing --------------------------------------------------------------------------------------------------


def test_operator_imports_a_statement_and_sees_the_summary(fmt, globex):
    inv = invoice(globex, "250.00")
    client = client_for(BILLING_OPERATOR)
    listing = client.get(STATEMENTS)
    assert listing.status_code == 200 and IMPORT in listing.content.decode()
    assert client.get(IMPORT).status_code == 200
    response = client.post(IMPORT, {"format": fmt.pk, "file": csv_file(
        f"2024-01-20,250.00,USD,{inv.number},", "2024-01-21,40.00,USD,unknown,", "2024-01-22,-5.00,USD,fee,")},
        follow=True)
    statement = BankStatement.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:invoicing_bankstatement_change", args=[statement.pk])
    assert messages_of(response) == [
        "january.csv: 3 line(s) read: 3 new, 0 already imported; 1 matched, 1 to match by hand, 1 debit(s) ignored."]
    page = response.content.decode()
    assert "unknown" in page and "fee" in page  # the statement's lines are listed on its page
    assert Invoice.objects.get(pk=inv.pk).status == Invoice.Status.PAID
    assert statement.imported_by == "user:billing_operator"
    again = client.post(IMPORT, {"format": fmt.pk, "file": csv_file(
        f"2024-01-20,250.00,USD,{inv.number},", "2024-01-21,40.00,USD,unknown,", "2024-01-22,-5.00,USD,fee,")},
        follow=True)
    assert "nothing new" in messages_of(again)[0]
    assert BankStatement.objects.count() == 1 and BankStatementLine.objects.count() == 3


def test_a_file_with_broken_rows_shows_each_row_and_stores_nothing(fmt):
    client = client_for(BILLING_OPERATOR)
    response = client.post(IMPORT, {"format": fmt.pk, "file": csv_file(
        "2024-01-20,10.00,USD,ok,", "20/01/2024,10.00,USD,bad date,", "2024-01-20,ten,USD,bad amount,",
        "2024-01-20,1.00,<b>XSS</b>,bad currency,")})
    assert response.status_code == 200
    errors = response.context["row_errors"]
    assert [(e.line, e.column) for e in errors] == [(3, "Date"), (4, "Amount"), (5, "Currency")]
    page = response.content.decode()
    assert page.count('class="row-error"') == 3 and "3 problem(s) found: nothing was imported" in page
    assert "<b>XSS</b>" not in page and "&lt;b&gt;XSS&lt;/b&gt;" in page
    assert not BankStatement.objects.exists() and not BankStatementLine.objects.exists()


def test_import_form_refusals(fmt, settings):
    client = client_for(BILLING_OPERATOR)
    missing = client.post(IMPORT, {"format": fmt.pk})
    assert missing.status_code == 200 and "file" in missing.context["form"].errors
    unknown = client.post(IMPORT, {"format": 999999, "file": csv_file("2024-01-20,1.00,USD,a,")})
    assert "format" in unknown.context["form"].errors
    settings.ACCRUAL_BANK_STATEMENT_MAX_BYTES = 10
    big = client.post(IMPORT, {"format": fmt.pk, "file": csv_file("2024-01-20,1.00,USD,a,")})
    assert "larger than" in str(big.context["form"].errors["file"])
    assert not BankStatement.objects.exists()


# --- the queue and matching by hand ------------------------------------------------------------------------------


def test_queue_shows_unmatched_lines_by_default(fmt):
    queued(fmt, "2024-01-20,10.00,USD,open one,", "2024-01-21,-3.00,USD,a debit,")
    client = client_for(BILLING_OPERATOR)
    default = client.get(QUEUE)
    assert default.status_code == 200
    assert [line.reference for line in default.context["cl"].result_list] == ["open one"]
    everything = client.get(QUEUE, {"status": "all"})
    assert sorted(line.reference for line in everything.context["cl"].result_list) == ["a debit", "open one"]
    ignored = client.get(QUEUE, {"status": "ignored"})
    assert [line.reference for line in ignored.context["cl"].result_list] == ["a debit"]
    assert "Match" in default.content.decode()
    line = default.context["cl"].result_list[0]
    detail = client.get(reverse("admin:invoicing_bankstatementline_change", args=[line.pk]))
    assert detail.status_code == 200 and "open one" in detail.content.decode()
    assert client.post(reverse("admin:invoicing_bankstatementline_change", args=[line.pk]),
                       {"note": "edited"}).status_code == 403


def test_operator_matches_a_line_with_chosen_amounts(fmt, globex):
    older, newer = invoice(globex, "100.00"), invoice(globex, "300.00")
    [line] = queued(fmt, "2024-01-20,350.00,USD,wire 8812,GLOBEX CORPORATION")
    client = client_for(BILLING_OPERATOR)
    page = client.get(match_url(line))
    assert page.status_code == 200 and [c.external_id for c in page.context["suggested"]] == ["globex"]
    search = client.get(match_url(line), {"q": "glob"})
    assert [c.external_id for c in search.context["found"]] == ["globex"]
    chosen = client.get(match_url(line), {"customer": globex.pk})
    assert [(inv.number, due) for inv, due, _ in chosen.context["invoices"]] == [
        (older.number, "100.00"), (newer.number, "300.00")]
    too_much = client.post(match_url(line), {"customer": globex.pk, f"amount-{older.pk}": "150.00"})
    assert too_much.status_code == 200 and any("still owes" in e for e in too_much.context["errors"])
    bad = client.post(match_url(line), {"customer": globex.pk, f"amount-{older.pk}": "1.001"})
    assert any("at most 2 decimal places" in e for e in bad.context["errors"])
    assert not Payment.objects.exists()
    done = client.post(match_url(line), {"customer": globex.pk, f"amount-{newer.pk}": "300.00"}, follow=True)
    assert done.redirect_chain[-1][0] == QUEUE
    line.refresh_from_db()
    assert (line.status, line.customer, line.match_method, line.matched_by) == (
        "matched", globex, "manual", "user:billing_operator")
    assert Invoice.objects.get(pk=newer.pk).status == Invoice.Status.PAID
    assert Invoice.objects.get(pk=older.pk).amount_due == Decimal("100.00")
    assert credit_balance(globex, "USD") == Decimal("50.00")
    second = client.post(match_url(line), {"customer": globex.pk})
    assert second.status_code == 200 and "cannot be matched" in second.content.decode()
    assert Payment.objects.count() == 1


def test_matching_without_amounts_pays_the_oldest_first(fmt, globex):
    older, newer = invoice(globex, "100.00"), invoice(globex, "300.00")
    [line] = queued(fmt, "2024-01-20,150.00,USD,no ref,")
    client = client_for(FINANCE_ADMIN)
    client.post(match_url(line), {"customer": globex.pk})
    assert Invoice.objects.get(pk=older.pk).status == Invoice.Status.PAID
    assert Invoice.objects.get(pk=newer.pk).amount_due == Decimal("250.00")


def test_a_customer_of_another_entity_cannot_be_chosen(fmt, globex):
    stranger = CustomerFactory(external_id="stranger")
    [line] = queued(fmt, "2024-01-20,150.00,USD,no ref,")
    client = client_for(BILLING_OPERATOR)
    response = client.post(match_url(line), {"customer": stranger.pk})
    assert response.context["errors"] == ["Choose the customer who paid."]
    assert client.post(match_url(line), {"customer": "1e9"}).context["errors"] == ["Choose the customer who paid."]
    assert client.get(reverse("admin:invoicing_bankstatementline_match", args=[999999])).status_code == 404
    assert not Payment.objects.exists()


def test_ignore_put_back_and_match_again_actions(fmt, globex):
    first, second = queued(fmt, "2024-01-20,9.99,USD,interest,", "2024-01-21,120.00,USD,globex,")
    client = client_for(BILLING_OPERATOR)
    form = client.post(QUEUE, {"action": "ignore_lines", "_selected_action": [first.pk]})
    assert form.status_code == 200 and "reason" in form.context["form"].fields
    client.post(QUEUE, {"action": "ignore_lines", "_selected_action": [first.pk], "apply": "1",
                        "params-reason": "Bank interest"})
    first.refresh_from_db()
    assert first.status == "ignored" and first.note.endswith("Bank interest")
    # Ignored lines are listed under status=ignored, where they can be put back.
    client.post(f"{QUEUE}?status=ignored", {"action": "unignore_lines", "_selected_action": [first.pk]})
    first.refresh_from_db()
    assert first.status == "unmatched"
    # An invoice issued after the import: matching again finds it by customer and amount.
    inv = invoice(globex, "120.00")
    response = client.post(QUEUE, {"action": "match_again", "_selected_action": [first.pk, second.pk]}, follow=True)
    assert "1 of 2 unmatched line(s) matched automatically." in messages_of(response)
    assert Invoice.objects.get(pk=inv.pk).status == Invoice.Status.PAID


# --- roles ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [AUDITOR, REVENUE_ACCOUNTANT])
def test_read_only_roles_see_but_cannot_import_match_or_ignore(fmt, globex, role):
    invoice(globex, "10.00")
    [line] = queued(fmt, "2024-01-20,10.00,USD,no ref,")
    client = client_for(role)
    assert client.get(QUEUE).status_code == 200
    statements = client.get(STATEMENTS)
    assert statements.status_code == 200 and IMPORT not in statements.content.decode()
    assert client.get(QUEUE).context["action_form"] is None
    assert client.get(IMPORT).status_code == 403
    assert client.post(IMPORT, {"format": fmt.pk, "file": csv_file("2024-01-25,1.00,USD,x,")}).status_code == 403
    assert client.get(match_url(line)).status_code == 403
    assert client.post(match_url(line), {"customer": globex.pk}).status_code == 403
    client.post(QUEUE, {"action": "ignore_lines", "_selected_action": [line.pk], "apply": "1",
                        "params-reason": "no"})
    line.refresh_from_db()
    assert line.status == "unmatched" and not Payment.objects.exists()
    assert BankStatement.objects.count() == 1


def test_anonymous_users_are_sent_to_the_login_page(fmt):
    [line] = queued(fmt, "2024-01-20,10.00,USD,no ref,")
    from django.test import Client

    anonymous = Client()
    for url in (IMPORT, QUEUE, match_url(line)):
        response = anonymous.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
