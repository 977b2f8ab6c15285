"""The data set of the cycle-close benchmark, built in bulk (bulk_create and COPY), not through the services.

Two billing entities (US seller in USD, German seller in EUR), three tax rates, six meters, twenty plans whose
charges cover every charge model (some grouped, filtered, with minimums), N customers with one monthly
calendar-anchored subscription each (started 2026-10-01, one phase row each), coupons applied to one customer
in ten, and the October 2026 usage events COPY'd into the partitioned event table, with the hourly rollups
built from them by one INSERT ... SELECT, as ingestion would have kept them.
"""

from __future__ import annotations

import io
import random
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

START = date(2026, 10, 1)
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH_SECONDS = 31 * 86_400
RECEIVED = "2026-10-31 23:59:00+00"

# code, aggregation, field, properties of an event
METERS = [
    ("bx_api_calls", "count", ""),
    ("bx_tokens", "sum", "tokens"),
    ("bx_storage_gb", "max", "gb"),
    ("bx_active_users", "unique_count", "user"),
    ("bx_payments", "sum", "amount"),
    ("bx_seats", "latest", "seats"),
]


def _tiers(*rows: tuple[str | None, str, str]) -> list[dict]:
    return [{"up_to": up_to, "unit_price": price, "flat_fee": flat} for up_to, price, flat in rows]


def _rate_tiers(*rows: tuple[str | None, str, str]) -> list[dict]:
    return [{"up_to": up_to, "rate": rate, "flat_fee": flat} for up_to, rate, flat in rows]


# name: (meter, charge model, properties, filters, group_by, minimum amount)
CHARGES: dict[str, tuple[str, str, dict, dict, list, str | None]] = {
    "standard": ("bx_api_calls", "standard", {"unit_price": "0.0010"}, {}, [], None),
    "graduated": ("bx_tokens", "graduated", {"tiers": _tiers(("20000", "0.00002", "0"), ("100000", "0.000015", "0"),
                                                           (None, "0.00001", "5"))}, {}, [], None),
    "volume": ("bx_active_users", "volume", {"tiers": _tiers(("10", "2.00", "0"), ("50", "1.50", "0"),
                                                             (None, "1.00", "10"))}, {}, [], None),
    "package": ("bx_api_calls", "package", {"package_size": "100", "package_price": "1.50", "free_units": "20"},
                {}, [], None),
    "percentage": ("bx_payments", "percentage", {"rate": "2.9"}, {}, [], None),
    "percentage_per_txn": ("bx_payments", "percentage",
                           {"rate": "2.5", "fixed_fee": "0.30", "per_transaction_min_amount": "0.50"}, {}, [], None),
    "graduated_percentage": ("bx_payments", "graduated_percentage",
                             {"tiers": _rate_tiers(("5000", "3.0", "0"), (None, "2.0", "10"))}, {}, [], None),
    "tokens_by_region": ("bx_tokens", "standard", {"unit_price": "0.00001"}, {}, ["region"], None),
    "tokens_eu_us_by_model": ("bx_tokens", "graduated", {"tiers": _tiers(("50000", "0.00003", "0"),
                                                                         (None, "0.00002", "0"))},
                              {"region": ["eu", "us"]}, ["model"], None),
    "storage_minimum": ("bx_storage_gb", "standard", {"unit_price": "0.10"}, {}, [], "5"),
    "seats_latest": ("bx_seats", "standard", {"unit_price": "4.00"}, {}, [], None),
}
# Twenty plans: (currency, base fee, timing, plan minimum, charges); every charge model appears in both currencies.
PLANS: list[tuple[str, str, str, str | None, list[str]]] = [
    ("USD", "29.00", "advance", None, ["standard", "graduated"]),
    ("USD", "49.00", "advance", None, ["volume", "package"]),
    ("USD", "99.00", "arrears", None, ["percentage", "storage_minimum"]),
    ("USD", "0", "advance", "25", ["percentage_per_txn", "standard"]),
    ("USD", "199.00", "advance", None, ["graduated_percentage", "tokens_by_region"]),
    ("USD", "15.00", "arrears", None, ["tokens_eu_us_by_model", "seats_latest"]),
    ("USD", "79.00", "advance", "150", ["graduated", "volume", "package"]),
    ("USD", "9.00", "advance", None, ["standard"]),
    ("USD", "59.00", "arrears", None, ["percentage", "graduated_percentage"]),
    ("USD", "299.00", "advance", None, ["tokens_by_region", "storage_minimum", "seats_latest"]),
    ("USD", "39.00", "advance", None, ["package", "percentage_per_txn"]),
    ("USD", "19.00", "arrears", None, ["volume", "tokens_eu_us_by_model"]),
    ("EUR", "25.00", "advance", None, ["standard", "graduated"]),
    ("EUR", "45.00", "advance", None, ["volume", "package"]),
    ("EUR", "89.00", "arrears", None, ["percentage", "storage_minimum"]),
    ("EUR", "0", "advance", "20", ["percentage_per_txn", "standard"]),
    ("EUR", "179.00", "advance", None, ["graduated_percentage", "tokens_by_region"]),
    ("EUR", "12.00", "arrears", None, ["tokens_eu_us_by_model", "seats_latest"]),
    ("EUR", "69.00", "advance", "120", ["graduated", "volume", "package"]),
    ("EUR", "249.00", "advance", None, ["tokens_by_region", "seats_latest", "storage_minimum"]),
]


