"""The chip-grid hardware format (issue 14): one description, a grid of chips joined by links,
each chip a grid of cores. Die grids, Tenstorrent chip meshes and GPU nodes are its cases.

Expected values are worked out by hand from the files written here (tile counts as products of
the grids, units: 100 Gb/s = 12.5e9 B/s, ...), never copied from the loader's output.
"""

from __future__ import annotations

import copy
from operator import attrgetter
from typing import Any

import pytest
import yaml

from palmsim.config import loader
from palmsim.config.loader import load_hardware, spec_to_raw
from palmsim.config.specs import ClusterSpec, HardwareSpec, LinkSpec, WaferSpec
from palmsim.errors import ConfigError

MISSING = ConfigError.MISSING

#: The three cases below are written with the same top-level sections (name, tile, chip,
#: system, dram); what every case shares: one tile's rates and the DRAM beside it.
_TILE = {
    "peak": {"fp16": "16 TFLOP/s", "bf16": "16 TFLOP/s"},
    "sram_capacity": "1 MiB",
    "sram_bandwidth": "1 TB/s",
}
_DRAM = {"placement": "per_tile", "capacity": "16 GB", "bandwidth": "100 GB/s", "latency": "100 ns"}

#: A TX8-like die grid: 2 x 2 dies, each a 4 x 4 mesh of cores.
DIE_GRID: dict[str, Any] = {
    "name": "die-grid",
    "tile": _TILE,
    "chip": {"cores": [4, 4], "noc": {"bandwidth": "1024 GB/s", "latency": "1 ns"}},
    "system": {
        "topology": "mesh",
        "chips": [2, 2],
        "link": {"bandwidth": "256 GB/s", "latency": "1 ns"},
    },
    "dram": _DRAM,
}

#: A Tenstorrent-like chip mesh: 2 x 4 chips of 8 x 8 cores, two 100 Gb/s Ethernet links
#: between neighbouring chips, rings run both ways.
CHIP_MESH: dict[str, Any] = {
    "name": "chip-mesh",
    "tile": _TILE,
    "chip": {"cores": [8, 8], "noc": {"bandwidth": "32 GB/s", "latency": "9 ns"}},
    "system": {
        "topology": "mesh",
        "chips": [2, 4],
        "link": {"bandwidth": "100 Gb/s", "latency": "700 ns", "count": 2},
        "bidirectional_rings": True,
    },
    "dram": _DRAM,
}

#: A GPU cluster: 4 nodes of 8 GPUs, NVLink into the node's switch, a NIC into the fabric.
GPU_NODES: dict[str, Any] = {
    "name": "gpu-nodes",
    "tile": _TILE,
    "chip": {"cores": [1, 1]},
    "system": {
        "topology": "switch",
        "chips": [4, 8],
        "link": {"bandwidth": "450 GB/s", "latency": "2 us"},
        "node_link": {"bandwidth": "400 Gb/s", "latency": "5 us"},
    },
    "dram": _DRAM,
}


def _load(raw: dict[str, Any], overrides: tuple[str, ...] = ()) -> HardwareSpec:
    return load_hardware("h.yaml", list(overrides), data=raw)


