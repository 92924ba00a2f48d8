"""Energy and cost: per-event energies against closed forms, conservation, yield formulas.

Every expected number is derived by hand from the formulas of docs/metrics.md ("Energy and
cost"), Murphy (1964), Stapper (1973) and de Vries (2005); none is copied from a run.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from palmsim.api import simulate, summarize_result
from palmsim.config.loader import coarsen, load_hardware, spec_to_raw
from palmsim.config.specs import CostSpec, EnergySpec, HardwareSpec
from palmsim.engine.records import FlowRecord, IntervalRecord, RunTrace
from palmsim.errors import ConfigError
from palmsim.hardware.chip import CHANNEL_KINDS, Chip
from palmsim.hardware.cost import die_yield, gross_dies_per_wafer
from palmsim.report.energy import (
    _CHANNEL_COMPONENT,
    ENERGY_COMPONENTS,
    cost_summary,
    energy_summary,
)
from palmsim.units import parse_quantity
from tests.conftest import cluster_spec, experiment, wafer_spec

ROOT = Path(__file__).resolve().parents[2]

PJ = 1e-12


def _energy(**kw: float) -> EnergySpec:
    """An energy spec with every energy 0 unless given (J, J/B, W)."""
    values = {
        "energy_j_per_flop": (("fp16", 0.0),),
        "sram_j_per_byte": 0.0,
        "noc_hop_j_per_byte": 0.0,
        "chip_to_chip_j_per_byte": 0.0,
        "nic_j_per_byte": 0.0,
        "dram_j_per_byte": 0.0,
        "static_per_tile_w": 0.0,
        "static_per_chip_w": 0.0,
    }
    values.update(kw)
    return EnergySpec(**values)  # type: ignore[arg-type]


def _plan(tokens: int = 1000, samples: int = 10, replication: float = 1.0) -> SimpleNamespace:
    """What energy_summary reads of a plan."""
    return SimpleNamespace(
        tokens_per_iteration=tokens, samples_per_iteration=samples, replication=replication
    )


def _trace(intervals=(), flows=(), end_s: float = 1.0) -> RunTrace:
    return RunTrace(tuple(intervals), tuple(flows), (), end_s, 0, 0.0)


def _flow(channels: tuple[int, ...], size_bytes: float, category: str = "p2p") -> FlowRecord:
    return FlowRecord(0, category, 0, 1, channels, 0.0, 1.0, size_bytes, 0, 0)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "dimension", "expected"),
    [
        ("0.5 pJ/FLOP", "energy_per_flop", 0.5e-12),
        ("4 pJ/bit", "energy_per_byte", 32e-12),
        ("160 pJ/B", "energy_per_byte", 160e-12),
        ("700 W", "power", 700.0),
        ("10.2 kW", "power", 10200.0),
        ("1 kWh", "energy", 3.6e6),
        ("826 mm2", "area", 826e-6),
        ("1 cm^2", "area", 1e-4),
        ("0.1 /cm2", "areal_density", 1000.0),
        ("300 mm", "length", 0.3),
        ("9346 USD", "money", 9346.0),
        ("0.1 USD/kWh", "money_per_energy", 0.1 / 3.6e6),
        ("2 h", "time", 7200.0),
    ],
)
def test_energy_and_cost_units_parse_to_si(text: str, dimension: str, expected: float) -> None:
    assert parse_quantity(text, dimension) == pytest.approx(expected, rel=1e-12)


def test_a_power_is_not_an_energy() -> None:
    with pytest.raises(ConfigError, match=r"energy\.dram"):
        parse_quantity("5 W", "energy_per_byte", key="energy.dram")


# --------------------------------------------------------------------------- yield


@pytest.mark.parametrize(
    ("model", "area_defects", "expected"),
    [
        ("poisson", 1.0, math.exp(-1.0)),
        ("murphy", 1.0, (1 - math.exp(-1.0)) ** 2),  # ((1 - e^-1) / 1)^2 = 0.3996
        ("murphy", 0.5, ((1 - math.exp(-0.5)) / 0.5) ** 2),  # 0.6193
        ("negative_binomial", 1.0, 1 / 1.5**2),  # (1 + 1/2)^-2 = 0.4444
        ("negative_binomial", 0.5, 1 / 1.25**2),  # 0.64
        ("murphy", 0.0, 1.0),
        ("negative_binomial", 0.0, 1.0),
    ],
)
def test_yield_formulas_at_known_densities(model: str, area_defects: float, expected: float):
    """A 1 cm² die at D0 = area_defects per cm² (alpha = 2 for the negative binomial)."""
    area_m2 = 1e-4
    density = parse_quantity(f"{area_defects} /cm2", "areal_density")
    assert die_yield(area_m2, density, model, 2.0) == pytest.approx(expected, rel=1e-12)


def test_negative_binomial_tends_to_poisson_without_clustering() -> None:
    assert die_yield(1e-4, 1e4, "negative_binomial", 1e9) == pytest.approx(math.exp(-1), rel=1e-6)


def test_yields_order_poisson_below_murphy_below_clustered() -> None:
    """At the same A·D0, clustering leaves more dies clean (Stapper 1973)."""
    ys = [die_yield(1e-4, 1e4, m, 2.0) for m in ("poisson", "murphy", "negative_binomial")]
    assert ys == sorted(ys)


def test_gross_dies_per_wafer_de_vries() -> None:
    """300 mm wafer, 100 mm² dies: π·150²/100 - π·300/sqrt(200) = 706.86 - 66.64 -> 640."""
    assert gross_dies_per_wafer(100e-6, 0.3) == 640


# --------------------------------------------------------------------------- energy


def test_one_transfer_costs_bytes_times_hops_times_energy_per_hop() -> None:
    """Tile (0,0) to tile (0,3) of one die: XY routing crosses 3 NoC links."""
    chip = Chip.from_spec(wafer_spec(dies=(1, 1), tiles=(4, 4)))
    route = chip.route(0, 3)
    assert len(route.channels) == 3
    size_bytes = 1e6
    hw = dataclasses.replace(chip.spec, energy=_energy(noc_hop_j_per_byte=5 * PJ))
    out = energy_summary(
        _trace(flows=[_flow(route.channels, size_bytes)]), chip, _plan(), hw, "fp16"
    )
    assert out["energy_breakdown_j"]["noc"] == pytest.approx(size_bytes * 3 * 5 * PJ, rel=1e-12)
    assert out["energy_per_iteration_j"] == pytest.approx(size_bytes * 3 * 5 * PJ, rel=1e-12)


def test_a_die_crossing_costs_the_chip_to_chip_energy() -> None:
    """Tile 3 (die 0) to tile 4 (die 1) on a 1x2-die wafer of 1x4 tiles: one die-to-die link."""
    chip = Chip.from_spec(wafer_spec(dies=(1, 2), tiles=(1, 4), dram_placement="per_tile"))
    route = chip.route(3, 4)
    assert [chip.channels[c].kind for c in route.channels] == ["inter_die"]
    hw = dataclasses.replace(chip.spec, energy=_energy(chip_to_chip_j_per_byte=8 * 0.5 * PJ))
    out = energy_summary(_trace(flows=[_flow(route.channels, 1e9)]), chip, _plan(), hw, "fp16")
    assert out["energy_breakdown_j"]["chip_to_chip"] == pytest.approx(1e9 * 4 * PJ, rel=1e-12)
    assert out["energy_breakdown_j"]["noc"] == 0.0


def test_a_gpu_to_gpu_transfer_crosses_two_nvlinks_or_two_nics() -> None:
    chip = Chip.from_spec(cluster_spec(nodes=2, gpus=8))
    hw = dataclasses.replace(
        chip.spec, energy=_energy(chip_to_chip_j_per_byte=1 * PJ, nic_j_per_byte=10 * PJ)
    )
    same_node, other_node = chip.route(0, 1), chip.route(0, 8)
    flows = [_flow(same_node.channels, 1e6), _flow(other_node.channels, 1e6)]
    parts = energy_summary(_trace(flows=flows), chip, _plan(), hw, "fp16")["energy_breakdown_j"]
    assert parts["chip_to_chip"] == pytest.approx(2 * 1e6 * PJ, rel=1e-12)
    assert parts["nic"] == pytest.approx(2 * 1e6 * 10 * PJ, rel=1e-12)


def test_compute_sram_and_dram_energies() -> None:
    """A step of F FLOP and S SRAM + D DRAM bytes: F·e_flop, S·e_sram, D·(e_dram + hops·e_hop)."""
    chip = Chip.from_spec(wafer_spec(dies=(1, 1), tiles=(4, 4)))
    tile = 5
    port = chip.home_dram_port(tile)
    route = chip.dram_route(tile, port, write=False)
    hops = sum(chip.channels[c].kind == "intra_die" for c in route.channels)
    flop, sram_bytes, dram_bytes = 1e12, 3e6, 2e6
    interval = IntervalRecord(
        tile, "forward", 0.0, 1.0, 0, 0, "L0.mlp", flop, sram_bytes + dram_bytes
    )
    flow = FlowRecord(0, "dram", -1, tile, route.channels, 0.0, 1.0, dram_bytes, 0, 0)
    energy = _energy(
        energy_j_per_flop=(("fp16", 0.1 * PJ),),
        sram_j_per_byte=0.3 * PJ,
        dram_j_per_byte=160 * PJ,
        noc_hop_j_per_byte=5 * PJ,
    )
    hw = dataclasses.replace(chip.spec, energy=energy)
    parts = energy_summary(_trace([interval], [flow]), chip, _plan(), hw, "bf16")[
        "energy_breakdown_j"
    ]
    assert parts["compute"] == pytest.approx(flop * 0.1 * PJ, rel=1e-12)  # bf16 -> fp16's
    assert parts["sram"] == pytest.approx(sram_bytes * 0.3 * PJ, rel=1e-12)
    assert parts["dram"] == pytest.approx(dram_bytes * 160 * PJ, rel=1e-12)
    assert parts["noc"] == pytest.approx(dram_bytes * hops * 5 * PJ, rel=1e-12)


def test_static_power_counts_every_tile_and_die_for_the_whole_iteration() -> None:
    """2x2 dies of 4x4 tiles for 3 s: 64 tiles x 2 W + 4 dies x 10 W = 168 W, 504 J."""
    chip = Chip.from_spec(wafer_spec())
    hw = dataclasses.replace(
        chip.spec, energy=_energy(static_per_tile_w=2.0, static_per_chip_w=10.0, tdp_per_tile_w=4.0)
    )
    out = energy_summary(_trace(end_s=3.0), chip, _plan(tokens=504, samples=2), hw, "fp16")
    assert out["energy_breakdown_j"]["static_tiles"] == pytest.approx(64 * 2.0 * 3.0)
    assert out["energy_breakdown_j"]["static_chips"] == pytest.approx(4 * 10.0 * 3.0)
    assert out["energy_per_iteration_j"] == pytest.approx(504.0)
    assert out["energy_per_token_j"] == pytest.approx(1.0)
    assert out["energy_per_sample_j"] == pytest.approx(252.0)
    assert out["average_power_w"] == pytest.approx(168.0)
    assert out["tdp_w"] == pytest.approx(64 * 4.0 + 4 * 10.0)  # tiles at TDP + dies
    assert out["average_power_within_tdp_w"] == pytest.approx(168.0)
    assert out["average_power_fraction_of_tdp"] == pytest.approx(168.0 / 296.0)


def test_die_edge_dram_is_outside_the_tdp_and_hbm_inside() -> None:
    """1 J of DRAM traffic in 1 s: off the package for die-edge DRAM, in it for HBM."""
    for placement, within_w in (("die_edge", 0.0), ("per_tile", 1.0)):
        chip = Chip.from_spec(wafer_spec(dram_placement=placement))
        hw = dataclasses.replace(
            chip.spec, energy=_energy(dram_j_per_byte=1e-9, tdp_per_tile_w=1.0)
        )
        flow = _flow((chip.dram_channels()[0],), 1e9, category="dram")
        out = energy_summary(_trace(flows=[flow]), chip, _plan(), hw, "fp16")
        assert out["average_power_w"] == pytest.approx(1.0)
        assert out["average_power_within_tdp_w"] == pytest.approx(within_w)


def test_dynamic_energy_of_one_simulated_replica_stands_for_all() -> None:
    chip = Chip.from_spec(wafer_spec(dies=(1, 1), tiles=(1, 4), dram_placement="per_tile"))
    hw = dataclasses.replace(chip.spec, energy=_energy(noc_hop_j_per_byte=1 * PJ))
    flows = [_flow(chip.route(0, 1).channels, 1e6)]
    one = energy_summary(_trace(flows=flows), chip, _plan(replication=1.0), hw, "fp16")
    four = energy_summary(_trace(flows=flows), chip, _plan(replication=4.0), hw, "fp16")
    assert four["energy_per_iteration_j"] == pytest.approx(4 * one["energy_per_iteration_j"])


def _with_sections(hw: HardwareSpec) -> HardwareSpec:
    energy = _energy(
        energy_j_per_flop=(("fp16", 0.1 * PJ),),
        sram_j_per_byte=0.3 * PJ,
        noc_hop_j_per_byte=5 * PJ,
        chip_to_chip_j_per_byte=4 * PJ,
        dram_j_per_byte=160 * PJ,
        static_per_tile_w=15.0,
        static_per_chip_w=3.0,
        tdp_per_tile_w=17.0,
    )
    return dataclasses.replace(hw, energy=energy)


def test_simulated_run_breakdown_sums_to_total_and_counts_every_flop() -> None:
    """Energy conservation on a real run: the components add up to the total, and the compute
    energy is the run's hardware FLOP x the energy of one FLOP."""
    hw = _with_sections(wafer_spec())
    exp = experiment(hw, batch=8, pp=2, tp=2, dp=2, micro_batch_size=2)
    result = simulate(exp)
    summary = summarize_result(result)
    energy = summary["energy"]
    parts = energy["energy_breakdown_j"]
    assert list(parts) == list(ENERGY_COMPONENTS)
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) == pytest.approx(energy["energy_per_iteration_j"], rel=1e-12)
    assert parts["compute"] == pytest.approx(
        summary["hardware_flop_per_iteration"] * 0.1 * PJ, rel=1e-9
    )
    assert parts["noc"] > 0 and parts["dram"] > 0
    time_s = summary["iteration_time_s"]
    assert energy["average_power_w"] == pytest.approx(energy["energy_per_iteration_j"] / time_s)
    assert parts["static_tiles"] == pytest.approx(15.0 * 64 * time_s)


