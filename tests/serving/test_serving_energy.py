"""Energy and cost of a serving run: its iterations' work at the hardware's energies, and the
static power and price of the tiles its replicas occupy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from palmsim.api import serve
from palmsim.cli import main
from palmsim.config.loader import load_hardware
from palmsim.config.specs import TrafficSpec
from palmsim.engine.records import Work
from palmsim.engine.serving import ServingSimulator
from palmsim.engine.simulator import Simulator
from palmsim.hardware.chip import Chip
from palmsim.mapping.serving import batch_shape, map_serving
from palmsim.report.energy import capital_usd
from palmsim.serving.traffic import Request
from tests.conftest import cluster_spec, wafer_spec
from tests.serving.helpers import model, serving_spec

REPO = Path(__file__).resolve().parents[2]
SMALL = ["serving.traffic.num_requests=6", "serving.traffic.rate_per_s=4"]
SHAPES = [
    [(300, 0, True)],
    [(1, 700, True)] * 5 + [(120, 40, False), (7, 3, True)],
]


def _plan(hw, tp: int, prefill_replicas: int = 0):
    spec = serving_spec(TrafficSpec("poisson"))
    spec = dataclasses.replace(
        spec, tp=tp, replicas=2, dtype="fp16", prefill_replicas=prefill_replicas
    )
    chip = Chip.from_spec(hw)
    return chip, map_serving(spec, hw, model(layers=3, hidden=256, heads=4), chip)


def _close(a: Work, b: Work) -> None:
    assert a.flop == pytest.approx(b.flop, rel=1e-12)
    assert a.operand_bytes == pytest.approx(b.operand_bytes, rel=1e-12)
    assert a.dram_flow_bytes == pytest.approx(b.dram_flow_bytes, rel=1e-12)
    assert a.channel_bytes.keys() == b.channel_bytes.keys()
    for kind, nbytes in a.channel_bytes.items():
        assert nbytes == pytest.approx(b.channel_bytes[kind], rel=1e-12)


@pytest.mark.parametrize("entries", SHAPES, ids=["prefill", "mixed"])
def test_a_closed_form_iterations_work_is_what_simulating_its_segments_records(entries):
    """A one-GPU iteration timed with no Simulator keeps the work its segments' records would
    hold: their FLOP, operand bytes and DRAM bytes, over the HBM port's one channel."""
    chip, plan = _plan(cluster_spec(nodes=1, gpus=4), tp=1)
    shape = batch_shape(entries)
    sim = ServingSimulator(chip, plan, ())
    _, closed = sim._iteration(1, shape)
    assert sim._num_closed_form == 1
    kinds = [c.kind for c in chip.channels]
    simulated = Work()
    for _, steps, repeats in plan.segments(shape, 0):
        trace = Simulator(chip, plan.segment_plan(1, steps)).run()
        simulated = simulated.plus(Work.of_trace(trace, kinds), repeats)
    assert closed.dram_flow_bytes > 0 and list(closed.channel_bytes) == ["dram"]
    _close(closed, simulated)


@pytest.mark.parametrize(
    ("hw", "tp"),
    [(wafer_spec(dies=(1, 2), tiles=(4, 4)), 4), (cluster_spec(nodes=1, gpus=4), 2)],
    ids=["wafer-die-edge-dram", "gpu-nvlink"],
)
def test_a_segmented_iterations_work_is_the_whole_iterations_records(hw, tp):
    """Segments simulated once and counted per repeat hold the work of the whole iteration
    simulated at once: its compute, DRAM flows and every link crossed."""
    chip, plan = _plan(hw, tp)
    shape = batch_shape(SHAPES[1])
    _, segmented = ServingSimulator(chip, plan, ())._iteration(1, shape)
    whole = Simulator(chip, plan.iteration_plan(1, shape)).run()
    kinds = [c.kind for c in chip.channels]
    assert len(segmented.channel_bytes) >= 2  # DRAM and links
    _close(segmented, Work.of_trace(whole, kinds))


