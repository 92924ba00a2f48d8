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


def test_a_grouped_gemm_runs_in_rounds_of_its_streams() -> None:
    # 16 expert GEMMs of 512 x 2048 x 1536 on 4 streams: 4 rounds, each a batch of 4 products
    # whose 4·(512/128)·(1536/128) = 192 output tiles share 132 SMs (2 waves, q = 192/264),
    # one launch per round; without streams, one kernel of 16 (768 tiles, 6 waves, 768/792).
    import dataclasses

    from palmsim.config.specs import GemmSpec, TileSpec
    from palmsim.hardware.costs import op_pass_time_s
    from palmsim.workload.ops import make_op, matmul_cost

    e, peak, eff, launch, bw = 2, 989e12, 0.8, 20e-6, 3e12
    gemm = GemmSpec(132, 128, 128, eff, launch, grouped_streams=4)
    tile = TileSpec((("bf16", peak),), 0.0, 0.0, gemm=gemm)
    m, k, n, experts = 512, 2048, 1536, 16
    op = make_op(
        "experts_fc1", "matmul",
        matmul_cost(m, k, n, batch=experts, dtype_bytes=e, has_weight=True, grouped=True),
        params=experts * k * n, dtype_bytes=e,
    )  # fmt: skip
    flop = 2 * experts * m * k * n

    def time_s(t: TileSpec) -> float:
        return op_pass_time_s(op, "F", flop, 0.0, 0.0, t, peak, bw)[0]

    round_flop = flop / 4  # compute-bound: 4·m·k·n·2 FLOP per round at q = 192/264
    round_bytes = e * 4 * (m * k + m * n + k * n)
    assert round_flop / (peak * eff * 192 / 264) > round_bytes / bw
    expected = 4 * (launch + round_flop / (peak * eff * 192 / 264))
    assert time_s(tile) == pytest.approx(expected, rel=1e-12)
    one_kernel = launch + flop / (peak * eff * 768 / 792)
    no_streams = dataclasses.replace(tile, gemm=dataclasses.replace(gemm, grouped_streams=0))
    assert time_s(no_streams) == pytest.approx(one_kernel, rel=1e-12)
