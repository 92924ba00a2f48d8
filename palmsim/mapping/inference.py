"""Map an inference (serving) workload: prefill and decode programs with a KV cache per tile.

``map_inference(experiment, chip)`` is the serving orchestrator: it runs the shared passes
(batch arithmetic and the peak lookup, the ``layers`` partitioner and the placement, the memory
pass) and lowers, per stage, a forward-only program:

- **prefill** of one micro-batch: the layer ops over ``prompt_len`` tokens (the training op
  builders with ``seq_len = prompt_len``), writing the prompt's K and V to the cache;
- **decode step k** (k = 1 .. output_len - 1) of one micro-batch: the layer ops over one new
  token per request (``seq_len = 1``, which covers the new token attending to itself), plus
  attention over the ``prompt_len + k - 1`` cached tokens: ``QK^T`` and ``AV`` each do
  ``2 * b * heads_t * head_dim * ctx`` FLOP and read ``b * kv_t * head_dim * ctx`` elements of
  K or V; the new token's K and V are written to the cache. The first output token comes from
  the prefill, so ``output_len`` tokens need ``output_len - 1`` decode steps.

Memory per tile (SRAM first, in this order, the rest in DRAM/HBM on the tile's home port):
weights (``params * bytes(weight_dtype)``), the KV cache at full length
(``2 * layers_stage * kv_t * head_dim * (prompt_len + output_len) * requests * bytes(kv_dtype)``,
the requests of every micro-batch of the replica), and one layer's activations as a working
set. Within the KV cache the oldest tokens take the SRAM: tokens up to the *spill token*
``floor(SRAM left after weights / KV bytes per token)`` live in SRAM, later ones in DRAM, so
the cost of spilling grows with the context, step by step. DRAM bytes move as contended flows
over the NoC to the port, as in training.

Weights in ``int8`` (or a block format, ``bfp8``/``bfp4``) are weight-only quantisation: they
are stored and read in their format, the arithmetic runs at the peak of the activation
``dtype``. The MLP's weights may have their own format (``mlp_weight_dtype``), and its down
projection another (``mlp_down_weight_dtype``); each GEMM runs at the efficiency of its weight
format and the activation dtype's peak at the math fidelity chosen for that format
(``math_fidelity``); the attention core (QK^T and scores x V, or the fused kernel), whose
operands are both activations, at the activation dtype's fidelity and efficiency, and the
KV-cache attention at that fidelity.

**2-D tensor parallelism** (``mapping.tp_2d = [a, b]``, ``a·b = tp``), as tenstorrent/tt-metal's
Llama-3 70B Galaxy demo runs it on its 8x4 mesh (models/demos/llama3_70b_galaxy/tt:
``ttnn.ShardTensor2dMesh`` of every weight in llama_attention.py and llama_mlp.py, the CCLs in
llama_ccl.py). TP rank ``k`` sits at ``(k mod a, k div a)``; its TPA group is the ``a`` ranks
of its ``k div a`` (one hidden slice), its TPB group the ``b`` ranks of its ``k mod a`` (one
head shard), each a row or a column of the ``b x a`` rectangle of tiles the replica is placed
on. The QKV and the MLP's first GEMMs split their output (heads, MLP columns) over the ``a``
ranks and their input (hidden) over the ``b`` ranks; WO and the MLP's second GEMM the
reverse. So each tile holds ``1/(a·b)`` of every weight, ``heads/a`` query and ``kv/a`` KV
heads (one replicated KV head when ``kv < a``) and the cache of ``ceil(users/b)`` users: the
decode batch's users split over the ``b`` ranks, 8 per column on the Galaxy. Every op of the
layer does ``1/(a·b)`` of the layer's work (the layer built for ``a`` ranks, split ``b``
ways: tt-metal's prefill also splits the attention's queries over the ``b`` ranks, its
ring-distributed SDPA). A layer over ``n`` tokens per micro-batch then runs these
collectives, their sizes in elements per token of the activation dtype:

- before each norm, an all-gather over TPB of one partial sum of squares per token and rank
  (``tt_distributed_rmsnorm``: the residual stream is split over the hidden dimension);
- attention: the QKV partial sums reduced over TPB, ``(heads/a + 2·kv/a)·head_dim`` per
  token: a reduce-scatter over the users in decode (``llama_rs_create_heads``), an
  all-reduce in prefill; the attention outputs, ``heads/a·head_dim`` per token, all-gathered
  over TPB (``all_gather_concat``; prefill: the ring SDPA's chunks); WO's partial sums,
  ``h/b`` per token, all-reduced over TPA;
- MLP: each first GEMM's partial sums (``f/a`` per token; two with a gated MLP)
  reduce-scattered over TPB, the activation all-gathered back (``f/a``), the second GEMM's
  partial sums (``h/b``) all-reduced over TPA.

Not modelled with it: pipeline stages (sends between 2-D groups), mixture-of-experts layers,
the redundant work of tt-metal's prefill after its QKV all-reduce (rotary embedding and head
split on every rank of a TPB group: small element-wise ops).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np

from palmsim.config.specs import (
    DTYPE_BYTES,
    ExperimentSpec,
    HardwareSpec,
    InferenceSpec,
    ModelSpec,
    ServingSpec,
    TileSpec,
    TrainingSpec,
)
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.costs import (
    OperandPlacement,
    attention_split_factor,
    gemm_operand_bandwidth_bytes_per_s,
    kv_attention_cost,
    tt_metal_sdpa_q_chunk_rows,
)
from palmsim.mapping.batch import Batch, inference_batch
from palmsim.mapping.communicators import communicators
from palmsim.mapping.experts import (
    EXPERT_OPS,
    check_ep,
    dispatch_dedup,
    ep_alltoall,
    layer_routings,
)
from palmsim.mapping.lower import (
    Costing,
    Unit,
    compute_step,
    engine_policy,
    pipeline_p2p_bytes,
    receive_gather,
    tp_collective,
)
from palmsim.mapping.memory import check_fit, inference_remedies, place_demands
from palmsim.mapping.partition import PARTITIONERS
from palmsim.mapping.placement import place, place_rectangles
from palmsim.mapping.plan import (
    CollectiveKind,
    CollectiveStep,
    ComputeStep,
    GroupKind,
    InferencePlan,
    InferenceStage,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
    Step,
)
from palmsim.workload.builders import (
    ACTIVATION_MATMULS,
    ATTENTION_CORE_OPS,
    Block,
    check_cached_attention,
    embedding_block,
    head_block,
    layer_blocks,
    separate_projections,
)
from palmsim.workload.ops import Op, attended_cache

__all__ = ["TOKEN_ID_BYTES", "fused_experts", "kv_cache_bytes", "map_inference"]

#: Bytes of one sampled token id sent from the last stage back to the first (int64, the
#: dtype of token ids in PyTorch/Hugging Face ``generate``).
TOKEN_ID_BYTES = 8


def kv_cache_bytes(
    layers: int, kv_heads: int, head_dim: int, tokens: int, batch: float, elem_bytes: float
) -> float:
    """KV-cache bytes: ``2 * layers * kv_heads * head_dim * tokens * batch * elem_bytes``.

    The 2 is one K and one V vector per token, layer and KV head (Pope et al., "Efficiently
    Scaling Transformer Inference", MLSys 2023, Sec. 2).
    """
    return float(2 * layers * kv_heads * head_dim * tokens * batch * elem_bytes)


def simulated_tile_cores(hw: HardwareSpec) -> int:
    """Cores one simulated tile holds (``chip.granularity``); 1 where the grid is not coarsened."""
    return hw.wafer.unit_rows * hw.wafer.unit_cols if hw.wafer is not None else 1


def decode_readers(hw: HardwareSpec, per_bank: int) -> int:
    """The cores of a simulated tile running a DRAM-sharded decode GEMM: ``per_bank`` worker
    cores for each of the chip's ``dram.banks``."""
    return hw.dram.banks * per_bank


def padded_rows(rows: int, tile_rows: int) -> int:
    """``rows`` rounded up to whole tiles of ``tile_rows`` rows (``tile.matrix_tile_rows``):
    tt-metal keeps a tensor in 32x32 tiles, so a decode step's activations of fewer than 32
    requests fill one tile of rows (tt_transformers' ``tile_padded_batch_rows``, model_config.py;
    tech_reports/FlashAttention/FlashDecode.md: the decode query's one row "padded to 32").
    Pure."""
    return -(-rows // tile_rows) * tile_rows


def decode_attention_flop_per_token(
    heads: int, kv_heads: int, head_dim: int, tile_rows: int
) -> float:
    """FLOP of one request's decode attention per cached token on a tile with ``heads``
    query and ``kv_heads`` KV heads, as tt-metal's SDPA decode runs it: QK^T and the scores
    times V (2 FLOP per multiply-add, ``head_dim`` each) for each KV head's query group
    padded to whole tiles of ``tile_rows`` rows (``tile.matrix_tile_rows``: the SDPA decode
    holds a group as one 32-row tile, sdpa_decode_program_factory.cpp ``PNHt``)."""
    group = max(heads // max(kv_heads, 1), 1)
    return 2.0 * 2.0 * max(kv_heads, 1) * padded_rows(group, tile_rows) * head_dim


def decode_attention_floor_s(
    hw: HardwareSpec,
    *,
    cores: int,
    read_bytes: float,
    flop: float,
    peak_flop_per_s: float,
    efficiency: float,
) -> float:
    """The least time of one request's decode attention run on ``cores`` of a simulated
    tile (``inference.decode_attention_cores``): tt-metal's SDPA decode gives each request
    ``num_cores_per_batch`` cores of its grid, which read its cached K and V from DRAM
    (``read_bytes``) at ``tile.dram_reader_bandwidth`` each while computing its ``flop`` at
    their share of the tile's ``peak_flop_per_s`` at ``efficiency``; reads and
    math overlap (the reader and compute kernels pass chunks through circular buffers), so
    the longer of the two (sdpa_decode_program_factory.cpp, reader_decode_all.cpp). Pure."""
    share = cores / simulated_tile_cores(hw)  # at most 1: check_decode_attention_cores
    read_s = read_bytes / (cores * hw.tile.dram_reader_bandwidth_bytes_per_s)
    math_s = flop / (share * peak_flop_per_s * efficiency)
    return max(read_s, math_s)


def decode_attention_rate(
    hw: HardwareSpec, spec: InferenceSpec | ServingSpec, kv_heads: int
) -> tuple[int, float, float]:
    """``(cores, peak_flop_per_s, efficiency)`` of one request's decode attention over its
    cache on a simulated tile holding ``kv_heads`` of its KV heads, for
    :func:`decode_attention_floor_s`. Pure.

    - Cores: ``decode_attention_cores``, at most ``decode_attention_cores_per_head`` per KV
      head (tt-metal's SDPA decode gives one request's KV head at most
      ``SDPAProgramConfig.max_cores_per_head_batch`` cores: sdpa_decode_program_factory.cpp,
      tech_reports/FlashAttention/FlashDecode.md Sec. 3.1 "Extreme Cases").
    - Peak: the activation dtype's at ``decode_attention_fidelity`` (else the activation
      dtype's own fidelity, as the prefill's attention).
    - Efficiency: ``tile.decode_attention_efficiency``, else ``tile.attention_efficiency``
      where the tile gives one. The SDPA decode is the flash-attention kernel specialised to
      one query row per head (FlashDecode.md: "the specialized version of FlashAttention
      kernels for generative decoding"): the same QK^T, online softmax and scores x V per K
      chunk, on a query of one tile of rows, so the share that kernel reaches in small
      chunks (tt-metal's per-step costs weigh on a small step's math: issue #56692). Else
      the GEMM efficiency at that fidelity.
    """
    cores = spec.decode_attention_cores
    if spec.decode_attention_cores_per_head > 0:
        cores = min(cores, spec.decode_attention_cores_per_head * max(kv_heads, 1))
    tile = hw.tile
    fidelity = spec.decode_attention_fidelity or dict(spec.math_fidelity).get(spec.dtype)
    efficiency = (
        tile.decode_attention_efficiency
        or tile.attention_efficiency
        or tile.at_fidelity(tile.compute_efficiency, fidelity)
    )
    return cores, tile.peak_for(spec.dtype, fidelity), efficiency


def interleaved_read_floor_s(hw: HardwareSpec, read_bytes: float) -> float:
    """The least time a tile's reads of ``read_bytes`` of an interleaved tensor take: its
    DRAM channel's bandwidth times ``dram.interleaved_read_efficiency``, the share that cores
    not placed by the banks they read reach (their NoC routes overlap;
    tech_reports/Saturating_DRAM_bandwidth_Blackhole.md). tt-metal's SDPA reads the paged
    KV cache so: its pages are interleaved over the banks and its cores sit where the
    program grid puts them (sdpa_decode_program_factory.cpp, reader_decode_all.cpp); 0 where
    the hardware reads at the full rate. Pure."""
    efficiency = hw.dram.interleaved_read_efficiency
    if efficiency >= 1.0 or read_bytes <= 0:
        return 0.0
    return read_bytes / (efficiency * hw.dram.bandwidth_bytes_per_s)


def memory_ops_in_series_s(
    hw: HardwareSpec, ops: Iterable[Op], activations_in_dram: float
) -> float:
    """The time a pass's memory-bound ops (no FLOP: norms, elementwise ops, copies) take on a
    tile costed by the roofline when their activations live in DRAM: their DRAM-resident
    bytes (the share ``activations_in_dram`` of their activations) at the interleaved rate,
    the DRAM bandwidth times ``dram.interleaved_read_efficiency``. A tile runs a pass's ops
    one after another, as a GPU runs the kernels of a stream (whose memory-bound kernels
    ``tile.memory_ops`` already costs so: 0 there), so such an op's traffic runs between the
    GEMMs around it, not under their math as the step's DRAM flows would have it. tt-metal
    runs one program at a time on the whole core grid (tech_reports/FlashAttention/
    FlashAttention.md, 2.3) and keeps a prefill's activations DRAM-interleaved
    (``memory_config=ttnn.DRAM_MEMORY_CONFIG`` in every prefill op of tt_transformers' and
    the Galaxy demo's attention and MLP). Pure."""
    rate = hw.dram.bandwidth_bytes_per_s * hw.dram.interleaved_read_efficiency
    if hw.tile.memory_ops is not None or rate <= 0 or activations_in_dram <= 0:
        return 0.0
    return sum(op.bytes_fwd for op in ops if op.flop_fwd == 0) * activations_in_dram / rate


def check_decode_attention_cores(hw: HardwareSpec, cores: int, section: str) -> None:
    """Raise a MappingError when ``<section>.decode_attention_cores`` cannot run on ``hw``:
    it needs the per-core rate ``tile.dram_reader_bandwidth`` and at most the cores of a
    simulated tile."""
    if cores <= 0:
        return
    why = ""
    if hw.tile.dram_reader_bandwidth_bytes_per_s <= 0:
        why = "the hardware gives no per-core rate tile.dram_reader_bandwidth"
    elif cores > simulated_tile_cores(hw):
        why = f"a simulated tile holds {simulated_tile_cores(hw)} cores (chip.granularity)"
    if why:
        raise MappingError(
            f"{section}.decode_attention_cores = {cores}: {why} (--set "
            f"{section}.decode_attention_cores=0 runs decode attention on every core at the "
            "DRAM bandwidth)"
        )


def prefill_cores_share(hw: HardwareSpec, cores: int, section: str) -> float:
    """The share of a simulated tile's cores that run a prefill's layer GEMMs and attention
    (``<section>.prefill_compute_cores``; 0: all of them, 1.0).

    Raises:
        MappingError: more cores than a simulated tile holds.
    """
    if cores <= 0:
        return 1.0
    tile_cores = simulated_tile_cores(hw)
    if cores > tile_cores:
        raise MappingError(
            f"{section}.prefill_compute_cores = {cores}: a simulated tile holds {tile_cores} "
            f"cores (chip.granularity; at granularity 1 each core is a tile of its own) (--set "
            f"{section}.prefill_compute_cores=0 runs the prefill on every core of a tile)"
        )
    return cores / tile_cores


def logits_readback_s(
    hw: HardwareSpec, inf: InferenceSpec, vocab: int, requests: int, tag: str
) -> float:
    """The host's read of a pass's logits to sample from them (``inference.logits_to_host``),
    after the LM head: each prefilled request's tile of rows (``tile.matrix_tile_rows``, 32
    on a Tenstorrent chip) of the vocabulary (the tile
    holding its last token: tt_transformers' ``get_last_token``, then
    ``process_output_prefill`` reads the tile of every device's vocabulary shard), or a
    decode step's ``requests`` rows padded to whole tiles (its all-gathered, untilized logits,
    ``process_output_decode``), ``inf.dtype`` elements at ``tile.host_read_bandwidth``; 0 for
    a pass that samples on device. Pure."""
    mode = inf.logits_to_host
    if tag == "P":
        reads = mode in ("prefill", "prefill_and_decode", "prefill_and_batch_decode")
    else:
        batch = mode == "prefill_and_batch_decode" and requests >= 2
        reads = batch or mode in ("decode", "prefill_and_decode")
    if not reads:
        return 0.0
    tile_rows = hw.tile.matrix_tile_rows
    rows = tile_rows * requests if tag == "P" else padded_rows(requests, tile_rows)
    return rows * vocab * DTYPE_BYTES[inf.dtype] / hw.tile.host_read_bandwidth_bytes_per_s


def check_logits_to_host(hw: HardwareSpec, mode: str) -> None:
    """Raise a MappingError when ``inference.logits_to_host`` reads logits on hardware that
    gives no host read rate."""
    if mode != "none" and hw.tile.host_read_bandwidth_bytes_per_s <= 0:
        raise MappingError(
            f"inference.logits_to_host = {mode!r} needs the hardware's tile.host_read_bandwidth "
            "(the host's rate reading a tensor back from the chip), which it does not give "
            "(--set inference.logits_to_host=none samples on device)"
        )


def check_mla_decode_attention(model: ModelSpec, cores: int, section: str) -> None:
    """Raise a MappingError when ``section.decode_attention_cores`` is set for a model with
    multi-head latent attention: it prices tt-metal's SDPA decode over K and V heads, not a
    latent cache."""
    if model.is_mla and cores > 0:
        raise MappingError(
            f"model {model.name!r}: {section}.decode_attention_cores prices tt-metal's SDPA "
            "decode over K and V heads, not multi-head latent attention's latent cache (--set "
            f"{section}.decode_attention_cores=0)"
        )


def check_decode_readers_per_bank(hw: HardwareSpec, per_bank: int, section: str) -> None:
    """Raise a MappingError when ``section.decode_readers_per_bank`` cannot run on ``hw``: it
    needs the chip's DRAM banks, the per-core rate ``tile.dram_sharded_reader_bandwidth``
    (else ``tile.dram_reader_bandwidth``) and at most the cores of a simulated tile."""
    if per_bank <= 0:
        return
    cores, readers = simulated_tile_cores(hw), decode_readers(hw, per_bank)
    if hw.dram.banks <= 0 or hw.tile.dram_sharded_reader_bytes_per_s <= 0 or readers > cores:
        raise MappingError(
            f"{section}.decode_readers_per_bank = {per_bank} needs the hardware's DRAM banks "
            f"(dram.banks: {hw.dram.banks}), a worker's rate tile.dram_sharded_reader_bandwidth "
            "or tile.dram_reader_bandwidth "
            f"({hw.tile.dram_sharded_reader_bytes_per_s:g} B/s) and at most the {cores} "
            f"cores of a simulated tile (chip.granularity) for its {readers} readers (--set "
            f"{section}.decode_readers_per_bank=0 runs decode GEMMs on every core)"
        )


def dram_sharded_time_s(
    ops: Iterable[Op],
    flop_time_s: Callable[[Op], float],
    dram_weight_fraction: float,
    per_bank: int,
    hw: HardwareSpec,
) -> float:
    """The time of ``ops``' weight GEMMs run as tt-metal's DRAM-sharded matmul with
    ``per_bank`` worker cores per DRAM bank, beyond their fixed latency.

    The workers of a DRAM bank read that bank's shard of the weights and compute their slice
    of the output columns themselves, the activations multicast to them (ttnn's
    MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig, ``num_workers_per_dram_bank``
    1 by default: "DRAM-sharded weights need one reader core per DRAM bank"; tt_transformers
    builds every decode weight GEMM and its LM head so: model_config.py
    ``dram_matmul_config``, lm_head.py). Reads and math overlap, so each GEMM lasts the
    longer of its DRAM-resident weights (``dram_weight_fraction`` of them) over R readers x
    ``tile.dram_sharded_reader_bandwidth`` (else ``tile.dram_reader_bandwidth``) and its FLOP
    time on the whole tile (``flop_time_s``) times (the tile's cores) / R, R = ``dram.banks``
    x ``per_bank``. Pure."""
    readers = decode_readers(hw, per_bank)
    reader_bps = readers * hw.tile.dram_sharded_reader_bytes_per_s
    share = simulated_tile_cores(hw) / readers
    return sum(
        max(dram_weight_fraction * op.weight_bytes / reader_bps, flop_time_s(op) * share)
        for op in ops
        if op.weight_bytes > 0
    )


def with_weight_dtype(ops: Iterable[Op], weight_elem: float, act_elem: float) -> tuple[Op, ...]:
    """The ops with their weights read in the storage format of ``weight_elem`` bytes per
    element (weight-only quantisation). An op's elements are its parameters, except a tied
    LM head's, which owns none (the embedding holds them) yet reads the whole matrix: its
    elements are its weight bytes over the activation dtype's ``act_elem``."""
    return tuple(
        dataclasses.replace(op, weight_bytes=_read_elements(op, act_elem) * weight_elem)
        if op.weight_bytes
        else op
        for op in ops
    )


def _read_elements(op: Op, act_elem: float) -> float:
    """Weight elements ``op`` reads: its parameters, those of the experts that received a
    slot for a routed expert GEMM (its ``weight_bytes`` in the activation dtype), a tied
    head's matrix for an op that owns none."""
    if op.name in EXPERT_OPS or not op.params:
        return op.weight_bytes / act_elem
    return op.params


#: The blocks whose weights are the MLP's (``inference.mlp_weight_dtype``): the dense MLP, a
#: mixture's routed experts and its shared experts (in ``moe_combine``).
MLP_BLOCKS = frozenset({"mlp", "moe_experts", "moe_combine"})


#: The MLP's down projections (``inference.mlp_down_weight_dtype``): the dense MLP's fc2, the
#: routed experts' and the shared experts'.
MLP_DOWN_OPS = frozenset({"fc2", "experts_fc2", "shared_fc2"})


def weight_format(spec: InferenceSpec | ServingSpec, block: str, op: str) -> str:
    """The format op ``op`` of block ``block`` stores its weights in, by an inference or a
    serving section: the MLP's may differ from the rest, and its down projection from the
    MLP's (tt-metal's FF2 in bfp8 beside bfp4 FF1/FF3)."""
    if block not in MLP_BLOCKS:
        return spec.weight_dtype
    if op in MLP_DOWN_OPS and spec.mlp_down_weight_dtype:
        return spec.mlp_down_weight_dtype
    return spec.mlp_weight_dtype or spec.weight_dtype


def _formats(inf: InferenceSpec, block: Block) -> set[str]:
    """The formats ``block``'s ops store their weights in."""
    return {weight_format(inf, block.name, op.name) for op in block.ops}


def format_costing(
    hw: HardwareSpec,
    spec: InferenceSpec | ServingSpec,
    weight_dtype: str,
    where: OperandPlacement,
) -> Costing:
    """How GEMMs on weights in ``weight_dtype`` are costed, by an inference or a serving
    section: the tile at the GEMM efficiency of that format, the activation dtype's peak at
    the math fidelity the section chooses for the format (``math_fidelity``)."""
    # a serving section's attention is always the fused kernel (its engines' FlashAttention)
    kernel = spec.attention_kernel if isinstance(spec, InferenceSpec) else "fused"
    fidelity = dict(spec.math_fidelity).get(weight_dtype)
    tile = dataclasses.replace(
        hw.tile.for_attention_kernel(kernel),
        compute_efficiency=hw.tile.efficiency_for(weight_dtype, fidelity),
    )
    peak = hw.tile.peak_for(spec.dtype, fidelity)
    return Costing(tile, peak, 0, where, gemm_operand_bandwidth_bytes_per_s(hw))


@dataclass(frozen=True, slots=True)
class _Pass:
    """The blocks of one serving pass over ``seq_len`` new tokens per request: ``layers[i]``
    are layer ``i``'s (a mixture-of-experts layer's differ from a dense one's, and by the
    slots its experts receive)."""

    layers: tuple[tuple[Block, ...], ...]
    embed: Block
    head: Block


@dataclass(frozen=True, slots=True)
class _Serving:
    """What every stage's lowering shares: sizes, the two passes and the p2p send sizes."""

    prefill: _Pass  # one chunk of the prompt (inference.prefill_chunk_tokens), or all of it
    prefill_last: _Pass | None  # the shorter last chunk, if the chunks do not divide it
    decode: _Pass
    kv_heads_per_tile: int
    flop_per_cached_token: float  # QK^T and AV of one layer, per micro-batch and pair
    kv_bytes_per_token_mb: float  # one layer, one micro-batch
    # a prefill's over its cached chunks, where it differs (MLA: mla_flop): per pair, and
    # per cached token whatever the pairs (the latent's up projection)
    prefill_flop_per_pair: float
    prefill_flop_per_cached_token: float
    users: float  # the requests whose cache a tile holds (_cache_users)
    mbs: int
    tp: int
    pp: int
    grid: tuple[int, int]  # (a, b) of 2-D tensor parallelism; (tp, 1) for 1-D


def _tp_grid(experiment: ExperimentSpec) -> tuple[int, int]:
    """``(a, b)``: ranks splitting the heads and MLP columns, ranks splitting the hidden
    dimension and the users (``mapping.tp_2d``; ``(tp, 1)`` without it: 1-D)."""
    mapping = experiment.mapping
    return mapping.tp_2d or (mapping.tp, 1)


def split_block(block: Block, ways: int, whole: frozenset[str] = frozenset()) -> Block:
    """``block`` with every op's work, bytes and parameters split ``ways`` ways (the
    ``b`` ranks of 2-D tensor parallelism; module docstring); its GEMM shapes split in
    their batch dimension, which keeps their FLOP. The ops named in ``whole`` stay whole:
    each rank runs all of them (``inference.prefill_attention_2d: replicated``)."""

    def op(o: Op) -> Op:
        if o.name in whole:
            return o
        shape = o.gemm_shape
        return dataclasses.replace(
            o,
            flop_fwd=o.flop_fwd / ways,
            flop_bwd=o.flop_bwd / ways,
            bytes_fwd=o.bytes_fwd / ways,
            bytes_bwd=o.bytes_bwd / ways,
            weight_bytes=o.weight_bytes / ways,
            params=o.params / ways,
            saved_bytes=o.saved_bytes / ways,
            saved_bytes_selective=o.saved_bytes_selective / ways,
            gemm_shape=None if shape is None else (shape[0] / ways, *shape[1:]),
        )

    return dataclasses.replace(
        block,
        ops=tuple(op(o) for o in block.ops),
        allreduce_fwd_bytes=block.allreduce_fwd_bytes / ways,
        allreduce_bwd_bytes=block.allreduce_bwd_bytes / ways,
        edges=tuple((src, dst, nbytes / ways) for src, dst, nbytes in block.edges),
    )


def fused_experts(block: Block) -> Block:
    """``block`` with each routed-expert GEMM one kernel over all its experts, as serving
    engines run them (vLLM's ``fused_experts``, vllm/model_executor/layers/fused_moe/
    fused_moe.py: one ``invoke_fused_moe_kernel`` for the gate/up and one for the down
    projection, each block of tokens looking up its expert; tt-metal's Mixtral one matmul per
    chip), where training's Transformer Engine launches one GEMM per expert."""
    if not any(op.name in EXPERT_OPS for op in block.ops):
        return block
    ops = tuple(
        dataclasses.replace(op, kernels_fwd=1) if op.name in EXPERT_OPS else op for op in block.ops
    )
    return dataclasses.replace(block, ops=ops)


#: The ops between a layer's blocks (palmsim.workload.builders' op names): the residual adds,
#: and the norms (attention, Mamba and MLP blocks), by ``inference.residual_split``.
_RESIDUAL_ADDS = frozenset({"attn_residual", "mamba_residual", "mlp_residual"})
_NORMS = frozenset({"norm1", "norm2", "norm_mamba"})


def _residual_split(block: Block, tp: int, mode: str, prefill: bool) -> Block:
    """``block`` with the ops ``mode`` (``inference.residual_split``) splits in a pass, a
    ``prefill`` or a decode step, on 1/tp of the hidden width: their bytes split ``tp`` ways
    (they have no FLOP)."""
    names: frozenset[str] = frozenset()
    if mode != "none":
        names = _RESIDUAL_ADDS | (_NORMS if prefill and mode == "adds_and_prefill_norms" else set())
    ops = tuple(
        dataclasses.replace(o, bytes_fwd=o.bytes_fwd / tp, bytes_bwd=o.bytes_bwd / tp)
        if o.name in names
        else o
        for o in block.ops
    )
    return dataclasses.replace(block, ops=ops)


def _pass(experiment: ExperimentSpec, seq_len: int, batch: Batch) -> _Pass:
    """The layer, embedding and head blocks with ``seq_len`` tokens per request, weights in
    the storage dtype.

    A mixture-of-experts layer (its routed experts' GEMMs each one fused kernel,
    :func:`fused_experts`) routes the pass's tokens as training does
    (:func:`palmsim.mapping.experts.layer_routings`, the workload's ``training.expert_load``
    drawn from ``run.seed``, each pass from a fresh generator) but dropless, as serving
    engines run (vLLM's and tt-metal's MoE layers drop no token): its experts process the
    busiest EP rank's slots and read the weights of the most experts any rank's slots reach
    (:func:`palmsim.workload.moe.touched_experts`)."""
    model, mapping = experiment.workload.model, experiment.mapping
    inf = experiment.workload.inference
    assert inf is not None
    mbs, tp = mapping.micro_batch_size, mapping.tp
    training = experiment.workload.training
    spec = TrainingSpec(
        seq_len=seq_len,
        global_batch_size=1,
        dtype=batch.dtype,
        expert_load=training.expert_load,
        expert_load_concentration=training.expert_load_concentration,
        attention_kernel=inf.attention_kernel,
    )
    last_token = dataclasses.replace(spec, seq_len=1)
    tied = mapping.pp > 1 or not model.tie_word_embeddings
    a, ways = _tp_grid(experiment)
    # a prefill pass's attention core on every rank of the second axis, whole, where the
    # serving code does not split its queries (inference.prefill_attention_2d)
    replicated = seq_len > 1 and inf.prefill_attention_2d == "replicated"
    whole = ATTENTION_CORE_OPS if replicated else frozenset()
    ep = mapping.ep
    rng = np.random.default_rng(experiment.run.seed)
    routings = layer_routings(model, spec, mbs, ep, mapping.expert_placement, rng, tp=a)

    act_elem = DTYPE_BYTES[batch.dtype]

    def storage(b: Block) -> Block:
        """``b`` with each op's weights in its format (:func:`weight_format`)."""
        ops = tuple(
            with_weight_dtype((op,), DTYPE_BYTES[weight_format(inf, b.name, op.name)], act_elem)[0]
            for op in b.ops
        )
        return dataclasses.replace(b, ops=ops)

    built: dict[tuple[tuple[float, float] | None, int | None, int | None], tuple[Block, ...]] = {}
    layers = []
    # a layer's blocks differ with its routing and, where layers mix full and windowed or
    # chunked attention, with its window and chunk
    by_layer = model.is_moe or model.has_mixed_attention
    for i, routing in enumerate(routings):
        slots = (
            None if routing is None else (routing.max_received_slots, routing.max_touched_experts)
        )
        key = (slots, model.attention_window(i), model.attention_chunk(i))
        if key not in built:
            blocks = layer_blocks(
                model, spec, mbs, a, layer=i if by_layer else None, ep=ep,
                expert_slots=None if slots is None else slots[0],
                touched_experts=None if slots is None else slots[1],
            )  # fmt: skip
            if not inf.fused_projections:
                blocks = tuple(separate_projections(b, model) for b in blocks)
            if a > 1 and ways == 1:  # 1-D TP
                prefill = seq_len > 1
                blocks = tuple(_residual_split(b, a, inf.residual_split, prefill) for b in blocks)
            if ways > 1:  # 2-D TP
                blocks = tuple(split_block(b, ways, whole) for b in blocks)
            built[key] = tuple(storage(fused_experts(b)) for b in blocks)
        layers.append(built[key])
    return _Pass(
        tuple(layers),
        storage(embedding_block(model, spec, mbs, tp)),
        # The final norm and the LM head run on each request's last token only, in prefill
        # as in decode: no other prompt position is sampled. vLLM's model runner gathers
        # ``logits_indices`` (the last position of each sequence) before ``compute_logits``;
        # tt_transformers' ``Transformer.forward`` slices the 32-row tile holding
        # ``get_last_token`` before its norm and LM head (models/tt_transformers/tt/model.py).
        storage(head_block(model, last_token, mbs, tp, count_tied_weights=tied)),
    )


def _serving(experiment: ExperimentSpec, batch: Batch) -> _Serving:
    model, mapping = experiment.workload.model, experiment.mapping
    inf = experiment.workload.inference
    assert inf is not None
    tp, mbs = mapping.tp, mapping.micro_batch_size
    a, b = _tp_grid(experiment)
    kv_t = model.num_key_value_heads // a if model.num_key_value_heads >= a else 1
    heads_t = model.num_attention_heads // a
    users = _cache_users(mbs, b, inf.kv_placement)
    chunk, chunks = inf.prefill_passes()
    last = inf.prompt_len - (chunks - 1) * chunk
    kv_elem = DTYPE_BYTES[inf.kv_dtype]
    pair_flop = 4.0 * users * heads_t * model.head_dim  # 2 FLOP per MAC, QK^T and AV
    prefill_pair_flop, prefill_cached_flop = pair_flop, 0.0
    if model.is_mla:
        kv_t = 1  # one latent a token, every head's
        pair_flop, prefill_pair_flop, prefill_cached_flop = mla_flop(model, users, heads_t)
    kv_bytes = kv_token_bytes(model, kv_t, users, kv_elem)
    return _Serving(
        prefill=_pass(experiment, chunk, batch),
        prefill_last=_pass(experiment, last, batch) if last != chunk else None,
        decode=_pass(experiment, 1, batch),
        kv_heads_per_tile=kv_t,
        flop_per_cached_token=pair_flop,
        kv_bytes_per_token_mb=kv_bytes,
        prefill_flop_per_pair=prefill_pair_flop,
        prefill_flop_per_cached_token=prefill_cached_flop,
        users=users,
        mbs=mbs,
        tp=tp,
        pp=mapping.pp,
        grid=(a, b),
    )


def kv_token_bytes(model: ModelSpec, kv_heads: int, requests: float, elem_bytes: float) -> float:
    """One layer's cache bytes a token for ``requests`` requests on a tile of ``kv_heads`` KV
    heads: a K and a V vector a head (:func:`kv_cache_bytes`), or multi-head latent
    attention's latent and rotary key, ``r_kv + d_r`` elements for every head at once (so
    whole on every TP rank: DeepSeek-V2, arXiv:2405.04434, Sec. 2.1.2)."""
    if model.is_mla:
        latent = int(model.kv_lora_rank or 0) + int(model.qk_rope_head_dim or 0)
        return float(latent * requests * elem_bytes)
    return kv_cache_bytes(1, kv_heads, model.head_dim, 1, requests, elem_bytes)


def mla_flop(model: ModelSpec, users: float, heads: int) -> tuple[float, float, float]:
    """Multi-head latent attention's FLOP over its cache on a tile of ``heads`` query heads
    for ``users`` requests (DeepSeek-V2, arXiv:2405.04434, Sec. 2.1): ``(decode per pair,
    prefill per pair, prefill per cached token)``. vLLM's MLA backend
    (vllm/v1/attention/backends/mla/common.py) decodes the "data-movement friendly" way: the
    up projections absorbed into the query and the output, each head attends over the
    latent, ``2·(r_kv + d_r)`` FLOP a pair for QK^T and ``2·r_kv`` for AV; and prefills over
    cached context the "compute friendly" way: the context's latents up projected
    (``2·r_kv·(d_nope + d_v)`` FLOP a token and head) and attended as multi-head attention,
    ``2·(d_nope + d_r + d_v)`` a pair. The new tokens' own up projection is the layer's
    ``kv_up`` GEMM either way."""
    r, d_r = int(model.kv_lora_rank or 0), int(model.qk_rope_head_dim or 0)
    d_nope, d_v = int(model.qk_nope_head_dim or 0), model.value_head_dim
    decode_pair = users * heads * 2.0 * (2 * r + d_r)
    prefill_pair = users * heads * 2.0 * (d_nope + d_r + d_v)
    prefill_cached = users * heads * 2.0 * r * (d_nope + d_v)
    return decode_pair, prefill_pair, prefill_cached


def check_prefill_weight_readers(hw: HardwareSpec, readers: int, section: str) -> None:
    """Raise MappingError when ``<section>.prefill_weight_readers`` is set on hardware that
    does not give the per-core rates its readers stream at."""
    rates = (hw.tile.dram_reader_bandwidth_bytes_per_s, hw.tile.multicast_bandwidth_bytes_per_s)
    if readers > 0 and min(rates) <= 0:
        raise MappingError(
            f"{section}.prefill_weight_readers = {readers} needs the hardware's per-core "
            "rates tile.dram_reader_bandwidth and tile.multicast_bandwidth, which it does not "
            f"give (--set {section}.prefill_weight_readers=0 streams the weights at the DRAM "
            "rate)"
        )


def prefill_stream_time_s(
    ops: Iterable[Op],
    weight_dtype: Callable[[Op], str],
    tile: TileSpec,
    readers: int,
    dram_fraction: float,
) -> float:
    """Time [s] for ``readers`` column readers to bring the DRAM-resident weights of ``ops``
    (``dram_fraction`` of each) to a prefill GEMM's cores; 0 without readers (the DRAM rate
    applies).

    tt-metal's 2-D multicast matmul: each column's in1 sender reads its block of weights
    one tile per transaction, waits for the block, then multicasts it down its column
    (reader_bmm_tile_layout_in1_sender_writer_padding.cpp: a read of
    ``in1_single_tile_size_bytes`` per tile, a barrier, a block multicast), so a column
    streams at ``1/(1/read + 1/tile.multicast_bandwidth)``. A core reads tiles of ``b``
    bytes (a square tile of ``tile.matrix_tile_rows`` rows in the op's weight format,
    ``weight_dtype(op)``, with its shared
    exponents) at ``read = b / max(tile.dram_read_issue, b / tile.dram_tile_reader_bandwidth)``
    (the read rate of tile-sized transactions; without it, ``tile.dram_reader_bandwidth``).
    """
    if readers <= 0 or dram_fraction <= 0:
        return 0.0
    plateau = tile.dram_tile_reader_bandwidth_bytes_per_s or tile.dram_reader_bandwidth_bytes_per_s
    total_s = 0.0
    for op in ops:
        tile_bytes = tile.matrix_tile_rows**2 * DTYPE_BYTES[weight_dtype(op)]
        read_s_per_byte = max(tile.dram_read_issue_s / tile_bytes, 1.0 / plateau)
        per_byte_s = read_s_per_byte + 1.0 / tile.multicast_bandwidth_bytes_per_s
        total_s += dram_fraction * op.weight_bytes * per_byte_s / readers
    return total_s


def _cache_users(requests: int, b: int, placement: str) -> float:
    """The requests whose KV cache a tile holds, of ``requests`` over the ``b`` ranks that
    split the users (all of them in 1-D): ``ceil(requests / b)`` (tt-metal's Galaxy: 8 users
    a column), or with fewer requests than ranks and ``placement`` 'sequence' each request's
    cache split by sequence over ``b / requests`` of them (WaferLLM's decode holds
    ``dim/P x seq/P`` of K and of V on each core, Decode/WSE-2/src/decode.csl),
    ``requests / b``; 'request' keeps each request whole on one rank
    (``inference.kv_placement``)."""
    if requests >= b or placement == "request":
        return math.ceil(requests / b)
    return requests / b


def check_tp_2d(
    model: ModelSpec, tp: int, pp: int, tp_2d: tuple[int, int] | None, key: str
) -> None:
    """Raise MappingError unless 2-D tensor parallelism ``tp_2d`` (the value of ``key``) of
    a replica's ``tp`` ranks over ``pp`` stages can be lowered."""
    if tp_2d is None:
        return
    a, b = tp_2d
    why = ""
    if a * b != tp:
        why = f"a*b = {a * b} is not tp = {tp}"
    elif b == 1:
        pass  # 1-D tensor parallelism, whatever else the run has
    elif model.hidden_size % b:
        why = f"b = {b} does not divide the hidden size {model.hidden_size}"
    elif pp > 1:
        why = "pipeline stages with it are not modelled (sends between 2-D groups)"
    elif model.is_moe:
        why = "mixture-of-experts layers with it are not modelled"
    elif model.is_mla:
        why = "multi-head latent attention with it is not modelled"
    elif model.parallel_block != "none":
        why = (
            f"model.parallel_block = {model.parallel_block!r} with it is not modelled (its "
            "collectives are laid out for an attention block, then an MLP block)"
        )
    if why:
        raise MappingError(f"{key} = [{a}, {b}]: {why}")


def two_axes(tp_2d: tuple[int, int] | None) -> tuple[int, int] | None:
    """``tp_2d`` where it splits over two axes; None for 1-D, and for ``[tp, 1]``: one rank
    along the second axis is 1-D tensor parallelism (:func:`_tp_grid`), a ring over any
    tiles, not a rectangle's TPA and TPB groups."""
    return tp_2d if tp_2d is not None and tp_2d[1] > 1 else None


def _check_tp_2d(experiment: ExperimentSpec) -> None:
    """Raise MappingError unless ``mapping.tp_2d`` (if set) can be lowered."""
    mapping, model = experiment.mapping, experiment.workload.model
    inf = experiment.workload.inference
    if mapping.tp_2d is None or inf is None:
        return
    check_tp_2d(model, mapping.tp, mapping.pp, mapping.tp_2d, "mapping.tp_2d")
    a, b = mapping.tp_2d
    if b > 1 and inf.residual_split != "none":
        raise MappingError(
            f"mapping.tp_2d = [{a}, {b}]: inference.residual_split is for 1-D tensor "
            "parallelism (a 2-D layer splits its residual stream over its second axis "
            "already; --set inference.residual_split=none)"
        )


def tp_2d_collectives(
    model: ModelSpec,
    block: str,
    tp_2d: tuple[int, int],
    *,
    row_bytes: float,
    allreduce_bytes: float,
    decode: bool,
) -> list[tuple[CollectiveKind, GroupKind, float, str]]:
    """The collectives after a layer's ``block`` (``attn`` or ``mlp``) under 2-D tensor
    parallelism ``tp_2d = (a, b)`` (module docstring), as ``(kind, group, bytes per rank,
    label suffix)`` in order: ``row_bytes`` is one element per (padded) token of the pass,
    ``allreduce_bytes`` the block's TPA all-reduce (the 1-D all-reduce of the layer built
    for ``a`` ranks, split ``b`` ways: ``h/b`` per token); a ``decode`` step
    reduce-scatters the QKV partial sums over the users, a prefill all-reduces them."""
    a, b = tp_2d
    rs, ag = CollectiveKind.REDUCESCATTER, CollectiveKind.ALLGATHER
    ar = CollectiveKind.ALLREDUCE
    tpa, tpb = GroupKind.TPA, GroupKind.TPB
    pieces: list[tuple[CollectiveKind, GroupKind, float, str]] = [
        (ag, tpb, b * row_bytes, "norm.ag")  # the norm's sums of squares, one a rank
    ]
    if block == "attn":
        kv_t = model.num_key_value_heads // a if model.num_key_value_heads >= a else 1
        heads = model.num_attention_heads // a * model.head_dim * row_bytes
        qkv = heads + 2 * kv_t * model.head_dim * row_bytes
        pieces += [
            (rs, tpb, qkv, "qkv.rs") if decode else (ar, tpb, qkv, "qkv.ar"),
            (ag, tpb, heads, "ctx.ag"),
        ]
    else:
        cols = model.intermediate_size // a * row_bytes
        gates = ("fc1", "fc3") if model.hidden_act == "silu" else ("fc1",)
        pieces += [(rs, tpb, cols, f"{g}.rs") for g in gates] + [(ag, tpb, cols, "fc2.ag")]
    pieces.append((ar, tpa, allreduce_bytes, "ar"))
    return pieces


def _p2p(experiment: ExperimentSpec, batch: Batch, tokens: int) -> tuple[float, float]:
    """A pipeline send of ``tokens`` per request: bytes per rank, all-gather size (no sequence
    parallelism in serving)."""
    mapping, model = experiment.mapping, experiment.workload.model
    boundary_bytes = mapping.micro_batch_size * tokens * model.hidden_size * batch.elem_bytes
    return pipeline_p2p_bytes(
        boundary_bytes,
        mapping.tp,
        scatter_gather=mapping.p2p_scatter_gather,
        sequence_parallel=False,
    )


def map_inference(experiment: ExperimentSpec, chip: Chip) -> MappingPlan:
    """Turn an inference experiment into a :class:`MappingPlan` with an :class:`InferencePlan`.

    Raises:
        MappingError: indivisible batch, too few tiles, weights + full KV cache do not fit,
            or an attention whose cache is not modelled (:func:`check_cached_attention`).
        ConfigError: the hardware has no peak for the inference dtype.
    """
    hw, mapping = experiment.hardware, experiment.mapping
    inf = experiment.workload.inference
    assert inf is not None, "mode 'inference' without an inference section (loader checks it)"
    model = experiment.workload.model
    check_cached_attention(model)
    check_mla_decode_attention(model, inf.decode_attention_cores, "inference")
    _check_tp_2d(experiment)
    # Experts over EP groups of data-parallel replicas (the attention data-parallel, the
    # experts expert-parallel: DeepSeek-V3's serving layout, its report Sec. 3.4), each
    # expert's GEMMs split over the replica's TP ranks; or, with ep = 1, every expert split
    # over the TP ranks (vLLM's default for a mixture under tensor parallelism).
    check_ep(model, mapping.dp, mapping.ep, mapping.expert_placement, tp=mapping.tp)
    check_prefill_weight_readers(hw, inf.prefill_weight_readers, "inference")
    check_decode_readers_per_bank(hw, inf.decode_readers_per_bank, "inference")
    check_decode_attention_cores(hw, inf.decode_attention_cores, "inference")
    check_logits_to_host(hw, inf.logits_to_host)
    prefill_cores_share(hw, inf.prefill_compute_cores, "inference")  # raises where it cannot
    batch = inference_batch(experiment)
    serving = _serving(experiment, batch)
    tp_2d = two_axes(mapping.tp_2d)
    # Place first: its tile-count check bounds pp before the partitioner builds pp ranges.
    if tp_2d is None:
        stage_tiles = place(chip, mapping.placement, mapping.pp, mapping.tp, mapping.dp)
    else:  # one stage (_check_tp_2d), each replica on a b x a rectangle, TPA along its rows
        stage_tiles = place_rectangles(chip, mapping.placement, tp_2d, mapping.dp)
    layer_ranges = PARTITIONERS.get("layers")(
        experiment.workload.model.num_hidden_layers, mapping.pp, _no_costs
    )
    # Memory first: a run that does not fit is refused before any pass is lowered (a long
    # prompt's chunks each lower to a pass).
    stage_memory = [
        _stage_memory(experiment, serving, s, layers) for s, layers in enumerate(layer_ranges)
    ]
    memory: list[tuple[int, MemoryBreakdown]] = []
    port_of: list[tuple[int, int]] = []
    for s, held in enumerate(stage_memory):
        for replica in stage_tiles:
            for tile in replica[s]:
                memory.append((tile, held.breakdown))
                port_of.append((tile, chip.home_dram_port(tile)))
    usable = len(chip.usable_tiles)
    remedies = inference_remedies(mapping, inf.batch, usable)
    check_fit(chip, memory, port_of, hw.tile.sram_capacity_bytes, inference=True, remedies=remedies)
    programs: list[StageProgram] = []
    stages: list[InferenceStage] = []
    for s, layers in enumerate(layer_ranges):
        stage, program = _stage(experiment, batch, serving, s, layers, stage_memory[s])
        stages.append(stage)
        programs.append(program)
    comms, num_simulated_replicas, num_simulated_ranks = communicators(
        chip,
        stage_tiles,
        pipeline_wraps=True,
        symmetric_replicas=experiment.run.symmetric_replicas,
        ep=mapping.ep,
        tp_2d=tp_2d,
        dedup=dispatch_dedup(mapping, model, chip.spec.kind),
    )
    return MappingPlan(
        mapping=mapping,
        num_microbatches=batch.num_microbatches,
        stage_tiles=stage_tiles,
        programs=tuple(programs),
        dram_port_of_tile=tuple(sorted(port_of)),
        memory=tuple(sorted(memory, key=lambda tm: tm[0])),
        placement=mapping.placement,
        model_flop_per_iteration=0.0,
        peak_flop_per_s=batch.peak_flop_per_s,
        samples_per_iteration=batch.samples_per_iteration,
        tokens_per_iteration=batch.tokens_per_iteration,
        communicators=comms,
        num_simulated_replicas=num_simulated_replicas,
        num_simulated_ranks=num_simulated_ranks,
        ep_degree=mapping.ep,
        inference=InferencePlan(
            spec=inf,
            stages=tuple(stages),
            requests_per_microbatch=serving.mbs,
            decode_send_bytes=_p2p(experiment, batch, 1)[0],
            token_send_bytes=float(serving.mbs * TOKEN_ID_BYTES),
            compute_flop_per_s=batch.peak_flop_per_s * hw.tile.compute_efficiency,
            prompt_len=inf.prompt_len,
            output_len=inf.output_len,
            lead_reads=inf.weight_prefetch != "none",
        ),
    )


def _no_costs() -> tuple[float, float, float]:  # pragma: no cover - 'layers' never asks
    raise AssertionError("serving partitions by layers")


@dataclass(frozen=True, slots=True)
class _StageMemory:
    """A serving tile's memory (SRAM first: weights, the KV cache at full length, one layer's
    activations as working set) and where its data lives."""

    breakdown: MemoryBreakdown
    where: OperandPlacement
    kv_bytes_per_token: float
    kv_sram_bytes: float
    kv_dram_bytes: float
    weight_sram_bytes: float
    weight_dram_bytes: float
    spill_token: int  # tokens below it are cached in SRAM


def _stage_memory(
    experiment: ExperimentSpec, serving: _Serving, s: int, layers: tuple[int, int]
) -> _StageMemory:
    """The memory pass of serving stage ``s`` holding ``layers``."""
    mapping, inf = experiment.mapping, experiment.workload.inference
    assert inf is not None
    first, last = layers
    # requests whose cache one tile of a replica holds: its replica's, split over b ranks
    requests = _cache_users(inf.batch // mapping.dp, serving.grid[1], inf.kv_placement)
    total_tokens = inf.prompt_len + inf.output_len
    prefill = serving.prefill
    # Weight storage by parameters, each block in its own format (MLP and attention may
    # differ), embedding and head in weight_dtype.
    w_elem = DTYPE_BYTES[inf.weight_dtype]
    own = [
        (op, DTYPE_BYTES[weight_format(inf, b.name, op.name)])
        for i in range(first, last)
        for b in prefill.layers[i]
        for op in b.ops
    ]
    if s == 0:
        own += [(op, w_elem) for op in prefill.embed.ops]
    if s == serving.pp - 1:
        own += [(op, w_elem) for op in prefill.head.ops]
    weights = float(sum(op.params * e for op, e in own))
    model = experiment.workload.model
    kv_per_token = (last - first) * kv_token_bytes(
        model, serving.kv_heads_per_tile, requests, DTYPE_BYTES[inf.kv_dtype]
    )
    kv_full = kv_per_token * total_tokens
    working = float(
        max(op.bytes_fwd for i in range(first, last) for b in prefill.layers[i] for op in b.ops)
    )
    split = place_demands(
        [("weights", weights), ("kv", kv_full), ("activations", working)],
        experiment.hardware.tile.sram_capacity_bytes,
    )
    (w_sram, w_dram), (kv_sram, kv_dram), (a_sram, a_dram) = split.values()
    spill_token = int(kv_sram // kv_per_token) if kv_per_token > 0 else total_tokens
    breakdown = MemoryBreakdown(
        weights,
        0.0,
        0.0,
        kv_full + working,
        sram_bytes=w_sram + kv_sram + a_sram,
        dram_bytes=w_dram + kv_dram + a_dram,
    )
    where = OperandPlacement(
        w_dram / weights if weights else 0.0, 0.0, 0.0, a_dram / working if working else 0.0
    )
    return _StageMemory(
        breakdown, where, kv_per_token, kv_sram, kv_dram, w_sram, w_dram,
        min(spill_token, total_tokens),
    )  # fmt: skip


def host_dispatch_s(trace: str, tile: TileSpec, *, decode: bool) -> float:
    """The host's time to issue one op of a pass (a decode pass, or one with a prompt):
    ``tile.host_dispatch``, or 0 for a pass replayed from a trace (``trace``: the mode of
    ``inference.trace`` or ``serving.trace``, 'all', 'decode' or 'none')."""
    traced = trace == "all" or (trace == "decode" and decode)
    return 0.0 if traced else tile.host_dispatch_s


def _after_host(
    steps: tuple[Step, ...], issued_s: float, dispatch_s: float
) -> tuple[tuple[Step, ...], float]:
    """A chunk's ``steps`` with their ``host_issued_s`` after the host's ``issued_s`` on the
    chunks before it, and the host's time at its end: its last step's plus a
    ``dispatch_s`` for each collective after it (a collective is one op)."""
    out: list[Step] = []
    end_s, trailing = issued_s, 0
    for step in steps:
        if isinstance(step, ComputeStep) and step.host_issued_s > 0:
            step = dataclasses.replace(step, host_issued_s=issued_s + step.host_issued_s)
            end_s, trailing = step.host_issued_s, 0
        elif isinstance(step, CollectiveStep):
            trailing += 1
        out.append(step)
    return tuple(out), end_s + trailing * dispatch_s


def _attention_split(
    experiment: ExperimentSpec, serving: _Serving, cached: int, new_tokens: int
) -> float:
    """How much longer a prefill pass's attention runs than spread evenly over its cores
    (:func:`attention_split_factor` of ``inference.prefill_attention_split``): its users,
    its tile's query heads (those of 1-D tensor parallelism's or 2-D's first axis), its query
    rows (over a 2-D layout's second axis too where it splits the queries,
    ``inference.prefill_attention_2d``), its cached rows and the prefill's cores.

    Raises:
        MappingError: a split other than 'even' on a tile with a GEMM model (a GPU), whose
            attention kernel's blocks palmsim costs by the kernel's own measured rate.
    """
    inf = experiment.workload.inference
    assert inf is not None
    if inf.prefill_attention_split == "even":
        return 1.0
    hw = experiment.hardware
    if hw.tile.gemm is not None:
        raise MappingError(
            f"inference.prefill_attention_split = {inf.prefill_attention_split}: a split of "
            "tt-metal's SDPA over a tiled chip's cores; this tile's attention runs at its GEMM "
            "model's measured kernel rate (--set inference.prefill_attention_split=even)"
        )
    a, ways = serving.grid
    rows = new_tokens
    if ways > 1 and inf.prefill_attention_2d == "split":
        rows = -(-new_tokens // ways)
    return attention_split_factor(
        inf.prefill_attention_split,
        users=serving.mbs,
        heads=max(experiment.workload.model.num_attention_heads // a, 1),
        q_rows=rows,
        cached_rows=cached,
        q_chunk_rows=tt_metal_sdpa_q_chunk_rows(rows),
        cores=inf.prefill_compute_cores or simulated_tile_cores(hw),
    )


def _stage(
    experiment: ExperimentSpec,
    batch: Batch,
    serving: _Serving,
    s: int,
    layers: tuple[int, int],
    memory: _StageMemory,
) -> tuple[InferenceStage, StageProgram]:
    """The prefill and decode programs of stage ``s`` holding ``layers`` in ``memory``."""
    hw, mapping = experiment.hardware, experiment.mapping
    inf = experiment.workload.inference
    assert inf is not None
    where, spill_token = memory.where, memory.spill_token
    # the attention core's operands are activations, at their dtype's fidelity
    fidelity = dict(inf.math_fidelity).get(inf.dtype)
    attention_peak = hw.tile.peak_for(inf.dtype, fidelity)
    costing = Costing(
        dataclasses.replace(
            hw.tile.for_attention_kernel(inf.attention_kernel),
            compute_efficiency=hw.tile.at_fidelity(hw.tile.compute_efficiency, fidelity),
        ),
        attention_peak,
        0,
        where,
        gemm_operand_bandwidth_bytes_per_s(hw),
    )
    blocks = {
        d: format_costing(hw, inf, d, where)
        for d in {
            inf.weight_dtype,
            inf.dtype,  # the attention core's operands (_Lowering.block_step)
            *(f for layer in serving.decode.layers for b in layer for f in _formats(inf, b)),
        }
    }
    lower = _Lowering(
        experiment, batch, serving, costing, blocks, blocks[inf.weight_dtype], s, layers,
        spill_token,
    )  # fmt: skip
    # A prefill's layer GEMMs and attention on inference.prefill_compute_cores of the tile's
    # cores: tt_transformers builds every prefill matmul on at most 8 x 8 cores on any chip
    # (models/tt_transformers/tt/model_config.py: find_prefill_grid with max_rows, max_cols =
    # 8, 8, "TODO Improve configuration for BH (higher core grid than WH)") and its prefill
    # SDPA on compute_with_storage_grid_size (8, 8). Its LM head runs DRAM-sharded with the
    # decode's program configs, and its embedding is no GEMM: both keep the whole tile.
    share = prefill_cores_share(hw, inf.prefill_compute_cores, "inference")
    # A prefill's attention over its cached chunks is the fused attention kernel its core
    # runs (tt-metal's chunked SDPA): at tile.attention_efficiency where the tile gives one.
    if hw.tile.attention_efficiency > 0:
        costing = dataclasses.replace(
            costing,
            tile=dataclasses.replace(costing.tile, compute_efficiency=hw.tile.attention_efficiency),
        )
    prefill = dataclasses.replace(
        lower,
        batch=dataclasses.replace(batch, peak_flop_per_s=batch.peak_flop_per_s * share),
        costing=costing.on_cores(share),
        blocks={d: c.on_cores(share) for d, c in blocks.items()},
    )
    # A chunked prompt (inference.prefill_chunk_tokens): each chunk a pass over its tokens
    # with the chunks before it cached, as the pass's attention reads them.
    # The host issues the chunks one after another with no wait between them (the engine
    # runs them as one pass), so a chunk's host times follow the chunks' before it.
    chunk, chunks = inf.prefill_passes()
    dispatch_s = host_dispatch_s(inf.trace, hw.tile, decode=False)
    passes: list[Step] = []  # extended in place: a long prompt has many chunks
    issued_s = 0.0  # the host's time for the chunks so far
    for k in range(chunks):
        last = k == chunks - 1
        blocks_k = serving.prefill_last if last and serving.prefill_last else serving.prefill
        tokens = min(chunk, inf.prompt_len - k * chunk)
        prefix = "P" if k == 0 else f"P{k + 1}"
        lowering = prefill.split_attention(_attention_split(experiment, serving, k * chunk, tokens))
        steps = lowering.program(blocks_k, k * chunk, tokens, prefix, "P", head=last)
        if dispatch_s > 0:
            steps, issued_s = _after_host(steps, issued_s, dispatch_s)
        passes += steps
    prefill_steps = tuple(passes)
    decode = tuple(
        lower.program(serving.decode, inf.prompt_len + k - 1, 1, f"D{k}", "D")
        for k in range(1, inf.output_len)
    )
    stage = InferenceStage(
        stage=s,
        prefill=prefill_steps,
        decode=decode,
        kv_bytes_per_token=memory.kv_bytes_per_token,
        kv_sram_bytes=memory.kv_sram_bytes,
        kv_dram_bytes=memory.kv_dram_bytes,
        weight_sram_bytes=memory.weight_sram_bytes,
        weight_dram_bytes=memory.weight_dram_bytes,
        spill_token=spill_token,
    )
    send_blocks, grad_reduce = engine_policy(mapping, zero=0)
    program = StageProgram(
        stage=s,
        layers=layers,
        forward=prefill_steps,
        backward=(),
        recompute=(),
        activation_bytes_per_microbatch=0.0,
        send_bytes=_p2p(experiment, batch, inf.prompt_len)[0],
        optimizer=ComputeStep("none", 0.0, 0.0, 0.0, 0.0, 0.0, op="none"),
        steps=tuple(("F", m) for m in range(batch.num_microbatches)),
        send_blocks=send_blocks,
        grad_reduce=grad_reduce,
    )
    return stage, program


@dataclass(frozen=True, slots=True)
class _Lowering:
    """The lowering of one stage's serving passes (prefill, decode steps)."""

    experiment: ExperimentSpec
    batch: Batch
    serving: _Serving
    costing: Costing  # the KV-cache attention's: the tile, the attention's peak
    blocks: dict[str, Costing]  # a layer block's, by the format of its weights
    edge: Costing  # the embedding's and the LM head's, on the whole tile
    stage: int
    layers: tuple[int, int]
    spill_token: int

    def op_costing(self, block: Block, op: Op) -> Costing:
        """How ``op`` of ``block`` is costed: an op on weights at its format's fidelity and
        efficiency (:func:`weight_format`); the attention core (both operands activations:
        QK^T and scores x V, or the fused kernel) as a GEMM on weights of the activation
        dtype would run: that dtype's fidelity and efficiency (tt_transformers runs its
        prefill SDPA at HiFi4 on bf16 whatever its weights' format: PERF.md's precision
        table)."""
        inf = self.experiment.workload.inference
        assert inf is not None
        if op.name in ACTIVATION_MATMULS:
            return self.blocks[inf.dtype]
        return self.blocks[weight_format(inf, block.name, op.name)]

    def weight_read_bytes(self, block: Block) -> float:
        """The bytes of ``block``'s weights one pass reads from DRAM: the part of its step's
        ``dram_read_bytes`` that is its ops' weights (:func:`palmsim.hardware.costs.pass_cost`:
        their weight bytes times the share of the weights in DRAM)."""
        return sum(op.weight_bytes * self.op_costing(block, op).where.weights for op in block.ops)

    def split_attention(self, factor: float) -> _Lowering:
        """This lowering with its attention core (the pass's fused kernel and its attention over
        the cache) ``factor`` times slower: the busiest of its cores' share
        (:func:`_attention_split`)."""
        if factor == 1.0:
            return self

        def slowed(costing: Costing) -> Costing:
            tile = costing.tile
            rate = tile.attention_efficiency or tile.compute_efficiency
            return dataclasses.replace(
                costing, tile=dataclasses.replace(tile, attention_efficiency=rate / factor)
            )

        kv = self.costing.tile
        return dataclasses.replace(
            self,
            # the cache's attention: a step at the costing's compute efficiency (_stage)
            costing=dataclasses.replace(
                self.costing,
                tile=dataclasses.replace(kv, compute_efficiency=kv.compute_efficiency / factor),
            ),
            # the pass's fused kernel: an attention op at the tile's attention efficiency
            blocks={d: slowed(c) for d, c in self.blocks.items()},
        )

    def block_step(self, block: Block, unit: Unit) -> ComputeStep:
        """``block``'s ops, each costed as :meth:`op_costing` says."""
        groups: dict[int, tuple[Costing, list[Op]]] = {}
        for op in block.ops:
            costing = self.op_costing(block, op)
            groups.setdefault(id(costing), (costing, []))[1].append(op)
        if len(groups) <= 1:
            costing = next(iter(groups.values()))[0] if groups else self.costing
            return costing.step(block.ops, "F", unit, block.name)
        first, *rest = (costing.cost(ops, "F") for costing, ops in groups.values())
        return compute_step(sum(rest, first), unit, block.name, block_name=block.name)

    def kv_step(self, unit: Unit, ctx: int, new_tokens: int, tag: str) -> ComputeStep:
        """Attention of ``new_tokens`` new tokens over cached tokens [0, ctx) and the write of
        their K and V, for one layer of one micro-batch. A decode step with
        ``inference.decode_attention_cores`` lasts at least one request's share
        (:func:`decode_attention_floor_s`); every step, at least its cache reads at the
        interleaved rate (:func:`interleaved_read_floor_s`)."""
        model = self.experiment.workload.model
        # the cached tokens the new ones attend to: all, or a windowed or chunked layer's
        # (the cache is held whole: tt-metal's and vLLM V0's paged caches; the fused kernels
        # skip the blocks outside the window)
        first, pairs = attended_cache(
            ctx,
            new_tokens,
            window=model.attention_window(unit.layer),
            chunk=model.attention_chunk(unit.layer),
        )
        read = ctx - first
        serving = self.serving
        # each new token's queries against each cached token it attends to (a prefill over
        # an MLA cache also up projects the cached latents it reads)
        per_read = pairs / read if read else 0.0  # the new tokens each cached token meets
        flop_per_token = (
            serving.prefill_flop_per_pair * per_read + serving.prefill_flop_per_cached_token
            if tag == "P"
            else serving.flop_per_cached_token * per_read
        )
        cost = kv_attention_cost(
            bytes_per_token=serving.kv_bytes_per_token_mb,
            flop_per_token=flop_per_token if read else 0.0,
            ctx_from=first,
            ctx_to=ctx,
            new_tokens=new_tokens,
            spill_token=self.spill_token,
            tile=self.costing.tile,
            peak_flop_per_s=self.costing.peak_flop_per_s,
            roof_peak_flop_per_s=self.batch.peak_flop_per_s,
        )
        step = compute_step(cost, unit, "kv", block_name="kv")
        hw = self.experiment.hardware
        # the cache's pages are interleaved over the DRAM banks (tt-metal's paged cache)
        floor_s = interleaved_read_floor_s(hw, cost.dram_read_bytes)
        inf = self.experiment.workload.inference
        assert inf is not None
        if tag == "D" and inf.decode_attention_cores > 0:
            # one request's share of the tile's cache: the tile's cache over its requests,
            # or, split by sequence over ranks (kv_placement), the part of one request it holds
            users = self.serving.users
            cores, peak, efficiency = decode_attention_rate(hw, inf, self.serving.kv_heads_per_tile)
            floor_s = max(
                floor_s,
                decode_attention_floor_s(
                    hw,
                    cores=cores,
                    read_bytes=cost.dram_read_bytes / max(users, 1.0),
                    flop=read
                    * min(users, 1.0)
                    * decode_attention_flop_per_token(
                        model.num_attention_heads // self.serving.grid[0],
                        self.serving.kv_heads_per_tile,
                        model.head_dim,
                        hw.tile.matrix_tile_rows,
                    ),
                    peak_flop_per_s=peak,
                    efficiency=efficiency,
                ),
            )
        if floor_s <= step.compute_time_s:
            return step
        return dataclasses.replace(step, compute_time_s=floor_s)

    def collectives(self, block: Block, unit: Unit, new_tokens: int, tag: str) -> tuple[Step, ...]:
        """The TP collectives after ``block`` of a pass over ``new_tokens`` per request: the
        all-reduce of 1-D tensor parallelism, or those of 2-D (module docstring). They move
        the pass's rows padded to whole tiles (:func:`padded_rows`): a decode step of one
        request on a Tenstorrent chip all-reduces 32 rows."""
        a, b = self.serving.grid
        rows = self.serving.mbs * new_tokens
        padded = padded_rows(rows, self.experiment.hardware.tile.matrix_tile_rows)
        allreduce_bytes = block.allreduce_fwd_bytes * padded / rows
        if b == 1:
            inf = self.experiment.workload.inference
            assert inf is not None
            reduce_dtype = dict(inf.prefill_reduce_dtypes).get(block.name) if tag == "P" else None
            if reduce_dtype is None or reduce_dtype == inf.dtype:
                return tp_collective(
                    CollectiveKind.ALLREDUCE, allreduce_bytes, unit, block.name, tp=a,
                    sequence_parallel=False,
                )  # fmt: skip
            # the partial sums reduce-scattered in their own format, the sums all-gathered in
            # the activations' (inference.prefill_reduce_dtypes): the all-reduce's two halves
            narrow = DTYPE_BYTES[reduce_dtype] / DTYPE_BYTES[inf.dtype]
            halves = (
                (CollectiveKind.REDUCESCATTER, allreduce_bytes * narrow, "rs"),
                (CollectiveKind.ALLGATHER, allreduce_bytes, "ag"),
            )
            return tuple(
                step
                for kind, nbytes, suffix in halves
                for step in tp_collective(
                    kind, nbytes, unit, block.name, tp=a, sequence_parallel=False, suffix=suffix
                )
            )
        pieces = tp_2d_collectives(
            self.experiment.workload.model,
            block.name,
            (a, b),
            row_bytes=padded * self.batch.elem_bytes,
            allreduce_bytes=allreduce_bytes,
            decode=tag == "D",
        )
        steps: list[Step] = []
        for kind, group, nbytes, suffix in pieces:
            steps += tp_collective(
                kind, nbytes, unit, block.name, tp=a if group is GroupKind.TPA else b,
                sequence_parallel=False, suffix=suffix, group=group,
            )  # fmt: skip
        return tuple(steps)

    def program(
        self, blocks: _Pass, ctx: int, new_tokens: int, prefix: str, tag: str, head: bool = True
    ) -> tuple[Step, ...]:
        """One pass over ``new_tokens`` per request with ``ctx`` tokens cached; without the
        LM head (``head`` False) for a prefill chunk before the last, whose tokens sample
        nothing."""
        s, tp = self.stage, self.serving.tp
        mapping = self.experiment.mapping
        inf = self.experiment.workload.inference
        assert inf is not None
        costing = self.edge
        steps: list[Step] = []
        # A pass not replayed from a trace (inference.trace) is dispatched by the host, one
        # op after another, tile.host_dispatch each, while the device runs them in order:
        # ttnn enqueues every op without blocking (ttnn/cpp/ttnn/device_operation.hpp,
        # enqueue_mesh_workload: EnqueueMeshWorkload(..., blocking=false)), so the host runs
        # ahead of the device through the pass and a step cannot end before the host has
        # issued its last op: ComputeStep.host_issued_s, the ops of the pass up to and
        # including the step's (collectives included, one op each) x tile.host_dispatch.
        dispatch_s = host_dispatch_s(inf.trace, self.costing.tile, decode=tag == "D")
        issued = 0  # ops of the pass the host has issued so far
        # Weights streamed by a DRAM prefetcher (inference.weight_prefetch) are read by cores
        # of their own into a circular buffer in the matmul cores' L1, in the order the ops
        # consume them (tt-metal's dram_prefetcher and global circular buffer; the Galaxy
        # Llama demo's decode: models/demos/llama3_70b_galaxy/tt/llama_model.py @00ab7c95,
        # setup_decode with n_tensors=5, its prefill with none): a layer block's weight reads
        # do not wait for its ops' fixed latency, and the prefetcher reads a block ahead (its
        # buffer double-buffers a block's weights, prefetcher_common.py @0e0ae177): a block's
        # weights flow from the start of the block before it (ComputeStep.lead_read_bytes),
        # and the block lasts until they have arrived; the pass's first block reads its own.
        prefetched = inf.weight_prefetch == "all" or (
            inf.weight_prefetch == "decode" and tag == "D"
        )

        # A prefill GEMM's weights reach its cores through inference.prefill_weight_readers
        # cores, one per column of tt-metal's 2-D multicast matmul grid: each reads a block
        # of its column's weights from DRAM, waits for it, then multicasts it down the column
        # (the in1 sender kernel, reader_bmm_tile_layout_in1_sender_writer_padding.cpp: read,
        # barrier, multicast, one after the other), so a column streams at
        # 1/(1/dram_reader + 1/multicast). tt_transformers runs every prefill weight GEMM so
        # (models/tt_transformers/tt/model_config.py: XQKV_PREFILL_PROGCFG, WO_PREFILL_PROGCFG
        # and the MLP's PREFILL_*_PRG_CONFIG, MatmulMultiCoreReuseMultiCastProgramConfig with
        # per_core_N over dram_shard_grid_width = 8 columns), its decode as DRAM-sharded
        # matmuls whose cores each read their own bank and multicast nothing.
        readers = inf.prefill_weight_readers if tag == "P" else 0

        def streamed(step: ComputeStep, block: Block, where: OperandPlacement) -> ComputeStep:
            """``step`` lasting at least its DRAM-resident weights' stream through the
            readers (:func:`prefill_stream_time_s`), after its ops' serial latency."""
            stream_s = prefill_stream_time_s(
                block.ops,
                lambda op: weight_format(inf, block.name, op.name),
                self.costing.tile,
                readers,
                where.weights,
            )
            floor_s = step.serial_latency_s + stream_s
            if stream_s <= 0 or floor_s <= step.compute_time_s:
                return step
            return dataclasses.replace(step, compute_time_s=floor_s)

        # The layers' weight GEMMs run DRAM-sharded in decode; the LM head in every pass, as
        # tt_transformers runs it on the tile of rows holding each request's last token with
        # the decode's program configs (lm_head.py: one set of dram_matmul_config for both).
        layer_per_bank = inf.decode_readers_per_bank if tag == "D" else 0

        def sharded(
            step: ComputeStep, block: Block, per_bank: int, costing: Callable[[Op], Costing]
        ) -> ComputeStep:
            """``step`` lasting at least its ops' serial latency plus their DRAM-sharded
            matmuls' time (:func:`dram_sharded_time_s`), each op costed by ``costing``."""
            where = self.costing.where
            if per_bank <= 0 or where.weights <= 0:
                return step
            floor_s = step.serial_latency_s + dram_sharded_time_s(
                block.ops,
                lambda op: costing(op).cost((op,), "F").flop_time_s,
                where.weights,
                per_bank,
                self.experiment.hardware,
            )
            if floor_s <= step.compute_time_s:
                return step
            return dataclasses.replace(step, compute_time_s=floor_s)

        def dispatched(step: ComputeStep, ops: int) -> ComputeStep:
            nonlocal issued
            issued += ops
            if dispatch_s <= 0:
                return step
            return dataclasses.replace(step, host_issued_s=issued * dispatch_s)

        if s > 0:
            gather = _p2p(self.experiment, self.batch, new_tokens)[1]
            steps += receive_gather(gather, tp=tp, label="recv")
        if s == 0:
            embed = Unit("embed", -1, (blocks.embed,), prefix, tag)
            step = compute_step(costing.cost(blocks.embed.ops, "F"), embed, block_name="embed")
            steps.append(dispatched(step, sum(op.kernels_fwd for op in blocks.embed.ops)))
        # The serving code's ops beyond the op graph's kernels (layout conversions, split
        # projections): each pays the tile's fixed op latency, charged to the layer's first
        # block (inference.ops_per_layer, and inference.prefill_ops_per_layer for a prefill).
        code_ops = (inf.prefill_ops_per_layer if tag == "P" else 0) or inf.ops_per_layer
        lead: int | None = None  # the index in steps of the last prefetched block's step
        for i in range(*self.layers):
            layer = blocks.layers[i]
            graph_ops = sum(op.kernels_fwd for b in layer for op in b.ops)
            extra_ops = max(code_ops - graph_ops, 0)
            extra_s = extra_ops * self.costing.tile.op_latency_s
            unit = Unit(f"L{i}", i, layer, prefix, tag)
            for j, b in enumerate(layer):
                step = self.block_step(b, unit)
                if j == 0 and extra_s > 0:
                    step = dataclasses.replace(
                        step,
                        compute_time_s=step.compute_time_s + extra_s,
                        launch_latency_s=step.launch_latency_s + extra_s,
                        serial_latency_s=step.serial_latency_s + extra_s,
                    )
                if prefetched:
                    step = dataclasses.replace(step, serial_latency_s=0.0)
                    ahead = self.weight_read_bytes(b)
                    if lead is not None and ahead > 0:
                        # the block before reads this one's weights (see above)
                        before = steps[lead]
                        assert isinstance(before, ComputeStep)
                        steps[lead] = dataclasses.replace(before, lead_read_bytes=ahead)
                        step = dataclasses.replace(
                            step,
                            dram_read_bytes=max(step.dram_read_bytes - ahead, 0.0),
                            read_ahead_bytes=ahead,
                        )
                    lead = len(steps)
                step = streamed(step, b, self.costing.where)
                step = sharded(step, b, layer_per_bank, partial(self.op_costing, b))
                if tag == "P":
                    # its memory-bound ops between the GEMMs (a decode's activations are
                    # L1-sharded in the demos: their traffic is negligible and stays a flow)
                    serial_s = memory_ops_in_series_s(
                        self.experiment.hardware, b.ops, self.costing.where.activations
                    )
                    step = dataclasses.replace(step, compute_time_s=step.compute_time_s + serial_s)
                ops = sum(op.kernels_fwd for op in b.ops) + (extra_ops if j == 0 else 0)
                steps.append(dispatched(step, ops))
                if b.name == "attn" and ctx + new_tokens > 0:
                    steps.append(self.kv_step(unit, ctx, new_tokens, tag))
                comms = self.collectives(b, unit, new_tokens, tag)
                comms += ep_alltoall(b.alltoall_fwd_bytes, unit, b.name, ep=mapping.ep)
                issued += sum(isinstance(c, CollectiveStep) for c in comms)
                steps += comms
        if s == self.serving.pp - 1 and head:
            head_unit = Unit("head", -1, (blocks.head,), prefix, tag)
            step = compute_step(costing.cost(blocks.head.ops, "F"), head_unit, block_name="head")
            step = sharded(step, blocks.head, inf.decode_readers_per_bank, lambda op: costing)
            steps.append(dispatched(step, sum(op.kernels_fwd for op in blocks.head.ops)))
            # the host reads the logits back to sample the next token (inference.logits_to_host)
            model = self.experiment.workload.model
            read_s = logits_readback_s(
                self.experiment.hardware, inf, model.vocab_size, self.serving.mbs, tag
            )
            if read_s > 0:
                label, op = head_unit.ident("logits_to_host")
                steps.append(ComputeStep(label, read_s, 0.0, 0.0, 0.0, 0.0, block="host", op=op))
        return tuple(steps)