def test_one_h100_serving_counts_its_gpu_and_an_eighth_of_its_node():
    """Llama-3-8B on GPU 0 of dgx-h100.yaml (4 nodes of 8): static power 519.2 W for the GPU
    and 4600 W / 8 for its share of the node over the run; TDP 700 W + 575 W; the energy
    per output token is E over the finished requests' output tokens; the capital is 1/32 of
    the machine's, written off over 35,064 h, the energy at 0.1 USD/kWh."""
    result = serve(None, None, None, overrides=SMALL)
    energy, cost = result.summary["energy"], result.summary["cost"]
    end_s = result.trace.end_time_s
    parts = energy["energy_breakdown_j"]
    assert energy["tiles_counted"] == 1
    assert parts["static_tiles"] == pytest.approx(519.2 * end_s, rel=1e-12)
    assert parts["static_chips"] == pytest.approx(4600.0 / 8 * end_s, rel=1e-12)
    assert energy["tdp_w"] == pytest.approx(700.0 + 575.0, rel=1e-12)
    total = sum(parts.values())
    assert energy["energy_j"] == pytest.approx(total, rel=1e-12)
    assert parts["compute"] > 0 and parts["dram"] > 0 and parts["chip_to_chip"] == 0.0
    tokens = sum(r.output_tokens for r in result.trace.requests)
    assert energy["energy_per_output_token_j"] == pytest.approx(total / tokens, rel=1e-12)
    assert energy["average_power_w"] == pytest.approx(total / end_s, rel=1e-12)
    hw = load_hardware(str(REPO / "hw_configs/dgx-h100.yaml"))
    capital = capital_usd(hw) / 32
    assert cost["capital_usd"] == pytest.approx(capital, rel=1e-12)
    expected = capital * end_s / (35064 * 3600) + total * 0.1 / 3.6e6
    assert cost["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert cost["cost_per_million_output_tokens_usd"] == pytest.approx(
        1e6 * expected / tokens, rel=1e-12
    )


def test_a_dram_bound_decode_costs_its_weights_bytes_at_the_dram_energy():
    """One request of one output token after a one-token prompt on one H100: its single
    iteration reads every weight once but the embedding table, of which it looks up one row
    (Llama-3-8B: 128,256 x 4,096 bf16, untied from the LM head), so the DRAM energy is those
    bytes x 31.2 pJ/B, and within 1 % above it (the KV cache and activations)."""
    overrides = [
        "serving.traffic.num_requests=1",
        "serving.traffic.lengths=fixed",
        "serving.traffic.prompt_tokens=1",
        "serving.traffic.output_tokens=1",
    ]
    result = serve(None, None, None, overrides=overrides)
    read = result.plan.stages[0].breakdown.weights - 128256 * 4096 * 2
    dram_j = result.summary["energy"]["energy_breakdown_j"]["dram"]
    assert read * 31.2e-12 <= dram_j <= 1.01 * read * 31.2e-12


def test_hand_offs_count_their_bytes_on_the_nvlink_hops():
    """Disaggregated prefill: each request's KV cache crosses GPU -> NVSwitch -> GPU, two
    nvlink channels; a run's nvlink bytes are at least twice the caches moved."""
    hw = cluster_spec(nodes=1, gpus=4)
    chip, plan = _plan(hw, tp=1, prefill_replicas=1)
    requests = tuple(Request(i, 0.01 * i, 64, 4) for i in range(3))
    trace = ServingSimulator(chip, plan, requests).run()
    moved = 3 * plan.kv_bytes_held(0, 64)
    assert trace.work.channel_bytes["nvlink"] == pytest.approx(2 * moved, rel=1e-12)


def test_palmsim_serve_prints_and_writes_energy_and_cost(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["serve", "--out", str(out), "--no-plots", *[a for s in SMALL for a in ("--set", s)]]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "J per output token" in printed and "per million output tokens" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["energy"]["tiles_counted"] == 1 and "cost_usd" in summary["cost"]


def test_hardware_without_energy_has_no_energy_section():
    """An n150 has an energy: section, no cost: one; a config with neither has none."""
    result = serve(
        "hw_configs/wormhole-n150.yaml", None, None, overrides=[*SMALL, "serving.weight_dtype=bfp8"]
    )
    assert "energy" in result.summary and "cost" not in result.summary
