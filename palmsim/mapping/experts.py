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
- **Steps** (:func:`ep_alltoall`): after each MoE block's compute and TP all-reduce, the
  all-to-all over the EP group after the forward (dispatch after ``moe_route``, combine after
  ``moe_experts``) and after the backward (their reverses), on the EP group's flows
  (:func:`palmsim.hardware.collectives.collective_transfers` with ``alltoall``); the routed
  experts' gradients in buckets of their own over the EDP group (:func:`expert_grad_bucket`).
- **Routing** (:func:`layer_routings`): each MoE layer's tokens per expert are drawn once from
  the run's generator, in layer order (:func:`palmsim.workload.moe.route`), so a run is
  byte-identical for the same seed; every micro-batch of the iteration routes as its layer
  does. All EP ranks run the busiest rank's expert work (the combine all-to-all waits for
  it), and the capacity factor's dropped slots are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from palmsim.config.specs import ModelSpec, TrainingSpec
from palmsim.errors import MappingError
from palmsim.mapping.lower import Unit
from palmsim.mapping.plan import CollectiveKind, CollectiveStep, GradBucketReady, GroupKind, Step
from palmsim.workload.builders import Block
from palmsim.workload.moe import EXPERT_PLACEMENTS, Routing, route

__all__ = [
    "StateBytes",
    "check_ep",
    "ep_alltoall",
    "ep_groups",
    "expert_data_parallel_groups",
    "expert_grad_bucket",
    "layer_routings",
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


def ep_alltoall(nbytes: float, unit: Unit, block: str, *, ep: int) -> tuple[Step, ...]:
    """The all-to-all over the EP group after ``unit``'s ``block`` (the token dispatch after
    ``moe_route``, the combine after ``moe_experts``, or their reverses in the backward);
    none with one EP rank or no bytes."""
    if ep == 1 or nbytes <= 0:
        return ()
    label, op = unit.ident(block, "a2a")
    return (
        CollectiveStep(
            label,
            CollectiveKind.ALLTOALL,
            nbytes,
            GroupKind.EP,
            layer=unit.layer,
            block=block,
            op=op,
        ),
    )


def expert_grad_bucket(
    unit: Unit, expert_params: float, elem: int, *, ep: int, replicas: int, zero: int
) -> tuple[Step, ...]:
    """The gradient bucket of a unit's routed experts, reduced over its EDP group (the
    ``replicas/ep`` replicas holding the same experts); none when that group is one replica."""
    if replicas // ep == 1 or expert_params == 0:
        return ()
    kind = CollectiveKind.REDUCESCATTER if zero >= 1 else CollectiveKind.ALLREDUCE
    label, _ = unit.ident("expert_grads")
    return (
        GradBucketReady(
            label, expert_params * elem, kind, layer=unit.layer, block="moe_experts",
            group=GroupKind.EDP,
        ),
    )  # fmt: skip
