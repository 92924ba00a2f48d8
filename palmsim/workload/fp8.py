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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from palmsim.config.specs import DTYPE_BYTES
from palmsim.workload.ops import Op, cast_cost, make_op

__all__ = [
    "AMAX_HISTORY_LEN",
    "FP8_LINEARS",
    "SEQUENCE_GATHERED_INPUTS",
    "amax_update_bytes",
    "fp8_block_ops",
    "fp8_params",
    "fp8_tensors_per_linear",
    "fp8_weight_cache_bytes",
]

#: The GEMMs of TE linear modules (op names of :mod:`palmsim.workload.builders`).
FP8_LINEARS: tuple[str, ...] = (
    "qkv",
    # multi-head latent attention's projections: TELinear (duplicated) and TE's
    # LayerNormColumnParallelLinear modules in Megatron-Core's MLA layer spec
    "q_proj",
    "q_down",
    "q_up",
    "kv_down",
    "kv_up",
    "out_proj",
    "fc1",
    "fc2",
    "experts_fc1",
    "experts_fc2",
    "shared_fc1",
    "shared_fc2",
)

#: Linears whose input is the sequence-parallel all-gather of the norm's output: TE casts
#: the tile's own ``s/t`` rows and gathers them in fp8 (layernorm_linear.py, the
#: ``with_input_all_gather`` branch quantizes before ``gather_along_first_dim``). palmsim's
#: all-gather still moves them in bf16 (not modelled: the fp8 gathers).
SEQUENCE_GATHERED_INPUTS: tuple[str, ...] = ("qkv", "fc1", "q_up", "kv_up")

#: DelayedScaling's default ``amax_history_len`` (transformer_engine/common/recipe/
#: __init__.py); NeMo's GPT configs keep it (``fp8_amax_history_len: 1024``).
AMAX_HISTORY_LEN = 1024

#: Bytes of one fp32 amax, scale or inverse scale.
_FP32_BYTES = 4


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
) -> tuple[Op, ...]:
    """``ops`` with each TE linear run in fp8: marked :attr:`Op.fp8`, keeping its fp8 input
    for the backward, and preceded by its cast op (``<name>_cast``).

    ``sequence_parallel_tp`` > 1: the inputs of :data:`SEQUENCE_GATHERED_INPUTS` are cast on
    the tile's ``1/t`` share, before the all-gather, and transposed after the backward's
    all-gather (:func:`palmsim.workload.ops.cast_cost` with ``gathered_elements``).
    """
    fp8_bytes = DTYPE_BYTES["fp8"]
    out: list[Op] = []
    for op in ops:
        if op.name not in FP8_LINEARS or op.gemm_shape is None:
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
            current_scaling=recipe == "current",
            gathered_elements=gathered,
        )
        out.append(make_op(f"{op.name}_cast", "cast", cost, dtype_bytes=dtype_bytes))
        ratio = fp8_bytes / dtype_bytes
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


def fp8_weight_cache_bytes(params: float) -> float:
    """Bytes of TE's cached fp8 copies of ``params`` weights: the row-wise copy for fprop
    and the column-wise (transposed) one for dgrad, one fp8 byte each per parameter."""
    return 2.0 * DTYPE_BYTES["fp8"] * params
