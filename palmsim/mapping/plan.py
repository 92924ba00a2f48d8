"""MappingPlan: the frozen result of mapping a workload onto a chip.

The plan is everything the engine needs and nothing more: which tiles run which stage, and for
each stage the sequence of compute and communication steps of a forward, a recompute and a
backward pass of one micro-batch, with times from the pure cost models already evaluated. Each
stage program also carries compiled engine policy (whether its sends block, when its gradients
are reduced). The engine executes plans; it never looks at the workload, the mapping options or
the cost models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from palmsim.config.specs import InferenceSpec, MappingSpec
from palmsim.hardware.collectives import collective_steps
from palmsim.mapping.folding import expert_group

__all__ = [
    "CollectiveFlow",
    "CollectiveKind",
    "CollectiveStep",
    "Communicator",
    "ComputeStep",
    "GradBucketReady",
    "GradReduce",
    "GroupKind",
    "InferencePlan",
    "InferenceStage",
    "MappingPlan",
    "MemoryBreakdown",
    "Phase",
    "StageProgram",
    "Step",
]


class Phase(StrEnum):
    """The pass a step or record belongs to (training passes, the optimizer, serving)."""

    FORWARD = "forward"
    BACKWARD = "backward"
    RECOMPUTE = "recompute"
    OPTIMIZER = "optimizer"
    PREFILL = "prefill"
    DECODE = "decode"


class GroupKind(StrEnum):
    """The group a collective runs over: the stage replica's TP ranks, or the DP group (the
    same stage and rank in every replica), or one of the groups of consecutive replicas that
    expert and context parallelism cut the DP group into (:meth:`MappingPlan.groups`); the
    expert groups fold over a stage's TP and DP ranks (:mod:`palmsim.mapping.folding`)."""

    TP = "tp"
    DP = "dp"
    EP = "ep"  # the token dispatch and combine all-to-alls (ep ranks of a stage)
    EDP = "edp"  # the ranks holding the same experts' shard: their gradients
    ETP = "etp"  # the ranks splitting each local expert's GEMMs (expert tensor parallelism)
    CP = "cp"  # cp consecutive replicas: one sample's sequence, the KV ring
    # 2-D tensor parallelism (mapping.tp_2d = [a, b]): TP rank k sits at (k mod a, k div a)
    TPA = "tpa"  # the a ranks k div a alike: one hidden slice, every head shard
    TPB = "tpb"  # the b ranks k mod a alike: one head shard, every hidden slice


class CollectiveKind(StrEnum):
    """A collective (NCCL names): the ring ones, and the pairwise all-to-all."""

    ALLREDUCE = "allreduce"
    REDUCESCATTER = "reducescatter"
    ALLGATHER = "allgather"
    ALLTOALL = "alltoall"


class GradReduce(StrEnum):
    """When a stage's data-parallel gradient buckets are reduced (compiled engine policy)."""

    OVERLAP_BACKWARD = "overlap_backward"  # each bucket as soon as the last backward fills it
    AFTER_BACKWARD = "after_backward"  # every bucket once the whole backward pass is done
    EVERY_BACKWARD = "every_backward"  # every backward reduces its buckets (ZeRO-2/3)


