"""``palmsim sweep``: spec expansion, one row per point, resume after kill -9, Dask."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from palmsim.api import load_experiment, serve, simulate, summarize_result
from palmsim.cli import main
from palmsim.errors import ConfigError
from palmsim.explore.sweep import load_sweep, sweep

REPO = Path(__file__).resolve().parents[2]
# T-18B cut to 4 layers and 16 samples: a point simulates in well under a second.
SMALL_SET = [
    "model.num_hidden_layers=4",
    "training.global_batch_size=16",
    "mapping.tp=4",
    "mapping.micro_batch_size=4",
    "mapping.recompute=none",
]


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"base: {{hw: {REPO}/hw_configs/tx8-wafer.yaml, workload: {REPO}/workloads/t-18b.yaml}}\n"
        f"set: {SMALL_SET!r}\n" + body
    )
    return path


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_grid_crosses_zip_in_file_order(tmp_path: Path) -> None:
    spec = load_sweep(
        _spec(tmp_path, "grid: {mapping.pp: [1, 2]}\nzip: {mapping.dp: [1, 2], run.seed: [0, 1]}\n")
    )
    assert spec.keys == ("mapping.pp", "mapping.dp", "run.seed")
    assert [dict(p.values) for p in spec.points] == [
        {"mapping.pp": 1, "mapping.dp": 1, "run.seed": 0},
        {"mapping.pp": 1, "mapping.dp": 2, "run.seed": 1},
        {"mapping.pp": 2, "mapping.dp": 1, "run.seed": 0},
        {"mapping.pp": 2, "mapping.dp": 2, "run.seed": 1},
    ]
    assert spec.points[0].overrides[-3:] == ("mapping.pp=1", "mapping.dp=1", "run.seed=0")
    assert len({p.point_id for p in spec.points}) == 4
    assert load_sweep(tmp_path / "spec.yaml").points == spec.points  # stable ids


def test_bad_spec_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "base: {hw: nope.yaml}\ngird: {mapping.pp: [1]}\n"
        "zip: {mapping.pp: [1, 2], mapping.tp: [1]}\ngrid: {mapping.pp: []}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    keys = {p.key for p in info.value.problems}
    assert {"gird", "base.hw", "zip", "grid.mapping.pp"} <= keys
    assert "did you mean 'grid'" in str(info.value)


def test_a_grid_of_a_million_points_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """Six keys of ten values: 10^6 points, ten times MAX_POINTS. Counted as the product of
    the list lengths, so a 10^12-point spec is refused as fast (it once ran out of memory
    building its points)."""
    keys = ("run.seed", "hw.defects.seed", "mapping.pp", "mapping.dp", "mapping.tp", "mapping.zero")
    grid = ", ".join(f"{k}: {list(range(10))}" for k in keys)
    with pytest.raises(ConfigError, match=r"at most 100000 points in all, not 1000000 "):
        load_sweep(_spec(tmp_path, f"grid: {{{grid}}}\n"))


@pytest.mark.parametrize("values", ["[1f1b, 1f1b]", "[4, '4']"])
def test_two_values_that_give_one_point_are_a_spec_error(tmp_path: Path, values: str) -> None:
    """[4, '4'] are one --set value (mapping.pp=4): two rows of one point id, and with
    --jobs 2 two workers writing one folder."""
    key = "mapping.schedule" if "1f1b" in values else "mapping.pp"
    with pytest.raises(ConfigError, match="values that give distinct points"):
        load_sweep(_spec(tmp_path, f"grid: {{{key}: {values}}}\n"))


@pytest.mark.parametrize(
    ("body", "extra", "where", "key"),
    [
        # named where the spec put it (the loader sees every override as a --set)
        ("grid: {mapping.nosuch: [1, 2]}\n", [], "spec", "grid.mapping.nosuch"),
        ("zip: {mapping.nosuch: [1, 2]}\n", [], "spec", "zip.mapping.nosuch"),
        ("set: [mapping.pp=abc]\ngrid: {run.seed: [0, 1]}\n", [], "spec", "set"),
        # the command line's own --set keeps its name
        (
            "grid: {run.seed: [0, 1]}\n",
            ["hw.system.nosuch=1"],
            "--set hw.system.nosuch=1",
            "system.nosuch",
        ),
    ],
)
def test_a_problem_every_point_shares_is_the_specs_error(
    tmp_path: Path, body: str, extra: list[str], where: str, key: str
) -> None:
    """An unknown swept key, a bad fixed set: or a bad --set fails every point alike: the
    sweep says so before running any, with exit 2, not a table of errors and exit 0, and
    names the spec's section or the command line, whichever holds the mistake."""
    path = tmp_path / "spec.yaml"
    base = (
        f"base: {{hw: {REPO}/hw_configs/tx8-wafer.yaml, workload: {REPO}/workloads/t-18b.yaml}}\n"
    )
    path.write_text(base + body)
    with pytest.raises(ConfigError) as info:
        sweep(path, tmp_path / "out", jobs=1, overrides=extra)
    (problem,) = info.value.problems
    assert problem.key == key
    if where == "spec":
        assert problem.file == str(path)
    else:
        assert problem.file.startswith(where)
    assert not list((tmp_path / "out").glob("points/*/status.json"))


