"""Choosing tax rates and computing invoice taxes: rounded once per rate, split back to the lines exactly."""

from collections.abc import Hashable
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.pricing.rounding import minor_unit, round_money
from invoicing.pricing.tax import (
    EU_COUNTRIES,
    REVERSE_CHARGE_MENTION,
    TaxableLine,
    TaxDecision,
    TaxParty,
    TaxRateData,
    TaxSubtotal,
    choose_tax,
    compute_taxes,
    looks_like_vat_id,
)

D = Decimal
ON = date(2025, 3, 1)

DE_SELLER = TaxParty(country="DE", tax_id="DE123456789")
US_SELLER = TaxParty(country="US", region="CA")

RATES = [
    TaxRateData(1, "VAT DE standard", "DE", "", "", D("19.000000"), date(2007, 1, 1), None),
    TaxRateData(2, "VAT FR standard", "FR", "", "", D("20.000000"), None, None, "TVA 20 %"),
    TaxRateData(3, "VAT FR ebook", "FR", "", "ebook", D("5.500000"), None, None),
    TaxRateData(4, "Sales tax US", "US", "", "", D("5.000000"), None, None),
    TaxRateData(5, "Sales tax NY", "US", "NY", "", D("8.875000"), None, None),
    TaxRateData(6, "Sales tax US saas", "US", "", "saas", D("6.000000"), None, None),
    TaxRateData(7, "VAT DE reduced (expired)", "DE", "", "ebook", D("7.000000"), None, date(2020, 1, 1)),
    TaxRateData(8, "VAT DE ebook from 2026", "DE", "", "ebook", D("4.000000"), date(2026, 1, 1), None),
    TaxRateData(9, "Consumption tax JP", "JP", "", "", D("10.000000"), None, None),
]


def choose(buyer: TaxParty, tax_code: str = "", seller: TaxParty = DE_SELLER, on: date = ON) -> TaxDecision:
    return choose_tax(seller=seller, buyer=buyer, tax_code=tax_code, rates=RATES, on=on)


def test_the_27_member_states() -> None:
    assert len(EU_COUNTRIES) == 27
    assert "GR" in EU_COUNTRIES
    assert "EL" not in EU_COUNTRIES
    assert "GB" not in EU_COUNTRIES


def test_domestic_sale_takes_the_country_rate() -> None:
    decision = choose(TaxParty(country="DE", tax_id="DE987654321"))
    assert decision == TaxDecision(1, "VAT DE standard", D("19.000000"), "standard", "")


def test_eu_business_with_vat_id_is_reverse_charged() -> None:
    decision = choose(TaxParty(country="FR", kind="business", tax_id="FR 40 303 265 045"))
    assert decision.treatment == "reverse_charge"
    assert decision.percent == 0
    assert decision.rate_id is None
    assert decision.mention == REVERSE_CHARGE_MENTION
    assert "Article 196, Council Directive 2006/112/EC" in decision.mention


def test_greek_business_with_el_vat_id_is_reverse_charged() -> None:
    assert choose(TaxParty(country="GR", tax_id="EL094259216")).treatment == "reverse_charge"


def test_eu_business_without_vat_id_pays_the_buyer_country_rate() -> None:
    decision = choose(TaxParty(country="FR", kind="business"))
    assert (decision.rate_id, decision.percent, decision.treatment) == (2, D("20"), "standard")
    assert decision.mention == "TVA 20 %"


def test_a_tax_id_that_is_not_a_vat_id_does_not_reverse_charge() -> None:
    assert choose(TaxParty(country="FR", tax_id="40303265045")).rate_id == 2
    assert choose(TaxParty(country="FR", tax_id="FR")).rate_id == 2
    assert looks_like_vat_id("de 123.456.789")
    assert not looks_like_vat_id("12-3456789")


