"""The config loader: each phase on its own, then whole files, then error reporting.

Expected SI values are worked out by hand (3 MiB = 3 * 2^20 B, 200 Gb/s = 25e9 B/s, ...), never
copied from the loader's output.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from palmsim.config.loader import (
    build_hardware,
    check_hardware,
    check_keys,
    check_workload,
    format_exact,
    hardware_kind,
    hardware_schema,
    hf_to_model,
    load_hardware,
    load_mapping,
    load_run,
    load_workload,
    normalise_hardware,
    normalise_mapping,
    normalise_run,
    normalise_workload,
    parse_values,
    read_config_file,
    read_mapping_file,
    spec_to_raw,
)
from palmsim.config.specs import (
    GemmSpec,
    MappingSpec,
    MemoryKernelSpec,
    MemoryOpsSpec,
    RunSpec,
)
from palmsim.errors import ConfigError
from palmsim.units import parse_quantity

MISSING = ConfigError.MISSING

# --------------------------------------------------------------------------- fixtures

WAFER: dict[str, Any] = {
    "name": "w",
    "tile": {
        "peak": {"fp16": "16 TFLOP/s", "fp32": "8 TFLOP/s", "int8": "32 TOP/s"},
        "sram_capacity": "3 MiB",
        "sram_bandwidth": "2 TB/s",
    },
    "chip": {"cores": [4, 4], "noc": {"bandwidth": "1024 GB/s", "latency": "1 ns"}},
    "system": {
        "topology": "mesh",
        "chips": [5, 4],
        "link": {"bandwidth": "256 GB/s", "latency": "1 ns"},
    },
    "dram": {
        "placement": "die_edge",
        "capacity": "256 GB",
        "bandwidth": "256 GB/s",
        "latency": "100 ns",
    },
}

CLUSTER: dict[str, Any] = {
    "name": "c",
    "tile": {"peak": {"fp16": "312 TFLOP/s", "bf16": "312 TFLOP/s"}},
    "system": {
        "topology": "switch",
        "chips": [2, 8],
        "link": {"bandwidth": "300 GB/s", "latency": "1 us"},
        "node_link": {"bandwidth": "200 Gb/s", "latency": "2 us"},
    },
    "dram": {
        "placement": "per_tile",
        "capacity": "80 GB",
        "bandwidth": "2039 GB/s",
        "latency": "500 ns",
    },
}

WORKLOAD: dict[str, Any] = {
    "name": "tiny",
    "model": {
        "hidden_size": 512,
        "num_attention_heads": 8,
        "num_hidden_layers": 4,
        "vocab_size": 1000,
        "max_position_embeddings": 256,
        "hidden_act": "gelu",
    },
    "training": {"seq_len": 128, "global_batch_size": 16},
}

GPT2_CONFIG: dict[str, Any] = {  # the fields of Hugging Face's gpt2/config.json that matter
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_inner": None,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_type": "cls_index",
    "vocab_size": 50257,
}


def _write(tmp_path: Path, name: str, raw: dict[str, Any]) -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(raw))
    else:
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, Any]:
    """key -> value of each problem."""
    return {p.key: p.value for p in exc.value.problems}


# =========================================================================== phase 1: read


def test_read_yaml_and_json(tmp_path: Path) -> None:
    assert read_config_file(_write(tmp_path, "a.yaml", {"x": 1, "y": "2 ns"})) == {
        "x": 1,
        "y": "2 ns",
    }
    assert read_config_file(_write(tmp_path, "a.json", {"n_embd": 8})) == {"n_embd": 8}


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml.*missing; expected an existing config file"):
        read_config_file(tmp_path / "nope.yaml")


def test_read_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsystem:\n  topology: [mesh\n  other: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 4: .*valid YAML"):
        read_config_file(path)


def test_read_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(ConfigError, match=r"bad\.json: line 4: .*valid JSON"):
        read_config_file(path)


def test_read_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nsystem: {topology: mesh}\nname: b\n")
    with pytest.raises(ConfigError, match=r"line 3.*duplicate key 'name'"):
        read_config_file(path)


def test_a_number_with_an_exponent_reads_as_a_number(tmp_path: Path) -> None:
    """1e-3 and 1.5e3 are numbers in a config file (YAML 1.2, JSON), as 1.0e-3 was."""
    path = tmp_path / "x.yaml"
    path.write_text("a: 1e-3\nb: 1.5e3\nc: 1.0e-3\nd: 1e3 GB/s\n")
    assert read_config_file(path) == {"a": 1e-3, "b": 1500.0, "c": 1e-3, "d": "1e3 GB/s"}


@pytest.mark.parametrize(("text", "match"), [("", "empty"), ("- 1\n- 2\n", "top level")])
def test_read_needs_a_mapping(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_config_file(path)


def test_read_mapping_file_top_level_or_nested(tmp_path: Path) -> None:
    flat = _write(tmp_path, "flat.yaml", {"pp": 2, "tp": 4})
    nested = _write(tmp_path, "nested.yaml", {"description": "d", "mapping": {"pp": 2, "tp": 4}})
    assert read_mapping_file(flat) == {"pp": 2, "tp": 4}
    assert read_mapping_file(nested) == {"description": "d", "pp": 2, "tp": 4}
    bad = _write(tmp_path, "bad.yaml", {"mapping": [1]})
    with pytest.raises(ConfigError, match=r"bad\.yaml: mapping: got \[1\]"):
        read_mapping_file(bad)


# =========================================================================== phase 3: normalise


def test_normalise_hardware_fills_defaults_without_mutating() -> None:
    raw = copy.deepcopy(WAFER)
    del raw["name"]
    out, problems = normalise_hardware(raw, "w.yaml", "from-stem")
    assert problems == []
    assert out["name"] == "from-stem"
    assert out["tile"]["compute_efficiency"] == 1.0  # TileSpec's default
    assert "compute_efficiency" not in raw["tile"]
    assert "name" not in raw


def test_normalise_hardware_gpu_sram_defaults_to_zero_but_keeps_explicit_values() -> None:
    out, _ = normalise_hardware(CLUSTER, "c.yaml", "c")
    assert out["tile"]["sram_capacity"] == "0 B"
    assert out["tile"]["sram_bandwidth"] == "0 B/s"
    raw = copy.deepcopy(CLUSTER)
    raw["tile"]["compute_efficiency"] = 0.5
    raw["tile"]["sram_capacity"] = "40 MiB"
    out, _ = normalise_hardware(raw, "c.yaml", "c")
    assert out["tile"]["compute_efficiency"] == 0.5
    assert out["tile"]["sram_capacity"] == "40 MiB"


def test_normalise_hardware_wafer_gets_no_sram_default() -> None:
    raw = copy.deepcopy(WAFER)
    del raw["tile"]["sram_capacity"]
    out, _ = normalise_hardware(raw, "w.yaml", "w")
    assert "sram_capacity" not in out["tile"]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({}, "missing; expected one of 'mesh', 'torus', 'switch'$"),
        ({"system": {"chips": [1, 1]}}, "missing"),
        ({"system": "mesh"}, "missing"),
        ({"system": {"topology": "swich"}}, "got 'swich'; .*did you mean 'switch'"),
        (
            {"system": {"topology": "ring"}},
            "got 'ring'; expected one of 'mesh', 'torus', 'switch'$",
        ),
    ],
)
def test_hardware_kind_needs_a_known_system_topology(raw: dict[str, Any], match: str) -> None:
    """The topology selects the schema: without a known one no other key can be checked."""
    with pytest.raises(ConfigError, match=rf"h\.yaml: system\.topology: {match}"):
        hardware_kind(raw, "h.yaml")


@pytest.mark.parametrize(
    ("topology", "kind"), [("mesh", "wafer"), ("torus", "wafer"), ("switch", "gpu_cluster")]
)
def test_hardware_kind_follows_from_the_topology(topology: str, kind: str) -> None:
    assert hardware_kind({"system": {"topology": topology}}, "h.yaml") == kind


def test_normalise_workload_derives_defaults_and_renames_aliases() -> None:
    raw = {
        "model": {"n_embd": 64, "n_head": 4, "n_layer": 2, "activation_function": "gelu_new"},
        "training": {"seq_len": 8},
    }
    out, problems = normalise_workload(raw, "w.yaml", "stem")
    assert problems == []
    m = out["model"]
    assert (m["hidden_size"], m["num_attention_heads"], m["num_hidden_layers"]) == (64, 4, 2)
    assert m["num_key_value_heads"] == 4  # = heads
    assert m["intermediate_size"] == 256  # = 4 * 64
    assert m["hidden_act"] == "gelu"
    assert (m["norm"], m["position_embedding"], m["use_bias"], m["causal"]) == (
        "layernorm",
        "learned",
        True,
        True,
    )
    assert out["training"] == {
        "seq_len": 8,
        "dtype": "bf16",
        "optimizer": "adam",
        "optimizer_state_dtype": "fp32",
        "master_weights_dtype": "fp32",
        "grad_reduce_dtype": "weights",
        "mtp_depths": 0,
        "lora_rank": 0,
        "lora_targets": ("qkv", "out_proj", "fc1", "fc2"),
        "bf16_layers_at_start": 0,
        "bf16_layers_at_end": 0,
        "bf16_linears": (),
        "mtp_in_bf16": False,
        "moe_capacity_factor": None,
        "expert_load": "uniform",
        "expert_load_concentration": 1.0,
        "attention_kernel": "unfused",
        "packed_document_tokens": None,
        "fp8_recipe": "delayed",
        "fp8_param_gather": False,
        "fp8_transpose_cache": True,
    }
    assert out["name"] == "stem"
    assert out["mode"] == "training"
    assert "n_embd" in raw["model"]  # input untouched


@pytest.mark.parametrize(
    ("act", "expected"),
    [
        ("gelu", "gelu"),
        ("gelu_new", "gelu"),
        ("gelu_pytorch_tanh", "gelu"),
        ("gelu_fast", "gelu"),
        ("silu", "silu"),
        ("swiglu", "silu"),
        # a two-matrix MLP with one elementwise activation: costed as palmsim's gelu kind
        ("relu", "gelu"),
        ("relu2", "gelu"),  # squared ReLU (Nemotron-4, Hugging Face's NemotronConfig)
        ("squared_relu", "gelu"),
        ("tanh", "tanh"),  # left alone: the parse phase rejects it
    ],
)
def test_normalise_hidden_act(act: str, expected: str) -> None:
    out, _ = normalise_workload({"model": {"hidden_act": act}}, "w", "w")
    assert out["model"]["hidden_act"] == expected


def test_normalise_workload_does_not_derive_from_an_invalid_source() -> None:
    out, _ = normalise_workload(
        {"model": {"hidden_size": "big", "num_attention_heads": 2.5}}, "w", "w"
    )
    assert "intermediate_size" not in out["model"]
    assert "num_key_value_heads" not in out["model"]


def test_normalise_workload_alias_conflict_is_a_problem() -> None:
    _, problems = normalise_workload({"model": {"n_embd": 64, "hidden_size": 128}}, "w.yaml", "w")
    assert [(p.key, p.value) for p in problems] == [("model.n_embd", 64)]
    _, problems = normalise_workload({"model": {"n_embd": 64, "hidden_size": 64}}, "w.yaml", "w")
    assert problems == []


def test_normalise_mapping_and_run_fill_spec_defaults() -> None:
    assert normalise_mapping({"pp": 4}) == {
        "pp": 4,
        "tp": 1,
        "dp": 1,
        "micro_batch_size": 1,
        "schedule": "1f1b",
        "recompute": "none",
        "recompute_modules": (),
        "distribute_saved_activations": False,
        "placement": "snake",
        "partition": "layers",
        "pipeline_layout": None,
        "dp_overlap": True,
        "overlap_param_gather": False,
        "tp_overlap": False,
        "tp_comm_overlap": False,
        "tp_comm_overlap_sms": 16,
        "moe_a2a_overlap": False,
        "grad_accumulation": "fused",
        "p2p_scatter_gather": True,
        "p2p_overlap": True,
        "virtual_stages": 1,
        "zero": 0,
        "zero_collectives": "unit",
        "sequence_parallel": False,
        "ep": 1,
        "expert_tp": None,
        "expert_placement": "contiguous",
        "moe_dispatcher": "alltoall",
        "tp_2d": None,
        "cp": 1,
    }
    assert normalise_run({}) == {
        "seed": 0,
        "until": None,
        "symmetric_replicas": True,
        "max_events": 144_000_000,
        "max_memory": "8 GiB",
        "memory_check": True,
    }
    assert normalise_run({"seed": 3})["seed"] == 3


# =========================================================================== phase 3b: HF


def test_hf_to_model_gpt2_aliases_and_ignored_keys() -> None:
    model, problems = hf_to_model(GPT2_CONFIG, "gpt2.json")
    assert problems == []
    assert model == {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "max_position_embeddings": 1024,
        "hidden_act": "gelu_new",  # mapped to gelu by normalise_workload
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "vocab_size": 50257,
        "norm": "layernorm",  # from layer_norm_epsilon
    }  # n_inner null dropped (derived later); architectures, n_ctx, token ids ... ignored


def test_hf_to_model_llama_family() -> None:
    hf = {"model_type": "llama", "hidden_size": 64, "rms_norm_eps": 1e-5, "torch_dtype": "bf16"}
    model, _ = hf_to_model(hf, "x.json")
    assert model == {
        "hidden_size": 64,
        "norm": "rmsnorm",
        "position_embedding": "rope",
        "use_bias": False,
    }
    model, _ = hf_to_model({"model_type": "mistral", "attention_bias": True}, "x.json")
    assert model["use_bias"] is True
    model, _ = hf_to_model({"model_type": "qwen2", "tie_word_embeddings": True}, "x.json")
    assert (model["use_bias"], model["tie_word_embeddings"]) == (False, True)


@pytest.mark.parametrize("model_type", [["llama"], {"a": 1}, 7])
def test_hf_to_model_model_type_that_is_no_string_is_a_problem(model_type) -> None:
    """A list or map is unhashable and was an internal error where the family is looked up;
    it is the file's problem, named once, and the rest is read as a config of no family."""
    model, problems = hf_to_model({"model_type": model_type, "hidden_size": 64}, "x.json")
    assert model == {"hidden_size": 64}
    assert [(p.key, p.value) for p in problems] == [("model_type", model_type)]