# --------------------------------------------------------------------------- cost


def _cost(**kw) -> CostSpec:
    values = {
        "tile_area_m2": 25e-6,
        "die_area_m2": 100e-6,
        "defect_density_per_m2": 1e3,  # 0.1 /cm2: A·D0 = 0.1 for a 1 cm² die
        "yield_model": "poisson",
        "wafer_price_usd": 6400.0,
        "lifetime_s": 1000.0,
        "energy_price_usd_per_j": 1e-6,
    }
    values.update(kw)
    return CostSpec(**values)  # type: ignore[arg-type]


def test_cost_per_token_is_written_off_price_plus_energy() -> None:
    """System price P over lifetime L for an iteration of T s, plus E J at price p."""
    hw = dataclasses.replace(wafer_spec(), cost=_cost(system_price_usd=1e6, training_tokens=1e9))
    energy = {"energy_per_iteration_j": 5e5}
    out = cost_summary(energy, hw, _plan(tokens=1000, samples=10), iteration_time_s=2.0)
    capital, power = 1e6 * 2.0 / 1000.0, 5e5 * 1e-6
    assert out["cost_breakdown_usd"] == pytest.approx({"capital": capital, "energy": power})
    assert out["cost_per_token_usd"] == pytest.approx((capital + power) / 1000)
    assert out["cost_per_sample_usd"] == pytest.approx((capital + power) / 10)
    assert out["cost_per_training_run_usd"] == pytest.approx((capital + power) / 1000 * 1e9)


