"""Pure structure of collectives: which member sends how much to which, at flow level.

A ring collective of ``n`` members over a buffer of ``S`` bytes runs ``steps`` pipelined
steps (all-reduce ``2(n-1)``, reduce-scatter and all-gather ``n-1``), and each ring edge
carries ``steps/n · S`` bytes in all (Patarasuk & Yuan, "Bandwidth optimal all-reduce
algorithms for clusters of workstations", JPDC 2009; nccl-tests doc/PERFORMANCE.md). palmsim
moves that as one flow per edge, paying the edge's route latency once per step.

Three layouts:

- **line** (a group of chips joined by links whose last member is no neighbour of its
  first, e.g. four chips of a T3000's mesh row): the line algorithm of a linear array, each
  member's piece passed hop by hop towards both ends (the bucket algorithm run both ways,
  Chan et al., "Collective communication: theory, practice, and experience", CCPE 19(13),
  2007; tt-metal's 1-D fabric line collectives forward every device's piece both ways). Every
  flow is one hop, so a step pays one hop's latency, and the link ``i -> i+1`` carries the
  pieces of members ``0..i``: ``(i+1)/(n-1)`` of a ring edge's bytes, the end links a whole
  edge as a ring's links do (:func:`line_shares`).
- **flat ring** (one node, one member per node, unequal members per node, or any other wafer
  group): member ``i`` sends everything to member ``i+1``.
- **one ring per local member** (a GPU cluster group of ``N > 1`` nodes with ``G > 1``
  members each): NCCL builds several rings ("channels") and splits the buffer among them;
  on a node with one NIC per GPU each ring enters and leaves the node through a different
  GPU's NIC, so every NIC carries an equal share (S. Jeaugey, "NCCL 2.0", GTC 2017; NVIDIA
  DGX A100 user guide: one HDR NIC per GPU for compute traffic). With ``G`` rings, ring ``j``
  leaves each node from its ``j``-th member, so every member sends ``1/G`` of the edge
  bytes to the member of the same local index in the next node (over the NICs) and the
  other ``(G-1)/G`` to the next member of its own node (over NVLink). The sum over members
  of what each edge of each ring carries is exactly the flat ring's, re-routed.

**All-to-all** (the token dispatch and combine of expert parallelism): every member holds a
buffer of ``S`` bytes and sends ``S/n`` of it to each other member, ``(n-1)/n · S`` in all.
palmsim runs it as the pairwise exchange of MPICH (Thakur, Rabenseifner and Gropp, "Optimization
of Collective Communication Operations in MPICH", IJHPCA 2005, Sec. 4.4), whose cost on a
network where nothing contends is ``(n-1)·alpha + (n-1)/n · S·beta``: ``n-1`` steps, one flow
per ordered pair carrying ``S/n`` (a share ``1/(n-1)`` of the ``(n-1)/n · S`` step bytes), each
routed over the chip and paying its route latency once per step. Where the flows meet, the
topology shows: on a switch each member's link carries its own ``n-1`` flows; on a mesh or
torus they pile up on the links across the bisection (:func:`collective_transfers` feeds them
to the flow network, the tests in ``tests/analytic/test_alltoall.py`` compare them with the
closed forms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from palmsim.hardware.chip import Route

__all__ = [
    "RING_STEPS",
    "CollectiveTransfer",
    "RingShare",
    "alltoall_shares",
    "collective_steps",
    "collective_transfers",
    "deduplicated_alltoall_shares",
    "line_shares",
    "node_reach",
    "ring_shares",
]

#: Steps of each collective kind for ``n`` members: the ring's pipelined steps (Patarasuk &
#: Yuan 2009), and the pairwise exchange's rounds for ``alltoall`` (Thakur et al. 2005). Each
#: flow of a collective moves its share of ``steps/n · S`` and pays its latency ``steps`` times.
RING_STEPS: dict[str, Callable[[int], int]] = {
    "allreduce": lambda n: 2 * (n - 1),
    "reducescatter": lambda n: n - 1,
    "allgather": lambda n: n - 1,
    "alltoall": lambda n: n - 1,
}


def collective_steps(kind: str, steps: int, *, ring_fabric: bool) -> tuple[int, int]:
    """``(steps whose route latency a flow pays, of them reduce-scatter steps)`` of a
    ``kind`` collective of ``steps`` ring steps (:data:`RING_STEPS`): a reduce-scatter's are
    all of them, an all-reduce's its first half, other kinds' none.

    On a ring fabric's two opposite rings (``ring_fabric``, :class:`RingShare` ``ring``)
    tt-metal sends each member's pieces ``ceil((n-1)/2)`` members forward and the other
    ``n-1`` minus that backward (ttnn/cpp/ttnn/operations/ccl/ccl_common.cpp,
    ``get_forward_backward_configuration`` for ``Topology::Ring``: ``num_targets_forward =
    div_up(ring_size - 1, 2)``). A reduce-scatter's partial sums are received, added to and
    passed on chip by chip, so its chain is ``ceil((n-1)/2)`` steps long, not the one-way
    ring's ``n-1``; an all-gather's pieces are forwarded by the routers, and each chip still
    takes in ``n-1`` of them one after another. tt-metal's CCL summaries show both: over 8
    Wormhole chips a 16 KiB reduce-scatter takes 19.6 us as a ring and 30.4 us as a line, an
    all-gather 17.6 and 19.8 us (validation/tiles_measurements.yaml, tt_ccl_*_wh_*8_16KiB).
    An all-reduce runs one of each. The bytes a link carries are the two rings' halves either
    way (:func:`ring_shares`). Pure."""
    if kind == "reducescatter":
        reduce_steps = steps
    elif kind == "allreduce":
        reduce_steps = steps // 2
    else:
        return steps, 0
    if not ring_fabric:
        return steps, reduce_steps
    chain = math.ceil(reduce_steps / 2)
    return steps - reduce_steps + chain, chain


@dataclass(frozen=True, slots=True)
class RingShare:
    """``src`` sends ``share`` of a ring edge's bytes (``steps/n · S``) to ``dst``; they are
    the pieces of ``sources`` members (the all-gather's view: a ring edge passes on the
    pieces of every member but its receiver, a line's link those of every member behind it,
    an all-to-all's flow its sender's own). ``ring``: an edge of a ring fabric's two
    opposite rings (tt-metal's ring fabric, :func:`ring_shares` ``bidirectional``), whose
    routers run deadlock avoidance (``system.ring_fabric_efficiency``)."""

    src: int
    dst: int
    share: float
    sources: int = 1
    ring: bool = False


def ring_shares(
    members: Sequence[int],
    node_of: Callable[[int], int] | None = None,
    *,
    bidirectional: bool = False,
) -> tuple[RingShare, ...]:
    """The flows of one ring collective over ``members`` (in ring order), see the module doc.

    Args:
        members: the group's tiles in ring order (at least 2).
        node_of: a GPU's node on a cluster; None (a wafer) always gives the flat ring.
        bidirectional: (a wafer) two flat rings in opposite directions, each on half the
            buffer: ``i`` sends half an edge's bytes to ``i+1`` and half to ``i-1``
            (tt-metal's ring fabric). On a ring of physical links this halves each link
            direction's bytes (a line runs :func:`line_shares` instead).
    """
    n = len(members)
    assert n >= 2, f"a ring needs two members, got {list(members)}"
    flat = tuple(RingShare(members[i], members[(i + 1) % n], 1.0, n - 1) for i in range(n))
    if node_of is None:
        if bidirectional and n > 2:
            return tuple(RingShare(s.src, s.dst, 0.5, n - 1, ring=True) for s in flat) + tuple(
                RingShare(members[i], members[i - 1], 0.5, n - 1, ring=True) for i in range(n)
            )
        return flat
    by_node: dict[int, list[int]] = {}
    for t in members:
        by_node.setdefault(node_of(t), []).append(t)
    nodes = list(by_node.values())
    g = len(nodes[0])
    if len(nodes) == 1 or g == 1 or any(len(local) != g for local in nodes):
        return flat
    out: list[RingShare] = []
    for a, local in enumerate(nodes):
        following = nodes[(a + 1) % len(nodes)]
        for i, t in enumerate(local):
            out.append(RingShare(t, local[(i + 1) % g], (g - 1) / g, n - 1))
            out.append(RingShare(t, following[i], 1 / g, n - 1))
    return tuple(out)


def line_shares(members: Sequence[int]) -> tuple[RingShare, ...]:
    """The flows of one ring-kind collective (all-reduce, reduce-scatter, all-gather) over
    ``members`` in line order by the line algorithm (module docstring): ``i`` sends
    ``(i+1)/(n-1)`` of a ring edge's bytes (``steps/n · S``) to ``i+1`` (the pieces of members
    ``0..i`` travelling right) and ``i+1`` sends ``(n-1-i)/(n-1)`` to ``i`` (those of members
    ``i+1..n-1`` travelling left). Two members: the flat ring's two flows."""
    n = len(members)
    assert n >= 2, f"a line needs two members, got {list(members)}"
    out: list[RingShare] = []
    for i in range(n - 1):
        out.append(RingShare(members[i], members[i + 1], (i + 1) / (n - 1), i + 1))
        out.append(RingShare(members[i + 1], members[i], (n - 1 - i) / (n - 1), n - 1 - i))
    return tuple(out)


def alltoall_shares(members: Sequence[int]) -> tuple[RingShare, ...]:
    """The flows of one all-to-all over ``members``: every ordered pair ``(i, j)``, ``i != j``,
    with share ``1/(n-1)`` of the ``(n-1)/n · S`` step bytes, i.e. ``S/n`` (module docstring).

    Args:
        members: the group's tiles (at least 2), in rank order.
    """
    n = len(members)
    assert n >= 2, f"an all-to-all needs two members, got {list(members)}"
    share = 1.0 / (n - 1)
    return tuple(RingShare(a, b, share) for a in members for b in members if a != b)


def node_reach(num_experts: int, top_k: int, node_experts: int) -> float:
    """Probability that a token's ``top_k`` distinct experts, drawn uniformly from
    ``num_experts``, include at least one of a node's ``node_experts``:
    ``1 - C(E - E_u, k) / C(E, k)`` (the hypergeometric chance of none)."""
    assert 0 <= node_experts <= num_experts and 0 < top_k <= num_experts
    return 1.0 - math.comb(num_experts - node_experts, top_k) / math.comb(num_experts, top_k)


def deduplicated_alltoall_shares(
    members: Sequence[int],
    node_of: Callable[[int], int],
    *,
    num_experts: int,
    top_k: int,
) -> tuple[RingShare, ...]:
    """The flows of one token dispatch over ``members`` that crosses to each other node once
    per token, as DeepEP's internode kernels do (deepseek-ai/DeepEP, README "normal kernels":
    a token goes over RDMA once to each node holding one of its experts, to the GPU of the
    sender's own local rank, which forwards it over NVLink to the experts' GPUs).

    With ``S`` the per-member buffer (``N·k`` slots of ``N`` tokens) and ``n`` members, a
    member sends to a member on its own node its ``S/n``, as the all-to-all; to another node
    ``u`` it sends ``S/k · reach(u)`` once, to the member of ``u`` at its own position among
    its node's members (the relay), where ``reach(u)`` is :func:`node_reach` of the ``E/n``
    experts of each of ``u``'s members; the relay forwards ``S/n`` to each other member of
    ``u``. Shares are of the all-to-all's step bytes ``(n-1)/n · S``, as
    :func:`alltoall_shares`'.
    """
    n = len(members)
    assert n >= 2 and num_experts % n == 0, (n, num_experts)
    nodes: dict[int, list[int]] = {}
    for m in members:
        nodes.setdefault(node_of(m), []).append(m)
    per_pair = 1.0 / (n - 1)
    out: list[RingShare] = []
    for a in members:
        home = node_of(a)
        position = nodes[home].index(a)
        for u, peers in nodes.items():
            if u == home:
                out += [RingShare(a, b, per_pair) for b in peers if b != a]
                continue
            reach = node_reach(num_experts, top_k, num_experts // n * len(peers))
            relay = peers[position % len(peers)]
            out.append(RingShare(a, relay, reach * n / (top_k * (n - 1))))
            out += [RingShare(relay, b, per_pair) for b in peers if b != relay]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CollectiveTransfer:
    """One routed flow of a collective: ``size_bytes`` from ``src`` to ``dst`` over
    ``channels``, arriving ``latency_s`` after its last byte leaves (its route latency once per
    step of the collective)."""

    src: int
    dst: int
    size_bytes: float
    channels: tuple[int, ...]
    latency_s: float


def collective_transfers(
    kind: str,
    members: Sequence[int],
    size_bytes: float,
    route: Callable[[int, int], Route],
    node_of: Callable[[int], int] | None = None,
) -> tuple[CollectiveTransfer, ...]:
    """The routed flows of one collective of ``kind`` over ``members`` with per-member buffer
    ``size_bytes`` (the NCCL convention): ring shares (:func:`ring_shares`) or all-to-all
    pairs (:func:`alltoall_shares`), each ``share · steps/n · S`` bytes.

    Args:
        kind: a key of :data:`RING_STEPS`.
        members: the group's tiles, in ring (rank) order.
        size_bytes: ``S`` [B].
        route: the chip's ``route(src, dst)``.
        node_of: a GPU's node on a cluster (ring layout only); None for a wafer.
    """
    n = len(members)
    steps = RING_STEPS[kind](n)
    step_bytes = steps / n * size_bytes
    shares = alltoall_shares(members) if kind == "alltoall" else ring_shares(members, node_of)
    out = []
    for s in shares:
        r = route(s.src, s.dst)
        out.append(
            CollectiveTransfer(s.src, s.dst, s.share * step_bytes, r.channels, steps * r.latency_s)
        )
    return tuple(out)
