"""Hybrid Mamba-2 models (palmsim.workload.mamba) against hand-derived counts.

A Mamba-2 mixer with ``H`` heads of width ``P`` (``d = H·P``), state ``N``, ``G`` groups,
convolution width ``K`` and chunks of ``Q`` tokens (Dao & Gu 2024, arXiv:2405.21060;
Megatron-Core's MambaMixer):

- parameters: in_proj ``h·(2d + 2GN + H)``, conv1d ``(d + 2GN)·(K + 1)`` (weights and
  bias), ``A``, ``D`` and the dt bias ``3H``, the gated norm ``d``, out_proj ``d·h``, plus
  the layer's RMSNorm ``h``;
- forward FLOP per token: the projections ``2h·(2d + 2GN + H) + 2d·h``, and the SSD scan's
  four products per chunk, ``C Bᵀ`` ``2Q²N`` per group and ``(C Bᵀ ∘ L) X`` ``2Q²P``,
  ``Bᵀ X`` ``2QNP`` and ``C S`` ``2QNP`` per head: ``2QNG + H·(2QP + 4NP)`` per token.
"""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.api import load_experiment
from palmsim.config.loader import load_workload
from palmsim.config.specs import ModelSpec, TrainingSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.workload.builders import (
    check_cached_attention,
    head_block,
    layer_blocks,
    mtp_units,
    num_active_parameters,
    num_parameters,
)

H_MODEL, HEADS, P, N, G, K, Q = 1024, 32, 64, 128, 8, 4, 128
D = HEADS * P

MODEL = ModelSpec(
    name="tiny-hybrid",
    hidden_size=H_MODEL,
    num_attention_heads=8,
    num_key_value_heads=2,
    attention_head_dim=128,
    intermediate_size=4096,
    num_hidden_layers=6,
    vocab_size=32000,
    max_position_embeddings=4096,
    hidden_act="gelu",  # squared ReLU: a plain (non-gated) activation
    norm="rmsnorm",
    position_embedding="none",
    use_bias=False,
    tie_word_embeddings=False,
    num_experts=16,
    num_experts_per_tok=2,
    moe_intermediate_size=512,
    num_shared_experts=1,
    hybrid_override_pattern="M*M-ME",
    mamba_num_heads=HEADS,
    mamba_head_dim=P,
    mamba_state_size=N,
    mamba_num_groups=G,
    mamba_conv_kernel=K,
    mamba_chunk_size=Q,
)
S = 4096
TRAINING = TrainingSpec(seq_len=S, global_batch_size=8, attention_kernel="fused")

IN_WIDTH = 2 * D + 2 * G * N + HEADS
MAMBA_PARAMS = (
    H_MODEL  # the layer's RMSNorm
    + H_MODEL * IN_WIDTH
    + (D + 2 * G * N) * (K + 1)
    + 3 * HEADS
    + D
    + D * H_MODEL
)


def _blocks(layer: int, tp: int = 1, **kw):
    return layer_blocks(MODEL, TRAINING, 1, tp, layer=layer, **kw)


def test_each_layer_is_its_patterns_block() -> None:
    names = [tuple(b.name for b in _blocks(i)) for i in range(6)]
    assert names == [
        ("mamba",), ("attn",), ("mamba",), ("mlp",), ("mamba",),
        ("moe_route", "moe_experts", "moe_combine"),
    ]  # fmt: skip


def test_mamba_layer_parameters_by_hand() -> None:
    (block,) = _blocks(0)
    assert block.params == MAMBA_PARAMS
    # tensor parallelism splits the heads and groups; the RMSNorm stays replicated
    (half,) = _blocks(0, tp=2)
    assert half.params == H_MODEL + (MAMBA_PARAMS - H_MODEL) / 2


def test_mamba_layer_flop_by_hand() -> None:
    (block,) = _blocks(0)
    projections = 2 * H_MODEL * IN_WIDTH + 2 * D * H_MODEL
    scan = 2 * Q * N * G + HEADS * (2 * Q * P + 4 * N * P)
    assert block.flop_fwd == pytest.approx(S * (projections + scan), rel=1e-12)
    # every product's backward computes both operands' gradients: twice the forward
    assert block.flop_bwd == pytest.approx(2 * block.flop_fwd, rel=1e-12)


