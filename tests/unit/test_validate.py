"""``palmsim validate``: case translation, the figures it predicts, skips, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from palmsim.cli import EXIT_VALIDATION_FAILED, main
from palmsim.config.loader import read_config_file
from palmsim.engine.records import IntervalRecord, RunTrace
from palmsim.errors import ConfigError
from palmsim.validate import (
    Comparison,
    NotRunError,
    ValidationReport,
    _layer_times_s,
    case_setup,
    format_report,
    read_training_run,
    report_from_dict,
    validate,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "validation" / "measurements.yaml").read_text())["cases"]


def _case(case_id: str) -> dict:
    return next(c for c in SHIPPED if c["id"] == case_id)


def test_shipped_copies_are_the_calibration_set_unedited() -> None:
    """validation/{hw_specs,measurements}.yaml are the calibration set's files, unedited: their
    SHA-256 sums are the ones recorded when they were copied (validation/SHA256SUMS), and where
    the calibration set lies beside the checkout (../shared/calibration), they equal it."""
    import hashlib

    folder = REPO / "validation"
    recorded = dict(
        reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines()
    )
    assert sorted(recorded) == ["hw_specs.yaml", "measurements.yaml"]
    for name, digest in recorded.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        shared = REPO.parent / "shared" / "calibration" / name
        if shared.exists():  # an extra check where the calibration set is at hand
            assert (folder / name).read_bytes() == shared.read_bytes(), name


def test_megatron_case_becomes_its_experiment() -> None:
    """SC21 Table 1 18.4B: 256 A100s = 32 nodes, TP=8, DP=32, micro-batch 8, full recompute."""
    hw, workload, overrides, flags = case_setup(_case("narayanan21_t1_18.4B"))
    assert hw.endswith("dgx-a100-superpod.yaml")
    assert workload.endswith("t-18b.yaml")
    assert flags == {
        "pp": 1,
        "tp": 8,
        "dp": 32,
        "micro_batch_size": 8,
        "recompute": "full",
        "schedule": "1f1b",
        "sequence_parallel": False,
        "virtual_stages": 1,
        "dp_overlap": True,  # ddp_impl: torch reduces buckets during the backward
        "tp_overlap": False,  # SC21's Megatron-LM had no asynchronous TP all-reduce
        "tp_comm_overlap": False,  # nor Transformer Engine's userbuffers
        "grad_accumulation": "after_first_microbatch",  # PyTorch DDP: autograd accumulates
        "p2p_scatter_gather": False,  # scatter_gather_opt: false
        "p2p_overlap": False,  # Megatron-LM's default: a stage waits for its sends
        "cp": 1,
        "ep": 1,
        "placement": "stage_major",  # Megatron's rank order: pipeline stages outermost
    }
    for expected in (
        "model.hidden_size=6144",
        "model.num_attention_heads=48",
        "model.num_hidden_layers=40",
        "model.intermediate_size=24576",
        "training.seq_len=2048",
        "training.global_batch_size=1024",
        "training.dtype=fp16",
        "hw.system.chips=[32, 8]",  # 256 GPUs, 8 per DGX node
    ):
        assert expected in overrides


@pytest.mark.parametrize(
    ("case_id", "reason"),
    [
        ("llmcompass_a100_gemm_fp16", "not a training run"),
    ],
)
def test_inexpressible_cases_are_listed_with_the_reason(case_id: str, reason: str) -> None:
    report = validate(only=[case_id])
    assert report.comparisons == ()
    assert len(report.skipped) == 1 and reason in report.skipped[0].reason


def test_tflops_per_gpu_is_megatron_eq3_over_the_simulated_iteration() -> None:
    """Predicted TFLOP/s per GPU = SC21 Eq. 3, 96·B·s·l·h²·(1 + s/6h + V/16lh), / (T · n)."""
    report = validate(only=["narayanan21_t1_1.7B"])
    comparison, aggregate, share = report.comparisons
    b, s, layers, h, v, n = 512, 2048, 24, 2304, 51200, 32
    eq3_flop = 96 * b * s * layers * h**2 * (1 + s / (6 * h) + v / (16 * layers * h))
    assert eq3_flop == pytest.approx(1.5467e16, rel=1e-4)  # the case's own derived value
    hw, workload, overrides, flags = case_setup(_case("narayanan21_t1_1.7B"))
    from palmsim.api import load_experiment, simulate

    result = simulate(load_experiment(hw, workload, overrides=overrides, mapping_flags=flags))
    expected_tflops = eq3_flop / (result.trace.end_time_s * n) / 1e12
    assert comparison.metric == "tflops_per_gpu"
    assert comparison.measured == 137
    assert comparison.predicted == pytest.approx(expected_tflops, rel=1e-9)
    # the row's other spellings of the same figure: over its 32 GPUs, and of the A100's 312
    assert (aggregate.metric, share.metric) == ("aggregate_pflops", "pct_of_312tflops_peak")
    assert aggregate.predicted == pytest.approx(expected_tflops * n / 1e3, rel=1e-9)
    assert share.predicted == pytest.approx(100 * expected_tflops / 312, rel=1e-9)


def _interval(
    category: str, phase: str, layer: int, start_s: float, end_s: float, mb: int = 0
) -> IntervalRecord:
    """An interval with its typed identity; the label says nothing (nothing parses it)."""
    return IntervalRecord(0, category, start_s, end_s, 0, mb, "x", 0.0, 0.0, phase, layer)


def test_layer_times_sum_the_layers_work_including_tp_waits_and_recompute() -> None:
    intervals = (
        _interval("forward", "forward", -1, 0.0, 1.0),  # the embedding
        _interval("forward", "forward", 0, 1.0, 2.0),
        _interval("comm", "forward", 0, 2.0, 2.5),
        _interval("forward", "forward", 0, 2.5, 4.0),
        _interval("forward", "forward", 1, 4.0, 5.0),
        _interval("recompute", "recompute", 0, 6.0, 7.0),
        _interval("comm", "recompute", 0, 7.0, 7.5),
        _interval("backward", "backward", -1, 7.5, 8.0),  # the head, between recompute and B
        _interval("backward", "backward", 0, 8.0, 10.0),
        _interval("comm", "backward", 0, 10.0, 10.25),
        _interval("forward", "forward", 0, 20.0, 30.0, mb=1),  # another micro-batch: ignored
    )
    trace = RunTrace(intervals, (), (), 30.0, 0, 0.0)
    # forward 1 + 0.5 + 1.5; backward 1 + 0.5 (recompute and its wait) + 2 + 0.25
    assert _layer_times_s(trace, 0) == {"forward": 3.0, "backward": 3.75}


def test_mean_absolute_percentage_error() -> None:
    report = ValidationReport(
        "x", (Comparison("a", "m", 100.0, 110.0), Comparison("b", "m", 50.0, 40.0)), ()
    )
    assert report.comparisons[0].relative_error == pytest.approx(0.10)
    assert report.comparisons[1].relative_error == pytest.approx(-0.20)
    assert report.mean_absolute_percentage_error == pytest.approx(15.0)


def test_end_to_end_figures_and_microbenchmarks_are_summarised_apart() -> None:
    """Issue 14 holds end-to-end figures and microbenchmarks to different errors: the table
    gives each kind's mean beside the overall one (10% and 20% apart: 10%; 30%: 30%), --json
    keeps each figure's kind and each kind's mean, and reads them back; a file of one kind
    prints the overall line alone."""
    report = ValidationReport(
        "x",
        (
            Comparison("run", "tokens_per_s", 100.0, 110.0),
            Comparison("run", "ttft_ms", 50.0, 40.0),
            Comparison("gemm", "time_us", 10.0, 13.0, kind="microbenchmark"),
        ),
        (),
    )
    assert report.mean_absolute_percentage_error == pytest.approx(20.0)
    by_kind = report.errors_by_kind
    assert by_kind["end_to_end"] == (pytest.approx(15.0), 2)
    assert by_kind["microbenchmark"] == (pytest.approx(30.0), 1)
    table = format_report(report)
    assert "  end to end: 15.0% over 2 figures" in table
    assert "  microbenchmarks: 30.0% over 1 figure" in table
    data = json.loads(json.dumps(report.as_dict()))
    assert data["mean_absolute_percentage_error_by_kind"] == pytest.approx(
        {"end_to_end": 15.0, "microbenchmark": 30.0}
    )
    assert [r["kind"] for r in data["comparisons"]] == ["end_to_end"] * 2 + ["microbenchmark"]
    assert report_from_dict(data, "v.json").errors_by_kind == by_kind
    data["comparisons"][2]["kind"] = "micro"
    with pytest.raises(ConfigError, match=r"comparisons\[2\].*end_to_end, microbenchmark"):
        report_from_dict(data, "v.json")
    one_kind = ValidationReport("x", report.comparisons[:2], ())
    assert "end to end:" not in format_report(one_kind)


def test_a_file_with_no_predicted_figure_says_so_in_the_table_and_writes_valid_json(
    tmp_path: Path, capsys
) -> None:
    """Only a single-operator case: nothing is predicted, so there is no mean to print (it
    was 'nan%'), and ``--json`` writes null (NaN is not JSON)."""
    out = tmp_path / "v.json"
    single_op = REPO / "validation" / "blackwell_measurements.yaml"
    assert main(["validate", str(single_op), "--json", str(out)]) == 0
    assert "mean absolute percentage error: no figure predicted" in capsys.readouterr().out
    data = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(name))
    assert data["comparisons"] == [] and data["mean_absolute_percentage_error"] is None


def test_cli_writes_json_and_fails_over_max_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "v.json"
    case = ["--case", "narayanan21_t1_1.7B", "-q"]
    assert main(["validate", *case, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["comparisons"]
    assert {r["case"] for r in rows} == {"narayanan21_t1_1.7B"}
    assert [r["measured"] for r in rows] == [137, 4.4, 44]  # TFLOP/s, PFLOP/s, % of 312
    errors = [abs(r["relative_error"]) for r in rows]
    assert data["mean_absolute_percentage_error"] == pytest.approx(100 * sum(errors) / 3)
    tight = max(errors) * 100 / 2
    assert main(["validate", *case, "--max-error", str(tight)]) == EXIT_VALIDATION_FAILED
    assert "miss by more than" in capsys.readouterr().err
    loose = max(errors) * 100 * 2
    assert main(["validate", *case, "--max-error", str(loose)]) == 0


def test_user_file_errors_are_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("schema: x\n")
    assert main(["validate", str(bad)]) == 2
    assert "cases" in capsys.readouterr().err
    assert main(["validate", "--case", "narayanan21_t1_1.7b"]) == 2
    assert "did you mean 'narayanan21_t1_1.7B'" in capsys.readouterr().err


def test_a_setting_every_case_refuses_is_the_commands_error(tmp_path: Path, capsys) -> None:
    """A mistyped --set failed every case the same way and exited 0 with a "not run" line per
    case: it is one line naming the setting, exit 2, with the JSON of the cases written."""
    out = tmp_path / "v.json"
    sets = ["--set", "hw.tile.gemm.launch_latncy=3 us", "--json", str(out), "-q"]
    assert main(["validate", str(REPO / "validation" / "korthikanti_runs.yaml"), *sets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "all 8 of" in err and "did you mean 'launch_latency'" in err
    assert len(json.loads(out.read_text())["skipped"]) == 8


def test_calibrated_a100_layer_times_are_within_15_percent_of_korthikanti_table4() -> None:
    """Issue 3's bar for per-layer times: every forward/backward of the 22B layer (Korthikanti
    et al. MLSys 2023, Table 4) that palmsim can express, within ±15%."""
    ids = [c["id"] for c in SHIPPED if c["group"] == "megatron_per_layer_time"]
    report = validate(only=ids)
    assert len(report.comparisons) >= 6
    worst = max(report.comparisons, key=lambda c: abs(c.relative_error))
    assert abs(worst.relative_error) <= 0.15, worst


def test_interleaved_case_maps_its_virtual_stages() -> None:
    """SC21 145.6B: PP=8 with 2 virtual stages per GPU, TP=8, DP=24 on 192 nodes."""
    _, _, overrides, flags = case_setup(_case("narayanan21_t1_145.6B"))
    assert (flags["pp"], flags["tp"], flags["dp"], flags["virtual_stages"]) == (8, 8, 24, 2)
    assert "hw.system.chips=[192, 8]" in overrides
    # ddp_impl: local all-reduces the gradients after the whole backward pass, and adds each
    # fresh gradient into its main_grad buffer in a kernel of its own
    assert flags["dp_overlap"] is False
    assert flags["grad_accumulation"] == "every_microbatch"


def test_megatrons_layers_per_virtual_stage_make_the_chunks_as_megatron_does() -> None:
    """Megatron-LM's --num-layers-per-virtual-pipeline-stage n gives (layers / pp) / n chunks
    a stage (megatron/arguments.py): SC21 145.6B's script passes 5 for 80 layers over 8
    stages, 2 chunks; n equal to a stage's layers is one chunk. It must agree with a stated
    chunk count and divide a stage's layers, and needs a pipeline."""
    from palmsim.validate import NotRun

    case = _case("narayanan21_t1_145.6B")
    system = {k: v for k, v in case["system"].items() if k != "virtual_pipeline_stages"}

    def chunks(**stated: object) -> int:
        return case_setup({**case, "system": {**system, **stated}})[3]["virtual_stages"]

    assert chunks(num_layers_per_virtual_pipeline_stage=5) == 2
    assert chunks(**{"--num-layers-per-virtual-pipeline-stage": 10}) == 1
    assert chunks(num_layers_per_virtual_pipeline_stage=1, virtual_pipeline_stages=10) == 10
    with pytest.raises(NotRun, match="makes 2 chunks"):
        chunks(num_layers_per_virtual_pipeline_stage=5, virtual_pipeline_stages=3)
    n = "num_layers_per_virtual_pipeline_stage"
    for bad in ({n: 3}, {n: 5, "pp": 1, "dp": 192}):  # 3 does not divide a stage's 10
        with pytest.raises(NotRun, match="divisor of a stage's layers, with pp > 1"):
            chunks(**bad)