def test_eu_individual_pays_the_buyer_country_rate() -> None:
    decision = choose(TaxParty(country="FR", kind="individual", tax_id="FR40303265045"))
    assert (decision.rate_id, decision.treatment) == (2, "standard")


def test_non_eu_seller_does_not_reverse_charge() -> None:
    decision = choose(TaxParty(country="FR", tax_id="FR40303265045"), seller=US_SELLER)
    assert decision.rate_id == 2


def test_exempt_buyer_pays_nothing_and_the_invoice_says_why() -> None:
    buyer = TaxParty(country="DE", tax_exempt=True, exemption_reason="Section 4 UStG, charity")
    decision = choose(buyer)
    assert (decision.rate_id, decision.percent, decision.treatment) == (None, D(0), "exempt")
    assert decision.mention == "Tax exempt: Section 4 UStG, charity"
    # Exemption wins over reverse charge.
    assert choose(TaxParty(country="FR", tax_id="FR40303265045", tax_exempt=True)).treatment == "exempt"


def test_region_rate_beats_country_rate() -> None:
    assert choose(TaxParty(country="US", region="NY"), seller=US_SELLER).rate_id == 5
    assert choose(TaxParty(country="US", region="ny"), seller=US_SELLER).rate_id == 5
    assert choose(TaxParty(country="US", region="TX"), seller=US_SELLER).rate_id == 4


def test_tax_code_rate_beats_any_product_rate() -> None:
    assert choose(TaxParty(country="FR"), tax_code="ebook").rate_id == 3
    assert choose(TaxParty(country="FR"), tax_code="saas").rate_id == 2
    assert choose(TaxParty(country="US", region="TX"), tax_code="saas", seller=US_SELLER).rate_id == 6
    # The location is the first criterion: NY's rate for any product beats the country-wide saas rate.
    assert choose(TaxParty(country="US", region="NY"), tax_code="saas", seller=US_SELLER).rate_id == 5


def test_rates_outside_their_validity_are_ignored() -> None:
    # The ebook rate 7 ended on 2020-01-01 and rate 8 starts in 2026: DE's standard rate applies between.
    assert choose(TaxParty(country="DE"), tax_code="ebook").rate_id == 1
    assert choose(TaxParty(country="DE"), tax_code="ebook", on=date(2019, 12, 31)).rate_id == 7
    assert choose(TaxParty(country="DE"), tax_code="ebook", on=date(2020, 1, 1)).rate_id == 1
    assert choose(TaxParty(country="DE"), tax_code="ebook", on=date(2026, 1, 1)).rate_id == 8
    assert choose(TaxParty(country="DE"), on=date(2006, 12, 31)).treatment == "not_taxable"


def test_no_rate_is_not_taxable() -> None:
    decision = choose(TaxParty(country="CH"))
    assert decision == TaxDecision(None, "No tax", D(0), "not_taxable", "")


def test_equally_specific_rates_are_a_configuration_error() -> None:
    rates = [*RATES, TaxRateData(10, "VAT FR duplicate", "FR", "", "", D("19.6"), None, None)]
    with pytest.raises(ValueError, match=r"#2 'VAT FR standard'.*#10 'VAT FR duplicate'"):
        choose_tax(seller=DE_SELLER, buyer=TaxParty(country="FR"), tax_code="", rates=rates, on=ON)
    # The more specific ebook rate still decides ebooks.
    decision = choose_tax(seller=DE_SELLER, buyer=TaxParty(country="FR"), tax_code="ebook", rates=rates, on=ON)
    assert decision.rate_id == 3


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        TaxRateData(1, "negative", "DE", "", "", D("-1"), None, None)
    with pytest.raises(ValueError, match="not before"):
        TaxRateData(1, "empty", "DE", "", "", D("19"), date(2025, 1, 1), date(2025, 1, 1))
    with pytest.raises(ValueError, match="Unknown tax treatment"):
        TaxDecision(None, "odd", D(0), "zero_rated", "")


