"""``--set KEY=VALUE`` overrides: prefix routing, YAML values, and never mutating the input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from palmsim.config.loader import hardware_schema
from palmsim.config.overrides import (
    HARDWARE_SECTIONS,
    apply_overrides,
    outside_sections,
    override_where,
    parse_override,
    split_overrides,
)
from palmsim.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "section", "path"),
    [
        ("hw.system.link.bandwidth=512 GB/s", "hw", ("system", "link", "bandwidth")),
        ("workload.training.seq_len=1024", "workload", ("training", "seq_len")),
        ("model.num_hidden_layers=2", "workload", ("model", "num_hidden_layers")),
        ("training.dtype=bf16", "workload", ("training", "dtype")),
        ("mapping.pp=10", "mapping", ("pp",)),
        ("run.seed=7", "run", ("seed",)),
    ],
)
def test_prefix_routes_to_section_and_path(text: str, section: str, path: tuple[str, ...]) -> None:
    ov = parse_override(text)
    assert (ov.section, ov.path) == (section, path)
    assert ov.text == text


@pytest.mark.parametrize(
    ("value_text", "expected"),
    [
        ("10", 10),
        ("0.5", 0.5),
        ("512 GB/s", "512 GB/s"),  # stays a string: units are parsed by the loader
        ("[10, 8]", [10, 8]),
        ("true", True),
        ("false", False),
        ("null", None),
        ("", None),
        ("torus", "torus"),
        ("a=b", "a=b"),  # only the first '=' splits key from value
        ("{fp16: 1 TFLOP/s}", {"fp16": "1 TFLOP/s"}),
        # numbers with an exponent are numbers (YAML 1.2, JSON; PyYAML's 1.1 reads text)
        ("1e-3", 1e-3),
        ("2E5", 2e5),
        ("1.5e3", 1500.0),
        ("-4e+2", -400.0),
        ("[1e3, 2]", [1000.0, 2]),
        ("1e", "1e"),
        ("1e-3 us", "1e-3 us"),
    ],
)
def test_values_are_parsed_as_yaml(value_text: str, expected: object) -> None:
    assert parse_override(f"hw.x={value_text}").value == expected


@pytest.mark.parametrize(
    "text",
    [
        "hw.system.topology",  # no '='
        "system.topology=torus",  # unknown prefix
        "hw=3",  # prefix without a key
        "hw.system.chips[0]=10",  # not an identifier
        "hw..x=1",  # empty component
    ],
)
def test_malformed_override_is_a_config_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    assert text in str(info.value)
    assert info.value.problems[0].file == "--set"


def test_invalid_yaml_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"hw\.x.*YAML"):
        parse_override("hw.x=[1, 2")


def test_split_overrides_groups_in_order_and_reports_all_malformed_at_once() -> None:
    groups = split_overrides(["mapping.pp=2", "hw.a=1", "model.b=2", "mapping.pp=4"])
    assert [o.value for o in groups["mapping"]] == [2, 4]
    assert [o.path for o in groups["workload"]] == [("model", "b")]
    assert groups["run"] == []
    with pytest.raises(ConfigError) as info:
        split_overrides(["bad", "hw.ok=1", "nope.x=1"])
    assert len(info.value.problems) == 2


def test_apply_only_matching_section_and_never_mutate_input() -> None:
    raw = {"system": {"topology": "mesh", "link": {"bandwidth": "256 GB/s"}}, "name": "x"}
    before = copy.deepcopy(raw)
    out = apply_overrides(
        raw,
        ["hw.system.link.bandwidth=512 GB/s", "mapping.pp=3", "hw.chip.noc.latency=1 ns"],
        "hw",
        "hw.yaml",
    )
    assert raw == before
    assert out == {
        "system": {"topology": "mesh", "link": {"bandwidth": "512 GB/s"}},
        "name": "x",
        "chip": {"noc": {"latency": "1 ns"}},  # intermediate mappings created
    }
    out["system"]["link"]["bandwidth"] = "1 GB/s"  # the result is a deep copy
    assert raw["system"]["link"]["bandwidth"] == "256 GB/s"


def test_prefix_with_trailing_dot_and_later_override_wins() -> None:
    out = apply_overrides({}, ["mapping.pp=2", "mapping.pp=8"], "mapping.", "--set")
    assert out == {"pp": 8}


def test_model_and_training_prefixes_apply_to_workload() -> None:
    raw = {"model": {"hidden_size": 8}, "training": {}}
    out = apply_overrides(
        raw, ["model.hidden_size=16", "training.seq_len=32", "workload.name=w"], "workload", "w.y"
    )
    assert out == {"model": {"hidden_size": 16}, "training": {"seq_len": 32}, "name": "w"}


def test_malformed_override_of_another_section_is_still_reported() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        apply_overrides({}, ["bogus"], "hw", "hw.yaml")


def test_override_into_a_non_mapping_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"hw\.yaml: system: got 5; expected a mapping"):
        apply_overrides({"system": 5}, ["hw.system.topology=torus"], "hw", "hw.yaml")


def test_unknown_section_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown override section"):
        apply_overrides({}, [], "model", "x")


def test_a_set_typo_names_the_set_argument_not_the_file() -> None:
    """Issue 18: a typo in --set hw.chip.noc... was blamed on hw_configs/tx8-wafer.yaml."""
    from palmsim.api import load_experiment

    with pytest.raises(ConfigError) as info:
        load_experiment(overrides=["hw.chip.noc.bandwith=1"])
    (problem,) = info.value.problems
    assert problem.file.startswith("--set hw.chip.noc.bandwith=1")
    assert problem.key == "chip.noc.bandwith"
    assert "did you mean 'bandwidth'" in str(info.value)
    with pytest.raises(ConfigError, match=r"^--set training\.global_batch_size=0 \(applied to"):
        load_experiment(overrides=["training.global_batch_size=0"])
    # a mapping or run override names itself too
    with pytest.raises(ConfigError, match=r"^--set mapping\.pp=x: mapping\.pp"):
        load_experiment(overrides=["mapping.pp=x"])


def test_a_serving_set_mistake_names_the_set_argument_not_the_file(tmp_path) -> None:
    """`palmsim serve --set serving.traffic.rate_per_s=0` was blamed on the serving file,
    whose own rate is fine; a problem of the file itself still names the file."""
    from palmsim.api import DEFAULT_SERVING, shipped_path
    from palmsim.config.loader import load_serving

    path = shipped_path(DEFAULT_SERVING)
    for text, key in (
        ("serving.traffic.rate_per_s=0", "traffic.rate_per_s"),
        ("serving.replicas=0", "replicas"),
        ("serving.traffic.rate=2", "traffic.rate"),
    ):
        with pytest.raises(ConfigError) as info:
            load_serving(path, [text])
        (problem,) = info.value.problems
        assert problem.file == f"--set {text} (applied to {path})"
        assert problem.key == key
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(path).read_text().replace("\nreplicas: 1\n", "\nreplicas: 0\n"))
    with pytest.raises(ConfigError) as info:
        load_serving(bad, ["serving.traffic.rate_per_s=3"])
    (problem,) = info.value.problems
    assert (problem.file, problem.key) == (str(bad), "replicas")


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        # a key copied from a hardware file, without its section prefix
        ("system.node_link.latency=9.6 us", "did you mean 'hw.system.node_link.latency'?"),
        ("tile.sram_capacity=3 MiB", "did you mean 'hw.tile.sram_capacity'?"),
        ("hardware.system.chips=[2, 8]", "did you mean 'hw.system.chips'?"),
        ("maping.pp=2", "did you mean 'mapping.pp'?"),
    ],
)
def test_a_key_without_its_prefix_gets_a_did_you_mean(text: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    assert hint in str(info.value)


def test_the_hint_knows_every_section_of_a_hardware_file() -> None:
    for kind in ("wafer", "gpu_cluster"):
        sections = {key for key, rule in hardware_schema(kind).items() if isinstance(rule, dict)}
        assert sections <= set(HARDWARE_SECTIONS), kind


def test_outside_sections_names_what_a_caller_cannot_take():
    """A caller taking only hw.* and run.* is given the rest to name, each as written."""
    given = ["hw.tile.op_latency=3 us", "inference.trace=none", "run.seed=2", "mapping.tp=2"]
    assert outside_sections(given, ("hw", "run")) == ["inference.trace=none", "mapping.tp=2"]
    assert outside_sections(given[::2], ("hw", "run")) == []
    with pytest.raises(ConfigError, match=r"did you mean 'hw\.system\.chips'"):
        outside_sections(["system.chips=[2, 8]"], ("hw",))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        # the shipped file's traffic: poisson arrivals, ShareGPT lengths
        (["serving.traffic.prompt_tokens=100000"], "traffic.prompt_tokens"),
        (["serving.traffic.output_tokens=10"], "traffic.output_tokens"),
        (["serving.traffic.cv=2"], "traffic.cv"),
        (["serving.traffic.concurrency=4"], "traffic.concurrency"),
        (["serving.traffic.arrival=closed", "serving.traffic.rate_per_s=3"], "traffic.rate_per_s"),
    ],
)
def test_a_traffic_key_its_arrival_or_lengths_ignore_is_refused(overrides, key) -> None:
    """`--set serving.traffic.prompt_tokens=100000` beside the file's `lengths: sharegpt`
    served ShareGPT prompts and said nothing; every such key is a ConfigError naming it."""
    from palmsim.api import DEFAULT_SERVING, shipped_path
    from palmsim.config.loader import load_serving

    with pytest.raises(ConfigError) as info:
        load_serving(shipped_path(DEFAULT_SERVING), overrides)
    (problem,) = info.value.problems
    assert problem.key == key and problem.expected.startswith(f"no {key.split('.')[1]} here")


def test_switching_the_arrival_keeps_the_files_keys_for_its_own_mode() -> None:
    """The file's rate_per_s is for its poisson arrivals: switching to a closed loop on the
    command line does not make it an error, and the keys the new mode reads apply."""
    from palmsim.api import DEFAULT_SERVING, shipped_path
    from palmsim.config.loader import load_serving

    spec = load_serving(
        shipped_path(DEFAULT_SERVING),
        ["serving.traffic.arrival=closed", "serving.traffic.concurrency=4"],
    )
    assert (spec.traffic.arrival, spec.traffic.concurrency) == ("closed", 4)
    fixed = load_serving(
        shipped_path(DEFAULT_SERVING),
        ["serving.traffic.lengths=fixed", "serving.traffic.prompt_tokens=1000"],
    )
    assert fixed.traffic.prompt_tokens == 1000


def test_a_problem_an_override_caused_carries_it_and_names_it():
    """A problem a --set put in a file names "--set TEXT (applied to FILE)" for the reader and
    carries TEXT itself as its ``override`` (validate reads that, not the name), as do a run
    setting's and a mapping key's; a file's own problem carries none."""
    from palmsim.config.loader import load_hardware, load_mapping, load_run

    assert override_where("hw.x=1") == "--set hw.x=1"
    assert override_where("hw.x=1", "h.yaml") == "--set hw.x=1 (applied to h.yaml)"
    for load, text in (
        (lambda t: load_hardware("hw_configs/wormhole-n150.yaml", [t]), "hw.tile.op_latency=-1 us"),
        (lambda t: load_run([t]), "run.max_events=-3"),
        (lambda t: load_mapping((), [t]), "mapping.pp=0"),
    ):
        with pytest.raises(ConfigError) as raised:
            load(text)
        (problem,) = raised.value.problems
        assert problem.override == text
        assert problem.file.startswith(override_where(text))
    with pytest.raises(ConfigError) as raised:
        load_hardware(str(Path(__file__).parent / "nope.yaml"))
    assert all(p.override == "" for p in raised.value.problems)
