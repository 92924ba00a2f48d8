"""mapping.tp_comm_overlap: the sequence-parallel TP collectives under the GEMMs next to them,
as Transformer Engine's userbuffers run them (palmsim.mapping.lower.tp_comm_overlap_pass).

A tiny GPT (h = 512, MLP 4h, GeLU) on one 8-GPU node with TP 4 and sequence parallelism.
"""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.api import simulate, summarize_result
from palmsim.mapping.lower import USERBUFFERS_RS_SPLITS
from palmsim.mapping.plan import CollectiveKind, CollectiveStep, ComputeStep
from tests.conftest import cluster_spec, experiment

TP, MBS, SEQ, H = 4, 2, 256, 512


def _experiment(overlap: bool, nvlink: tuple[float, float] = (300e9, 1e-6)):
    """The experiment on one node whose NVLink has ``nvlink``'s (bandwidth [B/s], latency [s])."""
    return experiment(
        cluster_spec(nodes=1, nvlink_bytes_per_s=nvlink[0], nvlink_latency_s=nvlink[1]),
        pp=1, tp=TP, dp=1, micro_batch_size=MBS, batch=2 * MBS, sequence_parallel=True,
        tp_comm_overlap=overlap,
    )  # fmt: skip


def _forward_steps(overlap: bool) -> list:
    return list(simulate(_experiment(overlap)).plan.programs[0].forward)


def test_the_gemms_split_as_ring_exchange_and_pipeline_do() -> None:
    steps = _forward_steps(True)
    keys = [(s.layer, s.op) for s in steps]  # the steps' typed identity
    # fc1 (2·N·h·4h/t FLOP) in t chunks: t - 1 of them under the all-gather of its input
    gather = steps[keys.index((0, "L.mlp.fc1.last")) - 1]
    assert isinstance(gather, CollectiveStep) and gather.kind is CollectiveKind.ALLGATHER
    last = steps[keys.index((0, "L.mlp.fc1.last"))]
    fc1_flop = 2 * MBS * SEQ * H * 4 * H / TP
    assert gather.overlap.flop == pytest.approx(fc1_flop * (TP - 1) / TP, rel=1e-12)
    assert last.flop == pytest.approx(fc1_flop / TP, rel=1e-12)
    # fc2 in k chunks: the first alone, the other k - 1 under the reduce-scatter of its output
    k = USERBUFFERS_RS_SPLITS
    first = steps[keys.index((0, "L.mlp.fc2.first"))]
    scatter = steps[keys.index((0, "L.mlp.fc2.first")) + 1]
    assert isinstance(scatter, CollectiveStep) and scatter.kind is CollectiveKind.REDUCESCATTER
    assert first.flop == pytest.approx(fc1_flop / k, rel=1e-12)
    assert scatter.overlap.flop == pytest.approx(fc1_flop * (k - 1) / k, rel=1e-12)


def test_the_overlap_moves_the_same_bytes_and_computes_the_same_flop() -> None:
    plain, overlapped = (summarize_result(simulate(_experiment(o))) for o in (False, True))
    assert overlapped["communication_bytes_by_category"] == pytest.approx(
        plain["communication_bytes_by_category"], rel=1e-12
    )
    flop = [sum(s.flop for s in _forward_steps(o) if isinstance(s, ComputeStep)) +
            sum(s.overlap.flop for s in _forward_steps(o)
                if isinstance(s, CollectiveStep) and s.overlap) for o in (False, True)]  # fmt: skip
    assert flop[1] == pytest.approx(flop[0], rel=1e-12)
    assert overlapped["iteration_time_s"] < plain["iteration_time_s"]


SLOW, FAST = (3e9, 1e-6), (300e12, 1e-12)  # NVLink (bandwidth, latency)