def build(n_customers: int, n_events: int, rng: random.Random, *, us_grace_days: int, eu_grace_days: int) -> dict:
    """Load everything into the (freshly migrated, empty) database; returns timings in seconds."""
    from django.db import connection

    from contracts.models import Charge, Coupon, Plan, PlanVersion, Product, Subscription, SubscriptionPhase
    from customers.models import BillingEntity, Customer
    from invoicing.models import AppliedCoupon, TaxRate
    from usage.models import Meter
    from usage.partitions import ensure_partitions

    timings: dict[str, float] = {}
    began = time.perf_counter()
    us = BillingEntity.objects.create(
        code="bench-us", name="Bench Cloud Inc.", legal_name="Bench Cloud Inc.", country="US", state="NY",
        city="New York", tax_id="US-12-3456789", default_currency="USD", timezone="America/New_York",
        invoice_prefix="BUS", credit_note_prefix="BUSCN", invoice_grace_days=us_grace_days,
    )
    eu = BillingEntity.objects.create(
        code="bench-eu", name="Bench Cloud GmbH", legal_name="Bench Cloud GmbH", country="DE", city="Berlin",
        tax_id="DE123456789", default_currency="EUR", timezone="Europe/Berlin", invoice_prefix="BEU",
        credit_note_prefix="BEUCN", invoice_grace_days=eu_grace_days,
    )
    TaxRate.objects.bulk_create([
        TaxRate(name="New York sales tax", country="US", region="NY", percent=Decimal("8.875")),
        TaxRate(name="USt 19 %", country="DE", percent=Decimal("19")),
        TaxRate(name="TVA 20 %", country="FR", percent=Decimal("20")),
    ])
    product = Product.objects.create(code="bench-platform", name="Bench platform")
    meters = {
        code: Meter.objects.create(code=code, name=code.removeprefix("bx_").replace("_", " "), aggregation=agg,
                                   field_name=field)
        for code, agg, field in METERS
    }
    published = datetime(2026, 9, 1, tzinfo=UTC)
    versions: dict[str, list[PlanVersion]] = {"USD": [], "EUR": []}
    plan_meters: dict[int, list[int]] = {}
    for index, (currency, fee, timing, minimum, charges) in enumerate(PLANS):
        plan = Plan.objects.create(code=f"bench-plan-{index:02d}", name=f"Bench plan {index:02d}", product=product,
                                   currency=currency)
        version = PlanVersion.objects.create(
            plan=plan, version=1, status=PlanVersion.Status.PUBLISHED, published_at=published,
            base_fee=(Decimal(fee), currency), base_fee_timing=timing,
            minimum_commitment=(Decimal(minimum), currency) if minimum else None,
        )
        for position, name in enumerate(charges):
            meter, model, properties, filters, group_by, charge_minimum = CHARGES[name]
            Charge.objects.create(
                plan_version=version, meter=meters[meter], charge_model=model, properties=properties,
                filters=filters, group_by=group_by, position=position, display_name=name.replace("_", " "),
                minimum_amount=(Decimal(charge_minimum), currency) if charge_minimum else None,
            )
        versions[currency].append(version)
        plan_meters[version.pk] = sorted({meters[CHARGES[name][0]].pk for name in charges})
    coupons = {
        "USD": [
            Coupon.objects.create(code="bench-10-forever", name="10 % forever", discount_type="percentage",
                                  percent_off=Decimal("10"), duration="forever"),
            Coupon.objects.create(code="bench-usd-5-once", name="5 USD once", discount_type="fixed",
                                  amount_off=(Decimal("5"), "USD"), duration="once"),
        ],
        "EUR": [
            Coupon.objects.create(code="bench-20-3-periods", name="20 % for 3 periods", discount_type="percentage",
                                  percent_off=Decimal("20"), duration="repeating", duration_periods=3),
            Coupon.objects.create(code="bench-eur-5-once", name="5 EUR once", discount_type="fixed",
                                  amount_off=(Decimal("5"), "EUR"), duration="once"),
        ],
    }
    coupons["EUR"][0].applies_to_plans.set([v.plan for v in versions["EUR"][:5]])
    ensure_partitions(date(2026, 9, 1), 3)
    timings["catalog"] = time.perf_counter() - began

    # Customers: 60 % US (two thirds in New York, taxed; the rest in California, no rate), 40 % EU (Germany,
    # French consumers at 20 %, French businesses with a VAT id: reverse charge).
    began = time.perf_counter()
    zones = {name: ZoneInfo(name) for name in ("UTC", "America/New_York", "Europe/Berlin", "Europe/Paris")}
    customers = []
    for index in range(n_customers):
        if index % 5 < 3:
            state = "NY" if index % 3 else "CA"
            customers.append(Customer(
                billing_entity=us, external_id=f"bc-{index:06d}", name=f"Bench customer {index}", country="US",
                state=state, currency="USD", timezone=zones["America/New_York" if index % 2 else "UTC"],
            ))
        else:
            kind = index % 3
            customers.append(Customer(
                billing_entity=eu, external_id=f"bc-{index:06d}", name=f"Bench customer {index}",
                country="DE" if kind == 0 else "FR", currency="EUR",
                kind="individual" if kind == 1 else "business", tax_id=f"FR{index:011d}" if kind == 2 else "",
                timezone=zones["Europe/Berlin" if kind == 0 else "Europe/Paris"],
            ))
    Customer.objects.bulk_create(customers, batch_size=5000)
    subscriptions, phases, applied = [], [], []
    customer_meters: list[tuple[int, list[int]]] = []
    for index, customer in enumerate(customers):
        version = rng.choice(versions[customer.currency])
        quantity = Decimal(rng.choice((1, 1, 1, 2, 3, 5, 10)))
        subscriptions.append(Subscription(
            customer=customer, plan_version=version, external_id=f"bs-{index:06d}", quantity=quantity,
            status=Subscription.Status.ACTIVE, billing_anchor=Subscription.Anchor.CALENDAR, start_date=START,
        ))
        customer_meters.append((customer.pk, plan_meters[version.pk]))
        if index % 10 == 7:
            applied.append(AppliedCoupon(customer=customer, coupon=coupons[customer.currency][index % 20 == 7],
                                         created_by="bench"))
    Subscription.objects.bulk_create(subscriptions, batch_size=5000)
    for sub in subscriptions:
        phases.append(SubscriptionPhase(subscription=sub, plan_version_id=sub.plan_version_id, quantity=sub.quantity,
                                        start_date=START))
    SubscriptionPhase.objects.bulk_create(phases, batch_size=5000)
    AppliedCoupon.objects.bulk_create(applied, batch_size=5000)
    timings["customers_subscriptions"] = time.perf_counter() - began

    began = time.perf_counter()
    aggregation_of = {meters[code].pk: agg for code, agg, _field in METERS}
    field_of = {meters[code].pk: field for code, _agg, field in METERS}
    _copy_events(n_events, rng, customer_meters, aggregation_of, field_of)
    timings["events_copy"] = time.perf_counter() - began

    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET work_mem = '512MB'")
        cursor.execute(
            """
            INSERT INTO usage_usagehourlyrollup
                (customer_id, meter_id, hour, event_count, value_sum, value_max,
                 latest_timestamp, latest_value, latest_event_id)
            SELECT DISTINCT ON (customer_id, meter_id, hour)
                   customer_id, meter_id, hour, count(*) OVER w, coalesce(sum(value) OVER w, 0), max(value) OVER w,
                   "timestamp", value, id
            FROM (SELECT customer_id, meter_id, date_trunc('hour', "timestamp", 'UTC') AS hour, "timestamp", value, id
                  FROM usage_usageevent) AS events
            WINDOW w AS (PARTITION BY customer_id, meter_id, hour)
            ORDER BY customer_id, meter_id, hour, "timestamp" DESC, id DESC
            """
        )
        timings["rollup_rows"] = cursor.rowcount
        cursor.execute("RESET work_mem")
    timings["rollups"] = time.perf_counter() - began
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    timings["vacuum_analyze"] = time.perf_counter() - began
    return timings


