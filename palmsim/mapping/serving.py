"""Map a serving experiment: replicas on tiles, their KV-cache capacity, and the lowering of
any iteration's batch into stage programs the engine runs.

Continuous batching makes every iteration a different batch, so the plan cannot hold one
program per step as :mod:`palmsim.mapping.inference` does. :class:`ServingPlan` holds what
is fixed (tiles, memory placement, KV blocks) and lowers a batch *shape* on demand into a
one-pass :class:`MappingPlan` built from the same cost models and op builders as the static
inference mapping. A shape (:class:`BatchShape`) holds exactly what the costs depend on, so
two iterations of the same shape have the same programs.

Per stage and layer an iteration runs (TP-local, like :func:`map_inference`):

- the attention block's projections, norms and rotary embedding over all ``T`` new tokens of
  the batch (the training builders at ``seq_len = T``, one sequence), with the attention core
  (``QKᵀ``, softmax, ``AV``) of each request over its own new tokens: the builders' core ops at
  ``seq_len = q`` for every prefill chunk of ``q > 1`` tokens, and at ``seq_len = 1`` batched
  over the single-token (decode) requests;
- the attention of new tokens over each request's *cached* tokens, at its true length:
  ``4·heads_t·head_dim·Σ q_i·c_i`` FLOP, reading ``Σ c_i`` tokens and writing ``T`` tokens of
  K and V (as :mod:`palmsim.mapping.inference`'s cache step, Pope et al. MLSys 2023);
- the TP all-reduces, the MLP over ``T`` tokens; the embedding over ``T`` tokens on the first
  stage; the final norm and LM head over the requests that sample a token this iteration (the
  last position of each, as vLLM computes logits only where it samples) on the last stage.

Under 2-D tensor parallelism (``serving.tp_2d = [a, b]``) an iteration runs the layer as
``palmsim run`` lowers it (:mod:`palmsim.mapping.inference`): each block built for ``a``
ranks and its ops split ``b`` ways, the 2-D collectives after each block
(:func:`~palmsim.mapping.inference.tp_2d_collectives`), none after the embedding; each
replica on a ``b x a`` rectangle of tiles. A request's KV cache is split by sequence over
the ``b`` ranks (each block's tokens spread over them, ``inference.kv_placement:
sequence``), so a tile holds ``kv/a`` KV heads of ``1/b`` of every request's tokens and
attends over them; keeping a request whole on one rank (``kv_placement: request``) would
need a block pool per rank of the second axis, which the scheduler does not have.

Memory per tile, SRAM first in this order: weights, the KV cache, one iteration's working
set at ``max_num_batched_tokens``. KV-cache capacity: ``gpu_memory_utilization`` of the
tile's SRAM plus its share of its DRAM port, minus weights and working set, in blocks of
``block_size`` tokens (vLLM's ``num_gpu_blocks``), the smallest over the replica's tiles.
KV reads come from SRAM in proportion to the part of the cache that lives there.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from palmsim.config.specs import (
    DTYPE_BYTES,
    HardwareSpec,
    MappingSpec,
    ModelSpec,
    ServingSpec,
    TrainingSpec,
)
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.compute import op_time_s
from palmsim.hardware.costs import (
    OperandPlacement,
    PassCost,
)
from palmsim.hardware.memory import split_sram_dram
from palmsim.mapping.communicators import communicators
from palmsim.mapping.inference import (
    check_decode_attention_cores,
    check_decode_readers_per_bank,
    check_mla_decode_attention,
    check_prefill_weight_readers,
    check_tp_2d,
    decode_attention_floor_s,
    decode_attention_flop_per_token,
    decode_attention_rate,
    dram_sharded_time_s,
    format_costing,
    fused_experts,
    host_dispatch_s,
    interleaved_read_floor_s,
    kv_token_bytes,
    memory_ops_in_series_s,
    mla_flop,
    padded_rows,
    prefill_cores_share,
    prefill_stream_time_s,
    split_block,
    tp_2d_collectives,
    two_axes,
    weight_format,
    with_weight_dtype,
)
from palmsim.mapping.lower import pipeline_p2p_bytes
from palmsim.mapping.partition import partition_by_layers
from palmsim.mapping.placement import place, place_rectangles
from palmsim.mapping.plan import (
    CollectiveKind,
    CollectiveStep,
    Communicator,
    ComputeStep,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
    Step,
)
from palmsim.serving.kvcache import KVGroups, kv_groups, skipped_tokens
from palmsim.units import GB
from palmsim.workload.builders import (
    Block,
    check_cached_attention,
    embedding_block,
    head_block,
    layer_blocks,
)
from palmsim.workload.moe import touched_experts
from palmsim.workload.ops import Op, attended_cache

__all__ = ["BatchShape", "ServingPlan", "batch_shape", "bounded_kinds", "map_serving"]

#: The attention-core ops of an ``attn`` block, computed per request (the rest is per token).
_CORE_OPS = frozenset({"scores", "softmax", "attn_dropout", "context", "attention"})


@dataclass(frozen=True, slots=True)
class BatchShape:
    """Everything an iteration's cost depends on.

    ``chunks`` are the new-token counts of the requests with more than one new token
    (prefill chunks), sorted; ``num_single`` requests have one (decodes, or a last prompt
    token). ``cached_tokens`` is ``Σ c_i`` and ``cached_pairs`` ``Σ q_i·c_i`` over requests
    with ``q_i`` new and ``c_i`` cached tokens, ``max_cached`` the largest ``c_i``, and
    ``chunk_pairs`` the part of ``cached_pairs`` over the prefill chunks (``chunk_cached``
    of ``cached_tokens``). ``bounded`` holds
    the same four, ``(cached_tokens, cached_pairs, max_cached, chunk_pairs)``, for each
    windowed or chunked kind of layer of the model (``kinds`` of :func:`batch_shape`), over
    the cached tokens its layers read (:func:`palmsim.workload.ops.attended_cache`).
    """

    num_tokens: int
    num_sampled: int
    chunks: tuple[int, ...]
    num_single: int
    cached_tokens: int
    cached_pairs: int
    max_cached: int = 0
    chunk_pairs: int = 0
    bounded: tuple[tuple[int, int, int, int], ...] = ()
    chunk_cached: int = 0


def batch_shape(
    entries: Sequence[Sequence[Any]], kinds: Sequence[tuple[int | None, int | None]] = ()
) -> BatchShape:
    """The shape of a batch of ``(new_tokens, cached_tokens, samples)`` per request (any
    sequence whose items start with those three), for a model whose windowed and chunked
    layers attend as ``kinds`` (``(window, chunk)`` each, :func:`bounded_kinds`)."""
    tokens = sampled = single = cached = pairs = longest = chunk_pairs = chunk_cached = 0
    chunks = []
    for e in entries:  # one pass: this runs once per iteration
        q, c, s = e[0], e[1], e[2]
        tokens += q
        sampled += s
        cached += c
        pairs += q * c
        longest = max(longest, c)
        if q == 1:
            single += 1
        elif q > 1:
            chunks.append(q)
            chunk_pairs += q * c
            chunk_cached += c
    sums = [[0, 0, 0, 0] for _ in kinds]
    for total, (window, chunk) in zip(sums, kinds, strict=True):  # a model's windowed layers
        for e in entries:
            q, c = e[0], e[1]
            first, p = attended_cache(c, q, window=window, chunk=chunk)
            total[0] += c - first
            total[1] += p
            total[2] = max(total[2], c - first)
            total[3] += p if q > 1 else 0
    chunks.sort()
    return BatchShape(
        tokens,
        sampled,
        tuple(chunks),
        single,
        cached,
        pairs,
        longest,
        chunk_pairs,
        tuple((t, p, m, cp) for t, p, m, cp in sums) if kinds else (),
        chunk_cached,
    )


def bounded_kinds(model: ModelSpec) -> tuple[tuple[int | None, int | None], ...]:
    """The model's kinds of windowed or chunked layers, ``(window, chunk)`` each, in the
    order of their first layers (a pattern repeats within ``global_attention_interval``
    layers when the model gives no ``layer_types``)."""
    kinds: list[tuple[int | None, int | None]] = []
    for i in _pattern_layers(model):
        kind = layer_kind(model, i)
        if kind != (None, None) and kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def _pattern_layers(model: ModelSpec) -> range:
    """Layers whose kinds are every kind of the model's (all of them where ``layer_types``
    lists them, else one period of ``global_attention_interval``)."""
    if model.layer_types is not None:
        return range(model.num_hidden_layers)
    return range(min(model.num_hidden_layers, max(model.global_attention_interval, 1)))


def layer_kind(model: ModelSpec, layer: int) -> tuple[int | None, int | None]:
    """How layer ``layer`` attends: ``(window, chunk)``, both None for full attention."""
    return model.attention_window(layer), model.attention_chunk(layer)


def _kind_index(
    model: ModelSpec, layer: int, kinds: tuple[tuple[int | None, int | None], ...]
) -> int:
    """Layer ``layer``'s kind as an index into ``kinds`` (:func:`bounded_kinds`), -1 for
    full attention."""
    own = layer_kind(model, layer)
    return kinds.index(own) if own in kinds else -1


def _layer_counts(
    model: ModelSpec, first: int, last: int, kinds: tuple[tuple[int | None, int | None], ...]
) -> dict[tuple[int, int], list[int]]:
    """Layers ``[first, last)`` by ``(attention kind, 1 for an expert MLP else 0)``, the kind
    -1 for full attention or its index in ``kinds`` (:func:`bounded_kinds`): ``{kind: [first layer,
    layers]}`` in order of first layers. Without a per-layer list (``layer_types``,
    ``hybrid_override_pattern``) both repeat every ``lcm(global_attention_interval,
    moe_layer_step)`` layers on each side of ``first_k_dense_replace``, so one period of
    each side is read and the rest counted (a model of 10^9 layers costs no more)."""

    def key(i: int) -> tuple[int, int]:
        return _kind_index(model, i, kinds), int(model.is_moe_layer(i))

    period = math.lcm(max(model.global_attention_interval, 1), max(model.moe_layer_step, 1))
    if model.layer_types is not None or model.hybrid_override_pattern is not None:
        period = max(last - first, 1)  # a per-layer list: every layer read, once
    dense = min(max(model.first_k_dense_replace, first), last)
    counts: dict[tuple[int, int], list[int]] = {}
    for a, b in ((first, dense), (dense, last)):
        for j in range(a, min(b, a + period)):  # j stands for j, j + period, ... below b
            counts.setdefault(key(j), [j, 0])[1] += (b - j + period - 1) // period
    return counts


@dataclass(frozen=True, slots=True)
class _StageMemory:
    """Where one stage's data lives on each of its tiles."""

    layers: tuple[int, int]
    where: OperandPlacement
    kv_sram_fraction: float  # of the KV cache's bytes, the part in SRAM
    kv_bytes_per_token: float  # per tile, one token of one request, every layer of the stage
    breakdown: MemoryBreakdown
    # (kind, first layer, layers) of each way the stage's layers attend, in order of their
    # first layers: kind -1 full attention, else its index in bounded_kinds(model)
    kinds: tuple[tuple[int, int, int], ...] = ()
    # (1 for a mixture of experts else 0, first layer, layers) of the stage's kinds of MLP
    mlp_kinds: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ServingPlan:
    """The fixed part of a serving mapping, and the lowering of batch shapes.

    ``replica_tiles[r][s]`` are replica ``r``'s stage-``s`` tiles in TP order. The lowering
    caches op lists by token count in ``_cache`` (per plan, never shared between runs).
    """

    serving: ServingSpec
    hardware: HardwareSpec
    model: ModelSpec
    replica_tiles: tuple[tuple[tuple[int, ...], ...], ...]
    num_kv_blocks: int  # per replica
    kv_bytes_per_token: float  # one token of one request, over all tiles of a replica
    peak_flop_per_s: float
    stages: tuple[_StageMemory, ...]
    dram_port_of_tile: tuple[tuple[int, int], ...]
    replica_communicators: tuple[tuple[Communicator, ...], ...]
    replicas_share_channels: bool  # replicas' traffic could meet: each is costed alone
    num_swap_blocks: int = 0  # per replica, preemption by swap: KV blocks host memory holds
    swap_bytes_per_block: float = 0.0  # the most one tile moves per swapped block
    # what a block holds and how many a request holds (palmsim.serving.kvcache)
    kv_groups: KVGroups = field(default_factory=KVGroups)
    _cache: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    def kv_bytes_held(self, s: int, tokens: int) -> float:
        """KV bytes a stage-``s`` tile holds of a request after ``tokens`` tokens: every
        token on a full layer; on a windowed or chunked one, the tokens of the blocks its
        window has not left (the pool's :meth:`~palmsim.serving.kvcache.BlockPool.blocks_for`
        rule)."""
        stage = self.stages[s]
        per_layer = stage.kv_bytes_per_token / max(stage.layers[1] - stage.layers[0], 1)
        size = self.serving.scheduler.block_size
        held = 0
        for kind, _, count in stage.kinds:
            window, chunk = self.attention_kinds[kind] if kind >= 0 else (None, None)
            held += count * (tokens - skipped_tokens(tokens, window, chunk) // size * size)
        return per_layer * held

    @property
    def grid(self) -> tuple[int, int]:
        """``(a, b)`` of 2-D tensor parallelism (``serving.tp_2d``); ``(tp, 1)``: 1-D."""
        return two_axes(self.serving.tp_2d) or (self.serving.tp, 1)

    @property
    def attention_kinds(self) -> tuple[tuple[int | None, int | None], ...]:
        """:func:`bounded_kinds` of the model, read once."""
        hit = self._cache.get("attention_kinds")
        if hit is None:
            hit = self._cache["attention_kinds"] = bounded_kinds(self.model)
        return hit  # type: ignore[return-value]

    def swap_time_s(self, blocks: int) -> float:
        """Time to move ``blocks`` KV blocks between the replica and host memory, one way:
        every tile moves its share (its stage's layers, its KV heads) over its own host link
        at once, so the tile with the most bytes sets it: bytes / bandwidth + latency."""
        host = self.hardware.host
        if not blocks:
            return 0.0
        assert host is not None
        return blocks * self.swap_bytes_per_block / host.bandwidth_bytes_per_s + host.latency_s

    # ----------------------------------------------------------------- op lists

    def _training(self, seq_len: int) -> TrainingSpec:
        # Serving engines run a fused attention kernel (vLLM's FlashAttention and FlashInfer
        # backends, tt-metal's ttnn SDPA): no s x s scores, the causal triangle only.
        return TrainingSpec(
            seq_len=seq_len, global_batch_size=1, dtype=self.serving.dtype, attention_kernel="fused"
        )

    def _format(self, kind: str, op: Op) -> str:
        """The format ``op`` of a block of ``kind`` runs at: the attention core's operands are
        activations; an op on weights, its weights' stored format (:func:`weight_format`)."""
        if kind == "core":
            return self.serving.dtype
        return weight_format(self.serving, kind, op.name)

    def _weights(self, ops: Sequence[Op], kind: str = "attn") -> list[Op]:
        """The ops with their weights read in their stored format."""
        act_elem = DTYPE_BYTES[self.serving.dtype]
        return [
            with_weight_dtype((op,), DTYPE_BYTES[self._format(kind, op)], act_elem)[0] for op in ops
        ]

    def _layer(self, tokens: int, requests: int = 1, layer: int = 0) -> tuple[Block, ...]:
        """Layer ``layer``'s blocks over ``requests`` sequences of ``tokens`` new tokens each
        (every layer's but for their attention core, :meth:`_core`).

        A mixture-of-experts layer runs its experts split over the TP ranks, its tokens
        routed uniformly and dropless:
        its expert GEMMs, one fused kernel each (:func:`fused_experts`), read the weights of
        the ``E·(1 - (1 - k/E)^T)`` experts its ``T`` tokens reach
        (:func:`palmsim.workload.moe.touched_experts`)."""
        model, (tp, ways) = self.model, self.grid
        training = self._training(tokens)
        if not model.is_moe or not model.is_moe_layer(layer):
            blocks = layer_blocks(model, training, requests, tp, layer=layer)
            # 2-D: the layer built for its a ranks, each op split over the b ranks
            return tuple(split_block(b, ways) for b in blocks) if ways > 1 else blocks
        reached = touched_experts(tokens * requests, model.num_experts_per_tok, model.num_experts)
        blocks = layer_blocks(model, training, requests, tp, layer=layer, touched_experts=reached)
        return tuple(fused_experts(b) for b in blocks)

    def _linear(self, tokens: int, layer: int = 0) -> tuple[list[Op], list[Op], float, list[Op]]:
        """Per-token ops of layer ``layer`` over ``tokens``: attention block without its core,
        the MLP (a mixture's router, experts and combine, or a dense layer's MLP), the
        all-reduce size, and the embedding."""
        key = ("linear", tokens, layer)
        hit = self._cache.get(key)
        if hit is None:
            tp = self.serving.tp
            attn, *mlp = self._layer(tokens, 1, layer)
            attn_ops = self._weights([op for op in attn.ops if op.name not in _CORE_OPS])
            embed = self._weights(embedding_block(self.model, self._training(tokens), 1, tp).ops)
            mlp_ops = self._weights([op for b in mlp for op in b.ops], "mlp")
            # the layer's TP all-reduce: after each block, or once after a parallel block's
            # MLP (model.parallel_block)
            reduce_bytes = max(b.allreduce_fwd_bytes for b in (attn, *mlp))
            hit = (attn_ops, mlp_ops, reduce_bytes, embed)
            self._cache[key] = hit
        return hit  # type: ignore[return-value]

    def _core(self, seq_len: int, requests: int, layer: int = 0) -> list[Op]:
        """Attention-core ops of ``requests`` requests of ``seq_len`` new tokens each, as
        layer ``layer`` attends (its window or chunks within the new tokens)."""
        key = ("core", seq_len, requests, layer)
        hit = self._cache.get(key)
        if hit is None:
            attn = self._layer(seq_len, requests, layer)[0]
            hit = [op for op in attn.ops if op.name in _CORE_OPS]
            self._cache[key] = hit
        return hit  # type: ignore[return-value]

    def _head(self, tokens: int) -> list[Op]:
        key = ("head", tokens)
        hit = self._cache.get(key)
        if hit is None:
            tied = self.serving.pp > 1 or not self.model.tie_word_embeddings
            block = head_block(
                self.model, self._training(tokens), 1, self.serving.tp, count_tied_weights=tied
            )
            hit = self._weights(block.ops)
            self._cache[key] = hit
        return hit  # type: ignore[return-value]

    # ----------------------------------------------------------------- lowering

    def _kv_step(
        self, shape: BatchShape, stage: _StageMemory, label: str, kind: int = -1
    ) -> ComputeStep:
        """One layer's attention over the cached tokens and the write of the new ones: every
        cached token (``kind`` -1), or those the window or chunk of kind ``kind`` of
        :func:`bounded_kinds` reaches (``shape.bounded``), read from a cache whose blocks
        before it are freed."""
        if kind >= 0:
            cached, pairs, most, chunk_pairs = shape.bounded[kind]
            shape = dataclasses.replace(
                shape,
                cached_tokens=cached,
                cached_pairs=pairs,
                max_cached=most,
                chunk_pairs=chunk_pairs,
            )
        model, tile = self.model, self.hardware.tile
        tp, ways = self.grid
        kv_t = model.num_key_value_heads // tp if model.num_key_value_heads >= tp else 1
        heads_t = model.num_attention_heads // tp
        # 2-D: a tile holds 1/b of every request's tokens (map_serving) and attends over them
        per_token = kv_token_bytes(model, kv_t, 1, DTYPE_BYTES[self.serving.kv_dtype]) / ways
        flop = 4.0 * heads_t * model.head_dim * shape.cached_pairs / ways
        if model.is_mla:
            # vLLM's MLA backend: decodes absorbed over the latents, a prefill chunk's
            # context up projected and attended as multi-head attention (mla_flop)
            decode_pair, prefill_pair, prefill_cached = mla_flop(model, 1, heads_t)
            flop = (
                decode_pair * (shape.cached_pairs - shape.chunk_pairs)
                + prefill_pair * shape.chunk_pairs
                + prefill_cached * shape.chunk_cached
            )
        moved = per_token * (shape.cached_tokens + shape.num_tokens)
        sram = moved * stage.kv_sram_fraction
        dram = moved - sram
        read = dram * shape.cached_tokens / (shape.cached_tokens + shape.num_tokens)
        # at the activation dtype's fidelity, as peak_flop_per_s; in an iteration holding a
        # prefill on serving.prefill_compute_cores of the tile's cores (Costing.on_cores)
        fidelity = dict(self.serving.math_fidelity).get(self.serving.dtype)
        efficiency = tile.at_fidelity(tile.compute_efficiency, fidelity)
        share = self._share(prefill=bool(shape.chunks))
        # the prefill chunks' part in the fused attention kernel, at tile.attention_efficiency
        # where the tile gives one (palmsim run's prefill): the rate of the whole FLOP
        rate = efficiency
        if tile.attention_efficiency > 0 and shape.chunk_pairs > 0 and not model.is_mla:
            rest = shape.cached_pairs - shape.chunk_pairs
            rate = shape.cached_pairs / (
                shape.chunk_pairs / tile.attention_efficiency + rest / efficiency
            )
        t = op_time_s(
            flop,
            sram,
            peak_flop_per_s=self.peak_flop_per_s * share,
            efficiency=rate,
            sram_bandwidth_bytes_per_s=tile.sram_bandwidth_bytes_per_s * share,
        )
        cores, peak, attention_efficiency = decode_attention_rate(self.hardware, self.serving, kv_t)
        if cores > 0 and not shape.chunks:
            # each request's attention on its own cores (inference.decode_attention_cores):
            # the iteration waits for the one with the longest cache
            longest = shape.max_cached * (1 - stage.kv_sram_fraction)
            t = max(
                t,
                decode_attention_floor_s(
                    self.hardware,
                    cores=cores,
                    read_bytes=per_token * longest,
                    flop=shape.max_cached
                    / ways
                    * decode_attention_flop_per_token(
                        heads_t, kv_t, model.head_dim, self.hardware.tile.matrix_tile_rows
                    ),
                    peak_flop_per_s=peak,
                    efficiency=attention_efficiency,
                ),
            )
        # the cache's pages are interleaved over the DRAM banks (tt-metal's paged cache)
        t = max(t, interleaved_read_floor_s(self.hardware, read))
        return ComputeStep(label, t, flop, sram, read, dram - read)

    def _share(self, prefill: bool) -> float:
        """The share of a tile's cores an iteration's layers run on: with a prefill in it,
        ``serving.prefill_compute_cores`` of them (as palmsim run prefills), else all."""
        if not prefill:
            return 1.0
        return prefill_cores_share(self.hardware, self.serving.prefill_compute_cores, "serving")

    def _step(
        self,
        kind: str,
        size: int,
        count: int,
        s: int,
        dram_sharded: bool = False,
        prefill: bool = False,
        layer: int = 0,
    ) -> ComputeStep:
        """The cost of one piece of a layer on a stage-``s`` tile, cached: ``attn`` (the
        attention block without its core, ``size`` tokens), ``core`` (``count`` requests of
        ``size`` new tokens, as layer ``layer`` attends), ``mlp``, ``embed`` or ``head``
        (``size`` tokens). With
        ``dram_sharded`` the weight GEMMs run on ``serving.decode_readers_per_bank`` cores per
        DRAM bank, as ``palmsim run`` decodes (the layers in an iteration without a prefill,
        the LM head in every iteration); with ``prefill`` (a layer's piece in an iteration
        holding a prefill) their DRAM weights reach the cores through
        ``serving.prefill_weight_readers`` column readers and they run on
        ``serving.prefill_compute_cores`` of the tile's cores, as ``palmsim run`` prefills."""
        key = ("step", kind, size, count, s, dram_sharded, prefill, layer)
        hit = self._cache.get(key)
        if hit is None:
            if kind == "core":
                ops = self._core(size, count, layer)
            elif kind == "head":
                ops = self._head(size)
            else:
                attn_ops, mlp_ops, _, embed = self._linear(size, layer)
                ops = {"attn": attn_ops, "mlp": mlp_ops, "embed": embed}[kind]
            hw = self.hardware
            # As the inference mapping costs a block: each GEMM at the efficiency of its
            # weights' format, the activation dtype's peak at the math fidelity of that
            # format; the attention core, two activations multiplied, as weights of the
            # activation dtype.
            where = self.stages[s].where
            share = self._share(prefill)

            def cost(group: Sequence[Op], dtype: str) -> PassCost:
                costing = format_costing(hw, self.serving, dtype, where).on_cores(share)
                return costing.cost(group, "F")

            groups: dict[str, list[Op]] = {}
            for op in ops:
                groups.setdefault(self._format(kind, op), []).append(op)
            parts = [cost(group, dtype) for dtype, group in groups.items()]
            c = sum(parts[1:], parts[0]) if parts else cost(ops, self.serving.dtype)
            time_s = c.time_s
            per_bank = self.serving.decode_readers_per_bank if dram_sharded else 0
            if per_bank > 0 and where.weights > 0:
                sharded_s = dram_sharded_time_s(
                    ops,
                    lambda op: cost((op,), self._format(kind, op)).flop_time_s,
                    where.weights,
                    per_bank,
                    hw,
                )
                time_s = max(time_s, c.serial_latency_s + sharded_s)
            readers = self.serving.prefill_weight_readers if prefill else 0
            stream_s = prefill_stream_time_s(
                ops, partial(self._format, kind), hw.tile, readers, where.weights
            )
            if stream_s > 0:
                time_s = max(time_s, c.serial_latency_s + stream_s)
            if prefill and kind in ("attn", "mlp"):
                # a layer's memory-bound ops between its GEMMs, as inference's prefill
                time_s += memory_ops_in_series_s(hw, ops, where.activations)
            hit = ComputeStep(
                kind,
                time_s,
                c.flop,
                c.sram_bytes,
                c.dram_read_bytes,
                c.dram_write_bytes,
                launch_latency_s=c.launch_latency_s,
                flop_time_s=c.flop_time_s,
                serial_latency_s=c.serial_latency_s,
                block=kind,
                op=kind,
            )
            self._cache[key] = hit
        return hit  # type: ignore[return-value]

    def segments(self, shape: BatchShape, s: int) -> tuple[tuple[str, tuple[Step, ...], int], ...]:
        """Stage ``s``'s program for ``shape`` as ``(kind, steps, repeats)`` segments in order:
        ``embed`` (first stage), ``attn`` and ``mlp`` once per layer, ``head`` (last stage).

        Each segment ends with its TP all-reduce (a barrier: every tile of the stage leaves it
        at the same instant with no flow in flight) or, with one tile, with its last step, so
        on one stage a segment's duration does not depend on what ran before it. With one
        tile the attention's cache step is a segment of its own (``kv``). A parallel block's
        attention (``model.parallel_block``) ends with its last step: the MLP's all-reduce
        reduces both branches. Under 2-D tensor parallelism a block's segment ends with its
        TPB collectives and the TPA all-reduce (:func:`tp_2d_collectives`): each row of the
        replica's rectangle leaves together, the rows (running the same steps) near
        together, and a segment is costed as if all its tiles started at once.
        """
        before, attentions, attn_closing, after = self._fixed_segments(
            shape.num_tokens, shape.chunks, shape.num_single, shape.num_sampled, s
        )
        tp = self.serving.tp
        stage = self.stages[s]
        cached = shape.cached_tokens + shape.num_tokens
        attns: list[tuple[str, tuple[Step, ...], int]] = []
        kvs: list[tuple[str, tuple[Step, ...], int]] = []
        # one attention segment (and cache step) per way the stage's layers attend
        for (kind, _, count), attention in zip(stage.kinds, attentions, strict=True):
            kv = self._kv_step(shape, stage, "kv", kind) if cached else None
            if tp == 1:
                # One tile: every step ends with its own DRAM flows, a segment boundary too,
                # so the cache step (new every iteration) is costed apart from the block's ops.
                attns.append(("attn", (attention,), count))
                if kv is not None:
                    kvs.append(("kv", (kv,), count))
                continue
            steps: tuple[Step, ...] = (attention,) if kv is None else (attention, kv)
            attns.append(("attn", steps + attn_closing, count))
        return (*before, *attns, *kvs, *after)

    def _fixed_segments(
        self, tokens: int, chunks: tuple[int, ...], num_single: int, num_sampled: int, s: int
    ) -> tuple[
        tuple[tuple[str, tuple[Step, ...], int], ...],
        tuple[ComputeStep, ...],
        tuple[CollectiveStep, ...],
        tuple[tuple[str, tuple[Step, ...], int], ...],
    ]:
        """The parts of stage ``s``'s segments that do not depend on the cached tokens
        (cached, since batches of the same token counts recur): the segments before the
        attention, its step without the cache step for each way the stage's layers attend
        (``_StageMemory.kinds``), its TP collectives (none: a parallel block's attention,
        reduced with its MLP), and those after it."""
        key = ("fixed", tokens, chunks, num_single, num_sampled, s)
        hit = self._cache.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        tp, pp = self.serving.tp, self.serving.pp
        # pass_cost sums its ops' times, FLOP and bytes, so the attention block's step is the
        # sum of its per-token part and each request group's core.
        decode_only = not chunks
        # An iteration not replayed from a trace (serving.trace) is dispatched by the host op
        # by op, tile.host_dispatch each, ahead of the device, as palmsim run's passes are
        # (mapping/inference.py): a segment's step carries its ops' host time, its TP
        # collectives' (one op each) included, and the engine runs the host and the device as a
        # pipeline over the iteration's segments (engine/serving.py, _HostPipeline).
        dispatch_s = host_dispatch_s(self.serving.trace, self.hardware.tile, decode=decode_only)
        # the iteration's rows padded to whole tiles, as a pass's (tile.matrix_tile_rows)
        rows = padded_rows(tokens, self.hardware.tile.matrix_tile_rows)
        allreduce_bytes = self._linear(tokens)[2] * rows / tokens
        a, b = self.grid

        def closing(kind: str) -> tuple[CollectiveStep, ...]:
            """The TP collectives closing a segment of ``kind``: Megatron's g operator (and
            the vocab-parallel embedding's sum) in 1-D; in 2-D a block's collectives of
            ``palmsim run`` (:func:`tp_2d_collectives`), and none after the embedding, as
            its 2-D passes lower it."""
            if tp == 1:
                return ()
            if b == 1:
                return (CollectiveStep(f"{kind}.ar", CollectiveKind.ALLREDUCE, allreduce_bytes),)
            if kind == "embed":
                return ()
            pieces = tp_2d_collectives(
                self.model,
                kind,
                (a, b),
                row_bytes=rows * DTYPE_BYTES[self.serving.dtype],
                allreduce_bytes=allreduce_bytes,
                decode=decode_only,
            )
            return tuple(
                CollectiveStep(f"{kind}.{suffix}", k, nbytes, group)
                for k, group, nbytes, suffix in pieces
            )

        def dispatched(
            step: ComputeStep,
            ops: Sequence[Op],
            extra: int = 0,
            closed: tuple[CollectiveStep, ...] = (),
        ) -> ComputeStep:
            if dispatch_s <= 0:
                return step
            issued = sum(op.kernels_fwd for op in ops) + extra + len(closed)
            return dataclasses.replace(step, host_issued_s=issued * dispatch_s)

        # The serving code's ops beyond the op graph's kernels (serving.ops_per_layer) each
        # pay the tile's op latency, charged to the attention step as in palmsim run.
        attn_ops, mlp_ops, _, _ = self._linear(tokens)
        core_ops = self._core(1, 1)
        graph_ops = sum(op.kernels_fwd for op in (*attn_ops, *mlp_ops, *core_ops))
        extra_s = max(self.serving.ops_per_layer - graph_ops, 0) * self.hardware.tile.op_latency_s
        groups = len(chunks) + (1 if num_single else 0)
        # a parallel block's attention hands its partial sums to the MLP unreduced
        attn_closing = closing("attn") if self.model.parallel_block == "none" else ()
        linear = self._step("attn", tokens, 1, s, decode_only, prefill=not decode_only)
        attentions = []
        for _, layer, _ in self.stages[s].kinds:
            # each prefill chunk's attention within itself as the layer attends (its window)
            parts = [linear]
            parts += [self._step("core", q, 1, s, prefill=True, layer=layer) for q in chunks]
            if num_single:
                parts.append(
                    self._step("core", 1, num_single, s, prefill=not decode_only, layer=layer)
                )
            attention = ComputeStep(
                "attn",
                sum(p.compute_time_s for p in parts) + extra_s,
                sum(p.flop for p in parts),
                sum(p.sram_bytes for p in parts),
                sum(p.dram_read_bytes for p in parts),
                sum(p.dram_write_bytes for p in parts),
                launch_latency_s=extra_s,
                serial_latency_s=sum(p.serial_latency_s for p in parts) + extra_s,
            )
            attentions.append(
                dispatched(
                    attention,
                    attn_ops,
                    groups * sum(op.kernels_fwd for op in core_ops)
                    + max(self.serving.ops_per_layer - graph_ops, 0),
                    closed=attn_closing,
                )
            )

        before: list[tuple[str, tuple[Step, ...], int]] = []
        if s > 0 and tp > 1:
            gather = self._p2p(tokens)[1]
            if gather > 0:
                before.append(
                    ("recv", (CollectiveStep("recv", CollectiveKind.ALLGATHER, gather),), 1)
                )
        _, _, _, embed_ops = self._linear(tokens)
        if s == 0:
            embed_closing = closing("embed")
            embed = dispatched(self._step("embed", tokens, 1, s), embed_ops, closed=embed_closing)
            before.append(("embed", (embed, *embed_closing), 1))
        after: list[tuple[str, tuple[Step, ...], int]] = []
        mlp_closing = closing("mlp")
        for _, layer, count in self.stages[s].mlp_kinds:  # dense and expert MLPs apart
            mlp = self._step("mlp", tokens, 1, s, decode_only, prefill=not decode_only, layer=layer)
            own = self._linear(tokens, layer)[1]
            after.append(("mlp", (dispatched(mlp, own, closed=mlp_closing), *mlp_closing), count))
        if s == pp - 1 and num_sampled:
            head = self._step("head", num_sampled, 1, s, dram_sharded=True)
            after.append(("head", (dispatched(head, self._head(num_sampled)),), 1))
        result = (tuple(before), tuple(attentions), attn_closing, tuple(after))
        self._cache[key] = result
        return result

    def _program(self, shape: BatchShape, s: int) -> tuple[Step, ...]:
        """Stage ``s``'s whole program: its segments in order, layer by layer (each layer its
        kind's attention and cache step, and its kind's MLP)."""
        stage = self.stages[s]
        first, last = stage.layers
        segments = self.segments(shape, s)
        attns = [seg[1] for seg in segments if seg[0] == "attn"]
        kvs = [seg[1] for seg in segments if seg[0] == "kv"] or [()] * len(attns)
        mlps = [seg[1] for seg in segments if seg[0] == "mlp"]
        attention = {
            kind: (*attn, *kv)
            for (kind, _, _), attn, kv in zip(stage.kinds, attns, kvs, strict=True)
        }
        mlp = {moe: steps for (moe, _, _), steps in zip(stage.mlp_kinds, mlps, strict=True)}
        kinds = self.attention_kinds
        steps: list[Step] = []
        done = False
        for kind, seg_steps, _ in segments:
            if kind == "attn" and not done:
                done = True
                for i in range(first, last):
                    layer_steps = (
                        *attention[_kind_index(self.model, i, kinds)],
                        *mlp[int(self.model.is_moe_layer(i))],
                    )
                    steps += [
                        dataclasses.replace(st, label=f"L{i}.{st.label}") for st in layer_steps
                    ]
            elif kind not in ("attn", "kv", "mlp"):
                steps += seg_steps
        # each step's host time is its segment's own: the pass's is their running sum
        issued = 0.0
        for n, st in enumerate(steps):
            if isinstance(st, ComputeStep) and st.host_issued_s > 0:
                issued += st.host_issued_s
                steps[n] = dataclasses.replace(st, host_issued_s=issued)
        return tuple(steps)

    def _p2p(self, tokens: int) -> tuple[float, float]:
        boundary = tokens * self.model.hidden_size * DTYPE_BYTES[self.serving.dtype]
        return pipeline_p2p_bytes(
            boundary, self.serving.tp, scatter_gather=True, sequence_parallel=False
        )

    def iteration_plan(self, replica: int, shape: BatchShape) -> MappingPlan:
        """A one-pass :class:`MappingPlan` of replica ``replica`` running a batch of ``shape``.

        Every stage runs its program once (micro-batch 0) and sends its activations on; the
        engine simulates it with its contended flows like any plan.
        """
        key = ("programs", shape)
        programs = self._cache.get(key)
        if programs is None:
            zero = ComputeStep("none", 0.0, 0.0, 0.0, 0.0, 0.0)
            programs = tuple(
                StageProgram(
                    stage=s,
                    layers=self.stages[s].layers,
                    forward=self._program(shape, s),
                    backward=(),
                    recompute=(),
                    activation_bytes_per_microbatch=0.0,
                    send_bytes=self._p2p(shape.num_tokens)[0],
                    optimizer=zero,
                    steps=(("F", 0),),
                )
                for s in range(self.serving.pp)
            )
            self._cache[key] = programs
        return self._plan(replica, programs, shape.num_sampled, shape.num_tokens)  # type: ignore[arg-type]

    @property
    def is_segmented(self) -> bool:
        """Whether an iteration's duration is the sum of its segments' (one stage)."""
        return self.serving.pp == 1

    def segment_plan(self, replica: int, steps: tuple[Step, ...]) -> MappingPlan:
        """A one-stage plan running ``steps`` once on replica ``replica``'s tiles (``pp`` 1)."""
        assert self.is_segmented
        zero = ComputeStep("none", 0.0, 0.0, 0.0, 0.0, 0.0)
        program = StageProgram(
            stage=0,
            layers=self.stages[0].layers,
            forward=steps,
            backward=(),
            recompute=(),
            activation_bytes_per_microbatch=0.0,
            send_bytes=0.0,
            optimizer=zero,
            steps=(("F", 0),),
        )
        return self._plan(replica, (program,), 0, 0)

    def _plan(
        self, replica: int, programs: tuple[StageProgram, ...], sampled: int, tokens: int
    ) -> MappingPlan:
        tiles = self.replica_tiles[replica]
        used = {t for st in tiles for t in st}
        return MappingPlan(
            mapping=MappingSpec(
                pp=self.serving.pp, tp=self.serving.tp, dp=1, tp_2d=two_axes(self.serving.tp_2d)
            ),
            num_microbatches=1,
            stage_tiles=(tiles,),
            programs=programs,
            dram_port_of_tile=tuple(tp for tp in self.dram_port_of_tile if tp[0] in used),
            memory=tuple((t, self.stages[s].breakdown) for s, st in enumerate(tiles) for t in st),
            placement=self.serving.placement,
            model_flop_per_iteration=0.0,
            peak_flop_per_s=self.peak_flop_per_s,
            samples_per_iteration=sampled,
            tokens_per_iteration=tokens,
            communicators=self.replica_communicators[replica],
        )


def _elem(serving: ServingSpec, kind: str, op: Op) -> float:
    """Bytes per element of ``op``'s weights in a block of ``kind`` (:func:`weight_format`)."""
    return DTYPE_BYTES[weight_format(serving, kind, op.name)]


def map_serving(
    serving: ServingSpec, hardware: HardwareSpec, model: ModelSpec, chip: Chip
) -> ServingPlan:
    """Place the replicas, size their KV caches and return the :class:`ServingPlan`.

    Raises:
        MappingError: too few tiles, an indivisible TP degree, weights and working set
            that leave no room for one KV block, an attention whose cache is not modelled
            (:func:`palmsim.workload.builders.check_cached_attention`), multi-head latent
            attention on SDPA decode cores or beside windowed layers, or prefix caching over
            windowed layers, or a ``serving.tp_2d`` that cannot be lowered or placed.
        ConfigError: the hardware has no peak for the serving dtype.
    """
    pp, tp, replicas = serving.pp, serving.tp, serving.replicas
    check_cached_attention(model)
    check_tp_2d(model, tp, pp, serving.tp_2d, "serving.tp_2d")
    tp_2d = two_axes(serving.tp_2d)
    heads_ranks, ways = tp_2d or (tp, 1)  # (a, b)
    kinds = bounded_kinds(model)
    check_mla_decode_attention(model, serving.decode_attention_cores, "serving")
    if model.is_mla and kinds:
        raise MappingError(
            f"model {model.name!r}: multi-head latent attention with sliding-window or chunked "
            "layers is not modelled"
        )
    try:
        # the attention over the cache runs at the activation dtype's fidelity
        peak = hardware.tile.peak_for(serving.dtype, dict(serving.math_fidelity).get(serving.dtype))
    except KeyError:
        raise ConfigError.single(
            hardware.name,
            f"tile.peak.{serving.dtype}",
            ConfigError.MISSING,
            f"a peak FLOP/s for the serving dtype {serving.dtype!r}",
        ) from None
    if pp > model.num_hidden_layers:
        raise MappingError(f"pp {pp} exceeds the model's {model.num_hidden_layers} layers")
    check_decode_readers_per_bank(hardware, serving.decode_readers_per_bank, "serving")
    check_decode_attention_cores(hardware, serving.decode_attention_cores, "serving")
    check_prefill_weight_readers(hardware, serving.prefill_weight_readers, "serving")
    prefill_cores_share(hardware, serving.prefill_compute_cores, "serving")  # raises
    knobs = "serving.pp, serving.tp and serving.replicas"
    stage_tiles: tuple[tuple[tuple[int, ...], ...], ...]
    if tp_2d is not None:  # one stage (check_tp_2d), each replica on a b x a rectangle
        stage_tiles = place_rectangles(
            chip,
            serving.placement,
            tp_2d,
            replicas,
            key="serving.tp_2d",
            replicas=("replicas", "serving.replicas"),
            knobs="serving.tp and serving.replicas",
        )
    else:
        stage_tiles = place(
            chip, serving.placement, pp, tp, replicas, names="pp*tp*replicas", knobs=knobs
        )
    sched = serving.scheduler
    kv_elem = DTYPE_BYTES[serving.kv_dtype]
    kv_t = max(model.num_key_value_heads // heads_ranks, 1)
    probe = ServingPlan(serving, hardware, model, stage_tiles, 0, 0.0, peak, (), (), (), False)
    layer_ranges = partition_by_layers(model.num_hidden_layers, pp)
    stage_counts = [_layer_counts(model, first, last, kinds) for first, last in layer_ranges]
    whole: dict[tuple[int, int], int] = {}
    first_of: dict[int, int] = {}  # a layer of each kind of MLP
    for per_stage in stage_counts:
        for (kind, moe), (i, n) in per_stage.items():
            whole[kind, moe] = whole.get((kind, moe), 0) + n
            first_of.setdefault(moe, i)
    # a dense and an expert layer's ops (those a model has), at the largest batch
    per_kind = {moe: probe._linear(sched.max_num_batched_tokens, i) for moe, i in first_of.items()}
    attn_ops, _, _, embed = per_kind[int(model.is_moe_layer(0))]
    # each kind's MLP parameters in their stored format (weight_format)
    mlp_bytes = {
        moe: float(sum(op.params * _elem(serving, "mlp", op) for op in ops[1]))
        for moe, ops in per_kind.items()
    }
    head = probe._head(min(sched.max_num_seqs, sched.max_num_batched_tokens))
    working = float(max(op.bytes_fwd for a, m, _, _ in per_kind.values() for op in a + m))
    port_of = [(t, chip.home_dram_port(t)) for rep in stage_tiles for st in rep for t in st]
    used_on_port: dict[int, int] = {}
    for _, port in port_of:
        used_on_port[port] = used_on_port.get(port, 0) + 1
    sram = hardware.tile.sram_capacity_bytes
    by_attention: dict[tuple[int | None, int | None], int] = {}
    for (kind, _), n in whole.items():
        attends = kinds[kind] if kind >= 0 else (None, None)
        by_attention[attends] = by_attention.get(attends, 0) + n
    groups = kv_groups(by_attention)
    if groups.is_hybrid and sched.enable_prefix_caching:
        raise MappingError(
            f"model {model.name!r}: prefix caching over sliding-window or chunked layers "
            "(vLLM V1's cache-hit search over blocks a window frees) is not modelled; set "
            "scheduler.enable_prefix_caching false"
        )
    # Pass 1: the blocks every tile has room for (the smallest over all stages and tiles).
    # first, last, weights, KV bytes a token, KV bytes a block
    demands: list[tuple[int, int, float, float, float]] = []
    blocks: int | None = None
    for s, (first, last) in enumerate(layer_ranges):
        own = [*(embed if s == 0 else []), *(head if s == pp - 1 else [])]
        # each op's parameters in its stored format (weight_format)
        weights = float(sum(op.params * _elem(serving, "attn", op) for op in own))
        weights += (last - first) * float(
            sum(op.params * _elem(serving, "attn", op) for op in attn_ops)
        )
        weights += sum(mlp_bytes[moe] * n for (_, moe), (_, n) in stage_counts[s].items())
        # 2-D: a tile holds its a-rank's KV heads of 1/b of every request's tokens (each
        # block's tokens split by sequence over the b ranks: WaferLLM's decode spreads a
        # request's cache over its grid so, inference.kv_placement 'sequence')
        kv_per_token = (last - first) * kv_token_bytes(model, kv_t, 1, kv_elem) / ways
        # a block holds block_size tokens of one KV cache group's layers: all the stage's
        # where its layers attend alike, else its share of a group (vLLM V1 groups a PP
        # rank's layers by the same split)
        group_layers = -(-(groups.layers_per_group or model.num_hidden_layers) * (last - first)
                         // model.num_hidden_layers)  # fmt: skip
        block_bytes = kv_per_token / (last - first) * group_layers * sched.block_size
        demands.append((first, last, weights, kv_per_token, block_bytes))
        for rep in stage_tiles:
            for tile in rep[s]:
                port = chip.home_dram_port(tile)
                share = chip.dram_ports[port].capacity_bytes / used_on_port[port]
                free = sched.gpu_memory_utilization * (sram + share) - weights - working
                fit = int(free // block_bytes) if free > 0 else 0
                blocks = fit if blocks is None else min(blocks, fit)
    assert blocks is not None
    if blocks < 1:
        heaviest = max(d[2] for d in demands)
        more = (
            "more tensor parallelism (serving.tp with a larger serving.tp_2d)"
            if tp_2d is not None
            else "more tensor or pipeline parallelism (serving.tp, serving.pp)"
        )
        raise MappingError(
            f"serving does not fit: a tile of the replica needs weights "
            f"{heaviest / GB:.4g} GB and a working set of {working / GB:.4g} GB, "
            f"leaving no room for one KV block within gpu_memory_utilization "
            f"{sched.gpu_memory_utilization} of its memory; use {more}, or a smaller "
            f"scheduler.max_num_batched_tokens"
        )
    if sched.num_kv_blocks:
        if sched.num_kv_blocks > blocks:
            raise MappingError(
                f"scheduler.num_kv_blocks {sched.num_kv_blocks} exceeds the {blocks} blocks the "
                f"replica's memory holds"
            )
        blocks = sched.num_kv_blocks
    # Pass 2: where each stage's weights, cache and working set live (SRAM first).
    stages: list[_StageMemory] = []
    for (first, last, weights, kv_per_token, block_bytes), both in zip(
        demands, stage_counts, strict=True
    ):
        kv_bytes = blocks * block_bytes
        counts: dict[int, list[int]] = {}  # attention kind -> [first layer, layers]
        mlp_counts: dict[int, list[int]] = {}  # expert MLP or not -> the same
        for (kind, moe), (i, n) in sorted(both.items(), key=lambda item: item[1][0]):
            counts.setdefault(kind, [i, 0])[1] += n
            mlp_counts.setdefault(moe, [i, 0])[1] += n
        (_, w_sram, w_dram), (_, kv_sram, kv_dram), (_, a_sram, a_dram) = split_sram_dram(
            [("weights", weights), ("kv", kv_bytes), ("activations", working)], sram
        )
        stages.append(
            _StageMemory(
                layers=(first, last),
                where=OperandPlacement(
                    w_dram / weights if weights else 0.0,
                    0.0,
                    0.0,
                    a_dram / working if working else 0.0,
                ),
                kv_sram_fraction=kv_sram / kv_bytes if kv_bytes else 0.0,
                kv_bytes_per_token=kv_per_token,
                kinds=tuple((kind, i, n) for kind, (i, n) in counts.items()),
                mlp_kinds=tuple((moe, i, n) for moe, (i, n) in mlp_counts.items()),
                breakdown=MemoryBreakdown(
                    weights,
                    0.0,
                    0.0,
                    kv_bytes + working,
                    sram_bytes=w_sram + kv_sram + a_sram,
                    dram_bytes=w_dram + kv_dram + a_dram,
                ),
            )
        )
    per_replica = []
    channel_users: dict[int, set[int]] = {}
    for r, rep in enumerate(stage_tiles):
        comms, _, _ = communicators(
            chip,
            (rep,),
            pipeline_wraps=False,
            symmetric_replicas=False,
            tp_2d=tp_2d,
        )
        per_replica.append(comms)
        for st in rep:
            for t in st:
                port = chip.home_dram_port(t)
                for write in (False, True):
                    for c in chip.dram_route(t, port, write=write).channels:
                        channel_users.setdefault(c, set()).add(r)
        for a, b in itertools.pairwise(rep):
            for src, dst in zip(a, b, strict=True):  # rank to rank, as pipeline sends go
                for c in chip.route(src, dst).channels:
                    channel_users.setdefault(c, set()).add(r)
        for comm in comms:
            for f in comm.flows:
                for c in f.channels:
                    channel_users.setdefault(c, set()).add(r)
    shared = any(len(users) > 1 for users in channel_users.values())
    swap_blocks, swap_block_bytes = 0, 0.0
    if sched.preemption_mode == "swap":
        host = hardware.host
        if host is None:
            raise MappingError(
                f"preemption_mode swap needs host memory to swap to, and hardware "
                f"{hardware.name!r} has no host: section; use preemption_mode recompute"
            )
        swap_block_bytes = max(d[4] for d in demands)
        swap_blocks = int(min(sched.swap_space_bytes, host.capacity_bytes) // swap_block_bytes)
    return ServingPlan(
        serving=serving,
        hardware=hardware,
        model=model,
        replica_tiles=stage_tiles,
        num_kv_blocks=blocks,
        kv_bytes_per_token=sum(st.kv_bytes_per_token for st in stages) * tp,
        peak_flop_per_s=peak,
        stages=tuple(stages),
        dram_port_of_tile=tuple(sorted(port_of)),
        replica_communicators=tuple(per_replica),
        replicas_share_channels=shared,
        num_swap_blocks=swap_blocks,
        swap_bytes_per_block=swap_block_bytes,
        kv_groups=groups,
    )
