"""The Gantt chart renders (headless) and groups a tile's intervals into readable boxes."""

from __future__ import annotations

import sys

import pytest

from palmsim.config.specs import MappingSpec
from palmsim.engine.records import IntervalRecord, RunTrace
from palmsim.mapping.plan import ComputeStep, MappingPlan, StageProgram
from tests.unit.report_fakes import build

plots = pytest.importorskip("palmsim.report.plots")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_plan(p: int, m: int, tp: int, schedule: str) -> MappingPlan:
    """p stages of tp tiles each (stage s holds tiles s*tp .. s*tp+tp-1), one replica."""
    programs = tuple(
        build(
            StageProgram,
            stage=s,
            layers=(s, s + 1),
            optimizer=ComputeStep("optimizer", 0.0, 0.0, 0.0, 0.0, 0.0),
        )
        for s in range(p)
    )
    return build(
        MappingPlan,
        mapping=MappingSpec(pp=p, tp=tp, dp=1, micro_batch_size=1, schedule=schedule),
        num_microbatches=m,
        stage_tiles=(tuple(tuple(range(s * tp, s * tp + tp)) for s in range(p)),),
        programs=programs,
        model_flop_per_iteration=1.0,
        peak_flop_per_s=1.0,
        samples_per_iteration=m,
        tokens_per_iteration=m,
    )


def gpipe_trace(p: int, m: int, tp: int, tf: float, tb: float) -> RunTrace:
    """GPipe by its recurrence on every tile, plus an optimizer step at the end."""
    f_end: dict[tuple[int, int], float] = {}
    b_end: dict[tuple[int, int], float] = {}
    out = []

    def add(s: int, cat: str, start: float, dur: float, mb: int) -> None:
        for t in range(s * tp, s * tp + tp):
            # Two steps per pass, as a TP collective would split it.
            out.append(IntervalRecord(t, cat, start, start + dur / 2, s, mb, "a", 1.0, 1.0))
            out.append(IntervalRecord(t, cat, start + dur / 2, start + dur, s, mb, "b", 1.0, 1.0))

    for s in range(p):
        for i in range(m):
            start = max(f_end.get((s - 1, i), 0.0), f_end.get((s, i - 1), 0.0))
            f_end[s, i] = start + tf
            add(s, "forward", start, tf, i)
    for s in reversed(range(p)):
        for i in range(m):
            start = max(f_end[s, m - 1], b_end.get((s, i - 1), 0.0), b_end.get((s + 1, i), 0.0))
            b_end[s, i] = start + tb
            add(s, "backward", start, tb, i)
    end = max(b_end.values())
    for t in range(p * tp):
        out.append(IntervalRecord(t, "optimizer", end, end + tf, t // tp, -1, "opt", 1.0, 1.0))
    return RunTrace(tuple(out), (), (), end + tf, 0, 0.0)


def test_gantt_writes_a_png(tmp_path):
    plan = make_plan(3, 4, 2, "gpipe")
    path = plots.gantt(gpipe_trace(3, 4, 2, 1e-3, 2e-3), plan, tmp_path / "gantt.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000


def test_gantt_large_pipeline_renders(tmp_path):
    """20 stages × 32 micro-batches: still one PNG, labels only where they fit."""
    plan = make_plan(20, 32, 1, "gpipe")
    path = plots.gantt(gpipe_trace(20, 32, 1, 0.1, 0.2), plan, tmp_path / "big.png", dpi=100)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_gantt_boxes_merge_consecutive_steps_of_one_pass():
    recs = [
        IntervalRecord(0, "forward", 0.0, 1.0, 0, 0, "a", 1.0, 0.0),
        IntervalRecord(0, "forward", 1.5, 2.0, 0, 0, "b", 1.0, 0.0),  # after a TP collective
        IntervalRecord(0, "forward", 2.0, 3.0, 0, 1, "a", 1.0, 0.0),  # next micro-batch
        IntervalRecord(0, "backward", 3.0, 5.0, 0, 0, "a", 1.0, 0.0),
        IntervalRecord(0, "forward", 5.0, 6.0, 0, 1, "c", 1.0, 0.0),  # same mb, interrupted
        IntervalRecord(1, "forward", 0.0, 9.0, 1, 0, "a", 1.0, 0.0),  # other tile
    ]
    assert plots.gantt_boxes(recs, 0) == [
        (0.0, 2.0, "forward", 0),
        (2.0, 3.0, "forward", 1),
        (3.0, 5.0, "backward", 0),
        (5.0, 6.0, "forward", 1),
    ]


def test_plots_is_not_imported_by_the_rest_of_report():
    """matplotlib is loaded lazily: importing palmsim.report must not need it."""
    import palmsim.report.export
    import palmsim.report.metrics
    import palmsim.report.timeline  # noqa: F401

    for name in ("palmsim.report.export", "palmsim.report.metrics", "palmsim.report.timeline"):
        source = sys.modules[name].__file__
        assert source is not None
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
        assert "import matplotlib" not in text
        assert "from matplotlib" not in text


def test_collective_waits_extend_their_pass_box():
    """forward step, TP all-reduce wait, forward step of one micro-batch: one forward box."""
    from palmsim.engine.records import IntervalRecord
    from palmsim.report.plots import gantt_boxes

    recs = [
        IntervalRecord(0, "forward", 0.0, 1.0, 0, 3, "L0.attn", 0.0, 0.0, "forward"),
        IntervalRecord(0, "comm", 1.0, 1.5, 0, 3, "forward.L0.attn.ar", 0.0, 0.0, "forward"),
        IntervalRecord(0, "forward", 1.5, 2.0, 0, 3, "L0.mlp", 0.0, 0.0, "forward"),
        IntervalRecord(0, "comm", 2.0, 2.5, 0, 3, "backward.L0.mlp.ar", 0.0, 0.0, "backward"),
    ]
    assert gantt_boxes(recs, 0) == [(0.0, 2.0, "forward", 3), (2.0, 2.5, "backward", 3)]
