"""``palmsim validate`` takes any published run in the measurements format (issue 15 item 4,
issue 18): no traceback from a case, each case isolated, facts derived, assumptions marked."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

import palmsim.validate as validate_module
from palmsim.api import load_experiment, simulate
from palmsim.cli import main
from palmsim.validate import (
    NotRun,
    _canonical_figures,
    forward_pass_s,
    read_training_run,
    validate,
)

# A small GPT that simulates in well under a second: 2 layers, hidden 1024, 8 A100s.
SMALL = {
    "model": {
        "layers": 2,
        "hidden": 1024,
        "heads": 16,
        "seq_len": 1024,
        "vocab": 51200,
        "global_batch": 8,
        "micro_batch": 1,
    },
    "system": {"gpu": "A100-SXM4-80GB", "num_gpus": 8, "tp": 8, "pp": 1, "dp": 1},
    "training": {"precision": "bf16", "activation_recompute": "none", "sequence_parallel": False},
    "measured": {"tflops_per_gpu": 100.0},
}


def _case(**changes: dict) -> dict:
    case = {k: dict(v) for k, v in SMALL.items()}
    for section, fields in changes.items():
        for key, value in fields.items():
            if value is ...:
                case[section].pop(key)
            else:
                case[section][key] = value
    return case


def _write(tmp_path: Path, cases: list) -> str:
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"cases": cases}))
    return str(path)


def test_missing_and_null_fields_give_one_line_reasons_and_the_rest_runs(tmp_path: Path) -> None:
    """The issue's two tracebacks: a missing key (KeyError) and a null (TypeError)."""
    cases = [
        {"id": "missing_heads", **_case(model={"heads": ...})},
        {"id": "null_hidden", **_case(model={"hidden": None})},
        {
            "id": "null_system",
            **{**_case(), "system": {"gpu": "A100", "tp": None, "pp": 1, "dp": None}},
        },
        {"id": "text_layers", **_case(model={"layers": "two"})},
        "not a case at all",
        {"id": "fine", **_case()},
    ]
    report = validate(_write(tmp_path, cases))
    reasons = {s.case: s.reason for s in report.skipped}
    assert reasons["missing_heads"] == (
        "model.heads: missing or null; expected a whole number >= 1"
    )
    assert reasons["null_hidden"].startswith("model.hidden: missing or null")
    assert reasons["text_layers"] == "model.layers: got 'two'; expected a whole number >= 1"
    assert "#4" in reasons
    assert all("\n" not in r for r in reasons.values())
    # tp and dp null: taken as unstated (tp 1 assumed, dp 1 as no num_gpus says otherwise)
    assert [c.case for c in report.comparisons] == ["null_system", "fine"]
    assumed = {a.key for case, a in report.assumptions if case == "null_system"}
    assert {"system.tp", "system.dp"} <= assumed


def test_derived_facts() -> None:
    """nodes = ceil(num_gpus / 8) on a DGX; dp = num_gpus / (tp·pp); ffn = 4·hidden (GPT)."""
    case = _case(system={"num_gpus": 32, "dp": ...})
    run = read_training_run(case, "x.yaml")
    assert run is not None
    assert run.flags["dp"] == 4
    assert "hw.system.chips=[4, 8]" in run.overrides
    assert "model.intermediate_size=4096" in run.overrides
    # derived, not assumed; unstated are the TP overlap (an undated run: on), Megatron-LM's
    # DP reduction after the backward (an A100 run with dp = 4 and no framework named), its
    # gradient accumulation (undated: fused into the weight-gradient GEMMs), and the
    # optimizer sharding: tried without ZeRO, then with the distributed optimizer (the
    # assumption is recorded when one fits)
    keys = [a.key for a in run.assumptions]
    assert keys == [
        "training.tp_overlap",
        "training.overlap_grad_reduce",
        "training.gradient_accumulation_fusion",
    ]
    assert run.flags["dp_overlap"] is False and run.zero == (0, 1)
    odd = read_training_run(_case(system={"num_gpus": 12, "tp": 4, "dp": 3}), "x.yaml")
    assert odd is not None and "hw.system.chips=[2, 8]" in odd.overrides  # 12 GPUs: 2 nodes


def test_gpu_matched_by_family_and_named() -> None:
    for gpu, config in (
        ("NVIDIA Ampere (A100-class)", "dgx-a100.yaml"),
        ("H100 SXM5", "dgx-h100.yaml"),
        ("NVIDIA H200-SXM-141GB (Hopper)", "dgx-h200.yaml"),  # the family before the architecture
        ("2048 NVIDIA H800 GPUs", "dgx-h800.yaml"),
        ("nvidia a100 40gb", "dgx-a100.yaml"),
        # only the architecture: its data-centre training GPU, and the output says so
        ("NVIDIA Ampere GPUs", "dgx-a100.yaml"),
        ("Hopper", "dgx-h100.yaml"),
        ("NVIDIA Blackwell", "dgx-b200.yaml"),
        ("GB200 NVL72", "dgx-gb200.yaml"),  # a GB200's GPU, not a B200's
        ("DGX-GB300", "dgx-gb300.yaml"),
        ("DGX-B300", "dgx-b300.yaml"),  # a B300, not a GB300's GPU nor a B200
        ("DGXH100", "dgx-h100.yaml"),  # MLPerf's system names run the prefix in
        ("8xH100-SXM5-80GB", "dgx-h100.yaml"),
    ):
        run = read_training_run(_case(system={"gpu": gpu}), "x.yaml")
        assert run is not None and run.hardware.endswith(config)
        assert gpu in run.hardware_why
    # a named cluster of the family: its own config (Selene's measured fabric); not another's
    selene = {"gpu": "A100-SXM4-80GB", "interconnect": "Selene (DGX A100 SuperPOD): 8x HDR"}
    run = read_training_run(_case(system=selene), "x.yaml")
    assert run is not None and run.hardware.endswith("dgx-a100-superpod.yaml")
    assert "on Selene" in run.hardware_why
    run = read_training_run(_case(system={**selene, "gpu": "H100"}), "x.yaml")
    assert run is not None and run.hardware.endswith("dgx-h100.yaml")
    run = read_training_run(_case(system={"gpu": "NVIDIA Ampere GPUs"}), "x.yaml")
    assert run is not None and "architecture" in run.hardware_why and "A100" in run.hardware_why
    # an NVL72 rack is one 72-GPU NVLink domain: 64 GPUs take one
    rack = read_training_run(_case(system={"gpu": "GB200", "num_gpus": 64, "dp": 8}), "x.yaml")
    assert rack is not None and "hw.system.chips=[1, 72]" in rack.overrides
    with pytest.raises(NotRun, match=r"system\.gpu: got 'MI300X'.*system\.hw_config"):
        read_training_run(_case(system={"gpu": "MI300X"}), "x.yaml")


@pytest.mark.parametrize(
    ("gpu", "interconnect", "gbps"),
    [
        # a rate per GPU (Llama 3's RoCE); Jean Zay's four links a node shared by its 8 GPUs
        ("A100", "RoCE, 400 Gbps per GPU, 3-layer Clos (pods of 3,072 GPUs)", 400),
        ("A100", "Jean Zay: 8 A100 80GB per node, 4 Omni-Path 100 Gbps links per node", 50),
        ("A100", "NVSwitch, InfiniBand 8x400 Gbit/s", 400),  # as many NICs as GPUs: one each
        ("H100", "8x 200 Gb/s HDR per node", 200),
        # the config's own line rate, NVLink bytes (GB/s), a rate with no scope: no override
        ("A100", "Selene: 8x Mellanox HDR 200 Gb/s InfiniBand HCAs per node", None),
        ("H100", "DGX H100: 8x ConnectX-7 400 Gb/s NDR InfiniBand per node", None),
        ("A100", "NVLink3 12 links (300 GB/s/dir), NVSwitch gen2", None),
        ("A100", "HDR 100 Gb/s", None),
        ("A100", "0 Gbps per GPU", None),
    ],
)
def test_the_nic_rate_a_case_states_is_its_line_rate(gpu: str, interconnect: str, gbps) -> None:
    """The stated NIC rate replaces the config's line rate; the fabric's measured share of it
    (system.node_link.efficiency) stays the config's, an assumption on the figures."""
    run = read_training_run(_case(system={"gpu": gpu, "interconnect": interconnect}), "x.yaml")
    assert run is not None
    nic = [o for o in run.overrides if o.startswith("hw.system.node_link.")]
    assumed = [a for a in run.assumptions if a.key == "hw.system.node_link.bandwidth"]
    if gbps is None:
        assert nic == [] and assumed == []
    else:
        assert nic == [f"hw.system.node_link.bandwidth={gbps} Gb/s"]
        assert len(assumed) == 1 and "efficiency" in assumed[0].why


def test_llama_needs_ffn_gpt_does_not() -> None:
    with pytest.raises(NotRun, match=r"model\.ffn: missing or null; a llama model has no default"):
        read_training_run(_case(model={"arch": "Llama-2"}), "x.yaml")
    assert read_training_run(_case(model={"arch": "Llama-2", "ffn": 2816}), "x.yaml")


