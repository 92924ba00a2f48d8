"""Fits of ``palmsim calibrate`` and the GEMM quantisation model, against closed forms and the
published measurements in validation/measurements.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from palmsim.api import load_experiment
from palmsim.calibrate import (
    calibrate,
    fit_allreduce,
    fit_gemm,
    fit_memory_bandwidth,
    format_calibration,
    rows_of,
)
from palmsim.cli import main
from palmsim.config.loader import load_hardware, read_config_file
from palmsim.errors import ConfigError
from palmsim.hardware.compute import gemm_efficiency, gemm_time_s

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS = str(REPO / "validation" / "measurements.yaml")
A100 = str(REPO / "hw_configs" / "dgx-a100-superpod.yaml")


@pytest.mark.parametrize(
    ("m", "n", "batch", "expected"),
    [
        (128, 128, 1, 1 / 108),  # one tile on one of 108 SMs
        (128 * 108, 128, 1, 1.0),  # exactly one full wave
        (128 * 109, 128, 1, 109 / 216),  # one tile spills into a second wave
        (64, 128, 1, 0.5 / 108),  # half-empty tile
        (128, 128, 108, 1.0),  # a batch of 108 one-tile products fills a wave
    ],
)
def test_gemm_efficiency_closed_forms(m: int, n: int, batch: int, expected: float) -> None:
    q = gemm_efficiency(m, n, batch=batch, compute_units=108, tile_m=128, tile_n=128)
    assert q == pytest.approx(expected, rel=1e-12)


def test_gemm_time_is_launch_plus_the_higher_roof() -> None:
    """A full wave at 90% of 100 TFLOP/s: 2·mkn / 90e12 plus 10 µs."""
    m, k, n = 128 * 4, 4096, 128
    nbytes = 2 * (m * k + k * n + m * n)
    t = gemm_time_s(
        m,
        k,
        n,
        operand_bytes=nbytes,
        peak_flop_per_s=100e12,
        max_efficiency=0.9,
        compute_units=4,
        tile_m=128,
        tile_n=128,
        memory_bandwidth_bytes_per_s=1e15,
        launch_latency_s=10e-6,
    )
    assert t == pytest.approx(10e-6 + 2 * m * k * n / 90e12, rel=1e-12)
    slow_memory = gemm_time_s(
        m,
        k,
        n,
        operand_bytes=nbytes,
        peak_flop_per_s=100e12,
        max_efficiency=0.9,
        compute_units=4,
        tile_m=128,
        tile_n=128,
        memory_bandwidth_bytes_per_s=1e9,
        launch_latency_s=0.0,
    )
    assert slow_memory == pytest.approx(2 * (m * k + k * n + m * n) / 1e9, rel=1e-12)


def test_fit_gemm_recovers_the_parameters_it_was_generated_with() -> None:
    shapes = [
        (64, 4096, 4096),
        (512, 8192, 8192),
        (8192, 256, 256),
        (4096, 12288, 4096),
        (1000, 3000, 5000),
        (16384, 1024, 12288),
    ]
    truth = {
        "peak_flop_per_s": 312e12,
        "max_efficiency": 0.85,
        "compute_units": 108,
        "tile_m": 128,
        "tile_n": 256,
        "memory_bandwidth_bytes_per_s": 2e12,
    }
    rows = [
        {
            "M": m,
            "N": n,
            "K": k,
            "latency_s": gemm_time_s(
                m, k, n, operand_bytes=2 * (m * k + k * n + m * n), launch_latency_s=12e-6, **truth
            ),
        }
        for m, n, k in shapes
    ]
    fit = fit_gemm(
        rows,
        peak_flop_per_s=312e12,
        compute_units=108,
        memory_bandwidth_bytes_per_s=2e12,
        dtype_bytes=2,
    )
    assert (fit.tile_m, fit.tile_n) == (128, 256)
    assert fit.max_efficiency == pytest.approx(0.85, abs=1e-9)
    assert fit.launch_latency_s == pytest.approx(12e-6, rel=1e-6)
    assert max(abs(e) for e in fit.relative_errors) < 1e-9
    # max efficiency given: the same tile and latency come back, the efficiency as given
    fixed = fit_gemm(
        rows,
        peak_flop_per_s=312e12,
        compute_units=108,
        memory_bandwidth_bytes_per_s=2e12,
        dtype_bytes=2,
        max_efficiency=0.85,
    )
    assert (fixed.tile_m, fixed.tile_n, fixed.max_efficiency) == (128, 256, 0.85)
    assert fixed.launch_latency_s == pytest.approx(12e-6, rel=1e-6)


def test_fit_memory_and_allreduce_recover_alpha_beta() -> None:
    sizes = [1e3, 1e5, 1e7, 1e9]
    fit = fit_memory_bandwidth(sizes, [5e-6 + s / 1.5e12 for s in sizes])
    assert fit.bandwidth_bytes_per_s == pytest.approx(1.5e12, rel=1e-9)
    assert fit.latency_s == pytest.approx(5e-6, rel=1e-9)
    n = 8
    times = [2 * (n - 1) * 3e-6 + 2 * (n - 1) / n * s / 200e9 for s in sizes]
    ring = fit_allreduce(sizes, times, n)
    assert ring.bus_bandwidth_bytes_per_s == pytest.approx(200e9, rel=1e-9)
    assert ring.step_latency_s == pytest.approx(3e-6, rel=1e-9)


def test_a100_gemm_fit_matches_the_published_gemms() -> None:
    """The fit behind dgx-a100-superpod.yaml's tile.gemm (max efficiency fixed at the MAMF
    sustained rate, 271.2 / 312) reproduces all 20 LLMCompass A100 GEMMs within 10%, and is
    the config's."""
    hw = load_experiment(A100).hardware
    assert hw.tile.gemm.max_efficiency == pytest.approx(271.2 / 312, abs=5e-4)
    result = calibrate(
        MEASUREMENTS,
        hw,
        gemm_case="llmcompass_a100_gemm_fp16",
        gemm_max_efficiency=hw.tile.gemm.max_efficiency,
    )
    _, fit, units = result.gemm
    assert max(abs(e) for e in fit.relative_errors) < 0.10
    g = hw.tile.gemm
    assert (units, fit.tile_m, fit.tile_n) == (g.compute_units, g.tile_m, g.tile_n)
    assert fit.max_efficiency == pytest.approx(g.max_efficiency, abs=5e-4)
    assert fit.launch_latency_s == pytest.approx(g.launch_latency_s, rel=0.01)


