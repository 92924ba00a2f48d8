"""Defects: routes around dead links and tiles, degraded bandwidth, holes in the mapping, cuts.

Expected values are hand-derived (hop counts on a small mesh, size over reduced bandwidth);
none is copied from a run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import simpy

from palmsim.api import run_experiment, simulate
from palmsim.config.loader import load_hardware
from palmsim.config.specs import DefectSpec
from palmsim.engine.flows import FlowNetwork
from palmsim.engine.records import FlowRecord, RecordBuilder
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.defects import draw_dead_tiles
from palmsim.hardware.routing import tile_node
from tests.conftest import experiment, gpt_model, wafer_spec


def _chip(defects: DefectSpec, **kw) -> Chip:
    return Chip.from_spec(dataclasses.replace(wafer_spec(**kw), defects=defects))


def _nodes(chip: Chip, channels: tuple[int, ...]) -> list[str]:
    return [chip.channels[channels[0]].src] + [chip.channels[c].dst for c in channels]


def test_a_route_avoids_a_dead_link_and_pays_the_detour() -> None:
    """(0,0) -> (0,3) on one 4x4 die: XY takes 3 hops along row 0. With link (0,1)-(0,2) dead
    the shortest live path steps down a row and back: 3 + 2 = 5 hops."""
    chip = _chip(DefectSpec(dead_links=((1, 2),)), dies=(1, 1))
    clean = Chip.from_spec(wafer_spec(dies=(1, 1)))
    assert len(clean.route(0, 3).channels) == 3
    route = chip.route(0, 3)
    assert len(route.channels) == 5
    assert route.latency_s == pytest.approx(5 * 1e-9)
    hops = set(zip(_nodes(chip, route.channels), _nodes(chip, route.channels)[1:], strict=False))
    assert (tile_node(1), tile_node(2)) not in hops and (tile_node(2), tile_node(1)) not in hops
    assert chip.default_route(0, 3) == clean.route(0, 3).channels


def test_a_blocked_xy_route_takes_the_yx_route_of_equal_length() -> None:
    """(0,0) -> (1,1): XY goes (0,1) first; with tile 1 = (0,1) dead, YX goes by (1,0)."""
    chip = _chip(DefectSpec(dead_tiles=(1,)), dies=(1, 1))
    route = chip.route(0, 5)
    assert _nodes(chip, route.channels) == [tile_node(0), tile_node(4), tile_node(5)]


def test_a_degraded_link_gives_a_flow_bytes_over_the_reduced_bandwidth() -> None:
    """A 1 GB flow over a link at 25 % of 1 TB/s: 1e9 / 2.5e11 = 4 ms plus one hop's 1 ns."""
    chip = _chip(DefectSpec(degraded_links=((0, 1, 0.25),)), dies=(1, 1), intra_bw=1e12)
    route = chip.route(0, 1)
    assert [chip.channels[c].bandwidth_bytes_per_s for c in route.channels] == [0.25e12]
    assert chip.channels[chip.route(1, 0).channels[0]].bandwidth_bytes_per_s == 0.25e12
    env = simpy.Environment()
    net = FlowNetwork(
        env, [c.bandwidth_bytes_per_s for c in chip.channels], RecordBuilder(FlowRecord)
    )
    done: list[float] = []

    def proc():
        yield net.transfer(route.channels, 1e9, route.latency_s, category="p2p", src=0, dst=1)
        done.append(env.now)

    env.process(proc())
    env.run()
    assert done == [pytest.approx(1e9 / 0.25e12 + 1e-9, rel=1e-12)]


def test_faults_that_cut_the_chip_are_a_mapping_error_naming_the_cut() -> None:
    """A 1x4 row of tiles with link 1-2 dead: tiles 0-1 cannot reach 2-3."""
    chip = _chip(
        DefectSpec(dead_links=((1, 2),)), dies=(1, 1), tiles=(1, 4), dram_placement="per_tile"
    )
    with pytest.raises(MappingError, match=r"cut the chip.*tile:1->tile:2"):
        chip.route(0, 3)


def test_a_dead_tile_is_never_mapped_and_stages_close_around_it() -> None:
    dead = (1, 6, 9)
    hw = dataclasses.replace(wafer_spec(dies=(1, 1)), defects=DefectSpec(dead_tiles=dead))
    model = gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128)
    exp = experiment(hw, model, seq=128, batch=8, pp=4, tp=2, dp=1, micro_batch_size=2)
    result = simulate(exp)
    used = set(result.plan.used_tiles)
    assert len(used) == 8 and not used & set(dead)
    assert not {r.tile for r in result.trace.intervals} & set(dead)
    for flow in result.trace.flows:  # no flow crosses a dead tile
        nodes = _nodes(result.chip, flow.channels)
        assert not {tile_node(t) for t in dead} & set(nodes)


def test_too_few_live_tiles_is_a_mapping_error() -> None:
    hw = dataclasses.replace(wafer_spec(dies=(1, 1)), defects=DefectSpec(dead_tiles=(0,)))
    exp = experiment(
        hw,
        gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128),
        seq=128,
        batch=16,
        pp=4,
        tp=4,
        dp=1,
        micro_batch_size=1,
    )
    with pytest.raises(MappingError, match="15 usable tiles"):
        simulate(exp)


