"""``palmsim validate`` takes any published run in the measurements format (issue 15 item 4,
issue 18): no traceback from a case, each case isolated, facts derived, assumptions marked."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from palmsim.cli import main
from palmsim.validate import NotRun, read_training_run, validate

# A small GPT that simulates in well under a second: 2 layers, hidden 1024, 8 A100s.
SMALL = {
    "model": {
        "layers": 2,
        "hidden": 1024,
        "heads": 16,
        "seq_len": 1024,
        "vocab": 51200,
        "global_batch": 8,
        "micro_batch": 1,
    },
    "system": {"gpu": "A100-SXM4-80GB", "num_gpus": 8, "tp": 8, "pp": 1, "dp": 1},
    "training": {"precision": "bf16", "activation_recompute": "none", "sequence_parallel": False},
    "measured": {"tflops_per_gpu": 100.0},
}


def _case(**changes: dict) -> dict:
    case = {k: dict(v) for k, v in SMALL.items()}
    for section, fields in changes.items():
        for key, value in fields.items():
            if value is ...:
                case[section].pop(key)
            else:
                case[section][key] = value
    return case


def _write(tmp_path: Path, cases: list) -> str:
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"cases": cases}))
    return str(path)


def test_missing_and_null_fields_give_one_line_reasons_and_the_rest_runs(tmp_path: Path) -> None:
    """The issue's two tracebacks: a missing key (KeyError) and a null (TypeError)."""
    cases = [
        {"id": "missing_heads", **_case(model={"heads": ...})},
        {"id": "null_hidden", **_case(model={"hidden": None})},
        {
            "id": "null_system",
            **{**_case(), "system": {"gpu": "A100", "tp": None, "pp": 1, "dp": None}},
        },
        {"id": "text_layers", **_case(model={"layers": "two"})},
        "not a case at all",
        {"id": "fine", **_case()},
    ]
    report = validate(_write(tmp_path, cases))
    reasons = {s.case: s.reason for s in report.skipped}
    assert reasons["missing_heads"] == (
        "model.heads: missing or null; expected a whole number >= 1"
    )
    assert reasons["null_hidden"].startswith("model.hidden: missing or null")
    assert reasons["text_layers"] == "model.layers: got 'two'; expected a whole number >= 1"
    assert "#4" in reasons
    assert all("\n" not in r for r in reasons.values())
    # tp and dp null: taken as unstated (tp 1 assumed, dp 1 as no num_gpus says otherwise)
    assert [c.case for c in report.comparisons] == ["null_system", "fine"]
    assumed = {a.key for case, a in report.assumptions if case == "null_system"}
    assert {"system.tp", "system.dp"} <= assumed


def test_derived_facts() -> None:
    """nodes = ceil(num_gpus / 8) on a DGX; dp = num_gpus / (tp·pp); ffn = 4·hidden (GPT)."""
    case = _case(system={"num_gpus": 32, "dp": ...})
    run = read_training_run(case, "x.yaml")
    assert run is not None
    assert run.flags["dp"] == 4
    assert "hw.cluster.num_nodes=4" in run.overrides
    assert "model.intermediate_size=4096" in run.overrides
    # derived, not assumed; only the optimizer sharding of dp = 4 is unstated
    assert [a.key for a in run.assumptions] == ["training.distributed_optimizer"]
    odd = read_training_run(_case(system={"num_gpus": 12, "tp": 4, "dp": 3}), "x.yaml")
    assert odd is not None and "hw.cluster.num_nodes=2" in odd.overrides  # 12 GPUs: 2 nodes


def test_gpu_matched_by_family_and_named() -> None:
    for gpu, config in (
        ("NVIDIA Ampere (A100-class)", "dgx-a100-superpod.yaml"),
        ("H100 SXM5", "dgx-h100.yaml"),
        ("nvidia a100 40gb", "dgx-a100-superpod.yaml"),
    ):
        run = read_training_run(_case(system={"gpu": gpu}), "x.yaml")
        assert run is not None and run.hardware.endswith(config)
        assert gpu in run.hardware_why
    with pytest.raises(NotRun, match=r"system\.gpu: got 'MI300X'.*system\.hw_config"):
        read_training_run(_case(system={"gpu": "MI300X"}), "x.yaml")


