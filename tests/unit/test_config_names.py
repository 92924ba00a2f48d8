"""``--hw NAME`` / ``--workload NAME``: shipped configs by bare name; unknown names list them."""

from __future__ import annotations

from pathlib import Path

import pytest

from palmsim.api import load_experiment, resolve_config_path, shipped_names
from palmsim.cli import main
from palmsim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_names_are_the_files_in_hw_configs_and_workloads() -> None:
    hw = sorted(p.name.removesuffix(".yaml") for p in (REPO / "hw_configs").glob("*.yaml"))
    assert shipped_names("hardware") == hw
    assert "llama2-7b" in shipped_names("workload")
    assert "llama-2-7b" in shipped_names("workload")  # workloads/hf/llama-2-7b.config.json


def test_a_bare_name_resolves_to_the_shipped_file() -> None:
    assert Path(resolve_config_path("dgx-h100", "hardware")).resolve() == (
        REPO / "hw_configs" / "dgx-h100.yaml"
    )
    assert Path(resolve_config_path("llama-2-7b", "workload")).resolve() == (
        REPO / "workloads" / "hf" / "llama-2-7b.config.json"
    )
    by_name = load_experiment("dgx-h100", "llama2-7b")
    by_path = load_experiment(
        str(REPO / "hw_configs" / "dgx-h100.yaml"), str(REPO / "workloads" / "llama2-7b.yaml")
    )
    assert by_name.hardware == by_path.hardware and by_name.workload == by_path.workload


def test_an_existing_path_wins_over_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "dgx-h100"
    mine.write_text((REPO / "hw_configs" / "tx8-wafer.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("dgx-h100", "hardware") == "dgx-h100"


def test_an_unknown_name_lists_the_shipped_ones_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config_path("dgx-h10", "hardware")
    message = str(info.value)
    for name in shipped_names("hardware"):
        assert name in message
    assert "did you mean 'dgx-h100'?" in message


def test_cli_unknown_hw_exits_2_listing_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "--hw", "dgx-h10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tx8-wafer-10x8" in err and "dgx-a100-superpod" in err
