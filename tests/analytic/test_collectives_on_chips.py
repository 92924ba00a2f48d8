"""Ring collectives on real chip graphs against the textbook cost (Patarasuk & Yuan 2009)."""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.config.specs import MappingSpec
from palmsim.engine.simulator import Simulator
from palmsim.hardware.chip import Chip
from palmsim.mapping.communicators import communicators
from palmsim.mapping.placement import place
from palmsim.mapping.plan import (
    CollectiveStep,
    ComputeStep,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
)
from tests.conftest import cluster_spec, wafer_spec

S_BYTES = 64e6
BW = 100e9
ALPHA_S = 5e-9


def _one_collective(
    chip: Chip, tiles: tuple[int, ...], kind: str, *, exclusive: bool | None = None
) -> float:
    idle = ComputeStep("idle", 0.0, 0.0, 0.0, 0.0, 0.0)
    program = StageProgram(
        stage=0,
        layers=(0, 1),
        forward=(CollectiveStep("c", kind, S_BYTES),),
        backward=(),
        recompute=(),
        activation_bytes_per_microbatch=0.0,
        send_bytes=0.0,
        optimizer=idle,
        steps=(("F", 0), ("B", 0)),
    )
    memory = MemoryBreakdown(0, 0, 0, 0, 0, 0)
    (tp,), _, _ = communicators(chip, ((tiles,),), pipeline_wraps=False, symmetric_replicas=False)
    if exclusive is not None:  # force the closed form or the flow network
        tp = dataclasses.replace(tp, exclusive=exclusive)
    plan = MappingPlan(
        mapping=MappingSpec(tp=len(tiles)),
        num_microbatches=1,
        stage_tiles=((tiles,),),
        programs=(program,),
        dram_port_of_tile=(),
        memory=tuple((t, memory) for t in tiles),
        placement="test",
        model_flop_per_iteration=0.0,
        peak_flop_per_s=1.0,
        samples_per_iteration=1,
        tokens_per_iteration=1,
        communicators=(tp,),
    )
    return Simulator(chip, plan).run().end_time_s


@pytest.mark.parametrize(("startup", "exclusive"), [(0.0, None), (3e-6, True), (3e-6, False)])
def test_allreduce_on_a_torus_row_matches_textbook(startup, exclusive):
    """8 tiles on a 1x8 torus: the wrap-around closes the ring with one hop. With
    system.collective_latency a, the all-reduce takes a + the textbook ring, in closed form
    and through the flow network alike: every flow waits a once, in parallel, not once a
    step or a flow."""
    hw = wafer_spec(
        dies=(1, 1),
        tiles=(1, 8),
        intra_bw=BW,
        latency_s=ALPHA_S,
        topology="torus",
        dram_placement="per_tile",
    )
    hw = dataclasses.replace(hw, wafer=dataclasses.replace(hw.wafer, collective_latency_s=startup))
    n = 8
    expected = startup + 2 * (n - 1) / n * S_BYTES / BW + 2 * (n - 1) * ALPHA_S
    got = _one_collective(Chip.from_spec(hw), tuple(range(n)), "allreduce", exclusive=exclusive)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("kind", "factor", "steps"), [("allreduce", 2, 2), ("reducescatter", 1, 1), ("allgather", 1, 1)]
)
def test_collectives_on_a_mesh_die_use_a_one_hop_ring(kind, factor, steps):
    """A 4x4 mesh die: the snake placement puts the group on a Hamiltonian cycle, so every
    ring edge is one intra-die hop and the cost is the textbook one for n = 16."""
    hw = wafer_spec(dies=(1, 1), tiles=(4, 4), intra_bw=BW, latency_s=ALPHA_S)
    chip = Chip.from_spec(hw)
    ((stage,),) = place(chip, "snake", 1, 16, 1)
    n = 16
    expected = factor * (n - 1) / n * S_BYTES / BW + steps * (n - 1) * ALPHA_S
    assert _one_collective(chip, stage, kind) == pytest.approx(expected, rel=1e-9)


def test_a_ring_straddling_the_die_boundary_is_paced_by_the_inter_die_link():
    """Row-major placement of 8 tiles along a row of two 1x4 dies: the inter-die link (a
    quarter of the intra-die bandwidth) and the 7-hop closing edge, which shares the reverse
    inter-die channel with no other ring flow, pace the ring: every flow carries
    2(n-1)/n*S; the slowest is the one over the inter-die link at BW/4."""
    hw = wafer_spec(
        dies=(1, 2),
        tiles=(1, 4),
        intra_bw=BW,
        inter_bw=BW / 4,
        latency_s=ALPHA_S,
        dram_placement="per_tile",
    )
    chip = Chip.from_spec(hw)
    n = 8
    edge_bytes = 2 * (n - 1) / n * S_BYTES
    closing_latency = 2 * (n - 1) * 7 * ALPHA_S
    expected = edge_bytes / (BW / 4) + closing_latency
    got = _one_collective(chip, tuple(range(n)), "allreduce")
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("kind", "factor"), [("allreduce", 2), ("allgather", 1)])
def test_a_group_across_cluster_nodes_runs_one_ring_per_local_gpu(kind, factor):
    """8 GPUs on 2 nodes of 4 (NVLink 300 GB/s, 1 µs per channel; NIC 25 GB/s, 2 µs): NCCL's
    one ring per local GPU sends 1/4 of every ring edge's factor·(n-1)/n·S over each GPU's
    NIC and 3/4 over its NVLink. Each route has two channels, so per ring step it pays 2 µs
    (NVLink) or 4 µs (NIC); the collective ends with the slower share,
    max(3/4·E/B_nvlink + steps·2 µs, 1/4·E/B_nic + steps·4 µs), not the flat ring's E/B_nic."""
    chip = Chip.from_spec(cluster_spec(nodes=2, gpus=4))
    n = 8
    steps = factor * (n - 1)
    edge_bytes = factor * (n - 1) / n * S_BYTES
    expected = max(
        0.75 * edge_bytes / 300e9 + steps * 2e-6, 0.25 * edge_bytes / 25e9 + steps * 4e-6
    )
    assert _one_collective(chip, tuple(range(n)), kind) == pytest.approx(expected, rel=1e-9)
