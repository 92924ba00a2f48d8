"""The real CLI end to end: files written, exit codes, one-line errors, determinism."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from palmsim.cli import main
from tests.trace_format import check_trace_events

REPO = Path(__file__).resolve().parents[2]
HW = str(REPO / "hw_configs" / "tx8-wafer.yaml")
T18B = str(REPO / "workloads" / "t-18b.yaml")
# T-18B cut to 8 layers on 4 dies: small enough for a quick run, same code paths as W1.
SMALL = [
    "--hw",
    HW,
    "--workload",
    T18B,
    "--pp",
    "4",
    "--tp",
    "16",
    "--micro-batch",
    "8",
    "--set",
    "model.num_hidden_layers=8",
    "--set",
    "training.global_batch_size=64",
]
FILES = (
    "summary.json",
    "resolved_config.yaml",
    "records.npz",
    "timeline.csv",
    "plots/gantt.png",
    "plots/placement.png",
    "plots/noc.png",
    "plots/utilization.png",
    "plots/memory.png",
    "plots/energy.png",
)
REQUIRED_KEYS = (
    "iteration_time_s",
    "throughput_samples_per_s",
    "throughput_tokens_per_s",
    "model_flop_per_iteration",
    "mfu",
    "pipeline_bubble_fraction",
    "tile_compute_utilization",
    "noc_link_utilization_max",
    "dram_bandwidth_utilization_max",
    "memory_peak_bytes_per_tile_max",
    "memory_breakdown_bytes",
    "num_tiles_used",
    "simulated_events",
    "simulation_wall_time_s",
    "palmsim_version",
    "mapping",
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", *SMALL, "--out", str(out), "-q", "--trace"]) == 0
    return out


def test_run_writes_every_output(small_run: Path) -> None:
    for name in FILES:
        assert (small_run / name).stat().st_size > 0, name
    summary = json.loads((small_run / "summary.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in summary, key
    assert set(summary["tile_compute_utilization"]) >= {"mean", "min", "max"}
    assert set(summary["memory_breakdown_bytes"]) >= {
        "weights",
        "gradients",
        "optimizer",
        "activations",
    }
    assert summary["num_tiles_used"] == 64
    assert summary["mapping"]["pp"] == 4
    # 64 samples of 2048 tokens per iteration
    assert summary["throughput_tokens_per_s"] == pytest.approx(
        64 * 2048 / summary["iteration_time_s"], rel=1e-12
    )
    assert 0 < summary["mfu"] < 1


def test_resolved_config_reloads_to_the_same_run(small_run: Path, tmp_path: Path) -> None:
    """resolved_config.yaml holds hardware, workload and mapping in the input formats."""
    import yaml

    from palmsim.api import load_experiment

    resolved = yaml.safe_load((small_run / "resolved_config.yaml").read_text())
    for part in ("hardware", "workload", "mapping"):
        (tmp_path / f"{part}.yaml").write_text(yaml.safe_dump(resolved[part]))
    again = load_experiment(
        str(tmp_path / "hardware.yaml"),
        str(tmp_path / "workload.yaml"),
        str(tmp_path / "mapping.yaml"),
    )
    assert again.mapping.pp == 4 and again.workload.model.num_hidden_layers == 8
    assert again.hardware.tile.sram_capacity_bytes == 3 * 2**20


def test_same_inputs_give_identical_outputs(small_run: Path, tmp_path: Path) -> None:
    """Byte-identical results; the host's wall time is the one field allowed to differ."""
    out = tmp_path / "again"
    assert main(["run", *SMALL, "--out", str(out), "-q", "--no-plots", "--trace"]) == 0
    for name in ("records.npz", "timeline.csv", "trace.json.gz", "resolved_config.yaml"):
        assert (out / name).read_bytes() == (small_run / name).read_bytes(), name
    first = json.loads((small_run / "summary.json").read_text())
    second = json.loads((out / "summary.json").read_text())
    first.pop("simulation_wall_time_s")
    second.pop("simulation_wall_time_s")
    assert first == second


