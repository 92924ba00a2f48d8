"""Pure SRAM/DRAM helpers: capacity checks, SRAM-first placement of data, access time."""

from __future__ import annotations

__all__ = ["access_time_s", "fits", "split_sram_dram"]

#: Relative slack of :func:`fits`, so that rounding in a sum of byte counts does not turn an
#: exact fit into an overflow.
FIT_REL_TOLERANCE = 1e-9


def fits(required_bytes: float, capacity_bytes: float) -> bool:
    """Whether ``required_bytes`` [B] fit in ``capacity_bytes`` [B] (relative slack 1e-9)."""
    assert required_bytes >= 0, required_bytes
    assert capacity_bytes >= 0, capacity_bytes
    return required_bytes <= capacity_bytes * (1.0 + FIT_REL_TOLERANCE)


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


def access_time_s(num_bytes: float, *, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """Uncontended time to move ``num_bytes`` [B] over one channel: latency + size / bandwidth [s].

    Zero bytes cost nothing (no access is made).
    """
    assert num_bytes >= 0
    if num_bytes == 0:
        return 0.0
    assert bandwidth_bytes_per_s > 0
    return latency_s + num_bytes / bandwidth_bytes_per_s
