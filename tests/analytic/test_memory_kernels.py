"""Memory-bound kernels on a GPU: per-kind bandwidths, the GEMM memory roof and the optimizer
step's passes, against hand-derived times."""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.specs import MemoryKernelSpec, MemoryOpsSpec
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.workload.builders import layer_blocks
from tests.conftest import cluster_spec, experiment, gpt_model

#: Streaming default 1.5 TB/s and 40 µs; softmax 1.0 TB/s and 10 µs; norm 1.6 TB/s and 50 µs.
MEMORY_OPS = MemoryOpsSpec(
    1.5e12,
    40e-6,
    kinds=(
        ("softmax", MemoryKernelSpec(1.0e12, 10e-6)),
        ("norm", MemoryKernelSpec(1.6e12, 50e-6)),
    ),
)


def test_a_kind_without_its_own_entry_gets_the_default() -> None:
    assert MEMORY_OPS.for_kind("softmax") == MemoryKernelSpec(1.0e12, 10e-6)
    assert MEMORY_OPS.for_kind("dropout") == MemoryKernelSpec(1.5e12, 40e-6)
    # 3 GB of softmax: 10 µs + 3 ms; 3 GB over 5 elementwise kernels: 5·40 µs + 2 ms
    assert MEMORY_OPS.time_s("softmax", 3e9) == pytest.approx(10e-6 + 3e-3, rel=1e-12)
    assert MEMORY_OPS.time_s("elementwise", 3e9, 5) == pytest.approx(200e-6 + 2e-3, rel=1e-12)


def _gpu_plan(dtype: str = "fp16", **mapping):
    hw = cluster_spec(nodes=1, gpus=1)
    hw = replace(hw, tile=replace(hw.tile, memory_ops=MEMORY_OPS))
    model = gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=128)
    exp = experiment(hw, model, seq=128, batch=4, dtype=dtype, micro_batch_size=4, **mapping)
    return exp, map_workload(exp, Chip.from_spec(exp.hardware))


def _attn_forward_s(exp, memory_ops: MemoryOpsSpec) -> float:
    hw = replace(exp.hardware, tile=replace(exp.hardware.tile, memory_ops=memory_ops))
    plan = map_workload(replace(exp, hardware=hw), Chip.from_spec(hw))
    return next(s for s in plan.programs[0].forward if s.label == "L0.attn").compute_time_s


def test_each_memory_bound_op_runs_at_its_kinds_bandwidth() -> None:
    """A layer's forward attention step on one GPU, with and without the per-kind entries:
    the GEMMs cost the same both ways, so the difference is norm1 at 1.6 TB/s + 50 µs and
    the softmax at 1.0 TB/s + 10 µs against both at the default 1.5 TB/s + 40 µs (the
    dropouts and the residual add run at the default either way)."""
    exp, _ = _gpu_plan()
    attn, _ = layer_blocks(exp.workload.model, exp.workload.training, 4, 1)
    # the norm's bytes include reading its weights (gamma, beta)
    norm = attn.op("norm1").bytes_fwd + attn.op("norm1").weight_bytes
    softmax = attn.op("softmax").bytes_fwd
    own = (50e-6 + norm / 1.6e12) + (10e-6 + softmax / 1.0e12)
    default = (40e-6 + norm / 1.5e12) + (40e-6 + softmax / 1.5e12)
    difference = _attn_forward_s(exp, MEMORY_OPS) - _attn_forward_s(
        exp, replace(MEMORY_OPS, kinds=())
    )
    assert difference == pytest.approx(own - default, rel=1e-9)


def test_a_memory_bound_gemm_is_bounded_by_the_streaming_bandwidth() -> None:
    """216 products (s × d)·(d × s) with s = 128, d = 64 (QKᵀ of a head size of 64): 216
    one-tile outputs fill two waves of 108 SMs (no quantisation loss); 2·216·s²·d = 0.45
    GFLOP take 1.45 µs at 312 TFLOP/s, their 2·216·(2sd + s²) = 14.2 MB take 9.4 µs at the
    1.5 TB/s streaming bandwidth (6.9 µs at the 2039 GB/s datasheet rate), so the time is
    bytes / 1.5 TB/s."""
    from palmsim.config.specs import GemmSpec
    from palmsim.hardware.costs import gemm_operand_bandwidth_bytes_per_s, op_pass_time_s
    from palmsim.workload.ops import make_op, matmul_cost

    exp, _ = _gpu_plan()
    tile = replace(exp.hardware.tile, gemm=GemmSpec(108, 128, 128, 1.0, 0.0))
    hw = replace(exp.hardware, tile=tile)
    s, d, batch = 128, 64, 216
    scores = make_op(
        "scores", "matmul", matmul_cost(s, d, s, batch=batch, dtype_bytes=2), dtype_bytes=2
    )
    assert scores.bytes_fwd == 2 * batch * (2 * s * d + s * s)
    bandwidth = gemm_operand_bandwidth_bytes_per_s(hw)
    t = op_pass_time_s(scores, "F", scores.flop_fwd, 0.0, 0.0, tile, 312e12, bandwidth)
    assert t == pytest.approx(scores.bytes_fwd / 1.5e12, rel=1e-12)
    assert scores.flop_fwd / 312e12 < t


@pytest.mark.parametrize(
    ("dtype", "bytes_per_param", "kernels"),
    [
        # fp16 grad -> fp32 (2 + 4), unscale (4 + 4), norm (4), Adam (4 + 12 + 12),
        # fp32 master -> fp16 weights (4 + 2)
        ("fp16", 52, 5),
        # norm (4), Adam (weights, grad, moments 4 + 4 + 8 read; 4 + 8 written)
        ("fp32", 32, 2),
    ],
)
def test_optimizer_step_makes_megatrons_passes(
    dtype: str, bytes_per_param: int, kernels: int
) -> None:
    _, plan = _gpu_plan(dtype)
    step = plan.programs[0].optimizer
    params = plan.memory[0][1].weights / (2 if dtype == "fp16" else 4)
    moved = step.sram_bytes + step.dram_read_bytes + step.dram_write_bytes
    assert moved == pytest.approx(bytes_per_param * params, rel=1e-12)
    assert step.compute_time_s == pytest.approx(
        kernels * 40e-6 + bytes_per_param * params / 1.5e12, rel=1e-12
    )
