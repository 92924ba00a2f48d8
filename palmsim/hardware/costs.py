"""Pure cost models of a tile's passes: ops, memory-bound kernels, optimizer, accumulation, KV.

Every function here is pure: it takes the tile's spec, the work (ops or byte counts) and where
the tile's data lives (:class:`OperandPlacement`), and returns a :class:`PassCost`: time, FLOP
and the bytes moved to SRAM and to and from DRAM. The mapping passes wrap these in plan steps;
nothing here knows about stages, schedules or options.

Memory traffic: a fraction ``f`` of a category in DRAM means that fraction of its traffic
moves over the NoC to the tile's DRAM port. Activation traffic in DRAM is split evenly
between reads and writes (an op reads its input and writes its output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from palmsim.hardware.compute import (
    gemm_terms_s,
    mesh_gemm_row_reduce_s,
    mesh_gemm_time_s,
    op_time_s,
)
from palmsim.workload.fp8 import amax_update_bytes

if TYPE_CHECKING:
    from palmsim.config.specs import HardwareSpec, TileSpec
    from palmsim.workload.ops import Op

__all__ = [
    "OperandPlacement",
    "PassCost",
    "accumulation_cost",
    "amax_update_cost",
    "fp8_weight_cast_cost",
    "gemm_operand_bandwidth_bytes_per_s",
    "kv_attention_cost",
    "op_pass_time_s",
    "optimizer_step_cost",
    "pass_cost",
]


@dataclass(frozen=True, slots=True)
class OperandPlacement:
    """Fractions [0, 1] of each memory category of one tile that live in DRAM."""

    weights: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0
    activations: float = 0.0


@dataclass(frozen=True, slots=True)
class PassCost:
    """What one pass of some work costs on one tile: time [s], FLOP and bytes [B].

    Two terms of ``time_s`` are kept for the report's compute/memory/latency verdict
    (:func:`palmsim.report.metrics.step_bound`): ``launch_latency_s``, the fixed per-kernel
    times it includes, and ``flop_time_s``, its FLOP at the achievable rate (the compute roof).
    """

    time_s: float
    flop: float
    sram_bytes: float
    dram_read_bytes: float
    dram_write_bytes: float
    launch_latency_s: float = 0.0
    flop_time_s: float = 0.0
    # The part of launch_latency_s that runs before the pass's DRAM traffic flows: the tile's
    # op latency (tile.op_latency_s) of the ops costed by the roofline.
    serial_latency_s: float = 0.0

    def __add__(self, other: PassCost) -> PassCost:
        """Two pieces of work run one after the other: every term adds."""
        return PassCost(
            self.time_s + other.time_s,
            self.flop + other.flop,
            self.sram_bytes + other.sram_bytes,
            self.dram_read_bytes + other.dram_read_bytes,
            self.dram_write_bytes + other.dram_write_bytes,
            self.launch_latency_s + other.launch_latency_s,
            self.flop_time_s + other.flop_time_s,
            self.serial_latency_s + other.serial_latency_s,
        )


def _roofline_op(op: Op, flop: float, tile: TileSpec) -> bool:
    """Whether ``op`` is costed by the roofline (no GEMM model for it or, a fused attention,
    for its products, not a MeshGEMM, not a memory-bound op of a tile with ``memory_ops``)."""
    gemm = (op.gemm_shape is not None or op.kind == "attention") and tile.gemm is not None
    mesh = _mesh_gemm_op(op, tile)
    return not gemm and not mesh and not (flop == 0.0 and tile.memory_ops is not None)


#: The ops a MeshGEMM runs as its transposed variant, with a row reduction after every step
#: (:func:`palmsim.hardware.compute.mesh_gemm_row_reduce_s`): the attention's ``Q K^T``
#: (the ``scores`` op of :mod:`palmsim.workload.builders`), whose K WaferLLM's prefill keeps
#: as stored. Its ``scores x V`` is a plain MeshGEMM (prefill.csl ``output_matmul``).
TRANSPOSED_MESH_GEMMS = frozenset({"scores"})


def _mesh_gemm_op(op: Op, tile: TileSpec) -> bool:
    """Whether ``op`` runs as a MeshGEMM (``tile.mesh_gemm``): a matmul with at least as many
    rows as the tile has rows of cores, so that every core holds a block of its rows (WaferLLM's
    prefill; a decode step's few rows are GEMVs, MeshGEMV's, and keep the roofline)."""
    return (
        tile.mesh_gemm is not None
        and op.gemm_shape is not None
        and op.gemm_shape[1] >= tile.mesh_gemm.mesh[0]
    )


def gemm_operand_bandwidth_bytes_per_s(hw: HardwareSpec) -> float:
    """GEMM operands stream from the SRAM of a tile that has one, else from its DRAM (a GPU).

    From DRAM a kernel reaches the achievable streaming bandwidth of ``tile.memory_ops`` (a
    GPU's measured memory-bound kernels), not the datasheet rate, when the config gives it:
    a memory-bound GEMM (e.g. QKᵀ with a head size of 64-128) is bounded by the same HBM.
    """
    if hw.tile.sram_capacity_bytes > 0:
        return hw.tile.sram_bandwidth_bytes_per_s
    if hw.tile.memory_ops is not None:
        return hw.tile.memory_ops.bandwidth_bytes_per_s
    return hw.dram.bandwidth_bytes_per_s


def op_pass_time_s(
    op: Op,
    phase: str,
    flop: float,
    sram_bytes: float,
    all_bytes: float,
    tile: TileSpec,
    peak_flop_per_s: float,
    operand_bandwidth_bytes_per_s: float,
    part: str = "both",
    fp8_peak_flop_per_s: float = 0.0,
    fp8_dtype: str = "fp8",
) -> tuple[float, float, float]:
    """One op's time on a tile for one pass (``F`` or ``B``), with two of its terms:
    ``(time_s, launch_s, flop_s)``, ``launch_s`` its fixed per-kernel time and ``flop_s`` its
    FLOP at the achievable rate (the compute roof).

    - A matmul on a tile with a GEMM model: :func:`gemm_time_s` of its forward product, or of
      the two backward products ``dA[m,k] = dC[m,n]·Bᵀ`` and ``dB[k,n] = Aᵀ·dC[m,n]``
      (``part``: ``dgrad`` is the first alone, ``wgrad`` the second, ``both`` their sum).
    - A matmul on a tile with ``mesh_gemm`` and at least a row of it per row of cores:
      :func:`mesh_gemm_time_s` of the same products, plus ``tile.op_latency_s`` a kernel.
    - A memory-bound op on a tile with ``memory_ops``: its kernels of the pass moving all its
      bytes, ``kernels · launch latency + bytes / bandwidth`` with the bandwidth and latency
      of its kind (a fused op's pass launches none and takes no time).
    - A fused attention (kind ``attention``) on a tile with a GEMM model: its kernels'
      launches plus the roofline of its FLOP at the kernel's measured rate in the pass at
      its head dim (:meth:`GemmSpec.attention_efficiency_for`: ``gemm.attention_forward_
      efficiency``, ``..._backward_...``, else the GEMM model's) and its bytes.
    - Otherwise the roofline of :func:`op_time_s` against the SRAM (operands in DRAM move as
      the step's DRAM flows, in parallel), plus ``tile.op_latency_s`` for each kernel the
      pass launches (a tiled chip's per-op dispatch; 0 unless the config gives it); a fused
      attention's forward at ``tile.attention_efficiency`` where the tile gives one.

    An fp8 op (:attr:`Op.fp8`) runs at ``fp8_peak_flop_per_s`` and the tile's efficiency in
    ``fp8_dtype``, the format its recipe's GEMMs take (fp8, or nvfp4 under NVFP4).
    """
    max_efficiency = tile.gemm.max_efficiency if tile.gemm is not None else 0.0
    if op.fp8:
        # A Transformer Engine fp8 GEMM (palmsim.workload.fp8): fprop, dgrad and wgrad at
        # the recipe's peak and efficiency (tile.format_efficiency.fp8, .nvfp4).
        assert fp8_peak_flop_per_s > 0, f"fp8 op {op.name!r} costed without an fp8 peak"
        peak_flop_per_s = fp8_peak_flop_per_s
        if tile.gemm is not None:
            max_efficiency = tile.gemm_max_efficiency_for(fp8_dtype)
        else:
            tile = dataclasses.replace(tile, compute_efficiency=tile.efficiency_for(fp8_dtype))
    if op.gemm_shape is not None and tile.gemm is not None:  # not _roofline_op
        g = tile.gemm
        batch, m, k, n = op.gemm_shape
        rounds = _grouped_rounds(op.kernels_fwd, g.grouped_streams)

        def gemm(rows: float, inner: float, cols: float, nbytes: float) -> tuple[float, ...]:
            if len(rounds) == 1:
                return _gemm(rows, inner, cols, batch, nbytes)
            # a grouped GEMM: each round's products run together, one round after another
            parts = [_gemm(rows, inner, cols, r, nbytes * r / batch) for r in rounds]
            return tuple(sum(terms) for terms in zip(*parts, strict=True))

        def _gemm(
            rows: float, inner: float, cols: float, count: float, nbytes: float
        ) -> tuple[float, ...]:
            launch_s, compute_s, memory_s = gemm_terms_s(
                rows,
                inner,
                cols,
                batch=count,
                operand_bytes=nbytes,
                peak_flop_per_s=peak_flop_per_s,
                max_efficiency=max_efficiency,
                compute_units=g.compute_units,
                tile_m=g.tile_m,
                tile_n=g.tile_n,
                memory_bandwidth_bytes_per_s=operand_bandwidth_bytes_per_s,
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
    if _mesh_gemm_op(op, tile):
        assert op.gemm_shape is not None and tile.mesh_gemm is not None
        mesh = tile.mesh_gemm
        batch, m, k, n = op.gemm_shape

        def product(rows: float, inner: float, cols: float) -> float:
            return mesh_gemm_time_s(
                rows,
                inner,
                cols,
                batch=batch,
                mesh_rows=mesh.mesh[0],
                mesh_cols=mesh.mesh[1],
                step_s=mesh.step_s,
                per_k_s=mesh.per_k_s,
                per_column_s=mesh.per_column_s,
                per_mac_s=mesh.per_mac_s,
            )

        if phase == "B":  # the two backward products, as a GEMM model's above
            math_s = (product(m, n, k) if part != "wgrad" else 0.0) + (
                product(k, m, n) if part != "dgrad" else 0.0
            )
        else:
            math_s = product(m, k, n)
            if op.name in TRANSPOSED_MESH_GEMMS:
                # an activation product's bytes are e * batch * (mk + kn + mn) (matmul_cost)
                element_bytes = op.bytes_fwd / (batch * (m * k + k * n + m * n))
                math_s += mesh_gemm_row_reduce_s(
                    m,
                    n,
                    batch=batch,
                    mesh_rows=mesh.mesh[0],
                    mesh_cols=mesh.mesh[1],
                    element_bytes=element_bytes,
                    link_latency_s=mesh.link_latency_s,
                    link_bandwidth_bytes_per_s=mesh.link_bandwidth_bytes_per_s,
                )
        launch_s = (op.kernels_bwd if phase == "B" else op.kernels_fwd) * tile.op_latency_s
        return math_s + launch_s, launch_s, math_s
    if op.kind == "attention" and tile.gemm is not None:
        # A fused attention core at the kernel's measured fraction of peak in this pass at
        # its head dim (gemm.attention_*_efficiency; without one, ASSUMPTION: the GEMM
        # model's max_efficiency), without output-tile quantisation (b·a/t·s/128 query
        # blocks fill the SMs), bounded by its bytes; one launch per kernel.
        g = tile.gemm
        kernels = op.kernels_bwd if phase == "B" else op.kernels_fwd
        launch_s = kernels * g.launch_latency_s
        efficiency = g.attention_efficiency_for(phase, op.head_dim or 128.0)
        flop_s = flop / (peak_flop_per_s * efficiency)
        return launch_s + max(flop_s, all_bytes / operand_bandwidth_bytes_per_s), launch_s, flop_s
    if flop == 0.0 and tile.memory_ops is not None:
        kernels = op.kernels_bwd if phase == "B" else op.kernels_fwd
        launch_s = kernels * tile.memory_ops.for_kind(op.kind).launch_latency_s
        return tile.memory_ops.time_s(op.kind, all_bytes, kernels), launch_s, 0.0
    if op.kind == "attention" and phase == "F" and tile.attention_efficiency > 0:
        # a tiled chip's fused attention kernel at its measured fraction of peak (a forward
        # kernel's: its backward, never measured, stays at the GEMM efficiency)
        tile = dataclasses.replace(tile, compute_efficiency=tile.attention_efficiency)
    time_s = _roofline_s(flop, sram_bytes, tile, peak_flop_per_s)
    launch_s = (op.kernels_bwd if phase == "B" else op.kernels_fwd) * tile.op_latency_s
    return time_s + launch_s, launch_s, flop / (peak_flop_per_s * tile.compute_efficiency)


def _grouped_rounds(kernels: int, streams: int) -> tuple[int, ...]:
    """A grouped GEMM of ``kernels`` products on ``streams`` streams, as Transformer Engine
    runs it without CUTLASS (``transformer_engine/common/gemm/cublaslt_gemm.cu``,
    ``multi_stream_cublas_gemm``: product ``i`` a cuBLAS GEMM on compute stream ``i mod
    streams``; ``common/util/multi_stream.cpp``: 4 streams): the products in rounds of
    ``streams`` kernels that run together, so each round's output tiles are quantised over the
    SMs together and pay one launch; the products per round. ``streams`` 0: one batched
    kernel, a single round."""
    if streams <= 0 or kernels <= streams:
        return (kernels,)
    full, rest = divmod(kernels, streams)
    return (streams,) * full + ((rest,) if rest else ())


def _roofline_s(flop: float, sram_bytes: float, tile: TileSpec, peak_flop_per_s: float) -> float:
    return op_time_s(
        flop,
        sram_bytes,
        peak_flop_per_s=peak_flop_per_s,
        efficiency=tile.compute_efficiency,
        sram_bandwidth_bytes_per_s=tile.sram_bandwidth_bytes_per_s,
    )


def pass_cost(
    ops: Iterable[Op],
    phase: str,
    tile: TileSpec,
    peak_flop_per_s: float,
    grad_bytes_per_param: int,
    where: OperandPlacement,
    operand_bandwidth_bytes_per_s: float,
    parts: Mapping[str, str] | None = None,
    fused_accumulation: bool = True,
    fp8_peak_flop_per_s: float = 0.0,
    fp8_dtype: str = "fp8",
) -> PassCost:
    """Cost one pass of a run of ops on one tile: its ops' times plus its DRAM traffic.

    ``parts`` (backward only) maps a matmul's name to ``dgrad`` or ``wgrad``: only that one
    of its two backward products, each half its FLOP and activation bytes; the weight read
    goes with ``dgrad``, the weight-gradient accumulation with ``wgrad``.

    ``fused_accumulation``: the backward's read and write of the accumulated gradient are the
    op's own traffic (fused into the weight-gradient GEMM, as Megatron-LM's
    ``--gradient-accumulation-fusion`` does, or into a norm's kernel); otherwise they are
    left to :func:`accumulation_cost`.

    ``fp8_peak_flop_per_s``: the peak of fp8 ops (fp8 training), 0 when there are none;
    ``fp8_dtype`` the format they run in.
    """
    compute_s = flop_total = sram_total = dram_read = dram_write = launch_s = flop_s = 0.0
    serial_s = 0.0
    for op in ops:
        part = (parts or {}).get(op.name, "both") if phase == "B" else "both"
        if phase == "B" and op.frozen and op.gemm_shape is not None:
            # a frozen weight takes no weight gradient: its backward is the dgrad alone
            if part == "wgrad":
                continue
            part = "dgrad"
        weights = op.weight_bytes
        if phase == "B":
            flop, act = op.flop_bwd, op.bytes_bwd
            # Weight-gradient accumulation reads and writes the gradient.
            trained = 0.0 if op.frozen else op.params
            grad = 2.0 * trained * grad_bytes_per_param if fused_accumulation else 0.0
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
        time_s, op_launch_s, op_flop_s = op_pass_time_s(
            op,
            phase,
            flop,
            sram,
            act + weights + grad,
            tile,
            peak_flop_per_s,
            operand_bandwidth_bytes_per_s,
            part,
            fp8_peak_flop_per_s,
            fp8_dtype,
        )
        compute_s += time_s
        launch_s += op_launch_s
        if _roofline_op(op, flop, tile):
            serial_s += op_launch_s
        flop_s += op_flop_s
        flop_total += flop
        sram_total += sram
    return PassCost(
        compute_s, flop_total, sram_total, dram_read, dram_write, launch_s, flop_s, serial_s
    )


def accumulation_cost(
    ops: Iterable[Op],
    tile: TileSpec,
    peak_flop_per_s: float,
    grad_bytes_per_param: int,
    where: OperandPlacement,
) -> PassCost | None:
    """The kernels that add a backward's fresh weight gradients into the accumulated ones.

    One kernel per parameter tensor, reading both gradients and writing the sum, ``3·g``
    bytes per parameter: Megatron-LM's local DDP hook ``param.main_grad.add_(param.grad)``
    (``megatron/model/distributed.py``), or PyTorch's AccumulateGrad (``grad += new``).
    None when the ops own no parameters they train (a frozen op's take no gradient).
    """
    ops = [op for op in ops if not op.frozen]
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
        time_s = _roofline_s(0.0, sram, tile, peak_flop_per_s)
    read = 2.0 / 3.0 * nbytes * where.gradients
    write = 1.0 / 3.0 * nbytes * where.gradients
    return PassCost(time_s, 0.0, sram, read, write, launch_s)


def _memory_kernels_cost(
    read_bytes: float, write_bytes: float, kernels: int, placement: float, tile: TileSpec
) -> PassCost:
    """Memory-bound elementwise kernels moving ``read_bytes`` and ``write_bytes`` of a
    category whose DRAM fraction is ``placement``: on a tile with ``memory_ops``, kernels
    one after the other at its elementwise rate; otherwise the SRAM roofline."""
    nbytes = read_bytes + write_bytes
    sram = nbytes * (1 - placement)
    if tile.memory_ops is not None:
        time_s = tile.memory_ops.time_s("elementwise", nbytes, kernels)
        launch_s = kernels * tile.memory_ops.for_kind("elementwise").launch_latency_s
    else:
        time_s = _roofline_s(0.0, sram, tile, 1.0)
        launch_s = 0.0
    return PassCost(time_s, 0.0, sram, read_bytes * placement, write_bytes * placement, launch_s)


def fp8_weight_cast_cost(
    params: float,
    tensors: int,
    elem_bytes: float,
    copy_bytes_per_param: float,
    tile: TileSpec,
    where: OperandPlacement,
) -> PassCost:
    """Transformer Engine's cast of ``params`` weights in ``tensors`` tensors to fp8, once per
    iteration (palmsim.workload.fp8): one kernel per tensor reading the ``elem_bytes`` weight
    and writing its row-wise and transposed fp8 copies with their scales,
    ``copy_bytes_per_param`` (:func:`palmsim.workload.fp8.fp8_weight_copy_bytes`); with
    fp8 parameters, reading the gathered fp8 weight and writing its transpose."""
    return _memory_kernels_cost(
        params * elem_bytes, params * copy_bytes_per_param, tensors, where.weights, tile
    )


def amax_update_cost(linears: int, phase: str, tile: TileSpec, where: OperandPlacement) -> PassCost:
    """Delayed scaling's fused amax-and-scale update after one pass over ``linears`` fp8
    GEMMs (:func:`palmsim.workload.fp8.amax_update_bytes`): one kernel, its bytes split
    evenly between reads and writes; the state lives with the optimizer state."""
    nbytes = amax_update_bytes(linears, phase)
    return _memory_kernels_cost(nbytes / 2, nbytes / 2, 1, where.optimizer, tile)


def optimizer_step_cost(
    shard_params: float,
    elem_bytes: int,
    state_bytes_per_param: int,
    tile: TileSpec,
    peak_flop_per_s: float,
    where: OperandPlacement,
) -> PassCost:
    """The optimizer step of ``shard_params`` parameters on one tile: memory-bound, no FLOP.

    One memory pass per kernel of Megatron-LM's optimizer step (megatron/optimizer/
    optimizer.py, step() of FP16OptimizerWithFP16Params and FP32Optimizer; clip_grads.py):

    - mixed precision (``elem_bytes`` < 4): copy the e-byte gradient to an fp32 main gradient
      (read e, write 4); unscale it and check for inf/nan (read 4, write 4); its L2 norm for
      gradient clipping (read 4); the Adam/SGD kernel (read the fp32 gradient and the state,
      write the state; the state includes the fp32 master weights); copy the master weights
      to the model's (read 4, write e): 5 kernels, 48 + 2e B with Adam;
    - fp32: the gradient norm (read e), then the kernel (read weights, gradient and moments,
      write weights and moments): 2 kernels, 32 B with Adam.

    Clipping's rescale runs only when the norm exceeds the threshold and is not counted.
    """
    shard, elem, state = shard_params, elem_bytes, state_bytes_per_param
    fp32 = 4
    if elem < 4:
        read_grad, read_weights = shard * elem, 0.0
        # unscale, norm and kernel read the fp32 gradient; the kernel reads the state; the
        # final copy reads the fp32 master weights
        read_state = shard * (3 * fp32 + state + fp32)
        write_state = shard * (2 * fp32 + state)  # gradient copy and unscale; the state
        kernels = 5
    else:
        read_grad, read_weights = shard * 2 * elem, shard * elem  # norm + kernel
        read_state = write_state = shard * state
        kernels = 2
    write_weights = shard * elem
    dram_read = (
        read_grad * where.gradients + read_state * where.optimizer + read_weights * where.weights
    )
    dram_write = write_state * where.optimizer + write_weights * where.weights
    sram = (
        (read_grad) * (1 - where.gradients)
        + (read_state + write_state) * (1 - where.optimizer)
        + (read_weights + write_weights) * (1 - where.weights)
    )
    launch_s = 0.0
    if tile.memory_ops is not None:  # memory-bound kernels, one after the other
        time_s = tile.memory_ops.time_s("optimizer", sram + dram_read + dram_write, kernels)
        launch_s = kernels * tile.memory_ops.for_kind("optimizer").launch_latency_s
    else:
        time_s = _roofline_s(0.0, sram, tile, peak_flop_per_s)
    return PassCost(time_s, 0.0, sram, dram_read, dram_write, launch_s)


def kv_attention_cost(
    *,
    bytes_per_token: float,
    flop_per_token: float,
    ctx_from: int,
    ctx_to: int,
    new_tokens: int,
    spill_token: int,
    tile: TileSpec,
    peak_flop_per_s: float,
    roof_peak_flop_per_s: float | None = None,
) -> PassCost:
    """Attention of one layer over cached tokens ``[ctx_from, ctx_to)`` and the cache write of
    ``new_tokens`` new ones: ``flop_per_token`` per cached token, ``bytes_per_token`` read per
    cached token and written per new token. Tokens below ``spill_token`` live in SRAM, the
    rest in DRAM (read over the NoC from the tile's port).

    The time runs at ``peak_flop_per_s`` (the attention's math fidelity); ``flop_time_s``,
    the verdict's compute roof, at ``roof_peak_flop_per_s`` (default: the same peak).
    """
    ctx = ctx_to - ctx_from
    flop = flop_per_token * ctx
    in_sram = max(0, min(ctx_to, spill_token) - ctx_from)
    new_sram = max(0, min(ctx_to + new_tokens, spill_token) - ctx_to)
    sram = bytes_per_token * (in_sram + new_sram)
    read_dram = bytes_per_token * (ctx - in_sram)
    write_dram = bytes_per_token * (new_tokens - new_sram)
    roof = peak_flop_per_s if roof_peak_flop_per_s is None else roof_peak_flop_per_s
    return PassCost(
        _roofline_s(flop, sram, tile, peak_flop_per_s),
        flop,
        sram,
        read_dram,
        write_dram,
        flop_time_s=flop / (roof * tile.compute_efficiency),
    )


def tt_metal_sdpa_q_chunk_rows(q_rows: int) -> int:
    """Query rows of a chunk of tt-metal's prefill SDPA as its model demos configure it: 256
    for a pass of at least 2048 query rows, 64 below (``SDPAProgramConfig(q_chunk_size=256 if
    seqlen >= 2048 else 64)``: models/tt_transformers/tt/model_config.py ``SDPA_PROGCFG`` and
    models/demos/llama3_70b_galaxy/tt/model_config.py alike)."""
    return 256 if q_rows >= 2048 else 64


def attention_split_factor(
    split: str,
    *,
    users: int,
    heads: int,
    q_rows: int,
    cached_rows: int,
    q_chunk_rows: int,
    cores: int,
    causal: bool = True,
) -> float:
    """How much longer a fused attention kernel runs than its work spread evenly over
    ``cores`` would take: its busiest core's work over the mean core's (>= 1), the kernel
    dealing whole query chunks of ``q_chunk_rows`` rows to its cores as ``split`` says
    (``inference.prefill_attention_split``; 'even': 1).

    A pass of ``users`` users and ``heads`` query heads over ``q_rows`` new rows, after
    ``cached_rows`` cached ones, has ``n = ceil(q_rows / q_chunk_rows)`` chunks a head (the
    last padded whole, as tt-metal pads the sequence to a multiple of the chunk). Chunk ``j``
    (from 0) of a causal pass meets ``cached_rows + (j + 1) q_chunk_rows`` keys (the block on
    the diagonal computed whole), a non-causal one ``cached_rows + n q_chunk_rows``: its work
    in units of a chunk's rows.

    - ``heads_first``: tt-metal's SDPA program factory until PR #44614 (2026-05-18,
      ttnn/cpp/ttnn/operations/transformer/sdpa/device/sdpa_program_factory.cpp): the cores
      split the users, then the heads, then the chunks, each factor as large as the cores
      left allow (``batch_parallel_factor = min(B, cores)``, ``nh_parallel_factor =
      min(cores / batch_parallel_factor, NQH)``, ``q_parallel_factor = min(cores / (both),
      q_num_chunks)``), each core ceil(users / batch factor) users, ceil(heads / head factor)
      heads and a range of ceil(n / q factor) chunks; a causal range pairs its low chunks
      with the mirrored high ones (``BALANCED_Q_PARALLEL``) only when the ranges divide the
      chunks exactly and hold an even number each, else it is contiguous, and the last range
      carries the most work.
    - ``pairs``: the same factory since PR #44614 ("global Q scheduling"; tt-metal issue
      #55766 measures it on a p100a): every user's and head's chunks laid out flat and dealt
      to the cores in ranges of ceil(units / cores), a causal pass's in pairs ``(i, n - 1 -
      i)`` of ``2 cached_rows + (n + 1) q_chunk_rows`` each where ``n`` is even, else one by
      one in (user, head, chunk) order.
    """
    if split == "even" or cores <= 1:
        return 1.0
    chunks = max(-(-q_rows // q_chunk_rows), 1)

    def work(first: int, last: int) -> float:  # chunks [first, last) of one head
        count = last - first
        if not causal:
            return count * (cached_rows + chunks * q_chunk_rows)
        # sum of cached_rows + (j + 1) q_chunk_rows over j in [first, last)
        return count * cached_rows + q_chunk_rows * (last * (last + 1) - first * (first + 1)) / 2

    mean = users * heads * work(0, chunks) / cores
    if split == "pairs":
        if not causal or chunks % 2 == 0:
            paired = causal and chunks > 1
            units = users * heads * (chunks // 2 if paired else chunks)
            unit = work(0, 1) + work(chunks - 1, chunks) if paired else work(0, 1)
            busiest = -(-units // cores) * unit
        else:  # ranges of the flat chunks: the work before flat index x, whole heads then part

            def before(x: int) -> float:
                return (x // chunks) * work(0, chunks) + work(0, x % chunks)

            units = users * heads * chunks
            per_core = -(-units // cores)
            busiest = max(
                before(min(start + per_core, units)) - before(start)
                for start in range(0, units, per_core)
            )
    else:  # heads_first
        user_ways = min(users, cores)
        head_ways = min(cores // user_ways, heads)
        chunk_ways = min(cores // (user_ways * head_ways), chunks)
        per_core = -(-chunks // chunk_ways)
        if causal and per_core * chunk_ways == chunks and per_core % 2 == 0:
            span = per_core / 2 * (work(0, 1) + work(chunks - 1, chunks))
        else:
            span = max(
                work(k * per_core, min((k + 1) * per_core, chunks)) for k in range(chunk_ways)
            )
        busiest = -(-users // user_ways) * -(-heads // head_ways) * span
    return max(busiest / mean, 1.0)
