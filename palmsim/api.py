"""The library entry points: load an experiment, map it, simulate it, summarise and export it.

>>> from palmsim.api import load_experiment, simulate          # doctest: +SKIP
>>> exp = load_experiment("hw_configs/tx8-wafer.yaml", "workloads/t-18b.yaml")  # doctest: +SKIP
>>> result = simulate(exp)                                      # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palmsim import __version__
from palmsim.config.loader import (
    load_hardware,
    load_mapping,
    load_run,
    load_workload,
    read_mapping_file,
    spec_to_raw,
)
from palmsim.config.specs import ExperimentSpec
from palmsim.engine.records import RunTrace
from palmsim.engine.simulator import Simulator
from palmsim.errors import ConfigError, ConfigProblem, RunDirError
from palmsim.hardware.chip import Chip
from palmsim.mapping.inference import map_inference
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.partition import PARTITIONERS
from palmsim.mapping.placement import PLACERS
from palmsim.mapping.plan import MappingPlan
from palmsim.mapping.schedule import SCHEDULES
from palmsim.report.export import read_run
from palmsim.report.metrics import op_table_rows, summarize

__all__ = [
    "DEFAULT_HARDWARE",
    "DEFAULT_WORKLOAD",
    "SimulationResult",
    "load_experiment",
    "load_result",
    "op_table_of",
    "resolved_config",
    "run_experiment",
    "simulate",
    "summarize_result",
]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
#: The shipped default run: PALM's TX8 wafer training T-18B (its workload file holds the mapping).
DEFAULT_HARDWARE = "hw_configs/tx8-wafer.yaml"
DEFAULT_WORKLOAD = "workloads/t-18b.yaml"


def _shipped(relative: str) -> str:
    """A shipped config: relative to the working directory if present, else to the checkout."""
    here = Path(relative)
    if here.exists():
        return relative
    return str(_REPO / relative)


def load_experiment(
    hardware: str | None = None,
    workload: str | None = None,
    mapping: str | None = None,
    *,
    overrides: Sequence[str] = (),
    mapping_flags: Mapping[str, Any] | None = None,
) -> ExperimentSpec:
    """Load and validate the three inputs into one :class:`ExperimentSpec`.

    Args:
        hardware: hardware YAML (default: the TX8 wafer).
        workload: workload YAML or Hugging Face config.json (default: T-18B).
        mapping: optional mapping YAML; it overrides the workload's ``mapping:`` section.
        overrides: ``--set key=value`` strings (highest precedence).
        mapping_flags: mapping keys from command-line flags (``--pp`` ...), above the files.

    Raises:
        ConfigError: anything wrong in the inputs, with file, key path, value and expectation.
    """
    hw_path = hardware or _shipped(DEFAULT_HARDWARE)
    wl_path = workload or _shipped(DEFAULT_WORKLOAD)
    hw_spec = load_hardware(hw_path, overrides)
    wl_spec, mapping_section = load_workload(wl_path, overrides)
    sections: list[tuple[str, dict[str, Any]]] = [(wl_path, mapping_section)]
    if mapping:
        sections.append((mapping, read_mapping_file(mapping)))
    if mapping_flags:
        sections.append(("command-line flags", dict(mapping_flags)))
    mapping_spec = load_mapping(sections, overrides, mode=wl_spec.mode)
    problems = []
    for key, names in (
        ("schedule", SCHEDULES.names()),
        ("placement", PLACERS.names()),
        ("partition", PARTITIONERS.names()),
    ):
        value = getattr(mapping_spec, key)
        if value not in names:
            close = difflib.get_close_matches(value, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                ConfigProblem(
                    _source_of(key, sections, overrides),
                    f"mapping.{key}",
                    value,
                    f"one of {', '.join(names)}{hint}",
                )
            )
    if problems:
        raise ConfigError(problems)
    sources = [("hardware", hw_path), ("workload", wl_path)]
    if mapping:
        sources.append(("mapping", mapping))
    return ExperimentSpec(hw_spec, wl_spec, mapping_spec, load_run(overrides), tuple(sources))


def _source_of(
    key: str, sections: Sequence[tuple[str, Mapping[str, Any]]], overrides: Sequence[str]
) -> str:
    """Where the mapping value of ``key`` came from: --set, else the last section holding it."""
    if any(o.split("=", 1)[0].strip() == f"mapping.{key}" for o in overrides):
        return "--set"
    for source, section in reversed(sections):
        if key in section:
            return source
    return "default"


@dataclass(frozen=True)
class SimulationResult:
    """What one simulated iteration produced."""

    experiment: ExperimentSpec
    chip: Chip
    plan: MappingPlan
    trace: RunTrace


def simulate(experiment: ExperimentSpec) -> SimulationResult:
    """Elaborate the chip, map the workload and simulate one training iteration.

    Raises:
        MappingError: the mapping is infeasible.
        SimulationError: simulated work did not finish.
    """
    chip = Chip.from_spec(experiment.hardware)
    if experiment.workload.mode == "inference":
        plan = map_inference(experiment, chip)
    else:
        plan = map_workload(experiment, chip)
    log.info(
        "simulating %d tiles, %d stages, %d micro-batches",
        len(plan.used_tiles),
        plan.num_stages,
        plan.num_microbatches,
    )
    trace = Simulator(chip, plan, experiment.run).run()
    return SimulationResult(experiment, chip, plan, trace)


def summarize_result(result: SimulationResult) -> dict[str, Any]:
    """The summary dictionary (``summary.json``) of a simulation result."""
    exp = result.experiment
    return summarize(
        result.trace,
        result.chip,
        result.plan,
        workload_name=exp.workload.model.name,
        hardware_name=exp.hardware.name,
        version=__version__,
    )


def run_experiment(
    experiment: ExperimentSpec,
    out_dir: str | Path,
    *,
    make_plots: bool = True,
    op_table: bool = False,
) -> dict[str, Any]:
    """Simulate ``experiment``, write its run folder and return its summary.

    What ``palmsim run`` does after loading; sweep points run exactly this. ``op_table`` also
    writes ``op_table.csv``.
    """
    from palmsim.report.export import write_op_table, write_run

    result = simulate(experiment)
    summary = summarize_result(result)
    write_run(
        out_dir,
        summary=summary,
        resolved_config=resolved_config(experiment),
        trace=result.trace,
        chip=result.chip,
        plan=result.plan,
        make_plots=make_plots,
    )
    if op_table:
        write_op_table(out_dir, op_table_of(result))
    return summary


def op_table_of(result: SimulationResult) -> list[dict[str, Any]]:
    """The per-op compute-versus-memory table of a run (``op_table.csv``)."""
    hw = result.experiment.hardware
    workload = result.experiment.workload
    dtype = workload.inference.dtype if workload.inference is not None else workload.training.dtype
    return op_table_rows(
        result.trace,
        result.plan,
        achievable_flop_per_s=hw.tile.peak_for(dtype) * hw.tile.compute_efficiency,
        sram_bandwidth_bytes_per_s=hw.tile.sram_bandwidth_bytes_per_s,
        dram_bandwidth_bytes_per_s=hw.dram.bandwidth_bytes_per_s,
    )


def resolved_config(experiment: ExperimentSpec) -> dict[str, Any]:
    """The experiment after defaults and overrides, in the files' format (re-loadable)."""
    return {
        "palmsim_version": __version__,
        "hardware": spec_to_raw(experiment.hardware),
        "workload": spec_to_raw(experiment.workload),
        "mapping": spec_to_raw(experiment.mapping),
        "run": spec_to_raw(experiment.run),
    }


