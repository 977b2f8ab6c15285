"""The demo's receivables: money in through bank statements, a check that bounced, an overpayment refunded,
credit notes, and dunning run every day of the replayed months, so that the admin shows every state.

Customers pay the way their profile says (most pay in full about two weeks after the invoice, some late,
some in part, two never), through statement files imported on the replayed clock and matched by the same
service the admin uses. A few lines stay unmatched for the operator (an unknown sender, a transfer without
a reference paying two invoices at once). `current_statement_csv()` writes today's statement, which a new
user imports in the admin to watch open invoices get paid.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from billing.actors import Actor
from customers.models import BillingEntity, Customer
from invoicing.models import BankStatementFormat, CreditNote, Invoice, Payment
from invoicing.services import bank, credit_notes, dunning, payments

if TYPE_CHECKING:
    from billing.demo import _DemoBuilder

SEED = 20241105
BANK_ACTOR = Actor.system("demo:bank-import")
DUNNING_ACTOR = Actor.system("beat:dunning")
FINANCE = Actor.system("demo:finance")

# How customers pay (external-id keys); everyone else pays in full 10 to 18 days after the invoice.
NEVER_PAY = {"copperline", "vespa"}  # dunned through the whole policy: reminders, suspension, write-off
PAYS_LATE = {"summit", "shamrock", "andes"}  # 3 to 12 days after the due date: reminded, then paid
PAYS_HALF = {"redwood"}  # half of each invoice on time, the rest 10 days after the due date
PAYS_BY_CHECK = {"bluefin"}  # its first check bounces and is reversed, then it pays by transfer
OVERPAYS = {"lioncity": Decimal("250.00")}  # pays too much once; the excess is refunded
NO_REFERENCE = {"quartz"}  # transfers without a reference: matched by amount, or by hand


def statement_formats(entities: dict[str, BillingEntity]) -> dict[str, BankStatementFormat]:
    us = BankStatementFormat(
        name="First Harbor Bank (USD)", billing_entity=entities["us"], date_column="Date",
        amount_column="Amount", currency_column="Currency", reference_column="Reference",
        description_column="Description", counterparty_column="Counterparty",
        transaction_id_column="Transaction ID", default_currency="USD",
    )
    eu = BankStatementFormat(
        name="Sparkasse Berlin (EUR)", billing_entity=entities["eu"], delimiter=";", date_column="Buchungstag",
        date_format=BankStatementFormat.DateOrder.DMY_DOT, amount_column="Betrag", reference_column="Verwendungszweck",
        counterparty_column="Auftraggeber", default_currency="EUR", decimal_separator=",", thousands_separator=".",
    )
    for fmt in (us, eu):
        fmt.full_clean()
        fmt.save()
    return {"us": us, "eu": eu}


def statement_bytes(fmt: BankStatementFormat, rows: list[dict[str, Any]]) -> bytes:
    """A statement file in the bank's own layout (rows: day, amount, currency, reference, counterparty, id)."""
    out = io.StringIO()
    if fmt.delimiter == ";":
        writer = csv.writer(out, delimiter=";")
        writer.writerow(["Buchungstag", "Betrag", "Verwendungszweck", "Auftraggeber"])
        for row in rows:
            amount = f"{row['amount']:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
            writer.writerow([row["day"].strftime("%d.%m.%Y"), amount, row["reference"], row["counterparty"]])
    else:
        writer = csv.writer(out)
        writer.writerow(["Date", "Amount", "Currency", "Reference", "Description", "Counterparty", "Transaction ID"])
        for row in rows:
            writer.writerow([row["day"].isoformat(), f"{row['amount']:.2f}", row["currency"], row["reference"],
                             "INCOMING WIRE", row["counterparty"], row["id"]])
    return out.getvalue().encode(fmt.encoding)


