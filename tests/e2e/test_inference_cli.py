"""`palmsim run --mode inference` end to end on small sizes, and its config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palmsim.cli import main

REPO = Path(__file__).resolve().parents[2]
LLAMA7B = str(REPO / "workloads" / "llama2-7b.yaml")
# llama2-7b cut to 4 layers, 8 requests, 4 output tokens: the shipped inference mapping
# (pp 4, tp 8, micro-batches of 4) with every code path of the full run.
SMALL = [
    "--mode",
    "inference",
    "--workload",
    LLAMA7B,
    "--set",
    "model.num_hidden_layers=4",
    "--set",
    "workload.inference.output_len=4",
    "--set",
    "workload.inference.prompt_len=64",
    "--set",
    "inference.batch=8",  # the inference. shorthand of workload.inference.
    "--no-plots",
]


@pytest.mark.parametrize("hw", ["tx8-wafer.yaml", "dgx-h100.yaml"])
def test_inference_run_reports_serving_metrics(tmp_path, capsys, hw):
    out = tmp_path / "run"
    assert main(["run", "--hw", str(REPO / "hw_configs" / hw), *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "time to first token" in printed and "time per output token" in printed
    # a stage's weights alone exceed a TX8 tile's 3 MiB of SRAM and an H100's: no KV in SRAM
    assert "KV 0 B SRAM" in printed and "no token of it in SRAM" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "inference"
    assert 0 < summary["ttft_s"] < summary["iteration_time_s"]
    assert summary["tpot_s"] > 0
    # 8 requests x 4 tokens over the run's end time (definition in docs/metrics.md).
    assert summary["throughput_tokens_per_s"] == pytest.approx(
        8 * 4 / summary["iteration_time_s"], rel=1e-12
    )
    # 4 layers on 4 stages: 1 layer, 32 / 8 = 4 KV heads of 128 per tile, 8 requests, fp16;
    # the cache peaks at prompt + output - 1 = 67 tokens (the last token is never fed back).
    per_token = 2 * 1 * 4 * 128 * 8 * 2
    assert summary["kv_cache_bytes_peak"]["per_tile_max"] == per_token * 67
    assert summary["kv_cache_bytes_peak"]["total"] == 32 * per_token * 67
    assert set(summary["kv_cache_placement"]) == {f"stage{s}" for s in range(4)}
    assert "mfu" not in summary


def test_inference_key_typo_is_a_config_error_with_a_suggestion(tmp_path, capsys):
    code = main(
        ["run", *SMALL, "--set", "workload.inference.prompt_length=64", "--out", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "inference.prompt_length" in err and "prompt_len" in err


def test_a_training_key_an_inference_run_never_reads_is_refused(tmp_path, capsys):
    """An inference run reads training.expert_load (its MoE routing) and nothing else of
    training.*: a training key would change nothing, so it is the command's error."""
    code = main(["run", *SMALL, "--set", "training.global_batch_size=8", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.global_batch_size" in err
    assert "nothing in an inference run" in err and "training.expert_load" in err


def test_an_inference_key_a_training_run_never_reads_is_refused(tmp_path, capsys):
    code = main(["run", "--set", "inference.batch=8", "--no-plots", "--out", str(tmp_path)])
    assert code == 2
    assert "nothing in a training run" in capsys.readouterr().err


def test_an_inference_run_takes_the_training_keys_it_reads():
    from palmsim.api import load_experiment

    sets = [s for s in SMALL[SMALL.index("--set") :] if s not in ("--set", "--no-plots")]
    sets += ["workload.mode=inference", "training.expert_load=dirichlet"]
    experiment = load_experiment(None, LLAMA7B, overrides=sets)
    assert experiment.workload.training.expert_load == "dirichlet"


def _op_table(out):
    """The rows of a run folder's op_table.csv, each a dict by column."""
    lines = (out / "op_table.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def test_op_table_gives_ridge_points_and_bounds(tmp_path):
    """tx8-wafer: 16 TFLOP/s fp16, SRAM 2 TB/s, DRAM 256 GB/s per port. Ridge points are
    16e12 / 256e9 = 62.5 FLOP/B for ops with DRAM operands, 16e12 / 2e12 = 8 FLOP/B in SRAM.
    Decode GEMMs over 4 tokens per micro-batch do ~2 * 4 FLOP per 2-byte weight (intensity
    ~4 FLOP/B), far below 62.5: memory-bound."""
    out = tmp_path / "run"
    hw = str(REPO / "hw_configs" / "tx8-wafer.yaml")
    assert main(["run", "--hw", hw, *SMALL, "--out", str(out), "-q", "--op-table"]) == 0
    rows = _op_table(out)
    by_key = {(r["phase"], r["op"]): r for r in rows}
    mlp = by_key[("decode", "D.L.mlp")]
    assert mlp["memory"] == "dram"
    assert float(mlp["ridge_flop_per_byte"]) == 62.5
    assert float(mlp["intensity_flop_per_byte"]) < 62.5
    assert mlp["bound"] == "memory"
    assert by_key[("comm", "decode.D.L.attn.ar")]["bound"] == "network"
    assert int(by_key[("decode", "D.L.mlp")]["count"]) == 3 * 2 * 32  # steps x mbs x tiles


def test_inference_outputs_are_byte_identical_across_runs(tmp_path):
    hw = str(REPO / "hw_configs" / "tx8-wafer.yaml")
    for name in ("a", "b"):
        out = str(tmp_path / name)
        assert main(["run", "--hw", hw, *SMALL, "--out", out, "-q", "--trace", "--csv"]) == 0
    for file in ("records.npz", "records.csv", "trace.json.gz", "timeline.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_op_table_of_a_training_run_uses_the_training_dtype(tmp_path):
    """A training run of a workload that also has an ``inference:`` section computes in the
    training dtype: tx8-wafer's bf16 peak 16 TFLOP/s over a 256 GB/s DRAM port is a ridge of
    62.5 FLOP/B, not the 8 TFLOP/s fp32 ridge of 31.25 the inference dtype would give."""
    out = tmp_path / "run"
    hw = str(REPO / "hw_configs" / "tx8-wafer.yaml")
    # the file's inference section in fp32 (a --set of an inference key is refused in a
    # training run, as a key that would change nothing)
    workload = tmp_path / "llama2-7b.yaml"
    text = Path(LLAMA7B).read_text()
    assert "\n  dtype: fp16\n  weight_dtype: fp16\n" in text
    workload.write_text(
        text.replace("\n  dtype: fp16\n  weight_dtype", "\n  dtype: fp32\n  weight_dtype")
    )
    args = ["run", "--hw", hw, "--workload", str(workload), "--set", "model.num_hidden_layers=1"]
    args += ["--set", "training.global_batch_size=8"]
    assert main([*args, "--no-plots", "-q", "--op-table", "--out", str(out)]) == 0
    rows = _op_table(out)
    dram_ridges = {float(r["ridge_flop_per_byte"]) for r in rows if r["memory"] == "dram"}
    assert dram_ridges == {62.5}


def test_the_optimizer_row_of_a_gpu_run_is_in_dram_with_its_ridge(tmp_path):
    """The optimizer step reads and writes its shard in HBM, but the table of which steps
    touch DRAM left it out, so on a GPU (no managed SRAM: bandwidth 0) its row read
    'sram, inf' (found by fuzzing). On the H100 (989.4 TFLOP/s bf16 dense x the config's GEMM
    efficiency, 3.35 TB/s HBM) its ridge is finite and in DRAM."""
    out = tmp_path / "run"
    hw = str(REPO / "hw_configs" / "dgx-h100.yaml")
    args = ["run", "--hw", hw, "--workload", LLAMA7B, "--set", "model.num_hidden_layers=1"]
    args += ["--set", "training.global_batch_size=8", "--tp", "8"]
    assert main([*args, "--no-plots", "-q", "--op-table", "--out", str(out)]) == 0
    rows = _op_table(out)
    (optimizer,) = [r for r in rows if r["phase"] == "optimizer"]
    assert optimizer["memory"] == "dram"
    assert 0 < float(optimizer["ridge_flop_per_byte"]) < float("inf")
    assert not any("inf" in value for row in rows for value in row.values())
