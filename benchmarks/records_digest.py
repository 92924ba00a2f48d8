"""Digest the records of every shipped example, to prove a speed change changed no result.

    python benchmarks/records_digest.py --write before.json   # on the old code
    python benchmarks/records_digest.py --check before.json   # on the new code: exit 1 on a change
    python benchmarks/records_digest.py --only W1 --write w1.json

For each example (every workload file on a shipped hardware config, scaled to a few layers where
the full model takes minutes, plus the full default run W1) it simulates with
``palmsim.api.simulate`` and hashes the sorted compute, flow and memory records with every float
in its exact ``repr``. ``simulated_events`` is kept beside the digest but not compared: fewer
events for the same records is the point of an engine speed-up. An infeasible example's digest
is its error message, which must not change either. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WAFER = "hw_configs/tx8-wafer.yaml"
H100 = "hw_configs/dgx-h100.yaml"
SUPERPOD = "hw_configs/dgx-a100-superpod.yaml"
WAFER_10X8 = "hw_configs/tx8-wafer-10x8.yaml"


def _layers(n: int) -> str:
    return f"model.num_hidden_layers={n}"


#: id -> (hardware, workload, mapping flags, overrides)
EXAMPLES: dict[str, tuple[str, str, dict, list[str]]] = {
    "W1": (WAFER, "workloads/t-18b.yaml", {}, []),
    "t18b-gpipe-b256": (
        WAFER,
        "workloads/t-18b.yaml",
        {"schedule": "gpipe"},
        ["training.global_batch_size=256"],
    ),
    "t18b-small": (
        WAFER,
        "workloads/t-18b.yaml",
        {"pp": 4, "tp": 16, "micro_batch_size": 8},
        [_layers(8)],
    ),
    "t18b-gpipe-rowmajor": (
        WAFER,
        "workloads/t-18b.yaml",
        {
            "pp": 4,
            "tp": 8,
            "dp": 2,
            "micro_batch_size": 4,
            "schedule": "gpipe",
            "placement": "row_major",
            "recompute": "selective",
        },
        [_layers(8), "training.global_batch_size=64"],
    ),
    "t18b-interleaved-sp-zero": (
        WAFER,
        "workloads/t-18b.yaml",
        {
            "pp": 4,
            "tp": 8,
            "dp": 2,
            "micro_batch_size": 4,
            "virtual_stages": 2,
            "sequence_parallel": True,
            "zero": 1,
        },
        [_layers(8), "training.global_batch_size=64"],
    ),
    "llama2-7b-h100": (
        H100,
        "workloads/llama2-7b.yaml",
        {"pp": 1, "tp": 8, "dp": 4, "micro_batch_size": 1, "recompute": "selective"},
        [],
    ),
    "llama2-7b-h100-small": (
        H100,
        "workloads/llama2-7b.yaml",
        {"pp": 2, "tp": 8, "dp": 2, "micro_batch_size": 1},
        [_layers(4), "training.global_batch_size=16"],
    ),
    "llama2-7b-hf-h100": (
        H100,
        "workloads/hf/llama-2-7b.config.json",
        {"pp": 2, "tp": 8, "dp": 2, "micro_batch_size": 1},
        [
            _layers(4),
            "training.seq_len=4096",
            "training.global_batch_size=16",
        ],
    ),
    "llama2-7b-infer-tx8": (WAFER, "workloads/llama2-7b.yaml", {}, ["workload.mode=inference"]),
    "llama2-7b-infer-h100": (H100, "workloads/llama2-7b.yaml", {}, ["workload.mode=inference"]),
    "llama2-70b-infer-h100": (
        H100,
        "workloads/llama2-70b.yaml",
        {},
        ["workload.mode=inference", "inference.output_len=8"],
    ),
    "gpt3-10x8-small": (
        WAFER_10X8,
        "workloads/gpt3-175b.yaml",
        {"pp": 4, "tp": 32, "micro_batch_size": 8},
        [_layers(8), "training.global_batch_size=32"],
    ),
    "t1t-superpod-small": (
        SUPERPOD,
        "workloads/t-1t.yaml",
        {"pp": 4, "tp": 8, "dp": 2, "micro_batch_size": 1},
        [_layers(8), "training.global_batch_size=16"],
    ),
}
for _name in ("bert-large", "llama2-7b-hf", "llama2-70b", "t-39b", "t-76b", "t-145b"):
    EXAMPLES[f"{_name}-small"] = (
        WAFER,
        f"workloads/{_name}.yaml",
        {"pp": 4, "tp": 8, "dp": 2, "micro_batch_size": 1},
        [_layers(8), "training.global_batch_size=16"],
    )
for _name in ("t-310b", "t-530b"):
    EXAMPLES[f"{_name}-small"] = (
        SUPERPOD,
        f"workloads/{_name}.yaml",
        {"pp": 4, "tp": 8, "dp": 2, "micro_batch_size": 1},
        [_layers(8), "training.global_batch_size=16"],
    )


def _exact(value: object) -> object:
    """Numbers as floats (exact below 2**53): the engine keeps some FLOP and byte counts as
    ints, which any file stores as floats; a tuple (a flow's route) item by item."""
    if isinstance(value, tuple):
        return tuple(_exact(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _digest(trace: object) -> str:
    """sha256 of the sorted records (every number as its exact float repr) and the end time."""
    h = hashlib.sha256()
    for kind in ("intervals", "flows", "memory"):
        rows = sorted(repr(_exact(tuple(r))) for r in getattr(trace, kind))
        h.update(f"{kind}:{len(rows)}\n".encode())
        for row in rows:
            h.update(row.encode())
            h.update(b"\n")
    h.update(repr(float(trace.end_time_s)).encode())  # type: ignore[attr-defined]
    return h.hexdigest()


def _folder_digests(folder: Path) -> dict:
    """Digests of what a run folder holds: its records as read back, its summary (without
    the host's wall time and the version) and its timeline.csv bytes."""
    from palmsim.report.export import read_run

    summary, _, trace = read_run(folder)
    for key in ("simulation_wall_time_s", "palmsim_version", "simulated_events"):
        summary.pop(key, None)
    canonical = json.dumps(summary, sort_keys=True).encode()
    return {
        "folder_records": _digest(trace),
        "summary": hashlib.sha256(canonical).hexdigest(),
        "timeline": hashlib.sha256((folder / "timeline.csv").read_bytes()).hexdigest(),
    }


def run_one(name: str, via_folder: Path | None = None) -> dict:
    """Simulate one example; its digest (or error), events and wall time.

    With ``via_folder``, also write its run folder there as ``palmsim run --no-plots`` does
    and digest what the folder holds (records read back, summary, timeline).
    """
    from palmsim.api import load_experiment, run_experiment, simulate
    from palmsim.errors import PalmsimError

    hw, workload, flags, overrides = EXAMPLES[name]
    t0 = time.perf_counter()
    try:
        experiment = load_experiment(hw, workload, overrides=overrides, mapping_flags=flags)
        trace = simulate(experiment).trace
    except PalmsimError as error:
        return {"digest": f"{type(error).__name__}: {error}", "events": 0, "wall_s": 0.0}
    out = {
        "digest": _digest(trace),
        "events": trace.num_events,
        "records": len(trace.intervals) + len(trace.flows) + len(trace.memory),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    if via_folder is not None:
        folder = via_folder / name
        run_experiment(experiment, folder, make_plots=False)
        out.update(_folder_digests(folder))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", help="write the digests to this JSON file")
    parser.add_argument("--check", help="compare against digests written earlier")
    parser.add_argument("--only", help="comma-separated example ids")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="compare two files written by --write, without simulating",
    )
    parser.add_argument(
        "--via-folder",
        type=Path,
        help="also write each run folder here and compare what it holds (records read back, "
        "summary without wall time, timeline.csv)",
    )
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(EXAMPLES)
    expected = json.loads(Path(args.check).read_text()) if args.check else {}
    done: dict[str, dict] = {}
    if args.compare:
        expected, done = (json.loads(Path(f).read_text()) for f in args.compare)
        names = [n for n in done if n in expected]
    results: dict[str, dict] = {}
    changed = []
    for name in names:
        results[name] = done[name] if name in done else run_one(name, args.via_folder)
        status = ""
        if name in expected:
            mine, theirs = results[name], expected[name]
            # records read back from the folder must equal the other side's simulated records
            keys = [("digest", "digest")]
            if "folder_records" in mine:
                keys.append(("folder_records", "digest"))
                if "folder_records" in theirs:  # and what each side's folder holds
                    keys.append(("folder_records", "folder_records"))
            keys += [(k, k) for k in ("summary", "timeline") if k in mine and k in theirs]
            differ = [a for a, b in keys if mine[a] != theirs[b]]
            status = (
                "same " + "+".join(sorted({a for a, _ in keys}))
                if not differ
                else "CHANGED " + ",".join(differ)
            )
            if differ:
                changed.append(name)
            status += f" (events {expected[name]['events']} -> {results[name]['events']})"
        print(f"{name:28} {results[name]['digest'][:16]} {results[name]['wall_s']:7.2f}s {status}")
        sys.stdout.flush()
    if args.write:
        Path(args.write).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if changed:
        print(f"records changed: {', '.join(changed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
