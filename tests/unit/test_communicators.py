"""Ring collective structure and when one data-parallel replica may stand in for all
(palmsim.hardware.collectives, palmsim.mapping.communicators)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from palmsim.api import load_experiment
from palmsim.hardware.chip import Chip
from palmsim.hardware.collectives import RING_STEPS, collective_steps, line_shares, ring_shares
from palmsim.mapping.mapper import map_workload

A100 = "hw_configs/dgx-a100-superpod.yaml"
H100 = "hw_configs/dgx-h100.yaml"
WAFER = "hw_configs/tx8-wafer.yaml"
T18B = "workloads/t-18b.yaml"
SMALL = ["model.num_hidden_layers=4", "training.global_batch_size=16"]


def _plan(hw: str, overrides: tuple[str, ...] = (), **mapping):
    exp = load_experiment(hw, T18B, overrides=[*SMALL, *overrides], mapping_flags=mapping)
    chip = Chip.from_spec(exp.hardware)
    return chip, map_workload(exp, chip)


def _channel(chip: Chip, src: str, dst: str) -> int:
    (index,) = [c.index for c in chip.channels if c.src == src and c.dst == dst]
    return index


def _node(t: int) -> int:
    return t // 4


def test_flat_ring_in_one_node_on_a_wafer_or_one_member_per_node() -> None:
    flat = [(0, 1, 1.0), (1, 2, 1.0), (2, 3, 1.0), (3, 0, 1.0)]
    assert [(s.src, s.dst, s.share) for s in ring_shares((0, 1, 2, 3), _node)] == flat
    assert [(s.src, s.dst, s.share) for s in ring_shares((0, 1, 2, 3))] == flat  # wafer
    across = ring_shares((0, 4, 8), _node)
    assert [(s.src, s.dst, s.share) for s in across] == [(0, 4, 1.0), (4, 8, 1.0), (8, 0, 1.0)]
    # unequal members per node: the flat ring
    assert all(s.share == 1.0 for s in ring_shares((0, 1, 4), _node))


def test_a_line_passes_every_piece_towards_both_ends() -> None:
    """The line algorithm over 0-1-2-3: the link i -> i+1 carries the pieces of members
    0..i, (i+1)/(n-1) of a ring edge, and i+1 -> i those of i+1..n-1; the end links a whole
    edge, the middle one 2/3 each way (hand-derived: a piece crosses every link between its
    owner and each other member once)."""
    shares = {(s.src, s.dst): s.share for s in line_shares((0, 1, 2, 3))}
    assert shares == pytest.approx(
        {(0, 1): 1 / 3, (1, 0): 1.0, (1, 2): 2 / 3, (2, 1): 2 / 3, (2, 3): 1.0, (3, 2): 1 / 3}
    )
    # two members: the flat ring's two flows
    assert [(s.src, s.dst, s.share) for s in line_shares((5, 6))] == [(5, 6, 1.0), (6, 5, 1.0)]
    # an all-gather's pieces on each link: of the members behind it, (n-1) x its share
    assert {(s.src, s.dst): s.sources for s in line_shares((0, 1, 2, 3))} == {
        (0, 1): 1,
        (1, 0): 3,
        (1, 2): 2,
        (2, 1): 2,
        (2, 3): 3,
        (3, 2): 1,
    }
    assert [s.sources for s in line_shares((5, 6))] == [1, 1]


def test_a_ring_edge_passes_on_the_pieces_of_all_members_but_its_receiver() -> None:
    """Over a ring of n, edge i -> i+1 carries in turn the pieces of the n-1 members other than
    i+1 (its n-1 steps), both rings of a bidirectional pair alike."""
    assert {s.sources for s in ring_shares((0, 1, 2, 3))} == {3}
    assert {s.sources for s in ring_shares((0, 1, 2, 3, 4), bidirectional=True)} == {4}
    assert {s.sources for s in ring_shares((0, 1))} == {1}


def test_one_ring_per_local_member_across_nodes() -> None:
    """Two nodes of 4 GPUs: each member sends 1/4 of a ring edge's bytes to its peer in the
    next node and 3/4 to the next member of its node; every member sends and receives one
    whole edge's worth, as in the flat ring, but the NICs share it four ways."""
    shares = ring_shares((0, 1, 2, 3, 4, 5, 6, 7), _node)
    assert sorted((s.src, s.dst, s.share) for s in shares) == sorted(
        [(t, (t + 1) % 4 + 4 * (t // 4), 0.75) for t in range(8)]
        + [(t, (t + 4) % 8, 0.25) for t in range(8)]
    )
    for t in range(8):
        assert sum(s.share for s in shares if s.src == t) == pytest.approx(1.0)
        assert sum(s.share for s in shares if s.dst == t) == pytest.approx(1.0)


def test_replicas_across_nodes_are_symmetric_and_dp_flows_use_the_own_nic() -> None:
    """TP=8 fills a node; the DP ring of each (stage, rank) crosses the fabric on every edge,
    so replica 0's GPU g sends out of its NIC and its flow comes in through its own NIC (the
    image of the receiver's), as the flow from its predecessor does in the full run. The
    model is dense, so each stage's TP rank 0 (GPUs 0 and 8) also stands for its node."""
    chip, plan = _plan(H100, pp=2, tp=8, dp=2, micro_batch_size=1)
    assert plan.simulated_replicas == 1 and plan.simulated_ranks == 1
    assert plan.simulated_tiles == (0, 8)
    assert len(plan.used_tiles) == 32 and plan.replication == 16.0
    dp = [c for c in plan.communicators if c.group == "dp"]
    assert sorted(c.members for c in dp) == [(0, 16), (8, 24)]
    for comm in dp:
        (flow,) = comm.flows
        gpu = flow.src
        assert comm.num_arriving == 1
        assert gpu == comm.members[0] and gpu in plan.simulated_tiles
        assert flow.channels == (
            _channel(chip, f"tile:{gpu}", "fabric"),
            _channel(chip, "fabric", f"tile:{gpu}"),
        )
        assert flow.share == 1.0


def test_tp_rank_zero_keeps_its_ring_edge_on_its_own_nvlinks() -> None:
    """TP=8 on one node: edge k -> k+1 of the ring leaves over GPU k's NVLink to the switch
    and enters over k+1's, the images of GPU 0's two. Rank 0 keeps its edge 0 -> 1 re-routed
    onto its own in-link, whole (share 1), and its collectives wait for it alone."""
    chip, plan = _plan(H100, pp=2, tp=8, dp=2, micro_batch_size=1)
    tp = [c for c in plan.communicators if c.group == "tp"]
    assert [c.members for c in tp] == [tuple(range(8)), tuple(range(8, 16))]
    for comm, node in zip(tp, (0, 1), strict=True):
        gpu = comm.members[0]
        (flow,) = comm.flows
        assert comm.num_arriving == 1 and (flow.src, flow.dst, flow.share) == (gpu, gpu + 1, 1.0)
        assert flow.channels == (
            _channel(chip, f"tile:{gpu}", f"switch:{node}"),
            _channel(chip, f"switch:{node}", f"tile:{gpu}"),
        )


def test_dp_ring_over_nodes_with_several_gpus_each_is_symmetric() -> None:
    """DP=16 over two 8-GPU nodes: one ring per local GPU, so every GPU sends 7/8 of a ring
    edge over NVLink and 1/8 over its NIC, and receives the same; replica 0 (GPU 0) stands
    for all and sends both shares onto its own channels."""
    chip, plan = _plan(A100, pp=1, tp=1, dp=16, micro_batch_size=1)
    assert plan.simulated_replicas == 1 and plan.simulated_tiles == (0,)
    (comm,) = plan.communicators
    assert comm.num_arriving == 1
    assert sorted((f.channels, f.share) for f in comm.flows) == sorted(
        [
            ((_channel(chip, "tile:0", "switch:0"), _channel(chip, "switch:0", "tile:0")), 7 / 8),
            ((_channel(chip, "tile:0", "fabric"), _channel(chip, "fabric", "tile:0")), 1 / 8),
        ]
    )


def test_pipeline_sends_of_different_kinds_break_symmetry() -> None:
    """PP=3, TP=4, DP=2 on 8-GPU nodes: replica 0's stage 0 -> 1 send stays inside node 0
    (NVLink) while replica 1's crosses nodes (NICs), so the replicas differ and both run."""
    _, plan = _plan(
        A100,
        ("model.num_hidden_layers=3", "training.global_batch_size=6"),
        pp=3,
        tp=4,
        dp=2,
        micro_batch_size=1,
    )
    nodes = [[{t // 8 for t in st} for st in rep] for rep in plan.stage_tiles]
    same_node = [[a == b for a, b in pairwise(rep)] for rep in nodes]
    assert same_node[0] != same_node[1]  # the premise: the replicas' sends differ in kind
    assert plan.simulated_replicas == 2
    # within each replica the ranks of a stage send alike: rank 0 stands for them
    assert plan.simulated_ranks == 1
    assert all(
        c.num_arriving == (1 if c.group == "tp" else len(c.members)) for c in plan.communicators
    )


def test_one_context_parallel_group_stands_for_the_others_when_the_blocks_are_alike() -> None:
    """TP 4 x CP 2 x DP 2 on 8-GPU nodes: each CP group (two replicas) fills one node, so
    block 0 (GPUs 0-7) stands for block 1; its CP rings are kept, and each DP communicator
    waits for block 0's two members. With TP 3 the blocks of 6 GPUs straddle nodes
    differently (block 0 in node 0, block 1's KV ring crossing into node 1): all run."""
    _, plan = _plan(H100, pp=1, tp=4, cp=2, dp=2, micro_batch_size=1)
    # TP rank 0 of the two replicas of block 0 (GPUs 0 and 4) stands for all 16
    assert plan.simulated_replicas == 2 and plan.simulated_ranks == 1
    assert plan.replication == 8.0 and plan.simulated_tiles == (0, 4)
    cp_groups = [c.members for c in plan.communicators if c.group == "cp"]
    assert cp_groups == [(0, 4)]
    dp = [c for c in plan.communicators if c.group == "dp"]
    assert [c.members for c in dp] == [(0, 4, 8, 12)]
    assert all(c.num_arriving == 2 and {f.src for f in c.flows} <= {0, 4} for c in dp)
    _, straddling = _plan(H100, pp=1, tp=3, cp=2, dp=2, micro_batch_size=1)
    assert straddling.simulated_replicas == 4 and straddling.simulated_ranks == 3


def test_wafer_and_opt_out_simulate_everything_and_one_replica_still_reduces_ranks() -> None:
    _, wafer = _plan(WAFER, pp=2, tp=4, dp=2, micro_batch_size=1)
    assert wafer.simulated_replicas == 2
    assert wafer.simulated_ranks == 4 and wafer.replication == 1.0
    _, full = _plan(H100, ("run.symmetric_replicas=false",), pp=2, tp=8, dp=2, micro_batch_size=1)
    assert full.simulated_replicas == 2 and full.simulated_ranks == 8
    assert full.replication == 1.0
    _, single = _plan(H100, pp=2, tp=8, dp=1, micro_batch_size=1)
    assert single.simulated_replicas == 1 and single.simulated_ranks == 1
    assert single.simulated_tiles == (0, 8) and single.replication == 8.0


def test_exclusive_communicators_are_those_no_other_traffic_can_touch() -> None:
    """H100, PP=2 x TP=8 x DP=2: each TP group is a node's NVLinks, which no pipeline send
    (over the NICs) and no HBM traffic crosses: exclusive. The DP flows share the NICs with
    the pipeline sends: not. On a wafer the DRAM traffic crosses the NoC: nothing is."""
    _, plan = _plan(H100, pp=2, tp=8, dp=2, micro_batch_size=1)
    tp = [c for c in plan.communicators if len(c.members) == 8]
    dp = [c for c in plan.communicators if len(c.members) == 2]
    assert len(tp) == 2 and len(dp) == 2  # replica 0's TP groups; rank 0's DP groups
    assert all(c.exclusive for c in tp) and not any(c.exclusive for c in dp)
    _, flat = _plan(H100, pp=1, tp=8, dp=4, micro_batch_size=1)
    assert all(c.exclusive for c in flat.communicators)  # no pipeline: the NICs are DP's own
    _, wafer = _plan(WAFER, pp=2, tp=4, dp=2, micro_batch_size=1)
    assert wafer.communicators and not any(c.exclusive for c in wafer.communicators)


@pytest.mark.parametrize(
    ("kind", "n", "line", "ring"),
    [
        # (latency steps, reduce-scatter steps) over a line or a one-way ring, and over a
        # ring fabric: ceil((n-1)/2) targets forward, the rest backward (ccl_common.cpp)
        ("reducescatter", 8, (7, 7), (4, 4)),
        ("reducescatter", 4, (3, 3), (2, 2)),
        ("reducescatter", 5, (4, 4), (2, 2)),
        ("allgather", 8, (7, 0), (7, 0)),  # each chip still takes in n - 1 pieces
        ("allreduce", 8, (14, 7), (4 + 7, 4)),  # a reduce-scatter's chain, then a gather
        ("allreduce", 3, (4, 2), (1 + 2, 1)),
        ("alltoall", 8, (7, 0), (7, 0)),  # not a ring algorithm: its rounds as they were
    ],
)
def test_a_ring_fabrics_reduce_scatter_is_a_chain_of_half_the_ring(kind, n, line, ring):
    """A reduce-scatter's steps all reduce, an all-reduce's first half. A ring fabric's
    reduce-scatter passes its partial sums ceil((n-1)/2) chips one way and the rest the
    other, so its chain is that long; an all-gather keeps the ring's n - 1 steps and an
    all-reduce is one of each."""
    steps = RING_STEPS[kind](n)
    assert collective_steps(kind, steps, ring_fabric=False) == line
    assert collective_steps(kind, steps, ring_fabric=True) == ring
