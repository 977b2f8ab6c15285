"""The invoice lifecycle through the services: late usage billed once, void releasing periods and giving
back what the invoice consumed, refresh of a draft keeping manual lines, finalization's due date and snapshots."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from djmoney.money import Money

from billing.errors import InvalidTransition
from contracts.models import Coupon
from invoicing.models import AppliedCoupon, BilledPeriod, CreditGrant, Invoice, InvoiceLine, Wallet
from invoicing.services.cycle import close_customer, refresh_draft
from invoicing.services.documents import ManualLine, add_line, finalize_invoice, void_invoice
from tests.factories import BillingEntityFactory, ChargeFactory, CouponFactory, CustomerFactory, MeterFactory
from tests.invoicing.test_contract_terms import at, count_events, lines_of, subscribe, version, wallet_with

pytestmark = pytest.mark.django_db

D = Decimal
K = InvoiceLine.Kind
FEB_1, MAR_1, APR_1 = at(date(2024, 2, 1)), at(date(2024, 3, 1)), at(date(2024, 4, 1))


def metered(customer, actor, base_fee: str = "0.00"):
    meter = MeterFactory(aggregation="count")
    pv = version(base_fee)
    ChargeFactory(plan_version=pv, meter=meter, properties={"unit_price": "0.01"})
    sub = subscribe(customer, pv, actor)
    return meter, sub


@pytest.fixture
def customer():
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=0, default_payment_terms_days=30)
    return CustomerFactory(billing_entity=entity, timezone="UTC")


def test_late_usage_is_billed_on_the_next_invoice_once(customer, actor):
    meter, sub = metered(customer, actor)
    count_events(customer, meter, 100, now=FEB_1)
    [jan] = close_customer(customer, now=FEB_1, actor=actor)
    assert [(line.kind, line.quantity, line.amount) for line in lines_of(jan)] == [(K.USAGE, D("100"), D("1.00"))]
    # 30 January events arrive on 10 February, after January's invoice was finalized.
    count_events(customer, meter, 30, day="2024-01-20", now=at(date(2024, 2, 10)), prefix="late")
    count_events(customer, meter, 5, day="2024-02-20", now=MAR_1, prefix="feb")
    [feb] = close_customer(customer, now=MAR_1, actor=actor)
    got = sorted((line.kind, line.period_start, line.quantity, line.amount) for line in lines_of(feb))
    assert got == [(K.LATE_USAGE, date(2024, 1, 1), D("30"), D("0.30")), (K.USAGE, date(2024, 2, 1), D("5"), D("0.05"))]
    [mar] = close_customer(customer, now=APR_1, actor=actor) or [None]
    assert mar is None or not lines_of(mar, K.LATE_USAGE)
    assert InvoiceLine.objects.filter(kind=K.LATE_USAGE).count() == 1
    assert BilledPeriod.objects.filter(subscription=sub, timing="arrears", released=False).count() == 3


def test_void_releases_the_period_and_gives_back_coupon_credit_and_wallet(customer, actor):
    subscribe(customer, version("100.00"), actor)
    coupon = CouponFactory(percent_off=D("10"), duration=Coupon.Duration.ONCE)
    applied = AppliedCoupon.objects.create(customer=customer, coupon=coupon)
    grant = CreditGrant.objects.create(customer=customer, currency="USD", amount=D("20"), remaining=D("20"),
                                       reason="Goodwill")
    wallet = wallet_with(customer, ("50.00", None))
    [first] = close_customer(customer, now=at(date(2024, 1, 1)), actor=actor)
    # 100.00 - 10 % coupon - 20.00 credit = 70.00; the wallet pays 50.00.
    assert (first.discount_total, first.total, first.prepaid_credit_applied, first.amount_due) == (
        D("30.00"), D("70.00"), D("50.00"), D("20.00"))
    applied.refresh_from_db()
    grant.refresh_from_db()
    assert applied.status == AppliedCoupon.Status.EXHAUSTED and grant.remaining == 0

    void_invoice(first, reason="Wrong plan", actor=actor, now=at(date(2024, 1, 2)))
    first.refresh_from_db()
    assert first.status == Invoice.Status.VOID and first.number  # the number stays used
    applied.refresh_from_db()
    grant.refresh_from_db()
    wallet.refresh_from_db()
    assert (applied.status, applied.periods_used, grant.remaining, wallet.balance) == (
        AppliedCoupon.Status.ACTIVE, 0, D("20"), D("50.00"))
    assert not BilledPeriod.objects.filter(invoice=first, released=False).exists()

    [again] = close_customer(customer, now=at(date(2024, 1, 2)), actor=actor)
    assert (again.total, again.prepaid_credit_applied, again.amount_due) == (D("70.00"), D("50.00"), D("20.00"))
    assert [line.period_start for line in lines_of(again)] == [date(2024, 1, 1)]
    assert again.sequence_number == first.sequence_number + 1
    assert close_customer(customer, now=at(date(2024, 1, 3)), actor=actor) == []
    assert Wallet.objects.get(pk=wallet.pk).balance == 0


def test_void_of_usage_invoice_bills_the_period_again(customer, actor):
    meter, _ = metered(customer, actor)
    count_events(customer, meter, 100)
    [jan] = close_customer(customer, now=FEB_1, actor=actor)
    void_invoice(jan, reason="Re-rate", actor=actor, now=at(date(2024, 2, 2)))
    [again] = close_customer(customer, now=at(date(2024, 2, 2)), actor=actor)
    assert [(line.kind, line.amount) for line in lines_of(again)] == [(K.USAGE, D("1.00"))]
    # The late-usage check ignores the void invoice: no double count on the next close.
    [feb] = close_customer(customer, now=MAR_1, actor=actor) or [None]
    assert feb is None or not lines_of(feb, K.LATE_USAGE, K.USAGE)


def test_refresh_of_a_draft_picks_up_new_events_and_keeps_a_manual_line(actor):
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=3)
    customer = CustomerFactory(billing_entity=entity, timezone="UTC")
    meter, _ = metered(customer, actor, base_fee="10.00")
    count_events(customer, meter, 100)
    drafts = close_customer(customer, now=FEB_1, actor=actor)
    draft = next(inv for inv in drafts if lines_of(inv, K.USAGE))
    assert draft.status == Invoice.Status.DRAFT and draft.number is None
    add_line(draft, ManualLine("Consulting", D("120.00")), actor=actor, now=at(date(2024, 2, 1), 13))
    count_events(customer, meter, 50, day="2024-01-31", now=at(date(2024, 2, 2)), prefix="more")
    refreshed = refresh_draft(draft, actor=actor, now=at(date(2024, 2, 2)))
    assert refreshed.pk == draft.pk and refreshed.status == Invoice.Status.DRAFT
    got = sorted((line.kind, line.description, line.amount) for line in lines_of(refreshed, K.USAGE, K.ONE_OFF))
    assert got == [(K.ONE_OFF, "Consulting", D("120.00")), (K.USAGE, meter.name, D("1.50"))]
    assert refreshed.subtotal == sum(line.amount for line in lines_of(refreshed))
    assert BilledPeriod.objects.filter(invoice=refreshed, released=False).count() >= 1


def test_finalize_assigns_due_date_from_payment_terms_and_snapshots(actor):
    entity = BillingEntityFactory(timezone="UTC", invoice_grace_days=2, default_payment_terms_days=30,
                                  legal_name="Seller Legal GmbH")
    customer = CustomerFactory(billing_entity=entity, timezone="UTC", payment_terms_days=15, legal_name="Buyer LLC")
    subscribe(customer, version("100.00"), actor)
    [draft] = close_customer(customer, now=at(date(2024, 1, 1)), actor=actor)
    assert draft.status == Invoice.Status.DRAFT and draft.due_date is None
    invoice = finalize_invoice(draft, actor=actor, now=at(date(2024, 1, 3)))
    assert invoice.issue_date == date(2024, 1, 3)
    assert invoice.due_date == date(2024, 1, 18)
    assert invoice.sequence_number == 1 and invoice.number.endswith("000001")
    assert "Seller Legal GmbH" in str(invoice.seller) and "Buyer LLC" in str(invoice.buyer)
    customer.legal_name = "Renamed LLC"
    customer.save()
    invoice.refresh_from_db()
    assert "Buyer LLC" in str(invoice.buyer)
    with pytest.raises(InvalidTransition):
        finalize_invoice(invoice, actor=actor, now=at(date(2024, 1, 4)))


def test_entity_payment_terms_apply_without_customer_terms(customer, actor):
    subscribe(customer, version("100.00"), actor)
    [invoice] = close_customer(customer, now=at(date(2024, 1, 1)), actor=actor)
    assert invoice.due_date == date(2024, 1, 31)


def test_fixed_coupon_in_another_currency_is_ignored(customer, actor):
    subscribe(customer, version("100.00"), actor)
    coupon = CouponFactory(discount_type=Coupon.DiscountType.FIXED, percent_off=None, amount_off=Money("5", "EUR"))
    AppliedCoupon.objects.create(customer=customer, coupon=coupon)
    [invoice] = close_customer(customer, now=at(date(2024, 1, 1)), actor=actor)
    assert invoice.discount_total == 0
