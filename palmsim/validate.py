"""``palmsim validate``: predictions against published measurements of real training runs.

A measurements file (format: ``validation/measurements.yaml``, schema ``palmsim-
calibration v1``) lists *cases*. Each case is read by the first registered case reader
(:data:`CASE_READERS`) that recognises it; the built-in ``training_run`` reader takes a case
that describes a training run (``model``, ``system`` with ``tp``/``pp``/``dp`` or
``num_gpus``, ``training``, ``measured``) and makes it an experiment: the shipped hardware
config of its GPU family (or the case's own ``system.hw_config``), a workload built from the
case's model fields over a base workload of its architecture, and the case's mapping. palmsim
simulates it and compares every measured figure it can predict:

- ``tflops_per_gpu``: FLOP/s per GPU as Megatron-LM SC21 counts them (Eq. 3, recompute
  included: :func:`hardware_flop_per_iteration` with ``as_published``), over the iteration;
- ``model_tflops_per_gpu``: model FLOP (no recompute) per second per GPU;
- ``aggregate_pflops``, ``pct_of_<peak>tflops_peak``: the first over all GPUs, or as a share
  of a stated peak;
- ``mfu_pct`` / ``hfu_pct`` (``mfu`` / ``hfu`` in the measured figure's unit): model or
  executed FLOP/s per GPU over its dense peak in the run's precision;
- ``tokens_per_s_per_gpu``, ``tokens_per_s``, ``samples_per_s``, ``iteration_time_s``;
- ``forward_ms`` / ``backward_ms`` / ``combined_ms``: one transformer layer's forward and
  backward (recompute included), and their sum, on one GPU, from the first to the last
  interval of layer 0, TP waits included.

Every case is isolated: whatever goes wrong in one (a missing or null field, a feature not
modelled, an infeasible mapping, its time limit, even a bug) puts it in the "not run" list
with a one-line reason, and the other cases run on. Facts a case leaves out are derived where
they follow from others (nodes from ``num_gpus`` and the config's GPUs per node, ``ffn`` =
4·hidden for GPT, data parallelism from ``num_gpus``); a setting it leaves unstated takes the
default documented in :func:`read_training_run` and every figure of the case is marked as
resting on that assumption. Nothing here is fitted: it only runs and compares.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from palmsim import serving_cases, tile_cases
from palmsim.api import SimulationResult, load_experiment, simulate, suspect_mapping_log
from palmsim.config.loader import (
    hardware_assumptions,
    hf_to_model,
    load_hardware,
    read_config_file,
)
from palmsim.config.specs import (
    DEFAULT_RECOMPUTE_MODULES,
    RECOMPUTE_MODULES,
    ZERO_COLLECTIVES,
    HardwareSpec,
    ModelSpec,
)
from palmsim.engine.records import WAIT_CATEGORIES, RunTrace
from palmsim.errors import ConfigError, MappingError, PalmsimError
from palmsim.explore.sweep import cancel_on_interrupt, pool_size, worker_pool
from palmsim.registry import Registry
from palmsim.workload.builders import (
    hardware_flop_per_iteration,
    model_flop_per_iteration,
    unmodelled_architecture,
)
from palmsim.workload.fp8 import FP8_SCALING

__all__ = [
    "CASE_READERS",
    "DEFAULT_MEASUREMENTS",
    "Assumption",
    "CaseReader",
    "CaseRun",
    "Comparison",
    "NotRun",
    "NotRunError",
    "Skipped",
    "ValidationReport",
    "case_setup",
    "format_report",
    "read_training_run",
    "shipped",
    "validate",
]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
#: The calibration set's measurements, shipped in the repository (see validation/README.md).
DEFAULT_MEASUREMENTS = "validation/measurements.yaml"

#: Shipped hardware config of each GPU family; a case's ``system.gpu`` names its family
#: anywhere in its text ("A100-SXM4-80GB", "NVIDIA Ampere (A100-class)"). A case can name its
#: own config instead with ``system.hw_config``.
HARDWARE_OF_GPU: dict[str, str] = {
    "A100": "hw_configs/dgx-a100.yaml",
    "H100": "hw_configs/dgx-h100.yaml",
    "H200": "hw_configs/dgx-h200.yaml",
    "H800": "hw_configs/dgx-h800.yaml",
    "GB300": "hw_configs/dgx-gb300.yaml",
    "GB200": "hw_configs/dgx-gb200.yaml",  # before B200; "GB200" is not matched as a B200
    "B300": "hw_configs/dgx-b300.yaml",
    "B200": "hw_configs/dgx-b200.yaml",
}
#: Shipped config of a named cluster of a GPU family, for a case whose ``system.interconnect``
#: names it: its measured fabric (Selene's share of line rate at scale, SC21 Sec. 5.9).
HARDWARE_OF_CLUSTER: dict[str, tuple[str, str]] = {
    "Selene": ("A100", "hw_configs/dgx-a100-superpod.yaml"),
}
#: A PCIe card or an H100 NVL (two PCIe cards bridged), not the SXM module a shipped config
#: describes: lower clocks and power, no NVSwitch (a GB200 "NVL72" rack is an SXM system).
_PCIE_CARD = re.compile(r"pcie|(?<![a-z0-9])nvl(?![a-z0-9])", re.IGNORECASE)
#: The GPU a case means when ``system.gpu`` names only NVIDIA's architecture ("NVIDIA Ampere
#: GPUs", as MegaScale describes its cluster): the architecture's data-centre training GPU of
#: the families above (the H200 is also Hopper: a case that means it names it).
GPU_OF_ARCHITECTURE: dict[str, str] = {"Ampere": "A100", "Hopper": "H100", "Blackwell": "B200"}
#: Base workload of each architecture family; the case's model fields override its shapes.
_BASE_WORKLOAD = {
    "gpt": "workloads/t-18b.yaml",
    "llama": "workloads/llama2-7b.yaml",
    "gpt-oss": "workloads/gpt-oss-120b.yaml",
    "deepseek": "workloads/deepseek-v3.yaml",
    "nemotron": "workloads/nemotron4-15b.yaml",
    "nemotron-h": "workloads/nemotron-3-nano.yaml",
    "nemotron-3-super": "workloads/nemotron-3-super.yaml",
    "llama4-maverick": "workloads/llama4-maverick.yaml",
    "llama4-scout": "workloads/llama4-scout.yaml",
    "qwen3-next": "workloads/qwen3-next-80b-a3b.yaml",
}
#: Names in ``model.arch`` / ``model.name`` of the Llama family's layer (pre-RMSNorm, RoPE,
#: SwiGLU, no biases: Hugging Face's ``LlamaDecoderLayer`` and its Mistral, Mixtral and
#: Qwen2/Qwen3(-MoE) copies), checked in this order; a mixture of experts is given by the
#: case's MoE keys (:data:`_MOE_KEYS`) on top of it. gpt-oss (its alternating sliding-window
#: and full attention with sinks, biases) and DeepSeek-V2/V3 (multi-head latent attention;
#: DeepSeek's dense LLM 7B/67B are not these) take their attention from their base workload
#: (or ``model.hf_config``), whose keys a case does not restate; gpt-oss is matched before GPT.
#: Nemotron-4 (LayerNorm, RoPE, squared-ReLU MLP of two matrices, no biases) has its own base;
#: Llama-based Nemotrons ("Llama-3.1-Nemotron") are matched as Llama first.
_FAMILY_OF_NAME = (
    # Llama 4 (its own layer: MoE with a shared expert, every layer or every second, chunked
    # attention), by name or by NeMo's recipe names (llama4_e16, llama4_e128)
    ("maverick", "llama4-maverick"),
    ("llama4_e128", "llama4-maverick"),
    ("scout", "llama4-scout"),
    ("llama4_e16", "llama4-scout"),
    # Qwen3-Next (Gated DeltaNet and gated attention layers), before Qwen3's Llama layer
    ("qwen3-next", "qwen3-next"),
    ("llama", "llama"),
    ("mixtral", "llama"),
    ("mistral", "llama"),
    ("qwen", "llama"),
    ("gpt-oss", "gpt-oss"),
    ("deepseek-v3", "deepseek"),
    ("deepseek-v2", "deepseek"),
    # Kimi K2 (Moonshot AI, arXiv:2507.20534): DeepSeek-V3's layer (MLA, fine-grained routed
    # experts with a shared one) at other counts, which the case gives
    ("kimi", "deepseek"),
    # NVIDIA's hybrid Nemotron-H layout (Mamba-2, attention and MLP or MoE layers in the
    # order of its hybrid_override_pattern): Nemotron 3 Nano's config.json is the base, a
    # case's model.hf_config another model's
    ("nemotron 3 super", "nemotron-3-super"),
    ("nemotron 3 nano", "nemotron-h"),
    ("nemotron-h", "nemotron-h"),
    ("nemotron", "nemotron"),
    ("gpt", "gpt"),
    # Megatron-Turing NLG 530B (Smith et al. 2022, arXiv:2201.11990): Megatron's GPT layer
    ("mt-nlg", "gpt"),
    ("megatron-turing", "gpt"),
)
#: Models whose layer is GPT's (pre-LayerNorm, multi-head attention, an MLP of two 4h
#: matrices with biases), named as words: OPT (Zhang et al. 2022, arXiv:2205.01068, Sec. 2.1:
#: learned positions, ReLU), BLOOM (BigScience 2022, arXiv:2211.05100, Sec. 3.2: ALiBi, an
#: embedding LayerNorm, GeLU) and MPT (MosaicML llm-foundry ``MPTBlock``: ALiBi, GeLU, no
#: biases). ALiBi's bias on the scores and the embedding LayerNorm are not counted.
_GPT_LAYER_MODELS = re.compile(r"(?<![a-z])(?:opt|bloom|mpt)(?![a-z])")
#: gpt-oss alternates a sliding-window and a full-attention layer, the sliding one first
#: (Hugging Face openai/gpt-oss-120b and -20b config.json ``layer_types``): a case's layer
#: count gives its pattern.
_GPT_OSS_LAYER_TYPES = ("sliding_attention", "full_attention")
#: Families whose attention is multi-head latent attention: every head has its own key and
#: value (expanded from the latent), so their KV heads are the heads, derived.
_LATENT_ATTENTION = ("deepseek",)
#: A case's mixture-of-experts keys (``model.``) and the workload keys they set.
_MOE_KEYS = {
    "num_experts": "num_experts",
    "top_k": "num_experts_per_tok",
    "moe_ffn": "moe_intermediate_size",
    "shared_experts": "num_shared_experts",
    "first_dense_layers": "first_k_dense_replace",
    "moe_layer_step": "moe_layer_step",
    "head_dim": "attention_head_dim",
}
#: Families whose base workload is a dense model: a case of one is a mixture of experts only
#: by its MoE keys (:data:`_MOE_KEYS`).
_DENSE_FAMILIES = frozenset({"gpt", "llama", "nemotron"})
#: A model name that says it is a mixture of experts: Mixtral, "MoE", Qwen's active-parameter
#: suffix ("Qwen3-30B-A3B") and the experts-times-size form ("8x7B", "8x22B").
_MOE_NAME = re.compile(
    r"mixtral|(?<![a-z])moe(?![a-z])|(?<![a-z0-9])a\d+(?:\.\d+)?b(?![a-z0-9])"
    r"|(?<![a-z0-9])\d+x\d+(?:\.\d+)?b(?![a-z0-9])",
    re.IGNORECASE,
)
#: Architectures whose FFN size has a default: GPT's 4·hidden (Radford et al. 2019; Megatron-LM
#: ``--ffn-hidden-size`` defaults to 4 * hidden_size) and Nemotron-4's (15B: 24576 = 4·6144,
#: arXiv:2402.16819; 340B: 73728 = 4·18432, arXiv:2406.11704). A gated (SwiGLU) MLP has none.
_FFN_PER_HIDDEN = {"gpt": 4, "nemotron": 4}
#: Families whose MLP width, unstated, is their base workload's (a hybrid's few MLP layers,
#: Llama 4's dense layers, 16384: intermediate_size_mlp; Qwen3-Next's, unused by its MoE layers).
_FFN_FROM_BASE = (
    "nemotron-h",
    "nemotron-3-super",
    "llama4-maverick",
    "llama4-scout",
    "qwen3-next",
)

#: Documented defaults of settings a case may leave unstated (README, "Validation").
DEFAULT_MICRO_BATCH = 1
DEFAULT_PRECISION = "fp16"
#: Figures of the whole iteration; a layer's forward and backward times do not depend on
#: the batch, the vocabulary or the optimizer.
ITERATION_FIGURES = (
    "tflops_per_gpu",
    "model_tflops_per_gpu",
    "aggregate_pflops",
    "mfu_pct",
    "hfu_pct",
    "mfu",
    "hfu",
    "tokens_per_s_per_gpu",
    "tokens_per_s",
    "samples_per_s",
    "iteration_time_s",
    "time_to_train_s",
)
#: Tried in this order when a case does not state its recompute: the least that fits.
#: "light" is selective recompute of the attention core and the modules Megatron-Bridge's
#: guidance adds before whole layers (docs/training/activation-recomputation.md, "Quick
#: Guidance": selective before full; "MLA often benefits from mla_up_proj, and grouped MoE
#: often starts with moe_act or layernorm plus moe_act"), those of them the model has
#: (:func:`light_recompute_modules`).
RECOMPUTE_ORDER = ("none", "selective", "light", "full")


#: Selective recompute (of the attention core, Korthikanti et al. 2022) exists from this
#: (year, month) on: Megatron-LM's ``--recompute-granularity selective``, merged with sequence
#: parallelism into main on 2022-05-25 (d898a8991d); before it a run recomputed whole layers
#: or nothing.
SELECTIVE_RECOMPUTE_SINCE = (2022, 5)
#: Selective recompute of other modules (the norms, the MoE activation, MLA's up projections:
#: the "light" step of :data:`RECOMPUTE_ORDER`) exists from this (year, month) on: Megatron-
#: Core's ``recompute_modules`` (3b141a2471, 2025-04-05, "Add output-discarding recomputation
#: method"); before it selective recompute was the attention core's alone.
RECOMPUTE_MODULES_SINCE = (2025, 4)
#: How :data:`RECOMPUTE_ORDER`'s steps read in an assumption.
_RECOMPUTE_WORDS = {
    "none": "none",
    "selective": "selective",
    "light": "selective with the norms and the MoE activation or MLA up projections",
    "full": "full",
}


def _recompute_order(case: Mapping[str, Any]) -> tuple[str, ...]:
    """The steps of :data:`RECOMPUTE_ORDER` a run that does not state its recompute could
    have taken: those that existed at its source's date (:func:`_source_date`;
    :data:`SELECTIVE_RECOMPUTE_SINCE`, :data:`RECOMPUTE_MODULES_SINCE`), all for an undated
    run."""
    date = _source_date(case)
    return tuple(
        m
        for m in RECOMPUTE_ORDER
        if date is None
        or not (
            (m == "selective" and date < SELECTIVE_RECOMPUTE_SINCE)
            or (m == "light" and date < RECOMPUTE_MODULES_SINCE)
        )
    )


def light_recompute_modules(model: ModelSpec) -> tuple[str, ...]:
    """The modules of :data:`RECOMPUTE_ORDER`'s "light" selective recompute ``model`` has:
    the attention core and the norms, with multi-latent attention its up projections, with
    experts their activation."""
    return (
        *DEFAULT_RECOMPUTE_MODULES,
        "layernorm",
        *(("mla_up_proj",) if model.is_mla else ()),
        *(("moe_act",) if model.is_moe else ()),
    )


@dataclass(frozen=True)
class Assumption:
    """A setting a case left unstated and the value palmsim took for it."""

    key: str
    value: Any
    why: str
    figures: tuple[str, ...] = ()  # the figures it can move; () means every figure

    def moves(self, metric: str) -> bool:
        """Whether figure ``metric`` rests on this assumption."""
        # a share of a stated peak moves with the TFLOP/s it is a share of
        base = "tflops_per_gpu" if _PCT_OF_PEAK.match(metric) else metric
        return not self.figures or base in self.figures


@dataclass(frozen=True)
class Comparison:
    """One measured figure of a case against palmsim's prediction."""

    case: str
    metric: str
    measured: float
    predicted: float
    assumed: tuple[str, ...] = ()  # keys of the assumptions the figure rests on
    # FIGURE_KINDS: a single operator's or collective's time, or a whole run's figure
    kind: str = "end_to_end"
    group: str = ""  # the case's ``group`` (the table or source it comes from), if it gives one

    @property
    def relative_error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class Skipped:
    """A case palmsim did not run, and why (one line)."""

    case: str
    reason: str
    #: The command's ``--set`` override every problem of the case's ConfigError is blamed on
    #: (:func:`_blamed_override`), if one is: the case refused the setting, not its own data.
    blamed: str | None = None


#: The kinds of figure a report keeps apart: an end-to-end run's (throughput, TTFT, tokens
#: per second) and a single operator's or collective's time (issue 14 holds them to 15% and
#: 10%; only the second may be fitted), with the words the table uses for them.
FIGURE_KINDS = {"end_to_end": "end to end", "microbenchmark": "microbenchmarks"}


def _mape(comparisons: Sequence[Comparison]) -> float | None:
    """Mean of |relative error| over ``comparisons``, in percent; None if there are none."""
    if not comparisons:
        return None
    return 100.0 * sum(abs(c.relative_error) for c in comparisons) / len(comparisons)


@dataclass(frozen=True)
class ValidationReport:
    """Every comparison and every case not run of one measurements file.

    ``assumptions`` and ``hardware`` say, per case run, what it assumed and which config it
    ran on; ``interrupted`` is set when the run was stopped (Ctrl-C) before every case ran.
    """

    source: str
    comparisons: tuple[Comparison, ...]
    skipped: tuple[Skipped, ...]
    assumptions: tuple[tuple[str, Assumption], ...] = ()
    hardware: tuple[tuple[str, str, str], ...] = ()  # (case, config path, how it was chosen)
    interrupted: bool = False

    @property
    def refused_setting(self) -> str | None:
        """The ``--set`` override every case refused, when no case ran: the command's mistake
        (a mistyped key), not the cases'."""
        blamed = {s.blamed for s in self.skipped}
        if self.comparisons or self.interrupted or len(blamed) != 1:
            return None
        return blamed.pop()

    @property
    def mean_absolute_percentage_error(self) -> float | None:
        """Mean of |relative error| over all comparisons, in percent; None if there are none
        (``--json`` writes null: NaN is not JSON)."""
        return _mape(self.comparisons)

    @property
    def errors_by_kind(self) -> dict[str, tuple[float, int]]:
        """(mean absolute percentage error, figures) of each kind of figure
        (:data:`FIGURE_KINDS`) the report has, in that order."""
        out = {}
        for kind in FIGURE_KINDS:
            figures = [c for c in self.comparisons if c.kind == kind]
            mape = _mape(figures)
            if mape is not None:
                out[kind] = (mape, len(figures))
        return out

    @property
    def errors_by_group(self) -> dict[str, tuple[float, int]]:
        """(mean absolute percentage error, figures) of each case ``group`` the report has
        (the table or source its cases come from; "" for cases that give none), the group
        whose figures miss by the most in all first (its summed |relative error|)."""
        groups: dict[str, list[Comparison]] = {}
        for c in self.comparisons:
            groups.setdefault(c.group, []).append(c)
        total = {g: sum(abs(c.relative_error) for c in cs) for g, cs in groups.items()}
        order = sorted(groups, key=lambda g: (-total[g], g))
        return {g: (_mape(groups[g]) or 0.0, len(groups[g])) for g in order}

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "source": self.source,
            "interrupted": self.interrupted,
            "mean_absolute_percentage_error": self.mean_absolute_percentage_error,
            "mean_absolute_percentage_error_by_kind": {
                kind: mape for kind, (mape, _) in self.errors_by_kind.items()
            },
            "mean_absolute_percentage_error_by_group": {
                group: mape for group, (mape, _) in self.errors_by_group.items()
            },
            "comparisons": [
                {
                    "case": c.case,
                    "metric": c.metric,
                    "measured": c.measured,
                    "predicted": c.predicted,
                    "relative_error": c.relative_error,
                    "assumed": list(c.assumed),
                    "kind": c.kind,
                    "group": c.group,
                }
                for c in self.comparisons
            ],
            "skipped": [{"case": s.case, "reason": s.reason} for s in self.skipped],
            "assumptions": [
                {
                    "case": case,
                    "key": a.key,
                    "value": a.value,
                    "why": a.why,
                    "figures": list(a.figures),
                }
                for case, a in self.assumptions
            ],
            "hardware": [
                {"case": case, "config": path, "why": why} for case, path, why in self.hardware
            ],
        }


class NotRunError(Exception):
    """The case cannot run; the message (one line) says why."""


NotRun = NotRunError


