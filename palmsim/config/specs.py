"""Frozen, validated specifications of an experiment: hardware, workload, mapping, run.

Specs describe; they never change after loading. Runtime objects (chip graph, plan, simulator)
are built from them. Every dimensional field is in SI base units and carries its unit suffix.
Each field's ``metadata["help"]`` is the one-line description ``palmsim describe`` prints and
the loader uses in error messages. Defaults live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "DTYPE_BYTES",
    "EXPERT_LOADS",
    "EXPERT_PLACEMENTS",
    "GRAD_ACCUMULATION_MODES",
    "MEMORY_OP_KINDS",
    "MODES",
    "TRAINING_ONLY",
    "ClusterSpec",
    "DramSpec",
    "ExperimentSpec",
    "GemmSpec",
    "HardwareSpec",
    "InferenceSpec",
    "LinkSpec",
    "MappingSpec",
    "MemoryKernelSpec",
    "MemoryOpsSpec",
    "ModelSpec",
    "RunSpec",
    "TileSpec",
    "TrainingSpec",
    "WaferSpec",
    "WorkloadSpec",
    "help_of",
    "modes_of",
]

#: Bytes per element of each numeric format palmsim knows.
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}

#: Values of ``TrainingSpec.expert_load`` (:func:`palmsim.workload.moe.expert_loads`).
EXPERT_LOADS = ("uniform", "multinomial", "dirichlet")

#: Values of ``MappingSpec.expert_placement`` (:func:`palmsim.workload.moe.place_experts`).
EXPERT_PLACEMENTS = ("contiguous", "balanced")

#: Values of ``MappingSpec.grad_accumulation``.
GRAD_ACCUMULATION_MODES = ("fused", "every_microbatch", "after_first_microbatch")


#: The run modes (``workload.mode``) an option can apply to.
MODES: tuple[str, ...] = ("training", "inference")
TRAINING_ONLY: tuple[str, ...] = ("training",)


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
class TileSpec:
    """A compute tile (or a GPU, which palmsim models as one tile with HBM behind it)."""

    peak_flop_per_s: tuple[tuple[str, float], ...] = _f(
        "peak dense throughput per dtype, as (dtype, FLOP/s) pairs [FLOP/s]"
    )
    sram_capacity_bytes: float = _f("software-managed on-tile SRAM capacity [B]")
    sram_bandwidth_bytes_per_s: float = _f("SRAM read+write bandwidth seen by the compute [B/s]")
    compute_efficiency: float = _f(
        "achievable fraction of peak FLOP/s for matrix ops (1.0 = peak) [ratio]; "
        "unused when gemm is given",
        default=1.0,
    )
    gemm: GemmSpec | None = _f(
        "shape-dependent GEMM model; None: peak x compute_efficiency for every GEMM",
        default=None,
    )
    memory_ops: MemoryOpsSpec | None = _f(
        "memory-bound kernels run one by one at this bandwidth; None: their bytes overlap "
        "with the step's compute",
        default=None,
    )

    def peak_for(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``; bf16 falls back to fp16 and vice versa."""
        table = dict(self.peak_flop_per_s)
        if dtype in table:
            return table[dtype]
        alias = {"bf16": "fp16", "fp16": "bf16"}.get(dtype)
        if alias in table:
            return table[alias]
        raise KeyError(dtype)


@dataclass(frozen=True, slots=True)
class DramSpec:
    """Off-tile memory: DRAM ports on die edges, stacked DRAM per tile, or a GPU's HBM."""

    placement: str = _f("where DRAM channels attach: 'die_edge' or 'per_tile'")
    capacity_bytes: float = _f("capacity of one DRAM channel/port [B]")
    bandwidth_bytes_per_s: float = _f("bandwidth of one DRAM channel, reads+writes shared [B/s]")
    latency_s: float = _f("access latency of one DRAM channel [s]")


