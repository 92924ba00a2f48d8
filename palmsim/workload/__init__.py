"""palmsim.workload: per-op FLOP, bytes, parameters and saved activations of a transformer.

- :mod:`palmsim.workload.ops`: the :class:`Op` record and one cost function per op kind
  (:data:`OPS`).
- :mod:`palmsim.workload.builders`: TP-local :class:`Block` s of one layer, the embedding and
  the head; whole-model parameter, FLOP and activation-memory sums.

Everything here is pure: no SimPy, no I/O.
"""

from palmsim.workload.builders import (
    BLOCK_INPUT,
    RECOMPUTE_MODES,
    Block,
    activation_bytes_per_layer,
    embedding_block,
    hardware_flop_per_iteration,
    head_block,
    layer_blocks,
    layer_input_bytes,
    model_flop_per_iteration,
    num_parameters,
)
from palmsim.workload.ops import OPS, Op, OpCost

__all__ = [
    "BLOCK_INPUT",
    "OPS",
    "RECOMPUTE_MODES",
    "Block",
    "Op",
    "OpCost",
    "activation_bytes_per_layer",
    "embedding_block",
    "hardware_flop_per_iteration",
    "head_block",
    "layer_blocks",
    "layer_input_bytes",
    "model_flop_per_iteration",
    "num_parameters",
]
