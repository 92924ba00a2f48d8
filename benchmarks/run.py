"""Speed benchmarks of palmsim, run on demand (not part of the test suite).

    python benchmarks/run.py                # W1, W2, W3, W4, G1
    python benchmarks/run.py --quick        # scaled-down versions, seconds each
    python benchmarks/run.py --only W1,W4   # a subset (W4 reuses W1 as its base point)

Every scenario runs in its own child process, so its peak memory (the child's ``ru_maxrss``) is
its own. Bare SimPy (one process yielding ``env.timeout(1.0)`` a million times) is measured once
at the start, also in a child, and palmsim's time per event is reported relative to it.
See benchmarks/README.md for the columns and the measured figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WAFER = "hw_configs/tx8-wafer.yaml"
WAFER_10X8 = "hw_configs/tx8-wafer-10x8.yaml"
SUPERPOD = "hw_configs/dgx-a100-superpod.yaml"
T18B = "workloads/t-18b.yaml"
GPT3 = "workloads/gpt3-175b.yaml"
T1T = "workloads/t-1t.yaml"
COMMON = {"schedule": "1f1b", "recompute": "full", "placement": "snake"}
BARE_SIMPY_EVENTS = 1_000_000

# The child: simulate one scenario and print one JSON line (last line of stdout).
_CHILD_SIM = r"""
import json, resource, sys, time
cfg = json.loads(sys.argv[1])
out = {}
try:
    from palmsim.api import load_experiment, simulate
    from palmsim.errors import PalmsimError
    t0 = time.perf_counter()
    try:
        exp = load_experiment(cfg["hw"], cfg["workload"], overrides=cfg["overrides"],
                              mapping_flags=cfg["flags"])
        res = simulate(exp)
        out["wall_s"] = time.perf_counter() - t0
        tr = res.trace
        out.update(status="ok", sim_wall_s=tr.wall_time_s, events=tr.num_events,
                   end_time_s=tr.end_time_s, tiles=len(res.plan.used_tiles),
                   microbatches=res.plan.num_microbatches)
    except PalmsimError as exc:
        out.update(status=f"{type(exc).__name__}: {exc}", wall_s=time.perf_counter() - t0)
except Exception as exc:  # report anything, the parent prints it as the row's status
    out.update(status=f"crash {type(exc).__name__}: {exc}")
out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""

