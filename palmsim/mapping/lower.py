"""Lowering passes: a stage's units of work into plan steps, one pass per feature.

Each pass is a pure function from frozen inputs to a tuple of steps. The orchestrators
(:mod:`palmsim.mapping.mapper` for training, :mod:`palmsim.mapping.inference` for serving)
call them in order; a new mapping option is one new pass, or one new branch of the pass
it changes (see ``docs/extending.md``).

Step identity is typed: every step carries its layer (-1 for none), block and op key (the
label without layer or decode-step index). Labels are built here, for people, and never
parsed back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from palmsim.config.specs import MappingSpec, TileSpec
from palmsim.hardware.costs import (
    OperandPlacement,
    PassCost,
    accumulation_cost,
    amax_update_cost,
    fp8_weight_cast_cost,
    optimizer_step_cost,
    pass_cost,
)
from palmsim.mapping.plan import (
    CollectiveKind,
    CollectiveStep,
    ComputeStep,
    GradBucketReady,
    GradReduce,
    GroupKind,
    Step,
)
from palmsim.workload.builders import Block
from palmsim.workload.ops import Op
from palmsim.workload.recompute import DEFAULT_RECOMPUTE_MODULES, MOE_BLOCKS, recomputed_ops

__all__ = [
    "Costing",
    "Unit",
    "chain_param_gathers",
    "compute_step",
    "engine_policy",
    "fp8_amax_update",
    "grad_accumulation",
    "grad_bucket",
    "optimizer_step",
    "param_gathers",
    "pipeline_p2p_bytes",
    "prefetch_gathers",
    "receive_gather",
    "recompute_block",
    "tensor_reduce_scatters",
    "tp_collective",
    "tp_comm_overlap_pass",
    "tp_overlap_backward",
    "zero_gather",
]


@dataclass(frozen=True, slots=True)
class Unit:
    """What a (virtual) stage holds, in order: the embedding, transformer layers, the LM head.

    ``name`` starts the labels of its steps (``embed``, ``L3``, ``head``); ``layer`` is the
    transformer layer index, -1 for the embedding and the head. ``prefix`` tags serving
    passes (``P`` prefill, ``D7`` decode step 7; ``tag`` is the prefix without its index).
    """

    name: str
    layer: int
    blocks: tuple[Block, ...]
    prefix: str = ""
    tag: str = ""

    @property
    def is_layer(self) -> bool:
        """A transformer layer (not the embedding or the head)."""
        return self.layer >= 0

    def ident(self, *parts: str) -> tuple[str, str]:
        """``(label, op key)`` of a step of this unit: ``L3.attn.ar`` and ``L.attn.ar``."""
        key = "L" if self.is_layer else self.name
        head = (self.prefix + ".") if self.prefix else ""
        key_head = (self.tag + ".") if self.tag else ""
        return ".".join((head + self.name, *parts)), ".".join((key_head + key, *parts))


@dataclass(frozen=True, slots=True)
class Costing:
    """How to cost work on the tiles of one stage: the tile, its peak and where its data
    lives (:func:`palmsim.hardware.costs.pass_cost` with these arguments)."""

    tile: TileSpec
    peak_flop_per_s: float
    grad_bytes_per_param: int
    where: OperandPlacement
    operand_bandwidth_bytes_per_s: float
    fused_accumulation: bool = True
    fp8_peak_flop_per_s: float = 0.0  # fp8 training's linear GEMMs; 0 without fp8
    fp8_dtype: str = "fp8"  # the format those GEMMs run in

    def cost(
        self, ops: Iterable[Op], phase: str, parts: Mapping[str, str] | None = None
    ) -> PassCost:
        """One pass (``F`` or ``B``) of ``ops`` on one tile."""
        return pass_cost(
            ops,
            phase,
            self.tile,
            self.peak_flop_per_s,
            self.grad_bytes_per_param,
            self.where,
            self.operand_bandwidth_bytes_per_s,
            parts,
            fused_accumulation=self.fused_accumulation,
            fp8_peak_flop_per_s=self.fp8_peak_flop_per_s,
            fp8_dtype=self.fp8_dtype,
        )

    def on_cores(self, share: float) -> Costing:
        """This costing for ops that run on ``share`` of the tile's cores (a serving code's
        smaller core grid: inference.prefill_compute_cores). A simulated tile's peak, SRAM
        bandwidth and GEMM compute units are the sums of its cores' (docs/architecture.md,
        "Granularity"), so those of the cores in use are that share of them."""
        if share == 1.0:
            return self
        tile, gemm = self.tile, self.tile.gemm
        if gemm is not None:
            gemm = dataclasses.replace(
                gemm, compute_units=max(1, round(gemm.compute_units * share))
            )
        return dataclasses.replace(
            self,
            tile=dataclasses.replace(
                tile, sram_bandwidth_bytes_per_s=tile.sram_bandwidth_bytes_per_s * share, gemm=gemm
            ),
            peak_flop_per_s=self.peak_flop_per_s * share,
            operand_bandwidth_bytes_per_s=self.operand_bandwidth_bytes_per_s * share,
            fp8_peak_flop_per_s=self.fp8_peak_flop_per_s * share,
        )

    def step(
        self,
        ops: Iterable[Op],
        phase: str,
        unit: Unit,
        block: str,
        *parts_of_label: str,
        parts: Mapping[str, str] | None = None,
    ) -> ComputeStep:
        """A :class:`ComputeStep` of ``ops`` of ``unit``'s ``block``, labelled
        ``unit.block[.parts_of_label]``."""
        return compute_step(
            self.cost(ops, phase, parts), unit, block, *parts_of_label, block_name=block
        )


def compute_step(
    cost: PassCost, unit: Unit, *label_parts: str, block_name: str, from_microbatch: int = 0
) -> ComputeStep:
    """Wrap a cost as a step of ``unit`` with its typed identity."""
    label, op = unit.ident(*label_parts)
    return ComputeStep(
        label,
        cost.time_s,
        cost.flop,
        cost.sram_bytes,
        cost.dram_read_bytes,
        cost.dram_write_bytes,
        from_microbatch,
        cost.launch_latency_s,
        cost.flop_time_s,
        cost.serial_latency_s,
        layer=unit.layer,
        block=block_name,
        op=op,
    )


def tp_collective(
    kind: CollectiveKind,
    nbytes: float,
    unit: Unit,
    block: str,
    *,
    tp: int,
    sequence_parallel: bool,
    suffix: str = "ar",
    group: GroupKind = GroupKind.TP,
) -> tuple[Step, ...]:
    """A TP collective of ``nbytes`` after ``unit``'s ``block``; none with one rank or no bytes.

    Sequence parallelism replaces an all-reduce by a reduce-scatter to the sequence shards,
    then (after the sharded norm/dropout) an all-gather; together the all-reduce's bytes
    (Korthikanti et al. 2023, Sec. 4.2.2). ``group`` ETP: the routed experts' reduction over
    their expert tensor-parallel group of ``tp`` ranks (:mod:`palmsim.mapping.folding`).
    """
    if tp == 1 or nbytes <= 0:
        return ()
    parts = (block,) if block else ()
    pieces: tuple[tuple[CollectiveKind, str], ...]
    if kind is CollectiveKind.ALLREDUCE and sequence_parallel:
        pieces = ((CollectiveKind.REDUCESCATTER, "rs"), (CollectiveKind.ALLGATHER, "ag"))
    else:
        pieces = ((kind, suffix),)
    steps: list[Step] = []
    for piece_kind, piece in pieces:
        label, op = unit.ident(*parts, piece)
        steps.append(
            CollectiveStep(label, piece_kind, nbytes, group, layer=unit.layer, block=block, op=op)
        )
    return tuple(steps)


def receive_gather(
    gather_bytes: float, *, tp: int, label: str = "recv.allgather"
) -> tuple[Step, ...]:
    """The receiving TP group's all-gather of what its ranks received (scatter-gather
    pipeline sends); none with one rank or nothing to gather."""
    if tp == 1 or gather_bytes <= 0:
        return ()
    return (CollectiveStep(label, CollectiveKind.ALLGATHER, gather_bytes, op=label),)


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


def zero_gather(
    unit: Unit, unit_params: float, elem: int, *, zero: int, tensors: int = 0
) -> tuple[Step, ...]:
    """ZeRO-3: all-gather a unit's weights over the DP group before it runs, in one
    collective, or with ``tensors`` > 0 (``mapping.zero_collectives`` 'tensor') in one per
    parameter tensor (:func:`_per_tensor`)."""
    if zero < 3 or unit_params == 0:
        return ()
    label, op = unit.ident("params", "ag")
    return _per_tensor(label, op, CollectiveKind.ALLGATHER, unit_params * elem, unit, tensors)


def param_gathers(unit: Unit, dense_bytes: float, expert_bytes: float) -> tuple[Step, ...]:
    """ZeRO-1/2 with ``mapping.overlap_param_gather``: all-gather a unit's updated weights
    before its first forward of the iteration, the dense ones over the DP group and the routed
    experts' over the EDP group (Megatron-Core's --overlap-param-gather: the module's forward
    pre-hook waits for its bucket group's all-gather, ``_make_forward_pre_hook`` in
    ``megatron/core/distributed/distributed_data_parallel.py``; the gathered weights serve
    every later micro-batch)."""
    steps = []
    for what, size, group in (("params", dense_bytes, GroupKind.DP),
                              ("experts", expert_bytes, GroupKind.EDP)):  # fmt: skip
        if size > 0:
            label, op = unit.ident(what, "ag")
            steps.append(
                CollectiveStep(
                    label, CollectiveKind.ALLGATHER, size, group, layer=unit.layer, op=op,
                    first_microbatch_only=True,
                )
            )  # fmt: skip
    return tuple(steps)


def tensor_reduce_scatters(
    unit: Unit, unit_params: float, elem: int, tensors: int
) -> tuple[Step, ...]:
    """ZeRO-3 with ``mapping.zero_collectives`` 'tensor': after a unit's backward, one blocking
    reduce-scatter of each of its gradient tensors over the DP group (DeepSpeed's
    ``_reduce_scatter_gradients``, one ``reduce_scatter`` per parameter, before v0.6.0), in
    place of the unit's gradient bucket."""
    if unit_params == 0:
        return ()
    label, op = unit.ident("grads", "rs")
    return _per_tensor(label, op, CollectiveKind.REDUCESCATTER, unit_params * elem, unit, tensors)


