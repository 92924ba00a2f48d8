"""``palmsim validate``: predictions against published measurements of real training runs.

A measurements file (format: ``shared/calibration/measurements.yaml``, schema ``palmsim-
calibration v1``) lists *cases*. A case that describes a training run (``model``, ``system``
with ``tp``/``pp``/``dp``, ``training``, ``measured``) becomes an experiment: the shipped
hardware config of its GPU (or the case's own ``system.hw_config``), a workload built from the
case's model fields over a base workload of its architecture, and the case's mapping. palmsim
simulates it and compares every measured figure it can predict:

- ``tflops_per_gpu``: FLOP/s per GPU as Megatron-LM SC21 counts them (Eq. 3, recompute
  included: :func:`hardware_flop_per_iteration` with ``as_published``), over the iteration;
- ``model_tflops_per_gpu``: model FLOP (no recompute) per second per GPU;
- ``tokens_per_s_per_gpu``: tokens of the global batch per second per GPU;
- ``forward_ms`` / ``backward_ms``: one transformer layer's forward and backward (recompute
  included) on one GPU, from the first to the last interval of layer 0, TP waits included.

Cases palmsim cannot express (features not modelled, a precision the hardware config has no
peak for, single-operator or collective measurements that calibrate configs rather than check
them) are listed with the reason. Nothing here is fitted: it only runs and compares.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palmsim.api import load_experiment, simulate
from palmsim.config.loader import read_config_file
from palmsim.engine.records import RunTrace
from palmsim.errors import ConfigError, PalmsimError
from palmsim.workload.builders import hardware_flop_per_iteration, model_flop_per_iteration

__all__ = [
    "DEFAULT_MEASUREMENTS",
    "Comparison",
    "Skipped",
    "ValidationReport",
    "case_setup",
    "format_report",
    "shipped",
    "validate",
]

_REPO = Path(__file__).resolve().parent.parent
#: The shipped copy of ``shared/calibration/measurements.yaml``.
DEFAULT_MEASUREMENTS = "validation/measurements.yaml"

#: Shipped hardware config of each GPU a case may name (``system.gpu`` starts with the key).
#: A case can name its own config instead with ``system.hw_config``.
HARDWARE_OF_GPU: dict[str, str] = {
    "A100-SXM4-80GB": "hw_configs/dgx-a100-superpod.yaml",
    "H100-SXM5-80GB": "hw_configs/dgx-h100.yaml",
}
#: Base workload of each architecture family; the case's model fields override its shapes.
_BASE_WORKLOAD = {"gpt": "workloads/t-18b.yaml", "llama": "workloads/llama2-7b.yaml"}

_CASE_KEYS = ("model", "system", "measured")


@dataclass(frozen=True)
class Comparison:
    """One measured figure of a case against palmsim's prediction."""

    case: str
    metric: str
    measured: float
    predicted: float

    @property
    def relative_error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class Skipped:
    """A case palmsim did not run, and why."""

    case: str
    reason: str


@dataclass(frozen=True)
class ValidationReport:
    """Every comparison and every skipped case of one measurements file."""

    source: str
    comparisons: tuple[Comparison, ...]
    skipped: tuple[Skipped, ...]

    @property
    def mean_absolute_percentage_error(self) -> float:
        """Mean of |relative error| over all comparisons, in percent (NaN if there are none)."""
        if not self.comparisons:
            return math.nan
        return 100.0 * sum(abs(c.relative_error) for c in self.comparisons) / len(self.comparisons)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "source": self.source,
            "mean_absolute_percentage_error": self.mean_absolute_percentage_error,
            "comparisons": [
                {
                    "case": c.case,
                    "metric": c.metric,
                    "measured": c.measured,
                    "predicted": c.predicted,
                    "relative_error": c.relative_error,
                }
                for c in self.comparisons
            ],
            "skipped": [{"case": s.case, "reason": s.reason} for s in self.skipped],
        }


class _CaseError(Exception):
    """The case needs something palmsim does not model; the message says what."""


def shipped(relative: str) -> str:
    """A shipped file: relative to the working directory if there, else to the checkout."""
    here = Path(relative)
    return relative if here.exists() else str(_REPO / relative)


