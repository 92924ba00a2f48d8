"""The tiled-accelerator case reader: every case runs or is named with its reason."""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import yaml

from palmsim.api import shipped_path
from palmsim.config.loader import load_hardware, read_config_file
from palmsim.tile_cases import (
    CannotExpressError,
    TileFit,
    format_tile_calibration,
    is_tile_case,
    predict,
    substitutions,
    tt_metal_attention_split,
)
from palmsim.validate import validate

NAN = float("nan")


def _marks(case: dict) -> dict[str, str]:
    """The settings ``validate`` marks on ``case``'s figures, key -> the value palmsim runs."""
    return {key: value for key, value, _ in substitutions(case)}


CASES = {c["id"]: c for c in read_config_file("validation/tiles_measurements.yaml")["cases"]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c["hardware"].update(hw_spec_ref="groq_lpu_v1"), "no shipped config"),
        (lambda c: c["scenario"].update(dtype="BFLOAT2_B"), "not modelled"),
        (lambda c: c["scenario"].update(core_grid="eight by eight"), "core grid"),
        (lambda c: c["model"].update(M="many"), "GEMM M .many. is not a positive number"),
        (lambda c: c["model"].update(K=-5), "GEMM K -5 is not a positive number"),
        (lambda c: c["scenario"].update(core_grid="0x8"), "core grid rows"),
        (
            lambda c: c.update(measured={"time_ns": "fast", "device_based_utilization_pct": 91}),
            "none of its measured figures",
        ),
        (lambda c: c.update(model=["M"]), r"model: got \['M'\]; expected a mapping"),
        (lambda c: c.update(model="M K N"), "model: got 'M K N'; expected a mapping"),
        (lambda c: c["hardware"].update(system="one chip"), "hardware.system: got 'one chip'"),
        (lambda c: c["model"].update(M=4096.5), r"GEMM M 4096\.5 is not a whole number"),
        (lambda c: c["model"].update(M=1e30), "GEMM M 1e\\+30 is too large to count"),
        (lambda c: c.pop("measured"), "no 'measured'"),
        (lambda c: c["scenario"].update(core_grid="9x9"), "core grid '9x9': .* 64 cores"),
        (lambda c: c["scenario"].update(math_fidelity="HiFi9"), "math fidelity 'HiFi9'"),
    ],
)
def test_a_bad_case_is_named_not_raised(change, reason):
    case = copy.deepcopy(CASES["tt_gemm_n150_bf16_hifi4_16k"])
    change(case)
    assert is_tile_case(case)
    with pytest.raises(CannotExpressError, match=reason):
        predict(case)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c["scenario"].update(causal="maybe"), "scenario.causal 'maybe'"),
        (lambda c: c["scenario"].update(q_len="4 K"), "scenario.q_len '4 K'"),
        (lambda c: c["scenario"].update(cached_len=-5), "scenario.cached_len -5"),
        (lambda c: c["model"].pop("heads"), "model.heads None"),
        (lambda c: c["scenario"].update(core_grid="12x12"), "core grid '12x12': .* 130 cores"),
        (lambda c: c["measured"].update(time_ms="fast"), "none of its measured figures"),
    ],
)
def test_a_bad_attention_microbenchmark_is_named_not_raised(change, reason):
    case = copy.deepcopy(CASES["tt_sdpa_p150_causal_s4096"])
    change(case)
    with pytest.raises(CannotExpressError, match=reason):
        predict(case)


@pytest.mark.parametrize("links", ["two", 0, "1.5 links", None])
def test_a_collectives_bad_link_count_is_named_not_raised(links):
    case = copy.deepcopy(CASES["tt_ccl_allreduce_wh_line2_1MiB"])
    case["scenario"]["links_per_direction"] = links
    with pytest.raises(CannotExpressError, match=r"scenario\.links_per_direction"):
        predict(case)


def test_model_fields_under_hugging_face_names_and_figures_as_text_are_the_same_case():
    """A case whose model gives Hugging Face's config.json names (hidden_size,
    num_hidden_layers, num_key_value_heads, intermediate_size, vocab_size, ...) and whose
    measured figures and scenario counts are written as text ("80.5", "2,576", "32 users")
    predicts what the case format's own names give; a range such as '239-260' is still no
    figure, and a field given twice with two values is named."""
    plain = CASES["tt_readme_llama32_1b_n150"]
    case = copy.deepcopy(plain)
    names = {
        "hidden": "hidden_size",
        "layers": "num_hidden_layers",
        "heads": "num_attention_heads",
        "kv_heads": "num_key_value_heads",
        "ffn": "intermediate_size",
        "vocab": "vocab_size",
        "tied_embeddings": "tie_word_embeddings",
    }
    case["model"] = {names.get(k, k): v for k, v in plain["model"].items()}
    case["scenario"].update(batch="32 users", prefill_len="128 tokens")
    case["measured"] = {
        "tokens_per_s_per_user": "80.5",
        "tokens_per_s": "2,576",
        "ttft_ms": "20-25",
    }
    got = predict(case)
    want = [f for f in predict(plain) if f[0] != "ttft_ms"]
    assert got == want
    case["model"]["hidden"] = 4096
    with pytest.raises(CannotExpressError, match=r"model\.hidden is given twice"):
        predict(case)
    case = copy.deepcopy(plain)
    case["scenario"]["prefill_len"] = "4 K tokens"  # a multiplier, not a count: named
    with pytest.raises(CannotExpressError, match="prefill_len '4 K tokens'"):
        predict(case)


def test_a_case_that_publishes_a_rate_not_a_time_is_compared_on_the_rate():
    """A GEMM or a collective whose table gives its TFLOP/s or its bandwidths but no time is
    the same measurement: compared on 2MNK / t, on nccl-tests' algbw = size / t, or else on
    busbw = algbw x 2(n-1)/n for an all-reduce (tt-metal's CCL report, report.py); never on
    both a time and a rate."""
    gemm = copy.deepcopy(CASES["tt_gemm_n150_bf16_hifi4_16k"])
    ((_, _, time_ns),) = predict(gemm)
    del gemm["measured"]["time_ns"]
    assert predict(gemm) == [
        ("tflops", 54.31, pytest.approx(2 * 16384**3 / (time_ns * 1e-9) / 1e12))
    ]
    ring = copy.deepcopy(CASES["tt_ccl_allreduce_wh_loudbox_ring8_64MiB"])
    ((_, _, time_us),) = predict(ring)
    del ring["measured"]["time_us"]
    algbw = 67108864 / (time_us * 1e-6) / 1e9
    assert predict(ring) == [("algbw_GBps", 10.4, pytest.approx(algbw))]
    del ring["measured"]["algbw_GBps"]
    assert predict(ring) == [("busbw_GBps", 18.19, pytest.approx(algbw * 2 * 7 / 8))]
    # FlashAttention.md's causal FLOP, 2 b s^2 h d: the case's own derived.flops
    sdpa = copy.deepcopy(CASES["tt_sdpa_p150_causal_s4096"])
    ((_, _, time_ms),) = predict(sdpa)
    sdpa["measured"] = {"tflops": 18.0}
    flop = 2 * 4096**2 * 32 * 128
    assert sdpa["derived"]["flops"] == flop
    assert predict(sdpa) == [("tflops", 18.0, pytest.approx(flop / (time_ms * 1e-3) / 1e12))]


def test_one_bad_case_never_stops_the_others(tmp_path):
    """validate runs the good cases of a file beside a broken one and lists the broken one."""
    import yaml

    good = copy.deepcopy(CASES["tt_dram_read_wh_n150"])
    bad = copy.deepcopy(CASES["tt_gemm_n150_bf16_hifi4_16k"])
    bad["id"] = "broken"
    bad["model"] = {"M": None, "K": 1, "N": 1}
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"cases": [bad, good]}))
    report = validate(str(path))
    assert [c.case for c in report.comparisons] == ["tt_dram_read_wh_n150"]
    assert [s.case for s in report.skipped] == ["broken"]
    assert "GEMM M None is not a positive number" in report.skipped[0].reason


def test_gemm_prediction_is_the_fitted_roofline_by_hand():
    """bfp4 LoFi 16k^3 on 8x8 cores: the op latency, 16.18 us, then
    2 * 16384^3 / (64 * 4.096 TFLOP/s * 0.7623)."""
    ((metric, _measured, predicted),) = predict(CASES["tt_gemm_n150_bfp4_lofi_16k"])
    assert metric == "time_ns"
    expected_s = 16.18e-6 + 2 * 16384**3 / (64 * 4.096e12 * 0.7623)
    assert predicted == pytest.approx(expected_s * 1e9, rel=1e-9)


def test_validate_set_reaches_a_tiled_case_and_other_sections_are_named(tmp_path):
    """``validate --set`` applies to every case: a tiled-system case takes ``hw.*`` (the
    GEMM above with a 1 ms op latency lasts 1 ms - 16.18 us longer, by the roofline by hand)
    and names any other section it cannot take, where it had dropped them silently."""
    import yaml

    case = CASES["tt_gemm_n150_bfp4_lofi_16k"]
    ((_, _, base_ns),) = predict(case)
    ((_, _, slow_ns),) = predict(case, ["hw.tile.op_latency=1 ms"])
    assert slow_ns - base_ns == pytest.approx((1e-3 - 16.18e-6) * 1e9, rel=1e-9)
    with pytest.raises(CannotExpressError, match=r"--set inference\.trace=none: .* hw\.\* and run"):
        predict(case, ["inference.trace=none"])
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"cases": [case]}))
    report = validate(str(path), overrides=["hw.tile.op_latency=1 ms"])
    assert report.comparisons[0].predicted == pytest.approx(slow_ns)


def test_the_report_names_the_shipped_config_a_tiled_case_ran_on(tmp_path):
    """``hardware.hw_spec_ref`` maps to a shipped config (the longest key it starts with), and
    the report names it beside the case, as it names a training run's."""
    import yaml

    from palmsim.validate import format_report

    case = CASES["tt_gemm_n150_bfp4_lofi_16k"]
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"cases": [case]}))
    report = validate(str(path))
    why = "hardware.hw_spec_ref tenstorrent_wormhole_b0.systems.n150"
    assert report.hardware == ((case["id"], "hw_configs/wormhole-n150.yaml", why),)
    assert f"hw_configs/wormhole-n150.yaml ({why}): 1 case" in format_report(report)


def test_a_small_untraced_gemm_lasts_at_least_the_host_dispatch():
    """Untraced, a GEMM whose device time (op latency 16.18 us + compute) is below the host's
    dispatch of one op takes the dispatch: 512^3 bf16 HiFi4 on 8x8 n150 cores is 16.18 us +
    2 * 512^3 / (64 * 1.024 TFLOP/s * 0.8287) = 19.2 us device time; traced it is the device
    time; untraced, called with a program config of its own (the GEMM report's tuned loop),
    the tuned call's dispatch (tile.host_dispatch_tuned, 122.4 us on the n150), and with an
    auto-selected one (``matmul_config: auto``) the out-of-box call's (tile.host_dispatch,
    49.19 us)."""
    from palmsim.config.loader import load_hardware

    case = copy.deepcopy(CASES["tt_gemm_n150_bf16_hifi4_16k"])
    case["model"].update(M=512, K=512, N=512)
    case["scenario"].update(in0_storage="L1", in1_storage="L1", out_storage="L1")
    ((_, _, untraced_ns),) = predict(case)
    case["scenario"]["trace"] = True
    ((_, _, traced_ns),) = predict(case)
    case["scenario"].update(matmul_config="auto", trace=False)
    ((_, _, auto_ns),) = predict(case)
    device_s = 16.18e-6 + 2 * 512**3 / (64 * 1.024e12 * 0.8287)
    tile = load_hardware("hw_configs/wormhole-n150.yaml").tile
    assert tile.host_dispatch_tuned_s > tile.host_dispatch_s > device_s
    assert traced_ns == pytest.approx(device_s * 1e9, rel=1e-3)
    assert untraced_ns == pytest.approx(tile.host_dispatch_tuned_s * 1e9, rel=1e-9)
    assert auto_ns == pytest.approx(tile.host_dispatch_s * 1e9, rel=1e-9)


