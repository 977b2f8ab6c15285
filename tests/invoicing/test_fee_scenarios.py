"""Subscription fees and proration through the real cycle close, with every figure computed by hand.

Each scenario subscribes through the contracts services, closes the customer at the moments a cycle close
would run (entities without a grace period, so every close finalizes) and checks the exact lines: kind,
amount and service period, as DESIGN states proration (price x days used / days of the full period, the
day of a change at the new terms, rounded half-up once per line on the period's running total).
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from djmoney.money import Money

from billing.actors import Actor
from contracts.models import ContractPrice, PlanVersion, Subscription
from contracts.services.subscriptions import (
    cancel_subscription,
    change_plan,
    change_quantity,
    create_subscription,
    pause_subscription,
    resume_subscription,
)
from customers.models import Customer
from invoicing.models import BilledPeriod, Invoice
from invoicing.services.cycle import close_customer
from invoicing.services.payments import credit_balance
from tests.factories import (
    BillingEntityFactory,
    ContractFactory,
    CustomerFactory,
    FixedChargeFactory,
    PlanFactory,
    PlanVersionFactory,
)

pytestmark = pytest.mark.django_db

D = Decimal
FEE = "subscription_fee"
CREDIT = "proration_credit"
CHARGE = "proration_charge"
FIXED = "fixed"

Row = tuple[str, Decimal, date | None, date | None]


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def rows(invoice: Invoice) -> list[Row]:
    return [(line.kind, line.amount, line.period_start, line.period_end) for line in invoice.lines.order_by("position")]


def close1(customer: Customer, day: date, actor: Actor, hour: int = 12) -> Invoice:
    """Close as of `day` and expect exactly one finalized invoice."""
    invoices = close_customer(customer, now=at(day, hour), actor=actor)
    assert len(invoices) == 1, invoices
    [invoice] = invoices
    # An invoice that owes nothing (a credit) is settled at finalization: its credit goes to the balance.
    assert invoice.status == (Invoice.Status.FINALIZED if invoice.amount_due > 0 else Invoice.Status.PAID)
    assert invoice.total == sum((line.amount for line in invoice.lines.all()), D(0))
    return invoice


def make_customer(tz: str = "UTC") -> Customer:
    entity = BillingEntityFactory(timezone=tz, invoice_grace_days=0)
    return CustomerFactory(billing_entity=entity, timezone=tz)


@pytest.fixture
def customer() -> Customer:
    return make_customer()


def version(fee: str, *, interval: str = "month", timing: str = "advance", **kwargs) -> PlanVersion:
    return PlanVersionFactory(plan=PlanFactory(interval=interval), base_fee=Money(fee, "USD"),
                              base_fee_timing=timing, **kwargs)


def subscribe(customer: Customer, plan_version: PlanVersion, actor: Actor, start: date, **kwargs) -> Subscription:
    return create_subscription(customer=customer, plan_version=plan_version, actor=actor, now=at(start),
                               start_date=start, **kwargs)


# --- starts -----------------------------------------------------------------------------------------------------


def test_start_mid_month_in_advance(customer, actor):
    subscribe(customer, version("100.00"), actor, date(2024, 1, 10))
    # 10 Jan to 1 Feb is 22 of January's 31 days: 100 x 22/31 = 70.9677 -> 70.97.
    first = close1(customer, date(2024, 1, 10), actor)
    assert rows(first) == [(FEE, D("70.97"), date(2024, 1, 10), date(2024, 2, 1))]
    # Nothing changed in January: February's fee in full, nothing to settle.
    second = close1(customer, date(2024, 2, 1), actor)
    assert rows(second) == [(FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1))]


def test_start_mid_month_in_arrears(customer, actor):
    subscribe(customer, version("100.00", timing="arrears"), actor, date(2024, 1, 10))
    # Nothing is due while the first period runs.
    assert close_customer(customer, now=at(date(2024, 1, 10)), actor=actor) == []
    assert close_customer(customer, now=at(date(2024, 1, 31)), actor=actor) == []
    first = close1(customer, date(2024, 2, 1), actor)
    assert rows(first) == [(FEE, D("70.97"), date(2024, 1, 10), date(2024, 2, 1))]  # 100 x 22/31
    # February 2024 has 29 days, billed whole.
    second = close1(customer, date(2024, 3, 1), actor)
    assert rows(second) == [(FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1))]


def test_leap_and_common_february_proration(actor):
    leap, common = make_customer(), make_customer()
    subscribe(leap, version("100.00"), actor, date(2024, 2, 10))
    subscribe(common, version("100.00"), actor, date(2023, 2, 10))
    # 2024: 10 Feb to 1 Mar is 20 of 29 days: 68.9655 -> 68.97. 2023: 19 of 28 days: 67.8571 -> 67.86.
    assert rows(close1(leap, date(2024, 2, 10), actor)) == [(FEE, D("68.97"), date(2024, 2, 10), date(2024, 3, 1))]
    assert rows(close1(common, date(2023, 2, 10), actor)) == [
        (FEE, D("67.86"), date(2023, 2, 10), date(2023, 3, 1))
    ]


# --- quantity changes, plan changes -----------------------------------------------------------------------------


def test_quantity_up_now_and_down_at_period_end_and_now(customer, actor):
    sub = subscribe(customer, version("10.00"), actor, date(2024, 1, 1), quantity=5)
    assert rows(close1(customer, date(2024, 1, 1), actor)) == [(FEE, D("50.00"), date(2024, 1, 1), date(2024, 2, 1))]

    # 5 -> 8 seats on 11 January (an increase applies at once, the day itself at 8 seats).
    change_quantity(sub, 8, actor=actor, now=at(date(2024, 1, 11)))
    # Used: 50 x 10/31 = 16.1290 -> 16.13, so the credit is 50.00 - 16.13 = 33.87.
    # Remaining: 80 x 21/31 = 54.1935; on the running total 16.1290 + 54.1935 = 70.3226 -> 70.32, minus 16.13 = 54.19.
    # January as a whole: 50.00 - 33.87 + 54.19 = 70.32 = round((50 x 10 + 80 x 21) / 31).
    feb = close1(customer, date(2024, 2, 1), actor)
    assert rows(feb) == [
        (CREDIT, D("-33.87"), date(2024, 1, 11), date(2024, 2, 1)),
        (CHARGE, D("54.19"), date(2024, 1, 11), date(2024, 2, 1)),
        (FEE, D("80.00"), date(2024, 2, 1), date(2024, 3, 1)),
    ]
    assert feb.total == D("100.32")

    # 8 -> 3 seats on 10 February: a decrease waits for the period end (1 March), applied by that close.
    change_quantity(sub, 3, actor=actor, now=at(date(2024, 2, 10)))
    assert rows(close1(customer, date(2024, 3, 1), actor)) == [(FEE, D("30.00"), date(2024, 3, 1), date(2024, 4, 1))]

    # 3 -> 2 seats on 16 March, asked to apply now. Used: 30 x 15/31 = 14.5161 -> 14.52, credit 15.48.
    # Remaining: 20 x 16/31 = 10.3226; running 14.5161 + 10.3226 = 24.8387 -> 24.84, minus 14.52 = 10.32.
    change_quantity(sub, 2, actor=actor, now=at(date(2024, 3, 16)), timing="immediate")
    assert rows(close1(customer, date(2024, 4, 1), actor)) == [
        (CREDIT, D("-15.48"), date(2024, 3, 16), date(2024, 4, 1)),
        (CHARGE, D("10.32"), date(2024, 3, 16), date(2024, 4, 1)),
        (FEE, D("20.00"), date(2024, 4, 1), date(2024, 5, 1)),
    ]


def test_quantity_up_on_the_first_day_after_the_advance_close(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    close1(customer, date(2024, 1, 1), actor)
    close1(customer, date(2024, 2, 1), actor, hour=0)  # February billed at 1 seat
    change_quantity(sub, 2, actor=actor, now=at(date(2024, 2, 1), 15))
    # The change takes effect on 1 February itself: no day of February at 1 seat, so its 100.00 is credited in
    # full and the whole month charged at 2 seats (200 x 29/29).
    assert rows(close1(customer, date(2024, 3, 1), actor)) == [
        (CREDIT, D("-100.00"), date(2024, 2, 1), date(2024, 3, 1)),
        (CHARGE, D("200.00"), date(2024, 2, 1), date(2024, 3, 1)),
        (FEE, D("200.00"), date(2024, 3, 1), date(2024, 4, 1)),
    ]


def test_downgrade_applies_at_period_end_before_the_next_fee(customer, actor):
    pro = version("200.00")
    basic = version("100.00")
    sub = subscribe(customer, pro, actor, date(2024, 1, 1))
    close1(customer, date(2024, 1, 1), actor)
    change_plan(sub, basic, actor=actor, now=at(date(2024, 1, 15)))  # a downgrade: scheduled for 1 February
    # January stays on Pro (nothing to settle); February's fee is Basic's.
    feb = close1(customer, date(2024, 2, 1), actor)
    assert rows(feb) == [(FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1))]
    assert feb.lines.get().explanation["fee"]["key"] == basic.pk


# --- cancellation ---------------------------------------------------------------------------------------------


def test_cancel_now_credits_the_unused_part(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    january = close1(customer, date(2024, 1, 1), actor)
    cancel_subscription(sub, actor=actor, now=at(date(2024, 1, 20)))
    # Served 1 to 19 January: 100 x 19/31 = 61.2903 -> 61.29; credit 100.00 - 61.29 = 38.71 from 20 January.
    final = close1(customer, date(2024, 1, 20), actor)
    assert rows(final) == [(CREDIT, D("-38.71"), date(2024, 1, 20), date(2024, 2, 1))]
    assert final.total == D("-38.71")
    # The credit settles what the customer still owes: January's unpaid fee now asks for the days served.
    january.refresh_from_db()
    assert (final.status, final.amount_due, credit_balance(customer, "USD")) == (Invoice.Status.PAID, 0, 0)
    assert (january.status, january.amount_due) == (Invoice.Status.FINALIZED, D("61.29"))
    # No fee after the cancellation.
    assert close_customer(customer, now=at(date(2024, 2, 1)), actor=actor) == []
    assert close_customer(customer, now=at(date(2024, 3, 1)), actor=actor) == []


def test_cancel_now_on_the_first_day_of_a_period_already_billed(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    close1(customer, date(2024, 1, 1), actor)
    close1(customer, date(2024, 2, 1), actor, hour=0)  # the night's close billed February in advance
    # Cancelled later on 1 February: no day of February is served, so its whole fee is credited.
    cancel_subscription(sub, actor=actor, now=at(date(2024, 2, 1), 15))
    final = close1(customer, date(2024, 2, 1), actor, hour=16)
    assert rows(final) == [(CREDIT, D("-100.00"), date(2024, 2, 1), date(2024, 3, 1))]
    assert close_customer(customer, now=at(date(2024, 3, 1)), actor=actor) == []


def test_backfill_after_a_cancellation(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    cancel_subscription(sub, actor=actor, now=at(date(2024, 2, 15)))
    # Never closed until April: January in full, then 1 to 15 February, 14 of 29 days: 48.2759 -> 48.28.
    assert rows(close1(customer, date(2024, 4, 1), actor)) == [
        (FEE, D("100.00"), date(2024, 1, 1), date(2024, 2, 1)),
        (FEE, D("48.28"), date(2024, 2, 1), date(2024, 2, 15)),
    ]
    assert close_customer(customer, now=at(date(2024, 5, 1)), actor=actor) == []


def test_cancel_at_period_end(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    close1(customer, date(2024, 1, 1), actor)
    cancel_subscription(sub, actor=actor, now=at(date(2024, 1, 20)), at_period_end=True)
    # January was served in full; the close of 1 February ends the subscription and bills nothing.
    assert close_customer(customer, now=at(date(2024, 2, 1)), actor=actor) == []
    sub.refresh_from_db()
    assert (sub.status, sub.end_date) == (Subscription.Status.CANCELED, date(2024, 2, 1))
    assert close_customer(customer, now=at(date(2024, 3, 1)), actor=actor) == []


# --- trial, pause -------------------------------------------------------------------------------------------


def test_trial_then_prorated_fee_from_trial_end(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1), trial_days=14)
    assert sub.trial_end_date == date(2024, 1, 15)
    # Trial 1 to 14 January is free; 15 January to 1 February is 17 of 31 days: 54.8387 -> 54.84.
    # Nothing is invoiced during the trial; the first close after it bills the rest of January in advance.
    assert close_customer(customer, now=at(date(2024, 1, 1)), actor=actor) == []
    assert close_customer(customer, now=at(date(2024, 1, 14)), actor=actor) == []
    assert rows(close1(customer, date(2024, 1, 15), actor)) == [(FEE, D("54.84"), date(2024, 1, 15), date(2024, 2, 1))]
    assert rows(close1(customer, date(2024, 2, 1), actor)) == [(FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1))]


def test_trial_cancelled_before_its_end_is_never_invoiced(customer, actor):
    plan_version = version("100.00")
    FixedChargeFactory(plan_version=plan_version, code="setup", name="Setup", amount=Money("250.00", "USD"),
                       recurring=False)
    sub = subscribe(customer, plan_version, actor, date(2024, 1, 1), trial_days=14)
    assert close_customer(customer, now=at(date(2024, 1, 1)), actor=actor) == []
    cancel_subscription(sub, actor=actor, now=at(date(2024, 1, 10)))
    for day in (date(2024, 1, 10), date(2024, 1, 15), date(2024, 2, 1)):
        assert close_customer(customer, now=at(day), actor=actor) == []
    assert not Invoice.objects.filter(customer=customer).exists()


def test_trial_in_arrears(customer, actor):
    subscribe(customer, version("100.00", timing="arrears"), actor, date(2024, 1, 1), trial_days=14)
    # Billed when January ends, for 15 January to 1 February only: 100 x 17/31 = 54.84.
    assert close_customer(customer, now=at(date(2024, 1, 15)), actor=actor) == []
    assert rows(close1(customer, date(2024, 2, 1), actor)) == [(FEE, D("54.84"), date(2024, 1, 15), date(2024, 2, 1))]


def test_pause_and_resume_within_a_period(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    close1(customer, date(2024, 1, 1), actor)
    pause_subscription(sub, actor=actor, now=at(date(2024, 1, 11)))
    resume_subscription(sub, actor=actor, now=at(date(2024, 1, 21)))
    # Paused 11 to 20 January (10 days). Served 1-10 Jan: 100 x 10/31 = 32.2581 -> 32.26, credit 67.74 from 11 Jan.
    # Resumed 21 Jan to 1 Feb, 11 days: running 32.2581 + 35.4839 = 67.7419 -> 67.74, minus 32.26 = 35.48.
    # January as a whole: 100.00 - 67.74 + 35.48 = 67.74 = round(100 x 21/31).
    assert rows(close1(customer, date(2024, 2, 1), actor)) == [
        (CREDIT, D("-67.74"), date(2024, 1, 11), date(2024, 2, 1)),
        (CHARGE, D("35.48"), date(2024, 1, 21), date(2024, 2, 1)),
        (FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1)),
    ]


def test_pause_across_a_period_boundary(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    close1(customer, date(2024, 1, 1), actor)
    pause_subscription(sub, actor=actor, now=at(date(2024, 1, 21)))
    # Served 1-20 Jan: 100 x 20/31 = 64.5161 -> 64.52, credit 35.48; nothing billed ahead for paused February.
    assert rows(close1(customer, date(2024, 2, 1), actor)) == [
        (CREDIT, D("-35.48"), date(2024, 1, 21), date(2024, 2, 1)),
    ]
    resume_subscription(sub, actor=actor, now=at(date(2024, 2, 10)))
    # February: served 10 Feb to 1 Mar, 20 of 29 days: 68.9655 -> 68.97, billed when February closes.
    assert rows(close1(customer, date(2024, 3, 1), actor)) == [
        (FEE, D("68.97"), date(2024, 2, 10), date(2024, 3, 1)),
        (FEE, D("100.00"), date(2024, 3, 1), date(2024, 4, 1)),
    ]


# --- intervals and anchors -----------------------------------------------------------------------------------


def test_weekly_calendar_weeks_start_on_monday(customer, actor):
    subscribe(customer, version("70.00", interval="week"), actor, date(2024, 1, 3))  # a Wednesday
    # Week of Monday 1 January: 3 to 8 January is 5 of 7 days: 70 x 5/7 = 50.00.
    assert rows(close1(customer, date(2024, 1, 3), actor)) == [(FEE, D("50.00"), date(2024, 1, 3), date(2024, 1, 8))]
    assert close_customer(customer, now=at(date(2024, 1, 7)), actor=actor) == []
    assert rows(close1(customer, date(2024, 1, 8), actor)) == [(FEE, D("70.00"), date(2024, 1, 8), date(2024, 1, 15))]


def test_quarterly_calendar_prorated_first_quarter(customer, actor):
    subscribe(customer, version("300.00", interval="quarter"), actor, date(2024, 2, 15))
    # Q1 2024 is 31 + 29 + 31 = 91 days; 15 Feb to 1 Apr is 15 + 31 = 46: 300 x 46/91 = 151.6484 -> 151.65.
    assert rows(close1(customer, date(2024, 2, 15), actor)) == [
        (FEE, D("151.65"), date(2024, 2, 15), date(2024, 4, 1))
    ]
    assert close_customer(customer, now=at(date(2024, 3, 31)), actor=actor) == []
    assert rows(close1(customer, date(2024, 4, 1), actor)) == [(FEE, D("300.00"), date(2024, 4, 1), date(2024, 7, 1))]


def test_half_year_anniversary(customer, actor):
    subscribe(customer, version("600.00", interval="half_year"), actor, date(2024, 3, 10),
              billing_anchor="anniversary")
    assert rows(close1(customer, date(2024, 3, 10), actor)) == [
        (FEE, D("600.00"), date(2024, 3, 10), date(2024, 9, 10))
    ]
    assert close_customer(customer, now=at(date(2024, 9, 9)), actor=actor) == []
    assert rows(close1(customer, date(2024, 9, 10), actor)) == [
        (FEE, D("600.00"), date(2024, 9, 10), date(2025, 3, 10))
    ]


def test_monthly_anniversary_vs_calendar(actor):
    anniversary, calendar = make_customer(), make_customer()
    subscribe(anniversary, version("100.00"), actor, date(2024, 1, 15), billing_anchor="anniversary")
    subscribe(calendar, version("100.00"), actor, date(2024, 1, 15))
    # Anniversary: whole months from the 15th. Calendar: 15 Jan to 1 Feb is 17/31: 54.8387 -> 54.84.
    assert rows(close1(anniversary, date(2024, 1, 15), actor)) == [
        (FEE, D("100.00"), date(2024, 1, 15), date(2024, 2, 15))
    ]
    assert rows(close1(calendar, date(2024, 1, 15), actor)) == [
        (FEE, D("54.84"), date(2024, 1, 15), date(2024, 2, 1))
    ]
    assert close_customer(anniversary, now=at(date(2024, 2, 14)), actor=actor) == []
    assert rows(close1(anniversary, date(2024, 2, 15), actor)) == [
        (FEE, D("100.00"), date(2024, 2, 15), date(2024, 3, 15))
    ]


def test_yearly_calendar_in_a_leap_year_divides_by_366(customer, actor):
    subscribe(customer, version("1200.00", interval="year"), actor, date(2024, 7, 1))
    # 1 Jul 2024 to 1 Jan 2025 is 184 of 2024's 366 days: 1200 x 184/366 = 603.2787 -> 603.28 (not 604.93 = /365).
    assert rows(close1(customer, date(2024, 7, 1), actor)) == [
        (FEE, D("603.28"), date(2024, 7, 1), date(2025, 1, 1))
    ]
    assert rows(close1(customer, date(2025, 1, 1), actor)) == [
        (FEE, D("1200.00"), date(2025, 1, 1), date(2026, 1, 1))
    ]


def test_yearly_anniversary_from_february_29(customer, actor):
    subscribe(customer, version("366.00", interval="year", timing="arrears"), actor, date(2024, 2, 29),
              billing_anchor="anniversary")
    # The anniversary of 29 Feb is clamped to 28 Feb in common years: the first year ends on 28 Feb 2025.
    assert close_customer(customer, now=at(date(2025, 2, 27)), actor=actor) == []
    assert rows(close1(customer, date(2025, 2, 28), actor)) == [
        (FEE, D("366.00"), date(2024, 2, 29), date(2025, 2, 28))
    ]


def test_bill_cycle_day_31_is_clamped_in_february(customer, actor):
    subscribe(customer, version("100.00"), actor, date(2024, 1, 15), billing_anchor="day_of_month",
              bill_cycle_day=31)
    # First period 15 to 31 January, part of the full period 31 Dec to 31 Jan (31 days): 100 x 16/31 = 51.61.
    assert rows(close1(customer, date(2024, 1, 15), actor)) == [
        (FEE, D("51.61"), date(2024, 1, 15), date(2024, 1, 31))
    ]
    assert rows(close1(customer, date(2024, 1, 31), actor)) == [
        (FEE, D("100.00"), date(2024, 1, 31), date(2024, 2, 29))
    ]
    # The 31st of February 2024 is the 29th; nothing is due on the 28th.
    assert close_customer(customer, now=at(date(2024, 2, 28)), actor=actor) == []
    assert rows(close1(customer, date(2024, 2, 29), actor)) == [
        (FEE, D("100.00"), date(2024, 2, 29), date(2024, 3, 31))
    ]


# --- timezones --------------------------------------------------------------------------------------------------


def test_customer_far_ahead_of_utc(actor):
    customer = make_customer("Pacific/Kiritimati")  # UTC+14
    subscribe(customer, version("100.00", timing="arrears"), actor, date(2024, 1, 1))
    # 09:59 UTC on 31 January is 23:59 on 31 January in Kiritimati: January has not ended there.
    assert close_customer(customer, now=datetime(2024, 1, 31, 9, 59, tzinfo=UTC), actor=actor) == []
    # 10:00 UTC is midnight of 1 February there, while it is still 31 January in UTC.
    [invoice] = close_customer(customer, now=datetime(2024, 1, 31, 10, 0, tzinfo=UTC), actor=actor)
    assert rows(invoice) == [(FEE, D("100.00"), date(2024, 1, 1), date(2024, 2, 1))]


def test_customer_far_behind_utc(actor):
    customer = make_customer("Pacific/Pago_Pago")  # UTC-11
    local_start = datetime(2024, 1, 1, 9, tzinfo=ZoneInfo("Pacific/Pago_Pago"))
    create_subscription(customer=customer, plan_version=version("100.00", timing="arrears"), actor=actor,
                        now=local_start)
    # 10:59 UTC on 1 February is 23:59 on 31 January in Pago Pago: nothing is due yet, though UTC is in February.
    assert close_customer(customer, now=datetime(2024, 2, 1, 10, 59, tzinfo=UTC), actor=actor) == []
    [invoice] = close_customer(customer, now=datetime(2024, 2, 1, 11, 0, tzinfo=UTC), actor=actor)
    assert rows(invoice) == [(FEE, D("100.00"), date(2024, 1, 1), date(2024, 2, 1))]


# --- contract ramps, fixed charges, term end ------------------------------------------------------------------


def test_contract_base_fee_ramp_mid_period(customer, actor):
    plan_version = version("100.00")
    contract = ContractFactory(customer=customer, start_date=date(2024, 1, 1))
    ContractPrice.objects.create(contract=contract, target=ContractPrice.Target.BASE_FEE, plan_version=plan_version,
                                 amount=Money("80.00", "USD"), effective_to=date(2024, 1, 16))
    ContractPrice.objects.create(contract=contract, target=ContractPrice.Target.BASE_FEE, plan_version=plan_version,
                                 amount=Money("120.00", "USD"), effective_from=date(2024, 1, 16))
    subscribe(customer, plan_version, actor, date(2024, 1, 1), contract=contract)
    # In advance, January is billed at the price of its first day: 80.00.
    assert rows(close1(customer, date(2024, 1, 1), actor)) == [(FEE, D("80.00"), date(2024, 1, 1), date(2024, 2, 1))]
    # 1-15 Jan at 80: 80 x 15/31 = 38.7097 -> 38.71, credit 80.00 - 38.71 = 41.29 from 16 January.
    # 16-31 Jan at 120: 120 x 16/31 = 61.9355; running 38.7097 + 61.9355 = 100.6452 -> 100.65, minus 38.71 = 61.94.
    # January as a whole: 80.00 - 41.29 + 61.94 = 100.65 = round((80 x 15 + 120 x 16) / 31).
    feb = close1(customer, date(2024, 2, 1), actor)
    assert rows(feb) == [
        (CREDIT, D("-41.29"), date(2024, 1, 16), date(2024, 2, 1)),
        (CHARGE, D("61.94"), date(2024, 1, 16), date(2024, 2, 1)),
        (FEE, D("120.00"), date(2024, 2, 1), date(2024, 3, 1)),
    ]
    assert feb.lines.order_by("position").last().explanation["price_source"].startswith("contract price #")


def test_contract_ramp_in_arrears(customer, actor):
    plan_version = version("100.00", timing="arrears")
    contract = ContractFactory(customer=customer, start_date=date(2024, 1, 1))
    ContractPrice.objects.create(contract=contract, target=ContractPrice.Target.BASE_FEE, plan_version=plan_version,
                                 amount=Money("80.00", "USD"), effective_to=date(2024, 1, 16))
    ContractPrice.objects.create(contract=contract, target=ContractPrice.Target.BASE_FEE, plan_version=plan_version,
                                 amount=Money("120.00", "USD"), effective_from=date(2024, 1, 16))
    subscribe(customer, plan_version, actor, date(2024, 1, 1), contract=contract)
    # 38.7097 -> 38.71, then the running total 100.6452 -> 100.65: 61.94.
    assert rows(close1(customer, date(2024, 2, 1), actor)) == [
        (FEE, D("38.71"), date(2024, 1, 1), date(2024, 1, 16)),
        (FEE, D("61.94"), date(2024, 1, 16), date(2024, 2, 1)),
    ]


def test_recurring_fixed_charges_prorated_and_not(customer, actor):
    plan_version = version("100.00")
    FixedChargeFactory(plan_version=plan_version, code="support", name="Support", amount=Money("50.00", "USD"))
    FixedChargeFactory(plan_version=plan_version, code="sla", name="SLA", amount=Money("30.00", "USD"),
                       prorated=False)
    subscribe(customer, plan_version, actor, date(2024, 1, 10))
    # 22 of 31 days: base 100 x 22/31 = 70.97, support 50 x 22/31 = 35.4839 -> 35.48; the SLA is not prorated: 30.00.
    first = close1(customer, date(2024, 1, 10), actor)
    assert sorted(rows(first)) == sorted([
        (FEE, D("70.97"), date(2024, 1, 10), date(2024, 2, 1)),
        (FIXED, D("35.48"), date(2024, 1, 10), date(2024, 2, 1)),
        (FIXED, D("30.00"), date(2024, 1, 10), date(2024, 2, 1)),
    ])
    assert first.total == D("136.45")
    second = close1(customer, date(2024, 2, 1), actor)
    assert sorted(rows(second)) == sorted([
        (FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1)),
        (FIXED, D("50.00"), date(2024, 2, 1), date(2024, 3, 1)),
        (FIXED, D("30.00"), date(2024, 2, 1), date(2024, 3, 1)),
    ])


def test_one_time_fixed_charge_billed_once(customer, actor):
    plan_version = version("100.00")
    FixedChargeFactory(plan_version=plan_version, code="setup", name="Setup", amount=Money("250.00", "USD"),
                       recurring=False)
    subscribe(customer, plan_version, actor, date(2024, 1, 10))
    first = close1(customer, date(2024, 1, 10), actor)
    assert sorted(rows(first)) == sorted([
        (FEE, D("70.97"), date(2024, 1, 10), date(2024, 2, 1)),
        (FIXED, D("250.00"), date(2024, 1, 10), date(2024, 2, 1)),  # never prorated
    ])
    assert rows(close1(customer, date(2024, 2, 1), actor)) == [(FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1))]
    assert rows(close1(customer, date(2024, 3, 1), actor)) == [(FEE, D("100.00"), date(2024, 3, 1), date(2024, 4, 1))]


def test_subscription_ended_at_term_end(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1), end_date=date(2024, 3, 16))
    assert rows(close1(customer, date(2024, 1, 1), actor)) == [(FEE, D("100.00"), date(2024, 1, 1), date(2024, 2, 1))]
    assert rows(close1(customer, date(2024, 2, 1), actor)) == [(FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1))]
    # The term ends on 16 March: the last period is 1 to 16 March, 15 of 31 days: 48.3871 -> 48.39.
    assert rows(close1(customer, date(2024, 3, 1), actor)) == [(FEE, D("48.39"), date(2024, 3, 1), date(2024, 3, 16))]
    # The term ran as billed: nothing to settle when it ends, and no fee after.
    assert close_customer(customer, now=at(date(2024, 3, 16)), actor=actor) == []
    sub.refresh_from_db()
    assert sub.status == Subscription.Status.ENDED
    assert close_customer(customer, now=at(date(2024, 4, 1)), actor=actor) == []
    assert close_customer(customer, now=at(date(2024, 5, 1)), actor=actor) == []


# --- idempotency and backfills -------------------------------------------------------------------------------


def test_close_is_idempotent(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    close1(customer, date(2024, 1, 1), actor)
    change_quantity(sub, 2, actor=actor, now=at(date(2024, 1, 11)))
    close1(customer, date(2024, 2, 1), actor)
    claims = BilledPeriod.objects.filter(subscription=sub).count()
    invoices = Invoice.objects.filter(customer=customer).count()
    for moment in (at(date(2024, 2, 1)), at(date(2024, 2, 1), 23), at(date(2024, 2, 2))):
        assert close_customer(customer, now=moment, actor=actor) == []
    assert BilledPeriod.objects.filter(subscription=sub).count() == claims
    assert Invoice.objects.filter(customer=customer).count() == invoices


def test_backfill_close_bills_each_period_once(customer, actor):
    sub = subscribe(customer, version("100.00"), actor, date(2024, 1, 1))
    # A change made while nobody closed: 1 -> 2 seats on 15 February.
    change_quantity(sub, 2, actor=actor, now=at(date(2024, 2, 15)))
    # One close "as of" 1 April catches up January to April, each period once.
    # February 2024 has 29 days: used 100 x 14/29 = 48.2759 -> 48.28, credit 51.72;
    # 200 x 15/29 = 103.4483, running 151.7241 -> 151.72, minus 48.28 = 103.44.
    backfill = close1(customer, date(2024, 4, 1), actor)
    assert rows(backfill) == [
        (FEE, D("100.00"), date(2024, 1, 1), date(2024, 2, 1)),
        (FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1)),
        (CREDIT, D("-51.72"), date(2024, 2, 15), date(2024, 3, 1)),
        (CHARGE, D("103.44"), date(2024, 2, 15), date(2024, 3, 1)),
        (FEE, D("200.00"), date(2024, 3, 1), date(2024, 4, 1)),
        (FEE, D("200.00"), date(2024, 4, 1), date(2024, 5, 1)),
    ]
    assert backfill.total == D("651.72")
    periods = sorted(BilledPeriod.objects.filter(subscription=sub).values_list("timing", "period_start", "period_end"))
    months = [date(2024, m, 1) for m in range(1, 6)]
    assert periods == sorted(
        [("advance", months[i], months[i + 1]) for i in range(4)]
        + [("arrears", months[i], months[i + 1]) for i in range(3)]
    )
    assert close_customer(customer, now=at(date(2024, 4, 1)), actor=actor) == []
    assert rows(close1(customer, date(2024, 5, 1), actor)) == [(FEE, D("200.00"), date(2024, 5, 1), date(2024, 6, 1))]


def test_backfill_in_arrears_catches_up_three_months(customer, actor):
    subscribe(customer, version("100.00", timing="arrears"), actor, date(2024, 1, 10))
    backfill = close1(customer, date(2024, 4, 1) + timedelta(days=0), actor)
    assert rows(backfill) == [
        (FEE, D("70.97"), date(2024, 1, 10), date(2024, 2, 1)),
        (FEE, D("100.00"), date(2024, 2, 1), date(2024, 3, 1)),
        (FEE, D("100.00"), date(2024, 3, 1), date(2024, 4, 1)),
    ]
    assert close_customer(customer, now=at(date(2024, 4, 2)), actor=actor) == []