def test_megatron_runs_fuse_their_gradient_accumulation_by_the_runs_date() -> None:
    """A Megatron run that leaves it unstated accumulates its weight gradients in the
    weight-gradient GEMM when it dates from Megatron-LM's fusion on (bf16 2022-02, fp16
    2022-09; --no-gradient-accumulation-fusion is an opt-out), autograd's adds before; marked
    either way. Stated off, Megatron-Core's DDP hook adds them after every micro-batch; a case
    naming FSDP is autograd's, unmarked."""
    case = _case("nemo2407_h100_llama2_7b_8gpu")  # NeMo 24.07, 2024
    assert "gradient_accumulation_fusion" not in case["training"]
    assert case_setup(case)[3]["grad_accumulation"] == "fused"
    figures = validate(only=[case["id"]]).comparisons
    assert figures and all("training.gradient_accumulation_fusion" in f.assumed for f in figures)
    off = {**case, "training": {**case["training"], "gradient_accumulation_fusion": False}}
    assert case_setup(off)[3]["grad_accumulation"] == "every_microbatch"
    fsdp = {**case, "training": {**case["training"], "framework": "PyTorch FSDP"}}
    assert case_setup(fsdp)[3]["grad_accumulation"] == "after_first_microbatch"
    sc21 = _case("narayanan21_t1_1.7B")  # arXiv:2104.04473, PyTorch DDP, fp16
    assert sc21["training"]["ddp_impl"] == "torch"
    assert case_setup(sc21)[3]["grad_accumulation"] == "after_first_microbatch"


