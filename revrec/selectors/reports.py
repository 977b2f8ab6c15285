"""The revenue reports: each one a Report (revrec.selectors.report_types) the admin renders as a table and a
chart, the API as JSON and both as CSV. One billing entity and one currency per report; nothing adds two
currencies. Ledger figures are by entry date (a correction posted into a later open period counts there).

`run_report(key, params)` checks the parameters and builds the report; `REPORTS` lists them.
"""

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from billing.api.fields import format_amount
from billing.errors import BillingError
from contracts.models import Product
from customers.models import Customer
from revrec.arithmetic import RatableTerms, ratable_by_month
from revrec.models import (
    Account,
    JournalEntry,
    JournalLine,
    ObligationAdjustment,
    PerformanceObligation,
    Recognition,
    RevenueContract,
)
from revrec.selectors.positions import (
    ACCRUAL_KINDS,
    ledger_balance,
    position_totals,
    positions_as_of,
    stored,
)
from revrec.selectors.report_types import Report, ReportParams, ReportSpec, Series

ZERO = Decimal("0")
Kind = JournalEntry.Kind
Pattern = PerformanceObligation.Pattern
Status = PerformanceObligation.Status
Role = Account.Role

MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(9000, 12, 31)
MAX_MONTHS = 120  # ten years of monthly columns is already more than a screen or a spreadsheet wants
MAX_DAYS = 3660
NO_PRODUCT = "(no product)"


