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

import math

__all__ = [
    "gemm_efficiency",
    "gemm_terms_s",
    "gemm_time_s",
    "mesh_gemm_row_reduce_s",
    "mesh_gemm_terms",
    "mesh_gemm_time_s",
    "op_time_s",
]


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


def gemm_efficiency(
    m: float, n: float, *, batch: float = 1, compute_units: int, tile_m: int, tile_n: int
) -> float:
    """Fraction of a GEMM's provisioned tile slots that hold useful output [ratio].

    A GEMM kernel cuts each of its ``batch`` outputs ``C[m, n]`` into
    ``ceil(m/tile_m)·ceil(n/tile_n)`` tiles and
    runs them on ``compute_units`` units (SMs) in waves of at most one tile per unit. The last
    row/column of tiles is partly empty (*tile quantisation*) and the last wave partly idle
    (*wave quantisation*) (NVIDIA, "Matrix Multiplication Background User's Guide", Deep
    Learning Performance docs, sections "Tile quantization" and "Wave quantization"). Useful
    work over provisioned work is then

        batch·m·n / (waves · compute_units · tile_m · tile_n),
        waves = ceil(batch · ceil(m/tile_m) · ceil(n/tile_n) / compute_units).
    """
    tiles = batch * math.ceil(m / tile_m) * math.ceil(n / tile_n)
    waves = math.ceil(tiles / compute_units)
    return (batch * m * n) / (waves * compute_units * tile_m * tile_n)


def gemm_terms_s(
    m: float,
    k: float,
    n: float,
    *,
    batch: float = 1,
    operand_bytes: float,
    peak_flop_per_s: float,
    max_efficiency: float,
    compute_units: int,
    tile_m: int,
    tile_n: int,
    memory_bandwidth_bytes_per_s: float,
    launch_latency_s: float,
) -> tuple[float, float, float]:
    """The three terms of :func:`gemm_time_s`: ``(launch_s, compute_s, memory_s)`` [s].

    ``compute_s = 2·batch·m·k·n / (peak · max_efficiency · q)`` with ``q`` from
    :func:`gemm_efficiency`, ``memory_s = operand_bytes / memory_bandwidth`` and
    ``launch_s = launch_latency_s``; the GEMM takes ``launch_s + max(compute_s, memory_s)``.
    """
    q = gemm_efficiency(
        m, n, batch=batch, compute_units=compute_units, tile_m=tile_m, tile_n=tile_n
    )
    compute_s = 2.0 * batch * m * k * n / (peak_flop_per_s * max_efficiency * q)
    memory_s = operand_bytes / memory_bandwidth_bytes_per_s
    return launch_latency_s, compute_s, memory_s


def gemm_time_s(
    m: float,
    k: float,
    n: float,
    *,
    batch: float = 1,
    operand_bytes: float,
    peak_flop_per_s: float,
    max_efficiency: float,
    compute_units: int,
    tile_m: int,
    tile_n: int,
    memory_bandwidth_bytes_per_s: float,
    launch_latency_s: float,
) -> float:
    """Time of ``batch`` GEMMs ``C[m, n] = A[m, k] @ B[k, n]`` launched as one kernel [s].

    ``launch_latency_s + max(2·batch·m·k·n / (peak · max_efficiency · q), operand_bytes /
    memory_bandwidth)``: a roofline (Williams et al. 2009) whose compute roof is lowered by
    the quantisation efficiency ``q`` of :func:`gemm_efficiency`, plus a fixed per-kernel
    launch cost. ``operand_bytes`` is what the product reads and writes, e.g.
    ``e·batch·(mk + kn + mn)`` with every operand in the compute dtype. ``max_efficiency``,
    ``tile_m``/``tile_n`` and ``launch_latency_s`` are fitted to measured GEMMs
    (:func:`palmsim.calibrate.fit_gemm`); ``compute_units`` is the GPU's SM count.
    """
    launch_s, compute_s, memory_s = gemm_terms_s(
        m,
        k,
        n,
        batch=batch,
        operand_bytes=operand_bytes,
        peak_flop_per_s=peak_flop_per_s,
        max_efficiency=max_efficiency,
        compute_units=compute_units,
        tile_m=tile_m,
        tile_n=tile_n,
        memory_bandwidth_bytes_per_s=memory_bandwidth_bytes_per_s,
        launch_latency_s=launch_latency_s,
    )
    return launch_s + max(compute_s, memory_s)


