"""Serving against closed forms: a lone request, the M/D/1 queue, Little's law."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from palmsim.config.specs import TrafficSpec, TrainingSpec
from palmsim.report.serving import latencies, summarize_serving, time_average
from palmsim.serving.traffic import Request
from palmsim.workload.builders import layer_blocks
from tests.serving.helpers import (
    PEAK_FLOP_PER_S,
    compute_bound_tile,
    model,
    run,
    serving_spec,
)


def _fixed(prompt: int, output: int, **kw) -> TrafficSpec:
    return TrafficSpec("poisson", lengths="fixed", prompt_tokens=prompt, output_tokens=output, **kw)


def test_lone_request_ttft_is_prefill_flop_and_tpot_one_decode_step():
    """One request on a compute-bound tile: TTFT is the prefill's FLOP at peak, TPOT the mean
    decode step's.

    Forward FLOP of a GPT layer over s tokens: 24 s h² for its GEMMs (Narayanan et al.
    SC21, appendix) and 2 h s (s + 1) for a fused causal attention core (QKᵀ and AV, 4 d
    FLOP over each of the s (s + 1) / 2 query-key pairs on and below the diagonal, per
    head: FlashAttention's count, as serving engines run it); the LM head only for the
    sampled last token, 2 h V. A decode step with c cached tokens: 24 h² + 4 h (the new
    token's own attention) + 4 h c (QKᵀ and AV over the cache) per layer, plus 2 h V. Step
    k of n - 1 has c = p + k - 1, so the mean step has c = p + (n - 2) / 2.
    """
    layers, h, vocab, p, n = 2, 256, 512, 96, 9
    mdl = model(layers=layers, hidden=h, vocab=vocab)
    spec = serving_spec(_fixed(p, n, num_requests=1))
    request = (Request(0, 0.25, p, n),)
    _, trace = run(compute_bound_tile(), mdl, spec, request)
    (rec,) = trace.requests
    prefill_flop = layers * (24 * p * h**2 + 2 * h * p * (p + 1)) + 2 * h * vocab
    mean_ctx = p + (n - 2) / 2
    decode_flop = layers * (24 * h**2 + 4 * h + 4 * h * mean_ctx) + 2 * h * vocab
    assert rec.first_scheduled_s == 0.25
    assert rec.first_token_s - rec.arrival_s == pytest.approx(
        prefill_flop / PEAK_FLOP_PER_S, rel=1e-9
    )
    tpot = (rec.finish_s - rec.first_token_s) / (n - 1)
    assert tpot == pytest.approx(decode_flop / PEAK_FLOP_PER_S, rel=1e-9)


def test_mean_wait_at_low_load_matches_md1_pollaczek_khinchine():
    """One request at a time (max_num_seqs 1) of fixed size: a deterministic server, so the
    mean wait is Pollaczek-Khinchine's W_q = ρ D / (2 (1 - ρ)) with D the lone request's
    service time (Kleinrock, Queueing Systems I, Eq. 5.73 with zero service variance).

    ρ = 0.3 over 20,000 requests: the standard error of the sample mean is about 2 % here
    (waits are autocorrelated), so the tolerance is 6 %.
    """
    mdl = model(layers=1, hidden=128, heads=2, vocab=256)
    p, n = 16, 3
    lone = serving_spec(_fixed(p, n, num_requests=1))
    _, single = run(compute_bound_tile(), mdl, lone, (Request(0, 0.0, p, n),))
    service_s = single.requests[0].finish_s
    rho = 0.3
    spec = serving_spec(
        _fixed(p, n, num_requests=20_000, rate_per_s=rho / service_s), max_num_seqs=1
    )
    _, trace = run(compute_bound_tile(), mdl, spec, seed=3)
    waits = latencies(trace.requests)["queue_s"]
    expected = rho * service_s / (2 * (1 - rho))
    assert waits.mean() == pytest.approx(expected, rel=0.06)
    e2e = latencies(trace.requests)["e2e_s"]
    assert e2e - waits == pytest.approx(np.full(e2e.size, service_s), rel=1e-9)


def test_littles_law_holds_for_the_queue_and_the_system():
    """Little's law L = λ W over the whole run (empty at both ends, so exact): the time-average
    number waiting (from the engine's queue records) equals the arrival rate times the mean
    wait (from the request records), and the same for requests in the system."""
    mdl = model()
    traffic = TrafficSpec(
        "gamma",
        rate_per_s=40.0,
        cv=2.0,
        num_requests=300,
        lengths="fixed",
        prompt_tokens=200,
        output_tokens=20,
    )
    spec = serving_spec(traffic, max_num_seqs=8, max_num_batched_tokens=256)
    _, trace = run(compute_bound_tile(), mdl, spec, seed=1)
    lat = latencies(trace.requests)
    end = trace.end_time_s
    rate = len(trace.requests) / end
    waiting, _ = time_average(trace.queue, "num_waiting", end, 1)
    in_system, _ = time_average(trace.queue, "num_in_system", end, 1)
    assert lat["queue_s"].mean() > 0  # the queue is not trivially empty
    assert waiting == pytest.approx(rate * lat["queue_s"].mean(), rel=1e-9)
    assert in_system == pytest.approx(rate * lat["e2e_s"].mean(), rel=1e-9)
    summary = summarize_serving(trace, spec.slo)
    assert summary["requests_in_system_mean"] == pytest.approx(in_system, rel=1e-12)


def test_closed_loop_of_one_client_runs_requests_back_to_back_each_alone():
    """``arrival: closed`` with one client: each request arrives the instant the previous one
    finishes, so every request runs alone and its TTFT is the lone prefill's FLOP at peak
    (as in the lone-request test), and n requests take n times one request's latency."""
    layers, h, vocab, p, n, count = 2, 256, 512, 96, 9, 5
    mdl = model(layers=layers, hidden=h, vocab=vocab)
    traffic = TrafficSpec(
        "closed", num_requests=count, concurrency=1, prompt_tokens=p, output_tokens=n
    )
    _, trace = run(compute_bound_tile(), mdl, serving_spec(traffic))
    recs = trace.requests
    assert recs[0].arrival_s == 0.0
    for before, after in itertools.pairwise(recs):
        assert after.arrival_s == before.finish_s
    prefill_flop = layers * (24 * p * h**2 + 2 * h * p * (p + 1)) + 2 * h * vocab
    for rec in recs:
        assert rec.first_token_s - rec.arrival_s == pytest.approx(
            prefill_flop / PEAK_FLOP_PER_S, rel=1e-9
        )
    one = recs[0].finish_s - recs[0].arrival_s
    assert trace.end_time_s == pytest.approx(count * one, rel=1e-12)


def test_closed_loop_keeps_exactly_concurrency_requests_in_flight():
    """With C clients and more requests than C, the number in flight is C from time 0 until
    the last C are sent, and never more."""
    c, count = 3, 12
    traffic = TrafficSpec("closed", num_requests=count, concurrency=c, prompt_tokens=40,
                          output_tokens=6)  # fmt: skip
    _, trace = run(compute_bound_tile(), model(), serving_spec(traffic))
    recs = trace.requests
    assert [r.arrival_s for r in recs[:c]] == [0.0] * c
    events = sorted([(r.arrival_s, 1) for r in recs] + [(r.finish_s, -1) for r in recs],
                    key=lambda e: (e[0], e[1]))  # fmt: skip
    in_flight, peak = 0, 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak == c
    # every request after the first C arrives exactly when some request finished
    finishes = {r.finish_s for r in recs}
    assert all(r.arrival_s in finishes for r in recs[c:])


def test_ops_per_layer_beyond_the_graph_each_pay_the_op_latency():
    """serving.ops_per_layer (as inference.ops_per_layer): each layer launches that many
    device ops, each beyond the op graph's kernels paying tile.op_latency in series. A lone
    request's prefill and every decode step grow by layers x extra ops x op latency exactly
    (all in SRAM: the steps move no DRAM, so nothing overlaps the latency)."""
    layers, p, n, extra, latency = 2, 32, 5, 10, 1e-3
    tile = compute_bound_tile()
    hw = dataclasses.replace(tile, tile=dataclasses.replace(tile.tile, op_latency_s=latency))
    mdl = model(layers=layers)
    # the layer's kernels as a serving engine runs it: one fused attention kernel
    spec = TrainingSpec(seq_len=1, global_batch_size=1, dtype="fp16", attention_kernel="fused")
    graph = sum(op.kernels_fwd for b in layer_blocks(mdl, spec, 1, 1) for op in b.ops)
    base = serving_spec(_fixed(p, n, num_requests=1))
    more = dataclasses.replace(base, ops_per_layer=graph + extra)
    request = (Request(0, 0.0, p, n),)
    (a,) = run(hw, mdl, base, request)[1].requests
    (b,) = run(hw, mdl, more, request)[1].requests
    step_s = layers * extra * latency
    assert b.first_token_s - a.first_token_s == pytest.approx(step_s, rel=1e-9)
    tpot_a = (a.finish_s - a.first_token_s) / (n - 1)
    tpot_b = (b.finish_s - b.first_token_s) / (n - 1)
    assert tpot_b - tpot_a == pytest.approx(step_s, rel=1e-9)


def test_decode_iterations_stream_weights_through_one_reader_per_dram_bank():
    """serving.decode_readers_per_bank: 1 (as inference's): an iteration with no prefill runs
    its weight GEMMs as DRAM-sharded matmuls, one core per DRAM bank reading its shard. On
    the n150 with 1 KiB of SRAM (every weight in DRAM) and readers slowed to 0.1 GB/s, its 12
    readers stream 1.2 GB/s and a decode step is its GEMM weights over that: layers x 12 h^2
    (attention 4 h^2, GeLU MLP 8 h^2) plus the head's V h, fp16, with their biases; the op
    latencies and the cache reads add well under 1%. In the prefill iteration only the LM
    head runs so: the first token comes later by its V h weights over 1.2 GB/s, less the same
    bytes at the DRAM rate."""
    from palmsim.config.loader import load_hardware

    n150 = load_hardware("hw_configs/wormhole-n150.yaml")
    assert n150.dram.banks == 12
    hw = dataclasses.replace(
        n150,
        tile=dataclasses.replace(
            n150.tile, sram_capacity_bytes=1024, dram_reader_bandwidth_bytes_per_s=0.1e9
        ),
    )
    layers, h, vocab, p, n = 2, 1024, 32000, 16, 4
    mdl = model(layers=layers, hidden=h, heads=8, vocab=vocab)
    base = serving_spec(_fixed(p, n, num_requests=1))
    sharded = dataclasses.replace(base, decode_readers_per_bank=1)
    request = (Request(0, 0.0, p, n),)
    (a,) = run(hw, mdl, base, request)[1].requests
    (b,) = run(hw, mdl, sharded, request)[1].requests
    weights_bytes = 2 * (layers * (12 * h * h + 9 * h) + vocab * h)
    step_s = weights_bytes / (12 * 0.1e9)
    tpot = (b.finish_s - b.first_token_s) / (n - 1)
    assert tpot == pytest.approx(step_s, rel=0.01)
    assert tpot > step_s
    assert (a.finish_s - a.first_token_s) / (n - 1) < 0.1 * tpot  # at the DRAM rate
    head_bytes = 2 * vocab * h
    head_extra = head_bytes / (12 * 0.1e9) - head_bytes / hw.dram.bandwidth_bytes_per_s
    assert b.first_token_s - a.first_token_s == pytest.approx(head_extra, rel=0.01)


def test_decode_iterations_read_each_cache_through_its_attention_cores():
    """serving.decode_attention_cores: c (as inference's): in an iteration without a prefill
    each request's attention runs on c cores reading its cache at dram_reader_bandwidth r
    each, and the iteration waits for the request with the longest cache. One request of a
    p-token prompt decodes n - 1 steps over p, p + 1, ..., p + n - 2 cached tokens, each
    layer's K and V 2 x h fp16 a token (MHA), all in DRAM. With r = 1 MB/s that floor rules
    every step, so one core against two adds layers x 4h B x (mean cache) / (2r) to the TPOT
    exactly; the prefill iteration keeps its path."""
    hw = _n150_weights_in_dram(dram_reader_bandwidth_bytes_per_s=1e6)
    layers, h, p, n = 2, 1024, 1000, 4
    mdl = model(layers=layers, hidden=h, heads=8, vocab=32000)
    base = serving_spec(_fixed(p, n, num_requests=1))
    one = dataclasses.replace(base, decode_attention_cores=1)
    two = dataclasses.replace(base, decode_attention_cores=2)
    request = (Request(0, 0.0, p, n),)
    (a,) = run(hw, mdl, one, request)[1].requests
    (b,) = run(hw, mdl, two, request)[1].requests
    mean_cache = p + (n - 2) / 2
    per_token = 2 * h * 2  # K and V of every head, fp16
    tpot_a = (a.finish_s - a.first_token_s) / (n - 1)
    tpot_b = (b.finish_s - b.first_token_s) / (n - 1)
    assert tpot_a - tpot_b == pytest.approx(layers * per_token * mean_cache / 2e6, rel=1e-6)
    assert a.first_token_s == b.first_token_s


def test_cache_reads_run_at_the_interleaved_share_of_the_dram_rate():
    """dram.interleaved_read_efficiency e (as palmsim run's): an iteration's reads of its
    caches, interleaved over the banks, last at least their bytes over e x the channel's
    rate B. One request of a 20000-token prompt decodes n - 1 steps over p, ..., p + n - 2
    cached tokens, each layer's K and V 2 x h fp16 a token, all in DRAM; the floor rules each
    step at e = 0.5 and 0.25, so the quarter adds layers x 4h B x (mean cache) x (1/0.25 -
    1/0.5) / B to the TPOT exactly. The prefill iteration holds no cached tokens: its first
    token moves by its layers' memory-bound ops alone, their bytes M (the workload's op
    graph: the ops without FLOP) at the same rates, layers x M x (1/0.25 - 1/0.5) / B."""
    from palmsim.config.specs import TrainingSpec
    from palmsim.workload.builders import layer_blocks

    hw = _n150_weights_in_dram()
    layers, h, p, n = 2, 1024, 20000, 4
    mdl = model(layers=layers, hidden=h, heads=8, vocab=32000, seq=p + n)
    spec = serving_spec(_fixed(p, n, num_requests=1))
    request = (Request(0, 0.0, p, n),)

    def served(e: float):
        dram = dataclasses.replace(hw.dram, interleaved_read_efficiency=e)
        ((r,),) = [run(dataclasses.replace(hw, dram=dram), mdl, spec, request)[1].requests]
        return r

    a, b = served(0.5), served(0.25)
    mean_cache = p + (n - 2) / 2
    per_token = 2 * h * 2  # K and V of every head, fp16
    tpot_a = (a.finish_s - a.first_token_s) / (n - 1)
    tpot_b = (b.finish_s - b.first_token_s) / (n - 1)
    b_bps = hw.dram.bandwidth_bytes_per_s
    expected = layers * per_token * mean_cache * (1 / 0.25 - 1 / 0.5) / b_bps
    assert tpot_b - tpot_a == pytest.approx(expected, rel=1e-6)
    spec_p = TrainingSpec(seq_len=p, global_batch_size=1, dtype="fp16", attention_kernel="fused")
    blocks = layer_blocks(mdl, spec_p, 1, 1)
    memory = sum(op.bytes_fwd for block in blocks for op in block.ops if op.flop_fwd == 0)
    prefill = layers * memory * (1 / 0.25 - 1 / 0.5) / b_bps
    assert b.first_token_s - a.first_token_s == pytest.approx(prefill, rel=1e-6)


def _n150_weights_in_dram(**tile):
    from palmsim.config.loader import load_hardware

    n150 = load_hardware("hw_configs/wormhole-n150.yaml")
    return dataclasses.replace(
        n150, tile=dataclasses.replace(n150.tile, sram_capacity_bytes=1024, **tile)
    )


def _one_request_twice(hw, mdl, p: int, n: int, **variant):
    """One request of ``p`` prompt and ``n`` output tokens served traced (no host dispatch)
    as the fixed-traffic default, then with ``variant`` (serving fields): both records."""
    base = dataclasses.replace(serving_spec(_fixed(p, n, num_requests=1)), trace="all")
    request = (Request(0, 0.0, p, n),)
    (a,) = run(hw, mdl, base, request)[1].requests
    (b,) = run(hw, mdl, dataclasses.replace(base, **variant), request)[1].requests
    return a, b


def test_prefill_iterations_stream_weights_through_the_column_readers():
    """serving.prefill_weight_readers: 8 (as inference's): an iteration holding a prefill
    brings its layers' DRAM weights to the cores through 8 column readers, each reading a
    block a tile at a time and then multicasting it, 1/(1/r + 1/m) each. On the n150 with
    every weight in DRAM and both per-core rates (its fp16 tiles' read r, the multicast m)
    at 0.1 GB/s, 8 readers stream 0.4 GB/s: the first token
    comes later by the layers' 12 h^2 + 9 h fp16 weights over 0.4 GB/s, less the same bytes
    at the DRAM rate (the LM head and decode keep their paths); traced, so no host dispatch."""
    hw = _n150_weights_in_dram(
        dram_tile_reader_bandwidth_bytes_per_s=0.1e9, multicast_bandwidth_bytes_per_s=0.1e9
    )
    layers, h, p, n = 2, 1024, 16, 2
    mdl = model(layers=layers, hidden=h, heads=8, vocab=32000)
    a, b = _one_request_twice(hw, mdl, p, n, prefill_weight_readers=8)
    layer_bytes = 2 * layers * (12 * h * h + 9 * h)
    extra_s = layer_bytes / (8 * 0.05e9) - layer_bytes / hw.dram.bandwidth_bytes_per_s
    assert b.first_token_s - a.first_token_s == pytest.approx(extra_s, rel=0.01)
    assert b.finish_s - b.first_token_s == pytest.approx(a.finish_s - a.first_token_s)


def test_prefill_iterations_run_their_layers_on_the_prefill_cores():
    """serving.prefill_compute_cores: 32 (as inference's): an iteration holding a prefill
    runs its layers on 32 of the n150 tile's 64 cores. With each core slowed to
    0.1 GFLOP/s the prefill is compute-bound, so the first token comes later by the layers'
    FLOP in the op graph over the 64 cores' rate, their time doubled: F / (64 p e) with the
    fused attention core's FLOP at tile.attention_efficiency in place of e; the LM head and
    the decode iterations keep every core."""
    hw = _n150_weights_in_dram()
    core_peak = 1e8
    peak = tuple((dtype, 64 * core_peak) for dtype, _ in hw.tile.peak_flop_per_s)
    hw = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, peak_flop_per_s=peak))
    layers, h, p, n = 2, 256, 32, 3
    mdl = model(layers=layers, hidden=h, heads=4, vocab=512)
    a, b = _one_request_twice(hw, mdl, p, n, prefill_compute_cores=32)
    spec = TrainingSpec(seq_len=p, global_batch_size=1, dtype="fp16", attention_kernel="fused")
    ops = [op for blk in layer_blocks(mdl, spec, 1, 1) for op in blk.ops]
    core = layers * sum(op.flop_fwd for op in ops if op.kind == "attention")
    rest = layers * sum(op.flop_fwd for op in ops if op.kind != "attention")
    tile = hw.tile
    layers_s = (rest / tile.compute_efficiency + core / tile.attention_efficiency) / (
        64 * core_peak
    )
    assert b.first_token_s - a.first_token_s == pytest.approx(layers_s, rel=0.01)
    assert b.finish_s - b.first_token_s == pytest.approx(a.finish_s - a.first_token_s)


def test_an_untraced_prefill_iteration_is_host_bound_at_ops_times_host_dispatch():
    """serving.trace: decode (as inference's): an iteration holding a prefill is not
    replayed from a trace, so the host dispatches its ops one by one. With a host dispatch
    of 10 ms, far above any op's device time, the prefill iteration lasts its ops x 10 ms:
    the embedding's and the head's kernels and serving.ops_per_layer = 23 a layer. The
    decode iterations, traced, pay none of it; trace 'all' frees the prefill too."""
    from palmsim.workload.builders import embedding_block, head_block

    hw = _n150_weights_in_dram(host_dispatch_s=10e-3)
    layers, p, n = 2, 16, 3
    mdl = model(layers=layers, hidden=256, heads=4, vocab=512)
    base = dataclasses.replace(serving_spec(_fixed(p, n, num_requests=1)), ops_per_layer=23)
    request = (Request(0, 0.0, p, n),)
    (a,) = run(hw, mdl, base, request)[1].requests
    (b,) = run(hw, mdl, dataclasses.replace(base, trace="all"), request)[1].requests
    spec = TrainingSpec(seq_len=p, global_batch_size=1, dtype="fp16")
    ends = (embedding_block(mdl, spec, 1, 1), head_block(mdl, spec, 1, 1))
    ops = layers * 23 + sum(op.kernels_fwd for blk in ends for op in blk.ops)
    assert a.first_token_s == pytest.approx(ops * 10e-3, rel=1e-3)
    assert b.first_token_s < 0.01 * a.first_token_s
    assert a.finish_s - a.first_token_s == pytest.approx(b.finish_s - b.first_token_s)


def test_a_prefill_chunks_attention_over_its_cache_runs_at_the_attention_efficiency():
    """An iteration holding a prefill chunk of 64 tokens over 128 cached and a decode over
    256: the chunk's (query, key) pairs, 64 x 128 (BatchShape.chunk_pairs), run at
    tile.attention_efficiency e_a (the prefill's fused attention kernel), the decode's 256 at
    the GEMM efficiency e, so on a compute-bound n150 (each core at 0.1 GFLOP/s) the cached
    attention lasts 4 h d (64 x 128 / e_a + 256 / e) / P, P the 64 cores' peak."""
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.serving import batch_shape, map_serving

    hw = _n150_weights_in_dram()
    core_peak = 1e8
    peak = tuple((dtype, 64 * core_peak) for dtype, _ in hw.tile.peak_flop_per_s)
    hw = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, peak_flop_per_s=peak))
    mdl = model(layers=2, hidden=256, heads=4, vocab=512)
    spec = dataclasses.replace(serving_spec(_fixed(64, 2, num_requests=1)), trace="all")
    plan = map_serving(spec, hw, mdl, Chip.from_spec(hw))
    shape = batch_shape([(64, 128, 1), (1, 256, 1)])
    assert (shape.chunk_pairs, shape.cached_pairs) == (64 * 128, 64 * 128 + 256)
    step = plan._kv_step(shape, plan.stages[0], "kv")
    tile = hw.tile
    per_pair = 4 * 4 * 64  # 4 FLOP a pair per head dimension, 4 heads of 64
    expected_s = per_pair * (64 * 128 / tile.attention_efficiency + 256 / tile.compute_efficiency)
    assert step.compute_time_s == pytest.approx(expected_s / (64 * core_peak), rel=1e-9)


