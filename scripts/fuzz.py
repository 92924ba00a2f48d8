"""Fuzz palmsim's inputs: seeded mutations of every input kind, each run through the CLI.

Every input palmsim reads is mutated (hardware, workload and mapping files, a Hugging Face
``config.json``, sweep specs, measurement files for ``validate`` and ``calibrate``, run
folders for ``plot`` and ``report``, and ``--set`` overrides); the "flags" kind combines
``palmsim run``'s flags at random on the shipped configs. A mutation deletes a key, nulls
it, puts an absurd number or string in it (``0``, ``-1``, ``1e30``, ``10**30``, ``nan``,
``"5 furlongs"``...), misspells a key, adds one, changes a value's type, or garbles the file's
text. Each mutated input runs ``palmsim.cli.main`` in a forked child with a wall-time limit
and an address-space cap, and must end with exit code 0, 2, 3 or 5 (``describe`` and
``calibrate`` print, ``plot``/``report`` read), print no traceback, finish inside the time
limit and stay under the memory limit (the child's peak RSS).

The run budgets keep accepted inputs small (``--set run.max_events=... run.max_memory=...``
on every command that takes ``--set``): what the guard lets through must finish in time.

    python scripts/fuzz.py                     # 1000 mutations of each kind (16 min on 2 cores)
    python scripts/fuzz.py --per-kind 50 --kinds hardware,workload --seed 7

tests/fuzz/test_fuzz.py runs a short form of the same in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Exit codes a mutated input may end with: ok, ConfigError, MappingError, unreadable run dir.
ALLOWED_EXITS = (0, 2, 3, 5)
#: Budgets given to every command that takes --set: small enough that whatever the guard
#: accepts simulates in a few seconds (W1 runs 654k events in about 10 s on 2 cores).
BUDGETS = ("run.max_events=100000", "run.max_memory=256 MiB")

_NUMBERS: tuple[Any, ...] = (
    0, -1, 1, 2, 3, 7, 1e30, -1e30, 10**30, 2**63, 2**31, 1e-30, 0.5, float("nan"),
    float("inf"), True, False, 1000, 65536,
)  # fmt: skip
_STRINGS: tuple[Any, ...] = (
    "", "x", "1e30", "5 furlongs", "1e30 GB/s", "-5 GB/s", "0 B", "1e30 TFLOP/s", "0 s",
    "nan", "inf GB", "none", "null", "[", "{}", "gpipe", "1f1b", "full", "mesh", "torus",
    "fp8", "A100", "\x00", "é" * 3, "1 ZiB",
)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """How one mutated input ended."""

    kind: str
    index: int
    exit_code: int | None  # None: killed at the time limit
    seconds: float
    max_rss_bytes: int
    traceback: str
    message: str
    mutation: str

    @property
    def ok(self) -> bool:
        """Exit 0/2/3/5 and no traceback."""
        return self.exit_code in ALLOWED_EXITS and not self.traceback


# --------------------------------------------------------------------------- mutation


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path inside a parsed YAML/JSON tree (mappings and lists)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 2:
        return word + "x"
    i = rng.randrange(len(word) - 1)
    choice = rng.randrange(3)
    if choice == 0:  # swap two letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if choice == 1:  # drop one
        return word[:i] + word[i + 1 :]
    return word[:i] + rng.choice("aeiouxz_") + word[i:]  # add one


def _scaled(value: Any, rng: random.Random) -> Any:
    """A number scaled by a large or small factor (a legal value of absurd size)."""
    factor = rng.choice((1000, 10**6, 10**9, 10**12, -1))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return factor
    return value * factor


def mutate_tree(tree: Any, rng: random.Random) -> tuple[Any, str]:
    """One random mutation of a parsed tree; returns the new tree and what was done."""
    tree = copy.deepcopy(tree)
    paths = list(_paths(tree))
    if not paths:
        return rng.choice((None, [], "x", 0)), "replaced the whole document"
    path = rng.choice(paths)
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    old = parent[key]
    where = ".".join(map(str, path))
    op = rng.randrange(10)
    if op == 0:
        del parent[key]
        return tree, f"deleted {where}"
    if op == 1:
        parent[key] = None
        return tree, f"{where} = null"
    if op == 2:
        parent[key] = rng.choice(_NUMBERS)
    elif op == 3:
        parent[key] = rng.choice(_STRINGS)
    elif op == 4 and isinstance(parent, dict) and isinstance(key, str):
        value = parent.pop(key)
        parent[_typo(key, rng)] = value
        return tree, f"misspelled {where}"
    elif op == 5 and isinstance(parent, dict):
        parent[rng.choice(("extra", "nosuchkey", "hidden", "tp", "kind"))] = rng.choice(_NUMBERS)
        return tree, f"added a key beside {where}"
    elif op == 6:
        parent[key] = rng.choice(([], {}, [1, 2, 3], {"a": 1}, [old, old]))
    elif op == 7 and isinstance(old, str):
        parent[key] = _typo(old, rng)
    else:
        parent[key] = _scaled(old, rng)
    return tree, f"{where} = {parent[key]!r}"[:160]


def mutate_text(text: str, rng: random.Random) -> tuple[str, str]:
    """Garble a file's text: truncate it, or insert or delete characters."""
    if not text:
        return "x", "wrote x into an empty file"
    i = rng.randrange(len(text))
    op = rng.randrange(3)
    if op == 0:
        return text[:i], f"truncated at {i}"
    if op == 1:
        return text[:i] + rng.choice(":{}[]-\t'\"&*!|>#\n\x00") + text[i:], f"inserted at {i}"
    return text[:i] + text[i + rng.randrange(1, 20) :], f"deleted characters at {i}"