@dataclass(frozen=True, slots=True)
class ComputeStep:
    """A run of ops on each tile of a stage between two communications.

    ``compute_time_s`` is the tile-side time from the roofline cost model (FLOP at achievable
    peak versus SRAM bytes at SRAM bandwidth), summed over the ops. The bytes of operands that
    live in DRAM move as contended DRAM flows in parallel; the step ends when both are done.

    Two terms of ``compute_time_s`` are kept for the report's compute/memory/latency verdict
    (:func:`palmsim.report.metrics.step_bound`): ``launch_latency_s``, the fixed per-kernel
    times it includes (GPU configs' ``tile.gemm`` and ``tile.memory_ops``), and
    ``flop_time_s``, its ops' FLOP at their achievable rate (the compute roof of each op's
    roofline).
    """

    label: str
    compute_time_s: float
    flop: float
    sram_bytes: float
    dram_read_bytes: float
    dram_write_bytes: float
    # The step runs for the iteration's micro-batches from this index on: 1 for PyTorch's
    # AccumulateGrad, which keeps the first backward's gradients and adds the later ones.
    from_microbatch: int = 0
    launch_latency_s: float = 0.0
    flop_time_s: float = 0.0
    # The part of launch_latency_s the engine runs before the step's DRAM flows start (a tiled
    # chip's op latency); the rest of the step's time overlaps them.
    serial_latency_s: float = 0.0
    # Typed identity (labels are for people; nothing parses them): the transformer layer
    # (-1: none), the block (``attn``, ``mlp``, ``embed``, ``head``, ``kv``, ...; "" for
    # none) and the op key, the label without layer and decode-step indices (``L.attn``).
    layer: int = -1
    block: str = ""
    op: str = ""
    # A DRAM prefetcher's read ahead (inference.weight_prefetch): ``lead_read_bytes`` are the
    # next prefetched step's weights, which start to flow when this step starts; that step
    # (the tile's next with ``read_ahead_bytes``, the same bytes, not in its
    # ``dram_read_bytes``) lasts until they have arrived.
    lead_read_bytes: float = 0.0
    read_ahead_bytes: float = 0.0
    # A pass the host dispatches op by op (inference.trace): the host's time, from the pass's
    # start, to have issued this step's ops and every op before it in the pass; the step
    # does not end before then (0: no such bound).
    host_issued_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CollectiveStep:
    """A blocking collective among the tiles of the stage's tensor- or data-parallel group.

    ``kind`` is ``allreduce``, ``reducescatter`` or ``allgather``; ``size_bytes`` is the
    per-tile buffer size S as in the NCCL convention. ``group`` is ``tp`` (the stage
    replica's TP ranks) or ``dp`` (the same stage and rank in every replica, e.g. ZeRO-3's
    parameter all-gathers).
    """

    label: str
    kind: CollectiveKind
    size_bytes: float
    group: GroupKind = GroupKind.TP
    # Runs on the tile while the collective is in flight (the weight-gradient GEMM under
    # mapping.tp_overlap); the tile then waits for the collective to finish.
    overlap: ComputeStep | None = None
    layer: int = -1  # typed identity, as in ComputeStep
    block: str = ""
    op: str = ""
    # Prefetch (ZeRO-3's weight all-gathers, :func:`palmsim.mapping.lower.prefetch_gathers`):
    # ``prefetch`` is the collective the tile starts as soon as this one has completed, and
    # runs on without waiting for; the step that ``prefetched`` marks was so started by an
    # earlier step of the pass, and the tile only waits for it.
    prefetch: CollectiveStep | None = None
    prefetched: bool = False
    # Runs in the first micro-batch's pass only (mapping.overlap_param_gather: the updated
    # weights are gathered once per iteration, before the first forward uses them).
    first_microbatch_only: bool = False


@dataclass(frozen=True, slots=True)
class GradBucketReady:
    """Marks the point of a backward pass after which a gradient bucket is complete.

    On the stage's last backward of the iteration the engine starts the data-parallel
    all-reduce of this bucket (``size_bytes`` per tile) here, so it overlaps the rest of the
    backward pass (PyTorch DDP bucketing, Li et al. VLDB 2020). Elsewhere it is a no-op,
    unless the program's ``grad_reduce`` says every backward reduces it (ZeRO-2/3), or after
    the whole backward pass.
    """

    label: str
    size_bytes: float
    # ``reducescatter`` under ZeRO (the shard's owner gets the sum)
    kind: CollectiveKind = CollectiveKind.ALLREDUCE
    layer: int = -1  # typed identity, as in ComputeStep
    block: str = ""
    # DP, or EDP for routed experts' gradients (reduced over the replicas holding them)
    group: GroupKind = GroupKind.DP


Step = ComputeStep | CollectiveStep | GradBucketReady


