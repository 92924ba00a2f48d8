"""``palmsim search``: the best mappings of a workload onto a chip, found by branch and bound.

1. **Enumerate** every mapping that uses the whole chip: ``pp·tp·dp`` = the chip's tiles with
   ``pp`` at most the layer count and ``dp`` dividing the global batch; every micro-batch
   size dividing a replica's batch; every schedule, recompute mode and placement (narrow any
   of these with the arguments of :class:`SearchSpace`).
2. **Map** each (cheap, no simulation). A :class:`MappingError` (heads not divisible, memory
   that does not fit...) makes it infeasible.
3. **Bound** each feasible mapping's iteration time from below
   (:func:`palmsim.explore.bound.iteration_lower_bound_s`).
4. **Simulate** in increasing order of the bound and stop as soon as the next bound is no
   better than the K-th best simulated time: no mapping left can enter the top K, so the
   top K are exact. (``memory`` ranks by peak memory per tile instead, which needs no bound;
   its top K are simulated for their figures.) ``energy`` ranks by energy per token and
   ``cost`` by dollars per token; their bounds come from the same time bound, since an
   iteration costs at least the machine's static power (and its written-off price) for its
   time (:func:`objective_bound`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from palmsim.api import simulate, summarize_result
from palmsim.config.specs import ExperimentSpec, MappingSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.explore.bound import iteration_lower_bound_s
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.placement import PLACERS
from palmsim.mapping.schedule import SCHEDULES
from palmsim.report.energy import capital_usd, power_floor_w

__all__ = [
    "OBJECTIVES",
    "Candidate",
    "SearchResult",
    "SearchSpace",
    "enumerate_mappings",
    "objective_bound",
    "objective_value",
    "pareto_front",
    "search",
]

OBJECTIVES = ("throughput", "mfu", "memory", "energy", "cost")
_RECOMPUTE = ("none", "selective", "full")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class SearchSpace:
    """Which values to try; ``None`` means every valid one."""

    pp: tuple[int, ...] | None = None
    tp: tuple[int, ...] | None = None
    dp: tuple[int, ...] | None = None
    micro_batch_size: tuple[int, ...] | None = None
    schedule: tuple[str, ...] | None = None
    recompute: tuple[str, ...] | None = None
    placement: tuple[str, ...] | None = None


@dataclass
class Candidate:
    """One mapping and what the search learnt about it."""

    mapping: MappingSpec
    status: str = "pending"  # infeasible | pruned | simulated
    reason: str = ""
    lower_bound_s: float = math.nan
    memory_per_tile_bytes: float = math.nan
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """Every candidate, the ranked best ones and the counts.

    ``proven`` is true when the search stopped because no candidate left could enter the top
    K (the top K are exact), false when ``max_simulations`` stopped it first.
    """

    candidates: tuple[Candidate, ...]
    best: tuple[Candidate, ...]
    objective: str
    proven: bool = True

    def count(self, status: str) -> int:
        """How many candidates ended with ``status``."""
        return sum(c.status == status for c in self.candidates)


def enumerate_mappings(
    experiment: ExperimentSpec, num_tiles: int, space: SearchSpace = SearchSpace()
) -> Iterator[MappingSpec]:
    """Every mapping of the space that uses all ``num_tiles`` tiles, in a fixed order."""
    layers = experiment.workload.model.num_hidden_layers
    batch = experiment.workload.training.global_batch_size
    base = experiment.mapping
    for tp in space.tp or _divisors(num_tiles):
        for pp in space.pp or _divisors(num_tiles // tp if num_tiles % tp == 0 else 0):
            if pp > layers or num_tiles % (tp * pp):
                continue
            dp = num_tiles // (tp * pp)
            if (space.dp and dp not in space.dp) or batch % dp:
                continue
            for mbs in space.micro_batch_size or _divisors(batch // dp):
                if (batch // dp) % mbs:
                    continue
                for schedule in space.schedule or tuple(SCHEDULES.names()):
                    for recompute in space.recompute or _RECOMPUTE:
                        for placement in space.placement or tuple(PLACERS.names()):
                            yield dataclasses.replace(
                                base,
                                pp=pp,
                                tp=tp,
                                dp=dp,
                                micro_batch_size=mbs,
                                schedule=schedule,
                                recompute=recompute,
                                placement=placement,
                                virtual_stages=1,
                            )


def objective_value(objective: str, summary: dict[str, Any]) -> float:
    """What ``objective`` minimises in a simulated summary: the iteration time (throughput,
    MFU), the energy per token [J] or the dollars per token [USD]."""
    if objective == "energy":
        return float(summary["energy"]["energy_per_token_j"])
    if objective == "cost":
        return float(summary["cost"]["cost_per_token_usd"])
    return float(summary["iteration_time_s"])


def objective_bound(
    objective: str, experiment: ExperimentSpec, lower_bound_s: float, tokens: int
) -> float:
    """A lower bound on :func:`objective_value` from a lower bound on the iteration time.

    Energy per token >= static power x time / tokens (per-event energy is >= 0); dollars per
    token >= (price / lifetime + static power x energy price) x time / tokens.
    """
    hw = experiment.hardware
    if objective == "energy":
        return power_floor_w(hw) * lower_bound_s / tokens
    if objective == "cost":
        assert hw.cost is not None
        rate_usd_per_s = capital_usd(hw) / hw.cost.lifetime_s
        if hw.energy is not None:
            rate_usd_per_s += power_floor_w(hw) * hw.cost.energy_price_usd_per_j
        return rate_usd_per_s * lower_bound_s / tokens
    return lower_bound_s


def _simulate(experiment: ExperimentSpec) -> dict[str, Any]:
    """Simulate one candidate (a top-level function, so process pools can run it)."""
    return summarize_result(simulate(experiment))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (lower is better),
    sorted by the first coordinate."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front: list[int] = []
    best_second = math.inf
    for i in order:
        if points[i][1] < best_second:
            front.append(i)
            best_second = points[i][1]
    return front


def search(
    experiment: ExperimentSpec,
    *,
    objective: str = "throughput",
    top: int = 5,
    space: SearchSpace = SearchSpace(),
    jobs: int | None = None,
    max_simulations: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Find the ``top`` best mappings of ``experiment``'s workload onto its hardware.

    ``max_simulations`` caps the simulations (None: as many as the proof needs); a capped
    search reports ``proven=False`` and leaves the rest ``unexplored``.

    Raises:
        ConfigError: an unknown objective or a ``top`` below 1.
    """
    if objective not in OBJECTIVES:
        raise ConfigError.single("--objective", "objective", objective, " or ".join(OBJECTIVES))
    if top < 1:
        raise ConfigError.single("--top", "top", top, "an int >= 1")
    hw = experiment.hardware
    section = {"energy": hw.energy, "cost": hw.cost}
    if objective in section and section[objective] is None:
        where = dict(experiment.sources).get("hardware", hw.name)
        raise ConfigError.single(
            where, objective, "missing", f"an {objective}: section for --objective {objective}"
        )
    chip = Chip.from_spec(experiment.hardware)
    num_live = len(chip.usable_tiles)  # live tiles, spares only in place of dead ones
    candidates = [Candidate(m) for m in enumerate_mappings(experiment, num_live, space)]
    experiments: dict[int, ExperimentSpec] = {}
    bounds: dict[int, float] = {}
    for index, candidate in enumerate(candidates):
        exp = dataclasses.replace(experiment, mapping=candidate.mapping)
        try:
            plan = map_workload(exp, chip)
        except MappingError as error:
            candidate.status, candidate.reason = "infeasible", str(error)
            continue
        candidate.lower_bound_s = iteration_lower_bound_s(plan, chip)
        candidate.memory_per_tile_bytes = max(b.total for _, b in plan.memory)
        experiments[index] = exp
        bounds[index] = objective_bound(
            objective, exp, candidate.lower_bound_s, plan.tokens_per_iteration
        )
    if progress:
        progress(f"{len(candidates)} mappings, {len(experiments)} feasible")
    if objective == "memory":
        key: Callable[[int], tuple[float, float]] = lambda i: (  # noqa: E731
            candidates[i].memory_per_tile_bytes,
            candidates[i].lower_bound_s,
        )
    else:
        key = lambda i: (bounds[i], candidates[i].lower_bound_s)  # noqa: E731
    order = sorted(experiments, key=key)
    workers = max(1, jobs or os.cpu_count() or 1)
    simulated: list[int] = []
    position = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        while position < len(order):
            if max_simulations is not None and len(simulated) >= max_simulations:
                break
            if objective == "memory":
                if len(simulated) >= top:
                    break
            elif len(simulated) >= top:
                values = sorted(
                    objective_value(objective, candidates[i].summary) for i in simulated
                )
                if bounds[order[position]] >= values[top - 1]:
                    break  # no remaining mapping can beat the K-th best
            room = len(order) if max_simulations is None else max_simulations - len(simulated)
            batch = order[position : position + min(workers, room)]
            position += len(batch)
            for index, summary in zip(
                batch, pool.map(_simulate, [experiments[i] for i in batch]), strict=True
            ):
                candidates[index].summary = summary
                candidates[index].status = "simulated"
                simulated.append(index)
            if progress:
                progress(f"simulated {len(simulated)} of {len(order)} feasible mappings")
    # Proven when nothing is left, or the next bound cannot beat the K-th best simulated.
    proven = position >= len(order)
    if not proven and objective != "memory" and len(simulated) >= top:
        kth = sorted(objective_value(objective, candidates[i].summary) for i in simulated)[top - 1]
        proven = bounds[order[position]] >= kth
    elif not proven and objective == "memory":
        proven = len(simulated) >= top
    for index in order[position:]:
        if not proven:
            candidates[index].status = "unexplored"
            candidates[index].reason = "not simulated: max_simulations reached"
            continue
        candidates[index].status = "pruned"
        candidates[index].reason = (
            "lower bound above the best simulated"
            if objective != "memory"
            else "more memory per tile than the best"
        )
    if objective == "memory":
        ranked = sorted(simulated, key=lambda i: (candidates[i].memory_per_tile_bytes,))
    else:
        ranked = sorted(simulated, key=lambda i: objective_value(objective, candidates[i].summary))
    best = tuple(candidates[i] for i in ranked[:top])
    return SearchResult(tuple(candidates), best, objective, proven)
