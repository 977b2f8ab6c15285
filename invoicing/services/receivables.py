"""Receivables selectors (read only): what invoices owed at the end of any day, the aging report, a customer's
balance at a date, customer statements and DSO.

Dates. A document's own date counts: invoices their `issue_date`, payments `received_on`, credit notes
`issue_date`, refunds `refunded_on` (all calendar days of the customer). Moments (allocations' `created_at`,
`voided_at`, `reversed_at`, `marked_uncollectible_at`, credit balance entries) count on the customer's
calendar day, like `customer_today`: "as of 31 March" means up to midnight at the end of 31 March in the
customer's timezone. The comparison is done against one UTC cutoff per timezone, in SQL, so it runs the
same on PostgreSQL and SQLite.

Balance (positive: the customer owes; negative: it holds credit):

    Σ invoices issued (total - prepaid credit, negative invoices included) - Σ invoices voided
    - Σ payments received (succeeded, and reversed ones) + Σ payment reversals
    - Σ credit notes + Σ refunds (pending or succeeded; a failed refund never moved money)

which for today equals Σ amount due of the open invoices - the credit balance (tests/invoicing/
test_receivables.py proves it over random histories). Two currencies are never added: every figure is in
one currency, and reports keep one row or total per currency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import (
    Case,
    DateTimeField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from billing.errors import BillingError
from customers.models import BillingEntity, Customer
from invoicing.models import (
    MONEY,
    ZERO,
    Allocation,
    CreditNote,
    CustomerBalanceTransaction,
    Invoice,
    Payment,
    Refund,
)

MONEY_FIELD = DecimalField(**MONEY)
BUCKETS: tuple[str, ...] = ("current", "days_1_30", "days_31_60", "days_61_90", "days_over_90")
BUCKET_LABELS = {
    "current": "Current",
    "days_1_30": "1-30 days",
    "days_31_60": "31-60 days",
    "days_61_90": "61-90 days",
    "days_over_90": "Over 90 days",
}
# Far enough for any business date, near enough that a day after and a DSO window before stay valid dates.
MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(9000, 12, 31)
MAX_STATEMENT_YEARS = 5
MAX_DSO_DAYS = 3660


# --- dates ------------------------------------------------------------------------------------------------


def check_date(day: date, *, field: str) -> date:
    if not MIN_DATE <= day <= MAX_DATE:
        raise BillingError(f"The date must be between {MIN_DATE} and {MAX_DATE}.", field=field)
    return day


def day_end(day: date, tz: ZoneInfo | Any) -> datetime:
    """The first moment after `day` in timezone `tz`: anything stamped before it happened by that day."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=_zone(tz))


def local_day(moment: datetime, tz: ZoneInfo | Any) -> date:
    return moment.astimezone(_zone(tz)).date()


def _zone(tz: ZoneInfo | Any) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(str(tz))


def _timezones(customers: QuerySet[Customer] | None = None) -> list[ZoneInfo]:
    qs = customers if customers is not None else Customer.objects.all()
    return [_zone(tz) for tz in qs.order_by().values_list("timezone", flat=True).distinct()]


def _cutoff(as_of: date, tz_path: str, zones: Iterable[ZoneInfo]) -> Case:
    """Per row, the end of `as_of` in the timezone found at `tz_path` (one WHEN per timezone in use)."""
    whens = [When(**{tz_path: zone.key}, then=Value(day_end(as_of, zone))) for zone in zones]
    return Case(*whens, default=Value(None, output_field=DateTimeField()), output_field=DateTimeField())


def _happened_by(as_of: date, moment: str, tz_path: str, zones: Iterable[ZoneInfo]) -> Q:
    """`moment` fell on or before `as_of` in the customer's timezone."""
    q = Q(pk__in=[])
    for zone in zones:
        q |= Q(**{tz_path: zone.key, f"{moment}__lt": day_end(as_of, zone)})
    return q


