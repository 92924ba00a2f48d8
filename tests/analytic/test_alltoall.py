"""All-to-all at flow level on real chip graphs against its textbook cost.

The flows of :func:`palmsim.hardware.collectives.collective_transfers` run through the engine's
max-min fair flow network. Closed forms (``S`` bytes per member, ``n`` members, link bandwidth
``B`` per direction, ``alpha`` per hop):

- fully connected switch (NVSwitch): every member's link carries its own ``n-1`` flows of
  ``S/n``: ``(n-1)/n · S/B + (n-1)·alpha_route`` (Thakur et al. 2005, pairwise exchange);
- bidirectional ring of ``n`` (a 1 x n torus, shortest way, ties in the positive direction):
  the busiest direction carries ``sum_{d=1}^{D} d · S/n`` per link with ``D = (n-1)/2`` for odd
  ``n`` and ``n/2`` for even ``n``;
- ``k x k`` mesh with X-then-Y routing: the middle links carry ``(k/2)·(k/2)·k`` flows of
  ``S/n``, ``k·S/4`` bytes: the bisection bound ``(n/2)·(n/2)·(S/n) / (k·B)`` exactly;
- ``k x k`` torus: twice the bisection links, but the ties of distance ``k/2`` all go the
  positive way: ``(k+2)·S/(8B)`` against the bound ``k·S/(8B)``.

The last flow to arrive is one of the longest routes, paying ``(n-1)`` times its latency.
"""

from __future__ import annotations

import dataclasses

import pytest
import simpy

from palmsim.engine.flows import FlowNetwork
from palmsim.engine.records import FlowRecord, RecordBuilder
from palmsim.hardware.chip import Chip
from palmsim.hardware.collectives import alltoall_shares, collective_transfers
from tests.conftest import cluster_spec, wafer_spec

S_BYTES = 64e6
BW = 100e9
ALPHA_S = 5e-9


def _alltoall_time_s(chip: Chip, members: tuple[int, ...], node_of=None) -> float:
    env = simpy.Environment()
    net = FlowNetwork(
        env, [c.bandwidth_bytes_per_s for c in chip.channels], RecordBuilder(FlowRecord)
    )
    transfers = collective_transfers("alltoall", members, S_BYTES, chip.route, node_of)
    ends: list[float] = []

    def flow(t):
        yield net.transfer(
            t.channels, t.size_bytes, t.latency_s, category="ep_alltoall", src=t.src, dst=t.dst
        )
        ends.append(env.now)

    for t in transfers:
        env.process(flow(t))
    env.run()
    assert len(ends) == len(members) * (len(members) - 1)
    return max(ends)


def _grid(rows: int, cols: int, topology: str) -> Chip:
    return Chip.from_spec(
        wafer_spec(
            dies=(1, 1),
            tiles=(rows, cols),
            intra_bw=BW,
            latency_s=ALPHA_S,
            topology=topology,
            dram_placement="per_tile",
        )
    )


def test_alltoall_shares_send_s_over_n_to_every_other_member():
    shares = alltoall_shares((3, 5, 9))
    assert {(s.src, s.dst) for s in shares} == {(3, 5), (3, 9), (5, 3), (5, 9), (9, 3), (9, 5)}
    chip = _grid(1, 4, "mesh")
    transfers = collective_transfers("alltoall", (0, 1, 2, 3), S_BYTES, chip.route)
    assert [t.size_bytes for t in transfers] == [pytest.approx(S_BYTES / 4, rel=1e-12)] * 12
    sent = sum(t.size_bytes for t in transfers if t.src == 0)
    assert sent == pytest.approx(3 / 4 * S_BYTES, rel=1e-12)


def test_alltoall_on_a_switch_matches_the_pairwise_exchange_cost():
    """8 GPUs behind one NVSwitch (300 GB/s per GPU and direction, 1 us per hop)."""
    hw = cluster_spec(nodes=1, gpus=8)
    chip = Chip.from_spec(hw)
    n, bw = 8, hw.cluster.intra_node.bandwidth_bytes_per_s
    route_latency_s = chip.route(0, 1).latency_s
    assert route_latency_s == pytest.approx(2 * hw.cluster.intra_node.latency_s)
    expected = (n - 1) / n * S_BYTES / bw + (n - 1) * route_latency_s
    assert _alltoall_time_s(chip, tuple(range(n))) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [7, 8])
def test_alltoall_on_a_ring(n):
    chip = _grid(1, n, "torus")
    far = n // 2  # the longest shortest route
    reach = (n - 1) // 2 if n % 2 else n // 2
    busiest_link_bytes = sum(range(1, reach + 1)) * S_BYTES / n
    expected = busiest_link_bytes / BW + (n - 1) * far * ALPHA_S
    assert _alltoall_time_s(chip, tuple(range(n))) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [4, 6])
def test_alltoall_on_a_mesh_is_bisection_bound(k):
    chip = _grid(k, k, "mesh")
    n = k * k
    bisection_s = (n / 2) * (n / 2) * (S_BYTES / n) / (k * BW)
    assert bisection_s == pytest.approx(k * S_BYTES / (4 * BW))
    expected = bisection_s + (n - 1) * 2 * (k - 1) * ALPHA_S  # corner to corner is last
    assert _alltoall_time_s(chip, tuple(range(n))) == pytest.approx(expected, rel=1e-9)