def test_an_out_of_box_gemm_runs_at_its_own_efficiency_then_writes_its_output():
    """An out-of-box GEMM (matmul_config: auto, DRAM-interleaved operands) runs at the n150's
    fitted auto-config efficiency, bf16 0.4012 at one pass, 2e / (2e + 1 - e) = 0.5727 at
    HiFi2, and its output reaches DRAM after the math: 4096^3 bf16 HiFi2 traced on 8x8 cores
    is 16.18 us + 2 * 4096^3 / (64 * 2.048 TFLOP/s * 0.5727) + 4096^2 * 2 B / 267 GB/s =
    1.9725 ms (the report measures 2.0085, one of the fit's two cases). Its 64 MiB of
    operands stream under the math (0.25 ms); with the output in L1 the write goes; the
    same GEMM tuned runs at format_efficiency with every byte overlapped."""
    e = 0.4012
    e_hifi2 = 2 * e / (2 * e + 1 - e)
    math_s = 2 * 4096**3 / (64 * 2.048e12 * e_hifi2)
    write_s = 4096**2 * 2 / 267e9
    case = copy.deepcopy(CASES["tt_gemm_n150_oob_bf16_hifi2_4096x4096x4096_trace"])
    ((metric, measured, predicted_ns),) = predict(case)
    assert (metric, measured) == ("time_ns", 2008533.48)
    assert predicted_ns == pytest.approx((16.18e-6 + math_s + write_s) * 1e9, rel=1e-3)
    case["scenario"]["out_storage"] = "L1"
    ((_, _, in_l1_ns),) = predict(case)
    assert in_l1_ns == pytest.approx((16.18e-6 + math_s) * 1e9, rel=1e-3)
    case["scenario"].update(out_storage="DRAM", matmul_config="tuned")
    ((_, _, tuned_ns),) = predict(case)
    e = 0.5475
    tuned_s = 16.18e-6 + 2 * 4096**3 / (64 * 2.048e12 * (2 * e / (2 * e + 1 - e)))
    assert tuned_ns == pytest.approx(tuned_s * 1e9, rel=1e-3)


@pytest.mark.parametrize(
    "case_id",
    [c for c in CASES if "hidden" not in CASES[c]["model"]] + ["tt_readme_llama32_1b_n150"],
)
def test_every_shipped_microbenchmark_and_a_model_row_is_predicted(case_id):
    """The shipped file's microbenchmarks and a model row (whose output_len is text, 'up to
    200 ...') give a finite figure for every measured number palmsim predicts."""
    figures = predict(CASES[case_id])
    assert figures and all(p > 0 and p == p for _, _, p in figures)


def test_a_case_without_a_model_is_a_microbenchmark_and_a_model_row_end_to_end():
    """figure_kind: the file's GEMM, DRAM- and host-read, attention, collective and GEMV
    cases (no model dimensions) are microbenchmarks, its inference and training rows (a model
    with hidden and layers) end to end, whatever their figures are called."""
    from palmsim.tile_cases import figure_kind

    kinds = {c: figure_kind(CASES[c]) for c in CASES}
    assert kinds == {
        c: "end_to_end" if "hidden" in CASES[c]["model"] else "microbenchmark" for c in CASES
    }
    assert set(kinds.values()) == {"end_to_end", "microbenchmark"}


def test_the_galaxy_rows_name_what_palmsim_cannot_express():
    """The Galaxy demo's 2-D tensor parallelism over its 8x4 mesh is expressed
    (mapping.tp_2d [8, 4]) and its op count read from its code, so neither is an assumption
    any more; its tracing, which the case does not state, is. A case of other code naming
    2-D TP without the mesh's shape still runs one ring and says so (the Galaxy demo's own
    rows take its 8x4 mesh); a tt_transformers row carries no mark, and its layers launch the
    23 ops of tt_transformers' decoder code."""
    from palmsim.tile_cases import (
        GALAXY_LLAMA_OPS_PER_LAYER,
        TT_TRANSFORMERS_OPS_PER_LAYER,
        _tp_2d,
    )

    case = CASES["tt_galaxy_llama33_70b_isl4k_b32"]
    assert _tp_2d(case) == (8, 4)
    galaxy = _marks(case)
    assert galaxy == {"inference.trace": "all"}
    shapeless = copy.deepcopy(case)
    shapeless["hardware"]["system"]["parallelism"] = "TP=32 (2-D tensor parallel)"
    assert _tp_2d(shapeless) == (8, 4)  # the Galaxy demo's mesh
    shapeless["scenario"]["demo"] = "another demo"
    shapeless["source"]["path"] = "models/README.md"
    assert _tp_2d(shapeless) is None
    assert _marks(shapeless)["mapping.tp"] == "32 as one ring"
    assert substitutions(CASES["tt_readme_llama31_8b_n150"]) == []
    assert TT_TRANSFORMERS_OPS_PER_LAYER == 23
    # the decoder device-perf targets' 16 ops a layer less its 6 CCL-only ops
    assert GALAXY_LLAMA_OPS_PER_LAYER == 16 - 6


def test_a_tt_transformers_mixture_launches_its_moe_layers_ops():
    """tt_transformers' Mixtral decoder runs TtMoeLayer in place of the MLP: its 6 ops (W1,
    W3, mul, two layout moves, W2) become the gate matmul, the mask add, ttnn.moe, the
    expert's 5 (W1, W3, mul, W2, a layout move), the weighting mul and two layout moves: 11,
    so 23 - 6 + 11 = 28 a layer; the dense rows keep 23."""
    from palmsim.tile_cases import _demo_ops_per_layer

    assert _demo_ops_per_layer("models/tt_transformers", moe=True) == 23 - 6 + 11
    assert _demo_ops_per_layer("models/tt_transformers") == 23
    assert _demo_ops_per_layer("models/demos/llama3_70b_galaxy", moe=True) == 10
    from palmsim.tile_cases import _demo_prefill_ops_per_layer

    # the Galaxy demo's prefill layer: 4 norm ops (its attention norm runs twice), a layout
    # move, 14 attention ops, 2 residual adds, 2 FF norm ops and 4 MLP ops; others as decode
    assert _demo_prefill_ops_per_layer("models/demos/llama3_70b_galaxy") == 4 + 1 + 14 + 2 + 2 + 4
    assert _demo_prefill_ops_per_layer("models/tt_transformers") == 0


def test_the_galaxy_demos_prefill_collectives_run_on_three_links():
    """Its prefill CCL calls pass num_links=3 on a Wormhole Galaxy (4 links a neighbour), its
    decode's keep the configuration's: a bandwidth-bound all-reduce of the prefill takes 4/3
    of its time on all 4 links. Other code, and a Blackhole Galaxy, take no override."""
    from palmsim.tile_cases import _demo_prefill_overrides, _simulate_collective

    galaxy = "models/demos/llama3_70b_galaxy"
    wh = shipped_path("hw_configs/wormhole-galaxy.yaml")
    overrides = _demo_prefill_overrides(galaxy, wh)
    assert overrides == ["hw.system.link.count=3"]
    assert _demo_prefill_overrides("models/tt_transformers", wh) == []
    assert _demo_prefill_overrides(galaxy, shipped_path("hw_configs/blackhole-galaxy.yaml")) == []
    decode, prefill = load_hardware(wh), load_hardware(wh, overrides)
    assert decode.wafer.inter_die_links == 4 and prefill.wafer.inter_die_links == 3
    size = float(2**30)  # 1 GiB: the links' rate, not their latency, sets the time
    ratio = _simulate_collective(prefill, "allreduce", 8, size) / _simulate_collective(
        decode, "allreduce", 8, size
    )
    assert ratio == pytest.approx(4 / 3, rel=0.01)


def test_tt_transformers_on_a_galaxy_calls_the_generic_ccl_ops():
    """tt_transformers calls ttnn's generic all_gather_async and reduce_scatter_minimal_async
    on every mesh, whose costs the LoudBox measured (wormhole-t3000.yaml); the Galaxy config
    holds its Llama demo's faster fused ops. So a tt_transformers run on a Wormhole Galaxy
    takes the LoudBox's collective settings, value for value, and keeps the Galaxy's links;
    the Galaxy demo, and tt_transformers elsewhere, take none."""
    import yaml

    from palmsim.tile_cases import ccl_overrides_of_code

    wh = shipped_path("hw_configs/wormhole-galaxy.yaml")
    t3k = shipped_path("hw_configs/wormhole-t3000.yaml")
    overrides = ccl_overrides_of_code("models/tt_transformers/PERF.md", wh)
    assert ccl_overrides_of_code("models/demos/llama3_70b_galaxy", wh) == []
    assert ccl_overrides_of_code("models/tt_transformers/PERF.md", t3k) == []
    with open(t3k, encoding="utf-8") as f:
        system = yaml.safe_load(f)["system"]
    assert "hw.system.collective_latency=3.852 us" in overrides
    assert f"hw.system.link.bandwidth={system['link']['bandwidth']}" in overrides
    assert not any("count" in o for o in overrides)
    galaxy, loudbox = load_hardware(wh, overrides), load_hardware(t3k)
    assert galaxy.wafer.inter_die_links == load_hardware(wh).wafer.inter_die_links == 4
    for field in ("collective_latency_s", "reduce_scatter_step_latency_s", "injection_efficiency"):
        assert getattr(galaxy.wafer, field) == getattr(loudbox.wafer, field)
    assert galaxy.wafer.inter_die.latency_s == loudbox.wafer.inter_die.latency_s == 2.115e-6


def test_tt_transformers_over_a_whole_galaxy_runs_its_collectives_as_lines():
    """tt_transformers' ccl_topology is a ring on 8 devices only and Linear on any other
    mesh: over all 32 chips of a Galaxy no ring closes, so its torus is taken as a mesh (a
    group of chips in a row of a mesh runs the line algorithm); over 8 chips (a DP=4
    replica), or with the chips not known, the torus stays."""
    from palmsim.tile_cases import ccl_overrides_of_code

    wh = shipped_path("hw_configs/wormhole-galaxy.yaml")
    code = "models/tt_transformers/PERF.md"
    assert load_hardware(wh).wafer.topology == "torus"
    whole = ccl_overrides_of_code(code, wh, 32)
    assert "hw.system.topology=mesh" in whole
    assert load_hardware(wh, whole).wafer.topology == "mesh"
    for chips in (0, 8):
        assert not any("topology" in o for o in ccl_overrides_of_code(code, wh, chips))
    assert ccl_overrides_of_code("models/demos/llama3_70b_galaxy", wh, 32) == []