def test_silicon_cost_is_dies_at_the_price_of_a_good_die() -> None:
    """100 mm² dies, 640 per wafer, Poisson yield e^-0.1; 4 dies of the 2x2 wafer."""
    hw = dataclasses.replace(wafer_spec(), cost=_cost())
    out = cost_summary(None, hw, _plan(), iteration_time_s=1.0)
    good = 640 * math.exp(-0.1)
    assert out["dies_per_wafer"] == 640
    assert out["good_dies_per_wafer"] == pytest.approx(good)
    assert out["silicon_cost_usd"] == pytest.approx(4 * 6400.0 / good)
    # 16 tiles of 25 mm² per die: each tile yields e^-0.025 on its own
    assert out["usable_tiles_per_wafer"] == pytest.approx(640 * 16 * math.exp(-0.025))
    assert out["cost_breakdown_usd"]["energy"] == 0.0


# --------------------------------------------------------------------------- configs


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_energy_section_errors_name_the_key(tmp_path: Path) -> None:
    raw = spec_to_raw(load_hardware(ROOT / "hw_configs/tx8-wafer.yaml"))
    raw["energy"]["noc_hops"] = raw["energy"].pop("noc_hop")
    raw["energy"]["dram"] = "160 pJ"
    with pytest.raises(ConfigError) as info:
        load_hardware(_write(tmp_path, raw))
    text = str(info.value)
    assert "energy.noc_hops" in text and "did you mean 'noc_hop'" in text
    assert "energy.noc_hop" in text  # missing
    assert "energy.dram" in text