@dataclass(frozen=True)
class CaseRun:
    """How to run one case: the experiment's inputs, what it assumed and what it measured.

    ``recompute`` lists the recompute modes to try in order (the first that fits runs);
    ``predict`` turns a simulation result into figures named as in ``measured``.
    """

    hardware: str
    workload: str
    overrides: tuple[str, ...]
    flags: Mapping[str, Any]
    measured: Mapping[str, Any]
    assumptions: tuple[Assumption, ...] = ()
    hardware_why: str = ""
    recompute: tuple[str, ...] = ()
    zero: tuple[int, ...] = ()  # ZeRO stages to try with each recompute mode, in order
    predict: Callable[[SimulationResult], dict[str, float]] | None = None
    train_iterations: float | None = None  # the run's iterations (its time to train)
    # the run's evaluations and the samples each runs forward (its time to train)
    evaluation: tuple[float, int] | None = None


class CaseReader(Protocol):
    """Reads one case of a measurements file: a :class:`CaseRun`, or None if the case is not
    of its format. Raises :class:`NotRun` for a case of its format that cannot run."""

    def __call__(self, case: Mapping[str, Any], source: str, /) -> CaseRun | None: ...


#: Case readers by name, tried in name order; add one with ``@CASE_READERS.register(name)``
#: (e.g. a second measurements format in a module of its own).
CASE_READERS: Registry[CaseReader] = Registry("case reader")


def shipped(relative: str) -> str:
    """A shipped file: relative to the working directory if there, else to the checkout."""
    here = Path(relative)
    return relative if here.exists() else str(_REPO / relative)


# --------------------------------------------------------------------------- field access


#: Texts that say a value does not apply, as published tables write a parallelism a run does
#: not use (Megatron-Bridge's "n/a" for VP and EP), or that it is not known: an unstated
#: value, like a null.
_NOT_APPLICABLE = frozenset(
    {"n/a", "na", "-", "\u2013", "\u2014", "", "?", "unknown", "not stated", "unstated"}
)


#: Other names a published run's configuration may use for a case's keys, per section, each
#: read as the case key it names: Megatron-LM's argument names (megatron/training/arguments.py:
#: ``--seq-length``, ``--tensor-model-parallel-size``, ...), Hugging Face ``config.json`` names
#: (``num_hidden_layers``, ``num_local_experts`` (Mixtral), ``n_routed_experts`` (DeepSeek),
#: ``num_experts_per_tok``, ...) and the plain words tables use (``tensor_parallel``,
#: ``experts``, ``vp``). Keys are read in lower case ("TP" is ``tp``).
_KEY_ALIASES: dict[str, dict[str, str]] = {
    "model": {
        "seq_length": "seq_len",
        "sequence_length": "seq_len",
        "global_batch_size": "global_batch",
        "micro_batch_size": "micro_batch",
        "hidden_size": "hidden",
        "num_layers": "layers",
        "num_hidden_layers": "layers",
        "num_attention_heads": "heads",
        "num_query_groups": "kv_heads",
        "num_key_value_heads": "kv_heads",
        "num_kv_heads": "kv_heads",
        "ffn_hidden_size": "ffn",
        "intermediate_size": "ffn",
        "vocab_size": "vocab",
        "padded_vocab_size": "vocab",
        "experts": "num_experts",
        "num_moe_experts": "num_experts",
        "moe_num_experts": "num_experts",
        "num_local_experts": "num_experts",
        "n_routed_experts": "num_experts",
        "moe_router_topk": "top_k",
        "num_experts_per_tok": "top_k",
        "topk": "top_k",
        "moe_top_k": "top_k",
        "moe_ffn_hidden_size": "moe_ffn",
        "moe_intermediate_size": "moe_ffn",
        "n_shared_experts": "shared_experts",
        "num_shared_experts": "shared_experts",
        "first_k_dense_replace": "first_dense_layers",
        "interleave_moe_layer_step": "moe_layer_step",
        "decoder_sparse_step": "moe_layer_step",
    },
    "system": {
        "tensor_model_parallel_size": "tp",
        "tensor_parallel": "tp",
        "tensor_parallel_size": "tp",
        "pipeline_model_parallel_size": "pp",
        "pipeline_parallel": "pp",
        "pipeline_parallel_size": "pp",
        "data_parallel_size": "dp",
        "data_parallel": "dp",
        "context_parallel_size": "cp",
        "context_parallel": "cp",
        "expert_model_parallel_size": "ep",
        "expert_parallel": "ep",
        "expert_parallel_size": "ep",
        "expert_tensor_parallel_size": "etp",
        "virtual_pipeline_model_parallel_size": "virtual_pipeline_stages",
        "num_virtual_stages_per_pipeline_rank": "virtual_pipeline_stages",
        "vp": "virtual_pipeline_stages",
        "vpp": "virtual_pipeline_stages",
        "gpus": "num_gpus",
        "world_size": "num_gpus",
        "num_nodes": "nodes",
    },
    "training": {
        # Megatron-LM's --recompute-granularity (full | selective), llm-foundry's
        # activation_checkpointing and Hugging Face's gradient_checkpointing (true: every layer)
        "recompute_granularity": "activation_recompute",
        "activation_checkpointing": "activation_recompute",
        "gradient_checkpointing": "activation_recompute",
    },
}

#: The keys of a ``model.moe`` mapping (``moe: {num_experts: 8, top_k: 2, ffn: 14336}``) that
#: name a model key of their own: its FFN is the experts'.
_MOE_BLOCK_KEYS = {"ffn": "moe_ffn", "ffn_hidden_size": "moe_ffn", "intermediate_size": "moe_ffn"}


def _plain_key(key: Any) -> str:
    """A case key as palmsim reads it: lower case, a command-line flag's spelling as the
    argument's name (``--tensor-model-parallel-size`` as ``tensor_model_parallel_size``,
    Megatron-LM's and DeepSpeed's flags as their arguments are named), spaces as
    underscores."""
    return re.sub(r"[\s-]+", "_", str(key).strip().lstrip("-").lower())


