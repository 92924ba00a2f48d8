"""Mixture-of-experts parameter, FLOP and traffic counts against hand-derived formulas.

Mixtral 8x7B (Jiang et al. 2024, arXiv:2401.04088) and the DeepSeek-V3 layout (DeepSeek-AI
2024, arXiv:2412.19437, Sec. 2.1.2): the formulas below are written from the architectures,
not from palmsim's output. Notation: h hidden, a heads, g KV heads, d head width, n_layers,
vocab, n_experts routed experts, k top-k, fe expert width, ns shared experts, f dense width.
A SwiGLU MLP of width f has 3·h·f weights; attention has h·(a·d + 2·g·d) + a·d·h.
"""

from __future__ import annotations

import pytest

from palmsim.config.loader import load_workload
from palmsim.config.specs import TrainingSpec
from palmsim.errors import MappingError
from palmsim.workload.builders import (
    layer_blocks,
    model_flop_per_iteration,
    moe_blocks,
    num_active_parameters,
    num_parameters,
)


def _model(name):
    return load_workload(f"workloads/{name}.yaml")[0].model


def _attention_params(h, a, g, d):
    return h * (a * d + 2 * g * d) + a * d * h


def test_mixtral_parameters_match_the_hand_formula_and_the_published_46_7b():
    m = _model("mixtral-8x7b")
    h, a, g, d, n_layers, vocab, n_experts, k, f = 4096, 32, 8, 128, 32, 32000, 8, 2, 14336
    # per layer: attention, two RMSNorms (h each), the router, the SwiGLU experts
    per_layer = _attention_params(h, a, g, d) + 2 * h + h * n_experts + n_experts * 3 * h * f
    total = n_layers * per_layer + 2 * vocab * h + h  # untied embedding and head, final norm
    assert num_parameters(m) == total
    # Jiang et al. 2024, Sec. 2: "47B total parameters", "13B active parameters" per token
    assert total == pytest.approx(46.7e9, rel=1e-3)
    active = total - n_layers * (n_experts - k) * 3 * h * f
    assert num_active_parameters(m) == active
    assert active == pytest.approx(12.9e9, rel=2e-3)


def _mla_params(h, a, r_q, r_kv, d_nope, d_rope, d_v):
    """Multi-head latent attention's linears (q_down, q_up, kv_down, kv_up, out)."""
    return (
        h * r_q
        + r_q * a * (d_nope + d_rope)
        + h * (r_kv + d_rope)
        + r_kv * a * (d_nope + d_v)
        + a * d_v * h
    )


def test_deepseek_layout_parameters_match_the_hand_formula():
    """3 dense layers of width 18432, then 58 layers of 256 routed + 1 shared expert of 2048;
    multi-head latent attention with its q and kv norms (tests/analytic/
    test_attention_variants.py checks the 671 B against the report)."""
    m = _model("deepseek-v3")
    h, a, n_layers, vocab = 7168, 128, 61, 129280
    n_experts, k, fe, ns, f, dense = 256, 8, 2048, 1, 18432, 3
    attn = _mla_params(h, a, 1536, 512, 128, 64, 128) + 1536 + 512 + 2 * h
    dense_layer = attn + 3 * h * f
    moe_layer = attn + h * n_experts + n_experts * 3 * h * fe + ns * 3 * h * fe
    total = dense * dense_layer + (n_layers - dense) * moe_layer + 2 * vocab * h + h
    assert num_parameters(m) == total
    assert num_active_parameters(m) == total - (n_layers - dense) * (n_experts - k) * 3 * h * fe
    # The routed experts alone: 58 · 256 · 3 · 7168 · 2048 = 653.5 B of the report's 671 B.
    assert (n_layers - dense) * n_experts * 3 * h * fe == pytest.approx(653.5e9, rel=1e-3)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3"])
def test_model_flop_per_iteration_counts_the_routed_and_shared_experts(name):
    """3 x forward GEMM FLOP: every linear 2 FLOP per weight per token, the attention core
    4·s·a·d per token (QKᵀ and AV over the full s x s matrix; 2·s·a·(192 + 128) for MLA), the
    router 2·h·n_experts, k routed and all shared experts."""
    m = _model(name)
    s, batch = 2048, 8
    training = TrainingSpec(seq_len=s, global_batch_size=batch)
    h, a, g, d, vocab = (
        m.hidden_size,
        m.num_attention_heads,
        m.num_key_value_heads,
        m.head_dim,
        m.vocab_size,
    )
    n_experts, k, fe = m.num_experts, m.num_experts_per_tok, m.expert_intermediate_size
    ns = m.num_shared_experts
    if m.is_mla:  # DeepSeek: QKᵀ over the 192-wide query-key heads, attention over V of 128
        attn = 2 * _mla_params(h, a, 1536, 512, 128, 64, 128) + 2 * s * a * (192 + 128)
    else:
        attn = 2 * _attention_params(h, a, g, d) + 4 * s * a * d
    dense = m.first_k_dense_replace
    per_token = (
        dense * (attn + 2 * 3 * h * m.intermediate_size)
        + (m.num_hidden_layers - dense) * (attn + 2 * h * n_experts + 2 * (k + ns) * 3 * h * fe)
        + 2 * h * vocab
    )
    expected = 3 * batch * s * per_token
    assert model_flop_per_iteration(m, training) == pytest.approx(expected, rel=1e-12)


