"""fp8 training as Transformer Engine runs it (palmsim.workload.fp8) against closed forms.

- An fp8 GEMM takes ``launch + 2·m·k·n / (fp8 peak · efficiency)`` when its shape fills the
  SMs (132 x 132 output tiles of 128 x 128 on an H100: whole waves, no quantisation loss).
- The fp8 efficiency of dgx-h100.yaml is the MAMF fp8 matmul over the datasheet peak.
- TE's casts move ``e + 2`` bytes per element (read the bf16 tensor, write its fp8 row-wise
  and column-wise copies), current scaling ``2e + 2`` in 3 kernels.
- Memory: bf16 weights and gradients, 12 B/param of mixed-precision Adam state (fp32 master
  weights, momentum, variance), plus 2 B per fp8 GEMM parameter of TE's cached fp8 copies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from palmsim.api import load_experiment
from palmsim.config.specs import DTYPE_BYTES
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.costs import (
    amax_update_cost,
    fp8_weight_cast_cost,
    gemm_operand_bandwidth_bytes_per_s,
    op_pass_time_s,
)
from palmsim.mapping.mapper import map_workload
from palmsim.validate import _fp8_recipe, _precision
from palmsim.workload.builders import layer_blocks
from palmsim.workload.fp8 import amax_update_bytes, fp8_block_ops
from palmsim.workload.ops import make_op, matmul_cost

ROOT = Path(__file__).resolve().parents[2]
H100_FP8_PEAK = 1979e12  # NVIDIA H100 SXM datasheet, fp8 dense (validation/hw_specs.yaml)
H100_BF16_PEAK = 989e12


def _h100(*overrides: str):
    return load_experiment("dgx-h100", "llama2-7b", overrides=overrides)


def _linear(m: float, k: float, n: float, *, fp8: bool):
    op = make_op(
        "fc1", "matmul", matmul_cost(m, k, n, dtype_bytes=2, has_weight=True), params=k * n,
        dtype_bytes=2,
    )  # fmt: skip
    return dataclasses.replace(op, fp8=fp8)


def _mamf(dtype: str) -> tuple[float, float]:
    cases = yaml.safe_load((ROOT / "validation" / "measurements.yaml").read_text())["cases"]
    (case,) = [c for c in cases if c["id"] == "mamf_gemm_peak"]
    (row,) = [r for r in case["rows"] if r[0] == "H100-SXM" and r[1] == dtype]
    return float(row[2]), float(row[3])


def test_fp8_efficiency_is_the_mamf_fp8_matmul_over_the_fp8_peak() -> None:
    hw = _h100().hardware
    mamf, theory = _mamf("fp8_e4m3")
    assert theory * 1e12 == H100_FP8_PEAK == hw.tile.peak_for("fp8")
    assert hw.tile.gemm_max_efficiency_for("fp8") == pytest.approx(mamf / theory, abs=5e-4)
    # bf16 keeps its own fit
    mamf16, theory16 = _mamf("bf16")
    assert hw.tile.gemm_max_efficiency_for("bf16") == pytest.approx(mamf16 / theory16, abs=5e-4)


@pytest.mark.parametrize("efficiency", [1.0, None])  # at the peak, and at the fitted rate
def test_fp8_gemm_time_is_flop_over_the_fp8_rate(efficiency: float | None) -> None:
    hw = _h100().hardware
    tile = hw.tile
    if efficiency is not None:
        tile = dataclasses.replace(tile, format_efficiency=(("fp8", efficiency),))
    assert tile.gemm is not None and (tile.gemm.tile_m, tile.gemm.tile_n) == (128, 128)
    assert tile.gemm.compute_units == 132
    m = n = 128 * 132  # 132 x 132 output tiles: exactly 132 waves over 132 SMs
    k = 16384
    flop = 2.0 * m * k * n
    bandwidth = gemm_operand_bandwidth_bytes_per_s(hw)
    rate = H100_FP8_PEAK * (efficiency if efficiency is not None else 1402.6 / 1979)
    op = _linear(m, k, n, fp8=True)
    time_s, launch_s, flop_s = op_pass_time_s(
        op, "F", flop, 0.0, 0.0, tile, H100_BF16_PEAK, bandwidth, fp8_peak_flop_per_s=H100_FP8_PEAK
    )
    assert launch_s == pytest.approx(28.9e-6)
    assert flop_s == pytest.approx(flop / rate, rel=2e-3)  # 0.709 is 1402.6/1979 to 3 digits
    assert time_s == pytest.approx(28.9e-6 + flop / rate, rel=2e-3)
    # the backward's dgrad and wgrad are fp8 too: twice the FLOP at the same rate
    time_b, _, _ = op_pass_time_s(
        op, "B", 2 * flop, 0.0, 0.0, tile, H100_BF16_PEAK, bandwidth,
        fp8_peak_flop_per_s=H100_FP8_PEAK,
    )  # fmt: skip
    assert time_b == pytest.approx(2 * (28.9e-6 + flop / rate), rel=2e-3)
    # the same GEMM not in fp8 runs at the bf16 peak and the bf16 fit, 0.803
    bf16_s, _, _ = op_pass_time_s(
        _linear(m, k, n, fp8=False), "F", flop, 0.0, 0.0, tile, H100_BF16_PEAK, bandwidth
    )
    assert bf16_s == pytest.approx(28.9e-6 + flop / (H100_BF16_PEAK * 0.803), rel=1e-9)


def test_cast_ops_move_e_plus_two_bytes_per_element() -> None:
    m, k, n, e = 4096.0, 4096.0, 11008.0, 2
    (cast, gemm) = fp8_block_ops([_linear(m, k, n, fp8=False)], dtype_bytes=e, recipe="delayed")
    assert (cast.name, cast.kind, gemm.fp8) == ("fc1_cast", "cast", True)
    # forward: read the bf16 input (e), write its fp8 copy and its fp8 transpose (1 + 1)
    assert cast.bytes_fwd == (e + 2) * m * k
    # backward: the output gradient, likewise
    assert cast.bytes_bwd == (e + 2) * m * n
    assert (cast.kernels_fwd, cast.kernels_bwd, cast.flop_fwd, cast.flop_bwd) == (1, 1, 0, 0)
    # TE keeps the fp8 input for the wgrad GEMM: 1 B per element instead of e
    assert gemm.saved_bytes == _linear(m, k, n, fp8=False).saved_bytes / e
    # current scaling reads the tensor once more for its amax: 3 kernels
    (cur, _) = fp8_block_ops([_linear(m, k, n, fp8=False)], dtype_bytes=e, recipe="current")
    assert cur.bytes_fwd == (2 * e + 2) * m * k and cur.bytes_bwd == (2 * e + 2) * m * n
    assert (cur.kernels_fwd, cur.kernels_bwd) == (3, 3)


def test_which_gemms_run_in_fp8() -> None:
    exp = _h100("training.dtype=fp8")
    attn, mlp = layer_blocks(exp.workload.model, exp.workload.training, 1, 1)
    fp8 = {op.name for b in (attn, mlp) for op in b.ops if op.fp8}
    assert fp8 == {"qkv", "out_proj", "fc1", "fc2"}  # the TE linears
    gemms = {op.name for b in (attn, mlp) for op in b.ops if op.kind == "matmul"}
    assert gemms - fp8 == {"scores", "context"}  # the attention core stays bf16
    # sequence parallelism: qkv and fc1 cast the tile's s/t rows row-wise before the
    # all-gather (read 2, write 1 per element); the backward casts the output gradient and
    # transposes the re-gathered fp8 input (read 1, write 1 per element of all s rows)
    attn4, _ = layer_blocks(exp.workload.model, exp.workload.training, 1, 4, sequence_parallel=True)
    s, h = exp.workload.training.seq_len, exp.workload.model.hidden_size
    qkv = attn4.op("qkv")
    assert qkv.gemm_shape is not None
    _, m, _, n = qkv.gemm_shape
    cast = attn4.op("qkv_cast")
    assert cast.bytes_fwd == (2 + 1) * s * h / 4
    assert cast.bytes_bwd == (2 + 2) * m * n + 2 * s * h
    assert (cast.kernels_fwd, cast.kernels_bwd) == (1, 2)
    # out_proj's input is local: both copies in the forward
    out = attn4.op("out_proj")
    assert out.gemm_shape is not None
    assert attn4.op("out_proj_cast").bytes_fwd == (2 + 2) * out.gemm_shape[1] * out.gemm_shape[2]


def test_weight_cast_and_amax_update_bytes() -> None:
    tile = _h100().hardware.tile
    from palmsim.hardware.costs import OperandPlacement

    where = OperandPlacement(weights=1.0, optimizer=1.0)
    params, tensors = 1e9, 128
    cast = fp8_weight_cast_cost(params, tensors, 2, 2.0, tile, where)
    assert cast.dram_read_bytes == 2 * params and cast.dram_write_bytes == 2 * params
    assert tile.memory_ops is not None
    bw, lat = tile.memory_ops.bandwidth_bytes_per_s, tile.memory_ops.launch_latency_s
    assert cast.time_s == pytest.approx(tensors * lat + 4 * params / bw, rel=1e-12)
    # 128 linears: 3 fp8 tensors each in the forward, 2 in the backward, each an fp32 amax
    # read, a 1024-entry fp32 history read and written, a scale and inverse scale written
    assert amax_update_bytes(128, "F") == 128 * 3 * 4 * (1 + 2 * 1024 + 2)
    assert amax_update_bytes(128, "B") == 128 * 2 * 4 * (1 + 2 * 1024 + 2)
    upd = amax_update_cost(128, "F", tile, where)
    assert upd.time_s == pytest.approx(lat + amax_update_bytes(128, "F") / bw, rel=1e-12)


def _tile0_memory(*overrides: str):
    exp = load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=("hw.system.chips=[1, 8]", "training.global_batch_size=8", *overrides),
        mapping_flags={"pp": 4, "tp": 2, "dp": 1, "micro_batch_size": 1, "recompute": "full"},
    )  # fmt: skip
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    return exp, dict(plan.memory)[0]


def test_fp8_memory_closed_form() -> None:
    """Stage 0 of 4 (8 of Llama 2 7B's 32 layers and the embedding), TP 2, no ZeRO."""
    exp, bf16 = _tile0_memory()
    _, fp8 = _tile0_memory("training.dtype=fp8")
    m = exp.workload.model
    h, f, v, t = m.hidden_size, m.intermediate_size, m.vocab_size, 2
    linears = (4 * h * h + 3 * h * f) / t  # qkv, out_proj, gate+up, down on one TP rank
    norms = 2 * h  # two RMSNorm gains, replicated
    params = 8 * (linears + norms) + v * h / t  # the embedding: its vocabulary share
    e = DTYPE_BYTES["bf16"]
    for mem in (bf16, fp8):
        assert mem.gradients == pytest.approx(e * params, rel=1e-12)  # bf16 gradients
        # mixed-precision Adam: fp32 master weights, momentum and variance
        assert mem.optimizer == pytest.approx(12 * params, rel=1e-12)
    assert bf16.weights == pytest.approx(e * params, rel=1e-12)
    # plus TE's cached fp8 weight and its transpose, 1 B each per fp8 GEMM parameter
    assert fp8.weights == pytest.approx(e * params + 2 * 8 * linears, rel=1e-12)


def test_fp8_param_gather_memory_closed_form() -> None:
    """Megatron-Core --fp8-param-gather: the fp8 GEMMs' weights are their fp8 copies (the
    weight and its transpose, 1 B each) with no bf16 copy; the rest stays bf16."""
    exp, mem = _tile0_memory("training.dtype=fp8", "training.fp8_param_gather=true")
    m = exp.workload.model
    h, f, v, t = m.hidden_size, m.intermediate_size, m.vocab_size, 2
    linears = (4 * h * h + 3 * h * f) / t
    others = 8 * 2 * h + v * h / t  # the norms' gains and the embedding's share, bf16
    assert mem.weights == pytest.approx(2 * others + 2 * 8 * linears, rel=1e-12)
    assert mem.gradients == pytest.approx(2 * (others + 8 * linears), rel=1e-12)


def test_without_the_transpose_cache_only_the_layer_in_hand_holds_fp8_copies() -> None:
    """training.fp8_transpose_cache false (Megatron-Core's disable_parameter_transpose_cache):
    TE casts every micro-batch and frees the copies after the GEMMs, so of the 8 layers'
    cached copies (2 B per fp8 GEMM parameter) one layer's remain; with fp8 parameters each
    weight keeps its fp8 data (1 B) and only the layer in hand its transpose (1 B)."""
    exp, cached = _tile0_memory("training.dtype=fp8")
    _, fresh = _tile0_memory("training.dtype=fp8", "training.fp8_transpose_cache=false")
    m = exp.workload.model
    h, f, t = m.hidden_size, m.intermediate_size, 2
    linears = (4 * h * h + 3 * h * f) / t
    assert cached.weights - fresh.weights == pytest.approx(2 * 7 * linears, rel=1e-12)
    _, kept = _tile0_memory("training.dtype=fp8", "training.fp8_param_gather=true")
    _, params = _tile0_memory(
        "training.dtype=fp8", "training.fp8_param_gather=true", "training.fp8_transpose_cache=false"
    )
    assert kept.weights - params.weights == pytest.approx(7 * linears, rel=1e-12)


def _stage0(*overrides: str):
    exp = load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=("hw.system.chips=[1, 8]", "training.global_batch_size=8", *overrides),
        mapping_flags={"pp": 4, "tp": 1, "dp": 2, "micro_batch_size": 1, "zero": 1},
    )  # fmt: skip
    return exp, map_workload(exp, Chip.from_spec(exp.hardware)).programs[0]


