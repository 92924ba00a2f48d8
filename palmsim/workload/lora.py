"""LoRA fine-tuning (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv:2106.09685) as Megatron-Bridge runs it (pure).

Every weight of the model is frozen (:attr:`palmsim.workload.ops.Op.frozen`): its backward
computes the input's gradient only (no weight-gradient GEMM), and it takes no gradient,
optimizer state, gradient reduction or update. Each target linear ``y = x W`` (``k x n`` on
the tile) gains an adapter beside it, ``y += (x A) B`` with ``A`` of ``k x r`` and ``B`` of
``r x n``: two small GEMMs, trained, in the compute dtype (Megatron-Bridge's
``LinearAdapter``/``ParallelLinearAdapter``: ``linear_in`` then ``linear_out``). ``A`` reads
the base linear's input, which the base keeps for the backward already; ``B`` keeps its
``r``-wide input. The adapters' TP split follows the base's shapes on the tile. The linears
an adapter may sit beside are :data:`palmsim.config.specs.LORA_TARGET_OPS`.

A frozen linear keeps no input for its backward: the input serves only the weight gradient,
and the input gradient needs the weight alone. Transformer Engine's ``Linear`` and
``LayerNormLinear`` save their input only ``if weight.requires_grad`` (transformer_engine/
pytorch/module/linear.py, v1.5 to 2.x: ``backward_needs_input = is_grad_enabled and
weight.requires_grad``), and Megatron-Core's own linears run ``linear_with_frozen_weight``,
which saves the weight alone (megatron/core/tensor_parallel/layers.py). A target linear's
input stays kept: its adapter's ``A`` takes the same tensor for its own weight gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from palmsim.workload.builders import Block
from palmsim.workload.ops import Op, linear_op

__all__ = ["lora_blocks"]


def _adapter(op: Op, rank: int, dtype_bytes: float) -> tuple[Op, Op]:
    batch, m, k, n = op.gemm_shape or (1, 0, 0, 0)
    a = linear_op(f"{op.name}_lora_a", m, k, rank, batch=batch, dtype_bytes=dtype_bytes)
    b = linear_op(
        f"{op.name}_lora_b", m, rank, n, batch=batch, dtype_bytes=dtype_bytes,
        saved_bytes=dtype_bytes * batch * m * rank,
    )  # fmt: skip
    return a, b


def lora_blocks(
    blocks: Sequence[Block], *, rank: int, targets: Sequence[str], dtype_bytes: float
) -> tuple[Block, ...]:
    """``blocks`` with every weight frozen and a rank-``rank`` adapter beside each linear
    named in ``targets`` (module docstring)."""
    out = []
    for block in blocks:
        ops: list[Op] = []
        edges = list(block.edges)
        for op in block.ops:
            if op.params > 0:
                op = dataclasses.replace(op, frozen=True)
            if op.kind == "matmul" and op.params > 0 and op.name not in targets:
                op = dataclasses.replace(op, saved_bytes=0.0, saved_bytes_selective=0.0)
            ops.append(op)
            if op.name in targets and op.gemm_shape is not None:
                a, b = _adapter(op, rank, dtype_bytes)
                ops += [a, b]
                batch, m, _, _ = op.gemm_shape
                edges += [(src, a.name, size) for src, dst, size in block.edges if dst == op.name]
                edges.append((a.name, b.name, dtype_bytes * batch * m * rank))
        out.append(dataclasses.replace(block, ops=tuple(ops), edges=tuple(edges)))
    return tuple(out)
