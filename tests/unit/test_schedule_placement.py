"""Schedules, partitions and ring orders against hand-derived expectations."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from palmsim.config.specs import MappingSpec
from palmsim.errors import MappingError
from palmsim.mapping.memory import inference_remedies, peak_held_bytes, training_remedies
from palmsim.mapping.partition import partition_by_cost, partition_by_layers, partition_with_ends
from palmsim.mapping.placement import place_rectangles, ring_order
from palmsim.mapping.schedule import gpipe, one_f_one_b


def test_gpipe_runs_all_forwards_then_backwards_in_reverse():
    assert gpipe(2, 3, 0) == (("F", 0), ("F", 1), ("F", 2), ("B", 2), ("B", 1), ("B", 0))


def test_1f1b_warmup_steady_cooldown():
    # p=4, m=6, stage 1: warm-up p-s-1 = 2 forwards, then F/B pairs, then 2 backwards.
    assert one_f_one_b(4, 6, 1) == (
        ("F", 0),
        ("F", 1),
        ("F", 2),
        ("B", 0),
        ("F", 3),
        ("B", 1),
        ("F", 4),
        ("B", 2),
        ("F", 5),
        ("B", 3),
        ("B", 4),
        ("B", 5),
    )
    # the last stage alternates from the start
    assert one_f_one_b(4, 2, 3) == (("F", 0), ("B", 0), ("F", 1), ("B", 1))


@pytest.mark.parametrize(("p", "m"), [(4, 8), (8, 4), (1, 3), (20, 32)])
def test_in_flight_microbatches(p, m):
    """1F1B holds at most p - s micro-batches' activations, GPipe all m (the memory pass's
    peak_held_bytes with one byte per micro-batch)."""
    for s in range(p):
        assert peak_held_bytes(one_f_one_b(p, m, s), (), [1.0]) == min(p - s, m)
        assert peak_held_bytes(gpipe(p, m, s), (), [1.0]) == m
        steps = one_f_one_b(p, m, s)
        assert sorted(steps) == sorted(gpipe(p, m, s))  # same work, different order


def test_partition_by_layers_gives_leftovers_to_first_stages():
    assert partition_by_layers(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    with pytest.raises(MappingError, match=r"pp = 5.*only 4 layers"):
        partition_by_layers(4, 5)


def test_partition_with_ends_counts_the_embedding_and_the_loss_as_layers():
    """Megatron-Core's account_for_{embedding,loss}_in_pipeline_split: L + 2 units split by
    count, the first unit the embedding and the last the loss. 126 layers on 16 x 8 = 128
    chunks (Megatron-Bridge's Llama 3.1 405B): the first chunk holds the embedding alone, the
    last the loss alone, every other one layer."""
    ranges = partition_with_ends(126, 128)
    assert ranges[0] == (0, 0) and ranges[-1] == (126, 126)
    assert ranges[1:-1] == [(i, i + 1) for i in range(126)]
    # 4 layers + 2 ends over 3 chunks: 2 units each: [emb, l0], [l1, l2], [l3, loss]
    assert partition_with_ends(4, 3) == [(0, 1), (1, 3), (3, 4)]
    with pytest.raises(MappingError, match=r"pp = 7"):  # 6 units cannot fill 7 chunks
        partition_with_ends(4, 7)


def test_partition_by_cost_moves_layers_off_a_heavy_last_stage():
    # 6 unit layers over 3 stages, head costs 2 on the last stage: total 8, so the best
    # possible max is 3, reached only with a single layer on the last stage (1 + 2).
    ranges = partition_by_cost([1.0] * 6, 3, 0.0, 2.0)
    costs = [(j - i) + (2.0 if k == 2 else 0.0) for k, (i, j) in enumerate(ranges)]
    assert max(costs) == 3.0 and ranges[-1] == (5, 6)
    assert [r[0] for r in ranges] == [0, ranges[0][1], ranges[1][1]]  # contiguous
    assert partition_by_cost([1.0] * 6, 3, 0.0, 0.0) == [(0, 2), (2, 4), (4, 6)]


@dataclass
class _Grid:
    cols: int
    num_tiles: int

    def tile_position(self, t: int) -> tuple[int, int]:
        return divmod(t, self.cols)

    def die_of(self, t: int) -> int:
        return 0


def _is_one_hop_cycle(grid: _Grid, order: tuple[int, ...]) -> bool:
    pos = [grid.tile_position(t) for t in order]
    return all(
        abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1
        for a, b in zip(pos, pos[1:] + pos[:1], strict=True)
    )


@pytest.mark.parametrize(("rows", "cols"), [(2, 2), (4, 4), (2, 3), (3, 2), (4, 6)])
def test_ring_order_is_a_one_hop_cycle_on_even_rectangles(rows, cols):
    grid = _Grid(cols, rows * cols)
    order = ring_order(grid, list(range(rows * cols)))
    assert sorted(order) == list(range(rows * cols))
    assert _is_one_hop_cycle(grid, order)


def test_ring_order_keeps_order_when_no_cycle_exists():
    grid = _Grid(3, 9)
    assert ring_order(grid, list(range(9))) == tuple(range(9))  # 3x3: odd, no cycle
    assert ring_order(grid, [0, 1, 2]) == (0, 1, 2)  # a line


def _cells(grid: _Grid, tiles: tuple[int, ...]) -> set[tuple[int, int]]:
    return {grid.tile_position(t) for t in tiles}


def test_rectangles_cut_the_grid_into_blocks_in_snake_order():
    """4 x 8 tiles in 2 x 4 blocks (tp_2d [4, 2]): the four quarters, top row of blocks left
    to right, then the bottom row right to left (the snake reaches tile 15, in the right
    block, first); each block's tiles in rank order, a row of 4 (a TPA group) after the
    other."""
    grid = _Grid(8, 32)
    blocks = [tiles for (tiles,) in place_rectangles(grid, "snake", (4, 2), 4)]
    quarter = [
        {(r, c) for r in range(r0, r0 + 2) for c in range(c0, c0 + 4)}
        for r0, c0 in ((0, 0), (0, 4), (2, 4), (2, 0))
    ]
    assert [_cells(grid, b) for b in blocks] == quarter
    assert [grid.tile_position(t) for t in blocks[1]] == [
        (r, c) for r in (0, 1) for c in range(4, 8)
    ]
    # raster order puts the bottom-left block before the bottom-right one
    raster = [tiles for (tiles,) in place_rectangles(grid, "row_major", (4, 2), 4)]
    assert [_cells(grid, b) for b in raster] == [quarter[i] for i in (0, 1, 3, 2)]


def test_rectangles_turn_when_only_the_transpose_fits_and_skip_dead_tiles():
    # tp_2d [2, 5]: 4 x 8 holds no 5 x 2 block; 2 x 5 blocks: one per row pair (8 // 5 = 1),
    # each TPA group (2 consecutive ranks) a column of its block
    grid = _Grid(8, 32)
    (only,), (other,) = place_rectangles(grid, "snake", (2, 5), 2)
    assert _cells(grid, only) == {(r, c) for r in (0, 1) for c in range(5)}
    assert [grid.tile_position(t) for t in only] == [(r, c) for c in range(5) for r in (0, 1)]
    assert _cells(grid, other) == {(r, c) for r in (2, 3) for c in range(5)}
    # a dead tile (here 9, at (1, 1)) takes its block out: the next ones are used
    holed = _Grid(8, 32)
    holed.usable_tiles = tuple(t for t in range(32) if t != 9)  # type: ignore[attr-defined]
    blocks = place_rectangles(holed, "snake", (2, 2), 7)
    assert all(9 not in tiles for (tiles,) in blocks)
    assert len({t for (tiles,) in blocks for t in tiles}) == 28
    holed.usable_tiles = tuple(t for t in range(32) if t not in (9, 27))  # type: ignore[attr-defined]
    with pytest.raises(MappingError, match=r"dp = 7 rectangles of 2 x 2 .* usable .* holds 6"):
        place_rectangles(holed, "snake", (2, 2), 7)


def test_rectangles_the_grid_cannot_hold_are_refused():
    grid = _Grid(8, 32)  # 3 x 3 blocks: one row of two; 27 tiles would fit
    with pytest.raises(MappingError, match=r"dp = 3 rectangles of 3 x 3 .* 4 x 8 grid holds 2"):
        place_rectangles(grid, "snake", (3, 3), 3)
    with pytest.raises(MappingError, match=r"holds 2; choose --dp at most 2"):
        place_rectangles(grid, "snake", (3, 3), 3)
    with pytest.raises(MappingError, match=r"grid holds 0; choose a tp_2d \[a, b\] whose b x a"):
        place_rectangles(grid, "snake", (16, 2), 1)  # 16 columns: no 4 x 8 grid holds it
    with pytest.raises(MappingError, match="needs tp\\*dp = 9\\*4 = 36 tiles"):
        place_rectangles(grid, "snake", (3, 3), 4)


def test_remedies_name_only_what_the_mapping_has_not_taken():
    """A training mapping that does not fit is told what it could still change: not more
    stages when every tile is used by one replica, not recompute when it is full, not
    smaller micro-batches at one sample; ZeRO only over data-parallel replicas; 1F1B in
    place of GPipe. With nothing left, that the training state does not fit the hardware."""
    wide = MappingSpec(pp=2, tp=4, dp=1, micro_batch_size=4, recompute="none")
    assert training_remedies(wide, 16) == (
        "use more stages/tensor parallelism, recompute (--recompute full) or smaller micro-batches"
    )
    spent = MappingSpec(pp=1, tp=8, dp=1, micro_batch_size=1, recompute="full")
    assert training_remedies(spent, 8).startswith(
        "with pp*tp*dp = 8 of the 8 tiles, full recompute and micro-batches of one sample, "
        "the model's training state does not fit this hardware"
    )
    replicated = MappingSpec(pp=1, tp=4, dp=2, micro_batch_size=1, recompute="full", zero=1)
    assert training_remedies(replicated, 8) == (
        "use more stages/tensor parallelism or a higher ZeRO stage than 1 (--zero)"
    )
    gpipe = MappingSpec(pp=2, tp=4, micro_batch_size=1, recompute="full", schedule="gpipe")
    assert training_remedies(gpipe, 8) == "use the 1F1B schedule (--schedule 1f1b)"


def test_inference_remedies_drop_more_parallelism_without_tiles_and_a_batch_of_one():
    """Llama-3-8B on an n150 (one tile, one request) is told shorter sequences or narrower
    formats; with tiles to spare and 32 requests, more parallelism and a smaller batch too."""
    formats = "narrower formats (inference.weight_dtype, inference.kv_dtype)"
    one = MappingSpec(tp=1, micro_batch_size=1)
    assert inference_remedies(one, 1, 1) == f"use shorter sequences or {formats}"
    spare = MappingSpec(tp=4, micro_batch_size=32)
    assert inference_remedies(spare, 32, 8) == (
        f"use more stages/tensor parallelism, a smaller batch, shorter sequences or {formats}"
    )