def bucket_for(days_overdue: int) -> str:
    if days_overdue <= 0:
        return "current"
    if days_overdue <= 30:
        return "days_1_30"
    if days_overdue <= 60:
        return "days_31_60"
    if days_overdue <= 90:
        return "days_61_90"
    return "days_over_90"


def _money(value: Decimal | None) -> Decimal:
    return value if value is not None else ZERO


# --- open amounts -----------------------------------------------------------------------------------------


def open_amount_at(invoices: QuerySet[Invoice], as_of: date) -> QuerySet[Invoice]:
    """The invoices of `invoices` that existed at the end of `as_of`, annotated with what each owed then:
    `open_amount` = total - prepaid credit - allocations made by then (customer's calendar day), and
    `written_off` (marked uncollectible by then). Drafts, invoices issued later and invoices voided by then
    are left out; one query, whatever the number of invoices."""
    check_date(as_of, field="as_of")
    zones = _timezones()
    allocated = (
        Allocation.objects.filter(invoice=OuterRef("pk"), created_at__lt=OuterRef("_cutoff"))
        .order_by()
        .values("invoice")
        .annotate(s=Sum("amount"))
        .values("s")
    )
    return (
        invoices.exclude(status=Invoice.Status.DRAFT)
        .filter(issue_date__lte=as_of)
        .annotate(_cutoff=_cutoff(as_of, "customer__timezone", zones))
        .exclude(voided_at__lt=F("_cutoff"))
        .annotate(
            receivable=ExpressionWrapper(F("total") - F("prepaid_credit_applied"), output_field=MONEY_FIELD),
            allocated_by=Coalesce(Subquery(allocated, output_field=MONEY_FIELD), Value(ZERO), output_field=MONEY_FIELD),
        )
        .annotate(
            open_amount=ExpressionWrapper(F("receivable") - F("allocated_by"), output_field=MONEY_FIELD),
            written_off=Case(
                When(marked_uncollectible_at__lt=F("_cutoff"), then=Value(True)), default=Value(False)
            ),
        )
    )


@dataclass(frozen=True)
class OpenItem:
    invoice_id: int
    number: str
    customer_id: int
    billing_entity_id: int
    currency: str
    issue_date: date
    due_date: date
    receivable: Decimal  # total - prepaid credit: what the invoice put on the account
    open_amount: Decimal
    days_overdue: int
    bucket: str
    uncollectible: bool


def open_items(
    as_of: date,
    *,
    billing_entity: BillingEntity | None = None,
    currency: str | None = None,
    customer: Customer | None = None,
    include_uncollectible: bool = False,
) -> list[OpenItem]:
    """Every invoice with something owed at the end of `as_of`, oldest due first."""
    qs = Invoice.objects.all()
    if billing_entity is not None:
        qs = qs.filter(billing_entity=billing_entity)
    if currency:
        qs = qs.filter(currency=currency)
    if customer is not None:
        qs = qs.filter(customer=customer)
    # Owing at as_of means owing now, or paid (or voided) since: settled invoices of the past are skipped
    # with an index probe instead of a sum.
    paid_since = Allocation.objects.filter(invoice=OuterRef("pk"), created_at__gte=OuterRef("_cutoff"))
    qs = open_amount_at(qs, as_of).filter(
        Q(amount_due__gt=0) | Q(status=Invoice.Status.VOID) | Exists(paid_since)
    ).filter(open_amount__gt=0)
    if not include_uncollectible:
        qs = qs.filter(written_off=False)
    rows = qs.order_by("due_date", "issue_date", "pk").values_list(
        "pk", "number", "customer_id", "billing_entity_id", "currency", "issue_date", "due_date", "receivable",
        "open_amount", "written_off",
    )
    items = []
    for pk, number, customer_id, entity_id, cur, issued, due, receivable, amount, written_off in rows:
        due = due or issued
        days = (as_of - due).days
        items.append(OpenItem(pk, number or "", customer_id, entity_id, str(cur), issued, due, receivable, amount,
                              max(days, 0), bucket_for(days), bool(written_off)))
    return items