def _problems(raw: dict[str, Any], overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """key -> problem of the ConfigError loading ``raw`` raises."""
    with pytest.raises(ConfigError) as info:
        _load(raw, overrides)
    return {p.key: p for p in info.value.problems}


def _with(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with ``value`` at the dotted key (text after a space is a note)."""
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(" ", 1)[0].split(".")
    node = out
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = value
    return out


# =========================================================================== one description


def test_a_die_grid_is_a_wafer() -> None:
    hw = _load(DIE_GRID)
    assert (hw.kind, hw.cluster) == ("wafer", None)
    assert hw.wafer == WaferSpec(
        die_rows=2,
        die_cols=2,
        tile_rows=4,
        tile_cols=4,
        topology="mesh",
        intra_die=LinkSpec(1024e9, pytest.approx(1e-9)),
        inter_die=LinkSpec(256e9, pytest.approx(1e-9)),
        inter_die_links=0,
        bidirectional_rings=False,
        unit_rows=1,
        unit_cols=1,
    )
    assert hw.num_tiles == 2 * 2 * 4 * 4 == 64


def test_a_chip_mesh_with_link_count_is_a_wafer_of_chips() -> None:
    hw = _load(CHIP_MESH)
    assert (hw.kind, hw.cluster) == ("wafer", None)
    assert hw.wafer == WaferSpec(
        die_rows=2,
        die_cols=4,
        tile_rows=8,
        tile_cols=8,
        topology="mesh",
        intra_die=LinkSpec(32e9, pytest.approx(9e-9)),
        inter_die=LinkSpec(12.5e9, pytest.approx(700e-9)),  # 100 Gb/s = 100e9 / 8 B/s
        inter_die_links=2,
        bidirectional_rings=True,
        unit_rows=1,
        unit_cols=1,
    )
    assert hw.num_tiles == 2 * 4 * 8 * 8 == 512


def test_gpu_nodes_are_a_cluster() -> None:
    hw = _load(GPU_NODES)
    assert (hw.kind, hw.wafer) == ("gpu_cluster", None)
    assert hw.cluster == ClusterSpec(
        num_nodes=4,
        devices_per_node=8,
        intra_node=LinkSpec(450e9, pytest.approx(2e-6)),
        inter_node=LinkSpec(50e9, pytest.approx(5e-6)),  # 400 Gb/s = 400e9 / 8 B/s
    )
    assert hw.num_tiles == 4 * 8 == 32
    without_chip = copy.deepcopy(GPU_NODES)
    del without_chip["chip"]  # a GPU may omit chip: it is one tile
    assert _load(without_chip) == hw


def test_a_torus_of_chips_is_a_wafer_whose_grid_wraps() -> None:
    raw = copy.deepcopy(CHIP_MESH)
    raw["system"]["topology"] = "torus"
    hw = _load(raw)
    assert hw.wafer is not None and hw.wafer.topology == "torus"
    assert hw.num_tiles == 512


def test_granularity_merges_cores_into_simulated_tiles() -> None:
    """8 x 8 cores in 2 x 4 regions: 4 x 2 tiles per chip, each of 8 cores' rates."""
    raw = copy.deepcopy(CHIP_MESH)
    raw["chip"]["granularity"] = [2, 4]
    hw = _load(raw)
    assert hw.wafer is not None
    assert (hw.wafer.tile_rows, hw.wafer.tile_cols) == (8 // 2, 8 // 4)
    assert (hw.wafer.unit_rows, hw.wafer.unit_cols) == (2, 4)
    assert hw.num_tiles == 2 * 4 * 4 * 2 == 64
    assert dict(hw.tile.peak_flop_per_s)["fp16"] == 8 * 16e12


# =========================================================================== links


@pytest.mark.parametrize("topology", ["mesh", "torus"])
def test_a_single_chip_needs_no_link(topology: str) -> None:
    raw = copy.deepcopy(CHIP_MESH)
    raw["system"] = {"topology": topology, "chips": [1, 1]}
    hw = _load(raw)
    assert hw.wafer is not None
    assert (hw.wafer.die_rows, hw.wafer.die_cols, hw.wafer.inter_die_links) == (1, 1, 0)
    assert hw.num_tiles == 8 * 8


@pytest.mark.parametrize("chips", [[1, 2], [2, 1], [2, 4]])
def test_more_than_one_chip_without_a_link_names_system_link(chips: list[int]) -> None:
    raw = copy.deepcopy(CHIP_MESH)
    raw["system"] = {"topology": "mesh", "chips": chips}
    problems = _problems(raw)
    assert list(problems) == ["system.link"]
    assert problems["system.link"].value is MISSING
    assert f"{chips[0]} x {chips[1]} grid" in problems["system.link"].expected


def test_a_bad_link_is_not_also_reported_missing() -> None:
    """The link failed to parse, so the relation check (more than one chip needs a link) does
    not see it; the user gets the bad value once, not a second 'missing'."""
    raw = copy.deepcopy(DIE_GRID)
    raw["system"]["link"]["bandwidth"] = 256
    assert list(_problems(raw)) == ["system.link.bandwidth"]
    raw = copy.deepcopy(DIE_GRID)
    raw["system"]["link"] = "256 GB/s"
    assert list(_problems(raw)) == ["system.link"]
    assert _problems(raw)["system.link"].value == "256 GB/s"


def test_a_single_chips_unused_link_does_not_change_the_spec() -> None:
    """With one chip no core has a neighbour on another chip: a link given anyway (e.g. a
    multi-chip file run with --set hw.system.chips=[1, 1]) describes nothing simulated."""
    raw = copy.deepcopy(CHIP_MESH)
    one = _load(raw, ("hw.system.chips=[1, 1]",))
    del raw["system"]["link"]
    assert one == _load(raw, ("hw.system.chips=[1, 1]",))


def test_a_grid_of_cores_has_no_node_link() -> None:
    raw = copy.deepcopy(DIE_GRID)
    raw["system"]["node_link"] = {"bandwidth": "1 GB/s", "latency": "1 us"}
    assert list(_problems(raw)) == ["system.node_link"]


# =========================================================================== switch


@pytest.mark.parametrize("cores", [[4, 4], [1, 2], [2, 1]])
def test_a_grid_of_cores_behind_a_switch_is_refused(cores: list[int]) -> None:
    raw = copy.deepcopy(GPU_NODES)
    raw["chip"]["cores"] = cores
    problems = _problems(raw)
    assert list(problems) == ["chip.cores"]
    assert problems["chip.cores"].value == cores
    assert "[1, 1]" in problems["chip.cores"].expected
    assert "mesh or torus" in problems["chip.cores"].expected


@pytest.mark.parametrize("key", ["link", "node_link"])
def test_a_switch_needs_both_links(key: str) -> None:
    raw = copy.deepcopy(GPU_NODES)
    del raw["system"][key]
    problems = _problems(raw)
    assert list(problems) == [f"system.{key}"]
    assert problems[f"system.{key}"].value is MISSING


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("system", "link", "count"), 2),  # mesh/torus only
        (("system", "bidirectional_rings"), True),  # mesh/torus only
        (("chip", "noc"), {"bandwidth": "1 GB/s", "latency": "1 ns"}),  # a GPU has no NoC
        (("chip", "granularity"), 2),
    ],
)
def test_keys_of_a_grid_of_cores_are_unknown_behind_a_switch(
    path: tuple[str, ...], value: Any
) -> None:
    key = ".".join(path)
    problems = _problems(_with(GPU_NODES, key, value))
    assert list(problems) == [key]
    assert problems[key].value == value


