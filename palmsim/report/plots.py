"""Plots of one run (matplotlib, Agg; the only module that imports matplotlib).

Import this module lazily (inside the function that needs it), so that palmsim without plots
never loads matplotlib. Figures are built on :class:`matplotlib.figure.Figure` with an explicit
Agg canvas instead of through ``pyplot``: that renders headless without switching the global
backend of a user's session and without pyplot's global figure registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from palmsim.engine.records import IntervalRecord, RunTrace
from palmsim.mapping.plan import MappingPlan

__all__ = ["CATEGORY_COLORS", "gantt", "gantt_boxes", "pareto", "sweep_bars"]

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

_SCHEDULE_NAMES = {"1f1b": "1F1B", "gpipe": "GPipe"}

Box = tuple[float, float, str, int]  # (start_s, end_s, category, microbatch)


def gantt_boxes(intervals: Sequence[IntervalRecord], tile: int) -> list[Box]:
    """The boxes of one tile's row: runs of consecutive intervals with equal category and mb.

    A forward (or backward) pass of one micro-batch is many compute steps separated by short
    tensor-parallel collectives; drawing it as one box from its first start to its last end
    keeps the chart readable. A wait in a collective (category ``comm``) belongs to the pass
    whose name starts its label (``forward.L3.attn.ar``), so it extends that pass's box. Work
    of a different category or micro-batch in between starts a new box, so interleaved
    schedules still show every switch.
    """
    own = sorted(
        (r for r in intervals if r.tile == tile), key=lambda r: (r.start_s, r.end_s, r.label)
    )
    boxes: list[Box] = []
    for rec in own:
        category = rec.label.split(".", 1)[0] if rec.category == "comm" else rec.category
        if boxes and boxes[-1][2] == category and boxes[-1][3] == rec.microbatch:
            start_s, end_s, _, microbatch = boxes[-1]
            boxes[-1] = (start_s, max(end_s, rec.end_s), category, microbatch)
        else:
            boxes.append((rec.start_s, rec.end_s, category, rec.microbatch))
    return boxes


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
) -> Path:
    """Draw a stage × time Gantt chart of the pipeline and save it as a PNG.

    One row per pipeline stage (stage 0 at the top), showing the TP-rank-0 tile of replica 0.
    Forward, backward, recompute and optimizer boxes have distinct colours; micro-batch numbers
    are written inside boxes wide enough to hold them. The time axis is in s, ms or µs, chosen
    from the makespan.

    Args:
        trace: the run's records.
        plan: the mapping (gives the stages, their tiles and the schedule name).
        path: where to write the PNG.
        title: the title; by default the schedule name with p and m.
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    num_stages = plan.num_stages
    rows = [plan.stage_tiles[0][s][0] for s in range(num_stages)] if plan.stage_tiles else []
    makespan_s = float(trace.end_time_s)
    unit, scale = _time_unit(makespan_s)

    width_in = 14.0
    row_in = 0.32 if num_stages > 8 else 0.5
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
    row_tiles = set(rows)
    per_tile: dict[int, list[IntervalRecord]] = {tile: [] for tile in row_tiles}
    for rec in trace.intervals:
        if rec.tile in row_tiles:
            per_tile[rec.tile].append(rec)
    for stage, tile in enumerate(rows):
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
    ax.set_yticklabels([f"stage {s}" for s in range(num_stages)], fontsize=font_pt + 1)
    ax.set_xlabel(f"time [{unit}]")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    handles = [
        Patch(facecolor=CATEGORY_COLORS.get(c, _OTHER_COLOR), label=c)
        for c in categories + sorted(seen - set(categories))
        if c in seen or c in ("forward", "backward")
    ]
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(handles),
        frameon=False,
        fontsize=8,
    )
    if title is None:
        schedule = _SCHEDULE_NAMES.get(plan.mapping.schedule, plan.mapping.schedule)
        title = (
            f"{schedule} schedule: p={num_stages} stages, m={plan.num_microbatches} micro-batches"
        )
    ax.set_title(title, loc="left", fontsize=10)

    fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
    return path


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
