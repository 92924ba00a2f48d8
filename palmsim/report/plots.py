"""Plots of one run (matplotlib, Agg; the only module that imports matplotlib).

Import this module lazily (inside the function that needs it), so that palmsim without plots
never loads matplotlib. Figures are built on :class:`matplotlib.figure.Figure` with an explicit
Agg canvas instead of through ``pyplot``: that renders headless without switching the global
backend of a user's session and without pyplot's global figure registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from palmsim.engine.records import WAIT_CATEGORIES, IntervalRecord, RunTrace
from palmsim.hardware.chip import Chip
from palmsim.mapping.plan import MappingPlan
from palmsim.registry import Registry
from palmsim.report.energy import ENERGY_COMPONENTS, watts
from palmsim.report.figdata import (
    MEMORY_KINDS,
    Cell,
    hottest_links,
    link_loads,
    memory_bars,
    placement_cells,
    tile_of_node,
)

__all__ = [
    "CATEGORY_COLORS",
    "COMM_COLOR",
    "DEFAULT_KINDS",
    "ENERGY_COLORS",
    "PLOT_KINDS",
    "energy_breakdown",
    "energy_pareto",
    "gantt",
    "gantt_boxes",
    "gantt_figure",
    "gantt_rows",
    "memory",
    "memory_figure",
    "noc",
    "noc_figure",
    "pareto",
    "placement",
    "placement_figure",
    "spread",
    "sweep_bars",
    "utilization",
]

#: Fill colour of each interval category (colour-blind-safe Okabe-Ito hues), in legend order.
CATEGORY_COLORS: dict[str, str] = {
    "forward": "#0072B2",
    "backward": "#E69F00",
    "recompute": "#009E73",
    "optimizer": "#CC79A7",
    "prefill": "#56B4E9",
    "decode": "#D55E00",
}
_OTHER_COLOR = "#999999"
#: Strip marking a tile's waits inside collectives: near-black, apart from every pass colour.
COMM_COLOR = "#222222"
#: Strip marking a tile's waits for the host to issue its ops: yellow, the Okabe-Ito hue no
#: pass uses.
HOST_COLOR = "#F0E442"

_SCHEDULE_NAMES = {"1f1b": "1F1B", "gpipe": "GPipe"}

Box = tuple[float, float, str, int]  # (start_s, end_s, category, microbatch)


def gantt_boxes(intervals: Sequence[IntervalRecord], tile: int) -> list[Box]:
    """The boxes of one tile's row: runs of consecutive intervals with equal category and mb.

    A forward (or backward) pass of one micro-batch is many compute steps separated by short
    tensor-parallel collectives; drawing it as one box from its first start to its last end
    keeps the chart readable. A wait in a collective or for the host (category ``comm`` or
    ``host``) belongs to its pass (the record's ``phase``), so it extends that pass's box. Work
    of a different category or micro-batch in between starts a new box, so interleaved
    schedules still show every switch.
    """
    own = sorted(
        (r for r in intervals if r.tile == tile), key=lambda r: (r.start_s, r.end_s, r.label)
    )
    boxes: list[Box] = []
    for rec in own:
        category = rec.phase if rec.category in WAIT_CATEGORIES else rec.category
        if boxes and boxes[-1][2] == category and boxes[-1][3] == rec.microbatch:
            start_s, end_s, _, microbatch = boxes[-1]
            boxes[-1] = (start_s, max(end_s, rec.end_s), category, microbatch)
        else:
            boxes.append((rec.start_s, rec.end_s, category, rec.microbatch))
    return boxes


def gantt_rows(
    plan: MappingPlan,
    *,
    per_tile: bool = False,
    stage: int | None = None,
    tiles: tuple[int, int] | None = None,
) -> list[tuple[str, int]]:
    """The ``(label, tile)`` rows of a Gantt chart.

    By default one row per stage (its replica-0, TP-rank-0 tile). ``per_tile``: every tile of
    ``stage`` (all stages if None) in replica 0; ``tiles=(a, b)``: every used tile a..b.
    """
    if not plan.stage_tiles:
        return []
    if tiles is not None:
        stage_of = plan.stage_of_tile()
        return [
            (f"tile {t} (s{stage_of[t]})", t)
            for t in plan.simulated_tiles
            if tiles[0] <= t <= tiles[1]
        ]
    if not per_tile:
        return [(f"stage {s}", plan.stage_tiles[0][s][0]) for s in range(plan.num_stages)]
    stages = range(plan.num_stages) if stage is None else [stage]
    return [(f"s{s} tile {t}", t) for s in stages for t in plan.stage_tiles[0][s]]


def _time_unit(makespan_s: float) -> tuple[str, float]:
    """Axis unit and the factor that converts seconds to it."""
    if makespan_s >= 1.0:
        return "s", 1.0
    if makespan_s >= 1e-3:
        return "ms", 1e3
    return "µs", 1e6


def gantt(
    trace: RunTrace,
    plan: MappingPlan,
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 150,
    rows: Sequence[tuple[str, int]] | None = None,
) -> Path:
    """Draw :func:`gantt_figure` into ``path`` as a PNG; returns ``path``."""
    fig = gantt_figure(trace, plan, title=title, dpi=dpi, rows=rows)
    return _save(fig, path, dpi)


def gantt_figure(
    trace: RunTrace,
    plan: MappingPlan,
    *,
    title: str | None = None,
    dpi: int = 150,
    rows: Sequence[tuple[str, int]] | None = None,
) -> Figure:
    """A stage × time Gantt chart of the pipeline.

    One row per pipeline stage (stage 0 at the top), showing the TP-rank-0 tile of replica 0.
    Forward, backward, recompute and optimizer boxes have distinct colours; micro-batch numbers
    are written inside boxes wide enough to hold them. The time axis is in s, ms or µs, chosen
    from the makespan.

    Args:
        trace: the run's records.
        plan: the mapping (gives the stages, their tiles and the schedule name).
        title: the title; by default the schedule name with p and m.
        dpi: resolution the PNG will have (decides which labels fit).
        rows: ``(label, tile)`` per row, top to bottom, e.g. every tile of a stage (see
            :func:`gantt_rows`); by default one row per stage.
    """
    if rows is None:
        rows = gantt_rows(plan)
    labels = [label for label, _ in rows]
    tiles = [tile for _, tile in rows]
    num_stages = len(rows)
    makespan_s = float(trace.end_time_s)
    unit, scale = _time_unit(makespan_s)

    width_in = 14.0
    row_in = 0.32 if num_stages > 8 else 0.5
    row_in = min(row_in, 24.0 / max(num_stages, 1))  # many tile rows: keep the figure < 26 in
    height_in = max(2.5, row_in * max(num_stages, 1) + 1.6)
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)

    x_max = makespan_s * scale if makespan_s > 0 else 1.0
    ax.set_xlim(0.0, x_max)
    ax.set_ylim(num_stages - 0.5, -0.5)  # stage 0 at the top
    fig.subplots_adjust(left=0.07, right=0.98, top=1.0 - 0.6 / height_in, bottom=0.9 / height_in)

    # Pixels per unit of the x axis, to decide where a label fits.
    axes_width_px = width_in * dpi * (0.98 - 0.07)
    px_per_unit = axes_width_px / x_max
    row_height_px = (height_in * dpi * (1.0 - 0.6 / height_in - 0.9 / height_in)) / max(
        num_stages, 1
    )
    font_pt = 7.0 if num_stages > 8 else 8.0
    text_fits_row = row_height_px * 0.8 >= font_pt * dpi / 72.0

    categories = list(CATEGORY_COLORS)
    seen: set[str] = set()
    row_tiles = set(tiles)
    per_tile: dict[int, list[IntervalRecord]] = {tile: [] for tile in row_tiles}
    for rec in trace.intervals.select(trace.intervals.isin("tile", row_tiles)):
        per_tile[rec.tile].append(rec)
    for stage, tile in enumerate(tiles):
        boxes = gantt_boxes(per_tile[tile], tile)
        by_category: dict[str, list[tuple[float, float]]] = {}
        for start_s, end_s, category, _ in boxes:
            # Leave a hairline gap (1 px, at most a fifth of the box) so that back-to-back
            # boxes of one category stay distinguishable without edge lines.
            width = (end_s - start_s) * scale
            gap = min(1.0 / px_per_unit, 0.2 * width)
            by_category.setdefault(category, []).append((start_s * scale, width - gap))
        for category in sorted(by_category, key=lambda c: (c not in CATEGORY_COLORS, c)):
            seen.add(category)
            ax.broken_barh(
                by_category[category],
                (stage - 0.4, 0.8),
                facecolors=CATEGORY_COLORS.get(category, _OTHER_COLOR),
                edgecolor="none",
                linewidth=0,
            )
        # Waits in collectives and for the host belong to their pass's box (above) and are
        # also marked by a strip along the bottom of the row, so they show without splitting
        # boxes.
        for wait, color in (("comm", COMM_COLOR), ("host", HOST_COLOR)):
            waits = [
                (rec.start_s * scale, (rec.end_s - rec.start_s) * scale)
                for rec in per_tile[tile]
                if rec.category == wait and rec.end_s > rec.start_s
            ]
            if waits:
                seen.add(wait)
                ax.broken_barh(
                    waits, (stage + 0.22, 0.18), facecolors=color, edgecolor="none", linewidth=0
                )
        if not text_fits_row:
            continue
        for start_s, end_s, category, microbatch in boxes:
            if microbatch < 0:
                continue
            text = str(microbatch)
            width_px = (end_s - start_s) * scale * px_per_unit
            if width_px < (len(text) * 0.6 + 0.3) * font_pt * dpi / 72.0:
                continue
            ax.text(
                (start_s + end_s) / 2 * scale,
                stage,
                text,
                ha="center",
                va="center",
                fontsize=font_pt,
                color="white" if category in ("forward", "recompute") else "black",
                clip_on=True,
            )

    ax.set_yticks(range(num_stages))
    ax.set_yticklabels(labels, fontsize=font_pt + 1)
    ax.set_xlabel(f"time [{unit}]")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    handles = [  # only the kinds this run has
        Patch(facecolor=CATEGORY_COLORS.get(c, _OTHER_COLOR), label=c)
        for c in categories + sorted(seen - set(categories) - WAIT_CATEGORIES)
        if c in seen
    ]
    if "comm" in seen:
        handles.append(Patch(facecolor=COMM_COLOR, label="communication (collective wait)"))
    if "host" in seen:
        handles.append(Patch(facecolor=HOST_COLOR, label="host dispatch (wait for the host)"))
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(handles),
        frameon=False,
        fontsize=8,
    )
    stages = _counted(plan.num_stages, "stage")
    microbatches = _counted(plan.num_microbatches, "micro-batch")
    if title is None and plan.inference is not None:
        title = f"inference, prefill then decode: {stages}, {microbatches} of requests"
    elif title is None:
        schedule = _SCHEDULE_NAMES.get(plan.mapping.schedule, plan.mapping.schedule)
        if plan.num_virtual_stages > plan.num_stages:
            schedule = f"interleaved {schedule} (v={plan.num_virtual_stages // plan.num_stages})"
        title = f"{schedule} schedule: {stages}, {microbatches}"
    ax.set_title(title, loc="left", fontsize=10)
    return fig


def _counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural but for one: "1 stage", "4 stages", "8 micro-batches"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("ch") else f"{n} {noun}s"


def pareto(
    points: Sequence[tuple[float, float]],
    front: Sequence[int],
    path: str | Path,
    *,
    labels: Sequence[str] = (),
    title: str = "Mappings: iteration time against memory per tile",
    dpi: int = 120,
) -> Path:
    """Scatter of candidates, ``(memory per tile [B], iteration time [s])``, front marked.

    Args:
        points: one ``(memory_per_tile_bytes, iteration_time_s)`` per candidate.
        front: indices of the Pareto-optimal points (joined by a step line and labelled).
        path: where to write the PNG.
        labels: a short label per point; the front's are written beside them.
    """
    path = Path(path)
    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    gib = 2.0**30
    xs = [m / gib for m, _ in points]
    ys = [t for _, t in points]
    unit, scale = _time_unit(max(ys) if ys else 1.0)
    ax.scatter(xs, [y * scale for y in ys], s=14, color="#999999", label="simulated mapping")
    fx = [xs[i] for i in front]
    fy = [ys[i] * scale for i in front]
    ax.step(fx, fy, where="post", color="#D55E00", linewidth=1.2)
    ax.scatter(fx, fy, s=30, color="#D55E00", label="Pareto front", zorder=3)
    for i in front:
        if i < len(labels):
            ax.annotate(
                labels[i],
                (xs[i], ys[i] * scale),
                fontsize=6,
                xytext=(4, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("peak memory per tile [GiB]")
    ax.set_ylabel(f"iteration time [{unit}]")
    ax.set_title(title, fontsize=10)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
    return path


def sweep_bars(
    labels: Sequence[str],
    values: Sequence[float | None],
    notes: Sequence[str],
    path: str | Path,
    *,
    ylabel: str,
    title: str = "",
    dpi: int = 120,
) -> Path:
    """One bar per sweep point; a point without a value (infeasible, error) shows its note."""
    path = Path(path)
    fig = Figure(figsize=(max(5.0, 1.1 * len(labels) + 1.5), 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    heights = [v if v is not None else 0.0 for v in values]
    ax.bar(range(len(labels)), heights, color="#0072B2")
    for i, (value, note) in enumerate(zip(values, notes, strict=True)):
        if value is None:
            ax.text(i, 0, note, ha="center", va="bottom", rotation=90, fontsize=8, color="#D55E00")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
    return path


# --------------------------------------------------------------------------- floorplan figures

_STAGE_CMAP = "tab20"
_UNUSED_COLOR = "#eeeeee"


def _new_figure(width_in: float, height_in: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
    return path


def _floorplan(
    ax: Any, cells: Sequence[Cell], *, colored: bool, num_stages: int, by_replica: bool = False
) -> None:
    """Tiles as squares (coloured by stage, or by DP replica with ``by_replica``, if
    ``colored``), dies outlined, DRAM ports marked."""
    from matplotlib import colormaps
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    cmap = colormaps[_STAGE_CMAP]
    squares = []
    for cell in cells:
        color: Any
        if colored and cell.stage >= 0:
            color = cmap((cell.replica if by_replica else cell.stage) % cmap.N)
        else:
            color = _UNUSED_COLOR if cell.stage < 0 else "#dfe6ee"
        squares.append(
            Rectangle(
                (cell.col - 0.45, cell.row - 0.45), 0.9, 0.9, facecolor=color, edgecolor="none"
            )
        )
    # one collection, not a patch per tile: add_patch costs about 1 ms each (W1: 320 tiles)
    ax.add_collection(PatchCollection(squares, match_original=True))
    dies: dict[int, list[Cell]] = {}
    for cell in cells:
        dies.setdefault(cell.die, []).append(cell)
    for members in dies.values():
        rows = [c.row for c in members]
        cols = [c.col for c in members]
        ax.add_patch(
            Rectangle(
                (min(cols) - 0.5, min(rows) - 0.5),
                max(cols) - min(cols) + 1,
                max(rows) - min(rows) + 1,
                fill=False,
                edgecolor="black",
                linewidth=1.2,
            )
        )
    ports = [c for c in cells if c.dram_port >= 0]
    if ports:
        ax.scatter(
            [c.col for c in ports],
            [c.row for c in ports],
            marker="s",
            s=14,
            facecolor="none",
            edgecolor="black",
            linewidths=0.8,
            label="DRAM port",
            zorder=5,
        )
    n_rows = max(c.row for c in cells) + 1
    n_cols = max(c.col for c in cells) + 1
    ax.set_xlim(-0.7, n_cols - 0.3)
    ax.set_ylim(n_rows - 0.3, -0.7)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


#: The most nodes a GPU cluster's floorplan draws: beyond it the nodes with no used GPU are
#: left out, then the nodes in use past the first this many (rows of squares below a pixel
#: each, and seconds of drawing a thousand nodes; a 32-GPU run on 100,000 nodes took minutes).
MAX_DRAWN_NODES = 64


def _drawn(cells: Sequence[Cell], chip: Chip) -> tuple[list[Cell], tuple[int, int]]:
    """The cells a floorplan draws, the kept nodes' rows closed up in order, and the nodes it
    leaves out: ``(idle, in use)`` (:data:`MAX_DRAWN_NODES`). A wafer draws every tile."""
    nodes = {c.row for c in cells}
    if chip.spec.cluster is None or len(nodes) <= MAX_DRAWN_NODES:
        return list(cells), (0, 0)
    used = sorted({c.row for c in cells if c.stage >= 0})
    row_of = {node: i for i, node in enumerate(used[:MAX_DRAWN_NODES])}
    kept = [dataclasses.replace(c, row=row_of[c.row]) for c in cells if c.row in row_of]
    return kept, (len(nodes) - len(used), max(len(used) - MAX_DRAWN_NODES, 0))


def _idle_note(hidden: tuple[int, int], sep: str = "; ") -> str:
    """What a floorplan left out (:func:`_drawn`), or ""."""
    idle, busy = hidden
    parts = [f"{idle} idle nodes"] if idle else []
    parts += [f"{busy} nodes in use after the first {MAX_DRAWN_NODES}"] if busy else []
    return f"{sep}{' and '.join(parts)} not drawn" if parts else ""


def _plan_size(cells: Sequence[Cell]) -> tuple[float, float]:
    n_rows = max(c.row for c in cells) + 1
    n_cols = max(c.col for c in cells) + 1
    scale = min(10.0 / n_cols, 8.0 / n_rows, 0.6)
    return n_cols * scale, n_rows * scale


def placement(chip: Chip, plan: MappingPlan, path: str | Path, *, dpi: int = 110) -> Path:
    """Draw :func:`placement_figure` into ``path``."""
    return _save(placement_figure(chip, plan), path, dpi)


def placement_figure(chip: Chip, plan: MappingPlan) -> Figure:
    """The floorplan: tiles coloured by pipeline stage, labelled with their DP replica (``r``)
    when there are several; with one stage, coloured by DP replica instead. Dies (GPU
    clusters: nodes) outlined, DRAM ports marked by a black square."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch as _Patch

    cells, hidden = _drawn(placement_cells(chip, plan), chip)
    num_replicas = len(plan.stage_tiles)
    by_replica = plan.num_stages == 1 and num_replicas > 1
    w_in, h_in = _plan_size(cells)
    fig, ax = _new_figure(w_in + 2.6, h_in + 1.0)
    _floorplan(ax, cells, colored=True, num_stages=plan.num_stages, by_replica=by_replica)
    if num_replicas > 1 and not by_replica and len(cells) <= 4096:
        for cell in cells:
            if cell.replica >= 0:
                ax.text(
                    cell.col, cell.row, f"r{cell.replica}", ha="center", va="center", fontsize=4
                )
    cmap = colormaps[_STAGE_CMAP]
    groups = num_replicas if by_replica else plan.num_stages
    name = "DP replica" if by_replica else "stage"

    # one entry a colour: past the colour map's N the colours repeat, so an entry names
    # every group of its colour ("DP replica 3, 23, 43, ...")
    def label(s: int) -> str:
        again = f", {s + cmap.N}" + (", ..." if s + 2 * cmap.N < groups else "")
        return f"{name} {s}" + (again if s + cmap.N < groups else "")

    handles = [
        _Patch(facecolor=cmap(s % cmap.N), label=label(s)) for s in range(min(groups, cmap.N))
    ]
    handles.append(_Patch(facecolor=_UNUSED_COLOR, label="unused"))
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7,
        frameon=False,
        ncol=1 if len(handles) <= 24 else 2,
    )
    tp = len(plan.stage_tiles[0][0]) if plan.stage_tiles else 0
    grid = plan.mapping.tp_2d
    tp_text = f"{tp} ({grid[0]} x {grid[1]})" if grid is not None and grid[1] > 1 else str(tp)
    idle = _idle_note(hidden, sep="\n")
    is_cluster = chip.spec.cluster is not None
    outlines = "nodes" if is_cluster else "dies"
    ports = ", □: HBM" if is_cluster else ", □: DRAM ports"
    colour = (
        "colour: DP replica"
        if by_replica
        else "colour: stage" + (", rN: DP replica" if num_replicas > 1 else "")
    )
    title = ax.set_title(
        f"{chip.spec.name}: {_counted(plan.num_stages, 'stage')} × "
        f"TP {tp_text} × DP {num_replicas} "
        f"({plan.placement}); {colour}; black outlines: {outlines}{ports}{idle}",
        loc="left",
        fontsize=9,
    )
    _fit_width(fig, title)
    fig.tight_layout()
    return fig


