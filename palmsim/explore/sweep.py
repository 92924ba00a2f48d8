"""``palmsim sweep``: run a grid of configurations, resumably, on local processes or Dask.

A sweep spec (YAML) names the base files and the values to vary::

    base: {hw: ../hw_configs/tx8-wafer.yaml, workload: ../workloads/t-18b.yaml}
    set: ["training.global_batch_size=256"]          # optional: fixed overrides
    grid: {mapping.pp: [10, 20, 40], hw.system.link.bandwidth: [128 GB/s, 256 GB/s]}
    zip: {mapping.pp: [10, 20], mapping.tp: [32, 16]}  # optional: lists walked together

Paths are relative to the spec file. Keys are ``--set`` keys. Points are the cross product
of the ``grid`` lists (in file order) with the ``zip`` lists taken together; each point runs
exactly the path of ``palmsim run`` with its overrides, into ``OUT/points/<id>/``, where
``<id>`` hashes the point's overrides. A spec whose ``base`` names a ``serving`` file sweeps
serving runs: each point runs ``palmsim serve`` on it (``hw`` and ``workload`` default to
serve's, there is no ``mapping``: the serving file's ``serving.tp``, ``serving.pp`` and
``serving.replicas`` are its keys), and ``results.csv`` holds the serving figures
(:data:`SERVING_RESULT_COLUMNS`). A point is finished when its ``status.json`` exists
(written last, atomically), so a sweep killed at any moment and run again skips finished
points, reruns the others and ends with one row per point in ``OUT/results.csv``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palmsim.config.loader import read_config_file
from palmsim.config.overrides import parse_override
from palmsim.errors import ConfigError, ConfigProblem, MappingError, PalmsimError
from palmsim.report.export import make_folder, read_json, write_csv, write_json

__all__ = [
    "RESULT_COLUMNS",
    "SERVING_RESULT_COLUMNS",
    "SweepPoint",
    "SweepSpec",
    "load_sweep",
    "run_point",
    "sweep",
]

#: Summary figures copied into ``results.csv``, after the swept keys (a figure a run's mode
#: has not, e.g. an inference's time to first token in training, is an empty cell).
RESULT_COLUMNS: tuple[str, ...] = (
    "iteration_time_s",
    "throughput_samples_per_s",
    "throughput_tokens_per_s",
    "ttft_s",
    "tpot_s",
    "mfu",
    "pipeline_bubble_fraction",
    "memory_peak_bytes_per_tile_max",
    "noc_link_utilization_max",
    "dram_bandwidth_utilization_max",
    "exposed_communication_s",
    "num_tiles_used",
    "energy_per_token_j",
    "average_power_w",
    "cost_per_token_usd",
    "num_tiles_live",
    "rerouted_flows",
    "slowdown",
)
#: Serving summary figures copied into a serving sweep's ``results.csv`` (docs/metrics.md).
SERVING_RESULT_COLUMNS: tuple[str, ...] = (
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p90_s",
    "tpot_p99_s",
    "e2e_p90_s",
    "queue_p90_s",
    "throughput_requests_per_s",
    "throughput_output_tokens_per_s",
    "goodput_requests_per_s",
    "slo_attainment",
    "kv_cache_util_max",
    "num_preemptions",
    "num_rejected",
    "energy_per_output_token_j",
    "average_power_w",
    "cost_per_million_output_tokens_usd",
)
#: Columns of RESULT_COLUMNS and SERVING_RESULT_COLUMNS read from a section of the summary
#: (hardware energy:, cost:, defects:), empty when the hardware has none.
_NESTED_COLUMNS = {
    "energy_per_token_j": "energy",
    "energy_per_output_token_j": "energy",
    "average_power_w": "energy",
    "cost_per_million_output_tokens_usd": "cost",
    "cost_per_token_usd": "cost",
    "num_tiles_live": "defects",
    "rerouted_flows": "defects",
    "slowdown": "defects",
}


def _result_value(summary: Mapping[str, Any], column: str) -> Any:
    """A results.csv figure of a summary: a top-level key, or one of a section's."""
    section = _NESTED_COLUMNS.get(column)
    if section is None:
        return summary.get(column)
    return (summary.get(section) or {}).get(column)


