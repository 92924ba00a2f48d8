"""Megatron-LM's --distribute-checkpointed-activations (``mapping.distribute_saved_activations``)
against closed forms derived by hand.

- Under full recompute a tile keeps each layer's input, ``e·b·s·h``; distributed over the
  ``t`` TP ranks it keeps ``e·b·s·h / t`` (CheckpointFunction's forward,
  ``split_tensor_into_1d_equal_chunks``).
- The backward all-gathers that input over the TP group before the layer's recompute: one TP
  all-gather of ``e·b·s·h`` a layer (``gather_split_1d_tensor``).
- Megatron-LM's checks: tp > 1, full recompute, no sequence parallelism.
"""

from __future__ import annotations

import pytest

from palmsim.api import load_experiment
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import CollectiveKind, CollectiveStep
from palmsim.validate import NotRun, read_training_run

LAYERS, TP = 4, 4


def _plan(**flags):
    exp = load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=(
            "hw.system.chips=[1, 8]", "training.global_batch_size=8",
            f"model.num_hidden_layers={LAYERS}",
        ),
        mapping_flags={
            "pp": 1, "dp": 1, "tp": TP, "micro_batch_size": 1, "recompute": "full", **flags,
        },
    )  # fmt: skip
    return exp, map_workload(exp, Chip.from_spec(exp.hardware))


def _layer_input_bytes(exp) -> float:
    """e·b·s·h: bf16, one sample of s tokens."""
    return 2 * 1 * exp.workload.training.seq_len * exp.workload.model.hidden_size


def test_each_tp_rank_keeps_a_tth_of_every_checkpoint() -> None:
    """pp = 1: one micro-batch is held at a time, so the activations differ by the layers'
    checkpoints less their 1/t share, L·e·b·s·h·(1 - 1/t); nothing else changes."""
    exp, whole = _plan()
    _, split = _plan(distribute_saved_activations=True)
    ((_, kept),), ((_, shared),) = whole.memory[:1], split.memory[:1]
    saved = LAYERS * _layer_input_bytes(exp) * (1 - 1 / TP)
    assert kept.activations - shared.activations == pytest.approx(saved, rel=1e-12)
    assert (kept.weights, kept.optimizer) == (shared.weights, shared.optimizer)


def test_each_layers_recompute_first_gathers_its_input() -> None:
    """The recompute pass gains one TP all-gather of e·b·s·h a layer (its other collectives,
    the forward's all-reduces re-run, are the same), and the forward pass none."""
    exp, whole = _plan()
    _, split = _plan(distribute_saved_activations=True)

    def gathers(plan, passes: str):
        steps = getattr(plan.programs[0], passes)
        return [
            st for st in steps
            if isinstance(st, CollectiveStep) and st.kind is CollectiveKind.ALLGATHER
        ]  # fmt: skip

    assert gathers(whole, "recompute") == []
    added = gathers(split, "recompute")
    assert len(added) == LAYERS
    assert all(st.size_bytes == pytest.approx(_layer_input_bytes(exp)) for st in added)
    assert gathers(split, "forward") == gathers(whole, "forward")


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        ({"tp": 1, "dp": 8}, "tp=1"),
        ({"recompute": "selective"}, "recompute=selective"),
        ({"sequence_parallel": True}, "sequence parallelism"),
    ],
)
def test_megatrons_checks(flags, why) -> None:
    with pytest.raises(MappingError, match=why):
        _plan(distribute_saved_activations=True, **flags)


def _case(tp: int, **training) -> dict:
    return {
        "id": "distributed",
        "model": {
            "layers": 24, "hidden": 2048, "heads": 16, "seq_len": 2048, "vocab": 51200,
            "global_batch": 64, "micro_batch": 1, "arch": "GPT",
        },
        "system": {"gpu": "A100-SXM4-80GB", "num_gpus": 8, "tp": tp, "pp": 1, "dp": 8 // tp},
        "training": {"precision": "fp16", **training},
        "measured": {"tflops_per_gpu": 100},
    }  # fmt: skip


def test_validate_reads_the_flag_under_any_of_its_names() -> None:
    """Megatron-LM's and metaseq's flag, Megatron-Core's name and DeepSpeed's option; a run
    that states it without recompute runs with full recompute, which the flag needs, and one
    TP rank has nothing to distribute."""
    for key in ("distribute_checkpointed_activations", "distribute_saved_activations",
                "partition_activations"):  # fmt: skip
        run = read_training_run(_case(2, **{key: True}), "file.yaml")
        assert run is not None
        assert run.flags.get("distribute_saved_activations") is True
        assert run.recompute == ("full",)
    run = read_training_run(_case(1, distribute_checkpointed_activations=True), "file.yaml")
    assert run is not None and "distribute_saved_activations" not in run.flags


def test_validate_runs_it_without_sequence_parallelism_and_with_full_recompute() -> None:
    """Unstated sequence parallelism is off beside it (Megatron-LM refuses the pair); a
    recompute other than full is not run, naming the key."""
    run = read_training_run(_case(2, partition_activations=True), "file.yaml")
    assert run is not None and run.flags["sequence_parallel"] is False
    with pytest.raises(NotRun, match=r"training\.partition_activations with activation_recompute"):
        read_training_run(
            _case(2, partition_activations=True, activation_recompute="selective"), "file.yaml"
        )