def test_without_the_transpose_cache_every_micro_batch_casts_the_weights() -> None:
    """Stage 0 runs 4 micro-batches an iteration (8 samples over dp 2): the weights' fp8 cast,
    once per iteration with the cache (what the fp8 optimizer step adds to the bf16 one),
    runs 4 times without it: 3 more casts, each the same kernel work."""
    _, bf16 = _stage0()
    _, cached = _stage0("training.dtype=fp8")
    _, fresh = _stage0("training.dtype=fp8", "training.fp8_transpose_cache=false")
    cast_s = cached.optimizer.compute_time_s - bf16.optimizer.compute_time_s
    assert cast_s > 0
    extra_s = fresh.optimizer.compute_time_s - cached.optimizer.compute_time_s
    assert extra_s == pytest.approx(3 * cast_s, rel=1e-9)


@pytest.mark.parametrize("recipe", ["delayed", "current"])
def test_fp8_param_gather_halves_the_fp8_weights_all_gather(recipe: str) -> None:
    """After the distributed optimizer's step the replicas all-gather the fp8 weights' fp8
    data, 1 B each, the other weights at 2 B; each replica then reads the gathered fp8
    weight and writes its transpose (1 B in, 1 B out per fp8 parameter)."""
    exp, plain = _stage0("training.dtype=fp8", f"training.fp8_recipe={recipe}")
    _, fp8 = _stage0(
        "training.dtype=fp8", f"training.fp8_recipe={recipe}", "training.fp8_param_gather=true"
    )
    m = exp.workload.model
    h, f, v = m.hidden_size, m.intermediate_size, m.vocab_size
    linears = 8 * (4 * h * h + 3 * h * f)  # stage 0: 8 of the 32 layers
    params = linears + 8 * 2 * h + v * h
    assert plain.param_allgather_bytes == pytest.approx(2 * params, rel=1e-12)
    assert fp8.param_allgather_bytes == pytest.approx(2 * params - linears, rel=1e-12)
    # the optimizer step's fp8 weight work: bf16 read + 2 B of copies written, against the
    # gathered 1 B read + its 1 B transpose written
    assert plain.optimizer.dram_read_bytes - fp8.optimizer.dram_read_bytes == pytest.approx(
        (2 - 1) * linears, rel=1e-9
    )
    assert plain.optimizer.dram_write_bytes - fp8.optimizer.dram_write_bytes == pytest.approx(
        (2 - 1) * linears, rel=1e-9
    )


