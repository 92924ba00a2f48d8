"""Pipeline schedules: the order in which one stage runs forward and backward passes.

A schedule is a pure function ``(num_stages, num_microbatches, stage) -> steps`` where each step
is ``("F", microbatch)`` or ``("B", microbatch)``. Dependencies between stages (a forward needs
the previous stage's activations, a backward the next stage's gradients) are enforced by the
engine, not here.

:data:`SCHEDULES` holds each schedule as an :data:`OrderFn` ``(p, m, stage, v) -> (steps,
chunks)``: ``v`` model chunks per stage, and the chunk of each step (empty: chunk 0). ``1f1b``
with ``v > 1`` is Megatron's interleaved 1F1B; a schedule that cannot interleave raises
:class:`MappingError` for ``v > 1``.
"""

from __future__ import annotations

from collections.abc import Callable

from palmsim.errors import MappingError
from palmsim.registry import Registry

__all__ = [
    "SCHEDULES",
    "OrderFn",
    "gpipe",
    "interleaved_one_f_one_b",
    "one_f_one_b",
]

Steps = tuple[tuple[str, int], ...]
OrderFn = Callable[[int, int, int, int], tuple[Steps, tuple[int, ...]]]

SCHEDULES: Registry[OrderFn] = Registry("pipeline schedule")


def gpipe(num_stages: int, num_microbatches: int, stage: int) -> tuple[tuple[str, int], ...]:
    """All forwards, then all backwards in reverse micro-batch order (Huang et al. 2019, Fig. 2c).

    Every stage holds the activations of all ``m`` micro-batches at its peak.
    """
    del num_stages, stage
    m = num_microbatches
    return tuple(("F", i) for i in range(m)) + tuple(("B", i) for i in reversed(range(m)))


def one_f_one_b(num_stages: int, num_microbatches: int, stage: int) -> tuple[tuple[str, int], ...]:
    """PipeDream-Flush 1F1B (Narayanan et al. SC21, Sec. 2.2.1).

    Stage ``s`` first runs ``min(p - s - 1, m)`` warm-up forwards, then alternates one forward
    with one backward, then drains the remaining backwards. It therefore holds at most
    ``p - s`` micro-batches of activations.
    """
    p, m, s = num_stages, num_microbatches, stage
    warmup = min(p - s - 1, m)
    steps: list[tuple[str, int]] = [("F", i) for i in range(warmup)]
    for i in range(m - warmup):
        steps.append(("F", warmup + i))
        steps.append(("B", i))
    steps.extend(("B", i) for i in range(m - warmup, m))
    return tuple(steps)


def interleaved_one_f_one_b(
    num_stages: int, num_microbatches: int, stage: int, num_chunks: int
) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    """Megatron-LM's interleaved 1F1B with ``v = num_chunks`` model chunks per stage.

    Narayanan et al. SC21, Sec. 2.2.2, as implemented in Megatron-LM
    (``forward_backward_pipelining_with_interleaving``): the ``m·v`` virtual micro-batches
    ``k`` run micro-batch ``(k // (p·v))·p + k % p`` on chunk ``(k % (p·v)) // p`` (backwards
    walk the chunks in reverse); stage ``s`` warms up with ``2(p - s - 1) + (v - 1)·p``
    forwards (all of them when ``m = p``), then alternates, then drains. The pipeline bubble
    shrinks to ``(p - 1)/v`` slots of one micro-batch.

    Returns:
        The steps ``(phase, micro-batch)`` and, for each, its model chunk ``0 .. v-1``; chunk
        ``j`` of stage ``s`` is virtual stage ``j·p + s``. ``m`` must be a multiple of ``p``.
    """
    p, m, v, s = num_stages, num_microbatches, num_chunks, stage
    assert m % p == 0, f"interleaving needs micro-batches ({m}) divisible by stages ({p})"
    total = m * v
    warmup = total if m == p else min(2 * (p - s - 1) + (v - 1) * p, total)

    def microbatch(k: int) -> int:
        return (k // (p * v)) * p + k % p

    def chunk(k: int, forward: bool) -> int:
        c = (k % (p * v)) // p
        return c if forward else v - 1 - c

    steps: list[tuple[str, int]] = []
    chunks: list[int] = []

    def run(phase: str, k: int) -> None:
        steps.append((phase, microbatch(k)))
        chunks.append(chunk(k, phase == "F"))

    for k in range(warmup):
        run("F", k)
    for i in range(total - warmup):
        run("F", warmup + i)
        run("B", i)
    for k in range(total - warmup, total):
        run("B", k)
    return tuple(steps), tuple(chunks)


@SCHEDULES.register("gpipe")
def _gpipe_order(p: int, m: int, stage: int, v: int) -> tuple[Steps, tuple[int, ...]]:
    """GPipe; it has no interleaved form."""
    if v > 1:
        raise MappingError(f"virtual_stages={v}: interleaved 1F1B needs the 1f1b schedule")
    return gpipe(p, m, stage), ()


@SCHEDULES.register("1f1b")
def _one_f_one_b_order(p: int, m: int, stage: int, v: int) -> tuple[Steps, tuple[int, ...]]:
    """1F1B, interleaved over ``v`` model chunks when ``v > 1``."""
    if v == 1:
        return one_f_one_b(p, m, stage), ()
    if m % p:
        raise MappingError(
            f"virtual_stages={v}: interleaved 1F1B needs micro-batches ({m}) divisible by "
            f"pipeline stages ({p})"
        )
    return interleaved_one_f_one_b(p, m, stage, v)
