"""The serving engine's costing, loader and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palmsim.cli import main
from palmsim.config.loader import load_serving
from palmsim.config.specs import TrafficSpec
from palmsim.engine.serving import ServingSimulator
from palmsim.engine.simulator import Simulator
from palmsim.errors import ConfigError
from palmsim.hardware.chip import Chip
from palmsim.mapping.serving import batch_shape, map_serving
from tests.conftest import cluster_spec, wafer_spec
from tests.serving.helpers import model, serving_spec

REPO = Path(__file__).resolve().parents[2]

SHAPES = [
    [(300, 0, True)],
    [(1, 700, True)] * 5,
    [(1, 700, True)] * 5 + [(120, 40, False), (7, 3, True)],
]


@pytest.mark.parametrize(
    ("hw", "tp"),
    [
        (wafer_spec(dies=(1, 2), tiles=(4, 4)), 4),
        (cluster_spec(nodes=1, gpus=4), 2),
        (cluster_spec(nodes=1, gpus=4), 1),
        (wafer_spec(dies=(1, 2), tiles=(4, 4)), 1),
    ],
    ids=["wafer-die-edge-dram", "gpu-nvlink", "one-gpu", "one-wafer-tile"],
)
@pytest.mark.parametrize("entries", SHAPES, ids=["prefill", "decode", "mixed"])
def test_segment_sum_equals_the_whole_iteration(hw, tp, entries):
    """An iteration costed as the sum of its barrier-separated segments equals the simulation
    of the whole iteration, with DRAM-port and NoC contention inside each segment."""
    mdl = model(layers=3, hidden=256, heads=4)
    spec = serving_spec(TrafficSpec("poisson"))
    spec = type(spec)(
        **{
            **{f: getattr(spec, f) for f in spec.__slots__},
            "tp": tp,
            "replicas": 2,
            "dtype": "fp16",
        }
    )
    chip = Chip.from_spec(hw)
    plan = map_serving(spec, hw, mdl, chip)
    shape = batch_shape(entries)
    whole = Simulator(chip, plan.iteration_plan(1, shape)).run()
    assert whole.flows  # there is traffic to contend
    segmented = ServingSimulator(chip, plan, ()).iteration_time_s(1, shape)
    assert segmented == pytest.approx(whole.end_time_s, rel=1e-12)


def test_unknown_serving_key_names_file_key_and_suggestion(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("traffic: {arrival: poisson, rate_per_s: 2}\nscheduler: {max_num_seq: 4}\n")
    with pytest.raises(ConfigError, match=r"scheduler\.max_num_seq.*did you mean 'max_num_seqs'"):
        load_serving(path)


def test_trace_csv_rows_are_checked(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0.5,10,3\n0.2,1,1\n")
    path = tmp_path / "s.yaml"
    path.write_text("traffic: {arrival: trace, trace: t.csv}\n")
    with pytest.raises(ConfigError, match=r"t\.csv.*line 3"):
        load_serving(path)
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0.5,10,3\n0.7,1,1\n")
    spec = load_serving(path)
    assert spec.traffic.trace == ((0.5, 10, 3), (0.7, 1, 1))


def test_arrivals_past_the_simulated_time_are_refused(tmp_path, capsys):
    """Fuzzing found a rate of 1e-30 requests/s simulated to 2e30 s and stopped there (exit
    4): requests arriving past MAX_SIMULATED_S (1e9 s) are the input's error, named where
    they are given, a rate below num_requests / 1e9 per s or a trace row after 1e9 s."""
    path = tmp_path / "s.yaml"
    path.write_text("traffic: {arrival: poisson, rate_per_s: 1.0e-30, num_requests: 10}\n")
    with pytest.raises(
        ConfigError, match=r"traffic\.rate_per_s: got 1e-30; expected at least 1e-08"
    ):
        load_serving(path)
    path.write_text("traffic: {arrival: poisson, rate_per_s: 1.0e-8, num_requests: 10}\n")
    assert load_serving(path).traffic.rate_per_s == 1e-8  # 10 requests over 1e9 s
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0.5,10,3\n2e9,1,1\n")
    path.write_text("traffic: {arrival: trace, trace: t.csv}\n")
    with pytest.raises(ConfigError, match=r"t\.csv: line 3: .*at most 1e\+09 s"):
        load_serving(path)
    assert main(["serve", "--no-plots", "--set", "serving.traffic.rate_per_s=1e-30"]) == 2
    assert "traffic.rate_per_s" in capsys.readouterr().err


def test_palmsim_serve_writes_the_run_folder(tmp_path, capsys):
    """The shipped default (Llama-3-8B on one H100), shortened to 6 requests."""
    out = tmp_path / "run"
    code = main(["serve", "--set", "serving.traffic.num_requests=6", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "TTFT p50/p90/p99" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_finished"] == 6
    for name in (
        "requests.csv",
        "iterations.csv",
        "queue.csv",
        "report.html",
        "plots/latency_cdf.png",
        "plots/serving_timeseries.png",
    ):
        assert (out / name).is_file(), name
    assert len((out / "requests.csv").read_text().splitlines()) == 7
    # -q, as palmsim run -q: the same folder, nothing printed
    quiet = tmp_path / "quiet"
    args = ["serve", "--set", "serving.traffic.num_requests=6", "--no-plots", "-q"]
    assert main([*args, "--out", str(quiet)]) == 0
    assert capsys.readouterr().out == ""
    loud, hushed = (json.loads((d / "summary.json").read_text()) for d in (out, quiet))
    for summary in (loud, hushed):
        summary.pop("wall_time_s")  # the machine's, not the simulation's
    assert hushed == loud


def test_a_cache_too_small_for_any_request_says_so_and_still_writes(tmp_path, capsys, caplog):
    """One 16-token block holds no request: all are rejected at arrival, the table prints
    zeros (no iteration ran) and a warning names the cache size to change."""
    out = tmp_path / "run"
    args = ["serve", "--no-plots", "--out", str(out), "--set", "serving.traffic.num_requests=5"]
    assert main([*args, "--set", "serving.scheduler.num_kv_blocks=1"]) == 0
    assert "0 finished, 5 rejected" in capsys.readouterr().out
    assert "5 of 5 requests rejected" in caplog.text
    assert "num_kv_blocks: 1 blocks" in caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_iterations"] == 0 and summary["batch_tokens_mean"] == 0.0


@pytest.mark.parametrize(
    ("rates", "needle"),
    [
        ("0", "arrival rates above zero"),
        ("inf", "arrival rates above zero"),
        ("1,1.0000001", "distinct rates"),  # both would be written to OUT/rate-1
        (",".join(str(r + 1) for r in range(101)), "at most 100 rates, not 101"),
    ],
)
def test_serve_rates_out_of_range_are_the_command_lines_error(rates, needle, capsys):
    """A rate of 0 was blamed on the serving file's traffic.rate_per_s, two rates printing
    alike overwrote one folder, and any number of rates was accepted, each a whole run."""
    assert main(["serve", "--no-plots", "--rates", rates]) == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError: command line: --rates: ") and needle in err


@pytest.mark.parametrize("arrival", ["closed", "trace"])
def test_serve_rates_on_traffic_without_a_rate_is_refused(arrival, capsys):
    """On a closed loop (or a trace) the rate sets nothing: every point of the curve served
    the same requests. It is the command line's error, before any run."""
    sets = ["--set", f"serving.traffic.arrival={arrival}"]
    assert main(["serve", "--no-plots", "--rates", "1,2", *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith("palmsim: ConfigError: ") and err.count("\n") == 1
    if arrival == "closed":
        assert "--rates: got '1.0,2.0'; expected traffic with a rate" in err


def test_palmsim_serve_bad_key_exits_2(capsys):
    assert main(["serve", "--set", "serving.traffic.rat_per_s=3"]) == 2
    assert "did you mean 'rate_per_s'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key",
    [
        "mapping.ep=2",
        "mapping.cp=2",
        "mapping.tp=2",
        "training.global_batch_size=8",
        "inference.batch=4",
        "workload.mode=training",
    ],
)
def test_palmsim_serve_refuses_mapping_keys_it_would_ignore(key, capsys):
    """Serving splits the model by the serving file's tp/pp and reads only the workload's
    model: ep, cp (not modelled in serving), any other mapping. key, or a training.,
    inference. or mode key would be silently ignored, so each is an error."""
    assert main(["serve", "--no-plots", "--set", key]) == 2
    err = capsys.readouterr().err
    assert key.split("=")[0] in err and len(err.strip().splitlines()) == 1


def test_a_trace_arrival_without_a_trace_names_where_it_was_chosen(tmp_path):
    """arrival 'trace' needs traffic.trace: the missing key is blamed on the --set that chose
    the arrival where the file's arrival is another, and on the file where it is its own."""
    shipped = REPO / "serving" / "llama3-8b-h100.yaml"
    with pytest.raises(ConfigError) as exc:
        load_serving(shipped, ["serving.traffic.arrival=trace"])
    (problem,) = exc.value.problems
    assert problem.file == "--set serving.traffic.arrival=trace"
    assert problem.key == "traffic.trace" and "serving.traffic.trace=FILE" in problem.expected
    path = tmp_path / "s.yaml"
    path.write_text("traffic: {arrival: trace}\n")
    with pytest.raises(ConfigError) as exc:
        load_serving(path, ["serving.traffic.arrival=trace"])
    assert [p.file for p in exc.value.problems] == [str(path)]


def test_serve_refuses_expert_parallelism_in_the_workload(tmp_path):
    from palmsim.api import serve

    path = tmp_path / "w.yaml"
    text = (REPO / "workloads" / "llama3-8b.yaml").read_text()
    path.write_text(text + "\nmapping:\n  ep: 2\n")
    with pytest.raises(ConfigError, match=r"mapping\.ep.*not modelled in serving"):
        serve(workload=str(path))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "serving").glob("*.yaml")))