VAT_DE = TaxDecision(1, "VAT DE standard", D("19.000000"), "standard", "")
VAT_DE_REDUCED = TaxDecision(7, "VAT DE reduced", D("7.000000"), "standard", "")
REVERSE = TaxDecision(None, "Reverse charge", D(0), "reverse_charge", REVERSE_CHARGE_MENTION)
VAT_10 = TaxDecision(20, "Ten percent", D(10), "standard", "")


def lines(decision: TaxDecision, *amounts: str) -> list[TaxableLine]:
    return [TaxableLine(key=i, net_amount=D(a), decision=decision) for i, a in enumerate(amounts)]


def test_tax_is_rounded_once_per_rate_and_split_to_the_lines() -> None:
    # 63.33 x 19 % = 12.0327 -> 12.03. Exact shares 1.8996, 3.7991, 6.3313: floors 1.89 + 3.79 + 6.33 = 12.01;
    # the two cents left go to the largest remainders, the first two lines.
    result = compute_taxes(lines(VAT_DE, "10.00", "20.00", "33.33"), "EUR")
    assert result.total == D("12.03")
    assert result.subtotals == [TaxSubtotal(VAT_DE, D("63.33"), D("12.03"))]
    assert result.line_tax == {0: D("1.90"), 1: D("3.80"), 2: D("6.33")}


def test_rounding_once_differs_from_rounding_each_line() -> None:
    # Three lines of 0.05 at 10 %: each would be 0.005 -> 0.01 (0.03 in all); once on 0.15 it is 0.015 -> 0.02.
    result = compute_taxes(lines(VAT_10, "0.05", "0.05", "0.05"), "USD")
    assert result.total == D("0.02")
    assert list(result.line_tax.values()) == [D("0.01"), D("0.01"), D("0.00")]


def test_several_rates_make_ordered_subtotals() -> None:
    taxable = [
        TaxableLine("a", D("100.00"), VAT_DE_REDUCED),
        TaxableLine("b", D("50.00"), REVERSE),
        TaxableLine("c", D("10.00"), VAT_DE),
        TaxableLine("d", D("10.05"), VAT_DE_REDUCED),
    ]
    result = compute_taxes(taxable, "EUR")
    assert [(s.decision.name, s.taxable_amount, s.tax_amount) for s in result.subtotals] == [
        ("VAT DE standard", D("10.00"), D("1.90")),
        ("VAT DE reduced", D("110.05"), D("7.70")),  # 7.7035
        ("Reverse charge", D("50.00"), D("0.00")),
    ]
    assert result.line_tax == {"a": D("7.00"), "b": D("0.00"), "c": D("1.90"), "d": D("0.70")}
    assert result.total == D("9.60")


def test_credit_lines_of_one_sign_are_allocated_proportionally() -> None:
    result = compute_taxes(lines(VAT_DE, "-10.00", "-20.00", "-33.33"), "EUR")
    assert result.total == D("-12.03")
    assert result.line_tax == {0: D("-1.90"), 1: D("-3.80"), 2: D("-6.33")}


def test_mixed_signs_round_each_line_and_settle_the_difference_on_the_largest() -> None:
    # Each line: 0.005 -> 0.01, 0.005 -> 0.01, -0.001 -> 0.00 (0.02); once on 0.09: 0.009 -> 0.01. The -0.01
    # difference goes to the largest |net| line, the first of the two 0.05 lines.
    result = compute_taxes(lines(VAT_10, "0.05", "0.05", "-0.01"), "USD")
    assert result.total == D("0.01")
    assert result.line_tax == {0: D("0.00"), 1: D("0.01"), 2: D("0.00")}
    # A credit that cancels the charge: no tax overall; each line carries its own, and they cancel.
    result = compute_taxes(lines(VAT_DE, "100.00", "-100.00"), "EUR")
    assert result.total == D("0.00")
    assert result.line_tax == {0: D("19.00"), 1: D("-19.00")}


