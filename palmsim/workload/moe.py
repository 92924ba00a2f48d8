"""Mixture-of-experts routing: tokens per expert, capacity, dropped tokens, expert placement.

Pure functions (the random generator is passed in): how many of one micro-batch's routed
token slots each expert receives, how many a capacity factor drops, and how many token slots
the experts of each expert-parallel (EP) rank process. The builders turn that count into the
expert GEMMs of a layer (:func:`palmsim.workload.builders.layer_blocks`).

Conventions:

- A rank holds ``N = b·s`` tokens of its micro-batch; the router sends each to its top-``k``
  experts, ``N·k`` *slots* (GShard, Lepikhin et al. 2020, Sec 2.2; Switch Transformer, Fedus
  et al. 2022, Sec 2.1).
- Expert load (``training.expert_load``): ``uniform`` gives every expert exactly ``N·k/E``
  slots (the balanced router an auxiliary loss aims at); ``multinomial`` draws the slots of
  each rank independently and uniformly over the experts (a multinomial of ``N·k`` trials; the
  top-k's "distinct experts per token" is not enforced, which changes the variance by a factor
  ``(E-k)/(E-1)`` at most); ``dirichlet`` first draws each expert's popularity from a
  symmetric Dirichlet of concentration ``alpha`` (one draw per layer, shared by the ranks: a
  popular expert is popular everywhere), then the slots as a multinomial.
- Capacity (Megatron-Core ``--moe-expert-capacity-factor``, drop policy by position, which
  drops the same number as by probability): each expert takes at most
  ``ceil(factor · N·k/E)`` slots from each source rank; the excess is dropped (the token
  skips that expert; its residual carries it on). Dropless when the factor is None.
- Placement of the ``E`` experts on ``ep`` ranks (``ep`` divides ``E``), each rank holding
  ``E/ep``: ``contiguous`` (Megatron-Core: rank ``r`` holds experts ``r·E/ep .. (r+1)·E/ep-1``)
  or ``balanced`` (experts sorted by total load, each given to the least loaded rank that has
  room: longest-processing-time first, Graham 1969).
- Experts read (:func:`touched_experts`): a grouped GEMM reads the weights of the experts that
  received a slot. A draw counts them; a ``uniform`` load, whose slots are fractional, uses
  the expectation when each token picks its ``k`` experts uniformly without repeats: an expert
  misses a token with probability ``1 - k/E``, so ``E·(1 - (1 - k/E)^T)`` of ``E`` experts are
  read for ``T`` tokens (the classic occupancy expectation; Feller, *An Introduction to
  Probability Theory*, Vol. 1, Ch. IV). Training's thousands of tokens read every expert;
  a decode step of a few requests reads few (one token of DeepSeek-V3, ``k = 8`` of
  ``E = 256``, reads 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from palmsim.config.specs import EXPERT_LOADS, EXPERT_PLACEMENTS

__all__ = [
    "EXPERT_PLACEMENTS",
    "Routing",
    "capacity_per_expert",
    "expert_loads",
    "place_experts",
    "route",
    "touched_experts",
]


def expert_loads(
    num_slots: int,
    num_experts: int,
    kind: str,
    *,
    num_ranks: int = 1,
    concentration: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Slots each expert receives from each source rank: an array ``[num_ranks, num_experts]``.

    Args:
        num_slots: routed token slots of one rank, ``N·k``.
        num_experts: ``E``.
        kind: ``uniform``, ``multinomial`` or ``dirichlet`` (module docstring).
        num_ranks: source ranks (the EP group), each routing its own ``num_slots``.
        concentration: the Dirichlet ``alpha``.
        rng: the run's generator; required unless ``kind`` is ``uniform``.

    Returns:
        float64 counts; every row sums to ``num_slots``.
    """
    assert kind in EXPERT_LOADS, kind
    if kind == "uniform":
        return np.full((num_ranks, num_experts), num_slots / num_experts)
    assert rng is not None, "a random expert load needs the run's generator"
    if kind == "dirichlet":
        popularity = rng.dirichlet(np.full(num_experts, concentration))
    else:
        popularity = np.full(num_experts, 1.0 / num_experts)
    return rng.multinomial(num_slots, popularity, size=num_ranks).astype(np.float64)


def capacity_per_expert(
    num_tokens: int, top_k: int, num_experts: int, factor: float | None
) -> float | None:
    """Slots an expert takes from one source rank: ``ceil(factor · N·k/E)``, at most the
    rank's ``N·k`` slots (a factor of ``E`` or more drops nothing); None if dropless."""
    if factor is None:
        return None
    slots = num_tokens * top_k
    if factor >= num_experts:  # factor·N·k/E >= N·k: every slot fits (and no overflow)
        return float(slots)
    return float(math.ceil(factor * slots / num_experts))


