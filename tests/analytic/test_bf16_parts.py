"""Parts of an fp8 run kept in bf16, as Megatron-Core keeps them: the first and last layers
(--first-last-layers-bf16), single linears (a Transformer Engine quantization recipe) and
the multi-token-prediction block (keep_mtp_spec_in_bf16)."""

from __future__ import annotations

from palmsim.api import load_experiment
from palmsim.mapping.batch import training_batch
from palmsim.mapping.mapper import _model
from palmsim.validate import _bf16_parts


def _fp8_ops_by_layer(*overrides: str) -> dict[int, set[str]]:
    """Each layer's fp8 linears in the blocks the mapper lowers."""
    exp = load_experiment(
        "dgx-h100", "llama2-7b",
        overrides=("training.dtype=fp8", "training.global_batch_size=8", *overrides),
        mapping_flags={"pp": 1, "tp": 1, "dp": 8, "micro_batch_size": 1},
    )  # fmt: skip
    layers = _model(exp, training_batch(exp)).layers
    return {
        i: {op.name for b in blocks for op in b.ops if op.fp8} for i, blocks in enumerate(layers)
    }


def test_first_and_last_layers_and_single_linears_stay_bf16() -> None:
    everything = {"qkv", "out_proj", "fc1", "fc2"}
    plain = _fp8_ops_by_layer()
    assert all(ops == everything for ops in plain.values())
    ends = _fp8_ops_by_layer("training.bf16_layers_at_start=1", "training.bf16_layers_at_end=2")
    assert [i for i, ops in ends.items() if not ops] == [0, 30, 31]
    assert ends[1] == everything
    linears = _fp8_ops_by_layer("training.bf16_linears=qkv,out_proj")
    assert all(ops == {"fc1", "fc2"} for ops in linears.values())


def test_validate_reads_megatron_cores_names() -> None:
    assert _bf16_parts({}) == []
    assert _bf16_parts({"first_last_layers_bf16": True}) == [
        "training.bf16_layers_at_start=1", "training.bf16_layers_at_end=1",
    ]  # fmt: skip
    assert _bf16_parts(
        {
            "first_last_layers_bf16": True,
            "num_layers_at_start_in_bf16": 0,
            "num_layers_at_end_in_bf16": 14,
            "keep_mtp_spec_in_bf16": True,
            "bf16_linears": ["qkv", "out_proj"],
        }
    ) == [
        "training.bf16_layers_at_start=0", "training.bf16_layers_at_end=14",
        "training.mtp_in_bf16=true", "training.bf16_linears=qkv,out_proj",
    ]  # fmt: skip
