"""A replica of two pipeline stages serves as vLLM V1 runs one with a queue of ``pp``
batches: a batch goes through the stages in order, the next one may start on the first stage
as soon as the batch before it has left it, and a request is in one batch at a time."""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque

import pytest

from palmsim.config.specs import SchedulerSpec, TrafficSpec
from palmsim.engine.serving import ServingSimulator
from palmsim.hardware.chip import Chip
from palmsim.mapping.serving import batch_shape, map_serving
from palmsim.serving.scheduler import RequestState, Scheduler
from palmsim.serving.traffic import Request
from tests.conftest import wafer_spec
from tests.serving.helpers import model, serving_spec

EPS_S = 1e-7  # the second request arrives while the first's batch is on stage 0


def _two_stages(**scheduler):
    """Two tiles of a compute-bound wafer, one layer each; stage 0 holds the embedding, stage
    1 the LM head (so its span is the longer)."""
    hw = wafer_spec(
        dies=(1, 1), tiles=(1, 2), dram_placement="per_tile", sram_bytes=1e15, sram_bw=1e30
    )
    spec = dataclasses.replace(serving_spec(TrafficSpec("poisson"), **scheduler), pp=2)
    chip = Chip.from_spec(hw)
    return chip, map_serving(spec, hw, model(layers=2, hidden=256, heads=4), chip)


def test_a_lone_request_takes_each_iteration_whole():
    """With one request nothing overlaps: its tokens come one whole iteration apart, each
    iteration the stages' spans, the send between them and the tail in a row."""
    chip, plan = _two_stages()
    trace = ServingSimulator(chip, plan, (Request(0, 0.0, 5, 3),)).run()
    (rec,) = trace.requests
    probe = ServingSimulator(chip, plan, ())
    shapes = [batch_shape([(5, 0, True)]), batch_shape([(1, 5, True)]), batch_shape([(1, 6, True)])]
    ends = []
    for shape in shapes:
        stages = probe._stages(0, shape)
        assert sum(stages.span_s) + sum(stages.gap_s) + stages.tail_s == pytest.approx(
            probe.iteration_time_s(0, shape), rel=1e-12
        )
        ends.append((ends[-1] if ends else 0.0) + probe.iteration_time_s(0, shape))
    assert rec.first_token_s == pytest.approx(ends[0], rel=1e-12)
    assert rec.finish_s == pytest.approx(ends[2], rel=1e-12)


def test_two_requests_overlap_across_the_stages():
    """r1 at 0 and r2 just after, each of a 1-token prompt and 2 output tokens. r1's prefill
    A1 holds stage 0 for a0, is sent (g), holds stage 1 for a1, lands after the tail t. r2,
    not in A1, goes in the next batch B1 at once: it enters stage 0 when A1 leaves it, and
    stage 1 when both its send has arrived and A1 has left. When A1 lands r1 decodes in A2
    (spans b0, b1), entering each stage when the batch before has left it; B2 likewise."""
    chip, plan = _two_stages()
    requests = (Request(0, 0.0, 1, 2), Request(1, EPS_S, 1, 2))
    trace = ServingSimulator(chip, plan, requests).run()
    r1, r2 = trace.requests
    probe = ServingSimulator(chip, plan, ())
    pre = probe._stages(0, batch_shape([(1, 0, True)]))
    dec = probe._stages(0, batch_shape([(1, 1, True)]))
    (a0, a1), (b0, b1), g, t = pre.span_s, dec.span_s, pre.gap_s[0], pre.tail_s
    assert dec.gap_s[0] == pytest.approx(g) and dec.tail_s == pytest.approx(t)
    assert a1 > a0  # the LM head: stage 1 is the longer
    # A1: stage 0 [0, a0], stage 1 [a0 + g, a0 + g + a1]
    a1_s1_end = a0 + g + a1
    a1_lands = a1_s1_end + t
    # B1: stage 0 from max(eps, a0), stage 1 from max(its arrival, A1's leaving)
    b1_s0_end = max(EPS_S, a0) + a0
    b1_s1_end = max(b1_s0_end + g, a1_s1_end) + a1
    b1_lands = b1_s1_end + t
    # A2 at a1_lands: stage 0 free since b1_s0_end
    a2_s0_end = max(a1_lands, b1_s0_end) + b0
    a2_s1_end = max(a2_s0_end + g, b1_s1_end) + b1
    # B2 at b1_lands
    b2_s0_end = max(b1_lands, a2_s0_end) + b0
    b2_s1_end = max(b2_s0_end + g, a2_s1_end) + b1
    assert r1.first_token_s == pytest.approx(a1_lands, rel=1e-12)
    assert r2.first_token_s == pytest.approx(b1_lands, rel=1e-12)
    assert r1.finish_s == pytest.approx(a2_s1_end + t, rel=1e-12)
    assert r2.finish_s == pytest.approx(b2_s1_end + t, rel=1e-12)
    # r2's prefill ran beside r1's: one stage-0 span after it, not a whole iteration
    assert r2.first_token_s < 2 * a1_lands
    widths = sorted(it.num_seqs for it in trace.iterations)
    assert widths == [1, 1, 1, 1]  # no batch held both requests