@pytest.mark.parametrize(
    ("model_type", "why"),
    [
        ("t5", "an encoder-decoder (two stacks, cross-attention) is not one"),
        ("whisper", "an encoder-decoder (two stacks, cross-attention) is not one"),
        ("mamba", "state-space or recurrent layers are not"),
        ("rwkv", "state-space or recurrent layers are not"),
    ],
)
def test_hf_to_model_refuses_a_model_type_palmsim_does_not_build(model_type, why) -> None:
    """A T5 or a Mamba config.json was read from its sizes as a decoder-only transformer and
    simulated without a word: another model, silently."""
    hf = {"model_type": model_type, "hidden_size": 64, "num_hidden_layers": 2}
    _, problems = hf_to_model(hf, "x.json")
    (problem,) = problems
    assert (problem.key, problem.value) == ("model_type", model_type)
    assert problem.expected.startswith(f"a model palmsim builds ({why}")


def test_hf_to_model_warns_of_a_model_type_it_derives_nothing_for(caplog) -> None:
    """A family palmsim knows nothing of (StableLM) is read from its sizes, and the run says
    with which norm, position embedding and biases; a known one (Llama) says nothing."""
    with caplog.at_level("WARNING"):
        _, problems = hf_to_model({"model_type": "stablelm", "layer_norm_eps": 1e-5}, "g.json")
    assert problems == []
    assert "g.json: model_type 'stablelm' is no family palmsim derives settings for" in caplog.text
    assert "norm 'layernorm', position_embedding 'learned', use_bias True" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        hf_to_model({"model_type": "llama", "hidden_size": 64}, "l.json")
    assert caplog.text == ""


