"""Placement strategies: which tiles run which (replica, stage), and their ring order.

A placer orders the chip's tiles; stage replica ``(d, s)`` takes the ``tp`` consecutive tiles
at offset ``(d * pp + s) * tp`` of that order, so consecutive pipeline stages sit next to each
other. Within a stage, tiles are then put in *ring order* for the tensor-parallel collectives:
when they fill a rectangle with an even side, a Hamiltonian cycle of the mesh, so every ring
edge is one hop (the mesh-aware ring); otherwise the placement order, whose closing edge is
multi-hop (on chips joined by links its collectives then run as a line,
:mod:`palmsim.mapping.communicators`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from palmsim.errors import MappingError
from palmsim.registry import Registry

__all__ = ["PLACERS", "ChipGrid", "place", "place_rectangles", "ring_order"]


class ChipGrid(Protocol):
    """What placement needs of a chip."""

    num_tiles: int

    def tile_position(self, tile: int) -> tuple[int, int]: ...

    def die_of(self, tile: int) -> int: ...


PlacerFn = Callable[[ChipGrid], list[int]]
PLACERS: Registry[PlacerFn] = Registry("placement strategy")


def _boustrophedon(cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Order (row, col) cells row by row, alternating direction (a snake)."""
    rows: dict[int, list[tuple[int, int]]] = {}
    for cell in sorted(cells):
        rows.setdefault(cell[0], []).append(cell)
    out: list[tuple[int, int]] = []
    for i, r in enumerate(sorted(rows)):
        out.extend(rows[r] if i % 2 == 0 else reversed(rows[r]))
    return out


@PLACERS.register("snake")
def snake(chip: ChipGrid) -> list[int]:
    """Dies in snake order over the die grid, tiles in snake order within each die.

    Keeps a stage's tensor-parallel group inside one die when ``tp`` divides the die's tile
    count, and consecutive stages on neighbouring dies (PALM's stage-by-stage layout).
    """
    by_die: dict[int, list[int]] = {}
    for t in range(chip.num_tiles):
        by_die.setdefault(chip.die_of(t), []).append(t)
    die_cell = {d: _die_cell(chip, tiles) for d, tiles in by_die.items()}
    order: list[int] = []
    cell_to_die = {cell: d for d, cell in die_cell.items()}
    for cell in _boustrophedon(list(cell_to_die)):
        tiles = by_die[cell_to_die[cell]]
        pos = {chip.tile_position(t): t for t in tiles}
        order.extend(pos[c] for c in _boustrophedon(list(pos)))
    return order


def _die_cell(chip: ChipGrid, tiles: list[int]) -> tuple[int, int]:
    """A die's (row, col) in the die grid: the position of its top-left tile, scaled."""
    return min(chip.tile_position(t) for t in tiles)


@PLACERS.register("row_major")
def row_major(chip: ChipGrid) -> list[int]:
    """Tiles in raster order over the whole wafer, ignoring die boundaries.

    A stage's group then runs along a row of tiles and may straddle dies; useful as a contrast
    to ``snake`` when studying inter-die traffic.
    """
    return sorted(range(chip.num_tiles), key=chip.tile_position)


@PLACERS.register("stage_major")
def stage_major(chip: ChipGrid) -> list[int]:
    """The snake order, filled stage by stage: the replicas of one stage take consecutive
    tiles (Megatron-LM's rank order, TP fastest, then data/expert/context parallel, pipeline
    outermost), so the expert- and context-parallel groups of consecutive replicas stay on
    one node's NVLink, or one region of a wafer, and pipeline sends cross between them."""
    return snake(chip)


#: Placements whose tile order is filled stage by stage instead of replica by replica.
STAGE_MAJOR = frozenset({"stage_major"})


