"""Qwen3-Next: Gated DeltaNet (linear attention) layers and gated full attention."""

from __future__ import annotations

import pytest

from palmsim.config.loader import load_workload
from palmsim.errors import MappingError
from palmsim.workload.builders import (
    check_cached_attention,
    layer_blocks,
    num_active_parameters,
    num_parameters,
)
from palmsim.workload.deltanet import DELTA_RULE_CHUNK_TOKENS
from tests.conftest import hf_config_copy

WORKLOAD = "workloads/qwen3-next-80b-a3b.yaml"
#: The delta rule's products (module docstring of palmsim.workload.deltanet).
RULE_OPS = ("gdn_kkt", "gdn_solve", "gdn_wu", "gdn_state", "gdn_out_rule")


def _model(*overrides: str):
    spec, _ = load_workload(WORKLOAD, list(overrides))
    return spec


def test_parameters_are_the_published_ones_but_two_small_tensors():
    """Qwen3-Coder-Next, the same architecture and sizes, publishes 79,674,391,296 parameters
    and 3,874,929,408 active (its safetensors headers). palmsim builds all but the shared
    expert's gate (a 2048 -> 1 linear in each of 48 layers: 98,304) and the query and key
    RMSNorms of the 12 full-attention layers (256 + 256 each: 6,144), which it does not count."""
    model = _model().model
    uncounted = 48 * 2048 + 12 * 2 * 256
    assert num_parameters(model) == 79_674_391_296 - uncounted
    assert num_active_parameters(model) == 3_874_929_408 - uncounted


def test_three_linear_layers_to_one_full():
    model = _model().model
    kinds = [model.is_linear_attention_layer(i) for i in range(8)]
    assert kinds == [True, True, True, False] * 2
    assert model.attention_output_gate and model.num_shared_experts == 1


def test_the_delta_rule_costs_its_chunked_products():
    """Per token and value head the chunked rule's forward is (C = 64, d_k = d_v = 128):
    A = (βK)Kᵀ 2C·d_k, the solve 2C²/3, W and U 2C·(d_k + d_v), the state pass 4·d_k·d_v,
    the output 2·d_k·d_v + 2C·d_k + 2C·d_v: 6C·d_k + 4C·d_v + 6·d_k·d_v + 2C²/3 FLOP, with
    the 32 value heads split over TP 2."""
    spec = _model("training.seq_len=4096")
    blocks = layer_blocks(spec.model, spec.training, 2, 2, layer=0)
    attn = blocks[0]
    ops = {op.name: op for op in attn.ops}
    c, dk, dv = DELTA_RULE_CHUNK_TOKENS, 128, 128
    per_token_head = 6 * c * dk + 4 * c * dv + 6 * dk * dv + 2 * c * c / 3
    tokens, heads_t = 2 * 4096, 32 // 2
    assert sum(ops[n].flop_fwd for n in RULE_OPS) == pytest.approx(
        tokens * heads_t * per_token_head
    )
    # the input projections, h -> q, k (16/2 heads of 128 each), v, z (32/2 of 128), β, a
    width = 2 * 8 * 128 + 2 * 16 * 128 + 2 * 16
    assert ops["gdn_in"].flop_fwd == pytest.approx(2 * tokens * 2048 * width)
    assert ops["gdn_out"].flop_fwd == pytest.approx(2 * tokens * 16 * 128 * 2048)
    assert "scores" not in ops and "attention" not in ops


def test_gated_attention_doubles_the_query_columns():
    """The full layers' q_proj gives the query and its gate: h -> 2·a·d + 2·kv·d (a = 16 heads
    of 256, 2 KV heads), and the gate multiplies the attention's output."""
    spec = _model("training.seq_len=4096")
    attn = layer_blocks(spec.model, spec.training, 1, 1, layer=3)[0]
    ops = {op.name: op for op in attn.ops}
    assert ops["qkv"].params == 2048 * (2 * 16 * 256 + 2 * 2 * 256)
    assert "attn_gate" in ops


def test_what_linear_attention_does_not_model_is_refused():
    spec = _model("training.seq_len=4096")
    with pytest.raises(MappingError, match="does not divide"):
        layer_blocks(spec.model, spec.training, 1, 3, layer=0)
    with pytest.raises(MappingError, match="context parallelism over a linear-attention"):
        layer_blocks(spec.model, spec.training, 1, 1, layer=0, cp=2)
    with pytest.raises(MappingError, match="linear attention"):
        check_cached_attention(spec.model)


def test_a_qwen35_config_gives_its_language_model(tmp_path):
    """Qwen3.5's multimodal config.json nests its language model under text_config
    (model_type qwen3_5_moe_text), with Qwen3-Next's layers stated in layer_types and the gate
    in attn_output_gate; palmsim reads that model (the vision encoder is not built)."""
    import json

    text = {
        "model_type": "qwen3_5_moe_text",
        "hidden_act": "silu",
        "hidden_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "vocab_size": 248320,
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "attn_output_gate": True,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 4,
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 128,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 32,
        "linear_value_head_dim": 128,
        "num_experts": 256,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512,
    }
    path = tmp_path / "q35.config.json"
    path.write_text(json.dumps({"model_type": "qwen3_5_moe", "text_config": text}))
    spec, _ = load_workload(path, ["training.seq_len=4096", "training.global_batch_size=8"])
    model = spec.model
    assert [model.is_linear_attention_layer(i) for i in range(5)] == [True] * 3 + [False, True]
    assert model.attention_output_gate and model.num_shared_experts == 1
    assert model.norm == "rmsnorm" and model.position_embedding == "rope"
    attn = layer_blocks(model, spec.training, 1, 1, layer=0)[0]
    gdn_in = next(op for op in attn.ops if op.name == "gdn_in")
    assert gdn_in.flop_fwd == pytest.approx(2 * 4096 * 2048 * (2 * 16 * 128 + 2 * 32 * 128 + 64))


def _qwen3_next_config(tmp_path, **changes):
    return hf_config_copy(tmp_path, "workloads/hf/qwen3-next-80b-a3b.config.json", **changes)


def test_a_config_without_layer_types_places_the_full_layers_by_its_interval(tmp_path):
    """Qwen3NextConfig's rule, layer i full iff (i + 1) % full_attention_interval == 0, read
    lazily: a 10^9-layer config loads without a list of its layers (it used to write one out,
    hanging the loader)."""
    path = _qwen3_next_config(tmp_path, full_attention_interval=3, num_hidden_layers=10**9)
    spec, _ = load_workload(path, ["training.seq_len=4096", "training.global_batch_size=8"])
    model = spec.model
    assert model.layer_types is None and model.global_attention_interval == 3
    assert [model.is_linear_attention_layer(i) for i in range(6)] == [True, True, False] * 2
    # 10^9 - 1 = 3 x 333,333,333: layer 10^9 - 2 is full, the last one linear
    assert not model.is_linear_attention_layer(10**9 - 2)
    assert model.is_linear_attention_layer(10**9 - 1)
    assert model.has_linear_attention and model.has_mixed_attention


def test_linear_sizes_with_a_window_and_no_layer_types_are_refused(tmp_path):
    from palmsim.errors import ConfigError

    path = _qwen3_next_config(tmp_path, sliding_window=4096, use_sliding_window=True)
    with pytest.raises(ConfigError, match=r"model\.layer_types"):
        load_workload(path, ["training.seq_len=4096", "training.global_batch_size=8"])
