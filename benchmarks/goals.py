"""Every goal of issue 17, measured for each checkout in one invocation (not a test).

    git archive 7a45e6c | tar -x -C /tmp/issue17       # main when issue 17 was filed
    python benchmarks/goals.py --code before=/tmp/issue17
    python benchmarks/goals.py --skip search,W3       # a subset, this checkout only

For each checkout (``--code NAME=DIR``; this one is ``after``, measured last), every figure
comes from fresh child processes run in the checkout with ``PYTHONPATH`` set to it:

- **W1** (run.py's scenario): the simulation loop's time (``trace.wall_time_s``), median of
  ``--repeat`` children;
- **run**: ``palmsim run`` on the default (W1) as a whole process, ``--repeat`` times: wall
  time (median), the child's peak RSS (``wait4``, the largest), the run folder's size;
- **load**: ``read_run`` of that folder, what ``palmsim plot`` and ``report`` read;
- **help**: ``palmsim --help``, median of 5;
- **W3**, **G1** (run.py's scenarios): wall time and peak RSS of a child that loads and
  simulates;
- **search**: ``palmsim search --max-simulations 0 --top 5 --jobs 2`` (T-18B on TX8) with a
  limit of ``--search-timeout`` seconds: its wall time, whether it proved its top 5 (the
  last line says so), its simulations, and the longest wait between two lines of output.

Bare SimPy is measured once at the start, as in run.py. The table at the end gives each goal
with every checkout's figure and whether the last one meets it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from process import _CHILD_LOAD, folder_bytes, timed  # noqa: E402
from run import _CHILD_SIM, bare_simpy_ns_per_event, run_child, scenarios  # noqa: E402

MIB = 2**20
PARTS = ("W1", "run", "help", "W3", "G1", "search")


def _sim_child(code: Path, scenario_id: str, timeout_s: float) -> dict:
    """run.py's child for one of its full-size scenarios, in checkout ``code``."""
    (sc,) = [s for s in scenarios(quick=False) if s.sid == scenario_id]
    cfg = {"hw": sc.hw, "workload": sc.workload, "overrides": sc.overrides, "flags": sc.flags}
    return run_child(_CHILD_SIM, json.dumps(cfg), timeout_s, checkout=code)


def _search(code: Path, scratch: Path, timeout_s: float) -> dict:
    """The T-18B/TX8 search proving its top 5, timed, with the gaps between its lines."""
    out_dir = scratch / "search"
    shutil.rmtree(out_dir, ignore_errors=True)
    argv = [sys.executable, "-u", "-m", "palmsim.cli", "search", "--max-simulations", "0"]
    argv += ["--top", "5", "--jobs", "2", "--out", str(out_dir)]
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=code,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the limit stops its workers too
    )

    def stop() -> None:
        os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout_s, stop)  # also while it prints nothing
    watchdog.start()
    last, longest_gap, lines = t0, 0.0, []
    assert proc.stdout is not None
    for line in proc.stdout:  # one line at a time as the search prints it
        now = time.perf_counter()
        longest_gap, last = max(longest_gap, now - last), now
        lines.append(line.rstrip())
    proc.wait()
    watchdog.cancel()
    wall = time.perf_counter() - t0
    timed_out = wall >= timeout_s
    longest_gap = max(longest_gap, t0 + wall - last)
    text = "\n".join(lines)
    proved = proc.returncode == 0 and not timed_out and "may remain" not in text
    simulated = None
    results = out_dir / "results.csv"
    if results.is_file():
        simulated = sum(",simulated," in row for row in results.read_text().splitlines())
    return {
        "search_s": wall,
        "search_proved": proved,
        "search_timed_out": timed_out,
        "search_simulated": simulated,
        "search_longest_silence_s": longest_gap,
        "search_tail": lines[-3:],
    }


