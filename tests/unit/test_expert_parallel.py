"""Expert parallelism: EP and expert-data-parallel groups, the model state per tile under
EP and ZeRO, the layer's steps with the all-to-alls, and seeded routing per layer."""

from __future__ import annotations

import numpy as np
import pytest

from palmsim.config.loader import load_workload
from palmsim.config.specs import TrainingSpec
from palmsim.errors import MappingError
from palmsim.mapping.experts import (
    check_ep,
    ep_alltoall,
    layer_routings,
    split_params,
    stage_state_bytes,
)
from palmsim.mapping.folding import expert_groups
from palmsim.mapping.lower import Unit
from palmsim.mapping.plan import CollectiveStep
from palmsim.workload.builders import layer_blocks

MIXTRAL = load_workload("workloads/mixtral-8x7b.yaml")[0].model
# 4 replicas x 2 stages x TP 2: replica r, stage s, rank k -> tile 4r + 2s + k
STAGE_TILES = tuple(
    tuple(tuple(4 * r + 2 * s + k for k in range(2)) for s in range(2)) for r in range(4)
)


def _tile_groups(kind, ep):
    """Every ``kind`` group of STAGE_TILES with expert_tp = tp = 2, as tiles, sorted."""
    groups = []
    for s in range(2):
        for g in expert_groups(kind, 2 * 4, 2, ep):
            groups.append(tuple(STAGE_TILES[j // 2][s][j % 2] for j in g))
    return tuple(sorted(groups))


def test_ep_groups_are_consecutive_replicas_of_one_stage_and_rank():
    assert _tile_groups("ep", 2) == (
        (0, 4), (1, 5), (2, 6), (3, 7), (8, 12), (9, 13), (10, 14), (11, 15),
    )  # fmt: skip
    assert _tile_groups("edp", 2) == (
        (0, 8), (1, 9), (2, 10), (3, 11), (4, 12), (5, 13), (6, 14), (7, 15),
    )  # fmt: skip


def test_ep_must_divide_dp_and_the_experts():
    with pytest.raises(MappingError, match=r"does not divide dp=4.*make --dp \(times --cp\) a"):
        check_ep(MIXTRAL, 4, 8, "contiguous")
    with pytest.raises(MappingError, match="num_experts=8"):
        check_ep(MIXTRAL, 6, 3, "contiguous")
    check_ep(MIXTRAL, 16, 8, "balanced")


@pytest.mark.parametrize("zero", [0, 1, 3])
def test_state_per_tile_shards_dense_over_dp_and_experts_over_dp_over_ep(zero):
    """One Mixtral layer at tp = 1, dp = 16, ep = 8: a tile holds 1 of 8 experts
    (3·h·f = 176.2 M) and the dense 41.9 M + norms + router; bf16, Adam 12 B of state."""
    training = TrainingSpec(seq_len=4096, global_batch_size=16)
    h, f = 4096, 14336
    dense, expert = split_params(layer_blocks(MIXTRAL, training, 1, 1, layer=0, ep=8))
    assert expert == 3 * h * f
    assert dense == h * (4096 + 2 * 1024) + 4096 * h + 2 * h + h * 8
    state = stage_state_bytes(
        dense, expert, dtype_bytes=2, optimizer_bytes_per_param=12, dp=16, ep=8, zero=zero
    )
    shard = dense / 16 + expert / 2
    assert state.optimizer == pytest.approx(12 * (shard if zero >= 1 else dense + expert))
    assert state.weights == pytest.approx(2 * (shard if zero >= 3 else dense + expert))


def test_ep_alltoall_is_an_ep_group_step_with_its_identity():
    unit = Unit("L3", 3, ())
    (step,) = ep_alltoall(1e6, unit, "moe_route", ep=4)
    assert isinstance(step, CollectiveStep)
    assert (step.kind, step.group, step.size_bytes) == ("alltoall", "ep", 1e6)
    assert (step.layer, step.block, step.label) == (3, "moe_route", "L3.moe_route.a2a")
    assert ep_alltoall(1e6, unit, "moe_route", ep=1) == ()
    assert ep_alltoall(0.0, unit, "moe_route", ep=4) == ()


def test_routing_is_seeded_per_layer():
    training = TrainingSpec(
        seq_len=1024, global_batch_size=8, expert_load="dirichlet", moe_capacity_factor=1.0
    )

    def draw(seed, placement="contiguous"):
        return layer_routings(MIXTRAL, training, 1, 4, placement, np.random.default_rng(seed))

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    assert len(draw(1)) == 32 and all(r is not None for r in draw(1))
    dropped = sum(r.dropped_slots for r in draw(1))
    assert dropped > 0
    balanced = draw(1, "balanced")
    assert sum(r.max_received_slots for r in balanced) <= sum(r.max_received_slots for r in draw(1))
