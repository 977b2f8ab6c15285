"""Finance roles, kept as auth groups whose permissions follow the rules declared here.

A role grants permissions by pattern over "app_label.codename" (shell wildcards: `contracts.view_*`), then
takes some back with `denies`. `sync_roles()` creates every permission first, then sets each role's group
to exactly what its rules match, so the rules are the single source of truth: a permission added to one of
these groups by hand is removed by the next sync (make a separate group for local needs).

Later apps extend a role by adding patterns below and shipping a migration that runs `sync_roles`:

    migrations.RunPython(sync_roles, migrations.RunPython.noop)
"""

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import DEFAULT_DB_ALIAS

FINANCE_ADMIN = "Finance admin"
BILLING_OPERATOR = "Billing operator"
REVENUE_ACCOUNTANT = "Revenue accountant"
AUDITOR = "Auditor"

DOMAIN_APPS = ("customers", "contracts", "usage", "invoicing", "revrec")


def model_perms(app_label: str, model: str, actions: str) -> tuple[str, ...]:
    """`model_perms("customers", "contact", "view add change")` -> the three "app.action_model" codes."""
    return tuple(f"{app_label}.{action}_{model}" for action in actions.split())


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    grants: tuple[str, ...]
    denies: tuple[str, ...] = ()

    def matches(self, permission_key: str) -> bool:
        if any(fnmatchcase(permission_key, pattern) for pattern in self.denies):
            return False
        return any(fnmatchcase(permission_key, pattern) for pattern in self.grants)

    def select(self, permission_keys: Iterable[str]) -> set[str]:
        return {key for key in permission_keys if self.matches(key)}


# What a revenue accountant does beyond reading: the books of revenue recognition.
REVENUE_ACCOUNTANT_REVREC: tuple[str, ...] = (
    *model_perms("revrec", "account", "add change"),
    *model_perms("revrec", "standalonesellingprice", "add change"),
    *model_perms("revrec", "productrevenuerule", "add change"),
    *model_perms("revrec", "contractmodification", "add change"),
    "revrec.change_performanceobligation",  # mark delivered
    "revrec.close_accountingperiod",
    "revrec.run_recognition",
)

ROLES: tuple[Role, ...] = (
    Role(
        name=FINANCE_ADMIN,
        description="Everything on the domain apps, API keys, and a read-only view of users.",
        grants=(*(f"{app}.*" for app in DOMAIN_APPS), "api.*", "auth.view_user"),
    ),
    Role(
        name=BILLING_OPERATOR,
        description=(
            "Customers, contacts, contracts and subscriptions (edit and lifecycle actions); "
            "reads the catalog and meters, and the ledger and revenue reports (to see what its invoices and "
            "payments posted). No API keys, no plan publishing, no revenue downloads, runs or closes."
        ),
        grants=(
            "customers.view_*",
            *model_perms("customers", "customer", "add change"),
            "customers.archive_customer",
            *model_perms("customers", "contact", "add change delete"),
            "contracts.view_*",  # the catalog, read only
            *model_perms("contracts", "contract", "add change"),
            "contracts.manage_contract_lifecycle",
            *model_perms("contracts", "contractprice", "add change delete"),
            *model_perms("contracts", "contractcommitment", "add change delete"),
            *model_perms("contracts", "contractentitlement", "add change delete"),
            *model_perms("contracts", "subscription", "add change"),
            "contracts.manage_subscription_lifecycle",
            "usage.view_*",  # meters, events, rejected events, rollups
            "usage.reprocess_rejectedevent",  # fix a customer, then re-process what it sent
            "usage.add_usagebackfill",
            "invoicing.view_*",  # tax rates and every document, read only unless granted below
            *model_perms("invoicing", "invoice", "add change"),  # drafts: refresh, add and remove lines
            "invoicing.finalize_invoice",
            "invoicing.run_cycle_close",
            *model_perms("invoicing", "appliedcoupon", "add change"),
            *model_perms("invoicing", "creditgrant", "add"),
            *model_perms("invoicing", "pendingcharge", "add change delete"),
            *model_perms("invoicing", "installmentplan", "add"),
            # Receivables: record and match money in; refunds, reversals and credit notes stay with finance admins.
            *model_perms("invoicing", "payment", "add"),
            "invoicing.allocate_payment",
            "invoicing.reconcile_bankstatement",
            *model_perms("invoicing", "bankstatement", "add"),
            *model_perms("invoicing", "customerdunningoverride", "add change delete"),
            "invoicing.export_receivable",  # customer statements to send, aging to chase
            # The ledger, read only: every invoice it finalizes and payment it records posts an entry, and
            # "did it post, and where" is its question to answer. Closing, recognition runs and revenue
            # downloads stay with the accountants.
            "revrec.view_*",
        ),
        denies=("contracts.publish_planversion", "contracts.archive_planversion", "api.*"),
    ),
    Role(
        name=REVENUE_ACCOUNTANT,
        description=(
            "Reads everything in the domain apps; downloads the receivables and revenue reports; keeps the "
            "chart of accounts, standalone selling prices and revenue rules; records deliveries and contract "
            "modifications, runs revenue recognition and closes accounting periods."
        ),
        grants=(
            *(f"{app}.view_*" for app in DOMAIN_APPS),
            "invoicing.export_receivable",
            *REVENUE_ACCOUNTANT_REVREC,
        ),
    ),
    Role(
        name=AUDITOR,
        description="Reads everything, history included; changes nothing and runs no actions.",
        grants=("*.view_*",),
        denies=("sessions.*",),  # session rows carry login tokens, not records
    ),
)


def create_all_permissions(apps: Any = global_apps, using: str = DEFAULT_DB_ALIAS) -> None:
    """Django creates permissions after `migrate`; a data migration needs them now, so create them here."""
    for app_config in apps.get_app_configs():
        # Historical app configs (inside a migration) have no models module; create_permissions skips
        # those, so mark them as having models for the duration of the call.
        had_module = getattr(app_config, "models_module", None)
        if had_module is None:
            app_config.models_module = True
        try:
            create_permissions(app_config, verbosity=0, interactive=False, using=using, apps=apps)
        finally:
            app_config.models_module = had_module


def sync_roles(apps: Any = global_apps, schema_editor: Any = None) -> dict[str, int]:
    """Create every permission, then give each role's group exactly the permissions its rules match.

    Usable as a migration's RunPython function; returns {role name: number of permissions} for reporting.
    """
    using = schema_editor.connection.alias if schema_editor is not None else DEFAULT_DB_ALIAS
    create_all_permissions(apps, using)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    by_key = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.using(using).values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    counts: dict[str, int] = {}
    for role in ROLES:
        group, _ = Group.objects.using(using).get_or_create(name=role.name)
        selected = sorted(by_key[key] for key in role.select(by_key))
        group.permissions.set(selected)
        counts[role.name] = len(selected)
    return counts