_SPEC_KEYS = ("base", "set", "grid", "zip")
_BASE_KEYS = ("hw", "workload", "mapping", "serving")

#: The most points one sweep spec may hold. Each point is a whole simulation (about a
#: second to a minute, README "Sweeps"), so 100,000 points are already days of CPU time on
#: one machine; a larger grid is refused before its points are built, not left to run
#: for ever (a 500-byte spec can name 10^12 points).
MAX_POINTS = 100_000


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep: its swept values and its ``--set`` overrides."""

    point_id: str
    values: tuple[tuple[str, Any], ...]  # (swept key, value), in column order
    overrides: tuple[str, ...]  # fixed ``set:`` overrides, then the swept ones


@dataclass(frozen=True)
class SweepSpec:
    """A loaded sweep spec: base files (absolute paths), swept keys and the points."""

    path: str
    hw: str | None
    workload: str | None
    mapping: str | None
    keys: tuple[str, ...]
    points: tuple[SweepPoint, ...] = field(default=())
    sections: tuple[str, ...] = ()  # "grid" or "zip", the spec section of each of ``keys``
    fixed: tuple[str, ...] = ()  # the spec's ``set:`` overrides
    serving: str | None = None  # the serving file of a serving sweep

    @property
    def columns(self) -> tuple[str, ...]:
        """The summary figures of ``results.csv``: a serving sweep's or a run sweep's."""
        return SERVING_RESULT_COLUMNS if self.serving else RESULT_COLUMNS


def _format_value(value: Any) -> str:
    """A value as the text of a ``--set KEY=VALUE`` (YAML): strings as they are."""
    return value if isinstance(value, str) else json.dumps(value)


def _point_id(files: Sequence[str | None], overrides: Sequence[str]) -> str:
    """12 hex digits of sha256 over the base file paths and the point's overrides."""
    text = "\n".join([*(f or "" for f in files), *overrides])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _check_key(where: str, section: str, key: Any) -> list[ConfigProblem]:
    """A problem if ``key`` is not a ``--set`` key."""
    try:
        parse_override(f"{key}=0")
    except ConfigError as error:
        return [ConfigProblem(where, f"{section}.{key}", key, error.problems[0].expected)]
    return []


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and check a sweep spec and expand its points; ``overrides`` (the command line's
    ``--set``) follow each point's fixed ``set:`` ones, before its swept values, and are
    part of its id: a rerun with other ``--set`` values is another sweep.

    Raises:
        ConfigError: every problem of the spec at once (unknown keys with "did you mean",
            missing base files, lists that are empty or of unequal length, bad ``--set`` keys,
            more than :data:`MAX_POINTS` points, two points with the same overrides).
    """
    where = str(path)
    raw = read_config_file(path)
    problems: list[ConfigProblem] = []

    def bad(key: str, value: Any, expected: str) -> None:
        problems.append(ConfigProblem(where, key, value, expected))

    for key in raw:
        if key not in _SPEC_KEYS:
            close = difflib.get_close_matches(str(key), _SPEC_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad(str(key), raw[key], f"one of {', '.join(_SPEC_KEYS)}{hint}")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        bad("base", base, "a mapping of hw, workload, mapping")
        base = {}
    folder = Path(path).resolve().parent
    files: dict[str, str | None] = {}
    for key, value in base.items():
        if key not in _BASE_KEYS:
            close = difflib.get_close_matches(str(key), _BASE_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad(f"base.{key}", value, f"one of {', '.join(_BASE_KEYS)}{hint}")
            continue
        file = folder / str(value)
        if not file.exists():
            bad(f"base.{key}", value, f"a file (relative to the spec): {file} is missing")
        files[key] = str(file)
    if "serving" in files and "mapping" in files:
        bad(
            "base.mapping",
            base["mapping"],
            "no mapping file with base.serving: the serving file sets the replicas' mapping "
            "(sweep serving.tp, serving.pp, serving.replicas)",
        )
    fixed = raw.get("set") or []
    if isinstance(fixed, dict):  # KEY: value, as grid: and zip: write their keys
        for key in fixed:
            problems.extend(_check_key(where, "set", key))
        fixed = [f"{k}={_format_value(v)}" for k, v in fixed.items()]
    if not isinstance(fixed, list) or not all(isinstance(s, str) for s in fixed):
        bad("set", fixed, "a list of KEY=VALUE strings, or a mapping KEY: value")
        fixed = []
    lists: dict[str, dict[str, list[Any]]] = {}
    for section in ("grid", "zip"):
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            bad(section, value, "a mapping KEY: [values]")
            value = {}
        for key, options in value.items():
            problems.extend(_check_key(where, section, key))
            if not isinstance(options, list) or not options:
                bad(f"{section}.{key}", options, "a non-empty list of values")
        lists[section] = {k: v for k, v in value.items() if isinstance(v, list) and v}
    lengths = {len(v) for v in lists["zip"].values()}
    if len(lengths) > 1:
        bad("zip", {k: len(v) for k, v in lists["zip"].items()}, "lists of one length")
    both = set(lists["grid"]) & set(lists["zip"])
    if both:
        bad("zip", sorted(both), "keys not also in grid")
    count = math.prod(len(v) for v in lists["grid"].values()) * max(lengths, default=1)
    if count > MAX_POINTS:
        bad(
            "grid" if lists["grid"] else "zip",
            {k: len(v) for section in lists.values() for k, v in section.items()},
            f"at most {MAX_POINTS} points in all, not {count} (split the sweep into specs "
            "of fewer values)",
        )
    if problems:
        raise ConfigError(problems)
    keys = tuple(lists["grid"]) + tuple(lists["zip"])
    points = tuple(
        _points(
            keys,
            lists["grid"],
            lists["zip"],
            tuple(fixed) + tuple(overrides),
            # a serving sweep's file is part of its ids (a run sweep's ids as before it)
            (files.get("hw"), files.get("workload"), files.get("mapping"))
            + ((files["serving"],) if "serving" in files else ()),
        )
    )
    first: dict[str, SweepPoint] = {}
    for point in points:
        if point.point_id in first:
            twice = dict(point.values)
            bad(
                "grid" if lists["grid"] else "zip",
                {k: [dict(first[point.point_id].values)[k], v] for k, v in twice.items()},
                "values that give distinct points: these two give the same overrides "
                f"({', '.join(point.overrides[len(fixed) + len(overrides) :])})",
            )
            raise ConfigError(problems)
        first[point.point_id] = point
    return SweepSpec(
        where,
        files.get("hw"),
        files.get("workload"),
        files.get("mapping"),
        keys,
        points,
        sections=("grid",) * len(lists["grid"]) + ("zip",) * len(lists["zip"]),
        fixed=tuple(fixed),
        serving=files.get("serving"),
    )


def _points(
    keys: tuple[str, ...],
    grid: Mapping[str, list[Any]],
    zipped: Mapping[str, list[Any]],
    fixed: tuple[str, ...],
    files: tuple[str | None, ...],
) -> Iterator[SweepPoint]:
    zip_rows = list(zip(*zipped.values(), strict=True)) if zipped else [()]
    for grid_values in itertools.product(*grid.values()):
        for zip_values in zip_rows:
            values = tuple(zip(keys, (*grid_values, *zip_values), strict=True))
            overrides = fixed + tuple(f"{k}={_format_value(v)}" for k, v in values)
            yield SweepPoint(_point_id(files, overrides), values, overrides)


def run_point(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one point exactly as ``palmsim run`` does (``palmsim serve`` where the task names
    a serving file) and write its folder and ``status.json``.

    A top-level function of plain data, so that process pools and Dask can ship it. Never
    raises for a point's own failure: an infeasible mapping or a bad value is its status.
    """

    out = Path(task["out_dir"])
    status: dict[str, Any] = {"status": "ok", "reason": "", "summary": {}, "warnings": []}
    # A point's warnings (an under-used chip, uneven stages) go into its status.json, not to
    # the worker's stderr, where every point would repeat them across the sweep's progress.
    caught = _Caught()
    logger = logging.getLogger("palmsim")
    propagate = logger.propagate
    logger.addHandler(caught)
    logger.propagate = False
    try:
        if task.get("serving"):
            summary = _serve_point(task, out)
            status["summary"] = {k: _result_value(summary, k) for k in SERVING_RESULT_COLUMNS}
        else:
            summary = _run_point(task, out)
            status["summary"] = {k: _result_value(summary, k) for k in RESULT_COLUMNS}
    except MappingError as error:
        status.update(status="infeasible", reason=str(error))
    except PalmsimError as error:
        status.update(status="error", reason=f"{type(error).__name__}: {error}")
    except Exception as error:  # a bug in palmsim: keep the sweep going, say what happened
        status.update(status="error", reason=f"internal error {type(error).__name__}: {error}")
    finally:
        logger.removeHandler(caught)
        logger.propagate = propagate
    status["warnings"] = caught.messages
    write_json(out / "status.json", status)
    return status


