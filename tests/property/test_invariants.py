"""Invariants over seeded random small experiments (STYLE 8: property tests).

Cases come from a seeded numpy Generator, so they are the same on every run.
"""

from __future__ import annotations

import numpy as np
import pytest

from palmsim.engine.simulator import Simulator
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import ComputeStep
from palmsim.report.metrics import channel_bytes, pipeline_bubble_fraction, tile_utilization
from tests.conftest import cluster_spec, experiment, gpt_model, wafer_spec

EPS = 1e-9


def _cases(n: int) -> list[dict]:
    rng = np.random.default_rng(20261122)
    cases = []
    while len(cases) < n:
        on_cluster = bool(rng.integers(2))
        pp = int(rng.choice([1, 2, 4]))
        tp = int(rng.choice([1, 2, 4]))
        dp = int(rng.choice([1, 2]))
        mbs = int(rng.choice([1, 2]))
        m = int(rng.choice([1, 3, 6]))
        if pp * tp * dp > 16:  # both test machines have 16 tiles (wafer) or GPUs (cluster)
            continue
        cases.append(
            {
                "on_cluster": on_cluster,
                "pp": pp,
                "tp": tp,
                "dp": dp,
                "micro_batch_size": mbs,
                "batch": m * mbs * dp,
                "schedule": str(rng.choice(["gpipe", "1f1b"])),
                "recompute": str(rng.choice(["none", "selective", "full"])),
                "placement": str(rng.choice(["snake", "row_major"])),
                "topology": str(rng.choice(["mesh", "torus"])),
                "sram_bytes": float(rng.choice([64 * 2**10, 3 * 2**20, 1e12])),
            }
        )
    return cases


CASES = _cases(12)


def _simulate(case: dict):
    if case["on_cluster"]:
        hw = cluster_spec(nodes=2, gpus=8)
    else:
        hw = wafer_spec(
            dies=(2, 2), tiles=(4, 4), topology=case["topology"], sram_bytes=case["sram_bytes"]
        )
    model = gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128)
    mapping = {
        k: case[k]
        for k in ("pp", "tp", "dp", "micro_batch_size", "schedule", "recompute", "placement")
    }
    exp = experiment(hw, model, seq=128, batch=case["batch"], **mapping)
    chip = Chip.from_spec(hw)
    plan = map_workload(exp, chip)
    return chip, plan, Simulator(chip, plan, exp.run).run()


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_invariants(case: dict) -> None:
    try:
        chip, plan, trace = _simulate(case)
    except MappingError:
        pytest.skip("infeasible mapping for this random case")
    makespan = trace.end_time_s
    assert makespan > 0

    # Utilisation of every tile and every channel lies in [0, 1].
    for value in tile_utilization(trace.intervals, plan.simulated_tiles, makespan).values():
        assert 0.0 <= value <= 1.0 + EPS
    carried = channel_bytes(trace.flows, len(chip.channels))
    bandwidth = np.array([c.bandwidth_bytes_per_s for c in chip.channels])
    assert np.all(carried / (bandwidth * makespan) <= 1.0 + EPS)
    assert 0.0 <= pipeline_bubble_fraction(trace, plan) <= 1.0

    # Lower bounds: no tile computes faster than its roofline compute time, and no channel
    # moves its bytes faster than its bandwidth.
    for program in plan.programs:
        steps = [
            s
            for s in program.forward + program.backward + program.recompute
            if isinstance(s, ComputeStep)
        ]
        per_mb = sum(s.compute_time_s for s in steps)
        assert makespan >= plan.num_microbatches * per_mb + program.optimizer.compute_time_s - EPS
    assert makespan >= float(np.max(carried / bandwidth)) - EPS

    # The iteration ends with its last record (no clock advance past the work).
    assert makespan == max(r.end_s for r in trace.intervals)

    # Every interval and flow lies inside the run; every micro-batch ran once per tile.
    assert all(0.0 <= r.start_s <= r.end_s <= makespan + EPS for r in trace.intervals)
    assert all(0.0 <= f.start_s <= f.end_s <= makespan + EPS for f in trace.flows)
    forwards = [(r.tile, r.microbatch, r.label) for r in trace.intervals if r.category == "forward"]
    assert len(forwards) == len(set(forwards))
    assert {(t, mb) for t, mb, _ in forwards} == {
        (t, mb) for t in plan.simulated_tiles for mb in range(plan.num_microbatches)
    }

    # Memory: each tile ends the iteration holding no activations.
    last = {}
    for rec in trace.memory:
        last[rec.tile] = rec.activation_bytes
    assert all(v == pytest.approx(0.0, abs=1e-3) for v in last.values())


@pytest.mark.parametrize("case", CASES[:3], ids=["0", "1", "2"])
def test_runs_are_reproducible(case: dict) -> None:
    try:
        _, _, first = _simulate(case)
    except MappingError:
        pytest.skip("infeasible mapping for this random case")
    _, _, second = _simulate(case)
    assert first.intervals == second.intervals
    assert first.flows == second.flows
    assert first.memory == second.memory