def place_experts(loads: np.ndarray, num_ranks: int, placement: str) -> tuple[tuple[int, ...], ...]:
    """The experts each EP rank holds, ``E/num_ranks`` each (module docstring).

    Args:
        loads: slots per expert (summed over source ranks), length ``E``.
        num_ranks: EP degree; divides ``E``.
        placement: ``contiguous`` or ``balanced``.
    """
    num_experts = len(loads)
    assert num_experts % num_ranks == 0, (num_experts, num_ranks)
    per_rank = num_experts // num_ranks
    if placement == "contiguous":
        return tuple(tuple(range(r * per_rank, (r + 1) * per_rank)) for r in range(num_ranks))
    assert placement == "balanced", placement
    held: list[list[int]] = [[] for _ in range(num_ranks)]
    total = [0.0] * num_ranks
    # Heaviest expert first (ties by index, so the result is deterministic); each to the least
    # loaded rank with room (ties to the lowest rank).
    for expert in sorted(range(num_experts), key=lambda x: (-float(loads[x]), x)):
        rank = min(
            (r for r in range(num_ranks) if len(held[r]) < per_rank), key=lambda r: (total[r], r)
        )
        held[rank].append(expert)
        total[rank] += float(loads[expert])
    return tuple(tuple(sorted(h)) for h in held)


def touched_experts(num_tokens: int, top_k: int, num_experts: int) -> float:
    """Expected experts of ``num_experts`` that receive at least one of ``num_tokens`` tokens,
    each sent to ``top_k`` distinct experts drawn uniformly: ``E·(1 - (1 - k/E)^T)``
    (module docstring, "Experts read")."""
    assert 0 < top_k <= num_experts and num_tokens >= 0, (top_k, num_experts, num_tokens)
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** num_tokens)


@dataclass(frozen=True, slots=True)
class Routing:
    """Where one micro-batch's routed slots of one MoE layer go, over an EP group.

    Attributes:
        received_slots: slots the experts of each EP rank process (after drops) [count].
        sent_slots: slots each rank dispatches (its kept slots) [count].
        dropped_slots: slots dropped by the capacity, over the whole EP group [count].
        capacity: slots an expert takes per source rank; None if dropless [count].
        experts_of_rank: the experts each EP rank holds.
        touched_experts: experts of each EP rank that receive a slot, whose weights its
            grouped GEMMs read [count] (module docstring, "Experts read").
    """

    received_slots: tuple[float, ...]
    sent_slots: tuple[float, ...]
    dropped_slots: float
    capacity: float | None
    experts_of_rank: tuple[tuple[int, ...], ...]
    touched_experts: tuple[float, ...]

    @property
    def max_received_slots(self) -> float:
        """Slots the busiest EP rank's experts process: it sets the pace of the group."""
        return max(self.received_slots)

    @property
    def max_touched_experts(self) -> float:
        """The most experts any EP rank reads the weights of."""
        return max(self.touched_experts)


def route(
    num_tokens: int,
    top_k: int,
    num_experts: int,
    ep: int,
    *,
    kind: str = "uniform",
    concentration: float = 1.0,
    capacity_factor: float | None = None,
    placement: str = "contiguous",
    rng: np.random.Generator | None = None,
) -> Routing:
    """Route ``num_tokens`` tokens of each of ``ep`` ranks to ``num_experts`` experts (top-k).

    Raises nothing for valid input; ``ep`` must divide ``num_experts`` (checked by the caller).
    """
    loads = expert_loads(
        num_tokens * top_k,
        num_experts,
        kind,
        num_ranks=ep,
        concentration=concentration,
        rng=rng,
    )
    capacity = capacity_per_expert(num_tokens, top_k, num_experts, capacity_factor)
    kept = loads if capacity is None else np.minimum(loads, capacity)
    experts_of_rank = place_experts(kept.sum(axis=0), ep, placement)
    received = tuple(float(kept[:, list(experts)].sum()) for experts in experts_of_rank)
    if kind == "uniform":
        # every expert is equally likely: the expectation over the group's ep·N tokens
        share = touched_experts(num_tokens * ep, top_k, num_experts) / num_experts
        touched = tuple(len(experts) * share for experts in experts_of_rank)
    else:
        hit = kept.sum(axis=0) > 0
        touched = tuple(float(sum(bool(hit[x]) for x in experts)) for experts in experts_of_rank)
    return Routing(
        received_slots=received,
        sent_slots=tuple(float(row.sum()) for row in kept),
        dropped_slots=float((loads - kept).sum()),
        capacity=capacity,
        experts_of_rank=experts_of_rank,
        touched_experts=touched,
    )
