"""Legal but suspect mappings: one-line warnings (pure; the caller logs them).

A mapping that runs may still not be what its author meant: most of the chip idle, or pipeline
stages of unequal depth, whose deepest stage paces the whole pipeline. These are not errors
(a user may want exactly that), so they are reported, not refused.
"""

from __future__ import annotations

from palmsim.config.specs import ExperimentSpec
from palmsim.mapping.partition import partition_by_layers

__all__ = ["mapping_warnings"]


def mapping_warnings(
    experiment: ExperimentSpec, num_tiles_used: int, num_tiles: int, num_microbatches: int = 0
) -> list[str]:
    """The warnings about a feasible mapping of ``experiment`` onto a chip of ``num_tiles``
    tiles, of which the plan uses ``num_tiles_used``, running ``num_microbatches``
    micro-batches per replica (0: not known). Empty when nothing looks suspect."""
    mapping = experiment.mapping
    warnings = []
    if num_tiles_used < num_tiles:
        idle = num_tiles - num_tiles_used
        warnings.append(
            f"the mapping pp={mapping.pp} x tp={mapping.tp} x dp={mapping.dp} uses "
            f"{num_tiles_used} of {num_tiles} tiles ({100 * num_tiles_used / num_tiles:.0f} %); "
            f"{idle} stay idle (MFU and utilisations count the used tiles only)"
        )
    chunks = mapping.pp * mapping.virtual_stages
    layers = experiment.workload.model.num_hidden_layers
    even_split = mapping.partition == "layers" and mapping.pipeline_layout is None
    if even_split and chunks <= layers and layers % chunks:
        depths = [last - first for first, last in partition_by_layers(layers, chunks)]
        what = "stages" if mapping.virtual_stages == 1 else "model chunks"
        warnings.append(
            f"{chunks} {what} over {layers} layers are uneven ({max(depths)} layers on the "
            f"first {layers % chunks}, {min(depths)} on the rest): the deepest paces the "
            "pipeline (choose a divisor of the layers, or --partition cost)"
        )
    p, m = mapping.pp, num_microbatches
    if p > 1 and 0 < m < p:
        # The ideal GPipe/1F1B bubble (p-1)/(m+p-1) (Huang et al. 2019; Narayanan et al. 2021).
        warnings.append(
            f"{m} micro-batches over {p} pipeline stages: every stage idles at least "
            f"(p-1)/(m+p-1) = {100 * (p - 1) / (m + p - 1):.0f} % of the time (more "
            "micro-batches than stages shrink the bubble)"
        )
    return warnings
