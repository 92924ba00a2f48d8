"""The library entry points: load an experiment, map it, simulate it, summarise and export it.

>>> from palmsim.api import load_experiment, simulate          # doctest: +SKIP
>>> exp = load_experiment("hw_configs/tx8-wafer.yaml", "workloads/t-18b.yaml")  # doctest: +SKIP
>>> result = simulate(exp)                                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palmsim import __version__, guard
from palmsim.config.loader import (
    load_hardware,
    load_mapping,
    load_run,
    load_workload,
    read_mapping_file,
    spec_to_raw,
)
from palmsim.config.overrides import OVERRIDE_WHERE, override_where, split_overrides
from palmsim.config.specs import MAX_SIMULATED_S, ExperimentSpec, MappingSpec
from palmsim.engine.records import RunTrace, gc_frozen, gc_paused
from palmsim.engine.simulator import Progress, Simulator
from palmsim.errors import ConfigError, ConfigProblem, MappingError, RunDirError, SimulationError
from palmsim.hardware.chip import Chip, max_tiles
from palmsim.mapping.inference import map_inference
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.partition import PARTITIONERS
from palmsim.mapping.placement import PLACERS
from palmsim.mapping.plan import MappingPlan
from palmsim.mapping.schedule import SCHEDULES
from palmsim.mapping.suspect import mapping_warnings
from palmsim.report.defects import defect_summary
from palmsim.report.energy import (
    cost_summary,
    energy_summary,
    serving_cost_summary,
    serving_energy_summary,
)
from palmsim.report.export import RECORDS_FILE, check_records, checked_summary, read_run
from palmsim.report.metrics import op_table_rows, summarize

if TYPE_CHECKING:
    from palmsim.config.specs import HardwareSpec, RunSpec, ServingSpec, WorkloadSpec
    from palmsim.mapping.serving import ServingPlan

__all__ = [
    "DEFAULT_HARDWARE",
    "DEFAULT_SERVING",
    "DEFAULT_SERVING_HARDWARE",
    "DEFAULT_SERVING_WORKLOAD",
    "DEFAULT_WORKLOAD",
    "ServingResult",
    "SimulationResult",
    "check_serving_overrides",
    "load_experiment",
    "load_result",
    "load_serving_inputs",
    "op_table_of",
    "plan_experiment",
    "resolve_config_path",
    "resolved_config",
    "run_experiment",
    "serve",
    "shipped_names",
    "shipped_path",
    "simulate",
    "summarize_result",
]

log = logging.getLogger(__name__)
#: Where :func:`simulate` reports a legal but suspect mapping (palmsim.mapping.suspect), apart
#: from its other warnings: a caller that builds the mappings itself, as ``validate`` does for
#: each published case, quiets these alone.
suspect_mapping_log = logging.getLogger(mapping_warnings.__module__)

_REPO = Path(__file__).resolve().parent.parent
#: The shipped default run: PALM's TX8 wafer training T-18B (its workload file holds the mapping).
DEFAULT_HARDWARE = "hw_configs/tx8-wafer.yaml"
DEFAULT_WORKLOAD = "workloads/t-18b.yaml"


def shipped_path(relative: str) -> str:
    """A shipped config: relative to the working directory if present, else to the checkout."""
    here = Path(relative)
    if here.exists():
        return relative
    return str(_REPO / relative)


#: Folder of the shipped configs of each input, and the file endings a bare name may omit.
_SHIPPED_FOLDERS = {"hardware": ("hw_configs",), "workload": ("workloads", "workloads/hf")}
_CONFIG_ENDINGS = (".yaml", ".yml", ".config.json", ".json")


def shipped_names(part: str) -> list[str]:
    """The bare names of the shipped configs of ``part`` (``hardware`` or ``workload``)."""
    names = set()
    for folder in _SHIPPED_FOLDERS[part]:
        base = Path(shipped_path(folder))
        if base.is_dir():
            for path in base.iterdir():
                ending = next((e for e in _CONFIG_ENDINGS if path.name.endswith(e)), None)
                if ending and path.is_file():
                    names.add(path.name[: -len(ending)])
    return sorted(names)


def resolve_config_path(value: str, part: str) -> str:
    """The file of a ``--hw``/``--workload`` value: an existing path as given, else a bare name
    of a shipped config (``dgx-h100`` -> ``hw_configs/dgx-h100.yaml``).

    Raises:
        ConfigError: neither a file nor a shipped name; the message lists the shipped names.
    """
    if Path(value).exists():
        return value
    if "/" not in value and "\\" not in value:
        for folder in _SHIPPED_FOLDERS[part]:
            for ending in ("", *_CONFIG_ENDINGS):
                candidate = Path(shipped_path(folder)) / f"{value}{ending}"
                if candidate.is_file():
                    return str(candidate)
    names = shipped_names(part)
    stem = Path(value).name
    stem = next((stem[: -len(e)] for e in _CONFIG_ENDINGS if stem.endswith(e)), stem)
    close = difflib.get_close_matches(stem, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError.single(
        value,
        "",
        ConfigError.MISSING,
        f"an existing {part} file or a shipped {part} name: {', '.join(names)}{hint}",
    )


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
        hardware: hardware YAML, or the bare name of a shipped one (``dgx-h100``; default: the
            TX8 wafer).
        workload: workload YAML or Hugging Face config.json, or the bare name of a shipped one
            (``llama2-7b``; default: T-18B).
        mapping: optional mapping YAML; it overrides the workload's ``mapping:`` section.
        overrides: ``--set key=value`` strings (highest precedence).
        mapping_flags: mapping keys from command-line flags (``--pp`` ...), above the files.

    Raises:
        ConfigError: anything wrong in the inputs, with file, key path, value and expectation.
    """
    hw_path = (
        resolve_config_path(hardware, "hardware") if hardware else shipped_path(DEFAULT_HARDWARE)
    )
    wl_path = (
        resolve_config_path(workload, "workload") if workload else shipped_path(DEFAULT_WORKLOAD)
    )
    serving_only = [o for o in overrides if o.strip().startswith("serving.")]
    if serving_only:  # never silently ignored
        raise ConfigError(
            [
                ConfigProblem(
                    OVERRIDE_WHERE,
                    o.split("=", 1)[0].strip(),
                    o,
                    "a key of hw, workload, mapping or run here (serving.* is for palmsim serve)",
                )
                for o in serving_only
            ]
        )
    hw_spec = load_hardware(hw_path, overrides)
    wl_spec, mapping_section = load_workload(wl_path, overrides)
    sections: list[tuple[str, dict[str, Any]]] = [(wl_path, mapping_section)]
    if mapping:
        sections.append((mapping, read_mapping_file(mapping)))
    if mapping_flags:
        sections.append(("command-line flags", dict(mapping_flags)))
    mapping_spec = load_mapping(sections, overrides, mode=wl_spec.mode)
    stated = any("micro_batch_size" in section for _, section in sections) or any(
        o.split("=", 1)[0].strip() == "mapping.micro_batch_size" for o in overrides
    )
    if wl_spec.inference is not None and wl_spec.mode == "inference" and not stated:
        mapping_spec = dataclasses.replace(
            mapping_spec,
            micro_batch_size=inference_micro_batch(
                wl_spec.inference.batch, mapping_spec.dp, mapping_spec.pp
            ),
        )
    if (
        not any(section for _, section in sections[1:])
        and not mapping_section
        and not any(o.split("=", 1)[0].strip().startswith("mapping.") for o in overrides)
    ):
        log.warning(
            "%s has no mapping: section and no --pp/--tp/--dp/--mapping was given: pp=tp=dp=1, "
            "one tile (the defaults)",
            wl_path,
        )
    _check_names(mapping_spec, sections, overrides)
    sources = [("hardware", hw_path), ("workload", wl_path)]
    if mapping:
        sources.append(("mapping", mapping))
    return ExperimentSpec(hw_spec, wl_spec, mapping_spec, load_run(overrides), tuple(sources))


