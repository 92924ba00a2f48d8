"""The static description of a machine: tiles, channels, DRAM ports and routes.

``Chip.from_spec(spec)`` elaborates a :class:`HardwareSpec` into a frozen ``networkx.DiGraph``
through the topology registered for it (:data:`palmsim.hardware.topology.TOPOLOGIES`: a wafer's
``wafer.topology``, or ``switch``). Tiles are ints ``0 .. num_tiles-1`` (wafer: row-major
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
from palmsim.errors import ConfigError, ConfigProblem, MappingError
from palmsim.hardware.defects import DefectMap, resolve_defects
from palmsim.hardware.routing import GridPos, dram_node, manhattan, tile_node
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

#: Memory of a run per tile of its chip [B]. The elaborated chip alone (graph, channels and
#: DRAM ports; tracemalloc) is 4125 B a tile on dgx-a100-superpod.yaml (12.67 MB for 3072
#: GPUs) and 2922 B on the TX8 wafer; what the mapper, the summary and the figures keep per
#: tile comes on top: the peak RSS of `palmsim run` on dgx-h100.yaml with system.chips
#: [100000, 8], Llama-2-7B at TP 8, was 7.09 GB with every GPU used (DP 100,000) and 4.33 GB
#: with 32 of them, against 0.15 GB on 32 GPUs (2026-12-06, the 2-core machine): (7.09 -
#: 0.15) GB / 800,000 = 8.7 kB a tile, the figure taken.
CHIP_BYTES_PER_TILE = 8700


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
        ConfigError: naming the layout key (``system.chips``).
    """
    if spec.num_tiles > limit:
        value: object
        if spec.wafer is not None:
            key, value = "system.chips", [spec.wafer.die_rows, spec.wafer.die_cols]
        else:
            assert spec.cluster is not None
            key, value = "system.chips", [spec.cluster.num_nodes, spec.cluster.devices_per_node]
        raise ConfigError.single(
            where or spec.name,
            key,
            value,
            f"a chip of at most {limit} tiles (it has {spec.num_tiles}; at "
            f"{CHIP_BYTES_PER_TILE} B per tile a run of it would need "
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
        defects: the resolved defect map of ``spec.defects`` (empty without one).
        dead_tiles: tiles that do not work; routes never cross them.
        spare_tiles: a wafer's declared spare tiles.
        usable_tiles: the tiles a mapping may use: live regular tiles, plus live spares in
            place of their die's dead regular tiles.
    """

    __slots__ = (
        "_channel_of_edge",
        "_dead_edges",
        "_dead_nodes",
        "_default_routes",
        "_dram_channels",
        "_dram_routes",
        "_home_ports",
        "_noc_channels",
        "_routes",
        "_tiles_of_port",
        "_topology",
        "channels",
        "dead_tiles",
        "defects",
        "dram_ports",
        "graph",
        "num_tiles",
        "spare_tiles",
        "spec",
        "usable_tiles",
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
    _default_routes: dict[tuple[int, int], tuple[int, ...]]
    _dead_nodes: frozenset[str]
    _dead_edges: frozenset[tuple[str, str]]
    defects: DefectMap
    dead_tiles: frozenset[int]
    spare_tiles: frozenset[int]
    usable_tiles: tuple[int, ...]

    def __init__(self, spec: HardwareSpec, topology: Topology) -> None:
        """Build a chip from ``spec`` and the ``topology`` built for it; use :meth:`from_spec`."""
        graph = topology.graph
        defects = _resolve_defects(spec, topology)
        for pair, fraction in sorted(defects.degraded_links.items(), key=lambda x: sorted(x[0])):
            a, b = sorted(pair)
            for edge in ((tile_node(a), tile_node(b)), (tile_node(b), tile_node(a))):
                graph.edges[edge]["bandwidth_bytes_per_s"] *= fraction
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
        dead_ports = set(defects.dead_dram_ports) | {
            p.index for p in dram_ports if p.tile in defects.dead_tiles
        }
        dead_nodes = frozenset(tile_node(t) for t in defects.dead_tiles) | {
            dram_node(p) for p in dead_ports
        }
        dead_edges = frozenset(
            (u, v)
            for u, v in graph.edges
            if u in dead_nodes
            or v in dead_nodes
            or (
                graph.nodes[u]["kind"] == "tile"
                and graph.nodes[v]["kind"] == "tile"
                and frozenset((graph.nodes[u]["tile"], graph.nodes[v]["tile"]))
                in defects.dead_links
            )
        )
        home_ports = _live_home_ports(topology, dram_ports, dead_ports, defects.dead_tiles)
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
        set_(self, "_default_routes", {})
        set_(self, "defects", defects)
        set_(self, "dead_tiles", defects.dead_tiles)
        spares = _spare_tiles(spec, topology)
        set_(self, "spare_tiles", spares)
        set_(self, "usable_tiles", _usable_tiles(spec.num_tiles, topology, defects, spares))
        set_(self, "_dead_nodes", dead_nodes)
        set_(self, "_dead_edges", dead_edges)

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
                raise ConfigError.single(spec.name, "chip", ConfigError.MISSING, "a grid of cores")
            name, key = spec.wafer.topology, "system.topology"
        elif spec.kind == "gpu_cluster":
            if spec.cluster is None:
                raise ConfigError.single(
                    spec.name, "system", ConfigError.MISSING, "a grid of GPU nodes"
                )
            name, key = "switch", "system.topology"
        else:
            raise ConfigError.single(
                spec.name, "system.topology", spec.kind, "'mesh', 'torus' or 'switch'"
            )
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
        if self._dead_edges and not self._is_live(path):
            path = self._reroute(src_tile, dst_tile)
        channels = tuple(self._channel_of_edge[edge] for edge in pairwise(path))
        route = Route(channels, sum(self.channels[c].latency_s for c in channels))
        self._routes[key] = route
        return route

    def _is_live(self, path: list[str]) -> bool:
        """No dead channel and no dead node between the ends of ``path``."""
        return not any(edge in self._dead_edges for edge in pairwise(path)) and not any(
            node in self._dead_nodes for node in path[1:-1]
        )

    def _reroute(self, src_tile: int, dst_tile: int) -> list[str]:
        """A live path around the faults: the other dimension order (the reverse of the
        policy's route back, e.g. YX for XY routing) if it is live, else a shortest live path
        (fewest channels; networkx breadth-first search, deterministic).

        Raises:
            MappingError: no live path: the faults cut the machine; names the cut.
        """
        other = list(reversed(self._topology.tile_path(dst_tile, src_tile)))
        if self._is_live(other):
            return other
        live = nx.subgraph_view(
            self.graph,
            filter_node=lambda n: n not in self._dead_nodes,
            filter_edge=lambda u, v: (u, v) not in self._dead_edges,
        )
        try:
            return list(nx.shortest_path(live, tile_node(src_tile), tile_node(dst_tile)))
        except nx.NetworkXNoPath:
            side = nx.descendants(live, tile_node(src_tile)) | {tile_node(src_tile)}
            cut = sorted(
                f"{u}->{v}"
                for u, v in self.graph.edges
                if u in side and v not in side and self.graph.nodes[v]["kind"] == "tile"
            )
            live_side = sum(1 for n in side if self.graph.nodes[n]["kind"] == "tile")
            shown = ", ".join(cut[:12]) + (f" and {len(cut) - 12} more" if len(cut) > 12 else "")
            raise MappingError(
                f"the faults cut the chip in two: no live route from tile {src_tile} to tile "
                f"{dst_tile}; tile {src_tile}'s part holds {live_side} live tiles, cut off by "
                f"{len(cut)} dead channels ({shown})"
            ) from None

    def default_route(self, src_tile: int, dst_tile: int) -> tuple[int, ...]:
        """The channels the routing policy would use without defects (cached)."""
        key = (src_tile, dst_tile)
        cached = self._default_routes.get(key)
        if cached is None:
            path = self._topology.tile_path(src_tile, dst_tile)
            cached = tuple(self._channel_of_edge[edge] for edge in pairwise(path))
            self._default_routes[key] = cached
        return cached

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


def _resolve_defects(spec: HardwareSpec, topology: Topology) -> DefectMap:
    """The spec's defect map, after checking its indices against the machine.

    Raises:
        ConfigError: a tile, die, port or link that the machine does not have.
    """
    if spec.defects is None:
        return DefectMap()
    d = spec.defects
    num_tiles = spec.num_tiles
    graph = topology.graph
    num_ports = sum(1 for _, a in graph.nodes(data=True) if a["kind"] == "dram")
    where = spec.name
    problems: list[ConfigProblem] = []
    for i, t in enumerate(d.dead_tiles):
        if t >= num_tiles:
            problems.append(
                ConfigProblem(where, f"defects.dead_tiles[{i}]", t, f"a tile < {num_tiles}")
            )
    for i, die in enumerate(d.dead_dies):
        if die >= spec.num_chips:
            problems.append(
                ConfigProblem(
                    where, f"defects.dead_dies[{i}]", die, f"a die (node) < {spec.num_chips}"
                )
            )
    for i, port in enumerate(d.dead_dram_ports):
        if port >= num_ports:
            problems.append(
                ConfigProblem(where, f"defects.dead_dram_ports[{i}]", port, f"a port < {num_ports}")
            )
    links = [("dead_links", i, (a, b)) for i, (a, b) in enumerate(d.dead_links)]
    links += [("degraded_links", i, (a, b)) for i, (a, b, _) in enumerate(d.degraded_links)]
    for key, i, (a, b) in links:
        if not graph.has_edge(tile_node(a), tile_node(b)):
            problems.append(
                ConfigProblem(
                    where, f"defects.{key}[{i}]", [a, b], "two tiles joined by a link (neighbours)"
                )
            )
    if problems:
        raise ConfigError(problems)
    return resolve_defects(d, [topology.die_of(t) for t in range(num_tiles)])


def _live_home_ports(
    topology: Topology,
    dram_ports: tuple[DramPort, ...],
    dead_ports: set[int],
    dead_tiles: frozenset[int],
) -> tuple[int, ...]:
    """Each tile's home DRAM port, moved off dead ports: a tile whose port is dead takes the
    nearest live port of its die (Manhattan distance, ties to the lowest index), else the
    nearest live port of the machine.

    Raises:
        MappingError: every DRAM port is dead.
    """
    homes = list(topology.home_dram_ports())
    if not dead_ports:
        return tuple(homes)
    live = [p for p in dram_ports if p.index not in dead_ports]
    if not live:
        raise MappingError(f"every DRAM port is dead ({len(dram_ports)} ports)")
    for tile, port in enumerate(homes):
        if port not in dead_ports or tile in dead_tiles:
            continue
        pos, die = topology.tile_position(tile), topology.die_of(tile)
        same_die = [p for p in live if topology.die_of(p.tile) == die] or live
        homes[tile] = min(
            same_die, key=lambda p: (manhattan(pos, topology.tile_position(p.tile)), p.index)
        ).index
    return tuple(homes)


def _spare_tiles(spec: HardwareSpec, topology: Topology) -> frozenset[int]:
    """The spare tiles a wafer's ``defects.spare_rows``/``spare_cols`` declare: the last
    rows and columns of tiles of every die.

    Raises:
        ConfigError: spares that would leave a die without a regular tile.
    """
    d, w = spec.defects, spec.wafer
    if d is None or w is None or not (d.spare_rows or d.spare_cols):
        return frozenset()
    if d.spare_rows >= w.tile_rows or d.spare_cols >= w.tile_cols:
        raise ConfigError.single(
            spec.name,
            "defects.spare_rows" if d.spare_rows >= w.tile_rows else "defects.spare_cols",
            d.spare_rows if d.spare_rows >= w.tile_rows else d.spare_cols,
            f"fewer spares than the die's {w.tile_rows} x {w.tile_cols} tiles",
        )
    spares = set()
    for tile in range(spec.num_tiles):
        row, col = topology.tile_position(tile)
        if row % w.tile_rows >= w.tile_rows - d.spare_rows:
            spares.add(tile)
        if col % w.tile_cols >= w.tile_cols - d.spare_cols:
            spares.add(tile)
    return frozenset(spares)


def _usable_tiles(
    num_tiles: int, topology: Topology, defects: DefectMap, spares: frozenset[int]
) -> tuple[int, ...]:
    """The tiles a mapping may use: every live regular tile, plus, die by die, as many live
    spares (in tile order) as the die has dead regular tiles."""
    by_die: dict[int, list[int]] = {}
    for tile in range(num_tiles):
        by_die.setdefault(topology.die_of(tile), []).append(tile)
    usable: list[int] = []
    for tiles in by_die.values():
        regular = [t for t in tiles if t not in spares]
        live = [t for t in regular if t not in defects.dead_tiles]
        replacements = [t for t in tiles if t in spares and t not in defects.dead_tiles]
        usable += live + replacements[: len(regular) - len(live)]
    return tuple(sorted(usable))
