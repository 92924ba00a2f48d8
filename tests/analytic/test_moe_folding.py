"""MoE parallel folding (Megatron-Core --expert-tensor-parallel-size; Liu et al. 2025,
arXiv 2504.14960): the experts' ETP x EP x EDP groups over a stage's tp·cp·dp ranks, checked
against the rank arithmetic and the closed forms by hand.

The stage-local rank is ``j = k + tp·r`` (TP rank k, replica r); the experts' rank order is
ETP fastest, then EP, then EDP (``parallel_state``: ``expert_decoder_rank_generator``).
"""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.config.loader import load_mapping
from palmsim.engine.simulator import Simulator
from palmsim.errors import ConfigError, MappingError
from palmsim.guard import plan_estimate
from palmsim.hardware.chip import Chip
from palmsim.mapping.experts import split_params, stage_state_bytes
from palmsim.mapping.folding import expert_data_parallel_size, expert_group, expert_groups
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import (
    CollectiveStep,
    GradBucketReady,
    GroupKind,
)
from palmsim.validate import NotRun, read_training_run
from palmsim.workload.builders import layer_blocks
from tests.analytic.test_moe_mapping import TINY_MOE, one_alltoall_plan
from tests.conftest import cluster_spec, experiment

# TINY_MOE: h = 256, E = 8 experts of f_e = 128 (SwiGLU: 3 matrices), top-2, 2 layers.
H, E, F_E, K = 256, 8, 128, 2


def _folded(**mapping):
    mapping.setdefault("micro_batch_size", 1)
    return experiment(cluster_spec(nodes=1, gpus=8), TINY_MOE, seq=256, batch=8, **mapping)


def test_expert_groups_follow_megatrons_rank_order():
    """tp 2, 4 replicas (8 ranks), ETP 1, EP 4: EP groups are ranks {0..3} and {4..7}, EDP
    groups {j, j + 4}, ETP groups single ranks; EDP = 8/(1·4) = 2."""
    assert expert_groups("ep", 8, 1, 4) == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert expert_groups("edp", 8, 1, 4) == ((0, 4), (1, 5), (2, 6), (3, 7))
    assert expert_group("etp", 5, 8, 1, 4) == (5,)
    assert expert_data_parallel_size(2, 4, 1, 4) == 2
    # ETP 2, EP 2 over 8 ranks: j = etp-rank + 2·ep-rank + 4·edp-rank
    assert expert_groups("etp", 8, 2, 2) == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert expert_groups("ep", 8, 2, 2) == ((0, 2), (1, 3), (4, 6), (5, 7))
    assert expert_groups("edp", 8, 2, 2) == ((0, 4), (1, 5), (2, 6), (3, 7))
    # Qwen3-235B on H100 (tp 2, dp 16, ETP 1, EP 32): one EP group of all 32 ranks, EDP 1
    assert expert_groups("ep", 32, 1, 32) == (tuple(range(32)),)
    assert expert_data_parallel_size(2, 16, 1, 32) == 1


def test_the_plan_maps_folded_groups_to_tiles():
    """tp 2, dp 4, ETP 1, EP 4 on one node: the plan's EP group of replica 0, rank 0 holds
    both TP ranks of replicas 0 and 1; its EDP group is (replica 0, rank 0) and (replica 2,
    rank 0)."""
    exp = _folded(tp=2, dp=4, ep=4, expert_tp=1, sequence_parallel=True)
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    tile = {(r, k): plan.stage_tiles[r][0][k] for r in range(4) for k in range(2)}
    groups = plan.groups(0, 0, 0)
    assert groups[GroupKind.EP] == (tile[0, 0], tile[0, 1], tile[1, 0], tile[1, 1])
    assert groups[GroupKind.EDP] == (tile[0, 0], tile[2, 0])
    assert groups[GroupKind.ETP] == (tile[0, 0],)
    assert groups[GroupKind.TP] == (tile[0, 0], tile[0, 1])  # the attention's is unchanged


