"""Multi-head latent attention in palmsim serve: its latent cache and vLLM's two MLA paths."""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.specs import TrafficSpec
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.serving import batch_shape, map_serving
from tests.conftest import mla_model
from tests.serving.helpers import compute_bound_tile, run, serving_spec


def test_a_served_mla_cache_holds_the_latent_and_attends_both_ways():
    """DeepSeek-V2 Sec. 2.1: a token caches r_kv + d_r = 80 elements a layer (fp16: 160 B),
    every head's. vLLM's MLA backend decodes absorbed, 2·(2·64 + 16) = 288 FLOP a head and
    cached token: 4 heads over 1,000 cached tokens, 1,152,000 FLOP; a prefill chunk of 10 over
    100 cached tokens up projects them, 2·64·(32 + 32) FLOP a head and token, and attends as
    MHA, 2·(32 + 16 + 32) a head and pair: 4·(8192·100 + 160·1000) = 3,916,800 FLOP."""
    hw = compute_bound_tile()
    mla = mla_model(seq=4096)
    plan = map_serving(serving_spec(TrafficSpec("poisson")), hw, mla, Chip.from_spec(hw))
    stage = plan.stages[0]
    assert stage.kv_bytes_per_token == 2 * 160
    decode = plan._kv_step(batch_shape([(1, 1000, True)]), stage, "kv")
    assert decode.flop == pytest.approx(1_152_000)
    prefill = plan._kv_step(batch_shape([(10, 100, False)]), stage, "kv")
    assert prefill.flop == pytest.approx(3_916_800)
    mixed = plan._kv_step(batch_shape([(1, 1000, True), (10, 100, False)]), stage, "kv")
    assert mixed.flop == pytest.approx(1_152_000 + 3_916_800)


def test_an_mla_model_serves_to_the_end():
    hw = compute_bound_tile()
    spec = serving_spec(TrafficSpec("poisson", rate_per_s=20.0, num_requests=20))
    _, trace = run(hw, mla_model(seq=4096), spec)
    assert all(r.finish_s is not None for r in trace.requests)


def test_an_mla_decode_on_sdpa_decode_cores_is_refused():
    hw = compute_bound_tile()
    spec = replace(serving_spec(TrafficSpec("poisson")), decode_attention_cores=1)
    with pytest.raises(MappingError, match="decode_attention_cores"):
        map_serving(spec, hw, mla_model(seq=4096), Chip.from_spec(hw))
