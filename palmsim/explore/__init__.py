"""palmsim.explore: sweeps over configurations (and, later, mapping search)."""
