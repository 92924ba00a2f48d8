"""Fit a hardware config's achievable-performance parameters to measurements.

``palmsim calibrate FILE`` reads single-operator and collective measurements (the format of
``shared/calibration/measurements.yaml``: a case with ``columns`` and ``rows``) and fits:

- **GEMM** (columns ``M, N, K, latency_ms``): the tile shape, the maximum efficiency and the
  per-kernel launch latency of :func:`palmsim.hardware.compute.gemm_time_s`, given the GPU's
  peak, SM count and memory bandwidth.
- **Memory-bound ops** (columns ``M, N, G_elements_per_s`` or ``num_elements,
  G_elements_per_s``): the achievable memory bandwidth ``B`` and a per-kernel latency ``L`` of
  ``t = L + bytes / B``, where an element is read once and written once.
- **All-reduce** (columns ``size_bytes, time_us``): the per-step latency and the bus bandwidth
  of a ring all-reduce, ``t = 2(n-1)·α + 2(n-1)/n · S / busbw`` (NCCL's bus bandwidth,
  NVIDIA/nccl-tests doc/PERFORMANCE.md), which are what palmsim's engine charges per ring
  step and per link direction.

Every fit minimises the squared *relative* error of the predicted times, so small and large
measurements weigh alike. Fits are closed-form least squares (linear in the unknowns) or, for
the GEMM's maximum efficiency, a dense grid search; all are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from palmsim.hardware.compute import gemm_time_s

__all__ = [
    "TILE_SHAPES",
    "AllReduceFit",
    "GemmFit",
    "MemoryFit",
    "fit_allreduce",
    "fit_gemm",
    "fit_memory_bandwidth",
    "rows_of",
]

#: Output tile shapes (rows, columns) of GEMM kernels that ``fit_gemm`` tries: the CTA tiles
#: cuBLAS/CUTLASS kernels use on Ampere and Hopper (CUTLASS default tile configurations).
TILE_SHAPES: tuple[tuple[int, int], ...] = (
    (64, 64),
    (64, 128),
    (128, 64),
    (128, 128),
    (128, 256),
    (256, 128),
)

#: Grid of maximum GEMM efficiencies ``fit_gemm`` searches, in (0, 1].
_EFFICIENCY_GRID = np.linspace(0.3, 1.0, 701)


@dataclass(frozen=True)
class GemmFit:
    """Fitted GEMM parameters and the relative error of each measured row."""

    tile_m: int
    tile_n: int
    max_efficiency: float
    launch_latency_s: float
    relative_errors: tuple[float, ...]


@dataclass(frozen=True)
class MemoryFit:
    """Achievable bandwidth and latency of memory-bound kernels."""

    bandwidth_bytes_per_s: float
    latency_s: float
    relative_errors: tuple[float, ...]


@dataclass(frozen=True)
class AllReduceFit:
    """Ring all-reduce per-step latency and bus bandwidth over ``num_ranks`` ranks."""

    num_ranks: int
    step_latency_s: float
    bus_bandwidth_bytes_per_s: float
    relative_errors: tuple[float, ...]


def _latency_for(base_s: np.ndarray, measured_s: np.ndarray) -> float:
    """The L >= 0 minimising sum(((L + base) / measured - 1)^2): closed-form least squares."""
    weights = 1.0 / measured_s**2
    latency = float(np.sum((measured_s - base_s) * weights) / np.sum(weights))
    return max(0.0, latency)


def _linear_fit(x: np.ndarray, measured_s: np.ndarray) -> tuple[float, float]:
    """(a, b) >= 0 minimising sum(((a + b·x) / t - 1)^2), by weighted linear least squares."""
    design = np.column_stack([1.0 / measured_s, x / measured_s])
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(measured_s), rcond=None)
    if a < 0:  # no intercept: the best pure slope
        a, b = 0.0, float(np.sum(x / measured_s) / np.sum((x / measured_s) ** 2))
    return float(a), float(b)


def fit_gemm(
    rows: Sequence[Mapping[str, float]],
    *,
    peak_flop_per_s: float,
    compute_units: int,
    memory_bandwidth_bytes_per_s: float,
    dtype_bytes: float,
) -> GemmFit:
    """Fit tile shape, maximum efficiency and launch latency to measured GEMM times.

    Args:
        rows: each with ``M``, ``N``, ``K`` (``C[M,N] = A[M,K]·B[K,N]``) and ``latency_s``.
        peak_flop_per_s: the GPU's peak for the GEMMs' dtype [FLOP/s].
        compute_units: streaming multiprocessors (or equivalent units) [count].
        memory_bandwidth_bytes_per_s: the memory the operands stream from [B/s].
        dtype_bytes: bytes per element [B].
    """
    measured = np.array([r["latency_s"] for r in rows], dtype=np.float64)
    best: GemmFit | None = None
    best_cost = math.inf
    for tile_m, tile_n in TILE_SHAPES:
        for efficiency in _EFFICIENCY_GRID:
            base = np.array(
                [
                    gemm_time_s(
                        r["M"],
                        r["K"],
                        r["N"],
                        dtype_bytes=dtype_bytes,
                        peak_flop_per_s=peak_flop_per_s,
                        max_efficiency=float(efficiency),
                        compute_units=compute_units,
                        tile_m=tile_m,
                        tile_n=tile_n,
                        memory_bandwidth_bytes_per_s=memory_bandwidth_bytes_per_s,
                        launch_latency_s=0.0,
                    )
                    for r in rows
                ]
            )
            latency = _latency_for(base, measured)
            errors = (base + latency) / measured - 1.0
            cost = float(np.sum(errors**2))
            if cost < best_cost:
                best_cost = cost
                best = GemmFit(
                    tile_m, tile_n, float(efficiency), latency, tuple(float(e) for e in errors)
                )
    assert best is not None, "no GEMM rows"
    return best


def fit_memory_bandwidth(bytes_moved: Sequence[float], times_s: Sequence[float]) -> MemoryFit:
    """Fit ``t = L + bytes / B`` to memory-bound kernels' bytes and times."""
    x = np.asarray(bytes_moved, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    latency, inverse_bandwidth = _linear_fit(x, t)
    errors = (latency + inverse_bandwidth * x) / t - 1.0
    return MemoryFit(1.0 / inverse_bandwidth, latency, tuple(float(e) for e in errors))


def fit_allreduce(
    sizes_bytes: Sequence[float], times_s: Sequence[float], num_ranks: int
) -> AllReduceFit:
    """Fit a ring all-reduce, ``t = 2(n-1)·α + 2(n-1)/n · S / busbw``, to measured times."""
    n = num_ranks
    steps = 2 * (n - 1)
    x = np.asarray(sizes_bytes, dtype=np.float64) * steps / n
    t = np.asarray(times_s, dtype=np.float64)
    total_latency, inverse_busbw = _linear_fit(x, t)
    errors = (total_latency + inverse_busbw * x) / t - 1.0
    return AllReduceFit(
        n, total_latency / steps, 1.0 / inverse_busbw, tuple(float(e) for e in errors)
    )


def rows_of(case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A case's ``rows`` as dicts keyed by its ``columns``."""
    columns = list(case["columns"])
    return [dict(zip(columns, row, strict=True)) for row in case["rows"]]