def credit_at(
    as_of: date,
    *,
    customers: QuerySet[Customer],
    currency: str | None = None,
) -> dict[tuple[int, str], Decimal]:
    """The credit balance each customer held at the end of `as_of`, by (customer id, currency); zero left out."""
    zones = _timezones(customers)
    qs = CustomerBalanceTransaction.objects.filter(balance__customer__in=customers).filter(
        _happened_by(as_of, "created_at", "balance__customer__timezone", zones)
    )
    if currency:
        qs = qs.filter(balance__currency=currency)
    rows = qs.order_by().values_list("balance__customer_id", "balance__currency").annotate(s=Sum("amount"))
    return {(customer_id, str(cur)): s for customer_id, cur, s in rows if s}


# --- aging ------------------------------------------------------------------------------------------------


def _zero_buckets() -> dict[str, Decimal]:
    return dict.fromkeys(BUCKETS, ZERO)


@dataclass
class AgingRow:
    billing_entity_id: int
    billing_entity_code: str
    billing_entity_name: str
    customer_id: int
    customer_external_id: str
    customer_name: str
    currency: str
    buckets: dict[str, Decimal] = field(default_factory=_zero_buckets)
    total: Decimal = ZERO
    unapplied_credit: Decimal = ZERO
    items: list[OpenItem] = field(default_factory=list)

    @property
    def net(self) -> Decimal:
        """Open invoices less the credit the customer holds: its balance."""
        return self.total - self.unapplied_credit


@dataclass
class AgingTotal:
    billing_entity_id: int
    billing_entity_code: str
    billing_entity_name: str
    currency: str
    buckets: dict[str, Decimal] = field(default_factory=_zero_buckets)
    total: Decimal = ZERO
    unapplied_credit: Decimal = ZERO
    customers: int = 0

    @property
    def net(self) -> Decimal:
        return self.total - self.unapplied_credit


@dataclass
class AgingReport:
    as_of: date
    include_uncollectible: bool
    rows: list[AgingRow]
    totals: list[AgingTotal]  # one per billing entity and currency, never across currencies


def aging_report(
    *,
    as_of: date,
    billing_entity: BillingEntity | None = None,
    currency: str | None = None,
    customer: Customer | None = None,
    include_uncollectible: bool = False,
) -> AgingReport:
    """Open receivables at the end of `as_of` by billing entity, customer and currency, in buckets of days past
    due (current: not yet due), with the customer's unapplied credit and the open items behind each row."""
    items = open_items(as_of, billing_entity=billing_entity, currency=currency, customer=customer,
                       include_uncollectible=include_uncollectible)
    customers = Customer.objects.all()
    if customer is not None:
        customers = customers.filter(pk=customer.pk)
    elif billing_entity is not None:
        customers = customers.filter(billing_entity=billing_entity)
    credits = credit_at(as_of, customers=customers, currency=currency)

    customer_ids = {item.customer_id for item in items} | {customer_id for customer_id, _ in credits}
    people = {
        row[0]: row
        for row in Customer.objects.filter(pk__in=customer_ids).values_list("pk", "external_id", "name",
                                                                           "billing_entity_id")
    }
    entity_ids = {item.billing_entity_id for item in items} | {row[3] for row in people.values()}
    entities = {pk: (code, name) for pk, code, name in
                BillingEntity.objects.filter(pk__in=entity_ids).values_list("pk", "code", "name")}

    rows: dict[tuple[int, int, str], AgingRow] = {}

    def row_for(entity_id: int, customer_id: int, cur: str) -> AgingRow:
        key = (entity_id, customer_id, cur)
        if key not in rows:
            _, external_id, name, _ = people[customer_id]
            code, entity_name = entities[entity_id]
            rows[key] = AgingRow(entity_id, code, entity_name, customer_id, external_id, name, cur)
        return rows[key]

    for item in items:
        row = row_for(item.billing_entity_id, item.customer_id, item.currency)
        row.buckets[item.bucket] += item.open_amount
        row.total += item.open_amount
        row.items.append(item)
    for (customer_id, cur), amount in credits.items():
        # Credit belongs to the customer, shown under its billing entity.
        row_for(people[customer_id][3], customer_id, cur).unapplied_credit += amount

    ordered = sorted(rows.values(), key=lambda r: (r.billing_entity_code, r.currency, r.customer_name.lower(),
                                                   r.customer_external_id))
    totals: dict[tuple[int, str], AgingTotal] = {}
    for row in ordered:
        key = (row.billing_entity_id, row.currency)
        if key not in totals:
            totals[key] = AgingTotal(row.billing_entity_id, row.billing_entity_code, row.billing_entity_name,
                                     row.currency)
        total = totals[key]
        for bucket in BUCKETS:
            total.buckets[bucket] += row.buckets[bucket]
        total.total += row.total
        total.unapplied_credit += row.unapplied_credit
        total.customers += 1
    return AgingReport(as_of, include_uncollectible, ordered, list(totals.values()))


