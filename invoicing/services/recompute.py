"""Recompute a stored invoice from the stored events and prices and report whether it still matches.

Each usage line is re-aggregated from the events of its window with its charge's filters and group-by and
re-priced with the terms recorded on the line; fee lines are re-prorated from their recorded price, quantity
and days (rounded on the period's running total, as the close does); taxes are recomputed per rate from the
lines' net amounts; totals are re-added. Events received after the invoice was computed are counted and
reported (they are billed as late usage on a later invoice), so a difference they explain is not a mismatch
of the invoice itself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from invoicing.models import Invoice, InvoiceLine
from invoicing.pricing import exact_context
from invoicing.pricing.charge_models import price_usage
from invoicing.pricing.fees import round_running
from invoicing.pricing.rounding import round_money
from invoicing.pricing.tax import TaxableLine, TaxDecision, compute_taxes
from usage.aggregation import Spec
from usage.models import UsageEvent
from usage.selectors import quantities_for_spec

ZERO = Decimal(0)
K = InvoiceLine.Kind
FEE_KINDS = (K.SUBSCRIPTION_FEE, K.PRORATION_CHARGE, K.FIXED)


@dataclass
class LineCheck:
    line_id: int
    description: str
    kind: str
    stored_amount: Decimal
    recomputed_amount: Decimal | None
    stored_quantity: Decimal
    recomputed_quantity: Decimal | None
    matches: bool
    note: str = ""


@dataclass
class RecomputeReport:
    invoice_id: int
    matches: bool
    lines: list[LineCheck] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    late_events: int = 0

    @property
    def differences(self) -> list[LineCheck]:
        return [check for check in self.lines if not check.matches]


def _usage_check(invoice: Invoice, line: InvoiceLine, as_of: datetime) -> tuple[LineCheck, int]:
    info = line.explanation
    start, end = datetime.fromisoformat(info["events_from"]), datetime.fromisoformat(info["events_to"])
    charge = line.charge
    spec = Spec.for_meter(charge.meter, filters=charge.filters, group_by=charge.group_by)
    quantities = quantities_for_spec(line.customer_id, charge.meter, spec, start, end)
    key = tuple(line.group.get(name) for name in spec.group_by)
    quantity_now = quantities.get(key, ZERO)
    late = UsageEvent.objects.filter(
        customer_id=line.customer_id,
        meter_id=charge.meter_id,
        timestamp__gte=start,
        timestamp__lt=end,
        received_at__gt=as_of,
    ).count()
    billed_quantity = Decimal(info.get("quantity_now", info.get("quantity", line.quantity)))
    priced = (
        price_usage(info["charge_model"], info["properties"], billed_quantity)
        if not (
            info["charge_model"] == "percentage"
            and info.get("tiers")
            and any(
                t["label"] in ("fixed fees", "free", "minimum fee adjustment", "maximum fee adjustment")
                for t in info["tiers"]
            )
        )
        else None
    )
    amount = round_money(priced.amount, invoice.currency) if priced else line.amount
    if line.kind == K.LATE_USAGE:
        amount = amount - Decimal(info.get("billed_amount", "0"))
    quantity_ok = quantity_now == billed_quantity or late > 0
    note = ""
    if quantity_now != billed_quantity:
        note = (
            f"{late} event(s) received after this invoice; now {quantity_now}"
            if late
            else f"the events now add up to {quantity_now}, not {billed_quantity}"
        )
    elif priced is None:
        note = "per-transaction terms: quantity checked, amount taken as billed"
    return LineCheck(
        line.pk,
        line.description,
        line.kind,
        line.amount,
        amount,
        line.quantity,
        quantity_now,
        quantity_ok and amount == line.amount,
        note,
    ), late


def _fee_checks(invoice: Invoice, lines: list[InvoiceLine]) -> list[LineCheck]:
    """Fee lines of one (subscription, period, item, timing), re-prorated and rounded on the running total."""
    groups: dict[tuple, list[InvoiceLine]] = defaultdict(list)
    for line in lines:
        info = line.explanation
        groups[
            (
                line.subscription_id,
                info.get("period", {}).get("start"),
                info.get("item"),
                info.get("timing"),
                line.kind == K.PRORATION_CHARGE,
            )
        ].append(line)
    checks = []
    for group in groups.values():
        exact = []
        for line in group:
            fee = line.explanation.get("fee")
            if fee is None:  # one-time fixed charge: price x quantity
                with localcontext(exact_context()):
                    exact.append(line.unit_price * line.quantity)
                continue
            with localcontext(exact_context()):
                value = Decimal(fee["unit_price"]) * Decimal(fee["quantity"])
                if fee.get("prorated", True):
                    value = value * fee["days"] / fee["full_days"]
            exact.append(value)
        opening = Decimal(group[0].explanation.get("opening_exact", "0"))
        for line, amount in zip(group, round_running(exact, invoice.currency, opening=opening), strict=True):
            checks.append(
                LineCheck(
                    line.pk,
                    line.description,
                    line.kind,
                    line.amount,
                    amount,
                    line.quantity,
                    line.quantity,
                    amount == line.amount,
                )
            )
    return checks


def recompute_invoice(invoice: Invoice) -> RecomputeReport:
    lines = list(invoice.lines.select_related("charge__meter").order_by("position", "id"))
    as_of = invoice.as_of or invoice.created_at
    report = RecomputeReport(invoice_id=invoice.pk, matches=True)
    fee_lines = []
    for line in lines:
        if line.kind in (K.USAGE, K.LATE_USAGE) and line.charge_id and "events_from" in line.explanation:
            check, late = _usage_check(invoice, line, as_of)
            report.late_events += late
            report.lines.append(check)
        elif line.kind in FEE_KINDS and line.subscription_id:
            fee_lines.append(line)
        elif line.kind == K.PRORATION_CREDIT and "billed_amount" in line.explanation:
            info = line.explanation
            credit = Decimal(info["billed_amount"]) - round_money(Decimal(info["used_exact"]), invoice.currency)
            report.lines.append(
                LineCheck(
                    line.pk,
                    line.description,
                    line.kind,
                    line.amount,
                    -credit,
                    line.quantity,
                    line.quantity,
                    -credit == line.amount,
                )
            )
        else:
            with localcontext(exact_context()):
                expected = (
                    round_money(line.unit_price * line.quantity, invoice.currency)
                    if line.kind in (K.ONE_OFF, K.INSTALLMENT, K.CREDIT_PURCHASE)
                    else line.amount
                )
            report.lines.append(
                LineCheck(
                    line.pk,
                    line.description,
                    line.kind,
                    line.amount,
                    expected,
                    line.quantity,
                    line.quantity,
                    expected == line.amount,
                    ""
                    if line.kind in (K.ONE_OFF, K.INSTALLMENT, K.CREDIT_PURCHASE)
                    else "checked through the invoice totals",
                )
            )
    report.lines.extend(_fee_checks(invoice, fee_lines))
    report.lines.sort(key=lambda c: c.line_id)

    taxes = (
        compute_taxes(
            [
                TaxableLine(
                    key=line.pk,
                    net_amount=line.amount - line.discount_amount,
                    decision=TaxDecision(
                        rate_id=line.tax_rate_id,
                        name=str(line.tax_rate_id or line.tax_treatment),
                        percent=line.tax_percent,
                        treatment=line.tax_treatment,
                        mention="",
                    ),
                )
                for line in lines
            ],
            invoice.currency,
        )
        if lines
        else None
    )
    subtotal = sum((line.amount for line in lines), ZERO)
    discounts = sum((line.discount_amount for line in lines), ZERO)
    tax = taxes.total if taxes else ZERO
    line_taxes_ok = all(taxes.line_tax[line.pk] == line.tax_amount for line in lines) if taxes else True
    report.totals = {
        "subtotal": (invoice.subtotal, subtotal),
        "discount_total": (invoice.discount_total, discounts),
        "tax_total": (invoice.tax_total, tax),
        "total": (invoice.total, subtotal - discounts + tax),
        "amount_due": (invoice.amount_due, subtotal - discounts + tax - invoice.prepaid_credit_applied),
        "line_taxes": (True, line_taxes_ok),
    }
    report.matches = all(c.matches for c in report.lines) and all(a == b for a, b in report.totals.values())
    return report
