"""The example scripts in scripts/ run as a user would run them, in their small form."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, out: Path, figure: str = "iteration_time_s") -> list[dict[str, str]]:
    env = {
        **os.environ,
        "SMALL": "1",
        "OUT": str(out),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    subprocess.run(
        ["bash", str(REPO / "scripts" / script), "-q", "--jobs", "2"], env=env, check=True
    )
    assert (out / f"{figure}.png").stat().st_size > 0
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


def test_serving_sweep_serves_each_layout_at_each_rate(tmp_path: Path) -> None:
    """The serving sweep's small form, two layouts of the 8-GPU node (8 x tp 1, 1 x tp 8)
    at two rates: every point served, no request rejected, and its figure drawn."""
    rows = _run("sweep_serving.sh", tmp_path / "out", figure="ttft_p90_s")
    assert [(r["serving.traffic.rate_per_s"], r["serving.tp"]) for r in rows] == [
        ("10", "1"),
        ("10", "8"),
        ("40", "1"),
        ("40", "8"),
    ]
    assert all(r["status"] == "ok" and r["num_rejected"] == "0" for r in rows), rows
