"""receivables admin."""