def test_per_gpu_expert_parameters_under_folding():
    """A tile holds E/ep experts at f_e/etp width: ETP 1, EP 4 -> 2 experts of 3·h·f_e;
    ETP = tp = 2 (unfolded) -> 2 experts of 3·h·f_e/2. The dense part is the same."""
    training = _folded(tp=2, dp=4, ep=4).workload.training
    folded = layer_blocks(TINY_MOE, training, 1, 2, sequence_parallel=True, layer=0, ep=4, etp=1)
    unfolded = layer_blocks(TINY_MOE, training, 1, 2, sequence_parallel=True, layer=0, ep=4)
    dense_f, expert_f = split_params(folded)
    dense_u, expert_u = split_params(unfolded)
    assert expert_f == (E // 4) * 3 * H * F_E
    assert expert_u == (E // 4) * 3 * H * F_E / 2
    assert dense_f == dense_u


def test_folded_alltoall_bytes_per_rank():
    """A rank routes N·etp/tp of its replica's N = b·s tokens: the dispatch and combine
    buffers are e·h·k·N·etp/tp = 2 B · 256 · 2 · 256·1/2 = 131072 B (uniform dropless
    routing), half of the unfolded e·h·k·N; and each rank sends 1/ep of it to each other
    rank of its EP group, which holds both TP ranks of two replicas."""
    exp = _folded(tp=2, dp=4, ep=4, expert_tp=1, sequence_parallel=True)
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    steps = plan.programs[0].forward + plan.programs[0].backward
    a2a = [s for s in steps if isinstance(s, CollectiveStep) and s.group == GroupKind.EP]
    n_route = 256 * 1 // 2
    assert {s.size_bytes for s in a2a} == {2 * H * K * n_route}
    assert len(a2a) == 2 * 2 * 2  # 2 layers x (dispatch, combine) x (forward, backward)
    unfolded = _folded(tp=2, dp=4, ep=4, sequence_parallel=True)
    plan_u = map_workload(unfolded, Chip.from_spec(unfolded.hardware))
    a2a_u = [
        s
        for s in plan_u.programs[0].forward
        if isinstance(s, CollectiveStep) and s.group == GroupKind.EP
    ]
    assert {s.size_bytes for s in a2a_u} == {2 * H * K * 256}
    (comm,) = [
        c
        for c in plan.communicators
        if c.group == GroupKind.EP and plan.stage_tiles[0][0][0] in c.members
    ]
    first = comm.members[0]
    sent = [f for f in comm.flows if f.src == first]
    assert sorted(f.dst for f in sent) == sorted(comm.members[1:])
    # each flow carries its share of the (ep-1)/ep·S step bytes: S/ep to each peer
    size = 2 * H * K * n_route
    for f in sent:
        assert f.share * (4 - 1) / 4 * size == pytest.approx(size / 4, rel=1e-12)


def test_expert_gradients_reduce_over_the_folded_edp_group():
    """ETP 1, EP 4 over tp 2 x dp 4: EDP = 2, so each MoE layer's expert gradients (2
    experts of 3·h·f_e, fp16) form a bucket over the EDP group; unfolded (ETP = tp, EP 4 of
    dp 4) EDP is 1 and there is none."""
    exp = _folded(tp=2, dp=4, ep=4, expert_tp=1, sequence_parallel=True)
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    buckets = [s for s in plan.programs[0].backward if isinstance(s, GradBucketReady)]
    edp = [b for b in buckets if b.group == GroupKind.EDP]
    assert [b.size_bytes for b in edp] == [2 * 2 * 3 * H * F_E] * 2
    unfolded = _folded(tp=2, dp=4, ep=4, sequence_parallel=True)
    plan_u = map_workload(unfolded, Chip.from_spec(unfolded.hardware))
    backward_u = plan_u.programs[0].backward
    assert not [s for s in backward_u if isinstance(s, GradBucketReady) and s.group == "edp"]


def test_zero_shards_the_experts_over_the_edp_group():
    """ZeRO-1: the optimizer state of the experts is sharded over EDP = tp·dp/(etp·ep):
    tp 2, dp 16, ETP 1, EP 32 -> 1 (no sharding); ETP 1, EP 8 -> 4."""
    for ep, edp in ((32, 1), (8, 4)):
        state = stage_state_bytes(
            0.0, 1e6, dtype_bytes=2, optimizer_bytes_per_param=12, dp=16, ep=ep, zero=1,
            tp=2, etp=1,
        )  # fmt: skip
        assert state.optimizer == pytest.approx(12 * 1e6 / edp, rel=1e-12)


def test_an_etp_group_inside_the_tp_group_reduces_the_experts_and_runs():
    """tp 4, ETP 2, EP 2, dp 2 (8 ranks): the routed experts' partial sums are reduced over
    the ETP group (reduce-scatter + all-gather with sequence parallelism) of e·T·h bytes,
    T = N·etp/tp·k = 256·2/4·2 slots; the run finishes."""
    exp = _folded(tp=4, dp=2, ep=2, expert_tp=2, sequence_parallel=True)
    chip = Chip.from_spec(exp.hardware)
    plan = map_workload(exp, chip)
    etp_steps = [
        s
        for s in plan.programs[0].forward
        if isinstance(s, CollectiveStep) and s.group == GroupKind.ETP
    ]
    assert {s.size_bytes for s in etp_steps} == {2 * (256 * 2 // 4 * K) * H}
    assert len(etp_steps) == 2 * 2  # 2 layers x (reduce-scatter, all-gather)
    assert any(c.group == GroupKind.ETP and len(c.members) == 2 for c in plan.communicators)
    assert Simulator(chip, plan, exp.run).run().end_time_s > 0


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"tp": 2, "dp": 4, "ep": 4, "expert_tp": 4, "sequence_parallel": True},
            r"expert_tp=4 does not divide tp=2|expert_tp·ep = 4·4 = 16 does not divide",
        ),
        ({"tp": 2, "dp": 2, "ep": 8, "expert_tp": 1, "sequence_parallel": True}, "8 does not"),
        ({"tp": 2, "dp": 4, "ep": 4, "expert_tp": 1}, "needs sequence_parallel"),
        ({"tp": 4, "dp": 2, "ep": 2, "expert_tp": 3, "sequence_parallel": True}, "expert_tp"),
        (
            {"tp": 2, "dp": 2, "expert_tp": 1, "sequence_parallel": True, "zero": 3},
            "ZeRO-3's weight gathers of routed experts",
        ),
    ],
)
def test_a_bad_expert_tp_is_a_mapping_error(mapping, message):
    exp = _folded(**mapping)
    with pytest.raises(MappingError, match=message):
        map_workload(exp, Chip.from_spec(exp.hardware))