def test_mxfp8_param_gather_gathers_bf16() -> None:
    """MXFP8 parameters are all-gathered in bf16 through the gradient buffer and re-cast
    (megatron/core/distributed/param_and_grad_buffer.py, reuse_grad_buf_for_mxfp8_param_ag)."""
    exp = load_experiment(
        "dgx-b200", "llama2-7b",
        overrides=(
            "hw.system.chips=[1, 8]", "training.global_batch_size=8", "training.dtype=fp8",
            "training.fp8_recipe=mxfp8", "training.fp8_param_gather=true",
        ),
        mapping_flags={"pp": 4, "tp": 1, "dp": 2, "micro_batch_size": 1, "zero": 1},
    )  # fmt: skip
    program = map_workload(exp, Chip.from_spec(exp.hardware)).programs[0]
    m = exp.workload.model
    h, f, v = m.hidden_size, m.intermediate_size, m.vocab_size
    params = 8 * (4 * h * h + 3 * h * f) + 8 * 2 * h + v * h
    assert program.param_allgather_bytes == pytest.approx(2 * params, rel=1e-12)


@pytest.mark.parametrize(
    ("dtype", "zero", "match"),
    [("bf16", 1, "needs dtype fp8"), ("fp8", 3, "zero=3")],
)
def test_fp8_param_gather_refusals(dtype: str, zero: int, match: str) -> None:
    exp = load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=(
            "hw.system.chips=[1, 8]", "training.global_batch_size=8",
            f"training.dtype={dtype}", "training.fp8_param_gather=true",
        ),
        mapping_flags={"pp": 1, "tp": 1, "dp": 8, "micro_batch_size": 1, "zero": zero},
    )  # fmt: skip
    with pytest.raises(MappingError, match=match):
        map_workload(exp, Chip.from_spec(exp.hardware))