def test_a_bad_swept_value_is_its_points_error_only(tmp_path: Path) -> None:
    path = _spec(tmp_path, "grid: {mapping.pp: [-1, 1]}\n")
    sweep(path, tmp_path / "out", jobs=1)
    assert [r["status"] for r in _rows(tmp_path / "out")] == ["error", "ok"]


def test_fixed_set_may_be_a_mapping_as_grid_is(tmp_path: Path) -> None:
    """``set: {KEY: value}`` is the list ``[KEY=value]``: the same points, the same ids; a key
    that is no --set key is named under set, as a grid key is under grid."""
    base = (
        f"base: {{hw: {REPO}/hw_configs/tx8-wafer.yaml, workload: {REPO}/workloads/t-18b.yaml}}\n"
    )
    listed = tmp_path / "listed.yaml"
    listed.write_text(
        base + "set: [mapping.tp=4, 'hw.system.link.bandwidth=128 GB/s']\n"
        "grid: {mapping.pp: [1, 2]}\n"
    )
    mapped = tmp_path / "mapped.yaml"
    mapped.write_text(
        base + "set: {mapping.tp: 4, hw.system.link.bandwidth: 128 GB/s}\n"
        "grid: {mapping.pp: [1, 2]}\n"
    )
    assert load_sweep(mapped).points == load_sweep(listed).points
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(base + "set: {foo.bar: 4}\ngrid: {mapping.pp: [1]}\n")
    with pytest.raises(ConfigError, match=r"set\.foo\.bar"):
        load_sweep(wrong)


def test_command_line_set_values_are_part_of_the_point_ids(tmp_path: Path) -> None:
    """A rerun with another --set is another sweep: it must not take the first run's
    finished points (simulated with the other value) for its own."""
    path = _spec(tmp_path, "grid: {mapping.pp: [1]}\n")
    first = load_sweep(path, ["hw.system.link.bandwidth=128 GB/s"]).points[0]
    second = load_sweep(path, ["hw.system.link.bandwidth=256 GB/s"]).points[0]
    assert first.point_id != second.point_id
    assert first.overrides[-2:] == ("hw.system.link.bandwidth=128 GB/s", "mapping.pp=1")


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_below_one_is_a_one_line_error(tmp_path: Path, capsys, jobs: str) -> None:
    path = _spec(tmp_path, "grid: {mapping.pp: [1]}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--jobs", jobs]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    path = _spec(tmp_path, "grid: {mapping.pp: [1]}\n")
    (tmp_path / "afile").write_text("")
    assert main(["sweep", str(path), "--out", str(tmp_path / "afile"), "--jobs", "1"]) == 2
    assert "--out" in capsys.readouterr().err


