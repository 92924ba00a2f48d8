"""The DGX B200 config, MXFP8 and blockwise fp8 training (palmsim.workload.fp8) against
closed forms.

- MXFP8 (Transformer Engine's ``MXFP8BlockScaling``): every 32 elements of an fp8 copy
  share one E8M0 byte, so a copy costs ``1 + 1/32`` B per element; a cast reads the bf16
  tensor (2 B) and writes its row-wise and column-wise copies, ``2·(1 + 1/32)`` B. No amax
  kernel, no amax history, no update step.
- Memory: TE's cached fp8 weight and its transpose with their scales, ``2·(1 + 1/32)`` B per
  fp8 GEMM parameter, on top of bf16 weights and gradients and 12 B/param of Adam state.
- A B200 GEMM that fills the 148 SMs takes ``launch + 2·m·k·n / (4500 TFLOP/s · 3432.5/4500)``
  in fp8 (MAMF's best B200 fp8 matmul) and ``2·m·k·n / (2250 TFLOP/s · 1745/2250)`` in bf16.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from palmsim.api import load_experiment
from palmsim.config.loader import load_hardware
from palmsim.config.specs import DTYPE_BYTES
from palmsim.errors import ConfigError
from palmsim.hardware.chip import Chip
from palmsim.hardware.costs import (
    OperandPlacement,
    fp8_weight_cast_cost,
    gemm_operand_bandwidth_bytes_per_s,
    op_pass_time_s,
)
from palmsim.mapping.mapper import map_workload
from palmsim.validate import NotRun, _hardware, read_training_run
from palmsim.workload.builders import layer_blocks
from palmsim.workload.fp8 import fp8_block_ops, fp8_weight_copy_bytes
from palmsim.workload.ops import make_op, matmul_cost

ROOT = Path(__file__).resolve().parents[2]
B200_FP8_PEAK = 4500e12  # DGX B200 datasheet via validation/blackwell_hw_specs.yaml
B200_BF16_PEAK = 2250e12
MX_COPY = 1 + 1 / 32  # one fp8 byte plus an E8M0 scale byte per 32 elements


def _linear(m: float, k: float, n: float):
    op = make_op(
        "fc1", "matmul", matmul_cost(m, k, n, dtype_bytes=2, has_weight=True), params=k * n,
        dtype_bytes=2,
    )  # fmt: skip
    return op


def _mamf(dtype: str, gpu: str = "B200-SXM") -> tuple[float, float]:
    path = ROOT / "validation" / "blackwell_measurements.yaml"
    cases = [c for c in yaml.safe_load(path.read_text())["cases"] if c["id"].startswith("mamf")]
    (row,) = [r for c in cases for r in c["rows"] if r[0] == gpu and r[1] == dtype]
    return float(row[2]), float(row[3])


# ------------------------------------------------------------------------------ MXFP8


def test_mxfp8_cast_bytes_per_element() -> None:
    m, k, n, e = 4096.0, 4096.0, 14336.0, 2
    (cast, gemm) = fp8_block_ops([_linear(m, k, n)], dtype_bytes=e, recipe="mxfp8")
    # forward: read 2 B, write the row-wise and the column-wise copy with their scales
    assert cast.bytes_fwd == pytest.approx((2 + 2 * MX_COPY) * m * k, rel=1e-12)
    assert cast.bytes_bwd == pytest.approx((2 + 2 * MX_COPY) * m * n, rel=1e-12)
    # the block amaxes are taken inside the one cast kernel: no amax pass
    assert (cast.kernels_fwd, cast.kernels_bwd) == (1, 1)
    # the linear keeps its column-wise MXFP8 input (data and scales) for wgrad
    assert gemm.fp8
    assert gemm.saved_bytes == pytest.approx(_linear(m, k, n).saved_bytes * MX_COPY / e)


def _qkv_cast_under_sequence_parallelism(recipe: str):
    """Llama-2 7B on the B200 with ``recipe``, TP 4 with sequence parallelism: QKV's cast op,
    the sequence and hidden sizes and QKV's GEMM rows and columns."""
    exp = load_experiment("dgx-b200", "llama2-7b", overrides=("training.dtype=fp8",))
    training = dataclasses.replace(exp.workload.training, fp8_recipe=recipe)
    attn, _ = layer_blocks(exp.workload.model, training, 1, 4, sequence_parallel=True)
    qkv = attn.op("qkv")
    assert qkv.gemm_shape is not None
    _, m, _, n = qkv.gemm_shape
    return attn.op("qkv_cast"), training.seq_len, exp.workload.model.hidden_size, m, n


