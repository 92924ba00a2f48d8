"""fp8 training as NVIDIA Transformer Engine (TE) runs it under Megatron-Core.

``training.dtype: fp8`` is TE's fp8 autocast over the transformer layers (Megatron-Core
``--fp8-format hybrid``; megatron/core/fp8_utils.py ``get_fp8_context``):

- **Which GEMMs run in fp8.** The layers' TE linear modules: the QKV (or MLA's q/kv down and
  up) and attention-output projections, the MLP's fc1 and fc2, the routed experts' grouped
  GEMMs and the shared experts. All three products of each, fprop, dgrad and wgrad, run in fp8
  (the recipe's ``override_linear_precision`` is ``(False, False, False)``; Megatron-Core sets
  wgrad to bf16 only with ``--no-fp8-wgrad``). The HYBRID format uses E4M3 for the forward
  tensors (inputs, weights) and E5M2 for the gradients
  (transformer_engine/common/recipe/__init__.py, ``Format.HYBRID``); both run at the same
  tensor-core rate, the chip's ``tile.peak.fp8``.
- **What stays bf16.** The attention core (QKᵀ, softmax, attention over V: TE's
  DotProductAttention is bf16 unless the recipe's ``fp8_dpa``, off by default), norms,
  activations, dropout and residuals, the MoE router (a plain ``torch`` linear in
  megatron/core/transformer/moe/router.py), the embedding and the LM head (Megatron-Core's
  ``output_layer`` is a ``tensor_parallel.ColumnParallelLinear``, not a TE module). Stored
  tensors (activations between ops, weights, gradients) are bf16.
- **The casts around each fp8 GEMM** (:func:`palmsim.workload.ops.cast_cost`): the GEMM's
  input is cast to fp8 with its transposed copy for the wgrad GEMM in the forward, the
  output gradient likewise in the backward. The linear keeps its fp8 column-wise input for
  the backward, not the bf16 one (linear.py ``_linear_forward`` saves the quantized
  ``inputmat``), so its saved bytes shrink by ``fp8/e``.
- **Weights** are cast to fp8 (row-wise and the transposed column-wise copy for dgrad) once
  per iteration: Megatron-Core passes ``is_first_microbatch`` and TE refreshes its cached
  copies only then (linear.py ``update_ws = is_first_microbatch is None or
  is_first_microbatch``; ``cache_name = "weight"``). The copies stay allocated:
  :func:`fp8_weight_cache_bytes`.
- **Delayed scaling's amax update.** When the fp8 autocast region exits after a forward,
  and after the backward of its first module, TE concatenates the amaxes of all its fp8
  tensors, all-reduces them (MAX) over the amax reduction group and updates every amax
  history and scale in one fused kernel (transformer_engine/pytorch/quantization.py,
  ``FP8GlobalStateManager.reduce_and_update_fp8_tensors``:
  ``tex.fused_amax_and_scale_update_after_reduction``). Megatron-Core's group is TP x DP x CP
  (``parallel_state.get_amax_reduction_group(with_context_parallel=True)``).
  :func:`amax_update_bytes` is the kernel's traffic.
- **MXFP8** (``fp8_recipe: mxfp8``, TE's ``MXFP8BlockScaling``, Blackwell's block-scaled
  tensor cores): every 32 consecutive elements share one E8M0 scale (a power of two, one
  byte: ``MXFP8_BLOCK_SCALING_SIZE = 32`` in transformer_engine/pytorch/constants.py, the
  ``torch.uint8`` scale-inverse tensors of ``MXFP8Quantizer`` in
  transformer_engine/pytorch/tensor/mxfp8_tensor.py). A row-wise block runs along a row, a
  column-wise one down a column, so a tensor and its transpose are quantized separately
  from the bf16 data ("both versions are computed from the high precision input",
  ``MXFP8BlockScaling``'s docstring) and each fp8 copy carries ``1/32`` B of scales per
  element; weights are scaled 1x32 as well (``enable_2d_quantization`` off by default).
  The block amaxes are taken inside the cast kernel (transformer_engine/common/cast/mxfp8/
  quantize_mxfp8.cuh): no amax history, no amax all-reduce, no update kernel. The GEMMs run
  at the chip's fp8 rate (the block-scaled MMA has the fp8 peak). The all-gather of an MXFP8
  tensor gathers its column-wise copy too (distributed.py ``_all_gather_mxfp8``), so under
  sequence parallelism the local rows are cast both ways before the gather and nothing is
  transposed after it. The scale tensors' padding (to multiples of 128 x 4) is not counted.
- **Blockwise** (``fp8_recipe: blockwise``, TE's ``Float8BlockScaling``, DeepSeek-V3's
  scheme; Hopper and Blackwell, quantization.py ``_compute_fp8_block_scaling_support``):
  activations and gradients in 1x128 blocks, weights in 128x128 blocks
  (``x_block_scaling_dim = 1``, ``w_block_scaling_dim = 2``), each block with an fp32 scale
  (``Float8BlockQuantizer``, ``block_len = 128``, float32 scale-inverse tensors in
  transformer_engine/pytorch/tensor/float8_blockwise_tensor.py): ``4/128`` B per element of
  an activation copy, ``4/128²`` of a weight copy. Both copies come from the bf16 data in one
  kernel, the block amaxes inside it: no amax history. Its all-gather gathers the column-wise
  copy too but leaves it interleaved by rank, so the backward reorders it (one more pass).

- **NVFP4** (``fp8_recipe: nvfp4``, TE's ``NVFP4BlockScaling``, Blackwell; TE's
  docs/features/low_precision_training/nvfp4/nvfp4.rst): the same linears' three GEMMs take
  4-bit E2M1 operands (``x = x_e2m1 * s_block * s_global``) and run at the chip's NVFP4
  tensor-core rate (``tile.peak.nvfp4``, :attr:`Fp8Scaling.gemm_dtype`). Activations and
  gradients are scaled in 1x16 blocks, each with an E4M3 scale (1 B per 16 elements), row-wise
  and column-wise copies cast separately; weights in 16x16 blocks ("2D scaling for weights",
  so their two copies agree and one is the other's transpose). The per-tensor fp32 scale
  comes from the tensor's global amax, an amax pass before each cast as current scaling's. The
  wgrad GEMM's operands go through a 16-point random Hadamard transform and the gradients are
  rounded stochastically; palmsim takes both inside the cast kernel (TE fuses them with the
  column-wise quantization), so they cost no pass of their own.

:data:`FP8_SCALING` holds what each recipe moves and keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from palmsim.config.specs import DTYPE_BYTES, FP8_LINEAR_OPS, NVFP4_BLOCK_ELEMENTS
from palmsim.workload.ops import Op, cast_cost, make_op

__all__ = [
    "AMAX_HISTORY_LEN",
    "FP8_BLOCK_LEN",
    "FP8_LINEARS",
    "FP8_SCALING",
    "MXFP8_BLOCK_ELEMENTS",
    "SEQUENCE_GATHERED_INPUTS",
    "Fp8Scaling",
    "amax_update_bytes",
    "fp8_block_ops",
    "fp8_params",
    "fp8_tensors_per_linear",
    "fp8_weight_cache_bytes",
    "fp8_weight_copy_bytes",
]

#: The GEMMs of TE linear modules (op names of :mod:`palmsim.workload.builders`; listed in
#: :data:`palmsim.config.specs.FP8_LINEAR_OPS`, which ``training.bf16_linears`` names).
FP8_LINEARS: tuple[str, ...] = FP8_LINEAR_OPS

#: Linears whose input is the sequence-parallel all-gather of the norm's output: TE casts
#: the tile's own ``s/t`` rows and gathers them in fp8 (layernorm_linear.py, the
#: ``with_input_all_gather`` branch quantizes before ``gather_along_first_dim``). palmsim's
#: all-gather still moves them in bf16 (not modelled: the fp8 gathers).
SEQUENCE_GATHERED_INPUTS: tuple[str, ...] = ("qkv", "fc1", "q_up", "kv_up", "mamba_in", "gdn_in")

#: DelayedScaling's default ``amax_history_len`` (transformer_engine/common/recipe/
#: __init__.py); NeMo's GPT configs keep it (``fp8_amax_history_len: 1024``).
AMAX_HISTORY_LEN = 1024

#: Bytes of one fp32 amax, scale or inverse scale.
_FP32_BYTES = 4

#: Elements sharing one MXFP8 scale (TE's ``MXFP8_BLOCK_SCALING_SIZE``, the OCP MX block).
MXFP8_BLOCK_ELEMENTS = 32
#: Bytes of one MXFP8 scale: E8M0, 8 exponent bits (``MXFP8Quantizer``'s uint8 scales).
_E8M0_BYTES = 1
#: Side of a blockwise-scaling block (``Float8BlockQuantizer.block_len``): 1x128, 128x128.
FP8_BLOCK_LEN = 128
#: Bytes of one NVFP4 block scale: E4M3, one byte.
_E4M3_BYTES = 1
#: Bytes of one E2M1 value: 4 bits.
_E2M1_BYTES = 0.5


@dataclass(frozen=True, slots=True)
class Fp8Scaling:
    """What one Transformer Engine fp8 recipe moves and keeps besides the fp8 values."""

    #: scale bytes per element of one fp8 copy of an activation or a gradient (0: one
    #: per-tensor fp32 scale, negligible)
    scale_bytes: float
    #: scale bytes per element of one fp8 copy of a weight
    weight_scale_bytes: float
    #: an amax kernel over the bf16 tensor before each cast (current scaling)
    amax_pass: bool
    #: the quantized tensor all-gathers its column-wise copy (no transpose after a gather)
    columnwise_gather: bool
    #: that gathered column-wise copy arrives interleaved by rank and is reordered (one pass)
    reorder_gathered: bool
    #: an amax history per tensor, updated after each pass (delayed scaling)
    amax_history: bool
    #: bytes of one quantized value (1 for fp8, 0.5 for a 4-bit E2M1 one)
    element_bytes: float = DTYPE_BYTES["fp8"]
    #: the tensor-core format its GEMMs run in: the ``tile.peak`` and
    #: ``tile.format_efficiency`` entry they take
    gemm_dtype: str = "fp8"


#: Each ``training.fp8_recipe`` (:data:`palmsim.config.specs.FP8_RECIPES`): delayed and
#: current scaling keep one fp32 scale per tensor; MXFP8 one E8M0 byte per 32 elements of
#: each copy, weights included; blockwise an fp32 scale per 1x128 block of an activation or
#: gradient copy and per 128x128 block of a weight copy; NVFP4 half-byte values with an E4M3
#: byte per 1x16 block of an activation or gradient copy and per 16x16 block of a weight copy
#: (the module docstring cites them).
FP8_SCALING: dict[str, Fp8Scaling] = {
    "delayed": Fp8Scaling(0.0, 0.0, False, False, False, amax_history=True),
    "current": Fp8Scaling(0.0, 0.0, True, False, False, amax_history=False),
    "mxfp8": Fp8Scaling(
        _E8M0_BYTES / MXFP8_BLOCK_ELEMENTS,
        _E8M0_BYTES / MXFP8_BLOCK_ELEMENTS,
        amax_pass=False,
        columnwise_gather=True,
        reorder_gathered=False,
        amax_history=False,
    ),
    "blockwise": Fp8Scaling(
        _FP32_BYTES / FP8_BLOCK_LEN,
        _FP32_BYTES / FP8_BLOCK_LEN**2,
        amax_pass=False,
        columnwise_gather=True,
        reorder_gathered=True,
        amax_history=False,
    ),
    "nvfp4": Fp8Scaling(
        _E4M3_BYTES / NVFP4_BLOCK_ELEMENTS,
        _E4M3_BYTES / NVFP4_BLOCK_ELEMENTS**2,
        amax_pass=True,
        columnwise_gather=True,
        reorder_gathered=False,
        amax_history=False,
        element_bytes=_E2M1_BYTES,
        gemm_dtype="nvfp4",
    ),
}


def fp8_tensors_per_linear(phase: str) -> int:
    """fp8 tensors of one TE linear (one GEMM) with delayed-scaling state in a pass: the
    forward's input, weight and output, the backward's output gradient and input gradient
    (transformer_engine/pytorch/module/base.py: ``num_gemms * 3`` forward quantizers,
    ``num_gemms * 2`` backward; the slots of ``FP8FwdTensors``/``FP8BwdTensors``)."""
    return 3 if phase == "F" else 2


def amax_update_bytes(linears: int, phase: str, history_len: int = AMAX_HISTORY_LEN) -> float:
    """Bytes the fused amax-and-scale update of one pass moves for ``linears`` TE linears:
    it reads the reduced amaxes, reads and rolls every amax history (read and write
    ``history_len`` fp32 values per tensor) and writes each scale and inverse scale."""
    tensors = linears * fp8_tensors_per_linear(phase)
    return tensors * _FP32_BYTES * (1 + 2 * history_len + 2)


def fp8_block_ops(
    ops: Sequence[Op],
    *,
    dtype_bytes: float,
    recipe: str,
    sequence_parallel_tp: int = 1,
    keep_bf16: Collection[str] = (),
) -> tuple[Op, ...]:
    """``ops`` with each TE linear run in fp8: marked :attr:`Op.fp8`, keeping its fp8 input
    for the backward, and preceded by its cast op (``<name>_cast``); the linears named in
    ``keep_bf16`` (``training.bf16_linears``) stay as they are.

    ``sequence_parallel_tp`` > 1: the inputs of :data:`SEQUENCE_GATHERED_INPUTS` are cast on
    the tile's ``1/t`` share, before the all-gather, and transposed after the backward's
    all-gather (:func:`palmsim.workload.ops.cast_cost` with ``gathered_elements``).
    """
    scaling = FP8_SCALING[recipe]
    fp8_bytes = scaling.element_bytes
    out: list[Op] = []
    for op in ops:
        if op.name not in FP8_LINEARS or op.name in keep_bf16 or op.gemm_shape is None:
            out.append(op)
            continue
        batch, m, k, n = op.gemm_shape
        inputs, gathered = batch * m * k, 0.0
        if op.name in SEQUENCE_GATHERED_INPUTS and sequence_parallel_tp > 1:
            inputs, gathered = inputs / sequence_parallel_tp, inputs
        cost = cast_cost(
            inputs,
            batch * m * n,
            dtype_bytes=dtype_bytes,
            fp8_bytes=fp8_bytes,
            scale_bytes=scaling.scale_bytes,
            amax_pass=scaling.amax_pass,
            columnwise_gather=scaling.columnwise_gather,
            reorder_gathered=scaling.reorder_gathered,
            gathered_elements=gathered,
        )
        out.append(make_op(f"{op.name}_cast", "cast", cost, dtype_bytes=dtype_bytes))
        # the fp8 copy kept for wgrad, with its scales
        ratio = (fp8_bytes + scaling.scale_bytes) / dtype_bytes
        out.append(
            dataclasses.replace(
                op,
                fp8=True,
                saved_bytes=op.saved_bytes * ratio,
                saved_bytes_selective=op.saved_bytes_selective * ratio,
            )
        )
    return tuple(out)


def fp8_params(ops: Sequence[Op]) -> float:
    """Parameters of the fp8 GEMMs among ``ops`` (the weights TE casts to fp8)."""
    return float(sum(op.params for op in ops if op.fp8))


def fp8_weight_copy_bytes(recipe: str) -> float:
    """Bytes per parameter of TE's fp8 copies of a weight under ``recipe``: the row-wise copy
    for fprop and the column-wise (transposed) one for dgrad, each one quantized value plus
    its share of the scales (2 B per parameter with per-tensor scales, 2·(1 + 1/32) with
    MXFP8's, 2·(1 + 4/128²) with blockwise scaling's, 2·(0.5 + 1/16²) with NVFP4's)."""
    scaling = FP8_SCALING[recipe]
    return 2.0 * (scaling.element_bytes + scaling.weight_scale_bytes)


def fp8_weight_cache_bytes(params: float, recipe: str) -> float:
    """Bytes of TE's cached fp8 copies of ``params`` weights (:func:`fp8_weight_copy_bytes`),
    kept from the iteration's first micro-batch to its last."""
    return fp8_weight_copy_bytes(recipe) * params
