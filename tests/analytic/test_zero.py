"""ZeRO stages 1-3 (Rajbhandari et al. SC20, Sec. 5 and 7) against their closed forms.

One pipeline stage, no tensor parallelism, DP over n = 4 GPUs of one node, m micro-batches:
every ring collective of S bytes over n ranks moves (n-1)·S bytes in all for an all-gather
or a reduce-scatter, and 2(n-1)·S for an all-reduce.
"""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.api import simulate, summarize_result
from palmsim.config.specs import DTYPE_BYTES
from palmsim.mapping.memory import optimizer_state_bytes_per_param
from palmsim.workload.builders import num_parameters
from tests.conftest import cluster_spec, experiment

N, M = 4, 3  # DP ranks, micro-batches per replica


def _run(zero: int) -> tuple[dict, object]:
    exp = experiment(cluster_spec(nodes=1), pp=1, tp=1, dp=N, micro_batch_size=2, batch=2 * N * M)
    exp = dataclasses.replace(exp, mapping=dataclasses.replace(exp.mapping, zero=zero))
    result = simulate(exp)
    return summarize_result(result), result


def _param_bytes(result) -> float:
    model = result.experiment.workload.model
    return num_parameters(model) * DTYPE_BYTES["fp16"]


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_dp_traffic_per_zero_stage(zero: int) -> None:
    summary, result = _run(zero)
    psi = _param_bytes(result)
    moved = summary["communication_bytes_by_category"]
    expected = {
        # plain DP: one all-reduce of the gradients per iteration
        0: {"dp_allreduce": 2 * (N - 1) * psi},
        # ZeRO-1: reduce-scatter the gradients once, all-gather the updated weights once
        1: {"dp_reducescatter": (N - 1) * psi, "dp_allgather": (N - 1) * psi},
        # ZeRO-2: the gradient shard is reduced after every micro-batch's backward
        2: {"dp_reducescatter": M * (N - 1) * psi, "dp_allgather": (N - 1) * psi},
        # ZeRO-3: two all-gathers of the weights per micro-batch (forward and backward)
        3: {"dp_reducescatter": M * (N - 1) * psi, "dp_allgather": 2 * M * (N - 1) * psi},
    }[zero]
    got = {k: v for k, v in moved.items() if k.startswith("dp_")}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_memory_per_zero_stage(zero: int) -> None:
    summary, result = _run(zero)
    params = num_parameters(result.experiment.workload.model)
    e = DTYPE_BYTES["fp16"]
    state = optimizer_state_bytes_per_param("adam", "fp16")  # 12 B: fp32 master + 2 moments
    breakdown = summary["memory_breakdown_bytes"]
    assert breakdown["optimizer"] == pytest.approx(
        params * state / (N if zero >= 1 else 1), rel=1e-12
    )
    assert breakdown["gradients"] == pytest.approx(params * e / (N if zero >= 2 else 1), rel=1e-12)
    if zero < 3:
        assert breakdown["weights"] == pytest.approx(params * e, rel=1e-12)
    else:  # the shard plus one gathered layer, 12h² + 13h parameters (Megatron Eq. 2)
        h = result.experiment.workload.model.hidden_size
        layer = 12 * h * h + 13 * h
        assert breakdown["weights"] == pytest.approx(params * e / N + layer * e, rel=1e-12)


def test_zero_without_data_parallelism_changes_nothing() -> None:
    base = experiment(cluster_spec(nodes=1), pp=2, tp=2, dp=1, micro_batch_size=2, batch=4)
    zero3 = dataclasses.replace(base, mapping=dataclasses.replace(base.mapping, zero=3))
    assert simulate(zero3).trace.end_time_s == simulate(base).trace.end_time_s
