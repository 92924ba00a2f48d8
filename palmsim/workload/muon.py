"""The Muon optimizer's orthogonalisation as GEMMs (pure).

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon) keeps one momentum buffer per parameter and replaces each
2-D weight's update by an approximately orthogonal matrix of the same shape, computed with a
quintic Newton-Schulz iteration in bf16. For an update ``X`` of shape ``a x b`` with
``a <= b`` (the wider side transposed away), each step is

    A = X Xᵀ          (a x b times b x a: 2·a²·b FLOP)
    B = c₁ A + c₂ A A  (a x a times a x a: 2·a³ FLOP)
    X = c₀ X + B X     (a x a times a x b: 2·a²·b FLOP)

so a step costs ``4·a²·b + 2·a³`` FLOP. NVIDIA's Emerging-Optimizers Muon, which Megatron-Core
and Megatron-Bridge's ``dist_muon`` run, uses the same iteration
(``orthogonalized_optimizers/muon_utils.newton_schulz``) and 5 steps by default
(Megatron-Bridge ``distributed_muon_with_cosine_annealing(muon_num_ns_steps=5)``). Its
``blockwise`` tensor-parallel mode orthogonalises each TP shard on its own, so the matrices are
the TP-local weights. Only the linear layers' weights take Muon; the embedding, the LM head and
the norms take Adam (Megatron-Core's ``nonlinear_or_embedding`` override).
"""

from __future__ import annotations

from collections.abc import Iterable

from palmsim.workload.ops import OPS, Op, make_op

__all__ = ["MUON_NS_STEPS", "muon_matrices", "newton_schulz_ops"]

#: Newton-Schulz steps per update: Megatron-Bridge's ``muon_num_ns_steps`` default and Jordan
#: et al.'s.
MUON_NS_STEPS = 5

#: Bytes per element of the iteration: it runs in bf16 (Jordan et al.'s ``X = G.bfloat16()``).
_NS_ELEMENT_BYTES = 2


def muon_matrices(ops: Iterable[Op]) -> list[tuple[float, float, float]]:
    """The 2-D weights among ``ops`` that Muon orthogonalises, as ``(rows, cols, count)``: each
    linear layer's weight ``k x n`` (its forward product's ``B``), ``count`` of them (a grouped
    GEMM's experts); a bias is not a matrix and is left out."""
    matrices = []
    for op in ops:
        if op.kind != "matmul" or op.params <= 0 or op.frozen or op.gemm_shape is None:
            continue
        _, _, k, n = op.gemm_shape
        count = float(op.params // (k * n))
        if count > 0:
            matrices.append((k, n, count))
    return matrices


def newton_schulz_ops(
    matrices: Iterable[tuple[float, float, float]], steps: int = MUON_NS_STEPS
) -> tuple[Op, ...]:
    """The three products of every Newton-Schulz step of ``matrices`` (``(rows, cols,
    count)``, ``count`` may be a fraction: a share of a distributed optimizer's matrices), as
    bf16 matmul ops whose forward is the work, ``count·steps`` products each."""
    ops = []
    for i, (rows, cols, count) in enumerate(matrices):
        a, b = sorted((rows, cols))
        batch = count * steps
        for name, (m, k, n) in (("gram", (a, b, a)), ("square", (a, a, a)), ("apply", (a, a, b))):
            cost = OPS.get("matmul")(m, k, n, batch=batch, dtype_bytes=_NS_ELEMENT_BYTES)
            ops.append(make_op(f"muon{i}.{name}", "matmul", cost, dtype_bytes=_NS_ELEMENT_BYTES))
    return tuple(ops)
