"""Interrupted long commands keep their work (issue 18): a real ``palmsim validate``,
``sweep`` and ``search`` process is sent SIGINT (Ctrl-C: to its whole process group, as a
terminal does) or SIGTERM (``kill PID``) once its first row has finished. The rows that
finished are on disk and readable, and the same command run again finishes the rest
without simulating the finished ones again.

Slow (each command runs twice in a subprocess): ``pytest -m slow tests/e2e/test_interrupt.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and process groups"),
]


def _small_workload(work: Path) -> Path:
    raw = yaml.safe_load((REPO / "workloads" / "t-18b.yaml").read_text())
    raw["model"]["num_hidden_layers"] = 2
    raw["training"]["global_batch_size"] = 4
    raw["mapping"] = {"pp": 2, "tp": 2, "dp": 1, "micro_batch_size": 1}
    path = work / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _interrupt(
    argv: list[str], first_row: Callable[[], bool], signum: int, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Start palmsim, wait for ``first_row()``, send ``signum``, wait for the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "palmsim.cli", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell job has
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 300
        while not first_row():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no row finished in 300 s"
            time.sleep(0.05)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
        else:
            os.kill(process.pid, signum)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _rerun(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palmsim.cli", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _stopped(done: subprocess.CompletedProcess[str], signum: int) -> None:
    """Ctrl-C ends in exit 130, SIGTERM in 143 (128 + 15) or, where the command handles the
    interruption itself (validate), 130; each with one line and no traceback."""
    if signum == signal.SIGINT:
        assert done.returncode == 130, done.stderr
        assert "palmsim: interrupted" in done.stderr
    else:
        assert done.returncode in (130, 128 + signal.SIGTERM), done.stderr
        assert "palmsim: terminated" in done.stderr or "palmsim: interrupted" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("signum", SIGNALS)
def test_validate_keeps_finished_cases_and_resumes(tmp_path: Path, signum: int, jobs: str) -> None:
    shipped = yaml.safe_load((REPO / "validation" / "measurements.yaml").read_text())
    case = {
        "model": {"layers": 2, "hidden": 1024, "heads": 16, "seq_len": 1024, "vocab": 51200,
                  "global_batch": 64, "micro_batch": 1},
        "system": {"gpu": "A100-SXM4-80GB", "num_gpus": 8, "tp": 8, "pp": 1, "dp": 1},
        "training": {"precision": "bf16", "activation_recompute": "none"},
        "measured": {"tflops_per_gpu": 100.0},
    }  # fmt: skip
    cases = [{"id": f"case_{i}", **case} for i in range(6)]
    (tmp_path / "runs.yaml").write_text(
        yaml.safe_dump({"schema": shipped["schema"], "cases": cases})
    )
    report = tmp_path / "v.json"
    argv = ["validate", "runs.yaml", "-q", "--json", "v.json", "--jobs", jobs]

    def finished() -> list[str]:
        try:
            return [c["case"] for c in json.loads(report.read_text())["comparisons"]]
        except (OSError, ValueError, KeyError):
            return []

    _stopped(_interrupt(argv, lambda: len(finished()) >= 1, signum, tmp_path), signum)
    kept = finished()  # readable after the interruption
    assert 1 <= len(kept) < 6
    rerun = _rerun([*argv, "--resume"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(finished()) == sorted(c["id"] for c in cases)


@pytest.mark.parametrize("signum", SIGNALS)
def test_sweep_keeps_finished_points_and_resumes(tmp_path: Path, signum: int) -> None:
    workload = _small_workload(tmp_path)
    spec = {
        "base": {"hw": str(REPO / "hw_configs" / "tx8-wafer.yaml"), "workload": str(workload)},
        "grid": {
            "mapping.micro_batch_size": [1, 2],
            "hw.system.link.bandwidth": ["64 GB/s", "128 GB/s", "256 GB/s", "512 GB/s"],
        },
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    argv = ["sweep", "sweep.yaml", "--out", "sw", "--jobs", "1", "-q"]
    points = tmp_path / "sw" / "points"

    def finished() -> dict[str, float]:
        return {p.parent.name: p.stat().st_mtime for p in points.glob("*/status.json")}

    _stopped(_interrupt(argv, lambda: len(finished()) >= 1, signum, tmp_path), signum)
    kept = finished()
    assert 1 <= len(kept) < 8
    with open(tmp_path / "sw" / "results.csv", encoding="utf-8") as table:
        rows = [line.split(",")[0] for line in table.read().splitlines()[1:]]
    assert set(kept) <= set(rows)  # the finished points are rows of a readable results.csv
    rerun = _rerun(argv, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    after = finished()
    assert len(after) == 8
    assert all(after[p] == mtime for p, mtime in kept.items())  # not simulated again


@pytest.mark.parametrize("signum", SIGNALS)
def test_search_keeps_finished_simulations_and_resumes(tmp_path: Path, signum: int) -> None:
    workload = _small_workload(tmp_path)
    argv = [
        "search", "--workload", str(workload), "--hw", str(REPO / "hw_configs" / "dgx-h100.yaml"),
        "--out", "se", "--jobs", "1", "--max-simulations", "6", "-q",
    ]  # fmt: skip
    points = tmp_path / "se" / "points"

    def finished() -> dict[str, float]:
        return {p.name: p.stat().st_mtime for p in points.glob("*.json")}

    _stopped(_interrupt(argv, lambda: len(finished()) >= 1, signum, tmp_path), signum)
    kept = finished()
    assert 1 <= len(kept) < 6
    for path in points.glob("*.json"):
        json.loads(path.read_text())  # readable
    rerun = _rerun(argv, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    after = finished()
    assert len(after) == 6
    assert all(after[p] == mtime for p, mtime in kept.items())