# --- balance at a date ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BalanceAt:
    """A customer's balance at the end of a day in one currency, with the sums it is made of."""

    customer_id: int
    currency: str
    as_of: date
    invoiced: Decimal
    voided: Decimal
    payments: Decimal
    reversals: Decimal
    credit_notes: Decimal
    refunds: Decimal

    @property
    def balance(self) -> Decimal:
        return (self.invoiced - self.voided - self.payments + self.reversals - self.credit_notes
                + self.refunds)


def balance_breakdown(customer: Customer, currency: str, as_of: date) -> BalanceAt:
    check_date(as_of, field="as_of")
    currency = str(currency)
    end = day_end(as_of, customer.timezone)
    receivable = F("total") - F("prepaid_credit_applied")
    invoices = Invoice.objects.filter(customer=customer, currency=currency, issue_date__lte=as_of).exclude(
        status=Invoice.Status.DRAFT
    ).aggregate(
        invoiced=Sum(receivable, output_field=MONEY_FIELD),
        voided=Sum(receivable, filter=Q(status=Invoice.Status.VOID, voided_at__lt=end), output_field=MONEY_FIELD),
    )
    payments = Payment.objects.filter(customer=customer, currency=currency).aggregate(
        received=Sum("amount", filter=Q(status__in=[Payment.Status.SUCCEEDED, Payment.Status.REVERSED],
                                         received_on__lte=as_of)),
        reversed=Sum("amount", filter=Q(status=Payment.Status.REVERSED, reversed_at__lt=end)),
    )
    credit_notes = CreditNote.objects.filter(customer=customer, currency=currency, issue_date__lte=as_of).aggregate(
        s=Sum("total")
    )["s"]
    refunds = (
        Refund.objects.filter(customer=customer, currency=currency, refunded_on__lte=as_of)
        .exclude(status=Refund.Status.FAILED)
        .aggregate(s=Sum("amount"))["s"]
    )
    return BalanceAt(
        customer.pk, currency, as_of, _money(invoices["invoiced"]), _money(invoices["voided"]),
        _money(payments["received"]), _money(payments["reversed"]), _money(credit_notes), _money(refunds),
    )


def customer_balance_at(customer: Customer, currency: str, as_of: date) -> Decimal:
    """What the customer owed (positive) or held as credit (negative) at the end of `as_of`."""
    return balance_breakdown(customer, currency, as_of).balance


# --- statements -------------------------------------------------------------------------------------------


class DocumentType:
    INVOICE = "invoice"
    VOID = "invoice_void"
    CREDIT_NOTE = "credit_note"
    PAYMENT = "payment"
    REFUND = "refund"
    REVERSAL = "payment_reversal"


