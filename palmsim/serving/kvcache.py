"""A paged KV cache: a pool of fixed-size blocks, as vLLM's PagedAttention has it.

A request holding ``n`` tokens of KV needs ``ceil(n / block_size)`` blocks (Kwon et al.,
"Efficient Memory Management for Large Language Model Serving with PagedAttention", SOSP 2023,
Sec. 4.1). Blocks are counted, not named: without prefix caching no two requests share one.

A model whose layers attend differently (sliding-window or chunked local layers beside full
ones) is held as vLLM V1's hybrid KV cache manager holds it
(vllm/v1/core/kv_cache_utils.py ``_get_kv_cache_groups_uniform_page_size``,
single_type_kv_cache_manager.py): the layers of each kind are split into groups of the same
number of layers (:class:`KVGroups`), a block holds ``block_size`` tokens of one group's
layers, every group keeps its own block table over the one pool, and a windowed group frees
the blocks its window has left (``remove_skipped_blocks``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BlockPool", "KVGroups", "kv_groups", "skipped_tokens"]


def skipped_tokens(computed: int, window: int | None, chunk: int | None) -> int:
    """Leading tokens a layer no longer attends to after ``computed`` tokens (vLLM's
    ``get_num_skipped_tokens``): ``computed - window + 1`` under a sliding window, the
    ``C·floor(computed / C)`` before the chunk in hand for chunks of ``C``, none for full
    attention."""
    if window is not None:
        return max(0, computed - window + 1)
    if chunk is not None:
        return computed // chunk * chunk
    return 0


@dataclass(frozen=True, slots=True)
class KVGroups:
    """The KV cache groups of a model: ``kinds`` are ``(groups, window, chunk)`` per kind of
    layer (``window`` and ``chunk`` None: full attention), each group ``layers_per_group``
    layers (the last of a kind padded to it)."""

    kinds: tuple[tuple[int, int | None, int | None], ...] = ((1, None, None),)
    layers_per_group: int = 0  # 0: every layer in one group

    @property
    def num_groups(self) -> int:
        """Block tables a request holds: one per group."""
        return sum(groups for groups, _, _ in self.kinds)

    @property
    def is_hybrid(self) -> bool:
        """Some group frees the blocks its window or chunk has left (vLLM's hybrid manager,
        or its sliding-window one where every layer is windowed)."""
        return any(w is not None or c is not None for _, w, c in self.kinds)


def kv_groups(counts: Mapping[tuple[int | None, int | None], int]) -> KVGroups:
    """vLLM V1's KV cache groups of a model with ``counts`` layers of each way of attending
    (``(window, chunk)``, in order of their first layers): one group of every layer when
    they attend alike; else the fewest layers of a kind is the group size (the most where
    that is under 1.5 times the fewest), and each kind's layers fill ``ceil(layers / size)``
    groups."""
    if len(counts) <= 1:
        window, chunk = next(iter(counts), (None, None))
        return KVGroups(((1, window, chunk),), sum(counts.values()))
    size = min(counts.values())
    if max(counts.values()) < 1.5 * size:
        size = max(counts.values())
    kinds = tuple((-(-n // size), w, c) for (w, c), n in counts.items())
    return KVGroups(kinds, size)


class BlockPool:
    """The KV blocks of one replica: ``num_blocks`` blocks of ``block_size`` tokens (of one
    group's layers, :class:`KVGroups`)."""

    def __init__(self, num_blocks: int, block_size: int, groups: KVGroups | None = None) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.groups = groups or KVGroups()
        self.num_used = 0

    @property
    def num_free(self) -> int:
        """Blocks not held by any request."""
        return self.num_blocks - self.num_used

    def blocks_for(self, tokens: int, computed: int = 0) -> int:
        """Blocks a request holds with ``tokens`` tokens allocated, ``computed`` of them
        computed: ``ceil(tokens / block_size)`` in each full group; a windowed one has freed
        the blocks wholly before its window (:func:`skipped_tokens`)."""
        size = self.block_size
        whole = -(-tokens // size)
        held = 0
        for groups, window, chunk in self.groups.kinds:
            skipped = skipped_tokens(computed, window, chunk) // size
            held += groups * (whole - min(skipped, whole))
        return held

    def peak_blocks(self, tokens: int, step_tokens: int) -> int:
        """The most blocks a request of ``tokens`` tokens ever holds, scheduled at most
        ``step_tokens`` tokens an iteration: a windowed group holds at most the blocks of its
        window and one step's tokens (two more for their ends' partial blocks)."""
        size = self.block_size
        whole = -(-tokens // size)
        peak = 0
        for groups, window, chunk in self.groups.kinds:
            span = window if window is not None else chunk
            cap = whole if span is None else -(-(span + step_tokens) // size) + 1
            peak += groups * min(whole, cap)
        return peak

    def can_hold(self, held_blocks: int, tokens: int, computed: int = 0) -> bool:
        """Whether a request holding ``held_blocks`` can grow to ``tokens`` tokens."""
        return self.blocks_for(tokens, computed) - held_blocks <= self.num_free

    def grow(self, held_blocks: int, tokens: int, computed: int = 0) -> int:
        """Allocate what a request needs to hold ``tokens`` tokens (and free what its windows
        have left); returns its block count."""
        need = self.blocks_for(tokens, computed)
        if not self.groups.is_hybrid:
            need = max(held_blocks, need)
        self.num_used += need - held_blocks
        assert 0 <= self.num_used <= self.num_blocks, "KV blocks over-allocated"
        return need

    def release(self, held_blocks: int) -> None:
        """Return a request's blocks to the pool."""
        self.num_used -= held_blocks
        assert self.num_used >= 0
