"""The demo's revenue recognition and ledger: standalone selling prices, a discounted implementation bundle
delivered weeks after it was invoiced, a prospective contract modification, documents posted and revenue
recognised every night of the replayed months (as the beat tasks do), and month-end closes.

The last complete month is left open with every check passing, so that a new user can run recognition,
read the waterfall and the roll-forward, close that month and export its journal.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from billing.actors import Actor
from contracts.models import Product
from contracts.periods import add_months
from invoicing.services.documents import ManualLine, create_one_off_invoice
from revrec.models import AccountingPeriod, PerformanceObligation, ProductRevenueRule, StandaloneSellingPrice
from revrec.services import chart

if TYPE_CHECKING:
    from billing.demo import _DemoBuilder

NIGHTLY = Actor.system("beat:revenue")
CONTROLLER = Actor.system("demo:controller")
D = Decimal


class RevenueStory:
    def __init__(self, builder: _DemoBuilder) -> None:
        self.b = builder
        self.bundle_invoice_id: int | None = None

    def plan(self, closes: list[datetime]) -> None:
        """Set-up now; nightly posting and recognition from a few days before the first close; month-end
        closes on the 5th of the next month, all but the last complete month."""
        self.setup()
        first = closes[0].date() - timedelta(days=5)
        day = first
        while day <= self.b.today:
            self.b.later(self.b.at(day, 2), self.nightly)
            day += timedelta(days=1)
        bundle_day = closes[-2].date() + timedelta(days=3)
        self.b.later(self.b.at(bundle_day, 11), self.implementation_bundle)
        self.b.later(self.b.at(bundle_day + timedelta(days=24), 15), self.deliver_implementation)
        last_complete = self.b.month_start(1)
        month = first.replace(day=1)
        while add_months(month, 1) <= last_complete:
            self.b.later(self.b.at(add_months(month, 1) + timedelta(days=4), 10), self.closer(month))
            month = add_months(month, 1)

    def setup(self) -> None:
        for entity in self.b.entities.values():
            chart.ensure_chart(entity)
        products = self.b.products
        for code, name in [("implementation", "Implementation services"), ("premium-support", "Premium support"),
                           ("training", "Training")]:
            product = Product(code=code, name=name, tax_code="services")
            product.full_clean()
            product.save()
            products[code] = product
        # Implementation is recognised when delivered (an operator records it); other one-time items when
        # invoiced.
        ProductRevenueRule.objects.create(product=products["implementation"],
                                          one_time=ProductRevenueRule.OneTime.ON_DELIVERY)
        since = self.b.ago(720)
        for code, price, per, note in [
            ("implementation", D("15000"), "unit", "Median of standalone implementation deals"),
            ("premium-support", D("1500"), "month", "Premium support sold alone: price book"),
        ]:
            StandaloneSellingPrice.objects.create(product=products[code], currency="USD", effective_from=since,
                                                  price=price, per=per, note=note)
        # Training is only ever sold in bundles: no observable price, the residual approach estimates it.
        StandaloneSellingPrice.objects.create(
            product=products["training"], currency="USD", effective_from=since, price=None, is_uncertain=True,
            method=StandaloneSellingPrice.Method.RESIDUAL, note="Only sold in bundles",
        )

    def implementation_bundle(self, now: datetime) -> None:
        """Globex buys implementation, three months of premium support and training as one bundle of
        21,000.00. Posting allocates it by relative SSP: implementation 15,000 and premium support about
        1,500 a month at their standalone prices, training the residual."""
        products = self.b.products
        start = now.date()
        invoice = create_one_off_invoice(
            self.b.customers["globex"],
            [
                ManualLine("Implementation: SSO and data migration", D("14000.00"),
                           product=products["implementation"]),
                ManualLine("Premium support (3 months)", D("4500.00"), product=products["premium-support"],
                           period_start=start, period_end=add_months(start, 3)),
                ManualLine("Administrator training (2 days)", D("2500.00"), product=products["training"]),
            ],
            currency="USD", memo="Implementation bundle (order NW-Q-2291)", actor=CONTROLLER, now=now,
            finalize=True,
        )
        self.bundle_invoice_id = invoice.pk

    def deliver_implementation(self, now: datetime) -> None:
        from revrec.services.delivery import mark_delivered
        from revrec.services.posting import post_pending

        post_pending(now=now, actor=NIGHTLY)
        obligation = PerformanceObligation.objects.get(
            invoice_line__invoice_id=self.bundle_invoice_id, status=PerformanceObligation.Status.AWAITING_DELIVERY
        )
        mark_delivered(obligation, delivered_on=now.date(), actor=CONTROLLER, now=now)

    @staticmethod
    def nightly(now: datetime) -> None:
        """What the beat tasks do every night: post new documents, recognise through yesterday."""
        from revrec.services.posting import post_pending
        from revrec.services.recognition import run_recognition

        post_pending(now=now, actor=NIGHTLY)
        run_recognition(now.date() - timedelta(days=1), actor=NIGHTLY, now=now)

    def closer(self, month: date):  # type: ignore[no-untyped-def]
        def close(now: datetime) -> None:
            from revrec.services.close import close_period
            from revrec.services.posting import post_pending

            post_pending(now=now, actor=NIGHTLY)
            # In order, earliest first; closing a month may open the next (its accrual's reversal), so look again
            # after each close.
            while period := AccountingPeriod.objects.filter(
                start_date__lte=month, status=AccountingPeriod.Status.OPEN
            ).order_by("start_date", "billing_entity_id").first():
                close_period(period, actor=CONTROLLER, now=now)

        return close