DOCUMENT_LABELS = {
    DocumentType.INVOICE: "Invoice",
    DocumentType.VOID: "Invoice voided",
    DocumentType.CREDIT_NOTE: "Credit note",
    DocumentType.PAYMENT: "Payment",
    DocumentType.REFUND: "Refund",
    DocumentType.REVERSAL: "Payment reversed",
}
# Within a day: what the customer was billed, then what reduced it, then what put it back.
_DAY_ORDER = {DocumentType.INVOICE: 0, DocumentType.CREDIT_NOTE: 1, DocumentType.PAYMENT: 2,
              DocumentType.REFUND: 3, DocumentType.REVERSAL: 4, DocumentType.VOID: 5}


@dataclass(frozen=True)
class StatementLine:
    day: date
    type: str
    number: str
    description: str
    amount: Decimal  # signed: positive raises what the customer owes
    balance: Decimal  # running balance after this line
    due_date: date | None = None
    reference: str = ""

    @property
    def debit(self) -> Decimal:
        return self.amount if self.amount > 0 else ZERO

    @property
    def credit(self) -> Decimal:
        return -self.amount if self.amount < 0 else ZERO

    @property
    def label(self) -> str:
        return DOCUMENT_LABELS[self.type]


@dataclass
class Statement:
    customer: Customer
    currency: str
    start: date
    end: date
    opening_balance: Decimal
    lines: list[StatementLine]
    closing_balance: Decimal
    open_items: list[OpenItem]
    aging: dict[str, Decimal]

    @property
    def open_total(self) -> Decimal:
        return sum((item.open_amount for item in self.open_items), ZERO)

    @property
    def unapplied_credit(self) -> Decimal:
        """Credit the customer held at the end of the period (what the open items leave of the balance)."""
        return self.open_total - self.closing_balance


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def check_period(start: date, end: date) -> None:
    check_date(start, field="start")
    check_date(end, field="end")
    if start > end:
        raise BillingError("The start date is after the end date.", field="start")
    if end >= _add_years(start, MAX_STATEMENT_YEARS):
        raise BillingError(f"A statement covers at most {MAX_STATEMENT_YEARS} years.", field="end")


def _statement_documents(customer: Customer, currency: str, start: date, end: date) -> list[tuple]:
    tz = customer.timezone
    begin, finish = day_end(start - timedelta(days=1), tz), day_end(end, tz)
    docs: list[tuple] = []
    invoices = (
        Invoice.objects.filter(customer=customer, currency=currency)
        .exclude(status=Invoice.Status.DRAFT)
        .filter(Q(issue_date__range=(start, end)) | Q(status=Invoice.Status.VOID, voided_at__gte=begin,
                                                       voided_at__lt=finish, issue_date__isnull=False))
        .values_list("pk", "number", "issue_date", "due_date", "total", "prepaid_credit_applied", "status",
                     "voided_at", "void_reason")
    )
    for pk, number, issued, due, total, prepaid, status, voided_at, void_reason in invoices:
        receivable = total - prepaid
        if start <= issued <= end:
            text = f"Invoice {number}" + (f" (prepaid credit {prepaid} applied)" if prepaid else "")
            docs.append((issued, DocumentType.INVOICE, pk, number, text, receivable, due, ""))
        if status == Invoice.Status.VOID and voided_at is not None and begin <= voided_at < finish:
            docs.append((local_day(voided_at, tz), DocumentType.VOID, pk, number, f"Invoice {number} voided",
                         -receivable, None, void_reason))
    payments = Payment.objects.filter(customer=customer, currency=currency).filter(
        Q(status__in=[Payment.Status.SUCCEEDED, Payment.Status.REVERSED], received_on__range=(start, end))
        | Q(status=Payment.Status.REVERSED, reversed_at__gte=begin, reversed_at__lt=finish)
    ).values_list("pk", "amount", "method", "status", "received_on", "reference", "reversed_at", "reversal_reason")
    methods = dict(Payment.Method.choices)
    for pk, amount, method, status, received_on, reference, reversed_at, reason in payments:
        if start <= received_on <= end:
            docs.append((received_on, DocumentType.PAYMENT, pk, f"P-{pk}", f"Payment ({methods.get(method, method)})",
                         -amount, None, reference))
        if status == Payment.Status.REVERSED and begin <= reversed_at < finish:
            docs.append((local_day(reversed_at, tz), DocumentType.REVERSAL, pk, f"P-{pk}",
                         f"Payment P-{pk} reversed", amount, None, reason))
    notes = CreditNote.objects.filter(customer=customer, currency=currency, issue_date__range=(start, end))
    for pk, number, issued, total, invoice_number in notes.values_list("pk", "number", "issue_date", "total",
                                                                       "invoice__number"):
        docs.append((issued, DocumentType.CREDIT_NOTE, pk, number, f"Credit note {number} on invoice {invoice_number}",
                     -total, None, ""))
    refunds = (
        Refund.objects.filter(customer=customer, currency=currency, refunded_on__range=(start, end))
        .exclude(status=Refund.Status.FAILED)
        .values_list("pk", "amount", "refunded_on", "source", "payment_id", "credit_note__number", "reason")
    )
    for pk, amount, refunded_on, source, payment_id, note_number, reason in refunds:
        what = {Refund.Source.PAYMENT: f"of payment P-{payment_id}", Refund.Source.CREDIT_NOTE:
                f"of credit note {note_number}"}.get(source, "of credit balance")
        docs.append((refunded_on, DocumentType.REFUND, pk, f"R-{pk}", f"Refund {what}", amount, None, reason))
    docs.sort(key=lambda d: (d[0], _DAY_ORDER[d[1]], d[2]))
    return docs