def test_a100_memory_kernel_fits_are_the_configs() -> None:
    """dgx-a100-superpod.yaml's memory_ops: the GeLU (streaming) fit as the default, softmax
    and layernorm each fitted on its own; each kind's fit is better than one joint fit."""
    hw = load_experiment(A100).hardware
    result = calibrate(
        MEASUREMENTS,
        hw,
        memory_cases=[
            "llmcompass_a100_gelu_fp16",
            "softmax=llmcompass_a100_softmax_fp16",
            "norm=llmcompass_a100_layernorm_fp16",
        ],
    )
    ops = hw.tile.memory_ops
    assert result.memory is not None
    _, default = result.memory
    assert default.bandwidth_bytes_per_s == pytest.approx(ops.bandwidth_bytes_per_s, rel=1e-3)
    assert default.latency_s == pytest.approx(ops.launch_latency_s, rel=1e-2)
    for kind, _, fit in result.memory_kinds:
        own = ops.for_kind(kind)
        assert fit.bandwidth_bytes_per_s == pytest.approx(own.bandwidth_bytes_per_s, rel=1e-3)
        assert fit.latency_s == pytest.approx(own.launch_latency_s, rel=1e-2)
    joint = calibrate(
        MEASUREMENTS,
        hw,
        memory_cases=[
            "llmcompass_a100_softmax_fp16",
            "llmcompass_a100_layernorm_fp16",
            "llmcompass_a100_gelu_fp16",
        ],
    ).memory
    assert joint is not None
    joint_mean = sum(abs(e) for e in joint[1].relative_errors) / len(joint[1].relative_errors)
    for fit in [default] + [f for _, _, f in result.memory_kinds]:
        mean = sum(abs(e) for e in fit.relative_errors) / len(fit.relative_errors)
        assert mean < joint_mean


def test_gemm_fit_uses_the_streaming_bandwidth_as_its_memory_roof() -> None:
    """With a memory case in the same call, the GEMM fit's memory roof is that fit's
    bandwidth: the same as fitting with it given directly."""
    hw = load_experiment(A100).hardware
    result = calibrate(
        MEASUREMENTS,
        hw,
        gemm_case="llmcompass_a100_gemm_fp16",
        memory_cases=["llmcompass_a100_gelu_fp16"],
    )
    assert result.gemm is not None and result.memory is not None
    (case,) = [
        c for c in read_config_file(MEASUREMENTS)["cases"] if c["id"] == "llmcompass_a100_gemm_fp16"
    ]
    rows = [{**r, "latency_s": r["latency_ms"] * 1e-3} for r in rows_of(case)]
    direct = fit_gemm(
        rows,
        peak_flop_per_s=312e12,
        compute_units=108,
        memory_bandwidth_bytes_per_s=result.memory[1].bandwidth_bytes_per_s,
        dtype_bytes=2,
    )
    assert result.gemm[1] == direct


def test_calibrate_rejects_an_unknown_memory_kind() -> None:
    hw = load_experiment(A100).hardware
    with pytest.raises(ConfigError, match="did you mean 'softmax'"):
        calibrate(MEASUREMENTS, hw, memory_cases=["softmaxx=llmcompass_a100_softmax_fp16"])