def test_a_cluster_energy_section_has_nic_not_noc_hop(tmp_path: Path) -> None:
    raw = spec_to_raw(load_hardware(ROOT / "hw_configs/dgx-h100.yaml"))
    raw["energy"]["noc_hop"] = "5 pJ/B"
    with pytest.raises(ConfigError, match=r"energy\.noc_hop"):
        load_hardware(_write(tmp_path, raw))


@pytest.mark.parametrize("name", ["tx8-wafer", "tx8-wafer-10x8", "dgx-a100-superpod", "dgx-h100"])
def test_shipped_static_power_closes_the_tdp(name: str) -> None:
    """The shipped configs derive static power as TDP minus a tile at full rate (their
    comments): static + peak FLOP/s x e_flop + SRAM (wafer) or HBM (GPU) at full bandwidth
    = TDP, to the rounding of the written values."""
    hw = load_hardware(ROOT / f"hw_configs/{name}.yaml")
    e, t = hw.energy, hw.tile
    assert e is not None and e.tdp_per_tile_w is not None
    dynamic_w = t.peak_for("fp16") * e.flop_for("fp16")
    if hw.wafer is not None:
        dynamic_w += t.sram_bandwidth_bytes_per_s * e.sram_j_per_byte
    else:
        dynamic_w += hw.dram.bandwidth_bytes_per_s * e.dram_j_per_byte
    assert e.static_per_tile_w + dynamic_w == pytest.approx(e.tdp_per_tile_w, rel=2e-3)


