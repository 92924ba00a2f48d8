"""Pipeline point-to-point communication as Megatron-LM does it, against closed forms.

Megatron-LM's ``p2p_communication._communicate``: with scatter-gather (its default) each of
the t TP ranks sends 1/t of the e·b·s·h stage-boundary tensor to its peer, and the receiving
TP group all-gathers it; without, every rank sends all of it; under sequence parallelism
every rank sends its own s/t shard and nothing is gathered. Without
``--overlap-p2p-communication`` (its default) a stage waits for its sends before it computes
again (``mapping.p2p_overlap: false``).

On one DGX-like node (``tests.conftest.cluster_spec``) a transfer between two GPUs crosses
the sender's NVLink up to the NVSwitch and the receiver's down: B = 300 GB/s, and a route
latency of two 1 µs links, alpha = 2 µs.
"""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.api import simulate
from palmsim.config.specs import (
    ExperimentSpec,
    InferenceSpec,
    MappingSpec,
    RunSpec,
    TrainingSpec,
    WorkloadSpec,
)
from palmsim.engine.simulator import Simulator
from palmsim.hardware.chip import Chip
from palmsim.mapping.inference import map_inference
from palmsim.mapping.plan import (
    CollectiveKind,
    CollectiveStep,
    ComputeStep,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
)
from palmsim.mapping.schedule import one_f_one_b
from tests.conftest import cluster_spec, experiment, gpt_model

B_BYTES_PER_S = 300e9  # cluster_spec's NVLink, per direction
ALPHA_S = 2 * 1e-6  # GPU -> NVSwitch -> GPU: two links of 1 µs
MODEL = gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=128)
E_B_S_H = 2 * 1 * 128 * 256  # fp16 bytes, micro-batch 1, 128 tokens, hidden 256


def _two_stage_1f1b(f_s: float, b_s: float, send_bytes: float, *, overlap: bool) -> MappingPlan:
    """Two one-GPU stages, 1F1B over two micro-batches, passes of f_s and b_s, no DRAM
    traffic and an optimizer step of 0 s."""
    idle = ComputeStep("opt", 0.0, 0.0, 0.0, 0.0, 0.0)
    programs = tuple(
        StageProgram(
            stage=s,
            layers=(s, s + 1),
            forward=(ComputeStep("f", f_s, 0.0, 0.0, 0.0, 0.0),),
            backward=(ComputeStep("b", b_s, 0.0, 0.0, 0.0, 0.0),),
            recompute=(),
            activation_bytes_per_microbatch=0.0,
            send_bytes=send_bytes,
            optimizer=idle,
            steps=one_f_one_b(2, 2, s),
            send_blocks=not overlap,
        )
        for s in range(2)
    )
    memory = MemoryBreakdown(0, 0, 0, 0, 0, 0)
    return MappingPlan(
        mapping=MappingSpec(pp=2, p2p_overlap=overlap),
        num_microbatches=2,
        stage_tiles=(((0,), (1,)),),
        programs=programs,
        dram_port_of_tile=(),
        memory=((0, memory), (1, memory)),
        placement="test",
        model_flop_per_iteration=0.0,
        peak_flop_per_s=1.0,
        samples_per_iteration=2,
        tokens_per_iteration=2,
    )


def test_blocking_sends_add_the_send_on_the_critical_path() -> None:
    """1F1B, p = 2, m = 2, passes f and b, a send of S bytes lasting d = alpha + S/B (the two
    directions use disjoint links, and d < f keeps a stage's sends apart).

    Overlapped: stage 1 runs F0 at f+d, B0, then F1 (its input arrived at 2f+d), B1 by
    3f+d+2b; stage 0 runs B0 when its gradient lands at 2f+2d+b and B1 at 3f+2d+2b:
    T = 3f + 2d + 3b. Blocking: stage 0 holds for d after each forward, so F1's activations
    land at 2f+2d; stage 1 holds for d after B0, runs F1 from 2f+2d+b and B1, whose gradient
    lands at 3f+3d+2b: T = 3f + 3d + 3b, one send later. Each stage records its two sends as
    ``comm`` waits of d."""
    f_s, b_s, size = 1e-3, 2e-3, 30e6
    d_s = ALPHA_S + size / B_BYTES_PER_S
    chip = Chip.from_spec(cluster_spec(nodes=1, gpus=2))
    overlapped = Simulator(chip, _two_stage_1f1b(f_s, b_s, size, overlap=True)).run()
    blocking = Simulator(chip, _two_stage_1f1b(f_s, b_s, size, overlap=False)).run()
    assert overlapped.end_time_s == pytest.approx(3 * f_s + 2 * d_s + 3 * b_s, rel=1e-12)
    assert blocking.end_time_s == pytest.approx(3 * f_s + 3 * d_s + 3 * b_s, rel=1e-12)
    assert not [r for r in overlapped.intervals if r.category == "comm"]
    waits = sorted(
        (r.tile, r.label, r.start_s, r.end_s) for r in blocking.intervals if r.category == "comm"
    )
    expected = [
        (0, "forward.send", f_s, f_s + d_s),
        (0, "forward.send", 2 * f_s + d_s, 2 * f_s + 2 * d_s),
        (1, "backward.send", 2 * f_s + d_s + b_s, 2 * f_s + 2 * d_s + b_s),
        (1, "backward.send", 3 * f_s + 2 * d_s + 2 * b_s, 3 * f_s + 3 * d_s + 2 * b_s),
    ]
    assert [w[:2] for w in waits] == [e[:2] for e in expected]
    for got, want in zip(waits, expected, strict=True):
        assert got[2:] == pytest.approx(want[2:], rel=1e-12)


