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


def test_defect_density_sweep_draws_throughput_with_its_spread(tmp_path: Path) -> None:
    """Two densities x two seeds: the defect-free points lose nothing, 5 % dead tiles leave
    fewer live tiles (0.95^320 < 1e-7 of none dying) and never speed the run up."""
    out = tmp_path / "out"
    rows = _run("sweep_defects.sh", out)
    assert (out / "throughput_tokens_per_s_spread.png").stat().st_size > 0
    assert [r["status"] for r in rows] == ["ok"] * 4
    for r in rows:
        fraction, live = float(r["hw.defects.dead_tile_fraction"]), int(r["num_tiles_live"])
        assert (live == 320) if fraction == 0 else (live < 320)
        assert float(r["slowdown"]) >= 1.0 - 1e-12
        if fraction == 0:
            assert float(r["slowdown"]) == 1.0