def test_shipped_serving_files_load(name):
    assert load_serving(REPO / "serving" / name).traffic.num_requests >= 1


def test_too_many_requests_is_a_config_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("traffic: {arrival: poisson, num_requests: 100000000000}\n")
    with pytest.raises(ConfigError, match=r"traffic\.num_requests.*an int in \[1, 10000000\]"):
        load_serving(path)


def test_least_loaded_router_picks_the_emptiest_replica_lowest_index_on_ties():
    from palmsim.serving.router import route

    assert route("least_loaded", 7, [3, 1, 1, 2]) == 1
    assert route("round_robin", 7, [3, 1, 1, 2]) == 3


def test_serving_overrides_are_refused_by_palmsim_run(capsys):
    assert main(["run", "--set", "serving.traffic.rate_per_s=3"]) == 2
    assert "serving.* is for palmsim serve" in capsys.readouterr().err


@pytest.mark.parametrize("entries", SHAPES, ids=["prefill", "decode", "mixed"])
def test_one_gpu_iteration_in_closed_form_equals_simulating_each_segment(entries):
    """A one-GPU replica (its HBM port its own) is costed with no Simulator: each segment's
    one compute step is max(compute, DRAM drain + latency); simulating each segment alone
    gives the same durations, bit for bit."""
    hw = cluster_spec(nodes=1, gpus=4)
    mdl = model(layers=3, hidden=256, heads=4)
    spec = serving_spec(TrafficSpec("poisson"))
    spec = type(spec)(
        **{**{f: getattr(spec, f) for f in spec.__slots__}, "replicas": 2, "dtype": "fp16"}
    )
    chip = Chip.from_spec(hw)
    plan = map_serving(spec, hw, mdl, chip)
    shape = batch_shape(entries)
    sim = ServingSimulator(chip, plan, ())
    closed = sim.iteration_time_s(1, shape)
    assert sim._num_closed_form == 1 and not sim._segment_costs  # no Simulator built
    simulated = 0.0
    for _, steps, repeats in plan.segments(shape, 0):
        run = Simulator(chip, plan.segment_plan(1, steps)).run()
        assert any(f.size_bytes > 0 for f in run.flows)  # the step moves DRAM bytes
        simulated += repeats * run.end_time_s
    assert closed == simulated


