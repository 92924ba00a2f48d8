"""Flow-level max-min fair sharing: micro-scenarios with hand-computed timelines.

Bandwidths are 1 GB/s and sizes 1 GB so the expected times are small integers of seconds.
Every test runs twice: on palmsim/engine/flownet.py as plain Python and on its compiled build
(palmsim.engine.flownet_c, which the install builds; without it this module fails to import).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType

import pytest
import simpy

from palmsim.engine import flownet, flownet_c
from palmsim.engine.flows import FlowNetwork, LastOf
from palmsim.engine.records import FlowRecord, RecordBuilder

GBPS = 1e9
GB = 1e9


@pytest.fixture(autouse=True, params=[flownet, flownet_c], ids=["python", "compiled"])
def implementation(request, monkeypatch) -> ModuleType:
    """The build of the flow network this test runs on, as FlowNetwork and LastOf here."""
    module = request.param
    monkeypatch.setattr(sys.modules[__name__], "FlowNetwork", module.FlowNetwork)
    monkeypatch.setattr(sys.modules[__name__], "LastOf", module.LastOf)
    return module


class _Recorded(Sequence[FlowRecord]):
    """The flow records the network has appended so far, read as FlowRecords."""

    def __init__(self) -> None:
        self.builder = RecordBuilder(FlowRecord)

    def _now(self) -> list[FlowRecord]:
        # a list, so no view of the columns outlives the call (the columns grow on)
        return list(self.builder.build())

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._now()[index]

    def __len__(self) -> int:
        return len(self._now())


def _net(capacities: list[float]) -> tuple[simpy.Environment, FlowNetwork, _Recorded]:
    env = simpy.Environment()
    records = _Recorded()
    return env, FlowNetwork(env, capacities, records.builder), records


def _start(env, net, log, name, at_s, channels, size_bytes, latency_s=0.0, cap=float("inf")):
    def proc():
        yield env.timeout(at_s)
        yield net.transfer(
            channels, size_bytes, latency_s, category="p2p", src=0, dst=1, cap_bytes_per_s=cap
        )
        log.append((name, env.now))

    env.process(proc())


def test_single_transfer_is_latency_plus_size_over_bandwidth():
    """One flow over three hops: 3 x 1 ns latency + 1 GB / 1 GB/s."""
    env, net, records = _net([GBPS, GBPS, GBPS])
    log: list = []
    _start(env, net, log, "a", 0.0, (0, 1, 2), GB, latency_s=3e-9)
    env.run()
    assert log == [("a", pytest.approx(1.0 + 3e-9, rel=1e-12))]
    assert records[0].size_bytes == GB and records[0].channels == (0, 1, 2)


def test_two_flows_sharing_a_link_take_twice_as_long():
    """Two equal flows on one link each get half the bandwidth and end together at 2 s."""
    env, net, _ = _net([GBPS])
    log: list = []
    _start(env, net, log, "a", 0.0, (0,), GB)
    _start(env, net, log, "b", 0.0, (0,), GB)
    env.run()
    assert [t for _, t in log] == [pytest.approx(2.0, rel=1e-12)] * 2


def test_flows_on_disjoint_links_do_not_slow_each_other():
    env, net, _ = _net([GBPS, GBPS])
    log: list = []
    _start(env, net, log, "a", 0.0, (0,), GB)
    _start(env, net, log, "b", 0.0, (1,), GB)
    env.run()
    assert [t for _, t in log] == [pytest.approx(1.0, rel=1e-12)] * 2


def test_rates_are_recomputed_when_a_flow_starts_and_ends():
    """a (1 GB) alone until 0.5 s (0.5 GB left), then shares with b (1 GB) at 0.5 GB/s each:
    a ends at 1.5 s; b has 0.5 GB left and finishes alone at full rate at 2.0 s."""
    env, net, _ = _net([GBPS])
    log: list = []
    _start(env, net, log, "a", 0.0, (0,), GB)
    _start(env, net, log, "b", 0.5, (0,), GB)
    env.run()
    assert log == [("a", pytest.approx(1.5, rel=1e-12)), ("b", pytest.approx(2.0, rel=1e-12))]


def test_max_min_fairness_gives_unused_share_to_others():
    """Link 0 (1 GB/s) carries a and b; link 1 (0.25 GB/s) carries b and c.
    Progressive filling: link 1 saturates first at 0.125 GB/s for b and c; a gets the rest of
    link 0, 0.875 GB/s. Sizes: a 0.875 GB -> 1 s; c 0.125 GB -> 1 s; b 0.25 GB: 0.125 GB by
    1 s, then alone on link 1 at 0.25 GB/s -> 0.5 s more, ends at 1.5 s."""
    env, net, _ = _net([GBPS, 0.25 * GBPS])
    log: list = []
    _start(env, net, log, "a", 0.0, (0,), 0.875 * GB)
    _start(env, net, log, "b", 0.0, (0, 1), 0.25 * GB)
    _start(env, net, log, "c", 0.0, (1,), 0.125 * GB)
    env.run()
    times = dict(log)
    assert times["a"] == pytest.approx(1.0, rel=1e-12)
    assert times["c"] == pytest.approx(1.0, rel=1e-12)
    assert times["b"] == pytest.approx(1.5, rel=1e-12)


def test_a_capped_flow_alone_runs_at_its_cap():
    """1 GB capped at 0.4 GB/s over a 1 GB/s link: 2.5 s; a cap above the link's rate: 1 s."""
    env, net, _ = _net([GBPS, GBPS])
    log: list = []
    _start(env, net, log, "a", 0.0, (0,), GB, cap=0.4 * GBPS)
    _start(env, net, log, "b", 0.0, (1,), GB, cap=3 * GBPS)
    env.run()
    assert dict(log) == {"a": pytest.approx(2.5, rel=1e-12), "b": pytest.approx(1.0, rel=1e-12)}


