"""Chip: channels, geometry, routes and their latency, DRAM routes and home ports."""

from __future__ import annotations

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
from palmsim.hardware.chip import Channel, Chip, DramPort, Route

TILE = TileSpec(
    peak_flop_per_s=(("fp16", 16e12),),
    sram_capacity_bytes=3 * 2**20,
    sram_bandwidth_bytes_per_s=2e12,
)
INTRA_LATENCY_S = 1e-9
INTER_LATENCY_S = 2e-9
DRAM_LATENCY_S = 100e-9
NVLINK_LATENCY_S = 1e-6
NIC_LATENCY_S = 2e-6


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
        dram=DramSpec(placement, 256e9, 256e9, DRAM_LATENCY_S),
        wafer=WaferSpec(
            *die_grid,
            *tile_grid,
            topology,
            LinkSpec(1024e9, INTRA_LATENCY_S),
            LinkSpec(256e9, INTER_LATENCY_S),
        ),
    )


@pytest.fixture
def wafer() -> Chip:
    """2x2 dies of 2x2 tiles, mesh, per-tile DRAM: a 4x4 global grid."""
    return Chip.from_spec(wafer_spec())


@pytest.fixture
def edge_die() -> Chip:
    """One 4x4 die with die_edge DRAM: ports at (1,0), (2,0), (1,3), (2,3) = tiles 4, 8, 7, 11."""
    return Chip.from_spec(wafer_spec((1, 1), (4, 4), placement="die_edge"))


@pytest.fixture
def cluster() -> Chip:
    """2 nodes x 4 GPUs."""
    spec = HardwareSpec(
        name="test-cluster",
        kind="gpu_cluster",
        tile=TILE,
        dram=DramSpec("per_tile", 80e9, 2039e9, DRAM_LATENCY_S),
        cluster=ClusterSpec(2, 4, LinkSpec(300e9, NVLINK_LATENCY_S), LinkSpec(25e9, NIC_LATENCY_S)),
    )
    return Chip.from_spec(spec)


def route_nodes(chip: Chip, route: Route) -> list[str]:
    """The graph nodes a route visits, checking that its channels chain up."""
    nodes = [chip.channels[route.channels[0]].src]
    for index in route.channels:
        channel = chip.channels[index]
        assert channel.src == nodes[-1]
        nodes.append(channel.dst)
    return nodes


# ---------------------------------------------------------------------- structure


def test_channels_match_the_graph(wafer: Chip) -> None:
    assert wafer.num_tiles == 16
    assert len(wafer.channels) == 48 + 16
    for i, channel in enumerate(wafer.channels):
        assert channel.index == i
        edge = wafer.graph.edges[channel.src, channel.dst]
        assert edge["channel"] == i
        assert edge["kind"] == channel.kind
        assert edge["bandwidth_bytes_per_s"] == channel.bandwidth_bytes_per_s
        assert edge["latency_s"] == channel.latency_s


def test_channel_name() -> None:
    channel = Channel(0, "intra_die", "tile:0", "tile:1", 1.0, 1.0)
    assert channel.name == "tile:0->tile:1"


def test_noc_and_dram_channels_partition_the_channels(wafer: Chip) -> None:
    noc, dram = wafer.noc_channels(), wafer.dram_channels()
    assert len(noc) == 48
    assert len(dram) == 16
    assert sorted(noc + dram) == list(range(len(wafer.channels)))
    assert all(wafer.channels[i].kind == "dram" for i in dram)


def test_chip_is_immutable(wafer: Chip) -> None:
    assert nx.is_frozen(wafer.graph)
    with pytest.raises(AttributeError):
        wafer.num_tiles = 3  # type: ignore[misc]


def test_tile_position_and_die(wafer: Chip) -> None:
    """Row-major over the 4x4 grid; dies 0 1 / 2 3 of 2x2 tiles each."""
    assert wafer.tile_position(6) == (1, 2)
    assert wafer.die_of(6) == 1
    assert wafer.tile_position(9) == (2, 1)
    assert wafer.die_of(9) == 2
    assert [wafer.die_of(t) for t in range(16)] == [0, 0, 1, 1] * 2 + [2, 2, 3, 3] * 2


