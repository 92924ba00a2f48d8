"""Legal but suspect mappings print a one-line warning; good ones print none."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from palmsim.api import load_experiment
from palmsim.cli import main
from palmsim.config.specs import ExperimentSpec
from palmsim.mapping.suspect import mapping_warnings


def _t18b(**mapping: object) -> ExperimentSpec:
    """T-18B (40 layers) on the TX8 wafer (320 tiles) with the W1 mapping changed."""
    exp = load_experiment("tx8-wafer", "t-18b")
    return dataclasses.replace(exp, mapping=dataclasses.replace(exp.mapping, **mapping))


def test_w1_uses_the_whole_wafer_in_even_stages() -> None:
    """PP=20 x TP=16 = 320 tiles, 40 layers / 20 stages = 2 each: nothing to say."""
    assert mapping_warnings(_t18b(), 320, 320) == []


def test_an_under_used_chip_is_named_with_its_tile_counts() -> None:
    """pp=3 x tp=16 = 48 of 320 tiles: 272 idle, 15 %."""
    (warning, *_) = mapping_warnings(_t18b(pp=3, tp=16), 48, 320)
    assert "uses 48 of 320 tiles (15 %)" in warning and "272 stay idle" in warning


def test_uneven_stages_name_their_depths() -> None:
    """40 layers over 3 stages: 14, 13, 13 (the leftover layer goes to the first stage)."""
    warnings = mapping_warnings(_t18b(pp=3, tp=16), 48, 320)
    assert len(warnings) == 2
    assert (
        "3 stages over 40 layers are uneven (14 layers on the first 1, 13 on the rest)"
        in (warnings[1])
    )


def test_interleaved_chunks_count_as_stages() -> None:
    """pp=4 x v=3 = 12 chunks over 40 layers: 4 chunks of 4 and 8 of 3."""
    warnings = mapping_warnings(_t18b(pp=4, tp=16, dp=5, virtual_stages=3), 320, 320)
    assert warnings == [
        "12 model chunks over 40 layers are uneven (4 layers on the first 4, 3 on the rest): "
        "the deepest paces the pipeline (choose a divisor of the layers, or --partition cost)"
    ]


def test_cost_partition_is_uneven_on_purpose() -> None:
    assert mapping_warnings(_t18b(pp=3, tp=16, partition="cost"), 320, 320) == []


def test_cli_prints_the_warning_in_one_line(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    argv = ["run", "--pp", "3", "--tp", "16", "--micro-batch", "8", "--no-plots", "-q"]
    argv += ["--set", "model.num_hidden_layers=8", "--set", "training.global_batch_size=32"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("uses 48 of 320 tiles" in m for m in messages)
    assert any("3 stages over 8 layers are uneven" in m for m in messages)
    assert all("\n" not in m for m in messages)


def test_no_mapping_at_all_says_the_defaults_are_used(caplog: pytest.LogCaptureFixture) -> None:
    """t-145b.yaml has no mapping: section; without flags everything is 1 (one GPU)."""
    caplog.set_level(logging.WARNING)
    load_experiment("dgx-a100-superpod", "t-145b")
    assert any("no mapping: section" in r.getMessage() for r in caplog.records)
    caplog.clear()
    load_experiment("dgx-a100-superpod", "t-145b", mapping_flags={"tp": 8})
    assert not caplog.records


def test_progress_and_warnings_keep_piped_stderr_clean(tmp_path: object) -> None:
    """Piped (not a terminal), stderr holds the warning lines and no progress-bar redraws."""
    import subprocess
    import sys

    argv = ["run", "--pp", "3", "--tp", "16", "--micro-batch", "8", "-q", "--no-plots"]
    argv += ["--set", "model.num_hidden_layers=8", "--set", "training.global_batch_size=32"]
    done = subprocess.run(
        [sys.executable, "-m", "palmsim.cli", *argv, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr and "writing" not in done.stderr
    assert len(lines) == 2 and all(line.startswith("palmsim: ") for line in lines)


def test_fewer_micro_batches_than_stages_name_the_ideal_bubble() -> None:
    """pp=20 with 4 micro-batches: (p-1)/(m+p-1) = 19/23 = 83 % bubble at best."""
    (warning,) = mapping_warnings(_t18b(), 320, 320, num_microbatches=4)
    assert warning.startswith("4 micro-batches over 20 pipeline stages")
    assert "= 83 %" in warning
    assert mapping_warnings(_t18b(), 320, 320, num_microbatches=20) == []


def test_validate_keeps_the_warnings_of_the_mappings_it_builds_to_itself(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The Cerebras 8B case streams one prompt through a layer pipeline of 2 stages, 1
    micro-batch: the bubble warning is about palmsim's own construction, so validate prints
    nothing beside its table; the same mapping run by hand still warns, and the logger is as
    validate found it."""
    import pathlib

    import yaml

    from palmsim.api import suspect_mapping_log
    from palmsim.config.loader import read_config_file
    from palmsim.validate import validate

    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    case = next(c for c in cases if c["id"] == "cerebras_inference_llama31_8b_cs3")
    path = pathlib.Path(str(tmp_path)) / "cases.yaml"
    path.write_text(yaml.safe_dump({"cases": [case]}))
    caplog.set_level(logging.WARNING)
    report = validate(str(path))
    assert [c.case for c in report.comparisons] == [case["id"]]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert suspect_mapping_log.level == logging.NOTSET
    assert mapping_warnings(_t18b(pp=2, tp=16), 32, 320)  # what validate keeps to itself
