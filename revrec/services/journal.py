"""Writing journal entries. `post_entry` is the one way into the ledger: it claims the entry's sources
(exactly once, however many workers race), nets the lines per account, refuses an unbalanced entry before
the database would, and dates the entry in an open period."""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction

from billing.actors import Actor
from revrec.models import JournalEntry, JournalLine, PostedSource
from revrec.services.chart import Chart
from revrec.services.periods import posting_period

ZERO = Decimal("0")


class UnbalancedEntry(ValueError):
    """A posting rule produced debits and credits that differ: a bug, never written."""


class AlreadyPosted(Exception):
    """Another posting claimed one of these sources first."""


@dataclass(frozen=True)
class Posting:
    """One side of an entry before netting: a positive amount debits the account, a negative one credits."""

    role: str
    amount: Decimal
    product_id: int | None = None
    customer_id: int | None = None
    revenue_contract_id: int | None = None
    memo: str = ""


def debit(role: str, amount: Decimal, **kwargs: object) -> Posting:
    return Posting(role, amount, **kwargs)  # type: ignore[arg-type]


def credit(role: str, amount: Decimal, **kwargs: object) -> Posting:
    return Posting(role, -amount, **kwargs)  # type: ignore[arg-type]


def net_lines(chart: Chart, postings: Sequence[Posting]) -> list[JournalLine]:
    """One line per account, customer, product and revenue contract, debit or credit by the sign of the
    net; lines that net to zero are dropped."""
    totals: dict[tuple[int, int | None, int | None, int | None], Decimal] = {}
    memos: dict[tuple[int, int | None, int | None, int | None], str] = {}
    accounts = {}
    for posting in postings:
        account = chart.account(posting.role, posting.product_id)
        accounts[account.pk] = account
        product_id = posting.product_id if account.role in ("revenue", "contra_revenue", "breakage") else None
        key = (account.pk, posting.customer_id, product_id, posting.revenue_contract_id)
        totals[key] = totals.get(key, ZERO) + posting.amount
        memos.setdefault(key, posting.memo)
    total = sum(totals.values(), ZERO)
    if total != 0:
        raise UnbalancedEntry(f"The postings are off by {total}: {postings!r}")
    return [
        JournalLine(
            account=accounts[account_id],
            debit=amount if amount > 0 else ZERO,
            credit=-amount if amount < 0 else ZERO,
            customer_id=customer_id,
            product_id=product_id,
            revenue_contract_id=contract_id,
            memo=memos[(account_id, customer_id, product_id, contract_id)][:300],
        )
        for (account_id, customer_id, product_id, contract_id), amount in totals.items()
        if amount != 0
    ]


def claim(sources: Sequence[str], *, now: datetime) -> list[PostedSource]:
    """Claim the sources for this transaction. A source another transaction claimed raises AlreadyPosted;
    one being claimed concurrently waits for that transaction, then raises."""
    try:
        with transaction.atomic():
            return PostedSource.objects.bulk_create([PostedSource(source=s, posted_at=now) for s in sources])
    except IntegrityError as error:
        raise AlreadyPosted(", ".join(sources)) from error


def is_posted(source: str) -> bool:
    return PostedSource.objects.filter(source=source).exists()


def post_entry(
    *,
    chart: Chart,
    kind: str,
    source_key: str,
    on: date,
    currency: str,
    description: str,
    postings: Iterable[Posting] | Callable[[], Iterable[Posting]],
    actor: Actor,
    now: datetime,
    claims: Sequence[str] = (),
    claim_source: bool = True,
    **links: object,
) -> JournalEntry | None:
    """Post one balanced entry for the event `source_key` (and claim `claims`, the rows it accounts for).
    Returns None when everything nets to zero (the sources are still marked posted). Must run inside a
    transaction; raises AlreadyPosted when another posting got there first. `postings` may be a function,
    called once the claim is won, for rules that create rows (obligations) as they compute the entry.
    `claim_source=False`: the caller already claimed `source_key` (and links the claim to the entry)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("post_entry must run inside a transaction")
    sources = claim([source_key, *claims] if claim_source else list(claims), now=now) if claim_source or claims else []
    lines = net_lines(chart, list(postings() if callable(postings) else postings))
    if not lines:
        return None
    period, entry_date = posting_period(chart.entity_id, on)
    entry = JournalEntry.objects.create(
        billing_entity_id=chart.entity_id,
        period=period,
        entry_date=entry_date,
        original_date=on,
        kind=kind,
        currency=currency,
        source_key=source_key,
        description=description[:300],
        total=sum((line.debit for line in lines), ZERO),
        created_at=now,
        created_by=actor.label,
        **links,
    )
    for line in lines:
        line.entry = entry
    JournalLine.objects.bulk_create(lines)
    PostedSource.objects.filter(pk__in=[s.pk for s in sources]).update(entry=entry)
    return entry
