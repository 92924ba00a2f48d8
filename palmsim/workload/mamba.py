"""A Mamba-2 mixer layer on one tensor-parallel tile, as Megatron-Core trains it (pure).

Megatron-Core's ``MambaMixer`` (megatron/core/ssm/mamba_mixer.py; Dao & Gu 2024, "Transformers
are SSMs", arXiv:2405.21060, Sec. 7 and 8) with ``H`` heads of width ``P``, inner width
``d = H·P``, state size ``N``, ``G`` groups and a causal convolution of width ``K``:

- ``in_proj`` (column-parallel): ``h -> 2d + 2GN + H``, the gate ``z`` (d), the input ``x``
  (d), ``B`` and ``C`` (GN each) and the step ``dt`` (H);
- ``conv1d``: a depthwise causal convolution over ``x, B, C`` (``d + 2GN`` channels, with
  bias) and its SiLU, one memory-bound kernel. Training runs it, the scan and the gate as
  one function, ``mamba_split_conv1d_scan_combined`` (Megatron-Core's default
  ``use_mamba_mem_eff_path``), which keeps the whole ``in_proj`` output and the scan's
  output for its backward and recomputes the convolution;
- the SSD scan (``mamba_chunk_scan_combined``) over chunks of ``Q`` tokens, four batched
  products per chunk (Sec. 6, "the SSD algorithm"): ``C Bᵀ`` (Q x N x Q, per group), the
  masked ``(C Bᵀ ∘ L) X`` (Q x Q x P, per head), the chunk state ``Bᵀ X`` (N x Q x P, per
  head) and the state's output ``C S`` (Q x N x P, per head); the per-head ``A``, ``D`` and
  ``dt`` bias are its parameters;
- the gate ``y·silu(z)`` inside the scan's last kernel, then an RMSNorm over ``d``
  (``RMSNormGated`` with ``norm_before_gate=False``);
- ``out_proj`` (row-parallel): ``d -> h``, then the all-reduce.

Tensor parallelism splits the heads and the groups (``H/t``, ``G/t``), as attention splits
its heads. The scan's products are costed as GEMMs of their shapes (the Triton kernels run
them on tensor cores); their bytes are the kernels' own traffic, not the products' operands:
the forward reads ``x``, ``B``, ``C`` and ``dt``, writes and re-reads the fp32 chunk states
(``mamba_ssm``'s ``states_in_fp32``: ``4·H·N·P`` bytes per chunk, written by the chunk-state
kernel, read and rewritten by the state passing, read by the chunk scan) and the fp32
``C Bᵀ`` of each chunk, and writes ``y``; the backward moves twice the forward's bytes, as
:func:`palmsim.workload.ops.matmul_cost` counts an activation product's backward.
"""

from __future__ import annotations

from palmsim.config.specs import ModelSpec
from palmsim.errors import MappingError
from palmsim.workload.ops import (
    Op,
    elementwise_cost,
    kernel_products_op,
    linear_op,
    make_op,
    rms_norm_op,
)

__all__ = ["mamba_mixer_ops"]

#: Bytes per element of the scan's fp32 chunk states and ``C Bᵀ`` (mamba_ssm ssd_combined.py:
#: ``states_in_fp32=True``; ``_bmm_chunk_fwd(C, B, ..., output_dtype=torch.float32)``).
_FP32_BYTES = 4


