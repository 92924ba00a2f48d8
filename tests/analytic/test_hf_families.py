"""Hugging Face config.json families read as their config classes define them, checked
against the parameter counts their papers publish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palmsim.config.loader import load_workload
from palmsim.workload.builders import num_parameters

GEMMA_7B = {  # google/gemma-7b config.json
    "architectures": ["GemmaForCausalLM"], "attention_bias": False, "head_dim": 256,
    "hidden_act": "gelu", "hidden_size": 3072, "intermediate_size": 24576,
    "max_position_embeddings": 8192, "model_type": "gemma", "num_attention_heads": 16,
    "num_hidden_layers": 28, "num_key_value_heads": 16, "rms_norm_eps": 1e-6,
    "vocab_size": 256000,
}  # fmt: skip
GEMMA_2B = {  # google/gemma-2b: the 7B's keys with its sizes
    **GEMMA_7B, "hidden_size": 2048, "intermediate_size": 16384, "num_attention_heads": 8,
    "num_hidden_layers": 18, "num_key_value_heads": 1,
}  # fmt: skip
GEMMA2_9B = {  # google/gemma-2-9b config.json
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 3584, "intermediate_size": 14336, "max_position_embeddings": 8192,
    "model_type": "gemma2", "num_attention_heads": 16, "num_hidden_layers": 42,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-6, "sliding_window": 4096,
    "query_pre_attn_scalar": 256, "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0, "vocab_size": 256000,
}  # fmt: skip
GEMMA3 = {  # google/gemma-3-4b-it config.json: the language model under text_config
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
    "text_config": {
        "model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
        "num_attention_heads": 8, "num_hidden_layers": 34, "num_key_value_heads": 4,
        "head_dim": 256, "sliding_window": 1024, "sliding_window_pattern": 6,
        "rms_norm_eps": 1e-6, "vocab_size": 262208, "max_position_embeddings": 131072,
    },
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
}  # fmt: skip

TRAIN = ["training.seq_len=2048", "training.global_batch_size=8"]


def _load(tmp_path: Path, config: dict):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return load_workload(path, TRAIN)[0].model


@pytest.mark.parametrize(
    ("config", "non_embedding"),
    [(GEMMA_7B, 7_751_248_896), (GEMMA_2B, 1_981_884_416)],
)
def test_gemma_is_a_gated_mlp_with_its_published_parameters(
    tmp_path: Path, config: dict, non_embedding: int
) -> None:
    """Gemma's MLP is gated whatever hidden_act names (GemmaMLP: gate, up and down
    projections): its non-embedding parameters are the Gemma report's (Team Gemma 2024,
    Table 2), 28 layers of 4 x 3072 x 4096 attention, 3 x 3072 x 24576 MLP and two 3072
    RMSNorm gains, plus the final norm, for 7B (2B: 18 layers, one KV head of 256)."""
    model = _load(tmp_path, config)
    assert (model.hidden_act, model.norm, model.position_embedding) == ("silu", "rmsnorm", "rope")
    assert not model.use_bias and model.tie_word_embeddings
    embedding = model.vocab_size * model.hidden_size
    assert num_parameters(model) - embedding == non_embedding


def test_gemma2_alternates_sliding_and_full_layers(tmp_path: Path) -> None:
    """Gemma 2's layers alternate a 4096-key window and full attention, the window first
    (Gemma2Config's layer_types default). Its non-embedding parameters are the Gemma 2
    report's 8,324,201,984 (Table 1, 9B) less the two post-sublayer norm gains a layer
    palmsim does not build, 2 x 42 x 3584."""
    model = _load(tmp_path, GEMMA2_9B)
    assert [model.attention_window(i) for i in range(4)] == [4096, None, 4096, None]
    assert model.hidden_act == "silu"
    embedding = model.vocab_size * model.hidden_size
    assert num_parameters(model) - embedding == 8_324_201_984 - 2 * 42 * 3584


def test_gemma3_reads_its_text_model_with_one_full_layer_in_six(tmp_path: Path) -> None:
    model = _load(tmp_path, GEMMA3)
    assert model.num_hidden_layers == 34 and model.hidden_size == 2560
    full = [i for i in range(34) if model.attention_window(i) is None]
    assert full == [5, 11, 17, 23, 29]
