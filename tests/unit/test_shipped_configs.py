"""Every shipped config loads, validates and round-trips through ``spec_to_raw``.

Plus checks of the transcriptions against their papers: the Megatron SC21 Table 1 models have
the published parameter counts, and the Hugging Face Llama-2-7B config gives the same model as
the hand-written workload.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from palmsim.config.loader import (
    load_hardware,
    load_mapping,
    load_workload,
    read_config_file,
    spec_to_raw,
)

ROOT = Path(__file__).resolve().parents[2]
HW_FILES = sorted((ROOT / "hw_configs").glob("*.yaml"))
WORKLOAD_FILES = sorted((ROOT / "workloads").glob("*.yaml"))
HF_FILES = sorted((ROOT / "workloads").rglob("*.json"))
#: A bare HF config.json carries no training set-up; it comes from overrides.
HF_TRAINING = ["training.seq_len=4096", "training.global_batch_size=1024"]


def _dump(tmp_path: Path, name: str, raw: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_there_are_configs_to_check() -> None:
    names = {p.name for p in HW_FILES}
    assert {
        "tx8-wafer.yaml",
        "tx8-wafer-10x8.yaml",
        "dgx-a100-superpod.yaml",
        "dgx-h100.yaml",
    } <= names
    assert len(WORKLOAD_FILES) >= 12
    assert HF_FILES


def test_the_a100_nodes_differ_from_selene_only_in_the_fabric_measured() -> None:
    """dgx-a100.yaml is Selene's nodes (dgx-a100-superpod.yaml) with the fabric at the NICs'
    line rate: no other value may drift apart."""
    selene = load_hardware(ROOT / "hw_configs" / "dgx-a100-superpod.yaml")
    nodes = load_hardware(ROOT / "hw_configs" / "dgx-a100.yaml")
    assert selene.cluster is not None and nodes.cluster is not None
    assert selene.cluster.inter_node_efficiency < nodes.cluster.inter_node_efficiency == 1.0
    fabric = replace(nodes.cluster, inter_node_efficiency=selene.cluster.inter_node_efficiency)
    assert replace(nodes, name=selene.name, cluster=fabric) == selene


@pytest.mark.parametrize("path", HW_FILES, ids=lambda p: p.name)
def test_hardware_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    spec = load_hardware(path)
    assert spec.name == path.stem
    assert spec.num_tiles >= 1
    raw = spec_to_raw(spec)
    assert load_hardware(_dump(tmp_path, path.name, raw)) == spec


@pytest.mark.parametrize("path", WORKLOAD_FILES + HF_FILES, ids=lambda p: p.name)
def test_workload_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    overrides = HF_TRAINING if path.suffix == ".json" else []
    spec, mapping_raw = load_workload(path, overrides)
    raw = spec_to_raw(spec)
    assert load_workload(_dump(tmp_path, "copy.yaml", raw))[0] == spec
    mapping = load_mapping([(str(path), mapping_raw)])
    assert load_mapping([("copy", spec_to_raw(mapping))]) == mapping


@pytest.mark.parametrize("path", HW_FILES, ids=lambda p: p.name)
def test_every_hardware_number_has_a_source_comment(path: Path) -> None:
    """A value line holding a number has a comment on it, or right above it."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s+[a-z0-9_]+:\s*[^#\s>|][^#]*\d", line):
            has_comment = "#" in line or lines[i - 1].lstrip().startswith("#")
            assert has_comment, f"{path.name}:{i + 1}: {line.strip()!r} has no source comment"


# --------------------------------------------------------------------------- transcriptions

#: Narayanan et al. SC21 Table 1: file -> (parameters in billions as published, layers,
#: hidden, heads, global batch).
SC21_TABLE_1 = {
    "t-18b": (18.4, 40, 6144, 48, 1024),
    "t-39b": (39.1, 48, 8192, 64, 1536),
    "t-76b": (76.1, 60, 10240, 80, 1792),
    "t-145b": (145.6, 80, 12288, 96, 2304),
    "t-310b": (310.1, 96, 16384, 128, 2160),
    "t-530b": (529.6, 105, 20480, 128, 2520),
    "t-1t": (1008.0, 128, 25600, 160, 3072),
}


@pytest.mark.parametrize("name", sorted(SC21_TABLE_1))
def test_sc21_table_1_models(name: str) -> None:
    """Shapes as in Table 1, and SC21 Eq. (2), P = 12 l h^2 (1 + 13/(12h) + (V+s)/(12lh)),
    gives the published parameter count to the published precision."""
    billions, layers, hidden, heads, batch = SC21_TABLE_1[name]
    spec, _ = load_workload(ROOT / "workloads" / f"{name}.yaml")
    m, t = spec.model, spec.training
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads) == (layers, hidden, heads)
    assert t.global_batch_size == batch
    assert (t.seq_len, m.vocab_size, m.intermediate_size) == (2048, 51200, 4 * hidden)
    assert (m.hidden_act, m.norm, m.position_embedding) == ("gelu", "layernorm", "learned")
    assert m.use_bias and m.tie_word_embeddings and m.causal
    assert (m.attention_dropout, m.hidden_dropout, t.dtype, t.optimizer) == (
        0.1,
        0.1,
        "fp16",
        "adam",
    )
    v, s, h, n = m.vocab_size, t.seq_len, hidden, layers
    params = 12 * n * h**2 * (1 + 13 / (12 * h) + (v + s) / (12 * n * h))
    assert params / 1e9 == pytest.approx(billions, abs=0.05)