def measure(name: str, code: Path, parts: set[str], repeat: int, scratch: Path, args) -> dict:
    """Every figure of one checkout."""
    py = [sys.executable, "-m", "palmsim.cli"]
    out: dict = {"code": name}
    if "W1" in parts:
        runs = [_sim_child(code, "W1", args.timeout) for _ in range(repeat)]
        sims = [r["sim_wall_s"] for r in runs if "sim_wall_s" in r]
        out["w1_sim_s"] = statistics.median(sims) if sims else None
        out["w1_sim_all_s"] = sims
        out["w1_events"] = runs[0].get("events")
    if "run" in parts:
        folder = scratch / f"{name}-w1"
        runs = []
        for _ in range(repeat):
            shutil.rmtree(folder, ignore_errors=True)
            runs.append(timed([*py, "run", "--out", str(folder), "-q"], code))
        ok = [r for r in runs if r["rc"] == 0]
        if ok:
            out["run_s"] = statistics.median(r["wall_s"] for r in ok)
            out["run_all_s"] = [r["wall_s"] for r in ok]
            out["run_peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in ok)
            out["run_folder_bytes"] = folder_bytes(folder)
            load = timed([sys.executable, "-c", _CHILD_LOAD, str(folder)], code, stdout=-1)
            try:
                out["read_run_s"] = json.loads(load["stdout"].strip().splitlines()[-1])[
                    "read_run_s"
                ]
            except (IndexError, json.JSONDecodeError, KeyError):
                out["read_run_status"] = load["stderr"][0]
        else:
            out["run_status"] = runs[0]["stderr"][0]
    if "help" in parts:
        out["help_s"] = statistics.median(timed([*py, "--help"], code)["wall_s"] for _ in range(5))
    for sid in ("W3", "G1"):
        if sid in parts:
            res = _sim_child(code, sid, args.timeout)
            out[f"{sid}_s"] = res.get("wall_s") if res.get("status") == "ok" else None
            out[f"{sid}_peak_rss_bytes"] = res.get("peak_rss_bytes")
            out[f"{sid}_status"] = res.get("status")
            out[f"{sid}_events"] = res.get("events")
    if "search" in parts:
        out.update(_search(code, scratch, args.search_timeout))
    return out


def _cell(value, unit: str, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value / scale:.3g} {unit}"


def _search_cell(r: dict) -> str:
    if "search_s" not in r:
        return "-"
    if r["search_proved"]:
        return f"proved in {r['search_s']:.0f} s, {r['search_simulated']} simulated"
    why = "stopped at the limit" if r["search_timed_out"] else "not proved"
    return f"{why} after {r['search_s']:.0f} s, {r['search_simulated']} simulated"


def table(results: list[dict]) -> list[str]:
    """The goals, each checkout's figure, and whether the last checkout meets the goal."""
    rows = [
        ("W1's simulation <= 2 s", "w1_sim_s", "s", 1, lambda v: v <= 2),
        ("`palmsim run` <= 5 s", "run_s", "s", 1, lambda v: v <= 5),
        ("`palmsim run` <= 300 MiB", "run_peak_rss_bytes", "MiB", MIB, lambda v: v <= 300 * MIB),
        ("run folder <= 20 MB", "run_folder_bytes", "MB", 1e6, lambda v: v <= 20e6),
        ("plot/report load < 1 s", "read_run_s", "s", 1, lambda v: v < 1),
        ("W3 <= 60 s", "W3_s", "s", 1, lambda v: v <= 60),
        ("W3 <= 1 GiB", "W3_peak_rss_bytes", "MiB", MIB, lambda v: v <= 1024 * MIB),
        ("G1 <= 20 s", "G1_s", "s", 1, lambda v: v <= 20),
        ("G1 <= 1 GiB", "G1_peak_rss_bytes", "MiB", MIB, lambda v: v <= 1024 * MIB),
        ("`palmsim --help` <= 0.3 s", "help_s", "s", 1, lambda v: v <= 0.3),
    ]
    lines = ["| goal | " + " | ".join(r["code"] for r in results) + " | met |", ""]
    lines[1] = "|" + "---|" * (len(results) + 2)
    last = results[-1]
    for goal, key, unit, scale, ok in rows:
        cells = [_cell(r.get(key), unit, scale) for r in results]
        met = "-" if last.get(key) is None else ("yes" if ok(last[key]) else "**no**")
        lines.append(f"| {goal} | " + " | ".join(cells) + f" | {met} |")
    cells = [_search_cell(r) for r in results]
    met = "-"
    if "search_s" in last:
        met = "yes" if last["search_proved"] and last["search_s"] <= 180 else "**no**"
    lines.append("| search proves its top 5 <= 3 min | " + " | ".join(cells) + f" | {met} |")
    gaps = [_cell(r.get("search_longest_silence_s"), "s") for r in results]
    met = "-"
    if "search_longest_silence_s" in last:
        met = "yes" if last["search_longest_silence_s"] <= 5.5 else "**no**"
    lines.append(
        "| search prints every <= 5 s (longest silence) | " + " | ".join(gaps) + f" | {met} |"
    )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--repeat", type=int, default=3, help="W1 and `palmsim run` (median)")
    ap.add_argument("--skip", default="", help=f"comma-separated parts to skip: {PARTS}")
    ap.add_argument("--timeout", type=float, default=900, help="limit per simulation child [s]")
    ap.add_argument("--search-timeout", type=float, default=900, help="limit of a search [s]")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    parts = set(PARTS) - set(filter(None, args.skip.split(",")))
    codes = [(n, Path(d).resolve()) for n, _, d in (c.partition("=") for c in args.code)]
    codes.append(("after", REPO))
    bare_ns = bare_simpy_ns_per_event()
    when, version = time.strftime("%Y-%m-%d %H:%M:%S"), sys.version.split()[0]
    print(f"palmsim goals of issue 17, {when}; python {version}")
    print(f"bare SimPy: {bare_ns:.0f} ns/event")
    results = []
    with tempfile.TemporaryDirectory(prefix="palmsim-goals-") as tmp:
        for name, code in codes:
            start = time.strftime("%H:%M:%S")
            res = measure(name, code, parts, args.repeat, Path(tmp), args)
            res["started"], res["ended"] = start, time.strftime("%H:%M:%S")
            results.append(res)
            print(json.dumps(res, indent=1), flush=True)
    print()
    print("\n".join(table(results)))
    if args.json:
        args.json.write_text(json.dumps({"bare_ns": bare_ns, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
