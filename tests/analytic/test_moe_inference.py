"""Mixture-of-experts layers in inference, against closed forms.

- the experts a step's tokens reach: ``E·(1 - (1 - k/E)^T)`` for a uniform router, the
  count of experts drawn otherwise;
- a DRAM-bound decode step reads the weights of those experts only: one token of a top-2
  mixture reads 2 of its 8 experts;
- experts over an EP group of data-parallel replicas: each tile holds ``E/ep`` of them and
  every MoE layer of a pass dispatches and combines its tokens by all-to-all.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from palmsim.config.specs import (
    ExperimentSpec,
    InferenceSpec,
    MappingSpec,
    ModelSpec,
    TrainingSpec,
    WorkloadSpec,
)
from palmsim.engine.simulator import Simulator
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.inference import map_inference
from palmsim.mapping.plan import CollectiveKind, CollectiveStep, GroupKind
from palmsim.report.metrics import inference_metrics
from palmsim.workload.moe import route, touched_experts
from tests.conftest import cluster_spec, wafer_spec

H, F_E, E, K = 2048, 1024, 8, 2

#: One MoE layer (MHA of 16 heads, 8 SwiGLU experts of width 1024, top-2, no bias) with a
#: vocabulary of 64, so that its weights are nearly all a decode step reads.
MOE = ModelSpec(
    "moe-1l", H, 16, 16, 4 * H, 1, 64, 64, "silu",
    norm="rmsnorm", position_embedding="rope", use_bias=False, tie_word_embeddings=False,
    num_experts=E, num_experts_per_tok=K, moe_intermediate_size=F_E,
)  # fmt: skip


def _run(hw, model, *, batch, mbs=None, **mapping):
    inf = InferenceSpec(4, 3, batch, "fp16", "fp16", "fp16")
    workload = WorkloadSpec(model, TrainingSpec(4, 1), mode="inference", inference=inf)
    exp = ExperimentSpec(hw, workload, MappingSpec(micro_batch_size=mbs or batch, **mapping))
    chip = Chip.from_spec(hw)
    plan = map_inference(exp, chip)
    trace = Simulator(chip, plan, exp.run).run()
    return plan, inference_metrics(trace, plan)


def test_touched_experts_is_the_occupancy_expectation():
    """One token reaches exactly k experts, none reaches none; 4 tokens of a top-2 of 8 reach
    8·(1 - (3/4)^4) = 5.46875 on average; one token of DeepSeek-V3's top-8 of 256 reaches 8;
    thousands of tokens reach all."""
    assert touched_experts(1, 2, 8) == pytest.approx(2.0)
    assert touched_experts(0, 2, 8) == 0.0
    assert touched_experts(4, 2, 8) == pytest.approx(8 * (1 - 0.75**4))
    assert touched_experts(1, 8, 256) == pytest.approx(8.0)
    assert touched_experts(4096, 2, 8) == 8.0


def test_a_routing_counts_the_experts_each_rank_reads():
    """Uniform: each of 2 EP ranks holds 4 experts, reached by the group's 2·3 tokens with
    probability 1 - (3/4)^6. Drawn (multinomial): the experts with at least one slot."""
    uniform = route(3, 2, 8, 2)
    assert uniform.touched_experts == pytest.approx((4 * (1 - 0.75**6),) * 2)
    drawn = route(3, 2, 8, 2, kind="multinomial", rng=np.random.default_rng(7))
    loads = np.random.default_rng(7).multinomial(6, np.full(8, 1 / 8), size=2).sum(axis=0)
    hit = loads > 0
    assert drawn.touched_experts == (float(hit[:4].sum()), float(hit[4:].sum()))


def test_dram_bound_decode_step_reads_the_reached_experts_only():
    """No SRAM, DRAM 256 GB/s without latency: a decode step streams its weights once. One
    request (one token a step) reaches k = 2 experts, so TPOT = 2 B x (attention 4h² + router
    hE + norms 2h + 2 experts x 3·h·f_e) / 256 GB/s; the 6 experts it does not reach are held
    but not read. Activations and the tiny head add < 1 %."""
    hw = wafer_spec(dies=(1, 1), tiles=(1, 1), dram_placement="per_tile", sram_bytes=0.0)
    hw = replace(hw, dram=replace(hw.dram, latency_s=0.0))
    plan, m = _run(hw, MOE, batch=1)
    read = 4 * H * H + H * E + 2 * H + K * 3 * H * F_E
    assert m["tpot_s"] == pytest.approx(2 * read / 256e9, rel=1e-2)
    held = 4 * H * H + H * E + 2 * H + E * 3 * H * F_E + 2 * 64 * H + H
    assert plan.memory[0][1].weights == pytest.approx(2 * held, rel=1e-9)


def test_more_requests_reach_more_experts():
    """Four requests a step reach 8·(1 - (3/4)^4) experts on average: the step reads that many
    experts' weights (same closed form, the attention and router unchanged; the activations
    of four requests, their KV and the head add < 2 %)."""
    hw = wafer_spec(dies=(1, 1), tiles=(1, 1), dram_placement="per_tile", sram_bytes=0.0)
    hw = replace(hw, dram=replace(hw.dram, latency_s=0.0))
    _, m = _run(hw, MOE, batch=4)
    read = 4 * H * H + H * E + 2 * H + touched_experts(4, K, E) * 3 * H * F_E
    assert m["tpot_s"] == pytest.approx(2 * read / 256e9, rel=2e-2)


def test_experts_over_an_ep_group_of_replicas_dispatch_by_all_to_all():
    """dp = 2 replicas with ep = 2: each tile holds 4 of the 8 experts, and each pass's MoE
    layer runs the dispatch and the combine as all-to-alls over the EP group, of the per-tile
    buffer e·h·N·k (N tokens a replica routes: one a request in decode)."""
    hw = cluster_spec(nodes=1, gpus=2)
    plan, m = _run(hw, MOE, batch=2, mbs=1, dp=2, ep=2)
    (stage,) = plan.inference.stages
    a2a = [
        s
        for s in stage.decode[0]
        if isinstance(s, CollectiveStep) and s.kind is CollectiveKind.ALLTOALL
    ]
    assert [s.group for s in a2a] == [GroupKind.EP, GroupKind.EP]
    assert [s.size_bytes for s in a2a] == [2 * H * 1 * K] * 2
    held_experts = 4 * 3 * H * F_E
    assert plan.memory[0][1].weights == pytest.approx(
        2 * (4 * H * H + H * E + 2 * H + held_experts + 2 * 64 * H + H), rel=1e-9
    )
    assert m["tpot_s"] > 0


def test_ep_that_does_not_divide_the_replicas_is_a_mapping_error():
    """Inference folds EP over data-parallel replicas only: ep = 2 with dp = 1 is refused."""
    hw = cluster_spec(nodes=1, gpus=2)
    with pytest.raises(MappingError, match="ep=2 does not divide dp=1"):
        _run(hw, MOE, batch=1, tp=2, ep=2)


def test_a_steps_routed_experts_are_one_fused_kernel_each_gemm():
    """With a fixed latency of 10 us per kernel and memory and compute so fast they do not
    count, a decode step lasts its kernels x 10 us. Serving engines run each routed-expert
    GEMM as one kernel over all experts (vLLM's fused_experts), so a top-2 mixture of 16
    experts (one request reaches 2) and one of 64 (8 requests reach 64·(1 - (31/32)^8) = 14.3)
    take the same time: their kernel counts do not depend on the experts reached, where one
    kernel per expert would add 12.3 x 2 launches."""
    hw = wafer_spec(
        dies=(1, 1), tiles=(1, 1), dram_placement="per_tile", sram_bytes=1e15, sram_bw=1e30
    )
    tile = replace(hw.tile, op_latency_s=10e-6, peak_flop_per_s=(("fp16", 1e30),))
    hw = replace(hw, tile=tile)
    few = replace(MOE, num_experts=16)
    many = replace(MOE, num_experts=64)
    _, m_few = _run(hw, few, batch=1)
    _, m_many = _run(hw, many, batch=8)
    assert touched_experts(8, K, 64) == pytest.approx(64 * (1 - (31 / 32) ** 8))
    assert m_many["tpot_s"] == pytest.approx(m_few["tpot_s"], rel=1e-9)
    assert m_few["tpot_s"] == pytest.approx(round(m_few["tpot_s"] / 10e-6) * 10e-6, rel=1e-6)
