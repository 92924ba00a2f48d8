"""Map a training workload onto a chip: the orchestrator of the training lowering pipeline.

``map_workload(experiment, chip)`` runs the passes in order and returns a frozen
:class:`MappingPlan`, or raises :class:`MappingError` when the mapping cannot work (too few
tiles, indivisible batch, memory):

1. batch arithmetic and the peak lookup (:mod:`palmsim.mapping.batch`);
2. stage layout: the partitioner and the schedule from their registries
   (:mod:`palmsim.mapping.partition`, :mod:`palmsim.mapping.schedule`), then the placement;
3. memory per stage: ZeRO, recompute, the SRAM/DRAM split (:mod:`palmsim.mapping.memory`);
4. lowering, one pass per feature (:mod:`palmsim.mapping.lower`), with the pure cost models of
   :mod:`palmsim.hardware.costs`, into each stage's program and its compiled engine policy;
5. the fit check and the communicators.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from palmsim.config.specs import DTYPE_BYTES, ExperimentSpec, MappingSpec, TrainingSpec
from palmsim.errors import MappingError
from palmsim.hardware.chip import Chip
from palmsim.hardware.costs import OperandPlacement, gemm_operand_bandwidth_bytes_per_s
from palmsim.mapping.batch import Batch, training_batch
from palmsim.mapping.communicators import communicators
from palmsim.mapping.context import cp_attention, cp_recompute, kv_chunk_bytes, ring_attention_steps
from palmsim.mapping.experts import (
    EXPERT_OPS,
    check_ep,
    dispatch_dedup,
    ep_alltoall,
    expert_grad_bucket,
    frozen_params,
    layer_routings,
    split_params,
    stage_state_bytes,
)
from palmsim.mapping.folding import expert_data_parallel_size
from palmsim.mapping.lower import (
    Costing,
    Unit,
    chain_param_gathers,
    engine_policy,
    fp8_amax_update,
    grad_accumulation,
    grad_bucket,
    optimizer_step,
    param_gathers,
    pipeline_p2p_bytes,
    prefetch_gathers,
    receive_gather,
    recompute_block,
    tensor_reduce_scatters,
    tp_collective,
    tp_comm_overlap_pass,
    tp_overlap_backward,
    zero_gather,
)
from palmsim.mapping.memory import (
    TileMemory,
    activation_sizes,
    check_fit,
    optimizer_state_bytes_per_param,
    peak_held_bytes,
    training_remedies,
    training_tile_memory,
)
from palmsim.mapping.partition import PARTITIONERS, partition_with_ends
from palmsim.mapping.placement import place
from palmsim.mapping.plan import (
    CollectiveKind,
    CollectiveStep,
    ComputeStep,
    GroupKind,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
    Step,
)
from palmsim.mapping.schedule import SCHEDULES, Steps
from palmsim.workload.builders import (
    Block,
    embedding_block,
    head_block,
    layer_blocks,
    layer_input_bytes,
    model_flop_per_iteration,
    mtp_units,
)
from palmsim.workload.fp8 import (
    FP8_SCALING,
    fp8_params,
    fp8_weight_cache_bytes,
    fp8_weight_copy_bytes,
)
from palmsim.workload.lora import lora_blocks
from palmsim.workload.muon import muon_matrices, newton_schulz_ops
from palmsim.workload.ops import Op
from palmsim.workload.recompute import kept_bytes, module_ops, recomputed_ops

__all__ = ["StageLayout", "map_workload", "stage_layout"]


@dataclass(frozen=True, slots=True)
class StageLayout:
    """Which layers each virtual stage holds and in what order each stage runs its passes."""

    layer_ranges: tuple[tuple[int, int], ...]  # [first, last) per virtual stage c = j·p + s
    orders: tuple[tuple[Steps, tuple[int, ...]], ...]  # (steps, their chunks) per stage


def stage_layout(
    mapping: MappingSpec,
    num_layers: int,
    num_microbatches: int,
    costs: Callable[[], tuple[float, float, float]],
) -> StageLayout:
    """The schedule of every stage (``SCHEDULES``; interleaved 1F1B is ``1f1b`` with
    ``virtual_stages`` > 1) and the layers of every virtual stage (``PARTITIONERS``, or
    ``mapping.pipeline_layout``).

    Raises:
        MappingError: a layout without one entry per chunk, or not summing to the layers.
    """
    pp, v = mapping.pp, mapping.virtual_stages
    layout = mapping.pipeline_layout
    if layout is not None and (len(layout) != pp * v or sum(layout) != num_layers):
        raise MappingError(
            f"mapping.pipeline_layout {list(layout)}: expected pp x virtual_stages = {pp * v} "
            f"entries summing to the model's {num_layers} layers"
        )
    # More chunks than layers: Megatron-Core runs it only with the embedding and the loss
    # counted as layers of the split (account_for_*_in_pipeline_split), up to two more.
    ends = v > 1 and pp * v > num_layers
    if ends and pp * v > num_layers + 2:  # before any schedule of m·v steps is built
        raise MappingError(
            f"mapping.virtual_stages={v}: pp={pp} x {v} = {pp * v} model chunks but the model "
            f"has only {num_layers} layers and its embedding and loss (each chunk holds one)"
        )
    order = SCHEDULES.get(mapping.schedule)
    orders = tuple(order(pp, num_microbatches, s, v) for s in range(pp))
    if layout is not None:
        starts = [sum(layout[:c]) for c in range(len(layout))]
        ranges = [(a, a + n) for a, n in zip(starts, layout, strict=True)]
    elif ends:
        ranges = partition_with_ends(num_layers, pp * v)
    else:
        ranges = PARTITIONERS.get(mapping.partition)(num_layers, pp * v, costs)
    return StageLayout(tuple(ranges), orders)


@dataclass(frozen=True, slots=True)
class _Model:
    """The blocks of one micro-batch on one tile, and the pipeline send sizes."""

    layers: tuple[tuple[Block, ...], ...]  # per transformer layer (dense or MoE)
    embed: Block
    head: Block
    send_bytes: float  # each rank to its peer of the next/previous stage
    gather_bytes: float  # the receiving TP group's all-gather, 0 for none
    kv_chunk_bytes: float = 0.0  # context parallelism: one rank's K and V of a layer
    dropped_slots_per_microbatch: float = 0.0  # over all MoE layers and EP groups
    # multi-token prediction: (name, layer, blocks) of the units after the head
    # (palmsim.workload.builders.mtp_units), on the last model chunk
    mtp: tuple[tuple[str, int, tuple[Block, ...]], ...] = ()

    @property
    def layer(self) -> tuple[Block, ...]:
        """The last layer's blocks: the typical layer (a MoE one where the first few are
        dense), which ``partition: cost`` balances."""
        return self.layers[-1]


class _PartitionCosts:
    """Layer, embedding and head cost of a forward plus a backward with everything in SRAM:
    what ``partition: cost`` balances."""

    def __init__(self, model: _Model, costing: Costing) -> None:
        self.model, self.costing = model, costing

    def __call__(self) -> tuple[float, float, float]:
        def time_of(blocks: Sequence[Block]) -> float:
            ops = [op for b in blocks for op in b.ops]
            return self.costing.cost(ops, "F").time_s + self.costing.cost(ops, "B").time_s

        m = self.model
        return time_of(m.layer), time_of([m.embed]), time_of([m.head])


def _model(experiment: ExperimentSpec, batch: Batch) -> _Model:
    """Every layer's blocks (mixture-of-experts layers with their EP degree and the busiest
    EP rank's routed slots, drawn from ``run.seed``; context-parallel ranks' s/cp tokens),
    the embedding, the head and the pipeline sends."""
    model, training, mapping = (
        experiment.workload.model, experiment.workload.training, experiment.mapping,
    )  # fmt: skip
    tp, mbs, ep, cp = mapping.tp, mapping.micro_batch_size, mapping.ep, mapping.cp
    etp = mapping.expert_tp  # None: tp
    sp = mapping.sequence_parallel and tp > 1
    check_ep(
        model, mapping.dp * cp, ep, mapping.expert_placement, tp=tp, etp=etp,
        sequence_parallel=sp,
    )  # fmt: skip
    if mapping.tp_comm_overlap and tp > 1 and not sp:
        raise MappingError(
            f"tp_comm_overlap with tp={tp} needs sequence_parallel: Transformer Engine's "
            "userbuffers overlap the all-gathers and reduce-scatters that sequence "
            "parallelism puts in place of the TP all-reduces"
        )
    gemm = experiment.hardware.tile.gemm
    if (
        mapping.tp_comm_overlap
        and gemm is not None
        and mapping.tp_comm_overlap_sms >= gemm.compute_units
    ):
        raise MappingError(
            f"tp_comm_overlap_sms={mapping.tp_comm_overlap_sms} leaves the overlapped GEMMs "
            f"none of the tile's {gemm.compute_units} compute units"
        )
    if mapping.moe_a2a_overlap:
        why = ""
        if ep < 2:
            why = "it overlaps the expert-parallel all-to-alls, so it needs ep > 1"
        elif mapping.pp > 1 and mapping.virtual_stages < 2:
            why = "with pp > 1 it needs interleaved stages (virtual_stages > 1)"
        elif mapping.recompute == "full":
            why = "full recompute is not allowed with it"
        elif mapping.schedule != "1f1b":
            why = "it merges the 1F1B schedule's forwards and backwards (schedule 1f1b)"
        if why:
            raise MappingError(
                f"mapping.moe_a2a_overlap: {why} (Megatron-Core's TransformerConfig checks for "
                "--overlap-moe-expert-parallel-comm)"
            )
    if mapping.distribute_saved_activations:
        why = ""
        if tp < 2:
            why = f"it distributes over the TP group, and tp={tp}"
        elif mapping.recompute != "full":
            why = f"it distributes full recompute's checkpoints, and recompute={mapping.recompute}"
        elif sp:
            why = "sequence parallelism already splits the checkpointed input over the TP group"
        if why:
            raise MappingError(
                f"mapping.distribute_saved_activations: {why} (Megatron-LM's checks for "
                "--distribute-checkpointed-activations, megatron/training/arguments.py and "
                "TransformerConfig)"
            )
    if mapping.recompute_modules and mapping.recompute != "selective":
        raise MappingError(
            f"mapping.recompute_modules {list(mapping.recompute_modules)} with recompute="
            f"{mapping.recompute}: the modules are what selective recompute re-runs (set "
            "mapping.recompute=selective)"
        )
    if training.fp8_param_gather and training.dtype != "fp8":
        raise MappingError(
            f"training.fp8_param_gather with dtype {training.dtype}: it keeps fp8 GEMM "
            "weights in fp8, so it needs dtype fp8"
        )
    if training.fp8_param_gather and mapping.zero >= 3:
        raise MappingError(
            "training.fp8_param_gather with zero=3: fp8 weights sharded and gathered per "
            "unit are not modelled (use zero <= 2)"
        )
    if mapping.zero_collectives == "tensor" and mapping.zero < 3:
        raise MappingError(
            f"mapping.zero_collectives=tensor with zero={mapping.zero}: it is how ZeRO-3 "
            "gathers weights and reduces gradients (set zero=3, or zero_collectives=unit)"
        )
    if (ep > 1 or (etp is not None and etp != tp)) and mapping.zero >= 3:
        raise MappingError(
            f"zero={mapping.zero} with ep={ep}, expert_tp={etp or tp}: ZeRO-3's weight "
            "gathers of routed experts over their expert-data-parallel group are not "
            "modelled (use zero <= 2)"
        )
    routings = layer_routings(
        model, training, mbs, ep, mapping.expert_placement,
        np.random.default_rng(experiment.run.seed), cp=cp, tp=tp, etp=etp,
    )  # fmt: skip
    built: dict[
        tuple[str, bool, float | None, int | None, int | None, bool, bool], tuple[Block, ...]
    ]
    built = {}
    layers = []
    num_layers = model.num_hidden_layers
    in_bf16 = dataclasses.replace(training, dtype="bf16")
    for i, routing in enumerate(routings):
        slots = None if routing is None else routing.max_received_slots
        # --first-last-layers-bf16: these layers' GEMMs in bf16 under fp8 training
        bf16 = i < training.bf16_layers_at_start or i >= num_layers - training.bf16_layers_at_end
        # layers differ by their kind (a hybrid's), MLP, routed slots, attention window and
        # precision
        key = (
            model.layer_kind(i),
            routing is not None,
            slots,
            model.attention_window(i),
            model.attention_chunk(i),
            model.is_linear_attention_layer(i),
            bf16,
        )
        if key not in built:
            built[key] = tuple(
                layer_blocks(
                    model, in_bf16 if bf16 else training, mbs, tp, sequence_parallel=sp,
                    layer=i, ep=ep,
                    expert_slots=slots, cp=cp, etp=etp,
                    sort_by_local_expert=mapping.moe_dispatcher == "alltoall",
                )
            )  # fmt: skip
        layers.append(built[key])
    every_block = [b for blocks in built.values() for b in blocks]
    missing = [m for m in mapping.recompute_modules if module_ops(every_block, m) == 0]
    if missing:
        raise MappingError(
            f"mapping.recompute_modules {missing}: no op of {model.name!r} belongs to it (mlp "
            "is a dense MLP, moe, moe_act and shared_experts an MoE layer's, mla_up_proj "
            "multi-latent attention's)"
        )
    local = dataclasses.replace(training, seq_len=training.seq_len // cp)  # s/cp tokens
    send, gather = pipeline_p2p_bytes(
        mbs * local.seq_len * model.hidden_size * batch.elem_bytes,  # one stage boundary
        tp,
        scatter_gather=mapping.p2p_scatter_gather,
        sequence_parallel=sp,
    )
    # The EP groups that route distinct tokens (of the etp EP groups an ETP group's ranks
    # sit in, which route the same tokens, one): tp·dp·cp/(etp·ep).
    groups = expert_data_parallel_size(tp, mapping.dp * cp, tp if etp is None else etp, ep)
    head = head_block(
        model, local, mbs, tp, count_tied_weights=mapping.pp > 1 or not model.tie_word_embeddings
    )
    embed = embedding_block(model, local, mbs, tp)
    if training.lora_rank:  # LoRA: every weight frozen, adapters beside the targets
        adapt = functools.partial(
            lora_blocks,
            rank=training.lora_rank,
            targets=training.lora_targets,
            dtype_bytes=batch.elem_bytes,
        )
        layers = [adapt(blocks) for blocks in layers]
        (embed,), (head,) = adapt((embed,)), adapt((head,))
    # the MTP block's MoE layers route as the model's (the first MoE layer's slots)
    routed = next((r for r in routings if r is not None), None)
    mtp = mtp_units(
        model, training, mbs, tp, head, sequence_parallel=sp, cp=cp, ep=ep,
        expert_slots=None if routed is None else routed.max_received_slots, etp=etp,
        sort_by_local_expert=mapping.moe_dispatcher == "alltoall",
    )  # fmt: skip
    if training.lora_rank:
        mtp = tuple((name, layer, adapt(blocks)) for name, layer, blocks in mtp)
    return _Model(
        tuple(layers),
        embed,
        head,
        send,
        gather,
        kv_chunk_bytes(model, training, mbs, tp, cp) if cp > 1 else 0.0,
        groups * sum(r.dropped_slots for r in routings if r is not None),
        mtp,
    )  # fmt: skip


def cp_recompute_mode(mapping: MappingSpec) -> str:
    """The recompute of a context-parallel attention core: ``mapping.recompute``, but none
    under selective recompute whose modules leave the core attention out."""
    modules = mapping.recompute_modules
    if mapping.recompute == "selective" and modules and "core_attn" not in modules:
        return "none"
    return mapping.recompute


def _units(m: _Model, ranges: Sequence[tuple[int, int]], c: int) -> tuple[Unit, ...]:
    """The units of virtual stage ``c``: embedding first, layers, LM head last."""
    first, last = ranges[c]
    units = [Unit("embed", -1, (m.embed,))] if c == 0 else []
    units.extend(Unit(f"L{i}", i, m.layers[i]) for i in range(first, last))
    if c == len(ranges) - 1:
        units.append(Unit("head", -1, (m.head,)))
        units.extend(Unit(name, layer, blocks) for name, layer, blocks in m.mtp)
    return tuple(units)


def _params(unit: Unit) -> float:
    return sum(op.params for b in unit.blocks for op in b.ops)


def _fp8_params(unit: Unit) -> float:
    return fp8_params([op for b in unit.blocks for op in b.ops])


def _fp8_linears(units: Sequence[Unit]) -> int:
    return sum(op.fp8 for u in units for b in u.blocks for op in b.ops)


def map_workload(experiment: ExperimentSpec, chip: Chip) -> MappingPlan:
    """Turn a training experiment into a :class:`MappingPlan` for ``chip``.

    Raises:
        MappingError: the mapping is valid input but cannot run on this chip.
        ConfigError: the hardware has no peak for the workload's dtype.
    """
    hw, workload, mapping = experiment.hardware, experiment.workload, experiment.mapping
    batch = training_batch(experiment)
    model = _model(experiment, batch)
    # partition: cost balances compute alone: everything in SRAM, accumulation in the GEMM
    everything_in_sram = Costing(
        hw.tile.for_attention_kernel(workload.training.attention_kernel),
        batch.peak_flop_per_s, batch.training_elem_bytes, OperandPlacement(),
        gemm_operand_bandwidth_bytes_per_s(hw), fp8_peak_flop_per_s=batch.fp8_peak_flop_per_s,
        fp8_dtype=batch.fp8_dtype,
    )  # fmt: skip
    # Place first: its tile-count check bounds pp before the layout builds pp schedules.
    # Context-parallel ranks are replicas too, cp-rank fastest (Megatron's tp-cp-dp order).
    stage_tiles = place(chip, mapping.placement, mapping.pp, mapping.tp, mapping.dp * mapping.cp)
    layout = stage_layout(
        mapping,
        workload.model.num_hidden_layers,
        batch.num_microbatches,
        _PartitionCosts(model, everything_in_sram),
    )
    programs: dict[int, StageProgram] = {}
    memory: list[tuple[int, MemoryBreakdown]] = []
    port_of: list[tuple[int, int]] = []
    # The memory of every stage first: most mappings a search tries do not fit, and the
    # check needs no program (lowering raises no MappingError, so a mapping fails with the
    # error it always did).
    stage_memories = [_stage_memory(experiment, batch, model, layout, s) for s in range(mapping.pp)]
    for s, (stage_memory, _) in enumerate(stage_memories):
        for replica in stage_tiles:
            for tile in replica[s]:
                memory.append((tile, stage_memory.breakdown))
                port_of.append((tile, chip.home_dram_port(tile)))
    if experiment.run.memory_check:
        usable = len(chip.usable_tiles)
        remedies = training_remedies(mapping, usable)
        check_fit(
            chip, memory, port_of, hw.tile.sram_capacity_bytes, inference=False, remedies=remedies
        )
    for s, (stage_memory, per_microbatch) in enumerate(stage_memories):
        programs.update(_stage(experiment, batch, model, layout, s, stage_memory, per_microbatch))
    comms, num_simulated_replicas, num_simulated_ranks = communicators(
        chip,
        stage_tiles,
        pipeline_wraps=mapping.virtual_stages > 1,
        symmetric_replicas=experiment.run.symmetric_replicas,
        ep=mapping.ep,
        cp=mapping.cp,
        etp=mapping.expert_tp,
        dedup=dispatch_dedup(mapping, workload.model, chip.spec.kind),
    )
    return MappingPlan(
        mapping=mapping,
        num_microbatches=batch.num_microbatches,
        stage_tiles=stage_tiles,
        programs=tuple(programs[c] for c in range(len(layout.layer_ranges))),
        dram_port_of_tile=tuple(sorted(port_of)),
        memory=tuple(sorted(memory, key=lambda tm: tm[0])),
        placement=mapping.placement,
        model_flop_per_iteration=model_flop_per_iteration(workload.model, workload.training),
        peak_flop_per_s=batch.peak_flop_per_s,
        samples_per_iteration=batch.samples_per_iteration,
        tokens_per_iteration=batch.tokens_per_iteration,
        communicators=comms,
        num_simulated_replicas=num_simulated_replicas,
        num_simulated_ranks=num_simulated_ranks,
        ep_degree=mapping.ep,
        cp_degree=mapping.cp,
        etp_degree=mapping.expert_tp,
        dropped_token_slots=model.dropped_slots_per_microbatch * batch.num_microbatches,
        routed_slots_per_token=workload.model.num_experts_per_tok * workload.model.num_moe_layers,
    )


def _experts_on_dp(mapping: MappingSpec) -> bool:
    """The routed experts' EDP group is the DP group itself (no expert parallelism, expert
    TP = TP), so their gradients and gathers share the dense parameters' collectives."""
    return mapping.ep == 1 and mapping.expert_tp in (None, mapping.tp)


