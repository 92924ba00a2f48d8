"""The example scripts in scripts/ run as a user would run them, in their small form."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, out: Path) -> list[dict[str, str]]:
    env = {
        **os.environ,
        "SMALL": "1",
        "OUT": str(out),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    subprocess.run(
        ["bash", str(REPO / "scripts" / script), "-q", "--jobs", "2"], env=env, check=True
    )
    assert (out / "iteration_time_s.png").stat().st_size > 0
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("script", ["sweep_pp.sh", "sweep_inter_die_bandwidth.sh"])
def test_script_runs_every_point(script: str, tmp_path: Path) -> None:
    rows = _run(script, tmp_path / "out")
    assert len(rows) == 3
    assert all(r["status"] == "ok" for r in rows), rows


def test_compare_schedules_shows_interleaving_beating_plain_1f1b(tmp_path: Path) -> None:
    """Same work, a bubble of (p-1)/v slots instead of p-1: interleaving must be faster."""
    rows = _run("compare_schedules.sh", tmp_path / "out")
    assert [r["status"] for r in rows] == ["ok"] * 3
    time_of = {
        (r["mapping.schedule"], r["mapping.virtual_stages"]): float(r["iteration_time_s"])
        for r in rows
    }
    assert time_of[("1f1b", "2")] < time_of[("1f1b", "1")]
