"""Command line: ``palmsim run``, ``plot``, ``report``, ``sweep``, ``search``, ``validate``,
``calibrate`` and ``describe``.

Each command parses its arguments, calls the library and maps errors to exit codes:
0 success, 2 ConfigError, 3 MappingError, 4 SimulationError, 5 RunDirError (``plot``, ``report``),
6 a ``validate --max-error`` exceeded.
Errors print as one message (all problems of a config file at once), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from palmsim import __version__
from palmsim.errors import PalmsimError

log = logging.getLogger("palmsim")

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
    ("--ep", "ep", int, "expert-parallel degree (MoE models): divides dp*cp and the experts"),
    ("--cp", "cp", int, "context-parallel degree: the sequence split over cp tiles"),
)


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hw", help="hardware YAML (default: hw_configs/tx8-wafer.yaml)")
    parser.add_argument(
        "--workload", help="workload YAML or HF config.json (default: workloads/t-18b.yaml)"
    )
    parser.add_argument("--mapping", help="mapping YAML (overrides the workload's mapping:)")
    parser.add_argument(
        "--mode",
        choices=("training", "inference"),
        help="training, or inference (serving: the workload's inference: section and mapping)",
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
        help="override any config key, e.g. --set hw.noc.inter_die_bandwidth="
        "'512 GB/s' (prefixes: hw, workload, model, training, inference, mapping, run)",
    )


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
    from palmsim.report.export import run_id
    from palmsim.report.metrics import format_summary_table

    experiment = _load(args)
    config = resolved_config(experiment)
    out = Path(args.out) if args.out else Path(args.results) / run_id(config, __version__)
    summary = run_experiment(experiment, out, make_plots=not args.no_plots, op_table=args.op_table)
    if not args.quiet:
        print(format_summary_table(summary))
        print(f"wrote {out}/")
    return 0


#: Unit suffix of a spec field name -> the dimension its value is formatted in.
_SUFFIX_DIMENSIONS = (
    ("_bytes_per_s", "bandwidth"),
    ("_flop_per_s", "flop_rate"),
    ("_bytes", "bytes"),
    ("_flop", "flop"),
    ("_hz", "frequency"),
    ("_s", "time"),
)


def _describe_value(name: str, value: Any) -> str:
    """A spec value as a person reads it: quantities with units (``3 MiB``), else its repr."""
    from palmsim.config.loader import format_exact

    dimension = next((d for suffix, d in _SUFFIX_DIMENSIONS if name.endswith(suffix)), None)
    if dimension is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float)):
        return format_exact(float(value), dimension)
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        # (key, quantity) pairs, e.g. peak FLOP/s per dtype
        return ", ".join(f"{k}: {format_exact(float(v), dimension)}" for k, v in value)
    return repr(value)


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
    keys = ("pp", "tp", "dp", "micro_batch_size", "schedule", "recompute")
    labels = [" ".join(f"{k}={r[k]}" for k in keys if k in r) or r.get("point", "") for r in done]
    out = Path(args.out) if args.out else Path(args.run_dir) / "pareto.png"
    plots.pareto(points, pareto_front(points), out, labels=labels)
    print(f"wrote {out}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from palmsim.api import load_result
    from palmsim.errors import ConfigError
    from palmsim.report.export import write_plot
    from palmsim.report.plots import PLOT_KINDS

    if args.kind == "pareto":
        return _plot_pareto(args)
    if args.kind not in PLOT_KINDS:
        raise ConfigError.single(
            "command line", "KIND", args.kind, PLOT_KINDS.unknown_message(args.kind)
        )
    run = load_result(args.run_dir)
    if args.stage is not None and not 0 <= args.stage < run.plan.num_stages:
        raise ConfigError.single(
            "command line", "--stage", args.stage, f"0..{run.plan.num_stages - 1}"
        )
    out = Path(args.out) if args.out else Path(args.run_dir) / "plots" / f"{args.kind}.png"
    options = {
        "per_tile": args.per_tile or args.tiles is not None or args.stage is not None,
        "stage": args.stage,
        "tiles": args.tiles,
        "by": args.by,
        "category": args.category,
    }
    write_plot(run, args.kind, out, options)
    print(f"wrote {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from palmsim.api import load_result
    from palmsim.report.export import write_report

    out = write_report(load_result(args.run_dir), args.run_dir)
    print(f"wrote {out}")
    return 0


def _describe(spec: Any, indent: str = "") -> list[str]:
    """Lines describing a spec dataclass: each field's value (with units) and help text."""
    lines = []
    for f in fields(spec):
        value = getattr(spec, f.name)
        text = f.metadata.get("help", "")
        modes = f.metadata.get("modes", ())
        if modes and len(modes) == 1:  # an option of one mode only
            text += f" [{modes[0]} only]"
        if is_dataclass(value):
            lines.append(f"{indent}{f.name}:  # {text}")
            lines.extend(_describe(value, indent + "  "))
        else:
            lines.append(f"{indent}{f.name}: {_describe_value(f.name, value)}  # {text}")
    return lines


