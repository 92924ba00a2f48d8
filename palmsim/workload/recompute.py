"""Megatron-Core's selective recompute by module: which of a layer's ops a module names, what
the layer then keeps for its backward, and what it re-runs before it.

``--recompute-granularity selective --recompute-modules ...`` (megatron/core/transformer/
transformer_config.py ``recompute_modules``; the layer's checkpoints in
transformer/transformer_layer.py, transformer/moe/moe_layer.py, transformer/moe/experts.py
and transformer/multi_latent_attention.py). Two kinds of checkpoint:

- **normal** (``core_attn``, ``mlp``, ``moe``, ``shared_experts``;
  ``tensor_parallel.checkpoint``): the module keeps only its input and re-runs its forward
  before its backward. Here: its ops keep nothing, and the module keeps the tensors that
  enter it from outside (the block's dataflow edges), once per producer, at the width the
  producer wrote them: in fp8 that is the bf16 input, not its GEMM's fp8 copy
  (``te_checkpoint`` saves the checkpointed function's argument). ``core_attn`` keeps what
  Korthikanti et al. (2023) count for selective recompute
  (:attr:`Op.saved_bytes_selective`), as palmsim always has.
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
between its norm and its dropout and residual adds; ``moe`` the MoE blocks but their norm and
residual; ``moe_act`` the experts' activation; ``shared_experts`` the shared experts'
ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from palmsim.config.specs import DEFAULT_RECOMPUTE_MODULES, RECOMPUTE_MODULES
from palmsim.workload.ops import BLOCK_INPUT

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
#: The MLP block's ops outside Megatron-Core's ``mlp`` module: its norm, and the
#: bias-dropout-add and residual add after it (a parallel block's sum of the two branches,
#: ``branch_add``, with them).
_OUTSIDE = frozenset({"norm2", "mlp_dropout", "branch_add", "mlp_residual"})


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
    inputs: dict[tuple[str, int, str], float] = {}  # (module, block, producer) -> bytes
    for i, b in enumerate(blocks):
        for op in b.ops:
            kept[(i, op.name)] = op.saved_bytes
        mods_of = {op.name: op_modules(b, op) & chosen for op in b.ops}
        for op in b.ops:
            if "core_attn" in mods_of[op.name]:
                kept[(i, op.name)] = op.saved_bytes_selective
            elif mods_of[op.name] - _OUTPUT_DISCARDING:
                kept[(i, op.name)] = 0.0
        # a normal module keeps its input: the tensors entering it from outside, once each
        previous: frozenset[str] = frozenset()  # the modules of the op that made BLOCK_INPUT
        if i and blocks[i - 1].ops:
            previous = op_modules(blocks[i - 1], blocks[i - 1].ops[-1])
        discarding = {name for name, mods in mods_of.items() if mods & _OUTPUT_DISCARDING}
        for producer, consumer, nbytes in b.edges:
            if producer in discarding:
                continue  # freed with the output-discarding op's output, rebuilt before backward
            for module in mods_of.get(consumer, frozenset()) - _OUTPUT_DISCARDING - {"core_attn"}:
                inside = previous if producer == BLOCK_INPUT else mods_of.get(producer, frozenset())
                if module not in inside:
                    entry = (module, i, producer)
                    inputs[entry] = max(inputs.get(entry, 0.0), nbytes)
        # an output-discarding op's output: the copies its consumers saved are freed
        for producer, consumer, nbytes in b.edges:
            if producer in discarding and consumer not in discarding:
                key = (i, consumer)
                if key in kept:
                    kept[key] = max(kept[key] - nbytes, 0.0)
    return float(sum(kept.values()) + sum(inputs.values()))