@pytest.mark.parametrize("nvlink", [SLOW, FAST])
def test_an_all_gather_and_its_gemm_take_max_of_gather_and_chunks_then_the_last_chunk(
    nvlink: tuple[float, float],
) -> None:
    # max(A, (t-1)/t·G) + G/t = max(G, A + G/t): the gather A (its flows' time) against the
    # GEMM's chunks, on a slow network (gather-bound) and a fast one (GEMM-bound)
    trace = simulate(_experiment(True, nvlink)).trace
    rows = {
        r.op: r for r in trace.intervals
        if r.tile == 0 and r.microbatch == 0 and r.phase == "forward" and r.layer == 0
    }  # fmt: skip
    chunks, last = rows["L.mlp.fc1"], rows["L.mlp.fc1.last"]
    start = chunks.start_s  # the gather starts with the chunks
    gather_s = max(
        f.end_s for f in trace.flows
        if f.category == "tp_allgather" and f.src == 0 and f.start_s == start
    ) - start  # fmt: skip
    expected = max(gather_s, chunks.end_s - chunks.start_s) + (last.end_s - last.start_s)
    assert last.end_s - start == pytest.approx(expected, rel=1e-12)
    if nvlink == SLOW:
        assert gather_s > chunks.end_s - chunks.start_s  # the gather paces
    else:
        assert last.start_s == chunks.end_s  # the GEMM paces: no wait for the gather


def test_tp_comm_overlap_needs_sequence_parallelism() -> None:
    from palmsim.errors import MappingError

    exp = _experiment(True)
    exp = dataclasses.replace(
        exp, mapping=dataclasses.replace(exp.mapping, sequence_parallel=False)
    )
    with pytest.raises(MappingError, match="sequence_parallel"):
        simulate(exp)


def test_the_full_recompute_overlaps_its_collectives_as_the_forward_does() -> None:
    exp = _experiment(True)
    exp = dataclasses.replace(exp, mapping=dataclasses.replace(exp.mapping, recompute="full"))
    program = simulate(exp).plan.programs[0]
    layers = [s for s in program.forward if s.layer >= 0]
    redo = list(program.recompute)
    # the same steps from the first layer's MLP on (the forward's first QKV also takes the
    # embedding's gather; the recompute starts at the first layer, with nothing pending)
    start = [(s.layer, s.op) for s in layers].index((0, "L.mlp.pre"))
    # (the last layer's gather: the head takes it in the forward, the recompute's end flushes it)
    redo_start = [(s.layer, s.op) for s in redo].index((0, "L.mlp.pre"))
    assert redo[redo_start:] == layers[start:]
    assert any((s.layer, s.op) == (1, "L.attn.qkv.last") for s in redo)


def test_the_gemms_under_a_reduce_scatter_run_on_the_sms_the_comm_leaves() -> None:
    """set_sm_margin: the userbuffers reduce-scatter's kernels hold ``tp_comm_overlap_sms``
    of the GPU's SMs and the GEMMs under it run on the rest. Here a GEMM model of U = 16 SMs
    and 64 x 64 output tiles, no launch latency, with 8 SMs taken: fc2's forward product
    (512 tokens x 4h/t = 512 by h = 512) and fc1's weight gradient (h x 4h/t = 512 x 512)
    are 64 tiles each, whole waves on 16 SMs and on 8, so each takes 16/8 = 2 times as long
    (2·m·k·n / (peak·8/16·e) against 2·m·k·n / (peak·e)); the other GEMMs are unchanged."""
    from palmsim.config.specs import GemmSpec

    base = _experiment(True)
    gemm = GemmSpec(
        compute_units=16, tile_m=64, tile_n=64, max_efficiency=0.8, launch_latency_s=0.0
    )
    hw = dataclasses.replace(base.hardware, tile=dataclasses.replace(base.hardware.tile, gemm=gemm))

    def steps(sms: int) -> dict[str, float]:
        mapping = dataclasses.replace(base.mapping, tp_comm_overlap_sms=sms)
        program = simulate(dataclasses.replace(base, hardware=hw, mapping=mapping)).plan
        out = {}
        for s in (*program.programs[0].forward, *program.programs[0].backward):
            if s.layer != 0:
                continue
            if isinstance(s, CollectiveStep) and s.overlap is not None:
                out[s.overlap.op] = s.overlap.compute_time_s
            elif isinstance(s, ComputeStep):
                out[s.op] = s.compute_time_s
        return out

    free, held = steps(0), steps(8)
    assert free.keys() == held.keys()
    for op in ("L.mlp.fc2.first", "L.mlp.fc2", "L.mlp.fc1.wgrad"):
        assert held[op] == pytest.approx(2 * free[op], rel=1e-12), op
    assert held["L.mlp.fc1.last"] == free["L.mlp.fc1.last"]  # under a gather: no margin


