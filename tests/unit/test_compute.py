"""Roofline op time and the memory helpers, with numbers worked out by hand."""

from __future__ import annotations

import pytest

from palmsim.hardware.compute import op_time_s
from palmsim.hardware.memory import split_sram_dram
from palmsim.units import MiB

PEAK_FLOP_PER_S = 16e12  # 16 TFLOP/s
SRAM_BANDWIDTH_BYTES_PER_S = 2e12  # 2 TB/s


def test_compute_bound_op() -> None:
    """1 TFLOP at 16 TFLOP/s x 0.5 = 0.125 s; 1 GB at 2 TB/s = 0.5 ms; compute wins."""
    time_s = op_time_s(
        1e12,
        1e9,
        peak_flop_per_s=PEAK_FLOP_PER_S,
        efficiency=0.5,
        sram_bandwidth_bytes_per_s=SRAM_BANDWIDTH_BYTES_PER_S,
    )
    assert time_s == pytest.approx(0.125, rel=1e-9)


def test_memory_bound_op() -> None:
    """1 GFLOP at 16 TFLOP/s = 62.5 µs; 1 TB at 2 TB/s = 0.5 s; memory wins."""
    time_s = op_time_s(
        1e9,
        1e12,
        peak_flop_per_s=PEAK_FLOP_PER_S,
        efficiency=1.0,
        sram_bandwidth_bytes_per_s=SRAM_BANDWIDTH_BYTES_PER_S,
    )
    assert time_s == pytest.approx(0.5, rel=1e-9)


def test_ridge_point_is_where_both_bounds_meet() -> None:
    """At 8 FLOP/B (16 TFLOP/s / 2 TB/s) compute and memory time are equal: 16e12/16e12 = 1 s."""
    time_s = op_time_s(
        16e12,
        2e12,
        peak_flop_per_s=PEAK_FLOP_PER_S,
        efficiency=1.0,
        sram_bandwidth_bytes_per_s=SRAM_BANDWIDTH_BYTES_PER_S,
    )
    assert time_s == pytest.approx(1.0, rel=1e-9)


def test_zero_bytes_with_zero_bandwidth_is_compute_only() -> None:
    """A GPU without modelled SRAM: 312e12 FLOP at 312 TFLOP/s x 0.5 = 2 s."""
    time_s = op_time_s(
        312e12, 0.0, peak_flop_per_s=312e12, efficiency=0.5, sram_bandwidth_bytes_per_s=0.0
    )
    assert time_s == pytest.approx(2.0, rel=1e-9)


def test_empty_op_takes_no_time() -> None:
    time_s = op_time_s(
        0.0,
        0.0,
        peak_flop_per_s=PEAK_FLOP_PER_S,
        efficiency=1.0,
        sram_bandwidth_bytes_per_s=SRAM_BANDWIDTH_BYTES_PER_S,
    )
    assert time_s == 0.0


def test_bytes_without_bandwidth_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        op_time_s(1.0, 1.0, peak_flop_per_s=1.0, efficiency=1.0, sram_bandwidth_bytes_per_s=0.0)


def test_split_sram_dram_fills_sram_in_priority_order() -> None:
    """4 MiB of SRAM: weights (2 MiB) fit, activations (3 MiB) get the last 2 MiB, the
    optimizer state (1 MiB) goes wholly to DRAM."""
    placed = split_sram_dram(
        [("weights", 2 * MiB), ("activations", 3 * MiB), ("optimizer", 1 * MiB)], 4 * MiB
    )
    assert placed == [
        ("weights", 2 * MiB, 0.0),
        ("activations", 2 * MiB, 1 * MiB),
        ("optimizer", 0.0, 1 * MiB),
    ]


def test_split_sram_dram_without_sram_puts_everything_in_dram() -> None:
    assert split_sram_dram([("weights", 5.0)], 0.0) == [("weights", 0.0, 5.0)]


def test_split_sram_dram_with_room_to_spare() -> None:
    assert split_sram_dram([("a", 1.0), ("b", 2.0)], 10.0) == [("a", 1.0, 0.0), ("b", 2.0, 0.0)]
