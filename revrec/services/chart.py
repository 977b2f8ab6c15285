"""A billing entity's chart of accounts: the defaults every entity starts with, and the lookup the posting
rules use (a product's own revenue account when it has one, the entity's default otherwise)."""

from dataclasses import dataclass, field

from django.db import transaction

from customers.models import BillingEntity
from revrec.models import Account

Role = Account.Role
Type = Account.Type

# (code, name, type, role): a conventional numbering an ERP import maps easily.
DEFAULT_CHART: tuple[tuple[str, str, str, str], ...] = (
    ("1000", "Cash", Type.ASSET, Role.CASH),
    ("1100", "Accounts receivable", Type.ASSET, Role.RECEIVABLE),
    ("1200", "Contract asset (unbilled revenue)", Type.ASSET, Role.CONTRACT_ASSET),
    ("2100", "Deferred revenue", Type.LIABILITY, Role.DEFERRED_REVENUE),
    ("2150", "Prepaid credits", Type.LIABILITY, Role.PREPAID_CREDIT),
    ("2200", "Customer credit balances", Type.LIABILITY, Role.CUSTOMER_CREDIT),
    ("2300", "Tax payable", Type.LIABILITY, Role.TAX_PAYABLE),
    ("4000", "Revenue", Type.REVENUE, Role.REVENUE),
    ("4800", "Prepaid credit breakage", Type.REVENUE, Role.BREAKAGE),
    ("4900", "Contra-revenue: credit notes", Type.REVENUE, Role.CONTRA_REVENUE),
    ("6100", "Bad debt expense", Type.EXPENSE, Role.BAD_DEBT),
)


def ensure_chart(entity: BillingEntity) -> None:
    """Create the default accounts an entity lacks. Safe to repeat and to run concurrently."""
    existing = set(Account.objects.filter(billing_entity=entity, product__isnull=True).values_list("role", flat=True))
    missing = [
        Account(billing_entity=entity, code=code, name=name, type=kind, role=role)
        for code, name, kind, role in DEFAULT_CHART
        if role not in existing
    ]
    if missing:
        with transaction.atomic():
            Account.objects.bulk_create(missing, ignore_conflicts=True)


@dataclass
class Chart:
    """An entity's accounts loaded once, for postings that touch many lines (the daily recognition run)."""

    entity_id: int
    defaults: dict[str, Account] = field(default_factory=dict)
    by_product: dict[tuple[str, int], Account] = field(default_factory=dict)

    @classmethod
    def load(cls, entity: BillingEntity) -> "Chart":
        ensure_chart(entity)
        chart = cls(entity_id=entity.pk)
        for account in Account.objects.filter(billing_entity=entity, is_active=True):
            if account.product_id is None:
                chart.defaults[account.role] = account
            else:
                chart.by_product[(account.role, account.product_id)] = account
        missing = [role for _, _, _, role in DEFAULT_CHART if role not in chart.defaults]
        if missing:
            raise LookupError(f"{entity.code} has no active account for: {', '.join(missing)}.")
        return chart

    def account(self, role: str, product_id: int | None = None) -> Account:
        if product_id is not None and (role, product_id) in self.by_product:
            return self.by_product[(role, product_id)]
        return self.defaults[role]