def test_hf_to_model_nemotron_is_layernorm_rope_without_biases() -> None:
    """Hugging Face's NemotronConfig states none of the three: its model type says them."""
    hf = {"model_type": "nemotron", "hidden_act": "relu2", "norm_eps": 1e-5, "hidden_size": 64}
    model, _ = hf_to_model(hf, "x.json")
    assert model == {
        "hidden_size": 64,
        "hidden_act": "relu2",
        "norm": "layernorm",
        "position_embedding": "rope",
        "use_bias": False,
    }


def test_hf_to_model_bert_is_not_causal_and_explicit_values_win() -> None:
    hf = {"model_type": "bert", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2}
    model, _ = hf_to_model(hf, "bert.json")
    assert model == {"causal": False, "hidden_dropout": 0.1, "attention_dropout": 0.2}
    model, _ = hf_to_model({"model_type": "llama", "norm": "layernorm"}, "x.json")
    assert model["norm"] == "layernorm"


# =========================================================================== phases 4-5


def test_check_keys_unknown_nested_key_with_did_you_mean() -> None:
    raw = copy.deepcopy(WAFER)
    raw["chip"]["noc"]["bandwith"] = raw["chip"]["noc"].pop("bandwidth")
    problems = check_keys(raw, hardware_schema("wafer"), "w.yaml")
    assert len(problems) == 1
    p = problems[0]
    assert (p.file, p.key, p.value) == ("w.yaml", "chip.noc.bandwith", "1024 GB/s")
    assert "did you mean 'bandwidth'" in p.expected


def test_check_keys_without_close_match_lists_known_keys() -> None:
    problems = check_keys({"zzz": 1}, {"alpha": None, "beta": None}, "f.yaml", "sec")
    assert problems[0].key == "sec.zzz"
    assert "alpha, beta" in problems[0].expected


def test_parse_values_converts_wafer_to_si() -> None:
    raw, _ = normalise_hardware(WAFER, "w.yaml", "w")
    values, problems = parse_values(raw, hardware_schema("wafer"), "w.yaml")
    assert problems == []
    assert values["tile"]["peak"] == (("fp16", 16e12), ("fp32", 8e12), ("int8", 32e12))
    assert values["tile"]["sram_capacity"] == 3 * 1_048_576
    assert values["tile"]["sram_bandwidth"] == 2e12
    assert values["system"]["chips"] == (5, 4)
    assert values["chip"]["cores"] == (4, 4)
    assert values["chip"]["noc"]["latency"] == pytest.approx(1e-9)
    assert values["system"]["link"]["bandwidth"] == 256e9
    assert values["dram"]["latency"] == pytest.approx(100e-9)


def test_parse_values_peak_is_sorted_by_dtype_name() -> None:
    raw, _ = normalise_hardware(CLUSTER, "c.yaml", "c")
    raw["tile"]["peak"] = {"int8": "624 TOP/s", "fp32": "19.5 TFLOP/s", "bf16": "312 TFLOP/s"}
    values, problems = parse_values(raw, hardware_schema("gpu_cluster"), "c.yaml")
    assert problems == []
    assert values["tile"]["peak"] == (("bf16", 312e12), ("fp32", 19.5e12), ("int8", 624e12))


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("system.link", "bandwidth", 256, r"system\.link\.bandwidth: got 256; .*bare number"),
        ("system.link", "bandwidth", "256 GB", r"system\.link\.bandwidth: got '256 GB'"),
        ("system.link", "bandwidth", "0 GB/s", r"positive bandwidth"),
        ("system.link", "count", -1, r"system\.link\.count: got -1; expected an int >= 0"),
        ("chip.noc", "latency", "-1 ns", r"chip\.noc\.latency.*non-negative"),
        ("system", "topology", "ring", r"one of 'mesh', 'torus', 'switch'"),
        ("system", "bidirectional_rings", "yes", r"system\.bidirectional_rings: got 'yes'"),
        ("tile", "compute_efficiency", 1.5, r"tile\.compute_efficiency: got 1\.5; .*\(0, 1\]"),
        ("tile", "compute_efficiency", 0, r"\(0, 1\]"),
        ("tile", "compute_efficiency", True, r"\(0, 1\]"),
        ("tile", "attention_efficiency", 1.2, r"tile\.attention_efficiency: got 1\.2; .*\[0, 1\]"),
        ("tile", "attention_efficiency", "high", r"tile\.attention_efficiency.*\[0, 1\]"),
        ("tile", "sram_capacity", "0 B", r"tile\.sram_capacity.*positive bytes"),
        ("tile", "peak", {"fp64": "1 TFLOP/s"}, r"tile\.peak\.fp64.*dtype key"),
        ("tile", "peak", {"fp16": "16 TB/s"}, r"tile\.peak\.fp16.*FLOP rate.*bandwidth"),
        ("tile", "peak", {}, r"tile\.peak: got \{\}"),
        ("system", "chips", [0, 4], r"system\.chips\[0\]: got 0; expected an int >= 1"),
        ("system", "chips", [5, -4], r"system\.chips\[1\]: got -4"),
        ("system", "chips", [5, 4.0], r"system\.chips\[1\]: got 4\.0"),
        ("system", "chips", [5, True], r"system\.chips\[1\]: got True"),
        ("chip", "cores", [4], r"chip\.cores: got \[4\]; expected a list of 2 ints"),
        ("chip", "cores", "4x4", r"chip\.cores"),
        ("dram", "placement", "everywhere", r"one of 'die_edge', 'per_tile'"),
    ],
)
def test_load_hardware_rejects_bad_value(
    tmp_path: Path, section: str, key: str, value: object, match: str
) -> None:
    raw = copy.deepcopy(WAFER)
    parent = raw
    for name in section.split("."):
        parent = parent[name]
    parent[key] = value
    with pytest.raises(ConfigError, match=match) as info:
        load_hardware(_write(tmp_path, "w.yaml", raw))
    assert len(info.value.problems) == 1
    assert info.value.problems[0].file == str(tmp_path / "w.yaml")


@pytest.mark.parametrize(
    ("index", "value"), [(0, 0), (0, -2), (1, 8.0), (1, True)]
)  # system.chips of a switch: [nodes, GPUs per node]
def test_load_cluster_rejects_non_positive_or_non_int_counts(
    tmp_path: Path, index: int, value: object
) -> None:
    raw = copy.deepcopy(CLUSTER)
    raw["system"]["chips"][index] = value
    with pytest.raises(
        ConfigError, match=rf"system\.chips\[{index}\]: got {value!r}; expected an int >= 1"
    ):
        load_hardware(_write(tmp_path, "c.yaml", raw))


def test_load_cluster_dram_must_be_per_tile(tmp_path: Path) -> None:
    raw = copy.deepcopy(CLUSTER)
    raw["dram"]["placement"] = "die_edge"
    with pytest.raises(
        ConfigError, match=r"dram\.placement: got 'die_edge'; expected one of 'per_tile'"
    ):
        load_hardware(_write(tmp_path, "c.yaml", raw))


# =========================================================================== phases 6-7: hardware