def _mutate_file(source: Path, target: Path, rng: random.Random) -> str:
    """Write a mutated copy of ``source`` (YAML or JSON) to ``target``; return the mutation."""
    text = source.read_text(encoding="utf-8")
    if rng.random() < 0.12:
        garbled, what = mutate_text(text, rng)
        target.write_text(garbled, encoding="utf-8")
        return what
    is_json = source.suffix == ".json"
    tree = json.loads(text) if is_json else yaml.safe_load(text)
    mutated, what = mutate_tree(tree, rng)
    if is_json:
        target.write_text(json.dumps(mutated), encoding="utf-8")
    else:
        target.write_text(yaml.safe_dump(mutated, allow_unicode=True), encoding="utf-8")
    return what


def _mutate_npz(path: Path, rng: random.Random) -> str:
    """Mutate a record file: garble its bytes, or put an absurd value into one of its arrays
    (a legal file whose records do not fit the run)."""
    import numpy as np

    data = path.read_bytes()
    if rng.random() < 0.3:
        i = rng.randrange(len(data))
        if rng.random() < 0.5:
            path.write_bytes(data[:i])
            return f"truncated at {i}"
        path.write_bytes(data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :])
        return f"changed byte {i}"
    from palmsim.report.export import RECORD_ARRAYS, _unshuffle

    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for name, array in arrays.items():  # float columns stored byte-shuffled: store them plain
        if RECORD_ARRAYS.get(name) == "f8" and array.dtype == np.uint8:
            arrays[name] = _unshuffle(array)
    name = rng.choice(sorted(n for n, a in arrays.items() if a.ndim == 1 and len(a)))
    column = arrays[name].copy()
    i = rng.randrange(len(column))
    if column.dtype.kind == "U":
        value: Any = rng.choice(("", "x", "compute", "\x00"))
    elif column.dtype.kind == "f":
        value = rng.choice((-1.0, 1e30, float("nan"), float("inf"), 0.0))
    else:
        value = rng.choice((-1, -(2**31), 2**31 - 1, len(column), 10**6))
    try:
        column[i] = value
    except (OverflowError, ValueError):
        column[i] = -1
    arrays[name] = column
    np.savez_compressed(path, **arrays)
    return f"{name}[{i}] = {value!r}"


# --------------------------------------------------------------------------- corpus