def test_every_point_is_a_row_with_the_run_it_would_be_alone(tmp_path: Path) -> None:
    """tp=5 does not divide 48 heads: that point is infeasible, the others ok; an ok row's
    iteration time is the one `palmsim run` gives with the same overrides."""
    path = _spec(tmp_path, "grid: {mapping.pp: [1, 2], mapping.tp: [4, 5]}\n")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "2", "-q"]) == 0
    rows = _rows(out)
    assert [(r["mapping.pp"], r["mapping.tp"], r["status"]) for r in rows] == [
        ("1", "4", "ok"),
        ("1", "5", "infeasible"),
        ("2", "4", "ok"),
        ("2", "5", "infeasible"),
    ]
    assert "does not divide" in rows[1]["reason"]
    alone = simulate(
        load_experiment(
            str(REPO / "hw_configs/tx8-wafer.yaml"),
            str(REPO / "workloads/t-18b.yaml"),
            overrides=[*SMALL_SET, "mapping.pp=2", "mapping.tp=4"],
        )
    )
    assert float(rows[2]["iteration_time_s"]) == alone.trace.end_time_s
    assert (out / rows[2]["run_dir"] / "summary.json").exists()


def test_an_inference_points_row_has_its_ttft_and_tpot(tmp_path: Path) -> None:
    """An inference sweep's rows hold the time to first token and per output token of the
    run each point is alone; a training row leaves them empty."""
    small = [
        "workload.mode=inference",
        "model.num_hidden_layers=2",
        "inference.prompt_len=64",
        "inference.output_len=3",
        "inference.batch=4",
    ]
    path = tmp_path / "inference.yaml"
    path.write_text(
        f"base: {{hw: {REPO}/hw_configs/wormhole-t3000.yaml, workload: "
        f"{REPO}/workloads/llama3-8b.yaml}}\nset: {small!r}\ngrid: {{mapping.tp: [2, 4]}}\n"
    )
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "-q"]) == 0
    for row, tp in zip(_rows(out), (2, 4), strict=True):
        alone = simulate(
            load_experiment(
                str(REPO / "hw_configs/wormhole-t3000.yaml"),
                str(REPO / "workloads/llama3-8b.yaml"),
                overrides=[*small, f"mapping.tp={tp}"],
            )
        )
        summary = summarize_result(alone)
        assert float(row["ttft_s"]) == summary["ttft_s"]
        assert float(row["tpot_s"]) == summary["tpot_s"]
    training = _spec(tmp_path, "grid: {mapping.pp: [1]}\n")
    assert main(["sweep", str(training), "--out", str(tmp_path / "t"), "-q"]) == 0
    assert _rows(tmp_path / "t")[0]["ttft_s"] == _rows(tmp_path / "t")[0]["tpot_s"] == ""


SERVE_SMALL = ["serving.traffic.num_requests=12", "serving.traffic.rate_per_s=20"]


def _serving_spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "serving.yaml"
    path.write_text(
        f"base: {{serving: {REPO}/serving/llama3-8b-h100-node.yaml}}\nset: {SERVE_SMALL!r}\n" + body
    )
    return path


def test_a_serving_sweep_runs_palmsim_serve_per_point(tmp_path: Path) -> None:
    """A spec naming base.serving runs each point as ``palmsim serve`` (the shipped serve
    defaults for the hardware and workload): its row holds the serving figures of the run
    the point is alone, tp 3 (not a divisor of the 32 heads) is infeasible, and the point's
    folder is a serving run."""
    path = _serving_spec(tmp_path, "zip: {serving.tp: [2, 3], serving.replicas: [4, 2]}\n")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "-q"]) == 0
    rows = _rows(out)
    assert [(r["serving.tp"], r["status"]) for r in rows] == [("2", "ok"), ("3", "infeasible")]
    assert "iteration_time_s" not in rows[0] and "does not divide" in rows[1]["reason"]
    alone = serve(
        None,
        None,
        str(REPO / "serving/llama3-8b-h100-node.yaml"),
        overrides=[*SERVE_SMALL, "serving.tp=2", "serving.replicas=4"],
    ).summary
    for column in ("ttft_p90_s", "tpot_p90_s", "goodput_requests_per_s", "num_preemptions"):
        assert float(rows[0][column]) == alone[column]
    energy = alone["energy"]["energy_per_output_token_j"]
    assert float(rows[0]["energy_per_output_token_j"]) == energy
    assert (out / rows[0]["run_dir"] / "requests.csv").exists()


