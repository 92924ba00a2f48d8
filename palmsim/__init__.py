"""palmsim: a discrete-event performance simulator for training large models on tiled
accelerators (wafer-scale chips) and GPU clusters."""

__version__ = "0.1.0"

__all__ = ["__version__"]
