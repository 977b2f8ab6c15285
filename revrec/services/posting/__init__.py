"""The posting rules (one module per document) and the sweep that posts whatever the ledger does not hold yet.

`post_pending` walks the unposted documents in dependency order (invoices before the money applied to them,
refunds before their failures, ...), posts each in its own transaction, and never lets one bad document stop
the others: a document another worker posted first is skipped, one that fails is logged and counted with its
reason, and is retried by the next run."""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from billing.actors import Actor
from customers.models import BillingEntity
from revrec.selectors import unposted
from revrec.services.chart import Chart
from revrec.services.journal import AlreadyPosted
from revrec.services.posting.breakage import post_wallet_expiry
from revrec.services.posting.credit_notes import post_credit_note
from revrec.services.posting.invoices import post_invoice
from revrec.services.posting.payments import (
    NotReady,
    post_allocation,
    post_payment,
    post_payment_reversal,
    post_refund,
    post_refund_failure,
)
from revrec.services.posting.subscription_changes import record_subscription_change, unrecorded_changes
from revrec.services.posting.voids import post_invoice_void
from revrec.services.posting.write_offs import post_write_off

logger = logging.getLogger(__name__)


@dataclass
class PostingSummary:
    posted: dict[str, int] = field(default_factory=dict)  # documents posted, by kind
    entries: int = 0  # journal entries written by them (a zero document writes none)
    skipped: int = 0  # posted meanwhile by another worker
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    @property
    def total(self) -> int:
        return sum(self.posted.values())


# (kind, unposted rows of an entity or all, related rows to load, rule, entity of a row)
Step = tuple[str, Callable, tuple[str, ...], Callable, Callable]  # type: ignore[type-arg]

STEPS: tuple[Step, ...] = (
    ("invoice", unposted.unposted_invoices, ("customer",), post_invoice, lambda r: r.billing_entity_id),
    ("payment", unposted.unposted_payments, ("customer",), post_payment, lambda r: r.billing_entity_id),
    ("credit_note", unposted.unposted_credit_notes, ("invoice",), post_credit_note, lambda r: r.billing_entity_id),
    ("refund", unposted.unposted_refunds, ("customer",), post_refund, lambda r: r.customer.billing_entity_id),
    ("payment_reversal", unposted.unposted_payment_reversals, ("customer",), post_payment_reversal,
     lambda r: r.billing_entity_id),
    ("refund_failed", unposted.unposted_refund_failures, ("customer",), post_refund_failure,
     lambda r: r.customer.billing_entity_id),
    ("write_off", unposted.unposted_write_offs, ("customer",), post_write_off, lambda r: r.billing_entity_id),
    ("invoice_void", unposted.unposted_voids, ("customer",), post_invoice_void, lambda r: r.billing_entity_id),
    ("wallet_expiry", unposted.unposted_wallet_expiries, ("wallet__customer", "lot__invoice"), post_wallet_expiry,
     lambda r: r.wallet.customer.billing_entity_id),
    ("allocation", unposted.unposted_allocations, ("invoice__customer",), post_allocation,
     lambda r: r.invoice.billing_entity_id),
)


def post_pending(*, now: datetime, actor: Actor, entity: BillingEntity | None = None,
                 limit: int | None = None) -> PostingSummary:
    """Post every unposted document (of one entity, or all), at most `limit` per kind."""
    summary = PostingSummary()
    charts: dict[int, Chart] = {}

    def chart_of(entity_id: int) -> Chart:
        if entity_id not in charts:
            charts[entity_id] = Chart.load(BillingEntity.objects.get(pk=entity_id))
        return charts[entity_id]

    entity_id = entity.pk if entity is not None else None
    for kind, rows, related, rule, entity_of in STEPS:
        queryset = rows(entity_id).select_related(*related).order_by("pk")
        batch: Iterable = queryset[:limit] if limit is not None else queryset.iterator(chunk_size=500)  # type: ignore[type-arg]
        for row in batch:
            source = f"{kind}:{row.pk}"
            try:
                with transaction.atomic():
                    entry = rule(row, chart=chart_of(entity_of(row)), actor=actor, now=now)
            except AlreadyPosted:
                summary.skipped += 1
                continue
            except NotReady as reason:
                summary.failures.append((source, str(reason)))
                continue
            except Exception as error:
                logger.exception("Posting %s failed", source)
                summary.failures.append((source, f"{type(error).__name__}: {error}"))
                continue
            summary.posted[kind] = summary.posted.get(kind, 0) + 1
            summary.entries += entry is not None
    # Not postings: the subscription changes the cycle billed, recorded as contract modifications.
    for change in unrecorded_changes(entity_id).select_related("subscription").order_by("pk"):
        try:
            if record_subscription_change(change, actor=actor, now=now) is not None:
                summary.posted["subscription_change"] = summary.posted.get("subscription_change", 0) + 1
        except Exception as error:
            logger.exception("Recording subscription change %s failed", change.pk)
            summary.failures.append((f"subscription_change:{change.pk}", f"{type(error).__name__}: {error}"))
    return summary


__all__ = ["PostingSummary", "post_pending"]
