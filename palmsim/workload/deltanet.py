"""A Gated DeltaNet layer (linear attention) on one tensor-parallel tile (pure).

Qwen3-Next's linear-attention layers (Hugging Face ``Qwen3NextGatedDeltaNet``,
transformers/models/qwen3_next/modeling_qwen3_next.py; Yang, Kautz and Hatamizadeh, "Gated
Delta Networks", ICLR 2025, arXiv:2412.06464) with ``H_k`` key heads of width ``d_k``,
``H_v`` value heads of width ``d_v`` (the query and key heads repeated to the value heads, as
grouped-query attention shares them) and a causal convolution of width ``K``:

- ``in_proj_qkvz`` and ``in_proj_ba`` (column-parallel, one GEMM here): ``h -> 2·H_k·d_k +
  2·H_v·d_v + 2·H_v``, the query, key, value, output gate ``z`` and the per-head ``β`` and
  decay ``a``;
- ``conv1d``: a depthwise causal convolution over ``q, k, v`` (``2·H_k·d_k + H_v·d_v``
  channels, no bias) and its SiLU, one memory-bound kernel;
- the chunked gated delta rule (flash-linear-attention's ``chunk_gated_delta_rule``, chunks
  of ``C`` = 64 tokens, ``fla/ops/gated_delta_rule/chunk.py``): per chunk and value head the
  products ``A = (β K) Kᵀ`` (C x d_k x C), the triangular solve ``(I + A)⁻¹`` (C³/3 multiply-
  adds), ``W = T (β K)`` and ``U = T (β V)`` (C x C x d_k and C x C x d_v), the state pass
  ``V' = U - W S`` and ``S ← S + Kᵀ V'`` (C x d_k x d_v each), and the output
  ``O = Q S + (Q Kᵀ ∘ M) V'`` (C x d_k x d_v, C x d_k x C, C x C x d_v); the per-head decay
  ``A_log`` and ``dt_bias`` are its parameters;
- the gated RMSNorm ``norm(o)·silu(z)`` over ``d_v`` (``Qwen3NextRMSNormGated``);
- ``out_proj`` (row-parallel): ``H_v·d_v -> h``, then the all-reduce.

Tensor parallelism splits the key and value heads (``H_k/t``, ``H_v/t``). The rule's products
are costed as GEMMs of their shapes (the Triton kernels run them on tensor cores), the
backward at twice the forward as :func:`palmsim.workload.ops.matmul_cost` counts an activation
product's; their bytes are the kernels' own traffic: the forward reads ``q, k, v`` and the
gates, writes and re-reads the fp32 chunk states (``4·H_v·d_k·d_v`` bytes a chunk) and writes
``o``.
"""

from __future__ import annotations

import dataclasses

from palmsim.config.specs import ModelSpec
from palmsim.errors import MappingError
from palmsim.workload.ops import (
    Op,
    OpCost,
    elementwise_cost,
    kernel_products_op,
    linear_op,
    make_op,
    matmul_cost,
    rms_norm_op,
)

__all__ = ["DELTA_RULE_CHUNK_TOKENS", "gated_deltanet_ops"]

#: Tokens per chunk of flash-linear-attention's chunked gated delta rule
#: (``chunk_gated_delta_rule``: ``BT = 64``, the chunk size of its kernels).
DELTA_RULE_CHUNK_TOKENS = 64

#: Bytes per element of the rule's fp32 chunk states (``chunk_gated_delta_rule_fwd_h`` keeps
#: ``h`` in float32).
_FP32_BYTES = 4


