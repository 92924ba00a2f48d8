"""Frozen, validated specifications of an experiment: hardware, workload, mapping, run.

Specs describe; they never change after loading. Runtime objects (chip graph, plan, simulator)
are built from them. Every dimensional field is in SI base units and carries its unit suffix.
Each field's ``metadata["help"]`` is the one-line description ``palmsim describe`` prints and
the loader uses in error messages. Defaults live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "ATTENTION_KERNELS",
    "BFP_BLOCK_ELEMENTS",
    "DTYPE_BYTES",
    "EXPERT_LOADS",
    "EXPERT_PLACEMENTS",
    "FP8_LINEAR_OPS",
    "FP8_RECIPES",
    "GRAD_ACCUMULATION_MODES",
    "INFERENCE_PASSES",
    "LORA_TARGET_OPS",
    "MATH_FIDELITIES",
    "MAX_SIMULATED_S",
    "MEMORY_OP_KINDS",
    "MODES",
    "MOE_DISPATCHERS",
    "NVFP4_BLOCK_ELEMENTS",
    "SERVING_ARRIVALS",
    "SERVING_LENGTHS",
    "SERVING_PREEMPTION_MODES",
    "SERVING_ROUTERS",
    "TRAINING_ONLY",
    "TRAINING_STORAGE_DTYPE",
    "YIELD_MODELS",
    "ClusterSpec",
    "CostSpec",
    "DefectSpec",
    "DramSpec",
    "EnergySpec",
    "ExperimentSpec",
    "GemmSpec",
    "HardwareSpec",
    "HostSpec",
    "InferenceSpec",
    "LinkSpec",
    "MappingSpec",
    "MemoryKernelSpec",
    "MemoryOpsSpec",
    "MeshGemmSpec",
    "ModelSpec",
    "RunSpec",
    "SchedulerSpec",
    "ServingSpec",
    "SloSpec",
    "TileSpec",
    "TrafficSpec",
    "TrainingSpec",
    "WaferSpec",
    "WorkloadSpec",
    "help_of",
    "modes_of",
]

#: The longest simulated time palmsim reports [s]: about 31.7 years, where a double's
#: resolution (its spacing, math.ulp(1e9) = 1.19e-7 s) is still below a microsecond, the
#: scale of the shortest launch latencies palmsim models. Beyond it short steps vanish in
#: the rounding (their intervals come out empty) and rates near zero are the likely cause.
MAX_SIMULATED_S = 1e9

#: Elements that share one 8-bit exponent in Tenstorrent's block floating point formats:
#: a 32x32 tile is stored as 64 rows of 16 values, each row with its own exponent byte
#: (tt-metal ``tt_metal/impl/data_format``: a bfloat8_b tile is 1024 + 64 = 1088 B, a
#: bfloat4_b tile 512 + 64 = 576 B).
BFP_BLOCK_ELEMENTS = 16

#: Elements sharing one E4M3 scale in NVIDIA's NVFP4 (Transformer Engine's NVFP4 recipe:
#: "each block of 16 consecutive elements shares a scaling factor", docs/features/
#: low_precision_training/nvfp4/nvfp4.rst).
NVFP4_BLOCK_ELEMENTS = 16

#: Bytes per element of each numeric format palmsim knows. Block floating point counts the
#: shared exponents: bfp8 = 1 B of sign+mantissa + 1/16 B of exponent = 1.0625 B; bfp4 =
#: 0.5 + 1/16 = 0.5625 B; NVFP4 = a 4-bit E2M1 value + a 1-byte E4M3 scale per 16 elements =
#: 0.5625 B (its per-tensor fp32 scale is not counted).
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "fp8": 1,
    "int8": 1,
    "bfp8": 1 + 1 / BFP_BLOCK_ELEMENTS,
    "bfp4": 0.5 + 1 / BFP_BLOCK_ELEMENTS,
    "nvfp4": 0.5 + 1 / NVFP4_BLOCK_ELEMENTS,
}

#: The dtype a training dtype stores its tensors in: fp8 training (Transformer Engine) keeps
#: weights, activations and gradients in bf16 and casts a copy to fp8 at each linear GEMM
#: (transformer_engine/pytorch/module/linear.py, ``_linear_forward``: the bf16 ``inp`` and
#: ``weight`` go through their quantizers; the GEMM output is ``activation_dtype``).
TRAINING_STORAGE_DTYPE: dict[str, str] = {
    "fp32": "fp32",
    "fp16": "fp16",
    "bf16": "bf16",
    "fp8": "bf16",
}

#: Tenstorrent math fidelities: passes of the matrix engine over the mantissa bits, each
#: pass at the LoFi rate (tt-metal tech_reports/GEMM_FLOPS: HiFi2 = 1/2, HiFi3 = 1/3,
#: HiFi4 = 1/4 of LoFi).
MATH_FIDELITIES = ("LoFi", "HiFi2", "HiFi3", "HiFi4")

#: Values of ``InferenceSpec.trace`` and ``InferenceSpec.weight_prefetch``: the passes an
#: option applies to.
INFERENCE_PASSES = ("decode", "all", "none")

#: Values of ``InferenceSpec.kv_placement``: where a request's KV cache lives when a 2-D tensor
#: parallel layout has more request columns than requests (:func:`palmsim.mapping.inference.
#: _cache_users`).
KV_PLACEMENTS = ("sequence", "request")

#: Values of ``InferenceSpec.prefill_attention_2d``: how a prefill pass's attention core runs
#: over the second axis of 2-D tensor parallelism.
PREFILL_ATTENTION_2D = ("split", "replicated")

#: Values of ``InferenceSpec.prefill_attention_split``: how a prefill's fused attention kernel
#: deals its query chunks to its cores (:func:`palmsim.hardware.costs.attention_split_factor`).
ATTENTION_SPLITS = ("even", "heads_first", "pairs")

#: Values of ``InferenceSpec.logits_to_host``: the passes whose logits the serving code reads
#: back to the host to sample there.
LOGITS_TO_HOST = ("none", "prefill", "decode", "prefill_and_decode", "prefill_and_batch_decode")

#: Values of ``InferenceSpec.residual_split``: the ops between a layer's tensor-parallel
#: blocks that run on 1/tp of the hidden width.
RESIDUAL_SPLITS = ("none", "adds", "adds_and_prefill_norms")

#: Keys of ``InferenceSpec.prefill_reduce_dtypes``: the layer blocks a tensor-parallel
#: all-reduce follows (:class:`palmsim.workload.builders.Block` names).
REDUCED_BLOCKS = ("attn", "mlp", "mamba")

#: Values of ``ModelSpec.parallel_block``: the MLP after the attention ('none'), or both on
#: the layer's input through one norm or through a norm each.
PARALLEL_BLOCKS = ("none", "one_norm", "two_norms")

#: Spellings of an MLP's activation (Hugging Face ``hidden_act``, a measurement case's
#: ``model.act``) -> the MLP kind palmsim models (``ModelSpec.hidden_act``): ``gelu``, two
#: matrices with one elementwise activation between them, whichever it is (GeLU; ReLU;
#: squared ReLU, Nemotron-4's and Hugging Face's ``relu2``: one pass over the activation each
#: way, costed alike), or ``silu``, the gated MLP of three matrices: SwiGLU, and GeGLU
#: (Shazeer 2020, Gemma's: the gate through a GeLU, the same matrices and one elementwise
#: product), costed alike.
MLP_OF_ACTIVATION = {
    "gelu": "gelu",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": "gelu",
    "relu": "gelu",
    "relu2": "gelu",
    "squared_relu": "gelu",
    "silu": "silu",
    "swiglu": "silu",
    "geglu": "silu",
}

#: Values of ``TrainingSpec.expert_load`` (:func:`palmsim.workload.moe.expert_loads`).
EXPERT_LOADS = ("uniform", "multinomial", "dirichlet")

#: The GEMMs of Transformer Engine linear modules, by op name (palmsim.workload.builders):
#: what fp8 training runs in fp8 (palmsim.workload.fp8.FP8_LINEARS).
FP8_LINEAR_OPS: tuple[str, ...] = (
    "qkv",
    # multi-head latent attention's projections: TELinear (duplicated) and TE's
    # LayerNormColumnParallelLinear modules in Megatron-Core's MLA layer spec
    "q_proj",
    "q_down",
    "q_up",
    "kv_down",
    "kv_up",
    "out_proj",
    "fc1",
    "fc2",
    # the Mamba-2 mixer's in_proj (TE's LayerNormColumnParallelLinear) and out_proj
    # (TERowParallelLinear) in Megatron-Core's Mamba layer spec
    "mamba_in",
    "mamba_out",
    # the Gated DeltaNet's input and output projections (TE linears in Megatron-Core's
    # Qwen3-Next layer spec, as the Mamba mixer's)
    "gdn_in",
    "gdn_out",
    "experts_fc1",
    "experts_fc2",
    # LatentMoE's projections (TELinear, duplicated over TP)
    "latent_down",
    "latent_up",
    "shared_fc1",
    "shared_fc2",
)

#: Linears a LoRA adapter may sit beside (``training.lora_targets``): the dense TE linears
#: (a grouped GEMM's experts are not adapted; palmsim.workload.lora).
LORA_TARGET_OPS: tuple[str, ...] = tuple(
    name for name in FP8_LINEAR_OPS if not name.startswith("experts_") and "latent" not in name
)

#: Activation recompute modes (``MappingSpec.recompute``).
RECOMPUTE_MODES = ("none", "selective", "full")

#: Megatron-Core's ``--recompute-modules`` names (``mapping.recompute_modules``), in its
#: documentation's order, and its default (megatron/core/transformer/transformer_config.py).
RECOMPUTE_MODULES = (
    "core_attn",
    "moe_act",
    "layernorm",
    "mla_up_proj",
    "mlp",
    "moe",
    "shared_experts",
)
DEFAULT_RECOMPUTE_MODULES = ("core_attn",)

#: Scaling recipes of fp8 training (``training.fp8_recipe``): Transformer Engine's
#: DelayedScaling, Float8CurrentScaling, MXFP8BlockScaling, Float8BlockScaling and
#: NVFP4BlockScaling (transformer_engine/common/recipe/__init__.py; TE runs all of them under
#: the same quantized autocast, its 4-bit recipe too); what each moves and keeps:
#: :data:`palmsim.workload.fp8.FP8_SCALING`.
FP8_RECIPES = ("delayed", "current", "mxfp8", "blockwise", "nvfp4")

#: Attention-core implementations (``training.attention_kernel``): separate kernels keeping
#: the scores; Transformer Engine's fused attention (cuDNN's kernel, which its
#: DotProductAttention picks on Hopper and later); the flash-attn package's FlashAttention-2
#: kernel (Dao 2023), which Transformer Engine runs instead where cuDNN's is off
#: (``NVTE_FUSED_ATTN=0``). The last two do the same work; each has its own rate.
ATTENTION_KERNELS = ("unfused", "fused", "flash2")

#: Values of ``MappingSpec.expert_placement`` (:func:`palmsim.workload.moe.place_experts`).
EXPERT_PLACEMENTS = ("contiguous", "balanced")

#: Values of ``MappingSpec.moe_dispatcher``: the all-to-all, or DeepEP's node-deduplicated
#: dispatch (:func:`palmsim.hardware.collectives.deduplicated_alltoall_shares`).
MOE_DISPATCHERS = ("alltoall", "deepep")

#: Values of ``MappingSpec.grad_accumulation``.
GRAD_ACCUMULATION_MODES = ("fused", "every_microbatch", "after_first_microbatch")

#: Values of ``MappingSpec.zero_collectives``.
ZERO_COLLECTIVES = ("unit", "tensor")


#: The run modes (``workload.mode``) an option can apply to.
MODES: tuple[str, ...] = ("training", "inference")
TRAINING_ONLY: tuple[str, ...] = ("training",)
INFERENCE_ONLY: tuple[str, ...] = ("inference",)


def _f(help_text: str, *, modes: tuple[str, ...] = MODES, **kwargs: Any) -> Any:
    """A dataclass field with a help string and the modes it applies to in its metadata."""
    return field(metadata={"help": help_text, "modes": modes}, **kwargs)


def modes_of(spec_type: type, name: str) -> tuple[str, ...]:
    """The run modes field ``name`` of dataclass ``spec_type`` applies to."""
    for f in fields(spec_type):
        if f.name == name:
            return tuple(f.metadata.get("modes", MODES))
    raise KeyError(name)


def help_of(spec_type: type, name: str) -> str:
    """The help text of field ``name`` of dataclass ``spec_type``."""
    for f in fields(spec_type):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)


# --------------------------------------------------------------------------- hardware


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One class of link: each direction is its own channel with this bandwidth."""

    bandwidth_bytes_per_s: float = _f("bandwidth of one direction of one link [B/s]")
    latency_s: float = _f("latency of one hop over this link [s]")