def _per_tensor(
    label: str, op: str, kind: CollectiveKind, size_bytes: float, unit: Unit, tensors: int
) -> tuple[Step, ...]:
    """``size_bytes`` of a unit's parameters moved by one DP collective, or by ``tensors`` of
    them, each a ``1/tensors`` share: an uncontended ring's time is linear in its bytes, so
    splitting evenly changes only how many times the ring's ``n-1`` (or ``2(n-1)``) step
    latencies are paid, which is what one collective per tensor costs."""
    count = max(tensors, 1)
    return tuple(
        CollectiveStep(
            label if count == 1 else f"{label}{i}", kind, size_bytes / count, GroupKind.DP,
            layer=unit.layer, op=op,
        )
        for i in range(count)
    )  # fmt: skip


def prefetch_gathers(steps: Iterable[Step]) -> tuple[Step, ...]:
    """ZeRO-3 prefetch: each weight all-gather of a pass starts the next one as it completes.

    Fully sharded data parallelism gathers the next unit's weights while the current unit
    computes: PyTorch FSDP's forward and backward prefetching, at most two units gathered at
    a time (Zhao et al., "PyTorch FSDP", VLDB 2023, Sec. 3.3.2 and 4.3, the rate limiter);
    Megatron-FSDP's ``all_gather_params(prefetch=True)``, which adds the next buckets in
    forward or backward order and keeps at most two units in its double buffer
    (``megatron/core/distributed/fsdp/src/megatron_fsdp/param_and_grad_buffer.py``);
    DeepSpeed ZeRO-3's parameter prefetch. So the first gather of a pass is exposed and each
    later one is in flight, on the same DP communicator, while the unit before it runs; the
    tile waits only for what is left of it. (ZeRO-1/2's once-per-iteration gathers are
    chained across a stage's chunks by :func:`chain_param_gathers`.)
    """
    out = list(steps)
    gathers = [
        (i, step)
        for i, step in enumerate(out)
        if isinstance(step, CollectiveStep)
        and step.group is GroupKind.DP
        and step.kind is CollectiveKind.ALLGATHER
        and not step.first_microbatch_only
    ]
    for k, (i, step) in enumerate(gathers):
        following = gathers[k + 1][1] if k + 1 < len(gathers) else None
        out[i] = dataclasses.replace(step, prefetch=following, prefetched=k > 0)
    return tuple(out)


