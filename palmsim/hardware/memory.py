"""Pure SRAM/DRAM helper: SRAM-first placement of data."""

from __future__ import annotations

__all__ = ["split_sram_dram"]


def split_sram_dram(
    demands: list[tuple[str, float]], sram_capacity_bytes: float
) -> list[tuple[str, float, float]]:
    """Place memory demands in SRAM first, in the given priority order; the rest goes to DRAM.

    Each demand ``(category, bytes)`` takes as much of the SRAM left over by the demands before
    it as it can; whatever does not fit goes to DRAM. A demand may be split between the two.

    Args:
        demands: ``(category, size_bytes)`` pairs, highest priority first [B].
        sram_capacity_bytes: SRAM available to these demands [B].

    Returns:
        ``(category, sram_bytes, dram_bytes)`` per demand, in the given order [B].
    """
    assert sram_capacity_bytes >= 0, f"negative SRAM capacity {sram_capacity_bytes}"
    free_bytes = sram_capacity_bytes
    placed: list[tuple[str, float, float]] = []
    for category, size_bytes in demands:
        assert size_bytes >= 0, f"negative demand {category}: {size_bytes}"
        in_sram = min(size_bytes, free_bytes)
        free_bytes -= in_sram
        placed.append((category, in_sram, size_bytes - in_sram))
    return placed
