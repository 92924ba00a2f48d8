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
   top K are exact. ``jobs`` simulations run at once, the next starting as soon as the
   oldest in flight has finished; whether it starts is decided on the results up to that
   one, so the decisions do not depend on how long each simulation took. (``memory`` ranks
   by peak memory per tile instead, which needs no bound; its top K are simulated for their
   figures.) ``energy`` ranks by energy per token and
   ``cost`` by dollars per token; their bounds come from the same time bound, since an
   iteration costs at least the machine's static power (and its written-off price) for its
   time (:func:`objective_bound`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palmsim import __version__
from palmsim.api import resolved_config, simulate, summarize_result
from palmsim.config.specs import RECOMPUTE_MODES, ExperimentSpec, MappingSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.explore.bound import iteration_lower_bound_s
from palmsim.explore.serving_search import GoodputSpace
from palmsim.explore.sweep import cancel_on_interrupt, pool_size, worker_pool
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.placement import PLACERS
from palmsim.mapping.schedule import SCHEDULES
from palmsim.report.energy import capital_usd, power_floor_w
from palmsim.report.export import read_json, run_id, write_csv, write_json

__all__ = [
    "OBJECTIVES",
    "RESULT_COLUMNS",
    "Candidate",
    "SearchResult",
    "SearchSpace",
    "check_search_options",
    "empty_space_reason",
    "enumerate_mappings",
    "infeasible_reasons",
    "objective_bound",
    "objective_value",
    "pareto_front",
    "result_rows",
    "search",
]

OBJECTIVES = ("throughput", "mfu", "memory", "energy", "cost")


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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_layouts(layouts: Sequence[Any], tps: Sequence[int] | None) -> None:
    """Raise :class:`ConfigError` naming ``--tp-2d`` unless each layout is two ints >= 1,
    given once, whose product is one of ``tps`` (if given)."""
    shown = ",".join(
        f"{v[0]}x{v[1]}" if isinstance(v, tuple) and len(v) == 2 else str(v) for v in layouts
    )
    for value in layouts:
        if not (isinstance(value, tuple) and len(value) == 2 and all(_is_int(v) for v in value)):
            raise ConfigError.single("command line", "--tp-2d", shown, "AxB layouts, e.g. 8x4,4x8")
        a, b = value
        if a < 1 or b < 1:
            raise ConfigError.single("command line", "--tp-2d", shown, "AxB with a, b >= 1")
        if tps is not None and a * b not in tps:
            raise ConfigError.single(
                "command line",
                "--tp-2d",
                shown,
                f"layouts of the --tp values {','.join(map(str, tps))} ({a}x{b} has tp = {a * b})",
            )
    if len(set(layouts)) < len(layouts):
        raise ConfigError.single("command line", "--tp-2d", shown, "distinct layouts (a,b,...)")


def check_search_options(
    space: SearchSpace | GoodputSpace | None = None,
    *,
    top: int | None = None,
    jobs: int | None = None,
    max_simulations: int | None = None,
) -> None:
    """Raise :class:`ConfigError` for a search option no search can take, naming its flag:
    ``top`` or ``jobs`` below 1, ``max_simulations`` below 0, and in ``space`` (a
    :class:`SearchSpace` or a goodput search's space; None: not checked) a count below 1, a
    schedule, recompute mode or placement that the mapping config would refuse, or a value
    given twice. None means "not given" throughout."""
    counts = (("--top", top, 1), ("--jobs", jobs, 1), ("--max-simulations", max_simulations, 0))
    for flag, value, least in counts:
        if value is not None and not (_is_int(value) and value >= least):
            raise ConfigError.single("command line", flag, value, f"an int >= {least}")
    names = {
        "schedule": SCHEDULES.names(),
        "recompute": list(RECOMPUTE_MODES),
        "placement": PLACERS.names(),
    }
    for f in dataclasses.fields(space) if space is not None else ():
        values = getattr(space, f.name)
        if values is None:
            continue
        if f.name == "tp_2d":  # a goodput search's 2-D layouts
            _check_layouts(values, getattr(space, "tp", None))
            continue
        flag = "--micro-batch" if f.name == "micro_batch_size" else "--" + f.name.replace("_", "-")
        known = names.get(f.name)
        for value in values:
            if known is None and not (_is_int(value) and value >= 1):
                raise ConfigError.single("command line", flag, value, "ints >= 1 (a,b,...)")
            if known is not None and value not in known:
                close = difflib.get_close_matches(str(value), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError.single(
                    "command line", flag, value, f"one of {', '.join(known)}{hint}"
                )
        if len(set(values)) < len(values):
            raise ConfigError.single(
                "command line", flag, ",".join(map(str, values)), "distinct values (a,b,...)"
            )


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
                    for recompute in space.recompute or RECOMPUTE_MODES:
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


def empty_space_reason(
    experiment: ExperimentSpec, num_tiles: int, space: SearchSpace = SearchSpace()
) -> str:
    """Why :func:`enumerate_mappings` yields nothing: the first of its conditions that no
    combination of the space meets, with the values that fail it."""
    layers = experiment.workload.model.num_hidden_layers
    batch = experiment.workload.training.global_batch_size
    tps = space.tp or _divisors(num_tiles)
    pairs = [(tp, pp) for tp in tps for pp in space.pp or _divisors(num_tiles // tp or 1)]
    fits = [(tp, pp) for tp, pp in pairs if pp <= layers and num_tiles % (tp * pp) == 0]
    if not fits:
        return (
            f"no tp x pp of the space ({_values('tp', space.tp)}, {_values('pp', space.pp)}) "
            f"divides the {num_tiles} live tiles with pp at most the {layers} layers (a search "
            "maps every live tile: tp x pp x dp = tiles)"
        )
    dps = sorted({num_tiles // (tp * pp) for tp, pp in fits})
    if not [dp for dp in dps if not (space.dp and dp not in space.dp) and batch % dp == 0]:
        return (
            f"the data-parallel sizes the tiles leave ({_listed(dps)}) are not in --dp "
            f"{_listed(space.dp or ())} or do not divide the global batch {batch}"
            if space.dp
            else f"none of the data-parallel sizes the tiles leave ({_listed(dps)}) divides "
            f"the global batch {batch}"
        )
    return (
        f"no micro-batch size of --micro-batch {_listed(space.micro_batch_size or ())} divides "
        f"a data-parallel rank's share of the global batch {batch}"
    )


def infeasible_reasons(candidates: Sequence[Candidate], top: int = 3) -> list[tuple[int, str]]:
    """The ``top`` commonest reasons the infeasible ``candidates`` did not map, as ``(count,
    the first such reason)``: reasons alike but for their numbers (``tp=5 does not divide
    num_attention_heads=32``, ``tp=25 ...``) count as one."""
    groups: dict[str, list[str]] = {}
    for c in candidates:
        if c.status == "infeasible":
            groups.setdefault(re.sub(r"\d+(\.\d+)?", "N", c.reason), []).append(c.reason)
    ranked = sorted(groups.values(), key=len, reverse=True)[:top]
    return [(len(reasons), reasons[0]) for reasons in ranked]


def _listed(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def _values(name: str, values: Sequence[int] | None) -> str:
    return f"--{name} {_listed(values)}" if values else f"{name}: every divisor"


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


#: Mappings per task of the mapping phase: one chip elaboration serves them all.
_MAP_CHUNK = 64


def _map_chunk(
    experiment: ExperimentSpec, mappings: Sequence[MappingSpec], objective: str
) -> list[tuple[bool, str, float, float, float]]:
    """Map each of ``mappings``: ``(True, "", lower bound [s], memory per tile [B],
    objective bound)`` when feasible, ``(False, the MappingError's message, nan, nan, nan)``
    when not. Top-level, for process pools; one chip elaboration serves the whole chunk."""
    chip = Chip.from_spec(experiment.hardware)
    out: list[tuple[bool, str, float, float, float]] = []
    for mapping in mappings:
        exp = dataclasses.replace(experiment, mapping=mapping)
        try:
            plan = map_workload(exp, chip)
        except MappingError as error:
            out.append((False, str(error), math.nan, math.nan, math.nan))
            continue
        memory = max(b.total for _, b in plan.memory)
        bound_s = iteration_lower_bound_s(plan, chip)
        bound = objective_bound(objective, exp, bound_s, plan.tokens_per_iteration)
        out.append((True, "", bound_s, memory, bound))
    return out


def _wait_reporting(
    futures: Sequence[Future[Any]], interval_s: float, line: Callable[[], None] | None
) -> None:
    """Wait for ``futures``, calling ``line`` at least every ``interval_s`` seconds meanwhile."""
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=interval_s if line else None)
        if line and pending:
            line()


#: Columns of a search's ``results.csv`` (see :func:`result_rows`).
RESULT_COLUMNS = (
    "pp",
    "tp",
    "dp",
    "micro_batch_size",
    "schedule",
    "recompute",
    "placement",
    "status",
    "lower_bound_s",
    "memory_per_tile_bytes",
    "iteration_time_s",
    "throughput_samples_per_s",
    "mfu",
    "throughput_tokens_per_s",
    "energy_per_token_j",
    "cost_per_token_usd",
    "reason",
)


def result_rows(candidates: Sequence[Candidate]) -> list[list[Any]]:
    """One row per candidate, columns :data:`RESULT_COLUMNS` (NaN as an empty cell)."""
    rows = []
    for c in candidates:
        m = c.mapping
        figures = [
            c.summary.get(k, "")
            for k in (
                "iteration_time_s",
                "throughput_samples_per_s",
                "mfu",
                "throughput_tokens_per_s",
            )
        ] + [
            c.summary.get("energy", {}).get("energy_per_token_j", ""),
            c.summary.get("cost", {}).get("cost_per_token_usd", ""),
        ]
        rows.append(
            [m.pp, m.tp, m.dp, m.micro_batch_size, m.schedule, m.recompute, m.placement, c.status]
            + ["" if v != v else v for v in (c.lower_bound_s, c.memory_per_tile_bytes)]
            + figures
            + [c.reason]
        )
    return rows


def _point_id(experiment: ExperimentSpec) -> str:
    """The run id of a candidate's experiment: where its finished simulation is kept."""
    return run_id(resolved_config(experiment), __version__)


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
    out_dir: str | Path | None = None,
    progress_interval_s: float = 4.5,
) -> SearchResult:
    """Find the ``top`` best mappings of ``experiment``'s workload onto its hardware.

    ``max_simulations`` caps the simulations (None: as many as the proof needs); a capped
    search reports ``proven=False`` and leaves the rest ``unexplored``.

    With ``out_dir``, every finished simulation is kept as ``out_dir/points/<run id>.json``
    and ``out_dir/results.csv`` is rewritten (atomically) after each one, so an interrupted
    search leaves its finished rows readable, and a rerun into the same folder takes them
    from there instead of simulating them again: it makes the same decisions and ends with
    the same result as an uninterrupted search.

    ``progress`` receives a line at once, then after each ``progress_interval_s`` seconds
    of waiting (4.5 s: a line at least every 5 s, the line's own work included): mappings
    left to map or to consider, the best so far and the gap between it and the lowest bound
    not yet simulated.

    Raises:
        ConfigError: an unknown objective, a workload in another mode than training, or an
            option :func:`check_search_options` refuses.
        MappingError: the space holds no mapping of the live tiles
            (:func:`empty_space_reason`).
    """
    if objective not in OBJECTIVES:
        raise ConfigError.single("command line", "--objective", objective, " or ".join(OBJECTIVES))
    if experiment.workload.mode != "training":  # its bounds and memory check are training's
        raise ConfigError.single(
            dict(experiment.sources).get("workload", "workload"),
            "mode",
            experiment.workload.mode,
            "training: palmsim search ranks training mappings (serving configurations: "
            "--objective goodput with a serving file)",
        )
    check_search_options(space, top=top, jobs=jobs, max_simulations=max_simulations)
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
    if not candidates:
        raise MappingError(f"nothing to search: {empty_space_reason(experiment, num_live, space)}")
    out = Path(out_dir) if out_dir is not None else None
    started = time.monotonic()

    def say(line: str) -> None:
        if progress:
            progress(f"[{time.monotonic() - started:6.0f} s] {line}")

    experiments: dict[int, ExperimentSpec] = {}
    bounds: dict[int, float] = {}
    workers = pool_size(jobs, len(candidates))
    with worker_pool(workers) as pool, cancel_on_interrupt(pool):
        chunks = [
            list(range(i, min(i + _MAP_CHUNK, len(candidates))))
            for i in range(0, len(candidates), _MAP_CHUNK)
        ]
        map_futures = [
            pool.submit(_map_chunk, experiment, [candidates[i].mapping for i in chunk], objective)
            for chunk in chunks
        ]

        def mapping_line() -> None:
            done = sum(len(c) for c, f in zip(chunks, map_futures, strict=True) if f.done())
            say(f"mapping: {len(candidates) - done} of {len(candidates)} mappings left to map")

        if progress:
            mapping_line()  # at once: the first line comes with the work, not a period later
        _wait_reporting(map_futures, progress_interval_s, mapping_line if progress else None)
        for chunk, future in zip(chunks, map_futures, strict=True):
            for index, (feasible, reason, bound_s, memory_bytes, bound) in zip(
                chunk, future.result(), strict=True
            ):
                candidate = candidates[index]
                if not feasible:
                    candidate.status, candidate.reason = "infeasible", reason
                    continue
                candidate.lower_bound_s = bound_s
                candidate.memory_per_tile_bytes = memory_bytes
                bounds[index] = bound
                experiments[index] = dataclasses.replace(experiment, mapping=candidate.mapping)
        say(f"{len(candidates)} mappings, {len(experiments)} feasible")
        if objective == "memory":
            key: Callable[[int], tuple[float, float]] = lambda i: (  # noqa: E731
                candidates[i].memory_per_tile_bytes,
                candidates[i].lower_bound_s,
            )
        else:
            key = lambda i: (bounds[i], candidates[i].lower_bound_s)  # noqa: E731
        order = sorted(experiments, key=key)
        simulated: list[int] = []
        position = 0

        def best_line() -> None:
            # order is sorted by bound: the first one not simulated has the lowest bound left
            pending = [i for i in order if candidates[i].status != "simulated"]
            left = len(order) - position
            text = f"simulating: {left} mappings left, {len(pending) - left} running"
            best_s = math.nan
            if simulated:
                best = min(simulated, key=lambda i: candidates[i].summary["iteration_time_s"])
                best_s = candidates[best].summary["iteration_time_s"]
                text += f", best {best_s:.4g} s ({_name(candidates[best].mapping)})"
            else:
                text += ", none finished yet"
            if pending and objective != "memory":
                bound_s = candidates[pending[0]].lower_bound_s
                text += f", lowest bound not simulated {bound_s:.4g} s"
                if simulated:
                    text += f" (gap {100 * (best_s - bound_s) / best_s:.1f}%)"
            say(text)

        # A sliding window of `workers` simulations in bound order: the next one starts as
        # soon as the oldest in flight has finished (a batch would wait for its slowest).
        # Whether it starts is decided on the results of the candidates up to the oldest
        # in flight only, whichever others have finished: the same decisions, so the same
        # simulated set and result, however long each simulation takes.
        in_order: list[int] = []  # started, by position
        futures: dict[int, Future[dict[str, Any]]] = {}
        kept: dict[int, dict[str, Any] | None] = {}

        def keep_finished() -> None:
            """Keep the point of every simulation that has finished, in order or not, so an
            interrupted search loses none."""
            for index, future in list(futures.items()):
                if future.done() and not future.cancelled() and future.exception() is None:
                    if out is not None:
                        write_json(
                            out / "points" / f"{_point_id(experiments[index])}.json",
                            {"mapping": dataclasses.asdict(candidates[index].mapping),
                             "summary": future.result()},
                        )  # fmt: skip
                    kept[index] = future.result()
                    del futures[index]

        def collect(count: int) -> None:
            """Record the results of the first ``count`` started, in order."""
            while len(simulated) < count:
                index = in_order[len(simulated)]
                if index in futures:
                    _wait_reporting(
                        [futures[index]], progress_interval_s, best_line if progress else None
                    )
                    futures[index].result()  # a failed simulation raises here
                    keep_finished()
                summary = kept[index]
                assert summary is not None  # read back, or kept once finished
                candidates[index].summary = summary
                candidates[index].status = "simulated"
                simulated.append(index)
                if out is not None:
                    write_csv(out / "results.csv", RESULT_COLUMNS, result_rows(candidates))
                best_line()

        try:
            while position < len(order):
                if max_simulations is not None and position >= max_simulations:
                    break
                if objective == "memory":
                    if position >= top:  # ranked by the plan's memory: the first K are best
                        break
                else:
                    collect(max(0, position - workers + 1))
                    if len(simulated) >= top:
                        values = sorted(
                            objective_value(objective, candidates[i].summary) for i in simulated
                        )
                        if bounds[order[position]] >= values[top - 1]:
                            break  # no remaining mapping can beat the K-th best
                index = order[position]
                position += 1
                in_order.append(index)
                kept[index] = _read_point(out, experiments[index]) if out else None
                if out is not None and kept[index] is not None:
                    say(f"read back a finished simulation from {out / 'points'}")
                else:
                    futures[index] = pool.submit(_simulate, experiments[index])
            collect(len(in_order))
        finally:
            keep_finished()
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


def _name(mapping: MappingSpec) -> str:
    """``pp=5 tp=4 dp=16 mbs=1 1f1b recompute=none row_major``."""
    m = mapping
    return (
        f"pp={m.pp} tp={m.tp} dp={m.dp} mbs={m.micro_batch_size} {m.schedule} "
        f"recompute={m.recompute} {m.placement}"
    )


def _read_point(out: Path, experiment: ExperimentSpec) -> dict[str, Any] | None:
    """The summary kept by an earlier search for this experiment, or None.

    The file name is the run id, a hash of the experiment's whole resolved configuration, so
    a kept point belongs to exactly this hardware, workload and mapping. A file that cannot
    be read is ignored: the point is simulated again.
    """
    path = out / "points" / f"{_point_id(experiment)}.json"
    if not path.exists():
        return None
    try:
        kept = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or not isinstance(kept.get("summary"), dict):
        return None
    summary: dict[str, Any] = kept["summary"]
    return summary