def gated_deltanet_ops(
    model: ModelSpec, *, tp: int, micro_batch_size: int, seq_len: int, dtype_bytes: int
) -> tuple[tuple[Op, ...], tuple[tuple[str, str, float], ...]]:
    """The layer's ops on one of ``tp`` tiles for one micro-batch, from the input projection
    to ``out_proj`` (the pre-norm and the residual are the caller's), and their dataflow
    edges ``(producer, consumer, bytes)``; ``"gdn_in"`` takes the normed input.

    Raises:
        MappingError: ``tp`` does not divide the key or the value heads.
    """
    key_heads, value_heads = model.linear_attention_key_heads, model.linear_attention_value_heads
    if key_heads % tp or value_heads % tp:
        raise MappingError(
            f"tp={tp} does not divide model {model.name!r}'s {key_heads} key and {value_heads} "
            "value heads of linear attention (tensor parallelism splits both)"
        )
    e, b, s, h = dtype_bytes, micro_batch_size, seq_len, model.hidden_size
    dk, dv = model.linear_attention_key_dim, model.linear_attention_value_dim
    k_t, v_t = key_heads // tp, value_heads // tp
    c = DELTA_RULE_CHUNK_TOKENS
    qk_t, val_t = 2 * k_t * dk, v_t * dv  # q and k; v (and z) on the tile
    conv_t = qk_t + val_t
    in_t = qk_t + 2 * val_t + 2 * v_t  # q, k, v, z, β, a
    tokens = b * s
    chunks = tokens / c  # a last partial chunk counted pro rata
    heads = chunks * v_t  # the rule's (chunk, value head) pairs
    states_bytes = _FP32_BYTES * heads * dk * dv  # one pass over the chunk states

    def rule(name: str, batch: float, m: float, kk: float, nn: float, fwd_bytes: float) -> Op:
        return kernel_products_op(name, batch, m, kk, nn, fwd_bytes=fwd_bytes, dtype_bytes=e)

    qkv_bytes = e * tokens * conv_t
    ops = (
        linear_op("gdn_in", tokens, h, in_t, dtype_bytes=e, saved_bytes=e * tokens * h),
        # the causal convolution over q, k and v and its SiLU; keeps its input
        make_op(
            "gdn_conv",
            "elementwise",
            elementwise_cost(tokens * conv_t, dtype_bytes=e),
            params=conv_t * model.linear_attention_conv_kernel,  # depthwise, no bias
            dtype_bytes=e,
            saved_bytes=qkv_bytes,
        ),
        # A = (β K) Kᵀ per chunk and head: reads k and β, writes the fp32 C x C blocks
        rule("gdn_kkt", heads, c, dk, c, e * tokens * qk_t / 2 + _FP32_BYTES * heads * c * c),
        # (I + A)⁻¹: C³/3 multiply-adds per chunk and head, in place
        rule("gdn_solve", heads / 3, c, c, c, 2 * _FP32_BYTES * heads * c * c),
        # W = T (β K) and U = T (β V): read T, k and v, write w and u
        rule("gdn_wu", heads, c, c, dk + dv, e * tokens * conv_t + _FP32_BYTES * heads * c * c),
        # the state pass: V' = U - W S and S <- S + Kᵀ V' per chunk; writes and re-reads the
        # fp32 states
        rule("gdn_state", 2 * heads, c, dk, dv, 2 * e * tokens * val_t + 3 * states_bytes),
        # O = Q S + (Q Kᵀ ∘ M) V': reads q, k, v' and the states, writes o; keeps o
        make_op(
            "gdn_out_rule",
            "matmul",
            _output_cost(heads, c, dk, dv, e, e * tokens * conv_t + states_bytes),
            params=2 * v_t,  # A_log and dt_bias of each value head
            param_tensors=2,
            dtype_bytes=e,
            saved_bytes=e * tokens * val_t,
        ),
        # norm(o)·silu(z), an RMSNorm over each head's d_v with one gain of d_v shared by the
        # heads (Qwen3NextRMSNormGated(head_v_dim)); keeps its input
        dataclasses.replace(rms_norm_op("gdn_norm", tokens, val_t, dtype_bytes=e), params=dv),
        linear_op("gdn_out", tokens, val_t, h, dtype_bytes=e, saved_bytes=e * tokens * val_t),
    )  # fmt: skip
    edges = (
        ("gdn_in", "gdn_conv", qkv_bytes),
        ("gdn_conv", "gdn_kkt", e * tokens * qk_t / 2),
        ("gdn_kkt", "gdn_solve", _FP32_BYTES * heads * c * c),
        ("gdn_solve", "gdn_wu", _FP32_BYTES * heads * c * c),
        ("gdn_conv", "gdn_wu", e * tokens * (qk_t / 2 + val_t)),
        ("gdn_wu", "gdn_state", 2 * e * tokens * val_t),
        ("gdn_state", "gdn_out_rule", states_bytes),
        ("gdn_conv", "gdn_out_rule", e * tokens * qk_t),
        ("gdn_out_rule", "gdn_norm", e * tokens * val_t),
        ("gdn_in", "gdn_norm", e * tokens * val_t),  # z, the gate
        ("gdn_norm", "gdn_out", e * tokens * val_t),
    )
    return ops, edges


def _output_cost(
    heads: float, c: int, dk: int, dv: int, dtype_bytes: int, fwd_bytes: float
) -> OpCost:
    """The rule's output kernel: per chunk and head ``Q S`` (C x d_k x d_v), ``Q Kᵀ`` (C x
    d_k x C) and its masked product with ``V'`` (C x C x d_v), one kernel of the three
    products' FLOP, the backward at twice the forward."""
    products = (
        matmul_cost(c, dk, dv, batch=heads, dtype_bytes=dtype_bytes),
        matmul_cost(c, dk, c, batch=heads, dtype_bytes=dtype_bytes),
        matmul_cost(c, c, dv, batch=heads, dtype_bytes=dtype_bytes),
    )
    flop = sum(p.flop_fwd for p in products)
    return OpCost(
        flop,
        sum(p.flop_bwd for p in products),
        fwd_bytes,
        2.0 * fwd_bytes,
        gemm_shape=products[0].gemm_shape,
    )
