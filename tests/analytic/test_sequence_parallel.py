"""Sequence parallelism (Korthikanti et al. 2022, Sec 4.2.2) against its closed forms."""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.api import simulate, summarize_result
from palmsim.workload.builders import activation_bytes_per_layer
from tests.analytic.test_workload_formulas import T_18B, training
from tests.conftest import cluster_spec, experiment


@pytest.mark.parametrize("tp", [2, 8])
def test_activation_bytes_are_korthikanti_table_2_with_sequence_parallelism(tp: int) -> None:
    """T-18B fp16, b = 2: tensor+sequence parallel s·b·h·(34/t + 5·a·s/(h·t)); with
    selective recompute s·b·h·34/t."""
    model, b, s, h, a, t = T_18B[0], 2, 2048, 6144, 48, tp
    train = training(1024)
    got = activation_bytes_per_layer(model, train, b, t, "none", sequence_parallel=True)
    assert got == pytest.approx(s * b * h * (34 / t + 5 * a * s / (h * t)), rel=1e-12)
    got = activation_bytes_per_layer(model, train, b, t, "selective", sequence_parallel=True)
    assert got == pytest.approx(s * b * h * 34 / t, rel=1e-12)


def test_sequence_parallelism_moves_the_bytes_of_the_all_reduces_it_replaces() -> None:
    """Each all-reduce of S becomes a reduce-scatter and an all-gather of S: on a ring of t,
    2(t-1)/t·S per edge either way, so every link carries the same TP bytes."""
    base = experiment(cluster_spec(nodes=1), pp=1, tp=8, dp=1, micro_batch_size=2, batch=4)
    sp = dataclasses.replace(
        base, mapping=dataclasses.replace(base.mapping, sequence_parallel=True)
    )
    plain = summarize_result(simulate(base))["communication_bytes_by_category"]
    split = summarize_result(simulate(sp))["communication_bytes_by_category"]
    assert "tp_allreduce" not in split
    assert split["tp_reducescatter"] == pytest.approx(plain["tp_allreduce"] / 2, rel=1e-12)
    assert split["tp_allgather"] == pytest.approx(plain["tp_allreduce"] / 2, rel=1e-12)


def test_sequence_parallelism_without_tensor_parallelism_changes_nothing() -> None:
    base = experiment(cluster_spec(nodes=1), pp=2, tp=1, dp=1, micro_batch_size=2, batch=4)
    sp = dataclasses.replace(
        base, mapping=dataclasses.replace(base.mapping, sequence_parallel=True)
    )
    assert simulate(sp).trace.end_time_s == simulate(base).trace.end_time_s
