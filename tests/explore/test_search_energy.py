"""``palmsim search --objective energy|cost``: the bounds are true lower bounds and branch and
bound finds the brute-force best by energy and by dollars per token."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from palmsim.api import simulate, summarize_result
from palmsim.cli import main
from palmsim.config.specs import CostSpec, EnergySpec
from palmsim.errors import ConfigError, MappingError
from palmsim.explore.search import (
    SearchSpace,
    enumerate_mappings,
    objective_bound,
    objective_value,
    search,
)
from tests.conftest import experiment, gpt_model, wafer_spec

REPO = Path(__file__).resolve().parents[2]
PJ = 1e-12

ENERGY = EnergySpec(
    energy_j_per_flop=(("fp16", 0.1 * PJ),),
    sram_j_per_byte=0.3 * PJ,
    noc_hop_j_per_byte=5 * PJ,
    chip_to_chip_j_per_byte=4 * PJ,
    nic_j_per_byte=0.0,
    dram_j_per_byte=160 * PJ,
    static_per_tile_w=1.0,
    static_per_chip_w=2.0,
    tdp_per_tile_w=3.0,
)
COST = CostSpec(
    tile_area_m2=25e-6,
    die_area_m2=100e-6,
    defect_density_per_m2=1e3,
    yield_model="murphy",
    wafer_price_usd=1e4,
    lifetime_s=1e3,
    energy_price_usd_per_j=1e-3,
)


def _small(**sections):
    hw = wafer_spec(dies=(1, 2), tiles=(2, 2), dram_placement="per_tile")  # 8 tiles
    hw = dataclasses.replace(hw, **sections)
    model = gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128)
    return experiment(hw, model, seq=128, batch=8)


@pytest.mark.parametrize("objective", ["energy", "cost"])
def test_search_finds_the_brute_force_best_by_energy_and_cost(objective: str) -> None:
    base = _small(energy=ENERGY, cost=COST)
    space = SearchSpace(schedule=("1f1b",), placement=("snake",))
    values = {}
    for mapping in enumerate_mappings(base, 8, space):
        exp = dataclasses.replace(base, mapping=mapping)
        try:
            summary = summarize_result(simulate(exp))
        except MappingError:
            continue
        values[mapping] = objective_value(objective, summary)
    assert len(values) >= 10
    result = search(base, objective=objective, top=3, space=space, jobs=1)
    best = sorted(values.values())[:3]
    assert [objective_value(objective, c.summary) for c in result.best] == best
    assert result.count("simulated") + result.count("pruned") == len(values)
    assert result.proven


def test_energy_and_cost_bounds_never_exceed_the_simulated_values() -> None:
    base = _small(energy=ENERGY, cost=COST)
    result = search(base, objective="energy", top=100, space=SearchSpace(schedule=("1f1b",)))
    simulated = [c for c in result.candidates if c.status == "simulated"]
    assert simulated
    for c in simulated:
        tokens = c.summary["throughput_tokens_per_s"] * c.summary["iteration_time_s"]
        exp = dataclasses.replace(base, mapping=c.mapping)
        for objective in ("energy", "cost"):
            bound = objective_bound(objective, exp, c.lower_bound_s, round(tokens))
            assert 0 < bound <= objective_value(objective, c.summary) * (1 + 1e-12)


def test_energy_objective_needs_an_energy_section() -> None:
    with pytest.raises(ConfigError, match="energy"):
        search(_small(), objective="energy")
    with pytest.raises(ConfigError, match="cost"):
        search(_small(energy=ENERGY), objective="cost")


def test_search_cli_energy_objective_writes_the_energy_pareto(tmp_path, capsys) -> None:
    args = [
        "search",
        "--hw",
        str(REPO / "hw_configs" / "dgx-h100.yaml"),
        "--workload",
        str(REPO / "workloads" / "llama2-7b.yaml"),
        "--set",
        "model.num_hidden_layers=2",
        "--set",
        "training.global_batch_size=32",
        "--set",
        "hw.system.chips=[1, 8]",
        "--schedule",
        "1f1b",
        "--placement",
        "snake",
        "--objective",
        "energy",
        "--top",
        "2",
        "--jobs",
        "1",
        "--out",
        str(tmp_path),
        "-q",
    ]
    os.chdir(REPO)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "objective: energy" in out and "J/token" in out
    assert (tmp_path / "pareto_energy.png").read_bytes()[:4] == b"\x89PNG"
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert "energy_per_token_j" in header and "cost_per_token_usd" in header