def chain_param_gathers(
    forwards: Sequence[tuple[Step, ...]],
) -> tuple[list[tuple[Step, ...]], tuple[CollectiveStep, ...]]:
    """ZeRO-1/2 with ``mapping.overlap_param_gather``: chain the weight all-gathers of a
    stage's forward passes (``forwards``, its model chunks in order), the DP group's and the
    EDP group's apart, each starting the next as its unit waits for it; the first of each
    chain starts with the iteration. Returns the passes and those first gathers.

    Megatron-LM (at the H100 scaling runs' commit f2e5db402c) dispatches the first bucket's
    all-gather in ``DistributedOptimizer.zero_grad`` before the forward passes, and each
    forward pre-hook that waits for a bucket dispatches the next one, across model chunks
    (``_finish_param_sync_helper``, megatron/core/optimizer/distrib_optimizer.py); later
    releases keep the chain (``next_param_gather_bucket_group``) and, with the interleaved
    schedule, launch every stage's first chunks at the start (``align_param_gather``).
    """
    out = [list(steps) for steps in forwards]
    first: list[CollectiveStep] = []
    for group in (GroupKind.DP, GroupKind.EDP):
        at = [
            (c, i)
            for c, steps in enumerate(out)
            for i, step in enumerate(steps)
            if isinstance(step, CollectiveStep) and step.first_microbatch_only
            and step.group is group
        ]  # fmt: skip
        for k, (c, i) in enumerate(at):
            following = out[at[k + 1][0]][at[k + 1][1]] if k + 1 < len(at) else None
            assert following is None or isinstance(following, CollectiveStep)
            step = out[c][i]
            assert isinstance(step, CollectiveStep)
            out[c][i] = dataclasses.replace(step, prefetch=following, prefetched=True)
            if k == 0:
                first.append(step)
    return [tuple(steps) for steps in out], tuple(first)


