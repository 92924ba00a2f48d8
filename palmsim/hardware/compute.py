"""Pure tile cost models: how long an operation takes on one tile, in seconds.

The model is the roofline (S. Williams, A. Waterman and D. Patterson, "Roofline: an insightful
visual performance model for multicore architectures", *Communications of the ACM* 52(4), 2009):
an operation is bound either by the tile's arithmetic throughput or by the bandwidth of the
memory feeding it, whichever takes longer. Here the memory is the tile's SRAM; operands that
live in DRAM are moved by the engine as separate, contended DRAM flows.

Should a cycle-level model (e.g. a systolic array) be added, its cycle counts are converted to
seconds inside this module with the tile's frequency; no cycle count leaves it.
"""

from __future__ import annotations

__all__ = ["op_time_s"]


def op_time_s(
    flop: float,
    sram_bytes: float,
    *,
    peak_flop_per_s: float,
    efficiency: float,
    sram_bandwidth_bytes_per_s: float,
) -> float:
    """Roofline time of an operation on one tile [s].

    ``max(flop / (peak_flop_per_s * efficiency), sram_bytes / sram_bandwidth_bytes_per_s)``
    (Williams et al. 2009): compute and SRAM traffic overlap fully, and the slower one sets the
    time.

    Args:
        flop: floating-point operations of the op [FLOP].
        sram_bytes: bytes read from and written to SRAM by the op [B].
        peak_flop_per_s: the tile's peak throughput for the op's dtype [FLOP/s].
        efficiency: achievable fraction of peak, in (0, 1] [ratio].
        sram_bandwidth_bytes_per_s: SRAM read+write bandwidth [B/s]. May be 0 (a GPU whose
            caches palmsim does not model) only when ``sram_bytes`` is 0.

    Returns:
        The op's time [s].
    """
    assert flop >= 0, f"negative FLOP count {flop}"
    assert sram_bytes >= 0, f"negative byte count {sram_bytes}"
    assert peak_flop_per_s > 0, f"peak throughput must be positive, got {peak_flop_per_s}"
    assert efficiency > 0, f"efficiency must be positive, got {efficiency}"
    compute_s = flop / (peak_flop_per_s * efficiency)
    if sram_bytes == 0:
        return compute_s
    assert sram_bandwidth_bytes_per_s > 0, (
        f"{sram_bytes} B of SRAM traffic with SRAM bandwidth {sram_bandwidth_bytes_per_s} B/s"
    )
    memory_s = sram_bytes / sram_bandwidth_bytes_per_s
    return max(compute_s, memory_s)
