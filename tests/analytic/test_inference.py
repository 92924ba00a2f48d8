"""Inference (prefill + decode with a KV cache) against closed forms."""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.loader import load_workload
from palmsim.config.specs import (
    ExperimentSpec,
    InferenceSpec,
    MappingSpec,
    TrainingSpec,
    WorkloadSpec,
)
from palmsim.engine.simulator import Simulator
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.inference import map_inference
from palmsim.mapping.plan import ComputeStep
from palmsim.report.metrics import inference_metrics
from tests.conftest import gpt_model, mla_model, wafer_spec


def _one_tile(**kw):
    """One tile with its own DRAM channel (256 GB/s), 16 TFLOP/s fp16."""
    return wafer_spec(dies=(1, 1), tiles=(1, 1), dram_placement="per_tile", **kw)


def _exp(hw, model, *, prompt, output, batch, mbs=None, **mapping):
    inf = InferenceSpec(prompt, output, batch, "fp16", "fp16", "fp16")
    workload = WorkloadSpec(model, TrainingSpec(prompt, 1), mode="inference", inference=inf)
    return ExperimentSpec(hw, workload, MappingSpec(micro_batch_size=mbs or batch, **mapping))


def _run(exp):
    chip = Chip.from_spec(exp.hardware)
    plan = map_inference(exp, chip)
    trace = Simulator(chip, plan, exp.run).run()
    return plan, trace, inference_metrics(trace, plan)


def _params(layers, h, vocab, seq):
    """GPT parameters with biases, tied embeddings, learned positions (Korthikanti Eq. 2 plus
    the final norm): 12 L h^2 + 13 L h + (V + s) h + 2 h."""
    return 12 * layers * h**2 + 13 * layers * h + (vocab + seq) * h + 2 * h


def test_prefill_on_one_tile_is_its_forward_flop_at_peak():
    """Everything in SRAM with unbounded SRAM bandwidth: TTFT = forward FLOP / peak, with the
    layers' GEMMs 24 b L s h^2 (Korthikanti et al. 2023 Eq. 7 divided by 3, less its
    attention), the fused attention kernel inference runs by default over the causal
    triangle, 4 d FLOP per head over each of the s (s + 1) / 2 query-key pairs, 2 b L h s (s + 1)
    (FlashAttention's count), and the LM head on each request's last token only, 2 b h V (its
    other positions are never sampled)."""
    hw = _one_tile(sram_bytes=1e15, sram_bw=1e30)
    b, s, h, layers, vocab = 2, 128, 256, 2, 512
    model = gpt_model(layers=layers, hidden=h, heads=4, vocab=vocab, seq=256)
    _, trace, m = _run(_exp(hw, model, prompt=s, output=1, batch=b))
    attention_flop = 2 * b * layers * h * s * (s + 1)
    forward_flop = 24 * b * layers * s * h**2 + attention_flop + 2 * b * h * vocab
    assert m["ttft_s"] == pytest.approx(forward_flop / 16e12, rel=1e-9)
    assert not trace.flows


def test_decode_step_with_weights_in_dram_is_weight_bytes_over_dram_bandwidth():
    """No SRAM: each decode step streams every weight from DRAM once. With 2 B/param and
    256 GB/s, TPOT = 2 * params / 256e9. Activations, KV (a few tokens) and the embedding rows
    read add < 1 % here (h = 2048, V = s = 64, batch 1), DRAM latency is set to 0."""
    hw = _one_tile(sram_bytes=0.0)
    hw = replace(hw, dram=replace(hw.dram, latency_s=0.0))
    h, layers, vocab, seq = 2048, 1, 64, 64
    model = gpt_model(layers=layers, hidden=h, heads=16, vocab=vocab, seq=seq)
    _, _, m = _run(_exp(hw, model, prompt=4, output=3, batch=1))
    layer_weight_bytes = 2 * (12 * layers * h**2 + 13 * layers * h)
    assert m["tpot_s"] == pytest.approx(layer_weight_bytes / 256e9, rel=1e-2)
    assert m["decode_memory_bound_fraction"] == 1.0


