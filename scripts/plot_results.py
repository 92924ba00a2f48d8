#!/usr/bin/env python3
"""Plot one figure of a palmsim sweep's results.csv against its swept values.

    python scripts/plot_results.py results/sweep_pp/results.csv --y iteration_time_s

writes results/sweep_pp/iteration_time_s.png: one bar per point (labelled by its swept
values), infeasible and failed points marked as such. Any numeric column of results.csv can
be the figure (throughput_samples_per_s, mfu, memory_peak_bytes_per_tile_max, ...; a serving
sweep's ttft_p90_s, goodput_requests_per_s, ...).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from palmsim.explore.sweep import RESULT_COLUMNS, SERVING_RESULT_COLUMNS
from palmsim.report import plots

# results.csv: point, status, reason, swept keys..., figures (a run sweep's or a serving one's)
FIGURES = {*RESULT_COLUMNS, *SERVING_RESULT_COLUMNS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a sweep's results.csv")
    parser.add_argument("--y", default="iteration_time_s", help="the column to plot")
    parser.add_argument("--out", help="the PNG (default: beside results.csv, named after --y)")
    args = parser.parse_args()
    with open(args.results, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    swept = columns[3 : next(i for i, c in enumerate(columns) if c in FIGURES)]
    # each swept key by its last part (serving.traffic.rate_per_s: rate_per_s) where that
    # names it alone, so a bar's label fits under it
    tails = [k.rsplit(".", 1)[-1] for k in swept]
    short = {k: t if tails.count(t) == 1 else k for k, t in zip(swept, tails, strict=True)}
    labels = ["\n".join(f"{short[k]}={r[k]}" for k in swept) for r in rows]
    values = [float(r[args.y]) if r["status"] == "ok" else None for r in rows]
    notes = [r["status"] if r["status"] != "ok" else "" for r in rows]
    out = Path(args.out) if args.out else Path(args.results).with_name(f"{args.y}.png")
    plots.sweep_bars(
        labels, values, notes, out, ylabel=args.y, title=Path(args.results).parent.name
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
