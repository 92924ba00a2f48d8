"""MoE parallel folding: the expert layers' ETP x EP x EDP groups over a stage's ranks.

Megatron-Core decouples the parallelism of the MoE layers from the attention's ("MoE Parallel
Folding", Liu et al. 2025, arXiv 2504.14960; ``parallel_state.initialize_model_parallel``):
the ``n = tp·cp·dp`` ranks of one pipeline stage run the attention as TP x CP x DP and the
routed experts as ETP x EP x EDP, ``EDP = n/(ETP·EP)``, both over the same ranks in the same
rank order. The attention's generator orders them ``tp-cp-dp`` (TP fastest), the experts'
``tp-ep-dp`` with ETP in place of TP (``expert_decoder_rank_generator``: ``tp =
expert_tensor_parallel_size``, ``cp = 1``). So with the stage-local rank

    j = k + tp·r        (k: TP rank, r: replica index, CP rank fastest: Megatron's order)

a rank's ETP rank is ``j mod ETP``, its EP rank ``⌊j/ETP⌋ mod EP`` and its EDP rank
``⌊j/(ETP·EP)⌋``; its groups are the ranks that differ from it in that coordinate only:

- **ETP** (:attr:`GroupKind.ETP`): ``j - j mod ETP + (0 .. ETP-1)``, consecutive ranks;
- **EP**: ``j mod ETP + ETP·i + ETP·EP·⌊j/(ETP·EP)⌋``, ``i = 0 .. EP-1``;
- **EDP**: ``j mod (ETP·EP) + ETP·EP·d``, ``d = 0 .. EDP-1``.

With ``ETP = tp`` (Megatron-Core's default when ``--expert-tensor-parallel-size`` is unset:
``megatron/training/arguments.py``) the EP group is ``ep`` consecutive replicas at one TP rank
and the EDP group the replicas ``r mod ep, r mod ep + ep, ...``: expert parallelism over the
data-parallel replicas. With ``ETP < tp`` EP groups take ranks of one replica too (the Qwen3
235B runs: tp 2, dp 16, ETP 1, EP 32: one EP group of all 32 ranks of a stage, EDP 1).

Everything here is index arithmetic on ``j`` (no tiles): :meth:`MappingPlan.groups` and
:mod:`palmsim.mapping.communicators` map ranks to tiles.
"""

from __future__ import annotations

from palmsim.errors import MappingError

__all__ = ["check_folding", "expert_data_parallel_size", "expert_group", "expert_groups"]


def check_folding(tp: int, replicas: int, etp: int, ep: int, *, sequence_parallel: bool) -> None:
    """Raise MappingError unless ETP x EP can fold over a stage's ``tp·replicas`` ranks.

    ``replicas`` is dp·cp. ETP·EP must divide ``tp·replicas`` (Megatron-Core raises the same
    for the decoder world size). ETP must divide ``tp``: a larger ETP would gather tokens of
    different replicas into one expert GEMM, which palmsim does not model. ETP < tp needs
    sequence parallelism: the ranks of a TP group then route disjoint tokens (their
    sequence-parallel shards), as Megatron-Core requires for MoE training with TP > 1
    (``MoELayer``: "MoE and tensor parallelism ... without sequence parallelism").
    """
    ranks = tp * replicas
    if etp < 1:
        raise MappingError(f"expert_tp={etp}: an int >= 1 (or null: tp)")
    if ranks % (etp * ep):
        raise MappingError(
            f"expert_tp·ep = {etp}·{ep} = {etp * ep} does not divide tp·cp·dp = {ranks}: the "
            "experts' ETP x EP x EDP groups fold over the ranks of a stage (MoE parallel "
            "folding, Megatron-Core --expert-tensor-parallel-size)"
        )
    if tp % etp:
        raise MappingError(
            f"expert_tp={etp} does not divide tp={tp}: an expert tensor-parallel group wider "
            "than the attention's (tokens of several replicas in one GEMM) is not modelled"
        )
    if etp < tp and not sequence_parallel:
        raise MappingError(
            f"expert_tp={etp} < tp={tp} needs sequence_parallel: the TP ranks then route "
            "their own sequence shards (Megatron-Core requires sequence parallelism for MoE "
            "training with tensor parallelism)"
        )


def expert_data_parallel_size(tp: int, replicas: int, etp: int, ep: int) -> int:
    """EDP = tp·replicas / (ETP·EP): the ranks holding the same experts' shard."""
    return tp * replicas // (etp * ep)


def expert_group(kind: str, j: int, num_ranks: int, etp: int, ep: int) -> tuple[int, ...]:
    """Stage-local rank ``j``'s group of ``kind`` ('etp', 'ep' or 'edp'), in rank order
    (module docstring)."""
    assert num_ranks % (etp * ep) == 0, (num_ranks, etp, ep)
    block = etp * ep
    if kind == "etp":
        start = j - j % etp
        return tuple(range(start, start + etp))
    if kind == "ep":
        base = j % etp + block * (j // block)
        return tuple(base + etp * i for i in range(ep))
    assert kind == "edp", kind
    return tuple(range(j % block, num_ranks, block))


def expert_groups(kind: str, num_ranks: int, etp: int, ep: int) -> tuple[tuple[int, ...], ...]:
    """Every group of ``kind`` over ``num_ranks`` stage-local ranks, each once, in the order
    of its first rank."""
    seen: dict[int, tuple[int, ...]] = {}
    for j in range(num_ranks):
        group = expert_group(kind, j, num_ranks, etp, ep)
        seen.setdefault(group[0], group)
    return tuple(seen[k] for k in sorted(seen))