def _drawn_size_in(fig: Figure, text: Any) -> tuple[float, float]:
    """The width and height [in] ``text`` takes as drawn in ``fig``, 15 % to spare: hinted
    glyphs grow with the resolution (7 pt DejaVu Sans Mono: 6 % wider at 110 dpi than at
    100), and the spare keeps a text whole from 72 to 300 dpi."""
    extent = text.get_window_extent(fig.canvas.get_renderer())  # type: ignore[attr-defined]
    return 1.15 * extent.width / fig.dpi, 1.15 * extent.height / fig.dpi


def _fit_width(fig: Figure, text: Any) -> None:
    """Widen ``fig`` to hold ``text`` whole (a one-chip floorplan is narrower than its
    title)."""
    need_in = _drawn_size_in(fig, text)[0] + 0.3
    width_in, height_in = fig.get_size_inches()
    if need_in > width_in:
        fig.set_size_inches(need_in, height_in)
        for ax in fig.axes:  # the map at the left, where its title starts
            ax.set_anchor("W")


#: How a channel kind is named in the figures.
_KIND_NAMES = {
    "intra_die": "NoC link",
    "inter_die": "inter-die link",
    "dram": "DRAM port",
    "nvlink": "NVLink",
    "nic": "NIC",
}


def noc(
    trace: RunTrace,
    chip: Chip,
    plan: MappingPlan,
    path: str | Path,
    *,
    by: str = "utilization",
    category: str | None = None,
    top: int = 12,
    dpi: int = 110,
) -> Path:
    """Draw :func:`noc_figure` into ``path``."""
    return _save(noc_figure(trace, chip, plan, by=by, category=category, top=top), path, dpi)


