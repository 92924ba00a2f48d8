"""Megatron-Core's selective recompute by module: which of a layer's ops a module names, what
the layer then keeps for its backward, and what it re-runs before it.

``--recompute-granularity selective --recompute-modules ...`` (megatron/core/transformer/
transformer_config.py ``recompute_modules``; the layer's checkpoints in
transformer/transformer_layer.py, transformer/moe/moe_layer.py, transformer/moe/experts.py
and transformer/multi_latent_attention.py). Two kinds of checkpoint:

- **normal** (``core_attn``, ``mlp``, ``moe``, ``shared_experts``;
  ``tensor_parallel.checkpoint``): the module keeps only its input and re-runs its forward
  before its backward. Here: its first op keeps what it saved (that op's input is the
  module's), its other ops keep nothing. ``core_attn`` keeps what Korthikanti et al. (2023)
  count for selective recompute (:attr:`Op.saved_bytes_selective`), as palmsim always has.
  ``mlp`` names a dense MLP only ("mlp" is skipped for an MoE layer); ``moe`` re-runs the
  whole MoE layer, its dispatch and combine all-to-alls too.
- **output-discarding** (``layernorm``, ``moe_act``, ``mla_up_proj``;
  ``CheckpointWithoutOutput``): the op keeps its input, but its output is freed once its
  consumers have run and rebuilt before the backward; the copies of it those consumers saved
  are freed with it (the dataflow edges of the block, :attr:`Block.edges`, give who saved
  how much of it).

Module of each op, by the op graph's names (:mod:`palmsim.workload.builders`): ``layernorm``
the two norms (``norm1``, ``norm2``); ``mla_up_proj`` MLA's up-projections and RoPE
(``q_up``, ``kv_up``, ``rope`` in a block that has ``q_up``); ``mlp`` the ``mlp`` block
between its norm and its dropout and residual; ``moe`` the MoE blocks but their norm and
residual; ``moe_act`` the experts' activation; ``shared_experts`` the shared experts'
ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from palmsim.config.specs import DEFAULT_RECOMPUTE_MODULES, RECOMPUTE_MODULES

if TYPE_CHECKING:
    from palmsim.workload.builders import Block
    from palmsim.workload.ops import Op

__all__ = [
    "DEFAULT_RECOMPUTE_MODULES",
    "MOE_BLOCKS",
    "RECOMPUTE_MODULES",
    "kept_bytes",
    "module_ops",
    "op_modules",
    "recomputed_ops",
]

_OUTPUT_DISCARDING = frozenset({"layernorm", "moe_act", "mla_up_proj"})
#: The blocks of a mixture-of-experts layer (:func:`palmsim.workload.builders.moe_blocks`).
MOE_BLOCKS = frozenset({"moe_route", "moe_experts", "moe_combine"})
_OUTSIDE = frozenset({"norm2", "mlp_dropout", "mlp_residual"})


def op_modules(block: Block, op: Op) -> frozenset[str]:
    """The recompute modules that name ``op`` of ``block``."""
    names: set[str] = set()
    if op.recompute_selective:
        names.add("core_attn")
    if op.name in ("norm1", "norm2"):
        names.add("layernorm")
    if op.name in ("q_up", "kv_up", "rope") and "q_up" in block.op_names:
        names.add("mla_up_proj")
    if block.name == "mlp" and op.name not in _OUTSIDE:
        names.add("mlp")
    if block.name in MOE_BLOCKS and op.name not in _OUTSIDE:
        names.add("moe")
    if op.name == "experts_act":
        names.add("moe_act")
    if op.name.startswith("shared_") and op.name != "shared_add":
        names.add("shared_experts")
    return frozenset(names)


def module_ops(blocks: Sequence[Block], module: str) -> int:
    """How many ops of ``blocks`` ``module`` names (0: the module is not in these layers)."""
    return sum(1 for b in blocks for op in b.ops if module in op_modules(b, op))


def recomputed_ops(block: Block, modules: Sequence[str]) -> list[Op]:
    """The ops of ``block`` the layer re-runs (forward) before its backward."""
    chosen = set(modules)
    return [op for op in block.ops if op_modules(block, op) & chosen]


def kept_bytes(blocks: Sequence[Block], modules: Sequence[str]) -> float:
    """Bytes a layer of ``blocks`` keeps for its backward per micro-batch when ``modules``
    are recomputed (module docstring)."""
    chosen = set(modules)
    kept: dict[tuple[int, str], float] = {}
    normal_seen: set[str] = set()  # a module's first op keeps the module's input
    for i, b in enumerate(blocks):
        for op in b.ops:
            kept[(i, op.name)] = op.saved_bytes
        for op in b.ops:
            mods = op_modules(b, op) & chosen
            if "core_attn" in mods:
                kept[(i, op.name)] = op.saved_bytes_selective
                continue
            normal = sorted(mods - _OUTPUT_DISCARDING - {"core_attn"})
            for module in normal:
                if module in normal_seen:
                    kept[(i, op.name)] = 0.0
                normal_seen.add(module)
        # an output-discarding op's output: the copies its consumers saved are freed
        discarding = {op.name for op in b.ops if op_modules(b, op) & chosen & _OUTPUT_DISCARDING}
        for producer, consumer, nbytes in b.edges:
            if producer in discarding and consumer not in discarding:
                key = (i, consumer)
                if key in kept:
                    kept[key] = max(kept[key] - nbytes, 0.0)
    return float(sum(kept.values()))
