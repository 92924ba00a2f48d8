"""The serving case reader of ``palmsim validate`` (validation/serving_runs.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from palmsim.errors import MappingError
from palmsim.serving_cases import is_serving_case, predict, serving_spec
from palmsim.tile_cases import CannotExpressError
from palmsim.validate import validate

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "validation" / "serving_runs.yaml"


def _cases() -> list[dict]:
    return yaml.safe_load(RUNS.read_text())["cases"]


def test_every_shipped_case_is_a_serving_run_with_its_source():
    for case in _cases():
        assert is_serving_case(case)
        assert case["source"]["url"].startswith("https://github.com/")
        assert case["measured"]


def test_a_case_becomes_closed_loop_fixed_length_traffic():
    case = _cases()[1]  # ISL 128, OSL 1024, 4 requests, concurrency 1
    spec = serving_spec(case)
    t = spec.traffic
    assert (t.arrival, t.concurrency, t.num_requests) == ("closed", 1, 4)
    assert (t.lengths, t.prompt_tokens, t.output_tokens) == ("fixed", 128, 1024)
    assert (spec.weight_dtype, spec.mlp_weight_dtype, spec.kv_dtype) == ("bfp8", "bfp4", "bfp8")
    assert dict(spec.math_fidelity) == {"bfp4": "LoFi", "bfp8": "HiFi2", "bf16": "HiFi4"}


def test_a_tt_transformers_server_launches_its_23_ops_per_layer():
    """The cases' servers run tt_transformers models: serving.ops_per_layer is its decoder's
    23 device ops (as palmsim run's inference.ops_per_layer), its decode GEMMs run on one
    core per DRAM bank and its prefill weights reach the cores through the 8 column readers
    of a Wormhole's 2-D multicast matmuls (the chip's 7 DRAM banks on a p100); another
    engine keeps the op graph's kernels (0) on every core at the DRAM rate."""
    cases = _cases()
    case = cases[0]
    assert "tt_transformers" in case["serving"]["engine"]
    assert "wormhole" in case["hardware"]["config"]
    assert serving_spec(case).ops_per_layer == 23
    assert serving_spec(case).decode_readers_per_bank == 1
    assert serving_spec(case).prefill_weight_readers == 8
    (p100,) = {c["id"]: c for c in cases if "p100" in c["hardware"]["config"]}.values()
    assert serving_spec(p100).prefill_weight_readers == 7
    other = {**case, "serving": {**case["serving"], "engine": "vLLM on GPUs"}}
    assert serving_spec(other).ops_per_layer == 0
    assert serving_spec(other).decode_readers_per_bank == 0
    assert serving_spec(other).prefill_weight_readers == 0


def test_one_client_serves_requests_back_to_back():
    """With one client the requests run one after another, so the run lasts n mean
    end-to-end latencies: request throughput x mean E2EL = 1, whatever the hardware."""
    case = dict(_cases()[0])
    figures = {m: p for m, _, p in predict(case)}
    assert figures["request_throughput_per_s"] * figures["e2el_ms"] / 1e3 == pytest.approx(
        1.0, rel=1e-12
    )


def test_a_case_without_a_config_or_with_an_unknown_format_is_not_run():
    case = dict(_cases()[0])
    case["hardware"] = {**case["hardware"], "config": None}
    with pytest.raises(CannotExpressError, match=r"hardware\.config"):
        predict(case)
    case = dict(_cases()[0])
    case["serving"] = {**case["serving"], "weight_dtype": "fp4"}
    with pytest.raises(CannotExpressError, match="weight_dtype"):
        serving_spec(case)


def test_validate_reads_the_serving_runs_on_wormhole_and_blackhole():
    report = validate(str(RUNS), only=["tt_server_llama31_8b_n300_isl128_osl128_c1",
                                       "tt_server_llama31_8b_p100_isl128_osl128_c1"])  # fmt: skip
    metrics = {(c.case, c.metric) for c in report.comparisons}
    for case in ("tt_server_llama31_8b_n300_isl128_osl128_c1",
                 "tt_server_llama31_8b_p100_isl128_osl128_c1"):  # fmt: skip
        for metric in ("ttft_ms", "tpot_ms", "e2el_ms", "request_throughput_per_s"):
            assert (case, metric) in metrics
    assert not report.skipped
    # the report names the shipped config each ran on, its hardware.config
    assert {(case, path) for case, path, _ in report.hardware} == {
        ("tt_server_llama31_8b_n300_isl128_osl128_c1", "hw_configs/wormhole-n300.yaml"),
        ("tt_server_llama31_8b_p100_isl128_osl128_c1", "hw_configs/blackhole-p100a.yaml"),
    }


def test_validate_set_reaches_a_serving_case_and_other_sections_are_named():
    """``validate --set hw.*`` changes a serving case's hardware (a 10x longer op latency
    slows its decode), and a section the case sets itself is named, not dropped."""
    only = ["tt_server_llama31_8b_n300_isl128_osl128_c1"]
    tpot = {
        s: next(c.predicted for c in validate(str(RUNS), only=only, overrides=o).comparisons
                if c.metric == "tpot_ms")
        for s, o in (("base", ()), ("slow", ("hw.tile.op_latency=161.8 us",)))
    }  # fmt: skip
    assert tpot["slow"] > tpot["base"]
    report = validate(str(RUNS), only=only, overrides=["serving.tp=1"])
    assert not report.comparisons
    assert "--set serving.tp=1: a serving case takes" in report.skipped[0].reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c.update(model=[1, 2]), r"model: got \[1, 2\]; expected a mapping"),
        (lambda c: c.update(serving=None), "serving: got None; expected a mapping"),
        (lambda c: c.update(assumed=True), "assumed: got True; expected a list of mappings"),
        (lambda c: c["serving"].update(input_tokens=1e30), "too large to count"),
        (lambda c: c["serving"].update(concurrency=2.5), "not a whole number"),
        (lambda c: c["model"].update(layers=10**12), "too large to simulate"),
    ],
)
def test_a_malformed_case_is_named_not_an_internal_error(change, reason):
    """Fields fuzzed to the wrong type or size once raised AttributeError, TypeError or
    OverflowError from deep inside (listed as "internal error, please report it")."""
    case = yaml.safe_load(yaml.safe_dump(_cases()[0]))
    change(case)
    with pytest.raises((CannotExpressError, MappingError), match=reason):
        predict(case)


def test_a_format_stated_as_null_is_unstated():
    """``kv_dtype: null`` is the KV cache in the weights' format, as when the key is absent
    (it once failed an assertion)."""
    case = yaml.safe_load(yaml.safe_dump(_cases()[0]))
    case["serving"]["kv_dtype"] = None
    absent = yaml.safe_load(yaml.safe_dump(_cases()[0]))
    absent["serving"].pop("kv_dtype", None)
    assert serving_spec(case) == serving_spec(absent)