def test_mxfp8_under_sequence_parallelism_gathers_both_copies() -> None:
    """MXFP8 all-gathers its column-wise data, so QKV casts both copies of the tile's s/t
    rows before the gather and transposes nothing after the backward's gather (delayed
    scaling: row-wise only before, a transpose of the s gathered rows after)."""
    cast, s, h, m, n = _qkv_cast_under_sequence_parallelism("mxfp8")
    assert cast.bytes_fwd == pytest.approx((2 + 2 * MX_COPY) * s * h / 4, rel=1e-12)
    assert cast.bytes_bwd == pytest.approx((2 + 2 * MX_COPY) * m * n, rel=1e-12)
    assert (cast.kernels_fwd, cast.kernels_bwd) == (1, 1)


def test_mxfp8_weight_cast_writes_both_copies_with_scales() -> None:
    assert fp8_weight_copy_bytes("mxfp8") == pytest.approx(2 * MX_COPY, rel=1e-15)
    assert fp8_weight_copy_bytes("delayed") == 2.0  # per-tensor scales: 1 B per copy
    tile = load_hardware(ROOT / "hw_configs" / "dgx-b200.yaml").tile
    where = OperandPlacement(weights=1.0, optimizer=1.0)
    params, tensors = 1e9, 100
    cast = fp8_weight_cast_cost(params, tensors, 2, fp8_weight_copy_bytes("mxfp8"), tile, where)
    assert cast.dram_read_bytes == 2 * params
    assert cast.dram_write_bytes == pytest.approx(2 * MX_COPY * params, rel=1e-12)
    assert tile.memory_ops is not None
    bw, lat = tile.memory_ops.bandwidth_bytes_per_s, tile.memory_ops.launch_latency_s
    expected = tensors * lat + (2 + 2 * MX_COPY) * params / bw
    assert cast.time_s == pytest.approx(expected, rel=1e-12)


def _b200_plan(*overrides: str):
    exp = load_experiment(
        "dgx-b200", "llama2-7b",
        overrides=("hw.system.chips=[1, 8]", "training.global_batch_size=8", *overrides),
        mapping_flags={"pp": 4, "tp": 2, "dp": 1, "micro_batch_size": 1, "recompute": "full"},
    )  # fmt: skip
    return exp, map_workload(exp, Chip.from_spec(exp.hardware))


def test_mxfp8_memory_and_no_amax_update() -> None:
    """Stage 0 of 4 (8 of Llama 2 7B's 32 layers and the embedding), TP 2, no ZeRO."""
    exp, bf16 = _b200_plan()
    _, mx = _b200_plan("training.dtype=fp8", "training.fp8_recipe=mxfp8")
    _, delayed = _b200_plan("training.dtype=fp8", "training.fp8_recipe=delayed")
    m = exp.workload.model
    h, f, v, t = m.hidden_size, m.intermediate_size, m.vocab_size, 2
    linears = (4 * h * h + 3 * h * f) / t  # qkv, out_proj, gate+up, down on one TP rank
    params = 8 * (linears + 2 * h) + v * h / t  # two RMSNorm gains per layer, the embedding
    e = DTYPE_BYTES["bf16"]
    mem = dict(mx.memory)[0]
    assert mem.gradients == pytest.approx(e * params, rel=1e-12)
    assert mem.optimizer == pytest.approx(12 * params, rel=1e-12)
    # bf16 weights plus the cached row-wise and column-wise MXFP8 copies with their scales
    assert mem.weights == pytest.approx(e * params + 2 * MX_COPY * 8 * linears, rel=1e-12)
    assert dict(bf16.memory)[0].weights == pytest.approx(e * params, rel=1e-12)

    def amax_steps(plan) -> int:
        return sum(
            step.label.endswith("fp8_amax")
            for prog in plan.programs
            for step in (*prog.forward, *prog.backward)
            if hasattr(step, "label")
        )

    assert amax_steps(mx) == 0  # no amax history to update
    assert amax_steps(delayed) > 0  # delayed scaling updates it after every pass


