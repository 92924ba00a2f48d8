"""Pure metrics of one run's records: utilisation, bubbles, throughput, MFU, memory.

Every function here is a pure function of a :class:`~palmsim.engine.records.RunTrace` (and, where
needed, the :class:`~palmsim.mapping.plan.MappingPlan` and a chip). Nothing here simulates,
prints or writes files. All inputs and outputs are in SI base units (seconds, bytes, FLOP);
``docs/metrics.md`` defines each metric with its formula and unit.

The chip is used as a duck type: it needs ``channels`` (each with ``index``, ``kind``,
``bandwidth_bytes_per_s`` and ``name``) and ``num_tiles``. A channel of kind ``dram`` is a DRAM
port; every other kind (``intra_die``, ``inter_die``, ``nvlink``, ``nic``) is a network link.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from palmsim.engine.records import (
    COMPUTE_CATEGORIES,
    DRAM_KIND,
    WAIT_CATEGORIES,
    FlowRecord,
    IntervalRecord,
    Records,
    RunTrace,
    sum_in_order,
)
from palmsim.mapping.plan import ComputeStep, MappingPlan
from palmsim.report.verdict import verdict

__all__ = [
    "BOUNDS",
    "COMPUTE_CATEGORIES",
    "DRAM_KIND",
    "PIPELINE_CATEGORIES",
    "WAIT_CATEGORIES",
    "ChannelLike",
    "ChipLike",
    "IntervalColumns",
    "busy_intervals_by_channel",
    "channel_bytes",
    "compute_busy_s",
    "exposed_communication_s",
    "flow_channel_columns",
    "flow_channel_entries",
    "format_summary_table",
    "inference_metrics",
    "intersection_length_s",
    "link_busy_intervals",
    "merge_intervals",
    "op_table_rows",
    "pipeline_bubble_fraction",
    "step_bound",
    "steps_by_label",
    "sum_in_order",
    "summarize",
    "tile_busy_intervals",
    "tile_utilization",
    "time_by_bound_s",
    "total_length_s",
]

#: Interval categories that make up a stage's pipeline work: its passes and the waits
#: inside them (the optimizer step is outside the pipeline).
PIPELINE_CATEGORIES: frozenset[str] = frozenset(
    {"forward", "backward", "recompute", "prefill", "decode"} | WAIT_CATEGORIES
)

Interval = tuple[float, float]


class ChannelLike(Protocol):
    """What the report needs of one chip channel (a link direction or a DRAM port)."""

    index: int
    kind: str
    bandwidth_bytes_per_s: float

    @property
    def name(self) -> str:
        """Human-readable channel name."""
        ...


class ChipLike(Protocol):
    """What the report needs of a chip."""

    @property
    def channels(self) -> Sequence[Any]:
        """Every channel, indexed by ``channel.index``."""
        ...

    @property
    def num_tiles(self) -> int:
        """Number of tiles (GPUs) of the machine."""
        ...


# --------------------------------------------------------------------------- interval algebra


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Union of closed intervals ``(start_s, end_s)``, merged and sorted by start.

    Touching or overlapping intervals merge into one; empty ones (``end_s <= start_s``) vanish.
    """
    merged: list[Interval] = []
    for start_s, end_s in sorted([i for i in intervals if i[1] > i[0]]):
        if merged and start_s <= merged[-1][1]:
            if end_s > merged[-1][1]:
                merged[-1] = (merged[-1][0], end_s)
        else:
            merged.append((start_s, end_s))
    return merged


def total_length_s(merged: Sequence[Interval]) -> float:
    """Total length [s] of disjoint intervals (as returned by :func:`merge_intervals`)."""
    return float(sum(end_s - start_s for start_s, end_s in merged))


def intersection_length_s(a: Sequence[Interval], b: Sequence[Interval]) -> float:
    """Length [s] of the overlap of two merged, sorted interval lists."""
    i = j = 0
    overlap_s = 0.0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if hi > lo:
            overlap_s += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return overlap_s


# --------------------------------------------------------------------------- tiles


def tile_busy_intervals(
    intervals: Iterable[IntervalRecord], categories: Iterable[str] | None = None
) -> dict[int, list[Interval]]:
    """Per tile, the merged busy intervals of its compute records.

    Args:
        intervals: compute records.
        categories: keep only these categories (``None`` keeps all).

    Returns:
        ``{tile: [(start_s, end_s), ...]}`` for every tile with at least one record, merged.
    """
    columns = IntervalColumns.of(intervals)
    busy = columns.busy(None if categories is None else frozenset(categories))
    return {tile: list(zip(s.tolist(), e.tolist(), strict=True)) for tile, (s, e) in busy.items()}


Spans = tuple[np.ndarray, np.ndarray]  # merged intervals as (starts [s], ends [s]) arrays


def _merged_spans(starts_s: np.ndarray, ends_s: np.ndarray) -> Spans:
    """:func:`merge_intervals` on arrays, with the very same result: no arithmetic is done,
    each merged span is one record's start and the largest end of the records it joins.

    Sorted by (start, end) as ``sorted`` sorts the tuples, a record opens a new span when it
    starts after the running maximum of the ends before it (the current span's end: the spans
    before it all ended earlier still).
    """
    keep = ends_s > starts_s
    starts_s, ends_s = starts_s[keep], ends_s[keep]
    if len(starts_s) == 0:
        return starts_s, ends_s
    order = np.lexsort((ends_s, starts_s))
    starts_s, ends_s = starts_s[order], ends_s[order]
    reach_s = np.maximum.accumulate(ends_s)
    opens = np.empty(len(starts_s), dtype=bool)
    opens[0] = True
    np.greater(starts_s[1:], reach_s[:-1], out=opens[1:])
    firsts = np.flatnonzero(opens)
    lasts = np.append(firsts[1:] - 1, len(starts_s) - 1)
    return starts_s[firsts], reach_s[lasts]