# ------------------------------------------------------------------- granularity and configs


def test_coarse_and_fine_grids_draw_the_same_static_power_and_tdp() -> None:
    """2x2 dies of 4x4 cores at 2 W static, 3 W TDP per core and 10 W per die, for 3 s:
    64 x 2 x 3 + 4 x 10 x 3 = 504 J core by core, and the same in 2x2 or 1x4 regions (a
    unit holds kr*kc cores, so it draws kr*kc times a core's power)."""
    energy = _energy(static_per_tile_w=2.0, static_per_chip_w=10.0, tdp_per_tile_w=3.0)
    fine = dataclasses.replace(wafer_spec(), energy=energy)
    for granularity in ((1, 1), (2, 2), (1, 4)):
        hw = coarsen(fine, granularity) if granularity != (1, 1) else fine
        out = energy_summary(_trace(end_s=3.0), Chip.from_spec(hw), _plan(), hw, "fp16")
        assert out["energy_breakdown_j"]["static_tiles"] == pytest.approx(64 * 2.0 * 3.0)
        assert out["energy_per_iteration_j"] == pytest.approx(504.0)
        assert out["tdp_w"] == pytest.approx(64 * 3.0 + 4 * 10.0)


def test_a_hop_between_units_costs_its_core_hops() -> None:
    """A unit hop spans kc core hops left-right and kr up-down; its energy is their mean,
    (kr + kc) / 2 core hops: 2 for 2x2 units (exact both ways), 2.5 for 1x4 units. A core
    costs its area: the unit kr*kc times it; the die is unchanged."""
    cost = _cost()
    fine = dataclasses.replace(wafer_spec(), energy=_energy(noc_hop_j_per_byte=5 * PJ), cost=cost)
    for (kr, kc), hops in (((2, 2), 2.0), ((1, 4), 2.5)):
        coarse = coarsen(fine, (kr, kc))
        assert coarse.energy is not None and coarse.cost is not None
        assert coarse.energy.noc_hop_j_per_byte == pytest.approx(hops * 5 * PJ)
        assert coarse.cost.tile_area_m2 == pytest.approx(kr * kc * cost.tile_area_m2)
        assert coarse.cost.die_area_m2 == cost.die_area_m2
    # 2x2 units of a 1x1-die 4x4 grid: unit 0 to unit 1 is one unit hop = 2 core hops, the
    # distance between the units' centres on the fine grid.
    one_die = dataclasses.replace(
        fine, wafer=dataclasses.replace(fine.wafer, die_rows=1, die_cols=1)
    )
    coarse = coarsen(one_die, (2, 2))
    chip = Chip.from_spec(coarse)
    route = chip.route(0, 1)
    out = energy_summary(_trace(flows=[_flow(route.channels, 1e6)]), chip, _plan(), coarse, "fp16")
    assert out["energy_breakdown_j"]["noc"] == pytest.approx(1e6 * 2 * 5 * PJ, rel=1e-12)