def test_tp_overlap_is_stated_or_follows_the_megatron_release_of_the_runs_date() -> None:
    """training.tp_overlap when given; unstated, off for a run whose source dates from before
    Megatron-LM turned its asynchronous TP all-reduce on by default (merge of 2021-09-07), on
    for a later or undated one; marked either way. Korthikanti et al. (MLSys 2023) is later,
    SC21 (arXiv:2104.04473) earlier; the notes are never read."""
    layer = _case("korthikanti22_t4_22B_layer_baseline_no_recompute")
    assert "tp_overlap" not in layer["training"]
    assert case_setup(layer)[3]["tp_overlap"] is True
    sc21 = _case("narayanan21_t1_18.4B")
    assert case_setup(sc21)[3]["tp_overlap"] is False
    cases = {
        "arXiv:2108.00001": False,  # 2021-08: one month before
        "arXiv:2109.00001": True,  # 2021-09: the month of the merge
        "SC21 (arXiv:2104.04473)": False,  # the arXiv month decides over the venue's year
        "SC20": False,
        "NSDI 2024": True,
        "NeMo container": True,  # undated
        "Table 1, sequence 2048, batch 2000": True,  # no year among those numbers
    }
    for paper, expected in cases.items():
        case = {**layer, "source": {"paper": paper}}
        run = read_training_run(case, "x.yaml")
        assert run is not None and run.flags["tp_overlap"] is expected, paper
        (assumed,) = [a for a in run.assumptions if a.key == "training.tp_overlap"]
        assert assumed.value is expected
    stated = {**layer, "training": {**layer["training"], "tp_overlap": False}}
    run = read_training_run(stated, "x.yaml")
    assert run is not None and run.flags["tp_overlap"] is False
    assert all(a.key != "training.tp_overlap" for a in run.assumptions)
    without_tp = {**layer, "system": {**layer["system"], "tp": 1, "dp": 8}}
    assert case_setup(without_tp)[3]["tp_overlap"] is False  # nothing to overlap


