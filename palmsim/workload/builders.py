"""TP-local blocks of ops for one transformer layer, the embedding and the LM head.

A :class:`Block` is a run of ops on one tile between two tensor-parallel all-reduces. A layer
is two blocks, ``attn`` and ``mlp``, split the Megatron way (Shoeybi et al. 2019, Sec 3):
the QKV and first MLP projections are column-parallel (heads and MLP columns split over the
``t`` tiles), the attention output and second MLP projections are row-parallel, and each
block ends with an all-reduce of the ``b·s·h`` activations in the forward (the ``g`` operator)
and has one at its input in the backward (the ``f`` operator, reducing the input gradient).

Notation in comments: ``b`` micro-batch size, ``s`` sequence length, ``N = b·s`` tokens,
``h`` hidden size, ``a`` attention heads, ``kv`` key/value heads, ``d = h/a`` head width,
``f`` MLP inner width, ``V`` vocabulary, ``t`` tensor-parallel degree, ``e`` bytes per element.

Saved activations follow Korthikanti et al., "Reducing Activation Recomputation in Large
Transformer Models" (MLSys 2023), Sec 4.1 and Table 2: for a GPT layer (MHA, GeLU MLP of
width 4h, dropout on, e = 2) they sum to ``s·b·h·(10 + 24/t + 5·a·s/(h·t))`` bytes with no
recompute and ``s·b·h·(10 + 24/t)`` with selective recompute; full recompute keeps only the
layer input, ``2·s·b·h`` (:func:`layer_input_bytes`).

FLOP counts follow Narayanan et al., SC21, Appendix: ``24·b·s·h² + 4·b·s²·h`` forward GEMM
FLOP per layer and ``2·b·s·h·V`` for the LM head. The attention scores are counted over the
full ``s × s`` matrix even for causal models, as Megatron-LM and both papers do.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from palmsim.config.specs import (
    DTYPE_BYTES,
    RECOMPUTE_MODES,
    TRAINING_STORAGE_DTYPE,
    ModelSpec,
    TrainingSpec,
)
from palmsim.errors import ConfigError, MappingError
from palmsim.workload.deltanet import gated_deltanet_ops
from palmsim.workload.fp8 import fp8_block_ops
from palmsim.workload.mamba import mamba_mixer_ops
from palmsim.workload.ops import (
    BLOCK_INPUT,
    LOSS_BYTES_PER_ELEMENT,
    MASK_BYTES_PER_ELEMENT,
    Op,
    OpCost,
    attended_pairs,
    bias_cost,
    copy_cost,
    dropout_cost,
    elementwise_cost,
    embedding_cost,
    fused_attention_cost,
    linear_op,
    loss_cost,
    make_op,
    matmul_cost,
    norm_cost,
    rms_norm_op,
    softmax_cost,
)
from palmsim.workload.recompute import recomputed_ops

__all__ = [
    "ACTIVATION_MATMULS",
    "ATTENTION_CORE_OPS",
    "BLOCK_INPUT",
    "RECOMPUTE_MODES",
    "UNMODELLED_ARCHITECTURES",
    "Block",
    "activation_bytes_per_layer",
    "check_cached_attention",
    "embedding_block",
    "hardware_flop_per_iteration",
    "head_block",
    "layer_blocks",
    "layer_input_bytes",
    "layer_kinds",
    "model_flop_per_iteration",
    "moe_blocks",
    "mtp_units",
    "num_active_parameters",
    "num_parameters",
    "separate_projections",
    "unmodelled_architecture",
]

_PLAIN_ACTIVATIONS = ("gelu", "gelu_new")
_GATED_ACTIVATIONS = ("silu",)
_NORMS = ("layernorm", "rmsnorm")
_POSITION_EMBEDDINGS = ("learned", "rope", "none")


@dataclass(frozen=True, slots=True)
class Block:
    """Ops on one tile between two tensor-parallel all-reduces, for one micro-batch.

    Attributes:
        name: ``attn``, ``mlp``, ``embed`` or ``head``.
        ops: the ops in forward (topological) order; the last op produces the block's output.
        allreduce_fwd_bytes: TP all-reduce after this block's forward, per-tile buffer size
            (NCCL convention); 0 if none [B].
        allreduce_bwd_bytes: TP all-reduce after this block's backward (on the gradient of
            the block's input); 0 if none [B].
        edges: dataflow inside the block as ``(producer, consumer, tensor bytes on the tile)``;
            a producer of :data:`BLOCK_INPUT` is the block's input.
        alltoall_fwd_bytes: expert-parallel all-to-all after this block's forward (the token
            dispatch or combine of a mixture-of-experts layer), per-tile buffer size; 0 if
            none [B].
        alltoall_bwd_bytes: expert-parallel all-to-all after this block's backward, on the
            gradient of the block's input (the reverse of the forward all-to-all that
            delivered that input); 0 if none [B].
    """

    name: str
    ops: tuple[Op, ...]
    allreduce_fwd_bytes: float
    allreduce_bwd_bytes: float
    edges: tuple[tuple[str, str, float], ...] = ()
    alltoall_fwd_bytes: float = 0.0
    alltoall_bwd_bytes: float = 0.0

    def total(self, attr: str) -> float:
        """Sum of the :class:`Op` field ``attr`` over the block's ops."""
        return float(sum(getattr(op, attr) for op in self.ops))

    def op(self, name: str) -> Op:
        """The op called ``name``.

        Raises:
            KeyError: no such op, with the op names of the block.
        """
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(f"block {self.name!r} has no op {name!r}; ops: {self.op_names}")

    @property
    def op_names(self) -> tuple[str, ...]:
        """Names of the ops, in forward order."""
        return tuple(op.name for op in self.ops)

    @property
    def flop_fwd(self) -> float:
        """Forward FLOP on the tile [FLOP]."""
        return self.total("flop_fwd")

    @property
    def flop_bwd(self) -> float:
        """Backward FLOP on the tile [FLOP]."""
        return self.total("flop_bwd")

    @property
    def gemm_flop_fwd(self) -> float:
        """Forward FLOP of the ops counted in model FLOPs (matrix multiplications) [FLOP]."""
        return float(
            sum(
                op.flop_fwd if op.model_flop_fwd is None else op.model_flop_fwd
                for op in self.ops
                if op.is_gemm
            )
        )

    @property
    def recompute_flop_selective(self) -> float:
        """Forward FLOP re-executed under selective recompute [FLOP]."""
        return float(sum(op.flop_fwd for op in self.ops if op.recompute_selective))

    @property
    def bytes_fwd(self) -> float:
        """Activation bytes read plus written by the forward [B]."""
        return self.total("bytes_fwd")

    @property
    def bytes_bwd(self) -> float:
        """Activation bytes read plus written by the backward [B]."""
        return self.total("bytes_bwd")

    @property
    def weight_bytes(self) -> float:
        """Weight bytes read by the forward (and again by the backward) [B]."""
        return self.total("weight_bytes")

    @property
    def params(self) -> float:
        """Parameters owned on the tile [count]."""
        return self.total("params")

    @property
    def saved_bytes(self) -> float:
        """Activation bytes kept for the backward without recompute [B]."""
        return self.total("saved_bytes")

    @property
    def saved_bytes_selective(self) -> float:
        """Activation bytes kept for the backward under selective recompute [B]."""
        return self.total("saved_bytes_selective")


# --------------------------------------------------------------------------- checks


def _dtype_bytes(training: TrainingSpec) -> int:
    """Bytes per element of the training (or activation) dtype: fp32, fp16 or bf16 (fp8
    training stores bf16: :data:`TRAINING_STORAGE_DTYPE`)."""
    try:
        return int(DTYPE_BYTES[TRAINING_STORAGE_DTYPE.get(training.dtype, training.dtype)])
    except KeyError:
        expected = ", ".join(sorted(DTYPE_BYTES))
        raise ConfigError.single("", "training.dtype", training.dtype, expected) from None


def _check_common(model: ModelSpec, micro_batch_size: int, tp: int) -> None:
    """Reject a non-positive micro-batch or TP degree and unknown model variants."""
    if tp < 1:
        raise MappingError(f"tensor-parallel degree tp={tp} must be at least 1")
    if micro_batch_size < 1:
        raise MappingError(f"micro_batch_size={micro_batch_size} must be at least 1")
    if model.norm not in _NORMS:
        raise ConfigError.single("", "model.norm", model.norm, " or ".join(map(repr, _NORMS)))
    if model.position_embedding not in _POSITION_EMBEDDINGS:
        expected = " or ".join(map(repr, _POSITION_EMBEDDINGS))
        raise ConfigError.single("", "model.position_embedding", model.position_embedding, expected)


def _check_layer_tp(model: ModelSpec, tp: int) -> None:
    """Raise MappingError unless ``tp`` splits heads, KV heads and the MLP evenly."""
    heads = model.num_attention_heads
    kv_heads = model.num_key_value_heads
    inner = model.intermediate_size
    if heads % tp:
        raise MappingError(
            f"model {model.name!r}: tp={tp} does not divide num_attention_heads={heads}"
        )
    if inner % tp:
        raise MappingError(
            f"model {model.name!r}: tp={tp} does not divide intermediate_size={inner}"
        )
    if kv_heads >= tp and kv_heads % tp:
        raise MappingError(
            f"model {model.name!r}: tp={tp} does not divide num_key_value_heads={kv_heads}"
        )
    if kv_heads < tp and tp % kv_heads:
        # Each tile holds one replicated KV head; its query heads must all belong to it.
        raise MappingError(
            f"model {model.name!r}: num_key_value_heads={kv_heads} does not divide tp={tp}"
        )


def check_cached_attention(model: ModelSpec) -> None:
    """Inference and serving cost the KV cache as ``2·kv·d`` elements per token and layer
    (multi-head latent attention's latent and rotary key, ``r_kv + d_r``:
    :mod:`palmsim.mapping.inference`, ``mla_flop``) and its attention over the cached tokens
    a layer reaches: every one, or a sliding-window or chunked layer's window
    (:func:`palmsim.workload.ops.attended_cache`), of a cache ``palmsim run --mode
    inference`` holds whole and serving frees as its window leaves it
    (:mod:`palmsim.serving.kvcache`).

    Raises:
        MappingError: a hybrid Mamba model (its layers' recurrent state) or linear attention:
            neither is modelled there.
    """
    if model.hybrid_override_pattern is not None:
        raise MappingError(
            f"model {model.name!r}: hybrid Mamba models are modelled for training only (the "
            "Mamba layers' recurrent state in place of a KV cache is not modelled)"
        )
    if model.has_linear_attention:
        raise MappingError(
            f"model {model.name!r}: linear attention (Gated DeltaNet) is modelled for training "
            "only (its recurrent state in place of a KV cache is not modelled)"
        )


def _check_recompute(recompute: str) -> None:
    """Reject an unknown recompute mode."""
    if recompute not in RECOMPUTE_MODES:
        expected = ", ".join(map(repr, RECOMPUTE_MODES))
        raise ConfigError.single("", "mapping.recompute", recompute, f"one of {expected}")


def _norm_op(model: ModelSpec, name: str, num_tokens: int, e: int) -> Op:
    """A norm over ``num_tokens`` hidden vectors; it keeps its input, replicated on every tile.

    Its parameters: LayerNorm's gain and bias, ``2h`` in two tensors (the gain alone without
    bias), or RMSNorm's gain, ``h``.
    """
    h = model.hidden_size
    tensors = 2 if model.norm == "layernorm" and model.use_bias else 1
    return make_op(
        name,
        "norm",
        norm_cost(num_tokens, h, dtype_bytes=e),
        params=tensors * h,
        param_tensors=tensors,
        dtype_bytes=e,
        saved_bytes=e * num_tokens * h,
    )


def _vocab_per_tile(model: ModelSpec, tp: int) -> int:
    """Vocabulary rows on each tile: ``ceil(V/t)`` (Megatron pads V to a multiple of t)."""
    return math.ceil(model.vocab_size / tp)


def _allreduce(tp: int, size_bytes: float) -> float:
    """``size_bytes`` if there is a TP group to reduce over, else 0."""
    return size_bytes if tp > 1 else 0.0


# --------------------------------------------------------------------------- builders