def _small_workload(work: Path) -> Path:
    """A 2-layer copy of T-18B with a batch of 4 and a 2x2 mapping: simulates in a blink."""
    raw = yaml.safe_load((REPO / "workloads" / "t-18b.yaml").read_text())
    raw["model"]["num_hidden_layers"] = 2
    raw["training"]["global_batch_size"] = 4
    raw["mapping"] = {"pp": 2, "tp": 2, "dp": 1, "micro_batch_size": 1, "recompute": "full"}
    path = work / "small-t18b.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _small_measurements(work: Path) -> Path:
    """Two small training cases and the calibration cases of the shipped file."""
    shipped = yaml.safe_load((REPO / "validation" / "measurements.yaml").read_text())
    small = {
        "id": "small_gpt",
        "model": {"layers": 2, "hidden": 1024, "heads": 16, "seq_len": 1024, "vocab": 51200,
                  "global_batch": 8, "micro_batch": 1, "arch": "GPT"},
        "system": {"gpu": "NVIDIA Ampere (A100-class)", "num_gpus": 8, "tp": 8, "pp": 1,
                   "dp": 1, "nodes": 1},
        "training": {"precision": "mixed fp16", "activation_recompute": "full",
                     "sequence_parallel": False, "ddp_impl": "local"},
        "measured": {"tflops_per_gpu": 100.0, "iteration_time_s": 0.1},
    }  # fmt: skip
    zero = copy.deepcopy(small)
    zero.update(id="small_zero3")
    zero["system"].update(tp=1, dp=8, gpu="H100 SXM")
    zero["training"] = {"precision": "bf16", "zero_stage": 3}
    keep = [c for c in shipped["cases"] if str(c.get("id", "")).startswith("llmcompass")]
    path = work / "small-measurements.yaml"
    path.write_text(yaml.safe_dump({"schema": shipped["schema"], "cases": [small, zero, *keep]}))
    return path


def _small_sweep(work: Path, workload: Path) -> Path:
    spec = {
        "base": {"hw": str(REPO / "hw_configs" / "tx8-wafer.yaml"), "workload": str(workload)},
        "set": ["mapping.tp=2"],
        "grid": {"mapping.pp": [1, 2], "hw.system.link.bandwidth": ["128 GB/s"]},
    }
    path = work / "small-sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _small_serving(work: Path) -> Path:
    """The shipped one-H100 serving file cut to 5 requests: a serving run in a blink."""
    raw = yaml.safe_load((REPO / "serving" / "llama3-8b-h100.yaml").read_text())
    raw.setdefault("traffic", {})["num_requests"] = 5
    path = work / "small-serving.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tile_subset(work: Path, name: str, keep: Callable[[str], bool]) -> Path:
    """A copy of the shipped tile file with only the cases whose id ``keep`` accepts."""
    shipped = yaml.safe_load((REPO / "validation" / "tiles_measurements.yaml").read_text())
    cases = [c for c in shipped["cases"] if keep(str(c.get("id", "")))]
    path = work / name
    path.write_text(
        yaml.safe_dump({k: v for k, v in shipped.items() if k != "cases"} | {"cases": cases})
    )
    return path


def _small_tile_cases(work: Path) -> Path:
    """The n150's microbenchmarks of the shipped tile file (GEMMs, DRAM and host reads): what
    ``calibrate --tiles`` fits for it."""
    prefixes = ("tt_gemm_n150", "tt_dram_read_wh", "tt_host_read")
    return _tile_subset(work, "small-tile-cases.yaml", lambda i: i.startswith(prefixes))


def _small_sdpa_cases(work: Path) -> Path:
    """The p100a's SDPA device durations of the shipped tile file, both chunk regimes: what
    ``calibrate --tiles`` fits its two attention shares to."""
    return _tile_subset(work, "small-sdpa-cases.yaml", lambda i: i.startswith("tt_sdpa_p100a"))


def _small_tile_validation(work: Path) -> Path:
    """A case of each kind ``validate`` reads from the shipped tile file, quick to simulate:
    an end-to-end row, a GEMM, a DRAM read, a collective, an SDPA and a GEMV."""
    ids = {
        "tt_readme_llama32_1b_n150",
        "tt_gemm_n150_bf16_hifi4_2k_l1",
        "tt_dram_read_wh_n150",
        "tt_ccl_allreduce_wh_line2_1MiB",
        "tt_sdpa_p100a_llama8b_8x8_s4096",
        "waferllm_gemv_16k",
    }
    return _tile_subset(work, "small-tile-validation.yaml", ids.__contains__)


def _small_mapping(work: Path) -> Path:
    mapping = {
        "pp": 2, "tp": 2, "dp": 1, "micro_batch_size": 1, "schedule": "1f1b",
        "recompute": "selective", "placement": "snake", "partition": "layers",
        "dp_overlap": True, "tp_overlap": False, "grad_accumulation": "fused",
        "p2p_scatter_gather": True, "p2p_overlap": True, "virtual_stages": 1,
        "sequence_parallel": False, "zero": 0,
    }  # fmt: skip
    path = work / "mapping.yaml"
    path.write_text(yaml.safe_dump({"mapping": mapping}))
    return path