def noc_figure(
    trace: RunTrace,
    chip: Chip,
    plan: MappingPlan,
    *,
    by: str = "utilization",
    category: str | None = None,
    top: int = 12,
) -> Figure:
    """The network of the floorplan coloured by utilisation [%] (or bytes carried [GB]) over
    the iteration, the hottest channels of every kind listed beside the map.

    A wafer draws every tile-to-tile link (inter-die links thicker and dashed). A GPU cluster
    has no tile-to-tile links: each GPU's square holds two bars, its NVLink channel to the
    node's NVSwitch (left) and its NIC to the fabric (right), each the busier direction.
    ``category`` keeps only the flows of one category (e.g. ``ep_alltoall``, ``tp_allreduce``,
    ``p2p``, ``dram``).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    cells, hidden = _drawn(placement_cells(chip, plan), chip)
    pos = {c.tile: (c.col, c.row) for c in cells}
    loads = link_loads(trace, chip, category)
    # Utilisation in %, as in the summary; volumes in GB, as bandwidths are quoted.
    value = (
        (lambda x: 100.0 * x.utilization)
        if by == "utilization"
        else (lambda x: x.carried_bytes / 1e9)
    )
    what = "utilisation [%]" if by == "utilization" else "bytes carried [GB]"
    # Both directions of a link share one segment; it shows the busier direction.
    pairs: dict[tuple[int, int], tuple[float, str]] = {}
    # GPU clusters: per GPU and kind (nvlink, nic), the busier direction.
    stubs: dict[tuple[int, str], float] = {}
    for load in loads:
        a, b = tile_of_node(load.src), tile_of_node(load.dst)
        if a is not None and b is not None:
            key = (min(a, b), max(a, b))
            old = pairs.get(key, (0.0, load.kind))[0]
            pairs[key] = (max(old, value(load)), load.kind)
        elif load.kind in ("nvlink", "nic"):
            gpu = a if a is not None else b
            if gpu is not None and gpu in pos:  # a GPU of an idle node not drawn: none
                stubs[(gpu, load.kind)] = max(stubs.get((gpu, load.kind), 0.0), value(load))
    # every link of the network between two chips (a system of one-tile chips: a T3000)
    network = [x for x in loads if x.kind != "dram"]
    chips_only = bool(network) and all(x.kind == "inter_die" for x in network)
    order = "utilisation" if by == "utilization" else "bytes carried"
    lines = [f"hottest channels (by {order}):"]

    def line(load: Any) -> str:
        return (
            f"{load.src}->{load.dst} [{_KIND_NAMES.get(load.kind, load.kind)}] "
            f"{100 * load.utilization:.1f} % {_fmt_bytes(load.carried_bytes)}"
        )

    if stubs:  # a GPU cluster: the hottest of each kind, so NVLink is not crowded out
        lines = []
        for kind in ("nvlink", "nic"):
            members = [x for x in loads if x.kind == kind]
            lines += [f"hottest {_KIND_NAMES[kind]} channels (by {order}):"]
            lines += [line(x) for x in hottest_links(members, top // 2, by=by)] or ["(idle)"]
            lines += [""]
    else:
        lines += [line(x) for x in hottest_links(network, top, by=by)] or [
            "(none: no link joins two of the run's tiles)"
        ]
    inter_die = [x for x in loads if x.kind == "inter_die"]
    if inter_die and not chips_only:  # a system of one-tile chips: the list above
        lines += ["", "hottest inter-die links:"]
        lines += [line(x) for x in hottest_links(inter_die, 5, by=by)] or ["(none carried data)"]
    if stubs:
        drawn = "NVLink and NIC channels"
        legend = "bars in each GPU: NVLink to its NVSwitch (left), NIC to the fabric (right)"
    elif chips_only:
        drawn, legend = "chip-to-chip links", "every link joins two chips"
    else:  # the dashes where there are dies (a single wafer's NoC has none)
        drawn, legend = "NoC links", "thick dashed: inter-die links" if inter_die else ""
    second = (legend + _idle_note(hidden)).removeprefix("; ")
    title = (
        f"{category + ' ' if category else ''}{drawn} by {order} over "
        f"{_fmt_time(trace.end_time_s)}" + (f"\n{second}" if second else "")
    )
    w_in, h_in = _plan_size(cells)
    fig, ax = _new_figure(w_in + 4.5, h_in + 1.0)  # resized to the listing below
    listing = fig.text(0, 0, "\n".join(lines), ha="left", va="center", fontsize=7)
    listing.set_fontfamily("monospace")
    _floorplan(ax, cells, colored=False, num_stages=plan.num_stages)
    vmax = max([v for v, _ in pairs.values()] + list(stubs.values()), default=0.0) or 1.0
    norm = Normalize(0.0, vmax)
    cmap = colormaps["inferno_r"]
    for inter in (False, True):
        segs, vals = [], []
        for (a, b), (v, kind) in sorted(pairs.items()):
            if (kind == "inter_die") != inter:
                continue
            segs.append([pos[a], pos[b]])
            vals.append(v)
        if not segs:
            continue
        if inter:  # a dark dashed casing keeps idle inter-die links visible
            ax.add_collection(
                LineCollection(
                    segs, colors="#333333", linewidths=4.2, linestyles="dashed", zorder=2
                )
            )
        lc = LineCollection(
            segs,
            cmap=cmap,
            norm=norm,
            linewidths=3.0 if inter else 1.2,
            linestyles="dashed" if inter else "solid",
            zorder=3,
        )
        lc.set_array(vals)
        ax.add_collection(lc)
    if stubs:
        bars: list[list[tuple[float, float]]] = []
        bar_values: list[float] = []
        for (gpu, kind), v in sorted(stubs.items()):
            x, y = pos[gpu]
            dx = -0.2 if kind == "nvlink" else 0.2
            bars.append([(x + dx, y + 0.35), (x + dx, y - 0.35)])
            bar_values.append(v)
        ax.add_collection(LineCollection(bars, colors="#333333", linewidths=5.0, zorder=2))
        lc = LineCollection(bars, cmap=cmap, norm=norm, linewidths=3.6, zorder=3)
        lc.set_array(bar_values)
        ax.add_collection(lc)
    ax.set_title(title, loc="left", fontsize=9)
    # The map, its colour bar (ticks and label within 0.9 in right of the map's axes), then
    # the listing, measured as drawn: the figure wide and tall enough for it and the title.
    list_w_in, list_h_in = _drawn_size_in(fig, listing)
    title_h_in = (title.count("\n") + 1) * 9 * 1.3 / 72 + 0.15
    map_w_in = w_in + 0.6
    list_x_in = map_w_in + 0.9
    fig_w_in = list_x_in + list_w_in + 0.15
    fig_h_in = max(h_in + 0.4, list_h_in + 0.3) + title_h_in
    fig.set_size_inches(fig_w_in, fig_h_in)
    listing.set_position((list_x_in / fig_w_in, 0.5 * (1 - title_h_in / fig_h_in)))
    fig.subplots_adjust(
        left=0.02,
        right=map_w_in / fig_w_in,
        top=1 - title_h_in / fig_h_in,
        bottom=0.04,
    )
    # the colour bar as tall as the map, not the axes a taller listing stretches
    axes_h_in = 0.96 * fig_h_in - title_h_in  # between top and bottom above
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        fraction=0.04,
        pad=0.01,
        shrink=min(1.0, (h_in + 0.4) / axes_h_in),
    )
    bar.set_label(what)
    return fig


def _fmt_bytes(value_bytes: float) -> str:
    """Bytes with a decimal prefix, as link bandwidths are quoted (``6.03 TB``)."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value_bytes) >= scale:
            return f"{value_bytes / scale:.3g} {prefix}B"
    return f"{value_bytes:.3g} B"