def test_kv_cache_bytes_follow_the_formula():
    """KV bytes = 2 * layers * kv_heads * head_dim * tokens * batch * bytes per element."""
    hw = _one_tile(sram_bytes=1e15, sram_bw=1e30)
    model = gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=256)
    prompt, output, batch = 16, 5, 4
    plan, _, m = _run(_exp(hw, model, prompt=prompt, output=output, batch=batch, mbs=2))
    (stage,) = plan.inference.stages
    per_token = 2 * 2 * 4 * 64 * batch * 2
    assert stage.kv_bytes_per_token == per_token
    assert stage.kv_sram_bytes == per_token * (prompt + output)
    # The last generated token is never fed back, so the cache peaks one token short.
    assert m["kv_cache_bytes_peak"]["per_tile_max"] == per_token * (prompt + output - 1)


def test_gqa_shrinks_the_cache_by_heads_over_kv_heads():
    """llama2-70b: 64 heads, 8 KV heads, head_dim 128, 80 layers; 8 stages of TP 4 hold 10
    layers and 2 KV heads per tile. MHA would hold 16: 8x (= heads / kv_heads) more."""
    workload, section = load_workload("workloads/llama2-70b.yaml", ["workload.mode=inference"])
    mapping = MappingSpec(**section)
    hw = wafer_spec(dies=(2, 2), tiles=(4, 4), dram_bytes=1e12)
    inf = replace(workload.inference, output_len=2)
    gqa = ExperimentSpec(hw, replace(workload, inference=inf), mapping)
    mha_model = replace(workload.model, num_key_value_heads=64)
    mha = replace(gqa, workload=replace(gqa.workload, model=mha_model))
    chip = Chip.from_spec(hw)
    kv_gqa = map_inference(gqa, chip).inference.stages[0].kv_bytes_per_token
    kv_mha = map_inference(mha, chip).inference.stages[0].kv_bytes_per_token
    assert kv_gqa == 2 * 10 * 2 * 128 * 8 * 2
    assert kv_mha / kv_gqa == 64 / 8


def test_spill_token_is_sram_left_after_weights_over_kv_bytes_per_token():
    """SRAM = weights + 100.5 tokens of KV: tokens 0..99 stay in SRAM, the rest spill, and a
    decode step over a context beyond the spill reads the spilled tokens from DRAM."""
    h, layers, vocab, seq, batch = 256, 2, 512, 256, 2
    model = gpt_model(layers=layers, hidden=h, heads=4, vocab=vocab, seq=seq)
    weights = 2 * _params(layers, h, vocab, seq)
    per_token = 2 * layers * 4 * 64 * batch * 2
    hw = _one_tile(sram_bytes=weights + 100.5 * per_token)
    prompt, output = 64, 64
    exp = _exp(hw, model, prompt=prompt, output=output, batch=batch)
    plan = map_inference(exp, Chip.from_spec(hw))
    (stage,) = plan.inference.stages
    assert stage.weight_dram_bytes == 0
    assert stage.spill_token == 100
    per_layer_token = per_token / layers

    def kv_read_dram(k):
        (step,) = [
            x
            for x in stage.decode[k - 1]
            if isinstance(x, ComputeStep) and x.label == f"D{k}.L0.kv"
        ]
        return step.dram_read_bytes

    assert kv_read_dram(1) == 0  # context 64 < 100
    assert kv_read_dram(63) == pytest.approx(per_layer_token * (prompt + 62 - 100))


def test_weights_plus_full_kv_beyond_memory_is_a_mapping_error():
    """DRAM holds the weights and 250 tokens of KV. 80 tokens plus a working set of one layer's
    activations (the 4h-wide MLP tensor of the prompt, 8 * 64 * 1024 * 2 B in + out = 1 MiB
    + 64 tokens' worth) fit; 256 tokens do not: MappingError naming the cache."""
    h, layers, vocab, seq, batch = 256, 2, 512, 256, 8
    model = gpt_model(layers=layers, hidden=h, heads=4, vocab=vocab, seq=seq)
    weights = 2 * _params(layers, h, vocab, seq)
    per_token = 2 * layers * 4 * 64 * batch * 2
    hw = _one_tile(sram_bytes=0.0, dram_bytes=weights + 250 * per_token)
    chip = Chip.from_spec(hw)
    map_inference(_exp(hw, model, prompt=64, output=16, batch=batch), chip)  # 80 tokens fit
    with pytest.raises(MappingError, match="KV cache at full length"):
        map_inference(_exp(hw, model, prompt=64, output=192, batch=batch), chip)


