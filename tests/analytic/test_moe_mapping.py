"""Expert and context parallelism through the mapper and the engine.

- an EP all-to-all step of a plan runs as the pairwise-exchange flows and takes the closed
  form behind an NVSwitch;
- a MoE model lowers with the dispatch/combine all-to-alls between its blocks, holds E/ep
  experts per tile, reduces expert gradients over its EDP group, and is byte-identical for
  the same seed;
- a context-parallel run puts the attention core on the KV ring and keeps 1/cp of the
  activations.
"""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.config.specs import HardwareSpec, MappingSpec, ModelSpec, RunSpec
from palmsim.engine.simulator import Simulator
from palmsim.errors import MappingError
from palmsim.explore.bound import iteration_lower_bound_s
from palmsim.hardware.chip import Chip
from palmsim.mapping.communicators import communicators
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import (
    CollectiveKind,
    CollectiveStep,
    ComputeStep,
    GradBucketReady,
    GroupKind,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
)
from palmsim.report.metrics import summarize
from tests.conftest import cluster_spec, experiment, wafer_spec

S_BYTES = 64e6

TINY_MOE = ModelSpec(
    "tiny-moe", 256, 4, 4, 512, 2, 512, 256, "silu",
    norm="rmsnorm", position_embedding="rope", use_bias=False, tie_word_embeddings=False,
    num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
)  # fmt: skip
TINY_DENSE = dataclasses.replace(TINY_MOE, name="tiny", num_experts=0, num_experts_per_tok=0)


def one_alltoall_plan(
    size_bytes: float, symmetric: bool = True
) -> tuple[HardwareSpec, Chip, MappingPlan]:
    """8 replicas of one one-tile stage on one node, ep = 8, whose forward is one EP
    all-to-all of ``size_bytes`` (no compute): the hardware, the chip and the plan (with
    ``symmetric``, one replica stands for the 8)."""
    hw = cluster_spec(nodes=1, gpus=8)
    chip = Chip.from_spec(hw)
    stage_tiles = tuple(((t,),) for t in range(8))
    idle = ComputeStep("idle", 0.0, 0.0, 0.0, 0.0, 0.0)
    program = StageProgram(
        stage=0,
        layers=(0, 1),
        forward=(CollectiveStep("a2a", CollectiveKind.ALLTOALL, size_bytes, GroupKind.EP),),
        backward=(),
        recompute=(),
        activation_bytes_per_microbatch=0.0,
        send_bytes=0.0,
        optimizer=idle,
        steps=(("F", 0), ("B", 0)),
    )
    comms, simulated, _ = communicators(
        chip, stage_tiles, pipeline_wraps=False, symmetric_replicas=symmetric, ep=8
    )
    assert {c.group for c in comms} == {GroupKind.DP, GroupKind.EP}
    memory = MemoryBreakdown(0, 0, 0, 0, 0, 0)
    plan = MappingPlan(
        mapping=MappingSpec(dp=8, ep=8),
        num_microbatches=1,
        stage_tiles=stage_tiles,
        programs=(program,),
        dram_port_of_tile=(),
        memory=tuple((t, memory) for t in range(8)),
        placement="test",
        model_flop_per_iteration=0.0,
        peak_flop_per_s=1.0,
        samples_per_iteration=1,
        tokens_per_iteration=1,
        communicators=comms,
        num_simulated_replicas=simulated,
        ep_degree=8,
    )
    return hw, chip, plan


@pytest.mark.parametrize("symmetric", [True, False])
def test_an_ep_alltoall_step_takes_the_pairwise_exchange_time_behind_a_switch(symmetric):
    """8 replicas of one one-tile stage on one node, ep = 8: the step's all-to-all is
    (n-1)/n·S/B + (n-1)·alpha_route (Thakur et al. 2005), whether one replica stands for
    the 8 (its flows imaged onto its own NVLinks) or all 8 run."""
    hw, chip, plan = one_alltoall_plan(S_BYTES, symmetric)
    assert plan.simulated_replicas == (1 if symmetric else 8)
    n, bw = 8, hw.cluster.intra_node.bandwidth_bytes_per_s
    expected = (n - 1) / n * S_BYTES / bw + (n - 1) * chip.route(0, 1).latency_s
    assert Simulator(chip, plan).run().end_time_s == pytest.approx(expected, rel=1e-9)


def _moe_experiment(**mapping):
    return experiment(cluster_spec(nodes=1, gpus=8), TINY_MOE, seq=256, batch=8, **mapping)


