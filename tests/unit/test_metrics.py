"""Metrics and timelines on hand-made records with hand-computed expectations."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from palmsim.config.specs import MappingSpec
from palmsim.engine.records import FlowRecord, IntervalRecord, MemoryRecord, RunTrace
from palmsim.mapping.plan import ComputeStep, MappingPlan, MemoryBreakdown, StageProgram
from palmsim.report.metrics import (
    BOUNDS,
    _bounds,
    _merged_spans,
    _overlap_length_s,
    channel_bytes,
    compute_busy_s,
    exposed_communication_s,
    format_summary_table,
    intersection_length_s,
    link_busy_intervals,
    merge_intervals,
    pipeline_bubble_fraction,
    step_bound,
    sum_in_order,
    summarize,
    tile_utilization,
)
from palmsim.report.timeline import TIMELINE_COLUMNS, binned_amount, utilization_timeline
from tests.unit.report_fakes import FakeChannel, FakeChip, build

# --------------------------------------------------------------------------- fakes and builders


def make_plan(
    stage_tiles: tuple[tuple[tuple[int, ...], ...], ...],
    *,
    schedule: str = "gpipe",
    num_microbatches: int = 4,
    memory: tuple[tuple[int, MemoryBreakdown], ...] | None = None,
    model_flop_per_iteration: float = 0.0,
    peak_flop_per_s: float = 1.0,
    samples_per_iteration: int = 1,
    tokens_per_iteration: int = 1,
) -> MappingPlan:
    """A minimal MappingPlan with empty stage programs."""
    num_stages = len(stage_tiles[0])
    tiles = sorted(t for rep in stage_tiles for st in rep for t in st)
    programs = tuple(
        build(
            StageProgram,
            stage=s,
            layers=(s, s + 1),
            optimizer=ComputeStep("optimizer", 0.0, 0.0, 0.0, 0.0, 0.0),
        )
        for s in range(num_stages)
    )
    if memory is None:
        memory = tuple((t, MemoryBreakdown(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)) for t in tiles)
    return build(
        MappingPlan,
        mapping=MappingSpec(
            pp=num_stages,
            tp=len(stage_tiles[0][0]),
            dp=len(stage_tiles),
            micro_batch_size=1,
            schedule=schedule,
        ),
        num_microbatches=num_microbatches,
        stage_tiles=stage_tiles,
        programs=programs,
        dram_port_of_tile=tuple((t, 0) for t in tiles),
        memory=memory,
        model_flop_per_iteration=model_flop_per_iteration,
        peak_flop_per_s=peak_flop_per_s,
        samples_per_iteration=samples_per_iteration,
        tokens_per_iteration=tokens_per_iteration,
    )


def iv(
    tile: int,
    category: str,
    start_s: float,
    end_s: float,
    stage: int = 0,
    mb: int = 0,
    flop: float = 0.0,
) -> IntervalRecord:
    """A compute interval."""
    return IntervalRecord(tile, category, start_s, end_s, stage, mb, category[0].upper(), flop, 0.0)


def flow(
    flow_id: int,
    channels: tuple[int, ...],
    start_s: float,
    end_s: float,
    size: float,
    *,
    src: int = 0,
    dst: int = 1,
    category: str = "p2p",
) -> FlowRecord:
    """A flow record."""
    return FlowRecord(flow_id, category, src, dst, channels, start_s, end_s, size, 0, 0)


def trace_of(intervals=(), flows=(), memory=(), end_time_s: float = 0.0) -> RunTrace:
    """A RunTrace around the given records."""
    return RunTrace(tuple(intervals), tuple(flows), tuple(memory), end_time_s, 123, 0.5)


def gpipe_intervals(p: int, m: int, tf: float, tb: float, tiles: list[tuple[int, ...]]):
    """GPipe by its recurrence: all forwards, then all backwards, each op after its deps.

    F(s, i) starts when F(s-1, i) and F(s, i-1) are done; B(s, i) starts when every forward of
    stage s, B(s, i-1) and B(s+1, i) are done.
    """
    f_end: dict[tuple[int, int], float] = {}
    b_end: dict[tuple[int, int], float] = {}
    out = []
    for s in range(p):
        for i in range(m):
            start = max(f_end.get((s - 1, i), 0.0), f_end.get((s, i - 1), 0.0))
            f_end[s, i] = start + tf
            out += [iv(t, "forward", start, start + tf, s, i) for t in tiles[s]]
    for s in reversed(range(p)):
        for i in range(m):
            start = max(f_end[s, m - 1], b_end.get((s, i - 1), 0.0), b_end.get((s + 1, i), 0.0))
            b_end[s, i] = start + tb
            out += [iv(t, "backward", start, start + tb, s, i) for t in tiles[s]]
    return out


def one_f_one_b_intervals(p: int, m: int, tf: float, tb: float, tiles: list[tuple[int, ...]]):
    """1F1B (PipeDream-flush) by its recurrence: stage s runs p-s-1 warm-up forwards, then
    alternates one forward and one backward, then drains the remaining backwards."""
    orders = []
    for s in range(p):
        warmup = min(p - s - 1, m)
        seq = [("F", i) for i in range(warmup)]
        next_f, next_b = warmup, 0
        while next_b < m:
            if next_f < m:
                seq.append(("F", next_f))
                next_f += 1
            seq.append(("B", next_b))
            next_b += 1
        orders.append(seq)
    end: dict[tuple[str, int, int], float] = {}
    clock = [0.0] * p
    pos = [0] * p
    out = []
    while any(pos[s] < len(orders[s]) for s in range(p)):
        progressed = False
        for s in range(p):
            if pos[s] == len(orders[s]):
                continue
            kind, i = orders[s][pos[s]]
            dep = ("F", s - 1, i) if kind == "F" and s > 0 else None
            if kind == "B" and s < p - 1:
                dep = ("B", s + 1, i)
            if dep is not None and dep not in end:
                continue
            start = max(clock[s], end.get(dep, 0.0) if dep else 0.0)
            duration = tf if kind == "F" else tb
            end[kind, s, i] = clock[s] = start + duration
            category = "forward" if kind == "F" else "backward"
            out += [iv(t, category, start, start + duration, s, i) for t in tiles[s]]
            pos[s] += 1
            progressed = True
        assert progressed, "schedule deadlocked"
    return out


# --------------------------------------------------------------------------- intervals and links


def test_merge_intervals_unions_overlapping_and_touching():
    assert merge_intervals([(3, 4), (0, 1), (0.5, 2), (4, 4.5), (5, 5)]) == [(0, 2), (3, 4.5)]


def test_intersection_length():
    assert intersection_length_s([(0, 2), (3, 5)], [(1, 4)]) == pytest.approx(2.0)
    assert intersection_length_s([(0, 1)], [(1, 2)]) == 0.0


def test_array_interval_algebra_is_the_list_algebra_bit_for_bit():
    """The numpy merge and overlap (the report's fast path) give exactly the floats of the
    list definitions, ties, nesting, touching and empty intervals included."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(0, 40))
        starts = np.round(rng.uniform(0, 10, n), 1)  # coarse: many ties and touches
        ends = starts + np.round(rng.uniform(-1, 2, n), 1)
        spans = _merged_spans(starts, ends)
        as_list = merge_intervals(zip(starts.tolist(), ends.tolist(), strict=True))
        assert list(zip(spans[0].tolist(), spans[1].tolist(), strict=True)) == as_list
        other = rng.uniform(0, 10, 30)
        b_ends = other[:15] + other[15:] / 5
        b = merge_intervals(zip(other[:15].tolist(), b_ends.tolist(), strict=True))
        b_spans = (np.array([x for x, _ in b]), np.array([y for _, y in b]))
        assert _overlap_length_s(spans, b_spans) == intersection_length_s(as_list, b)


def test_overlap_of_arrays_by_hand():
    a = (np.array([0.0, 3.0, 10.0]), np.array([2.0, 5.0, 11.0]))
    b = (np.array([1.0, 4.5]), np.array([4.0, 12.0]))
    # [1, 2] + [3, 4] + [4.5, 5] + [10, 11]
    assert _overlap_length_s(a, b) == 1.0 + 1.0 + 0.5 + 1.0
    assert _overlap_length_s(a, (np.zeros(0), np.zeros(0))) == 0.0


def test_sum_in_order_adds_left_to_right():
    # left to right: 1 + 1e16 rounds to 1e16, minus 1e16 is 0, plus 1 is 1; a pairwise sum
    # ((1 + 1e16) + (-1e16 + 1)) would give 0
    assert sum_in_order(np.array([1.0, 1e16, -1e16, 1.0])) == 1.0
    assert sum_in_order(np.zeros(0)) == 0.0


def test_step_bounds_of_arrays_break_ties_as_step_bound():
    # (duration, launch, flop time, flop): compute = memory, memory = latency, all equal,
    # latency alone, and an interval of no plan step that moved data but did no FLOP
    cases = [(2.0, 0.0, 1.0, 1.0), (2.0, 1.0, 0.0, 0.0), (3.0, 1.0, 1.0, 1.0)]
    cases += [(1.0, 1.0, 0.0, 0.0), (2.0, math.nan, math.nan, 0.0)]
    duration, launch, flop_time, flop = (np.array(c) for c in zip(*cases, strict=True))
    got = [BOUNDS[i] for i in _bounds(duration, launch, flop_time, flop)]
    expected = [step_bound(d, lat, c) for d, lat, c, _ in cases[:4]] + ["memory"]
    assert got == expected == ["compute", "memory", "compute", "latency", "memory"]


def test_link_busy_intervals_is_the_union_of_flows_on_that_channel():
    flows = [
        flow(0, (0, 1), 0.0, 1.0, 10),
        flow(1, (0,), 0.5, 2.0, 10),
        flow(2, (1,), 1.5, 5.0, 10),  # not on channel 0
        flow(3, (2, 0), 3.0, 4.0, 10),
        flow(4, (0,), 4.0, 4.5, 10),  # touches the previous one
    ]
    assert link_busy_intervals(flows, 0) == [(0.0, 2.0), (3.0, 4.5)]
    assert link_busy_intervals(flows, 1) == [(0.0, 1.0), (1.5, 5.0)]
    assert link_busy_intervals(flows, 3) == []


def test_channel_bytes_adds_each_flow_to_every_channel_of_its_route():
    flows = [flow(0, (0, 1), 0, 1, 100.0), flow(1, (1, 2), 0, 1, 50.0)]
    np.testing.assert_array_equal(channel_bytes(flows, 4), [100.0, 150.0, 50.0, 0.0])


# --------------------------------------------------------------------------- tiles


def test_compute_busy_and_utilization():
    intervals = [
        iv(0, "forward", 0.0, 1.0),
        iv(0, "backward", 2.0, 3.5),
        iv(1, "forward", 0.0, 3.0),
        iv(1, "optimizer", 3.0, 4.0),
    ]
    assert compute_busy_s(intervals, 0) == pytest.approx(2.5)
    assert compute_busy_s(intervals, 1) == pytest.approx(4.0)
    assert compute_busy_s(intervals, 1, categories={"forward"}) == pytest.approx(3.0)
    util = tile_utilization(intervals, [0, 1, 2], 4.0)
    assert util == {0: pytest.approx(0.625), 1: pytest.approx(1.0), 2: 0.0}


# --------------------------------------------------------------------------- pipeline bubble


@pytest.mark.parametrize("builder", [gpipe_intervals, one_f_one_b_intervals])
def test_bubble_fraction_uniform_stages_matches_closed_form(builder):
    """p=3, m=4, tf=1, tb=2: (p-1)/(m+p-1) = 2/6 for GPipe and 1F1B alike."""
    p, m = 3, 4
    tiles = [(0,), (1,), (2,)]
    intervals = builder(p, m, 1.0, 2.0, tiles)
    window_end = max(r.end_s for r in intervals)
    assert window_end == 18.0  # (m+p-1)(tf+tb)
    plan = make_plan((tuple(tiles),), num_microbatches=m)
    trace = trace_of(intervals, end_time_s=window_end + 1.0)  # + an optimizer tail
    assert pipeline_bubble_fraction(trace, plan) == pytest.approx(2 / 6, rel=1e-12)


def test_bubble_fraction_ignores_optimizer_and_other_replicas_and_averages_tp_tiles():
    """Two TP tiles per stage; replica 1 runs late; an optimizer step follows. Only replica 0's
    forward/backward/recompute intervals count."""
    p, m = 2, 4
    rep0 = [(0, 1), (2, 3)]
    intervals = gpipe_intervals(p, m, 1.0, 1.0, rep0)
    intervals += [iv(t, "optimizer", 10.0, 12.0) for t in (0, 1, 2, 3)]
    intervals += [iv(t, "forward", 50.0, 51.0) for t in (4, 5, 6, 7)]
    plan = make_plan((tuple(rep0), ((4, 5), (6, 7))), num_microbatches=m)
    trace = trace_of(intervals, end_time_s=60.0)
    assert pipeline_bubble_fraction(trace, plan) == pytest.approx(1 / 5, rel=1e-12)


def test_bubble_fraction_of_an_empty_trace_is_zero():
    plan = make_plan((((0,),),))
    assert pipeline_bubble_fraction(trace_of(), plan) == 0.0


# --------------------------------------------------------------------------- summary


def summary_fixture():
    """Two stages of one tile each, 4 s per iteration, hand-picked numbers."""
    chip = FakeChip(
        channels=(
            FakeChannel(0, "intra_die", "tile:0", "tile:1", 100.0),
            FakeChannel(1, "nic", "tile:1", "tile:0", 10.0),
            FakeChannel(2, "dram", "dram:0", "tile:0", 1000.0),
            FakeChannel(3, "dram", "dram:1", "tile:1", 1000.0),
        ),
        num_tiles=4,
    )
    memory = (
        (0, MemoryBreakdown(10.0, 10.0, 20.0, 100.0, 0.0, 0.0)),
        (1, MemoryBreakdown(10.0, 10.0, 20.0, 80.0, 0.0, 0.0)),
    )
    plan = make_plan(
        (((0,), (1,)),),
        schedule="1f1b",
        num_microbatches=2,
        memory=memory,
        model_flop_per_iteration=6e12,
        peak_flop_per_s=1e12,
        samples_per_iteration=8,
        tokens_per_iteration=8 * 1024,
    )
    intervals = [
        iv(0, "forward", 0.0, 1.0, 0, 0, flop=1e12),
        iv(0, "backward", 2.0, 3.0, 0, 0, flop=2e12),
        iv(1, "forward", 1.0, 2.0, 1, 0, flop=1e12),
        iv(1, "backward", 2.0, 4.0, 1, 0, flop=4e12),
    ]
    flows = [
        flow(0, (0,), 1.0, 2.0, 200.0, src=0, dst=1),
        flow(1, (1,), 1.0, 2.0, 30.0, src=1, dst=0),
        flow(2, (2,), 0.0, 1.0, 400.0, src=-1, dst=0, category="dram"),
    ]
    memory_records = [
        MemoryRecord(0, 0.0, 0.0),
        MemoryRecord(0, 1.0, 50.0),
        MemoryRecord(0, 3.0, 0.0),
    ]
    trace = trace_of(intervals, flows, memory_records, end_time_s=4.0)
    return trace, chip, plan


REQUIRED_KEYS = {
    "iteration_time_s",
    "throughput_samples_per_s",
    "throughput_tokens_per_s",
    "model_flop_per_iteration",
    "mfu",
    "pipeline_bubble_fraction",
    "tile_compute_utilization",
    "noc_link_utilization_max",
    "noc_link_utilization_max_channel",
    "dram_bandwidth_utilization_max",
    "memory_peak_bytes_per_tile_max",
    "memory_breakdown_bytes",
    "num_tiles_used",
    "num_microbatches",
    "simulated_events",
    "simulation_wall_time_s",
    "palmsim_version",
    "mapping",
    "hardware",
    "workload",
    "exposed_communication_s",
}


def test_summary_arithmetic():
    trace, chip, plan = summary_fixture()
    s = summarize(trace, chip, plan, workload_name="w", hardware_name="h", version="9.9")
    assert s.keys() >= REQUIRED_KEYS
    assert s["iteration_time_s"] == 4.0
    assert s["throughput_samples_per_s"] == pytest.approx(2.0)  # 8 / 4
    assert s["throughput_tokens_per_s"] == pytest.approx(2048.0)  # 8192 / 4
    assert s["mfu"] == pytest.approx(0.75)  # 6e12 / (4 s * 2 tiles * 1e12)
    assert s["hfu"] == pytest.approx(1.0)  # 8e12 / 8e12
    # Stage busy 2 s and 3 s over a 4 s window: 1 - 2.5/4.
    assert s["pipeline_bubble_fraction"] == pytest.approx(0.375)
    assert s["tile_compute_utilization"] == {
        "mean": pytest.approx(0.625),
        "min": pytest.approx(0.5),
        "max": pytest.approx(0.75),
    }
    # 200 B / (100 B/s * 4 s) = 0.5 on the intra-die link, 30 / (10 * 4) = 0.75 on the NIC.
    assert s["noc_link_utilization_max"] == pytest.approx(0.75)
    assert s["noc_link_utilization_max_channel"] == "tile:1->tile:0"
    assert s["dram_bandwidth_utilization_max"] == pytest.approx(0.1)  # 400 / (1000 * 4)
    assert s["dram_bandwidth_utilization_max_channel"] == "dram:0->tile:0"
    # Tile 0: 40 static + 50 peak recorded activations = 90; tile 1: 40 + 80 from the plan.
    assert s["memory_peak_bytes_per_tile_max"] == pytest.approx(120.0)
    assert s["memory_peak_tile"] == 1
    assert s["memory_breakdown_bytes"] == {
        "weights": 10.0,
        "gradients": 10.0,
        "optimizer": 20.0,
        "activations": 80.0,
    }
    # Tile 0 talks over [1, 2] while idle; tile 1 computes all of [1, 2].
    assert s["exposed_communication_s"] == pytest.approx(1.0)
    assert s["communication_bytes_by_category"] == {"dram": 400.0, "p2p": 230.0}
    assert s["num_tiles_used"] == 2
    assert s["num_tiles_total"] == 4
    assert s["num_microbatches"] == 2
    assert s["simulated_events"] == 123
    assert s["simulation_wall_time_s"] == 0.5
    assert s["palmsim_version"] == "9.9"
    assert s["mapping"]["schedule"] == "1f1b"
    assert (s["hardware"], s["workload"]) == ("h", "w")


def test_summary_is_json_ready_with_python_types():
    trace, chip, plan = summary_fixture()
    s = summarize(trace, chip, plan, workload_name="w", hardware_name="h", version="1")

    def check(value):
        if isinstance(value, dict):
            for k, v in value.items():
                assert isinstance(k, str)
                check(v)
        elif isinstance(value, list):
            for v in value:
                check(v)
        else:
            assert type(value) in (float, int, str, bool, type(None)), (value, type(value))

    check(s)
    assert json.loads(json.dumps(s)) == s


def test_memory_peak_tile_falls_back_to_plan_activations():
    trace, chip, plan = summary_fixture()
    trace = trace_of(trace.intervals, trace.flows, (MemoryRecord(0, 0.0, 500.0),), 4.0)
    s = summarize(trace, chip, plan, workload_name="w", hardware_name="h", version="1")
    assert s["memory_peak_tile"] == 0
    assert s["memory_peak_bytes_per_tile_max"] == pytest.approx(540.0)


def test_exposed_communication_counts_only_uncovered_network_time():
    trace = trace_of(
        [iv(0, "forward", 0.0, 1.0)],
        [
            flow(0, (0,), 0.5, 2.0, 1.0, src=0, dst=1),
            flow(1, (1,), 5.0, 9.0, 1.0, src=-1, dst=0, category="dram"),
        ],
        end_time_s=9.0,
    )
    assert exposed_communication_s(trace, [0]) == pytest.approx(1.0)
    assert exposed_communication_s(trace, [1]) == pytest.approx(1.5)
    assert exposed_communication_s(trace, []) == 0.0


def test_zero_length_run_gives_zero_rates_not_errors():
    chip = FakeChip((FakeChannel(0, "intra_die", "tile:0", "tile:1", 1.0),), 1)
    plan = make_plan((((0,),),), model_flop_per_iteration=1.0)
    s = summarize(trace_of(), chip, plan, workload_name="w", hardware_name="h", version="1")
    assert s["mfu"] == 0.0
    assert s["throughput_samples_per_s"] == 0.0
    assert s["noc_link_utilization_max"] == 0.0


def test_format_summary_table_uses_human_units():
    trace, chip, plan = summary_fixture()
    s = summarize(trace, chip, plan, workload_name="w", hardware_name="h", version="1")
    table = format_summary_table(s)
    lines = table.splitlines()
    assert any(line.startswith("MFU") and line.endswith("75.0 %") for line in lines)
    assert any("iteration time" in line and line.endswith("4 s") for line in lines)
    assert any(line.startswith("peak memory") and "0.117 KiB" in line for line in lines)
    assert "tile:1->tile:0" in table
    assert "2.048k tokens/s" in table
    assert "1.5 TFLOP/s" in table
    # Values start in one column, two spaces after the longest label.
    column = len(lines[0]) - len(lines[0].split()[-1])
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)
    assert "replicas simulated" not in table  # every replica ran
    assert "TP ranks simulated" not in table  # every rank ran
    s["mapping"]["dp"], s["simulated_replicas"] = 24, 1
    s["mapping"]["tp"], s["simulated_tp_ranks"] = 8, 1
    reduced = format_summary_table(s)
    assert re.search(r"\nreplicas simulated +1 of 24 \(symmetric", reduced)
    assert re.search(r"\nTP ranks simulated +1 of 8 per stage \(symmetric", reduced)


