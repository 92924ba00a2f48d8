"""When the data-parallel replicas of a GPU-cluster run are provably symmetric, and how one
replica then stands in for all of them.

On a GPU cluster every channel belongs to exactly one GPU: its NVLink to and from the node's
NVSwitch, its NIC to and from the non-blocking fabric, and its HBM port
(:class:`palmsim.hardware.topology.GpuClusterTopology`). Map every GPU of replica ``r`` to the
GPU of replica 0 that holds the same stage and TP rank, and every channel to the channel of
the same kind and direction of that GPU (its *image*). If

1. every channel of a kind has the same bandwidth and latency,
2. every transfer a replica makes inside itself (TP ring edges, pipeline sends both ways,
   HBM traffic) has as image exactly the route replica 0 uses for the same transfer, and
3. every edge of every data-parallel ring has the same image (all cross the same kind of
   link: NVLink or the NICs),

then the full simulation is invariant under the replica permutation: each replica does the
same work at the same times, and each channel carries at every instant the image of what
replica 0's channel carries. Replica 0 alone then reproduces it exactly, provided its DP ring
flows keep their contention: the flow from replica 0's GPU to its ring successor goes out over
its own out-channel and in over the *image* of the successor's in-channel, which is replica
0's own in-channel. That is where, in the full run, the flow from its ring predecessor, an
identical flow by symmetry, arrives. Every channel replica 0 uses thus carries the same flows
as in the full run, and the iteration time, replica 0's records and the per-channel loads are
the full run's.

A wafer is never reduced: its NoC links and DRAM ports are shared between tiles of different
replicas, so there is no such channel image.
"""

from __future__ import annotations

from palmsim.hardware.chip import Chip

__all__ = ["symmetric_dp_ring_channels"]

StageTiles = tuple[tuple[tuple[int, ...], ...], ...]


def symmetric_dp_ring_channels(
    chip: Chip, stage_tiles: StageTiles, *, num_virtual_stages: int
) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
    """The DP ring flow channels of replica 0's GPUs if the replicas are symmetric, else None.

    Returns ``(gpu, channels)`` for every GPU of replica 0, sorted by GPU: the channels of its
    data-parallel ring flow in the reduced run (see the module docstring). None when the
    chip is not a GPU cluster, there is one replica, or any of conditions 1-3 fails; then
    every GPU must be simulated.

    Args:
        chip: the machine.
        stage_tiles: ``stage_tiles[replica][stage]`` = the stage replica's GPUs in TP order.
        num_virtual_stages: ``p·v``; with ``v > 1`` the last stage also sends to the first.
    """
    if chip.spec.kind != "gpu_cluster" or len(stage_tiles) < 2:
        return None
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
    replica0 = stage_tiles[0]
    representative = {
        t: replica0[s][k]
        for replica in stage_tiles
        for s, tiles in enumerate(replica)
        for k, t in enumerate(tiles)
    }

    def image(route_channels: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(
            channel_of[representative[owner[c][0]], channels[c].kind, owner[c][1]]
            for c in route_channels
        )

    # 2. transfers inside a replica: TP ring edges, pipeline sends and HBM traffic
    num_stages = len(replica0)
    for replica in stage_tiles:
        pairs: list[tuple[int, int]] = []
        for s, tiles in enumerate(replica):
            n = len(tiles)
            pairs += [(tiles[i], tiles[(i + 1) % n]) for i in range(n) if n > 1]
            # the next stage; with interleaving the last stage also feeds the first
            following = s + 1 if s + 1 < num_stages else 0
            if following != s and (following > s or num_virtual_stages > num_stages):
                for a, b in zip(tiles, replica[following], strict=True):
                    pairs += [(a, b), (b, a)]
            for t in tiles:
                port = chip.home_dram_port(t)
                for write in (False, True):
                    own = chip.dram_route(t, port, write=write).channels
                    rep = representative[t]
                    rep_route = chip.dram_route(rep, chip.home_dram_port(rep), write=write)
                    if image(own) != rep_route.channels:
                        return None
        for a, b in pairs:
            rep_route = chip.route(representative[a], representative[b])
            if image(chip.route(a, b).channels) != rep_route.channels:
                return None
    # 3. every edge of each DP ring has the same image; that image is replica 0's ring flow
    ring_channels: list[tuple[int, tuple[int, ...]]] = []
    n = len(stage_tiles)
    for s, tiles in enumerate(replica0):
        for k, gpu in enumerate(tiles):
            group = [replica[s][k] for replica in stage_tiles]
            images = {image(chip.route(group[r], group[(r + 1) % n]).channels) for r in range(n)}
            if len(images) != 1:
                return None
            ring_channels.append((gpu, images.pop()))
    return tuple(sorted(ring_channels))