# ---------------------------------------------------------------------- routes


def test_route_to_itself_is_empty(wafer: Chip) -> None:
    assert wafer.route(5, 5) == Route((), 0.0)


def test_xy_route_on_the_wafer(wafer: Chip) -> None:
    """Tile 0 (0,0) → tile 14 (3,2): along row 0 to column 2, then down column 2."""
    route = wafer.route(0, 14)
    assert route_nodes(wafer, route) == [
        "tile:0",
        "tile:1",
        "tile:2",
        "tile:6",
        "tile:10",
        "tile:14",
    ]
    # Hops 1→2 (die 0 → 1) and 6→10 (die 1 → 3) are inter_die: 3 x 1 ns + 2 x 2 ns = 7 ns.
    assert [wafer.channels[c].kind for c in route.channels] == [
        "intra_die",
        "inter_die",
        "intra_die",
        "inter_die",
        "intra_die",
    ]
    assert route.latency_s == pytest.approx(7e-9, rel=1e-9)


def test_route_latency_is_hops_times_link_latency_on_one_die() -> None:
    """One die of 4x4 tiles: corner to corner is 6 hops of 1 ns."""
    chip = Chip.from_spec(wafer_spec((1, 1), (4, 4)))
    route = chip.route(0, 15)
    assert len(route.channels) == 6
    assert route.latency_s == pytest.approx(6 * INTRA_LATENCY_S, rel=1e-9)


def test_routes_are_cached_per_instance(wafer: Chip) -> None:
    assert wafer.route(0, 15) is wafer.route(0, 15)
    other = Chip.from_spec(wafer_spec())
    assert other.route(0, 15) == wafer.route(0, 15)
    assert other.route(0, 15) is not wafer.route(0, 15)


def test_torus_route_takes_the_wrap_around() -> None:
    """4x4 torus: tile 0 → tile 3 is one hop over the row wrap link (an inter_die link)."""
    chip = Chip.from_spec(wafer_spec(topology="torus"))
    route = chip.route(0, 3)
    assert route_nodes(chip, route) == ["tile:0", "tile:3"]
    assert route.latency_s == pytest.approx(INTER_LATENCY_S, rel=1e-9)
    # 0 (0,0) → 15 (3,3): wrap in both dimensions, 0 → 3 → 15.
    assert route_nodes(chip, chip.route(0, 15)) == ["tile:0", "tile:3", "tile:15"]


# ---------------------------------------------------------------------- DRAM


def test_per_tile_dram(wafer: Chip) -> None:
    assert len(wafer.dram_ports) == 16
    port = wafer.dram_ports[9]
    assert port == DramPort(9, port.channel, 9, 256e9)
    assert wafer.channels[port.channel].kind == "dram"
    assert wafer.home_dram_port(9) == 9
    assert wafer.tiles_of_port(9) == (9,)
    for write in (True, False):
        route = wafer.dram_route(9, 9, write=write)
        assert route == Route((port.channel,), DRAM_LATENCY_S)


def test_die_edge_home_ports_are_balanced_and_nearest(edge_die: Chip) -> None:
    """4 tiles per port; worked by hand in tile order (see test_routing)."""
    assert [p.tile for p in edge_die.dram_ports] == [4, 8, 7, 11]
    homes = [edge_die.home_dram_port(t) for t in range(16)]
    assert homes == [0, 0, 2, 2, 0, 0, 2, 2, 1, 1, 3, 3, 1, 1, 3, 3]
    assert edge_die.tiles_of_port(0) == (0, 1, 4, 5)
    assert edge_die.tiles_of_port(3) == (10, 11, 14, 15)


def test_die_edge_home_ports_stay_in_their_die() -> None:
    """Two 4x4 dies side by side: ports 0..3 in die 0, 4..7 in die 1; homes never cross."""
    chip = Chip.from_spec(wafer_spec((1, 2), (4, 4), placement="die_edge"))
    assert len(chip.dram_ports) == 8
    for tile in range(chip.num_tiles):
        port = chip.dram_ports[chip.home_dram_port(tile)]
        assert chip.die_of(port.tile) == chip.die_of(tile)
    assert [len(chip.tiles_of_port(p)) for p in range(8)] == [4] * 8