def test_hybrid_model_parameters_by_hand() -> None:
    """Three Mamba layers, one attention layer (GQA 8/2 of width 128, no position
    embedding), one squared-ReLU MLP, one MoE layer (16 experts and 1 shared, top-2,
    plain experts of 512), untied embedding and head, the final RMSNorm."""
    h, f, fe, e = H_MODEL, 4096, 512, 16
    attention = h + h * (8 + 2 + 2) * 128 + 8 * 128 * h
    mlp = h + 2 * h * f
    moe = h + h * e + (e + 1) * 2 * h * fe
    total = 3 * MAMBA_PARAMS + attention + mlp + moe + 2 * 32000 * h + h
    assert num_parameters(MODEL) == total
    assert num_active_parameters(MODEL) == total - (e - 2) * 2 * h * fe


def test_mamba_refuses_a_tp_that_splits_a_group_and_context_parallelism() -> None:
    with pytest.raises(MappingError, match="does not divide"):
        _blocks(0, tp=16)
    with pytest.raises(MappingError, match="context parallelism over a Mamba layer"):
        _blocks(0, cp=2)


def test_hybrid_inference_is_refused_by_name() -> None:
    with pytest.raises(MappingError, match="hybrid Mamba models are modelled for training"):
        check_cached_attention(MODEL)


def test_sequence_parallelism_shards_the_mamba_norm_and_its_saved_input() -> None:
    (plain,) = _blocks(0, tp=2)
    (sharded,) = _blocks(0, tp=2, sequence_parallel=True)
    for name in ("norm_mamba", "mamba_in"):
        assert sharded.op(name).saved_bytes == pytest.approx(plain.op(name).saved_bytes / 2)
    assert sharded.flop_fwd == plain.flop_fwd


def test_mamba_linears_run_in_fp8() -> None:
    fp8 = dataclasses.replace(TRAINING, dtype="fp8")
    (block,) = layer_blocks(MODEL, fp8, 1, 1, layer=0)
    assert {op.name for op in block.ops if op.fp8} == {"mamba_in", "mamba_out"}


def test_mamba_layer_keeps_what_megatron_core_saves() -> None:
    """Per token (bf16): the layer input and its norm (TE's LayerNormLinear, h each), the
    whole in_proj output (2d + 2GN + H; mamba_split_conv1d_scan_combined recomputes the
    convolution), the scan's output y (d), the RMSNorm's input (d) and out_proj's (d)."""
    (block,) = _blocks(0)
    per_token = 2 * H_MODEL + IN_WIDTH + 3 * D
    assert block.saved_bytes == pytest.approx(2 * S * per_token, rel=1e-12)