def _shipped_hardware() -> list[str]:
    return sorted(p.stem for p in (ROOT / "hw_configs").glob("*.yaml"))


def test_every_channel_kind_has_an_energy() -> None:
    energy = _energy(
        noc_hop_j_per_byte=1.0, chip_to_chip_j_per_byte=2.0, nic_j_per_byte=3.0, dram_j_per_byte=4.0
    )
    for kind in CHANNEL_KINDS:
        assert energy.channel_j_per_byte(kind) > 0, kind
        assert _CHANNEL_COMPONENT[kind] in ENERGY_COMPONENTS


@pytest.mark.parametrize("name", _shipped_hardware())
def test_every_shipped_chip_channel_has_an_energy(name: str) -> None:
    """Walk the chip each shipped config builds (at its granularity): every channel's kind
    has an energy and a breakdown component, and every peak format a FLOP energy."""
    hw = load_hardware(ROOT / f"hw_configs/{name}.yaml")
    assert hw.energy is not None, f"{name} has no energy: section"
    chip = Chip.from_spec(hw)
    kinds = {c.kind for c in chip.channels}
    assert kinds <= set(CHANNEL_KINDS)
    for kind in kinds:
        assert hw.energy.channel_j_per_byte(kind) >= 0
        assert _CHANNEL_COMPONENT[kind] in ENERGY_COMPONENTS
    for dtype, _ in hw.tile.peak_flop_per_s:
        assert hw.energy.flop_for(dtype) > 0, dtype