def test_a_capped_flow_leaves_the_rest_of_its_link_to_the_others():
    """a capped at 0.2 GB/s and b uncapped share a 1 GB/s link: the filling freezes a at its
    cap (below the fair 0.5) and gives b the other 0.8 GB/s. a 0.4 GB -> 2 s; b 1.6 GB ->
    2 s. A cap above the fair share changes nothing: two flows at 0.5 GB/s, 1 GB each, 2 s."""
    env, net, _ = _net([GBPS])
    log: list = []
    _start(env, net, log, "a", 0.0, (0,), 0.4 * GB, cap=0.2 * GBPS)
    _start(env, net, log, "b", 0.0, (0,), 1.6 * GB)
    env.run()
    assert dict(log) == {"a": pytest.approx(2.0, rel=1e-12), "b": pytest.approx(2.0, rel=1e-12)}
    env, net, _ = _net([GBPS])
    log = []
    _start(env, net, log, "a", 0.0, (0,), GB, cap=0.7 * GBPS)
    _start(env, net, log, "b", 0.0, (0,), GB)
    env.run()
    assert [t for _, t in log] == [pytest.approx(2.0, rel=1e-12)] * 2


def test_empty_route_and_zero_bytes_cost_only_latency():
    env, net, records = _net([GBPS])
    log: list = []
    _start(env, net, log, "local", 0.0, (), GB, latency_s=1e-6)
    _start(env, net, log, "empty", 0.0, (0,), 0.0, latency_s=2e-6)
    env.run()
    assert dict(log) == {"local": pytest.approx(1e-6), "empty": pytest.approx(2e-6)}
    assert len(records) == 2


def test_bytes_are_conserved_in_records():
    env, net, records = _net([GBPS, GBPS])
    log: list = []
    for i in range(5):
        _start(env, net, log, f"f{i}", 0.1 * i, (i % 2,), (i + 1) * 0.1 * GB)
    env.run()
    assert sum(r.size_bytes for r in records) == pytest.approx(1.5 * GB, rel=1e-12)
    assert net.num_active == 0


def test_flows_started_at_one_instant_share_in_closed_form():
    """Four flows of 1, 2, 3 and 4 GB start together on one 1 GB/s link. Rates are computed
    once for the instant, not once per start, and the shares are max-min: 0.25 GB/s each until
    the 1 GB flow ends at 4 s; then 1/3 GB/s each, the 2 GB flow's last 1 GB takes 3 s (7 s);
    then 0.5 GB/s, the 3 GB flow's last 1 GB takes 2 s (9 s); the 4 GB flow's last 1 GB runs
    alone at 1 GB/s (10 s)."""
    env, net, records = _net([GBPS])
    log: list = []
    for i in range(4):
        _start(env, net, log, f"f{i + 1}", 0.0, (0,), (i + 1) * GB)
    env.run()
    expected = [("f1", 4.0), ("f2", 7.0), ("f3", 9.0), ("f4", 10.0)]
    assert log == [(name, pytest.approx(t, rel=1e-12)) for name, t in expected]
    assert [r.end_s for r in records] == [pytest.approx(t, rel=1e-12) for _, t in expected]


