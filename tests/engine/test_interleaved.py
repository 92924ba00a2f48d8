"""Interleaved 1F1B (Narayanan et al. SC21, Sec. 2.2.2) against its closed form."""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.engine.simulator import Simulator
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import StageProgram
from palmsim.mapping.schedule import interleaved_one_f_one_b
from tests.conftest import cluster_spec, experiment
from tests.engine.test_simulator import RingChip, _compute, _plan


def _interleaved(p: int, m: int, v: int, tf: float, tb: float, act: float = 0.0):
    """p stages of v chunks; every chunk runs 1/v of a stage's forward and backward."""
    programs = []
    for c in range(p * v):
        s = c % p
        steps, chunks = interleaved_one_f_one_b(p, m, s, v)
        programs.append(
            StageProgram(
                stage=c,
                layers=(c, c + 1),
                forward=(_compute(f"f{c}", tf / v),),
                backward=(_compute(f"b{c}", tb / v),),
                recompute=(),
                activation_bytes_per_microbatch=act,
                send_bytes=0.0,
                optimizer=_compute("opt", 0.0),
                steps=steps,
                step_chunks=chunks,
            )
        )
    return _plan(programs, (tuple((s,) for s in range(p)),), m, schedule="1f1b")


@pytest.mark.parametrize(("p", "m", "v"), [(2, 4, 2), (4, 8, 2), (4, 8, 4), (3, 6, 3), (4, 4, 2)])
def test_interleaving_shrinks_the_bubble_to_p_minus_1_over_v(p: int, m: int, v: int) -> None:
    """Free communication, uniform chunks: m·(t_f + t_b) of work plus a bubble of
    (p - 1)/v micro-batch slots, i.e. (p - 1)/(v·m) of the ideal time."""
    tf, tb = 1.0, 2.0
    trace = Simulator(RingChip(p, 1e9, 0.0), _interleaved(p, m, v, tf, tb)).run()
    ideal = m * (tf + tb)
    assert trace.end_time_s == pytest.approx(ideal * (1 + (p - 1) / (v * m)), rel=1e-12)
    # every chunk of every stage ran every micro-batch forward and backward once
    assert len([r for r in trace.intervals if r.category == "forward"]) == p * v * m
    assert len([r for r in trace.intervals if r.category == "backward"]) == p * v * m


def test_schedule_runs_each_chunk_and_microbatch_once_forward_before_backward() -> None:
    p, m, v = 4, 8, 2
    for s in range(p):
        steps, chunks = interleaved_one_f_one_b(p, m, s, v)
        runs = list(zip(steps, chunks, strict=True))
        for phase in "FB":
            done = sorted((mb, c) for (ph, mb), c in runs if ph == phase)
            assert done == sorted((mb, c) for mb in range(m) for c in range(v))
        for mb in range(m):
            for c in range(v):
                assert runs.index((("F", mb), c)) < runs.index((("B", mb), c))


def _mapping(**changes):
    base = experiment(cluster_spec(nodes=1), pp=2, tp=2, dp=1, micro_batch_size=1, batch=4)
    return dataclasses.replace(base, mapping=dataclasses.replace(base.mapping, **changes))


def test_mapper_splits_layers_over_p_times_v_virtual_stages() -> None:
    exp = _mapping(virtual_stages=2)
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    assert plan.num_stages == 2 and plan.num_virtual_stages == 4
    # 4 layers over 4 virtual stages; chunk j of stage s is virtual stage j·p + s
    assert [prog.layers for prog in plan.programs] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert plan.programs[0].step_chunks == plan.programs[2].step_chunks


def test_more_chunks_than_layers_count_the_embedding_and_loss_as_layers() -> None:
    """4 layers on 2 stages x 3 chunks = 6 chunks: the embedding's chunk and the loss's hold
    no layer (Megatron-Core's account_for_*_in_pipeline_split); 8 chunks cannot be filled."""
    exp = _mapping(virtual_stages=3)
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    assert [prog.layers for prog in plan.programs] == [
        (0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (4, 4)
    ]  # fmt: skip
    exp = _mapping(virtual_stages=4)
    chip = Chip.from_spec(exp.hardware)
    with pytest.raises(MappingError, match=r"8 model chunks .* 4 layers and its embedding"):
        map_workload(exp, chip)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"virtual_stages": 2, "schedule": "gpipe"}, "needs the 1f1b schedule"),
        ({"virtual_stages": 2, "micro_batch_size": 4}, r"micro-batches \(1\) divisible"),
    ],
)
def test_infeasible_interleaving_says_why(changes: dict, reason: str) -> None:
    exp = _mapping(**changes)
    with pytest.raises(MappingError, match=reason):
        map_workload(exp, Chip.from_spec(exp.hardware))