_CHILD_SIMPY = r"""
import json, resource, sys, time
import simpy
n = int(sys.argv[1])
env = simpy.Environment()
def proc(env):
    for _ in range(n):
        yield env.timeout(1.0)
env.process(proc(env))
t0 = time.perf_counter()
env.run()
wall = time.perf_counter() - t0
print(json.dumps({"status": "ok", "wall_s": wall, "sim_wall_s": wall, "events": n,
                  "end_time_s": env.now,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


@dataclass
class Scenario:
    """One benchmark row."""

    sid: str
    label: str
    hw: str
    workload: str
    flags: dict
    overrides: list[str] = field(default_factory=list)
    group: str | None = None  # "mb" or "tiles" for the W4 scaling fits
    factor: int = 1  # the scaling factor k of the W4 fits

    def key(self) -> str:
        """Identity of the simulated configuration (rows with equal keys share one run)."""
        return json.dumps([self.hw, self.workload, self.flags, self.overrides], sort_keys=True)


def scenarios(quick: bool) -> list[Scenario]:
    """The benchmark rows: the issue's W1-W4 and G1, or their scaled-down --quick versions."""
    if quick:
        layers = ["model.num_hidden_layers=8"]
        base_flags = {**COMMON, "pp": 4, "tp": 16, "dp": 1, "micro_batch_size": 32}
        gbs = 128
        w1 = Scenario(
            "W1",
            "quick T-18B/8 layers, 320 tiles, pp4 tp16, 4 mb",
            WAFER,
            T18B,
            base_flags,
            [*layers, f"training.global_batch_size={gbs}"],
        )
        rows = [
            w1,
            Scenario(
                "W2",
                "quick T-18B/8 layers, 1280 tiles, pp4 tp64",
                WAFER_10X8,
                T18B,
                {**base_flags, "tp": 64},
                [*layers, f"training.global_batch_size={gbs}"],
            ),
            Scenario(
                "W2-tp48",
                "quick W2 with tp48 (48 heads)",
                WAFER_10X8,
                T18B,
                {**base_flags, "tp": 48},
                [*layers, f"training.global_batch_size={gbs}"],
            ),
            Scenario(
                "W3",
                "quick GPT-3/8 layers, 1280 tiles, pp4 tp32, mbs 8",
                WAFER_10X8,
                GPT3,
                {**base_flags, "tp": 32, "micro_batch_size": 8},
                [*layers, "training.global_batch_size=32"],
            ),
        ]
        tiles = [
            (2, "hw.system.chips=[10, 4]", WAFER, {"pp": 8, "tp": 16}),
            (4, None, WAFER_10X8, {"pp": 8, "tp": 32}),
            (3, None, WAFER_10X8, {"pp": 8, "tp": 24}),
        ]
        g1 = Scenario(
            "G1",
            "quick Megatron 1T/8 layers, pp4 tp8 dp1, 8 mb",
            SUPERPOD,
            T1T,
            {**COMMON, "pp": 4, "tp": 8, "dp": 1, "micro_batch_size": 1},
            [*layers, "training.global_batch_size=8"],
        )
    else:
        base_flags = {**COMMON, "pp": 20, "tp": 16, "dp": 1, "micro_batch_size": 32}
        gbs = 1024
        w1 = Scenario(
            "W1", "T-18B, tx8-wafer 320 tiles, pp20 tp16, 32 mb", WAFER, T18B, base_flags, []
        )
        rows = [
            w1,
            Scenario(
                "W2",
                "T-18B, tx8-wafer-10x8 1280 tiles, pp20 tp64",
                WAFER_10X8,
                T18B,
                {**base_flags, "tp": 64},
            ),
            Scenario(
                "W2-tp48",
                "W2 with tp48: 960 of 1280 tiles (48 heads)",
                WAFER_10X8,
                T18B,
                {**base_flags, "tp": 48},
            ),
            Scenario(
                "W3",
                "GPT-3 175B, 10x8 wafer, pp32 tp32, mbs 8",
                WAFER_10X8,
                GPT3,
                {**base_flags, "pp": 32, "tp": 32, "micro_batch_size": 8},
            ),
        ]
        tiles = [
            (2, "hw.system.chips=[10, 4]", WAFER, {"pp": 40, "tp": 16}),
            (4, None, WAFER_10X8, {"pp": 40, "tp": 32}),
            (3, None, WAFER_10X8, {"pp": 40, "tp": 24}),
        ]
        g1 = Scenario(
            "G1",
            "Megatron 1T, DGX A100 SuperPOD, pp64 tp8 dp6, 512 mb",
            SUPERPOD,
            T1T,
            {**COMMON, "pp": 64, "tp": 8, "dp": 6, "micro_batch_size": 1},
        )
    tag = "quick " if quick else ""
    rows.append(
        Scenario(
            "W4-mb1",
            f"{tag}W4 base = W1",
            w1.hw,
            w1.workload,
            w1.flags,
            w1.overrides,
            group="mb",
            factor=1,
        )
    )
    base_ov = [o for o in w1.overrides if not o.startswith("training.global_batch_size=")]
    for k in (2, 4, 8):
        rows.append(
            Scenario(
                f"W4-mb{k}",
                f"{tag}W1 with {k}x micro-batches",
                w1.hw,
                w1.workload,
                w1.flags,
                [*base_ov, f"training.global_batch_size={gbs * k}"],
                group="mb",
                factor=k,
            )
        )
    rows.append(
        Scenario(
            "W4-tiles1",
            f"{tag}W4 base = W1",
            w1.hw,
            w1.workload,
            w1.flags,
            w1.overrides,
            group="tiles",
            factor=1,
        )
    )
    for k, grid, hw, flags in tiles:
        ov = list(w1.overrides) + ([grid] if grid else [])
        shape = f"pp{flags['pp']} tp{flags['tp']}"
        if k == 3:
            label = f"{tag}W1 on the 4x wafer, {shape}: 3x tiles used (tp32 does not divide 48)"
        else:
            label = f"{tag}W1 on {k}x tiles, {shape}"
        rows.append(
            Scenario(
                f"W4-tiles{k}",
                label,
                hw,
                w1.workload,
                {**w1.flags, **flags},
                ov,
                group="tiles",
                factor=k,
            )
        )
    rows.append(g1)
    return rows