@dataclass(frozen=True, slots=True)
class CollectiveFlow:
    """One flow of each ring collective of a communicator: ``src`` sends ``share`` of a ring
    edge's bytes to ``dst`` over ``channels``, paying ``latency_s`` once per ring step; an
    all-gather's bytes on it are the pieces of ``sources`` members, and it crosses a closed
    ``ring`` of chips (:class:`~palmsim.hardware.collectives.RingShare`)."""

    src: int
    dst: int
    share: float
    channels: tuple[int, ...]
    latency_s: float
    sources: int = 1
    ring: bool = False


@dataclass(frozen=True, slots=True)
class Communicator:
    """A TP or DP group: its members in ring order, the flows each of its collectives starts
    (:func:`palmsim.hardware.collectives.ring_shares`, routed) and how many members arrive
    at a collective (all, or replica 0's one when symmetric replicas are reduced)."""

    members: tuple[int, ...]
    flows: tuple[CollectiveFlow, ...]
    num_arriving: int
    # Its flows share no channel with each other or with any other traffic of the run, so
    # each runs alone at its narrowest channel's bandwidth: the engine times it in closed form.
    exclusive: bool = False
    # Which group it is: groups of different kinds may have the same members (e.g. an EP
    # group of all DP replicas), each with its own collectives and flows.
    group: GroupKind = GroupKind.TP
    # Fixed time of each of its collectives before the first step (the hardware's
    # system.collective_latency).
    startup_s: float = 0.0
    # An all-reduce as two calls, each paying the startup (system.composite_all_reduce).
    composite_all_reduce: bool = False
    # An all-to-all's flows each pay their route's latency once, not once a round
    # (system.direct_all_to_all).
    direct_all_to_all: bool = False
    # The share of its channels' rate a reduce-scatter's bytes keep, the rest stalls with the
    # channels free (system.reduce_scatter_efficiency).
    reduce_scatter_efficiency: float = 1.0
    # Time each reduce-scatter step takes beyond its flow's latency
    # (system.reduce_scatter_step_latency).
    reduce_scatter_step_s: float = 0.0
    # The share of its channels' rate at which a member sends the pieces of its own an
    # all-gather or all-to-all flow carries (system.injection_efficiency).
    injection_efficiency: float = 1.0
    # The share of its channels' rate a flow over a closed ring of chips keeps
    # (system.ring_fabric_efficiency).
    ring_fabric_efficiency: float = 1.0

    def fixed_time_s(
        self, kind: str, steps: int, flow: CollectiveFlow, flow_bytes: float, rate: float
    ) -> float:
        """What a ``flow`` of one collective of ``kind`` (``steps`` ring steps, ``flow_bytes``
        over channels whose narrowest carries ``rate`` B/s) takes besides draining its bytes
        [s]: the startup of each call, its route's latency once a step (once, for a direct
        all-to-all), each reduce-scatter step's reduction (all of a reduce-scatter's steps,
        half an all-reduce's: the reduce-scatter before its all-gather), and the stalls of
        the bytes it reduce-scatters, ``bytes / rate * (1/e - 1)`` at efficiency ``e``, which
        keeps the uncontended flow at ``e`` times the rate. A flow of a ring fabric's two
        opposite rings counts the ring fabric's steps
        (:func:`~palmsim.hardware.collectives.collective_steps`)."""
        steps, reduce_steps = collective_steps(kind, steps, ring_fabric=flow.ring)
        calls = 2 if kind == "allreduce" and self.composite_all_reduce else 1
        hops = 1 if kind == "alltoall" and self.direct_all_to_all else steps
        fixed_s = calls * self.startup_s + hops * flow.latency_s
        if kind == "reducescatter":
            reduced = flow_bytes
        elif kind == "allreduce":
            reduced = flow_bytes / 2
        else:
            return fixed_s
        fixed_s += reduce_steps * self.reduce_scatter_step_s
        if self.reduce_scatter_efficiency < 1 and rate < float("inf"):
            fixed_s += reduced / rate * (1 / self.reduce_scatter_efficiency - 1)
        return fixed_s

    def cap_bytes_per_s(self, kind: str, flow: CollectiveFlow, rate: float) -> float:
        """The rate a ``flow`` of one collective of ``kind`` never exceeds, over channels whose
        narrowest carries ``rate`` B/s: over a closed ring of chips, ``f`` times it (ring
        fabric efficiency ``f``); its ``sources`` members send the pieces of their own it
        gathers (an all-gather's or all-to-all's bytes) at ``i`` times that each (injection
        efficiency ``i``), so it moves them at ``sources i`` times it where that is less; an
        all-reduce's flow moves its reduce-scatter half at the full rate and its all-gather
        half so, the harmonic mean of the two over its bytes. Unlimited otherwise."""
        if flow.ring and self.ring_fabric_efficiency < 1:
            rate *= self.ring_fabric_efficiency
            limit = rate
        else:
            limit = float("inf")
        injected = flow.sources * self.injection_efficiency
        if injected >= 1 or kind == "reducescatter":
            return limit
        if kind == "allreduce":
            return 2 * rate * injected / (1 + injected)
        return rate * injected


