"""Pure structure of ring collectives: which member sends how much to which, at flow level.

A ring collective of ``n`` members over a buffer of ``S`` bytes runs ``steps`` pipelined
steps (all-reduce ``2(n-1)``, reduce-scatter and all-gather ``n-1``), and each ring edge
carries ``steps/n · S`` bytes in all (Patarasuk & Yuan, "Bandwidth optimal all-reduce
algorithms for clusters of workstations", JPDC 2009; nccl-tests doc/PERFORMANCE.md). palmsim
moves that as one flow per edge, paying the edge's route latency once per step.

Two layouts:

- **flat ring** (one node, one member per node, unequal members per node, or any wafer
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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["RING_STEPS", "RingShare", "ring_shares"]

#: Pipelined steps of each ring collective kind for ``n`` members (Patarasuk & Yuan 2009).
RING_STEPS: dict[str, Callable[[int], int]] = {
    "allreduce": lambda n: 2 * (n - 1),
    "reducescatter": lambda n: n - 1,
    "allgather": lambda n: n - 1,
}


@dataclass(frozen=True, slots=True)
class RingShare:
    """``src`` sends ``share`` of a ring edge's bytes (``steps/n · S``) to ``dst``."""

    src: int
    dst: int
    share: float


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
            direction's bytes; on a line the two closing edges load it as one ring does.
    """
    n = len(members)
    assert n >= 2, f"a ring needs two members, got {list(members)}"
    flat = tuple(RingShare(members[i], members[(i + 1) % n], 1.0) for i in range(n))
    if node_of is None:
        if bidirectional and n > 2:
            return tuple(RingShare(s.src, s.dst, 0.5) for s in flat) + tuple(
                RingShare(members[i], members[i - 1], 0.5) for i in range(n)
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
            out.append(RingShare(t, local[(i + 1) % g], (g - 1) / g))
            out.append(RingShare(t, following[i], 1 / g))
    return tuple(out)
