"""model.parallel_block: attention and MLP side by side on the layer's input (GPT-J, PaLM,
GPT-NeoX, Falcon, MegaScale's parallel transformer block), against hand-derived counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from palmsim.api import simulate, summarize_result
from palmsim.config.loader import hf_to_model, load_workload
from palmsim.errors import ConfigError, MappingError
from palmsim.mapping.plan import CollectiveKind, CollectiveStep, GroupKind
from palmsim.workload.builders import (
    activation_bytes_per_layer,
    layer_blocks,
    model_flop_per_iteration,
    num_parameters,
)
from tests.analytic.test_inference import _exp, _run
from tests.analytic.test_workload_formulas import T_18B, training
from tests.conftest import cluster_spec, experiment, gpt_model, wafer_spec

BLOCKS = ("none", "one_norm", "two_norms")


def _model(block: str):
    return dataclasses.replace(T_18B[0], parallel_block=block)


@pytest.mark.parametrize("tp", [1, 8])
def test_activation_bytes_drop_the_copies_of_x_and_its_norm_the_mlp_shares(tp: int) -> None:
    """Korthikanti Table 2's 10·s·b·h of a layer's replicated tensors (e = 2, masks 1 B) are
    the attention's norm input 2, QKV input 2, dropout mask 1 and the MLP's norm input 2, fc1
    input 2, dropout mask 1. With one norm the MLP's norm and its fc1's input are the
    attention's (-4); with two norms its norm input is x, which the attention's norm keeps
    (-2). Sequence parallelism splits all ten over t: (34 - 4)/t and (34 - 2)/t."""
    b, s, h, a = 2, 2048, 6144, 48
    train = training(1024)
    attention = 5 * a * s / (h * tp)
    for block, shared in (("none", 0), ("one_norm", 4), ("two_norms", 2)):
        model = _model(block)
        got = activation_bytes_per_layer(model, train, b, tp, "none")
        assert got == pytest.approx(s * b * h * (10 - shared + 24 / tp + attention), rel=1e-12)
        got = activation_bytes_per_layer(model, train, b, tp, "selective", sequence_parallel=True)
        assert got == pytest.approx(s * b * h * (34 - shared) / tp, rel=1e-12)


def test_one_norm_drops_a_layernorm_and_the_flop_stay() -> None:
    """One LayerNorm (gain and bias, 2h) fewer per layer; the same GEMMs, so the same model
    FLOP (Korthikanti Eq. 7 does not depend on the block's order)."""
    model, batch = T_18B
    h, layers = model.hidden_size, model.num_hidden_layers
    base = num_parameters(_model("none"))
    assert num_parameters(_model("one_norm")) == base - 2 * h * layers
    assert num_parameters(_model("two_norms")) == base
    flop = {b: model_flop_per_iteration(_model(b), training(batch)) for b in BLOCKS}
    assert flop["one_norm"] == flop["none"] == flop["two_norms"]


def test_the_partial_sums_are_added_before_the_one_reduction() -> None:
    """The MLP adds the attention's partial output to its own on the whole b·s·h (3 e b s h
    bytes: two read, one written) before the reduction; the residual add after it runs on a
    sequence shard; the attention keeps no residual add. (Without residual dropout: with it
    the fused bias-dropout-add does the first add.)"""
    b, s, h, t = 2, 2048, 6144, 8
    model = dataclasses.replace(_model("one_norm"), hidden_dropout=0.0)
    attn, mlp = layer_blocks(model, training(1024), b, t, sequence_parallel=True)
    assert "attn_residual" not in attn.op_names and "norm2" not in mlp.op_names
    assert mlp.op_names[-2:] == ("branch_add", "mlp_residual")
    e = 2
    assert mlp.op("branch_add").bytes_fwd == pytest.approx(3 * e * b * s * h, rel=1e-12)
    assert mlp.op("mlp_residual").bytes_fwd == pytest.approx(3 * e * b * s * h / t, rel=1e-12)
    assert (attn.allreduce_fwd_bytes, mlp.allreduce_bwd_bytes) == (0.0, 0.0)
    assert attn.allreduce_bwd_bytes == mlp.allreduce_fwd_bytes == e * b * s * h


def _tp_collectives(steps, layer: int) -> list[CollectiveKind]:
    return [
        s.kind
        for s in steps
        if isinstance(s, CollectiveStep) and s.group is GroupKind.TP and s.layer == layer
    ]


@pytest.mark.parametrize("sequence_parallel", [False, True])
def test_a_layer_reduces_once_forward_and_once_backward(sequence_parallel: bool) -> None:
    """Serial: an all-reduce after each block's forward and backward (Shoeybi et al. 2019,
    Fig. 3's g and f), four a layer; parallel: one each way (GPT-NeoX's single reduce of
    the summed branches), each a reduce-scatter and an all-gather under sequence parallelism."""
    got = {}
    for block in ("none", "one_norm"):
        model = dataclasses.replace(gpt_model(), parallel_block=block)
        exp = experiment(
            cluster_spec(nodes=1), model, pp=1, tp=4, dp=1, micro_batch_size=2, batch=2,
            sequence_parallel=sequence_parallel,
        )  # fmt: skip
        program = simulate(exp).plan.programs[0]
        got[block] = (_tp_collectives(program.forward, 1), _tp_collectives(program.backward, 1))
    per = 2 if sequence_parallel else 1
    assert [len(x) for x in got["none"]] == [2 * per, 2 * per]
    assert [len(x) for x in got["one_norm"]] == [per, per]


def test_the_layers_move_half_the_tp_bytes() -> None:
    """A serial layer all-reduces four times per micro-batch, a parallel one twice; the
    embedding's and the head's all-reduces do not change. Twice the serial layers add
    4·L·m all-reduces; the parallel layers leave out half that many."""

    def tp_bytes(layers: int, block: str) -> float:
        model = dataclasses.replace(gpt_model(layers=layers), parallel_block=block)
        exp = experiment(
            cluster_spec(nodes=1), model, pp=1, tp=4, dp=1, micro_batch_size=2, batch=4
        )
        return summarize_result(simulate(exp))["communication_bytes_by_category"]["tp_allreduce"]

    serial, doubled = tp_bytes(4, "none"), tp_bytes(8, "none")
    four_layers = doubled - serial  # 4 layers x 2 micro-batches x 4 all-reduces
    assert tp_bytes(4, "two_norms") == pytest.approx(serial - four_layers / 2, rel=1e-12)


def test_an_inference_pass_reduces_once_a_layer() -> None:
    """A prefill on 4 tiles of a wafer: one TP all-reduce a layer in place of two."""
    hw = wafer_spec(dies=(1, 1), tiles=(2, 2), dram_placement="per_tile")
    counts = {}
    for block in ("none", "one_norm"):
        model = dataclasses.replace(gpt_model(layers=2), parallel_block=block)
        plan, _, _ = _run(_exp(hw, model, prompt=64, output=1, batch=1, tp=4))
        steps = plan.programs[0].forward
        counts[block] = sum(
            1 for s in steps if isinstance(s, CollectiveStep) and s.kind is CollectiveKind.ALLREDUCE
        )
    layers = 2
    assert counts["none"] - counts["one_norm"] == layers


def test_2d_tensor_parallelism_refuses_it() -> None:
    hw = wafer_spec(dies=(1, 1), tiles=(2, 2), dram_placement="per_tile")
    model = dataclasses.replace(gpt_model(layers=2), parallel_block="one_norm")
    with pytest.raises(MappingError, match="parallel_block"):
        _run(_exp(hw, model, prompt=64, output=1, batch=1, tp=4, tp_2d=(2, 2)))


def _hf(tmp_path: Path, config: dict) -> dict:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    model, problems = hf_to_model(config, str(path))
    assert problems == []
    return model


FALCON_7B = {  # tiiuae/falcon-7b config.json (its keys; HF FalconConfig fills the rest)
    "model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71,
    "num_hidden_layers": 32, "vocab_size": 65024, "multi_query": True, "parallel_attn": True,
    "new_decoder_architecture": False, "bias": False, "alibi": False,
    "layer_norm_epsilon": 1e-5,
}  # fmt: skip
FALCON_40B = {  # tiiuae/falcon-40b
    "model_type": "falcon", "hidden_size": 8192, "num_attention_heads": 128, "num_kv_heads": 8,
    "num_hidden_layers": 60, "vocab_size": 65024, "new_decoder_architecture": True,
    "parallel_attn": True, "bias": False, "alibi": False, "layer_norm_epsilon": 1e-5,
}  # fmt: skip
PYTHIA_12B = {  # EleutherAI/pythia-12b
    "model_type": "gpt_neox", "hidden_size": 5120, "intermediate_size": 20480,
    "num_attention_heads": 40, "num_hidden_layers": 36, "vocab_size": 50688,
    "max_position_embeddings": 2048, "hidden_act": "gelu", "rotary_pct": 0.25,
    "use_parallel_residual": True, "layer_norm_eps": 1e-5, "tie_word_embeddings": False,
}  # fmt: skip


def test_falcon_configs_read_their_heads_and_blocks(tmp_path: Path) -> None:
    """Falcon-7B: multi-query (one KV head), one norm into both branches, rotary, no biases,
    4h MLP, 2048 positions (FalconConfig's defaults); Falcon-40B: the new decoder
    architecture's 8 KV heads and its two norms."""
    small = _hf(tmp_path, FALCON_7B)
    assert small["num_key_value_heads"] == 1
    assert small["parallel_block"] == "one_norm"
    assert (small["position_embedding"], small["use_bias"], small["norm"]) == (
        "rope",
        False,
        "layernorm",
    )
    assert small["max_position_embeddings"] == 2048 and small["hidden_act"] == "gelu"
    big = _hf(tmp_path, FALCON_40B)
    assert (big["num_key_value_heads"], big["parallel_block"]) == (8, "two_norms")
    serial = _hf(tmp_path, {**FALCON_7B, "parallel_attn": False, "multi_query": False})
    assert serial.get("parallel_block", "none") == "none"
    assert "num_key_value_heads" not in serial  # every head: the default


def test_gpt_neox_reads_its_parallel_residual(tmp_path: Path) -> None:
    model = _hf(tmp_path, PYTHIA_12B)
    assert (model["parallel_block"], model["position_embedding"], model["use_bias"]) == (
        "two_norms",
        "rope",
        True,
    )
    serial = _hf(tmp_path, {**PYTHIA_12B, "use_parallel_residual": False})
    assert serial.get("parallel_block", "none") == "none"


def test_a_bad_block_and_a_moe_block_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "falcon-7b.json"
    path.write_text(json.dumps(FALCON_7B))
    base = ["training.seq_len=128", "training.global_batch_size=8"]
    with pytest.raises(ConfigError, match="did you mean 'one_norm'"):
        load_workload(path, [*base, "model.parallel_block=one_nrm"])
    with pytest.raises(ConfigError, match=r"parallel_block.*mixture-of-experts"):
        load_workload(path, [*base, "model.num_experts=8", "model.num_experts_per_tok=2"])


def test_a_serving_iteration_reduces_once_a_layer() -> None:
    """palmsim serve on an n300's two chips: a parallel layer's attention hands its partial
    sums to the MLP, whose all-reduce is the layer's one (its size unchanged)."""
    from palmsim.config.loader import load_hardware
    from palmsim.config.specs import TrafficSpec
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.serving import batch_shape, map_serving
    from tests.serving.helpers import serving_spec

    hw = load_hardware("hw_configs/wormhole-n300.yaml")
    traffic = TrafficSpec("poisson", num_requests=1)
    spec = dataclasses.replace(serving_spec(traffic), tp=2, trace="all")
    reduces = {}
    for block in ("none", "one_norm"):
        model = dataclasses.replace(
            gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=4096), parallel_block=block
        )
        plan = map_serving(spec, hw, model, Chip.from_spec(hw))
        segments = plan.segments(batch_shape([(1, 64, 1)]), 0)
        reduces[block] = sorted(
            (kind, step.size_bytes, repeats)
            for kind, steps, repeats in segments
            for step in steps
            if isinstance(step, CollectiveStep)
        )
    assert ("attn", 32 * 256 * 2, 2) in reduces["none"]
    assert reduces["one_norm"] == [r for r in reduces["none"] if r[0] != "attn"]


def test_recomputing_the_mlp_module_leaves_the_branch_sum_outside() -> None:
    """Megatron-Core's ``mlp`` module is fc1 through fc2 and its bias; the bias-dropout-add
    and the adds after it (here the branch sum and the residual) stay outside it."""
    from palmsim.workload.recompute import recomputed_ops

    _, mlp = layer_blocks(_model("two_norms"), training(1024), 1, 8)
    names = [op.name for op in recomputed_ops(mlp, ["mlp"])]
    assert names == ["fc1", "fc1_bias", "gelu", "fc2", "fc2_bias"]
