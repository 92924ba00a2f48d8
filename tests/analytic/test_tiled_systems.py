"""Tiled multi-chip systems (issue 14) against closed forms derived by hand.

- block floating point bytes per element (tt-metal tile sizes);
- peak FLOP/s by format and math fidelity (Tenstorrent GEMM_FLOPS arithmetic);
- a decode step that is DRAM-bound on one chip: the DRAM-resident weight bytes / bandwidth;
- an all-reduce over a line and over a ring of chips: the textbook ring cost;
- coarse (k x k cores per tile) against fine granularity on a small grid.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from palmsim.api import op_table_of, simulate, summarize_result
from palmsim.config.loader import coarsen, load_hardware
from palmsim.config.specs import (
    DTYPE_BYTES,
    ExperimentSpec,
    InferenceSpec,
    MappingSpec,
    ModelSpec,
    RunSpec,
    TrainingSpec,
    WorkloadSpec,
)
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.inference import map_inference
from palmsim.mapping.plan import CollectiveStep, ComputeStep
from palmsim.report.verdict import verdict
from palmsim.tile_cases import allreduce_time_s
from palmsim.workload.builders import embedding_block, head_block, layer_blocks
from palmsim.workload.ops import Op
from tests.analytic.test_collectives_on_chips import S_BYTES, _one_collective
from tests.conftest import wafer_spec

# --------------------------------------------------------------------------- number formats


def test_block_floating_point_bytes_include_the_shared_exponents():
    """A 32x32 tile of bfloat8_b is 1024 B of mantissas + 64 exponent bytes = 1088 B, of
    bfloat4_b 512 + 64 = 576 B (one exponent byte per 16 values)."""
    assert DTYPE_BYTES["bfp8"] * 1024 == 1088
    assert DTYPE_BYTES["bfp4"] * 1024 == 576
    assert DTYPE_BYTES["fp8"] == 1
    assert DTYPE_BYTES["bf16"] == 2


def test_wormhole_peak_by_format_and_fidelity():
    """GEMM_FLOPS: 64 cores x 4096 FLOP/cycle x 1 GHz = 262.1 TFLOP/s at LoFi, 131.1 at
    HiFi2, 65.5 at HiFi4, the same for every input format."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")  # one tile = the 8x8 grid
    for dtype in ("bf16", "bfp8", "bfp4"):
        assert hw.tile.peak_for(dtype, "LoFi") == pytest.approx(64 * 4096 * 1e9)
        assert hw.tile.peak_for(dtype, "HiFi2") == pytest.approx(64 * 4096 * 1e9 / 2)
        assert hw.tile.peak_for(dtype, "HiFi4") == pytest.approx(64 * 4096 * 1e9 / 4)


def _gemm_time_s(fidelity: str, size: int = 16384, dtype: str = "BFLOAT8_B") -> float:
    from palmsim.tile_cases import predict

    case = {
        "id": "g",
        "hardware": {"hw_spec_ref": "tenstorrent_wormhole_b0.systems.n150", "system": {}},
        "model": {"M": size, "K": size, "N": size},
        "scenario": {
            "phase": "matmul microbenchmark",
            "dtype": dtype,
            "math_fidelity": fidelity,
            "trace": True,
            "core_grid": "8x8",
        },
        "measured": {"time_ns": 1.0},
    }
    ((_, _, predicted_ns),) = predict(case)
    return predicted_ns * 1e-9


def test_a_higher_fidelity_adds_passes_of_math_not_of_unpacking():
    """Each fidelity phase re-runs a tile product's multiply on the source registers the
    unpacker filled once (tech_reports/matrix_engine "Math Fidelity"), so a GEMM at HiFi2
    takes one more pass of its math than at LoFi, 2MKN / P (P: the n150's LoFi peak, 64 x
    4.096 TFLOP/s), and at HiFi4 two more than at HiFi2; its unpack and pack time is in all
    alike. The GEMM report measured it (traced 16384^3 bfp8 on an N150, GEMM_FLOPS.md
    @06bd3735): 53.90 ms at LoFi, 85.87 ms at HiFi2, 31.97 ms apart, within 8% of
    2MKN / P = 34.36 ms."""
    pass_s = 2 * 16384**3 / (64 * 4.096e12)
    lofi, hifi2, hifi4 = (_gemm_time_s(f) for f in ("LoFi", "HiFi2", "HiFi4"))
    assert hifi2 - lofi == pytest.approx(pass_s, rel=1e-9)
    assert hifi4 - hifi2 == pytest.approx(2 * pass_s, rel=1e-9)
    measured_s = (85866348.74 - 53902544.98) * 1e-9
    assert measured_s == pytest.approx(pass_s, rel=0.08)
    # the config's one-pass efficiency e sets the rest: LoFi takes a pass over e
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    e = hw.tile.efficiency_for("bfp8")
    assert lofi - hw.tile.op_latency_s == pytest.approx(pass_s / e, rel=1e-9)
    assert hw.tile.efficiency_for("bfp8", "HiFi2") == pytest.approx(2 * e / (2 * e + 1 - e))


# --------------------------------------------------------------------------- DRAM-bound decode

H, FFN, LAYERS, VOCAB = 2048, 8192, 4, 32000


def _model(tied: bool = False) -> ModelSpec:
    return ModelSpec(
        name="tiny-llama",
        hidden_size=H,
        num_attention_heads=16,
        num_key_value_heads=16,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        hidden_act="silu",
        norm="rmsnorm",
        position_embedding="rope",
        use_bias=False,
        tie_word_embeddings=tied,
    )


def _experiment(hw, *, tp: int, prompt: int, output: int, tied: bool = False, **fields):
    """One batch-1 inference of the tiny model on ``hw``: bf16 activations, bfp8 weights
    and KV cache unless ``fields`` (any InferenceSpec field) say otherwise."""
    fields.setdefault("weight_dtype", "bfp8")
    fields.setdefault("kv_dtype", fields["weight_dtype"])
    inference = InferenceSpec(prompt_len=prompt, output_len=output, batch=1, dtype="bf16", **fields)
    model = dataclasses.replace(_model(tied), max_position_embeddings=max(64, prompt + output))
    workload = WorkloadSpec(model, TrainingSpec(prompt, 1), "inference", inference)
    return ExperimentSpec(hw, workload, MappingSpec(tp=tp, micro_batch_size=1), RunSpec())


def _inference(hw, **kw) -> dict:
    return summarize_result(simulate(_experiment(hw, **kw)))


def _ops_per_decode_step() -> int:
    """The kernels one decode step launches: every op of the layers, the embedding and the
    head, one token per request (the workload's op graph, not the simulator)."""
    # the fused attention kernel inference runs by default (inference.attention_kernel)
    spec = TrainingSpec(seq_len=1, global_batch_size=1, dtype="bf16", attention_kernel="fused")
    layer = sum(op.kernels_fwd for b in layer_blocks(_model(), spec, 1, 1) for op in b.ops)
    ends = (embedding_block(_model(), spec, 1, 1), head_block(_model(), spec, 1, 1))
    return LAYERS * layer + sum(op.kernels_fwd for b in ends for op in b.ops)


@pytest.mark.parametrize("tied", [False, True])
def test_dram_bound_decode_on_one_chip_is_weight_bytes_over_dram_bandwidth(tied):
    """n150 (one unit of 8x8 cores), batch 1: a decode step reads every weight it uses once.
    Weights fill SRAM first, the same fraction f = 1 - SRAM / W of every weight lives in DRAM,
    so the step moves f * (layer weights + LM head) bytes over the chip's 267 GB/s, in
    parallel with the SRAM part and the (far shorter) compute; and every op it launches pays
    the chip's fixed op latency first, in series: f * W / B + ops * op_latency. With tied
    embeddings (Llama 3.2 1B/3B) the head reads the embedding's matrix, stored once: the
    head's read is the same, the stored total one vocab x hidden matrix less."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    e = DTYPE_BYTES["bfp8"]
    per_layer = 4 * H * H + 3 * H * FFN  # Q, K, V, O (MHA) and gate, up, down
    norms = 2 * H * LAYERS + H  # RMSNorm weights: two per layer and the final one
    read = (LAYERS * per_layer + VOCAB * H + norms) * e  # layers + head (+ norms)
    # + the embedding table, stored but gathered by row (tied: the head's matrix itself)
    stored = read if tied else read + VOCAB * H * e
    dram_fraction = 1 - hw.tile.sram_capacity_bytes / stored
    bandwidth = hw.dram.bandwidth_bytes_per_s  # one merged channel of 6 x 44.5 GB/s
    assert bandwidth == pytest.approx(267e9)
    assert hw.tile.op_latency_s == pytest.approx(16.18e-6)
    expected = dram_fraction * read / bandwidth + _ops_per_decode_step() * hw.tile.op_latency_s
    tpot = _inference(hw, tp=1, prompt=1, output=3, tied=tied)["tpot_s"]
    # 2%: the step also pays the 500 ns DRAM latency of each of its ~14 op runs (7 us) and
    # moves one token's activations and KV over DRAM too (SRAM is full of weights).
    assert tpot == pytest.approx(expected, rel=0.02)
    assert tpot > expected  # those extras only add


def test_a_bfp8_down_projection_beside_a_bfp4_mlp_is_read_in_its_own_format():
    """tt-metal's performance MLP: gate and up in bfp4, the down projection in bfp8
    (inference.mlp_down_weight_dtype), attention and head in bfp8. The DRAM-bound step of
    the test above reads each matrix in its format: attention 4H^2 x 1.0625 B, gate and up
    2 H F x 0.5625 B, down H F x 1.0625 B per layer, the head and norms in bfp8."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    e8, e4 = DTYPE_BYTES["bfp8"], DTYPE_BYTES["bfp4"]
    assert (e8, e4) == (1.0625, 0.5625)
    per_layer = 4 * H * H * e8 + 2 * H * FFN * e4 + H * FFN * e8
    norms = 2 * H * LAYERS + H
    read = LAYERS * per_layer + (VOCAB * H + norms) * e8
    stored = read + VOCAB * H * e8  # + the untied embedding table
    dram_fraction = 1 - hw.tile.sram_capacity_bytes / stored
    expected = (
        dram_fraction * read / hw.dram.bandwidth_bytes_per_s
        + _ops_per_decode_step() * hw.tile.op_latency_s
    )
    fields = {"mlp_weight_dtype": "bfp4", "mlp_down_weight_dtype": "bfp8"}
    tpot = _inference(hw, tp=1, prompt=1, output=3, **fields)["tpot_s"]
    assert tpot == pytest.approx(expected, rel=0.02)  # the extras of the test above
    assert tpot > expected
    # all three MLP matrices in bfp4 read H x F x 0.5 B less a layer: a shorter step
    all_bfp4 = _inference(hw, tp=1, prompt=1, output=3, mlp_weight_dtype="bfp4")["tpot_s"]
    assert all_bfp4 < tpot


def test_prefetched_weights_hide_the_layers_dram_time_under_a_long_op_latency():
    """inference.weight_prefetch: decode. With an op latency of 1 ms per op (far above any
    block's DRAM time here: a whole layer's weights stream in ~0.2 ms), a decode step without
    the prefetcher pays every op's latency and then each layer block's DRAM reads (with its
    SRAM reads beside them), in series; with it, a layer block's weight reads do not wait
    for its ops' latency, so they hide under it, and so do the SRAM reads. The step shortens
    by the layers' DRAM time less their SRAM time: f x W / B - (1 - f) x W / S, W = LAYERS x
    per-layer weight bytes, f the DRAM-resident fraction (as above), S the unit's SRAM
    bandwidth. The LM head, not a layer block, keeps its reads."""
    n150 = load_hardware("hw_configs/wormhole-n150.yaml")
    hw = dataclasses.replace(n150, tile=dataclasses.replace(n150.tile, op_latency_s=1e-3))
    e = DTYPE_BYTES["bfp8"]
    per_layer = 4 * H * H + 3 * H * FFN
    norms = 2 * H * LAYERS + H
    stored = (LAYERS * per_layer + VOCAB * H + norms) * e + VOCAB * H * e
    dram_fraction = 1 - hw.tile.sram_capacity_bytes / stored
    weights = LAYERS * per_layer * e
    hidden_s = (
        dram_fraction * weights / hw.dram.bandwidth_bytes_per_s
        - (1 - dram_fraction) * weights / hw.tile.sram_bandwidth_bytes_per_s
    )
    serial = _inference(hw, tp=1, prompt=1, output=3)["tpot_s"]
    prefetched = _inference(hw, tp=1, prompt=1, output=3, weight_prefetch="decode")["tpot_s"]
    # 1%: each of the 8 layer blocks also paid the 500 ns DRAM latency and moved one token's
    # activations over DRAM (SRAM is full of weights), which the prefetched step hides too.
    assert serial - prefetched == pytest.approx(hidden_s, rel=0.01)
    assert serial - prefetched > hidden_s  # those extras only add
    # The prefetcher runs in decode only: the prefill (TTFT) is the same.
    assert _inference(hw, tp=1, prompt=1, output=3, weight_prefetch="decode")[
        "ttft_s"
    ] == pytest.approx(_inference(hw, tp=1, prompt=1, output=3)["ttft_s"], rel=1e-12)


def test_the_prefetcher_reads_a_block_ahead_so_a_layer_hides_its_weights_as_a_whole():
    """The same saving at an op latency of 22 us, where the MLP block's 5 ops (110 us) no
    longer hide its own weights (f x W_mlp / B = 155 us) but a layer's 11 ops (242 us) still
    hide the layer's (f x W_layer / B = 207 us): the prefetcher reads each block's weights
    from the start of the block before it (its buffer holds a block ahead), so every layer
    block's reads hide and the step shortens by f x W / B - (1 - f) x W / S as before. Were a
    block's reads to start with it, the MLP would add 155 - 110 - 3 (its SRAM reads) us a
    layer, and the saving fall 20 % short."""
    n150 = load_hardware("hw_configs/wormhole-n150.yaml")
    latency_s = 22e-6
    hw = dataclasses.replace(n150, tile=dataclasses.replace(n150.tile, op_latency_s=latency_s))
    e = DTYPE_BYTES["bfp8"]
    attn, mlp = 4 * H * H, 3 * H * FFN
    norms = 2 * H * LAYERS + H
    stored = (LAYERS * (attn + mlp) + VOCAB * H + norms) * e + VOCAB * H * e
    f = 1 - hw.tile.sram_capacity_bytes / stored
    bandwidth = hw.dram.bandwidth_bytes_per_s
    # the premise: the MLP block is read-bound on its own, the layer is not
    assert 5 * latency_s < f * mlp * e / bandwidth < 11 * latency_s - f * attn * e / bandwidth
    weights = LAYERS * (attn + mlp) * e
    hidden_s = f * weights / bandwidth - (1 - f) * weights / hw.tile.sram_bandwidth_bytes_per_s
    serial = _inference(hw, tp=1, prompt=1, output=3)["tpot_s"]
    prefetched = _inference(hw, tp=1, prompt=1, output=3, weight_prefetch="decode")["tpot_s"]
    # 1%: the extras of the test above, and the read ahead sharing DRAM with the blocks' own
    # activation and KV flows
    assert serial - prefetched == pytest.approx(hidden_s, rel=0.01)