@dataclass(frozen=True)
class Kind:
    """An input kind: base files to mutate and the command that reads the mutated one."""

    name: str
    bases: tuple[Path, ...]
    argv: Callable[[Path, Path], list[str]]  # (mutated file or folder, scratch dir) -> argv
    folder: bool = False  # the input is a run folder: mutate one file in it


def kinds(work: Path, budgets: tuple[str, ...] = BUDGETS) -> dict[str, Kind]:
    """Every input kind with its base corpus, built in ``work``; commands that take ``--set``
    get ``budgets``."""
    small = _small_workload(work)
    measurements = _small_measurements(work)
    flags = ["--pp", "2", "--tp", "2", "--dp", "1", "--micro-batch", "1"]
    budget_args = [arg for b in budgets for arg in ("--set", b)]
    tiny_model = ["--set", "model.num_hidden_layers=2", "--set", "training.global_batch_size=4"]
    run = ["--no-plots", "-q"]
    hw = REPO / "hw_configs"

    def run_out(scratch: Path) -> list[str]:
        return ["--out", str(scratch / "run")]

    def validate(m: Path, s: Path) -> list[str]:
        return [
            "validate",
            str(m),
            "-q",
            "--jobs",  # cases in worker processes: what a mutated case does there too
            "2",
            "--case-timeout",
            "20",
            *budget_args,
            "--json",
            str(s / "v.json"),
        ]

    def tiles_calibrate(config: str) -> Callable[[Path, Path], list[str]]:
        return lambda m, s: ["calibrate", "--tiles", "--hw", str(hw / config), str(m)]

    folder = work / "run-folder"
    from palmsim.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        main(["run", "--workload", str(small), *budget_args, "-q", "--out", str(folder)])
    return {
        "hardware": Kind(
            "hardware",
            (hw / "tx8-wafer.yaml", hw / "dgx-h100.yaml", hw / "tx8-wafer-10x8.yaml"),
            lambda m, s: [
                "run",
                "--hw",
                str(m),
                "--workload",
                str(small),
                *flags,
                *tiny_model,
                *budget_args,
                *run,
                *run_out(s),
            ],
        ),
        "workload": Kind(
            "workload",
            (small, REPO / "workloads" / "llama2-7b.yaml", REPO / "workloads" / "bert-large.yaml"),
            lambda m, s: [
                "run",
                "--hw",
                str(hw / "dgx-h100.yaml"),
                "--workload",
                str(m),
                *budget_args,
                *run,
                *run_out(s),
            ],
        ),
        "mapping": Kind(
            "mapping",
            (_small_mapping(work),),
            lambda m, s: [
                "run",
                "--workload",
                str(small),
                "--mapping",
                str(m),
                *budget_args,
                *run,
                *run_out(s),
            ],
        ),
        "hf": Kind(
            "hf",
            (REPO / "workloads" / "hf" / "llama-2-7b.config.json",),
            lambda m, s: [
                "run",
                "--hw",
                str(hw / "dgx-h100.yaml"),
                "--workload",
                str(m),
                "--set",
                "training.seq_len=128",
                "--set",
                "training.global_batch_size=1",
                "--tp",
                "8",
                "--pp",
                "1",
                "--dp",
                "1",
                "--micro-batch",
                "1",
                *budget_args,
                *run,
                *run_out(s),
            ],
        ),
        "sweep": Kind(
            "sweep",
            (_small_sweep(work, small),),
            lambda m, s: [
                "sweep",
                str(m),
                "--out",
                str(s / "sweep"),
                "--jobs",
                "1",
                "-q",
                *budget_args,
            ],
        ),
        "validate": Kind("validate", (measurements,), validate),
        "calibrate": Kind(
            "calibrate",
            (measurements,),
            lambda m, s: [
                "calibrate",
                str(m),
                "--hw",
                str(hw / "dgx-a100-superpod.yaml"),
                "--gemm",
                "llmcompass_a100_gemm_fp16",
                "--memory",
                "llmcompass_a100_gelu_fp16",
                "--memory",
                "softmax=llmcompass_a100_softmax_fp16",
                "--allreduce",
                "llmcompass_a100x4_allreduce",
            ],
        ),
        "serving": Kind(
            "serving",
            (_small_serving(work),),
            lambda m, s: [
                "serve",
                "--serving",
                str(m),
                *budget_args,
                "--no-plots",
                "--out",
                str(s / "serve"),
            ],
        ),
        "tiles_calibrate": Kind(
            "tiles_calibrate", (_small_tile_cases(work),), tiles_calibrate("wormhole-n150.yaml")
        ),
        "tiles_sdpa": Kind(
            "tiles_sdpa", (_small_sdpa_cases(work),), tiles_calibrate("blackhole-p100a.yaml")
        ),
        "tiles_validate": Kind("tiles_validate", (_small_tile_validation(work),), validate),
        "run_folder": Kind(
            "run_folder",
            (folder,),
            lambda m, s: (
                ["report", str(m)]
                if s.name.endswith("0")
                else ["plot", "gantt", str(m), "--out", str(s / "g.png")]
            ),
            folder=True,
        ),
        "set": Kind(
            "set",
            (),  # mutated --set strings, not files
            lambda m, s: ["run", "--workload", str(small), *budget_args, *run, *run_out(s)],
        ),
        "flags": Kind(
            "flags",
            (),  # random combinations of run's flags on shipped configs, not files
            lambda m, s: ["run", *budget_args, *run, *run_out(s)],
        ),
    }