def recompute_block(costing: Costing, unit: Unit, block: Block, mapping: MappingSpec,
                    tp_steps: tuple[Step, ...]) -> tuple[Step, ...]:  # fmt: skip
    """What the backward of a layer's ``block`` first re-runs of its forward: everything, with
    its TP collectives (full); under selective the ops of ``mapping.recompute_modules``
    (:mod:`palmsim.workload.recompute`; the attention core by default, Korthikanti et al.
    2023), a recomputed MLP or MoE block with its TP collectives; or nothing."""
    if not unit.is_layer or mapping.recompute == "none":
        return ()
    if mapping.recompute == "full":
        return (costing.step(block.ops, "F", unit, block.name), *tp_steps)
    modules = mapping.recompute_modules or DEFAULT_RECOMPUTE_MODULES
    redo = recomputed_ops(block, modules)
    if not redo:
        return ()
    # a recomputed MLP or MoE layer re-runs its forward's TP collectives with it (Megatron-
    # Core checkpoints the whole module's forward, its row-parallel reductions included)
    whole = (block.name == "mlp" and "mlp" in modules) or (
        block.name in MOE_BLOCKS and "moe" in modules
    )
    label = "core" if all(op.recompute_selective for op in redo) else "recompute"
    step = costing.step(redo, "F", unit, block.name, label)
    return (step, *tp_steps) if whole else (step,)