@dataclass(frozen=True, slots=True)
class GemmSpec:
    """Achievable GEMM throughput by shape (:func:`palmsim.hardware.compute.gemm_time_s`)."""

    compute_units: int = _f("units a GEMM's output tiles are spread over, e.g. SMs [count]")
    tile_m: int = _f("rows of one output tile of the GEMM kernels [elements]")
    tile_n: int = _f("columns of one output tile of the GEMM kernels [elements]")
    max_efficiency: float = _f("fraction of peak reached by a GEMM without quantisation [ratio]")
    launch_latency_s: float = _f("fixed time per GEMM kernel [s]")
    attention_forward_efficiency: float | None = _f(
        "fraction of peak a fused attention kernel reaches in the forward at head dim 128, "
        "measured; null: max_efficiency (an assumption) [ratio]",
        default=None,
    )
    attention_backward_efficiency: float | None = _f(
        "fraction of peak a fused attention kernel reaches in the backward at head dim 128, "
        "measured; null: max_efficiency (an assumption) [ratio]",
        default=None,
    )
    attention_forward_efficiency_d64: float | None = _f(
        "the same kernel's forward fraction of peak at head dim 64, measured; between 64 "
        "and 128 the two-term law of attention_efficiency_for; null: no dependence on the "
        "head dim [ratio]",
        default=None,
    )
    attention_backward_efficiency_d64: float | None = _f(
        "the same kernel's backward fraction of peak at head dim 64, measured (see "
        "attention_forward_efficiency_d64) [ratio]",
        default=None,
    )
    flash2_forward_efficiency: float | None = _f(
        "fraction of peak the flash-attn package's FlashAttention-2 kernel reaches in the "
        "forward (attention_kernel 'flash2'), measured; null: the fused kernel's (an "
        "assumption) [ratio]",
        default=None,
    )
    flash2_backward_efficiency: float | None = _f(
        "fraction of peak the flash-attn package's FlashAttention-2 kernel reaches in the "
        "backward (attention_kernel 'flash2'), measured; null: the fused kernel's (an "
        "assumption) [ratio]",
        default=None,
    )
    grouped_streams: int = _f(
        "streams a grouped GEMM's products run on, each its own GEMM kernel, round-robin "
        "(Transformer Engine's grouped GEMM: 4 compute streams); 0: one batched kernel [count]",
        default=0,
    )

    def attention_efficiency_for(self, phase: str, head_dim: float = 128.0) -> float:
        """The fused attention kernel's fraction of peak in ``phase`` ("F" or "B") at query-key
        width ``head_dim``.

        Without a head-dim-64 rate: the measured (head dim 128) one whatever the width. With
        one, the kernel's time per attended (query, key) pair is ``a + b·d``: a fixed part per
        score (its softmax, whose exponential runs on the special-function units, not the
        tensor cores: Shah et al., FlashAttention-3, 2024) and a part per element of the
        products. A pair is ``c·d`` FLOP (c = 4 forward, 10 backward), so in units of
        ``c / peak`` the time per pair is ``t(d) = d / e(d)``, affine in ``d`` through the
        measured ``t(64)`` and ``t(128)``: ``e(d) = d / (t(64) + (d - 64)·(t(128) - t(64)) /
        64)``. Outside [64, 128] the nearer measured rate (nothing extrapolated).
        """
        backward = phase == "B"
        measured = (
            self.attention_backward_efficiency if backward else self.attention_forward_efficiency
        )
        at_64 = (
            self.attention_backward_efficiency_d64
            if backward
            else self.attention_forward_efficiency_d64
        )
        at_128 = self.max_efficiency if measured is None else measured
        if at_64 is None or head_dim >= 128.0:
            return at_128
        if head_dim <= 64.0:
            return at_64
        t_64, t_128 = 64.0 / at_64, 128.0 / at_128  # time per pair over FLOP per pair and d
        return head_dim / (t_64 + (head_dim - 64.0) * (t_128 - t_64) / 64.0)

    def for_attention_kernel(self, kernel: str) -> GemmSpec:
        """This GEMM model with ``kernel``'s rates as its fused attention's: the
        FlashAttention-2 kernel's (``flash2_*_efficiency``, at every head dim; each unset
        one the fused kernel's) for ``flash2``, itself for the others."""
        if kernel != "flash2":
            return self
        return dataclasses.replace(
            self,
            attention_forward_efficiency=_first_set(
                self.flash2_forward_efficiency, self.attention_forward_efficiency
            ),
            attention_backward_efficiency=_first_set(
                self.flash2_backward_efficiency, self.attention_backward_efficiency
            ),
            # the head-dim-64 rates are the fused kernel's: a measured FlashAttention-2 rate
            # stands alone (unset, the fused kernel's whole law)
            attention_forward_efficiency_d64=None
            if self.flash2_forward_efficiency is not None
            else self.attention_forward_efficiency_d64,
            attention_backward_efficiency_d64=None
            if self.flash2_backward_efficiency is not None
            else self.attention_backward_efficiency_d64,
        )


def _first_set(*values: float | None) -> float | None:
    """The first of ``values`` that is not None (None if all are)."""
    return next((v for v in values if v is not None), None)


#: Kinds of memory-bound kernel a ``memory_ops`` section may give its own bandwidth and
#: latency: the op kinds of :data:`palmsim.workload.ops.OPS` other than ``matmul``, and the
#: optimizer step.
MEMORY_OP_KINDS: tuple[str, ...] = (
    "norm",
    "softmax",
    "elementwise",
    "dropout",
    "embedding",
    "loss",
    "optimizer",
)


@dataclass(frozen=True, slots=True)
class MemoryKernelSpec:
    """One kind of memory-bound kernel: ``latency + bytes / bandwidth``."""

    bandwidth_bytes_per_s: float = _f("memory bandwidth this kind of kernel reaches [B/s]")
    launch_latency_s: float = _f("fixed time per kernel of this kind [s]")


@dataclass(frozen=True, slots=True)
class MemoryOpsSpec:
    """Memory-bound kernels (norms, softmax, elementwise): ``latency + bytes / bandwidth``.

    ``bandwidth_bytes_per_s`` and ``launch_latency_s`` hold for every kind of kernel without
    an entry in ``kinds``; they are also the achievable streaming bandwidth that bounds a
    memory-bound GEMM (:func:`palmsim.hardware.compute.gemm_time_s`).
    """

    bandwidth_bytes_per_s: float = _f("memory bandwidth memory-bound kernels reach [B/s]")
    launch_latency_s: float = _f("fixed time per memory-bound kernel [s]")
    kinds: tuple[tuple[str, MemoryKernelSpec], ...] = _f(
        "per-kind bandwidth and latency, as (kind, spec) pairs, for kinds of "
        "MEMORY_OP_KINDS measured on their own",
        default=(),
    )

    def for_kind(self, kind: str) -> MemoryKernelSpec:
        """The bandwidth and latency of a kernel of ``kind`` (the default if it has none)."""
        for name, spec in self.kinds:
            if name == kind:
                return spec
        return MemoryKernelSpec(self.bandwidth_bytes_per_s, self.launch_latency_s)

    def time_s(self, kind: str, nbytes: float, num_kernels: int = 1) -> float:
        """Time of ``num_kernels`` kernels of ``kind`` moving ``nbytes`` in all [s]."""
        spec = self.for_kind(kind)
        return num_kernels * spec.launch_latency_s + nbytes / spec.bandwidth_bytes_per_s


@dataclass(frozen=True, slots=True)
class MeshGemmSpec:
    """A GEMM run as a MeshGEMM over a square mesh of cores (He et al., WaferLLM, OSDI'25,
    Sec. 5: a Cannon-style algorithm whose operands shift one or two hops a step).

    On a ``P x P`` mesh ``C[M, N] = A[M, K] @ B[K, N]`` takes ``P`` steps; in each, every core
    multiplies its ``Mt x Kt`` block of A by its ``Kt x Nt`` block of B (``Mt = M / P`` and
    so on, rounded up) while the next blocks arrive. The released kernel
    (MeshInfra/WaferLLM MeshGEMM/WSE-3/src/meshgemm.csl) runs a step as ``Kt`` loads of its
    operand registers, each followed by ``Nt`` vector multiply-accumulates (``fmach``) of
    ``Mt`` elements, so a step costs
    ``step + Kt * per_k + Kt * Nt * per_column + Mt * Kt * Nt * per_mac``
    (:func:`palmsim.hardware.compute.mesh_gemm_time_s`). Times, per core and never scaled by
    ``chip.granularity``: a simulated tile of ``k x k`` cores is the mesh its GEMMs run on.
    The attention's ``Q K^T`` runs as the transposed variant, whose every step also reduces
    its partial block along a row of cores over the core link
    (:func:`palmsim.hardware.compute.mesh_gemm_row_reduce_s`).
    """

    step_s: float = _f("fixed time of one step: its task switch and operand shifts [s]")
    per_k_s: float = _f("time per row of B a step works through (a register load) [s]")
    per_column_s: float = _f("time per vector multiply-accumulate a step issues [s]")
    per_mac_s: float = _f("time per multiply-accumulate of a vector instruction [s]")
    mesh: tuple[int, int] = _f(
        "cores of the mesh a simulated tile's GEMM runs over, [rows, columns]: the tile's own "
        "(chip.granularity)",
        default=(1, 1),
    )
    link_latency_s: float = _f(
        "latency of the link between neighbouring cores, chip.noc.latency (set by the loader) [s]",
        default=0.0,
    )
    link_bandwidth_bytes_per_s: float = _f(
        "bandwidth of that link, chip.noc.bandwidth (set by the loader; 0: no row reduction "
        "is costed) [B/s]",
        default=0.0,
    )