def test_pipeline_p2p_flags_come_from_the_case() -> None:
    """training.scatter_gather_opt and training.overlap_p2p_comm; absent, Megatron-LM's
    defaults: scatter-gather on, sends not overlapped."""
    case = _case("narayanan21_t1_145.6B")
    flags = case_setup(case)[3]
    assert (flags["p2p_scatter_gather"], flags["p2p_overlap"]) == (True, False)
    bare = {k: v for k, v in case["training"].items() if k != "scatter_gather_opt"}
    flags = case_setup({**case, "training": bare})[3]
    assert (flags["p2p_scatter_gather"], flags["p2p_overlap"]) == (True, False)
    own = {**case, "training": {**bare, "scatter_gather_opt": False, "overlap_p2p_comm": True}}
    flags = case_setup(own)[3]
    assert (flags["p2p_scatter_gather"], flags["p2p_overlap"]) == (False, True)


def test_model_tflops_are_counted_as_the_row_counts_them_where_it_gives_tokens_too() -> None:
    """NeMo's Llama 2 7B row gives model TFLOP/s and tokens/s: its FLOP per token is their
    ratio, and palmsim's model TFLOP/s is its tokens/s times that (the same error)."""
    case = _case("nemo2407_h100_llama2_7b_8gpu")
    tflops, tokens = (case["measured"][k] for k in ("model_tflops_per_gpu", "tokens_per_s_per_gpu"))
    report = validate(only=["nemo2407_h100_llama2_7b_8gpu"])
    by_metric = {c.metric: c for c in report.comparisons}
    predicted_tokens = by_metric["tokens_per_s_per_gpu"].predicted
    model = by_metric["model_tflops_per_gpu"]
    assert model.predicted == pytest.approx(predicted_tokens * tflops / tokens, rel=1e-12)
    assert model.relative_error == pytest.approx(
        by_metric["tokens_per_s_per_gpu"].relative_error, rel=1e-9
    )
    assert "model_flop_per_token" in model.assumed


