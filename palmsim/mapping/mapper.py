"""Map a workload onto a chip: the one step that sees hardware, workload and mapping together.

``map_workload(experiment, chip)`` partitions the layers into stages, places the stage replicas
on tiles, decides per tile what lives in SRAM and what spills to DRAM, costs every block with
the pure roofline model, and returns a frozen :class:`MappingPlan`, or raises
:class:`MappingError` when the mapping cannot work (too few tiles, indivisible batch, memory).

Memory model (per tile):

- weights: the parameters the tile holds, in the training dtype;
- gradients: one gradient per parameter, in the training dtype;
- optimizer state, per parameter (Rajbhandari et al., ZeRO, SC20, Sec. 3.1): mixed-precision
  Adam keeps an fp32 copy of the weights, momentum and variance, 12 B; fp32 Adam keeps momentum
  and variance, 8 B; SGD with momentum keeps momentum (and the fp32 copy when mixed), 4 or 8 B;
- activations: the bytes a micro-batch keeps for its backward (by recompute mode, Korthikanti
  et al. 2023, Table 2) times the micro-batches the schedule holds at once, plus, under full
  recompute, one layer's complete activations while it is recomputed.

SRAM is filled in the order weights, gradients, optimizer state, activations; the rest lives
in DRAM, on the tile's home DRAM port. A fraction ``f`` of a category in DRAM means that
fraction of its traffic moves over the NoC to the port. Activation traffic in DRAM is split
evenly between reads and writes (an op reads its input and writes its output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from palmsim.config.specs import DTYPE_BYTES, ExperimentSpec, HardwareSpec, TileSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.compute import gemm_terms_s, op_time_s
from palmsim.hardware.memory import split_sram_dram
from palmsim.mapping.communicators import communicators
from palmsim.mapping.partition import partition_by_cost, partition_by_layers
from palmsim.mapping.placement import place
from palmsim.mapping.plan import (
    CollectiveStep,
    ComputeStep,
    GradBucketReady,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
    Step,
)
from palmsim.mapping.schedule import SCHEDULES, interleaved_one_f_one_b
from palmsim.units import GB, MiB
from palmsim.workload.builders import (
    Block,
    embedding_block,
    head_block,
    layer_blocks,
    layer_input_bytes,
    model_flop_per_iteration,
)
from palmsim.workload.ops import Op

__all__ = ["map_workload", "optimizer_state_bytes_per_param", "pipeline_p2p_bytes"]


def optimizer_state_bytes_per_param(optimizer: str, dtype: str) -> int:
    """Optimizer state per parameter (ZeRO, Rajbhandari et al. SC20, Sec. 3.1).

    Mixed precision (16-bit dtype) keeps an fp32 master copy (4 B) beside the state.
    """
    mixed = DTYPE_BYTES[dtype] < 4
    moments = {"adam": 8, "sgd": 4}[optimizer]  # Adam: momentum + variance; SGD: momentum
    return moments + (4 if mixed else 0)


def pipeline_p2p_bytes(
    boundary_bytes: float, tp: int, *, scatter_gather: bool, sequence_parallel: bool
) -> tuple[float, float]:
    """A pipeline send of a stage boundary's tensor of ``boundary_bytes`` (e·b·s·h, forward
    activations or backward input gradients) between two TP groups of ``tp`` ranks, as
    Megatron-LM's ``p2p_communication._communicate`` does it.

    Returns ``(bytes each rank sends to the same rank of the other stage, size S of the
    all-gather the receiving TP group then runs, 0 for none)``:

    - sequence parallelism: the tensor is already sequence-sharded, each rank sends its own
      s/t shard and nothing is gathered (Megatron scatter-gathers only ``if
      scatter_gather_tensors_in_pipeline and not sequence_parallel``);
    - scatter-gather: each rank sends 1/t of the replicated tensor
      (``split_tensor_into_1d_equal_chunks``) and the receivers rebuild it with
      ``gather_split_1d_tensor``, an all-gather over the TP group whose output, the
      collective's S, is the whole tensor;
    - neither: each rank sends the whole tensor. With ``tp`` = 1 it is always that.
    """
    if tp == 1 or not (scatter_gather or sequence_parallel):
        return boundary_bytes, 0.0
    return boundary_bytes / tp, 0.0 if sequence_parallel else boundary_bytes


class _Placement:
    """Fractions of each memory category that live in DRAM on one tile."""

    def __init__(self, weights: float, gradients: float, optimizer: float, activations: float):
        self.weights = weights
        self.gradients = gradients
        self.optimizer = optimizer
        self.activations = activations


class _Memory:
    """Where a tile's GEMM operands stream from, for the GEMM model's memory roof."""

    def __init__(self, bandwidth_bytes_per_s: float):
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s


def _memory_of(hw: HardwareSpec) -> _Memory:
    """GEMM operands stream from the SRAM of a tile that has one, else from its DRAM (a GPU).

    From DRAM a kernel reaches the achievable streaming bandwidth of ``tile.memory_ops`` (a
    GPU's measured memory-bound kernels), not the datasheet rate, when the config gives it:
    a memory-bound GEMM (e.g. QKᵀ with a head size of 64-128) is bounded by the same HBM.
    """
    if hw.tile.sram_capacity_bytes > 0:
        return _Memory(hw.tile.sram_bandwidth_bytes_per_s)
    if hw.tile.memory_ops is not None:
        return _Memory(hw.tile.memory_ops.bandwidth_bytes_per_s)
    return _Memory(hw.dram.bandwidth_bytes_per_s)


def _op_time_s(
    op: Op,
    phase: str,
    flop: float,
    sram_bytes: float,
    all_bytes: float,
    tile: TileSpec,
    peak_flop_per_s: float,
    memory: _Memory,
    part: str = "both",
) -> tuple[float, float, float]:
    """One op's time on a tile for one pass (``F`` or ``B``), with two of its terms:
    ``(time_s, launch_s, flop_s)``, ``launch_s`` its fixed per-kernel time and ``flop_s`` its
    FLOP at the achievable rate (the compute roof).

    - A matmul on a tile with a GEMM model: :func:`gemm_time_s` of its forward product, or of
      the two backward products ``dA[m,k] = dC[m,n]·Bᵀ`` and ``dB[k,n] = Aᵀ·dC[m,n]``
      (``part``: ``dgrad`` is the first alone, ``wgrad`` the second, ``both`` their sum).
    - A memory-bound op on a tile with ``memory_ops``: its kernels of the pass moving all its
      bytes, ``kernels · launch latency + bytes / bandwidth`` with the bandwidth and latency
      of its kind (a fused op's pass launches none and takes no time).
    - Otherwise the roofline of :func:`op_time_s` against the SRAM (operands in DRAM move as
      the step's DRAM flows, in parallel).
    """
    if op.gemm_shape is not None and tile.gemm is not None:
        g = tile.gemm
        batch, m, k, n = op.gemm_shape

        def gemm(rows: float, inner: float, cols: float, nbytes: float) -> tuple[float, ...]:
            launch_s, compute_s, memory_s = gemm_terms_s(
                rows,
                inner,
                cols,
                batch=batch,
                operand_bytes=nbytes,
                peak_flop_per_s=peak_flop_per_s,
                max_efficiency=g.max_efficiency,
                compute_units=g.compute_units,
                tile_m=g.tile_m,
                tile_n=g.tile_n,
                memory_bandwidth_bytes_per_s=memory.bandwidth_bytes_per_s,
                launch_latency_s=g.launch_latency_s,
            )
            return launch_s + max(compute_s, memory_s), launch_s, compute_s

        # The op's own byte counts (ops.matmul_cost): the forward reads A and B and writes C;
        # each backward product moves half the backward's activation bytes and the weight
        # (dA reads B, dB writes the weight gradient).
        if phase == "B":
            half = op.bytes_bwd / 2 + op.weight_bytes
            none = (0.0, 0.0, 0.0)
            dgrad = gemm(m, n, k, half) if part != "wgrad" else none
            wgrad = gemm(k, m, n, half) if part != "dgrad" else none
            return dgrad[0] + wgrad[0], dgrad[1] + wgrad[1], dgrad[2] + wgrad[2]
        time_s, launch_s, flop_s = gemm(m, k, n, op.bytes_fwd + op.weight_bytes)
        return time_s, launch_s, flop_s
    if flop == 0.0 and tile.memory_ops is not None:
        kernels = op.kernels_bwd if phase == "B" else op.kernels_fwd
        launch_s = kernels * tile.memory_ops.for_kind(op.kind).launch_latency_s
        return tile.memory_ops.time_s(op.kind, all_bytes, kernels), launch_s, 0.0
    time_s = op_time_s(
        flop,
        sram_bytes,
        peak_flop_per_s=peak_flop_per_s,
        efficiency=tile.compute_efficiency,
        sram_bandwidth_bytes_per_s=tile.sram_bandwidth_bytes_per_s,
    )
    return time_s, 0.0, flop / (peak_flop_per_s * tile.compute_efficiency)


def _cost(
    ops: Iterable[Op],
    phase: str,
    tile: TileSpec,
    peak_flop_per_s: float,
    grad_bytes_per_param: int,
    where: _Placement,
    label: str,
    memory: _Memory,
    parts: Mapping[str, str] | None = None,
    fused_accumulation: bool = True,
) -> ComputeStep:
    """Cost one pass of a run of ops on one tile: its ops' times plus its DRAM traffic.

    ``parts`` (backward only) maps a matmul's name to ``dgrad`` or ``wgrad``: only that one
    of its two backward products, each half its FLOP and activation bytes; the weight read
    goes with ``dgrad``, the weight-gradient accumulation with ``wgrad``.

    ``fused_accumulation``: the backward's read and write of the accumulated gradient are the
    op's own traffic (fused into the weight-gradient GEMM, as Megatron-LM's
    ``--gradient-accumulation-fusion`` does, or into a norm's kernel); otherwise they are
    left to :func:`_accumulation_step`.
    """
    compute_s = flop_total = sram_total = dram_read = dram_write = launch_s = flop_s = 0.0
    for op in ops:
        part = (parts or {}).get(op.name, "both") if phase == "B" else "both"
        weights = op.weight_bytes
        if phase == "B":
            flop, act = op.flop_bwd, op.bytes_bwd
            # Weight-gradient accumulation reads and writes the gradient.
            grad = 2.0 * op.params * grad_bytes_per_param if fused_accumulation else 0.0
            if part == "dgrad":
                flop, act, grad = flop / 2, act / 2, 0.0
            elif part == "wgrad":
                flop, act, weights = flop / 2, act / 2, 0.0
        else:
            flop, act, grad = op.flop_fwd, op.bytes_fwd, 0.0
        sram = (
            act * (1 - where.activations)
            + weights * (1 - where.weights)
            + grad * (1 - where.gradients)
        )
        dram_read += (
            act * where.activations / 2 + weights * where.weights + grad * where.gradients / 2
        )
        dram_write += act * where.activations / 2 + grad * where.gradients / 2
        time_s, op_launch_s, op_flop_s = _op_time_s(
            op, phase, flop, sram, act + weights + grad, tile, peak_flop_per_s, memory, part
        )
        compute_s += time_s
        launch_s += op_launch_s
        flop_s += op_flop_s
        flop_total += flop
        sram_total += sram
    return ComputeStep(
        label,
        compute_s,
        flop_total,
        sram_total,
        dram_read,
        dram_write,
        launch_latency_s=launch_s,
        flop_time_s=flop_s,
    )


def _accumulation_step(
    ops: Iterable[Op],
    tile: TileSpec,
    peak_flop_per_s: float,
    grad_bytes_per_param: int,
    where: _Placement,
    label: str,
    from_microbatch: int,
) -> ComputeStep | None:
    """The kernels that add a backward's fresh weight gradients into the accumulated ones.

    One kernel per parameter tensor, reading both gradients and writing the sum, ``3·g``
    bytes per parameter: Megatron-LM's local DDP hook ``param.main_grad.add_(param.grad)``
    (``megatron/model/distributed.py``), or PyTorch's AccumulateGrad (``grad += new``),
    which keeps the iteration's first gradient as it is (``from_microbatch`` 1). None when
    the ops own no parameters.
    """
    params = sum(op.params for op in ops)
    if params == 0:
        return None
    nbytes = 3.0 * params * grad_bytes_per_param
    sram = nbytes * (1 - where.gradients)
    launch_s = 0.0
    if tile.memory_ops is not None:
        kernels = sum(op.param_tensors for op in ops)
        time_s = tile.memory_ops.time_s("elementwise", nbytes, kernels)
        launch_s = kernels * tile.memory_ops.for_kind("elementwise").launch_latency_s
    else:
        time_s = op_time_s(
            0.0,
            sram,
            peak_flop_per_s=peak_flop_per_s,
            efficiency=tile.compute_efficiency,
            sram_bandwidth_bytes_per_s=tile.sram_bandwidth_bytes_per_s,
        )
    read = 2.0 / 3.0 * nbytes * where.gradients
    write = 1.0 / 3.0 * nbytes * where.gradients
    return ComputeStep(
        f"{label}.grad_acc", time_s, 0.0, sram, read, write, from_microbatch, launch_s
    )


def _peak_held(
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


def map_workload(experiment: ExperimentSpec, chip: Chip) -> MappingPlan:
    """Turn an experiment into a :class:`MappingPlan` for ``chip``.

    Raises:
        MappingError: the mapping is valid input but cannot run on this chip.
        ConfigError: the hardware has no peak for the workload's dtype.
    """
    hw, workload, mapping = experiment.hardware, experiment.workload, experiment.mapping
    model, training = workload.model, workload.training
    pp, tp, dp, mbs = mapping.pp, mapping.tp, mapping.dp, mapping.micro_batch_size
    samples_per_step = dp * mbs
    if training.global_batch_size % samples_per_step:
        raise MappingError(
            f"global batch {training.global_batch_size} is not a multiple of dp*micro_batch_size "
            f"= {dp}*{mbs} = {samples_per_step}; every sample must be simulated exactly once"
        )
    num_microbatches = training.global_batch_size // samples_per_step
    try:
        peak = hw.tile.peak_for(training.dtype)
    except KeyError:
        raise ConfigError.single(
            dict(experiment.sources).get("hardware", hw.name),
            f"tile.peak.{training.dtype}",
            ConfigError.MISSING,
            f"a peak FLOP/s for the workload's dtype {training.dtype!r}",
        ) from None
    elem = int(DTYPE_BYTES[training.dtype])  # a training dtype: 2 or 4 B
    state = optimizer_state_bytes_per_param(training.optimizer, training.dtype)
    # GEMM operands stream from the SRAM of a tile that has one, else from its DRAM (a GPU).
    operands = _memory_of(hw)

    sp = mapping.sequence_parallel and tp > 1
    blocks = layer_blocks(model, training, mbs, tp, sequence_parallel=sp)
    embed = embedding_block(model, training, mbs, tp)
    head = head_block(
        model, training, mbs, tp, count_tied_weights=pp > 1 or not model.tie_word_embeddings
    )

    # ---- partition into p·v virtual stages (v model chunks per stage when interleaving)
    v = mapping.virtual_stages
    num_chunks = pp * v
    if v > 1:
        problem = (
            "interleaved 1F1B needs the 1f1b schedule"
            if mapping.schedule != "1f1b"
            else f"interleaved 1F1B needs micro-batches ({num_microbatches}) divisible by "
            f"pipeline stages ({pp})"
            if num_microbatches % pp
            else ""
        )
        if problem:
            raise MappingError(f"virtual_stages={v}: {problem}")
    if mapping.partition == "cost":
        everything = _Placement(0.0, 0.0, 0.0, 0.0)

        def time_of(bs: Iterable[Block]) -> float:
            ops = [op for b in bs for op in b.ops]
            return (
                _cost(ops, "F", hw.tile, peak, elem, everything, "", operands).compute_time_s
                + _cost(ops, "B", hw.tile, peak, elem, everything, "", operands).compute_time_s
            )

        layer_ranges = partition_by_cost(
            [time_of(blocks)] * model.num_hidden_layers,
            num_chunks,
            time_of([embed]),
            time_of([head]),
        )
    elif mapping.partition == "layers":
        layer_ranges = partition_by_layers(model.num_hidden_layers, num_chunks)
    else:  # names are validated when the experiment is loaded (api.load_experiment)
        raise AssertionError(f"unvalidated partition {mapping.partition!r}")

    stage_tiles = place(chip, mapping.placement, pp, tp, dp)

    def units_of(c: int) -> list[tuple[str, tuple[Block, ...]]]:
        """The units of virtual stage ``c``: embedding first, layers, LM head last."""
        first, last = layer_ranges[c]
        units: list[tuple[str, tuple[Block, ...]]] = [("embed", (embed,))] if c == 0 else []
        units.extend((f"L{i}", blocks) for i in range(first, last))
        if c == num_chunks - 1:
            units.append(("head", (head,)))
        return units

    layer_ops = [op for b in blocks for op in b.ops]
    if mapping.recompute == "full":
        # The layer's input; sequence parallelism keeps only this tile's s/t of it.
        per_layer = layer_input_bytes(model, training, mbs) / (tp if sp else 1)
        working = sum(op.saved_bytes for op in layer_ops)
    elif mapping.recompute == "selective":
        per_layer, working = sum(op.saved_bytes_selective for op in layer_ops), 0.0
    else:
        per_layer, working = sum(op.saved_bytes for op in layer_ops), 0.0

    def activations_per_microbatch(c: int) -> float:
        first, last = layer_ranges[c]
        fixed = sum(op.saved_bytes for op in embed.ops) if c == 0 else 0.0
        fixed += sum(op.saved_bytes for op in head.ops) if c == num_chunks - 1 else 0.0
        return (last - first) * per_layer + fixed

    programs: dict[int, StageProgram] = {}
    memory: list[tuple[int, MemoryBreakdown]] = []
    port_of: list[tuple[int, int]] = []
    send_bytes, gather_bytes = pipeline_p2p_bytes(
        mbs * training.seq_len * model.hidden_size * elem,  # one stage boundary
        tp,
        scatter_gather=mapping.p2p_scatter_gather,
        sequence_parallel=sp,
    )
    for s in range(pp):
        chunk_ids = [j * pp + s for j in range(v)]
        if v > 1:
            steps, step_chunks = interleaved_one_f_one_b(pp, num_microbatches, s, v)
        else:
            steps, step_chunks = SCHEDULES.get(mapping.schedule)(pp, num_microbatches, s), ()
        units = [unit for c in chunk_ids for unit in units_of(c)]
        params = sum(op.params for _, bs in units for b in bs for op in b.ops)
        unit_params = {name: sum(op.params for b in bs for op in b.ops) for name, bs in units}
        # ZeRO (Rajbhandari et al. SC20, Sec. 5): stage 1 shards the optimizer state over the
        # DP group, stage 2 also the gradients, stage 3 also the weights, which are then
        # all-gathered one unit (layer) at a time into a working buffer when needed.
        zero = mapping.zero if dp > 1 else 0
        weights = params * elem / (dp if zero >= 3 else 1)
        if zero >= 3:
            weights += max(unit_params.values()) * elem  # one gathered unit
        gradients = params * elem / (dp if zero >= 2 else 1)
        optimizer = params * state / (dp if zero >= 1 else 1)
        per_microbatch = [activations_per_microbatch(c) for c in chunk_ids]
        activations = _peak_held(steps, step_chunks, per_microbatch) + working

        split = {
            c: (sram, dram)
            for c, sram, dram in split_sram_dram(
                [
                    ("weights", weights),
                    ("gradients", gradients),
                    ("optimizer", optimizer),
                    ("activations", activations),
                ],
                hw.tile.sram_capacity_bytes,
            )
        }
        frac = {c: (d / (sr + d) if sr + d > 0 else 0.0) for c, (sr, d) in split.items()}
        where = _Placement(
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

        def cost(
            ops: Iterable[Op],
            phase: str,
            label: str,
            where: _Placement = where,
            parts: Mapping[str, str] | None = None,
        ) -> ComputeStep:
            return _cost(
                ops,
                phase,
                hw.tile,
                peak,
                elem,
                where,
                label,
                operands,
                parts,
                fused_accumulation=mapping.grad_accumulation == "fused",
            )

        def accumulate(ops: Iterable[Op], label: str, where: _Placement = where) -> list[Step]:
            if mapping.grad_accumulation == "fused":
                return []
            first = 1 if mapping.grad_accumulation == "after_first_microbatch" else 0
            step = _accumulation_step(ops, hw.tile, peak, elem, where, label, first)
            return [] if step is None else [step]

        def comm(kind: str, nbytes: float, label: str) -> list[Step]:
            if tp == 1 or nbytes <= 0:
                return []
            if kind == "allreduce" and sp:
                # Sequence parallelism: a reduce-scatter to the sequence shards, then (after
                # the sharded norm/dropout) an all-gather; together the all-reduce's bytes.
                return [
                    CollectiveStep(label.removesuffix(".ar") + ".rs", "reducescatter", nbytes),
                    CollectiveStep(label.removesuffix(".ar") + ".ag", "allgather", nbytes),
                ]
            return [CollectiveStep(label, kind, nbytes)]

        def gather(
            name: str, zero: int = zero, sizes: dict[str, float] = unit_params
        ) -> list[Step]:
            """ZeRO-3: all-gather a unit's weights over the DP group before it runs."""
            if zero < 3 or sizes[name] == 0:
                return []
            return [CollectiveStep(f"{name}.params.ag", "allgather", sizes[name] * elem, "dp")]

        # Optimizer step: memory-bound (no FLOP counted), one memory pass per kernel of
        # Megatron-LM's optimizer step (megatron/optimizer/optimizer.py, step() of
        # FP16OptimizerWithFP16Params and FP32Optimizer; clip_grads.py), per parameter of the
        # shard this tile updates (ZeRO: 1/dp of them):
        # - mixed precision: copy the e-byte gradient to an fp32 main gradient (read e, write
        #   4); unscale it and check for inf/nan (read 4, write 4); its L2 norm for gradient
        #   clipping (read 4); the Adam/SGD kernel (read the fp32 gradient and the state,
        #   write the state; the state includes the fp32 master weights); copy the master
        #   weights to the model's (read 4, write e): 5 kernels, 48 + 2e B with Adam;
        # - fp32: the gradient norm (read e), then the kernel (read weights, gradient and
        #   moments, write weights and moments): 2 kernels, 32 B with Adam.
        # Clipping's rescale runs only when the norm exceeds the threshold and is not counted.
        # The fp32 main gradients count as optimizer memory for placement.
        mixed = elem < 4
        fp32 = DTYPE_BYTES["fp32"]
        shard = params / (dp if zero >= 1 else 1)
        if mixed:
            read_grad, read_weights = shard * elem, 0.0
            # unscale, norm and kernel read the fp32 gradient; the kernel reads the state; the
            # final copy reads the fp32 master weights
            read_state = shard * (3 * fp32 + state + fp32)
            write_state = shard * (2 * fp32 + state)  # gradient copy and unscale; the state
            opt_kernels = 5
        else:
            read_grad, read_weights = shard * 2 * elem, shard * elem  # norm + kernel
            read_state = write_state = shard * state
            opt_kernels = 2
        write_weights = shard * elem
        opt_dram_read = (
            read_grad * where.gradients
            + read_state * where.optimizer
            + read_weights * where.weights
        )
        opt_dram_write = write_state * where.optimizer + write_weights * where.weights
        opt_sram = (
            (read_grad) * (1 - where.gradients)
            + (read_state + write_state) * (1 - where.optimizer)
            + (read_weights + write_weights) * (1 - where.weights)
        )
        opt_launch_s = 0.0
        if hw.tile.memory_ops is not None:  # memory-bound kernels, one after the other
            opt_time_s = hw.tile.memory_ops.time_s(
                "optimizer", opt_sram + opt_dram_read + opt_dram_write, opt_kernels
            )
            opt_launch_s = opt_kernels * hw.tile.memory_ops.for_kind("optimizer").launch_latency_s
        else:
            opt_time_s = op_time_s(
                0.0,
                opt_sram,
                peak_flop_per_s=peak,
                efficiency=hw.tile.compute_efficiency,
                sram_bandwidth_bytes_per_s=hw.tile.sram_bandwidth_bytes_per_s,
            )
        optimizer_step = ComputeStep(
            "optimizer",
            opt_time_s,
            0.0,
            opt_sram,
            opt_dram_read,
            opt_dram_write,
            launch_latency_s=opt_launch_s,
        )

        for j, c in enumerate(chunk_ids):
            # The receiving TP group all-gathers what its ranks received (scatter-gather).
            forward: list[Step] = comm("allgather", gather_bytes if c > 0 else 0, "recv.allgather")
            backward: list[Step] = comm(
                "allgather", gather_bytes if c < num_chunks - 1 else 0, "recv.allgather"
            )
            recompute: list[Step] = []
            chunk_units = units_of(c)
            for name, bs in chunk_units:
                forward.extend(gather(name))
                if name.startswith("L") and mapping.recompute == "full":
                    recompute.extend(gather(name))
                for b in bs:
                    forward.append(cost(b.ops, "F", f"{name}.{b.name}"))
                    forward.extend(comm("allreduce", b.allreduce_fwd_bytes, f"{name}.{b.name}.ar"))
                    if name.startswith("L") and mapping.recompute == "full":
                        recompute.append(cost(b.ops, "F", f"{name}.{b.name}"))
                        recompute.extend(
                            comm("allreduce", b.allreduce_fwd_bytes, f"{name}.{b.name}.ar")
                        )
                    elif name.startswith("L") and mapping.recompute == "selective":
                        redo = [op for op in b.ops if op.recompute_selective]
                        if redo:
                            recompute.append(cost(redo, "F", f"{name}.{b.name}.core"))
            for name, bs in reversed(chunk_units):
                backward.extend(gather(name))
                for b in reversed(bs):
                    label = f"{name}.{b.name}"
                    reduce = comm("allreduce", b.allreduce_bwd_bytes, f"{label}.ar")
                    # tp_overlap: the column-parallel linear (the block's first weight GEMM)
                    # all-reduces its input gradient while its weight gradient is computed
                    # (Megatron-LM's async TP all-reduce, LinearWithGradAccumulationAndAsync
                    # Communication in megatron/core/tensor_parallel/layers.py).
                    column = next(
                        (op for op in b.ops if op.kind == "matmul" and op.params > 0), None
                    )
                    if mapping.tp_overlap and reduce and column is not None:
                        backward.append(cost(b.ops, "B", label, parts={column.name: "dgrad"}))
                        wgrad = cost(
                            [column],
                            "B",
                            f"{label}.{column.name}.wgrad",
                            parts={column.name: "wgrad"},
                        )
                        first = reduce[0]
                        assert isinstance(first, CollectiveStep)
                        backward.append(dataclasses.replace(first, overlap=wgrad))
                        backward.extend(reduce[1:])
                    else:
                        backward.append(cost(b.ops, "B", label))
                        backward.extend(reduce)
                    backward.extend(accumulate(b.ops, label))
                if dp > 1 and unit_params[name] > 0:
                    backward.append(
                        GradBucketReady(
                            f"{name}.grads",
                            unit_params[name] * elem,
                            kind="reducescatter" if zero >= 1 else "allreduce",
                            every_microbatch=zero >= 2,
                        )
                    )
            programs[c] = StageProgram(
                stage=c,
                layers=layer_ranges[c],
                forward=tuple(forward),
                backward=tuple(backward),
                recompute=tuple(recompute),
                activation_bytes_per_microbatch=per_microbatch[j],
                send_bytes=send_bytes,
                optimizer=optimizer_step,
                steps=steps,
                # ZeRO-1/2: every replica gets the updated weights of the others' shards.
                param_allgather_bytes=params * elem if zero in (1, 2) else 0.0,
                step_chunks=step_chunks,
            )
        for replica in stage_tiles:
            for tile in replica[s]:
                memory.append((tile, breakdown))
                port_of.append((tile, chip.home_dram_port(tile)))

    _check_dram_capacity(chip, memory, port_of, hw.tile.sram_capacity_bytes)
    comms, replicas_reduced = communicators(
        chip,
        stage_tiles,
        pipeline_wraps=v > 1,
        symmetric_replicas=experiment.run.symmetric_replicas,
    )
    return MappingPlan(
        mapping=mapping,
        num_microbatches=num_microbatches,
        stage_tiles=stage_tiles,
        programs=tuple(programs[c] for c in range(num_chunks)),
        dram_port_of_tile=tuple(sorted(port_of)),
        memory=tuple(sorted(memory, key=lambda tm: tm[0])),
        placement=mapping.placement,
        model_flop_per_iteration=model_flop_per_iteration(model, training),
        peak_flop_per_s=peak,
        samples_per_iteration=training.global_batch_size,
        tokens_per_iteration=training.global_batch_size * training.seq_len,
        communicators=comms,
        replicas_reduced=replicas_reduced,
    )


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


def _check_dram_capacity(
    chip: Chip,
    memory: list[tuple[int, MemoryBreakdown]],
    port_of: list[tuple[int, int]],
    sram_capacity_bytes: float,
) -> None:
    """Raise MappingError if any DRAM port is asked to hold more than it has."""
    overflow = dram_overflow(chip, memory, port_of)
    if overflow is None:
        return
    port, need, tiles, b, worst = overflow
    capacity = chip.dram_ports[port].capacity_bytes
    raise MappingError(
        f"model does not fit: DRAM port {port} ({capacity / GB:.4g} GB) would need "
        f"{need / GB:.4g} GB for tiles {tiles}; tile {worst} needs "
        f"weights {b.weights / GB:.4g} GB + gradients {b.gradients / GB:.4g} GB + "
        f"optimizer {b.optimizer / GB:.4g} GB + activations {b.activations / GB:.4g} GB "
        f"= {b.total / GB:.4g} GB against {sram_capacity_bytes / MiB:.4g} MiB SRAM + "
        f"its share of DRAM; use more stages/tensor parallelism, recompute, or smaller "
        f"micro-batches"
    )