def test_moe_layers_lower_with_the_alltoalls_and_hold_e_over_ep_experts():
    exp = _moe_experiment(tp=2, dp=4, ep=4, micro_batch_size=1)
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    (program,) = plan.programs
    layer0 = [s for s in program.forward if s.layer == 0]
    assert [s.label for s in layer0] == [
        "L0.attn", "L0.attn.ar", "L0.moe_route", "L0.moe_route.a2a", "L0.moe_experts",
        "L0.moe_experts.ar", "L0.moe_experts.a2a", "L0.moe_combine",
    ]  # fmt: skip
    a2a = [s for s in program.forward + program.backward if getattr(s, "group", "") == "ep"]
    # e·N·k·h = 2 B · 256 tokens · 2 · 256
    assert {s.size_bytes for s in a2a} == {2 * 256 * 2 * 256}
    assert len(a2a) == 2 * 2 * 2  # 2 layers x (dispatch, combine) x (forward, backward)
    buckets = [s for s in program.backward if isinstance(s, GradBucketReady)]
    edp = [b for b in buckets if b.group == GroupKind.EDP]
    # EDP groups of dp/ep = 1 replica: no expert bucket to reduce
    assert edp == []
    # a tile holds E/ep = 2 experts of 3·h·f_e/t weights per layer, 2 layers, fp16 + the rest
    expert_bytes = 2 * 2 * 3 * 256 * 128 / 2 * 2
    assert plan.memory[0][1].weights > expert_bytes
    dense = map_workload(
        experiment(cluster_spec(nodes=1, gpus=8), TINY_MOE, seq=256, batch=8, tp=2, dp=4,
                   micro_batch_size=1),
        Chip.from_spec(exp.hardware),
    )  # fmt: skip
    # without EP every tile holds all 8 experts: 6 more per layer
    extra = dense.memory[0][1].weights - plan.memory[0][1].weights
    assert extra == pytest.approx(2 * 6 * 3 * 256 * 128 / 2 * 2, rel=1e-12)


def test_expert_gradients_reduce_over_the_edp_group():
    exp = _moe_experiment(tp=1, dp=8, ep=4, micro_batch_size=1)
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    buckets = [s for s in plan.programs[0].backward if isinstance(s, GradBucketReady)]
    edp = [b for b in buckets if b.group == GroupKind.EDP]
    assert len(edp) == 2  # one per MoE layer
    assert edp[0].size_bytes == 2 * 3 * 256 * 128 * 2  # E/ep = 2 experts, fp16
    assert plan.groups(1, 0, 0)[GroupKind.EDP] == (1, 5)
    assert plan.groups(5, 0, 0)[GroupKind.EP] == (4, 5, 6, 7)


def test_without_expert_parallelism_the_experts_reduce_with_the_dense_bucket():
    """ep = 1 with expert TP = TP: the experts' EDP group is the DP group, so their gradients
    ride each layer's DP bucket (one per layer, all its parameters) and the run simulates;
    palmsim used to emit an EDP bucket with no EDP communicator and fail."""
    exp = _moe_experiment(tp=2, dp=4, micro_batch_size=1)
    chip = Chip.from_spec(exp.hardware)
    plan = map_workload(exp, chip)
    (program,) = plan.programs
    buckets = [s for s in program.backward if isinstance(s, GradBucketReady) and s.layer == 0]
    assert [b.group for b in buckets] == [GroupKind.DP]
    layer0 = [u for u in program.forward if u.layer == 0]
    assert layer0  # the layer is lowered
    assert Simulator(chip, plan).run().end_time_s > 0


def test_same_seed_same_run_different_seed_different_routing():
    def run(seed):
        exp = dataclasses.replace(
            _moe_experiment(tp=1, dp=8, ep=8, micro_batch_size=1),
            run=RunSpec(seed=seed),
        )
        exp = dataclasses.replace(
            exp,
            workload=dataclasses.replace(
                exp.workload,
                training=dataclasses.replace(
                    exp.workload.training, expert_load="dirichlet",
                    expert_load_concentration=0.3, moe_capacity_factor=1.5,
                ),
            ),
        )  # fmt: skip
        chip = Chip.from_spec(exp.hardware)
        plan = map_workload(exp, chip)
        return plan.dropped_token_slots, Simulator(chip, plan, exp.run).run().end_time_s

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_ep_must_divide_the_replicas():
    exp = _moe_experiment(tp=2, dp=2, ep=4, micro_batch_size=1)
    with pytest.raises(MappingError, match="ep=4 does not divide dp=2"):
        map_workload(exp, Chip.from_spec(exp.hardware))