def test_megascale_runs_are_within_15_percent_of_their_published_mfu() -> None:
    """MegaScale's Table 2 (NSDI 2024): the 256- and 1024-GPU runs of its 175B GPT at batch
    768, for Megatron-LM and for MegaScale, against the published MFU, throughput and
    iteration time (validation/megascale_runs.yaml; checking only, nothing is fitted); and
    MegaScale ahead of Megatron-LM at both sizes, as the table has it."""
    path = REPO / "validation" / "megascale_runs.yaml"
    ids = [
        f"megascale_t2_175b_{method}_{gpus}gpu"
        for method in ("megatronlm", "megascale")
        for gpus in (256, 1024)
    ]
    report = validate(path, only=ids)
    assert {c.case for c in report.comparisons} == set(ids)
    worst = max(report.comparisons, key=lambda c: abs(c.relative_error))
    assert abs(worst.relative_error) <= 0.15, worst
    mfu = {c.case: c for c in report.comparisons if c.metric == "mfu_pct"}
    for gpus in (256, 1024):
        own, baseline = (
            mfu[f"megascale_t2_175b_{m}_{gpus}gpu"] for m in ("megascale", "megatronlm")
        )
        assert own.measured > baseline.measured
        assert own.predicted > baseline.predicted


@pytest.mark.parametrize(
    ("num_gpus", "nodes", "chips", "marked"),
    [
        (64, None, "[1, 72]", False),  # 16 trays: one rack
        (72, None, "[1, 72]", False),  # 18 trays: one rack
        (256, None, "[4, 64]", True),  # 64 trays: segments of 16 trays (64 GPUs)
        (144, None, "[2, 72]", True),  # 36 trays: segments of 18
        (96, None, "[2, 48]", True),  # 24 trays: segments of 12
        (256, 64, "[4, 64]", True),  # nodes as trays: 64 x 4 = 256
        (256, 4, "[4, 72]", False),  # nodes as racks: 4 x 72 >= 256
    ],
)
def test_an_nvl72_run_fills_its_racks_as_megatron_bridge_segments_it(
    num_gpus, nodes, chips, marked
) -> None:
    """On NVL72 racks (18 trays of 4 GPUs per NVLink domain) a job beyond one rack runs in
    equal segments of the largest tray count up to 18 that divides its trays, one segment per
    rack (Megatron-Bridge's launcher, sbatch --segment)."""
    case = {
        "id": "gb200_case",
        "model": {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn": 14336,
                  "vocab": 128256, "name": "Llama 3 8B", "seq_len": 8192,
                  "global_batch": num_gpus, "micro_batch": 1},
        "system": {"gpu": "GB200", "num_gpus": num_gpus, "tp": 1, "pp": 1, "dp": num_gpus,
                   **({"nodes": nodes} if nodes else {})},
        "training": {"precision": "bf16"},
        "measured": {"tokens_per_s_per_gpu": 30000},
    }  # fmt: skip
    run = read_training_run(case, "cases.yaml")
    assert run is not None
    assert f"hw.system.chips={chips}" in run.overrides
    assert any(a.key == "hw.system.chips" for a in run.assumptions) is marked


