"""inference.prefill_attention_split: a fused attention kernel takes its busiest core's work,
not the mean core's, as tt-metal's SDPA program factory deals query chunks to cores. Every
expected factor below is counted by hand from the dealing rule: chunk j (from 0) of a causal
pass over c cached rows in chunks of q rows meets c + (j + 1) q keys; the factor is the
busiest core's keys over the mean core's.
"""

from __future__ import annotations

import pytest

from palmsim.config.loader import load_hardware
from palmsim.errors import MappingError
from palmsim.hardware.costs import attention_split_factor
from palmsim.mapping.inference import simulated_tile_cores
from palmsim.tile_cases import predict
from tests.analytic.test_tiled_systems import (
    LAYERS,
    SLOW_CORE_PEAK_FLOP_PER_S,
    _inference,
    _prefill_layer_ops,
    _slowed_prefill_ttft_s,
)


def _factor(split: str, heads: int, rows: int, chunk: int, cores: int, **kw) -> float:
    kw.setdefault("users", 1)
    kw.setdefault("cached_rows", 0)
    return attention_split_factor(
        split, heads=heads, q_rows=rows, q_chunk_rows=chunk, cores=cores, **kw
    )


def test_even_is_the_mean():
    assert _factor("even", 3, 65536, 256, 64) == 1.0


def test_heads_first_pairs_its_ranges_where_they_divide_evenly():
    """32 heads, 16 chunks, 64 cores: 32 heads x 2 ranges of 8 chunks, an even count that
    divides the 16: each range pairs its low chunks with the mirrored high ones, so every
    core meets the same keys."""
    assert _factor("heads_first", 32, 4096, 256, 64) == pytest.approx(1.0)


def test_heads_first_leaves_the_cores_its_factors_do_not_use():
    """24 heads of a 512-row pass (8 chunks of 64), 64 cores: 24 heads x min(64 // 24, 8) = 2
    ranges of 4 chunks (balanced), 48 cores busy: 64 / 48."""
    assert _factor("heads_first", 24, 512, 64, 64) == pytest.approx(64 / 48)


def test_heads_first_ranges_that_do_not_divide_run_contiguous():
    """3 heads of a 64K-row pass (256 chunks of 256), 64 cores: 3 heads x 21 ranges of
    ceil(256 / 21) = 13 chunks (273 != 256: unbalanced). The busiest is the last full range,
    chunks 234-246, meeting (235 + ... + 247) = 13 x 241 = 3133 chunks of keys; the mean core
    3 x (1 + ... + 256) / 64 = 3 x 32896 / 64."""
    assert _factor("heads_first", 3, 65536, 256, 64) == pytest.approx(3133 * 64 / (3 * 32896))


def test_pairs_are_dealt_flat():
    """32 heads of a 4K-row pass (16 chunks of 256) on a p100a's 110 cores: 32 x 8 = 256 pairs
    (i, 15 - i) of 17 chunks each; the busiest core takes ceil(256 / 110) = 3 of them, the
    mean 256 / 110 (tt-metal issue #55766's rule)."""
    assert _factor("pairs", 32, 4096, 256, 110) == pytest.approx(3 * 110 / 256)


def test_pairs_of_a_chunked_pass_count_the_cached_keys():
    """4 heads of a 4K chunk after 4K cached rows, 64 cores: 32 pairs, each 2 x 4096 + 17 x
    256 = 12544 keys, on 32 of the 64 cores: the mean is half a pair's."""
    factor = _factor("pairs", 4, 4096, 256, 64, cached_rows=4096)
    mean = 4 * sum(4096 + (j + 1) * 256 for j in range(16)) / 64
    assert mean == pytest.approx(12544 / 2)
    assert factor == pytest.approx(2.0)


def test_an_odd_chunk_count_is_dealt_chunk_by_chunk():
    """2 heads x 3 chunks on 4 cores, unpaired (odd): ranges of 2 in (head, chunk) order:
    [h0 c0, h0 c1] 1 + 2, [h0 c2, h1 c0] 3 + 1, [h1 c1, h1 c2] 2 + 3 = 5; the mean 2 x 6 / 4."""
    assert _factor("pairs", 2, 192, 64, 4) == pytest.approx(5 / 3)


