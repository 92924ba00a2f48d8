"""The memory pass: what each tile holds, where it lives (SRAM first, then DRAM), and whether
it fits. One implementation for training and inference.

Training, per tile:

- weights: the parameters the tile holds, in the training dtype;
- gradients: one gradient per parameter, in the training dtype;
- optimizer state, per parameter (Rajbhandari et al., ZeRO, SC20, Sec. 3.1): mixed-precision
  Adam keeps an fp32 copy of the weights, momentum and variance, 12 B; fp32 Adam keeps momentum
  and variance, 8 B; SGD with momentum keeps momentum (and the fp32 copy when mixed), 4 or 8 B;
- activations: the bytes a micro-batch keeps for its backward (by recompute mode, Korthikanti
  et al. 2023, Table 2) times the micro-batches the schedule holds at once, plus, under full
  recompute, one layer's complete activations while it is recomputed.

ZeRO (Rajbhandari et al. SC20, Sec. 5): stage 1 shards the optimizer state over the DP group,
stage 2 also the gradients, stage 3 also the weights, which are then all-gathered one unit
(layer) at a time into a working buffer when needed.

SRAM is filled in the order the demands are given (training: weights, gradients, optimizer
state, activations; inference: weights, KV cache, activations); the rest lives in DRAM, on the
tile's home DRAM port, and a port asked for more than its capacity is a :class:`MappingError`
(``does_not_fit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from palmsim.config.specs import DTYPE_BYTES, MappingSpec
from palmsim.errors import MappingError, tile_list
from palmsim.hardware.chip import Chip
from palmsim.hardware.costs import OperandPlacement
from palmsim.hardware.memory import split_sram_dram
from palmsim.mapping.plan import MemoryBreakdown
from palmsim.units import GB, MiB
from palmsim.workload.ops import Op

__all__ = [
    "TileMemory",
    "activation_sizes",
    "check_fit",
    "dram_overflow",
    "inference_remedies",
    "optimizer_state_bytes_per_param",
    "peak_held_bytes",
    "place_demands",
    "training_remedies",
    "training_state_bytes",
]


@dataclass(frozen=True, slots=True)
class TileMemory:
    """One tile's memory: the breakdown, and the DRAM fraction of each category's traffic."""

    breakdown: MemoryBreakdown
    where: OperandPlacement


def optimizer_state_bytes_per_param(
    optimizer: str, dtype: str, moments_dtype: str = "fp32", master_dtype: str = "fp32"
) -> int:
    """Optimizer state per parameter (ZeRO, Rajbhandari et al. SC20, Sec. 3.1).

    Adam keeps two moments, SGD and Muon one (:mod:`palmsim.workload.muon`; the embedding,
    head and norms it leaves to Adam, whose second moment is not counted), each of
    ``moments_dtype``. Mixed precision (a dtype under 4 B) adds the master copy of the
    weights in ``master_dtype`` (none: the optimizer updates the model's weights in place).
    The defaults are 4 B each: 12 B per parameter for mixed-precision Adam; NeMo's distributed
    Adam with ``optim.dtype: bf16`` and fp8 weights keeps bf16 moments and a bf16 master copy,
    6 B (nemo/collections/nlp/models/language_modeling/megatron_base_model.py,
    ``store_params``).
    """
    mixed = DTYPE_BYTES[dtype] < 4
    moments = {"adam": 2, "sgd": 1, "muon": 1}[optimizer] * DTYPE_BYTES[moments_dtype]
    master = DTYPE_BYTES[master_dtype] if mixed and master_dtype != "none" else 0
    return int(moments + master)


def activation_sizes(
    recompute: str, layer_ops: Sequence[Op], layer_input_bytes: float
) -> tuple[float, float]:
    """``(bytes one layer keeps per micro-batch, working set)`` by recompute mode.

    Full recompute keeps the layer's input (``layer_input_bytes``, already divided by t
    under sequence parallelism) and needs one layer's complete activations while it is
    recomputed; selective keeps Korthikanti's selective bytes; none keeps everything.
    """
    if recompute == "full":
        return layer_input_bytes, sum(op.saved_bytes for op in layer_ops)
    if recompute == "selective":
        return sum(op.saved_bytes_selective for op in layer_ops), 0.0
    return sum(op.saved_bytes for op in layer_ops), 0.0


def peak_held_bytes(
    steps: Sequence[tuple[str, int]], chunks: Sequence[int], per_microbatch: Sequence[float]
) -> float:
    """Peak activation bytes a stage holds: each forward of chunk j adds ``per_microbatch[j]``
    until the matching backward frees it (``chunks`` empty: every step is chunk 0)."""
    held = peak = 0.0
    for i, (phase, _) in enumerate(steps):
        size = per_microbatch[chunks[i] if chunks else 0]
        held += size if phase == "F" else -size
        peak = max(peak, held)
    return peak


def training_state_bytes(
    mapping: MappingSpec, params: float, largest_unit_params: float, elem: int, state: int
) -> tuple[float, float, float]:
    """``(weights, gradients, optimizer state)`` bytes per tile of a stage of ``params``
    parameters, sharded by ZeRO over the DP group (ZeRO-3 adds one gathered unit)."""
    dp = mapping.dp
    zero = mapping.zero if dp > 1 else 0
    weights = params * elem / (dp if zero >= 3 else 1)
    if zero >= 3:
        weights += largest_unit_params * elem  # one gathered unit
    gradients = params * elem / (dp if zero >= 2 else 1)
    optimizer = params * state / (dp if zero >= 1 else 1)
    return weights, gradients, optimizer


def place_demands(
    demands: list[tuple[str, float]], sram_capacity_bytes: float
) -> dict[str, tuple[float, float]]:
    """``category -> (SRAM bytes, DRAM bytes)``, SRAM filled in the order of ``demands``."""
    return {c: (sram, dram) for c, sram, dram in split_sram_dram(demands, sram_capacity_bytes)}


def training_tile_memory(
    weights: float,
    gradients: float,
    optimizer: float,
    activations: float,
    sram_capacity_bytes: float,
) -> TileMemory:
    """A training tile's breakdown, and what fraction of each category lives in DRAM."""
    split = place_demands(
        [
            ("weights", weights),
            ("gradients", gradients),
            ("optimizer", optimizer),
            ("activations", activations),
        ],
        sram_capacity_bytes,
    )
    frac = {c: (d / (sr + d) if sr + d > 0 else 0.0) for c, (sr, d) in split.items()}
    where = OperandPlacement(
        frac["weights"], frac["gradients"], frac["optimizer"], frac["activations"]
    )
    breakdown = MemoryBreakdown(
        weights,
        gradients,
        optimizer,
        activations,
        sram_bytes=sum(sr for sr, _ in split.values()),
        dram_bytes=sum(d for _, d in split.values()),
    )
    return TileMemory(breakdown, where)


