"""dunning admin."""
