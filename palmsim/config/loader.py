"""Config files to frozen, validated specs.

Each file goes through the same phases, each a separate function (STYLE 3, step 2):

1. **read** (:func:`read_config_file`): YAML, or JSON for a Hugging Face ``config.json``; a
   parse error names the file and line; duplicate keys are errors;
2. **override** (:func:`palmsim.config.overrides.apply_overrides`): ``--set`` values, on a copy;
3. **normalise** (:func:`normalise_hardware`, :func:`normalise_workload`, ...): aliases and
   shorthand to canonical keys; defaults filled from the spec dataclasses (never restated here);
4. **check keys** (:func:`check_keys`): an unknown key is a problem with a "did you mean";
5. **parse values** (:func:`parse_values`): every dimensional value through
   :func:`palmsim.units.parse_quantity`, every count checked to be an int >= 1, ...;
6. **build** (:func:`build_hardware`, :func:`build_workload`, ...): the frozen specs;
7. **cross-check** (:func:`check_hardware`, :func:`check_workload`): relations between values.

Every problem of one file is collected and raised as one :class:`~palmsim.errors.ConfigError`,
each with the file, the dotted key path (list items as ``chips[1]``), the value and what was
expected. :func:`spec_to_raw` is the inverse: a spec back to the file format, re-loadable to an
equal spec.

This module holds the only file reads of the package.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING as _DC_MISSING
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from palmsim.config.overrides import (
    OVERRIDE_WHERE,
    YamlLoader,
    apply_overrides,
    blame_overrides,
    mark_overrides,
    override_where,
    split_overrides,
)
from palmsim.config.specs import (
    ATTENTION_KERNELS,
    ATTENTION_SPLITS,
    DTYPE_BYTES,
    EXPERT_LOADS,
    EXPERT_PLACEMENTS,
    FP8_LINEAR_OPS,
    FP8_RECIPES,
    GRAD_ACCUMULATION_MODES,
    INFERENCE_PASSES,
    KV_PLACEMENTS,
    LOGITS_TO_HOST,
    LORA_TARGET_OPS,
    MATH_FIDELITIES,
    MAX_SIMULATED_S,
    MEMORY_OP_KINDS,
    MLP_OF_ACTIVATION,
    MOE_DISPATCHERS,
    PARALLEL_BLOCKS,
    PREFILL_ATTENTION_2D,
    RECOMPUTE_MODES,
    RECOMPUTE_MODULES,
    REDUCED_BLOCKS,
    RESIDUAL_SPLITS,
    SERVING_ARRIVALS,
    SERVING_LENGTHS,
    SERVING_PREEMPTION_MODES,
    SERVING_ROUTERS,
    YIELD_MODELS,
    ZERO_COLLECTIVES,
    ClusterSpec,
    CostSpec,
    DefectSpec,
    DramSpec,
    EnergySpec,
    GemmSpec,
    HardwareSpec,
    HostSpec,
    InferenceSpec,
    LinkSpec,
    MappingSpec,
    MemoryKernelSpec,
    MemoryOpsSpec,
    MeshGemmSpec,
    ModelSpec,
    RunSpec,
    SchedulerSpec,
    ServingSpec,
    SloSpec,
    TileSpec,
    TrafficSpec,
    TrainingSpec,
    WaferSpec,
    WorkloadSpec,
    modes_of,
)
from palmsim.errors import ConfigError, ConfigProblem
from palmsim.units import DIMENSIONS, DISPLAY_UNITS, format_quantity, parse_quantity, significant

_LOG = logging.getLogger(__name__)

__all__ = [
    "Rule",
    "build_hardware",
    "build_mapping",
    "build_run",
    "build_workload",
    "check_hardware",
    "check_keys",
    "check_workload",
    "format_exact",
    "hardware_assumptions",
    "hardware_kind",
    "hardware_schema",
    "hf_to_model",
    "load_hardware",
    "load_mapping",
    "load_run",
    "load_serving",
    "load_workload",
    "normalise_hardware",
    "normalise_mapping",
    "normalise_run",
    "normalise_workload",
    "parse_values",
    "read_config_file",
    "read_mapping_file",
    "spec_to_raw",
]

MISSING = ConfigError.MISSING

Schema = dict[str, Any]  # key -> Rule, or key -> Schema for a nested section


# =========================================================================== phase 1: read


class _StrictLoader(YamlLoader):
    """A ``SafeLoader`` (:class:`~palmsim.config.overrides.YamlLoader`: ``1e-3`` is a number)
    that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: SafeLoader reports it below
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def _line_of(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1].strip() if 1 <= line <= len(lines) else ""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Phase 1: read a YAML file (or a ``.json`` file as JSON) into a raw dict.

    Raises:
        ConfigError: the file is missing or unreadable, does not parse (the problem names the
            line), has duplicate keys, or does not hold a mapping at the top level.
    """
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError.single(where, "", MISSING, "an existing config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single(where, "", MISSING, f"a readable UTF-8 file ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError.single(
                where,
                f"line {exc.lineno}",
                _line_of(text, exc.lineno),
                f"valid JSON ({exc.msg} at column {exc.colno})",
            ) from None
    else:
        try:
            raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            column = mark.column + 1 if mark is not None else 0
            raise ConfigError.single(
                where,
                f"line {line}",
                _line_of(text, line),
                f"valid YAML ({exc.problem} at column {column})",
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError.single(where, "", MISSING, f"valid YAML ({exc})") from None
    if raw is None:
        raise ConfigError.single(where, "", MISSING, "a mapping of config keys (the file is empty)")
    if not isinstance(raw, dict):
        raise ConfigError.single(where, "", raw, "a mapping of config keys at the top level")
    return raw


def read_mapping_file(path: str | Path) -> dict[str, Any]:
    """Read a mapping file: the keys of :class:`MappingSpec` at top level or under ``mapping:``.

    Returns the raw mapping dict, ready to be a section of :func:`load_mapping`. Keys beside a
    ``mapping:`` section are kept, so that :func:`load_mapping` reports them if unknown.

    Raises:
        ConfigError: as :func:`read_config_file`, or ``mapping:`` is not a mapping.
    """
    raw = read_config_file(path)
    if "mapping" not in raw:
        return raw
    inner = raw["mapping"]
    if not isinstance(inner, dict):
        raise ConfigError.single(str(path), "mapping", inner, "a mapping of mapping keys")
    rest = {k: v for k, v in raw.items() if k != "mapping"}
    return {**rest, **inner}


def _default_name(path: Path) -> str:
    """A config's default name: the file stem (``hf/x.config.json`` -> ``x``; for a bare
    ``config.json``, the folder it is in, as in a Hugging Face snapshot)."""
    stem = path.stem
    if path.suffix.lower() == ".json":
        if stem == "config" and path.parent.name:
            return path.parent.name
        stem = stem.removesuffix(".config")
    return stem


# =========================================================================== rules and schemas


class _InvalidValueError(Exception):
    """A value broke its rule; ``expected`` says what was wanted."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True, slots=True)
class Rule:
    """How to check and convert one raw value.

    ``parse(value, where, key)`` returns the converted value, or raises ``_InvalidValueError``
    (one problem at ``key``) or :class:`ConfigError` (its own problems, e.g. inside a nested
    mapping).
    ``expected`` is shown when the key is missing. Optional keys (``required=False``) are simply
    left out of the parsed values when absent.
    """

    parse: Callable[[Any, str, str], Any]
    expected: str
    required: bool = True


#: Internal spec field names a user may copy from the code or an old ``describe``, and the
#: file keys they correspond to (fields with a unit suffix are handled generically).
_FIELD_KEYS = {"peak_flop_per_s": "peak"}
_FIELD_SUFFIXES = ("_bytes_per_s", "_flop_per_s", "_bytes", "_hz", "_s")


def _did_you_mean(word: object, options: Sequence[str]) -> str:
    if not isinstance(word, str):
        return ""
    # A spec field name (sram_capacity_bytes, peak_flop_per_s) names its file key exactly.
    stem = next((word[: -len(x)] for x in _FIELD_SUFFIXES if word.endswith(x)), word)
    for candidate in (_FIELD_KEYS.get(word), stem):
        if candidate in options and candidate != word:
            return f" (did you mean {candidate!r}?)"
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_rule(minimum: int = 1, hint: str = "", required: bool = True) -> Rule:
    expected = f"an int >= {minimum}{hint}"

    def parse(value: Any, where: str, key: str) -> int:
        if not _is_int(value) or value < minimum:
            raise _InvalidValueError(expected)
        return int(value)

    return Rule(parse, expected, required)


def _nullable_int_rule(minimum: int = 1, hint: str = "") -> Rule:
    """An int >= ``minimum``, or null (the spec's None: derived from other fields)."""
    expected = f"an int >= {minimum} or null{hint}"

    def parse(value: Any, where: str, key: str) -> int | None:
        if value is None:
            return None
        if not _is_int(value) or value < minimum:
            raise _InvalidValueError(expected)
        return int(value)

    return Rule(parse, expected)


def _optional_positive_float_rule() -> Rule:
    """A finite number > 0, or null."""
    expected = "a finite number > 0 or null"

    def parse(value: Any, where: str, key: str) -> float | None:
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < math.inf
        ):
            raise _InvalidValueError(expected)
        return float(value)

    return Rule(parse, expected)


def _optional_ratio_rule() -> Rule:
    """A number in (0, 1], optional (absent or null: None)."""
    ratio = _float_rule(0.0, 1.0, low_open=True, high_open=False)

    def parse(value: Any, where: str, key: str) -> float | None:
        return None if value is None else ratio.parse(value, where, key)

    return Rule(parse, f"{ratio.expected} or null", required=False)


