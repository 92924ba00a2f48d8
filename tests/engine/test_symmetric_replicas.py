"""One symmetric data-parallel replica, and of its stages TP rank 0, reproduce the full run
exactly.

The reduced run (``run.symmetric_replicas``, the default) and the full run of the same
experiment must give the same iteration time, the simulated tiles' records unchanged
(replica 0's, with context parallelism the first CP group's; of each stage only TP rank
0), and the same totals once those are multiplied by the tiles they stand
for. This holds only if the DP ring flows
keep their contention (palmsim.mapping.symmetry), e.g. with DP overlap on, where gradient
buckets share the NICs with the pipeline sends.
"""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.api import load_experiment, simulate
from palmsim.engine.simulator import Simulator
from palmsim.report.metrics import summarize
from palmsim.report.timeline import utilization_timeline

T18B = "workloads/t-18b.yaml"
CASES = {
    "pp4-tp8-dp4-interleaved": (
        "hw_configs/dgx-a100-superpod.yaml",
        {"pp": 4, "tp": 8, "dp": 4, "micro_batch_size": 1, "virtual_stages": 2},
        ["model.num_hidden_layers=8", "training.global_batch_size=32"],
    ),
    "pp2-tp4-dp4-zero3": (
        "hw_configs/dgx-a100-superpod.yaml",
        {"pp": 2, "tp": 4, "dp": 4, "micro_batch_size": 1, "zero": 3},
        ["model.num_hidden_layers=4", "training.global_batch_size=16"],
    ),
    "pp1-tp1-dp16-two-nodes": (
        "hw_configs/dgx-a100-superpod.yaml",
        {"pp": 1, "tp": 1, "dp": 16, "micro_batch_size": 1},
        ["model.num_hidden_layers=2", "training.global_batch_size=16"],
    ),
    "pp2-tp8-dp2-no-overlap-h100": (
        "hw_configs/dgx-h100.yaml",
        {
            "pp": 2,
            "tp": 8,
            "dp": 2,
            "micro_batch_size": 1,
            "dp_overlap": False,
            "p2p_overlap": False,
        },
        ["model.num_hidden_layers=4", "training.global_batch_size=16"],
    ),
}
# Context parallelism: blocks of cp replicas (one CP group) stand for the rest; the KV ring
# inside a node, then across two nodes (tp 8 x cp 2, as Llama 3.1 405B runs).
CP_CASES = {
    "pp2-tp4-cp2-dp2-h100": (
        "hw_configs/dgx-h100.yaml",
        {"pp": 2, "tp": 4, "cp": 2, "dp": 2, "micro_batch_size": 1},
        ["model.num_hidden_layers=4", "training.global_batch_size=16"],
    ),
    "pp1-tp8-cp2-dp2-two-node-ring": (
        "hw_configs/dgx-h100.yaml",
        {"pp": 1, "tp": 8, "cp": 2, "dp": 2, "micro_batch_size": 1, "dp_overlap": False},
        ["model.num_hidden_layers=2", "training.global_batch_size=8"],
    ),
}

# Expert parallelism: one replica stands for all. The EP all-to-all of 8 GPUs in one node:
# each GPU's NVLinks alike, every GPU sends to and receives from 7 others, so one GPU's own
# NVLinks carry the images of all. Folded experts (EP 16 over TP 2 x DP 16, expert_tp 1) on
# 4 nodes: each GPU of TP rank k sends over its NVLink to 7 GPUs of its node and over its
# NIC to 24 of other nodes, half of either of TP rank 0, and receives the same, so the two
# GPUs of replica 0 carry the images of every flow.
EP_CASES = {
    "mixtral-tp1-ep8-dp8-one-node": (
        "hw_configs/dgx-h100.yaml",
        {"pp": 1, "tp": 1, "dp": 8, "ep": 8, "micro_batch_size": 1},
        ["model.num_hidden_layers=2", "training.global_batch_size=16"],
    ),
    "qwen3-tp2-ep16-etp1-dp16-four-nodes": (
        "hw_configs/dgx-h100.yaml",
        {
            "pp": 1,
            "tp": 2,
            "dp": 16,
            "ep": 16,
            "expert_tp": 1,
            "micro_batch_size": 1,
            "sequence_parallel": True,
        },
        ["model.num_hidden_layers=2", "training.global_batch_size=32"],
    ),
}
WORKLOAD = {
    "mixtral-tp1-ep8-dp8-one-node": "workloads/mixtral-8x7b.yaml",
    "qwen3-tp2-ep16-etp1-dp16-four-nodes": "workloads/qwen3-30b-a3b.yaml",
}


def _run(hw: str, mapping: dict, overrides: list[str], symmetric: bool, workload: str = T18B):
    exp = load_experiment(
        hw,
        workload,
        overrides=[*overrides, f"run.symmetric_replicas={str(symmetric).lower()}"],
        mapping_flags=mapping,
    )
    result = simulate(exp)
    summary = summarize(
        result.trace, result.chip, result.plan, workload_name="w", hardware_name="h", version="v"
    )
    return result, summary


def _key(r):
    """An interval record's place in a run, for comparing two runs' records as sets."""
    return (r.tile, r.start_s, r.category, r.label, r.microbatch)