def ring_order(chip: ChipGrid, tiles: list[int]) -> tuple[int, ...]:
    """Order ``tiles`` as a ring with one-hop edges where the grid allows it.

    If the tiles fill an R x C rectangle with R or C even (and both > 1), return a Hamiltonian
    cycle: along the first row, snake back over columns 1.. of the remaining rows, and return
    up column 0. Otherwise keep the given order.
    """
    pos = {chip.tile_position(t): t for t in tiles}
    rows = sorted({r for r, _ in pos})
    cols = sorted({c for _, c in pos})
    is_rect = len(pos) == len(rows) * len(cols) == len(tiles)
    contiguous = rows == list(range(rows[0], rows[0] + len(rows))) and cols == list(
        range(cols[0], cols[0] + len(cols))
    )
    if not (is_rect and contiguous and len(rows) > 1 and len(cols) > 1):
        return tuple(tiles)
    transpose = len(rows) % 2 == 1
    if transpose and len(cols) % 2 == 1:
        return tuple(tiles)
    n_r, n_c = (len(cols), len(rows)) if transpose else (len(rows), len(cols))

    def at(i: int, j: int) -> int:
        return pos[(rows[j], cols[i])] if transpose else pos[(rows[i], cols[j])]

    cycle = [at(0, j) for j in range(n_c)]
    for i in range(1, n_r):
        span = range(n_c - 1, 0, -1) if i % 2 == 1 else range(1, n_c)
        cycle.extend(at(i, j) for j in span)
    cycle.extend(at(i, 0) for i in range(n_r - 1, 0, -1))
    return tuple(cycle)