def test_a_kv_cache_wholly_in_dram_is_said_so():
    """A stage whose KV cache has no token in SRAM (an n150's SRAM full of weights) said 'in
    SRAM up to token 0'."""
    placement = {
        "weights_sram_bytes": 1024.0,
        "weights_dram_bytes": 2048.0,
        "kv_sram_bytes": 0.0,
        "kv_dram_bytes": 4096.0,
    }
    table = format_summary_table(
        {
            "kv_cache_placement": {
                "stage0": {**placement, "spill_token": 0},
                "stage1": {**placement, "spill_token": 17},
            }
        }
    )
    assert "4.000 KiB DRAM, no token of it in SRAM" in table
    assert "4.000 KiB DRAM, in SRAM up to token 17" in table


def test_an_inference_memory_breakdown_names_the_kv_cache_not_gradients():
    """An inference holds weights, its KV cache and activations: the table says so, not
    'gradients 0 B, optimizer 0 B, activations' (the cache's bytes under that name)."""
    breakdown = {"weights": 2048.0, "gradients": 0.0, "optimizer": 0.0, "activations": 1024.0}
    summary = {"memory_breakdown_bytes": breakdown}
    training = format_summary_table(summary)
    assert "gradients 0 B, optimizer 0 B, activations 1.000 KiB" in training
    inference = format_summary_table({**summary, "mode": "inference"})
    assert "weights 2.000 KiB, KV cache and activations 1.000 KiB" in inference
    assert "gradients" not in inference