def test_a_chip_without_an_fp8_peak_refuses_fp8() -> None:
    exp = load_experiment(
        "dgx-a100-superpod", "llama2-7b", overrides=("training.dtype=fp8",),
        mapping_flags={"pp": 4, "tp": 8, "dp": 1},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"tile\.peak\.fp8"):
        map_workload(exp, Chip.from_spec(exp.hardware))


@pytest.mark.parametrize(
    ("precision", "recipe", "assumed"),
    [
        ("FP8 (Transformer Engine)", "delayed", True),
        ("fp8", "delayed", True),
        ("fp8-cs", "current", False),
        ("fp8-mx", "mxfp8", False),
        ("fp8-bs", "blockwise", False),
    ],
)
def test_validate_reads_the_fp8_recipe(precision: str, recipe: str, assumed: bool) -> None:
    assert _precision({"precision": precision}) == ("fp8", True)
    got, assumption = _fp8_recipe({}, {"precision": precision})
    assert got == recipe and (assumption is not None) == assumed


# ----------------------------------------------------------------- fused attention (TE's)


def _attn(kernel: str, *, tp: int = 1, cp: int = 1):
    exp = _h100(f"training.attention_kernel={kernel}")
    blocks = layer_blocks(exp.workload.model, exp.workload.training, 1, tp, cp=cp)
    return exp, blocks