def _cp_selective_recompute(
    costing: Costing, unit: Unit, block: Block, mapping: MappingSpec, model: Any, cp: int
) -> tuple[Step, ...]:
    """What the backward of a CP rank's attention block re-runs under selective recompute or
    none: the core on its KV ring (:func:`cp_recompute`), and the selective modules outside
    the core (its norm, MLA's up-projections)."""
    steps = cp_recompute(
        costing, unit, block, cp_recompute_mode(mapping), model.kv_chunk_bytes, cp, ()
    )
    others = [
        op for op in recomputed_ops(block, mapping.recompute_modules) if not op.recompute_selective
    ] if mapping.recompute == "selective" else []  # fmt: skip
    if unit.is_layer and others:
        steps += (costing.step(others, "F", unit, block.name, "recompute"),)
    return steps


def _edp(mapping: MappingSpec) -> int:
    """The expert-data-parallel size ``tp·dp·cp/(etp·ep)`` (:mod:`palmsim.mapping.folding`)."""
    etp = mapping.tp if mapping.expert_tp is None else mapping.expert_tp
    return expert_data_parallel_size(mapping.tp, mapping.dp * mapping.cp, etp, mapping.ep)


# The blocks whose TP collectives mapping.tp_comm_overlap overlaps with their GEMMs: Transformer
# Engine's linears (the MoE blocks' router and token dispatch are not userbuffers GEMMs)
_DENSE_BLOCKS = frozenset({"embed", "attn", "mlp", "head"})


