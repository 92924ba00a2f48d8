"""Command line: ``palmsim run``, ``serve``, ``plot``, ``report``, ``sweep``, ``search``,
``validate``, ``calibrate`` and ``describe``.

Each command parses its arguments, calls the library and maps errors to exit codes:
0 success, 2 ConfigError, 3 MappingError, 4 SimulationError, 5 RunDirError (``plot``, ``report``),
6 a ``validate --max-error`` exceeded, 7 a file the system would not let palmsim read or write;
130 Ctrl-C, 143 SIGTERM, 141 a closed pipe (``| head``).
Errors print as one message (all problems of a config file at once), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from palmsim import __version__

if TYPE_CHECKING:
    from typing import Any

# Everything else is imported where it is used, so `palmsim --help` and argument errors start
# no heavier module than argparse (numpy, SimPy, networkx, matplotlib load only for commands).

_MAPPING_FLAGS = (
    ("--pp", "pp", int, "pipeline-parallel stages"),
    ("--tp", "tp", int, "tensor-parallel degree"),
    ("--dp", "dp", int, "data-parallel replicas"),
    ("--micro-batch", "micro_batch_size", int, "samples per micro-batch"),
    ("--schedule", "schedule", str, "pipeline schedule: gpipe or 1f1b"),
    ("--recompute", "recompute", str, "activation recompute: none, selective or full"),
    ("--placement", "placement", str, "placement strategy: snake or row_major"),
    ("--partition", "partition", str, "layers to stages: layers (equal counts) or cost"),
    ("--zero", "zero", int, "ZeRO stage over the DP group: 0, 1, 2 or 3"),
    ("--virtual-stages", "virtual_stages", int, "model chunks per stage: > 1 = interleaved 1F1B"),
    ("--ep", "ep", int, "expert-parallel degree (MoE models): divides the experts"),
    ("--expert-tp", "expert_tp", int, "expert tensor-parallel degree (default tp): divides tp"),
    ("--cp", "cp", int, "context-parallel degree: the sequence split over cp tiles"),
)


def _add_inputs(
    parser: argparse.ArgumentParser, modes: tuple[str, ...] = ("training", "inference")
) -> None:
    parser.add_argument("--hw", help="hardware YAML (default: hw_configs/tx8-wafer.yaml)")
    parser.add_argument(
        "--workload", help="workload YAML or HF config.json (default: workloads/t-18b.yaml)"
    )
    parser.add_argument("--mapping", help="mapping YAML (overrides the workload's mapping:)")
    parser.add_argument(
        "--mode",
        choices=modes,
        help="training, or inference (one static batch: the workload's inference: section and "
        "mapping)"
        + (
            "; serving: `palmsim serve` (request traffic, --serving FILE)"
            if "serving" in modes
            else ""
        ),
    )
    for flag, dest, kind, text in _MAPPING_FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, help=text)
    parser.add_argument(
        "--sequence-parallel",
        dest="sequence_parallel",
        action="store_const",
        const=True,
        help="Megatron sequence parallelism (reduce-scatter + all-gather in place of TP "
        "all-reduces, norms and dropouts on s/t tokens)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set hw.system.link.bandwidth="
        "'512 GB/s' (prefixes: hw, workload, model, training, inference, mapping, run)",
    )


class _ProgressBar:
    """A tqdm bar on stderr behind the library's ``progress(done, total, text)`` callbacks.

    tqdm draws only on a terminal (``disable=None``), so pipes and CI logs stay clean; ``-q``
    turns it off everywhere.
    """

    def __init__(self, what: str, unit: str, *, quiet: bool, leave: bool = True) -> None:
        self.what, self.unit, self.quiet, self.leave = what, unit, quiet, leave
        self.bar: Any = None

    def __call__(self, done: int, total: int, text: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=self.what,
                unit=self.unit,
                file=sys.stderr,
                disable=True if self.quiet else None,
                leave=self.leave,
                dynamic_ncols=True,
            )
        self.bar.set_postfix_str(text, refresh=False)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        else:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _load(args: argparse.Namespace) -> Any:
    from palmsim.api import load_experiment

    dests = [dest for _, dest, _, _ in _MAPPING_FLAGS] + ["sequence_parallel"]
    flags = {dest: getattr(args, dest) for dest in dests if getattr(args, dest) is not None}
    overrides = list(args.overrides)
    if args.mode is not None:  # as the first override, so --set workload.mode=... still wins
        overrides.insert(0, f"workload.mode={args.mode}")
    return load_experiment(
        args.hw, args.workload, args.mapping, overrides=overrides, mapping_flags=flags
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from palmsim.api import resolved_config, run_experiment
    from palmsim.report.energy import format_energy_table
    from palmsim.report.export import run_id
    from palmsim.report.metrics import format_summary_table

    if args.mode == "serving":  # an alias of palmsim serve
        from palmsim.errors import ConfigError

        dests = [(flag, dest) for flag, dest, _, _ in _MAPPING_FLAGS]
        dests += [("--sequence-parallel", "sequence_parallel"), ("--mapping", "mapping")]
        dests += [("--trace", "trace"), ("--csv", "csv"), ("--op-table", "op_table")]
        for flag, dest in dests:
            if getattr(args, dest) not in (None, False):
                raise ConfigError.single(
                    "command line",
                    flag,
                    getattr(args, dest),
                    "nothing with --mode serving: the serving file sets the replicas' "
                    "mapping (e.g. --set serving.tp=2)",
                )
        args.serving_workload, args.rates, args.label = args.workload, None, None
        return _cmd_serve(args)
    if args.serving is not None:
        from palmsim.errors import ConfigError

        raise ConfigError.single(
            "command line", "--serving", args.serving, "--mode serving with it"
        )
    experiment = _load(args)
    config = resolved_config(experiment)
    out = Path(args.out) if args.out else Path(args.results) / run_id(config, __version__)
    _check_out_folder("--out" if args.out else "--results", out)
    simulating = _ProgressBar("simulating", "pass", quiet=args.quiet, leave=False)
    bar = _ProgressBar("writing", "file", quiet=args.quiet, leave=False)

    def writing(done: int, total: int, text: str) -> None:
        simulating.close()
        bar(done, total, text)

    try:
        summary = run_experiment(
            experiment,
            out,
            make_plots=not args.no_plots,
            op_table=args.op_table,
            csv_records=args.csv,
            trace_kind=args.trace,
            progress=writing,
            simulating=simulating,
        )
    finally:
        simulating.close()
        bar.close()
    if not args.quiet:
        print(format_summary_table(summary))
        print(format_energy_table(summary))
        print(f"wrote {out}/")
    return 0


def _tile_range(text: str) -> tuple[int, int]:
    """``"A-B"`` (or ``"A"``) -> ``(A, B)``, for ``--tiles``."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B (tile indices), got {text!r}") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"empty tile range {text!r}")
    return low, high


