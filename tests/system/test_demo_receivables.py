"""The demo's receivables: money came in through imported statements, a check bounced, dunning acted every
day, two credit notes were issued, and today's statement file pays open invoices when a new user imports it."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db.models import Sum

from billing.actors import Actor
from billing.demo import load_demo_data
from invoicing.models import (
    BankStatementFormat,
    BankStatementLine,
    CreditNote,
    CustomerBalance,
    DunningAction,
    DunningStep,
    DunningSuspension,
    EmailMessage,
    Invoice,
    Payment,
    Refund,
)
from invoicing.services.bank import import_statement
from invoicing.services.payments import invoice_allocation_sums

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
A = DunningStep.Action


def test_demo_receivables_and_todays_statement() -> None:
    summary = load_demo_data(now=NOW)
    assert summary.created

    # Most invoices are paid, through statements matched by invoice number; the open ones still add up.
    statuses = {status: Invoice.objects.filter(status=status).count() for status in Invoice.Status.values}
    assert statuses["paid"] > statuses["finalized"] > 0
    assert statuses["uncollectible"] >= 1
    for invoice in Invoice.objects.exclude(status__in=["draft", "void"]):
        sums = invoice_allocation_sums(invoice)
        paid = sums["payment"] + sums["credit_balance"] + sums["payment_reversal"] + sums["refund"]
        assert invoice.amount_paid == paid and invoice.amount_credited == sums["credit_note"], invoice
        assert invoice.amount_due == invoice.total - invoice.prepaid_credit_applied - paid - sums["credit_note"]
        assert invoice.amount_due >= 0
    matched = BankStatementLine.objects.filter(status="matched")
    assert matched.filter(match_method="invoice_number").count() > 50
    assert matched.filter(match_method="amount_customer").exists()  # Quartz pays without a reference
    assert list(BankStatementLine.objects.filter(status="unmatched").values_list("counterparty", flat=True)) == [
        "N. Oakley Consulting"
    ]

    # Bluefin's first check bounced and was reversed; Lion City's overpayment was refunded.
    [bounced] = Payment.objects.filter(status=Payment.Status.REVERSED)
    assert (bounced.customer.external_id, bounced.method) == ("cus_bluefin", Payment.Method.CHECK)
    assert Refund.objects.get().customer.external_id == "cus_lioncity"
    assert CustomerBalance.objects.get(customer__external_id="cus_lioncity").balance == 0

    # Dunning ran every morning: reminders, a final notice, suspension and write-off for the two non-payers.
    done = set(DunningAction.objects.filter(status="done").values_list("action", flat=True))
    assert {A.REMINDER, A.FINAL_NOTICE, A.SUSPEND, A.MARK_UNCOLLECTIBLE} <= done
    assert set(DunningSuspension.objects.filter(resumed_at__isnull=True).values_list(
        "customer__external_id", flat=True)) == {"cus_copperline", "cus_vespa"}
    assert EmailMessage.objects.filter(kind__startswith="dunning", status="sent").count() >= 10

    notes = {note.customer.external_id: note for note in CreditNote.objects.all()}
    assert set(notes) == {"cus_pinecrest", "cus_vespa"}
    assert notes["cus_pinecrest"].credited_to_balance == Decimal("150.00")  # an SLA credit on a paid invoice
    assert notes["cus_vespa"].applied_to_invoice == notes["cus_vespa"].total  # reduced what it owed

    # Today's statement, as a new user imports it: four credits paid, one left for the queue.
    fmt = BankStatementFormat.objects.get(name="First Harbor Bank (USD)")
    before = Payment.objects.aggregate(s=Sum("amount"))["s"]
    result = import_statement(fmt, summary.todays_statement, filename="today.csv", actor=Actor.system("test"),
                              now=NOW)
    statement = result.statement
    assert statement.line_count == 5
    assert statement.lines.filter(status="matched").count() == 4
    assert statement.lines.filter(status="unmatched").get().counterparty == "Unknown sender"
    assert Payment.objects.aggregate(s=Sum("amount"))["s"] > before
    for line in statement.lines.filter(status="matched"):
        assert all(a.invoice.status == Invoice.Status.PAID for a in line.payment.allocations.all())