def mesh_gemm_time_s(
    m: float,
    k: float,
    n: float,
    *,
    batch: float = 1,
    mesh_rows: int,
    mesh_cols: int,
    step_s: float,
    per_k_s: float,
    per_column_s: float,
    per_mac_s: float,
) -> float:
    """Time of ``batch`` GEMMs ``C[m, n] = A[m, k] @ B[k, n]``, each a MeshGEMM over a mesh of
    ``mesh_rows x mesh_cols`` cores [s].

    MeshGEMM (He et al., WaferLLM, OSDI'25, Sec. 5.2; MeshInfra/WaferLLM
    MeshGEMM/WSE-3/src/meshgemm.csl) gives every core an ``Mt x Kt`` block of A and a
    ``Kt x Nt`` block of B and runs ``P`` steps, each multiplying the blocks in hand while
    the next arrive, ``P = max(mesh_rows, mesh_cols)`` (the square meshes WaferLLM runs;
    ``Mt = ceil(m / mesh_rows)``, ``Kt = ceil(k / P)``, ``Nt = ceil(n / mesh_cols)``). A step
    loads its registers once per row of its B block and issues one vector multiply-accumulate
    of ``Mt`` elements per element of that row:

        batch * P * (step_s + Kt * per_k_s + Kt * Nt * per_column_s + Mt * Kt * Nt * per_mac_s)
    """
    terms = mesh_gemm_terms(m, k, n, mesh_rows=mesh_rows, mesh_cols=mesh_cols)
    costs = (step_s, per_k_s, per_column_s, per_mac_s)
    return batch * sum(t * c for t, c in zip(terms, costs, strict=True))


def mesh_gemm_row_reduce_s(
    m: float,
    n: float,
    *,
    batch: float = 1,
    mesh_rows: int,
    mesh_cols: int,
    element_bytes: float,
    link_latency_s: float,
    link_bandwidth_bytes_per_s: float,
) -> float:
    """The row reductions of ``batch`` transposed MeshGEMMs ``C[m, n] = A[m, k] @ B[n, k]^T``
    over a mesh of ``mesh_rows x mesh_cols`` cores [s], on top of :func:`mesh_gemm_time_s`.

    WaferLLM computes the attention's ``Q K^T`` with K kept as stored, ``[n, k]``
    (MeshInfra/WaferLLM Prefill/WSE-2/src/prefill.csl ``matmul_T_compute``): after every one
    of its ``P`` steps each core holds a partial ``Mt x Nt`` block of one core's scores, and
    the row reduces it onto that core (``matmul_T_reduce_add`` and comm_pe.csl
    ``matmul_T_reduce_add_x``): the cores on either side pass the running sum towards the
    root, each adding its own as the elements stream through (``faddh`` from the fabric
    input to the fabric output), and the step waits for it. A chain's time is its hops at the
    core link's latency plus the block's elements behind the first, at the link's bandwidth.
    The root moves along the row step by step and is every core once (the interleaved
    layout's ``reduce_root``: 0, the odd positions, then the even ones back), so over the
    ``P`` steps the farthest core is ``max(r, P_x - 1 - r)`` hops from root ``r`` of the
    row's ``P_x = mesh_cols`` cores:

        batch * sum over r of (max(r, P_x - 1 - r) * link_latency_s)
        + batch * P * Mt * Nt * element_bytes / link_bandwidth_bytes_per_s
    """
    if link_bandwidth_bytes_per_s <= 0:
        return 0.0
    steps = max(mesh_rows, mesh_cols)
    block_bytes = math.ceil(m / mesh_rows) * math.ceil(n / mesh_cols) * element_bytes
    # sum over r in [0, P_x) of max(r, P_x - 1 - r): each half of the row counts up from the
    # middle to P_x - 1, (3 P_x^2 - 2 P_x) / 4, less 1/4 for odd P_x
    hops = (3 * mesh_cols * mesh_cols - 2 * mesh_cols - mesh_cols % 2) // 4
    per_root_s = hops * link_latency_s * steps / mesh_cols
    return batch * (per_root_s + steps * block_bytes / link_bandwidth_bytes_per_s)


def mesh_gemm_terms(
    m: float, k: float, n: float, *, mesh_rows: int, mesh_cols: int
) -> tuple[int, int, int, int]:
    """How many times one MeshGEMM (:func:`mesh_gemm_time_s`) pays each of its four costs:
    ``(P, P Kt, P Kt Nt, P Mt Kt Nt)``, its steps, register loads, vector instructions and
    multiply-accumulates."""
    steps = max(mesh_rows, mesh_cols)
    mt = math.ceil(m / mesh_rows)
    kt = math.ceil(k / steps)
    nt = math.ceil(n / mesh_cols)
    return steps, steps * kt, steps * kt * nt, steps * mt * kt * nt