def test_a_request_in_flight_is_neither_rescheduled_nor_preempted():
    """Ten requests of 20 + 16 tokens (two 16-token blocks each at first, three at the
    end) arriving while batches are in flight, on a cache of 12 blocks: batches overlap,
    requests are preempted, and yet every request samples exactly its output tokens, once
    each (a request scheduled again while in flight would sample twice), and finishes."""
    chip, plan = _two_stages()
    plan = dataclasses.replace(plan, num_kv_blocks=12)
    requests = tuple(Request(i, EPS_S * i, 20, 16) for i in range(10))
    trace = ServingSimulator(chip, plan, requests).run()
    assert all(r.status == "finished" for r in trace.requests)
    assert sum(r.num_preemptions for r in trace.requests) > 0
    assert sum(it.num_sampled for it in trace.iterations) == 10 * 16
    spans = sorted((it.start_s, it.end_s) for it in trace.iterations)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))  # overlap


def test_a_long_prompts_chunks_follow_each_other_through_the_stages():
    """A 192-token prompt at 64 tokens a batch: chunk 2 goes in the next batch at once, over
    chunk 1's tokens in flight (their KV is in stage 0's layers by the time chunk 2 gets
    there), and chunk 3, which samples the first token, when chunk 1 has landed; each enters
    a stage when the chunk before has left it."""
    chip, plan = _two_stages(max_num_batched_tokens=64)
    trace = ServingSimulator(chip, plan, (Request(0, 0.0, 192, 2),)).run()
    (rec,) = trace.requests
    probe = ServingSimulator(chip, plan, ())
    c1, c2, c3 = (
        probe._stages(0, batch_shape([(64, cached, cached == 128)])) for cached in (0, 64, 128)
    )
    g, t = c1.gap_s[0], c1.tail_s
    c1_s0, c1_s1 = c1.span_s[0], c1.span_s[0] + g + c1.span_s[1]
    c1_lands = c1_s1 + t
    c2_s0 = c1_s0 + c2.span_s[0]
    c2_s1 = max(c2_s0 + g, c1_s1) + c2.span_s[1]
    c3_s0 = max(c1_lands, c2_s0) + c3.span_s[0]
    c3_s1 = max(c3_s0 + g, c2_s1) + c3.span_s[1]
    assert rec.first_token_s == pytest.approx(c3_s1 + t, rel=1e-12)
    whole = sum(probe.iteration_time_s(0, batch_shape([(64, c, c == 128)])) for c in (0, 64, 128))
    assert rec.first_token_s < whole  # not three whole iterations in a row


def test_room_for_a_request_is_never_taken_from_its_own_batch_or_one_in_flight():
    """Running, in priority order: A (its decode scheduled first in this batch), B (a
    64-token prompt whose second 16-token chunk is in flight; its third needs a third block)
    and C (a decode in flight), on a cache with no free block. No request may make room: A's
    entry is already in this batch, B's and C's blocks are in use by the stages. The batch is
    A alone, nobody is preempted, and no waiting request is admitted."""
    spec = SchedulerSpec(block_size=16, max_num_batched_tokens=17)
    sched = Scheduler(spec, num_kv_blocks=4)
    a, b, c = (RequestState(Request(i, 0.0, 8, 100), 0) for i in range(3))
    b = RequestState(Request(1, 0.0, 64, 4), 0)
    a.num_computed, a.num_generated, a.num_blocks = 8, 1, 1  # 9 known tokens: fits
    b.num_computed, b.in_flight_tokens, b.num_blocks = 16, 16, 2  # chunks 1 and 2
    c.num_computed, c.num_generated, c.num_blocks = 8, 1, 1
    c.in_flight_tokens = 1  # its decode is in the stages
    waiting = RequestState(Request(3, 0.0, 8, 4), 0)
    sched.running, sched.waiting = [a, b, c], deque([waiting])
    sched.pool.num_used = 4
    entries = sched.schedule(1.0)
    assert [(e.state, e.new_tokens) for e in entries] == [(a, 1)]
    assert sched.running == [a, b, c] and list(sched.waiting) == [waiting]
    assert sched.num_preemptions == 0
