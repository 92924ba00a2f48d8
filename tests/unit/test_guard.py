"""The resource guard (palmsim/guard.py) and the tile check of chip elaboration (issue 18)."""

from __future__ import annotations

import dataclasses

import pytest

from palmsim import guard
from palmsim.api import load_experiment, simulate
from palmsim.config.specs import RunSpec, WaferSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware import chip as chip_module
from palmsim.hardware.chip import CHIP_BYTES_PER_TILE, TILE_EVENTS, Chip
from tests.conftest import experiment, gpt_model, wafer_spec


def test_global_batch_of_1e12_is_refused_before_mapping() -> None:
    """The issue's second hang: 31.25e9 micro-batches of 32 over 40 layers and 16 TP ranks
    need at least 2 * 31.25e9 * 40 * 16 = 4e13 events (one per layer, pass and TP rank)."""
    exp = load_experiment(overrides=["training.global_batch_size=1000000000000"])
    assert guard.spec_estimate(exp).events >= 2 * 31.25e9 * 40 * 16
    with pytest.raises(MappingError, match=r"training\.global_batch_size=1000000000000.*4e\+13"):
        simulate(exp)


def test_wafer_of_8_million_tiles_is_refused_before_any_graph(monkeypatch) -> None:
    """The issue's first hang: system.chips [5, 100000] of 4x4 cores = 8e6 tiles. The loader
    refuses it (500000 chips: too many tiles even at one region per chip); a spec built past
    the loader is refused by Chip.from_spec, whose default budget allows 8 GiB / 8700 B =
    987348 tiles, before any topology builder runs."""
    with pytest.raises(
        ConfigError, match=r"tx8-wafer\.yaml\): system\.chips: got \[5, 100000\]; .*500000"
    ):
        load_experiment(overrides=["hw.system.chips=[5, 100000]"])
    spec = load_experiment().hardware
    assert spec.wafer is not None
    huge = dataclasses.replace(spec, wafer=dataclasses.replace(spec.wafer, die_cols=100000))
    monkeypatch.setattr(chip_module, "TOPOLOGIES", None)  # any graph building would fail
    with pytest.raises(ConfigError, match=r"at most 987348 tiles \(it has 8000000"):
        Chip.from_spec(huge)
    assert chip_module.default_max_tiles() == int(8 * 2**30 // CHIP_BYTES_PER_TILE)


def test_tile_limit_follows_the_run_budgets() -> None:
    """max_tiles = min(max_memory / CHIP_BYTES_PER_TILE, max_events / TILE_EVENTS)."""
    assert chip_module.max_tiles(2**30, 10**9) == 2**30 // CHIP_BYTES_PER_TILE
    assert chip_module.max_tiles(2**40, 1000) == 1000 // TILE_EVENTS
    hw = wafer_spec(dies=(2, 2), tiles=(4, 4))  # 64 tiles
    Chip.from_spec(hw, max_tiles=64)
    with pytest.raises(ConfigError, match="at most 63 tiles"):
        Chip.from_spec(hw, max_tiles=63)


def _tiny(**run: object):
    hw = wafer_spec(dies=(1, 1), tiles=(2, 2), dram_placement="per_tile")
    exp = experiment(
        hw,
        gpt_model(layers=2, hidden=64, heads=4, vocab=128, seq=32),
        seq=32,
        batch=4,
        pp=2,
        tp=2,
        dp=1,
        micro_batch_size=1,
    )
    return dataclasses.replace(exp, run=RunSpec(**run))  # type: ignore[arg-type]


def test_spec_lower_bound_never_exceeds_the_events_simulated() -> None:
    """2 * m * L * t = 2 * 4 * 2 * 2 = 32 compute steps at least (plus 4 tiles x 20)."""
    exp = _tiny()
    bound = guard.spec_estimate(exp)
    assert bound.events == 2 * 4 * 2 * 2 + 4 * TILE_EVENTS
    trace = simulate(exp).trace
    assert bound.records <= len(trace.intervals)
    assert bound.events - 4 * TILE_EVENTS <= trace.num_events


def test_budgets_refuse_with_the_estimate() -> None:
    exp = _tiny(max_events=100)  # the lower bound is 112
    with pytest.raises(MappingError, match=r"needs at least 112 SimPy events.*max_events=100"):
        simulate(exp)
    exp = _tiny(max_memory_bytes=1e4)
    with pytest.raises(ConfigError, match="at most 1 tiles"):  # 4 tiles x 8700 B > 1e4 B
        simulate(exp)
    exp = _tiny(max_memory_bytes=4 * CHIP_BYTES_PER_TILE + 100.0)
    with pytest.raises(MappingError, match=r"GiB of records, above run\.max_memory"):
        simulate(exp)


def test_run_budgets_are_set_keys() -> None:
    exp = load_experiment(overrides=["run.max_events=5", "run.max_memory=2 GiB"])
    assert exp.run.max_events == 5
    assert exp.run.max_memory_bytes == 2 * 2**30
    with pytest.raises(ConfigError, match=r"--set run\.max_memory=12: run\.max_memory: got 12"):
        load_experiment(overrides=["run.max_memory=12"])
    assert WaferSpec  # the layout type the tile check reads


def test_a_tampered_run_folder_is_rebuilt_under_its_own_budgets(tmp_path) -> None:
    """Fuzzing found plot/report rebuilding a chip from an edited resolved_config.yaml
    without any budget; the folder's own run budgets now apply (RunDirError, exit 5)."""
    import yaml

    from palmsim.api import load_result, run_experiment
    from palmsim.errors import RunDirError

    small = [
        "model.num_hidden_layers=2",
        "training.global_batch_size=4",
        "mapping.pp=2",
        "mapping.tp=2",
        "mapping.micro_batch_size=1",
        "run.max_events=30000",
    ]
    run_experiment(load_experiment(overrides=small), tmp_path, make_plots=False)
    assert load_result(tmp_path).plan.num_stages == 2
    config_path = tmp_path / "resolved_config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["run"]["max_events"] = 1000  # 1000 / 20 = 50 tiles, fewer than the 320
    config_path.write_text(yaml.safe_dump(config))
    with pytest.raises(RunDirError, match=r"system\.chips: got \[5, 4\]; expected a chip of"):
        load_result(tmp_path)


def test_absurd_virtual_stages_are_refused_before_any_schedule(monkeypatch) -> None:
    """Fuzz (mapping.virtual_stages = 1e9, 2026-12-04): interleaved 1F1B over 1e9 chunks
    built m·v-step schedules until memory ran out. 2 stages x 1e9 chunks need 2e9 layers;
    the 4-layer model has 4, so it is refused before any schedule is built."""
    from palmsim.mapping import mapper

    monkeypatch.setattr(mapper, "SCHEDULES", None)  # building a schedule would fail
    exp = experiment(wafer_spec(), pp=2, tp=1, dp=1, micro_batch_size=1, virtual_stages=10**9)
    with pytest.raises(
        MappingError, match=r"virtual_stages=1000000000: .*2000000000 model chunks.* 4 layers"
    ):
        simulate(exp)


def test_plan_estimate_counts_the_records_of_a_gpu_run_with_collectives() -> None:
    """The records the engine keeps on GPUs (private HBM ports, TP rings, the CP all-gathers,
    DP rings): every DRAM read and write is a flow record, timed in closed form or not, and
    every collective flow is one. Without the DRAM records the estimate held half of them
    (12,288 of 24,544 here; fewer still without the rings' flows), and a 1024-GPU run passed
    its budget at half its memory. The
    estimate counts the dominant terms, so it may miss a few: within 20 %."""
    exp = load_experiment(
        "hw_configs/dgx-h100.yaml",
        "workloads/llama2-7b.yaml",
        overrides=["training.global_batch_size=16", "model.num_hidden_layers=4"],
        mapping_flags={"tp": 4, "pp": 1, "dp": 4, "cp": 2, "placement": "stage_major"},
    )
    result = simulate(exp)
    trace = result.trace
    kept = len(trace.intervals) + len(trace.flows) + len(trace.memory)
    assert any(f.category == "dram" for f in trace.flows)  # private ports leave records too
    estimate = guard.plan_estimate(result.plan, result.chip)
    assert estimate.records == pytest.approx(kept, rel=0.2)


def test_a_prompt_in_ten_million_chunks_is_refused_before_mapping() -> None:
    """inference.prefill_chunk_tokens = 1 on a 10,000,000-token prompt: one prefill pass per
    token, so with output_len 2 a stage runs 10,000,001 passes over the model's 32 layers;
    the lower bound (an event per layer and pass) passes the default run.max_events, 1.44e8,
    so the run is refused before any pass is lowered, naming the chunks."""
    overrides = [
        "inference.prompt_len=10000000",
        "inference.output_len=2",
        "inference.prefill_chunk_tokens=1",
        "inference.batch=1",
        "model.max_position_embeddings=10000008",
        "workload.mode=inference",
    ]
    exp = load_experiment(workload="workloads/llama2-7b.yaml", overrides=overrides)
    assert exp.workload.mode == "inference"
    assert exp.workload.model.num_hidden_layers == 32
    assert guard.spec_estimate(exp).events >= 10_000_001 * 32
    with pytest.raises(MappingError, match=r"9999999 further prefill chunks"):
        simulate(exp)


def test_a_trillion_experts_are_refused_before_their_routing_table() -> None:
    """Mixtral with 10^12 experts over EP 8: one layer's routing table alone is
    8 x 10^12 float64 loads = 6.4e13 B, far above the 8 GiB budget, so the guard refuses it
    before the mapper allocates the table."""
    exp = load_experiment(
        "hw_configs/dgx-h100.yaml",
        "workloads/mixtral-8x7b.yaml",
        overrides=["model.num_experts=1000000000000"],
        mapping_flags={"ep": 8, "tp": 1, "dp": 8},
    )
    assert guard.spec_estimate(exp).memory_bytes >= 8 * 10**12 * 8
    with pytest.raises(MappingError, match=r"model\.num_experts=1000000000000 \(a routing table"):
        simulate(exp)


def test_a_serving_run_is_refused_when_its_projected_iterations_pass_the_budget() -> None:
    """200 default requests run about 6,000 iterations: at the 1,024th the projection is
    iterations x 200 / arrived, far above a budget of 1,000 events (400 iterations at 2.5
    events each), so the run stops there, naming the requests."""
    from palmsim.api import serve

    with pytest.raises(MappingError, match=r"serving\.traffic\.num_requests=200 \(1024 iter"):
        serve(overrides=["serving.traffic.num_requests=200", "run.max_events=1000"])


def test_serving_budget_refuses_requests_that_alone_pass_the_memory() -> None:
    """10^7 requests hold 474 B each until the run ends: 4.7 GB, above a 1 GiB budget."""
    run = RunSpec(max_memory_bytes=2**30)
    with pytest.raises(MappingError, match=r"num_requests=10000000 needs at least 4\.41 GiB"):
        guard.ServingBudget.of(10_000_000, run)
    # the default budgets: 1.44e8 events / 2.5 = 5.76e7 iterations, but their records,
    # (8 GiB - 1000 x 474 B) / 200 B = 4.29e7 iterations, pass the memory first
    budget = guard.ServingBudget.of(1000, RunSpec())
    assert budget.max_iterations == pytest.approx((8 * 2**30 - 474_000) / 200)
    budget.check(1024, 1000, RunSpec())  # 1,024 iterations for all 1,000: within it


def test_a_pipelined_serving_budget_counts_every_layer_and_checks_every_iteration() -> None:
    """Two stages of 2,000 layers: an iteration is simulated whole, at least 2 x 2,000 + 2 =
    4,002 events, so 1.44e8 events hold 35,982 iterations, and the projection is made at
    every iteration (1,024 x 2.5 / 4,002 rounds to 0, so 1), not every 1,024th."""
    run = RunSpec()
    budget = guard.ServingBudget.of(1000, run, events_per_iteration=4002)
    assert budget.max_iterations == pytest.approx(1.44e8 / 4002)
    budget.check(35_000, 1000, run)
    with pytest.raises(MappingError, match=r"35983 iterations for the first 1000"):
        budget.check(35_983, 1000, run)


def test_a_run_past_the_time_a_double_resolves_is_an_error_not_nonsense() -> None:
    """A link degraded to 1e-300 of its bandwidth: its flows take ~1e290 s, where a double's
    spacing (math.ulp) dwarfs every other step, which came out as empty intervals (an
    IndexError in the report, NaN in timeline.csv). The run is a SimulationError naming
    the likely cause."""
    from palmsim.errors import SimulationError

    exp = load_experiment(
        overrides=[
            "model.num_hidden_layers=2",
            "training.global_batch_size=64",
            "mapping.pp=2",
            "hw.defects.degraded_links=[[0, 1, 1e-300]]",
        ]
    )
    with pytest.raises(SimulationError, match=r"past 1e\+09 s .* near zero"):
        simulate(exp)