@dataclass(frozen=True, slots=True)
class TileSpec:
    """A compute tile (or a GPU, which palmsim models as one tile with HBM behind it)."""

    peak_flop_per_s: tuple[tuple[str, float], ...] = _f(
        "peak dense throughput per dtype, as (dtype, FLOP/s) pairs [FLOP/s]"
    )
    sram_capacity_bytes: float = _f("software-managed on-tile SRAM capacity [B]")
    sram_bandwidth_bytes_per_s: float = _f("SRAM read+write bandwidth seen by the compute [B/s]")
    compute_efficiency: float = _f(
        "achievable fraction of peak FLOP/s for matrix ops (1.0 = peak) [ratio]; "
        "unused when gemm is given; on a tile with fidelity_passes, at one pass (at_fidelity)",
        default=1.0,
    )
    gemm: GemmSpec | None = _f(
        "shape-dependent GEMM model; null (absent): peak x compute_efficiency for every GEMM",
        default=None,
    )
    memory_ops: MemoryOpsSpec | None = _f(
        "memory-bound kernels run one by one at this bandwidth; null (absent): their bytes overlap "
        "with the step's compute",
        default=None,
    )
    mesh_gemm: MeshGemmSpec | None = _f(
        "a GEMM with at least as many rows as the tile has rows of cores runs as a MeshGEMM "
        "over them (a prefill's, not a decode step's GEMVs); null (absent): the roofline",
        default=None,
    )
    fidelity_passes: tuple[tuple[str, int], ...] = _f(
        "matrix-engine passes per math fidelity, as (fidelity, passes) pairs: the peak of a "
        "fidelity is peak / passes (Tenstorrent LoFi 1, HiFi2 2, HiFi3 3, HiFi4 4); empty: "
        "the chip has no fidelity setting",
        default=(),
    )
    format_efficiency: tuple[tuple[str, float], ...] = _f(
        "achievable fraction of peak of a GEMM whose weights are in this format, as "
        "(dtype, ratio) pairs, fitted to GEMM microbenchmarks; a format without an entry "
        "uses compute_efficiency (gemm.max_efficiency under a GEMM model). On a tile with "
        "fidelity_passes, the fraction at one pass: see efficiency_for",
        default=(),
    )
    auto_format_efficiency: tuple[tuple[str, float], ...] = _f(
        "format_efficiency of a GEMM run with tt-metal's auto-selected program config on "
        "DRAM-interleaved operands (ttnn.matmul with no program config: the GEMM report's "
        "out-of-box tables), as (dtype, ratio) pairs at one pass, fitted to such GEMMs; a "
        "format without an entry uses format_efficiency. A GEMM microbenchmark's alone: "
        "inference passes run their program configs",
        default=(),
    )
    attention_efficiency: float = _f(
        "achievable fraction of the attention's peak (its dtype at its math fidelity) of a "
        "fused attention kernel's forward (a tiled chip's flash attention: a pass's "
        "attention core, a prefill's attention over cached tokens and, unless "
        "decode_attention_efficiency says otherwise, a decode step's), fitted to single-op "
        "measurements of that kernel in chunks of at least 128 query rows [ratio]; 0: the "
        "GEMM efficiency of its operands' format, as for the backward",
        default=0.0,
    )
    decode_attention_efficiency: float = _f(
        "the same fraction for a decode step's attention over its cache "
        "(inference.decode_attention_cores, at its own fidelity): the kernel run in small "
        "steps, fitted to single-op measurements of it in chunks of under 128 query rows, "
        "the regime nearest a decode's one tile of query rows [ratio]; 0: "
        "attention_efficiency",
        default=0.0,
    )
    op_latency_s: float = _f(
        "fixed time of every op the tile launches, in series with its compute and data "
        "movement (dispatch and op-to-op gap; tiled chips, fitted to GEMM microbenchmarks) "
        "[s]; 0: none (GPUs give it per kernel kind in gemm and memory_ops)",
        default=0.0,
    )
    host_dispatch_s: float = _f(
        "host time to dispatch one op of a pass not replayed from a trace "
        "(inference.trace): the host issues the ops one after another while the device "
        "runs them, so a block lasts at least its ops times this [s]; 0: none",
        default=0.0,
    )
    host_dispatch_tuned_s: float = _f(
        "host time to dispatch one untraced matmul called with a program config of its own "
        "(tt-metal's manually tuned GEMM benchmark: the config, block-sharded L1 operands), "
        "where host_dispatch is the out-of-box call's; a GEMM microbenchmark's floor [s]; "
        "0: host_dispatch",
        default=0.0,
    )
    dram_reader_bandwidth_bytes_per_s: float = _f(
        "one core's rate reading DRAM through its NoC interface, per core and never scaled "
        "by chip.granularity (a tiled chip's data-movement kernel; Tenstorrent's directed "
        "'DRAM Read' test) [B/s]; 0: not given",
        default=0.0,
    )
    dram_sharded_reader_bandwidth_bytes_per_s: float = _f(
        "one worker core's rate streaming its DRAM bank's shard of the weights in a "
        "DRAM-sharded matmul (tt-metal's MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig "
        "with one worker a bank), per core, never scaled by chip.granularity; "
        "inference.decode_readers_per_bank reads at it [B/s]; 0: dram_reader_bandwidth",
        default=0.0,
    )
    dram_tile_reader_bandwidth_bytes_per_s: float = _f(
        "one core's rate reading DRAM one tile per transaction, many in flight and a barrier "
        "per block (a tt-metal matmul's in1 reader; Tenstorrent's directed 'DRAM Interleaved' "
        "test at tile-sized transactions), per core, never scaled by chip.granularity [B/s]; "
        "0: dram_reader_bandwidth",
        default=0.0,
    )
    host_read_bandwidth_bytes_per_s: float = _f(
        "the host's rate reading a tensor back from the chip's DRAM (tt-metal: Tensor.cpu() "
        "and ttnn.to_torch of a device tensor), per chip and never scaled by "
        "chip.granularity; inference.logits_to_host reads logits at it [B/s]; 0: not given",
        default=0.0,
    )
    dram_read_issue_s: float = _f(
        "one core's time to issue one DRAM read transaction, the floor of a tile read's "
        "time: a tile of b bytes reads in max(this, b / dram_tile_reader_bandwidth) "
        "(Tenstorrent's directed 'DRAM Interleaved' test at its smallest transactions) [s]; "
        "0: none",
        default=0.0,
    )
    multicast_bandwidth_bytes_per_s: float = _f(
        "one core's rate multicasting to a group of cores, per core and never scaled by "
        "chip.granularity (Tenstorrent's directed 'One To All (Multicast)' test) [B/s]; 0: "
        "not given",
        default=0.0,
    )
    matrix_tile_rows: int = _f(
        "rows of the tile a core computes and moves a tensor in (Tenstorrent: 32, "
        "tt::constants::TILE_HEIGHT): a pass's activations of fewer tokens are padded to "
        "whole tiles, so its tensor-parallel collectives move the padded rows (and a decode "
        "attention's query group, a logits read and a weight tile a DRAM reader fetches are "
        "whole tiles); 1: no padding",
        default=1,
    )

    def peak_for(self, dtype: str, fidelity: str | None = None) -> float:
        """Peak FLOP/s for ``dtype`` (bf16 falls back to fp16 and vice versa), divided by the
        passes of math ``fidelity`` when the tile has fidelity settings."""
        table = dict(self.peak_flop_per_s)
        passes = dict(self.fidelity_passes).get(fidelity, 1) if fidelity else 1
        if dtype in table:
            return table[dtype] / passes
        alias = {"bf16": "fp16", "fp16": "bf16"}.get(dtype)
        if alias in table:
            return table[alias] / passes
        raise KeyError(dtype)

    @property
    def dram_sharded_reader_bytes_per_s(self) -> float:
        """One worker's rate in a DRAM-sharded matmul: ``dram_sharded_reader_bandwidth``,
        else ``dram_reader_bandwidth``."""
        return (
            self.dram_sharded_reader_bandwidth_bytes_per_s or self.dram_reader_bandwidth_bytes_per_s
        )

    def for_attention_kernel(self, kernel: str) -> TileSpec:
        """The tile as a run with attention core ``kernel`` costs it
        (:meth:`GemmSpec.for_attention_kernel`)."""
        if self.gemm is None:
            return self
        return dataclasses.replace(self, gemm=self.gemm.for_attention_kernel(kernel))

    def efficiency_for(
        self, dtype: str, fidelity: str | None = None, *, auto_config: bool = False
    ) -> float:
        """Achievable fraction of ``peak_for(dtype, fidelity)`` of a GEMM with weights in
        ``dtype``; with ``auto_config``, of one run with tt-metal's auto-selected program
        config (``auto_format_efficiency`` where it has the format).

        ``format_efficiency`` (else ``compute_efficiency``) is ``e``, the fraction at one
        pass of the matrix engine. At ``p`` passes (``fidelity_passes``) a tile product's
        math takes ``p`` times as long while the rest of its time, the unpacking of its
        operand tiles and the packing of results, stays what the format's bytes make it
        (tt-metal tech_reports/matrix_engine/matrix_engine.md, "Math Fidelity": the
        operation is run once per phase on other bits of the same SrcA and SrcB registers,
        which the unpacker fills once), so a tile product takes ``p/e_p = p + (1-e)/e``
        pass times: ``e_p = p e / (p e + 1 - e)``. Without fidelity settings ``p`` = 1.
        """
        auto = dict(self.auto_format_efficiency) if auto_config else {}
        if dtype in auto:
            return self.at_fidelity(auto[dtype], fidelity)
        return self.at_fidelity(
            dict(self.format_efficiency).get(dtype, self.compute_efficiency), fidelity
        )

    def at_fidelity(self, efficiency: float, fidelity: str | None) -> float:
        """``efficiency`` (at one pass) at math ``fidelity`` (:meth:`efficiency_for`)."""
        passes = dict(self.fidelity_passes).get(fidelity, 1) if fidelity else 1
        if passes == 1:
            return efficiency
        return passes * efficiency / (passes * efficiency + 1 - efficiency)

    def gemm_max_efficiency_for(self, dtype: str) -> float:
        """``gemm.max_efficiency`` of a GEMM in ``dtype``: its ``format_efficiency`` entry
        (e.g. an fp8 GEMM's, fitted to an fp8 matmul measurement), else the GEMM model's."""
        assert self.gemm is not None, "gemm_max_efficiency_for needs a GEMM model"
        return dict(self.format_efficiency).get(dtype, self.gemm.max_efficiency)


@dataclass(frozen=True, slots=True)
class DramSpec:
    """Off-tile memory: DRAM ports on die edges, stacked DRAM per tile, or a GPU's HBM."""

    placement: str = _f(
        "where DRAM channels attach: 'die_edge', 'per_tile' or 'positions' (die-local "
        "core coordinates in ``positions``)"
    )
    capacity_bytes: float = _f("capacity of one DRAM channel/port [B]")
    bandwidth_bytes_per_s: float = _f("bandwidth of one DRAM channel, reads+writes shared [B/s]")
    latency_s: float = _f("access latency of one DRAM channel [s]")
    positions: tuple[tuple[int, int], ...] = _f(
        "placement 'positions': chip-local (row, col) of the core each channel attaches to, "
        "the same on every chip",
        default=(),
    )
    banks: int = _f(
        "DRAM banks per chip, each read by its own worker core in a DRAM-sharded matmul "
        "(tt-metal's dram_grid_size; inference.decode_readers_per_bank): the config's "
        "dram.banks, else one per placed channel (placement 'positions', or the channels "
        "chip.granularity merged); 0: not given [count]",
        default=0,
    )
    interleaved_read_efficiency: float = _f(
        "the fraction of a DRAM channel's bandwidth reached by reads of an interleaved tensor "
        "(its pages spread over every bank) by cores not placed by the banks they read, whose "
        "NoC routes overlap (tt-metal tech_reports/Saturating_DRAM_bandwidth_Blackhole.md: "
        "eight cores at arbitrary places read 344 GB/s where eight bank-adjacent ones read "
        "500); tt-metal's SDPA reads the paged KV cache so, and a tile's reads of its KV "
        "cache last at least their bytes over this share of its channel; 1: at the full rate "
        "[ratio]",
        default=1.0,
    )