def test_dram_write_and_read_routes(edge_die: Chip) -> None:
    """Tile 0 (0,0) and port 0 at tile 4 (1,0): a write goes 0 → 4 then the DRAM channel; a
    read takes the DRAM channel then 4 → 0. Both cost 1 ns + 100 ns."""
    port = edge_die.dram_ports[0]
    write = edge_die.dram_route(0, 0, write=True)
    read = edge_die.dram_route(0, 0, write=False)
    assert write.channels == (*edge_die.route(0, 4).channels, port.channel)
    assert read.channels == (port.channel, *edge_die.route(4, 0).channels)
    assert edge_die.channels[write.channels[0]].name == "tile:0->tile:4"
    assert edge_die.channels[read.channels[1]].name == "tile:4->tile:0"
    for route in (write, read):
        assert route.latency_s == pytest.approx(INTRA_LATENCY_S + DRAM_LATENCY_S, rel=1e-9)


def test_dram_route_from_the_attach_tile_is_the_dram_channel_only(edge_die: Chip) -> None:
    port = edge_die.dram_ports[2]
    assert edge_die.dram_route(port.tile, 2, write=True).channels == (port.channel,)


# ---------------------------------------------------------------------- cluster


def test_cluster_geometry(cluster: Chip) -> None:
    assert cluster.num_tiles == 8
    assert cluster.tile_position(5) == (1, 1)
    assert cluster.die_of(5) == 1
    assert cluster.home_dram_port(5) == 5


def test_cluster_route_inside_a_node_crosses_nvlink_twice(cluster: Chip) -> None:
    route = cluster.route(0, 1)
    assert route_nodes(cluster, route) == ["tile:0", "switch:0", "tile:1"]
    assert [cluster.channels[c].kind for c in route.channels] == ["nvlink", "nvlink"]
    assert route.latency_s == pytest.approx(2 * NVLINK_LATENCY_S, rel=1e-9)


def test_cluster_route_across_nodes_crosses_the_nics(cluster: Chip) -> None:
    route = cluster.route(0, 5)
    assert route_nodes(cluster, route) == ["tile:0", "fabric", "tile:5"]
    assert [cluster.channels[c].kind for c in route.channels] == ["nic", "nic"]
    assert route.latency_s == pytest.approx(2 * NIC_LATENCY_S, rel=1e-9)


def test_cluster_hbm_route(cluster: Chip) -> None:
    port = cluster.dram_ports[3]
    assert port.tile == 3
    assert port.capacity_bytes == 80e9
    assert cluster.dram_route(3, 3, write=False) == Route((port.channel,), DRAM_LATENCY_S)


# ---------------------------------------------------------------------- errors


def test_unknown_topology_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"system\.topology.*known: "):
        Chip.from_spec(wafer_spec(topology="ring"))


def test_cluster_topology_cannot_serve_a_wafer() -> None:
    with pytest.raises(ConfigError, match=r"system\.topology: got .switch."):
        Chip.from_spec(wafer_spec(topology="switch"))


def test_die_edge_dram_on_two_row_dies_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"chip\.cores: got \[2, 2\]; expected at least 3 rows"):
        Chip.from_spec(wafer_spec(placement="die_edge"))


def test_tile_lists_in_messages_are_runs_of_ids():
    from palmsim.errors import tile_list

    assert tile_list([7]) == "tile 7"
    assert tile_list([3, 1]) == "tiles 1, 3"
    assert tile_list([5, 4]) == "tiles 4-5"
    # a snake order over rows of 40: sorted, it is one run
    snake = list(range(40)) + list(range(79, 39, -1))
    assert tile_list(snake) == "tiles 0-79"
    holes = [0, 1, 2, 4, 6, 8, 10, 12]
    assert tile_list(holes, most=3) == "tiles 0-2, 4, 6 and 3 more runs (8 tiles)"