def test_load_wafer(tmp_path: Path) -> None:
    raw = copy.deepcopy(WAFER)
    raw["description"] = "a wafer"
    raw["sources"] = ["somewhere"]
    hw = load_hardware(_write(tmp_path, "w.yaml", raw))
    assert (hw.name, hw.kind, hw.cluster) == ("w", "wafer", None)
    assert hw.num_tiles == 5 * 4 * 4 * 4
    assert hw.tile.peak_flop_per_s == (("fp16", 16e12), ("fp32", 8e12), ("int8", 32e12))
    assert hw.tile.sram_capacity_bytes == 3_145_728
    assert hw.tile.compute_efficiency == 1.0
    assert hw.wafer is not None
    assert (hw.wafer.die_rows, hw.wafer.die_cols, hw.wafer.tile_rows, hw.wafer.tile_cols) == (
        5,
        4,
        4,
        4,
    )
    assert hw.wafer.intra_die.bandwidth_bytes_per_s == 1.024e12
    assert hw.wafer.inter_die.bandwidth_bytes_per_s == 2.56e11
    assert hw.dram.capacity_bytes == 2.56e11
    assert hw.dram.placement == "die_edge"


def test_load_cluster(tmp_path: Path) -> None:
    hw = load_hardware(_write(tmp_path, "c.yaml", CLUSTER))
    assert hw.num_tiles == 16
    assert hw.tile.sram_capacity_bytes == 0.0
    assert hw.tile.sram_bandwidth_bytes_per_s == 0.0
    assert hw.cluster is not None
    assert hw.cluster.devices_per_node == 8
    assert hw.cluster.inter_node.bandwidth_bytes_per_s == 25e9  # 200 Gb/s
    assert hw.cluster.intra_node.latency_s == pytest.approx(1e-6)
    assert hw.dram.bandwidth_bytes_per_s == 2.039e12


def test_load_hardware_name_defaults_to_file_stem(tmp_path: Path) -> None:
    raw = copy.deepcopy(WAFER)
    del raw["name"]
    assert load_hardware(_write(tmp_path, "my-wafer.yaml", raw)).name == "my-wafer"


def test_load_hardware_with_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.yaml", WAFER)
    hw = load_hardware(
        path,
        [
            "hw.system.link.bandwidth=512 GB/s",
            "hw.system.chips=[10, 8]",
            "hw.system.topology=torus",
            "hw.chip.noc.latency=2 ns",
            "mapping.pp=3",  # another section: ignored here
        ],
    )
    assert hw.wafer is not None
    assert hw.wafer.inter_die.bandwidth_bytes_per_s == 512e9
    assert (hw.wafer.die_rows, hw.wafer.die_cols) == (10, 8)
    assert hw.wafer.topology == "torus"
    assert hw.wafer.intra_die.latency_s == pytest.approx(2e-9)
    assert load_hardware(path).wafer.topology == "mesh"  # the file is untouched


def test_load_hardware_bad_override_value_is_reported_like_a_file_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"system\.link\.bandwidth: got 512; .*bare number"):
        load_hardware(_write(tmp_path, "w.yaml", WAFER), ["hw.system.link.bandwidth=512"])


def test_load_hardware_malformed_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"system\.topology"):
        load_hardware(_write(tmp_path, "w.yaml", WAFER), ["system.topology=torus"])


def test_misspelt_key_message(tmp_path: Path) -> None:
    raw = copy.deepcopy(WAFER)
    raw["system"]["link"]["bandwith"] = raw["system"]["link"].pop("bandwidth")
    with pytest.raises(
        ConfigError, match=r"system\.link\.bandwith.*did you mean 'bandwidth'"
    ) as info:
        load_hardware(_write(tmp_path, "w.yaml", raw))
    # ... and the key it should have been is reported missing, not the whole link
    assert _problems(info) == {
        "system.link.bandwith": "256 GB/s",
        "system.link.bandwidth": MISSING,
    }


def test_a_section_of_the_former_format_names_its_new_place(tmp_path: Path) -> None:
    raw = copy.deepcopy(WAFER)
    raw["cluster"] = {"num_nodes": 2}
    with pytest.raises(
        ConfigError,
        match=r"cluster\.num_nodes: got 2; expected nothing here: the chip-grid format names "
        r"it system\.chips \[nodes, GPUs per node\]",
    ):
        load_hardware(_write(tmp_path, "w.yaml", raw))


def test_all_problems_of_a_file_are_reported_together(tmp_path: Path) -> None:
    raw = copy.deepcopy(WAFER)
    link = raw["system"]["link"]
    link["bandwith"] = link.pop("bandwidth")  # 1 unknown, 2 missing
    raw["tile"]["sram_bandwidth"] = "256 GB"  # 3 wrong dimension
    raw["chip"]["noc"]["bandwidth"] = 1024  # 4 bare number
    raw["chip"]["cores"] = [0, 4]  # 5 impossible count
    raw["tile"]["compute_efficiency"] = 1.5  # 6 out of range
    raw["dram"]["latency"] = "-5 ns"  # 7 negative
    del raw["dram"]["capacity"]  # 8 missing
    with pytest.raises(ConfigError) as info:
        load_hardware(_write(tmp_path, "w.yaml", raw))
    assert set(_problems(info)) == {
        "system.link.bandwith",
        "system.link.bandwidth",
        "tile.sram_bandwidth",
        "chip.noc.bandwidth",
        "chip.cores[0]",
        "tile.compute_efficiency",
        "dram.latency",
        "dram.capacity",
    }
    assert len(info.value.problems) == 8
    message = str(info.value)
    assert message.startswith("8 problems:")
    # a wafer may have no off-chip memory (Cerebras): capacity 0 is allowed
    assert "w.yaml: dram.capacity: missing; expected a non-negative bytes" in message


def test_missing_section(tmp_path: Path) -> None:
    raw = copy.deepcopy(WAFER)
    del raw["chip"]
    with pytest.raises(ConfigError, match=r"chip: missing; expected a mapping with keys cores"):
        load_hardware(_write(tmp_path, "w.yaml", raw))


def test_build_hardware_from_values() -> None:
    raw, _ = normalise_hardware(CLUSTER, "c", "c")
    values, _ = parse_values(raw, hardware_schema("gpu_cluster"), "c")
    hw = build_hardware(values)
    assert hw.cluster is not None and hw.wafer is None
    assert hw.cluster.num_nodes == 2


def test_check_hardware_needs_a_training_dtype() -> None:
    values = {"tile": {"peak": (("int8", 32e12),)}}
    problems = check_hardware(values, "h.yaml")
    assert [p.key for p in problems] == ["tile.peak"]
    assert check_hardware({"tile": {"peak": (("bf16", 1e12),)}}, "h.yaml") == []
    assert check_hardware({}, "h.yaml") == []  # nothing parsed: nothing to relate


# =========================================================================== workload


def test_load_workload_yaml_with_defaults(tmp_path: Path) -> None:
    spec, mapping = load_workload(_write(tmp_path, "tiny.yaml", WORKLOAD))
    m, t = spec.model, spec.training
    assert m.name == "tiny"
    assert (m.hidden_size, m.num_attention_heads, m.num_key_value_heads) == (512, 8, 8)
    assert m.intermediate_size == 2048
    assert (m.norm, m.position_embedding, m.use_bias, m.tie_word_embeddings) == (
        "layernorm",
        "learned",
        True,
        True,
    )
    assert (t.seq_len, t.global_batch_size, t.dtype, t.optimizer) == (128, 16, "bf16", "adam")
    assert spec.mode == "training"
    assert mapping == {}


def test_load_workload_returns_raw_mapping_section_without_mapping_overrides(
    tmp_path: Path,
) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["mapping"] = {"pp": 2, "schedule": "gpipe"}
    path = _write(tmp_path, "w.yaml", raw)
    _, mapping = load_workload(path, ["mapping.pp=8"])
    assert mapping == {"pp": 2, "schedule": "gpipe"}
    _, mapping = load_workload(path, ["workload.mapping.pp=4"])
    assert mapping == {"pp": 4, "schedule": "gpipe"}


