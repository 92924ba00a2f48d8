"""Transformer blocks: parameters, saved activations, TP splits and all-reduces, by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.specs import ModelSpec, TrainingSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.workload.builders import (
    Block,
    activation_bytes_per_layer,
    embedding_block,
    hardware_flop_per_iteration,
    head_block,
    layer_blocks,
    layer_input_bytes,
    num_parameters,
)

# T-18B of Megatron SC21 Table 1: GPT, h=6144, a=48, l=40, V=51200, s=2048.
GPT = ModelSpec(
    name="t-18b",
    hidden_size=6144,
    num_attention_heads=48,
    num_key_value_heads=48,
    intermediate_size=4 * 6144,
    num_hidden_layers=40,
    vocab_size=51200,
    max_position_embeddings=2048,
    hidden_act="gelu",
    attention_dropout=0.1,
    hidden_dropout=0.1,
)
TRAIN = TrainingSpec(seq_len=2048, global_batch_size=1024, dtype="fp16")

# Llama-2-7B config.json: RMSNorm, RoPE, SwiGLU, no biases, untied head.
LLAMA_7B = ModelSpec(
    name="llama-2-7b",
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=32,
    intermediate_size=11008,
    num_hidden_layers=32,
    vocab_size=32000,
    max_position_embeddings=4096,
    hidden_act="silu",
    norm="rmsnorm",
    position_embedding="rope",
    use_bias=False,
    tie_word_embeddings=False,
)
# Llama-2-70B: GQA with 64 query heads and 8 KV heads.
LLAMA_70B = replace(
    LLAMA_7B,
    name="llama-2-70b",
    hidden_size=8192,
    num_attention_heads=64,
    num_key_value_heads=8,
    intermediate_size=28672,
    num_hidden_layers=80,
)
# BERT-large (uncased): post-LN encoder, learned positions of 512, tied MLM decoder.
BERT_LARGE = ModelSpec(
    name="bert-large",
    hidden_size=1024,
    num_attention_heads=16,
    num_key_value_heads=16,
    intermediate_size=4096,
    num_hidden_layers=24,
    vocab_size=30522,
    max_position_embeddings=512,
    hidden_act="gelu",
    attention_dropout=0.1,
    hidden_dropout=0.1,
    causal=False,
)


def test_gpt_layer_op_order() -> None:
    attn, mlp = layer_blocks(GPT, TRAIN, 1, 1)
    assert attn.op_names == (
        "norm1",
        "qkv",
        "qkv_bias",
        "qkv_split",
        "scores",
        "softmax",
        "attn_dropout",
        "context",
        "context_layout",
        "out_proj",
        "out_bias",
        "out_dropout",
        "attn_residual",
    )
    assert mlp.op_names == (
        "norm2",
        "fc1",
        "fc1_bias",
        "gelu",
        "fc2",
        "fc2_bias",
        "mlp_dropout",
        "mlp_residual",
    )


def test_gpt_layer_memory_kernels_follow_megatron() -> None:
    """The memory-bound kernels of a Megatron-LM GPT layer, b = 1, t = 1, e = 2.

    With n = s·h elements of a hidden tensor and A = a·s² of the attention scores, per pass
    (bytes, kernels): norm fwd (2·2n, 1), bwd apex's (5·2n, 3); QKV bias ``+=`` (2·2·3n, 1),
    its gradient reduction (2·3n, 1); the Q/K/V split is a view, its backward a cat
    (2·2·3n, 1); softmax (2·2A, 1) and (3·2A, 1); attention dropout (5A, 1) each way; the
    context's .contiguous() (2·2n, 1) forward only; the row biases fuse into the
    bias-dropout-add, which reads x and the residual and writes the sum and a mask (7n, 1),
    and whose backward is the dropout's (5n, 1) plus the bias reduction (2n, 1) and the
    residual gradient sum (3·2n, 1); fc1's bias fuses into GeLU (2·2·4n, 1), (3·2·4n, 1),
    and its gradient reduction reads 2·4n.
    """
    s, h, a = 2048, 6144, 48
    n, big_a = s * h, a * s * s
    attn, mlp = layer_blocks(GPT, TRAIN, 1, 1)

    def memory(block):
        ops = [op for op in block.ops if not op.is_gemm]
        return (
            sum(op.bytes_fwd for op in ops),
            sum(op.bytes_bwd for op in ops),
            sum(op.kernels_fwd for op in ops),
            sum(op.kernels_bwd for op in ops),
        )

    attn_fwd = 4 * n + 12 * n + 4 * big_a + 5 * big_a + 4 * n + 7 * n
    attn_bwd = 10 * n + 6 * n + 12 * n + 6 * big_a + 5 * big_a + 2 * n + 5 * n + 6 * n
    assert memory(attn) == (attn_fwd, attn_bwd, 6, 10)
    mlp_fwd = 4 * n + 16 * n + 7 * n
    mlp_bwd = 10 * n + 8 * n + 24 * n + 2 * n + 5 * n + 6 * n
    assert memory(mlp) == (mlp_fwd, mlp_bwd, 3, 8)


def test_llama_layer_has_rope_swiglu_and_no_dropout() -> None:
    attn, mlp = layer_blocks(LLAMA_7B, TRAIN, 1, 1)
    assert attn.op_names == (
        "norm1",
        "qkv",
        "qkv_split",
        "rope",
        "scores",
        "softmax",
        "context",
        "context_layout",
        "out_proj",
        "attn_residual",
    )
    assert mlp.op_names == ("norm2", "fc1", "swiglu", "fc2", "mlp_residual")


def test_gpt_layer_params_are_12h2_plus_13h() -> None:
    """QKV 3h² + 3h, out h² + h, fc1 4h² + 4h, fc2 4h² + h, two LayerNorms 4h (SC21 Eq.2)."""
    h = 6144
    attn, mlp = layer_blocks(GPT, TRAIN, 1, 1)
    assert attn.params == 4 * h * h + 4 * h + 2 * h
    assert mlp.params == 8 * h * h + 5 * h + 2 * h
    assert attn.params + mlp.params == 12 * h * h + 13 * h


def test_swiglu_mlp_has_3hf_params() -> None:
    """Gate, up and down projections of h × f each, no biases; RMSNorm h."""
    h, f = 4096, 11008
    attn, mlp = layer_blocks(LLAMA_7B, TRAIN, 1, 1)
    assert mlp.params == 3 * h * f + h
    assert attn.params == 4 * h * h + h


def test_llama_2_7b_parameter_count() -> None:
    """6,738,415,616 parameters (Hugging Face meta-llama/Llama-2-7b-hf).

    Per layer 4h² + 3hf + 2h = 202,383,360; 32 layers 6,476,267,520; embedding and untied
    head 2·32000·4096 = 262,144,000; final RMSNorm 4096.
    """
    assert num_parameters(LLAMA_7B) == 6_738_415_616


def test_bert_large_parameter_count() -> None:
    """BERT-large has 335,141,888 parameters with its pooler (BertModel).

    palmsim counts word and position embeddings (31,254,528 + 524,288), 24 layers of
    12h² + 13h (302,309,376) and one more LayerNorm 2h (BERT's embedding LayerNorm stands where
    a pre-LN model's final norm does): 334,090,240. BERT adds token-type embeddings (2h) and
    the pooler (h² + h), which palmsim does not model.
    """
    h = 1024
    ours = num_parameters(BERT_LARGE)
    assert ours == 334_090_240
    assert ours + 2 * h + (h * h + h) == 335_141_888


def test_gqa_shrinks_saved_k_and_v_by_heads_over_kv_heads() -> None:
    """Llama-2-70B, b = 1, s = 2048, e = 2: Q is 2·s·h, K and V are 2·s·h·8/64 each."""
    s, h = 2048, 8192
    mha = replace(LLAMA_70B, num_key_value_heads=64)
    gqa_attn, _ = layer_blocks(LLAMA_70B, TRAIN, 1, 1)
    mha_attn, _ = layer_blocks(mha, TRAIN, 1, 1)
    q_bytes = 2 * s * h
    k_gqa = gqa_attn.op("scores").saved_bytes - q_bytes
    k_mha = mha_attn.op("scores").saved_bytes - q_bytes
    assert k_mha == 2 * s * h
    assert k_mha / k_gqa == 64 / 8
    assert mha_attn.op("context").saved_bytes / gqa_attn.op("context").saved_bytes == 8
    # The QKV projection shrinks with it: h·(h + 2·h/8) weights.
    assert gqa_attn.op("qkv").params == h * (h + 2 * h // 8)


def test_gqa_with_fewer_kv_heads_than_tiles_replicates_one() -> None:
    """Llama-2-70B at t = 16: 4 query heads and 1 (replicated) KV head of 128 per tile."""
    s, d = 2048, 128
    attn, _ = layer_blocks(LLAMA_70B, TRAIN, 1, 16)
    assert attn.op("qkv").params == 8192 * (4 * d + 2 * d)
    assert attn.op("context").saved_bytes == 2 * s * d


def test_korthikanti_breakdown_per_op() -> None:
    """Korthikanti Sec 4.1 at t = 1, e = 2, b = 1 for T-18B (sbh = 2048·6144, as²b = 48·2048²)."""
    sbh = 2048 * 6144
    as2b = 48 * 2048 * 2048
    attn, mlp = layer_blocks(GPT, TRAIN, 1, 1)
    saved = {op.name: op.saved_bytes for op in attn.ops + mlp.ops}
    assert saved == {
        "norm1": 2 * sbh,
        "qkv": 2 * sbh,
        "qkv_bias": 0,
        "qkv_split": 0,
        "scores": 4 * sbh,
        "softmax": 2 * as2b,
        "attn_dropout": as2b,
        "context": 2 * as2b + 2 * sbh,
        "context_layout": 0,
        "out_proj": 2 * sbh,
        "out_bias": 0,
        "out_dropout": sbh,
        "attn_residual": 0,
        "norm2": 2 * sbh,
        "fc1": 2 * sbh,
        "fc1_bias": 0,
        "gelu": 8 * sbh,
        "fc2": 8 * sbh,
        "fc2_bias": 0,
        "mlp_dropout": sbh,
        "mlp_residual": 0,
    }
    assert attn.saved_bytes == 11 * sbh + 2 * sbh + 5 * as2b  # + norm1's 2sbh
    assert mlp.saved_bytes == 19 * sbh + 2 * sbh  # + norm2's 2sbh
    recomputed = {op.name for op in attn.ops + mlp.ops if op.recompute_selective}
    assert recomputed == {"scores", "softmax", "attn_dropout", "context", "context_layout"}


def test_without_attention_dropout_the_softmax_output_is_kept_once() -> None:
    """No dropout: the context op reuses the kept softmax output and stores only V."""
    sbh = 2048 * 6144
    as2b = 48 * 2048 * 2048
    model = replace(GPT, attention_dropout=0.0, hidden_dropout=0.0)
    assert activation_bytes_per_layer(model, TRAIN, 1, 1, "none") == 32 * sbh + 2 * as2b
    assert activation_bytes_per_layer(model, TRAIN, 1, 1, "selective") == 32 * sbh


def test_tp_split_flop_sums_to_unsharded() -> None:
    """Summed over t tiles, sharded FLOP equal the unsharded ones (MHA, t = 8)."""
    t = 8
    pairs = zip(layer_blocks(GPT, TRAIN, 2, 1), layer_blocks(GPT, TRAIN, 2, t), strict=True)
    for whole, tile in pairs:
        assert t * tile.flop_fwd == pytest.approx(whole.flop_fwd, rel=1e-12)
        assert t * tile.flop_bwd == pytest.approx(whole.flop_bwd, rel=1e-12)
    head_1, head_t = head_block(GPT, TRAIN, 2, 1), head_block(GPT, TRAIN, 2, t)
    assert t * head_t.flop_fwd == pytest.approx(head_1.flop_fwd, rel=1e-12)


def test_tp_split_params_replicate_norms_and_row_biases() -> None:
    """t tiles hold the layer once plus (t - 1) extra copies of 2 LayerNorms + 2 row biases."""
    h, t = 6144, 8
    whole = sum(block.params for block in layer_blocks(GPT, TRAIN, 1, 1))
    tile = sum(block.params for block in layer_blocks(GPT, TRAIN, 1, t))
    assert t * tile == whole + (t - 1) * (2 * 2 * h + 2 * h)


def test_allreduce_bytes() -> None:
    """t = 8, b = 2, e = 2: e·b·s·h per layer block each way; embedding fwd only; head bwd."""
    b, s, h = 2, 2048, 6144
    for block in layer_blocks(GPT, TRAIN, b, 8):
        assert (block.allreduce_fwd_bytes, block.allreduce_bwd_bytes) == (2 * b * s * h,) * 2
    embed = embedding_block(GPT, TRAIN, b, 8)
    assert (embed.allreduce_fwd_bytes, embed.allreduce_bwd_bytes) == (2 * b * s * h, 0)
    head = head_block(GPT, TRAIN, b, 8)
    assert (head.allreduce_fwd_bytes, head.allreduce_bwd_bytes) == (3 * 4 * b * s, 2 * b * s * h)


def test_no_allreduce_without_tp() -> None:
    blocks = (*layer_blocks(GPT, TRAIN, 2, 1), embedding_block(GPT, TRAIN, 2, 1))
    blocks += (head_block(GPT, TRAIN, 2, 1),)
    assert all(b.allreduce_fwd_bytes == 0 and b.allreduce_bwd_bytes == 0 for b in blocks)


def test_embedding_block_is_vocab_parallel() -> None:
    """V/t·h word rows per tile plus the replicated position table; dropout mask b·s·h."""
    h, t = 6144, 8
    embed = embedding_block(GPT, TRAIN, 1, t)
    assert embed.op("word_embedding").params == 51200 // t * h
    assert embed.op("position_embedding").params == 2048 * h
    assert embed.saved_bytes == 2048 * h
    assert embed.flop_fwd == 0
    # The tables are stored, not streamed: the gathered rows are activation bytes.
    assert embed.weight_bytes == 0
    assert embed.op("word_embedding").bytes_fwd == 2 * 2 * 2048 * h


def test_vocab_is_padded_to_a_multiple_of_tp() -> None:
    """GPT-2's 50257 tokens over 8 tiles: ceil(50257/8) = 6283 rows per tile."""
    model = replace(GPT, vocab_size=50257)
    assert embedding_block(model, TRAIN, 1, 8).op("word_embedding").params == 6283 * 6144
    assert head_block(model, TRAIN, 1, 8).op("lm_head").flop_fwd == 2 * 2048 * 6144 * 6283


def test_head_tied_weights_are_counted_only_on_request() -> None:
    h, v = 6144, 51200
    tied = head_block(GPT, TRAIN, 1, 1)
    copy = head_block(GPT, TRAIN, 1, 1, count_tied_weights=True)
    untied = head_block(replace(GPT, tie_word_embeddings=False), TRAIN, 1, 1)
    assert tied.op("lm_head").params == 0
    assert copy.op("lm_head").params == untied.op("lm_head").params == h * v
    # The head reads the matrix whoever owns it.
    assert tied.op("lm_head").weight_bytes == copy.op("lm_head").weight_bytes == 2 * h * v


def test_head_saves_norm_input_head_input_and_fp32_logits() -> None:
    """b = 1, t = 8: 2sbh (final norm) + 2sbh (LM head input) + 4·s·V/8 (loss)."""
    s, h, v = 2048, 6144, 51200
    head = head_block(GPT, TRAIN, 1, 8)
    assert head.saved_bytes == 4 * s * h + 4 * s * v // 8


def test_block_sums_and_lookup() -> None:
    attn, _ = layer_blocks(GPT, TRAIN, 1, 1)
    assert isinstance(attn, Block)
    assert attn.flop_fwd == sum(op.flop_fwd for op in attn.ops)
    assert attn.gemm_flop_fwd == attn.flop_fwd
    assert attn.recompute_flop_selective == 4 * 2048 * 2048 * 6144
    assert attn.weight_bytes == 2 * attn.params
    with pytest.raises(KeyError, match="no op 'fc1'"):
        attn.op("fc1")


def test_layer_input_bytes() -> None:
    assert layer_input_bytes(GPT, TRAIN, 4) == 2 * 4 * 2048 * 6144
    fp32 = replace(TRAIN, dtype="fp32")
    assert layer_input_bytes(GPT, fp32, 4) == 4 * 4 * 2048 * 6144


@pytest.mark.parametrize(
    ("model", "tp", "message"),
    [
        (GPT, 5, r"tp=5 does not divide num_attention_heads=48"),
        (replace(GPT, intermediate_size=24580), 8, r"tp=8 does not divide intermediate_size=24580"),
        (
            replace(GPT, num_attention_heads=12, num_key_value_heads=4, hidden_size=6144),
            3,
            r"tp=3 does not divide num_key_value_heads=4",
        ),
        (
            replace(GPT, num_attention_heads=12, num_key_value_heads=4, hidden_size=6144),
            6,
            r"num_key_value_heads=4 does not divide tp=6",
        ),
        (GPT, 0, r"tp=0 must be at least 1"),
    ],
)
def test_indivisible_tp_is_a_mapping_error(model: ModelSpec, tp: int, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        layer_blocks(model, TRAIN, 1, tp)


def test_bad_micro_batch_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="micro_batch_size=0"):
        layer_blocks(GPT, TRAIN, 0, 1)


def test_unknown_variants_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.hidden_act: got 'relu'"):
        layer_blocks(replace(GPT, hidden_act="relu"), TRAIN, 1, 1)
    with pytest.raises(ConfigError, match=r"model\.norm: got 'batchnorm'"):
        layer_blocks(replace(GPT, norm="batchnorm"), TRAIN, 1, 1)
    with pytest.raises(ConfigError, match=r"mapping\.recompute: got 'some'"):
        activation_bytes_per_layer(GPT, TRAIN, 1, 1, "some")
    with pytest.raises(ConfigError, match=r"mapping\.recompute: got 'partial'"):
        hardware_flop_per_iteration(GPT, TRAIN, "partial")
    with pytest.raises(ConfigError, match=r"training\.dtype: got 'fp12'"):
        layer_blocks(GPT, replace(TRAIN, dtype="fp12"), 1, 1)