def inference_micro_batch(batch: int, dp: int, pp: int) -> int:
    """The requests an inference run decodes together when its mapping states no
    ``micro_batch_size``: a replica's ``batch / dp`` split into ``gcd(share, pp)``
    micro-batches, one per pipeline stage where ``pp`` divides the share (so every stage has
    one in flight, as a serving engine's pipeline keeps them), as many as split it evenly
    otherwise; the whole share on one stage. A share that ``dp`` does not split is left to the
    mapping's check (1). Constant time, whatever the batch."""
    if batch % dp:
        return 1
    share = batch // dp
    return share // math.gcd(share, pp)


def _check_names(
    mapping_spec: MappingSpec,
    sections: Sequence[tuple[str, Mapping[str, Any]]],
    overrides: Sequence[str],
) -> None:
    """Raise :class:`ConfigError` for a schedule, placement or partition no registry knows,
    naming where the value came from, with "did you mean"."""
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
            if key == "schedule" and any(w in value.lower() for w in ("interl", "virtual", "vpp")):
                # Megatron's interleaved 1F1B is no schedule of its own here
                hint += "; interleaved 1F1B is 1f1b with --virtual-stages V"
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


def _source_of(
    key: str, sections: Sequence[tuple[str, Mapping[str, Any]]], overrides: Sequence[str]
) -> str:
    """Where the mapping value of ``key`` came from: --set, else the last section holding it."""
    mine = [o for o in overrides if o.split("=", 1)[0].strip() == f"mapping.{key}"]
    if mine:
        return f"--set {mine[-1]}"
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