@pytest.mark.parametrize(("tp", "cp"), [(1, 1), (4, 1), (1, 2)])
def test_fused_attention_flop_and_bytes(tp: int, cp: int) -> None:
    exp, (attn, _) = _attn("fused", tp=tp, cp=cp)
    _, (unfused, _) = _attn("unfused", tp=tp, cp=cp)
    m = exp.workload.model
    s, d, a, b = exp.workload.training.seq_len, m.head_dim, m.num_attention_heads // tp, 1
    q = s // cp  # this rank's queries, against all s keys
    op = attn.op("attention")
    names = [o.name for o in attn.ops]
    assert not {"scores", "softmax", "context", "context_layout"} & set(names)
    # flash-attn's count: 4·b·a·q·k·d, only the unmasked causal pairs, s(s+1)/2 of s², a
    # 1/cp share each under CP's load balancing; the backward 2.5 x
    pairs = s * (s + 1) / 2 / cp
    assert op.flop_fwd == pytest.approx(4 * b * a * pairs * d, rel=1e-12)
    assert op.flop_bwd == pytest.approx(2.5 * op.flop_fwd, rel=1e-12)
    # model FLOPs keep the full s x s products: those of the unfused QKᵀ and attention over V
    assert op.model_flop_fwd == pytest.approx(4 * b * a * q * s * d, rel=1e-12)
    assert attn.gemm_flop_fwd == pytest.approx(unfused.gemm_flop_fwd, rel=1e-12)
    # bytes: Q, K, V in and O out (MHA: 4 tensors of q or s rows), plus the fp32 log-sum-exp
    e, lse = 2, 4 * b * a * q
    assert op.bytes_fwd == pytest.approx(e * b * a * d * (2 * q + 2 * s) + lse, rel=1e-12)
    # it keeps Q, K and V (what selective recompute keeps of the unfused core) and its LSE
    kept = sum(o.saved_bytes_selective for o in unfused.ops if o.recompute_selective)
    assert op.saved_bytes == pytest.approx(kept + lse, rel=1e-12)
    # one call per ring step under CP (Transformer Engine's AttnFuncWithCPAndKVP2P)
    assert (op.kernels_fwd, op.kernels_bwd) == (cp, 3 * cp)