@dataclass(frozen=True, slots=True)
class WaferSpec:
    """A two-level wafer: a grid of dies, each die a grid of tiles, joined by a NoC."""

    die_rows: int = _f("dies along the wafer's rows")
    die_cols: int = _f("dies along the wafer's columns")
    tile_rows: int = _f("tiles per die along the rows")
    tile_cols: int = _f("tiles per die along the columns")
    topology: str = _f("NoC topology over the global tile grid: 'mesh' or 'torus'")
    intra_die: LinkSpec = _f("links between neighbouring tiles of one die")
    inter_die: LinkSpec = _f("links between neighbouring tiles across a die boundary")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A GPU cluster: nodes of devices behind a switch, joined by per-device NICs."""

    num_nodes: int = _f("number of nodes")
    devices_per_node: int = _f("GPUs per node")
    intra_node: LinkSpec = _f(
        "one device's link to the node switch (NVLink/NVSwitch), per direction"
    )
    inter_node: LinkSpec = _f("one device's NIC to the inter-node fabric, per direction")


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """A whole machine: tiles, their memories and the network between them."""

    name: str = _f("name of this hardware")
    kind: str = _f("'wafer' or 'gpu_cluster'")
    tile: TileSpec = _f("the compute tile (or GPU)")
    dram: DramSpec = _f("off-tile memory")
    wafer: WaferSpec | None = _f("wafer layout (kind 'wafer')", default=None)
    cluster: ClusterSpec | None = _f("cluster layout (kind 'gpu_cluster')", default=None)

    @property
    def num_tiles(self) -> int:
        """Number of tiles (GPUs) in the machine."""
        if self.wafer is not None:
            w = self.wafer
            return w.die_rows * w.die_cols * w.tile_rows * w.tile_cols
        assert self.cluster is not None
        return self.cluster.num_nodes * self.cluster.devices_per_node


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
    hidden_act: str = _f("'gelu' (2-matrix MLP) or 'silu' (SwiGLU, 3-matrix gated MLP)")
    norm: str = _f("'layernorm' or 'rmsnorm'", default="layernorm")
    position_embedding: str = _f("'learned' or 'rope'", default="learned")
    use_bias: bool = _f("linear layers and norms carry bias terms", default=True)
    tie_word_embeddings: bool = _f("LM head shares the embedding matrix", default=True)
    attention_dropout: float = _f(
        "attention dropout probability (a mask is stored if > 0)", default=0.0
    )
    hidden_dropout: float = _f(
        "residual dropout probability (a mask is stored if > 0)", default=0.0
    )
    causal: bool = _f("decoder (causal) attention; False for encoders like BERT", default=True)
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
        "are mixture-of-experts layers",
        default=0,
    )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``attention_head_dim``, or h / a."""
        if self.attention_head_dim is not None:
            return self.attention_head_dim
        return self.hidden_size // self.num_attention_heads

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
        return self.is_moe and layer >= self.first_k_dense_replace

    @property
    def num_moe_layers(self) -> int:
        """Layers with a mixture-of-experts MLP."""
        if not self.is_moe:
            return 0
        return max(0, self.num_hidden_layers - self.first_k_dense_replace)


@dataclass(frozen=True, slots=True)
class TrainingSpec:
    """What one training iteration processes and with which numerics."""

    seq_len: int = _f("tokens per sample s")
    global_batch_size: int = _f("samples per iteration B (over all data-parallel replicas)")
    dtype: str = _f("compute dtype of weights and activations: fp32, fp16 or bf16", default="bf16")
    optimizer: str = _f("'adam' (mixed-precision, 16 B/param of state) or 'sgd'", default="adam")
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
    weight_dtype: str = _f("dtype weights are stored in: fp32, fp16, bf16 or int8", default="fp16")
    kv_dtype: str = _f("dtype of the KV cache: fp32, fp16, bf16 or int8", default="fp16")


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
    placement: str = _f("placement strategy onto the tile grid, e.g. 'snake'", default="snake")
    partition: str = _f(
        "how layers are split into stages: 'layers' or 'cost'",
        modes=TRAINING_ONLY,
        default="layers",
    )
    dp_overlap: bool = _f(
        "overlap the DP gradient all-reduce with the backward pass",
        modes=TRAINING_ONLY,
        default=True,
    )
    tp_overlap: bool = _f(
        "overlap each column-parallel linear's backward TP all-reduce (or reduce-scatter) "
        "with its weight-gradient GEMM (Megatron-LM's asynchronous TP all-reduce)",
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
    sequence_parallel: bool = _f(
        "Megatron sequence parallelism: norms and dropouts on s/t tokens, reduce-scatter + "
        "all-gather in place of each TP all-reduce",
        modes=TRAINING_ONLY,
        default=False,
    )
    ep: int = _f(
        "expert-parallel degree: groups of ep consecutive data-parallel replicas split each "
        "MoE layer's experts (E/ep per tile) and exchange tokens by all-to-all "
        "(Megatron-Core --expert-model-parallel-size); divides dp*cp and num_experts",
        modes=TRAINING_ONLY,
        default=1,
    )
    expert_placement: str = _f(
        "which experts each EP rank holds: 'contiguous' (Megatron-Core) or 'balanced' (the "
        "most loaded experts spread first, by the drawn expert load)",
        modes=TRAINING_ONLY,
        default="contiguous",
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
        "simulate one data-parallel replica when the replicas are provably symmetric (GPU "
        "clusters only; the result is the full run's); false simulates every GPU",
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
