"""Whole simulations against closed forms, and infeasible mappings against their reasons."""

from __future__ import annotations

from dataclasses import replace

import pytest

from palmsim.config.specs import RunSpec
from palmsim.engine.simulator import Simulator
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.memory import optimizer_state_bytes_per_param
from palmsim.mapping.plan import GradBucketReady
from tests.conftest import experiment, gpt_model, wafer_spec


def _run(exp):
    chip = Chip.from_spec(exp.hardware)
    plan = map_workload(exp, chip)
    return plan, Simulator(chip, plan, exp.run).run()


def test_one_tile_with_ample_sram_is_compute_bound_at_model_flops():
    """One tile, everything in SRAM, SRAM bandwidth unlimited in effect: the iteration is the
    model's FLOP (3x forward GEMMs, Korthikanti Eq. 7) at peak, with no communication."""
    hw = wafer_spec(
        dies=(1, 1), tiles=(1, 1), sram_bytes=1e15, sram_bw=1e30, dram_placement="per_tile"
    )
    model = gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=128)
    b, s, h, layers, vocab = 8, 128, 256, 2, 512
    exp = experiment(hw, model, seq=s, batch=b, micro_batch_size=4)
    _, trace = _run(exp)
    eq7 = 72 * b * layers * s * h**2 * (1 + s / (6 * h) + vocab / (12 * h * layers))
    assert trace.end_time_s == pytest.approx(eq7 / 16e12, rel=1e-9)
    assert not trace.flows


def test_full_recompute_adds_one_forward_of_the_layers():
    """Full recompute executes Megatron SC21 Eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh)."""
    hw = wafer_spec(
        dies=(1, 1), tiles=(1, 1), sram_bytes=1e15, sram_bw=1e30, dram_placement="per_tile"
    )
    model = gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=128)
    b, s, h, layers, vocab = 8, 128, 256, 2, 512
    exp = experiment(hw, model, seq=s, batch=b, micro_batch_size=4, recompute="full")
    _, trace = _run(exp)
    eq3 = 96 * b * s * layers * h**2 * (1 + s / (6 * h) + vocab / (16 * layers * h))
    assert trace.end_time_s == pytest.approx(eq3 / 16e12, rel=1e-9)


def test_every_microbatch_runs_on_every_tile_once():
    hw = wafer_spec()
    exp = experiment(hw, pp=4, tp=4, micro_batch_size=2, batch=16, schedule="1f1b")
    plan, trace = _run(exp)
    assert plan.num_microbatches == 8
    runs = {(r.tile, r.microbatch) for r in trace.intervals if r.category == "forward"}
    assert runs == {(t, mb) for t in plan.used_tiles for mb in range(8)}
    assert len(plan.used_tiles) == 16


def test_optimizer_state_bytes_follow_zero():
    """ZeRO Sec. 3.1: mixed-precision Adam keeps 12 B/param (fp32 weights, momentum, variance)."""
    assert optimizer_state_bytes_per_param("adam", "fp16") == 12
    assert optimizer_state_bytes_per_param("adam", "fp32") == 8
    assert optimizer_state_bytes_per_param("sgd", "bf16") == 8


def test_memory_breakdown_of_a_one_tile_model():
    """weights = gradients = 2 B/param and optimizer 12 B/param in fp16 with Adam."""
    hw = wafer_spec(
        dies=(1, 1), tiles=(1, 1), sram_bytes=1e15, sram_bw=1e30, dram_placement="per_tile"
    )
    model = gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=128)
    plan, _ = _run(experiment(hw, model, seq=128, batch=4, micro_batch_size=4))
    h, layers, vocab, s = 256, 2, 512, 128
    params = 12 * layers * h**2 + 13 * layers * h + (vocab + s) * h + 2 * h  # Eq. 2 + final norm
    ((_, mem),) = plan.memory
    assert mem.weights == 2 * params
    assert mem.gradients == 2 * params
    assert mem.optimizer == 12 * params


def test_too_many_tiles_is_a_mapping_error():
    with pytest.raises(MappingError, match=r"needs pp\*tp\*dp = 4\*8\*4 = 128 tiles.*has 64"):
        _run(experiment(wafer_spec(), pp=4, tp=8, dp=4, micro_batch_size=1))


def test_indivisible_batch_is_a_mapping_error():
    with pytest.raises(MappingError, match=r"global batch 16 is not a multiple of .* = 3\*2 = 6"):
        _run(experiment(wafer_spec(), dp=3, micro_batch_size=2, batch=16))


