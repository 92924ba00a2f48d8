"""Serving invariants: KV blocks within the cache, each request finished exactly once,
chunked prefill within the token budget, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from palmsim.config.specs import SchedulerSpec, TrafficSpec
from palmsim.mapping.serving import batch_shape
from palmsim.report.export import requests_csv
from palmsim.report.serving import summarize_serving
from palmsim.serving.scheduler import RequestState, Scheduler
from palmsim.serving.traffic import Request
from tests.serving.helpers import compute_bound_tile, model, run, serving_spec


def _tight(blocks: int, seed: int):
    traffic = TrafficSpec(
        "poisson",
        rate_per_s=1e6,
        num_requests=120,
        lengths="fixed",
        prompt_tokens=40,
        output_tokens=60,
    )
    spec = serving_spec(
        traffic, max_num_seqs=16, max_num_batched_tokens=64, block_size=16, num_kv_blocks=blocks
    )
    return run(compute_bound_tile(), model(), spec, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kv_blocks_never_exceed_the_cache_and_every_request_finishes_once(seed):
    """A cache of 24 blocks (384 tokens) for requests of up to 100 tokens forces preemptions;
    still no iteration holds more blocks than the cache, and every request finishes exactly
    once with all its tokens."""
    plan, trace = _tight(24, seed)
    assert plan.num_kv_blocks == 24
    assert max(it.kv_blocks_used for it in trace.iterations) <= 24
    assert sum(r.num_preemptions for r in trace.requests) > 0
    ids = [r.request_id for r in trace.requests]
    assert sorted(ids) == list(range(120))
    assert all(r.status == "finished" for r in trace.requests)
    assert sum(it.num_finished for it in trace.iterations) == 120
    ends = {it.end_s for it in trace.iterations}
    assert all(r.finish_s in ends and r.first_token_s <= r.finish_s for r in trace.requests)
    # every output token was sampled once: one per iteration a request sampled in
    assert sum(it.num_sampled for it in trace.iterations) == 120 * 60


def test_same_seed_same_bytes():
    """Same inputs and seed: identical records; another seed: other arrivals."""
    _, a = _tight(24, 5)
    _, b = _tight(24, 5)
    _, c = _tight(24, 6)
    assert requests_csv(a.requests) == requests_csv(b.requests)
    assert a.iterations == b.iterations
    assert requests_csv(a.requests) != requests_csv(c.requests)
    sa, sb = (
        summarize_serving(a, serving_spec(TrafficSpec("poisson")).slo),
        summarize_serving(b, serving_spec(TrafficSpec("poisson")).slo),
    )
    sa.pop("wall_time_s"), sb.pop("wall_time_s")
    assert sa == sb


def test_scheduler_chunks_prefill_within_the_budget_and_runs_decodes_first():
    """vLLM V1's order: running requests (here one decoding) first, then the waiting prompt
    chunked to the budget's remainder; max_num_seqs caps admissions."""
    sched = Scheduler(SchedulerSpec(max_num_seqs=2, max_num_batched_tokens=100), 1000)
    a = RequestState(Request(0, 0.0, 10, 5), 0)
    sched.add(a)
    (first,) = sched.schedule(0.0)
    assert (first.new_tokens, first.cached_tokens, first.samples) == (10, 0, True)
    sched.complete([first], 1.0)
    for i in (1, 2):
        sched.add(RequestState(Request(i, 1.0, 300, 5), 0))
    batch = sched.schedule(1.0)
    assert [(e.state.request.request_id, e.new_tokens, e.cached_tokens) for e in batch] == [
        (0, 1, 10),
        (1, 99, 0),
    ]
    assert not batch[1].samples  # a prompt chunk samples nothing
    assert batch_shape([(e.new_tokens, e.cached_tokens, e.samples) for e in batch]) == replace(
        batch_shape([]),
        num_tokens=100,
        num_sampled=1,
        chunks=(99,),
        num_single=1,
        cached_tokens=10,
        cached_pairs=10,
        max_cached=10,
    )
    sched.complete(batch, 2.0)
    batch = sched.schedule(2.0)  # request 2 waits: max_num_seqs 2
    assert [(e.state.request.request_id, e.new_tokens, e.cached_tokens) for e in batch] == [
        (0, 1, 11),
        (1, 99, 99),
    ]


def test_a_request_larger_than_the_cache_is_rejected_not_hung():
    sched = Scheduler(SchedulerSpec(block_size=16), 4)  # 64 tokens
    state = RequestState(Request(0, 0.0, 60, 10), 0)
    assert not sched.add(state)
    assert state.rejected


def test_gamma_arrivals_have_the_requested_rate_and_cv():
    """Inter-arrival gaps of the gamma process: mean 1/rate and CV as asked (sampling error
    over 200,000 gaps is below 1 %)."""
    from palmsim.serving.traffic import generate_requests

    traffic = TrafficSpec("gamma", rate_per_s=5.0, cv=3.0, num_requests=200_000)
    reqs = generate_requests(traffic, np.random.default_rng(0), 4096)
    gaps = np.diff([0.0] + [r.arrival_s for r in reqs])
    assert gaps.mean() == pytest.approx(0.2, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.03)


@pytest.mark.parametrize("lengths", ["sharegpt", "summarization", "code"])
def test_length_distributions_have_the_published_median_and_p90(lengths):
    """The published medians and 90th percentiles (Sarathi-Serve Table 2; the Azure 2023 code
    trace), within sampling error over 100,000 requests (context large enough not to
    truncate)."""
    from palmsim.serving.traffic import LENGTH_QUANTILES, generate_requests

    traffic = TrafficSpec("poisson", num_requests=100_000, lengths=lengths)
    reqs = generate_requests(traffic, np.random.default_rng(0), 10**9)
    (p_med, p_90), (o_med, o_90) = LENGTH_QUANTILES[lengths]
    prompts = np.array([r.prompt_tokens for r in reqs])
    outputs = np.array([r.output_tokens for r in reqs])
    assert np.median(prompts) == pytest.approx(p_med, rel=0.02)
    assert np.percentile(prompts, 90) == pytest.approx(p_90, rel=0.02)
    assert np.median(outputs) == pytest.approx(o_med, rel=0.02)
    assert np.percentile(outputs, 90) == pytest.approx(o_90, rel=0.02)
