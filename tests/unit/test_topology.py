"""Topology builders: channel counts and kinds, wrap-around links, DRAM port placement."""

from __future__ import annotations

from collections import Counter

import networkx as nx
import pytest

from palmsim.config.specs import (
    ClusterSpec,
    DramSpec,
    HardwareSpec,
    LinkSpec,
    TileSpec,
    WaferSpec,
)
from palmsim.errors import ConfigError
from palmsim.hardware.topology import TOPOLOGIES

TILE = TileSpec(
    peak_flop_per_s=(("fp16", 16e12),),
    sram_capacity_bytes=3 * 2**20,
    sram_bandwidth_bytes_per_s=2e12,
)
INTRA = LinkSpec(bandwidth_bytes_per_s=1024e9, latency_s=1e-9)
INTER = LinkSpec(bandwidth_bytes_per_s=256e9, latency_s=2e-9)


def wafer_spec(
    die_grid: tuple[int, int] = (2, 2),
    tile_grid: tuple[int, int] = (2, 2),
    *,
    topology: str = "mesh",
    placement: str = "per_tile",
) -> HardwareSpec:
    """A wafer of ``die_grid`` dies of ``tile_grid`` tiles (default: 2x2 dies of 2x2 tiles)."""
    return HardwareSpec(
        name="test-wafer",
        kind="wafer",
        tile=TILE,
        dram=DramSpec(placement, 256e9, 256e9, 100e-9),
        wafer=WaferSpec(*die_grid, *tile_grid, topology, INTRA, INTER),
    )


def cluster_spec(num_nodes: int = 2, gpus_per_node: int = 4) -> HardwareSpec:
    return HardwareSpec(
        name="test-cluster",
        kind="gpu_cluster",
        tile=TILE,
        dram=DramSpec("per_tile", 80e9, 2039e9, 100e-9),
        cluster=ClusterSpec(num_nodes, gpus_per_node, LinkSpec(300e9, 1e-6), LinkSpec(25e9, 2e-6)),
    )


def kinds(graph: nx.DiGraph) -> Counter[str]:
    return Counter(attrs["kind"] for _, _, attrs in graph.edges(data=True))


def test_registry_knows_the_builders() -> None:
    assert TOPOLOGIES.names() == ["mesh", "switch", "torus"]


def test_mesh_channel_counts_on_2x2_dies_of_2x2_tiles() -> None:
    """4x4 grid: 4 rows x 3 + 4 cols x 3 = 24 links = 48 channels. Links across the die
    boundaries: the column boundary (cols 1|2) on 4 rows and the row boundary (rows 1|2) on
    4 columns = 8 links = 16 inter_die channels; 32 intra_die. Plus 16 per-tile DRAM ports."""
    graph = TOPOLOGIES.get("mesh")(wafer_spec()).graph
    assert kinds(graph) == {"intra_die": 32, "inter_die": 16, "dram": 16}


def test_mesh_links_join_4_neighbours_in_both_directions() -> None:
    graph = TOPOLOGIES.get("mesh")(wafer_spec()).graph
    for src, dst, attrs in graph.edges(data=True):
        if attrs["kind"] == "dram":
            continue
        (r1, c1), (r2, c2) = graph.nodes[src]["pos"], graph.nodes[dst]["pos"]
        assert abs(r1 - r2) + abs(c1 - c2) == 1
        assert graph.has_edge(dst, src)


def test_link_kinds_carry_their_link_spec() -> None:
    graph = TOPOLOGIES.get("mesh")(wafer_spec()).graph
    # tile 1 (0,1) → tile 2 (0,2) crosses from die 0 to die 1.
    assert graph.edges["tile:1", "tile:2"]["kind"] == "inter_die"
    assert graph.edges["tile:1", "tile:2"]["bandwidth_bytes_per_s"] == 256e9
    assert graph.edges["tile:1", "tile:2"]["latency_s"] == 2e-9
    # tile 0 (0,0) → tile 4 (1,0) stays in die 0.
    assert graph.edges["tile:0", "tile:4"]["kind"] == "intra_die"
    assert graph.edges["tile:0", "tile:4"]["bandwidth_bytes_per_s"] == 1024e9


def test_channels_are_numbered_in_insertion_order() -> None:
    """Tile 0's east link (0→1, 1→0) then its south link (0→4, 4→0) are channels 0..3."""
    graph = TOPOLOGIES.get("mesh")(wafer_spec()).graph
    numbers = sorted(attrs["channel"] for _, _, attrs in graph.edges(data=True))
    assert numbers == list(range(graph.number_of_edges()))
    assert graph.edges["tile:0", "tile:1"]["channel"] == 0
    assert graph.edges["tile:1", "tile:0"]["channel"] == 1
    assert graph.edges["tile:0", "tile:4"]["channel"] == 2
    assert graph.edges["tile:4", "tile:0"]["channel"] == 3


