"""Contract modifications, hand-computed on an annual 12,000.00 obligation over 2026-01-01 .. 2027-01-01
(365 days), billed up front, upgraded on 2026-07-01 by 6,000.00 for the rest of the year.

Recognised through 30 June (181 days): round(12000 x 181/365 = 5950.684) = 5,950.68.
- Prospective: remaining 12,000 - 5,950.68 = 6,049.32, plus 6,000 = 12,049.32 over the 184 days from 1 July;
  July = round(12049.32 x 31/184 = 2030.0485) = 2,030.05; the year adds up to 18,000.00.
- Cumulative catch-up: allocated 18,000.00 as if from the start; through 30 June round(18000 x 181/365 =
  8926.027) = 8,926.03, so 8,926.03 - 5,950.68 = 2,975.35 at once on 1 July; July = round(18000 x 212/365 =
  10454.794) - 8,926.03 = 10,454.79 - 8,926.03 = 1,528.76; the year adds up to 18,000.00.
- Separate contract: a 6,000.00 add-on at its SSP, its own contract; the original keeps its 12,000.00.
- Cancellation on 1 October: through 30 September round(12000 x 273/365 = 8975.342) = 8,975.34; with the
  3,024.66 unused credited (price change -3,024.66) nothing more is recognised.
"""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing.errors import BillingError
from revrec.models import (
    ContractModification,
    JournalEntry,
    ObligationAdjustment,
    PerformanceObligation,
    Recognition,
    RevenueContract,
)
from revrec.services.modifications import AddedObligation, ObligationChange, modify_contract
from revrec.services.recognition import recognize_through
from tests.factories import BillingEntityFactory, CustomerFactory

D = Decimal
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
START, END = date(2026, 1, 1), date(2027, 1, 1)

pytestmark = pytest.mark.django_db


@pytest.fixture
def annual():
    entity = BillingEntityFactory(default_currency="USD", timezone="UTC")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    contract = RevenueContract.objects.create(
        billing_entity=entity, customer=customer, reference="RC-ANNUAL", currency="USD",
        transaction_price=D("12000.00"), billed=D("12000.00"), created_at=NOW,
    )
    return PerformanceObligation.objects.create(
        revenue_contract=contract, description="Annual plan", kind="subscription", pattern="ratable",
        service_start=START, service_end=END, billed_amount=D("12000.00"), billed_on=START, ssp=D("12000.00"),
        allocated_price=D("12000.00"), created_at=NOW,
    )


def recognised(obligation: PerformanceObligation, day: date, actor) -> Decimal:
    return recognize_through(day, actor=actor, now=NOW).amounts.get("USD", D(0))


def upgrade(obligation, actor, **facts) -> ContractModification:
    return modify_contract(
        obligation.revenue_contract, change="upgrade", effective_date=date(2026, 7, 1),
        obligation_changes=[ObligationChange(obligation, price_change=D("6000.00"))], actor=actor, now=NOW,
        source_key="upgrade-1", **facts,
    )


def test_prospective_upgrade(annual, actor) -> None:
    assert recognised(annual, date(2026, 6, 30), actor) == D("5950.68")
    modification = upgrade(annual, actor, adds_distinct_goods=True, priced_at_ssp=False, remaining_distinct=True)
    assert modification.treatment == "prospective" and "25-13(a)" in modification.rationale
    annual.refresh_from_db()
    assert (annual.allocated_price, annual.rebased_on, annual.rebased_amount) == (
        D("18000.00"), date(2026, 7, 1), D("5950.68"))
    assert modification.details["remaining_reallocated"] == "12049.32"
    assert modification.details["obligations"][0]["before"]["allocated_price"] == "12000.0000"
    adjustment = ObligationAdjustment.objects.get()
    assert (adjustment.kind, adjustment.allocated_delta, adjustment.billed_delta, adjustment.effective_on,
            adjustment.source_key) == ("modification", D("6000.00"), D(0), date(2026, 7, 1),
                                       f"modification:{modification.pk}")
    assert recognised(annual, date(2026, 7, 31), actor) == D("2030.05")
    assert recognised(annual, date(2026, 12, 31), actor) == D("18000.00") - D("5950.68") - D("2030.05")
    annual.refresh_from_db()
    assert (annual.recognized_amount, annual.status) == (D("18000.00"), "complete")
    contract = RevenueContract.objects.get()
    # Billed 12,000 (the upgrade's 6,000 is invoiced separately): recognised ahead, a contract asset of 6,000.
    assert (contract.recognized, contract.transaction_price) == (D("18000.00"), D("18000.00"))
    assert sum(r.amount for r in Recognition.objects.all()) == D("18000.00")
    # The same key again: the modification already recorded, nothing changed twice.
    assert upgrade(annual, actor, adds_distinct_goods=True, priced_at_ssp=False, remaining_distinct=True).pk == (
        modification.pk)
    assert ObligationAdjustment.objects.count() == 1