def _spans_length_s(spans: Spans) -> float:
    """:func:`total_length_s` of merged spans, summed in the same order by ``sum``."""
    return float(sum((spans[1] - spans[0]).tolist()))


def _overlap_length_s(a: Spans, b: Spans) -> float:
    """:func:`intersection_length_s` of two merged span arrays, with the same result.

    The overlaps of disjoint sorted spans are disjoint and come in time order by (index in
    ``a``, index in ``b``); they are added in that order, as the two-pointer walk adds them.
    For each span of ``a``, the spans of ``b`` that may meet it are those ending after it
    starts and starting before it ends.
    """
    (a_start, a_end), (b_start, b_end) = a, b
    first = np.searchsorted(b_end, a_start, side="right")
    count = np.maximum(np.searchsorted(b_start, a_end, side="left") - first, 0)
    total = int(count.sum())
    if total == 0:
        return 0.0
    i = np.repeat(np.arange(len(a_start)), count)
    j = np.arange(total) - np.repeat(np.cumsum(count) - count, count) + np.repeat(first, count)
    overlap_s = np.minimum(a_end[i], b_end[j]) - np.maximum(a_start[i], b_start[j])
    return sum_in_order(overlap_s[overlap_s > 0])


@dataclass(frozen=True)
class IntervalColumns:
    """The tile, category (codes into ``categories``), start and end of every interval
    record, as columns."""

    tile: np.ndarray
    category: np.ndarray
    categories: tuple[str, ...]
    start_s: np.ndarray
    end_s: np.ndarray

    @classmethod
    def of(cls, intervals: Iterable[IntervalRecord]) -> IntervalColumns:
        records = Records.of(IntervalRecord, intervals)
        return cls(
            records.column("tile"),
            records.codes("category"),
            records.table("category"),
            records.column("start_s"),
            records.column("end_s"),
        )

    def mask(
        self, categories: frozenset[str] | None, tiles: Iterable[int] | None = None
    ) -> np.ndarray:
        """Records of these categories (``None``: all) on these tiles (``None``: all)."""
        keep = (
            np.ones(len(self.category), dtype=bool)
            if categories is None
            else np.isin(
                self.category, [i for i, c in enumerate(self.categories) if c in categories]
            )
        )
        if tiles is not None:
            keep &= np.isin(self.tile, np.fromiter(set(tiles), dtype=np.int64))
        return keep

    def busy(
        self, categories: frozenset[str] | None, tiles: Iterable[int] | None = None
    ) -> dict[int, Spans]:
        """Per tile with a record of these categories (on these tiles), its merged spans;
        tiles in increasing order (:func:`tile_busy_intervals` as arrays)."""
        keep = self.mask(categories, tiles)
        tile, start_s, end_s = self.tile[keep], self.start_s[keep], self.end_s[keep]
        order = np.argsort(tile, kind="stable")
        tile, start_s, end_s = tile[order], start_s[order], end_s[order]
        bounds = np.flatnonzero(np.diff(tile)) + 1
        firsts = [0, *bounds.tolist()]
        lasts = [*bounds.tolist(), len(tile)]
        return {
            int(tile[a]): _merged_spans(start_s[a:b], end_s[a:b])
            for a, b in zip(firsts, lasts, strict=True)
            if b > a
        }


def compute_busy_s(
    intervals: Iterable[IntervalRecord], tile: int, categories: Iterable[str] | None = None
) -> float:
    """Seconds ``tile`` spent computing: the length of the union of its intervals [s].

    Args:
        intervals: compute records of the run.
        tile: tile index.
        categories: count only these categories (``None`` counts all, optimizer included).
    """
    keep = None if categories is None else frozenset(categories)
    own = (
        (r.start_s, r.end_s)
        for r in intervals
        if r.tile == tile and (keep is None or r.category in keep)
    )
    return total_length_s(merge_intervals(own))


def tile_utilization(
    intervals: Iterable[IntervalRecord], tiles: Iterable[int], makespan_s: float
) -> dict[int, float]:
    """Per tile, compute busy time over the makespan [ratio in 0..1].

    A tile without records has utilisation 0. A zero makespan gives 0 for every tile.
    """
    tiles = list(tiles)
    busy = IntervalColumns.of(intervals).busy(COMPUTE_CATEGORIES, tiles)
    return _utilization(busy, tiles, makespan_s)


def _utilization(
    busy: Mapping[int, Spans], tiles: Iterable[int], makespan_s: float
) -> dict[int, float]:
    """:func:`tile_utilization` from the tiles' merged compute spans."""
    none: Spans = (np.zeros(0), np.zeros(0))
    return {
        tile: (_spans_length_s(busy.get(tile, none)) / makespan_s if makespan_s > 0 else 0.0)
        for tile in tiles
    }


# --------------------------------------------------------------------------- channels


def busy_intervals_by_channel(flows: Iterable[FlowRecord]) -> dict[int, list[Interval]]:
    """Per channel, the merged intervals during which at least one flow used it.

    A flow occupies every channel of its route from ``start_s`` to ``end_s``.
    """
    raw: dict[int, list[Interval]] = defaultdict(list)
    for flow in flows:
        for channel in flow.channels:
            raw[channel].append((flow.start_s, flow.end_s))
    return {channel: merge_intervals(raw[channel]) for channel in sorted(raw)}


def link_busy_intervals(flows: Iterable[FlowRecord], channel: int) -> list[Interval]:
    """Merged, sorted ``(start_s, end_s)`` intervals during which any flow used ``channel``."""
    return merge_intervals((f.start_s, f.end_s) for f in flows if channel in f.channels)


