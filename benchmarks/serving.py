"""Speed of serving simulation (issue 16): 10,000 requests at 10 requests/s on an 8-GPU H100
node (Llama-3-8B, 8 one-GPU replicas, ShareGPT-like lengths), run on demand.

    python benchmarks/serving.py            # the issue's scenario
    python benchmarks/serving.py --quick    # 1,000 requests

Prints the wall and CPU time of the serving simulation (the CPU time is the figure to read on
a shared machine), its iterations, the distinct segments simulated and the iterations timed
in closed form, and its time per iteration against bare SimPy's time per event measured in
the same run (one process yielding ``env.timeout(1.0)`` a million times).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BARE_SIMPY_EVENTS = 1_000_000


def bare_simpy_s_per_event() -> float:
    import simpy

    env = simpy.Environment()

    def proc(env: simpy.Environment):  # type: ignore[no-untyped-def]
        for _ in range(BARE_SIMPY_EVENTS):
            yield env.timeout(1.0)

    env.process(proc(env))
    start = time.perf_counter()
    env.run()
    return (time.perf_counter() - start) / BARE_SIMPY_EVENTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 requests instead of 10,000")
    args = ap.parse_args(argv)
    from palmsim.api import serve

    n = 1000 if args.quick else 10_000
    bare = bare_simpy_s_per_event()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = serve(
        str(REPO / "hw_configs/dgx-h100.yaml"),
        str(REPO / "workloads/llama3-8b.yaml"),
        str(REPO / "serving/llama3-8b-h100-node.yaml"),
        overrides=[f"serving.traffic.num_requests={n}"],
    )
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    s = result.summary
    per_iteration = result.trace.wall_time_s / max(1, s["num_iterations"])
    print(f"{n} requests at 10/s, Llama-3-8B, 8 x H100 (one replica per GPU)")
    print(f"  wall time (load, map, simulate, summarise)  {wall:.1f} s")
    print(f"  CPU time of the same (this process)         {cpu:.1f} s")
    print(f"  serving simulation                          {result.trace.wall_time_s:.1f} s")
    print(f"  simulated time                              {result.trace.end_time_s:.1f} s")
    print(f"  iterations                                  {s['num_iterations']}")
    print(f"  distinct segments simulated                 {s['num_shapes_simulated']}")
    print(f"  iterations timed in closed form             {s['num_iterations_closed_form']}")
    print(f"  time per iteration                          {per_iteration * 1e6:.1f} us")
    print(f"  bare SimPy time per event                   {bare * 1e6:.3f} us")
    print(f"  ratio (per iteration / bare SimPy event)    {per_iteration / bare:.0f}")
    print(f"  TTFT p90 {s['ttft_p90_s'] * 1e3:.4g} ms, TPOT p90 {s['tpot_p90_s'] * 1e3:.4g} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