def _float_rule(low: float, high: float, *, low_open: bool, high_open: bool) -> Rule:
    expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(value: Any, where: str, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _InvalidValueError(expected)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise _InvalidValueError(expected)
        return float(value)

    return Rule(parse, expected)


def _bool_rule() -> Rule:
    def parse(value: Any, where: str, key: str) -> bool:
        if not isinstance(value, bool):
            raise _InvalidValueError("true or false")
        return value

    return Rule(parse, "true or false")


def _choice_rule(choices: Sequence[str], accepted: Sequence[str] = (), note: str = "") -> Rule:
    """One of ``choices``; ``accepted`` (if given) are the spellings listed to users, which the
    normalise phase has already mapped onto ``choices``."""
    shown = ", ".join(repr(c) for c in (accepted or choices))
    expected = f"one of {shown}{note}"

    def parse(value: Any, where: str, key: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _InvalidValueError(expected + _did_you_mean(value, list(accepted or choices)))
        return value

    return Rule(parse, expected)


def _str_rule(required: bool = True) -> Rule:
    def parse(value: Any, where: str, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _InvalidValueError("a non-empty string")
        return value

    return Rule(parse, "a non-empty string", required)


def _choice_list_rule(choices: Sequence[str]) -> Rule:
    """A list of distinct members of ``choices`` (a comma-separated string from ``--set``)."""
    expected = "a list of " + ", ".join(repr(c) for c in choices)

    def parse(value: Any, where: str, key: str) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise _InvalidValueError(expected)
        out = tuple(v.strip() for v in items if v.strip())
        for v in out:
            if v not in choices:
                raise _InvalidValueError(expected + _did_you_mean(v, list(choices)))
        if len(set(out)) != len(out):
            raise _InvalidValueError(f"{expected}, each once")
        return out

    return Rule(parse, expected, required=False)


def _str_list_rule(required: bool = True) -> Rule:
    def parse(value: Any, where: str, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _InvalidValueError("a list of strings")
        return tuple(value)

    return Rule(parse, "a list of strings", required)


#: Attention kinds of ``model.layer_types`` (Hugging Face names).
LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")


def _layer_types_rule() -> Rule:
    """A list of :data:`LAYER_TYPES`, one per layer, or null."""
    expected = "a list of " + " or ".join(map(repr, LAYER_TYPES)) + " (one per layer), or null"

    def parse(value: Any, where: str, key: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(v in LAYER_TYPES for v in value):
            raise _InvalidValueError(expected)
        return tuple(value)

    return Rule(parse, expected)


#: Layer kinds of ``model.hybrid_override_pattern`` (Megatron-Core's hybrid layer symbols):
#: Mamba-2, attention, MLP, mixture of experts.
HYBRID_LAYER_KINDS = "M*-E"


def _hybrid_pattern_rule() -> Rule:
    """A string of :data:`HYBRID_LAYER_KINDS`, one per layer, or null."""
    expected = "a string of 'M', '*', '-' and 'E', one per layer, or null"

    def parse(value: Any, where: str, key: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value or set(value) - set(HYBRID_LAYER_KINDS):
            raise _InvalidValueError(expected)
        return value

    return Rule(parse, expected)


def _mapping_rule(required: bool = True) -> Rule:
    """A free-form mapping (or nothing), validated elsewhere; returned as a copy."""

    def parse(value: Any, where: str, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _InvalidValueError("a mapping")
        return copy.deepcopy(value)

    return Rule(parse, "a mapping", required)


def _quantity_rule(dimension: str, *, positive: bool) -> Rule:
    example = DIMENSIONS[dimension][1]
    adjective = "positive" if positive else "non-negative"
    expected = f"a {adjective} {dimension} with a unit, e.g. '{example}'"

    def parse(value: Any, where: str, key: str) -> float:
        number = parse_quantity(value, dimension, where=where, key=key)  # raises ConfigError
        if positive and not number > 0:
            raise _InvalidValueError(expected)
        return number

    return Rule(parse, expected)


def _optional_time_rule() -> Rule:
    expected = f"a positive time with a unit, e.g. '{DIMENSIONS['time'][1]}', or null"

    def parse(value: Any, where: str, key: str) -> float | None:
        if value is None:
            return None
        number = parse_quantity(value, "time", where=where, key=key)
        if not number > 0:
            raise _InvalidValueError(expected)
        return number

    return Rule(parse, expected)


_GRID_EXPECTED = "a list of 2 ints >= 1, [rows, cols]"


def _parse_grid(value: Any, where: str, key: str) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise _InvalidValueError(_GRID_EXPECTED)
    problems = [
        ConfigProblem(where, f"{key}[{i}]", item, "an int >= 1")
        for i, item in enumerate(value)
        if not _is_int(item) or item < 1
    ]
    if problems:
        raise ConfigError(problems)
    return int(value[0]), int(value[1])


def _tp_2d_rule() -> Rule:
    """``mapping.tp_2d`` and ``serving.tp_2d``: null (1-D tensor parallelism) or ``[a, b]``,
    two ints >= 1."""
    expected = "a list of 2 ints >= 1, [a, b] with a*b = tp, or null (1-D)"

    def parse(value: Any, where: str, key: str) -> tuple[int, int] | None:
        if value is None:
            return None
        try:
            return _parse_grid(value, where, key)
        except _InvalidValueError:
            raise _InvalidValueError(expected) from None

    return Rule(parse, expected)


def _section_rule(schema: Schema, build: Callable[[dict[str, Any]], Any]) -> Rule:
    """An optional nested section: checked key by key like the file, then built.

    Absent or null means None (the feature is off).
    """
    expected = _section_expected(schema)

    def parse(value: Any, where: str, key: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _InvalidValueError(expected)
        values, problems = parse_values(value, schema, where, key)
        problems = check_keys(value, schema, where, key) + problems
        if problems:
            raise ConfigError(problems)
        return build(values)

    return Rule(parse, expected, required=False)


def _zero_rule() -> Rule:
    """ZeRO stage: 0, 1, 2 or 3."""

    def parse(value: Any, where: str, key: str) -> int:
        if not _is_int(value) or value not in (0, 1, 2, 3):
            raise _InvalidValueError("a ZeRO stage: 0, 1, 2 or 3")
        return int(value)

    return Rule(parse, "a ZeRO stage: 0, 1, 2 or 3")


def _gemm_rule() -> Rule:
    schema: Schema = {
        "compute_units": _int_rule(),
        "tile": Rule(_parse_grid, "[rows, columns] of a GEMM kernel's output tile"),
        "max_efficiency": _float_rule(0.0, 1.0, low_open=True, high_open=False),
        "launch_latency": _quantity_rule("time", positive=False),
        "attention_forward_efficiency": _optional_ratio_rule(),
        "attention_backward_efficiency": _optional_ratio_rule(),
        "attention_forward_efficiency_d64": _optional_ratio_rule(),
        "attention_backward_efficiency_d64": _optional_ratio_rule(),
        "flash2_forward_efficiency": _optional_ratio_rule(),
        "flash2_backward_efficiency": _optional_ratio_rule(),
        "grouped_streams": _optional_int_rule(0),
    }
    return _section_rule(
        schema,
        lambda v: GemmSpec(
            compute_units=v["compute_units"],
            tile_m=v["tile"][0],
            tile_n=v["tile"][1],
            max_efficiency=v["max_efficiency"],
            launch_latency_s=v["launch_latency"],
            attention_forward_efficiency=v.get("attention_forward_efficiency"),
            attention_backward_efficiency=v.get("attention_backward_efficiency"),
            attention_forward_efficiency_d64=v.get("attention_forward_efficiency_d64"),
            attention_backward_efficiency_d64=v.get("attention_backward_efficiency_d64"),
            flash2_forward_efficiency=v.get("flash2_forward_efficiency"),
            flash2_backward_efficiency=v.get("flash2_backward_efficiency"),
            grouped_streams=v.get("grouped_streams", 0),
        ),
    )


def _mesh_gemm_rule() -> Rule:
    """``tile.mesh_gemm``: a MeshGEMM's per-step costs, each a time a core spends."""
    schema: Schema = {
        "step": _quantity_rule("time", positive=False),
        "per_k": _quantity_rule("time", positive=False),
        "per_column": _quantity_rule("time", positive=False),
        "per_mac": _quantity_rule("time", positive=False),
    }
    return _section_rule(
        schema,
        lambda v: MeshGemmSpec(
            step_s=v["step"],
            per_k_s=v["per_k"],
            per_column_s=v["per_column"],
            per_mac_s=v["per_mac"],
        ),
    )


def _memory_kernel_schema() -> Schema:
    """A memory-bound kernel's ``bandwidth`` and ``launch_latency``."""
    return {
        "bandwidth": _quantity_rule("bandwidth", positive=True),
        "launch_latency": _quantity_rule("time", positive=False),
    }


def _memory_kernel_rule() -> Rule:
    """One kind's own ``bandwidth`` and ``launch_latency`` inside ``memory_ops``."""
    return _section_rule(
        _memory_kernel_schema(),
        lambda v: MemoryKernelSpec(
            bandwidth_bytes_per_s=v["bandwidth"], launch_latency_s=v["launch_latency"]
        ),
    )


def _memory_ops_rule() -> Rule:
    schema: Schema = {
        **_memory_kernel_schema(),
        **{kind: _memory_kernel_rule() for kind in MEMORY_OP_KINDS},
    }
    return _section_rule(
        schema,
        lambda v: MemoryOpsSpec(
            bandwidth_bytes_per_s=v["bandwidth"],
            launch_latency_s=v["launch_latency"],
            kinds=tuple((kind, v[kind]) for kind in MEMORY_OP_KINDS if v.get(kind) is not None),
        ),
    )


_PEAK_EXPECTED = "a mapping dtype -> peak rate, e.g. {fp16: 16 TFLOP/s, int8: 32 TOP/s}"


def _parse_peak(value: Any, where: str, key: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, dict) or not value:
        raise _InvalidValueError(_PEAK_EXPECTED)
    problems: list[ConfigProblem] = []
    pairs: list[tuple[str, float]] = []
    for dtype, rate in value.items():
        item_key = f"{key}.{dtype}"
        if dtype not in DTYPE_BYTES:
            known = ", ".join(sorted(DTYPE_BYTES))
            problems.append(
                ConfigProblem(
                    where,
                    item_key,
                    rate,
                    f"a dtype key, one of {known}{_did_you_mean(dtype, list(DTYPE_BYTES))}",
                )
            )
            continue
        try:
            number = parse_quantity(rate, "flop_rate", where=where, key=item_key)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if not number > 0:
            problems.append(ConfigProblem(where, item_key, rate, "a positive flop_rate"))
            continue
        pairs.append((dtype, number))
    if problems:
        raise ConfigError(problems)
    return tuple(sorted(pairs))


def _table_rule(
    keys: Sequence[str], item: Callable[[Any], Any], item_expected: str, example: str
) -> Rule:
    """A mapping from some of ``keys`` to values ``item`` accepts (None/empty: no entries).

    Returns sorted ``(key, value)`` pairs.
    """
    expected = f"a mapping of {', '.join(keys)} to {item_expected}, e.g. {example}"

    def parse(value: Any, where: str, key: str) -> tuple[tuple[str, Any], ...]:
        if value is None or value == () or value == {}:
            return ()
        if not isinstance(value, dict):
            raise _InvalidValueError(expected)
        problems: list[ConfigProblem] = []
        pairs: list[tuple[str, Any]] = []
        for name, raw in value.items():
            if name not in keys:
                problems.append(
                    ConfigProblem(
                        where,
                        f"{key}.{name}",
                        raw,
                        f"one of {', '.join(keys)}{_did_you_mean(name, list(keys))}",
                    )
                )
                continue
            parsed = item(raw)
            if parsed is None:
                problems.append(ConfigProblem(where, f"{key}.{name}", raw, item_expected))
                continue
            pairs.append((str(name), parsed))
        if problems:
            raise ConfigError(problems)
        return tuple(sorted(pairs))

    return Rule(parse, expected, required=False)


def _passes(value: Any) -> int | None:
    return int(value) if _is_int(value) and value >= 1 else None


def _ratio(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value <= 1 else None


def _fidelity(value: Any) -> str | None:
    return value if value in MATH_FIDELITIES else None


def _parse_positions(value: Any, where: str, key: str) -> tuple[tuple[int, int], ...]:
    expected = "a list of [row, col] chip-local core positions, e.g. [[0, 0], [4, 0]]"
    if value is None or value == ():
        return ()
    if not isinstance(value, list):
        raise _InvalidValueError(expected)
    out: list[tuple[int, int]] = []
    problems: list[ConfigProblem] = []
    for i, pos in enumerate(value):
        if (
            not isinstance(pos, (list, tuple))
            or len(pos) != 2
            or not all(_is_int(x) and x >= 0 for x in pos)
        ):
            problems.append(ConfigProblem(where, f"{key}[{i}]", pos, "[row, col], ints >= 0"))
            continue
        out.append((int(pos[0]), int(pos[1])))
    if problems:
        raise ConfigError(problems)
    return tuple(out)


_GRANULARITY_EXPECTED = (
    "k (regions of k x k cores simulated as one tile) or [rows, cols] of one region"
)


def _parse_granularity(value: Any, where: str, key: str) -> tuple[int, int]:
    if _is_int(value) and value >= 1:
        return int(value), int(value)
    if isinstance(value, list):
        return _parse_grid(value, where, key)
    raise _InvalidValueError(_GRANULARITY_EXPECTED)


def _optional_int_rule(minimum: int) -> Rule:
    rule = _int_rule(minimum)
    return Rule(rule.parse, rule.expected, required=False)


def _link_schema(*, count: bool = False) -> Schema:
    """A link: its ``bandwidth`` (one direction) and ``latency``; ``count`` parallel links
    between two neighbouring chips where the topology has them."""
    schema: Schema = {
        "bandwidth": _quantity_rule("bandwidth", positive=True),
        "latency": _quantity_rule("time", positive=False),
    }
    if count:
        schema["count"] = _optional_int_rule(0)
    return schema


def _single_core_rule() -> Rule:
    expected = (
        "[1, 1]: a chip reached through switches is one tile (a GPU); a grid of cores needs "
        "system.topology mesh or torus"
    )

    def parse(value: Any, where: str, key: str) -> tuple[int, int]:
        grid = _parse_grid(value, where, key)
        if grid != (1, 1):
            raise _InvalidValueError(expected)
        return grid

    return Rule(parse, expected, required=False)


_ENERGY_PER_FLOP_EXPECTED = (
    "a mapping dtype -> energy, e.g. {fp16: 0.11 pJ/FLOP, fp32: 0.25 pJ/FLOP}"
)


def _parse_energy_per_flop(value: Any, where: str, key: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, dict) or not value:
        raise _InvalidValueError(_ENERGY_PER_FLOP_EXPECTED)
    problems: list[ConfigProblem] = []
    pairs: list[tuple[str, float]] = []
    for dtype, energy in value.items():
        item_key = f"{key}.{dtype}"
        if dtype not in DTYPE_BYTES:
            known = ", ".join(sorted(DTYPE_BYTES))
            hint = _did_you_mean(dtype, list(DTYPE_BYTES))
            problems.append(
                ConfigProblem(where, item_key, energy, f"a dtype key, one of {known}{hint}")
            )
            continue
        try:
            pairs.append(
                (dtype, parse_quantity(energy, "energy_per_flop", where=where, key=item_key))
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return tuple(sorted(pairs))


def _optional_quantity_rule(dimension: str) -> Rule:
    rule = _quantity_rule(dimension, positive=True)
    return Rule(rule.parse, rule.expected, required=False)


def _energy_rule(kind: str) -> Rule:
    """The optional ``energy:`` section of a hardware file (:class:`EnergySpec`).

    A wafer has NoC hops and die crossings, and its SRAM must be costed; a cluster has NVLink
    and NIC links, and SRAM (which GPUs do not manage) may be left out.
    """
    per_byte = _quantity_rule("energy_per_byte", positive=False)
    power = _quantity_rule("power", positive=False)
    is_wafer = kind == "wafer"
    chip_key = "static_per_chip" if is_wafer else "static_per_node"
    schema: Schema = {
        "flop": Rule(_parse_energy_per_flop, _ENERGY_PER_FLOP_EXPECTED),
        "sram": per_byte if is_wafer else Rule(per_byte.parse, per_byte.expected, required=False),
        "chip_to_chip": per_byte,
        "dram": per_byte,
        "static_per_tile": power,
        chip_key: power,
        "tdp_per_tile": _optional_quantity_rule("power"),
    }
    if is_wafer:
        schema["noc_hop"] = per_byte
    else:
        schema["nic"] = per_byte
    return _section_rule(
        schema,
        lambda v: EnergySpec(
            energy_j_per_flop=v["flop"],
            sram_j_per_byte=v.get("sram", 0.0),
            noc_hop_j_per_byte=v.get("noc_hop", 0.0),
            chip_to_chip_j_per_byte=v["chip_to_chip"],
            nic_j_per_byte=v.get("nic", 0.0),
            dram_j_per_byte=v["dram"],
            static_per_tile_w=v["static_per_tile"],
            static_per_chip_w=v[chip_key],
            tdp_per_tile_w=v.get("tdp_per_tile"),
        ),
    )


def _positive_number_rule(required: bool) -> Rule:
    expected = "a positive number"

    def parse(value: Any, where: str, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise _InvalidValueError(expected)
        return float(value)

    return Rule(parse, expected, required)


def _cost_rule() -> Rule:
    """The optional ``cost:`` section of a hardware file (:class:`CostSpec`)."""
    defaults = {f.name: f.default for f in fields(CostSpec)}
    schema: Schema = {
        "tile_area": _quantity_rule("area", positive=True),
        "die_area": _quantity_rule("area", positive=True),
        "defect_density": _quantity_rule("areal_density", positive=False),
        "yield_model": _choice_rule(YIELD_MODELS),
        "clustering": _positive_number_rule(required=False),
        "wafer_diameter": _optional_quantity_rule("length"),
        "wafer_price": _quantity_rule("money", positive=False),
        "system_price": _optional_quantity_rule("money"),
        "lifetime": _quantity_rule("time", positive=True),
        "energy_price": _quantity_rule("money_per_energy", positive=False),
        "training_tokens": _positive_number_rule(required=False),
    }
    return _section_rule(
        schema,
        lambda v: CostSpec(
            tile_area_m2=v["tile_area"],
            die_area_m2=v["die_area"],
            defect_density_per_m2=v["defect_density"],
            yield_model=v["yield_model"],
            clustering=v.get("clustering", defaults["clustering"]),
            wafer_diameter_m=v.get("wafer_diameter", defaults["wafer_diameter_m"]),
            wafer_price_usd=v["wafer_price"],
            system_price_usd=v.get("system_price"),
            lifetime_s=v["lifetime"],
            energy_price_usd_per_j=v["energy_price"],
            training_tokens=v.get("training_tokens"),
        ),
    )


def _int_list_rule(width: int, expected: str) -> Rule:
    """A list of ints >= 0 (``width`` 1) or of ``[int, int]`` pairs (``width`` 2)."""

    def parse(value: Any, where: str, key: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _InvalidValueError(expected)
        out: list[Any] = []
        problems = []
        for i, item in enumerate(value):
            items = item if width > 1 else [item]
            if not (isinstance(items, list) and len(items) == width) or not all(
                _is_int(x) and x >= 0 for x in items
            ):
                problems.append(ConfigProblem(where, f"{key}[{i}]", item, expected))
                continue
            out.append(tuple(int(x) for x in items) if width > 1 else int(item))
        if problems:
            raise ConfigError(problems)
        return tuple(out)

    return Rule(parse, expected, required=False)


def _nullable_int_list_rule(expected: str) -> Rule:
    """A list of ints >= 0, or null."""
    inner = _int_list_rule(1, expected)

    def parse(value: Any, where: str, key: str) -> tuple[int, ...] | None:
        return None if value is None else inner.parse(value, where, key)

    return Rule(parse, expected, required=False)


def _degraded_links_rule() -> Rule:
    expected = "a list of [tile, tile, fraction] with 0 < fraction <= 1"

    def parse(value: Any, where: str, key: str) -> tuple[tuple[int, int, float], ...]:
        if not isinstance(value, list):
            raise _InvalidValueError(expected)
        out: list[tuple[int, int, float]] = []
        problems = []
        for i, item in enumerate(value):
            ok = (
                isinstance(item, list)
                and len(item) == 3
                and all(_is_int(x) and x >= 0 for x in item[:2])
                and not isinstance(item[2], bool)
                and isinstance(item[2], (int, float))
                and 0 < item[2] <= 1
            )
            if not ok:
                problems.append(ConfigProblem(where, f"{key}[{i}]", item, expected))
                continue
            out.append((int(item[0]), int(item[1]), float(item[2])))
        if problems:
            raise ConfigError(problems)
        return tuple(out)

    return Rule(parse, expected, required=False)


def _defects_rule() -> Rule:
    """The optional ``defects:`` section of a hardware file (:class:`DefectSpec`)."""
    defaults = {f.name: f.default for f in fields(DefectSpec)}
    fraction = _float_rule(0.0, 1.0, low_open=False, high_open=True)
    schema: Schema = {
        "dead_tiles": _int_list_rule(1, "a list of tile indices"),
        "dead_dies": _int_list_rule(1, "a list of die (or node) indices"),
        "dead_links": _int_list_rule(2, "a list of [tile, tile] pairs of neighbouring tiles"),
        "degraded_links": _degraded_links_rule(),
        "dead_dram_ports": _int_list_rule(1, "a list of DRAM port indices"),
        "dead_tile_fraction": Rule(fraction.parse, fraction.expected, required=False),
        "clustering": _positive_number_rule(required=False),
        "seed": _int_rule(0, required=False),
        "spare_rows": _int_rule(0, required=False),
        "spare_cols": _int_rule(0, required=False),
    }
    return _section_rule(
        schema,
        lambda v: DefectSpec(**{name: v.get(name, default) for name, default in defaults.items()}),
    )


def _assumptions_rule() -> Rule:
    """A hardware file's ``assumptions``: a mapping from the dotted keys of its values that
    rest on no measurement of this hardware to why (a string); documentation the spec does
    not hold, read by ``palmsim validate`` (:func:`hardware_assumptions`), which marks every
    figure run on the config with them. Each key must name a value of the file
    (:func:`_check_assumed_keys`)."""
    expected = "a mapping of dotted keys of this file (e.g. tile.gemm.launch_latency) to why"

    def parse(value: Any, where: str, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise _InvalidValueError(expected)
        return tuple(value.items())

    return Rule(parse, expected, required=False)


def _assumed_value(raw: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` in a raw hardware file, or None when there is none."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, Mapping) else node


def _check_assumed_keys(raw: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """Problems of ``assumptions`` keys that name no value of the file."""
    assumed = raw.get("assumptions")
    if not isinstance(assumed, Mapping):
        return []  # no section, or a malformed one the rule reports
    return [
        ConfigProblem(where, f"assumptions.{key}", why, "a dotted key of a value in this file")
        for key, why in assumed.items()
        if _assumed_value(raw, str(key)) is None and not _switched_off(raw, str(key))
    ]


def _switched_off(raw: Mapping[str, Any], dotted: str) -> bool:
    """Whether a section holding ``dotted`` is null (turned off, e.g. ``--set
    hw.tile.mesh_gemm=null``): its assumed values then take no part in the run."""
    node: Any = raw
    for part in dotted.split(".")[:-1]:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
        if node is None:
            return True
    return False


def hardware_assumptions(path: str | Path) -> tuple[tuple[str, Any, str], ...]:
    """``(dotted key, value as written, why)`` of each entry of a hardware file's
    ``assumptions`` section (:func:`_assumptions_rule`); () when it has none."""
    raw = read_config_file(path)
    assumed = raw.get("assumptions") or {}
    return tuple((key, _assumed_value(raw, key), why) for key, why in assumed.items())


_HW_KINDS = ("wafer", "gpu_cluster")
#: ``system.topology``: ``mesh`` and ``torus`` make every core of every chip one 2-D grid (kind
#: ``wafer``); ``switch`` joins one-tile chips through switches (kind ``gpu_cluster``).
_TOPOLOGIES = ("mesh", "torus", "switch")


def _kind_of(topology: str) -> str:
    return "gpu_cluster" if topology == "switch" else "wafer"


#: The keys of the former hardware format (a ``kind`` with ``wafer``/``noc`` or
#: ``cluster``/``network`` sections) -> where the one chip-grid description has them.
_FORMER_KEYS = {
    "wafer.die_grid": "system.chips",
    "wafer.tile_grid": "chip.cores",
    "wafer.granularity": "chip.granularity",
    "wafer.unit_grid": "chip.unit_grid",
    "noc.topology": "system.topology",
    "noc.intra_die_bandwidth": "chip.noc.bandwidth",
    "noc.intra_die_latency": "chip.noc.latency",
    "noc.inter_die_bandwidth": "system.link.bandwidth",
    "noc.inter_die_latency": "system.link.latency",
    "noc.inter_die_links": "system.link.count",
    "noc.bidirectional_rings": "system.bidirectional_rings",
    "cluster.num_nodes": "system.chips [nodes, GPUs per node]",
    "cluster.gpus_per_node": "system.chips [nodes, GPUs per node]",
    "network.intra_node_bandwidth": "system.link.bandwidth",
    "network.intra_node_latency": "system.link.latency",
    "network.inter_node_bandwidth": "system.node_link.bandwidth",
    "network.inter_node_latency": "system.node_link.latency",
}
#: Kind-specific defaults (architecture.md): a GPU has no software-managed SRAM.
_GPU_SRAM_DEFAULTS = {"sram_capacity": "0 B", "sram_bandwidth": "0 B/s"}


def _nonnegative_quantity_rule(kind: str, example: str) -> Rule:
    """An optional non-negative quantity of ``kind`` with its unit (absent: the field's 0)."""
    return Rule(
        _quantity_rule(kind, positive=False).parse,
        f"a non-negative {kind} with a unit, e.g. '{example}'",
        required=False,
    )


def hardware_schema(kind: str) -> Schema:
    """The key schema of a hardware file of ``kind`` (``wafer``: ``system.topology`` mesh or
    torus; ``gpu_cluster``: switch)."""
    assert kind in _HW_KINDS, kind
    is_wafer = kind == "wafer"
    schema: Schema = {
        "name": _str_rule(),
        "description": _str_rule(required=False),
        "sources": _str_list_rule(required=False),
        "assumptions": _assumptions_rule(),
        "tile": {
            "peak": Rule(_parse_peak, _PEAK_EXPECTED),
            # A wafer tile computes out of its SRAM, so it must have some; a GPU may leave it 0.
            "sram_capacity": _quantity_rule("bytes", positive=is_wafer),
            "sram_bandwidth": _quantity_rule("bandwidth", positive=is_wafer),
            "compute_efficiency": _float_rule(0.0, 1.0, low_open=True, high_open=False),
            "gemm": _gemm_rule(),
            "memory_ops": _memory_ops_rule(),
            "mesh_gemm": _mesh_gemm_rule(),
            "fidelity_passes": _table_rule(
                MATH_FIDELITIES, _passes, "an int >= 1", "{LoFi: 1, HiFi2: 2, HiFi4: 4}"
            ),
            "format_efficiency": _table_rule(
                tuple(DTYPE_BYTES), _ratio, "a number in (0, 1]", "{bf16: 0.83, bfp8: 0.78}"
            ),
            "auto_format_efficiency": _table_rule(
                tuple(DTYPE_BYTES), _ratio, "a number in (0, 1]", "{bf16: 0.41, bfp8: 0.52}"
            ),
            "attention_efficiency": _float_rule(0.0, 1.0, low_open=False, high_open=False),
            "decode_attention_efficiency": _float_rule(0.0, 1.0, low_open=False, high_open=False),
            "op_latency": _nonnegative_quantity_rule("time", "16 us"),
            "host_dispatch": _nonnegative_quantity_rule("time", "30 us"),
            "host_dispatch_tuned": _nonnegative_quantity_rule("time", "120 us"),
            "dram_reader_bandwidth": _nonnegative_quantity_rule("bandwidth", "22 GB/s"),
            "multicast_bandwidth": _nonnegative_quantity_rule("bandwidth", "15 GB/s"),
            "dram_sharded_reader_bandwidth": _nonnegative_quantity_rule("bandwidth", "35 GB/s"),
            "dram_tile_reader_bandwidth": _nonnegative_quantity_rule("bandwidth", "22 GB/s"),
            "dram_read_issue": _nonnegative_quantity_rule("time", "21 ns"),
            "host_read_bandwidth": _nonnegative_quantity_rule("bandwidth", "1.68 GB/s"),
            "matrix_tile_rows": _int_rule(minimum=1, required=False),
        },
        "dram": {
            "placement": (
                _choice_rule(("die_edge", "per_tile", "positions"))
                if is_wafer
                else _choice_rule(("per_tile",), note=" (a GPU's HBM belongs to that GPU)")
            ),
            # A wafer may have no off-chip memory (capacity 0: everything must fit in SRAM).
            "capacity": _quantity_rule("bytes", positive=not is_wafer),
            "bandwidth": _quantity_rule("bandwidth", positive=True),
            "latency": _quantity_rule("time", positive=False),
        },
    }
    if is_wafer:
        schema["dram"]["positions"] = Rule(
            _parse_positions, "a list of [row, col] chip-local core positions", required=False
        )
        schema["dram"]["banks"] = _int_rule(minimum=1, required=False)
        schema["dram"]["interleaved_read_efficiency"] = dataclasses.replace(
            _float_rule(0.0, 1.0, low_open=True, high_open=False), required=False
        )
        schema["chip"] = {
            "cores": Rule(_parse_grid, _GRID_EXPECTED),
            "granularity": Rule(_parse_granularity, _GRANULARITY_EXPECTED, required=False),
            "unit_grid": Rule(_parse_grid, _GRID_EXPECTED, required=False),
            "noc": _link_schema(),
        }
        schema["system"] = {
            "topology": _choice_rule(_TOPOLOGIES),
            "chips": Rule(_parse_grid, _GRID_EXPECTED),
            # Required with more than one chip (check_hardware); a single chip has none.
            "link": _section_rule(_link_schema(count=True), dict),
            "bidirectional_rings": Rule(_bool_rule().parse, "true or false", required=False),
            "collective_latency": _nonnegative_quantity_rule("time", "5 us"),
            "reduce_scatter_step_latency": _nonnegative_quantity_rule("time", "1 us"),
            "composite_all_reduce": Rule(_bool_rule().parse, "true or false", required=False),
            "direct_all_to_all": Rule(_bool_rule().parse, "true or false", required=False),
            "reduce_scatter_efficiency": dataclasses.replace(
                _float_rule(0.0, 1.0, low_open=True, high_open=False), required=False
            ),
            "injection_efficiency": dataclasses.replace(
                _float_rule(0.0, 1.0, low_open=True, high_open=False), required=False
            ),
            "ring_fabric_efficiency": dataclasses.replace(
                _float_rule(0.0, 1.0, low_open=True, high_open=False), required=False
            ),
        }
    else:
        schema["chip"] = _section_rule({"cores": _single_core_rule()}, dict)
        schema["system"] = {
            "topology": _choice_rule(_TOPOLOGIES),
            "chips": Rule(_parse_grid, "[nodes, GPUs per node], each an int >= 1"),
            "link": _link_schema(),
            "node_link": {
                **_link_schema(),
                "efficiency": dataclasses.replace(
                    _float_rule(0.0, 1.0, low_open=True, high_open=False), required=False
                ),
            },
        }
    schema["energy"] = _energy_rule(kind)
    schema["cost"] = _cost_rule()
    schema["defects"] = _defects_rule()
    schema["host"] = _section_rule(
        {
            "capacity": _quantity_rule("bytes", positive=True),
            "bandwidth": _quantity_rule("bandwidth", positive=True),
            "latency": _quantity_rule("time", positive=False),
        },
        lambda v: HostSpec(v["capacity"], v["bandwidth"], v["latency"]),
    )
    return schema


#: Hugging Face alias (GPT-2 / BERT names) -> ModelSpec name.
_HF_ALIASES = {
    "n_embd": "hidden_size",
    "n_head": "num_attention_heads",
    "n_layer": "num_hidden_layers",
    "n_positions": "max_position_embeddings",
    "n_inner": "intermediate_size",
    "activation_function": "hidden_act",
    "resid_pdrop": "hidden_dropout",
    "attn_pdrop": "attention_dropout",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "head_dim": "attention_head_dim",
    "num_local_experts": "num_experts",  # Mixtral
    "n_routed_experts": "num_experts",  # DeepSeek-V2/V3
    "n_shared_experts": "num_shared_experts",  # DeepSeek-V2/V3
    # Nemotron-H's Mamba-2 mixer (HF NemotronHConfig)
    "ssm_state_size": "mamba_state_size",
    "n_groups": "mamba_num_groups",
    "conv_kernel": "mamba_conv_kernel",
    "chunk_size": "mamba_chunk_size",
    "mlp_hidden_act": "hidden_act",
    # Qwen3-Next's Gated DeltaNet layers
    "linear_num_key_heads": "linear_attention_key_heads",
    "linear_num_value_heads": "linear_attention_value_heads",
    "linear_key_head_dim": "linear_attention_key_dim",
    "linear_value_head_dim": "linear_attention_value_dim",
    "linear_conv_kernel_dim": "linear_attention_conv_kernel",
    "attn_output_gate": "attention_output_gate",  # Qwen3.5
    # MoE every that many layers, the last of each group (Llama 4; Qwen2/3-MoE)
    "interleave_moe_layer_step": "moe_layer_step",
    "decoder_sparse_step": "moe_layer_step",
}

#: Fields whose default is derived from another field (filled by :func:`normalise_workload`).
_DERIVED = {"num_key_value_heads": "num_attention_heads", "intermediate_size": "hidden_size"}
#: Fields Hugging Face may write as null meaning "none" (the spec's default then holds).
_NULLABLE = (
    *_DERIVED,
    "attention_head_dim",
    "moe_intermediate_size",
    "moe_latent_size",
    "mtp_hybrid_override_pattern",
    "num_shared_experts",
    "q_lora_rank",
    "sliding_window",
    "layer_types",
    "attention_chunk_size",
)
#: A Gated DeltaNet layer's sizes, all needed once ``layer_types`` has a linear_attention layer.
_LINEAR_ATTENTION_SIZES = (
    "linear_attention_key_heads",
    "linear_attention_value_heads",
    "linear_attention_key_dim",
    "linear_attention_value_dim",
)
#: The multi-head latent attention keys, all needed once ``kv_lora_rank`` is set.
_MLA_WIDTHS = ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
#: Hugging Face model types whose attention has a learned sink logit per head (OpenAI
#: gpt-oss: "attention sinks", a per-head logit in the softmax denominator; HF
#: ``GptOssAttention.sinks``). Their config.json has no key for it.
_SINK_FAMILY = ("gpt_oss",)

#: Hugging Face model types of NVIDIA's Nemotron (Nemotron-4, Minitron): LayerNorm (its
#: ``layernorm1p`` scales by 1 + gamma: the same kernel), RoPE, no biases (HF
#: ``NemotronConfig``; Parmar et al. 2024, arXiv:2402.16819, Sec. 2). Its partial rotary
#: factor (RoPE on half of each head) is not modelled: the rotation is a small elementwise op.
_NEMOTRON_FAMILY = ("nemotron",)

#: Hugging Face model types of NVIDIA's hybrid Nemotron-H (Nemotron-H, Nemotron 3 Nano):
#: Mamba-2, attention and MLP or MoE layers in the order of ``hybrid_override_pattern``;
#: RMSNorm; no position embedding, the Mamba layers carrying position (Nemotron-H report,
#: arXiv:2504.03624, Sec. 2.1); no biases.
_NEMOTRON_H_FAMILY = ("nemotron_h",)

#: Hugging Face model types of the Llama family: RMSNorm, RoPE, no biases.
_LLAMA_FAMILY = (
    "llama",
    "mistral",
    "qwen2",
    "mixtral",
    "qwen3",
    "qwen3_moe",
    "deepseek_v3",
    "kimi_k2",  # Moonshot's Kimi K2: the DeepSeek-V3 architecture (DeepseekV3ForCausalLM)
    "gpt_oss",
    "llama4_text",
    "qwen3_next",
    "qwen3_5_text",
    "qwen3_5_moe_text",
    "phi3",  # Phi-3/3.5-mini (Phi3MLP: fused gate_up_proj, SiLU)
    "granite",  # IBM Granite 3 (GraniteConfig: attention_bias and mlp_bias false)
    "olmo2",  # AI2 OLMo 2 (its norms after each sublayer: the same ops)
)
#: Hugging Face model types of Google's Gemma (transformers' GemmaConfig, Gemma2Config,
#: Gemma3TextConfig): RMSNorm, RoPE, no biases, and a gated MLP whatever ``hidden_act``
#: names (GemmaMLP: ``down_proj(act(gate_proj(x)) * up_proj(x))``, GeGLU). Gemma 2 alternates
#: sliding-window and full layers, the sliding one first (``layer_types`` default
#: ``"sliding_attention" if (i + 1) % 2 else "full_attention"``), Gemma 3 makes every
#: ``sliding_window_pattern``-th (6) layer full. Their extra norms (Gemma 2 and 3 norm each
#: sublayer's output too) and soft-capping are not modelled (elementwise ops of h per token).
_GEMMA_FAMILY = {"gemma": 0, "gemma2": 2, "gemma3_text": 6}
#: Hugging Face model type of Llama 4 (its text model's config under ``text_config``).
_LLAMA4 = "llama4_text"
#: Hugging Face model types of Qwen3-Next and of Qwen3.5's language models (Gated DeltaNet
#: and gated attention layers).
_QWEN3_NEXT = ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text")
#: Multimodal model types and the type of the language model under their ``text_config``.
_MULTIMODAL = {
    "llama4": _LLAMA4,
    "qwen3_5": "qwen3_5_text",
    "qwen3_5_moe": "qwen3_5_moe_text",
    "gemma3": "gemma3_text",
}
#: Hugging Face model types that are encoders (bidirectional attention).
_ENCODER_FAMILY = ("bert", "roberta")

#: Hugging Face model types whose attention and MLP run side by side
#: (``model.parallel_block``), with what their config classes set where a config.json is
#: silent (transformers' configuration_*.py defaults). Falcon and GPT-NeoX read their block
#: from the config (:func:`_parallel_family`); GPT-J (GPTJBlock), Phi (PhiDecoderLayer) and
#: Cohere (CohereDecoderLayer) always run one norm into both branches. GPT-J's attention has
#: no biases and its MLP has (counted with biases); Cohere's LayerNorm has no bias.
_NEOX_DEFAULTS: dict[str, Any] = {
    "norm": "layernorm",
    "position_embedding": "rope",
    "hidden_act": "gelu",
    "max_position_embeddings": 2048,
    "use_bias": True,
    "tie_word_embeddings": False,
}
_PARALLEL_FAMILY: dict[str, dict[str, Any]] = {
    "falcon": {
        "norm": "layernorm",
        "hidden_act": "gelu",
        "max_position_embeddings": 2048,
        "use_bias": False,
    },
    "gpt_neox": _NEOX_DEFAULTS,
    "gptj": {**_NEOX_DEFAULTS, "parallel_block": "one_norm"},
    "phi": {**_NEOX_DEFAULTS, "parallel_block": "one_norm"},
    "cohere": {
        "norm": "layernorm",
        "position_embedding": "rope",
        "hidden_act": "silu",
        "max_position_embeddings": 8192,
        "use_bias": False,
        "parallel_block": "one_norm",
    },
}

#: Hugging Face model types whose layers palmsim does not build: read from their sizes as a
#: transformer they would be another model, silently.
_UNBUILT_TYPES: dict[str, str] = {
    **dict.fromkeys(
        ("t5", "mt5", "umt5", "longt5", "bart", "mbart", "pegasus", "marian", "whisper"),
        "an encoder-decoder (two stacks, cross-attention) is not one: it builds decoder-only "
        "and encoder-only transformers",
    ),
    **dict.fromkeys(
        ("mamba", "mamba2", "falcon_mamba", "rwkv", "recurrent_gemma"),
        "state-space or recurrent layers are not: it builds Mamba-2 layers only in "
        "Nemotron-H's hybrid pattern (model_type nemotron_h)",
    ),
}
#: Model types palmsim derives norm, position embedding and biases for (above), and GPT-2,
#: whose keys it renames: any other is read from its sizes, with a warning.
_DERIVED_TYPES = frozenset(
    (
        *_LLAMA_FAMILY,
        *_NEMOTRON_FAMILY,
        *_NEMOTRON_H_FAMILY,
        *_ENCODER_FAMILY,
        *_PARALLEL_FAMILY,
        *_GEMMA_FAMILY,
        *_SINK_FAMILY,
        *_QWEN3_NEXT,
        *_MULTIMODAL,
        _LLAMA4,
        "gpt2",
    )
)

_TRAINING_EXAMPLES = {"seq_len": 2048, "global_batch_size": 512}


def _model_schema() -> Schema:
    dropout = _float_rule(0.0, 1.0, low_open=False, high_open=True)
    return {
        "hidden_size": _int_rule(),
        "num_attention_heads": _int_rule(),
        "num_key_value_heads": _int_rule(hint=" (default: num_attention_heads)", required=False),
        "intermediate_size": _int_rule(hint=" (default: 4 * hidden_size)", required=False),
        "num_hidden_layers": _int_rule(),
        "vocab_size": _int_rule(),
        "max_position_embeddings": _int_rule(),
        "hidden_act": _choice_rule(("gelu", "silu"), accepted=tuple(MLP_OF_ACTIVATION)),
        "norm": _choice_rule(("layernorm", "rmsnorm")),
        "position_embedding": _choice_rule(("learned", "rope", "none")),
        "use_bias": _bool_rule(),
        "tie_word_embeddings": _bool_rule(),
        "parallel_block": _choice_rule(PARALLEL_BLOCKS),
        "attention_dropout": dropout,
        "hidden_dropout": dropout,
        "causal": _bool_rule(),
        "attention_head_dim": _nullable_int_rule(hint=" (null: hidden_size / num_attention_heads)"),
        "num_experts": _int_rule(minimum=0),
        "num_experts_per_tok": _int_rule(minimum=0),
        "moe_intermediate_size": _nullable_int_rule(hint=" (null: intermediate_size)"),
        "num_shared_experts": _int_rule(minimum=0),
        "first_k_dense_replace": _int_rule(minimum=0),
        "moe_layer_step": _int_rule(),
        "q_lora_rank": _nullable_int_rule(hint=" (null: queries projected straight from h)"),
        "kv_lora_rank": _nullable_int_rule(hint=" (null: no multi-head latent attention)"),
        "qk_nope_head_dim": _nullable_int_rule(),
        "qk_rope_head_dim": _nullable_int_rule(),
        "v_head_dim": _nullable_int_rule(),
        "sliding_window": _nullable_int_rule(hint=" (null: no sliding-window attention)"),
        "layer_types": _layer_types_rule(),
        "linear_attention_key_heads": _int_rule(minimum=0),
        "linear_attention_value_heads": _int_rule(minimum=0),
        "linear_attention_key_dim": _int_rule(minimum=0),
        "linear_attention_value_dim": _int_rule(minimum=0),
        "linear_attention_conv_kernel": _int_rule(),
        "attention_output_gate": _bool_rule(),
        "attention_chunk_size": _nullable_int_rule(hint=" (null: no chunked attention)"),
        "global_attention_interval": _int_rule(minimum=0),
        "attention_sinks": _bool_rule(),
        "moe_latent_size": _nullable_int_rule(hint=" (null: the experts work at hidden_size)"),
        "num_nextn_predict_layers": _int_rule(minimum=0),
        "mtp_hybrid_override_pattern": _hybrid_pattern_rule(),
        "hybrid_override_pattern": _hybrid_pattern_rule(),
        "mamba_num_heads": _int_rule(minimum=0),
        "mamba_head_dim": _int_rule(minimum=0),
        "mamba_state_size": _int_rule(minimum=0),
        "mamba_num_groups": _int_rule(),
        "mamba_conv_kernel": _int_rule(),
        "mamba_chunk_size": _int_rule(),
    }


def _training_schema(set_hint: bool) -> Schema:
    def hint(name: str) -> str:
        return f", e.g. --set training.{name}={_TRAINING_EXAMPLES[name]}" if set_hint else ""

    return {
        "seq_len": _int_rule(hint=hint("seq_len")),
        "global_batch_size": _int_rule(hint=hint("global_batch_size")),
        "dtype": _choice_rule(("fp32", "fp16", "bf16", "fp8")),
        "optimizer": _choice_rule(("adam", "sgd", "muon")),
        "optimizer_state_dtype": _choice_rule(("fp32", "bf16", "fp16")),
        "master_weights_dtype": _choice_rule(("fp32", "bf16", "fp16", "none")),
        "grad_reduce_dtype": _choice_rule(("weights", "fp32", "bf16", "fp16")),
        "mtp_depths": _int_rule(minimum=0),
        "lora_rank": _int_rule(minimum=0),
        "lora_targets": _choice_list_rule(LORA_TARGET_OPS),
        "bf16_layers_at_start": _int_rule(minimum=0),
        "bf16_layers_at_end": _int_rule(minimum=0),
        "bf16_linears": _choice_list_rule(FP8_LINEAR_OPS),
        "mtp_in_bf16": _bool_rule(),
        "fp8_recipe": _choice_rule(FP8_RECIPES),
        "fp8_param_gather": _bool_rule(),
        "fp8_transpose_cache": _bool_rule(),
        "attention_kernel": _choice_rule(ATTENTION_KERNELS),
        "packed_document_tokens": _nullable_int_rule(hint=" (null: one document per sequence)"),
        "moe_capacity_factor": _optional_positive_float_rule(),
        "expert_load": _choice_rule(EXPERT_LOADS),
        "expert_load_concentration": _float_rule(0.0, float("inf"), low_open=True, high_open=True),
    }


def _workload_schema(set_hint: bool) -> Schema:
    return {
        "name": _str_rule(),
        "description": _str_rule(required=False),
        "sources": _str_list_rule(required=False),
        "model": _model_schema(),
        "training": _training_schema(set_hint),
        "mapping": _mapping_rule(required=False),
        "mode": _choice_rule(("training", "inference")),
        "inference": _inference_schema(),
    }


#: The formats a tensor may be stored or moved in: the activation dtypes and the narrower ones.
_STORED_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8", "bfp8", "bfp4")


def _nullable_choice_rule(choices: Sequence[str]) -> Rule:
    """One of ``choices``, or null (the field's None)."""
    rule = _choice_rule(choices)
    return Rule(lambda v, w, k: None if v is None else rule.parse(v, w, k), rule.expected)


def _number_format_rules() -> Schema:
    """The keys an inference and a serving section share: the activation dtype, each kind
    of weight's and the KV cache's storage format, the math fidelity per format, the
    kernels per layer, the decode GEMMs' DRAM-bank readers, the prefill GEMMs' weight
    readers and the passes replayed from a trace."""
    dtypes = ("fp32", "fp16", "bf16")
    stored = _STORED_DTYPES
    return {
        "dtype": _choice_rule(dtypes),
        "weight_dtype": _choice_rule(stored),
        "kv_dtype": _choice_rule(stored),
        "mlp_weight_dtype": _nullable_choice_rule(stored),
        "mlp_down_weight_dtype": _nullable_choice_rule(stored),
        "math_fidelity": _table_rule(
            stored, _fidelity, "one of " + ", ".join(MATH_FIDELITIES), "{bfp4: LoFi, bf16: HiFi4}"
        ),
        "ops_per_layer": _int_rule(minimum=0),
        "decode_readers_per_bank": _int_rule(minimum=0),
        "decode_attention_cores": _int_rule(minimum=0),
        "decode_attention_cores_per_head": _int_rule(minimum=0),
        "decode_attention_fidelity": _nullable_choice_rule(MATH_FIDELITIES),
        "prefill_weight_readers": _int_rule(minimum=0),
        "prefill_compute_cores": _int_rule(minimum=0),
        "trace": _choice_rule(INFERENCE_PASSES),
    }


def _inference_schema() -> Schema:
    return {
        "prompt_len": _int_rule(),
        "output_len": _int_rule(),
        "batch": _int_rule(),
        **_number_format_rules(),
        "weight_prefetch": _choice_rule(INFERENCE_PASSES),
        "kv_placement": _choice_rule(KV_PLACEMENTS),
        "prefill_attention_2d": _choice_rule(PREFILL_ATTENTION_2D),
        "prefill_attention_split": _choice_rule(ATTENTION_SPLITS),
        "residual_split": _choice_rule(RESIDUAL_SPLITS),
        "logits_to_host": _choice_rule(LOGITS_TO_HOST),
        "fused_projections": _bool_rule(),
        "prefill_reduce_dtypes": _table_rule(
            REDUCED_BLOCKS,
            lambda v: v if v in _STORED_DTYPES else None,
            "a number format: one of " + ", ".join(_STORED_DTYPES),
            "{attn: bfp8}",
        ),
        "prefill_chunk_tokens": _int_rule(minimum=0),
        "prefill_ops_per_layer": _int_rule(minimum=0),
        "attention_kernel": _choice_rule(ATTENTION_KERNELS),
        "mapping": _mapping_rule(required=False),
    }


def _mapping_schema() -> Schema:
    """Every :class:`MappingSpec` field: the rules below, else the rule of its type (``int``,
    ``bool``, ``str``), so a plain new option needs no line here."""
    special: Schema = {
        "recompute": _choice_rule(RECOMPUTE_MODES),
        "recompute_modules": _choice_list_rule(RECOMPUTE_MODULES),
        "grad_accumulation": _choice_rule(GRAD_ACCUMULATION_MODES),
        "zero": _zero_rule(),
        "zero_collectives": _choice_rule(ZERO_COLLECTIVES),
        "tp_comm_overlap_sms": _int_rule(minimum=0),
        "expert_placement": _choice_rule(EXPERT_PLACEMENTS),
        "moe_dispatcher": _choice_rule(MOE_DISPATCHERS),
        "expert_tp": _nullable_int_rule(hint=" (null: tp, Megatron-Core's default)"),
        "tp_2d": _tp_2d_rule(),
        "pipeline_layout": _nullable_int_list_rule(
            "a list of ints >= 0, the layers of each model chunk, or null"
        ),
    }
    by_type = {"int": _int_rule, "bool": _bool_rule, "str": _str_rule}
    schema: Schema = {
        "description": _str_rule(required=False),
        "sources": _str_list_rule(required=False),
    }
    for f in fields(MappingSpec):
        schema[f.name] = special.get(f.name) or by_type[str(f.type)]()
    return schema


def _run_schema() -> Schema:
    return {
        "seed": _int_rule(minimum=0),
        "until": _optional_time_rule(),
        "symmetric_replicas": _bool_rule(),
        "max_events": _int_rule(),
        "max_memory": _quantity_rule("bytes", positive=True),
        "memory_check": _bool_rule(),
    }


# =========================================================================== phase 3: normalise


def _defaults(spec_type: type) -> dict[str, Any]:
    """The field defaults of a spec dataclass (the one place defaults live)."""
    return {f.name: f.default for f in fields(spec_type) if f.default is not _DC_MISSING}


def _fill(section: Any, defaults: Mapping[str, Any]) -> None:
    if isinstance(section, dict):
        for key, value in defaults.items():
            section.setdefault(key, copy.deepcopy(value))


def hardware_kind(raw: Mapping[str, Any], where: str) -> str:
    """The kind of a raw hardware dict, which selects its schema: ``wafer`` for a
    ``system.topology`` of mesh or torus, ``gpu_cluster`` for switch.

    Raises:
        ConfigError: ``system.topology`` is missing or unknown (the other keys cannot be
            checked then).
    """
    system = raw.get("system", MISSING)
    topology = system.get("topology", MISSING) if isinstance(system, dict) else MISSING
    if topology not in _TOPOLOGIES:
        expected = (
            "one of "
            + ", ".join(repr(k) for k in _TOPOLOGIES)
            + _did_you_mean(topology, _TOPOLOGIES)
        )
        raise ConfigError.single(where, "system.topology", topology, expected)
    return _kind_of(topology)


def former_format_problems(raw: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """One problem per key of the former hardware format in ``raw`` (``kind``, and the
    ``wafer``/``noc``/``cluster``/``network`` sections), each naming where the chip-grid
    description keeps it (:data:`_FORMER_KEYS`)."""
    problems: list[ConfigProblem] = []
    if "kind" in raw:
        problems.append(
            ConfigProblem(
                where,
                "kind",
                raw["kind"],
                "nothing: the former format's kind follows from system.topology now (mesh or "
                "torus: a grid of cores; switch: one-tile chips behind switches)",
            )
        )
    for section in ("wafer", "noc", "cluster", "network"):
        body = raw.get(section, MISSING)
        if body is MISSING:
            continue
        for name, value in body.items() if isinstance(body, dict) else [("", body)]:
            key = _join(section, str(name)) if name != "" else section
            new = _FORMER_KEYS.get(key)
            expected = (
                f"nothing here: the chip-grid format names it {new}"
                if new is not None
                else "nothing here: the former format's sections are chip: and system: now"
            )
            problems.append(ConfigProblem(where, key, value, expected))
    return problems


def normalise_hardware(
    raw: Mapping[str, Any], where: str, default_name: str
) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Phase 3 for hardware: fill ``name`` and defaults. Returns a new dict and its problems.

    Defaults: ``name`` = ``default_name`` (the file stem); ``tile.compute_efficiency`` from
    :class:`TileSpec`; for ``gpu_cluster``, SRAM capacity and bandwidth 0 (a GPU's caches are
    not managed storage).
    """
    out = copy.deepcopy(dict(raw))
    out.setdefault("name", default_name)
    tile = out.get("tile")
    # op_latency and host_dispatch are times with a unit in the file (absent: the fields'
    # 0 s), not the fields.
    times = (
        "op_latency_s",
        "host_dispatch_s",
        "host_dispatch_tuned_s",
        "dram_reader_bandwidth_bytes_per_s",
        "multicast_bandwidth_bytes_per_s",
        "dram_sharded_reader_bandwidth_bytes_per_s",
        "dram_tile_reader_bandwidth_bytes_per_s",
        "dram_read_issue_s",
        "host_read_bandwidth_bytes_per_s",
    )
    _fill(tile, {k: v for k, v in _defaults(TileSpec).items() if k not in times})
    system = out.get("system")
    if isinstance(system, dict) and system.get("topology") == "switch":
        _fill(tile, _GPU_SRAM_DEFAULTS)
    return out, []


def _rename_aliases(model: dict[str, Any], where: str, path: str) -> list[ConfigProblem]:
    """Rename Hugging Face aliases in ``model`` in place; an alias beside its target is a problem
    unless both hold the same value."""
    problems: list[ConfigProblem] = []
    for alias, target in _HF_ALIASES.items():
        if alias not in model:
            continue
        value = model.pop(alias)
        if target in model and model[target] != value:
            problems.append(
                ConfigProblem(
                    where,
                    f"{path}{alias}",
                    value,
                    f"no alias of {target!r} when {target} = {model[target]!r} is also given",
                )
            )
            continue
        model[target] = value
    for name in _NULLABLE:  # HF writes null for "derive it" (GPT-2 n_inner) or "none"
        if name in model and model[name] is None:
            del model[name]
    return problems


def hf_to_model(hf: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Translate a Hugging Face ``config.json`` dict to a raw ``model:`` section.

    Keeps the keys :class:`ModelSpec` knows, renames GPT-2/BERT aliases (``n_embd``, ``n_head``,
    ``n_layer``, ``n_positions``, ``n_inner``, ``activation_function``, ``resid_pdrop``,
    ``attn_pdrop``, ...), derives ``norm``/``position_embedding``/``use_bias``/``causal`` from
    ``model_type``, ``rms_norm_eps``/``layer_norm_eps`` and ``attention_bias``, sets
    ``attention_sinks`` for gpt-oss (its config has no key for them), drops a
    ``sliding_window`` that ``use_sliding_window: false`` switches off (Qwen2/3), and drops every
    other key (``torch_dtype``, ``architectures``, token ids, ...): it is not our format.
    Values the file states explicitly win over derived ones.
    """
    typed: list[ConfigProblem] = []
    if not isinstance(hf.get("model_type", ""), str):
        typed.append(ConfigProblem(where, "model_type", hf["model_type"], "a string, e.g. 'llama'"))
        hf = {k: v for k, v in hf.items() if k != "model_type"}
    if hf.get("model_type") in _MULTIMODAL and isinstance(hf.get("text_config"), Mapping):
        # Llama 4's and Qwen3.5's config.json hold the language model under text_config beside
        # the vision encoder's; a training or serving run of text tokens uses it alone
        hf = {"model_type": _MULTIMODAL[hf["model_type"]], **hf["text_config"]}
    known = {f.name for f in fields(ModelSpec)} - {"name"}
    model = {k: copy.deepcopy(v) for k, v in hf.items() if k in known or k in _HF_ALIASES}
    problems = typed + _rename_aliases(model, where, "")
    model_type = hf.get("model_type")
    if "rms_norm_eps" in hf:
        model.setdefault("norm", "rmsnorm")
    elif "layer_norm_eps" in hf or "layer_norm_epsilon" in hf:
        model.setdefault("norm", "layernorm")
    if "attention_bias" in hf:
        model.setdefault("use_bias", hf["attention_bias"] is True)
    if model_type in _LLAMA_FAMILY:
        model.setdefault("norm", "rmsnorm")
        model.setdefault("position_embedding", "rope")
        model.setdefault("use_bias", False)
    if model_type in _NEMOTRON_FAMILY:
        model.setdefault("norm", "layernorm")
        model.setdefault("position_embedding", "rope")
        model.setdefault("use_bias", False)
    if model_type in _NEMOTRON_H_FAMILY:
        # RMSNorm, whose eps its config names layer_norm_epsilon
        if "norm" not in hf:
            model["norm"] = "rmsnorm"
        model.setdefault("position_embedding", "none")
        model.setdefault("use_bias", False)
        problems += _shared_expert(hf, model, where, "moe_shared_expert_intermediate_size")
    if model_type in _PARALLEL_FAMILY:
        _parallel_family(hf, model, model_type)
    if model_type in _GEMMA_FAMILY:
        _gemma(hf, model, _GEMMA_FAMILY[model_type])
    if model_type in _ENCODER_FAMILY:
        model.setdefault("causal", False)
    if model_type in _SINK_FAMILY:
        model.setdefault("attention_sinks", True)
    if hf.get("use_sliding_window") is False:  # Qwen2/3: a window given but switched off
        model.pop("sliding_window", None)
        model.pop("layer_types", None)
    if model_type == _LLAMA4:
        problems += _llama4(hf, model, where)
    if model_type in _QWEN3_NEXT:
        problems += _qwen3_next(hf, model, where)
    problems += _unmodelled_moe_layouts(hf, where)
    if isinstance(model_type, str) and model_type in _UNBUILT_TYPES:
        problems.append(
            ConfigProblem(
                where,
                "model_type",
                model_type,
                f"a model palmsim builds ({_UNBUILT_TYPES[model_type]})",
            )
        )
    elif isinstance(model_type, str) and model_type and model_type not in _DERIVED_TYPES:
        defaults = {f.name: f.default for f in fields(ModelSpec)}
        settings = ", ".join(
            f"{key} {model.get(key, defaults[key])!r}"
            for key in ("norm", "position_embedding", "use_bias")
        )
        _LOG.warning(
            "%s: model_type %r is no family palmsim derives settings for: read from its sizes "
            "with %s (set model.* where its architecture differs)",
            where,
            model_type,
            settings,
        )
    return model, problems


def _gemma(hf: Mapping[str, Any], model: dict[str, Any], every: int) -> None:
    """A Gemma model (:data:`_GEMMA_FAMILY`): its gated MLP, RMSNorm, RoPE, no biases; with a
    ``sliding_window`` and no ``layer_types``, every ``every``-th layer full (Gemma 3:
    ``sliding_window_pattern``; ``global_attention_interval``), the others sliding."""
    model["hidden_act"] = "geglu"
    model.setdefault("norm", "rmsnorm")
    model.setdefault("position_embedding", "rope")
    model.setdefault("use_bias", False)
    every = hf.get("sliding_window_pattern", every)
    if every and hf.get("sliding_window") is not None and "layer_types" not in hf:
        model.setdefault("global_attention_interval", every)


def _parallel_family(hf: Mapping[str, Any], model: dict[str, Any], model_type: str) -> None:
    """A model of :data:`_PARALLEL_FAMILY`. Falcon (transformers' FalconConfig and
    modeling_falcon.py): ``bias``, ``activation`` and ``ffn_hidden_size`` (4h when absent) name
    its settings; its KV heads are ``num_kv_heads`` in the new decoder architecture (40B,
    180B), one with ``multi_query`` (7B), else every head; ``alibi`` replaces the rotary
    embedding (no position table); its block runs parallel with ``num_ln_in_parallel_attn``
    norms (2 when unset) in the new architecture, with one under ``parallel_attn``, else
    serially. GPT-NeoX (GPTNeoXConfig): ``use_parallel_residual`` (default true) runs the
    block parallel with its two norms (``input_layernorm`` and ``post_attention_layernorm``,
    both of x)."""
    for key, value in _PARALLEL_FAMILY[model_type].items():
        model.setdefault(key, value)
    if model_type == "falcon":
        if "bias" in hf:
            model["use_bias"] = hf["bias"] is True
        if isinstance(hf.get("activation"), str):
            model["hidden_act"] = hf["activation"]
        if hf.get("ffn_hidden_size") is not None:
            model.setdefault("intermediate_size", hf["ffn_hidden_size"])
        new_architecture = hf.get("new_decoder_architecture") is True
        if new_architecture and hf.get("num_kv_heads") is not None:
            model.setdefault("num_key_value_heads", hf["num_kv_heads"])
        elif not new_architecture and hf.get("multi_query", True) is True:
            model.setdefault("num_key_value_heads", 1)
        model.setdefault("position_embedding", "none" if hf.get("alibi") is True else "rope")
        if new_architecture:
            norms = hf.get("num_ln_in_parallel_attn") or 2
            model.setdefault("parallel_block", "one_norm" if norms == 1 else "two_norms")
        elif hf.get("parallel_attn", True) is True:
            model.setdefault("parallel_block", "one_norm")
    elif model_type == "gpt_neox" and hf.get("use_parallel_residual", True) is True:
        model.setdefault("parallel_block", "two_norms")


def _qwen3_next(hf: Mapping[str, Any], model: dict[str, Any], where: str) -> list[ConfigProblem]:
    """Qwen3-Next (Hugging Face ``Qwen3NextConfig``, modeling_qwen3_next.py) and Qwen3.5's
    language models, which have its layers (their config states ``layer_types`` and
    ``attn_output_gate``; their multi-token-prediction layers are not read): its full
    attention has an output gate (``Qwen3NextAttention``: ``q_proj`` gives the query and the
    gate, ``attn_output * sigmoid(gate)``); its layers are Gated DeltaNet ('linear_attention')
    but every ``full_attention_interval``-th when ``layer_types`` is not given
    (``Qwen3NextConfig``: ``"linear_attention" if bool((i + 1) % interval) else
    "full_attention"``; ``global_attention_interval``, not a list of every layer); its shared
    expert, ``shared_expert_intermediate_size`` wide, is that
    many routed experts' widths (and a sigmoid gate of one output, not counted)."""
    model.setdefault("attention_output_gate", True)
    if "layer_types" not in hf:
        model.setdefault("global_attention_interval", hf.get("full_attention_interval", 4))
    return _shared_expert(hf, model, where, "shared_expert_intermediate_size")


def _llama4(hf: Mapping[str, Any], model: dict[str, Any], where: str) -> list[ConfigProblem]:
    """Llama 4's text model (Hugging Face ``Llama4TextConfig``, modeling_llama4.py): its
    experts and its one shared expert are ``intermediate_size`` wide and its dense layers'
    MLP ``intermediate_size_mlp`` (``Llama4TextMoe.shared_expert``, ``Llama4TextMLP``); the
    RoPE layers attend in chunks of ``attention_chunk_size`` and the NoPE ones
    (``no_rope_layers`` 0, by default every ``no_rope_layer_interval`` = 4th) to the whole
    sequence."""
    if hf.get("num_local_experts"):
        model["moe_intermediate_size"] = hf.get("intermediate_size")
        model.setdefault("num_shared_experts", 1)
    if hf.get("intermediate_size_mlp"):
        model["intermediate_size"] = hf["intermediate_size_mlp"]
    every = hf.get("no_rope_layer_interval", 4)
    layers = hf.get("num_hidden_layers")
    given = hf.get("no_rope_layers")
    if given and isinstance(layers, int) and isinstance(every, int) and every >= 1:
        pattern = [int((i + 1) % every != 0) for i in range(layers)]
        if list(given) != pattern:
            return [
                ConfigProblem(
                    where,
                    "no_rope_layers",
                    "a list",
                    f"every {every}th layer NoPE (0), the others 1 (no_rope_layer_interval): "
                    "palmsim places the global-attention layers at a fixed interval",
                )
            ]
    model.setdefault("global_attention_interval", every)
    return []


def _shared_expert(
    hf: Mapping[str, Any], model: dict[str, Any], where: str, key: str
) -> list[ConfigProblem]:
    """A shared expert ``hf[key]`` wide (Nemotron-H's ``moe_shared_expert_intermediate_size``,
    Qwen3-Next's ``shared_expert_intermediate_size``) as ``num_shared_experts`` experts of
    the routed width (the same FLOP, parameters and bytes: an expert's matrices split along
    the inner width)."""
    shared, routed = hf.get(key), hf.get("moe_intermediate_size")
    if not shared or not isinstance(shared, int) or not isinstance(routed, int) or routed < 1:
        return []
    if shared % routed:
        return [
            ConfigProblem(
                where,
                key,
                shared,
                f"a multiple of moe_intermediate_size = {routed} (palmsim's shared experts "
                "have the routed width)",
            )
        ]
    model["num_shared_experts"] = (hf.get("n_shared_experts") or 1) * shared // routed
    return []


def _unmodelled_moe_layouts(hf: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """Problems for mixture-of-experts layouts palmsim cannot express: MoE layers other than
    "every ``moe_layer_step``-th layer after the first ``first_k_dense_replace``" (DeepSeek
    ``moe_layer_freq``, which counts from the first layer, and Qwen ``mlp_only_layers``)."""
    problems = []
    layouts: tuple[tuple[str, Any], ...] = (
        ("moe_layer_freq", 1),
        ("mlp_only_layers", []),
    )
    for key, fine in layouts:
        if key in hf and hf[key] not in (fine, None):
            problems.append(
                ConfigProblem(
                    where,
                    key,
                    hf[key],
                    f"{fine!r}: palmsim models a mixture-of-experts MLP in every "
                    "moe_layer_step-th layer after the first first_k_dense_replace",
                )
            )
    return problems


def normalise_workload(
    raw: Mapping[str, Any], where: str, default_name: str, model_where: str | None = None
) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Phase 3 for a workload: aliases, ``hidden_act`` spellings and defaults.

    - ``name`` = ``default_name`` if absent;
    - in ``model``: Hugging Face aliases renamed; ``hidden_act`` spellings mapped (``gelu_new``,
      ``gelu_pytorch_tanh``, ``gelu_fast``, ``relu``, ``relu2`` -> ``gelu``; ``swiglu`` ->
      ``silu``);
      ``num_key_value_heads`` = ``num_attention_heads`` and ``intermediate_size`` =
      4 * ``hidden_size`` if absent (only when the source is a valid int: otherwise the
      source's own problem is reported); other defaults from :class:`ModelSpec`;
    - ``training`` defaults from :class:`TrainingSpec`; ``mode`` from :class:`WorkloadSpec`.

    Returns a new dict and its problems (alias conflicts).
    """
    out = copy.deepcopy(dict(raw))
    problems: list[ConfigProblem] = []
    out.setdefault("name", default_name)
    model = out.get("model")
    if isinstance(model, dict):
        problems += _rename_aliases(model, model_where or where, "model.")
        act = model.get("hidden_act")
        if isinstance(act, str) and act in MLP_OF_ACTIVATION:
            model["hidden_act"] = MLP_OF_ACTIVATION[act]
        heads = model.get("num_attention_heads")
        if "num_key_value_heads" not in model and _is_int(heads):
            model["num_key_value_heads"] = heads
        hidden = model.get("hidden_size")
        if "intermediate_size" not in model and _is_int(hidden):
            model["intermediate_size"] = 4 * hidden
        _fill(model, {k: v for k, v in _defaults(ModelSpec).items() if k != "name"})
    _fill(out.get("training"), _defaults(TrainingSpec))
    _fill(out.get("inference"), _defaults(InferenceSpec))
    out.setdefault("mode", _defaults(WorkloadSpec)["mode"])
    return out, problems


def normalise_mapping(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Phase 3 for a mapping: a new dict with the :class:`MappingSpec` defaults filled in."""
    out = copy.deepcopy(dict(raw))
    _fill(out, _defaults(MappingSpec))
    return out


def normalise_run(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Phase 3 for run settings: a new dict with the :class:`RunSpec` defaults filled in
    (``until`` is the file name of ``until_s``)."""
    out = copy.deepcopy(dict(raw))
    defaults = _defaults(RunSpec)
    out.setdefault("seed", defaults["seed"])
    until = defaults["until_s"]
    out.setdefault("until", None if until is None else format_exact(until, "time"))
    out.setdefault("symmetric_replicas", defaults["symmetric_replicas"])
    out.setdefault("max_events", defaults["max_events"])
    out.setdefault("max_memory", format_exact(defaults["max_memory_bytes"], "bytes"))
    out.setdefault("memory_check", defaults["memory_check"])
    return out


# =========================================================================== phases 4-5


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def check_keys(
    raw: Mapping[str, Any],
    schema: Schema,
    where: str,
    path: str = "",
    where_of: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    """Phase 4: every key of ``raw`` not in ``schema`` is a problem, recursively.

    Args:
        raw: the raw dict (after normalisation).
        schema: key -> rule, or key -> nested schema.
        where: the file, for messages.
        path: dotted key path of ``raw`` inside the file ("" at top level).
        where_of: top-level key -> file, for keys that came from elsewhere.
        notes: top-level unknown key -> explanation replacing the generic expectation.
    """
    problems: list[ConfigProblem] = []
    for name, value in raw.items():
        key = _join(path, name)
        file = (where_of or {}).get(name, where)
        if name not in schema:
            note = (notes or {}).get(name)
            if note is None:
                section = f"'{path}'" if path else "the top level"
                known = [str(k) for k in schema]
                hint = _did_you_mean(str(name), known)
                note = f"a known key of {section}" + (hint or f": {', '.join(known)}")
            problems.append(ConfigProblem(file, key, value, note))
        elif isinstance(schema[name], dict) and isinstance(value, dict):
            problems += check_keys(value, schema[name], file, key)
    return problems


def parse_values(
    raw: Mapping[str, Any],
    schema: Schema,
    where: str,
    path: str = "",
    where_of: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Phase 5: check and convert every value the schema knows (units to SI, ints, choices).

    Returns the converted values (only keys that parsed) and the problems: a missing required
    key, a value of the wrong type or range, a quantity without a unit or of the wrong
    dimension. Unknown keys are :func:`check_keys`' business and are skipped here.
    """
    values: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for name, rule in schema.items():
        key = _join(path, name)
        file = (where_of or {}).get(name, where)
        if name not in raw:
            if isinstance(rule, dict):
                problems.append(ConfigProblem(file, key, MISSING, _section_expected(rule)))
            elif rule.required:
                problems.append(ConfigProblem(file, key, MISSING, rule.expected))
            continue
        value = raw[name]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                problems.append(ConfigProblem(file, key, value, _section_expected(rule)))
                continue
            values[name], sub = parse_values(value, rule, file, key)
            problems += sub
            continue
        try:
            values[name] = rule.parse(value, file, key)
        except _InvalidValueError as exc:
            problems.append(ConfigProblem(file, key, value, exc.expected))
        except ConfigError as exc:
            problems += exc.problems
    return values, problems


def _section_expected(schema: Schema) -> str:
    return "a mapping with keys " + ", ".join(schema)


# =========================================================================== phases 6-7: hardware


def build_hardware(values: Mapping[str, Any]) -> HardwareSpec:
    """Phase 6: the frozen :class:`HardwareSpec` from parsed values (no problems left).

    A grid of cores with ``chip.granularity: k > 1`` comes back coarsened (:func:`coarsen`): each
    tile of the spec is a k x k region of the file's cores.
    """
    tile_v = values["tile"]
    dram_v = values["dram"]
    tile = TileSpec(
        peak_flop_per_s=tile_v["peak"],
        sram_capacity_bytes=tile_v["sram_capacity"],
        sram_bandwidth_bytes_per_s=tile_v["sram_bandwidth"],
        compute_efficiency=tile_v["compute_efficiency"],
        gemm=tile_v.get("gemm"),
        memory_ops=tile_v.get("memory_ops"),
        mesh_gemm=tile_v.get("mesh_gemm"),
        fidelity_passes=tile_v.get("fidelity_passes", ()),
        format_efficiency=tile_v.get("format_efficiency", ()),
        auto_format_efficiency=tile_v.get("auto_format_efficiency", ()),
        attention_efficiency=tile_v["attention_efficiency"],
        decode_attention_efficiency=tile_v["decode_attention_efficiency"],
        op_latency_s=tile_v.get("op_latency", 0.0),
        host_dispatch_s=tile_v.get("host_dispatch", 0.0),
        host_dispatch_tuned_s=tile_v.get("host_dispatch_tuned", 0.0),
        dram_reader_bandwidth_bytes_per_s=tile_v.get("dram_reader_bandwidth", 0.0),
        multicast_bandwidth_bytes_per_s=tile_v.get("multicast_bandwidth", 0.0),
        dram_sharded_reader_bandwidth_bytes_per_s=tile_v.get("dram_sharded_reader_bandwidth", 0.0),
        dram_tile_reader_bandwidth_bytes_per_s=tile_v.get("dram_tile_reader_bandwidth", 0.0),
        dram_read_issue_s=tile_v.get("dram_read_issue", 0.0),
        host_read_bandwidth_bytes_per_s=tile_v.get("host_read_bandwidth", 0.0),
        matrix_tile_rows=tile_v.get("matrix_tile_rows", 1),
    )
    dram = DramSpec(
        placement=dram_v["placement"],
        capacity_bytes=dram_v["capacity"],
        bandwidth_bytes_per_s=dram_v["bandwidth"],
        latency_s=dram_v["latency"],
        positions=dram_v.get("positions", ()),
        banks=dram_v.get("banks", len(dram_v.get("positions", ()))),
        interleaved_read_efficiency=dram_v.get("interleaved_read_efficiency", 1.0),
    )
    wafer = cluster = None
    granularity = (1, 1)
    system = values["system"]
    kind = _kind_of(system["topology"])
    if kind == "wafer":
        chip = values["chip"]
        granularity = chip.get("granularity", (1, 1))
        unit = chip.get("unit_grid", (1, 1))
        noc = LinkSpec(chip["noc"]["bandwidth"], chip["noc"]["latency"])
        # A single chip has no chip-to-chip link: one given anyway (e.g. a multi-chip file
        # run with --set hw.system.chips=[1, 1]) is never used, and the spec (which
        # spec_to_raw writes without it) holds the core link in its place.
        link = system.get("link") if system["chips"] != (1, 1) else None
        wafer = WaferSpec(
            die_rows=system["chips"][0],
            die_cols=system["chips"][1],
            tile_rows=chip["cores"][0],
            tile_cols=chip["cores"][1],
            topology=system["topology"],
            intra_die=noc,
            inter_die=LinkSpec(link["bandwidth"], link["latency"]) if link else noc,
            inter_die_links=link.get("count", 0) if link else 0,
            bidirectional_rings=system.get("bidirectional_rings", False),
            collective_latency_s=system.get("collective_latency", 0.0),
            reduce_scatter_step_latency_s=system.get("reduce_scatter_step_latency", 0.0),
            composite_all_reduce=system.get("composite_all_reduce", False),
            direct_all_to_all=system.get("direct_all_to_all", False),
            reduce_scatter_efficiency=system.get("reduce_scatter_efficiency", 1.0),
            injection_efficiency=system.get("injection_efficiency", 1.0),
            ring_fabric_efficiency=system.get("ring_fabric_efficiency", 1.0),
            unit_rows=unit[0],
            unit_cols=unit[1],
        )
    else:
        link, node_link = system["link"], system["node_link"]
        cluster = ClusterSpec(
            num_nodes=system["chips"][0],
            devices_per_node=system["chips"][1],
            intra_node=LinkSpec(link["bandwidth"], link["latency"]),
            inter_node=LinkSpec(node_link["bandwidth"], node_link["latency"]),
            inter_node_efficiency=node_link.get("efficiency", 1.0),
        )
    if wafer is not None and tile.mesh_gemm is not None:
        # a spec written coarse (chip.unit_grid) runs its GEMMs over each unit's cores; the
        # transposed variant's row reduction crosses the links between them (chip.noc)
        mesh_gemm = dataclasses.replace(
            tile.mesh_gemm,
            mesh=(wafer.unit_rows, wafer.unit_cols),
            link_latency_s=wafer.intra_die.latency_s,
            link_bandwidth_bytes_per_s=wafer.intra_die.bandwidth_bytes_per_s,
        )
        tile = dataclasses.replace(tile, mesh_gemm=mesh_gemm)
    spec = HardwareSpec(
        name=values["name"],
        kind=kind,
        tile=tile,
        dram=dram,
        wafer=wafer,
        cluster=cluster,
        energy=values.get("energy"),
        cost=values.get("cost"),
        defects=values.get("defects"),
        host=values.get("host"),
    )
    return coarsen(spec, granularity) if granularity != (1, 1) else spec


def coarsen(spec: HardwareSpec, granularity: tuple[int, int]) -> HardwareSpec:
    """``spec`` with every ``kr x kc`` region of cores of each die simulated as one tile.

    The aggregation rule (docs/architecture.md, "Granularity"): a unit holds ``kr*kc``
    cores, so its peak FLOP/s, SRAM capacity and SRAM bandwidth (and a GEMM model's compute
    units and a memory-kernel bandwidth) are ``kr*kc`` times a core's. The NoC links between
    neighbouring units are aggregated by the topology from the core link and
    ``wafer.unit_rows``/``unit_cols`` (:class:`palmsim.hardware.topology.MeshTopology`).
    Chip-to-chip links keep their bandwidth and latency. DRAM channels attach to the unit
    holding their position; the channels of one unit merge into one channel with their
    summed capacity and bandwidth. Energy: a unit's static power and TDP are ``kr*kc`` times a
    core's, a hop between units costs ``(kr + kc) / 2`` core hops; cost: a unit's area is
    ``kr*kc`` times a core's. Pure; ``kr``/``kc`` must divide the die's tile grid.
    """
    assert spec.wafer is not None
    kr, kc = granularity
    w, t, d = spec.wafer, spec.tile, spec.dram
    assert w.tile_rows % kr == 0 and w.tile_cols % kc == 0, (w.tile_rows, w.tile_cols, kr, kc)
    area = kr * kc
    gemm = t.gemm
    if gemm is not None:
        gemm = dataclasses.replace(gemm, compute_units=gemm.compute_units * area)
    mem = t.memory_ops
    if mem is not None:
        mem = MemoryOpsSpec(
            bandwidth_bytes_per_s=mem.bandwidth_bytes_per_s * area,
            launch_latency_s=mem.launch_latency_s,
            kinds=tuple(
                (name, MemoryKernelSpec(m.bandwidth_bytes_per_s * area, m.launch_latency_s))
                for name, m in mem.kinds
            ),
        )
    mesh_gemm = t.mesh_gemm
    if mesh_gemm is not None:
        rows, cols = mesh_gemm.mesh
        mesh_gemm = dataclasses.replace(mesh_gemm, mesh=(rows * kr, cols * kc))
    tile = dataclasses.replace(
        t,
        peak_flop_per_s=tuple((dtype, rate * area) for dtype, rate in t.peak_flop_per_s),
        sram_capacity_bytes=t.sram_capacity_bytes * area,
        sram_bandwidth_bytes_per_s=t.sram_bandwidth_bytes_per_s * area,
        gemm=gemm,
        memory_ops=mem,
        mesh_gemm=mesh_gemm,
    )
    # DRAM channels per unit of one die: each channel's unit, then merged per unit.
    if d.placement == "positions":
        per_die = list(d.positions)
    elif d.placement == "per_tile":
        per_die = [(r, c) for r in range(w.tile_rows) for c in range(w.tile_cols)]
    else:  # die_edge: the channels _WaferTopology places (edge columns, inner rows)
        per_die = [(r, c) for c in (0, w.tile_cols - 1) for r in range(1, w.tile_rows - 1)]
    units: list[tuple[int, int]] = []
    for r, c in per_die:
        if (r // kr, c // kc) not in units:
            units.append((r // kr, c // kc))
    per_unit = len(per_die) / len(units) if units else 1.0
    # Every unit holding channels gets the same count when they spread evenly; otherwise the
    # channels are shared out evenly (the total capacity and bandwidth are kept).
    dram = DramSpec(
        placement="positions",
        capacity_bytes=d.capacity_bytes * per_unit,
        bandwidth_bytes_per_s=d.bandwidth_bytes_per_s * per_unit,
        latency_s=d.latency_s,
        positions=tuple(units),
        # per chip: the banks of placed channels do not merge (the cores reading them stay
        # apart); other placements count the merged channels, as a reloaded spec does
        banks=d.banks if d.placement == "positions" else len(units),
        interleaved_read_efficiency=d.interleaved_read_efficiency,
    )
    wafer = dataclasses.replace(
        w,
        tile_rows=w.tile_rows // kr,
        tile_cols=w.tile_cols // kc,
        unit_rows=w.unit_rows * kr,
        unit_cols=w.unit_cols * kc,
    )
    energy = spec.energy
    if energy is not None:
        # Per-tile powers are per core: a unit draws kr*kc cores' worth. A hop between units
        # is kc core hops left-right and kr up-down (the latency rule above): the per-hop
        # energy is their mean, exact for square units (every shipped coarse config).
        energy = dataclasses.replace(
            energy,
            noc_hop_j_per_byte=energy.noc_hop_j_per_byte * (kr + kc) / 2,
            static_per_tile_w=energy.static_per_tile_w * area,
            tdp_per_tile_w=(
                energy.tdp_per_tile_w * area if energy.tdp_per_tile_w is not None else None
            ),
        )
    cost = spec.cost
    if cost is not None:
        cost = dataclasses.replace(cost, tile_area_m2=cost.tile_area_m2 * area)
    return dataclasses.replace(spec, tile=tile, dram=dram, wafer=wafer, energy=energy, cost=cost)


_TRAINING_DTYPES = ("fp32", "fp16", "bf16")

#: Most tiles a wafer may simulate: a chip graph of 2^16 tiles builds in seconds and a few
#: hundred MB; beyond it, ``chip.granularity`` must merge cores into regions.
MAX_SIMULATED_TILES = 65536


def check_hardware(values: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """Phase 7 for hardware: relations between parsed values (skipped where a value failed).

    - ``tile.peak`` names at least one training dtype (fp32, fp16 or bf16): palmsim simulates
      training, and every workload dtype is one of these.
    - A grid of cores on more than one chip gives ``system.link``.
    """
    problems: list[ConfigProblem] = []
    system = values.get("system", {})
    grid = values.get("chip") or {}
    is_grid = system.get("topology") in ("mesh", "torus")  # a grid of cores, not GPUs
    tiles = grid.get("cores") if is_grid else None
    kr, kc = grid.get("granularity", (1, 1))
    if tiles is not None and (tiles[0] % kr or tiles[1] % kc):
        problems.append(
            ConfigProblem(
                where,
                "chip.granularity",
                [kr, kc],
                f"divisors of chip.cores {list(tiles)}: regions of kr x kc cores are "
                "simulated as one tile",
            )
        )
    dies = system.get("chips")
    if tiles is not None and dies is not None and dies != (1, 1) and system.get("link") is None:
        problems.append(
            ConfigProblem(
                where,
                "system.link",
                ConfigError.MISSING,
                f"the link between neighbouring chips of the {dies[0]} x {dies[1]} grid, "
                "{bandwidth, latency} and optionally count",
            )
        )
    if tiles is not None and dies is not None and not (tiles[0] % kr or tiles[1] % kc):
        simulated = dies[0] * dies[1] * (tiles[0] // kr) * (tiles[1] // kc)
        if dies[0] * dies[1] > MAX_SIMULATED_TILES:  # even one region per die is too many
            problems.append(
                ConfigProblem(
                    where,
                    "system.chips",
                    list(dies),
                    f"at most {MAX_SIMULATED_TILES} chips (each is simulated as one tile at "
                    f"least; this grid has {dies[0] * dies[1]})",
                )
            )
        elif simulated > MAX_SIMULATED_TILES:
            problems.append(
                ConfigProblem(
                    where,
                    "chip.granularity",
                    [kr, kc],
                    f"regions large enough that at most {MAX_SIMULATED_TILES} tiles are "
                    f"simulated (this grid gives {simulated}); e.g. chip.granularity: "
                    f"{math.ceil(math.sqrt(simulated * kr * kc / MAX_SIMULATED_TILES))} or "
                    "a divisor of the tile grid near it",
                )
            )
    dram = values.get("dram", {})
    positions = dram.get("positions", ())
    if dram.get("placement") == "positions" and not positions:
        problems.append(
            ConfigProblem(
                where,
                "dram.positions",
                ConfigError.MISSING,
                "chip-local [row, col] of each DRAM channel for placement 'positions'",
            )
        )
    if dram.get("placement") not in (None, "positions") and positions:
        problems.append(
            ConfigProblem(
                where, "dram.positions", positions, "nothing unless dram.placement is 'positions'"
            )
        )
    if tiles is not None:
        for i, (r, c) in enumerate(positions):
            if r >= tiles[0] or c >= tiles[1]:
                problems.append(
                    ConfigProblem(
                        where,
                        f"dram.positions[{i}]",
                        [r, c],
                        f"a core of the chip's {tiles[0]} x {tiles[1]} chip.cores",
                    )
                )
    peak = values.get("tile", {}).get("peak")
    if peak is not None and not {d for d, _ in peak} & set(_TRAINING_DTYPES):
        problems.append(
            ConfigProblem(
                where,
                "tile.peak",
                {d: format_exact(r, "flop_rate") for d, r in peak},
                "a rate for at least one training dtype: " + ", ".join(_TRAINING_DTYPES),
            )
        )
    return problems


def load_hardware(
    path: str | Path, overrides: Sequence[str] = (), *, data: Mapping[str, Any] | None = None
) -> HardwareSpec:
    """Load a hardware file (a grid of chips, each a grid of cores) with ``hw.`` overrides.

    Args:
        path: the YAML file (with ``raw``: only names the source in messages).
        overrides: ``--set`` strings; those starting with ``hw.`` apply, all are syntax-checked.
        data: the file's content already read (e.g. a section of ``resolved_config.yaml``).

    Raises:
        ConfigError: every problem of the file at once.
    """
    path = Path(path)
    where = str(path)
    content = copy.deepcopy(dict(data)) if data is not None else read_config_file(path)
    raw = apply_overrides(content, overrides, "hw", where)
    former = former_format_problems(raw, where)
    if former:
        raise ConfigError(blame_overrides(former, overrides, "hw", where))
    kind = hardware_kind(raw, where)
    raw, problems = normalise_hardware(raw, where, _default_name(path))
    schema = hardware_schema(kind)
    problems += check_keys(raw, schema, where)
    values, parse_problems = parse_values(raw, schema, where)
    problems += parse_problems
    problems += _check_assumed_keys(raw, where)
    # A value that failed to parse is absent from ``values``: check_hardware would call it
    # missing (system.link, dram.positions) on top of the problem already reported for it.
    reported = {p.key for p in problems}
    problems += [
        p
        for p in check_hardware(values, where)
        if not any(k == p.key or k.startswith((f"{p.key}.", f"{p.key}[")) for k in reported)
    ]
    if problems:
        raise ConfigError(blame_overrides(problems, overrides, "hw", where))
    return build_hardware(values)


# =========================================================================== phases 6-7: workload


def build_workload(values: Mapping[str, Any]) -> WorkloadSpec:
    """Phase 6: the frozen :class:`WorkloadSpec` from parsed values (no problems left)."""
    model_v = values["model"]
    model = ModelSpec(
        name=values["name"],
        **{f.name: model_v[f.name] for f in fields(ModelSpec) if f.name != "name"},
    )
    training = TrainingSpec(**{f.name: values["training"][f.name] for f in fields(TrainingSpec)})
    inference = None
    if "inference" in values:
        inf = values["inference"]
        inference = InferenceSpec(**{f.name: inf[f.name] for f in fields(InferenceSpec)})
    return WorkloadSpec(model=model, training=training, mode=values["mode"], inference=inference)


def check_workload(
    values: Mapping[str, Any], where: str, model_where: str | None = None
) -> list[ConfigProblem]:
    """Phase 7 for a workload: relations between parsed values (skipped where a value failed).

    - ``hidden_size`` divisible by ``num_attention_heads``;
    - ``num_attention_heads`` divisible by ``num_key_value_heads``;
    - ``training.seq_len`` <= ``model.max_position_embeddings``.
    """
    problems: list[ConfigProblem] = []
    mw = model_where or where
    model = values.get("model", {})
    hidden, heads = model.get("hidden_size"), model.get("num_attention_heads")
    kv = model.get("num_key_value_heads")
    explicit_head_dim = model.get("attention_head_dim") is not None
    if hidden is not None and heads is not None and hidden % heads and not explicit_head_dim:
        problems.append(
            ConfigProblem(
                mw, "model.num_attention_heads", heads, f"a divisor of hidden_size {hidden}"
            )
        )
    if heads is not None and kv is not None and heads % kv:
        problems.append(
            ConfigProblem(
                mw, "model.num_key_value_heads", kv, f"a divisor of num_attention_heads {heads}"
            )
        )
    problems += _check_moe(model, mw)
    problems += _check_attention(model, mw)
    problems += _check_hybrid(model, mw)
    problems += _check_parallel_block(model, mw)
    problems += _check_mtp(model, values.get("training", {}), where, mw)
    seq_len = values.get("training", {}).get("seq_len")
    max_pos = model.get("max_position_embeddings")
    if seq_len is not None and max_pos is not None and seq_len > max_pos:
        problems.append(
            ConfigProblem(
                where,
                "training.seq_len",
                seq_len,
                f"at most model.max_position_embeddings = {max_pos}",
            )
        )
    return problems


def _check_parallel_block(model: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """A parallel block (``parallel_block``) is built for a dense layer of attention and
    MLP: not for mixture-of-experts, hybrid or linear-attention layers."""
    block = model.get("parallel_block", "none")
    if block == "none":
        return []
    other = (
        "mixture-of-experts layers (num_experts)" if model.get("num_experts") else
        "a hybrid layer pattern (hybrid_override_pattern)"
        if model.get("hybrid_override_pattern") else
        "linear-attention layers" if _has_linear_layers(model) else None
    )  # fmt: skip
    if other is None:
        return []
    return [
        ConfigProblem(
            where,
            "model.parallel_block",
            block,
            f"'none' with {other}: palmsim builds the parallel block for dense attention and "
            "MLP layers only",
        )
    ]


def _has_linear_layers(model: Mapping[str, Any]) -> bool:
    """Some layer is a Gated DeltaNet layer (:meth:`ModelSpec.is_linear_attention_layer`):
    ``layer_types`` names one, or without it the model has Gated DeltaNet sizes and a
    ``global_attention_interval`` above 1."""
    types = model.get("layer_types")
    if types is not None:
        return "linear_attention" in types
    every = model.get("global_attention_interval")
    return bool(model.get("linear_attention_key_heads")) and isinstance(every, int) and every > 1


def _check_attention(model: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """Multi-head latent attention needs its three head widths; ``layer_types`` has one entry
    per layer and a sliding-window layer needs ``sliding_window``."""
    problems: list[ConfigProblem] = []
    if model.get("kv_lora_rank") is not None:
        for key in _MLA_WIDTHS:
            if model.get(key) is None:
                problems.append(
                    ConfigProblem(
                        where, f"model.{key}", MISSING, "an int >= 1 (kv_lora_rank is set: MLA)"
                    )
                )
    types, layers = model.get("layer_types"), model.get("num_hidden_layers")
    if types is not None and layers is not None and len(types) != layers:
        problems.append(
            ConfigProblem(
                where,
                "model.layer_types",
                f"{len(types)} entries",
                f"one per layer: num_hidden_layers = {layers}",
            )
        )
    if types and "sliding_attention" in types and model.get("sliding_window") is None:
        problems.append(
            ConfigProblem(
                where,
                "model.sliding_window",
                None,
                "an int >= 1: layer_types has sliding_attention layers",
            )
        )
    if not _has_linear_layers(model):
        return problems
    why = "layer_types has linear_attention layers" if types else "Gated DeltaNet layers"
    for key in _LINEAR_ATTENTION_SIZES:
        if not model.get(key):
            problems.append(
                ConfigProblem(where, f"model.{key}", model.get(key, MISSING), f"an int >= 1: {why}")
            )
    bounded = [k for k in ("sliding_window", "attention_chunk_size") if model.get(k) is not None]
    if types is None and bounded:
        problems.append(
            ConfigProblem(
                where,
                "model.layer_types",
                MISSING,
                f"a list of each layer's attention: with Gated DeltaNet sizes and "
                f"{bounded[0]}, global_attention_interval does not say which layers are which",
            )
        )
    return problems


def _check_mtp(
    model: Mapping[str, Any], training: Mapping[str, Any], where: str, model_where: str
) -> list[ConfigProblem]:
    """Multi-token prediction trains the model's MTP blocks: at least one, and as many as
    the depths unless a single block is repeated (Megatron-Core mtp_use_repeated_layer)."""
    depths, blocks = training.get("mtp_depths"), model.get("num_nextn_predict_layers")
    if not depths or blocks is None:
        return []
    layers = model.get("num_hidden_layers")
    if isinstance(layers, int) and depths > layers:  # also bounds what the mapper builds
        return [
            ConfigProblem(
                where,
                "training.mtp_depths",
                depths,
                f"at most the model's num_hidden_layers = {layers} (in {model_where})",
            )
        ]
    if blocks == 0 or (blocks != 1 and blocks != depths):
        return [
            ConfigProblem(
                where,
                "training.mtp_depths",
                depths,
                f"0, or with the model's num_nextn_predict_layers = {blocks} MTP blocks "
                "(in " + model_where + ") their number or any number of one repeated block",
            )
        ]
    return []


def _check_hybrid(model: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """A hybrid pattern names every layer; its Mamba layers need their mixer's sizes, its
    'E' layers experts, and experts need 'E' layers; the MoE layers are where it says, so
    ``first_k_dense_replace`` stays 0."""
    pattern = model.get("hybrid_override_pattern")
    if pattern is None:
        return []
    problems: list[ConfigProblem] = []
    layers = model.get("num_hidden_layers")
    if layers is not None and len(pattern) != layers:
        problems.append(
            ConfigProblem(
                where,
                "model.hybrid_override_pattern",
                f"{len(pattern)} layers",
                f"one character per layer: num_hidden_layers = {layers}",
            )
        )
    if "M" in pattern:
        for key in ("mamba_num_heads", "mamba_head_dim", "mamba_state_size"):
            if not model.get(key):
                problems.append(
                    ConfigProblem(
                        where, f"model.{key}", model.get(key, MISSING), "an int >= 1 ('M' layers)"
                    )
                )
        heads, groups = model.get("mamba_num_heads"), model.get("mamba_num_groups")
        if heads and groups and heads % groups:
            problems.append(
                ConfigProblem(
                    where, "model.mamba_num_groups", groups, f"a divisor of mamba_num_heads {heads}"
                )
            )
    experts = model.get("num_experts") or 0
    if ("E" in pattern) != (experts > 0):
        problems.append(
            ConfigProblem(
                where,
                "model.num_experts",
                experts,
                "> 0 exactly when hybrid_override_pattern has 'E' (mixture-of-experts) layers",
            )
        )
    for key, neutral in (("first_k_dense_replace", 0), ("moe_layer_step", 1)):
        if model.get(key, neutral) != neutral:
            problems.append(
                ConfigProblem(
                    where,
                    f"model.{key}",
                    model.get(key),
                    f"{neutral}: hybrid_override_pattern places the mixture-of-experts layers",
                )
            )
    return problems


def _check_moe(model: Mapping[str, Any], where: str) -> list[ConfigProblem]:
    """A mixture-of-experts model routes each token to 1..num_experts experts and keeps at
    least one MoE layer; a dense model has no top-k and no shared experts."""
    experts, top_k = model.get("num_experts"), model.get("num_experts_per_tok")
    shared, dense = model.get("num_shared_experts"), model.get("first_k_dense_replace")
    layers = model.get("num_hidden_layers")
    problems: list[ConfigProblem] = []
    if experts is None or top_k is None:
        return problems
    if experts > 0 and not 1 <= top_k <= experts:
        problems.append(
            ConfigProblem(
                where, "model.num_experts_per_tok", top_k, f"an int in [1, num_experts = {experts}]"
            )
        )
    if experts == 0 and (top_k or shared):
        key, value = ("num_experts_per_tok", top_k) if top_k else ("num_shared_experts", shared)
        problems.append(
            ConfigProblem(where, f"model.{key}", value, "0 for a dense model (num_experts = 0)")
        )
    if experts > 0 and dense is not None and layers is not None and dense >= layers:
        problems.append(
            ConfigProblem(
                where,
                "model.first_k_dense_replace",
                dense,
                f"fewer than num_hidden_layers = {layers} (some layer must be mixture-of-experts)",
            )
        )
    step = model.get("moe_layer_step") or 1
    if experts > 0 and layers is not None and dense is not None and dense < layers < dense + step:
        problems.append(
            ConfigProblem(
                where,
                "model.moe_layer_step",
                step,
                f"at most num_hidden_layers - first_k_dense_replace = {layers - dense} (some "
                "layer must be mixture-of-experts)",
            )
        )
    return problems


def _canonical_model_overrides(overrides: Sequence[str]) -> list[str]:
    """Overrides with a Hugging Face alias as the model key (``model.n_layer=2``) rewritten to
    the canonical name (``model.num_hidden_layers=2``); everything else unchanged."""
    out = []
    for text in overrides:
        key, sep, value = text.partition("=") if isinstance(text, str) else ("", "", "")
        parts = key.strip().split(".")
        at = {"model": 1, "workload": 2}.get(parts[0])
        if (
            sep
            and at is not None
            and len(parts) == at + 1
            and parts[at - 1] == "model"
            and parts[at] in _HF_ALIASES
        ):
            parts[at] = _HF_ALIASES[parts[at]]
            text = ".".join(parts) + "=" + value
        out.append(text)
    return out


#: The ``training`` keys an inference run reads: its MoE layers route tokens as training does
#: (palmsim.mapping.inference's ``_pass``, drawn from ``run.seed``).
INFERENCE_READS_TRAINING = ("expert_load", "expert_load_concentration")
_UNREAD_WHY = {
    "training": "nothing in a training run (inference.* applies to --mode inference)",
    "inference": "nothing in an inference run (training.* applies to --mode training; an "
    "inference run reads only "
    + " and ".join(f"training.{k}" for k in INFERENCE_READS_TRAINING)
    + "; inference.* sets its batch, lengths and number formats)",
}


def read_in_mode(mode: str, path: Sequence[str]) -> bool:
    """Whether a run of ``mode`` reads the workload key at ``path`` (``("training",
    "seq_len")``): a training run no ``inference.*`` key, an inference run only
    :data:`INFERENCE_READS_TRAINING` of ``training.*``."""
    if mode == "training":
        return path[0] != "inference"
    return path[0] != "training" or (len(path) > 1 and path[1] in INFERENCE_READS_TRAINING)


def _refuse_unread(overrides: Sequence[str], mode: Any) -> None:
    """Refuse, before the sections they would build are checked, the workload overrides a run
    of ``mode`` never reads (:func:`read_in_mode`): each would change nothing.

    Raises:
        ConfigError: naming every such override.
    """
    if not isinstance(mode, str) or mode not in _UNREAD_WHY:  # the schema reports a bad mode
        return
    unread = [
        ov for ov in split_overrides(overrides)["workload"] if not read_in_mode(mode, ov.path)
    ]
    if unread:
        raise ConfigError(
            [
                ConfigProblem(
                    override_where(ov.text),
                    ".".join(ov.path),
                    ov.value,
                    _UNREAD_WHY[mode],
                    ov.text,
                )
                for ov in unread
            ]
        )


def load_workload(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    data: Mapping[str, Any] | None = None,
    model_only: bool = False,
) -> tuple[WorkloadSpec, dict[str, Any]]:
    """Load a workload YAML, or a bare Hugging Face ``config.json``, with ``workload.``,
    ``model.`` and ``training.`` overrides applied.

    ``model_only``: the caller reads the model alone (``palmsim serve``), so, as in an
    inference run, a ``training`` section that leaves out its sequence and batch is whole.

    In a YAML workload, ``model:`` is a mapping of Hugging Face field names or a path, relative
    to the YAML file, to a ``config.json``. For a bare ``config.json`` the ``training`` values
    come from ``--set training.*`` overrides.

    ``data``, if given, is the YAML file's content already read (``path`` then only names the
    source in messages).

    Returns:
        The spec, and the raw ``mapping:`` section (``{}`` if none) for :func:`load_mapping`;
        ``mapping.`` overrides are not applied to it here.

    Raises:
        ConfigError: every problem of the file at once.
    """
    path = Path(path)
    where = str(path)
    problems: list[ConfigProblem] = []
    model_where: str | None = None
    model_failed = False
    given = copy.deepcopy(dict(data)) if data is not None else None
    is_hf = given is None and path.suffix.lower() == ".json"
    if is_hf:
        model, problems = hf_to_model(read_config_file(path), where)
        raw: dict[str, Any] = {"name": _default_name(path), "model": model, "training": {}}
    else:
        raw = given if given is not None else read_config_file(path)
        if isinstance(raw.get("model"), str):
            model_path = path.parent / raw["model"]
            try:
                model, problems = hf_to_model(read_config_file(model_path), str(model_path))
                raw["model"] = model
                model_where = str(model_path)
            except ConfigError as exc:
                problems += [
                    ConfigProblem(
                        where,
                        "model",
                        raw["model"],
                        f"a Hugging Face config.json path relative to this file ({p})",
                    )
                    for p in exc.problems
                ]
                model_failed = True
                del raw["model"]
    if isinstance(raw.get("model"), dict):  # aliases first, so an override of either name wins
        problems += _rename_aliases(raw["model"], model_where or where, "model.")
    raw = apply_overrides(raw, _canonical_model_overrides(overrides), "workload", where)
    _refuse_unread(overrides, raw.get("mode", "training"))
    unread = model_only or raw.get("mode") == "inference"
    if unread and isinstance(raw.get("training", {}), dict):
        # an inference run reads neither (read_in_mode), and a bare config.json cannot state
        # them (--set training.* is refused in that mode): one sample of one token stands in
        training = raw.setdefault("training", {})
        for key in ("seq_len", "global_batch_size"):
            training.setdefault(key, 1)
    raw, norm_problems = normalise_workload(raw, where, _default_name(path), model_where)
    problems += norm_problems
    schema = _workload_schema(set_hint=is_hf)
    if model_failed:
        del schema["model"]
        raw.pop("model", None)
    if "inference" not in raw:  # optional section; required below when mode is 'inference'
        del schema["inference"]
    where_of = {"model": model_where} if model_where else None
    problems += check_keys(raw, schema, where, where_of=where_of)
    values, parse_problems = parse_values(raw, schema, where, where_of=where_of)
    problems += parse_problems
    problems += check_workload(values, where, model_where)
    if values.get("mode") == "inference" and "inference" not in raw:
        problems.append(
            ConfigProblem(
                where,
                "inference",
                MISSING,
                "an inference: section for mode 'inference' (prompt_len, output_len and batch "
                "at least; or --set inference.prompt_len=512 --set inference.output_len=128 "
                "--set inference.batch=1)",
            )
        )
    if problems:
        canonical = _canonical_model_overrides(overrides)
        typed = [str(o) for o in overrides]
        raise ConfigError(blame_overrides(problems, canonical, "workload", where, typed))
    if values["mode"] == "inference" and values["inference"].get("mapping"):
        # The inference mapping section replaces the training one (serving uses other splits).
        return build_workload(values), values["inference"]["mapping"]
    unused = (values.get("inference") or {}).get("mapping")
    if unused:  # checked all the same: a bad value is the file's problem in any mode
        load_mapping([(f"{where}: inference.mapping", unused)], mode="inference")
    mapping = values.get("mapping", {})
    if values["mode"] == "inference" and isinstance(mapping, Mapping):
        # The file's mapping: is its training mapping. An inference run without an
        # inference.mapping takes its parallelism and leaves its training procedure
        # (schedule, recompute, ZeRO, ...) to training runs, saying so; a degree inference
        # does not model (cp, expert_tp) stays a ConfigError, as it is from a flag or --set.
        names = {f.name for f in fields(MappingSpec)} - {"cp", "expert_tp"}
        training_only = sorted(
            k for k in mapping if k in names and "inference" not in modes_of(MappingSpec, k)
        )
        if training_only:
            keys = ", ".join(f"mapping.{k}" for k in training_only)
            _LOG.warning("%s: %s apply to training: not read in an inference run", where, keys)
            mapping = {k: v for k, v in mapping.items() if k not in training_only}
    return build_workload(values), mapping


# =========================================================================== mapping and run


def load_mapping(
    sections: Sequence[tuple[str, Mapping[str, Any]]],
    overrides: Sequence[str] = (),
    mode: str | None = None,
) -> MappingSpec:
    """Merge mapping sections (later wins), apply ``mapping.`` overrides, and validate.

    Args:
        sections: ``(source, raw)`` pairs in increasing precedence, e.g. the workload's
            ``mapping:`` section, a mapping file (:func:`read_mapping_file`), the ``--pp/--tp``
            flags as ``("--pp flags", {...})``. ``source`` names the origin in messages.
        overrides: ``--set`` strings; those starting with ``mapping.`` apply last.

    Schedule, placement and partition names are only checked to be non-empty strings here;
    their registries check the names. With ``mode``, a key given for an option that does
    not apply to that mode (:func:`palmsim.config.specs.modes_of`, e.g. ``zero`` in an
    inference run) is a problem naming the key.

    Raises:
        ConfigError: every problem at once, each naming the section its key came from.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    for source, raw in sections:
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            problems.append(ConfigProblem(source, "mapping", raw, "a mapping of mapping keys"))
            continue
        for key, value in raw.items():
            merged[key] = copy.deepcopy(value)
            origin[key] = source
    merged = apply_overrides(merged, overrides, "mapping", OVERRIDE_WHERE)
    for ov in split_overrides(overrides)["mapping"]:
        origin[ov.path[0]] = override_where(ov.text)
    given = dict(merged)  # what the sections and overrides set, before defaults
    merged = normalise_mapping(merged)
    schema = _mapping_schema()
    problems += check_keys(merged, schema, OVERRIDE_WHERE, "mapping", where_of=origin)
    values, parse_problems = parse_values(merged, schema, OVERRIDE_WHERE, "mapping", origin)
    problems += parse_problems
    if mode is not None:
        problems += check_mapping_modes(given, mode, origin)
    if problems:
        texts = [ov.text for ov in split_overrides(overrides)["mapping"]]
        raise ConfigError(mark_overrides(problems, texts))
    return build_mapping(values)


def check_mapping_modes(
    merged: Mapping[str, Any], mode: str, origin: Mapping[str, str]
) -> list[ConfigProblem]:
    """A problem for every given mapping key whose option does not apply to ``mode``; null
    (an option off, as a resolved config writes it) applies to every mode."""
    names = {f.name for f in fields(MappingSpec)}
    problems = []
    for key in sorted(merged):
        if key not in names or merged[key] is None:
            continue
        modes = modes_of(MappingSpec, key)
        if mode not in modes:
            problems.append(
                ConfigProblem(
                    origin.get(key, OVERRIDE_WHERE),
                    f"mapping.{key}",
                    merged[key],
                    f"nothing in {'an' if mode[0] in 'aeiou' else 'a'} {mode} run "
                    f"(mapping.{key} applies to "
                    f"{' and '.join(modes)} only)",
                )
            )
    return problems


def build_mapping(values: Mapping[str, Any]) -> MappingSpec:
    """Phase 6: the frozen :class:`MappingSpec` from parsed values."""
    return MappingSpec(**{f.name: values[f.name] for f in fields(MappingSpec)})


def load_run(overrides: Sequence[str] = ()) -> RunSpec:
    """Run settings from ``run.`` overrides: ``run.seed`` (int >= 0), ``run.until`` (a time,
    e.g. ``"10 s"``, or null for no limit), ``run.symmetric_replicas`` (bool),
    ``run.max_events``, ``run.max_memory``, ``run.memory_check`` (bool). Defaults from
    :class:`RunSpec`.

    Raises:
        ConfigError: every problem at once.
    """
    raw = normalise_run(apply_overrides({}, overrides, "run", OVERRIDE_WHERE))
    origin = {ov.path[0]: override_where(ov.text) for ov in split_overrides(overrides)["run"]}
    schema = _run_schema()
    problems = check_keys(raw, schema, OVERRIDE_WHERE, "run", where_of=origin)
    values, parse_problems = parse_values(raw, schema, OVERRIDE_WHERE, "run", origin)
    problems += parse_problems
    if problems:
        texts = [ov.text for ov in split_overrides(overrides)["run"]]
        raise ConfigError(mark_overrides(problems, texts))
    return build_run(values)


def build_run(values: Mapping[str, Any]) -> RunSpec:
    """Phase 6: the frozen :class:`RunSpec` from parsed values."""
    return RunSpec(
        seed=values["seed"],
        until_s=values["until"],
        symmetric_replicas=values["symmetric_replicas"],
        max_events=values["max_events"],
        max_memory_bytes=values["max_memory"],
        memory_check=values["memory_check"],
    )


# =========================================================================== spec -> raw

_DECIMAL_PREFIXES = ("P", "T", "G", "M", "k", "")
_BINARY_PREFIXES = ("Pi", "Ti", "Gi", "Mi", "Ki")
_TIME_UNITS = ("h", "s", "ms", "us", "ns", "ps")


def format_exact(value: float, dimension: str) -> str:
    """Format ``value`` (SI) so that :func:`parse_quantity` gives back exactly ``value``.

    :func:`palmsim.units.format_quantity` if its 6 digits are exact (``"256 GB/s"``); otherwise
    the shortest exact text over the decimal (and, for bytes, binary: ``"3 MiB"``) prefixes,
    e.g. ``"2039 GB/s"`` rather than ``"2.039 TB/s"``, which parses 1 ulp off.
    """
    preferred = format_quantity(value, dimension)
    if parse_quantity(preferred, dimension) == value:
        return preferred
    unit = DIMENSIONS[dimension][0]
    if dimension == "time":
        units = list(_TIME_UNITS)
    elif dimension in DISPLAY_UNITS:
        units = list(DISPLAY_UNITS[dimension])
    else:
        prefixes = _DECIMAL_PREFIXES + (_BINARY_PREFIXES if dimension == "bytes" else ())
        units = [p + unit for p in prefixes]
    # the shortest exact text, among the units that give a mantissa from 1 to 1000 first
    # ("18.801000000000002 W", not "1.8801e-11 TW", which happens to parse back exactly)
    best: tuple[bool, int, str] | None = None
    for name in units:
        scale = parse_quantity(f"1 {name}", dimension)
        for digits in range(1, 18):
            text = f"{significant(value / scale, digits)} {name}"
            if parse_quantity(text, dimension) == value:
                odd = not 1 <= abs(value / scale) < 1000
                if best is None or (odd, len(text)) < best[:2]:
                    best = (odd, len(text), text)
                break
    return best[2] if best is not None else f"{float(value)!r} {unit}"


def _link_to_raw(link: LinkSpec) -> dict[str, Any]:
    return {
        "bandwidth": format_exact(link.bandwidth_bytes_per_s, "bandwidth"),
        "latency": format_exact(link.latency_s, "time"),
    }


def _hardware_to_raw(spec: HardwareSpec) -> dict[str, Any]:
    t, d = spec.tile, spec.dram
    raw: dict[str, Any] = {
        "name": spec.name,
        "tile": {
            "peak": {dtype: format_exact(rate, "flop_rate") for dtype, rate in t.peak_flop_per_s},
            "sram_capacity": format_exact(t.sram_capacity_bytes, "bytes"),
            "sram_bandwidth": format_exact(t.sram_bandwidth_bytes_per_s, "bandwidth"),
            "compute_efficiency": t.compute_efficiency,
            "gemm": None
            if t.gemm is None
            else {
                "compute_units": t.gemm.compute_units,
                "tile": [t.gemm.tile_m, t.gemm.tile_n],
                "max_efficiency": t.gemm.max_efficiency,
                "launch_latency": format_exact(t.gemm.launch_latency_s, "time"),
                "attention_forward_efficiency": t.gemm.attention_forward_efficiency,
                "attention_backward_efficiency": t.gemm.attention_backward_efficiency,
                "attention_forward_efficiency_d64": t.gemm.attention_forward_efficiency_d64,
                "attention_backward_efficiency_d64": t.gemm.attention_backward_efficiency_d64,
                "flash2_forward_efficiency": t.gemm.flash2_forward_efficiency,
                "flash2_backward_efficiency": t.gemm.flash2_backward_efficiency,
                "grouped_streams": t.gemm.grouped_streams,
            },
            "memory_ops": None
            if t.memory_ops is None
            else {
                "bandwidth": format_exact(t.memory_ops.bandwidth_bytes_per_s, "bandwidth"),
                "launch_latency": format_exact(t.memory_ops.launch_latency_s, "time"),
                **{
                    kind: {
                        "bandwidth": format_exact(k.bandwidth_bytes_per_s, "bandwidth"),
                        "launch_latency": format_exact(k.launch_latency_s, "time"),
                    }
                    for kind, k in t.memory_ops.kinds
                },
            },
        },
    }
    if spec.wafer is not None:
        w = spec.wafer
        raw["chip"] = {"cores": [w.tile_rows, w.tile_cols], "noc": _link_to_raw(w.intra_die)}
        if (w.unit_rows, w.unit_cols) != (1, 1):  # only when set: other configs as before
            raw["chip"]["unit_grid"] = [w.unit_rows, w.unit_cols]
        raw["system"] = {"topology": w.topology, "chips": [w.die_rows, w.die_cols]}
        if (w.die_rows, w.die_cols) != (1, 1):  # one chip has no chip-to-chip link
            raw["system"]["link"] = _link_to_raw(w.inter_die)
            if w.inter_die_links:
                raw["system"]["link"]["count"] = w.inter_die_links
        if w.bidirectional_rings:
            raw["system"]["bidirectional_rings"] = True
        if w.collective_latency_s:
            raw["system"]["collective_latency"] = format_exact(w.collective_latency_s, "time")
        if w.reduce_scatter_step_latency_s:
            raw["system"]["reduce_scatter_step_latency"] = format_exact(
                w.reduce_scatter_step_latency_s, "time"
            )
        if w.composite_all_reduce:
            raw["system"]["composite_all_reduce"] = True
        if w.direct_all_to_all:
            raw["system"]["direct_all_to_all"] = True
        if w.reduce_scatter_efficiency != 1.0:
            raw["system"]["reduce_scatter_efficiency"] = w.reduce_scatter_efficiency
        if w.injection_efficiency != 1.0:
            raw["system"]["injection_efficiency"] = w.injection_efficiency
        if w.ring_fabric_efficiency != 1.0:
            raw["system"]["ring_fabric_efficiency"] = w.ring_fabric_efficiency
    if spec.cluster is not None:
        c = spec.cluster
        raw["system"] = {
            "topology": "switch",
            "chips": [c.num_nodes, c.devices_per_node],
            "link": _link_to_raw(c.intra_node),
            "node_link": _link_to_raw(c.inter_node),
        }
        if c.inter_node_efficiency != 1.0:
            raw["system"]["node_link"]["efficiency"] = c.inter_node_efficiency
    raw["dram"] = {
        "placement": d.placement,
        "capacity": format_exact(d.capacity_bytes, "bytes"),
        "bandwidth": format_exact(d.bandwidth_bytes_per_s, "bandwidth"),
        "latency": format_exact(d.latency_s, "time"),
    }
    if d.positions:
        raw["dram"]["positions"] = [list(p) for p in d.positions]
    if d.banks and d.banks != len(d.positions):
        raw["dram"]["banks"] = d.banks
    if d.interleaved_read_efficiency != 1.0:
        raw["dram"]["interleaved_read_efficiency"] = d.interleaved_read_efficiency
    if t.mesh_gemm is not None:  # its mesh is the unit's (chip.unit_grid)
        raw["tile"]["mesh_gemm"] = {
            "step": format_exact(t.mesh_gemm.step_s, "time"),
            "per_k": format_exact(t.mesh_gemm.per_k_s, "time"),
            "per_column": format_exact(t.mesh_gemm.per_column_s, "time"),
            "per_mac": format_exact(t.mesh_gemm.per_mac_s, "time"),
        }
    if t.fidelity_passes:
        raw["tile"]["fidelity_passes"] = dict(t.fidelity_passes)
    if t.format_efficiency:
        raw["tile"]["format_efficiency"] = dict(t.format_efficiency)
    if t.auto_format_efficiency:
        raw["tile"]["auto_format_efficiency"] = dict(t.auto_format_efficiency)
    if t.attention_efficiency:
        raw["tile"]["attention_efficiency"] = t.attention_efficiency
    if t.decode_attention_efficiency:
        raw["tile"]["decode_attention_efficiency"] = t.decode_attention_efficiency
    if t.op_latency_s:
        raw["tile"]["op_latency"] = format_exact(t.op_latency_s, "time")
    if t.host_dispatch_s:
        raw["tile"]["host_dispatch"] = format_exact(t.host_dispatch_s, "time")
    if t.host_dispatch_tuned_s:
        raw["tile"]["host_dispatch_tuned"] = format_exact(t.host_dispatch_tuned_s, "time")
    if t.dram_reader_bandwidth_bytes_per_s:
        raw["tile"]["dram_reader_bandwidth"] = format_exact(
            t.dram_reader_bandwidth_bytes_per_s, "bandwidth"
        )
    if t.multicast_bandwidth_bytes_per_s:
        raw["tile"]["multicast_bandwidth"] = format_exact(
            t.multicast_bandwidth_bytes_per_s, "bandwidth"
        )
    if t.dram_sharded_reader_bandwidth_bytes_per_s:
        raw["tile"]["dram_sharded_reader_bandwidth"] = format_exact(
            t.dram_sharded_reader_bandwidth_bytes_per_s, "bandwidth"
        )
    if t.dram_tile_reader_bandwidth_bytes_per_s:
        raw["tile"]["dram_tile_reader_bandwidth"] = format_exact(
            t.dram_tile_reader_bandwidth_bytes_per_s, "bandwidth"
        )
    if t.dram_read_issue_s:
        raw["tile"]["dram_read_issue"] = format_exact(t.dram_read_issue_s, "time")
    if t.host_read_bandwidth_bytes_per_s:
        raw["tile"]["host_read_bandwidth"] = format_exact(
            t.host_read_bandwidth_bytes_per_s, "bandwidth"
        )
    if t.matrix_tile_rows != 1:
        raw["tile"]["matrix_tile_rows"] = t.matrix_tile_rows
    if spec.energy is not None:
        raw["energy"] = _energy_to_raw(spec.energy, spec.kind)
    if spec.cost is not None:
        raw["cost"] = _cost_to_raw(spec.cost)
    if spec.host is not None:
        raw["host"] = {
            "capacity": format_exact(spec.host.capacity_bytes, "bytes"),
            "bandwidth": format_exact(spec.host.bandwidth_bytes_per_s, "bandwidth"),
            "latency": format_exact(spec.host.latency_s, "time"),
        }
    if spec.defects is not None:
        f = spec.defects
        raw["defects"] = {
            "dead_tiles": list(f.dead_tiles),
            "dead_dies": list(f.dead_dies),
            "dead_links": [list(pair) for pair in f.dead_links],
            "degraded_links": [list(item) for item in f.degraded_links],
            "dead_dram_ports": list(f.dead_dram_ports),
            "dead_tile_fraction": f.dead_tile_fraction,
            "seed": f.seed,
            "spare_rows": f.spare_rows,
            "spare_cols": f.spare_cols,
        }
        if f.clustering is not None:
            raw["defects"]["clustering"] = f.clustering
    return raw


def _energy_to_raw(e: EnergySpec, kind: str) -> dict[str, Any]:
    per_byte = {
        "sram": e.sram_j_per_byte,
        "chip_to_chip": e.chip_to_chip_j_per_byte,
        "dram": e.dram_j_per_byte,
        **({"noc_hop": e.noc_hop_j_per_byte} if kind == "wafer" else {"nic": e.nic_j_per_byte}),
    }
    raw: dict[str, Any] = {
        "flop": {dtype: format_exact(j, "energy_per_flop") for dtype, j in e.energy_j_per_flop},
        **{key: format_exact(value, "energy_per_byte") for key, value in per_byte.items()},
        "static_per_tile": format_exact(e.static_per_tile_w, "power"),
        ("static_per_chip" if kind == "wafer" else "static_per_node"): format_exact(
            e.static_per_chip_w, "power"
        ),
    }
    if e.tdp_per_tile_w is not None:
        raw["tdp_per_tile"] = format_exact(e.tdp_per_tile_w, "power")
    return raw


def _cost_to_raw(c: CostSpec) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "tile_area": format_exact(c.tile_area_m2, "area"),
        "die_area": format_exact(c.die_area_m2, "area"),
        "defect_density": format_exact(c.defect_density_per_m2, "areal_density"),
        "yield_model": c.yield_model,
        "clustering": c.clustering,
        "wafer_diameter": format_exact(c.wafer_diameter_m, "length"),
        "wafer_price": format_exact(c.wafer_price_usd, "money"),
        "lifetime": format_exact(c.lifetime_s, "time"),
        "energy_price": format_exact(c.energy_price_usd_per_j, "money_per_energy"),
    }
    if c.system_price_usd is not None:
        raw["system_price"] = format_exact(c.system_price_usd, "money")
    if c.training_tokens is not None:
        raw["training_tokens"] = c.training_tokens
    return raw


def spec_to_raw(spec: HardwareSpec | WorkloadSpec | MappingSpec | RunSpec) -> dict[str, Any]:
    """The canonical raw dict of a spec, in the file format, units written as strings.

    Loading the result again (as a file, or as a mapping section / ``run.`` overrides) gives an
    equal spec. Every field is written, defaults included. Pure: no I/O.
    """
    if isinstance(spec, HardwareSpec):
        return _hardware_to_raw(spec)
    if isinstance(spec, WorkloadSpec):
        model = {f.name: getattr(spec.model, f.name) for f in fields(ModelSpec) if f.name != "name"}
        training = {f.name: getattr(spec.training, f.name) for f in fields(TrainingSpec)}
        out = {"name": spec.model.name, "model": model, "training": training, "mode": spec.mode}
        if spec.inference is not None:
            inf = spec.inference
            inference: dict[str, Any] = {
                f.name: getattr(inf, f.name) for f in fields(InferenceSpec)
            }
            inference["math_fidelity"] = dict(inf.math_fidelity)
            inference["prefill_reduce_dtypes"] = dict(inf.prefill_reduce_dtypes)
            out["inference"] = inference
        return out
    if isinstance(spec, MappingSpec):
        return {f.name: getattr(spec, f.name) for f in fields(MappingSpec)}
    if isinstance(spec, RunSpec):
        until = None if spec.until_s is None else format_exact(spec.until_s, "time")
        return {
            "seed": spec.seed,
            "until": until,
            "symmetric_replicas": spec.symmetric_replicas,
            "max_events": spec.max_events,
            "max_memory": format_exact(spec.max_memory_bytes, "bytes"),
            "memory_check": spec.memory_check,
        }
    raise TypeError(f"spec_to_raw: not a spec: {type(spec).__name__}")


# =========================================================================== serving (issue 16)

_TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")

#: Most requests a serving run may generate: each is a few hundred bytes of records and state,
#: so this bounds a run's memory to a few GB (no input may exhaust memory).
MAX_SERVING_REQUESTS = 10_000_000


def _bounded_int_rule(minimum: int, maximum: int) -> Rule:
    expected = f"an int in [{minimum}, {maximum}]"

    def parse(value: Any, where: str, key: str) -> int:
        if not _is_int(value) or not minimum <= value <= maximum:
            raise _InvalidValueError(expected)
        return int(value)

    return Rule(parse, expected)


def _serving_schema() -> Schema:
    return {
        "name": _str_rule(required=False),
        "description": _str_rule(required=False),
        "sources": _str_list_rule(required=False),
        "traffic": {
            "arrival": _choice_rule(SERVING_ARRIVALS),
            "rate_per_s": _float_rule(0.0, float("inf"), low_open=True, high_open=True),
            "cv": _float_rule(0.0, float("inf"), low_open=True, high_open=True),
            "num_requests": _bounded_int_rule(1, MAX_SERVING_REQUESTS),
            "concurrency": _bounded_int_rule(1, MAX_SERVING_REQUESTS),
            "lengths": _choice_rule(SERVING_LENGTHS),
            "prompt_tokens": _int_rule(),
            "output_tokens": _int_rule(),
            "shared_prefix_tokens": _int_rule(minimum=0),
            "trace": _str_rule(required=False),
        },
        "scheduler": {
            "max_num_seqs": _int_rule(),
            "max_num_batched_tokens": _int_rule(),
            "block_size": _int_rule(),
            "enable_chunked_prefill": _bool_rule(),
            "gpu_memory_utilization": _float_rule(0.0, 1.0, low_open=True, high_open=False),
            "num_kv_blocks": _int_rule(minimum=0),
            "enable_prefix_caching": _bool_rule(),
            "preemption_mode": _choice_rule(SERVING_PREEMPTION_MODES),
            "swap_space": _quantity_rule("bytes", positive=False),
        },
        "slo": {
            "ttft": _quantity_rule("time", positive=True),
            "tpot": _quantity_rule("time", positive=True),
            "quantile": _float_rule(0.0, 1.0, low_open=True, high_open=False),
        },
        "replicas": _int_rule(),
        "router": _choice_rule(SERVING_ROUTERS),
        "prefill_replicas": _int_rule(minimum=0),
        "tp": _int_rule(),
        "pp": _int_rule(),
        "placement": _str_rule(),
        "tp_2d": _tp_2d_rule(),
        **_number_format_rules(),
    }


def _serving_defaults() -> dict[str, Any]:
    """Raw defaults of a serving file, from the spec dataclasses (times in the file's form)."""
    scheduler = _defaults(SchedulerSpec)
    scheduler["swap_space"] = f"{scheduler.pop('swap_space_bytes'):.0f} B"
    slo: dict[str, Any] = {"ttft": f"{SloSpec().ttft_s} s", "tpot": f"{SloSpec().tpot_s} s"}
    slo["quantile"] = SloSpec().quantile
    traffic = _defaults(TrafficSpec)
    for key in ("trace", "trace_path"):
        traffic.pop(key)
    return {"traffic": traffic, "scheduler": scheduler, "slo": slo, **_defaults(ServingSpec)}


def read_trace_csv(path: Path, where: str, key: str) -> tuple[tuple[float, int, int], ...]:
    """Rows ``(arrival_s, prompt_tokens, output_tokens)`` of a trace CSV with that header.

    Arrival times are seconds from the start, non-decreasing; token counts are ints >= 1.

    Raises:
        ConfigError: unreadable file, wrong header, or a bad row (naming its line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single(where, key, str(path), f"a readable trace CSV ({exc})") from None
    lines = [line.strip() for line in text.splitlines()]
    header = tuple(c.strip() for c in lines[0].split(",")) if lines else ()
    if header != _TRACE_COLUMNS:
        raise ConfigError.single(
            str(path), "line 1", ",".join(header), f"the header {','.join(_TRACE_COLUMNS)}"
        )
    rows: list[tuple[float, int, int]] = []
    problems: list[ConfigProblem] = []
    previous = 0.0
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        cells = [c.strip() for c in line.split(",")]
        try:
            if len(cells) != 3:
                raise ValueError
            arrival, prompt, output = float(cells[0]), int(cells[1]), int(cells[2])
            if not (previous <= arrival <= MAX_SIMULATED_S and prompt >= 1 and output >= 1):
                raise ValueError
        except ValueError:
            problems.append(
                ConfigProblem(
                    str(path),
                    f"line {number}",
                    line,
                    f"arrival_s (>= the previous row's, at most {MAX_SIMULATED_S:.0e} s, the "
                    "time palmsim simulates), prompt_tokens and output_tokens (ints >= 1)",
                )
            )
            continue
        previous = arrival
        rows.append((arrival, prompt, output))
    if problems:
        raise ConfigError(problems)
    if not rows:
        raise ConfigError.single(str(path), "line 2", MISSING, "at least one request row")
    return tuple(rows)


#: The traffic keys each arrival process or length distribution reads (TrafficSpec): a key
#: given where the traffic ignores it would change nothing, silently.
_TRAFFIC_KEY_USE: dict[str, tuple[str, Callable[[Mapping[str, Any]], bool]]] = {
    "rate_per_s": ("arrival poisson or gamma", lambda t: t["arrival"] in ("poisson", "gamma")),
    "cv": ("arrival gamma", lambda t: t["arrival"] == "gamma"),
    "concurrency": ("arrival closed", lambda t: t["arrival"] == "closed"),
    "num_requests": ("a generated arrival, not a trace", lambda t: t["arrival"] != "trace"),
    "lengths": ("a generated arrival, not a trace", lambda t: t["arrival"] != "trace"),
    "shared_prefix_tokens": ("a generated arrival, not a trace", lambda t: t["arrival"] != "trace"),
    "prompt_tokens": (
        "lengths fixed (a trace or a length distribution gives each prompt its own)",
        lambda t: t["lengths"] == "fixed" and t["arrival"] != "trace",
    ),
    "output_tokens": (
        "lengths fixed (a trace or a length distribution gives each request its own)",
        lambda t: t["lengths"] == "fixed" and t["arrival"] != "trace",
    ),
}


def _ignored_traffic_keys(
    given: Mapping[str, Any], traffic: Mapping[str, Any], overrides: Sequence[str], where: str
) -> list[ConfigProblem]:
    """A problem for each traffic key given where its arrival and lengths ignore it: ``--set
    serving.traffic.prompt_tokens=100000`` beside the file's ``lengths: sharegpt`` served
    ShareGPT prompts and said nothing. A key the file gives for its own arrival and lengths
    is not one when an override switches them (``--set serving.traffic.arrival=closed`` on a
    file with a rate): the file is read as written for its mode."""
    overridden = {
        ov.path[1]
        for ov in split_overrides(overrides)["serving"]
        if len(ov.path) == 2 and ov.path[0] == "traffic"
    }
    switched = bool(overridden & {"arrival", "lengths"})
    problems = []
    for key, (needs, used) in _TRAFFIC_KEY_USE.items():
        if key in given and not used(traffic) and (key in overridden or not switched):
            problems.append(
                ConfigProblem(
                    where,
                    f"traffic.{key}",
                    given[key],
                    f"no {key} here: only {needs} reads it (arrival is {traffic['arrival']!r}, "
                    f"lengths {traffic['lengths']!r})",
                )
            )
    return problems


def load_serving(path: str | Path, overrides: Sequence[str] = ()) -> ServingSpec:
    """Phases 1-7 for a serving file (``palmsim serve --serving FILE``).

    ``serving.`` overrides apply to it; ``traffic.trace`` names a CSV relative to the file.

    Raises:
        ConfigError: every problem of the file (and its overrides) at once.
    """
    path = Path(path)
    where = str(path)
    file_raw = read_config_file(path)
    file_traffic = file_raw.get("traffic") if isinstance(file_raw, dict) else None
    file_arrival = file_traffic.get("arrival") if isinstance(file_traffic, dict) else None
    raw = apply_overrides(file_raw, overrides, "serving", where)
    defaults = _serving_defaults()
    given = dict(raw.get("traffic") or {}) if isinstance(raw.get("traffic"), dict) else {}
    for section in ("traffic", "scheduler", "slo"):
        if raw.get(section) is None:
            raw[section] = {}
        _fill(raw[section], defaults[section])
    _fill(raw, {k: v for k, v in defaults.items() if k not in ("traffic", "scheduler", "slo")})
    schema = _serving_schema()
    problems = check_keys(raw, schema, where)
    values, parse_problems = parse_values(raw, schema, where)
    problems += parse_problems
    traffic = values.get("traffic", {})
    if not problems:
        problems += _ignored_traffic_keys(given, traffic, overrides, where)
    if not problems and traffic["arrival"] == "trace" and "trace" not in traffic:
        # blame the override that made the arrival a trace, where the file's is not one
        chose = [
            ov.text
            for ov in split_overrides(overrides)["serving"]
            if ov.path == ("traffic", "arrival")
        ]
        blamed = chose[-1] if chose and file_arrival != "trace" else ""
        problems.append(
            ConfigProblem(
                override_where(blamed) if blamed else where,
                "traffic.trace",
                MISSING,
                "a trace CSV path (arrival 'trace'; e.g. --set serving.traffic.trace=FILE, "
                "relative to the serving file)",
                blamed,
            )
        )
    prefill = values.get("prefill_replicas", 0)
    if prefill and not prefill < values.get("replicas", 1):
        problems.append(
            ConfigProblem(
                where,
                "prefill_replicas",
                prefill,
                f"0 (no disaggregation) or fewer than replicas ({values.get('replicas')}), "
                f"leaving at least one decode replica",
            )
        )
    if not problems and traffic["arrival"] in ("poisson", "gamma"):
        # its requests arrive over num_requests / rate seconds on average: within the time
        # palmsim simulates (MAX_SIMULATED_S), or the run would end past it
        least = traffic["num_requests"] / MAX_SIMULATED_S
        if traffic["rate_per_s"] < least:
            problems.append(
                ConfigProblem(
                    where,
                    "traffic.rate_per_s",
                    traffic["rate_per_s"],
                    f"at least {least:.3g} requests/s: its {traffic['num_requests']} requests "
                    f"arrive over num_requests / rate_per_s s, within the {MAX_SIMULATED_S:.0e} "
                    "s (31.7 years) palmsim simulates",
                )
            )
    if problems:
        raise ConfigError(blame_overrides(problems, overrides, "serving", where))
    rows: tuple[tuple[float, int, int], ...] = ()
    trace_path = ""
    if traffic["arrival"] == "trace":
        trace = path.parent / traffic["trace"]
        trace_path = str(trace)
        rows = read_trace_csv(trace, where, "traffic.trace")
    slo = values["slo"]
    return ServingSpec(
        traffic=TrafficSpec(
            arrival=traffic["arrival"],
            rate_per_s=traffic["rate_per_s"],
            cv=traffic["cv"],
            num_requests=traffic["num_requests"],
            concurrency=traffic["concurrency"],
            lengths=traffic["lengths"],
            prompt_tokens=traffic["prompt_tokens"],
            output_tokens=traffic["output_tokens"],
            shared_prefix_tokens=traffic["shared_prefix_tokens"],
            trace=rows,
            trace_path=trace_path,
        ),
        scheduler=SchedulerSpec(
            **{k: v for k, v in values["scheduler"].items() if k != "swap_space"},
            swap_space_bytes=values["scheduler"]["swap_space"],
        ),
        slo=SloSpec(ttft_s=slo["ttft"], tpot_s=slo["tpot"], quantile=slo["quantile"]),
        **{k: values[k] for k in ("replicas", "router", "prefill_replicas", "tp", "pp")},
        placement=values["placement"],
        tp_2d=values["tp_2d"],
        **{
            k: values[k]
            for k in (
                "dtype",
                "weight_dtype",
                "kv_dtype",
                "mlp_weight_dtype",
                "mlp_down_weight_dtype",
                "math_fidelity",
                "ops_per_layer",
                "decode_readers_per_bank",
                "decode_attention_cores",
                "decode_attention_cores_per_head",
                "decode_attention_fidelity",
                "prefill_weight_readers",
                "prefill_compute_cores",
                "trace",
            )
        },
    )
