"""What ``palmsim describe`` prints: every key of the resolved experiment, as ``--set`` takes it.

One vocabulary: the keys are the files' keys (:func:`~palmsim.config.loader.spec_to_raw`) behind
the ``--set`` prefixes (``hw.``, ``workload.``, ``model.``, ``training.``, ``inference.``,
``mapping.``, ``run.``), and the values are the files' values in human units, so a printed line
``KEY: VALUE`` works unchanged as ``--set KEY=VALUE``. The meaning of each key is the ``help``
metadata of the spec field it builds. Pure: builds lines, prints nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import yaml

from palmsim.config.loader import spec_to_raw
from palmsim.config.specs import (
    MODES,
    ClusterSpec,
    CostSpec,
    DefectSpec,
    DramSpec,
    EnergySpec,
    ExperimentSpec,
    GemmSpec,
    HardwareSpec,
    HostSpec,
    InferenceSpec,
    LinkSpec,
    MappingSpec,
    MemoryKernelSpec,
    MemoryOpsSpec,
    ModelSpec,
    RunSpec,
    TileSpec,
    TrainingSpec,
    WaferSpec,
    WorkloadSpec,
    modes_of,
)

__all__ = ["DescribedKey", "described_keys", "format_described"]


@dataclass(frozen=True, slots=True)
class DescribedKey:
    """One leaf key of the resolved experiment."""

    key: str  # as --set takes it, e.g. "hw.noc.inter_die_bandwidth"
    value: str  # as a file and --set take it, e.g. "256 GB/s"
    help: str  # what it means


#: Raw section name -> the spec type(s) whose fields it holds (the file groups some keys
#: differently from the specs: ``noc`` fills WaferSpec, ``network`` ClusterSpec).
_SECTION_TYPES: dict[str, tuple[type, ...]] = {
    "hw": (HardwareSpec,),
    "hw.tile": (TileSpec,),
    "hw.tile.gemm": (GemmSpec,),
    "hw.tile.memory_ops": (MemoryOpsSpec,),
    "hw.dram": (DramSpec,),
    "hw.wafer": (WaferSpec,),
    "hw.noc": (WaferSpec,),
    "hw.cluster": (ClusterSpec,),
    "hw.network": (ClusterSpec,),
    "hw.energy": (EnergySpec,),
    "hw.cost": (CostSpec,),
    "hw.defects": (DefectSpec,),
    "hw.host": (HostSpec,),
    "workload": (WorkloadSpec, ModelSpec),
    "model": (ModelSpec,),
    "training": (TrainingSpec,),
    "inference": (InferenceSpec,),
    "mapping": (MappingSpec,),
    "run": (RunSpec,),
}

#: File keys whose spec field has another name (the field carries the SI unit suffix or is
#: split in two); every other key is its field's name without the unit suffix.
_ALIASES: dict[str, tuple[str, ...]] = {
    "peak": ("peak_flop_per_s",),
    "gpus_per_node": ("devices_per_node",),
    "static_per_chip": ("static_per_chip_w",),
    "static_per_node": ("static_per_chip_w",),
}
_UNIT_SUFFIXES = (
    "_bytes_per_s",
    "_flop_per_s",
    "_bytes",
    "_hz",
    "_s",
    "_j_per_byte",
    "_w",
    "_m2",
    "_per_m2",
    "_m",
    "_usd",
    "_usd_per_j",
)
_LINK_KEY = re.compile(r"^(?P<link>[a-z_]+?)_(?P<part>bandwidth|latency)$")
#: A help text's trailing SI unit, redundant beside a value written with its unit.
_SI_UNIT = re.compile(r"\s*\[(B|B/s|s|FLOP/s|Hz|J/B|J/FLOP|W|m2|1/m2|m|USD|USD/J)\]$")


def _field_help(spec_type: type, name: str) -> str | None:
    for f in fields(spec_type):
        if f.name == name:
            text = _SI_UNIT.sub("", str(f.metadata.get("help", "")))
            modes = f.metadata.get("modes", ())
            if len(modes) == 1:  # an option of one mode only
                text += f" [{modes[0]} only]"
            return text
    return None


#: Keys that hold two fields as ``[rows, columns]``.
_GRID_HELP = {
    "hw.wafer.die_grid": "dies of the wafer, [rows, columns]",
    "hw.wafer.tile_grid": "tiles of one die, [rows, columns]",
    "hw.tile.gemm.tile": "output tile of the GEMM kernels, [rows, columns] in elements",
}


def _help(section: str, key: str) -> str:
    """The meaning of file key ``key`` inside raw section ``section``."""
    if f"{section}.{key}" in _GRID_HELP:
        return _GRID_HELP[f"{section}.{key}"]
    if section.startswith("hw.tile.memory_ops.") and section.count(".") == 3:
        types: tuple[type, ...] = (MemoryKernelSpec,)
        kind = section.rsplit(".", 1)[1]
    else:
        types, kind = _SECTION_TYPES.get(section, ()), ""
    for spec_type in types:
        names = _ALIASES.get(key, (key, *(key + s for s in _UNIT_SUFFIXES)))
        found = next((h for h in (_field_help(spec_type, n) for n in names) if h), None)
        if found:
            return f"{kind} kernels: {found}" if kind else found
        link = _LINK_KEY.match(key)
        if link and any(f.name == link["link"] for f in fields(spec_type)):
            part = "bandwidth_bytes_per_s" if link["part"] == "bandwidth" else "latency_s"
            return f"{_field_help(spec_type, link['link'])}: {_field_help(LinkSpec, part)}"
    return ""


def _text(value: Any) -> str:
    """A raw value as YAML reads it back (``--set`` parses its value with ``yaml.safe_load``)."""
    if isinstance(value, str):
        return value
    return (
        str(yaml.safe_dump(value, default_flow_style=True, width=10**6))
        .strip()
        .removesuffix("\n...")
    )


def _leaves(section: str, raw: Mapping[str, Any]) -> Iterator[DescribedKey]:
    for key, value in raw.items():
        if isinstance(value, dict):
            sub = f"{section}.{key}"
            if section == "hw.tile" and key == "peak":  # dtype -> rate: one key per dtype
                for dtype, rate in value.items():
                    yield DescribedKey(f"{sub}.{dtype}", _text(rate), f"peak FLOP/s at {dtype}")
                continue
            if section == "hw.tile" and key == "format_efficiency":  # dtype -> ratio
                for dtype, ratio in value.items():
                    yield DescribedKey(
                        f"{sub}.{dtype}",
                        _text(ratio),
                        f"achievable fraction of peak of a {dtype} GEMM",
                    )
                continue
            if section == "hw.energy" and key == "flop":  # dtype -> energy: one key per dtype
                for dtype, energy in value.items():
                    yield DescribedKey(
                        f"{sub}.{dtype}", _text(energy), f"energy of one {dtype} FLOP"
                    )
                continue
            yield from _leaves(sub, value)
        else:
            yield DescribedKey(f"{section}.{key}", _text(value), _help(section, key))


def _modes_of_mapping_key(key: str) -> tuple[str, ...]:
    """The run modes file key ``mapping.<key>`` applies to (every mode if it is no field)."""
    try:
        return modes_of(MappingSpec, key)
    except KeyError:
        return MODES


def described_keys(experiment: ExperimentSpec) -> list[DescribedKey]:
    """Every leaf key of ``experiment`` with its value and meaning, in file order.

    Optional sections that are off (``hw.tile.gemm`` of a wafer, ``run.until``) appear with
    the value ``null``, which ``--set`` also takes.
    """
    keys: list[DescribedKey] = list(_leaves("hw", spec_to_raw(experiment.hardware)))
    workload = spec_to_raw(experiment.workload)
    for name, value in workload.items():
        if name in ("model", "training", "inference") and isinstance(value, dict):
            keys.extend(_leaves(name, value))
        else:
            help_text = "model name" if name == "name" else _help("workload", name)
            keys.append(DescribedKey(f"workload.{name}", _text(value), help_text))
    # A mapping option of the other mode only has no meaning here (and --set refuses it).
    mapping = {
        key: value
        for key, value in spec_to_raw(experiment.mapping).items()
        if experiment.workload.mode in _modes_of_mapping_key(key)
    }
    keys.extend(_leaves("mapping", mapping))
    keys.extend(_leaves("run", spec_to_raw(experiment.run)))
    return keys


#: Longest ``KEY: VALUE`` that sets the comments' column [characters].
_ALIGN_MAX_CHARS = 72


def format_described(keys: list[DescribedKey]) -> str:
    """``KEY: VALUE  # meaning`` lines, values aligned, a blank line between sections."""
    # a long value (a per-layer list such as model.layer_types) overflows its own line rather
    # than pushing every comment to its width
    lengths = [len(k.key) + len(k.value) for k in keys]
    width = max((n for n in lengths if n <= _ALIGN_MAX_CHARS), default=0) + 2
    lines: list[str] = []
    previous = ""
    for k in keys:
        group = k.key.split(".", 1)[0]
        group = "workload" if group in ("model", "training", "inference") else group
        if lines and group != previous:
            lines.append("")
        previous = group
        text = f"{k.key}: {k.value}"
        lines.append(f"{text:<{width}}  # {k.help}" if k.help else text)
    return "\n".join(lines)