def place(
    chip: ChipGrid,
    strategy: str,
    pp: int,
    tp: int,
    dp: int,
    *,
    names: str = "pp*tp*dp",
    knobs: str = "--pp, --tp and --dp (mapping.pp, tp, dp)",
) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Assign tiles: ``result[replica][stage]`` is the stage replica's tiles in ring order.

    Only a chip's ``usable_tiles`` (if it has them) are placed: dead tiles are skipped and
    spares used only in place of dead tiles, so the stage replicas take consecutive usable
    tiles of the placer's order and rings and stages close around the holes. ``names`` and
    ``knobs`` name the three degrees and their settings in the error (palmsim serve's
    replicas and serving.* keys).

    Raises:
        MappingError: the mapping needs more tiles than the chip has.
    """
    usable = _usable(chip, (pp, tp, dp), names, knobs)
    order = [t for t in PLACERS.get(strategy)(chip) if t in usable]

    def slot(d: int, s: int) -> int:
        return s * dp + d if strategy in STAGE_MAJOR else d * pp + s

    return tuple(
        tuple(ring_order(chip, order[slot(d, s) * tp : (slot(d, s) + 1) * tp]) for s in range(pp))
        for d in range(dp)
    )


def _usable(chip: ChipGrid, degrees: tuple[int, ...], names: str, knobs: str) -> set[int]:
    """The tiles placement may use; MappingError if the product of ``degrees`` (``names``,
    set by ``knobs``) is more."""
    needed = math.prod(degrees)
    # Defect-aware: dead tiles are holes the placement order skips, and spare tiles stand in
    # for dead ones only (palmsim.hardware.chip: usable_tiles).
    usable = set(getattr(chip, "usable_tiles", range(chip.num_tiles)))
    if needed > len(usable):
        note = f" (of its {chip.num_tiles}: dead or spare)" if len(usable) < chip.num_tiles else ""
        raise MappingError(
            f"mapping needs {names} = {'*'.join(map(str, degrees))} = {needed} tiles but the "
            f"chip has {len(usable)} usable tiles{note}; choose {knobs} whose product is at "
            f"most {len(usable)}"
        )
    return usable


def place_rectangles(
    chip: ChipGrid,
    strategy: str,
    tp_2d: tuple[int, int],
    dp: int,
    *,
    key: str = "mapping.tp_2d",
    replicas: tuple[str, str] = ("dp", "--dp"),
    knobs: str = "--tp and --dp (mapping.tp, dp)",
) -> tuple[tuple[tuple[int, ...]], ...]:
    """Place ``dp`` single-stage replicas of 2-D tensor parallelism ``tp_2d = (a, b)``
    (``mapping.tp_2d``) each on a rectangle of usable tiles.

    The rectangle is ``b x a`` (rows x columns); its transpose is tried when the grid holds
    too few. The grid (the bounding box of the chip's tiles) is cut into blocks of that shape
    from its top-left corner (blocks of a shape dividing a die's tiles stay inside one die);
    blocks with a dead, spare or missing tile are skipped, and replica ``d`` takes the
    ``d``-th remaining block in the order ``strategy`` gives the grid of blocks (the snake: a
    snake over the blocks, die by die). ``result[d][0]`` is the replica's tiles in rank
    order: rank ``k`` at ``(k mod a, k div a)`` of the 2-D grid, so each TPA group (``a``
    consecutive ranks) is a row of the ``b x a`` block, or a column of the ``a x b`` one,
    and each TPB group the other way (palmsim.mapping.inference). ``key``
    names the 2-D setting, ``replicas`` the replicas' name and setting and ``knobs`` the
    degrees' settings in the errors (palmsim serve's ``serving.tp_2d``, ``serving.replicas``
    and ``serving.tp``).

    Raises:
        MappingError: the chip has too few tiles, or too few whole blocks of either shape.
    """
    a, b = tp_2d
    rows, cols = b, a
    name, knob = replicas
    usable = _usable(chip, (a * b, dp), f"tp*{name}", knobs)
    tile_at = {chip.tile_position(t): t for t in range(chip.num_tiles)}
    r0, c0 = min(r for r, _ in tile_at), min(c for _, c in tile_at)
    n_rows = max(r for r, _ in tile_at) - r0 + 1
    n_cols = max(c for _, c in tile_at) - c0 + 1
    found = 0
    for h, w in dict.fromkeys(((rows, cols), (cols, rows))):
        # rank k's offset in the block: TPA groups along its rows, or down its columns
        offsets = [(k // a, k % a) if w == a else (k % a, k // a) for k in range(a * b)]
        cells = {
            (i, j): [(r0 + i * h + r, c0 + j * w + c) for r, c in offsets]
            for i in range(n_rows // h)
            for j in range(n_cols // w)
        }
        whole = {
            block: tuple(tile_at[cell] for cell in block_cells)
            for block, block_cells in cells.items()
            if all(cell in tile_at and tile_at[cell] in usable for cell in block_cells)
        }
        if len(whole) >= dp:
            # the placer's order over the grid of blocks, each block in the die of its tiles
            firsts = [block_cells[0] for block_cells in cells.values()]
            dies = [chip.die_of(tile_at[c]) if c in tile_at else -1 for c in firsts]
            blocks = _BlockGrid(list(cells), dies)
            order = [blocks.cells[k] for k in PLACERS.get(strategy)(blocks)]
            return tuple((whole[b],) for b in order if b in whole)[:dp]
        found = max(found, len(whole))
    holes = " of usable tiles" if len(usable) < chip.num_tiles else ""
    remedy = (
        f"choose {knob} at most {found}, or a tp_2d whose blocks the grid holds more of"
        if found
        else "choose a tp_2d [a, b] whose b x a block fits in the grid"
    )
    raise MappingError(
        f"{key} needs {name} = {dp} rectangles of {rows} x {cols} (or {cols} x {rows}) "
        f"tiles{holes}, one per replica, but the {n_rows} x {n_cols} grid holds {found}; "
        f"{remedy}"
    )


class _BlockGrid:
    """A grid of blocks of tiles as a :class:`ChipGrid`: block ``k`` at ``cells[k]``, in die
    ``dies[k]``, for a placer to order the blocks."""

    def __init__(self, cells: list[tuple[int, int]], dies: list[int]) -> None:
        self.cells, self.dies, self.num_tiles = cells, dies, len(cells)

    def tile_position(self, tile: int) -> tuple[int, int]:
        return self.cells[tile]

    def die_of(self, tile: int) -> int:
        return self.dies[tile]