@dataclass(frozen=True, slots=True)
class _LayerShape:
    """Per-tile sizes of one layer (see the module docstring for the notation)."""

    e: int  # bytes per element
    s: int  # sequence length on the tile (its s/cp queries under context parallelism)
    h: int  # hidden size
    d: int  # head width
    n_tok: int  # tokens per micro-batch, b·s
    heads_t: int  # query heads on the tile, a/t
    kv_t: int  # KV heads on the tile, kv/t or 1 (replicated) when kv < t
    inner_t: int  # MLP columns on the tile, f/t
    batch_heads: int  # attention matrices on the tile, b·a/t
    s_kv: int = 0  # keys each query chunk attends to: the whole sequence; 0 means s
    d_v: int = 0  # value head width; 0 means d (MLA: v_head_dim, d = qk width)
    window: int | None = None  # sliding window of keys per query; None: full attention
    document: int | None = None  # packed documents' length; None: one per sequence
    down_tokens: int = 0  # tokens the MLA down projections see on the tile; 0 means n_tok

    @property
    def keys(self) -> int:
        """Keys the tile's queries attend to: the full sequence (``s·cp``)."""
        return self.s_kv or self.s

    @property
    def value_dim(self) -> int:
        """Width of one value head (``d`` unless MLA)."""
        return self.d_v or self.d

    @property
    def act_bytes(self) -> int:
        """Bytes of one ``b·s·h`` tensor ("2sbh" at e = 2)."""
        return self.e * self.n_tok * self.h


#: Ops that every tile of a tensor-parallel group runs on the whole ``b·s·h`` tensor, and
#: the matmuls that keep that replicated tensor as their saved input. Sequence parallelism
#: splits exactly these along the sequence (Korthikanti et al. 2022, Sec 4.2.2): their
#: ``10·s·b·h`` of Table 2's ``10 + 24/t`` becomes ``10·s·b·h / t``.
_REPLICATED_OPS = (
    "norm_mamba",
    "mamba_residual",
    "norm1",
    "norm2",
    "out_bias",
    "fc2_bias",
    "out_dropout",
    "mlp_dropout",
    "attn_residual",
    "mlp_residual",
)
_REPLICATED_INPUTS = ("qkv", "fc1", "mamba_in", "gdn_in")


def _sequence_sharded(block: Block, tp: int) -> Block:
    """``block`` with its replicated ops and saved inputs split over the ``tp`` tiles."""
    ops = []
    for op in block.ops:
        if op.name in _REPLICATED_OPS:
            op = dataclasses.replace(
                op,
                bytes_fwd=op.bytes_fwd / tp,
                bytes_bwd=op.bytes_bwd / tp,
                saved_bytes=op.saved_bytes / tp,
                saved_bytes_selective=op.saved_bytes_selective / tp,
            )
        elif op.name in _REPLICATED_INPUTS:
            op = dataclasses.replace(
                op,
                saved_bytes=op.saved_bytes / tp,
                saved_bytes_selective=op.saved_bytes_selective / tp,
            )
        ops.append(op)
    return dataclasses.replace(block, ops=tuple(ops))


def separate_projections(block: Block, model: ModelSpec) -> Block:
    """``block`` with its fused projections as separate GEMMs (``inference.fused_projections``
    false): QKV as its query, key and value products (and the output gate's, where the model
    has one), a gated MLP's fc1 as its gate and up products, each an equal share of the
    columns (exact where the shares are equal: WaferLLM runs K and V as wide as Q). Their
    FLOP, bytes and parameters do not change; the GEMM shape counts the products in its batch
    dimension."""
    parts = {
        "qkv": 4 if model.attention_output_gate else 3,
        "fc1": 2 if model.hidden_act in _GATED_ACTIVATIONS else 1,
    }

    def op(o: Op) -> Op:
        k = parts.get(o.name, 1)
        if k == 1 or o.gemm_shape is None:
            return o
        batch, m, inner, n = o.gemm_shape
        return dataclasses.replace(o, gemm_shape=(batch * k, m, inner, n / k))

    return dataclasses.replace(block, ops=tuple(op(o) for o in block.ops))