def dram_overflow(
    chip: Chip,
    memory: Sequence[tuple[int, MemoryBreakdown]],
    port_of: Sequence[tuple[int, int]],
) -> tuple[int, float, list[int], MemoryBreakdown, int] | None:
    """The first DRAM port asked to hold more than it has, or None if every port fits.

    Returns ``(port, bytes needed, its tiles, the breakdown of its neediest tile, that tile)``.
    """
    need: dict[int, float] = {}
    tiles_on: dict[int, list[int]] = {}
    by_tile = dict(memory)
    for tile, port in port_of:
        need[port] = need.get(port, 0.0) + by_tile[tile].dram_bytes
        tiles_on.setdefault(port, []).append(tile)
    for port in sorted(need):
        if need[port] > chip.dram_ports[port].capacity_bytes:
            worst = max(tiles_on[port], key=lambda t: by_tile[t].total)
            return port, need[port], tiles_on[port], by_tile[worst], worst
    return None


def check_fit(
    chip: Chip,
    memory: Sequence[tuple[int, MemoryBreakdown]],
    port_of: Sequence[tuple[int, int]],
    sram_capacity_bytes: float,
    *,
    inference: bool,
    remedies: str,
) -> None:
    """Raise :class:`MappingError` (``does_not_fit``) with the neediest tile's breakdown if any
    DRAM port is asked to hold more than it has; the error names ``remedies``
    (:func:`training_remedies`, :func:`inference_remedies`)."""
    overflow = dram_overflow(chip, memory, port_of)
    if overflow is None:
        return
    port, need, tiles, b, worst = overflow
    capacity = chip.dram_ports[port].capacity_bytes
    if capacity > 0:
        head = f"DRAM port {port} ({capacity / GB:.4g} GB) would need {need / GB:.4g} GB for "
        head += f"{tile_list(tiles)}; tile {worst} needs weights {b.weights / GB:.4g} GB + "
        sram = f"{sram_capacity_bytes / MiB:.4g} MiB SRAM + its share of DRAM"
    else:  # a wafer without off-chip memory: what SRAM cannot hold has nowhere to go
        head = f"the hardware has no DRAM and the SRAM of {tile_list(tiles)} is short by "
        head += f"{need / GB:.4g} GB; tile {worst} needs weights {b.weights / GB:.4g} GB + "
        sram = f"{sram_capacity_bytes / MiB:.4g} MiB of SRAM"
    if inference:
        raise MappingError(
            f"inference does not fit: {head}KV cache at full length and activations "
            f"{b.activations / GB:.4g} GB = {b.total / GB:.4g} GB against {sram}; {remedies}",
            does_not_fit=True,
        )
    raise MappingError(
        f"model does not fit: {head}gradients {b.gradients / GB:.4g} GB + "
        f"optimizer {b.optimizer / GB:.4g} GB + activations {b.activations / GB:.4g} GB "
        f"= {b.total / GB:.4g} GB against {sram}; {remedies} (or --set "
        "run.memory_check=false to simulate it anyway)",
        does_not_fit=True,
    )


