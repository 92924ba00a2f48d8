"""Map an inference (serving) workload: prefill and decode programs with a KV cache per tile.

``map_inference(experiment, chip)`` splits layers into stages and places stage replicas exactly
as training does (:func:`palmsim.mapping.mapper.map_workload`'s partition and placement), then
builds, per stage, a forward-only program:

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

Weights in ``int8`` are weight-only quantisation: they are stored and read as 1 byte, the
arithmetic runs at the peak of the activation ``dtype``.
"""

from __future__ import annotations

import dataclasses

from palmsim.config.specs import DTYPE_BYTES, ExperimentSpec, TileSpec, TrainingSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.compute import op_time_s
from palmsim.hardware.memory import split_sram_dram
from palmsim.mapping.communicators import communicators
from palmsim.mapping.mapper import (
    _cost,
    _memory_of,
    _Placement,
    dram_overflow,
    pipeline_p2p_bytes,
)
from palmsim.mapping.partition import partition_by_layers
from palmsim.mapping.placement import place
from palmsim.mapping.plan import (
    CollectiveStep,
    ComputeStep,
    InferencePlan,
    InferenceStage,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
    Step,
)
from palmsim.units import GB, MiB
from palmsim.workload.builders import embedding_block, head_block, layer_blocks
from palmsim.workload.ops import Op

__all__ = ["TOKEN_ID_BYTES", "kv_cache_bytes", "map_inference"]

#: Bytes of one sampled token id sent from the last stage back to the first (int64, the
#: dtype of token ids in PyTorch/Hugging Face ``generate``).
TOKEN_ID_BYTES = 8


def kv_cache_bytes(
    layers: int, kv_heads: int, head_dim: int, tokens: int, batch: int, elem_bytes: float
) -> float:
    """KV-cache bytes: ``2 * layers * kv_heads * head_dim * tokens * batch * elem_bytes``.

    The 2 is one K and one V vector per token, layer and KV head (Pope et al., "Efficiently
    Scaling Transformer Inference", MLSys 2023, Sec. 2).
    """
    return float(2 * layers * kv_heads * head_dim * tokens * batch * elem_bytes)


def _with_weight_dtype(ops: tuple[Op, ...], weight_elem: float) -> list[Op]:
    """The ops with weights read in the storage dtype (weight-only quantisation)."""
    return [
        dataclasses.replace(op, weight_bytes=op.params * weight_elem) if op.weight_bytes else op
        for op in ops
    ]


