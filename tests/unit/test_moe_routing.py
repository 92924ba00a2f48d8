"""Mixture-of-experts routing: expert loads, capacity and dropped tokens, expert placement,
and the MoE keys of the loader."""

from __future__ import annotations

import math

import numpy as np
import pytest

from palmsim.config.loader import load_workload
from palmsim.errors import ConfigError
from palmsim.workload.moe import capacity_per_expert, expert_loads, place_experts, route
from tests.conftest import hf_config_copy


def test_uniform_routing_gives_every_rank_exactly_its_slots():
    r = route(4096, 2, 8, 4)
    assert r.received_slots == (8192.0,) * 4
    assert r.sent_slots == (8192.0,) * 4
    assert r.dropped_slots == 0.0
    assert r.experts_of_rank == ((0, 1), (2, 3), (4, 5), (6, 7))


def test_capacity_drops_what_exceeds_ceil_factor_times_the_share():
    """16 tokens, top-2, 4 experts: share 8 slots; factor 1.25 gives capacity ceil(10) = 10.
    Loads (14, 6, 8, 4) keep (10, 6, 8, 4): 4 slots dropped."""
    assert capacity_per_expert(16, 2, 4, 1.25) == 10.0
    assert capacity_per_expert(16, 2, 4, None) is None
    assert capacity_per_expert(10, 1, 4, 1.0) == 3.0  # ceil(2.5)
    loads = np.array([[14.0, 6.0, 8.0, 4.0]])
    kept = np.minimum(loads, 10.0)
    assert float((loads - kept).sum()) == 4.0


def test_multinomial_loads_are_seeded_and_conserve_slots():
    a = expert_loads(1000, 8, "multinomial", num_ranks=4, rng=np.random.default_rng(7))
    b = expert_loads(1000, 8, "multinomial", num_ranks=4, rng=np.random.default_rng(7))
    c = expert_loads(1000, 8, "multinomial", num_ranks=4, rng=np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (4, 8)
    assert (a.sum(axis=1) == 1000).all()


def test_dirichlet_skew_drops_tokens_at_capacity_one():
    """A skewed router (alpha = 0.1) overloads some experts; at capacity factor 1 the
    overloaded experts drop their excess and the busiest rank still gets at most its share
    times the capacity bound, E/ep experts x ceil(N·k/E) x ep source ranks."""
    rng = np.random.default_rng(0)
    r = route(1024, 2, 8, 4, kind="dirichlet", concentration=0.1, capacity_factor=1.0, rng=rng)
    assert r.dropped_slots > 0
    assert sum(r.sent_slots) + r.dropped_slots == 4 * 1024 * 2
    assert sum(r.received_slots) == sum(r.sent_slots)
    assert r.max_received_slots <= 2 * 256 * 4


def test_same_seed_same_routing():
    def once(seed):
        return route(
            512, 8, 64, 8, kind="dirichlet", concentration=0.5, rng=np.random.default_rng(seed)
        )

    assert once(3) == once(3)
    assert once(3) != once(4)


def test_balanced_placement_spreads_the_heaviest_experts():
    """Loads 8, 7, 6, 5, 4, 3, 2, 1 on 2 ranks of 4 experts: LPT gives {8, 5, 4, 1} = 18 and
    {7, 6, 3, 2} = 18; contiguous gives 26 and 10."""
    loads = np.array([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    assert place_experts(loads, 2, "contiguous") == ((0, 1, 2, 3), (4, 5, 6, 7))
    balanced = place_experts(loads, 2, "balanced")
    assert [sum(loads[list(r)]) for r in balanced] == [18.0, 18.0]


def _hf(tmp_path, **changes):
    return hf_config_copy(tmp_path, "workloads/hf/mixtral-8x7b.config.json", **changes)


@pytest.mark.parametrize(
    "name", ["workloads/hf/mixtral-8x7b.config.json", "workloads/hf/qwen3-30b-a3b.config.json"]
)
def test_hf_moe_configs_load(name):
    spec, _ = load_workload(name, ["training.seq_len=1024", "training.global_batch_size=8"])
    assert spec.model.is_moe and spec.model.position_embedding == "rope"
    assert spec.model.norm == "rmsnorm" and not spec.model.use_bias


def test_qwen3_head_dim_is_explicit():
    spec, _ = load_workload("workloads/qwen3-30b-a3b.yaml")
    assert spec.model.head_dim == 128 and spec.model.hidden_size == 2048
    assert spec.model.expert_intermediate_size == 768


def test_top_k_beyond_the_experts_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"num_experts_per_tok.*\[1, num_experts = 8\]"):
        load_workload(
            _hf(tmp_path, num_experts_per_tok=9),
            ["training.seq_len=1024", "training.global_batch_size=8"],
        )


@pytest.mark.parametrize("key", ["decoder_sparse_step", "interleave_moe_layer_step"])
def test_moe_every_other_layer(tmp_path, key):
    """Qwen's decoder_sparse_step and Llama 4's interleave_moe_layer_step of 2 put MoE on
    layers 1, 3, ... (HF Qwen2MoeDecoderLayer: (layer_idx + 1) % decoder_sparse_step == 0;
    Llama4TextConfig.moe_layers = range(step - 1, layers, step)): Mixtral's 32 layers, 16 MoE."""
    spec, _ = load_workload(
        _hf(tmp_path, **{key: 2}), ["training.seq_len=1024", "training.global_batch_size=8"]
    )
    model = spec.model
    assert model.moe_layer_step == 2 and model.num_moe_layers == 16
    assert [model.is_moe_layer(i) for i in range(4)] == [False, True, False, True]


def test_moe_layer_step_leaving_no_moe_layer_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"moe_layer_step.*at most num_hidden_layers"):
        load_workload(
            _hf(tmp_path, interleave_moe_layer_step=33),
            ["training.seq_len=1024", "training.global_batch_size=8"],
        )


@pytest.mark.parametrize(("key", "value"), [("moe_layer_freq", 2), ("mlp_only_layers", [0, 5])])
def test_moe_layouts_palmsim_cannot_say_are_refused(tmp_path, key, value):
    """DeepSeek's moe_layer_freq counts from the first layer (layer i MoE when i % freq == 0)
    and Qwen's mlp_only_layers lists dense layers anywhere: neither is every step-th layer."""
    with pytest.raises(ConfigError, match=key):
        load_workload(
            _hf(tmp_path, **{key: value}),
            ["training.seq_len=1024", "training.global_batch_size=8"],
        )


def test_unknown_expert_load_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"training\.expert_load.*did you mean 'uniform'"):
        load_workload("workloads/mixtral-8x7b.yaml", ["training.expert_load=unifrom"])


@pytest.mark.parametrize("factor", [8.0, 1e308])
def test_a_capacity_factor_of_the_expert_count_or_more_drops_nothing(factor) -> None:
    """ceil(factor N k / E) overflowed to inf (OverflowError) for a factor of 1e308; from
    factor = E on, an expert's capacity is all N k slots of the rank, which no load passes."""
    from palmsim.workload.moe import capacity_per_expert

    assert capacity_per_expert(4096, 2, 8, factor) == 4096 * 2
    assert capacity_per_expert(4096, 2, 8, 1.25) == math.ceil(1.25 * 4096 * 2 / 8)


def test_an_infinite_capacity_factor_is_the_files_error() -> None:
    from palmsim.errors import ConfigError

    with pytest.raises(ConfigError, match=r"moe_capacity_factor: got inf; expected a finite"):
        load_workload("workloads/mixtral-8x7b.yaml", ["training.moe_capacity_factor=.inf"])
