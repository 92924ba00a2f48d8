"""Pure routing functions: XY mesh routes, shortest-way torus routes, cluster hops, home ports."""

from __future__ import annotations

from itertools import pairwise

import pytest

from palmsim.hardware.routing import (
    assign_nearest_balanced,
    cluster_route,
    manhattan,
    torus_route,
    xy_route,
)


def test_xy_route_moves_along_the_row_first_then_the_column() -> None:
    """(0,0) -> (2,3): three column steps along row 0, then two row steps down column 3."""
    assert xy_route((0, 0), (2, 3)) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]


def test_xy_route_in_the_negative_directions() -> None:
    """(2,3) -> (0,1): columns 3→1 on row 2, then rows 2→0 on column 1."""
    assert xy_route((2, 3), (0, 1)) == [(2, 3), (2, 2), (2, 1), (1, 1), (0, 1)]


def test_xy_route_along_one_dimension_only() -> None:
    assert xy_route((1, 1), (3, 1)) == [(1, 1), (2, 1), (3, 1)]
    assert xy_route((1, 2), (1, 0)) == [(1, 2), (1, 1), (1, 0)]


def test_xy_route_to_itself_has_no_hop() -> None:
    assert xy_route((2, 2), (2, 2)) == [(2, 2)]


@pytest.mark.parametrize(("src", "dst"), [((0, 0), (3, 3)), ((3, 1), (0, 2)), ((2, 0), (2, 3))])
def test_xy_route_is_minimal(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """An XY route has exactly the Manhattan distance in hops, each between 4-neighbours."""
    path = xy_route(src, dst)
    assert len(path) - 1 == manhattan(src, dst)
    assert all(manhattan(a, b) == 1 for a, b in pairwise(path))


def test_torus_route_wraps_when_shorter() -> None:
    """On a 4x6 torus, column 0 → 5 is one hop backwards over the wrap-around link."""
    assert torus_route((0, 0), (0, 5), num_rows=4, num_cols=6) == [(0, 0), (0, 5)]
    # Row 0 → 3 on 4 rows: forward 3, backward 1 → wrap upwards.
    assert torus_route((0, 1), (3, 1), num_rows=4, num_cols=6) == [(0, 1), (3, 1)]


def test_torus_route_goes_x_then_y_the_short_way_in_each() -> None:
    """(3,5) -> (1,1) on 5x6: columns 5→0→1 (2 hops forward, wrapping, vs 4 back), then rows
    3→2→1 (2 hops back vs 3 forward)."""
    path = torus_route((3, 5), (1, 1), num_rows=5, num_cols=6)
    assert path == [(3, 5), (3, 0), (3, 1), (2, 1), (1, 1)]


def test_torus_route_tie_goes_in_the_positive_direction() -> None:
    """Column 1 → 4 on a ring of 6: 3 hops either way; the tie goes forward (1,2,3,4)."""
    assert torus_route((0, 1), (0, 4), num_rows=1, num_cols=6) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    # Column 4 → 1: again 3 either way; forward wraps 4→5→0→1.
    assert torus_route((0, 4), (0, 1), num_rows=1, num_cols=6) == [(0, 4), (0, 5), (0, 0), (0, 1)]


def test_torus_route_on_a_two_wide_ring_uses_the_single_link() -> None:
    """With 2 columns, 1 → 0 is the one hop of the only link (no separate wrap link)."""
    assert torus_route((0, 1), (0, 0), num_rows=1, num_cols=2) == [(0, 1), (0, 0)]


def test_torus_route_to_itself_has_no_hop() -> None:
    assert torus_route((1, 1), (1, 1), num_rows=3, num_cols=3) == [(1, 1)]


def test_cluster_route_same_node_crosses_the_switch() -> None:
    assert cluster_route(1, 3, gpus_per_node=4) == ["tile:1", "switch:0", "tile:3"]
    assert cluster_route(5, 4, gpus_per_node=4) == ["tile:5", "switch:1", "tile:4"]


def test_cluster_route_other_node_crosses_the_fabric() -> None:
    assert cluster_route(3, 4, gpus_per_node=4) == ["tile:3", "fabric", "tile:4"]


def test_cluster_route_to_itself_has_no_hop() -> None:
    assert cluster_route(2, 2, gpus_per_node=4) == ["tile:2"]


def test_assign_nearest_balanced_on_a_4x4_die_with_four_edge_ports() -> None:
    """Ports at (1,0), (2,0), (1,3), (2,3): each gets 4 tiles, each tile its nearest port.

    Worked by hand in tile order: row 0 → ports 0,0,2,2; row 1 → 0,0,2,2 (port 0 and 2 are
    then full); row 2 → 1,1,3,3; row 3 → 1,1,3,3.
    """
    tiles = [(r, c) for r in range(4) for c in range(4)]
    ports = [(1, 0), (2, 0), (1, 3), (2, 3)]
    chosen = assign_nearest_balanced(tiles, ports)
    assert chosen == [0, 0, 2, 2, 0, 0, 2, 2, 1, 1, 3, 3, 1, 1, 3, 3]
    for tile, port in zip(tiles, chosen, strict=True):
        assert manhattan(tile, ports[port]) == min(manhattan(tile, p) for p in ports)


def test_assign_nearest_balanced_caps_each_centre() -> None:
    """Three points nearest to centre 0 with capacity ceil(3/2) = 2: the third spills over."""
    chosen = assign_nearest_balanced([(0, 0), (0, 1), (0, 2)], [(0, 0), (0, 9)])
    assert chosen == [0, 0, 1]


def test_assign_nearest_balanced_ties_go_to_the_lowest_index() -> None:
    assert assign_nearest_balanced([(0, 1)], [(0, 0), (0, 2)]) == [0]
