"""The static description of a machine: tiles, channels, DRAM ports and routes.

``Chip.from_spec(spec)`` elaborates a :class:`HardwareSpec` into a frozen ``networkx.DiGraph``
through the topology registered for it (:data:`palmsim.hardware.topology.TOPOLOGIES`: a wafer's
``wafer.topology``, or ``gpu_cluster``). Tiles are ints ``0 .. num_tiles-1`` (wafer: row-major
over the global tile grid; cluster: ``node * gpus_per_node + local``). Every direction of every
link is its own :class:`Channel`; a DRAM port is one channel shared by its reads and writes.

A :class:`Chip` is a runtime object built fresh from a spec and never written back into it. It
is immutable after construction, except for its private per-instance route caches, which are
filled lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import networkx as nx

from palmsim.config.specs import HardwareSpec, RunSpec
from palmsim.errors import ConfigError
from palmsim.hardware.routing import GridPos, dram_node, tile_node
from palmsim.hardware.topology import TOPOLOGIES, Topology

__all__ = [
    "CHANNEL_KINDS",
    "CHIP_BYTES_PER_TILE",
    "TILE_EVENTS",
    "Channel",
    "Chip",
    "DramPort",
    "Route",
    "check_tile_count",
    "default_max_tiles",
    "max_tiles",
]

#: Memory of an elaborated chip per tile [B]: graph, channels and DRAM ports, measured with
#: tracemalloc on dgx-a100-superpod.yaml (12.67 MB for 3072 GPUs, 4125 B per tile; the TX8
#: wafer: 2922 B per tile), rounded up.
CHIP_BYTES_PER_TILE = 4200


#: Event-equivalents of elaborating one tile: its graph node, links and routes took 140 µs
#: (TX8 wafer, 320 tiles in 45 ms) to 300 µs (dgx-a100-superpod, 3072 GPUs in 0.92 s) on the
#: 2-core machine, where the engine spends 15-25 µs per event (benchmarks/README.md,
#: 2026-12-01): 300 / 15 = 20.
TILE_EVENTS = 20


def max_tiles(max_memory_bytes: float, max_events: int) -> int:
    """The most tiles a chip may have within a memory and an event budget
    (:data:`CHIP_BYTES_PER_TILE`, :data:`TILE_EVENTS`)."""
    return int(min(max_memory_bytes // CHIP_BYTES_PER_TILE, max_events // TILE_EVENTS))


def default_max_tiles() -> int:
    """The most tiles :meth:`Chip.from_spec` elaborates under the default run budgets."""
    run = RunSpec()
    return max_tiles(run.max_memory_bytes, run.max_events)


def check_tile_count(spec: HardwareSpec, limit: int, where: str | None = None) -> None:
    """Refuse a machine of more than ``limit`` tiles, before anything is allocated for it.

    Raises:
        ConfigError: naming the layout key (``wafer.die_grid`` or ``cluster.num_nodes``).
    """
    if spec.num_tiles > limit:
        value: object
        if spec.wafer is not None:
            key, value = "wafer.die_grid", [spec.wafer.die_rows, spec.wafer.die_cols]
        else:
            assert spec.cluster is not None
            key, value = "cluster.num_nodes", spec.cluster.num_nodes
        raise ConfigError.single(
            where or spec.name,
            key,
            value,
            f"a chip of at most {limit} tiles (it has {spec.num_tiles}; at "
            f"{CHIP_BYTES_PER_TILE} B per tile its graph alone would need "
            f"{spec.num_tiles * CHIP_BYTES_PER_TILE / 2**30:.3g} GiB; raise run.max_memory "
            "or run.max_events to allow more)",
        )


#: Every channel kind a chip can hold.
CHANNEL_KINDS = ("intra_die", "inter_die", "dram", "nvlink", "nic")


@dataclass(frozen=True, slots=True)
class Channel:
    """One direction of one link (or one DRAM port): a bandwidth-shared resource.

    ``src`` and ``dst`` are graph node names (``tile:17``, ``dram:3``, ``switch:0``,
    ``fabric``); ``kind`` is one of :data:`CHANNEL_KINDS`.
    """

    index: int
    kind: str
    src: str
    dst: str
    bandwidth_bytes_per_s: float
    latency_s: float

    @property
    def name(self) -> str:
        """``"src->dst"``, e.g. ``"tile:0->tile:1"``."""
        return f"{self.src}->{self.dst}"


@dataclass(frozen=True, slots=True)
class Route:
    """The channels a transfer crosses, in order, and its zero-load latency.

    ``latency_s`` is the sum of the channels' latencies [s]; an empty route has latency 0.
    """

    channels: tuple[int, ...]
    latency_s: float


@dataclass(frozen=True, slots=True)
class DramPort:
    """A DRAM port: its ``dram`` channel, the tile it attaches to and its capacity [B]."""

    index: int
    channel: int
    tile: int
    capacity_bytes: float


class Chip:
    """A machine's tiles, channels, DRAM ports and routes, built by :meth:`from_spec`.

    Attributes:
        spec: the hardware spec it was built from.
        graph: frozen ``networkx.DiGraph``; every channel is an edge with attributes
            ``channel`` (index), ``kind``, ``bandwidth_bytes_per_s`` and ``latency_s``; nodes
            carry ``kind`` (``tile``/``dram``/``switch``/``fabric``), tiles also ``tile`` and
            ``pos`` (``(row, col)``).
        channels: every channel, ``channels[i].index == i``.
        dram_ports: every DRAM port, ``dram_ports[p].index == p``.
        num_tiles: number of tiles (GPUs).
    """

    __slots__ = (
        "_channel_of_edge",
        "_dram_channels",
        "_dram_routes",
        "_home_ports",
        "_noc_channels",
        "_routes",
        "_tiles_of_port",
        "_topology",
        "channels",
        "dram_ports",
        "graph",
        "num_tiles",
        "spec",
    )

    spec: HardwareSpec
    graph: nx.DiGraph
    channels: tuple[Channel, ...]
    dram_ports: tuple[DramPort, ...]
    num_tiles: int
    _topology: Topology
    _channel_of_edge: dict[tuple[str, str], int]
    _home_ports: tuple[int, ...]
    _tiles_of_port: tuple[tuple[int, ...], ...]
    _noc_channels: tuple[int, ...]
    _dram_channels: tuple[int, ...]
    _routes: dict[tuple[int, int], Route]
    _dram_routes: dict[tuple[int, int, bool], Route]

    def __init__(self, spec: HardwareSpec, topology: Topology) -> None:
        """Build a chip from ``spec`` and the ``topology`` built for it; use :meth:`from_spec`."""
        graph = topology.graph
        edges = sorted(graph.edges(data=True), key=lambda edge: edge[2]["channel"])
        channels = tuple(
            Channel(
                index=attrs["channel"],
                kind=attrs["kind"],
                src=src,
                dst=dst,
                bandwidth_bytes_per_s=attrs["bandwidth_bytes_per_s"],
                latency_s=attrs["latency_s"],
            )
            for src, dst, attrs in edges
        )
        assert [c.index for c in channels] == list(range(len(channels))), "channel numbering"
        assert all(c.kind in CHANNEL_KINDS for c in channels)
        port_nodes = sorted(
            (attrs["port"], attrs) for _, attrs in graph.nodes(data=True) if attrs["kind"] == "dram"
        )
        dram_ports = tuple(
            DramPort(
                index=port,
                channel=graph.edges[dram_node(port), tile_node(attrs["tile"])]["channel"],
                tile=attrs["tile"],
                capacity_bytes=attrs["capacity_bytes"],
            )
            for port, attrs in port_nodes
        )
        assert [p.index for p in dram_ports] == list(range(len(dram_ports))), "port numbering"
        home_ports = topology.home_dram_ports()
        assert len(home_ports) == spec.num_tiles
        tiles_of_port: list[list[int]] = [[] for _ in dram_ports]
        for tile, port in enumerate(home_ports):
            tiles_of_port[port].append(tile)

        set_ = object.__setattr__
        set_(self, "spec", spec)
        set_(self, "graph", nx.freeze(graph))
        set_(self, "channels", channels)
        set_(self, "dram_ports", dram_ports)
        set_(self, "num_tiles", spec.num_tiles)
        set_(self, "_topology", topology)
        set_(self, "_channel_of_edge", {(c.src, c.dst): c.index for c in channels})
        set_(self, "_home_ports", home_ports)
        set_(self, "_tiles_of_port", tuple(tuple(tiles) for tiles in tiles_of_port))
        set_(self, "_noc_channels", tuple(c.index for c in channels if c.kind != "dram"))
        set_(self, "_dram_channels", tuple(c.index for c in channels if c.kind == "dram"))
        set_(self, "_routes", {})
        set_(self, "_dram_routes", {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Chip is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Chip is immutable; cannot delete {name!r}")

    def __repr__(self) -> str:
        return (
            f"Chip({self.spec.name!r}, num_tiles={self.num_tiles}, "
            f"num_channels={len(self.channels)}, num_dram_ports={len(self.dram_ports)})"
        )

    @classmethod
    def from_spec(cls, spec: HardwareSpec, *, max_tiles: int | None = None) -> Chip:
        """Elaborate ``spec`` into a chip through its registered topology.

        Args:
            spec: the hardware.
            max_tiles: refuse a chip of more tiles than this before building any graph
                (default: what :data:`CHIP_BYTES_PER_TILE` allows in the default
                ``run.max_memory``; :mod:`palmsim.guard` passes the run's own limit).

        Raises:
            ConfigError: the spec's kind, layout section, topology or DRAM placement is
                unusable, or it has more than ``max_tiles`` tiles.
        """
        check_tile_count(spec, default_max_tiles() if max_tiles is None else max_tiles)
        if spec.kind == "wafer":
            if spec.wafer is None:
                raise ConfigError.single(spec.name, "wafer", ConfigError.MISSING, "a wafer layout")
            name, key = spec.wafer.topology, "noc.topology"
        elif spec.kind == "gpu_cluster":
            if spec.cluster is None:
                raise ConfigError.single(
                    spec.name, "cluster", ConfigError.MISSING, "a cluster layout"
                )
            name, key = "gpu_cluster", "kind"
        else:
            raise ConfigError.single(spec.name, "kind", spec.kind, "'wafer' or 'gpu_cluster'")
        if name not in TOPOLOGIES:
            raise ConfigError.single(spec.name, key, name, TOPOLOGIES.unknown_message(name))
        builder = TOPOLOGIES.get(name)
        if getattr(builder, "hardware_kind", None) != spec.kind:
            raise ConfigError.single(spec.name, key, name, f"a topology for kind {spec.kind!r}")
        return cls(spec, builder(spec))

    # ------------------------------------------------------------------ geometry

    def _check_tile(self, tile: int) -> None:
        assert 0 <= tile < self.num_tiles, f"tile {tile} not in 0..{self.num_tiles - 1}"

    def tile_position(self, tile: int) -> GridPos:
        """``(row, col)`` of ``tile``: global grid coordinates (wafer) or ``(node, local gpu)``."""
        self._check_tile(tile)
        return self._topology.tile_position(tile)

    def die_of(self, tile: int) -> int:
        """Index of the die holding ``tile`` (wafer) or of its node (cluster)."""
        self._check_tile(tile)
        return self._topology.die_of(tile)

    # ------------------------------------------------------------------ channels

    def noc_channels(self) -> tuple[int, ...]:
        """Indices of every network channel (all kinds but ``dram``)."""
        return self._noc_channels

    def dram_channels(self) -> tuple[int, ...]:
        """Indices of every ``dram`` channel, in port order."""
        return self._dram_channels

    # ------------------------------------------------------------------ routes

    def route(self, src_tile: int, dst_tile: int) -> Route:
        """The route of a transfer from ``src_tile`` to ``dst_tile`` under the topology's policy.

        ``src_tile == dst_tile`` gives the empty route (latency 0). Routes are cached.
        """
        key = (src_tile, dst_tile)
        cached = self._routes.get(key)
        if cached is not None:
            return cached
        self._check_tile(src_tile)
        self._check_tile(dst_tile)
        path = self._topology.tile_path(src_tile, dst_tile)
        assert path[0] == tile_node(src_tile), path
        assert path[-1] == tile_node(dst_tile), path
        channels = tuple(self._channel_of_edge[edge] for edge in pairwise(path))
        route = Route(channels, sum(self.channels[c].latency_s for c in channels))
        self._routes[key] = route
        return route

    def dram_route(self, tile: int, port: int, *, write: bool) -> Route:
        """The route between ``tile`` and DRAM port ``port``.

        A write crosses the NoC from ``tile`` to the port's attach tile, then the port's
        ``dram`` channel; a read crosses the ``dram`` channel, then the NoC from the attach tile
        to ``tile``. When ``tile`` is the attach tile (always for ``per_tile`` DRAM) the route
        is just the ``dram`` channel. Routes are cached.
        """
        key = (tile, port, write)
        cached = self._dram_routes.get(key)
        if cached is not None:
            return cached
        assert 0 <= port < len(self.dram_ports), f"DRAM port {port} out of range"
        dram = self.dram_ports[port]
        dram_latency_s = self.channels[dram.channel].latency_s
        if write:
            noc = self.route(tile, dram.tile)
            channels = (*noc.channels, dram.channel)
        else:
            noc = self.route(dram.tile, tile)
            channels = (dram.channel, *noc.channels)
        route = Route(channels, noc.latency_s + dram_latency_s)
        self._dram_routes[key] = route
        return route

    # ------------------------------------------------------------------ DRAM homes

    def home_dram_port(self, tile: int) -> int:
        """The DRAM port that holds ``tile``'s off-tile data by default.

        ``per_tile`` DRAM (and GPU HBM): the tile's own port. ``die_edge``: a port of the
        tile's die, nearest by Manhattan distance (ties to the lowest port index) and balanced
        so that no port is home to more than ``ceil(tiles / ports)`` of the die's tiles.
        """
        self._check_tile(tile)
        return self._home_ports[tile]

    def tiles_of_port(self, port: int) -> tuple[int, ...]:
        """The tiles whose home DRAM port is ``port``, in tile order."""
        assert 0 <= port < len(self.dram_ports), f"DRAM port {port} out of range"
        return self._tiles_of_port[port]