@pytest.mark.parametrize("tile_rows", [1, 32])
def test_an_iterations_all_reduce_moves_whole_tiles_of_rows(tile_rows):
    """tile.matrix_tile_rows t: a serving iteration's all-reduce moves its tokens' rows
    padded to whole tiles, as palmsim run's passes do: a decode of one request on the n300's
    two chips all-reduces ceil(1 / t) t rows of h fp16 elements (32 x 256 x 2 B at t = 32),
    an iteration of 40 tokens 64 rows at t = 32 and 40 at t = 1."""
    from palmsim.config.loader import load_hardware
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.plan import CollectiveStep
    from palmsim.mapping.serving import batch_shape, map_serving

    hw = load_hardware("hw_configs/wormhole-n300.yaml")
    assert hw.tile.matrix_tile_rows == 32
    hw = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, matrix_tile_rows=tile_rows))
    mdl = model(layers=2, hidden=256, heads=4, vocab=512)
    spec = dataclasses.replace(serving_spec(_fixed(64, 2, num_requests=1)), tp=2, trace="all")
    plan = map_serving(spec, hw, mdl, Chip.from_spec(hw))
    for shape, tokens in ((batch_shape([(1, 64, 1)]), 1), (batch_shape([(40, 0, 1)]), 40)):
        steps = [step for _, seg, _ in plan.segments(shape, 0) for step in seg]
        sizes = [s.size_bytes for s in steps if isinstance(s, CollectiveStep)]
        rows = -(-tokens // tile_rows) * tile_rows
        assert sizes and sizes == pytest.approx([rows * 256 * 2] * len(sizes), rel=1e-12)