def _reduce_group(block: str, tp: int, etp: int) -> dict[str, Any]:
    """The group of a block's tensor-parallel reduction: the routed experts' over their ETP
    group when it differs from the TP group (MoE parallel folding), else the TP group."""
    if block == "moe_experts" and etp != tp:
        return {"tp": etp, "group": GroupKind.ETP}
    return {"tp": tp}


def _state_bytes(training: TrainingSpec, dtype: str) -> int:
    """Optimizer state per parameter of ``training``'s optimizer and state dtypes
    (:func:`palmsim.mapping.memory.optimizer_state_bytes_per_param`)."""
    return optimizer_state_bytes_per_param(
        training.optimizer, dtype, training.optimizer_state_dtype, training.master_weights_dtype
    )


def _grad_bytes(training: TrainingSpec, weight_bytes: int) -> int:
    """Bytes of one gradient as the data-parallel ranks hold and reduce it
    (``training.grad_reduce_dtype``; 'weights': ``weight_bytes``, the weights' own)."""
    dtype = training.grad_reduce_dtype
    return weight_bytes if dtype == "weights" else int(DTYPE_BYTES[dtype])


def _costing(experiment: ExperimentSpec, batch: Batch, where: OperandPlacement) -> Costing:
    hw, mapping = experiment.hardware, experiment.mapping
    return Costing(
        # the tile as this run's attention kernel sees it (flash2: its own rate)
        hw.tile.for_attention_kernel(experiment.workload.training.attention_kernel),
        batch.peak_flop_per_s,
        batch.training_elem_bytes,
        where,
        gemm_operand_bandwidth_bytes_per_s(hw),
        fused_accumulation=mapping.grad_accumulation == "fused",
        fp8_peak_flop_per_s=batch.fp8_peak_flop_per_s,
        fp8_dtype=batch.fp8_dtype,
    )