@dataclass(frozen=True, slots=True)
class StageProgram:
    """The per-micro-batch work of one (virtual) pipeline stage, identical on its tiles.

    Without interleaving there is one program per stage. With ``v`` model chunks per stage
    (interleaved 1F1B) there is one per virtual stage ``c = j·p + s`` (chunk ``j`` of stage
    ``s``); ``steps``, ``step_chunks``, ``optimizer``, ``param_allgather_bytes`` and
    ``param_gathers_at_start`` then describe the whole physical stage and are the same in its
    ``v`` programs.
    """

    stage: int
    layers: tuple[int, int]  # [first, last) transformer layers held by this stage
    forward: tuple[Step, ...]
    backward: tuple[Step, ...]  # input- and weight-gradient, in backward order
    recompute: tuple[Step, ...]  # run before ``backward`` when recompute is on; else empty
    activation_bytes_per_microbatch: float  # stored per tile from forward until its backward
    send_bytes: float  # bytes each tile sends to its peer in the next/previous stage
    optimizer: ComputeStep  # the optimizer step of this stage's parameter shard
    steps: tuple[tuple[str, int], ...]  # the schedule: ("F"|"B", micro-batch) in run order
    # ZeRO-1/2: bytes each tile all-gathers over its DP group after the optimizer updated
    # its shard (the updated weights of the whole stage); 0 otherwise, and 0 with
    # mapping.overlap_param_gather, whose gathers are steps of the first forward.
    param_allgather_bytes: float = 0.0
    # The same for the routed experts' weights, over the tile's EDP group.
    expert_param_allgather_bytes: float = 0.0
    # mapping.overlap_param_gather: the first weight all-gather of each chain (DP, EDP) of the
    # stage's forwards, which the tile starts as its iteration starts (lower.chain_param_gathers)
    param_gathers_at_start: tuple[CollectiveStep, ...] = ()
    # The model chunk each of ``steps`` runs (interleaved 1F1B); empty means chunk 0 only.
    step_chunks: tuple[int, ...] = ()
    # Compiled engine policy: a pipeline send holds the tile until it has arrived (Megatron's
    # default without --overlap-p2p-communication), and when the DP gradient buckets reduce.
    send_blocks: bool = False
    grad_reduce: GradReduce = GradReduce.OVERLAP_BACKWARD
    # Merged 1F1B (Megatron-Core --overlap-moe-expert-parallel-comm): each steady-state
    # backward and the forward after it (of a later micro-batch) run together, taking turns
    # on the tile's compute, so the communication of one overlaps the compute of the other.
    merge_forward_backward: bool = False


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """Peak bytes of each kind held by one tile, and how much of it sits in SRAM."""

    weights: float
    gradients: float
    optimizer: float
    activations: float  # peak stored activations (in-flight micro-batches) plus working set
    sram_bytes: float  # the part held in SRAM
    dram_bytes: float  # the part spilled to the tile's DRAM port

    @property
    def total(self) -> float:
        """All bytes this tile needs at its peak."""
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass(frozen=True, slots=True)
class InferenceStage:
    """The forward-only serving work of one pipeline stage, per micro-batch of requests.

    ``decode[k - 1]`` is decode step k (k = 1 .. output_len - 1); its attention reads the
    ``prompt_len + k - 1`` cached tokens. KV bytes are per tile, for every request the tile's
    replica serves; tokens below ``spill_token`` live in SRAM, later ones in DRAM.
    """

    stage: int
    prefill: tuple[Step, ...]
    decode: tuple[tuple[Step, ...], ...]
    kv_bytes_per_token: float
    kv_sram_bytes: float
    kv_dram_bytes: float
    weight_sram_bytes: float
    weight_dram_bytes: float
    spill_token: int