@pytest.mark.parametrize(("mlp_dtype", "mlp_bytes"), [(None, 2.0), ("int8", 1.0), ("bfp4", 0.5625)])
def test_mlp_weights_in_their_own_format(mlp_dtype, mlp_bytes):
    """``mlp_weight_dtype`` stores the MLP's weights in its format, the rest in weight_dtype:
    a GPT layer has 4h² + 4h attention weights and biases plus 2h of norm, and 8h² + 5h MLP
    weights and biases plus 2h of norm; the embedding V·h + S·h, the final norm 2h (the head
    is tied). bfp4 is half a byte per element plus one shared exponent byte per block of 16
    (Tenstorrent's block floating point)."""
    import dataclasses

    layers, h, vocab, seq = 2, 256, 512, 4096
    hw = cluster_spec(nodes=1, gpus=1)
    mdl = model(layers=layers, hidden=h, heads=4, vocab=vocab, seq=seq)
    spec = dataclasses.replace(serving_spec(TrafficSpec("poisson")), mlp_weight_dtype=mlp_dtype)
    plan = map_serving(spec, hw, mdl, Chip.from_spec(hw))
    rest = layers * (4 * h * h + 6 * h) + vocab * h + seq * h + 2 * h
    mlp = layers * (8 * h * h + 7 * h)
    assert plan.stages[0].breakdown.weights == 2.0 * rest + mlp_bytes * mlp


