"""Expert parallelism (EP) composed with TP, PP and DP: the lowering as pure functions.

Megatron-Core's layout (``--expert-model-parallel-size``, ``--expert-tensor-parallel-size``;
Megatron-Core MoE docs, "Expert Parallelism" and "MoE Parallel Folding"): the ``tp·cp·dp``
ranks of a stage run the routed experts as ETP x EP x EDP (:mod:`palmsim.mapping.folding`).
The ranks of one EP group share the ``E`` experts, ``E/ep`` each, and exchange tokens by
all-to-all; the ``etp`` ranks of an ETP group split each local expert's GEMMs. ETP defaults
to tp (Megatron-Core's default), and EP then groups ``ep`` data-parallel replicas. So:

- **Groups** (:func:`palmsim.mapping.folding.expert_group`): EP, ETP and EDP groups of the
  stage-local ranks ``j = k + tp·r`` in Megatron's rank order. ``etp·ep`` divides
  ``tp·dp·cp``, ``ep`` divides ``E``; EP reuses the stage's tiles, it needs none of its own.
- **Tokens**: the ``tp/etp`` ETP groups of a TP group route disjoint shares of the
  replica's ``N = b·s/cp`` tokens, ``N·etp/tp`` each (with ``etp < tp`` these are
  sequence-parallel shards); the ranks of an ETP group route the same tokens and each
  computes ``1/etp`` of every expert GEMM on them, reducing the partial sums over the ETP
  group. At ``etp = tp`` this is palmsim's unfolded layout: every TP rank routes all ``N``.
- **Gradients**: dense weights (attention, norms, router, shared experts, embedding, head)
  are replicated over all ``dp·cp`` replicas and reduced over the DP group; an expert's
  weight shard is replicated over the ``EDP = tp·dp·cp/(etp·ep)`` ranks of its EDP group and
  reduced there (:func:`expert_grad_bucket`).
- **Memory** (:func:`stage_state_bytes`): per tile, the dense parameters plus ``E/ep`` of the
  experts at ``1/etp`` of their width (:func:`palmsim.workload.builders.layer_blocks` with
  ``ep`` and ``etp``); ZeRO shards the dense state over ``dp·cp`` and the expert state over
  EDP.
- **Steps** (:func:`ep_alltoall`): after each MoE block's compute and its ETP all-reduce, the
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

from palmsim.config.specs import MappingSpec, ModelSpec, TrainingSpec
from palmsim.errors import MappingError
from palmsim.mapping.folding import check_folding, expert_data_parallel_size
from palmsim.mapping.lower import Unit
from palmsim.mapping.plan import CollectiveKind, CollectiveStep, GradBucketReady, GroupKind, Step
from palmsim.workload.builders import Block
from palmsim.workload.moe import EXPERT_PLACEMENTS, Routing, route

__all__ = [
    "StateBytes",
    "check_ep",
    "dispatch_dedup",
    "ep_alltoall",
    "expert_grad_bucket",
    "frozen_params",
    "layer_routings",
    "split_params",
    "stage_state_bytes",
]

#: Op names of the routed experts' weights (reduced over the expert-data-parallel group).
EXPERT_OPS = ("experts_fc1", "experts_fc2")


def check_ep(
    model: ModelSpec,
    dp: int,
    ep: int,
    placement: str,
    *,
    tp: int = 1,
    etp: int | None = None,
    sequence_parallel: bool = False,
) -> None:
    """Raise MappingError unless ETP x EP can split the model's experts over a stage's
    ``tp·dp`` ranks (``dp`` counts the context-parallel ranks too; ``etp`` None: ``tp``)."""
    etp = tp if etp is None else etp
    if ep == 1 and etp == tp:
        return
    if not model.is_moe:
        raise MappingError(
            f"ep={ep}, expert_tp={etp}: model {model.name!r} has no experts (num_experts = 0)"
        )
    if model.num_experts % ep:
        raise MappingError(f"ep={ep} does not divide num_experts={model.num_experts}")
    if etp == tp and dp % ep:
        raise MappingError(
            f"ep={ep} does not divide dp={dp}: with expert_tp = tp = {tp} expert parallelism "
            "groups data-parallel replicas (a smaller expert_tp folds it over the TP ranks too): "
            "make --dp (times --cp) a multiple of ep"
        )
    check_folding(tp, dp, etp, ep, sequence_parallel=sequence_parallel)
    if placement not in EXPERT_PLACEMENTS:
        raise MappingError(f"expert placement {placement!r}: one of {EXPERT_PLACEMENTS}")


def dispatch_dedup(
    mapping: MappingSpec, model: ModelSpec, chip_kind: str
) -> tuple[int, int] | None:
    """``(E, k)`` of a node-deduplicated dispatch (``mapping.moe_dispatcher`` 'deepep') for
    :func:`palmsim.mapping.communicators.communicators`, None for the all-to-all.

    Raises:
        MappingError: 'deepep' off a GPU cluster (its nodes are what a token crosses once).
    """
    if mapping.moe_dispatcher != "deepep" or mapping.ep < 2:
        return None
    if chip_kind != "gpu_cluster":
        raise MappingError(
            "mapping.moe_dispatcher deepep: its dispatch crosses to each other node once per "
            "token, so it needs a GPU cluster's nodes (the hardware is not one)"
        )
    return model.num_experts, model.num_experts_per_tok


def split_params(blocks: Sequence[Block]) -> tuple[float, float]:
    """``(dense, expert)`` trained parameters of ``blocks`` on one tile [count]: what takes
    gradients, optimizer state and updates (a frozen op's, :attr:`Op.frozen`, none)."""
    trained = [op for b in blocks for op in b.ops if not op.frozen]
    expert = sum(op.params for op in trained if op.name in EXPERT_OPS)
    return sum(op.params for op in trained) - expert, expert


def frozen_params(blocks: Sequence[Block]) -> float:
    """Parameters of ``blocks`` on one tile that the run does not train [count]."""
    return float(sum(op.params for b in blocks for op in b.ops if op.frozen))


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
    tp: int = 1,
    etp: int | None = None,
    frozen: float = 0.0,
    grad_bytes: int | None = None,
) -> StateBytes:
    """A tile's model state under EP and ZeRO (module docstring, "Memory"); ``frozen``
    parameters (LoRA's base weights) are weights alone, replicated like the dense ones;
    gradients of ``grad_bytes`` each (the weights' ``dtype_bytes`` when None).

    ZeRO stage 1 shards the optimizer state, 2 also the gradients, 3 also the weights
    (Rajbhandari et al. SC20): the dense part over the ``dp`` replicas, the expert part over
    its EDP group of ``tp·dp/(etp·ep)`` ranks (``dp/ep`` when ``etp = tp``). (ZeRO-3's
    gathered working copy of one unit is the caller's, as for a dense model.)
    """
    expert_dp = expert_data_parallel_size(tp, dp, tp if etp is None else etp, ep)

    def sharded(stage: int) -> float:
        if zero < stage:
            return dense_params + expert_params
        return dense_params / dp + expert_params / expert_dp

    return StateBytes(
        weights=(sharded(3) + frozen) * dtype_bytes,
        gradients=sharded(2) * (dtype_bytes if grad_bytes is None else grad_bytes),
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
    tp: int = 1,
    etp: int | None = None,
) -> tuple[Routing | None, ...]:
    """The routing of each layer (None for a dense layer), drawn in layer order from ``rng``.

    A rank routes ``N·etp/tp`` of the ``N = b·s/cp`` tokens of its replica (module
    docstring, "Tokens" and "Routing"; ``etp`` None: ``tp``, all ``N``).
    """
    num_tokens = micro_batch_size * training.seq_len // cp
    if etp is not None:
        num_tokens = num_tokens * etp // tp
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
    unit: Unit, expert_params: float, elem: int, *, edp: int, zero: int
) -> tuple[Step, ...]:
    """The gradient bucket of a unit's routed experts, reduced over its EDP group of ``edp``
    ranks (those holding the same experts' shard); none when that group is one rank."""
    if edp == 1 or expert_params == 0:
        return ()
    kind = CollectiveKind.REDUCESCATTER if zero >= 1 else CollectiveKind.ALLREDUCE
    label, _ = unit.ident("expert_grads")
    return (
        GradBucketReady(
            label, expert_params * elem, kind, layer=unit.layer, block="moe_experts",
            group=GroupKind.EDP,
        ),
    )  # fmt: skip