# --- dates ---------------------------------------------------------------------------------------------------


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def add_months(month: date, count: int) -> date:
    total = month.year * 12 + month.month - 1 + count
    return date(total // 12, total % 12 + 1, 1)


def months_between(start: date, end: date) -> list[date]:
    """The months of a monthly report: each month whose first day is in [month of start, end)."""
    months, month = [], month_start(start)
    while month < end:
        months.append(month)
        month = next_month(month)
    return months


def label(month: date) -> str:
    return f"{month:%Y-%m}"


def _m(amount: Decimal, currency: str) -> str:
    return format_amount(amount, currency)


def _window(params: ReportParams) -> tuple[date, date]:
    assert params.start is not None and params.end is not None  # run_report checked them
    return params.start, params.end


def _month_window(params: ReportParams) -> tuple[list[date], date, date]:
    """The months, the first day of the first and the first day after the last."""
    months = months_between(*_window(params))
    return months, months[0], next_month(months[-1])


def _as_of(params: ReportParams) -> date:
    assert params.as_of is not None
    return params.as_of


# --- waterfall -----------------------------------------------------------------------------------------------


def waterfall(params: ReportParams) -> Report:
    """Rows: the month an obligation was billed; cells: what it recognised in each month of the window.
    "Earlier": recognised before the window (revenue earned before it was billed); "Later": still to
    recognise after the window (the allocated price less everything recognised before its end)."""
    months, first, after = _month_window(params)
    obligations = list(PerformanceObligation.objects.filter(
        revenue_contract__billing_entity_id=params.entity_id, revenue_contract__currency=params.currency,
        billed_on__gte=first, billed_on__lt=after,
    ).values("pk", "billed_on", "billed_amount", "allocated_price", "status"))
    row_of: dict[int, date] = {}
    billed: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for o in obligations:
        row_of[o["pk"]] = month_start(o["billed_on"])
        billed[row_of[o["pk"]]] += o["billed_amount"]
    # Credit notes and voids change what an obligation billed: the row shows its net billing.
    for adjustment in ObligationAdjustment.objects.filter(obligation_id__in=list(row_of)).values(
        "obligation_id", "billed_delta"
    ):
        billed[row_of[adjustment["obligation_id"]]] += adjustment["billed_delta"]
    cells: dict[tuple[date, str], Decimal] = defaultdict(lambda: ZERO)
    before_end: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for r in Recognition.objects.filter(obligation_id__in=list(row_of), recognized_on__lt=after).values(
        "obligation_id", "recognized_on"
    ).annotate(amount=Sum("amount")).order_by():
        row = row_of[r["obligation_id"]]
        column = "Earlier" if r["recognized_on"] < first else label(month_start(r["recognized_on"]))
        cells[(row, column)] += r["amount"]
        before_end[r["obligation_id"]] += r["amount"]
    # Still to recognise after the window: the allocated price less what was recognised before its end (a
    # cancelled obligation holds nothing more).
    later: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for o in obligations:
        if o["status"] != Status.CANCELLED:
            later[row_of[o["pk"]]] += max(o["allocated_price"] - before_end[o["pk"]], ZERO)
    columns_months = [label(m) for m in months]
    columns = ["Billing month", "Billed", "Earlier", *columns_months, "Later"]
    rows = []
    for month in months:
        row = [label(month), billed[month], cells[(month, "Earlier")]]
        row.extend(cells[(month, column)] for column in columns_months)
        row.append(later[month])
        rows.append(row)
    totals = ["Total", *(sum((r[i] for r in rows), ZERO) for i in range(1, len(columns)))]
    recognised_by_month = _recognised_by_month(params, first, after)
    chart = [
        Series("Billed", [(label(m), billed[m]) for m in months]),
        Series("Recognised", [(label(m), recognised_by_month.get(m, ZERO)) for m in months]),
    ]
    return Report(
        key="waterfall", title="Revenue waterfall", currency=params.currency, columns=columns, rows=rows,
        totals=totals, chart=chart, chart_kind="bar",
        description=(
            "Obligations billed in each month (rows) and the revenue they recognised in each month (columns), "
            "from the Recognition rows: accrued unbilled usage (accrual entries) is not revenue recognised "
            "and does not appear. Earlier: recognised before the window; Later: still to recognise after it. "
            "Billed is net of credit notes; a row's cells add up to its allocated price."
        ),
    )


def _recognitions(params: ReportParams, start: date, end: date):  # type: ignore[no-untyped-def]
    return Recognition.objects.filter(
        revenue_contract__billing_entity_id=params.entity_id, currency=params.currency,
        recognized_on__gte=start, recognized_on__lt=end,
    )


def _recognised_by_month(params: ReportParams, start: date, end: date) -> dict[date, Decimal]:
    totals: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for r in _recognitions(params, start, end).values("recognized_on").annotate(amount=Sum("amount")).order_by():
        totals[month_start(r["recognized_on"])] += r["amount"]
    return totals


# --- deferred revenue roll-forward ---------------------------------------------------------------------------


def deferred_rollforward(params: ReportParams) -> Report:
    """Opening + billings - recognised + other = closing, from the deferred revenue accounts, each month's
    closing reconciled with the contracts' deferred positions rebuilt for its last day."""
    months, first, _after = _month_window(params)
    role = Role.DEFERRED_REVENUE
    opening = ledger_balance(params.entity_id, params.currency, role, first - timedelta(days=1))
    rows, problems, closing_points = [], [], []
    for month in months:
        following = next_month(month)
        moves = JournalLine.objects.filter(
            entry__billing_entity_id=params.entity_id, entry__currency=params.currency, account__role=role,
            entry__entry_date__gte=month, entry__entry_date__lt=following,
        ).values("entry__kind").annotate(debit=Sum("debit"), credit=Sum("credit")).order_by()
        billings = recognised = other = ZERO
        for move in moves:
            net_credit = stored(move["credit"] or ZERO) - stored(move["debit"] or ZERO)
            if move["entry__kind"] == Kind.INVOICE:
                billings += net_credit
            elif move["entry__kind"] == Kind.RECOGNITION:
                recognised -= net_credit
            else:
                other += net_credit
        closing = opening + billings - recognised + other
        last_day = following - timedelta(days=1)
        subledger = position_totals(positions_as_of(params.entity_id, params.currency, last_day)).deferred
        difference = closing - subledger
        if difference:
            cur = params.currency
            problems.append(
                f"{label(month)}: the ledger's deferred revenue closes at {_m(closing, cur)} but the revenue "
                f"contracts add up to {_m(subledger, cur)} (difference {_m(difference, cur)})."
            )
        rows.append([label(month), opening, billings, recognised, other, closing, subledger, difference])
        closing_points.append((label(month), closing))
        opening = closing
    totals = [
        "Total", rows[0][1], sum((r[2] for r in rows), ZERO), sum((r[3] for r in rows), ZERO),
        sum((r[4] for r in rows), ZERO), rows[-1][5], rows[-1][6], rows[-1][7],
    ]
    return Report(
        key="deferred_rollforward", title="Deferred revenue roll-forward", currency=params.currency,
        columns=["Month", "Opening", "Billings", "Recognised", "Other", "Closing", "Subledger closing",
                 "Difference"],
        rows=rows, totals=totals, chart=[Series("Closing deferred revenue", closing_points)], chart_kind="line",
        problems=problems,
        description=(
            "From the deferred revenue accounts of the ledger by entry date: billings are invoice entries, "
            "recognised are recognition entries, other is everything else (credit notes, voids, contract "
            "modifications, netting against contract assets). The subledger closing is the revenue contracts' "
            "deferred positions rebuilt for the month's last day; any difference is listed as a problem."
        ),
    )


# --- recognised revenue by product and by customer -----------------------------------------------------------


def recognised_by_product(params: ReportParams) -> Report:
    start, end = _window(params)
    amounts = {
        r["product_id"]: r["amount"]
        for r in _recognitions(params, start, end).values("product_id").annotate(amount=Sum("amount")).order_by()
    }
    products = {p.pk: p for p in Product.objects.filter(pk__in=[k for k in amounts if k is not None])}
    rows = []
    for product_id, amount in amounts.items():
        product = products.get(product_id) if product_id is not None else None
        rows.append([product.code if product else "", product.name if product else NO_PRODUCT, amount])
    rows.sort(key=lambda r: (-r[2], r[0]))
    return Report(
        key="recognised_by_product", title="Recognised revenue by product", currency=params.currency,
        columns=["Product code", "Product", "Recognised"], rows=rows,
        totals=["Total", "", sum((r[2] for r in rows), ZERO)],
        chart=[Series("Recognised", [(r[0] or r[1], r[2]) for r in rows])], chart_kind="bar",
        description=(
            f"Revenue recognised from {start} to the day before {end}, from the Recognition rows (accrued "
            "unbilled usage is not included: it is an accrual, not recognised revenue)."
        ),
    )


def recognised_by_customer(params: ReportParams) -> Report:
    start, end = _window(params)
    amounts = {
        r["customer_id"]: r["amount"]
        for r in _recognitions(params, start, end).values("customer_id").annotate(amount=Sum("amount")).order_by()
    }
    customers = {c.pk: c for c in Customer.objects.filter(pk__in=list(amounts))}
    rows = [[customers[cid].external_id, customers[cid].name, amount] for cid, amount in amounts.items()]
    rows.sort(key=lambda r: (-r[2], r[0]))
    return Report(
        key="recognised_by_customer", title="Recognised revenue by customer", currency=params.currency,
        columns=["Customer", "Name", "Recognised"], rows=rows, totals=["Total", "", sum((r[2] for r in rows), ZERO)],
        chart=[Series("Recognised (top 10)", [(r[0], r[2]) for r in rows[:10]])], chart_kind="bar",
        description=(
            f"Revenue recognised from {start} to the day before {end}, from the Recognition rows (accrued "
            "unbilled usage is not included)."
        ),
    )


# --- unbilled revenue ----------------------------------------------------------------------------------------


def unbilled_revenue(params: ReportParams) -> Report:
    """Contract assets per revenue contract, plus accrued unbilled usage (accrual entries not yet reversed),
    the contract assets reconciled with the ledger's contract asset balance without the accruals."""
    as_of = _as_of(params)
    positions = [p for p in positions_as_of(params.entity_id, params.currency, as_of) if p.contract_asset]
    accrued: dict[tuple[int | None, int | None], Decimal] = defaultdict(lambda: ZERO)
    for line in JournalLine.objects.filter(
        entry__billing_entity_id=params.entity_id, entry__currency=params.currency, entry__entry_date__lte=as_of,
        entry__kind__in=list(ACCRUAL_KINDS), account__role=Role.CONTRACT_ASSET,
    ).values("customer_id", "revenue_contract_id").annotate(debit=Sum("debit"), credit=Sum("credit")).order_by():
        accrued[(line["revenue_contract_id"], line["customer_id"])] += line["debit"] - line["credit"]
    contract_ids = {p.revenue_contract_id for p in positions} | {k[0] for k in accrued if k[0] is not None}
    contracts = {
        c.pk: c for c in RevenueContract.objects.filter(pk__in=contract_ids).select_related("customer")
    }
    by_contract: dict[int, Decimal] = defaultdict(lambda: ZERO)
    loose: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
    for (contract_id, customer_id), amount in accrued.items():
        if contract_id is not None:
            by_contract[contract_id] += amount
        else:
            loose[customer_id] += amount
    rows: list[list[Any]] = []
    for p in positions:
        contract = contracts[p.revenue_contract_id]
        rows.append([contract.customer.external_id, contract.reference, p.recognized, p.billed, p.contract_asset,
                     by_contract.pop(p.revenue_contract_id, ZERO)])
    for contract_id, amount in by_contract.items():
        if amount:
            contract = contracts[contract_id]
            rows.append([contract.customer.external_id, contract.reference, ZERO, ZERO, ZERO, amount])
    customers = {c.pk: c for c in Customer.objects.filter(pk__in=[k for k in loose if k is not None])}
    for customer_id, amount in loose.items():
        if amount:
            who = customers[customer_id].external_id if customer_id in customers else ""
            rows.append([who, "(accrued usage)", ZERO, ZERO, ZERO, amount])
    rows.sort(key=lambda r: (r[0], r[1]))
    unbilled = sum((r[4] for r in rows), ZERO)
    ledger = ledger_balance(params.entity_id, params.currency, Role.CONTRACT_ASSET, as_of,
                            exclude_kinds=ACCRUAL_KINDS)
    problems = []
    if ledger != unbilled:
        cur = params.currency
        problems.append(
            f"{as_of}: the ledger's contract asset (accruals left out) is {_m(ledger, cur)} but the revenue "
            f"contracts add up to {_m(unbilled, cur)} (difference {_m(ledger - unbilled, cur)})."
        )
    totals = ["Total", "", sum((r[2] for r in rows), ZERO), sum((r[3] for r in rows), ZERO), unbilled,
              sum((r[5] for r in rows), ZERO)]
    by_customer: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for r in rows:
        by_customer[r[0]] += r[4] + r[5]
    top = sorted(by_customer.items(), key=lambda item: (-item[1], item[0]))[:10]
    return Report(
        key="unbilled_revenue", title="Unbilled revenue", currency=params.currency,
        columns=["Customer", "Revenue contract", "Recognised", "Billed", "Unbilled", "Accrued usage"],
        rows=rows, totals=totals, chart=[Series("Unbilled and accrued (top 10)", top)], chart_kind="bar",
        problems=problems,
        description=(
            f"At the end of {as_of}: revenue recognised ahead of billing per revenue contract (contract asset), "
            "reconciled with the ledger's contract asset balance leaving out the unbilled usage accruals, which "
            "are shown apart (accrued at a period end, reversed the next day)."
        ),
    )


# --- remaining performance obligations -----------------------------------------------------------------------


def _schedule_after(obligation: PerformanceObligation, as_of: date, remaining: Decimal,
                    currency: str) -> list[tuple[date, Decimal]]:
    """When what remains of an obligation after `as_of` is expected, by month. A ratable one follows its
    schedule; anything its schedule does not explain (recognition not yet run, a rebase after `as_of`)
    and an undelivered item are expected in the first month."""
    first = month_start(as_of + timedelta(days=1))
    months: list[tuple[date, Decimal]] = []
    if obligation.pattern == Pattern.RATABLE and obligation.service_end and obligation.service_end > as_of:
        terms = RatableTerms(price=obligation.allocated_price, start=obligation.service_start,
                             end=obligation.service_end, currency=currency, rebased_on=obligation.rebased_on,
                             rebased_amount=obligation.rebased_amount)
        after = as_of
        if obligation.rebased_on is not None and as_of < obligation.rebased_on:
            after = obligation.rebased_on - timedelta(days=1)
        months = ratable_by_month(terms, after=after)
    gap = remaining - sum((amount for _, amount in months), ZERO)
    if gap:
        months.insert(0, (first, gap))
    return [(max(month, first), amount) for month, amount in months]


def remaining_performance_obligations(params: ReportParams) -> Report:
    as_of = _as_of(params)
    first = month_start(as_of + timedelta(days=1))
    horizon = add_months(first, 12)
    obligations = list(
        PerformanceObligation.objects.filter(
            revenue_contract__billing_entity_id=params.entity_id, revenue_contract__currency=params.currency,
            billed_on__lte=as_of,
        ).exclude(status=Status.CANCELLED).select_related("revenue_contract__customer")
    )
    recognised = {
        r["obligation_id"]: r["amount"]
        for r in Recognition.objects.filter(obligation__in=obligations, recognized_on__lte=as_of)
        .values("obligation_id").annotate(amount=Sum("amount")).order_by()
    }
    per_contract: dict[int, list[Any]] = {}
    by_month: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for o in obligations:
        remaining = o.allocated_price - recognised.get(o.pk, ZERO)
        if not remaining:
            continue
        contract = o.revenue_contract
        row = per_contract.setdefault(
            contract.pk, [contract.customer.external_id, contract.reference, ZERO, ZERO, ZERO])
        row[2] += remaining
        for month, amount in _schedule_after(o, as_of, remaining, params.currency):
            if month < horizon:
                row[3] += amount
                by_month[month] += amount
            else:
                row[4] += amount
    rows = sorted(per_contract.values(), key=lambda r: (r[0], r[1]))
    totals = ["Total", "", *(sum((r[i] for r in rows), ZERO) for i in (2, 3, 4))]
    months = [add_months(first, i) for i in range(12)]
    return Report(
        key="remaining_performance_obligations", title="Remaining performance obligations",
        currency=params.currency,
        columns=["Customer", "Revenue contract", "Remaining", "Next 12 months", "Later"], rows=rows, totals=totals,
        chart=[Series("Expected recognition", [(label(m), by_month[m]) for m in months])], chart_kind="bar",
        description=(
            f"At the end of {as_of}: the allocated price not yet recognised of the obligations billed by then, "
            "per revenue contract, with when it is expected: ratable obligations by their schedule, undelivered "
            "items and anything overdue in the first month."
        ),
    )


# --- trial balance and journal -------------------------------------------------------------------------------


def trial_balance(params: ReportParams) -> Report:
    as_of = _as_of(params)
    sums = {
        r["account_id"]: (stored(r["debit"] or ZERO), stored(r["credit"] or ZERO))
        for r in JournalLine.objects.filter(
            entry__billing_entity_id=params.entity_id, entry__currency=params.currency, entry__entry_date__lte=as_of,
        ).values("account_id").annotate(debit=Sum("debit"), credit=Sum("credit")).order_by()
    }
    rows = []
    for account in Account.objects.filter(billing_entity_id=params.entity_id).order_by("code"):
        debit, credit = sums.get(account.pk, (ZERO, ZERO))
        side = account.normal_balance
        balance = debit - credit if side == "debit" else credit - debit
        rows.append([account.code, account.name, account.get_type_display(), side, debit, credit, balance])
    total_debit = sum((r[4] for r in rows), ZERO)
    total_credit = sum((r[5] for r in rows), ZERO)
    problems = []
    if total_debit != total_credit:
        cur = params.currency
        problems.append(f"{as_of}: debits {_m(total_debit, cur)} and credits {_m(total_credit, cur)} differ by "
                        f"{_m(total_debit - total_credit, cur)}.")
    return Report(
        key="trial_balance", title="Trial balance", currency=params.currency,
        columns=["Account code", "Account", "Type", "Normal side", "Debits", "Credits", "Balance"], rows=rows,
        totals=["Total", "", "", "", total_debit, total_credit, ""],
        chart=[Series("Balance", [(r[0], r[6]) for r in rows if r[6]])], chart_kind="bar", problems=problems,
        description=(
            f"Every account's debits and credits from the entries dated on or before {as_of}, and its balance on "
            "its normal side (negative: on the other side)."
        ),
    )


def journal(params: ReportParams) -> Report:
    start, end = _window(params)
    lines = JournalLine.objects.filter(
        entry__billing_entity_id=params.entity_id, entry__currency=params.currency,
        entry__entry_date__gte=start, entry__entry_date__lt=end,
    ).select_related("entry", "account", "customer", "product").order_by("entry__entry_date", "entry_id", "id")
    rows = []
    by_kind: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for line in lines:
        entry = line.entry
        rows.append([
            entry.pk, entry.entry_date, entry.original_date, entry.kind, entry.source_key, line.account.code,
            line.account.name, line.debit, line.credit, line.customer.external_id if line.customer else "",
            line.product.code if line.product else "", line.memo or entry.description,
        ])
        by_kind[entry.get_kind_display()] += line.debit
    return Report(
        key="journal", title="Journal", currency=params.currency,
        columns=["Entry", "Date", "Original date", "Kind", "Source", "Account code", "Account", "Debit", "Credit",
                 "Customer", "Product", "Memo"],
        rows=rows,
        totals=["Total", "", "", "", "", "", "", sum((r[7] for r in rows), ZERO), sum((r[8] for r in rows), ZERO),
                "", "", ""],
        chart=[Series("Debits by kind", sorted(by_kind.items()))], chart_kind="bar",
        description=f"The entries dated from {start} to the day before {end} with their lines.",
    )


# --- registry ------------------------------------------------------------------------------------------------

MONTHLY = ("start", "end")
RANGE = ("start", "end")
POINT = ("as_of",)

REPORTS: dict[str, ReportSpec] = {
    spec.key: spec for spec in (
        ReportSpec("waterfall", "Revenue waterfall", MONTHLY, waterfall),
        ReportSpec("deferred_rollforward", "Deferred revenue roll-forward", MONTHLY, deferred_rollforward),
        ReportSpec("recognised_by_product", "Recognised revenue by product", RANGE, recognised_by_product),
        ReportSpec("recognised_by_customer", "Recognised revenue by customer", RANGE, recognised_by_customer),
        ReportSpec("unbilled_revenue", "Unbilled revenue", POINT, unbilled_revenue),
        ReportSpec("remaining_performance_obligations", "Remaining performance obligations", POINT,
                   remaining_performance_obligations),
        ReportSpec("trial_balance", "Trial balance", POINT, trial_balance),
        ReportSpec("journal", "Journal", RANGE, journal),
    )
}
MONTHLY_REPORTS = frozenset({"waterfall", "deferred_rollforward"})


def check_params(key: str, params: ReportParams) -> None:
    """Refuse what a report cannot be built from, naming the parameter."""
    spec = REPORTS.get(key)
    if spec is None:
        raise BillingError(f"No report '{str(key)[:50]}'; choose one of {', '.join(REPORTS)}.", field="key")
    currency = params.currency or ""
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha() or not currency.isupper():
        raise BillingError("Use a three-letter ISO 4217 currency code such as USD.", field="currency")
    for name in spec.needs:
        value = getattr(params, name)
        if value is None:
            raise BillingError(f"The {spec.title.lower()} needs `{name}`.", field=name)
        if not MIN_DATE <= value <= MAX_DATE:
            raise BillingError(f"The date must be between {MIN_DATE} and {MAX_DATE}.", field=name)
    if "start" in spec.needs:
        start, end = _window(params)
        if end <= start:
            raise BillingError("The end must be after the start (the end day is not included).", field="end")
        if key in MONTHLY_REPORTS and len(months_between(start, end)) > MAX_MONTHS:
            raise BillingError(f"A monthly report covers at most {MAX_MONTHS} months.", field="end")
        if (end - start).days > MAX_DAYS:
            raise BillingError(f"A report covers at most {MAX_DAYS} days.", field="end")


def run_report(key: str, params: ReportParams) -> Report:
    check_params(key, params)
    spec = REPORTS[key]
    report = spec.build(params)
    report.parameters = {"entity_id": params.entity_id, "currency": params.currency,
                         **{name: getattr(params, name) for name in spec.needs}}
    return report

