"""The Blackwell configs' fused-attention rates are NVIDIA's published cuDNN SDPA benchmark
(validation/blackwell_measurements.yaml, cudnn-frontend's CSVs: bf16, head dim 128, causal) at
sequence length 8k over each GPU's bf16 peak, as the H100's is the FlashAttention-3 paper's
cuDNN bar at 8k; the B300, with no measurement of its own, takes the GB300's fractions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from palmsim.config.loader import load_hardware

ROOT = Path(__file__).resolve().parents[2]


def _row_8k(case_id: str) -> tuple[float, float]:
    cases = yaml.safe_load((ROOT / "validation" / "blackwell_measurements.yaml").read_text())
    (case,) = [c for c in cases["cases"] if c["id"] == case_id]
    (row,) = [r for r in case["rows"] if r[0] == 8192]
    return float(row[1]), float(row[2])


@pytest.mark.parametrize(
    ("config", "case_id", "peak_tflops"),
    [
        ("dgx-b200", "cudnn_sdpa_b200", 2250),
        ("dgx-gb200", "cudnn_sdpa_gb200", 2500),
        ("dgx-gb300", "cudnn_sdpa_gb300", 2500),
    ],
)
def test_attention_efficiency_is_the_cudnn_kernel_at_8k_over_the_peak(
    config: str, case_id: str, peak_tflops: float
) -> None:
    hw = load_hardware(ROOT / "hw_configs" / f"{config}.yaml")
    g = hw.tile.gemm
    assert g is not None
    assert hw.tile.peak_for("bf16") == peak_tflops * 1e12
    fwd, bwd = _row_8k(case_id)
    assert g.attention_efficiency_for("F") == pytest.approx(fwd / peak_tflops, abs=5e-4)
    assert g.attention_efficiency_for("B") == pytest.approx(bwd / peak_tflops, abs=5e-4)


def test_blackwell_ultra_attention_is_faster_than_blackwell_s_at_the_same_peak() -> None:
    """GB300 and GB200 share a 2500 TFLOP/s bf16 peak and GEMM fit; Blackwell Ultra's doubled
    exponential rate shows in the attention kernel alone (1887 against 1598 forward at 8k),
    and the B300 takes the GB300's fractions."""
    gb200, gb300, b300 = (
        load_hardware(ROOT / "hw_configs" / f"{c}.yaml").tile.gemm
        for c in ("dgx-gb200", "dgx-gb300", "dgx-b300")
    )
    assert gb200 is not None and gb300 is not None and b300 is not None
    assert gb300.max_efficiency == gb200.max_efficiency
    for phase in ("F", "B"):
        assert gb300.attention_efficiency_for(phase) > gb200.attention_efficiency_for(phase)
        assert b300.attention_efficiency_for(phase) == gb300.attention_efficiency_for(phase)