def test_t18b_default_mapping_fills_the_tx8_wafer() -> None:
    """PALM's W1 scenario: 20 stages x 16 TP tiles = 320 tiles = 5x4 dies x 4x4 tiles, and
    1024 / 32 = 32 micro-batches."""
    spec, mapping_raw = load_workload(ROOT / "workloads" / "t-18b.yaml")
    mapping = load_mapping([("t-18b.yaml", mapping_raw)])
    hw = load_hardware(ROOT / "hw_configs" / "tx8-wafer.yaml")
    assert (mapping.pp, mapping.tp, mapping.dp) == (20, 16, 1)
    assert mapping.pp * mapping.tp * mapping.dp == hw.num_tiles == 320
    assert spec.training.global_batch_size // mapping.micro_batch_size == 32
    assert (mapping.schedule, mapping.recompute, mapping.placement) == ("1f1b", "full", "snake")


def test_hf_llama2_7b_equals_the_hand_written_workload() -> None:
    via_hf, _ = load_workload(ROOT / "workloads" / "llama2-7b-hf.yaml")
    by_hand, _ = load_workload(ROOT / "workloads" / "llama2-7b.yaml")
    assert via_hf.model.name == "llama2-7b-hf"
    # Same model and training; the serving scenario (inference:) lives only in llama2-7b.yaml.
    assert replace(via_hf, model=replace(via_hf.model, name="llama2-7b")) == replace(
        by_hand, inference=None
    )


def test_hf_llama2_7b_json_is_a_real_hf_config() -> None:
    """The shipped file keeps the Hugging Face fields we ignore (it is not our format)."""
    raw = read_config_file(ROOT / "workloads" / "hf" / "llama-2-7b.config.json")
    assert raw["architectures"] == ["LlamaForCausalLM"]
    assert raw["model_type"] == "llama"
    assert raw["torch_dtype"] == "float16"
    assert raw["rms_norm_eps"] == 1e-05


def test_llama2_70b_uses_gqa_and_bert_is_an_encoder() -> None:
    llama, _ = load_workload(ROOT / "workloads" / "llama2-70b.yaml")
    assert (llama.model.num_attention_heads, llama.model.num_key_value_heads) == (64, 8)
    bert, _ = load_workload(ROOT / "workloads" / "bert-large.yaml")
    assert bert.model.causal is False
    assert (bert.training.seq_len, bert.training.global_batch_size) == (512, 256)


def test_hardware_headline_numbers() -> None:
    """Spot checks against hw_specs.yaml, in SI units worked out by hand."""
    tx8 = load_hardware(ROOT / "hw_configs" / "tx8-wafer.yaml")
    assert tx8.tile.peak_for("fp16") == 16e12
    assert tx8.tile.sram_capacity_bytes == 3 * 2**20
    assert tx8.num_tiles == 320
    big = load_hardware(ROOT / "hw_configs" / "tx8-wafer-10x8.yaml")
    assert big.num_tiles == 10 * 8 * 16
    assert replace(big, name=tx8.name, wafer=replace(big.wafer, die_rows=5, die_cols=4)) == tx8
    a100 = load_hardware(ROOT / "hw_configs" / "dgx-a100-superpod.yaml")
    assert a100.num_tiles == 3072
    assert a100.cluster is not None
    assert a100.cluster.inter_node.bandwidth_bytes_per_s == 25e9  # HDR 200 Gb/s
    # SC21 Sec. 5.9: 12.9 TB/s of all-reduce bandwidth over 3072 GPUs, S/t a GPU, in rings of
    # the DP degree 6, each moving 2(6-1)/6 S through a GPU's NIC: 0.280 of 25 GB/s
    busbw_bytes_per_s = 12.9e12 / 3072 * 2 * (6 - 1) / 6
    assert a100.cluster.inter_node_efficiency == pytest.approx(busbw_bytes_per_s / 25e9, abs=5e-4)
    assert a100.tile.peak_for("bf16") == 312e12
    h100 = load_hardware(ROOT / "hw_configs" / "dgx-h100.yaml")
    assert h100.num_tiles == 32
    assert h100.cluster is not None
    assert h100.cluster.inter_node.bandwidth_bytes_per_s == 50e9  # NDR 400 Gb/s
    assert h100.cluster.inter_node_efficiency == 47.5 / 50  # measured 46-49 GB/s, the middle
    assert h100.cluster.intra_node.bandwidth_bytes_per_s == 370e9  # NCCL ring, measured
    assert h100.dram.bandwidth_bytes_per_s == 3.35e12
