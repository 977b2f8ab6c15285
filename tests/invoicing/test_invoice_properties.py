"""Invoice invariants of price_invoice (pure, no database) over random lines, coupons, credits and rates:
total = subtotal - discounts + tax; lines add up to the subtotal and their taxes to the tax total; a discount
never exceeds what a line can give."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.models import AppliedCoupon, CreditGrant
from invoicing.pricing.discounts import CouponTerms, CreditBalance
from invoicing.pricing.tax import TaxParty, TaxRateData
from invoicing.rating import LineDraft
from invoicing.services.pricing import PricingInputs, price_invoice

D = Decimal
ON = date(2024, 3, 1)
PLANS = [1, 2, 3]
METERS = [10, 11]
TAX_CODES = ["", "saas", "services"]

cents = st.integers(min_value=-50_000, max_value=2_000_000).map(lambda c: D(c).scaleb(-2))
positive_cents = st.integers(min_value=1, max_value=500_000).map(lambda c: D(c).scaleb(-2))
percents = st.integers(min_value=1, max_value=100_000).map(lambda p: D(p).scaleb(-3))  # 0.001 .. 100


@st.composite
def drafts(draw: st.DrawFn) -> list[LineDraft]:
    rows = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        rows.append(LineDraft(
            kind=draw(st.sampled_from(["subscription_fee", "usage", "proration_credit", "one_off", "credit_purchase"])),
            description="line", customer_id=1, currency="USD", amount=draw(cents),
            plan_id=draw(st.sampled_from([None, *PLANS])), meter_id=draw(st.sampled_from([None, *METERS])),
            tax_code=draw(st.sampled_from(TAX_CODES)),
        ))
    return rows


@st.composite
def coupons(draw: st.DrawFn) -> list[CouponTerms]:
    out = []
    for i in range(draw(st.integers(min_value=0, max_value=3))):
        plans = frozenset(draw(st.sets(st.sampled_from(PLANS), max_size=2)))
        meters = frozenset(draw(st.sets(st.sampled_from(METERS), max_size=1)))
        if draw(st.booleans()):
            out.append(CouponTerms(id=i + 1, code=f"P{i}", discount_type="percentage", percent_off=draw(percents),
                                   amount_off=None, plan_ids=plans, meter_ids=meters))
        else:
            out.append(CouponTerms(id=i + 1, code=f"F{i}", discount_type="fixed", percent_off=None,
                                   amount_off=draw(positive_cents), plan_ids=plans, meter_ids=meters))
    return out


@st.composite
def inputs(draw: st.DrawFn) -> PricingInputs:
    rates = [TaxRateData(id=100 + i, name=f"rate {code or 'any'}", country="US", region="NY", tax_code=code,
                         percent=draw(percents), valid_from=None, valid_to=None)
             for i, code in enumerate(TAX_CODES) if draw(st.booleans())]
    buyer = TaxParty(country="US", region="NY", kind="business", tax_exempt=draw(st.booleans()),
                     exemption_reason="Non-profit")
    credits = [(CreditGrant(pk=200 + i), CreditBalance(id=200 + i, remaining=draw(positive_cents)))
               for i in range(draw(st.integers(min_value=0, max_value=2)))]
    return PricingInputs(
        seller=TaxParty(country="US", region="NY"), buyer=buyer, rates=rates,
        coupons=[(AppliedCoupon(pk=t.id), t) for t in draw(coupons())], credits=credits,
    )


@settings(max_examples=300, deadline=None)
@given(lines=drafts(), pricing=inputs())
def test_invoice_totals_add_up(lines: list[LineDraft], pricing: PricingInputs) -> None:
    priced = price_invoice(lines, pricing, currency="USD", on=ON)
    assert priced.total == priced.subtotal - priced.discount_total + priced.tax_total
    assert priced.subtotal == sum((line.amount for line in lines), D(0))
    assert priced.tax_total == sum((pl.tax for pl in priced.lines), D(0))
    assert priced.discount_total == sum((pl.discount for pl in priced.lines), D(0))
    assert priced.discount_total == sum((D(d["amount"]) for d in priced.discount_breakdown), D(0))
    assert priced.tax_total == sum((D(t["tax_amount"]) for t in priced.tax_breakdown), D(0))
    for value in (priced.subtotal, priced.discount_total, priced.tax_total, priced.total):
        assert value == value.quantize(D("0.01"))  # whole cents


@settings(max_examples=300, deadline=None)
@given(lines=drafts(), pricing=inputs())
def test_discounts_never_exceed_positive_line_amounts(lines: list[LineDraft], pricing: PricingInputs) -> None:
    priced = price_invoice(lines, pricing, currency="USD", on=ON)
    for pl in priced.lines:
        assert D(0) <= pl.discount <= max(pl.draft.amount, D(0))
    assert priced.discount_total <= sum((max(line.amount, D(0)) for line in lines), D(0))
    # A credit never gives more than its balance; a fixed coupon never more than its amount.
    balances = {balance.id: balance.remaining for _, balance in pricing.credits}
    fixed = {t.id: t.amount_off for _, t in pricing.coupons if t.discount_type == "fixed"}
    for entry in priced.discount_breakdown:
        if entry["source"] == "credit":
            assert D(entry["amount"]) <= balances[entry["source_id"]]
        elif entry["source_id"] in fixed:
            assert D(entry["amount"]) <= fixed[entry["source_id"]]


@settings(max_examples=200, deadline=None)
@given(lines=drafts(), pricing=inputs())
def test_tax_is_rounded_once_per_rate_on_net_amounts(lines: list[LineDraft], pricing: PricingInputs) -> None:
    priced = price_invoice(lines, pricing, currency="USD", on=ON)
    for entry in priced.tax_breakdown:
        taxable = sum((pl.draft.amount - pl.discount for pl in priced.lines
                       if pl.decision.rate_id == entry["rate_id"] and pl.decision.treatment == entry["treatment"]
                       and format(pl.decision.percent, "f") == entry["percent"]), D(0))
        assert D(entry["taxable_amount"]) == taxable
        expected = (taxable * D(entry["percent"]) / 100).quantize(D("0.01"), rounding="ROUND_HALF_UP")
        if taxable > 0:
            assert D(entry["tax_amount"]) == expected
    if pricing.buyer.tax_exempt:
        assert priced.tax_total == 0
    for pl in priced.lines:
        if pl.draft.kind == "credit_purchase":
            assert pl.tax == 0
