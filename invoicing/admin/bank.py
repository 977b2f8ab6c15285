"""bank admin."""