def _architecture(model: Mapping[str, Any]) -> str:
    """The model family: from ``arch`` or ``name``; GPT when the case gives neither.

    Cases without either are Megatron-LM measurements (e.g. Korthikanti et al.'s 22B layer),
    whose models are GPTs: learned positions, GeLU MLP, LayerNorm.
    """
    if not model.get("arch") and not model.get("name"):
        return "gpt"
    text = f"{model.get('arch', '')} {model.get('name', '')}".lower()
    for family in _BASE_WORKLOAD:
        if family in text:
            return family
    raise _CaseError(
        f"unknown architecture {model.get('arch') or model.get('name')!r} "
        f"(palmsim builds {', '.join(_BASE_WORKLOAD)} models)"
    )


def _dtype(training: Mapping[str, Any]) -> str:
    precision = str(training.get("precision", "")).lower()
    if "fp8" in precision:
        raise _CaseError("fp8 training is not modelled (training.dtype: fp32, fp16 or bf16)")
    for dtype in ("bf16", "fp16", "fp32"):
        if dtype in precision:
            return dtype
    raise _CaseError(f"precision {training.get('precision')!r} is not one palmsim knows")


def _sequence_parallel(training: Mapping[str, Any]) -> bool:
    variant = str(training.get("variant", "")).lower()
    return "sequence_parallel" in variant or training.get("sequence_parallel") is True


def _recompute(training: Mapping[str, Any]) -> str:
    variant = str(training.get("variant", "")).lower()
    text = f"{training.get('activation_recompute', '')} {variant}".lower()
    if "full" in text:
        return "full"
    if "selective" in text:
        return "selective"
    return "none"


def _dp_overlap(training: Mapping[str, Any]) -> bool:
    """Whether the DP gradient all-reduce overlaps the backward pass.

    Megatron-LM's ``--DDP-impl local`` all-reduces the gradients in ``train_step`` after
    ``forward_backward_func`` returns (``model.allreduce_gradients()``, megatron/training.py),
    i.e. after the whole backward pass; ``torch`` DDP reduces buckets from autograd hooks
    while the backward runs. Cases that do not say are taken to overlap.
    """
    return str(training.get("ddp_impl", "torch")).lower() != "local"


def _grad_accumulation(training: Mapping[str, Any]) -> str:
    """How the measured run accumulated its weight gradients (``mapping.grad_accumulation``).

    ``training.grad_accumulation`` (a mode) or ``training.gradient_accumulation_fusion``
    (true: ``fused``) says so in a file of one's own. Otherwise by the DDP implementation:
    Megatron-LM's ``--DDP-impl local`` (SC21) adds each parameter's fresh gradient into its
    ``main_grad`` buffer in a backward hook after every micro-batch
    (``megatron/model/distributed.py``), and PyTorch DDP leaves it to autograd's
    AccumulateGrad, which keeps the first micro-batch's gradient and adds the later ones.
    """
    if "grad_accumulation" in training:
        return str(training["grad_accumulation"])
    if training.get("gradient_accumulation_fusion"):
        return "fused"
    if str(training.get("ddp_impl", "torch")).lower() == "local":
        return "every_microbatch"
    return "after_first_microbatch"


def _tp_overlap(case: Mapping[str, Any]) -> bool:
    """Whether the measured run overlapped the backward TP all-reduce with the
    weight-gradient GEMM (Megatron-LM's asynchronous TP all-reduce): ``training.tp_overlap``
    (the calibration set's Korthikanti et al. per-layer rows say so); absent, not: Megatron-LM
    SC21 had no such overlap. The free-text ``notes`` are never read."""
    training = case.get("training") or {}
    return bool(training.get("tp_overlap", False))


def _p2p_scatter_gather(training: Mapping[str, Any]) -> bool:
    """Whether the run's pipeline sends scatter-gathered over the TP group:
    ``training.scatter_gather_opt`` (Megatron-LM's ``--no-scatter-gather-tensors-in-pipeline``
    turns it off), on when a case does not say, as in Megatron-LM."""
    return bool(training.get("scatter_gather_opt", True))