@pytest.mark.parametrize("measured", [True, False])
def test_fused_attention_time_is_its_flop_at_the_kernels_measured_rate(measured: bool) -> None:
    """cuDNN's fused attention on an H100 (FlashAttention-3 paper, Figs. 5-6, seq 8k):
    529 TFLOP/s forward, 518 backward, of the 989 TFLOP/s bf16 peak (the config's 0.535 and
    0.524); without a measured rate, the GEMM model's 0.803 (mamf_gemm_peak: 794.5 / 989)."""
    import dataclasses

    from palmsim.hardware.costs import OperandPlacement, pass_cost

    exp, (attn, _) = _attn("fused")
    hw = exp.hardware
    op = attn.op("attention")
    g = hw.tile.gemm
    assert g is not None
    tile = hw.tile
    if not measured:
        no_rate = dataclasses.replace(
            g, attention_forward_efficiency=None, attention_backward_efficiency=None
        )
        tile = dataclasses.replace(tile, gemm=no_rate)
    rate = {"F": 0.535, "B": 0.524} if measured else {"F": 0.803, "B": 0.803}
    assert abs(529 / 989 - 0.535) < 5e-4 and abs(518 / 989 - 0.524) < 5e-4
    bw = gemm_operand_bandwidth_bytes_per_s(hw)
    for phase, flop, kernels in (("F", op.flop_fwd, 1), ("B", op.flop_bwd, 3)):
        cost = pass_cost([op], phase, tile, H100_BF16_PEAK, 2, OperandPlacement(), bw)
        compute_s = flop / (H100_BF16_PEAK * rate[phase])
        nbytes = op.bytes_fwd if phase == "F" else op.bytes_bwd
        assert compute_s > nbytes / bw  # compute-bound at s = 4096
        assert cost.time_s == pytest.approx(kernels * g.launch_latency_s + compute_s, rel=1e-12)


