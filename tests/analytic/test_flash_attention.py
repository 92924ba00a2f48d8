"""The fused (flash) attention core against closed forms: its FLOP, the activation memory it
saves (Korthikanti's ``5·a·s²·b`` terms replaced by a log-sum-exp per query row), its time at
the measured kernel rates, and its split over a context-parallel group."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from palmsim.config.loader import load_hardware
from palmsim.config.specs import TrainingSpec
from palmsim.hardware.costs import FLASH_BACKWARD_FLOP_PER_FORWARD, op_pass_time_s
from palmsim.workload.builders import activation_bytes_per_layer, layer_blocks
from palmsim.workload.ops import flash_attention_cost
from tests.conftest import gpt_model

REPO = Path(__file__).resolve().parents[2]


def _training(attention: str, s: int = 2048) -> TrainingSpec:
    return TrainingSpec(seq_len=s, global_batch_size=8, dtype="fp16", attention=attention)


def test_flash_flop_is_half_the_full_square_under_a_causal_mask():
    """FlashAttention's count: 4·batch·s_q·s_k·d forward, half with a causal mask; the
    backward counts two forwards (model FLOP); K and V bytes shrink with grouped queries."""
    full = flash_attention_cost(1024, 1024, 128, batch=8, causal=False, dtype_bytes=2)
    causal = flash_attention_cost(1024, 1024, 128, batch=8, causal=True, dtype_bytes=2)
    assert full.flop_fwd == 4 * 8 * 1024 * 1024 * 128
    assert causal.flop_fwd == full.flop_fwd / 2
    assert causal.flop_bwd == 2 * causal.flop_fwd
    q = 2 * 8 * 1024 * 128  # one [heads, s, d] tensor at 2 B
    gqa = flash_attention_cost(
        1024, 1024, 128, batch=8, q_heads_per_kv=4, causal=True, dtype_bytes=2
    )
    lse = 4 * 8 * 1024
    assert gqa.bytes_fwd == 2 * q + 2 * q / 4 + lse  # Q, O; K, V of 2 heads; LSE


def test_flash_layer_flop_equals_the_unfused_causal_count():
    """A GPT layer's forward GEMM FLOP, Narayanan SC21 24·b·s·h² + 4·b·s²·h, with the
    attention term halved by the causal mask the fused kernel skips: 24·b·s·h² + 2·b·s²·h."""
    model = gpt_model(hidden=512, heads=8, seq=2048)
    s, b, h = 2048, 2, 512
    flop = sum(blk.gemm_flop_fwd for blk in layer_blocks(model, _training("flash"), b, 1))
    assert flop == pytest.approx(24 * b * s * h * h + 2 * b * s * s * h, rel=1e-12)


@pytest.mark.parametrize("t", [1, 2])
def test_flash_drops_the_s_squared_activations(t):
    """Korthikanti Table 2 without recompute, s·b·h·(10 + 24/t + 5·a·s/(h·t)) for a GPT layer
    at e = 2: the fused kernel keeps none of the 5·a·s²·b/t score terms and adds one fp32
    log-sum-exp per query row and head, 4·a·s·b/t."""
    model = gpt_model(hidden=512, heads=8, seq=2048)
    s, b, h, a = 2048, 2, 512, 8
    got = activation_bytes_per_layer(model, _training("flash"), b, t, "none")
    assert got == pytest.approx(s * b * h * (10 + 24 / t) + 4 * a * s * b / t, rel=1e-12)


def test_flash_time_is_its_executed_flop_at_the_measured_rates():
    """Forward: launch + 2·b·a·s²·d / (η_f·peak) (causal); backward: 2.5 forwards at η_b."""
    hw = load_hardware(str(REPO / "hw_configs" / "dgx-h100.yaml"))
    tile = hw.tile
    assert tile.attention is not None and tile.gemm is not None
    peak = 989e12
    op = next(
        o
        for blk in layer_blocks(
            gpt_model(hidden=4096, heads=32, seq=8192), _training("flash", 8192), 1, 1
        )
        for o in blk.ops
        if o.kind == "flash_attention"
    )
    fwd = 2 * 32 * 8192 * 8192 * 128
    assert op.flop_fwd == fwd
    t_f, launch, _ = op_pass_time_s(op, "F", op.flop_fwd, 0.0, op.bytes_fwd, tile, peak, 2903e9)
    assert t_f == pytest.approx(launch + fwd / (tile.attention.forward_efficiency * peak))
    t_b, _, _ = op_pass_time_s(op, "B", op.flop_bwd, 0.0, op.bytes_bwd, tile, peak, 2903e9)
    executed = FLASH_BACKWARD_FLOP_PER_FORWARD * fwd
    assert t_b == pytest.approx(launch + executed / (tile.attention.backward_efficiency * peak))
    assert FLASH_BACKWARD_FLOP_PER_FORWARD == 2.5  # five products of the forward's two's size


@pytest.mark.parametrize("cp", [2, 4])
def test_flash_core_on_a_cp_rank_is_one_cp_th_of_the_causal_work(cp):
    """Load-balanced chunks give every rank the same unmasked pairs, s²/(2·cp): the rank's
    fused core (its s/cp queries against all s keys, causal) is 1/cp of the layer's, and its
    memory too."""
    model = gpt_model(hidden=512, heads=8, seq=2048)
    b = 1
    whole = sum(blk.gemm_flop_fwd for blk in layer_blocks(model, _training("flash"), b, 1))
    rank = sum(blk.gemm_flop_fwd for blk in layer_blocks(model, _training("flash"), b, 1, cp=cp))
    assert rank == pytest.approx(whole / cp, rel=1e-12)
    mem = activation_bytes_per_layer(model, _training("flash"), b, 1, "none")
    mem_cp = activation_bytes_per_layer(model, _training("flash"), b, 1, "none", cp=cp)
    assert mem_cp == pytest.approx(mem / cp, rel=1e-12)


def test_unfused_is_the_default_and_unchanged():
    model = gpt_model(hidden=512, heads=8, seq=2048)
    default = TrainingSpec(seq_len=2048, global_batch_size=8, dtype="fp16")
    assert default.attention == "unfused"
    assert layer_blocks(model, default, 1, 1) == layer_blocks(
        model, dataclasses.replace(default, attention="unfused"), 1, 1
    )