def test_cumulative_catch_up(annual, actor) -> None:
    assert recognised(annual, date(2026, 6, 30), actor) == D("5950.68")
    modification = upgrade(annual, actor, adds_distinct_goods=False, priced_at_ssp=False, remaining_distinct=False)
    assert modification.treatment == "cumulative_catch_up"
    assert modification.catch_up_amount == D("2975.35")
    entry = JournalEntry.objects.get(source_key=f"modification:{modification.pk}")
    assert (entry.kind, entry.entry_date, entry.total) == ("modification", date(2026, 7, 1), D("2975.35"))
    lines = {(line.account.role, line.debit, line.credit) for line in entry.lines.select_related("account")}
    # Billed 12,000, recognised 8,926.03 after it: still deferred, so deferred revenue is debited.
    assert lines == {("revenue", D(0), D("2975.35")), ("deferred_revenue", D("2975.35"), D(0))}
    catch_up = Recognition.objects.get(kind="catch_up")
    assert (catch_up.amount, catch_up.recognized_on) == (D("2975.35"), date(2026, 7, 1))
    assert ObligationAdjustment.objects.get().allocated_delta == D("6000.00")
    assert recognised(annual, date(2026, 7, 31), actor) == D("1528.76")
    recognised(annual, date(2026, 12, 31), actor)
    annual.refresh_from_db()
    assert (annual.recognized_amount, annual.status) == (D("18000.00"), "complete")
    assert sum(r.amount for r in Recognition.objects.all()) == D("18000.00")


def test_separate_contract(annual, actor) -> None:
    modification = modify_contract(
        annual.revenue_contract, change="added_product", effective_date=date(2026, 7, 1),
        obligation_changes=[AddedObligation("Add-on", D("6000.00"), date(2026, 7, 1), END)],
        adds_distinct_goods=True, priced_at_ssp=True, remaining_distinct=True, actor=actor, now=NOW,
        source_key="add-on",
    )
    assert modification.treatment == "separate_contract"
    new = modification.separate_contract
    assert (new.parent_id, new.reference, new.transaction_price) == (
        annual.revenue_contract_id, "RC-ANNUAL-M1", D("6000.00"))
    added = new.obligations.get()
    assert (added.allocated_price, added.service_start) == (D("6000.00"), date(2026, 7, 1))
    annual.refresh_from_db()
    assert (annual.allocated_price, annual.rebased_on) == (D("12000.00"), None)
    # July of the add-on: round(6000 x 31/184 = 1010.87) = 1,010.87; of the original round(12000 x 212/365) -
    # 5,950.68 = 6,969.86 - 5,950.68 = 1,019.18.
    recognised(annual, date(2026, 6, 30), actor)
    assert recognised(annual, date(2026, 7, 31), actor) == D("1010.87") + D("1019.18")


def test_cancellation_ends_the_obligation(annual, actor) -> None:
    assert recognised(annual, date(2026, 9, 30), actor) == D("8975.34")
    modification = modify_contract(
        annual.revenue_contract, change="cancellation", effective_date=date(2026, 10, 1),
        obligation_changes=[ObligationChange(annual, price_change=D("-3024.66"))], adds_distinct_goods=False,
        priced_at_ssp=False, remaining_distinct=True, actor=actor, now=NOW, source_key="cancel",
    )
    annual.refresh_from_db()
    assert (annual.service_end, annual.allocated_price) == (date(2026, 10, 1), D("8975.34"))
    assert ObligationAdjustment.objects.get().allocated_delta == D("-3024.66")
    assert modification.treatment == "prospective"
    assert recognised(annual, date(2026, 10, 31), actor) == 0
    annual.refresh_from_db()
    assert annual.status == "complete"


def test_bad_input_is_refused(annual, actor) -> None:
    with pytest.raises(BillingError):
        modify_contract(annual.revenue_contract, change="upgrade", effective_date=date(2026, 7, 1),
                        obligation_changes=[ObligationChange(annual, price_change=D("1.001"))],
                        adds_distinct_goods=False, priced_at_ssp=False, remaining_distinct=True, actor=actor, now=NOW,
                        source_key="bad")
    with pytest.raises(BillingError):
        modify_contract(annual.revenue_contract, change="added_product", effective_date=date(2026, 7, 1),
                        obligation_changes=[ObligationChange(annual, price_change=D("1.00"))],
                        adds_distinct_goods=True, priced_at_ssp=True, remaining_distinct=True, actor=actor, now=NOW,
                        source_key="bad-2")
    assert not ContractModification.objects.exists()