@dataclass(frozen=True, slots=True)
class WaferSpec:
    """A grid of chips (the dies of a wafer, or chips joined by links), each a grid of tiles,
    all of them one 2-D mesh or torus (the file's ``chip:`` and ``system:`` with topology mesh
    or torus)."""

    die_rows: int = _f("chips along the system's rows")
    die_cols: int = _f("chips along the system's columns")
    tile_rows: int = _f("tiles per chip along the rows")
    tile_cols: int = _f("tiles per chip along the columns")
    topology: str = _f("topology over the global tile grid: 'mesh' or 'torus'")
    intra_die: LinkSpec = _f("links between neighbouring tiles of one chip")
    inter_die: LinkSpec = _f(
        "links between neighbouring tiles across a chip boundary; with inter_die_links, one "
        "chip-to-chip link"
    )
    inter_die_links: int = _f(
        "chip-to-chip links between two neighbouring chips, per direction; their bandwidth is "
        "shared evenly by the tile pairs along the boundary. 0: one link per boundary tile "
        "pair (the dies of a wafer)",
        default=0,
    )
    bidirectional_rings: bool = _f(
        "ring collectives run as two rings in opposite directions, each on half the buffer "
        "(tt-metal's ring fabric); false: one ring",
        default=False,
    )
    collective_latency_s: float = _f(
        "fixed time of every collective before its first step, in series with its steps' "
        "link latencies and its bytes (the startup of a collective op: NCCL's base latency, "
        "tt-metal's CCL kernel startup) [s]",
        default=0.0,
    )
    composite_all_reduce: bool = _f(
        "an all-reduce runs as two collective calls, a reduce-scatter then an all-gather, "
        "each paying collective_latency (tt-metal's ttnn.all_reduce: tech_reports/CCLs/"
        "CCL_bandwidth.md); false: one call (NCCL's ring all-reduce, one kernel)",
        default=False,
    )
    direct_all_to_all: bool = _f(
        "an all-to-all sends every chunk at once, routed to its destination, so each pays its "
        "route's latency once (tt-metal's all_to_all_async_generic on its fabric: tech_reports/"
        "CCLs/CCL_bandwidth.md); false: n-1 rounds of pairwise exchange, each paying it (the "
        "textbook all-to-all; NCCL's grouped sends and receives)",
        default=False,
    )
    reduce_scatter_efficiency: float = _f(
        "the share of its links' rate a reduce-scatter's bytes keep where an all-gather's "
        "keep all of it; the rest is time its ring stalls with the links free (tt-metal's "
        "reduce_scatter synchronises with its neighbour every few chunks: tech_reports/CCLs/"
        "CCL_bandwidth.md); an all-reduce's reduce-scatter half stalls alike; 1: none "
        "[ratio]",
        default=1.0,
    )
    reduce_scatter_step_latency_s: float = _f(
        "time each step of a reduce-scatter (and of an all-reduce's reduce-scatter half) "
        "takes beyond the link's step latency: each chip adds what it receives to its own "
        "piece before it passes the sum on, where an all-gather's pieces are forwarded as "
        "they arrive (tt-metal's reduce_scatter reduces on worker cores) [s]; 0: none",
        default=0.0,
    )
    injection_efficiency: float = _f(
        "the share of a link's rate at which a chip sends the data of its own that an "
        "all-gather's or all-to-all's flow carries, where the data it forwards for other "
        "chips passes at the full rate (tt-metal's CCL workers feed each direction of a link "
        "through one fabric mux core; its routers forward); a flow carrying the pieces of k "
        "chips keeps up to k times it; an all-reduce's all-gather half alike; 1: none "
        "[ratio]",
        default=1.0,
    )
    ring_fabric_efficiency: float = _f(
        "the share of a link's rate a collective keeps where its chips close a ring (two "
        "rings in opposite directions, bidirectional_rings): a ring fabric avoids deadlock "
        "at every router, with bubble flow control and an extra credit returned per packet, "
        "which a line's fabric does not (tt-metal, CCL_bandwidth.md 'What a ring costs'); "
        "1: none [ratio]",
        default=1.0,
    )
    unit_rows: int = _f(
        "core rows in one simulated tile (granularity; 1 = every core itself)", default=1
    )
    unit_cols: int = _f(
        "core columns in one simulated tile (granularity; 1 = every core itself)", default=1
    )


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A GPU cluster: nodes of devices behind a switch, joined by per-device NICs (the file's
    ``system:`` with topology switch, ``chips: [nodes, GPUs per node]``)."""

    num_nodes: int = _f("number of nodes")
    devices_per_node: int = _f("GPUs per node")
    intra_node: LinkSpec = _f(
        "one device's link to the node switch (NVLink/NVSwitch), per direction"
    )
    inter_node: LinkSpec = _f(
        "one device's NIC to the inter-node fabric, per direction, at its line rate"
    )
    inter_node_efficiency: float = _f(
        "the share of the NIC's line rate the fabric delivers to the run's traffic, measured "
        "(system.node_link.efficiency) [ratio]",
        default=1.0,
    )


@dataclass(frozen=True, slots=True)
class EnergySpec:
    """Energy per event and static power (``energy:`` of a hardware file; optional).

    Every channel a flow crosses costs ``bytes x`` the energy per byte of its kind: one NoC hop
    (``intra_die``), one chip-to-chip link (``inter_die`` on a wafer, ``nvlink`` in a cluster:
    GPU to switch and switch to GPU are two), one NIC link (``nic``), a DRAM access (``dram``).
    """

    energy_j_per_flop: tuple[tuple[str, float], ...] = _f(
        "energy of one FLOP per dtype, as (dtype, J/FLOP) pairs [J/FLOP]"
    )
    sram_j_per_byte: float = _f("energy of one byte read from or written to SRAM [J/B]")
    noc_hop_j_per_byte: float = _f("energy of one byte over one on-die NoC link (a hop) [J/B]")
    chip_to_chip_j_per_byte: float = _f(
        "energy of one byte over one chip-to-chip link: a die crossing on a wafer, an NVLink "
        "(GPU to switch or switch to GPU) in a cluster [J/B]"
    )
    nic_j_per_byte: float = _f("energy of one byte over one NIC link (GPU to fabric or back) [J/B]")
    dram_j_per_byte: float = _f("energy of one byte read from or written to DRAM/HBM [J/B]")
    static_per_tile_w: float = _f("static power of every tile (GPU), busy or not [W]")
    static_per_chip_w: float = _f(
        "static power of every die of a wafer, or of every node of a cluster (host, switches, "
        "NICs), busy or not [W]"
    )
    tdp_per_tile_w: float | None = _f(
        "thermal design power of one tile (a GPU's TDP) [W]; None: unknown", default=None
    )

    def flop_for(self, dtype: str) -> float:
        """Energy of one FLOP in ``dtype`` [J]; bf16 falls back to fp16 and vice versa."""
        table = dict(self.energy_j_per_flop)
        if dtype in table:
            return table[dtype]
        alias = {"bf16": "fp16", "fp16": "bf16"}.get(dtype)
        if alias in table:
            return table[alias]
        raise KeyError(dtype)

    def channel_j_per_byte(self, kind: str) -> float:
        """Energy of one byte over one channel of ``kind`` (a chip channel kind) [J/B]."""
        return {
            "intra_die": self.noc_hop_j_per_byte,
            "inter_die": self.chip_to_chip_j_per_byte,
            "nvlink": self.chip_to_chip_j_per_byte,
            "nic": self.nic_j_per_byte,
            "dram": self.dram_j_per_byte,
        }[kind]


#: Values of ``CostSpec.yield_model``.
YIELD_MODELS = ("poisson", "murphy", "negative_binomial")


@dataclass(frozen=True, slots=True)
class CostSpec:
    """Silicon area, yield and prices (``cost:`` of a hardware file; optional)."""

    tile_area_m2: float = _f("silicon area of one tile (a GPU die) [m2]")
    die_area_m2: float = _f(
        "silicon area of one die: its tiles plus I/O and periphery (a GPU: the GPU die) [m2]"
    )
    defect_density_per_m2: float = _f("defects per area of the process, D0 [1/m2]")
    yield_model: str = _f("'poisson', 'murphy' or 'negative_binomial' (clustered defects)")
    wafer_price_usd: float = _f("price of one processed wafer [USD]")
    lifetime_s: float = _f("time over which the machine's price is written off [s]")
    energy_price_usd_per_j: float = _f("price of electric energy [USD/J]")
    clustering: float = _f(
        "clustering parameter alpha of the negative-binomial yield model [ratio]", default=2.0
    )
    wafer_diameter_m: float = _f("diameter of the wafers the dies are cut from [m]", default=0.3)
    system_price_usd: float | None = _f(
        "price of the whole machine as bought (boards, hosts, network) [USD]; None: the "
        "silicon alone, its good dies at the wafer price",
        default=None,
    )
    training_tokens: float | None = _f(
        "tokens of one training run, for its dollars [count]; None: not reported", default=None
    )


@dataclass(frozen=True, slots=True)
class HostSpec:
    """Memory beside each tile's own, reached over a link of its own: a GPU's share of its
    node's host DRAM over PCIe. Serving swaps preempted requests' KV cache there."""

    capacity_bytes: float = _f("host memory per tile [B]")
    bandwidth_bytes_per_s: float = _f("the tile's link to it, per direction [B/s]")
    latency_s: float = _f("the link's latency [s]")


@dataclass(frozen=True, slots=True)
class DefectSpec:
    """Defective parts of a machine (``defects:`` of a hardware file; optional).

    Listed defects are applied as given; random ones are drawn from ``seed``
    (:func:`palmsim.hardware.defects.resolve_defects`). A dead tile is a hole: its compute,
    its router and its links are unusable, and so is a DRAM port attached to it.
    """

    dead_tiles: tuple[int, ...] = _f("tiles that do not work [tile indices]", default=())
    dead_dies: tuple[int, ...] = _f("dies (wafer) or nodes (cluster) that do not work", default=())
    dead_links: tuple[tuple[int, int], ...] = _f(
        "links between neighbouring tiles that do not work, both directions [tile pairs]",
        default=(),
    )
    degraded_links: tuple[tuple[int, int, float], ...] = _f(
        "links that work at a fraction of their bandwidth, both directions "
        "[(tile, tile, fraction)]",
        default=(),
    )
    dead_dram_ports: tuple[int, ...] = _f("DRAM ports that do not work [port indices]", default=())
    dead_tile_fraction: float = _f(
        "random: the probability that each tile is dead (Poisson-equivalent) [ratio]", default=0.0
    )
    clustering: float | None = _f(
        "random: None draws tiles independently; alpha draws each die's defect density from a "
        "gamma distribution of shape alpha (negative-binomial clustering) [ratio]",
        default=None,
    )
    seed: int = _f("random: seed of the draw", default=0)
    spare_rows: int = _f(
        "wafer: the last rows of tiles of every die are spares, used only in place of the "
        "die's dead tiles",
        default=0,
    )
    spare_cols: int = _f("wafer: the same for the last columns of tiles of every die", default=0)


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """A whole machine: tiles, their memories and the network between them."""

    name: str = _f("name of this hardware")
    kind: str = _f("'wafer' or 'gpu_cluster'")
    tile: TileSpec = _f("the compute tile (or GPU)")
    dram: DramSpec = _f("off-tile memory")
    wafer: WaferSpec | None = _f("wafer layout (kind 'wafer')", default=None)
    cluster: ClusterSpec | None = _f("cluster layout (kind 'gpu_cluster')", default=None)
    energy: EnergySpec | None = _f(
        "energy per event and static power; None: not modelled", default=None
    )
    cost: CostSpec | None = _f("area, yield and prices; None: not modelled", default=None)
    defects: DefectSpec | None = _f("defective tiles, links and ports; None: none", default=None)
    host: HostSpec | None = _f("host memory per tile and its link; None: none", default=None)

    @property
    def num_tiles(self) -> int:
        """Number of tiles (GPUs) in the machine."""
        if self.wafer is not None:
            w = self.wafer
            return w.die_rows * w.die_cols * w.tile_rows * w.tile_cols
        assert self.cluster is not None
        return self.cluster.num_nodes * self.cluster.devices_per_node

    @property
    def num_chips(self) -> int:
        """Dies of a wafer, or nodes of a GPU cluster (what ``static_per_chip_w`` counts)."""
        if self.wafer is not None:
            return self.wafer.die_rows * self.wafer.die_cols
        assert self.cluster is not None
        return self.cluster.num_nodes


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only (or encoder) transformer, by its Hugging Face ``config.json`` names."""

    name: str = _f("model name")
    hidden_size: int = _f("model width h")
    num_attention_heads: int = _f("attention heads a")
    num_key_value_heads: int = _f("key/value heads (GQA); equals heads for MHA")
    intermediate_size: int = _f("MLP inner width")
    num_hidden_layers: int = _f("transformer layers L")
    vocab_size: int = _f("vocabulary size V")
    max_position_embeddings: int = _f("longest sequence the model supports")
    hidden_act: str = _f(
        "'gelu' (2-matrix MLP; ReLU and squared ReLU, 'relu2', are costed as it) or 'silu' "
        "(3-matrix gated MLP: SwiGLU, and Gemma's GeGLU, 'geglu', costed as it)"
    )
    norm: str = _f("'layernorm' or 'rmsnorm'", default="layernorm")
    position_embedding: str = _f("'learned' or 'rope'", default="learned")
    use_bias: bool = _f("linear layers and norms carry bias terms", default=True)
    tie_word_embeddings: bool = _f("LM head shares the embedding matrix", default=True)
    parallel_block: str = _f(
        "attention and MLP side by side, y = x + attn(n(x)) + mlp(n(x)), reduced over the TP "
        "group once: 'one_norm' (GPT-J, PaLM, Falcon-7B, Phi-2, Cohere, MegaScale), "
        "'two_norms' a norm each (GPT-NeoX, Falcon-40B/180B); 'none': the MLP after the "
        "attention",
        default="none",
    )
    attention_dropout: float = _f(
        "attention dropout probability (a mask is stored if > 0)", default=0.0
    )
    hidden_dropout: float = _f(
        "residual dropout probability (a mask is stored if > 0)", default=0.0
    )
    causal: bool = _f("decoder (causal) attention; false for encoders like BERT", default=True)
    attention_head_dim: int | None = _f(
        "width of one attention head d when it is not hidden_size / num_attention_heads "
        "(Hugging Face 'head_dim', e.g. Qwen3); None: h / a",
        default=None,
    )
    num_experts: int = _f(
        "routed experts of each mixture-of-experts layer (Mixtral 'num_local_experts', "
        "DeepSeek 'n_routed_experts', Qwen3 'num_experts'); 0: a dense model",
        default=0,
    )
    num_experts_per_tok: int = _f("experts each token is routed to, the router's top-k", default=0)
    moe_intermediate_size: int | None = _f(
        "inner width of one routed (and one shared) expert; None: intermediate_size",
        default=None,
    )
    num_shared_experts: int = _f(
        "experts every token passes through besides its routed ones (DeepSeek "
        "'n_shared_experts'), each of moe_intermediate_size",
        default=0,
    )
    first_k_dense_replace: int = _f(
        "the first layers that keep a dense MLP of intermediate_size (DeepSeek); the rest "
        "are mixture-of-experts layers (every moe_layer_step-th of them)",
        default=0,
    )
    moe_layer_step: int = _f(
        "after the first first_k_dense_replace layers, every this-many-th layer is a mixture "
        "of experts, the last of each group, the others dense (Hugging Face Llama 4 "
        "'interleave_moe_layer_step', Qwen 'decoder_sparse_step': layers step-1, 2·step-1, "
        "... ; Megatron-Core moe_layer_freq [0]*(step-1)+[1] repeated; Llama 4 Maverick: 2); "
        "1: every one",
        default=1,
    )

    q_lora_rank: int | None = _f(
        "multi-head latent attention (MLA, DeepSeek-V2/V3): rank of the compressed query "
        "(q_down_proj h -> q_lora_rank, RMSNorm, q_up_proj to the heads); None: queries "
        "projected straight from h (only read when kv_lora_rank is set)",
        default=None,
    )
    kv_lora_rank: int | None = _f(
        "MLA: rank of the compressed key/value latent (kv_down_proj h -> kv_lora_rank + "
        "qk_rope_head_dim, RMSNorm, kv_up_proj to the heads' keys and values); None: "
        "ordinary multi-/grouped-query attention",
        default=None,
    )
    qk_nope_head_dim: int | None = _f(
        "MLA: per-head query/key width without rotary embedding (DeepSeek-V3: 128)", default=None
    )
    qk_rope_head_dim: int | None = _f(
        "MLA: per-head query width with rotary embedding, and the width of the one rotary key "
        "shared by all heads (DeepSeek-V3: 64)",
        default=None,
    )
    v_head_dim: int | None = _f("MLA: per-head value width (DeepSeek-V3: 128)", default=None)
    sliding_window: int | None = _f(
        "keys a query of a sliding-window layer attends to, itself included (Hugging Face "
        "'sliding_window': key j is seen by query i iff i - window < j <= i); None: none",
        default=None,
    )
    layer_types: tuple[str, ...] | None = _f(
        "attention of each layer, 'full_attention', 'sliding_attention' or "
        "'linear_attention' (a Gated DeltaNet layer: linear_attention_*) (Hugging Face "
        "'layer_types', gpt-oss); None: every layer sliding when sliding_window is set, "
        "Gated DeltaNet with linear_attention_* sizes, else full, but every "
        "global_attention_interval-th layer full",
        default=None,
    )
    linear_attention_key_heads: int = _f(
        "Gated DeltaNet (linear attention, Qwen3-Next): query and key heads H_k (HF "
        "'linear_num_key_heads'), repeated to the value heads",
        default=0,
    )
    linear_attention_value_heads: int = _f(
        "Gated DeltaNet: value heads H_v (HF 'linear_num_value_heads')", default=0
    )
    linear_attention_key_dim: int = _f(
        "Gated DeltaNet: width d_k of a query or key head (HF 'linear_key_head_dim')", default=0
    )
    linear_attention_value_dim: int = _f(
        "Gated DeltaNet: width d_v of a value head (HF 'linear_value_head_dim')", default=0
    )
    linear_attention_conv_kernel: int = _f(
        "Gated DeltaNet: width of its causal depthwise convolution (HF 'linear_conv_kernel_dim')",
        default=4,
    )
    attention_output_gate: bool = _f(
        "full attention with an output gate (Qwen3-Next): the query projection also gives a "
        "gate per head and width, and the attention's output is multiplied by its sigmoid",
        default=False,
    )
    attention_chunk_size: int | None = _f(
        "chunked local attention (Llama 4, Hugging Face 'attention_chunk_size'): the sequence "
        "is cut into chunks of this many tokens and a query attends causally within its own "
        "chunk, on every layer but the global ones (global_attention_interval); None: none",
        default=None,
    )
    global_attention_interval: int = _f(
        "with attention_chunk_size, a sliding_window or Gated DeltaNet sizes "
        "(linear_attention_*) and no layer_types: every this-many-th layer, the last of each "
        "group, attends to the whole sequence, the others chunked, sliding or linear (Llama "
        "4's NoPE layers, Hugging Face no_rope_layers: layers 3, 7, ... at 4; Megatron-Core "
        "nope_layer_interval; Gemma 2's every other layer, Gemma 3's every sixth; Qwen3-Next's "
        "full_attention_interval); 0: none",
        default=0,
    )
    attention_sinks: bool = _f(
        "each head has a learned sink logit in its softmax denominator (gpt-oss; Transformer "
        "Engine softmax_type 'learnable'): one parameter per head",
        default=False,
    )
    moe_latent_size: int | None = _f(
        "LatentMoE (Nemotron 3 Super; Megatron-Core moe_latent_size): the routed tokens are "
        "projected from h down to this width after the router and back up after the "
        "combine, so the all-to-alls and the experts work at it; None: at h",
        default=None,
    )
    num_nextn_predict_layers: int = _f(
        "multi-token-prediction blocks of the checkpoint (HF 'num_nextn_predict_layers'; "
        "DeepSeek-V3, Nemotron 3 Super), trained when training.mtp_depths > 0",
        default=0,
    )
    mtp_hybrid_override_pattern: str | None = _f(
        "a hybrid model's multi-token-prediction block, as hybrid_override_pattern (Nemotron 3 "
        "Super: '*E'); None: one layer like the model's last",
        default=None,
    )
    hybrid_override_pattern: str | None = _f(
        "a hybrid model's layers, one character each (NVIDIA Nemotron-H's Hugging Face "
        "'hybrid_override_pattern', Megatron-Core's hybrid_override_pattern): 'M' a Mamba-2 "
        "mixer, '*' self-attention, '-' an MLP, 'E' a mixture of experts, each layer that one "
        "block with its own pre-norm and residual (palmsim.workload.mamba); None: every layer "
        "attention then MLP",
        default=None,
    )
    mamba_num_heads: int = _f("Mamba-2 heads H of an 'M' layer (HF 'mamba_num_heads')", default=0)
    mamba_head_dim: int = _f(
        "width P of one Mamba-2 head (HF 'mamba_head_dim'); the mixer's inner width is H·P",
        default=0,
    )
    mamba_state_size: int = _f("Mamba-2 state size N (HF 'ssm_state_size')", default=0)
    mamba_num_groups: int = _f(
        "Mamba-2 groups G whose heads share B and C, as KV heads in GQA (HF 'n_groups')",
        default=1,
    )
    mamba_conv_kernel: int = _f(
        "width of the Mamba-2 causal depthwise convolution (HF 'conv_kernel')", default=4
    )
    mamba_chunk_size: int = _f("tokens per chunk of the SSD scan (HF 'chunk_size')", default=128)

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``attention_head_dim``, or h / a."""
        if self.attention_head_dim is not None:
            return self.attention_head_dim
        return self.hidden_size // self.num_attention_heads

    @property
    def is_mla(self) -> bool:
        """The attention is multi-head latent attention (``kv_lora_rank`` is set)."""
        return self.kv_lora_rank is not None

    @property
    def key_head_dim(self) -> int:
        """Width of one query/key head: MLA's ``qk_nope_head_dim + qk_rope_head_dim``, else
        :attr:`head_dim`."""
        if self.is_mla:
            return int(self.qk_nope_head_dim or 0) + int(self.qk_rope_head_dim or 0)
        return self.head_dim

    @property
    def value_head_dim(self) -> int:
        """Width of one value head: MLA's ``v_head_dim``, else :attr:`head_dim`."""
        if self.is_mla:
            return int(self.v_head_dim or 0)
        return self.head_dim

    def attention_window(self, layer: int) -> int | None:
        """Keys each query of layer ``layer`` (0-based) attends to at most: the
        ``sliding_window`` on a sliding-window layer, None on a full-attention one."""
        if self.sliding_window is None:
            return None
        if self.layer_types is None:
            return None if self._is_global_layer(layer) else self.sliding_window
        return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None

    def _is_global_layer(self, layer: int) -> bool:
        """Layer ``layer`` is one of the every-``global_attention_interval``-th layers that
        attend to the whole sequence (never, at 0)."""
        every = self.global_attention_interval
        return bool(every) and (layer + 1) % every == 0

    def is_linear_attention_layer(self, layer: int) -> bool:
        """Layer ``layer`` (0-based) is a Gated DeltaNet layer: ``layer_types`` says so, or
        without it the model has Gated DeltaNet sizes and ``layer`` is not one of the
        ``global_attention_interval``-th full ones."""
        if self.layer_types is None:
            every = self.global_attention_interval
            return bool(self.linear_attention_key_heads and every) and not self._is_global_layer(
                layer
            )
        return self.layer_types[layer] == "linear_attention"

    @property
    def has_linear_attention(self) -> bool:
        """Some layer is a Gated DeltaNet layer."""
        if self.layer_types is None:
            return self.num_hidden_layers > 0 and self.is_linear_attention_layer(0)
        return "linear_attention" in self.layer_types

    def attention_chunk(self, layer: int) -> int | None:
        """Tokens of the chunks layer ``layer`` (0-based) attends within
        (``attention_chunk_size``), None on a layer attending to the whole sequence."""
        if self.attention_chunk_size is None or self._is_global_layer(layer):
            return None
        return self.attention_chunk_size

    @property
    def has_mixed_attention(self) -> bool:
        """Some layers attend through a sliding window, in chunks or linearly and others
        fully."""
        layers = self.num_hidden_layers
        if self.layer_types is None:  # the pattern repeats every global_attention_interval
            layers = min(layers, max(self.global_attention_interval, 1))
        kinds = {
            (self.attention_window(i), self.attention_chunk(i), self.is_linear_attention_layer(i))
            for i in range(layers)
        }
        return len(kinds) > 1

    @property
    def is_moe(self) -> bool:
        """The model has mixture-of-experts layers."""
        return self.num_experts > 0

    @property
    def expert_intermediate_size(self) -> int:
        """Inner width of one expert [elements]."""
        if self.moe_intermediate_size is not None:
            return self.moe_intermediate_size
        return self.intermediate_size

    def is_moe_layer(self, layer: int) -> bool:
        """Layer ``layer`` (0-based) has a mixture-of-experts MLP."""
        if self.hybrid_override_pattern is not None:
            return self.hybrid_override_pattern[layer] == "E"
        first = self.first_k_dense_replace
        return self.is_moe and layer >= first and (layer - first + 1) % self.moe_layer_step == 0

    @property
    def num_moe_layers(self) -> int:
        """Layers with a mixture-of-experts MLP."""
        if self.hybrid_override_pattern is not None:
            return self.hybrid_override_pattern.count("E")
        if not self.is_moe:
            return 0
        return max(0, self.num_hidden_layers - self.first_k_dense_replace) // self.moe_layer_step

    def layer_kind(self, layer: int) -> str:
        """The block of layer ``layer`` of a hybrid model (``hybrid_override_pattern``: 'M',
        '*', '-' or 'E'); '' for an ordinary layer of attention then MLP."""
        if self.hybrid_override_pattern is None:
            return ""
        return self.hybrid_override_pattern[layer]


