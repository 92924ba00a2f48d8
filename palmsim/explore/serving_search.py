"""``palmsim search --objective goodput``: the serving configuration with the most goodput.

Goodput is the request rate that meets the serving file's SLO (``goodput_requests_per_s`` of
:func:`palmsim.report.serving.summarize_serving`). The search enumerates every combination of
the candidate values of a replica's tensor and pipeline parallelism, the layout of its
tensor parallelism (1-D, or a 2-D ``serving.tp_2d`` ``[a, b]`` of ``a·b = tp``), the number
of replicas and the scheduler's ``max_num_seqs`` and ``max_num_batched_tokens``, maps each (a
:class:`MappingError` makes it infeasible: too few tiles, a TP degree that does not divide the
heads, weights that leave no room for the KV cache) and serves the serving file's traffic on
it with the serving simulator. There is no bound to prune with (goodput depends on the whole
queueing behaviour), so every feasible candidate is simulated, up to ``max_simulations``, in
enumeration order; candidates are ranked by goodput, then by p90 TTFT.

Defaults: ``tp`` every power of two up to the tiles the serving file uses
(``replicas·tp·pp``), ``pp`` 1, ``replicas`` as many as those tiles hold at that ``tp·pp``
(so every candidate serves on the same tiles), the scheduler limits of the serving file. Every
``tp`` runs 1-D; a 2-D layout ``[a, b]`` (the serving file's, or the candidates given) runs
as a candidate of its own beside the 1-D one of ``tp = a·b``, whose degree joins the default
``tp`` values.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from palmsim.errors import MappingError

__all__ = [
    "GOODPUT_COLUMNS",
    "GoodputCandidate",
    "GoodputSpace",
    "goodput_rows",
    "search_goodput",
]

#: results.csv columns of a goodput search.
GOODPUT_COLUMNS = (
    "rank",
    "tp",
    "tp_2d",
    "pp",
    "replicas",
    "max_num_seqs",
    "max_num_batched_tokens",
    "status",
    "goodput_requests_per_s",
    "slo_attainment",
    "throughput_requests_per_s",
    "ttft_p90_s",
    "tpot_p90_s",
    "energy_per_output_token_j",
    "cost_per_million_output_tokens_usd",
    "reason",
)


@dataclass(frozen=True)
class GoodputSpace:
    """Candidate values; ``None``: the default documented in the module."""

    tp: tuple[int, ...] | None = None
    tp_2d: tuple[tuple[int, int], ...] | None = None
    pp: tuple[int, ...] | None = None
    replicas: tuple[int, ...] | None = None
    max_num_seqs: tuple[int, ...] | None = None
    max_num_batched_tokens: tuple[int, ...] | None = None


@dataclass
class GoodputCandidate:
    """One serving configuration and, once served, its summary."""

    tp: int
    pp: int
    replicas: int
    max_num_seqs: int
    max_num_batched_tokens: int
    tp_2d: tuple[int, int] | None = None  # None: 1-D
    status: str = "unexplored"  # simulated | infeasible | unexplored
    reason: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def overrides(self) -> list[str]:
        """The ``--set`` strings that select this configuration."""
        layout = "null" if self.tp_2d is None else f"[{self.tp_2d[0]},{self.tp_2d[1]}]"
        return [
            f"serving.tp={self.tp}",
            f"serving.tp_2d={layout}",
            f"serving.pp={self.pp}",
            f"serving.replicas={self.replicas}",
            f"serving.scheduler.max_num_seqs={self.max_num_seqs}",
            f"serving.scheduler.max_num_batched_tokens={self.max_num_batched_tokens}",
        ]

    @property
    def name(self) -> str:
        """The configuration in one line, e.g. ``tp=32 (8x4) pp=1 replicas=1 ...``."""
        layout = "" if self.tp_2d is None else f" ({self.tp_2d[0]}x{self.tp_2d[1]})"
        return (
            f"tp={self.tp}{layout} pp={self.pp} replicas={self.replicas} "
            f"seqs={self.max_num_seqs} tokens={self.max_num_batched_tokens}"
        )

    def sort_key(self) -> tuple[float, float]:
        s = self.summary
        return (-s["goodput_requests_per_s"], s["ttft_p90_s"])


def _powers_of_two(limit: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(limit.bit_length()) if 2**k <= limit)


def candidates(
    num_tiles: int, space: GoodputSpace, max_num_seqs: int, max_num_batched_tokens: int
) -> list[GoodputCandidate]:
    """Every combination of ``space`` that fits ``num_tiles`` tiles (``tp·pp·replicas``);
    without candidate replicas, as many replicas as fit. Each ``tp`` runs 1-D, then in each
    2-D layout of ``space.tp_2d`` whose ``a·b`` it is."""
    layouts = space.tp_2d or ()
    tps = space.tp or tuple(sorted({*_powers_of_two(num_tiles), *(a * b for a, b in layouts)}))
    out = []
    for tp, pp in itertools.product(tps, space.pp or (1,)):
        fit = num_tiles // (tp * pp)
        for replicas in space.replicas or ((fit,) if fit else ()):
            if not 1 <= replicas <= fit:
                continue
            for tp_2d, seqs, tokens in itertools.product(
                [None, *(ab for ab in layouts if ab[0] * ab[1] == tp)],
                space.max_num_seqs or (max_num_seqs,),
                space.max_num_batched_tokens or (max_num_batched_tokens,),
            ):
                out.append(GoodputCandidate(tp, pp, replicas, seqs, tokens, tp_2d))
    return out


def search_goodput(
    hardware: str | None,
    workload: str | None,
    serving: str | None,
    *,
    overrides: Sequence[str] = (),
    space: GoodputSpace = GoodputSpace(),
    max_simulations: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[GoodputCandidate]:
    """Serve the serving file's traffic on every candidate configuration; the candidates,
    simulated ones first, best goodput first.

    Raises:
        ConfigError: the input files or ``overrides`` are invalid, or a value of ``space`` or
            ``max_simulations`` is (:func:`palmsim.explore.search.check_search_options`).
        MappingError: no configuration of ``space`` fits the tiles.
    """
    from palmsim.api import (
        DEFAULT_SERVING,
        DEFAULT_SERVING_HARDWARE,
        resolve_config_path,
        serve,
        shipped_path,
    )
    from palmsim.config.loader import load_hardware, load_serving
    from palmsim.explore.search import check_search_options
    from palmsim.mapping.inference import two_axes

    check_search_options(space, max_simulations=max_simulations)

    hw_path = resolve_config_path(hardware, "hardware") if hardware else None
    spec = load_serving(serving or shipped_path(DEFAULT_SERVING), overrides)
    hw = load_hardware(hw_path or shipped_path(DEFAULT_SERVING_HARDWARE), overrides)
    sched = spec.scheduler
    own = two_axes(spec.tp_2d)
    if space.tp_2d is None and own is not None:  # the serving file's layout is a candidate
        space = dataclasses.replace(space, tp_2d=(own,))
    budget = min(hw.num_tiles, spec.replicas * spec.tp * spec.pp)
    if space.replicas is not None:  # explicit replica counts may use the whole chip
        budget = hw.num_tiles
    found = candidates(budget, space, sched.max_num_seqs, sched.max_num_batched_tokens)
    if not found:
        room = (
            f"the hardware's {budget} tiles"
            if space.replicas is not None
            else f"{budget} tile{'s' * (budget != 1)}, the serving file's replicas x tp x pp "
            f"(--replicas lets a search use all {hw.num_tiles} of the hardware's)"
        )
        raise MappingError(f"nothing to search: no tp x pp x replicas of the space fits in {room}")
    simulated = 0
    for i, cand in enumerate(found):
        if max_simulations is not None and simulated >= max_simulations:
            break
        if progress is not None:
            progress(f"[{i + 1}/{len(found)}] {cand.name}")
        try:
            result = serve(hardware, workload, serving, overrides=[*overrides, *cand.overrides])
        except MappingError as why:
            cand.status, cand.reason = "infeasible", str(why).splitlines()[0]
            continue
        cand.status, cand.summary = "simulated", result.summary
        simulated += 1
    done = sorted((c for c in found if c.status == "simulated"), key=GoodputCandidate.sort_key)
    return done + [c for c in found if c.status != "simulated"]


def goodput_rows(found: Sequence[GoodputCandidate]) -> list[list[Any]]:
    """Rows of results.csv (:data:`GOODPUT_COLUMNS`), ranked candidates first."""
    rows = []
    rank = 0
    for c in found:
        s = c.summary
        if c.status == "simulated":
            rank += 1
        rows.append(
            [
                rank if c.status == "simulated" else "",
                c.tp,
                "" if c.tp_2d is None else f"{c.tp_2d[0]}x{c.tp_2d[1]}",
                c.pp,
                c.replicas,
                c.max_num_seqs,
                c.max_num_batched_tokens,
                c.status,
                s.get("goodput_requests_per_s", ""),
                s.get("slo_attainment", ""),
                s.get("throughput_requests_per_s", ""),
                s.get("ttft_p90_s", ""),
                s.get("tpot_p90_s", ""),
                (s.get("energy") or {}).get("energy_per_output_token_j", ""),
                (s.get("cost") or {}).get("cost_per_million_output_tokens_usd", ""),
                c.reason,
            ]
        )
    return rows