def test_ops_per_layer_beyond_the_graph_each_pay_the_op_latency():
    """inference.ops_per_layer = 23 (tt_transformers' decoder layer): each layer launches
    23 - (its op-graph kernels) more ops, each 16.18 us, in series: the step grows by
    LAYERS * (23 - graph kernels) * op_latency exactly."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    # the fused attention kernel inference runs by default (inference.attention_kernel)
    spec = TrainingSpec(seq_len=1, global_batch_size=1, dtype="bf16", attention_kernel="fused")
    graph = sum(op.kernels_fwd for b in layer_blocks(_model(), spec, 1, 1) for op in b.ops)
    assert graph < 23
    base = _inference(hw, tp=1, prompt=1, output=3)["tpot_s"]
    more = _inference(hw, tp=1, prompt=1, output=3, ops_per_layer=23)["tpot_s"]
    assert more - base == pytest.approx(LAYERS * (23 - graph) * 16.18e-6, rel=1e-6)


def test_a_prefill_path_with_its_own_op_count_pays_it_in_prefill_alone():
    """inference.prefill_ops_per_layer = 27 (the Galaxy Llama demo's prefill layer) beside
    ops_per_layer = 15 (its decode layer): the prefill grows by LAYERS x (27 - 15) x
    op_latency exactly over one with 15 ops in both passes, and the decode step does not
    move."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    spec = TrainingSpec(seq_len=8, global_batch_size=1, dtype="bf16", attention_kernel="fused")
    assert sum(op.kernels_fwd for b in layer_blocks(_model(), spec, 1, 1) for op in b.ops) < 15
    both = _inference(hw, tp=1, prompt=8, output=3, ops_per_layer=15, trace="all")
    own = _inference(
        hw, tp=1, prompt=8, output=3, ops_per_layer=15, prefill_ops_per_layer=27, trace="all"
    )
    assert own["ttft_s"] - both["ttft_s"] == pytest.approx(
        LAYERS * (27 - 15) * hw.tile.op_latency_s, rel=1e-6
    )
    assert own["tpot_s"] == pytest.approx(both["tpot_s"], rel=1e-12)


def test_an_inference_that_does_not_fit_is_refused_before_any_pass_is_lowered(monkeypatch):
    """A prompt of 10^8 tokens in 4096-token chunks is 24,415 prefill passes; its KV cache
    alone, LAYERS x 2 x H x 1.0625 B (bfp8) a token, passes the n150's 12 GB many times over.
    The mapper checks the memory before it lowers a pass, so the run is refused at once (it
    had lowered every chunk first, and concatenated them in quadratic time)."""
    import palmsim.mapping.inference as inference

    def no_lowering(*_args, **_kwargs):
        raise AssertionError("a pass was lowered before the memory check")

    monkeypatch.setattr(inference._Lowering, "program", no_lowering)
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    kv_bytes = 10**8 * LAYERS * 2 * H * DTYPE_BYTES["bfp8"]
    assert kv_bytes > hw.dram.capacity_bytes
    exp = _experiment(hw, tp=1, prompt=10**8, output=2, prefill_chunk_tokens=4096)
    with pytest.raises(MappingError, match="does not fit"):
        simulate(exp)


def test_untraced_prefill_is_host_bound_at_ops_times_host_dispatch():
    """A prefill not replayed from a trace is dispatched by the host op by op while the
    device runs them. With a host dispatch of 10 ms per op, far above any op's device time
    here (the tiny model's whole layer streams its weights in ~1 ms), the device waits for
    every op: TTFT = (embedding + LAYERS x 23 + head ops) x 10 ms, the cache steps' few
    microseconds run while the host issues the next block. Traced (trace: all), the host
    dispatch costs nothing."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    slow = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, host_dispatch_s=10e-3))
    spec = TrainingSpec(seq_len=8, global_batch_size=1, dtype="bf16")
    ends = (embedding_block(_model(), spec, 1, 1), head_block(_model(), spec, 1, 1))
    ops = LAYERS * 23 + sum(op.kernels_fwd for b in ends for op in b.ops)
    ttft = _inference(slow, tp=1, prompt=8, output=2, ops_per_layer=23)["ttft_s"]
    assert ttft == pytest.approx(ops * 10e-3, rel=1e-9)
    # in two chunks of 4 tokens the host issues the embedding and the layers twice, the
    # second chunk's after the first's: the host's time runs on across the chunks
    chunked = _inference(slow, tp=1, prompt=8, output=2, ops_per_layer=23, prefill_chunk_tokens=4)
    embed_ops = sum(op.kernels_fwd for op in ends[0].ops)
    assert chunked["ttft_s"] == pytest.approx((ops + embed_ops + LAYERS * 23) * 10e-3, rel=1e-9)
    traced = _inference(slow, tp=1, prompt=8, output=2, ops_per_layer=23, trace="all")
    free = _inference(hw, tp=1, prompt=8, output=2, ops_per_layer=23, trace="all")
    # the device idles for the host most of the prompt, and the verdict says so
    whole = _inference(slow, tp=1, prompt=8, output=2, ops_per_layer=23)
    assert whole["tile_time_by_bound_s"]["host"] > 0.9 * ttft
    assert verdict(whole).resource == "host dispatch"
    assert traced["ttft_s"] == pytest.approx(free["ttft_s"], rel=1e-9)
    assert traced["ttft_s"] < 0.01 * ttft


def test_the_host_runs_ahead_of_the_device_through_an_untraced_pass():
    """ttnn enqueues every op without blocking (enqueue_mesh_workload), so the host issues a
    pass's ops at tile.host_dispatch each while the device runs them, and gets ahead where
    the device is the slower. With the weights streamed at 0.1 GB/s a layer's device time
    (~180 ms) exceeds its 23 ops x 5 ms of host time, while the attention block alone takes
    the host longer than the device. The device waits for the host only at the start, in the
    embedding and the first attention block; after those it is the later of the two. So
    TTFT untraced = TTFT traced + (H_embed - D_embed) + (h_attn - D_attn), whatever the number
    of layers (a floor of ops x host_dispatch on each block would pay h_attn - D_attn in every
    layer), where H and h are ops x 5 ms and D the blocks' device times in the traced run."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    tile = dataclasses.replace(
        hw.tile,
        dram_tile_reader_bandwidth_bytes_per_s=0.1e9,
        multicast_bandwidth_bytes_per_s=0.1e9,
        host_dispatch_s=5e-3,
    )
    slow = dataclasses.replace(hw, tile=tile)
    kw = {"tp": 1, "prompt": 8, "output": 2, "ops_per_layer": 23, "prefill_weight_readers": 8}
    traced = simulate(_experiment(slow, trace="all", **kw))
    untraced = summarize_result(simulate(_experiment(slow, **kw)))
    spans = {
        x.label: x.end_s - x.start_s
        for x in traced.trace.intervals
        if x.tile == 0 and x.category == "prefill"
    }
    spec = TrainingSpec(seq_len=8, global_batch_size=1, dtype="bf16")
    blocks = layer_blocks(_model(), spec, 1, 1)
    extra = 23 - sum(op.kernels_fwd for b in blocks for op in b.ops)
    attn_ops = sum(op.kernels_fwd for op in blocks[0].ops) + extra  # the layer's first block
    embed_ops = sum(op.kernels_fwd for op in embedding_block(_model(), spec, 1, 1).ops)
    h_attn, h_embed = attn_ops * 5e-3, embed_ops * 5e-3
    d_attn, d_embed = spans["P.L0.attn"], spans["P.embed"]
    d_layer = sum(t for label, t in spans.items() if label.startswith("P.L1."))
    assert d_attn < h_attn and d_embed < h_embed and d_layer > 23 * 5e-3  # the regime above
    expected = summarize_result(traced)["ttft_s"] + (h_embed - d_embed) + (h_attn - d_attn)
    assert untraced["ttft_s"] == pytest.approx(expected, rel=1e-6)
    # the device's waits for the host are those two, and the report names them as such (they
    # had counted as memory-bound time of the blocks they followed)
    by_bound = untraced["tile_time_by_bound_s"]
    assert by_bound["host"] == pytest.approx((h_embed - d_embed) + (h_attn - d_attn), rel=1e-6)
    busy = summarize_result(traced)["tile_time_by_bound_s"]
    assert sum(by_bound[b] for b in ("compute", "memory", "latency")) == pytest.approx(
        sum(busy.values()), rel=1e-9
    )


@pytest.mark.parametrize(
    ("dtype", "issue_s"), [("bfp8", 0.0), ("bfp4", 0.0), ("bfp4", 10.88e-6), ("bfp8", 10.88e-6)]
)
def test_prefill_weights_stream_through_the_column_readers(dtype, issue_s):
    """inference.prefill_weight_readers: a prefill block's DRAM-resident weights arrive
    through R reader cores, each reading its column's block one 32x32 tile per transaction
    (a tile of b bytes in max(i, b/r): dram_read_issue i, dram_tile_reader_bandwidth r) and
    then multicasting it (multicast_bandwidth m), so a byte costs (max(i/b, 1/r) + 1/m) / R.
    With r = m = 0.1 GB/s and 8 readers the layers' weights dominate a traced prefill: TTFT =
    f x (layer weights) x that, f the DRAM fraction of every weight (SRAM fills first, as in
    the decode test above), plus the embedding, head, cache steps and op latencies (ms). An
    issue time of 10.88 us is a bfp8 tile's 1088 B at r: it leaves bfp8 at r and holds a
    bfp4 tile's 576 B to 576 B / 10.88 us. The head reads its weights as a decode-style
    matmul and keeps the DRAM rate; decode is unchanged."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    slow = dataclasses.replace(
        hw,
        tile=dataclasses.replace(
            hw.tile,
            dram_tile_reader_bandwidth_bytes_per_s=0.1e9,
            multicast_bandwidth_bytes_per_s=0.1e9,
            dram_read_issue_s=issue_s,
        ),
    )
    e = DTYPE_BYTES[dtype]
    per_layer = (4 * H * H + 3 * H * FFN) * e
    norms = (2 * H * LAYERS + H) * e
    stored = LAYERS * per_layer + norms + 2 * VOCAB * H * e  # + head and embedding
    dram_fraction = 1 - hw.tile.sram_capacity_bytes / stored
    per_byte_s = (max(issue_s / (1024 * e), 1 / 0.1e9) + 1 / 0.1e9) / 8
    expected = dram_fraction * (LAYERS * per_layer + 2 * H * LAYERS * e) * per_byte_s
    kw = {"tp": 1, "prompt": 8, "output": 2, "trace": "all", "weight_dtype": dtype}
    on = _inference(slow, prefill_weight_readers=8, **kw)
    off = _inference(slow, **kw)
    assert on["ttft_s"] == pytest.approx(expected, rel=0.02)
    assert on["ttft_s"] > expected
    assert off["ttft_s"] < 0.05 * on["ttft_s"]  # at the DRAM rate the same prefill is fast
    assert on["tpot_s"] == pytest.approx(off["tpot_s"], rel=1e-12)


def test_a_dram_sharded_workers_own_rate_is_the_one_its_weights_stream_at():
    """Where the tile gives a DRAM-sharded matmul's worker a rate of its own
    (tile.dram_sharded_reader_bandwidth), a decode GEMM streams at 12 x that, whatever the
    'DRAM Read' rate: at 0.1 GB/s a worker TPOT = f x (layer and head weights) / 1.2 GB/s,
    as in the test above. A Blackhole's is 55% of a bank's 64 GB/s (tt-metal PR #54242: one
    worker a bank reaches 55% of the DRAM bandwidth, 512 GB/s over a p150's 8 banks)."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    assert hw.tile.dram_sharded_reader_bandwidth_bytes_per_s == 0.0
    assert hw.tile.dram_sharded_reader_bytes_per_s == hw.tile.dram_reader_bandwidth_bytes_per_s
    slow = dataclasses.replace(
        hw, tile=dataclasses.replace(hw.tile, dram_sharded_reader_bandwidth_bytes_per_s=0.1e9)
    )
    e = DTYPE_BYTES["bfp8"]
    per_layer = 4 * H * H + 3 * H * FFN
    stored = (LAYERS * per_layer + 2 * VOCAB * H + 2 * H * LAYERS + H) * e
    dram_fraction = 1 - hw.tile.sram_capacity_bytes / stored
    expected = dram_fraction * (LAYERS * per_layer + VOCAB * H) * e / (12 * 0.1e9)
    tpot = _inference(slow, tp=1, prompt=1, output=3, decode_readers_per_bank=1)["tpot_s"]
    assert tpot == pytest.approx(expected, rel=0.02)
    assert tpot > expected
    p150 = load_hardware("hw_configs/blackhole-p150.yaml")
    assert p150.dram.banks * p150.tile.dram_sharded_reader_bytes_per_s == pytest.approx(
        0.55 * 512e9
    )


def test_the_tile_reads_of_the_shipped_chips():
    """The n150's and p150's tile reads (tt-metal's 'DRAM Interleaved' packet-size tests):
    a Wormhole core reads a bfp8 tile (1088 B) at its 21.91 GB/s, above its 21.36 ns issue
    floor; a Blackhole core's 27.09 ns floor holds a bfp4 tile (576 B) to 576 B / 27.09 ns =
    21.3 GB/s, below its 28.77 GB/s for larger tiles."""
    from palmsim.mapping.inference import prefill_stream_time_s

    def rate(config: str, dtype: str) -> float:
        tile = load_hardware(config).tile
        no_multicast = dataclasses.replace(tile, multicast_bandwidth_bytes_per_s=float("inf"))
        op = layer_blocks(_model(), TrainingSpec(8, 1), 1, 1)[0].ops[0]
        s = prefill_stream_time_s((op,), lambda _: dtype, no_multicast, 1, 1.0)
        return op.weight_bytes / s

    assert rate("hw_configs/wormhole-n150.yaml", "bfp8") == pytest.approx(21.91e9)
    assert rate("hw_configs/blackhole-p150.yaml", "bfp8") == pytest.approx(28.77e9)
    assert rate("hw_configs/blackhole-p150.yaml", "bfp4") == pytest.approx(576 / 27.09e-9)


def _without_reader_rate(hw):
    """``hw`` with no per-core DRAM read rate (``tile.dram_reader_bandwidth``)."""
    return dataclasses.replace(
        hw, tile=dataclasses.replace(hw.tile, dram_reader_bandwidth_bytes_per_s=0.0)
    )


def _with_core_peak(hw, core_peak_flop_per_s: float):
    """The n150 ``hw`` with each of its 64 cores at ``core_peak_flop_per_s`` in every format."""
    peak = tuple((dtype, 64 * core_peak_flop_per_s) for dtype, _ in hw.tile.peak_flop_per_s)
    return dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, peak_flop_per_s=peak))


