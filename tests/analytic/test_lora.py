"""LoRA fine-tuning (palmsim.workload.lora) against closed forms (Hu et al. 2021).

Every weight frozen: its backward is the input's gradient alone (one GEMM, the forward's
FLOP), and it takes no gradient, optimizer state or reduction. Each target linear ``k x n``
gains ``A`` (``k x r``) and ``B`` (``r x n``): ``r·(k + n)`` trained parameters and
``2·m·r·(k + n)`` forward FLOP on ``m`` tokens.
"""

from __future__ import annotations

import pytest

from palmsim.api import load_experiment
from palmsim.hardware.chip import Chip
from palmsim.hardware.costs import (
    OperandPlacement,
    accumulation_cost,
    gemm_operand_bandwidth_bytes_per_s,
    pass_cost,
)
from palmsim.mapping.batch import training_batch
from palmsim.mapping.mapper import _model, map_workload
from palmsim.mapping.plan import GradBucketReady

R = 16


def _experiment(rank: int):
    return load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=(f"training.lora_rank={rank}", "training.global_batch_size=16",
                   "training.attention_kernel=fused"),
        mapping_flags={"pp": 1, "tp": 1, "dp": 8, "micro_batch_size": 1, "zero": 1},
    )  # fmt: skip


def test_adapters_and_frozen_weights_by_hand() -> None:
    exp = _experiment(R)
    m = exp.workload.model
    h, f, s = m.hidden_size, m.intermediate_size, exp.workload.training.seq_len
    layer = _model(exp, training_batch(exp)).layers[0]
    ops = {op.name: op for b in layer for op in b.ops}
    shapes = {"qkv": (h, 3 * h), "out_proj": (h, h), "fc1": (h, 2 * f), "fc2": (f, h)}
    for name, (k, n) in shapes.items():
        assert ops[name].frozen
        a, b = ops[f"{name}_lora_a"], ops[f"{name}_lora_b"]
        assert not a.frozen and not b.frozen
        assert a.params + b.params == R * (k + n)
        assert a.flop_fwd + b.flop_fwd == 2 * s * R * (k + n)
    assert all(op.frozen for op in ops.values() if op.params and "_lora_" not in op.name)


def test_a_frozen_linear_computes_its_input_gradient_only() -> None:
    """The backward of a frozen qkv costs one GEMM (dgrad) of the forward's shape: its time
    equals the forward's, where a trained one's is two GEMMs."""
    from palmsim.mapping.lower import Costing  # noqa: F401  (the costing the mapper uses)

    exp = _experiment(R)
    batch = training_batch(exp)
    tile = exp.hardware.tile
    frozen = {op.name: op for b in _model(exp, batch).layers[0] for op in b.ops}["qkv"]
    trained = {op.name: op for b in _model(_experiment(0), batch).layers[0] for op in b.ops}["qkv"]
    bw = gemm_operand_bandwidth_bytes_per_s(exp.hardware)

    def flop(op, phase):
        return pass_cost([op], phase, tile, batch.peak_flop_per_s, 2, OperandPlacement(), bw).flop

    assert flop(frozen, "B") == flop(frozen, "F") == flop(trained, "F")
    assert flop(trained, "B") == 2 * flop(trained, "F")


def test_only_the_adapters_take_gradients_state_and_reduction() -> None:
    exp = _experiment(R)
    m = exp.workload.model
    h, f, layers = m.hidden_size, m.intermediate_size, m.num_hidden_layers
    adapters = layers * R * ((h + 3 * h) + (h + h) + (h + 2 * f) + (f + h))
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    memory = dict(plan.memory)[0]
    full = dict(map_workload(_experiment(0), Chip.from_spec(exp.hardware)).memory)[0]
    assert memory.gradients == pytest.approx(2 * adapters, rel=1e-12)  # bf16
    # mixed-precision Adam's 12 B/param over ZeRO-1's 8 replicas
    assert memory.optimizer == pytest.approx(12 * adapters / 8, rel=1e-12)
    assert memory.weights == pytest.approx(full.weights + 2 * adapters, rel=1e-12)
    buckets = [s for s in plan.programs[0].backward if isinstance(s, GradBucketReady)]
    assert sum(b.size_bytes for b in buckets) == pytest.approx(2 * adapters, rel=1e-12)


def test_a_frozen_linear_has_no_weight_gradient_step_or_accumulation() -> None:
    """With TP's async all-reduce the mapper costs a column-parallel linear's wgrad as a step
    of its own, and without fused accumulation its gradient add as another: a frozen linear
    has neither."""
    exp = _experiment(R)
    batch = training_batch(exp)
    tile = exp.hardware.tile
    qkv = {op.name: op for b in _model(exp, batch).layers[0] for op in b.ops}["qkv"]
    bw = gemm_operand_bandwidth_bytes_per_s(exp.hardware)
    wgrad = pass_cost(
        [qkv], "B", tile, batch.peak_flop_per_s, 2, OperandPlacement(), bw, {"qkv": "wgrad"}
    )
    assert wgrad.flop == 0.0 and wgrad.time_s == 0.0
    assert accumulation_cost([qkv], tile, batch.peak_flop_per_s, 2, OperandPlacement()) is None


def test_a_frozen_linear_keeps_no_input_unless_an_adapter_reads_it() -> None:
    """Transformer Engine saves a linear's input only for its weight gradient (``if
    weight.requires_grad``): with adapters on the attention's linears alone, fc1 and fc2 keep
    nothing, while qkv and out_proj keep their inputs (s·h elements each), which their
    adapters' ``A`` read; the SwiGLU keeps its two inputs (2·s·f) as before."""
    exp = load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=(f"training.lora_rank={R}", "training.lora_targets=[qkv, out_proj]",
                   "training.global_batch_size=16", "training.attention_kernel=fused"),
        mapping_flags={"pp": 1, "tp": 1, "dp": 8, "micro_batch_size": 1, "zero": 1},
    )  # fmt: skip
    m = exp.workload.model
    h, f, s = m.hidden_size, m.intermediate_size, exp.workload.training.seq_len
    ops = {op.name: op for b in _model(exp, training_batch(exp)).layers[0] for op in b.ops}
    e = 2  # bf16
    assert ops["fc1"].saved_bytes == ops["fc2"].saved_bytes == 0.0
    assert ops["fc1"].saved_bytes_selective == ops["fc2"].saved_bytes_selective == 0.0
    assert ops["qkv"].saved_bytes == e * s * h
    assert ops["out_proj"].saved_bytes == e * s * h  # 32 heads of 128 = h
    assert ops["swiglu"].saved_bytes == 2 * e * s * f
    assert "fc1_lora_a" not in ops and "qkv_lora_a" in ops