# =========================================================================== the former format

#: Every key of the former format, where the chip-grid description keeps it (the brief of
#: issue 14), a value to write there, the file it belongs to, the spec fields it sets and their
#: values worked out by hand (200 Gb/s = 25e9 B/s; granularity 2 on 4 x 4 cores: 2 x 2 units).
FORMER: list[tuple[str, str, Any, dict[str, Any], tuple[str, ...], tuple[Any, ...]]] = [
    (
        "wafer.die_grid",
        "system.chips",
        [3, 2],
        DIE_GRID,
        ("wafer.die_rows", "wafer.die_cols"),
        (3, 2),
    ),
    (
        "wafer.tile_grid",
        "chip.cores",
        [8, 4],
        DIE_GRID,
        ("wafer.tile_rows", "wafer.tile_cols"),
        (8, 4),
    ),
    (
        "wafer.granularity",
        "chip.granularity",
        2,
        DIE_GRID,
        ("wafer.unit_rows", "wafer.tile_rows"),
        (2, 2),
    ),
    (
        "wafer.unit_grid",
        "chip.unit_grid",
        [2, 3],
        DIE_GRID,
        ("wafer.unit_rows", "wafer.unit_cols"),
        (2, 3),
    ),
    ("noc.topology", "system.topology", "torus", DIE_GRID, ("wafer.topology",), ("torus",)),
    (
        "noc.intra_die_bandwidth",
        "chip.noc.bandwidth",
        "512 GB/s",
        DIE_GRID,
        ("wafer.intra_die.bandwidth_bytes_per_s",),
        (512e9,),
    ),
    (
        "noc.intra_die_latency",
        "chip.noc.latency",
        "3 ns",
        DIE_GRID,
        ("wafer.intra_die.latency_s",),
        (pytest.approx(3e-9),),
    ),
    (
        "noc.inter_die_bandwidth",
        "system.link.bandwidth",
        "128 GB/s",
        DIE_GRID,
        ("wafer.inter_die.bandwidth_bytes_per_s",),
        (128e9,),
    ),
    (
        "noc.inter_die_latency",
        "system.link.latency",
        "5 ns",
        DIE_GRID,
        ("wafer.inter_die.latency_s",),
        (pytest.approx(5e-9),),
    ),
    ("noc.inter_die_links", "system.link.count", 4, DIE_GRID, ("wafer.inter_die_links",), (4,)),
    (
        "noc.bidirectional_rings",
        "system.bidirectional_rings",
        True,
        DIE_GRID,
        ("wafer.bidirectional_rings",),
        (True,),
    ),
    (
        "cluster.num_nodes",
        "system.chips [nodes, GPUs per node]",
        [3, 8],
        GPU_NODES,
        ("cluster.num_nodes",),
        (3,),
    ),
    (
        "cluster.gpus_per_node",
        "system.chips [nodes, GPUs per node]",
        [4, 2],
        GPU_NODES,
        ("cluster.devices_per_node",),
        (2,),
    ),
    (
        "network.intra_node_bandwidth",
        "system.link.bandwidth",
        "600 GB/s",
        GPU_NODES,
        ("cluster.intra_node.bandwidth_bytes_per_s",),
        (600e9,),
    ),
    (
        "network.intra_node_latency",
        "system.link.latency",
        "3 us",
        GPU_NODES,
        ("cluster.intra_node.latency_s",),
        (pytest.approx(3e-6),),
    ),
    (
        "network.inter_node_bandwidth",
        "system.node_link.bandwidth",
        "200 Gb/s",
        GPU_NODES,
        ("cluster.inter_node.bandwidth_bytes_per_s",),
        (25e9,),
    ),
    (
        "network.inter_node_latency",
        "system.node_link.latency",
        "4 us",
        GPU_NODES,
        ("cluster.inter_node.latency_s",),
        (pytest.approx(4e-6),),
    ),
]
_ROW = ("former", "new", "value", "base", "fields", "expected")
_IDS = [row[0] for row in FORMER]