def _stage_memory(
    experiment: ExperimentSpec, batch: Batch, model: _Model, layout: StageLayout, s: int
) -> tuple[TileMemory, list[float]]:
    """The memory pass of physical stage ``s`` (all its model chunks): the tile's memory and
    the activation bytes each chunk keeps per micro-batch."""
    hw, mapping, workload = experiment.hardware, experiment.mapping, experiment.workload
    pp, tp = mapping.pp, mapping.tp
    chunk_ids = [j * pp + s for j in range(mapping.virtual_stages)]
    units = [u for c in chunk_ids for u in _units(model, layout.layer_ranges, c)]
    sp = mapping.sequence_parallel and tp > 1
    # The layer's input under full recompute; sequence parallelism keeps only this tile's s/t,
    # as does mapping.distribute_saved_activations (1/t of it), context parallelism its s/cp.
    input_bytes = layer_input_bytes(workload.model, workload.training, mapping.micro_batch_size)
    input_bytes /= (tp if sp or mapping.distribute_saved_activations else 1) * mapping.cp
    modules = mapping.recompute_modules
    sizes = {
        id(blocks): (
            (kept_bytes(blocks, modules), 0.0)
            if mapping.recompute == "selective" and modules
            else activation_sizes(
                mapping.recompute, [op for b in blocks for op in b.ops], input_bytes
            )
        )
        for blocks in (*model.layers, *(b for _, layer, b in model.mtp if layer >= 0))
    }
    working = 0.0
    per_microbatch = []
    for c in chunk_ids:
        first, last = layout.layer_ranges[c]
        fixed = sum(op.saved_bytes for op in model.embed.ops) if c == 0 else 0.0
        chunk_layers = [model.layers[i] for i in range(first, last)]
        if c == len(layout.layer_ranges) - 1:
            fixed += sum(op.saved_bytes for op in model.head.ops)
            # multi-token prediction: its layers as layers, its entry and head as the head
            chunk_layers += [b for _, layer, b in model.mtp if layer >= 0]
            fixed += sum(
                op.saved_bytes for _, layer, b in model.mtp if layer < 0 for x in b for op in x.ops
            )
        held = sum(sizes[id(blocks)][0] for blocks in chunk_layers)
        working = max([working, *(sizes[id(blocks)][1] for blocks in chunk_layers)])
        per_microbatch.append(held + fixed)
    steps, chunks = layout.orders[s]
    dense, expert = split_params([b for u in units for b in u.blocks])
    replicas = mapping.dp * mapping.cp
    state = stage_state_bytes(
        dense,
        expert,
        dtype_bytes=batch.training_elem_bytes,
        grad_bytes=_grad_bytes(workload.training, batch.training_elem_bytes),
        optimizer_bytes_per_param=_state_bytes(workload.training, batch.dtype),
        dp=replicas,
        ep=mapping.ep,
        zero=mapping.zero if replicas > 1 else 0,
        tp=tp,
        etp=mapping.expert_tp,
        frozen=frozen_params([b for u in units for b in u.blocks]),
    )
    weights, gradients, optimizer = state.weights, state.gradients, state.optimizer
    recipe = workload.training.fp8_recipe
    if mapping.zero >= 3 and replicas > 1 and mapping.zero_collectives == "tensor":
        # gathered one op's parameters at a time, each released after its op (DeepSpeed's
        # fetch_sub_module and release_sub_module per module): the largest op's
        weights += (
            max((op.params for u in units for b in u.blocks for op in b.ops), default=0.0)
            * batch.training_elem_bytes
        )
    elif mapping.zero >= 3 and replicas > 1:
        # a unit's gathered weights and the next one's, prefetched (lower.prefetch_gathers)
        chunks_units = [_units(model, layout.layer_ranges, c) for c in chunk_ids]
        weights += _gathered_pair(chunks_units, _params) * batch.training_elem_bytes
        # fp8 training: TE's fp8 copies of the gathered units' weights
        weights += fp8_weight_cache_bytes(_gathered_pair(chunks_units, _fp8_params), recipe)
    else:
        # fp8 training: TE's cached fp8 weights and their transposes (palmsim.workload.fp8);
        # with fp8_param_gather they are the weights, and no 16-bit copy is kept
        fp8_weights = sum(_fp8_params(u) for u in units)
        copies = fp8_weights
        if not workload.training.fp8_transpose_cache:
            # Megatron-Core's disable_parameter_transpose_cache passes TE is_first_microbatch
            # None (transformer_engine.py TELinear), so TE casts with no cache name and frees
            # the copies after the GEMMs: only the unit in hand holds them; fp8 parameters
            # keep their row-wise data, the weights themselves
            largest = max((_fp8_params(u) for u in units), default=0.0)
            fp8_params = workload.training.fp8_param_gather
            copies = (fp8_weights + largest) / 2 if fp8_params else largest
        weights += fp8_weight_cache_bytes(copies, recipe)
        if workload.training.fp8_param_gather:
            weights -= fp8_weights * batch.training_elem_bytes
    activations = peak_held_bytes(steps, chunks, per_microbatch) + working
    tile_memory = training_tile_memory(
        weights, gradients, optimizer, activations, hw.tile.sram_capacity_bytes
    )
    return tile_memory, per_microbatch