def test_the_down_projection_in_its_own_format():
    """``mlp_down_weight_dtype`` stores fc2 (4h x h weights and h biases of a GPT MLP) in its
    format, fc1 (h x 4h and 4h) in ``mlp_weight_dtype``; the MLP's two norm vectors (2h)
    too; the rest in weight_dtype (bf16, 2 B)."""
    import dataclasses

    layers, h, vocab, seq = 2, 256, 512, 4096
    hw = cluster_spec(nodes=1, gpus=1)
    mdl = model(layers=layers, hidden=h, heads=4, vocab=vocab, seq=seq)
    spec = dataclasses.replace(
        serving_spec(TrafficSpec("poisson")), mlp_weight_dtype="bfp4", mlp_down_weight_dtype="int8"
    )
    plan = map_serving(spec, hw, mdl, Chip.from_spec(hw))
    rest = layers * (4 * h * h + 6 * h) + vocab * h + seq * h + 2 * h
    fc2 = layers * (4 * h * h + h)
    others = layers * (4 * h * h + 4 * h + 2 * h)
    assert plan.stages[0].breakdown.weights == 2.0 * rest + 1.0 * fc2 + 0.5625 * others


def test_a_tied_lm_head_still_reads_its_matrix():
    """With tied embeddings the head owns no parameters, but each step that samples reads the
    whole V x h matrix, and the final LayerNorm its 2h weights and biases (in the weight
    format: here int8, one byte per element)."""
    import dataclasses

    h, vocab = 256, 512
    hw = cluster_spec(nodes=1, gpus=1)
    mdl = model(layers=2, hidden=h, heads=4, vocab=vocab)
    assert mdl.tie_word_embeddings
    spec = dataclasses.replace(serving_spec(TrafficSpec("poisson")), weight_dtype="int8")
    plan = map_serving(spec, hw, mdl, Chip.from_spec(hw))
    assert sum(op.weight_bytes for op in plan._head(1)) == (vocab * h + 2 * h) * 1.0


def test_an_exclusive_all_reduce_ends_no_earlier_than_its_flows():
    """Regression: an exclusive TP all-reduce fires at now + (end - now), which rounding can
    put one ulp before its flows' arrival; the engine's end-of-run check then failed (a
    7,625-token embedding segment, tp 2 on H100s). The segment now runs, and its end is the
    embedding step plus the all-reduce."""
    from palmsim.config.loader import load_hardware, load_serving, load_workload

    overrides = ["serving.tp=2", "serving.replicas=16"]
    hw = load_hardware(str(REPO / "hw_configs/dgx-h100.yaml"), overrides)
    wl, _ = load_workload(str(REPO / "workloads/llama3-8b.yaml"), overrides)
    spec = load_serving(str(REPO / "serving/llama3-8b-h100-node.yaml"), overrides)
    chip = Chip.from_spec(hw)
    plan = map_serving(spec, hw, wl.model, chip)
    shape = batch_shape([(7625, 0, True)])
    kind, steps, _ = plan.segments(shape, 0)[0]
    assert kind == "embed"
    trace = Simulator(chip, plan.segment_plan(4, steps)).run()
    assert trace.end_time_s == max(i.end_s for i in trace.intervals)


