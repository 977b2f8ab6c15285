"""The demo's revenue and ledger: every document posted, revenue recognised every night, the implementation
bundle allocated by SSP and recognised on delivery, every month closed but the last complete one, which a
new user can close (every blocking check passes), and the reports reconcile with the ledger."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db.models import Sum

from billing.demo import load_demo_data
from revrec.models import AccountingPeriod, JournalEntry, JournalLine, PerformanceObligation
from revrec.selectors.report_types import ReportParams
from revrec.selectors.reports import run_report
from revrec.selectors.unposted import unposted_documents
from revrec.services.close import close_checklist

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
D = Decimal


def test_demo_revenue_is_posted_recognised_and_closable() -> None:
    assert load_demo_data(now=NOW).created

    open_periods = AccountingPeriod.objects.filter(status="open").order_by("billing_entity__code", "start_date")
    for code in ("northwind-eu", "northwind-us"):
        months = [p.start_date for p in open_periods if p.billing_entity.code == code]
        # February (the last complete month) is left for the user; every earlier month is closed.
        assert months == [date(2026, 2, 1), date(2026, 3, 1)], code
        period = open_periods.get(billing_entity__code=code, start_date=date(2026, 2, 1))
        assert unposted_documents(period.billing_entity_id, period.end_date) == []
        blocking = [c for c in close_checklist(period, now=NOW) if c.blocking and not c.passed]
        assert blocking == [], [(c.name, c.detail, c.items) for c in blocking]

    # Every entry balances; the whole ledger nets to zero per entity and currency.
    per_book = JournalLine.objects.values("entry__billing_entity", "entry__currency").annotate(
        debit=Sum("debit"), credit=Sum("credit"))
    assert per_book and all(row["debit"] == row["credit"] for row in per_book)
    assert not [e for e in JournalEntry.objects.all() if sum(x.debit for x in e.lines.all()) != e.total]

    # Globex's bundle: implementation at its SSP (15,000), premium support at ~1,500 a month, training the
    # residual; the implementation was delivered three weeks later and recognised then.
    bundle = PerformanceObligation.objects.filter(invoice_line__invoice__memo__startswith="Implementation bundle")
    implementation = bundle.get(product__code="implementation")
    assert implementation.allocated_price == D("15000.00")
    assert implementation.status == "complete" and implementation.satisfied_on is not None
    assert sum(o.allocated_price for o in bundle) == D("21000.00")
    assert bundle.get(product__code="training").ssp_source.startswith("residual")

    # The reports reconcile with the ledger.
    for entity_code, currency in (("northwind-us", "USD"), ("northwind-eu", "EUR")):
        entity_id = AccountingPeriod.objects.filter(billing_entity__code=entity_code).first().billing_entity_id
        rollforward = run_report("deferred_rollforward", ReportParams(
            entity_id=entity_id, currency=currency, start=date(2025, 12, 1), end=date(2026, 4, 1)))
        assert rollforward.problems == []
        trial = run_report("trial_balance", ReportParams(entity_id=entity_id, currency=currency, as_of=NOW.date()))
        assert trial.problems == []
        waterfall = run_report("waterfall", ReportParams(
            entity_id=entity_id, currency=currency, start=date(2025, 12, 1), end=date(2026, 4, 1)))
        assert waterfall.rows
