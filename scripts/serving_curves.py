"""Draw several latency-against-load curves of `palmsim serve --rates ... --out DIR` in one
figure: python scripts/serving_curves.py DIR1/latency_load.csv DIR2/latency_load.csv --out DIR
(writes DIR/latency_load.csv and DIR/latency_load.png)."""

from __future__ import annotations

import argparse
import sys

from palmsim.report.export import read_csv_rows, write_latency_load


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="+", help="latency_load.csv files")
    ap.add_argument("--out", required=True, help="folder for the combined table and figure")
    args = ap.parse_args(argv)
    curves: dict[str, list[tuple[float, float, float]]] = {}
    for table in args.tables:
        for row in read_csv_rows(table):
            point = (float(row["rate_per_s"]), float(row["ttft_p90_s"]), float(row["tpot_p90_s"]))
            curves.setdefault(row["curve"], []).append(point)
    for points in curves.values():
        points.sort()
    print(write_latency_load(args.out, curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