def test_nemo_framework_summary_rows_read_as_their_tables_and_scripts_say() -> None:
    """validation/nemo25_runs.yaml: the Mixtral 8x22B row's DP (its GPUs over TP x PP x CP)
    times its micro-batch and its table's GA, 16, is its global batch (the table prints its
    GBS and MBS columns swapped), and the FSDP row's likewise; NeMo 25.02's rows train under
    per-tensor delayed scaling (its performance scripts' bf16_with_fp8_mixed), 25.04's and
    25.07's under current scaling, as their tables say; a row with FSDP 1 runs ZeRO-3 without
    gradient-accumulation fusion, fp8 parameter gather or the fp8 transpose cache (NeMo
    v2.3.0 scripts/performance/utils.py with use_mcore_fsdp); a Mixtral row drops tokens at
    capacity 1.0, padded (MegatronTokenDropCallback's defaults)."""
    path = REPO / "validation" / "nemo25_runs.yaml"
    rows = {c["id"]: c for c in yaml.safe_load(path.read_text())["cases"]}
    assert len(rows) == 21
    ga = {"nemo2502_b200_mixtral_8x22b_256gpu": 16, "nemo2504_gb200_llama3_70b_64gpu": 2}
    for cid, expected in ga.items():
        s, m = rows[cid]["system"], rows[cid]["model"]
        assert s["num_gpus"] // (s["tp"] * s["pp"] * s["cp"]) == s["dp"]
        assert s["dp"] * m["micro_batch"] * expected == m["global_batch"]
    recipes = {
        "nemo2502_b200_llama3_70b_64gpu": "delayed",
        "nemo2504_gb200_llama3_8b_8gpu": "current",
    }
    for cid, recipe in recipes.items():
        run = read_training_run(rows[cid], str(path))
        assert run is not None and f"training.fp8_recipe={recipe}" in run.overrides
    fsdp = read_training_run(rows["nemo2504_gb200_llama3_70b_64gpu"], str(path))
    assert fsdp is not None and fsdp.flags["zero"] == 3
    assert fsdp.flags["grad_accumulation"] == "after_first_microbatch"
    assert "training.fp8_transpose_cache=false" in fsdp.overrides
    assert not any(o.startswith("training.fp8_param_gather") for o in fsdp.overrides)
    moe = read_training_run(rows["nemo2504_gb200_mixtral_8x7b_64gpu"], str(path))
    assert moe is not None and moe.flags["ep"] == 8
    assert "training.moe_capacity_factor=1.0" in moe.overrides
    assert "training.expert_load=uniform" in moe.overrides


def test_a_stated_moe_a2a_overlap_merges_1f1b_and_rules_out_full_recompute() -> None:
    """A MoE row stating its preset's moe_a2a_overlap (or Megatron-Core's name for it) runs
    merged 1F1B; its unstated recompute is searched among none and the selective ones only
    (Megatron-Core refuses full recompute with it), then full recompute without the overlap as
    a last, marked resort."""
    rows = yaml.safe_load((REPO / "validation" / "moe_runs.yaml").read_text())["cases"]
    row = next(c for c in rows if c["id"] == "mbridge_2511_h100_qwen3_235b_a22b_256gpu")
    assert row["training"]["moe_a2a_overlap"] is True
    for key in ("moe_a2a_overlap", "overlap_moe_expert_parallel_comm"):
        training = {k: v for k, v in row["training"].items() if k != "moe_a2a_overlap"}
        run = read_training_run({**row, "training": {**training, key: "true"}}, "x.yaml")
        assert run is not None and run.flags["moe_a2a_overlap"] is True
        assert run.recompute == ("none", "selective", "light")
    plain = {
        **row,
        "training": {k: v for k, v in row["training"].items() if k != "moe_a2a_overlap"},
    }
    run = read_training_run(plain, "x.yaml")
    assert run is not None and "moe_a2a_overlap" not in run.flags
    assert run.recompute == ("none", "selective", "light", "full")