def test_context_parallel_puts_the_core_on_the_kv_ring_and_keeps_1_over_cp():
    hw = cluster_spec(nodes=1, gpus=8)
    one = experiment(hw, TINY_DENSE, seq=256, batch=8, tp=2, dp=2, micro_batch_size=1)
    two = dataclasses.replace(one, mapping=dataclasses.replace(one.mapping, cp=2))
    chip = Chip.from_spec(hw)
    plan1, plan2 = map_workload(one, chip), map_workload(two, chip)
    assert len(plan2.used_tiles) == 2 * len(plan1.used_tiles)
    rings = [s for s in plan2.programs[0].forward if getattr(s, "group", "") == "cp"]
    assert len(rings) == 2  # one per layer
    # cp · K and V chunk: 2 · (2 · 2 B · 128 tokens · 2 KV heads · 64) (kv heads 4 / tp 2)
    assert rings[0].size_bytes == 2 * 2 * 2 * 128 * 2 * 64
    assert plan2.programs[0].activation_bytes_per_microbatch == pytest.approx(
        plan1.programs[0].activation_bytes_per_microbatch / 2, rel=1e-12
    )
    Simulator(chip, plan2, two.run).run()  # finishes


def test_the_search_bound_holds_for_an_ep_run():
    exp = _moe_experiment(tp=1, dp=8, ep=4, micro_batch_size=1)
    chip = Chip.from_spec(exp.hardware)
    plan = map_workload(exp, chip)
    simulated = Simulator(chip, plan, exp.run).run().end_time_s
    assert 0 < iteration_lower_bound_s(plan, chip) <= simulated


def test_the_summary_counts_the_dropped_slots():
    """Capacity factor 1 and a skewed router drop slots; the fraction is of the iteration's
    tokens x k x MoE layers."""
    exp = _moe_experiment(tp=1, dp=8, ep=8, micro_batch_size=1)
    exp = dataclasses.replace(
        exp,
        workload=dataclasses.replace(
            exp.workload,
            training=dataclasses.replace(
                exp.workload.training, expert_load="dirichlet", expert_load_concentration=0.2,
                moe_capacity_factor=1.0,
            ),
        ),
    )  # fmt: skip
    chip = Chip.from_spec(exp.hardware)
    plan = map_workload(exp, chip)
    trace = Simulator(chip, plan, exp.run).run()
    summary = summarize(trace, chip, plan, workload_name="w", hardware_name="h", version="t")
    routed = 8 * 256 * 2 * 2  # batch 8 x 256 tokens, top-2, 2 MoE layers
    assert summary["moe_dropped_token_slots"] == plan.dropped_token_slots > 0
    assert summary["moe_dropped_fraction"] == pytest.approx(plan.dropped_token_slots / routed)
    assert 0 < summary["moe_dropped_fraction"] < 1


def _merged_plan(
    merge: bool, compute_f_s: float, compute_b_s: float, m: int, symmetric: bool = True
):
    """The 8-replica ep = 8 node of ``one_alltoall_plan`` with no pipeline (1F1B over ``m``
    micro-batches: F0 B0 F1 B1 ...), a forward of compute ``compute_f_s`` then one S-byte
    all-to-all, a backward of compute ``compute_b_s`` then one; optionally merged 1F1B."""
    from palmsim.mapping.schedule import one_f_one_b

    hw, chip, plan = one_alltoall_plan(S_BYTES, symmetric)
    (program,) = plan.programs
    a2a = program.forward[0]
    program = dataclasses.replace(
        program,
        forward=(ComputeStep("f", compute_f_s, 0.0, 0.0, 0.0, 0.0), a2a),
        backward=(ComputeStep("b", compute_b_s, 0.0, 0.0, 0.0, 0.0), a2a),
        steps=one_f_one_b(1, m, 0),
        merge_forward_backward=merge,
    )
    return hw, chip, dataclasses.replace(plan, programs=(program,), num_microbatches=m)


