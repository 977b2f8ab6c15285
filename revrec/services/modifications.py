"""Contract modifications (ASC 606-10-25-10 to 25-13): an upgrade, downgrade, added product, quantity change,
extension or cancellation, accounted for as a separate contract, prospectively, or by a cumulative catch-up,
and recorded with the rule's rationale and the obligations' figures before and after.

Modifications change recognition only: the consideration they add or remove is billed (or credited) through
invoices and credit notes as usual, and the contract's net position (deferred revenue or contract asset)
absorbs the timing difference. Every change to an obligation's allocated price is also an
ObligationAdjustment, so the deferred revenue roll-forward can rebuild any day's position.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import transaction

from billing.actors import Actor
from billing.errors import BillingError
from invoicing.pricing.rounding import round_money
from revrec.arithmetic import AllocationError, ObligationPrice, allocate_transaction_price, choose_treatment
from revrec.models import (
    ContractModification,
    JournalEntry,
    ObligationAdjustment,
    PerformanceObligation,
    Recognition,
    RevenueContract,
)
from revrec.services.chart import Chart
from revrec.services.journal import post_entry
from revrec.services.periods import posting_period
from revrec.services.posting.invoices import contract_move
from revrec.services.recognition import _due, lock_entity_revenue

ZERO = Decimal("0")
Pattern = PerformanceObligation.Pattern
Status = PerformanceObligation.Status
Treatment = ContractModification.Treatment


@dataclass(frozen=True)
class ObligationChange:
    """A change to an existing obligation: consideration added (or removed, negative), a new end date
    (extension, earlier end), and the SSP of what remains after the effective date (the prospective weight;
    default: its SSP for the remaining days)."""

    obligation: PerformanceObligation
    price_change: Decimal = ZERO
    new_end: date | None = None
    remaining_ssp: Decimal | None = None


@dataclass(frozen=True)
class AddedObligation:
    """A good or service the modification adds, for `price` (its SSP `ssp`, default the price)."""

    description: str
    price: Decimal
    service_start: date | None = None
    service_end: date | None = None
    ssp: Decimal | None = None
    product_id: int | None = None
    pattern: str = Pattern.RATABLE
    kind: str = PerformanceObligation.Kind.SUBSCRIPTION
    satisfied_on: date | None = None


Change = ObligationChange | AddedObligation


def _figures(obligation: PerformanceObligation) -> dict[str, str | None]:
    return {
        "allocated_price": str(obligation.allocated_price), "recognized_amount": str(obligation.recognized_amount),
        "service_end": obligation.service_end.isoformat() if obligation.service_end else None,
        "rebased_on": obligation.rebased_on.isoformat() if obligation.rebased_on else None,
        "rebased_amount": str(obligation.rebased_amount), "status": obligation.status,
        "satisfied_on": obligation.satisfied_on.isoformat() if obligation.satisfied_on else None,
    }


def _due_on(obligation: PerformanceObligation, day: date, currency: str, *, price: Decimal | None = None,
            end: date | None = None) -> Decimal:
    """Its running total through `day`, under its terms or under `price` / `end` instead (as if from the
    start: the cumulative catch-up's view)."""
    return _due(obligation.pattern, obligation.allocated_price if price is None else price,
                obligation.recognized_amount, obligation.service_start, end or obligation.service_end,
                obligation.rebased_on, obligation.rebased_amount, obligation.satisfied_on, day, currency)


def _remaining_weight(change: ObligationChange, effective: date) -> Decimal:
    if change.remaining_ssp is not None:
        return change.remaining_ssp
    obligation = change.obligation
    if obligation.pattern == Pattern.RATABLE and obligation.service_start and obligation.service_end:
        start = obligation.rebased_on or obligation.service_start
        total = (obligation.service_end - start).days
        left = max((obligation.service_end - max(effective, start)).days, 0)
        return obligation.ssp * left / total if total else ZERO
    return obligation.ssp


def modify_contract(
    revenue_contract: RevenueContract, *, change: str, effective_date: date, obligation_changes: list[Change],
    treatment: str | None = None, adds_distinct_goods: bool, priced_at_ssp: bool, remaining_distinct: bool,
    actor: Actor, now: datetime, source_key: str,
) -> ContractModification:
    """Account for a modification of `revenue_contract` effective at the start of `effective_date`. The
    treatment defaults to ASC 606-10-25-12/13 applied to the three facts given. Repeating the same
    `source_key` returns the modification already recorded."""
    if change not in ContractModification.Change.values:
        raise BillingError(f"Unknown change {change!r}.", field="change")
    decided = choose_treatment(adds_distinct_goods=adds_distinct_goods, priced_at_ssp=priced_at_ssp,
                               remaining_distinct=remaining_distinct)
    if treatment is None:
        treatment, rationale = decided.treatment, decided.rationale
    elif treatment not in Treatment.values:
        raise BillingError(f"Unknown treatment {treatment!r}.", field="treatment")
    else:
        rationale = decided.rationale if treatment == decided.treatment else (
            f"Chosen by {actor.label} instead of {decided.treatment}. The rule would say: {decided.rationale}")
    currency = str(revenue_contract.currency)
    for item in obligation_changes:
        amount = item.price_change if isinstance(item, ObligationChange) else item.price
        if round_money(amount, currency) != amount:
            raise BillingError(f"{amount} is not rounded to the {currency} minor unit.", field="obligation_changes")
        if isinstance(item, ObligationChange) and item.obligation.revenue_contract_id != revenue_contract.pk:
            raise BillingError(f"Obligation {item.obligation.pk} is not in {revenue_contract}.",
                               field="obligation_changes")
    with transaction.atomic():
        lock_entity_revenue(revenue_contract.billing_entity_id)
        existing = ContractModification.objects.filter(source_key=source_key).first()
        if existing is not None:
            if existing.revenue_contract_id != revenue_contract.pk:
                raise BillingError(f"{source_key} was used for another contract.", field="source_key")
            return existing
        contract = RevenueContract.objects.select_for_update().get(pk=revenue_contract.pk)
        changes = _reload(contract, change, effective_date, obligation_changes)
        price_change = sum((c.price_change if isinstance(c, ObligationChange) else c.price for c in changes), ZERO)
        modification = ContractModification.objects.create(
            revenue_contract=contract, change=change, treatment=treatment, effective_date=effective_date,
            price_change=price_change, rationale=rationale, source_key=source_key, created_at=now,
            created_by=actor.label,
        )
        ledger_day = posting_period(contract.billing_entity_id, effective_date)[1]
        if treatment == Treatment.SEPARATE_CONTRACT:
            details = _separate(contract, modification, changes, ledger_day, now=now)
        elif treatment == Treatment.PROSPECTIVE:
            details = _prospective(contract, modification, changes, change, ledger_day, now=now)
        else:
            details = _catch_up(contract, modification, changes, ledger_day, actor=actor, now=now)
        modification.details = {"facts": {"adds_distinct_goods": adds_distinct_goods, "priced_at_ssp": priced_at_ssp,
                                           "remaining_distinct": remaining_distinct}, **details}
        modification.save(update_fields=["details", "catch_up_amount", "separate_contract"])
        return modification


def _reload(contract: RevenueContract, change: str, effective: date, items: list[Change]) -> list[Change]:
    """The changes with their obligations locked and read afresh (a cancellation without a list takes every
    obligation not yet complete)."""
    if change == ContractModification.Change.CANCELLATION and not items:
        items = [ObligationChange(o) for o in contract.obligations.filter(
            status__in=[Status.OPEN, Status.AWAITING_DELIVERY]).order_by("pk")]
    ids = [c.obligation.pk for c in items if isinstance(c, ObligationChange)]
    locked = {o.pk: o for o in PerformanceObligation.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
    result: list[Change] = []
    for item in items:
        if isinstance(item, ObligationChange):
            obligation = locked[item.obligation.pk]
            new_end = item.new_end
            if change == ContractModification.Change.CANCELLATION and obligation.pattern == Pattern.RATABLE:
                if obligation.service_start is None or effective <= obligation.service_start:
                    raise BillingError(f"Obligation {obligation.pk} has not started on {effective}: credit its "
                                       "invoice instead of cancelling it.", field="effective_date")
                new_end = min(effective, obligation.service_end) if obligation.service_end else effective
            if new_end is not None and obligation.service_start and new_end <= obligation.service_start:
                raise BillingError(f"The new end {new_end} is not after the start of obligation {obligation.pk}.",
                                   field="obligation_changes")
            item = ObligationChange(obligation, item.price_change, new_end, item.remaining_ssp)
        result.append(item)
    return result


def _adjust(obligation: PerformanceObligation, modification: ContractModification, delta: Decimal, ledger_day: date,
            *, now: datetime, entry: JournalEntry | None = None) -> None:
    if delta:
        ObligationAdjustment.objects.create(
            obligation=obligation, revenue_contract_id=obligation.revenue_contract_id,
            kind=ObligationAdjustment.Kind.MODIFICATION, effective_on=ledger_day, allocated_delta=delta,
            billed_delta=ZERO, entry=entry, source_key=f"modification:{modification.pk}", created_at=now,
        )


def _create_added(contract: RevenueContract, item: AddedObligation, price: Decimal, ledger_day: date, *,
                  now: datetime) -> PerformanceObligation:
    if item.pattern == Pattern.RATABLE and not (item.service_start and item.service_end
                                                and item.service_end > item.service_start):
        raise BillingError(f"{item.description}: a ratable obligation needs its service period.",
                           field="obligation_changes")
    status = Status.OPEN if item.pattern != Pattern.POINT_IN_TIME or item.satisfied_on else Status.AWAITING_DELIVERY
    return PerformanceObligation.objects.create(
        revenue_contract=contract, product_id=item.product_id, description=item.description[:300], kind=item.kind,
        pattern=item.pattern, status=status, service_start=item.service_start, service_end=item.service_end,
        satisfied_on=item.satisfied_on, billed_on=ledger_day, ssp=item.ssp if item.ssp is not None else item.price,
        ssp_source="contract modification", allocated_price=price, created_at=now,
    )


def _separate(contract: RevenueContract, modification: ContractModification, changes: list[Change],
              ledger_day: date, *, now: datetime) -> dict[str, object]:
    """25-12: the added goods at their SSPs form a new contract; the original is untouched."""
    added = [c for c in changes if isinstance(c, AddedObligation)]
    if not added or len(added) != len(changes):
        raise BillingError("A separate contract only adds goods or services: list them as added obligations.",
                           field="obligation_changes")
    count = RevenueContract.objects.filter(parent=contract).count()
    new = RevenueContract.objects.create(
        billing_entity_id=contract.billing_entity_id, customer_id=contract.customer_id, parent=contract,
        reference=f"{contract.reference}-M{count + 1}", currency=contract.currency,
        transaction_price=sum((a.price for a in added), ZERO), created_at=now,
    )
    created = [_create_added(new, item, item.price, ledger_day, now=now) for item in added]
    modification.separate_contract = new
    return {"separate_contract": new.reference,
            "added": [{"id": o.pk, "description": o.description, "allocated_price": str(o.allocated_price)}
                      for o in created]}


def _prospective(contract: RevenueContract, modification: ContractModification, changes: list[Change], change: str,
                 ledger_day: date, *, now: datetime) -> dict[str, object]:
    """25-13(a): what was recognised through the day before stays; the unrecognised consideration plus the
    change is reallocated by relative SSP of the remaining parts and recognised from the effective date."""
    effective = modification.effective_date
    before_day = effective - timedelta(days=1)
    currency = str(contract.currency)
    existing = [c for c in changes if isinstance(c, ObligationChange)]
    added = [c for c in changes if isinstance(c, AddedObligation)]
    kept = {c.obligation.pk: _due_on(c.obligation, before_day, currency) for c in existing}
    remaining = sum((c.obligation.allocated_price - kept[c.obligation.pk] + c.price_change for c in existing), ZERO)
    remaining += sum((a.price for a in added), ZERO)
    before = {c.obligation.pk: _figures(c.obligation) for c in existing}
    if change == ContractModification.Change.CANCELLATION:
        # Everything ends on the same day: each obligation keeps its own remaining consideration.
        shares = [c.obligation.allocated_price - kept[c.obligation.pk] + c.price_change for c in existing]
    else:
        weights = [ObligationPrice(ssp=_remaining_weight(c, effective)) for c in existing]
        weights += [ObligationPrice(ssp=a.ssp if a.ssp is not None else a.price) for a in added]
        try:
            shares = allocate_transaction_price(remaining, weights, currency).prices
        except AllocationError as error:
            raise BillingError(str(error), field="obligation_changes") from error
    after: dict[int, dict[str, str | None]] = {}
    for item, share in zip(existing, shares, strict=False):
        obligation = item.obligation
        new_price = kept[obligation.pk] + share
        delta = new_price - obligation.allocated_price
        obligation.allocated_price = new_price
        if item.new_end is not None:
            obligation.service_end = item.new_end
        if obligation.pattern == Pattern.RATABLE:
            rebase = max(effective, obligation.service_start)
            obligation.rebased_on = rebase
            obligation.rebased_amount = kept[obligation.pk] if rebase == effective else ZERO
        elif obligation.status == Status.AWAITING_DELIVERY and change == ContractModification.Change.CANCELLATION:
            if new_price == obligation.recognized_amount:
                obligation.status = Status.CANCELLED
            else:  # nothing left to deliver: the consideration kept is earned when the contract ends
                obligation.satisfied_on, obligation.status = effective, Status.OPEN
        if obligation.status == Status.COMPLETE and new_price != obligation.recognized_amount:
            obligation.status = Status.OPEN
        obligation.save(update_fields=["allocated_price", "service_end", "rebased_on", "rebased_amount", "status",
                                       "satisfied_on"])
        _adjust(obligation, modification, delta, ledger_day, now=now)
        after[obligation.pk] = _figures(obligation)
    created = [_create_added(contract, item, share, ledger_day, now=now)
               for item, share in zip(added, shares[len(existing):], strict=True)]
    contract.transaction_price += modification.price_change
    contract.save(update_fields=["transaction_price"])
    return {"remaining_reallocated": str(round_money(remaining, currency)),
            "obligations": [{"id": pk, "before": before[pk], "after": after[pk]} for pk in before],
            "added": [{"id": o.pk, "allocated_price": str(o.allocated_price)} for o in created]}


def _catch_up(contract: RevenueContract, modification: ContractModification, changes: list[Change],
              ledger_day: date, *, actor: Actor, now: datetime) -> dict[str, object]:
    """25-13(b): the new price (or end) applies as if from the start; the difference it makes to the running
    total through the day before the effective date is recognised at once, on the effective date."""
    effective = modification.effective_date
    before_day = effective - timedelta(days=1)
    currency = str(contract.currency)
    rows: list[tuple[PerformanceObligation, Decimal, Decimal]] = []
    before: dict[int, dict[str, str | None]] = {}
    for item in changes:
        if isinstance(item, AddedObligation):
            created = _create_added(contract, item, item.price, ledger_day, now=now)
            before[created.pk] = {}
            rows.append((created, ZERO, ZERO))
            continue
        obligation = item.obligation
        before[obligation.pk] = _figures(obligation)
        new_price = obligation.allocated_price + item.price_change
        catch = _due_on(obligation, before_day, currency, price=new_price, end=item.new_end) - _due_on(
            obligation, before_day, currency)
        obligation.allocated_price = new_price
        if item.new_end is not None:
            obligation.service_end = item.new_end
        obligation.recognized_amount += catch
        if obligation.status == Status.COMPLETE and new_price != obligation.recognized_amount:
            obligation.status = Status.OPEN
        obligation.save(update_fields=["allocated_price", "service_end", "recognized_amount", "status"])
        rows.append((obligation, item.price_change, catch))
    total = sum((catch for _, _, catch in rows), ZERO)
    entry = None
    if total or any(catch for _, _, catch in rows):
        by_product: dict[int | None, Decimal] = {}
        for obligation, _, catch in rows:
            by_product[obligation.product_id] = by_product.get(obligation.product_id, ZERO) + catch
        postings = contract_move(contract, ZERO, total, customer_id=contract.customer_id,
                                 revenue=list(by_product.items()), memo=f"{contract.reference} catch-up")
        entry = post_entry(
            chart=Chart.load(contract.billing_entity), kind=JournalEntry.Kind.MODIFICATION,
            source_key=f"modification:{modification.pk}", on=effective, currency=currency,
            description=f"Cumulative catch-up: {modification}", postings=postings, actor=actor, now=now,
            customer_id=contract.customer_id,
        )
    if entry is not None:
        Recognition.objects.bulk_create([
            Recognition(obligation=obligation, revenue_contract_id=contract.pk, customer_id=contract.customer_id,
                        product_id=obligation.product_id, currency=currency, recognized_on=entry.entry_date,
                        kind=Recognition.Kind.CATCH_UP, amount=catch, entry=entry)
            for obligation, _, catch in rows if catch
        ])
    for obligation, delta, _ in rows:
        _adjust(obligation, modification, delta, ledger_day, now=now, entry=entry)
    contract.transaction_price += modification.price_change
    contract.save(update_fields=["transaction_price", "recognized", "billed"])
    modification.catch_up_amount = total
    return {"catch_up": str(total),
            "obligations": [{"id": o.pk, "before": before[o.pk], "after": _figures(o), "catch_up": str(c)}
                            for o, _, c in rows]}
