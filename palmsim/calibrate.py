"""Fit a hardware config's achievable-performance parameters to measurements.

``palmsim calibrate FILE`` reads single-operator and collective measurements (the format of
``validation/measurements.yaml``: a case with ``columns`` and ``rows``) and fits:

- **GEMM** (columns ``M, N, K, latency_ms``): the tile shape, the maximum efficiency and the
  per-kernel launch latency of :func:`palmsim.hardware.compute.gemm_time_s`, given the GPU's
  peak, SM count and memory bandwidth.
- **Memory-bound ops** (columns ``M, N, G_elements_per_s`` or ``num_elements,
  G_elements_per_s``): the achievable memory bandwidth ``B`` and a per-kernel latency ``L`` of
  ``t = L + bytes / B``, where an element is read once and written once. Cases named without
  a kind are fitted together into the default (``memory_ops.bandwidth``), which is also the
  streaming bandwidth that bounds memory-bound GEMMs; a case named ``KIND=CASE`` (e.g.
  ``softmax=llmcompass_a100_softmax_fp16``) is fitted on its own into that kind's entry
  (:data:`palmsim.config.specs.MEMORY_OP_KINDS`), since kernels of different kinds reach
  different bandwidths (a softmax makes more passes per row than a layernorm).
- **All-reduce** (columns ``size_bytes, time_us``): the per-step latency and the bus bandwidth
  of a ring all-reduce, ``t = 2(n-1)·α + 2(n-1)/n · S / busbw`` (NCCL's bus bandwidth,
  NVIDIA/nccl-tests doc/PERFORMANCE.md), which are what palmsim's engine charges per ring
  step and per link direction.

Every fit minimises the squared *relative* error of the predicted times, so small and large
measurements weigh alike. Fits are closed-form least squares (linear in the unknowns) or, for
the GEMM's maximum efficiency, a dense grid search; all are deterministic.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from palmsim.config.loader import read_config_file
from palmsim.config.specs import DTYPE_BYTES, MEMORY_OP_KINDS, HardwareSpec
from palmsim.errors import ConfigError, ConfigProblem
from palmsim.hardware.compute import gemm_time_s
from palmsim.units import format_quantity

__all__ = [
    "TILE_SHAPES",
    "AllReduceFit",
    "Calibration",
    "GemmFit",
    "MemoryFit",
    "calibrate",
    "fit_allreduce",
    "fit_gemm",
    "fit_memory_bandwidth",
    "format_calibration",
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
    max_efficiency: float | None = None,
) -> GemmFit:
    """Fit tile shape, maximum efficiency and launch latency to measured GEMM times.

    With ``max_efficiency`` given (e.g. a sustained best-case matmul rate over peak, measured
    elsewhere) only the tile shape and the launch latency are fitted.

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
        for efficiency in _EFFICIENCY_GRID if max_efficiency is None else (max_efficiency,):
            base = np.array(
                [
                    gemm_time_s(
                        r["M"],
                        r["K"],
                        r["N"],
                        operand_bytes=dtype_bytes
                        * (r["M"] * r["K"] + r["K"] * r["N"] + r["M"] * r["N"]),
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


@dataclass(frozen=True)
class Calibration:
    """The fits ``palmsim calibrate`` made, each with the case it came from."""

    gemm: tuple[str, GemmFit, int] | None  # (case id, fit, compute units)
    memory: tuple[tuple[str, ...], MemoryFit] | None
    allreduce: tuple[str, AllReduceFit] | None
    #: (kind, case id, fit) of each memory-bound kernel kind fitted on its own.
    memory_kinds: tuple[tuple[str, str, MemoryFit], ...] = ()


def _cases_by_id(path: str) -> dict[str, Mapping[str, Any]]:
    raw = read_config_file(path)
    cases = raw.get("cases")
    if not isinstance(cases, list):
        raise ConfigError.single(path, "cases", cases, "a list of measurement cases")
    return {str(c.get("id")): c for c in cases if isinstance(c, Mapping)}


def _case(cases: Mapping[str, Mapping[str, Any]], case_id: str, path: str, columns: set[str]):
    if case_id not in cases:
        close = difflib.get_close_matches(case_id, list(cases), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError.single(path, "cases[].id", case_id, f"a case id of the file{hint}")
    case = cases[case_id]
    given = case.get("columns")
    if not isinstance(given, list) or not all(isinstance(c, str) for c in given):
        raise ConfigError.single(path, f"{case_id}.columns", given, "a list of column names")
    have = set(given)
    if not columns <= have:
        raise ConfigError.single(
            path,
            f"{case_id}.columns",
            sorted(have),
            f"columns including {', '.join(sorted(columns))}",
        )
    rows = case.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ConfigError.single(path, f"{case_id}.rows", rows, "a non-empty list of rows")
    needed = [given.index(c) for c in sorted(columns)]
    expected = (
        f"a row of {len(given)} values ({', '.join(given)}), positive numbers in "
        + ", ".join(sorted(columns))
    )
    problems = [
        ConfigProblem(path, f"{case_id}.rows[{i}]", row, expected)
        for i, row in enumerate(rows)
        if not isinstance(row, list)
        or len(row) != len(given)
        or not all(_is_number(row[j]) for j in needed)
    ]
    if problems:
        raise ConfigError(problems)
    return case


def _is_number(value: Any) -> bool:
    """A finite positive int or float (not a bool): every measured column is a size, a time
    or a rate."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < 1e300
    )


def _check_options(
    *,
    dtype: str,
    compute_units: int | None,
    allreduce_ranks: int | None,
    allreduce_min_bytes: float,
    gemm_max_efficiency: float | None,
) -> None:
    """Raise a ConfigError naming the first of :func:`calibrate`'s options (the command
    line's) out of its range; ``None`` is an option not given."""
    if dtype not in DTYPE_BYTES:
        close = difflib.get_close_matches(dtype.lower(), list(DTYPE_BYTES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError.single(
            "command line", "--dtype", dtype, f"one of {', '.join(DTYPE_BYTES)}{hint}"
        )
    checks = [
        ("--compute-units", compute_units, "a positive number of SMs", lambda v: v >= 1),
        ("--ranks", allreduce_ranks, "2 or more GPUs", lambda v: v >= 2),
        ("--min-bytes", allreduce_min_bytes, "a size >= 0 [B]", lambda v: 0 <= v < math.inf),
        ("--gemm-max-efficiency", gemm_max_efficiency, "a ratio in (0, 1]", lambda v: 0 < v <= 1),
    ]
    for option, value, expected, valid in checks:
        if value is not None and not valid(value):
            raise ConfigError.single("command line", option, value, expected)


def calibrate(
    path: str,
    hardware: HardwareSpec,
    *,
    dtype: str = "fp16",
    gemm_case: str | None = None,
    compute_units: int | None = None,
    memory_cases: Sequence[str] = (),
    allreduce_case: str | None = None,
    allreduce_ranks: int | None = None,
    allreduce_min_bytes: float = 0.0,
    gemm_max_efficiency: float | None = None,
) -> Calibration:
    """Fit the parameters of ``hardware``'s GPU to the named cases of a measurements file.

    Args:
        path: the measurements file.
        hardware: the config being calibrated: its peak for ``dtype`` and its DRAM (HBM)
            bandwidth enter the GEMM model.
        dtype: the measurements' element type (peak and bytes per element).
        gemm_case: a case with columns ``M, N, K, latency_ms``.
        compute_units: the GPU's SMs; default ``tile.gemm.compute_units`` of ``hardware``.
        memory_cases: cases with ``G_elements_per_s`` and ``num_elements`` or ``M, N``; each
            element is read once and written once. ``CASE`` entries are fitted together into
            the default bandwidth and latency (which also bound memory-bound GEMMs);
            ``KIND=CASE`` entries each into their own kind.
        allreduce_case: a case with ``size_bytes, time_us``.
        allreduce_ranks: GPUs in that all-reduce; default the case's ``system.num_gpus``.
        allreduce_min_bytes: fit only messages at least this large [B].
        gemm_max_efficiency: fix the GEMMs' maximum efficiency instead of fitting it.

    Raises:
        ConfigError: a case is missing or lacks the columns, or a needed number is unknown.
    """
    _check_options(
        dtype=dtype,
        compute_units=compute_units,
        allreduce_ranks=allreduce_ranks,
        allreduce_min_bytes=allreduce_min_bytes,
        gemm_max_efficiency=gemm_max_efficiency,
    )
    cases = _cases_by_id(path)
    elem = DTYPE_BYTES[dtype]
    gemm = memory = allreduce = None

    def memory_fit(case_ids: Sequence[str]) -> MemoryFit:
        moved: list[float] = []
        times: list[float] = []
        for case_id in case_ids:
            case = _case(cases, case_id, path, {"G_elements_per_s"})
            sizes = {"num_elements"} if "num_elements" in case["columns"] else {"M", "N"}
            case = _case(cases, case_id, path, {"G_elements_per_s", *sizes})
            for row in rows_of(case):
                elements = row.get("num_elements") or row["M"] * row["N"]
                moved.append(2.0 * elem * elements)  # read once, written once
                times.append(elements / (row["G_elements_per_s"] * 1e9))
        return fit_memory_bandwidth(moved, times)

    plain = [c for c in memory_cases if "=" not in c]
    kinds: list[tuple[str, str, MemoryFit]] = []
    for entry in memory_cases:
        if "=" not in entry:
            continue
        kind, case_id = entry.split("=", 1)
        if kind not in MEMORY_OP_KINDS:
            close = difflib.get_close_matches(kind, MEMORY_OP_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError.single(
                path, "--memory KIND=CASE", kind, f"one of {', '.join(MEMORY_OP_KINDS)}{hint}"
            )
        kinds.append((kind, case_id, memory_fit([case_id])))
    if plain:
        memory = (tuple(plain), memory_fit(plain))
    # The GEMM model's memory roof: the streaming bandwidth being fitted, else the config's,
    # else the DRAM's datasheet rate (palmsim.hardware.costs.gemm_operand_bandwidth_bytes_per_s).
    if memory is not None:
        streaming = memory[1].bandwidth_bytes_per_s
    elif hardware.tile.memory_ops is not None:
        streaming = hardware.tile.memory_ops.bandwidth_bytes_per_s
    else:
        streaming = hardware.dram.bandwidth_bytes_per_s
    if gemm_case is not None:
        case = _case(cases, gemm_case, path, {"M", "N", "K", "latency_ms"})
        default = hardware.tile.gemm.compute_units if hardware.tile.gemm else None
        units = compute_units if compute_units is not None else default
        if units is None:
            raise ConfigError.single(
                hardware.name,
                "tile.gemm.compute_units",
                ConfigError.MISSING,
                "the GPU's SM count (or pass --compute-units)",
            )
        try:
            peak = hardware.tile.peak_for(dtype)
        except KeyError:
            known = ", ".join(dict(hardware.tile.peak_flop_per_s))
            expected = f"a dtype {hardware.name} has a peak for ({known})"
            raise ConfigError.single("command line", "--dtype", dtype, expected) from None
        rows = [{**r, "latency_s": r["latency_ms"] * 1e-3} for r in rows_of(case)]
        fit = fit_gemm(
            rows,
            peak_flop_per_s=peak,
            compute_units=units,
            memory_bandwidth_bytes_per_s=streaming,
            dtype_bytes=elem,
            max_efficiency=gemm_max_efficiency,
        )
        gemm = (gemm_case, fit, units)
    if allreduce_case is not None:
        case = _case(cases, allreduce_case, path, {"size_bytes", "time_us"})
        system = case.get("system")
        given = system.get("num_gpus") if isinstance(system, Mapping) else None
        ranks = allreduce_ranks if allreduce_ranks is not None else given
        if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 2:
            raise ConfigError.single(
                path, f"{allreduce_case}.system.num_gpus", given, "2 or more GPUs (or pass --ranks)"
            )
        rows = [r for r in rows_of(case) if r["size_bytes"] >= allreduce_min_bytes]
        if not rows:
            raise ConfigError.single(
                path, f"{allreduce_case}.rows", [], f"rows of at least {allreduce_min_bytes} B"
            )
        allreduce = (
            allreduce_case,
            fit_allreduce(
                [r["size_bytes"] for r in rows], [r["time_us"] * 1e-6 for r in rows], ranks
            ),
        )
    return Calibration(gemm, memory, allreduce, tuple(kinds))


def _error_note(errors: Sequence[float]) -> str:
    worst = max(abs(e) for e in errors)
    mean = sum(abs(e) for e in errors) / len(errors)
    return f"{len(errors)} rows, mean |error| {100 * mean:.1f}%, max {100 * worst:.1f}%"


def format_calibration(result: Calibration) -> str:
    """The fitted parameters as hardware-config YAML, each with where it came from."""
    lines: list[str] = []
    if result.gemm or result.memory or result.memory_kinds:
        lines.append("tile:")
    if result.gemm:
        case_id, g, units = result.gemm
        lines += [
            f"  gemm:  # fitted to {case_id} ({_error_note(g.relative_errors)})",
            f"    compute_units: {units}",
            f"    tile: [{g.tile_m}, {g.tile_n}]",
            f"    max_efficiency: {g.max_efficiency:.3f}",
            f"    launch_latency: {format_quantity(g.launch_latency_s, 'time')}",
        ]
    if result.memory:
        ids, m = result.memory
        lines += [
            f"  memory_ops:  # fitted to {', '.join(ids)} ({_error_note(m.relative_errors)})",
            f"    bandwidth: {format_quantity(m.bandwidth_bytes_per_s, 'bandwidth')}",
            f"    launch_latency: {format_quantity(m.latency_s, 'time')}",
        ]
    if result.memory_kinds:
        if not result.memory:
            lines.append("  memory_ops:")
        for kind, case_id, k in result.memory_kinds:
            lines += [
                f"    {kind}:  # fitted to {case_id} ({_error_note(k.relative_errors)})",
                f"      bandwidth: {format_quantity(k.bandwidth_bytes_per_s, 'bandwidth')}",
                f"      launch_latency: {format_quantity(k.latency_s, 'time')}",
            ]
    if result.allreduce:
        case_id, a = result.allreduce
        lines += [
            "system:",
            "  link:",
            f"    # ring all-reduce over {a.num_ranks} GPUs fitted to {case_id} "
            f"({_error_note(a.relative_errors)})",
            f"    bandwidth: {format_quantity(a.bus_bandwidth_bytes_per_s, 'bandwidth')}",
            f"    latency: {format_quantity(a.step_latency_s, 'time')}",
        ]
    return "\n".join(lines)