def channel_bytes(flows: Iterable[FlowRecord], num_channels: int) -> np.ndarray:
    """Bytes each channel carried: every flow adds its size to each channel of its route.

    Returns:
        ``float64`` array of length ``num_channels`` [B].
    """
    channel_of, sizes = flow_channel_columns(flows)
    # bincount adds each weight to its bin in input order: each channel's flows in order,
    # as ``carried[channel] += size`` flow by flow would
    return np.bincount(channel_of, weights=sizes, minlength=num_channels)[:num_channels]


def flow_channel_columns(flows: Iterable[FlowRecord]) -> tuple[np.ndarray, np.ndarray]:
    """One entry per (flow, channel of its route), flows in order: the channel and the
    flow's size [B]."""
    records = Records.of(FlowRecord, flows)
    flow_of, channel_of = flow_channel_entries(records)
    return channel_of, records.column("size_bytes")[flow_of]


def flow_channel_entries(flows: Records[FlowRecord]) -> tuple[np.ndarray, np.ndarray]:
    """One entry per (flow, channel of its route), flows in order and each route in its
    order: the flow's index and the channel (int32 both: a wafer flow crosses up to tens of
    channels, so these are the largest arrays a summary makes)."""
    routes = flows.table("channels")
    route_hops = np.fromiter(map(len, routes), dtype=np.int64, count=len(routes))
    flat = np.fromiter(
        itertools.chain.from_iterable(routes), dtype=np.int32, count=int(route_hops.sum())
    )
    route = flows.codes("channels")
    hops = route_hops[route]
    # entry e of flow f (its k-th channel) is flat[route_first[route[f]] + k], and
    # k = e - first_entry[f]: one shift per flow, repeated, plus the entry's index
    shift = (np.cumsum(route_hops) - route_hops)[route] - (np.cumsum(hops) - hops)
    index = np.repeat(shift, hops)
    index += np.arange(len(index))
    channel_of = flat[index]
    del index
    return np.repeat(np.arange(len(route), dtype=np.int32), hops), channel_of


def _max_channel_utilization(
    carried_bytes: np.ndarray, channels: Sequence[Any], time_s: float, *, dram: bool
) -> tuple[float, str]:
    """Largest bytes/(bandwidth·time) over DRAM (or non-DRAM) channels, and that channel's name.

    Ties go to the lowest channel index; with no such channel (or zero time) the result is
    ``(0.0, "")``.
    """
    best_value, best_name = 0.0, ""
    if time_s <= 0:
        return best_value, best_name
    for channel in channels:
        if (channel.kind == DRAM_KIND) != dram or channel.bandwidth_bytes_per_s <= 0:
            continue
        value = float(carried_bytes[channel.index]) / (channel.bandwidth_bytes_per_s * time_s)
        if value > best_value or not best_name:
            best_value, best_name = value, str(channel.name)
    return best_value, best_name


# --------------------------------------------------------------------------- pipeline


def pipeline_bubble_fraction(
    trace: RunTrace, plan: MappingPlan, columns: IntervalColumns | None = None
) -> float:
    """Fraction of the pipeline window the stages of replica 0 sit idle [ratio].

    ``busy_s(stage)`` is, for each simulated tile of the stage in replica 0 (every TP rank,
    or rank 0 standing for its symmetric ranks), the length of the union of its
    forward/backward/recompute intervals and its waits in tensor-parallel collectives
    (``comm``), averaged over those tiles: time the stage is held by its own work, not by the
    pipeline. ``window_s`` runs from the first start to the last end of any such interval on
    those tiles. Then::

        bubble = 1 - mean over stages of busy_s(stage) / window_s

    For uniform stages without communication this is (p-1)/(m+p-1) for GPipe and 1F1B.
    Returns 0.0 when replica 0 has no pipeline work. ``columns`` are the trace's intervals as
    columns, if the caller has them.
    """
    if not plan.stage_tiles:
        return 0.0
    # the stages' simulated ranks (all, or rank 0 standing for the others)
    replica0 = [stage[: plan.simulated_ranks] for stage in plan.stage_tiles[0]]
    tiles = {t for stage in replica0 for t in stage}
    if columns is None:
        columns = IntervalColumns.of(trace.intervals)
    busy = columns.busy(PIPELINE_CATEGORIES, tiles)
    if not busy:
        return 0.0
    window_start_s = min(float(starts[0]) for starts, _ in busy.values())
    window_end_s = max(float(ends[-1]) for _, ends in busy.values())
    window_s = window_end_s - window_start_s
    if window_s <= 0:
        return 0.0
    none: Spans = (np.zeros(0), np.zeros(0))
    stage_busy_s = [
        sum(_spans_length_s(busy.get(t, none)) for t in stage) / len(stage) if stage else 0.0
        for stage in replica0
    ]
    # Every stage's busy time lies inside the window, so the bubble is >= 0 but for rounding
    # (a one-stage run sums to the window's length in another order): clamp it, never "-0.0 %".
    return max(0.0, float(1.0 - sum(stage_busy_s) / len(stage_busy_s) / window_s))


def exposed_communication_s(
    trace: RunTrace, tiles: Iterable[int], busy: Mapping[int, Spans] | None = None
) -> float:
    """Largest per-tile time with network traffic in flight but no compute running [s].

    For a tile, communication time is the union of the intervals of non-DRAM flows it sends or
    receives; the exposed part is what of it does not overlap the tile's compute intervals.
    Returns the maximum over ``tiles`` (0.0 for no tiles). ``busy`` is the tiles' merged
    compute spans, if the caller has them.
    """
    tile_set = set(tiles)
    flows = trace.flows
    network = ~flows.isin("category", (DRAM_KIND,))
    src, dst = flows.column("src")[network], flows.column("dst")[network]
    start_s, end_s = flows.column("start_s")[network], flows.column("end_s")[network]
    # each flow once per tile at either end (once for a flow from a tile to itself)
    tile = np.concatenate((src, dst[dst != src]))
    start_s = np.concatenate((start_s, start_s[dst != src]))
    end_s = np.concatenate((end_s, end_s[dst != src]))
    no_category = np.zeros(len(tile), dtype=np.int32)
    comm = IntervalColumns(tile, no_category, ("",), start_s, end_s).busy(None, tile_set)
    if busy is None:
        busy = IntervalColumns.of(trace.intervals).busy(COMPUTE_CATEGORIES, tile_set)
    none: Spans = (np.zeros(0), np.zeros(0))
    worst_s = 0.0
    for t, merged in comm.items():
        exposed = _spans_length_s(merged) - _overlap_length_s(merged, busy.get(t, none))
        worst_s = max(worst_s, exposed)
    return float(worst_s)