def _run_point(task: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """``palmsim run`` of a point into ``out``: its summary."""
    from palmsim.api import load_experiment, run_experiment

    experiment = load_experiment(
        task["hw"], task["workload"], task["mapping"], overrides=task["overrides"]
    )
    return run_experiment(experiment, out, make_plots=task["plots"])


def _serve_point(task: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """``palmsim serve`` of a point into ``out``: its summary."""
    from palmsim.api import serve
    from palmsim.report.export import write_serving_run

    result = serve(task["hw"], task["workload"], task["serving"], overrides=task["overrides"])
    write_serving_run(
        out,
        summary=result.summary,
        resolved_config=result.resolved,
        trace=result.trace,
        make_plots=task["plots"],
    )
    return result.summary


class _Caught(logging.Handler):
    """Keeps the messages of WARNING and above logged while one point runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class _Progress:
    total: int
    skipped: int
    report: Callable[[int, int, str], None] | None
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "infeasible": 0, "error": 0})
    warned: int = 0  # finished points that logged warnings

    def update(self, status: str | None = None, warned: bool = False) -> None:
        """Count a finished point of ``status`` (None: only report the state so far)."""
        if status is not None:
            self.counts[status] = self.counts.get(status, 0) + 1
            self.warned += warned
        if self.report is None:
            return
        done = sum(self.counts.values())
        self.report(
            done + self.skipped,
            self.total,
            f"ok {self.counts['ok']}, infeasible {self.counts['infeasible']}, error "
            f"{self.counts['error']}"
            + (f", {self.skipped} already done" if self.skipped else "")
            + (f", {self.warned} with warnings in status.json" if self.warned else ""),
        )


def _results_rows(spec: SweepSpec, out: Path) -> list[list[Any]]:
    rows = []
    for point in spec.points:
        folder = out / "points" / point.point_id
        status = read_json(folder / "status.json") if (folder / "status.json").exists() else None
        state = status["status"] if status else "pending"
        summary = status.get("summary", {}) if status else {}
        rows.append(
            [point.point_id, state, (status or {}).get("reason", "")]
            + [_format_value(v) for _, v in point.values]
            + [summary.get(k, "") if summary.get(k) is not None else "" for k in spec.columns]
            + [str(Path("points") / point.point_id)]
        )
    return rows


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one (a
    container or ``taskset`` may allow fewer than the machine has), else the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity call (macOS, Windows)
        return os.cpu_count() or 1


def pool_size(jobs: int | None, tasks: int) -> int:
    """Worker processes for ``tasks`` tasks asked to run ``jobs`` at once (None: one per
    usable core, :func:`usable_cores`): never more than the cores or the tasks, at least one.
    The work is compute-bound, so a worker beyond the cores only adds its memory; and
    ``--jobs 100000`` must not fork a hundred thousand processes."""
    cores = usable_cores()
    return max(1, min(jobs or cores, cores, tasks))


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """The process pool of sweep, search and ``validate --jobs`` (``workers`` from
    :func:`pool_size`), each worker ignoring Ctrl-C. The terminal sends Ctrl-C to the whole
    process group; the parent keeps what finished and ends its workers
    (:func:`cancel_on_interrupt`), where an idle worker interrupted in its task queue would
    print the start of a traceback."""
    return ProcessPoolExecutor(
        max_workers=workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)
    )


@contextmanager
def cancel_on_interrupt(pool: ProcessPoolExecutor) -> Iterator[None]:
    """On Ctrl-C or SIGTERM, drop the queued simulations and end the running ones (each
    point is written atomically, so a killed one is simply not there) so leaving the pool
    does not wait for them."""
    try:
        yield
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in multiprocessing.active_children():
            worker.terminate()
        raise


def sweep(
    spec_path: str | Path,
    out_dir: str | Path,
    *,
    jobs: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    plots: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    """Run every unfinished point of a sweep spec and write ``OUT/results.csv``; return it.

    Args:
        spec_path: the sweep spec.
        out_dir: where the point folders and ``results.csv`` go.
        jobs: worker processes for ``executor="local"`` (default: the number of cores).
        executor: ``local`` (a process pool) or ``dask`` (an existing Dask cluster).
        scheduler: the Dask scheduler address, e.g. ``tcp://host:8786`` (``dask`` only).
        plots: also draw each point's figures.
        progress: called as ``progress(done, total, counts)`` once before the first point and
            after each point: points finished (earlier runs' included), points in the spec,
            and a text of the counts by status (the CLI draws it as a progress bar).
        overrides: ``--set`` strings added to every point after the spec's ``set:`` (e.g.
            the run budgets ``run.max_events``); they are part of the point ids, so a rerun
            with other ``--set`` values does not take the first run's points for its own.

    Raises:
        ConfigError: a bad spec, a bad base file or fixed override (every point would fail
            the same way), a bad ``--jobs`` or ``--out``, an unknown executor, or ``dask``
            without a reachable scheduler or without the ``palmsim[dask]`` extra installed.
    """
    if jobs is not None and jobs < 1:
        raise ConfigError.single("command line", "--jobs", jobs, "an int >= 1 (worker processes)")
    spec = load_sweep(spec_path, overrides)
    out = Path(out_dir)
    try:
        make_folder(out / "points")
    except OSError as error:
        raise ConfigError.single(
            "command line", "--out", str(out_dir), f"a folder palmsim can write ({error.strerror})"
        ) from None
    _check_shared_inputs(spec)
    header = ("point", "status", "reason", *spec.keys, *spec.columns, "run_dir")
    tasks = [
        {
            "hw": spec.hw,
            "workload": spec.workload,
            "mapping": spec.mapping,
            "serving": spec.serving,
            "overrides": list(point.overrides),
            "out_dir": str(out / "points" / point.point_id),
            "plots": plots,
        }
        for point in spec.points
        if not (out / "points" / point.point_id / "status.json").exists()
    ]
    tracker = _Progress(len(spec.points), len(spec.points) - len(tasks), progress)
    tracker.update()
    table = _Table(out / "results.csv", header, spec, out)

    def finished(status: Mapping[str, Any]) -> None:
        tracker.update(str(status["status"]), bool(status.get("warnings")))
        table.refresh()

    try:
        if executor == "local":
            if tasks:
                with (
                    worker_pool(pool_size(jobs, len(tasks))) as pool,
                    cancel_on_interrupt(pool),
                ):
                    for future in as_completed([pool.submit(run_point, t) for t in tasks]):
                        finished(future.result())
        elif executor == "dask":
            _run_on_dask(tasks, scheduler, finished)
        else:
            raise ConfigError.single("command line", "--executor", executor, "local or dask")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the table lists every point on disk
        table.write()
        raise
    return table.write()


class _Table:
    """``results.csv``, rewritten as points finish. A rewrite reads every point's
    ``status.json``, so it is skipped while less than :data:`TABLE_REFRESH_RATIO` times the
    last rewrite's own duration (and at least a second) has passed: the table lags by about
    a second on a small sweep and its upkeep stays a fixed share of the run on a large one,
    not growing with the square of the points. The last write, at the end, is complete."""

    def __init__(self, path: Path, header: tuple[str, ...], spec: SweepSpec, out: Path) -> None:
        self.path, self.header, self.spec, self.out = path, header, spec, out
        self.last_s = -math.inf  # when the last rewrite ended (time.monotonic)
        self.cost_s = 0.0  # how long it took

    def write(self) -> Path:
        start = time.monotonic()
        path = write_csv(self.path, self.header, _results_rows(self.spec, self.out))
        self.last_s = time.monotonic()
        self.cost_s = self.last_s - start
        return path

    def refresh(self) -> None:
        if time.monotonic() - self.last_s >= max(1.0, TABLE_REFRESH_RATIO * self.cost_s):
            self.write()


#: A rewrite of results.csv waits at least this many times the last one's duration.
TABLE_REFRESH_RATIO = 20


def _check_shared_inputs(spec: SweepSpec) -> None:
    """Load the first point's experiment: a problem of the base files, the fixed ``set:`` or
    the command line's ``--set`` (anything but a swept key's value), or a swept key that is
    no key, is every point's, so it is the spec's ConfigError now, not a table of failed
    points after the whole sweep has run. A swept value's own problem stays its point's."""
    from palmsim.api import check_serving_overrides, load_experiment, load_serving_inputs

    if not spec.points:
        return
    overrides = spec.points[0].overrides
    if spec.serving:  # a key serve takes from no point (mapping., training.): the spec's
        try:
            check_serving_overrides(overrides)
        except ConfigError as error:
            raise ConfigError([_in_spec(p, spec) for p in error.problems]) from None
    try:
        if spec.serving:
            load_serving_inputs(spec.hw, spec.workload, spec.serving, overrides=overrides)
        else:
            load_experiment(spec.hw, spec.workload, spec.mapping, overrides=overrides)
    except ConfigError as error:
        shared = [
            p
            for p in error.problems
            if p.expected.startswith("a known key") or not any(_names(p.key, k) for k in spec.keys)
        ]
        if shared:
            raise ConfigError([_in_spec(p, spec) for p in shared]) from None


def _in_spec(problem: ConfigProblem, spec: SweepSpec) -> ConfigProblem:
    """``problem`` named where the sweep spec put the override at its key: ``SPEC: grid.KEY``
    (or zip) for a swept key, ``SPEC: set`` for a fixed one; one the command line's own
    ``--set`` gives later keeps its name (the last override of a key wins). The loader names
    every override ``--set``, which the user did not type for the spec's."""
    for key, section in zip(spec.keys, spec.sections, strict=True):
        if _names(problem.key, key):
            return dataclasses.replace(problem, file=spec.path, key=f"{section}.{key}")
    command_line = spec.points[0].overrides[len(spec.fixed) : -len(spec.keys) or None]
    for text in (*spec.fixed, *command_line)[::-1]:  # the last override of a key wins
        override = parse_override(text)
        if _names(problem.key, ".".join((override.section, *override.path))):
            if text in command_line:
                return problem
            return dataclasses.replace(problem, file=spec.path, key="set", value=text)
    return problem


def _names(problem_key: str, swept_key: str) -> bool:
    """Whether a problem's key is the swept ``--set`` key (``mapping.pp``) or a part of its
    path (a file's problem is keyed without the section: ``pp``, ``system.link.bandwidth``)."""
    tail = swept_key.split(".", 1)[-1]
    return problem_key in (swept_key, tail) or swept_key.endswith("." + problem_key)


#: How long palmsim waits for a Dask scheduler to answer [s].
DASK_CONNECT_TIMEOUT_S = 30


def _run_on_dask(
    tasks: list[dict[str, Any]],
    scheduler: str | None,
    finished: Callable[[Mapping[str, Any]], None],
) -> None:
    if not scheduler:
        raise ConfigError.single(
            "--scheduler", "scheduler", scheduler, "a Dask scheduler address, e.g. tcp://host:8786"
        )
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError.single(
            "--executor", "executor", "dask", "the palmsim[dask] extra: pip install 'palmsim[dask]'"
        ) from None
    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT_S)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError.single(
            "command line",
            "--scheduler",
            scheduler,
            f"the address of a running Dask scheduler, e.g. tcp://host:8786 ({error})",
        ) from None
    with client:
        futures = client.map(run_point, tasks, pure=False)
        for future in dask_completed(futures):
            finished(future.result())
