"""palmsim's op-level sums against the published closed forms.

- Megatron SC21 (Narayanan et al. 2021): Eq.2 parameters, Eq.3 FLOP with full recompute.
- Korthikanti et al. 2022: Eq.7 model FLOP, Eq.8 FLOP with selective recompute, Table 2
  activation bytes per layer.

Every expected value is written out from the formula with explicit numbers.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.specs import ModelSpec, TrainingSpec
from palmsim.workload.builders import (
    activation_bytes_per_layer,
    hardware_flop_per_iteration,
    model_flop_per_iteration,
    num_parameters,
)


def gpt(h: int, a: int, layers: int, vocab: int = 51200, seq: int = 2048) -> ModelSpec:
    """A Megatron GPT: LayerNorm, biases, learned positions, tied head, GeLU 4h, dropout."""
    return ModelSpec(
        name=f"gpt-{h}x{layers}",
        hidden_size=h,
        num_attention_heads=a,
        num_key_value_heads=a,
        intermediate_size=4 * h,
        num_hidden_layers=layers,
        vocab_size=vocab,
        max_position_embeddings=seq,
        hidden_act="gelu",
        attention_dropout=0.1,
        hidden_dropout=0.1,
    )


# SC21 Table 1 rows: (model, global batch B).
T_1_7B = (gpt(2304, 24, 24), 512)
T_18B = (gpt(6144, 48, 40), 1024)
T_145B = (gpt(12288, 96, 80), 2304)
SC21 = [T_1_7B, T_18B, T_145B]
IDS = ["1.7B", "18.4B", "145.6B"]


def training(batch: int, dtype: str = "fp16") -> TrainingSpec:
    return TrainingSpec(seq_len=2048, global_batch_size=batch, dtype=dtype)


@pytest.mark.parametrize(("model", "batch"), SC21, ids=IDS)
def test_model_flop_is_korthikanti_eq7(model: ModelSpec, batch: int) -> None:
    """72·B·L·s·h²·(1 + s/(6h) + V/(12hL))."""
    big_b, layers, s, h, v = batch, model.num_hidden_layers, 2048, model.hidden_size, 51200
    eq7 = 72 * big_b * layers * s * h**2 * (1 + s / (6 * h) + v / (12 * h * layers))
    assert model_flop_per_iteration(model, training(batch)) == pytest.approx(eq7, rel=1e-12)
    no_recompute = hardware_flop_per_iteration(model, training(batch), "none")
    assert no_recompute == pytest.approx(eq7, rel=1e-12)


@pytest.mark.parametrize(("model", "batch"), SC21, ids=IDS)
def test_full_recompute_flop_is_megatron_eq3(model: ModelSpec, batch: int) -> None:
    """96·B·s·l·h²·(1 + s/(6h) + V/(16lh)): one more forward of every layer, not the head."""
    big_b, layers, s, h, v = batch, model.num_hidden_layers, 2048, model.hidden_size, 51200
    eq3 = 96 * big_b * s * layers * h**2 * (1 + s / (6 * h) + v / (16 * layers * h))
    got = hardware_flop_per_iteration(model, training(batch), "full")
    assert got == pytest.approx(eq3, rel=1e-12)


def test_full_recompute_flop_matches_the_calibration_table() -> None:
    """measurements.yaml lists F_eq3 = 1.5467e16, 3.2484e17, 5.6417e18 (5 digits)."""
    for (model, batch), recorded in zip(SC21, (1.5467e16, 3.2484e17, 5.6417e18), strict=True):
        got = hardware_flop_per_iteration(model, training(batch), "full")
        assert got == pytest.approx(recorded, rel=5e-5)


@pytest.mark.parametrize(("model", "batch"), SC21, ids=IDS)
def test_selective_recompute_flop(model: ModelSpec, batch: int) -> None:
    """Executed: Eq.7 plus one forward of QKᵀ and attention over V, 4·B·s²·h per layer.

    As published (Korthikanti Eq.8), 72·B·L·s·h²·(1 + s/(3h) + V/(12hL)): that is Eq.7 plus
    12·B·s²·h per layer, three times the recomputed forward.
    """
    big_b, layers, s, h, v = batch, model.num_hidden_layers, 2048, model.hidden_size, 51200
    eq7 = 72 * big_b * layers * s * h**2 * (1 + s / (6 * h) + v / (12 * h * layers))
    eq8 = 72 * big_b * layers * s * h**2 * (1 + s / (3 * h) + v / (12 * h * layers))
    executed = hardware_flop_per_iteration(model, training(batch), "selective")
    published = hardware_flop_per_iteration(model, training(batch), "selective", as_published=True)
    assert executed == pytest.approx(eq7 + 4 * big_b * layers * s**2 * h, rel=1e-12)
    assert published == pytest.approx(eq8, rel=1e-12)
    assert eq8 - eq7 == pytest.approx(12 * big_b * layers * s**2 * h, rel=1e-12)


@pytest.mark.parametrize(("model", "batch"), SC21, ids=IDS)
def test_parameters_are_megatron_eq2_plus_final_layernorm(model: ModelSpec, batch: int) -> None:
    """12·l·h²·(1 + 13/(12h) + (V + s)/(12lh)) + 2h (Eq.2 omits the final LayerNorm)."""
    layers, h, v, s = model.num_hidden_layers, model.hidden_size, 51200, 2048
    eq2 = 12 * layers * h**2 * (1 + 13 / (12 * h) + (v + s) / (12 * layers * h))
    assert num_parameters(model) == pytest.approx(eq2 + 2 * h, rel=1e-12)


def test_t18b_parameters_exactly() -> None:
    """Eq.2 in integers: 12lh² + 13lh + (V + s)h, plus 2h: 18,449,756,160."""
    layers, h = 40, 6144
    exact = 12 * layers * h * h + 13 * layers * h + (51200 + 2048) * h + 2 * h
    assert exact == 18_449_756_160
    assert num_parameters(T_18B[0]) == exact


@pytest.mark.parametrize("tp", [1, 8])
@pytest.mark.parametrize("micro_batch", [1, 4])
def test_activation_bytes_are_korthikanti_table_2(tp: int, micro_batch: int) -> None:
    """T-18B (h = 6144, a = 48, s = 2048), fp16.

    none: s·b·h·(10 + 24/t + 5·a·s/(h·t)); selective: s·b·h·(10 + 24/t); full: 2·s·b·h.
    """
    model, b, s, h, a, t = T_18B[0], micro_batch, 2048, 6144, 48, tp
    train = training(1024)
    none = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    selective = s * b * h * (10 + 24 / t)
    full = 2 * s * b * h
    assert activation_bytes_per_layer(model, train, b, t, "none") == pytest.approx(none, rel=1e-12)
    got = activation_bytes_per_layer(model, train, b, t, "selective")
    assert got == pytest.approx(selective, rel=1e-12)
    assert activation_bytes_per_layer(model, train, b, t, "full") == full


def test_activation_bytes_t1_t8_in_integers() -> None:
    """T-18B, b = 1. t = 1: sbh·34 + 5as²b = 1,434,451,968 B; t = 8: sbh·13 + 5as²b/8."""
    sbh, as2b = 2048 * 6144, 48 * 2048 * 2048
    assert 34 * sbh + 5 * as2b == 1_434_451_968
    model, train = T_18B[0], training(1024)
    assert activation_bytes_per_layer(model, train, 1, 1, "none") == 1_434_451_968
    assert activation_bytes_per_layer(model, train, 1, 8, "none") == 13 * sbh + 5 * as2b // 8
    assert activation_bytes_per_layer(model, train, 1, 8, "selective") == 13 * sbh


def test_activation_bytes_scale_with_dtype_but_masks_stay_one_byte() -> None:
    """fp32 at t = 1: the 16·sbh + 2·as²b e-byte elements double, the masks (2sbh, as²b) stay.

    e = 4: 4·(16 sbh + 2 as²b) + 2 sbh + as²b = 66 sbh + 9 as²b.
    """
    sbh, as2b = 2048 * 6144, 48 * 2048 * 2048
    model, train = T_18B[0], training(1024, dtype="fp32")
    assert activation_bytes_per_layer(model, train, 1, 1, "none") == 66 * sbh + 9 * as2b
    assert activation_bytes_per_layer(model, train, 1, 1, "selective") == 66 * sbh
    assert activation_bytes_per_layer(model, train, 1, 1, "full") == 4 * sbh


def test_gqa_activation_bytes() -> None:
    """GQA (a = 48, kv = 8) at t = 8, fp16: K and V shrink from 2sbh/t each to 2sbh/t·8/48.

    none = Table 2 − (1 − 8/48)·4sbh/t.
    """
    sbh, as2b, t = 2048 * 6144, 48 * 2048 * 2048, 8
    model = replace(T_18B[0], num_key_value_heads=8)
    expected = 13 * sbh + 5 * as2b / t - (1 - 8 / 48) * 4 * sbh / t
    got = activation_bytes_per_layer(model, training(1024), 1, t, "none")
    assert got == pytest.approx(expected, rel=1e-12)


def test_nemotron4_15b_parameters_are_the_reports_3_2b_embedding_and_12_5b_layers() -> None:
    """Nemotron-4 15B (Parmar et al. 2024, arXiv:2402.16819, Sec. 2): 32 layers, h = 6144, 48
    heads of 128 with 8 KV heads, a squared-ReLU MLP of two 6144 x 24576 matrices, "no bias
    terms" (so a LayerNorm has its weight, h, alone), untied 256,000-token embedding and head.
    The report gives
    "3.2 billion embedding parameters and 12.5 billion non-embedding parameters"."""
    from palmsim.config.loader import load_workload

    model = load_workload("workloads/nemotron4-15b.yaml")[0].model
    assert model.hidden_act == "gelu"  # relu2: palmsim's two-matrix MLP
    h, d, g, f, layers, vocab = 6144, 128, 8, 24576, 32, 256000
    attention = h * (h + 2 * g * d) + h * h  # QKV, then the output projection
    per_layer = attention + 2 * h * f + 2 * h  # MLP, two LayerNorms
    embedding = 2 * vocab * h  # input embedding and an untied head
    assert num_parameters(model) == layers * per_layer + embedding + h  # + final norm
    assert embedding == pytest.approx(3.2e9, rel=0.02)
    assert layers * per_layer == pytest.approx(12.5e9, rel=0.01)