def test_flash2_attention_runs_the_same_work_at_flash_attn_s_measured_rate() -> None:
    """The flash-attn package's FlashAttention-2 kernel on an H100 (FlashAttention-3 paper,
    Figs. 5-6, its FlashAttention-2 bars at seq 8k): 333 TFLOP/s forward, 318 backward, of
    the 989 TFLOP/s bf16 peak (the config's 0.337 and 0.322), on the fused kernel's op: the
    same FLOP, bytes and kernels. Without a FlashAttention-2 rate, the fused kernel's."""
    from palmsim.hardware.costs import OperandPlacement, pass_cost

    exp, (fused, _) = _attn("fused")
    _, (flash2, _) = _attn("flash2")
    op = fused.op("attention")
    assert flash2.op("attention") == op
    hw = exp.hardware
    assert abs(333 / 989 - 0.337) < 5e-4 and abs(318 / 989 - 0.322) < 5e-4
    tile = hw.tile.for_attention_kernel("flash2")
    g = tile.gemm
    assert g is not None
    bw = gemm_operand_bandwidth_bytes_per_s(hw)
    for phase, flop, kernels, rate in (
        ("F", op.flop_fwd, 1, 0.337),
        ("B", op.flop_bwd, 3, 0.322),
    ):
        cost = pass_cost([op], phase, tile, H100_BF16_PEAK, 2, OperandPlacement(), bw)
        compute_s = flop / (H100_BF16_PEAK * rate)
        assert cost.time_s == pytest.approx(kernels * g.launch_latency_s + compute_s, rel=1e-12)
    unset = dataclasses.replace(
        hw.tile.gemm, flash2_forward_efficiency=None, flash2_backward_efficiency=None
    )
    assert unset.for_attention_kernel("flash2") == unset  # the fused kernel's rates
    assert hw.tile.for_attention_kernel("fused") == hw.tile


def test_flash2_slows_an_iteration_by_its_attention_alone() -> None:
    """The same run with flash-attn's kernel: the iteration grows by at least the attention
    core's forward and backward at FlashAttention-2's rate less at cuDNN's (one GPU, no
    overlap to hide it), and every GEMM's time is unchanged."""
    from palmsim.api import simulate

    small = (
        "model.num_hidden_layers=2", "training.global_batch_size=2", "mapping.pp=1",
        "mapping.tp=1", "mapping.dp=1", "mapping.micro_batch_size=1", "mapping.recompute=none",
    )  # fmt: skip
    times = {}
    for kernel in ("fused", "flash2"):
        exp = _h100(f"training.attention_kernel={kernel}", *small)
        times[kernel] = simulate(exp).trace.end_time_s
    _, (attn, _) = _attn("fused")
    op = attn.op("attention")  # one layer of one sample
    per_sample = op.flop_fwd * (1 / 0.337 - 1 / 0.535) + op.flop_bwd * (1 / 0.322 - 1 / 0.524)
    extra_s = 2 * 2 * per_sample / H100_BF16_PEAK  # 2 layers, 2 micro-batches of 1
    assert times["flash2"] - times["fused"] == pytest.approx(extra_s, rel=0.02)


def test_validate_builds_the_nemo_fp8_case_as_transformer_engine_runs_it() -> None:
    """NeMo 24.07's launcher runs every job with NVTE_FUSED_ATTN=0 (NeMo-Framework-Launcher
    conf/config.yaml): Transformer Engine then runs flash-attn's kernel."""
    from palmsim.validate import case_setup

    cases = yaml.safe_load((ROOT / "validation" / "measurements.yaml").read_text())["cases"]
    (case,) = [c for c in cases if c["id"] == "nemo2407_h100_llama2_7b_8gpu"]
    hw, _, overrides, _ = case_setup(case)
    assert hw.endswith("dgx-h100.yaml")
    for expected in (
        "training.dtype=fp8",
        "training.fp8_recipe=delayed",
        "training.attention_kernel=flash2",
    ):
        assert expected in overrides


def test_validate_reads_megatron_cores_disable_parameter_transpose_cache() -> None:
    """MLPerf v4.1's Llama 2 70B LoRA on 8 H200s at TP 1 sets it (its
    megatron_gpt_peft_tuning_config.yaml): without the fp8 transposes of all 69 B frozen
    weights it fits the 141 GB the run had."""
    from palmsim.validate import case_setup

    cases = yaml.safe_load((ROOT / "validation" / "mlperf_runs.yaml").read_text())["cases"]
    (case,) = [c for c in cases if c["id"] == "mlperf_v41_nvidia_llama2_70b_lora_h200_8gpu"]
    _, _, overrides, _ = case_setup(case)
    assert "training.fp8_transpose_cache=false" in overrides
    del case["training"]["disable_parameter_transpose_cache"]
    assert "training.fp8_transpose_cache=false" not in case_setup(case)[2]