def test_the_loader_takes_expert_tp_and_refuses_zero():
    assert load_mapping([("m.yaml", {"expert_tp": 1})]).expert_tp == 1
    assert load_mapping([("m.yaml", {})]).expert_tp is None
    with pytest.raises(ConfigError, match=r"expert_tp"):
        load_mapping([("m.yaml", {"expert_tp": 0})])


def _qwen_case(**system):
    return {
        "id": "qwen3_235b",
        "model": {
            "hidden": 4096, "heads": 64, "kv_heads": 4, "head_dim": 128, "layers": 94,
            "ffn": 12288, "moe_ffn": 1536, "num_experts": 128, "top_k": 8, "vocab": 151936,
            "seq_len": 4096, "global_batch": 2048, "micro_batch": 1,
        },
        "system": {
            "gpu": "H100-SXM5-80GB", "num_gpus": 256, "tp": 2, "pp": 8, "dp": 16, "ep": 32,
            **system,
        },
        "training": {"precision": "bf16"},
        "measured": {"tokens_per_s_per_gpu": 1.0},
    }  # fmt: skip


def test_validate_reads_etp_and_defaults_to_tp():
    run = read_training_run(_qwen_case(etp=1), "x.yaml")
    assert run is not None and run.flags["expert_tp"] == 1
    run = read_training_run(_qwen_case(expert_tensor_parallel=1), "x.yaml")
    assert run is not None and run.flags["expert_tp"] == 1
    # unstated: Megatron-Core's default ETP = tp = 2, and 2·32 does not divide 2·16
    with pytest.raises(NotRun, match=r"expert_tp·ep = 2·32 does not divide tp·dp·cp = 32"):
        read_training_run(_qwen_case(), "x.yaml")
    with pytest.raises(NotRun, match="disagree"):
        read_training_run(_qwen_case(etp=1, expert_tensor_parallel=2), "x.yaml")


def test_unfolded_default_is_unchanged():
    """expert_tp unset and expert_tp = tp give the same plan."""
    exp = _folded(tp=2, dp=4, ep=4, sequence_parallel=True)
    same = dataclasses.replace(exp, mapping=dataclasses.replace(exp.mapping, expert_tp=2))
    chip = Chip.from_spec(exp.hardware)
    a, b = map_workload(exp, chip), map_workload(same, chip)
    assert a.programs == b.programs
    assert a.communicators == b.communicators


@pytest.mark.parametrize(("symmetric", "tiles"), [(False, 8), (True, 1)])
def test_the_guard_counts_an_alltoalls_flows(symmetric: bool, tiles: int):
    """An all-to-all of n = 8 members records n - 1 = 7 flows per member (pairwise
    exchange): a plan of one a2a step per forward on 8 one-tile replicas costs per simulated
    tile (1 + 7) + 2 (the forward pass) + 2 + 2 (recompute and backward, empty) = 14 records;
    8 tiles, or 1 when one replica stands for the 8."""
    _, chip, plan = one_alltoall_plan(1e6, symmetric)
    assert plan_estimate(plan, chip).records == tiles * 14


def test_etp_below_tp_without_ep_reduces_expert_gradients_over_the_whole_stage():
    """ep 1, ETP 1, tp 2, dp 2: every tile holds all E experts at full width and routes
    N/2 tokens; EDP = 2·2/(1·1) = 4 ranks reduce the experts' gradients; the run finishes."""
    exp = _folded(tp=2, dp=2, ep=1, expert_tp=1, sequence_parallel=True)
    chip = Chip.from_spec(exp.hardware)
    plan = map_workload(exp, chip)
    assert len(plan.groups(0, 0, 0)[GroupKind.EDP]) == 4
    edp = [
        b
        for b in plan.programs[0].backward
        if isinstance(b, GradBucketReady) and b.group == GroupKind.EDP
    ]
    assert [b.size_bytes for b in edp] == [2 * E * 3 * H * F_E] * 2
    assert Simulator(chip, plan, exp.run).run().end_time_s > 0
