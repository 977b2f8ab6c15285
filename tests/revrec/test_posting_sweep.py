"""The posting sweep: idempotent, safe when raced, one bad document never stops the others, the unposted
documents selector, and the two reconciliations after a mixed scenario."""

import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from invoicing.services.credit_notes import issue_credit_note
from invoicing.services.payments import mark_uncollectible, refund_payment
from revrec.models import JournalEntry, PostedSource
from revrec.selectors.unposted import unposted_documents
from revrec.services import posting
from revrec.services.chart import Chart
from revrec.services.journal import AlreadyPosted
from revrec.services.posting import payments as payment_rules
from revrec.services.posting import post_pending
from revrec.services.posting.invoices import post_invoice
from tests.factories import CustomerFactory
from tests.revrec.test_posting_money import assert_reconciled, balance, pay, setup_invoice

D = Decimal


@pytest.mark.django_db(transaction=True)
def test_sweep_twice_posts_nothing_new(actor, now):
    _entity, customer, _invoice = setup_invoice(actor, now)
    pay(customer, "150.00", actor, now)
    first = post_pending(now=now, actor=actor)
    assert first.total == 2 and first.failures == []
    count = JournalEntry.objects.count()
    second = post_pending(now=now, actor=actor)
    assert second.total == 0 and second.skipped == 0 and second.failures == []
    assert JournalEntry.objects.count() == count


@pytest.mark.django_db(transaction=True)
def test_two_threads_posting_one_payment_write_one_entry(actor, now):
    entity, customer, invoice = setup_invoice(actor, now)
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=now)
    payment = pay(customer, "100.00", actor, now)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def run() -> None:
        try:
            chart = Chart.load(entity)
            barrier.wait()
            payment_rules.post_payment(payment, chart=chart, actor=actor, now=now)
            outcomes.append("posted")
        except AlreadyPosted:
            outcomes.append("already")
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already", "posted"]
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert PostedSource.objects.filter(source__startswith="allocation:").count() == 1
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_one_bad_document_does_not_stop_the_others(actor, now, monkeypatch):
    entity, customer, _invoice = setup_invoice(actor, now)
    good = pay(customer, "30.00", actor, now)
    bad = pay(customer, "20.00", actor, now)
    real = payment_rules.post_payment

    def flaky(payment, **kwargs):  # type: ignore[no-untyped-def]
        if payment.pk == bad.pk:
            raise RuntimeError("gateway data missing")
        return real(payment, **kwargs)

    monkeypatch.setattr("revrec.services.posting.STEPS", tuple(
        (kind, rows, related, flaky if kind == "payment" else rule, entity_of)
        for kind, rows, related, rule, entity_of in posting.STEPS
    ))
    summary = post_pending(now=now, actor=actor)
    assert summary.posted["payment"] == 1
    assert summary.failures == [(f"payment:{bad.pk}", "RuntimeError: gateway data missing")]
    assert JournalEntry.objects.filter(source_key=f"payment:{good.pk}").exists()
    assert [d.kind for d in unposted_documents(entity.pk, date(2024, 2, 1))] == ["payment"]
    monkeypatch.undo()
    assert post_pending(now=now, actor=actor).posted == {"payment": 1}
    assert_reconciled(entity)


@pytest.mark.django_db(transaction=True)
def test_unposted_documents_lists_what_the_close_waits_for(actor, now):
    entity, customer, invoice = setup_invoice(actor, now)
    payment = pay(customer, "100.00", actor, now)
    found = unposted_documents(entity.pk, date(2024, 2, 1))
    assert [(d.kind, d.id, d.date) for d in found] == [
        ("invoice", invoice.pk, date(2024, 1, 15)), ("payment", payment.pk, date(2024, 1, 15))]
    assert unposted_documents(entity.pk, date(2024, 1, 15)) == []
    post_pending(now=now, actor=actor, entity=entity)
    assert unposted_documents(entity.pk, date(2024, 2, 1)) == []


@pytest.mark.django_db(transaction=True)
def test_mixed_scenario_reconciles(actor, now):
    """Two customers, five invoices of 100.00: overpayment, partial payment, refund, credit notes applied and
    credited to the balance, the balance applied to a later invoice, a write-off with a partial recovery.
    After each sweep: receivable = Σ amount due of open invoices, customer credit = Σ credit balances."""
    entity, alice, first = setup_invoice(actor, now)
    from invoicing.services.documents import ManualLine, create_one_off_invoice

    def invoice(customer, amount="100.00", at=now):  # type: ignore[no-untyped-def]
        return create_one_off_invoice(customer, [ManualLine("Work", D(amount))], actor=actor, now=at, finalize=True)

    bob = CustomerFactory(billing_entity=entity, currency="USD")
    second = invoice(bob)
    pay(alice, "130.00", actor, now)  # first paid, 30.00 credit
    payment = pay(bob, "60.00", actor, now)  # second owes 40.00
    post_pending(now=now, actor=actor)
    assert_reconciled(entity)

    later = now + timedelta(days=3)
    refund_payment(payment, amount=D("10.00"), reason="Goodwill", actor=actor, now=later)  # second owes 50.00
    issue_credit_note(second, amount=D("20.00"), reason="goodwill", settlement="credit_balance", actor=actor,
                      now=later)  # applied: second owes 30.00
    issue_credit_note(first, amount=D("25.00"), reason="goodwill", settlement="credit_balance", actor=actor,
                      now=later)  # first is paid: 25.00 to alice's balance (55.00)
    third = invoice(alice, "80.00", later)  # takes alice's 55.00 at finalization: owes 25.00
    post_pending(now=later, actor=actor)
    assert third.amount_due == D("25.00")
    assert_reconciled(entity)

    fourth = invoice(bob, "100.00", later)
    mark_uncollectible(fourth, reason="Gone", actor=actor, now=later + timedelta(days=1))
    pay(bob, "70.00", actor, later + timedelta(days=2))  # 30.00 to second (oldest first), 40.00 recovered
    invoice(alice, "100.00", later)  # alice holds no credit any more: owes it all
    summary = post_pending(now=later + timedelta(days=2), actor=actor)
    assert summary.failures == []
    assert_reconciled(entity)
    assert balance("bad_debt") == D("60.00")
    assert balance("cash") == D("130.00") + D("60.00") - D("10.00") + D("70.00")
    assert unposted_documents(entity.pk, date(2025, 1, 1)) == []