def test_a_chip_without_an_fp8_peak_refuses_mxfp8() -> None:
    exp = load_experiment(
        "dgx-a100-superpod", "llama2-7b",
        overrides=("training.dtype=fp8", "training.fp8_recipe=mxfp8"),
        mapping_flags={"pp": 4, "tp": 8, "dp": 1},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"tile\.peak\.fp8"):
        map_workload(exp, Chip.from_spec(exp.hardware))


# ------------------------------------------------------------------ blockwise (DeepSeek's)

BS_COPY = 1 + 4 / 128  # an fp32 scale per 1x128 block of an activation or gradient copy


def test_blockwise_cast_bytes_and_weight_copies() -> None:
    m, k, n, e = 4096.0, 4096.0, 14336.0, 2
    (cast, gemm) = fp8_block_ops([_linear(m, k, n)], dtype_bytes=e, recipe="blockwise")
    assert cast.bytes_fwd == pytest.approx((2 + 2 * BS_COPY) * m * k, rel=1e-12)
    assert cast.bytes_bwd == pytest.approx((2 + 2 * BS_COPY) * m * n, rel=1e-12)
    assert (cast.kernels_fwd, cast.kernels_bwd) == (1, 1)
    assert gemm.saved_bytes == pytest.approx(_linear(m, k, n).saved_bytes * BS_COPY / e)
    # weights: 128x128 blocks, one fp32 scale per 16384 elements of each copy
    assert fp8_weight_copy_bytes("blockwise") == pytest.approx(2 * (1 + 4 / 128**2), rel=1e-15)


def test_blockwise_under_sequence_parallelism_reorders_the_gathered_copy() -> None:
    """Both copies of the tile's s/t rows before the gather (as MXFP8), then one pass
    reading and writing the gathered column-wise fp8 data, interleaved by rank."""
    cast, s, h, m, n = _qkv_cast_under_sequence_parallelism("blockwise")
    assert cast.bytes_fwd == pytest.approx((2 + 2 * BS_COPY) * s * h / 4, rel=1e-12)
    assert cast.bytes_bwd == pytest.approx((2 + 2 * BS_COPY) * m * n + 2 * s * h, rel=1e-12)
    assert (cast.kernels_fwd, cast.kernels_bwd) == (1, 2)


# ------------------------------------------------------------------------------ NVFP4

NV_COPY = 0.5 + 1 / 16  # one E2M1 value (4 bits) plus an E4M3 scale byte per 16 elements


def test_nvfp4_cast_bytes_per_element() -> None:
    """NVFP4 (TE's NVFP4BlockScaling): each copy of an element is a half-byte value plus its
    share of a 1-byte scale per 16; the global amax is taken first, as current scaling's:
    read 2 B for the amax, 2 B for the cast, write the row-wise and column-wise copies, in 3
    kernels; the linear keeps its column-wise NVFP4 input for wgrad."""
    m, k, n, e = 4096.0, 4096.0, 14336.0, 2
    (cast, gemm) = fp8_block_ops([_linear(m, k, n)], dtype_bytes=e, recipe="nvfp4")
    assert cast.bytes_fwd == pytest.approx((2 + 2 + 2 * NV_COPY) * m * k, rel=1e-12)
    assert cast.bytes_bwd == pytest.approx((2 + 2 + 2 * NV_COPY) * m * n, rel=1e-12)
    assert (cast.kernels_fwd, cast.kernels_bwd) == (3, 3)
    assert gemm.fp8
    assert gemm.saved_bytes == pytest.approx(_linear(m, k, n).saved_bytes * NV_COPY / e)