def test_tt_transformers_on_a_2d_mesh_launches_its_all_reduces_ops():
    """On a Galaxy's 2-D mesh tt_transformers' tt_all_reduce is an all-gather then
    a to_memory_config and fast_reduce_nc: a layer of a narrower model launches 5 more ops in
    its attention, 5 in its MLP and one more per norm (12); at width 8192 its composite
    all-reduces and W1/W3 reduce-scatters add none, leaving the attention's 3 and the norms'
    2 (5). A 1-D mesh, a mixture of experts or other code: none."""
    from palmsim.tile_cases import _demo_mesh_ops

    code = "models/tt_transformers/PERF.md"
    assert _demo_mesh_ops(code, (8, 4), 4096, moe=False) == 5 + 5 + 2
    assert _demo_mesh_ops(code, (8, 4), 2048, moe=False) == 12
    assert _demo_mesh_ops(code, (8, 4), 8192, moe=False) == 3 + 0 + 2
    assert _demo_mesh_ops(code, None, 4096, moe=False) == 0
    assert _demo_mesh_ops(code, (8, 4), 4096, moe=True) == 0
    assert _demo_mesh_ops("models/demos/llama3_70b_galaxy", (8, 4), 8192, moe=False) == 0


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("Qwen2.5-7B-Instruct", ("bf16", "bfp8", "bfp8")),  # its own entry
        ("Llama-3.1-8B-Instruct", ("bfp8", "bfp4", "bfp8")),  # one layer differs: the rule
        ("Qwen2.5-72B-Instruct", ("bfp8", "bfp4", "bfp8")),  # no entry ("Qwen2.5-7B" is not it)
    ],
)
def test_a_models_precision_exception_replaces_the_rule(model, expected):
    """tt_transformers' PERF.md: bfp4 MLP and bfp8 attention "for all models except" those
    its exceptions name, read per model from the case's weight_precision_exceptions."""
    from palmsim.tile_cases import _weight_formats

    scenario = CASES["tt_readme_llama31_8b_n150"]["scenario"]
    assert "Qwen2.5-7B" in scenario["weight_precision_exceptions"]
    assert _weight_formats(scenario, False, model) == expected
    as_mapping = {
        **scenario,
        "weight_precision_exceptions": {
            "Qwen2.5-7B": "bfp8 MLP + bf16 attention",
            "Llama-3.1-8B": "bfp8 MLP in layer 32, bfp4 elsewhere",
        },
    }
    assert _weight_formats(as_mapping, False, model) == expected


@pytest.mark.parametrize(
    ("code", "mlp", "moe", "expected"),
    [
        ("models/tt_transformers", "bfp4", False, ("bfp4", "bfp8")),  # FF1/FF3 only
        ("models/tt_transformers", "bfp8", False, ("bfp8", None)),  # Qwen2.5-7B's bfp8 MLP
        ("models/tt_transformers", "bfp4", True, ("bfp8", None)),  # Mixtral's experts
        ("models/demos/llama3_70b_galaxy", "bfp4", False, ("bfp4", "bfp8")),  # its bfp8 w2
        ("WaferLLM", "bfp4", False, ("bfp4", None)),  # other code: the table's format
    ],
)
def test_tt_metal_demos_keep_their_down_projection_in_bfp8(code, mlp, moe, expected):
    """tt_transformers' performance configuration sets FF1/FF3 to bfp4 and leaves FF2 at its
    bfp8 default (model_config.py), the Galaxy demo loads w2 in bfp8 (llama_mlp.py), and
    tt_transformers' Mixtral keeps all its experts' matrices in the decoder's bfp8."""
    from palmsim.tile_cases import tt_metal_mlp_formats

    assert tt_metal_mlp_formats(code, mlp, moe) == expected


def test_a_model_its_fields_do_not_describe_is_refused_and_head_dim_is_read():
    """A Mixtral row gives the shapes of one expert's dense decoder (4096 hidden, 14336 ffn,
    32 layers, GQA 32/8: about 7.2B with the embeddings) but 46.7B parameters: refused, not
    run as that dense decoder. Qwen3-32B's head_dim 128 on a 5120 hidden (64 heads) widens
    the attention beyond hidden / heads = 80."""
    from palmsim.tile_cases import CannotExpressError, case_model

    base = CASES["tt_readme_llama31_8b_n150"]
    mixtral = {
        **base,
        "model": {**base["model"], "name": "Mixtral-8x7B", "vocab": 32000, "params_b": 46.7},
    }
    with pytest.raises(CannotExpressError, match=r"params_b 46\.7"):
        case_model(mixtral, 256)
    qwen = {
        **base,
        "model": {
            **base["model"],
            "name": "Qwen3-32B",
            "hidden": 5120,
            "layers": 64,
            "heads": 64,
            "kv_heads": 8,
            "head_dim": 128,
            "ffn": 25600,
            "vocab": 151936,
            "params_b": 32.8,
        },
    }
    model = case_model(qwen, 256)
    assert model.head_dim == 128
    # per layer: q and o 5120 x 8192 each, k and v 5120 x 1024 each, gated MLP 3 x 5120 x 25600
    per_layer = 2 * 5120 * 8192 + 2 * 5120 * 1024 + 3 * 5120 * 25600
    from palmsim.workload.builders import num_parameters

    # norms (2 per layer + final) and untied embedding and head on top of the layers' matrices
    expected = 64 * per_layer + 2 * 151936 * 5120 + (2 * 64 + 1) * 5120
    assert num_parameters(model) == pytest.approx(expected, rel=1e-3)


def test_a_mixture_that_gives_its_experts_is_built_and_run_on_tenstorrent():
    """A Mixtral row that gives num_experts 8 and top_k 2 is the mixture: per layer
    attention 2 x 4096^2 + 2 x 4096 x 1024, router 4096 x 8, 8 experts of 3 x 4096 x 14336,
    two norms; plus the untied embedding and head (32000 x 4096 each) and the final norm:
    46.70B, Mistral's published 46.7B. Without top_k it is refused. On the QuietBox (TP=8)
    both figures are predicted, marked with the experts' substitution."""
    from palmsim.tile_cases import case_model
    from palmsim.workload.builders import num_parameters

    base = CASES["tt_readme_llama31_8b_n150"]
    fields = {"name": "Mixtral-8x7B", "vocab": 32000, "params_b": 46.7, "num_experts": 8}
    with pytest.raises(CannotExpressError, match=r"model\.top_k"):
        case_model({**base, "model": {**base["model"], **fields}}, 256)
    mixtral = {**base, "model": {**base["model"], **fields, "top_k": 2}}
    model = case_model(mixtral, 256)
    per_layer = 2 * 4096**2 + 2 * 4096 * 1024 + 4096 * 8 + 8 * 3 * 4096 * 14336 + 2 * 4096
    assert model.is_moe and model.num_experts_per_tok == 2
    assert num_parameters(model) == 32 * per_layer + 2 * 32000 * 4096 + 4096
    assert num_parameters(model) / 1e9 == pytest.approx(46.7, abs=0.01)
    on_t3k = copy.deepcopy(mixtral)
    on_t3k["hardware"] = {
        "hw_spec_ref": "tenstorrent_wormhole_b0.systems.quietbox_t3000",
        "system": {"chips": 8, "parallelism": "TP=8"},
    }
    figures = {metric for metric, _, _ in predict(on_t3k)}
    assert figures == {"ttft_ms", "tokens_per_s_per_user", "tokens_per_s"}
    assert "mapping.ep" in _marks(on_t3k)


#: Gemma 3 27B's published shapes (Hugging Face google/gemma-3-27b-it text_config): hidden
#: 5376, 62 layers, 32 heads of 128 over 16 KV heads, a gated MLP of 21504, vocabulary
#: 262208 tied to the head, a 1024-token sliding window on five of every six layers.
GEMMA3_27B = {
    "name": "gemma-3-27b-it",
    "hidden": 5376,
    "layers": 62,
    "heads": 32,
    "kv_heads": 16,
    "head_dim": 128,
    "ffn": 21504,
    "vocab": 262208,
    "tied_embeddings": True,
    "params_b": 27.0,
    "norm": "RMSNorm",
}


@pytest.mark.parametrize("act", ["GeGLU", "geglu", "SwiGLU", "GeLU", "gelu_pytorch_tanh"])
def test_a_gemma_row_runs_its_gated_mlp_however_its_activation_is_written(act):
    """Gemma's MLP is gated whatever its config calls the activation (GemmaMLP:
    down(act(gate(x)) * up(x)); its config says gelu_pytorch_tanh): three 5376 x 21504
    matrices a layer. With q and o 5376 x 4096, k and v 5376 x 2048 and two norms a layer,
    the final norm and one tied 262208 x 5376 table that is 27.01B, Google's 27B."""
    from palmsim.tile_cases import case_model
    from palmsim.workload.builders import num_parameters

    base = CASES["tt_readme_llama31_8b_n150"]
    model = case_model({**base, "model": {**GEMMA3_27B, "act": act}}, 256)
    per_layer = 2 * 5376 * 4096 + 2 * 5376 * 2048 + 3 * 5376 * 21504 + 2 * 5376
    assert model.hidden_act == "silu"
    assert num_parameters(model) == 62 * per_layer + 262208 * 5376 + 5376


@pytest.mark.parametrize(
    ("act", "gated"), [("SwiGLU", True), ("squared ReLU", False), ("GeGLU", True), ("ReLU", False)]
)
def test_a_models_activation_names_its_mlp_and_an_unknown_one_is_refused(act, gated):
    """A Llama-shaped row runs the MLP its activation names: gated (three 4096 x 14336
    matrices) for SwiGLU and GeGLU, plain (two) for ReLU and squared ReLU. An activation
    palmsim does not know is refused with its name, not run as a plain MLP."""
    from palmsim.tile_cases import case_model

    base = CASES["tt_readme_llama31_8b_n150"]
    fields = {**base["model"], "act": act, "params_b": None}
    assert case_model({**base, "model": fields}, 256).hidden_act == ("silu" if gated else "gelu")
    with pytest.raises(CannotExpressError, match=r"model\.act: got 'mish'"):
        case_model({**base, "model": {**fields, "act": "mish"}}, 256)


def test_a_rows_sliding_window_attends_within_it_on_all_but_its_global_layers():
    """Gemma 3's sliding_window 1024 with sliding_window_pattern 6: layers 1-5 of each six
    attend to at most 1024 keys, the sixth (index 5, 11, ...) to the whole sequence; without
    a window every layer attends to all."""
    from palmsim.tile_cases import case_model

    base = CASES["tt_readme_llama31_8b_n150"]
    windowed = {**GEMMA3_27B, "sliding_window": 1024, "sliding_window_pattern": 6}
    model = case_model({**base, "model": windowed}, 256)
    assert [model.attention_window(i) for i in range(7)] == [1024] * 5 + [None, 1024]
    full = case_model({**base, "model": GEMMA3_27B}, 256)
    assert all(full.attention_window(i) is None for i in range(62))


@pytest.mark.parametrize("text", ["TP=32 (2-D tensor parallel over the 8x4 mesh)", "TP=32"])
def test_a_galaxy_demo_row_runs_its_2d_mesh_however_it_is_written(text):
    """The Galaxy Llama demo shards every weight over its 8x4 mesh (ShardTensor2dMesh in its
    attention and MLP): a TP = 32 row of it is 2-D tensor parallel whether or not its text
    says so; a row of other code stays 1-D."""
    import copy

    from palmsim.tile_cases import _tp_2d

    case = copy.deepcopy(CASES["tt_galaxy_llama33_70b_isl4k_b32"])
    case["hardware"]["system"]["parallelism"] = text
    assert _tp_2d(case) == (8, 4)
    case["scenario"]["demo"] = "models/tt_transformers/demo/simple_text_demo.py"
    case["source"]["path"] = "models/README.md"
    assert _tp_2d(case) == ((8, 4) if "8x4" in text else None)


