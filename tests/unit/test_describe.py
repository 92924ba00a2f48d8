"""``palmsim describe`` prints the resolved specs with units a person can read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from palmsim.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_describe_prints_quantities_with_units(capsys: pytest.CaptureFixture[str]) -> None:
    """The TX8 numbers of hw_configs/tx8-wafer.yaml come back in the units the file uses."""
    assert main(["describe", "--hw", str(REPO / "hw_configs" / "tx8-wafer.yaml")]) == 0
    lines = {line.split("#")[0].strip() for line in capsys.readouterr().out.splitlines()}
    assert "sram_capacity_bytes: 3 MiB" in lines
    assert "bandwidth_bytes_per_s: 256 GB/s" in lines  # the DRAM port and inter-die links
    assert "latency_s: 1 ns" in lines
    assert (
        "peak_flop_per_s: bf16: 16 TFLOP/s, fp16: 16 TFLOP/s, fp32: 8 TFLOP/s, "
        "int8: 32 TFLOP/s" in lines
    )
    assert "until_s: None" in lines  # not a quantity: printed as is
    assert "pp: 20" in lines


def test_describe_reports_config_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert main(["describe", "--hw", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError:") and "Traceback" not in err