def _copy_events(n_events: int, rng: random.Random, customer_meters: list[tuple[int, list[int]]],
                 aggregation_of: dict[int, str], field_of: dict[int, str]) -> None:
    """Text COPY in 50,000-row chunks; PostgreSQL routes each row to October's partition. Skewed like real usage
    (customer rank r gets a share ~ 1/sqrt(r)); each event is on one of the meters its customer's plan charges."""
    from django.db import connection

    days = [f"2026-10-{day:02d}" for day in range(1, 32)]
    minutes = [f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60)]
    regions, models = ("eu", "us", "apac"), ("large", "small")
    n = len(customer_meters)
    random_, randrange = rng.random, rng.randrange
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cursor, cursor.copy(
        'COPY usage_usageevent (transaction_id, customer_id, meter_id, "timestamp", properties, value, '
        "received_at, source) FROM STDIN"
    ) as copy:
        buffer = io.StringIO()
        write = buffer.write
        for index in range(n_events):
            customer_id, meter_ids = customer_meters[int(n * random_() ** 2)]
            meter_id = meter_ids[index % len(meter_ids)]
            seconds, micros = divmod(int(random_() * MONTH_SECONDS * 1_000_000), 1_000_000)
            day, seconds = divmod(seconds, 86_400)
            minute, second = divmod(seconds, 60)
            moment = f"{days[day]} {minutes[minute]}{second:02d}.{micros:06d}+00"
            aggregation = aggregation_of[meter_id]
            region = regions[index % 3]
            if aggregation == "count":
                properties, value = f'{{"region": "{region}"}}', "\\N"
            elif aggregation == "sum":
                amount = randrange(1, 5000)
                field = field_of[meter_id]
                properties = f'{{"model": "{models[index % 2]}", "region": "{region}", "{field}": {amount}}}'
                value = str(amount)
            elif aggregation == "max":
                gb = randrange(1, 200)
                properties, value = f'{{"gb": {gb}}}', str(gb)
            elif aggregation == "latest":
                seats = randrange(1, 50)
                properties, value = f'{{"seats": {seats}}}', str(seats)
            else:
                properties, value = f'{{"user": "u{randrange(0, 80)}"}}', "\\N"
            write(f"bc-{index}\t{customer_id}\t{meter_id}\t{moment}\t{properties}\t{value}\t{RECEIVED}\tapi\n")
            if index % 50_000 == 49_999:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
                write = buffer.write
                if index % 2_000_000 == 1_999_999:
                    print(f"    {index + 1:,} events", flush=True)
        copy.write(buffer.getvalue())
    raw.commit()
