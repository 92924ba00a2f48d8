"""Expert parallelism (EP) composed with TP, PP and DP: the lowering as pure functions.

Megatron-Core's layout (``--expert-model-parallel-size``; Megatron-Core MoE docs, "Expert
Parallelism"): the ``dp`` data-parallel replicas of a stage are cut into groups of ``ep``
consecutive replicas; the tiles of one EP group that hold the same stage and TP rank share
that rank's slice of the ``E`` experts, ``E/ep`` each, and exchange tokens by all-to-all. So:

- **Groups** (:func:`ep_groups`): for stage ``s``, TP rank ``k`` and EP group ``g``, the
  tiles ``stage_tiles[g·ep + i][s][k]``, ``i = 0..ep-1``, in rank order. ``ep`` divides
  ``dp`` and ``E``; EP reuses the DP replicas' tiles, it needs no tiles of its own.
- **Gradients** (:func:`expert_data_parallel_groups`): dense weights (attention, norms,
  router, shared experts, embedding, head) are replicated over all ``dp`` replicas and
  reduced over the DP group; an expert's weights are replicated over the ``dp/ep`` replicas
  that hold the same expert (same position ``i`` in their EP group) and reduced over that
  *expert-data-parallel* group.
- **Memory** (:func:`stage_state_bytes`): per tile, the dense parameters plus ``E/ep`` of the
  experts (:func:`palmsim.workload.builders.layer_blocks` with ``ep``); ZeRO shards the dense
  state over ``dp`` and the expert state over ``dp/ep``.
- **Steps** (:func:`moe_layer_steps`): each MoE block's compute, its TP all-reduce, and the
  all-to-all over the EP group after the forward (dispatch after ``moe_route``, combine after
  ``moe_experts``) and after the backward (their reverses), on the EP group's flows
  (:func:`palmsim.hardware.collectives.collective_transfers` with ``alltoall``).
- **Routing** (:func:`layer_routings`): each MoE layer's tokens per expert are drawn once from
  the run's generator, in layer order (:func:`palmsim.workload.moe.route`), so a run is
  byte-identical for the same seed; every micro-batch of the iteration routes as its layer
  does. All EP ranks run the busiest rank's expert work (the combine all-to-all waits for
  it), and the capacity factor's dropped slots are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from palmsim.config.specs import ModelSpec, TrainingSpec
from palmsim.errors import MappingError
from palmsim.mapping.plan import CollectiveStep, ComputeStep, Step
from palmsim.workload.builders import Block
from palmsim.workload.moe import EXPERT_PLACEMENTS, Routing, route

__all__ = [
    "StateBytes",
    "check_ep",
    "ep_groups",
    "expert_data_parallel_groups",
    "layer_routings",
    "moe_layer_steps",
    "split_params",
    "stage_state_bytes",
]

StageTiles = tuple[tuple[tuple[int, ...], ...], ...]

#: Op names of the routed experts' weights (reduced over the expert-data-parallel group).
EXPERT_OPS = ("experts_fc1", "experts_fc2")


def check_ep(model: ModelSpec, dp: int, ep: int, placement: str) -> None:
    """Raise MappingError unless ``ep`` can split the model's experts over the DP replicas."""
    if ep == 1:
        return
    if not model.is_moe:
        raise MappingError(f"ep={ep}: model {model.name!r} has no experts (num_experts = 0)")
    if model.num_experts % ep:
        raise MappingError(f"ep={ep} does not divide num_experts={model.num_experts}")
    if dp % ep:
        raise MappingError(
            f"ep={ep} does not divide dp={dp}: expert parallelism groups data-parallel replicas"
        )
    if placement not in EXPERT_PLACEMENTS:
        raise MappingError(f"expert placement {placement!r}: one of {EXPERT_PLACEMENTS}")