def tp_overlap_backward(
    costing: Costing, unit: Unit, block: Block, reduce: tuple[Step, ...], *, enabled: bool
) -> tuple[Step, ...]:
    """The backward of ``block`` and its TP collectives; with ``tp_overlap`` the column-parallel
    linear (the block's first weight GEMM) all-reduces its input gradient while its weight
    gradient is computed (Megatron-LM's async TP all-reduce,
    LinearWithGradAccumulationAndAsyncCommunication in megatron/core/tensor_parallel/layers.py).
    """
    column = next((op for op in block.ops if op.kind == "matmul" and op.params > 0), None)
    if not (enabled and reduce and column is not None):
        return (costing.step(block.ops, "B", unit, block.name), *reduce)
    dgrad = costing.step(block.ops, "B", unit, block.name, parts={column.name: "dgrad"})
    wgrad = costing.step(
        [column], "B", unit, block.name, column.name, "wgrad", parts={column.name: "wgrad"}
    )
    first = reduce[0]
    assert isinstance(first, CollectiveStep)
    return (dgrad, dataclasses.replace(first, overlap=wgrad), *reduce[1:])


# Transformer Engine's userbuffers GEMM + reduce-scatter overlap ("pipeline" method) splits
# the GEMM into this many chunks and reduce-scatters each as it is done: Megatron-Bridge's
# userbuffers configurations for the H100 (src/megatron/bridge/training/comm_overlap.py:
# proj_fprop and fc2_fprop, PipelineOverlapCfg(num_splits=4)).
USERBUFFERS_RS_SPLITS = 4


def _share(step: ComputeStep, fraction: float, *suffix: str) -> ComputeStep:
    """``fraction`` of ``step``'s work (one chunk of a GEMM split in equal chunks)."""
    return dataclasses.replace(
        step,
        label=".".join((step.label, *suffix)),
        op=".".join((step.op, *suffix)),
        compute_time_s=step.compute_time_s * fraction,
        flop=step.flop * fraction,
        sram_bytes=step.sram_bytes * fraction,
        dram_read_bytes=step.dram_read_bytes * fraction,
        dram_write_bytes=step.dram_write_bytes * fraction,
        launch_latency_s=step.launch_latency_s * fraction,
        flop_time_s=step.flop_time_s * fraction,
        serial_latency_s=step.serial_latency_s * fraction,
    )


def _weight_gemms(block: Block) -> tuple[int, int] | None:
    """Indices of ``block``'s first (column-parallel) and last (row-parallel) weight GEMM."""
    gemms = [i for i, op in enumerate(block.ops) if op.kind == "matmul" and op.params > 0]
    return (gemms[0], gemms[-1]) if gemms else None


def _gathered_gemm(gather: CollectiveStep, gemm: ComputeStep, tp: int) -> tuple[Step, ...]:
    """An all-gather overlapped with the GEMM that consumes it, as Transformer Engine's
    userbuffers "ring exchange" runs it: the GEMM in ``tp`` chunks, the local one first, each
    next chunk arriving while the one before is multiplied. With the gather taking ``A`` and
    the GEMM ``G``: ``g + (tp - 1)·max(g, a)``, ``g = G/tp``, ``a = A/(tp - 1)``, which is
    ``max(G, A + G/tp)``, the time of the gather overlapping ``(tp - 1)/tp`` of the GEMM and
    then the last chunk."""
    return (
        dataclasses.replace(gather, overlap=_share(gemm, (tp - 1) / tp)),
        _share(gemm, 1 / tp, "last"),
    )


def _core_span(ops: Sequence[Op], col: int, row: int) -> tuple[int, int] | None:
    """The first and last index of the attention core (the ops selective recompute re-runs)
    strictly between the GEMMs at ``col`` and ``row``, or None."""
    core = [i for i in range(col + 1, row) if ops[i].recompute_selective]
    return (core[0], core[-1]) if core else None


