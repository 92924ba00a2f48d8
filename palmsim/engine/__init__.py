"""palmsim.engine."""