def test_every_former_key_is_known_with_its_new_place() -> None:
    assert {row[0]: row[1] for row in FORMER} == loader._FORMER_KEYS


@pytest.mark.parametrize(_ROW, FORMER, ids=_IDS)
def test_a_former_key_in_a_file_names_its_new_place(
    former: str,
    new: str,
    value: Any,
    base: dict[str, Any],
    fields: tuple[str, ...],
    expected: tuple[Any, ...],
) -> None:
    problems = _problems(_with(base, former, value))
    assert list(problems) == [former]
    problem = problems[former]
    assert (problem.file, problem.value) == ("h.yaml", value)
    assert problem.expected == f"nothing here: the chip-grid format names it {new}"


@pytest.mark.parametrize(_ROW, FORMER, ids=_IDS)
def test_a_former_key_given_with_set_names_its_new_place(
    former: str,
    new: str,
    value: Any,
    base: dict[str, Any],
    fields: tuple[str, ...],
    expected: tuple[Any, ...],
) -> None:
    text = f"hw.{former}={yaml.safe_dump(value, default_flow_style=True).strip()}"
    text = text.removesuffix("\n...")
    with pytest.raises(ConfigError) as info:
        _load(base, (text,))
    (problem,) = info.value.problems
    assert problem.file.startswith(f"--set {text} (applied to h.yaml)")
    assert problem.key == former
    assert new in problem.expected
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize(_ROW, FORMER, ids=_IDS)
def test_the_new_place_takes_the_former_keys_value(
    former: str,
    new: str,
    value: Any,
    base: dict[str, Any],
    fields: tuple[str, ...],
    expected: tuple[Any, ...],
) -> None:
    """The place a refusal names is right: the value written there loads and sets the field
    the former key set."""
    hw = _load(_with(base, new, value))
    assert tuple(attrgetter(name)(hw) for name in fields) == expected


@pytest.mark.parametrize("value", ["wafer", "gpu_cluster"])
def test_kind_is_refused_naming_system_topology(value: str) -> None:
    raw = copy.deepcopy(DIE_GRID)
    raw["kind"] = value
    problems = _problems(raw)
    assert list(problems) == ["kind"]
    assert problems["kind"].value == value
    assert "system.topology" in problems["kind"].expected
    with pytest.raises(
        ConfigError, match=r"^--set hw\.kind=wafer .*kind: got 'wafer'.*system\.topology"
    ):
        _load(DIE_GRID, ("hw.kind=wafer",))


