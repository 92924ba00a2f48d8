"""Topology builders: a :class:`HardwareSpec` to the directed chip graph, registered by name.

A topology object is built from one spec and holds the machine's ``networkx.DiGraph``, its
geometry (tile positions, dies) and its routing policy. :class:`palmsim.hardware.chip.Chip`
dispatches through :data:`TOPOLOGIES`: a wafer uses ``spec.wafer.topology`` (``mesh`` or
``torus``), a GPU cluster uses ``switch`` (the file's ``system.topology`` names them all).

The graph:

- nodes carry ``kind`` (``tile``, ``dram``, ``switch`` or ``fabric``); tiles also carry ``tile``
  (index) and ``pos`` (``(row, col)``: global grid coordinates on a wafer, ``(node, local
  gpu)`` in a cluster); DRAM ports carry ``port``, ``tile`` (the tile they attach to) and
  ``capacity_bytes``;
- every edge is one channel, i.e. one direction of one link, with attributes ``channel`` (its
  index, numbered in insertion order from 0), ``kind`` (``intra_die``, ``inter_die``, ``dram``,
  ``nvlink`` or ``nic``), ``bandwidth_bytes_per_s`` and ``latency_s``;
- a DRAM port is a single edge ``dram:p -> tile:t`` whose channel carries both the reads and
  the writes of the port (one shared bandwidth, as a DRAM channel's bus is).

Channel order: the network links first (wafer: per tile in index order, its east then its south
link, each as the forward then the reverse channel; then torus wrap-around links), then the DRAM
ports in port order.

To add a topology, register a class whose constructor takes the :class:`HardwareSpec` and that
satisfies :class:`Topology`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar, Protocol

import networkx as nx

from palmsim.config.specs import HardwareSpec, LinkSpec, WaferSpec
from palmsim.errors import ConfigError
from palmsim.hardware.routing import (
    FABRIC_NODE,
    GridPos,
    assign_nearest_balanced,
    cluster_route,
    dram_node,
    switch_node,
    tile_node,
    torus_route,
    xy_route,
)
from palmsim.registry import Registry

__all__ = [
    "TOPOLOGIES",
    "GpuClusterTopology",
    "MeshTopology",
    "Topology",
    "TorusTopology",
]


class Topology(Protocol):
    """What :class:`~palmsim.hardware.chip.Chip` needs from a topology built for one spec."""

    #: The hardware kind (``HardwareSpec.kind``) this topology applies to.
    hardware_kind: ClassVar[str]
    #: The machine graph (see the module docstring for its attributes).
    graph: nx.DiGraph

    def tile_position(self, tile: int) -> GridPos:
        """``(row, col)`` of ``tile``: global grid coordinates, or ``(node, local gpu)``."""
        ...

    def die_of(self, tile: int) -> int:
        """Die (wafer) or node (cluster) index of ``tile``."""
        ...

    def tile_path(self, src_tile: int, dst_tile: int) -> list[str]:
        """Graph nodes visited from ``src_tile`` to ``dst_tile``, both included."""
        ...

    def home_dram_ports(self) -> tuple[int, ...]:
        """For each tile, in tile order, the index of its home DRAM port."""
        ...


#: Topology builders by name: a class taking a :class:`HardwareSpec`, giving a :class:`Topology`.
TOPOLOGIES: Registry[Callable[[HardwareSpec], Topology]] = Registry("topology")


def _add_channel(
    graph: nx.DiGraph,
    src: str,
    dst: str,
    *,
    kind: str,
    bandwidth_bytes_per_s: float,
    latency_s: float,
) -> None:
    """Add one channel (directed edge) ``src -> dst``, numbered after the existing ones."""
    assert not graph.has_edge(src, dst), f"duplicate channel {src}->{dst}"
    # A running count: graph.number_of_edges() sums all degrees, O(E) per call.
    index = graph.graph.get("num_channels", 0)
    graph.graph["num_channels"] = index + 1
    graph.add_edge(
        src,
        dst,
        channel=index,
        kind=kind,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        latency_s=latency_s,
    )


def _add_link(graph: nx.DiGraph, a: str, b: str, *, kind: str, link: LinkSpec) -> None:
    """Add a bidirectional link as two channels, ``a -> b`` then ``b -> a``."""
    for src, dst in ((a, b), (b, a)):
        _add_channel(
            graph,
            src,
            dst,
            kind=kind,
            bandwidth_bytes_per_s=link.bandwidth_bytes_per_s,
            latency_s=link.latency_s,
        )


def _add_dram_port(graph: nx.DiGraph, port: int, tile: int, spec: HardwareSpec) -> None:
    """Add DRAM port ``port`` attached to ``tile``: a ``dram`` node and its one channel."""
    node = dram_node(port)
    graph.add_node(node, kind="dram", port=port, tile=tile, capacity_bytes=spec.dram.capacity_bytes)
    _add_channel(
        graph,
        node,
        tile_node(tile),
        kind="dram",
        bandwidth_bytes_per_s=spec.dram.bandwidth_bytes_per_s,
        latency_s=spec.dram.latency_s,
    )


class _WaferTopology:
    """A two-level wafer (dies of tiles) with a NoC over the global tile grid.

    The global grid has ``die_rows * tile_rows`` rows and ``die_cols * tile_cols`` columns;
    tile ``r * num_cols + c`` sits at ``(r, c)`` and belongs to die
    ``(r // tile_rows) * die_cols + c // tile_cols``. Subclasses add links and route.
    """

    hardware_kind: ClassVar[str] = "wafer"

    def __init__(self, spec: HardwareSpec) -> None:
        assert spec.wafer is not None
        self.spec = spec
        self.wafer: WaferSpec = spec.wafer
        self.num_rows = self.wafer.die_rows * self.wafer.tile_rows
        self.num_cols = self.wafer.die_cols * self.wafer.tile_cols
        self.num_tiles = self.num_rows * self.num_cols
        self.graph = nx.DiGraph()
        for tile in range(self.num_tiles):
            self.graph.add_node(
                tile_node(tile), kind="tile", tile=tile, pos=self.tile_position(tile)
            )
        self._add_mesh_links()
        self._add_extra_links()
        self._port_tiles = self._dram_port_tiles()
        for port, tile in enumerate(self._port_tiles):
            _add_dram_port(self.graph, port, tile, spec)
        self._home_ports = self._assign_home_ports()

    # ------------------------------------------------------------------ geometry

    def tile_at(self, row: int, col: int) -> int:
        """Index of the tile at global grid position ``(row, col)``."""
        return row * self.num_cols + col

    def tile_position(self, tile: int) -> GridPos:
        """Global grid ``(row, col)`` of ``tile``."""
        return divmod(tile, self.num_cols)

    def die_of(self, tile: int) -> int:
        """Index of the die holding ``tile`` (dies are numbered row-major over the die grid)."""
        row, col = self.tile_position(tile)
        return (row // self.wafer.tile_rows) * self.wafer.die_cols + col // self.wafer.tile_cols

    # ------------------------------------------------------------------ links

    def _link(self, a: int, b: int) -> None:
        """Join tiles ``a`` and ``b``: ``inter_die`` if they lie in different dies.

        With ``wafer.inter_die_links = n > 0`` the dies are chips joined by ``n`` links of
        ``inter_die`` bandwidth per direction, shared evenly by the tile pairs along their
        boundary (``tile_rows`` pairs between left-right neighbours, ``tile_cols`` between
        up-down ones): each pair's channel gets ``n * bandwidth / pairs``.
        """
        w = self.wafer
        same_row = self.tile_position(a)[0] == self.tile_position(b)[0]
        if self.die_of(a) == self.die_of(b):
            kind, link = "intra_die", w.intra_die
            if (w.unit_rows, w.unit_cols) != (1, 1):
                # Units of unit_rows x unit_cols cores: left-right neighbours share an edge of
                # unit_rows core links and their centres are unit_cols core hops apart; up-down
                # neighbours the other way round (docs/architecture.md, "Granularity").
                across, hops = (
                    (w.unit_rows, w.unit_cols) if same_row else (w.unit_cols, w.unit_rows)
                )
                link = LinkSpec(link.bandwidth_bytes_per_s * across, link.latency_s * hops)
        else:
            kind, link = "inter_die", self.wafer.inter_die
            n = w.inter_die_links
            if n > 0:
                pairs = w.tile_rows if same_row else w.tile_cols
                link = LinkSpec(link.bandwidth_bytes_per_s * n / pairs, link.latency_s)
        _add_link(self.graph, tile_node(a), tile_node(b), kind=kind, link=link)

    def _add_mesh_links(self) -> None:
        """A link between every pair of 4-neighbours: per tile, its east then its south link."""
        for row in range(self.num_rows):
            for col in range(self.num_cols):
                if col + 1 < self.num_cols:
                    self._link(self.tile_at(row, col), self.tile_at(row, col + 1))
                if row + 1 < self.num_rows:
                    self._link(self.tile_at(row, col), self.tile_at(row + 1, col))

    def _add_extra_links(self) -> None:
        """Links beyond the mesh (none for a mesh)."""

    # ------------------------------------------------------------------ DRAM

    def _dram_port_tiles(self) -> list[int]:
        """The tile each DRAM port attaches to, in port order."""
        placement = self.spec.dram.placement
        if placement == "per_tile":
            return list(range(self.num_tiles))
        if placement == "positions":
            # The same die-local positions on every die, dies in index order.
            w = self.wafer
            return [
                self.tile_at(die_row * w.tile_rows + r, die_col * w.tile_cols + c)
                for die_row in range(w.die_rows)
                for die_col in range(w.die_cols)
                for r, c in self.spec.dram.positions
            ]
        if placement != "die_edge":
            raise ConfigError.single(
                self.spec.name,
                "dram.placement",
                placement,
                "'die_edge', 'per_tile' or 'positions'",
            )
        # PALM's edge DRAM: ports on the left and right edge columns of each die, at die-local
        # rows 1 .. tile_rows-2 (the corner rows carry none). A one-column die gets both
        # columns' ports on the same tiles.
        w = self.wafer
        tiles: list[int] = []
        for die_row in range(w.die_rows):
            for die_col in range(w.die_cols):
                top, left = die_row * w.tile_rows, die_col * w.tile_cols
                for local_col in (0, w.tile_cols - 1):
                    for local_row in range(1, w.tile_rows - 1):
                        tiles.append(self.tile_at(top + local_row, left + local_col))
        if not tiles:
            raise ConfigError.single(
                self.spec.name,
                "chip.cores",
                [w.tile_rows, w.tile_cols],
                "at least 3 rows of simulated tiles per chip for die_edge DRAM",
            )
        return tiles

    def _assign_home_ports(self) -> tuple[int, ...]:
        """Each tile's home DRAM port (see :meth:`home_dram_ports`)."""
        if self.spec.dram.placement == "per_tile":
            return tuple(range(self.num_tiles))
        ports_of_die: dict[int, list[int]] = {}
        for port, tile in enumerate(self._port_tiles):
            ports_of_die.setdefault(self.die_of(tile), []).append(port)
        tiles_of_die: dict[int, list[int]] = {}
        for tile in range(self.num_tiles):
            tiles_of_die.setdefault(self.die_of(tile), []).append(tile)
        all_ports = list(range(len(self._port_tiles)))
        home = [-1] * self.num_tiles
        for die, tiles in tiles_of_die.items():
            # A die without ports would fall back to the whole wafer's ports; with uniform dies
            # either every die has ports or none does (rejected above), so this is defensive.
            candidates = ports_of_die.get(die, all_ports)
            chosen = assign_nearest_balanced(
                [self.tile_position(t) for t in tiles],
                [self.tile_position(self._port_tiles[p]) for p in candidates],
            )
            for tile, k in zip(tiles, chosen, strict=True):
                home[tile] = candidates[k]
        return tuple(home)

    def home_dram_ports(self) -> tuple[int, ...]:
        """Each tile's home DRAM port, in tile order.

        ``per_tile``: the tile's own port. ``die_edge``: a port of the tile's own die, the
        nearest by Manhattan distance (ties to the lowest port index), capacity-balanced so
        that a port is home to at most ``ceil(tiles / ports)`` of the die's tiles; tiles are
        assigned in index order.
        """
        return self._home_ports

    def tile_path(self, src_tile: int, dst_tile: int) -> list[str]:
        """Graph nodes from ``src_tile`` to ``dst_tile``; subclasses define the routing."""
        raise NotImplementedError


@TOPOLOGIES.register("mesh")
class MeshTopology(_WaferTopology):
    """A 2D mesh over the global tile grid with dimension-ordered XY routing.

    Every pair of 4-neighbour tiles is joined by a link (one channel per direction); the link
    is ``inter_die`` (with ``wafer.inter_die`` bandwidth and latency) when the tiles lie in
    different dies, else ``intra_die``.
    """

    def tile_path(self, src_tile: int, dst_tile: int) -> list[str]:
        """Graph nodes visited by XY routing (columns first, then rows), both ends included."""
        path = xy_route(self.tile_position(src_tile), self.tile_position(dst_tile))
        return [tile_node(self.tile_at(r, c)) for r, c in path]


@TOPOLOGIES.register("torus")
class TorusTopology(_WaferTopology):
    """A 2D torus: the mesh plus wrap-around links per global row and per global column.

    Wrap-around links join column ``C-1`` to column 0 of each row and row ``R-1`` to row 0 of
    each column; they are ``inter_die`` when they join different dies (which they do unless the
    wafer has one die along that dimension). A wrap-around that would duplicate a mesh link
    (a dimension of 2 or fewer tiles) is skipped. Routing is X-then-Y, each dimension the
    shorter way round (ties in the positive direction).
    """

    def _add_extra_links(self) -> None:
        """Row wrap-around links (top to bottom), then column wrap-around links."""
        if self.num_cols > 2:
            for row in range(self.num_rows):
                self._link(self.tile_at(row, self.num_cols - 1), self.tile_at(row, 0))
        if self.num_rows > 2:
            for col in range(self.num_cols):
                self._link(self.tile_at(self.num_rows - 1, col), self.tile_at(0, col))

    def tile_path(self, src_tile: int, dst_tile: int) -> list[str]:
        """Graph nodes visited by shortest-direction X-then-Y torus routing, ends included."""
        path = torus_route(
            self.tile_position(src_tile),
            self.tile_position(dst_tile),
            num_rows=self.num_rows,
            num_cols=self.num_cols,
        )
        return [tile_node(self.tile_at(r, c)) for r, c in path]


@TOPOLOGIES.register("switch")
class GpuClusterTopology:
    """GPU nodes behind an NVSwitch each, joined by per-GPU NICs to a non-blocking fabric.

    Tiles are GPUs, numbered ``node * gpus_per_node + local``. Per GPU, in GPU order: an
    ``nvlink`` channel GPU -> ``switch:n`` and ``switch:n`` -> GPU (``cluster.intra_node``),
    then a ``nic`` channel GPU -> ``fabric`` and ``fabric`` -> GPU (``cluster.inter_node`` at
    ``cluster.inter_node_efficiency`` of its line rate).
    The NVSwitch is modelled as non-blocking, so a GPU's NVLink bandwidth is its only limit
    inside a node. The single ``fabric`` node models a non-blocking fat tree with full
    bisection bandwidth, like the three-level InfiniBand fat tree of NVIDIA's Selene
    (DGX SuperPOD): only the NICs at either end can be contended, and what the fabric
    delivers of their line rate under load is their measured efficiency. DRAM is each GPU's HBM, one
    port per GPU (``per_tile``).
    """

    hardware_kind: ClassVar[str] = "gpu_cluster"

    def __init__(self, spec: HardwareSpec) -> None:
        assert spec.cluster is not None
        self.spec = spec
        cluster = spec.cluster
        self.gpus_per_node = cluster.devices_per_node
        self.num_tiles = cluster.num_nodes * cluster.devices_per_node
        if spec.dram.placement != "per_tile":
            raise ConfigError.single(
                spec.name,
                "dram.placement",
                spec.dram.placement,
                "'per_tile' (HBM) for a gpu_cluster",
            )
        graph = nx.DiGraph()
        for gpu in range(self.num_tiles):
            graph.add_node(tile_node(gpu), kind="tile", tile=gpu, pos=self.tile_position(gpu))
        for node in range(cluster.num_nodes):
            graph.add_node(switch_node(node), kind="switch", node=node)
        graph.add_node(FABRIC_NODE, kind="fabric")
        # what the fabric delivers of the NIC's line rate (system.node_link.efficiency)
        nic = dataclasses.replace(
            cluster.inter_node,
            bandwidth_bytes_per_s=cluster.inter_node.bandwidth_bytes_per_s
            * cluster.inter_node_efficiency,
        )
        for gpu in range(self.num_tiles):
            switch = switch_node(self.die_of(gpu))
            _add_link(graph, tile_node(gpu), switch, kind="nvlink", link=cluster.intra_node)
            _add_link(graph, tile_node(gpu), FABRIC_NODE, kind="nic", link=nic)
        for gpu in range(self.num_tiles):
            _add_dram_port(graph, gpu, gpu, spec)
        self.graph = graph

    def tile_position(self, tile: int) -> GridPos:
        """``(node, local gpu)`` of GPU ``tile``."""
        return divmod(tile, self.gpus_per_node)

    def die_of(self, tile: int) -> int:
        """Node index of GPU ``tile``."""
        return tile // self.gpus_per_node

    def tile_path(self, src_tile: int, dst_tile: int) -> list[str]:
        """Graph nodes via the node's switch (same node) or the fabric (different nodes)."""
        return cluster_route(src_tile, dst_tile, gpus_per_node=self.gpus_per_node)

    def home_dram_ports(self) -> tuple[int, ...]:
        """Each GPU's own HBM port."""
        return tuple(range(self.num_tiles))
