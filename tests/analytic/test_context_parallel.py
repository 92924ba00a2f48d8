"""Context parallelism: the causal load balancing, the KV ring's traffic and time, and the
activation memory it saves, against closed forms."""

from __future__ import annotations

import pytest
import simpy

from palmsim.config.specs import ModelSpec, TrainingSpec
from palmsim.engine.flows import FlowNetwork
from palmsim.engine.records import FlowRecord, RecordBuilder
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.collectives import collective_transfers
from palmsim.mapping.context import (
    causal_pairs,
    contiguous_chunks,
    cp_activation_bytes,
    kv_chunk_bytes,
    load_balanced_chunks,
    ring_attention_steps,
    ring_traffic,
)
from palmsim.mapping.plan import CollectiveStep, ComputeStep
from palmsim.workload.builders import layer_blocks
from tests.conftest import gpt_model, wafer_spec

LLAMA_7B = ModelSpec(
    "llama-7b", 4096, 32, 32, 11008, 32, 32000, 8192, "silu",
    norm="rmsnorm", position_embedding="rope", use_bias=False, tie_word_embeddings=False,
)  # fmt: skip


@pytest.mark.parametrize("cp", [2, 4, 8])
def test_load_balancing_gives_every_rank_the_same_causal_work(cp):
    """Chunks of c = s/(2cp): rank r holds chunks r and 2cp-1-r; chunk j has c²·j + c(c+1)/2
    unmasked pairs, so every rank has c²·(2cp-1) + c(c+1)."""
    s = 4096
    c = s // (2 * cp)
    work = [causal_pairs(ranges) for ranges in load_balanced_chunks(s, cp)]
    assert work == [c * c * (2 * cp - 1) + c * (c + 1)] * cp
    assert sum(work) == s * (s + 1) // 2
    # contiguous split: rank r has C²·r + C(C+1)/2 with C = s/cp; the last does the most
    big = s // cp
    plain = [causal_pairs(ranges) for ranges in contiguous_chunks(s, cp)]
    assert plain == [big * big * r + big * (big + 1) // 2 for r in range(cp)]
    assert max(plain) > max(work)


def test_the_sequence_must_split_into_2cp_chunks():
    with pytest.raises(MappingError, match=r"2\*cp = 8"):
        load_balanced_chunks(4100, 4)
    with pytest.raises(MappingError, match=r"2\*cp = 8"):
        layer_blocks(LLAMA_7B, TrainingSpec(seq_len=4100, global_batch_size=1), 1, 1, cp=4)


def test_ring_traffic_is_cp_minus_1_kv_chunks_forward_and_twice_backward():
    """Llama-2 7B (32 KV heads of 128), s = 8192, cp = 4, tp = 2, b = 1, bf16: one rank's K and
    V of a layer are 2 · 2 B · 2048 tokens · 16 heads · 128 = 16 MiB."""
    training = TrainingSpec(seq_len=8192, global_batch_size=1, dtype="bf16")
    chunk = kv_chunk_bytes(LLAMA_7B, training, 1, 2, 4)
    assert chunk == 2 * 2 * 2048 * 16 * 128 == 16 * 2**20
    traffic = ring_traffic(LLAMA_7B, training, 1, 2, 4)
    assert traffic.forward_bytes == 3 * chunk
    assert traffic.backward_bytes == 6 * chunk


def test_the_kv_ring_on_a_ring_of_tiles_takes_cp_minus_1_chunk_transfers():
    """The lowering's all-gather of cp chunks on a 1 x 4 torus: every edge carries cp-1
    chunks, (cp-1)·chunk/B + (cp-1)·alpha."""
    bw, alpha, cp, chunk = 100e9, 5e-9, 4, 8 * 2**20
    chip = Chip.from_spec(
        wafer_spec(dies=(1, 1), tiles=(1, cp), intra_bw=bw, latency_s=alpha, topology="torus",
                   dram_placement="per_tile")
    )  # fmt: skip
    env = simpy.Environment()
    net = FlowNetwork(
        env, [c.bandwidth_bytes_per_s for c in chip.channels], RecordBuilder(FlowRecord)
    )
    ends = []

    def flow(t):
        yield net.transfer(
            t.channels, t.size_bytes, t.latency_s, category="cp", src=t.src, dst=t.dst
        )
        ends.append(env.now)

    for t in collective_transfers("allgather", tuple(range(cp)), cp * chunk, chip.route):
        assert t.size_bytes == pytest.approx((cp - 1) * chunk)
        env.process(flow(t))
    env.run()
    assert max(ends) == pytest.approx((cp - 1) * chunk / bw + (cp - 1) * alpha, rel=1e-9)


def test_ring_attention_overlaps_all_but_the_last_chunk():
    core = ComputeStep("L0.attn.core", 8e-3, 8e12, 80.0, 8.0, 4.0, layer=0, block="attn")
    ring, last = ring_attention_steps(core, 1e6, 4, phase="F")
    assert isinstance(ring, CollectiveStep) and ring.group == "cp"
    assert (ring.kind, ring.size_bytes) == ("allgather", 4e6)
    assert ring.overlap is not None
    assert ring.overlap.compute_time_s == pytest.approx(6e-3)
    assert last.compute_time_s == pytest.approx(2e-3)
    assert ring.overlap.flop + last.flop == pytest.approx(8e12)
    assert (ring.layer, ring.block, last.layer) == (0, "attn", 0)
    backward, _ = ring_attention_steps(core, 1e6, 4, phase="B")
    assert backward.size_bytes == 8e6  # KV and dKV
    assert ring_attention_steps(core, 1e6, 1, phase="F") == (core,)


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
@pytest.mark.parametrize("cp", [2, 4])
def test_cp_divides_the_activation_memory_by_cp(recompute, cp):
    """Korthikanti Table 2 for a GPT layer, s·b·h·(10 + 24/t + 5·a·s/(h·t)) bytes without
    recompute, s·b·h·(10 + 24/t) selective, 2·s·b·h full: each over cp."""
    model = gpt_model(hidden=512, heads=8, seq=2048)
    s, b, h, a, t = 2048, 2, 512, 8, 2
    training = TrainingSpec(seq_len=s, global_batch_size=8, dtype="fp16")
    table2 = {
        "none": s * b * h * (10 + 24 / t + 5 * a * s / (h * t)),
        "selective": s * b * h * (10 + 24 / t),
        "full": 2 * s * b * h,
    }[recompute]
    got = cp_activation_bytes(model, training, b, t, cp, recompute)
    assert got == pytest.approx(table2 / cp, rel=1e-12)


@pytest.mark.parametrize("cp", [2, 8])
def test_cp_divides_every_tile_s_flop_by_cp(cp):
    """Linear layers on s/cp tokens, the attention core on (s/cp) x s pairs: 1/cp of the
    layer's FLOP (Narayanan SC21: 24·b·s·h² + 4·b·s²·h forward for a GPT layer)."""
    model = gpt_model(hidden=512, heads=8, seq=2048)
    s, b, h = 2048, 1, 512
    training = TrainingSpec(seq_len=s, global_batch_size=8, dtype="fp16")
    flop = sum(blk.gemm_flop_fwd for blk in layer_blocks(model, training, b, 1, cp=cp))
    assert flop == pytest.approx((24 * b * s * h * h + 4 * b * s * s * h) / cp, rel=1e-12)


@pytest.mark.parametrize("cp", [2, 4])
def test_a_ring_step_is_one_attention_call_and_its_partial_result_is_merged(cp):
    """Transformer Engine's AttnFuncWithCPAndKVP2P calls the fused kernel once per ring step
    (1 forward kernel, 3 backward) and merges the steps' partials: ``cp`` forward kernels
    over the output, ``3·cp`` backward over dQ, dK and dV, each reading the partial and
    reading and writing the sum (3·e bytes per element; 2·e for the forward's first, which
    starts it). Step 0 is the whole diagonal, each later step 3/4 of full-size on the mean of
    the ranks."""
    s, b, t, a, d, e = 8192, 1, 4, 32, 128, 2
    training = TrainingSpec(seq_len=s, global_batch_size=8, dtype="bf16", attention_kernel="fused")
    ops = {op.name: op for op in layer_blocks(LLAMA_7B, training, b, t, cp=cp)[0].ops}
    kernel, merge = ops["attention"], ops["ring_merge"]
    assert (kernel.kernels_fwd, kernel.kernels_bwd) == (cp, 3 * cp)
    assert (merge.kernels_fwd, merge.kernels_bwd) == (cp, 3 * cp)
    out = b * (a // t) * (s // cp) * d  # the rank's output; dQ the same; dK + dV twice it (MHA)
    later = 3 * (cp - 1) / 4
    assert merge.bytes_fwd == pytest.approx(e * out * (2 + 3 * later), rel=1e-12)
    assert merge.bytes_bwd == pytest.approx(3 * e * (out + 2 * out) * (1 + later), rel=1e-12)
    assert merge.flop_fwd == merge.flop_bwd == 0.0
    single = {op.name: op for op in layer_blocks(LLAMA_7B, training, b, t, cp=1)[0].ops}
    assert "ring_merge" not in single
    assert (single["attention"].kernels_fwd, single["attention"].kernels_bwd) == (1, 3)
