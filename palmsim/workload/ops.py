"""Per-op cost functions: FLOP and activation bytes of one op on one tile, and the ``Op`` record.

Every op kind has one cost function registered in :data:`OPS`. A cost function takes tensor
sizes (element counts, already divided by the tensor-parallel degree where the op is sharded)
and the bytes per element of the compute dtype, and returns an :class:`OpCost` for one
micro-batch on one tile.

Conventions, shared by every kind:

- FLOP count multiply and add separately, so a matmul of ``(m, k) @ (k, n)`` is ``2·m·k·n``
  FLOP (Narayanan et al. SC21, Appendix: "a m×k by k×n matmul needs 2mkn FLOPs").
- Only matrix multiplications have FLOP. Norms, softmax, dropout, elementwise activations,
  biases, layout copies, embedding gathers and the loss are memory-bound on every machine
  palmsim models, so palmsim charges them their bytes and 0 FLOP. There are deliberately no
  per-element FLOP constants.
- ``bytes_*`` are activation bytes read plus written by the op. Weights are never in them: an
  op's weights are :attr:`Op.weight_bytes`, read once by the forward and once by the backward;
  the weight-gradient the backward writes has the same size and is accounted by the mapper
  with the gradient memory.
- Ops are the kernels a GPU framework runs: Megatron-LM's GPT layer with its default fusions
  (masked softmax, bias-GeLU, bias-dropout-add) and PyTorch's layout copies and bias
  kernels. An op counts the kernels each pass launches (``kernels_fwd``/``kernels_bwd``,
  each paying a launch latency on a GPU); work fused into another op's kernel counts none.
- Tensors are ``e`` bytes per element (``e = DTYPE_BYTES[dtype]``). Dropout masks are 1 byte
  per element (Korthikanti et al. 2022, Sec 4.1). The cross-entropy keeps fp32 values.

Sources: Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters
Using Megatron-LM", SC21, Appendix (FLOP counts); Korthikanti et al., "Reducing Activation
Recomputation in Large Transformer Models", MLSys 2023, Sec 4 and Table 2 (stored activations).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from palmsim.registry import Registry

__all__ = [
    "BLOCK_INPUT",
    "LOSS_BYTES_PER_ELEMENT",
    "MASK_BYTES_PER_ELEMENT",
    "OPS",
    "Op",
    "OpCost",
    "attended_pairs",
    "bias_cost",
    "cast_cost",
    "copy_cost",
    "dropout_cost",
    "elementwise_cost",
    "embedding_cost",
    "fused_attention_cost",
    "kernel_products_op",
    "linear_op",
    "loss_cost",
    "make_op",
    "matmul_cost",
    "norm_cost",
    "rms_norm_op",
    "softmax_cost",
]

#: Source name in a block's dataflow edges (:attr:`palmsim.workload.builders.Block.edges`)
#: standing for the block's input tensor (the output of the previous block's last op).
BLOCK_INPUT = "<input>"

#: A dropout mask stores one byte per element (Korthikanti et al. 2022, Sec 4.1).
MASK_BYTES_PER_ELEMENT = 1

#: The cross-entropy loss works on (and keeps) fp32 values, 4 bytes per element, whatever the
#: compute dtype (Korthikanti et al. 2022, Sec 4.3 count the loss's logits at 4 B each).
LOSS_BYTES_PER_ELEMENT = 4


@dataclass(frozen=True, slots=True)
class OpCost:
    """What a cost function returns: FLOP and activation bytes of one op on one tile.

    Attributes:
        flop_fwd: forward FLOP [FLOP].
        flop_bwd: backward FLOP (input gradient plus weight gradient) [FLOP].
        bytes_fwd: activation bytes read plus written by the forward, weights excluded [B].
        bytes_bwd: activation bytes read plus written by the backward, weights and weight
            gradients excluded [B].
        gemm_shape: ``(batch, m, k, n)`` of a matrix multiplication's forward
            ``C[m, n] = A[m, k] @ B[k, n]`` (``batch`` products), for shape-dependent GEMM
            efficiency; None for other ops.
        kernels_fwd: GPU kernels the forward of a memory-bound op launches; 0 when its work
            is fused into another op's kernel [count].
        kernels_bwd: the same for the backward [count].
        head_dim: a fused attention kernel's query-key width ``d``, on which its rate depends
            (:meth:`palmsim.config.specs.GemmSpec.attention_efficiency_for`); 0 for other ops
            [elements].
    """

    flop_fwd: float
    flop_bwd: float
    bytes_fwd: float
    bytes_bwd: float
    gemm_shape: tuple[float, float, float, float] | None = None
    kernels_fwd: int = 1
    kernels_bwd: int = 1
    head_dim: float = 0.0


@dataclass(frozen=True, slots=True)
class Op:
    """One operator of a transformer on one tile, for one micro-batch, as data.

    All quantities are TP-local: what a single tile of a tensor-parallel group does and holds.

    Attributes:
        name: op name, unique within its layer (``"qkv"``, ``"softmax"``, ...).
        kind: a kind registered in :data:`OPS` (``matmul``, ``norm``, ``elementwise``,
            ``softmax``, ``dropout``, ``embedding``, ``loss``).
        flop_fwd: forward FLOP on the tile [FLOP].
        flop_bwd: backward FLOP on the tile [FLOP].
        bytes_fwd: activation bytes read plus written by the forward, weights excluded [B].
        bytes_bwd: activation bytes read plus written by the backward, weights and weight
            gradients excluded [B].
        weight_bytes: weight (and bias) bytes the op reads on the tile, in the compute dtype:
            read by the forward and again by the backward [B]. This is traffic, not storage: a
            tied LM head reads the embedding table but may own no parameters, and an
            ``embedding`` op owns its table but reads only the gathered rows, which are in
            ``bytes_fwd``/``bytes_bwd``, so its ``weight_bytes`` is 0. Size weight memory by
            ``params``.
        params: parameters the op owns on the tile (weights plus biases), i.e. what weight,
            gradient and optimizer memory are sized by [count].
        saved_bytes: activation bytes the op keeps from its forward until its backward when
            nothing is recomputed [B].
        saved_bytes_selective: what it keeps under Korthikanti's selective recompute, where
            the attention core (QKᵀ, softmax, softmax dropout, attention over V) is recomputed:
            softmax outputs, attention dropout masks and dropout outputs are dropped, Q, K and
            V are kept [B].
        recompute_selective: the op is re-executed (forward) before its backward under
            selective recompute.
        is_gemm: the op is a matrix multiplication counted in model FLOPs.
        gemm_shape: ``(batch, m, k, n)`` of the forward product (see :class:`OpCost`).
        kernels_fwd: kernels the forward of a memory-bound op launches (see :class:`OpCost`).
        kernels_bwd: kernels its backward launches.
        param_tensors: parameter tensors among ``params`` (a linear layer's weight and bias
            are two), each one gradient-accumulation kernel when accumulation is not fused
            into the weight-gradient GEMM [count].
        fp8: a GEMM Transformer Engine runs in fp8 (its fprop, dgrad and wgrad products at
            the fp8 peak; :mod:`palmsim.workload.fp8`).
        frozen: its parameters are not trained (LoRA's base weights, :func:`palmsim.workload.
            lora.lora_blocks`): its backward computes the input's gradient only, and it takes
            no weight gradient, optimizer state, gradient reduction or update.
        model_flop_fwd: forward FLOP counted in model FLOPs when it differs from the executed
            ``flop_fwd`` (a fused causal attention executes about half of the ``s x s``
            products, model FLOPs count them all); None: ``flop_fwd`` [FLOP].
        head_dim: a fused attention kernel's query-key width (see :class:`OpCost`).
    """

    name: str
    kind: str
    flop_fwd: float
    flop_bwd: float
    bytes_fwd: float
    bytes_bwd: float
    weight_bytes: float
    params: float
    saved_bytes: float
    saved_bytes_selective: float
    recompute_selective: bool
    is_gemm: bool
    gemm_shape: tuple[float, float, float, float] | None = None
    kernels_fwd: int = 1
    kernels_bwd: int = 1
    param_tensors: int = 0
    fp8: bool = False
    model_flop_fwd: float | None = None
    frozen: bool = False
    head_dim: float = 0.0


#: Cost function of each op kind: ``OPS.get(kind)(sizes..., dtype_bytes=e) -> OpCost``.
OPS: Registry[Callable[..., OpCost]] = Registry("op kind")


@OPS.register("matmul")
def matmul_cost(
    m: float,
    k: float,
    n: float,
    *,
    batch: float = 1,
    dtype_bytes: float,
    has_weight: bool = False,
    grouped: bool = False,
) -> OpCost:
    """A (batched) matrix multiplication ``C[m, n] = A[m, k] @ B[k, n]``, ``batch`` times.

    Args:
        m, k, n: matrix dimensions [elements].
        batch: number of independent products (e.g. micro-batch × heads on the tile).
        dtype_bytes: bytes per element ``e`` [B].
        has_weight: ``B`` is a weight (a linear layer). Its bytes are then excluded here and
            reported as :attr:`Op.weight_bytes`; otherwise ``B`` is an activation (QKᵀ,
            attention over V) and counts in the activation bytes.
        grouped: the products are a grouped GEMM, each its own kernel (the routed experts'
            GEMMs): ``batch`` kernels forward and ``2·batch`` backward (dgrad and wgrad);
            else one batched kernel a pass.

    Returns:
        Forward ``2·batch·m·k·n`` FLOP and backward twice that (Narayanan et al. SC21,
        Appendix: the backward computes the gradients of both operands, each a matmul of the
        same size; for a weight matmul these are the input and the weight gradient, for an
        activation-activation matmul both are input gradients).
    """
    flop_fwd = 2.0 * batch * m * k * n
    flop_bwd = 2.0 * flop_fwd
    if has_weight:
        # fwd: read A (mk), write C (mn); the weight B is Op.weight_bytes.
        bytes_fwd = dtype_bytes * batch * (m * k + m * n)
        # bwd: dA = dC·Bᵀ reads dC (mn), writes dA (mk); dB = Aᵀ·dC reads A (mk) and dC (mn).
        # Reading B and writing dB are weight-sized and excluded (see module docstring).
        bytes_bwd = dtype_bytes * batch * (2 * m * k + 2 * m * n)
    else:
        # fwd: read A (mk) and B (kn), write C (mn).
        bytes_fwd = dtype_bytes * batch * (m * k + k * n + m * n)
        # bwd: dA = dC·Bᵀ reads dC, B, writes dA; dB = Aᵀ·dC reads A, dC, writes dB.
        bytes_bwd = dtype_bytes * batch * 2 * (m * k + k * n + m * n)
    if not grouped:
        return OpCost(flop_fwd, flop_bwd, bytes_fwd, bytes_bwd, gemm_shape=(batch, m, k, n))
    return OpCost(
        flop_fwd, flop_bwd, bytes_fwd, bytes_bwd, gemm_shape=(batch, m, k, n),
        kernels_fwd=math.ceil(batch), kernels_bwd=2 * math.ceil(batch),
    )  # fmt: skip


@OPS.register("norm")
def norm_cost(num_tokens: float, hidden: float, *, dtype_bytes: float) -> OpCost:
    """LayerNorm or RMSNorm over ``num_tokens`` rows of width ``hidden``; memory-bound, 0 FLOP.

    fwd is one kernel reading the input and writing the output: ``2·e·N·h``. bwd is the fused
    layer-norm gradient of apex and Megatron-LM (``layer_norm_cuda_kernel.cu``,
    ``HostLayerNormGradient``), three kernels: ``cuComputePartGradGammaBeta`` reads the
    output gradient and the saved input for partial weight-gradient sums,
    ``cuComputeGradGammaBeta`` reduces those partials (``O(h)``), and ``cuComputeGradInput``
    reads both again and writes the input gradient: ``5·e·N·h``. The per-row statistics are
    ``O(N)`` and ignored; the norm's own weights are :attr:`Op.weight_bytes`.
    """
    elements = num_tokens * hidden
    return OpCost(
        0.0, 0.0, 2.0 * dtype_bytes * elements, 5.0 * dtype_bytes * elements, kernels_bwd=3
    )


@OPS.register("bias")
def bias_cost(num_elements: float, *, dtype_bytes: float, fused: bool = False) -> OpCost:
    """A linear layer's bias over its ``num_elements`` outputs; memory-bound, 0 FLOP.

    fwd: PyTorch's ``linear`` on a 3-D input runs the matmul and then ``output += bias``
    (``torch/nn/functional.py``), one kernel reading and writing the output, ``2·e·n``.
    ``fused``: the bias is added inside the next elementwise kernel instead (Megatron-LM's
    ``skip_bias_add`` with its bias-GeLU and bias-dropout-add fusions), so the forward
    launches nothing and moves nothing beyond that kernel's bytes.
    bwd: the bias gradient is the output gradient summed over the tokens (autograd reduces a
    broadcast operand's gradient), one reduction kernel reading it, ``e·n``.
    """
    if fused:
        return OpCost(0.0, 0.0, 0.0, dtype_bytes * num_elements, kernels_fwd=0)
    return OpCost(0.0, 0.0, 2.0 * dtype_bytes * num_elements, dtype_bytes * num_elements)


@OPS.register("copy")
def copy_cost(
    num_elements: float, *, dtype_bytes: float, forward: bool = True, backward: bool = False
) -> OpCost:
    """A layout copy of ``num_elements``: one kernel reading and writing each, ``2·e·n``.

    Examples: ``.contiguous()`` of a permuted view in the forward (Megatron-LM's attention
    context, ``[b, a, s, d] -> [s, b, a, d]``), whose backward is a view; or the ``cat``
    that assembles the gradients of views made by ``torch.split`` in the backward (the Q, K
    and V of the fused QKV projection), whose forward is a view. A pass that only makes views
    launches nothing.
    """
    copied = 2.0 * dtype_bytes * num_elements
    return OpCost(
        0.0,
        0.0,
        copied if forward else 0.0,
        copied if backward else 0.0,
        kernels_fwd=int(forward),
        kernels_bwd=int(backward),
    )


@OPS.register("softmax")
def softmax_cost(num_elements: float, *, dtype_bytes: float) -> OpCost:
    """Softmax (with its fused scale and causal mask) over ``num_elements``; 0 FLOP.

    fwd reads the scores and writes the probabilities: ``2·e·n``. bwd reads the saved output
    (softmax's gradient needs its output, not its input) and the output gradient, and writes
    the input gradient: ``3·e·n``.
    """
    return OpCost(0.0, 0.0, 2.0 * dtype_bytes * num_elements, 3.0 * dtype_bytes * num_elements)


@OPS.register("dropout")
def dropout_cost(num_elements: float, *, dtype_bytes: float, residual: bool = False) -> OpCost:
    """Dropout over ``num_elements``, keeping a 1-byte mask; memory-bound, 0 FLOP.

    fwd reads the input (``e·n``), writes the output (``e·n``) and the mask (``1·n``). bwd
    reads the mask and the output gradient and writes the input gradient: also
    ``(2·e + 1)·n`` (mask size from Korthikanti et al. 2022, Sec 4.1).

    ``residual``: Megatron-LM's fused bias-dropout-add (``bias_dropout_add_fused_train``, a
    TorchScript function whose dropout the CUDA fuser lowers to ``rand_like(x) < 1 - p``
    with a bool mask, PyTorch ``symbolic_script.cpp``): the one forward kernel also reads the
    residual and writes the sum instead of the dropout output, ``(3·e + 1)·n``. Its backward
    is the plain dropout backward; the residual's gradient is the incoming one.
    """
    per_element_bwd = 2.0 * dtype_bytes + MASK_BYTES_PER_ELEMENT
    per_element_fwd = per_element_bwd + (dtype_bytes if residual else 0.0)
    return OpCost(0.0, 0.0, per_element_fwd * num_elements, per_element_bwd * num_elements)


@OPS.register("elementwise")
def elementwise_cost(
    num_elements: float,
    *,
    dtype_bytes: float,
    num_inputs: int = 1,
    num_saved: int | None = None,
    fused_forward: bool = False,
) -> OpCost:
    """An elementwise op with ``num_inputs`` inputs and one output of ``num_elements``; 0 FLOP.

    Examples: GeLU (1 input, saves it), SwiGLU ``silu(gate)·up`` (2 inputs, saves both), a
    residual add (2 inputs, saves nothing).

    Args:
        num_elements: elements of the output (and of each input) [elements].
        dtype_bytes: bytes per element ``e`` [B].
        num_inputs: input tensors.
        num_saved: input tensors the backward re-reads; defaults to ``num_inputs``.
        fused_forward: the forward runs inside the previous op's kernel (e.g. the residual
            add of Megatron-LM's fused bias-dropout-add): no kernel, no bytes of its own.

    Returns:
        fwd ``e·n·(num_inputs + 1)`` (read the inputs, write the output), or nothing when
        fused; bwd ``e·n·(num_saved + 1 + num_inputs)`` (read the saved tensors and the
        output gradient, write one gradient per input).
    """
    saved = num_inputs if num_saved is None else num_saved
    bytes_fwd = 0.0 if fused_forward else dtype_bytes * num_elements * (num_inputs + 1)
    bytes_bwd = dtype_bytes * num_elements * (saved + 1 + num_inputs)
    return OpCost(0.0, 0.0, bytes_fwd, bytes_bwd, kernels_fwd=0 if fused_forward else 1)


def attended_pairs(
    queries: float,
    keys: float,
    *,
    causal: bool,
    window: int | None = None,
    document: int | None = None,
) -> float:
    """Query-key pairs an attention core of ``queries`` queries over ``keys`` keys computes.

    - not causal, no window: ``q·k``;
    - causal: the ``k(k+1)/2`` pairs on and below the diagonal of the ``k x k`` matrix, the
      queries' share ``q/k`` of them;
    - causal with a sliding window of ``w`` keys (query ``i`` sees keys ``i-w < j <= i``): the
      band, ``sum_i min(i+1, w) = w(w+1)/2 + (k-w)·w`` for ``k >= w`` (else the causal
      triangle), the queries' share ``q/k`` of it;
    - documents of ``L`` tokens packed into the sequence, each attending only within itself
      (the THD layout with ``cu_seqlens``: Transformer Engine's fused attention over packed
      sequences): ``k/L`` documents of the pairs above at ``k = L``, the queries' share
      ``q/k`` of them, i.e. ``q/L`` times one document's pairs.

    Args:
        queries: queries (the tile's share of the sequence under context parallelism).
        keys: keys of the whole sequence.
        causal: decoder attention.
        window: the sliding window ``w``; None: none.
        document: the packed documents' length ``L``; None (or ``L >= k``): one sequence.
    """
    if document is not None and document < keys:
        return queries / document * attended_pairs(document, document, causal=causal, window=window)
    if not causal:
        return queries * keys
    if window is None or window >= keys:
        band = keys * (keys + 1) / 2
    else:
        band = window * (window + 1) / 2 + (keys - window) * window
    return queries / keys * band


def attended_cache(
    cached: int, new_tokens: int, *, window: int | None = None, chunk: int | None = None
) -> tuple[int, int]:
    """The cached keys ``new_tokens`` new queries attend to, after ``cached`` tokens:
    ``(first, pairs)``, the first cached position any of them reads (they read
    ``[first, cached)``) and the query-key pairs they form with cached keys.

    The query at position ``p = cached + q`` (``q`` from 0) sees cached keys ``j < cached``
    with, under a sliding window of ``w`` (``p - w < j <= p``), ``j > p - w``: ``min(cached,
    max(0, w - 1 - q))`` of them from ``max(0, cached - w + 1)`` on; in chunked local attention
    of chunks of ``C`` (Llama 4: ``j`` in ``p``'s chunk), ``max(0, cached - C·floor(p/C))``
    from ``C·floor(cached/C)`` on; else all ``cached``.
    """
    if cached <= 0 or new_tokens <= 0:
        return cached, 0
    if window is None and chunk is None:
        return 0, cached * new_tokens
    if window is not None:
        # queries q <= m - cached see every cached key, those up to m fewer and fewer (m - q)
        m = window - 1
        full = min(max(m - cached + 1, 0), new_tokens)
        partial = min(max(m, 0), new_tokens)
        pairs = cached * full + (partial - full) * m - (full + partial - 1) * (partial - full) // 2
        return max(0, cached - m), pairs
    assert chunk is not None
    start = cached // chunk * chunk
    # only the queries in the cached tokens' last chunk reach back into the cache
    same = min(new_tokens, start + chunk - cached)
    return start, (cached - start) * same


@OPS.register("attention")
def fused_attention_cost(
    batch_heads: float,
    queries: float,
    keys: float,
    head_dim: float,
    *,
    value_dim: float | None = None,
    kv_heads_ratio: float = 1.0,
    causal: bool,
    window: int | None = None,
    document: int | None = None,
    dtype_bytes: float,
) -> OpCost:
    """A fused attention core (FlashAttention-2's algorithm: Dao, "FlashAttention-2", 2023;
    Transformer Engine's DotProductAttention runs it through cuDNN's fused attention or
    flash-attn) of ``batch_heads`` heads, ``queries`` queries against ``keys`` keys.

    - FLOP (Dao-AILab/flash-attention benchmarks/benchmark_flash_attention.py ``flops``):
      forward ``2·B·P·(d + d_v)`` over the ``P`` attended pairs (:func:`attended_pairs`:
      ``q·k``, halved when causal since blocks above the diagonal are skipped, the band of a
      sliding window, packed documents of ``document`` tokens each attended on its own), QKᵀ
      over ``d`` and attention over V over ``d_v``; ``4·B·P·d`` when
      the widths are equal. The backward is 2.5 x the forward (it recomputes QKᵀ: five
      products against the forward's two; exact for ``d = d_v``, and the QKᵀ-width products
      (QKᵀ, dQ, dK) and V-width ones (dP = dO·Vᵀ, dV) split 3:2 as in the forward otherwise:
      ``2·B·P·(3d + 2d_v)``).
    - Bytes: the forward reads Q, K and V and writes the output and its fp32 log-sum-exp per
      row; the backward reads Q, K, V, the output, its gradient and the log-sum-exp and writes
      dQ, dK and dV. No ``s x s`` tensor touches memory.
    - Kernels: one forward; three backward (flash-attn's ``flash_bwd_dot_do_o_kernel``, the
      ``dq_dk_dv`` kernel and ``flash_bwd_convert_dq_kernel``).

    ``head_dim`` is the query-key width ``d``, ``value_dim`` the value (and output) width
    ``d_v`` (None: ``d``; multi-head latent attention: 192 and 128). ``kv_heads_ratio`` is KV
    heads over query heads (grouped-query attention). A learned softmax sink per head (gpt-oss)
    adds one logit to each row's denominator: ``O(B·q)``, not counted.
    """
    d_v = head_dim if value_dim is None else value_dim
    pairs = attended_pairs(queries, keys, causal=causal, window=window, document=document)
    flop_fwd = 2.0 * batch_heads * pairs * (head_dim + d_v)
    flop_bwd = 2.0 * batch_heads * pairs * (3 * head_dim + 2 * d_v)
    q = batch_heads * queries * head_dim  # elements of Q
    o = batch_heads * queries * d_v  # elements of the output
    kv = batch_heads * kv_heads_ratio * keys * (head_dim + d_v)  # K and V
    lse = 4.0 * batch_heads * queries  # fp32 log-sum-exp per query row
    bytes_fwd = dtype_bytes * (q + kv + o) + lse
    bytes_bwd = dtype_bytes * (q + kv + 2 * o) + lse + dtype_bytes * (q + kv)
    return OpCost(
        flop_fwd,
        flop_bwd,
        bytes_fwd,
        bytes_bwd,
        gemm_shape=None,
        kernels_fwd=1,
        kernels_bwd=3,
        head_dim=head_dim,
    )


@OPS.register("cast")
def cast_cost(
    input_elements: float,
    grad_elements: float,
    *,
    dtype_bytes: float,
    fp8_bytes: float,
    scale_bytes: float = 0.0,
    amax_pass: bool = False,
    columnwise_gather: bool = False,
    reorder_gathered: bool = False,
    gathered_elements: float = 0.0,
) -> OpCost:
    """Transformer Engine's fp8 casts around one linear GEMM; memory-bound, 0 FLOP.

    Each fp8 copy of an element takes ``c = fp8 + scale_bytes`` bytes: the fp8 value and its
    share of the scales (0 for a per-tensor scale, 1/32 B for MXFP8's E8M0 scale per 32
    elements or blockwise scaling's fp32 scale per 128; :data:`palmsim.workload.fp8.FP8_SCALING`).

    - forward: the GEMM's ``input_elements`` input (``e`` bytes each) is cast to fp8 twice,
      row-wise for the fprop GEMM and column-wise (the transposed copy) for the wgrad GEMM,
      in one kernel: read ``e``, write ``2·c`` per element
      (transformer_engine/pytorch/module/linear.py ``_linear_forward``: the input quantizer's
      ``set_usage(rowwise=True, columnwise=backward_needs_input)``; the fused
      ``cast_transpose`` kernel of transformer_engine/common/transpose/cast_transpose.cu, and
      for MXFP8 the one kernel writing both of transformer_engine/common/cast/mxfp8/
      quantize_mxfp8.cuh);
    - backward: the ``grad_elements`` output gradient likewise (row-wise for dgrad,
      column-wise for wgrad; ``grad_output_preprocess`` in module/base.py), read ``e``,
      write ``2·c``.

    ``gathered_elements`` > 0: the input is the sequence-parallel all-gather of the
    ``input_elements`` local rows. Per-tensor fp8 quantizers gather row-wise data only
    (``supports_only_rowwise_all_gather`` in transformer_engine/pytorch/tensor/
    float8_tensor.py), so the forward casts the local rows row-wise alone (read ``e``,
    write ``c``) and the backward, which gathers them again for wgrad
    (layernorm_linear.py, ``gather_along_first_dim(ln_out, ..., quantizer=quantizer)``), makes
    the column-wise copy of the ``gathered_elements`` (read and write ``c``, one kernel).
    A quantizer that gathers its column-wise data (``columnwise_gather``: MXFP8 and blockwise,
    ``_all_gather_mxfp8`` and ``_start_all_gather_fp8_blockwise`` in
    transformer_engine/pytorch/distributed.py) casts both copies of the local rows in the
    forward and needs no transpose after the backward's gather; blockwise scaling
    (``reorder_gathered``) still reorders the gathered column-wise data, which arrives
    interleaved by rank (``_finish_all_gather_fp8_blockwise``: ``tex.swap_first_dims``; read
    and write ``fp8`` per gathered element, one kernel).

    Delayed scaling takes each tensor's amax inside the cast kernel, MXFP8 each block's.
    Current scaling (``amax_pass``) first runs an amax kernel over the tensor (read ``e``)
    and a scale kernel (bytes negligible), 3 kernels per cast (transformer_engine/pytorch/
    csrc/quantizer.cpp, ``Float8CurrentScalingQuantizer::quantize``: ``nvte_compute_amax``,
    ``nvte_compute_scale_from_amax``, then the cast).
    """
    copy = fp8_bytes + scale_bytes
    amax = dtype_bytes if amax_pass else 0.0
    kernels = 3 if amax_pass else 1
    copies_fwd = 1.0 if gathered_elements > 0 and not columnwise_gather else 2.0
    # a pass over the gathered fp8 data after the backward's gather: the transpose of a
    # row-wise gather, or blockwise scaling's reorder (per-tensor scales are one scalar)
    passed = gathered_elements if not columnwise_gather or reorder_gathered else 0.0
    return OpCost(
        0.0,
        0.0,
        (dtype_bytes + copies_fwd * copy + amax) * input_elements,
        (dtype_bytes + 2.0 * copy + amax) * grad_elements + 2.0 * fp8_bytes * passed,
        kernels_fwd=kernels if input_elements > 0 else 0,
        kernels_bwd=(kernels if grad_elements > 0 else 0) + (1 if passed > 0 else 0),
    )


@OPS.register("embedding")
def embedding_cost(num_tokens: float, hidden: float, *, dtype_bytes: float) -> OpCost:
    """A table lookup of ``num_tokens`` rows of width ``hidden``; memory-bound, 0 FLOP.

    fwd reads the gathered rows and writes the output: ``2·e·N·h``. bwd reads the output
    gradient and scatter-adds it into the touched rows of the weight gradient (read and
    write): ``3·e·N·h``. The token ids (a few bytes per token) are ignored.
    """
    elements = num_tokens * hidden
    return OpCost(0.0, 0.0, 2.0 * dtype_bytes * elements, 3.0 * dtype_bytes * elements)


@OPS.register("loss")
def loss_cost(num_tokens: float, num_classes: float, *, dtype_bytes: float) -> OpCost:
    """Softmax cross-entropy of ``num_tokens`` rows of ``num_classes`` logits; 0 FLOP.

    The passes of Megatron-LM's vocabulary-parallel cross-entropy over the tile's logits
    (``megatron/mpu/cross_entropy.py``, ``_VocabParallelCrossEntropy``), which GPT calls on
    ``output.float()`` (``megatron/model/gpt_model.py``; ``--fp16-lm-cross-entropy`` is off
    by default), each a separate kernel over all ``N·C`` elements, bytes per element:

    - forward: the fp32 upcast reads ``e`` and writes 4 (none when ``e`` is already 4);
      ``max`` reads 4; ``sub_`` of the max reads and writes 4; ``exp`` (in place) reads and
      writes 4; ``sum`` reads 4; ``div_`` by the sum, which leaves the fp32 softmax kept for
      the backward, reads and writes 4: ``(e + 4) + 4 + 8 + 8 + 4 + 8 = e + 36``;
    - backward: ``mul_`` of the softmax by the loss gradient reads and writes 4 (subtracting
      1 at the targets is ``O(N)``), then the upcast's backward casts the gradient back to
      the compute dtype, reading 4 and writing ``e``: ``8 + 4 + e``.

    The per-row reductions' results (max, sum, target logit) are ``O(N)`` and ignored. The
    op is costed as one memory-bound kernel of all these bytes (one launch latency).
    """
    upcast = dtype_bytes + LOSS_BYTES_PER_ELEMENT if dtype_bytes < LOSS_BYTES_PER_ELEMENT else 0.0
    f32 = LOSS_BYTES_PER_ELEMENT
    # max (read) + sub_ (read, write) + exp (read, write) + sum (read) + div_ (read, write)
    per_element_fwd = upcast + f32 + 2 * f32 + 2 * f32 + f32 + 2 * f32
    # mul_ (read, write) + the upcast's backward (read fp32, write e)
    per_element_bwd = 2 * f32 + upcast
    elements = num_tokens * num_classes
    return OpCost(0.0, 0.0, per_element_fwd * elements, per_element_bwd * elements)


def make_op(
    name: str,
    kind: str,
    cost: OpCost,
    *,
    params: float = 0.0,
    dtype_bytes: float,
    weight_bytes: float | None = None,
    saved_bytes: float = 0.0,
    saved_bytes_selective: float | None = None,
    recompute_selective: bool = False,
    param_tensors: int | None = None,
) -> Op:
    """Build an :class:`Op` from a cost and the op's parameters and saved activations.

    ``weight_bytes`` defaults to ``params · dtype_bytes`` (weights are held in the compute
    dtype; fp32 master copies are optimizer state). ``saved_bytes_selective`` defaults to
    ``saved_bytes``. ``param_tensors`` defaults to one tensor if the op owns parameters.
    ``is_gemm`` (counted in model FLOPs) is true for ``matmul`` and ``attention`` ops.
    """
    assert kind in OPS, f"op {name!r}: {OPS.unknown_message(kind)}"
    return Op(
        name=name,
        kind=kind,
        flop_fwd=cost.flop_fwd,
        flop_bwd=cost.flop_bwd,
        bytes_fwd=cost.bytes_fwd,
        bytes_bwd=cost.bytes_bwd,
        weight_bytes=params * dtype_bytes if weight_bytes is None else weight_bytes,
        params=params,
        saved_bytes=saved_bytes,
        saved_bytes_selective=saved_bytes
        if saved_bytes_selective is None
        else saved_bytes_selective,
        recompute_selective=recompute_selective,
        is_gemm=kind in ("matmul", "attention"),
        gemm_shape=cost.gemm_shape,
        kernels_fwd=cost.kernels_fwd,
        kernels_bwd=cost.kernels_bwd,
        param_tensors=(1 if params > 0 else 0) if param_tensors is None else param_tensors,
        head_dim=cost.head_dim,
    )


def kernel_products_op(
    name: str,
    batch: float,
    m: float,
    k: float,
    n: float,
    *,
    fwd_bytes: float,
    dtype_bytes: float,
    **kw: Any,
) -> Op:
    """A fused kernel that runs ``batch`` products ``[m, k] @ [k, n]`` of activations on
    tensor cores (a Mamba-2 scan's or a delta rule's chunk products): :func:`matmul_cost`'s
    FLOP and shape, but its traffic is the kernel's own, ``fwd_bytes`` forward and twice that
    backward, as :func:`matmul_cost` counts an activation product's backward. ``kw`` go to
    :func:`make_op`."""
    product = matmul_cost(m, k, n, batch=batch, dtype_bytes=dtype_bytes)
    cost = OpCost(
        product.flop_fwd, product.flop_bwd, fwd_bytes, 2.0 * fwd_bytes,
        gemm_shape=product.gemm_shape,
    )  # fmt: skip
    return make_op(name, "matmul", cost, dtype_bytes=dtype_bytes, **kw)


def rms_norm_op(name: str, num_tokens: float, width: float, *, dtype_bytes: float) -> Op:
    """An RMSNorm over ``num_tokens`` vectors of ``width``: :func:`norm_cost`, one gain of
    ``width`` parameters, keeping its input for its backward."""
    return make_op(
        name,
        "norm",
        norm_cost(num_tokens, width, dtype_bytes=dtype_bytes),
        params=width,
        dtype_bytes=dtype_bytes,
        saved_bytes=dtype_bytes * num_tokens * width,
    )


def linear_op(
    name: str,
    m: float,
    k: float,
    n: float,
    *,
    dtype_bytes: float,
    batch: float = 1,
    saved_bytes: float = 0.0,
) -> Op:
    """A bias-free linear layer ``x[m, k] @ W[k, n]`` (``batch`` of them, each its own
    weight): :func:`matmul_cost` with the weight as :attr:`Op.weight_bytes`, owning
    ``batch·k·n`` parameters and keeping ``saved_bytes`` for its backward."""
    return make_op(
        name,
        "matmul",
        matmul_cost(m, k, n, batch=batch, dtype_bytes=dtype_bytes, has_weight=True),
        params=batch * k * n,
        dtype_bytes=dtype_bytes,
        saved_bytes=saved_bytes,
    )