def _cmd_describe(args: argparse.Namespace) -> int:
    experiment = _load(args)
    for part in ("hardware", "workload", "mapping", "run"):
        print(f"{part}:")
        print("\n".join(_describe(getattr(experiment, part), "  ")))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from palmsim.explore.sweep import sweep

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)

    results = sweep(
        args.spec,
        args.out,
        jobs=args.jobs,
        executor=args.executor,
        scheduler=args.scheduler,
        plots=args.plots,
        progress=progress,
    )
    if not args.quiet:
        print(file=sys.stderr)
    print(f"wrote {results}")
    return 0


_SEARCH_COLUMNS = (
    "pp",
    "tp",
    "dp",
    "micro_batch_size",
    "schedule",
    "recompute",
    "placement",
    "status",
    "lower_bound_s",
    "memory_per_tile_bytes",
    "iteration_time_s",
    "throughput_samples_per_s",
    "mfu",
    "reason",
)


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(","))


def _cmd_search(args: argparse.Namespace) -> int:
    from palmsim.api import load_experiment
    from palmsim.explore.search import SearchSpace, pareto_front, search
    from palmsim.report import plots
    from palmsim.report.export import write_csv

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

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"palmsim search: {line}", file=sys.stderr)

    result = search(
        experiment,
        objective=args.objective,
        top=args.top,
        space=space,
        jobs=args.jobs,
        max_simulations=args.max_simulations or None,
        progress=progress,
    )
    rows = []
    for c in result.candidates:
        m = c.mapping
        figures = [
            c.summary.get(k, "") for k in ("iteration_time_s", "throughput_samples_per_s", "mfu")
        ]
        rows.append(
            [m.pp, m.tp, m.dp, m.micro_batch_size, m.schedule, m.recompute, m.placement, c.status]
            + ["" if v != v else v for v in (c.lower_bound_s, c.memory_per_tile_bytes)]
            + figures
            + [c.reason]
        )
    out = Path(args.out)
    write_csv(out / "results.csv", _SEARCH_COLUMNS, rows)
    simulated = [c for c in result.candidates if c.status == "simulated"]
    points = [(c.memory_per_tile_bytes, c.summary["iteration_time_s"]) for c in simulated]
    labels = [
        f"pp{c.mapping.pp} tp{c.mapping.tp} dp{c.mapping.dp} mbs{c.mapping.micro_batch_size} "
        f"{c.mapping.schedule} {c.mapping.recompute}"
        for c in simulated
    ]
    if points:
        plots.pareto(points, pareto_front(points), out / "pareto.png", labels=labels)
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
    header = f"{'rank':>4}  {'mapping':<52} {'iteration':>11} {'samples/s':>10} {'MFU':>6}"
    print(f"{header} {'mem/tile':>9}")
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
        )
    print(f"wrote {out / 'results.csv'}" + (f" and {out / 'pareto.png'}" if points else ""))
    return 0


