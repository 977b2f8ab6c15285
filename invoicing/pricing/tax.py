"""Choosing a tax rate for a line and computing an invoice's taxes (DESIGN: tax). Pure: Decimal and dates.

Tax is computed per invoice and per tax rate on the sum of the taxable line amounts after discounts, and
rounded once per rate; the rounded tax of each rate is then split back to its lines so that every line can
show its share and the shares add up to the invoice's tax exactly.
"""

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext

from invoicing.pricing import exact_context
from invoicing.pricing.rounding import allocate_by_largest_remainder, minor_unit, round_money

ZERO = Decimal(0)
HUNDRED = Decimal(100)

# The 27 member states, ISO 3166 alpha-2. Greece is "GR" here; only its VAT ids use the prefix "EL".
EU_COUNTRIES: frozenset[str] = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU",
    "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
})

STANDARD = "standard"
EXEMPT = "exempt"
REVERSE_CHARGE = "reverse_charge"
NOT_TAXABLE = "not_taxable"
TREATMENTS = frozenset({STANDARD, EXEMPT, REVERSE_CHARGE, NOT_TAXABLE})

REVERSE_CHARGE_MENTION = (
    "Reverse charge: VAT to be accounted for by the recipient (Article 196, Council Directive 2006/112/EC)"
)

# A light shape check, not a VIES lookup: a two-letter prefix and 2 to 12 more characters. Real numbers
# are verified against VIES when the customer is saved; here we only refuse what cannot be a VAT id.
_VAT_ID_SHAPE = re.compile(r"[A-Z]{2}[0-9A-Z+*]{2,12}")
_VAT_ID_NOISE = re.compile(r"[\s.\-/]")


@dataclass(frozen=True)
class TaxRateData:
    """One row of the tax-rate table; the ORM model maps to this."""

    id: int
    name: str  # "VAT DE standard"
    country: str  # ISO alpha-2 of the customer's jurisdiction
    region: str  # "" = whole country; else a state/province code, e.g. "NY"
    tax_code: str  # "" = any product; else a product tax code ("saas", "services", "ebook", ...)
    percent: Decimal  # 19.000000
    valid_from: date | None
    valid_to: date | None  # first day no longer valid
    legal_mention: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.percent, Decimal) or not self.percent.is_finite() or self.percent < 0:
            raise ValueError(f"Tax rate {self.name!r}: the percent is a finite Decimal, 0 or more.")
        if self.valid_from is not None and self.valid_to is not None and self.valid_from >= self.valid_to:
            raise ValueError(
                f"Tax rate {self.name!r}: valid_from {self.valid_from} is not before valid_to {self.valid_to}."
            )

    def is_valid_on(self, on: date) -> bool:
        return (self.valid_from is None or self.valid_from <= on) and (self.valid_to is None or on < self.valid_to)


@dataclass(frozen=True)
class TaxParty:
    """The seller (billing entity) or the buyer (customer) as far as tax is concerned."""

    country: str
    region: str = ""
    kind: str = "business"  # or "individual"
    tax_id: str = ""
    tax_exempt: bool = False
    exemption_reason: str = ""


@dataclass(frozen=True)
class TaxDecision:
    """How a line is taxed: the rate (if any), its percent, the treatment and the invoice mention."""

    rate_id: int | None
    name: str
    percent: Decimal
    treatment: str  # "standard" | "exempt" | "reverse_charge" | "not_taxable" (no rate found)
    mention: str  # text for the invoice: exemption reason, reverse-charge legal mention, ""

    def __post_init__(self) -> None:
        if self.treatment not in TREATMENTS:
            raise ValueError(f"Unknown tax treatment {self.treatment!r}; expected one of {sorted(TREATMENTS)}.")
        if not isinstance(self.percent, Decimal) or not self.percent.is_finite() or self.percent < 0:
            raise ValueError(f"Tax decision {self.name!r}: the percent is a finite Decimal, 0 or more.")

    @property
    def key(self) -> tuple[int | None, Decimal, str]:
        """Lines with equal keys are taxed together (one taxable base, one rounding)."""
        return (self.rate_id, self.percent, self.treatment)


def normalize_country(code: str) -> str:
    """ISO alpha-2, upper case; the VAT prefix "EL" is read as Greece ("GR")."""
    normalized = (code or "").strip().upper()
    return "GR" if normalized == "EL" else normalized


def looks_like_vat_id(tax_id: str) -> bool:
    """True when `tax_id` has the shape of an EU VAT id (two letters, then 2 to 12 characters)."""
    compact = _VAT_ID_NOISE.sub("", (tax_id or "").upper())
    return _VAT_ID_SHAPE.fullmatch(compact) is not None


def is_reverse_charge(seller: TaxParty, buyer: TaxParty) -> bool:
    """Intra-EU B2B supply: both in the EU, different member states, a business buyer with a VAT id."""
    seller_country = normalize_country(seller.country)
    buyer_country = normalize_country(buyer.country)
    return (
        seller_country in EU_COUNTRIES
        and buyer_country in EU_COUNTRIES
        and seller_country != buyer_country
        and buyer.kind == "business"
        and looks_like_vat_id(buyer.tax_id)
    )


def _specificity(rate: TaxRateData) -> tuple[int, int]:
    # Location first: a state's rate for any product beats a country-wide rate for the product code,
    # because the buyer's jurisdiction decides which authority's table applies at all.
    return (1 if rate.region.strip() else 0, 1 if rate.tax_code.strip() else 0)