def test_moe_blocks_on_a_tile_under_ep_and_tp():
    """Mixtral at ep = 4, tp = 2, b = 1, s = 4096, bf16: each tile holds E/ep = 2 experts of
    f/t columns; the dispatch and combine move e·N·k·h bytes per tile each way."""
    m = _model("mixtral-8x7b")
    training = TrainingSpec(seq_len=4096, global_batch_size=8, dtype="bf16")
    h, f, e, n, k = 4096, 14336, 2, 4096, 2
    attn, route, experts, combine = layer_blocks(m, training, 1, 2, layer=5, ep=4)
    assert experts.params == 2 * 3 * h * f / 2
    assert route.params == h + h * 8  # RMSNorm and the replicated router
    assert experts.flop_fwd == pytest.approx(2 * n * k * 3 * h * f / 2, rel=1e-12)
    assert experts.flop_bwd == pytest.approx(2 * experts.flop_fwd, rel=1e-12)
    slots_bytes = e * n * k * h
    assert route.alltoall_fwd_bytes == slots_bytes  # dispatch
    assert experts.alltoall_bwd_bytes == slots_bytes  # the dispatch's gradient
    assert experts.alltoall_fwd_bytes == slots_bytes  # combine
    assert combine.alltoall_bwd_bytes == slots_bytes  # the combine's gradient
    # the expert GEMMs are split over TP like the dense MLP: their partial sums all-reduce
    assert experts.allreduce_fwd_bytes == e * n * k * h
    assert attn.name == "attn" and attn.allreduce_fwd_bytes == e * n * h
    # no EP: every expert on the tile, no all-to-all
    _, route1, experts1, _ = moe_blocks(m, training, 1, 1)
    assert route1.alltoall_fwd_bytes == 0 and experts1.params == 8 * 3 * h * f


def test_the_alltoall_dispatcher_sorts_the_received_slots_by_local_expert():
    """Megatron-Core's all-to-all dispatcher with more than one local expert sorts the T
    received slots by local expert after the dispatch and back before the combine
    ("Permutation 2", sort_chunks_by_idxs): two copies of T·h elements, each reading and
    writing 2·e·T·h bytes in the forward and its inverse in the backward. Mixtral at ep = 4
    holds 2 experts a tile (T = N·k slots); at ep = 8 one, and nothing is sorted."""
    m = _model("mixtral-8x7b")
    training = TrainingSpec(seq_len=4096, global_batch_size=8, dtype="bf16")
    h, e, n, k = 4096, 2, 4096, 2
    _, _, plain, _ = layer_blocks(m, training, 1, 1, layer=5, ep=4)
    _, _, sorted_, _ = layer_blocks(m, training, 1, 1, layer=5, ep=4, sort_by_local_expert=True)
    assert sorted_.op_names == ("sort_chunks", *plain.op_names, "unsort_chunks")
    copy_bytes = 2 * e * n * k * h
    assert sorted_.total("bytes_fwd") - plain.total("bytes_fwd") == 2 * copy_bytes
    assert sorted_.total("bytes_bwd") - plain.total("bytes_bwd") == 2 * copy_bytes
    assert sorted_.flop_fwd == plain.flop_fwd
    _, _, one_local, _ = layer_blocks(m, training, 1, 1, layer=5, ep=8, sort_by_local_expert=True)
    assert "sort_chunks" not in one_local.op_names


def test_expert_slots_set_the_expert_work():
    """An imbalanced rank processes T slots: its expert FLOP scale with T, not with N·k."""
    m = _model("mixtral-8x7b")
    training = TrainingSpec(seq_len=1024, global_batch_size=8)
    h, f = 4096, 14336
    _, _, experts, _ = moe_blocks(m, training, 1, 1, ep=8, expert_slots=3000.0)
    assert experts.flop_fwd == pytest.approx(2 * 3000 * 3 * h * f, rel=1e-12)


def test_moe_layers_need_their_index_and_ep_must_divide_the_experts():
    m = _model("deepseek-v3")
    training = TrainingSpec(seq_len=128, global_batch_size=8)
    with pytest.raises(MappingError, match="mixture-of-experts"):
        layer_blocks(m, training, 1, 1)
    assert [b.name for b in layer_blocks(m, training, 1, 1, layer=2)] == ["attn", "mlp"]
    assert len(layer_blocks(m, training, 1, 1, layer=3)) == 4
    with pytest.raises(MappingError, match="ep=3"):
        layer_blocks(m, training, 1, 1, layer=3, ep=3)
