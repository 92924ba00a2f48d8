"""Serving with continuous batching (issue 16): pure traffic, KV-cache, scheduler and router
models. No SimPy here; :mod:`palmsim.engine.serving` drives them in simulated time."""