def _section(case: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A case's sub-mapping with null and not-applicable values ("n/a") dropped: an unstated
    value; ``{}`` when absent or null. Keys are read in lower case and as named without a
    flag's dashes (:func:`_plain_key`), other names of a key (:data:`_KEY_ALIASES`) as that
    key, and a model's ``moe`` mapping as its MoE keys.

    Raises:
        NotRun: the key holds something other than a mapping, or two names of one key give
            different values.
    """
    value = case.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise NotRun(f"{key}: got {value!r}; expected a mapping of fields")
    items = list(value.items())
    block = value.get("moe")
    if key == "model" and isinstance(block, Mapping):
        items = [(k, v) for k, v in items if k != "moe"]
        items += [(_MOE_BLOCK_KEYS.get(_plain_key(k), k), v) for k, v in block.items()]
    section: dict[str, Any] = {}
    given_as: dict[str, str] = {}  # each key's name in the case
    for k, v in items:
        if v is None or (isinstance(v, str) and v.strip().lower() in _NOT_APPLICABLE):
            continue
        plain = _plain_key(k)
        name = _KEY_ALIASES.get(key, {}).get(plain, plain)
        if name in section and section[name] != v:
            raise NotRun(
                f"{key}.{given_as[name]} = {section[name]!r} and {key}.{k} = {v!r} disagree "
                f"(both are {key}.{name})"
            )
        section.setdefault(name, v)
        given_as.setdefault(name, str(k))
    return section


#: The unit words a count may carry after its number, by its key ("64 GPUs", "2048 tokens"):
#: the thing the key counts, in any of the ways a table writes it.
_COUNT_WORDS: dict[str, tuple[str, ...]] = {
    "num_gpus": ("gpu", "gpus", "devices", "accelerators"),
    "global_batch": ("sequences", "seqs", "samples"),
    "micro_batch": ("sequences", "seqs", "samples"),
    "seq_len": ("tokens",),
    "layers": ("layers",),
    "heads": ("heads",),
    "nodes": ("nodes", "node"),
}


def _int(section: Mapping[str, Any], name: str, key: str, *, minimum: int = 1) -> int | None:
    """An integer field (``2``, ``2.0``, or written as text: ``"4096"``, ``"4,096"``, with the
    unit word its key counts in, ``"64 GPUs"``, ``"2048 tokens"`` (:data:`_COUNT_WORDS`), or a
    note in parentheses after it: ``"1536 (after ramp-up)"``), None when absent. Another word
    ("8 nodes" of GPUs, "4 K") may change what the number counts: such a value is refused,
    not read as its number.

    Raises:
        NotRun: a value that is not a whole number >= ``minimum``.
    """
    if name not in section:
        return None
    value = section[name]
    number = r"\s*(\d{1,3}(?:[,_]\d{3})+|\d+)(?:\s+([a-z]+))?\s*(?:\([^()]*\)\s*)?"
    match = re.fullmatch(number, value, re.IGNORECASE) if isinstance(value, str) else None
    word = match.group(2) if match else None
    if match and (word is None or word.lower() in _COUNT_WORDS.get(name, ())):
        value = int(re.sub(r"[,_]", "", match.group(1)))  # "4,096" as a table writes it
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotRun(f"{key}: got {value!r}; expected a whole number >= {minimum}")
    if not math.isfinite(value) or value != int(value) or value < minimum:
        raise NotRun(f"{key}: got {value!r}; expected a whole number >= {minimum}")
    return int(value)


def _virtual_stages(system: Mapping[str, Any], *, layers: int, pp: int) -> int | None:
    """The model chunks per pipeline stage: ``system.virtual_pipeline_stages``, or Megatron-LM's
    ``--num-layers-per-virtual-pipeline-stage`` (its only interleaving argument from 2021-02
    until --num-virtual-stages-per-pipeline-rank in 2025-02; examples/sc21/run_table_1.sh
    passes it) as Megatron derives the chunks from it: a stage's ``layers // pp`` over ``n``,
    which must divide them (megatron/training/arguments.py; at 285068c8 megatron/arguments.py).
    None when neither is stated.

    Raises:
        NotRun: a count Megatron refuses, or the two keys disagreeing.
    """
    virtual = _int(system, "virtual_pipeline_stages", "system.virtual_pipeline_stages")
    key = "system.num_layers_per_virtual_pipeline_stage"
    per_chunk = _int(system, "num_layers_per_virtual_pipeline_stage", key)
    if per_chunk is None:
        return virtual
    if pp < 2 or (layers // pp) % per_chunk:
        raise NotRun(
            f"{key}: got {per_chunk} for {layers} layers over {pp} stages; Megatron-LM takes a "
            "divisor of a stage's layers, with pp > 1"
        )
    derived = (layers // pp) // per_chunk
    if virtual is not None and virtual != derived:
        raise NotRun(
            f"system.virtual_pipeline_stages: got {virtual}, but {key} {per_chunk} makes "
            f"{derived} chunks of a stage's {layers // pp} layers"
        )
    return derived


def _required(section: Mapping[str, Any], name: str, key: str, why: str = "") -> int:
    value = _int(section, name, key)
    if value is None:
        raise NotRun(f"{key}: missing or null; expected a whole number >= 1{why}")
    return value


def _train_iterations(training: Mapping[str, Any], global_batch: int, seq_len: int) -> float | None:
    """The run's iterations from its length, as Megatron-LM states it (``--train-iters``,
    ``--train-samples``) or in tokens: ``train_iters`` (or ``train_steps``), else
    ``train_samples`` / the global batch, else ``train_tokens`` / (global batch x sequence);
    None when the case gives none."""
    for key in ("train_iters", "train_steps"):
        steps = _int(training, key, f"training.{key}")
        if steps is not None:
            return float(steps)
    samples = _figure(training.get("train_samples"))
    if samples is not None:
        return samples / global_batch
    tokens = _figure(training.get("train_tokens"))
    if tokens is not None:
        return tokens / (global_batch * seq_len)
    return None


def _evaluation(training: Mapping[str, Any]) -> tuple[float, int] | None:
    """The run's evaluations (``training.evaluations``, how many it ran, a mean over runs
    allowed) and the samples each runs forward (``training.eval_samples``), as MLPerf's logs
    give them (``eval_start`` events; the benchmark's validation set); None when unstated.

    Raises:
        NotRun: one without the other, or a value that is not a count.
    """
    count = _figure(training.get("evaluations"))
    if "evaluations" in training and (count is None or count < 0):
        raise NotRun(f"training.evaluations: got {training['evaluations']!r}; expected a count")
    samples = _int(training, "eval_samples", "training.eval_samples")
    if (count is None) != (samples is None):
        raise NotRun("training.evaluations and training.eval_samples go together")
    return None if count is None or samples is None else (count, samples)


def _flag(section: Mapping[str, Any], name: str) -> bool:
    """A yes/no field: a bool, or the text ``true``/``false``/``yes``/``no``.

    Raises:
        NotRun: anything else.
    """
    value = section[name]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "yes", "on", "1"}:
        return True
    if text in {"false", "no", "off", "0", "none"}:
        return False
    raise NotRun(f"training.{name}: got {value!r}; expected true or false")


def _blamed_override(error: PalmsimError, overrides: Sequence[str]) -> str | None:
    """The override of ``overrides`` every problem of ``error`` is blamed on (its problems'
    ``override``, as :func:`palmsim.config.overrides.blame_overrides` and the loaders set
    it), or None: a ConfigError of the case's own data, or not a ConfigError."""
    if not isinstance(error, ConfigError):
        return None
    blamed = {p.override for p in error.problems}
    text = blamed.pop() if len(blamed) == 1 else ""
    return text if text in overrides else None


def _one_line(error: BaseException) -> str:
    """An exception as one line: its class and message, lines joined."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _squash(text: str) -> str:
    """``text`` lower-cased without spaces, dashes, underscores and dots."""
    return re.sub(r"[\s_.\-]", "", text.lower())


def _architecture(model: Mapping[str, Any]) -> str:
    """The model family: from ``arch`` or ``name``; GPT when the case gives neither.

    Cases without either are Megatron-LM measurements (e.g. Korthikanti et al.'s 22B layer),
    whose models are GPTs: learned positions, GeLU MLP, LayerNorm.
    """
    if not model.get("arch") and not model.get("name"):
        return "gpt"
    text = f"{model.get('arch') or ''} {model.get('name') or ''}".lower()
    why = unmodelled_architecture(text)
    if why is not None:
        raise NotRun(f"architecture {model.get('arch') or model.get('name')!r}: {why}")
    if _GPT_LAYER_MODELS.search(text):
        return "gpt"
    # names are matched with spaces, dashes, underscores and dots dropped: "GPT OSS 120B",
    # "gpt_oss", "DeepSeekV3" and "LLAMA3.1_405B" as their tables write them
    squashed = _squash(text)
    for name, family in _FAMILY_OF_NAME:
        if _squash(name) in squashed:
            return family
    raise NotRun(
        f"unknown architecture {model.get('arch') or model.get('name')!r} "
        f"(palmsim builds {', '.join(n for n, _ in _FAMILY_OF_NAME)} models)"
    )


def _moe_layer_freq(model: Mapping[str, Any], layers: int) -> tuple[int, int] | None:
    """Megatron-Core's ``--moe-layer-freq`` (``model.moe_layer_freq``) as (dense layers first,
    then a mixture of experts every step-th layer): 1, or a list of 0 (dense) and 1 (MoE)
    per layer of that form (NeMo's Llama 4 Maverick: ``[0, 1] * 24``); None when not given.

    Raises:
        NotRun: another value: an int N > 1 (Megatron-Core puts the experts on layers 0, N,
            2N, ..., the first of each group, where palmsim's step puts them last, as Hugging
            Face's interleave_moe_layer_step does) or a list of another form.
    """
    given = model.get("moe_layer_freq")
    if given is None:
        return None
    if not isinstance(given, list):
        if _int(model, "moe_layer_freq", "model.moe_layer_freq") == 1:
            return 0, 1
        raise NotRun(
            f"model.moe_layer_freq = {given!r}: Megatron-Core puts the experts on the first "
            "layer of every group of that many, palmsim on the last (Hugging Face's "
            "interleave_moe_layer_step); give the per-layer list or model.moe_layer_step"
        )
    if any(str(v).strip() not in ("0", "1") for v in given):
        raise NotRun(f"model.moe_layer_freq: {given!r}; expected a list of 0 and 1, one per layer")
    pattern = [int(str(v).strip()) for v in given]
    if len(pattern) != layers or 1 not in pattern:
        raise NotRun(
            f"model.moe_layer_freq: a list of {len(pattern)} with "
            f"{sum(pattern)} MoE layers; expected one 0 or 1 per layer ({layers})"
        )
    first = pattern.index(1)
    later = [i for i, v in enumerate(pattern) if v]
    step = later[1] - later[0] if len(later) > 1 else layers - first
    if pattern != [int(i >= first and (i - first) % step == 0) for i in range(layers)]:
        raise NotRun(
            "model.moe_layer_freq: MoE layers palmsim cannot place (it runs dense layers "
            "first, then a mixture of experts every step-th layer)"
        )
    # palmsim counts a step's MoE layer last in its group: the first MoE layer ends the
    # dense run before it
    dense = first - (step - 1)
    if dense < 0:
        raise NotRun(
            "model.moe_layer_freq: a mixture of experts first in its group of layers (as "
            "Megatron-Core's int form puts it); palmsim puts it last (Hugging Face's "
            "interleave_moe_layer_step)"
        )
    return dense, step


def _expert_tp(system: Mapping[str, Any]) -> int | None:
    """The expert tensor-parallel degree: ``system.etp`` or ``system.expert_tensor_parallel``;
    None when neither is given, which is Megatron-Core's default, ``tp``
    (megatron/training/arguments.py sets ``expert_tensor_parallel_size`` to
    ``tensor_model_parallel_size`` when unset), so no assumption is recorded.

    Raises:
        NotRun: both keys, disagreeing, or a value that is not a whole number >= 1.
    """
    values = {
        key: _int(system, key, f"system.{key}")
        for key in ("etp", "expert_tensor_parallel")
        if key in system
    }
    if len(set(values.values())) > 1:
        raise NotRun(f"system.etp and system.expert_tensor_parallel disagree: {values}")
    return next(iter(values.values()), None)


def _sequence_parallel(training: Mapping[str, Any]) -> bool | None:
    """Megatron sequence parallelism: ``training.sequence_parallel`` or the variant's name;
    None when the case does not say."""
    variant = str(training.get("variant") or "").lower()
    if "sequence_parallel" in variant:
        return True
    if "sequence_parallel" in training:
        return _flag(training, "sequence_parallel")
    return False if variant else None


def _flag_or_assumed(
    training: Mapping[str, Any],
    key: str,
    value: bool,
    why: str,
    assumptions: list[Assumption],
) -> bool:
    """``training.<key>`` when the case states it, else ``value``, recorded as an assumption
    on the iteration's figures."""
    if key in training:
        return _flag(training, key)
    assumptions.append(Assumption(f"training.{key}", value, why, ITERATION_FIGURES))
    return value


def _dp_overlap(
    training: Mapping[str, Any], assumptions: list[Assumption], *, megatron_lm: bool
) -> bool:
    """Whether the DP gradient all-reduce (or reduce-scatter) overlaps the backward pass.

    ``training.ddp_impl``: Megatron-LM's ``local`` all-reduces the gradients in ``train_step``
    after ``forward_backward_func`` returns (``model.allreduce_gradients()``,
    megatron/training.py), after the whole backward pass; ``torch`` DDP reduces buckets from
    autograd hooks while the backward runs. ``training.overlap_grad_reduce`` says it directly.
    Unstated, a Megatron-LM run (``megatron_lm``: not the Megatron-Core / Transformer Engine
    stack, no framework named, no ZeRO-2/3 or FSDP) takes Megatron-LM's default, ``local``:
    ``--DDP-impl`` defaulted to it from 2019 until torch DDP was dropped (commit 3fb3e95ec6,
    2023-08-31), and the overlap that came then (``--overlap-grad-reduce``, 2d5220a424) is
    opt-in; marked. Any other run overlaps, as Megatron-Core's recipes (NeMo, Megatron-Bridge:
    ``overlap_grad_reduce=True``), DeepSpeed and FSDP do.
    """
    if "ddp_impl" in training:
        return str(training.get("ddp_impl") or "torch").lower() != "local"
    if not megatron_lm and "overlap_grad_reduce" not in training:
        return True
    why = (
        "not stated: Megatron-LM's default --DDP-impl local, which reduces the gradients after "
        "the backward (its later --overlap-grad-reduce is opt-in)"
    )
    return _flag_or_assumed(training, "overlap_grad_reduce", False, why, assumptions)


#: How a text of a case names the overlapped parameter all-gather: Megatron-LM's flag,
#: Megatron-Core's config field, NeMo's optimizer key.
_OVERLAP_PARAM_GATHER_NAMES = ("overlap-param-gather", "overlap_param_gather", "overlap_param_sync")


def _overlap_param_gather(
    case: Mapping[str, Any], assumptions: list[Assumption], *, core: bool
) -> bool:
    """Whether a ZeRO-1/2 run all-gathered its updated weights during the next forward
    (``mapping.overlap_param_gather``) rather than after the optimizer step.

    ``training.overlap_param_gather`` (Megatron-Core's name) or ``overlap_param_sync``
    (NeMo's ``optim`` key) says so; so does a text of the case naming either
    (:data:`_OVERLAP_PARAM_GATHER_NAMES`; the Megatron-LM README's benchmark configuration
    lists ``--overlap-param-gather``).
    Unstated, a Megatron-Core run (``core``) overlaps, marked: Megatron-Bridge's recipes set
    ``overlap_param_gather=True`` with the distributed optimizer
    (src/megatron/bridge/recipes/common.py), NeMo's performance recipes
    ``overlap_param_sync: true`` (MLPerf's NeMo GPT-3 ``OVERLAP_PARAM_SYNC=True``). Any other
    run gathers after the step: Megatron-LM's flag is opt-in, and a run naming DeepSpeed,
    FSDP or FairScale (:func:`_names_other_ddp`) is not Megatron's; DeepSpeed's ZeRO-1/2
    all-gathers after its step.
    """
    training = _section(case, "training")
    for key in ("overlap_param_gather", "overlap_param_sync"):
        if key in training:
            return _flag(training, key)
    texts = [text.lower() for text in _texts(case)]
    if any(name in t for t in texts for name in _OVERLAP_PARAM_GATHER_NAMES):
        return True
    if not core or _names_other_ddp(case):
        return False
    why = (
        "not stated: on with the distributed optimizer, as Megatron-Bridge's recipes "
        "(overlap_param_gather) and NeMo's (overlap_param_sync) set it"
    )
    assumptions.append(Assumption("training.overlap_param_gather", True, why, ITERATION_FIGURES))
    return True


#: Megatron-LM fuses a linear's weight-gradient accumulation into its weight-gradient GEMM by
#: default (``--no-gradient-accumulation-fusion`` opts out) from this (year, month) on: commit
#: 07916bf245 ("Support gradient accumulation fusion in fp16", 2022-09-27). From the fusion's
#: merge (83b1e42f30, merged 2022-02-22) until then it ran only with fp32 gradient accumulation,
#: which Megatron-LM sets for bf16: :data:`GRAD_ACCUMULATION_FUSION_BF16_SINCE`.
GRAD_ACCUMULATION_FUSION_SINCE = (2022, 9)
GRAD_ACCUMULATION_FUSION_BF16_SINCE = (2022, 2)


def _grad_accumulation(
    case: Mapping[str, Any],
    training: Mapping[str, Any],
    assumptions: list[Assumption],
    *,
    megatron: bool,
    dtype: str,
) -> str:
    """How the measured run accumulated its weight gradients (``mapping.grad_accumulation``).

    ``training.grad_accumulation`` (a mode) or ``training.gradient_accumulation_fusion``
    (true: ``fused``) says so in a file of one's own; Megatron-LM's ``--DDP-impl local``
    (SC21) adds each parameter's fresh gradient into its ``main_grad`` buffer in a backward
    hook after every micro-batch (``megatron/model/distributed.py``), as Megatron-Core's DDP
    does with the fusion stated off. A run of neither (``megatron`` false: one naming FSDP,
    FairScale or DeepSpeed, or ZeRO-3) leaves it to autograd's AccumulateGrad, which keeps the
    first micro-batch's gradient and adds the later ones. A Megatron run that says nothing
    follows Megatron-LM's default of its date (:func:`_source_date`), marked: fused from
    :data:`GRAD_ACCUMULATION_FUSION_SINCE` (bf16 from :data:`GRAD_ACCUMULATION_FUSION_BF16_SINCE`)
    and undated, as Megatron-Core and its recipes run it (Megatron-Bridge's model providers
    and NeMo 2's ``GPTConfig`` turn it on wherever Transformer Engine or Apex is installed,
    src/megatron/bridge/utils/fusions.py ``can_enable_gradient_accumulation_fusion``);
    autograd's before, through PyTorch DDP.
    """
    if "grad_accumulation" in training:
        return str(training["grad_accumulation"])
    fusion = training.get("gradient_accumulation_fusion")
    if fusion is not None and _flag(training, "gradient_accumulation_fusion"):
        return "fused"
    if str(training.get("ddp_impl") or "torch").lower() == "local":
        return "every_microbatch"
    if not megatron:
        return "after_first_microbatch"
    if fusion is not None:
        return "every_microbatch"  # Megatron-Core's DDP hook adds each into main_grad
    since_date = (
        GRAD_ACCUMULATION_FUSION_BF16_SINCE if dtype == "bf16" else GRAD_ACCUMULATION_FUSION_SINCE
    )
    since, before = _dated_before(case, since_date)
    if before is not None:
        why = (
            f"not stated: autograd's adds from the second micro-batch on, the run's source "
            f"dates from {before}, before Megatron-LM fused them into the weight-gradient GEMM "
            f"by default ({since})"
        )
        assumptions.append(
            Assumption("training.gradient_accumulation_fusion", False, why, ITERATION_FIGURES)
        )
        return "after_first_microbatch"
    date = _source_date(case)
    dated = "undated" if date is None else f"dated {date[0]}"
    why = (
        f"not stated: fused into the weight-gradient GEMM ({dated}), Megatron-LM's default "
        f"since {since} and Megatron-Core's with Transformer Engine "
        "(--no-gradient-accumulation-fusion opts out)"
    )
    assumptions.append(
        Assumption("training.gradient_accumulation_fusion", True, why, ITERATION_FIGURES)
    )
    return "fused"


#: Megatron-LM overlaps a column-parallel linear's backward TP all-reduce with its
#: weight-gradient GEMM by default from this (year, month) on: merge b462d2545d
#: ("slym/allreduce-overlap", 2021-09-07) made ``--no-async-tensor-model-parallel-allreduce``
#: the switch (commit 3f65246911, megatron/mpu/layers.py). Megatron-Core's linear layers
#: (``LinearWithGradAccumulationAndAsyncCommunication``, ``async_op=True`` on the input
#: gradient's all-reduce or reduce-scatter) and Transformer Engine's keep doing so.
ASYNC_TP_ALLREDUCE_SINCE = (2021, 9)
#: Keys of a case whose texts no reader takes a setting from: the figures, what was derived
#: from them, and notes for people.
_UNREAD_KEYS = frozenset({"measured", "derived", "notes", "note"})
#: Dates a case's ``source`` gives: an arXiv identifier (yymm.nnnnn), a year of the era of
#: these runs (2017-2029, so that a "2048" of a sequence length is none), or a venue with a
#: two-digit year ("SC21").
_ARXIV_DATE = re.compile(r"(?<![\d.])(\d{2})(0[1-9]|1[0-2])\.\d{4,5}(?!\d)")
_YEAR = re.compile(r"(?<!\d)(201[7-9]|202\d)(?!\d)")
_VENUE_YEAR = re.compile(
    r"\b(?:SC|ISCA|MLSys|OSDI|NSDI|SOSP|ASPLOS|ATC|EuroSys|PPoPP|HPCA|MICRO|NeurIPS|ICML|ICLR)"
    r"\s?'?(\d{2})\b"
)


def _texts(value: Any, *, keys: bool = False) -> list[str]:
    """Every text and whole number in ``value``, nested mappings and lists included, with the
    mappings' keys when ``keys``; none under :data:`_UNREAD_KEYS`."""
    if isinstance(value, Mapping):
        return [
            text
            for key, item in value.items()
            if key not in _UNREAD_KEYS
            for text in ([str(key)] if keys else []) + _texts(item, keys=keys)
        ]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _texts(item, keys=keys)]
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    return []


def _dated_before(case: Mapping[str, Any], since: tuple[int, int]) -> tuple[str, str | None]:
    """``since`` as text, and the case's source date (:func:`_source_date`) as text when it
    is earlier than ``since``, else None."""
    date = _source_date(case)
    before = f"{date[0]}-{date[1]:02d}" if date is not None and date < since else None
    return f"{since[0]}-{since[1]:02d}", before


def _source_date(case: Mapping[str, Any]) -> tuple[int, int] | None:
    """The earliest (year, month) the case's ``source`` section gives: of its arXiv
    identifiers, else January of the earliest year it names (the earliest the run can date
    from); None when it gives none."""
    texts = _texts(case.get("source"))
    months = [(2000 + int(y), int(m)) for t in texts for y, m in _ARXIV_DATE.findall(t)]
    years = [int(y) for t in texts for y in _YEAR.findall(t)]
    years += [2000 + int(y) for t in texts for y in _VENUE_YEAR.findall(t)]
    if months:
        return min(months)
    return (min(years), 1) if years else None


def _tp_overlap(case: Mapping[str, Any], assumptions: list[Assumption], *, tp: int) -> bool:
    """Whether the measured run overlapped the backward TP all-reduce (or reduce-scatter) of
    a column-parallel linear with its weight-gradient GEMM (Megatron-LM's asynchronous TP
    all-reduce): ``training.tp_overlap`` when given. Unstated, by the run's date
    (:func:`_source_date`): off for a run from before Megatron-LM turned it on by default
    (:data:`ASYNC_TP_ALLREDUCE_SINCE`: Narayanan et al.'s SC21 runs), on otherwise, as every
    later Megatron-LM, Megatron-Core and Transformer Engine run has it; an assumption marked
    on the figures.
    """
    training = _section(case, "training")
    if "tp_overlap" in training:
        return _flag(training, "tp_overlap")
    if tp == 1:
        return False
    since, before = _dated_before(case, ASYNC_TP_ALLREDUCE_SINCE)
    if before is not None:
        why = (
            f"not stated: off, the run's source dates from {before}, before "
            f"Megatron-LM overlapped it by default ({since})"
        )
        assumptions.append(Assumption("training.tp_overlap", False, why))
        return False
    date = _source_date(case)
    dated = "undated" if date is None else f"dated {date[0]}"
    why = (
        f"not stated: on ({dated}), Megatron-LM's default since {since} "
        "(--no-async-tensor-model-parallel-allreduce turns it off), as in Megatron-Core and "
        "Transformer Engine"
    )
    assumptions.append(Assumption("training.tp_overlap", True, why))
    return True


#: DeepSpeed ZeRO-3 gathered every parameter tensor by an all-gather of its own, each after a
#: device synchronize, and reduce-scattered every gradient tensor alone, from its release
#: (v0.3.12, 2021-03) until PR #1188 (c0eeb69df, merged 2021-10-31, first released in v0.5.5
#: of 2021-11-02) made the gathers one per module: palmsim's ``mapping.zero_collectives``
#: 'tensor' for a DeepSpeed run from before this (year, month).
DEEPSPEED_COALESCED_GATHER_SINCE = (2021, 11)


#: Words naming fully sharded data parallelism (PyTorch FSDP, FairScale) in a case's texts.
_FSDP_WORDS = ("fsdp", "fairscale", "fully sharded")
#: Words naming a data-parallel implementation other than Megatron's in a case's texts.
_OTHER_DDP_WORDS = (*_FSDP_WORDS, "deepspeed")


def _names_other_ddp(case: Mapping[str, Any]) -> bool:
    """Whether a text of the case's ``training`` or ``system`` (their values: a table's
    ``fsdp: 0`` column names nothing) names PyTorch FSDP, FairScale or DeepSpeed, whose
    gradients autograd accumulates, not Megatron's DDP."""
    sections = (_section(case, "training"), _section(case, "system"))
    texts = [text.lower() for section in sections for text in _texts(section)]
    return any(word in t for t in texts for word in _OTHER_DDP_WORDS)


def _zero_collectives(case: Mapping[str, Any], assumptions: list[Assumption]) -> str:
    """How a ZeRO-3 run gathered its weights and reduced its gradients
    (``mapping.zero_collectives``): ``training.zero_collectives`` when given. Unstated:

    - 'unit' for a run naming fully sharded data parallelism (``training.fsdp``, or "FSDP",
      "FairScale" or "fully sharded" in any text of the case but its figures and notes,
      :data:`_UNREAD_KEYS`): PyTorch FSDP, FairScale's and Megatron-FSDP gather per unit;
    - by the run's date (:func:`_source_date`) otherwise, as DeepSpeed ran ZeRO-3, whose name
      it is and the only one of its time that does not call itself FSDP: 'tensor' before
      :data:`DEEPSPEED_COALESCED_GATHER_SINCE`, 'unit' from then on or undated, an
      assumption marked on the figures when the case names DeepSpeed or is dated before.

    Raises:
        NotRun: a stated mode palmsim does not know.
    """
    training = _section(case, "training")
    if "zero_collectives" in training:
        mode = str(training["zero_collectives"])
        if mode not in ZERO_COLLECTIVES:
            raise NotRun(
                f"training.zero_collectives: got {mode!r}; expected one of "
                f"{', '.join(ZERO_COLLECTIVES)}"
            )
        return mode
    texts = [text.lower() for text in _texts(case, keys=True)]
    if any(word in t for t in texts for word in _FSDP_WORDS):
        return "unit"
    since, before = _dated_before(case, DEEPSPEED_COALESCED_GATHER_SINCE)
    if before is not None:
        why = (
            f"not stated: one collective per parameter tensor, none overlapped, as DeepSpeed "
            f"ZeRO-3 ran them before {since} (the run's source dates from {before})"
        )
        assumptions.append(Assumption("training.zero_collectives", "tensor", why))
        return "tensor"
    if any("deepspeed" in t for t in texts):
        date = _source_date(case)
        dated = "undated" if date is None else f"dated {date[0]}"
        why = f"not stated: one per unit, prefetched ({dated}), as DeepSpeed ZeRO-3 since {since}"
        assumptions.append(Assumption("training.zero_collectives", "unit", why))
    return "unit"


def _tp_comm_overlap(
    training: Mapping[str, Any],
    assumptions: list[Assumption],
    *,
    core: bool,
    sequence_parallel: bool,
    tp: int,
) -> bool:
    """Whether the run overlapped its sequence-parallel TP collectives with its GEMMs
    (Transformer Engine's userbuffers, ``mapping.tp_comm_overlap``): ``training.tp_comm_overlap``
    when given; unstated, on for a Megatron-Core / Transformer Engine run with TP and sequence
    parallelism, an assumption marked on the figures: Megatron-Bridge's performance configs set
    it whenever TP > 1 for Llama 3, Llama 3.1 and Qwen3 (``scripts/performance/configs/*/
    *_llm_pretrain.py``, r0.2.0: ``CommOverlapConfig(tp_comm_overlap=...)``), as its GPT-3 175B
    recipe does; its DeepSeek-V3 and Llama 2 recipes do not (their rows say so)."""
    if "tp_comm_overlap" not in training and not (core and sequence_parallel and tp > 1):
        return False
    why = (
        "not stated: on, as Megatron-Bridge's performance configs set it with TP and sequence "
        "parallelism (Transformer Engine's userbuffers)"
    )
    return _flag_or_assumed(training, "tp_comm_overlap", True, why, assumptions)


def _p2p_scatter_gather(training: Mapping[str, Any]) -> bool:
    """Whether the run's pipeline sends scatter-gathered over the TP group:
    ``training.scatter_gather_opt`` (Megatron-LM's ``--no-scatter-gather-tensors-in-pipeline``
    turns it off), on when a case does not say, as in Megatron-LM."""
    return _flag(training, "scatter_gather_opt") if "scatter_gather_opt" in training else True


def _p2p_overlap(training: Mapping[str, Any]) -> bool:
    """Whether a stage computed on while its pipeline sends were in flight:
    ``training.overlap_p2p_comm`` (Megatron-LM's ``--overlap-p2p-communication``). Cases that
    do not say are taken not to: the calibration runs are Megatron-LM's, whose default
    ``_communicate`` (megatron/p2p_communication.py) waits for every isend and irecv
    (``req.wait()``) and synchronizes the device before the stage computes again.
    """
    return _flag(training, "overlap_p2p_comm") if "overlap_p2p_comm" in training else False


# --------------------------------------------------------------------------- training runs


def _precision(training: Mapping[str, Any]) -> tuple[str, bool]:
    """(palmsim dtype, stated): from ``training.precision`` (or ``dtype``): "mixed fp16",
    "bf16", "FP8 (Transformer Engine)", "fp8-cs"...; fp16 when unstated.

    Raises:
        NotRun: a precision palmsim does not know.
    """
    given = training.get("precision", training.get("dtype"))
    if given is None:
        return DEFAULT_PRECISION, False
    text = str(given).lower()
    if "nvfp4" in text:
        # Transformer Engine's NVFP4BlockScaling, run under its quantized autocast as the
        # fp8 recipes are (training.fp8_recipe: nvfp4, read by _fp8_recipe)
        return "fp8", True
    if "fp4" in text or "float4" in text:
        raise NotRun(
            f"training.precision {given!r}: 4-bit training other than NVFP4 (MXFP4 GEMMs) is "
            "not modelled"
        )
    if "fp8" in text or "float8" in text:
        return "fp8", True
    for dtype in ("bf16", "fp16", "fp32"):
        if dtype in text:
            return dtype, True
    raise NotRun(f"training.precision: got {given!r}; expected fp32, fp16, bf16 (mixed) or fp8")


#: Config keys whose last part is a number format: an assumption on one is marked only on
#: runs that compute in that format.
_FORMAT_KEYS = ("tile.peak.", "tile.format_efficiency.")

#: fp8 recipes as Megatron-Bridge's performance tables name them (``fp8-cs`` per-tensor current
#: scaling, ``fp8-mx`` MXFP8, ``fp8-bs`` blockwise) and their palmsim recipes.
_FP8_RECIPE_NAMES: dict[str, str] = {
    "fp8-cs": "current",
    "current": "current",
    "delayed": "delayed",
    "fp8-ds": "delayed",
    "fp8-mx": "mxfp8",
    "mxfp8": "mxfp8",
    "fp8-bs": "blockwise",
    "blockwise": "blockwise",
    "nvfp4": "nvfp4",
}


#: The first NeMo container whose published fp8 rows can only be per-tensor current scaling
#: when they name no recipe: from Megatron-Bridge v0.2.0 (the 25.11 container) its
#: performance scripts take ``--compute_dtype`` bf16, fp8_cs, fp8_mx, fp8_sc or nvfp4
#: (scripts/performance/argument_parser.py), no delayed scaling, and its tables print the
#: same runs "FP8-CS" in 25.11 and "FP8" from 26.02 on (docs/performance-summary.md @v0.3.0);
#: v0.1.0rc4 (25.09) still defaulted to ``--fp8_recipe ds``.
CURRENT_SCALING_ONLY_SINCE = (25, 11)


def _fp8_recipe(
    case: Mapping[str, Any], training: Mapping[str, Any]
) -> tuple[str, Assumption | None]:
    """An fp8 case's scaling recipe and the assumption it rests on: ``training.fp8_recipe``
    (Megatron-Core's ``--fp8-recipe``: delayed, tensorwise (current), mxfp8, blockwise), else
    read from ``training.precision`` ("fp8-cs": current scaling, "fp8-mx": MXFP8, "fp8-bs":
    blockwise); unstated, current scaling for a run of a NeMo container from
    :data:`CURRENT_SCALING_ONLY_SINCE` on (:func:`_nemo_release`), delayed scaling otherwise,
    Megatron-Core's and NeMo's default (``--fp8-recipe delayed``).

    Raises:
        NotRun: a ``training.fp8_recipe`` that names no recipe.
    """
    given = training.get("fp8_recipe")
    if given is not None:
        text = str(given).strip().lower()
        recipe = _FP8_RECIPE_NAMES.get(text) or {"tensorwise": "current"}.get(text)
        if recipe is None and text in FP8_SCALING:
            recipe = text
        if recipe is None:
            raise NotRun(
                f"training.fp8_recipe: got {given!r}; expected one of {', '.join(FP8_SCALING)}"
            )
        return recipe, None
    text = str(training.get("precision", training.get("dtype", ""))).lower()
    for name, recipe in _FP8_RECIPE_NAMES.items():
        if name in text:
            return recipe, None
    release = _nemo_release(case)
    if release is not None and release >= CURRENT_SCALING_ONLY_SINCE:
        why = (
            f"not stated: per-tensor current scaling, the only per-tensor fp8 of the NeMo "
            f"{release[0]}.{release[1]:02d} container's Megatron-Bridge performance scripts "
            "(fp8_cs; from 25.11 on, no delayed scaling)"
        )
        return "current", Assumption("training.fp8_recipe", "current", why)
    return "delayed", Assumption(
        "training.fp8_recipe", "delayed", "not stated: Megatron-Core's default"
    )


#: Text of ``training.activation_recompute`` that names full recompute: Megatron-LM's
#: ``--recompute-granularity full`` and its ``--recompute-method`` (uniform, block), which
#: only full granularity takes.
_FULL_RECOMPUTE = re.compile(r"full|\b(?:uniform|block)\b")
#: Text that names no recompute ("none", "no", "off", "disabled", "false", "without", "0").
_NO_RECOMPUTE = re.compile(r"\b(?:none|no|off|disabled?|false|without|0)\b")
#: A switch turned on ("true", "yes", "on", "enabled"): every layer recomputed, as Hugging
#: Face's gradient_checkpointing and llm-foundry's activation_checkpointing mean it. Read
#: after the words for none, so "no recompute on H100" is none.
_RECOMPUTE_ON = re.compile(r"\b(?:true|yes|on|enabled?)\b")


def _recompute(training: Mapping[str, Any]) -> str | None:
    """``training.activation_recompute`` (or the variant's name): full, selective or none;
    None when the case does not say.

    Raises:
        NotRun: stated text that names none of the three.
    """
    key = "activation_recompute" if "activation_recompute" in training else "recompute"
    stated = training.get(key)
    variant = training.get("variant")
    if stated is None and variant is None:
        return None
    if isinstance(stated, bool):
        stated = "full" if stated else "none"
    text = f"{stated if stated is not None else ''} {variant or ''}".lower().replace("_", " ")
    if "selective" in text:
        return "selective"
    if _FULL_RECOMPUTE.search(text):
        return "full"
    # a variant's name (e.g. "sequence_parallel") describes a set-up without recompute
    if stated is None or _NO_RECOMPUTE.search(text):
        return "none"
    if _RECOMPUTE_ON.search(text):
        return "full"
    raise NotRun(f"training.{key}: got {stated!r}; expected full, selective or none")


#: Keys under which a case states Megatron-LM's --distribute-checkpointed-activations:
#: Megatron-Core's name, the flag's (Megatron-LM, metaseq) and DeepSpeed's activation
#: checkpointing option, which partitions the checkpoints over the model-parallel group alike.
_DISTRIBUTE_KEYS = (
    "distribute_saved_activations",
    "distribute_checkpointed_activations",
    "partition_activations",
)


def _distribute_checkpoints(training: Mapping[str, Any]) -> str | None:
    """The key under which the run distributes its full-recompute checkpoints over the TP
    group (``mapping.distribute_saved_activations``): the first of :data:`_DISTRIBUTE_KEYS`
    that is true, or None."""
    return next(
        (k for k in _DISTRIBUTE_KEYS if training.get(k) is not None and _flag(training, k)), None
    )


def _recompute_modules(training: Mapping[str, Any]) -> tuple[str, ...]:
    """``training.recompute_modules``: Megatron-Core's ``--recompute-modules`` (a list, or
    names separated by commas or spaces); () when the case does not say.

    Raises:
        NotRun: a name Megatron-Core does not have.
    """
    given = training.get("recompute_modules")
    if given is None or given == "":
        return ()
    if not isinstance(given, str | list | tuple):
        raise NotRun(f"training.recompute_modules: got {given!r}; expected a list of module names")
    items = re.split(r"[,\s]+", given) if isinstance(given, str) else list(given)
    names = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    unknown = [n for n in names if n not in RECOMPUTE_MODULES]
    if unknown:
        raise NotRun(
            f"training.recompute_modules: {unknown} not one of {', '.join(RECOMPUTE_MODULES)}"
        )
    return names


#: A ZeRO stage as a run's text names it: "ZeRO-3", "ZeRO stage 2", "zero_stage_1",
#: "DeepSpeed ZeRO-3 Offload" (stage 3).
_ZERO_TEXT = re.compile(r"(?<![a-z])zero[\s_-]*(?:stage[\s_-]*)?([0-3])(?![0-9])", re.IGNORECASE)

#: PyTorch FSDP's sharding strategies (torch.distributed.fsdp.ShardingStrategy) as ZeRO
#: stages: FULL_SHARD shards weights, gradients and optimizer state (ZeRO-3), SHARD_GRAD_OP
#: gradients and optimizer state (ZeRO-2), NO_SHARD nothing; HYBRID_SHARD fully shards within
#: a node and replicates across nodes, run as ZeRO-3 over the whole data-parallel group.
_FSDP_STRATEGIES = {"full_shard": 3, "hybrid_shard": 3, "shard_grad_op": 2, "no_shard": 0}


def _stage_given(training: Mapping[str, Any], key: str) -> int | None:
    """A ZeRO stage in ``training.<key>``: a number 0-3 or a text naming one ("ZeRO-3",
    "stage 2"); None when absent.

    Raises:
        NotRun: anything else.
    """
    if key not in training:
        return None
    value = training[key]
    if isinstance(value, str) and not value.strip().isdigit():
        match = _ZERO_TEXT.search(value) or re.search(r"stage[\s_-]*([0-3])\b", value, re.I)
        if match is None:
            raise NotRun(f"training.{key}: got {value!r}; expected a ZeRO stage 0, 1, 2 or 3")
        return int(match.group(1))
    stage = _int(training, key, f"training.{key}", minimum=0)
    if stage is not None and stage > 3:
        raise NotRun(f"training.{key}: got {stage}; expected 0, 1, 2 or 3")
    return stage


def _fsdp(training: Mapping[str, Any]) -> int | None:
    """The ZeRO stage of ``training.fsdp``: > 0 or true (NeMo Megatron-Bridge's FSDP column,
    PyTorch FSDP's default FULL_SHARD) is 3, a sharding strategy its stage
    (:data:`_FSDP_STRATEGIES`), 0 or false none; None when absent."""
    if "fsdp" not in training:
        return None
    value = training["fsdp"]
    if isinstance(value, str) and value.strip().lower() in _FSDP_STRATEGIES:
        return _FSDP_STRATEGIES[value.strip().lower()]
    if isinstance(value, bool) or (isinstance(value, str) and not value.strip().isdigit()):
        return 3 if _flag(training, "fsdp") else 0
    return 3 if _int(training, "fsdp", "training.fsdp", minimum=0) else 0


def _zero(training: Mapping[str, Any], dp: int) -> tuple[int, Assumption | None]:
    """The ZeRO stage: ``training.zero_stage`` or ``training.zero`` (DeepSpeed: a number or a
    text naming it); ``training.fsdp`` (:func:`_fsdp`: fully sharded data parallelism shards
    weights, gradients and optimizer state as ZeRO-3 does); Megatron-LM's distributed
    optimizer (``training.distributed_optimizer``: optimizer state sharded over the DP group,
    i.e. ZeRO-1); a stage the run's training text names ("DeepSpeed ZeRO-3" in its optimizer
    or notes); unstated, none (Megatron-LM's default), an assumption when dp > 1, and the
    reader tries the distributed optimizer when nothing fits without it.

    Raises:
        NotRun: a stage other than 0-3.
    """
    for key in ("zero_stage", "zero"):
        stage = _stage_given(training, key)
        if stage is not None:
            return stage, None
    stage = _fsdp(training)
    if stage:
        return stage, None
    for key in ("distributed_optimizer", "use_distributed_optimizer"):
        if key in training:
            return (1 if _flag(training, key) else 0), None
    named = {int(m) for v in training.values() if isinstance(v, str) for m in _ZERO_TEXT.findall(v)}
    if len(named) == 1:
        return named.pop(), None
    if len(named) > 1:
        raise NotRun(f"training names ZeRO stages {sorted(named)}: give training.zero_stage")
    assumed = Assumption("training.distributed_optimizer", False, _ZERO_WHY, ITERATION_FIGURES)
    return 0, (assumed if dp > 1 else None)


#: Spellings of ``training.optimizer``: palmsim's optimizer, and whether it is Megatron-Core's
#: layer-wise distributed optimizer (Megatron-Bridge's ``dist_muon``: Muon on whole matrices,
#: each data-parallel rank updating its share, megatron/core/optimizer/layer_wise_optimizer.py),
#: which palmsim runs as ZeRO-1 with all-reduced gradients (palmsim.workload.muon).
_OPTIMIZERS = {
    "adam": ("adam", False),
    "adamw": ("adam", False),
    # LAMB keeps Adam's two moments per weight and adds a per-layer trust ratio (You et al.,
    # ICLR 2020, Algorithm 2): Adam's state; its step is costed as Adam's (the trust ratio's
    # two norms per layer not counted)
    "lamb": ("adam", False),
    "fused_adam": ("adam", False),
    "distributed_fused_adam": ("adam", False),
    "sgd": ("sgd", False),
    "muon": ("muon", False),
    "dist_muon": ("muon", True),
}


#: Spellings of a dtype in the optimizer's keys: palmsim's, PyTorch's (``torch.bfloat16``)
#: and Megatron-Core's argument values (``bf16``, ``fp32``).
_DTYPE_NAMES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "none": "none",
}  # fmt: skip

#: The optimizer-state keys, with Megatron-Core's names for them (``--exp-avg-dtype``,
#: ``--main-params-dtype``; NeMo's ``optim.dtype`` is the moments').
_OPTIMIZER_DTYPE_KEYS = {
    "optimizer_state_dtype": ("optimizer_state_dtype", "exp_avg_dtype"),
    "master_weights_dtype": ("master_weights_dtype", "main_params_dtype"),
}


def _optimizer_dtypes(training: Mapping[str, Any]) -> list[str]:
    """``training.optimizer_state_dtype`` (or ``exp_avg_dtype``) and
    ``training.master_weights_dtype`` (or ``main_params_dtype``) as overrides, a dtype
    written as palmsim, PyTorch or Megatron-Core write it.

    Raises:
        NotRun: a dtype none of them names.
    """
    out = []
    for key, names in _OPTIMIZER_DTYPE_KEYS.items():
        name = next((n for n in names if training.get(n) is not None), None)
        if name is None:
            continue
        given = str(training[name]).strip().lower().removeprefix("torch.")
        dtype = _DTYPE_NAMES.get(given)
        if dtype is None or (dtype == "none" and key == "optimizer_state_dtype"):
            raise NotRun(
                f"training.{name}: got {training[name]!r}; expected fp32, bf16 or fp16"
                + (" or none" if key == "master_weights_dtype" else "")
            )
        out.append(f"training.{key}={dtype}")
    return out


#: Composer's FSDP ``mixed_precision`` modes and the dtype each reduces gradients in
#: (composer/distributed/mosaic_parallelism.py ``get_mixed_precision``: DEFAULT keeps the
#: weights in the autocast precision and reduces in fp32, PURE reduces in it, FULL keeps and
#: reduces everything in fp32).
_FSDP_MIXED_PRECISION = {"default": "fp32", "pure": "weights", "full": "fp32"}


def _grad_reduce_dtype(training: Mapping[str, Any]) -> list[str]:
    """``training.grad_reduce_dtype`` as an override: given as a dtype
    (``grad_reduce_dtype``, PyTorch FSDP's ``reduce_dtype``), as Megatron's flags
    (``grad_reduce_in_fp32`` / ``accumulate_allreduce_grads_in_fp32`` true: fp32, false: the
    weights'; ``grad_reduce_in_bf16`` true: bf16) or as Composer's FSDP
    ``mixed_precision`` mode (:data:`_FSDP_MIXED_PRECISION`); unstated, the weights' dtype.

    Raises:
        NotRun: a value none of them names.
    """
    for key in ("grad_reduce_dtype", "reduce_dtype"):
        if key in training:
            given = str(training[key]).strip().lower().removeprefix("torch.")
            dtype = "weights" if given == "weights" else _DTYPE_NAMES.get(given)
            if dtype is None or dtype == "none":
                raise NotRun(f"training.{key}: got {training[key]!r}; expected fp32, bf16 or fp16")
            return [f"training.grad_reduce_dtype={dtype}"]
    for key in ("grad_reduce_in_fp32", "accumulate_allreduce_grads_in_fp32"):
        if key in training:
            return [f"training.grad_reduce_dtype={'fp32' if _flag(training, key) else 'weights'}"]
    if "grad_reduce_in_bf16" in training and _flag(training, "grad_reduce_in_bf16"):
        return ["training.grad_reduce_dtype=bf16"]
    mode = str(training.get("mixed_precision", "")).strip().lower()
    if mode in _FSDP_MIXED_PRECISION:
        return [f"training.grad_reduce_dtype={_FSDP_MIXED_PRECISION[mode]}"]
    return []


def _megatron_lm_run(case: Mapping[str, Any]) -> bool:
    """Whether the case ran Megatron-LM's own training loop (``megatron/training``): its
    ``source`` is the NVIDIA/Megatron-LM repository, or a text of its ``training`` or
    ``system`` names Megatron-LM (MegaScale's baseline), and none names NeMo or
    Megatron-Bridge, which set their own DDP configuration."""
    texts = [
        t.lower()
        for section in (_section(case, "training"), _section(case, "system"))
        for t in _texts(section)
    ]
    if any("nemo" in t or "bridge" in t for t in texts):
        return False
    repo = str(_section(case, "source").get("repo", "")).strip().lower()
    return repo == "nvidia/megatron-lm" or any(re.search(r"megatron[-_ ]?lm", t) for t in texts)


def _megatron_lm_grad_reduce(
    case: Mapping[str, Any], dtype: str, assumptions: list[Assumption]
) -> list[str]:
    """A Megatron-LM run (:func:`_megatron_lm_run`) in bf16 (or fp8, whose weights are bf16)
    that does not state its gradient reduction reduces in fp32: Megatron-LM's arguments set
    ``accumulate_allreduce_grads_in_fp32`` for bf16 (megatron/training/arguments.py, "bfloat16
    requires gradient accumulation and all-reduce to be done in fp32"; its README's
    distributed-optimizer table: "bf16 param, fp32 grads"); marked. None otherwise (the
    weights' dtype)."""
    if dtype in ("fp16", "fp32") or not _megatron_lm_run(case):
        return []
    why = (
        "not stated: fp32, as Megatron-LM reduces a bf16 run's gradients "
        "(megatron/training/arguments.py sets accumulate_allreduce_grads_in_fp32 for bf16)"
    )
    assumptions.append(Assumption("training.grad_reduce_dtype", "fp32", why, ITERATION_FIGURES))
    return ["training.grad_reduce_dtype=fp32"]


def _bf16_parts(training: Mapping[str, Any]) -> list[str]:
    """The parts of an fp8 (or NVFP4) run kept in bf16, as Megatron-Core names them:
    ``first_last_layers_bf16`` with ``num_layers_at_start_in_bf16`` and
    ``num_layers_at_end_in_bf16`` (each 1 unstated, Megatron-Core's defaults),
    ``keep_mtp_spec_in_bf16``, and ``bf16_linears`` (a TE quantization recipe's bf16
    modules, by palmsim's op names)."""
    out = []
    if "first_last_layers_bf16" in training and _flag(training, "first_last_layers_bf16"):
        for key, name in (
            ("num_layers_at_start_in_bf16", "bf16_layers_at_start"),
            ("num_layers_at_end_in_bf16", "bf16_layers_at_end"),
        ):
            count = _int(training, key, f"training.{key}", minimum=0)
            out.append(f"training.{name}={1 if count is None else count}")
    if "keep_mtp_spec_in_bf16" in training and _flag(training, "keep_mtp_spec_in_bf16"):
        out.append("training.mtp_in_bf16=true")
    linears = _op_names(training, "bf16_linears")
    if linears:
        out.append("training.bf16_linears=" + ",".join(linears))
    return out


def _op_names(training: Mapping[str, Any], key: str) -> list[str]:
    """``training.<key>``, a list of palmsim op names (empty when absent).

    Raises:
        NotRun: anything but a list of strings.
    """
    names = training.get(key) or []
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise NotRun(f"training.{key}: got {names!r}; expected a list of op names")
    return names


def _optimizer(training: Mapping[str, Any]) -> tuple[str, bool]:
    """``training.optimizer``, the first optimizer its text names (unstated: Adam, what the
    runs of this format train with): ``(palmsim's optimizer, layer-wise distributed)``.

    Raises:
        NotRun: an optimizer palmsim does not model.
    """
    given = training.get("optimizer")
    if given is None:
        return "adam", False
    # the optimizer the text names first ("Adam (mixed precision)", "dist_muon")
    # the words that name its ZeRO sharding ("DeepSpeed ZeRO-3", read by _zero) name none
    text = _ZERO_TEXT.sub(" ", str(given).lower()).replace("deepspeed", " ")
    words = re.findall(r"[a-z0-9_]+", text)
    if not words:
        return "adam", False
    name = next((w for w in words if w in _OPTIMIZERS), words[0])
    if name not in _OPTIMIZERS:
        close = difflib.get_close_matches(name, list(_OPTIMIZERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NotRun(
            f"training.optimizer: got {given!r}; expected one of {', '.join(_OPTIMIZERS)}{hint}"
        )
    return _OPTIMIZERS[name]


#: Why a fused-attention (Megatron-Core / Transformer Engine) case that leaves sequence
#: parallelism, the distributed optimizer or the pipeline's send overlap unstated has them on:
#: NeMo's and Megatron-Bridge's training recipes set ``sequence_parallel`` with TP > 1 and
#: ``use_distributed_optimizer``; Megatron-LM's training arguments overlap an interleaved
#: pipeline's sends unless ``--no-overlap-p2p-communication`` is given.
_CORE_DEFAULT = "not stated: on, as the Megatron-Core (NeMo, Megatron-Bridge) recipes set it"

#: Why a Megatron-Core fp8 case with the distributed optimizer that leaves
#: ``fp8_param_gather`` unstated keeps its fp8 weights in fp8: NeMo's fp8 precision recipes
#: (nemo/collections/llm/recipes/precision/mixed_precision.py, ``fp8_params=True``) and
#: Megatron-Bridge's delayed, current-scaling and MXFP8 ones
#: (src/megatron/bridge/training/mixed_precision.py, ``fp8_param_gather = True``; its
#: blockwise recipe sets False; its NVFP4 one, ``bf16_with_nvfp4_mixed``, sets
#: ``fp4_param_gather = True``) turn it on; Megatron-Core allows it only with the
#: distributed optimizer or FSDP.
_FP8_PARAMS_WHY = (
    "not stated: on with the distributed optimizer, as NeMo's and Megatron-Bridge's fp8 "
    "recipes set it (fp8_params / fp8_param_gather, fp4_param_gather for NVFP4; off for "
    "blockwise scaling)"
)

#: Training systems a case may name (any text of its ``training`` or ``system``), with the
#: settings they run and the case does not restate. MegaScale (Jiang et al., NSDI 2024,
#: arXiv:2402.15627): Sec. 3.2 overlaps the TP/SP all-gathers and reduce-scatters with the
#: GEMMs next to them, the pipeline's sends and receives with compute (decoupled), the DP
#: reduce-scatter with the backward; Sec. 3.3 runs FlashAttention-2; Sec. 6 trains with
#: sequence parallelism in its comparison with Megatron-LM. Its parallel transformer block
#: (Sec. 3.1) is a model setting (:func:`_parallel_block`); its sliding-window attention
#: (Sec. 3.1) is not modelled, the paper giving no window.
_FRAMEWORK_SETTINGS: dict[str, dict[str, Any]] = {
    "megascale": {
        "sequence_parallel": True,
        "tp_comm_overlap": True,
        "overlap_p2p_comm": True,
        "overlap_grad_reduce": True,
        "attention": "flash",
    },
}
_FRAMEWORK_WHY = {
    "megascale": (
        "not stated: MegaScale's (NSDI 2024, Sec. 3.2-3.3: TP, pipeline and DP communication "
        "overlapped, FlashAttention-2; its sliding-window attention not modelled)"
    ),
}


#: Why a MegaScale case that leaves its transformer block unstated runs it parallel:
#: MegaScale adopts PaLM's parallel block in place of the serial one (Jiang et al., NSDI
#: 2024, Sec. 3.1, Eq. 2: ``y = x + MLP(LN(x)) + Attention(LN(x))``, one LN) and its Table 3
#: ablation ends at Table 2's 256-GPU figure (65.3%) with it on.
_MEGASCALE_BLOCK_WHY = (
    "not stated: MegaScale's parallel transformer block (NSDI 2024, Sec. 3.1, Eq. 2; its "
    "sliding-window attention, whose window the paper does not give, is not modelled)"
)


def _parallel_block(
    model: Mapping[str, Any], framework: str | None, assumptions: list[Assumption]
) -> str | None:
    """``model.parallel_block`` of a case: as stated
    (:func:`palmsim.tile_cases.stated_parallel_block`), MegaScale's 'one_norm' when a
    MegaScale case leaves it out (an assumption), else None (the workload's).

    Raises:
        NotRun: a value that is neither a block nor a yes/no.
    """
    value = model.get("parallel_block")
    if value is None:
        if framework == "megascale":
            assumptions.append(Assumption("model.parallel_block", "one_norm", _MEGASCALE_BLOCK_WHY))
            return "one_norm"
        return None
    try:
        return tile_cases.stated_parallel_block(value)
    except tile_cases.CannotExpressError as error:
        raise NotRun(str(error)) from None


def _framework(case: Mapping[str, Any]) -> str | None:
    """The training system of :data:`_FRAMEWORK_SETTINGS` the case names, or None: the texts
    of its ``training`` section decide, else those of its ``system``; a section that also
    names Megatron-LM (a baseline run beside such a system, as in MegaScale's Table 2) names
    none of them."""
    for section in ("training", "system"):
        texts = [str(v).lower() for v in _section(case, section).values() if isinstance(v, str)]
        if any(re.search(r"megatron[-_ ]?lm", t) for t in texts):
            return None
        named = next((f for f in _FRAMEWORK_SETTINGS if any(f in t for t in texts)), None)
        if named is not None:
            return named
    return None


def _with_framework(
    case: Mapping[str, Any], training: dict[str, Any], assumptions: list[Assumption]
) -> tuple[dict[str, Any], str | None]:
    """``training`` with the settings of the framework the case names where it does not state
    them, each recorded as an assumption; and the framework."""
    framework = _framework(case)
    if framework is None:
        return training, None
    out = dict(training)
    for key, value in _FRAMEWORK_SETTINGS[framework].items():
        # the userbuffers overlap works on sequence-parallel collectives: not without them
        without_sp = (
            key == "tp_comm_overlap"
            and out.get("sequence_parallel") is not None
            and not _flag(out, "sequence_parallel")
        )
        if key not in out and not without_sp:
            out[key] = value
            assumptions.append(Assumption(f"training.{key}", value, _FRAMEWORK_WHY[framework]))
    return out, framework


_ZERO_WHY = (
    "not stated: none (Megatron-LM's default), or the distributed optimizer where only that fits"
)


def _routing(training: Mapping[str, Any], assumptions: list[Assumption], *, moe: bool) -> list[str]:
    """Overrides of a mixture-of-experts case's routing: the token distribution over the
    experts (``training.expert_load``) and the capacity (``training.token_drop``,
    ``training.moe_capacity_factor``).

    ``expert_load: force-balanced`` (Megatron-Core ``--moe-router-force-load-balancing``, which
    the published MoE benchmarks use) is palmsim's ``multinomial``: it replaces the router's
    logits by standard-normal draws of a rank-specific seed (``apply_random_logits``,
    ``RandomSTE`` in megatron/core/transformer/moe/moe_utils.py), so every token takes k
    experts at random and each expert's count of a micro-batch varies about the mean, the
    busiest EP rank setting the pace; ``balanced`` and ``uniform`` are palmsim's ``uniform``
    (every expert exactly its share).
    ``token_drop: dropless`` is no capacity; ``tokendrop`` without a stated
    ``moe_capacity_factor`` takes 1.0 (Megatron-Core's ``--moe-expert-capacity-factor`` of the
    token-drop recipes), an assumption, which drops nothing under balanced routing.

    Raises:
        NotRun: a load or a drop policy palmsim does not model.
    """
    if not moe:
        return []
    out = []
    load = str(training.get("expert_load", "uniform")).lower()
    if load in {"balanced", "uniform"}:
        out.append("training.expert_load=uniform")
    elif load in {"force-balanced", "force_balanced", "multinomial"}:
        out.append("training.expert_load=multinomial")
    else:
        raise NotRun(
            f"training.expert_load: got {load!r}; expected force-balanced, uniform or multinomial"
        )
    factor = training.get("moe_capacity_factor")
    drop = str(training.get("token_drop", "dropless")).lower()
    if factor is not None:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            raise NotRun(f"training.moe_capacity_factor: got {factor!r}; expected a number > 0")
        out.append(f"training.moe_capacity_factor={float(factor)!r}")
    elif drop == "tokendrop":
        out.append("training.moe_capacity_factor=1.0")
        why = "token drop without a stated capacity factor: 1.0"
        assumptions.append(Assumption("training.moe_capacity_factor", 1.0, why))
    elif drop != "dropless":
        raise NotRun(f"training.token_drop: got {drop!r}; expected dropless or tokendrop")
    return out


#: NeMo container releases whose launcher runs every job with ``NVTE_FUSED_ATTN=0`` ("Disable
#: cudnn FA until we've tested it more": NVIDIA/NeMo-Framework-Launcher
#: launcher_scripts/conf/config.yaml ``env_vars``, added in 562dcb45 of 2024-02-13, in its tags
#: 24.01 to 24.07, removed in 04b8d098 of 2024-08-29 before 24.09), as (year, month) of the
#: first and last: Transformer Engine then runs flash-attn's FlashAttention-2 kernel, not
#: cuDNN's.
NEMO_FLASH_ATTN_RELEASES = ((24, 1), (24, 7))
#: A NeMo container release in a case's source ("NeMo 24.07", "NeMo24.03.01.framework",
#: "nvcr.io/nvidia/nemo:24.07", "NeMo Framework v24.05"), or as Megatron-Bridge's performance
#: summary names it, the release before the words ("26.04.01 NeMo Container").
_NEMO_RELEASE = re.compile(
    r"\bnemo[\s:_-]*(?:framework|container)?[\s:_-]*v?(\d{2})\.(\d{2})(?!\d)"
    r"|(?<![\d.])(\d{2})\.(\d{2})(?:\.\d{2})?\s+nemo\s+container\b",
    re.IGNORECASE,
)


def _nemo_release(case: Mapping[str, Any]) -> tuple[int, int] | None:
    """The NeMo container release (year, month) a case's ``source`` names, or None; None
    for an MLPerf submission too, which sets its own environment (the launcher's own MLPerf
    GPT-3 config, conf/training/gpt3/175b_mlperf.yaml, runs NVTE_FUSED_ATTN: 1)."""
    texts = [str(v) for v in _section(case, "source").values() if isinstance(v, str)]
    if any("mlperf" in t.lower() for t in texts):
        return None
    found = [
        (int(y or y2), int(m or m2)) for t in texts for y, m, y2, m2 in _NEMO_RELEASE.findall(t)
    ]
    return found[0] if found else None


def _attention(
    case: Mapping[str, Any],
    training: Mapping[str, Any],
    hw: HardwareSpec,
    assumptions: list[Assumption],
    *,
    fp8: bool,
) -> str:
    """The attention core (``training.attention_kernel``): ``fused``, ``flash2`` or
    ``unfused``.

    ``training.attention`` when given: ``flash`` (flash-attn's FlashAttention-2, e.g.
    MegaScale's), ``fused`` (``cudnn``, Transformer Engine's fused attention) or ``unfused``;
    an fp8 run is never unfused, since it runs in Transformer Engine's modules, whose
    DotProductAttention picks a fused kernel and falls back to the unfused one only where
    none supports the case (transformer_engine/pytorch/attention/dot_product_attention/
    utils.py, ``get_attention_backend``). Unstated:

    - a run of a NeMo release whose launcher turned cuDNN's kernel off
      (:data:`NEMO_FLASH_ATTN_RELEASES`) on a GPU with fp8 (Hopper on): ``flash2``;
    - an fp8 run: ``fused``, derived (cuDNN's kernel, which Transformer Engine prefers on
      Hopper and later);
    - fused on a GPU with an fp8 peak (its published runs are Megatron-Core / NeMo on
      Transformer Engine), else unfused (the A100 rows are Megatron-LM 2021-22);

    each but the derived one an assumption marked on the figures.

    Raises:
        NotRun: another value.
    """
    given = training.get("attention", training.get("attention_kernel"))
    if given is not None:
        text = str(given).lower()
        kernels = {"flash": "flash2", "flash2": "flash2", "fused": "fused", "cudnn": "fused"}
        if text in kernels:
            return kernels[text]
        if text == "unfused":
            return "fused" if fp8 else "unfused"
        raise NotRun(
            f"training.attention: got {given!r}; expected flash (flash2), fused (cudnn) or unfused"
        )
    hopper_on = "fp8" in dict(hw.tile.peak_flop_per_s)
    release = _nemo_release(case)
    first, last = NEMO_FLASH_ATTN_RELEASES
    if hopper_on and release is not None and first <= release <= last:
        why = (
            f"not stated: flash-attn's FlashAttention-2, as NeMo {release[0]}.{release[1]:02d}'s "
            "launcher runs every job with NVTE_FUSED_ATTN=0 (NeMo-Framework-Launcher "
            "conf/config.yaml, releases 24.01-24.07)"
        )
        assumptions.append(Assumption("training.attention", "flash2", why))
        return "flash2"
    if fp8:
        return "fused"
    if not hopper_on:
        return "unfused"
    why = "not stated: fused, as Transformer Engine runs it on a GPU with fp8 (Hopper on)"
    assumptions.append(Assumption("training.attention", "fused", why))
    return "fused"


def _hf_config_path(model: Mapping[str, Any], source: str) -> str | None:
    """A case's ``model.hf_config`` (a Hugging Face ``config.json``, relative to the
    measurements file or the checkout), or None."""
    given = model.get("hf_config")
    if given is None:
        return None
    beside = Path(source).parent / str(given)
    return str(beside) if beside.exists() else shipped(str(given))


def _workload(model: Mapping[str, Any], arch: str, source: str) -> str:
    """The workload a case's model overrides: its ``model.hf_config`` if given, else the
    base workload of its architecture family."""
    return _hf_config_path(model, source) or shipped(_BASE_WORKLOAD[arch])


#: A case's model keys (``model.``) and the Hugging Face ``config.json`` key (as palmsim's
#: :class:`ModelSpec` names it) each takes when the case gives its ``hf_config`` only.
_HF_CASE_KEYS = {
    "hidden": "hidden_size",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "layers": "num_hidden_layers",
    "ffn": "intermediate_size",
    "vocab": "vocab_size",
    **_MOE_KEYS,
}


def _with_hf_config(model: dict[str, Any], source: str) -> dict[str, Any]:
    """``model`` with each shape key it leaves out (:data:`_HF_CASE_KEYS`) taken from its
    ``hf_config``, the model the case names: the case's own keys win. The sequence length is
    the run's, never the config's ``max_position_embeddings``.

    Raises:
        NotRun: the config cannot be read.
    """
    path = _hf_config_path(model, source)
    if path is None:
        return model
    try:
        raw, _ = hf_to_model(read_config_file(path), path)
    except (OSError, ValueError, PalmsimError) as error:
        raise NotRun(f"model.hf_config: {path} cannot be read ({_one_line(error)})") from None
    given = {key: raw[name] for key, name in _HF_CASE_KEYS.items() if raw.get(name) is not None}
    return {**given, **{k: v for k, v in model.items() if v is not None}}


def _hardware(system: Mapping[str, Any], source: str) -> tuple[str, str]:
    """(config path, how it was chosen): ``system.hw_config`` (relative to the measurements
    file, or the working directory), else the shipped config of the GPU family
    ``system.gpu`` names.

    Raises:
        NotRun: no config given and no known family in ``system.gpu``.
    """
    given = system.get("hw_config")
    if given is not None:
        beside = Path(source).parent / str(given)
        path = str(beside) if beside.exists() else shipped(str(given))
        return path, "system.hw_config"
    gpu = str(system.get("gpu") or "")
    if not gpu:
        raise NotRun(
            "system.gpu: missing or null; expected a GPU family ("
            + ", ".join(HARDWARE_OF_GPU)
            + ") or a config in system.hw_config"
        )
    if _PCIE_CARD.search(gpu):
        raise NotRun(
            f"system.gpu: got {gpu!r}, a PCIe card (its own clocks and power, no NVSwitch); "
            "the shipped GPU configs are SXM modules: give one as system.hw_config"
        )
    # a system's or a count's prefix run into the name: "DGXH100", "8xH100-SXM5-80GB"
    named = re.sub(r"(?i)(?<![a-z0-9])(dgx|hgx|\d+\s*x)(?=[a-z]+\d)", r"\1 ", gpu)
    for family, path in HARDWARE_OF_GPU.items():
        if re.search(rf"(?<![a-z0-9]){family}(?![0-9])", named, flags=re.IGNORECASE):
            # "an A100", "an H100", "a B200": the article of the letter's spoken name
            article = "an" if family[0] in "AEFHILMNORSX" else "a"
            return _on_cluster(system, family, path, f"system.gpu {gpu!r} is {article} {family}")
    for architecture, family in GPU_OF_ARCHITECTURE.items():
        if re.search(rf"\b{architecture}\b", gpu, flags=re.IGNORECASE):
            why = (
                f"system.gpu {gpu!r} names the {architecture} architecture, taken as its "
                f"data-centre training GPU, the {family}"
            )
            return _on_cluster(system, family, HARDWARE_OF_GPU[family], why)
    raise NotRun(
        f"system.gpu: got {gpu!r}; no shipped config for it (known families: "
        f"{', '.join(HARDWARE_OF_GPU)}); give one as system.hw_config"
    )


def _on_cluster(system: Mapping[str, Any], family: str, path: str, why: str) -> tuple[str, str]:
    """The config of the named cluster of ``family`` that ``system.interconnect`` names
    (:data:`HARDWARE_OF_CLUSTER`), else ``path``, the family's."""
    text = str(system.get("interconnect") or "")
    for cluster, (of, cluster_path) in HARDWARE_OF_CLUSTER.items():
        if of == family and re.search(rf"\b{cluster}\b", text, flags=re.IGNORECASE):
            return shipped(cluster_path), f"{why}, on {cluster} (system.interconnect)"
    return shipped(path), why


#: A GPU's memory as a case names it: "A100-SXM4-40GB", "A100 40 GB", "H100 94GB".
_GPU_MEMORY = re.compile(r"(\d+)\s*GB", re.IGNORECASE)


def _gpu_memory(
    system: Mapping[str, Any], hw_spec: HardwareSpec, assumptions: list[Assumption]
) -> list[str]:
    """The override giving each GPU the memory ``system.gpu`` names where it differs from the
    config's (an A100-SXM4-40GB run on the 80 GB part's config): what fits, and so the
    recompute and sharding a case runs with, follows the case's GPU. Its bandwidths and
    kernel rates stay the config's, an assumption on every iteration figure."""
    if hw_spec.cluster is None or system.get("hw_config") is not None:
        return []
    match = _GPU_MEMORY.search(str(system.get("gpu") or ""))
    if match is None:
        return []
    stated_bytes = int(match.group(1)) * 1e9
    if abs(stated_bytes - hw_spec.dram.capacity_bytes) <= 1e9:
        return []
    why = (
        f"the case's GPU memory; its HBM bandwidth and kernel rates are the config's "
        f"{hw_spec.dram.capacity_bytes / 1e9:g} GB part's"
    )
    value = f"{match.group(1)} GB"
    assumptions.append(Assumption("hw.dram.capacity", value, why, ITERATION_FIGURES))
    return [f"hw.dram.capacity={value}"]


#: A NIC rate as ``system.interconnect`` states it, in bits (Gb/s: never the bytes, GB/s, of
#: NVLink figures), with the count of NICs before it where given: "8x HDR 200 Gb/s InfiniBand
#: per node", "InfiniBand 8x400 Gbit/s", "4 Omni-Path 100 Gbps links per node", "RoCE, 400
#: Gbps per GPU".
_NIC_RATE = re.compile(
    r"(?:(?P<count>\d+)(?:\s*[x\u00d7]\s*|\s+)(?:[A-Za-z][\w-]*\s+){0,3})?"
    r"(?<![\d.])(?P<rate>\d+(?:\.\d+)?)\s*(?:Gb/s|Gbps|Gbit/s)(?P<rest>[^,;(]*)"
)


def _nic_rate(
    system: Mapping[str, Any], hw_spec: HardwareSpec, assumptions: list[Assumption]
) -> list[str]:
    """The override giving each GPU the NIC rate ``system.interconnect`` states where it
    differs from the config's line rate (Llama 3's RoCE at 400 Gb/s a GPU, Jean Zay's four
    100 Gb/s links a node, on the A100 config's 200 Gb/s): its rate "per GPU", or the
    NICs of a node ("per node", or as many as the node's GPUs) shared by its GPUs. The
    fabric's share of it stays the config's measured ``system.node_link.efficiency``, an
    assumption on every iteration figure; a rate stated otherwise leaves the config's."""
    cluster = hw_spec.cluster
    if cluster is None or system.get("hw_config") is not None:
        return []
    match = _NIC_RATE.search(str(system.get("interconnect") or ""))
    if match is None:
        return []
    rate, rest = float(match.group("rate")), match.group("rest").lower()
    count = int(match.group("count") or 0)
    if "per gpu" in rest:
        per_gpu, how = rate, f"{rate:g} Gb/s a GPU"
    elif count and ("per node" in rest or count == cluster.devices_per_node):
        per_gpu = count * rate / cluster.devices_per_node
        how = f"{count} x {rate:g} Gb/s a node over its {cluster.devices_per_node} GPUs"
    else:
        return []
    line_gbps = cluster.inter_node.bandwidth_bytes_per_s * 8 / 1e9
    if per_gpu <= 0 or abs(per_gpu - line_gbps) <= 0.01 * line_gbps:
        return []
    value = f"{per_gpu:g} Gb/s"
    why = (
        f"the case's NICs ({how}) in place of the config's {line_gbps:g} Gb/s, at the "
        f"config's measured share of line rate ({cluster.inter_node_efficiency:g}, "
        "system.node_link.efficiency)"
    )
    assumptions.append(Assumption("hw.system.node_link.bandwidth", value, why, ITERATION_FIGURES))
    return [f"hw.system.node_link.bandwidth={value}"]


def _is_training_run(case: Mapping[str, Any]) -> bool:
    if not isinstance(case.get("model"), Mapping) or not isinstance(case.get("system"), Mapping):
        return False
    try:
        system = _section(case, "system")  # under any of its keys' names
    except NotRun:
        return True  # a training run whose system its reader refuses, saying why
    return any(k in system for k in ("tp", "pp", "dp", "num_gpus"))


#: A model named with its multi-token-prediction module ("DeepSeekV3 (w/ MTP)", as
#: Megatron-Bridge's tables write it), not without it ("w/o MTP").
_MTP = re.compile(r"(?<![a-z/])(?:w/\s*|with\s+)mtp\b", re.IGNORECASE)

#: Low-rank adaptation (LoRA, QLoRA): frozen weights with small trained adapters, named in a
#: case's id, model or training text (MLPerf's and Megatron-Bridge's "LoRA" fine-tuning rows).
_LORA = re.compile(r"(?<![a-z])q?lora(?![a-z])", re.IGNORECASE)


def _offloading(case: Mapping[str, Any]) -> str | None:
    """The ``training``/``system`` key that turns CPU offloading on (a key naming
    "offload" with a value other than 0, false, none or off; Megatron-Core's
    ``--cpu-offloading-num-layers``, Megatron-Bridge's ``cpu_offloading_num_layers``), or a
    text of theirs naming DeepSpeed's offloading ZeRO (ZeRO-Offload, ZeRO-Infinity)."""
    for section in ("training", "system"):
        for key, value in _section(case, section).items():
            if "offload" in str(key).lower() and str(value).strip().lower() not in _OFF_VALUES:
                return f"{section}.{key}: {value}"
            if isinstance(value, str) and _OFFLOADING_ZERO.search(value):
                return f"{section}.{key}: {value}"
    return None


#: DeepSpeed's ZeRO variants that keep state in CPU or NVMe memory (Ren et al., ZeRO-Offload,
#: USENIX ATC 2021; Rajbhandari et al., ZeRO-Infinity, SC21).
_OFFLOADING_ZERO = re.compile(r"zero[\s_-]*(?:offload|infinity)", re.IGNORECASE)


_OFF_VALUES = frozenset({"0", "false", "none", "null", "off", "no", ""})


#: The LoRA rank where a LoRA case states none: Megatron-Bridge's ``LoRA.dim`` default
#: (src/megatron/bridge/peft/lora.py).
DEFAULT_LORA_RANK = 32


def _lora_overrides(
    case: Mapping[str, Any], training: Mapping[str, Any], assumptions: list[Assumption]
) -> list[str]:
    """A LoRA fine-tuning case (:func:`_lora`): ``training.lora_rank`` (or ``lora_dim``;
    unstated, Megatron-Bridge's default, marked) and ``lora_targets`` (palmsim's op names;
    unstated, Megatron-Bridge's default target modules). Not LoRA: nothing."""
    named = _lora(case)
    if named is None:
        return []
    if re.search(r"qlora", named, re.IGNORECASE):
        raise NotRun(
            f"QLoRA fine-tuning ({named!r}): frozen weights held in 4-bit and dequantized for "
            "each GEMM are not modelled"
        )
    rank = _int(training, "lora_rank", "training.lora_rank") or _int(
        training, "lora_dim", "training.lora_dim"
    )
    if rank is None:
        rank = DEFAULT_LORA_RANK
        why = "not stated: Megatron-Bridge's LoRA default dim (peft/lora.py)"
        assumptions.append(Assumption("training.lora_rank", rank, why))
    out = [f"training.lora_rank={rank}"]
    targets = _op_names(training, "lora_targets")
    if targets:
        out.append("training.lora_targets=" + ",".join(targets))
    return out


#: The NeMo releases whose launcher fine-tunes (SFT and PEFT) with conf/peft/llama/sft.yaml
#: (NeMo-Framework-Launcher, from 2d77a1b6 of 2024-01-18, tags 24.01 to 24.09): Apex's
#: distributed Adam at ``optim.dtype: bf16`` (``distributed_fused_adam``; 24.12 moved to
#: ``mcore_distributed_optim``), ``sequence_parallel: False``.
NEMO_LAUNCHER_FINETUNE_RELEASES = ((24, 1), (24, 9))
_PEFT_CONF = "NeMo-Framework-Launcher conf/peft/llama/sft.yaml"

#: Supervised fine-tuning named in a case's id or training text.
_SFT = re.compile(r"(?<![a-z])sft(?![a-z])", re.IGNORECASE)


def _nemo_launcher_finetune(case: Mapping[str, Any]) -> str | None:
    """The release ("24.07") of a fine-tuning row (SFT or LoRA in its id or training text)
    whose source names a NeMo release of :data:`NEMO_LAUNCHER_FINETUNE_RELEASES`; None
    otherwise."""
    release = _nemo_release(case)
    first, last = NEMO_LAUNCHER_FINETUNE_RELEASES
    if release is None or not first <= release <= last:
        return None
    texts = [str(case.get("id", ""))] + [f"{k}: {v}" for k, v in _section(case, "training").items()]
    if not (_lora(case) or any(_SFT.search(t) for t in texts)):
        return None
    return f"{release[0]}.{release[1]:02d}"


def _nemo_sft_optimizer(
    case: Mapping[str, Any],
    training: Mapping[str, Any],
    fp8_params: bool,
    assumptions: list[Assumption],
) -> list[str]:
    """The optimizer state of a NeMo launcher-era SFT row (:func:`_nemo_launcher_finetune`,
    not LoRA, whose adapters' state is negligible) that states none: Adam's moments in bf16
    and, with fp8 weights, a bf16 master copy (NeMo's ``store_params``), else none
    (megatron_base_model.py: no copy when the optimizer's dtype is the model's); marked."""
    if any(training.get(k) is not None for ks in _OPTIMIZER_DTYPE_KEYS.values() for k in ks):
        return []
    release = _nemo_launcher_finetune(case)
    if release is None or _lora(case):
        return []
    master = "bf16" if fp8_params else "none"
    why = (
        f"not stated: NeMo {release}'s launcher fine-tunes with Apex's distributed Adam at "
        f"optim.dtype bf16 ({_PEFT_CONF})"
    )
    assumptions.append(Assumption("training.optimizer_state_dtype", "bf16", why))
    assumptions.append(Assumption("training.master_weights_dtype", master, why))
    return ["training.optimizer_state_dtype=bf16", f"training.master_weights_dtype={master}"]


#: Packed fine-tuning data, as a case's id, ``model`` or ``training`` text names it ("inputs
#: packed to 4096 tokens", "Packed Sequence Length", "squad_packed").
_PACKED = re.compile(r"(?<![a-z])(?:packed|packing)(?![a-z])", re.IGNORECASE)
_SQUAD = re.compile(r"(?<![a-z])squad", re.IGNORECASE)

#: SQuAD v1.1 examples' attention-weighted length ``E[L²]/E[L]`` [tokens], as NeMo's
#: fine-tuning table counts their attention: its model TFLOP/s over its tokens/s leave
#: 1.94e8 FLOP per token beyond the dense layers' 6N for Llama 2 7B and 2.94e8 for 13B, which
#: NeMo's formula counts as ``12·L·h·l`` (the full-square convention of its pre-training rows),
#: L = 123 and 120 (NVIDIA/NeMo docs/source/performance/performance_summary.md @4c73f77670;
#: validation/nemo_runs.yaml).
SQUAD_DOCUMENT_TOKENS = 120


def _packed_documents(
    case: Mapping[str, Any],
    training: Mapping[str, Any],
    kernel: str,
    assumptions: list[Assumption],
) -> int | None:
    """``training.packed_document_tokens`` of a case: as stated; unstated, for packed data
    (:data:`_PACKED` in its id, ``model`` or ``training`` text) of SQuAD examples,
    :data:`SQUAD_DOCUMENT_TOKENS`, marked; packed data of another or no named dataset, or
    on the unfused core (which takes no packed sequences), attended over the whole row,
    marked as such. None: one document per sequence."""
    stated = _int(training, "packed_document_tokens", "training.packed_document_tokens")
    if stated is not None:
        return stated
    texts = [str(case.get("id", ""))]
    for section in ("model", "training"):
        texts += [f"{k}: {v}" for k, v in _section(case, section).items()]
    if not any(_PACKED.search(t) for t in texts):
        return None
    key = "training.packed_document_tokens"
    if kernel != "unfused" and any(_SQUAD.search(t) for t in texts):
        why = (
            "not stated: packed SQuAD examples, their attention-weighted length as NeMo's "
            "fine-tuning table counts it"
        )
        assumptions.append(Assumption(key, SQUAD_DOCUMENT_TOKENS, why, ITERATION_FIGURES))
        return SQUAD_DOCUMENT_TOKENS
    why = "packed data of unstated length: attended over the whole row, an upper bound"
    assumptions.append(Assumption(key, "the sequence", why, ITERATION_FIGURES))
    return None


def _lora(case: Mapping[str, Any]) -> str | None:
    """The text that names LoRA fine-tuning in the case's id, ``model`` or ``training``."""
    texts = [str(case.get("id", ""))]
    for section in ("model", "training"):
        texts += [f"{k}: {v}" for k, v in _section(case, section).items()]
    return next((t for t in texts if _LORA.search(t)), None)


#: An NVL72 rack (GB200, GB300): one NVLink domain of 72 GPUs in 18 compute trays of 4
#: (validation/blackwell_hw_specs.yaml nvidia_gb200_nvl72.rack: gpus_per_nvlink_domain,
#: compute_trays, gpus_per_compute_tray; the DGX GB200 user guide).
NVL72_GPUS, NVL72_TRAYS, NVL72_TRAY_GPUS = 72, 18, 4


def _nvl72_segments(system: Mapping[str, Any], num_gpus: int, assumptions: list[Assumption]) -> str:
    """``hw.system.chips`` of a run on NVL72 racks: ``[domains, GPUs per domain]``.

    A job of at most 18 trays (72 GPUs) runs in one rack. A larger one is placed as
    Megatron-Bridge's launcher places it: in equal segments of the largest whole number of
    trays up to 18 that divides its trays, each segment in one NVLink domain
    (scripts/performance/utils/executors.py, r0.2.0: sbatch ``--segment`` when 4 GPUs per
    node and more than 18 nodes), so 256 GPUs are 4 racks of 64. ``system.nodes`` counts
    trays when it times 4 is ``num_gpus``, racks when it times 72 covers it.
    """
    trays = -(-num_gpus // NVL72_TRAY_GPUS)
    nodes = _int(system, "nodes", "system.nodes")
    if nodes is not None and nodes * NVL72_TRAY_GPUS != num_gpus:
        if nodes * NVL72_GPUS < num_gpus:
            raise NotRun(
                f"system.nodes = {nodes} is neither {num_gpus} GPUs' trays of "
                f"{NVL72_TRAY_GPUS} nor racks of {NVL72_GPUS} holding them"
            )
        return f"hw.system.chips=[{nodes}, {NVL72_GPUS}]"  # racks, as stated
    if trays <= NVL72_TRAYS:
        return f"hw.system.chips=[1, {NVL72_GPUS}]"
    segment = next(d for d in range(NVL72_TRAYS, 0, -1) if trays % d == 0)
    domains, per_domain = trays // segment, segment * NVL72_TRAY_GPUS
    assumptions.append(
        Assumption(
            "hw.system.chips",
            f"[{domains}, {per_domain}]",
            f"{trays} trays of {NVL72_TRAY_GPUS} GPUs in segments of {segment} per NVLink "
            "domain, as Megatron-Bridge's launcher places a job beyond one rack",
        )
    )
    return f"hw.system.chips=[{domains}, {per_domain}]"


@CASE_READERS.register("training_run")
def read_training_run(case: Mapping[str, Any], source: str) -> CaseRun | None:
    """A training-run case (``model``, ``system``, ``training``, ``measured``) as a
    :class:`CaseRun`; None for a case of another kind.

    Required: ``model.hidden``, ``heads``, ``layers``, ``seq_len``, ``ffn`` (except for GPT,
    where it is 4·hidden), a GPU family or ``system.hw_config``, and ``measured``. Derived:
    ``system.num_gpus`` = tp·pp·dp (or dp = num_gpus / (tp·pp)), ``system.nodes`` = num_gpus
    over the config's GPUs per node, rounded up. Unstated settings take these defaults, each
    recorded as an :class:`Assumption`: tp and pp 1, micro-batch 1, global batch one
    micro-batch per replica, vocabulary the base workload's, precision fp16, sequence
    parallelism off, no distributed optimizer, and the least recompute that fits (none, then
    selective, then full). ``training.zero_stage`` (or ``training.fsdp`` > 0: 3) sets ZeRO.
    fp8 runs as Transformer Engine does (``training.dtype: fp8``; the recipe from the
    precision, delayed scaling when unstated; TE's fused attention; with the distributed
    optimizer its fp8 weights kept in fp8, ``training.fp8_param_gather``, unless stated off
    or blockwise: :data:`_FP8_PARAMS_WHY`). ``system.cp`` and
    ``system.ep`` set context and expert parallelism (num_gpus = tp·pp·cp·dp), ``system.etp``
    (or ``expert_tensor_parallel``) the experts' tensor parallelism, tp when unstated as in
    Megatron-Core (etp·ep divides tp·dp·cp: MoE parallel folding);
    ``system.virtual_pipeline_stages`` the model chunks per stage (or Megatron-LM's
    ``num_layers_per_virtual_pipeline_stage``: :func:`_virtual_stages`). A mixture of experts:
    ``model.num_experts``, ``top_k``, ``moe_ffn``, ``shared_experts``, ``first_dense_layers``
    (``head_dim`` an explicit head width), over ``model.hf_config`` (a Hugging Face
    ``config.json``) when given; routing by :func:`_routing`. The TP and DP overlaps follow
    the run's software (:func:`_tp_overlap`, :func:`_dp_overlap`); a training system named in
    ``training`` or ``system`` brings its settings (:data:`_FRAMEWORK_SETTINGS`). LoRA rows
    and the architectures :func:`unmodelled_architecture` names are not run, saying why.

    Raises:
        NotRun: the case is a training run palmsim cannot express (message says why).
    """
    if not _is_training_run(case):
        return None
    model, system = _section(case, "model"), _section(case, "system")
    training, measured = _section(case, "training"), _canonical_figures(_section(case, "measured"))
    assumptions: list[Assumption] = []
    training, framework = _with_framework(case, training, assumptions)
    if not measured:
        raise NotRun("measured: missing or empty; nothing to compare")
    dtype, stated = _precision(training)
    if not stated:
        assumptions.append(Assumption("training.precision", dtype, "not stated"))
    fp8_recipe = _fp8_recipe(case, training) if dtype == "fp8" else None
    if fp8_recipe is not None and fp8_recipe[1] is not None:
        assumptions.append(fp8_recipe[1])
    lora = _lora_overrides(case, training, assumptions)
    offload = _offloading(case)
    if offload is not None:
        raise NotRun(
            f"CPU offloading ({offload}): moving weights or activations to host memory over "
            "PCIe/C2C is not modelled"
        )
    model = _with_hf_config(model, source)
    arch = _architecture(model)
    mtp_depths = _int(training, "mtp_num_layers", "training.mtp_num_layers", minimum=0)
    if mtp_depths is None and _MTP.search(f"{model.get('arch') or ''} {model.get('name') or ''}"):
        # named by the case ("w/ MTP") without its depths: the model's MTP blocks, each once
        mtp_depths = 1
        why = (
            "named by the case without its depths: one, the model's MTP block once "
            "(Megatron-Core --mtp-num-layers; DeepSeek-V3 Sec. 2.2 trains one depth)"
        )
        assumptions.append(Assumption("training.mtp_num_layers", 1, why))
    hidden = _required(model, "hidden", "model.hidden")
    heads = _required(model, "heads", "model.heads")
    layers = _required(model, "layers", "model.layers")
    seq_len = _required(model, "seq_len", "model.seq_len")
    ffn = _int(model, "ffn", "model.ffn")
    if ffn is None and arch not in _FFN_FROM_BASE:
        if arch not in _FFN_PER_HIDDEN:
            raise NotRun(
                f"model.ffn: missing or null; a {arch} model has no default FFN size (its "
                "gated MLP's is chosen per model): give model.ffn"
            )
        ffn = _FFN_PER_HIDDEN[arch] * hidden
    tp, pp = _int(system, "tp", "system.tp"), _int(system, "pp", "system.pp")
    for key, value in (("tp", tp), ("pp", pp)):
        if value is None:
            assumptions.append(Assumption(f"system.{key}", 1, "not stated"))
    tp, pp = tp or 1, pp or 1
    # Megatron-Core's grid: tp·cp·pp·dp GPUs; the experts' ETP x EP x EDP groups fold over
    # the tp·cp·dp ranks of a stage (``parallel_state.initialize_model_parallel``: EDP =
    # tp·cp·dp/(etp·ep)), so ep adds no GPUs.
    cp = _int(system, "cp", "system.cp") or 1
    ep = _int(system, "ep", "system.ep") or 1
    etp = _expert_tp(system)
    model_parallel = tp * pp * cp
    dp = _int(system, "dp", "system.dp")
    num_gpus = _int(system, "num_gpus", "system.num_gpus")
    if dp is None:
        if num_gpus is None:
            dp = 1
            assumptions.append(Assumption("system.dp", 1, "neither dp nor num_gpus stated"))
        elif num_gpus % model_parallel:
            raise NotRun(
                f"system.num_gpus = {num_gpus} is not a multiple of tp·pp·cp = {model_parallel}"
            )
        else:
            dp = num_gpus // model_parallel
    if num_gpus is None:
        num_gpus = model_parallel * dp
    elif num_gpus != model_parallel * dp:
        raise NotRun(
            f"system.num_gpus = {num_gpus} but tp·pp·cp·dp = {tp}·{pp}·{cp}·{dp} = "
            f"{model_parallel * dp}"
        )
    if (tp * dp * cp) % ((etp or tp) * ep):
        raise NotRun(
            f"expert_tp·ep = {etp or tp}·{ep} does not divide tp·dp·cp = {tp * dp * cp}"
            + (
                " (expert_tp not stated: tp, Megatron-Core's default; give system.etp)"
                if etp is None
                else ""
            )
        )
    micro_batch = _int(model, "micro_batch", "model.micro_batch")
    if micro_batch is None:
        micro_batch = DEFAULT_MICRO_BATCH
        assumptions.append(Assumption("model.micro_batch", micro_batch, "not stated"))
    global_batch = _int(model, "global_batch", "model.global_batch")
    if global_batch is None:
        global_batch = micro_batch * dp
        assumptions.append(
            Assumption(
                "model.global_batch",
                global_batch,
                "not stated: one micro-batch per replica",
                ITERATION_FIGURES,
            )
        )
    iterations = _train_iterations(training, global_batch, seq_len)
    evaluation = _evaluation(training)
    if iterations is not None and "time_to_train_s" in measured:
        rule = "iterations x iteration time"
        why = (
            "its iterations times the iteration time: evaluation, checkpoints and start-up "
            "are not simulated"
        )
        if evaluation is not None:
            rule += " + evaluations x forward pass"
            why = (
                "its iterations times the iteration time, and its evaluations, each a "
                "forward-only pass over training.eval_samples: checkpoints and start-up are "
                "not simulated"
            )
        assumptions.append(Assumption("time_to_train", rule, why, ("time_to_train_s",)))
    hardware, hardware_why = _hardware(system, source)
    try:
        hw_spec = load_hardware(hardware)
    except ConfigError as error:
        raise NotRun(f"its hardware config: {_one_line(error)}") from None
    # the config's own assumptions (parameters no measurement of that hardware gives); one
    # on a number format's peak or efficiency only where the run computes in that format
    formats = {dtype, "bf16"} | ({FP8_SCALING[fp8_recipe[0]].gemm_dtype} if fp8_recipe else set())
    assumptions += [
        Assumption(f"hw.{key}", value if isinstance(value, str | int | float) else str(value), why)
        for key, value, why in hardware_assumptions(hardware)
        if not key.startswith(_FORMAT_KEYS) or key.rsplit(".", 1)[1] in formats
    ]
    overrides: list[str] = []
    if hw_spec.cluster is not None and hw_spec.cluster.devices_per_node == NVL72_GPUS:
        overrides.append(_nvl72_segments(system, num_gpus, assumptions))
    elif hw_spec.cluster is not None:
        per_node = hw_spec.cluster.devices_per_node
        nodes = _int(system, "nodes", "system.nodes")
        if nodes is None:
            nodes = -(-num_gpus // per_node)  # derived: whole nodes for num_gpus GPUs
        elif nodes * per_node < num_gpus:
            raise NotRun(
                f"system.nodes = {nodes} hold {nodes * per_node} GPUs of {per_node} per node "
                f"({hardware}), fewer than num_gpus = {num_gpus}"
            )
        overrides.append(f"hw.system.chips=[{nodes}, {per_node}]")
    elif hw_spec.num_tiles < num_gpus:
        raise NotRun(f"{hardware} has {hw_spec.num_tiles} tiles, fewer than num_gpus = {num_gpus}")
    overrides += _gpu_memory(system, hw_spec, assumptions)
    overrides += _nic_rate(system, hw_spec, assumptions)
    vocab = _int(model, "vocab", "model.vocab")
    if vocab is None:
        base = _BASE_WORKLOAD[arch]
        assumptions.append(Assumption("model.vocab", f"{base}'s", "not stated", ITERATION_FIGURES))
    kv_heads = _int(model, "kv_heads", "model.kv_heads")
    if kv_heads is None and arch in (*_FFN_FROM_BASE, "gpt-oss"):
        # a family named after one model: its grouped-query attention's KV heads
        base = _BASE_WORKLOAD[arch]
        assumptions.append(Assumption("model.kv_heads", f"{base}'s", "not stated"))
    elif kv_heads is None:
        if arch not in ("gpt", *_LATENT_ATTENTION):
            why = "not stated: multi-head attention"
            assumptions.append(Assumption("model.kv_heads", heads, why))
        kv_heads = heads  # GPT's multi-head attention; latent attention's, derived
    shapes = {
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "vocab_size": vocab,
        "max_position_embeddings": seq_len,
    }
    for key, name in _MOE_KEYS.items():
        shapes[name] = _int(model, key, f"model.{key}", minimum=0)
    layout = _moe_layer_freq(model, layers)
    if layout is not None:
        for name, value in zip(("first_k_dense_replace", "moe_layer_step"), layout, strict=True):
            if shapes[name] is not None and shapes[name] != value:
                raise NotRun(
                    f"model.moe_layer_freq places the experts as {name} = {value}, the case "
                    f"states {shapes[name]}"
                )
            shapes[name] = value
    if not shapes["num_experts"] and arch in _DENSE_FAMILIES:
        named = f"{model.get('arch') or ''} {model.get('name') or ''}"
        give = "give model.num_experts and model.top_k (or model.hf_config)"
        if ep > 1:
            raise NotRun(f"system.ep = {ep} but the model has no experts: {give}")
        if _MOE_NAME.search(named):
            raise NotRun(f"{named.strip()!r} names a mixture of experts: {give}")
    overrides += [f"model.{k}={v}" for k, v in shapes.items() if v is not None]
    block = _parallel_block(model, framework, assumptions)
    if block is not None:
        overrides.append(f"model.parallel_block={block}")
    if arch == "gpt-oss" and model.get("hf_config") is None:
        pattern = ", ".join(_GPT_OSS_LAYER_TYPES[i % 2] for i in range(layers))
        overrides.append(f"model.layer_types=[{pattern}]")
    overrides += [
        f"training.seq_len={seq_len}",
        f"training.global_batch_size={global_batch}",
        f"training.dtype={dtype}",
    ]
    if mtp_depths:
        overrides.append(f"training.mtp_depths={mtp_depths}")
    overrides += _bf16_parts(training)
    overrides += lora
    overrides += _routing(training, assumptions, moe=bool(shapes["num_experts"]))
    if fp8_recipe is not None:
        overrides.append(f"training.fp8_recipe={fp8_recipe[0]}")
    kernel = _attention(case, training, hw_spec, assumptions, fp8=fp8_recipe is not None)
    overrides.append(f"training.attention_kernel={kernel}")
    document = _packed_documents(case, training, kernel, assumptions)
    if document is not None:
        overrides.append(f"training.packed_document_tokens={document}")
    # Fused attention is the Megatron-Core / Transformer Engine stack: its recipes' settings
    # stand for what such a case leaves unstated (see _CORE_DEFAULT), each an assumption.
    core = kernel != "unfused"
    sequence_parallel = _sequence_parallel(training)
    if sequence_parallel is None and _distribute_checkpoints(training):
        # derived: Megatron-LM refuses distributed checkpoints with sequence parallelism
        # (TransformerConfig: "distribute_saved_activations ... must be false when sequence
        # parallel is enabled"), as metaseq does
        sequence_parallel = False
    if sequence_parallel is None:
        # Megatron-Core refuses MoE with tensor parallelism without sequence parallelism
        # (megatron/training/arguments.py: "When using MoE and tensor parallelism, sequence
        # parallelism must be used"), so there it is derived.
        sequence_parallel = bool(shapes["num_experts"]) and tp > 1
        if tp > 1 and not sequence_parallel:  # without TP there is nothing to split
            launcher = _nemo_launcher_finetune(case)
            sequence_parallel = core and launcher is None
            why = _CORE_DEFAULT if core else "not stated"
            if launcher is not None:
                why = f"not stated: off, NeMo {launcher}'s fine-tuning default ({_PEFT_CONF})"
            assumptions.append(Assumption("training.sequence_parallel", sequence_parallel, why))
    optimizer, layer_wise = _optimizer(training)
    if optimizer != "adam":
        overrides.append(f"training.optimizer={optimizer}")
    overrides += _optimizer_dtypes(training)
    overrides += _grad_reduce_dtype(training) or _megatron_lm_grad_reduce(case, dtype, assumptions)
    zero, zero_assumed = (1, None) if layer_wise else _zero(training, dp * cp)
    if zero_assumed is not None and core:
        zero, zero_assumed = 1, None
        assumptions.append(
            Assumption("training.distributed_optimizer", True, _CORE_DEFAULT, ITERATION_FIGURES)
        )
    fp8_params = False
    if fp8_recipe is not None:
        fp8_params = core and zero in (1, 2) and fp8_recipe[0] != "blockwise"
        if "fp8_param_gather" in training or fp8_params:
            fp8_params = _flag_or_assumed(
                training, "fp8_param_gather", fp8_params, _FP8_PARAMS_WHY, assumptions
            )
        if fp8_params:
            overrides.append("training.fp8_param_gather=true")
        # Megatron-Core's disable_parameter_transpose_cache: TE re-casts the fp8 weights
        # every micro-batch and keeps no copies (training.fp8_transpose_cache)
        if training.get("disable_parameter_transpose_cache") is not None and _flag(
            training, "disable_parameter_transpose_cache"
        ):
            overrides.append("training.fp8_transpose_cache=false")
    overrides += _nemo_sft_optimizer(case, training, fp8_params, assumptions)
    recompute = _recompute(training)
    modules = _recompute_modules(training)
    if modules:
        if recompute not in (None, "selective"):
            raise NotRun(
                f"training.recompute_modules {list(modules)} with activation_recompute "
                f"{recompute}: the modules are what selective recompute re-runs"
            )
        recompute = "selective"
    distribute = _distribute_checkpoints(training)
    if distribute:
        if recompute not in (None, "full"):
            raise NotRun(
                f"training.{distribute} with activation_recompute {recompute}: it distributes "
                "full recompute's checkpoints (Megatron-LM asserts recompute granularity 'full')"
            )
        recompute = "full"
    virtual = _virtual_stages(system, layers=layers, pp=pp)
    if virtual is None:
        virtual = 1
        if pp > 1:  # the bubble rests on it
            why = "not stated: no interleaving (Megatron's default schedule)"
            assumptions.append(
                Assumption("system.virtual_pipeline_stages", 1, why, ITERATION_FIGURES)
            )
    p2p_overlap = _p2p_overlap(training)
    if "overlap_p2p_comm" not in training and core and virtual > 1 and pp > 1:
        p2p_overlap = True
        why = (
            "not stated: on, Megatron-Core's default with an interleaved schedule "
            "(megatron/training/arguments.py: --no-overlap-p2p-communication turns it off)"
        )
        assumptions.append(Assumption("training.overlap_p2p_comm", True, why, ITERATION_FIGURES))
    tp_comm_overlap = _tp_comm_overlap(
        training, assumptions, core=core, sequence_parallel=sequence_parallel, tp=tp
    )
    # userbuffers overlap the backward's input-gradient collective themselves
    tp_overlap = not tp_comm_overlap and _tp_overlap(case, assumptions, tp=tp)
    flags: dict[str, Any] = {
        "pp": pp,
        "tp": tp,
        "dp": dp,
        "micro_batch_size": micro_batch,
        "recompute": recompute or RECOMPUTE_ORDER[0],
        "schedule": "1f1b",
        "sequence_parallel": sequence_parallel,
        "virtual_stages": virtual,
        "dp_overlap": _dp_overlap(
            training,
            assumptions,
            megatron_lm=not core and framework is None and zero < 2 and dp * cp > 1,
        ),
        "tp_overlap": tp_overlap,
        "tp_comm_overlap": tp_comm_overlap,
        "grad_accumulation": _grad_accumulation(
            case,
            training,
            assumptions,
            megatron=zero < 3 and not _names_other_ddp(case),
            dtype=dtype,
        ),
        "p2p_scatter_gather": _p2p_scatter_gather(training),
        "p2p_overlap": p2p_overlap,
        "cp": cp,
        "ep": ep,
    }
    # with one TP rank there is nothing to distribute: metaseq and DeepSpeed then keep the
    # checkpoints whole (metaseq's `and ctx.is_model_parallel`)
    if distribute and tp > 1:
        flags["distribute_saved_activations"] = True
    layout = system.get("pipeline_layout")
    if layout is not None:
        if not isinstance(layout, list) or not all(isinstance(n, int) and n >= 0 for n in layout):
            raise NotRun(
                f"system.pipeline_layout: got {layout!r}; expected a list of ints >= 0, the "
                "layers of each model chunk"
            )
        flags["pipeline_layout"] = list(layout)
    # DeepEP's (or HybridEP's) node-deduplicated dispatch: Megatron-Core's flex dispatcher
    for key in ("moe_flex_dispatcher_backend", "moe_dispatcher"):
        value = training.get(key)
        if not value:
            continue
        if str(value).lower() in ("deepep", "hybridep"):
            flags["moe_dispatcher"] = "deepep"
        elif str(value).lower() not in ("alltoall", "none"):
            raise NotRun(f"training.{key}: got {value!r}; expected alltoall, deepep or hybridep")
        break
    # Megatron-Bridge's moe_a2a_overlap, Megatron-Core's --overlap-moe-expert-parallel-comm
    if any(
        _flag(training, key)
        for key in ("moe_a2a_overlap", "overlap_moe_expert_parallel_comm")
        if key in training
    ):
        flags["moe_a2a_overlap"] = True
    if etp is not None:
        flags["expert_tp"] = etp
    if modules:
        flags["recompute_modules"] = modules
    if hw_spec.cluster is not None:
        # Megatron's rank order (TP fastest, then CP, EP, DP, PP outermost:
        # parallel_state.initialize_model_parallel, order "tp-cp-ep-dp-pp"), so an EP or CP
        # group of consecutive replicas shares a node's NVLink.
        flags["placement"] = "stage_major"
    if zero:
        flags["zero"] = zero
    if zero >= 3:
        flags["zero_collectives"] = _zero_collectives(case, assumptions)
    if zero in (1, 2) and dp * cp > 1 and _overlap_param_gather(case, assumptions, core=core):
        flags["overlap_param_gather"] = True
    return CaseRun(
        hardware=hardware,
        workload=_workload(model, arch, source),
        overrides=tuple(overrides),
        flags=flags,
        measured=measured,
        assumptions=tuple(assumptions),
        hardware_why=hardware_why,
        # merged 1F1B rules out full recompute (Megatron-Core's checks): the least of the rest
        recompute=(recompute,)
        if recompute
        else tuple(
            m for m in _recompute_order(case) if not (flags.get("moe_a2a_overlap") and m == "full")
        ),
        zero=(0, 1) if zero_assumed is not None else (),
        train_iterations=iterations,
        evaluation=evaluation,
    )


def case_setup(case: Mapping[str, Any]) -> tuple[str, str, list[str], dict[str, Any]]:
    """The experiment of a training-run case: (hardware file, workload file, overrides, flags).

    Raises:
        NotRun: the case is not a training run palmsim can express (message says why).
    """
    run = read_training_run(case, DEFAULT_MEASUREMENTS)
    if run is None:
        raise NotRun(_NOT_A_RUN)
    return run.hardware, run.workload, list(run.overrides), dict(run.flags)


_NOT_A_RUN = (
    "not a training run (no model, system with tp/pp/dp or num_gpus, and measured): a "
    "single-operator, collective or memory measurement"
)


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
        category = rec.phase if rec.category in WAIT_CATEGORIES else rec.category
        phase = "forward" if category == "forward" else "backward"
        times[phase] = times.get(phase, 0.0) + (rec.end_s - rec.start_s)
    return times


def forward_pass_s(result: SimulationResult, microbatches: int) -> float:
    """A forward-only pass of ``microbatches`` micro-batches through the run's pipeline, as
    an evaluation runs (Megatron-Core's forward-only schedule, which NeMo's validation uses):
    the first micro-batch crosses every stage, each further one leaves the slowest stage a
    stage time later (the pipeline arithmetic of Narayanan et al., SC21, Sec. 2.2), so
    ``sum(t_s) + (m - 1) * max(t_s)``. A stage's ``t_s`` is its micro-batch 0's forward in the
    simulated iteration: its forward intervals and TP waits on the stage's first tile (all its
    model chunks where the pipeline is interleaved). Pure."""
    assert microbatches >= 1
    per_stage = dict.fromkeys((tiles[0] for tiles in result.plan.stage_tiles[0]), 0.0)
    for rec in result.trace.intervals:
        forward = rec.category == "forward" or (
            rec.category in WAIT_CATEGORIES and rec.phase == "forward"
        )
        if forward and rec.tile in per_stage and rec.microbatch == 0:
            per_stage[rec.tile] += rec.end_s - rec.start_s
    times = list(per_stage.values())
    return sum(times) + (microbatches - 1) * max(times)


def _predictions(result: SimulationResult) -> dict[str, float]:
    """Every figure palmsim predicts for a simulated case, in the measurements' units."""
    exp, plan, trace = result.experiment, result.plan, result.trace
    model, training = exp.workload.model, exp.workload.training
    iteration_s = trace.end_time_s
    gpus = len(plan.used_tiles)
    per_gpu_s = iteration_s * gpus
    published = hardware_flop_per_iteration(
        model, training, exp.mapping.recompute, as_published=True
    )
    model_flop = model_flop_per_iteration(model, training)
    executed = hardware_flop_per_iteration(
        model, training, exp.mapping.recompute, modules=exp.mapping.recompute_modules
    )
    # MFU and HFU as Chowdhery et al. (PaLM, 2022, App. B) and Korthikanti et al. (2023,
    # Sec. 6.3) define them: model (executed) FLOP/s over the GPU's dense peak in the run's
    # precision (an fp8 run's over the fp8 peak, as NVIDIA's DGX Cloud benchmarking recipes
    # compute it: "H100 FP8 is 1979 TFLOPS and for H100 BF16 is 989 TFLOPS").
    peak = exp.hardware.tile.peak_for(training.dtype)
    out = {
        "tflops_per_gpu": published / per_gpu_s / 1e12,
        "model_tflops_per_gpu": model_flop / per_gpu_s / 1e12,
        "aggregate_pflops": published / iteration_s / 1e15,
        "mfu_pct": 100 * model_flop / per_gpu_s / peak,
        "hfu_pct": 100 * executed / per_gpu_s / peak,
        "tokens_per_s_per_gpu": plan.tokens_per_iteration / per_gpu_s,
        "tokens_per_s": plan.tokens_per_iteration / iteration_s,
        "samples_per_s": training.global_batch_size / iteration_s,
        "iteration_time_s": iteration_s,
    }
    first_tile = plan.stage_tiles[0][0][0]
    layer = _layer_times_s(trace, first_tile)
    for phase, seconds in layer.items():
        out[f"{phase}_ms"] = seconds * 1e3
    if len(layer) == 2:
        out["combined_ms"] = sum(layer.values()) * 1e3
    return out


#: A measured share of a stated peak, ``pct_of_<peak>tflops_peak`` (Narayanan et al. SC21,
#: Table 1: "percentage of theoretical peak FLOP/s", 312 TFLOP/s on the A100).
_PCT_OF_PEAK = re.compile(r"^pct_of_(\d+(?:\.\d+)?)tflops_peak$")


def _peak_shares(measured: Mapping[str, Any], predicted: dict[str, float]) -> None:
    """Add to ``predicted`` the shares of peak ``measured`` names: each
    ``pct_of_<peak>tflops_peak`` (the predicted TFLOP/s per GPU, as the row's publisher counts
    them, over that peak), and ``mfu`` / ``hfu`` in the measured figure's own unit (a
    fraction where it is at most 1, else a percentage: a utilisation is at most 100%)."""
    for key in measured:
        match = _PCT_OF_PEAK.match(str(key))
        if match and "tflops_per_gpu" in predicted:
            predicted[key] = 100 * predicted["tflops_per_gpu"] / float(match.group(1))
    for key in ("mfu", "hfu"):
        value = _figure(measured.get(key))
        if value is not None and f"{key}_pct" in predicted:
            predicted[key] = predicted[f"{key}_pct"] / (100 if value <= 1 else 1)


def _publisher_flop_per_token(
    measured: Mapping[str, Any], predicted: Mapping[str, float]
) -> float | None:
    """The model FLOP per token as the case's publisher counts them, where the case gives
    both its model TFLOP/s and its tokens/s (their ratio), else None.

    Publishers count model FLOP differently (Megatron-Bridge counts causal attention at half
    the square, palmsim's :func:`model_flop_per_iteration` the full square, as Narayanan et
    al. 2021 Eq. 3; Megatron-Bridge's gpt-oss count omits terms palmsim counts), so a model
    TFLOP/s figure compares only under the publisher's count: palmsim's tokens/s times it.
    """
    tflops = _figure(measured.get("model_tflops_per_gpu"))
    tokens = _figure(measured.get("tokens_per_s_per_gpu"))
    if tflops is None or tokens is None or "tokens_per_s_per_gpu" not in predicted:
        return None
    return tflops * 1e12 / tokens


#: Other names of the figures palmsim predicts, as publishers and transcribers write them, and
#: the factor to its unit: ``measured`` keys are read under their canonical name.
_FIGURE_ALIASES: dict[str, tuple[str, float]] = {
    "tokens_per_sec_per_gpu": ("tokens_per_s_per_gpu", 1.0),
    "tokens_per_second_per_gpu": ("tokens_per_s_per_gpu", 1.0),
    "tokens_per_sec": ("tokens_per_s", 1.0),
    "tokens_per_second": ("tokens_per_s", 1.0),
    "samples_per_sec": ("samples_per_s", 1.0),
    "sequences_per_s": ("samples_per_s", 1.0),
    "model_tflops_per_sec_per_gpu": ("model_tflops_per_gpu", 1.0),
    "tflops_per_sec_per_gpu": ("tflops_per_gpu", 1.0),
    "aggregate_pflops_per_s": ("aggregate_pflops", 1.0),
    "mfu_percent": ("mfu_pct", 1.0),
    "hfu_percent": ("hfu_pct", 1.0),
    "step_time_s": ("iteration_time_s", 1.0),
    "time_per_iteration_s": ("iteration_time_s", 1.0),
    "iteration_time_ms": ("iteration_time_s", 1e-3),
    "step_time_ms": ("iteration_time_s", 1e-3),
    # Megatron-LM's training log: "elapsed time per iteration (ms)", "throughput per GPU
    # (TFLOP/s/GPU)" (megatron/training/training.py training_log)
    "elapsed_time_per_iteration_ms": ("iteration_time_s", 1e-3),
    "per_gpu_tflop_s_gpu": ("tflops_per_gpu", 1.0),
    "tflop_s_gpu": ("tflops_per_gpu", 1.0),
    "tflops_gpu": ("tflops_per_gpu", 1.0),
    "model_tflop_s_gpu": ("model_tflops_per_gpu", 1.0),
    "model_tflops_gpu": ("model_tflops_per_gpu", 1.0),
    "tokens_s_gpu": ("tokens_per_s_per_gpu", 1.0),
    "tokens_per_s_gpu": ("tokens_per_s_per_gpu", 1.0),
    "tokens_s": ("tokens_per_s", 1.0),
    "samples_s": ("samples_per_s", 1.0),
    "samples_per_second": ("samples_per_s", 1.0),
    "pflops_aggregate": ("aggregate_pflops", 1.0),
    # MLPerf Training's result: the time to train, in minutes
    "time_to_train_min": ("time_to_train_s", 60.0),
    "time_to_train_minutes": ("time_to_train_s", 60.0),
    "time_to_train_h": ("time_to_train_s", 3600.0),
    "time_to_train_hours": ("time_to_train_s", 3600.0),
}


#: Words of a figure's name read as another (:func:`_figure_key`): "sec" and "second" are
#: "s", a sequence is a sample; words that only qualify the figure ("throughput (tokens/s)",
#: "achieved TFLOP/s", "avg step time") are dropped.
_FIGURE_WORDS = {
    "sec": "s", "second": "s", "seconds": "s",
    "seq": "samples", "seqs": "samples", "sequences": "samples", "sample": "samples",
    "throughput": "", "achieved": "", "avg": "", "average": "", "mean": "", "measured": "",
}  # fmt: skip


def _figure_key(key: object) -> str:
    """A measured figure's name as :data:`_FIGURE_ALIASES` and the predicted figures spell
    it: lower case, each run of other characters one underscore ("TFLOP/s/GPU" ->
    ``tflop_s_gpu``, "MFU" -> ``mfu``), its words as :data:`_FIGURE_WORDS` reads them
    ("tokens/sec/GPU" -> ``tokens_s_gpu``)."""
    plain = re.sub(r"[^0-9a-z.]+", "_", str(key).lower()).strip("_")
    read = "_".join(w for w in (_FIGURE_WORDS.get(w, w) for w in plain.split("_")) if w)
    return read or plain  # a name of qualifiers only ("throughput") stays as written


def _canonical_figures(measured: Mapping[str, Any]) -> dict[str, Any]:
    """``measured`` with its names spelled as :func:`_figure_key` does and every alias of
    :data:`_FIGURE_ALIASES` under its canonical name and in its unit (a figure the case also
    gives under the canonical name is kept)."""
    out: dict[str, Any] = {}
    for key, value in measured.items():
        out.setdefault(_figure_key(key), value)
    for alias, (name, factor) in _FIGURE_ALIASES.items():
        if alias in out:
            value = out.pop(alias)
            figure = _figure(value)
            if name not in out and figure is not None:
                out[name] = figure * factor
    return out


#: A figure written as a published table prints it: a number with thousands separators, a
#: "k" or "M" multiplier ("39.3k" tokens/s in MegaScale's Table 2), a "%" and a variant in
#: parentheses, as Megatron-Bridge's tables give a second precision's ("31508 (29789)" for
#: "FP8-CS (FP8-MX)"): the first number is the row's own.
_FIGURE_TEXT = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([kM])?\s*%?\s*(?:\(.*\))?\s*$"
)
_MULTIPLIER = {None: 1.0, "k": 1e3, "M": 1e6}


def _figure(value: Any) -> float | None:
    """A measured figure palmsim can compare against: a finite, non-zero number, or one
    written as a table prints it (:data:`_FIGURE_TEXT`)."""
    if isinstance(value, str):
        match = _FIGURE_TEXT.match(value.replace(",", ""))
        value = float(match.group(1)) * _MULTIPLIER[match.group(2)] if match else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value != 0 else None


def _check_figures(measured: Mapping[str, Any], *, every: bool = False) -> None:
    """Refuse a measured figure palmsim predicts that no run can have measured: a number that
    is not finite or not above zero (a throughput, a share of peak, a latency and a time all
    are). A figure written as text that is not a number (a range, "~150") is no figure and is
    left out. ``every``: all of ``measured`` are figures palmsim predicts (a format module's
    comparisons), not only the training figures.

    Raises:
        NotRun: naming the figure and its value.
    """
    for key, value in measured.items():
        predicted = every or key in ITERATION_FIGURES or _PCT_OF_PEAK.match(str(key))
        if not predicted or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not (math.isfinite(value) and value > 0):
            raise NotRun(f"measured.{key}: got {value!r}; expected a number above zero")


def _simulate_case(
    case_id: str, run: CaseRun, overrides: Sequence[str]
) -> tuple[list[Comparison], tuple[Assumption, ...]]:
    """Simulate a case (the first recompute mode, and with each the first ZeRO stage, that
    fits: the distributed optimizer costs almost no time, recompute a forward) and compare
    its figures."""
    _check_figures(run.measured)
    assumptions = run.assumptions
    modes = run.recompute or (str(run.flags.get("recompute", "none")),)
    stages = run.zero or (int(run.flags.get("zero", 0)),)
    overlap = bool(run.flags.get("moe_a2a_overlap"))
    tries = [(mode, stage, overlap) for mode in modes for stage in stages]
    if overlap and len(modes) > 1:
        # merged 1F1B excludes full recompute; if nothing else fits, full recompute without
        # it, marked
        tries += [("full", stage, False) for stage in stages]
    unchecked: tuple[str, ...] = ()  # the run's memory check, off where nothing fits
    i = 0
    while True:
        mode, stage, merged = tries[i]
        light = mode == "light"
        flags = {
            **run.flags,
            "recompute": "selective" if light else mode,
            "zero": stage,
            "moe_a2a_overlap": merged,
        }
        experiment = load_experiment(
            run.hardware,
            run.workload,
            overrides=[*run.overrides, *overrides, *unchecked],
            mapping_flags=flags,
        )
        if light:
            modules = light_recompute_modules(experiment.workload.model)
            mapping = replace(experiment.mapping, recompute_modules=modules)
            experiment = replace(experiment, mapping=mapping)
            mode = f"selective ({', '.join(modules)})"
        try:
            result = simulate(experiment)
        except MappingError as error:
            if i + 1 < len(tries):
                i += 1
                continue
            if unchecked or not error.does_not_fit:
                raise
            # The run was measured, so it fit: palmsim's memory model is over, not the run.
            # Its last setting, the least memory of those tried, runs without the check.
            unchecked = ("run.memory_check=false",)
            why = (
                f"palmsim's memory model puts the run over its memory ({_one_line(error)}); "
                "the published run ran, so it is simulated anyway (run.memory_check false)"
            )
            assumptions += (Assumption("run.memory_check", False, why),)
            continue
        if len(modes) > 1:
            tried = ", ".join(_RECOMPUTE_WORDS[m] for m in modes)
            why = f"not stated: the least recompute that fits ({tried})"
            if unchecked:
                why = f"not stated: none of {tried} fits palmsim's memory model; the last"
            if "selective" not in modes:
                year, month = SELECTIVE_RECOMPUTE_SINCE
                why += f"; the run predates selective recompute ({year}-{month:02d})"
            elif "light" not in modes:
                year, month = RECOMPUTE_MODULES_SINCE
                why += f"; the run predates recompute of the norms and others ({year}-{month:02d})"
            assumptions += (Assumption("training.activation_recompute", mode, why),)
        if overlap and not merged:
            why = (
                "the run's merged 1F1B taken out: palmsim's memory model fits the run only "
                "with full recompute, which Megatron-Core does not allow with it"
            )
            assumptions += (Assumption("training.moe_a2a_overlap", False, why),)
        if len(stages) > 1:
            assumptions += (
                Assumption(
                    "training.distributed_optimizer", stage == 1, _ZERO_WHY, ITERATION_FIGURES
                ),
            )
        break
    predicted = (run.predict or _predictions)(result)
    if run.train_iterations is not None and "iteration_time_s" in predicted:
        predicted["time_to_train_s"] = run.train_iterations * predicted["iteration_time_s"]
        if run.evaluation is not None:
            count, samples = run.evaluation
            micro = math.ceil(samples / (run.flags["dp"] * run.flags["micro_batch_size"]))
            predicted["time_to_train_s"] += count * forward_pass_s(result, micro)
    _peak_shares(run.measured, predicted)
    counted = _publisher_flop_per_token(run.measured, predicted)
    if counted is not None:
        predicted["model_tflops_per_gpu"] = predicted["tokens_per_s_per_gpu"] * counted / 1e12
        own = model_flop_per_iteration(
            result.experiment.workload.model, result.experiment.workload.training
        )
        why = (
            "counted as the row counts model FLOP: its model TFLOP/s over its tokens/s; "
            f"palmsim's own count: {own / result.plan.tokens_per_iteration:.4g}"
        )
        assumptions += (
            Assumption("model_flop_per_token", f"{counted:.4g}", why, ("model_tflops_per_gpu",)),
        )
    _check_figures({m: run.measured[m] for m in predicted if m in run.measured}, every=True)
    comparisons = []
    for metric, value in predicted.items():
        measured = _figure(run.measured.get(metric))
        if measured is not None:
            keys = tuple(a.key for a in assumptions if a.moves(metric))
            comparisons.append(Comparison(case_id, metric, measured, value, keys))
    if not comparisons:
        names = ", ".join(map(str, run.measured)) or "none"
        if "time_to_train_s" in run.measured and run.train_iterations is None:
            raise NotRun(
                "its time to train needs the run's length: training.train_iters, "
                "train_samples or train_tokens"
            )
        unread = [(k, v) for k, v in run.measured.items() if k in predicted]
        if unread:  # a figure palmsim predicts, written as text that is not a number
            key, value = unread[0]
            raise NotRun(
                f"measured.{key}: got {value!r}; expected a number (or one as a table prints "
                "it: 1,234, 39.3k, 52%)"
            )
        known = ", ".join((*ITERATION_FIGURES, "pct_of_<peak>tflops_peak"))
        raise NotRun(
            f"none of its measured figures ({names}) is one palmsim predicts (a number under "
            f"one of: {known})"
        )
    return comparisons, assumptions


class _CaseTimeoutError(Exception):
    """A case ran past its time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_CaseTimeoutError` in the block after ``seconds`` of wall time.

    Uses ``SIGALRM``, so only on the main thread of a POSIX process; elsewhere no limit.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        # An exception raised in a signal handler can land where Python swallows it (a gc
        # callback, a __del__): re-arm, so the limit fires again until it reaches the case.
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        raise _CaseTimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))  # type: ignore[arg-type]
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


#: Case formats with a module of their own: (is one, its figures, its assumptions).
_OWN_FORMATS = (
    (
        serving_cases.is_serving_case,
        serving_cases.predict,
        serving_cases.assumptions,
        serving_cases.hardware_config,
        lambda case: "end_to_end",
    ),
    (
        tile_cases.is_tile_case,
        tile_cases.predict,
        tile_cases.substitutions,
        tile_cases.hardware_config,
        tile_cases.figure_kind,
    ),
)


def _predict_own_format(
    case_id: str, case: Mapping[str, Any], overrides: Sequence[str] = ()
) -> tuple[list[Comparison], list[Assumption], tuple[str, str]] | None:
    """The comparisons, assumptions and shipped config (path, why) of a case in a format with
    a module of its own (:data:`_OWN_FORMATS`), with the ``--set`` ``overrides`` the module
    takes, or None for a training run in the measurements format.

    Raises:
        NotRun: the module cannot express the case, or it predicts none of its figures.
    """
    for is_case, predict, assumptions, hardware_config, kind_of in _OWN_FORMATS:
        if not is_case(case):
            continue
        try:
            figures = predict(case, overrides)
        except tile_cases.CannotExpressError as why:
            raise NotRun(str(why)) from None
        _check_figures({m: v for m, v, _ in figures}, every=True)
        assumed = [Assumption(k, v, why) for k, v, why in assumptions(case)]
        keys = tuple(a.key for a in assumed)
        kind = kind_of(case)
        comparisons = [Comparison(case_id, m, v, p, keys, kind) for m, v, p in figures]
        if not comparisons:
            raise NotRun("none of its measured figures is one palmsim predicts")
        return comparisons, assumed, hardware_config(case)
    return None


def _read_case(case: Mapping[str, Any], source: str) -> CaseRun:
    """The first registered reader's :class:`CaseRun` for ``case``.

    Raises:
        NotRun: no reader knows the case, or its reader cannot express it.
    """
    for name in CASE_READERS:
        run = CASE_READERS.get(name)(case, source)
        if run is not None:
            return run
    raise NotRun(_NOT_A_RUN)


def _case_ids(cases: Sequence[Any]) -> list[str]:
    """Each case's ``id`` (``#i`` when it has none; a repeated id gets ``#i`` appended)."""
    ids: list[str] = []
    for i, case in enumerate(cases):
        given = case.get("id") if isinstance(case, Mapping) else None
        name = str(given) if given is not None else f"#{i}"
        ids.append(f"{name}#{i}" if name in ids else name)
    return ids


def validate(
    path: str | None = None,
    *,
    only: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    case_timeout_s: float | None = None,
    overrides: Sequence[str] = (),
    on_case: Callable[[ValidationReport], None] | None = None,
    previous: ValidationReport | None = None,
    jobs: int = 1,
) -> ValidationReport:
    """Run every expressible case of a measurements file and compare.

    Each case is isolated: any error in it lists it as not run, with a one-line reason, and
    the next case runs. Ctrl-C stops after the case in hand (with ``jobs`` above 1, the
    cases in hand are dropped) and returns what finished (``interrupted`` set).

    Args:
        path: the measurements file (default: the shipped copy, :data:`DEFAULT_MEASUREMENTS`).
        only: case ids to run (default: all).
        progress: called with each case id before it runs (with ``jobs`` above 1, as it
            finishes).
        case_timeout_s: wall-time limit per case [s] (None: none); a case past it is not run.
        overrides: ``--set`` strings added to every case's (e.g. ``run.max_events=...``).
        on_case: called with the report so far after every case (e.g. to write it).
        previous: an earlier report of the same file: its cases are taken over, not rerun.
        jobs: cases run at once, each in a worker process of its own (1: one by one in this
            process). The report is the same whatever the order they finish in: its cases
            stay in the file's order.

    Raises:
        ConfigError: the file is missing, not YAML, or has no ``cases:`` list; ``only``
            names a case it does not have; or ``jobs`` is below 1.
    """
    if jobs < 1:
        raise ConfigError.single("command line", "--jobs", jobs, "an int >= 1 (cases at once)")
    source = str(path or shipped(DEFAULT_MEASUREMENTS))
    raw = read_config_file(source)
    cases = raw.get("cases")
    if not isinstance(cases, list):
        raise ConfigError.single(source, "cases", cases, "a list of measurement cases")
    ids = _case_ids(cases)
    unknown = [name for name in only if name not in ids]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ids, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError.single(source, "cases[].id", unknown[0], f"a case id of the file{hint}")
    report = ValidationReport(source, (), ())
    done: set[str] = set()
    if previous is not None:
        done = {c.case for c in previous.comparisons} | {s.case for s in previous.skipped}
        done &= set(ids)
        report = replace(
            previous,
            source=source,
            comparisons=tuple(c for c in previous.comparisons if c.case in done),
            skipped=tuple(s for s in previous.skipped if s.case in done),
            interrupted=False,
        )
    todo = [
        (case_id, case)
        for case_id, case in zip(ids, cases, strict=True)
        if not ((only and case_id not in only) or case_id in done)
    ]
    if jobs > 1 and len(todo) > 1:
        return _in_workers(report, todo, jobs, progress, case_timeout_s, overrides, on_case)
    with _quiet(suspect_mapping_log):
        for case_id, case in todo:
            if progress is not None:
                progress(case_id)
            try:
                report = _run_one(report, case_id, case, case_timeout_s, overrides)
            except KeyboardInterrupt:
                report = replace(report, interrupted=True)
                break
            if on_case is not None:
                on_case(report)
    return report


def _in_workers(
    report: ValidationReport,
    todo: Sequence[tuple[str, Any]],
    jobs: int,
    progress: Callable[[str], None] | None,
    case_timeout_s: float | None,
    overrides: Sequence[str],
    on_case: Callable[[ValidationReport], None] | None,
) -> ValidationReport:
    """``report`` with the cases of ``todo`` run ``jobs`` at a time, each in a worker process
    (:func:`_run_alone`), and added in ``todo``'s order whatever order they finish in: the
    report one by one would give. Ctrl-C (or SIGTERM) drops the cases queued and ends the
    workers (:func:`palmsim.explore.sweep.worker_pool` and its ``cancel_on_interrupt``, as a
    sweep does), and returns those that finished. A worker that dies (killed for memory, say)
    ends the pool: the cases it had not finished are listed as not run, with why."""
    finished: dict[int, ValidationReport] = {}

    def merged() -> ValidationReport:
        parts = [finished[k] for k in sorted(finished)]
        return replace(
            report,
            comparisons=report.comparisons + tuple(c for p in parts for c in p.comparisons),
            skipped=report.skipped + tuple(s for p in parts for s in p.skipped),
            assumptions=report.assumptions + tuple(a for p in parts for a in p.assumptions),
            hardware=report.hardware + tuple(h for p in parts for h in p.hardware),
        )

    try:
        with worker_pool(pool_size(jobs, len(todo))) as pool, cancel_on_interrupt(pool):
            futures = {
                pool.submit(
                    _run_alone, report.source, case_id, case, case_timeout_s, tuple(overrides)
                ): k
                for k, (case_id, case) in enumerate(todo)
            }
            for future in as_completed(futures):
                k = futures[future]
                case_id = todo[k][0]
                try:
                    finished[k] = future.result()
                except BrokenProcessPool:
                    why = (
                        "a worker process died (out of memory?) before this case finished; "
                        "run it alone with --jobs 1"
                    )
                    finished[k] = ValidationReport(report.source, (), (Skipped(case_id, why),))
                if progress is not None:
                    progress(case_id)
                if on_case is not None:
                    on_case(merged())
    except KeyboardInterrupt:
        return replace(merged(), interrupted=True)
    return merged()


def _run_alone(
    source: str, case_id: str, case: Any, case_timeout_s: float | None, overrides: Sequence[str]
) -> ValidationReport:
    """The report of case ``case_id`` alone (a worker process's task in :func:`_in_workers`)."""
    with _quiet(suspect_mapping_log):
        return _run_one(ValidationReport(source, (), ()), case_id, case, case_timeout_s, overrides)


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """``logger``'s warnings dropped for the block. validate builds each case's mapping from
    the published run (a DP replica of the cluster, a tiled case's one-micro-batch layer
    pipeline), so a warning that the mapping idles tiles or stages is not the user's to act
    on; the table and its assumptions say what each figure rests on."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_one(
    report: ValidationReport,
    case_id: str,
    case: Any,
    case_timeout_s: float | None,
    overrides: Sequence[str],
) -> ValidationReport:
    """``report`` with case ``case_id`` run (its comparisons) or listed as not run."""
    reason, blamed = "", None
    group = str(case.get("group") or "") if isinstance(case, Mapping) else ""
    try:
        with _time_limit(case_timeout_s):
            if not isinstance(case, Mapping):
                raise NotRun(f"got {case!r}; expected a mapping of case fields")
            other = _predict_own_format(case_id, case, overrides)
            if other is not None:  # a published serving benchmark or a tiled-system case
                comparisons, assumed, (path, why) = other
                return replace(
                    report,
                    comparisons=(
                        *report.comparisons,
                        *(replace(c, group=group) for c in comparisons),
                    ),
                    assumptions=(*report.assumptions, *((case_id, a) for a in assumed)),
                    hardware=(*report.hardware, (case_id, path, why)),
                )
            run = _read_case(case, report.source)
            comparisons, assumptions = _simulate_case(case_id, run, overrides)
    except NotRun as why:
        reason = str(why)
    except _CaseTimeoutError:
        reason = f"ran past its time limit (--case-timeout {case_timeout_s:g} s)"
    except PalmsimError as error:  # e.g. a MappingError: the case does not fit
        reason, blamed = _one_line(error), _blamed_override(error, overrides)
    except Exception as bug:  # a bug in palmsim: say so in one line, run the next case
        log.debug("case %s failed", case_id, exc_info=True)
        reason = f"internal error, please report it: {_one_line(bug)}"
    if reason:
        return replace(report, skipped=(*report.skipped, Skipped(case_id, reason, blamed)))
    return replace(
        report,
        comparisons=(*report.comparisons, *(replace(c, group=group) for c in comparisons)),
        assumptions=(*report.assumptions, *((case_id, a) for a in assumptions)),
        hardware=(*report.hardware, (case_id, run.hardware, run.hardware_why)),
    )


def _figure_kind(value: Any) -> str:
    """``value`` as a kind of figure (:data:`FIGURE_KINDS`).

    Raises:
        ValueError: another value, naming the kinds.
    """
    if value not in FIGURE_KINDS:
        raise ValueError(f"kind {value!r} is not one of {', '.join(FIGURE_KINDS)}")
    return str(value)


def report_from_dict(data: Any, where: str) -> ValidationReport:
    """A report read back from its ``--json`` form (:meth:`ValidationReport.as_dict`).

    Raises:
        ConfigError: naming the key that is missing or malformed.
    """
    if not isinstance(data, Mapping):
        raise ConfigError.single(where, "", data, "a validate report (a JSON object)")
    problems = []
    comparisons, skipped, assumptions, hardware = [], [], [], []
    try:
        for i, row in enumerate(data.get("comparisons") or []):
            key = f"comparisons[{i}]"
            comparisons.append(
                Comparison(
                    str(row["case"]),
                    str(row["metric"]),
                    float(row["measured"]),
                    float(row["predicted"]),
                    tuple(str(a) for a in row.get("assumed") or ()),
                    _figure_kind(row.get("kind", "end_to_end")),
                    str(row.get("group") or ""),
                )
            )
        for i, row in enumerate(data.get("skipped") or []):
            key = f"skipped[{i}]"
            skipped.append(Skipped(str(row["case"]), str(row["reason"])))
        for i, row in enumerate(data.get("assumptions") or []):
            key = f"assumptions[{i}]"
            figures = tuple(str(f) for f in row.get("figures") or ())
            assumption = Assumption(
                str(row["key"]), row.get("value"), str(row.get("why", "")), figures
            )
            assumptions.append((str(row["case"]), assumption))
        for i, row in enumerate(data.get("hardware") or []):
            key = f"hardware[{i}]"
            hardware.append((str(row["case"]), str(row["config"]), str(row.get("why", ""))))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        problems.append((key, _one_line(error)))
    if problems:
        key, why = problems[0]
        raise ConfigError.single(where, key, why, "a row as palmsim validate --json writes it")
    skipped = [s for s in skipped if not s.reason.startswith("interrupted")]
    return ValidationReport(
        str(data.get("source", "")),
        tuple(comparisons),
        tuple(skipped),
        tuple(assumptions),
        tuple(hardware),
    )


def _figures(n: int) -> str:
    """``n`` figures, in words ("1 figure", "14 figures")."""
    return f"{n} figure" if n == 1 else f"{n} figures"


def format_report(report: ValidationReport, *, by_group: bool = False) -> str:
    """The table ``palmsim validate`` prints; ``*`` marks a figure resting on an assumption.
    ``by_group`` (``--by-group``) adds each case group's error under the mean
    (:attr:`ValidationReport.errors_by_group`)."""
    width = max([len(c.case) for c in report.comparisons] + [4])
    lines = [
        f"{'case':<{width}}  {'metric':<22} {'measured':>10} {'predicted':>10} {'error':>8}",
    ]
    for c in report.comparisons:
        lines.append(
            f"{c.case:<{width}}  {c.metric:<22} {c.measured:>10.4g} {c.predicted:>10.4g} "
            f"{100 * c.relative_error:>+7.1f}%" + (" *" if c.assumed else "")
        )
    mape = report.mean_absolute_percentage_error
    lines.append(
        "mean absolute percentage error: no figure predicted"
        if mape is None
        else f"mean absolute percentage error: {mape:.1f}% over {_figures(len(report.comparisons))}"
    )
    by_kind = report.errors_by_kind
    if len(by_kind) > 1:
        lines += [
            f"  {FIGURE_KINDS[kind]}: {mape_k:.1f}% over {_figures(n)}"
            for kind, (mape_k, n) in by_kind.items()
        ]
    if by_group and report.comparisons:
        lines.append("  by case group, the largest summed miss first:")
        lines += [
            f"    {group or '(no group)'}: {mape_g:.1f}% over {_figures(n)}"
            for group, (mape_g, n) in report.errors_by_group.items()
        ]
    marked = {c.case for c in report.comparisons if c.assumed}
    cases_of: dict[tuple[str, str, str], list[str]] = {}
    for case, a in report.assumptions:
        if case in marked:
            cases_of.setdefault((a.key, str(a.value), a.why), []).append(case)
    if cases_of:
        lines += [
            "",
            "* rests on an assumption, for a setting the case does not state or palmsim "
            "cannot express:",
        ]
        lines += [f"  {k} = {v} ({why}): {', '.join(c)}" for (k, v, why), c in cases_of.items()]
    configs: dict[tuple[str, str], list[str]] = {}
    for case, path, why in report.hardware:
        configs.setdefault((path, why), []).append(case)
    if configs:
        lines += ["", "hardware configs:"]
        lines += [
            f"  {path} ({why}): {len(cases)} case{'s' if len(cases) > 1 else ''}"
            for (path, why), cases in configs.items()
        ]
    if report.skipped:
        lines += ["", f"not run ({len(report.skipped)}):"]
        lines += [f"  {s.case}: {s.reason}" for s in report.skipped]
    if report.interrupted:
        lines += ["", "interrupted: the cases above finished; rerun with --resume to go on"]
    return "\n".join(lines)
