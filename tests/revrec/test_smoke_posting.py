from datetime import date
from decimal import Decimal

import pytest

from invoicing.services.documents import ManualLine, create_one_off_invoice
from revrec.models import JournalEntry, PerformanceObligation
from revrec.services.chart import Chart
from revrec.services.journal import AlreadyPosted
from revrec.services.posting.invoices import post_invoice
from tests.factories import BillingEntityFactory, CustomerFactory, ProductFactory

D = Decimal


@pytest.mark.django_db(transaction=True)
def test_invoice_posts_once_and_balances(actor, now):
    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    setup = ProductFactory(code="setup")
    invoice = create_one_off_invoice(customer, [
        ManualLine("Subscription Jan", D("100.00"), period_start=date(2024, 1, 1), period_end=date(2024, 2, 1)),
        ManualLine("Set-up", D("50.00"), product=setup),
    ], actor=actor, now=now, finalize=True)
    chart = Chart.load(entity)
    entry = post_invoice(invoice, chart=chart, actor=actor, now=now)
    # Issued on 15 January: 14 of January's 31 days are already earned (100 x 14/31 = 45.16), recognised on
    # the 14th (a contract asset until the invoice bills it on the 15th); the set-up is delivered on the 15th.
    lines = {(line.account.role, line.debit, line.credit) for line in entry.lines.select_related("account")}
    assert lines == {("receivable", D("150.00"), D(0)), ("contract_asset", D(0), D("45.16")),
                     ("deferred_revenue", D(0), D("104.84"))}
    earned = JournalEntry.objects.filter(kind="recognition").order_by("entry_date")
    assert [(e.entry_date, e.total) for e in earned] == [
        (date(2024, 1, 14), D("45.16")), (date(2024, 1, 15), D("50.00"))]
    assert PerformanceObligation.objects.count() == 2
    with pytest.raises(AlreadyPosted):
        post_invoice(invoice, chart=chart, actor=actor, now=now)
    assert JournalEntry.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_recognition_through_month_end(actor, now):
    from revrec.services.recognition import recognize_through

    entity = BillingEntityFactory(default_currency="USD")
    customer = CustomerFactory(billing_entity=entity, currency="USD")
    invoice = create_one_off_invoice(customer, [
        ManualLine("Subscription Jan", D("100.00"), period_start=date(2024, 1, 1), period_end=date(2024, 2, 1)),
    ], actor=actor, now=now, finalize=True)
    post_invoice(invoice, chart=Chart.load(entity), actor=actor, now=now)
    # Posted on the 15th with 14 days earned (45.16); the 15th itself: round(100 x 15/31) - 45.16 = 3.23.
    first = recognize_through(date(2024, 1, 15), actor=actor, now=now)
    assert first.amounts == {"USD": D("3.23")}
    again = recognize_through(date(2024, 1, 15), actor=actor, now=now)
    assert again.obligations == 0
    rest = recognize_through(date(2024, 2, 5), actor=actor, now=now)
    assert rest.amounts == {"USD": D("51.61")}
    assert PerformanceObligation.objects.get().status == "complete"