@pytest.mark.parametrize(
    ("precision", "stated", "expected", "assumed"),
    [
        ("fp8-cs", None, True, True),  # Megatron-Bridge's current-scaling recipe sets it
        ("fp8-mx", None, True, True),
        ("fp8-bs", None, False, False),  # its blockwise recipe does not
        ("fp8-cs", False, False, False),  # stated wins
        ("bf16", True, False, False),  # not an fp8 run: nothing to keep in fp8
    ],
)
def test_validate_keeps_fp8_weights_in_fp8_as_the_recipes_do(
    precision: str, stated: bool | None, expected: bool, assumed: bool
) -> None:
    from palmsim.validate import read_training_run

    cases = yaml.safe_load((ROOT / "validation" / "moe_runs.yaml").read_text())["cases"]
    (case,) = [c for c in cases if c["id"] == "mbridge_2511_h100_llama3_70b_64gpu"]
    case = {**case, "training": {**case["training"], "precision": precision}}
    if stated is not None:
        case["training"]["fp8_param_gather"] = stated
    run = read_training_run(case, str(ROOT / "validation" / "moe_runs.yaml"))
    assert run is not None
    assert ("training.fp8_param_gather=true" in run.overrides) == expected
    keys = {a.key for a in run.assumptions}
    assert ("training.fp8_param_gather" in keys) == assumed


def test_the_h200_is_the_h100_die_with_faster_hbm() -> None:
    """dgx-h200.yaml: the GH100's peaks (989 bf16, 1979 fp8 dense) and bf16 GEMM efficiency
    (MAMF: "H200 is the same" as the H100's 794.5 of 989), MAMF's H200 fp8 matmul 1453.4 of
    1979, 141 GB of HBM3e at 4.8 TB/s, and the memory kernels at the H100's measured share of
    its HBM peak (2903 of 3350 GB/s) of the H200's 4800."""
    from palmsim.config.loader import load_hardware

    h100 = load_hardware("hw_configs/dgx-h100.yaml")
    h200 = load_hardware("hw_configs/dgx-h200.yaml")
    assert h200.tile.peak_flop_per_s == h100.tile.peak_flop_per_s
    assert h200.tile.peak_for("bf16") == pytest.approx(989e12)
    assert h200.tile.gemm.max_efficiency == pytest.approx(794.5 / 989, abs=5e-4)
    assert h200.tile.efficiency_for("fp8") == pytest.approx(1453.4 / 1979, abs=5e-4)
    assert h200.dram.capacity_bytes == 141e9 and h200.dram.bandwidth_bytes_per_s == 4800e9
    assert h200.tile.memory_ops.bandwidth_bytes_per_s == pytest.approx(
        4800e9 * 2903 / 3350, rel=1e-4
    )


def test_the_h800_is_the_h100_node_with_its_nvlink_cut() -> None:
    """dgx-h800.yaml: the H100 node's GPU and NIC with the H800's NVLink, 400 GB/s both ways,
    of which DeepSeek-V3's report gives 160 GB/s as achieved (Sec. 3.2.2); an all-reduce over
    its 8 GPUs in one node takes 370 / 160 times the H100's bandwidth term."""
    from palmsim.config.loader import load_hardware

    h100 = load_hardware("hw_configs/dgx-h100.yaml")
    h800 = load_hardware("hw_configs/dgx-h800.yaml")
    assert h800.tile.peak_flop_per_s == h100.tile.peak_flop_per_s
    assert h800.dram == h100.dram
    assert h800.cluster.intra_node.bandwidth_bytes_per_s == 160e9
    assert h100.cluster.intra_node.bandwidth_bytes_per_s == 370e9
    assert h800.cluster.inter_node == h100.cluster.inter_node