def _between(
    costing: Costing,
    unit: Unit,
    block: Block,
    gemms: tuple[int, int],
    phase: str,
    ring: Callable[[ComputeStep, str], tuple[Step, ...]] | None,
) -> tuple[Step, ...]:
    """The forward of the ops between a block's column- and row-parallel GEMMs: one step, or
    with ``ring`` the ops before the attention core, the core on its ring, the ops after."""
    col, row = gemms
    ops = block.ops
    core = _core_span(ops, col, row) if ring is not None else None
    if core is None:
        mid = ops[col + 1 : row]
        return (costing.step(mid, phase, unit, block.name, "mid"),) if mid else ()
    assert ring is not None
    first, last = core
    steps: list[Step] = []
    if ops[col + 1 : first]:
        steps.append(costing.step(ops[col + 1 : first], phase, unit, block.name, "mid"))
    steps.extend(ring(costing.step(ops[first : last + 1], phase, unit, block.name, "core"), phase))
    if ops[last + 1 : row]:
        steps.append(costing.step(ops[last + 1 : row], phase, unit, block.name, "post_core"))
    return tuple(steps)


def _scattered_gemm(gemm: ComputeStep, scatter: CollectiveStep) -> tuple[Step, ...]:
    """A GEMM whose output is reduce-scattered, overlapped as userbuffers' "pipeline" method
    runs it: the GEMM in ``k`` = ``USERBUFFERS_RS_SPLITS`` chunks, each reduce-scattered once
    done. The first chunk runs alone, then the scatter overlaps the other ``k - 1``:
    ``max(G, G/k + R)`` for a GEMM of ``G`` and a scatter of ``R``. (The exact pipeline adds
    the last chunk's scatter, ``R/k``, when the GEMM is the longer; the SMs the scatter's
    kernels take from the GEMM are not modelled either.)"""
    k = USERBUFFERS_RS_SPLITS
    return (
        _share(gemm, 1 / k, "first"),
        dataclasses.replace(scatter, overlap=_share(gemm, 1 - 1 / k)),
    )


def sm_margin(costing: Costing, units: int) -> Costing:
    """``costing`` for a GEMM that a concurrent communication kernel leaves ``units`` compute
    units short: Transformer Engine's userbuffers run the GEMM of a pipelined or bulk overlap
    on the SMs their comm kernels do not hold (``set_sm_margin``: ``_math_sms = sm_count -
    num_sm``, transformer_engine/common/comm_gemm_overlap/comm_gemm_overlap.cpp), a tile of
    ``compute_units - units`` (:meth:`Costing.on_cores`). A tile without a GEMM model runs
    its GEMMs unchanged."""
    gemm = costing.tile.gemm
    if gemm is None or units == 0:
        return costing
    return costing.on_cores((gemm.compute_units - units) / gemm.compute_units)


