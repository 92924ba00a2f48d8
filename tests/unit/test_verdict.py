"""The report's verdict: a pure function of the summary, checked on hand-built cases whose
bounding resource is known by construction."""

from __future__ import annotations

import pytest

from palmsim.report.metrics import format_summary_table, step_bound
from palmsim.report.verdict import format_verdict, verdict


def _summary(**over: object) -> dict[str, object]:
    """A 10 s iteration whose mean tile computes 2 s compute-bound, 1 s memory-bound and 0.5 s
    launch-bound, with a 30 % bubble and 0.8 s of exposed communication."""
    base: dict[str, object] = {
        "iteration_time_s": 10.0,
        "tile_time_by_bound_s": {"compute": 2.0, "memory": 1.0, "latency": 0.5},
        "pipeline_bubble_fraction": 0.3,
        "exposed_communication_s": 0.8,
        "dram_bandwidth_utilization_max": 0.25,
        "dram_bandwidth_utilization_max_channel": "dram:3->tile:7",
        "noc_link_utilization_max": 0.125,
        "noc_link_utilization_max_channel": "tile:1->tile:2",
    }
    base.update(over)
    return base


def test_the_bubble_bounds_a_pipeline_with_a_large_bubble() -> None:
    """Bubble 0.3 x 10 s = 3 s beats compute 2 s, memory 1 s, exposed 0.8 s, launch 0.5 s."""
    v = verdict(_summary())
    assert v is not None
    assert v.resource == "pipeline bubble"
    assert v.share == pytest.approx(0.3) and v.time_s == pytest.approx(3.0)
    assert [c for c, _ in v.shares] == [
        "pipeline bubble",
        "compute",
        "memory bandwidth",
        "exposed communication",
        "kernel launch latency",
        "host dispatch",
    ]
    assert "at most 3 s" in v.change


def test_memory_bandwidth_names_the_hottest_dram_port() -> None:
    v = verdict(_summary(tile_time_by_bound_s={"compute": 1.0, "memory": 6.0, "latency": 0.0}))
    assert v is not None
    assert v.resource == "memory bandwidth" and v.share == pytest.approx(0.6)
    assert v.where == "hottest DRAM port dram:3->tile:7 at 25.0 %"
    assert "twice the memory bandwidth would save at most 3 s" in v.change


def test_launch_latency_is_its_own_resource() -> None:
    """A decode-like run: 7 s of the mean tile's 8 s are launch-dominated kernels."""
    v = verdict(
        _summary(
            tile_time_by_bound_s={"compute": 0.1, "memory": 0.9, "latency": 7.0},
            pipeline_bubble_fraction=0.0,
        )
    )
    assert v is not None
    assert v.resource == "kernel launch latency" and v.share == pytest.approx(0.7)
    assert "at most 3.5 s" in v.change


def test_host_dispatch_is_named_where_the_device_waits_for_the_host() -> None:
    """An untraced prompt on a chip whose host issues every op: the mean tile waits 6 s of
    the 10 s for the host, more than any other term; all of it goes with a trace, half with
    a host twice as fast."""
    v = verdict(
        _summary(tile_time_by_bound_s={"compute": 1.0, "memory": 1.0, "latency": 0.5, "host": 6.0})
    )
    assert v is not None
    assert v.resource == "host dispatch" and v.share == pytest.approx(0.6)
    assert "would save at most 6 s" in v.change and "at most 3 s" in v.change


def test_exposed_communication_names_the_hottest_link() -> None:
    v = verdict(_summary(exposed_communication_s=4.0))
    assert v is not None
    assert v.resource == "exposed communication" and v.time_s == pytest.approx(4.0)
    assert v.where == "hottest link tile:1->tile:2 at 12.5 %"


def test_compute_wins_ties_and_an_empty_run_has_no_verdict() -> None:
    v = verdict(_summary(pipeline_bubble_fraction=0.2, exposed_communication_s=0.0))
    assert v is not None and v.resource == "compute"  # 2 s each: compute is listed first
    assert verdict(_summary(iteration_time_s=0.0)) is None
    assert "no verdict" in format_verdict(None)


def test_format_verdict_reads_as_one_sentence_with_units() -> None:
    text = format_verdict(verdict(_summary()))
    assert text.startswith("Bound by pipeline bubble: 30.0 % of the iteration (3 s).")
    assert "compute 20.0 %" in text