def test_nemotron4_runs_over_its_own_layer_and_nemotron_h_over_nemotron_3_nano() -> None:
    """Nemotron-4 (NeMo's and DGX Cloud's Nemotron rows): LayerNorm, RoPE, squared ReLU of 4h,
    no biases, over workloads/nemotron4-15b.yaml; Llama-based Nemotrons are Llamas; the hybrid
    Mamba Nemotron-H over Nemotron 3 Nano's config (or the case's hf_config), Nemotron 3
    Super over its own; plain Mamba models are listed as not run with why."""
    run = read_training_run(_case(model={"name": "Nemotron4-340B", "kv_heads": 8}), "x.yaml")
    assert run is not None and run.workload.endswith("nemotron4-15b.yaml")
    assert "model.intermediate_size=4096" in run.overrides  # 4 x hidden 1024, derived
    llama = read_training_run(
        _case(model={"name": "Llama-3.1-Nemotron-70B", "ffn": 2816}), "x.yaml"
    )
    assert llama is not None and llama.workload.endswith("llama2-7b.yaml")
    for hybrid in ("Nemotron-H 56B", "Nemotron_3_Nano", "NVIDIA Nemotron 3 Nano 30B-A3B"):
        run = read_training_run(_case(model={"name": hybrid}), "x.yaml")
        assert run is not None and run.workload.endswith("nemotron-3-nano.yaml")
    super_ = read_training_run(_case(model={"name": "Nemotron 3 Super"}), "x.yaml")
    assert super_ is not None and super_.workload.endswith("nemotron-3-super.yaml")
    with pytest.raises(NotRun, match=r"Mamba state-space layers"):
        read_training_run(_case(model={"name": "Mamba-2 2.7B"}), "x.yaml")
    big = read_training_run(_case(model={"name": "Nemotron-4-340B", "kv_heads": 8}), "x.yaml")
    assert big is not None and big.workload.endswith("nemotron4-15b.yaml")  # not Nemotron 3
    for name, base in (("Llama 4 Maverick", "maverick"), ("LLAMA4_E16", "scout")):
        llama4 = read_training_run(_case(model={"name": name}), "x.yaml")
        assert llama4 is not None and llama4.workload.endswith(f"llama4-{base}.yaml")
    kimi = read_training_run(_case(model={"name": "Kimi_K2", "ffn": 18432}), "x.yaml")
    assert kimi is not None and kimi.workload.endswith("deepseek-v3.yaml")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"system": {"cp": 2}}, r"num_gpus = 8 but tp·pp·cp·dp = 8·1·2·1 = 16"),
        ({"system": {"num_gpus": 16}}, r"num_gpus = 16 but tp·pp·cp·dp = 8·1·1·1 = 8"),
        ({"training": {"expert_load": "zipf"}, "model": {"num_experts": 8}}, "expert_load"),
        ({"training": {"zero_stage": 4}}, "zero_stage: got 4"),
    ],
)
def test_features_not_modelled_are_listed(changes: dict, reason: str) -> None:
    with pytest.raises(NotRun, match=reason):
        read_training_run(_case(**changes), "x.yaml")


def test_gpt_oss_and_deepseek_cases_take_their_attention_from_their_workloads() -> None:
    """Issue 15: gpt-oss (matched before GPT) runs over workloads/gpt-oss-120b.yaml, whose
    banded layers and sinks the case does not restate; DeepSeek over its model.hf_config (MLA),
    its KV heads derived (every MLA head has its own key and value), not assumed."""
    oss = read_training_run(
        _case(model={"arch": "gpt-oss-120b (alternating banded/dense)", "ffn": 2880}), "x.yaml"
    )
    assert oss is not None and oss.workload.endswith("workloads/gpt-oss-120b.yaml")
    deepseek = read_training_run(
        _case(
            model={
                "arch": "DeepSeek-V3 (MLA)",
                "ffn": 18432,
                "hf_config": "workloads/hf/deepseek-v3.config.json",
            }
        ),
        "x.yaml",
    )
    assert deepseek is not None and deepseek.workload.endswith("hf/deepseek-v3.config.json")
    assert "model.kv_heads" not in {a.key for a in deepseek.assumptions}
    plain = read_training_run(_case(model={"arch": "DeepSeek-V3", "ffn": 18432}), "x.yaml")
    assert plain is not None and plain.workload.endswith("workloads/deepseek-v3.yaml")
    # DeepSeek's dense LLM is a Llama-style model, not MLA: not run rather than run as V3
    with pytest.raises(NotRun, match="unknown architecture"):
        read_training_run(_case(model={"arch": "DeepSeek LLM 67B", "ffn": 22016}), "x.yaml")


def test_gpt_oss_layer_pattern_follows_the_case_layers() -> None:
    """gpt-oss-20b has 24 layers: its sliding/full alternation is derived for them."""
    run = read_training_run(
        _case(model={"arch": "gpt-oss-20b", "ffn": 2880, "layers": 24, "head_dim": 64}), "x.yaml"
    )
    assert run is not None
    (types,) = [o for o in run.overrides if o.startswith("model.layer_types=")]
    assert types.count("sliding_attention") == types.count("full_attention") == 12
    assert types.startswith("model.layer_types=[sliding_attention, full_attention,")


def test_moe_expert_and_context_parallel_cases_are_built() -> None:
    """Issue 15: a Mixtral-style case with ep and cp becomes the MoE workload keys and the
    mapping's ep and cp; num_gpus counts tp·pp·cp·dp (Megatron-Core's grid), ep none."""
    case = _case(
        model={
            "arch": "Mixtral",
            "ffn": 4096,
            "kv_heads": 4,
            "num_experts": 8,
            "top_k": 2,
            "moe_ffn": 2048,
            "shared_experts": 1,
            "first_dense_layers": 1,
            "head_dim": 128,
        },
        system={"num_gpus": 32, "tp": 2, "pp": 2, "cp": 2, "dp": ..., "ep": 4},
        training={"token_drop": "dropless", "expert_load": "force-balanced"},
    )
    run = read_training_run(case, "x.yaml")
    assert run is not None
    assert run.workload.endswith("llama2-7b.yaml")  # the Llama family's layer
    assert (run.flags["dp"], run.flags["cp"], run.flags["ep"]) == (4, 2, 4)
    for expected in (
        "model.num_experts=8",
        "model.num_experts_per_tok=2",
        "model.moe_intermediate_size=2048",
        "model.num_shared_experts=1",
        "model.first_k_dense_replace=1",
        "model.attention_head_dim=128",
        "training.expert_load=multinomial",  # forced balancing routes on random logits
        "hw.system.chips=[4, 8]",
    ):
        assert expected in run.overrides
    assert not any("capacity" in o for o in run.overrides)  # dropless: no capacity


def test_ep_beyond_the_ranks_is_named_and_moe_with_tp_is_sequence_parallel() -> None:
    """tp 8, dp 1: ETP defaults to tp (Megatron-Core), so ep 2 needs 16 ranks of 8; with
    system.etp = 1 the EP group folds over the TP ranks (MoE parallel folding)."""
    moe = {"arch": "Qwen3-MoE", "ffn": 4096, "num_experts": 8, "top_k": 2}
    with pytest.raises(NotRun, match=r"expert_tp·ep = 8·2 does not divide tp·dp·cp = 8 .*etp"):
        read_training_run(_case(model=moe, system={"ep": 2}), "x.yaml")
    folded = read_training_run(_case(model=moe, system={"ep": 2, "etp": 1}), "x.yaml")
    assert folded is not None and (folded.flags["ep"], folded.flags["expert_tp"]) == (2, 1)
    unstated = _case(model=moe, training={"sequence_parallel": ...})  # tp = 8
    run = read_training_run(unstated, "x.yaml")
    assert run is not None and run.flags["sequence_parallel"] is True
    assert "training.sequence_parallel" not in [a.key for a in run.assumptions]


def test_an_h100_case_takes_the_megatron_core_stack_for_what_it_leaves_unstated() -> None:
    """The H100 config has fused-attention rates: an unstated attention is fused (TE), and
    with it sequence parallelism (tp > 1), the distributed optimizer and the interleaved
    pipeline's send overlap are on, as the NeMo / Megatron-Bridge recipes set them; each an
    assumption. The A100 case keeps Megatron-LM 2021's defaults and unfused attention."""
    case = _case(
        system={"gpu": "H100-SXM5-80GB", "num_gpus": 32, "tp": 2, "pp": 2, "dp": ...,
                "virtual_pipeline_stages": 2},
        training={"sequence_parallel": ...},
    )  # fmt: skip
    run = read_training_run(case, "x.yaml")
    assert run is not None
    assert "training.attention_kernel=fused" in run.overrides
    flags = run.flags
    assert (flags["sequence_parallel"], flags["zero"], flags["p2p_overlap"]) == (True, 1, True)
    assert flags["tp_comm_overlap"] is True
    keys = {a.key for a in run.assumptions}
    assert {
        "training.attention",
        "training.sequence_parallel",
        "training.distributed_optimizer",
        "training.overlap_p2p_comm",
        "training.tp_comm_overlap",
    } <= keys
    stated = _case(
        system={"gpu": "H100-SXM5-80GB", "num_gpus": 32, "tp": 2, "pp": 2, "dp": ...,
                "virtual_pipeline_stages": 2},
        training={"sequence_parallel": ..., "tp_comm_overlap": False},
    )  # fmt: skip
    run = read_training_run(stated, "x.yaml")
    assert run is not None and run.flags["tp_comm_overlap"] is False
    assert "training.tp_comm_overlap" not in {a.key for a in run.assumptions}
    a100 = read_training_run(_case(training={"sequence_parallel": ...}), "x.yaml")
    assert a100 is not None and "training.attention_kernel=unfused" in a100.overrides
    assert a100.flags["sequence_parallel"] is False and a100.flags["p2p_overlap"] is False
    assert a100.flags["tp_comm_overlap"] is False


def test_token_drop_without_a_factor_is_an_assumption() -> None:
    case = _case(model={"arch": "Qwen3-MoE", "ffn": 4096, "num_experts": 8, "top_k": 2})
    run = read_training_run(
        {**case, "training": {**case["training"], "token_drop": "tokendrop"}}, "x"
    )
    assert run is not None and "training.moe_capacity_factor=1.0" in run.overrides
    assert "training.moe_capacity_factor" in [a.key for a in run.assumptions]


def test_hf_config_is_the_workload_and_fsdp_is_zero3(tmp_path: Path) -> None:
    """model.hf_config names the workload (beside the measurements file); training.fsdp > 0
    (Megatron-Bridge's FSDP column) is ZeRO-3."""
    (tmp_path / "m.config.json").write_text("{}")
    case = _case(model={"hf_config": "m.config.json"}, training={"fsdp": 8})
    run = read_training_run(case, str(tmp_path / "runs.yaml"))
    assert run is not None and run.workload == str(tmp_path / "m.config.json")
    assert run.flags["zero"] == 3


