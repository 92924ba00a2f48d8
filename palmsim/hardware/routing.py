"""Pure route computation over grid coordinates and graph node names.

Nothing here knows about specs or channels: the functions take coordinates (``(row, col)``
tuples) or tile indices and return the sequence of positions or graph nodes a transfer visits.
:mod:`palmsim.hardware.chip` turns consecutive pairs of nodes into channel indices.

Routing policies (all deterministic and oblivious, i.e. independent of load):

- **mesh**: dimension-ordered XY routing. The transfer first moves along its row (the column
  index changes) to the destination column, then along that column to the destination row.
  XY routing is deadlock-free on a mesh and is the usual NoC baseline (Dally & Towles,
  *Principles and Practices of Interconnection Networks*, 2004, §14.2).
- **torus**: the same X-then-Y order, but each dimension is travelled in its shorter direction,
  using the wrap-around link when that is shorter; a tie goes in the positive direction.
- **gpu_cluster**: two GPUs of one node talk through the node's NVSwitch (GPU → switch →
  GPU, two ``nvlink`` channels); GPUs of different nodes talk through their NICs and the
  inter-node fabric (GPU → fabric → GPU, two ``nic`` channels). A switch (or fabric)
  traversal therefore counts the latency of both channels it joins: the route latency is the
  sum of the latencies of its channels.

Graph node names are defined here, so routes and the graph builders in
:mod:`palmsim.hardware.topology` agree on them: ``tile:17``, ``dram:3``, ``switch:0`` (the
NVSwitch of node 0) and ``fabric`` (the inter-node fabric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "FABRIC_NODE",
    "GridPos",
    "assign_nearest_balanced",
    "cluster_route",
    "dram_node",
    "manhattan",
    "switch_node",
    "tile_node",
    "torus_route",
    "xy_route",
]

#: A position on a grid: ``(row, col)``.
GridPos = tuple[int, int]

#: Graph node of the inter-node fabric of a GPU cluster.
FABRIC_NODE = "fabric"


def tile_node(tile: int) -> str:
    """Graph node name of tile (or GPU) ``tile``."""
    return f"tile:{tile}"


def dram_node(port: int) -> str:
    """Graph node name of DRAM port ``port``."""
    return f"dram:{port}"


def switch_node(node: int) -> str:
    """Graph node name of the NVSwitch of cluster node ``node``."""
    return f"switch:{node}"


def manhattan(a: GridPos, b: GridPos) -> int:
    """Manhattan (L1) distance between two grid positions, in hops."""
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def xy_route(src: GridPos, dst: GridPos) -> list[GridPos]:
    """Positions visited by dimension-ordered XY routing on a mesh, ``src`` and ``dst`` included.

    The route first changes the column (along the row) until it reaches ``dst``'s column, then
    changes the row. ``src == dst`` gives ``[src]`` (no hop).
    """
    row, col = src
    dst_row, dst_col = dst
    path = [(row, col)]
    col_step = 1 if dst_col > col else -1
    while col != dst_col:
        col += col_step
        path.append((row, col))
    row_step = 1 if dst_row > row else -1
    while row != dst_row:
        row += row_step
        path.append((row, col))
    return path


def _ring_positions(start: int, end: int, size: int) -> list[int]:
    """Positions after each hop from ``start`` to ``end`` on a ring of ``size``, shorter way.

    A tie (both ways equally long) goes in the positive direction.
    """
    forward = (end - start) % size
    if 2 * forward <= size:
        step, num_hops = 1, forward
    else:
        step, num_hops = -1, size - forward
    return [(start + step * (i + 1)) % size for i in range(num_hops)]


def torus_route(src: GridPos, dst: GridPos, *, num_rows: int, num_cols: int) -> list[GridPos]:
    """Positions visited by X-then-Y routing on a ``num_rows`` x ``num_cols`` torus.

    Each dimension is travelled in its shorter direction, wrapping around the grid edge when
    that is shorter; ties go in the positive direction (increasing index). ``src`` and ``dst``
    are included.
    """
    for row, col in (src, dst):
        assert 0 <= row < num_rows, (row, num_rows)
        assert 0 <= col < num_cols, (col, num_cols)
    row, col = src
    path = [(row, col)]
    for col in _ring_positions(src[1], dst[1], num_cols):
        path.append((row, col))
    col = dst[1]
    for row in _ring_positions(src[0], dst[0], num_rows):
        path.append((row, col))
    return path


def cluster_route(src_gpu: int, dst_gpu: int, *, gpus_per_node: int) -> list[str]:
    """Graph nodes visited by a transfer between two GPUs of a cluster, both GPUs included.

    Same node: ``[tile:src, switch:n, tile:dst]`` (two ``nvlink`` channels). Different nodes:
    ``[tile:src, fabric, tile:dst]`` (two ``nic`` channels). ``src == dst`` gives
    ``[tile:src]``. The fabric is non-blocking, so no fabric-internal hop is modelled.
    """
    assert gpus_per_node > 0
    if src_gpu == dst_gpu:
        return [tile_node(src_gpu)]
    src_node, dst_node = src_gpu // gpus_per_node, dst_gpu // gpus_per_node
    hub = switch_node(src_node) if src_node == dst_node else FABRIC_NODE
    return [tile_node(src_gpu), hub, tile_node(dst_gpu)]


def assign_nearest_balanced(points: Sequence[GridPos], centres: Sequence[GridPos]) -> list[int]:
    """Assign each point to a centre: nearest first, capacity-balanced, deterministic.

    Points are processed in the given order. Each goes to the centre at the smallest Manhattan
    distance among those not yet full, ties to the lowest centre index; a centre takes at most
    ``ceil(len(points) / len(centres))`` points. Used to give each tile a home DRAM port.

    Returns:
        For each point, the index (into ``centres``) of its centre.
    """
    assert centres, "need at least one centre"
    capacity = math.ceil(len(points) / len(centres))
    load = [0] * len(centres)
    chosen: list[int] = []
    for point in points:
        best = min(
            (k for k in range(len(centres)) if load[k] < capacity),
            key=lambda k: (manhattan(point, centres[k]), k),
        )
        load[best] += 1
        chosen.append(best)
    return chosen