def test_a_dispatcher_it_does_not_know_is_named_with_its_key() -> None:
    """DeepEP or HybridEP read as DeepEP's dispatch; anything else is a one-line reason naming
    the key the case used and its value."""
    from palmsim.validate import NotRun

    rows = yaml.safe_load((REPO / "validation" / "moe_runs.yaml").read_text())["cases"]
    row = next(c for c in rows if c["id"] == "mbridge_2509_h100_deepseek_v3_1024gpu")
    run = read_training_run(row, "x.yaml")
    assert run is not None and run.flags["moe_dispatcher"] == "deepep"
    for key in ("moe_flex_dispatcher_backend", "moe_dispatcher"):
        training = {k: v for k, v in row["training"].items() if k != "moe_flex_dispatcher_backend"}
        with pytest.raises(NotRun, match=f"training.{key}: got 'nccl'"):
            read_training_run({**row, "training": {**training, key: "nccl"}}, "x.yaml")


def test_zero_collectives_follow_the_deepspeed_release_of_the_runs_date() -> None:
    """A ZeRO-3 run: per tensor, none overlapped, when its source dates from before DeepSpeed
    v0.5.5 (PR #1188, 2021-11), per unit from then on or undated, marked when it names
    DeepSpeed or is that early; stated, as stated; a run naming FSDP per unit, unmarked;
    below ZeRO-3 no setting at all."""
    sc21 = yaml.safe_load((REPO / "validation" / "megatron_sc21_runs.yaml").read_text())["cases"]
    (zero3,) = [c for c in sc21 if c["id"] == "narayanan21_t2_zero3_175b_384gpu"]
    assert "DeepSpeed" in zero3["training"]["framework"]
    cases = {
        "SC21 (arXiv:2104.04473)": "tensor",
        "arXiv:2110.00001": "tensor",  # 2021-10: the month before v0.5.5
        "arXiv:2111.00001": "unit",
        "a blog post": "unit",  # undated
    }
    for paper, expected in cases.items():
        run = read_training_run({**zero3, "source": {"paper": paper}}, "x.yaml")
        assert run is not None and run.flags["zero_collectives"] == expected, paper
        (assumed,) = [a for a in run.assumptions if a.key == "training.zero_collectives"]
        assert assumed.value == expected
    stated = {**zero3, "training": {**zero3["training"], "zero_collectives": "unit"}}
    run = read_training_run(stated, "x.yaml")
    assert run is not None and run.flags["zero_collectives"] == "unit"
    assert all(a.key != "training.zero_collectives" for a in run.assumptions)
    # not naming DeepSpeed (its notes, which name it, are never read): ZeRO-3 of 2021 was
    # DeepSpeed's, unless the case names FSDP
    unnamed = {**zero3, "training": {"precision": "fp16", "zero_stage": 3}}
    assert "DeepSpeed" in unnamed["notes"]
    run = read_training_run(unnamed, "x.yaml")
    assert run is not None and run.flags["zero_collectives"] == "tensor"
    later = {**unnamed, "source": {"paper": "arXiv:2304.00001"}}
    run = read_training_run(later, "x.yaml")
    assert run is not None and run.flags["zero_collectives"] == "unit"
    assert all(a.key != "training.zero_collectives" for a in run.assumptions)
    for fsdp in (
        {**zero3, "training": {"precision": "bf16", "fsdp": "full_shard"}},
        {**unnamed, "system": {**zero3["system"], "software": "FairScale 0.3"}},
    ):
        run = read_training_run(fsdp, "x.yaml")
        assert run is not None and run.flags["zero_collectives"] == "unit"
        assert all(a.key != "training.zero_collectives" for a in run.assumptions)
    zero1 = {**zero3, "training": {**zero3["training"], "zero_stage": 1}}
    run = read_training_run(zero1, "x.yaml")
    assert run is not None and "zero_collectives" not in run.flags
    bad = {**zero3, "training": {**zero3["training"], "zero_collectives": "layer"}}
    with pytest.raises(NotRunError, match="zero_collectives: got 'layer'"):
        read_training_run(bad, "x.yaml")