# --------------------------------------------------------------------------- bounds

#: What set an op's time, in the order ties are broken: the three terms of a compute
#: interval (:func:`step_bound`), then ``host``, a tile's wait for the host to issue an op
#: it has run (a ``host`` interval).
_STEP_BOUNDS: tuple[str, ...] = ("compute", "memory", "latency")
BOUNDS: tuple[str, ...] = (*_STEP_BOUNDS, "host")


def step_bound(duration_s: float, launch_latency_s: float, flop_time_s: float) -> str:
    """What dominated one simulated compute interval: ``compute``, ``memory`` or ``latency``.

    The cost model makes a step's time ``launch + Σ max(flop_i, memory_i)`` over its ops
    (``palmsim.hardware.compute``: the roofline, plus the fixed per-kernel time of a GPU
    config's ``tile.gemm``/``tile.memory_ops``), stretched in the simulation by contended DRAM
    flows. So the simulated duration ``d`` splits into three terms: the launch latency
    ``L`` (the plan's), the FLOP time at the achievable rate ``C`` (the plan's), and what
    memory traffic added beyond them, ``M = max(0, d - L - C)``. The bound is the largest of
    the three (ties: compute, then memory, then latency). ``latency`` is thus its own
    category: a decode GEMM of a few tokens that moves little and computes little, but pays
    28.9 µs to launch, is latency-bound, not memory-bound.
    """
    memory_s = max(0.0, duration_s - launch_latency_s - flop_time_s)
    terms = {"compute": flop_time_s, "memory": memory_s, "latency": launch_latency_s}
    return max(_STEP_BOUNDS, key=lambda bound: (terms[bound], -BOUNDS.index(bound)))


def steps_by_label(plan: MappingPlan) -> dict[tuple[str, str], ComputeStep]:
    """Every compute step of the plan by ``(category, label)``, the pair its intervals carry
    (a layer's forward and backward steps share a label, so the category tells them apart)."""
    found: dict[tuple[str, str], ComputeStep] = {}
    groups: list[tuple[str, tuple[Any, ...]]] = []
    for p in plan.programs:
        groups += [("forward", p.forward), ("backward", p.backward)]
        groups += [("recompute", p.recompute), ("optimizer", (p.optimizer,))]
    if plan.inference is not None:
        for st in plan.inference.stages:
            groups.append(("prefill", st.prefill))
            groups += [("decode", steps) for steps in st.decode]
    for category, steps in groups:
        for step in steps:
            for s in (step, getattr(step, "overlap", None)):
                if isinstance(s, ComputeStep):
                    found.setdefault((category, s.label), s)
    return found


def _bound_of(record: IntervalRecord, steps: Mapping[tuple[str, str], ComputeStep]) -> str:
    step = steps.get((record.category, record.label))
    duration_s = record.end_s - record.start_s
    if step is None:  # not a step of the plan (hand-made records): no launch, no FLOP term
        return "memory" if record.flop == 0 and duration_s > 0 else "compute"
    return step_bound(duration_s, step.launch_latency_s, step.flop_time_s)


