"""palmsim.mapping."""