def test_a_serving_sweep_refuses_what_serve_would_ignore(tmp_path: Path) -> None:
    """A mapping file beside base.serving, or a swept mapping. key, would be ignored by every
    point: the spec's ConfigError, naming its key, before any point runs."""
    path = tmp_path / "both.yaml"
    path.write_text(
        f"base: {{serving: {REPO}/serving/llama3-8b-h100-node.yaml, mapping: "
        f"{REPO}/workloads/t-18b.yaml}}\ngrid: {{serving.tp: [1]}}\n"
    )
    with pytest.raises(ConfigError, match=r"base\.mapping: .* no mapping file with base\.serving"):
        load_sweep(path)
    path = _serving_spec(tmp_path, "grid: {mapping.tp: [1, 2]}\n")
    with pytest.raises(ConfigError) as info:
        sweep(path, tmp_path / "out", jobs=1)
    (problem,) = info.value.problems
    assert (problem.file, problem.key) == (str(path), "grid.mapping.tp")
    assert "no mapping. key in palmsim serve" in problem.expected
    assert not list((tmp_path / "out").glob("points/*/status.json"))


def test_a_serving_sweeps_ids_hold_its_serving_file(tmp_path: Path) -> None:
    """Two serving files with the same overrides are two sweeps' points, not one."""
    a = load_sweep(_serving_spec(tmp_path, "grid: {serving.tp: [1]}\n"))
    other = tmp_path / "other.yaml"
    other.write_text(
        f"base: {{serving: {REPO}/serving/llama3-8b-h100.yaml}}\nset: {SERVE_SMALL!r}\n"
        "grid: {serving.tp: [1]}\n"
    )
    assert a.points[0].overrides == load_sweep(other).points[0].overrides
    assert a.points[0].point_id != load_sweep(other).points[0].point_id


def test_rerun_skips_finished_points(tmp_path: Path) -> None:
    path = _spec(tmp_path, "grid: {mapping.pp: [1, 2, 4]}\n")
    out = tmp_path / "out"
    sweep(path, out, jobs=1)
    first = _rows(out)
    (out / first[1]["run_dir"] / "status.json").unlink()
    reports: list[tuple[int, int, str]] = []
    sweep(path, out, jobs=1, progress=lambda *report: reports.append(report))
    # before the first point, then after the only unfinished one
    assert [(done, total) for done, total, _ in reports] == [(2, 3), (3, 3)]
    assert reports[-1][2].startswith("ok 1, infeasible 0, error 0, 2 already done")
    assert _rows(out) == first


def test_sweep_killed_midway_and_rerun_has_one_ok_row_per_point(tmp_path: Path) -> None:
    path = _spec(tmp_path, "grid: {mapping.pp: [1, 2, 4], run.seed: [0, 1, 2, 3]}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "palmsim.cli", "sweep", str(path), "--out", str(out)]
    child = subprocess.Popen([*command, "--jobs", "1", "-q"], start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("points/*/status.json"))) < 3:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the sweep and its worker, mid-point
    child.wait()
    done_before = len(list(out.glob("points/*/status.json")))
    assert 3 <= done_before < 12
    subprocess.run([*command, "-q"], check=True)
    rows = _rows(out)
    assert len(rows) == 12
    assert [r["status"] for r in rows] == ["ok"] * 12
    assert len({r["point"] for r in rows}) == 12


def test_dask_executor_on_a_local_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    path = _spec(tmp_path, "grid: {mapping.pp: [1, 2]}\n")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        sweep(path, tmp_path / "dask", executor="dask", scheduler=cluster.scheduler_address)
    sweep(path, tmp_path / "local", jobs=1)
    dask_rows, local_rows = _rows(tmp_path / "dask"), _rows(tmp_path / "local")
    assert [r["status"] for r in dask_rows] == ["ok", "ok"]
    assert dask_rows == local_rows  # the same points, the same figures


def test_dask_without_a_scheduler_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    path = _spec(tmp_path, "grid: {mapping.pp: [1]}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--executor", "dask"]) == 2
    assert "scheduler" in capsys.readouterr().err


def test_plot_pareto_of_a_sweep_folder(tmp_path: Path, capsys) -> None:
    path = _spec(tmp_path, "grid: {mapping.pp: [1, 2, 4]}\n")
    out = tmp_path / "out"
    sweep(path, out, jobs=1)
    assert main(["plot", "pareto", str(out)]) == 0
    assert (out / "pareto.png").stat().st_size > 0
    assert main(["plot", "pareto", str(tmp_path / "nothing")]) == 5
    assert "results.csv does not exist" in capsys.readouterr().err
    # a run's figure asked of the sweep folder: the error points at points/<id> and pareto
    assert main(["plot", "gantt", str(out)]) == 5
    err = capsys.readouterr().err
    assert "points/<id>" in err and f"palmsim plot pareto {out}" in err