def ep_groups(stage_tiles: StageTiles, ep: int) -> tuple[tuple[int, ...], ...]:
    """Every EP group's tiles, in rank order (module docstring, "Groups")."""
    dp = len(stage_tiles)
    assert dp % ep == 0, (dp, ep)
    groups = []
    for g in range(dp // ep):
        members = stage_tiles[g * ep : (g + 1) * ep]
        for s, tiles in enumerate(members[0]):
            for k in range(len(tiles)):
                groups.append(tuple(replica[s][k] for replica in members))
    return tuple(groups)


def expert_data_parallel_groups(stage_tiles: StageTiles, ep: int) -> tuple[tuple[int, ...], ...]:
    """The groups that reduce an expert's gradients: for each stage, TP rank and position
    ``i`` in the EP group, the tiles of replicas ``i, i + ep, i + 2·ep, ...``."""
    dp = len(stage_tiles)
    assert dp % ep == 0, (dp, ep)
    groups = []
    for i in range(ep):
        replicas = stage_tiles[i::ep]
        for s, tiles in enumerate(replicas[0]):
            for k in range(len(tiles)):
                groups.append(tuple(replica[s][k] for replica in replicas))
    return tuple(groups)


def split_params(blocks: Sequence[Block]) -> tuple[float, float]:
    """``(dense, expert)`` parameters of ``blocks`` on one tile [count]."""
    expert = sum(op.params for b in blocks for op in b.ops if op.name in EXPERT_OPS)
    total = sum(b.params for b in blocks)
    return total - expert, expert


@dataclass(frozen=True, slots=True)
class StateBytes:
    """Weight, gradient and optimizer bytes one tile holds [B]."""

    weights: float
    gradients: float
    optimizer: float


def stage_state_bytes(
    dense_params: float,
    expert_params: float,
    *,
    dtype_bytes: int,
    optimizer_bytes_per_param: int,
    dp: int,
    ep: int,
    zero: int,
) -> StateBytes:
    """A tile's model state under EP and ZeRO (module docstring, "Memory").

    ZeRO stage 1 shards the optimizer state, 2 also the gradients, 3 also the weights
    (Rajbhandari et al. SC20): the dense part over the ``dp`` replicas, the expert part over
    the ``dp/ep`` replicas that hold the same experts. (ZeRO-3's gathered working copy of one
    unit is the caller's, as for a dense model.)
    """
    expert_dp = dp // ep

    def sharded(stage: int) -> float:
        if zero < stage:
            return dense_params + expert_params
        return dense_params / dp + expert_params / expert_dp

    return StateBytes(
        weights=sharded(3) * dtype_bytes,
        gradients=sharded(2) * dtype_bytes,
        optimizer=sharded(1) * optimizer_bytes_per_param,
    )


def layer_routings(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    ep: int,
    placement: str,
    rng: np.random.Generator,
    *,
    cp: int = 1,
) -> tuple[Routing | None, ...]:
    """The routing of each layer (None for a dense layer), drawn in layer order from ``rng``.

    A rank routes its ``N = b·s/cp`` tokens (module docstring, "Routing").
    """
    num_tokens = micro_batch_size * training.seq_len // cp
    out: list[Routing | None] = []
    for layer in range(model.num_hidden_layers):
        if not model.is_moe_layer(layer):
            out.append(None)
            continue
        out.append(
            route(
                num_tokens,
                model.num_experts_per_tok,
                model.num_experts,
                ep,
                kind=training.expert_load,
                concentration=training.expert_load_concentration,
                capacity_factor=training.moe_capacity_factor,
                placement=placement,
                rng=rng,
            )
        )
    return tuple(out)


def moe_layer_steps(
    blocks: Sequence[Block],
    name: str,
    cost: Callable[[Block, str, str], ComputeStep],
    *,
    tp: int,
    ep: int,
) -> tuple[tuple[Step, ...], tuple[Step, ...]]:
    """The forward and backward steps of one layer's blocks, with the EP all-to-alls.

    Args:
        blocks: the layer's blocks (:func:`palmsim.workload.builders.layer_blocks`).
        name: the unit name, e.g. ``L3``.
        cost: ``cost(block, phase, label)`` -> the block's compute step on the stage's tiles.
        tp: the TP degree (no TP all-reduce with 1).
        ep: the EP degree (no all-to-all with 1).

    Returns:
        ``(forward, backward)``: forward per block its compute, its TP all-reduce, its
        all-to-all over ``ep``; backward in reverse block order its compute, its TP
        all-reduce, its reverse all-to-all.
    """
    forward: list[Step] = []
    backward: list[Step] = []
    for b in blocks:
        label = f"{name}.{b.name}"
        forward.append(cost(b, "F", label))
        if tp > 1 and b.allreduce_fwd_bytes > 0:
            forward.append(CollectiveStep(f"{label}.ar", "allreduce", b.allreduce_fwd_bytes))
        if ep > 1 and b.alltoall_fwd_bytes > 0:
            forward.append(
                CollectiveStep(f"{label}.a2a", "alltoall", b.alltoall_fwd_bytes, group="ep")
            )
    for b in reversed(blocks):
        label = f"{name}.{b.name}"
        backward.append(cost(b, "B", label))
        if tp > 1 and b.allreduce_bwd_bytes > 0:
            backward.append(CollectiveStep(f"{label}.ar", "allreduce", b.allreduce_bwd_bytes))
        if ep > 1 and b.alltoall_bwd_bytes > 0:
            backward.append(
                CollectiveStep(f"{label}.a2a", "alltoall", b.alltoall_bwd_bytes, group="ep")
            )
    return tuple(forward), tuple(backward)
