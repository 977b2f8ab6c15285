"""payments admin."""
