"""palmsim.hardware."""