def tp_comm_overlap_pass(
    costing: Costing,
    unit: Unit,
    block: Block,
    phase: str,
    collectives: tuple[Step, ...],
    pending: CollectiveStep | None,
    *,
    tp: int,
    sms: int = 0,
    ring: Callable[[ComputeStep, str], tuple[Step, ...]] | None = None,
) -> tuple[tuple[Step, ...], CollectiveStep | None]:
    """One pass of ``block`` with its sequence-parallel TP collectives overlapped with its
    GEMMs (``mapping.tp_comm_overlap``: Transformer Engine's userbuffers, Megatron-Core's
    ``--tp-comm-overlap``; ``transformer_engine/pytorch/module/linear.py`` and
    ``layernorm_linear.py``, ``ub_overlap_ag``/``ub_overlap_rs``/``ub_bulk_wgrad``).

    ``collectives`` is the block's (reduce-scatter, all-gather) pair, ``pending`` the
    all-gather of the block before, which this block's first GEMM consumes. Forward: the
    pending all-gather overlaps the column-parallel GEMM (QKV, fc1; ring exchange), the
    reduce-scatter the row-parallel GEMM that produces its input (attention projection, fc2;
    pipeline). Backward (blocks in reverse): the pending all-gather of the output gradient
    overlaps the row-parallel GEMM's input-gradient (dgrad) GEMM; the reduce-scatter of the
    column-parallel GEMM's input gradient overlaps its weight-gradient GEMM (bulk overlap).
    The GEMMs under a reduce-scatter run ``sms`` compute units short (:func:`sm_margin`).
    ``ring``: the steps of the attention core (the block's ops selective recompute re-runs)
    on a context-parallel group, from the core's own step and the phase
    (:func:`palmsim.mapping.context.ring_attention_steps`); the ops between the two GEMMs
    then run before, on and after it, as Transformer Engine runs userbuffers on the linears
    around a context-parallel core. Returns the pass's steps and the all-gather the next
    block takes over.
    """
    scatter = next(
        (c for c in collectives if isinstance(c, CollectiveStep)
         and c.kind is CollectiveKind.REDUCESCATTER), None,
    )  # fmt: skip
    gather = next(
        (c for c in collectives if isinstance(c, CollectiveStep)
         and c.kind is CollectiveKind.ALLGATHER), None,
    )  # fmt: skip
    gemms = _weight_gemms(block)
    if gemms is None:  # no GEMM to hide them behind (the embedding)
        head = (pending,) if pending else ()
        rest = tuple(c for c in collectives if c is not gather)
        return (*head, costing.step(block.ops, phase, unit, block.name), *rest), gather
    col, row = gemms
    ops = block.ops
    steps: list[Step] = []
    if phase == "F":
        if ops[:col]:
            steps.append(costing.step(ops[:col], "F", unit, block.name, "pre"))
        column = costing.step([ops[col]], "F", unit, block.name, ops[col].name)
        steps.extend(_gathered_gemm(pending, column, tp) if pending else (column,))
        if row > col:
            steps.extend(_between(costing, unit, block, (col, row), "F", ring))
            if scatter:
                last = sm_margin(costing, sms).step(
                    [ops[row]], "F", unit, block.name, ops[row].name
                )
                steps.extend(_scattered_gemm(last, scatter))
            else:
                steps.append(costing.step([ops[row]], "F", unit, block.name, ops[row].name))
        elif scatter:
            steps.append(scatter)
        if ops[row + 1 :]:
            steps.append(costing.step(ops[row + 1 :], "F", unit, block.name, "post"))
        return tuple(steps), gather
    # backward: the row-parallel dgrad first (its output gradient gathered), the rest, then
    # the column-parallel wgrad under the scatter of the block's input gradient
    row_op, col_op = ops[row], ops[col]
    dgrad = costing.step([row_op], "B", unit, block.name, row_op.name, "dgrad",
                         parts={row_op.name: "dgrad"})  # fmt: skip
    steps.extend(_gathered_gemm(pending, dgrad, tp) if pending else (dgrad,))
    if row > col:
        parts = {row_op.name: "wgrad", col_op.name: "dgrad"}
        core = _core_span(ops, col, row) if ring is not None else None
        if core is None:
            steps.append(costing.step(ops, "B", unit, block.name, parts=parts))
        else:  # the ops after the core, the core on its ring, the ops before it
            begin, end = core
            after, before = list(ops[end + 1 :]), list(ops[:begin])
            steps.append(costing.step(after, "B", unit, block.name, "post", parts=parts))
            assert ring is not None
            steps.extend(
                ring(costing.step(ops[begin : end + 1], "B", unit, block.name, "core"), "B")
            )
            steps.append(costing.step(before, "B", unit, block.name, "pre", parts=parts))
    elif len(ops) > 1:  # one GEMM: its dgrad above, its wgrad below
        steps.append(costing.step(ops[:col] + ops[col + 1 :], "B", unit, block.name))
    wgrad_costing = sm_margin(costing, sms) if scatter else costing
    wgrad = wgrad_costing.step([col_op], "B", unit, block.name, col_op.name, "wgrad",
                               parts={col_op.name: "wgrad"})  # fmt: skip
    steps.extend((dataclasses.replace(scatter, overlap=wgrad),) if scatter else (wgrad,))
    return tuple(steps), gather


def grad_accumulation(costing: Costing, unit: Unit, block: Block, mode: str) -> tuple[Step, ...]:
    """The kernels adding a backward's weight gradients to the buffer: none when ``fused``
    into the weight-gradient GEMM; after every backward (``every_microbatch``, Megatron-LM's
    local DDP), or from the second micro-batch on (``after_first_microbatch``, PyTorch's
    AccumulateGrad, which keeps the first backward's gradients)."""
    if mode == "fused":
        return ()
    cost = accumulation_cost(
        block.ops,
        costing.tile,
        costing.peak_flop_per_s,
        costing.grad_bytes_per_param,
        costing.where,
    )
    if cost is None:
        return ()
    first = 1 if mode == "after_first_microbatch" else 0
    return (
        compute_step(
            cost, unit, block.name, "grad_acc", block_name=block.name, from_microbatch=first
        ),
    )