def test_a_margin_of_every_sm_is_refused() -> None:
    from palmsim.config.specs import GemmSpec
    from palmsim.errors import MappingError

    base = _experiment(True)
    gemm = GemmSpec(compute_units=16, tile_m=64, tile_n=64, max_efficiency=0.8,
                    launch_latency_s=0.0)  # fmt: skip
    exp = dataclasses.replace(
        base,
        hardware=dataclasses.replace(
            base.hardware, tile=dataclasses.replace(base.hardware.tile, gemm=gemm)
        ),
        mapping=dataclasses.replace(base.mapping, tp_comm_overlap_sms=16),
    )
    with pytest.raises(MappingError, match="tp_comm_overlap_sms=16"):
        simulate(exp)


def _cp_experiment(overlap: bool):
    """TP 2 x CP 2 on one node: the attention core on its KV ring, the linears around it."""
    return experiment(
        cluster_spec(nodes=1, nvlink_bytes_per_s=300e9, nvlink_latency_s=1e-6),
        pp=1, tp=2, cp=2, dp=1, micro_batch_size=MBS, batch=2 * MBS, sequence_parallel=True,
        tp_comm_overlap=overlap,
    )  # fmt: skip


def test_a_context_parallel_attention_keeps_its_ring_between_overlapped_linears() -> None:
    """With context parallelism the attention block's linears still overlap their TP
    collectives as Transformer Engine's userbuffers run them (the KV ring works on the core
    between them): forward, the gathered input under the QKV GEMM and the reduce-scatter
    under the projection; backward, the gathered output gradient under the projection's dgrad
    and the input gradient's reduce-scatter under the QKV wgrad. The overlap moves the same
    bytes and computes the same FLOP."""
    plan = simulate(_cp_experiment(True)).plan.programs[0]
    under = {"F": ("L.attn.qkv", "L.attn.out_proj"), "B": ("L.attn.out_proj", "L.attn.qkv")}
    for phase, steps in (("F", plan.forward), ("B", plan.backward)):
        layer0 = [s for s in steps if isinstance(s, CollectiveStep) and s.layer == 0]
        hidden = {
            (s.kind, s.overlap.op.split(".")[2])
            for s in steps
            if isinstance(s, CollectiveStep) and s.group.value == "tp" and s.overlap is not None
        }
        gathered, scattered = (name.split(".")[2] for name in under[phase])
        assert (CollectiveKind.ALLGATHER, gathered) in hidden, phase
        assert (CollectiveKind.REDUCESCATTER, scattered) in hidden, phase
        ring = [s for s in layer0 if s.group.value == "cp"]
        assert ring and all(s.overlap is not None and ".core" in s.overlap.label for s in ring)
    plain, overlapped = (summarize_result(simulate(_cp_experiment(o))) for o in (False, True))
    assert overlapped["communication_bytes_by_category"] == pytest.approx(
        plain["communication_bytes_by_category"], rel=1e-12
    )
    assert overlapped["model_flop_per_iteration"] == plain["model_flop_per_iteration"]
    assert overlapped["iteration_time_s"] < plain["iteration_time_s"]
