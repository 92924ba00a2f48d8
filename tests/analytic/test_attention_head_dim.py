"""A fused attention kernel's rate by head dim on Hopper: the FlashAttention-3 paper's cuDNN
bars at head dims 64 and 128 (validation/kernel_measurements.yaml), and between them a time
per attended pair that is a fixed part (the softmax) plus a part per element of the products."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from palmsim.config.loader import load_hardware
from palmsim.config.specs import GemmSpec
from palmsim.hardware.costs import op_pass_time_s
from palmsim.workload.ops import fused_attention_cost, make_op

ROOT = Path(__file__).resolve().parents[2]
H100_PEAK = 989e12  # hw_configs/dgx-h100.yaml tile.peak.bf16


def _row_8k(case_id: str) -> tuple[float, float]:
    cases = yaml.safe_load((ROOT / "validation" / "kernel_measurements.yaml").read_text())
    (case,) = [c for c in cases["cases"] if c["id"] == case_id]
    (row,) = [r for r in case["rows"] if r[0] == 8192]
    return float(row[1]) * 1e12, float(row[2]) * 1e12


def _h100_gemm(config: str = "dgx-h100") -> GemmSpec:
    g = load_hardware(ROOT / "hw_configs" / f"{config}.yaml").tile.gemm
    assert g is not None
    return g


@pytest.mark.parametrize("config", ["dgx-h100", "dgx-h200", "dgx-h800"])
def test_the_hopper_rates_are_the_measured_bars_at_8k(config: str) -> None:
    g = _h100_gemm(config)
    cases = (("fa3_h100_attention_cudnn", 128), ("fa3_h100_attention_cudnn_d64", 64))
    for case_id, head_dim in cases:
        fwd, bwd = _row_8k(case_id)
        assert g.attention_efficiency_for("F", head_dim) == pytest.approx(fwd / H100_PEAK, abs=5e-4)
        assert g.attention_efficiency_for("B", head_dim) == pytest.approx(bwd / H100_PEAK, abs=5e-4)


def test_head_dim_96_by_hand() -> None:
    """Forward, in units of 1/peak: time per pair over FLOP per pair at d = 64 is 64 / 0.383 =
    167.10, at d = 128 it is 128 / 0.535 = 239.25; at d = 96 it is halfway, 203.17, so the
    rate is 96 / 203.17 = 0.4725 of the peak (467 TFLOP/s)."""
    g = _h100_gemm()
    assert g.attention_efficiency_for("F", 96) == pytest.approx(0.4725, abs=2e-4)
    # backward: 64 / 0.437 = 146.45, 128 / 0.524 = 244.27, halfway 195.36: 0.4914
    assert g.attention_efficiency_for("B", 96) == pytest.approx(0.4914, abs=2e-4)


@pytest.mark.parametrize("phase", ["F", "B"])
def test_time_per_pair_is_affine_in_the_head_dim(phase: str) -> None:
    """d / e(d) (the time per pair over the FLOP per pair per element) grows by the same step
    for each step of the head dim: a fixed cost per score plus one per product element."""
    g = _h100_gemm()
    dims = [64, 80, 96, 112, 128]
    t = [d / g.attention_efficiency_for(phase, d) for d in dims]
    steps = [b - a for a, b in itertools.pairwise(t)]
    assert all(s > 0 for s in steps)
    assert max(steps) == pytest.approx(min(steps), rel=1e-9)


def test_outside_the_measured_head_dims_the_nearer_measurement() -> None:
    g = _h100_gemm()
    for phase in ("F", "B"):
        assert g.attention_efficiency_for(phase, 32) == g.attention_efficiency_for(phase, 64)
        assert g.attention_efficiency_for(phase, 192) == g.attention_efficiency_for(phase, 128)


def test_without_a_head_dim_64_rate_the_head_dim_does_not_matter() -> None:
    b200 = load_hardware(ROOT / "hw_configs" / "dgx-b200.yaml").tile.gemm
    assert b200 is not None and b200.attention_forward_efficiency_d64 is None
    for phase in ("F", "B"):
        assert b200.attention_efficiency_for(phase, 64) == b200.attention_efficiency_for(phase, 128)
    # flash-attn's FlashAttention-2 kernel keeps its one measured rate
    flash2 = _h100_gemm().for_attention_kernel("flash2")
    assert flash2.attention_efficiency_for("F", 64) == pytest.approx(333e12 / H100_PEAK, abs=5e-4)


def test_a_head_dim_64_kernel_costs_its_flop_at_the_head_dim_64_rate() -> None:
    """gpt-oss's full-attention layer on one H100: 64 heads of 64, 4096 causal tokens. Forward
    FLOP 4 x 64 x 64 x 4096 x 4097 / 2 = 1.3748e11 at 379 TFLOP/s: 362.7 us, plus one launch
    of the GEMM fit (28.9 us); its bytes (Q, K, V, output: ~1.5e8 B at 2.9 TB/s, 52 us) stay
    under the FLOP time."""
    hw = load_hardware(ROOT / "hw_configs" / "dgx-h100.yaml")
    cost = fused_attention_cost(
        64, 4096, 4096, 64, kv_heads_ratio=8 / 64, causal=True, dtype_bytes=2
    )
    op = make_op("attention", "attention", cost, dtype_bytes=2)
    flop = 4 * 64 * 64 * 4096 * 4097 / 2
    assert op.flop_fwd == pytest.approx(flop)
    time_s, launch_s, flop_s = op_pass_time_s(
        op, "F", op.flop_fwd, 0.0, op.bytes_fwd, hw.tile, H100_PEAK, 2903e9
    )
    assert launch_s == pytest.approx(28.9e-6)
    assert flop_s == pytest.approx(flop / (H100_PEAK * 0.383))
    assert time_s == pytest.approx(28.9e-6 + flop / (H100_PEAK * 0.383))
    assert flop_s == pytest.approx(362.7e-6, rel=2e-3)