_SET_KEYS = (
    "hw.chip.noc.bandwidth", "hw.system.chips", "hw.tile.sram_capacity", "hw.dram.capacity",
    "hw.system.topology", "model.num_hidden_layers", "model.hidden_size", "model.vocab_size",
    "training.global_batch_size", "training.seq_len", "training.dtype", "mapping.pp",
    "mapping.tp", "mapping.micro_batch_size", "mapping.schedule", "mapping.virtual_stages",
    "mapping.zero", "run.seed", "run.max_events", "run.max_memory", "inference.batch",
    "workload.mode", "hw.chip.cores", "mapping.recompute",
)  # fmt: skip


def _mutated_set(rng: random.Random) -> tuple[list[str], str]:
    key = rng.choice(_SET_KEYS)
    if rng.random() < 0.2:
        key = _typo(key, rng)
    value = rng.choice((*_NUMBERS, *_STRINGS, "[5, 1e30]", "[5, 100000]", "[0, 1]"))
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    text = f"{key}={value}"
    # the budgets are part of this command; a mutated budget key is applied after them
    return ["--set", text], text


#: Shipped configs and the flags of ``palmsim run`` the "flags" kind combines: each legal in
#: its mode on its own, together often not (a degree with no experts, more tiles than the chip
#: has, a 2-D TP grid of the wrong shape); a refusal must be a one-line error, never an
#: internal one.
_FLAG_HARDWARE = (
    "wormhole-galaxy", "wormhole-t3000", "wormhole-n300", "blackhole-p150", "tx8-wafer-10x8",
    "dgx-h100", "dgx-a100", "cerebras-wse2",
)  # fmt: skip
_FLAG_WORKLOADS = (
    "llama3-8b", "llama3.1-70b", "mixtral-8x7b", "qwen3-30b-a3b", "t-18b", "nemotron-3-nano",
    "gpt-oss-120b", "deepseek-v3", "llama4-scout",
)  # fmt: skip
#: (flag or --set key, values, the modes it applies to)
_FLAG_CHOICES: tuple[tuple[str, tuple[Any, ...], tuple[str, ...]], ...] = (
    ("--tp", (1, 2, 4, 8), ("training", "inference")),
    ("--pp", (1, 2, 4), ("training", "inference")),
    ("--dp", (1, 2, 4), ("training", "inference")),
    ("--ep", (1, 2, 4, 8), ("training", "inference")),
    ("--micro-batch", (1, 2, 4), ("training", "inference")),
    ("--placement", ("snake", "row_major", "stage_major"), ("training", "inference")),
    ("--cp", (1, 2), ("training",)),
    ("--expert-tp", (1, 2), ("training",)),
    ("--recompute", ("none", "selective", "full"), ("training",)),
    ("--zero", (0, 1, 2, 3), ("training",)),
    ("--schedule", ("gpipe", "1f1b"), ("training",)),
    ("--virtual-stages", (1, 2), ("training",)),
    ("mapping.tp_comm_overlap", ("true", "false"), ("training",)),
    ("mapping.dp_overlap", ("true", "false"), ("training",)),
    ("mapping.moe_a2a_overlap", ("true", "false"), ("training",)),
    ("training.dtype", ("bf16", "fp8"), ("training",)),
    ("mapping.tp_2d", ("[8,1]", "[1,8]", "[2,2]", "[4,2]", "[8,4]"), ("inference",)),
    ("run.memory_check", ("false",), ("training", "inference")),  # on to the engine
)