@pytest.mark.parametrize("text", ["tp=8", "TP 8", "TP8", "TP: 8", "TP x8", "Tp = 8 (one ring)"])
def test_a_tensor_parallel_degree_reads_however_a_table_writes_it(text):
    """'TP=8' written in the other ways tables write it is the same case, and a text that
    names no degree over 8 chips is named, not run on one."""
    plain = copy.deepcopy(CASES["tt_readme_llama31_70b_quietbox"])
    assert plain["hardware"]["system"]["parallelism"] == "TP=8"
    case = copy.deepcopy(plain)
    case["hardware"]["system"]["parallelism"] = text
    assert predict(case) == predict(plain)
    case["hardware"]["system"]["parallelism"] = "eight-way tensor parallel"
    with pytest.raises(CannotExpressError, match="parallelism 'eight-way tensor parallel'"):
        predict(case)


def test_data_parallel_replicas_on_separate_cards_each_serve_their_share():
    """Llama 3.1 8B, DP=2 on two p150 cards (models/README.md's 2 x p150 row): the replicas
    share nothing, so each serves half the batch at the t/s/u of one p150 with 32 users, and
    t/s = 64 x t/s/u. The p150 config is one chip: the pair is no system palmsim could map."""
    one = copy.deepcopy(CASES["tt_readme_llama31_8b_p150"])
    one["measured"] = {"tokens_per_s_per_user": 1.0, "tokens_per_s": 1.0}
    pair = copy.deepcopy(one)
    pair["hardware"]["system"].update(chips=2, parallelism="DP=2")
    pair["scenario"]["batch"] = 64
    single = {m: p for m, _, p in predict(one)}
    both = {m: p for m, _, p in predict(pair)}
    assert both["tokens_per_s_per_user"] == pytest.approx(single["tokens_per_s_per_user"])
    assert both["tokens_per_s"] == pytest.approx(64 * single["tokens_per_s_per_user"])


@pytest.mark.parametrize(
    ("code", "ops"),
    [
        ("models/demos/wormhole/falcon7b", 31),
        ("models/demos/tg/falcon7b", 31),
        ("models/demos/t3000/falcon40b", 32),
    ],
)
def test_a_falcon_demo_row_is_dispatched_op_by_op_and_bound_by_the_host(code, ops):
    """tt-metal's Falcon demos trace neither pass, so each of a layer's ops (31 in Falcon
    7B's decode, 32 in Falcon 40B's, read from their code) waits for the host's dispatch: a
    decode step of Falcon 7B on an n150 lasts at least 32 layers x ops x 49.19 us."""
    from palmsim.tile_cases import _demo_ops_per_layer, _demo_trace

    assert _demo_ops_per_layer(code) == ops
    assert _demo_trace(code) == "none"
    case = copy.deepcopy(CASES["tt_readme_falcon7b_n150"])
    case["scenario"]["demo"] = code
    assert "inference.ops_per_layer" not in _marks(case)
    figures = {m: p for m, _, p in predict(case)}
    assert 1 / figures["tokens_per_s_per_user"] >= 32 * ops * 49.19e-6


def test_a_galaxy_user_reads_its_whole_cache_on_its_device_group():
    """The Galaxy demo keeps one user's cache on the 8 chips of its device group (its one KV
    head each), so a step at 64K tokens of context reads, per chip, at least
    80 layers x 2 x 128 x (65536 - 1024) more bfp8 bytes (1.0625 B) than at 1K, over the
    chip's 267 GB/s: 5.26 ms more, where a cache split over the 4 groups added a quarter."""
    steps = {}
    for tokens in (1024, 65536):
        case = copy.deepcopy(CASES["tt_galaxy_llama33_70b_isl64k_b1"])
        case["scenario"]["prefill_len"] = tokens
        case["measured"] = {"decode_ms_per_token": 1.0}
        ((_, _, ms),) = predict(case)
        steps[tokens] = ms * 1e-3
    grown = 80 * 2 * 128 * (65536 - 1024) * 1.0625 / 267e9
    assert steps[65536] - steps[1024] >= 0.99 * grown


def test_a_model_row_carries_its_configs_assumptions_and_a_microbenchmark_does_not():
    """The Blackhole configs list what no Blackhole measurement gives (their assumptions:
    sections); a model row run on one is marked with them, a GEMM row (its fitted rates
    only) is not, nor a row on the p150, whose rates are all fitted to its own cases."""
    import copy

    row = copy.deepcopy(CASES["tt_readme_llama31_8b_n150"])
    row["hardware"]["hw_spec_ref"] = "tenstorrent_blackhole.systems.p100a"
    assert set(_marks(row)) == {"hw.chip.cores"}
    row["hardware"]["hw_spec_ref"] = "tenstorrent_blackhole.systems.p150"
    assert substitutions(row) == []  # every rate of the p150 fitted to its own cases
    assert substitutions(CASES["tt_gemm_p150_bf16_hifi4_2560x4992x4992"]) == []
    assert substitutions(CASES["tt_readme_llama31_8b_n150"]) == []  # Wormhole: measured


def test_a_waferllm_phase_is_one_layer_on_its_cores_times_the_layers(monkeypatch):
    """WaferLLM's programs time one layer on the P x P cores (one head as wide as the model:
    K and V as wide as Q) and the paper scales by the layers. Each phase runs on its own
    cores (the e2e row: prefill 660x660, decode 360x360), as a one- and a two-layer model
    whose difference, times LLaMA3-8B's 32 layers, is the phase's time; the 420x420 decode,
    whose 16 GB of fp16 weights could not all fit its 8.5 GB of SRAM, runs. The prefill's
    MeshGEMMs span the whole grid: one tile, the one head whole (1 KV head); the decode's
    4 x 4 regions split it in 16."""
    import palmsim.tile_cases as tc

    runs: list[tuple[str, int, int, int, float, float]] = []
    original = tc._simulate

    def spy(hw_path, overrides, model, inference, mapping):
        summary = original(hw_path, overrides, model, inference, mapping)
        runs.append(
            (
                overrides[0],
                model.num_hidden_layers,
                model.num_key_value_heads,
                inference.output_len,
                summary["ttft_s"],
                summary["tpot_s"],
            )
        )
        return summary

    monkeypatch.setattr(tc, "_simulate", spy)
    ((metric, _, tpr),) = predict(CASES["waferllm_e2e_llama3_8b_2048_128"])
    assert metric == "e2e_tpr_tokens_per_s"
    assert [(cores, n, kv) for cores, n, kv, *_ in runs] == [
        ("hw.chip.cores=[660, 660]", 1, 1),
        ("hw.chip.cores=[660, 660]", 2, 1),
        ("hw.chip.cores=[360, 360]", 1, 16),
        ("hw.chip.cores=[360, 360]", 2, 16),
    ]
    ttft_s = 32 * (runs[1][4] - runs[0][4])
    tpot_s = 32 * (runs[3][5] - runs[2][5])
    assert runs[2][3] == 128 and ttft_s > 0 and tpot_s > 0
    assert tpr == pytest.approx(128 / (ttft_s + 127 * tpot_s), rel=1e-12)

    ((metric, measured, tpr),) = predict(CASES["waferllm_decode_llama3_8b_4k_420"])
    assert metric == "decode_tpr_tokens_per_s" and measured == 2699.9
    assert runs[-1][0] == "hw.chip.cores=[420, 420]"
    assert tpr == pytest.approx(1 / (32 * (runs[-1][5] - runs[-2][5])), rel=1e-12)


def test_a_wafer_case_without_cores_runs_a_layer_pipeline(monkeypatch):
    """Cerebras's own inference (no ``cores`` in the case) pipelines the layers, each on its
    own region: a CS-3's 750 x 1200 = 900,000 cores over Llama-3.1-8B's 32 layers are 28,125
    cores a layer, whose largest square of 4 x 4 regions is 164 x 164 (isqrt 167, down to a
    multiple of 4). A layer's step is a two-stage run on two such regions less a one-stage
    run on one, and the model keeps its 8 KV heads (WaferLLM's widening is its programs')."""
    import palmsim.tile_cases as tc

    runs: list[tuple[str, int, int, float]] = []
    original = tc._simulate

    def spy(hw_path, overrides, model, inference, mapping):
        summary = original(hw_path, overrides, model, inference, mapping)
        runs.append((overrides[0], mapping.pp, model.num_key_value_heads, summary["tpot_s"]))
        return summary

    monkeypatch.setattr(tc, "_simulate", spy)
    case = {
        "id": "cs3_llama31_8b",
        "hardware": {"hw_spec_ref": "cerebras_wse3", "system": {"chips": 1}},
        "model": {
            "name": "Llama-3.1-8B", "hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8,
            "ffn": 14336, "vocab": 128256, "act": "SwiGLU", "norm": "RMSNorm",
        },
        "scenario": {"batch": 1, "phase": "decode", "context_len": 1024},
        "measured": {"tokens_per_s_per_user": 1800},
    }  # fmt: skip
    ((metric, _, tps),) = predict(case)
    assert metric == "tokens_per_s_per_user"
    assert [r[:3] for r in runs] == [
        ("hw.chip.cores=[164, 164]", 1, 8),
        ("hw.chip.cores=[328, 164]", 2, 8),
    ]
    assert tps == pytest.approx(1 / (32 * (runs[1][3] - runs[0][3])), rel=1e-12)


def test_waferllm_pads_every_dimension_to_the_grid_side():
    """WaferLLM's programs give each of P cores dim / P of a row, and its configs pad to it
    (LLaMA3-8B on 360x360: dim 4320, ffn_dim 14400, seq_len 4320). On 720x720: 4096 -> 4320,
    14336 -> 14400; on 420x420: 4096 -> 4200, 14336 -> 14700, then 14704 for 16 TP ranks.
    Their one head of the model's width is 16 heads, one per TP rank: 4320 / 16 = 270 wide,
    4200 / 16 = 262.5 -> 263; K and V as wide as Q (16 KV heads). LLaMA2-13B's 40 heads,
    which 16 ranks do not divide, run so too."""
    from palmsim.tile_cases import case_model, waferllm_model

    llama = case_model(CASES["waferllm_prefill_llama3_8b_4k_720"], 4100)
    at_720 = waferllm_model(llama, 720)
    assert (at_720.hidden_size, at_720.intermediate_size) == (4320, 14400)
    assert at_720.num_key_value_heads == at_720.num_attention_heads == 16
    assert at_720.head_dim == 270
    at_420 = waferllm_model(llama, 420)
    assert (at_420.hidden_size, at_420.intermediate_size, at_420.head_dim) == (4200, 14704, 263)
    case = copy.deepcopy(CASES["waferllm_decode_llama3_8b_4k_420"])
    case["model"] = {
        "name": "Llama-2-13b", "hidden": 5120, "layers": 40, "heads": 40, "kv_heads": 40,
        "ffn": 13824, "vocab": 32000, "act": "SwiGLU", "norm": "RMSNorm",
    }  # fmt: skip
    ((metric, _, tpr),) = predict(case)
    assert metric == "decode_tpr_tokens_per_s" and tpr > 0