def _fp8_gathered_bytes_per_weight(training: TrainingSpec) -> float | None:
    """Bytes per fp8 weight the ZeRO-1/2 all-gather moves with ``training.fp8_param_gather``,
    None without it.

    Megatron-Core --fp8-param-gather: the distributed optimizer casts its shard of the fp8
    weights and the replicas all-gather their fp8 data, 1 B per weight
    (megatron/core/fp8_utils.py quantize_param_shard; the param all-gather of
    distributed/param_and_grad_buffer.py gathers the Float8Tensors' data); each then
    transposes the gathered weights for dgrad (post_all_gather_processing): read 1 B, write
    the column-wise copy. MXFP8 weights are gathered in 16 bits through the gradient buffer
    (reuse_grad_buf_for_mxfp8_param_ag) and re-cast as without it. NVFP4 weights
    (Megatron-Bridge's --fp4-param-gather) move their half-byte values and 16x16-block
    scales, and their 2-D scaling makes the transpose the column-wise copy as well.
    """
    if not training.fp8_param_gather or training.fp8_recipe == "mxfp8":
        return None
    scaling = FP8_SCALING[training.fp8_recipe]
    return scaling.element_bytes + scaling.weight_scale_bytes


def _gathered_bytes(
    blocks: Sequence[Block], batch: Batch, experiment: ExperimentSpec
) -> tuple[float, float]:
    """ZeRO-1/2: the bytes of ``blocks``' updated weights a replica all-gathers, over its DP
    group and over its EDP group (the routed experts'; 0 when that group is the DP group,
    whose one all-gather then moves them too); fp8 weights at
    :func:`_fp8_gathered_bytes_per_weight` with ``training.fp8_param_gather``."""
    dense, expert = split_params(blocks)
    fp8_gather = _fp8_gathered_bytes_per_weight(experiment.workload.training)
    if fp8_gather is not None:
        fp8_dense, fp8_expert = split_params(
            [dataclasses.replace(b, ops=tuple(op for op in b.ops if op.fp8)) for b in blocks]
        )
        saved = batch.elem_bytes - fp8_gather
        dense_bytes = dense * batch.elem_bytes - fp8_dense * saved
        expert_bytes = expert * batch.elem_bytes - fp8_expert * saved
    else:
        dense_bytes, expert_bytes = dense * batch.elem_bytes, expert * batch.elem_bytes
    if _experts_on_dp(experiment.mapping):
        return dense_bytes + expert_bytes, 0.0
    return dense_bytes, expert_bytes


