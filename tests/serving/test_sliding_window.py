"""Sliding-window and chunked local layers in palmsim serve: vLLM V1's hybrid KV cache (its
groups, the blocks a window frees) and the attention over what a window reaches."""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.specs import SchedulerSpec, TrafficSpec
from palmsim.hardware.chip import Chip
from palmsim.mapping.serving import batch_shape, bounded_kinds, map_serving
from palmsim.serving.kvcache import BlockPool, KVGroups, kv_groups
from palmsim.serving.scheduler import RequestState, Scheduler
from palmsim.serving.traffic import Request
from tests.serving.helpers import compute_bound_tile, model, run, serving_spec

FULL = (None, None)


def _sliding(window: int):
    return (window, None)


def test_groups_follow_vllms_rule():
    """vLLM V1 (kv_cache_utils.py _get_kv_cache_groups_uniform_page_size): the fewest layers
    of a kind is the group size, the most where that is under 1.5 times the fewest; each
    kind fills ceil(layers / size) groups (padded)."""
    # gpt-oss-120b: 18 sliding (window 128) and 18 full, alternating
    oss = kv_groups({_sliding(128): 18, FULL: 18})
    assert oss == KVGroups(((1, 128, None), (1, None, None)), 18)
    # Gemma 3 27B's pattern: 62 layers, every sixth full: 10 full, 52 sliding
    gemma = kv_groups({_sliding(1024): 52, FULL: 10})
    assert gemma == KVGroups(((6, 1024, None), (1, None, None)), 10)
    # vLLM's own example: 12 sliding + 13 full pad to 13 and 13, not 24 full
    assert kv_groups({_sliding(128): 12, FULL: 13}).layers_per_group == 13
    # every layer alike: one group of all of them
    assert kv_groups({FULL: 32}) == KVGroups(((1, None, None),), 32)
    assert kv_groups({_sliding(4096): 32}) == KVGroups(((1, 4096, None),), 32)


def test_a_window_holds_only_the_blocks_it_has_not_left():
    """After 999 computed tokens and a 1000th allocated (block 16, window 128): the full
    group holds ceil(1000/16) = 63 blocks; the sliding one has freed (999 - 128 + 1) // 16 =
    54 of them (vLLM's get_num_skipped_tokens): 9. Chunks of 8192 after 10,000 computed:
    8192 // 16 = 512 freed of ceil(10001/16) = 626."""
    pool = BlockPool(10_000, 16, KVGroups(((1, 128, None), (1, None, None)), 18))
    assert pool.blocks_for(1000, 999) == 63 + 9
    chunked = BlockPool(10_000, 16, KVGroups(((3, None, 8192), (1, None, None)), 12))
    assert chunked.blocks_for(10_001, 10_000) == 3 * (626 - 512) + 626
    plain = BlockPool(10_000, 16)
    assert plain.blocks_for(1000, 999) == plain.blocks_for(1000) == 63


def test_a_long_decode_holds_the_window_and_the_full_layers_only():
    """One request, a 64-token prompt and 400 output tokens, block 16, window 32: at every
    iteration the pool holds exactly the blocks_for of its tokens (never a block it has
    freed), and the peak the scheduler checks at admission bounds it."""
    groups = KVGroups(((1, 32, None), (1, None, None)), 1)
    spec = SchedulerSpec(block_size=16, max_num_batched_tokens=64)
    sched = Scheduler(spec, 200, groups=groups)
    state = RequestState(Request(0, 0.0, 64, 400), 0)
    assert sched.add(state)
    peak = sched.pool.peak_blocks(464, 64)
    now = 0.0
    while state.finish_s is None:
        batch = sched.schedule(now)
        (entry,) = batch
        total = entry.cached_tokens + entry.new_tokens
        assert sched.pool.num_used == sched.pool.blocks_for(total, entry.cached_tokens)
        assert sched.pool.num_used <= peak
        now += 1.0
        sched.complete(batch, now)
    assert sched.pool.num_used == 0 and state.num_generated == 400