#: Board or system power per chip (wafer) the tiled configs share out over their cores [W]:
#: tiles_hw_specs.yaml n150 160 W; n300 300 W / 2 chips (T3000 = 4 n300; Galaxy assumed the
#: same); p150 300 W; CS-3 23 kW (CS-2 assumed the same) over 850,000 / 900,000 cores, of
#: which the WSE-2 config simulates 750 x 750.
_BOARD_POWER_PER_CHIP_W = {
    "wormhole-n150": 160.0,
    "wormhole-n300": 150.0,
    "wormhole-t3000": 150.0,
    "wormhole-galaxy": 150.0,
    "blackhole-p150": 300.0,
    "cerebras-wse2": 23000.0 * 750 * 750 / 850000,
    "cerebras-wse3": 23000.0,
}


@pytest.mark.parametrize("name", sorted(_BOARD_POWER_PER_CHIP_W))
def test_tiled_configs_draw_their_board_power_at_full_rate(name: str) -> None:
    """A chip whose cores all run at peak fp16 FLOP/s and SRAM bandwidth, with its DRAM
    channels at full bandwidth, draws its board power: static + dynamic = the published
    power per chip (the comments' closure), and the reported TDP is that power."""
    hw = load_hardware(ROOT / f"hw_configs/{name}.yaml")
    e, t, w = hw.energy, hw.tile, hw.wafer
    assert e is not None and e.tdp_per_tile_w is not None and w is not None
    units = w.tile_rows * w.tile_cols  # per chip, at the config's granularity
    dram_w = len(hw.dram.positions) * hw.dram.bandwidth_bytes_per_s * e.dram_j_per_byte
    full_w = (
        units
        * (
            e.static_per_tile_w
            + t.peak_for("fp16") * e.flop_for("fp16")
            + t.sram_bandwidth_bytes_per_s * e.sram_j_per_byte
        )
        + dram_w
        + e.static_per_chip_w
    )
    board_w = _BOARD_POWER_PER_CHIP_W[name]
    assert full_w == pytest.approx(board_w, rel=2e-3)
    assert units * e.tdp_per_tile_w == pytest.approx(board_w, rel=2e-3)


def test_a_run_core_by_core_and_in_regions_has_the_same_compute_and_static_power() -> None:
    """The prefill of tests/analytic/test_tiled_systems.py::test_coarse_equals_fine_on_a_small_grid
    on 4x4 cores (TP 16) and on 2x2 regions (TP 4), with energies: the FLOP are the same, so
    the compute energy is; the machine draws 16 x 2 W static either way, so the static
    energy is 32 W x each run's own time."""
    from tests.analytic.test_tiled_systems import _inference

    energy = _energy(energy_j_per_flop=(("bf16", 0.1 * PJ),), static_per_tile_w=2.0)
    base = wafer_spec(dies=(1, 1), tiles=(4, 4), sram_bytes=512 * 2**20, dram_placement="per_tile")
    fine = dataclasses.replace(
        base,
        tile=dataclasses.replace(
            base.tile, sram_capacity_bytes=512 * 2**20, peak_flop_per_s=(("bf16", 1e12),)
        ),
        energy=energy,
    )
    runs = [
        _inference(fine, tp=16, prompt=32, output=1, weight_dtype="bf16"),
        _inference(coarsen(fine, (2, 2)), tp=4, prompt=32, output=1, weight_dtype="bf16"),
    ]
    fine_parts, coarse_parts = (r["energy"]["energy_breakdown_j"] for r in runs)
    assert coarse_parts["compute"] == pytest.approx(fine_parts["compute"], rel=1e-9)
    for run in runs:
        parts = run["energy"]["energy_breakdown_j"]
        assert parts["static_tiles"] == pytest.approx(32.0 * run["iteration_time_s"], rel=1e-9)
