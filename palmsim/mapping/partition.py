"""Split the transformer's layers into contiguous pipeline stages (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from palmsim.errors import MappingError
from palmsim.registry import Registry

__all__ = [
    "PARTITIONERS",
    "PartitionFn",
    "partition_by_cost",
    "partition_by_layers",
    "partition_with_ends",
]

#: ``(num_layers, num_stages, costs) -> [first, last) per stage``; ``costs()`` gives the cost of
#: one layer and the fixed costs of the first and last stage (embedding, LM head), computed
#: only by a partitioner that needs them.
PartitionFn = Callable[[int, int, Callable[[], tuple[float, float, float]]], list[tuple[int, int]]]

PARTITIONERS: Registry[PartitionFn] = Registry("partitioner")


def partition_by_layers(num_layers: int, num_stages: int) -> list[tuple[int, int]]:
    """Equal layer counts; the ``L mod p`` leftover layers go to the first stages.

    Returns ``[first, last)`` layer ranges, one per stage.
    """
    _check(num_layers, num_stages)
    base, extra = divmod(num_layers, num_stages)
    ranges, first = [], 0
    for s in range(num_stages):
        n = base + (1 if s < extra else 0)
        ranges.append((first, first + n))
        first += n
    return ranges


def partition_with_ends(num_layers: int, num_chunks: int) -> list[tuple[int, int]]:
    """Equal counts of ``num_layers + 2`` units, the embedding and the loss (LM head) each
    counted as one layer, as Megatron-Core splits a pipeline with
    ``account_for_embedding_in_pipeline_split`` and ``account_for_loss_in_pipeline_split``
    (transformer_config.py; Megatron-Bridge's Llama 3.1 405B on 16 stages of 8 chunks, 128
    chunks for 126 layers): the first chunk's embedding and the last chunk's loss take a
    layer's place, so a chunk may hold none. Leftover units go to the first chunks.

    Returns ``[first, last)`` layer ranges, one per chunk.

    Raises:
        MappingError: more chunks than ``num_layers + 2``.
    """
    units = partition_by_layers(num_layers + 2, num_chunks)
    # unit 0 is the embedding, units 1..L the layers, unit L + 1 the loss
    return [(max(a, 1) - 1, min(b, num_layers + 1) - 1) for a, b in units]


def partition_by_cost(
    layer_cost: Sequence[float], num_stages: int, first_extra: float, last_extra: float
) -> list[tuple[int, int]]:
    """Contiguous stages minimising the most expensive stage (linear partition by DP).

    ``first_extra`` and ``last_extra`` are costs fixed on the first and last stage (embedding,
    LM head). Every stage gets at least one layer. Ties go to the earlier split.
    """
    n = len(layer_cost)
    _check(n, num_stages)
    prefix = [0.0]
    for c in layer_cost:
        prefix.append(prefix[-1] + c)

    def cost(stage: int, i: int, j: int) -> float:
        extra = (first_extra if stage == 0 else 0.0) + (
            last_extra if stage == num_stages - 1 else 0.0
        )
        return prefix[j] - prefix[i] + extra

    inf = float("inf")
    # best[k][j]: minimal max-stage cost of placing layers [0, j) on stages 0..k.
    best = [[inf] * (n + 1) for _ in range(num_stages)]
    cut = [[0] * (n + 1) for _ in range(num_stages)]
    for j in range(1, n + 1):
        best[0][j] = cost(0, 0, j)
    for k in range(1, num_stages):
        for j in range(k + 1, n + 1):
            for i in range(k, j):
                value = max(best[k - 1][i], cost(k, i, j))
                if value < best[k][j]:
                    best[k][j], cut[k][j] = value, i
    ranges: list[tuple[int, int]] = []
    j = n
    for k in range(num_stages - 1, 0, -1):
        i = cut[k][j]
        ranges.append((i, j))
        j = i
    ranges.append((0, j))
    return ranges[::-1]


def _check(num_layers: int, num_stages: int) -> None:
    if num_stages > num_layers:
        raise MappingError(
            f"pp = {num_stages} pipeline stages but the model has only {num_layers} layers"
        )


@PARTITIONERS.register("layers")
def _by_layers(
    num_layers: int, num_stages: int, costs: Callable[[], tuple[float, float, float]]
) -> list[tuple[int, int]]:
    """Equal layer counts (:func:`partition_by_layers`)."""
    del costs
    return partition_by_layers(num_layers, num_stages)


@PARTITIONERS.register("cost")
def _by_cost(
    num_layers: int, num_stages: int, costs: Callable[[], tuple[float, float, float]]
) -> list[tuple[int, int]]:
    """Balanced layer costs (:func:`partition_by_cost`)."""
    layer, first_extra, last_extra = costs()
    return partition_by_cost([layer] * num_layers, num_stages, first_extra, last_extra)