@dataclass(frozen=True)
class LoadedRun(SimulationResult):
    """A finished run read back from its folder: the result plus its summary and config."""

    summary: dict[str, Any]
    config: dict[str, Any]


def load_result(run_dir: str | Path) -> LoadedRun:
    """Rebuild a finished run from its folder without simulating.

    The trace comes from ``records.csv``; chip and plan are rebuilt from
    ``resolved_config.yaml`` by the normal loader, :meth:`Chip.from_spec` and
    :func:`map_workload` (cheap: no simulation).

    Raises:
        RunDirError: the folder is missing or was not written by ``palmsim run``.
    """
    summary, config, trace = read_run(run_dir)
    where = str(Path(run_dir) / "resolved_config.yaml")
    try:
        hw_spec = load_hardware(f"{where}:hardware", data=config["hardware"])
        wl_spec, _ = load_workload(f"{where}:workload", data=config["workload"])
        mapping_spec = load_mapping([(f"{where}:mapping", config["mapping"])])
        run_raw = config.get("run") or {}
        run_spec = load_run([f"run.{k}={v}" for k, v in run_raw.items() if v is not None])
    except (KeyError, TypeError, ConfigError) as error:
        raise RunDirError(f"{where}: cannot rebuild the run's config ({error})") from None
    experiment = ExperimentSpec(hw_spec, wl_spec, mapping_spec, run_spec, (("run", where),))
    chip = Chip.from_spec(hw_spec)
    plan = map_workload(experiment, chip)
    return LoadedRun(experiment, chip, plan, trace, summary, config)
