"""Prefill/decode disaggregation: the KV cache moves between pools over the real links."""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.config.specs import TrafficSpec
from palmsim.hardware.chip import Chip
from palmsim.serving.traffic import Request
from tests.conftest import wafer_spec
from tests.serving.helpers import model, run, serving_spec


def _spec(replicas: int, prefill: int, **traffic):
    spec = serving_spec(TrafficSpec("poisson", lengths="fixed", **traffic))
    return dataclasses.replace(spec, replicas=replicas, prefill_replicas=prefill)


def test_kv_transfer_alone_takes_bytes_over_the_link():
    """One request: its prompt's KV cache (2 · layers · kv heads · head dim · prompt · 2 bytes)
    crosses from the prefill tile to the decode tile alone, in latency + bytes / bandwidth of
    the route's narrowest link; decoding starts when it has arrived."""
    hw = wafer_spec(dies=(1, 1), tiles=(4, 4), dram_placement="per_tile")
    mdl = model(layers=2, hidden=256, heads=4)
    prompt, output = 300, 5
    plan, trace = run(hw, mdl, _spec(2, 1), (Request(0, 0.0, prompt, output),))
    (rec,) = trace.requests
    src, dst = plan.replica_tiles[0][0][0], plan.replica_tiles[1][0][0]
    chip = Chip.from_spec(hw)
    route = chip.route(src, dst)
    bandwidth = min(chip.channels[c].bandwidth_bytes_per_s for c in route.channels)
    kv_bytes = 2 * 2 * 4 * 64 * prompt * 2
    assert rec.replica == 0 and rec.decode_replica == 1
    assert rec.kv_transfer_s == pytest.approx(route.latency_s + kv_bytes / bandwidth, rel=1e-12)
    decode_iterations = [it for it in trace.iterations if it.replica == 1]
    assert decode_iterations[0].start_s == pytest.approx(
        rec.first_token_s + rec.kv_transfer_s, rel=1e-12
    )
    assert len(decode_iterations) == output - 1


def test_every_request_finishes_once_through_both_pools():
    hw = wafer_spec(dies=(1, 1), tiles=(4, 4), dram_placement="per_tile")
    spec = _spec(4, 2, rate_per_s=1e5, num_requests=60, prompt_tokens=50, output_tokens=8)
    spec = dataclasses.replace(
        spec, scheduler=dataclasses.replace(spec.scheduler, num_kv_blocks=12, block_size=16)
    )
    _, trace = run(hw, model(), spec, seed=4)
    assert sorted(r.request_id for r in trace.requests) == list(range(60))
    assert all(r.status == "finished" for r in trace.requests)
    assert {r.replica for r in trace.requests} <= {0, 1}
    assert {r.decode_replica for r in trace.requests} <= {2, 3}
    assert sum(it.num_finished for it in trace.iterations if it.replica >= 2) == 60
    assert max(it.kv_blocks_used for it in trace.iterations) <= 12
