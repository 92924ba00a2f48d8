"""Defect maps: which tiles, links and DRAM ports of a machine are dead or degraded (pure).

:func:`resolve_defects` turns a :class:`DefectSpec` into a concrete :class:`DefectMap`: the
listed defects plus a random draw from the spec's seed (its own ``numpy.random.Generator``,
so the same spec always gives the same map).

The random draw: with ``p = dead_tile_fraction``, a tile holds on average ``λ = -ln(1 - p)``
killer defects (so that independent Poisson defects kill a fraction ``p`` of the tiles).
Without ``clustering`` each tile dies with probability ``p``. With ``clustering`` ``α``, each
die first draws a density factor ``g ~ Gamma(α, 1/α)`` (mean 1) and its tiles then die with
probability ``1 - exp(-g·λ)``: the compound Poisson model behind the negative-binomial yield
(Stapper, IEEE Trans. Electron Devices 20(7), 1973), so dead tiles cluster on bad dies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from palmsim.config.specs import DefectSpec

__all__ = ["DefectMap", "draw_dead_tiles", "resolve_defects"]


@dataclass(frozen=True, slots=True)
class DefectMap:
    """Concrete defects: dead tiles, dead links (as unordered tile pairs), degraded links
    (tile pair -> bandwidth fraction) and dead DRAM ports."""

    dead_tiles: frozenset[int] = frozenset()
    dead_links: frozenset[frozenset[int]] = frozenset()
    degraded_links: dict[frozenset[int], float] = field(default_factory=dict)
    dead_dram_ports: frozenset[int] = frozenset()


def draw_dead_tiles(
    die_of_tile: Sequence[int], fraction: float, clustering: float | None, seed: int
) -> frozenset[int]:
    """Tiles killed by random defects (see the module docstring), deterministic in ``seed``."""
    if fraction <= 0:
        return frozenset()
    rng = np.random.default_rng(seed)
    num_tiles = len(die_of_tile)
    mean_defects = -math.log1p(-fraction)
    if clustering is None:
        dead = rng.random(num_tiles) < fraction
    else:
        num_dies = max(die_of_tile) + 1
        factor = rng.gamma(clustering, 1.0 / clustering, size=num_dies)
        p_dead = -np.expm1(-factor[np.asarray(die_of_tile)] * mean_defects)
        dead = rng.random(num_tiles) < p_dead
    return frozenset(int(t) for t in np.flatnonzero(dead))


def resolve_defects(spec: DefectSpec, die_of_tile: Sequence[int]) -> DefectMap:
    """The defect map of a machine whose tile ``t`` sits on die (or node) ``die_of_tile[t]``.

    Indices out of range are the loader's business (checked against the machine before this
    runs); here they are assertions.
    """
    num_tiles = len(die_of_tile)
    dead = set(spec.dead_tiles)
    dead |= {t for t in range(num_tiles) if die_of_tile[t] in set(spec.dead_dies)}
    dead |= draw_dead_tiles(die_of_tile, spec.dead_tile_fraction, spec.clustering, spec.seed)
    assert all(0 <= t < num_tiles for t in dead), sorted(dead)
    return DefectMap(
        dead_tiles=frozenset(dead),
        dead_links=frozenset(frozenset(pair) for pair in spec.dead_links),
        degraded_links={frozenset((a, b)): f for a, b, f in spec.degraded_links},
        dead_dram_ports=frozenset(spec.dead_dram_ports),
    )