def map_inference(experiment: ExperimentSpec, chip: Chip) -> MappingPlan:
    """Turn an inference experiment into a :class:`MappingPlan` with an :class:`InferencePlan`.

    Raises:
        MappingError: indivisible batch, too few tiles, or weights + full KV cache do not fit.
        ConfigError: the hardware has no peak for the inference dtype.
    """
    hw, workload, mapping = experiment.hardware, experiment.workload, experiment.mapping
    inf = workload.inference
    assert inf is not None, "mode 'inference' without an inference section (loader checks it)"
    model = workload.model
    pp, tp, dp, mbs = mapping.pp, mapping.tp, mapping.dp, mapping.micro_batch_size
    if inf.batch % (dp * mbs):
        raise MappingError(
            f"inference batch {inf.batch} is not a multiple of dp*micro_batch_size = "
            f"{dp}*{mbs} = {dp * mbs}; every request must be simulated exactly once"
        )
    if inf.prompt_len + inf.output_len > model.max_position_embeddings:
        raise MappingError(
            f"prompt_len + output_len = {inf.prompt_len + inf.output_len} exceeds the model's "
            f"max_position_embeddings {model.max_position_embeddings}"
        )
    num_mb = inf.batch // (dp * mbs)
    try:
        peak = hw.tile.peak_for(inf.dtype)
    except KeyError:
        raise ConfigError.single(
            dict(experiment.sources).get("hardware", hw.name),
            f"tile.peak.{inf.dtype}",
            ConfigError.MISSING,
            f"a peak FLOP/s for the inference dtype {inf.dtype!r}",
        ) from None
    elem, w_elem, kv_elem = (DTYPE_BYTES[d] for d in (inf.dtype, inf.weight_dtype, inf.kv_dtype))
    mlp_dtype = inf.mlp_weight_dtype or inf.weight_dtype
    fidelity = dict(inf.math_fidelity)

    def costing(weight_dtype: str) -> tuple[TileSpec, float]:
        """The tile (with the GEMM efficiency of ``weight_dtype``'s format) and the peak a
        block of GEMMs on weights in ``weight_dtype`` runs at: the activation dtype's peak at
        the math fidelity chosen for the weight format."""
        tile = dataclasses.replace(hw.tile, compute_efficiency=hw.tile.efficiency_for(weight_dtype))
        return tile, hw.tile.peak_for(inf.dtype, fidelity.get(weight_dtype))

    block_dtype = {"attn": inf.weight_dtype, "mlp": mlp_dtype}
    attention_peak = hw.tile.peak_for(inf.dtype, fidelity.get(inf.dtype))
    operands = _memory_of(hw)
    head_dim = model.head_dim
    kv_t = model.num_key_value_heads // tp if model.num_key_value_heads >= tp else 1
    heads_t = model.num_attention_heads // tp
    tied = pp > 1 or not model.tie_word_embeddings

    def blocks(seq_len: int) -> tuple[list[tuple[str, list[Op], float]], list[Op], list[Op]]:
        spec = TrainingSpec(seq_len=seq_len, global_batch_size=1, dtype=inf.dtype)
        layer = [
            (
                b.name,
                _with_weight_dtype(b.ops, DTYPE_BYTES[block_dtype.get(b.name, inf.weight_dtype)]),
                b.allreduce_fwd_bytes,
            )
            for b in layer_blocks(model, spec, mbs, tp)
        ]
        embed = _with_weight_dtype(embedding_block(model, spec, mbs, tp).ops, w_elem)
        head = _with_weight_dtype(
            head_block(model, spec, mbs, tp, count_tied_weights=tied).ops, w_elem
        )
        return layer, embed, head

    prefill_layer, prefill_embed, prefill_head = blocks(inf.prompt_len)
    decode_layer, decode_embed, decode_head = blocks(1)

    def p2p(tokens: int) -> tuple[float, float]:
        """A pipeline send of ``tokens`` per request: bytes per rank, all-gather size (no
        sequence parallelism in serving)."""
        boundary_bytes = mbs * tokens * model.hidden_size * elem
        return pipeline_p2p_bytes(
            boundary_bytes, tp, scatter_gather=mapping.p2p_scatter_gather, sequence_parallel=False
        )

    layer_ranges = partition_by_layers(model.num_hidden_layers, pp)
    stage_tiles = place(chip, mapping.placement, pp, tp, dp)
    requests = inf.batch // dp  # requests whose cache one tile of a replica holds
    total_tokens = inf.prompt_len + inf.output_len
    programs: list[StageProgram] = []
    stages: list[InferenceStage] = []
    memory: list[tuple[int, MemoryBreakdown]] = []
    port_of: list[tuple[int, int]] = []
    for s, (first, last) in enumerate(layer_ranges):
        n_layers = last - first
        # Weight storage by parameters, each block in its own format (MLP and attention may
        # differ), embedding and head in weight_dtype.
        own = [
            (op, DTYPE_BYTES[block_dtype.get(name, inf.weight_dtype)])
            for name, ops, _ in prefill_layer
            for op in ops
        ] * n_layers
        if s == 0:
            own += [(op, w_elem) for op in prefill_embed]
        if s == pp - 1:
            own += [(op, w_elem) for op in prefill_head]
        weights = float(sum(op.params * e for op, e in own))
        kv_per_token = kv_cache_bytes(n_layers, kv_t, head_dim, 1, requests, kv_elem)
        kv_full = kv_per_token * total_tokens
        working = float(max(op.bytes_fwd for _, ops, _ in prefill_layer for op in ops))
        (_, w_sram, w_dram), (_, kv_sram, kv_dram), (_, a_sram, a_dram) = split_sram_dram(
            [("weights", weights), ("kv", kv_full), ("activations", working)],
            hw.tile.sram_capacity_bytes,
        )
        spill_token = int(kv_sram // kv_per_token) if kv_per_token > 0 else total_tokens
        spill_token = min(spill_token, total_tokens)
        where = _Placement(
            w_dram / weights if weights else 0.0, 0.0, 0.0, a_dram / working if working else 0.0
        )
        breakdown = MemoryBreakdown(
            weights,
            0.0,
            0.0,
            kv_full + working,
            sram_bytes=w_sram + kv_sram + a_sram,
            dram_bytes=w_dram + kv_dram + a_dram,
        )

        def comm(kind: str, nbytes: float, label: str) -> list[Step]:
            return [CollectiveStep(label, kind, nbytes)] if tp > 1 and nbytes > 0 else []

        def kv_step(
            label: str, ctx_from: int, ctx_to: int, new_tokens: int, spill_token: int = spill_token
        ) -> ComputeStep:
            """Attention over cached tokens [ctx_from, ctx_to) and the write of new tokens
            [ctx_to, ctx_to + new_tokens), for one layer of one micro-batch."""
            per_tok = kv_cache_bytes(1, kv_t, head_dim, 1, mbs, kv_elem)
            ctx = ctx_to - ctx_from
            flop = 4.0 * mbs * heads_t * head_dim * ctx  # QK^T and AV, 2 FLOP per MAC each
            in_sram = max(0, min(ctx_to, spill_token) - ctx_from)
            new_sram = max(0, min(ctx_to + new_tokens, spill_token) - ctx_to)
            sram = per_tok * (in_sram + new_sram)
            read_dram = per_tok * (ctx - in_sram)
            write_dram = per_tok * (new_tokens - new_sram)
            t = op_time_s(
                flop,
                sram,
                peak_flop_per_s=attention_peak,
                efficiency=hw.tile.compute_efficiency,
                sram_bandwidth_bytes_per_s=hw.tile.sram_bandwidth_bytes_per_s,
            )
            flop_s = flop / (peak * hw.tile.compute_efficiency)
            return ComputeStep(label, t, flop, sram, read_dram, write_dram, flop_time_s=flop_s)

        def program(
            layer: list[tuple[str, list[Op], float]],
            embed: list[Op],
            head: list[Op],
            ctx: int,
            new_tokens: int,
            tag: str,
            s: int = s,
            layer_range: tuple[int, int] = (first, last),
            where: _Placement = where,
        ) -> tuple[Step, ...]:
            first, last = layer_range
            steps: list[Step] = []
            if s > 0:
                steps += comm("allgather", p2p(new_tokens)[1], "recv")
            w_tile, w_peak = costing(inf.weight_dtype)
            if s == 0:
                steps.append(_cost(embed, "F", w_tile, w_peak, 0, where, f"{tag}.embed", operands))
            for i in range(first, last):
                for name, ops, ar in layer:
                    b_tile, b_peak = costing(block_dtype.get(name, inf.weight_dtype))
                    steps.append(
                        _cost(ops, "F", b_tile, b_peak, 0, where, f"{tag}.L{i}.{name}", operands)
                    )
                    if name == "attn" and ctx + new_tokens > 0:
                        steps.append(kv_step(f"{tag}.L{i}.kv", 0, ctx, new_tokens))
                    steps += comm("allreduce", ar, f"{tag}.L{i}.{name}.ar")
            if s == pp - 1:
                steps.append(_cost(head, "F", w_tile, w_peak, 0, where, f"{tag}.head", operands))
            return tuple(steps)

        # Prefill: the attention over the prompt is in the layer ops; the cache write of the
        # prompt's K and V is costed by kv_step with no cached context (ctx 0).
        prefill = program(prefill_layer, prefill_embed, prefill_head, 0, inf.prompt_len, "P")
        decode = tuple(
            program(decode_layer, decode_embed, decode_head, inf.prompt_len + k - 1, 1, f"D{k}")
            for k in range(1, inf.output_len)
        )
        stages.append(
            InferenceStage(
                stage=s,
                prefill=prefill,
                decode=decode,
                kv_bytes_per_token=kv_per_token,
                kv_sram_bytes=kv_sram,
                kv_dram_bytes=kv_dram,
                weight_sram_bytes=w_sram,
                weight_dram_bytes=w_dram,
                spill_token=spill_token,
            )
        )
        programs.append(
            StageProgram(
                stage=s,
                layers=(first, last),
                forward=prefill,
                backward=(),
                recompute=(),
                activation_bytes_per_microbatch=0.0,
                send_bytes=p2p(inf.prompt_len)[0],
                optimizer=ComputeStep("none", 0.0, 0.0, 0.0, 0.0, 0.0),
                steps=tuple(("F", m) for m in range(num_mb)),
            )
        )
        for replica in stage_tiles:
            for tile in replica[s]:
                memory.append((tile, breakdown))
                port_of.append((tile, chip.home_dram_port(tile)))

    _check_fit(chip, memory, port_of, hw.tile.sram_capacity_bytes)
    return MappingPlan(
        mapping=mapping,
        num_microbatches=num_mb,
        stage_tiles=stage_tiles,
        programs=tuple(programs),
        dram_port_of_tile=tuple(sorted(port_of)),
        memory=tuple(sorted(memory, key=lambda tm: tm[0])),
        placement=mapping.placement,
        model_flop_per_iteration=0.0,
        peak_flop_per_s=peak,
        samples_per_iteration=inf.batch,
        tokens_per_iteration=inf.batch * inf.output_len,
        communicators=communicators(
            chip, stage_tiles, pipeline_wraps=True, symmetric_replicas=False
        )[0],
        inference=InferencePlan(
            spec=inf,
            stages=tuple(stages),
            requests_per_microbatch=mbs,
            decode_send_bytes=p2p(1)[0],
            token_send_bytes=float(mbs * TOKEN_ID_BYTES),
            compute_flop_per_s=peak * hw.tile.compute_efficiency,
        ),
    )


def _check_fit(
    chip: Chip,
    memory: list[tuple[int, MemoryBreakdown]],
    port_of: list[tuple[int, int]],
    sram_capacity_bytes: float,
) -> None:
    """Raise MappingError if weights + full KV cache overflow SRAM plus a DRAM port."""
    overflow = dram_overflow(chip, memory, port_of)
    if overflow is None:
        return
    port, need, tiles, b, worst = overflow
    capacity = chip.dram_ports[port].capacity_bytes
    raise MappingError(
        f"inference does not fit: DRAM port {port} ({capacity / GB:.4g} GB) would need "
        f"{need / GB:.4g} GB for tiles {tiles}; tile {worst} needs "
        f"weights {b.weights / GB:.4g} GB + KV cache at full length and activations "
        f"{b.activations / GB:.4g} GB = {b.total / GB:.4g} GB against "
        f"{sram_capacity_bytes / MiB:.4g} MiB SRAM + its share of DRAM; use more "
        f"stages/tensor parallelism, a smaller batch or shorter sequences"
    )