def test_calibrate_cli_rejects_a_max_efficiency_outside_0_1(capsys) -> None:
    code = main(
        [
            "calibrate",
            "--hw",
            A100,
            "--gemm",
            "llmcompass_a100_gemm_fp16",
            "--gemm-max-efficiency",
            "87",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--gemm-max-efficiency" in err and "87" in err and "(0, 1]" in err


def test_calibrate_cli_prints_config_yaml(capsys) -> None:
    args = ["calibrate", MEASUREMENTS, "--hw", A100, "--allreduce", "llmcompass_a100x4_allreduce"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bandwidth: 203." in out and "latency: 2.5" in out
    # a block to paste into the hardware file: one GPU's link into its node's switch
    block = yaml.safe_load(out)
    assert list(block) == ["system"] and list(block["system"]) == ["link"]
    raw = read_config_file(A100)
    raw["system"]["link"] = block["system"]["link"]
    fitted = load_hardware(A100, data=raw).cluster
    assert fitted is not None
    assert 203e9 <= fitted.intra_node.bandwidth_bytes_per_s < 204e9


def test_calibrate_names_a_missing_case_with_did_you_mean() -> None:
    hw = load_experiment(A100).hardware
    with pytest.raises(ConfigError, match="did you mean 'llmcompass_a100_gemm_fp16'"):
        calibrate(MEASUREMENTS, hw, gemm_case="llmcompass_a100_gemm_fp61")
    assert format_calibration(calibrate(MEASUREMENTS, hw)) == ""


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ([8192, None], "a null"),
        ([8192], "a short row"),
        ([8192, {"a": 1}], "a mapping"),
        ([8192, -3.0], "a negative rate"),
        (1000, "not a list"),
    ],
)
def test_a_bad_measurement_row_is_a_config_error_naming_it(tmp_path, row, why) -> None:
    """Issue 18's fuzzing found tracebacks (TypeError, ValueError) on such rows."""
    case = {"id": "gelu", "columns": ["num_elements", "G_elements_per_s"], "rows": [[1024, 1.0]]}
    case["rows"].append(row)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"cases": [case]}))
    hardware = load_experiment("hw_configs/dgx-a100-superpod.yaml").hardware
    with pytest.raises(ConfigError, match=r"gelu\.rows\[1\]"):
        calibrate(str(path), hardware, memory_cases=["gelu"])


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("nosuch", "expected one of fp32, fp16, bf16, "),
        ("", "expected one of fp32, fp16, bf16, "),
        ("fp61", "(did you mean 'fp16'?)"),
        ("BF16", "(did you mean 'bf16'?)"),
        ("nvfp4", "expected a dtype dgx-a100-superpod has a peak for ("),
    ],
)
def test_calibrate_cli_names_a_dtype_it_cannot_fit(capsys, dtype, expected) -> None:
    """Fuzzing found a KeyError (an internal error) on an unknown --dtype."""
    args = ["calibrate", "--hw", A100, "--gemm", "llmcompass_a100_gemm_fp16", "--dtype", dtype]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"palmsim: ConfigError: command line: --dtype: got {dtype!r}; ")
    assert expected in err


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--compute-units", "-5", "a positive number of SMs"),
        ("--compute-units", "0", "a positive number of SMs"),
        ("--ranks", "0", "2 or more GPUs"),
        ("--ranks", "1", "2 or more GPUs"),
        ("--min-bytes", "-1", "a size >= 0 [B]"),
        ("--min-bytes", "nan", "a size >= 0 [B]"),
        ("--min-bytes", "inf", "a size >= 0 [B]"),
    ],
)
def test_calibrate_cli_names_an_option_out_of_range(capsys, option, value, expected) -> None:
    """Fuzzing found --compute-units -5 printed into the config to paste, --compute-units 0
    and --ranks 0 silently replaced by the defaults, --min-bytes -1 accepted and
    --min-bytes nan blamed on the measurements file."""
    args = ["calibrate", "--hw", A100, "--gemm", "llmcompass_a100_gemm_fp16"]
    args += ["--allreduce", "llmcompass_a100x4_allreduce", option, value]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"palmsim: ConfigError: command line: {option}: got ")
    assert err.endswith(f"; expected {expected}")


def test_calibrate_takes_the_options_given_in_range() -> None:
    """The smallest values in range are taken as given, not as their defaults."""
    hw = load_experiment(A100).hardware
    result = calibrate(
        MEASUREMENTS,
        hw,
        gemm_case="llmcompass_a100_gemm_fp16",
        compute_units=1,
        allreduce_case="llmcompass_a100x4_allreduce",
        allreduce_ranks=2,
        allreduce_min_bytes=0.0,
    )
    assert result.gemm is not None and result.gemm[2] == 1
    assert result.allreduce is not None and result.allreduce[1].num_ranks == 2


def test_calibrate_cli_with_no_case_named_is_a_config_error(capsys) -> None:
    """It printed "nothing to fit" on stdout, with exit 2 and nothing on stderr."""
    assert main(["calibrate", MEASUREMENTS, "--hw", A100]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "palmsim: ConfigError: command line: --gemm, --memory or --allreduce: missing; "
        "expected a case to fit\n"
    )