@dataclass(frozen=True, slots=True)
class InferencePlan:
    """What the engine needs beyond the stage programs to run prefill and decode."""

    spec: InferenceSpec  # the scenario, for reports; the engine reads the fields below
    stages: tuple[InferenceStage, ...]
    requests_per_microbatch: int
    decode_send_bytes: float  # per tile, one token per request, to the next stage
    token_send_bytes: float  # sampled token ids, from the last stage back to the first
    compute_flop_per_s: float  # achievable FLOP/s per tile: peak at the dtype x efficiency
    prompt_len: int = 0  # prompt tokens per request
    output_len: int = 1  # generated tokens per request (the first one by the prefill)
    # some compute step reads ahead (ComputeStep.lead_read_bytes): its flows meet the next
    # steps', so no DRAM port is timed as private to its tile
    lead_reads: bool = False


@dataclass(frozen=True, slots=True)
class MappingPlan:
    """Which tiles run which stage, with what work, at what memory cost."""

    mapping: MappingSpec
    num_microbatches: int
    # stage_tiles[replica][stage] = tiles of that stage replica, in TP-rank order, which is
    # also the ring order of its tensor-parallel collectives.
    stage_tiles: tuple[tuple[tuple[int, ...], ...], ...]
    programs: tuple[StageProgram, ...]  # one per stage
    dram_port_of_tile: tuple[tuple[int, int], ...]  # (tile, DRAM port index) for used tiles
    memory: tuple[tuple[int, MemoryBreakdown], ...]  # (tile, breakdown) for used tiles
    placement: str  # name of the placement strategy used
    model_flop_per_iteration: float  # 3x forward GEMM FLOPs, no recompute (Korthikanti Eq. 7)
    peak_flop_per_s: float  # per tile, at the workload's dtype
    samples_per_iteration: int
    tokens_per_iteration: int
    inference: InferencePlan | None = None  # set for mode 'inference' (forward-only serving)
    # Every TP and DP group of two or more tiles, with the flows of its collectives.
    communicators: tuple[Communicator, ...] = ()
    # The data-parallel replicas the engine simulates: the first ones of stage_tiles. Fewer
    # than all (one, or one context-parallel group) when the replicas are provably symmetric
    # (palmsim.mapping.communicators); the DP communicators then hold only their flows.
    # 0: every replica.
    num_simulated_replicas: int = 0
    # The TP ranks of each of their stages it simulates: the first ones; 1 when rank 0
    # provably stands for the others (same module), 0: every rank.
    num_simulated_ranks: int = 0
    # Replicas per expert-parallel group and per context-parallel group: the compiled
    # layout of groups(); the replicas of stage_tiles are ordered cp-rank fastest.
    ep_degree: int = 1
    cp_degree: int = 1
    # Expert tensor-parallel degree (ETP) of the folded expert groups; None: the stage's tp
    # (Megatron-Core's default). :mod:`palmsim.mapping.folding`.
    etp_degree: int | None = None
    # Routed token slots the capacity factor drops in one iteration, over all MoE layers,
    # micro-batches and replicas (0 when dropless).
    dropped_token_slots: float = 0.0
    # Routed slots per token of the batch: top-k times the MoE layers (0 for a dense model).
    routed_slots_per_token: float = 0.0

    @property
    def num_stages(self) -> int:
        """Physical pipeline stages p."""
        return len(self.stage_tiles[0]) if self.stage_tiles else len(self.programs)

    @property
    def num_virtual_stages(self) -> int:
        """Virtual stages p·v: one program each (``p`` without interleaving)."""
        return len(self.programs)

    @property
    def used_tiles(self) -> tuple[int, ...]:
        """Every tile the mapping uses, sorted."""
        return tuple(sorted(t for rep in self.stage_tiles for st in rep for t in st))

    @property
    def simulated_replicas(self) -> int:
        """Data-parallel replicas the engine simulates: all, or the first block (one replica,
        or one context-parallel group) when they are symmetric."""
        return self.num_simulated_replicas or len(self.stage_tiles)

    @property
    def simulated_ranks(self) -> int:
        """TP ranks of each stage the engine simulates: all, or rank 0 alone when the ranks
        are symmetric."""
        tp = len(self.stage_tiles[0][0]) if self.stage_tiles and self.stage_tiles[0] else 1
        return self.num_simulated_ranks or tp

    @property
    def replication(self) -> float:
        """How many tiles each simulated one stands for (1 unless replicas or TP ranks are
        reduced): every stage has the same TP degree, so this is replicas over simulated
        replicas times ranks over simulated ranks, as one exact quotient."""
        simulated = len(self.simulated_tiles)
        return len(self.used_tiles) / simulated if simulated else 1.0

    @property
    def simulated_tiles(self) -> tuple[int, ...]:
        """The tiles the engine simulates, sorted: the simulated ranks of every stage of the
        simulated replicas."""
        simulated, ranks = self.stage_tiles[: self.simulated_replicas], self.simulated_ranks
        return tuple(sorted(t for rep in simulated for st in rep for t in st[:ranks]))

    def groups(self, replica: int, stage: int, rank: int) -> dict[str, tuple[int, ...]]:
        """The tile's group of each :class:`GroupKind`: its TP group, its DP group (every
        replica), its CP group (``cp_degree`` consecutive replicas), its EP, EDP and ETP
        groups, folded over the stage's ranks ``j = rank + tp·replica``
        (:func:`palmsim.mapping.folding.expert_group`), and its TPA and TPB groups of
        ``mapping.tp_2d`` (without it, TPA is the TP group and TPB the tile alone)."""
        reps = self.stage_tiles
        ep, cp = self.ep_degree, self.cp_degree
        tp = len(reps[replica][stage])
        a, _ = self.mapping.tp_2d or (tp, 1)
        etp = tp if self.etp_degree is None else self.etp_degree
        num_ranks = tp * len(reps)

        def of(replicas: Sequence[int]) -> tuple[int, ...]:
            return tuple(reps[r][stage][rank] for r in replicas)

        def folded(kind: str) -> tuple[int, ...]:
            ranks = expert_group(kind, rank + tp * replica, num_ranks, etp, ep)
            return tuple(reps[j // tp][stage][j % tp] for j in ranks)

        return {
            GroupKind.TP: reps[replica][stage],
            GroupKind.DP: of(range(len(reps))),
            GroupKind.EP: folded("ep"),
            GroupKind.EDP: folded("edp"),
            GroupKind.ETP: folded("etp"),
            GroupKind.CP: of(range(replica - replica % cp, replica - replica % cp + cp)),
            GroupKind.TPA: reps[replica][stage][rank - rank % a : rank - rank % a + a],
            GroupKind.TPB: reps[replica][stage][rank % a :: a],
        }

    def stage_of_tile(self) -> dict[int, int]:
        """Tile index -> pipeline stage."""
        return {t: s for rep in self.stage_tiles for s, st in enumerate(rep) for t in st}