def test_nemotron_3_nano_parameters_by_hand() -> None:
    """hf/nemotron-3-nano.config.json: 23 Mamba layers (64 heads of 64, state 128, 8
    groups), 23 MoE layers (128 squared-ReLU experts of 1856, top-6, a shared expert of 3712,
    a router), 6 GQA layers (32 heads of 128, 2 KV heads), untied 131072 x 2688 tables:
    31.58 B, 3.58 B active with both tables (the model card: 30 B and 3.5 B)."""
    m = load_workload("workloads/nemotron-3-nano.yaml")[0].model
    h, heads, p, n, g, k, v = 2688, 64, 64, 128, 8, 4, 131072
    d = heads * p
    mamba = h + h * (2 * d + 2 * g * n + heads) + (d + 2 * g * n) * (k + 1) + 3 * heads + d
    mamba += d * h
    attention = h + h * (32 + 2 + 2) * 128 + 32 * 128 * h
    experts, fe, shared = 128, 1856, 3712
    moe = h + h * experts + experts * 2 * h * fe + 2 * h * shared
    total = 23 * mamba + 6 * attention + 23 * moe + 2 * v * h + h
    assert mamba == 38_744_896  # per layer
    assert num_parameters(m) == total == 31_577_937_344
    active = total - 23 * (experts - 6) * 2 * h * fe
    assert num_active_parameters(m) == active
    assert active == pytest.approx(3.5e9, rel=0.05)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("model.hybrid_override_pattern=M*E", "model.hybrid_override_pattern", "one character"),
        ("model.hybrid_override_pattern=MXE", "model.hybrid_override_pattern", "'M', '\\*'"),
        ("model.num_experts=0", "model.num_experts", "exactly when"),
        ("model.mamba_state_size=0", "model.mamba_state_size", "an int >= 1"),
    ],
)
def test_a_hybrid_config_is_checked(override: str, key: str, expected: str) -> None:
    overrides = [override]
    if override.startswith("model.num_experts"):
        overrides += ["model.num_experts_per_tok=0", "model.num_shared_experts=0"]
    with pytest.raises(ConfigError, match=rf"{key}(.|\n)*{expected}"):
        load_workload("workloads/nemotron-3-nano.yaml", overrides)


# --------------------------------------------------------------------------- LatentMoE

SUPER = "workloads/nemotron-3-super.yaml"


def test_latent_moe_layer_by_hand() -> None:
    """Nemotron 3 Super's LatentMoE layer (Megatron-Core moe_layer.py, moe_latent_size): the
    router on h (4096 -> 512), fc1_latent_proj h -> L (1024) after it, 512 squared-ReLU
    experts L -> 2688 -> L, fc2_latent_proj L -> h after the combine, a shared expert of
    5376 on h. The all-to-alls move the top-22 copies at L."""
    m = load_workload(SUPER)[0].model
    h, experts, k, lat, f, shared = 4096, 512, 22, 1024, 2688, 5376
    training = TrainingSpec(seq_len=8192, global_batch_size=8, attention_kernel="fused")
    layer = m.hybrid_override_pattern.index("E")
    blocks = layer_blocks(m, training, 1, 1, layer=layer, ep=8)
    per_gpu_experts = experts // 8
    params = h + h * experts + 2 * h * lat + per_gpu_experts * 2 * lat * f + 2 * h * shared
    assert sum(b.params for b in blocks) == params
    tokens = 8192
    flop = 2 * h * experts + 2 * 2 * h * lat + k * 2 * 2 * lat * f + 2 * 2 * h * shared
    assert sum(b.gemm_flop_fwd for b in blocks) == pytest.approx(tokens * flop, rel=1e-12)
    route, experts_block, _ = blocks
    assert route.alltoall_fwd_bytes == 2 * tokens * k * lat  # bf16 copies at L, not h
    assert experts_block.alltoall_bwd_bytes == 2 * tokens * k * lat


def test_nemotron_3_super_parameters_by_hand() -> None:
    """123,611,033,088 tensor elements in the checkpoint (Megatron-Bridge's verification
    card, nemotron-3-super-120b-a12b) less what palmsim does not build: the MTP block
    (2,942,325,248) and the routers' fp32 expert-bias buffers (512 in each of 40 layers),
    which no optimizer trains. The model card says 120 B total, 12 B active."""
    m = load_workload(SUPER)[0].model
    assert num_parameters(m) == 123_611_033_088 - 2_942_325_248 - 40 * 512
    assert num_active_parameters(m) == pytest.approx(12.77e9, rel=1e-3)


# --------------------------------------------------------------------------- multi-token prediction


