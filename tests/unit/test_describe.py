"""``palmsim describe`` prints exactly the keys the files and ``--set`` take, in human units."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from palmsim.api import load_experiment
from palmsim.cli import main
from palmsim.config.describe import described_keys

REPO = Path(__file__).resolve().parents[2]

#: A wafer, a GPU cluster with fitted kernels (gemm, memory_ops with per-kind entries), a
#: Hugging Face config and an inference workload: every kind of key describe prints.
CASES = [
    ("tx8-wafer", "t-18b", ()),
    ("dgx-a100-superpod", "llama2-7b", ("workload.mode=inference",)),
    (
        "dgx-h100",
        str(REPO / "workloads" / "hf" / "llama-2-7b.config.json"),
        ("training.seq_len=4096", "training.global_batch_size=64"),
    ),
]


def _printed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[tuple[str, str]]:
    assert main(["describe", *argv]) == 0
    pairs = []
    for line in capsys.readouterr().out.splitlines():
        if line.strip():
            text = line.split("  #", 1)[0].strip()
            key, _, value = text.partition(": ")
            pairs.append((key, value))
    return pairs


def test_describe_prints_file_keys_in_file_units(capsys: pytest.CaptureFixture[str]) -> None:
    """The TX8 numbers of hw_configs/tx8-wafer.yaml come back under the file's own keys and in
    the file's own units, not as internal field names or Python reprs."""
    printed = dict(_printed(capsys, "--hw", "tx8-wafer"))
    assert printed["hw.tile.sram_capacity"] == "3 MiB"
    assert printed["hw.system.link.bandwidth"] == "256 GB/s"
    assert printed["hw.dram.bandwidth"] == "256 GB/s"
    assert printed["hw.chip.noc.latency"] == "1 ns"
    assert printed["hw.tile.peak.fp16"] == "16 TFLOP/s"
    assert printed["hw.system.topology"] == "mesh"
    assert printed["hw.system.chips"] == "[5, 4]"
    assert printed["hw.chip.cores"] == "[4, 4]"
    assert printed["run.until"] == "null"
    assert printed["mapping.pp"] == "20"
    text = " ".join(f"{k} {v}" for k, v in printed.items())
    for internal in ("_bytes", "_per_s", "peak_flop", "devices_per_node", "Spec(", "'"):
        assert internal not in text


def test_describe_gpu_cluster_uses_the_file_names(capsys: pytest.CaptureFixture[str]) -> None:
    printed = dict(_printed(capsys, "--hw", "dgx-h100", "--workload", "llama2-7b"))
    assert printed["hw.system.topology"] == "switch"
    assert printed["hw.system.chips"] == "[4, 8]"  # [nodes, GPUs per node]
    assert printed["hw.system.link.bandwidth"] == "370 GB/s"
    assert printed["hw.system.node_link.bandwidth"] == "50 GB/s"  # the file's 400 Gb/s
    assert printed["hw.system.node_link.efficiency"] == "0.95"
    assert printed["hw.tile.gemm.launch_latency"] == "28.9 us"
    assert not [k for k in printed if k.startswith(("hw.cluster.", "hw.network.", "hw.chip."))]


def test_every_described_key_has_a_meaning() -> None:
    for hw, workload, overrides in CASES:
        for key in described_keys(load_experiment(hw, workload, overrides=overrides)):
            assert key.help, key.key


@pytest.mark.parametrize(("hw", "workload", "overrides"), CASES)
def test_every_printed_key_round_trips_through_set(
    hw: str, workload: str, overrides: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each ``KEY: VALUE`` line describe prints, fed back as ``--set KEY=VALUE``, is accepted
    and leaves the experiment unchanged; changing the value changes the experiment."""
    base = load_experiment(hw, workload, overrides=overrides)
    argv = ["--hw", hw, "--workload", workload]
    for o in overrides:
        argv += ["--set", o]
    printed = _printed(capsys, *argv)
    assert len(printed) == len(described_keys(base)) > 40
    for key, value in printed:
        again = load_experiment(hw, workload, overrides=[*overrides, f"{key}={value}"])
        assert dataclasses.replace(again, sources=()) == dataclasses.replace(base, sources=()), key


def test_a_described_key_changes_what_it_names(capsys: pytest.CaptureFixture[str]) -> None:
    """The round trip is not vacuous: the printed key reaches the field it describes."""
    printed = dict(_printed(capsys, "--hw", "dgx-h100"))
    assert printed["hw.system.chips"] == "[4, 8]"
    changed = load_experiment("dgx-h100", overrides=["hw.system.chips=[2, 4]"])
    assert changed.hardware.cluster is not None
    assert changed.hardware.cluster.num_nodes == 2
    assert changed.hardware.cluster.devices_per_node == 4


def test_describe_reports_config_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert main(["describe", "--hw", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError:") and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("hw.cluster.devices_per_node=4", r"former format's sections are chip: and system:"),
        ("hw.system.node_link.bandwidth_bytes_per_s=1", r"did you mean 'bandwidth'\?"),
        ("hw.tile.peak_flop_per_s=1", r"did you mean 'peak'\?"),
        ("hw.dram.bandwidth_bytes_per_s=1", r"did you mean 'bandwidth'\?"),
    ],
)
def test_an_internal_field_name_suggests_its_file_key(override: str, match: str) -> None:
    """The spec's own names (what describe used to print) point at the key --set takes."""
    from palmsim.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_experiment("dgx-h100", overrides=[override])


def test_describe_notes_a_mapping_run_would_refuse(capsys: pytest.CaptureFixture[str]) -> None:
    """describe printed a configuration `run` refuses (GPipe holds every micro-batch's
    activations: T-18B's do not fit the TX8's DRAM, the README's example) with no word of
    it. The keys still print, and stderr says in one line what `run` would say; a mapping
    that fits gets no note."""
    printed = dict(_printed(capsys, "--schedule", "gpipe"))
    assert printed["mapping.schedule"] == "gpipe"
    assert main(["describe", "--schedule", "gpipe"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("palmsim: note: `palmsim run` would refuse this mapping: model does ")
    assert err.count("\n") == 1
    assert main(["describe"]) == 0
    assert "would refuse" not in capsys.readouterr().err


def test_describe_of_a_very_large_chip_does_not_map_it(monkeypatch, capsys) -> None:
    """Mapping elaborates the chip whole: describe of 800,000 GPUs took 40 s to say whether
    run would refuse the mapping. Past DESCRIBE_PLAN_MAX_TILES it only prints the keys."""
    import palmsim.api
    from palmsim import cli

    def refuse(experiment):  # stands in for plan_experiment
        raise AssertionError("describe mapped a chip above its limit")

    monkeypatch.setattr(palmsim.api, "plan_experiment", refuse)
    nodes = cli.DESCRIBE_PLAN_MAX_TILES // 8 + 1
    sets = ["--hw", "dgx-h100", "--set", f"hw.system.chips=[{nodes}, 8]"]
    printed = dict(_printed(capsys, *sets))
    assert printed["hw.system.chips"] == f"[{nodes}, 8]"