def customer_statement(customer: Customer, currency: str, start: date, end: date) -> Statement:
    """Opening balance, every document of the period in date order with a running balance, closing balance
    (= customer_balance_at(end)), and the invoices still open at the end with their aging."""
    check_period(start, end)
    currency = str(currency)
    opening = customer_balance_at(customer, currency, start - timedelta(days=1))
    running = opening
    lines = []
    for day, kind, _pk, number, text, amount, due, reference in _statement_documents(customer, currency, start, end):
        running += amount
        lines.append(StatementLine(day, kind, number or "", text, amount, running, due, reference or ""))
    items = open_items(end, currency=currency, customer=customer, include_uncollectible=True)
    aging = _zero_buckets()
    for item in items:
        aging[item.bucket] += item.open_amount
    return Statement(customer, currency, start, end, opening, lines, running, items, aging)


# --- DSO --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DSOFigures:
    billing_entity_id: int
    currency: str
    as_of: date
    days: int
    receivables: Decimal  # open at as_of, written-off invoices left out
    credit_sales: Decimal  # total - prepaid credit of invoices issued in the window, voided ones left out
    dso: Decimal | None


def dso_figures(*, billing_entity: BillingEntity, currency: str, as_of: date, days: int = 90) -> DSOFigures:
    check_date(as_of, field="as_of")
    if not 1 <= days <= MAX_DSO_DAYS:
        raise BillingError(f"The window is 1 to {MAX_DSO_DAYS} days.", field="days")
    currency = str(currency)
    receivables = sum((item.open_amount for item in open_items(as_of, billing_entity=billing_entity,
                                                               currency=currency)), ZERO)
    issued = Invoice.objects.filter(billing_entity=billing_entity, currency=currency,
                                    issue_date__gt=as_of - timedelta(days))
    window = open_amount_at(issued, as_of)
    sales = window.aggregate(s=Sum("receivable"))["s"] or ZERO
    value = None
    if sales > 0:
        value = (receivables / sales * days).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return DSOFigures(billing_entity.pk, currency, as_of, days, receivables, sales, value)


def dso(*, billing_entity: BillingEntity, currency: str, as_of: date, days: int = 90) -> Decimal | None:
    """Days sales outstanding: receivables at `as_of` / credit sales of the `days` before it x `days`; None
    when there were no sales in the window."""
    return dso_figures(billing_entity=billing_entity, currency=currency, as_of=as_of, days=days).dso

