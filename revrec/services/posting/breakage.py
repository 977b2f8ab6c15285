"""Posting prepaid credit that expired unused: the liability taken when the credit was bought becomes
breakage revenue (its consumption is posted with the invoice that drew it down)."""

from datetime import datetime

from django.db import transaction

from billing.actors import Actor
from invoicing.models import Invoice, WalletTransaction
from revrec.models import JournalEntry
from revrec.services.chart import Chart
from revrec.services.journal import credit, debit, post_entry
from revrec.services.posting.payments import NotReady, local_day


def wallet_expiry_source(row: WalletTransaction | int) -> str:
    return f"wallet_expiry:{row if isinstance(row, int) else row.pk}"


def post_wallet_expiry(row: WalletTransaction, *, chart: Chart, actor: Actor, now: datetime) -> JournalEntry | None:
    """Dr prepaid_credit / Cr breakage for the expired lot's remaining credit."""
    if row.kind != WalletTransaction.Kind.EXPIRY:
        raise NotReady(f"Wallet transaction {row.pk} is not an expiry.")
    lot_invoice = row.lot.invoice if row.lot_id else None
    if lot_invoice is not None and lot_invoice.status == Invoice.Status.VOID:
        raise NotReady(f"Wallet transaction {row.pk} reverses a voided purchase: the void posts it.")
    customer = row.wallet.customer
    amount = -row.amount
    with transaction.atomic():
        return post_entry(
            chart=chart, kind=JournalEntry.Kind.BREAKAGE, source_key=wallet_expiry_source(row),
            on=local_day(customer, row.created_at), currency=row.wallet.currency,
            description=f"Prepaid credit expired for {customer.name}",
            postings=[debit("prepaid_credit", amount, customer_id=customer.pk, memo="Expired prepaid credit"),
                      credit("breakage", amount, customer_id=customer.pk, memo="Expired prepaid credit")],
            actor=actor, now=now, customer_id=customer.pk,
        )
