"""The verdict a report opens with: which resource bounds the iteration, and what changing it buys.

A pure function of ``summary.json`` (:func:`palmsim.report.metrics.summarize`): it reads the
mean tile's compute time split by what dominated it (``tile_time_by_bound_s``: compute,
memory bandwidth, kernel launch latency) and its waits for the host to issue ops (host
dispatch), the pipeline bubble and the exposed communication,
expresses each as a share of the iteration time, and names the largest. Definitions and the
rule are in ``docs/metrics.md`` ("Verdict").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CANDIDATES", "Verdict", "format_verdict", "verdict"]

#: The resources a verdict can name, in the order ties are broken.
CANDIDATES: tuple[str, ...] = (
    "compute",
    "memory bandwidth",
    "kernel launch latency",
    "host dispatch",
    "pipeline bubble",
    "exposed communication",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The bounding resource of one run."""

    resource: str  # one of CANDIDATES
    share: float  # its time over the iteration time [ratio]
    time_s: float  # its time per iteration [s]
    where: str  # the channel or tile it points at ("" when none)
    change: str  # what changing it would buy, one sentence
    shares: tuple[tuple[str, float], ...]  # every candidate's share, largest first


def _human_time(value_s: float) -> str:
    if abs(value_s) >= 1.0:
        return f"{value_s:.3g} s"
    if abs(value_s) >= 1e-3:
        return f"{value_s * 1e3:.3g} ms"
    return f"{value_s * 1e6:.3g} µs"


def verdict(summary: Mapping[str, Any]) -> Verdict | None:
    """The resource with the largest share of the iteration time, or None for an empty run.

    Shares of the iteration time T:

    - ``compute``, ``memory bandwidth``, ``kernel launch latency``: the mean tile's compute
      time dominated by each (``tile_time_by_bound_s``) over T;
    - ``host dispatch``: the mean tile's waits for the host to issue the ops it has run
      (``tile_time_by_bound_s["host"]``, an untraced pass) over T;
    - ``pipeline bubble``: ``pipeline_bubble_fraction``;
    - ``exposed communication``: ``exposed_communication_s`` over T.

    What changing it buys is stated as an upper bound: halving a compute, memory or launch
    term saves at most half its time, and removing the bubble, the host's dispatch or the
    exposed communication at most all of it (less where the time is off the critical path).
    """
    time_s = float(summary.get("iteration_time_s", 0.0))
    if time_s <= 0:
        return None
    by = summary.get("tile_time_by_bound_s", {})
    seconds = {
        "compute": float(by.get("compute", 0.0)),
        "memory bandwidth": float(by.get("memory", 0.0)),
        "kernel launch latency": float(by.get("latency", 0.0)),
        "host dispatch": float(by.get("host", 0.0)),
        "pipeline bubble": float(summary.get("pipeline_bubble_fraction", 0.0)) * time_s,
        "exposed communication": float(summary.get("exposed_communication_s", 0.0)),
    }
    ranked = sorted(CANDIDATES, key=lambda c: (-seconds[c], CANDIDATES.index(c)))
    best = ranked[0]
    best_s = seconds[best]
    dram = summary.get("dram_bandwidth_utilization_max_channel", "")
    link = summary.get("noc_link_utilization_max_channel", "")
    where, change = "", ""
    half = _human_time(best_s / 2)
    if best == "compute":
        change = f"twice the FLOP/s per tile would save at most {half} per iteration"
    elif best == "memory bandwidth":
        where = (
            f"hottest DRAM port {dram} at "
            f"{100 * float(summary.get('dram_bandwidth_utilization_max', 0.0)):.1f} %"
            if dram
            else ""
        )
        change = f"twice the memory bandwidth would save at most {half} per iteration"
    elif best == "kernel launch latency":
        change = (
            f"halving the per-kernel launch latency (tile.gemm and tile.memory_ops "
            f"launch_latency, e.g. CUDA graphs) would save at most {half} per iteration"
        )
    elif best == "host dispatch":
        change = (
            f"replaying the pass from a captured trace (inference.trace, serving.trace) "
            f"would save at most {_human_time(best_s)} per iteration, halving "
            f"tile.host_dispatch at most {half}"
        )
    elif best == "pipeline bubble":
        change = (
            f"more micro-batches per iteration or fewer stages shrink it: removing it would "
            f"save at most {_human_time(best_s)} per iteration"
        )
    else:
        where = (
            f"hottest link {link} at "
            f"{100 * float(summary.get('noc_link_utilization_max', 0.0)):.1f} %"
            if link
            else ""
        )
        change = (
            f"overlapping it with compute or faster links would save at most "
            f"{_human_time(best_s)} per iteration"
        )
    return Verdict(
        best,
        best_s / time_s,
        best_s,
        where,
        change,
        tuple((c, seconds[c] / time_s) for c in ranked),
    )


def format_verdict(v: Verdict | None) -> str:
    """One paragraph: the bounding resource, its share and time, where, and what it buys."""
    if v is None:
        return "no verdict: the run has no simulated time"
    where = f" ({v.where})" if v.where else ""
    others = ", ".join(f"{c} {100 * s:.1f} %" for c, s in v.shares[1:] if s > 0)
    text = (
        f"Bound by {v.resource}{where}: {100 * v.share:.1f} % of the iteration "
        f"({_human_time(v.time_s)}). {v.change[0].upper()}{v.change[1:]}."
    )
    return f"{text} Then: {others}." if others else text