def _param_gather_buckets(
    units: Sequence[Unit], c: int, batch: Batch, experiment: ExperimentSpec
) -> dict[str, tuple[Step, ...]]:
    """The overlapped ZeRO-1/2 weight all-gathers of virtual stage ``c``'s units
    (``mapping.overlap_param_gather``), by unit name: the first stage's first chunk gathers
    unit by unit; every other chunk gathers its weights in one bucket, ahead of its first
    unit with parameters, as Megatron-LM turns bucketing off on the pipeline stages after the
    first and on the chunks after the first ("data-parallel communication on these stages is
    not on the critical path": ``DistributedDataParallel.__init__``,
    megatron/core/distributed/distributed_data_parallel.py; ``disable_bucketing`` for model
    chunks > 0 in ``get_model``, megatron/training/training.py)."""
    if c == 0:
        return {
            u.name: param_gathers(u, *_gathered_bytes(u.blocks, batch, experiment)) for u in units
        }
    first = next((u for u in units if _params(u) > 0), None)
    if first is None:
        return {}
    blocks = [b for u in units for b in u.blocks]
    return {first.name: param_gathers(first, *_gathered_bytes(blocks, batch, experiment))}


def _gathered_pair(chunks: Sequence[Sequence[Unit]], size: Callable[[Unit], float]) -> float:
    """The most of ``size`` that ZeRO-3 holds gathered at once: two consecutive gathered
    units of a chunk, the one running and the next, prefetched (:func:`lower.prefetch_gathers`;
    ``zero_gather`` skips units without parameters)."""
    most = 0.0
    for units in chunks:
        gathered = [u for u in units if _params(u) > 0]
        for i in range(len(gathered)):
            most = max(most, sum(size(u) for u in gathered[i : i + 2]))
    return most