@dataclass(frozen=True, slots=True)
class TrainingSpec:
    """What one training iteration processes and with which numerics."""

    seq_len: int = _f("tokens per sample s")
    global_batch_size: int = _f("samples per iteration B (over all data-parallel replicas)")
    dtype: str = _f(
        "compute dtype of weights and activations: fp32, fp16, bf16, or fp8 (Transformer "
        "Engine: the layers' linear GEMMs in fp8, everything else and all stored tensors in "
        "bf16; palmsim.workload.fp8)",
        default="bf16",
    )
    optimizer: str = _f(
        "'adam' (mixed-precision, 16 B/param of state), 'sgd', or 'muon' (one momentum buffer, "
        "each linear weight's update orthogonalised by 5 Newton-Schulz steps of GEMMs, "
        "palmsim.workload.muon; with ZeRO-1 Megatron-Core's layer-wise distributed optimizer: "
        "gradients all-reduced, each replica updating its share of whole matrices)",
        default="adam",
    )
    optimizer_state_dtype: str = _f(
        "dtype of the optimizer's moments (Adam's two, the momentum of SGD and Muon): fp32, "
        "bf16 or fp16 (Megatron-Core --use-precision-aware-optimizer with --exp-avg-dtype and "
        "--exp-avg-sq-dtype; Apex DistributedFusedAdam's dtype, NeMo's optim.dtype)",
        default="fp32",
    )
    master_weights_dtype: str = _f(
        "dtype of the optimizer's copy of the weights in mixed precision: fp32, bf16, fp16, "
        "or none (the optimizer updates the model's own weights: NeMo's distributed Adam "
        "when optim.dtype is the model's dtype and the weights are not fp8); "
        "Megatron-Core --main-params-dtype",
        default="fp32",
    )
    grad_reduce_dtype: str = _f(
        "dtype the data-parallel ranks reduce the gradients in and hold them in: 'weights' "
        "(the weights' dtype), fp32, bf16 or fp16 (Megatron's main_grad buffer: "
        "--accumulate-allreduce-grads-in-fp32, on for bf16 unless --grad-reduce-in-bf16; "
        "PyTorch FSDP's MixedPrecision.reduce_dtype)",
        default="weights",
    )
    lora_rank: int = _f(
        "LoRA fine-tuning (palmsim.workload.lora): every weight frozen, a rank-r adapter "
        "beside each of training.lora_targets, trained; 0: every weight trained",
        default=0,
    )
    lora_targets: tuple[str, ...] = _f(
        "the linears LoRA adapts, by op name; the default is Megatron-Bridge's LoRA "
        "target_modules (linear_qkv, linear_proj, linear_fc1, linear_fc2)",
        default=("qkv", "out_proj", "fc1", "fc2"),
    )
    bf16_layers_at_start: int = _f(
        "fp8 (or NVFP4) training: the first this many layers run every GEMM in bf16 "
        "(Megatron-Core --first-last-layers-bf16 with --num-layers-at-start-in-bf16)",
        default=0,
    )
    bf16_layers_at_end: int = _f(
        "the same for the last layers (--num-layers-at-end-in-bf16)",
        default=0,
    )
    bf16_linears: tuple[str, ...] = _f(
        "fp8 (or NVFP4) training: the Transformer Engine linears kept in bf16 in every layer, "
        "by op name (palmsim.workload.fp8.FP8_LINEARS; a TE quantization recipe per module, "
        "as Megatron-Bridge's Nemotron 3 Super te_quant.cfg keeps attention and the latent "
        "projections)",
        default=(),
    )
    mtp_in_bf16: bool = _f(
        "fp8 (or NVFP4) training: the multi-token-prediction layers run in bf16 "
        "(Megatron-Core keep_mtp_spec_in_bf16)",
        default=False,
    )
    mtp_depths: int = _f(
        "multi-token-prediction depths trained on the last pipeline stage (Megatron-Core "
        "--mtp-num-layers; palmsim.workload.builders.mtp_units): each re-embeds the shifted "
        "tokens, norms them and the previous depth's hidden state, projects the pair 2h -> h "
        "(eh_proj), runs the model's MTP block and its own logits and loss through the shared "
        "head; more depths than the model's one block repeat it (mtp_use_repeated_layer). "
        "0: none",
        default=0,
    )
    attention_kernel: str = _f(
        "the attention core: 'unfused' (Megatron-LM's QKᵀ, softmax, dropout and attention "
        "over V as separate kernels, keeping the a·s² scores), 'fused' (FlashAttention-2's "
        "algorithm, as Transformer Engine's DotProductAttention runs it: one kernel, no a·s² "
        "tensor, causal blocks above the diagonal skipped; cuDNN's kernel on Hopper and later, "
        "at tile.gemm.attention_*_efficiency) or 'flash2' (the same work in the flash-attn "
        "package's FlashAttention-2 kernel, which Transformer Engine runs where cuDNN's is off, "
        "NVTE_FUSED_ATTN=0; at tile.gemm.flash2_*_efficiency)",
        default="unfused",
    )
    packed_document_tokens: int | None = _f(
        "sequence packing (fine-tuning): documents of this many tokens concatenated into each "
        "seq_len sequence, each attending only within itself (the THD layout with cu_seqlens "
        "that Transformer Engine's fused attention takes; NeMo's and Megatron-Bridge's packed "
        "SFT/PEFT datasets): the attention core computes seq_len/L documents' pairs, not the "
        "whole sequence's; needs a fused attention kernel; None (or L >= seq_len): one "
        "document per sequence",
        default=None,
    )
    fp8_recipe: str = _f(
        "scaling of an fp8 run (dtype fp8 only): 'delayed' (Transformer Engine's "
        "DelayedScaling, Megatron-Core's default: scales from an amax history, updated per "
        "pass), 'current' (Float8CurrentScaling: each tensor's amax is taken just before "
        "its cast), 'mxfp8' (MXFP8BlockScaling, Blackwell: every 32 elements share an E8M0 "
        "scale, row-wise and column-wise copies, no amax history), 'blockwise' "
        "(Float8BlockScaling: an fp32 scale per 1x128 block, per 128x128 block of a weight) "
        "or 'nvfp4' (NVFP4BlockScaling, Blackwell: 4-bit E2M1 GEMM operands, an E4M3 scale "
        "per 16 elements, per 16x16 block of a weight, and a per-tensor fp32 scale from each "
        "tensor's amax; its GEMMs run at the chip's tile.peak.nvfp4)",
        default="delayed",
    )
    fp8_param_gather: bool = _f(
        "fp8 training (dtype fp8 only): keep the fp8 GEMMs' weights as fp8 tensors with no "
        "16-bit copy and all-gather them in fp8 after a distributed-optimizer step "
        "(Megatron-Core --fp8-param-gather; NeMo's and Megatron-Bridge's fp8 recipes set "
        "it): the weights' memory is their fp8 copies alone; with per-tensor or blockwise "
        "scaling the all-gather moves 1 B per such weight and each replica then transposes "
        "the gathered weights, with MXFP8 it still gathers 16-bit values and re-casts them",
        default=False,
    )
    fp8_transpose_cache: bool = _f(
        "fp8 training: keep the fp8 copies of the weights (with fp8 parameters, their "
        "transposes) from an iteration's first micro-batch to its last, cast once per "
        "iteration (Transformer Engine's cached weight workspace); false: Megatron-Core's "
        "disable_parameter_transpose_cache, under which every micro-batch casts them again "
        "and frees them after each layer",
        default=True,
    )
    moe_capacity_factor: float | None = _f(
        "mixture-of-experts capacity factor: an expert takes at most ceil(factor x its "
        "uniform share) of each rank's routed tokens, the rest are dropped (Megatron-Core "
        "--moe-expert-capacity-factor); None: dropless",
        default=None,
    )
    expert_load: str = _f(
        "how routed tokens spread over the experts: 'uniform' (each expert its exact share), "
        "'multinomial' (each token picks its experts uniformly at random, seeded by "
        "run.seed) or 'dirichlet' (expert popularity drawn from a symmetric Dirichlet of "
        "expert_load_concentration, then tokens drawn as for multinomial)",
        default="uniform",
    )
    expert_load_concentration: float = _f(
        "concentration alpha of the 'dirichlet' expert load: small is skewed, large is "
        "near-uniform [ratio]",
        default=1.0,
    )


