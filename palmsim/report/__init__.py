"""palmsim.report."""
