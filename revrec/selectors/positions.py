"""The revenue subledger rebuilt for any day, and ledger balances, so reports can reconcile the two.

A contract's position on day D comes from the obligations' first figures and their later adjustments (what
was billed by D) and the Recognition rows (what was recognised by D); presented net per contract (ASC
606-10-45-1): deferred revenue when billed is ahead, a contract asset when recognised is. The ledger holds
the same figures posted by entry date, so on every day the two must agree to the cent.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db.models import Q, Sum

from revrec.models import Account, JournalEntry, JournalLine, ObligationAdjustment, PerformanceObligation, Recognition

ZERO = Decimal("0")
STORED_UNIT = Decimal("0.0001")
# Unbilled usage accrued at a period end and reversed the next day: in the ledger, never in the subledger.
ACCRUAL_KINDS = (JournalEntry.Kind.ACCRUAL, JournalEntry.Kind.ACCRUAL_REVERSAL)


@dataclass(frozen=True)
class ContractPosition:
    revenue_contract_id: int
    billed: Decimal
    recognized: Decimal
    deferred: Decimal
    contract_asset: Decimal


@dataclass(frozen=True)
class PositionTotals:
    billed: Decimal
    recognized: Decimal
    deferred: Decimal
    contract_asset: Decimal


def stored(total: Decimal) -> Decimal:
    """A database sum back on the stored scale (4 places): SQLite adds decimals as binary floats."""
    return Decimal(total).quantize(STORED_UNIT)


def positions_as_of(entity_id: int, currency: str, day: date) -> list[ContractPosition]:
    """Every revenue contract of the entity in `currency` with something billed or recognised by the end of
    `day`, ordered by contract id."""
    scope = Q(revenue_contract__billing_entity_id=entity_id, revenue_contract__currency=currency)
    billed: dict[int, Decimal] = defaultdict(lambda: ZERO)
    recognized: dict[int, Decimal] = defaultdict(lambda: ZERO)
    first = (
        PerformanceObligation.objects.filter(scope, billed_on__lte=day)
        .values("revenue_contract_id").annotate(amount=Sum("billed_amount")).order_by()
    )
    for row in first:
        billed[row["revenue_contract_id"]] += stored(row["amount"])
    later = (
        ObligationAdjustment.objects.filter(scope, effective_on__lte=day)
        .values("revenue_contract_id").annotate(amount=Sum("billed_delta")).order_by()
    )
    for row in later:
        billed[row["revenue_contract_id"]] += stored(row["amount"])
    recognitions = (
        Recognition.objects.filter(scope, currency=currency, recognized_on__lte=day)
        .values("revenue_contract_id").annotate(amount=Sum("amount")).order_by()
    )
    for row in recognitions:
        recognized[row["revenue_contract_id"]] += stored(row["amount"])
    positions = []
    for contract_id in sorted(set(billed) | set(recognized)):
        b, r = billed[contract_id], recognized[contract_id]
        positions.append(ContractPosition(contract_id, b, r, max(b - r, ZERO), max(r - b, ZERO)))
    return positions


def position_totals(positions: Iterable[ContractPosition]) -> PositionTotals:
    rows = list(positions)
    return PositionTotals(
        billed=sum((p.billed for p in rows), ZERO),
        recognized=sum((p.recognized for p in rows), ZERO),
        deferred=sum((p.deferred for p in rows), ZERO),
        contract_asset=sum((p.contract_asset for p in rows), ZERO),
    )


def normal_side(role: str) -> str:
    """Which side increases the accounts of a role ("debit" or "credit"), as Account.normal_balance says."""
    from revrec.services.chart import DEFAULT_CHART

    kind = next((t for _, _, t, r in DEFAULT_CHART if r == role), Account.Type.ASSET)
    return Account(type=kind, role=role).normal_balance


def ledger_balance(
    entity_id: int, currency: str, role: str, day: date, *, exclude_kinds: Sequence[str] = ()
) -> Decimal:
    """The balance of the entity's accounts of `role` at the end of `day` (entries dated on or before it), in
    `currency`, positive on the role's normal side. `exclude_kinds`: entry kinds left out (the accruals)."""
    lines = JournalLine.objects.filter(
        entry__billing_entity_id=entity_id, entry__currency=currency, entry__entry_date__lte=day,
        account__role=role,
    )
    if exclude_kinds:
        lines = lines.exclude(entry__kind__in=list(exclude_kinds))
    sums = lines.aggregate(debit=Sum("debit"), credit=Sum("credit"))
    net = stored(sums["debit"] or ZERO) - stored(sums["credit"] or ZERO)
    return net if normal_side(role) == "debit" else -net