def plan_experiment(experiment: ExperimentSpec) -> tuple[Chip, MappingPlan]:
    """The chip and plan :func:`simulate` runs, without simulating (cheap): the run's
    budgets checked (:mod:`palmsim.guard`) before the chip is elaborated and on the plan.

    Raises:
        ConfigError: the chip has more tiles than the budgets allow.
        MappingError: the mapping is infeasible, or too large for the budgets.
    """
    run = experiment.run
    guard.check_experiment(experiment)
    chip = Chip.from_spec(
        experiment.hardware, max_tiles=max_tiles(run.max_memory_bytes, run.max_events)
    )
    if experiment.workload.mode == "inference":
        plan = map_inference(experiment, chip)
    else:
        plan = map_workload(experiment, chip)
    guard.check_plan(plan, chip, run)
    return chip, plan


def simulate(experiment: ExperimentSpec, *, progress: Progress | None = None) -> SimulationResult:
    """Elaborate the chip, map the workload and simulate one training iteration; ``progress``
    hears the passes simulated (:class:`~palmsim.engine.simulator.Simulator`).

    :mod:`palmsim.guard` checks the run's budgets (``run.max_events``, ``run.max_memory``)
    before the chip is elaborated and again before simulating.

    Raises:
        ConfigError: the chip has more tiles than the budgets allow.
        MappingError: the mapping is infeasible, or too large for the budgets.
        SimulationError: simulated work did not finish.
    """
    chip, plan = plan_experiment(experiment)
    log.info(
        "simulating %d tiles, %d stages, %d micro-batches",
        len(plan.used_tiles),
        plan.num_stages,
        plan.num_microbatches,
    )
    found = mapping_warnings(
        experiment, len(plan.used_tiles), chip.num_tiles, plan.num_microbatches
    )
    for warning in found:
        suspect_mapping_log.warning(warning)
    trace = Simulator(chip, plan, experiment.run, progress=progress).run()
    _check_time_resolution(trace.end_time_s)
    return SimulationResult(experiment, chip, plan, trace)