def test_nvfp4_weight_copies_are_half_bytes_with_a_scale_per_16x16_block() -> None:
    """A weight's two NVFP4 copies (row-wise, column-wise), each 0.5 B a value plus one E4M3
    byte per 16x16 block: 2 x (0.5 + 1/256) B per parameter."""
    assert fp8_weight_copy_bytes("nvfp4") == pytest.approx(2 * (0.5 + 1 / 256))


def test_b200_nvfp4_gemm_time_at_its_nvfp4_peak_times_efficiency() -> None:
    """An NVFP4 GEMM on the B200 runs at the table's nvfp4 peak, 10000 TFLOP/s, times the fp8
    matmuls' fraction of peak (3432.5 / 4500, the config's marked assumption): on 148 whole
    waves of 128 x 128 tiles, the launch latency plus FLOP / that rate."""
    hw = load_hardware(ROOT / "hw_configs" / "dgx-b200.yaml")
    tile = hw.tile
    m = n = 128 * 148
    k = 16384
    flop = 2.0 * m * k * n
    nvfp4_peak = 10000e12
    assert tile.peak_for("nvfp4") == nvfp4_peak
    op = dataclasses.replace(_linear(m, k, n), fp8=True)
    _, launch_s, flop_s = op_pass_time_s(
        op, "F", flop, 0.0, 0.0, tile, B200_BF16_PEAK, gemm_operand_bandwidth_bytes_per_s(hw),
        fp8_peak_flop_per_s=nvfp4_peak, fp8_dtype="nvfp4",
    )  # fmt: skip
    assert launch_s == pytest.approx(28.9e-6)
    assert flop_s == pytest.approx(flop / (nvfp4_peak * 3432.5 / 4500), rel=1e-3)


# ------------------------------------------------------------------------------ the B200


def test_b200_peaks_and_efficiencies_are_the_datasheet_and_mamf() -> None:
    tile = load_hardware(ROOT / "hw_configs" / "dgx-b200.yaml").tile
    mamf8, theory8 = _mamf("fp8_e4m3")
    mamf16, theory16 = _mamf("bf16")
    assert theory8 * 1e12 == B200_FP8_PEAK == tile.peak_for("fp8")
    assert theory16 * 1e12 == B200_BF16_PEAK == tile.peak_for("bf16")
    assert tile.gemm_max_efficiency_for("fp8") == pytest.approx(mamf8 / theory8, abs=5e-4)
    assert tile.gemm_max_efficiency_for("bf16") == pytest.approx(mamf16 / theory16, abs=5e-4)


def test_gb200_peaks_and_efficiencies_are_its_specifications_and_mamf() -> None:
    """A GB200's GPU runs faster than a B200 (2500 and 5000 TFLOP/s dense, not 2250 and 4500),
    with MAMF's GB200 matmuls as its efficiencies, 186 GB of HBM3e and 72 GPUs per NVLink
    domain (DGX GB200 user guide)."""
    hw = load_hardware(ROOT / "hw_configs" / "dgx-gb200.yaml")
    tile = hw.tile
    for dtype, peak in (("fp8", 5000e12), ("bf16", 2500e12)):
        mamf, theory = _mamf("fp8_e4m3" if dtype == "fp8" else dtype, "GB200-SXM")
        assert theory * 1e12 == peak == tile.peak_for(dtype)
        assert tile.gemm_max_efficiency_for(dtype) == pytest.approx(mamf / theory, abs=5e-4)
    assert hw.dram.capacity_bytes == 186e9
    assert hw.cluster is not None and hw.cluster.devices_per_node == 72