def test_int8_weights_halve_the_memory_bound_decode_step():
    """Weight-only int8: the weights stream at 1 B/param, so TPOT = params / DRAM bandwidth,
    within the same < 1 % of other bytes as the fp16 case."""
    hw = _one_tile(sram_bytes=0.0)
    hw = replace(hw, dram=replace(hw.dram, latency_s=0.0))
    h, layers = 2048, 1
    model = gpt_model(layers=layers, hidden=h, heads=16, vocab=64, seq=64)
    exp = _exp(hw, model, prompt=4, output=3, batch=1)
    inf = replace(exp.workload.inference, weight_dtype="int8")
    exp = replace(exp, workload=replace(exp.workload, inference=inf))
    _, _, m = _run(exp)
    assert m["tpot_s"] == pytest.approx((12 * layers * h**2 + 13 * layers * h) / 256e9, rel=1e-2)


def test_an_unstated_inference_micro_batch_gives_each_stage_one():
    """With no micro_batch_size anywhere, a replica's batch / dp requests split into
    gcd(share, pp) micro-batches: 8 requests on one stage decode together, 16 over 4 stages
    as 4 x 4, 12 over 8 stages as 4 x 3, 12 over 5 as one of 12; a batch dp does not split
    is left to the mapping's own check. A stated one wins."""
    from palmsim.api import inference_micro_batch, load_experiment

    assert inference_micro_batch(8, 1, 1) == 8
    assert inference_micro_batch(16, 1, 4) == 4
    assert inference_micro_batch(12, 1, 8) == 3
    assert inference_micro_batch(12, 1, 5) == 12
    assert inference_micro_batch(10**18 + 9, 1, 4) == 10**18 + 9  # no search over divisors
    assert inference_micro_batch(12, 2, 1) == 6
    assert inference_micro_batch(7, 2, 1) == 1
    sets = ["workload.mode=inference", "inference.prompt_len=64", "inference.output_len=4",
            "inference.batch=8"]  # fmt: skip
    hf = "workloads/hf/llama-2-7b.config.json"
    exp = load_experiment("dgx-h100", hf, overrides=sets)
    assert exp.mapping.micro_batch_size == 8
    exp = load_experiment("dgx-h100", hf, overrides=sets, mapping_flags={"pp": 2, "tp": 8})
    assert exp.mapping.micro_batch_size == 4
    stated = [*sets, "mapping.micro_batch_size=2"]
    assert load_experiment("dgx-h100", hf, overrides=stated).mapping.micro_batch_size == 2
    shipped = load_experiment("dgx-h100", "llama2-7b", overrides=["workload.mode=inference"])
    assert shipped.mapping.micro_batch_size == 4  # its inference.mapping states it


def test_attended_cache_counts_the_pairs_a_window_or_chunk_leaves():
    """New queries after ``c`` cached tokens: with a window of ``w`` (query ``p`` sees keys
    ``p-w < j <= p``) query ``q`` reaches ``min(c, w-1-q)`` cached keys; in chunks of ``C``
    only the queries in the cached tokens' last chunk reach back, ``c mod C`` keys each."""
    from palmsim.workload.ops import attended_cache

    assert attended_cache(100, 1) == (0, 100)  # full attention: every cached key
    assert attended_cache(100, 1, window=8) == (93, 7)  # keys 93..99 and itself
    # 3 queries after 10 cached, window 5: 4 + 3 + 2 cached keys, from key 6 on
    assert attended_cache(10, 3, window=5) == (6, 9)
    # a window wider than everything: the full triangle's cached part, 3 x 10
    assert attended_cache(10, 3, window=100) == (0, 30)
    # chunks of 8 after 10 cached: positions 10..15 are in chunk [8, 16), 2 cached keys each;
    # 16 and 17 start the next chunk
    assert attended_cache(10, 8, chunk=8) == (8, 12)
    assert attended_cache(16, 4, chunk=8) == (16, 0)


