"""credit_notes admin."""