def _mutated_flags(rng: random.Random) -> tuple[list[str], str]:
    """A random run: a shipped hardware and workload at a few tokens, a mode, and a random
    subset of the :data:`_FLAG_CHOICES` of that mode."""
    hw = REPO / "hw_configs" / f"{rng.choice(_FLAG_HARDWARE)}.yaml"
    workload = REPO / "workloads" / f"{rng.choice(_FLAG_WORKLOADS)}.yaml"
    mode = rng.choice(("training", "inference"))
    extra = ["--hw", str(hw), "--workload", str(workload), "--mode", mode]
    small = ["training.seq_len=128", "training.global_batch_size=8"]
    if mode == "inference":
        small = ["inference.prompt_len=16", "inference.output_len=2"]
        small.append(f"inference.batch={rng.choice((1, 4, 8))}")
    for text in small:
        extra += ["--set", text]
    for key, values, modes in _FLAG_CHOICES:
        if mode in modes and rng.random() < 0.3:
            value = rng.choice(values)
            extra += [key, str(value)] if key.startswith("--") else ["--set", f"{key}={value}"]
    return extra, f"{hw.stem} {workload.stem} " + " ".join(extra[4:])


# --------------------------------------------------------------------------- running


def run_child(
    argv: list[str],
    timeout_s: float,
    memory_cap_bytes: int,
    entry: Callable[[list[str]], int] | None = None,
) -> tuple[Any, ...]:
    """Run ``palmsim.cli.main(argv)`` (or ``entry(argv)``) in a forked child that can never
    block the harness.

    The child starts a session of its own (so it and anything it starts form one process
    group), writes its stdout, stderr and result to temporary files (no pipe a grandchild
    could hold open), and has its address space capped at ``memory_cap_bytes`` so a runaway
    input cannot take the machine down. At ``timeout_s`` the whole group is killed.

    Returns (exit code or None if killed or dead, seconds, peak RSS in bytes, traceback text,
    the command's stderr). The peak RSS is ``ru_maxrss`` from ``os.wait4``: on Linux the
    largest of the child and the descendants it reaped.
    """
    with tempfile.TemporaryDirectory(prefix="palmsim-fuzz-child-") as tmp:
        out_path, err_path, result_path = (Path(tmp) / n for n in ("out", "err", "result"))
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child
            code, tb = 1, ""
            try:
                os.setsid()
                for fd, path in ((1, out_path), (2, err_path)):
                    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(target, fd)
                    os.close(target)
                # the Python streams too: a harness (pytest) may have pointed them elsewhere
                sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
                resource.setrlimit(resource.RLIMIT_AS, (memory_cap_bytes, memory_cap_bytes))
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                if entry is None:
                    from palmsim.cli import main as entry

                code = entry(argv)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            except BaseException:
                tb = traceback.format_exc()
            try:
                result_path.write_text(json.dumps({"code": code, "tb": tb}), encoding="utf-8")
            finally:
                os._exit(0)
        killed = False
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > timeout_s:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                killed = True
                break
            time.sleep(0.005)
        seconds = time.monotonic() - start
        # a grandchild the command left behind dies with its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        rss = int(usage.ru_maxrss) * 1024  # Linux: KiB
        err = err_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        text = result_path.read_text(encoding="utf-8") if result_path.exists() else ""
    printed = err.find("Traceback (most recent call last)")
    if killed:
        return None, seconds, rss, "", "killed at the time limit"
    if not text:
        return None, seconds, rss, f"child died (status {status})", err
    data = json.loads(text)
    # a traceback printed by anything the command ran counts as much as one it raised
    return data["code"], seconds, rss, data["tb"] or (err[printed:] if printed >= 0 else ""), err