def _pp2_tp2(**mapping):
    """Two stages of two GPUs on one node, one micro-batch: nothing else is in flight while
    a stage receives, so every flow runs at the full link rate. Every GPU is simulated (the
    tests count each rank's flows; by default rank 0 would stand for its stage)."""
    exp = experiment(
        cluster_spec(nodes=1, gpus=4),
        MODEL,
        seq=128,
        batch=1,
        pp=2,
        tp=2,
        micro_batch_size=1,
        **mapping,
    )
    return dataclasses.replace(exp, run=RunSpec(symmetric_replicas=False))


def _collectives(plan: MappingPlan) -> list[CollectiveStep]:
    steps = [s for p in plan.programs for s in p.forward + p.recompute + p.backward]
    return [s for s in steps if isinstance(s, CollectiveStep)]


def test_scatter_gather_sends_a_tp_share_and_all_gathers_at_the_receiver() -> None:
    """Scatter-gather, t = 2: each rank sends e·b·s·h/t; the receiving stage (stage 1 for the
    activations, stage 0 for the gradients) then all-gathers the e·b·s·h tensor on its ring,
    (t-1)/t·S/B + (t-1)·alpha, each ring edge one flow of (t-1)/t·S. Off: each rank sends
    e·b·s·h and nothing is gathered. A crossing then takes S/B + alpha, against
    S/(tB) + alpha + (t-1)/t·S/B + (t-1)·alpha = S/B + t·alpha with it: on one node
    scatter-gather costs (t-1)·alpha more per crossing, and with one micro-batch both
    crossings (activations, gradients) are on the critical path: T_on = T_off + 2·alpha."""
    t, size = 2, E_B_S_H
    on = simulate(_pp2_tp2())
    off = simulate(_pp2_tp2(p2p_scatter_gather=False))
    for result, per_rank in ((on, size / t), (off, size)):
        assert all(p.send_bytes == per_rank for p in result.plan.programs)
        sends = [f for f in result.trace.flows if f.category == "p2p"]
        assert len(sends) == 2 * t  # forward and backward, one flow per rank
        assert all(f.size_bytes == per_rank for f in sends)
        for f in sends:
            assert f.end_s - f.start_s == pytest.approx(
                ALPHA_S + per_rank / B_BYTES_PER_S, rel=1e-9
            )
    gather_s = (t - 1) / t * size / B_BYTES_PER_S + (t - 1) * ALPHA_S
    first, second = on.plan.programs
    gather = CollectiveStep("recv.allgather", CollectiveKind.ALLGATHER, size, op="recv.allgather")
    assert second.forward[0] == gather
    assert first.backward[0] == gather
    gathers = [f for f in on.trace.flows if f.category == "tp_allgather"]
    assert len(gathers) == 2 * t  # two collectives of t ring edges
    for f in gathers:
        assert f.size_bytes == pytest.approx((t - 1) / t * size, rel=1e-12)
        assert f.end_s - f.start_s == pytest.approx(gather_s, rel=1e-9)
    waits = {
        (r.tile, r.label): r.end_s - r.start_s
        for r in on.trace.intervals
        if r.category == "comm" and "recv" in r.label
    }
    assert set(waits) == {
        (2, "forward.recv.allgather"),
        (3, "forward.recv.allgather"),
        (0, "backward.recv.allgather"),
        (1, "backward.recv.allgather"),
    }
    assert all(w == pytest.approx(gather_s, rel=1e-9) for w in waits.values())
    assert not [f for f in off.trace.flows if f.category == "tp_allgather"]
    assert not [s for s in _collectives(off.plan) if "recv" in s.label]
    assert on.trace.end_time_s == pytest.approx(off.trace.end_time_s + 2 * ALPHA_S, rel=1e-12)


@pytest.mark.parametrize("scatter_gather", [True, False])
def test_sequence_parallel_sends_its_shard_and_gathers_nothing(scatter_gather: bool) -> None:
    """Sequence parallelism: the boundary tensor is already sequence-sharded, each rank sends
    its s/t tokens, e·b·s·h/t, scatter-gather or not, and no receiver all-gathers (the
    first layer's own sequence-parallel all-gather rebuilds the sequence)."""
    t, size = 2, E_B_S_H
    result = simulate(_pp2_tp2(sequence_parallel=True, p2p_scatter_gather=scatter_gather))
    sends = [f for f in result.trace.flows if f.category == "p2p"]
    assert len(sends) == 2 * t
    assert all(f.size_bytes == size / t for f in sends)
    assert not [s for s in _collectives(result.plan) if "recv" in s.label]
    assert not [r for r in result.trace.intervals if r.category == "comm" and "recv" in r.label]


def test_inference_sends_follow_scatter_gather() -> None:
    """Serving uses the same rule (it has no sequence parallelism): a decode step sends one
    token per request, e·b·h/t per rank and an all-gather of e·b·h, or e·b·h and none."""
    inference = InferenceSpec(16, 4, 1, "fp16", "fp16", "fp16")
    workload = WorkloadSpec(MODEL, TrainingSpec(16, 1), mode="inference", inference=inference)
    chip = Chip.from_spec(cluster_spec(nodes=1, gpus=4))
    e_b_h = 2 * 1 * 256
    for scatter_gather, per_rank, gathers in ((True, e_b_h / 2, [e_b_h]), (False, e_b_h, [])):
        mapping = MappingSpec(pp=2, tp=2, p2p_scatter_gather=scatter_gather)
        plan = map_inference(ExperimentSpec(chip.spec, workload, mapping), chip)
        assert plan.inference is not None
        assert plan.inference.decode_send_bytes == per_rank
        steps = plan.inference.stages[1].decode[0]
        received = [
            s.size_bytes for s in steps if isinstance(s, CollectiveStep) and s.label == "recv"
        ]
        assert received == gathers
