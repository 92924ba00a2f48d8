"""Issue acceptance: T-18B on the 320-tile TX8 wafer, PP=20, TP=16, 32 micro-batches, 1F1B.

Every micro-batch runs on every tile, with link and DRAM contention, no representatives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from palmsim.api import load_experiment, simulate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def w1():
    exp = load_experiment(
        str(REPO / "hw_configs" / "tx8-wafer.yaml"),
        str(REPO / "workloads" / "t-18b.yaml"),
        mapping_flags={"pp": 20, "tp": 16, "micro_batch_size": 32, "schedule": "1f1b"},
    )
    return simulate(exp)


def test_every_microbatch_runs_forward_and_backward_on_all_320_tiles(w1) -> None:
    plan, trace = w1.plan, w1.trace
    assert plan.num_microbatches == 1024 // 32 == 32
    assert len(plan.used_tiles) == 320
    for category in ("forward", "recompute", "backward"):
        ran = {(r.tile, r.microbatch) for r in trace.intervals if r.category == category}
        assert ran == {(t, mb) for t in range(320) for mb in range(32)}, category


def test_traffic_crosses_die_boundaries_and_dram_ports(w1) -> None:
    kinds = {w1.chip.channels[c].kind for f in w1.trace.flows for c in f.channels}
    assert {"intra_die", "inter_die", "dram"} <= kinds
    categories = {f.category for f in w1.trace.flows}
    assert {"p2p", "tp_allreduce", "tp_allgather", "dram"} <= categories


def test_1f1b_keeps_at_most_p_minus_s_microbatches_in_flight(w1) -> None:
    stage_of = w1.plan.stage_of_tile()
    per_mb = [p.activation_bytes_per_microbatch for p in w1.plan.programs]
    for tile in (0, 150, 319):
        s = stage_of[tile]
        peak = max(r.activation_bytes for r in w1.trace.memory if r.tile == tile)
        assert peak == pytest.approx(min(20 - s, 32) * per_mb[s], rel=1e-12)