#: results.csv columns of memory per tile: ``palmsim search``'s, then ``palmsim sweep``'s.
_MEMORY_COLUMNS = ("memory_per_tile_bytes", "memory_peak_bytes_per_tile_max")


def _plot_pareto(args: argparse.Namespace) -> int:
    """``palmsim plot pareto DIR``: iteration time against memory per tile of a sweep's or a
    search's ``DIR/results.csv``, Pareto front marked."""
    from palmsim.errors import RunDirError
    from palmsim.explore.search import pareto_front
    from palmsim.report import plots
    from palmsim.report.export import read_csv_rows

    table = Path(args.run_dir) / "results.csv"
    if not table.exists():
        raise RunDirError(f"{table} does not exist: pareto plots a sweep's or a search's results")
    rows = read_csv_rows(table)
    column = next((c for c in _MEMORY_COLUMNS if rows and c in rows[0]), None)
    done = [r for r in rows if column and r.get(column) and r.get("iteration_time_s")]
    if not done:
        raise RunDirError(f"{table} has no point with both memory per tile and iteration time")
    points = [(float(r[str(column)]), float(r["iteration_time_s"])) for r in done]
    out = Path(args.out) if args.out else Path(args.run_dir) / "pareto.png"
    plots.pareto(points, pareto_front(points), out, labels=_pareto_labels(done))
    print(f"wrote {out}")
    return 0


#: results.csv columns that are not a point's inputs: its status, figures and folder.
_NOT_INPUTS = frozenset(
    {"point", "status", "reason", "run_dir", "lower_bound_s", *_MEMORY_COLUMNS}
    | {"iteration_time_s", "throughput_samples_per_s", "throughput_tokens_per_s", "mfu"}
    | {"pipeline_bubble_fraction", "noc_link_utilization_max", "dram_bandwidth_utilization_max"}
    | {"exposed_communication_s", "num_tiles_used"}
)


def _pareto_labels(rows: list[dict[str, str]]) -> list[str]:
    """Each point's label: ``key=value`` of every input column whose value differs between
    the points (a sweep's swept keys, a search's mapping fields), never a hash id."""
    if not rows:
        return []
    inputs = [k for k in rows[0] if k not in _NOT_INPUTS]
    differing = [k for k in inputs if len({r.get(k, "") for r in rows}) > 1]
    return [
        " ".join(f"{k.removeprefix('mapping.')}={r.get(k, '')}" for k in differing)
        or r.get("point", "")
        for r in rows
    ]


#: The ``palmsim plot`` options and the kinds that read them.
_PLOT_FLAGS = (
    ("--per-tile", "per_tile", ("gantt",)),
    ("--stage", "stage", ("gantt",)),
    ("--tiles", "tiles", ("gantt",)),
    ("--by", "by", ("noc",)),
    ("--category", "category", ("noc",)),
)


