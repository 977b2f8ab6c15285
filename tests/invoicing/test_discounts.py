"""Coupons and promotional credits before tax: whole minor units, never more than a line's amount."""

from decimal import ROUND_DOWN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.pricing.discounts import (
    CouponTerms,
    CreditBalance,
    Discount,
    DiscountableLine,
    apply_discounts,
)
from invoicing.pricing.rounding import minor_unit, round_money

D = Decimal


def percent_coupon(pct: str, *, coupon_id: int = 1, code: str = "SAVE", plans: set[int] | None = None,
                   meters: set[int] | None = None) -> CouponTerms:
    return CouponTerms(coupon_id, code, "percentage", D(pct), None, frozenset(plans or ()), frozenset(meters or ()))


def fixed_coupon(amount: str, *, coupon_id: int = 1, code: str = "OFF") -> CouponTerms:
    return CouponTerms(coupon_id, code, "fixed", None, D(amount))


def plain_lines(*amounts: str) -> list[DiscountableLine]:
    return [DiscountableLine(key=i, amount=D(a)) for i, a in enumerate(amounts)]


def test_percentage_coupon_over_three_lines() -> None:
    # 63.33 x 20 % = 12.666 -> 12.67. Shares 2.0006, 4.0013, 6.6681: floors 2.00 + 4.00 + 6.66 = 12.66; the
    # last cent to the largest remainder, the third line.
    result = apply_discounts(plain_lines("10.00", "20.00", "33.33"), [percent_coupon("20", code="SAVE20")], [], "EUR")
    assert result.line_discounts == {0: D("2.00"), 1: D("4.00"), 2: D("6.67")}
    assert result.discounts == [Discount("coupon", 1, "Coupon SAVE20 (20% off)", D("12.67"))]
    assert result.total == D("12.67")


def test_fixed_coupon_larger_than_the_invoice_takes_the_invoice() -> None:
    result = apply_discounts(plain_lines("10.00", "20.00"), [fixed_coupon("50.00", code="WELCOME50")], [], "USD")
    assert result.line_discounts == {0: D("10.00"), 1: D("20.00")}
    assert result.discounts == [Discount("coupon", 1, "Coupon WELCOME50", D("30.00"))]
    assert result.total == D("30.00")


def test_plan_and_meter_limited_coupons() -> None:
    lines = [
        DiscountableLine("pro fee", D("100.00"), plan_id=1),
        DiscountableLine("team fee", D("50.00"), plan_id=2),
        DiscountableLine("api calls", D("40.00"), plan_id=1, meter_id=10),
        DiscountableLine("storage", D("30.00"), meter_id=11),
    ]
    # Plan 1 only: its fee and its usage line, 10 % of 140.00.
    result = apply_discounts(lines, [percent_coupon("10", plans={1})], [], "USD")
    assert result.line_discounts == {"pro fee": D("10.00"), "team fee": D("0.00"), "api calls": D("4.00"),
                                     "storage": D("0.00")}
    # Plan 2 or meter 11: a line matching either filter is eligible, 10 % of 80.00.
    result = apply_discounts(lines, [percent_coupon("10", plans={2}, meters={11})], [], "USD")
    assert result.line_discounts == {"pro fee": D("0.00"), "team fee": D("5.00"), "api calls": D("0.00"),
                                     "storage": D("3.00")}
    assert result.total == D("8.00")
    # A coupon for a plan that is not on the invoice takes nothing and is not listed.
    result = apply_discounts(lines, [percent_coupon("10", plans={99})], [], "USD")
    assert (result.discounts, result.total) == ([], D("0.00"))


def test_coupon_then_credit() -> None:
    # 30.00 off, split 20.00 / 10.00; then the 60.00 credit on what is left (80.00 / 40.00): 40.00 / 20.00.
    result = apply_discounts(plain_lines("100.00", "50.00"), [fixed_coupon("30.00")], [CreditBalance(7, D("60.00"))],
                             "USD")
    assert result.line_discounts == {0: D("60.00"), 1: D("30.00")}
    assert result.discounts == [
        Discount("coupon", 1, "Coupon OFF", D("30.00")),
        Discount("credit", 7, "Promotional credit #7", D("60.00")),
    ]
    assert result.total == D("90.00")


def test_credit_partially_used_and_credits_in_order() -> None:
    # The credit that expires first (the caller's order) is used first; the second takes only what is left.
    credits = [CreditBalance(1, D("50.00")), CreditBalance(2, D("500.00")), CreditBalance(3, D("10.00"))]
    result = apply_discounts(plain_lines("120.00"), [], credits, "USD")
    assert [(d.source_id, d.amount) for d in result.discounts] == [(1, D("50.00")), (2, D("70.00"))]
    assert result.line_discounts == {0: D("120.00")}


def test_successive_coupons_apply_to_what_is_left() -> None:
    two_coupons = [percent_coupon("10"), percent_coupon("10", coupon_id=2)]
    result = apply_discounts(plain_lines("100.00"), two_coupons, [], "USD")
    assert [d.amount for d in result.discounts] == [D("10.00"), D("9.00")]


def test_negative_lines_are_never_discounted() -> None:
    result = apply_discounts(plain_lines("80.00", "-20.00", "0.00"), [percent_coupon("50")],
                             [CreditBalance(1, D("100.00"))], "USD")
    assert result.line_discounts == {0: D("80.00"), 1: D("0.00"), 2: D("0.00")}
    assert [d.amount for d in result.discounts] == [D("40.00"), D("40.00")]