def _stage(
    experiment: ExperimentSpec,
    batch: Batch,
    model: _Model,
    layout: StageLayout,
    s: int,
    tile_memory: TileMemory,
    per_microbatch: list[float],
) -> dict[int, StageProgram]:
    """The programs of every model chunk of physical stage ``s``, whose memory pass
    (:func:`_stage_memory`) gave ``tile_memory`` and ``per_microbatch``."""
    mapping, workload = experiment.mapping, experiment.workload
    pp = mapping.pp
    dp = mapping.dp * mapping.cp  # the replicas holding the same weights
    zero = mapping.zero if dp > 1 else 0
    costing = _costing(experiment, batch, tile_memory.where)
    chunk_ids = [j * pp + s for j in range(mapping.virtual_stages)]
    dense, expert = split_params(
        [b for c in chunk_ids for u in _units(model, layout.layer_ranges, c) for b in u.blocks]
    )
    params = dense + expert
    state = _state_bytes(workload.training, batch.dtype)
    edp = _edp(mapping)
    shard = dense / dp + expert / edp if zero >= 1 else params
    # fp8 training: every replica casts all its fp8 weights once per iteration
    all_units = [u for c in chunk_ids for u in _units(model, layout.layer_ranges, c)]
    fp8_dense, fp8_expert = split_params(
        [
            dataclasses.replace(b, ops=tuple(op for op in b.ops if op.fp8))
            for u in all_units
            for b in u.blocks
        ]
    )
    # (training.fp8_transpose_cache false: every micro-batch casts them again; the casts are
    # costed with the optimizer step, their sum in the iteration)
    casts = 1 if workload.training.fp8_transpose_cache else batch.num_microbatches
    fp8_ops = [op for u in all_units for b in u.blocks for op in b.ops if op.fp8]
    fp8_tensors = sum(op.param_tensors for op in fp8_ops)
    fp8_weights: tuple[float, int, float, float] = (
        (fp8_dense + fp8_expert) * casts,
        fp8_tensors * casts,
        batch.training_elem_bytes,
        fp8_weight_copy_bytes(workload.training.fp8_recipe),
    )
    blocks = [b for u in all_units for b in u.blocks]
    gathered = _gathered_bytes(blocks, batch, experiment)
    fp8_gather = _fp8_gathered_bytes_per_weight(workload.training)
    if fp8_gather is not None:
        # the replicas gather the fp8 weights and transpose them for dgrad: read the gathered
        # bytes, write the column-wise copy (_fp8_gathered_bytes_per_weight)
        fp8_weights = (*fp8_weights[:2], fp8_gather, fp8_weights[3] / 2)
    orthogonalize: tuple[Op, ...] = ()
    if workload.training.optimizer == "muon":
        if zero >= 2:
            raise MappingError(
                f"training.optimizer=muon with mapping.zero={zero}: Muon orthogonalises whole "
                "matrices, and ZeRO-2/3 shard gradients element by element; use zero 1 "
                "(Megatron-Core's layer-wise distributed optimizer) or 0"
            )
        # every replica orthogonalises its matrices; with ZeRO-1, Megatron-Core's layer-wise
        # distributed optimizer (megatron/core/optimizer/layer_wise_optimizer.py) gives each
        # its share of whole matrices, the dense over the DP group, the experts over the EDP
        layers = [b for u in all_units if u.is_layer for b in u.blocks]
        share = {True: 1 / edp, False: 1 / dp} if zero >= 1 else {True: 1.0, False: 1.0}
        orthogonalize = newton_schulz_ops(
            (rows, cols, count * share[op.name in EXPERT_OPS])
            for b in layers
            for op in b.ops
            for rows, cols, count in muon_matrices((op,))
        )
    optimizer = optimizer_step(
        costing, shard, batch.training_elem_bytes, state, fp8_weights, orthogonalize
    )
    send_blocks, grad_reduce = engine_policy(mapping, zero=zero)
    steps, chunks = layout.orders[s]
    overlap_gather = zero in (1, 2) and mapping.overlap_param_gather
    gather_after_step = zero in (1, 2) and not overlap_gather
    passes = {}
    for c in chunk_ids:
        units = _units(model, layout.layer_ranges, c)
        buckets = _param_gather_buckets(units, c, batch, experiment) if overlap_gather else {}
        passes[c] = _lower_chunk(experiment, costing, model, units, c, layout, buckets)
    forwards, gathers_at_start = chain_param_gathers([passes[c][0] for c in chunk_ids])
    programs = {}
    for j, c in enumerate(chunk_ids):
        _, recompute, backward = passes[c]
        forward = forwards[j]
        programs[c] = StageProgram(
            stage=c,
            layers=layout.layer_ranges[c],
            forward=forward,
            backward=backward,
            recompute=recompute,
            activation_bytes_per_microbatch=per_microbatch[j],
            send_bytes=model.send_bytes,
            optimizer=optimizer,
            steps=steps,
            # ZeRO-1/2: every replica gets the updated weights of the others' shards: the
            # dense ones over the DP group, the experts over the EDP group, after the
            # optimizer step, or unit by unit in the first forward (overlap_param_gather).
            param_allgather_bytes=gathered[0] if gather_after_step else 0.0,
            expert_param_allgather_bytes=gathered[1] if gather_after_step else 0.0,
            param_gathers_at_start=gathers_at_start,
            step_chunks=chunks,
            send_blocks=send_blocks,
            grad_reduce=grad_reduce,
            merge_forward_backward=mapping.moe_a2a_overlap,
        )
    return programs


