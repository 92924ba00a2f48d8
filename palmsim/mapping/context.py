"""Context parallelism as Megatron-Core runs it: the lowering as pure functions.

A context-parallel (CP) group of ``cp`` tiles holds one sample's sequence between them
(Megatron-Core ``--context-parallel-size``; Transformer Engine's ``attn_forward_func_with_cp``,
the ring attention of Liu et al., "Ring Attention with Blockwise Transformers", 2023):

- **Split.** Causal attention makes late tokens attend to more keys, so Megatron-Core cuts the
  sequence into ``2·cp`` chunks of ``s/(2·cp)`` and gives rank ``r`` chunks ``r`` and
  ``2·cp-1-r`` (the *causal load balancing*): every rank then has the same number of
  unmasked query-key pairs (:func:`causal_pairs`). Everything outside the attention core works
  on the rank's ``s/cp`` tokens (:func:`palmsim.workload.builders.layer_blocks` with ``cp``).
- **Ring.** The attention core of a rank needs the keys and values of the whole sequence. Each
  of ``cp`` steps computes the rank's queries against the KV chunk in hand while that chunk
  passes on to the next rank of the ring and the previous rank's arrives: ``cp-1`` transfers
  of one KV chunk (``2·e·b·(s/cp)·kv_t·d`` bytes) per rank in the forward. That is exactly
  the traffic of a ring all-gather of the group's KV (each edge carries ``(cp-1)/cp`` of its
  ``cp`` chunks, Patarasuk & Yuan 2009), so the lowering is an all-gather over the CP group
  overlapped with ``(cp-1)/cp`` of the core, then the last ``1/cp`` of the core on the chunk
  that arrived last: time ``max((cp-1)·c, (cp-1)·x) + c`` for a chunk's compute ``c`` and
  transfer ``x``, which is the pipelined ring's ``c + (cp-1)·max(c, x)``.
- The **backward** passes the KV chunks around again and, beside them, the partial gradients
  dK and dV of each chunk, which return to their owner summed: twice the forward's bytes per
  edge (:func:`ring_traffic`), overlapped the same way with the core's backward.
- **Kernels.** A fused core is ``cp`` calls of the attention kernel, one per step, and the
  merges of the steps' partial results (output, dQ, dK, dV), as Transformer Engine's
  ``AttnFuncWithCPAndKVP2P`` runs them: ops of the layer's attention block
  (:func:`palmsim.workload.builders.layer_blocks` with ``cp``), costed with the core here.
- **Memory.** Every activation term shrinks by ``cp``: the token-proportional ones hold
  ``s/cp`` tokens, the ``a·s²`` ones are ``a·(s/cp)·s`` (:func:`cp_activation_bytes`). Weights,
  gradients and optimizer state are those of the rank's stage; the gradients are reduced over
  the ``dp·cp`` ranks that hold the same weights (Megatron-Core's data-parallel group "with
  context parallel").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from palmsim.config.specs import DTYPE_BYTES, TRAINING_STORAGE_DTYPE, ModelSpec, TrainingSpec
from palmsim.errors import MappingError
from palmsim.mapping.lower import Costing, Unit
from palmsim.mapping.plan import CollectiveKind, CollectiveStep, ComputeStep, GroupKind, Step
from palmsim.workload.builders import Block, activation_bytes_per_layer
from palmsim.workload.ops import Op

__all__ = [
    "RingTraffic",
    "causal_pairs",
    "contiguous_chunks",
    "cp_activation_bytes",
    "cp_attention",
    "cp_recompute",
    "kv_chunk_bytes",
    "load_balanced_chunks",
    "ring_attention_steps",
    "ring_traffic",
]

TokenRange = tuple[int, int]  # [first, last) token positions


def load_balanced_chunks(seq_len: int, cp: int) -> tuple[tuple[TokenRange, TokenRange], ...]:
    """Megatron-Core's causal load balancing: rank ``r`` holds chunks ``r`` and ``2·cp-1-r``
    of ``2·cp`` equal chunks.

    Raises:
        MappingError: ``2·cp`` does not divide ``seq_len``.
    """
    if seq_len % (2 * cp):
        raise MappingError(f"cp={cp}: seq_len {seq_len} is not a multiple of 2*cp = {2 * cp}")
    c = seq_len // (2 * cp)
    return tuple(
        ((r * c, (r + 1) * c), ((2 * cp - 1 - r) * c, (2 * cp - r) * c)) for r in range(cp)
    )


def contiguous_chunks(seq_len: int, cp: int) -> tuple[tuple[TokenRange], ...]:
    """Rank ``r`` holds tokens ``[r·s/cp, (r+1)·s/cp)``: the split without load balancing."""
    c = seq_len // cp
    return tuple(((r * c, (r + 1) * c),) for r in range(cp))


def causal_pairs(ranges: tuple[TokenRange, ...]) -> int:
    """Unmasked (query, key) pairs of causal attention for the queries in ``ranges``: query
    ``q`` attends to keys ``0..q``, so ``sum (q + 1)``."""
    return sum((last * (last + 1) - first * (first + 1)) // 2 for first, last in ranges)


def kv_chunk_bytes(
    model: ModelSpec, training: TrainingSpec, micro_batch_size: int, tp: int, cp: int
) -> float:
    """Bytes of one rank's K and V of one layer: ``2·e·b·(s/cp)·kv_t·d``, with ``kv_t`` the KV
    heads on a TP rank (``kv/t``, or 1 replicated head when ``kv < t``) [B].

    Multi-head latent attention passes the heads' expanded keys and values around the ring
    (Megatron-Core runs MLA's core through the same TE attention as any other):
    ``e·b·(s/cp)·(a/t)·(d_qk + d_v)``."""
    kv = model.num_key_value_heads
    kv_t = kv // tp if kv >= tp else 1
    if model.is_mla:
        kv_t = model.num_attention_heads // tp
    e = DTYPE_BYTES[TRAINING_STORAGE_DTYPE[training.dtype]]  # fp8 training keeps K, V in bf16
    widths = model.key_head_dim + model.value_head_dim
    return e * micro_batch_size * (training.seq_len // cp) * kv_t * widths


@dataclass(frozen=True, slots=True)
class RingTraffic:
    """What one rank sends to its ring successor for one layer and micro-batch [B]."""

    forward_bytes: float  # cp-1 KV chunks
    backward_bytes: float  # cp-1 KV chunks and cp-1 dKV chunks


def ring_traffic(
    model: ModelSpec, training: TrainingSpec, micro_batch_size: int, tp: int, cp: int
) -> RingTraffic:
    """The ring's bytes per rank: forward ``(cp-1)`` KV chunks, backward twice that."""
    chunk = kv_chunk_bytes(model, training, micro_batch_size, tp, cp)
    return RingTraffic((cp - 1) * chunk, 2 * (cp - 1) * chunk)


def cp_activation_bytes(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    tp: int,
    cp: int,
    recompute: str,
    *,
    layer: int | None = None,
) -> float:
    """Activation bytes one layer keeps on one CP rank: the ``cp = 1`` figure over ``cp``."""
    return activation_bytes_per_layer(
        model, training, micro_batch_size, tp, recompute, layer=layer, cp=cp
    )


def ring_attention_steps(
    core: ComputeStep, chunk_bytes: float, cp: int, *, phase: str
) -> tuple[Step, ...]:
    """The steps of a layer's attention core on one CP rank (module docstring, "Ring").

    Args:
        core: the rank's whole attention core for this pass (its queries against all keys),
            with its typed identity.
        chunk_bytes: one rank's KV chunk, :func:`kv_chunk_bytes`.
        cp: the CP degree.
        phase: ``F`` (KV all-gather) or ``B`` (KV and dKV, twice the bytes).

    Returns:
        ``core`` itself when ``cp`` is 1; else an all-gather over the ``cp`` group of
        ``cp·chunk`` bytes (``2·cp·chunk`` backward) with the first ``(cp-1)/cp`` of the core
        running while it is in flight, then the last ``1/cp`` of the core.
    """
    if cp == 1:
        return (core,)
    per_chunk = 1.0 / cp

    def part(fraction: float, name: str) -> ComputeStep:
        return dataclasses.replace(
            core,
            label=f"{core.label}.{name}",
            compute_time_s=core.compute_time_s * fraction,
            flop=core.flop * fraction,
            sram_bytes=core.sram_bytes * fraction,
            dram_read_bytes=core.dram_read_bytes * fraction,
            dram_write_bytes=core.dram_write_bytes * fraction,
        )

    size = cp * chunk_bytes * (2 if phase == "B" else 1)
    ring = CollectiveStep(
        f"{core.label}.kv_ring",
        CollectiveKind.ALLGATHER,
        size,
        GroupKind.CP,
        overlap=part((cp - 1) * per_chunk, "overlapped"),
        layer=core.layer,
        block=core.block,
        op=f"{core.op}.kv_ring",
    )
    return (ring, part(per_chunk, "last"))


def _split_core(block: Block) -> tuple[list[Op], list[Op], list[Op]]:
    """The attention block's ops before, in and after its core (the ops selective recompute
    re-runs: QKᵀ, softmax, its dropout, attention over V and its layout copy)."""
    core = [i for i, op in enumerate(block.ops) if op.recompute_selective]
    assert core == list(range(core[0], core[-1] + 1)), "the attention core is contiguous"
    ops = list(block.ops)
    return ops[: core[0]], ops[core[0] : core[-1] + 1], ops[core[-1] + 1 :]


def cp_attention(
    costing: Costing, unit: Unit, block: Block, phase: str, chunk_bytes: float, cp: int
) -> tuple[Step, ...]:
    """One pass (``F`` or ``B``) of the attention block on a CP rank: the ops before the core,
    the core on the KV ring (:func:`ring_attention_steps`), the ops after it (in reverse
    order for the backward). The block's TP collectives are the caller's."""
    before, core, after = _split_core(block)
    ring = ring_attention_steps(
        costing.step(core, phase, unit, block.name, "core"), chunk_bytes, cp, phase=phase
    )
    first, last = (before, after) if phase == "F" else (after, before)
    steps: list[Step] = []
    if first:
        steps.append(
            costing.step(first, phase, unit, block.name, "pre" if phase == "F" else "post")
        )
    steps.extend(ring)
    if last:
        steps.append(costing.step(last, phase, unit, block.name, "post" if phase == "F" else "pre"))
    return tuple(steps)


def cp_recompute(
    costing: Costing,
    unit: Unit,
    block: Block,
    recompute: str,
    chunk_bytes: float,
    cp: int,
    tp_steps: tuple[Step, ...],
) -> tuple[Step, ...]:
    """What the backward of a CP rank's attention block first re-runs: the whole forward with
    its ring and TP collectives (``full``), the core on the ring (``selective``), nothing."""
    if not unit.is_layer or recompute == "none":
        return ()
    if recompute == "full":
        return (*cp_attention(costing, unit, block, "F", chunk_bytes, cp), *tp_steps)
    _, core, _ = _split_core(block)
    step = costing.step(core, "F", unit, block.name, "core")
    return ring_attention_steps(step, chunk_bytes, cp, phase="F")