def choose_tax(
    *, seller: TaxParty, buyer: TaxParty, tax_code: str, rates: Sequence[TaxRateData], on: date
) -> TaxDecision:
    """The tax treatment of a product with `tax_code` sold by `seller` to `buyer`, on day `on`.

    Exempt buyers pay none; an intra-EU B2B sale is reverse-charged; otherwise the most specific rate of the
    buyer's country valid on `on` applies (region beats whole country, then tax code beats any product). Two
    equally specific rates are a configuration error. No rate at all: not taxable, 0 %.
    """
    if buyer.tax_exempt:
        reason = buyer.exemption_reason.strip()
        return TaxDecision(
            rate_id=None, name="Tax exempt", percent=ZERO, treatment=EXEMPT,
            mention=f"Tax exempt: {reason}" if reason else "Tax exempt",
        )
    if is_reverse_charge(seller, buyer):
        return TaxDecision(
            rate_id=None, name="Reverse charge", percent=ZERO, treatment=REVERSE_CHARGE,
            mention=REVERSE_CHARGE_MENTION,
        )

    country = normalize_country(buyer.country)
    region = buyer.region.strip().upper()
    code = tax_code.strip().casefold()
    candidates = [
        rate for rate in rates
        if normalize_country(rate.country) == country
        and rate.region.strip().upper() in ("", region)
        and rate.tax_code.strip().casefold() in ("", code)
        and rate.is_valid_on(on)
    ]
    if not candidates:
        return TaxDecision(rate_id=None, name="No tax", percent=ZERO, treatment=NOT_TAXABLE, mention="")

    best_score = max(_specificity(rate) for rate in candidates)
    best = [rate for rate in candidates if _specificity(rate) == best_score]
    if len(best) > 1:
        named = ", ".join(f"#{rate.id} {rate.name!r} ({rate.percent} %)" for rate in best)
        raise ValueError(
            f"Tax rates {named} all apply to country {country!r}, region {region!r}, tax code {code!r} on {on}: "
            "narrow their regions, tax codes or validity dates so that one rate applies."
        )
    rate = best[0]
    return TaxDecision(
        rate_id=rate.id, name=rate.name, percent=rate.percent, treatment=STANDARD, mention=rate.legal_mention
    )


@dataclass(frozen=True)
class TaxableLine:
    key: Hashable
    net_amount: Decimal  # line amount minus its discounts, rounded to the minor unit
    decision: TaxDecision


@dataclass(frozen=True)
class TaxSubtotal:
    decision: TaxDecision
    taxable_amount: Decimal
    tax_amount: Decimal


@dataclass(frozen=True)
class TaxResult:
    subtotals: list[TaxSubtotal]
    line_tax: dict[Hashable, Decimal]
    total: Decimal


def _split_tax(tax: Decimal, nets: list[Decimal], percent: Decimal, currency: str) -> list[Decimal]:
    """Split a rate's rounded `tax` over its lines' net amounts so the parts add up to `tax` exactly.

    Lines of one sign (zeros go with either): largest remainder in proportion to |net|, so each line is
    within one minor unit of its exact share. Mixed signs (a credit next to charges) make proportional
    weights meaningless (they can sum to zero under a non-zero tax), so each line gets its own rounded
    tax and the few minor units of difference go to the line with the largest |net| (the first on a tie),
    where they matter least.
    """
    if all(net >= 0 for net in nets) or all(net <= 0 for net in nets):
        return allocate_by_largest_remainder(tax, [abs(net) for net in nets], currency)
    with localcontext(exact_context()):
        parts = [round_money(net * percent / HUNDRED, currency) for net in nets]
        difference = tax - sum(parts, ZERO)
    largest = max(range(len(nets)), key=lambda i: abs(nets[i]))  # max keeps the first of equal values
    parts[largest] += difference
    return parts


def compute_taxes(lines: Sequence[TaxableLine], currency: str) -> TaxResult:
    """An invoice's taxes: one taxable base and one rounding per decision key, split back to the lines."""
    unit = minor_unit(currency)
    groups: dict[tuple[int | None, Decimal, str], list[TaxableLine]] = {}
    seen: set[Hashable] = set()
    for line in lines:
        if line.key in seen:
            raise ValueError(f"Two taxable lines share the key {line.key!r}.")
        seen.add(line.key)
        if not isinstance(line.net_amount, Decimal) or round_money(line.net_amount, currency) != line.net_amount:
            raise ValueError(
                f"Line {line.key!r}: the net amount {line.net_amount} is not rounded to the {currency} minor unit."
            )
        groups.setdefault(line.decision.key, []).append(line)

    subtotals: list[TaxSubtotal] = []
    line_tax: dict[Hashable, Decimal] = {line.key: ZERO.quantize(unit) for line in lines}
    for group in groups.values():
        decision = group[0].decision
        nets = [line.net_amount for line in group]
        with localcontext(exact_context()):
            taxable = sum(nets, ZERO).quantize(unit)
            tax = round_money(taxable * decision.percent / HUNDRED, currency)
        for line, part in zip(group, _split_tax(tax, nets, decision.percent, currency), strict=True):
            line_tax[line.key] = part
        subtotals.append(TaxSubtotal(decision=decision, taxable_amount=taxable, tax_amount=tax))

    subtotals.sort(key=lambda s: (
        -s.decision.percent, s.decision.name, s.decision.treatment,
        -1 if s.decision.rate_id is None else s.decision.rate_id,
    ))
    total = sum((s.tax_amount for s in subtotals), ZERO).quantize(unit)
    return TaxResult(subtotals=subtotals, line_tax=line_tax, total=total)
