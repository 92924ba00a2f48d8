"""Shared fixtures: small hardware and workload specs built directly (no files)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from palmsim.config.specs import (
    ClusterSpec,
    DramSpec,
    ExperimentSpec,
    HardwareSpec,
    LinkSpec,
    MappingSpec,
    ModelSpec,
    TileSpec,
    TrainingSpec,
    WaferSpec,
    WorkloadSpec,
)


def wafer_spec(
    *,
    dies=(2, 2),
    tiles=(4, 4),
    sram_bytes=3 * 2**20,
    sram_bw=2e12,
    dram_bytes=256e9,
    dram_bw=256e9,
    intra_bw=1024e9,
    inter_bw=256e9,
    latency_s=1e-9,
    topology="mesh",
    dram_placement="die_edge",
) -> HardwareSpec:
    """A small TX8-like wafer."""
    tile = TileSpec((("fp16", 16e12), ("fp32", 8e12)), sram_bytes, sram_bw)
    return HardwareSpec(
        "test-wafer",
        "wafer",
        tile,
        DramSpec(dram_placement, dram_bytes, dram_bw, 100e-9),
        wafer=WaferSpec(
            dies[0],
            dies[1],
            tiles[0],
            tiles[1],
            topology,
            LinkSpec(intra_bw, latency_s),
            LinkSpec(inter_bw, latency_s),
        ),
    )


def cluster_spec(nodes=2, gpus=8, nvlink_bytes_per_s=300e9, nvlink_latency_s=1e-6) -> HardwareSpec:
    """A small DGX-A100-like cluster (NVLink 300 GB/s and 1 us unless given)."""
    tile = TileSpec((("fp16", 312e12), ("bf16", 312e12), ("fp32", 19.5e12)), 0.0, 0.0)
    nvlink = LinkSpec(nvlink_bytes_per_s, nvlink_latency_s)
    return HardwareSpec(
        "test-cluster",
        "gpu_cluster",
        tile,
        DramSpec("per_tile", 80e9, 2039e9, 100e-9),
        cluster=ClusterSpec(nodes, gpus, nvlink, LinkSpec(25e9, 2e-6)),
    )


def gpt_model(layers=4, hidden=512, heads=8, vocab=1024, seq=256) -> ModelSpec:
    """A small GPT (MHA, GeLU 4h, learned positions, dropout on)."""
    return ModelSpec(
        "tiny-gpt",
        hidden,
        heads,
        heads,
        4 * hidden,
        layers,
        vocab,
        seq,
        "gelu",
        attention_dropout=0.1,
        hidden_dropout=0.1,
    )


def mla_model(seq=256) -> ModelSpec:
    """A two-layer GPT with multi-head latent attention: r_kv 64, d_nope 32, d_r 16, d_v 32,
    4 heads of h = 256."""
    return dataclasses.replace(
        gpt_model(layers=2, hidden=256, heads=4, vocab=512, seq=seq),
        kv_lora_rank=64,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        position_embedding="rope",
    )


def hf_config_copy(tmp_path: Path, source: str, **changes: object) -> Path:
    """A copy of the shipped Hugging Face config.json ``source`` with ``changes``, in
    ``tmp_path``."""
    config = json.loads(Path(source).read_text())
    config.update(changes)
    path = tmp_path / Path(source).name
    path.write_text(json.dumps(config))
    return path


def experiment(hw, model=None, *, seq=256, batch=16, dtype="fp16", **mapping) -> ExperimentSpec:
    """An experiment from a hardware spec, a model and mapping keywords."""
    model = model or gpt_model(seq=seq)
    workload = WorkloadSpec(model, TrainingSpec(seq, batch, dtype, "adam"))
    return ExperimentSpec(hw, workload, MappingSpec(**mapping))


@pytest.fixture
def tiny_wafer() -> HardwareSpec:
    return wafer_spec()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--update-golden`` rewrites tests/golden/*.json instead of comparing against them."""
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="regenerate the golden regression summaries",
    )
