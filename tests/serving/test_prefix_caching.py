"""Prefix caching: the shared prompt prefix's full blocks are computed once and shared."""

from __future__ import annotations

import dataclasses

from palmsim.config.specs import SchedulerSpec, TrafficSpec
from palmsim.serving.scheduler import RequestState, Scheduler
from palmsim.serving.traffic import Request
from tests.serving.helpers import compute_bound_tile, model, run, serving_spec


def test_second_request_skips_the_cached_prefix_blocks():
    """Prefix of 70 tokens, blocks of 16: 4 full blocks (64 tokens) are shared. The second
    request prefills only its last 36 of 100 prompt tokens over 64 cached ones, and the pool
    holds the 4 prefix blocks once."""
    spec = SchedulerSpec(block_size=16, enable_prefix_caching=True)
    sched = Scheduler(spec, 100, shared_prefix_tokens=70)
    a, b = (RequestState(Request(i, 0.0, 100, 20), 0) for i in (0, 1))
    sched.add(a)
    (ea,) = sched.schedule(0.0)
    assert (ea.new_tokens, ea.cached_tokens) == (100, 0)
    sched.complete([ea], 1.0)
    assert sched.prefix_resident and a.shared_blocks == 4 and a.num_blocks == 3
    sched.add(b)
    batch = sched.schedule(1.0)
    assert [(e.new_tokens, e.cached_tokens) for e in batch] == [(1, 100), (36, 64)]
    assert b.shared_blocks == 4 and b.num_blocks == 3  # ceil(100/16) = 7 blocks, 4 shared
    assert sched.pool.num_used == 4 + 3 + 3 + 0  # a grew to 101 tokens: still 7 blocks
    sched.complete(batch, 2.0)


def test_prefix_blocks_are_freed_with_their_last_user_and_runs_stay_consistent():
    """Under preemption with prefix caching every request finishes once, no iteration holds
    more blocks than the cache, and the engine's end check (every block returned) holds."""
    traffic = TrafficSpec(
        "poisson",
        rate_per_s=1e6,
        num_requests=80,
        lengths="fixed",
        prompt_tokens=30,
        output_tokens=40,
        shared_prefix_tokens=50,
    )
    spec = serving_spec(
        traffic, max_num_seqs=16, max_num_batched_tokens=128, block_size=16, num_kv_blocks=30
    )
    spec = dataclasses.replace(
        spec, scheduler=dataclasses.replace(spec.scheduler, enable_prefix_caching=True)
    )
    _, trace = run(compute_bound_tile(), model(), spec, seed=2)
    assert all(r.status == "finished" for r in trace.requests)
    assert sum(it.num_finished for it in trace.iterations) == 80
    assert max(it.kv_blocks_used for it in trace.iterations) <= 30
    assert sum(r.num_preemptions for r in trace.requests) > 0
    # later requests hit: their first iteration computes fewer tokens than the prompt
    assert sum(it.num_prefill_tokens for it in trace.iterations) < 80 * 80