@pytest.mark.parametrize("symmetric", [True, False])
def test_merged_1f1b_hides_each_alltoall_behind_the_other_micro_batchs_compute(symmetric):
    """Megatron-Core's --overlap-moe-expert-parallel-comm: each steady-state backward runs
    with the next forward, taking turns on the tile. With an all-to-all of A shorter than
    either compute, m micro-batches take m·(C_f + C_b + 2A) one after another, and merged
    C_f + A (F0 alone), then m - 1 pairs of C_b + C_f + A (the backward's all-to-all runs
    under the forward's compute; the forward's is exposed) and C_b + A (the last backward):
    m·(C_f + C_b) + (m + 1)·A, (m - 1)·A less; whether one replica stands for the 8 or all
    8 run (each member counts its forward and its backward collectives apart)."""
    n, m = 8, 4
    hw, chip, _ = one_alltoall_plan(S_BYTES)
    a = (n - 1) / n * S_BYTES / hw.cluster.intra_node.bandwidth_bytes_per_s
    a += (n - 1) * chip.route(0, 1).latency_s
    c_f, c_b = 2 * a, 3 * a
    _, chip, plain = _merged_plan(False, c_f, c_b, m, symmetric)
    assert Simulator(chip, plain).run().end_time_s == pytest.approx(
        m * (c_f + c_b + 2 * a), rel=1e-9
    )
    _, chip, merged = _merged_plan(True, c_f, c_b, m, symmetric)
    trace = Simulator(chip, merged).run()
    assert trace.end_time_s == pytest.approx(m * (c_f + c_b) + (m + 1) * a, rel=1e-9)
    # no tile computes two ops at once
    rec = trace.intervals
    busy = rec.isin("category", ("forward", "backward"))
    tiles = rec.column("tile")[busy]
    for t in set(tiles.tolist()):
        start = rec.column("start_s")[busy][tiles == t]
        end = rec.column("end_s")[busy][tiles == t]
        order = start.argsort()
        assert (start[order][1:] >= end[order][:-1] - 1e-15).all()


def test_merged_1f1b_needs_expert_parallelism_and_interleaving():
    """Megatron-Core's checks for --overlap-moe-expert-parallel-comm: ep > 1, interleaved
    stages when pp > 1, no full recompute."""
    with pytest.raises(MappingError, match="needs ep > 1"):
        map_workload(
            _moe_experiment(tp=1, dp=8, micro_batch_size=1, moe_a2a_overlap=True),
            Chip.from_spec(cluster_spec(nodes=1, gpus=8)),
        )
    with pytest.raises(MappingError, match="interleaved stages"):
        map_workload(
            _moe_experiment(pp=2, dp=4, ep=4, micro_batch_size=1, moe_a2a_overlap=True),
            Chip.from_spec(cluster_spec(nodes=1, gpus=8)),
        )
    plan = map_workload(
        _moe_experiment(dp=8, ep=4, micro_batch_size=1, moe_a2a_overlap=True),
        Chip.from_spec(cluster_spec(nodes=1, gpus=8)),
    )
    assert plan.programs[0].merge_forward_backward


def test_deepep_dispatch_lowers_on_a_cluster_and_is_refused_elsewhere():
    """moe_dispatcher deepep: each EP group's communicator crosses to another node once per
    token and member (16 GPUs over 2 nodes, ep 16: 16 NIC flows, not 16 x 8), and a
    hardware without nodes (a wafer) refuses it."""
    from palmsim.hardware.collectives import node_reach

    hw = cluster_spec(nodes=2, gpus=8)
    exp = experiment(hw, TINY_MOE, seq=256, batch=16, dp=16, ep=8, micro_batch_size=1)
    exp16 = dataclasses.replace(
        exp,
        workload=dataclasses.replace(
            exp.workload, model=dataclasses.replace(TINY_MOE, num_experts=16)
        ),
        mapping=dataclasses.replace(exp.mapping, ep=16, moe_dispatcher="deepep"),
        run=RunSpec(symmetric_replicas=False),  # every member's flows, not one's images
    )
    chip = Chip.from_spec(hw)
    plan = map_workload(exp16, chip)
    (ep_comm,) = [c for c in plan.communicators if c.group == GroupKind.EP]
    crossing = [f for f in ep_comm.flows if chip.die_of(f.src) != chip.die_of(f.dst)]
    assert len(crossing) == 16
    # S/k·reach of the step's (n-1)/n·S: share reach·n/(k·(n-1))
    assert {round(f.share, 12) for f in crossing} == {
        round(node_reach(16, 2, 8) * 16 / (2 * 15), 12)
    }
    wafer = experiment(
        wafer_spec(), TINY_MOE, seq=256, batch=16, dp=8, ep=8, micro_batch_size=1,
        moe_dispatcher="deepep",
    )  # fmt: skip
    with pytest.raises(MappingError, match="needs a GPU cluster's nodes"):
        map_workload(wafer, Chip.from_spec(wafer.hardware))
