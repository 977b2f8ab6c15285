"""Benchmark: rendering invoice PDFs (invoicing.pdf.render_invoice_pdf) in one process.

    .venv/bin/python bench/pdf/run.py                # 300 renders of a 20-line invoice
    .venv/bin/python bench/pdf/run.py --renders 1000 --lines 200

What it does:

1. Builds one finalized invoice in memory (unsaved model instances, no database): a seller and a buyer
   snapshot, --lines lines (default 20) mixing subscription fees, fixed charges and usage lines with a
   three-tier breakdown, a discount on some lines, two tax rates, a coupon and prepaid credit, and the
   legal mentions.
2. Renders it --warmup times (default 10, not counted: imports, font metrics and caches), then --renders
   times (default 300), timing each render with a monotonic clock.
3. Prints PDFs per second, mean / p50 / p95 / max wall milliseconds and the mean CPU milliseconds per PDF
   (process time: on a shared machine it moves far less with the load than wall time), the PDF size and page
   count, the peak RSS of the process (getrusage ru_maxrss) and the machine (CPU model, cores, memory, load
   average, Python and reportlab versions); writes them to bench/results/pdf.json (not versioned).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--save", type=Path, help="also write one rendered PDF to this path")
    return parser.parse_args()


def setup_django() -> None:
    # Rendering reads only the instances it is given: no database is opened.
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings.dev")
    import django

    django.setup()


def machine() -> dict:
    import reportlab

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "reportlab": reportlab.Version,
        "load_average_1_5_15_min_before": list(os.getloadavg()),
    }


def build_invoice(line_count: int) -> tuple:
    """A finalized USD invoice with `line_count` lines whose totals add up as the model's constraints demand."""
    from customers.models import BillingEntity, Customer
    from invoicing.models import Invoice, InvoiceLine
    from invoicing.pdf import party_snapshot_for_customer, party_snapshot_for_entity
    from invoicing.pricing.rounding import round_money

    entity = BillingEntity(
        code="bench", name="Northwind Cloud", legal_name="Northwind Cloud GmbH", country="DE",
        address_line1="Friedrichstraße 68", postal_code="10117", city="Berlin", tax_id="DE811907980",
        email="billing@northwind.example", default_currency="EUR", invoice_prefix="NW", credit_note_prefix="NWC",
    )
    customer = Customer(
        billing_entity=entity, external_id="cus_bench_0001", name="Contoso Analytics",
        legal_name="Contoso Analytics B.V.", country="NL", address_line1="Keizersgracht 123",
        postal_code="1015 CJ", city="Amsterdam", tax_id="NL123456789B01", currency="EUR",
        billing_emails=["ap@contoso.example"],
    )
    start, end = date(2026, 3, 1), date(2026, 4, 1)
    lines = []
    for position in range(line_count):
        kind = position % 4
        explanation: dict = {}
        discount = Decimal(0)
        if kind == 0:
            description, quantity, unit_price = f"Platform — Enterprise plan, workspace {position}", Decimal(1), \
                Decimal("1499.00")
            line_kind = InvoiceLine.Kind.SUBSCRIPTION_FEE
            discount = Decimal("149.90")
        elif kind == 1:
            description, quantity, unit_price = "Premium support (24/7, 1-hour response)", Decimal(1), \
                Decimal("250.00")
            line_kind = InvoiceLine.Kind.FIXED
        else:
            quantity = Decimal(1_250_000 + 37_123 * position)
            tiers = [
                ("first 100,000", Decimal(100_000), Decimal("0"), Decimal("0")),
                ("next 900,000", Decimal(900_000), Decimal("0.00012"), Decimal("10.00")),
                ("over 1,000,000", quantity - 1_000_000, Decimal("0.0000875"), Decimal("0")),
            ]
            explanation = {"tiers": [
                {"label": label, "units": str(units), "unit_price": str(price), "flat_fee": str(flat),
                 "amount": str(units * price + flat)}
                for label, units, price, flat in tiers
            ]}
            exact = sum((units * price + flat for _, units, price, flat in tiers), Decimal(0))
            unit_price = exact / quantity
            description = f"API requests, region eu-central-{position % 3 + 1} (graduated)"
            line_kind = InvoiceLine.Kind.USAGE
        amount = round_money(quantity * unit_price, "EUR")
        lines.append(InvoiceLine(
            position=position, kind=line_kind, description=description, customer=customer,
            period_start=start, period_end=end, quantity=quantity,
            unit_price=unit_price.quantize(Decimal("1e-12")), amount=amount, discount_amount=discount,
            tax_percent=Decimal("19"), tax_treatment="standard", explanation=explanation,
        ))
    subtotal = sum((line.amount for line in lines), Decimal(0))
    discount_total = sum((line.discount_amount for line in lines), Decimal(0))
    taxable = subtotal - discount_total
    tax = round_money(taxable * Decimal("0.19"), "EUR")
    total = subtotal - discount_total + tax
    prepaid = min(Decimal("500.00"), total)
    invoice = Invoice(
        pk=None, billing_entity=entity, customer=customer, status=Invoice.Status.FINALIZED, currency="EUR",
        number="NW-2026-000123", sequence_number=123, issue_date=end, due_date=end + timedelta(days=30),
        period_start=start, period_end=end, subtotal=subtotal, discount_total=discount_total, tax_total=tax,
        total=total, prepaid_credit_applied=prepaid, amount_due=total - prepaid,
        discount_breakdown=[{"label": "Enterprise agreement 10 % on platform fees", "amount": str(discount_total)}],
        tax_breakdown=[{"name": "VAT DE", "percent": "19", "taxable_amount": str(taxable), "tax_amount": str(tax),
                        "treatment": "standard"}],
        mentions=["Late payments bear interest at 9 percentage points above the base rate (§ 288 BGB).",
                  "Northwind Cloud GmbH, Amtsgericht Berlin HRB 123456, managing director: A. Example."],
        seller=party_snapshot_for_entity(entity), buyer=party_snapshot_for_customer(customer),
        finalized_at=datetime(2026, 4, 1, 6, 0, tzinfo=UTC),
    )
    return invoice, lines


