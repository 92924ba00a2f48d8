"""Op cost functions: FLOP and activation bytes of each op kind, derived by hand."""

from __future__ import annotations

import pytest

from palmsim.workload.ops import (
    OPS,
    Op,
    OpCost,
    bias_cost,
    copy_cost,
    dropout_cost,
    elementwise_cost,
    embedding_cost,
    loss_cost,
    make_op,
    matmul_cost,
    norm_cost,
    softmax_cost,
)


def test_every_kind_is_registered() -> None:
    """The eleven op kinds of a transformer each have one cost function."""
    assert OPS.names() == [
        "attention",
        "bias",
        "cast",
        "copy",
        "dropout",
        "elementwise",
        "embedding",
        "loss",
        "matmul",
        "norm",
        "softmax",
    ]
    assert OPS.get("matmul") is matmul_cost


def test_registering_a_kind_twice_raises() -> None:
    with pytest.raises(ValueError, match="'matmul' is already registered"):
        OPS.register("matmul")(matmul_cost)


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown op kind 'matmull' \(did you mean 'matmul'\?\)"):
        OPS.get("matmull")


def test_weight_matmul() -> None:
    """(3 × 5)·(5 × 7) with a weight: 2·3·5·7 FLOP forward, twice that backward.

    Activation bytes at e = 2: fwd reads X (15) and writes Y (21): 72 B; bwd reads dY and
    writes dX for the input gradient, reads X and dY for the weight gradient: 144 B.
    """
    assert matmul_cost(3, 5, 7, dtype_bytes=2, has_weight=True) == OpCost(
        210, 420, 72, 144, gemm_shape=(1, 3, 5, 7)
    )


def test_activation_matmul_counts_both_operands() -> None:
    """4 products (3 × 5)·(5 × 7) of activations: both operands are activation bytes.

    fwd 2·4·(15 + 35 + 21) = 568 B; bwd reads/writes each of the three twice: 1136 B.
    """
    assert matmul_cost(3, 5, 7, batch=4, dtype_bytes=2) == OpCost(
        840, 1680, 568, 1136, gemm_shape=(4, 3, 5, 7)
    )


def test_norm_is_memory_bound() -> None:
    """10 tokens × 8 at e = 2 (160 B a tensor): fwd reads x and writes y, 2·160 B, one kernel.

    bwd is apex's three kernels: weight-gradient partials read dy and x (2·160 B), their
    reduction is O(h), the input gradient reads dy and x again and writes dx (3·160 B).
    """
    assert norm_cost(10, 8, dtype_bytes=2) == OpCost(0, 0, 320, 800, kernels_bwd=3)


def test_bias_unfused_and_fused() -> None:
    """100 outputs at e = 2: ``output += bias`` reads and writes them (400 B, one kernel);
    the bias gradient reduces the output gradient (200 B read, one kernel). Fused into the
    next kernel, the forward launches nothing."""
    assert bias_cost(100, dtype_bytes=2) == OpCost(0, 0, 400, 200)
    assert bias_cost(100, dtype_bytes=2, fused=True) == OpCost(0, 0, 0, 200, kernels_fwd=0)


def test_copy_runs_only_in_the_passes_that_copy() -> None:
    """100 elements at e = 2: a copy reads and writes each, 400 B, in one kernel."""
    assert copy_cost(100, dtype_bytes=2) == OpCost(0, 0, 400, 0, kernels_bwd=0)
    assert copy_cost(100, dtype_bytes=2, forward=False, backward=True) == OpCost(
        0, 0, 0, 400, kernels_fwd=0
    )


def test_softmax() -> None:
    assert softmax_cost(100, dtype_bytes=2) == OpCost(0, 0, 400, 600)


def test_dropout_mask_is_one_byte_per_element() -> None:
    """fwd read x (200 B), write y (200 B), write mask (100 B); bwd read mask, dy, write dx."""
    assert dropout_cost(100, dtype_bytes=2) == OpCost(0, 0, 500, 500)
    assert dropout_cost(100, dtype_bytes=4) == OpCost(0, 0, 900, 900)


def test_fused_bias_dropout_add_also_reads_the_residual() -> None:
    """fwd reads x and the residual (400 B), writes the sum and the mask (300 B); bwd is the
    dropout's: read dy and the mask, write dx (500 B)."""
    assert dropout_cost(100, dtype_bytes=2, residual=True) == OpCost(0, 0, 700, 500)


def test_elementwise_variants() -> None:
    """GeLU (1 input, saved), SwiGLU (2 inputs, saved), residual add (2 inputs, none saved)."""
    assert elementwise_cost(100, dtype_bytes=2) == OpCost(0, 0, 400, 600)
    assert elementwise_cost(100, dtype_bytes=2, num_inputs=2) == OpCost(0, 0, 600, 1000)
    assert elementwise_cost(100, dtype_bytes=2, num_inputs=2, num_saved=0) == OpCost(0, 0, 600, 600)
    fused = elementwise_cost(100, dtype_bytes=2, num_inputs=2, num_saved=0, fused_forward=True)
    assert fused == OpCost(0, 0, 0, 600, kernels_fwd=0)


def test_embedding() -> None:
    """Gather 10 rows of 8 at e = 2: read rows + write out 320 B; bwd dy + row update 480 B."""
    assert embedding_cost(10, 8, dtype_bytes=2) == OpCost(0, 0, 320, 480)


def test_loss_counts_the_passes_of_megatrons_vocab_parallel_cross_entropy() -> None:
    """10 × 50 logits at e = 2 (500 elements), bytes per element by kernel:

    forward: .float() 2 + 4, max 4, sub_ 4 + 4, exp 4 + 4, sum 4, div_ 4 + 4 = 38 → 19000 B;
    backward: mul_ 4 + 4, the upcast's backward 4 + 2 = 14 → 7000 B.
    In fp32 training there is no upcast: forward 32 → 16000 B, backward 8 → 4000 B.
    """
    assert loss_cost(10, 50, dtype_bytes=2) == OpCost(0, 0, 19000, 7000)
    assert loss_cost(10, 50, dtype_bytes=4) == OpCost(0, 0, 16000, 4000)


def test_make_op_fills_weight_bytes_and_gemm_flag() -> None:
    cost = matmul_cost(3, 5, 7, dtype_bytes=2, has_weight=True)
    op = make_op("fc", "matmul", cost, params=35, dtype_bytes=2, saved_bytes=30)
    assert op == Op(
        name="fc",
        kind="matmul",
        flop_fwd=210,
        flop_bwd=420,
        bytes_fwd=72,
        bytes_bwd=144,
        weight_bytes=70,
        params=35,
        saved_bytes=30,
        saved_bytes_selective=30,
        recompute_selective=False,
        is_gemm=True,
        gemm_shape=(1, 3, 5, 7),
        param_tensors=1,
    )
    norm = make_op("n", "norm", norm_cost(1, 8, dtype_bytes=2), params=16, dtype_bytes=2)
    assert not norm.is_gemm
    tied = make_op("head", "matmul", cost, params=0, dtype_bytes=2, weight_bytes=70)
    assert (tied.params, tied.weight_bytes) == (0, 70)


def test_make_op_rejects_an_unregistered_kind() -> None:
    with pytest.raises(AssertionError, match="unknown op kind 'conv'"):
        make_op("c", "conv", OpCost(0, 0, 0, 0), dtype_bytes=2)
