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

from palmsim.config.loader import read_in_mode, spec_to_raw
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
    MeshGemmSpec,
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

    key: str  # as --set takes it, e.g. "hw.system.link.bandwidth"
    value: str  # as a file and --set take it, e.g. "256 GB/s"
    help: str  # what it means


#: Raw section name -> the spec type(s) whose fields it holds (``chip:`` and ``system:``, which
#: fill WaferSpec or ClusterSpec, are described key by key in _KEY_HELP).
_SECTION_TYPES: dict[str, tuple[type, ...]] = {
    "hw": (HardwareSpec,),
    "hw.tile": (TileSpec,),
    "hw.tile.gemm": (GemmSpec,),
    "hw.tile.memory_ops": (MemoryOpsSpec,),
    "hw.tile.mesh_gemm": (MeshGemmSpec,),
    "hw.dram": (DramSpec,),
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


def _spec_help(spec_type: type, name: str) -> str:
    """A spec field's help text as written (units kept, no mode note)."""
    return str(next(f for f in fields(spec_type) if f.name == name).metadata["help"])


_LINK_BANDWIDTH = _spec_help(LinkSpec, "bandwidth_bytes_per_s")
_LINK_LATENCY = _spec_help(LinkSpec, "latency_s")

#: Keys whose meaning is not one spec field's: pairs ``[rows, columns]`` and the chip-grid
#: description (``chip:``, ``system:``), which fills WaferSpec or ClusterSpec.
_KEY_HELP = {
    "hw.tile.gemm.tile": "output tile of the GEMM kernels, [rows, columns] in elements",
    "hw.chip.cores": "cores of one chip, [rows, columns], each a tile ([1, 1]: a GPU)",
    "hw.chip.granularity": "cores simulated as one tile: k (k x k) or [rows, columns]",
    "hw.chip.unit_grid": "cores in one simulated tile, [rows, columns] (granularity applied)",
    "hw.chip.noc.bandwidth": "link between neighbouring cores: " + _LINK_BANDWIDTH,
    "hw.chip.noc.latency": "link between neighbouring cores: " + _LINK_LATENCY,
    "hw.system.topology": (
        "mesh or torus: the cores of all chips form one 2-D grid (a torus wraps at its "
        "edges); switch: one-tile chips (GPUs) behind switches"
    ),
    "hw.system.chips": "chips of the system, [rows, columns]; switch: [nodes, GPUs per node]",
    "hw.system.link.bandwidth": (
        "link between neighbouring chips (switch: one GPU's link to its node's switch): "
        + _LINK_BANDWIDTH
    ),
    "hw.system.link.latency": (
        "link between neighbouring chips (switch: one GPU's link to its node's switch): "
        + _LINK_LATENCY
    ),
    "hw.system.link.count": _spec_help(WaferSpec, "inter_die_links"),
    "hw.system.node_link.bandwidth": "one GPU's link to the fabric between nodes: "
    + _LINK_BANDWIDTH,
    "hw.system.node_link.latency": "one GPU's link to the fabric between nodes: " + _LINK_LATENCY,
    "hw.system.node_link.efficiency": _spec_help(ClusterSpec, "inter_node_efficiency"),
    "hw.system.bidirectional_rings": _spec_help(WaferSpec, "bidirectional_rings"),
    "hw.system.collective_latency": _spec_help(WaferSpec, "collective_latency_s"),
    "hw.system.composite_all_reduce": _spec_help(WaferSpec, "composite_all_reduce"),
    "hw.system.direct_all_to_all": _spec_help(WaferSpec, "direct_all_to_all"),
    "hw.system.reduce_scatter_efficiency": _spec_help(WaferSpec, "reduce_scatter_efficiency"),
    "hw.system.reduce_scatter_step_latency": _spec_help(WaferSpec, "reduce_scatter_step_latency_s"),
    "hw.system.injection_efficiency": _spec_help(WaferSpec, "injection_efficiency"),
    "hw.system.ring_fabric_efficiency": _spec_help(WaferSpec, "ring_fabric_efficiency"),
}


def _help(section: str, key: str) -> str:
    """The meaning of file key ``key`` inside raw section ``section``."""
    if f"{section}.{key}" in _KEY_HELP:
        return _KEY_HELP[f"{section}.{key}"]
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
    return ""


def _text(value: Any) -> str:
    """A raw value as YAML reads it back (``--set`` parses its value as YAML)."""
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
            if section == "hw.tile" and key in ("format_efficiency", "auto_format_efficiency"):
                run = " run with an auto-selected program config" if key.startswith("auto") else ""
                for dtype, ratio in value.items():  # dtype -> ratio
                    yield DescribedKey(
                        f"{sub}.{dtype}",
                        _text(ratio),
                        f"achievable fraction of peak of a {dtype} GEMM{run}",
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
    mode = experiment.workload.mode
    for name, value in workload.items():
        if name in ("model", "training", "inference") and isinstance(value, dict):
            # a key of the other mode only has no meaning here (and --set refuses it)
            read = {k: v for k, v in value.items() if read_in_mode(mode, (name, k))}
            keys.extend(_leaves(name, read))
        else:
            help_text = "model name" if name == "name" else _help("workload", name)
            keys.append(DescribedKey(f"workload.{name}", _text(value), help_text))
    mapping = {  # likewise
        key: value
        for key, value in spec_to_raw(experiment.mapping).items()
        if mode in _modes_of_mapping_key(key)
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