def test_an_inference_mapping_line_has_no_schedule_or_recompute():
    """Schedule and recompute are training-only keys: an inference's mapping line drops
    them (it read '1f1b recompute=none' for every inference)."""
    mapping = {"pp": 1, "tp": 8, "dp": 4, "micro_batch_size": 8}
    mapping |= {"schedule": "1f1b", "recompute": "none", "placement": "snake"}
    training = format_summary_table({"mapping": mapping})
    assert "mbs=8 1f1b recompute=none placement=snake" in training
    inference = format_summary_table({"mapping": mapping, "mode": "inference"})
    assert "pp=1 tp=8 dp=4 mbs=8 placement=snake" in inference


# --------------------------------------------------------------------------- timeline


def test_binned_amount_spreads_uniformly_and_keeps_point_masses():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    got = binned_amount(
        edges,
        np.array([0.5, 0.0, 2.0]),
        np.array([2.5, 0.0, 2.0]),
        np.array([4.0, 7.0, 1.0]),
    )
    # 4 units over [0.5, 2.5]: 1 + 2 + 1; point masses at 0 and 2.
    np.testing.assert_allclose(got, [1.0 + 7.0, 2.0, 1.0 + 1.0])


def test_utilization_timeline_hand_computed():
    chip = FakeChip(
        (
            FakeChannel(0, "intra_die", "tile:0", "tile:1", 100.0),
            FakeChannel(1, "intra_die", 1, 0, 100.0),
            FakeChannel(2, "dram", 0, -1, 50.0),
        ),
        num_tiles=2,
    )
    trace = trace_of(
        [iv(0, "forward", 0.0, 1.5), iv(1, "forward", 1.0, 2.0)],
        [
            flow(0, (0,), 0.0, 2.0, 200.0),  # 100 B per 1 s bin on channel 0
            flow(1, (2,), 1.0, 1.5, 25.0),  # 25 B in bin 1 on the DRAM port
        ],
        end_time_s=2.0,
    )
    tl = utilization_timeline(trace, chip, 1.0)
    assert tuple(tl) == TIMELINE_COLUMNS
    np.testing.assert_allclose(tl["time_start_s"], [0.0, 1.0])
    np.testing.assert_allclose(tl["time_end_s"], [1.0, 2.0])
    np.testing.assert_allclose(tl["tile_compute_utilization_mean"], [0.5, 0.75])
    np.testing.assert_allclose(tl["noc_link_utilization_max"], [1.0, 1.0])
    np.testing.assert_allclose(tl["noc_link_utilization_mean"], [0.5, 0.5])
    np.testing.assert_allclose(tl["dram_bandwidth_utilization_max"], [0.0, 0.5])
    np.testing.assert_allclose(tl["dram_bandwidth_utilization_mean"], [0.0, 0.5])