def test_alltoall_on_a_torus_halves_the_mesh_time_but_for_the_ties():
    k = 6
    chip = _grid(k, k, "torus")
    n = k * k
    expected = (k + 2) * S_BYTES / (8 * BW) + (n - 1) * 2 * (k // 2) * ALPHA_S
    assert _alltoall_time_s(chip, tuple(range(n))) == pytest.approx(expected, rel=1e-9)
    assert expected > k * S_BYTES / (8 * BW)  # above the torus bisection bound


def test_alltoall_across_two_nodes_is_nic_bound():
    """2 nodes x 8 GPUs, NIC 25 GB/s: each GPU sends 8 flows of S/16 through its NIC (the
    flows to the other node) and 7 over NVLink; the NIC's 8·S/16 at 25 GB/s dominates."""
    hw = cluster_spec(nodes=2, gpus=8)
    chip = Chip.from_spec(hw)
    nic_bw = hw.cluster.inter_node.bandwidth_bytes_per_s
    n = 16
    inter_latency_s = chip.route(0, 8).latency_s
    expected = 8 * (S_BYTES / n) / nic_bw + (n - 1) * inter_latency_s
    assert _alltoall_time_s(chip, tuple(range(n))) == pytest.approx(expected, rel=1e-9)


def test_a_nic_runs_at_its_efficiency_of_line_rate():
    """system.node_link.efficiency e: each NIC channel carries e x its line rate, so the
    NIC-bound all-to-all above takes 8·S/16 / (e·B) + (n - 1)·alpha (Selene's 0.28)."""
    base = cluster_spec(nodes=2, gpus=8)
    assert base.cluster is not None
    hw = dataclasses.replace(
        base, cluster=dataclasses.replace(base.cluster, inter_node_efficiency=0.28)
    )
    chip = Chip.from_spec(hw)
    n = 16
    expected = 8 * (S_BYTES / n) / (0.28 * 25e9) + (n - 1) * chip.route(0, 8).latency_s
    assert _alltoall_time_s(chip, tuple(range(n))) == pytest.approx(expected, rel=1e-9)


def test_node_reach_is_the_hypergeometric_chance_of_a_hit():
    """A token's top-k distinct experts of E miss a node's E_u with probability
    C(E - E_u, k) / C(E, k): 28/120 for top-2 of 16 and a node of 8; about 0.3375 for
    DeepSeek-V3's top-8 of 256 and 32 experts a node (8 GPUs of an EP-64 group)."""
    from palmsim.hardware.collectives import node_reach

    assert node_reach(16, 2, 8) == pytest.approx(1 - 28 / 120)
    miss = 1.0
    for i in range(8):
        miss *= (224 - i) / (256 - i)
    assert node_reach(256, 8, 32) == pytest.approx(1 - miss)
    assert node_reach(8, 2, 0) == 0.0 and node_reach(8, 2, 8) == 1.0


def test_deepep_dispatch_crosses_the_nic_once_per_token_and_node():
    """2 nodes x 8 GPUs, NIC 25 GB/s, top-2 of 16 experts (one a GPU): DeepEP's dispatch sends
    a GPU's tokens that reach the other node once over its NIC, S/k · (1 - 28/120) bytes, to
    the GPU of its own local rank there, which forwards S/16 to each of its 7 peers over
    NVLink; the all-to-all sends 8·S/16 over the NIC. NIC-bound, the dispatch takes
    S/k·reach/B_nic + (n - 1)·alpha, (1 - 28/120)·16/(2·8) = 0.767 of the all-to-all's bytes."""
    from palmsim.hardware.collectives import deduplicated_alltoall_shares

    hw = cluster_spec(nodes=2, gpus=8)
    chip = Chip.from_spec(hw)
    nic_bw = hw.cluster.inter_node.bandwidth_bytes_per_s
    n, k = 16, 2
    members = tuple(range(n))
    shares = deduplicated_alltoall_shares(members, chip.die_of, num_experts=16, top_k=k)
    step_bytes = (n - 1) / n * S_BYTES
    crossing = [s for s in shares if chip.die_of(s.src) != chip.die_of(s.dst)]
    assert len(crossing) == n  # one flow a GPU, to its own local rank's GPU
    assert {(s.src % 8, s.dst % 8) for s in crossing} == {(i, i) for i in range(8)}
    reach = 1 - 28 / 120
    assert [s.share * step_bytes for s in crossing] == pytest.approx(
        [S_BYTES / k * reach] * n, rel=1e-12
    )
    env = simpy.Environment()
    net = FlowNetwork(
        env, [c.bandwidth_bytes_per_s for c in chip.channels], RecordBuilder(FlowRecord)
    )
    ends: list[float] = []

    def flow(src, dst, size):
        r = chip.route(src, dst)
        yield net.transfer(r.channels, size, r.latency_s * (n - 1), category="ep", src=src, dst=dst)
        ends.append(env.now)

    for s in shares:
        env.process(flow(s.src, s.dst, s.share * step_bytes))
    env.run()
    expected = S_BYTES / k * reach / nic_bw + (n - 1) * chip.route(0, 8).latency_s
    assert max(ends) == pytest.approx(expected, rel=1e-9)
