"""palmsim.workload."""
