"""Command line: ``palmsim run``, ``plot``, ``report`` and ``describe``.

Each command parses its arguments, calls the library and maps errors to exit codes:
0 success, 2 ConfigError, 3 MappingError, 4 SimulationError, 5 RunDirError (``plot``, ``report``).
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
)


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hw", help="hardware YAML (default: hw_configs/tx8-wafer.yaml)")
    parser.add_argument(
        "--workload", help="workload YAML or HF config.json (default: workloads/t-18b.yaml)"
    )
    parser.add_argument("--mapping", help="mapping YAML (overrides the workload's mapping:)")
    for flag, dest, kind, text in _MAPPING_FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, help=text)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set hw.noc.inter_die_bandwidth="
        "'512 GB/s' (prefixes: hw, workload, model, training, mapping, run)",
    )


def _load(args: argparse.Namespace) -> Any:
    from palmsim.api import load_experiment

    flags = {
        dest: getattr(args, dest)
        for _, dest, _, _ in _MAPPING_FLAGS
        if getattr(args, dest) is not None
    }
    return load_experiment(
        args.hw, args.workload, args.mapping, overrides=args.overrides, mapping_flags=flags
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from palmsim.api import resolved_config, simulate, summarize_result
    from palmsim.report.export import run_id, write_run
    from palmsim.report.metrics import format_summary_table

    experiment = _load(args)
    result = simulate(experiment)
    summary = summarize_result(result)
    config = resolved_config(experiment)
    out = Path(args.out) if args.out else Path(args.results) / run_id(config, __version__)
    write_run(
        out,
        summary=summary,
        resolved_config=config,
        trace=result.trace,
        chip=result.chip,
        plan=result.plan,
        make_plots=not args.no_plots,
    )
    if not args.quiet:
        print(format_summary_table(summary))
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


def _cmd_plot(args: argparse.Namespace) -> int:
    from palmsim.api import load_result
    from palmsim.errors import ConfigError
    from palmsim.report.export import write_plot
    from palmsim.report.plots import PLOT_KINDS

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
    """Lines describing a spec dataclass: each field's value and help text."""
    lines = []
    for f in fields(spec):
        value = getattr(spec, f.name)
        text = f.metadata.get("help", "")
        if is_dataclass(value):
            lines.append(f"{indent}{f.name}:  # {text}")
            lines.extend(_describe(value, indent + "  "))
        else:
            lines.append(f"{indent}{f.name}: {value!r}  # {text}")
    return lines


def _cmd_describe(args: argparse.Namespace) -> int:
    experiment = _load(args)
    for part in ("hardware", "workload", "mapping", "run"):
        print(f"{part}:")
        print("\n".join(_describe(getattr(experiment, part), "  ")))
    return 0


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
    run.set_defaults(func=_cmd_run)

    plot = sub.add_parser(
        "plot", help="redraw a figure of a finished run from its files (no simulation)"
    )
    plot.add_argument("kind", metavar="KIND", help="gantt, placement, noc, utilization, memory")
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `palmsim run`")
    plot.add_argument("--out", help="the PNG to write (default: RUN_DIR/plots/KIND.png)")
    plot.add_argument("--per-tile", action="store_true", help="gantt: one row per tile")
    plot.add_argument("--stage", type=int, help="gantt --per-tile: only this stage's tiles")
    plot.add_argument("--tiles", type=_tile_range, help="gantt: tiles A-B, one row each")
    plot.add_argument(
        "--by", choices=("utilization", "bytes"), default="utilization", help="noc: colour by"
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