def test_b300_peaks_and_efficiencies_are_its_datasheet_and_mamf() -> None:
    """A DGX B300's Blackwell Ultra GPU has the B200's dense peaks (2250 and 4500 TFLOP/s, the
    DGX B300 datasheet via stas00's table) with MAMF's B300 matmuls as its efficiencies
    (1769.0 / 2250 and 3353.3 / 4500), 288 GB of HBM3e at 8 TB/s, 8 GPUs a node; what no B300
    source gives is listed as an assumption."""
    hw = load_hardware(ROOT / "hw_configs" / "dgx-b300.yaml")
    tile = hw.tile
    for dtype, peak in (("fp8", 4500e12), ("bf16", 2250e12)):
        mamf, theory = _mamf("fp8_e4m3" if dtype == "fp8" else dtype, "B300-SXM")
        assert theory * 1e12 == peak == tile.peak_for(dtype)
        assert tile.gemm_max_efficiency_for(dtype) == pytest.approx(mamf / theory, abs=5e-4)
    assert (hw.dram.capacity_bytes, hw.dram.bandwidth_bytes_per_s) == (288e9, 8000e9)
    assert hw.cluster is not None and hw.cluster.devices_per_node == 8
    from palmsim.config.loader import hardware_assumptions

    assumed = {key for key, _, _ in hardware_assumptions(ROOT / "hw_configs" / "dgx-b300.yaml")}
    assert {"tile.gemm.compute_units", "system.node_link.bandwidth"} <= assumed


def test_b200_fp8_gemm_time_at_its_fp8_peak_times_efficiency() -> None:
    hw = load_hardware(ROOT / "hw_configs" / "dgx-b200.yaml")
    tile = hw.tile
    assert tile.gemm is not None and tile.gemm.compute_units == 148
    assert (tile.gemm.tile_m, tile.gemm.tile_n) == (128, 128)
    m = n = 128 * 148  # 148 x 148 output tiles: 148 whole waves over 148 SMs
    k = 16384
    flop = 2.0 * m * k * n
    bandwidth = gemm_operand_bandwidth_bytes_per_s(hw)
    op = dataclasses.replace(_linear(m, k, n), fp8=True)
    rate = B200_FP8_PEAK * 3432.5 / 4500  # MAMF's best B200 fp8 matmul
    time_s, launch_s, flop_s = op_pass_time_s(
        op, "F", flop, 0.0, 0.0, tile, B200_BF16_PEAK, bandwidth, fp8_peak_flop_per_s=B200_FP8_PEAK
    )
    assert launch_s == pytest.approx(28.9e-6)
    assert flop_s == pytest.approx(flop / rate, rel=1e-3)  # 0.763 is 3432.5/4500 to 3 digits
    assert time_s == pytest.approx(28.9e-6 + flop / rate, rel=1e-3)
    bf16_s, _, _ = op_pass_time_s(
        _linear(m, k, n), "F", flop, 0.0, 0.0, tile, B200_BF16_PEAK, bandwidth
    )
    assert bf16_s == pytest.approx(28.9e-6 + flop / (B200_BF16_PEAK * 1745.0 / 2250), rel=1e-3)


def test_validate_matches_the_b200_family_and_marks_its_assumptions() -> None:
    path, why = _hardware({"gpu": "B200"}, "validation/moe_runs.yaml")
    assert path.endswith("dgx-b200.yaml") and "B200" in why
    gb200, _ = _hardware({"gpu": "GB200"}, "validation/moe_runs.yaml")  # another system (NVL72)
    assert gb200.endswith("dgx-gb200.yaml")
    with pytest.raises(NotRun, match="no shipped config"):
        _hardware({"gpu": "GB400"}, "validation/moe_runs.yaml")  # no such system
    cases = yaml.safe_load((ROOT / "validation" / "moe_runs.yaml").read_text())["cases"]
    (case,) = [c for c in cases if c["id"] == "mbridge_2511_b200_qwen3_30b_a3b_8gpu"]
    run = read_training_run(case, str(ROOT / "validation" / "moe_runs.yaml"))
    assert run is not None
    assert "training.fp8_recipe=mxfp8" in run.overrides
    assumed = {a.key: a.value for a in run.assumptions}
    assert assumed["hw.system.link.bandwidth"] == "721.8 GB/s"
    assert assumed["hw.tile.gemm.launch_latency"] == "28.9 us"
    # the GEMM and fused-attention efficiencies are fitted to B200 measurements: not
    # assumptions
    assert not any("efficiency" in key for key in assumed)


def test_hardware_assumptions_must_name_a_value(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "hw_configs" / "dgx-b200.yaml").read_text())
    raw["assumptions"]["tile.gemm.bogus"] = "no such key"
    path = tmp_path / "dgx-b200.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"assumptions\.tile\.gemm\.bogus"):
        load_hardware(path)