def test_tile_node_attributes() -> None:
    graph = TOPOLOGIES.get("mesh")(wafer_spec()).graph
    assert graph.nodes["tile:6"] == {"kind": "tile", "tile": 6, "pos": (1, 2)}


def test_torus_adds_wrap_around_links() -> None:
    """4x4 grid: wrap links per row (4) and per column (4) = 8 links = 16 channels, all across
    dies (column 3 is in die column 1, column 0 in die column 0): 64 link channels, 32 of them
    inter_die."""
    graph = TOPOLOGIES.get("torus")(wafer_spec(topology="torus")).graph
    assert kinds(graph) == {"intra_die": 32, "inter_die": 32, "dram": 16}
    assert graph.edges["tile:3", "tile:0"]["kind"] == "inter_die"
    assert graph.edges["tile:12", "tile:0"]["kind"] == "inter_die"


def test_torus_on_one_die_skips_duplicate_wraps() -> None:
    """One die of 2x3 tiles: mesh 2x2 + 3x1 = 7 links; row wraps (C=3 > 2) add 2; column
    wraps (R=2) would duplicate the mesh links and are skipped: 9 links = 18 intra_die."""
    graph = TOPOLOGIES.get("torus")(wafer_spec((1, 1), (2, 3), topology="torus")).graph
    assert kinds(graph) == {"intra_die": 18, "dram": 6}
    assert graph.has_edge("tile:2", "tile:0")


def test_die_edge_ports_per_die_and_positions() -> None:
    """Two dies (2x1) of 4x3 tiles: 2 * (4 - 2) = 4 ports per die, left column top to bottom
    then right column. Global grid 8x3; die 0: (1,0)=3, (2,0)=6, (1,2)=5, (2,2)=8; die 1:
    (5,0)=15, (6,0)=18, (5,2)=17, (6,2)=20."""
    graph = TOPOLOGIES.get("mesh")(wafer_spec((2, 1), (4, 3), placement="die_edge")).graph
    ports = sorted(
        (attrs["port"], attrs["tile"])
        for _, attrs in graph.nodes(data=True)
        if attrs["kind"] == "dram"
    )
    assert [tile for _, tile in ports] == [3, 6, 5, 8, 15, 18, 17, 20]
    for port, tile in ports:
        edge = graph.edges[f"dram:{port}", f"tile:{tile}"]
        assert edge["kind"] == "dram"
        assert edge["bandwidth_bytes_per_s"] == 256e9
        assert edge["latency_s"] == 100e-9
        assert graph.nodes[f"dram:{port}"]["capacity_bytes"] == 256e9
    assert kinds(graph)["dram"] == 8


def test_die_edge_needs_three_tile_rows() -> None:
    with pytest.raises(ConfigError, match=r"chip\.cores: got \[2, 2\]"):
        TOPOLOGIES.get("mesh")(wafer_spec(placement="die_edge"))


def test_unknown_dram_placement_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dram\.placement"):
        TOPOLOGIES.get("mesh")(wafer_spec(placement="stacked"))


def test_per_tile_ports_attach_to_their_own_tile() -> None:
    topology = TOPOLOGIES.get("mesh")(wafer_spec())
    for port in range(16):
        assert topology.graph.has_edge(f"dram:{port}", f"tile:{port}")
    assert topology.home_dram_ports() == tuple(range(16))


def test_gpu_cluster_graph() -> None:
    """2 nodes x 4 GPUs: per GPU 2 nvlink + 2 nic channels, plus one HBM port each."""
    topology = TOPOLOGIES.get("switch")(cluster_spec())
    graph = topology.graph
    assert kinds(graph) == {"nvlink": 16, "nic": 16, "dram": 8}
    assert graph.nodes["switch:1"]["kind"] == "switch"
    assert graph.nodes["fabric"]["kind"] == "fabric"
    assert graph.nodes["tile:5"]["pos"] == (1, 1)
    assert graph.edges["tile:5", "switch:1"]["kind"] == "nvlink"
    assert graph.edges["switch:1", "tile:5"]["latency_s"] == 1e-6
    assert graph.edges["tile:5", "fabric"]["kind"] == "nic"
    assert graph.edges["fabric", "tile:5"]["bandwidth_bytes_per_s"] == 25e9
    assert not graph.has_edge("tile:5", "switch:0")


def test_gpu_cluster_requires_per_tile_dram() -> None:
    spec = cluster_spec()
    bad = HardwareSpec(
        spec.name, spec.kind, spec.tile, DramSpec("die_edge", 1.0, 1.0, 0.0), cluster=spec.cluster
    )
    with pytest.raises(ConfigError, match=r"dram\.placement"):
        TOPOLOGIES.get("switch")(bad)