#: A core of the n150 slowed so far that a prefill of the tiny model is compute-bound [FLOP/s].
SLOW_CORE_PEAK_FLOP_PER_S = 1e8


def _slowed_prefill_ttft_s(prompt: int, **fields) -> float:
    """TTFT of the tiny model's traced bf16 prefill of ``prompt`` tokens on the n150, each core
    at :data:`SLOW_CORE_PEAK_FLOP_PER_S`, ``fields`` (InferenceSpec fields) as given."""
    hw = _with_core_peak(load_hardware("hw_configs/wormhole-n150.yaml"), SLOW_CORE_PEAK_FLOP_PER_S)
    fields = {"trace": "all", "weight_dtype": "bf16", **fields}
    return _inference(hw, tp=1, prompt=prompt, output=2, **fields)["ttft_s"]


def _prefill_layer_ops(prompt: int) -> list[Op]:
    """The ops of one layer of the tiny model's prefill of ``prompt`` tokens (fused attention,
    as inference runs it)."""
    spec = TrainingSpec(seq_len=prompt, global_batch_size=1, dtype="bf16", attention_kernel="fused")
    return [op for b in layer_blocks(_model(), spec, 1, 1) for op in b.ops]


def test_prefill_weight_readers_need_the_per_core_rates():
    bare = _without_reader_rate(load_hardware("hw_configs/wormhole-n150.yaml"))
    with pytest.raises(MappingError, match="dram_reader_bandwidth"):
        _inference(bare, tp=1, prompt=8, output=2, prefill_weight_readers=8)


def test_a_prefill_on_fewer_cores_runs_its_layers_at_their_share_of_the_peak():
    """inference.prefill_compute_cores: c of a tile's cores run a prefill's layer ops (as
    tt_transformers' 8x8 prefill grid on a 13x10 Blackhole). With each core slowed to
    0.1 GFLOP/s the prefill is compute-bound and its layers take F / (c p e): F their FLOP
    in the op graph, p a core's peak, e the bf16 efficiency. The embedding and the LM head
    keep all 64 cores of the n150's tile, so TTFT(c) = 64/c x L + R with L = F / (64 p e):
    32 cores add L, 16 add 3 L, and 0 means all 64."""
    ttft = {c: _slowed_prefill_ttft_s(32, prefill_compute_cores=c) for c in (0, 64, 32, 16)}
    flop = LAYERS * sum(op.flop_fwd for op in _prefill_layer_ops(32))
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    layers_s = flop / (64 * SLOW_CORE_PEAK_FLOP_PER_S * hw.tile.efficiency_for("bf16"))
    assert ttft[64] == ttft[0]
    assert ttft[32] - ttft[0] == pytest.approx(layers_s, rel=0.01)
    assert ttft[16] - ttft[0] == pytest.approx(3 * layers_s, rel=0.01)


def test_prefill_compute_cores_are_cores_of_one_simulated_tile():
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    with pytest.raises(MappingError, match="prefill_compute_cores = 65: a simulated tile holds 64"):
        _inference(hw, tp=1, prompt=8, output=2, prefill_compute_cores=65)


def test_tt_transformers_prefills_on_an_8x8_grid():
    """tt_transformers' find_prefill_grid caps every prefill matmul at 8 x 8 cores, and its
    prefill SDPA runs on (8, 8): 64 cores of a Blackhole's 130; other code uses all."""
    from palmsim.tile_cases import prefill_compute_cores

    assert prefill_compute_cores("models/tt_transformers/demo/simple_text_demo.py") == 8 * 8
    assert prefill_compute_cores("models/demos/llama3_70b_galaxy") == 0


def test_tt_transformers_splits_its_residual_stream_on_a_line_of_chips():
    """tt_transformers keeps the stream fractured on an N300 or a T3000 (its adds split) and
    runs a prefill's norms distributed above width 4096 (Llama 3.1 70B's 8192, not 8B's
    4096); on a Galaxy's 2-D mesh, and in other code, the option stays off."""
    from palmsim.tile_cases import residual_split

    code = "models/tt_transformers/demo/simple_text_demo.py"
    assert residual_split(code, None, 4096) == "adds"
    assert residual_split(code, None, 8192) == "adds_and_prefill_norms"
    assert residual_split(code, (8, 4), 8192) == "none"
    assert residual_split("models/demos/llama3_70b_galaxy", None, 8192) == "none"


def test_decode_weights_stream_through_one_reader_per_dram_bank():
    """inference.decode_readers_per_bank: 1: a decode GEMM runs as a DRAM-sharded matmul, one
    worker core per DRAM bank (the n150's 12) reading its shard at dram_reader_bandwidth r.
    With r = 0.1 GB/s and 12 readers (1.2 GB/s), the weights dominate a decode step:
    TPOT = f x (layer and head weights) / 1.2 GB/s, f the DRAM fraction of every weight (as
    in the decode test above), plus the op latencies and the small reads beside the GEMMs.
    In the prefill only the LM head runs so (tt_transformers' lm_head.py has one set of
    program configs): TTFT grows by its weights over 1.2 GB/s, less the same bytes at the
    DRAM rate. At the n150's 22 GB/s, 12 readers stream 264 GB/s, the fitted 267 GB/s of its
    DRAM to 1%: the decode step barely moves."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    assert 12 * hw.tile.dram_reader_bandwidth_bytes_per_s == pytest.approx(
        hw.dram.bandwidth_bytes_per_s, rel=0.012
    )
    slow = dataclasses.replace(
        hw, tile=dataclasses.replace(hw.tile, dram_reader_bandwidth_bytes_per_s=0.1e9)
    )
    e = DTYPE_BYTES["bfp8"]
    per_layer = 4 * H * H + 3 * H * FFN
    norms = 2 * H * LAYERS + H
    stored = (LAYERS * per_layer + VOCAB * H + norms) * e + VOCAB * H * e
    dram_fraction = 1 - hw.tile.sram_capacity_bytes / stored
    gemm_weights = (LAYERS * per_layer + VOCAB * H) * e
    expected = dram_fraction * gemm_weights / (12 * 0.1e9)
    assert hw.dram.banks == 12
    on = _inference(slow, tp=1, prompt=1, output=3, decode_readers_per_bank=1)
    off = _inference(slow, tp=1, prompt=1, output=3)
    assert on["tpot_s"] == pytest.approx(expected, rel=0.02)
    assert on["tpot_s"] > expected
    assert off["tpot_s"] < 0.05 * on["tpot_s"]  # at the DRAM rate the same step is fast
    head = dram_fraction * VOCAB * H * e
    head_extra = head / (12 * 0.1e9) - head / hw.dram.bandwidth_bytes_per_s
    assert on["ttft_s"] - off["ttft_s"] == pytest.approx(head_extra, rel=0.01)
    real = _inference(hw, tp=1, prompt=1, output=3, decode_readers_per_bank=1)["tpot_s"]
    base = _inference(hw, tp=1, prompt=1, output=3)["tpot_s"]
    assert real == pytest.approx(base, rel=0.012)


def test_decode_gemm_math_runs_on_the_dram_bank_cores_only():
    """The DRAM-sharded matmul computes on its R reader cores, not on the chip's 64. With a
    core slowed to 10 GFLOP/s (LoFi, every format) the math dominates a decode step. On a
    chip of one DRAM bank with one reader per bank (R = 1) each weight GEMM runs on one
    core: 2 x its weights FLOP (batch 1) at 10 GFLOP/s x the bfp8 efficiency. TPOT = 2 x
    (layer and head weights) / (10 GFLOP/s x e) plus the DRAM reads, op latencies and
    non-GEMM ops of a few ms, under 3% of it. Two readers per bank halve it. Without the
    readers the same GEMMs run on all 64 cores, 64 times faster."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    core_peak = 10e9
    slow = dataclasses.replace(
        _with_core_peak(hw, core_peak), dram=dataclasses.replace(hw.dram, banks=1)
    )
    params = LAYERS * (4 * H * H + 3 * H * FFN) + VOCAB * H
    expected = 2 * params / (core_peak * slow.tile.efficiency_for("bfp8"))
    tpot = _inference(slow, tp=1, prompt=1, output=3, decode_readers_per_bank=1)["tpot_s"]
    assert tpot == pytest.approx(expected, rel=0.03)
    assert tpot > expected
    two = _inference(slow, tp=1, prompt=1, output=3, decode_readers_per_bank=2)["tpot_s"]
    assert two == pytest.approx(expected / 2, rel=0.05)
    off = _inference(slow, tp=1, prompt=1, output=3)["tpot_s"]
    assert off < expected / 64 + 5e-3


def _kv_tokens_per_decode_step(prompt: int) -> int:
    """The cached tokens the first decode step reads: the prompt's (the token the prefill
    sampled is the step's input; its K and V are written, not read)."""
    return prompt


def test_decode_attention_streams_through_its_cores():
    """inference.decode_attention_cores: c: one request's decode attention runs on c cores
    of the tile (tt-metal's SDPA decode: num_cores_per_batch), which read its cached K and V
    at dram_reader_bandwidth r each. With r = 10 MB/s the reads dominate a decode step at a
    long context: per layer ctx x (2 x kv heads x head dim x 1.0625 B of bfp8) / (c x r),
    so TPOT = layers x that, plus the rest of the step: the same step with c = 0 less its
    cache reads at the DRAM rate (about 1e-4 of the floor). Two cores halve the floor, and
    the rest cancels in the difference."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    r = 10e6
    slow = dataclasses.replace(
        hw, tile=dataclasses.replace(hw.tile, dram_reader_bandwidth_bytes_per_s=r)
    )
    prompt = 1000
    ctx = _kv_tokens_per_decode_step(prompt)
    heads, d = _model().num_key_value_heads, H // _model().num_attention_heads
    per_layer = ctx * 2 * heads * d * DTYPE_BYTES["bfp8"]
    off = _inference(slow, tp=1, prompt=prompt, output=2)["tpot_s"]
    one = _inference(slow, tp=1, prompt=prompt, output=2, decode_attention_cores=1)["tpot_s"]
    two = _inference(slow, tp=1, prompt=prompt, output=2, decode_attention_cores=2)["tpot_s"]
    assert one - off == pytest.approx(LAYERS * per_layer / r, rel=2e-4)
    assert one - off < LAYERS * per_layer / r
    assert one - two == pytest.approx(LAYERS * per_layer / (2 * r), rel=1e-9)


def test_kv_cache_reads_at_arbitrary_places_run_at_the_interleaved_share():
    """dram.interleaved_read_efficiency e: a tile's reads of its paged KV cache (interleaved
    over the banks, read by cores not placed by them) last at least their bytes over e x its
    channel's bandwidth B (267 GB/s on an n150). At a 20000-token context they bound the
    step's attention (per layer ctx x 2 x kv heads x head dim x 1.0625 B of bfp8 = 87 MB,
    326 us at B, against the op latency's 16 us), so halving e from 0.5 to 0.25 adds
    layers x that / (0.25 B) - layers x that / (0.5 B) to TPOT, the rest of the step alike;
    at e = 1 the step is shorter than at 0.5."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")

    def tpot(e: float) -> float:
        dram = dataclasses.replace(hw.dram, interleaved_read_efficiency=e)
        return _inference(dataclasses.replace(hw, dram=dram), tp=1, prompt=20000, output=2)[
            "tpot_s"
        ]

    ctx = _kv_tokens_per_decode_step(20000)
    heads, d = _model().num_key_value_heads, H // _model().num_attention_heads
    per_layer = ctx * 2 * heads * d * DTYPE_BYTES["bfp8"]
    b = hw.dram.bandwidth_bytes_per_s
    assert b == pytest.approx(267e9)
    half, quarter = tpot(0.5), tpot(0.25)
    assert quarter - half == pytest.approx(LAYERS * per_layer * (1 / 0.25 - 1 / 0.5) / b, rel=1e-9)
    assert tpot(1.0) < half