def test_same_instant_burst_on_a_shared_link_and_private_links():
    """Eight flows start at 1 s, each on its own 1 GB/s link plus a shared 2 GB/s link: the
    shared link is the bottleneck at 0.25 GB/s each, so 0.5 GB takes 2 s and all end at 3 s,
    recorded in flow-id order."""
    env, net, records = _net([2 * GBPS] + [GBPS] * 8)
    log: list = []
    for i in range(8):
        _start(env, net, log, f"f{i}", 1.0, (0, i + 1), 0.5 * GB)
    env.run()
    assert [t for _, t in log] == [pytest.approx(3.0, rel=1e-12)] * 8
    assert [r.flow_id for r in records] == sorted(r.flow_id for r in records)
    assert net.num_active == 0


@pytest.mark.parametrize("start_before_timer", [True, False])
def test_flow_starting_at_the_instant_another_ends(start_before_timer):
    """a (1 GB, 1 GB/s) ends at 1 s; b (1 GB) starts on the same link at 1 s. Whichever SimPy
    processes first at 1 s, b's start or a's completion timer, a still ends at 1 s (it has no
    bytes left) and b then runs alone at the full rate, ending at 2 s."""
    env, net, _ = _net([GBPS])
    log: list = []

    def late_start():
        if start_before_timer:  # this timeout exists before the network's timer for 1 s
            yield env.timeout(1.0)
        else:  # this one is created after it, at 0.5 s
            yield env.timeout(0.5)
            yield env.timeout(0.5)
        yield net.transfer((0,), GB, 0.0, category="p2p", src=0, dst=1)
        log.append(("b", env.now))

    env.process(late_start())
    _start(env, net, log, "a", 0.0, (0,), GB)
    env.run()
    assert log == [("a", pytest.approx(1.0, rel=1e-12)), ("b", pytest.approx(2.0, rel=1e-12))]


def _count_fillings(implementation, monkeypatch) -> list[int]:
    """The sizes of the flow sets the flow network recomputes by progressive filling, as it
    runs."""
    calls: list[int] = []
    filling = implementation._progressive_filling

    def counting(flows, capacity):
        calls.append(len(flows))
        filling(flows, capacity)

    monkeypatch.setattr(implementation, "_progressive_filling", counting)
    return calls


def test_rates_of_an_instant_are_computed_once_per_component(implementation, monkeypatch):
    """Sixteen flows start at one instant in two components (eight on link 0, eight on link
    1): one flush recomputes each component once, however many flows started."""
    env, net, _ = _net([GBPS, GBPS])
    log: list = []
    calls = _count_fillings(implementation, monkeypatch)
    for i in range(16):
        _start(env, net, log, f"f{i}", 0.0, (i % 2,), GB)
    env.run()
    assert calls == [8, 8]
    assert [t for _, t in log] == [pytest.approx(8.0, rel=1e-12)] * 16


def test_a_component_seen_before_reuses_its_rates(implementation, monkeypatch):
    """Two 1 GB flows share link 0 from 0 s (0.5 GB/s each, both end at 2 s), and again from
    3 s (both end at 5 s): the second pair is the same structure, so its rates come from the
    first filling, and the times are the same as computing them again."""
    env, net, _ = _net([GBPS])
    log: list = []
    calls = _count_fillings(implementation, monkeypatch)
    for name, at_s in (("a", 0.0), ("b", 0.0), ("c", 3.0), ("d", 3.0)):
        _start(env, net, log, name, at_s, (0,), GB)
    env.run()
    assert calls == [2]
    assert log == [
        ("a", pytest.approx(2.0, rel=1e-12)),
        ("b", pytest.approx(2.0, rel=1e-12)),
        ("c", pytest.approx(5.0, rel=1e-12)),
        ("d", pytest.approx(5.0, rel=1e-12)),
    ]