def test_overlapped_param_gather_is_stated_named_or_the_recipes_default() -> None:
    """ZeRO-1/2 runs: training.overlap_param_gather (or NeMo's overlap_param_sync) when
    given, or a text of the case naming the flag; unstated, a Megatron-Core run overlaps as
    the Megatron-Bridge and NeMo recipes set it, marked; a run on another stack, or one
    without the distributed optimizer, gathers after the step."""
    case = _case("nemo2407_h100_llama2_7b_8gpu")  # NeMo 24.07, distributed optimizer assumed
    assert not any("overlap_param" in k for k in case["training"])
    run = read_training_run(case, "x.yaml")
    assert run is not None and run.flags["overlap_param_gather"] is True
    assert any(a.key == "training.overlap_param_gather" for a in run.assumptions)
    for stated in ({"overlap_param_gather": False}, {"overlap_param_sync": False}):
        off = {**case, "training": {**case["training"], **stated}}
        run = read_training_run(off, "x.yaml")
        assert run is not None and "overlap_param_gather" not in run.flags
    named = {**case, "training": {**case["training"], "other": "--overlap-param-gather"}}
    run = read_training_run(named, "x.yaml")
    assert run is not None and run.flags["overlap_param_gather"] is True
    assert all(a.key != "training.overlap_param_gather" for a in run.assumptions)
    deepspeed = {**case, "training": {**case["training"], "framework": "DeepSpeed"}}
    run = read_training_run(deepspeed, "x.yaml")
    assert run is not None and "overlap_param_gather" not in run.flags
    sc21 = _case("narayanan21_t1_1.7B")  # no distributed optimizer: nothing to gather
    assert "overlap_param_gather" not in case_setup(sc21)[3]


def test_megatron_lm_bf16_runs_reduce_their_gradients_in_fp32() -> None:
    """Megatron-LM's arguments set accumulate_allreduce_grads_in_fp32 for bf16, so a bf16 run
    of Megatron-LM's own training loop that does not say otherwise reduces fp32 gradients,
    marked; a stated choice, a NeMo run and an fp16 run keep theirs."""
    path = REPO / "validation" / "megatron_h100_runs.yaml"
    (case,) = [
        c for c in yaml.safe_load(path.read_text())["cases"]
        if c["id"] == "megatron_lm_h100_weak_1.7B_48gpu"
    ]  # fmt: skip
    assert case["source"]["repo"] == "NVIDIA/Megatron-LM"
    assert case["training"]["precision"] == "bf16"
    run = read_training_run(case, "x.yaml")
    assert run is not None and "training.grad_reduce_dtype=fp32" in run.overrides
    assert any(a.key == "training.grad_reduce_dtype" for a in run.assumptions)
    stated = {**case, "training": {**case["training"], "grad_reduce_in_bf16": True}}
    run = read_training_run(stated, "x.yaml")
    assert run is not None and "training.grad_reduce_dtype=bf16" in run.overrides
    assert all(a.key != "training.grad_reduce_dtype" for a in run.assumptions)
    for other in ("nemo2407_h100_llama2_7b_8gpu", "narayanan21_t1_1.7B"):  # NeMo; fp16
        run = read_training_run(_case(other), "x.yaml")
        assert run is not None
        assert not any(o.startswith("training.grad_reduce_dtype") for o in run.overrides)


def test_each_case_groups_error_is_summarised_the_largest_summed_miss_first(tmp_path) -> None:
    """--by-group adds each case group's mean absolute error under the overall one, the group
    whose figures miss by the most in all first (here 'b': 10% and 30% sum to 0.4 against
    'a''s 5% and 25%, 0.3, though 'a' has the larger single miss); --json keeps each
    figure's group and each group's mean, and reads them back; validate takes the group from
    the case's ``group``."""
    report = ValidationReport(
        "x",
        (
            Comparison("r1", "m", 100.0, 105.0, group="a"),
            Comparison("r2", "m", 100.0, 125.0, group="a"),
            Comparison("r3", "m", 100.0, 90.0, group="b"),
            Comparison("r4", "m", 100.0, 130.0, group="b"),
            Comparison("r5", "m", 100.0, 101.0),
        ),
        (),
    )
    assert list(report.errors_by_group) == ["b", "a", ""]
    assert report.errors_by_group["b"] == (pytest.approx(20.0), 2)
    assert report.errors_by_group["a"] == (pytest.approx(15.0), 2)
    table = format_report(report, by_group=True)
    assert "    b: 20.0% over 2 figures" in table
    assert "    (no group): 1.0% over 1 figure" in table
    assert "by case group" not in format_report(report)
    data = json.loads(json.dumps(report.as_dict()))
    assert data["mean_absolute_percentage_error_by_group"] == pytest.approx(
        {"b": 20.0, "a": 15.0, "": 1.0}
    )
    assert report_from_dict(data, "v.json").errors_by_group == report.errors_by_group
    cases = read_config_file("validation/tiles_measurements.yaml")["cases"]
    gemm = next(c for c in cases if c["id"] == "tt_gemm_n150_bf16_hifi4_16k")
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"cases": [gemm]}))
    (c,) = validate(str(path)).comparisons
    assert c.group == gemm["group"] != ""