def test_a_windowed_layers_decode_reads_its_window_of_the_cache():
    """gpt-oss-style layers, sliding (window 16) then full: at decode step k after a 64-token
    prompt the full layer reads all 64 + k - 1 cached tokens, the sliding one its window's 15,
    the same bytes per token; the cache is held whole, for both."""
    hw = _one_tile(sram_bytes=1.0, sram_bw=1e30)  # the cache in DRAM
    model = replace(
        gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=256),
        sliding_window=16,
        layer_types=("sliding_attention", "full_attention"),
    )
    plan, _, _ = _run(_exp(hw, model, prompt=64, output=4, batch=1))
    decode = plan.inference.stages[0].decode
    for k, steps in enumerate(decode, start=1):
        kv = [s for s in steps if isinstance(s, ComputeStep) and s.block == "kv"]
        sliding, full = (s.dram_read_bytes for s in kv)
        assert sliding * (64 + k - 1) == pytest.approx(full * 15, rel=1e-12)


def test_an_mla_decode_reads_the_latent_and_attends_over_it():
    """Multi-head latent attention (DeepSeek-V2 Sec. 2.1) caches ``r_kv + d_r`` elements a
    token and layer, every head's; a decode step attends over them with the up projections
    absorbed, ``2·(r_kv + d_r) + 2·r_kv`` FLOP a head and cached token (vLLM's MLA decode).
    Here r_kv 64, d_r 16, 4 heads, fp16: 160 B and 4 x 2 x 144 = 1152 FLOP a cached token."""
    hw = _one_tile(sram_bytes=1.0, sram_bw=1e30)  # the cache in DRAM
    model = mla_model()
    plan, _, _ = _run(_exp(hw, model, prompt=64, output=3, batch=1))
    stage = plan.inference.stages[0]
    assert stage.kv_bytes_per_token == pytest.approx(2 * 160, rel=1e-12)  # two layers
    for k, steps in enumerate(stage.decode, start=1):
        ctx = 64 + k - 1
        for kv in (s for s in steps if isinstance(s, ComputeStep) and s.block == "kv"):
            assert kv.dram_read_bytes == pytest.approx(ctx * 160, rel=1e-12)
            assert kv.flop == pytest.approx(ctx * 1152, rel=1e-12)


def test_an_mla_decode_on_sdpa_decode_cores_is_refused():
    """inference.decode_attention_cores prices SDPA decode over K and V heads; a latent cache
    is refused with the key named, as palmsim serve refuses it."""
    hw = _one_tile(sram_bytes=1.0, sram_bw=1e30)
    exp = _exp(hw, mla_model(), prompt=64, output=3, batch=1)
    inf = replace(exp.workload.inference, decode_attention_cores=1)
    exp = replace(exp, workload=replace(exp.workload, inference=inf))
    with pytest.raises(MappingError, match=r"inference\.decode_attention_cores"):
        _run(exp)


def test_an_mla_prefill_chunk_up_projects_the_cached_latents():
    """A prompt prefilled in chunks of 32: the second chunk attends to the first's 32 cached
    latents the "compute friendly" way (vLLM's MLA prefill over context): each up projected,
    ``2·r_kv·(d_nope + d_v)`` FLOP a head, then multi-head attention, ``2·(d_nope + d_r +
    d_v)`` a pair, 32 x 32 pairs: 4 heads x (32·2·64·64 + 1024·2·80) = 1,703,936 FLOP."""
    hw = _one_tile(sram_bytes=1.0, sram_bw=1e30)
    model = mla_model()
    exp = _exp(hw, model, prompt=64, output=1, batch=1)
    inf = replace(exp.workload.inference, prefill_chunk_tokens=32)
    exp = replace(exp, workload=replace(exp.workload, inference=inf))
    plan, _, _ = _run(exp)
    kv = [
        s
        for s in plan.inference.stages[0].prefill
        if isinstance(s, ComputeStep) and s.block == "kv" and s.flop > 0
    ]
    assert len(kv) == 2  # the second chunk's, one a layer
    assert all(s.flop == pytest.approx(1_703_936, rel=1e-12) for s in kv)