def _check_time_resolution(end_time_s: float) -> None:
    """SimulationError if a run ends past :data:`MAX_SIMULATED_S`."""
    if end_time_s > MAX_SIMULATED_S:
        raise SimulationError(
            f"the simulated time reached {end_time_s:.3g} s, past {MAX_SIMULATED_S:.0e} s (31.7 "
            f"years), where a double resolves only {math.ulp(end_time_s):.3g} s and shorter "
            "steps are lost in the rounding; is a rate, bandwidth or efficiency near zero "
            "(e.g. hw.defects.degraded_links, tile.gemm.max_efficiency)?"
        )


def summarize_result(result: SimulationResult) -> dict[str, Any]:
    """The summary dictionary (``summary.json``) of a simulation result."""
    exp = result.experiment
    summary = summarize(
        result.trace,
        result.chip,
        result.plan,
        workload_name=exp.workload.model.name,
        hardware_name=exp.hardware.name,
        version=__version__,
    )
    hw = exp.hardware
    if hw.energy is not None:
        summary["energy"] = energy_summary(
            result.trace, result.chip, result.plan, hw, _compute_dtype(exp)
        )
    if hw.cost is not None:
        summary["cost"] = cost_summary(
            summary.get("energy"), hw, result.plan, float(result.trace.end_time_s)
        )
    if hw.defects is not None:
        summary["defects"] = defect_summary(result.trace, result.chip)
    return summary


def _compute_dtype(experiment: ExperimentSpec) -> str:
    """The number format the run computes in: the inference dtype, else the training one."""
    workload = experiment.workload
    if workload.mode == "inference" and workload.inference is not None:
        return workload.inference.dtype
    return workload.training.dtype


def run_experiment(
    experiment: ExperimentSpec,
    out_dir: str | Path,
    *,
    make_plots: bool = True,
    op_table: bool = False,
    csv_records: bool = False,
    trace_kind: str | None = None,
    progress: Progress | None = None,
    simulating: Progress | None = None,
) -> dict[str, Any]:
    """Simulate ``experiment``, write its run folder and return its summary.

    What ``palmsim run`` does after loading; sweep points run exactly this. ``op_table`` also
    writes ``op_table.csv``, ``csv_records`` ``records.csv`` and ``trace_kind`` (``"full"``
    or ``"compact"``) ``trace.json.gz``; ``progress`` is
    :func:`~palmsim.report.export.write_run`'s, ``simulating`` the simulation's
    (:func:`simulate`).
    """
    from palmsim.report.export import write_op_table, write_run

    with contextlib.ExitStack() as frozen:
        # The records are made with the collector paused (Simulator.run); frozen before it
        # resumes, it never scans them while they are summarised and written.
        with gc_paused():
            result = simulate(experiment, progress=simulating)
            frozen.enter_context(gc_frozen())
        summary = summarize_result(result)
        hw = experiment.hardware
        if hw.defects is not None:
            # The slowdown against the same mapping on the defect-free chip: a second run.
            clean = dataclasses.replace(experiment, hardware=dataclasses.replace(hw, defects=None))
            clean_s = float(simulate(clean).trace.end_time_s)
            summary["defects"]["defect_free_iteration_time_s"] = clean_s
            summary["defects"]["slowdown"] = float(result.trace.end_time_s) / clean_s
        write_run(
            out_dir,
            summary=summary,
            resolved_config=resolved_config(experiment),
            trace=result.trace,
            chip=result.chip,
            plan=result.plan,
            make_plots=make_plots,
            csv_records=csv_records,
            trace_kind=trace_kind,
            progress=progress,
        )
        if op_table:
            write_op_table(out_dir, op_table_of(result))
    return summary