def test_model_larger_than_memory_gives_the_breakdown():
    hw = wafer_spec(dies=(1, 1), tiles=(4, 4), dram_bytes=1e6)
    with pytest.raises(
        MappingError, match=r"does not fit.*weights .* GB \+ gradients .* optimizer"
    ):
        _run(experiment(hw, pp=2, tp=8, micro_batch_size=1))
    # with run.memory_check false the same mapping is simulated, its memory beyond the port
    unchecked = replace(
        experiment(hw, pp=2, tp=8, micro_batch_size=1), run=RunSpec(memory_check=False)
    )
    plan, trace = _run(unchecked)
    assert trace.end_time_s > 0
    assert min(m.total for _, m in plan.memory) > 1e6


def test_one_stage_has_no_pipeline_bubble_even_with_tensor_parallel_collectives():
    """With pp = 1 nothing waits for another stage; time in TP all-reduces is the stage's own.

    Only the tiles' last steps may end nanoseconds apart (their DRAM flows contend
    differently), hence a 1e-6 tolerance rather than exact zero; before TP waits counted as
    busy this was about 0.3."""
    from palmsim.report.metrics import pipeline_bubble_fraction

    exp = experiment(wafer_spec(), pp=1, tp=8, micro_batch_size=2, batch=8)
    plan, trace = _run(exp)
    assert any(r.category == "comm" for r in trace.intervals)
    assert pipeline_bubble_fraction(trace, plan) == pytest.approx(0.0, abs=1e-6)


def test_data_parallel_allreduce_without_overlap_adds_the_ring_cost():
    """Two GPUs on two nodes, one replica each. Without overlap every gradient bucket is
    all-reduced after the backward pass, one after another on the replicas' communicator:
    T(dp=2) = T(dp=1, same per-replica batch) + sum over buckets of the 2-tile ring cost,
    2(n-1)/n * S_b / B_nic + 2(n-1) * (NIC up + NIC down latency), with sum S_b = 2 B/param."""
    from palmsim.workload.builders import num_parameters
    from tests.conftest import cluster_spec

    model = gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=128)
    one = experiment(cluster_spec(nodes=1, gpus=1), model, seq=128, batch=4, micro_batch_size=2)
    two = experiment(
        cluster_spec(nodes=2, gpus=1),
        model,
        seq=128,
        batch=8,
        micro_batch_size=2,
        dp=2,
        dp_overlap=False,
    )
    _, t_one = _run(one)
    plan, t_two = _run(two)
    buckets = [s for s in plan.programs[0].backward if isinstance(s, GradBucketReady)]
    params = num_parameters(model)
    assert sum(b.size_bytes for b in buckets) == 2 * params
    n, nic_bw, nic_latency = 2, 25e9, 2e-6
    comm = sum(
        2 * (n - 1) / n * b.size_bytes / nic_bw + 2 * (n - 1) * 2 * nic_latency for b in buckets
    )
    assert t_two.end_time_s == pytest.approx(t_one.end_time_s + comm, rel=1e-9)
    overlapped = replace(two, mapping=replace(two.mapping, dp_overlap=True))
    _, t_overlap = _run(overlapped)
    assert t_one.end_time_s < t_overlap.end_time_s < t_two.end_time_s


def test_tp_overlap_splits_the_column_parallel_backward_exactly() -> None:
    """mapping.tp_overlap moves each block's column-parallel weight-gradient GEMM (qkv, fc1)
    into the backward all-reduce, as Megatron-LM's async TP all-reduce does: each block's
    backward and its wgrad add up to the unsplit backward in FLOP and, with the A100's GEMM
    model (two backward products, each its own kernel), in time; wgrad is half the GEMM's
    backward FLOP."""
    from palmsim.api import load_experiment
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.mapper import map_workload
    from palmsim.mapping.plan import CollectiveStep, ComputeStep

    def backward(overlap: bool):
        exp = load_experiment(
            "hw_configs/dgx-a100-superpod.yaml",
            "workloads/t-18b.yaml",
            overrides=["model.num_hidden_layers=1", "training.global_batch_size=1"],
            mapping_flags={"pp": 1, "tp": 8, "dp": 1, "micro_batch_size": 1, "tp_overlap": overlap},
        )
        return map_workload(exp, Chip.from_spec(exp.hardware)).programs[0].backward

    plain, split = backward(False), backward(True)
    overlapped = [s for s in split if isinstance(s, CollectiveStep) and s.overlap is not None]
    assert [s.overlap.label for s in overlapped] == ["L0.mlp.fc1.wgrad", "L0.attn.qkv.wgrad"]
    assert not any(isinstance(s, CollectiveStep) and s.overlap for s in plain)

    def totals(steps):
        computes = [s for s in steps if isinstance(s, ComputeStep)]
        computes += [s.overlap for s in steps if isinstance(s, CollectiveStep) and s.overlap]
        return sum(c.flop for c in computes), sum(c.compute_time_s for c in computes)

    flop_plain, time_plain = totals(plain)
    flop_split, time_split = totals(split)
    assert flop_split == pytest.approx(flop_plain, rel=1e-12)
    assert time_split == pytest.approx(time_plain, rel=1e-12)
    # T-18B: h = 6144, fc1 is 4h wide; per TP-8 tile and micro-batch of 1 x 2048 tokens its
    # wgrad is 2 * tokens * h * 4h/8 FLOP
    tokens, h = 2048, 6144
    assert overlapped[0].overlap.flop == pytest.approx(2 * tokens * h * 4 * h / 8, rel=1e-12)