def test_trace_is_chrome_trace_event_format(small_run: Path) -> None:
    trace = json.loads(gzip.decompress((small_run / "trace.json.gz").read_bytes()))
    events = trace["traceEvents"]
    assert events
    phases = check_trace_events(events)
    assert phases["X"] > 0 and phases["M"] > 0
    summary = json.loads((small_run / "summary.json").read_text())
    last_us = max(e["ts"] + e["dur"] for e in events if e["ph"] == "X")
    assert last_us == pytest.approx(summary["iteration_time_s"] * 1e6, rel=1e-9)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_config_error_exits_2_with_file_key_and_suggestion(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    text = Path(HW).read_text()
    link = "  link:  # between neighbouring chips\n    bandwidth:"
    assert text.count(link) == 1
    text = text.replace(link, link.replace("bandwidth:", "bandwith:"))
    bad.write_text(text.replace("sram_bandwidth: 2 TB/s", "sram_bandwidth: 2000"))
    assert main(["run", "--hw", str(bad), "--workload", T18B, "-q"]) == 2
    err = _one_line_error(capsys)
    assert "bad.yaml" in err
    assert "system.link.bandwith" in err and "did you mean 'bandwidth'" in err
    assert "tile.sram_bandwidth" in err and "2000" in err  # both problems, reported together


def test_unknown_schedule_exits_2_listing_known(capsys) -> None:
    assert main(["run", *SMALL, "--schedule", "1f1f", "-q"]) == 2
    err = _one_line_error(capsys)
    assert "mapping.schedule" in err and "'1f1f'" in err and "1f1b" in err
    assert "virtual-stages" not in err
    # Megatron's 'interleaved' is 1F1B over virtual stages here: the error names the flag
    assert main(["run", *SMALL, "--schedule", "interleaved", "-q"]) == 2
    assert "interleaved 1F1B is 1f1b with --virtual-stages V" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--pp", "abc"], "argument --pp: invalid int value: 'abc'"),
        (["serve", "--rates", "abc"], "argument --rates: got 'abc'; expected numbers"),
        (["search", "--pp", "1,,2"], "argument --pp: got '1,,2'; expected ints separated"),
        (["search", "--tp-2d", "8x"], "argument --tp-2d: got '8x'; expected layouts AxB"),
        (["search", "--tp-2d", "8x4x2"], "argument --tp-2d: got '8x4x2'; expected layouts"),
        (["run", "--mode", "foo"], "invalid choice: 'foo'"),
    ],
)
def test_a_bad_flag_value_is_one_line_exit_2(argv: list[str], needle: str, capsys) -> None:
    """argparse's own errors print its whole usage block and leak the type's function name
    (`invalid _int_list value`); palmsim's parser prints one line, as every other error."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError: command line: ") and needle in err
    assert err.count("\n") == 1 and "usage" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        # a flag the command does not take points at that command's help, not palmsim's
        (["report", "RUN", "--out", "x"], "unrecognized arguments: --out x (see palmsim report"),
        (["run", "--bogus"], "unrecognized arguments: --bogus (see palmsim run --help)"),
        (["--bogus"], "unrecognized arguments: --bogus (see palmsim --help)"),
    ],
)
def test_an_unknown_flag_names_the_help_of_its_command(argv, needle, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError: command line: ") and needle in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-error", "-5"),
        ("--max-error", "nan"),
        ("--case-timeout", "0"),
        ("--case-timeout", "nan"),
        ("--jobs", "0"),
        ("--jobs", "-2"),
    ],
)
def test_validate_flags_out_of_range_are_refused_before_any_case(flag, value, capsys) -> None:
    """--max-error nan never failed a run; --case-timeout -1 or nan was each case's internal
    error (the interval timer refused it)."""
    assert main(["validate", "--case", "nosuch", flag, value, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"palmsim: ConfigError: command line: {flag}: got ")


def test_a_file_the_system_will_not_write_is_one_line_exit_7(monkeypatch, capsys) -> None:
    """The last net under every command: an OSError no input check caught (a full disk, a
    folder without permission) is one line naming the file, exit 7, not an internal error."""
    import palmsim.cli as cli

    def denied(args):
        raise PermissionError(13, "Permission denied", "/data/out/summary.json")

    monkeypatch.setattr(cli, "_cmd_describe", denied)  # main builds its parser on each call
    assert main(["describe"]) == 7
    err = capsys.readouterr().err
    assert err == "palmsim: cannot read or write /data/out/summary.json: Permission denied\n"


@pytest.mark.parametrize("command", ["run", "serve"])
def test_an_out_inside_a_file_is_refused_before_simulating(command, tmp_path, capsys) -> None:
    """The simulation ran and its results were lost when they were written (exit 7); the
    folder is checked first."""
    (tmp_path / "afile").write_text("")
    args = ["--set", "serving.traffic.num_requests=3"] if command == "serve" else ["-q"]
    assert main([command, "--no-plots", *args, "--out", str(tmp_path / "afile" / "run")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"palmsim: ConfigError: command line: --out: got '{tmp_path / 'afile' / 'run'}'; "
        f"expected a folder ({tmp_path / 'afile'} is a file)\n"
    )


def test_infeasible_mapping_exits_3(capsys) -> None:
    assert main(["run", *SMALL, "--dp", "9", "-q"]) == 3
    assert "MappingError" in _one_line_error(capsys)


def test_a_wafer_that_cannot_hold_the_model_says_so_in_a_short_line(capsys) -> None:
    """Llama-3-8B in 32 stages of 16 tiles on a WSE-3 (regions of 30 x 30 cores, 42 MiB of
    SRAM each, no off-wafer memory): the last stage's tiles alone hold a sixteenth of the
    LM head, 128,256 x 4,096 x 2 B / 16 = 65.7 MB, more than their SRAM. The message names
    the 512 tiles as runs of ids, not one by one."""
    argv = ["run", "--hw", "hw_configs/cerebras-wse3.yaml", "--workload"]
    argv += ["workloads/llama3-8b.yaml", "--mode", "inference", "--pp", "32", "--no-plots", "-q"]
    assert main(argv) == 3
    err = _one_line_error(capsys)
    assert "the hardware has no DRAM and the SRAM of tiles 0-511 is short" in err
    # what else would make room: a narrower weight or cache format among the remedies
    assert "narrower formats (inference.weight_dtype, inference.kv_dtype)" in err
    assert len(err) < 600


def test_unfinished_simulation_exits_4(capsys) -> None:
    assert main(["run", *SMALL, "--set", "run.until=1 ms", "-q"]) == 4
    err = _one_line_error(capsys)
    assert "SimulationError" in err and "tile" in err


def test_unknown_strategy_names_are_reported_together_with_their_source(capsys) -> None:
    argv = ["run", *SMALL, "--placement", "snak", "--set", "mapping.partition=costs", "-q"]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "command-line flags: mapping.placement: got 'snak'" in err
    assert "did you mean 'snake'" in err
    assert (
        "--set mapping.partition=costs: mapping.partition: got 'costs'" in err
        and "did you mean 'cost'" in err
    )


def test_validate_json_into_a_file_or_a_folder_is_refused_before_any_case(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    into_file = str(tmp_path / "afile" / "v.json")
    assert main(["validate", "--case", "nosuch", "-q", "--json", into_file]) == 2
    assert capsys.readouterr().err == (
        f"palmsim: ConfigError: command line: --json: got '{into_file}'; expected a folder "
        f"({tmp_path / 'afile'} is a file)\n"
    )
    assert main(["validate", "--case", "nosuch", "-q", "--json", str(tmp_path)]) == 2
    assert "expected a file, not a folder" in capsys.readouterr().err


def test_validate_of_a_missing_file_prints_its_error_and_no_progress_bar(tmp_path, capsys):
    """The progress bar was drawn before the file was read, so a missing file's error came
    after a 'validate: 0case [00:00, ?case/s]' fragment on the same line."""
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError: ") and err.count("\n") == 1
    assert "case/s" not in err


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (
            ["summary.json", "requests.csv"],
            "is a serving run's folder (palmsim serve), not a training or inference run: serve "
            "draws its figures and report.html when run without --no-plots",
        ),
        (
            ["summary.json", "requests.csv", "report.html"],
            "is a serving run's folder (palmsim serve), not a training or inference run: serve "
            "wrote its figures to ",
        ),
        (["latency_load.csv", "rate-1/summary.json"], "is a latency-load curve's folder"),
        (["results.csv", "points/0123abcd/status.json"], "is a sweep's folder, not a run"),
        (["results.csv", "points/0123abcd.json"], "is a search's folder, not a run"),
    ],
)
@pytest.mark.parametrize("command", [["report"], ["plot", "gantt"]])
def test_plot_and_report_say_which_commands_folder_they_were_given(
    tmp_path, capsys, files, says, command
) -> None:
    """A serving run's, a latency-load curve's or a search's folder was 'not a run folder
    written by palmsim run' (records.npz or summary.json missing), and a search's was told to
    plot points that are JSON summaries; each now says what the folder is and where to go."""
    folder = tmp_path / "out"
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    assert main([*command, str(folder)]) == 5
    err = capsys.readouterr().err
    assert err.startswith(f"palmsim: RunDirError: {folder} {says}") and err.count("\n") == 1
