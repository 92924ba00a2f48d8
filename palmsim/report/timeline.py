"""Pure, time-binned utilisation timelines of one run (numpy only).

Bins are ``[k·bin_s, (k+1)·bin_s)`` from 0 up to the end of the run; the last bin is cut at
``trace.end_time_s`` and its values are normalised by the part of it inside the run. See
``docs/metrics.md`` for each column's definition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from operator import attrgetter

import numpy as np

from palmsim.engine.records import RunTrace
from palmsim.report.metrics import (
    COMPUTE_CATEGORIES,
    DRAM_KIND,
    ChipLike,
    IntervalColumns,
    flow_channel_entries,
)

_channels_of = attrgetter("channels")

__all__ = ["TIMELINE_COLUMNS", "binned_amount", "utilization_timeline"]

#: The keys of :func:`utilization_timeline`'s result, in column order.
TIMELINE_COLUMNS: tuple[str, ...] = (
    "time_start_s",
    "time_end_s",
    "tile_compute_utilization_mean",
    "noc_link_utilization_max",
    "noc_link_utilization_mean",
    "dram_bandwidth_utilization_max",
    "dram_bandwidth_utilization_mean",
)


def _ramp_sum(edges: np.ndarray, knots: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """``sum_i rates[i] * max(0, t - knots[i])`` at every ``t`` in ``edges``."""
    order = np.argsort(knots, kind="stable")
    knots_sorted = knots[order]
    rates_sorted = rates[order]
    cum_rate = np.concatenate(([0.0], np.cumsum(rates_sorted)))
    cum_rate_knot = np.concatenate(([0.0], np.cumsum(rates_sorted * knots_sorted)))
    count = np.searchsorted(knots_sorted, edges, side="right")
    return edges * cum_rate[count] - cum_rate_knot[count]


def binned_amount(
    edges: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray, amounts: np.ndarray
) -> np.ndarray:
    """How much of each item's amount falls in each bin, spreading it uniformly over its span.

    Item ``i`` spreads ``amounts[i]`` evenly over ``[starts_s[i], ends_s[i]]``; an item of zero
    duration puts all of it in the bin containing its start (the last bin if past the end).

    Args:
        edges: increasing bin edges, length ``num_bins + 1`` [s].
        starts_s: item start times [s].
        ends_s: item end times [s].
        amounts: what each item carries (seconds of busy time, bytes, ...).

    Returns:
        Array of length ``num_bins`` with the amount in each bin.
    """
    edges = np.asarray(edges, dtype=np.float64)
    starts_s = np.asarray(starts_s, dtype=np.float64)
    ends_s = np.asarray(ends_s, dtype=np.float64)
    amounts = np.asarray(amounts, dtype=np.float64)
    num_bins = len(edges) - 1
    result = np.zeros(num_bins, dtype=np.float64)
    if num_bins <= 0 or len(starts_s) == 0:
        return result
    duration_s = ends_s - starts_s
    spread = duration_s > 0
    if np.any(spread):
        rates = amounts[spread] / duration_s[spread]
        cumulative = _ramp_sum(edges, starts_s[spread], rates) - _ramp_sum(
            edges, ends_s[spread], rates
        )
        result += np.diff(cumulative)
    if np.any(~spread):
        index = np.searchsorted(edges, starts_s[~spread], side="right") - 1
        np.add.at(result, np.clip(index, 0, num_bins - 1), amounts[~spread])
    # The amounts are not negative, but a bin's share is a difference of two running sums, and
    # where both are large and equal their rounding can leave -2e-13 (seen in timeline.csv)
    return np.maximum(result, 0.0, out=result)


def utilization_timeline(
    trace: RunTrace,
    chip: ChipLike,
    bin_s: float,
    *,
    tiles: Iterable[int] | None = None,
    replication: float = 1.0,
) -> dict[str, np.ndarray]:
    """Time-binned compute, NoC and DRAM utilisation of a run.

    Args:
        trace: the run's records.
        chip: the chip (duck-typed: ``channels`` with ``index``, ``kind``,
            ``bandwidth_bytes_per_s``).
        bin_s: bin width [s], > 0.
        tiles: the tiles to average compute over (the plan's used tiles); by default every
            tile with at least one compute record.
        replication: the replicas each simulated one stands for (``plan.replication``): with
            symmetric replicas reduced, every other replica's channels carry the image of
            replica 0's load, so the channel means count it this many times.

    Returns:
        ``{column: float64 array of length num_bins}`` with the keys of
        :data:`TIMELINE_COLUMNS`:

        - ``time_start_s``, ``time_end_s``: bin bounds [s] (the last end is the run's end);
        - ``tile_compute_utilization_mean``: busy tile-seconds / (tiles · bin width) [ratio];
        - ``noc_link_utilization_max`` / ``_mean``: per network channel, bytes in the bin /
          (bandwidth · bin width), max and mean over every network channel of the chip [ratio];
        - ``dram_bandwidth_utilization_max`` / ``_mean``: the same over DRAM channels [ratio].

        A flow's bytes are spread uniformly over ``[start_s, end_s]``, so a bin can read
        slightly above 1 where max-min sharing made a flow's rate uneven.

    Raises:
        ValueError: ``bin_s`` is not positive and finite.
    """
    if not (bin_s > 0 and math.isfinite(bin_s)):
        raise ValueError(f"bin_s must be a positive number of seconds, got {bin_s!r}")
    end_s = float(trace.end_time_s)
    num_bins = max(1, math.ceil(end_s / bin_s - 1e-9))
    edges = np.arange(num_bins + 1, dtype=np.float64) * bin_s
    if end_s > edges[-2]:
        edges[-1] = end_s  # the last bin ends with the run
    width_s = np.diff(edges)

    # Compute: per-tile unions, then all tiles together.
    columns = IntervalColumns.of(trace.intervals)
    busy = columns.busy(COMPUTE_CATEGORIES, None if tiles is None else set(tiles))
    tile_list = sorted(busy) if tiles is None else sorted(set(tiles))
    spans = [busy[t] for t in tile_list if t in busy]
    starts = np.concatenate([np.zeros(0), *(s for s, _ in spans)])
    ends = np.concatenate([np.zeros(0), *(e for _, e in spans)])
    busy_tile_s = binned_amount(edges, starts, ends, ends - starts)
    compute_mean = busy_tile_s / (width_s * len(tile_list)) if tile_list else np.zeros(num_bins)

    # Channels: bytes per bin of each channel that carried anything. Each channel's flows in
    # trace order, as columns (one entry per flow and channel it crosses).
    flows = trace.flows
    flow_of, channel_of = flow_channel_entries(flows)
    by_channel = np.argsort(channel_of, kind="stable")
    channel_sorted = channel_of[by_channel]
    del channel_of  # no unsorted copy kept: W1 has 720 thousand (flow, channel) pairs
    flow_sorted = flow_of[by_channel]
    del by_channel, flow_of
    columns_of_flows = [flows.column(name) for name in ("start_s", "end_s", "size_bytes")]
    noc_sum = np.zeros(num_bins)
    noc_max = np.zeros(num_bins)
    dram_sum = np.zeros(num_bins)
    dram_max = np.zeros(num_bins)
    num_noc = num_dram = 0
    # where each channel's entries begin and end (one search for all: a search per channel
    # with a Python int copies the int32 column each time)
    indices = np.array([channel.index for channel in chip.channels], dtype=channel_sorted.dtype)
    firsts = np.searchsorted(channel_sorted, indices, side="left").tolist()
    lasts = np.searchsorted(channel_sorted, indices, side="right").tolist()
    for channel, first, last in zip(chip.channels, firsts, lasts, strict=True):
        is_dram = channel.kind == DRAM_KIND
        if is_dram:
            num_dram += 1
        else:
            num_noc += 1
        if first == last or channel.bandwidth_bytes_per_s <= 0:
            continue
        own = flow_sorted[first:last]
        starts_s, ends_s, sizes = (column[own] for column in columns_of_flows)
        util = binned_amount(edges, starts_s, ends_s, sizes) / (
            channel.bandwidth_bytes_per_s * width_s
        )
        if is_dram:
            dram_sum += util
            np.maximum(dram_max, util, out=dram_max)
        else:
            noc_sum += util
            np.maximum(noc_max, util, out=noc_max)

    return {
        "time_start_s": edges[:-1].copy(),
        "time_end_s": edges[1:].copy(),
        "tile_compute_utilization_mean": compute_mean,
        "noc_link_utilization_max": noc_max,
        "noc_link_utilization_mean": (
            noc_sum * replication / num_noc if num_noc else np.zeros(num_bins)
        ),
        "dram_bandwidth_utilization_max": dram_max,
        "dram_bandwidth_utilization_mean": (
            dram_sum * replication / num_dram if num_dram else np.zeros(num_bins)
        ),
    }
