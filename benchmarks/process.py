"""Whole-process benchmarks of the commands a user waits for (not part of the test suite).

    python benchmarks/process.py                        # this checkout
    python benchmarks/process.py --code before=/tmp/old # also an older checkout, same run
    python benchmarks/process.py --repeat 3             # medians of 3

For each checkout (``--code NAME=DIR``; this one is ``after``) it measures, each command as a
fresh child process (``python -m palmsim.cli ...`` with ``PYTHONPATH=DIR``, run in DIR):

- ``palmsim --help``: wall time (median of 5);
- ``palmsim run`` on the default (W1): wall time, peak RSS of the child (``wait4``), and the
  size of the run folder it wrote;
- ``palmsim run --trace``: the size of a run folder with the full Chrome trace (new code only);
- loading the run folder back: ``read_run`` (summary, config and records, what every plot
  needs) and ``load_result`` (plus rebuilding chip and plan), in a child;
- ``palmsim plot gantt RUN`` as a whole process.

Bare SimPy (one process yielding 1,000,000 timeouts) is measured first, in a child, and each
wall time is also shown in bare-SimPy events (wall / bare ns per event), so figures from a
loaded machine compare with figures from a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import bare_simpy_ns_per_event  # noqa: E402

_CHILD_LOAD = r"""
import json, sys, time
t0 = time.perf_counter()
from palmsim.report.export import read_run
summary, config, trace = read_run(sys.argv[1])
t1 = time.perf_counter()
from palmsim.api import load_result
t2 = time.perf_counter()
load_result(sys.argv[1])
t3 = time.perf_counter()
print(json.dumps({"read_run_s": t1 - t0, "load_result_s": t3 - t2,
                  "records": len(trace.intervals) + len(trace.flows) + len(trace.memory)}))
"""


def timed(argv: list[str], cwd: Path, *, stdout: int | None = subprocess.DEVNULL) -> dict:
    """Run ``argv``; wall time [s], peak RSS [bytes] and exit code of that child alone."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    out = proc.stdout.read().decode() if proc.stdout else ""
    return {
        "wall_s": wall,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "rc": proc.returncode,
        "stderr": err.strip().splitlines()[-1:] or [""],
        "stdout": out,
    }


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(name: str, code: Path, repeat: int, scratch: Path, trace_too: bool) -> dict:
    """Every figure of one checkout."""
    py = [sys.executable, "-m", "palmsim.cli"]
    out: dict = {"code": name}
    helps = [timed([*py, "--help"], code)["wall_s"] for _ in range(5)]
    out["help_s"] = statistics.median(helps)
    runs = []
    folder = scratch / f"{name}-w1"
    for _ in range(repeat):
        shutil.rmtree(folder, ignore_errors=True)
        res = timed([*py, "run", "--out", str(folder), "-q"], code)
        if res["rc"] != 0:
            return {**out, "status": f"run failed: {res['stderr'][0]}"}
        runs.append(res)
    out["run_s"] = statistics.median(r["wall_s"] for r in runs)
    out["run_peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
    out["run_folder_bytes"] = folder_bytes(folder)
    out["run_files"] = sorted(
        f"{p.relative_to(folder)} {p.stat().st_size}" for p in folder.rglob("*") if p.is_file()
    )
    if trace_too:
        traced = scratch / f"{name}-w1-trace"
        res = timed([*py, "run", "--out", str(traced), "-q", "--no-plots", "--trace"], code)
        out["trace_run_s"] = res["wall_s"]
        out["trace_folder_bytes"] = folder_bytes(traced) if res["rc"] == 0 else None
    load = timed([sys.executable, "-c", _CHILD_LOAD, str(folder)], code, stdout=subprocess.PIPE)
    try:
        out.update(json.loads(load["stdout"].strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError):
        out["load_status"] = load["stderr"][0]
    plot = timed([*py, "plot", "gantt", str(folder), "--out", str(scratch / "g.png")], code)
    out["plot_s"] = plot["wall_s"]
    out["plot_peak_rss_bytes"] = plot["peak_rss_bytes"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also measure the checkout in DIR (e.g. the commit before, from git archive)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of `palmsim run` (median)")
    ap.add_argument("--trace", action="store_true", help="also a run with --trace (size)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    codes = [(n, Path(d).resolve()) for n, _, d in (c.partition("=") for c in args.code)]
    codes.append(("after", REPO))
    bare_ns = bare_simpy_ns_per_event()
    print(f"palmsim process benchmarks {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"bare SimPy: {bare_ns:.0f} ns/event")
    results = []
    with tempfile.TemporaryDirectory(prefix="palmsim-bench-") as tmp:
        for name, code in codes:
            res = measure(name, code, args.repeat, Path(tmp), args.trace and name == "after")
            results.append(res)
            print(json.dumps(res, indent=1))
            sys.stdout.flush()
    mib = 2**20
    print(f"\n{'figure':<34}" + "".join(f"{r['code']:>14}" for r in results))
    for key, unit, scale in (
        ("help_s", "s", 1),
        ("run_s", "s", 1),
        ("run_peak_rss_bytes", "MiB", mib),
        ("run_folder_bytes", "MB", 1e6),
        ("read_run_s", "s", 1),
        ("load_result_s", "s", 1),
        ("plot_s", "s", 1),
        ("trace_folder_bytes", "MB", 1e6),
    ):
        cells = []
        for r in results:
            v = r.get(key)
            cells.append(f"{'-':>14}" if v is None else f"{v / scale:>10.2f} {unit:<3}")
        print(f"{key:<34}" + "".join(cells))
    for key in ("help_s", "run_s", "read_run_s", "plot_s"):
        cells = "".join(
            f"{r[key] * 1e9 / bare_ns / 1e6:>10.2f} Mev" if key in r else f"{'-':>14}"
            for r in results
        )
        print(f"{key + ' in bare-SimPy events':<34}{cells}")
    if args.json:
        args.json.write_text(json.dumps({"bare_ns": bare_ns, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