def test_load_workload_mapping_must_be_a_mapping(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["mapping"] = [1, 2]
    with pytest.raises(ConfigError, match=r"mapping: got \[1, 2\]; expected a mapping"):
        load_workload(_write(tmp_path, "w.yaml", raw))


def test_load_workload_overrides(tmp_path: Path) -> None:
    spec, _ = load_workload(
        _write(tmp_path, "w.yaml", WORKLOAD),
        ["model.num_hidden_layers=2", "training.dtype=fp16", "workload.name=renamed"],
    )
    assert spec.model.num_hidden_layers == 2
    assert spec.training.dtype == "fp16"
    assert spec.model.name == "renamed"


def test_unknown_key_in_our_yaml_is_an_error(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["model"]["torch_dtype"] = "float16"  # fine in a HF json, not in our format
    raw["training"]["seq_length"] = 128
    with pytest.raises(ConfigError) as info:
        load_workload(_write(tmp_path, "w.yaml", raw))
    assert set(_problems(info)) == {"model.torch_dtype", "training.seq_length"}
    assert "did you mean 'seq_len'" in str(info.value)


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        (
            "model",
            "num_attention_heads",
            7,
            r"model\.num_attention_heads: got 7; .*divisor of hidden_size 512",
        ),
        (
            "model",
            "num_key_value_heads",
            3,
            r"model\.num_key_value_heads: got 3; .*divisor of num_attention_heads 8",
        ),
        ("training", "seq_len", 512, r"training\.seq_len: got 512; expected at most .*= 256"),
        (
            "training",
            "dtype",
            "int8",
            r"training\.dtype: got 'int8'; expected one of 'fp32', 'fp16', 'bf16', 'fp8'",
        ),
        (
            "training",
            "optimizer",
            "adamw",
            r"one of 'adam', 'sgd', 'muon' \(did you mean 'adam'\?\)",
        ),
        ("model", "hidden_act", "tanh", r"model\.hidden_act: got 'tanh'; expected one of 'gelu'"),
        ("model", "norm", "batchnorm", r"one of 'layernorm', 'rmsnorm'"),
        ("model", "position_embedding", "alibi", r"one of 'learned', 'rope'"),
        (
            "model",
            "hidden_dropout",
            1.0,
            r"model\.hidden_dropout: got 1\.0; expected a number in \[0, 1\)",
        ),
        ("model", "use_bias", "yes", r"model\.use_bias: got 'yes'; expected true or false"),
        ("model", "hidden_size", 0, r"model\.hidden_size: got 0; expected an int >= 1"),
        ("model", "vocab_size", 1000.0, r"model\.vocab_size: got 1000\.0"),
        ("training", "global_batch_size", False, r"training\.global_batch_size: got False"),
        ("training", "packed_document_tokens", 0, r"training\.packed_document_tokens: got 0"),
        ("training", "optimizer_state_dtype", "fp8", r"training\.optimizer_state_dtype: got"),
        ("training", "master_weights_dtype", "bf8", r"master_weights_dtype: got 'bf8'; .*'none'"),
        ("training", "grad_reduce_dtype", "fp64", r"grad_reduce_dtype: got 'fp64'; .*'weights'"),
    ],
)
def test_load_workload_rejects(
    tmp_path: Path, section: str, key: str, value: object, match: str
) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw[section][key] = value
    with pytest.raises(ConfigError, match=match):
        load_workload(_write(tmp_path, "w.yaml", raw))


