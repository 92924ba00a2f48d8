"""ZeRO stages 1-3 (Rajbhandari et al. SC20, Sec. 5 and 7) against their closed forms.

One pipeline stage, no tensor parallelism, DP over n = 4 GPUs of one node, m micro-batches:
every ring collective of S bytes over n ranks moves (n-1)·S bytes in all for an all-gather
or a reduce-scatter, and 2(n-1)·S for an all-reduce.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from palmsim.api import simulate, summarize_result
from palmsim.config.specs import DTYPE_BYTES
from palmsim.errors import MappingError
from palmsim.mapping.memory import optimizer_state_bytes_per_param
from palmsim.workload.builders import num_parameters
from tests.conftest import cluster_spec, experiment

N, M = 4, 3  # DP ranks, micro-batches per replica


def _run(zero: int) -> tuple[dict, object]:
    exp = experiment(cluster_spec(nodes=1), pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M)
    exp = dataclasses.replace(exp, mapping=dataclasses.replace(exp.mapping, zero=zero))
    result = simulate(exp)
    return summarize_result(result), result


def _param_bytes(result) -> float:
    model = result.experiment.workload.model
    return num_parameters(model) * DTYPE_BYTES["fp16"]


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_dp_traffic_per_zero_stage(zero: int) -> None:
    summary, result = _run(zero)
    psi = _param_bytes(result)
    moved = summary["communication_bytes_by_category"]
    expected = {
        # plain DP: one all-reduce of the gradients per iteration
        0: {"dp_allreduce": 2 * (N - 1) * psi},
        # ZeRO-1: reduce-scatter the gradients once, all-gather the updated weights once
        1: {"dp_reducescatter": (N - 1) * psi, "dp_allgather": (N - 1) * psi},
        # ZeRO-2: the gradient shard is reduced after every micro-batch's backward
        2: {"dp_reducescatter": M * (N - 1) * psi, "dp_allgather": (N - 1) * psi},
        # ZeRO-3: two all-gathers of the weights per micro-batch (forward and backward)
        3: {"dp_reducescatter": M * (N - 1) * psi, "dp_allgather": 2 * M * (N - 1) * psi},
    }[zero]
    got = {k: v for k, v in moved.items() if k.startswith("dp_")}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_memory_per_zero_stage(zero: int) -> None:
    summary, result = _run(zero)
    params = num_parameters(result.experiment.workload.model)
    e = DTYPE_BYTES["fp16"]
    state = optimizer_state_bytes_per_param("adam", "fp16")  # 12 B: fp32 master + 2 moments
    breakdown = summary["memory_breakdown_bytes"]
    assert breakdown["optimizer"] == pytest.approx(
        params * state / (N if zero >= 1 else 1), rel=1e-12
    )
    assert breakdown["gradients"] == pytest.approx(params * e / (N if zero >= 2 else 1), rel=1e-12)
    if zero < 3:
        assert breakdown["weights"] == pytest.approx(params * e, rel=1e-12)
    else:
        # the shard plus two gathered layers, the running one and the next, prefetched, of
        # 12h² + 13h parameters each (Megatron Eq. 2); the embedding, (V + s)·h, is smaller
        h = result.experiment.workload.model.hidden_size
        layer = 12 * h * h + 13 * h
        assert breakdown["weights"] == pytest.approx(params * e / N + 2 * layer * e, rel=1e-12)


def test_zero_without_data_parallelism_changes_nothing() -> None:
    base = experiment(cluster_spec(nodes=1), pp=2, tp=2, dp=1, micro_batch_size=2, batch=4)
    zero3 = dataclasses.replace(base, mapping=dataclasses.replace(base.mapping, zero=3))
    assert simulate(zero3).trace.end_time_s == simulate(base).trace.end_time_s


def _forward_of_microbatch_0(nvlink_bytes_per_s: float):
    """Tile 0's forward of micro-batch 0 under ZeRO-3: its compute intervals and the
    (start, end) of each weight all-gather it takes part in, in order."""
    hw = cluster_spec(nodes=1, nvlink_bytes_per_s=nvlink_bytes_per_s)
    exp = experiment(hw, pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M, zero=3)
    trace = simulate(exp).trace
    computes = [
        r for r in trace.intervals
        if r.tile == 0 and r.microbatch == 0 and r.category == "forward"
    ]  # fmt: skip
    units = 1 + exp.workload.model.num_hidden_layers + 1  # embedding, layers, head
    gathers: dict[float, float] = {}  # one all-gather's flows share their start
    for f in trace.flows:
        if f.category == "dp_allgather" and f.microbatch == 0 and f.src == 0:
            gathers[f.start_s] = max(gathers.get(f.start_s, 0.0), f.end_s)
    return computes, sorted(gathers.items())[:units]


@pytest.mark.parametrize("nvlink_bytes_per_s", [3e9, 300e9])
def test_zero3_gathers_the_next_unit_while_the_current_one_runs(
    nvlink_bytes_per_s: float,
) -> None:
    # Prefetch: a unit runs as soon as both its weights have arrived and the unit before it
    # has finished, and the next unit's gather starts as it starts (not after it has run).
    computes, gathers = _forward_of_microbatch_0(nvlink_bytes_per_s)
    units: dict[str, list] = {}
    for r in computes:
        # a unit: a layer, or the embedding or the head (layer -1, told apart by block)
        units.setdefault((r.layer, r.block if r.layer < 0 else ""), []).append(r)
    ready = 0.0  # when the unit before has finished
    for k, records in enumerate(units.values()):
        assert records[0].start_s == max(gathers[k][1], ready)
        if k + 1 < len(gathers):
            assert gathers[k + 1][0] == records[0].start_s
        ready = records[-1].end_s
    if nvlink_bytes_per_s == 3e9:
        # 100x slower than the cluster's NVLink: a layer's gather outlasts a layer's
        # compute, so the layers wait for their weights
        assert units[(1, "")][0].start_s == gathers[2][1] > units[(0, "")][-1].end_s
    else:  # the cluster's: the gather was over while the layer before ran
        assert units[(1, "")][0].start_s == units[(0, "")][-1].end_s > gathers[2][1]


def test_bf16_optimizer_state_memory() -> None:
    """bf16 moments and a bf16 master copy (NeMo's distributed Adam at ``optim.dtype: bf16``):
    ``2·2 + 2`` B per parameter, sharded over the N ranks by ZeRO-1."""
    exp = experiment(cluster_spec(nodes=1), pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M)
    training = dataclasses.replace(
        exp.workload.training, optimizer_state_dtype="bf16", master_weights_dtype="bf16"
    )
    exp = dataclasses.replace(
        exp,
        workload=dataclasses.replace(exp.workload, training=training),
        mapping=dataclasses.replace(exp.mapping, zero=1),
    )
    summary = summarize_result(simulate(exp))
    params = num_parameters(exp.workload.model)
    assert summary["memory_breakdown_bytes"]["optimizer"] == pytest.approx(
        params * (2 * 2 + 2) / N, rel=1e-12
    )


@pytest.mark.parametrize("zero", [0, 2])
def test_gradients_reduced_in_fp32_move_and_hold_four_bytes(zero: int) -> None:
    """``training.grad_reduce_dtype: fp32`` (Megatron's fp32 main_grad, FSDP's reduce_dtype):
    the same collectives as above with 4 B per gradient in place of the weights' 2, and the
    gradient memory likewise; the weights and their gathers stay fp16."""
    exp = experiment(cluster_spec(nodes=1), pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M)
    training = dataclasses.replace(exp.workload.training, grad_reduce_dtype="fp32")
    exp = dataclasses.replace(
        exp,
        workload=dataclasses.replace(exp.workload, training=training),
        mapping=dataclasses.replace(exp.mapping, zero=zero),
    )
    summary = summarize_result(simulate(exp))
    params = num_parameters(exp.workload.model)
    grads = params * DTYPE_BYTES["fp32"]
    moved = summary["communication_bytes_by_category"]
    if zero == 0:
        assert moved["dp_allreduce"] == pytest.approx(2 * (N - 1) * grads, rel=1e-12)
    else:
        assert moved["dp_reducescatter"] == pytest.approx(M * (N - 1) * grads, rel=1e-12)
        weights = params * DTYPE_BYTES["fp16"]
        assert moved["dp_allgather"] == pytest.approx((N - 1) * weights, rel=1e-12)
    held = summary["memory_breakdown_bytes"]["gradients"]
    assert held == pytest.approx(grads / (N if zero >= 2 else 1), rel=1e-12)


def _per_tensor(**mapping) -> tuple[object, object]:
    """ZeRO-3 with ``zero_collectives='tensor'`` on the runs above (N GPUs of one node)."""
    exp = experiment(
        cluster_spec(nodes=1), pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M, zero=3,
        zero_collectives="tensor", **mapping,
    )  # fmt: skip
    return exp, simulate(exp)


def test_zero3_per_tensor_moves_what_per_unit_moves() -> None:
    """One collective per tensor splits the same bytes: per micro-batch two all-gathers of
    the weights and one reduce-scatter of the gradients, as per unit."""
    exp, result = _per_tensor()
    psi = num_parameters(exp.workload.model) * DTYPE_BYTES["fp16"]
    moved = summarize_result(result)["communication_bytes_by_category"]
    assert moved["dp_allgather"] == pytest.approx(2 * M * (N - 1) * psi, rel=1e-12)
    assert moved["dp_reducescatter"] == pytest.approx(M * (N - 1) * psi, rel=1e-12)


def test_zero3_per_tensor_gathers_a_layer_tensor_by_tensor_before_it_runs() -> None:
    """DeepSpeed ZeRO-3 before v0.5.5: between layer 0's forward and layer 1's, tile 0 only
    gathers layer 1's 12 tensors (two LayerNorms, QKV, the projection, fc1 and fc2, each a
    weight and a bias), one after the other. Each is a ring over the node's N GPUs, whose
    route has two NVLink channels of 1 µs (tests/analytic/test_collectives_on_chips.py), so
    the 12 take (N-1)/N · layer bytes / B + 12 · (N-1) · 2 µs, the layer's
    12h² + 13h parameters in fp16 (Megatron Eq. 2)."""
    exp, result = _per_tensor()
    trace = result.trace
    forward = [
        r for r in trace.intervals
        if r.tile == 0 and r.microbatch == 0 and r.category == "forward" and r.layer in (0, 1)
    ]  # fmt: skip
    layer0_end = max(r.end_s for r in forward if r.layer == 0)
    layer1_start = min(r.start_s for r in forward if r.layer == 1)
    gathers: dict[float, float] = {}  # one all-gather's flows share their start
    for f in trace.flows:
        if f.category == "dp_allgather" and f.src == 0 and layer0_end <= f.start_s < layer1_start:
            gathers[f.start_s] = max(gathers.get(f.start_s, 0.0), f.end_s)
    spans = sorted(gathers.items())
    assert len(spans) == 12
    assert spans[0][0] == pytest.approx(layer0_end, abs=1e-15)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start == pytest.approx(end, abs=1e-15)  # back to back: none prefetched
    assert layer1_start == pytest.approx(spans[-1][1], abs=1e-15)
    h = exp.workload.model.hidden_size
    layer_bytes = (12 * h * h + 13 * h) * DTYPE_BYTES["fp16"]
    expected = (N - 1) / N * layer_bytes / 300e9 + 12 * (N - 1) * 2e-6
    assert spans[-1][1] - spans[0][0] == pytest.approx(expected, rel=1e-9)


def test_zero3_per_tensor_holds_one_op_gathered() -> None:
    """Gathered one module at a time: the weights held are the shard plus the largest op's,
    fc1's h x 4h weight and 4h bias."""
    exp, result = _per_tensor()
    params = num_parameters(exp.workload.model)
    h = exp.workload.model.hidden_size
    e = DTYPE_BYTES["fp16"]
    weights = summarize_result(result)["memory_breakdown_bytes"]["weights"]
    assert weights == pytest.approx(params * e / N + (4 * h * h + 4 * h) * e, rel=1e-12)