def test_the_sliding_layers_attend_to_their_window_only():
    """A decode over 1,000 cached tokens, window 128: a full layer forms 1,000 query-key
    pairs and reads 1,000 tokens' K and V; a sliding one 127 of each (the window holds the
    query itself). Its cache step costs 4·a·d FLOP a pair (a = 4 heads of 64)."""
    mdl = replace(
        model(layers=2, seq=4096),
        sliding_window=128,
        layer_types=("sliding_attention", "full_attention"),
    )
    hw = compute_bound_tile()
    plan = map_serving(serving_spec(TrafficSpec("poisson")), hw, mdl, Chip.from_spec(hw))
    shape = batch_shape([(1, 1000, True)], bounded_kinds(mdl))
    assert bounded_kinds(mdl) == ((128, None),)
    assert shape.bounded == ((127, 127, 127, 0),)
    stage = plan.stages[0]
    assert stage.kinds == ((0, 0, 1), (-1, 1, 1))
    full = plan._kv_step(shape, stage, "kv")
    sliding = plan._kv_step(shape, stage, "kv", 0)
    assert full.flop == pytest.approx(4 * 4 * 64 * 1000)
    assert sliding.flop == pytest.approx(4 * 4 * 64 * 127)


def test_a_hybrid_cache_holds_twice_the_blocks_of_half_its_layers():
    """gpt-oss's alternation in vLLM V1: a block holds one group, half the layers, so the
    same memory holds twice the blocks (within the floor of the division), and a serve over
    long prompts runs to the end."""
    base = model(layers=4, seq=8192)
    kinds = ("sliding_attention", "full_attention") * 2
    hybrid = replace(base, sliding_window=64, layer_types=kinds)
    hw = compute_bound_tile()
    traffic = TrafficSpec("poisson", rate_per_s=50.0, num_requests=20, lengths="summarization")
    spec = serving_spec(traffic, enable_prefix_caching=False)
    full_plan = map_serving(spec, hw, base, Chip.from_spec(hw))
    plan, trace = run(hw, hybrid, spec)
    assert plan.kv_groups == KVGroups(((1, 64, None), (1, None, None)), 2)
    assert plan.num_kv_blocks in (2 * full_plan.num_kv_blocks, 2 * full_plan.num_kv_blocks + 1)
    assert all(r.finish_s is not None for r in trace.requests)


def test_prefix_caching_over_a_hybrid_cache_is_refused():
    from palmsim.errors import MappingError

    hybrid = replace(
        model(layers=2), sliding_window=64, layer_types=("sliding_attention", "full_attention")
    )
    hw = compute_bound_tile()
    spec = serving_spec(TrafficSpec("poisson"), enable_prefix_caching=True)
    with pytest.raises(MappingError, match="prefix caching"):
        map_serving(spec, hw, hybrid, Chip.from_spec(hw))


def test_layer_kinds_are_counted_by_their_period_not_layer_by_layer():
    """10^9 layers, chunked but every fourth (Llama 4), experts on every second layer after
    three dense ones (first_k_dense_replace 3, moe_layer_step 2: layers 4, 6, ...): the
    counts by closed form. Dense chunked: layers 0-2 and 5, 9, ..., 999,999,997 (3 +
    249,999,999); dense full: 3, 7, ..., 999,999,999 (250,000,000); experts, all chunked:
    4, 6, ..., 999,999,998 (499,999,998)."""
    from palmsim.mapping.serving import _layer_counts, bounded_kinds

    deep = replace(
        model(layers=4),
        num_hidden_layers=10**9,
        attention_chunk_size=8192,
        global_attention_interval=4,
        num_experts=8,
        num_experts_per_tok=2,
        moe_layer_step=2,
        first_k_dense_replace=3,
    )
    assert bounded_kinds(deep) == ((None, 8192),)
    assert _layer_counts(deep, 0, 10**9, bounded_kinds(deep)) == {
        (0, 0): [0, 3 + 249_999_999],
        (-1, 0): [3, 250_000_000],
        (0, 1): [4, 499_999_998],
    }


def test_the_summary_names_the_cache_groups():
    from palmsim.report.serving import format_serving_table, summarize_serving

    kinds = ("sliding_attention", "full_attention")
    hybrid = replace(model(layers=2), sliding_window=64, layer_types=kinds)
    hw = compute_bound_tile()
    spec = serving_spec(TrafficSpec("poisson", num_requests=5))
    _, trace = run(hw, hybrid, spec)
    summary = summarize_serving(trace, spec.slo)
    assert summary["kv_cache_groups"] == 2
    assert "blocks per replica in 2 groups of layers" in format_serving_table(summary)