def test_a_file_of_the_former_format_gets_one_problem_per_key() -> None:
    """The former TX8 file: kind, 2 wafer keys, 5 noc keys = 8 problems, reported together."""
    former = {
        "name": "tx8",
        "kind": "wafer",
        "tile": _TILE,
        "wafer": {"die_grid": [5, 4], "tile_grid": [4, 4]},
        "noc": {
            "topology": "mesh",
            "intra_die_bandwidth": "1024 GB/s",
            "intra_die_latency": "1 ns",
            "inter_die_bandwidth": "256 GB/s",
            "inter_die_latency": "1 ns",
        },
        "dram": _DRAM,
    }
    problems = _problems(former)
    assert list(problems) == [
        "kind",
        "wafer.die_grid",
        "wafer.tile_grid",
        "noc.topology",
        "noc.intra_die_bandwidth",
        "noc.intra_die_latency",
        "noc.inter_die_bandwidth",
        "noc.inter_die_latency",
    ]


@pytest.mark.parametrize(
    ("section", "body", "key"), [("noc", 5, "noc"), ("wafer", {"x": 1}, "wafer.x")]
)
def test_a_former_section_the_table_does_not_know_points_at_the_new_sections(
    section: str, body: Any, key: str
) -> None:
    raw = copy.deepcopy(DIE_GRID)
    raw[section] = body
    problems = _problems(raw)
    assert list(problems) == [key]
    assert "chip: and system:" in problems[key].expected


# =========================================================================== round trips


def _round_trip(hw: HardwareSpec) -> HardwareSpec:
    """Through the file format and YAML text, as resolved_config.yaml holds it."""
    text = yaml.safe_dump(spec_to_raw(hw), sort_keys=False)
    return load_hardware("resolved_config.yaml:hardware", data=yaml.safe_load(text))


def _coarse_chip_mesh() -> dict[str, Any]:
    raw = copy.deepcopy(CHIP_MESH)
    raw["chip"]["granularity"] = [2, 4]
    return raw


@pytest.mark.parametrize(
    "raw",
    [DIE_GRID, CHIP_MESH, _coarse_chip_mesh(), GPU_NODES],
    ids=["die-grid", "chip-mesh", "coarse-chip-mesh", "gpu-nodes"],
)
def test_spec_to_raw_to_spec_is_the_same_spec(raw: dict[str, Any]) -> None:
    hw = _load(raw)
    assert _round_trip(hw) == hw


def test_the_raw_form_is_the_chip_grid_format() -> None:
    """Written back: chip: and system:, no kind, the coarse chip's regions as unit_grid."""
    coarse = spec_to_raw(_load(_coarse_chip_mesh()))
    assert "kind" not in coarse
    assert coarse["chip"]["cores"] == [4, 2]  # the simulated tiles of one chip
    assert coarse["chip"]["unit_grid"] == [2, 4]
    assert "granularity" not in coarse["chip"]  # already applied
    assert coarse["system"]["topology"] == "mesh"
    assert coarse["system"]["chips"] == [2, 4]
    assert coarse["system"]["link"]["count"] == 2
    assert coarse["system"]["bidirectional_rings"] is True
    gpus = spec_to_raw(_load(GPU_NODES))
    assert "chip" not in gpus and "kind" not in gpus
    assert gpus["system"]["topology"] == "switch"
    assert gpus["system"]["chips"] == [4, 8]
    assert set(gpus["system"]) == {"topology", "chips", "link", "node_link"}


def test_a_single_chip_round_trips_without_a_link() -> None:
    raw = copy.deepcopy(CHIP_MESH)
    hw = _load(raw, ("hw.system.chips=[1, 1]",))
    written = spec_to_raw(hw)
    assert "link" not in written["system"]
    assert _round_trip(hw) == hw


@pytest.mark.parametrize("name", ["tx8-wafer", "wormhole-t3000", "wormhole-n150", "dgx-h100"])
def test_a_resolved_config_reloads_to_the_same_hardware(name: str) -> None:
    """The hardware section of a run folder's resolved_config.yaml (api.resolved_config) is in
    the chip-grid format and rebuilds the same spec."""
    from palmsim.api import load_experiment, resolved_config

    exp = load_experiment(name)
    hardware = resolved_config(exp)["hardware"]
    assert "kind" not in hardware and "system" in hardware
    assert load_hardware(f"{name}:hardware", data=hardware) == exp.hardware
    assert _round_trip(exp.hardware) == exp.hardware