def grad_bucket(
    unit: Unit, unit_params: float, elem: int, *, dp: int, zero: int
) -> tuple[Step, ...]:
    """The point after which a unit's gradients are complete: its DP bucket (PyTorch DDP
    bucketing, Li et al. VLDB 2020); ZeRO reduce-scatters it to the shard's owner."""
    if dp == 1 or unit_params == 0:
        return ()
    kind = CollectiveKind.REDUCESCATTER if zero >= 1 else CollectiveKind.ALLREDUCE
    label, _ = unit.ident("grads")
    return (GradBucketReady(label, unit_params * elem, kind, layer=unit.layer),)


def optimizer_step(
    costing: Costing,
    shard_params: float,
    elem: int,
    state_bytes_per_param: int,
    fp8_weights: tuple[float, int, float, float] = (0.0, 0, 0.0, 0.0),
    orthogonalize: tuple[Op, ...] = (),
) -> ComputeStep:
    """The optimizer step of the tile's parameter shard
    (:func:`palmsim.hardware.costs.optimizer_step_cost`), plus, in fp8 training, the cast of
    the updated weights to fp8, ``fp8_weights = (parameters, tensors, bytes read and bytes
    written per parameter)`` of the tile's fp8 GEMMs
    (:func:`palmsim.hardware.costs.fp8_weight_cast_cost`), plus Muon's Newton-Schulz
    products ``orthogonalize`` (:func:`palmsim.workload.muon.newton_schulz_ops`), GEMMs at
    the tile's 16-bit rate."""
    cost = optimizer_step_cost(
        shard_params, elem, state_bytes_per_param, costing.tile, costing.peak_flop_per_s,
        costing.where,
    )  # fmt: skip
    if orthogonalize:
        cost = cost + costing.cost(orthogonalize, "F")
    params, tensors, read_bytes, copy_bytes = fp8_weights
    if params > 0:
        cost = cost + fp8_weight_cast_cost(
            params, tensors, read_bytes, copy_bytes, costing.tile, costing.where
        )
    return ComputeStep(
        "optimizer", cost.time_s, cost.flop, cost.sram_bytes, cost.dram_read_bytes,
        cost.dram_write_bytes, launch_latency_s=cost.launch_latency_s,
        flop_time_s=cost.flop_time_s, serial_latency_s=cost.serial_latency_s, op="optimizer",
    )  # fmt: skip


def fp8_amax_update(costing: Costing, unit: Unit, linears: int, phase: str) -> tuple[Step, ...]:
    """Delayed scaling's amax and scale update after a pass (``F`` or ``B``) of a model chunk
    holding ``linears`` fp8 GEMMs: one fused kernel
    (:func:`palmsim.hardware.costs.amax_update_cost`), labelled ``<unit>.fp8_amax``.

    The MAX all-reduce of the amaxes over the TP x DP x CP group that precedes it is not
    modelled (a few kB per pass: latency only)."""
    if linears == 0:
        return ()
    cost = amax_update_cost(linears, phase, costing.tile, costing.where)
    return (compute_step(cost, unit, "fp8_amax", block_name="fp8_amax"),)


def engine_policy(mapping: MappingSpec, *, zero: int) -> tuple[bool, GradReduce]:
    """The compiled policy of a stage program: ``(send_blocks, grad_reduce)``.

    A send blocks without ``p2p_overlap`` (Megatron-LM's default, without
    ``--overlap-p2p-communication``); ZeRO-2/3 keep only a gradient shard, so every
    backward reduces its buckets; otherwise they reduce during the last backward
    (``dp_overlap``) or after it.
    """
    if zero >= 2:
        reduce = GradReduce.EVERY_BACKWARD
    elif mapping.dp_overlap:
        reduce = GradReduce.OVERLAP_BACKWARD
    else:
        reduce = GradReduce.AFTER_BACKWARD
    return not mapping.p2p_overlap, reduce