#: Exit code of ``palmsim validate`` when a figure misses by more than ``--max-error``.
EXIT_VALIDATION_FAILED = 6


def _cmd_validate(args: argparse.Namespace) -> int:
    from palmsim.report.export import write_json
    from palmsim.validate import format_report, validate

    def progress(case: str) -> None:
        if not args.quiet:
            print(f"running {case} ...", file=sys.stderr)

    report = validate(args.file, only=args.case, progress=progress)
    print(format_report(report))
    if args.json:
        write_json(args.json, report.as_dict())
        print(f"wrote {args.json}")
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
    from palmsim.validate import DEFAULT_MEASUREMENTS, shipped

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
    text = format_calibration(result)
    print(text if text else "nothing to fit: name cases with --gemm, --memory or --allreduce")
    return 0 if text else 2


def build_parser() -> argparse.ArgumentParser:
    """The ``palmsim`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="palmsim",
        description="Simulate LLM training on wafer-scale chips and GPU clusters.",
    )
    parser.add_argument("--version", action="version", version=f"palmsim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="simulate one training iteration and write its results")
    _add_inputs(run)
    run.add_argument(
        "--out",
        help="write the results into this folder "
        "(default: RESULTS/<run id>, a hash of the resolved config)",
    )
    run.add_argument("--results", default="results", help="parent of the default run folder")
    run.add_argument("--no-plots", action="store_true", help="skip the figures in plots/")
    run.add_argument("-q", "--quiet", action="store_true", help="no summary table")
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
    sw.add_argument("--jobs", type=int, help="local worker processes (default: all cores)")
    sw.add_argument(
        "--executor", default="local", choices=("local", "dask"), help="where points run"
    )
    sw.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    sw.add_argument("--plots", action="store_true", help="draw each point's figures too")
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
    se.add_argument("--objective", default="throughput", choices=("throughput", "mfu", "memory"))
    se.add_argument("--top", type=int, default=5, help="how many best mappings to report")
    se.add_argument("--out", default="results/search", help="folder for results.csv, pareto.png")
    se.add_argument("--jobs", type=int, help="simulations in parallel (default: all cores)")
    se.add_argument(
        "--max-simulations",
        type=int,
        default=8,
        help="stop after this many simulations (default 8; 0: as many as proving the top K "
        "exact needs)",
    )
    for flag, dest, kind in (
        ("--pp", "pp", _int_list),
        ("--tp", "tp", _int_list),
        ("--dp", "dp", _int_list),
        ("--micro-batch", "micro_batch_size", _int_list),
        ("--schedule", "schedule", _str_list),
        ("--recompute", "recompute", _str_list),
        ("--placement", "placement", _str_list),
    ):
        se.add_argument(flag, dest=dest, type=kind, help="restrict to these values (a,b,...)")
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
    validate.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    validate.set_defaults(func=_cmd_validate)

    cal = sub.add_parser(
        "calibrate",
        help="fit a GPU config's GEMM, memory-bound-kernel and all-reduce parameters "
        "to measurements",
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
    cal.set_defaults(func=_cmd_calibrate)

    plot = sub.add_parser(
        "plot", help="redraw a figure of a finished run from its files (no simulation)"
    )
    plot.add_argument(
        "kind",
        metavar="KIND",
        help="gantt, placement, noc, utilization, memory; pareto (of a sweep or search folder)",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `palmsim run`")
    plot.add_argument("--out", help="the PNG to write (default: RUN_DIR/plots/KIND.png)")
    plot.add_argument("--per-tile", action="store_true", help="gantt: one row per tile")
    plot.add_argument("--stage", type=int, help="gantt --per-tile: only this stage's tiles")
    plot.add_argument("--tiles", type=_tile_range, help="gantt: tiles A-B, one row each")
    plot.add_argument(
        "--by", choices=("utilization", "bytes"), default="utilization", help="noc: colour by"
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``palmsim`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="palmsim: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except PalmsimError as error:
        kind = type(error).__name__
        print(f"palmsim: {kind}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("palmsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
