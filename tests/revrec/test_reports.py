"""The revenue reports on a small hand-computed book, their CSV, and the ERP journal export.

The book (USD, no tax, no SSP rows so every obligation is allocated its billed amount):
- invoice A to acme, issued 2024-01-15: "Pro" 2024-01-01..2024-04-01 (91 days) 910.00 = 10.00 a day. At
  posting, 14 days are already earned: 140.00 on 01-14 (a contract asset until the invoice bills it). The
  invoice entry: Dr receivable 910, Cr contract asset 140, Cr deferred 770.
- invoice S to acme, issued 2024-01-15: a set-up 50.00, delivered at once: Dr receivable 50 / Cr deferred 50,
  then Dr deferred 50 / Cr revenue 50 the same day.
- invoice B to beta, issued 2024-02-10: "Pro" 2024-02-10..2024-03-10 (29 days) 290.00 = 10.00 a day, and
  "Support" 2024-03-01..2025-09-01 (549 days) 549.00 = 1.00 a day. Dr receivable 839, Cr deferred 839.
- recognition runs through 01-31 (A: 17 days 170), 02-29 (A 290, B pro 20 days 200) and 03-15 (A 15 days
  150, B pro the last 9 days 90, support 15 days 15).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing.actors import Actor
from billing.errors import BillingError
from contracts.models import Product
from customers.models import BillingEntity, Customer
from invoicing.models import Invoice
from invoicing.services.documents import ManualLine, create_one_off_invoice
from revrec.exports import JOURNAL_EXPORT_COLUMNS, journal_export_csv, report_csv
from revrec.models import AccountingPeriod, JournalEntry, RevenueContract
from revrec.selectors.positions import ledger_balance, positions_as_of
from revrec.selectors.report_types import ReportParams
from revrec.selectors.reports import REPORTS, run_report
from revrec.services.chart import Chart
from revrec.services.journal import credit, debit, post_entry
from revrec.services.posting.invoices import post_invoice
from revrec.services.recognition import recognize_through
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory

D = Decimal
pytestmark = pytest.mark.django_db


@dataclass
class Book:
    entity: BillingEntity
    acme: Customer
    beta: Customer
    pro: Product
    setup: Product
    support: Product
    a: Invoice
    s: Invoice
    b: Invoice

    @property
    def rc_a(self) -> str:
        return RevenueContract.objects.get(invoice=self.a).reference

    @property
    def rc_b(self) -> str:
        return RevenueContract.objects.get(invoice=self.b).reference


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 17, 0, tzinfo=UTC)


def build_book(code: str = "acme-us") -> Book:
    actor = Actor.system("tests")
    entity = BillingEntityFactory(code=code, default_currency="USD")
    acme = CustomerFactory(billing_entity=entity, external_id="acme", name="Acme")
    beta = CustomerFactory(billing_entity=entity, external_id="beta", name="Beta")
    pro = ProductFactory(code="pro", name="Pro plan")
    setup = ProductFactory(code="setup", name="Set-up")
    support = ProductFactory(code="support", name="Support")
    chart = Chart.load(entity)
    a = create_one_off_invoice(acme, [
        ManualLine("Pro Q1", D("910.00"), product=pro, period_start=date(2024, 1, 1), period_end=date(2024, 4, 1)),
    ], actor=actor, now=at(date(2024, 1, 15)), finalize=True)
    post_invoice(a, chart=chart, actor=actor, now=at(date(2024, 1, 15)))
    s = create_one_off_invoice(acme, [ManualLine("Set-up", D("50.00"), product=setup)], actor=actor,
                               now=at(date(2024, 1, 15)), finalize=True)
    post_invoice(s, chart=chart, actor=actor, now=at(date(2024, 1, 15)))
    recognize_through(date(2024, 1, 31), actor=actor, now=at(date(2024, 2, 1)), entity=entity)
    b = create_one_off_invoice(beta, [
        ManualLine("Pro", D("290.00"), product=pro, period_start=date(2024, 2, 10), period_end=date(2024, 3, 10)),
        ManualLine("Support", D("549.00"), product=support, period_start=date(2024, 3, 1),
                   period_end=date(2025, 9, 1)),
    ], actor=actor, now=at(date(2024, 2, 10)), finalize=True)
    post_invoice(b, chart=chart, actor=actor, now=at(date(2024, 2, 10)))
    recognize_through(date(2024, 2, 29), actor=actor, now=at(date(2024, 3, 1)), entity=entity)
    recognize_through(date(2024, 3, 15), actor=actor, now=at(date(2024, 3, 16)), entity=entity)
    return Book(entity, acme, beta, pro, setup, support, a, s, b)


@pytest.fixture
def book() -> Book:
    return build_book()


def params(book: Book, **dates: date) -> ReportParams:
    return ReportParams(entity_id=book.entity.pk, currency="USD", **dates)


def manual_entry(book: Book, on: date, postings: list, *, kind: str = JournalEntry.Kind.MANUAL,
                 key: str = "manual:1") -> JournalEntry:
    return post_entry(chart=Chart.load(book.entity), kind=kind, source_key=key, on=on, currency="USD",
                      description="Manual adjustment", postings=postings, actor=Actor.system("tests"),
                      now=at(on))


def test_registry_lists_every_report():
    assert list(REPORTS) == ["waterfall", "deferred_rollforward", "recognised_by_product", "recognised_by_customer",
                             "unbilled_revenue", "remaining_performance_obligations", "trial_balance", "journal"]


def test_waterfall(book):
    report = run_report("waterfall", params(book, start=date(2024, 1, 1), end=date(2024, 3, 1)))
    assert report.columns == ["Billing month", "Billed", "Earlier", "2024-01", "2024-02", "Later"]
    # January's row: 960 billed; January recognised 140 + 50 + 170 = 360, February 290, later 960 - 650 = 310.
    # February's row: 839 billed; February 200 (beta's pro), later 90 + 549 = 639.
    assert report.rows == [
        ["2024-01", D("960.00"), D(0), D("360.00"), D("290.00"), D("310.00")],
        ["2024-02", D("839.00"), D(0), D(0), D("200.00"), D("639.00")],
    ]
    assert report.totals == ["Total", D("1799.00"), D(0), D("360.00"), D("490.00"), D("949.00")]
    assert [(s.name, s.points) for s in report.chart] == [
        ("Billed", [("2024-01", D("960.00")), ("2024-02", D("839.00"))]),
        ("Recognised", [("2024-01", D("360.00")), ("2024-02", D("490.00"))]),
    ]
    assert report.parameters == {"entity_id": book.entity.pk, "currency": "USD", "start": date(2024, 1, 1),
                                 "end": date(2024, 3, 1)}


def test_waterfall_windows(book):
    """February alone: only February's billings are rows. Through March: a month without billings is a row
    of zeros, and Later shrinks by what March recognised."""
    report = run_report("waterfall", params(book, start=date(2024, 2, 1), end=date(2024, 3, 1)))
    assert report.rows == [["2024-02", D("839.00"), D(0), D("200.00"), D("639.00")]]
    report = run_report("waterfall", params(book, start=date(2024, 1, 1), end=date(2024, 4, 1)))
    # March: A 150, B 90 + 15 = 105; Later: A 910 + 50 - 800 = 160, B 839 - 305 = 534.
    assert [row[-2:] for row in report.rows] == [[D("150.00"), D("160.00")], [D("105.00"), D("534.00")],
                                                 [D(0), D(0)]]
    assert report.rows[2][:3] == ["2024-03", D(0), D(0)]


def test_deferred_rollforward_reconciles(book):
    report = run_report("deferred_rollforward", params(book, start=date(2024, 1, 1), end=date(2024, 4, 1)))
    # Jan: billings 770 + 50 = 820 (A's 910 less the 140 contract asset it settled), recognised 50 + 170 =
    # 220 (the 140 of 01-14 went to the contract asset). Feb: +839 - (290 + 200). Mar: -(150 + 90 + 15).
    assert report.rows == [
        ["2024-01", D(0), D("820.00"), D("220.00"), D(0), D("600.00"), D("600.00"), D(0)],
        ["2024-02", D("600.00"), D("839.00"), D("490.00"), D(0), D("949.00"), D("949.00"), D(0)],
        ["2024-03", D("949.00"), D(0), D("255.00"), D(0), D("694.00"), D("694.00"), D(0)],
    ]
    assert report.totals == ["Total", D(0), D("1659.00"), D("965.00"), D(0), D("694.00"), D("694.00"), D(0)]
    assert report.problems == []
    assert report.chart_kind == "line"
    assert report.chart[0].points == [("2024-01", D("600.00")), ("2024-02", D("949.00")), ("2024-03", D("694.00"))]


def test_deferred_rollforward_reports_a_ledger_only_entry(book):
    """A manual entry to deferred revenue that no contract knows of: Feb and Mar are off by 25.00."""
    manual_entry(book, date(2024, 2, 20), [debit("receivable", D("25.00")), credit("deferred_revenue", D("25.00"))])
    report = run_report("deferred_rollforward", params(book, start=date(2024, 1, 1), end=date(2024, 4, 1)))
    assert [row[4:] for row in report.rows] == [
        [D(0), D("600.00"), D("600.00"), D(0)],
        [D("25.00"), D("974.00"), D("949.00"), D("25.00")],
        [D(0), D("719.00"), D("694.00"), D("25.00")],
    ]
    assert len(report.problems) == 2
    assert report.problems[0] == ("2024-02: the ledger's deferred revenue closes at 974.00 but the revenue "
                                  "contracts add up to 949.00 (difference 25.00).")
    assert "difference 25.00" in report.problems[1]


def test_recognised_by_product_and_customer(book):
    window = params(book, start=date(2024, 1, 1), end=date(2024, 4, 1))
    report = run_report("recognised_by_product", window)
    # pro: A 140 + 170 + 290 + 150, B 200 + 90 = 1040; set-up 50; support 15.
    assert report.rows == [["pro", "Pro plan", D("1040.00")], ["setup", "Set-up", D("50.00")],
                           ["support", "Support", D("15.00")]]
    assert report.totals == ["Total", "", D("1105.00")]
    assert report.chart[0].points == [("pro", D("1040.00")), ("setup", D("50.00")), ("support", D("15.00"))]
    report = run_report("recognised_by_customer", window)
    assert report.rows == [["acme", "Acme", D("800.00")], ["beta", "Beta", D("305.00")]]
    assert report.totals == ["Total", "", D("1105.00")]
    # The window is [start, end): 01-31's run is in January, not in February.
    february = run_report("recognised_by_customer", params(book, start=date(2024, 2, 1), end=date(2024, 3, 1)))
    assert february.rows == [["acme", "Acme", D("290.00")], ["beta", "Beta", D("200.00")]]


def test_unbilled_revenue(book):
    """On 01-14, 140.00 was recognised on contract A and nothing billed yet: a contract asset."""
    report = run_report("unbilled_revenue", params(book, as_of=date(2024, 1, 14)))
    assert report.rows == [["acme", book.rc_a, D("140.00"), D(0), D("140.00"), D(0)]]
    assert report.totals == ["Total", "", D("140.00"), D(0), D("140.00"), D(0)]
    assert report.problems == []
    assert run_report("unbilled_revenue", params(book, as_of=date(2024, 1, 15))).rows == []


def test_unbilled_revenue_shows_accruals_apart_and_reports_differences(book):
    # Unbilled usage accrued at January's end (reversed on 02-01): its own column, not a difference.
    manual_entry(book, date(2024, 1, 31), [debit("contract_asset", D("30.00"), customer_id=book.beta.pk),
                                           credit("revenue", D("30.00"))], kind=JournalEntry.Kind.ACCRUAL,
                 key="accrual:1")
    report = run_report("unbilled_revenue", params(book, as_of=date(2024, 1, 31)))
    assert report.rows == [["beta", "(accrued usage)", D(0), D(0), D(0), D("30.00")]]
    assert report.problems == []
    # A contract asset no contract explains is reported.
    manual_entry(book, date(2024, 1, 31), [debit("contract_asset", D("12.00")), credit("revenue", D("12.00"))])
    report = run_report("unbilled_revenue", params(book, as_of=date(2024, 1, 31)))
    assert report.problems == ["2024-01-31: the ledger's contract asset (accruals left out) is 12.00 but the "
                               "revenue contracts add up to 0.00 (difference 12.00)."]


def test_remaining_performance_obligations(book):
    report = run_report("remaining_performance_obligations", params(book, as_of=date(2024, 3, 15)))
    # A: 910 - 750 = 160, all in March (S is complete: no row). B: support 549 - 15 = 534: 16 days of March
    # and 2024-04..2025-02 (334 days) in the next 12 months = 350, 2025-03..2025-08 (184 days) later.
    assert report.rows == [
        ["acme", book.rc_a, D("160.00"), D("160.00"), D(0)],
        ["beta", book.rc_b, D("534.00"), D("350.00"), D("184.00")],
    ]
    assert report.totals == ["Total", "", D("694.00"), D("510.00"), D("184.00")]
    points = report.chart[0].points
    assert len(points) == 12
    assert points[0] == ("2024-03", D("176.00")) and points[1] == ("2024-04", D("30.00"))
    assert points[-1] == ("2025-02", D("28.00"))


def test_remaining_performance_obligations_before_a_run(book):
    """On 01-31 before anything of February ran: A has 910 - 310 = 600 left (Feb 290, Mar 310); B is not
    billed yet."""
    report = run_report("remaining_performance_obligations", params(book, as_of=date(2024, 1, 31)))
    assert report.rows == [["acme", book.rc_a, D("600.00"), D("600.00"), D(0)]]
    assert report.chart[0].points[:3] == [("2024-02", D("290.00")), ("2024-03", D("310.00")), ("2024-04", D(0))]


def test_trial_balance(book):
    report = run_report("trial_balance", params(book, as_of=date(2024, 3, 31)))
    rows = {row[0]: row[3:] for row in report.rows}
    assert len(rows) == 11
    assert rows["1100"] == ["debit", D("1799.00"), D(0), D("1799.00")]
    assert rows["1200"] == ["debit", D("140.00"), D("140.00"), D(0)]
    # Deferred: Dr 50 + 170 + 490 + 255 = 965, Cr 820 + 839 = 1659.
    assert rows["2100"] == ["credit", D("965.00"), D("1659.00"), D("694.00")]
    assert rows["4000"] == ["credit", D(0), D("1105.00"), D("1105.00")]
    assert rows["1000"] == ["debit", D(0), D(0), D(0)]
    assert report.totals == ["Total", "", "", "", D("2904.00"), D("2904.00"), ""]
    assert report.problems == []
    assert ledger_balance(book.entity.pk, "USD", "deferred_revenue", date(2024, 3, 31)) == D("694.00")
    assert ledger_balance(book.entity.pk, "EUR", "deferred_revenue", date(2024, 3, 31)) == D(0)


def test_journal_report(book):
    report = run_report("journal", params(book, start=date(2024, 1, 1), end=date(2024, 2, 1)))
    # 01-14 earned (2 lines), 01-15 invoice A (3), invoice S (2), S's set-up earned (2), 01-31 run (2):
    # debits 140 + 910 + 50 + 50 + 170 = 1320.
    assert len(report.rows) == 11
    assert [row[3] for row in report.rows] == ["recognition"] * 2 + ["invoice"] * 5 + ["recognition"] * 4
    assert report.totals[7] == report.totals[8] == D("1320.00")
    invoice_lines = {(row[5], row[7], row[8], row[9]) for row in report.rows if row[4] == f"invoice:{book.a.pk}"}
    assert invoice_lines == {("1100", D("910.00"), D(0), "acme"), ("1200", D(0), D("140.00"), "acme"),
                             ("2100", D(0), D("770.00"), "acme")}


def test_positions_as_of(book):
    positions = positions_as_of(book.entity.pk, "USD", date(2024, 2, 29))
    assert [(p.billed, p.recognized, p.deferred, p.contract_asset) for p in positions] == [
        (D("910.00"), D("600.00"), D("310.00"), D(0)), (D("50.00"), D("50.00"), D(0), D(0)),
        (D("839.00"), D("200.00"), D("639.00"), D(0))]
    assert positions_as_of(book.entity.pk, "EUR", date(2024, 2, 29)) == []


@pytest.mark.parametrize(("key", "dates", "field"), [
    ("nope", {}, "key"),
    ("waterfall", {"start": date(2024, 1, 1)}, "end"),
    ("waterfall", {"start": date(2024, 3, 1), "end": date(2024, 1, 1)}, "end"),
    ("waterfall", {"start": date(2024, 1, 1), "end": date(2024, 1, 1)}, "end"),
    ("waterfall", {"start": date(2000, 1, 1), "end": date(2024, 1, 1)}, "end"),
    ("trial_balance", {}, "as_of"),
    ("trial_balance", {"as_of": date(1, 1, 1)}, "as_of"),
    ("journal", {"start": date(2024, 1, 1), "end": date(2035, 1, 1)}, "end"),
])
def test_bad_parameters_name_the_field(book, key, dates, field):
    with pytest.raises(BillingError) as error:
        run_report(key, params(book, **dates))
    assert error.value.field == field


def test_bad_currency_is_refused(book):
    with pytest.raises(BillingError) as error:
        run_report("trial_balance", ReportParams(book.entity.pk, "usd", as_of=date(2024, 1, 1)))
    assert error.value.field == "currency"


def test_report_csv(book):
    report = run_report("waterfall", params(book, start=date(2024, 1, 1), end=date(2024, 3, 1)))
    rows = list(csv.reader(io.StringIO(report_csv(report))))
    assert rows == [
        ["Billing month", "Billed", "Earlier", "2024-01", "2024-02", "Later"],
        ["2024-01", "960.00", "0.00", "360.00", "290.00", "310.00"],
        ["2024-02", "839.00", "0.00", "0.00", "200.00", "639.00"],
        ["Total", "1799.00", "0.00", "360.00", "490.00", "949.00"],
    ]


def test_report_csv_neutralises_formulas(book):
    Customer.objects.filter(pk=book.acme.pk).update(name="=HYPERLINK(\"http://x\")")
    report = run_report("recognised_by_customer", params(book, start=date(2024, 1, 1), end=date(2024, 4, 1)))
    rows = list(csv.reader(io.StringIO(report_csv(report))))
    assert rows[1] == ["acme", "'=HYPERLINK(\"http://x\")", "800.00"]
    journal = run_report("journal", params(book, start=date(2024, 1, 14), end=date(2024, 1, 15)))
    assert list(csv.reader(io.StringIO(report_csv(journal))))[1][1:3] == ["2024-01-14", "2024-01-14"]


def test_journal_export(book):
    period = AccountingPeriod.objects.get(billing_entity=book.entity, start_date=date(2024, 2, 1))
    rows = list(csv.DictReader(io.StringIO(journal_export_csv(book.entity, period))))
    assert list(rows[0]) == list(JOURNAL_EXPORT_COLUMNS)
    # February: invoice B (Dr receivable 839 / Cr deferred 839), the 02-29 run (Dr deferred 490 / Cr revenue
    # 290 pro of A and 200 pro of B: one revenue line, product pro).
    assert [(r["entry_date"], r["account_code"], r["debit"], r["credit"], r["customer_external_id"],
             r["product_code"]) for r in rows] == [
        ("2024-02-10", "1100", "839.00", "0.00", "beta", ""),
        ("2024-02-10", "2100", "0.00", "839.00", "beta", ""),
        ("2024-02-29", "4000", "0.00", "490.00", "", "pro"),
        ("2024-02-29", "2100", "490.00", "0.00", "", ""),
    ]
    assert {r["period"] for r in rows} == {"2024-02"} and {r["currency"] for r in rows} == {"USD"}
    for number in {r["entry_number"] for r in rows}:
        lines = [r for r in rows if r["entry_number"] == number]
        assert sum(D(r["debit"]) for r in lines) == sum(D(r["credit"]) for r in lines)
    assert rows[0]["source_key"] == f"invoice:{book.b.pk}" and rows[0]["original_date"] == "2024-02-10"
    assert rows[0]["description"].startswith(f"Invoice {book.b.number}")


def test_two_lines_of_one_contract_earned_at_posting_reconcile(actor):
    """One invoice: a subscription already 14 days in (140.00 earned on 01-14) and a set-up delivered at
    once (50.00 on 01-15). The set-up's 50 must come out of deferred revenue (billed 960 > recognised 190),
    never land in the contract asset: the roll-forward and the unbilled revenue reconcile."""
    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity)
    invoice = create_one_off_invoice(customer, [
        ManualLine("Pro", D("910.00"), period_start=date(2024, 1, 1), period_end=date(2024, 4, 1)),
        ManualLine("Set-up", D("50.00")),
    ], actor=actor, now=at(date(2024, 1, 15)), finalize=True)
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=at(date(2024, 1, 15)))
    day = ReportParams(entity.pk, "USD", as_of=date(2024, 1, 15))
    assert run_report("unbilled_revenue", day).problems == []
    month = ReportParams(entity.pk, "USD", start=date(2024, 1, 1), end=date(2024, 2, 1))
    assert run_report("deferred_rollforward", month).problems == []
