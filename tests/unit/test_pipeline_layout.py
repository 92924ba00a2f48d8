"""mapping.pipeline_layout: the layers of each model chunk, as Megatron-Core's
--pipeline-model-parallel-layout places them (Megatron-Bridge's DeepSeek-V3 and Kimi K2
recipes: 4 layers on every chunk but the last, which holds 1 beside the loss and MTP)."""

from __future__ import annotations

import dataclasses

import pytest

from palmsim.api import load_experiment
from palmsim.config.specs import MappingSpec
from palmsim.errors import MappingError
from palmsim.mapping.mapper import stage_layout
from palmsim.validate import read_training_run


def _costs() -> tuple[float, float, float]:
    return 1.0, 0.0, 0.0


def test_a_layout_places_each_chunks_layers() -> None:
    mapping = dataclasses.replace(MappingSpec(), pp=4, pipeline_layout=(4, 4, 4, 1))
    assert stage_layout(mapping, 13, 8, _costs).layer_ranges == ((0, 4), (4, 8), (8, 12), (12, 13))
    interleaved = dataclasses.replace(
        MappingSpec(), pp=2, virtual_stages=2, pipeline_layout=(3, 3, 3, 1)
    )
    # chunk c = j·pp + s: stage 0 runs chunks 0 and 2, stage 1 chunks 1 and 3
    assert stage_layout(interleaved, 10, 8, _costs).layer_ranges == (
        (0, 3), (3, 6), (6, 9), (9, 10),
    )  # fmt: skip


@pytest.mark.parametrize("layout", [(4, 4, 4), (4, 4, 4, 2)])
def test_a_layout_must_cover_the_chunks_and_the_layers(layout) -> None:
    mapping = dataclasses.replace(MappingSpec(), pp=4, pipeline_layout=layout)
    with pytest.raises(MappingError, match=r"pipeline_layout .* 4 entries summing to .* 13"):
        stage_layout(mapping, 13, 8, _costs)


def test_the_layout_is_a_mapping_key_and_a_case_key() -> None:
    exp = load_experiment(
        "dgx-h100", "llama2-7b", mapping_flags={"pp": 2, "pipeline_layout": [20, 12]}
    )
    assert exp.mapping.pipeline_layout == (20, 12)
    case = {
        "model": {"name": "Llama-2", "ffn": 11008, "layers": 32, "hidden": 4096, "heads": 32,
                  "seq_len": 4096, "global_batch": 8, "micro_batch": 1},
        "system": {"gpu": "H100", "num_gpus": 8, "tp": 1, "pp": 2, "dp": 4,
                   "pipeline_layout": [20, 12]},
        "training": {"precision": "bf16"},
        "measured": {"tokens_per_s_per_gpu": 1.0},
    }  # fmt: skip
    run = read_training_run(case, "x.yaml")
    assert run is not None and run.flags["pipeline_layout"] == [20, 12]
