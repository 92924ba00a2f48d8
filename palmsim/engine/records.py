"""Record types the engine emits. Append-only; reports are pure functions of these.

All times in seconds, sizes in bytes, work in FLOP. The three record types are named tuples,
immutable like frozen dataclasses but about eight times cheaper to build positionally; a run
builds one per compute step, flow and memory change, so that cost is on the engine's hot path.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["FlowRecord", "IntervalRecord", "MemoryRecord", "RunTrace", "gc_frozen", "gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many records are built or read.

    Records are tuples of numbers and strings, which form no reference cycles, but each
    allocation counts towards a collection, and a collection scans every live container: with
    the collector on, a run spends 40 % of its time in it (W1: hundreds of thousands of
    records, and the chip and plan, scanned again and again), and building or reading W1's
    700 thousand records runs 2-3x slower. Whatever creates per-event garbage under a pause
    must free it by reference counting (no cycles), or memory grows until the pause ends. The
    previous state is restored on exit.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the cyclic collector off every object alive at entry, for the block's duration.

    Enter it while the collector is paused, right after many objects were made (a run's
    records): they go to the permanent generation without being scanned. Resuming the
    collector instead makes it scan every one of them in each generation in turn, although
    records form no cycles (W1, 1.2 million objects: about 0.3 s for generation 0, 0.4 s for
    1 and 0.6 s for the full collection due soon after, on a loaded machine). What the block
    makes is collected as usual (a figure's reference cycles). On exit the frozen objects go
    back to the oldest generation. If objects are frozen already (the caller's
    ``gc.freeze()``), it does nothing, leaving theirs alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class IntervalRecord(NamedTuple):
    """A tile was busy computing from ``start_s`` to ``end_s``.

    ``category`` is one of ``forward``, ``backward``, ``recompute``, ``optimizer``, or
    ``comm``: the tile waited in a tensor-parallel collective (arrival to completion).
    ``label`` names what ran, e.g. ``"L3.attn"``, for people: nothing parses it. The typed
    identity is in ``phase`` (a :class:`palmsim.mapping.plan.Phase` value: the pass, also of a
    ``comm`` wait), ``layer`` (transformer layer, -1 for none), ``block`` (``attn``, ``mlp``,
    ``embed``, ...; "" for none) and ``op`` (the label without layer and decode-step indices,
    e.g. ``L.attn``, what an op table groups by). ``microbatch`` is -1 where it does not apply.
    """

    tile: int
    category: str
    start_s: float
    end_s: float
    stage: int
    microbatch: int
    label: str
    flop: float
    bytes: float
    phase: str = ""
    layer: int = -1
    block: str = ""
    op: str = ""


class FlowRecord(NamedTuple):
    """One flow moved ``size_bytes`` over ``channels`` (chip channel indices).

    ``start_s`` is when it entered the network, ``end_s`` when its last byte arrived
    (drain plus path latency). ``category`` is one of ``tp_allreduce``, ``dp_allreduce``,
    ``p2p``, ``dram``. ``src``/``dst`` are tile indices, or -1 for a DRAM port end.
    """

    flow_id: int
    category: str
    src: int
    dst: int
    channels: tuple[int, ...]
    start_s: float
    end_s: float
    size_bytes: float
    stage: int
    microbatch: int


class MemoryRecord(NamedTuple):
    """Stored activation bytes (in inference: KV-cache bytes) on ``tile`` changed to
    ``activation_bytes`` at ``time_s``."""

    tile: int
    time_s: float
    activation_bytes: float


@dataclass(frozen=True, slots=True)
class RunTrace:
    """Everything one simulation run produced."""

    intervals: tuple[IntervalRecord, ...]
    flows: tuple[FlowRecord, ...]
    memory: tuple[MemoryRecord, ...]
    end_time_s: float
    num_events: int
    wall_time_s: float
    metadata: dict[str, Any] = field(default_factory=dict)