def test_jpy_and_kwd_minor_units() -> None:
    # 1,000 x 15 % = 150 yen, split 50 / 50 / 50 (shares 49.95, 49.95, 50.1).
    result = apply_discounts(plain_lines("333", "333", "334"), [percent_coupon("15")], [], "JPY")
    assert list(result.line_discounts.values()) == [D(50), D(50), D(50)]
    # 10.005 KWD x 12.5 % = 1.250625 -> 1.251
    result = apply_discounts(plain_lines("10.005"), [percent_coupon("12.5")], [], "KWD")
    assert result.total == D("1.251")
    assert result.discounts[0].label == "Coupon SAVE (12.5% off)"


def test_caps_below_the_minor_unit_round_down() -> None:
    # Never give more than was granted: a balance of 10.009 gives 10.00.
    result = apply_discounts(plain_lines("100.00"), [fixed_coupon("5.559")], [CreditBalance(1, D("10.009"))], "USD")
    assert [d.amount for d in result.discounts] == [D("5.55"), D("10.00")]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="percent_off"):
        percent_coupon("120")
    with pytest.raises(ValueError, match="percent_off"):
        CouponTerms(1, "X", "percentage", None, D("5"))
    with pytest.raises(ValueError, match="amount_off"):
        fixed_coupon("-5")
    with pytest.raises(ValueError, match="unknown discount type"):
        CouponTerms(1, "X", "bogo", None, None)
    with pytest.raises(ValueError, match="0 or more"):
        CreditBalance(1, D("-1"))
    with pytest.raises(ValueError, match="not rounded"):
        apply_discounts(plain_lines("1.005"), [], [], "USD")
    with pytest.raises(ValueError, match="share the key"):
        apply_discounts([DiscountableLine(1, D("1.00")), DiscountableLine(1, D("2.00"))], [], [], "USD")


currencies = st.sampled_from(["USD", "JPY", "KWD"])
raw_lines = st.lists(
    st.tuples(
        st.integers(min_value=-(10**6), max_value=10**7),
        st.one_of(st.none(), st.integers(min_value=1, max_value=3)),
        st.one_of(st.none(), st.integers(min_value=10, max_value=12)),
    ),
    max_size=15,
)
ids = st.frozensets(st.integers(min_value=1, max_value=3), max_size=2)
meter_ids = st.frozensets(st.integers(min_value=10, max_value=12), max_size=2)


@st.composite
def coupons(draw: st.DrawFn, coupon_id: int = 1) -> CouponTerms:
    plans, meters = draw(ids), draw(meter_ids)
    if draw(st.booleans()):
        pct = draw(st.decimals(min_value=D("0.01"), max_value=100, places=2))
        return CouponTerms(coupon_id, f"P{coupon_id}", "percentage", pct, None, plans, meters)
    off = draw(st.decimals(min_value=D("0.001"), max_value=10**6, places=3))
    return CouponTerms(coupon_id, f"F{coupon_id}", "fixed", None, off, plans, meters)


def build_lines(raw: list[tuple[int, int | None, int | None]], currency: str) -> list[DiscountableLine]:
    unit = minor_unit(currency)
    return [DiscountableLine(i, units * unit, plan, meter) for i, (units, plan, meter) in enumerate(raw)]


@settings(max_examples=400, deadline=None)
@given(
    raw_lines,
    st.lists(coupons(), max_size=4),
    st.lists(st.decimals(min_value=0, max_value=10**6, places=3), max_size=4),
    currencies,
)
def test_discounts_stay_within_the_lines_and_add_up(
    raw: list[tuple[int, int | None, int | None]], coupon_list: list[CouponTerms], balances: list[Decimal],
    currency: str,
) -> None:
    lines = build_lines(raw, currency)
    credits = [CreditBalance(i, balance) for i, balance in enumerate(balances)]
    result = apply_discounts(lines, coupon_list, credits, currency)

    assert set(result.line_discounts) == {line.key for line in lines}
    for line in lines:
        taken = result.line_discounts[line.key]
        assert D(0) <= taken <= max(line.amount, D(0))
        assert round_money(taken, currency) == taken
    assert sum(result.line_discounts.values(), D(0)) == result.total
    assert sum((d.amount for d in result.discounts), D(0)) == result.total
    for discount in result.discounts:
        assert discount.amount > 0
        assert round_money(discount.amount, currency) == discount.amount
        if discount.source == "credit":
            assert discount.amount <= balances[discount.source_id]
    positive_total = sum((line.amount for line in lines if line.amount > 0), D(0))
    assert result.total <= positive_total
    if sum(balances, D(0)) >= positive_total + len(balances) * minor_unit(currency):
        # Enough credit to cover the invoice (even after rounding each balance down): nothing is left to pay.
        assert result.total == positive_total


@settings(max_examples=300, deadline=None)
@given(raw_lines, coupons(), currencies)
def test_one_coupon_only_touches_eligible_lines(
    raw: list[tuple[int, int | None, int | None]], coupon: CouponTerms, currency: str
) -> None:
    lines = build_lines(raw, currency)
    result = apply_discounts(lines, [coupon], [], currency)
    eligible_total = sum((line.amount for line in lines if line.amount > 0 and coupon.applies_to(line)), D(0))
    for line in lines:
        if not coupon.applies_to(line):
            assert result.line_discounts[line.key] == 0
    if coupon.discount_type == "percentage":
        assert coupon.percent_off is not None
        assert result.total == round_money(eligible_total * coupon.percent_off / 100, currency)
    else:
        assert coupon.amount_off is not None
        assert result.total == min(eligible_total, coupon.amount_off.quantize(minor_unit(currency), ROUND_DOWN))
