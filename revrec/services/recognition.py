"""Step 5: recognise revenue through a day. Ratable obligations follow DESIGN's running total (what is due
through the day minus what was recognised), delivered point-in-time obligations are recognised in full. One
journal entry per billing entity and currency per run (revenue per product against deferred revenue, or
contract asset where a contract has recognised ahead of billing), and one Recognition row per obligation
and day, unique, so a repeated or concurrent run recognises nothing twice."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Q

from billing.actors import Actor
from customers.models import BillingEntity
from revrec.arithmetic import RatableTerms, position_change, ratable_through
from revrec.models import JournalEntry, PerformanceObligation, Recognition, RevenueContract
from revrec.services.chart import Chart
from revrec.services.journal import AlreadyPosted, Posting, credit, debit, post_entry

ZERO = Decimal("0")
Pattern = PerformanceObligation.Pattern
Status = PerformanceObligation.Status


@dataclass
class RecognitionResult:
    through: date
    obligations: int = 0
    entries: list[JournalEntry] = field(default_factory=list)
    amounts: dict[str, Decimal] = field(default_factory=dict)


def due_through(obligation: PerformanceObligation, day: date, currency: str) -> Decimal:
    """What an obligation should have recognised by the end of `day`."""
    if obligation.pattern == Pattern.RATABLE:
        terms = RatableTerms(
            price=obligation.allocated_price, start=obligation.service_start, end=obligation.service_end,
            currency=currency, rebased_on=obligation.rebased_on, rebased_amount=obligation.rebased_amount,
        )
        if obligation.rebased_on is not None and day < obligation.rebased_on:
            return obligation.recognized_amount
        return ratable_through(terms, day)
    if obligation.satisfied_on is not None and obligation.satisfied_on <= day:
        return obligation.allocated_price
    return obligation.recognized_amount


def recognizable(day: date, entity_id: int | None = None):  # type: ignore[no-untyped-def]
    """Obligations with something to recognise through `day`."""
    rows = PerformanceObligation.objects.filter(status=Status.OPEN).filter(
        Q(pattern=Pattern.RATABLE, service_start__lte=day)
        & (Q(recognized_through__isnull=True) | Q(recognized_through__lt=day))
        | Q(pattern=Pattern.POINT_IN_TIME, satisfied_on__lte=day)
    )
    if entity_id is not None:
        rows = rows.filter(revenue_contract__billing_entity_id=entity_id)
    return rows


def lock_entity_revenue(entity_id: int) -> None:
    """Serialise the writers of an entity's obligations (recognition runs, credit notes, modifications) for
    the rest of the transaction: a second waits, then reads what the first wrote."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [606, entity_id])


def recognize_through(
    day: date, *, actor: Actor, now: datetime, entity: BillingEntity | None = None
) -> RecognitionResult:
    """Recognise everything due through the end of `day`, for one entity or all."""
    result = RecognitionResult(through=day)
    entities = [entity] if entity is not None else list(BillingEntity.objects.order_by("pk"))
    for billing_entity in entities:
        _recognize_entity(billing_entity, day, actor=actor, now=now, result=result)
    return result


def _recognize_entity(entity: BillingEntity, day: date, *, actor: Actor, now: datetime,
                      result: RecognitionResult) -> None:
    chart: Chart | None = None
    with transaction.atomic():
        lock_entity_revenue(entity.pk)
        obligations = list(
            recognizable(day, entity.pk).select_related("revenue_contract").order_by("revenue_contract_id", "id")
        )
        by_currency: dict[str, list[tuple[PerformanceObligation, Decimal]]] = defaultdict(list)
        for obligation in obligations:
            currency = obligation.revenue_contract.currency
            delta = due_through(obligation, day, currency) - obligation.recognized_amount
            by_currency[currency].append((obligation, delta))
        for currency, items in sorted(by_currency.items()):
            chart = chart or Chart.load(entity)
            _post_currency(entity, chart, currency, day, items, actor=actor, now=now, result=result)


def _post_currency(entity: BillingEntity, chart: Chart, currency: str, day: date,
                   items: list[tuple[PerformanceObligation, Decimal]], *, actor: Actor, now: datetime,
                   result: RecognitionResult) -> None:
    contract_ids = sorted({o.revenue_contract_id for o, _ in items})
    locked = RevenueContract.objects.select_for_update().filter(pk__in=contract_ids).order_by("pk")
    contracts = {c.pk: c for c in locked}
    per_contract: dict[int, Decimal] = defaultdict(lambda: ZERO)
    per_product: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
    for obligation, delta in items:
        per_contract[obligation.revenue_contract_id] += delta
        per_product[obligation.product_id] += delta
    deferred = asset = ZERO
    for contract_id, delta in per_contract.items():
        contract = contracts[contract_id]
        move = position_change(contract.billed, contract.recognized, contract.billed, contract.recognized + delta)
        deferred += move.deferred
        asset += move.asset
        contract.recognized += delta
    postings: list[Posting] = [credit("revenue", amount, product_id=product_id) for product_id, amount in
                               per_product.items()]
    postings.append(credit("deferred_revenue", deferred))
    postings.append(debit("contract_asset", asset))
    key = f"recognition:{entity.pk}:{currency}:{day.isoformat()}"
    runs_today = JournalEntry.objects.filter(source_key__startswith=key).count()
    try:
        entry = post_entry(
            chart=chart, kind=JournalEntry.Kind.RECOGNITION,
            source_key=key if runs_today == 0 else f"{key}#{runs_today + 1}",
            on=day, currency=currency, description=f"Revenue recognised through {day}", postings=postings,
            actor=actor, now=now,
        )
    except AlreadyPosted:
        return
    recognitions = []
    for obligation, delta in items:
        obligation.recognized_amount += delta
        obligation.recognized_through = day
        finished = obligation.recognized_amount == obligation.allocated_price and (
            obligation.pattern != Pattern.RATABLE or day >= obligation.service_end - timedelta(days=1)
        )
        if finished:
            obligation.status = Status.COMPLETE
        if delta and entry is not None:
            recognitions.append(Recognition(
                obligation_id=obligation.pk, revenue_contract_id=obligation.revenue_contract_id,
                customer_id=obligation.revenue_contract.customer_id, product_id=obligation.product_id,
                currency=currency, recognized_on=entry.entry_date, amount=delta, entry=entry,
            ))
    PerformanceObligation.objects.bulk_update(
        [o for o, _ in items], ["recognized_amount", "recognized_through", "status"], batch_size=2000
    )
    RevenueContract.objects.bulk_update(list(contracts.values()), ["recognized"], batch_size=2000)
    Recognition.objects.bulk_create(recognitions, batch_size=5000)
    result.obligations += len(items)
    if entry is not None:
        result.entries.append(entry)
    result.amounts[currency] = result.amounts.get(currency, ZERO) + sum((d for _, d in items), ZERO)