def _t18b_layer_on_a100(grad_accumulation: str, batch: int = 1):
    from palmsim.api import load_experiment

    return load_experiment(
        "hw_configs/dgx-a100-superpod.yaml",
        "workloads/t-18b.yaml",
        overrides=["model.num_hidden_layers=1", f"training.global_batch_size={batch}"],
        mapping_flags={
            "pp": 1,
            "tp": 8,
            "dp": 1,
            "micro_batch_size": 1,
            "grad_accumulation": grad_accumulation,
        },
    )


def test_unfused_grad_accumulation_adds_one_kernel_per_parameter_tensor() -> None:
    """mapping.grad_accumulation=every_microbatch (Megatron-LM's DDP hook main_grad.add_(grad)):
    each backward of a layer adds, per parameter tensor, a kernel reading the accumulated and
    the fresh gradient and writing the sum. One T-18B layer at TP 8 on an A100 in fp16 holds
    P = 12h²/8 + 7h/8 + 6h parameters (column-parallel weights and biases split, the two
    row-parallel biases, 2h, and two LayerNorms, 4h, replicated) in 12 tensors: the backward
    grows by 12 elementwise launches plus 3·2·P bytes at the elementwise bandwidth, less the
    2·2·4h bytes of gradient the two LayerNorm kernels no longer move themselves."""
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.mapper import map_workload
    from palmsim.mapping.plan import ComputeStep

    def layer_backward_s(mode: str) -> float:
        exp = _t18b_layer_on_a100(mode)
        steps = map_workload(exp, Chip.from_spec(exp.hardware)).programs[0].backward
        layer = [s for s in steps if isinstance(s, ComputeStep) and s.label.startswith("L0.")]
        return sum(s.compute_time_s for s in layer)

    memory_ops = _t18b_layer_on_a100("fused").hardware.tile.memory_ops
    h, t, e = 6144, 8, 2
    params = 12 * h * h // t + 7 * h // t + 6 * h
    kernel = memory_ops.for_kind("elementwise")
    norm = memory_ops.for_kind("norm")
    extra_s = 12 * kernel.launch_latency_s + 3 * e * params / kernel.bandwidth_bytes_per_s
    extra_s -= 2 * e * 4 * h / norm.bandwidth_bytes_per_s
    difference_s = layer_backward_s("every_microbatch") - layer_backward_s("fused")
    assert difference_s == pytest.approx(extra_s, rel=1e-9)


def test_autograd_accumulation_skips_the_first_microbatch() -> None:
    """after_first_microbatch (PyTorch's AccumulateGrad) keeps the first backward's gradients:
    against every_microbatch, an iteration of m micro-batches saves exactly one round of
    accumulation kernels, for m = 1 as for m = 3. One round on one GPU (T-18B, one layer, TP
    8, fp16): the layer's P = 12h²/8 + 7h/8 + 6h parameters in 12 tensors, the word embedding's
    V/8·h and the learned positions' s·h (2 tensors) and the final LayerNorm's 2h (2 tensors;
    the tied LM head owns none): 16 launches plus 3·2 bytes per parameter."""
    from palmsim.api import simulate

    def iteration_s(mode: str, batch: int) -> float:
        return simulate(_t18b_layer_on_a100(mode, batch)).trace.end_time_s

    kernel = _t18b_layer_on_a100("fused").hardware.tile.memory_ops.for_kind("elementwise")
    h, t, e, vocab, s = 6144, 8, 2, 51200, 2048
    params = 12 * h * h // t + 7 * h // t + 6 * h + vocab // t * h + s * h + 2 * h
    round_s = 16 * kernel.launch_latency_s + 3 * e * params / kernel.bandwidth_bytes_per_s
    for m in (1, 3):
        saved_s = iteration_s("every_microbatch", m) - iteration_s("after_first_microbatch", m)
        assert saved_s == pytest.approx(round_s, rel=1e-9)