def test_a_dead_dram_port_moves_its_tiles_to_a_live_port() -> None:
    clean = Chip.from_spec(wafer_spec(dies=(1, 1)))
    port = clean.home_dram_port(0)
    chip = _chip(DefectSpec(dead_dram_ports=(port,)), dies=(1, 1))
    assert all(chip.home_dram_port(t) != port for t in range(chip.num_tiles))


def test_run_reports_live_tiles_rerouted_flows_and_slowdown(tmp_path) -> None:
    """Dead tiles force detours; the summary counts them and the slowdown is >= 1."""
    defects = DefectSpec(dead_tiles=(5, 10), degraded_links=((0, 1, 0.1),))
    hw = dataclasses.replace(wafer_spec(dies=(1, 1)), defects=defects)
    model = gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128)
    exp = experiment(hw, model, seq=128, batch=8, pp=2, tp=4, dp=1, micro_batch_size=2)
    summary = run_experiment(exp, tmp_path, make_plots=False)
    d = summary["defects"]
    assert (d["num_tiles_live"], d["num_tiles_dead"], d["dead_tiles"]) == (14, 2, [5, 10])
    assert d["num_degraded_links"] == 1
    assert d["rerouted_flows"] > 0
    assert d["slowdown"] == pytest.approx(
        summary["iteration_time_s"] / d["defect_free_iteration_time_s"]
    )
    assert d["slowdown"] >= 1.0


def test_random_dead_tiles_are_seeded_and_near_the_fraction() -> None:
    dies = [t // 100 for t in range(20000)]
    a = draw_dead_tiles(dies, 0.05, None, seed=7)
    assert a == draw_dead_tiles(dies, 0.05, None, seed=7)
    assert a != draw_dead_tiles(dies, 0.05, None, seed=8)
    # binomial(20000, 0.05): mean 1000, sd sqrt(950) = 30.8
    assert abs(len(a) - 1000) < 5 * 30.8
    assert draw_dead_tiles(dies, 0.0, None, seed=7) == frozenset()


def test_clustered_dead_tiles_vary_more_between_dies() -> None:
    """Negative-binomial clustering: per-die dead counts spread far wider than binomial."""
    dies = [t // 100 for t in range(20000)]

    def spread(clustering):
        dead = draw_dead_tiles(dies, 0.05, clustering, seed=3)
        return np.var(np.bincount([dies[t] for t in dead], minlength=200))

    # binomial per die: var = 100 * 0.05 * 0.95 = 4.75
    assert spread(None) < 2 * 4.75
    assert spread(0.5) > 4 * 4.75


def test_defect_indices_are_checked() -> None:
    from pathlib import Path

    tx8 = Path(__file__).resolve().parents[2] / "hw_configs" / "tx8-wafer.yaml"
    with pytest.raises(ConfigError, match=r"defects\.dead_links\[0\]"):
        Chip.from_spec(load_hardware(tx8, ["hw.defects.dead_links=[[0, 5]]"]))
    with pytest.raises(ConfigError, match=r"defects\.dead_tiles\[0\]"):
        Chip.from_spec(load_hardware(tx8, ["hw.defects.dead_tiles=[999]"]))


def test_spares_stand_in_for_dead_tiles_of_their_die_only() -> None:
    """2x2 dies of 4x4 tiles, the last row of each die spare: 12 regular tiles per die. Die 0
    loses two regular tiles and gets two of its four spares; the other dies use none."""
    chip = _chip(DefectSpec(dead_tiles=(0, 9), spare_rows=1))  # (0,0), (1,1): die 0
    assert len(chip.spare_tiles) == 4 * 4
    assert len(chip.usable_tiles) == 4 * 12
    die0 = [t for t in chip.usable_tiles if chip.die_of(t) == 0]
    assert len(die0) == 12 and not {0, 9} & set(die0)
    assert len([t for t in die0 if t in chip.spare_tiles]) == 2
    for die in (1, 2, 3):
        assert not {t for t in chip.usable_tiles if chip.die_of(t) == die} & chip.spare_tiles


def test_a_mapping_uses_spares_only_in_place_of_dead_tiles() -> None:
    hw = dataclasses.replace(
        wafer_spec(dies=(1, 1)), defects=DefectSpec(dead_tiles=(2,), spare_cols=1)
    )
    model = gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128)
    exp = experiment(hw, model, seq=128, batch=8, pp=3, tp=4, dp=1, micro_batch_size=2)
    result = simulate(exp)
    used = set(result.plan.used_tiles)
    spares = result.chip.spare_tiles  # column 3: tiles 3, 7, 11, 15
    assert spares == {3, 7, 11, 15}
    assert 2 not in used and len(used & spares) == 1
    with pytest.raises(MappingError, match="12 usable tiles"):
        simulate(experiment(hw, model, seq=128, batch=8, pp=4, tp=4, dp=1, micro_batch_size=2))