def test_jpy_has_no_decimals() -> None:
    # 1,005 x 10 % = 100.5 -> 101 (half up); the yen split as 34 + 34 + 33.
    result = compute_taxes(lines(VAT_10, "335", "335", "335"), "JPY")
    assert result.total == D("101")
    assert list(result.line_tax.values()) == [D("34"), D("34"), D("33")]
    assert all(t.as_tuple().exponent == 0 for t in result.line_tax.values())


def test_kwd_has_three_decimals() -> None:
    # 12.345 x 19 % = 2.34555 -> 2.346
    result = compute_taxes(lines(VAT_DE, "12.345"), "KWD")
    assert result.total == D("2.346")


def test_bad_lines_are_refused() -> None:
    with pytest.raises(ValueError, match="not rounded"):
        compute_taxes(lines(VAT_DE, "10.005"), "EUR")
    with pytest.raises(ValueError, match="share the key"):
        compute_taxes([TaxableLine(1, D("1.00"), VAT_DE), TaxableLine(1, D("2.00"), VAT_DE)], "EUR")
    with pytest.raises(ValueError, match="Unknown currency"):
        compute_taxes([], "QQQ")


def test_no_lines_no_tax() -> None:
    result = compute_taxes([], "EUR")
    assert (result.subtotals, result.line_tax, result.total) == ([], {}, D("0.00"))


decisions = st.builds(
    TaxDecision,
    rate_id=st.integers(min_value=1, max_value=4),
    name=st.sampled_from(["A", "B"]),
    percent=st.decimals(min_value=0, max_value=30, places=6),
    treatment=st.just("standard"),
    mention=st.just(""),
) | st.sampled_from([REVERSE, VAT_DE, VAT_DE_REDUCED])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=-(10**9), max_value=10**9), st.integers(min_value=0, max_value=4)),
        max_size=25,
    ),
    st.lists(decisions, min_size=5, max_size=5),
    st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_line_taxes_add_up_and_each_rate_is_rounded_once(
    raw: list[tuple[int, int]], table: list[TaxDecision], currency: str
) -> None:
    unit = minor_unit(currency)
    taxable = [TaxableLine(key=i, net_amount=units * unit, decision=table[d]) for i, (units, d) in enumerate(raw)]
    result = compute_taxes(taxable, currency)

    assert sum(result.line_tax.values(), D(0)) == result.total
    assert sum((s.tax_amount for s in result.subtotals), D(0)) == result.total
    assert set(result.line_tax) == {line.key for line in taxable}
    assert all(round_money(t, currency) == t for t in result.line_tax.values())
    order = [(-s.decision.percent, s.decision.name) for s in result.subtotals]
    assert order == sorted(order)

    groups: dict[Hashable, list[TaxableLine]] = {}
    for line in taxable:
        groups.setdefault(line.decision.key, []).append(line)
    assert len(result.subtotals) == len(groups)
    for subtotal in result.subtotals:
        group = groups[subtotal.decision.key]
        assert subtotal.taxable_amount == sum(line.net_amount for line in group)
        assert subtotal.tax_amount == round_money(subtotal.taxable_amount * subtotal.decision.percent / 100, currency)
        assert sum(result.line_tax[line.key] for line in group) == subtotal.tax_amount
        nets = [line.net_amount for line in group]
        if all(n >= 0 for n in nets) or all(n <= 0 for n in nets):
            weight = sum(abs(n) for n in nets)
            for line in group:
                exact = subtotal.tax_amount * abs(line.net_amount) / weight if weight else D(0)
                assert abs(result.line_tax[line.key] - exact) < unit
                assert result.line_tax[line.key] * line.net_amount >= 0  # a credit's tax is a credit too
        else:
            largest = max(group, key=lambda line: abs(line.net_amount))
            for line in group:
                if line is not largest:
                    own = round_money(line.net_amount * subtotal.decision.percent / 100, currency)
                    assert result.line_tax[line.key] == own