def op_table_of(result: SimulationResult) -> list[dict[str, Any]]:
    """The per-op compute-versus-memory table of a run (``op_table.csv``)."""
    hw = result.experiment.hardware
    dtype = _compute_dtype(result.experiment)
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

    The trace comes from ``records.npz`` (or an older folder's ``records.csv``); chip and plan
    are rebuilt from ``resolved_config.yaml`` by the normal loader, :meth:`Chip.from_spec` and
    :func:`map_workload` (:func:`map_inference` for an inference run; cheap: no simulation).

    Raises:
        RunDirError: the folder is missing or was not written by ``palmsim run``.
    """
    with contextlib.ExitStack() as frozen:
        # as in run_experiment: the records read with the collector paused are frozen before
        # it resumes, so it does not scan them while chip, plan and summary are rebuilt
        with gc_paused():
            summary, config, trace = read_run(run_dir)
            frozen.enter_context(gc_frozen())
        return _rebuild_run(run_dir, summary, config, trace)


def _rebuild_run(
    run_dir: str | Path, summary: dict[str, Any], config: dict[str, Any], trace: RunTrace
) -> LoadedRun:
    """:func:`load_result` once the folder is read: chip, plan and the checked summary."""
    where = str(Path(run_dir) / "resolved_config.yaml")
    try:
        hw_spec = load_hardware(f"{where}:hardware", data=config["hardware"])
        wl_spec, _ = load_workload(f"{where}:workload", data=config["workload"])
        mapping_sections = [(f"{where}:mapping", config["mapping"])]
        mapping_spec = load_mapping(mapping_sections)
        _check_names(mapping_spec, mapping_sections, ())
        run_raw = config.get("run") or {}
        run_spec = load_run([f"run.{k}={v}" for k, v in run_raw.items() if v is not None])
    except (KeyError, TypeError, ConfigError) as error:
        raise RunDirError(f"{where}: cannot rebuild the run's config ({error})") from None
    experiment = ExperimentSpec(hw_spec, wl_spec, mapping_spec, run_spec, (("hardware", where),))
    try:  # under the run's own budgets: a folder's config is an input like any other
        guard.check_experiment(experiment)
        chip = Chip.from_spec(
            hw_spec, max_tiles=max_tiles(run_spec.max_memory_bytes, run_spec.max_events)
        )
        # the plan the run was simulated with: an inference run's is not a training plan
        if wl_spec.mode == "inference":
            plan = map_inference(experiment, chip)
        else:
            plan = map_workload(experiment, chip)
    except (ConfigError, MappingError) as error:
        raise RunDirError(f"{where}: cannot rebuild the run ({error})") from None
    check_records(
        trace,
        num_tiles=chip.num_tiles,
        num_channels=len(chip.channels),
        num_stages=plan.num_stages,
        where=str(
            Path(run_dir)
            / (RECORDS_FILE if (Path(run_dir) / RECORDS_FILE).exists() else "records.csv")
        ),
    )
    derived = summarize_result(SimulationResult(experiment, chip, plan, trace))
    summary = checked_summary(summary, derived, Path(run_dir) / "summary.json")
    return LoadedRun(experiment, chip, plan, trace, summary, config)


# =========================================================================== serving (issue 16)

#: The shipped serving default: Llama-3-8B on one H100 (replica tp=1 on GPU 0 of dgx-h100).
DEFAULT_SERVING_HARDWARE = "hw_configs/dgx-h100.yaml"
DEFAULT_SERVING_WORKLOAD = "workloads/llama3-8b.yaml"
DEFAULT_SERVING = "serving/llama3-8b-h100.yaml"


@dataclass(frozen=True)
class ServingResult:
    """A finished serving run: its inputs, plan, records and summary."""

    hardware: Any  # HardwareSpec
    workload: Any  # WorkloadSpec
    serving: Any  # ServingSpec
    run: Any  # RunSpec
    plan: Any  # ServingPlan
    trace: Any  # ServingTrace
    summary: dict[str, Any]
    resolved: dict[str, Any]


def check_serving_overrides(overrides: Sequence[str]) -> None:
    """Serving splits the model by the serving file's ``tp`` and ``pp`` only, and reads only
    the workload's ``model``: a ``mapping.`` override, or a workload override outside
    ``model`` (``training.``, ``inference.``, ``mode``), would be ignored, so each is an
    error naming the key (nothing silently ignored).

    Raises:
        ConfigError: the first such key.
    """
    for text in overrides:
        key, _, value = text.partition("=")
        if key.strip().startswith("mapping."):
            raise ConfigError.single(
                OVERRIDE_WHERE,
                key.strip(),
                value.strip(),
                "no mapping. key in palmsim serve: its mapping is the serving file's tp, pp "
                "and replicas (e.g. --set serving.tp=2); expert and context parallelism are "
                "not modelled in serving",
            )
    for ov in split_overrides(overrides)["workload"]:
        if ov.path[0] != "model":
            raise ConfigError.single(
                override_where(ov.text),
                ".".join(ov.path),
                ov.value,
                "a model. key in palmsim serve: it reads the workload's model only (the "
                "serving file sets the batch, lengths and number formats, e.g. --set "
                "serving.weight_dtype=fp8)",
                ov.text,
            )


def _check_serving_mapping(wl_path: str, mapping_section: Mapping[str, Any]) -> None:
    """Expert or context parallelism in the workload's mapping would be ignored by serving:
    an error naming the key.

    Raises:
        ConfigError: the first such key.
    """
    for key in ("ep", "cp"):
        degree = mapping_section.get(key)
        if degree is not None and degree != 1:
            raise ConfigError.single(
                wl_path,
                f"mapping.{key}",
                degree,
                "1 (or absent) in palmsim serve: expert and context parallelism are not "
                "modelled in serving",
            )


def load_serving_inputs(
    hardware: str | None = None,
    workload: str | None = None,
    serving: str | None = None,
    *,
    overrides: Sequence[str] = (),
) -> tuple[HardwareSpec, WorkloadSpec, ServingSpec, RunSpec, str]:
    """Load a serving experiment, ``palmsim serve``'s files (None: the shipped defaults) and
    ``--set`` items: ``(hardware, workload, serving spec, run, serving file)``.

    Raises:
        ConfigError.
    """
    from palmsim.config.loader import load_serving

    hw_path = (
        resolve_config_path(hardware, "hardware")
        if hardware
        else shipped_path(DEFAULT_SERVING_HARDWARE)
    )
    wl_path = (
        resolve_config_path(workload, "workload")
        if workload
        else shipped_path(DEFAULT_SERVING_WORKLOAD)
    )
    sv_path = serving or shipped_path(DEFAULT_SERVING)
    check_serving_overrides(overrides)
    hw = load_hardware(hw_path, overrides)
    wl, mapping_section = load_workload(wl_path, overrides, model_only=True)
    _check_serving_mapping(wl_path, mapping_section)
    spec = load_serving(sv_path, overrides)
    return hw, wl, spec, load_run(overrides), sv_path


def plan_serving(
    hardware: str | None = None,
    workload: str | None = None,
    serving: str | None = None,
    *,
    overrides: Sequence[str] = (),
) -> tuple[HardwareSpec, WorkloadSpec, ServingSpec, RunSpec, Chip, ServingPlan, str]:
    """Load and map a serving experiment (:func:`load_serving_inputs`): ``(hardware,
    workload, serving spec, run, chip, plan, serving file)``.

    Raises:
        ConfigError, MappingError.
    """
    from palmsim.mapping.serving import map_serving

    hw, wl, spec, run, sv_path = load_serving_inputs(
        hardware, workload, serving, overrides=overrides
    )
    chip = Chip.from_spec(hw)
    plan = map_serving(spec, hw, wl.model, chip)
    return hw, wl, spec, run, chip, plan, sv_path


def _serving_energy_and_cost(
    hw: HardwareSpec, spec: ServingSpec, plan: ServingPlan, trace: Any
) -> dict[str, Any]:
    """The ``energy`` and ``cost`` sections of a serving summary, for hardware with an
    ``energy:`` or ``cost:`` section: the run's work, its replicas' tiles and its finished
    requests' output tokens."""
    used = len({t for replica in plan.replica_tiles for stage in replica for t in stage})
    done = [r for r in trace.requests if r.status == "finished"]
    tokens = sum(r.output_tokens for r in done)
    out: dict[str, Any] = {}
    if hw.energy is not None:
        out["energy"] = serving_energy_summary(
            trace.work, trace.end_time_s, hw, used, spec.dtype, tokens, len(done)
        )
    if hw.cost is not None:
        out["cost"] = serving_cost_summary(
            out.get("energy"), hw, used, trace.end_time_s, tokens, len(done)
        )
    return out


def serve(
    hardware: str | None = None,
    workload: str | None = None,
    serving: str | None = None,
    *,
    overrides: Sequence[str] = (),
    progress: Progress | None = None,
) -> ServingResult:
    """Load, map and simulate a serving experiment; summarise it (no files written).

    Requests come from a ``numpy`` generator seeded with ``run.seed``; ``progress`` hears
    the requests done (:class:`~palmsim.engine.serving.ServingSimulator`).

    Raises:
        ConfigError, MappingError, SimulationError.
    """
    import dataclasses

    import numpy as np

    from palmsim.engine.serving import ServingSimulator
    from palmsim.guard import SERVING_EVENTS_PER_ITERATION, ServingBudget
    from palmsim.report.serving import summarize_serving
    from palmsim.serving.traffic import generate_requests

    hw, wl, spec, run, chip, plan, sv_path = plan_serving(
        hardware, workload, serving, overrides=overrides
    )
    traffic = spec.traffic
    # a pipelined iteration is simulated whole: each layer's attention and MLP steps at least
    per_iteration = (
        SERVING_EVENTS_PER_ITERATION
        if plan.is_segmented
        else 2.0 * wl.model.num_hidden_layers + spec.pp
    )
    budget = ServingBudget.of(
        len(traffic.trace) if traffic.arrival == "trace" else traffic.num_requests,
        run,
        per_iteration,
    )
    requests = generate_requests(
        spec.traffic, np.random.default_rng(run.seed), wl.model.max_position_embeddings
    )
    trace = ServingSimulator(
        chip,
        plan,
        requests,
        run,
        budget=lambda done, arrived: budget.check(done, arrived, run),
        progress=progress,
    ).run()
    _check_time_resolution(trace.end_time_s)
    rejected = sum(r.status == "rejected" for r in trace.requests)
    if rejected:
        sched = spec.scheduler
        log.warning(
            "%d of %d requests rejected: each needs more KV blocks than a replica's cache holds "
            "(serving.scheduler.num_kv_blocks: %d blocks of %d tokens)%s",
            rejected,
            len(trace.requests),
            plan.num_kv_blocks,
            sched.block_size,
            ""
            if sched.enable_chunked_prefill
            else " or, without chunked prefill, more tokens than "
            f"serving.scheduler.max_num_batched_tokens ({sched.max_num_batched_tokens})",
        )
    summary = summarize_serving(trace, spec.slo)
    summary |= _serving_energy_and_cost(hw, spec, plan, trace)
    serving_raw = dataclasses.asdict(spec)
    serving_raw["traffic"].pop("trace")
    summary |= {
        "workload": wl.model.name,
        "hardware": hw.name,
        "serving": Path(sv_path).stem,
        "version": __version__,
    }
    resolved = {
        "hardware": spec_to_raw(hw),
        "workload": spec_to_raw(wl),
        "serving": serving_raw,
        "run": spec_to_raw(run),
    }
    return ServingResult(hw, wl, spec, run, plan, trace, summary, resolved)
