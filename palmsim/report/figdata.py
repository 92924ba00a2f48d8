"""The data behind each figure of a run, as pure functions of the records, chip and plan.

:mod:`palmsim.report.plots` only draws what these functions return, so tests can check every
figure's numbers against the run's records without looking at pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from palmsim.engine.records import RunTrace
from palmsim.hardware.chip import Chip
from palmsim.mapping.plan import MappingPlan
from palmsim.report.metrics import channel_bytes

__all__ = [
    "MEMORY_KINDS",
    "Cell",
    "LinkLoad",
    "StageMemory",
    "hottest_links",
    "link_loads",
    "memory_bars",
    "placement_cells",
    "tile_of_node",
]

#: The parts of a tile's memory, bottom to top of a stacked bar.
MEMORY_KINDS: tuple[str, ...] = ("weights", "gradients", "optimizer", "activations")


@dataclass(frozen=True, slots=True)
class Cell:
    """One tile of the floorplan: where it is and what the plan runs on it."""

    tile: int
    row: int
    col: int
    die: int
    stage: int  # -1: unused
    replica: int  # data-parallel replica (DP group index); -1: unused
    tp_rank: int  # rank inside its stage's tensor-parallel group; -1: unused
    dram_port: int  # DRAM port attached at this tile; -1: none


@dataclass(frozen=True, slots=True)
class LinkLoad:
    """What one channel carried over the iteration."""

    channel: int
    kind: str
    src: str
    dst: str
    carried_bytes: float
    utilization: float  # carried / (bandwidth · iteration time) [ratio]


@dataclass(frozen=True, slots=True)
class StageMemory:
    """The memory breakdown of one stage's first tile (every tile of a stage is alike)."""

    stage: int
    tile: int
    parts_bytes: dict[str, float]  # MEMORY_KINDS -> bytes
    sram_bytes: float  # the part held in SRAM
    dram_bytes: float  # the part spilled to DRAM
    sram_capacity_bytes: float
    # The tile's even share of its DRAM port: port capacity / used tiles on that port (the
    # mapper's feasibility check sums the DRAM bytes of a port's tiles against its capacity).
    dram_share_bytes: float
    # The simulated peak: weights + gradients + optimizer + the largest activation (or KV
    # cache) bytes its memory records reached, as summary.json computes it; None without
    # records (the estimate's activations assume every micro-batch the schedule keeps in
    # flight at once).
    simulated_peak_bytes: float | None = None


def tile_of_node(node: str) -> int | None:
    """``"tile:17"`` -> 17; other graph nodes (``dram:3``, ``switch:0``, ``fabric``) -> None."""
    kind, _, index = node.partition(":")
    return int(index) if kind == "tile" else None


def placement_cells(chip: Chip, plan: MappingPlan) -> list[Cell]:
    """Every tile of the chip with its grid position, die, stage, DP replica and TP rank."""
    where: dict[int, tuple[int, int, int]] = {}
    for replica, stages in enumerate(plan.stage_tiles):
        for stage, tiles in enumerate(stages):
            for rank, tile in enumerate(tiles):
                where[tile] = (stage, replica, rank)
    port_at = {port.tile: port.index for port in chip.dram_ports}
    cells = []
    for tile in range(chip.num_tiles):
        row, col = chip.tile_position(tile)
        stage, replica, rank = where.get(tile, (-1, -1, -1))
        cells.append(
            Cell(tile, row, col, chip.die_of(tile), stage, replica, rank, port_at.get(tile, -1))
        )
    return cells


def link_loads(trace: RunTrace, chip: Chip, category: str | None = None) -> list[LinkLoad]:
    """Bytes carried and utilisation of every channel (NoC, inter-die, NVLink, NIC and DRAM).

    A flow's full size crosses each channel of its route, so a channel carried the sum of the
    sizes of the flows routed over it; utilisation divides that by bandwidth × iteration time.
    ``category`` counts only the flows of that category (e.g. ``ep_alltoall``).
    """
    flows = trace.flows
    if category is not None:
        flows = flows.select(flows.isin("category", (category,)))
    carried = channel_bytes(flows, len(chip.channels))
    end_s = float(trace.end_time_s)
    loads = []
    for channel in chip.channels:
        capacity_bytes = channel.bandwidth_bytes_per_s * end_s
        used = float(carried[channel.index])
        loads.append(
            LinkLoad(
                channel.index,
                channel.kind,
                channel.src,
                channel.dst,
                used,
                used / capacity_bytes if capacity_bytes > 0 else 0.0,
            )
        )
    return loads


def hottest_links(loads: list[LinkLoad], n: int, *, by: str = "utilization") -> list[LinkLoad]:
    """The ``n`` most loaded channels by ``utilization`` or ``bytes`` (ties: lower index)."""
    assert by in ("utilization", "bytes"), by
    key = (lambda x: x.utilization) if by == "utilization" else (lambda x: x.carried_bytes)
    return sorted((x for x in loads if x.carried_bytes > 0), key=lambda x: (-key(x), x.channel))[:n]


def memory_bars(chip: Chip, plan: MappingPlan, trace: RunTrace | None = None) -> list[StageMemory]:
    """Per stage, the plan's memory breakdown of the stage's first tile (replica 0, TP rank 0),
    with the tile's SRAM capacity, its share of its DRAM port and, given the run's records,
    its simulated peak."""
    peak_activation: dict[int, float] = {}
    if trace is not None:
        memory = trace.memory
        for tile, held in zip(
            memory.column("tile").tolist(),
            memory.column("activation_bytes").tolist(),
            strict=True,
        ):
            peak_activation[tile] = max(peak_activation.get(tile, 0.0), held)
    breakdown = dict(plan.memory)
    port_of = dict(plan.dram_port_of_tile)
    tiles_on_port: dict[int, int] = {}
    for port in port_of.values():
        tiles_on_port[port] = tiles_on_port.get(port, 0) + 1
    bars = []
    for stage in range(plan.num_stages):
        tile = plan.stage_tiles[0][stage][0]
        mem = breakdown[tile]
        bars.append(
            StageMemory(
                stage,
                tile,
                {kind: float(getattr(mem, kind)) for kind in MEMORY_KINDS},
                float(mem.sram_bytes),
                float(mem.dram_bytes),
                float(chip.spec.tile.sram_capacity_bytes),
                chip.dram_ports[port_of[tile]].capacity_bytes / tiles_on_port[port_of[tile]],
                (
                    float(mem.weights + mem.gradients + mem.optimizer) + peak_activation[tile]
                    if tile in peak_activation
                    else None
                ),
            )
        )
    return bars