@dataclass(frozen=True, slots=True)
class InferenceSpec:
    """What one inference (serving) run processes: a batch of equal requests."""

    prompt_len: int = _f("prompt tokens per request (prefill length)")
    output_len: int = _f("generated tokens per request; the first comes from the prefill")
    batch: int = _f("concurrent requests (over all data-parallel replicas)")
    dtype: str = _f("dtype of activations and compute: fp32, fp16 or bf16", default="fp16")
    weight_dtype: str = _f(
        "dtype weights are stored in: fp32, fp16, bf16, fp8, int8, bfp8 or bfp4", default="fp16"
    )
    kv_dtype: str = _f(
        "dtype of the KV cache: fp32, fp16, bf16, fp8, int8, bfp8 or bfp4", default="fp16"
    )
    mlp_weight_dtype: str | None = _f(
        "dtype of the MLP weights when it differs from weight_dtype (e.g. Tenstorrent's bfp4 "
        "MLP with bfp8 attention); None: weight_dtype",
        default=None,
    )
    mlp_down_weight_dtype: str | None = _f(
        "dtype of the MLP's down projection (fc2, the experts' fc2) when it differs from the "
        "MLP's (e.g. tt-metal's bfp8 FF2 beside bfp4 FF1/FF3); None: the MLP's",
        default=None,
    )
    math_fidelity: tuple[tuple[str, str], ...] = _f(
        "math fidelity of the GEMMs by weight dtype, as (dtype, fidelity) pairs, on a chip "
        "with tile.fidelity_passes; GEMMs of other formats and the attention use the "
        "fidelity of the activation dtype's entry, or the full peak without one",
        default=(),
    )
    ops_per_layer: int = _f(
        "device ops one layer launches per pass in the serving code (e.g. 23 in "
        "tt_transformers' decoder on one chip); each beyond the layer's op-graph kernels "
        "pays tile.op_latency; 0: the op graph's kernels [count]",
        default=0,
    )
    prefill_ops_per_layer: int = _f(
        "device ops one layer launches per prefill pass where the code's prefill path "
        "launches another number than its decode (27 in the Galaxy Llama demo against 15); "
        "0: ops_per_layer [count]",
        default=0,
    )
    trace: str = _f(
        "passes replayed from a captured trace, free of host dispatch "
        "(tile.host_dispatch): 'decode' (tt_transformers' demos, CUDA graphs of decode), "
        "'all' or 'none'",
        default="decode",
    )
    weight_prefetch: str = _f(
        "passes whose layer weights a DRAM prefetcher on cores of their own streams ahead of "
        "the ops (tt-metal's dram_prefetcher into a global circular buffer, as the Galaxy "
        "Llama demo's decode does): a block's weight reads then overlap its ops' fixed "
        "latency (tile.op_latency) instead of following it, and start with the block before "
        "it (the prefetcher's buffer holds a block ahead); 'decode', 'all' or 'none'",
        default="none",
    )
    kv_placement: str = _f(
        "where a request's KV cache lives under 2-D tensor parallelism (mapping.tp_2d), whose "
        "second axis splits the requests: 'sequence' (with fewer requests than its ranks, "
        "each request's cache split by sequence over them, as WaferLLM's decode spreads it "
        "over its grid) or 'request' (each request's cache whole on one rank of that axis, "
        "the others idle, as tt-metal's Galaxy Llama demo keeps a user on its device group)",
        default="sequence",
    )
    prefill_attention_2d: str = _f(
        "how a prefill pass's attention core runs under 2-D tensor parallelism "
        "(mapping.tp_2d), whose second axis holds the same heads: 'split' (each of its b ranks "
        "takes 1/b of the queries, balanced over the causal mask, as tt-metal's "
        "ring-distributed SDPA does, Llama TG since PR #28992 of 2025-09-21 for prompts over "
        "1024 tokens at batch 1) or 'replicated' (each rank computes its heads' whole "
        "attention, as before it)",
        default="split",
    )
    prefill_attention_split: str = _f(
        "how a prefill's fused attention kernel deals its work to the prefill's cores "
        "(prefill_compute_cores, else the tile's): 'even' (spread evenly), or as tt-metal's "
        "SDPA deals its query chunks, 64 rows a chunk below 2048 a pass and 256 from (its "
        "model demos' program config): 'heads_first' (its cores split the users, then the "
        "heads, then each head's chunks in ranges, paired low with high only where the "
        "ranges divide them evenly: until PR #44614 of 2026-05-18) or 'pairs' (every "
        "head's causal chunk pairs dealt out flat: since); the attention then takes its "
        "busiest core's work over the mean core's longer",
        default="even",
    )
    prefill_weight_readers: int = _f(
        "cores that read a prefill GEMM's weights from DRAM, one per column of its core grid, "
        "each reading a block a tile per transaction and then multicasting it down its "
        "column (tt-metal's 2-D multicast matmul, as tt_transformers runs prefill: 8 "
        "columns); a layer block's weights then arrive at readers x 1/(1/read + "
        "1/tile.multicast_bandwidth), read at tile.dram_tile_reader_bandwidth with "
        "tile.dram_read_issue a tile, not at the DRAM bandwidth; 0: at the DRAM bandwidth "
        "[count]",
        default=0,
    )
    prefill_compute_cores: int = _f(
        "cores of a simulated tile that run a prefill pass's layer GEMMs and attention core "
        "where the serving code builds them on a smaller grid than the chip's "
        "(tt_transformers: at most 8x8 = 64 cores on any chip); they run at this share of "
        "the tile's peak and SRAM bandwidth; the embedding and the LM head keep the whole "
        "tile; 0: every core [count]",
        default=0,
    )
    attention_kernel: str = _f(
        "the attention core of every pass, as training.attention_kernel: 'fused' (a "
        "FlashAttention-style kernel, as serving engines run it: vLLM's FlashAttention and "
        "FlashInfer backends, tt-metal's SDPA), 'flash2' (the flash-attn package's "
        "FlashAttention-2 kernel, at its own rate) or 'unfused' (QK^T, softmax and the product "
        "with V as separate kernels keeping the scores, as WaferLLM's MeshGEMMs do)",
        default="fused",
    )
    prefill_chunk_tokens: int = _f(
        "tokens of a prompt prefilled per pass: a longer prompt runs in chunks of this many, "
        "each attending to the chunks before it through the KV cache (tt_transformers' "
        "max_prefill_chunk_size, chunked SDPA over the paged cache; vLLM's chunked prefill), "
        "so a pass holds one chunk's activations; 0: the whole prompt in one pass [tokens]",
        default=0,
    )
    decode_attention_cores: int = _f(
        "cores that run one request's decode attention over its cached tokens (tt-metal's "
        "SDPA decode splits its program grid evenly over the batch it is built for, "
        "num_cores_per_batch, whether or not each request is live): the request's cache "
        "streams in at this x tile.dram_reader_bandwidth and its QK^T and AV run on this "
        "many of the simulated tile's cores, their rows padded to whole tiles "
        "(tile.matrix_tile_rows) per KV "
        "head; 0: every core at the DRAM bandwidth [count]",
        default=0,
    )
    decode_attention_cores_per_head: int = _f(
        "at most this many of a request's decode_attention_cores work on each of its KV "
        "heads on a tile (tt-metal's SDPA decode: SDPAProgramConfig.max_cores_per_head_batch, "
        "16 unless the serving code sets it), so a tile holding few KV heads runs a "
        "request's attention on fewer cores; 0: no such limit [count]",
        default=0,
    )
    decode_attention_fidelity: str | None = _f(
        "math fidelity of the decode attention over the cache (decode_attention_cores), on a "
        "chip with tile.fidelity_passes, where the serving code runs it at another fidelity "
        "than the prefill's (tt_transformers and the Galaxy Llama demo: HiFi2 against the "
        "prefill SDPA's HiFi4); None: the activation dtype's, as the prefill's",
        default=None,
    )
    decode_readers_per_bank: int = _f(
        "worker cores per DRAM bank that run a decode GEMM whose weights stay in DRAM "
        "(tt-metal's DRAM-sharded matmul, num_workers_per_dram_bank: 1 as tt_transformers "
        "runs its decode GEMMs and, in every pass, its LM head): each reads its share of its "
        "bank's weights at "
        "tile.dram_sharded_reader_bandwidth (else tile.dram_reader_bandwidth) and computes "
        "that slice of the output itself, so the GEMM streams at dram.banks x this x that "
        "rate and computes on that many of the simulated tile's cores; 0: on every core at "
        "the DRAM bandwidth [count]",
        default=0,
    )
    prefill_reduce_dtypes: tuple[tuple[str, str], ...] = _f(
        "the format a prefill's 1-D tensor-parallel reduction after a block (attn, mlp, mamba) "
        "moves its partial sums in, as (block, format) pairs, where the serving code "
        "reduce-scatters the block's output in its own format and all-gathers the sums apart: "
        "a reduce-scatter in that format, then an all-gather in dtype (tt_transformers on an "
        "N300 or a T3000: {attn: bfp8}, its WO's output); a block without an entry: one "
        "all-reduce in dtype",
        default=(),
    )
    residual_split: str = _f(
        "the ops between a layer's blocks that run on 1/tp of the hidden width under 1-D "
        "tensor parallelism, where the serving code keeps the residual stream split over the "
        "ranks (its reduction after a block a reduce-scatter, the next block gathering its "
        "input): 'none' (every rank holds the whole stream, as Megatron's and vLLM's "
        "all-reduce leave it), 'adds' (the residual adds, in every pass; the norms gather "
        "the stream first and run whole: tt_transformers on an N300 or a T3000, decoder.py "
        "'x is fractured across devices') or 'adds_and_prefill_norms' (a prefill's norms "
        "too, each gathering its statistics alone: tt_transformers' distributed RMSNorm, "
        "which it runs in a prefill of a model wider than 4096, "
        "model_config.is_distributed_norm)",
        default="none",
    )
    logits_to_host: str = _f(
        "the passes whose logits the serving code reads back to the host to sample the next "
        "token there, at tile.host_read_bandwidth: each request's tile of rows "
        "(tile.matrix_tile_rows) of the vocabulary in the activation dtype. 'none' "
        "(sampled on device: only token ids return), 'prefill' (each request's prefill "
        "returns the tile holding its last token: tt_transformers' "
        "generator.prefill_forward_text, model.process_output_prefill), 'decode' (every "
        "decode step's rows, the prefill sampling on device: tt-metal's Falcon 7B demo), "
        "'prefill_and_decode' (both: its Falcon 40B demo) or "
        "'prefill_and_batch_decode' (the prefill's, and every decode step of a replica "
        "serving more than one request: tt_transformers' simple_text_demo before on-device "
        "sampling, whose device argmax served one request a data-parallel group)",
        default="none",
    )
    fused_projections: bool = _f(
        "the serving code multiplies the query, key and value projections as one GEMM, and "
        "a gated MLP's gate and up projections as one (vLLM's QKVParallelLinear and "
        "MergedColumnParallelLinear, Megatron's fused QKV); false: each its own GEMM of an "
        "equal share of the columns, as WaferLLM's prefill does (MeshInfra/WaferLLM "
        "Prefill/WSE-2/src/prefill.csl: Q, K, V, up and gate weights apart), which matters "
        "where a GEMM's cost has a fixed part per product (tile.mesh_gemm)",
        default=True,
    )

    def prefill_passes(self) -> tuple[int, int]:
        """``(tokens, passes)``: the prompt prefilled in ``passes`` passes of ``tokens`` new
        tokens each (``prefill_chunk_tokens``, or the whole prompt), the last taking what is
        left."""
        tokens = min(self.prefill_chunk_tokens or self.prompt_len, self.prompt_len)
        return tokens, -(-self.prompt_len // tokens)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A model and what to do with it."""

    model: ModelSpec = _f("the model architecture")
    training: TrainingSpec = _f("the training set-up")
    mode: str = _f("'training' or 'inference'", default="training")
    inference: InferenceSpec | None = _f("the inference set-up (mode 'inference')", default=None)


# --------------------------------------------------------------------------- mapping and run


@dataclass(frozen=True, slots=True)
class MappingSpec:
    """How the workload is split and placed onto the machine."""

    pp: int = _f("pipeline-parallel stages", default=1)
    tp: int = _f("tensor-parallel degree (tiles per stage replica)", default=1)
    dp: int = _f("data-parallel replicas", default=1)
    micro_batch_size: int = _f("samples per micro-batch", default=1)
    schedule: str = _f("pipeline schedule: 'gpipe' or '1f1b'", modes=TRAINING_ONLY, default="1f1b")
    recompute: str = _f(
        "activation recompute: 'none', 'selective' or 'full'", modes=TRAINING_ONLY, default="none"
    )
    recompute_modules: tuple[str, ...] = _f(
        "with recompute 'selective', the modules re-run before the backward, as Megatron-Core's "
        "--recompute-modules names them: core_attn, moe_act, layernorm, mla_up_proj, mlp (a "
        "dense MLP), moe (the whole MoE layer, its all-to-alls too), shared_experts "
        "(palmsim.workload.recompute); empty: core_attn, Megatron-Core's default",
        modes=TRAINING_ONLY,
        default=(),
    )
    distribute_saved_activations: bool = _f(
        "with recompute 'full' and tensor parallelism (no sequence parallelism): each TP "
        "rank keeps 1/tp of every layer's checkpointed input and all-gathers it over the TP "
        "group before the layer's recompute (Megatron-LM's "
        "--distribute-checkpointed-activations, metaseq's, DeepSpeed's partition_activations)",
        modes=TRAINING_ONLY,
        default=False,
    )
    placement: str = _f("placement strategy onto the tile grid, e.g. 'snake'", default="snake")
    partition: str = _f(
        "how layers are split into stages: 'layers' or 'cost'",
        modes=TRAINING_ONLY,
        default="layers",
    )
    pipeline_layout: tuple[int, ...] | None = _f(
        "the model's layers on each model chunk, in chunk order (chunk j·pp + s of stage s), "
        "as Megatron-Core's --pipeline-model-parallel-layout places its decoder layers (the "
        "embedding, the loss and any MTP stay on the first and last chunks); None: split by "
        "mapping.partition",
        modes=TRAINING_ONLY,
        default=None,
    )
    dp_overlap: bool = _f(
        "overlap the DP gradient all-reduce with the backward pass",
        modes=TRAINING_ONLY,
        default=True,
    )
    overlap_param_gather: bool = _f(
        "ZeRO-1/2: all-gather the updated weights in the first forward of the next "
        "iteration, in place of one all-gather after the optimizer step (Megatron-Core's "
        "--overlap-param-gather): the first stage's first chunk unit by unit, every other "
        "chunk in one bucket, each gather waited for by the unit that uses it, which starts "
        "the next; the first starts with the iteration",
        modes=TRAINING_ONLY,
        default=False,
    )
    tp_overlap: bool = _f(
        "overlap each column-parallel linear's backward TP all-reduce (or reduce-scatter) "
        "with its weight-gradient GEMM (Megatron-LM's asynchronous TP all-reduce)",
        modes=TRAINING_ONLY,
        default=False,
    )
    tp_comm_overlap: bool = _f(
        "overlap the sequence-parallel TP all-gathers and reduce-scatters with the GEMMs next "
        "to them, as Transformer Engine's userbuffers do (Megatron-Core's --tp-comm-overlap; "
        "NeMo and Megatron-Bridge recipes' tp_comm_overlap): the gather ahead of QKV, fc1 "
        "and the LM head with that GEMM, the scatter after the attention projection and "
        "fc2 with it; backward, the output gradient's gather with the row-parallel dgrad "
        "and the input gradient's scatter with the column-parallel wgrad. Needs "
        "sequence_parallel",
        modes=TRAINING_ONLY,
        default=False,
    )
    tp_comm_overlap_sms: int = _f(
        "compute units (a GPU's SMs) the userbuffers reduce-scatters of tp_comm_overlap take "
        "from the GEMMs they overlap, which run on the rest (set_sm_margin): the row-parallel "
        "forward GEMMs ('pipeline' method) and the column-parallel weight-gradient GEMMs "
        "('bulk'); Transformer Engine's default, 16 (get_default_config in "
        "transformer_engine/pytorch/module/base.py; Megatron-Bridge's H100 configurations "
        "give 16-32 for the pipelines). The ring-exchange all-gathers run on the copy "
        "engines and take none",
        modes=TRAINING_ONLY,
        default=16,
    )
    moe_a2a_overlap: bool = _f(
        "merged 1F1B (Megatron-Core's --overlap-moe-expert-parallel-comm, Megatron-Bridge's "
        "moe_a2a_overlap): each steady-state backward runs together with the forward after "
        "it, of a later micro-batch, taking turns on the tile's compute, so the "
        "communication of one, the EP all-to-alls among it, overlaps the compute of the "
        "other. Needs ep > 1, interleaved "
        "stages when pp > 1 and no full recompute (Megatron-Core's TransformerConfig checks)",
        modes=TRAINING_ONLY,
        default=False,
    )
    grad_accumulation: str = _f(
        "how each backward's weight gradients reach the gradient buffer: 'fused' into the "
        "weight-gradient GEMM (Megatron-LM's --gradient-accumulation-fusion); "
        "'every_microbatch': an add kernel per parameter tensor after every backward "
        "(Megatron-LM's local DDP main_grad hook); 'after_first_microbatch': the first "
        "backward's gradients are kept, later ones added in a kernel (PyTorch's "
        "AccumulateGrad, e.g. under PyTorch DDP)",
        modes=TRAINING_ONLY,
        default="fused",
    )
    p2p_scatter_gather: bool = _f(
        "pipeline sends: each TP rank sends 1/t of the stage boundary's activations (or "
        "gradients) and the receiving TP group all-gathers them (Megatron-LM's default; "
        "false = --no-scatter-gather-tensors-in-pipeline: each rank sends all of it); "
        "no effect with sequence parallelism, whose ranks send their own s/t shard",
        default=True,
    )
    p2p_overlap: bool = _f(
        "a stage computes on while its pipeline send is in flight (Megatron-LM's "
        "--overlap-p2p-communication); false: its next step waits for the send to finish",
        default=True,
    )
    virtual_stages: int = _f(
        "model chunks per pipeline stage: > 1 runs Megatron's interleaved 1F1B",
        modes=TRAINING_ONLY,
        default=1,
    )
    zero: int = _f(
        "ZeRO stage over the DP group: 0 none, 1 optimizer state, 2 + gradients, 3 + weights "
        "sharded (Rajbhandari et al. SC20)",
        modes=TRAINING_ONLY,
        default=0,
    )
    zero_collectives: str = _f(
        "ZeRO-3's data-parallel collectives: 'unit', one weight all-gather per unit (a layer's "
        "block) of each pass, the next prefetched while a unit runs, and one gradient bucket per "
        "unit reduce-scattered during the backward (PyTorch FSDP, Megatron-FSDP, DeepSpeed from "
        "v0.5.5 on); 'tensor', one all-gather and one gradient reduce-scatter per parameter "
        "tensor, each run alone while the tile waits, as DeepSpeed ZeRO-3 ran them from v0.3.12 "
        "to v0.5.4 (partition_parameters.py: _allgather_param calls torch.cuda.synchronize() "
        "before every gather, which made its prefetch 'not async at all', PR #1188; "
        "_reduce_scatter_gradient per tensor until v0.6.0); every tensor is gathered in every "
        "pass: DeepSpeed's persistence threshold and reuse distance, which gather fewer, are not "
        "modelled (README, SC21 ZeRO-3 rows)",
        modes=TRAINING_ONLY,
        default="unit",
    )
    sequence_parallel: bool = _f(
        "Megatron sequence parallelism: norms and dropouts on s/t tokens, reduce-scatter + "
        "all-gather in place of each TP all-reduce",
        modes=TRAINING_ONLY,
        default=False,
    )
    ep: int = _f(
        "expert-parallel degree: groups of ep ranks of a stage split each MoE layer's experts "
        "(E/ep per tile) and exchange tokens by all-to-all (Megatron-Core "
        "--expert-model-parallel-size); expert_tp*ep divides tp*cp*dp, ep divides num_experts",
        modes=("training", "inference"),
        default=1,
    )
    expert_tp: int | None = _f(
        "expert tensor-parallel degree ETP: each local expert's GEMMs split over etp ranks; "
        "the MoE layers fold ETP x EP x EDP over the stage's tp*cp*dp ranks (MoE parallel "
        "folding, Megatron-Core --expert-tensor-parallel-size); null: tp (Megatron-Core's "
        "default); divides tp, < tp needs sequence_parallel",
        modes=TRAINING_ONLY,
        default=None,
    )
    expert_placement: str = _f(
        "which experts each EP rank holds: 'contiguous' (Megatron-Core) or 'balanced' (the "
        "most loaded experts spread first, by the drawn expert load)",
        modes=("training", "inference"),
        default="contiguous",
    )
    moe_dispatcher: str = _f(
        "how tokens reach their experts on other GPUs: 'alltoall' (Megatron-Core's alltoall "
        "dispatcher, one copy per expert) or 'deepep' (DeepEP's, Megatron-Core's flex "
        "dispatcher: a token crosses to another node once, to the GPU of the sender's local "
        "rank, which forwards it over NVLink; needs a GPU cluster's nodes)",
        modes=("training", "inference"),
        default="alltoall",
    )
    tp_2d: tuple[int, int] | None = _f(
        "2-D tensor parallelism [a, b] of a stage replica's a*b = tp ranks (tt-metal's "
        "Galaxy demos): a ranks split the attention heads (and their KV cache) and the MLP's "
        "columns, b ranks split the hidden dimension and the decode batch's users; the "
        "all-reduces after the output projections run over groups of a ranks, reduce-scatters "
        "and all-gathers over groups of b ranks (palmsim.mapping.inference); each group on a "
        "row or column of the b x a rectangle of tiles it is placed on (each replica a whole "
        "block of the tile grid cut into b x a blocks, or a x b); null: 1-D (one group of tp "
        "ranks)",
        modes=INFERENCE_ONLY,
        default=None,
    )
    cp: int = _f(
        "context-parallel degree: each sample's sequence is split over cp tiles with "
        "Megatron-Core's causal load balancing, K and V pass around a ring "
        "(--context-parallel-size); the tiles used are pp*tp*cp*dp",
        modes=TRAINING_ONLY,
        default=1,
    )


@dataclass(frozen=True, slots=True)
class RunSpec:
    """How to run the simulation."""

    seed: int = _f("seed of the run's random generator", default=0)
    until_s: float | None = _f(
        "stop simulated time here; unfinished work is an error [s]", default=None
    )
    symmetric_replicas: bool = _f(
        "simulate one data-parallel replica when the replicas are provably symmetric, and of "
        "each stage TP rank 0 when the ranks are too (GPU clusters only; the result is the "
        "full run's); false simulates every GPU",
        default=True,
    )
    # Budgets of palmsim.guard, fitted to the 2-core, 24 GiB machine palmsim is developed on:
    # an hour of simulation at the 40k events/s measured there (benchmarks/README.md,
    # 2026-12-01: W3 39,937 events/s) and a third of its memory (one run per core, plus the
    # copies of the records made while they are summarised and written).
    max_events: int = _f(
        "refuse a run whose estimated SimPy events (palmsim.guard) exceed this", default=144_000_000
    )
    max_memory_bytes: float = _f(
        "refuse a run whose estimated memory for its chip, plan and records (palmsim.guard) "
        "exceeds this [B]",
        default=8 * 2**30,
    )
    memory_check: bool = _f(
        "refuse a training mapping whose weights, gradients, optimizer state and activations "
        "overflow a DRAM port (MappingError: model does not fit); false simulates it anyway "
        "(its memory in summary.json beyond the capacity), as validate does for a published "
        "run that ran",
        default=True,
    )


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """Everything one run needs, plus where each part came from."""

    hardware: HardwareSpec
    workload: WorkloadSpec
    mapping: MappingSpec
    run: RunSpec = field(default_factory=RunSpec)
    sources: tuple[tuple[str, str], ...] = ()  # (part, file path) for messages and provenance


# --------------------------------------------------------------------------- serving (issue 16)


#: Request-length distributions the traffic generator knows (``TrafficSpec.lengths``).
SERVING_LENGTHS = ("fixed", "sharegpt", "summarization", "code")
#: Arrival processes (``TrafficSpec.arrival``).
SERVING_PREEMPTION_MODES = ("recompute", "swap")
SERVING_ARRIVALS = ("poisson", "gamma", "trace", "closed")
#: Routers between replicas (``ServingSpec.router``).
SERVING_ROUTERS = ("round_robin", "least_loaded")


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """Which requests arrive when: an arrival process and a length distribution."""

    arrival: str = _f(
        "'poisson', 'gamma' (bursty, with cv), 'trace' (a CSV file) or 'closed' (a closed "
        "loop of concurrency clients, each sending its next request when the last finished)"
    )
    rate_per_s: float = _f("mean arrival rate [requests/s] (poisson, gamma)", default=1.0)
    cv: float = _f(
        "coefficient of variation of inter-arrival times (gamma; 1 = Poisson)", default=1.0
    )
    num_requests: int = _f("requests to generate (poisson, gamma, closed)", default=100)
    concurrency: int = _f(
        "requests in flight at once (closed), as vLLM's benchmark --max-concurrency with "
        "--request-rate inf",
        default=1,
    )
    lengths: str = _f(
        "length distribution: 'fixed', 'sharegpt', 'summarization' or 'code'", default="fixed"
    )
    prompt_tokens: int = _f("prompt tokens of every request (lengths 'fixed')", default=512)
    output_tokens: int = _f("output tokens of every request (lengths 'fixed')", default=128)
    shared_prefix_tokens: int = _f(
        "tokens of a system prompt every generated request's prompt starts with (added to its "
        "drawn length); 0 = none",
        default=0,
    )
    # (arrival_s, prompt_tokens, output_tokens) rows of a trace file, read by the loader
    trace: tuple[tuple[float, int, int], ...] = _f(
        "the rows of the trace CSV (arrival 'trace'): arrival_s, prompt_tokens, output_tokens",
        default=(),
    )
    trace_path: str = _f("the trace CSV file, relative to the serving file", default="")


@dataclass(frozen=True, slots=True)
class SchedulerSpec:
    """One replica's scheduler, as vLLM V1's (vllm/v1/core/sched/scheduler.py)."""

    max_num_seqs: int = _f("most requests in one iteration's batch", default=256)
    max_num_batched_tokens: int = _f(
        "most tokens (prefill + decode) in one iteration", default=8192
    )
    block_size: int = _f("tokens per KV-cache block (paged attention)", default=16)
    enable_chunked_prefill: bool = _f(
        "split prompts into chunks that fit the token budget (Sarathi-Serve)", default=True
    )
    gpu_memory_utilization: float = _f(
        "fraction of a tile's memory (SRAM + its share of DRAM) the replica may use", default=0.9
    )
    num_kv_blocks: int = _f("KV-cache blocks per replica; 0 = derived from memory", default=0)
    enable_prefix_caching: bool = _f(
        "reuse the full KV blocks of the shared prompt prefix while a request holds them",
        default=False,
    )
    preemption_mode: str = _f(
        "'recompute' (free a preempted request's KV and recompute it) or 'swap' (move its KV "
        "blocks to the hardware's host memory and back, vLLM V0's swap path)",
        default="recompute",
    )
    swap_space_bytes: float = _f(
        "host memory per tile for swapped KV blocks [B] (vLLM's --swap-space, default 4 GiB)",
        default=4 * 2**30,
    )


@dataclass(frozen=True, slots=True)
class SloSpec:
    """A service-level objective for goodput: both latencies at or below their limits."""

    ttft_s: float = _f("time-to-first-token limit [s]", default=0.5)
    tpot_s: float = _f("time-per-output-token limit [s]", default=0.05)
    quantile: float = _f("fraction of requests that must meet both limits", default=0.9)


@dataclass(frozen=True, slots=True)
class ServingSpec:
    """A serving experiment: traffic, replicas, their mapping and scheduler, and an SLO."""

    traffic: TrafficSpec = _f("the request traffic")
    scheduler: SchedulerSpec = _f("each replica's scheduler", default_factory=SchedulerSpec)
    slo: SloSpec = _f("the SLO goodput counts against", default_factory=SloSpec)
    replicas: int = _f("model replicas behind the router", default=1)
    router: str = _f("'round_robin' or 'least_loaded'", default="round_robin")
    prefill_replicas: int = _f(
        "prefill/decode disaggregation: the first this many replicas only prefill, the "
        "others only decode, and the KV cache moves between them over the links; 0 = off",
        default=0,
    )
    tp: int = _f("tensor-parallel degree of a replica", default=1)
    pp: int = _f("pipeline stages of a replica", default=1)
    placement: str = _f("placement strategy of the replicas' tiles", default="snake")
    tp_2d: tuple[int, int] | None = _f(
        "2-D tensor parallelism [a, b] of a replica's a*b = tp ranks, as mapping.tp_2d lowers "
        "it for palmsim run: a ranks split the heads and the MLP's columns, b ranks the "
        "hidden dimension and every request's KV cache, each block's tokens split by "
        "sequence over them (palmsim.mapping.serving); one stage, each replica on a b x a "
        "rectangle of tiles; null: 1-D",
        default=None,
    )
    dtype: str = _f("activations and compute: fp32, fp16 or bf16", default="bf16")
    weight_dtype: str = _f("weights: fp32, fp16, bf16, fp8, int8, bfp8 or bfp4", default="bf16")
    kv_dtype: str = _f("KV cache: fp32, fp16, bf16, fp8, int8, bfp8 or bfp4", default="bf16")
    mlp_weight_dtype: str | None = _f(
        "MLP weights when they differ from weight_dtype (e.g. Tenstorrent's bfp4 MLP with "
        "bfp8 attention); None: weight_dtype",
        default=None,
    )
    mlp_down_weight_dtype: str | None = _f(
        "the MLP's down projection when it differs from the MLP's (as the inference "
        "section's); None: the MLP's",
        default=None,
    )
    math_fidelity: tuple[tuple[str, str], ...] = _f(
        "math fidelity of the GEMMs by weight dtype, as (dtype, fidelity) pairs, on a chip "
        "with tile.fidelity_passes (as the inference section's)",
        default=(),
    )
    ops_per_layer: int = _f(
        "device ops one layer launches per iteration in the serving code (as "
        "inference.ops_per_layer); each beyond the layer's op-graph kernels pays "
        "tile.op_latency; 0: the op graph's kernels [count]",
        default=0,
    )
    decode_attention_cores: int = _f(
        "cores that run one request's attention over its cache in an iteration without a "
        "prefill (as inference.decode_attention_cores: tt-metal's SDPA decode, its grid's "
        "cores over the batch it is built for); 0: every core at the DRAM bandwidth [count]",
        default=0,
    )
    decode_attention_cores_per_head: int = _f(
        "at most this many of a request's decode_attention_cores work on each of its KV "
        "heads on a tile (as inference.decode_attention_cores_per_head); 0: no such limit "
        "[count]",
        default=0,
    )
    decode_attention_fidelity: str | None = _f(
        "math fidelity of an iteration's attention over the cache when it holds no prefill "
        "(as inference.decode_attention_fidelity); None: the activation dtype's",
        default=None,
    )
    decode_readers_per_bank: int = _f(
        "worker cores per DRAM bank that run an iteration's weight GEMMs when it holds no "
        "prefill (as inference.decode_readers_per_bank: tt-metal's DRAM-sharded matmul); "
        "0: on every core at the DRAM bandwidth [count]",
        default=0,
    )
    prefill_weight_readers: int = _f(
        "cores that read the weights of an iteration's GEMMs when it holds a prefill, one per "
        "column of the matmul's core grid (as inference.prefill_weight_readers: tt-metal's "
        "2-D multicast matmul); 0: at the DRAM bandwidth [count]",
        default=0,
    )
    prefill_compute_cores: int = _f(
        "cores of a simulated tile that run the layers' GEMMs and attention cores of an "
        "iteration holding a prefill (as inference.prefill_compute_cores: tt_transformers' "
        "8x8 prefill grid); 0: every core [count]",
        default=0,
    )
    trace: str = _f(
        "iterations replayed from a captured trace, free of host dispatch "
        "(tile.host_dispatch, as inference.trace): 'decode' (an iteration without a "
        "prefill), 'all' or 'none'",
        default="decode",
    )