def test_logits_read_back_to_the_host_cost_a_tile_of_the_vocabulary_a_request():
    """inference.logits_to_host 'prefill_and_batch_decode' (tt_transformers' host sampling):
    after the LM head the host reads each prefilled request's 32-row tile of the vocabulary,
    32 x V bf16 elements at tile.host_read_bandwidth (1.68 GB/s on an n150), so one user's
    TTFT grows by 32 x 32000 x 2 B / 1.68 GB/s = 1.219 ms; a decode step of 32 requests
    reads their 32 rows as well, and a step of one request samples on device."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    assert hw.tile.host_read_bandwidth_bytes_per_s == pytest.approx(1.68e9)
    read_s = 32 * VOCAB * 2 / 1.68e9

    def run(batch: int, mode: str) -> dict:
        inference = InferenceSpec(
            prompt_len=64, output_len=3, batch=batch, dtype="bf16", weight_dtype="bfp8",
            kv_dtype="bfp8", logits_to_host=mode,
        )  # fmt: skip
        model = dataclasses.replace(_model(), max_position_embeddings=128)
        workload = WorkloadSpec(model, TrainingSpec(64, 1), "inference", inference)
        mapping = MappingSpec(tp=1, micro_batch_size=batch)
        return summarize_result(simulate(ExperimentSpec(hw, workload, mapping, RunSpec())))

    host, device = run(32, "prefill_and_batch_decode"), run(32, "none")
    assert host["tpot_s"] - device["tpot_s"] == pytest.approx(read_s, rel=1e-9)
    one_host, one_device = run(1, "prefill_and_batch_decode"), run(1, "none")
    assert one_host["ttft_s"] - one_device["ttft_s"] == pytest.approx(read_s, rel=1e-9)
    assert one_host["tpot_s"] == pytest.approx(one_device["tpot_s"], rel=1e-12)
    # the Falcon demos sample every decode step on the host, one request too (its 32-row
    # tile); Falcon 7B's prefill samples on device ('decode'), Falcon 40B's does not
    for mode, prefill_reads in (("decode", False), ("prefill_and_decode", True)):
        falcon = run(1, mode)
        assert falcon["tpot_s"] - one_device["tpot_s"] == pytest.approx(read_s, rel=1e-9)
        ttft_s = one_device["ttft_s"] + (read_s if prefill_reads else 0.0)
        assert falcon["ttft_s"] == pytest.approx(ttft_s, rel=1e-9)


@pytest.mark.parametrize("tile_rows", [1, 32])
def test_a_decode_steps_collectives_move_whole_tiles_of_rows(tile_rows):
    """tile.matrix_tile_rows t: a pass's activations fill whole tiles of t rows (tt-metal
    keeps tensors in 32x32 tiles; tt_transformers pads a decode step's users to
    tile_padded_batch_rows), so each all-reduce of a decode step of r requests on the
    n300's two chips moves ceil(r / t) x t rows of H bf16 elements: one request and 32
    requests both move 32 x H x 2 B at t = 32, and r x H x 2 B at t = 1."""
    hw = load_hardware("hw_configs/wormhole-n300.yaml")
    assert hw.tile.matrix_tile_rows == 32
    hw = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, matrix_tile_rows=tile_rows))

    def allreduce_bytes(requests: int) -> list[float]:
        experiment = _experiment(hw, tp=2, prompt=32, output=2)
        inference = dataclasses.replace(experiment.workload.inference, batch=requests)
        experiment = dataclasses.replace(
            experiment,
            workload=dataclasses.replace(experiment.workload, inference=inference),
            mapping=MappingSpec(tp=2, micro_batch_size=requests),
        )
        plan = map_inference(experiment, Chip.from_spec(hw))
        (stage,) = plan.inference.stages
        return [s.size_bytes for s in stage.decode[0] if isinstance(s, CollectiveStep)]

    for requests in (1, 32):
        rows = -(-requests // tile_rows) * tile_rows
        sizes = allreduce_bytes(requests)
        assert len(sizes) == 2 * LAYERS  # the attention's and the MLP's, in every layer
        assert sizes == pytest.approx([rows * H * 2] * len(sizes), rel=1e-12)


def test_logits_to_host_without_a_host_read_rate_is_named():
    """A serving code that samples on the host needs the rate the host reads logits at."""
    from palmsim.errors import MappingError

    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    hw = dataclasses.replace(
        hw, tile=dataclasses.replace(hw.tile, host_read_bandwidth_bytes_per_s=0)
    )
    with pytest.raises(MappingError, match=r"tile\.host_read_bandwidth"):
        _inference(hw, tp=1, prompt=8, output=2, logits_to_host="prefill")


def _padded_decode_attention_s(ctx: int, kv_heads: int, d: int, rate_flop_per_s: float) -> float:
    """One layer's decode attention as tt-metal's SDPA decode runs it: QK^T and scores x V,
    2 x 2 x d FLOP per cached token for each KV head's query group padded to a 32-row tile,
    at ``rate_flop_per_s``."""
    return ctx * kv_heads * 2 * 2 * 32 * d / rate_flop_per_s


def _slowed_decode_attention_case():
    """The n150 with each core slowed to 10 GFLOP/s, so a decode step's attention over a
    256-token prompt is math-bound: ``(hw, slowed hw, core peak, prompt, cached tokens, the
    tiny model's KV heads, head dim)``."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    core_peak = 10e9
    prompt = 256
    d = H // _model().num_attention_heads
    ctx = _kv_tokens_per_decode_step(prompt)
    return (
        hw,
        _with_core_peak(hw, core_peak),
        core_peak,
        prompt,
        ctx,
        _model().num_key_value_heads,
        d,
    )


def test_decode_attention_math_pads_each_query_group_to_a_tile():
    """The c cores' math: each KV head's query group padded to 32 rows (tt-metal's tile),
    for the tiny model's MHA 1 head padded to 32, at tile.decode_attention_efficiency e_a of c
    of the 64 cores' peak (the SDPA decode is the fused attention kernel in small steps, not
    at the prefill's tile.attention_efficiency). With a core slowed to
    10 GFLOP/s and c = 4, one layer's step lasts that FLOP / (4 x 10 GFLOP/s x e_a); the
    reads (4 x 22 GB/s) are far below it. Without c the attention runs unpadded on all 64
    cores at the GEMM efficiency e."""
    hw, slow, core_peak, prompt, ctx, heads, d = _slowed_decode_attention_case()
    assert hw.tile.decode_attention_efficiency == pytest.approx(0.2444)
    assert hw.tile.attention_efficiency == pytest.approx(0.5006)
    per_layer = _padded_decode_attention_s(
        ctx, heads, d, 4 * core_peak * hw.tile.decode_attention_efficiency
    )
    unpadded_on_all = ctx * heads * 2 * 2 * d / (64 * core_peak * hw.tile.compute_efficiency)
    off = _inference(slow, tp=1, prompt=prompt, output=2)["tpot_s"]
    on = _inference(slow, tp=1, prompt=prompt, output=2, decode_attention_cores=4)["tpot_s"]
    assert on - off == pytest.approx(LAYERS * (per_layer - unpadded_on_all), rel=0.01)


def test_decode_attention_runs_at_its_own_fidelity():
    """inference.decode_attention_fidelity: the decode attention's math at that fidelity's
    peak, the core's peak over its passes (n150: HiFi2 2, HiFi4 4), where the prefill keeps
    the activation dtype's (tt_transformers: sdpa_decode hifi2, sdpa_prefill hifi4). At HiFi4
    a math-bound layer lasts twice its HiFi2 time, so TPOT grows by layers x the HiFi2 time
    ctx x kv heads x 4 x 32 x d / (4 x core peak / 2 x e_a); the prefill is unchanged."""
    hw, slow, core_peak, prompt, ctx, heads, d = _slowed_decode_attention_case()
    assert dict(hw.tile.fidelity_passes) == {"LoFi": 1, "HiFi2": 2, "HiFi3": 3, "HiFi4": 4}
    hifi2 = _padded_decode_attention_s(
        ctx, heads, d, 4 * core_peak / 2 * hw.tile.decode_attention_efficiency
    )
    runs = {}
    for f in ("HiFi2", "HiFi4"):
        runs[f] = _inference(
            slow, tp=1, prompt=prompt, output=2, decode_attention_cores=4,
            decode_attention_fidelity=f,
        )  # fmt: skip
    assert runs["HiFi4"]["tpot_s"] - runs["HiFi2"]["tpot_s"] == pytest.approx(
        LAYERS * hifi2, rel=1e-6
    )
    assert runs["HiFi4"]["ttft_s"] == pytest.approx(runs["HiFi2"]["ttft_s"], rel=1e-12)


def test_decode_attention_gives_a_kv_head_at_most_its_cores_per_head():
    """inference.decode_attention_cores_per_head m: a request's KV head runs on at most m of
    its c decode-attention cores (tt-metal's max_cores_per_head_batch, 16): a tile holding 2
    KV heads runs a request on min(c, 2 m) cores. With c = 64 and m = 16 the math of the
    tiny model made GQA (16 query heads, 2 KV heads) runs on 32 cores: per layer
    ctx x 2 x 4 x 32 x d / (32 x core peak x e_a), twice its time on 64 cores, so TPOT grows
    by layers x the 64-core time; m = 32 leaves all 64."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    core_peak = 1e9
    slow = _with_core_peak(hw, core_peak)
    prompt = 256
    ctx = _kv_tokens_per_decode_step(prompt)
    d = H // _model().num_attention_heads

    def tpot(per_head: int) -> float:
        experiment = _experiment(
            slow, tp=1, prompt=prompt, output=2, decode_attention_cores=64,
            decode_attention_cores_per_head=per_head,
        )  # fmt: skip
        model = dataclasses.replace(experiment.workload.model, num_key_value_heads=2)
        workload = dataclasses.replace(experiment.workload, model=model)
        return summarize_result(simulate(dataclasses.replace(experiment, workload=workload)))[
            "tpot_s"
        ]

    on_all = _padded_decode_attention_s(
        ctx, 2, d, 64 * core_peak * hw.tile.decode_attention_efficiency
    )
    assert tpot(16) - tpot(0) == pytest.approx(LAYERS * on_all, rel=1e-6)
    assert tpot(32) == pytest.approx(tpot(0), rel=1e-12)


def test_decode_attention_cores_follow_the_demos_sdpa_grids():
    """tt-metal's SDPA decode gives each user its grid's cores over the users it is built
    for: the Galaxy demo's 32 over its 8 users a device group (4, live or not);
    tt_transformers' 64 over its batch (2 at 32, 64 at 1, at least one core)."""
    from palmsim.tile_cases import decode_attention_cores

    assert decode_attention_cores("models/demos/llama3_70b_galaxy", 1) == 32 // 8
    assert decode_attention_cores("models/demos/llama3_70b_galaxy", 32) == 32 // 8
    assert decode_attention_cores("models/tt_transformers", 32) == 64 // 32
    assert decode_attention_cores("models/tt_transformers", 64) == 1
    assert decode_attention_cores("models/tt_transformers", 256) == 1
    assert decode_attention_cores("models/tt_transformers", 1) == 64
    assert decode_attention_cores("models/demos/falcon7b_common", 32) == 0


def test_the_demos_decode_attention_runs_at_hifi2_and_16_cores_a_head():
    """Both demos decode at HiFi2 (tt_transformers' sdpa_decode hifi2na; the Galaxy demo's
    SDPA_DECODE_COMPUTE_PROGCFG) with tt-metal's default max_cores_per_head_batch 16; other
    code keeps palmsim's defaults."""
    from palmsim.tile_cases import decode_attention_settings

    for code in ("models/tt_transformers", "models/demos/llama3_70b_galaxy"):
        settings = decode_attention_settings(code, 1)
        assert settings["decode_attention_fidelity"] == "HiFi2"
        assert settings["decode_attention_cores_per_head"] == 16
    assert decode_attention_settings("models/demos/falcon7b_common", 1) == {
        "decode_attention_cores": 0
    }


def test_decode_attention_cores_need_the_rate_and_enough_cores():
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    with pytest.raises(MappingError, match="dram_reader_bandwidth"):
        _inference(_without_reader_rate(hw), tp=1, prompt=8, output=2, decode_attention_cores=1)
    with pytest.raises(MappingError, match="64 cores"):
        _inference(hw, tp=1, prompt=8, output=2, decode_attention_cores=65)


def test_decode_readers_per_bank_need_banks_the_rate_and_enough_cores():
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    with pytest.raises(MappingError, match="dram_reader_bandwidth"):
        _inference(_without_reader_rate(hw), tp=1, prompt=8, output=2, decode_readers_per_bank=1)
    no_banks = dataclasses.replace(hw, dram=dataclasses.replace(hw.dram, banks=0))
    with pytest.raises(MappingError, match=r"dram\.banks: 0"):
        _inference(no_banks, tp=1, prompt=8, output=2, decode_readers_per_bank=1)
    # 12 banks x 6 = 72 readers on a tile of 64 cores
    with pytest.raises(MappingError, match="64 cores"):
        _inference(hw, tp=1, prompt=8, output=2, decode_readers_per_bank=6)


# --------------------------------------------------------------------------- all-reduce


def test_allreduce_over_a_line_of_chips_is_the_textbook_line():
    """Four chips of a T3000 mesh row (one link per neighbour, no link from 3 back to 0): the
    line algorithm passes each chip's piece hop by hop towards both ends, so the end links
    carry one ring edge each way, 2(n-1)/n * S / B, and each of the 2(n-1) steps is one hop
    (two rings in opposite directions, the config's bidirectional_rings, would load them the
    same): the closed form validate uses for a line. tt-metal's all-reduce is two calls, a
    reduce-scatter then an all-gather (system.composite_all_reduce), each after the startup
    (system.collective_latency), and the reduce-scatter's (n-1)/n * S keep e of B
    (system.reduce_scatter_efficiency): (n-1)/n * S / B * (1/e - 1) more, and each of its
    n-1 steps reduces r longer (system.reduce_scatter_step_latency)."""
    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    assert hw.wafer.composite_all_reduce
    chip = Chip.from_spec(hw)
    n = 4
    link = hw.wafer.inter_die
    startups = 2 * hw.wafer.collective_latency_s
    expected = 2 * (n - 1) / n * S_BYTES / link.bandwidth_bytes_per_s
    expected += 2 * (n - 1) * link.latency_s
    stalls = (n - 1) / n * S_BYTES / link.bandwidth_bytes_per_s
    stalls *= 1 / hw.wafer.reduce_scatter_efficiency - 1
    stalls += (n - 1) * hw.wafer.reduce_scatter_step_latency_s
    got = _one_collective(chip, (0, 1, 2, 3), "allreduce")
    assert got == pytest.approx(startups + expected + stalls, rel=1e-6)
    line = allreduce_time_s(
        S_BYTES,
        n,
        ring=False,
        link_bandwidth_bytes_per_s=link.bandwidth_bytes_per_s,
        hop_latency_s=link.latency_s,
    )
    assert line == pytest.approx(expected)


@pytest.mark.parametrize("exclusive", [True, False])
def test_a_chips_own_pieces_leave_it_at_its_injection_share_of_the_link(exclusive):
    """The T3000's fitted injection efficiency i (system.injection_efficiency, under 1): a chip
    sends the pieces of its own an all-gather carries at i B, the link's rate forwarding the
    others'. Over two chips each flow is one chip's piece: startup + one hop + (S/2) / (i B);
    an all-reduce's reduce-scatter half keeps e B (reduce_scatter_efficiency) and its
    all-gather half i B, after two startups and two hops; a reduce-scatter alone is not
    capped (its one step reduces r longer, reduce_scatter_step_latency). Over a line of four,
    each end link carries the pieces of three chips, 3 i >= 1 of its rate, and the near
    links fewer bytes (one chip's S/4 at i B, under 3/4 S / B):
    startup + three hops + 3/4 S / B, as with no cap. The closed form and the flow network
    alike."""
    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    w = hw.wafer
    i, e, b = w.injection_efficiency, w.reduce_scatter_efficiency, w.inter_die.bandwidth_bytes_per_s
    assert 1 / 3 <= i < 1
    hop, startup = w.inter_die.latency_s, w.collective_latency_s
    r = w.reduce_scatter_step_latency_s
    chip = Chip.from_spec(hw)

    def time_s(tiles: tuple[int, ...], kind: str) -> float:
        return _one_collective(chip, tiles, kind, exclusive=exclusive)

    half = S_BYTES / 2
    assert time_s((0, 1), "allgather") == pytest.approx(startup + hop + half / (i * b), rel=1e-9)
    assert time_s((0, 1), "reducescatter") == pytest.approx(
        startup + hop + r + half / (e * b), rel=1e-9
    )
    assert time_s((0, 1), "allreduce") == pytest.approx(
        2 * startup + 2 * hop + r + half / (e * b) + half / (i * b), rel=1e-9
    )
    assert time_s((0, 1, 2, 3), "allgather") == pytest.approx(
        startup + 3 * hop + 3 / 4 * S_BYTES / b, rel=1e-9
    )


@pytest.mark.parametrize("exclusive", [True, False])
def test_a_ring_of_chips_keeps_its_ring_fabric_share_of_the_link(exclusive):
    """The T3000's 8 chips closed into a ring (the 2x4 mesh's Hamiltonian cycle) run two rings
    in opposite directions, each edge a direction carrying half a ring edge's bytes, at the
    fitted ring fabric efficiency f of the link (system.ring_fabric_efficiency, under 1: the
    ring fabric's deadlock avoidance; every edge passes 7 chips' pieces, 7 i > 1, so the
    injection cap does not bind): an all-gather takes startup + 7 hops + 7/8 S / 2 / (f B); a
    reduce-scatter's partial sums pass 4 chips one way and 3 the other (tt-metal's
    ccl_common.cpp: ceil(7/2) targets forward), so its chain is 4 steps, each reducing r
    longer (system.reduce_scatter_step_latency): startup + 4 (hop + r) + 7/8 S / 2 / (f B)
    + 7/8 S / 2 / B (1/e - 1), its stalls at e of the link's full rate; an all-reduce both
    after two startups, 4 + 7 hops. A line of the first four chips keeps the full rate. The
    closed form and the flow network alike."""
    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    w = hw.wafer
    f, i, e = w.ring_fabric_efficiency, w.injection_efficiency, w.reduce_scatter_efficiency
    b, hop = w.inter_die.bandwidth_bytes_per_s, w.inter_die.latency_s
    startup = w.collective_latency_s
    assert f < 1 and 7 * i >= 1
    chip = Chip.from_spec(hw)
    ring = (0, 1, 2, 3, 7, 6, 5, 4)
    edge = 7 / 8 * S_BYTES / 2

    def time_s(tiles: tuple[int, ...], kind: str) -> float:
        return _one_collective(chip, tiles, kind, exclusive=exclusive)

    assert time_s(ring, "allgather") == pytest.approx(startup + 7 * hop + edge / (f * b), rel=1e-9)
    r = w.reduce_scatter_step_latency_s
    stalls = edge / b * (1 / e - 1)
    assert time_s(ring, "reducescatter") == pytest.approx(
        startup + 4 * (hop + r) + edge / (f * b) + stalls, rel=1e-9
    )
    assert time_s(ring, "allreduce") == pytest.approx(
        2 * startup + 11 * hop + 4 * r + 2 * edge / (f * b) + stalls, rel=1e-9
    )
    assert time_s((0, 1, 2, 3), "allgather") == pytest.approx(
        startup + 3 * hop + 3 / 4 * S_BYTES / b, rel=1e-9
    )


def test_an_all_to_all_over_two_chips_sends_at_the_injection_share():
    """tt-metal's all-to-all over two chips of the LoudBox (validate's microbenchmark): each
    chip sends its other half, S/2, straight to the other at i B, one route latency after the
    startup."""
    from palmsim.tile_cases import _simulate_collective

    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    w = hw.wafer
    rate = w.injection_efficiency * w.inter_die.bandwidth_bytes_per_s
    expected = w.collective_latency_s + w.inter_die.latency_s + S_BYTES / 2 / rate
    assert _simulate_collective(hw, "alltoall", 2, S_BYTES) == pytest.approx(expected, rel=1e-9)


def test_an_all_to_all_over_a_ring_of_chips_travels_the_ring():
    """tt-metal's all-to-all over the LoudBox's 8 chips closed into a ring (its 1-D ring
    fabric, the T3000's 2x4 mesh's Hamiltonian cycle): each chip sends S/8 to the 4 chips
    after it going forward and to the 3 before it going backward, along the ring, not the
    mesh's shortest routes. Every forward link then carries 1 + 2 + 3 + 4 = 10 chunks (the
    chips up to 4 behind it), all at f B / 10 (the ring fabric's share f of the link's
    rate, system.ring_fabric_efficiency), and ends last: startup + 10 S / (8 f B) + the
    4-hop route's latency (each chunk pays its route once); the backward links carry 6. The
    chips' own pieces (i f B each) are not what binds."""
    from palmsim.tile_cases import _simulate_collective

    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    w = hw.wafer
    b, hop = w.inter_die.bandwidth_bytes_per_s, w.inter_die.latency_s
    f = w.ring_fabric_efficiency
    assert f < 1 and w.injection_efficiency > 1 / 10
    expected = w.collective_latency_s + 4 * hop + 10 * S_BYTES / (8 * f * b)
    got = _simulate_collective(hw, "alltoall", 8, S_BYTES, fabric="ring")
    assert got == pytest.approx(expected, rel=1e-9)


def test_an_all_to_all_over_a_line_of_chips_travels_the_line():
    """tt-metal's all-to-all over the LoudBox's 8 chips as a line (its 1-D line fabric; the
    T3000's 2x4 mesh walked in snake order): each chip sends S/8 to every other along the
    line, never across the mesh's shortcuts. The middle link then carries the chunks of the 4
    chips on one side bound for the 4 on the other, 16 chunks of S/8 = 2S a direction
    (CCL_bandwidth.md: floor(n/2) ceil(n/2) / n of the n S bytes), all at B/16, and ends
    last: startup + 2S/B + the 7-hop route's latency of the chunk from end to end."""
    from palmsim.tile_cases import _simulate_collective

    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    w = hw.wafer
    b, hop = w.inter_die.bandwidth_bytes_per_s, w.inter_die.latency_s
    assert w.injection_efficiency * b > b / 16
    expected = w.collective_latency_s + 7 * hop + 2 * S_BYTES / b
    got = _simulate_collective(hw, "alltoall", 8, S_BYTES, fabric="line")
    assert got == pytest.approx(expected, rel=1e-9)
    # the mesh's shortest routes would take links the line does not: faster, and wrong
    assert _simulate_collective(hw, "alltoall", 8, S_BYTES, fabric="mesh") < 0.75 * expected


def test_allreduce_over_a_ring_of_chips_is_the_textbook_ring():
    """A row of 8 Galaxy chips, closed into a ring by the torus: 4 links per neighbour, every
    ring edge one hop. Two rings in opposite directions (system.bidirectional_rings) each carry
    half the buffer, and a reduce-scatter's partial sums pass ceil((n-1)/2) chips one way
    (tt-metal's ccl_common.cpp), so its half of the all-reduce is a chain of 4 steps and the
    all-gather's n-1: 2(n-1)/n * (S/2) / (4 B) + (4 + 7) alpha; one ring: twice the bandwidth
    term and 2(n-1) steps."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    assert hw.wafer.bidirectional_rings
    n = 8
    link = hw.wafer.inter_die
    bandwidth = 4 * link.bandwidth_bytes_per_s
    expected = 2 * (n - 1) / n * (S_BYTES / 2) / bandwidth + (4 + 7) * link.latency_s
    ring = tuple(range(n))
    assert _one_collective(Chip.from_spec(hw), ring, "allreduce") == pytest.approx(
        expected, rel=1e-6
    )
    one_way = dataclasses.replace(
        hw, wafer=dataclasses.replace(hw.wafer, bidirectional_rings=False)
    )
    expected = 2 * (n - 1) / n * S_BYTES / bandwidth + 2 * (n - 1) * link.latency_s
    assert _one_collective(Chip.from_spec(one_way), ring, "allreduce") == pytest.approx(
        expected, rel=1e-6
    )


# --------------------------------------------------------------------------- granularity


def test_coarsen_aggregates_a_region_of_cores():
    """A 2x2 region: 4x the compute, SRAM and SRAM bandwidth; unit links of 2 core links
    and 2 hops; the per-tile DRAM channels of the region merge."""
    fine = wafer_spec(dies=(1, 1), tiles=(4, 4), dram_placement="per_tile")
    coarse = coarsen(fine, (2, 2))
    assert coarse.num_tiles == 4
    assert coarse.tile.peak_for("fp16") == 4 * fine.tile.peak_for("fp16")
    assert coarse.tile.sram_capacity_bytes == 4 * fine.tile.sram_capacity_bytes
    assert coarse.dram.bandwidth_bytes_per_s == 4 * fine.dram.bandwidth_bytes_per_s
    chip = Chip.from_spec(coarse)
    link = chip.channels[chip.route(0, 1).channels[0]]
    assert link.bandwidth_bytes_per_s == 2 * fine.wafer.intra_die.bandwidth_bytes_per_s
    assert link.latency_s == 2 * fine.wafer.intra_die.latency_s


def test_coarse_equals_fine_on_a_small_grid():
    """The same prefill on a 4x4-core chip simulated core by core (TP 16) and as 2x2 regions
    (TP 4). Compute, SRAM and DRAM aggregate exactly, so the runs differ only in their TP
    all-reduces: 16 single-link ring members against 4 members on 2-link unit edges.
    Stated bound: 5% when communication is a small part of the step, as here."""
    fine = dataclasses.replace(
        wafer_spec(dies=(1, 1), tiles=(4, 4), sram_bytes=512 * 2**20, dram_placement="per_tile"),
        tile=dataclasses.replace(
            wafer_spec().tile, sram_capacity_bytes=512 * 2**20, peak_flop_per_s=(("bf16", 1e12),)
        ),
    )
    coarse = coarsen(fine, (2, 2))
    t_fine = _inference(fine, tp=16, prompt=32, output=1, weight_dtype="bf16")["ttft_s"]
    t_coarse = _inference(coarse, tp=4, prompt=32, output=1, weight_dtype="bf16")["ttft_s"]
    assert t_coarse == pytest.approx(t_fine, rel=0.05)


# --------------------------------------------------------------------------- calibration


def test_calibrate_tiles_fits_the_n150_microbenchmarks_by_hand():
    """bf16 HiFi4 on 8x8 cores: peak 64 x 1.024 TFLOP/s. Two bf16 GEMMs of different sizes
    give the op latency a and the efficiency e_4 of t = a + 2MKN / (peak * e_4): the line
    through both points (t_peak_i = 2MKN / peak, t_i measured), slope 1/e_4 and intercept
    a. The config keeps the efficiency at one pass, e: a tile product's four passes of math
    plus its unpack and pack, (1 - e) / e of one pass, so 1/e_4 = 1 + (1 - e) / (4 e) and
    e = 1 / (1 + 4 (slope - 1)). The DRAM channel rate is the measured 267 GB/s over 6
    channels."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, unused = calibrate_tiles(cases, "hw_configs/wormhole-n150.yaml")
    by_key = {f.key: f for f in fits}
    peak = 64 * 1.024e12
    tp1, t1 = 2 * 16384**3 / peak, 161968553.07e-9
    tp2, t2 = 2 * 2048**3 / peak, 332493.78e-9
    slope = (t1 - t2) / (tp1 - tp2)
    one_pass = 1 / (1 + 4 * (slope - 1))
    assert by_key["tile.format_efficiency.bf16"].value == pytest.approx(one_pass, rel=1e-9)
    assert by_key["tile.op_latency"].value == pytest.approx(t1 - slope * tp1, rel=1e-6)
    assert by_key["tile.op_latency"].value == pytest.approx(16.18e-6, rel=1e-3)  # the config's
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    assert hw.tile.efficiency_for("bf16", "HiFi4") == pytest.approx(1 / slope, rel=1e-3)
    assert by_key["dram.bandwidth"].value == pytest.approx(267e9 / 6)
    # the host's read of a device tensor: the one case, 1.68 GB/s, as every Wormhole config has
    assert by_key["tile.host_read_bandwidth"].value == pytest.approx(1.68e9)
    assert hw.tile.host_read_bandwidth_bytes_per_s == pytest.approx(1.68e9)
    # end-to-end rows are never fitted
    assert {c for c, _ in unused} == {
        "tt_readme_llama31_8b_n150",
        "tt_readme_llama32_1b_n150",
        "tt_readme_llama32_3b_n150",
        "tt_readme_mistral_7b_n150",
        "tt_readme_falcon7b_n150",
        "tt_readme_mamba_2p8b_n150",
        "tt_perf_llama32_1b_n150_b32_isl128",
        "tt_perf_llama32_3b_n150_b32_isl128",
        "tt_perf_llama31_8b_n150_b32_isl128",
        "tt_perf_phi3_mini_128k_n150_b32_isl128",
        "tt_perf_llama32_1b_n150_b1_isl512",
        "tt_perf_llama32_3b_n150_b1_isl512",
        "tt_perf_llama31_8b_n150_b1_isl512",
        "tt_perf_mistral_7b_n150_b1_isl512",
        "tt_perf_phi3_mini_128k_n150_b1_isl512",
        "tt_perf_phi35_mini_n150_b1_isl512",
        "tt_perf_llama32_1b_n150_b1_isl64k",
        "tt_perf_llama32_3b_n150_b1_isl64k",
        "tt_perf_llama31_8b_n150_b1_isl64k",
        "tt_perf_acc_llama32_1b_n150_b1_isl512",
        "tt_perf_acc_llama32_3b_n150_b1_isl512",
        "tt_perf_acc_llama31_8b_n150_b1_isl512",
        "tt_perf_acc_phi35_mini_n150_b1_isl512",
        "tt_perf_acc_phi3_mini_128k_n150_b1_isl512",
    }


def test_calibrate_tiles_fits_the_p150_op_latency_by_hand():
    """As on the n150: bf16 HiFi4 on 13x10 cores, peak 130 x 5.5296 / 4 TFLOP/s; an untraced
    2560x4992x4992 and a traced 640x832x832 GEMM give the line t = a + t_peak / e_4, and the
    efficiency at one pass e = 1 / (1 + 4 (slope - 1))."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(cases, "hw_configs/blackhole-p150.yaml")
    by_key = {f.key: f for f in fits}
    peak = 130 * 5.5296e12 / 4
    tp1, t1 = 2 * 2560 * 4992 * 4992 / peak, 758373.74e-9
    tp2, t2 = 2 * 640 * 832 * 832 / peak, 13475.42e-9
    slope = (t1 - t2) / (tp1 - tp2)
    one_pass = 1 / (1 + 4 * (slope - 1))
    assert by_key["tile.format_efficiency.bf16"].value == pytest.approx(one_pass, rel=1e-6)
    assert by_key["tile.op_latency"].value == pytest.approx(t1 - slope * tp1, rel=1e-6)
    hw = load_hardware("hw_configs/blackhole-p150.yaml")
    assert hw.tile.op_latency_s == pytest.approx(t1 - slope * tp1, rel=1e-3)  # the config's


def _sdpa_case(i: int, q_len: int, cached_len: int, time_ms: float) -> dict:
    """A causal SDPA of 32 heads of 128 on the p150's 8x8 cores at HiFi4."""
    return {
        "id": f"sdpa{i}",
        "hardware": {"hw_spec_ref": "tenstorrent_blackhole.systems.p150"},
        "model": {"name": "ttnn.transformer.scaled_dot_product_attention", "heads": 32,
                  "head_dim": 128},
        "scenario": {"phase": "attention microbenchmark", "causal": True, "q_len": q_len,
                     "cached_len": cached_len, "dtype": "BFP8", "math_fidelity": "HiFi4",
                     "core_grid": "8x8"},
        "measured": {"time_ms": time_ms},
    }  # fmt: skip


def test_calibrate_tiles_fits_the_attention_efficiency_by_hand():
    """A causal attention of q new tokens over c cached ones has q c + q^2/2 (query, key)
    pairs, 4 x 32 heads x 128 FLOP each (QK^T and scores x V; tt-metal's FlashAttention
    report counts a causal s as 2 s^2 h d). Timed as t = a + F / (P e) on the p150's 8x8
    cores at HiFi4 (P = 64 x 5.5296 / 4 TFLOP/s, a its op latency), hand-computed with
    e = 0.25, the fit gives e back; the shipped p150 SDPA times give the config's 0.2097,
    with which a case is predicted."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles, predict

    hw = load_hardware("hw_configs/blackhole-p150.yaml")
    peak = 64 * 5.5296e12 / 4
    e = 0.25

    def time_ms(q: int, c: int) -> float:
        flop = 4 * 32 * 128 * (q * c + q * q / 2)
        return (hw.tile.op_latency_s + flop / (peak * e)) * 1e3

    cases = [
        _sdpa_case(0, 4096, 0, time_ms(4096, 0)),
        _sdpa_case(1, 2048, 6144, time_ms(2048, 6144)),
    ]
    fits, _ = calibrate_tiles(cases, "hw_configs/blackhole-p150.yaml")
    by_key = {f.key: f for f in fits}
    assert by_key["tile.attention_efficiency"].value == pytest.approx(e, rel=1e-9)
    assert max(abs(x) for x in by_key["tile.attention_efficiency"].errors) < 1e-9

    shipped = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(shipped, "hw_configs/blackhole-p150.yaml")
    fit = {f.key: f for f in fits}["tile.attention_efficiency"]
    assert len(fit.cases) == 3
    assert hw.tile.attention_efficiency == pytest.approx(fit.value, abs=5e-5)
    # predicted with the config's efficiency
    ((metric, _, predicted),) = predict(cases[0])
    flop = 4 * 32 * 128 * 4096**2 / 2
    expected_ms = (hw.tile.op_latency_s + flop / (peak * hw.tile.attention_efficiency)) * 1e3
    assert (metric, predicted) == ("time_ms", pytest.approx(expected_ms, rel=1e-12))


def test_calibrate_tiles_fits_small_chunk_attention_as_the_decodes():
    """An SDPA run in chunks under 128 query rows (tt-metal's per-step costs weigh on a
    small step's math) is fitted apart, into tile.decode_attention_efficiency, the regime
    nearest a decode's one tile of query rows; the rest into tile.attention_efficiency.
    Hand-timed on a p100a's 11x10 cores at HiFi4 (P = 110 x 5.5296 / 4 TFLOP/s) as
    t = a + F s / (P e), q_chunk 64 at e = 0.2 and 256 at e = 0.5, s its busiest core's share
    (32 heads' causal chunk pairs dealt out flat, the kernel of an undated case: 16 chunks a
    head, 256 pairs on 110 cores, 3 on the busiest, s = 3 x 110 / 256; 32 chunks, 512 pairs,
    5: s = 5 x 110 / 512), the fit gives both back and each case is predicted at its own. The
    shipped p100a device durations give the config's two values, which every Tensix config
    but the p150 (fitted to its own rows) carries."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles, predict

    hw = load_hardware("hw_configs/blackhole-p100a.yaml")
    peak = 110 * 5.5296e12 / 4
    rates = {64: 0.2, 256: 0.5}
    busiest = {16: 3 * 110 / 256, 32: 5 * 110 / 512}  # by chunks a head

    def case(i: int, q_len: int, chunk: int) -> dict:
        flop = 4 * 32 * 128 * q_len**2 / 2 * busiest[q_len // chunk]
        time_ms = (hw.tile.op_latency_s + flop / (peak * rates[chunk])) * 1e3
        c = _sdpa_case(i, q_len, 0, time_ms)
        c["hardware"] = {"hw_spec_ref": "tenstorrent_blackhole.systems.p100a"}
        c["scenario"] |= {"core_grid": "11x10", "q_chunk": chunk, "k_chunk": chunk}
        return c

    cases = [case(0, 1024, 64), case(1, 2048, 64), case(2, 4096, 256), case(3, 8192, 256)]
    fits, _ = calibrate_tiles(cases, "hw_configs/blackhole-p100a.yaml")
    by_key = {f.key: f for f in fits}
    assert by_key["tile.decode_attention_efficiency"].value == pytest.approx(0.2, rel=1e-9)
    assert by_key["tile.decode_attention_efficiency"].cases == ("sdpa0", "sdpa1")
    assert by_key["tile.attention_efficiency"].value == pytest.approx(0.5, rel=1e-9)
    assert by_key["tile.attention_efficiency"].cases == ("sdpa2", "sdpa3")

    shipped = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(shipped, "hw_configs/blackhole-p100a.yaml")
    by_key = {f.key: f for f in fits}
    assert len(by_key["tile.attention_efficiency"].cases) == 8
    assert len(by_key["tile.decode_attention_efficiency"].cases) == 2
    for path in sorted(Path("hw_configs").glob("*.yaml")):
        other = load_hardware(str(path))
        if other.tile.attention_efficiency == 0 or path.name == "blackhole-p150.yaml":
            continue
        assert other.tile.attention_efficiency == pytest.approx(
            by_key["tile.attention_efficiency"].value, abs=5e-5
        ), path.name
        assert other.tile.decode_attention_efficiency == pytest.approx(
            by_key["tile.decode_attention_efficiency"].value, abs=5e-5
        ), path.name
    # predicted each at its own efficiency, the config's
    a = hw.tile.op_latency_s
    for c, e in ((case(0, 1024, 64), hw.tile.decode_attention_efficiency),
                 (case(3, 8192, 256), hw.tile.attention_efficiency)):  # fmt: skip
        ((_, _, predicted),) = predict(c)
        q_len = c["scenario"]["q_len"]
        flop = 4 * 32 * 128 * q_len**2 / 2 * busiest[q_len // c["scenario"]["q_chunk"]]
        assert predicted == pytest.approx((a + flop / (peak * e)) * 1e3, rel=1e-12)


def test_calibrate_tiles_separates_a_collectives_startup_step_and_bandwidth():
    """Collectives timed as t = a * calls + steps * l + d / B + r * (1/e - 1) / B at three
    sizes and three chip counts (all-gathers over lines of 2 and 4, a reduce-scatter over a
    line of 4 and an all-reduce over a ring of 8, two calls on the T3000, hand-computed from
    a = 5 us, l = 2 us, B = 10 GB/s, e = 0.8: steps 1, 3, 3 and 11 (the ring's reduce-scatter
    half a chain of ceil(7/2) = 4, its all-gather half 7), bytes per link direction
    d = 2(n-1)/n * S or (n-1)/n * S, halved on the ring, of which r reduce-scattered: none,
    none, all, half;
    the line of 4's end link carries 3 chips' pieces) give back
    a, l, B and e, and no injection efficiency (none lowers the error); timed with the
    all-gather's bytes at i = 0.6 of B (one chip's own piece over the 2-chip line, where the
    ring's flows carry 7 chips' pieces, 7 i > 1), they give back i too; with the ring's bytes
    drained at f = 0.85 of B (its fabric's deadlock avoidance; the reduce-scatter's stalls
    still at B), f too, where at f = 1 none is fitted; with each reduce-scatter step 0.9 us
    longer (reduce_scatter_step_latency), that too; with the large sizes of the all-gather
    and the all-reduce alone (no latency in sight) only B is fitted, at the config's
    latencies."""
    from palmsim.tile_cases import calibrate_tiles

    a, step, bw, e = 5e-6, 2e-6, 10e9, 0.8
    # the parameters a fit may leave out, at the values that give nothing to fit
    later = {
        "system.injection_efficiency": 1.0,
        "system.ring_fabric_efficiency": 1.0,
        "system.reduce_scatter_step_latency": 0.0,
    }

    def case(i: int, kind: str, n: int, topology: str, size: int) -> dict:
        injection = later["system.injection_efficiency"]
        ring_f = later["system.ring_fabric_efficiency"]
        steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
        per_direction = steps / n * size / (2 if topology == "ring" else 1)
        calls = 2 if kind == "all_reduce" else 1
        reduced = {"all_reduce": 0.5, "reduce_scatter": 1.0}.get(kind, 0.0) * per_direction
        gathered = per_direction - reduced
        own = gathered / injection if n == 2 else gathered
        rate = bw * (ring_f if topology == "ring" else 1.0)
        # a ring's reduce-scatter chain: ceil((n-1)/2) steps (tt-metal's ccl_common.cpp)
        chain = math.ceil((n - 1) / 2) if topology == "ring" else n - 1
        hops = {"all_reduce": chain + n - 1, "reduce_scatter": chain}.get(kind, steps)
        time_s = a * calls + hops * step + (reduced + own) / rate + reduced * (1 / e - 1) / bw
        time_s += chain * later["system.reduce_scatter_step_latency"] if reduced else 0.0
        return {
            "id": f"c{i}",
            "hardware": {
                "hw_spec_ref": "tenstorrent_wormhole_b0.systems.quietbox_t3000",
                "system": {"chips": n, "topology": topology},
            },
            "model": {"name": f"ttnn.{kind}"},
            "scenario": {"phase": "collective microbenchmark", "size_bytes": size},
            "measured": {"time_us": time_s * 1e6},
        }

    shapes = [
        ("all_gather", 2, "line"),
        ("all_gather", 4, "line"),
        ("reduce_scatter", 4, "line"),
        ("all_reduce", 8, "ring"),
    ]
    specs = [
        {"kind": kind, "n": n, "topology": topo, "size": size}
        for kind, n, topo in shapes
        for size in (4096, 2**20, 2**30)
    ]
    hw_path = "hw_configs/wormhole-t3000.yaml"
    cases = [case(i, **c) for i, c in enumerate(specs)]
    expected = {
        "system.collective_latency": a,
        "system.link.latency": step,
        "system.link.bandwidth": bw,
        "system.reduce_scatter_efficiency": e,
    }
    # each further parameter set in turn: the fit gives back every one set so far and leaves
    # out the ones named (with the ring's bytes at B the step latency comes out at 0, fitted)
    ring, injection, rs_step = (
        "system.ring_fabric_efficiency",
        "system.injection_efficiency",
        "system.reduce_scatter_step_latency",
    )
    for key, value, unfitted in (
        (None, None, (injection, ring, rs_step)),
        (injection, 0.6, (ring,)),
        (ring, 0.85, (rs_step,)),
        (rs_step, 0.9e-6, ()),
    ):
        if key is not None:
            later[key] = expected[key] = value
        fits, _ = calibrate_tiles([case(i, **c) for i, c in enumerate(specs)], hw_path)
        by_key = {f.key: f.value for f in fits}
        for k, v in expected.items():
            assert by_key[k] == pytest.approx(v, rel=1e-6), k
        assert not set(unfitted) & set(by_key), key
    large = [
        c
        for c in cases
        if c["scenario"]["size_bytes"] == 2**30
        and "reduce_scatter" not in c["model"]["name"]
        and c["hardware"]["system"]["chips"] != 4
    ]
    fits, _ = calibrate_tiles(large, hw_path)
    assert {f.key for f in fits} == {"system.link.bandwidth"}


def _collective_case(name: str, chips: int, topology: str, size: int) -> dict:
    return {
        "id": "c",
        "hardware": {
            "hw_spec_ref": "tenstorrent_wormhole_b0.systems.quietbox_t3000",
            "system": {"chips": chips, "topology": topology},
        },
        "model": {"name": name},
        "scenario": {"phase": "collective microbenchmark", "size_bytes": size},
        "measured": {"time_us": 1.0},
    }


@pytest.mark.parametrize("direct", [True, False])
def test_an_all_to_all_microbenchmark_runs_as_an_all_to_all(direct, monkeypatch):
    """tt-metal's all_to_all_async_generic over a line of 4 T3000 chips: each chip sends S/4
    to each other; the middle link carries the 4 chunks from one half to the other, S, each
    way (the busiest, floor(n/2) ceil(n/2) / n * S: tech_reports/CCLs/CCL_bandwidth.md), so
    the crossing chunks share it at B/4 and drain at S/B; the last, 0 -> 3, arrives its 3
    hops later: startup + S/B + 3 alpha. Sent directly (system.direct_all_to_all, the
    config's) each chunk pays its route once; as n - 1 rounds of pairwise exchange, once a
    round: startup + S/B + 3 * 3 alpha."""
    from palmsim.tile_cases import predict

    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    assert hw.wafer.direct_all_to_all
    link, startup = hw.wafer.inter_die, hw.wafer.collective_latency_s
    size = 2**26
    hops = 3 if direct else 3 * 3
    expected = startup + size / link.bandwidth_bytes_per_s + hops * link.latency_s
    case = _collective_case("ttnn.experimental.all_to_all_async_generic", 4, "line", size)
    if not direct:
        rounds = dataclasses.replace(
            hw, wafer=dataclasses.replace(hw.wafer, direct_all_to_all=False)
        )
        monkeypatch.setattr("palmsim.tile_cases.load_hardware", lambda _path, _overrides=(): rounds)
    [(_, _, predicted_us)] = predict(case)
    assert predicted_us * 1e-6 == pytest.approx(expected, rel=1e-6)


def test_a_collective_palmsim_does_not_know_is_named_not_run_as_an_all_reduce():
    """A microbenchmark names its collective in model.name; one palmsim does not simulate (a
    broadcast) is listed as not expressible, where it was once timed as an all-reduce."""
    from palmsim.tile_cases import CannotExpressError, predict

    with pytest.raises(CannotExpressError, match="names no collective"):
        predict(_collective_case("ttnn.broadcast", 4, "line", 2**20))


def test_calibrate_tiles_fits_one_links_rate_where_a_collective_ran_on_two():
    """A collective that ran on 2 links a direction between neighbours
    (``scenario.links_per_direction``) puts half its bytes a direction on each: timed as t =
    a * calls + steps * l + d / (2 B) (an all-reduce two calls and 4 + 7 steps over its ring;
    hand-computed from a = 4 us, l = 1.5 us, B = 20 GB/s; its 4 reduce-scatter steps at the
    config's reduce_scatter_step_latency r, which two shapes cannot tell apart from the
    startup and step, and at the config's other shares: the ring's bytes at
    ring_fabric_efficiency f of B, its reduce-scatter half's stalls at
    reduce_scatter_efficiency e, the 2-chip all-gather's one piece at injection_efficiency
    i), the fit gives back B, one link's rate, which the config's link carries."""
    from palmsim.tile_cases import calibrate_tiles

    a, step, bw = 4e-6, 1.5e-6, 20e9
    w = load_hardware("hw_configs/blackhole-galaxy.yaml").wafer
    r, f = w.reduce_scatter_step_latency_s, w.ring_fabric_efficiency
    e, inj = w.reduce_scatter_efficiency, w.injection_efficiency
    cases = []
    for i, (kind, n, topology, size) in enumerate(
        (k, n, t, s)
        for k, n, t in (("all_gather", 2, "line"), ("all_reduce", 8, "ring"))
        for s in (8192, 2**20, 2**30)
    ):
        steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
        per_link = steps / n * size / (2 if topology == "ring" else 1) / 2
        # the ring all-reduce's reduce-scatter chain of ceil(7/2) = 4, its all-gather 7
        chain = math.ceil((n - 1) / 2)
        hops = chain + n - 1 if kind == "all_reduce" else steps
        cases.append(
            {
                "id": f"c{i}",
                "hardware": {
                    "hw_spec_ref": "tenstorrent_blackhole.systems.galaxy_bh",
                    "system": {"chips": n, "topology": topology},
                },
                "model": {"name": f"ttnn.{kind}"},
                "scenario": {
                    "phase": "collective microbenchmark",
                    "size_bytes": size,
                    "links_per_direction": "2 (the table's linkbw = busbw / 2)",
                },
                # an all-reduce: two calls (the config's composite_all_reduce)
                "measured": {
                    "time_us": (
                        a * (1 + (kind == "all_reduce"))
                        + hops * step
                        + (kind == "all_reduce") * (chain * r + per_link / 2 / bw * (1 / e - 1))
                        + per_link / (bw * (f if topology == "ring" else inj))
                    )
                    * 1e6
                },
            }
        )
    fits, _ = calibrate_tiles(cases, "hw_configs/blackhole-galaxy.yaml")
    by_key = {f.key: f.value for f in fits}
    assert by_key["system.collective_latency"] == pytest.approx(a, rel=1e-6)
    assert by_key["system.link.latency"] == pytest.approx(step, rel=1e-6)
    assert by_key["system.link.bandwidth"] == pytest.approx(bw, rel=1e-6)


@pytest.mark.parametrize(
    ("fitted", "carriers"),
    [
        # the Blackhole Galaxy's 72 (2 links a direction, its ring closing the 8-chip axis);
        # the QuietBox and p300, with no collective measured, take them
        ("blackhole-galaxy", ("blackhole-galaxy", "blackhole-quietbox", "blackhole-p300")),
        # the LoudBox's 72
        ("wormhole-t3000", ("wormhole-t3000", "wormhole-n300")),
    ],
)
def test_the_measured_collectives_are_the_configs(fitted, carriers):
    """Each config carries the startup, step latency, link rate and efficiencies palmsim
    calibrate --tiles fits to its system's 72 collective measurements (the ring fabric's the
    fitted system's alone: two chips close no ring)."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(cases, f"hw_configs/{fitted}.yaml")
    by_key = {f.key: f for f in fits}
    assert len(by_key["system.link.bandwidth"].cases) == 72
    for name in carriers:
        w = load_hardware(f"hw_configs/{name}.yaml").wafer
        assert w.collective_latency_s == pytest.approx(
            by_key["system.collective_latency"].value, rel=1e-3
        )
        assert w.inter_die.latency_s == pytest.approx(by_key["system.link.latency"].value, rel=1e-3)
        assert w.inter_die.bandwidth_bytes_per_s == pytest.approx(
            by_key["system.link.bandwidth"].value, rel=1e-3
        )
        for key in ("reduce_scatter_efficiency", "injection_efficiency"):
            assert getattr(w, key) == pytest.approx(by_key[f"system.{key}"].value, rel=1e-3)
    ring = by_key.get("system.ring_fabric_efficiency")
    w = load_hardware(f"hw_configs/{fitted}.yaml").wafer
    assert w.ring_fabric_efficiency == pytest.approx(ring.value if ring else 1.0, rel=1e-3)


def test_the_arbitrary_place_dram_read_fits_the_interleaved_share():
    """tech_reports/Saturating_DRAM_bandwidth_Blackhole.md: eight p150 cores read 500 GB/s
    from the banks beside them and 344 GB/s at arbitrary places. palmsim calibrate --tiles
    fits dram.bandwidth to the first and dram.interleaved_read_efficiency to the second over
    it, 344 / 500, which every Blackhole config carries (the Wormhole ones take it, marked)."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles, predict

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(cases, "hw_configs/blackhole-p150.yaml")
    by_key = {f.key: f for f in fits}
    fit = by_key["dram.interleaved_read_efficiency"]
    assert fit.value == pytest.approx(344 / 500, rel=1e-9)
    assert fit.cases == ("tt_dram_read_bh_p150",)
    for name in ("blackhole-p150", "blackhole-p100a", "blackhole-p300", "wormhole-n150"):
        dram = load_hardware(f"hw_configs/{name}.yaml").dram
        assert dram.interleaved_read_efficiency == pytest.approx(344 / 500, abs=5e-4)
    ((_, measured, predicted),) = [
        f
        for f in predict(next(c for c in cases if c["id"] == "tt_dram_read_bh_p150"))
        if f[0] == "GBps_16KB_packets_arbitrary_cores"
    ]
    assert (measured, predicted) == (344, pytest.approx(500 * 0.688))


def test_calibrate_tiles_fits_the_n150_host_dispatch_by_hand():
    """The GEMM report's smallest out-of-box n150 GEMMs take 49.05, 48.46 and 50.13 us a
    call untraced and 19.97, 14.21 and 12.26 us traced: every traced time is below the
    untraced ones, so each untraced call is the host's, untraced = max(h, traced) = h, and
    the h minimising sum(h / u_i - 1)^2 is sum(1/u_i) / sum(1/u_i^2). Every Wormhole config
    carries it."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(cases, "hw_configs/wormhole-n150.yaml")
    fit = {f.key: f for f in fits}["tile.host_dispatch"]
    untraced = (49049.85e-9, 48458.58e-9, 50134.66e-9)
    h = sum(1 / u for u in untraced) / sum(1 / u**2 for u in untraced)
    assert fit.value == pytest.approx(h, rel=1e-9)
    assert len(fit.cases) == 3
    for config in ("n150", "n300", "t3000", "galaxy"):
        hw = load_hardware(f"hw_configs/wormhole-{config}.yaml")
        assert hw.tile.host_dispatch_s == pytest.approx(h, rel=1e-3)


def test_calibrate_tiles_fits_the_tuned_host_dispatch_by_hand():
    """The GEMM report's smallest manually tuned GEMM of each format: on the n150 189.34,
    93.04, 144.10, 119.03 and 135.77 us a call untraced and 10.0-12.8 us traced, each
    untraced call the host's, so h = sum(1/u_i) / sum(1/u_i^2) (tile.host_dispatch_tuned,
    which the n150 config carries); on the p150 its ten pairs of both grids alike. These
    pairs enter no efficiency fit (their untraced times are the host's)."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(cases, "hw_configs/wormhole-n150.yaml")
    by_key = {f.key: f for f in fits}
    fit = by_key["tile.host_dispatch_tuned"]
    untraced = (189344.88e-9, 93035.7e-9, 144104.96e-9, 119028.09e-9, 135769.84e-9)
    h = sum(1 / u for u in untraced) / sum(1 / u**2 for u in untraced)
    assert fit.value == pytest.approx(h, rel=1e-9)
    assert len(fit.cases) == 5
    assert not any(c in f.cases for f in fits if "efficiency" in f.key for c in fit.cases)
    assert load_hardware("hw_configs/wormhole-n150.yaml").tile.host_dispatch_tuned_s == (
        pytest.approx(h, rel=1e-3)
    )
    fits, _ = calibrate_tiles(cases, "hw_configs/blackhole-p150.yaml")
    fit = {f.key: f for f in fits}["tile.host_dispatch_tuned"]
    assert len(fit.cases) == 10
    p150 = load_hardware("hw_configs/blackhole-p150.yaml")
    assert p150.tile.host_dispatch_tuned_s == pytest.approx(fit.value, rel=1e-3)


def test_calibrate_tiles_fits_the_auto_config_efficiency_by_hand():
    """The GEMM report's two largest traced out-of-box bf16 HiFi2 GEMMs on the n150,
    3072x4096x4096 in 1458.79 us and 4096^3 in 2008.53 us, each take the op latency a, their
    math at the HiFi2 peak t_p, their output's write to DRAM w = M N 2 B / 267 GB/s, and q
    times their math at one pass t_1: q minimises sum((k_i + t_1,i q) / m_i - 1)^2 with
    k = a + t_p + w, q = sum(t_1/m (1 - k/m)) / sum((t_1/m)^2), and the efficiency is
    1 / (1 + q) (tile.auto_format_efficiency.bf16, which the n150 config carries). The
    untraced out-of-box pairs fit the host dispatch alone; the traced ones no other value."""
    from palmsim.config.loader import read_config_file
    from palmsim.tile_cases import calibrate_tiles

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    fits, _ = calibrate_tiles(cases, "hw_configs/wormhole-n150.yaml")
    by_key = {f.key: f for f in fits}
    fit = by_key["tile.auto_format_efficiency.bf16"]
    a = by_key["tile.op_latency"].value
    rows = ((3072, 4096, 4096, 1458785.53e-9), (4096, 4096, 4096, 2008533.48e-9))
    k, t1, m = [], [], []
    for mm, kk, nn, measured in rows:
        flop = 2 * mm * kk * nn
        k.append(a + flop / (64 * 2.048e12) + mm * nn * 2 / 267e9)
        t1.append(flop / (64 * 4.096e12))
        m.append(measured)
    x = [t / mi for t, mi in zip(t1, m, strict=True)]
    q = sum(xi * (1 - ki / mi) for xi, ki, mi in zip(x, k, m, strict=True)) / sum(
        xi * xi for xi in x
    )
    assert fit.value == pytest.approx(1 / (1 + q), rel=1e-9)
    assert fit.cases == (
        "tt_gemm_n150_oob_bf16_hifi2_3072x4096x4096_trace",
        "tt_gemm_n150_oob_bf16_hifi2_4096x4096x4096_trace",
    )
    assert not any(c in by_key["tile.host_dispatch"].cases for c in fit.cases)
    assert not any(c.endswith("_8x8") for c in fit.cases)  # the untraced pairs
    tile = load_hardware("hw_configs/wormhole-n150.yaml").tile
    assert dict(tile.auto_format_efficiency)["bf16"] == pytest.approx(fit.value, rel=1e-3)
    p150 = load_hardware("hw_configs/blackhole-p150.yaml").tile
    fits, _ = calibrate_tiles(cases, "hw_configs/blackhole-p150.yaml")
    for f in fits:
        if f.key.startswith("tile.auto_format_efficiency."):
            dtype = f.key.rsplit(".", 1)[1]
            assert dict(p150.auto_format_efficiency)[dtype] == pytest.approx(f.value, rel=1e-3)
            assert len(f.cases) == 4  # two sizes on each of the report's two grids


def test_host_dispatch_fit_leaves_out_ops_the_device_is_slower_on():
    """With untraced = max(h, traced), a pair whose traced time exceeds h pins nothing:
    pairs (u, t) = (10, 2), (12, 3) and (20, 19) us. The first two give sum(1/u)/sum(1/u^2)
    = 10.8 us; the third stays at max(h, 19)/20 - 1 = -5% whatever h below 19 us, so the fit
    is 10.8 us, not pulled up towards 20."""
    from palmsim.tile_cases import _fit_host_dispatch

    untraced, traced = [10e-6, 12e-6, 20e-6], [2e-6, 3e-6, 19e-6]
    expected = (1 / 10 + 1 / 12) / (1 / 100 + 1 / 144) * 1e-6
    assert _fit_host_dispatch(untraced, traced) == pytest.approx(expected, rel=1e-9)
    # every pair host-bound: the closed form over all three
    everything = (1 / 10 + 1 / 12 + 1 / 20) / (1 / 100 + 1 / 144 + 1 / 400) * 1e-6
    assert _fit_host_dispatch(untraced, [2e-6, 3e-6, 4e-6]) == pytest.approx(everything)


@pytest.mark.parametrize(
    ("config", "chips", "cores", "banks"),
    [
        ("blackhole-p100a", 1, 110, 7),  # p100: 120 Tensix, one column for dispatch; 28 GiB
        ("blackhole-p300", 2, 130, 8),
        ("blackhole-quietbox", 4, 130, 8),
        ("blackhole-galaxy", 32, 130, 8),
    ],
)
def test_blackhole_systems_are_grids_of_p150_chips(config, chips, cores, banks):
    """Each Blackhole system is its chips' grid, each chip one unit of its compute cores (peak
    cores x 5.5296 TFLOP/s at LoFi) whose DRAM banks of 4 GiB merge into one channel at the
    p150's fitted 62.5 GB/s per bank; the chip keeps the p150's fitted rates and op latency."""
    hw = load_hardware(f"hw_configs/{config}.yaml")
    p150 = load_hardware("hw_configs/blackhole-p150.yaml")
    assert hw.num_tiles == chips
    assert dict(hw.tile.peak_flop_per_s)["bf16"] == pytest.approx(cores * 5.5296e12)
    assert hw.dram.capacity_bytes == pytest.approx(banks * 4 * 2**30)
    assert hw.dram.bandwidth_bytes_per_s == pytest.approx(banks * 62.5e9)
    assert hw.tile.op_latency_s == p150.tile.op_latency_s
    assert hw.tile.host_dispatch_s == p150.tile.host_dispatch_s
    assert hw.tile.format_efficiency == p150.tile.format_efficiency


def test_allreduce_over_the_blackhole_quietbox_is_the_textbook_line():
    """The QuietBox's four p150 cards in a line, two Ethernet links between neighbours at the
    Blackhole Galaxy's fitted 22.87 GB/s: two startups (a reduce-scatter call, then an
    all-gather call), then 2(n-1)/n * S / (2 B) over the end links, the reduce-scatter's half
    at e of B, one hop a step and the reduce-scatter's n-1 steps r longer each, the line
    algorithm as on the T3000."""
    hw = load_hardware("hw_configs/blackhole-quietbox.yaml")
    link = hw.wafer.inter_die
    assert link.bandwidth_bytes_per_s == pytest.approx(22.87e9)
    n = 4
    half = (n - 1) / n * S_BYTES / (2 * link.bandwidth_bytes_per_s)
    expected = half + half / hw.wafer.reduce_scatter_efficiency
    expected += 2 * (n - 1) * link.latency_s + 2 * hw.wafer.collective_latency_s
    expected += (n - 1) * hw.wafer.reduce_scatter_step_latency_s
    chip = Chip.from_spec(hw)
    assert _one_collective(chip, (0, 1, 2, 3), "allreduce") == pytest.approx(expected, rel=1e-6)


def test_an_inference_run_folder_is_rebuilt_with_its_inference_plan(tmp_path):
    """load_result (palmsim plot/report) maps an inference run as an inference run: a model
    whose training state would not fit still redraws."""
    from palmsim.api import load_result, run_experiment

    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    inference = InferenceSpec(8, 2, 1, "bf16", "bfp8", "bfp8")
    workload = WorkloadSpec(_model(), TrainingSpec(8, 1), "inference", inference)
    exp = ExperimentSpec(hw, workload, MappingSpec(), RunSpec())
    run_experiment(exp, tmp_path, make_plots=False)
    assert load_result(tmp_path).plan.inference is not None


def test_the_attention_core_runs_at_the_activation_dtypes_fidelity():
    """A prefill's attention core multiplies two bf16 activations (QK^T, scores x V): it
    runs at the bf16 fidelity whatever the weights' format, as tt_transformers runs its SDPA
    at HiFi4 (PERF.md's precision table). With bfp8 weights at HiFi2, moving bf16 from HiFi2
    to HiFi4 slows the fused core alone, by two more passes of its math, FLOP x (4 - 2) / P
    a layer (P: the n150's LoFi peak, its 8x8 compute cores x 4.096 TFLOP/s; its unpacking
    and packing take as long at every fidelity, TileSpec.efficiency_for); the weight GEMMs
    stay put. Here the tile has no measured rate of its fused attention kernel
    (tile.attention_efficiency 0), so the core runs as a GEMM would."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    hw = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, attention_efficiency=0.0))
    s = 1024
    model = dataclasses.replace(_model(), max_position_embeddings=s + 8)

    def ttft(bf16_fidelity: str) -> float:
        fidelity = (("bf16", bf16_fidelity), ("bfp8", "HiFi2"))
        return _inference(hw, tp=1, prompt=s, output=1, math_fidelity=fidelity)["ttft_s"]

    peak = 64 * 4.096e12
    slower = LAYERS * _fused_core(model, s).flop_fwd * (4 - 2) / peak
    assert ttft("HiFi4") - ttft("HiFi2") == pytest.approx(slower, rel=1e-3)


def _fused_core(model: ModelSpec, s: int) -> Op:
    """The fused attention core of one layer of ``model`` over ``s`` tokens."""
    spec = TrainingSpec(seq_len=s, global_batch_size=1, dtype="bf16", attention_kernel="fused")
    (core,) = [
        op for b in layer_blocks(model, spec, 1, 1) for op in b.ops if op.name == "attention"
    ]
    return core


def test_a_prefill_attention_core_runs_at_the_tiles_attention_efficiency():
    """tile.attention_efficiency e: a prefill's fused attention core (tt-metal's SDPA) runs
    at e of its cores' peak at its fidelity, F / (P/4 e) at HiFi4 (P the n150's LoFi peak,
    8x8 cores x 4.096 TFLOP/s): between e = 0.2 and e = 0.4 the first token moves by
    F x 4 / P x (1/0.2 - 1/0.4) a layer; the weight GEMMs stay put."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    s = 1024
    model = dataclasses.replace(_model(), max_position_embeddings=s + 8)

    def ttft(efficiency: float) -> float:
        tile = dataclasses.replace(hw.tile, attention_efficiency=efficiency)
        fidelity = (("bf16", "HiFi4"), ("bfp8", "HiFi2"))
        return _inference(
            dataclasses.replace(hw, tile=tile), tp=1, prompt=s, output=1, math_fidelity=fidelity
        )["ttft_s"]

    peak = 64 * 4.096e12
    slower = LAYERS * _fused_core(model, s).flop_fwd * 4 / peak * (1 / 0.2 - 1 / 0.4)
    assert ttft(0.2) - ttft(0.4) == pytest.approx(slower, rel=1e-3)


def _chunked_prefill(hw, prompt: int, chunk: int):
    exp = _experiment(hw, tp=1, prompt=prompt, output=1, prefill_chunk_tokens=chunk)
    return {row["op"]: row for row in op_table_of(simulate(exp))}


@pytest.mark.parametrize("chunk", [256, 300])
def test_a_chunked_prefill_does_the_same_math_in_passes_over_the_cache(chunk):
    """A 1024-token prompt in chunks of C (inference.prefill_chunk_tokens; 300 leaves a
    124-token last chunk): chunk k's queries attend to its own tokens causally in the pass
    and to the k*C cached ones through the KV step, 4 x heads x head_dim FLOP per query and
    cached token (QK^T and AV, 2 FLOP per MAC). Over the chunks that is the whole prompt's
    causal attention, so the pass FLOP sum to the unchunked prefill's; the KV steps carry
    4 x 16 x 128 x sum_k n_k x (tokens before chunk k) per layer, and the LM head runs once,
    on the last chunk."""
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    whole = _chunked_prefill(hw, 1024, 0)
    chunked = _chunked_prefill(hw, 1024, chunk)
    total = sum(r["flop"] for r in chunked.values())
    assert total == pytest.approx(sum(r["flop"] for r in whole.values()), rel=1e-12)
    sizes = [chunk] * (1024 // chunk) + ([1024 % chunk] if 1024 % chunk else [])
    cached = sum(n * sum(sizes[:k]) for k, n in enumerate(sizes))
    assert chunked["P.L.kv"]["flop"] == pytest.approx(LAYERS * 4 * 16 * 128 * cached)
    assert whole["P.L.kv"]["flop"] == 0
    assert chunked["P.head"]["count"] == whole["P.head"]["count"] == 1
    assert chunked["P.L.mlp"]["count"] == LAYERS * len(sizes)


@pytest.mark.parametrize(
    ("location", "prompt", "batch", "mode"),
    [
        ("section '25 July 2025', TT-Metal runs table", 131072, 1, "replicated"),
        ("section '2 October 2025', TT-Metal runs table", 131072, 1, "split"),
        ("section '2 October 2025', TT-Metal runs table", 1024, 1, "replicated"),
        ("section '2 October 2025', TT-Metal runs table", 2048, 32, "replicated"),
        ("section '2 October 2025', TT-Metal runs table", 4096, 32, "split"),
        ("TT-Metal runs table", 8192, 1, "split"),
    ],
)
def test_the_galaxy_demo_splits_a_prefills_attention_only_where_its_code_did(
    location: str, prompt: int, batch: int, mode: str
) -> None:
    """tt-metal PR #28992 (merged 2025-09-21) runs the Galaxy Llama demo's prefill attention
    as a ring-distributed SDPA over the 4 ranks holding the same heads, for prompts over 1024
    tokens prefilled one user at a time (its batched prefill takes 32 users up to 2048
    tokens); a row measured before it ran every rank's attention whole."""
    from palmsim.tile_cases import galaxy_prefill_attention

    case = {"source": {"path": "models/demos/llama3_70b_galaxy/PERF.md", "location": location}}
    assert galaxy_prefill_attention(case, prompt, batch) == mode


# --------------------------------------------------------------------------- prefill reductions


def test_memory_bound_ops_in_series_are_their_dram_bytes_at_the_interleaved_rate():
    """memory_ops_in_series_s: the ops without FLOP move their DRAM-resident bytes (a share
    a of their activations) at the DRAM rate B times dram.interleaved_read_efficiency r; a
    GEMM's are left to the step's flows, and a GPU's memory-bound kernels (tile.memory_ops)
    already pay their bytes. n150: B = 267 GB/s, r = 0.688."""
    from palmsim.mapping.inference import memory_ops_in_series_s
    from palmsim.workload.ops import OpCost, make_op

    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    ops = (
        make_op("norm", "norm", OpCost(0.0, 0.0, 3e8, 0.0), dtype_bytes=2),
        make_op("add", "elementwise", OpCost(0.0, 0.0, 1e8, 0.0), dtype_bytes=2),
        make_op("fc", "matmul", OpCost(1e12, 0.0, 5e8, 0.0), dtype_bytes=2),
    )
    assert hw.dram.bandwidth_bytes_per_s == pytest.approx(267e9)
    assert hw.dram.interleaved_read_efficiency == pytest.approx(0.688)
    assert memory_ops_in_series_s(hw, ops, 0.5) == pytest.approx(0.5 * 4e8 / (267e9 * 0.688))
    assert memory_ops_in_series_s(hw, ops, 0.0) == 0.0
    gpu = load_hardware("hw_configs/dgx-h100.yaml")
    assert gpu.tile.memory_ops is not None
    assert memory_ops_in_series_s(gpu, ops, 1.0) == 0.0


def test_a_prefills_memory_bound_ops_run_between_its_gemms(monkeypatch):
    """tt-metal runs one op at a time on the grid and a prefill keeps its activations in DRAM,
    so a prefill layer's norms, rotary embedding, residual adds and SwiGLU take their bytes at
    the interleaved DRAM rate in series with the GEMMs: with the activations in DRAM (an
    n150 with no L1 to spare) its attention and MLP steps last longer by, over n tokens of
    e = 2 B: two norms 2 e n h each, the rotary embedding of Q and K (2h wide, one input)
    2 e n 2h, two residual adds 3 e n h each, SwiGLU 3 e n f: (14 h + 3 f) e n, at
    267 GB/s x 0.688. A decode step's (L1-sharded in the demos) do not."""
    import palmsim.mapping.inference as inference

    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    hw = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, sram_capacity_bytes=1024))
    n, e = 256, 2

    def layer_steps() -> tuple[list[float], list[float]]:
        plan = inference.map_inference(
            _experiment(hw, tp=1, prompt=n, output=2), Chip.from_spec(hw)
        )
        assert plan.inference is not None
        (stage,) = plan.inference.stages
        times = [
            [st.compute_time_s for st in steps if isinstance(st, ComputeStep) and st.layer >= 0
             and st.block in ("attn", "mlp")]
            for steps in (stage.prefill, stage.decode[0])
        ]  # fmt: skip
        return times[0], times[1]

    prefill_on, decode_on = layer_steps()
    monkeypatch.setattr(inference, "memory_ops_in_series_s", lambda *args: 0.0)
    prefill_off, decode_off = layer_steps()
    per_layer = (14 * H + 3 * FFN) * e * n / (267e9 * 0.688)
    assert sum(prefill_on) - sum(prefill_off) == pytest.approx(LAYERS * per_layer, rel=1e-9)
    assert decode_on == decode_off


def _prefill_collectives(reduce_dtypes) -> list:
    from palmsim.mapping.inference import map_inference
    from palmsim.mapping.plan import CollectiveStep

    hw = load_hardware("hw_configs/wormhole-n300.yaml")
    exp = _experiment(hw, tp=2, prompt=256, output=1, prefill_reduce_dtypes=reduce_dtypes)
    plan = map_inference(exp, Chip.from_spec(hw))
    assert plan.inference is not None
    steps = plan.inference.stages[0].prefill
    return [(s.block, s.kind.value, s.size_bytes) for s in steps if isinstance(s, CollectiveStep)]


def _layer_bytes(residual_split: str) -> dict[tuple[str, str], float]:
    """The bytes the first layer's attention and MLP steps move, by pass (P, D), on an N300 at
    TP 2 over a 256-token prompt."""
    from palmsim.mapping.inference import map_inference
    from palmsim.mapping.plan import ComputeStep

    hw = load_hardware("hw_configs/wormhole-n300.yaml")
    exp = _experiment(hw, tp=2, prompt=256, output=2, residual_split=residual_split)
    plan = map_inference(exp, Chip.from_spec(hw))
    assert plan.inference is not None
    stage = plan.inference.stages[0]
    return {
        (tag, s.block): s.sram_bytes + s.dram_read_bytes + s.dram_write_bytes
        for tag, steps in (("P", stage.prefill), ("D", stage.decode[0]))
        for s in steps
        if isinstance(s, ComputeStep) and s.layer == 0 and s.block in ("attn", "mlp")
    }


def test_a_split_residual_stream_runs_its_adds_and_a_prefill_s_norms_on_a_share():
    """tt_transformers keeps the residual stream fractured over an N300's two chips
    (inference.residual_split): each residual add, which reads two s x h tensors and writes
    one (3 s h e bytes), moves half of that on each chip, in the prefill (s = 256: 1,572,864
    B less a block) and in a decode step (s = 1: 6,144 B less); 'adds_and_prefill_norms'
    also halves a prefill's norms (read and write, 2 s h e: 1,048,576 B less a block) and
    leaves a decode's whole. e = 2 (bf16), h = 2048."""
    whole = _layer_bytes("none")
    adds = _layer_bytes("adds")
    norms = _layer_bytes("adds_and_prefill_norms")
    for block in ("attn", "mlp"):
        assert whole["P", block] - adds["P", block] == pytest.approx(3 * 256 * H * 2 / 2)
        assert whole["D", block] - adds["D", block] == pytest.approx(3 * 1 * H * 2 / 2)
        assert adds["P", block] - norms["P", block] == pytest.approx(2 * 256 * H * 2 / 2)
        assert adds["D", block] == norms["D", block]


def test_a_split_residual_stream_is_for_one_dimensional_tensor_parallelism():
    """Under 2-D tensor parallelism the layer splits its stream over its second axis already:
    the option is refused there, with the way out."""
    from palmsim.mapping.inference import map_inference

    hw = load_hardware("hw_configs/wormhole-t3000.yaml")
    exp = _experiment(hw, tp=8, prompt=64, output=2, residual_split="adds")
    exp = dataclasses.replace(exp, mapping=dataclasses.replace(exp.mapping, tp_2d=(4, 2)))
    with pytest.raises(MappingError, match=r"residual_split=none"):
        map_inference(exp, Chip.from_spec(hw))


def test_a_prefill_reduction_in_its_own_format_is_a_reduce_scatter_then_an_all_gather():
    """tt_transformers on an N300 reduce-scatters WO's bfp8 output and all-gathers the bf16
    residual at the next norm (inference.prefill_reduce_dtypes {attn: bfp8}): the attention's
    all-reduce of S = prompt x hidden x 2 B becomes a reduce-scatter of S x 1088/2048 (a
    32x32 bfp8 tile is 1088 B, a bf16 one 2048 B) and an all-gather of S; the MLP's stays one
    all-reduce of S, and without the option both are."""
    s_bytes = 256 * H * 2
    plain = _prefill_collectives(())
    assert plain == [(b, "allreduce", s_bytes) for _ in range(LAYERS) for b in ("attn", "mlp")]
    split = _prefill_collectives((("attn", "bfp8"),))
    layer = [
        ("attn", "reducescatter", pytest.approx(s_bytes * 1088 / 2048)),
        ("attn", "allgather", s_bytes),
        ("mlp", "allreduce", s_bytes),
    ]
    assert split == layer * LAYERS
