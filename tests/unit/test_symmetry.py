"""When one data-parallel replica may stand in for all (palmsim.mapping.symmetry)."""

from __future__ import annotations

from itertools import pairwise

from palmsim.api import load_experiment
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.symmetry import symmetric_dp_ring_channels

A100 = "hw_configs/dgx-a100-superpod.yaml"
H100 = "hw_configs/dgx-h100.yaml"
WAFER = "hw_configs/tx8-wafer.yaml"
T18B = "workloads/t-18b.yaml"
SMALL = ["model.num_hidden_layers=4", "training.global_batch_size=16"]


def _plan(hw: str, overrides: list[str] = (), **mapping):  # type: ignore[assignment]
    exp = load_experiment(hw, T18B, overrides=[*SMALL, *overrides], mapping_flags=mapping)
    chip = Chip.from_spec(exp.hardware)
    return chip, map_workload(exp, chip)


def _channel(chip: Chip, src: str, dst: str) -> int:
    (index,) = [c.index for c in chip.channels if c.src == src and c.dst == dst]
    return index


def test_replicas_across_nodes_are_symmetric_and_ring_flows_use_the_own_nic() -> None:
    """TP=8 fills a node; the DP ring of each (stage, rank) crosses the fabric on every edge,
    so replica 0's GPU g sends out of its NIC and its flow comes in through its own NIC (the
    image of the successor's), as the flow from its predecessor does in the full run."""
    chip, plan = _plan(H100, pp=2, tp=8, dp=2, micro_batch_size=1)
    assert plan.simulated_replicas == 1
    assert plan.simulated_tiles == tuple(t for st in plan.stage_tiles[0] for t in st)
    assert len(plan.simulated_tiles) == 16 and len(plan.used_tiles) == 32
    rings = dict(plan.dp_ring_channels)
    assert sorted(rings) == list(plan.simulated_tiles)
    for gpu, channels in rings.items():
        assert channels == (
            _channel(chip, f"tile:{gpu}", "fabric"),
            _channel(chip, "fabric", f"tile:{gpu}"),
        )


def test_ring_with_nvlink_and_nic_edges_is_not_symmetric() -> None:
    """DP=16 over two 8-GPU nodes: 14 ring edges are NVLink, 2 cross the fabric, so the
    replicas differ and every GPU is simulated."""
    chip, plan = _plan(A100, pp=1, tp=1, dp=16, micro_batch_size=1)
    assert plan.dp_ring_channels == ()
    assert plan.simulated_replicas == 16
    assert plan.simulated_tiles == plan.used_tiles
    assert symmetric_dp_ring_channels(chip, plan.stage_tiles, num_virtual_stages=1) is None


def test_replicas_inside_one_node_are_symmetric_over_nvlink() -> None:
    """TP=2 x DP=4 in one node: every DP ring edge is NVLink, the image is the GPU's own."""
    chip, plan = _plan(H100, pp=1, tp=2, dp=4, micro_batch_size=1)
    assert plan.simulated_replicas == 1
    for gpu, channels in plan.dp_ring_channels:
        assert channels == (
            _channel(chip, f"tile:{gpu}", "switch:0"),
            _channel(chip, "switch:0", f"tile:{gpu}"),
        )


def test_pipeline_sends_of_different_kinds_break_symmetry() -> None:
    """PP=3, TP=4, DP=2 on 8-GPU nodes: replica 0's stage 0 -> 1 send stays inside node 0
    (NVLink) while replica 1's crosses nodes (NICs), so the replicas differ and both run."""
    _, plan = _plan(
        A100,
        ["model.num_hidden_layers=3", "training.global_batch_size=6"],
        pp=3,
        tp=4,
        dp=2,
        micro_batch_size=1,
    )
    nodes = [[{t // 8 for t in st} for st in rep] for rep in plan.stage_tiles]
    same_node = [[a == b for a, b in pairwise(rep)] for rep in nodes]
    assert same_node[0] != same_node[1]  # the premise: the replicas' sends differ in kind
    assert plan.simulated_replicas == 2


def test_wafer_and_single_replica_and_opt_out_simulate_everything() -> None:
    _, wafer = _plan(WAFER, pp=2, tp=4, dp=2, micro_batch_size=1)
    assert wafer.simulated_replicas == 2
    _, single = _plan(H100, pp=2, tp=8, dp=1, micro_batch_size=1)
    assert single.simulated_replicas == 1 and single.dp_ring_channels == ()
    _, full = _plan(H100, ["run.symmetric_replicas=false"], pp=2, tp=8, dp=2, micro_batch_size=1)
    assert full.simulated_replicas == 2
