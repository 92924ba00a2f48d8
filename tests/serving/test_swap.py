"""Preemption by swap: a preempted request's KV blocks go to host memory and come back."""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.specs import HostSpec, TrafficSpec
from palmsim.errors import MappingError
from palmsim.serving.traffic import Request
from tests.serving.helpers import compute_bound_tile, model, run, serving_spec

LAYERS, HIDDEN = 2, 256
COUNT, PROMPT, OUTPUT = 60, 40, 60


def _run(bandwidth: float, mode: str = "swap", latency: float = 2e-6):
    hw = replace(compute_bound_tile(), host=HostSpec(1e12, bandwidth, latency))
    traffic = TrafficSpec("trace", lengths="fixed", prompt_tokens=PROMPT, output_tokens=OUTPUT)
    spec = serving_spec(
        traffic, max_num_seqs=16, max_num_batched_tokens=64, block_size=16, num_kv_blocks=24
    )
    spec = replace(spec, scheduler=replace(spec.scheduler, preemption_mode=mode))
    # all at t = 0, so no scheduling decision depends on how long an iteration takes
    requests = tuple(Request(i, 0.0, PROMPT, OUTPUT) for i in range(COUNT))
    return run(hw, model(layers=LAYERS, hidden=HIDDEN), spec, requests)


def test_every_request_finishes_once_and_no_prompt_is_recomputed():
    """With swap space for every victim, preemptions move KV instead of dropping it: every
    request finishes once with all its tokens, the cache is never over-allocated, and each
    prompt token is computed exactly once (a recompute would compute it again)."""
    _, trace = _run(1e9)
    assert trace.metadata["num_swaps"] > 0
    assert sum(r.num_preemptions for r in trace.requests) == trace.metadata["num_swaps"]
    assert all(r.status == "finished" for r in trace.requests)
    assert sum(it.num_finished for it in trace.iterations) == COUNT
    assert sum(it.num_sampled for it in trace.iterations) == COUNT * OUTPUT
    assert max(it.kv_blocks_used for it in trace.iterations) <= 24
    assert sum(it.num_prefill_tokens for it in trace.iterations) == COUNT * PROMPT
    _, recompute = _run(1e9, mode="recompute")
    assert sum(it.num_prefill_tokens for it in recompute.iterations) > COUNT * PROMPT


def test_swap_time_is_bytes_over_the_host_link():
    """A block holds 16 tokens of K and V of every layer: 16 x 2 x layers x hidden x 2 B
    (fp16, one tile). The same run at two host bandwidths B1, B2 makes the same decisions,
    so it ends later by exactly (blocks moved) x block bytes x (1/B1 - 1/B2)."""
    block_bytes = 16 * 2 * LAYERS * HIDDEN * 2
    plan, slow = _run(1e9)
    assert plan.swap_bytes_per_block == block_bytes
    assert plan.swap_time_s(3) == pytest.approx(3 * block_bytes / 1e9 + 2e-6, rel=1e-12)
    _, fast = _run(4e9)
    moved = slow.metadata["num_swapped_blocks"]
    assert moved == fast.metadata["num_swapped_blocks"] > 0
    assert slow.end_time_s - fast.end_time_s == pytest.approx(
        moved * block_bytes * (1 / 1e9 - 1 / 4e9), rel=1e-9
    )


def test_swap_without_host_memory_is_a_mapping_error():
    traffic = TrafficSpec("poisson", num_requests=2)
    spec = serving_spec(traffic)
    spec = replace(spec, scheduler=replace(spec.scheduler, preemption_mode="swap"))
    with pytest.raises(MappingError, match="host"):
        run(compute_bound_tile(), model(), spec)