def test_llama_needs_ffn_gpt_does_not() -> None:
    with pytest.raises(NotRun, match=r"model\.ffn: missing or null; a llama model has no default"):
        read_training_run(_case(model={"arch": "Llama-2"}), "x.yaml")
    assert read_training_run(_case(model={"arch": "Llama-2", "ffn": 2816}), "x.yaml")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"training": {"precision": "fp8-mx"}}, "an fp8 recipe palmsim does not model"),
        ({"system": {"cp": 2}}, r"context parallelism \(system\.cp = 2\): validate does not build"),
        ({"system": {"ep": 8}}, r"expert parallelism \(system\.ep = 8\): validate does not build"),
        ({"model": {"num_experts": 8}}, "mixture of experts"),
        ({"system": {"num_gpus": 16}}, r"num_gpus = 16 but tp·pp·dp = 8·1·1 = 8"),
        ({"training": {"zero_stage": 4}}, "zero_stage: got 4"),
    ],
)
def test_features_not_modelled_are_listed(changes: dict, reason: str) -> None:
    with pytest.raises(NotRun, match=reason):
        read_training_run(_case(**changes), "x.yaml")


def test_zero3_with_tp_pp_1_runs_with_zero_on() -> None:
    """A DeepSpeed ZeRO-3 run (tp = pp = 1) must be simulated with ZeRO-3, not without."""
    case = _case(system={"tp": 1, "dp": 8}, training={"zero_stage": 3})
    run = read_training_run(case, "x.yaml")
    assert run is not None and run.flags["zero"] == 3 and run.assumptions == ()
    dist = read_training_run(_case(training={"distributed_optimizer": True}), "x.yaml")
    assert dist is not None and dist.flags["zero"] == 1


def test_unstated_settings_are_assumed_and_marked(tmp_path: Path) -> None:
    """Micro-batch 1, precision fp16 and the least recompute that fits (none here)."""
    case = _case(
        model={"micro_batch": ...}, training={"precision": ..., "activation_recompute": ...}
    )
    report = validate(_write(tmp_path, [{"id": "bare", **case}]))
    (comparison,) = report.comparisons
    assumed = {a.key: a.value for _, a in report.assumptions}
    assert assumed == {
        "model.micro_batch": 1,
        "training.precision": "fp16",
        "training.activation_recompute": "none",
    }
    assert set(comparison.assumed) == set(assumed)


def test_a_case_past_its_time_limit_is_listed_and_the_next_runs(tmp_path: Path) -> None:
    if not hasattr(signal, "setitimer"):
        pytest.skip("no SIGALRM on this platform")
    big = _case(model={"global_batch": 50_000})  # 5e4 micro-batches: minutes, not 5 s
    path = _write(tmp_path, [{"id": "slow", **big}, {"id": "fine", **_case()}])
    report = validate(path, case_timeout_s=20.0)  # generous: the fine case on a loaded machine
    assert report.skipped[0].case == "slow"
    assert "time limit (--case-timeout 20 s)" in report.skipped[0].reason
    assert [c.case for c in report.comparisons] == ["fine"]


def test_interrupt_keeps_finished_cases_and_resume_goes_on(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C during the second case: the first case's row is printed and in --json; a
    rerun with --resume runs only what is left."""
    import palmsim.validate as module

    path = _write(tmp_path, [{"id": "first", **_case()}, {"id": "second", **_case()}])
    out = tmp_path / "v.json"
    real = module._simulate_case
    calls = []

    def interrupted_second(case_id, run, overrides):
        calls.append(case_id)
        if case_id == "second" and len(calls) == 2:
            raise KeyboardInterrupt
        return real(case_id, run, overrides)

    monkeypatch.setattr(module, "_simulate_case", interrupted_second)
    assert main(["validate", path, "--json", str(out), "-q"]) == 130
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    assert [r["case"] for r in data["comparisons"]] == ["first"]
    assert main(["validate", path, "--json", str(out), "-q", "--resume"]) == 0
    assert calls == ["first", "second", "second"]
    data = json.loads(out.read_text())
    assert [r["case"] for r in data["comparisons"]] == ["first", "second"]


def test_unreadable_resume_file_is_a_config_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "v.json"
    bad.write_text('{"comparisons": [{"case": 1}]}')
    path = _write(tmp_path, [{"id": "fine", **_case()}])
    assert main(["validate", path, "--json", str(bad), "--resume", "-q"]) == 2
    assert "comparisons[0]" in capsys.readouterr().err