def _fmt_time(value_s: float) -> str:
    unit, scale = _time_unit(value_s)
    return f"{value_s * scale:.3g} {unit}"


def memory(
    chip: Chip,
    plan: MappingPlan,
    path: str | Path,
    *,
    trace: RunTrace | None = None,
    dpi: int = 110,
) -> Path:
    """Draw :func:`memory_figure` into ``path``."""
    return _save(memory_figure(chip, plan, trace), path, dpi)


def memory_figure(chip: Chip, plan: MappingPlan, trace: RunTrace | None = None) -> Figure:
    """Stacked bars per stage of one tile's weights, gradients, optimizer state and activations
    as the plan estimates them (every micro-batch the schedule keeps in flight), beside the
    simulated peak (diamonds, the summary's figure) when the run's records are given. Hatched:
    the part placed in DRAM. The tile's SRAM capacity (dashed) and SRAM + its share of its
    DRAM port (ticks) are drawn when they fall inside the axis, else named in the legend."""
    bars = memory_bars(chip, plan, trace)
    colors = {
        "weights": "#0072B2",
        "gradients": "#E69F00",
        "optimizer": "#CC79A7",
        "activations": "#009E73",
    }
    fig, ax = _new_figure(max(6.0, 0.4 * len(bars) + 3.5), 4.0)
    x = list(range(len(bars)))
    tallest = max(
        [sum(b.parts_bytes.values()) for b in bars] + [b.simulated_peak_bytes or 0.0 for b in bars],
        default=0.0,
    )
    unit, scale = ("GiB", 2.0**30) if tallest >= 2.0**30 / 2 else ("MiB", 2.0**20)
    top = 1.25 * tallest / scale or 1.0
    bottom = [0.0] * len(bars)
    for kind in MEMORY_KINDS:
        heights = [b.parts_bytes[kind] / scale for b in bars]
        if any(heights):
            name = "KV cache + activations" if kind == "activations" and plan.inference else kind
            ax.bar(x, heights, bottom=bottom, color=colors[kind], label=f"{name} (estimate)")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    dram = [b.dram_bytes / scale for b in bars]
    sram = [b.sram_bytes / scale for b in bars]
    if any(dram):
        ax.bar(
            x,
            dram,
            bottom=sram,
            fill=False,
            hatch="///",
            edgecolor="black",
            width=0.8,
            linewidth=0,
            label="of which in DRAM",
        )
    simulated = [
        (i, peak) for i, b in enumerate(bars) if (peak := b.simulated_peak_bytes) is not None
    ]
    if simulated:
        ax.scatter(
            [i for i, _ in simulated],
            [v / scale for _, v in simulated],
            marker="D",
            s=28,
            color="black",
            label="simulated peak",
            zorder=5,
        )
    sram_bytes = bars[0].sram_capacity_bytes if bars else 0.0
    sram_text = f"SRAM capacity ({_fmt_binary(sram_bytes)})"
    if sram_bytes / scale >= 0.02 * top:
        ax.axhline(sram_bytes / scale, color="red", linestyle="--", linewidth=1, label=sram_text)
    elif sram_bytes > 0:  # a line at the axis' foot would hide: name it instead
        ax.plot([], [], color="red", linestyle="--", linewidth=1, label=f"{sram_text}, off scale")
    limits = [(b.sram_capacity_bytes + b.dram_share_bytes) / scale for b in bars]
    if limits and max(limits) <= 2 * top:
        ax.scatter(x, limits, marker="_", s=200, color="black", label="SRAM + DRAM share")
        top = max(top, 1.05 * max(limits))
    elif limits:
        share = max(b.sram_capacity_bytes + b.dram_share_bytes for b in bars)
        ax.plot([], [], " ", label=f"SRAM + DRAM share: {_fmt_binary(share)}, off scale")
    ax.set_ylim(0, top)
    ax.set_xticks(x)
    ax.set_xticklabels([str(b.stage) for b in bars], fontsize=7)
    ax.set_xlabel("pipeline stage")
    ax.set_ylabel(f"bytes per tile [{unit}]")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(
        "memory per tile: the plan's estimate (bars) and the simulated peak (diamonds)",
        loc="left",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _fmt_binary(value_bytes: float) -> str:
    """Capacities with binary prefixes, as the configs give them (``3 MiB``, ``80 GiB``)."""
    for prefix, scale in (("Ti", 2.0**40), ("Gi", 2.0**30), ("Mi", 2.0**20), ("Ki", 2.0**10)):
        if abs(value_bytes) >= scale:
            return f"{value_bytes / scale:.3g} {prefix}B"
    return f"{value_bytes:.0f} B"


def utilization(
    trace: RunTrace,
    chip: Chip,
    plan: MappingPlan,
    path: str | Path,
    *,
    dpi: int = 110,
    timeline: Mapping[str, Any] | None = None,
) -> Path:
    """Binned timeline of mean tile compute, max/mean NoC link and max DRAM port utilisation.

    ``timeline``: the run's :func:`~palmsim.report.timeline.utilization_timeline` in 200 bins
    if the caller has it already (``palmsim run`` writes it to ``timeline.csv``), else it is
    computed here.
    """
    from palmsim.report.timeline import utilization_timeline

    end_s = float(trace.end_time_s)
    bin_s = end_s / 200 if end_s > 0 else 1.0
    tl = timeline
    if tl is None:
        tl = utilization_timeline(
            trace, chip, bin_s, tiles=plan.simulated_tiles, replication=plan.replication
        )
    unit, scale = _time_unit(end_s)
    mid = (tl["time_start_s"] + tl["time_end_s"]) / 2 * scale
    fig, ax = _new_figure(10.0, 3.5)
    for key, label, color in (
        ("tile_compute_utilization_mean", "tiles busy (mean)", "#0072B2"),
        ("noc_link_utilization_max", "network (busiest link)", "#D55E00"),
        ("noc_link_utilization_mean", "network (mean link)", "#E69F00"),
        ("dram_bandwidth_utilization_max", "DRAM (busiest port)", "#009E73"),
    ):
        ax.plot(mid, 100.0 * tl[key], label=label, color=color, linewidth=1)
    ax.set_xlim(0, end_s * scale if end_s > 0 else 1)
    ax.set_ylim(0, 105)
    ax.set_xlabel(f"time [{unit}]")
    ax.set_ylabel("utilisation [%]")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(f"utilisation in {len(mid)} bins of {_fmt_time(bin_s)}", loc="left", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- plot kinds

#: ``palmsim plot KIND``: name -> function(run, path, options) drawing that figure of a loaded
#: run (anything with ``trace``, ``chip`` and ``plan``). Register new kinds here.
PLOT_KINDS: Registry[Callable[[Any, Path, Mapping[str, Any]], Path]] = Registry("plot kind")

#: The figures ``palmsim run`` draws into ``RUN_DIR/plots/``.
DEFAULT_KINDS: tuple[str, ...] = ("gantt", "placement", "noc", "utilization", "memory", "energy")


@PLOT_KINDS.register("gantt")
def _gantt_kind(run: Any, path: Path, options: Mapping[str, Any]) -> Path:
    rows = gantt_rows(
        run.plan,
        per_tile=bool(options.get("per_tile")),
        stage=options.get("stage"),
        tiles=options.get("tiles"),
    )
    return gantt(run.trace, run.plan, path, rows=rows, dpi=110)


@PLOT_KINDS.register("placement")
def _placement_kind(run: Any, path: Path, options: Mapping[str, Any]) -> Path:
    return placement(run.chip, run.plan, path)


@PLOT_KINDS.register("noc")
def _noc_kind(run: Any, path: Path, options: Mapping[str, Any]) -> Path:
    return noc(
        run.trace,
        run.chip,
        run.plan,
        path,
        by=options.get("by") or "utilization",
        category=options.get("category"),
    )


@PLOT_KINDS.register("utilization")
def _utilization_kind(run: Any, path: Path, options: Mapping[str, Any]) -> Path:
    return utilization(run.trace, run.chip, run.plan, path, timeline=getattr(run, "timeline", None))


@PLOT_KINDS.register("memory")
def _memory_kind(run: Any, path: Path, options: Mapping[str, Any]) -> Path:
    return memory(run.chip, run.plan, path, trace=run.trace)


# =========================================================================== serving (issue 16)


def latency_cdf(latencies_s: Mapping[str, Any], path: str | Path, *, dpi: int = 110) -> Path:
    """Empirical CDFs of TTFT, TPOT and end-to-end latency (ms, log scale), one panel each.

    ``latencies_s`` is :func:`palmsim.report.serving.latencies` (arrays in seconds).
    """
    import numpy as np

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    names = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end latency"))
    for index, (key, title) in enumerate(names, start=1):
        ax = fig.add_subplot(1, 3, index)
        values = np.sort(np.asarray(latencies_s[key], dtype=float))
        values = values[~np.isnan(values)] * 1e3
        if values.size:
            ax.step(values, np.arange(1, values.size + 1) / values.size, where="post")
            if values[0] > 0:
                ax.set_xscale("log")
        ax.set_xlabel(f"{title} [ms]")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi)


def serving_timeseries(
    iterations: Sequence[Any],
    queue: Sequence[Any],
    num_kv_blocks: int,
    path: str | Path,
    *,
    dpi: int = 110,
) -> Path:
    """Waiting queue, batch size and KV-cache use over time, summed/averaged over replicas:
    the queue from the queue records, batch size and KV use per iteration (replica 0 dotted
    beside the mean when there are several)."""
    fig = Figure(figsize=(10, 6.5))
    FigureCanvasAgg(fig)
    ax_q, ax_b, ax_kv = (fig.add_subplot(3, 1, i) for i in (1, 2, 3))
    replicas = sorted({rec.replica for rec in queue} | {it.replica for it in iterations})
    current = dict.fromkeys(replicas, 0)
    times, waiting = [0.0], [0]
    for rec in sorted(queue, key=lambda q: q.time_s):
        current[rec.replica] = rec.num_waiting
        times.append(rec.time_s)
        waiting.append(sum(current.values()))
    ax_q.step(times, waiting, where="post", color="#D55E00")
    ax_q.set_ylabel("waiting requests")
    for replica in replicas[:1]:
        own = [it for it in iterations if it.replica == replica]
        ax_b.step(
            [it.start_s for it in own],
            [it.num_seqs for it in own],
            where="post",
            color="#0072B2",
            label=f"replica {replica}",
        )
        ax_kv.step(
            [it.start_s for it in own],
            [100.0 * it.kv_blocks_used / num_kv_blocks for it in own],
            where="post",
            color="#009E73",
            label=f"replica {replica}",
        )
    ax_b.set_ylabel("batch size [requests]")
    ax_kv.set_ylabel("KV cache used [%]")
    ax_kv.set_ylim(0, 105)
    ax_kv.set_xlabel("time [s]")
    for ax in (ax_q, ax_b, ax_kv):
        ax.grid(alpha=0.3)
    if len(replicas) > 1:
        ax_b.legend(loc="upper right")
    fig.tight_layout()
    return _save(fig, path, dpi)


def latency_load(
    curves: Mapping[str, Sequence[tuple[float, float, float]]],
    path: str | Path,
    *,
    dpi: int = 110,
) -> Path:
    """Latency against load: per curve, points ``(rate requests/s, TTFT p90 s, TPOT p90 s)``;
    TTFT on the left panel, TPOT on the right, both in ms."""
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax_t, ax_p = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, points in curves.items():
        rates = [p[0] for p in points]
        ax_t.plot(rates, [p[1] * 1e3 for p in points], marker="o", label=name)
        ax_p.plot(rates, [p[2] * 1e3 for p in points], marker="o", label=name)
    ax_t.set_ylabel("TTFT p90 [ms]")
    ax_p.set_ylabel("TPOT p90 [ms]")
    for ax in (ax_t, ax_p):
        ax.set_xlabel("arrival rate [requests/s]")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- energy

#: Bar colour of each energy component (Okabe-Ito hues; static power in greys).
ENERGY_COLORS: dict[str, str] = {
    "compute": "#0072B2",
    "sram": "#56B4E9",
    "noc": "#009E73",
    "chip_to_chip": "#F0E442",
    "nic": "#CC79A7",
    "dram": "#E69F00",
    "static_tiles": "#999999",
    "static_chips": "#666666",
}


def _si_energy(value_j: float) -> tuple[str, float]:
    """The unit (J, kJ, MJ, GJ) and scale to show energies up to ``value_j`` in."""
    for name, scale in (("GJ", 1e9), ("MJ", 1e6), ("kJ", 1e3)):
        if value_j >= scale:
            return name, 1.0 / scale
    return "J", 1.0


def energy_breakdown(summary: Mapping[str, Any], path: str | Path, *, dpi: int = 110) -> Path:
    """Bars of the iteration's energy by component, with its share, the energy per token and
    the average power against the TDP (``summary["energy"]``); a run without an ``energy:``
    section gets a figure saying so."""
    path = Path(path)
    fig = Figure(figsize=(7.0, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    energy = summary.get("energy")
    if not energy:
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "energy not modelled: the hardware file has no energy: section",
            ha="center",
            va="center",
            fontsize=10,
        )
        return _save(fig, path, dpi)
    parts = energy["energy_breakdown_j"]
    total = float(energy["energy_per_iteration_j"])
    unit, scale = _si_energy(max(parts.values(), default=0.0))
    names = [n for n in ENERGY_COMPONENTS if n in parts] + sorted(
        set(parts) - set(ENERGY_COMPONENTS)
    )
    values = [float(parts[n]) for n in names]
    ys = range(len(names))
    ax.barh(
        ys, [v * scale for v in values], color=[ENERGY_COLORS.get(n, _OTHER_COLOR) for n in names]
    )
    ax.set_yticks(list(ys), [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    for y, v in zip(ys, values, strict=True):
        share = v / total if total > 0 else 0.0
        ax.annotate(
            f"{share:.1%}",
            (v * scale, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.set_xlabel(f"energy per iteration [{unit}]")
    title = (
        f"energy {total * scale:.4g} {unit}/iteration, "
        f"{energy['energy_per_token_j']:.3g} J/token; "
        f"average power {watts(energy['average_power_w'])}"
    )
    if "tdp_w" in energy:
        fraction = energy["average_power_fraction_of_tdp"]
        title += f";\n{fraction:.0%} of TDP {watts(energy['tdp_w'])}"
        within_w = energy.get("average_power_within_tdp_w", energy["average_power_w"])
        if within_w < energy["average_power_w"]:
            title += " (die-edge DRAM outside the TDP)"
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", linewidth=0.3, alpha=0.5)
    fig.tight_layout()
    return _save(fig, path, dpi)


def energy_pareto(
    points: Sequence[tuple[float, float]],
    front: Sequence[int],
    path: str | Path,
    *,
    labels: Sequence[str] = (),
    title: str = "Mappings: throughput against energy per token",
    dpi: int = 120,
) -> Path:
    """Scatter of candidates, ``(energy per token [J], throughput [tokens/s])``, with the
    Pareto front (least energy, most throughput) marked and labelled."""
    path = Path(path)
    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [e for e, _ in points]
    ys = [t for _, t in points]
    ax.scatter(xs, ys, s=14, color="#999999", label="simulated mapping")
    ax.step(
        [xs[i] for i in front], [ys[i] for i in front], where="post", color="#D55E00", linewidth=1.2
    )
    ax.scatter(
        [xs[i] for i in front],
        [ys[i] for i in front],
        s=30,
        color="#D55E00",
        label="Pareto front",
        zorder=3,
    )
    for i in front:
        if i < len(labels):
            ax.annotate(
                labels[i], (xs[i], ys[i]), fontsize=6, xytext=(4, 3), textcoords="offset points"
            )
    ax.set_xlabel("energy per token [J]")
    ax.set_ylabel("throughput [tokens/s]")
    ax.set_title(title, fontsize=10)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
    return path


def spread(
    xs: Sequence[float],
    ys: Sequence[float],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    dpi: int = 120,
) -> Path:
    """Every point ``(x, y)``, and per distinct x the mean joined by a line with the min-max
    band shaded: e.g. throughput against defect density over a range of seeds."""
    path = Path(path)
    fig = Figure(figsize=(7.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    groups: dict[float, list[float]] = {}
    for x, y in zip(xs, ys, strict=True):
        groups.setdefault(x, []).append(y)
    keys = sorted(groups)
    means = [sum(groups[k]) / len(groups[k]) for k in keys]
    ax.fill_between(
        keys,
        [min(groups[k]) for k in keys],
        [max(groups[k]) for k in keys],
        color="#56B4E9",
        alpha=0.3,
        label="min-max over seeds",
    )
    ax.plot(keys, means, color="#0072B2", marker="o", label="mean")
    ax.scatter(xs, ys, s=10, color="#999999", zorder=3, label="one seed")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)


@PLOT_KINDS.register("energy")
def _energy_kind(run: Any, path: Path, options: Mapping[str, Any]) -> Path:
    return energy_breakdown(getattr(run, "summary", {}), path)