def test_zero_collectives_per_tensor_needs_zero3() -> None:
    exp = experiment(
        cluster_spec(nodes=1), pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M, zero=2,
        zero_collectives="tensor",
    )  # fmt: skip
    with pytest.raises(MappingError, match="zero_collectives=tensor with zero=2"):
        simulate(exp)


def _ring_allgather_s(size_bytes: float, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """A ring all-gather of ``size_bytes`` over the node's N GPUs: each sends (N-1)/N of it
    through its NVLink, and each of the N-1 steps crosses two NVLink channels (GPU to switch,
    switch to GPU) of ``latency_s`` each (tests/analytic/test_collectives_on_chips.py)."""
    return (N - 1) / N * size_bytes / bandwidth_bytes_per_s + (N - 1) * 2 * latency_s


def _overlapped(zero: int, overlap: bool, bandwidth_bytes_per_s: float, latency_s: float):
    hw = cluster_spec(nodes=1, nvlink_bytes_per_s=bandwidth_bytes_per_s, nvlink_latency_s=latency_s)
    exp = experiment(
        hw, pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M, zero=zero,
        overlap_param_gather=overlap,
    )  # fmt: skip
    return exp, simulate(exp)


@pytest.mark.parametrize("zero", [1, 2])
def test_overlapped_param_gather_moves_the_weights_once_in_the_first_forward(zero: int) -> None:
    """Megatron-Core's --overlap-param-gather: the same (N-1)·Ψ all-gathered as after the
    optimizer step, all of it in micro-batch 0's forward, none after the step (micro-batch
    -1) and none in the later micro-batches, which use the weights gathered."""
    exp, result = _overlapped(zero, True, 300e9, 1e-6)
    psi = num_parameters(exp.workload.model) * DTYPE_BYTES["fp16"]
    moved = summarize_result(result)["communication_bytes_by_category"]
    assert moved["dp_allgather"] == pytest.approx((N - 1) * psi, rel=1e-12)
    gathered_in = {f.microbatch for f in result.trace.flows if f.category == "dp_allgather"}
    assert gathered_in == {0}


@pytest.mark.parametrize("bandwidth_bytes_per_s", [300e9, 3e12])
def test_overlapped_param_gather_chains_the_units_gathers(bandwidth_bytes_per_s: float) -> None:
    """Each unit waits for its own gather (the forward pre-hook) and the next unit's gather
    starts as it does (next_param_gather_bucket_group): a unit starts at the later of its
    gather's end and the previous unit's end. The first gather is the embedding's, (V+s)·h
    weights, from t = 0."""
    exp, result = _overlapped(1, True, bandwidth_bytes_per_s, 1e-6)
    trace = result.trace
    units: dict[tuple[int, str], list] = {}
    for r in trace.intervals:
        if r.tile == 0 and r.microbatch == 0 and r.category == "forward":
            units.setdefault((r.layer, r.block if r.layer < 0 else ""), []).append(r)
    spans: dict[float, float] = {}  # one all-gather's flows share their start
    for f in trace.flows:
        if f.category == "dp_allgather" and f.src == 0:
            spans[f.start_s] = max(spans.get(f.start_s, 0.0), f.end_s)
    gathers = sorted(spans.items())
    assert len(gathers) == len(units)
    model = exp.workload.model
    embedding_bytes = (
        (model.vocab_size + exp.workload.training.seq_len) * model.hidden_size * DTYPE_BYTES["fp16"]
    )
    assert gathers[0] == (0.0, pytest.approx(
        _ring_allgather_s(embedding_bytes, bandwidth_bytes_per_s, 1e-6), rel=1e-9
    ))  # fmt: skip
    ready = 0.0
    for k, records in enumerate(units.values()):
        assert records[0].start_s == pytest.approx(max(gathers[k][1], ready), abs=1e-15)
        if k + 1 < len(gathers):
            assert gathers[k + 1][0] == pytest.approx(records[0].start_s, abs=1e-15)
        ready = records[-1].end_s


def test_overlapped_param_gather_exposes_only_the_first_gather_on_fast_links() -> None:
    """With gathers shorter than the unit before them, only the embedding's is waited for:
    the iteration is the one that gathers after the step, less that gather of all Ψ bytes,
    plus the embedding's of (V+s)·h weights (ring times by hand, :func:`_ring_allgather_s`)."""
    bandwidth, latency = 3e12, 1e-7
    exp, after = _overlapped(1, False, bandwidth, latency)
    _, overlapped = _overlapped(1, True, bandwidth, latency)
    model = exp.workload.model
    psi = num_parameters(model) * DTYPE_BYTES["fp16"]
    embedding_bytes = (
        (model.vocab_size + exp.workload.training.seq_len) * model.hidden_size * DTYPE_BYTES["fp16"]
    )
    expected = (
        after.trace.end_time_s
        - _ring_allgather_s(psi, bandwidth, latency)
        + _ring_allgather_s(embedding_bytes, bandwidth, latency)
    )
    assert overlapped.trace.end_time_s == pytest.approx(expected, rel=1e-12)


def test_overlapped_param_gather_buckets_a_later_stage_whole_from_the_start() -> None:
    """Megatron-LM buckets the weights of the first pipeline stage only: with PP 2 over the
    node (DP 4), stage 0 gathers unit by unit (its embedding, then each of its two layers),
    stage 1 all its weights in one all-gather started with the iteration: its two layers'
    12h² + 13h each and the head's V·h + 2h (an untied output layer and the final norm), in
    fp16, over the ring time of :func:`_ring_allgather_s`."""
    exp = experiment(
        cluster_spec(nodes=1), pp=2, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M, zero=1,
        overlap_param_gather=True,
    )  # fmt: skip
    result = simulate(exp)
    model = exp.workload.model
    h, v = model.hidden_size, model.vocab_size
    e = DTYPE_BYTES["fp16"]

    def gathers(stage: int) -> list[tuple[float, float, float]]:
        """(start, end, bytes sent) of each all-gather the stage's first tile takes part in."""
        tile = result.plan.stage_tiles[0][stage][0]
        spans: dict[float, list[float]] = {}
        for f in result.trace.flows:
            if f.category == "dp_allgather" and f.src == tile:
                span = spans.setdefault(f.start_s, [0.0, 0.0])
                span[0], span[1] = max(span[0], f.end_s), span[1] + f.size_bytes
        return sorted((start, end, sent) for start, (end, sent) in spans.items())

    layer = (12 * h * h + 13 * h) * e
    first = [sent / ((N - 1) / N) for _, _, sent in gathers(0)]
    embedding = (v + exp.workload.training.seq_len) * h * e
    assert first == pytest.approx([embedding, layer, layer], rel=1e-12)
    ((start, end, sent),) = gathers(1)
    stage = 2 * layer + (v * h + 2 * h) * e
    assert sent == pytest.approx((N - 1) / N * stage, rel=1e-12)
    assert start == 0.0
    assert end == pytest.approx(_ring_allgather_s(stage, 300e9, 1e-6), rel=1e-9)