def test_a_wafer_side_4_does_not_divide_runs_on_whole_regions_and_is_marked(monkeypatch):
    """LLaMA2-13B's end-to-end rows run prefill on 750x750 cores and decode on 375x375. The
    decode is simulated on 372x372 (4x4 regions of whole cores), the layer keeping the
    padding of 375 (its 5120 wide rows become 5250, then 5252 for the 4 region columns of
    2-D TP that split them), and marked; it runs 2-D TP over its 4 x 4 regions. The prefill,
    MeshGEMMs over the whole grid, is one tile of all 750x750 cores (5250 wide, TP 1),
    unmarked; with tile.mesh_gemm switched off it too runs on 748x748 in regions."""
    import palmsim.tile_cases as tc

    seen: list[tuple[str, int, object]] = []
    original = tc._simulate

    def spy(hw_path, overrides, model, inference, mapping):
        seen.append((overrides[0], model.hidden_size, mapping.tp_2d))
        return original(hw_path, overrides, model, inference, mapping)

    monkeypatch.setattr(tc, "_simulate", spy)
    case = CASES["waferllm_e2e_llama2_13b_2048_128"]
    ((metric, _, tpr),) = predict(case)
    assert metric == "e2e_tpr_tokens_per_s" and tpr > 0
    assert set(seen) == {
        ("hw.chip.cores=[750, 750]", 5250, None),
        ("hw.chip.cores=[372, 372]", 5252, (4, 4)),
    }
    assert _marks(case)["hw.chip.cores"] == "372x372 for 375x375"

    seen.clear()
    ((_, _, regions_tpr),) = predict(case, ["hw.tile.mesh_gemm=null"])
    assert set(seen) == {
        ("hw.chip.cores=[748, 748]", 5252, (4, 4)),
        ("hw.chip.cores=[372, 372]", 5252, (4, 4)),
    }
    assert regions_tpr != tpr


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Llama-3.2-11B-Vision-Instruct", "vision-language"),
        ("Qwen2.5-VL-7B", "vision-language"),
        ("Mamba-2.8B", "Mamba"),
    ],
)
def test_a_model_palmsim_does_not_build_is_named_not_run_as_a_decoder(name, reason):
    """As the training cases: a vision-language model (whose cross-attention layers and
    encoder would go missing) and a state-space model are not run as the decoder their
    fields would otherwise describe."""
    case = copy.deepcopy(CASES["tt_readme_llama31_8b_n150"])
    case["model"]["name"] = name
    with pytest.raises(CannotExpressError, match=reason):
        predict(case)


def test_a_long_tt_prefill_runs_flash_attention_and_fits(monkeypatch):
    """tt-metal's demos run ttnn's scaled_dot_product_attention, a flash-attention kernel
    over query and key chunks (TT_METAL_ATTENTION 'fused'): a 32k-token prefill of Llama 3.2
    1B on an n150 never holds its 32 heads x 32768^2 scores (32 x 2^30 x 2 B = 68.7 GB
    against 12 GB of DRAM), so it runs; with materialised scores it cannot fit. (In one
    pass: tt_transformers' chunks would hold one chunk's scores only.)"""
    import palmsim.tile_cases as tile_cases

    monkeypatch.setattr(tile_cases, "TT_TRANSFORMERS_PREFILL_CHUNK_TOKENS", 0)
    case = copy.deepcopy(CASES["tt_readme_llama32_1b_n150"])
    case["scenario"].update(prefill_len=32768, kv_len_at_measurement=32768)
    case["measured"] = {"ttft_ms": 1000.0}
    ((metric, _, ttft_ms),) = predict(case)
    assert metric == "ttft_ms" and ttft_ms > 0
    monkeypatch.setattr(tile_cases, "TT_METAL_ATTENTION", "unfused")
    with pytest.raises(tile_cases.CannotExpressError, match="does not fit"):
        predict(case)


def _cs3_70b_case(prompt: int, measured: dict) -> dict:
    """Llama-3.1-70B in 16 bits over four CS-3s as Cerebras's service runs it (a layer
    pipeline: tiles_hw_specs.yaml cerebras_wse3.multi_system_inference)."""
    return {
        "id": "cs3x4_llama31_70b",
        "hardware": {"hw_spec_ref": "cerebras_wse3", "system": {"chips": 4}},
        "model": {
            "name": "Llama-3.1-70B", "hidden": 8192, "layers": 80, "heads": 64, "kv_heads": 8,
            "ffn": 28672, "vocab": 128256,
        },
        "scenario": {"phase": "prefill + decode", "batch": 1, "prefill_len": prompt,
                     "weight_precision": "fp16"},
        "measured": measured,
    }  # fmt: skip


def test_a_layer_pipeline_prefills_a_long_prompt_in_chunks_its_layers_can_hold(monkeypatch):
    """Llama-3.1-70B over four CS-3s gets 212 x 212 cores a layer (4 x 900,000 cores over 80
    layers, to whole 4 x 4 regions): 2.2 GB of SRAM, 1.7 GB of it the layer's 16-bit
    weights. An 8K-token prompt's activations in one pass do not fit beside them; the
    service streams the prompt through its layers, and palmsim prefills it in the largest
    chunk of 2^k tokens that fits, so the decode after it runs (it had been listed as not
    fitting)."""
    import palmsim.tile_cases as tc

    chunks: list[int] = []
    original = tc._wafer_simulate

    def spy(hw_path, grid, model, inference, **kw):
        chunks.append(inference.prefill_chunk_tokens or inference.prompt_len)
        return original(hw_path, grid, model, inference, **kw)

    monkeypatch.setattr(tc, "_wafer_simulate", spy)
    ((metric, _, tps),) = predict(_cs3_70b_case(8192, {"tokens_per_s_per_user": 450}))
    assert metric == "tokens_per_s_per_user" and tps > 0
    # the whole prompt first, then halved until a pass fits
    assert chunks[0] == 8192
    assert all(b == a // 2 for a, b in itertools.pairwise(chunks))
    assert chunks[-1] < 8192
    with pytest.raises(tc.MappingError, match="does not fit"):
        original(
            "hw_configs/cerebras-wse3.yaml",
            (212, 212),
            tc.case_model(_cs3_70b_case(8192, {}), 8195),
            tc.InferenceSpec(prompt_len=8192, output_len=2, batch=1, dtype="fp16"),
            pipeline=True,
        )


def test_a_layer_pipelines_prefill_streams_its_chunks_through_the_layers(monkeypatch):
    """A layer pipeline of L = 80 layers prefills a prompt in C chunks as a pipeline of L
    stages over C micro-batches (GPipe, Huang et al. 2019: (C + L - 1) x a stage's time):
    with S(c) one layer's time over the whole prompt in chunks of c tokens, the prefill is
    (C + L - 1) / C x S(c), C = ceil(prompt / c), at the chunk of those that fit (2^k down to
    1/64 of the prompt) where that is least. Streamed, it takes far less than the L x S of the
    largest chunk's passes through the layers one after another."""
    import palmsim.tile_cases as tc

    layer_s: dict[int, float] = {}
    original = tc._wafer_simulate

    def spy(hw_path, grid, model, inference, **kw):
        out = original(hw_path, grid, model, inference, **kw)
        assert model.num_hidden_layers == 1  # one layer's time
        layer_s[inference.prefill_chunk_tokens or inference.prompt_len] = out["ttft_s"]
        return out

    monkeypatch.setattr(tc, "_wafer_simulate", spy)
    prompt, layers = 1024, 80
    ((metric, _, ttft_ms),) = predict(_cs3_70b_case(prompt, {"ttft_ms": 240}))
    assert metric == "ttft_ms"
    # a 1024-token pass does not fit beside a layer's weights (as the 8K prompt above), 512 does;
    # down to 1024 / 64
    assert sorted(layer_s) == [16, 32, 64, 128, 256, 512]
    expected_s = min(
        (-(-prompt // c) + layers - 1) / -(-prompt // c) * s for c, s in layer_s.items()
    )
    assert ttft_ms == pytest.approx(expected_s * 1e3, rel=1e-12)
    assert ttft_ms < layers * layer_s[512] * 1e3 / 4


def test_a_model_too_large_for_a_wafer_without_dram_says_so():
    """Llama-3.1-70B's 141 GB of fp16 weights on one CS-3 (44 GB of SRAM, no off-wafer
    memory in the config) is listed as not run, and the reason says the wafer has no DRAM
    rather than naming a DRAM port of 0 GB."""
    case = {
        "id": "cs3_70b_one_wafer",
        "hardware": {
            "hw_spec_ref": "cerebras_wse3",
            "system": {"chips": 1, "parallelism": "none"},
        },
        "model": {
            "name": "Llama-3.1-70B",
            "hidden": 8192,
            "layers": 80,
            "heads": 64,
            "kv_heads": 8,
            "ffn": 28672,
            "vocab": 128256,
        },
        "scenario": {
            "phase": "decode",
            "batch": 1,
            "prefill_len": 128,
            "weight_precision": "fp16",
        },
        "measured": {"tokens_per_s_per_user": 450},
    }
    with pytest.raises(CannotExpressError, match="the hardware has no DRAM"):
        predict(case)


def test_a_64k_prefill_of_llama_8b_fits_an_n150_in_tt_transformers_chunks(monkeypatch):
    """tt_transformers prefills a long prompt in chunks (TT_TRANSFORMERS_PREFILL_CHUNK_TOKENS,
    4096: Llama 3.1 8B's on an n150 in its model_config.py), each pass holding one chunk's
    activations: a 64k-token prompt of Llama 3.1 8B runs on the n150's 12 GB. Prefilled in
    one pass, its activations alone would take the memory the weights and cache leave."""
    import palmsim.tile_cases as tile_cases

    case = copy.deepcopy(CASES["tt_readme_llama31_8b_n150"])
    case["scenario"].update(prefill_len=65536, kv_len_at_measurement=65536, batch=1)
    case["measured"] = {"ttft_ms": 1000.0}
    ((metric, _, ttft_ms),) = predict(case)
    assert metric == "ttft_ms" and ttft_ms > 0
    monkeypatch.setattr(tile_cases, "TT_TRANSFORMERS_PREFILL_CHUNK_TOKENS", 0)
    with pytest.raises(tile_cases.CannotExpressError, match="does not fit"):
        predict(case)


def test_malformed_fields_are_named_and_a_figure_no_run_can_have_never_reaches_the_table(
    tmp_path,
):
    """Fuzzed tile cases (validate over fields set to null, text, NaN and huge numbers) once
    crashed the whole command or fell through as "internal error": a measured figure of 0
    divided the error by zero when the table was printed, a text ``hardware.system`` or a null
    ``scenario`` raised AttributeError, a model of 10^30 layers counted its parameters layer by
    layer for ever, an empty ``context_len`` raised IndexError, a wafer row's cores beyond
    the wafer's ran on cores it does not have and a row's chips beyond its parallelism on
    fewer. Each is now one case's one-line reason, and the table is written."""
    import yaml

    from palmsim.validate import format_report

    def variant(case_id, name, change):
        case = copy.deepcopy(CASES[case_id])
        case["id"] = name
        change(case)
        return case

    def blank_context(case):
        case["scenario"].pop("prefill_len", None)
        case["scenario"]["context_len"] = ""

    measured, model = "measured", "model"
    cases = [
        variant("tt_ccl_allreduce_wh_line2_1GiB", "zero", lambda c: c[measured].update(time_us=0)),
        variant("tt_gemm_n150_bf16_hifi4_16k", "nan", lambda c: c[measured].update(time_ns=NAN)),
        variant(
            "tt_gemm_n150_bf16_hifi4_16k", "negative", lambda c: c[measured].update(time_ns=-3)
        ),
        variant("tt_readme_llama32_1b_n150", "deep", lambda c: c[model].update(layers=10**12)),
        variant("tt_readme_llama32_1b_n150", "no_scenario", lambda c: c.update(scenario=None)),
        variant("tt_dram_read_wh_n150", "text_source", lambda c: c.update(source="a README")),
        variant("tt_readme_llama32_1b_n150", "no_context", blank_context),
        variant(
            "tt_readme_llama31_8b_n150",
            "more_chips",
            lambda c: c["hardware"]["system"].update(chips=10**6),
        ),
        variant(
            "waferllm_decode_llama3_8b_4k_420",
            "wafer_too_small",
            lambda c: c["scenario"].update(cores="100000x100000"),
        ),
        copy.deepcopy(CASES["tt_dram_read_wh_n150"]),
    ]
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"cases": cases}))
    report = validate(str(path))
    format_report(report)  # no ZeroDivisionError
    reasons = {s.case: s.reason for s in report.skipped}
    assert reasons["zero"] == "measured.time_us: got 0.0; expected a number above zero"
    assert reasons["nan"] == "measured.time_ns: got nan; expected a number above zero"
    assert reasons["negative"] == "measured.time_ns: got -3.0; expected a number above zero"
    assert "too large to simulate: model.num_hidden_layers=1000000000000" in reasons["deep"]
    assert "malformed" not in reasons["no_scenario"] and "internal" not in reasons["no_scenario"]
    assert reasons["no_context"] == "context_len '' is not a positive number"
    assert reasons["wafer_too_small"] == "cores 100000x100000: cerebras-wse2 has 750x750"
    assert reasons["more_chips"] == (
        "hardware.system.chips 1000000 is not PP x TP x DP = 1 (parallelism 'none')"
    )
    # a source given as one line of text is read as the document it cites
    assert {c.case for c in report.comparisons} == {"text_source", "tt_dram_read_wh_n150"}