def test_a_model_given_by_its_hf_config_takes_its_shape_from_it() -> None:
    """A case whose model is its Hugging Face config.json alone (Qwen3-30B-A3B: hidden 2048,
    32 heads over 4 KV heads, 48 layers, 128 experts of 768, top-8, vocab 151936, from the
    shipped workloads/hf copy) takes every shape key it leaves out from it; a key it states
    wins; the sequence length is the run's, not the config's 40960 positions."""
    model = {"hf_config": "workloads/hf/qwen3-30b-a3b.config.json", "seq_len": 4096}
    unstated = dict.fromkeys(("layers", "hidden", "heads", "vocab"), ...)
    system = {"gpu": "H100", "num_gpus": 8, "tp": 1, "dp": 8, "ep": 8}
    case = _case(model={**model, "global_batch": 64, **unstated}, system=system)
    run = read_training_run(case, "x.yaml")
    assert run is not None
    for key, value in (
        ("hidden_size", 2048),
        ("num_attention_heads", 32),
        ("num_key_value_heads", 4),
        ("num_hidden_layers", 48),
        ("vocab_size", 151936),
        ("num_experts", 128),
        ("num_experts_per_tok", 8),
        ("moe_intermediate_size", 768),
        ("max_position_embeddings", 4096),
    ):
        assert f"model.{key}={value}" in run.overrides
    stated = read_training_run(
        _case(model={**case["model"], "layers": 4}, system=case["system"]), "x.yaml"
    )
    assert stated is not None and "model.num_hidden_layers=4" in stated.overrides
    with pytest.raises(NotRun, match=r"model\.hf_config: .*cannot be read"):
        read_training_run(_case(model={**case["model"], "hf_config": "nowhere.json"}), "x.yaml")


def test_megatron_lm_argument_names_are_read_as_the_case_keys() -> None:
    """A run's configuration in Megatron-LM's argument names (--tensor-model-parallel-size,
    --seq-length, ...) is the same run; a key given both ways must agree."""
    plain = read_training_run(_case(system={"num_gpus": 8, "tp": 2, "dp": ...}), "x.yaml")
    megatron = _case(system={"num_gpus": 8, "tp": ..., "pp": ..., "dp": ...},
                     model={"seq_len": ..., "global_batch": ..., "micro_batch": ...})  # fmt: skip
    megatron["system"].update(tensor_model_parallel_size=2, pipeline_model_parallel_size=1)
    megatron["model"].update(seq_length=1024, global_batch_size=8, micro_batch_size=1)
    named = read_training_run(megatron, "x.yaml")
    assert plain is not None and named is not None
    assert named.overrides == plain.overrides and named.flags == plain.flags
    clash = _case()
    clash["system"]["tensor_model_parallel_size"] = 4
    with pytest.raises(NotRun, match=r"system\.tp = 8 and system\.tensor_model_parallel_size = 4"):
        read_training_run(clash, "x.yaml")


