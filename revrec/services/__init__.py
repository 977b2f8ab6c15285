"""Revenue recognition and ledger services (writes). Reports and lookups are in revrec.selectors."""