def test_utilization_timeline_last_bin_is_cut_at_the_end_and_tiles_can_be_given():
    chip = FakeChip((), num_tiles=4)
    trace = trace_of([iv(0, "forward", 0.0, 2.5)], end_time_s=2.5)
    tl = utilization_timeline(trace, chip, 1.0, tiles=[0, 1])
    np.testing.assert_allclose(tl["time_end_s"], [1.0, 2.0, 2.5])
    np.testing.assert_allclose(tl["tile_compute_utilization_mean"], [0.5, 0.5, 0.5])


def test_utilization_timeline_rejects_bad_bin():
    with pytest.raises(ValueError, match="bin_s"):
        utilization_timeline(trace_of(end_time_s=1.0), FakeChip((), 1), 0.0)


def test_bubble_of_one_stage_is_never_negative_zero():
    """One stage of three TP tiles, each busy over the whole window [0, 0.1]: the mean of three
    0.1 s is 0.1 s plus an ulp in floating point, which gave "pipeline bubble -0.0 %"."""
    plan = make_plan((((0, 1, 2),),))
    trace = trace_of([iv(t, "forward", 0.0, 0.1) for t in (0, 1, 2)], end_time_s=0.1)
    bubble = pipeline_bubble_fraction(trace, plan)
    assert bubble == 0.0 and str(bubble) == "0.0"
    assert "pipeline bubble  0.0 %" in format_summary_table({"pipeline_bubble_fraction": bubble})


def test_binned_amounts_are_never_negative_and_add_up() -> None:
    """A bin's share is a difference of two running sums; with 50 items of up to 1e9 bytes
    their rounding left -1.2e-4 B in empty bins (negative utilisations of -2e-13 in
    timeline.csv, found by fuzzing). Each bin is clamped at zero; the total is unchanged."""
    import numpy as np

    from palmsim.report.timeline import binned_amount

    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 1, 50)) * 7.3
    ends = starts + rng.uniform(0, 0.5, 50)
    amounts = rng.uniform(1e6, 1e9, 50)
    binned = binned_amount(np.linspace(0, 8, 201), starts, ends, amounts)
    assert binned.min() >= 0.0
    assert binned.sum() == pytest.approx(amounts.sum(), rel=1e-12)
