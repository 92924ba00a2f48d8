"""Pure silicon cost models: die yield, dies per wafer, good dies and usable tiles.

All areas in m², defect densities in defects/m², lengths in m. References:

- Poisson yield ``Y = exp(-A·D0)``: defects fall independently and uniformly.
- Murphy's yield ``Y = ((1 - exp(-A·D0)) / (A·D0))²`` (B. T. Murphy, "Cost-size optima of
  monolithic integrated circuits", Proc. IEEE 52(12), 1964): a triangular spread of D0 over
  wafers.
- Negative-binomial yield ``Y = (1 + A·D0/α)^(-α)`` (C. H. Stapper, "Defect density
  distribution for LSI yield calculations", IEEE Trans. Electron Devices 20(7), 1973):
  clustered defects, α the clustering parameter (α → ∞ is Poisson; α ≈ 2 is typical).
- Gross dies per wafer ``π (d/2)² / A - π d / sqrt(2 A)`` (D. K. de Vries, "Investigation of
  gross die per wafer formulas", IEEE Trans. Semiconductor Manufacturing 18(1), 2005): the
  wafer area over the die area, less the partial dies along the edge.
"""

from __future__ import annotations

import math

__all__ = ["YIELD_FUNCTIONS", "die_yield", "gross_dies_per_wafer"]


def _poisson(area_defects: float, clustering: float) -> float:
    return math.exp(-area_defects)


def _murphy(area_defects: float, clustering: float) -> float:
    if area_defects == 0:
        return 1.0
    return ((1.0 - math.exp(-area_defects)) / area_defects) ** 2


def _negative_binomial(area_defects: float, clustering: float) -> float:
    return (1.0 + area_defects / clustering) ** (-clustering)


#: Yield model name -> function of (A·D0 [expected defects per die], clustering α).
YIELD_FUNCTIONS = {
    "poisson": _poisson,
    "murphy": _murphy,
    "negative_binomial": _negative_binomial,
}


def die_yield(
    area_m2: float, defect_density_per_m2: float, model: str, clustering: float = 2.0
) -> float:
    """Fraction of dies of ``area_m2`` without a killer defect [ratio in 0..1].

    Args:
        area_m2: the die (or tile) area [m²].
        defect_density_per_m2: killer defects per area, D0 [1/m²].
        model: ``poisson``, ``murphy`` or ``negative_binomial``.
        clustering: α of the negative-binomial model [ratio]; unused by the others.
    """
    assert area_m2 > 0 and defect_density_per_m2 >= 0 and clustering > 0
    return YIELD_FUNCTIONS[model](area_m2 * defect_density_per_m2, clustering)


def gross_dies_per_wafer(die_area_m2: float, wafer_diameter_m: float) -> int:
    """Whole dies of ``die_area_m2`` on a round wafer (de Vries 2005), at least 0."""
    assert die_area_m2 > 0 and wafer_diameter_m > 0
    d = wafer_diameter_m
    count = math.pi * (d / 2) ** 2 / die_area_m2 - math.pi * d / math.sqrt(2 * die_area_m2)
    return max(0, math.floor(count))