def _cmd_plot(args: argparse.Namespace) -> int:
    from palmsim.api import load_result
    from palmsim.errors import ConfigError, RunDirError
    from palmsim.report.export import write_plot
    from palmsim.report.plots import PLOT_KINDS

    for flag, dest, readers in _PLOT_FLAGS:  # a flag the kind does not read changes nothing
        value = getattr(args, dest)
        if value is not None and value is not False and args.kind not in readers:
            raise ConfigError.single(
                "command line",
                flag,
                value,
                f"nothing for plot {args.kind}: it applies to plot {' and '.join(readers)} only",
            )
    if args.kind == "pareto":
        return _plot_pareto(args)
    if args.kind not in PLOT_KINDS:
        kinds = [*PLOT_KINDS.names(), "pareto"]
        close = difflib.get_close_matches(args.kind, kinds, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError.single(
            "command line", "KIND", args.kind, f"one of {', '.join(kinds)}{hint}"
        )
    _check_run_folder(Path(args.run_dir), f"plot {args.kind}")
    run = load_result(args.run_dir)
    if args.stage is not None and not 0 <= args.stage < run.plan.num_stages:
        raise ConfigError.single(
            "command line", "--stage", args.stage, f"0..{run.plan.num_stages - 1}"
        )
    if args.tiles is not None:
        low, high = args.tiles
        simulated = run.plan.simulated_tiles
        if not any(low <= t <= high for t in simulated):
            raise ConfigError.single(
                "command line",
                "--tiles",
                f"{low}-{high}",
                f"a range holding a tile the run simulated ({min(simulated, default=0)}.."
                f"{max(simulated, default=0)})",
            )
    if args.category is not None:
        flows = run.trace.flows
        table = flows.table("category")
        present = sorted({str(table[c]) for c in set(flows.codes("category").tolist())})
        if args.category not in present:
            close = difflib.get_close_matches(args.category, present, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError.single(
                "command line",
                "--category",
                args.category,
                f"a category of this run's flows: {', '.join(present) or 'none'}{hint}",
            )
    out = Path(args.out) if args.out else Path(args.run_dir) / "plots" / f"{args.kind}.png"
    options = {
        "per_tile": args.per_tile or args.tiles is not None or args.stage is not None,
        "stage": args.stage,
        "tiles": args.tiles,
        "by": args.by or "utilization",
        "category": args.category,
    }
    try:
        write_plot(run, args.kind, out, options)
    except OSError as error:  # e.g. a file named RUN_DIR/plots, or an --out in no folder
        why = error.strerror or str(error)
        if args.out:
            raise ConfigError.single(
                "command line", "--out", args.out, f"a writable path ({why})"
            ) from None
        raise RunDirError(f"{error.filename or out}: cannot write the figure ({why})") from None
    print(f"wrote {out}")
    return 0


def _check_run_folder(folder: Path, command: str) -> None:
    """RunDirError saying what ``folder`` is when it is another command's output that
    ``palmsim plot``/``report`` cannot read as a run: a sweep's or search's folder (its
    points are runs), a serving run's or a latency-load curve's (serve draws their figures)."""
    from palmsim.errors import RunDirError

    if (folder / "summary.json").exists() and (folder / "requests.csv").exists():
        drawn = (folder / "report.html").exists()
        where = (
            f"serve wrote its figures to {folder / 'plots'} and {folder / 'report.html'}"
            if drawn
            else "serve draws its figures and report.html when run without --no-plots (the "
            "same inputs give the same run)"
        )
        raise RunDirError(
            f"{folder} is a serving run's folder (palmsim serve), not a training or inference "
            f"run: {where}"
        )
    if (folder / "latency_load.csv").exists():
        raise RunDirError(
            f"{folder} is a latency-load curve's folder (palmsim serve --rates): its figure is "
            f"{folder / 'latency_load.png'}, each rate's run a folder {folder / 'rate-<r>'}"
        )
    if not (folder / "summary.json").exists() and (folder / "results.csv").exists():
        if any(p.is_dir() for p in (folder / "points").glob("*")):  # a sweep's point runs
            raise RunDirError(
                f"{folder} is a sweep's folder, not a run: {command} one of its points, e.g. "
                f"palmsim {command} {folder / 'points' / '<id>'} (the ids are results.csv's "
                f"run_dir column), or plot all of them with palmsim plot pareto {folder}"
            )
        raise RunDirError(
            f"{folder} is a search's folder, not a run (its points are summaries): run a "
            f"mapping of its results.csv with palmsim run --pp .. --tp .. --dp .. --out DIR, "
            f"or plot all of them with palmsim plot pareto {folder}"
        )


def _cmd_report(args: argparse.Namespace) -> int:
    from palmsim.api import load_result
    from palmsim.report.export import write_report

    _check_run_folder(Path(args.run_dir), "report")
    out = write_report(load_result(args.run_dir), args.run_dir)
    print(f"wrote {out}")
    return 0


#: The most arrival rates one ``palmsim serve --rates`` curve may have: each is a whole
#: serving run (1.5 s for the default 200 requests, README), so 100 are minutes already.
MAX_RATES = 100


def _check_rates(rates: Sequence[float]) -> None:
    """ConfigError unless ``rates`` are at most :data:`MAX_RATES` finite rates above zero
    whose folder names (``rate-{r:g}``) differ."""
    from palmsim.errors import ConfigError

    def bad(expected: str) -> ConfigError:
        return ConfigError.single("command line", "--rates", ",".join(map(str, rates)), expected)

    if len(rates) > MAX_RATES:
        raise bad(f"at most {MAX_RATES} rates, not {len(rates)}")
    if not all(math.isfinite(r) and r > 0 for r in rates):
        raise bad("arrival rates above zero [requests/s], e.g. 1,2,4")
    names = [f"{r:g}" for r in rates]
    if len(set(names)) < len(names):
        raise bad("distinct rates (each is written to OUT/rate-<rate>, as %g prints it)")


def _check_rated_traffic(args: argparse.Namespace) -> None:
    """ConfigError for ``--rates`` on traffic without a rate (a closed loop or a trace): each
    point of the curve would serve the same requests."""
    from palmsim.api import DEFAULT_SERVING, shipped_path
    from palmsim.config.loader import load_serving
    from palmsim.errors import ConfigError

    arrival = load_serving(args.serving or shipped_path(DEFAULT_SERVING), args.overrides)
    if arrival.traffic.arrival not in ("poisson", "gamma"):
        raise ConfigError.single(
            "command line",
            "--rates",
            ",".join(map(str, args.rates)),
            f"traffic with a rate (arrival poisson or gamma); its arrival is "
            f"{arrival.traffic.arrival!r}, whose load the rate does not set",
        )


def _cmd_serve(args: argparse.Namespace) -> int:
    from palmsim.report.export import write_latency_load, write_serving_run
    from palmsim.report.serving import format_serving_table

    if args.rates:
        _check_rates(args.rates)
        _check_rated_traffic(args)
        if args.out:
            _check_out_folder("--out", Path(args.out))
        curve = []
        for rate in args.rates:
            overrides = [*args.overrides, f"serving.traffic.rate_per_s={rate}"]
            result = _serve_with_bar(args, overrides, f"rate {rate:g}/s")
            s = result.summary
            curve.append((rate, s["ttft_p90_s"], s["tpot_p90_s"]))
            print(
                f"rate {rate:g}/s: TTFT p90 {s['ttft_p90_s'] * 1e3:.4g} ms, TPOT p90 "
                f"{s['tpot_p90_s'] * 1e3:.4g} ms, goodput {s['goodput_requests_per_s']:.4g}/s, "
                f"throughput {s['throughput_requests_per_s']:.4g}/s"
            )
            if args.out:
                write_serving_run(
                    Path(args.out) / f"rate-{rate:g}",
                    summary=s,
                    resolved_config=result.resolved,
                    trace=result.trace,
                    make_plots=False,
                )
        if args.out:
            name = args.label or Path(args.serving or "default").stem
            print(f"wrote {write_latency_load(args.out, {name: curve})}")
        return 0
    out = args.out or str(Path("results") / f"serve-{Path(args.serving or 'default').stem}")
    _check_out_folder("--out", Path(out))
    result = _serve_with_bar(args, args.overrides, "serving")
    if not args.quiet:
        print(format_serving_table(result.summary))
    write_serving_run(
        out,
        summary=result.summary,
        resolved_config=result.resolved,
        trace=result.trace,
        make_plots=not args.no_plots,
    )
    if not args.quiet:
        print(f"wrote {out}")
    return 0


def _serve_with_bar(args: argparse.Namespace, overrides: list[str], what: str) -> Any:
    """``api.serve`` of the command's files and ``overrides``, under a progress bar of its
    requests (off with -q or off a terminal)."""
    from palmsim.api import serve

    bar = _ProgressBar(what, "request", quiet=args.quiet, leave=False)
    try:
        return serve(
            args.hw, args.serving_workload, args.serving, overrides=overrides, progress=bar
        )
    finally:
        bar.close()


#: The most tiles ``palmsim describe`` maps to say whether ``run`` would refuse the mapping:
#: a chip is elaborated whole (80,000 GPUs: about 3 s on the 2-core machine).
DESCRIBE_PLAN_MAX_TILES = 10_000


def _cmd_describe(args: argparse.Namespace) -> int:
    from palmsim.api import plan_experiment
    from palmsim.config.describe import described_keys, format_described
    from palmsim.errors import MappingError

    experiment = _load(args)
    print(format_described(described_keys(experiment)))
    if experiment.hardware.num_tiles > DESCRIBE_PLAN_MAX_TILES:
        return 0  # describe stays quick: mapping a larger chip elaborates it whole (seconds)
    try:  # the keys print either way; a mapping `run` would refuse is said, not hidden
        plan_experiment(experiment)
    except MappingError as error:
        first = str(error).splitlines()[0]
        print(f"palmsim: note: `palmsim run` would refuse this mapping: {first}", file=sys.stderr)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from palmsim.explore.sweep import sweep

    bar = _ProgressBar("sweep", "point", quiet=args.quiet)
    try:
        results = sweep(
            args.spec,
            args.out,
            jobs=args.jobs,
            executor=args.executor,
            scheduler=args.scheduler,
            plots=args.plots,
            progress=bar,
            overrides=args.overrides,
        )
    finally:
        bar.close()
    print(f"wrote {results}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with palmsim's one-line errors: a bad flag or flag value prints
    ``palmsim: ConfigError: command line: ...`` (exit 2), not the usage block; its
    subcommands' parsers are of this class too (argparse builds them as their parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"palmsim: ConfigError: command line: {message} (see {self.prog} --help)\n")


def _comma_list(text: str, convert: Callable[[str], Any], expected: str) -> tuple[Any, ...]:
    """``text`` split at commas, each part converted; an argparse error saying ``expected``."""
    try:
        return tuple(convert(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected {expected}") from None


def _int_list(text: str) -> tuple[int, ...]:
    return _comma_list(text, int, "ints separated by commas, e.g. 4,8")


def _float_list(text: str) -> tuple[float, ...]:
    return _comma_list(text, float, "numbers separated by commas, e.g. 1,2,4")


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(","))


def _layout_list(text: str) -> tuple[tuple[int, ...], ...]:
    """``8x4,4x8``: 2-D tensor-parallel layouts ``[a, b]``."""

    def layout(part: str) -> tuple[int, ...]:
        a, b = part.lower().split("x")  # ValueError unless one x
        return int(a), int(b)

    return _comma_list(text, layout, "layouts AxB separated by commas, e.g. 8x4,4x8")


#: ``palmsim search``'s flags that narrow the space: (flag, dest, parser).
_SEARCH_SPACE_FLAGS = (
    ("--pp", "pp", _int_list),
    ("--tp", "tp", _int_list),
    ("--tp-2d", "tp_2d", _layout_list),
    ("--dp", "dp", _int_list),
    ("--micro-batch", "micro_batch_size", _int_list),
    ("--schedule", "schedule", _str_list),
    ("--recompute", "recompute", _str_list),
    ("--placement", "placement", _str_list),
    ("--replicas", "replicas", _int_list),
    ("--max-num-seqs", "max_num_seqs", _int_list),
    ("--max-num-batched-tokens", "max_num_batched_tokens", _int_list),
)
#: Help of a search space flag; the others restrict to their values.
_SEARCH_FLAG_HELP = {
    "--tp-2d": "--objective goodput: also serve each tp = a*b in these 2-D layouts (AxB,..., "
    "e.g. 8x4,4x8; default: the serving file's serving.tp_2d)"
}
#: Dests of the search flags only the goodput search reads, and only the mapping search.
_GOODPUT_ONLY = ("serving", "tp_2d", "replicas", "max_num_seqs", "max_num_batched_tokens")
_MAPPING_ONLY = ("dp", "micro_batch_size", "schedule", "recompute", "placement", "jobs")


def _check_search_flags(args: argparse.Namespace) -> None:
    """Raise :class:`ConfigError` for a search flag with a value no search takes, or one
    the chosen objective would ignore (the goodput search's flags in a mapping search, and
    the other way round), or an ``--out`` that is, or is inside, a file."""
    from palmsim.errors import ConfigError
    from palmsim.explore.search import check_search_options

    check_search_options(top=args.top, jobs=args.jobs, max_simulations=args.max_simulations)
    goodput = args.objective == "goodput"
    flags = {dest: flag for flag, dest, _ in _SEARCH_SPACE_FLAGS}
    for dest in _MAPPING_ONLY if goodput else _GOODPUT_ONLY:
        value = getattr(args, dest)
        if value is None:
            continue
        flag = flags.get(dest, f"--{dest}")
        where = "a mapping search, not to --objective goodput" if goodput else "--objective goodput"
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        raise ConfigError.single(
            "command line", flag, shown, f"no {flag}: it applies only to {where}"
        )
    _check_out_folder("--out", Path(args.out))  # now: the search writes only after mapping


def _search_progress(quiet: bool) -> Callable[[str], None]:
    """A search's progress lines on stderr, or nothing with ``--quiet``."""

    def progress(line: str) -> None:
        if not quiet:
            print(f"palmsim search: {line}", file=sys.stderr)

    return progress


def _search_goodput(args: argparse.Namespace) -> int:
    """``palmsim search --objective goodput``: serving configurations ranked by goodput."""
    from palmsim.explore.serving_search import (
        GOODPUT_COLUMNS,
        GoodputSpace,
        goodput_rows,
        search_goodput,
    )
    from palmsim.report.export import write_csv

    space = GoodputSpace(
        tp=args.tp,
        tp_2d=args.tp_2d,
        pp=args.pp,
        replicas=args.replicas,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
    )

    found = search_goodput(
        args.hw,
        args.workload,
        args.serving,
        overrides=args.overrides,
        space=space,
        max_simulations=args.max_simulations or None,
        progress=_search_progress(args.quiet),
    )
    out = Path(args.out)
    write_csv(out / "results.csv", GOODPUT_COLUMNS, goodput_rows(found))
    simulated = [c for c in found if c.status == "simulated"]
    infeasible = sum(c.status == "infeasible" for c in found)
    print(
        f"{len(found)} serving configurations: {infeasible} infeasible, {len(simulated)} "
        f"simulated, {len(found) - infeasible - len(simulated)} unexplored (objective: goodput)"
    )
    print(
        f"{'rank':>4}  {'configuration':<50} {'goodput/s':>10} {'SLO met':>8} "
        f"{'TTFT p90':>10} {'TPOT p90':>10}"
    )
    for rank, c in enumerate(simulated[: args.top], 1):
        s = c.summary
        print(
            f"{rank:>4}  {c.name:<50} {s['goodput_requests_per_s']:>10.4g} "
            f"{100 * s['slo_attainment']:>7.1f}% {s['ttft_p90_s'] * 1e3:>8.4g}ms "
            f"{s['tpot_p90_s'] * 1e3:>8.4g}ms"
        )
    print(f"wrote {out / 'results.csv'}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from palmsim.api import load_experiment
    from palmsim.explore.search import (
        RESULT_COLUMNS,
        SearchSpace,
        infeasible_reasons,
        pareto_front,
        result_rows,
        search,
    )
    from palmsim.report import plots
    from palmsim.report.export import write_csv

    _check_search_flags(args)
    if args.objective == "goodput":
        return _search_goodput(args)
    experiment = load_experiment(args.hw, args.workload, overrides=args.overrides)
    space = SearchSpace(
        pp=args.pp,
        tp=args.tp,
        dp=args.dp,
        micro_batch_size=args.micro_batch_size,
        schedule=args.schedule,
        recompute=args.recompute,
        placement=args.placement,
    )

    result = search(
        experiment,
        objective=args.objective,
        top=args.top,
        space=space,
        jobs=args.jobs,
        max_simulations=args.max_simulations or None,
        progress=_search_progress(args.quiet),
        out_dir=args.out,
    )
    out = Path(args.out)
    write_csv(out / "results.csv", RESULT_COLUMNS, result_rows(result.candidates))
    simulated = [c for c in result.candidates if c.status == "simulated"]
    points = [(c.memory_per_tile_bytes, c.summary["iteration_time_s"]) for c in simulated]
    fields = ("pp", "tp", "dp", "micro_batch_size", "schedule", "recompute", "placement")
    labels = _pareto_labels([{k: str(getattr(c.mapping, k)) for k in fields} for c in simulated])
    if points:
        plots.pareto(points, pareto_front(points), out / "pareto.png", labels=labels)
    # throughput against energy per token: the front minimises energy and maximises throughput
    energy_points = [
        (c.summary["energy"]["energy_per_token_j"], c.summary["throughput_tokens_per_s"])
        for c in simulated
        if "energy" in c.summary
    ]
    if energy_points and len(energy_points) == len(simulated):
        front = pareto_front([(e, -t) for e, t in energy_points])
        plots.energy_pareto(energy_points, front, out / "pareto_energy.png", labels=labels)
    print(
        f"{len(result.candidates)} mappings enumerated: {result.count('infeasible')} infeasible, "
        f"{result.count('pruned')} pruned by the lower bound, {result.count('simulated')} "
        f"simulated, {result.count('unexplored')} unexplored (objective: {result.objective})"
    )
    if not result.proven:
        print(
            f"stopped after --max-simulations {args.max_simulations}: these are the best of the "
            "mappings with the lowest bounds; a better one may remain (use --max-simulations 0 "
            "for the exact top K)"
        )
    if result.candidates and result.count("infeasible") == len(result.candidates):
        print("no mapping is feasible; the commonest reasons (results.csv has each one's):")
        for count, reason in infeasible_reasons(result.candidates):
            print(f"  {count} like: {reason}")
    header = f"{'rank':>4}  {'mapping':<52} {'iteration':>11} {'samples/s':>10} {'MFU':>6}"
    has_energy = all("energy" in c.summary for c in result.best)
    has_cost = all("cost" in c.summary for c in result.best)
    extra = (f" {'J/token':>9}" if has_energy else "") + (f" {'$/Mtoken':>9}" if has_cost else "")
    if result.best:
        print(f"{header} {'mem/tile':>9}{extra}")
    for rank, c in enumerate(result.best, 1):
        m, summ = c.mapping, c.summary
        name = (
            f"pp={m.pp} tp={m.tp} dp={m.dp} mbs={m.micro_batch_size} {m.schedule} "
            f"recompute={m.recompute} {m.placement}"
        )
        print(
            f"{rank:>4}  {name:<52} {summ['iteration_time_s']:>10.4g}s "
            f"{summ['throughput_samples_per_s']:>10.4g} {100 * summ['mfu']:>5.1f}% "
            f"{c.memory_per_tile_bytes / 2**30:>6.2f}GiB"
            + (f" {summ['energy']['energy_per_token_j']:>9.4g}" if has_energy else "")
            + (f" {summ['cost']['cost_per_token_usd'] * 1e6:>9.4g}" if has_cost else "")
        )
    wrote = [out / "results.csv"] + ([out / "pareto.png"] if points else [])
    if energy_points and len(energy_points) == len(simulated):
        wrote.append(out / "pareto_energy.png")
    print("wrote " + ", ".join(str(p) for p in wrote))
    return 0


#: Exit code of ``palmsim validate`` when a figure misses by more than ``--max-error``.
EXIT_VALIDATION_FAILED = 6


def _check_out_folder(flag: str, out: Path, shown: str | None = None) -> None:
    """ConfigError naming ``flag`` unless ``out`` is, or can be made, a folder palmsim can
    write: its nearest existing ancestor is a folder with write permission (checked before
    a simulation, whose results would otherwise be lost when they are written)."""
    from palmsim.errors import ConfigError

    value = str(out) if shown is None else shown  # the flag's value, as the user gave it
    blocker = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if blocker is None or not blocker.is_dir():
        raise ConfigError.single("command line", flag, value, f"a folder ({blocker} is a file)")
    if not os.access(blocker, os.W_OK | os.X_OK):
        raise ConfigError.single(
            "command line", flag, value, f"a folder palmsim can write ({blocker} is not)"
        )


def _check_writable(flag: str, path: str) -> None:
    """ConfigError naming ``flag`` unless ``path`` is no folder and its folder is, or can
    be made, one palmsim can write (:func:`_check_out_folder`), before the work."""
    from palmsim.errors import ConfigError

    if Path(path).is_dir():
        raise ConfigError.single("command line", flag, path, "a file, not a folder")
    _check_out_folder(flag, Path(path).absolute().parent, shown=path)


def _cmd_validate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from palmsim.config.overrides import split_overrides
    from palmsim.errors import ConfigError
    from palmsim.report.export import read_json, write_json
    from palmsim.validate import ValidationReport, format_report, report_from_dict, validate

    # Every case takes the same overrides: a malformed one is the command's error, not each case's
    split_overrides(args.overrides or ())
    for flag, value, expected in (
        ("--max-error", args.max_error, "a percentage >= 0"),
        ("--case-timeout", args.case_timeout, "seconds above zero"),
    ):
        least_ok = value is None or (math.isfinite(value) and value >= 0)
        if not least_ok or (flag == "--case-timeout" and value == 0):
            raise ConfigError.single("command line", flag, value, expected)
    if args.json:
        _check_writable("--json", args.json)
    previous = None
    if args.resume:
        if not args.json:
            raise ConfigError.single("command line", "--resume", True, "--json FILE to resume")
        if Path(args.json).exists():
            try:
                data = read_json(args.json)
            except (OSError, ValueError) as error:
                raise ConfigError.single(args.json, "", "<unreadable>", f"JSON ({error})") from None
            previous = report_from_dict(data, args.json)
    bars: list[Any] = []  # the bar starts with the first case: a file that does not load
    # is its one-line error, with no bar drawn before it

    def progress(case: str) -> None:
        if not bars:
            bars.append(
                tqdm(desc="validate", unit="case", disable=args.quiet, file=sys.stderr, leave=False)
            )
        bars[0].set_postfix_str(case, refresh=False)  # the case in hand; tqdm shows the time
        bars[0].update(1)

    def save(report: ValidationReport) -> None:
        if args.json:  # after every case, so a kill leaves what finished
            write_json(args.json, report.as_dict())

    try:
        report = validate(
            args.file,
            only=args.case,
            progress=progress,
            case_timeout_s=args.case_timeout,
            overrides=args.overrides,
            on_case=save,
            previous=previous,
            jobs=args.jobs,
        )
    finally:
        for bar in bars:
            bar.close()
    save(report)
    setting = report.refused_setting
    if setting is not None:  # a mistyped --set: the command's error, said once
        first = report.skipped[0]
        raise ConfigError.single(
            "command line",
            "--set",
            setting,
            f"a setting the cases take: all {len(report.skipped)} of {args.file} refused it "
            f"({first.case}: {first.reason.removeprefix('ConfigError: ')})",
        )
    print(format_report(report, by_group=args.by_group))
    if args.json:
        print(f"wrote {args.json}")
    if report.interrupted:
        print("palmsim: interrupted", file=sys.stderr)
        return 130
    if args.max_error is not None:
        worst = [c for c in report.comparisons if abs(c.relative_error) * 100 > args.max_error]
        if worst:
            names = ", ".join(
                f"{c.case} {c.metric} ({100 * c.relative_error:+.1f}%)" for c in worst
            )
            print(
                f"palmsim: {len(worst)} figures miss by more than {args.max_error:g}%: {names}",
                file=sys.stderr,
            )
            return EXIT_VALIDATION_FAILED
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from palmsim.api import load_experiment
    from palmsim.calibrate import calibrate, format_calibration
    from palmsim.errors import ConfigError
    from palmsim.validate import DEFAULT_MEASUREMENTS, shipped

    if args.tiles:  # a tiled chip, from the tile-validation case format
        from palmsim.config.loader import read_config_file
        from palmsim.tile_cases import calibrate_tiles, format_tile_calibration

        source = args.file or shipped("validation/tiles_measurements.yaml")
        cases = read_config_file(source).get("cases") or []
        if not isinstance(cases, list):
            raise ConfigError.single(source, "cases", cases, "a list of measurement cases")
        from palmsim.api import resolve_config_path

        # --hw as run takes it: a file, or a shipped config's bare name (wormhole-n150)
        fits, unused = calibrate_tiles(cases, resolve_config_path(args.hw, "hardware"))
        if unused or fits:
            print(format_tile_calibration(fits, unused))
        if not fits:  # the case ids of this hardware, each "not used" above with why
            raise ConfigError.single(
                source,
                f"cases for {args.hw}",
                [case for case, _ in unused],
                "a microbenchmark palmsim fits (a case whose hardware.hw_spec_ref maps to "
                "that config)",
            )
        return 0
    if not (args.gemm or args.memory or args.allreduce):
        raise ConfigError.single(
            "command line", "--gemm, --memory or --allreduce", ConfigError.MISSING, "a case to fit"
        )
    hardware = load_experiment(args.hw).hardware
    result = calibrate(
        args.file or shipped(DEFAULT_MEASUREMENTS),
        hardware,
        dtype=args.dtype,
        gemm_case=args.gemm,
        compute_units=args.compute_units,
        memory_cases=args.memory,
        allreduce_case=args.allreduce,
        allreduce_ranks=args.ranks,
        allreduce_min_bytes=args.min_bytes,
        gemm_max_efficiency=args.gemm_max_efficiency,
    )
    print(format_calibration(result))
    return 0


class _VersionAction(argparse.Action):
    """``--version``: the version, and whether the flow network runs compiled or as Python
    (``palmsim.engine.flows``; imported only here, so ``--help`` stays argparse alone)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from palmsim.engine.flows import IMPLEMENTATION

        print(f"palmsim {__version__} (flow network: {IMPLEMENTATION})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``palmsim`` argument parser."""
    parser = _Parser(
        prog="palmsim",
        description="Simulate training and serving of large models on tiled accelerators "
        "(wafer-scale chips, Tenstorrent, Cerebras) and GPU clusters.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        help="show the version and which build of the flow network runs, and exit",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser(
        "run",
        help="simulate one training iteration (or, --mode inference, one batch's prefill and "
        "decode) and write its results",
    )
    _add_inputs(run, ("training", "inference", "serving"))
    run.add_argument("--serving", help="--mode serving: the serving YAML (as palmsim serve's)")
    run.add_argument(
        "--out",
        help="write the results into this folder "
        "(default: RESULTS/<run id>, a hash of the resolved config)",
    )
    run.add_argument("--results", default="results", help="parent of the default run folder")
    run.add_argument("--no-plots", action="store_true", help="skip the figures in plots/")
    run.add_argument("-q", "--quiet", action="store_true", help="no summary table")
    run.add_argument(
        "--trace",
        nargs="?",
        const="full",
        choices=("full", "compact"),
        help="also write the Chrome trace trace.json.gz (Perfetto opens it): every tile, link "
        "and DRAM channel, or =compact: one tile per stage",
    )
    run.add_argument(
        "--csv", action="store_true", help="also write the records as records.csv (an export)"
    )
    run.add_argument(
        "--op-table",
        action="store_true",
        help="also write op_table.csv: FLOP, bytes, intensity, ridge point and bound per op",
    )
    run.set_defaults(func=_cmd_run)

    sw = sub.add_parser(
        "sweep", help="run a grid of configurations (resumable) and tabulate their figures"
    )
    sw.add_argument("spec", help="sweep spec YAML (base files, set, grid, zip)")
    sw.add_argument("--out", required=True, help="folder for the point runs and results.csv")
    sw.add_argument(
        "--jobs", type=int, help="local worker processes (default and most: one per core)"
    )
    sw.add_argument(
        "--executor", default="local", choices=("local", "dask"), help="where points run"
    )
    sw.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    sw.add_argument("--plots", action="store_true", help="draw each point's figures too")
    sw.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of every point, e.g. --set run.max_events=1000000",
    )
    sw.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    sw.set_defaults(func=_cmd_sweep)

    se = sub.add_parser(
        "search", help="find the best mappings of a workload onto a chip (branch and bound)"
    )
    se.add_argument("--hw", help="hardware YAML (default: hw_configs/tx8-wafer.yaml)")
    se.add_argument("--workload", help="workload YAML (default: workloads/t-18b.yaml)")
    se.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key",
    )
    se.add_argument(
        "--objective",
        default="throughput",
        choices=("throughput", "mfu", "memory", "energy", "cost", "goodput"),
        help="what to rank by: iteration time (throughput, mfu), peak memory per tile, energy "
        "per token or dollars per token (the last two need energy:/cost: in the hardware file); "
        "goodput: serving configurations (tp and its 2-D layouts, pp, replicas, scheduler "
        "limits) by the request "
        "rate meeting the serving file's SLO (defaults: dgx-h100, llama3-8b, "
        "serving/llama3-8b-h100.yaml)",
    )
    se.add_argument("--serving", help="--objective goodput: the serving YAML")
    se.add_argument("--top", type=int, default=5, help="how many best mappings to report")
    se.add_argument(
        "--out",
        default="results/search",
        help="folder for results.csv, pareto.png and the finished points (rerun into the same "
        "folder to resume)",
    )
    se.add_argument(
        "--jobs", type=int, help="simulations in parallel (default and most: one per core)"
    )
    se.add_argument(
        "--max-simulations",
        type=int,
        default=8,
        help="stop after this many simulations (default 8; 0: as many as proving the top K "
        "exact needs)",
    )
    for flag, dest, kind in _SEARCH_SPACE_FLAGS:
        se.add_argument(
            flag,
            dest=dest,
            type=kind,
            help=_SEARCH_FLAG_HELP.get(flag, "restrict to these values (a,b,...)"),
        )
    se.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    se.set_defaults(func=_cmd_search)

    validate = sub.add_parser(
        "validate", help="compare predictions with published measurements of real runs"
    )
    validate.add_argument(
        "file",
        nargs="?",
        help="measurements YAML (default: validation/measurements.yaml, the shipped copy of "
        "the calibration set)",
    )
    validate.add_argument(
        "--case", action="append", default=[], metavar="ID", help="run only this case (repeatable)"
    )
    validate.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    validate.add_argument(
        "--max-error",
        type=float,
        metavar="PCT",
        help=f"exit {EXIT_VALIDATION_FAILED} if any figure misses by more than PCT percent",
    )
    validate.add_argument(
        "--case-timeout",
        type=float,
        metavar="SECONDS",
        help="list a case that runs longer than this as not run, and go on",
    )
    validate.add_argument(
        "--by-group",
        action="store_true",
        help="also print each case group's mean absolute error, the largest summed miss first",
    )
    validate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of every case, e.g. --set run.max_events=1000000 (a "
        "tiled-system case sets its own model and set-up and takes hw.* and run.*, a serving "
        "case hw.*; either names any other key as why it did not run)",
    )
    validate.add_argument(
        "--resume",
        action="store_true",
        help="take over the cases already in --json FILE (from an interrupted run)",
    )
    validate.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="cases run at once, each in a worker process (default 1, at most one per core); "
        "the table is the same, and each case keeps its own run budgets, so N cases may take N "
        "times the memory",
    )
    validate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    validate.set_defaults(func=_cmd_validate)

    cal = sub.add_parser(
        "calibrate",
        help="fit a GPU config's GEMM, memory-bound-kernel and all-reduce parameters, or "
        "(--tiles) a tiled chip's GEMM, DRAM and CCL parameters, to measurements",
    )
    cal.add_argument(
        "file", nargs="?", help="measurements YAML (default: validation/measurements.yaml)"
    )
    cal.add_argument("--hw", required=True, help="the hardware config being calibrated")
    cal.add_argument("--dtype", default="fp16", help="element type of the measurements")
    cal.add_argument("--gemm", metavar="CASE", help="GEMM case (columns M, N, K, latency_ms)")
    cal.add_argument("--compute-units", type=int, help="SMs (default: tile.gemm.compute_units)")
    cal.add_argument(
        "--gemm-max-efficiency",
        type=float,
        metavar="RATIO",
        help="fix the GEMMs' maximum efficiency (e.g. a sustained matmul rate / peak) and fit "
        "only the tile shape and launch latency",
    )
    cal.add_argument(
        "--memory",
        metavar="[KIND=]CASE",
        action="append",
        default=[],
        help="memory-bound kernel case (columns G_elements_per_s and num_elements or M, N); "
        "repeatable; cases without KIND are fitted together into the default bandwidth, "
        "KIND=CASE (e.g. softmax=CASE) into that kind's own entry",
    )
    cal.add_argument("--allreduce", metavar="CASE", help="all-reduce case (size_bytes, time_us)")
    cal.add_argument("--ranks", type=int, help="GPUs in the all-reduce (default: num_gpus)")
    cal.add_argument(
        "--min-bytes", type=float, default=0.0, help="fit only all-reduces this large [B]"
    )
    cal.add_argument(
        "--tiles",
        action="store_true",
        help="fit a tiled chip (per-format GEMM efficiency, op latency, host dispatch, fused "
        "attention efficiency, DRAM read bandwidth, chip-to-chip links) to the "
        "microbenchmarks of FILE (default: "
        "validation/tiles_measurements.yaml) whose hw_spec_ref maps to --hw",
    )
    cal.set_defaults(func=_cmd_calibrate)

    sv = sub.add_parser(
        "serve",
        help="simulate serving under request traffic: continuous batching, paged KV cache",
    )
    sv.add_argument("--hw", help="hardware YAML (default: hw_configs/dgx-h100.yaml, one GPU used)")
    sv.add_argument(
        "--workload",
        dest="serving_workload",
        help="workload YAML or HF config.json (default: workloads/llama3-8b.yaml)",
    )
    sv.add_argument("--serving", help="serving YAML (default: serving/llama3-8b-h100.yaml)")
    sv.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key, e.g. serving.traffic.rate_per_s=4 or run.seed=1",
    )
    sv.add_argument("--out", help="results folder (default: results/serve-<serving file>)")
    sv.add_argument("--no-plots", action="store_true", help="skip the figures and report.html")
    sv.add_argument(
        "--rates",
        type=_float_list,
        help="a latency-against-load sweep over these arrival rates [requests/s]; with --out "
        "writes latency_load.csv/png and one folder per rate",
    )
    sv.add_argument("--label", help="--rates: the curve's name in the figure")
    sv.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar or summary table, as palmsim run -q (--rates still prints its "
        "curve, a line a rate)",
    )
    sv.set_defaults(func=_cmd_serve)

    plot = sub.add_parser(
        "plot", help="redraw a figure of a finished run from its files (no simulation)"
    )
    plot.add_argument(
        "kind",
        metavar="KIND",
        help="gantt, placement, noc, utilization, memory, energy; pareto (of a sweep or search "
        "folder)",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `palmsim run`")
    plot.add_argument("--out", help="the PNG to write (default: RUN_DIR/plots/KIND.png)")
    plot.add_argument("--per-tile", action="store_true", help="gantt: one row per tile")
    plot.add_argument("--stage", type=int, help="gantt --per-tile: only this stage's tiles")
    plot.add_argument("--tiles", type=_tile_range, help="gantt: tiles A-B, one row each")
    plot.add_argument(
        "--by", choices=("utilization", "bytes"), help="noc: colour by (default: utilization)"
    )
    plot.add_argument(
        "--category",
        help="noc: only the flows of this category, e.g. ep_alltoall, tp_allreduce, p2p, dram",
    )
    plot.set_defaults(func=_cmd_plot)

    report = sub.add_parser(
        "report", help="write RUN_DIR/report.html: summary, figures, config, bottlenecks"
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `palmsim run`")
    report.set_defaults(func=_cmd_report)

    describe = sub.add_parser("describe", help="print the resolved configuration with help")
    _add_inputs(describe)
    describe.set_defaults(func=_cmd_describe)
    for command in sub.choices.values():  # a flag a command does not take: its own --help
        command.set_defaults(parser=command)
    return parser


#: Exit code of a command whose reader closed the pipe: what a shell reports for a Unix tool
#: ended by SIGPIPE (128 + 13), e.g. ``head`` after its lines.
EXIT_BROKEN_PIPE = 141
#: Exit code of a file the operating system would not let palmsim read or write (a full
#: disk, a folder without permission) that no input check caught first.
EXIT_OS_ERROR = 7


def _stdout_closed() -> int:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again (the
    recipe of the Python ``signal`` docs, "Note on SIGPIPE"); the exit code of SIGPIPE."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no real stdout in tests
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``), raised like Ctrl-C so a long command keeps what finished."""


def _terminate_like_ctrl_c(main_pid: int) -> Any:
    """Make SIGTERM in this process raise :class:`_Terminated`; a worker process forked from
    it (sweep, search) keeps the default (it dies, and its parent cleans up). Returns the
    previous handler, which :func:`main` puts back (None: signals were left alone)."""

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise _Terminated

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``palmsim`` console script; returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    import logging

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="palmsim: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 2
    previous = _terminate_like_ctrl_c(os.getpid())
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; every error a one-line message and its exit code."""
    from palmsim.errors import PalmsimError

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except PalmsimError as error:
        kind = type(error).__name__
        print(f"palmsim: {kind}: {error}", file=sys.stderr)
        return error.exit_code
    except _Terminated:
        print("palmsim: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("palmsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `palmsim ... | head`: the reader left; stop quietly
        return _stdout_closed()
    except OSError as error:  # a file palmsim could not read or write (disk full, permissions)
        where = error.filename or "a file"
        print(f"palmsim: cannot read or write {where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_OS_ERROR
    except Exception as bug:  # a bug in palmsim: one line; -v prints the traceback
        if args.verbose:
            traceback.print_exc()
        text = "; ".join(line.strip() for line in str(bug).splitlines() if line.strip())
        text = text if len(text) <= 500 else text[:497] + "..."
        print(
            f"palmsim: internal error, please report it: {type(bug).__name__}: {text}"
            + ("" if args.verbose else " (run with -v for the traceback)"),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
