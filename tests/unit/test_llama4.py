"""Llama 4: a mixture of experts on every step-th layer and chunked local attention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palmsim.config.loader import load_workload
from palmsim.errors import ConfigError
from palmsim.workload.builders import (
    check_cached_attention,
    layer_blocks,
    num_active_parameters,
    num_parameters,
)

#: A small Llama 4 layer: 4 heads of 64, chunks of 512 tokens in a sequence of 2048, every
#: fourth layer global.
_SMALL = [
    "training.seq_len=2048",
    "training.attention_kernel=fused",
    "model.attention_chunk_size=512",
    "model.num_hidden_layers=4",
    "model.hidden_size=256",
    "model.num_attention_heads=4",
    "model.num_key_value_heads=4",
    "model.attention_head_dim=64",
    "model.intermediate_size=512",
    "model.moe_intermediate_size=256",
    "model.vocab_size=1000",
    "model.num_experts=4",
]
_TRAINING = ["training.seq_len=2048", "training.global_batch_size=8"]


@pytest.mark.parametrize(
    ("workload", "total_b", "moe_layers"),
    # Meta, "The Llama 4 herd" (2025-04-05): Maverick 17B active of 400B with 128 experts,
    # Scout 17B active of 109B with 16 (both counts include the vision encoder, which
    # palmsim does not build: Scout's is about 1% of it, hence the tolerance)
    [("workloads/llama4-maverick.yaml", 400, 24), ("workloads/llama4-scout.yaml", 109, 48)],
)
def test_llama4_parameters_are_the_published_ones(workload, total_b, moe_layers):
    model = load_workload(workload)[0].model
    assert model.num_moe_layers == moe_layers
    assert num_parameters(model) / 1e9 == pytest.approx(total_b, rel=0.02)
    assert num_active_parameters(model) / 1e9 == pytest.approx(17, rel=0.02)


def test_maverick_alternates_dense_and_moe_layers():
    """interleave_moe_layer_step 2: layers 1, 3, ... are MoE (HF Llama4TextConfig.moe_layers =
    range(step - 1, layers, step); NeMo's Llama4Experts128Config moe_layer_freq [0, 1] * 24),
    the dense ones a SwiGLU MLP of intermediate_size_mlp 16384, the experts and the shared one
    of intermediate_size 8192."""
    model = load_workload("workloads/llama4-maverick.yaml")[0].model
    assert [model.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    assert model.intermediate_size == 16384 and model.expert_intermediate_size == 8192
    assert model.num_shared_experts == 1 and model.num_experts == 128


def _core_flop(layer: int) -> float:
    spec, _ = load_workload("workloads/llama4-scout.yaml", _SMALL)
    attn = layer_blocks(spec.model, spec.training, 1, 1, layer=layer)[0]
    return sum(op.flop_fwd for op in attn.ops if op.kind == "attention")


def test_chunked_attention_counts_the_pairs_within_each_chunk():
    """A chunked layer's query attends causally within its chunk of 512 (HF Llama 4's chunked
    attention mask): 2048 / 512 chunks of 512·513/2 pairs; the fourth layer (a NoPE layer,
    global) the whole causal triangle, 2048·2049/2. A fused core's forward is 2·heads·pairs·
    (d + d_v) FLOP (FlashAttention-2's count) with d = d_v = 64."""
    chunked_pairs = 4 * 512 * 513 / 2
    assert _core_flop(0) == pytest.approx(2 * 4 * chunked_pairs * 128)
    assert _core_flop(3) == pytest.approx(2 * 4 * (2048 * 2049 / 2) * 128)


def test_llama4_config_json_keeps_its_text_model():
    """A multimodal config.json (model_type llama4) gives its text_config's language model."""
    spec, _ = load_workload("workloads/hf/llama-4-scout.config.json", _TRAINING)
    assert spec.model.attention_chunk_size == 8192 and spec.model.global_attention_interval == 4
    assert spec.model.attention_chunk(3) is None and spec.model.attention_chunk(4) == 8192


def test_global_layers_off_the_interval_are_refused(tmp_path):
    raw = json.loads(Path("workloads/hf/llama-4-scout.config.json").read_text())
    raw["text_config"]["no_rope_layers"] = [1] * 48
    path = tmp_path / "l4.config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="no_rope_layers"):
        load_workload(path, _TRAINING)


def test_chunked_attention_is_served_in_vllms_groups():
    """Scout's 36 chunked and 12 global layers in vLLM V1's KV cache groups: groups of 12
    layers, three of chunked layers and one of global ones."""
    from palmsim.mapping.serving import layer_kind
    from palmsim.serving.kvcache import KVGroups, kv_groups

    model = load_workload("workloads/llama4-scout.yaml")[0].model
    check_cached_attention(model)
    counts: dict[tuple[int | None, int | None], int] = {}
    for i in range(model.num_hidden_layers):
        counts[layer_kind(model, i)] = counts.get(layer_kind(model, i), 0) + 1
    assert counts == {(None, 8192): 36, (None, None): 12}
    assert kv_groups(counts) == KVGroups(((3, None, 8192), (1, None, None)), 12)
