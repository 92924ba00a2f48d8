"""Property tests over small random valid experiments, drawn by hypothesis (issue 18).

For every experiment hypothesis draws (wafer or GPU cluster, PP/TP/DP, micro-batches,
schedule, recompute, placement, topology, SRAM size) the simulated iteration must satisfy:

1. no channel carries more bytes in a busy period than its bandwidth allows, and no tile is
   busy longer than the iteration (utilisation <= 1);
2. bytes are conserved: the DRAM flows carry exactly the DRAM bytes of every compute step the
   plan asks for, and the pipeline flows exactly its sends;
3. the iteration takes at least the search's lower bound (:mod:`palmsim.explore.bound`);
4. the same input gives byte-identical records;
5. no tile idles while the inputs of its next step are ready (GPipe and 1F1B): every gap in
   a tile's timeline ends when a pipeline message for that tile arrives.

Two planted bugs show the checks fail when they should: flows that drain at twice their
channels' bandwidth (``test_the_properties_catch_a_planted_bug``) and tiles that wait with
their inputs ready (``test_the_idle_property_catches_a_lazy_tile``).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palmsim.engine import simulator as simulator_module
from palmsim.engine.flows import FlowNetwork
from palmsim.engine.simulator import Simulator
from palmsim.errors import MappingError
from palmsim.explore.bound import iteration_lower_bound_s
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import CollectiveStep, ComputeStep, MappingPlan, Step
from palmsim.report.export import records_csv
from tests.conftest import cluster_spec, experiment, gpt_model, wafer_spec

REL = 1e-9


@st.composite
def experiments(draw: st.DrawFn) -> dict:
    """A small valid experiment: at most 16 tiles of a 64-tile wafer or a 16-GPU cluster."""
    pp = draw(st.sampled_from([1, 2, 4]))
    tp = draw(st.sampled_from([1, 2, 4]))
    dp = draw(st.sampled_from([1, 2]))
    mbs = draw(st.sampled_from([1, 2]))
    return {
        "on_cluster": draw(st.booleans()),
        "mapping": {
            "pp": pp,
            "tp": tp,
            "dp": dp,
            "micro_batch_size": mbs,
            "schedule": draw(st.sampled_from(["gpipe", "1f1b"])),
            "recompute": draw(st.sampled_from(["none", "selective", "full"])),
            "placement": draw(st.sampled_from(["snake", "row_major"])),
            "p2p_overlap": draw(st.booleans()),
        },
        "batch": draw(st.integers(1, 4)) * mbs * dp,
        "topology": draw(st.sampled_from(["mesh", "torus"])),
        "sram_bytes": draw(st.sampled_from([64 * 2**10, 3 * 2**20, 1e12])),
    }


def _simulate(case: dict, network: type = FlowNetwork):
    if case["on_cluster"]:
        hw = cluster_spec(nodes=2, gpus=8)
    else:
        hw = wafer_spec(topology=case["topology"], sram_bytes=case["sram_bytes"])
    model = gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128)
    exp = experiment(hw, model, seq=128, batch=case["batch"], **case["mapping"])
    chip = Chip.from_spec(hw)
    plan = map_workload(exp, chip)
    simulator = Simulator.__new__(Simulator)
    original = simulator_module.FlowNetwork
    simulator_module.FlowNetwork = network  # type: ignore[misc]
    try:
        Simulator.__init__(simulator, chip, plan, exp.run)
    finally:
        simulator_module.FlowNetwork = original  # type: ignore[misc]
    return chip, plan, simulator.run()


def _compute_steps(steps: tuple[Step, ...], mb: int) -> list[ComputeStep]:
    out = []
    for step in steps:
        if isinstance(step, ComputeStep) and mb >= step.from_microbatch:
            out.append(step)
        elif isinstance(step, CollectiveStep) and step.overlap is not None:
            out.append(step.overlap)
    return out


def _expected_bytes(plan: MappingPlan) -> tuple[float, float]:
    """(DRAM bytes, pipeline-send bytes) the plan asks the simulated tiles to move."""
    p = plan.num_stages
    dram = sends = 0.0
    last = plan.num_virtual_stages - 1
    for stages in plan.stage_tiles[: plan.simulated_replicas]:
        for stage, all_ranks in enumerate(stages):
            tiles = all_ranks[: plan.simulated_ranks]
            program = plan.programs[stage]
            chunks = program.step_chunks or (0,) * len(program.steps)
            per_tile = 0.0
            for (phase, mb), chunk in zip(program.steps, chunks, strict=True):
                c = chunk * p + stage
                work = plan.programs[c]
                passes = (work.forward,) if phase == "F" else (work.recompute, work.backward)
                for steps in passes:
                    for s in _compute_steps(steps, mb):
                        per_tile += s.dram_read_bytes + s.dram_write_bytes
                if phase == "F" and c < last:
                    sends += work.send_bytes * len(tiles)
                if phase == "B" and c > 0:
                    sends += plan.programs[c - 1].send_bytes * len(tiles)
            opt = program.optimizer
            dram += (per_tile + opt.dram_read_bytes + opt.dram_write_bytes) * len(tiles)
    return dram, sends


def violations(chip: Chip, plan: MappingPlan, trace) -> list[str]:
    """Every property of the module docstring that the run breaks (1, 2, 3 and 5)."""
    found: list[str] = []
    end = trace.end_time_s
    # 1. utilisation <= 1: tiles, and each channel over each of its busy periods
    busy: dict[int, float] = defaultdict(float)
    for rec in trace.intervals:
        busy[rec.tile] += rec.end_s - rec.start_s
    found += [f"tile {t} busy {b} s > {end} s" for t, b in busy.items() if b > end * (1 + REL)]
    per_channel: dict[int, list] = defaultdict(list)
    for flow in trace.flows:
        for channel in flow.channels:
            per_channel[channel].append(flow)
    for channel, flows in per_channel.items():
        bandwidth = chip.channels[channel].bandwidth_bytes_per_s
        flows.sort(key=lambda f: f.start_s)
        window_start, window_end, carried = flows[0].start_s, flows[0].end_s, 0.0
        for flow in [*flows, None]:
            if flow is None or flow.start_s > window_end:
                if carried > bandwidth * (window_end - window_start) * (1 + 1e-6) + 1e-3:
                    found.append(
                        f"channel {channel} carried {carried:.6g} B in "
                        f"{window_end - window_start:.6g} s at {bandwidth:.6g} B/s"
                    )
                if flow is None:
                    break
                window_start, window_end, carried = flow.start_s, flow.end_s, 0.0
            window_end = max(window_end, flow.end_s)
            carried += flow.size_bytes
    # 2. bytes conserved
    dram, sends = _expected_bytes(plan)
    carried_dram = sum(f.size_bytes for f in trace.flows if f.category == "dram")
    carried_p2p = sum(f.size_bytes for f in trace.flows if f.category == "p2p")
    if carried_dram != pytest.approx(dram, rel=REL, abs=1e-6):
        found.append(f"DRAM flows carried {carried_dram} B, the plan asks {dram} B")
    if carried_p2p != pytest.approx(sends, rel=REL, abs=1e-6):
        found.append(f"pipeline flows carried {carried_p2p} B, the plan sends {sends} B")
    # 3. the search's lower bound
    bound = iteration_lower_bound_s(plan, chip)
    if end < bound * (1 - REL):
        found.append(f"iteration {end} s below the lower bound {bound} s")
    # 5. no idle tile with its inputs ready: every gap ends at a pipeline arrival for it
    arrivals: dict[int, list[float]] = defaultdict(list)
    for flow in trace.flows:
        if flow.category == "p2p":
            arrivals[flow.dst].append(flow.end_s)
    dp_waits = len(plan.stage_tiles) > 1
    timeline: dict[int, list] = defaultdict(list)
    for rec in trace.intervals:
        timeline[rec.tile].append(rec)
    for tile, records in timeline.items():
        records.sort(key=lambda r: (r.start_s, r.end_s))
        previous_end = 0.0
        for rec in records:
            gap = rec.start_s - previous_end
            if gap > REL * max(end, 1e-12) and not (rec.category == "optimizer" and dp_waits):
                ready = any(abs(t - rec.start_s) <= REL * max(end, 1e-12) for t in arrivals[tile])
                if not ready:
                    found.append(
                        f"tile {tile} idle {gap:.3g} s before {rec.category} {rec.label} "
                        f"(micro-batch {rec.microbatch}) with no input arriving then"
                    )
            previous_end = max(previous_end, rec.end_s)
    return found


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(case=experiments())
def test_small_experiments_keep_the_invariants(case: dict) -> None:
    try:
        chip, plan, trace = _simulate(case)
    except MappingError:
        return  # infeasible (e.g. the model does not fit this SRAM): nothing to check
    assert violations(chip, plan, trace) == []


@settings(max_examples=8, deadline=None, derandomize=True)
@given(case=experiments())
def test_the_same_input_gives_byte_identical_records(case: dict) -> None:
    try:
        _, _, first = _simulate(case)
    except MappingError:
        return
    _, _, second = _simulate(case)
    assert records_csv(first) == records_csv(second)
    assert first.end_time_s == second.end_time_s


class _TwiceTheBandwidth(FlowNetwork):
    """A planted bug: every channel drains its flows at twice its bandwidth."""

    def __init__(self, env, capacities_bytes_per_s, emit) -> None:  # type: ignore[no-untyped-def]
        super().__init__(env, [2 * c for c in capacities_bytes_per_s], emit)


def test_the_properties_catch_a_planted_bug() -> None:
    """The same checks fail on an engine whose flows are twice too fast: channels carry more
    than their bandwidth allows and the iteration beats the lower bound."""
    case = {
        "on_cluster": False,
        "mapping": {
            "pp": 4,
            "tp": 2,
            "dp": 1,
            "micro_batch_size": 1,
            "schedule": "1f1b",
            "recompute": "none",
            "placement": "snake",
            "p2p_overlap": True,
        },
        "batch": 4,
        "topology": "mesh",
        "sram_bytes": 64 * 2**10,  # operands in DRAM: flows on the shared DRAM ports
    }
    chip, plan, trace = _simulate(case)
    assert violations(chip, plan, trace) == []
    chip, plan, bad = _simulate(case, network=_TwiceTheBandwidth)
    found = violations(chip, plan, bad)
    assert any("carried" in v and "B/s" in v for v in found), found


def test_the_idle_property_catches_a_lazy_tile(monkeypatch) -> None:
    """A planted bug: tiles wait 0.1 ms before each forward step of micro-batch 1 although
    its inputs are there. Property 5 names the idle gaps."""
    original = Simulator._compute

    def lazy(self, step, tile, stage, mb, category, issued_at=0.0):  # type: ignore[no-untyped-def]
        if mb == 1 and category == "forward":
            yield self.env.timeout(1e-4)
        yield from original(self, step, tile, stage, mb, category, issued_at)

    case = {
        "on_cluster": False,
        "mapping": {
            "pp": 2,
            "tp": 2,
            "dp": 1,
            "micro_batch_size": 1,
            "schedule": "gpipe",
            "recompute": "none",
            "placement": "snake",
            "p2p_overlap": True,
        },
        "batch": 3,
        "topology": "mesh",
        "sram_bytes": 3 * 2**20,
    }
    assert violations(*_simulate(case)) == []
    monkeypatch.setattr(Simulator, "_compute", lazy)
    found = violations(*_simulate(case))
    assert any("idle 0.0001 s before forward" in v and "micro-batch 1" in v for v in found)