def test_other_names_of_the_keys_are_the_same_run() -> None:
    """A configuration written in Hugging Face's names (num_hidden_layers, num_local_experts,
    num_experts_per_tok), a table's upper-case columns ("TP", "EP"), plain words
    (tensor_parallel, experts), a nested ``moe`` mapping or numbers as text is the run its
    plain keys give; so is a flag's spelling ("--tensor-model-parallel-size") or a column's
    with spaces ("Num Experts")."""
    moe = {"num_experts": 8, "top_k": 2, "moe_ffn": 512}
    plain = read_training_run(_case(model=moe, system={"ep": 2, "tp": 2, "dp": ...}), "x.yaml")
    spellings = [
        ({"num_local_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 512},
         {"EP": 2, "TP": 2}),
        ({"experts": 8, "topk": 2, "moe_ffn_hidden_size": 512},
         {"expert_parallel": 2, "tensor_parallel": "2"}),
        ({"moe": {"num_experts": 8, "top_k": 2, "ffn": 512}}, {"ep": 2, "tensor_parallel_size": 2}),
        # Megatron-LM's flags as a launch script writes them
        ({"--num-experts": 8, "--moe-router-topk": 2, "--moe-ffn-hidden-size": 512},
         {"--expert-model-parallel-size": 2, "--tensor-model-parallel-size": 2}),
        ({"Num Experts": 8, "Top K": 2, "MoE FFN": 512}, {"EP": 2, "Tensor Parallel": 2}),
    ]  # fmt: skip
    for model, system in spellings:
        case = _case(model=model, system={"tp": ..., "dp": ..., **system})
        run = read_training_run(case, "x.yaml")
        assert plain is not None and run is not None
        assert (run.overrides, run.flags) == (plain.overrides, plain.flags), (model, system)
    assert "model.num_experts=8" in plain.overrides
    text = read_training_run(_case(model={"seq_len": "1,024"}), "x.yaml")
    assert text is not None and "training.seq_len=1024" in text.overrides
    full = read_training_run(_case(training={"activation_recompute": "full"}), "x.yaml")
    for training in ({"--recompute-granularity": "full"}, {"gradient_checkpointing": True}):
        run = read_training_run(_case(training={"activation_recompute": ..., **training}), "x.yaml")
        assert full is not None and run is not None
        assert (run.overrides, run.flags, run.recompute) == (
            full.overrides,
            full.flags,
            full.recompute,
        ), training


@pytest.mark.parametrize(
    ("stated", "mode"),
    [
        ("full (uniform, every layer)", "full"),
        ("uniform, 1 layer", "full"),  # Megatron-LM's --recompute-method: full granularity
        ("block", "full"),
        ("yes", "full"),
        ("selective", "selective"),
        ("no", "none"),
        ("no recompute on H100", "none"),  # "on" is a switch only where nothing says none
        ("disabled", "none"),
        (0, "none"),
    ],
)
def test_recompute_is_read_from_the_words_that_name_it(stated: object, mode: str) -> None:
    """``training.activation_recompute`` as runs write it: Megatron-LM's recompute methods
    (uniform, block) take full granularity; a switch's words and "no" name none."""
    run = read_training_run(_case(training={"activation_recompute": stated}), "x.yaml")
    assert run is not None and run.recompute == (mode,), stated


def test_recompute_text_that_names_no_mode_is_not_run_as_none() -> None:
    """Text that names neither full, selective nor none (a unit slipped into the field) is not
    read as no recompute: the case is not run, naming the key and the value."""
    with pytest.raises(NotRun, match=r"training\.activation_recompute: got '12 GB/s'; expected"):
        read_training_run(_case(training={"activation_recompute": "12 GB/s"}), "x.yaml")


def test_a_mixture_of_experts_without_its_experts_is_not_run_as_a_dense_model() -> None:
    """Expert parallelism or a MoE name on a model whose case gives no experts would run a
    dense model silently: the case is not run, saying what to give."""
    with pytest.raises(NotRun, match=r"system\.ep = 4 but the model has no experts"):
        read_training_run(_case(system={"ep": 4, "tp": 1, "dp": 8}), "x.yaml")
    for name in ("Mixtral-8x7B", "Qwen3-30B-A3B", "Llama-4 MoE"):
        with pytest.raises(NotRun, match="names a mixture of experts"):
            read_training_run(_case(model={"name": name, "ffn": 512}), "x.yaml")
    for name in ("Llama-3-8B", "Mistral-7B", "Llama-3.1-405B"):  # dense: runs
        assert read_training_run(_case(model={"name": name, "ffn": 512}), "x.yaml") is not None


def test_zero3_with_tp_pp_1_runs_with_zero_on() -> None:
    """A DeepSpeed ZeRO-3 run (tp = pp = 1) must be simulated with ZeRO-3, not without."""
    case = _case(system={"tp": 1, "dp": 8}, training={"zero_stage": 3})
    run = read_training_run(case, "x.yaml")
    assert run is not None and run.flags["zero"] == 3 and run.assumptions == ()
    dist = read_training_run(_case(training={"distributed_optimizer": True}), "x.yaml")
    assert dist is not None and dist.flags["zero"] == 1


@pytest.mark.parametrize(
    ("training", "stage"),
    [
        ({"zero": "ZeRO-3"}, 3),
        ({"zero": 2}, 2),
        ({"zero_stage": "stage 1"}, 1),
        ({"optimizer": "DeepSpeed ZeRO stage 3"}, 3),  # the sharding, named where the optimizer is
        ({"optimizer": "AdamW", "other": "DeepSpeed ZeRO-2, fp16"}, 2),
        ({"fsdp": True}, 3),
        ({"fsdp": "FULL_SHARD"}, 3),  # PyTorch FSDP's sharding strategies
        ({"fsdp": "SHARD_GRAD_OP"}, 2),
        ({"optimizer": "LAMB", "zero_stage": 0}, 0),
    ],
)
def test_a_zero_stage_is_read_wherever_the_run_names_it(training: dict, stage: int) -> None:
    """A ZeRO stage given as a number, as text, as an FSDP strategy or only in the run's text
    must be the stage simulated, not silently none."""
    run = read_training_run(_case(system={"tp": 1, "dp": 8}, training=training), "x.yaml")
    assert run is not None and run.flags.get("zero", 0) == stage
    assert not any(a.key == "training.distributed_optimizer" for a in run.assumptions)


def test_a_zero_stage_named_two_ways_or_out_of_range_is_not_run() -> None:
    with pytest.raises(NotRun, match=r"training\.optimizer: got 'Adafactor with ZeRO-3'"):
        read_training_run(_case(training={"optimizer": "Adafactor with ZeRO-3"}), "x.yaml")
    with pytest.raises(NotRun, match=r"names ZeRO stages \[1, 3\]"):
        read_training_run(_case(training={"other": "ZeRO-1 then ZeRO-3"}), "x.yaml")
    with pytest.raises(NotRun, match=r"training\.zero: got 'stage three'"):
        read_training_run(_case(training={"zero": "stage three"}), "x.yaml")
    with pytest.raises(NotRun, match=r"CPU offloading \(training\.zero: ZeRO-Infinity\)"):
        read_training_run(_case(training={"zero": "ZeRO-Infinity"}), "x.yaml")


@pytest.mark.parametrize(
    ("training", "dtype"),
    [
        ({"grad_reduce_dtype": "torch.float32"}, "fp32"),
        ({"reduce_dtype": "bf16"}, "bf16"),
        ({"grad_reduce_in_fp32": True}, "fp32"),
        ({"accumulate_allreduce_grads_in_fp32": False}, "weights"),
        ({"grad_reduce_in_bf16": True}, "bf16"),
        ({"mixed_precision": "DEFAULT"}, "fp32"),  # Composer's FSDP modes
        ({"mixed_precision": "PURE"}, "weights"),
    ],
)
def test_the_gradient_reduce_dtype_is_read_in_each_spelling(training: dict, dtype: str) -> None:
    run = read_training_run(_case(training=training), "x.yaml")
    assert run is not None and f"training.grad_reduce_dtype={dtype}" in run.overrides


def test_an_fp8_recipe_key_is_read_and_a_bad_one_is_named() -> None:
    """``training.fp8_recipe`` (Megatron-Core's --fp8-recipe) sets the recipe, unmarked, where
    the precision text names none; a value that is no recipe is not run."""
    fp8 = {"precision": "fp8", "fp8_recipe": "tensorwise"}
    run = read_training_run(_case(system={"gpu": "H100"}, training=fp8), "x.yaml")
    assert run is not None and "training.fp8_recipe=current" in run.overrides
    assert not any(a.key == "training.fp8_recipe" for a in run.assumptions)
    with pytest.raises(NotRun, match=r"training\.fp8_recipe: got 'fast'"):
        read_training_run(
            _case(system={"gpu": "H100"}, training={"precision": "fp8", "fp8_recipe": "fast"}),
            "x.yaml",
        )


@pytest.mark.parametrize(
    ("source", "recipe"),
    [
        ({"container": "NeMo 24.07"}, "delayed"),
        ({"location": "25.09 NeMo container, DGX-H100 table"}, "delayed"),
        ({"location": "25.11 NeMo container, DGX-H100 table"}, "current"),
        ({"location": "26.04.01 NeMo Container, Model: LLAMA3_70B"}, "current"),
        ({"paper": "a blog post"}, "delayed"),
    ],
)
def test_an_unstated_fp8_recipe_follows_the_nemo_release(source: dict, recipe: str) -> None:
    """An fp8 row naming no recipe: delayed scaling (Megatron-Core's default), except in a
    NeMo container from 25.11 on, whose Megatron-Bridge performance scripts offer no
    per-tensor fp8 but current scaling (``--compute_dtype`` fp8_cs from v0.2.0; v0.1.0rc4, the
    25.09 container, defaulted to delayed); either way marked. The release is read before
    the words too, as Megatron-Bridge's tables print it ("26.04.01 NeMo Container")."""
    case = {**_case(system={"gpu": "H100"}, training={"precision": "fp8"}), "source": source}
    run = read_training_run(case, "x.yaml")
    assert run is not None and f"training.fp8_recipe={recipe}" in run.overrides
    assert [a.value for a in run.assumptions if a.key == "training.fp8_recipe"] == [recipe]


def test_unstated_settings_are_assumed_and_marked(tmp_path: Path) -> None:
    """Micro-batch 1, precision fp16, the least recompute that fits (none here) and, for an
    undated run with TP, the asynchronous TP all-reduce and the gradient accumulation fused
    into the weight-gradient GEMMs."""
    case = _case(
        model={"micro_batch": ...}, training={"precision": ..., "activation_recompute": ...}
    )
    report = validate(_write(tmp_path, [{"id": "bare", **case}]))
    (comparison,) = report.comparisons
    assumed = {a.key: a.value for _, a in report.assumptions}
    assert assumed == {
        "model.micro_batch": 1,
        "training.precision": "fp16",
        "training.activation_recompute": "none",
        "training.tp_overlap": True,
        "training.gradient_accumulation_fusion": True,
    }
    assert set(comparison.assumed) == set(assumed)


# The limit's signal can land in another library's gc callback, where Python reports the
# exception as unraisable and palmsim re-arms the limit (validate._time_limit): expected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_case_past_its_time_limit_is_listed_and_the_next_runs(tmp_path: Path) -> None:
    if not hasattr(signal, "setitimer"):
        pytest.skip("no SIGALRM on this platform")
    # 4e5 micro-batches: minutes, not 5 s (TP rank 0 alone stands for its 8 GPUs)
    big = _case(model={"global_batch": 400_000})
    path = _write(tmp_path, [{"id": "slow", **big}, {"id": "fine", **_case()}])
    report = validate(path, case_timeout_s=20.0)  # generous: the fine case on a loaded machine
    assert report.skipped[0].case == "slow"
    assert "time limit (--case-timeout 20 s)" in report.skipped[0].reason
    assert [c.case for c in report.comparisons] == ["fine"]


def test_interrupt_keeps_finished_cases_and_resume_goes_on(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C during the second case: the first case's row is printed and in --json; a
    rerun with --resume runs only what is left."""
    import palmsim.validate as module

    path = _write(tmp_path, [{"id": "first", **_case()}, {"id": "second", **_case()}])
    out = tmp_path / "v.json"
    real = module._simulate_case
    calls = []

    def interrupted_second(case_id, run, overrides):
        calls.append(case_id)
        if case_id == "second" and len(calls) == 2:
            raise KeyboardInterrupt
        return real(case_id, run, overrides)

    monkeypatch.setattr(module, "_simulate_case", interrupted_second)
    assert main(["validate", path, "--json", str(out), "-q"]) == 130
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    assert [r["case"] for r in data["comparisons"]] == ["first"]
    assert main(["validate", path, "--json", str(out), "-q", "--resume"]) == 0
    assert calls == ["first", "second", "second"]
    data = json.loads(out.read_text())
    assert [r["case"] for r in data["comparisons"]] == ["first", "second"]


def test_cases_run_in_workers_give_the_report_run_one_by_one(tmp_path: Path) -> None:
    """--jobs: the same table, byte for byte in --json, whatever order the cases finish in
    (the not-run case and the models of different depths interleaved with the others)."""
    cases = [
        {"id": "deep", **_case(model={"layers": 6})},
        {"id": "broken", **_case(model={"heads": None})},
        {"id": "small", **_case()},
        {"id": "medium", **_case(model={"layers": 4})},
    ]
    path = _write(tmp_path, cases)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["validate", path, "--json", str(one), "-q"]) == 0
    assert main(["validate", path, "--json", str(two), "-q", "--jobs", "3"]) == 0
    assert two.read_bytes() == one.read_bytes()
    data = json.loads(one.read_text())
    assert [r["case"] for r in data["comparisons"]] == ["deep", "small", "medium"]
    assert [r["case"] for r in data["skipped"]] == ["broken"]


_RUN_ALONE = validate_module._run_alone


def _dies_on_second(source, case_id, case, case_timeout_s, overrides):
    """A worker's task that kills its process on the case named "second"."""
    if case_id == "second":
        os._exit(1)
    return _RUN_ALONE(source, case_id, case, case_timeout_s, overrides)


def test_a_worker_that_dies_lists_its_case_as_not_run(tmp_path: Path, monkeypatch, capfd) -> None:
    """A worker killed mid-case (the kernel's out-of-memory killer, say) ends the pool: every
    case is still in the report, the dead worker's as not run with why, and no traceback."""
    monkeypatch.setattr(validate_module, "_run_alone", _dies_on_second)
    names = ["first", "second", "third"]
    report = validate(_write(tmp_path, [{"id": n, **_case()} for n in names]), jobs=2)
    listed = [c.case for c in report.comparisons] + [s.case for s in report.skipped]
    assert sorted(listed) == sorted(names)
    why = {s.case: s.reason for s in report.skipped}
    assert "worker process died" in why["second"]
    assert not report.interrupted
    assert "Traceback" not in capfd.readouterr().err


def test_unreadable_resume_file_is_a_config_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "v.json"
    bad.write_text('{"comparisons": [{"case": 1}]}')
    path = _write(tmp_path, [{"id": "fine", **_case()}])
    assert main(["validate", path, "--json", str(bad), "--resume", "-q"]) == 2
    assert "comparisons[0]" in capsys.readouterr().err


def test_every_spelling_of_throughput_is_one_prediction_in_its_unit(tmp_path: Path) -> None:
    """A row's throughput may come as TFLOP/s per GPU, aggregate PFLOP/s, a share of a stated
    peak, MFU or HFU (fraction or percent), tokens or samples per second, or the per-layer
    forward + backward sum: each is the same simulated iteration in the row's unit. 8 A100s
    (312 TFLOP/s dense bf16, tile.peak of dgx-a100-superpod.yaml) on 8 samples of 1024."""
    spellings = {
        "tflops_per_gpu": 100.0,
        "model_tflops_per_gpu": 100.0,
        "aggregate_pflops": 1.0,
        "pct_of_312tflops_peak": 40.0,
        "pct_of_100tflops_peak": 40.0,
        "mfu": 0.4,
        "hfu": 40.0,
        "mfu_pct": 40.0,
        "tokens_per_s": 1e5,
        "samples_per_s": 100.0,
        "iteration_time_s": 0.1,
        "forward_ms": 1.0,
        "backward_ms": 2.0,
        "combined_ms": 3.0,
    }
    report = validate(_write(tmp_path, [{"id": "c", **_case(measured=spellings)}]))
    got = {c.metric: c.predicted for c in report.comparisons}
    assert set(got) == set(spellings)
    gpus, tokens, samples = 8, 8 * 1024, 8
    seconds = got["iteration_time_s"]
    assert got["aggregate_pflops"] == pytest.approx(got["tflops_per_gpu"] * gpus / 1e3)
    assert got["pct_of_312tflops_peak"] == pytest.approx(100 * got["tflops_per_gpu"] / 312)
    assert got["pct_of_100tflops_peak"] == pytest.approx(got["tflops_per_gpu"])
    assert got["mfu_pct"] == pytest.approx(100 * got["model_tflops_per_gpu"] / 312)
    assert got["mfu"] == pytest.approx(got["mfu_pct"] / 100)  # measured as a fraction
    assert got["hfu"] == pytest.approx(got["mfu_pct"])  # no recompute: HFU = MFU, in percent
    assert got["tokens_per_s"] == pytest.approx(tokens / seconds)
    assert got["samples_per_s"] == pytest.approx(samples / seconds)
    assert got["combined_ms"] == pytest.approx(got["forward_ms"] + got["backward_ms"])


def test_lora_fine_tuning_runs_as_lora() -> None:
    """A LoRA row (MLPerf's Llama 2 70B LoRA, Megatron-Bridge's LoRA tables) trains adapters
    over frozen weights: it runs as LoRA, its rank the case's or Megatron-Bridge's default
    (marked); QLoRA's 4-bit base weights are not modelled."""
    named = read_training_run({"id": "mlperf_llama2_70b_lora", **_case()}, "x.yaml")
    assert named is not None and "training.lora_rank=32" in named.overrides
    assert "training.lora_rank" in {a.key for a in named.assumptions}
    stated = read_training_run(
        _case(training={"method": "LoRA", "lora_rank": 16, "lora_targets": ["qkv", "out_proj"]}),
        "x.yaml",
    )
    assert stated is not None
    assert {"training.lora_rank=16", "training.lora_targets=qkv,out_proj"} <= set(stated.overrides)
    with pytest.raises(NotRun, match=r"QLoRA fine-tuning"):
        read_training_run(_case(model={"name": "GPT QLoRA"}), "x.yaml")
    plain = read_training_run({"id": "gpt_floral", **_case()}, "x.yaml")
    assert plain is not None and not any("lora" in o for o in plain.overrides)


def test_cpu_offloading_is_not_run_rather_than_run_without_it() -> None:
    """Megatron-Bridge's Llama 3.1 405B GB200 fp8 preset offloads 92 layers to the CPU
    (cpu_offloading_num_layers): without the host transfers the row would be silently fast.
    A key naming offloading that is off runs."""
    for training in ({"cpu_offloading_num_layers": 92}, {"cpu_offload": True}):
        with pytest.raises(NotRun, match=r"CPU offloading .*not modelled"):
            read_training_run(_case(training=training), "x.yaml")
    for training in ({"cpu_offloading_num_layers": 0}, {"cpu_offload": False}):
        assert read_training_run(_case(training=training), "x.yaml") is not None


def test_nvfp4_training_runs_its_recipe_and_other_four_bit_training_is_named() -> None:
    """Megatron-Bridge's NVFP4 presets (GB300, GB200, B200) run Transformer Engine's
    NVFP4BlockScaling: the row runs with training.fp8_recipe nvfp4 and is marked with its
    config's NVFP4 assumptions, which a bf16 row on the same config is not; MXFP4 (4-bit
    GEMMs of another recipe) is listed as not run, saying so."""
    for precision in ("nvfp4", "NVFP4"):
        run = read_training_run(
            _case(system={"gpu": "GB300"}, training={"precision": precision}), "x.yaml"
        )
        assert run is not None and "training.fp8_recipe=nvfp4" in run.overrides
        assert "hw.tile.format_efficiency.nvfp4" in {a.key for a in run.assumptions}
    bf16 = read_training_run(_case(system={"gpu": "GB300"}, training={"precision": "bf16"}), "x")
    assert bf16 is not None
    assert not any("nvfp4" in a.key for a in bf16.assumptions)
    with pytest.raises(NotRun, match=r"4-bit training other than NVFP4 .*not modelled"):
        read_training_run(_case(training={"precision": "mxfp4"}), "x.yaml")


def test_a_vision_language_model_is_not_run_as_its_text_model() -> None:
    """Qwen3-VL or Llama 3.2 Vision rows train a vision encoder beside the language model:
    run as the text model alone they would be silently fast. A name merely containing the
    letters ('GPT-EVLM') is not one."""
    for name in ("Qwen3-VL-30B-A3B", "Qwen2.5 VL 72B", "Llama-3.2-11B-Vision", "LLaVA 1.5"):
        with pytest.raises(NotRun, match=r"vision-language model"):
            read_training_run(_case(model={"name": name, "arch": None}), "x.yaml")
    assert read_training_run(_case(model={"name": "GPT-EVLM"}), "x.yaml") is not None


def test_megatron_turing_nlg_is_a_gpt_and_num_gpus_alone_makes_a_run() -> None:
    run = read_training_run(_case(model={"name": "MT-NLG 530B"}), "x.yaml")
    assert run is not None and run.workload.endswith("t-18b.yaml")
    only_gpus = _case(system={"tp": ..., "pp": ..., "dp": ..., "num_gpus": 8})
    run = read_training_run(only_gpus, "x.yaml")
    assert run is not None and run.flags["dp"] == 8  # tp and pp 1, assumed and marked
    assert {"system.tp", "system.pp"} <= {a.key for a in run.assumptions}


def test_a_named_framework_brings_its_settings_and_megatron_lm_reduces_after_the_backward() -> None:
    """MegaScale (NSDI 2024, Sec. 3.2-3.3) overlaps TP, pipeline and DP communication and runs
    FlashAttention-2: a case naming it takes those where it does not state them, marked. A
    Megatron-LM run (no framework named, an A100, dp > 1) reduces its gradients after the
    backward (--DDP-impl local, Megatron-LM's default); a stated setting always wins."""
    system = {"num_gpus": 32, "dp": ...}
    named = {"framework": "MegaScale", "sequence_parallel": ...}
    mega = read_training_run(_case(system=system, training=named), "x.yaml")
    assert mega is not None
    flags = mega.flags
    assert flags["sequence_parallel"] and flags["tp_comm_overlap"] and flags["p2p_overlap"]
    assert flags["dp_overlap"] is True
    assert "training.attention_kernel=flash2" in mega.overrides  # FlashAttention-2
    assumed = {a.key for a in mega.assumptions}
    assert {"training.tp_comm_overlap", "training.overlap_grad_reduce"} <= assumed
    lm = read_training_run(_case(system=system), "x.yaml")
    assert lm is not None and lm.flags["dp_overlap"] is False
    stated = read_training_run(
        _case(system=system, training={**named, "tp_comm_overlap": False}), "x.yaml"
    )
    assert stated is not None and stated.flags["tp_comm_overlap"] is False
    # sequence parallelism stated off: no userbuffers overlap, which needs it
    no_sp = read_training_run(_case(system=system, training={"framework": "MegaScale"}), "x.yaml")
    assert no_sp is not None and no_sp.flags["tp_comm_overlap"] is False
    torch_ddp = read_training_run(_case(system=system, training={"ddp_impl": "torch"}), "x.yaml")
    assert torch_ddp is not None and torch_ddp.flags["dp_overlap"] is True


def test_megascale_runs_its_parallel_block_and_a_case_may_state_one() -> None:
    """MegaScale replaces the serial block by PaLM's parallel one (NSDI 2024, Sec. 3.1, Eq. 2:
    one LN into both branches): a case naming it takes 'one_norm', marked; any case may state
    model.parallel_block (a block, or true for one norm); anything else is refused."""
    named = {"framework": "MegaScale"}
    mega = read_training_run(_case(training=named), "x.yaml")
    assert mega is not None and "model.parallel_block=one_norm" in mega.overrides
    assert "model.parallel_block" in {a.key for a in mega.assumptions}
    plain = read_training_run(_case(), "x.yaml")
    assert plain is not None and not any("parallel_block" in o for o in plain.overrides)
    for stated, block in (("two_norms", "two_norms"), (True, "one_norm"), ("no", "none")):
        run = read_training_run(_case(model={"parallel_block": stated}, training=named), "x.yaml")
        assert run is not None and f"model.parallel_block={block}" in run.overrides
        assert "model.parallel_block" not in {a.key for a in run.assumptions}
    with pytest.raises(NotRun, match=r"model\.parallel_block: got 'sideways'"):
        read_training_run(_case(model={"parallel_block": "sideways"}), "x.yaml")


def test_not_applicable_is_an_unstated_value() -> None:
    """Megatron-Bridge's tables write "n/a" for the VP or EP a run does not use: no such
    parallelism (1), as a null would be, not a case refused for a non-number; "unknown" or
    "?" is unstated too (a recompute left to the least that fits)."""
    system = {"virtual_pipeline_stages": "n/a", "ep": "N/A", "cp": " - "}
    run = read_training_run(_case(system=system), "x.yaml")
    assert run is not None
    assert (run.flags["virtual_stages"], run.flags["ep"], run.flags["cp"]) == (1, 1, 1)
    for text in ("unknown", "?", "Not stated"):
        run = read_training_run(_case(training={"activation_recompute": text}), "x.yaml")
        assert run is not None and run.recompute == ("none", "selective", "light", "full"), text
    with pytest.raises(NotRun, match=r"system\.tp: got 'eight'"):
        read_training_run(_case(system={"tp": "eight"}), "x.yaml")


def test_a_figure_as_a_table_prints_it_is_a_figure(tmp_path: Path) -> None:
    """Megatron-Bridge writes "31508 (29789)" for a row run in "FP8-CS (FP8-MX)": the first
    figure is the row's own precision's; MegaScale prints "1466.8k" and "41.2%"; text that is
    not a number is still no figure."""
    cases = [
        {"id": "variant", **_case(measured={"tflops_per_gpu": "100 (90)"})},
        {"id": "words", **_case(measured={"tflops_per_gpu": "about 100"})},
        {"id": "table", **_case(measured={"tokens_per_s": "1,466.8k", "mfu_pct": "41.2%"})},
    ]
    report = validate(_write(tmp_path, cases))
    got = {(c.case, c.metric): c.measured for c in report.comparisons}
    assert got == {
        ("variant", "tflops_per_gpu"): 100.0,
        ("table", "tokens_per_s"): 1466.8e3,  # MegaScale's Table 2 prints thousands as "k"
        ("table", "mfu_pct"): 41.2,
        ("table", "tflops_per_gpu"): 100.0,  # the small case's own
    }
    assert [(s.case, s.reason) for s in report.skipped] == [
        (
            "words",
            "measured.tflops_per_gpu: got 'about 100'; expected a number (or one as a table "
            "prints it: 1,234, 39.3k, 52%)",
        )
    ]


@pytest.mark.parametrize(
    ("name", "workload"),
    [
        ("GPT OSS 120B", "gpt-oss-120b.yaml"),  # not a GPT: Megatron-Bridge's spelling
        ("gpt_oss_120b", "gpt-oss-120b.yaml"),
        ("DeepSeekV3 (w/o MTP)", "deepseek-v3.yaml"),
        ("LLAMA3.1_405B", "llama2-7b.yaml"),
        ("Qwen3_30B_a3B", "llama2-7b.yaml"),  # a Llama-family layer with its experts
        ("OPT-175B", "t-18b.yaml"),  # GPT's layer (learned positions, ReLU)
        ("BLOOM-176B", "t-18b.yaml"),  # GPT's layer with ALiBi
        ("MPT-7B", "t-18b.yaml"),
    ],
)
def test_model_names_as_tables_write_them(name: str, workload: str) -> None:
    case = _case(model={"name": name, "ffn": 2816, "kv_heads": 8, "num_experts": 128, "top_k": 8})
    run = read_training_run(case, "x.yaml")
    assert run is not None and run.workload.endswith(workload)


def test_qwen3_next_runs_over_its_own_layer() -> None:
    """Qwen3-Next (Gated DeltaNet and gated attention) is matched before Qwen3's Llama layer;
    its KV heads, unstated, are the base's (marked)."""
    run = read_training_run(_case(model={"name": "Qwen3-Next-80B-A3B"}), "x.yaml")
    assert run is not None and run.workload.endswith("qwen3-next-80b-a3b.yaml")
    assert "model.kv_heads" in {a.key for a in run.assumptions}
    assert not any(o.startswith("model.num_key_value_heads") for o in run.overrides)


def test_a_megatron_lm_baseline_beside_megascale_is_not_megascale() -> None:
    """MegaScale's Table 2 pairs each run with a Megatron-LM baseline: a row whose training
    names Megatron-LM is the baseline even where its system text mentions MegaScale's cluster;
    the training section decides before the system's."""
    baseline = _case(
        system={"cluster": "MegaScale production cluster"},
        training={"method": "Megatron-LM (baseline)"},
    )
    run = read_training_run(baseline, "x.yaml")
    assert run is not None and run.flags["tp_comm_overlap"] is False
    by_system = read_training_run(
        _case(system={"software": "MegaScale"}, training={"sequence_parallel": True}), "x.yaml"
    )
    assert by_system is not None and by_system.flags["tp_comm_overlap"] is True


def test_a_model_run_with_its_mtp_module_trains_it() -> None:
    """Megatron-Bridge writes "DeepSeekV3 (w/ MTP)" or "(w/o MTP)": a run named with MTP
    trains its multi-token prediction, one depth where the case states none (marked), the
    case's training.mtp_num_layers where it does; without it, none."""
    with_mtp = read_training_run(
        _case(model={"name": "DeepSeekV3 (w/ MTP)", "ffn": 2816}), "x.yaml"
    )
    assert with_mtp is not None and "training.mtp_depths=1" in with_mtp.overrides
    assert "training.mtp_num_layers" in {a.key for a in with_mtp.assumptions}
    stated = read_training_run(
        _case(
            model={"name": "DeepSeekV3 (w/ MTP)", "ffn": 2816},
            training={"mtp_num_layers": 2},
        ),
        "x.yaml",
    )
    assert stated is not None and "training.mtp_depths=2" in stated.overrides
    assert "training.mtp_num_layers" not in {a.key for a in stated.assumptions}
    without = read_training_run(
        _case(model={"name": "DeepSeekV3 (w/o MTP)", "ffn": 2816}), "x.yaml"
    )
    assert without is not None
    assert not any(o.startswith("training.mtp_depths") for o in without.overrides)


def test_figures_under_other_names_are_read_in_their_unit(tmp_path: Path) -> None:
    """tokens_per_sec_per_gpu is tokens_per_s_per_gpu; iteration_time_ms is the iteration time
    in seconds times 1000; a figure also given under its own name keeps that one."""
    measured = {"tokens_per_sec_per_gpu": 1000.0, "iteration_time_ms": 500.0}
    case = {"id": "a", **_case(measured={"tflops_per_gpu": ..., **measured})}
    report = validate(_write(tmp_path, [case]))
    got = {c.metric: c for c in report.comparisons}
    assert set(got) == {"tokens_per_s_per_gpu", "iteration_time_s"}
    assert got["iteration_time_s"].measured == pytest.approx(0.5)
    assert got["tokens_per_s_per_gpu"].predicted == pytest.approx(
        8 * 1024 / got["iteration_time_s"].predicted / 8  # 8 samples of 1024 over 8 GPUs
    )


@pytest.mark.parametrize(
    ("name", "figure", "factor"),
    [
        ("tokens/sec/GPU", "tokens_per_s_per_gpu", 1.0),
        ("throughput (tokens/s)", "tokens_per_s", 1.0),
        ("samples/sec", "samples_per_s", 1.0),
        ("seq/s", "samples_per_s", 1.0),  # a sequence is a sample
        ("sequences per second", "samples_per_s", 1.0),
        ("achieved TFLOPS/GPU", "tflops_per_gpu", 1.0),
        ("PFLOPS aggregate", "aggregate_pflops", 1.0),
        ("avg step time (ms)", "iteration_time_s", 1e-3),
    ],
)
def test_a_figure_named_in_other_words_is_the_figure(name: str, figure: str, factor: float) -> None:
    assert _canonical_figures({name: 250.0}) == {figure: pytest.approx(250.0 * factor)}


def test_figures_as_logs_and_tables_spell_them_are_read(tmp_path: Path) -> None:
    """Megatron-LM's log labels ("elapsed time per iteration (ms)", "throughput per GPU
    (TFLOP/s/GPU)") and a table's capitals ("MFU") name the same figures; a name palmsim
    does not predict is listed with the names it does."""
    measured = {
        "elapsed time per iteration (ms)": 500.0,
        "throughput per GPU (TFLOP/s/GPU)": 100.0,
        "MFU": 30.0,
    }
    case = {"id": "a", **_case(measured={"tflops_per_gpu": ..., **measured})}
    unknown = {"id": "b", **_case(measured={"tflops_per_gpu": ..., "throughput": 7.0})}
    report = validate(_write(tmp_path, [case, unknown]))
    got = {c.metric: c for c in report.comparisons if c.case == "a"}
    assert set(got) == {"iteration_time_s", "tflops_per_gpu", "mfu"}
    assert got["iteration_time_s"].measured == pytest.approx(0.5)
    assert got["tflops_per_gpu"].measured == 100.0
    assert got["mfu"].predicted == pytest.approx(
        100 * got["tflops_per_gpu"].predicted / 312, rel=0.02
    )  # a percentage, as measured; model FLOP = the published count without recompute here
    (skipped,) = report.skipped
    assert "(throughput)" in skipped.reason and "tflops_per_gpu" in skipped.reason


def test_time_to_train_is_the_runs_iterations_times_the_iteration_time(tmp_path: Path) -> None:
    """MLPerf Training's result, the time to train (minutes), is predicted from the run's
    length: train_samples / global batch iterations (or train_iters, or train_tokens / the
    batch's tokens) times the simulated iteration time, marked (no evaluation or start-up);
    without a length it is not run, saying what it needs."""
    measured = {"tflops_per_gpu": ..., "time_to_train_min": 2.0, "iteration_time_s": 1.0}
    by_samples = {"id": "a", **_case(measured=measured, training={"train_samples": 800})}
    by_tokens = {"id": "b", **_case(measured=measured, training={"train_tokens": 800 * 1024})}
    no_length = {"id": "c", **_case(measured={"tflops_per_gpu": ..., "time_to_train_min": 2.0})}
    report = validate(_write(tmp_path, [by_samples, by_tokens, no_length]))
    for case in ("a", "b"):
        got = {c.metric: c for c in report.comparisons if c.case == case}
        assert got["time_to_train_s"].measured == 120.0
        # 800 samples at a global batch of 8: 100 iterations
        assert got["time_to_train_s"].predicted == pytest.approx(
            100 * got["iteration_time_s"].predicted
        )
        assert "time_to_train" in got["time_to_train_s"].assumed
        assert "time_to_train" not in got["iteration_time_s"].assumed
    (skipped,) = report.skipped
    assert skipped.case == "c" and "train_samples" in skipped.reason


def _simulated(run):
    """The simulation of a read case, without recompute (the small case fits)."""
    flags = {**run.flags, "recompute": "none"}
    experiment = load_experiment(
        run.hardware, run.workload, overrides=list(run.overrides), mapping_flags=flags
    )
    return simulate(experiment)


def test_a_forward_pass_is_the_pipelines_fill_then_a_stage_time_per_micro_batch() -> None:
    """An evaluation's forward-only pass (Narayanan et al. SC21, Sec. 2.2): without a
    pipeline m micro-batches take m times one; over two stages the first crosses both and
    each further one adds the slower stage's time, less than the fill."""
    for pp, expect_fill in ((1, False), (2, True)):
        case = _case(system={"tp": 4, "pp": pp, "dp": 2 // pp})
        run = read_training_run(case, "x.yaml")
        assert run is not None
        result = _simulated(run)
        one, two, three = (forward_pass_s(result, m) for m in (1, 2, 3))
        assert three - two == pytest.approx(two - one, rel=1e-12)  # a stage time each
        if expect_fill:
            assert 0 < two - one < one  # the slower stage's time is less than the fill
        else:
            assert two == pytest.approx(2 * one, rel=1e-12)
        # a forward of the batch's micro-batches is less than the iteration (forward and
        # backward, the backward about twice the forward) and more than a quarter of it
        micro = run.flags["dp"] * run.flags["micro_batch_size"]
        forward = forward_pass_s(result, 8 // micro)
        assert result.trace.end_time_s / 4 < forward < result.trace.end_time_s


def test_time_to_train_adds_the_runs_evaluations(tmp_path: Path) -> None:
    """With its evaluations stated (MLPerf's logs: eval_start events and the benchmark's
    validation set), the time to train adds each as a forward pass over its samples; one of
    the two keys alone is not run."""
    measured = {"tflops_per_gpu": ..., "time_to_train_min": 2.0, "iteration_time_s": 1.0}
    plain = {"train_samples": 800}
    evaluated = {**plain, "evaluations": 3, "eval_samples": 64}
    cases = [
        {"id": "a", **_case(measured=measured, training=plain)},
        {"id": "b", **_case(measured=measured, training=evaluated)},
        {"id": "c", **_case(measured=measured, training={**plain, "evaluations": 3})},
    ]
    report = validate(_write(tmp_path, cases))
    got = {(c.case, c.metric): c.predicted for c in report.comparisons}
    run = read_training_run(_case(training=evaluated), "x.yaml")
    assert run is not None and run.evaluation == (3.0, 64)
    result = _simulated(run)
    # 64 samples over dp 1 at micro-batch 1: 64 micro-batches per evaluation
    extra = 3 * forward_pass_s(result, 64)
    assert got[("b", "time_to_train_s")] == pytest.approx(got[("a", "time_to_train_s")] + extra)
    (skipped,) = report.skipped
    assert skipped.case == "c" and "go together" in skipped.reason


@pytest.mark.parametrize("gpu", ["H100 PCIe", "NVIDIA A100-PCIE-40GB", "H100 NVL"])
def test_a_pcie_card_is_not_run_on_an_sxm_config(gpu: str) -> None:
    """A PCIe card (or an H100 NVL, two bridged PCIe cards) has its own clocks and power and no
    NVSwitch: not run on the shipped SXM configs, saying so; a GB200 NVL72 rack is SXM."""
    with pytest.raises(NotRun, match="PCIe card"):
        read_training_run(_case(system={"gpu": gpu}), "x.yaml")
    assert read_training_run(_case(system={"gpu": "GB200 NVL72"}), "x.yaml") is not None


def test_a_gpu_of_other_memory_runs_with_its_memory(tmp_path: Path) -> None:
    """An A100-SXM4-40GB case runs on the A100 config with 40 GB per GPU (what fits follows
    the case's GPU), marked: the HBM bandwidth and kernel rates are the 80 GB part's. The
    same GPU at the config's size changes nothing."""
    run = read_training_run(_case(system={"gpu": "A100-SXM4-40GB"}), "x.yaml")
    assert run is not None and "hw.dram.capacity=40 GB" in run.overrides
    assert "hw.dram.capacity" in [a.key for a in run.assumptions]
    same = read_training_run(_case(system={"gpu": "A100-SXM4-80GB"}), "x.yaml")
    assert same is not None and not any("dram" in o for o in same.overrides)
    report = validate(_write(tmp_path, [{"id": "a", **_case(system={"gpu": "A100 40GB"})}]))
    assert [c.case for c in report.comparisons] == ["a"]
    assert "hw.dram.capacity" in report.comparisons[0].assumed


@pytest.mark.parametrize(
    ("source", "training", "kernel"),
    [
        ({"container": "NeMo 24.07"}, {}, "flash2"),
        ({"container": "NeMo24.03.01.framework"}, {}, "flash2"),
        ({"container": "nvcr.io/nvidia/nemo:24.05"}, {}, "flash2"),
        ({"container": "NeMo Framework v24.01"}, {}, "flash2"),
        ({"container": "NeMo 24.09"}, {}, "fused"),
        ({"container": "NeMo 23.11"}, {}, "fused"),
        ({"container": "NeMo 24.05", "benchmark": "MLPerf Training v4.0"}, {}, "fused"),
        ({"container": "NeMo 2.0"}, {}, "fused"),
        ({"container": "NeMo 24.07"}, {"attention": "cudnn"}, "fused"),
        ({}, {"attention": "flash"}, "flash2"),
        ({}, {"attention": "unfused"}, "fused"),  # fp8 runs in Transformer Engine
    ],
)
def test_the_attention_kernel_of_an_h100_fp8_case(
    source: dict, training: dict, kernel: str
) -> None:
    """NeMo's launcher set NVTE_FUSED_ATTN=0 for every job in its releases 24.01-24.07
    (flash-attn's FlashAttention-2 then runs, an assumption marked on the figures); other
    fp8 runs take cuDNN's fused kernel, derived; a stated kernel wins."""
    h100 = {"gpu": "H100-SXM5-80GB", "num_gpus": 8, "tp": 8, "pp": 1, "dp": 1}
    case = _case(system=h100, training={"precision": "fp8", **training})
    case["source"] = source
    run = read_training_run(case, "x.yaml")
    assert run is not None
    assert f"training.attention_kernel={kernel}" in run.overrides
    marked = [a for a in run.assumptions if a.key == "training.attention"]
    assert bool(marked) == (kernel == "flash2" and not training)


def test_the_nemo_launcher_rule_needs_a_gpu_with_fp8() -> None:
    """On an A100 (no fp8) a NeMo 24.07 bf16 run is not switched to flash-attn's kernel by
    the release alone: the A100's default (unfused, Megatron-LM's) stands."""
    case = _case()
    case["source"] = {"container": "NeMo 24.07"}
    run = read_training_run(case, "x.yaml")
    assert run is not None and "training.attention_kernel=unfused" in run.overrides


def test_an_unstated_virtual_pipeline_is_marked_where_there_is_a_pipeline() -> None:
    """Without ``system.virtual_pipeline_stages`` a pipelined run takes Megatron's plain
    schedule, whose bubble the figures rest on: marked; a stated one or no pipeline is not."""
    piped = {"num_gpus": 8, "tp": 4, "pp": 2, "dp": 1}
    keys = {a.key for a in read_training_run(_case(system=piped), "x.yaml").assumptions}
    assert "system.virtual_pipeline_stages" in keys
    stated = _case(system={**piped, "virtual_pipeline_stages": 1})
    keys = {a.key for a in read_training_run(stated, "x.yaml").assumptions}
    assert "system.virtual_pipeline_stages" not in keys
    keys = {a.key for a in read_training_run(_case(), "x.yaml").assumptions}
    assert "system.virtual_pipeline_stages" not in keys


def test_optimizer_dtypes_and_packing_are_read_in_any_spelling() -> None:
    """Megatron-Core's and PyTorch's names for the optimizer state's dtypes, and the packed
    documents' length, reach the run; an unknown dtype is a one-line reason."""
    run = read_training_run(
        _case(
            training={
                "exp_avg_dtype": "torch.bfloat16",
                "main_params_dtype": "fp32",
                "attention": "flash",
                "packed_document_tokens": 128,
            }
        ),
        "x.yaml",
    )
    assert "training.optimizer_state_dtype=bf16" in run.overrides
    assert "training.master_weights_dtype=fp32" in run.overrides
    assert "training.packed_document_tokens=128" in run.overrides
    with pytest.raises(NotRun, match=r"training\.optimizer_state_dtype: got 'fp4'"):
        read_training_run(_case(training={"optimizer_state_dtype": "fp4"}), "x.yaml")
    with pytest.raises(NotRun, match=r"training\.optimizer_state_dtype: got 'none'"):
        read_training_run(_case(training={"optimizer_state_dtype": "none"}), "x.yaml")


def test_nemo_launcher_fine_tuning_rows_take_the_launcher_defaults() -> None:
    """A NeMo 24.07 SFT row of packed SQuAD data that states nothing more: its examples
    attend each within itself (SQuAD's attention-weighted length), the launcher's
    distributed Adam keeps bf16 moments (and with fp8 weights a bf16 master copy), and
    sequence parallelism is off (conf/peft/llama/sft.yaml); each marked. A LoRA row keeps
    its optimizer's default; a 2023 row takes none of it."""
    from palmsim.validate import SQUAD_DOCUMENT_TOKENS

    sft = _case(
        training={
            "method": "SFT",
            "precision": "FP8",
            "other": "SQuAD, inputs packed to 4096",
            "sequence_parallel": ...,
        },
        system={"tp": 2, "dp": 4},
    )
    sft["source"] = {"container": "NeMo 24.07"}
    run = read_training_run(sft, "x.yaml")
    assert f"training.packed_document_tokens={SQUAD_DOCUMENT_TOKENS}" in run.overrides
    assert "training.optimizer_state_dtype=bf16" in run.overrides
    assert "training.master_weights_dtype=bf16" in run.overrides  # fp8 weights
    assert run.flags["sequence_parallel"] is False
    marked = {a.key for a in run.assumptions}
    assert {
        "training.packed_document_tokens",
        "training.optimizer_state_dtype",
        "training.sequence_parallel",
    } <= marked
    lora = {**sft, "training": {**sft["training"], "method": "LoRA"}}
    lora_run = read_training_run(lora, "x.yaml")
    assert not any("optimizer_state_dtype" in o for o in lora_run.overrides)
    older = {**sft, "source": {"container": "NeMo 23.11"}}
    run = read_training_run(older, "x.yaml")
    assert not any("optimizer_state_dtype" in o for o in run.overrides)
    assert run.flags["sequence_parallel"] is True


def test_a_figure_no_run_can_have_and_malformed_fields_are_named(tmp_path: Path) -> None:
    """A measured figure that is not a finite number above zero is named, not dropped (NaN,
    inf) or compared (a negative throughput's error of -5000%); a NaN field and a
    recompute-module list given as a number are one-line reasons, not internal errors (a
    fuzz of the check files found both)."""
    cases = [
        {"id": "nan", **_case(measured={"tflops_per_gpu": float("nan")})},
        {"id": "inf", **_case(measured={"tflops_per_gpu": float("inf")})},
        {"id": "negative", **_case(measured={"tflops_per_gpu": -3})},
        # a figure outside the training set (the layer-time rows' forward_ms) too
        {"id": "negative_ms", **_case(measured={"tflops_per_gpu": ..., "forward_ms": -1})},
        {"id": "nan_layers", **_case(model={"layers": float("nan")})},
        {"id": "modules", **_case(training={"recompute_modules": 3})},
    ]
    report = validate(_write(tmp_path, cases))
    reasons = {s.case: s.reason for s in report.skipped}
    assert reasons == {
        "nan": "measured.tflops_per_gpu: got nan; expected a number above zero",
        "inf": "measured.tflops_per_gpu: got inf; expected a number above zero",
        "negative": "measured.tflops_per_gpu: got -3; expected a number above zero",
        "negative_ms": "measured.forward_ms: got -1; expected a number above zero",
        "nan_layers": "model.layers: got nan; expected a whole number >= 1",
        "modules": "training.recompute_modules: got 3; expected a list of module names",
    }
    assert not report.comparisons


def test_unstated_recompute_tries_the_light_modules_before_whole_layers(
    tmp_path: Path, monkeypatch
) -> None:
    """A run that states no recompute takes the least that fits; between selective (the
    attention core) and full it tries the core with the norms and, for a mixture of experts,
    the experts' activation (Megatron-Bridge's guidance before full recompute). Here only a
    mapping recomputing moe_act "fits" (the simulation of every other raises MappingError)."""
    import palmsim.validate as module
    from palmsim.errors import MappingError

    tried = []

    def fits_with_moe_act(experiment):
        mapping = experiment.mapping
        tried.append((mapping.recompute, mapping.recompute_modules))
        if "moe_act" not in mapping.recompute_modules:
            raise MappingError("model does not fit")
        return simulate(experiment)

    monkeypatch.setattr(module, "simulate", fits_with_moe_act)
    moe = {"ffn": 4096, "num_experts": 8, "top_k": 2, "kv_heads": 16, "name": "Mixtral"}
    case = _case(
        model=moe, system={"ep": 8, "tp": 1, "dp": 8}, training={"activation_recompute": ...}
    )
    report = validate(_write(tmp_path, [{"id": "moe", **case}]))
    # each recompute with ZeRO off and on (the distributed optimizer is unstated too)
    assert list(dict.fromkeys(tried)) == [
        ("none", ()),
        ("selective", ()),
        ("selective", ("core_attn", "layernorm", "moe_act")),
    ]
    assumed = {a.key: a.value for _, a in report.assumptions}
    assert assumed["training.activation_recompute"] == "selective (core_attn, layernorm, moe_act)"


@pytest.mark.parametrize(
    ("source", "order", "note"),
    [
        # SC21 (arXiv 2104): before selective recompute (Megatron-LM main, 2022-05)
        ({"paper": "arXiv:2104.04473"}, ["none", "full"], "predates selective recompute"),
        # MegaScale (arXiv 2402): selective of the attention core only, as Megatron-LM had it
        ({"paper": "arXiv:2402.15627"}, ["none", "selective", "full"], "norms and others"),
        # a 2025-09 run: Megatron-Core's recompute_modules (2025-04) too
        ({"paper": "arXiv:2509.01234"}, ["none", "selective", "light", "full"], None),
        ({}, ["none", "selective", "light", "full"], None),  # undated: all of them
    ],
)
def test_unstated_recompute_tries_what_existed_at_the_runs_date(
    tmp_path: Path, monkeypatch, source: dict, order: list, note: str | None
) -> None:
    """The least recompute that fits is sought among the kinds the run's software had: whole
    layers from the start, the attention core alone from 2022-05, the norms and other
    modules from 2025-04 (the run's date is its source's, as for the other dated
    defaults). Here nothing but full recompute "fits", so every kind is tried."""
    import palmsim.validate as module
    from palmsim.errors import MappingError

    tried = []

    def fits_with_full(experiment):
        mapping = experiment.mapping
        kind = "light" if "layernorm" in mapping.recompute_modules else mapping.recompute
        tried.append(kind)
        if kind != "full":
            raise MappingError("model does not fit")
        return simulate(experiment)

    monkeypatch.setattr(module, "simulate", fits_with_full)
    case = _case(training={"activation_recompute": ...})
    report = validate(_write(tmp_path, [{"id": "dated", "source": source, **case}]))
    assert list(dict.fromkeys(tried)) == order
    (why,) = [a.why for _, a in report.assumptions if a.key == "training.activation_recompute"]
    assert why.startswith(f"not stated: the least recompute that fits ({order[0]}, ")
    assert (note is None) == ("predates" not in why) and (note is None or note in why)


@pytest.mark.parametrize("recompute", ["full", ...])
def test_a_published_run_palmsim_thinks_too_large_is_simulated_and_marked(
    tmp_path: Path, monkeypatch, recompute
) -> None:
    """A measured run fit its GPUs. Where palmsim's memory model puts every setting tried
    over the memory (a MappingError that does_not_fit), the last of them, the least memory,
    is simulated with run.memory_check false, and every figure is marked with the overflow;
    a run that states its recompute tries that one only."""
    import palmsim.validate as module
    from palmsim.errors import MappingError

    tried = []

    def never_fits(experiment):
        tried.append((experiment.mapping.recompute, experiment.run.memory_check))
        if experiment.run.memory_check:
            raise MappingError("model does not fit: 81 GB against 80 GB", does_not_fit=True)
        return simulate(experiment)

    monkeypatch.setattr(module, "simulate", never_fits)
    case = _case(training={"activation_recompute": recompute})
    report = validate(_write(tmp_path, [{"id": "big", **case}]))
    assert report.comparisons and not report.skipped
    assert all("run.memory_check" in c.assumed for c in report.comparisons)
    assumed = {a.key: a for _, a in report.assumptions}
    assert "81 GB against 80 GB" in assumed["run.memory_check"].why
    assert tried[-1] == ("full", False) and tried.count(("full", False)) == 1
    if recompute is ...:
        assert assumed["training.activation_recompute"].why.startswith("not stated: none of")
    else:
        assert {mode for mode, _ in tried} == {"full"}

    def too_few_gpus(experiment):
        raise MappingError("mapping needs 16 tiles but the chip has 8")

    monkeypatch.setattr(module, "simulate", too_few_gpus)  # not a memory overflow: not run
    report = validate(_write(tmp_path, [{"id": "big", **case}]))
    assert not report.comparisons and "needs 16 tiles" in report.skipped[0].reason


def test_light_recompute_takes_the_modules_the_model_has() -> None:
    from palmsim.config.loader import load_workload
    from palmsim.validate import light_recompute_modules

    dense = load_workload("workloads/llama3-8b.yaml")[0].model
    mla = load_workload("workloads/deepseek-v3.yaml")[0].model
    assert light_recompute_modules(dense) == ("core_attn", "layernorm")
    assert light_recompute_modules(mla) == ("core_attn", "layernorm", "mla_up_proj", "moe_act")


@pytest.mark.parametrize(
    ("freq", "expect"),
    [
        ([0, 1] * 4, (0, 2)),  # NeMo's Llama 4 Maverick form, at 8 layers
        ([0, 0, 0, 1, 1, 1, 1, 1], (3, 1)),  # DeepSeek's three dense layers first
        (1, (0, 1)),
        (2, "first layer of every group"),  # Megatron-Core's int form: layers 0, 2, 4, ...
        ([1, 0] * 4, "first in its group"),
        ([0, 1, 1, 0, 0, 1, 0, 1], "cannot place"),
        ([0, 1] * 3, "one 0 or 1 per layer"),
        ([0, 2] * 4, "a list of 0 and 1"),
    ],
)
def test_megatron_moe_layer_freq_is_read_or_refused(freq, expect) -> None:
    """Megatron-Core's --moe-layer-freq: 1, or a per-layer list of dense layers then MoE every
    step-th, becomes (first_k_dense_replace, moe_layer_step); a layout palmsim cannot place
    is not run, never run as MoE on every layer."""
    moe = {"ffn": 4096, "num_experts": 8, "top_k": 2, "kv_heads": 16, "name": "Mixtral"}
    case = _case(
        model={**moe, "layers": 8, "moe_layer_freq": freq}, system={"ep": 8, "tp": 1, "dp": 8}
    )
    if isinstance(expect, str):
        with pytest.raises(NotRun, match=expect):
            read_training_run(case, "x.yaml")
        return
    run = read_training_run(case, "x.yaml")
    assert run is not None
    dense, step = expect
    assert f"model.first_k_dense_replace={dense}" in run.overrides
    assert f"model.moe_layer_step={step}" in run.overrides


def test_a_count_with_a_note_or_its_unit_word_reads_as_its_number(tmp_path: Path) -> None:
    """A table's "1536 (after ramp-up)" or "1,024 (4 nodes)" is that count, as "4,096" is,
    and so is a count with the word of what its key counts ("8 sequences", "1,024 tokens",
    "8 GPUs"); a word that may count something else ("1,024 nodes" of GPUs, "8 K") stays
    refused, naming the key."""
    cases = [
        {"id": "plain", **_case()},
        {"id": "noted", **_case(model={"global_batch": "8 (after ramp-up)", "seq_len": "1,024"})},
        {
            "id": "worded",
            **_case(
                model={"global_batch": "8 sequences", "seq_len": "1,024 tokens"},
                system={"num_gpus": "8 GPUs"},
            ),
        },
        {"id": "nodes", **_case(system={"num_gpus": "8 nodes"})},
        {"id": "kilo", **_case(model={"seq_len": "1 K"})},
    ]
    report = validate(_write(tmp_path, cases))
    predicted = {c.case: c.predicted for c in report.comparisons}
    assert predicted["noted"] == predicted["plain"] == predicted["worded"]
    reasons = {s.case: s.reason for s in report.skipped}
    assert reasons == {
        "nodes": "system.num_gpus: got '8 nodes'; expected a whole number >= 1",
        "kilo": "model.seq_len: got '1 K'; expected a whole number >= 1",
    }


@pytest.mark.parametrize(
    ("cases", "setting"),
    [
        ("gpu", "hw.tile.peak.bf16=-1 TFLOP/s"),
        ("gpu", "run.max_events=-1"),
        ("tiles", "hw.tile.op_latenc=1us"),
        ("tiles", "run.max_events=-1"),
    ],
)
def test_a_setting_every_case_refuses_is_the_command_lines_error(
    tmp_path: Path, capsys, cases: str, setting: str
) -> None:
    """A --set every case refuses (a typo, a value out of range) is said once, as the command
    line's ConfigError (exit 2), not as every case not run. The tiled cases wrapped it into
    their own reason, so it went unnoticed; a run setting was checked only by the cases that
    simulate a run (a microbenchmark does not)."""
    if cases == "gpu":
        path = _write(tmp_path, [{"id": "a", **_case()}, {"id": "b", **_case()}])
    else:
        tiles = yaml.safe_load(Path("validation/tiles_measurements.yaml").read_text())["cases"]
        ids = {"tt_gemm_n150_bf16_hifi4_16k", "tt_readme_llama32_1b_n150"}
        path = _write(tmp_path, [c for c in tiles if c["id"] in ids])
    assert main(["validate", path, "-q", "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"palmsim: ConfigError: command line: --set: got {setting!r}")
    assert "expected a setting the cases take: all 2 of" in err