#: The remedies an inference that does not fit always has, besides shorter sequences.
_FORMATS = "narrower formats (inference.weight_dtype, inference.kv_dtype)"


def inference_remedies(mapping: MappingSpec, batch: int, num_tiles: int) -> str:
    """What an inference ``mapping`` of ``batch`` requests on ``num_tiles`` usable tiles that
    does not fit could still change: more stages or tensor parallelism only with tiles to
    spare or replicas to trade, a smaller batch only above one request; shorter sequences
    and narrower formats always."""
    left = []
    if mapping.pp * mapping.tp * mapping.dp < num_tiles or mapping.dp > 1:
        left.append("more stages/tensor parallelism")
    if batch > 1:
        left.append("a smaller batch")
    return "use " + ", ".join([*left, "shorter sequences"]) + f" or {_FORMATS}"


def training_remedies(mapping: MappingSpec, num_tiles: int) -> str:
    """What a training ``mapping`` on ``num_tiles`` usable tiles that does not fit could
    still change, each only where it is not already taken: more stages or tensor
    parallelism (tiles to spare, or data-parallel replicas to trade), ZeRO over the
    data-parallel replicas, full recompute, micro-batches of one sample, 1F1B in place of
    GPipe; with none left, the model's training state does not fit the hardware."""
    used = mapping.pp * mapping.tp * mapping.dp * mapping.cp
    left = []
    if used < num_tiles or mapping.dp > 1:
        left.append("more stages/tensor parallelism")
    if mapping.dp * mapping.cp > 1 and mapping.zero < 3:
        left.append(f"a higher ZeRO stage than {mapping.zero} (--zero)")
    if mapping.recompute != "full":
        left.append("recompute (--recompute full)")
    if mapping.micro_batch_size > 1:
        left.append("smaller micro-batches")
    if mapping.schedule == "gpipe":  # holds every micro-batch's activations, 1F1B at most p
        left.append("the 1F1B schedule (--schedule 1f1b)")
    if not left:
        degrees = "pp*tp*dp*cp" if mapping.cp > 1 else "pp*tp*dp"
        return (
            f"with {degrees} = {used} of the {num_tiles} tiles, full recompute and "
            "micro-batches of one sample, the model's training state does not fit this "
            "hardware: more tiles (hw.system.chips) or a smaller model"
        )
    return "use " + (", ".join(left[:-1]) + " or " + left[-1] if len(left) > 1 else left[0])
