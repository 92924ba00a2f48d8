"""Each case issue 18 names ends, through the CLI, in one line naming the key and the value:
the two hangs (an absurd die grid, an absurd global batch), the two ``validate`` tracebacks
(a missing key, a null) and the ``--set`` typo blamed on the hardware file."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from palmsim.cli import main

REPO = Path(__file__).resolve().parents[2]


def _cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue() + out.getvalue()


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize(
    ("override", "code", "needles"),
    [
        # the first hang, as it wrote it (1e30 reads as the float 1e+30, not an int)
        # and as an int
        (
            "hw.system.chips=[5, 1e30]",
            2,
            ("--set hw.system.chips=[5, 1e30]", "system.chips[1]", "got 1e+30", "an int"),
        ),
        (
            f"hw.system.chips=[5, {10**30}]",
            2,
            ("--set hw.system.chips", "system.chips", f"[5, {10**30}]", "at most 65536 chips"),
        ),
        # the second (14 GB before it was killed)
        (
            "training.global_batch_size=1e30",
            2,
            ("--set training.global_batch_size=1e30", "training.global_batch_size", "got 1e+30"),
        ),
        (
            f"training.global_batch_size={10**30}",
            3,
            (f"training.global_batch_size={10**30}", "run.max_events=144000000"),
        ),
        # the --set typo: blamed on the argument, not on hw_configs/tx8-wafer.yaml
        (
            "hw.chip.noc.bandwith=1",
            2,
            (
                "--set hw.chip.noc.bandwith=1 (applied to",
                "chip.noc.bandwith: got 1",
                "did you mean 'bandwidth'",
            ),
        ),
        # a key of the former hardware format: refused, naming where it lives now
        (
            "hw.wafer.die_grid=[10, 4]",
            2,
            (
                "--set hw.wafer.die_grid=[10, 4] (applied to",
                "wafer.die_grid: got [10, 4]",
                "the chip-grid format names it system.chips",
            ),
        ),
    ],
)
def test_run_cases_end_in_one_line(override: str, code: int, needles: tuple[str, ...]) -> None:
    got, text = _cli(["run", "--set", override, "--no-plots", "-q", "--out", "/nonexistent"])
    line = _one_line(text)
    assert got == code, line
    for needle in needles:
        assert needle in line


def test_validate_missing_key_and_null_end_in_one_line_each(tmp_path: Path) -> None:
    """A case without model.heads (was a KeyError traceback) and one with model.hidden null
    (a TypeError): each is listed as not run with one line naming the key, and the file's
    other case still runs."""
    case = {
        "model": {"layers": 2, "hidden": 1024, "heads": 16, "seq_len": 1024, "vocab": 51200,
                  "global_batch": 8, "micro_batch": 1},
        "system": {"gpu": "A100-SXM4-80GB", "num_gpus": 8, "tp": 8, "pp": 1, "dp": 1},
        "training": {"precision": "bf16", "activation_recompute": "none"},
        "measured": {"tflops_per_gpu": 100.0},
    }  # fmt: skip
    missing = yaml.safe_load(yaml.safe_dump(case))
    del missing["model"]["heads"]
    null = yaml.safe_load(yaml.safe_dump(case))
    null["model"]["hidden"] = None
    path = tmp_path / "runs.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cases": [
                    {"id": "no_heads", **missing},
                    {"id": "null_hidden", **null},
                    {"id": "fine", **case},
                ]
            }
        )
    )
    code, text = _cli(["validate", str(path), "-q"])
    assert code == 0 and "Traceback" not in text, text
    lines = text.splitlines()
    heads = [line for line in lines if "no_heads:" in line]
    hidden = [line for line in lines if "null_hidden:" in line]
    assert heads and "model.heads: missing or null" in heads[0], text
    assert hidden and "model.hidden: missing or null" in hidden[0], text
    assert any(line.startswith("fine ") for line in lines), text


def test_a_malformed_set_stops_validate_once_before_any_case() -> None:
    """Every case takes the same ``--set``: a key without its section prefix is the
    command's error, one line with its "did you mean", and no case runs (it was reported
    once per case before)."""
    code, text = _cli(
        ["validate", str(REPO / "validation" / "measurements.yaml"), "-q",
         "--set", "system.node_link.latency=9.6 us"]
    )  # fmt: skip
    line = _one_line(text)
    assert code == 2, text
    assert "did you mean 'hw.system.node_link.latency'?" in line, line
