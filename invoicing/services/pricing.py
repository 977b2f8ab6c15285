"""From line drafts to a priced invoice: discounts (coupons, promotional credits), taxes and totals.

`price_invoice` is pure (no ORM): the cycle close, a preview and a recomputation call it with inputs read by
`pricing_inputs`, so they show the same figures. DESIGN: discounts before tax; tax per invoice and rate,
rounded once; total = subtotal - discounts + tax; prepaid credit reduces the amount due after tax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Q

from customers.models import BillingEntity, Customer
from invoicing.models import AppliedCoupon, CreditGrant, InvoiceLine, TaxRate
from invoicing.pricing.discounts import CouponTerms, CreditBalance, DiscountableLine, apply_discounts
from invoicing.pricing.tax import TaxableLine, TaxDecision, TaxParty, TaxRateData, choose_tax, compute_taxes
from invoicing.rating import LineDraft

ZERO = Decimal(0)
# Buying prepaid credit is a prepayment, not a supply: it is taxed when the credit is used.
UNTAXED_KINDS = (InvoiceLine.Kind.CREDIT_PURCHASE,)
NOT_TAXABLE = TaxDecision(
    rate_id=None, name="Prepayment (not taxable)", percent=ZERO, treatment="not_taxable", mention=""
)


@dataclass
class PricingInputs:
    seller: TaxParty
    buyer: TaxParty
    rates: list[TaxRateData]
    coupons: list[tuple[AppliedCoupon, CouponTerms]] = field(default_factory=list)
    credits: list[tuple[CreditGrant, CreditBalance]] = field(default_factory=list)


@dataclass
class PricedLine:
    draft: LineDraft
    discount: Decimal
    decision: TaxDecision
    tax: Decimal


@dataclass
class PricedInvoice:
    currency: str
    lines: list[PricedLine]
    subtotal: Decimal
    discount_total: Decimal
    tax_total: Decimal
    total: Decimal
    tax_breakdown: list[dict[str, Any]]
    discount_breakdown: list[dict[str, Any]]
    mentions: list[str]


def tax_party_for_entity(entity: BillingEntity) -> TaxParty:
    return TaxParty(country=str(entity.country), region=entity.state, kind="business", tax_id=entity.tax_id)


def tax_party_for_customer(customer: Customer) -> TaxParty:
    return TaxParty(
        country=str(customer.country),
        region=customer.state,
        kind=customer.kind,
        tax_id=customer.tax_id,
        tax_exempt=customer.tax_exempt,
        exemption_reason=customer.tax_exemption_reason,
    )


def tax_rate_table(on: date | None = None) -> list[TaxRateData]:
    rows = TaxRate.objects.filter(is_active=True)
    if on is not None:
        rows = rows.filter(Q(valid_to__isnull=True) | Q(valid_to__gt=on))
    return [
        TaxRateData(
            id=r.pk,
            name=r.name,
            country=str(r.country),
            region=r.region,
            tax_code=r.tax_code,
            percent=r.percent,
            valid_from=r.valid_from,
            valid_to=r.valid_to,
            legal_mention=r.legal_mention,
        )
        for r in rows
    ]


def coupon_terms(applied: AppliedCoupon, currency: str) -> CouponTerms | None:
    coupon = applied.coupon
    if coupon.discount_type == "fixed" and str(coupon.amount_off.currency) != currency:
        return None  # a fixed amount only discounts invoices in its own currency
    return CouponTerms(
        id=applied.pk,
        code=coupon.code,
        discount_type=coupon.discount_type,
        percent_off=coupon.percent_off,
        amount_off=coupon.amount_off.amount if coupon.amount_off is not None else None,
        plan_ids=frozenset(p.pk for p in coupon.applies_to_plans.all()),
        meter_ids=frozenset(m.pk for m in coupon.applies_to_meters.all()),
    )


def pricing_inputs(
    bill_to: Customer, currency: str, *, on: date, lock: bool = False, rates: list[TaxRateData] | None = None,
    hints: Any = None,
) -> PricingInputs:
    """What prices an invoice of `bill_to` besides its lines. With `lock`, the coupons and credits are locked
    (the close consumes them); a preview reads them without locking. A cycle run's `hints` (rating.RunHints)
    skip the reads for customers with no coupon or credit at all."""
    coupons_qs = AppliedCoupon.objects.filter(
        customer=bill_to, status=AppliedCoupon.Status.ACTIVE, coupon__is_active=True
    )
    credits_qs = CreditGrant.objects.filter(customer=bill_to, currency=currency, remaining__gt=0).filter(
        Q(expires_on__isnull=True) | Q(expires_on__gt=on)
    )
    if lock:
        coupons_qs = coupons_qs.select_for_update(of=("self",))
        credits_qs = credits_qs.select_for_update()
    if hints is not None:
        rates = hints.tax_rates if rates is None else rates
        if bill_to.pk not in hints.coupon_customers:
            coupons_qs = coupons_qs.none()
        if bill_to.pk not in hints.credit_customers:
            credits_qs = credits_qs.none()
    coupons = []
    for applied in (
        coupons_qs.select_related("coupon")
        .prefetch_related("coupon__applies_to_plans", "coupon__applies_to_meters")
        .order_by("pk")
    ):
        terms = coupon_terms(applied, currency)
        if terms is not None:
            coupons.append((applied, terms))
    credits = [
        (g, CreditBalance(id=g.pk, remaining=g.remaining))
        for g in credits_qs.order_by("expires_on", "created_at", "pk")
    ]
    return PricingInputs(
        seller=tax_party_for_entity(bill_to.billing_entity),
        buyer=tax_party_for_customer(bill_to),
        rates=rates if rates is not None else tax_rate_table(on),
        coupons=coupons,
        credits=credits,
    )


def price_invoice(drafts: Sequence[LineDraft], inputs: PricingInputs, *, currency: str, on: date) -> PricedInvoice:
    keys = list(range(len(drafts)))
    discounts = apply_discounts(
        [
            DiscountableLine(key=k, amount=d.amount, plan_id=d.plan_id, meter_id=d.meter_id)
            for k, d in zip(keys, drafts, strict=True)
        ],
        [terms for _, terms in inputs.coupons],
        [balance for _, balance in inputs.credits],
        currency,
    )
    decisions: dict[tuple, TaxDecision] = {}

    def decide(draft: LineDraft) -> TaxDecision:
        if draft.kind in UNTAXED_KINDS:
            return NOT_TAXABLE
        if draft.tax_code not in decisions:
            decisions[draft.tax_code] = choose_tax(
                seller=inputs.seller, buyer=inputs.buyer, tax_code=draft.tax_code, rates=inputs.rates, on=on
            )
        return decisions[draft.tax_code]

    line_decisions = [decide(d) for d in drafts]
    taxes = compute_taxes(
        [
            TaxableLine(key=k, net_amount=d.amount - discounts.line_discounts[k], decision=dec)
            for k, d, dec in zip(keys, drafts, line_decisions, strict=True)
        ],
        currency,
    )
    subtotal = sum((d.amount for d in drafts), ZERO)
    mentions = sorted({dec.mention for dec in line_decisions if dec.mention})
    for rate in inputs.rates:
        if rate.legal_mention and any(dec.rate_id == rate.id for dec in line_decisions):
            mentions.append(rate.legal_mention)
    return PricedInvoice(
        currency=currency,
        lines=[
            PricedLine(d, discounts.line_discounts[k], dec, taxes.line_tax[k])
            for k, d, dec in zip(keys, drafts, line_decisions, strict=True)
        ],
        subtotal=subtotal,
        discount_total=discounts.total,
        tax_total=taxes.total,
        total=subtotal - discounts.total + taxes.total,
        tax_breakdown=[
            {
                "name": st.decision.name,
                "percent": format(st.decision.percent, "f"),
                "treatment": st.decision.treatment,
                "rate_id": st.decision.rate_id,
                "taxable_amount": format(st.taxable_amount, "f"),
                "tax_amount": format(st.tax_amount, "f"),
            }
            for st in taxes.subtotals
        ],
        discount_breakdown=[
            {"source": d.source, "source_id": d.source_id, "label": d.label, "amount": format(d.amount, "f")}
            for d in discounts.discounts
        ],
        mentions=mentions,
    )
