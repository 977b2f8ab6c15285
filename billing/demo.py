"""Demo data: a believable seller, Northwind Cloud, with its catalog, customers, contracts and subscriptions.

Everything goes through the domain services (the same ones the admin and the API call), so the demo
obeys every rule and leaves the same audit trail as real use; only rows that have no service (products,
features, coupons) are created directly, after full validation.

History is replayed on a simulated clock: each step runs with a `now` in the past, in date order, and
before each step the scheduled changes that have come due (trial ends, period-end downgrades, renewals,
term ends) are applied as the beat task would have applied them. Dates are relative to the `now` the
builder is given, and every other choice comes from a seeded random generator, so the same `now` gives
the same data.

Invoicing is replayed on the same clock: usage events arrive through ingestion, coupons, credits, a prepaid
wallet, a one-off charge and an installment plan are given through the invoicing services, and the cycle
close runs on the first of each of the last three months (drafts of the US entity are finalized when their
grace period ends, as the beat task does). The current period is left open, and at least one subscription's
period (a bill-cycle day of yesterday) has ended since the last close, so a close "as of now" in the admin
produces new invoices, one of them with late usage.
"""

import random
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from djmoney.money import Money

from billing.actors import Actor
from billing.demo_receivables import ReceivablesStory
from billing.demo_revenue import RevenueStory
from contracts.models import (
    Charge,
    Contract,
    ContractCommitment,
    ContractPrice,
    Coupon,
    Feature,
    FixedCharge,
    Plan,
    PlanVersion,
    Product,
    Subscription,
)
from contracts.periods import add_months
from contracts.services import catalog, contracts, subscriptions
from customers import services as customer_services
from customers.models import BillingEntity, Customer
from invoicing.models import (
    AppliedCoupon,
    BankStatement,
    BankStatementLine,
    CreditGrant,
    CreditNote,
    DunningAction,
    Invoice,
    Payment,
    PendingCharge,
    TaxRate,
    Wallet,
)
from invoicing.services import credits
from invoicing.services.cycle import run_cycle_close_inline
from invoicing.services.documents import finalize_due_drafts
from revrec.models import AccountingPeriod, JournalEntry, PerformanceObligation
from usage import services as meter_services
from usage.ingestion import ACCEPTED, ingest_events
from usage.models import Meter, UsageEvent

SEED = 20240601
DEMO_ACTOR = Actor.system("demo-data")
CLOCK_ACTOR = Actor.system("beat:apply_due_subscription_changes")
CLOSE_ACTOR = Actor.system("beat:start_cycle_close")
FINALIZE_ACTOR = Actor.system("beat:finalize_due_drafts")
# Cycle closes replayed in the past (one a month), the last on the first of the current month.
HISTORICAL_CLOSES = 3
# The last replayed close is at least this long before `now`, so a close "as of now" has periods to bill;
# early in a month the replayed closes move back a month (and that whole month is left to close).
OPEN_WINDOW = timedelta(days=2)
GRACE_DAYS = {"us": 2, "eu": 0}


def demo_data_present() -> bool:
    """The demo only goes into an empty database: any billing entity or customer means real data."""
    return BillingEntity.objects.exists() or Customer.objects.exists()


@dataclass
class DemoSummary:
    created: bool
    counts: dict[str, int] = field(default_factory=dict)
    subscription_statuses: dict[str, int] = field(default_factory=dict)
    todays_statement: bytes = b""  # a bank statement paying some open invoices, to import in the admin

    def lines(self) -> list[str]:
        if not self.created:
            return ["The database already has data: demo data not loaded."]
        lines = [f"{name}: {count}" for name, count in self.counts.items()]
        statuses = ", ".join(f"{status} {n}" for status, n in sorted(self.subscription_statuses.items()))
        lines.append(f"subscriptions by status: {statuses}")
        return lines


def load_demo_data(*, now: datetime | None = None) -> DemoSummary:
    """Build the demo company in one transaction; does nothing if the database already has data."""
    from django.utils import timezone

    now = now or timezone.now()
    with transaction.atomic():
        if demo_data_present():
            return DemoSummary(created=False)
        builder = _DemoBuilder(now)
        builder.build()
    return DemoSummary(
        created=True,
        todays_statement=builder.todays_statement,
        counts={
            "billing entities": BillingEntity.objects.count(),
            "customers": Customer.objects.count(),
            "products": Product.objects.count(),
            "features": Feature.objects.count(),
            "meters": Meter.objects.count(),
            "plans": Plan.objects.count(),
            "plan versions": PlanVersion.objects.count(),
            "usage charges": Charge.objects.count(),
            "fixed charges": FixedCharge.objects.count(),
            "coupons": Coupon.objects.count(),
            "contracts": Contract.objects.count(),
            "negotiated prices": ContractPrice.objects.count(),
            "commitments": ContractCommitment.objects.count(),
            "subscriptions": Subscription.objects.count(),
            "tax rates": TaxRate.objects.count(),
            "applied coupons": AppliedCoupon.objects.count(),
            "promotional credits": CreditGrant.objects.count(),
            "prepaid wallets": Wallet.objects.count(),
            "one-off charges and installments": PendingCharge.objects.count(),
            "usage events": UsageEvent.objects.count(),
            "invoices": Invoice.objects.count(),
            "finalized invoices": Invoice.objects.exclude(number__isnull=True).count(),
            "paid invoices": Invoice.objects.filter(status=Invoice.Status.PAID).count(),
            "payments": Payment.objects.count(),
            "bank statements": BankStatement.objects.count(),
            "unmatched bank lines": BankStatementLine.objects.filter(status="unmatched").count(),
            "credit notes": CreditNote.objects.count(),
            "dunning actions": DunningAction.objects.count(),
            "performance obligations": PerformanceObligation.objects.count(),
            "journal entries": JournalEntry.objects.count(),
            "closed accounting periods": AccountingPeriod.objects.filter(status="closed").count(),
        },
        subscription_statuses=dict(Counter(Subscription.objects.values_list("status", flat=True))),
    )


# --- the company's customers ----------------------------------------------------------------------------

# (key, name, country, timezone, options). Keys become external ids ("cus_<key>").
US_CUSTOMERS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("globex", "Globex Holdings", "US", "America/New_York", {"segment": "enterprise", "terms": 45}),
    ("globex-ca", "Globex Canada", "CA", "America/Toronto", {"parent": "globex", "invoice_to_parent": True}),
    ("globex-br", "Globex Brasil", "BR", "America/Sao_Paulo", {"parent": "globex", "invoice_to_parent": True}),
    ("initech", "Initech Group", "US", "America/Chicago", {"segment": "enterprise", "terms": 60}),
    ("initech-labs", "Initech Labs", "US", "America/Denver", {"parent": "initech"}),
    ("lakeside-u", "Lakeside University", "US", "America/Chicago",
     {"exempt": "State university: sales-tax exemption certificate EX-2291 on file"}),
    ("open-harbor", "Open Harbor Foundation", "US", "America/Los_Angeles",
     {"exempt": "501(c)(3) non-profit: exemption letter on file"}),
    ("pinecrest", "Pinecrest Analytics", "US", "America/Los_Angeles", {}),
    ("bluefin", "Bluefin Robotics", "US", "America/New_York", {}),
    ("copperline", "Copperline Health", "US", "America/Phoenix", {"segment": "mid-market"}),
    ("redwood", "Redwood Ledger", "US", "America/Los_Angeles", {}),
    ("summit", "Summit Freight", "US", "America/Denver", {}),
    ("mapleleaf", "Maple Leaf Media", "CA", "America/Vancouver", {}),
    ("aurora", "Aurora Fintech", "CA", "America/Toronto", {"segment": "mid-market"}),
    ("sakura", "Sakura Devices KK", "JP", "Asia/Tokyo", {}),
    ("kangaroo", "Kangaroo Logistics Pty Ltd", "AU", "Australia/Sydney", {}),
    ("andes", "Andes Mining Data SpA", "CL", "America/Santiago", {}),
    ("coyote", "Coyote Games", "MX", "America/Mexico_City", {}),
    ("harborview", "Harborview Hotels", "US", "Pacific/Honolulu", {}),
    ("ironclad", "Ironclad Security", "US", "America/New_York", {"segment": "enterprise"}),
    ("quartz", "Quartz Labs", "US", "America/Los_Angeles", {}),
    ("tidewater", "Tidewater Energy", "US", "America/Chicago", {"segment": "mid-market"}),
    ("northstar", "Northstar Clinics", "US", "America/Anchorage", {}),
    ("lumen", "Lumen AI", "US", "America/Los_Angeles", {"segment": "mid-market"}),
    ("granite", "Granite Payments", "US", "America/New_York", {}),
    ("whitfield", "Dana Whitfield", "US", "America/New_York", {"individual": True}),
    ("lioncity", "Lion City Commerce Pte Ltd", "SG", "Asia/Singapore", {}),
    ("monsoon", "Monsoon Software Pvt Ltd", "IN", "Asia/Kolkata", {}),
]

