"""The communicators of a mapping (its TP and DP groups) with the flows of their collectives,
and when one data-parallel replica may stand in for all.

Each group of two or more tiles gets a :class:`~palmsim.mapping.plan.Communicator`: its
members in ring order and the flows one of its ring collectives starts, routed on the chip
(:func:`palmsim.hardware.collectives.ring_shares`: a flat ring, or on a GPU cluster one ring
per local member when the group spans nodes).

**Symmetric replicas.** On a GPU cluster every channel belongs to exactly one GPU: its NVLink
to and from the node's NVSwitch, its NIC to and from the non-blocking fabric, and its HBM port
(:class:`palmsim.hardware.topology.GpuClusterTopology`). Map every GPU of replica ``r`` to the
GPU of replica 0 that holds the same stage and TP rank, and every channel to the channel of
the same kind and direction of that GPU (its *image*). If

1. every channel of a kind has the same bandwidth and latency,
2. every transfer a replica makes inside itself (TP collective flows, pipeline sends both
   ways, HBM traffic) has as image exactly the route replica 0 uses for the same transfer,
3. in every DP communicator, the flows each member sends and the flows it receives have the
   same images and shares, the same for every member,

then the full simulation is invariant under the replica permutation: each replica does the
same work at the same times, and each channel carries at every instant the image of what
replica 0's channel carries. Replica 0 alone then reproduces it exactly, provided its DP flows
keep their contention: each flow replica 0's GPU sends goes out over its own out-channel and in
over the *image* of the receiver's in-channel, which is the GPU's own in-channel. By 3, that is
where the full run delivers an identical flow to it. Every channel replica 0 uses thus carries
the same flows as in the full run, and the iteration time, replica 0's records and the
per-channel loads are the full run's.

**Blocks of replicas.** The same argument holds for blocks of ``b`` consecutive replicas
(``b`` a multiple of ``cp``, so that a block holds whole context-parallel groups): map
replica ``r`` to replica ``r mod b`` of block 0, with condition 2 for the transfers inside a
block, its groups' collectives (a CP group's KV ring; an EP group's all-to-all when the
block holds it) included, each block's groups the images of block 0's, and condition 3 for
every group that spans blocks (DP, and EP, EDP, ETP groups wider than a block), stated per
channel: the images of the group's members are its members in block 0, and every channel
its flows cross carries the images of exactly the flows its image channel carries once only
those members send, re-routed onto images. For a DP group and ``b = 1`` this is condition 3
as stated above (a member's out-channel carries what it sends, its in-channel what it
receives, each the image of what replica 0's member sends). The smallest such block is
simulated; the others are its images, as replica 0's are above.

**TP ranks.** The same argument holds for the TP ranks of a stage, which run the stage's one
program (:class:`~palmsim.mapping.plan.StageProgram`; an MoE layer's experts at the busiest EP
rank's load, :class:`palmsim.workload.moe.Routing`): map every GPU to TP rank 0 of its stage
in its block's image replica, and its channels to that GPU's. A block is then one TP rank of
``b`` replicas, and a TP group spans blocks: condition 3 asks that rank 0's own channels
carry the images of every ring edge, which a ring on one node's NVLinks does (edge
``k -> k+1`` leaves over ``k``'s out-link and enters over ``k+1``'s in-link, the images of
rank 0's), and rank 0 keeps its one edge, re-routed onto its own in-link. Its collective
then waits for rank 0 alone and, its flows meeting what they met in the full run, ends when
the full run's does. Megatron 1T on 3,072 GPUs (TP 8, DP 6) simulates 64 GPUs for 3,072.

A wafer is never reduced: its NoC links and DRAM ports are shared between tiles of different
replicas, so there is no such channel image.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

from palmsim.hardware.chip import Chip, Route
from palmsim.hardware.collectives import (
    RingShare,
    alltoall_shares,
    deduplicated_alltoall_shares,
    line_shares,
    ring_shares,
)
from palmsim.mapping.folding import expert_groups
from palmsim.mapping.plan import CollectiveFlow, Communicator, GroupKind

__all__ = ["communicators", "pipeline_pairs", "ring_communicators"]

# per channel, the (imaged route, share) of each flow crossing it, counted
_Load = defaultdict[int, Counter[tuple[tuple[int, ...], float]]]

StageTiles = tuple[tuple[tuple[int, ...], ...], ...]


def communicators(
    chip: Chip,
    stage_tiles: StageTiles,
    *,
    pipeline_wraps: bool,
    symmetric_replicas: bool,
    ep: int = 1,
    cp: int = 1,
    etp: int | None = None,
    tp_2d: tuple[int, int] | None = None,
    dedup: tuple[int, int] | None = None,
) -> tuple[tuple[Communicator, ...], int, int]:
    """Every TP and DP communicator of ``stage_tiles``, and how many replicas and how many TP
    ranks of each stage are simulated.

    With ``symmetric_replicas`` and conditions 1-3 of the module docstring met for blocks of
    ``b`` replicas (or for one TP rank of ``b`` replicas, rank 0 standing for its stage's
    other ranks), only block 0's communicators are kept, those across blocks with only
    block 0's members' flows, re-routed onto images, and expecting only those members to
    arrive; the second value is then ``b`` (else every replica), the third 1 when rank 0
    stands for the others (else every rank). Of the candidates that hold, the one simulating
    the fewest tiles is taken. A communicator is marked ``exclusive`` when no other traffic
    of the run can share a channel with its flows (then the engine times its collectives in
    closed form).

    Args:
        chip: the machine.
        stage_tiles: ``stage_tiles[replica][stage]`` = the stage replica's tiles in TP order.
        pipeline_wraps: the last stage also sends to the first (interleaved 1F1B; the token
            ids of inference).
        symmetric_replicas: reduce symmetric replicas (``run.symmetric_replicas``) to the
            smallest block of whole CP groups that stands for the others.
        ep: ranks per expert-parallel group: adds each EP group's all-to-all communicator
            and each EDP group's ring, folded over a stage's ranks with ``etp``
            (:mod:`palmsim.mapping.folding`, :meth:`MappingPlan.groups`).
        cp: replicas per context-parallel group: adds each CP group's ring.
        etp: expert tensor-parallel degree (None: the stage's tp); with ``1 < etp < tp``
            adds each ETP group's ring (with ``etp = tp`` the ETP group is the TP group).
        tp_2d: ``[a, b]`` of 2-D tensor parallelism: each stage replica's TPA and TPB
            rings (:meth:`MappingPlan.groups`) in place of its TP ring.
        dedup: ``(E, k)`` of a node-deduplicated token dispatch (DeepEP's; a GPU cluster's
            nodes): each EP group's flows cross to another node once per token
            (:func:`palmsim.hardware.collectives.deduplicated_alltoall_shares`).
    """
    node_of = chip.die_of if chip.spec.kind == "gpu_cluster" else None
    wafer = chip.spec.wafer
    chip_of = chip.die_of if wafer is not None and wafer.inter_die_links > 0 else None
    tp, dp = ring_communicators(
        chip.route,
        stage_tiles,
        node_of,
        bidirectional=wafer is not None and wafer.bidirectional_rings,
        chip_of=chip_of,
    )
    extra = _replica_group_communicators(
        chip.route,
        stage_tiles,
        node_of,
        ep=ep,
        cp=cp,
        etp=etp,
        tp_2d=tp_2d,
        bidirectional=wafer is not None and wafer.bidirectional_rings,
        chip_of=chip_of,
        dedup=dedup,
    )
    if tp_2d is not None:
        tp = []  # its collectives run on the TPA and TPB groups
    pairs = pipeline_pairs(stage_tiles, wraps=pipeline_wraps)
    simulated, comms = stage_tiles, [*tp, *dp, *extra]
    num_replicas = len(stage_tiles)
    num_ranks = len(stage_tiles[0][0]) if stage_tiles and stage_tiles[0] else 1
    ranks = num_ranks
    if symmetric_replicas and chip.spec.kind == "gpu_cluster":
        # blocks of whole CP groups, with or without rank 0 standing for its stage's ranks;
        # the first that holds of those simulating the fewest tiles (replicas first on a tie)
        blocks = [b for b in range(cp, num_replicas + 1, cp) if num_replicas % b == 0]
        rank_options = (False, True) if num_ranks > 1 else (False,)
        candidates = sorted(
            (b * (1 if one_rank else num_ranks), one_rank, b)
            for b in blocks
            for one_rank in rank_options
            if b < num_replicas or one_rank
        )
        for _, one_rank, block in candidates:
            reduced = _reduce(chip, stage_tiles, pairs, comms, block, one_rank=one_rank)
            if reduced is not None:
                ranks = 1 if one_rank else num_ranks
                simulated = tuple(
                    tuple(tiles[:ranks] for tiles in replica) for replica in stage_tiles[:block]
                )
                comms = reduced
                break
    return _mark_exclusive(chip, comms, simulated, pipeline_wraps), len(simulated), ranks


def _replica_group_communicators(
    route: Callable[[int, int], Route],
    stage_tiles: StageTiles,
    node_of: Callable[[int], int] | None,
    *,
    ep: int,
    cp: int,
    etp: int | None = None,
    tp_2d: tuple[int, int] | None = None,
    bidirectional: bool = False,
    chip_of: Callable[[int], int] | None = None,
    dedup: tuple[int, int] | None = None,
) -> list[Communicator]:
    """The EP (all-to-all), EDP, ETP, CP and TPA/TPB (ring) communicators, as
    :meth:`palmsim.mapping.plan.MappingPlan.groups` cuts them, each of two or more tiles;
    ``bidirectional`` rings and ``chip_of`` lines as :func:`ring_communicators`'."""
    num_replicas = len(stage_tiles)
    out: list[Communicator] = []
    # Each cut: the kind and, per stage, its groups as (replica, rank) members.
    cuts: list[tuple[GroupKind, list[list[tuple[tuple[int, int], ...]]]]] = []
    stage_ranks = [len(tiles) for tiles in stage_tiles[0]] if stage_tiles else []
    kinds: list[GroupKind] = []
    if ep > 1:
        kinds.append(GroupKind.EP)
    if ep > 1 or any(etp is not None and etp != tp for tp in stage_ranks):
        kinds.append(GroupKind.EDP)  # the experts' gradients: no longer the DP group's
    if any(etp is not None and 1 < etp < tp for tp in stage_ranks):
        kinds.append(GroupKind.ETP)
    for kind in kinds:
        per_stage = []
        for tp in stage_ranks:
            degree = tp if etp is None else etp
            folded = expert_groups(str(kind), tp * num_replicas, degree, ep)
            per_stage.append([tuple((j // tp, j % tp) for j in g) for g in folded])
        cuts.append((kind, per_stage))
    if cp > 1:
        per_stage = []
        for tp in stage_ranks:
            per_stage.append(
                [
                    tuple((r, k) for r in range(g, g + cp))
                    for g in range(0, num_replicas, cp)
                    for k in range(tp)
                ]
            )
        cuts.append((GroupKind.CP, per_stage))
    if tp_2d is not None:
        a, b = tp_2d
        for kind, ranks in (
            (GroupKind.TPA, [tuple(q * a + i for i in range(a)) for q in range(b)]),
            (GroupKind.TPB, [tuple(i + a * j for j in range(b)) for i in range(a)]),
        ):
            groups = [tuple((r, k) for k in g) for r in range(num_replicas) for g in ranks]
            cuts.append((kind, [groups for _ in stage_ranks]))
    for kind, per_stage in cuts:
        for s, stage_groups in enumerate(per_stage):
            for group in stage_groups:
                if len(group) < 2:
                    continue
                members = tuple(stage_tiles[r][s][k] for r, k in group)
                if kind is GroupKind.EP and dedup is not None and node_of is not None:
                    shares = deduplicated_alltoall_shares(
                        members, node_of, num_experts=dedup[0], top_k=dedup[1]
                    )
                elif kind is GroupKind.EP:
                    shares = alltoall_shares(members)
                else:
                    shares = _ring_kind_shares(route, members, node_of, bidirectional, chip_of)
                flows = []
                for share in shares:
                    r = route(share.src, share.dst)
                    flows.append(
                        CollectiveFlow(
                            share.src,
                            share.dst,
                            share.share,
                            r.channels,
                            r.latency_s,
                            share.sources,
                            share.ring,
                        )
                    )
                out.append(Communicator(members, tuple(flows), len(members), group=kind))
    return out


def _ring_kind_shares(
    route: Callable[[int, int], Route],
    members: tuple[int, ...],
    node_of: Callable[[int], int] | None,
    bidirectional: bool,
    chip_of: Callable[[int], int] | None = None,
) -> tuple[RingShare, ...]:
    """The flows of the all-reduces, reduce-scatters and all-gathers of a group. A group of
    chips joined by links (``chip_of``: a system whose ``system.link.count`` is set), one
    member per chip, whose closing edge, last member to first, takes more hops than every
    other edge of the ring, is a line and runs the line algorithm of tt-metal's 1-D fabric
    (:func:`~palmsim.hardware.collectives.line_shares`); any other group the ring
    (:func:`~palmsim.hardware.collectives.ring_shares`): the cores of a wafer, whose
    collectives palmsim does not take from a multi-chip fabric, and GPUs."""
    n = len(members)
    if chip_of is not None and n > 2 and len({chip_of(m) for m in members}) == n:
        hops = [len(route(a, b).channels) for a, b in pairwise(members)]
        if len(route(members[-1], members[0]).channels) > max(hops):
            return line_shares(members)
    return ring_shares(members, node_of, bidirectional=bidirectional)


def pipeline_pairs(stage_tiles: StageTiles, *, wraps: bool) -> list[tuple[int, int]]:
    """Every (sender, receiver) of a pipeline send, both directions: each stage's rank k to
    the next stage's rank k, and with ``wraps`` the last stage's to the first's."""
    pairs: list[tuple[int, int]] = []
    for replica in stage_tiles:
        num_stages = len(replica)
        for s, tiles in enumerate(replica):
            following = s + 1 if s + 1 < num_stages else 0
            if following != s and (following > s or wraps):
                for a, b in zip(tiles, replica[following], strict=True):
                    pairs += [(a, b), (b, a)]
    return pairs


def _mark_exclusive(
    chip: Chip, comms: list[Communicator], simulated: StageTiles, pipeline_wraps: bool
) -> tuple[Communicator, ...]:
    """``comms`` with ``exclusive`` set where a communicator's flows are pairwise
    channel-disjoint and no other traffic of the run can cross their channels: no other
    communicator's flow, no pipeline send and no DRAM traffic of the ``simulated`` tiles;
    and with the chip's collective startup (``system.collective_latency``), all-reduce calls
    (``system.composite_all_reduce``), all-to-all rounds and reduce-scatter, injection and
    ring fabric efficiencies."""
    wafer = chip.spec.wafer
    timing: dict[str, Any] = {}
    if wafer is not None:
        timing = {
            "startup_s": wafer.collective_latency_s,
            "composite_all_reduce": wafer.composite_all_reduce,
            "direct_all_to_all": wafer.direct_all_to_all,
            "reduce_scatter_efficiency": wafer.reduce_scatter_efficiency,
            "reduce_scatter_step_s": wafer.reduce_scatter_step_latency_s,
            "injection_efficiency": wafer.injection_efficiency,
            "ring_fabric_efficiency": wafer.ring_fabric_efficiency,
        }
    owners: dict[int, set[int]] = {}  # channel -> the communicators using it (by position)
    for i, comm in enumerate(comms):
        for f in comm.flows:
            for c in f.channels:
                owners.setdefault(c, set()).add(i)
    foreign: set[int] = set()  # channels of pipeline sends and DRAM traffic
    for a, b in pipeline_pairs(simulated, wraps=pipeline_wraps):
        foreign.update(chip.route(a, b).channels)
    for t in {t for replica in simulated for tiles in replica for t in tiles}:
        port = chip.home_dram_port(t)
        for write in (False, True):
            foreign.update(chip.dram_route(t, port, write=write).channels)
    out = []
    for i, comm in enumerate(comms):
        used = [c for f in comm.flows for c in f.channels]
        exclusive = len(used) == len(set(used)) and all(
            owners[c] == {i} and c not in foreign for c in used
        )
        out.append(dataclasses.replace(comm, exclusive=exclusive, **timing))
    return tuple(out)


def ring_communicators(
    route: Callable[[int, int], Route],
    stage_tiles: StageTiles,
    node_of: Callable[[int], int] | None = None,
    *,
    bidirectional: bool = False,
    chip_of: Callable[[int], int] | None = None,
) -> tuple[list[Communicator], list[Communicator]]:
    """The TP and the DP communicators of ``stage_tiles`` (groups of two or more), every
    member arriving, with their flows routed by ``route``; ``node_of`` as for
    :func:`~palmsim.hardware.collectives.ring_shares` (None: flat rings); with ``chip_of``
    (a system of chips joined by links) a group of chips in a line runs the line algorithm
    (:func:`_ring_kind_shares`)."""

    def build(members: tuple[int, ...], group: GroupKind) -> Communicator:
        flows = []
        for s in _ring_kind_shares(route, members, node_of, bidirectional, chip_of):
            r = route(s.src, s.dst)
            flows.append(
                CollectiveFlow(s.src, s.dst, s.share, r.channels, r.latency_s, s.sources, s.ring)
            )
        return Communicator(members, tuple(flows), len(members), group=group)

    tp = [
        build(tiles, GroupKind.TP) for replica in stage_tiles for tiles in replica if len(tiles) > 1
    ]
    dp_groups = [
        tuple(replica[s][k] for replica in stage_tiles)
        for s, tiles in enumerate(stage_tiles[0] if stage_tiles else ())
        for k in range(len(tiles))
    ]
    return tp, [build(group, GroupKind.DP) for group in dp_groups if len(group) > 1]


def _reduce(
    chip: Chip,
    stage_tiles: StageTiles,
    pairs: list[tuple[int, int]],
    comms: list[Communicator],
    block: int,
    *,
    one_rank: bool = False,
) -> list[Communicator] | None:
    """``comms`` as the first ``block`` replicas simulate them (with ``one_rank``, only TP
    rank 0 of each of their stages), if conditions 1-3 hold for blocks of ``block`` replicas
    (module docstring; with ``one_rank`` a block is one TP rank of ``block`` replicas), else
    None: a communicator inside one block is kept if it is block 0's, one that spans blocks
    keeps its block-0 members' flows, re-routed onto images, and waits for those members
    only."""
    channels = chip.channels
    # 1. uniform links: one bandwidth and latency per channel kind
    per_kind: dict[str, tuple[float, float]] = {}
    for ch in channels:
        key = (ch.bandwidth_bytes_per_s, ch.latency_s)
        if per_kind.setdefault(ch.kind, key) != key:
            return None
    # Each channel's GPU end, and each GPU's channel by (kind, direction: True = out of it).
    owner: list[tuple[int, bool]] = []
    channel_of: dict[tuple[int, str, bool], int] = {}
    for ch in channels:
        out = ch.src.startswith("tile:")
        gpu = int((ch.src if out else ch.dst).split(":", 1)[1])
        owner.append((gpu, out))
        channel_of[gpu, ch.kind, out] = ch.index
    # each tile's image in block 0, and its block: (replica block, TP rank if one_rank)
    representative: dict[int, int] = {}
    block_of: dict[int, tuple[int, int]] = {}
    home = (0, 0)
    for r, replica in enumerate(stage_tiles):
        for s, tiles in enumerate(replica):
            for k, t in enumerate(tiles):
                representative[t] = stage_tiles[r % block][s][0 if one_rank else k]
                block_of[t] = (r // block, k if one_rank else 0)

    def image(route_channels: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(
            channel_of[representative[owner[c][0]], channels[c].kind, owner[c][1]]
            for c in route_channels
        )

    def same_route(a: int, b: int) -> bool:
        theirs = chip.route(representative[a], representative[b]).channels
        return image(chip.route(a, b).channels) == theirs

    # 2. transfers inside a block: pipeline sends, HBM traffic and the collectives of the
    # groups inside one block, each block's groups the images of block 0's
    if not all(same_route(a, b) for a, b in pairs):
        return None
    for t, rep in representative.items():
        for write in (False, True):
            own = chip.dram_route(t, chip.home_dram_port(t), write=write).channels
            theirs = chip.dram_route(rep, chip.home_dram_port(rep), write=write).channels
            if image(own) != theirs:
                return None

    def loads(flows: Iterable[tuple[tuple[int, ...], float]]) -> _Load:
        """Per channel, the (imaged route, share) of each flow (route, share) crossing it."""
        out: _Load = defaultdict(Counter)
        for route, share in flows:
            imaged = image(route)
            for c in route:
                out[c][imaged, share] += 1
        return out

    inner: defaultdict[tuple[int, int], Counter[tuple[GroupKind, tuple[int, ...]]]] = defaultdict(
        Counter
    )
    # the groups across blocks by kind and their members' images, their flows' loads
    # summed: all of them run each collective together, as the images of one
    across: defaultdict[tuple[GroupKind, frozenset[int]], _Load] = defaultdict(
        lambda: defaultdict(Counter)
    )
    kept: dict[tuple[GroupKind, frozenset[int]], _Load] = {}
    reduced = []
    for comm in comms:
        blocks = {block_of[t] for t in comm.members}
        if len(blocks) == 1:
            if not all(same_route(f.src, f.dst) for f in comm.flows):
                return None
            inner[min(blocks)][comm.group, tuple(representative[t] for t in comm.members)] += 1
            if blocks == {home}:
                reduced.append(comm)
            continue
        cls = (comm.group, frozenset(representative[t] for t in comm.members))
        for c, load in loads((f.channels, f.share) for f in comm.flows).items():
            across[cls][c] += load
        if home in blocks:
            # 3. its members' images are its block-0 members, who alone send
            first = frozenset(t for t in comm.members if block_of[t] == home)
            if cls[1] != first:
                return None
            flows = tuple(
                dataclasses.replace(f, channels=image(f.channels))
                for f in comm.flows
                if f.src in first
            )
            kept[cls] = loads((f.channels, f.share) for f in flows)
            reduced.append(dataclasses.replace(comm, flows=flows, num_arriving=len(first)))
    # each block's groups are the images of block 0's
    mine_inside = inner.get(home, Counter())
    if any(groups != mine_inside for groups in inner.values()):
        return None
    # 3. every channel carries, in the groups across blocks, the images of the flows its
    # image carries when only block 0's members send
    for cls, full in across.items():
        mine = kept.get(cls)
        if mine is None or any(load != mine.get(image((c,))[0]) for c, load in full.items()):
            return None
        if any(full.get(c) != load for c, load in mine.items()):
            return None
    return reduced