def test_finished_flows_leave_no_reference_cycle(implementation):
    """The engine runs with the cyclic collector paused (records.gc_paused), so a finished
    flow must be freed by reference counting alone. Two flows share link 0 (one component, one
    group), a third runs alone: once all have finished and the network is dropped, the cyclic
    collector finds no flow among the garbage."""
    import gc

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        env, net, _ = _net([GBPS, GBPS])
        log: list = []
        _start(env, net, log, "a", 0.0, (0,), GB)
        _start(env, net, log, "b", 0.0, (0,), 2 * GB)
        _start(env, net, log, "c", 0.0, (1,), GB)
        env.run()
        # c alone: 1 s; a and b at 0.5 GB/s each until a ends at 2 s, then b alone: 3 s
        assert log == [
            ("c", pytest.approx(1.0, rel=1e-12)),
            ("a", pytest.approx(2.0, rel=1e-12)),
            ("b", pytest.approx(3.0, rel=1e-12)),
        ]
        del env, net
        gc.collect()
        leaked = [
            o for o in gc.garbage if isinstance(o, implementation._Flow | implementation._Group)
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
    assert leaked == []


@pytest.mark.parametrize(("size_gb", "resume_s"), [(1, 2.0), (2, 2.0), (3, 3.0)])
def test_a_step_waits_for_its_compute_time_and_its_flow_through_one_event(size_gb, resume_s):
    """A compute step of 2 s with one DRAM flow of ``size_gb`` GB at 1 GB/s, joined in a
    LastOf: a 1 GB flow arrives at 1 s, a 2 GB flow at 2 s and a 3 GB one at 3 s, so the step
    resumes at 2, 2 and 3 s, as when it yields a timeout and then the flow's own event, with
    one SimPy event less (the join's replaces both)."""

    def run(joined):
        env, net, records = _net([GBPS])
        log: list = []

        def step():
            if joined:
                last = LastOf(env, 2)
                last.add(2.0)
                yield net.transfer((0,), size_gb * GB, 0.0, category="dram", src=-1, dst=0,
                                   join=last)  # fmt: skip
            else:
                compute = env.timeout(2.0)
                done = net.transfer((0,), size_gb * GB, 0.0, category="dram", src=-1, dst=0)
                yield compute
                yield done
            log.append(env.now)

        env.process(step())
        events = 0
        while env.peek() < float("inf"):
            env.step()
            events += 1
        assert records[0].end_s == pytest.approx(size_gb, rel=1e-12)
        return log, events

    log, events = run(joined=True)
    plain_log, plain_events = run(joined=False)
    assert log == plain_log == [pytest.approx(resume_s, rel=1e-12)]
    assert plain_events - events == 1


def test_last_of_is_processed_where_its_last_event_would_be():
    """Events at one instant are processed in the order they were scheduled. A LastOf of a
    key taken at 1 s after ``a`` and one at 0.5 s after ``b`` is processed where the 1 s
    event would be, between ``a`` and ``b``; with a second key at 1 s taken after ``b``, it
    comes after ``b`` and before ``c``."""

    def order(second_delay_s):
        env = simpy.Environment()
        log: list = []
        for name, delay_s in (("a", 1.0), ("last", None), ("b", 1.0), ("second", None)):
            if name == "last":
                last = LastOf(env, 2)
                last.callbacks.append(lambda _e: log.append(("last", env.now)))
                last.add(1.0)
            elif name == "second":
                last.add(second_delay_s)
            else:
                event = env.timeout(delay_s)
                event.callbacks.append(lambda _e, name=name: log.append((name, env.now)))
        env.timeout(1.0).callbacks.append(lambda _e: log.append(("c", env.now)))
        env.run()
        return log

    assert order(0.5) == [("a", 1.0), ("last", 1.0), ("b", 1.0), ("c", 1.0)]
    assert order(1.0) == [("a", 1.0), ("b", 1.0), ("last", 1.0), ("c", 1.0)]


def test_gc_frozen_hides_what_exists_and_collects_what_the_block_makes():
    """records.gc_frozen: objects alive at entry are frozen (never scanned) until exit; a
    reference cycle made inside the block is still collected; a caller's own freeze is left
    alone."""
    import gc

    from palmsim.engine.records import gc_frozen

    assert gc.get_freeze_count() == 0
    before = [[] for _ in range(1000)]  # tracked containers alive at entry
    with gc_frozen():
        assert gc.get_freeze_count() >= len(before)
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # the block's own cycle is found and freed
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        # made after the caller's freeze: a second freeze would take these 1000 in too. The
        # count may fall meanwhile (a frozen object freed), so it is compared with margins.
        after = [[] for _ in range(1000)]
        with gc_frozen():
            assert gc.get_freeze_count() < frozen + len(after)  # not frozen again
        assert gc.get_freeze_count() > frozen - len(after)  # not unfrozen by gc_frozen
    finally:
        gc.unfreeze()
    del before, after
