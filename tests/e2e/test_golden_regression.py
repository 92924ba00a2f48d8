"""REGRESSION (not validation): summaries of fixed runs must not change unnoticed.

These golden files were produced by palmsim itself, so they prove nothing about accuracy; the
analytic tests do that. They pin behaviour, so that a refactor or a speed-up that should change
no result provably changes none. Regenerate them only on purpose, with
``pytest tests/e2e/test_golden_regression.py --update-golden``, and say why in the commit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from palmsim.cli import main
from tests.e2e.test_cli import SMALL

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
HW = REPO / "hw_configs"
WL = REPO / "workloads"

CASES = {
    "t18b-8layers-4stages-tx8": SMALL,
    "t18b-8layers-gpipe-rowmajor-tx8": [
        "--hw",
        str(HW / "tx8-wafer.yaml"),
        "--workload",
        str(WL / "t-18b.yaml"),
        "--pp",
        "4",
        "--tp",
        "8",
        "--dp",
        "2",
        "--micro-batch",
        "4",
        "--schedule",
        "gpipe",
        "--placement",
        "row_major",
        "--recompute",
        "selective",
        "--set",
        "model.num_hidden_layers=8",
        "--set",
        "training.global_batch_size=64",
    ],
    "llama2-7b-4layers-dgx-h100": [
        "--hw",
        str(HW / "dgx-h100.yaml"),
        "--workload",
        str(WL / "llama2-7b.yaml"),
        "--pp",
        "2",
        "--tp",
        "8",
        "--dp",
        "2",
        "--micro-batch",
        "1",
        "--set",
        "model.num_hidden_layers=4",
        "--set",
        "training.global_batch_size=16",
    ],
}
# Keys that are not results: the host (wall time, version), implementation work (simulated
# events change with any change to how the engine schedules the same flows) and the echo of
# the configuration (the inputs, not what the model predicts).
NOT_RESULTS = {
    "simulation_wall_time_s",
    "palmsim_version",
    "simulated_events",
    "mapping",
    "hardware",
    "workload",
}


def _close(a: object, b: object, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}: keys differ: {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        for key in sorted(set(a) & set(b)):
            out += _close(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, float) and isinstance(b, (int, float)):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_summary_matches_golden(name: str, tmp_path: Path, request) -> None:
    assert main(["run", *CASES[name], "--out", str(tmp_path), "-q", "--no-plots"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in NOT_RESULTS:
        summary.pop(key, None)
    golden = GOLDEN / f"{name}.json"
    if request.config.getoption("--update-golden"):
        golden.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"rewrote {golden.name}")
    assert golden.exists(), f"no golden file; run with --update-golden to create {golden.name}"
    differences = _close(summary, json.loads(golden.read_text()), name)
    assert not differences, "\n".join(differences)