def test_summary_table_prints_the_bound() -> None:
    table = format_summary_table(_summary())
    assert "bound by" in table and "pipeline bubble, 30.0 % of it" in table
    # the host's share is printed where the host held the device, not as a 0 % everywhere
    assert "compute 20.0 %, memory 10.0 %, latency 5.0 %\n" in table + "\n"
    assert "host" not in table
    by = {"compute": 1.0, "memory": 1.0, "latency": 0.5, "host": 6.0}
    table = format_summary_table(_summary(tile_time_by_bound_s=by))
    assert "host dispatch, 60.0 % of it" in table
    assert "compute 10.0 %, memory 10.0 %, latency 5.0 %, host 60.0 %" in table


# --------------------------------------------------------------------------- step_bound


def test_step_bound_takes_the_largest_term_of_the_cost_model() -> None:
    """d = L + C + M: a 30 µs decode GEMM with 28.9 µs launch, 0.1 µs FLOP, 1 µs memory is
    latency-bound; without the launch term the same kernel is memory-bound."""
    assert step_bound(30e-6, 28.9e-6, 0.1e-6) == "latency"
    assert step_bound(1.1e-6, 0.0, 0.1e-6) == "memory"
    assert step_bound(10e-6, 1e-6, 8e-6) == "compute"  # M = 1 µs, L = 1 µs, C = 8 µs
    assert step_bound(2e-6, 0.0, 1e-6) == "compute"  # C = M = 1 µs: ties go to compute


def test_time_by_bound_tells_a_layers_forward_from_its_backward() -> None:
    """Forward and backward of L0.mlp share a label. Forward: 1 s of FLOP, runs 1.2 s
    (compute). Backward: 2 s of FLOP, runs 5 s (memory adds 3 s: memory). A GPU-like
    optimizer of 10 kernels at 0.1 s launch each runs 1.5 s (latency 1 s > memory 0.5 s).
    Between the passes the tile waits 0.3 s for the host (a ``host`` interval): host."""
    from palmsim.config.specs import MappingSpec
    from palmsim.engine.records import IntervalRecord, RunTrace
    from palmsim.mapping.plan import ComputeStep, MappingPlan, StageProgram
    from palmsim.report.metrics import time_by_bound_s
    from tests.unit.report_fakes import build

    fwd = ComputeStep("L0.mlp", 1.0, 16.0, 0.0, 0.0, 0.0, flop_time_s=1.0)
    bwd = ComputeStep("L0.mlp", 2.0, 32.0, 0.0, 0.0, 0.0, flop_time_s=2.0)
    opt = ComputeStep("optimizer", 1.5, 0.0, 0.0, 0.0, 0.0, launch_latency_s=1.0)
    program = build(
        StageProgram, stage=0, layers=(0, 1), forward=(fwd,), backward=(bwd,), optimizer=opt
    )
    plan = build(
        MappingPlan,
        mapping=MappingSpec(),
        num_microbatches=1,
        stage_tiles=(((0,),),),
        programs=(program,),
    )
    records = (
        IntervalRecord(0, "forward", 0.0, 1.2, 0, 0, "L0.mlp", 16.0, 0.0),
        IntervalRecord(0, "host", 1.2, 1.5, 0, 0, "L0.mlp", 0.0, 0.0, phase="forward"),
        IntervalRecord(0, "backward", 1.5, 6.5, 0, 0, "L0.mlp", 32.0, 0.0),
        IntervalRecord(0, "optimizer", 6.5, 8.0, 0, -1, "optimizer", 0.0, 0.0),
    )
    trace = RunTrace(records, (), (), 8.0, 0, 0.0)
    assert time_by_bound_s(trace, plan) == pytest.approx(
        {"compute": 1.2, "memory": 5.0, "latency": 1.5, "host": 0.3}
    )


def test_report_opens_with_the_verdict_and_leaves_out_empty_tables() -> None:
    """report.html: the verdict comes before the summary; a link table whose rows all round to
    0.0 % and a tile table of idle tiles are left out; times and bytes in human units."""
    from palmsim.report.html import Bottlenecks, report_html

    summary = {**_summary(), "workload": "w", "hardware": "h"}
    quiet = Bottlenecks(
        top_links={
            "network links": [("tile:0->tile:1", "intra_die", 0.0004, 1e6)],
            "DRAM channels": [("dram:0->tile:0", "dram", 0.25, 6.035e12)],
        },
        top_tiles=[(0, 0, 0.0)],
        iteration_time_s=10.0,
        bubble_fraction=0.3,
        bubble_time_s=3.0,
        exposed_communication_s=0.695563,
    )
    page = report_html(summary, {}, {}, quiet)
    assert page.index('id="verdict"') < page.index("<h2>Summary</h2>")
    assert "Bound by pipeline bubble" in page
    assert "Most utilised network links" not in page and "Most loaded tiles" not in page
    assert "Most utilised DRAM channels" in page and "6.035 TB" in page
    assert "695.6 ms" in page and "0.695563" not in page and "6.035e+12" not in page
