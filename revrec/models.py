"""Models arrive with their own issue."""