def test_the_gemm_report_runs_every_row_and_each_agrees_with_its_own_tflops():
    """validation/tiles_gemm_report.yaml transcribes the GEMM report's six tables: each row's
    published TFLOPs is 2MKN over its published time (to the table's two decimals), which
    catches a slip in either figure, and palmsim predicts every row."""
    cases = read_config_file("validation/tiles_gemm_report.yaml")["cases"]
    assert len(cases) == 702
    assert len({c["id"] for c in cases}) == len(cases)
    for case in cases:
        m = case["model"]
        tflops = 2 * m["M"] * m["K"] * m["N"] / case["measured"]["time_ns"] / 1e3
        assert tflops == pytest.approx(case["measured"]["tflops"], abs=0.006), case["id"]
        ((metric, measured, predicted),) = predict(case)
        assert (metric, measured) == ("time_ns", case["measured"]["time_ns"])
        assert predicted > 0


def test_numbers_fitted_together_list_their_cases_once():
    """`palmsim calibrate --tiles` prints a fit's cases and errors once: the numbers fitted
    with it (the same cases and errors) point at the line above; a fit to more than two cases
    leads with their count, mean |error| ((1 + 2 + 3) / 3 = 2.0%) and largest (3.0%); one
    to two cases lists them alone."""
    cases, errors = ("a", "b", "c"), (0.01, -0.02, 0.03)
    fits = [
        TileFit("system.collective_latency", 4e-6, "time", cases, errors),
        TileFit("system.link.bandwidth", 1e10, "bandwidth", cases, errors),
        TileFit("dram.bandwidth", 4.45e10, "bandwidth", ("d",), (0.0,)),
    ]
    lines = format_tile_calibration(fits, [("e", "why")]).splitlines()
    assert lines[0].endswith(
        "# fitted to 3 cases, mean |error| 2.0%, largest 3.0%: a +1.0%, b -2.0%, c +3.0%"
    )
    assert lines[1].endswith("# fitted with the line above")
    assert lines[2].endswith("# fitted to d +0.0%")
    assert lines[3] == "not used: e: why"


# ------------------------------------------------------------------ calibrate --tiles inputs

N150 = "hw_configs/wormhole-n150.yaml"
#: One n150 microbenchmark of each kind calibrate_tiles fits: a tuned GEMM, an out-of-box
#: GEMM timed with trace, one timed both ways (host dispatch), a tuned one timed both ways,
#: a DRAM read and a host read.
N150_KINDS = (
    "tt_gemm_n150_bf16_hifi4_16k",
    "tt_gemm_n150_oob_bf16_hifi2_3072x4096x4096_trace",
    "tt_gemm_n150_oob_bf16_hifi2_512x512x512_8x8",
    "tt_gemm_n150_bf16_hifi2_512x512x512_8x8",
    "tt_dram_read_wh_n150",
    "tt_host_read_wh_n300_output_tensor",
)


@pytest.mark.parametrize("case_id", N150_KINDS)
@pytest.mark.parametrize("measured", [None, "fast", [1.0]])
def test_calibrate_tiles_names_a_case_without_measured_figures(case_id, measured):
    """Fuzzing found AttributeErrors on a null (or non-mapping) `measured:` section."""
    from palmsim.tile_cases import calibrate_tiles

    case = copy.deepcopy(CASES[case_id])
    case["measured"] = measured
    fits, unused = calibrate_tiles([case], N150)
    why = (
        "no 'measured' figures"
        if measured is None
        else f"measured: got {measured!r}; expected a mapping of fields"
    )
    assert fits == [] and unused == [(case_id, why)]


def test_calibrate_tiles_names_an_entry_that_is_not_a_case():
    """Fuzzing found an AttributeError on `cases: [1, a]`; such entries are named by their
    place, as palmsim validate names them, and the other cases are still fitted."""
    from palmsim.tile_cases import calibrate_tiles

    dram = copy.deepcopy(CASES["tt_dram_read_wh_n150"])
    fits, unused = calibrate_tiles([1, "a", None, dram], N150)
    assert [f.key for f in fits] == ["dram.bandwidth"]
    assert unused == [
        ("#0", "got 1; expected a mapping of case fields"),
        ("#1", "got 'a'; expected a mapping of case fields"),
        ("#2", "got None; expected a mapping of case fields"),
    ]


