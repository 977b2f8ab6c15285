"""The invoicing app's admin, one module per area (importing a module registers its ModelAdmins)."""

from . import bank, credit_notes, dunning, gateways, invoices, payments, receivables  # noqa: F401
