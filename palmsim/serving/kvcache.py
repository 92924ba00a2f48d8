"""A paged KV cache: a pool of fixed-size blocks, as vLLM's PagedAttention has it.

A request holding ``n`` tokens of KV needs ``ceil(n / block_size)`` blocks (Kwon et al.,
"Efficient Memory Management for Large Language Model Serving with PagedAttention", SOSP 2023,
Sec. 4.1). Blocks are counted, not named: without prefix caching no two requests share one.
"""

from __future__ import annotations

__all__ = ["BlockPool"]


class BlockPool:
    """The KV blocks of one replica: ``num_blocks`` blocks of ``block_size`` tokens."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_used = 0

    @property
    def num_free(self) -> int:
        """Blocks not held by any request."""
        return self.num_blocks - self.num_used

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens of one request."""
        return -(-tokens // self.block_size)

    def can_hold(self, held_blocks: int, tokens: int) -> bool:
        """Whether a request holding ``held_blocks`` can grow to ``tokens`` tokens."""
        return self.blocks_for(tokens) - held_blocks <= self.num_free

    def grow(self, held_blocks: int, tokens: int) -> int:
        """Allocate what a request needs to hold ``tokens`` tokens; returns its block count."""
        need = max(held_blocks, self.blocks_for(tokens))
        self.num_used += need - held_blocks
        assert 0 <= self.num_used <= self.num_blocks, "KV blocks over-allocated"
        return need

    def release(self, held_blocks: int) -> None:
        """Return a request's blocks to the pool."""
        self.num_used -= held_blocks
        assert self.num_used >= 0