@pytest.mark.parametrize("cases", [5, "abc", {"id": "x"}])
def test_calibrate_tiles_cli_rejects_cases_that_are_not_a_list(tmp_path, capsys, cases):
    from palmsim.cli import main

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"cases": cases}))
    assert main(["calibrate", "--tiles", "--hw", N150, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"palmsim: ConfigError: {path}: cases: got ")
    assert err.endswith("; expected a list of measurement cases")


def test_calibrate_tiles_reads_a_gemm_as_validate_compares_it():
    """A time given as text is no figure: validate compares such a GEMM on its TFLOP/s, and
    the fit reads the same rate, as it does when the case gives no time at all."""
    from palmsim.tile_cases import calibrate_tiles

    ids = ("tt_gemm_n150_bf16_hifi4_16k", "tt_gemm_n150_bf16_hifi4_2k_l1")
    texted, rated = [copy.deepcopy(CASES[i]) for i in ids], [copy.deepcopy(CASES[i]) for i in ids]
    for t, r in zip(texted, rated, strict=True):
        t["measured"]["time_ns"] = "fast"
        r["measured"].pop("time_ns")
    assert [figure for figure, _, _ in predict(texted[0])] == ["tflops"]
    (by_text, unused_text), (by_rate, unused_rate) = (
        calibrate_tiles(cases, N150) for cases in (texted, rated)
    )
    assert unused_text == unused_rate == []
    assert [(f.key, f.value) for f in by_text] == [(f.key, f.value) for f in by_rate]
    assert {f.key for f in by_text} == {"tile.op_latency", "tile.format_efficiency.bf16"}


def test_a_tenstorrent_row_without_formats_takes_the_demos_performance_precision():
    """A row that states no weight precision runs as tt_transformers' performance
    configuration (bfp4 MLP, bfp8 attention and KV cache: PERF.md's precision table) and
    says so; stated, the same text gives the same figures and no mark."""
    from palmsim.tile_cases import _weight_formats

    stated = copy.deepcopy(CASES["tt_readme_llama31_8b_n150"])
    stated["scenario"]["weight_precision"] = "bfp4 MLP, bfp8 attention"
    stated["scenario"].pop("kv_cache_precision", None)
    silent = copy.deepcopy(stated)
    silent["scenario"].pop("weight_precision")
    # (attention, MLP, KV cache)
    assert _weight_formats(silent["scenario"], False) == ("bfp8", "bfp4", "bfp8")
    assert predict(silent) == predict(stated)
    marks = _marks(silent)
    assert "inference.weight_dtype" in marks
    assert "inference.weight_dtype" not in _marks(stated)
    # a text that names no format is still refused, not defaulted
    garbled = copy.deepcopy(stated)
    garbled["scenario"]["weight_precision"] = "mixed"
    with pytest.raises(CannotExpressError, match="weight precision 'mixed' not understood"):
        predict(garbled)


def test_a_tenstorrent_row_naming_no_code_runs_tt_transformers():
    """A model row on Tenstorrent hardware that names no serving code (no demo, a source of
    no demo's path) runs tt_transformers, as the README's LLM table's rows do, and says so:
    the same figures as the row naming it."""
    from palmsim.tile_cases import TT_METAL_DEFAULT_CODE

    named = copy.deepcopy(CASES["tt_readme_llama31_8b_n150"])
    named["scenario"]["demo"] = TT_METAL_DEFAULT_CODE
    silent = copy.deepcopy(named)
    silent["scenario"].pop("demo")
    assert silent["source"]["path"] == "models/README.md"
    assert predict(silent) == predict(named)
    assert _marks(silent)["inference.serving_code"] == TT_METAL_DEFAULT_CODE
    assert "inference.serving_code" not in _marks(named)
    # a WaferLLM row names no Tenstorrent code and takes none
    wafer = CASES["waferllm_decode_llama3_8b_4k_420"]
    assert "inference.serving_code" not in _marks(wafer)


def test_a_row_without_its_parallelism_runs_tensor_parallel_over_its_systems_chips():
    """A model row that gives no chips takes its system's (the T3000's 8, a Galaxy's 32), and
    one that states no parallelism runs one model tensor-parallel over all of them, 2-D on
    the Galaxy's 8 x 4 mesh, marked: the same figures as the row stating TP=8."""
    from palmsim.tile_cases import _parallelism, _tp_2d

    stated = CASES["tt_readme_llama31_70b_quietbox"]
    assert stated["hardware"]["system"]["parallelism"] == "TP=8"
    silent = copy.deepcopy(stated)
    silent["hardware"]["system"] = {}
    assert _parallelism(silent) == (1, 8, 1)
    assert predict(silent) == predict(stated)
    marks = _marks(silent)
    assert marks["hardware.system.parallelism"] == "TP=8"
    assert "hardware.system.parallelism" not in _marks(stated)
    galaxy = copy.deepcopy(CASES["tt_perf_llama31_8b_tg_b1_isl512"])
    galaxy["hardware"].pop("system")
    assert _parallelism(galaxy) == (1, 32, 1)
    assert _tp_2d(galaxy) == (8, 4)
    one_chip = copy.deepcopy(CASES["tt_readme_llama31_8b_n150"])
    one_chip["hardware"].pop("system")
    assert _parallelism(one_chip) == (1, 1, 1)
    assert "hardware.system.parallelism" not in _marks(one_chip)


def test_a_rows_serving_lengths_read_under_a_benchmarks_names():
    """ISL, input_len and batch_size name the case format's prefill_len and batch; a length
    given twice differently, or not at all, is named."""
    case = CASES["tt_readme_llama31_8b_n150"]
    renamed = copy.deepcopy(case)
    renamed["scenario"]["ISL"] = renamed["scenario"].pop("prefill_len")
    renamed["scenario"]["batch_size"] = renamed["scenario"].pop("batch")
    assert predict(renamed) == predict(case)
    twice = copy.deepcopy(renamed)
    twice["scenario"]["prefill_len"] = 64
    with pytest.raises(CannotExpressError, match="prefill_len is given twice, as 128 and 64"):
        predict(twice)
    lengthless = copy.deepcopy(case)
    lengthless["scenario"].pop("prefill_len")
    with pytest.raises(CannotExpressError, match=r"gives no prefill_len \(nor context_len\)"):
        predict(lengthless)


#: (case, its measured figure calibrate_tiles divides by) of N150_KINDS
N150_FIGURES = (
    ("tt_gemm_n150_bf16_hifi4_16k", "time_ns"),
    ("tt_gemm_n150_oob_bf16_hifi2_3072x4096x4096_trace", "time_ns"),
    ("tt_gemm_n150_oob_bf16_hifi2_512x512x512_8x8", "time_ns"),
    ("tt_gemm_n150_oob_bf16_hifi2_512x512x512_8x8", "traced_time_ns"),
    ("tt_gemm_n150_bf16_hifi2_512x512x512_8x8", "time_ns"),
    ("tt_gemm_n150_bf16_hifi2_512x512x512_8x8", "traced_time_ns"),
    ("tt_dram_read_wh_n150", "ubench_GBps_at_12GTps"),
    ("tt_host_read_wh_n300_output_tensor", "GBps"),
)


@pytest.mark.parametrize(("case_id", "key"), N150_FIGURES)
@pytest.mark.parametrize("value", [0, -5, NAN, float("inf"), "fast", True, 1e300, 1e-300])
def test_calibrate_tiles_fits_only_a_finite_positive_measurement(case_id, key, value):
    """Fuzzing found ZeroDivisionErrors and LinAlgErrors on zero, infinite and NaN times and
    rates, and negative ones fitted as a negative efficiency or bandwidth: such a case is
    not used, and says why."""
    from palmsim.tile_cases import calibrate_tiles

    case = copy.deepcopy(CASES[case_id])
    case["measured"][key] = value
    case["measured"].pop("tflops", None)  # the rate a time that is no number gives way to
    fits, unused = calibrate_tiles([case], N150)
    assert fits == []
    ((name, why),) = unused
    assert name == case_id
    assert why.startswith(f"measured {key} ")
    assert why.endswith(("is not a positive number", "is not between 1e-100 and 1e+100"))


def test_calibrate_tiles_leaves_out_a_bad_case_and_fits_the_others_as_without_it():
    from palmsim.tile_cases import calibrate_tiles

    good = [copy.deepcopy(CASES[c]) for c in N150_KINDS]
    bad = copy.deepcopy(CASES["tt_gemm_n150_bf16_hifi4_2k_l1"])
    bad["measured"]["time_ns"] = -1.0
    alone, _ = calibrate_tiles(good, N150)
    fits, unused = calibrate_tiles([*good, bad], N150)
    assert fits == alone
    assert unused == [(bad["id"], "measured time_ns -1.0 is not a positive number")]


def test_calibrate_tiles_fits_a_rate_given_for_a_time_as_the_time():
    """The n150's GEMMs with their TFLOP/s in place of their times (2MNK / t), the LoudBox
    collectives with their busbw in place of theirs (size x 2(n-1)/n / t for an all-reduce,
    x (n-1)/n for the rest) and the p150's SDPA times with their TFLOP/s fit the same numbers
    on the same cases."""
    from palmsim.tile_cases import calibrate_tiles

    def as_rates(ids, rate):
        cases = [copy.deepcopy(CASES[c]) for c in ids]
        for case in cases:
            case["measured"] = {"rate": rate(case), **case["measured"]}
        return cases

    def tflops(case):
        m, k, n = (case["model"][d] for d in "MKN")
        return 2 * m * k * n / (case["measured"].pop("time_ns") * 1e-9) / 1e12

    def busbw(case):
        n, kind = case["hardware"]["system"]["chips"], case["model"]["name"]
        factor = 2 * (n - 1) / n if "all_reduce" in kind else (n - 1) / n
        return (
            case["scenario"]["size_bytes"] / (case["measured"].pop("time_us") * 1e-6) / 1e9 * factor
        )

    def sdpa_tflops(case):
        return case["derived"]["flops"] / (case["measured"].pop("time_ms") * 1e-3) / 1e12

    gemms = ("tt_gemm_n150_bf16_hifi4_16k", "tt_gemm_n150_bf16_hifi4_2k_l1")
    sdpas = [c for c in CASES if c.startswith("tt_sdpa_p150_")]
    ccls = [c for c in CASES if c.startswith("tt_ccl_") and "_wh_" in c and "alltoall" not in c]
    for ids, hw, metric, rate in (
        (gemms, N150, "tflops", tflops),
        (ccls, "hw_configs/wormhole-t3000.yaml", "busbw_GBps", busbw),
        (sdpas, "hw_configs/blackhole-p150.yaml", "tflops", sdpa_tflops),
    ):
        timed, _ = calibrate_tiles([copy.deepcopy(CASES[c]) for c in ids], hw)
        cases = as_rates(ids, rate)
        for case in cases:
            case["measured"][metric] = case["measured"].pop("rate")
            case["measured"].pop("algbw_GBps", None)
        rated, unused = calibrate_tiles(cases, hw)
        assert timed and not unused
        assert [(f.key, f.cases) for f in rated] == [(f.key, f.cases) for f in timed]
        assert [f.value for f in rated] == pytest.approx([f.value for f in timed], rel=1e-6)


@pytest.mark.parametrize("size", [0, -1, NAN, "big"])
def test_calibrate_tiles_fits_only_a_collective_of_positive_size(size):
    from palmsim.tile_cases import calibrate_tiles

    case = copy.deepcopy(CASES["tt_ccl_allreduce_wh_loudbox_ring8_64MiB"])
    case["scenario"]["size_bytes"] = size
    fits, unused = calibrate_tiles([case], "hw_configs/wormhole-t3000.yaml")
    assert fits == []
    assert unused == [(case["id"], f"scenario.size_bytes {size!r} is not a positive number")]


@pytest.mark.parametrize("dimension", ["M", "K", "N"])
def test_calibrate_tiles_fits_only_a_gemm_of_positive_dimensions(dimension):
    """A negative M was fitted as a negative efficiency."""
    from palmsim.tile_cases import calibrate_tiles

    case = copy.deepcopy(CASES["tt_gemm_n150_bf16_hifi4_16k"])
    case["model"][dimension] = -4096
    assert calibrate_tiles([case], N150) == (
        [],
        [(case["id"], f"GEMM {dimension} -4096 is not a positive number")],
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m, s: m.update(M="abc"), "GEMM M 'abc' is not a positive number"),
        (lambda m, s: m.update(K=0), "GEMM K 0 is not a positive number"),
        (lambda m, s: m.update(N=[4096]), r"GEMM N \[4096\] is not a positive number"),
        (lambda m, s: s.update(math_fidelity="HiFi9"), "math fidelity 'HiFi9'"),
    ],
)
def test_calibrate_tiles_skips_a_format_whose_every_gemm_is_not_used(change, reason):
    """Fuzzing found a ZeroDivisionError where the only traced out-of-box GEMM of a format
    was not used: its group was left empty and fitted. Each group of GEMMs (tuned or out
    of box) with no usable case is not fitted."""
    from palmsim.tile_cases import calibrate_tiles

    for case_id in (
        "tt_gemm_n150_oob_bf16_hifi2_3072x4096x4096_trace",
        "tt_gemm_n150_bfp4_lofi_16k",
    ):
        case = copy.deepcopy(CASES[case_id])
        change(case["model"], case["scenario"])
        fits, unused = calibrate_tiles([case], N150)
        assert fits == []
        ((name, why),) = unused
        assert name == case_id and re.search(reason, why)


def test_calibrate_tiles_fits_no_collective_over_one_chip():
    """A collective over one chip moves no byte over a link: fitting it divided by zero."""
    from palmsim.tile_cases import calibrate_tiles

    case = copy.deepcopy(CASES["tt_ccl_allreduce_wh_line2_1GiB"])
    case["hardware"]["system"]["chips"] = 1
    fits, unused = calibrate_tiles([case], "hw_configs/wormhole-t3000.yaml")
    assert fits == [] and unused == [(case["id"], "a collective over one chip uses no link")]


