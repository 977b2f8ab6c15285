"""Writes for the catalog (catalog.py), contracts (contracts.py) and subscriptions (subscriptions.py)."""
