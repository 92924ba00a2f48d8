"""A run folder is read through one schema (issue 18): summary.json, resolved_config.yaml,
records.npz or records.csv. Any malformed content of an edited folder ends ``palmsim plot``
and ``palmsim report`` with exit 5 and one line naming the file, the key and the value; the
cases are the ones the fuzz found (a string or null for a number, a truncated CSV row, an
unknown partition name) and records that do not fit the chip they claim."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml

from palmsim.cli import main

REPO = Path(__file__).resolve().parents[2]


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer T-18B on 2x2 tiles, records also as CSV."""
    work = tmp_path_factory.mktemp("run-folder")
    raw = yaml.safe_load((REPO / "workloads" / "t-18b.yaml").read_text())
    raw["model"]["num_hidden_layers"] = 2
    raw["training"]["global_batch_size"] = 4
    raw["mapping"] = {"pp": 2, "tp": 2, "dp": 1, "micro_batch_size": 1}
    workload = work / "small.yaml"
    workload.write_text(yaml.safe_dump(raw))
    out = work / "run"
    code, err = _cli(
        ["run", "--workload", str(workload), "--no-plots", "-q", "--csv", "--out", str(out)]
    )
    assert code == 0, err
    return out


def _edited(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    return copy


def _ends_in_one_line(copy: Path, *needles: str) -> None:
    for argv in (["report", str(copy)], ["plot", "gantt", str(copy), "--out", str(copy / "g.png")]):
        code, err = _cli(argv)
        assert code == 5, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        for needle in needles:
            assert needle in err, err


def test_the_unedited_folder_reads(folder: Path, tmp_path: Path) -> None:
    copy = _edited(folder, tmp_path)
    assert _cli(["report", str(copy)])[0] == 0


@pytest.mark.parametrize(
    ("path", "value", "shown", "expected"),
    [
        (("pipeline_bubble_fraction",), "x", '"x"', "a number"),
        (("mfu",), None, "null", "a number"),
        (("energy", "energy_breakdown_j", "dram"), "0.5 J", '"0.5 J"', "a number"),
        (("tile_time_by_bound_s",), [1], "[1]", "a JSON object"),
        (("num_stages",), 7, "7", "2 from the records"),
    ],
)
def test_a_summary_value_of_the_wrong_type_or_value_is_named(
    folder: Path, tmp_path: Path, path: tuple[str, ...], value: object, shown: str, expected: str
) -> None:
    copy = _edited(folder, tmp_path)
    summary = json.loads((copy / "summary.json").read_text())
    node = summary
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (copy / "summary.json").write_text(json.dumps(summary))
    _ends_in_one_line(copy, "summary.json", ".".join(path), f"got {shown}", expected)


def test_a_truncated_csv_row_is_named(folder: Path, tmp_path: Path) -> None:
    copy = _edited(folder, tmp_path)
    (copy / "records.npz").unlink()  # an older folder: records.csv only
    lines = (copy / "records.csv").read_text().splitlines()
    lines[5] = lines[5][: len(lines[5]) // 2]
    (copy / "records.csv").write_text("\n".join(lines) + "\n")
    _ends_in_one_line(copy, "records.csv", "line 6", "truncated")


def test_an_unknown_partition_is_named(folder: Path, tmp_path: Path) -> None:
    copy = _edited(folder, tmp_path)
    config = yaml.safe_load((copy / "resolved_config.yaml").read_text())
    config["mapping"]["partition"] = "layerz"
    (copy / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    _ends_in_one_line(copy, "resolved_config.yaml", "partition", "layerz")


def test_records_of_a_tile_the_chip_lacks_are_named(folder: Path, tmp_path: Path) -> None:
    """The chip of the folder's config has 320 tiles (tx8-wafer: 5x4 dies of 4x4 tiles)."""
    copy = _edited(folder, tmp_path)
    with np.load(copy / "records.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["interval_tile"] = arrays["interval_tile"].copy()
    arrays["interval_tile"][3] = 320
    np.savez_compressed(copy / "records.npz", **arrays)
    _ends_in_one_line(copy, "records.npz", "interval record 3", "tile", "got 320", "0..319")


@pytest.mark.parametrize("array", ["interval_microbatch", "interval_layer", "flow_microbatch"])
def test_an_index_below_none_is_named(array: str, folder: Path, tmp_path: Path) -> None:
    """-1 stands for none; -7 was read and reported (found by fuzzing run folders)."""
    copy = _edited(folder, tmp_path)
    with np.load(copy / "records.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert len(arrays[array])  # the run has records of this kind
    arrays[array] = arrays[array].copy()
    arrays[array][0] = -7
    np.savez_compressed(copy / "records.npz", **arrays)
    kind, field = array.split("_", 1)
    _ends_in_one_line(copy, "records.npz", f"{kind} record 0", field, "got -7", "-1 for none")


def test_records_past_the_iteration_are_named(folder: Path, tmp_path: Path) -> None:
    copy = _edited(folder, tmp_path)
    summary = json.loads((copy / "summary.json").read_text())
    summary["iteration_time_s"] = summary["iteration_time_s"] / 2
    (copy / "summary.json").write_text(json.dumps(summary))
    _ends_in_one_line(copy, "records.npz", "expected a time in [0,")


def test_a_damaged_record_file_is_named(folder: Path, tmp_path: Path) -> None:
    """Fuzz (2026-12-04): one changed byte inside the compressed arrays was a zlib.error."""
    copy = _edited(folder, tmp_path)
    data = bytearray((copy / "records.npz").read_bytes())
    data[616] ^= 0xFF
    (copy / "records.npz").write_bytes(bytes(data))
    _ends_in_one_line(copy, "records.npz", "damaged")


def test_a_run_section_that_is_not_a_mapping_is_named(folder: Path, tmp_path: Path) -> None:
    """Fuzz (2026-12-04): ``run:`` made a list was an AttributeError."""
    copy = _edited(folder, tmp_path)
    config = yaml.safe_load((copy / "resolved_config.yaml").read_text())
    config["run"] = [config["run"]]
    (copy / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    _ends_in_one_line(copy, "resolved_config.yaml", "run: got [", "a mapping of keys")


def test_a_tile_past_int32_is_named_not_wrapped(folder: Path, tmp_path: Path) -> None:
    """Fuzz (2026-12-06): an int64 tile of 2**40 + t was read into int32 as tile t, after
    the checks, and the report drew it."""
    copy = _edited(folder, tmp_path)
    with np.load(copy / "records.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["interval_tile"] = arrays["interval_tile"].astype(np.int64) + 2**40
    np.savez_compressed(copy / "records.npz", **arrays)
    _ends_in_one_line(copy, "records.npz", "interval_tile holds", "int32")


def test_a_file_named_plots_is_named(folder: Path, tmp_path: Path) -> None:
    """Fuzz (2026-12-06): a regular file RUN_DIR/plots was a FileExistsError; a report or a
    figure into it is a run folder error, an --out below it a command-line error."""
    copy = _edited(folder, tmp_path)
    (copy / "plots").write_text("x")
    for argv in (["report", str(copy)], ["plot", "gantt", str(copy)]):
        code, err = _cli(argv)
        assert code == 5 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("palmsim: RunDirError: ") and f"{copy / 'plots'}: cannot" in err
    code, err = _cli(["plot", "gantt", str(copy), "--out", str(copy / "plots" / "g.png")])
    assert code == 2 and err.startswith("palmsim: ConfigError: command line: --out: "), err