def _assert_simulated_records_equal(reduced, full) -> None:
    """The reduced run's intervals are the full run's on the tiles the reduced run simulates."""
    tiles = set(reduced.plan.simulated_tiles)
    assert sorted(reduced.trace.intervals, key=_key) == sorted(
        (r for r in full.trace.intervals if r.tile in tiles), key=_key
    )


@pytest.mark.parametrize("name", sorted(CASES) + sorted(CP_CASES) + sorted(EP_CASES))
def test_reduced_run_equals_full_run(name: str) -> None:
    hw, mapping, overrides = {**CASES, **CP_CASES, **EP_CASES}[name]
    workload = WORKLOAD.get(name, T18B)
    reduced, reduced_summary = _run(hw, mapping, overrides, symmetric=True, workload=workload)
    full, full_summary = _run(hw, mapping, overrides, symmetric=False, workload=workload)
    cp = mapping.get("cp", 1)
    assert full.plan.simulated_replicas == mapping["dp"] * cp
    # TP rank 0 of each stage of the first CP group (of replica 0 with experts)
    assert reduced.plan.simulated_replicas == (1 if name in EP_CASES else cp)
    assert reduced.plan.simulated_ranks == 1
    simulated = reduced.plan.simulated_replicas * mapping.get("pp", 1)
    assert len(reduced.plan.simulated_tiles) == simulated
    assert full.plan.simulated_ranks == mapping["tp"]
    assert reduced.trace.end_time_s == full.trace.end_time_s
    _assert_simulated_records_equal(reduced, full)
    replica0 = set(reduced.plan.simulated_tiles)
    assert [r for r in full.trace.memory if r.tile in replica0] == list(reduced.trace.memory)
    for k in ("hardware_flop_per_iteration", "communication_bytes_by_category"):
        assert reduced_summary[k] == pytest.approx(full_summary[k], rel=1e-12)
    for k in (
        "iteration_time_s",
        "mfu",
        "pipeline_bubble_fraction",
        "memory_peak_bytes_per_tile_max",
        "exposed_communication_s",
        "noc_link_utilization_max",
    ):
        assert reduced_summary[k] == pytest.approx(full_summary[k], rel=1e-12), k
    assert reduced_summary["num_tiles_used"] == full_summary["num_tiles_used"]
    bin_s = full.trace.end_time_s / 50
    timelines = [
        utilization_timeline(
            r.trace, r.chip, bin_s, tiles=r.plan.simulated_tiles, replication=r.plan.replication
        )
        for r in (reduced, full)
    ]
    for column, values in timelines[1].items():
        # utilisations in [0, 1]: a bin summed in another order differs by rounding only
        assert timelines[0][column] == pytest.approx(values, rel=1e-9, abs=1e-9), column


@pytest.mark.parametrize("name", sorted(CASES))
def test_closed_form_collectives_equal_simulated_flows(name: str) -> None:
    """Exclusive communicators are timed in closed form; simulating their flows instead must
    give the same run (their flows meet nothing, so each runs alone at its narrowest
    channel)."""
    hw, mapping, overrides = CASES[name]
    closed, _ = _run(hw, mapping, overrides, symmetric=True)
    assert any(c.exclusive for c in closed.plan.communicators)
    plan = dataclasses.replace(
        closed.plan,
        communicators=tuple(
            dataclasses.replace(c, exclusive=False) for c in closed.plan.communicators
        ),
    )
    flows = Simulator(closed.chip, plan).run()
    assert flows.end_time_s == pytest.approx(closed.trace.end_time_s, rel=1e-12)

    for a, b in zip(
        sorted(flows.intervals, key=_key), sorted(closed.trace.intervals, key=_key), strict=True
    ):
        assert _key(a)[:1] + _key(a)[2:] == _key(b)[:1] + _key(b)[2:]
        assert a.end_s == pytest.approx(b.end_s, rel=1e-12)


@pytest.mark.parametrize(
    ("mapping", "simulated"),
    [({"pp": 2, "tp": 4, "dp": 2, "micro_batch_size": 2}, 2), ({"pp": 1, "tp": 8, "dp": 1}, 1)],
)
def test_reduced_inference_equals_full_inference(mapping: dict, simulated: int) -> None:
    """Serving on an H100 node: TP rank 0 of each stage of replica 0 stands for the rest.
    TTFT, TPOT, the iteration and the KV cache's total equal the full run's."""
    overrides = [
        "workload.mode=inference",
        "model.num_hidden_layers=4",
        "inference.prompt_len=256",
        "inference.output_len=4",
        "inference.batch=4",
    ]
    runs = [
        _run("hw_configs/dgx-h100.yaml", mapping, overrides, symmetric, "workloads/llama2-7b.yaml")
        for symmetric in (True, False)
    ]
    (reduced, reduced_summary), (full, full_summary) = runs
    assert len(reduced.plan.simulated_tiles) == simulated
    assert len(full.plan.simulated_tiles) == mapping["pp"] * mapping["tp"] * mapping["dp"]
    assert reduced.trace.end_time_s == full.trace.end_time_s
    for key in ("ttft_s", "tpot_s", "throughput_tokens_per_s", "kv_cache_bytes_peak"):
        assert reduced_summary[key] == pytest.approx(full_summary[key], rel=1e-12), key
    _assert_simulated_records_equal(reduced, full)
