"""The Muon optimizer (palmsim.workload.muon) against closed forms.

- A quintic Newton-Schulz step on an ``a x b`` update (``a <= b``) is three products,
  ``X Xᵀ`` (2·a²·b), ``A A`` (2·a³) and ``B X`` (2·a²·b): ``4·a²·b + 2·a³`` FLOP, 5 steps
  (Jordan et al. 2024; Megatron-Bridge's ``muon_num_ns_steps``).
- State: one fp32 momentum buffer beside the fp32 master weights, 8 B per parameter in
  mixed precision (Adam's 12).
- Megatron-Core's layer-wise distributed optimizer all-reduces the gradients and gives each
  data-parallel replica its share of the matrices to orthogonalise.
"""

from __future__ import annotations

import pytest

from palmsim.api import load_experiment
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.memory import optimizer_state_bytes_per_param
from palmsim.mapping.plan import CollectiveKind, GradBucketReady
from palmsim.validate import NotRun, _optimizer
from palmsim.workload.muon import newton_schulz_ops


def _ns(a: float, b: float) -> float:
    """Five steps on an a x b matrix, a <= b, by hand."""
    return 5 * (2 * a * a * b + 2 * a * a * a + 2 * a * a * b)


def test_newton_schulz_flop_closed_form() -> None:
    ops = newton_schulz_ops([(1024, 4096, 1.0)])
    assert sum(op.flop_fwd for op in ops) == _ns(1024, 4096)
    ops = newton_schulz_ops([(4096, 1024, 1.0)])  # the wider side transposed
    assert sum(op.flop_fwd for op in ops) == _ns(1024, 4096)
    ops = newton_schulz_ops([(64, 64, 1.0)], steps=1)
    assert sum(op.flop_fwd for op in ops) == 4 * 64**3 + 2 * 64**3
    ops = newton_schulz_ops([(7168, 2048, 3.0)])
    assert sum(op.flop_fwd for op in ops) == pytest.approx(3 * _ns(2048, 7168), rel=1e-12)


def test_muon_keeps_one_momentum_beside_the_master_weights() -> None:
    assert optimizer_state_bytes_per_param("muon", "bf16") == 4 + 4
    assert optimizer_state_bytes_per_param("adam", "bf16") == 4 + 8
    assert optimizer_state_bytes_per_param("muon", "fp32") == 4


def _stage0(optimizer: str, zero: int):
    exp = load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=(
            "hw.system.chips=[1, 8]", "training.global_batch_size=8",
            f"training.optimizer={optimizer}",
        ),
        mapping_flags={"pp": 4, "tp": 1, "dp": 2, "micro_batch_size": 1, "zero": zero},
    )  # fmt: skip
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    return exp, plan.programs[0], dict(plan.memory)[0]


@pytest.mark.parametrize("zero", [0, 1])
def test_muon_step_orthogonalises_each_linear_weight(zero: int) -> None:
    """Stage 0 of Llama 2 7B over 4 stages holds 8 layers; each layer's linear weights are
    QKV h x 3h, the output projection h x h, gate and up h x 2f, down f x h. Without ZeRO
    every replica orthogonalises all of them; the layer-wise distributed optimizer (ZeRO-1)
    gives each of the 2 replicas half. The embedding and norms take Adam: no product."""
    exp, program, _ = _stage0("muon", zero)
    m = exp.workload.model
    h, f = m.hidden_size, m.intermediate_size
    per_layer = _ns(h, 3 * h) + _ns(h, h) + _ns(h, 2 * f) + _ns(h, f)
    share = 1 / 2 if zero == 1 else 1.0
    assert program.optimizer.flop == pytest.approx(8 * per_layer * share, rel=1e-12)
    _, adam, _ = _stage0("adam", zero)
    assert adam.optimizer.flop == 0.0


def test_muon_state_memory() -> None:
    """ZeRO-1 shards the 8 B/param of state over the 2 replicas as it shards Adam's 12 B."""
    _, _, muon = _stage0("muon", 1)
    _, _, adam = _stage0("adam", 1)
    assert muon.optimizer == pytest.approx(adam.optimizer * 8 / 12, rel=1e-12)


def test_layer_wise_optimizer_all_reduces_the_gradients() -> None:
    """ZeRO-1 with Adam reduce-scatters each gradient bucket to its shard's owner; Muon's
    layer-wise distributed optimizer all-reduces it (every replica gets whole gradients;
    Megatron-Core docs, 'Layer-wise distributed optimizer')."""
    kinds = {}
    for optimizer in ("adam", "muon"):
        _, program, _ = _stage0(optimizer, 1)
        kinds[optimizer] = {s.kind for s in program.backward if isinstance(s, GradBucketReady)}
    assert kinds == {"adam": {CollectiveKind.REDUCESCATTER}, "muon": {CollectiveKind.ALLREDUCE}}


def test_validate_reads_the_optimizer() -> None:
    assert _optimizer({}) == ("adam", False)
    assert _optimizer({"optimizer": "AdamW"}) == ("adam", False)
    assert _optimizer({"optimizer": "muon"}) == ("muon", False)
    # Megatron-Bridge's dist_muon: Megatron-Core's layer-wise distributed optimizer
    assert _optimizer({"optimizer": "dist_muon"}) == ("muon", True)
    with pytest.raises(NotRun, match="did you mean 'muon'"):
        _optimizer({"optimizer": "muonn"})


def test_muon_refuses_element_wise_gradient_shards() -> None:
    with pytest.raises(MappingError, match=r"mapping\.zero=2"):
        _stage0("muon", 2)


def test_validate_reads_the_optimizer_a_text_names() -> None:
    assert _optimizer({"optimizer": "Adam (mixed precision)"}) == ("adam", False)
    # LAMB keeps Adam's two moments (You et al. 2020, Algorithm 2)
    assert _optimizer({"optimizer": "LAMB"}) == ("adam", False)
    with pytest.raises(NotRun, match="got 'Adafactor'"):
        _optimizer({"optimizer": "Adafactor"})