def time_by_bound_s(trace: RunTrace, plan: MappingPlan) -> dict[str, float]:
    """Mean over the simulated tiles of their compute time by :func:`step_bound`, and of
    their waits for the host [s].

    Sums each tile's compute intervals (every compute category, the optimizer included) by
    what dominated them, and its ``host`` intervals as ``host``, and divides by the number
    of simulated tiles; ``compute`` + ``memory`` + ``latency`` is then the mean tile's busy
    time (compute intervals of one tile do not overlap), and ``host`` the time it stood
    idle within a pass because the host had not yet issued the op it had run.
    """
    steps = steps_by_label(plan)
    tiles = set(plan.simulated_tiles)
    intervals = trace.intervals
    on_tiles = intervals.isin("tile", tiles)
    host = intervals.isin("category", {"host"}) & on_tiles
    host_s = float(np.sum(intervals.column("end_s")[host] - intervals.column("start_s")[host]))
    categories, labels = intervals.table("category"), intervals.table("label")
    keep = intervals.isin("category", COMPUTE_CATEGORIES) & on_tiles
    # per record: its step's launch latency and FLOP time, NaN for a record of no step; a
    # (category, label) pair is coded as category code x labels + label code
    pair = intervals.codes("category")[keep] * np.int64(len(labels))
    pair += intervals.codes("label")[keep]
    pairs, pair_index = np.unique(pair, return_inverse=True)
    found = [
        steps.get((categories[p // len(labels)], labels[p % len(labels)])) for p in pairs.tolist()
    ]
    launch_s = np.array([math.nan if s is None else s.launch_latency_s for s in found])
    flop_s = np.array([math.nan if s is None else s.flop_time_s for s in found])
    launch_s = launch_s[pair_index]
    flop_s = flop_s[pair_index]
    start_s, end_s = intervals.column("start_s")[keep], intervals.column("end_s")[keep]
    flop = intervals.column("flop")[keep]
    bound = _bounds(end_s - start_s, launch_s, flop_s, flop)
    # bincount adds in record order, as ``total[bound] += duration`` record by record
    total = np.bincount(bound, weights=end_s - start_s, minlength=len(BOUNDS))
    total[BOUNDS.index("host")] = host_s
    return {name: float(total[i]) / len(tiles) if tiles else 0.0 for i, name in enumerate(BOUNDS)}


def _bounds(
    duration_s: np.ndarray, launch_s: np.ndarray, flop_time_s: np.ndarray, flop: np.ndarray
) -> np.ndarray:
    """:func:`step_bound` of many intervals at once, as indices into :data:`BOUNDS`; where
    the step is unknown (NaN launch), :func:`_bound_of`'s rule: memory if the interval did
    no FLOP and lasted, else compute."""
    memory_s = np.maximum(0.0, duration_s - launch_s - flop_time_s)
    # the largest term, ties to the earlier of compute, memory, latency
    bound = np.where(
        (flop_time_s >= memory_s) & (flop_time_s >= launch_s),
        0,
        np.where(memory_s >= launch_s, 1, 2),
    )
    unknown = np.isnan(launch_s)
    bound[unknown] = np.where((flop[unknown] == 0) & (duration_s[unknown] > 0), 1, 0)
    return bound


# --------------------------------------------------------------------------- memory


def _memory_peaks(trace: RunTrace, plan: MappingPlan) -> tuple[int, dict[str, float]] | None:
    """The simulated tile with the largest static + peak-activation bytes, and its breakdown."""
    peak_activation: dict[int, float] = {}
    memory = trace.memory
    for tile, held in zip(
        memory.column("tile").tolist(), memory.column("activation_bytes").tolist(), strict=True
    ):
        if held > peak_activation.get(tile, -math.inf):
            peak_activation[tile] = held
    best: tuple[int, dict[str, float]] | None = None
    best_total = -math.inf
    simulated = set(plan.simulated_tiles)
    for tile, breakdown in sorted(plan.memory, key=lambda item: item[0]):
        if tile not in simulated:
            continue
        parts = {
            "weights": float(breakdown.weights),
            "gradients": float(breakdown.gradients),
            "optimizer": float(breakdown.optimizer),
            "activations": float(peak_activation.get(tile, breakdown.activations)),
        }
        total = sum(parts.values())
        if total > best_total:
            best, best_total = (tile, parts), total
    return best


# --------------------------------------------------------------------------- summary


def _granularity(chip: Any) -> list[int]:
    """Cores per simulated tile, ``[rows, cols]`` (``chip.granularity``; ``[1, 1]`` for a GPU
    cluster or a chip without a spec)."""
    wafer = getattr(getattr(chip, "spec", None), "wafer", None)
    return [wafer.unit_rows, wafer.unit_cols] if wafer is not None else [1, 1]


def summarize(
    trace: RunTrace,
    chip: ChipLike,
    plan: MappingPlan,
    *,
    workload_name: str,
    hardware_name: str,
    version: str,
) -> dict[str, Any]:
    """The headline metrics of one run, as a JSON-ready dict (see ``docs/metrics.md``).

    Values are Python ``float``/``int``/``str`` or dicts of them; key names carry their unit.
    Everything is deterministic for identical inputs except ``simulation_wall_time_s``.

    Args:
        trace: the run's records.
        chip: the chip the run used (duck-typed, see :class:`ChipLike`).
        plan: the mapping the run executed.
        workload_name: name of the workload, reported as ``workload``.
        hardware_name: name of the hardware, reported as ``hardware``.
        version: palmsim version, reported as ``palmsim_version``.
    """
    iteration_time_s = float(trace.end_time_s)
    num_used = len(plan.used_tiles)
    # With symmetric replicas the records are replica 0's, which stands for every replica:
    # per-tile figures come from its tiles, totals are its totals times the replicas.
    simulated = plan.simulated_tiles
    replication = plan.replication

    def per_iteration(value: float) -> float:
        return float(value) / iteration_time_s if iteration_time_s > 0 else 0.0

    peak_total_flop_per_s = num_used * plan.peak_flop_per_s
    model_flop = float(plan.model_flop_per_iteration)
    # summed by ``sum`` over the column's floats, in record order as before
    hardware_flop = float(sum(trace.intervals.column("flop").tolist())) * replication
    capacity_flop = iteration_time_s * peak_total_flop_per_s

    # the interval columns and the simulated tiles' compute spans, built once for every metric
    columns = IntervalColumns.of(trace.intervals)
    compute_busy = columns.busy(COMPUTE_CATEGORIES, simulated)
    utilization = _utilization(compute_busy, simulated, iteration_time_s)
    util_values = list(utilization.values()) or [0.0]

    channels = tuple(chip.channels)
    carried = channel_bytes(trace.flows, len(channels))
    noc_max, noc_name = _max_channel_utilization(carried, channels, iteration_time_s, dram=False)
    dram_max, dram_name = _max_channel_utilization(carried, channels, iteration_time_s, dram=True)

    # per category, each flow's bytes x replicas added in flow order (bincount adds its
    # weights in input order, from 0.0, as ``comm_bytes[category] += ...`` did)
    flow_category = trace.flows.codes("category")
    flow_categories = trace.flows.table("category")
    sent = np.bincount(
        flow_category,
        weights=trace.flows.column("size_bytes") * replication,
        minlength=len(flow_categories),
    )
    count = np.bincount(flow_category, minlength=len(flow_categories))
    comm_bytes = {name: float(sent[i]) for i, name in enumerate(flow_categories) if count[i] > 0}

    memory = _memory_peaks(trace, plan)
    if memory is None:
        memory_tile, memory_parts = (
            -1,
            dict.fromkeys(("weights", "gradients", "optimizer", "activations"), 0.0),
        )
    else:
        memory_tile, memory_parts = memory

    summary = {
        "iteration_time_s": iteration_time_s,
        "throughput_samples_per_s": per_iteration(plan.samples_per_iteration),
        "throughput_tokens_per_s": per_iteration(plan.tokens_per_iteration),
        "model_flop_per_iteration": model_flop,
        "model_flop_per_s": per_iteration(model_flop),
        "hardware_flop_per_iteration": hardware_flop,
        "mfu": model_flop / capacity_flop if capacity_flop > 0 else 0.0,
        "hfu": hardware_flop / capacity_flop if capacity_flop > 0 else 0.0,
        "peak_flop_per_s_per_tile": float(plan.peak_flop_per_s),
        "pipeline_bubble_fraction": pipeline_bubble_fraction(trace, plan, columns),
        "tile_compute_utilization": {
            "mean": float(sum(util_values) / len(util_values)),
            "min": float(min(util_values)),
            "max": float(max(util_values)),
        },
        "noc_link_utilization_max": noc_max,
        "noc_link_utilization_max_channel": noc_name,
        "dram_bandwidth_utilization_max": dram_max,
        "dram_bandwidth_utilization_max_channel": dram_name,
        "communication_bytes_by_category": {k: comm_bytes[k] for k in sorted(comm_bytes)},
        "exposed_communication_s": exposed_communication_s(trace, simulated, compute_busy),
        "tile_time_by_bound_s": time_by_bound_s(trace, plan),
        "memory_peak_bytes_per_tile_max": float(sum(memory_parts.values())),
        "memory_peak_tile": int(memory_tile),
        "memory_breakdown_bytes": memory_parts,
        "num_tiles_used": num_used,
        "num_tiles_total": int(chip.num_tiles),
        # cores per simulated tile, [rows, cols] (chip.granularity; [1, 1] on a GPU cluster)
        "granularity_cores_per_tile": _granularity(chip),
        "simulated_replicas": int(plan.simulated_replicas),
        "simulated_tp_ranks": int(plan.simulated_ranks),
        "num_stages": plan.num_stages,
        "num_microbatches": int(plan.num_microbatches),
        "simulated_events": int(trace.num_events),
        "simulation_wall_time_s": float(trace.wall_time_s),
        "palmsim_version": str(version),
        # JSON has no tuples: a tuple field (tp_2d, recompute_modules) is stored as a list
        "mapping": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(plan.mapping).items()
        },
        "hardware": str(hardware_name),
        "workload": str(workload_name),
    }
    if plan.dropped_token_slots > 0:
        summary["moe_dropped_token_slots"] = float(plan.dropped_token_slots)
        routed = plan.tokens_per_iteration * _routed_per_token(plan)
        summary["moe_dropped_fraction"] = (
            float(plan.dropped_token_slots / routed) if routed else 0.0
        )
    if plan.inference is not None:
        # Training notions; a serving run has no model-FLOP convention and no samples.
        for key in ("model_flop_per_iteration", "model_flop_per_s", "mfu"):
            del summary[key]
        del summary["throughput_samples_per_s"]
        summary.update(inference_metrics(trace, plan))
    return summary


def _routed_per_token(plan: MappingPlan) -> float:
    """Routed slots per token of the batch over all MoE layers (``k`` per MoE layer), from
    the plan's record of them."""
    return plan.routed_slots_per_token


def inference_metrics(trace: RunTrace, plan: MappingPlan) -> dict[str, Any]:
    """The serving metrics of an inference run (definitions in ``docs/metrics.md``).

    Every request arrives at t = 0. A micro-batch's first token exists when its prefill ends
    on the last stage (the latest ``prefill`` interval of that micro-batch), its last token
    when its last decode pass ends there.
    """
    inf = plan.inference
    assert inf is not None
    spec = inf.spec
    first: dict[int, float] = defaultdict(float)
    last: dict[int, float] = defaultdict(float)
    plan_steps = steps_by_label(plan)
    decode_s = dict.fromkeys(BOUNDS, 0.0)
    for r in trace.intervals:
        if r.category == "prefill" or (r.category, r.phase) == ("host", "prefill"):
            first[r.microbatch] = max(first[r.microbatch], r.end_s)
        elif r.category == "decode":
            last[r.microbatch] = max(last[r.microbatch], r.end_s)
            decode_s[_bound_of(r, plan_steps)] += r.end_s - r.start_s
        elif (r.category, r.phase) == ("host", "decode"):
            last[r.microbatch] = max(last[r.microbatch], r.end_s)
            decode_s["host"] += r.end_s - r.start_s
    decode_total_s = sum(decode_s.values())
    mbs = sorted(first)
    ttft_s = sum(first[m] for m in mbs) / len(mbs) if mbs else 0.0
    steps = spec.output_len - 1
    tpot_s = sum((last[m] - first[m]) / steps for m in mbs) / len(mbs) if steps > 0 and mbs else 0.0
    end_s = float(trace.end_time_s)
    kv_peak: dict[int, float] = defaultdict(float)
    for rec in trace.memory:
        kv_peak[rec.tile] = max(kv_peak[rec.tile], rec.activation_bytes)
    placement = {
        f"stage{st.stage}": {
            "weights_sram_bytes": st.weight_sram_bytes,
            "weights_dram_bytes": st.weight_dram_bytes,
            "kv_sram_bytes": st.kv_sram_bytes,
            "kv_dram_bytes": st.kv_dram_bytes,
            "kv_bytes_per_token": st.kv_bytes_per_token,
            "spill_token": st.spill_token,
        }
        for st in inf.stages
    }
    return {
        "mode": "inference",
        "prompt_len": spec.prompt_len,
        "output_len": spec.output_len,
        "batch": spec.batch,
        "ttft_s": float(ttft_s),
        "tpot_s": float(tpot_s),
        "throughput_tokens_per_s": spec.batch * spec.output_len / end_s if end_s > 0 else 0.0,
        "kv_cache_bytes_peak": {
            "per_tile_max": float(max(kv_peak.values(), default=0.0)),
            # the simulated tiles' peaks, each standing for plan.replication tiles
            "total": float(sum(kv_peak.values())) * plan.replication,
        },
        "kv_cache_placement": placement,
        **{
            f"decode_{bound}_bound_fraction": (
                decode_s[bound] / decode_total_s if decode_total_s > 0 else 0.0
            )
            for bound in BOUNDS
        },
    }


def _human_time(value_s: float) -> str:
    """Seconds as s, ms or µs, whichever reads best."""
    if abs(value_s) >= 1.0:
        return f"{value_s:.4g} s"
    if abs(value_s) >= 1e-3:
        return f"{value_s * 1e3:.4g} ms"
    return f"{value_s * 1e6:.4g} µs"


def _human_rate(value: float, unit: str, *, is_count: bool = False) -> str:
    """A rate with a decimal prefix: ``1.5 TFLOP/s``, or ``2.048k samples/s`` for counts."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            if is_count:
                return f"{value / scale:.4g}{prefix} {unit}"
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def _percent(value: float) -> str:
    return f"{100.0 * value:.1f} %"


def _bytes(value_bytes: float) -> str:
    """Bytes in GiB, or in MiB/KiB/B when below 0.1 GiB/MiB/KiB."""
    for unit, scale in (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if abs(value_bytes) >= 0.1 * scale:
            return f"{value_bytes / scale:.3f} {unit}"
    return f"{value_bytes:.0f} B"


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """A two-column, aligned text table of a :func:`summarize` dict for the terminal.

    Uses human units (ms/s, TFLOP/s, GiB, %). Keys absent from ``summary`` are skipped.
    """
    rows: list[tuple[str, str]] = []

    def add(label: str, key: str, fmt: Any) -> None:
        if key in summary:
            rows.append((label, fmt(summary[key])))

    add("workload", "workload", str)
    add("hardware", "hardware", str)
    if "mapping" in summary:
        m = summary["mapping"]
        # an inference has no schedule or recompute (training-only keys, refused there)
        procedure = (
            ""
            if summary.get("mode") == "inference"
            else f" {m.get('schedule')} recompute={m.get('recompute')}"
            + (f"({','.join(m['recompute_modules'])})" if m.get("recompute_modules") else "")
        )
        rows.append(
            (
                "mapping",
                f"pp={m.get('pp')} tp={m.get('tp')} dp={m.get('dp')} "
                f"mbs={m.get('micro_batch_size')}{procedure}"
                + f" placement={m.get('placement')}"
                + (f" ep={m['ep']}" if m.get("ep", 1) > 1 else "")
                + (f" cp={m['cp']}" if m.get("cp", 1) > 1 else "")
                + (f" tp_2d={m['tp_2d'][0]}x{m['tp_2d'][1]}" if m.get("tp_2d") else ""),
            )
        )
    add("tiles used", "num_tiles_used", str)
    m = summary.get("mapping", {})
    replicas = m.get("dp", 1) * m.get("cp", 1)
    if summary.get("simulated_replicas", replicas) < replicas:
        unit = "replica 0" if m.get("cp", 1) == 1 else "the first context-parallel group"
        rows.append(
            (
                "replicas simulated",
                f"{summary['simulated_replicas']} of {replicas} (symmetric: {unit} "
                "stands for the others)",
            )
        )
    ranks = m.get("tp", 1)
    if summary.get("simulated_tp_ranks", ranks) < ranks:
        rows.append(
            (
                "TP ranks simulated",
                f"{summary['simulated_tp_ranks']} of {ranks} per stage (symmetric: rank 0 "
                "stands for the others)",
            )
        )
    add("micro-batches", "num_microbatches", str)
    add("iteration time", "iteration_time_s", _human_time)
    bounding = verdict(summary)
    if bounding is not None:
        where = f"  [{bounding.where}]" if bounding.where else ""
        rows.append(("bound by", f"{bounding.resource}, {_percent(bounding.share)} of it{where}"))
    add(
        "throughput",
        "throughput_samples_per_s",
        lambda v: _human_rate(v, "samples/s", is_count=True),
    )
    add(
        "throughput (tokens)",
        "throughput_tokens_per_s",
        lambda v: _human_rate(v, "tokens/s", is_count=True),
    )
    add("time to first token", "ttft_s", _human_time)
    add("time per output token", "tpot_s", _human_time)
    for bound in BOUNDS:  # host only where the host held the device (an untraced decode)
        if bound != "host" or summary.get("decode_host_bound_fraction", 0.0) > 0:
            add(f"decode {bound}-bound", f"decode_{bound}_bound_fraction", _percent)
    if "kv_cache_bytes_peak" in summary:
        kv = summary["kv_cache_bytes_peak"]
        rows.append(
            ("KV cache peak", f"{_bytes(kv['per_tile_max'])} per tile, {_bytes(kv['total'])} total")
        )
    for stage, p in summary.get("kv_cache_placement", {}).items():
        spill = p["spill_token"]
        rows.append(
            (
                f"  {stage} placement",
                f"weights {_bytes(p['weights_sram_bytes'])} SRAM + "
                f"{_bytes(p['weights_dram_bytes'])} DRAM; KV {_bytes(p['kv_sram_bytes'])} SRAM + "
                f"{_bytes(p['kv_dram_bytes'])} DRAM, "
                + (f"in SRAM up to token {spill}" if spill > 0 else "no token of it in SRAM"),
            )
        )
    add("model FLOP/s (achieved)", "model_flop_per_s", lambda v: _human_rate(v, "FLOP/s"))
    add("peak FLOP/s per tile", "peak_flop_per_s_per_tile", lambda v: _human_rate(v, "FLOP/s"))
    add("MFU", "mfu", _percent)
    add("HFU", "hfu", _percent)
    add("pipeline bubble", "pipeline_bubble_fraction", _percent)
    if "tile_compute_utilization" in summary:
        u = summary["tile_compute_utilization"]
        rows.append(
            (
                "tile busy",
                f"mean {_percent(u['mean'])}, min {_percent(u['min'])}, max {_percent(u['max'])}",
            )
        )
    if "tile_time_by_bound_s" in summary and summary.get("iteration_time_s", 0) > 0:
        by = summary["tile_time_by_bound_s"]
        time_s = summary["iteration_time_s"]
        rows.append(
            (
                "  bound by (mean tile)",
                ", ".join(
                    f"{b} {_percent(by.get(b, 0.0) / time_s)}"
                    for b in BOUNDS
                    if b != "host" or by.get(b, 0.0) > 0
                ),
            )
        )
    if "noc_link_utilization_max" in summary:
        name = summary.get("noc_link_utilization_max_channel", "")
        rows.append(
            (
                "link util. (max)",
                _percent(summary["noc_link_utilization_max"]) + (f"  [{name}]" if name else ""),
            )
        )
    if "dram_bandwidth_utilization_max" in summary:
        name = summary.get("dram_bandwidth_utilization_max_channel", "")
        rows.append(
            (
                "DRAM bw util. (max)",
                _percent(summary["dram_bandwidth_utilization_max"])
                + (f"  [{name}]" if name else ""),
            )
        )
    add("exposed communication", "exposed_communication_s", _human_time)
    if "memory_peak_bytes_per_tile_max" in summary:
        tile = summary.get("memory_peak_tile")
        rows.append(
            (
                "peak memory per tile",
                _bytes(summary["memory_peak_bytes_per_tile_max"])
                + (f"  [tile {tile}]" if tile is not None and tile >= 0 else ""),
            )
        )
    if "memory_breakdown_bytes" in summary:
        b = dict(summary["memory_breakdown_bytes"])
        if summary.get("mode") == "inference":  # no gradients or optimizer state to hold
            b = {"weights": b["weights"], "KV cache and activations": b["activations"]}
        rows.append(("  breakdown", ", ".join(f"{k} {_bytes(v)}" for k, v in b.items())))
    add("simulated events", "simulated_events", str)
    add("wall time", "simulation_wall_time_s", _human_time)
    add("palmsim", "palmsim_version", str)
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def op_table_rows(
    trace: RunTrace,
    plan: MappingPlan,
    *,
    achievable_flop_per_s: float,
    sram_bandwidth_bytes_per_s: float,
    dram_bandwidth_bytes_per_s: float,
) -> list[dict[str, Any]]:
    """The compute-versus-memory table of a run: one row per (phase, op), summed over layers,
    decode steps, micro-batches and tiles: by the records' ``op`` (``L3.attn`` and
    ``D7.L3.attn`` count as ``L.attn`` and ``D.L.attn``). Ops are the plan's compute steps
    (blocks of ops between communications) and its TP collectives.

    Columns: ``flop``, ``bytes`` (SRAM + DRAM), ``intensity_flop_per_byte``; ``memory`` is
    where operands live (``dram`` if any of the op's bytes moved to DRAM, else ``sram``) and
    ``ridge_flop_per_byte`` = achievable FLOP/s / that memory's bandwidth (one DRAM port or
    channel; both empty for collectives); ``bound`` is what set most of the op's simulated
    time: ``network`` for collectives, else per interval :func:`step_bound` (``compute``,
    ``memory`` or ``latency``, Williams et al., roofline, CACM 2009, plus the per-kernel launch
    latency), the op taking the bound of most of its time.
    """
    steps = steps_by_label(plan)
    dram_of: dict[str, bool] = {}
    for program in plan.programs:
        for step in (*program.forward, *program.backward, *program.recompute, program.optimizer):
            if isinstance(step, ComputeStep):
                dram_of[step.label] = step.dram_read_bytes + step.dram_write_bytes > 0
    if plan.inference is not None:
        for st in plan.inference.stages:
            for step in (s for steps in (st.prefill, *st.decode) for s in steps):
                if isinstance(step, ComputeStep):
                    dram_of[step.label] = (
                        step.dram_read_bytes + step.read_ahead_bytes + step.dram_write_bytes > 0
                    )
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in trace.intervals:
        if r.category not in COMPUTE_CATEGORIES and r.category not in WAIT_CATEGORIES:
            continue
        key = (r.category, r.op)
        g = groups.setdefault(
            key,
            {
                "count": 0,
                "flop": 0.0,
                "bytes": 0.0,
                "time_s": 0.0,
                "dram": False,
                "by_bound": defaultdict(float),
            },
        )
        duration = r.end_s - r.start_s
        g["count"] += 1
        g["flop"] += r.flop
        g["bytes"] += r.bytes
        g["time_s"] += duration
        g["dram"] = g["dram"] or dram_of.get(r.label, False)
        if r.category in WAIT_CATEGORIES:
            bound = "network" if r.category == "comm" else "host"
        else:
            bound = _bound_of(r, steps)
        g["by_bound"][bound] += duration
    rows = []
    for (phase, op), g in sorted(groups.items()):
        bandwidth = dram_bandwidth_bytes_per_s if g["dram"] else sram_bandwidth_bytes_per_s
        by_bound = g["by_bound"]
        memory = "dram" if g["dram"] else "sram"
        ridge: float | str = achievable_flop_per_s / bandwidth if bandwidth > 0 else math.inf
        if phase in WAIT_CATEGORIES:  # a wait: no memory, no ridge point
            memory, ridge = "", ""
        rows.append(
            {
                "phase": phase,
                "op": op,
                "count": g["count"],
                "flop": g["flop"],
                "bytes": g["bytes"],
                "intensity_flop_per_byte": g["flop"] / g["bytes"] if g["bytes"] > 0 else math.inf,
                "memory": memory,
                "ridge_flop_per_byte": ridge,
                "time_s": g["time_s"],
                "bound": max(sorted(by_bound), key=lambda b: by_bound[b]),
            }
        )
    return rows