def test_a_non_causal_pass_deals_equal_chunks():
    """24 heads x 16 chunks on 110 cores: 384 chunks, ceil(384 / 110) = 4 on the busiest."""
    factor = _factor("pairs", 24, 4096, 256, 110, causal=False)
    assert factor == pytest.approx(4 * 110 / 384)


def _sdpa_case(location: str) -> dict:
    return {
        "id": "s",
        "source": {"location": location},
        "hardware": {"hw_spec_ref": "tenstorrent_blackhole.systems.p100a", "system": {}},
        "model": {"heads": 32, "kv_heads": 8, "head_dim": 128},
        "scenario": {
            "phase": "attention microbenchmark",
            "causal": True,
            "q_len": 4096,
            "dtype": "BFP8",
            "math_fidelity": "HiFi4",
            "core_grid": "11x10",
            "q_chunk": 256,
            "k_chunk": 256,
        },
        "measured": {"time_ms": 1.0},
    }


@pytest.mark.parametrize(
    ("location", "factor"),
    [
        # since PR #44614 (undated: the later code): 3 of 256 / 110 pairs
        ("a table", 3 * 110 / 256),
        # before it: 32 heads x 3 ranges of 6 chunks, [0, 6), [6, 12), [12, 16): the last meets
        # 13 + 14 + 15 + 16 = 58 chunks of keys, the mean core 32 x 136 / 110
        ("a table of 1 March 2026", 58 * 110 / (32 * 136)),
    ],
)
def test_an_sdpa_microbenchmark_runs_its_busiest_core(location, factor):
    """A causal SDPA of 32 heads over 4096 rows on 11x10 p100a cores: the op latency, then the
    causal FLOP 4 x heads x d x s^2 / 2 at tile.attention_efficiency of the cores' HiFi4
    peak, times the busiest core's share by the kernel of the case's date."""
    hw = load_hardware("hw_configs/blackhole-p100a.yaml")
    peak = 110 * hw.tile.peak_for("bfp8", "HiFi4") / simulated_tile_cores(hw)  # 11 x 10
    flop = 4 * 32 * 128 * 4096**2 / 2
    expected_s = hw.tile.op_latency_s + flop * factor / (peak * hw.tile.attention_efficiency)
    ((_, _, predicted_ms),) = predict(_sdpa_case(location))
    assert predicted_ms * 1e-3 == pytest.approx(expected_s, rel=1e-9)


def test_a_prefill_attention_takes_its_busiest_core():
    """The tiny model's 16 heads prefilling 32 rows (one 64-row chunk a head) on the n150's 64
    cores, each slowed to 0.1 GFLOP/s so the prefill is compute-bound: 'heads_first' gives
    16 heads one chunk each, 16 cores busy, so the attention takes 64 / 16 = 4 times its
    even time F / (64 p e_a), F the attention FLOP of the op graph, e_a
    tile.attention_efficiency; 'pairs' deals the 16 single chunks to 16 cores alike."""
    ttft = {
        split: _slowed_prefill_ttft_s(32, prefill_attention_split=split)
        for split in ("even", "heads_first", "pairs")
    }
    ops = _prefill_layer_ops(32)
    flop = LAYERS * sum(op.flop_fwd for op in ops if op.kind == "attention")
    hw = load_hardware("hw_configs/wormhole-n150.yaml")
    attention_s = flop / (64 * SLOW_CORE_PEAK_FLOP_PER_S * hw.tile.attention_efficiency)
    assert ttft["heads_first"] - ttft["even"] == pytest.approx(3 * attention_s, rel=0.01)
    assert ttft["pairs"] == pytest.approx(ttft["heads_first"])


def test_a_gpu_refuses_the_tt_metal_split():
    """A GPU's attention runs at its kernel's measured rate (tile.gemm): the split of
    tt-metal's SDPA over a tiled chip's cores is refused there, not half applied."""
    hw = load_hardware("hw_configs/dgx-h100.yaml")
    with pytest.raises(MappingError, match="prefill_attention_split = pairs"):
        _inference(hw, tp=1, prompt=32, output=2, prefill_attention_split="pairs")