def test_run_mode_serving_is_palmsim_serve(tmp_path, capsys):
    """``palmsim run --mode serving`` writes what ``palmsim serve`` writes; a mapping flag
    with it is refused (exit 2), not ignored."""
    args = ["--set", "serving.traffic.num_requests=6", "--no-plots"]
    assert main(["serve", *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["run", "--mode", "serving", *args, "--out", str(tmp_path / "b")]) == 0
    for name in ("requests.csv", "iterations.csv", "queue.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert main(["run", "--mode", "serving", "--tp", "2", "--out", str(tmp_path / "c")]) == 2
    assert "--tp" in capsys.readouterr().err


def test_a_mixture_of_experts_holds_every_expert_and_a_step_reads_those_it_reaches():
    """A top-2 mixture of 8 SwiGLU experts of width 128 (h = 256, one layer, no bias, RMSNorm)
    served on one GPU: the tile holds all 8 experts, 8 x 3·h·128, with the router h·8 and the
    norm h; an iteration of one token reads 2 experts' weights and one of 4 tokens
    8·(1 - (3/4)^4) on average (a uniform router), each GEMM one fused kernel. A mixture whose
    first layer is dense (DeepSeek's first_k_dense_replace) holds that layer's dense MLP,
    3·h·4h, in place of the experts and router, 8·3·h·128 + h·8: 2·8·h fp16 bytes fewer."""
    import dataclasses

    from palmsim.config.specs import ModelSpec
    from palmsim.mapping.experts import EXPERT_OPS
    from palmsim.workload.moe import touched_experts

    h, f_e, e, k = 256, 128, 8, 2
    moe = ModelSpec(
        "moe", h, 4, 4, 4 * h, 1, 512, 4096, "silu", norm="rmsnorm", position_embedding="rope",
        use_bias=False, tie_word_embeddings=False, num_experts=e, num_experts_per_tok=k,
        moe_intermediate_size=f_e,
    )  # fmt: skip
    hw = cluster_spec(nodes=1, gpus=1)
    plan = map_serving(serving_spec(TrafficSpec("poisson")), hw, moe, Chip.from_spec(hw))
    held = sum(op.params for op in plan._linear(1)[1])
    assert held == e * 3 * h * f_e + h * e + h
    for tokens, reached in ((1, 2.0), (4, touched_experts(4, k, e))):
        experts = [op for op in plan._linear(tokens)[1] if op.name in EXPERT_OPS]
        assert sum(op.weight_bytes for op in experts) == pytest.approx(2 * reached * 3 * h * f_e)
        assert [op.kernels_fwd for op in experts] == [1, 1]
    assert touched_experts(4, k, e) == pytest.approx(8 * (1 - 0.75**4))
    two = dataclasses.replace(moe, num_hidden_layers=2)
    dense_first = dataclasses.replace(two, first_k_dense_replace=1)
    plans = [
        map_serving(serving_spec(TrafficSpec("poisson")), hw, m, Chip.from_spec(hw))
        for m in (two, dense_first)
    ]
    assert plans[1].stages[0].mlp_kinds == ((0, 0, 1), (1, 1, 1))
    weights = [p.stages[0].breakdown.weights for p in plans]
    assert 3 * h * 4 * h == e * 3 * h * f_e  # so the two layers differ by the router alone
    assert weights[0] - weights[1] == 2 * h * e


@pytest.mark.parametrize(
    ("segments", "end_s"),
    [
        # host-bound embedding (3 ops' time, 1 of device), then 4 device-bound layers: the
        # device waits once, 3 + 4 x 10
        (((1.0, 3.0, 1), (10.0, 1.0, 4)), 43.0),
        # host-bound throughout: the host's 3 x 2
        (((1.0, 2.0, 3),), 6.0),
        # the device ahead in the first layer only: 2 (host) + 1 + 2 x 1.5
        (((1.0, 2.0, 1), (1.5, 1.0, 2)), 5.0),
        # traced: no host time, the segments' sum
        (((1.0, 0.0, 2), (2.5, 0.0, 3)), 9.5),
    ],
)
def test_the_host_feeds_an_iterations_segments_as_a_two_stage_pipeline(segments, end_s):
    """_HostPipeline: segment i of device time D and host time h ends at
    F_i = max(F_(i-1) + D, H_i), H_i the host's running total; its closed form over a
    segment's repeats gives the hand-unrolled recurrence (the comments above)."""
    from palmsim.engine.serving import _HostPipeline

    pipe = _HostPipeline()
    for device_s, host_s, repeats in segments:
        pipe.add(device_s, host_s, repeats)
    assert pipe.end_s == pytest.approx(end_s, rel=1e-12)


def test_progress_counts_requests_done(monkeypatch):
    """A serving run reports the requests done (finished or rejected) of all it serves,
    never fewer than before, the last report all of them at the end."""
    import palmsim.engine.serving as engine
    from palmsim.api import serve

    monkeypatch.setattr(engine, "PROGRESS_EVERY_ITERATIONS", 1)  # after every iteration
    heard: list[tuple[int, int, str]] = []
    result = serve(
        overrides=["serving.traffic.num_requests=12"],
        progress=lambda done, total, text: heard.append((done, total, text)),
    )
    assert {total for _, total, _ in heard} == {12}
    done = [d for d, _, _ in heard]
    assert done == sorted(done) and done[0] < done[-1] == 12
    assert len(heard) == len(result.trace.iterations) + 1  # one per iteration and the end