def run_child(code: str, arg: str, timeout: float, checkout: Path = REPO) -> dict:
    """Run ``code`` in a fresh interpreter, in ``checkout`` with its palmsim first on the
    path; its last stdout line is the JSON result."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, arg],
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": str(checkout)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {timeout:.0f} s)"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"status": f"child failed (rc {proc.returncode}): {tail[0]}"}


def bare_simpy_ns_per_event(timeout: float = 300) -> float:
    """Bare SimPy's time per event on this machine now [ns] (one process yielding
    ``BARE_SIMPY_EVENTS`` timeouts, in a child)."""
    bare = run_child(_CHILD_SIMPY, str(BARE_SIMPY_EVENTS), timeout)
    if bare.get("status") != "ok":
        raise RuntimeError(f"bare SimPy: {bare.get('status')}")
    return float(bare["wall_s"]) / BARE_SIMPY_EVENTS * 1e9


def growth_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(t) against log(k)."""
    if len(points) < 2:
        return None
    xs = [math.log(k) for k, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _fmt_bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="scaled-down scenarios (seconds)")
    ap.add_argument("--only", default="", help="comma-separated ids or prefixes, e.g. W1,W4")
    ap.add_argument("--timeout", type=float, default=900.0, help="per-scenario timeout [s]")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    rows = scenarios(args.quick)
    if args.only:
        wanted = [w.strip().upper() for w in args.only.split(",") if w.strip()]
        rows = [r for r in rows if any(r.sid.upper().startswith(w) for w in wanted)]
        if not rows:
            ap.error(f"--only {args.only!r} matches none of W1, W2, W3, W4, G1")

    mode = "QUICK (scaled-down scenarios)" if args.quick else "full-size scenarios"
    print(
        f"palmsim benchmarks: {mode}; python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    bare = run_child(_CHILD_SIMPY, str(BARE_SIMPY_EVENTS), args.timeout)
    bare_ns = bare["wall_s"] / bare["events"] * 1e9 if bare.get("status") == "ok" else None
    if bare_ns is None:
        print(f"bare SimPy: {bare.get('status')}")
    else:
        print(
            f"bare SimPy: {bare['events']:,} timeouts in {bare['wall_s']:.2f} s = "
            f"{bare_ns:.0f} ns/event ({1e9 / bare_ns:,.0f} events/s)"
        )
    print()

    header = (
        f"{'id':<10} {'wall s':>8} {'sim s':>8} {'peak RSS':>10} {'events':>11} "
        f"{'events/s':>9} {'ns/ev':>7} {'xSimPy':>7} {'tiles':>5} {'mb':>4}  "
        "scenario / status"
    )
    print(header)
    print("-" * len(header))
    cache: dict[str, dict] = {}
    results = []
    for sc in rows:
        if sc.key() in cache:
            res = cache[sc.key()]
        else:
            cfg = {
                "hw": sc.hw,
                "workload": sc.workload,
                "flags": sc.flags,
                "overrides": sc.overrides,
            }
            res = run_child(_CHILD_SIM, json.dumps(cfg), args.timeout)
            cache[sc.key()] = res
        results.append((sc, res))
        if res.get("status") == "ok":
            ns = res["sim_wall_s"] / res["events"] * 1e9 if res["events"] else float("nan")
            ratio = f"{ns / bare_ns:7.2f}" if bare_ns else "      -"
            print(
                f"{sc.sid:<10} {res['wall_s']:8.2f} {res['sim_wall_s']:8.2f} "
                f"{_fmt_bytes(res['peak_rss_bytes']):>10} {res['events']:>11,} "
                f"{res['events'] / res['sim_wall_s']:9,.0f} {ns:7.0f} {ratio} "
                f"{res['tiles']:>5} {res['microbatches']:>4}  {sc.label}"
            )
        else:
            wall = f"{res['wall_s']:8.2f}" if "wall_s" in res else f"{'-':>8}"
            status = res.get("status", "?")
            if len(status) > 160:
                status = status[:157] + "..."
            print(
                f"{sc.sid:<10} {wall} {'-':>8} {_fmt_bytes(res.get('peak_rss_bytes')):>10} "
                f"{'-':>11} {'-':>9} {'-':>7} {'-':>7} {'-':>5} {'-':>4}  {sc.label}: "
                f"{status}"
            )
        sys.stdout.flush()

    fits = {}
    for group, what in (("mb", "micro-batches"), ("tiles", "tiles")):
        # the tiles fit uses the tiles actually used, relative to the base point
        base_tiles = next(
            (
                res["tiles"]
                for sc, res in results
                if sc.group == group and sc.factor == 1 and res.get("status") == "ok"
            ),
            None,
        )
        pts = [
            (
                res["tiles"] / base_tiles if group == "tiles" and base_tiles else sc.factor,
                res["wall_s"],
            )
            for sc, res in results
            if sc.group == group and res.get("status") == "ok"
        ]
        if any(sc.group == group for sc, _ in results):
            exp = growth_exponent(pts)
            fits[group] = exp
            ks = ", ".join(f"{k:g}x" for k, _ in pts)
            shown = "n/a (fewer than 2 points)" if exp is None else f"{exp:.2f}"
            print(f"W4 wall-time growth exponent in {what}: {shown}  (points {ks or 'none'})")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "bare_simpy": bare,
                    "bare_simpy_ns_per_event": bare_ns,
                    "rows": [{"id": sc.sid, "label": sc.label, **res} for sc, res in results],
                    "growth_exponents": fits,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