def layer_blocks(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    tp: int,
    *,
    sequence_parallel: bool = False,
    layer: int | None = None,
    ep: int = 1,
    expert_slots: float | None = None,
    cp: int = 1,
    etp: int | None = None,
    touched_experts: float | None = None,
    sort_by_local_expert: bool = False,
) -> tuple[Block, ...]:
    """The blocks of one transformer layer on one of ``tp`` tiles.

    ``cp`` > 1 is context parallelism (Megatron-Core ``--context-parallel-size``): the tile
    holds ``s/cp`` tokens of each sample, every token-proportional op and activation shrinks by
    ``cp``, and the attention core computes its ``s/cp`` queries against all ``s`` keys, whose
    K and V chunks arrive around the CP ring (:mod:`palmsim.mapping.context`).

    The attention block is multi-/grouped-query attention, or multi-head latent attention
    when ``model.kv_lora_rank`` is set (:func:`_mla_projections`); layer ``layer`` attends
    through ``model.attention_window(layer)`` keys when it is a sliding-window layer (a
    model that mixes both needs ``layer``).

    A dense layer is ``(attn, mlp)``. A mixture-of-experts layer (``model.is_moe_layer``) is
    ``(attn, moe_route, moe_experts, moe_combine)`` (:func:`moe_blocks`), with ``ep``,
    ``etp``, ``expert_slots``, ``touched_experts`` and ``sort_by_local_expert`` passed on;
    ``layer`` (0-based) must
    then be given, since a model's first ``first_k_dense_replace`` layers are dense.

    Args:
        model: the architecture.
        training: sequence length and dtype.
        micro_batch_size: samples per micro-batch ``b``.
        tp: tensor-parallel degree ``t``.
        sequence_parallel: Megatron sequence parallelism: norms, residual dropouts and adds
            run on ``s/t`` of the sequence, and the saved inputs of QKV and fc1 are kept
            sequence-sharded (Korthikanti et al. 2022, Sec 4.2.2). The blocks' collectives
            are then a reduce-scatter and an all-gather of the same ``e·b·s·h`` bytes in
            place of each all-reduce (the mapper emits them).

    Returns:
        ``(attn, mlp)``. Each tile holds ``a/t`` query heads and ``kv/t`` KV heads, or one
        replicated KV head when ``kv < t``, and ``f/t`` MLP columns. Both blocks all-reduce
        ``e·b·s·h`` bytes after their forward and after their backward when ``t > 1``.

    Raises:
        MappingError: ``tp`` does not divide the heads, the KV heads or the MLP width; a
            mixture-of-experts model, or one mixing windowed, chunked or linear and full
            layers, without ``layer``; ``cp`` > 1 on a windowed, chunked or linear layer.
        ConfigError: an unknown activation, norm, position embedding or dtype.
    """
    if layer is None and model.has_mixed_attention:
        raise MappingError(
            f"model {model.name!r} mixes windowed, chunked or linear and full-attention "
            "layers, which this mapping does not lower yet (its layers differ: each is built "
            "with its layer index)"
        )
    if model.hybrid_override_pattern is not None:
        return _hybrid_layer_blocks(
            model,
            training,
            micro_batch_size,
            tp,
            sequence_parallel=sequence_parallel,
            layer=layer,
            ep=ep,
            expert_slots=expert_slots,
            cp=cp,
            etp=etp,
            touched_experts=touched_experts,
            sort_by_local_expert=sort_by_local_expert,
        )
    if model.is_moe:
        if layer is None:
            raise MappingError(
                f"model {model.name!r} has mixture-of-experts layers, which this mapping "
                "does not lower yet (its layers differ: each is built with its layer index)"
            )
        if model.is_moe_layer(layer):
            moe = moe_blocks(
                model,
                training,
                micro_batch_size,
                tp,
                ep=ep,
                expert_slots=expert_slots,
                sequence_parallel=sequence_parallel,
                cp=cp,
                layer=layer,
                etp=etp,
                touched_experts=touched_experts,
                sort_by_local_expert=sort_by_local_expert,
            )
            return _fp8_blocks(moe, training, tp if sequence_parallel else 1)
    _check_common(model, micro_batch_size, tp)
    seq = _local_seq_len(training, cp)
    _check_layer_tp(model, tp)
    _check_activation(model)
    kv_heads = model.num_key_value_heads
    heads_t = model.num_attention_heads // tp
    n_tok = micro_batch_size * seq
    sharded = sequence_parallel and tp > 1
    chunk = model.attention_chunk(layer or 0)
    if cp > 1 and model.is_linear_attention_layer(layer or 0):
        raise MappingError(
            f"model {model.name!r}: context parallelism over a linear-attention (Gated "
            "DeltaNet) layer is not modelled (its state runs along the whole sequence)"
        )
    if cp > 1 and (model.attention_window(layer or 0) is not None or chunk is not None):
        raise MappingError(
            f"model {model.name!r}: context parallelism over a sliding-window or chunked "
            "attention layer is not modelled (the ring's per-step work assumes full causal "
            "attention)"
        )
    _check_packing(training, cp)
    shape = _LayerShape(
        e=_dtype_bytes(training),
        s=seq,
        h=model.hidden_size,
        d=model.key_head_dim,
        n_tok=n_tok,
        heads_t=heads_t,
        # MLA: every head has its own key and value once kv_up_proj has expanded the latent
        kv_t=heads_t if model.is_mla else (kv_heads // tp if kv_heads >= tp else 1),
        inner_t=model.intermediate_size // tp,
        batch_heads=micro_batch_size * heads_t,
        s_kv=training.seq_len,
        d_v=model.value_head_dim,
        window=model.attention_window(layer or 0),
        # a chunked-attention layer attends within its chunks as within packed documents
        # (attended_pairs), the shorter of the two where both cut the sequence
        document=_within(_document(training), chunk, training.seq_len),
        # MLA's replicated down projections ("duplicated" TELinear) run on the rank's s/t
        # tokens under sequence parallelism, on all of them otherwise
        down_tokens=n_tok // tp if sharded else n_tok,
    )
    # Megatron's g operator all-reduces the b·s·h partial sums of the row-parallel projection
    # in the forward (before the bias-dropout-add, which is modelled ahead of it here); its f
    # operator all-reduces the input gradient of the column-parallel projection in the
    # backward (Shoeybi et al. 2019, Fig. 3).
    allreduce = _allreduce(tp, shape.act_bytes)
    if model.is_linear_attention_layer(layer or 0):
        attn_ops, attn_edges = _deltanet_ops(model, shape, micro_batch_size, tp)
    else:
        attn_ops, attn_edges = _attention_ops(model, shape)
        if training.attention_kernel != "unfused":  # fused or flash2: the same work
            attn_ops, attn_edges = _fused_attention(model, shape, attn_ops, attn_edges, cp)
    mlp_ops, mlp_edges = _mlp_ops(model, shape)
    if model.parallel_block == "none":
        blocks = (
            Block("attn", attn_ops, allreduce, allreduce, attn_edges),
            Block("mlp", mlp_ops, allreduce, allreduce, mlp_edges),
        )
    else:
        blocks = _parallel_blocks(model, shape, allreduce, attn_ops, attn_edges, mlp_ops, mlp_edges)
    if sequence_parallel and tp > 1:
        blocks = _sequence_sharded(blocks[0], tp), _sequence_sharded(blocks[1], tp)
    return _fp8_blocks(blocks, training, tp if sequence_parallel else 1)


def _parallel_blocks(
    model: ModelSpec,
    shape: _LayerShape,
    allreduce: float,
    attn_ops: tuple[Op, ...],
    attn_edges: tuple[tuple[str, str, float], ...],
    mlp_ops: tuple[Op, ...],
    mlp_edges: tuple[tuple[str, str, float], ...],
) -> tuple[Block, Block]:
    """A layer's attention and MLP side by side (``model.parallel_block``): both read the
    layer's input ``x`` and the layer returns ``x + attn(n1(x)) + mlp(n2(x))``.

    GPT-NeoX's ParallelTransformerLayer (megatron/model/transformer.py, ``gpt_j_residual``)
    adds the MLP's partial output to the attention's and reduces the sum over the TP group
    once, then adds the residual; PaLM
    (Chowdhery et al. 2022, Sec. 2) and MegaScale (Jiang et al. 2024, Sec. 3.2, Fig. 3: one
    all-gather, one reduce-scatter) do the same. So the attention block has no collective
    after its forward and the MLP block none after its backward (the input gradients of the
    two branches sum before the one backward reduction); the attention keeps no residual add
    of its own, the MLP block adds the partial sums (``branch_add``, on the whole ``b·s·h``
    before the reduction) and then the residual. With 'one_norm' the MLP reads the
    attention's norm (no ``norm2``) and its fc1 keeps no copy of the input QKV keeps; with
    'two_norms' ``norm2`` normalises ``x`` itself, which ``norm1`` keeps already.
    """
    attn_ops = tuple(op for op in attn_ops if op.name != "attn_residual")
    attn_edges = tuple(edge for edge in attn_edges if "attn_residual" not in edge[:2])
    one_norm = model.parallel_block == "one_norm"
    ops: list[Op] = []
    for op in mlp_ops:
        if op.name == "norm2":
            if one_norm:
                continue
            op = dataclasses.replace(op, saved_bytes=0.0, saved_bytes_selective=0.0)
        elif op.name == "fc1" and one_norm:
            op = dataclasses.replace(op, saved_bytes=0.0, saved_bytes_selective=0.0)
        elif op.name == "mlp_residual":
            # the dropout before it (if any) is the fused bias-dropout-add with the attention's
            # output as its residual
            fused = ops[-1].name == "mlp_dropout"
            ops.append(_residual_add("branch_add", shape, fused=fused))
            op = _residual_add("mlp_residual", shape, fused=False)
        ops.append(op)
    edges: list[tuple[str, str, float]] = []
    for src, dst, nbytes in mlp_edges:
        if one_norm and dst == "norm2":
            continue
        if one_norm and src == "norm2":
            src = BLOCK_INPUT  # the attention's norm output, which the MLP shares
        if dst == "mlp_residual" and src != BLOCK_INPUT:
            edges.append((src, "branch_add", nbytes))
            dst, src = "mlp_residual", "branch_add"
        edges.append((src, dst, nbytes))
    return (
        Block("attn", attn_ops, 0.0, allreduce, attn_edges),
        Block("mlp", tuple(ops), allreduce, 0.0, tuple(edges)),
    )


def _hybrid_layer_blocks(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    tp: int,
    *,
    sequence_parallel: bool,
    layer: int | None,
    cp: int,
    **moe: Any,
) -> tuple[Block, ...]:
    """Layer ``layer`` of a hybrid model (``model.hybrid_override_pattern``, Megatron-Core's
    hybrid stack, megatron/core/ssm/mamba_block.py): one block with its own pre-norm and
    residual. 'M' a Mamba-2 mixer (``mamba``, :mod:`palmsim.workload.mamba`), '*' the
    attention block, '-' the MLP block, 'E' the mixture-of-experts blocks (:func:`moe_blocks`
    without its attention).

    Raises:
        MappingError: no ``layer``; context parallelism over a Mamba layer (its scan runs
            along the whole sequence).
    """
    if layer is None:
        raise MappingError(
            f"model {model.name!r} is a hybrid of Mamba, attention and MLP layers, which this "
            "mapping does not lower yet (its layers differ: each is built with its layer index)"
        )
    kind = model.layer_kind(layer)
    plain = dataclasses.replace(
        model,
        hybrid_override_pattern=None,
        num_experts=0,
        num_experts_per_tok=0,
        num_shared_experts=0,
    )
    if kind == "E":
        routed = dataclasses.replace(model, hybrid_override_pattern=None, first_k_dense_replace=0)
        blocks = moe_blocks(
            routed, training, micro_batch_size, tp,
            sequence_parallel=sequence_parallel, cp=cp, layer=layer, **moe,
        )[1:]  # fmt: skip
        return _fp8_blocks(blocks, training, tp if sequence_parallel else 1)
    if kind in "*-":
        attn, mlp = layer_blocks(
            plain, training, micro_batch_size, tp,
            sequence_parallel=sequence_parallel, layer=layer, cp=cp,
        )  # fmt: skip
        return (attn,) if kind == "*" else (mlp,)
    if cp > 1:
        raise MappingError(
            f"model {model.name!r}: context parallelism over a Mamba layer is not modelled "
            "(its scan carries a state along the whole sequence)"
        )
    _check_common(model, micro_batch_size, tp)
    e = _dtype_bytes(training)
    n_tok = micro_batch_size * training.seq_len
    shape = _LayerShape(
        e=e, s=training.seq_len, h=model.hidden_size, d=1, n_tok=n_tok, heads_t=1, kv_t=1,
        inner_t=1, batch_heads=1,
    )  # fmt: skip
    mixer, mixer_edges = mamba_mixer_ops(
        model, tp=tp, micro_batch_size=micro_batch_size, seq_len=training.seq_len, dtype_bytes=e
    )
    ops, edges = _mixer_with_residual(
        model, shape, mixer, mixer_edges, norm="norm_mamba", residual="mamba_residual"
    )
    allreduce = _allreduce(tp, shape.act_bytes)
    block = Block("mamba", ops, allreduce, allreduce, edges)
    if sequence_parallel and tp > 1:
        block = _sequence_sharded(block, tp)
    return _fp8_blocks((block,), training, tp if sequence_parallel else 1)


def _without_params(block: Block) -> Block:
    """``block`` running weights another block owns (a repeated MTP block, the shared head):
    it reads them, and owns, accumulates and updates none."""
    ops = tuple(dataclasses.replace(op, params=0.0, param_tensors=0) for op in block.ops)
    return dataclasses.replace(block, ops=ops)


def mtp_units(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    tp: int,
    head: Block,
    *,
    sequence_parallel: bool = False,
    cp: int = 1,
    **moe: Any,
) -> tuple[tuple[str, int, tuple[Block, ...]], ...]:
    """Multi-token prediction as Megatron-Core trains it (``training.mtp_depths`` depths;
    megatron/core/transformer/multi_token_prediction.py, MultiTokenPredictionLayer; DeepSeek-V3
    report Sec. 2.2): ``(name, layer, blocks)`` of each unit the last pipeline stage runs after
    its head, in order. Per depth:

    - ``mtp<d>_in``: the shifted tokens' embedding (the shared table: a gather, no weights of
      its own), the RMSNorms of that embedding and of the previous depth's hidden state (h
      each), and ``eh_proj``, the linear of their concatenation ``2h -> h``, column-parallel,
      its output gathered over TP (costed as an all-reduce of ``e·b·s·h``, an upper bound);
    - the MTP block's layers (a hybrid model's ``mtp_hybrid_override_pattern``, else one
      layer like the model's last), numbered after the model's layers;
    - ``mtp<d>_head``: the logits and loss through the shared head (its final norm's gain,
      ``h``, is not counted).

    Depths past the model's ``num_nextn_predict_layers`` blocks repeat the one block
    (``mtp_use_repeated_layer``): they read its weights and own none. The layers run in the
    run's precision, or in bf16 with ``training.mtp_in_bf16`` (``keep_mtp_spec_in_bf16``, as
    Megatron-Bridge's Nemotron 3 Super recipe sets it).

    Raises:
        MappingError: a hybrid model without its MTP pattern.
    """
    depths = training.mtp_depths
    if depths == 0:
        return ()
    pattern = model.mtp_hybrid_override_pattern
    if model.hybrid_override_pattern is not None:
        if pattern is None:
            raise MappingError(
                f"training.mtp_depths={depths}: hybrid model {model.name!r} gives no "
                "mtp_hybrid_override_pattern (its MTP block's layers)"
            )
        block_model = dataclasses.replace(
            model, hybrid_override_pattern=pattern, num_hidden_layers=len(pattern)
        )
        layer_ids: tuple[int, ...] = tuple(range(len(pattern)))
    else:
        block_model, layer_ids = model, (model.num_hidden_layers - 1,)
    e, h = _dtype_bytes(training), model.hidden_size
    n_tok = micro_batch_size * _local_seq_len(training, cp)
    act_bytes = e * n_tok * h
    entry_ops = (
        make_op("mtp_embed", "embedding", embedding_cost(n_tok, h, dtype_bytes=e), dtype_bytes=e),
        _norm_op(model, "mtp_enorm", n_tok, e),
        _norm_op(model, "mtp_hnorm", n_tok, e),
        linear_op("eh_proj", n_tok, 2 * h, h // tp, dtype_bytes=e, saved_bytes=2 * act_bytes),
    )
    entry_edges = (
        ("mtp_embed", "mtp_enorm", act_bytes),
        (BLOCK_INPUT, "mtp_hnorm", act_bytes),
        ("mtp_enorm", "eh_proj", act_bytes),
        ("mtp_hnorm", "eh_proj", act_bytes),
    )
    gather = _allreduce(tp, act_bytes)
    entry = Block("mtp_in", entry_ops, gather, gather, entry_edges)
    # keep_mtp_spec_in_bf16: the block's GEMMs in bf16 under fp8 training
    block_training = (
        dataclasses.replace(training, dtype="bf16") if training.mtp_in_bf16 else training
    )
    layers = [
        layer_blocks(
            block_model, block_training, micro_batch_size, tp,
            sequence_parallel=sequence_parallel, layer=j, cp=cp, **moe,
        )
        for j in layer_ids
    ]  # fmt: skip
    shared_head = _without_params(head)
    units: list[tuple[str, int, tuple[Block, ...]]] = []
    next_layer = model.num_hidden_layers
    for d in range(depths):
        repeated = d >= model.num_nextn_predict_layers

        def own(block: Block, repeated: bool = repeated) -> Block:
            return _without_params(block) if repeated else block

        units.append((f"mtp{d}_in", -1, (own(entry),)))
        for j, blocks in zip(layer_ids, layers, strict=True):
            units.append((f"MTP{d}.{j}", next_layer, tuple(own(b) for b in blocks)))
            next_layer += 1
        units.append((f"mtp{d}_head", -1, (shared_head,)))
    return tuple(units)


def _fp8_blocks(
    blocks: tuple[Block, ...], training: TrainingSpec, sequence_parallel_tp: int
) -> tuple[Block, ...]:
    """``blocks`` with their Transformer Engine linears in fp8 when ``training.dtype`` is
    fp8 (:func:`palmsim.workload.fp8.fp8_block_ops`), else unchanged."""
    if training.dtype != "fp8":
        return blocks
    e = _dtype_bytes(training)
    return tuple(
        dataclasses.replace(
            b,
            ops=fp8_block_ops(
                b.ops,
                dtype_bytes=e,
                recipe=training.fp8_recipe,
                sequence_parallel_tp=sequence_parallel_tp,
                keep_bf16=training.bf16_linears,
            ),
        )
        for b in blocks
    )


def _local_seq_len(training: TrainingSpec, cp: int) -> int:
    """Tokens of each sample on one of ``cp`` context-parallel ranks, ``s/cp``.

    Raises:
        MappingError: ``2·cp`` does not divide the sequence: Megatron-Core's causal load
            balancing cuts it into ``2·cp`` equal chunks (:mod:`palmsim.mapping.context`).
    """
    if cp < 1:
        raise MappingError(f"context-parallel degree cp={cp} must be at least 1")
    if cp > 1 and training.seq_len % (2 * cp):
        raise MappingError(
            f"cp={cp}: seq_len {training.seq_len} is not a multiple of 2*cp = {2 * cp} "
            "(the causal load balancing cuts the sequence into 2*cp chunks)"
        )
    return training.seq_len // cp


def _document(training: TrainingSpec) -> int | None:
    """The tokens of one packed document (``training.packed_document_tokens``), None for one
    document per sequence: a document as long as the sequence or longer is the whole row."""
    document = training.packed_document_tokens
    return document if document is not None and document < training.seq_len else None


def _deltanet_ops(
    model: ModelSpec, shape: _LayerShape, micro_batch_size: int, tp: int
) -> tuple[tuple[Op, ...], tuple[tuple[str, str, float], ...]]:
    """A Gated DeltaNet layer's attention block (:mod:`palmsim.workload.deltanet`) with its
    pre-norm and residual, in place of the attention's."""
    mixer, mixer_edges = gated_deltanet_ops(
        model, tp=tp, micro_batch_size=micro_batch_size, seq_len=shape.s, dtype_bytes=shape.e
    )
    return _mixer_with_residual(
        model, shape, mixer, mixer_edges, norm="norm1", residual="attn_residual"
    )


def _mixer_with_residual(
    model: ModelSpec,
    shape: _LayerShape,
    mixer: tuple[Op, ...],
    mixer_edges: tuple[tuple[str, str, float], ...],
    *,
    norm: str,
    residual: str,
) -> tuple[tuple[Op, ...], tuple[tuple[str, str, float], ...]]:
    """A sequence mixer's ops (a Mamba-2 or Gated DeltaNet layer, first op to last) between
    its pre-norm ``norm`` and the residual add ``residual``, and the block's edges."""
    act_bytes = shape.act_bytes
    ops = (
        _norm_op(model, norm, shape.n_tok, shape.e),
        *mixer,
        _residual_add(residual, shape, fused=False),
    )
    edges = (
        (BLOCK_INPUT, norm, act_bytes),
        (norm, mixer[0].name, act_bytes),
        *mixer_edges,
        (mixer[-1].name, residual, act_bytes),
        (BLOCK_INPUT, residual, act_bytes),
    )
    return ops, edges


def _within(document: int | None, chunk: int | None, seq_len: int) -> int | None:
    """The tokens a query attends within: packed documents of ``document`` tokens or
    attention chunks of ``chunk`` (Llama 4's chunked local attention, query ``i`` seeing the
    keys of its own chunk up to itself), the shorter where both apply; None: the sequence.
    Documents and chunks both start at the sequence's start, so the shorter length is exact
    when one divides the other (a chunk of 8192 in documents of 4096 or 16384)."""
    lengths = [n for n in (document, chunk) if n is not None and n < seq_len]
    return min(lengths) if lengths else None


def _check_packing(training: TrainingSpec, cp: int) -> None:
    """Packed documents (``training.packed_document_tokens``) need a fused attention kernel:
    Megatron-Core's unfused DotProductAttention takes no packed sequences (it asserts
    ``packed_seq_params is None``; Transformer Engine's fused attention takes the THD layout).
    Under context parallelism the ring's per-step work assumes one causal sequence."""
    if _document(training) is None:
        return
    if training.attention_kernel == "unfused":
        raise MappingError(
            "training.packed_document_tokens needs a fused attention kernel "
            "(training.attention_kernel: fused or flash2): the unfused core takes no packed "
            "sequences"
        )
    if cp > 1:
        raise MappingError(
            "training.packed_document_tokens with context parallelism is not modelled (the "
            "ring's per-step work assumes one causal sequence)"
        )


def _check_activation(model: ModelSpec) -> None:
    if model.hidden_act not in _PLAIN_ACTIVATIONS + _GATED_ACTIVATIONS:
        expected = " or ".join(map(repr, _PLAIN_ACTIVATIONS + _GATED_ACTIVATIONS))
        raise ConfigError.single("", "model.hidden_act", model.hidden_act, expected)


def moe_blocks(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    tp: int,
    *,
    ep: int = 1,
    expert_slots: float | None = None,
    sequence_parallel: bool = False,
    cp: int = 1,
    layer: int | None = None,
    etp: int | None = None,
    touched_experts: float | None = None,
    sort_by_local_expert: bool = False,
) -> tuple[Block, Block, Block, Block]:
    """The blocks of one mixture-of-experts layer on one tile: ``attn``, ``moe_route``,
    ``moe_experts``, ``moe_combine``.

    The layout is Megatron-Core's MoE layer with the all-to-all token dispatcher (Megatron-Core
    ``transformer/moe``; GShard, Lepikhin et al. 2020; DeepSeek-V3 report, Sec 2.1.2):

    - ``moe_route``: the pre-MLP norm; the router, a linear ``h → E`` replicated on every
      tile (``h·E`` parameters); the softmax of its ``N·E`` logits, from which the top-``k``
      are taken; the permutation of the ``N·k`` selected token copies into expert order (a
      copy of ``N·k·h`` elements, its backward the inverse permutation). Then the
      **dispatch** all-to-all over the EP group.
    - ``moe_experts``: the ``E/ep`` local experts, each a gated (SwiGLU) or plain MLP of width
      ``f_e`` split over the ``t`` tiles like the dense MLP (expert tensor parallelism = TP),
      as grouped GEMMs over the ``T`` = ``expert_slots`` slots the tile's experts received;
      with ``t > 1`` the row-parallel partial sums are all-reduced (``e·T·h``), and in the
      backward the column-parallel input gradient, as in the dense MLP. Then the
      **combine** all-to-all sends the outputs back.
    - ``moe_combine``: the inverse permutation, the weighted sum of each token's ``k`` expert
      outputs (by its router probabilities), the shared experts (one MLP of width
      ``n_s·f_e``, TP-split, every token; DeepSeek's shared experts), the residual dropout and
      add.

    ``sort_by_local_expert``: Megatron-Core's all-to-all dispatcher with more than one local
    expert sorts the received slots by local expert after the dispatch and back before the
    combine ("Permutation 2", token_dispatcher.py ``dispatch_postprocess``:
    ``sort_chunks_by_idxs`` when ``num_local_experts > 1``; ``combine_preprocess`` the
    inverse): a copy of the ``T·h`` received elements at each end of ``moe_experts``, each
    with its inverse in the backward. Megatron-Core's flex dispatcher (DeepEP) permutes once,
    after its dispatch, and a serving engine's fused MoE kernel once: no sort.

    ``sequence_parallel`` applies to the attention block only; the MoE blocks run on every
    token of the micro-batch on each TP rank. With ``cp`` > 1 a tile routes its ``s/cp``
    tokens (``N = b·s/cp``).

    ``etp`` (expert tensor parallelism; None: ``t``) folds the experts over the stage's ranks
    (MoE parallel folding, :mod:`palmsim.mapping.folding`): the routed experts' width splits
    over ``etp`` tiles in place of ``t``, and a tile routes ``N·etp/t`` of the tokens (its
    ETP group's share; the ``t/etp`` ETP groups of a TP group route disjoint shares), so the
    router, permutations and weighted sum run on ``N_r = N·etp/t`` tokens and ``N_r·k``
    slots. The partial sums are reduced over the ETP group (``e·T·h``, none with
    ``etp = 1``); the shared experts, the residual and its dropout stay on the TP group's
    ``N`` tokens. Below, ``N`` of the routed parts reads ``N_r`` and ``t`` of the routed
    experts ``etp``.

    ``T`` defaults to ``N·k`` (``N = b·s``): uniform, dropless routing, which gives every EP
    rank exactly the slots it sends. The grouped GEMMs read the weights of the
    ``touched_experts`` of the ``E/ep`` local experts that received a slot (default all of
    them; :func:`palmsim.workload.moe.touched_experts`: a decode step of a few tokens reads
    few), ``T/touched`` rows each; the tile holds all ``E/ep``. Every all-to-all has the
    per-tile buffer ``e·h·max(T, N·k)`` bytes (each tile sends ``1/ep`` of it to each EP
    peer) and exists when ``ep > 1``; the backward runs the reverse all-to-all of each, on
    the gradients.

    FLOP per tile and micro-batch (forward): router ``2·N·h·E``; experts ``2·T·h·f_e·m/t``
    with ``m = 3`` matrices gated, 2 plain; shared experts ``2·N·h·n_s·f_e·m/t``. Parameters
    per tile: router ``h·E``, experts ``(E/ep)·m·h·f_e/t``, shared ``m·h·n_s·f_e/t``, norm.
    With ``use_bias`` (gpt-oss) the router has ``E`` bias terms and each expert ``2·f_e/t``
    (gated; ``f_e/t`` plain) plus ``h``; Mixtral, DeepSeek-V3 and Qwen3-MoE have none.

    Saved activations: the norm's input and the router's input (``e·N·h`` each), the router
    probabilities (``e·N·E``); per expert GEMM its input (``e·T·h`` and ``e·T·f_e/t``) and the
    activation's inputs (as the dense MLP, on ``T`` rows); the weighted sum keeps its ``k``
    inputs (``e·N·k·h``); the shared experts as a dense MLP; the residual dropout mask.

    Raises:
        MappingError: ``ep`` does not divide ``E``, ``tp`` does not divide the heads, ``etp``
            does not divide the expert width or ``tp``, or ``tp/etp`` the tokens ``N``.
    """
    _check_common(model, micro_batch_size, tp)
    _check_activation(model)
    experts, top_k = model.num_experts, model.num_experts_per_tok
    f_e = model.expert_intermediate_size
    if ep < 1 or experts % ep:
        raise MappingError(
            f"model {model.name!r}: expert-parallel degree ep={ep} does not divide "
            f"num_experts={experts}"
        )
    etp = tp if etp is None else etp
    if etp < 1 or tp % etp:
        raise MappingError(f"model {model.name!r}: expert_tp={etp} does not divide tp={tp}")
    if f_e % etp:
        raise MappingError(
            f"model {model.name!r}: expert tensor-parallel degree {etp} does not divide the "
            f"expert width moe_intermediate_size={f_e}"
        )
    if model.num_shared_experts and f_e % tp:
        raise MappingError(
            f"model {model.name!r}: tp={tp} does not divide the shared experts' width "
            f"moe_intermediate_size={f_e}"
        )
    # The attention block is the dense layer's (its MLP width plays no part in it).
    attn = layer_blocks(
        dataclasses.replace(
            model,
            num_experts=0,
            num_experts_per_tok=0,
            num_shared_experts=0,
            hybrid_override_pattern=None,
        ),
        training,
        micro_batch_size,
        tp,
        sequence_parallel=sequence_parallel,
        layer=layer,
        cp=cp,
    )[0]
    e = _dtype_bytes(training)
    h = model.hidden_size
    seq = _local_seq_len(training, cp)
    n_tok = micro_batch_size * seq
    if (n_tok * etp) % tp:
        raise MappingError(
            f"model {model.name!r}: tp/expert_tp = {tp // etp} ETP groups do not split the "
            f"{n_tok} tokens of a micro-batch evenly"
        )
    n_route = n_tok * etp // tp  # the tokens this tile's ETP group routes
    act_bytes = e * n_tok * h
    route_bytes = e * n_route * h
    slots = float(n_route * top_k)
    received = slots if expert_slots is None else float(expert_slots)
    local = experts // ep
    gated = model.hidden_act in _GATED_ACTIVATIONS
    # Biases (gpt-oss's router and experts have them): added in the grouped GEMMs' epilogue,
    # so parameters only; a row-parallel fc2 bias is replicated on each TP rank.
    bias = model.use_bias
    width_t = f_e // etp
    shared_width_t = f_e // tp
    fc1_width = 2 * width_t if gated else width_t
    # LatentMoE (model.moe_latent_size): the routed tokens travel and meet their experts at
    # the latent width d, projected down after the router and back up after the combine
    latent = model.moe_latent_size
    d = h if latent is None else latent
    alltoall = e * d * max(received, slots) if ep > 1 else 0.0
    shape = _LayerShape(
        e=e, s=seq, h=h, d=model.head_dim, n_tok=n_tok, heads_t=1, kv_t=1,
        inner_t=width_t, batch_heads=1,
    )  # fmt: skip

    # ---- moe_route
    route_ops = [
        _norm_op(model, "norm2", n_tok, e),
        make_op(
            "router",
            "matmul",
            matmul_cost(n_route, h, experts, dtype_bytes=e, has_weight=True),
            params=h * experts + (experts if bias else 0),
            param_tensors=2 if bias else 1,
            dtype_bytes=e,
            saved_bytes=route_bytes,
        ),
        make_op(
            "router_softmax",
            "softmax",
            softmax_cost(n_route * experts, dtype_bytes=e),
            dtype_bytes=e,
            saved_bytes=e * n_route * experts,
        ),
        make_op(
            "permute",
            "copy",
            copy_cost(slots * d, dtype_bytes=e, forward=True, backward=True),
            dtype_bytes=e,
        ),
    ]
    route_edges: tuple[tuple[str, str, float], ...] = (
        (BLOCK_INPUT, "norm2", act_bytes),
        ("norm2", "router", route_bytes),
        ("router", "router_softmax", e * n_route * experts),
        ("norm2", "permute", route_bytes),
        ("router_softmax", "permute", e * n_route * top_k),
    )
    if latent is not None:
        # fc1_latent_proj, h -> d, a TELinear replicated on every TP rank
        # (parallel_mode="duplicated"), on the routed tokens before the dispatch
        # (megatron/core/transformer/moe/moe_layer.py, preprocess)
        route_ops.insert(
            3, linear_op("latent_down", n_route, h, d, dtype_bytes=e, saved_bytes=route_bytes)
        )
        route_edges = (
            *route_edges[:3],
            ("norm2", "latent_down", route_bytes),
            ("latent_down", "permute", e * n_route * d),
            route_edges[4],
        )
    # ---- moe_experts: grouped GEMMs over the `read` local experts that received a slot,
    # received/read rows each on average (the weights of the others are not read)
    read = float(local) if touched_experts is None else min(float(touched_experts), local)
    rows = received / read if read > 0 else 0.0
    expert_ops = [
        make_op(
            "experts_fc1",
            "matmul",
            matmul_cost(
                rows, d, fc1_width, batch=read, dtype_bytes=e, has_weight=True, grouped=True
            ),
            params=local * (d * fc1_width + (fc1_width if bias else 0)),
            param_tensors=local * (2 if bias else 1),
            dtype_bytes=e,
            weight_bytes=e * read * (d * fc1_width + (fc1_width if bias else 0)),
            saved_bytes=e * received * d,
        ),
        make_op(
            "experts_act",
            "elementwise",
            elementwise_cost(received * width_t, dtype_bytes=e, num_inputs=2 if gated else 1),
            dtype_bytes=e,
            saved_bytes=(2 if gated else 1) * e * received * width_t,
        ),
        make_op(
            "experts_fc2",
            "matmul",
            matmul_cost(rows, width_t, d, batch=read, dtype_bytes=e, has_weight=True, grouped=True),
            params=local * (width_t * d + (d if bias else 0)),
            param_tensors=local * (2 if bias else 1),
            dtype_bytes=e,
            weight_bytes=e * read * (width_t * d + (d if bias else 0)),
            saved_bytes=e * received * width_t,
        ),
    ]
    expert_edges: tuple[tuple[str, str, float], ...] = (
        (BLOCK_INPUT, "experts_fc1", e * received * d),
        ("experts_fc1", "experts_act", e * received * fc1_width),
        ("experts_act", "experts_fc2", e * received * width_t),
    )
    if sort_by_local_expert and local > 1:
        sort = copy_cost(received * d, dtype_bytes=e, forward=True, backward=True)
        expert_ops = [
            make_op("sort_chunks", "copy", sort, dtype_bytes=e),
            *expert_ops,
            make_op("unsort_chunks", "copy", sort, dtype_bytes=e),
        ]
        expert_edges = (
            (BLOCK_INPUT, "sort_chunks", e * received * d),
            ("sort_chunks", "experts_fc1", e * received * d),
            *expert_edges[1:],
            ("experts_fc2", "unsort_chunks", e * received * d),
        )
    expert_reduce = _allreduce(etp, e * received * d)  # over the ETP group
    # ---- moe_combine
    combine_ops = [
        make_op(
            "unpermute",
            "copy",
            copy_cost(slots * d, dtype_bytes=e, forward=True, backward=True),
            dtype_bytes=e,
        ),
        make_op(
            "weighted_sum",
            "elementwise",
            elementwise_cost(n_route * d, dtype_bytes=e, num_inputs=top_k),
            dtype_bytes=e,
            saved_bytes=e * slots * d,
        ),
    ]
    combine_edges: list[tuple[str, str, float]] = [
        (BLOCK_INPUT, "unpermute", e * slots * d),
        ("unpermute", "weighted_sum", e * slots * d),
    ]
    source = "weighted_sum"
    if latent is not None:
        # fc2_latent_proj, d -> h, replicated like fc1_latent_proj, after the combine
        # (moe_layer.py, postprocess)
        combine_ops.append(
            linear_op("latent_up", n_route, d, h, dtype_bytes=e, saved_bytes=e * n_route * d)
        )
        combine_edges.append(("weighted_sum", "latent_up", e * n_route * d))
        source = "latent_up"
    shared_reduce = 0.0
    if model.num_shared_experts:
        shared_t = model.num_shared_experts * shared_width_t
        shared_fc1_width = 2 * shared_t if gated else shared_t
        combine_ops += [
            make_op(
                "shared_fc1",
                "matmul",
                matmul_cost(n_tok, h, shared_fc1_width, dtype_bytes=e, has_weight=True),
                params=h * shared_fc1_width,
                dtype_bytes=e,
                saved_bytes=act_bytes,
            ),
            make_op(
                "shared_act",
                "elementwise",
                elementwise_cost(n_tok * shared_t, dtype_bytes=e, num_inputs=2 if gated else 1),
                dtype_bytes=e,
                saved_bytes=(2 if gated else 1) * e * n_tok * shared_t,
            ),
            make_op(
                "shared_fc2",
                "matmul",
                matmul_cost(n_tok, shared_t, h, dtype_bytes=e, has_weight=True),
                params=shared_t * h,
                dtype_bytes=e,
                saved_bytes=e * n_tok * shared_t,
            ),
            make_op(
                "shared_add",
                "elementwise",
                elementwise_cost(n_tok * h, dtype_bytes=e, num_inputs=2, num_saved=0),
                dtype_bytes=e,
            ),
        ]
        combine_edges += [
            (BLOCK_INPUT, "shared_fc1", act_bytes),  # the normed input, replicated
            ("shared_fc1", "shared_act", e * n_tok * shared_fc1_width),
            ("shared_act", "shared_fc2", e * n_tok * shared_t),
            ("shared_fc2", "shared_add", act_bytes),
            (source, "shared_add", route_bytes),
        ]
        source = "shared_add"
        shared_reduce = _allreduce(tp, act_bytes)
    ops_list: list[Op] = combine_ops
    source = _residual_dropout(model, shape, source, "mlp_dropout", ops_list, combine_edges)
    combine_ops.append(_residual_add("mlp_residual", shape, fused=source == "mlp_dropout"))
    combine_edges += [(BLOCK_INPUT, "mlp_residual", act_bytes), (source, "mlp_residual", act_bytes)]
    return (
        attn,
        Block(
            "moe_route",
            tuple(route_ops),
            0.0,
            0.0,
            route_edges,
            alltoall_fwd_bytes=alltoall,
        ),
        Block(
            "moe_experts",
            tuple(expert_ops),
            expert_reduce,
            expert_reduce,
            expert_edges,
            alltoall_fwd_bytes=alltoall,
            alltoall_bwd_bytes=alltoall,
        ),
        Block(
            "moe_combine",
            tuple(combine_ops),
            shared_reduce,
            shared_reduce,
            tuple(combine_edges),
            alltoall_bwd_bytes=alltoall,
        ),
    )


@dataclass(frozen=True, slots=True)
class _Projections:
    """The attention block's ops up to the core: what the core reads and from which op."""

    ops: tuple[Op, ...]
    edges: tuple[tuple[str, str, float], ...]
    input_edges: tuple[tuple[str, str, float], ...]  # from norm1 to the projections
    qk_source: str  # the op whose output holds Q and K
    v_source: str  # the op whose output holds V
    qk_bytes: float  # bytes of Q and K on the tile [B]
    v_bytes: float  # bytes of V on the tile [B]


def _qkv_projections(model: ModelSpec, shape: _LayerShape) -> _Projections:
    """norm1, the fused column-parallel QKV projection (its bias), the split, RoPE."""
    e, h, d, n_tok = shape.e, shape.h, shape.d, shape.n_tok
    act_bytes = shape.act_bytes
    q_width = shape.heads_t * d
    kv_width = shape.kv_t * d
    bias = model.use_bias
    ops: list[Op] = [_norm_op(model, "norm1", n_tok, e)]
    edges: list[tuple[str, str, float]] = []
    # Column-parallel QKV: h → (a/t + 2·kv/t)·d, bias split with the columns; keeps its
    # input, 2sbh, replicated. An output gate (Qwen3-Next) doubles the query's columns.
    qkv_width = q_width * (2 if model.attention_output_gate else 1) + 2 * kv_width
    qkv = matmul_cost(n_tok, h, qkv_width, dtype_bytes=e, has_weight=True)
    ops.append(
        make_op(
            "qkv",
            "matmul",
            qkv,
            params=h * qkv_width + (qkv_width if bias else 0),
            param_tensors=2 if bias else 1,
            dtype_bytes=e,
            saved_bytes=act_bytes,
        )
    )
    qkv_bytes = e * n_tok * qkv_width
    qkv_source = "qkv"
    if bias:
        # PyTorch's linear on the 3-D [s, b, h] input adds the bias in its own kernel.
        qkv_bias = bias_cost(n_tok * qkv_width, dtype_bytes=e)
        ops.append(make_op("qkv_bias", "bias", qkv_bias, dtype_bytes=e))
        edges.append(("qkv", "qkv_bias", qkv_bytes))
        qkv_source = "qkv_bias"
    # Q, K and V are torch.split views of the fused projection's output (Megatron-LM's
    # split_tensor_along_last_dim); the backward assembles their gradients with a cat.
    split = copy_cost(n_tok * qkv_width, dtype_bytes=e, forward=False, backward=True)
    ops.append(make_op("qkv_split", "copy", split, dtype_bytes=e))
    edges.append((qkv_source, "qkv_split", qkv_bytes))
    qk_bytes = e * n_tok * (q_width + kv_width)
    qk_source = "qkv_split"
    if model.position_embedding == "rope":
        # Rotary embedding of Q and K: memory-bound; its backward needs no saved tensor.
        rope = elementwise_cost(n_tok * (q_width + kv_width), dtype_bytes=e, num_saved=0)
        ops.append(make_op("rope", "elementwise", rope, dtype_bytes=e))
        edges.append(("qkv_split", "rope", qk_bytes))
        qk_source = "rope"
    return _Projections(
        tuple(ops),
        tuple(edges),
        (("norm1", "qkv", act_bytes),),
        qk_source,
        "qkv_split",
        qk_bytes,
        e * n_tok * kv_width,
    )


def _mla_projections(model: ModelSpec, shape: _LayerShape) -> _Projections:
    """Multi-head latent attention's projections as Megatron-Core trains them
    (``megatron/core/transformer/multi_latent_attention.py``, ``MLASelfAttention`` with the
    Transformer Engine layer spec; DeepSeek-AI, DeepSeek-V2 report arXiv:2405.04434, Sec 2.1).

    Notation: ``r_q`` = ``q_lora_rank``, ``r_kv`` = ``kv_lora_rank``, ``d_n`` / ``d_r`` /
    ``d_v`` the per-head no-rope, rope and value widths, ``d = d_n + d_r`` the query-key
    width, ``a_t = a/t`` heads on the tile, ``N`` the micro-batch's tokens, ``N_d`` the tokens
    the down projections see: ``N/t`` under sequence parallelism, else ``N``.

    - ``norm1``: the input RMSNorm.
    - ``q_down``: ``h → r_q``, a "duplicated" linear (TELinear ``parallel_mode='duplicated'``:
      the whole weight on every TP rank, nothing split), on ``N_d`` tokens; keeps its input.
    - ``q_norm``: RMSNorm over ``r_q`` (the layer-norm half of TE's LayerNormColumnParallel
      linear), ``r_q`` parameters; keeps its input.
    - ``q_up``: column-parallel ``r_q → a_t·d`` on all ``N`` tokens (the gathered sequence);
      keeps its input (sequence-sharded, ``N_d`` rows, as TE keeps a gathered input).
    - ``kv_down``: duplicated ``h → r_kv + d_r``, the compressed KV and the one rotary key
      all heads share, on ``N_d`` tokens; its input is ``q_down``'s (kept once).
    - ``kv_norm``: RMSNorm over ``r_kv``; keeps its input.
    - ``kv_up``: column-parallel ``r_kv → a_t·(d_n + d_v)``, the heads' no-rope keys and
      values; keeps its input (``N_d`` rows).
    - ``rope``: rotary embedding of the queries' ``d_r`` part and the shared key, and the
      assembly of the contiguous Q, K (the shared rope key broadcast to every head) and V that
      Transformer Engine's attention takes: one pass writing ``a_t·(2d + d_v)`` per token,
      counted as a copy of those elements (its backward writes their gradients); keeps
      nothing.

    The core then attends ``a_t`` heads of query-key width ``d`` and value width ``d_v``, and
    the row-parallel output projection maps ``a_t·d_v → h``.
    """
    e, h, n_tok = shape.e, shape.h, shape.n_tok
    down = shape.down_tokens or n_tok
    a_t = shape.heads_t
    d_nope, d_rope = int(model.qk_nope_head_dim or 0), int(model.qk_rope_head_dim or 0)
    d, d_v = shape.d, shape.value_dim
    r_kv = int(model.kv_lora_rank or 0)
    act_bytes = shape.act_bytes
    ops: list[Op] = [_norm_op(model, "norm1", n_tok, e)]
    edges: list[tuple[str, str, float]] = []
    q_source = "norm1"
    if model.q_lora_rank is not None:
        r_q = model.q_lora_rank
        ops += [
            make_op(
                "q_down",
                "matmul",
                matmul_cost(down, h, r_q, dtype_bytes=e, has_weight=True),
                params=h * r_q,
                dtype_bytes=e,
                saved_bytes=e * down * h,
            ),
            rms_norm_op("q_norm", down, r_q, dtype_bytes=e),
            make_op(
                "q_up",
                "matmul",
                matmul_cost(n_tok, r_q, a_t * d, dtype_bytes=e, has_weight=True),
                params=r_q * a_t * d,
                dtype_bytes=e,
                saved_bytes=e * down * r_q,
            ),
        ]
        edges += [
            ("q_down", "q_norm", e * down * r_q),
            ("q_norm", "q_up", e * n_tok * r_q),
        ]
        q_source = "q_up"
    else:
        # No query compression (DeepSeek-V2-Lite): a column-parallel h → a_t·d projection.
        ops.append(
            make_op(
                "q_proj",
                "matmul",
                matmul_cost(n_tok, h, a_t * d, dtype_bytes=e, has_weight=True),
                params=h * a_t * d,
                dtype_bytes=e,
                saved_bytes=act_bytes,
            )
        )
        q_source = "q_proj"
    kv_up_width = a_t * (d_nope + d_v)
    ops += [
        make_op(
            "kv_down",
            "matmul",
            matmul_cost(down, h, r_kv + d_rope, dtype_bytes=e, has_weight=True),
            params=h * (r_kv + d_rope),
            dtype_bytes=e,
            # its input is q_down's (the normed layer input), kept once
            saved_bytes=0.0 if model.q_lora_rank is not None else e * down * h,
        ),
        rms_norm_op("kv_norm", down, r_kv, dtype_bytes=e),
        make_op(
            "kv_up",
            "matmul",
            matmul_cost(n_tok, r_kv, kv_up_width, dtype_bytes=e, has_weight=True),
            params=r_kv * kv_up_width,
            dtype_bytes=e,
            saved_bytes=e * down * r_kv,
        ),
    ]
    qkv_elements = n_tok * a_t * (2 * d + d_v)
    ops.append(
        make_op(
            "rope",
            "copy",
            copy_cost(qkv_elements, dtype_bytes=e, forward=True, backward=True),
            dtype_bytes=e,
        )
    )
    edges += [
        ("kv_down", "kv_norm", e * down * r_kv),
        ("kv_norm", "kv_up", e * n_tok * r_kv),
        (q_source, "rope", e * n_tok * a_t * d),
        ("kv_up", "rope", e * n_tok * kv_up_width),
        ("kv_down", "rope", e * n_tok * d_rope),
    ]
    return _Projections(
        tuple(ops),
        tuple(edges),
        (
            ("norm1", q_source if q_source == "q_proj" else "q_down", act_bytes),
            ("norm1", "kv_down", act_bytes),
        ),
        "rope",
        "rope",
        e * n_tok * a_t * 2 * d,
        e * n_tok * a_t * d_v,
    )


def _attention_ops(
    model: ModelSpec, shape: _LayerShape
) -> tuple[tuple[Op, ...], tuple[tuple[str, str, float], ...]]:
    """Ops and edges of the attention block: the projections (:func:`_qkv_projections`, or
    :func:`_mla_projections` for multi-head latent attention), the core, the output projection.

    Saved bytes (Korthikanti Sec 4.1, at t = 1 and e = 2: ``11sbh + 5as²b``): norm input
    ``2sbh``, QKV input ``2sbh``, Q and K ``4sbh/t``, softmax output ``2as²b/t``, its dropout
    mask ``as²b/t``, the dropout output ``2as²b/t`` and V ``2sbh/t``, the output-projection
    input ``2sbh/t``, the residual dropout mask ``sbh``.

    The unfused core computes and keeps the whole ``s x s`` scores also for a sliding-window
    layer (its mask hides the keys outside the window), but such a layer's model FLOPs count
    only the band it attends, ``2·b·(a/t)·P·(d + d_v)`` with ``P`` its pairs
    (:func:`palmsim.workload.ops.attended_pairs`), as NeMo's gpt-oss FLOP formula does
    (Megatron-Bridge ``flop_utils``: the window's non-zero mask elements). With attention
    sinks the softmax owns the ``a/t`` learned sink logits.
    """
    e, s, h, d, n_tok = shape.e, shape.s, shape.h, shape.d, shape.n_tok
    d_v = shape.value_dim
    act_bytes = shape.act_bytes
    bias = model.use_bias
    front = _mla_projections(model, shape) if model.is_mla else _qkv_projections(model, shape)
    ops: list[Op] = list(front.ops)
    edges: list[tuple[str, str, float]] = list(front.edges)
    qk_source, qk_bytes, v_bytes = front.qk_source, front.qk_bytes, front.v_bytes
    out_width = shape.heads_t * d_v
    banded_model_flop = (
        None
        if shape.window is None and shape.document is None
        else 2.0
        * shape.batch_heads
        * attended_pairs(
            s, shape.keys, causal=model.causal, window=shape.window, document=shape.document
        )
    )
    # QKᵀ: b·a/t products (s × d)·(d × s), 2bs²h/t FLOP. Keeps Q and K, 4sbh/t for MHA (K
    # shrinks by a/kv under GQA), under selective recompute too: the core is rebuilt from them.
    # Context parallelism: the tile's s/cp queries against all s keys, whose chunks pass
    # around the CP ring (palmsim.mapping.context): the FLOP are 1/cp of the layer's.
    keys = shape.keys
    scores = matmul_cost(s, d, keys, batch=shape.batch_heads, dtype_bytes=e)
    ops.append(
        dataclasses.replace(
            make_op(
                "scores",
                "matmul",
                scores,
                dtype_bytes=e,
                saved_bytes=qk_bytes,
                recompute_selective=True,
            ),
            model_flop_fwd=None if banded_model_flop is None else banded_model_flop * d,
        )
    )
    # Softmax (with scale and mask) keeps its output, 2as²b/t; dropped under selective.
    att_elements = shape.batch_heads * s * keys
    att_bytes = e * att_elements
    softmax = softmax_cost(att_elements, dtype_bytes=e)
    ops.append(
        make_op(
            "softmax",
            "softmax",
            softmax,
            params=shape.heads_t if model.attention_sinks else 0,
            dtype_bytes=e,
            saved_bytes=att_bytes,
            saved_bytes_selective=0.0,
            recompute_selective=True,
        )
    )
    probs_source = "softmax"
    has_attn_dropout = model.attention_dropout > 0
    if has_attn_dropout:
        # Softmax dropout keeps its 1-byte mask, as²b/t; dropped under selective.
        dropout = dropout_cost(att_elements, dtype_bytes=e)
        ops.append(
            make_op(
                "attn_dropout",
                "dropout",
                dropout,
                dtype_bytes=e,
                saved_bytes=MASK_BYTES_PER_ELEMENT * att_elements,
                saved_bytes_selective=0.0,
                recompute_selective=True,
            )
        )
        edges.append(("softmax", "attn_dropout", att_bytes))
        probs_source = "attn_dropout"
    # Attention over V: b·a/t products (s × s)·(s × d_v), 2bs²h/t FLOP for d_v = d. Keeps V
    # (2sbh/t for MHA) and the dropout output (2as²b/t); without attention dropout its
    # probabilities are the softmax output, already kept by the softmax. Selective recompute
    # keeps only V.
    context = matmul_cost(s, keys, d_v, batch=shape.batch_heads, dtype_bytes=e)
    ops.append(
        dataclasses.replace(
            make_op(
                "context",
                "matmul",
                context,
                dtype_bytes=e,
                saved_bytes=v_bytes + (att_bytes if has_attn_dropout else 0.0),
                saved_bytes_selective=v_bytes,
                recompute_selective=True,
            ),
            model_flop_fwd=None if banded_model_flop is None else banded_model_flop * d_v,
        )
    )
    # The context [b·a/t, s, d] is permuted to [s, b, a/t·d] by a .contiguous() copy, recomputed
    # with the attention core; its backward is a view.
    layout = copy_cost(n_tok * out_width, dtype_bytes=e)
    ops.append(make_op("context_layout", "copy", layout, dtype_bytes=e, recompute_selective=True))
    out_input = "context_layout"
    if model.attention_output_gate:
        # Qwen3-Next's output gate, attn_output * sigmoid(gate): one elementwise kernel of two
        # inputs, keeping both
        gate = elementwise_cost(n_tok * out_width, dtype_bytes=e, num_inputs=2)
        gate_bytes = e * n_tok * out_width
        ops.append(
            make_op("attn_gate", "elementwise", gate, dtype_bytes=e, saved_bytes=2 * gate_bytes)
        )
        edges += [
            ("context_layout", "attn_gate", gate_bytes),
            (front.v_source, "attn_gate", gate_bytes),
        ]
        out_input = "attn_gate"
    # Row-parallel output projection: (a/t)·d_v → h; keeps its input, 2sbh/t. Its bias is
    # added after the all-reduce, so it is replicated.
    out_proj = matmul_cost(n_tok, out_width, h, dtype_bytes=e, has_weight=True)
    ops.append(
        make_op(
            "out_proj",
            "matmul",
            out_proj,
            params=out_width * h + (h if bias else 0),
            param_tensors=2 if bias else 1,
            dtype_bytes=e,
            saved_bytes=e * n_tok * out_width,
        )
    )
    out_source = _row_parallel_bias(model, shape, "out_proj", "out_bias", ops, edges)
    out_source = _residual_dropout(model, shape, out_source, "out_dropout", ops, edges)
    ops.append(_residual_add("attn_residual", shape, fused=out_source == "out_dropout"))
    edges += [
        (BLOCK_INPUT, "norm1", act_bytes),
        (BLOCK_INPUT, "attn_residual", act_bytes),
        *front.input_edges,
        (qk_source, "scores", qk_bytes),
        (front.v_source, "context", v_bytes),
        ("scores", "softmax", att_bytes),
        (probs_source, "context", att_bytes),
        ("context", "context_layout", e * n_tok * out_width),
        (out_input, "out_proj", e * n_tok * out_width),
        (out_source, "attn_residual", act_bytes),
    ]
    return tuple(ops), tuple(edges)


#: The unfused attention core (:func:`_attention_ops`), which a fused kernel replaces.
_ATTENTION_CORE = ("scores", "softmax", "attn_dropout", "context", "context_layout")

#: The attention ops that multiply two activations, no weight: the unfused core's QK^T and
#: scores x V, or the fused kernel that runs both (:func:`_fused_attention`).
ACTIVATION_MATMULS = frozenset({"scores", "context", "attention"})

#: The attention core's ops, unfused (:func:`_attention_ops`) or the fused kernel.
ATTENTION_CORE_OPS = frozenset({*_ATTENTION_CORE, "attention"})


def _fused_attention(
    model: ModelSpec,
    shape: _LayerShape,
    ops: tuple[Op, ...],
    edges: tuple[tuple[str, str, float], ...],
    cp: int,
) -> tuple[tuple[Op, ...], tuple[tuple[str, str, float], ...]]:
    """The attention block with its core as one fused kernel (``training.attention_kernel:
    fused``; :func:`palmsim.workload.ops.fused_attention_cost`); with context parallelism
    ``cp`` > 1, the kernel per ring step and the merges (:func:`_ring_attention_kernels`).

    It writes its output straight in the ``[s, b, h]`` layout (no layout copy) and keeps what
    the unfused core keeps under selective recompute, Q, K and V, plus its fp32 log-sum-exp,
    ``4·b·(a/t)·s`` B; its output is the output projection's saved input. Model FLOPs are
    the unfused core's: the full ``s x s`` products (Narayanan et al. SC21), or a
    sliding-window layer's band. A sliding-window layer's kernel executes only its band.
    """
    core = [op for op in ops if op.name in _ATTENTION_CORE]
    first = ops.index(core[0])
    cost = fused_attention_cost(
        shape.batch_heads,
        shape.s,
        shape.keys,
        shape.d,
        value_dim=shape.value_dim,
        kv_heads_ratio=shape.kv_t / shape.heads_t,
        causal=model.causal,
        window=shape.window,
        document=shape.document,
        dtype_bytes=shape.e,
    )
    kept = sum(op.saved_bytes_selective for op in core)  # Q, K and V
    lse = 4.0 * shape.batch_heads * shape.s
    fused = make_op(
        "attention",
        "attention",
        cost,
        params=sum(op.params for op in core),  # attention sinks, if any
        dtype_bytes=shape.e,
        saved_bytes=kept + lse,
        saved_bytes_selective=kept,
        recompute_selective=True,
    )
    model_flop = sum(op.flop_fwd if op.model_flop_fwd is None else op.model_flop_fwd for op in core)
    fused = dataclasses.replace(fused, model_flop_fwd=model_flop)
    rest = [op for op in ops[first:] if op.name not in _ATTENTION_CORE]
    new_edges: list[tuple[str, str, float]] = []
    kernel: tuple[Op, ...] = (fused,)
    if cp > 1:
        kernel = _ring_attention_kernels(fused, shape, cp)
        out_bytes = shape.e * shape.batch_heads * shape.s * shape.value_dim
        new_edges.append(("attention", kernel[-1].name, out_bytes))
    # the output projection reads the last op's output
    renamed = {"scores": "attention", "context": "attention", "context_layout": kernel[-1].name}
    for src, dst, nbytes in edges:
        if src in _ATTENTION_CORE and dst in _ATTENTION_CORE:
            continue
        new_edges.append((renamed.get(src, src), renamed.get(dst, dst), nbytes))
    return (*ops[:first], *kernel, *rest), tuple(dict.fromkeys(new_edges))


def _ring_attention_kernels(fused: Op, shape: _LayerShape, cp: int) -> tuple[Op, Op]:
    """A context-parallel rank's fused attention as Transformer Engine runs it on the KV ring
    (transformer_engine/pytorch/attention/dot_product_attention/context_parallel.py,
    ``AttnFuncWithCPAndKVP2P``): one attention kernel call per ring step, ``cp`` calls in
    each pass where a whole sequence makes one, and the merges of the steps' partial results.

    - Forward: after the ring, each step's partial output is merged into the rank's output,
      rescaled by its log-sum-exp (``flash_attn_fwd_out_correction_init`` for the first,
      ``flash_attn_fwd_out_correction`` or its ``_second_half_`` variant for the others, or
      ``tex.thd_out_correction`` for packed sequences): ``cp`` kernels (each a jit-fused
      function, one kernel), reading the step's output and reading and writing the sum. The
      ``cp - 1`` log-sum-exp merges run on the second attention stream beside the next step's
      kernel and are not charged.
    - Backward: each step adds its partial dQ into the rank's dQ (``dq.add_``) and its dK and
      dV into the chunk's running gradient that travels the ring (``dk.add_``, ``dv.add_``):
      ``3·cp`` kernels.

    Causal load balancing makes step 0 the whole diagonal and each later step half the
    queries (a step whose keys come after the rank's first chunk) or half the keys: the
    merged tensors of later steps are full-size on ranks that hold the step's earlier chunk
    and half-size on the others, ``3/4`` of full on the mean of the group's ranks, which is
    what every rank is charged (:mod:`palmsim.mapping.context` costs all ranks alike). A merge
    reads and writes ``3·e`` bytes per element (the step's partial, the sum in and out); the
    forward's first, which starts the sum, ``2·e``. Backward, a step that starts a gradient's
    sum copies it (``2·e``), which is charged as an add: an upper bound by one step's copy.
    """
    e, b = shape.e, shape.batch_heads // shape.heads_t
    out = shape.batch_heads * shape.s * shape.value_dim  # the rank's output (and dQ: d = d_v)
    q = shape.batch_heads * shape.s * shape.d
    kv = b * shape.kv_t * shape.s * (shape.d + shape.value_dim)  # dK and dV
    later = 0.75 * (cp - 1)  # full-size equivalents of the cp - 1 steps after the first
    merge = make_op(
        "ring_merge",
        "elementwise",
        OpCost(
            0.0,
            0.0,
            e * out * (2.0 + 3.0 * later),
            3.0 * e * (q + kv) * (1.0 + later),
            kernels_fwd=cp,
            kernels_bwd=3 * cp,
        ),
        dtype_bytes=e,
        recompute_selective=True,  # part of the core selective recompute re-runs
    )
    calls = dataclasses.replace(
        fused, kernels_fwd=cp * fused.kernels_fwd, kernels_bwd=cp * fused.kernels_bwd
    )
    return calls, merge


def _mlp_ops(
    model: ModelSpec, shape: _LayerShape
) -> tuple[tuple[Op, ...], tuple[tuple[str, str, float], ...]]:
    """Ops and edges of the MLP block.

    Saved bytes (Korthikanti Sec 4.1, at t = 1, e = 2 and f = 4h: ``19sbh``): norm input
    ``2sbh``, fc1 input ``2sbh``, GeLU input ``8sbh/t``, fc2 input ``8sbh/t``, residual
    dropout mask ``sbh``. SwiGLU keeps both its inputs, ``2·e·s·b·f/t``.
    """
    e, h, n_tok, inner_t = shape.e, shape.h, shape.n_tok, shape.inner_t
    act_bytes = shape.act_bytes
    bias = model.use_bias
    gated = model.hidden_act in _GATED_ACTIVATIONS
    fc1_width = 2 * inner_t if gated else inner_t  # SwiGLU: gate and up projections
    ops: list[Op] = []
    edges: list[tuple[str, str, float]] = []

    ops.append(_norm_op(model, "norm2", n_tok, e))
    # Column-parallel fc1: h → f/t (2f/t gated), bias split; keeps its input, 2sbh, replicated.
    fc1 = matmul_cost(n_tok, h, fc1_width, dtype_bytes=e, has_weight=True)
    ops.append(
        make_op(
            "fc1",
            "matmul",
            fc1,
            params=h * fc1_width + (fc1_width if bias else 0),
            param_tensors=2 if bias else 1,
            dtype_bytes=e,
            saved_bytes=act_bytes,
        )
    )
    fc1_source = "fc1"
    if bias:
        # GeLU: Megatron-LM's bias-GeLU fusion adds the bias inside the activation's kernel;
        # SwiGLU adds it in a kernel of its own first.
        fc1_bias = bias_cost(n_tok * fc1_width, dtype_bytes=e, fused=not gated)
        ops.append(make_op("fc1_bias", "bias", fc1_bias, dtype_bytes=e))
        edges.append(("fc1", "fc1_bias", e * n_tok * fc1_width))
        fc1_source = "fc1_bias"
    num_inputs = 2 if gated else 1  # SwiGLU silu(gate)·up; GeLU of one input
    act_name = "swiglu" if gated else "gelu"
    activation = elementwise_cost(n_tok * inner_t, dtype_bytes=e, num_inputs=num_inputs)
    ops.append(
        make_op(
            act_name,
            "elementwise",
            activation,
            dtype_bytes=e,
            saved_bytes=num_inputs * e * n_tok * inner_t,
        )
    )
    # Row-parallel fc2: f/t → h, replicated bias; keeps its input, 8sbh/t at f = 4h.
    fc2 = matmul_cost(n_tok, inner_t, h, dtype_bytes=e, has_weight=True)
    ops.append(
        make_op(
            "fc2",
            "matmul",
            fc2,
            params=inner_t * h + (h if bias else 0),
            param_tensors=2 if bias else 1,
            dtype_bytes=e,
            saved_bytes=e * n_tok * inner_t,
        )
    )
    out_source = _row_parallel_bias(model, shape, "fc2", "fc2_bias", ops, edges)
    out_source = _residual_dropout(model, shape, out_source, "mlp_dropout", ops, edges)
    ops.append(_residual_add("mlp_residual", shape, fused=out_source == "mlp_dropout"))
    edges += [
        (BLOCK_INPUT, "norm2", act_bytes),
        (BLOCK_INPUT, "mlp_residual", act_bytes),
        ("norm2", "fc1", act_bytes),
        (fc1_source, act_name, e * n_tok * fc1_width),
        (act_name, "fc2", e * n_tok * inner_t),
        (out_source, "mlp_residual", act_bytes),
    ]
    return tuple(ops), tuple(edges)


def _row_parallel_bias(
    model: ModelSpec,
    shape: _LayerShape,
    source: str,
    name: str,
    ops: list[Op],
    edges: list[tuple[str, str, float]],
) -> str:
    """Append the bias of a row-parallel projection after ``source`` if the model has biases.

    Megatron-LM adds it after the all-reduce (``skip_bias_add``), inside the fused
    bias-dropout-add, so it is replicated on every tile and its forward launches nothing; its
    backward reduces the ``b·s·h`` gradient. Returns the op the residual path continues from.
    """
    if not model.use_bias:
        return source
    cost = bias_cost(shape.n_tok * shape.h, dtype_bytes=shape.e, fused=True)
    ops.append(make_op(name, "bias", cost, dtype_bytes=shape.e))
    edges.append((source, name, shape.act_bytes))
    return name


def _residual_dropout(
    model: ModelSpec,
    shape: _LayerShape,
    source: str,
    name: str,
    ops: list[Op],
    edges: list[tuple[str, str, float]],
) -> str:
    """Append the residual dropout after ``source`` if ``hidden_dropout > 0``.

    It is Megatron-LM's fused bias-dropout-add (:func:`dropout_cost` with ``residual``): its
    forward kernel also does the residual add. It keeps its 1-byte mask, ``sbh``, replicated
    on every tile. Returns the op whose output goes into the residual add.
    """
    if model.hidden_dropout <= 0:
        return source
    elements = shape.n_tok * shape.h
    cost = dropout_cost(elements, dtype_bytes=shape.e, residual=True)
    ops.append(
        make_op(
            name,
            "dropout",
            cost,
            dtype_bytes=shape.e,
            saved_bytes=MASK_BYTES_PER_ELEMENT * elements,
        )
    )
    edges.append((source, name, shape.act_bytes))
    return name


def _residual_add(name: str, shape: _LayerShape, *, fused: bool) -> Op:
    """The residual add of a block's output to its input; keeps nothing.

    ``fused``: its forward runs inside the fused bias-dropout-add before it. Its backward is
    where the residual path's gradient and the block's input gradient are summed.
    """
    cost = elementwise_cost(
        shape.n_tok * shape.h, dtype_bytes=shape.e, num_inputs=2, num_saved=0, fused_forward=fused
    )
    return make_op(name, "elementwise", cost, dtype_bytes=shape.e)


def embedding_block(
    model: ModelSpec, training: TrainingSpec, micro_batch_size: int, tp: int
) -> Block:
    """The input embedding on one of ``tp`` tiles.

    The word embedding is vocabulary-parallel (Megatron: ``ceil(V/t)·h`` rows per tile, the
    tile's partial lookups summed by a forward all-reduce of ``e·b·s·h`` bytes when ``t > 1``;
    no backward all-reduce). A learned position embedding (``max_position_embeddings·h``) is
    replicated on every tile and added; with ``hidden_dropout > 0`` the sum goes through a
    dropout that keeps its 1-byte mask (``sbh``, Korthikanti Sec 4.3).
    """
    _check_common(model, micro_batch_size, tp)
    e = _dtype_bytes(training)
    n_tok = micro_batch_size * training.seq_len
    h = model.hidden_size
    act_bytes = e * n_tok * h
    ops = [
        make_op(
            "word_embedding",
            "embedding",
            embedding_cost(n_tok, h, dtype_bytes=e),
            params=_vocab_per_tile(model, tp) * h,
            dtype_bytes=e,
            weight_bytes=0.0,  # only the gathered rows are read; they are in bytes_fwd
        )
    ]
    edges: list[tuple[str, str, float]] = []
    source = "word_embedding"
    if model.position_embedding == "learned":
        ops.append(
            make_op(
                "position_embedding",
                "embedding",
                embedding_cost(n_tok, h, dtype_bytes=e),
                params=model.max_position_embeddings * h,
                dtype_bytes=e,
                weight_bytes=0.0,
            )
        )
        ops.append(
            make_op(
                "embed_add",
                "elementwise",
                elementwise_cost(n_tok * h, dtype_bytes=e, num_inputs=2, num_saved=0),
                dtype_bytes=e,
            )
        )
        edges += [
            ("word_embedding", "embed_add", act_bytes),
            ("position_embedding", "embed_add", act_bytes),
        ]
        source = "embed_add"
    if model.hidden_dropout > 0:
        ops.append(
            make_op(
                "embed_dropout",
                "dropout",
                dropout_cost(n_tok * h, dtype_bytes=e),
                dtype_bytes=e,
                saved_bytes=MASK_BYTES_PER_ELEMENT * n_tok * h,
            )
        )
        edges.append((source, "embed_dropout", act_bytes))
    return Block("embed", tuple(ops), _allreduce(tp, act_bytes), 0.0, tuple(edges))


def head_block(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    tp: int,
    *,
    count_tied_weights: bool = False,
) -> Block:
    """The final norm, the LM head and the cross-entropy loss on one of ``tp`` tiles.

    The LM head is column-parallel over the vocabulary (h → ``ceil(V/t)``) and keeps its input;
    the vocabulary-parallel cross-entropy keeps fp32 softmax values, ``4·b·s·V/t`` bytes
    (Korthikanti Sec 4.3). The backward all-reduces the head's input gradient, ``e·b·s·h``.
    The forward all-reduces the three per-token fp32 reductions of the vocabulary-parallel
    loss (max, sum of exponentials, target logit), lumped into one buffer of ``3·4·b·s`` bytes.

    Args:
        count_tied_weights: with ``tie_word_embeddings``, whether this head owns a copy of the
            embedding matrix (Megatron's last pipeline stage keeps its own copy when it does
            not also hold the embedding); the mapper decides. Untied heads always own theirs.
            Either way the head reads the matrix: ``weight_bytes`` is not affected.
    """
    _check_common(model, micro_batch_size, tp)
    e = _dtype_bytes(training)
    n_tok = micro_batch_size * training.seq_len
    h = model.hidden_size
    vocab_t = _vocab_per_tile(model, tp)
    act_bytes = e * n_tok * h
    owns_weights = count_tied_weights or not model.tie_word_embeddings
    ops = (
        _norm_op(model, "final_norm", n_tok, e),
        make_op(
            "lm_head",
            "matmul",
            matmul_cost(n_tok, h, vocab_t, dtype_bytes=e, has_weight=True),
            params=h * vocab_t if owns_weights else 0,
            dtype_bytes=e,
            weight_bytes=e * h * vocab_t,
            saved_bytes=act_bytes,
        ),
        make_op(
            "loss",
            "loss",
            loss_cost(n_tok, vocab_t, dtype_bytes=e),
            dtype_bytes=e,
            saved_bytes=LOSS_BYTES_PER_ELEMENT * n_tok * vocab_t,
        ),
    )
    edges = (
        (BLOCK_INPUT, "final_norm", act_bytes),
        ("final_norm", "lm_head", act_bytes),
        ("lm_head", "loss", e * n_tok * vocab_t),
    )
    loss_reductions_bytes = 3 * LOSS_BYTES_PER_ELEMENT * n_tok
    return Block(
        "head", ops, _allreduce(tp, loss_reductions_bytes), _allreduce(tp, act_bytes), edges
    )


# --------------------------------------------------------------------------- whole-model sums

# Parameter counts do not depend on the training set-up; builders need one anyway.
_ANY_TRAINING = TrainingSpec(seq_len=1, global_batch_size=1)


def layer_kinds(
    model: ModelSpec, training: TrainingSpec, micro_batch_size: int, tp: int
) -> tuple[tuple[int, tuple[Block, ...]], ...]:
    """Each kind of layer of the model with how many layers have it: ``((count, blocks),
    ...)``, in the order of their first layer; a kind is a dense or mixture-of-experts MLP
    with full or sliding-window attention; mixture-of-experts layers with uniform dropless
    routing and every expert on the tile (``ep = 1``)."""
    counts: dict[tuple[str, bool, int | None, int | None, bool], list[int]] = {}
    for i in range(model.num_hidden_layers):
        key = (
            model.layer_kind(i),
            model.is_moe_layer(i),
            model.attention_window(i),
            model.attention_chunk(i),
            model.is_linear_attention_layer(i),
        )
        counts.setdefault(key, []).append(i)
    return tuple(
        (len(layers), layer_blocks(model, training, micro_batch_size, tp, layer=layers[0]))
        for layers in counts.values()
    )


def num_parameters(model: ModelSpec) -> int:
    """Parameters of the whole model, unsharded, counting a tied embedding once.

    For a GPT (biases, LayerNorm, learned positions, tied head) this is Megatron SC21 Eq.2,
    ``12·l·h²·(1 + 13/(12h) + (V + s)/(12·l·h))`` with ``s = max_position_embeddings``, plus
    the final LayerNorm's ``2h`` that Eq.2 leaves out. A mixture-of-experts model counts
    every expert (:func:`num_active_parameters` counts those a token uses).
    """
    embed = embedding_block(model, _ANY_TRAINING, 1, 1)
    head = head_block(model, _ANY_TRAINING, 1, 1, count_tied_weights=False)
    layers = sum(
        count * sum(b.params for b in blocks)
        for count, blocks in layer_kinds(model, _ANY_TRAINING, 1, 1)
    )
    return round(embed.params + layers + head.params)


def num_active_parameters(model: ModelSpec) -> int:
    """Parameters one token passes through: :func:`num_parameters` with each MoE layer's
    routed experts counted ``k`` times instead of ``E`` (Mixtral 8x7B: 12.9 B of 46.7 B)."""
    total = num_parameters(model)
    if not model.is_moe:
        return total
    first_moe = next(i for i in range(model.num_hidden_layers) if model.is_moe_layer(i))
    blocks = layer_blocks(model, _ANY_TRAINING, 1, 1, layer=first_moe)
    experts = sum(op.params for b in blocks for op in b.ops if op.name.startswith("experts_"))
    unused = experts * (model.num_experts - model.num_experts_per_tok) / model.num_experts
    return round(total - model.num_moe_layers * unused)


def _per_sample_blocks(
    model: ModelSpec, training: TrainingSpec
) -> tuple[tuple[tuple[int, tuple[Block, ...]], ...], Block, Block]:
    """Layer kinds, embedding and head blocks of one sample on one tile (no TP)."""
    return (
        layer_kinds(model, training, 1, 1),
        embedding_block(model, training, 1, 1),
        head_block(model, training, 1, 1),
    )


def model_flop_per_iteration(model: ModelSpec, training: TrainingSpec) -> float:
    """Model FLOP of one iteration: 3 × forward GEMM FLOP of the global batch, no recompute.

    For a GPT this is Korthikanti Eq.7, ``72·B·L·s·h²·(1 + s/(6h) + V/(12·h·L))`` [FLOP].
    A mixture-of-experts layer counts the router and the ``k`` experts each token uses
    (uniform, dropless routing).
    """
    kinds, embed, head = _per_sample_blocks(model, training)
    layers = sum(count * sum(b.gemm_flop_fwd for b in blocks) for count, blocks in kinds)
    forward = layers + embed.gemm_flop_fwd + head.gemm_flop_fwd
    return 3.0 * training.global_batch_size * forward


def hardware_flop_per_iteration(
    model: ModelSpec,
    training: TrainingSpec,
    recompute: str,
    *,
    as_published: bool = False,
    modules: Sequence[str] = (),
) -> float:
    """FLOP executed in one iteration, forward, backward and recompute, for the global batch.

    ``none`` equals :func:`model_flop_per_iteration`. ``full`` adds one more forward of every
    layer (not of the embedding or the LM head): Megatron SC21 Eq.3,
    ``96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))`` for a GPT. ``selective`` adds one more forward of
    the attention core (QKᵀ and attention over V, ``4·B·s²·h`` per layer).

    Args:
        recompute: ``none``, ``selective`` or ``full``.
        modules: under ``selective``, Megatron-Core's recompute modules
            (:mod:`palmsim.workload.recompute`): the forward of their ops is added instead of
            the attention core's; empty: the attention core.
        as_published: count selective recompute as Korthikanti Eq.8 does,
            ``72·B·L·s·h²·(1 + s/(3h) + V/(12·h·L))``: that equation adds ``12·B·s²·h`` per
            layer, three times the attention core's forward, as if its forward and backward
            were both repeated, and Megatron-LM's published hardware-FLOP utilisations use
            it. Only what is executed (the default) matches the engine's work. No effect on
            ``none`` or ``full``.

    Raises:
        ConfigError: an unknown ``recompute``.
    """
    _check_recompute(recompute)
    kinds, embed, head = _per_sample_blocks(model, training)
    layers = 0.0
    for count, blocks in kinds:
        per_layer = sum(block.flop_fwd + block.flop_bwd for block in blocks)
        if recompute == "full":
            per_layer += sum(block.flop_fwd for block in blocks)
        elif recompute == "selective" and modules:
            per_layer += sum(
                op.flop_fwd for block in blocks for op in recomputed_ops(block, modules)
            )
        elif recompute == "selective":
            factor = 3.0 if as_published else 1.0
            per_layer += factor * sum(block.recompute_flop_selective for block in blocks)
        layers += count * per_layer
    others = sum(block.flop_fwd + block.flop_bwd for block in (embed, head))
    return training.global_batch_size * (layers + others)


def layer_input_bytes(model: ModelSpec, training: TrainingSpec, micro_batch_size: int) -> float:
    """Bytes of one layer's input, ``e·b·s·h``: all full recompute keeps per layer and tile.

    The input is replicated on every tile of a TP group (Korthikanti Table 2: ``2sbh``).
    """
    e = _dtype_bytes(training)
    return float(e * micro_batch_size * training.seq_len * model.hidden_size)


def activation_bytes_per_layer(
    model: ModelSpec,
    training: TrainingSpec,
    micro_batch_size: int,
    tp: int,
    recompute: str,
    *,
    sequence_parallel: bool = False,
    layer: int | None = None,
    cp: int = 1,
) -> float:
    """Activation bytes one layer keeps on one tile from its forward until its backward.

    With context parallelism ``cp`` every term is ``1/cp`` of the ``cp = 1`` figure: the
    token-proportional ones hold ``s/cp`` tokens, and the ``a·s²`` attention terms become
    ``a·(s/cp)·s`` (the tile's queries against all keys).

    For a GPT layer at e = 2 this is Korthikanti Table 2: ``s·b·h·(10 + 24/t + 5·a·s/(h·t))``
    with ``none``, ``s·b·h·(10 + 24/t)`` with ``selective``, ``2·s·b·h`` with ``full``; with
    sequence parallelism ``s·b·h·(34/t + 5·a·s/(h·t))`` and ``s·b·h·34/t`` [B].

    Raises:
        ConfigError: an unknown ``recompute``.
        MappingError: ``tp`` does not split the layer evenly.
    """
    _check_recompute(recompute)
    blocks = layer_blocks(
        model,
        training,
        micro_batch_size,
        tp,
        sequence_parallel=sequence_parallel,
        layer=layer,
        cp=cp,
    )
    if recompute == "none":
        return sum(b.saved_bytes for b in blocks)
    if recompute == "selective":
        return sum(b.saved_bytes_selective for b in blocks)
    return layer_input_bytes(model, training, micro_batch_size) / cp


#: Names of architectures palmsim does not build (patterns over a lower-cased model name), and
#: why, which the case readers check before building a model: Nemotron-H (arXiv:2504.03624) and the
#: Nemotron 3 models built on it (Nano, Super: Megatron-Bridge's NEMOTRON_3_* rows)
#: interleave Mamba-2 (state-space) layers with attention; Llama 4 Maverick alternates MoE and
#: dense layers (HF ``interleave_moe_layer_step: 2``), which palmsim's MoE layout (every layer
#: after the first few) cannot say; Qwen3-Next mixes Gated DeltaNet (linear attention) layers
#: with attention; a vision-language model (Qwen2.5-VL, Qwen3-VL, Llama 3.2 Vision, LLaVA)
#: adds a vision encoder whose work a text-only model would leave out.
UNMODELLED_ARCHITECTURES = (
    (
        r"^(?!.*nemotron).*mamba",
        "Mamba state-space layers without Nemotron-H's hybrid pattern; palmsim builds "
        "Mamba-2 layers only in a hybrid model's hybrid_override_pattern",
    ),
    (
        r"(?<![a-z])vl(?![a-z])|vision|llava",
        "a vision-language model; palmsim builds no vision encoder, and its image tokens would "
        "go uncounted",
    ),
)


def unmodelled_architecture(name: str) -> str | None:
    """Why palmsim does not build the model ``name`` names (:data:`UNMODELLED_ARCHITECTURES`),
    or None. Pure."""
    text = name.lower()
    for pattern, why in UNMODELLED_ARCHITECTURES:
        if re.search(pattern, text):
            return why
    return None