EU_CUSTOMERS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("hansa", "Hansa Gruppe AG", "DE", "Europe/Berlin", {"segment": "enterprise", "terms": 45}),
    ("hansa-logistik", "Hansa Logistik GmbH", "DE", "Europe/Berlin", {"parent": "hansa", "invoice_to_parent": True}),
    ("hansa-fr", "Hansa France SAS", "FR", "Europe/Paris", {"parent": "hansa", "invoice_to_parent": True}),
    ("nordlicht", "Nordlicht Media GmbH", "DE", "Europe/Berlin", {"segment": "mid-market"}),
    ("lumiere", "Atelier Lumière SARL", "FR", "Europe/Paris", {}),
    ("tulip", "Tulip Data BV", "NL", "Europe/Amsterdam", {"segment": "enterprise"}),
    ("open-kennis", "Stichting Open Kennis", "NL", "Europe/Amsterdam",
     {"exempt": "Charitable foundation (ANBI status): VAT exemption confirmed"}),
    ("solymar", "Sol y Mar Turismo SL", "ES", "Europe/Madrid", {}),
    ("vespa", "Vespa Digitale Srl", "IT", "Europe/Rome", {}),
    ("shamrock", "Shamrock Analytics Ltd", "IE", "Europe/Dublin", {}),
    ("fjord", "Fjord Energi AB", "SE", "Europe/Stockholm", {"segment": "mid-market"}),
    ("wisla", "Wisła Software sp. z o.o.", "PL", "Europe/Warsaw", {}),
    ("alpenblick", "Alpenblick Versicherung AG", "AT", "Europe/Vienna", {}),
    ("lusitania", "Lusitania Pagamentos Lda", "PT", "Europe/Lisbon", {}),
    ("baltic", "Baltic Freight OÜ", "EE", "Europe/Tallinn", {}),
    ("helvetia", "Helvetia Precision AG", "CH", "Europe/Zurich", {}),
    ("thames", "Thames Quant Ltd", "GB", "Europe/London", {}),
    ("aegean", "Aegean Shipping SA", "GR", "Europe/Athens", {}),
    ("danube", "Danube Health Kft", "HU", "Europe/Budapest", {}),
    ("cph-bikes", "Copenhagen Bikes ApS", "DK", "Europe/Copenhagen", {}),
    ("uav", "Universidad Abierta de Valencia", "ES", "Europe/Madrid",
     {"exempt": "Public university: exempt under Art. 20 Ley 37/1992"}),
    ("novak", "Klara Novak", "CZ", "Europe/Prague", {"individual": True}),
    ("bruxelles-legal", "Bruxelles Legal SRL", "BE", "Europe/Brussels", {}),
    ("helsinki-games", "Helsinki Games Oy", "FI", "Europe/Helsinki", {}),
]

FIRST_NAMES = ["Maria", "James", "Aiko", "Lukas", "Sofia", "Daniel", "Chloé", "Mateo", "Priya", "Oliver",
               "Emma", "Noah", "Ingrid", "Pieter", "Giulia", "Seán", "Zofia", "Kenji", "Amara", "Lars"]
LAST_NAMES = ["Garcia", "Smith", "Tanaka", "Müller", "Rossi", "Johnson", "Dubois", "Silva", "Patel", "Brown",
              "Jansen", "Novak", "Kowalski", "O'Brien", "Lindqvist", "Nakamura", "Okafor", "Larsen", "Weber", "Costa"]
CITIES = {
    "US": ("New York", "NY", "10001"), "CA": ("Toronto", "ON", "M5H 2N2"), "BR": ("São Paulo", "SP", "01310-100"),
    "JP": ("Tokyo", "", "100-0005"), "AU": ("Sydney", "NSW", "2000"), "CL": ("Santiago", "", "8320000"),
    "MX": ("Ciudad de México", "CDMX", "06600"), "SG": ("Singapore", "", "018956"), "IN": ("Bengaluru", "KA", "560001"),
    "DE": ("Berlin", "", "10115"), "FR": ("Paris", "", "75002"), "NL": ("Amsterdam", "", "1012 AB"),
    "ES": ("Madrid", "", "28013"), "IT": ("Milano", "MI", "20121"), "IE": ("Dublin", "", "D02 X285"),
    "SE": ("Stockholm", "", "111 52"), "PL": ("Warszawa", "", "00-001"), "AT": ("Wien", "", "1010"),
    "PT": ("Lisboa", "", "1100-148"), "EE": ("Tallinn", "", "10111"), "CH": ("Zürich", "ZH", "8001"),
    "GB": ("London", "", "EC2V 7HH"), "GR": ("Athína", "", "105 57"), "HU": ("Budapest", "", "1051"),
    "DK": ("København", "", "1050"), "CZ": ("Praha", "", "110 00"), "BE": ("Bruxelles", "", "1000"),
    "FI": ("Helsinki", "", "00100"),
}
# US customers live in the state of their timezone's big city: sales tax depends on the state (NY only here).
US_CITIES = {
    "America/New_York": ("New York", "NY", "10001"), "America/Chicago": ("Chicago", "IL", "60601"),
    "America/Denver": ("Denver", "CO", "80202"), "America/Phoenix": ("Phoenix", "AZ", "85004"),
    "America/Los_Angeles": ("San Francisco", "CA", "94105"), "America/Anchorage": ("Anchorage", "AK", "99501"),
    "Pacific/Honolulu": ("Honolulu", "HI", "96813"),
}
STREETS = ["Market Street", "Harbor Road", "Main Street", "Station Square", "Park Avenue", "Mill Lane"]
# The EU VAT prefix differs from the ISO country code for Greece.
VAT_PREFIX = {"GR": "EL"}
EU_COUNTRIES = {"DE", "FR", "NL", "ES", "IT", "IE", "SE", "PL", "AT", "PT", "EE", "GR", "HU", "DK", "CZ", "BE", "FI"}