def mamba_mixer_ops(
    model: ModelSpec, *, tp: int, micro_batch_size: int, seq_len: int, dtype_bytes: int
) -> tuple[tuple[Op, ...], tuple[tuple[str, str, float], ...]]:
    """The mixer's ops on one of ``tp`` tiles for one micro-batch, from ``in_proj`` to
    ``out_proj`` (the pre-norm and the residual are the caller's), and their dataflow edges
    ``(producer, consumer, bytes)``; ``"mamba_in"`` takes the normed input.

    Raises:
        MappingError: ``tp`` does not divide the heads or the groups.
    """
    heads, groups = model.mamba_num_heads, model.mamba_num_groups
    if heads % tp or groups % tp:
        raise MappingError(
            f"tp={tp} does not divide model {model.name!r}'s {heads} Mamba heads and "
            f"{groups} groups (Megatron-Core splits both over the TP ranks)"
        )
    e, b, s, h = dtype_bytes, micro_batch_size, seq_len, model.hidden_size
    p, n, q = model.mamba_head_dim, model.mamba_state_size, model.mamba_chunk_size
    k = model.mamba_conv_kernel
    h_t, g_t = heads // tp, groups // tp
    d_t = h_t * p  # inner width on the tile
    conv_t = d_t + 2 * g_t * n  # x, B, C
    in_t = 2 * d_t + 2 * g_t * n + h_t  # z, x, B, C, dt
    tokens = b * s
    chunks = b * s / q  # chunks of the micro-batch (a last partial chunk counted pro rata)
    states_bytes = _FP32_BYTES * chunks * h_t * n * p  # one pass over the chunk states

    def scan(name: str, batch: float, m: int, kk: int, nn: int, fwd_bytes: float, **kw) -> Op:
        return kernel_products_op(name, batch, m, kk, nn, fwd_bytes=fwd_bytes, dtype_bytes=e, **kw)

    ops = (
        linear_op("mamba_in", tokens, h, in_t, dtype_bytes=e, saved_bytes=e * tokens * h),
        # the causal convolution and its SiLU, the first kernel of the fused function, which
        # keeps the whole in_proj output for its backward (and recomputes the convolution)
        make_op(
            "mamba_conv",
            "elementwise",
            elementwise_cost(tokens * conv_t, dtype_bytes=e),
            params=conv_t * (k + 1),  # depthwise weights and bias
            param_tensors=2,
            dtype_bytes=e,
            saved_bytes=e * tokens * in_t,
        ),
        # C Bᵀ per chunk and group: reads B and C, writes the fp32 Q x Q products
        scan(
            "ssd_cb", chunks * g_t, q, n, q,
            e * tokens * 2 * g_t * n + _FP32_BYTES * chunks * g_t * q * q,
        ),
        # chunk states Bᵀ X: reads x, B and dt, writes the states; the state passing reads
        # and rewrites them
        scan(
            "ssd_states", chunks * h_t, n, q, p,
            e * tokens * (d_t + g_t * n + h_t) + 3 * states_bytes,
        ),
        # the chunk scan: (C Bᵀ ∘ L) X reads C Bᵀ and x, C S reads C and the states, the
        # gate reads z; writes y·silu(z) and keeps y
        scan(
            "ssd_diag", chunks * h_t, q, q, p,
            _FP32_BYTES * chunks * g_t * q * q + e * tokens * 3 * d_t,
            params=3 * h_t,  # A, D and the dt bias of each head
            param_tensors=3,
            saved_bytes=e * tokens * d_t,
        ),
        scan("ssd_out", chunks * h_t, q, n, p, e * tokens * g_t * n + states_bytes),
        # RMSNorm of the gated output (mamba_ssm's RMSNormGated, applied after the gate);
        # keeps its input
        rms_norm_op("mamba_norm", tokens, d_t, dtype_bytes=e),
        linear_op("mamba_out", tokens, d_t, h, dtype_bytes=e, saved_bytes=e * tokens * d_t),
    )  # fmt: skip
    edges = (
        ("mamba_in", "mamba_conv", e * tokens * conv_t),
        ("mamba_conv", "ssd_cb", e * tokens * 2 * g_t * n),
        ("mamba_conv", "ssd_states", e * tokens * (d_t + g_t * n)),
        ("ssd_cb", "ssd_diag", _FP32_BYTES * chunks * g_t * q * q),
        ("ssd_states", "ssd_out", states_bytes),
        ("mamba_conv", "ssd_diag", e * tokens * d_t),
        ("mamba_in", "ssd_diag", e * tokens * d_t),  # z, the gate
        ("ssd_out", "ssd_diag", e * tokens * d_t),
        ("ssd_diag", "mamba_norm", e * tokens * d_t),
        ("mamba_norm", "mamba_out", e * tokens * d_t),
    )
    return ops, edges