def test_calibrate_tiles_cli_with_no_case_for_the_hardware_is_a_config_error(tmp_path, capsys):
    """It printed "no case of FILE is for HW" on stdout, with exit 2 and nothing on stderr."""
    from palmsim.cli import main

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"cases": [CASES["tt_dram_read_wh_n150"]]}))
    assert main(["calibrate", "--tiles", "--hw", "hw_configs/dgx-a100.yaml", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(
        f"palmsim: ConfigError: {path}: cases for hw_configs/dgx-a100.yaml: got []; expected a "
        "microbenchmark palmsim fits"
    )


def test_calibrate_tiles_takes_a_shipped_configs_bare_name_as_run_does(tmp_path, capsys):
    """`--hw wormhole-n150` was read as a file of that name (ConfigError: missing) with
    --tiles, though run, serve and calibrate without --tiles resolve it to the shipped
    config: both spellings now fit the same case to the same line."""
    from palmsim.cli import main

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"cases": [CASES["tt_dram_read_wh_n150"]]}))
    printed = []
    for hw in (N150, "wormhole-n150"):
        assert main(["calibrate", "--tiles", "--hw", hw, str(path)]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "dram.bandwidth: " in printed[0]


def test_calibrate_tiles_cli_with_no_usable_case_says_why_and_is_a_config_error(tmp_path, capsys):
    from palmsim.cli import main

    case = copy.deepcopy(CASES["tt_dram_read_wh_n150"])
    case["measured"]["ubench_GBps_at_12GTps"] = 0
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"cases": [case]}))
    assert main(["calibrate", "--tiles", "--hw", N150, str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == (
        "not used: tt_dram_read_wh_n150: measured ubench_GBps_at_12GTps 0 is not a positive "
        "number\n"
    )
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(
        f"palmsim: ConfigError: {path}: cases for {N150}: got ['tt_dram_read_wh_n150']; "
        "expected a microbenchmark palmsim fits"
    )


@pytest.mark.parametrize("time_ns", [1e-3, 1.0])
def test_calibrate_tiles_does_not_print_an_efficiency_a_chip_cannot_have(time_ns):
    """The 16384^3 bfp4 GEMM timed in a nanosecond: faster than the n150's peak, its fitted
    efficiency is outside (0, 1] (it came out as -0.333 once the op latency is taken off);
    such a number would be pasted into a config, so it is listed as not fitted instead."""
    from palmsim.tile_cases import calibrate_tiles

    case = copy.deepcopy(CASES["tt_gemm_n150_bfp4_lofi_16k"])
    case["measured"]["time_ns"] = time_ns
    fits, unused = calibrate_tiles([case], N150)
    assert fits == []
    ((key, why),) = unused
    assert key == "tile.format_efficiency.bfp4"
    assert why.startswith("not fitted: its cases give ") and "outside (0, 1]" in why
    assert why.endswith(": tt_gemm_n150_bfp4_lofi_16k")


@pytest.mark.parametrize("section", ["scenario", "model"])
def test_calibrate_tiles_names_a_section_that_is_no_mapping(section):
    """A scenario or model written as a number or a word crashed the fit (fuzzing of the
    tile calibration file); the case is not used, and says which section is wrong."""
    from palmsim.tile_cases import calibrate_tiles

    case = copy.deepcopy(CASES["tt_gemm_n150_bfp4_lofi_16k"])
    case[section] = 1000000
    fits, unused = calibrate_tiles([case], N150)
    assert fits == []
    assert unused == [(case["id"], f"{section}: got 1000000; expected a mapping of fields")]


def test_a_count_written_as_a_product_is_not_read_as_its_first_factor():
    """positive_count reads "32 users" and "8 (after warm-up)" as their number, but "4 x 8"
    (a Galaxy's chips as a mesh) read as 4 until now: a product is refused, naming it."""
    from palmsim.tile_cases import positive_count

    assert positive_count("32 users", "batch") == 32
    assert positive_count("32 (4 x 8 mesh)", "chips") == 32
    for text in ("4 x 8", "4 x8", "4x8"):
        with pytest.raises(CannotExpressError, match=f"chips '{text}' is not a positive number"):
            positive_count(text, "chips")


def test_a_plain_mlp_family_row_may_leave_out_its_activation_and_width():
    """A row of a plain-MLP family (Falcon 7B here) that leaves out its activation and MLP
    width runs the GeLU MLP 4 x hidden wide its published config gives (falcon-7b: 18176 =
    4 x 4544), marked: the same figures as the row stating them. A gated (SwiGLU) model's
    width has no default, and a missing vocabulary is named."""

    stated = CASES["tt_readme_falcon7b_n150"]
    assert stated["model"]["ffn"] == 4 * stated["model"]["hidden"]
    assert stated["model"]["act"].lower() == "gelu"
    silent = copy.deepcopy(stated)
    del silent["model"]["act"], silent["model"]["ffn"]
    assert predict(silent) == predict(stated)
    marks = _marks(silent)
    assert (marks["model.act"], marks["model.ffn"]) == ("GeLU", "4 x hidden")
    assert not {"model.act", "model.ffn"} & set(_marks(stated))
    # a Llama row without its activation is the gated MLP it states, marked as such
    llama = copy.deepcopy(CASES["tt_readme_llama31_8b_n150"])
    del llama["model"]["act"]
    assert predict(llama) == predict(CASES["tt_readme_llama31_8b_n150"])
    assert _marks(llama)["model.act"] == "SwiGLU"
    del llama["model"]["ffn"]
    with pytest.raises(CannotExpressError, match=r"model\.ffn is missing: a gated"):
        predict(llama)
    no_vocab = copy.deepcopy(stated)
    del no_vocab["model"]["vocab"]
    with pytest.raises(CannotExpressError, match=r"model\.vocab is missing"):
        predict(no_vocab)


def test_a_training_row_a_wafer_cannot_hold_names_cerebras_weight_streaming():
    """A training row on a Cerebras wafer (no off-wafer memory in palmsim's configs) whose
    weights, gradients and optimizer state do not fit in its SRAM is listed with the reason:
    Cerebras trains it by streaming weights from MemoryX, which palmsim does not model."""
    case = {
        "id": "wse2_gpt3_xl_training",
        "hardware": {"name": "CS-2", "hw_spec_ref": "cerebras_wse2", "system": {"chips": 1}},
        "model": {"name": "GPT-3 XL", "hidden": 2048, "layers": 24, "heads": 16, "vocab": 50257},
        "scenario": {"phase": "training", "batch": 256, "seq_len": 2048},
        "measured": {"samples_per_s": 100.0},
    }
    with pytest.raises(CannotExpressError, match=r"does not fit.*weight-streaming mode.*MemoryX"):
        predict(case)


def test_a_decode_measured_at_another_kv_length_runs_at_it():
    """A row whose decode figures were measured at a KV length other than its prompt
    (``kv_len_at_measurement``, or a ``context_len`` beside ``prefill_len``) runs its decode
    step after a prompt of that length: the t/s/u of the row prefilling that many tokens, the
    TTFT of its own prompt; a length that is no token count leaves the prompt's, marked."""

    base = CASES["tt_readme_llama31_8b_n150"]
    assert base["scenario"]["prefill_len"] == base["scenario"]["kv_len_at_measurement"] == 128
    longer = copy.deepcopy(base)
    longer["scenario"]["kv_len_at_measurement"] = "1024 (after 896 generated tokens)"
    at_1024 = copy.deepcopy(base)
    at_1024["scenario"].update(prefill_len=1024, kv_len_at_measurement=1024)
    figures = {
        name: {metric: value for metric, _, value in predict(case)}
        for name, case in (("base", base), ("longer", longer), ("at_1024", at_1024))
    }
    assert figures["longer"]["ttft_ms"] == figures["base"]["ttft_ms"]
    for metric in ("tokens_per_s_per_user", "tokens_per_s"):
        assert figures["longer"][metric] == figures["at_1024"][metric]
    assert figures["longer"]["tokens_per_s_per_user"] < figures["base"]["tokens_per_s_per_user"]
    beside = copy.deepcopy(base)
    del beside["scenario"]["kv_len_at_measurement"]
    beside["scenario"]["context_len"] = 1024
    assert predict(beside) == predict(longer)
    # a length no count reads from is the prompt's, as before the field was read, marked
    garbled = copy.deepcopy(base)
    garbled["scenario"]["kv_len_at_measurement"] = "prefill_len + 1"
    assert predict(garbled) == predict(base)
    marks = _marks(garbled)
    assert marks["scenario.kv_len_at_measurement"] == "the prompt's length"
    assert "scenario.kv_len_at_measurement" not in _marks(longer)


@pytest.mark.parametrize(
    ("name", "chips", "system"),
    [
        ("N300 (Wormhole)", None, "tenstorrent_wormhole_b0.systems.n300"),
        ("LoudBox", None, "tenstorrent_wormhole_b0.systems.quietbox_t3000"),
        ("TG (Wormhole Galaxy)", None, "tenstorrent_wormhole_b0.systems.galaxy"),
        ("Wormhole", 2, "tenstorrent_wormhole_b0.systems.n300"),
        ("Wormhole", 32, "tenstorrent_wormhole_b0.systems.galaxy"),
        ("Wormhole", 1, "tenstorrent_wormhole_b0.chip"),
        ("Wormhole", None, "tenstorrent_wormhole_b0.chip"),
    ],
)
def test_a_chip_familys_root_reference_runs_the_system_its_row_names(name, chips, system):
    """A ``hw_spec_ref`` naming a chip family alone (its root key in tiles_hw_specs.yaml) runs
    the system its ``hardware.name`` names, else the one with its chips, else the family's
    chip; the README's n150 row so gives the figures of its full reference, marked."""
    from palmsim.tile_cases import spec_ref

    case = {"hardware": {"name": name, "hw_spec_ref": "tenstorrent_wormhole_b0"}}
    if chips is not None:
        case["hardware"]["system"] = {"chips": chips}
    assert spec_ref(case) == system
    if chips is None and name.startswith("N300"):
        stated = CASES["tt_readme_llama31_8b_n150"]
        family = copy.deepcopy(stated)
        family["hardware"]["hw_spec_ref"] = "tenstorrent_wormhole_b0"
        assert predict(family) == predict(stated)
        marks = _marks(family)
        assert marks["hardware.hw_spec_ref"] == "tenstorrent_wormhole_b0.systems.n150"
        assert "hardware.hw_spec_ref" not in _marks(stated)


@pytest.mark.parametrize(
    ("text", "degrees"),
    [
        ("TP=8", (1, 8, 1)),
        ("tensor parallel 8", (1, 8, 1)),
        ("8-way tensor parallelism", (1, 8, 1)),
        ("tensor-parallel over 8 chips", (1, 8, 1)),
        ("TP across 8 devices", (1, 8, 1)),
        ("data parallel 8", (1, 1, 8)),
        ("4-way data parallelism, 2-way tensor parallelism", (1, 2, 4)),
        ("pipeline parallel 2, TP 4", (2, 4, 1)),
    ],
)
def test_a_parallelism_spelled_out_reads_as_its_abbreviation(text, degrees):
    """A ``hardware.system.parallelism`` written out ('8-way tensor parallelism', 'data
    parallel 8', 'TP over 8 chips') gives the degrees its abbreviated form ('TP=8') does."""
    from palmsim.tile_cases import _parallelism

    case = copy.deepcopy(CASES["tt_readme_llama31_70b_quietbox"])
    case["hardware"]["system"]["parallelism"] = text
    assert _parallelism(case) == degrees


def test_a_rows_figures_under_a_benchmarks_names_compare_in_the_formats_units():
    """An inference row's figures written as serving benchmarks name them (``ttft_s``,
    ``tpot_ms``, ``tokens_per_second``) are compared as the format's ``ttft_ms``,
    ``decode_ms_per_token`` and ``tokens_per_s``, the seconds in milliseconds: the same
    predictions, and the same relative errors, as the row written in the format's names."""
    stated = CASES["tt_readme_llama31_8b_n150"]
    renamed = copy.deepcopy(stated)
    renamed["measured"] = {"ttft_s": 0.104, "tpot_ms": 1e3 / 26.0, "tokens_per_second": 832}
    got = {metric: (measured, value) for metric, measured, value in predict(renamed)}
    want = {metric: (measured, value) for metric, measured, value in predict(stated)}
    assert got["ttft_ms"] == pytest.approx(want["ttft_ms"], rel=1e-12)
    assert got["tokens_per_s"] == want["tokens_per_s"]
    measured, value = got["decode_ms_per_token"]
    assert measured == pytest.approx(1e3 / 26.0)
    assert value == pytest.approx(1e3 / want["tokens_per_s_per_user"][1], rel=1e-12)


def test_the_first_falcons_run_their_parallel_block_and_a_row_may_state_one():
    """Falcon-7B feeds one LayerNorm to attention and MLP side by side, Falcon-40B a
    LayerNorm each (HF FalconConfig; tt-metal's falcon_decoder.py): taken from the name and
    marked; a stated block wins; a value that is no block is refused; a Llama stays serial."""
    from palmsim.tile_cases import case_model

    small, big = CASES["tt_readme_falcon7b_n150"], CASES["tt_readme_falcon40b_quietbox"]
    assert case_model(small, 256).parallel_block == "one_norm"
    assert case_model(big, 256).parallel_block == "two_norms"
    assert _marks(big)["model.parallel_block"] == "two_norms"
    assert case_model(CASES["tt_readme_llama31_8b_n150"], 256).parallel_block == "none"
    stated = {**small, "model": {**small["model"], "parallel_block": False}}
    assert case_model(stated, 256).parallel_block == "none"
    assert "model.parallel_block" not in _marks(stated)
    bad = {**small, "model": {**small["model"], "parallel_block": "sideways"}}
    with pytest.raises(CannotExpressError, match=r"model\.parallel_block: got 'sideways'"):
        case_model(bad, 256)


@pytest.mark.parametrize(
    ("location", "split"),
    [
        ("section '25 July 2025', TT-Metal runs table", "heads_first"),
        ("LLMs table ('Last Update: Nov 3, 2025')", "heads_first"),
        ("measured before 21 April 2026", "heads_first"),
        ("a run of 18 May 2026", "pairs"),  # PR #44614's day: the new code
        ("Sept. 3, 2026", "pairs"),
        ("PERF.md of 2025-07-25", "heads_first"),
        ("run 2026-09-17", "pairs"),
        ("a table without a date", "pairs"),  # undated: the later code
    ],
)
def test_an_sdpa_deals_its_chunks_as_the_code_of_the_cases_date(location, split):
    """tt-metal PR #44614 (2026-05-18) replaced its SDPA's users-heads-chunks split with flat
    chunk pairs: a case's source date, day-month-year, month-day-year or ISO, picks the code."""
    assert tt_metal_attention_split({"source": {"location": location}}) == split