def test_mtp_units_of_nemotron_3_super_by_hand() -> None:
    """Megatron-Bridge's Super recipe: one MTP block ('*E') run at two depths
    (mtp_use_repeated_layer). Its weights, once: enorm and hnorm (h each), eh_proj (2h x h),
    an attention and a LatentMoE layer; the checkpoint's block is 2,942,325,248 elements
    with its final norm's gain (h) and the router's bias buffer (512), which palmsim does not
    count. The second depth and both heads own nothing."""
    m = load_workload(SUPER)[0].model
    training = TrainingSpec(seq_len=8192, global_batch_size=8, mtp_depths=2)
    head = head_block(m, training, 1, 1)
    units = mtp_units(m, training, 1, 1, head, ep=64)
    assert [name for name, _, _ in units] == [
        "mtp0_in", "MTP0.0", "MTP0.1", "mtp0_head", "mtp1_in", "MTP1.0", "MTP1.1", "mtp1_head",
    ]  # fmt: skip
    assert [layer for _, layer, _ in units] == [-1, 88, 89, -1, -1, 90, 91, -1]
    kinds = [tuple(b.name for b in blocks) for _, _, blocks in units[1:3]]
    assert kinds == [("attn",), ("moe_route", "moe_experts", "moe_combine")]

    def params(unit):
        return sum(b.params for b in unit[2])

    experts_elsewhere = 512 * 2 * 1024 * 2688 * (63 / 64)  # EP 64: this GPU holds 8 of 512
    block = 2_942_325_248 - 4096 - 512 - experts_elsewhere
    assert sum(params(u) for u in units[:4]) == pytest.approx(block, rel=1e-12)
    assert sum(params(u) for u in units[4:]) == 0
    h = 4096
    assert units[0][2][0].op("eh_proj").flop_fwd == 2 * 8192 * 2 * h * h


def test_mtp_runs_on_the_last_stage_with_its_weights_once() -> None:
    """The tiny hybrid with a '*E' MTP block trained at two depths over two stages: the last
    stage's forward runs both depths after its head; its weights and optimizer state grow by
    the block's parameters once; the first stage does not change."""
    model = dataclasses.replace(MODEL, num_nextn_predict_layers=1, mtp_hybrid_override_pattern="*E")

    def plan(depths):
        exp = load_experiment(
            "dgx-h100", "llama2-7b",
            overrides=("hw.system.chips=[1, 8]", "training.global_batch_size=8",
                       "training.seq_len=4096"),
            mapping_flags={"pp": 2, "tp": 1, "dp": 1, "micro_batch_size": 1},
        )  # fmt: skip
        training = dataclasses.replace(exp.workload.training, mtp_depths=depths)
        workload = dataclasses.replace(exp.workload, model=model, training=training)
        exp = dataclasses.replace(exp, workload=workload)
        return map_workload(exp, Chip.from_spec(exp.hardware))

    plain, mtp = plan(0), plan(2)
    labels = [s.label for s in mtp.programs[1].forward]
    assert labels[-13:] == [
        "head.head", "mtp0_in.mtp_in", "MTP0.0.attn", "MTP0.1.moe_route", "MTP0.1.moe_experts",
        "MTP0.1.moe_combine", "mtp0_head.head", "mtp1_in.mtp_in", "MTP1.0.attn",
        "MTP1.1.moe_route", "MTP1.1.moe_experts", "MTP1.1.moe_combine", "mtp1_head.head",
    ]  # fmt: skip
    assert [s.label for s in mtp.programs[0].forward] == [
        s.label for s in plain.programs[0].forward
    ]
    training = TrainingSpec(seq_len=4096, global_batch_size=8, attention_kernel="fused")
    units = mtp_units(
        model, dataclasses.replace(training, mtp_depths=2), 1, 1, head_block(model, training, 1, 1)
    )
    block = sum(b.params for _, _, blocks in units for b in blocks)
    grow = dict(mtp.memory)[max(dict(mtp.memory))].gradients
    grow -= dict(plain.memory)[max(dict(plain.memory))].gradients
    assert grow == pytest.approx(2 * block, rel=1e-12)  # bf16 gradients, the block once


def test_mtp_depths_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"training\.mtp_depths(.|\n)*at most"):
        load_workload(SUPER, ["training.mtp_depths=1000"])
    with pytest.raises(ConfigError, match=r"training\.mtp_depths(.|\n)*num_nextn_predict_layers"):
        load_workload("workloads/nemotron-3-nano.yaml", ["training.mtp_depths=1"])