def _p2p_overlap(training: Mapping[str, Any]) -> bool:
    """Whether a stage computed on while its pipeline sends were in flight:
    ``training.overlap_p2p_comm`` (Megatron-LM's ``--overlap-p2p-communication``). Cases that
    do not say are taken not to: the calibration runs are Megatron-LM's, whose default
    ``_communicate`` (megatron/p2p_communication.py) waits for every isend and irecv
    (``req.wait()``) and synchronizes the device before the stage computes again.
    """
    return bool(training.get("overlap_p2p_comm", False))


def case_setup(case: Mapping[str, Any]) -> tuple[str, str, list[str], dict[str, Any]]:
    """The experiment of a training-run case: (hardware file, workload file, overrides, flags).

    Raises:
        _CaseError: the case is not a training run palmsim can express (message says why).
    """
    missing = [k for k in _CASE_KEYS if not isinstance(case.get(k), Mapping)]
    if missing or not {"tp", "pp", "dp"} <= set(case["system"]):
        raise _CaseError(
            "not a training run (no model, system with tp/pp/dp, and measured): a "
            "single-operator, collective or memory measurement"
        )
    model, system = case["model"], case["system"]
    training = case.get("training") or {}
    if int(system.get("cp", 1) or 1) > 1:
        raise _CaseError("context parallelism is not modelled")
    if int(model.get("num_experts", 0) or 0) > 0 or int(system.get("ep", 1) or 1) > 1:
        # The case's model would otherwise be built dense from its arch family.
        raise _CaseError("mixture-of-experts: validate does not build a case's MoE model yet")
    hardware = system.get("hw_config")
    if hardware is None:
        gpu = str(system.get("gpu", ""))
        matches = [path for name, path in HARDWARE_OF_GPU.items() if gpu.startswith(name)]
        if not matches:
            raise _CaseError(
                f"no shipped hardware config for GPU {gpu!r}; give one as system.hw_config"
            )
        hardware = shipped(matches[0])
    workload = shipped(_BASE_WORKLOAD[_architecture(model)])
    pp, tp, dp = (int(system[k]) for k in ("pp", "tp", "dp"))
    mbs = int(model.get("micro_batch", 1))
    heads = int(model["heads"])
    shapes = {
        "hidden_size": model["hidden"],
        "num_attention_heads": heads,
        "num_key_value_heads": model.get("kv_heads", heads),
        "intermediate_size": model["ffn"],
        "num_hidden_layers": model["layers"],
        "vocab_size": model.get("vocab"),
        "max_position_embeddings": model.get("seq_len"),
    }
    overrides = [f"model.{k}={v}" for k, v in shapes.items() if v is not None]
    overrides += [
        f"training.seq_len={model['seq_len']}",
        f"training.global_batch_size={model.get('global_batch', mbs * dp)}",
        f"training.dtype={_dtype(training)}",
    ]
    num_gpus = int(system.get("num_gpus", pp * tp * dp))
    if "nodes" in system:
        overrides.append(f"hw.cluster.num_nodes={int(system['nodes'])}")
    elif num_gpus > 8:
        raise _CaseError("system.nodes is missing for a multi-node run")
    flags = {
        "pp": pp,
        "tp": tp,
        "dp": dp,
        "micro_batch_size": mbs,
        "recompute": _recompute(training),
        "schedule": "1f1b",
        "sequence_parallel": _sequence_parallel(training),
        "virtual_stages": int(system.get("virtual_pipeline_stages", 1) or 1),
        "dp_overlap": _dp_overlap(training),
        "tp_overlap": _tp_overlap(case),
        "grad_accumulation": _grad_accumulation(training),
        "p2p_scatter_gather": _p2p_scatter_gather(training),
        "p2p_overlap": _p2p_overlap(training),
    }
    return str(hardware), workload, overrides, flags


def _layer_times_s(trace: RunTrace, tile: int) -> dict[str, float]:
    """Forward and backward time of layer 0 on ``tile`` for micro-batch 0.

    The summed durations of the layer's intervals: forward, its TP waits; backward, the
    backward and recompute intervals and their TP waits (Korthikanti Table 4 counts the
    recompute in the backward). Summed, not spanned: under full recompute the stage's other
    work (e.g. the LM head's backward) runs between the layer's recompute and its backward.
    """
    times: dict[str, float] = {}
    for rec in trace.intervals:
        if rec.tile != tile or rec.microbatch != 0:
            continue
        if rec.layer != 0:
            continue
        category = rec.phase if rec.category == "comm" else rec.category
        phase = "forward" if category == "forward" else "backward"
        times[phase] = times.get(phase, 0.0) + (rec.end_s - rec.start_s)
    return times