def fuzz_kind(
    kind: Kind,
    count: int,
    seed: int,
    scratch_root: Path,
    *,
    timeout_s: float = 60.0,
    memory_cap_bytes: int = 4 * 2**30,
) -> list[Outcome]:
    """``count`` seeded mutations of ``kind``, each run in a child; their outcomes."""
    rng = random.Random(f"{seed}:{kind.name}")
    outcomes = []
    for index in range(count):
        scratch = scratch_root / f"{kind.name}-{index}"
        scratch.mkdir(parents=True)
        if kind.name in ("set", "flags"):
            extra, what = (_mutated_set if kind.name == "set" else _mutated_flags)(rng)
            argv = kind.argv(Path(), scratch) + extra
        elif kind.folder:
            base = rng.choice(kind.bases)
            target = scratch / "run"
            shutil.copytree(base, target)
            suffixes = {".yaml", ".json", ".csv", ".npz"}
            files = sorted(p for p in target.rglob("*") if p.suffix in suffixes)
            victim = rng.choice(files)
            if victim.suffix == ".npz":
                what = f"{victim.name}: " + _mutate_npz(victim, rng)
            elif victim.suffix == ".csv" or rng.random() < 0.2:
                if rng.random() < 0.2:
                    victim.unlink()
                    what = f"deleted {victim.name}"
                else:
                    text, what = mutate_text(victim.read_text(encoding="utf-8"), rng)
                    victim.write_text(text, encoding="utf-8")
                    what = f"{victim.name}: {what}"
            else:
                what = f"{victim.name}: " + _mutate_file(victim, victim, rng)
            argv = kind.argv(target, scratch)
        else:
            base = rng.choice(kind.bases)
            target = scratch / base.name
            what = f"{base.name}: " + _mutate_file(base, target, rng)
            argv = kind.argv(target, scratch)
        code, seconds, rss, tb, err = run_child(argv, timeout_s, memory_cap_bytes)
        outcomes.append(Outcome(kind.name, index, code, seconds, rss, tb, err.strip()[-300:], what))
        shutil.rmtree(scratch, ignore_errors=True)
    return outcomes


def summarize(outcomes: list[Outcome]) -> str:
    """A table: per kind, mutations, exit codes, failures, slowest and largest child."""
    lines = [
        f"{'kind':<11} {'runs':>5} {'exit 0':>6} {'2':>5} {'3':>5} {'5':>5} {'bad':>4} "
        f"{'max s':>7} {'max RSS':>9}"
    ]
    for name in dict.fromkeys(o.kind for o in outcomes):
        mine = [o for o in outcomes if o.kind == name]
        codes = [o.exit_code for o in mine]
        lines.append(
            f"{name:<11} {len(mine):>5} {codes.count(0):>6} {codes.count(2):>5} "
            f"{codes.count(3):>5} {codes.count(5):>5} {sum(not o.ok for o in mine):>4} "
            f"{max(o.seconds for o in mine):>7.2f} "
            f"{max(o.max_rss_bytes for o in mine) / 2**20:>6.0f} MiB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line of the long fuzz run; exit 1 if any mutation failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=1000, help="mutations of each kind")
    parser.add_argument("--kinds", help="comma-separated kinds (default: all)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutation")
    parser.add_argument("--max-rss", type=float, default=2.0, help="GiB a child may reach")
    parser.add_argument(
        "--max-events", type=int, default=100_000, help="run.max_events of every command"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palmsim-fuzz-"))
    try:
        table = kinds(work, (f"run.max_events={args.max_events}", BUDGETS[1]))
        names = args.kinds.split(",") if args.kinds else list(table)
        unknown = [name for name in names if name not in table]
        if unknown:
            parser.error(f"--kinds: {', '.join(unknown)} not one of {', '.join(table)}")
        outcomes: list[Outcome] = []
        started = time.monotonic()
        for name in names:
            found = fuzz_kind(table[name], args.per_kind, args.seed, work, timeout_s=args.timeout)
            outcomes += found
            print(f"{name}: {len(found)} mutations, {time.monotonic() - started:.0f} s", flush=True)
        print(summarize(outcomes))
        limit = args.max_rss * 2**30
        bad = [o for o in outcomes if not o.ok or o.max_rss_bytes > limit]
        for o in bad:
            print(f"FAIL {o.kind}#{o.index} exit {o.exit_code} ({o.mutation}): "
                  f"{(o.traceback or o.message).strip().splitlines()[-1:]}")  # fmt: skip
        print(f"{len(outcomes)} mutations, {len(bad)} failed, seed {args.seed}")
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