def mailbox(name: str) -> str:
    """An ASCII mailbox name from a person's name ("Chloé O'Brien" -> "chloe.obrien")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_name.lower() if c.isalnum() or c == ".")


@dataclass(frozen=True)
class SubRef:
    """A subscription made by an earlier step of the clock, looked up fresh when a later step needs it."""

    external_id: str

    def get(self) -> Subscription:
        return Subscription.objects.select_related("customer").get(external_id=self.external_id)


class _DemoBuilder:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.today = now.astimezone(UTC).date()
        self.rng = random.Random(SEED)  # noqa: S311 (reproducible demo data, not secrets)
        self.steps: list[tuple[datetime, int, Callable[[datetime], Any]]] = []
        self.entities: dict[str, BillingEntity] = {}
        self.customers: dict[str, Customer] = {}
        self.products: dict[str, Product] = {}
        self.features: dict[str, Feature] = {}
        self.meters: dict[str, Meter] = {}
        self.versions: dict[str, PlanVersion] = {}  # "plan-code" or "plan-code@2"
        self.sub_count = 0
        self.operator = DEMO_ACTOR
        self.finance = DEMO_ACTOR

    # --- time -------------------------------------------------------------------------------------------

    def ago(self, days: int) -> date:
        return self.today - timedelta(days=days)

    def month_start(self, months_ago: int) -> date:
        return add_months(self.today.replace(day=1), -months_ago)

    @staticmethod
    def at(day: date, hour: int = 12) -> datetime:
        # Midday UTC is the same calendar day from Honolulu to Sydney, so "created on day D" reads true.
        return datetime.combine(day, time(hour), tzinfo=UTC)

    def later(self, when: date | datetime, step: Callable[[datetime], Any]) -> None:
        moment = when if isinstance(when, datetime) else self.at(when)
        if moment > self.now:
            raise ValueError(f"A demo step at {moment} would be in the future of {self.now}.")
        self.steps.append((moment, len(self.steps), step))

    def run_clock(self) -> None:
        for moment, _, step in sorted(self.steps, key=lambda s: (s[0], s[1])):
            subscriptions.apply_due_changes(now=moment, actor=CLOCK_ACTOR)
            step(moment)
        subscriptions.apply_due_changes(now=self.now, actor=CLOCK_ACTOR)

    # --- the whole company ------------------------------------------------------------------------------

    def build(self) -> None:
        self.staff()
        self.billing_entities()
        self.catalog()
        self.coupons()
        self.tax_rates()
        self.all_customers()
        self.stories()
        self.invoicing()
        self.receivables = ReceivablesStory(self)
        self.receivables.plan(self.close_moments())
        self.revenue = RevenueStory(self)
        self.revenue.plan(self.close_moments())
        self.run_clock()
        self.todays_statement = self.receivables.current_statement_csv()

    def staff(self) -> None:
        """Two finance users (no password: they exist so the audit trail names people, not only tasks)."""
        users = get_user_model()._default_manager
        people = [("maria.garcia", "Maria", "Garcia", "Billing operator"),
                  ("tom.weber", "Tom", "Weber", "Finance admin")]
        actors = []
        for username, first, last, role in people:
            user = users.filter(username=username).first() or users.create_user(
                username=username, email=f"{username}@northwind.example", first_name=first, last_name=last,
                password=None, is_staff=True,
            )
            group = Group.objects.filter(name=role).first()
            if group is not None:
                user.groups.add(group)
            actors.append(Actor.for_user(user))
        self.operator, self.finance = actors

    def billing_entities(self) -> None:
        self.entities["us"] = customer_services.create_billing_entity(
            actor=DEMO_ACTOR, code="northwind-us", name="Northwind Cloud (US)", legal_name="Northwind Cloud, Inc.",
            country="US", tax_id="47-2918374", email="billing@northwind.example", default_currency="USD",
            timezone="America/New_York", invoice_prefix="NW-US", credit_note_prefix="NWC-US",
            default_payment_terms_days=30, address_line1="350 Fifth Avenue, Suite 4100", city="New York",
            state="NY", postal_code="10118", invoice_grace_days=GRACE_DAYS["us"],
        )
        self.entities["eu"] = customer_services.create_billing_entity(
            actor=DEMO_ACTOR, code="northwind-eu", name="Northwind Cloud (EU)",
            legal_name="Northwind Cloud Europe GmbH", country="DE", tax_id="DE318274650",
            email="rechnung@northwind.example", default_currency="EUR", timezone="Europe/Berlin",
            invoice_prefix="NW-EU", credit_note_prefix="NWC-EU", default_payment_terms_days=14,
            address_line1="Friedrichstraße 68", city="Berlin", postal_code="10117",
            invoice_grace_days=GRACE_DAYS["eu"],
        )

    # --- catalog ----------------------------------------------------------------------------------------

    def catalog(self) -> None:
        for code, name, tax_code in [
            ("platform", "Northwind Platform", "saas"),
            ("api", "Northwind API", "saas"),
            ("ai", "Northwind AI Inference", "saas"),
            ("storage", "Northwind Object Storage", "saas"),
            ("compute", "Northwind Compute", "saas"),
            ("payments", "Northwind Payments", "financial_services"),
            ("support", "Support and Services", "services"),
        ]:
            self.products[code] = self._create(Product(code=code, name=name, tax_code=tax_code))

        for code, name, kind, unit in [
            ("sso", "Single sign-on (SAML / OIDC)", "switch", ""),
            ("audit-log", "Audit log export", "switch", ""),
            ("priority-support", "Priority support (1h response)", "switch", ""),
            ("seats", "Seats", "limit", "users"),
            ("projects", "Projects", "limit", "projects"),
            ("api-rate-limit", "API rate limit", "limit", "requests/second"),
            ("data-retention", "Data retention", "limit", "days"),
        ]:
            self.features[code] = self._create(Feature(code=code, name=name, kind=kind, unit=unit))

        meters = [
            ("api-calls", "API calls", "count", "", "API calls", {}, [], False),
            ("ai-tokens", "AI tokens", "sum", "tokens", "tokens", {}, ["model"], False),
            ("compute-hours", "Compute hours", "sum", "hours", "vCPU-hours", {}, ["region"], False),
            ("payment-volume", "Card payment volume", "sum", "amount", "", {"type": ["card"]}, [], False),
            ("payout-volume", "Payout volume", "sum", "amount", "", {}, [], False),
            ("peak-connections", "Peak concurrent connections", "max", "connections", "connections", {}, [], False),
            ("active-users", "Monthly active users", "unique_count", "user_id", "users", {}, [], False),
            ("seats", "Seats in use", "latest", "seats", "seats", {}, [], True),
            ("storage-gb", "Storage", "weighted_sum", "gb", "GB-months", {}, [], True),
        ]
        for code, name, aggregation, field_name, unit, filters, group_by, carries_over in meters:
            self.meters[code] = meter_services.create_meter(
                actor=self.finance, code=code, name=name, aggregation=aggregation, field_name=field_name, unit=unit,
                filters=filters, group_by=group_by, carries_over=carries_over,
                # Compute is billed in hundredths of an hour, rounded up.
                rounding="up" if code == "compute-hours" else "none",
                rounding_precision=2 if code == "compute-hours" else 0,
            )

        launched = self.ago(600)
        for spec in self.plan_specs():
            self.make_plan(spec, published_on=launched)
        self.second_growth_version()

    @staticmethod
    def _create(row: Any) -> Any:
        row.full_clean()
        row.save()
        return row

    def plan_specs(self) -> list[dict[str, Any]]:
        m = self.meters
        graduated_calls = {"tiers": [
            {"up_to": "100000", "unit_price": "0"},
            {"up_to": "1000000", "unit_price": "0.0004"},
            {"up_to": None, "unit_price": "0.0002"},
        ]}
        volume_calls = {"tiers": [
            {"up_to": "1000000", "unit_price": "0.0003"},
            {"up_to": "10000000", "unit_price": "0.0002", "flat_fee": "100"},
            {"up_to": None, "unit_price": "0.00012", "flat_fee": "500"},
        ]}
        graduated_tokens = {"tiers": [
            {"up_to": "50000000", "unit_price": "0.000002"},
            {"up_to": "500000000", "unit_price": "0.0000015"},
            {"up_to": None, "unit_price": "0.000001"},
        ]}
        payouts = {"tiers": [
            {"up_to": "100000", "rate": "1.0"},
            {"up_to": "1000000", "rate": "0.75"},
            {"up_to": None, "rate": "0.5", "flat_fee": "250"},
        ]}
        standard_switches = {"sso": True, "audit-log": False, "priority-support": False}
        return [
            # -------- USD
            {"code": "starter-usd", "name": "Starter", "product": "platform", "currency": "USD", "interval": "month",
             "base_fee": "49.00", "trial_days": 14,
             "description": "For small teams getting started: five seats and pay-as-you-go API calls.",
             "charges": [(m["api-calls"], "standard", {"unit_price": "0.0005"}, {})],
             "entitlements": {"seats": Decimal(5), "projects": Decimal(3), "api-rate-limit": Decimal(10),
                              "sso": False}},
            {"code": "growth-usd", "name": "Growth", "product": "platform", "currency": "USD", "interval": "month",
             "base_fee": "299.00", "trial_days": 14,
             "description": "Graduated API pricing, AI tokens by model and object storage.",
             "charges": [
                 (m["api-calls"], "graduated", graduated_calls, {"display_name": "API calls"}),
                 (m["ai-tokens"], "standard", {"unit_price": "0.000002"},
                  {"group_by": ["model"], "display_name": "AI tokens", "product": "ai"}),
                 (m["storage-gb"], "package", {"package_size": "100", "package_price": "5.00", "free_units": "50"},
                  {"display_name": "Object storage", "product": "storage"}),
             ],
             "fixed": [("premium-support", "Premium support", "99.00", True, True),
                       ("onboarding", "Onboarding package", "500.00", False, False)],
             "entitlements": {"seats": Decimal(5), "projects": Decimal(20), "api-rate-limit": Decimal(100),
                              **standard_switches}, "per_unit": {"seats"}},
            {"code": "scale-usd", "name": "Scale (annual)", "product": "platform", "currency": "USD",
             "interval": "year", "base_fee": "24000.00", "minimum_commitment": "30000.00",
             "description": "Annual plan with volume API pricing and a yearly minimum spend.",
             "charges": [
                 (m["api-calls"], "volume", volume_calls, {"display_name": "API calls (volume)"}),
                 (m["active-users"], "standard", {"unit_price": "2.00"}, {"display_name": "Active users"}),
                 (m["peak-connections"], "standard", {"unit_price": "1.50"},
                  {"display_name": "Peak concurrent connections"}),
             ],
             "entitlements": {"seats": Decimal(500), "projects": Decimal(1000), "api-rate-limit": Decimal(1000),
                              "sso": True, "audit-log": True, "priority-support": True,
                              "data-retention": Decimal(730)}},
            {"code": "enterprise-usd", "name": "Enterprise", "product": "platform", "currency": "USD",
             "interval": "month", "base_fee": "5000.00",
             "description": "Negotiated enterprise agreements; prices are usually overridden by contract.",
             "charges": [
                 (m["ai-tokens"], "graduated", graduated_tokens,
                  {"group_by": ["model"], "display_name": "AI tokens", "product": "ai"}),
                 (m["compute-hours"], "volume", {"tiers": [
                     {"up_to": "10000", "unit_price": "0.045"}, {"up_to": None, "unit_price": "0.035"}]},
                  {"group_by": ["region"], "display_name": "Compute", "product": "compute",
                   "minimum_amount": "500.00"}),
             ],
             "fixed": [("tam", "Technical account manager", "1500.00", True, True)],
             "entitlements": {"seats": Decimal(2000), "api-rate-limit": Decimal(5000), "sso": True,
                              "audit-log": True, "priority-support": True, "data-retention": Decimal(2555)}},
            {"code": "payments-usd", "name": "Payments", "product": "payments", "currency": "USD",
             "interval": "month", "base_fee": "0",
             "description": "Card processing at 2.9% + 30¢ and payouts on a sliding scale.",
             "charges": [
                 (m["payment-volume"], "percentage", {"rate": "2.9", "fixed_fee": "0.30",
                                                      "per_transaction_min_amount": "0.50"},
                  {"display_name": "Card processing"}),
                 (m["payout-volume"], "graduated_percentage", payouts, {"display_name": "Payouts"}),
             ]},
            {"code": "archive-usd", "name": "Archive Storage (quarterly)", "product": "storage", "currency": "USD",
             "interval": "quarter", "base_fee": "30.00", "base_fee_timing": "arrears",
             "description": "Cold storage billed quarterly in arrears, per 1 TB block.",
             "charges": [(m["storage-gb"], "package", {"package_size": "1000", "package_price": "12.00"},
                          {"display_name": "Archive storage"})]},
            {"code": "sandbox-usd", "name": "Developer Sandbox (weekly)", "product": "api", "currency": "USD",
             "interval": "week", "base_fee": "9.00",
             "description": "Short-lived sandboxes for agencies, billed weekly.",
             "charges": [(m["api-calls"], "standard", {"unit_price": "0.001"}, {"display_name": "API calls"})],
             "entitlements": {"projects": Decimal(1), "api-rate-limit": Decimal(5)}},
            # -------- EUR
            {"code": "starter-eur", "name": "Starter", "product": "platform", "currency": "EUR", "interval": "month",
             "base_fee": "45.00", "trial_days": 14,
             "description": "Für kleine Teams: fünf Plätze und API-Aufrufe nach Verbrauch.",
             "charges": [(m["api-calls"], "standard", {"unit_price": "0.00045"}, {})],
             "entitlements": {"seats": Decimal(5), "projects": Decimal(3), "api-rate-limit": Decimal(10),
                              "sso": False}},
            {"code": "growth-eur", "name": "Growth", "product": "platform", "currency": "EUR", "interval": "month",
             "base_fee": "279.00", "trial_days": 14,
             "description": "Graduated API pricing and AI tokens by model.",
             "charges": [
                 (m["api-calls"], "graduated", graduated_calls, {"display_name": "API calls"}),
                 (m["ai-tokens"], "standard", {"unit_price": "0.0000018"},
                  {"group_by": ["model"], "display_name": "AI tokens", "product": "ai"}),
             ],
             "fixed": [("premium-support", "Premium support", "89.00", True, True)],
             "entitlements": {"seats": Decimal(5), "projects": Decimal(20), "api-rate-limit": Decimal(100),
                              **standard_switches}, "per_unit": {"seats"}},
            {"code": "business-eur", "name": "Business (half-yearly)", "product": "platform", "currency": "EUR",
             "interval": "half_year", "base_fee": "6000.00",
             "description": "Half-yearly plan: volume API pricing, per-seat and storage charges.",
             "charges": [
                 (m["api-calls"], "volume", volume_calls, {"display_name": "API calls (volume)"}),
                 (m["seats"], "standard", {"unit_price": "12.00"}, {"display_name": "Seats"}),
                 (m["active-users"], "standard", {"unit_price": "1.80"}, {"display_name": "Active users"}),
                 (m["storage-gb"], "package", {"package_size": "100", "package_price": "4.50", "free_units": "100"},
                  {"display_name": "Object storage", "product": "storage"}),
             ],
             "entitlements": {"seats": Decimal(250), "api-rate-limit": Decimal(500), "sso": True,
                              "audit-log": True, "data-retention": Decimal(365)}},
            {"code": "enterprise-eur", "name": "Enterprise", "product": "platform", "currency": "EUR",
             "interval": "month", "base_fee": "4500.00",
             "description": "Negotiated enterprise agreements in euros.",
             "charges": [
                 (m["ai-tokens"], "graduated", graduated_tokens,
                  {"group_by": ["model"], "display_name": "AI tokens", "product": "ai"}),
                 (m["api-calls"], "volume", volume_calls, {"display_name": "API calls (volume)"}),
             ],
             "fixed": [("premium-support", "Premium support", "750.00", True, True)],
             "entitlements": {"seats": Decimal(2000), "api-rate-limit": Decimal(5000), "sso": True,
                              "audit-log": True, "priority-support": True}},
            {"code": "payments-eur", "name": "Payments", "product": "payments", "currency": "EUR",
             "interval": "month", "base_fee": "0",
             "description": "Kartenzahlungen zu 1,4 % + 0,25 € und Auszahlungen gestaffelt.",
             "charges": [
                 (m["payment-volume"], "percentage", {"rate": "1.4", "fixed_fee": "0.25",
                                                      "free_units_per_events": 100,
                                                      "per_transaction_max_amount": "25.00"},
                  {"display_name": "Card processing"}),
                 (m["payout-volume"], "graduated_percentage", payouts, {"display_name": "Payouts"}),
             ]},
            {"code": "compute-eur", "name": "Compute (quarterly)", "product": "compute", "currency": "EUR",
             "interval": "quarter", "base_fee": "0",
             "description": "Reserved compute billed quarterly, with a connection-peak charge.",
             "charges": [
                 (m["compute-hours"], "volume", {"tiers": [
                     {"up_to": "5000", "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.038"}]},
                  {"group_by": ["region"], "display_name": "Compute"}),
                 (m["peak-connections"], "graduated", {"tiers": [
                     {"up_to": "100", "unit_price": "0", "flat_fee": "0"},
                     {"up_to": None, "unit_price": "0.90", "flat_fee": "50"}]},
                  {"display_name": "Peak concurrent connections"}),
             ]},
        ]

    def make_plan(self, spec: dict[str, Any], *, published_on: date) -> PlanVersion:
        plan = catalog.create_plan(
            code=spec["code"], name=spec["name"], product=self.products[spec["product"]], currency=spec["currency"],
            interval=spec["interval"], actor=self.finance, description=spec.get("description", ""),
            base_fee=Decimal(spec["base_fee"]), base_fee_timing=spec.get("base_fee_timing", "advance"),
            trial_days=spec.get("trial_days", 0), minimum_commitment=spec.get("minimum_commitment"),
        )
        version = plan.versions.get()
        for meter, model, properties, options in spec.get("charges", []):
            options = dict(options)
            if "product" in options:
                options["product"] = self.products[options["product"]]
            catalog.add_charge(version, actor=self.finance, meter=meter, charge_model=model,
                               properties=properties, **options)
        for code, name, amount, recurring, prorated in spec.get("fixed", []):
            catalog.add_fixed_charge(version, actor=self.finance, code=code, name=name, amount=Decimal(amount),
                                     recurring=recurring, prorated=prorated, product=self.products["support"])
        for feature_code, value in spec.get("entitlements", {}).items():
            feature = self.features[feature_code]
            if isinstance(value, bool):
                catalog.set_entitlement(version, actor=self.finance, feature=feature, enabled=value)
            else:
                catalog.set_entitlement(version, actor=self.finance, feature=feature, limit=value,
                                        per_unit=feature_code in spec.get("per_unit", ()))
        version = catalog.publish_plan_version(version, actor=self.finance, now=self.at(published_on))
        self.versions[spec["code"]] = version
        return version

    def second_growth_version(self) -> None:
        """Growth gets a price change: version 2 (higher base fee, cheaper tokens, audit log included)."""
        v1 = self.versions["growth-usd"]

        def publish(now: datetime) -> None:
            draft = catalog.create_plan_version(v1.plan, actor=self.finance)
            catalog.update_plan_version(draft, actor=self.finance, base_fee=Decimal("349.00"))
            tokens = draft.charges.get(meter=self.meters["ai-tokens"])
            catalog.update_charge(tokens, actor=self.finance, properties={"unit_price": "0.0000015"})
            catalog.set_entitlement(draft, actor=self.finance, feature=self.features["audit-log"], enabled=True)
            self.versions["growth-usd@2"] = catalog.publish_plan_version(draft, actor=self.finance, now=now)

        def migrate(now: datetime) -> None:
            # Existing customers move to the new prices at their next period end, on purpose and in bulk.
            catalog.migrate_subscriptions(v1, self.versions["growth-usd@2"], actor=self.finance, now=now,
                                          timing="period_end")

        def retire(now: datetime) -> None:
            catalog.archive_plan_version(PlanVersion.objects.get(pk=v1.pk), actor=self.finance)

        self.later(self.ago(200), publish)
        self.later(self.ago(120), migrate)
        self.later(self.ago(60), retire)

    def coupons(self) -> None:
        plans = {code: v.plan for code, v in self.versions.items()}
        specs: list[dict[str, Any]] = [
            {"code": "LAUNCH20", "name": "Launch offer: 20% off for 3 months", "discount_type": "percentage",
             "percent_off": Decimal(20), "duration": "repeating", "duration_periods": 3,
             "plans": ["starter-usd", "growth-usd", "starter-eur", "growth-eur"]},
            {"code": "WELCOME100", "name": "Welcome credit $100", "discount_type": "fixed",
             "amount_off": Money(Decimal(100), "USD"), "duration": "once", "plans": ["growth-usd"]},
            {"code": "EDU50", "name": "Education: 50% off", "discount_type": "percentage", "percent_off": Decimal(50),
             "duration": "forever", "max_redemptions": 100},
            {"code": "WILLKOMMEN50", "name": "Willkommensrabatt 50 €", "discount_type": "fixed",
             "amount_off": Money(Decimal(50), "EUR"), "duration": "once", "plans": ["starter-eur", "growth-eur"]},
            {"code": "TOKENS10", "name": "10% off AI tokens for 6 months", "discount_type": "percentage",
             "percent_off": Decimal(10), "duration": "repeating", "duration_periods": 6, "meters": ["ai-tokens"]},
            {"code": "BLACKFRIDAY", "name": "Black Friday (expired)", "discount_type": "percentage",
             "percent_off": Decimal(30), "duration": "once", "is_active": False,
             "redeem_by": self.at(self.ago(300))},
        ]
        for spec in specs:
            plan_codes = spec.pop("plans", [])
            meter_codes = spec.pop("meters", [])
            coupon = self._create(Coupon(**spec))
            coupon.applies_to_plans.set([plans[code] for code in plan_codes])
            coupon.applies_to_meters.set([self.meters[code] for code in meter_codes])

    def tax_rates(self) -> None:
        """The seller's tax table. Tax rates have no service yet (they are reference data edited in the
        admin), so they are validated and saved directly."""
        for name, country, region, tax_code, percent in [
            ("New York State and City sales tax", "US", "NY", "saas", "8.875"),
            ("Umsatzsteuer (DE) 19 %", "DE", "", "", "19"),
            ("TVA (FR) 20 %", "FR", "", "", "20"),
            ("VAT (GB) 20 %", "GB", "", "", "20"),
            ("BTW (NL) 21 %", "NL", "", "", "21"),
        ]:
            self._create(TaxRate(name=name, country=country, region=region, tax_code=tax_code,
                                 percent=Decimal(percent), valid_from=date(2020, 1, 1)))

    # --- customers --------------------------------------------------------------------------------------

    def all_customers(self) -> None:
        for entity_key, table in (("us", US_CUSTOMERS), ("eu", EU_CUSTOMERS)):
            for key, name, country, tz, options in table:
                self.customers[key] = self.make_customer(entity_key, key, name, country, tz, options)

    def person(self) -> tuple[str, str]:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        return f"{first} {last}", mailbox(f"{first}.{last}")

    def tax_id(self, country: str) -> str:
        digits = "".join(str(self.rng.randint(0, 9)) for _ in range(9))
        if country in EU_COUNTRIES:
            return VAT_PREFIX.get(country, country) + digits
        if country == "US":
            return f"{digits[:2]}-{digits[2:]}"
        return digits

    def make_customer(self, entity_key: str, key: str, name: str, country: str, tz: str,
                      options: dict[str, Any]) -> Customer:
        entity = self.entities[entity_key]
        domain = key.replace("-", "") + ".example"
        city, state, postal = US_CITIES.get(tz, CITIES[country]) if country == "US" else CITIES[country]
        individual = options.get("individual", False)
        contact_name, handle = self.person() if not individual else (name, mailbox(name.replace(" ", ".")))
        contacts = [{"name": contact_name, "email": f"{handle}@{domain}", "role": "billing",
                     "phone": f"+1 555 {self.rng.randint(100, 999)} {self.rng.randint(1000, 9999)}"}]
        if not individual and self.rng.random() < 0.6:
            tech_name, tech_handle = self.person()
            contacts.append({"name": tech_name, "email": f"{tech_handle}@{domain}", "role": "technical",
                             "receives_invoices": False})
        fields: dict[str, Any] = {
            "billing_entity": entity, "external_id": f"cus_{key}", "name": name,
            "legal_name": name, "kind": "individual" if individual else "business",
            "billing_emails": [f"{handle}@{domain}"] if individual else [f"ap@{domain}"],
            "country": country, "currency": str(entity.default_currency), "timezone": tz,
            "address_line1": f"{self.rng.randint(1, 400)} {self.rng.choice(STREETS)}",
            "city": city, "state": state, "postal_code": postal,
            "tax_id": "" if individual else self.tax_id(country),
            "payment_terms_days": options.get("terms"),
            "metadata": {"segment": options.get("segment", "smb"),
                         "crm_id": f"0015g0000{self.rng.randint(10**6, 10**7 - 1)}"},
        }
        if "exempt" in options:
            fields.update(tax_exempt=True, tax_exemption_reason=options["exempt"])
        if "parent" in options:
            fields.update(parent=self.customers[options["parent"]],
                          invoice_to_parent=options.get("invoice_to_parent", False))
        return customer_services.create_customer(actor=self.operator, contacts=contacts, **fields)

    # --- subscriptions and contracts, replayed on the clock ---------------------------------------------

    def subscribe(self, customer_key: str, plan: str, start: date, *, created: date | None = None,
                  **options: Any) -> SubRef:
        """Schedule the creation of a subscription (on its start day unless `created` says otherwise)."""
        self.sub_count += 1
        ref = SubRef(f"sub_demo_{self.sub_count:04d}")
        contract_ref = options.pop("contract", None)

        def create(now: datetime) -> None:
            contract = Contract.objects.get(reference=contract_ref) if contract_ref else None
            subscriptions.create_subscription(
                customer=Customer.objects.get(external_id=f"cus_{customer_key}"),
                plan_version=self.versions[plan], actor=self.operator, now=now, external_id=ref.external_id,
                start_date=start, contract=contract, **options,
            )

        self.later(created or min(start, self.today), create)
        return ref

    def action(self, when: date, ref: SubRef, what: str, *args: Any, **kwargs: Any) -> None:
        functions = {
            "upgrade": subscriptions.change_plan, "downgrade": subscriptions.change_plan,
            "quantity": subscriptions.change_quantity, "pause": subscriptions.pause_subscription,
            "resume": subscriptions.resume_subscription, "cancel": subscriptions.cancel_subscription,
        }

        def run(now: datetime) -> None:
            positional = [self.versions[a] if isinstance(a, str) and a in self.versions else a for a in args]
            functions[what](ref.get(), *positional, actor=self.operator, now=now, **kwargs)

        self.later(when, run)

    def stories(self) -> None:
        self.self_serve_us()
        self.self_serve_eu()
        self.enterprise_contracts()

    def self_serve_us(self) -> None:
        r = self.rng
        # Long-standing Growth customers (moved to version 2 by the migration), with seat changes.
        for key, months in [("pinecrest", 16), ("bluefin", 14), ("copperline", 11), ("redwood", 9)]:
            sub = self.subscribe(key, "growth-usd", self.month_start(months), quantity=r.randint(3, 12))
            self.action(self.ago(r.randint(130, 250)), sub, "quantity", r.randint(13, 30))
        # Started on Starter, upgraded to Growth (immediately, prorated) after a few months.
        for key in ("summit", "mapleleaf"):
            sub = self.subscribe(key, "starter-usd", self.ago(r.randint(330, 420)))
            self.action(self.ago(r.randint(215, 300)), sub, "upgrade", "growth-usd")
        # Growth customers with a bill-cycle day and an anniversary anchor, on version 2.
        # Aurora's bill-cycle day is yesterday's day of the month: its period has always ended since the last
        # replayed close, so a close "as of now" has an invoice to make.
        self.subscribe("aurora", "growth-usd@2", self.ago(95), billing_anchor="day_of_month",
                       bill_cycle_day=self.ago(1).day, quantity=8)
        self.subscribe("lumen", "growth-usd@2", self.ago(70), billing_anchor="anniversary", quantity=20)
        # A downgrade that waits for the period end.
        sub = self.subscribe("tidewater", "growth-usd@2", self.ago(110), quantity=6)
        self.action(self.ago(3), sub, "downgrade", "starter-usd")
        # Small customers on Starter, one of them paying for fewer seats later.
        for key in ("quartz", "northstar", "whitfield", "lioncity"):
            self.subscribe(key, "starter-usd", self.ago(r.randint(40, 380)))
        # Trialing now, and one signed up to start in ten days.
        self.subscribe("coyote", "starter-usd", self.ago(5))
        self.subscribe("monsoon", "growth-usd@2", self.ago(4), quantity=4)
        self.subscribe("sakura", "growth-usd@2", self.today + timedelta(days=10), created=self.ago(2), quantity=10)
        # Paused for a seasonal business; canceled for good; canceling at the end of this period.
        sub = self.subscribe("harborview", "starter-usd", self.ago(300))
        self.action(self.ago(25), sub, "pause")
        sub = self.subscribe("andes", "starter-usd", self.ago(260))
        self.action(self.ago(61), sub, "cancel", reason="Moved to an in-house solution")
        sub = self.subscribe("kangaroo", "growth-usd@2", self.ago(150), quantity=5)
        self.action(self.ago(2), sub, "cancel", at_period_end=True, reason="Budget cuts")
        # A paused customer that came back.
        sub = self.subscribe("copperline", "archive-usd", self.month_start(12))
        self.action(self.ago(200), sub, "pause")
        self.action(self.ago(170), sub, "resume")
        # Usage-only products: payments, a weekly sandbox that ran its course, archive storage.
        self.subscribe("granite", "payments-usd", self.month_start(8))
        self.subscribe("coyote", "sandbox-usd", self.ago(180), end_date=self.ago(180) + timedelta(weeks=8))
        self.subscribe("bluefin", "archive-usd", self.month_start(6))
        # Non-profit and university on Growth and Starter (tax exempt).
        self.subscribe("open-harbor", "starter-usd", self.ago(240))
        self.subscribe("lakeside-u", "scale-usd", self.month_start(5), billing_anchor="anniversary")
        # Globex's subsidiaries, invoiced to the parent.
        self.subscribe("globex-ca", "growth-usd@2", self.ago(150), quantity=7)
        self.subscribe("globex-br", "starter-usd", self.ago(90))
        self.subscribe("initech-labs", "payments-usd", self.month_start(4))

    def self_serve_eu(self) -> None:
        r = self.rng
        for key, months in [("lumiere", 13), ("shamrock", 10), ("fjord", 8), ("wisla", 7)]:
            sub = self.subscribe(key, "growth-eur", self.month_start(months), quantity=r.randint(3, 10))
            self.action(self.ago(r.randint(40, 160)), sub, "quantity", r.randint(11, 25))
        for key in ("solymar", "vespa", "baltic", "novak", "helsinki-games"):
            self.subscribe(key, "starter-eur", self.ago(r.randint(30, 400)))
        sub = self.subscribe("alpenblick", "starter-eur", self.ago(380))
        self.action(self.ago(250), sub, "upgrade", "growth-eur")
        self.action(self.ago(100), sub, "upgrade", "business-eur", timing="period_end")
        self.subscribe("thames", "starter-eur", self.ago(6))  # trialing
        self.subscribe("danube", "growth-eur", self.ago(3), quantity=3)  # trialing
        self.subscribe("helvetia", "compute-eur", self.today + timedelta(days=20), created=self.ago(1))  # pending
        sub = self.subscribe("aegean", "growth-eur", self.ago(200), quantity=4)
        self.action(self.ago(15), sub, "pause")
        sub = self.subscribe("cph-bikes", "starter-eur", self.ago(220))
        self.action(self.ago(45), sub, "cancel", reason="Company closed its online shop")
        self.subscribe("lusitania", "payments-eur", self.month_start(10))
        self.subscribe("uav", "business-eur", self.month_start(9))
        self.subscribe("open-kennis", "starter-eur", self.ago(160))
        self.subscribe("bruxelles-legal", "compute-eur", self.month_start(14), end_date=self.month_start(5))
        self.subscribe("hansa-fr", "growth-eur", self.ago(100), quantity=6)

    def enterprise_contracts(self) -> None:
        # Each contract's steps bind its own `start` (a default argument), as the steps run later.
        usd, eur = self.versions["scale-usd"], self.versions["enterprise-eur"]

        # Globex: annual Scale under a 12-month auto-renewing contract with a 5% uplift, negotiated base fee
        # and API tiers, and a yearly minimum spend. It started 14 months ago, so it has renewed once.
        start = self.month_start(14)

        def globex(now: datetime, start: date = start) -> None:
            contract = contracts.create_contract(
                customer=self.customers["globex"], reference="NW-2024-0012", name="Globex master agreement",
                start_date=start, end_date=add_months(start, 12), auto_renew=True, renewal_term_months=12,
                renewal_uplift_percent=Decimal(5), actor=self.finance, signed_at=start - timedelta(days=9),
                notes="Negotiated by the enterprise team; 5% uplift at each renewal.",
            )
            contracts.set_contract_price(contract, actor=self.finance, target="base_fee", plan_version=usd,
                                         amount=Decimal("20000.00"))
            contracts.set_contract_price(
                contract, actor=self.finance, target="charge", plan_version=usd,
                charge=usd.charges.get(meter=self.meters["api-calls"]), charge_model="volume",
                properties={"tiers": [{"up_to": "5000000", "unit_price": "0.00025"},
                                      {"up_to": None, "unit_price": "0.00015"}]},
            )
            contracts.add_commitment(contract, actor=self.finance, kind="minimum_spend", amount=Decimal("50000"),
                                     period="year", description="Annual minimum spend, trued up at year end")

        self.later(start - timedelta(days=9), globex)
        self.subscribe("globex", "scale-usd", start, contract="NW-2024-0012", billing_anchor="anniversary")

        # Initech: three-year Enterprise contract with a base-fee ramp and prepaid usage credits.
        start = self.month_start(10)
        enterprise = self.versions["enterprise-usd"]

        def initech(now: datetime, start: date = start) -> None:
            contract = contracts.create_contract(
                customer=self.customers["initech"], reference="NW-2025-0031", name="Initech 3-year agreement",
                start_date=start, end_date=add_months(start, 36), actor=self.finance,
                signed_at=start - timedelta(days=20),
            )
            for offset, until, amount in [(0, 6, "3000.00"), (6, 12, "4000.00"), (12, 36, "5000.00")]:
                contracts.set_contract_price(
                    contract, actor=self.finance, target="base_fee", plan_version=enterprise,
                    amount=Decimal(amount), effective_from=add_months(start, offset),
                    effective_to=add_months(start, until),
                )
            contracts.set_contract_price(
                contract, actor=self.finance, target="fixed_charge", plan_version=enterprise,
                fixed_charge=enterprise.fixed_charges.get(code="tam"), amount=Decimal("0"),
            )
            contracts.add_commitment(contract, actor=self.finance, kind="prepaid", amount=Decimal("60000"),
                                     period="year", description="Prepaid usage credits, drawn down by tokens")

        self.later(start - timedelta(days=20), initech)
        self.subscribe("initech", "enterprise-usd", start, contract="NW-2025-0031")

        # Ironclad: a one-year contract canceled early (the subscription with it).
        start = self.month_start(7)

        def ironclad(now: datetime, start: date = start) -> None:
            contracts.create_contract(
                customer=self.customers["ironclad"], reference="NW-2025-0044", start_date=start,
                end_date=add_months(start, 12), actor=self.finance,
            )

        def ironclad_cancel(now: datetime) -> None:
            contracts.cancel_contract(Contract.objects.get(reference="NW-2025-0044"), actor=self.finance, now=now,
                                      reason="Acquired; moving to the acquirer's platform")

        self.later(start, ironclad)
        self.subscribe("ironclad", "enterprise-usd", start, contract="NW-2025-0044")
        self.later(self.ago(40), ironclad_cancel)

        # Hansa: two-year euro contract with a 3% uplift on renewal, negotiated tokens and support,
        # prepaid credits and a monthly minimum.
        start = self.month_start(5)

        def hansa(now: datetime, start: date = start) -> None:
            contract = contracts.create_contract(
                customer=self.customers["hansa"], reference="NW-EU-2025-0007", name="Hansa Rahmenvertrag",
                start_date=start, end_date=add_months(start, 24), auto_renew=True, renewal_term_months=12,
                renewal_uplift_percent=Decimal(3), actor=self.finance, signed_at=start - timedelta(days=14),
            )
            contracts.set_contract_price(
                contract, actor=self.finance, target="charge", plan_version=eur,
                charge=eur.charges.get(meter=self.meters["ai-tokens"]), charge_model="graduated",
                properties={"tiers": [{"up_to": "100000000", "unit_price": "0.0000014"},
                                      {"up_to": None, "unit_price": "0.0000009"}]},
            )
            contracts.set_contract_price(
                contract, actor=self.finance, target="fixed_charge", plan_version=eur,
                fixed_charge=eur.fixed_charges.get(code="premium-support"), amount=Decimal("500.00"),
            )
            contracts.add_commitment(contract, actor=self.finance, kind="prepaid", amount=Decimal("100000"),
                                     period="term", description="Prepaid credits for the whole term")
            contracts.add_commitment(contract, actor=self.finance, kind="minimum_spend", amount=Decimal("8000"),
                                     period="billing_period", description="Monthly minimum")
            contracts.set_contract_entitlement(contract, actor=self.finance, feature=self.features["seats"],
                                               limit=Decimal(5000))

        self.later(start - timedelta(days=14), hansa)
        self.subscribe("hansa", "enterprise-eur", start, contract="NW-EU-2025-0007", quantity=1)
        self.subscribe("hansa-logistik", "growth-eur", start, quantity=12)

        # Nordlicht: a one-year contract that was not renewed; its subscription has ended.
        start = self.month_start(16)

        def nordlicht(now: datetime, start: date = start) -> None:
            contract = contracts.create_contract(
                customer=self.customers["nordlicht"], reference="NW-EU-2024-0019", start_date=start,
                end_date=add_months(start, 12), actor=self.finance,
            )
            contracts.set_contract_price(contract, actor=self.finance, target="base_fee",
                                         plan_version=self.versions["business-eur"], amount=Decimal("5400.00"))

        self.later(start, nordlicht)
        self.subscribe("nordlicht", "business-eur", start, contract="NW-EU-2024-0019")

        # Tulip: a deal in signature: a draft contract and its subscription starting on the contract's start.
        start = self.today + timedelta(days=25)

        def tulip(now: datetime, start: date = start) -> None:
            contracts.create_contract(
                customer=self.customers["tulip"], reference="NW-EU-2025-0052", name="Tulip pilot", start_date=start,
                end_date=add_months(start, 12), status="draft", actor=self.finance,
                notes="Awaiting countersignature.",
            )

        self.later(self.ago(1), tulip)
        self.subscribe("tulip", "business-eur", start, created=self.ago(1), contract="NW-EU-2025-0052")

    # --- invoicing, replayed on the clock ---------------------------------------------------------------

    def close_moments(self) -> list[datetime]:
        """Midday UTC on the first of the last months: the first of the month has begun from Honolulu to
        Sydney, so every customer's monthly period has ended."""
        last = self.at(self.month_start(0))
        if self.now - last < OPEN_WINDOW:
            last = self.at(self.month_start(1))
        return [self.at(add_months(last.date(), -k)) for k in range(HISTORICAL_CLOSES - 1, -1, -1)]

    def invoicing(self) -> None:
        closes = self.close_moments()
        self.commercial_terms(closes)
        self.usage(closes[-1])
        for moment in closes:
            self.later(moment, self.close)
            finalize_at = moment + timedelta(days=GRACE_DAYS["us"], minutes=1)
            if finalize_at <= self.now:
                self.later(finalize_at, self.finalize_due)
        self.later(self.now, self.finalize_due)

    @staticmethod
    def close(now: datetime) -> None:
        # A customer whose close fails is recorded on the run (shown in the admin) and does not stop the
        # others or the demo, exactly as in production; the demo tests insist that none fails.
        run_cycle_close_inline(now=now, actor=CLOSE_ACTOR)

    @staticmethod
    def finalize_due(now: datetime) -> None:
        finalize_due_drafts(now=now, actor=FINALIZE_ACTOR)

    def commercial_terms(self, closes: list[datetime]) -> None:
        """Coupons redeemed, a promotional credit, a prepaid wallet, a one-off charge and an installment plan."""

        def coupon(customer_key: str, code: str) -> Callable[[datetime], Any]:
            def step(now: datetime) -> None:
                credits.apply_coupon(self.customers[customer_key], Coupon.objects.get(code=code),
                                     actor=self.operator, now=now)
            return step

        self.later(self.ago(95), coupon("aurora", "WELCOME100"))
        self.later(self.ago(69), coupon("lumen", "TOKENS10"))
        self.later(self.month_start(5), coupon("lakeside-u", "EDU50"))
        self.later(self.ago(4), coupon("monsoon", "LAUNCH20"))
        self.later(self.ago(3), coupon("danube", "WILLKOMMEN50"))

        def goodwill(now: datetime) -> None:
            credits.grant_credit(self.customers["pinecrest"], amount=Decimal("500.00"), currency="USD",
                                 reason="Goodwill credit after an API incident (ticket NW-4821)",
                                 expires_on=now.date() + timedelta(days=180), actor=self.finance, now=now)

        def wallet(now: datetime) -> None:
            credits.purchase_prepaid_credit(self.customers["lumiere"], amount=Decimal("2000.00"), currency="EUR",
                                            expires_on=now.date() + timedelta(days=365), actor=self.finance, now=now)

        first_installment = closes[-2].date()

        def installments(now: datetime) -> None:
            # 10,000.00 does not divide by three: the first installment takes the extra cent.
            credits.create_installment_plan(
                self.customers["hansa"], description="Implementation and SSO integration project",
                total=Decimal("10000.00"), installments=3, first_bill_on=first_installment, currency="EUR",
                product=self.products["support"], actor=self.finance, now=now,
            )

        def workshop(now: datetime) -> None:
            # Due today: the next close (the admin's "as of now") bills it.
            credits.add_one_off_charge(
                self.customers["tidewater"], description="Data migration workshop (on site, per day)",
                unit_price=Decimal("1200.00"), quantity=Decimal(2), currency="USD",
                product=self.products["support"], bill_on=self.today, actor=self.operator, now=now,
            )

        self.later(closes[-2] - timedelta(days=12), goodwill)
        self.later(closes[0] - timedelta(days=3), wallet)
        self.later(closes[-2] - timedelta(days=10), installments)
        self.later(self.ago(1), workshop)

    # usage ---------------------------------------------------------------------------------------------

    def usage(self, last_close: datetime) -> None:
        """Usage of every metered subscription for the previous month (sent before the last close) and for
        the current period so far (sent now), plus a few events of the previous month that arrived late."""
        previous = (datetime.combine(add_months(last_close.date(), -1), time(), tzinfo=UTC),
                    datetime.combine(last_close.date(), time(), tzinfo=UTC))
        current = (previous[1], self.now)

        def send_previous(now: datetime) -> None:
            self.send(self.usage_events("p", *previous), now)

        def send_current(now: datetime) -> None:
            events = self.usage_events("c", *current)
            # Late: tokens of Aurora's last finalized period, sent now; Aurora's next invoice is due (its
            # bill-cycle day is yesterday), so a close as of now bills them as late usage.
            late_end = add_months(self.ago(1), -1, on_day=self.ago(1).day)
            late_start = add_months(self.ago(1), -2, on_day=self.ago(1).day)
            events += [e for e in self.usage_events("late", self.at(late_start, 0), self.at(late_end, 0))
                       if e["customer_external_id"] == "cus_aurora" and e["meter_code"] == "ai-tokens"]
            self.send(events, now)

        self.later(last_close - timedelta(hours=1), send_previous)
        self.later(self.now, send_current)

    def usage_events(self, tag: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Events of the subscriptions in use, spread over [start, end) away from its edges (a day inside, so
        that every customer's timezone puts them in the same period)."""
        rng = random.Random(f"{SEED}-{tag}")  # noqa: S311 (reproducible demo data)
        first, last = start + timedelta(days=1), end - timedelta(days=1, minutes=10)
        if last <= first:
            return []
        seconds = int((last - first).total_seconds())
        subs = Subscription.objects.filter(
            status__in=[Subscription.Status.ACTIVE, Subscription.Status.TRIALING], start_date__lt=end.date(),
        ).select_related("customer", "plan_version").order_by("external_id")
        events: list[dict[str, Any]] = []
        for sub in subs:
            meters = sorted({c.meter.code for c in sub.plan_version.charges.select_related("meter")})
            for code in meters:
                # A product reports in a few bursts, which also keeps the hourly rollups few.
                bursts = [first + timedelta(seconds=rng.randrange(seconds)) for _ in range(BURSTS_PER_PERIOD)]
                for i in range(EVENTS_PER_PERIOD.get(code, 8)):
                    moment = rng.choice(bursts) + timedelta(seconds=rng.randrange(600))
                    events.append({
                        "transaction_id": f"demo-{tag}-{sub.external_id}-{code}-{i:03d}",
                        "customer_external_id": sub.customer.external_id, "meter_code": code,
                        "timestamp": moment.isoformat(), "properties": usage_properties(code, rng),
                    })
        return events

    @staticmethod
    def send(events: list[dict[str, Any]], now: datetime) -> None:
        for offset in range(0, len(events), 1000):
            results = ingest_events(events[offset:offset + 1000], now=now)
            refused = [r for r in results if r.status != ACCEPTED]
            if refused:
                raise ValueError(f"Demo usage events were refused: {refused[:3]}")


EVENTS_PER_PERIOD = {"api-calls": 30, "active-users": 20}
BURSTS_PER_PERIOD = 3
MODELS = ["nw-large", "nw-mini"]
REGIONS = ["us-east-1", "eu-central-1"]
ENDPOINTS = ["/v1/orders", "/v1/search", "/v1/customers", "/v1/reports"]


def usage_properties(meter_code: str, rng: random.Random) -> dict[str, Any]:
    """Plausible properties for one event of a demo meter (numbers as strings: exact decimals)."""
    match meter_code:
        case "api-calls":
            return {"endpoint": rng.choice(ENDPOINTS)}
        case "ai-tokens":
            return {"tokens": rng.randint(20_000, 4_000_000), "model": rng.choice(MODELS)}
        case "compute-hours":
            return {"hours": str(Decimal(rng.randint(50, 2400)).scaleb(-1)), "region": rng.choice(REGIONS)}
        case "payment-volume":
            return {"amount": str(Decimal(rng.randint(500, 250_000)).scaleb(-2)),
                    "type": "card" if rng.random() < 0.85 else "sepa"}
        case "payout-volume":
            return {"amount": str(Decimal(rng.randint(100_000, 5_000_000)).scaleb(-2))}
        case "peak-connections":
            return {"connections": rng.randint(40, 400)}
        case "active-users":
            return {"user_id": f"user-{rng.randint(1, 400)}"}
        case "seats":
            return {"seats": rng.randint(20, 180)}
        case "storage-gb":
            return {"gb": rng.randint(200, 8_000)}
    raise ValueError(f"No demo properties for meter {meter_code}.")