def _predictions(result: Any) -> dict[str, float]:
    """Every figure palmsim predicts for a simulated case, in the measurements' units."""
    exp, plan, trace = result.experiment, result.plan, result.trace
    model, training = exp.workload.model, exp.workload.training
    iteration_s = trace.end_time_s
    gpus = len(plan.used_tiles)
    per_gpu_s = iteration_s * gpus
    published = hardware_flop_per_iteration(
        model, training, exp.mapping.recompute, as_published=True
    )
    out = {
        "tflops_per_gpu": published / per_gpu_s / 1e12,
        "model_tflops_per_gpu": model_flop_per_iteration(model, training) / per_gpu_s / 1e12,
        "tokens_per_s_per_gpu": plan.tokens_per_iteration / per_gpu_s,
        "iteration_time_s": iteration_s,
    }
    first_tile = plan.stage_tiles[0][0][0]
    for phase, seconds in _layer_times_s(trace, first_tile).items():
        out[f"{phase}_ms"] = seconds * 1e3
    return out


def _run_case(case_id: str, case: Mapping[str, Any]) -> list[Comparison]:
    hardware, workload, overrides, flags = case_setup(case)
    experiment = load_experiment(hardware, workload, overrides=overrides, mapping_flags=flags)
    predicted = _predictions(simulate(experiment))
    measured = case["measured"]
    comparisons = [
        Comparison(case_id, metric, float(measured[metric]), predicted[metric])
        for metric in predicted
        if isinstance(measured.get(metric), (int, float)) and measured[metric]
    ]
    if not comparisons:
        raise _CaseError(f"none of its measured figures ({', '.join(measured)}) is predicted")
    return comparisons


def validate(
    path: str | None = None,
    *,
    only: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Run every expressible case of a measurements file and compare.

    Args:
        path: the measurements file (default: the shipped copy, :data:`DEFAULT_MEASUREMENTS`).
        only: case ids to run (default: all).
        progress: called with each case id before it runs.

    Raises:
        ConfigError: the file is missing, not YAML, or has no ``cases:`` list; or ``only``
            names a case it does not have.
    """
    source = path or shipped(DEFAULT_MEASUREMENTS)
    raw = read_config_file(source)
    cases = raw.get("cases")
    if not isinstance(cases, list):
        raise ConfigError.single(source, "cases", cases, "a list of measurement cases")
    ids = [str(c.get("id", f"#{i}")) for i, c in enumerate(cases)]
    unknown = [name for name in only if name not in ids]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ids, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError.single(source, "cases[].id", unknown[0], f"a case id of the file{hint}")
    comparisons: list[Comparison] = []
    skipped: list[Skipped] = []
    for case_id, case in zip(ids, cases, strict=True):
        if only and case_id not in only:
            continue
        if progress is not None:
            progress(case_id)
        try:
            comparisons += _run_case(case_id, case)
        except _CaseError as why:
            skipped.append(Skipped(case_id, str(why)))
        except PalmsimError as error:  # e.g. a MappingError: the case does not fit
            skipped.append(Skipped(case_id, f"{type(error).__name__}: {error}"))
    return ValidationReport(str(source), tuple(comparisons), tuple(skipped))


def format_report(report: ValidationReport) -> str:
    """The table ``palmsim validate`` prints."""
    width = max([len(c.case) for c in report.comparisons] + [4])
    lines = [
        f"{'case':<{width}}  {'metric':<22} {'measured':>10} {'predicted':>10} {'error':>8}",
    ]
    for c in report.comparisons:
        lines.append(
            f"{c.case:<{width}}  {c.metric:<22} {c.measured:>10.4g} {c.predicted:>10.4g} "
            f"{100 * c.relative_error:>+7.1f}%"
        )
    lines.append(
        f"mean absolute percentage error: {report.mean_absolute_percentage_error:.1f}% "
        f"over {len(report.comparisons)} figures"
    )
    if report.skipped:
        lines.append("")
        lines.append(f"not run ({len(report.skipped)}):")
        lines += [f"  {s.case}: {s.reason}" for s in report.skipped]
    return "\n".join(lines)