def test_load_workload_mode_must_be_known(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["mode"] = "serving"
    with pytest.raises(ConfigError, match=r"mode: got 'serving'; expected one of 'training'"):
        load_workload(_write(tmp_path, "w.yaml", raw))


def test_inference_mode_needs_an_inference_section(tmp_path: Path) -> None:
    """The error named all 25 keys an inference section may hold; it names the three one
    must, and the --set that gives them."""
    raw = copy.deepcopy(WORKLOAD)
    raw["mode"] = "inference"
    with pytest.raises(ConfigError) as info:
        load_workload(_write(tmp_path, "w.yaml", raw))
    text = str(info.value)
    assert "inference: missing; expected an inference: section for mode 'inference' " in text
    assert "(prompt_len, output_len and batch at least; or --set inference.prompt_len=" in text
    assert "math_fidelity" not in text


def test_inference_section_gives_its_spec_and_mapping(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["mode"] = "inference"
    raw["inference"] = {"prompt_len": 8, "output_len": 2, "batch": 4, "mapping": {"pp": 2}}
    spec, mapping = load_workload(_write(tmp_path, "w.yaml", raw))
    assert spec.inference is not None
    assert (spec.inference.prompt_len, spec.inference.batch) == (8, 4)
    assert spec.inference.weight_dtype == "fp16"  # default
    assert mapping == {"pp": 2}


def test_the_down_projection_format_is_read_and_checked(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["mode"] = "inference"
    raw["inference"] = {"prompt_len": 8, "output_len": 2, "batch": 4, "mlp_weight_dtype": "bfp4"}
    path = _write(tmp_path, "w.yaml", raw)
    spec, _ = load_workload(path, ["inference.mlp_down_weight_dtype=bfp8"])
    assert spec.inference is not None
    assert (spec.inference.mlp_weight_dtype, spec.inference.mlp_down_weight_dtype) == (
        "bfp4",
        "bfp8",
    )
    assert load_workload(path)[0].inference.mlp_down_weight_dtype is None  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"mlp_down_weight_dtype: got 'bfp9'.*did you mean"):
        load_workload(path, ["inference.mlp_down_weight_dtype=bfp9"])


def test_the_kv_placement_is_read_defaulted_and_checked(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["mode"] = "inference"
    raw["inference"] = {"prompt_len": 8, "output_len": 2, "batch": 4}
    path = _write(tmp_path, "w.yaml", raw)
    assert load_workload(path)[0].inference.kv_placement == "sequence"  # type: ignore[union-attr]
    spec, _ = load_workload(path, ["inference.kv_placement=request"])
    assert spec.inference is not None and spec.inference.kv_placement == "request"
    with pytest.raises(ConfigError, match=r"kv_placement: got 'requests'.*did you mean"):
        load_workload(path, ["inference.kv_placement=requests"])


def test_the_prefill_attention_split_is_read_defaulted_and_checked(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["mode"] = "inference"
    raw["inference"] = {"prompt_len": 8, "output_len": 2, "batch": 4}
    path = _write(tmp_path, "w.yaml", raw)
    inference = load_workload(path)[0].inference
    assert inference is not None and inference.prefill_attention_split == "even"
    spec, _ = load_workload(path, ["inference.prefill_attention_split=pairs"])
    assert spec.inference is not None and spec.inference.prefill_attention_split == "pairs"
    with pytest.raises(ConfigError, match=r"prefill_attention_split: got 'pair'.*did you mean"):
        load_workload(path, ["inference.prefill_attention_split=pair"])


def test_invalid_source_of_derived_default_is_reported_once(tmp_path: Path) -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["model"]["hidden_size"] = "512"
    with pytest.raises(ConfigError) as info:
        load_workload(_write(tmp_path, "w.yaml", raw))
    assert _problems(info) == {"model.hidden_size": "512"}


def test_check_workload_skips_relations_of_unparsed_values() -> None:
    assert check_workload({"model": {"hidden_size": 512}}, "w") == []
    problems = check_workload(
        {"model": {"hidden_size": 10, "num_attention_heads": 4}}, "w.yaml", "m.json"
    )
    assert [(p.file, p.key) for p in problems] == [("m.json", "model.num_attention_heads")]


def test_bare_gpt2_config_json_with_training_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpt2.json", GPT2_CONFIG)
    spec, mapping = load_workload(
        path, ["training.seq_len=1024", "training.global_batch_size=512", "model.n_layer=6"]
    )
    m = spec.model
    assert m.name == "gpt2"
    assert (m.hidden_size, m.num_attention_heads, m.num_key_value_heads) == (768, 12, 12)
    assert m.num_hidden_layers == 6  # an alias override, renamed like the file's aliases
    assert m.intermediate_size == 3072  # n_inner null -> 4 * 768
    assert (m.vocab_size, m.max_position_embeddings) == (50257, 1024)
    assert m.hidden_act == "gelu"  # gelu_new
    assert (m.attention_dropout, m.hidden_dropout) == (0.1, 0.1)
    assert (m.norm, m.position_embedding, m.use_bias, m.tie_word_embeddings, m.causal) == (
        "layernorm",
        "learned",
        True,
        True,
        True,
    )
    assert (spec.training.seq_len, spec.training.global_batch_size) == (1024, 512)
    assert mapping == {}


def test_bare_config_json_without_training_says_how_to_set_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpt2.json", GPT2_CONFIG)
    with pytest.raises(
        ConfigError,
        match=r"training\.global_batch_size: missing; expected an int >= 1, "
        r"e\.g\. --set training\.global_batch_size=512",
    ) as info:
        load_workload(path)
    assert set(_problems(info)) == {"training.seq_len", "training.global_batch_size"}


def test_bare_config_json_unknown_override_key_is_still_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpt2.json", GPT2_CONFIG)
    with pytest.raises(ConfigError, match=r"model\.hiden_size.*did you mean 'hidden_size'"):
        load_workload(
            path,
            ["training.seq_len=8", "training.global_batch_size=8", "model.hiden_size=1"],
        )


def test_config_json_in_a_snapshot_folder_is_named_after_the_folder(tmp_path: Path) -> None:
    (tmp_path / "gpt2-small").mkdir()
    path = _write(tmp_path, "gpt2-small/config.json", GPT2_CONFIG)
    spec, _ = load_workload(path, ["training.seq_len=8", "training.global_batch_size=8"])
    assert spec.model.name == "gpt2-small"


def test_yaml_model_can_be_a_relative_path_to_a_hf_json(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    _write(tmp_path, "hf/gpt2.config.json", GPT2_CONFIG)
    raw = {"model": "hf/gpt2.config.json", "training": {"seq_len": 1024, "global_batch_size": 8}}
    spec, _ = load_workload(_write(tmp_path, "g.yaml", raw), ["model.num_hidden_layers=2"])
    assert spec.model.name == "g"
    assert spec.model.hidden_size == 768
    assert spec.model.num_hidden_layers == 2


def test_yaml_model_path_problems_name_the_json(tmp_path: Path) -> None:
    bad = dict(GPT2_CONFIG, n_head=7)  # 768 % 7 != 0
    _write(tmp_path, "m.json", bad)
    raw = {"model": "m.json", "training": {"seq_len": 8, "global_batch_size": 8}}
    with pytest.raises(ConfigError) as info:
        load_workload(_write(tmp_path, "g.yaml", raw))
    assert [(p.file, p.key) for p in info.value.problems] == [
        (str(tmp_path / "m.json"), "model.num_attention_heads")
    ]


def test_yaml_model_path_missing_is_reported_with_other_problems(tmp_path: Path) -> None:
    raw = {"model": "missing.json", "training": {"seq_len": 0, "global_batch_size": 8}}
    with pytest.raises(ConfigError) as info:
        load_workload(_write(tmp_path, "g.yaml", raw))
    assert _problems(info) == {"model": "missing.json", "training.seq_len": 0}
    assert "missing.json" in str(info.value)


# =========================================================================== mapping and run


def test_load_mapping_merges_in_order_with_defaults_and_overrides() -> None:
    spec = load_mapping(
        [
            ("w.yaml", {"pp": 20, "tp": 16, "schedule": "gpipe"}),
            ("m.yaml", {"pp": 10, "recompute": "full"}),
            ("--pp flags", {"dp": 2}),
        ],
        [
            "mapping.micro_batch_size=4",
            "mapping.dp_overlap=false",
            "mapping.p2p_overlap=false",
            "mapping.p2p_scatter_gather=false",
            "hw.x=1",
        ],
    )
    assert spec == MappingSpec(
        pp=10,
        tp=16,
        dp=2,
        micro_batch_size=4,
        schedule="gpipe",
        recompute="full",
        dp_overlap=False,
        p2p_overlap=False,
        p2p_scatter_gather=False,
    )


def test_load_mapping_with_no_sections_is_the_default() -> None:
    assert load_mapping([]) == MappingSpec()


def test_load_mapping_problems_name_where_each_key_came_from() -> None:
    with pytest.raises(ConfigError) as info:
        load_mapping(
            [("w.yaml", {"pp": 0, "tpp": 2}), ("m.yaml", {"schedule": ""})],
            ["mapping.recompute=some", "mapping.dp_overlap=1"],
        )
    assert {(p.file, p.key) for p in info.value.problems} == {
        ("w.yaml", "mapping.pp"),
        ("w.yaml", "mapping.tpp"),
        ("m.yaml", "mapping.schedule"),
        ("--set mapping.recompute=some", "mapping.recompute"),
        ("--set mapping.dp_overlap=1", "mapping.dp_overlap"),
    }
    assert "did you mean 'tp'" in str(info.value)


def test_load_mapping_later_section_fixes_earlier_bad_value() -> None:
    spec = load_mapping([("w.yaml", {"tp": 2.5}), ("m.yaml", {"tp": 2})])
    assert spec.tp == 2


def test_load_mapping_section_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"m\.yaml: mapping: got 3"):
        load_mapping([("m.yaml", 3)])  # type: ignore[list-item]


def test_load_run() -> None:
    assert load_run() == RunSpec(seed=0, until_s=None)
    spec = load_run(["run.seed=7", "run.until=10 ms", "mapping.pp=2"])
    assert spec.seed == 7
    assert spec.until_s == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("run.seed=-1", r"--set run\.seed=-1: run\.seed: got -1; expected an int >= 0"),
        ("run.seed=true", r"run\.seed: got True"),
        ("run.until=5", r"run\.until: got 5; .*bare number"),
        ("run.until=0 s", r"run\.until: got '0 s'; expected a positive time"),
        ("run.sede=1", r"run\.sede.*did you mean 'seed'"),
    ],
)
def test_load_run_rejects(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_run([override])


# =========================================================================== spec -> raw


@pytest.mark.parametrize(
    ("value", "dimension", "expected"),
    [
        (256e9, "bandwidth", "256 GB/s"),
        (25e9, "bandwidth", "25 GB/s"),  # 200 Gb/s, written in bytes
        (3 * 2**20, "bytes", "3 MiB"),  # binary: decimal would lose digits
        (2**30, "bytes", "1 GiB"),
        (80e9, "bytes", "80 GB"),
        (0.0, "bytes", "0 B"),
        (1e-9, "time", "1 ns"),
        (16e12, "flop_rate", "16 TFLOP/s"),
    ],
)
def test_format_exact(value: float, dimension: str, expected: str) -> None:
    assert format_exact(value, dimension) == expected


def test_format_exact_prefers_a_mantissa_from_1_to_1000() -> None:
    """A region of 30 x 30 cores at 20.89 mW each is 18.801000000000002 W in floating point,
    which "1.8801e-11 TW" also parses back to exactly, in fewer characters: the readable unit
    wins."""
    value = parse_quantity("20.89 mW", "power") * 900
    assert format_exact(value, "power") == "18.801000000000002 W"


def test_format_exact_falls_back_to_full_precision() -> None:
    value = 1e9 / 3
    text = format_exact(value, "bandwidth")
    assert parse_quantity(text, "bandwidth") == value


def test_spec_to_raw_hardware_file_format(tmp_path: Path) -> None:
    hw = load_hardware(_write(tmp_path, "c.yaml", CLUSTER))
    raw = spec_to_raw(hw)
    assert raw == {
        "name": "c",
        "tile": {
            "peak": {"bf16": "312 TFLOP/s", "fp16": "312 TFLOP/s"},
            "sram_capacity": "0 B",
            "sram_bandwidth": "0 B/s",
            "compute_efficiency": 1.0,
            "gemm": None,
            "memory_ops": None,
        },
        "system": {
            "topology": "switch",
            "chips": [2, 8],
            "link": {"bandwidth": "300 GB/s", "latency": "1 us"},
            "node_link": {"bandwidth": "25 GB/s", "latency": "2 us"},  # 200 Gb/s
        },
        "dram": {
            "placement": "per_tile",
            "capacity": "80 GB",
            "bandwidth": "2039 GB/s",  # not 2.039 TB/s: 2.039 * 1e12 is 1 ulp off
            "latency": "500 ns",
        },
    }
    assert load_hardware(_write(tmp_path, "again.yaml", raw)) == hw


def test_spec_to_raw_wafer_round_trip(tmp_path: Path) -> None:
    hw = load_hardware(_write(tmp_path, "w.yaml", WAFER))
    raw = spec_to_raw(hw)
    assert raw["tile"]["sram_capacity"] == "3 MiB"
    assert raw["chip"]["cores"] == [4, 4]
    assert parse_quantity(raw["chip"]["noc"]["bandwidth"], "bandwidth") == 1024e9
    assert raw["system"] == {
        "topology": "mesh",
        "chips": [5, 4],
        "link": {"bandwidth": "256 GB/s", "latency": "1 ns"},
    }
    assert load_hardware(_write(tmp_path, "again.yaml", raw)) == hw


def test_spec_to_raw_workload_mapping_run_round_trip(tmp_path: Path) -> None:
    spec, _ = load_workload(_write(tmp_path, "tiny.yaml", WORKLOAD))
    raw = spec_to_raw(spec)
    assert raw["name"] == "tiny"
    assert raw["model"]["intermediate_size"] == 2048
    assert load_workload(_write(tmp_path, "other-name.yaml", raw))[0] == spec

    mapping = MappingSpec(pp=4, tp=2, recompute="selective", dp_overlap=False)
    assert load_mapping([("m", spec_to_raw(mapping))]) == mapping

    run = RunSpec(seed=3, until_s=0.25, memory_check=False)
    raw_run = spec_to_raw(run)
    assert raw_run == {
        "seed": 3,
        "until": "250 ms",
        "symmetric_replicas": True,
        "max_events": 144_000_000,
        "max_memory": "8 GiB",
        "memory_check": False,
    }
    assert load_run([f"run.{k}={v}" for k, v in raw_run.items()]) == run
    assert spec_to_raw(RunSpec())["until"] is None


def test_spec_to_raw_rejects_non_specs() -> None:
    with pytest.raises(TypeError):
        spec_to_raw({"a": 1})  # type: ignore[arg-type]


def test_gemm_and_memory_ops_sections_parse_and_round_trip(tmp_path: Path) -> None:
    raw = copy.deepcopy(CLUSTER)
    raw["tile"]["gemm"] = {
        "compute_units": 108,
        "tile": [128, 128],
        "max_efficiency": 0.916,
        "launch_latency": "28.9 us",
    }
    raw["tile"]["memory_ops"] = {"bandwidth": "1.7 TB/s", "launch_latency": "46 us"}
    hw = load_hardware(_write(tmp_path, "c.yaml", raw))
    assert hw.tile.gemm == GemmSpec(108, 128, 128, 0.916, pytest.approx(28.9e-6))
    assert hw.tile.memory_ops == MemoryOpsSpec(1.7e12, pytest.approx(46e-6))
    assert load_hardware(_write(tmp_path, "again.yaml", spec_to_raw(hw))) == hw


def test_memory_ops_kinds_parse_and_round_trip(tmp_path: Path) -> None:
    raw = copy.deepcopy(CLUSTER)
    raw["tile"]["memory_ops"] = {
        "bandwidth": "1.7 TB/s",
        "launch_latency": "46 us",
        "softmax": {"bandwidth": "1 TB/s", "launch_latency": "13 us"},
        "norm": {"bandwidth": "1.6 TB/s", "launch_latency": "48 us"},
    }
    hw = load_hardware(_write(tmp_path, "c.yaml", raw))
    ops = hw.tile.memory_ops
    assert ops is not None
    assert ops.for_kind("softmax") == MemoryKernelSpec(1e12, pytest.approx(13e-6))
    assert ops.for_kind("norm") == MemoryKernelSpec(1.6e12, pytest.approx(48e-6))
    assert ops.for_kind("dropout") == MemoryKernelSpec(1.7e12, pytest.approx(46e-6))
    assert load_hardware(_write(tmp_path, "again.yaml", spec_to_raw(hw))) == hw


def test_memory_ops_unknown_kind_is_named_with_did_you_mean(tmp_path: Path) -> None:
    raw = copy.deepcopy(CLUSTER)
    raw["tile"]["memory_ops"] = {
        "bandwidth": "1.7 TB/s",
        "launch_latency": "46 us",
        "softmaxx": {"bandwidth": "1 TB/s", "launch_latency": "13 us"},
    }
    with pytest.raises(ConfigError, match=r"tile\.memory_ops\.softmaxx") as info:
        load_hardware(_write(tmp_path, "c.yaml", raw))
    assert "did you mean 'softmax'" in str(info.value)


def test_gemm_section_problems_name_their_keys(tmp_path: Path) -> None:
    raw = copy.deepcopy(CLUSTER)
    raw["tile"]["gemm"] = {"compute_unit": 108, "tile": [128], "max_efficiency": 1.5}
    with pytest.raises(ConfigError) as info:
        load_hardware(_write(tmp_path, "c.yaml", raw))
    keys = {p.key for p in info.value.problems}
    assert keys == {
        "tile.gemm.compute_unit",  # unknown, with a did-you-mean
        "tile.gemm.compute_units",  # missing
        "tile.gemm.tile",
        "tile.gemm.max_efficiency",
        "tile.gemm.launch_latency",
    }
    assert "did you mean 'compute_units'" in str(info.value)


def test_an_option_outside_its_modes_is_an_error_naming_the_key() -> None:
    """zero, recompute, schedule, ... are training options: set (by any source) in an
    inference run they are a ConfigError naming the key and where it came from; options of
    both modes, and defaults, pass."""
    from palmsim.config.loader import load_mapping
    from palmsim.config.specs import MappingSpec, modes_of

    with pytest.raises(ConfigError) as info:
        load_mapping(
            [("w.yaml", {"pp": 2, "recompute": "full"})], ["mapping.zero=3"], mode="inference"
        )
    text = str(info.value)
    assert "w.yaml: mapping.recompute: got 'full'; expected nothing in an inference run" in text
    assert "--set mapping.zero=3: mapping.zero: got 3" in text
    assert "(mapping.zero applies to training only)" in text
    assert load_mapping([("w.yaml", {"pp": 2, "p2p_overlap": False})], mode="inference").pp == 2
    assert load_mapping([("w.yaml", {"zero": 1})], mode="training").zero == 1
    assert modes_of(MappingSpec, "tp") == ("training", "inference")
    assert modes_of(MappingSpec, "virtual_stages") == ("training",)


def test_an_inference_run_takes_the_parallelism_of_a_training_mapping(caplog) -> None:
    """t-18b's mapping: is PALM's training mapping (pp 20, tp 16, dp 1, micro-batches of 32,
    1F1B, full recompute, layer partition). An inference run without an inference.mapping
    takes its degrees and micro-batch, and leaves the schedule, recompute and partition to
    training runs with a warning naming them; the same keys from a flag are still refused,
    and so is a degree inference does not model (cp) in the file."""
    from palmsim.api import load_experiment

    inference = ["workload.mode=inference", "inference.prompt_len=16", "inference.output_len=2"]
    inference.append("inference.batch=32")
    with caplog.at_level("WARNING"):
        exp = load_experiment(
            "hw_configs/tx8-wafer.yaml", "workloads/t-18b.yaml", overrides=inference
        )
    m = exp.mapping
    assert (m.pp, m.tp, m.dp, m.micro_batch_size, m.placement) == (20, 16, 1, 32, "snake")
    assert (
        "mapping.partition, mapping.recompute, mapping.schedule apply to training: not read"
        in caplog.text
    )
    with pytest.raises(ConfigError, match=r"mapping\.recompute: got 'full'; expected nothing"):
        load_experiment(
            "hw_configs/tx8-wafer.yaml",
            "workloads/t-18b.yaml",
            overrides=inference,
            mapping_flags={"recompute": "full"},
        )
    with pytest.raises(ConfigError, match=r"mapping\.cp: got 2; expected nothing in an inference"):
        load_experiment(
            "hw_configs/tx8-wafer.yaml",
            "workloads/t-18b.yaml",
            overrides=[*inference, "mapping.cp=2"],
        )
    training = load_experiment("hw_configs/tx8-wafer.yaml", "workloads/t-18b.yaml").mapping
    assert (training.schedule, training.recompute) == ("1f1b", "full")


@pytest.mark.parametrize(("key", "mode"), [("cp", "inference"), ("ep", "serving")])
def test_parallelisms_a_mode_does_not_model_are_refused(key: str, mode: str) -> None:
    """Issue 15: inference does not model cp, nor serving ep, so either (from a flag or a
    file) is a one-line ConfigError naming the key, never silently ignored; inference takes
    ep (its mixture-of-experts layers)."""
    from palmsim.config.loader import load_mapping

    with pytest.raises(ConfigError) as info:
        load_mapping([("command-line flags", {key: 2})], mode=mode)
    text = str(info.value)
    article = "an" if mode == "inference" else "a"
    assert f"mapping.{key}: got 2; expected nothing in {article} {mode} run" in text
    assert len(text.strip().splitlines()) == 1
    assert load_mapping([("flags", {"ep": 2})], mode="inference").ep == 2


# =========================================================================== multi-chip keys


def test_multichip_keys_are_checked(tmp_path: Path) -> None:
    """A granularity that does not divide the core grid, DRAM positions outside the die or
    missing for placement 'positions', and an unknown fidelity are each named."""
    raw = copy.deepcopy(WAFER)
    raw["chip"]["granularity"] = 3  # 4x4 cores per chip
    raw["dram"]["placement"] = "positions"
    raw["tile"]["fidelity_passes"] = {"LoFi": 1, "HiFi5": 5}
    with pytest.raises(ConfigError) as info:
        load_hardware(_write(tmp_path, "w.yaml", raw))
    assert set(_problems(info)) == {
        "chip.granularity",
        "dram.positions",
        "tile.fidelity_passes.HiFi5",
    }
    raw["chip"]["granularity"] = 2
    raw["dram"]["positions"] = [[0, 0], [4, 1]]
    del raw["tile"]["fidelity_passes"]
    with pytest.raises(ConfigError) as info:
        load_hardware(_write(tmp_path, "w.yaml", raw))
    assert set(_problems(info)) == {"dram.positions[1]"}


def test_a_coarsened_spec_round_trips(tmp_path: Path) -> None:
    """The resolved config of a coarse run re-loads to the same (already aggregated) spec."""
    raw = copy.deepcopy(WAFER)
    raw["chip"]["granularity"] = [2, 4]
    raw["system"]["link"]["count"] = 2
    raw["dram"]["placement"] = "positions"
    raw["dram"]["positions"] = [[0, 0], [3, 3]]
    hw = load_hardware(_write(tmp_path, "w.yaml", raw))
    assert (hw.wafer.tile_rows, hw.wafer.tile_cols) == (2, 1)
    assert (hw.wafer.unit_rows, hw.wafer.unit_cols) == (2, 4)
    assert load_hardware(_write(tmp_path, "copy.yaml", spec_to_raw(hw))) == hw


def test_a_wafer_simulating_too_many_tiles_asks_for_a_granularity() -> None:
    """WSE-2's 750x750 cores one by one would build a 562,500-tile chip graph."""
    with pytest.raises(ConfigError) as info:
        load_hardware("hw_configs/cerebras-wse2.yaml", ["hw.chip.granularity=1"])
    assert set(_problems(info)) == {"chip.granularity"}
    assert "562500" in str(info.value)


def test_a_value_of_nested_aliases_prints_a_line_not_gigabytes(tmp_path: Path) -> None:
    """A 'billion laughs' spec: nine levels of 10-element aliases are 10^10 values when
    expanded. YAML shares the aliased lists (little memory), but printing the value whole in
    the error took gigabytes; the message shows a bounded repr."""
    lines = ["bomb:", "  a0: &a0 [1,1,1,1,1,1,1,1,1,1]"]
    lines += [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "w.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as raised:
        load_workload(str(path))
    (bomb,) = [p for p in raised.value.problems if p.key == "bomb"]
    assert len(str(bomb)) < 500 + len(str(path))
    assert str(bomb).startswith(f"{path}: bomb: got {{'a0': [1, 1, 1, 1, 1, 1, 1, 1, ...], 'a1'")


def test_a_mode_that_is_no_string_is_the_schemas_one_line_error(tmp_path: Path) -> None:
    """``mode: [a]`` reached the check of overrides a mode never reads, which looked the list
    up in a dict (TypeError); it is the schema's error naming the key."""
    path = tmp_path / "w.yaml"
    path.write_text("mode: [a]\n" + Path("workloads/llama2-7b.yaml").read_text())
    with pytest.raises(ConfigError, match=r"mode: got \['a'\]; expected one of 'training'"):
        load_workload(str(path), ["inference.batch=2"])


def test_a_training_run_checks_the_inference_mapping_it_does_not_use(tmp_path: Path) -> None:
    """A bad value is the file's problem in any mode: --set inference.mapping.pp=abc ran a
    training run with no word (found by fuzzing). An inference.* override a training run
    would never read is refused; the file's own inference mapping is checked all the same."""
    for pp in ("abc", "2"):
        with pytest.raises(ConfigError, match=r"nothing in a training run"):
            load_workload("workloads/llama3.1-70b.yaml", [f"inference.mapping.pp={pp}"])
    text = Path("workloads/llama3.1-70b.yaml").read_text()
    assert "\n  mapping:\n    pp: 1\n" in text
    path = tmp_path / "w.yaml"
    path.write_text(text.replace("\n  mapping:\n    pp: 1\n", "\n  mapping:\n    pp: abc\n"))
    with pytest.raises(ConfigError, match=r"inference\.mapping: mapping\.pp: got 'abc'"):
        load_workload(str(path))


def test_a_refused_value_is_one_problem_not_also_a_missing_key(tmp_path: Path) -> None:
    """DeepSeek-V3's qk_nope_head_dim of -1 was reported twice: refused, then 'missing'
    by the MLA cross-check, which no longer saw it (fuzzing of MoE configs)."""
    import json

    hf = json.loads(Path("workloads/hf/deepseek-v3.config.json").read_text())
    hf["qk_nope_head_dim"] = -1
    path = tmp_path / "config.json"
    path.write_text(json.dumps(hf))
    with pytest.raises(ConfigError) as info:
        load_workload(str(path))
    (problem,) = [p for p in info.value.problems if p.key == "model.qk_nope_head_dim"]
    assert problem.value == -1 and problem.expected == "an int >= 1 or null"


def test_an_inference_run_and_serve_need_no_training_keys_of_a_bare_hf_config() -> None:
    """An inference run reads no training.seq_len or global_batch_size and refuses them as
    overrides; palmsim serve reads the model alone: a bare config.json loads for both."""
    path = "workloads/hf/llama-2-7b.config.json"
    sets = ["workload.mode=inference", "inference.prompt_len=64", "inference.output_len=4",
            "inference.batch=2"]  # fmt: skip
    workload, _ = load_workload(path, sets)
    assert workload.inference is not None and workload.inference.batch == 2
    served, _ = load_workload(path, model_only=True)
    assert served.model.num_hidden_layers == 32
    with pytest.raises(ConfigError, match=r"training\.seq_len: missing"):
        load_workload(path)  # a training run needs them
