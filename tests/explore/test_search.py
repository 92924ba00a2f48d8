"""``palmsim search``: the analytical bound is a true lower bound, and branch and bound finds
the brute-force best."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from palmsim.api import simulate
from palmsim.cli import main
from palmsim.errors import ConfigError, MappingError
from palmsim.explore.bound import iteration_lower_bound_s
from palmsim.explore.search import SearchSpace, enumerate_mappings, pareto_front, search
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import CollectiveStep, ComputeStep
from tests.conftest import cluster_spec, experiment, gpt_model, wafer_spec

REPO = Path(__file__).resolve().parents[2]


def _random_cases(n: int) -> list[dict]:
    rng = np.random.default_rng(20261123)
    cases: list[dict] = []
    while len(cases) < n:
        pp, tp, dp = (int(rng.choice(v)) for v in ([1, 2, 4], [1, 2, 4], [1, 2]))
        if pp * tp * dp > 16:
            continue
        mbs = int(rng.choice([1, 2]))
        m = int(rng.choice([1, 2, 4]))
        v = int(rng.choice([1, 2])) if pp > 1 and m % pp == 0 else 1
        cases.append(
            {
                "cluster": bool(rng.integers(2)),
                "sram": float(rng.choice([64 * 2**10, 3 * 2**20, 1e12])),
                "mapping": {
                    "pp": pp,
                    "tp": tp,
                    "dp": dp,
                    "micro_batch_size": mbs,
                    "virtual_stages": v,
                    "schedule": "1f1b" if v > 1 else str(rng.choice(["gpipe", "1f1b"])),
                    "recompute": str(rng.choice(["none", "selective", "full"])),
                    "placement": str(rng.choice(["snake", "row_major"])),
                    "zero": int(rng.choice([0, 1, 3])),
                    "sequence_parallel": bool(rng.integers(2)),
                    "tp_overlap": bool(rng.integers(2)),
                    "p2p_scatter_gather": bool(rng.integers(2)),
                    "p2p_overlap": bool(rng.integers(2)),
                    "grad_accumulation": str(
                        rng.choice(["fused", "every_microbatch", "after_first_microbatch"])
                    ),
                },
                "batch": m * mbs * dp,
            }
        )
    return cases


@pytest.mark.parametrize("case", _random_cases(24), ids=[str(i) for i in range(24)])
def test_bound_never_exceeds_the_simulated_time(case: dict) -> None:
    hw = cluster_spec(nodes=2) if case["cluster"] else wafer_spec(sram_bytes=case["sram"])
    model = gpt_model(layers=8, hidden=256, heads=4, vocab=512, seq=128)
    exp = experiment(hw, model, seq=128, batch=case["batch"], **case["mapping"])
    chip = Chip.from_spec(hw)
    try:
        plan = map_workload(exp, chip)
    except MappingError:
        pytest.skip("infeasible random case")
    bound = iteration_lower_bound_s(plan, chip)
    simulated = simulate(exp).trace.end_time_s
    assert 0 < bound <= simulated * (1 + 1e-12)


def test_pareto_front() -> None:
    points = [(3.0, 1.0), (1.0, 3.0), (2.0, 2.0), (2.5, 2.5), (1.0, 4.0), (4.0, 1.0)]
    assert pareto_front(points) == [1, 2, 0]


def _small():
    hw = wafer_spec(dies=(1, 2), tiles=(2, 2), dram_placement="per_tile")  # 8 tiles
    model = gpt_model(layers=4, hidden=256, heads=4, vocab=512, seq=128)
    return experiment(hw, model, seq=128, batch=8)


def test_search_finds_the_brute_force_best() -> None:
    """On an 8-tile wafer, every all-tile mapping simulated by brute force: the search's best
    is the fastest of them, and its top 3 are the brute-force top 3."""
    base = _small()
    space = SearchSpace(schedule=("1f1b",), placement=("snake",))
    times = {}
    for mapping in enumerate_mappings(base, 8, space):
        exp = dataclasses.replace(base, mapping=mapping)
        try:
            times[mapping] = simulate(exp).trace.end_time_s
        except MappingError:
            continue
    assert len(times) >= 10
    result = search(base, top=3, space=space, jobs=1)
    best = sorted(times.values())[:3]
    assert [c.summary["iteration_time_s"] for c in result.best] == best
    assert result.count("simulated") + result.count("pruned") == len(times)
    assert result.count("pruned") > 0  # the bound saved simulations
    for c in result.candidates:
        if c.status == "pruned":
            assert c.lower_bound_s >= best[2]


def test_search_cli_writes_results_and_pareto(tmp_path, capsys) -> None:
    args = [
        "search",
        "--hw",
        str(REPO / "hw_configs" / "dgx-h100.yaml"),
        "--workload",
        str(REPO / "workloads" / "llama2-7b.yaml"),
        "--set",
        "model.num_hidden_layers=2",
        "--set",
        "training.global_batch_size=32",
        "--set",
        "hw.system.chips=[1, 8]",
        "--schedule",
        "1f1b",
        "--recompute",
        "none",
        "--placement",
        "snake",
        "--top",
        "2",
        "--jobs",
        "1",
        "--out",
        str(tmp_path),
        "-q",
    ]
    import os
    from pathlib import Path

    os.chdir(Path(__file__).resolve().parents[2])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mappings enumerated" in out and "simulated" in out
    assert (tmp_path / "results.csv").exists() and (tmp_path / "pareto.png").exists()
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("pp,tp,dp,micro_batch_size")
    statuses = [line.split(",")[7] for line in lines[1:]]
    assert set(statuses) <= {"infeasible", "pruned", "simulated"}
    assert statuses.count("simulated") >= 2


def test_a_capped_search_says_it_is_not_proven() -> None:
    base = _small()
    space = SearchSpace(schedule=("1f1b",), placement=("snake",))
    capped = search(base, top=3, space=space, jobs=1, max_simulations=2)
    assert not capped.proven
    assert capped.count("simulated") == 2 and capped.count("unexplored") > 0
    assert search(base, top=3, space=space, jobs=1).proven


def test_an_interrupted_search_keeps_its_rows_and_a_rerun_resumes(tmp_path) -> None:
    """Ctrl-C after the first batch leaves results.csv with the finished rows; the rerun takes
    those from the folder (a doctored kept figure shows it did not simulate them again) and
    ends with the uninterrupted search's candidates and ranking."""
    import csv

    from palmsim.report.export import read_json, write_json

    base = _small()
    space = SearchSpace(schedule=("1f1b",), placement=("snake",))
    whole = search(base, top=3, space=space, jobs=1)

    def stop(line: str) -> None:
        if "simulating:" in line and "best" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(base, top=3, space=space, jobs=1, out_dir=tmp_path, progress=stop)
    with (tmp_path / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    done = [r for r in rows if r["status"] == "simulated"]
    assert len(done) == 1 and float(done[0]["iteration_time_s"]) > 0
    points = sorted((tmp_path / "points").glob("*.json"))
    assert len(points) == 1

    kept = read_json(points[0])
    kept["summary"]["mfu"] = -1.0  # no simulation gives this
    write_json(points[0], kept)
    resumed = search(base, top=3, space=space, jobs=1, out_dir=tmp_path)
    assert [c.status for c in resumed.candidates] == [c.status for c in whole.candidates]
    assert [c.mapping for c in resumed.best] == [c.mapping for c in whole.best]
    doctored = [c for c in resumed.candidates if c.summary.get("mfu") == -1.0]
    assert len(doctored) == 1
    assert len(list((tmp_path / "points").glob("*.json"))) == whole.count("simulated")


def test_search_reports_progress_with_mappings_left_best_and_gap() -> None:
    base = _small()
    space = SearchSpace(schedule=("1f1b",), placement=("snake",))
    lines: list[str] = []
    search(base, top=3, space=space, jobs=1, progress=lines.append, progress_interval_s=0.01)
    assert any("left to map" in line for line in lines) or lines[0].endswith("feasible")
    best = [line for line in lines if "best" in line]
    assert best and all("mappings left" in line for line in best)
    assert any("gap" in line for line in best)


def test_bound_counts_the_tensor_parallel_ranks_that_share_a_dram_port() -> None:
    """Between two of its TP all-reduces every rank runs the same steps, from the moment the
    first all-reduce releases them all: the ranks on one DRAM port move their bytes together,
    so such a run of steps lasts at least ``n·bytes/B`` for ``n`` ranks on a port of bandwidth
    ``B``, beside each step's own ``max(compute, bytes/B)`` (the port is each route's
    narrowest channel here). Two of the four ranks share each port; attention is port-bound
    that way, the MLP compute-bound."""
    dram_bw = 256e9
    hw = wafer_spec(dies=(1, 1), tiles=(4, 4), dram_bw=dram_bw)
    model = gpt_model(layers=4, hidden=1024, heads=8, vocab=512, seq=128)
    m, mbs = 4, 32
    exp = experiment(
        hw, model, seq=128, batch=m * mbs, pp=1, tp=4, dp=1, micro_batch_size=mbs,
        recompute="none", placement="row_major",
    )  # fmt: skip
    chip = Chip.from_spec(hw)
    plan = map_workload(exp, chip)
    ports = [dict(plan.dram_port_of_tile)[t] for t in plan.stage_tiles[0][0]]
    assert sorted(ports.count(p) for p in set(ports)) == [2, 2]
    # each run of compute steps between two TP collectives, in both passes
    runs_s = runs_alone_s = 0.0
    program = plan.programs[0]
    for steps in (program.forward, program.recompute + program.backward):
        alone_s = together_s = 0.0
        for step in steps:
            if isinstance(step, ComputeStep):
                nbytes = step.dram_read_bytes + step.dram_write_bytes
                alone_s += max(step.compute_time_s, nbytes / dram_bw)
                together_s += 2 * nbytes / dram_bw
            elif isinstance(step, CollectiveStep):
                if step is not steps[0] and together_s > 0:  # not the run before the first
                    runs_s += max(alone_s, together_s)
                    runs_alone_s += alone_s
                alone_s = together_s = 0.0
    assert runs_s > 1.05 * runs_alone_s  # the shared port binds
    bound = iteration_lower_bound_s(plan, chip)
    assert bound >= m * runs_s
    assert bound <= simulate(exp).trace.end_time_s * (1 + 1e-12)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--pp", "0"], "command line: --pp: got 0; expected ints >= 1"),
        (["--micro-batch", "0"], "command line: --micro-batch: got 0"),
        (["--dp", "0"], "command line: --dp: got 0"),
        (["--tp", "-4"], "command line: --tp: got -4"),
        (["--pp", "4,4"], "command line: --pp: got '4,4'; expected distinct values"),
        (
            ["--schedule", "nosuch"],
            "command line: --schedule: got 'nosuch'; expected one of 1f1b, gpipe",
        ),
        (["--schedule", ",,"], "command line: --schedule: got ''"),
        (["--placement", "snak"], "(did you mean 'snake'?)"),
        (
            ["--recompute", "nosuch"],
            "command line: --recompute: got 'nosuch'; expected one of none,",
        ),
        (["--jobs", "0"], "command line: --jobs: got 0; expected an int >= 1"),
        (["--max-simulations", "-1"], "command line: --max-simulations: got -1"),
        (["--replicas", "2"], "--replicas: it applies only to --objective goodput"),
        (["--max-num-seqs", "4"], "--max-num-seqs: it applies only to --objective goodput"),
        (["--serving", "serving/x.yaml"], "--serving: it applies only to --objective goodput"),
        (
            ["--objective", "goodput", "--schedule", "1f1b"],
            "--schedule: it applies only to a mapping",
        ),
        (["--objective", "goodput", "--pp", "0"], "command line: --pp: got 0"),
        (["--objective", "goodput", "--replicas", "-1"], "command line: --replicas: got -1"),
        (["--objective", "goodput", "--top", "0"], "command line: --top: got 0"),
        (["--tp-2d", "4x2"], "--tp-2d: it applies only to --objective goodput"),
        (["--objective", "goodput", "--tp-2d", "0x4"], "--tp-2d: got '0x4'; expected AxB with"),
        (["--objective", "goodput", "--tp-2d", "4x2,4X2"], "expected distinct layouts"),
        (
            ["--objective", "goodput", "--tp", "4", "--tp-2d", "4x2"],
            "--tp-2d: got '4x2'; expected layouts of the --tp values 4 (4x2 has tp = 8)",
        ),
    ],
)
def test_search_refuses_a_bad_option_in_one_line(flags, named, tmp_path, capsys) -> None:
    """A value no search can take, or a flag the objective would ignore, is a ConfigError
    naming the flag, before anything is loaded or simulated."""
    if "goodput" in flags:
        small = ["--serving", str(REPO / "serving/llama3-8b-h100-node.yaml")]
        small += ["--set", "serving.traffic.num_requests=20"]
    else:
        small = ["--hw", str(REPO / "hw_configs/dgx-h100.yaml"), "--workload"]
        small += [str(REPO / "workloads/llama2-7b.yaml"), "--set", "model.num_hidden_layers=2"]
        small += ["--set", "training.global_batch_size=32", "--set", "hw.system.chips=[1, 8]"]
    args = ["search", *small, "--max-simulations", "1", *flags, "--out", str(tmp_path / "out")]
    assert main([*args, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError: ") and err.count("\n") == 1
    assert named in err
    assert not (tmp_path / "out").exists()


def test_search_refuses_an_inference_workload(tmp_path, capsys) -> None:
    """search ranks training mappings (its bounds and memory check are training's): an
    inference workload searched as if it trained, gradients and optimizer state in every
    memory check; it is now a ConfigError naming the mode."""
    small = ["--hw", str(REPO / "hw_configs/wormhole-t3000.yaml"), "--workload"]
    small += [str(REPO / "workloads/llama2-7b.yaml"), "--set", "workload.mode=inference"]
    assert main(["search", *small, "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError: ") and err.count("\n") == 1
    assert "mode: got 'inference'; expected training: palmsim search ranks training" in err


def test_search_refuses_an_out_inside_a_file_before_simulating(tmp_path, capsys) -> None:
    """An --out that is a file was a NotADirectoryError once the first simulation ended."""
    (tmp_path / "file").write_text("x")
    small = ["--hw", str(REPO / "hw_configs/dgx-h100.yaml"), "--workload"]
    small += [str(REPO / "workloads/llama2-7b.yaml"), "--set", "model.num_hidden_layers=2"]
    small += ["--set", "training.global_batch_size=32", "--set", "hw.system.chips=[1, 8]"]
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["search", *small, "--max-simulations", "1", "--out", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith("palmsim: ConfigError: command line: --out: ") and err.count("\n") == 1
        )
        assert f"expected a folder ({tmp_path / 'file'} is a file)" in err


def test_search_checks_its_space_without_the_cli() -> None:
    """The library call refuses the same values (a zero divided the enumeration before)."""
    for space in (
        SearchSpace(pp=(0,)),
        SearchSpace(micro_batch_size=(0,)),
        SearchSpace(recompute=("nosuch",)),
    ):
        with pytest.raises(ConfigError):
            search(_small(), space=space, jobs=1)
    with pytest.raises(ConfigError, match="--jobs"):
        search(_small(), jobs=-2)


@pytest.mark.parametrize(
    ("space", "why"),
    [
        # 8 tiles: 3 divides no tp x pp of them; pp 8 is more than the 4 layers
        (SearchSpace(pp=(3,)), "no tp x pp of the space (tp: every divisor, --pp 3) divides the 8"),
        (SearchSpace(tp=(1,), pp=(8,)), "with pp at most the 4 layers"),
        # tp x pp = 1 or 2 leaves dp 8 or 4; --dp 3 is neither
        (SearchSpace(tp=(1,), pp=(1, 2), dp=(3,)), "sizes the tiles leave (4,8) are not in --dp 3"),
        # dp 8 gives each rank 1 of the batch of 8, which a micro-batch of 3 does not divide
        (SearchSpace(tp=(1,), pp=(1,), micro_batch_size=(3,)), "--micro-batch 3 divides"),
    ],
)
def test_an_empty_search_space_says_which_condition_emptied_it(space, why) -> None:
    """A space that holds no mapping of the tiles was a search of 0 mappings that exited 0
    with an empty table; it is a MappingError naming the condition no value met."""
    with pytest.raises(MappingError, match="nothing to search: ") as error:
        search(_small(), space=space, jobs=1)
    assert why in str(error.value)


def test_infeasible_reasons_group_reasons_alike_but_for_their_numbers() -> None:
    from palmsim.explore.search import Candidate, infeasible_reasons

    m = _small().mapping
    cands = [
        Candidate(m, "infeasible", "tp=5 does not divide num_attention_heads=32"),
        Candidate(m, "infeasible", "model does not fit: 160 GB"),
        Candidate(m, "infeasible", "tp=25 does not divide num_attention_heads=32"),
        Candidate(m, "simulated"),
        Candidate(m, "infeasible", "tp=125 does not divide num_attention_heads=32"),
    ]
    assert infeasible_reasons(cands) == [
        (3, "tp=5 does not divide num_attention_heads=32"),
        (1, "model does not fit: 160 GB"),
    ]
    assert infeasible_reasons(cands, top=1) == [(3, "tp=5 does not divide num_attention_heads=32")]


def test_a_search_with_no_feasible_mapping_prints_why(tmp_path, capsys) -> None:
    """Every mapping infeasible printed an empty table under its header: the reasons were
    only in results.csv. Llama-2 7B on one GPU with pp = tp = 1 overflows its 80 GB."""
    small = ["--hw", str(REPO / "hw_configs/dgx-h100.yaml"), "--workload"]
    small += [str(REPO / "workloads/llama2-7b.yaml"), "--set", "hw.system.chips=[1, 1]"]
    small += ["--set", "training.global_batch_size=4", "--pp", "1", "--tp", "1"]
    assert main(["search", *small, "--out", str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "no mapping is feasible; the commonest reasons" in out
    assert "like: model does not fit" in out and "rank  mapping" not in out