class ReceivablesStory:
    def __init__(self, builder: _DemoBuilder) -> None:
        self.b = builder
        self.rng = random.Random(SEED)  # noqa: S311 (reproducible demo data)
        self.formats: dict[str, BankStatementFormat] = {}
        self.overpaid: set[str] = set()  # customers who overpaid once already
        self.bounced: set[str] = set()  # invoices whose check bounced: paid by transfer a week later
        self.bounced_customers: set[int] = set()  # only a customer's first check bounces

    def profile(self, customer: Customer) -> str:
        key = customer.external_id.removeprefix("cus_")
        for name, keys in (("never", NEVER_PAY), ("late", PAYS_LATE), ("half", PAYS_HALF),
                           ("check", PAYS_BY_CHECK), ("over", OVERPAYS), ("no_reference", NO_REFERENCE)):
            if key in keys:
                return name
        return "prompt"

    def plan(self, closes: list[datetime]) -> None:
        """Set-up now; imports every Monday and Thursday, dunning every morning, from the first close on."""
        self.formats = statement_formats(self.b.entities)
        for entity in self.b.entities.values():
            dunning.create_standard_policy(entity)
        first = closes[0].date()
        day = first
        while day < self.b.today:
            if day.weekday() in (0, 3):
                self.b.later(self.b.at(day, 15), self.import_statements)
            self.b.later(self.b.at(day, 9), self.run_dunning)
            day += timedelta(days=1)
        self.b.later(self.b.at(first + timedelta(days=40), 16), self.credit_notes)
        # Before the next close, which would apply the credit to the next invoice.
        self.b.later(self.b.at(first + timedelta(days=25), 16), self.refund_overpayments)

    # --- money in -------------------------------------------------------------------------------------

    def pay_day(self, invoice: Invoice, profile: str) -> date | None:
        """When this customer pays this invoice (a fixed draw per invoice, so imports agree)."""
        draw = random.Random(f"{SEED}:{invoice.number}")  # noqa: S311
        if profile == "never":
            return None
        if profile == "late":
            return invoice.due_date + timedelta(days=draw.randint(3, 12))
        return invoice.issue_date + timedelta(days=draw.randint(10, 18))

    def due_rows(self, entity_key: str, start: date, end: date) -> list[dict[str, Any]]:
        """Statement lines for the payments customers make between `start` (inclusive) and `end` (exclusive)."""
        entity = self.b.entities[entity_key]
        rows: list[dict[str, Any]] = []
        invoices = (Invoice.objects.filter(billing_entity=entity, status=Invoice.Status.FINALIZED, amount_due__gt=0)
                    .select_related("customer").order_by("sequence_number"))
        for invoice in invoices:
            profile = self.profile(invoice.customer)
            day = self.pay_day(invoice, profile)
            by_check = profile == "check" and invoice.number not in self.bounced
            if day is not None and invoice.number in self.bounced:
                day += timedelta(days=7)
            if profile == "half" and invoice.amount_paid > 0:
                day = invoice.due_date + timedelta(days=10)
            if day is None or not start <= day < end:
                continue
            amount = invoice.amount_due
            if profile == "half" and invoice.amount_paid == 0:
                amount = (invoice.amount_due / 2).quantize(Decimal("0.01"))
            if profile == "over" and invoice.customer.external_id not in self.overpaid:
                amount += OVERPAYS[invoice.customer.external_id.removeprefix("cus_")]
                self.overpaid.add(invoice.customer.external_id)
            reference = "" if profile == "no_reference" else f"Invoice {invoice.number}"
            rows.append({"day": day, "amount": amount, "currency": invoice.currency, "reference": reference,
                         "counterparty": invoice.customer.legal_name or invoice.customer.name,
                         "id": f"FHB{invoice.sequence_number:06d}{day:%m%d}", "check": by_check})
        return rows

    def import_statements(self, now: datetime) -> None:
        end = now.date()
        start = end - timedelta(days=4 if end.weekday() == 0 else 3)
        for key, fmt in self.formats.items():
            rows = [row for row in self.due_rows(key, start, end) if not row["check"]]
            if key == "us" and start <= self.b.today - timedelta(days=20) < end:
                rows.append({"day": start, "amount": Decimal("1180.00"), "currency": "USD",
                             "reference": "PAYMENT THANK YOU", "counterparty": "N. Oakley Consulting",
                             "id": f"FHB-UNK-{start:%m%d}", "check": False})
            if rows:
                bank.import_statement(fmt, statement_bytes(fmt, rows), filename=f"{fmt.name} {end}.csv",
                                      actor=BANK_ACTOR, now=now)
        self.checks(start, end, now)

    def checks(self, start: date, end: date, now: datetime) -> None:
        """Bluefin pays by check; its first check bounces three days later and is reversed."""
        for row in self.due_rows("us", start, end):
            if not row["check"]:
                continue
            invoice = Invoice.objects.get(number=row["reference"].removeprefix("Invoice "))
            payment = payments.record_payment(
                customer=invoice.customer, amount=row["amount"], currency=row["currency"],
                method=Payment.Method.CHECK, received_on=row["day"], reference=f"Check {row['id'][-6:]}",
                allocations=[payments.AllocationRequest(invoice, row["amount"])], actor=FINANCE, now=now,
                idempotency_key=f"demo-check:{invoice.number}",
            )
            if invoice.customer_id not in self.bounced_customers:
                self.bounced_customers.add(invoice.customer_id)
                self.bounced.add(invoice.number)
                payments.reverse_payment(payment, reason="Check returned unpaid by the bank (NSF)", actor=FINANCE,
                                         now=now)

    # --- corrections ----------------------------------------------------------------------------------

    def credit_notes(self, now: datetime) -> None:
        """An SLA credit on a paid invoice (to the balance) and a billing error on an open one."""
        paid = (Invoice.objects.filter(customer=self.b.customers["pinecrest"], status=Invoice.Status.PAID,
                                       total__gt=0).order_by("sequence_number").first())
        if paid is not None:
            credit_notes.issue_credit_note(
                paid, amount=min(Decimal("150.00"), paid.subtotal), reason=CreditNote.Reason.SERVICE_OUTAGE,
                memo="SLA credit: API availability 99.2 % in the month (ticket NW-4821)",
                settlement=CreditNote.Settlement.CREDIT_BALANCE, actor=FINANCE, now=now,
            )
        open_invoice = (Invoice.objects.filter(customer=self.b.customers["vespa"], status=Invoice.Status.FINALIZED,
                                               total__gt=0).order_by("sequence_number").first())
        if open_invoice is not None:
            first_line = open_invoice.lines.order_by("position").first()
            if first_line is not None and first_line.amount > 0:
                credit_notes.issue_credit_note(
                    open_invoice, lines=[credit_notes.CreditLineRequest(first_line, amount=(
                        (first_line.amount - first_line.discount_amount) / 4).quantize(Decimal("0.01")))],
                    reason=CreditNote.Reason.BILLING_ERROR, memo="Seats billed above the contracted 30",
                    settlement=CreditNote.Settlement.CREDIT_BALANCE, actor=FINANCE, now=now,
                )

    def refund_overpayments(self, now: datetime) -> None:
        for key in OVERPAYS:
            customer = self.b.customers[key]
            held = payments.credit_balance(customer, str(customer.currency))
            if held > 0:
                payments.refund_credit_balance(
                    customer, currency=str(customer.currency), amount=held, reason="Overpayment returned by wire",
                    actor=FINANCE, now=now, idempotency_key=f"demo-refund:{key}",
                )

    @staticmethod
    def run_dunning(now: datetime) -> None:
        dunning.run_dunning(now=now, actor=DUNNING_ACTOR)

    # --- today's statement, for a new user to import -------------------------------------------------------

    def current_statement_csv(self) -> bytes:
        """Credits for invoices open today (by number, and one by amount without a reference) and one
        unknown transfer: importing it in the admin pays them and leaves one line to match by hand."""
        fmt = self.formats["us"]
        rows = []
        invoices = (Invoice.objects.filter(billing_entity=self.b.entities["us"], status=Invoice.Status.FINALIZED,
                                           amount_due__gt=0)
                    .exclude(customer__external_id__in=[f"cus_{k}" for k in NEVER_PAY])
                    .select_related("customer").order_by("-sequence_number")[:4])
        for i, invoice in enumerate(invoices):
            rows.append({"day": self.b.today, "amount": invoice.amount_due, "currency": invoice.currency,
                         "reference": "" if i == 3 else f"INV {invoice.number}",
                         "counterparty": invoice.customer.name, "id": f"FHB-TODAY-{i}", "check": False})
        rows.append({"day": self.b.today, "amount": Decimal("99.00"), "currency": "USD", "reference": "REFUND?",
                     "counterparty": "Unknown sender", "id": "FHB-TODAY-X", "check": False})
        return statement_bytes(fmt, rows)