def test_pareto_labels_name_the_fields_that_differ() -> None:
    """A sweep over pp and seed labels its points by both, with no hash id or fixed field."""
    from palmsim.cli import _pareto_labels

    rows = [
        {
            "point": "ab12",
            "status": "ok",
            "mapping.pp": "2",
            "run.seed": "0",
            "mapping.tp": "16",
            "iteration_time_s": "1.5",
            "mfu": "0.3",
        },
        {
            "point": "cd34",
            "status": "ok",
            "mapping.pp": "4",
            "run.seed": "1",
            "mapping.tp": "16",
            "iteration_time_s": "1.2",
            "mfu": "0.4",
        },
    ]
    assert _pareto_labels(rows) == ["pp=2 run.seed=0", "pp=4 run.seed=1"]
    search = [{"pp": "5", "placement": "snake"}, {"pp": "5", "placement": "row_major"}]
    assert _pareto_labels(search) == ["placement=snake", "placement=row_major"]


def test_plot_lists_pareto_among_its_kinds(capsys) -> None:
    assert main(["plot", "paretto", "."]) == 2
    err = capsys.readouterr().err
    assert "pareto" in err and "did you mean 'pareto'?" in err


def test_point_warnings_go_to_status_json_not_stderr(tmp_path: Path, capfd) -> None:
    """Every point of the small spec uses pp x 4 of 320 tiles: its warning is kept in its
    status.json and counted in the progress, not printed by the worker."""
    path = _spec(tmp_path, "grid: {mapping.pp: [1, 2]}\n")
    out = tmp_path / "out"
    reports: list[tuple[int, int, str]] = []
    sweep(path, out, jobs=1, progress=lambda *report: reports.append(report))
    for row in _rows(out):
        status = json.loads((out / row["run_dir"] / "status.json").read_text())
        assert any("of 320 tiles" in w for w in status["warnings"]), status["warnings"]
    assert reports[-1][2].endswith("2 with warnings in status.json")
    assert "of 320 tiles" not in capfd.readouterr().err


def test_worker_pools_never_exceed_the_cores_or_the_tasks(monkeypatch) -> None:
    """--jobs asks; the pool of sweep, search and validate is at most one worker per core and
    per task, at least one (``--jobs 100000`` on a big spec forks no 100000 processes)."""
    import palmsim.explore.sweep as module

    monkeypatch.setattr(module, "usable_cores", lambda: 4)
    assert module.pool_size(None, 100) == 4  # default: every core
    assert module.pool_size(100_000, 100_000) == 4
    assert module.pool_size(8, 3) == 3
    assert module.pool_size(2, 100) == 2
    assert module.pool_size(None, 0) == 1


def test_usable_cores_are_the_affinity_where_there_is_one(monkeypatch) -> None:
    """A container or ``taskset`` may give the process 2 of a machine's 64 cores."""
    import palmsim.explore.sweep as module

    monkeypatch.setattr(module.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert module.usable_cores() == 2
    monkeypatch.delattr(module.os, "sched_getaffinity")  # macOS: the machine's count
    assert module.usable_cores() == 64
    monkeypatch.setattr(module.os, "cpu_count", lambda: None)  # unknown: one
    assert module.usable_cores() == 1


def _sigint_handler_name() -> str:
    return str(signal.getsignal(signal.SIGINT))


def test_pool_workers_leave_ctrl_c_to_the_parent() -> None:
    """Ctrl-C reaches the whole process group: a worker idle in its task queue would print
    the start of a traceback ("Process ForkProcess-1:") before the parent ended it; the
    workers of sweep, search and validate ignore it and the parent alone handles it."""
    from palmsim.explore.sweep import worker_pool

    with worker_pool(1) as pool:
        assert pool.submit(_sigint_handler_name).result() == str(signal.SIG_IGN)
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN  # the parent's is untouched