def main() -> None:
    args = parse_args()
    setup_django()
    from invoicing.pdf import render_invoice_pdf

    info = machine()
    invoice, lines = build_invoice(args.lines)
    pdf = b""
    for _ in range(args.warmup):
        pdf = render_invoice_pdf(invoice, lines=lines)
    timings: list[float] = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    for _ in range(args.renders):
        t0 = time.perf_counter()
        pdf = render_invoice_pdf(invoice, lines=lines)
        timings.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - started
    # CPU time of the process: on a shared machine it moves far less with the load than wall time does.
    cpu_ms = (time.process_time() - cpu_started) * 1000 / args.renders
    # Each page object is written as "/Type /Page" (the page tree is "/Type /Pages").
    pages = len(re.findall(rb"/Type /Page\b(?!s)", pdf))
    if args.save:
        args.save.write_bytes(pdf)
    timings.sort()
    results = {
        "renders": args.renders,
        "lines_per_invoice": args.lines,
        "pdfs_per_second": args.renders / wall,
        "mean_ms": statistics.fmean(timings),
        "p50_ms": timings[len(timings) // 2],
        "p95_ms": timings[min(len(timings) - 1, int(len(timings) * 0.95))],
        "max_ms": timings[-1],
        "cpu_ms_per_pdf": cpu_ms,
        "pdf_bytes": len(pdf),
        "pages": pages,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    info["load_average_1_5_15_min_after"] = list(os.getloadavg())
    print("machine:")
    for key, value in info.items():
        print(f"  {key}: {value}")
    print(f"\ninvoice PDF, {args.lines} lines, {args.renders} renders in one process:")
    print(f"  {results['pdfs_per_second']:.1f} PDFs/s")
    print(f"  per PDF: mean {results['mean_ms']:.2f} ms, p50 {results['p50_ms']:.2f} ms, "
          f"p95 {results['p95_ms']:.2f} ms, max {results['max_ms']:.2f} ms; CPU {cpu_ms:.2f} ms")
    print(f"  PDF size: {results['pdf_bytes']:,} bytes, {pages} page(s)")
    print(f"  peak RSS: {results['peak_rss_mib']:.1f} MiB")
    out = ROOT / "bench" / "results" / "pdf.json"  # bench/results/ is not versioned
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    print(f"(figures also written to {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
