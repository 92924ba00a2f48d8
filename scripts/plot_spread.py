#!/usr/bin/env python3
"""Plot a column of a palmsim sweep's results.csv against a swept key, with its spread.

    python scripts/plot_spread.py results/sweep_defects/results.csv \
        --x hw.defects.dead_tile_fraction --y throughput_tokens_per_s

writes results/sweep_defects/throughput_tokens_per_s_spread.png: every point that ran, and per
value of --x the mean with the min-max band over the other swept keys (e.g. the seeds).
Points that did not run (infeasible, error) are counted in the title.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from palmsim.report import plots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a sweep's results.csv")
    parser.add_argument("--x", required=True, help="the swept key on the x axis")
    parser.add_argument("--y", default="throughput_tokens_per_s", help="the column to plot")
    parser.add_argument("--out", help="the PNG (default: beside results.csv)")
    args = parser.parse_args()
    with open(args.results, newline="") as handle:
        rows = list(csv.DictReader(handle))
    ok = [r for r in rows if r["status"] == "ok"]
    out = Path(args.out) if args.out else Path(args.results).with_name(f"{args.y}_spread.png")
    title = f"{Path(args.results).parent.name}: {len(ok)} of {len(rows)} points ran"
    plots.spread(
        [float(r[args.x]) for r in ok],
        [float(r[args.y]) for r in ok],
        out,
        xlabel=args.x,
        ylabel=args.y,
        title=title,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
