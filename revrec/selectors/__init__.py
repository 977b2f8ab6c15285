"""Reads of revenue and ledger data: reports, checklists, lookups."""