def _lower_chunk(
    experiment: ExperimentSpec,
    costing: Costing,
    model: _Model,
    units: Sequence[Unit],
    c: int,
    layout: StageLayout,
    param_gathers: Mapping[str, tuple[Step, ...]],
) -> tuple[tuple[Step, ...], tuple[Step, ...], tuple[Step, ...]]:
    """The lowering passes over one virtual stage: its forward, recompute and backward;
    ``param_gathers`` holds the ZeRO-1/2 weight all-gathers ahead of a unit's first forward,
    by unit name (mapping.overlap_param_gather)."""
    mapping = experiment.mapping
    tp, elem, ep, cp = mapping.tp, costing.grad_bytes_per_param, mapping.ep, mapping.cp
    grad_elem = _grad_bytes(experiment.workload.training, elem)
    etp = tp if mapping.expert_tp is None else mapping.expert_tp
    dp = mapping.dp * cp  # gradients are reduced over the DP ranks with context parallelism
    zero = mapping.zero if dp > 1 else 0
    sp = mapping.sequence_parallel and tp > 1
    last = len(layout.layer_ranges) - 1
    forward: list[Step] = list(receive_gather(model.gather_bytes if c > 0 else 0, tp=tp))
    backward: list[Step] = list(receive_gather(model.gather_bytes if c < last else 0, tp=tp))
    recompute: list[Step] = []
    # mapping.tp_comm_overlap: the dense blocks' TP collectives overlap their GEMMs; an
    # all-gather waits (in `pending`) for the GEMM of the next block that consumes it
    # (each pass its own: the forward, the full recompute's forward, the backward)
    ub = mapping.tp_comm_overlap and sp
    pending: dict[str, CollectiveStep | None] = {}  # by pass: "F", "R", "B"
    passes = {"F": forward, "R": recompute, "B": backward}

    def overlapped(b: Block) -> bool:
        return ub and b.name in _DENSE_BLOCKS

    def ring(step: ComputeStep, phase: str) -> tuple[Step, ...]:
        return ring_attention_steps(step, model.kv_chunk_bytes, cp, phase=phase)

    def overlap(key: str, unit: Unit, b: Block, coll: tuple[Step, ...]) -> None:
        phase = "B" if key == "B" else "F"
        steps, pending[key] = tp_comm_overlap_pass(
            costing, unit, b, phase, coll, pending.get(key), tp=tp,
            sms=mapping.tp_comm_overlap_sms,
            ring=ring if cp > 1 and b.name == "attn" else None,
        )  # fmt: skip
        passes[key].extend(steps)

    def flush(key: str) -> None:
        gather = pending.pop(key, None)
        if gather is not None:
            passes[key].append(gather)

    redo_all = mapping.recompute == "full"

    # mapping.zero_collectives 'tensor': one collective per parameter tensor, none overlapped
    per_tensor = zero >= 3 and mapping.zero_collectives == "tensor"

    def tensors(unit: Unit) -> int:
        return sum(op.param_tensors for b in unit.blocks for op in b.ops) if per_tensor else 0

    # mapping.distribute_saved_activations: each TP rank keeps 1/t of a layer's checkpointed
    # input and all-gathers it before the layer's recompute (Megatron-LM's CheckpointFunction:
    # split_tensor_into_1d_equal_chunks in its forward, gather_split_1d_tensor in its backward,
    # megatron/core/tensor_parallel/random.py)
    checkpoint_bytes = (
        layer_input_bytes(experiment.workload.model, experiment.workload.training,
                          mapping.micro_batch_size) / cp
        if mapping.distribute_saved_activations else 0.0
    )  # fmt: skip

    for unit in units:
        gather = zero_gather(unit, _params(unit), elem, zero=zero, tensors=tensors(unit))
        forward.extend(gather)
        forward.extend(param_gathers.get(unit.name, ()))
        if unit.is_layer and mapping.recompute == "full":
            recompute.extend(gather)
            recompute.extend(
                tp_collective(
                    CollectiveKind.ALLGATHER, checkpoint_bytes, unit, unit.blocks[0].name,
                    tp=tp, sequence_parallel=False, suffix="checkpoint.ag",
                )
            )  # fmt: skip
        for b in unit.blocks:
            ar = tp_collective(
                CollectiveKind.ALLREDUCE, b.allreduce_fwd_bytes, unit, b.name,
                **_reduce_group(b.name, tp, etp), sequence_parallel=sp,
            )  # fmt: skip
            a2a = ep_alltoall(b.alltoall_fwd_bytes, unit, b.name, ep=ep)
            if overlapped(b):
                overlap("F", unit, b, ar)
                if unit.is_layer and redo_all:
                    overlap("R", unit, b, ar)
                elif cp > 1 and b.name == "attn":
                    recompute.extend(_cp_selective_recompute(costing, unit, b, mapping, model, cp))
                else:
                    recompute.extend(recompute_block(costing, unit, b, mapping, ar))
                continue
            flush("F")
            flush("R")
            if cp > 1 and b.name == "attn":
                forward.extend(cp_attention(costing, unit, b, "F", model.kv_chunk_bytes, cp))
                forward.extend(ar)
                if mapping.recompute == "full":
                    recompute.extend(
                        cp_recompute(costing, unit, b, "full", model.kv_chunk_bytes, cp, ar)
                    )
                else:
                    recompute.extend(_cp_selective_recompute(costing, unit, b, mapping, model, cp))
                continue
            forward.append(costing.step(b.ops, "F", unit, b.name))
            forward.extend(ar)
            forward.extend(a2a)
            recompute.extend(recompute_block(costing, unit, b, mapping, ar))
            # a recomputed MoE layer re-runs its dispatch and combine all-to-alls
            moe_redo = mapping.recompute == "selective" and "moe" in mapping.recompute_modules
            if unit.is_layer and (mapping.recompute == "full" or moe_redo):
                recompute.extend(a2a)
    flush("F")
    flush("R")
    for unit in reversed(units):
        backward.extend(zero_gather(unit, _params(unit), elem, zero=zero, tensors=tensors(unit)))
        for b in reversed(unit.blocks):
            reduce = tp_collective(
                CollectiveKind.ALLREDUCE, b.allreduce_bwd_bytes, unit, b.name,
                **_reduce_group(b.name, tp, etp), sequence_parallel=sp,
            )  # fmt: skip
            if overlapped(b):
                overlap("B", unit, b, reduce)
                backward.extend(grad_accumulation(costing, unit, b, mapping.grad_accumulation))
                continue
            flush("B")
            if cp > 1 and b.name == "attn":
                backward.extend(cp_attention(costing, unit, b, "B", model.kv_chunk_bytes, cp))
                backward.extend(reduce)
            else:
                backward.extend(
                    tp_overlap_backward(costing, unit, b, reduce, enabled=mapping.tp_overlap)
                )
            backward.extend(ep_alltoall(b.alltoall_bwd_bytes, unit, b.name, ep=ep))
            backward.extend(grad_accumulation(costing, unit, b, mapping.grad_accumulation))
        dense, expert = split_params(unit.blocks)
        # Muon's layer-wise distributed optimizer all-reduces the gradients: each replica
        # needs whole matrices, not an element-wise shard (palmsim.workload.muon)
        muon = experiment.workload.training.optimizer == "muon"
        reduce_zero = 0 if muon and zero == 1 else zero
        if _experts_on_dp(mapping):  # their EDP group is the DP group: one bucket
            dense, expert = dense + expert, 0.0
        if per_tensor:
            backward.extend(tensor_reduce_scatters(unit, dense, grad_elem, tensors(unit)))
        else:
            backward.extend(grad_bucket(unit, dense, grad_elem, dp=dp, zero=reduce_zero))
        backward.extend(
            expert_grad_bucket(unit, expert, grad_elem, edp=_edp(mapping), zero=reduce_zero)
        )
    flush("B")
    training = experiment.workload.training
    if training.dtype == "fp8" and FP8_SCALING[training.fp8_recipe].amax_history:
        # delayed scaling: the amax update when the chunk's fp8 autocast region exits
        # (Megatron-Core wraps a chunk's TransformerBlock in one region) and after its
        # backward
        linears = _fp8_linears(units)
        forward.extend(fp8_amax_update(costing, units[-1], linears, "F"))
        backward.extend(fp8_amax_update(costing, units[0], linears, "B"))
    if per_tensor:  # each gather runs after a device synchronize: nothing prefetched
        return tuple(forward), tuple(recompute), tuple(backward)
    return prefetch_gathers(forward), prefetch_gathers(recompute), prefetch_gathers(backward)
