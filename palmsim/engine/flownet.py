"""Flow-level network model: concurrent flows share channel bandwidth max-min fairly.

A *channel* is one direction of a NoC link, one direction of an NVLink or NIC, or one DRAM
port; each has a capacity in bytes/s. A *flow* moves a number of bytes over a fixed list of
channels. At every instant each flow gets its max-min fair rate (progressive filling, Bertsekas
& Gallager, *Data Networks*, 2nd ed., Sec. 6.5.2): rates are raised together until some
channel saturates, the flows through it are frozen at that rate, and so on. Whenever a flow
starts or finishes, the rates of the flows it shares channels with (its connected component)
are recomputed and their completion times moved. A transfer never holds a path as a lock.

Flows start and finish in bursts at the same simulated instant (a tensor-parallel group's
tiles all start their DRAM traffic together), so the recomputation is deferred to the end of
the instant: starts and completions only note the flows they touch, and one *flush* per
instant recomputes each touched component once. This is exact, not an approximation: max-min
rates depend only on the set of active flows, and no bytes move between two recomputations at
the same instant (``rate * (now - updated) = 0``), so a component's rates and completion times
after the flush are those of recomputing it after every change. The flush is a SimPy event of
lower priority than any other at the instant, and a completion timer flushes before judging
which flows are complete, so no rate is ever read stale.

A flow may also have a rate of its own it never exceeds (``cap_bytes_per_s``: what its
sender can put onto the network), a channel of that capacity only it uses: it freezes at
that rate when the filling reaches it. A flow's bytes arrive ``latency_s`` after it drains
(the path's per-hop latencies), so a lone flow of S bytes over channels of bandwidth B takes
``latency_s + S / min(B, cap)``. A waiter that needs
only the last of several arrivals (a compute step's DRAM flows, a collective's flows) joins
them in a :class:`LastOf`: one SimPy event, where the last arrival's would be processed.

This file is plain Python and also the source of a compiled build of itself: Cython compiles
it, with the C types of ``flownet_c.pxd``, into :mod:`palmsim.engine.flownet_c`
(``setup.py``). The engine imports the network from :mod:`palmsim.engine.flows`, which picks
the build. The annotations of locals (``f: _Flow``, ``now: float``) are what let Cython use
C fields and doubles; Python ignores them.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import simpy

if TYPE_CHECKING:
    from palmsim.engine.records import FlowRecord, RecordBuilder

__all__ = ["FlowNetwork", "LastOf", "trigger_in"]

# Flows whose computed completion lies within this many seconds of "now" are complete:
# absorbs floating-point rounding of remaining/rate (1e-15 s is far below any modelled latency).
_TIME_EPS_S = 1e-15
_INF = float("inf")

# Flows finishing at one timer are handled by (finish time, flow id), as a per-flow heap would
# pop them.
_completion_order = operator.attrgetter("finish_s", "flow_id")

# SimPy processes same-time events by (priority, insertion order), URGENT = 0 and NORMAL = 1;
# the flush runs after every one of them at its instant, however late it was scheduled.
_FLUSH_PRIORITY = simpy.events.EventPriority(2)
_NORMAL = simpy.events.NORMAL

# Component structures whose max-min rates are kept (W1 has 694 distinct ones in 68,168
# recomputations); the table starts over when full, so it stays a few MB in any run.
_MAX_CACHED_RATES = 4096


def trigger_in(event: simpy.Event, delay_s: float) -> None:
    """Trigger ``event`` (successfully, value None) ``delay_s`` from now, as
    :class:`simpy.Timeout` schedules itself in its constructor: one event, no timer."""
    event._ok = True
    event._value = None
    event.env.schedule(event, delay=delay_s)


class LastOf(simpy.Event):
    """An event processed exactly where the last of ``count`` events would be, for a waiter
    that needs only the last of them: none of the others has to exist.

    SimPy processes events in the order of their key (time, priority, insertion number); an
    event scheduled ``delay_s`` from now gets the key (now + delay_s, NORMAL, the next number
    of the environment's counter) (``Environment.schedule``). :meth:`add` takes that key as
    scheduling the event would, without making it; when the ``count``-th key is in, this
    event is pushed onto the queue under the greatest. A waiter that yielded the events one
    after the other (each resumes it at once when already processed) resumed where the
    greatest key was processed; it resumes there now, and every other event keeps its key,
    so the order of everything is unchanged. The greatest key always lies ahead: each key is
    at or after the time it is taken, with a fresh insertion number.

    Uses SimPy's ``Environment._queue`` and ``_eid`` (what ``schedule`` does, simpy 4).
    """

    __slots__ = ("_eid", "_pending", "_time_s")

    def __init__(self, env: simpy.Environment, count: int) -> None:
        assert count > 0, "nothing to wait for"
        super().__init__(env)
        self._pending = count
        self._time_s = -_INF
        self._eid = -1

    def add(self, delay_s: float) -> None:
        """One of the events, as if scheduled now ``delay_s`` ahead with NORMAL priority."""
        env = self.env
        time_s = env._now + delay_s
        eid = next(env._eid)  # type: ignore[attr-defined]
        if time_s >= self._time_s:  # at the same time, the later insertion is later
            self._time_s = time_s
            self._eid = eid
        self._pending -= 1
        if not self._pending:
            self._ok = True
            self._value = None
            heapq.heappush(env._queue, (self._time_s, _NORMAL, self._eid, self))  # type: ignore[attr-defined]


class _Arrival(simpy.Event):
    """A flow's completion event; it fires a given delay after the flow drains.

    One event per flow instead of a pending event plus a latency timeout: :meth:`_drained`
    triggers it and schedules it ``latency_s`` ahead, exactly as :class:`simpy.Timeout` does in
    its constructor.
    """


class _Flow:
    """One flow: its path and size, and its progress since its rate was last set."""

    __slots__ = (
        "cap_bytes_per_s",
        "channels",
        "done",
        "finish_s",
        "flow_id",
        "group",
        "key",
        "latency_s",
        "meta",
        "rate_bytes_per_s",
        "remaining_bytes",
        "size_bytes",
        "stamp",
        "start_s",
        "updated_s",
    )

    def __init__(
        self,
        flow_id: int,
        channels: tuple[int, ...],
        size_bytes: float,
        latency_s: float,
        start_s: float,
        done: simpy.Event,
        meta: tuple[str, int, int, int, int],
        cap_bytes_per_s: float,
    ) -> None:
        self.flow_id = flow_id
        self.channels = channels
        self.cap_bytes_per_s = cap_bytes_per_s
        # what its max-min rate depends on (FlowNetwork._flush's cache key)
        self.key = channels if cap_bytes_per_s == _INF else (channels, cap_bytes_per_s)
        self.size_bytes = size_bytes
        self.latency_s = latency_s
        self.start_s = start_s
        self.done = done  # its own event (an _Arrival), or the join it arrives in (a LastOf)
        self.meta = meta  # category, src, dst, stage, microbatch
        self.remaining_bytes = size_bytes
        self.rate_bytes_per_s = 0.0
        self.updated_s = start_s
        self.finish_s = _INF
        self.group: _Group | None = None  # the component it was last given rates in
        self.stamp = 0  # the flush that last reached it in a component search


class _Group:
    """The flows of one component as recomputed at one flush: one completion-heap entry.

    A group stays *current* until one of its flows is recomputed again or its heap entry is
    taken by a completion timer. Both happen to all of its still-active flows at once: a
    component is recomputed as a whole, and when some of its flows finish, the rest are
    connected to their neighbours and so are recomputed at the next flush.
    """

    __slots__ = ("flows", "is_current")

    def __init__(self, flows: list[_Flow]) -> None:
        self.flows = flows
        self.is_current = True


def _progressive_filling(flows: list[_Flow], capacity: list[float]) -> None:
    """Set each flow's max-min fair rate (water-filling over the channels they use, of
    ``capacity`` bytes/s each, and each flow's own cap)."""
    f: _Flow
    share: float
    unfrozen_on: dict[int, int] = {}
    for f in flows:
        for c in f.channels:
            unfrozen_on[c] = unfrozen_on.get(c, 0) + 1
    residual: dict[int, float] | None = None  # every channel's capacity until a flow freezes
    unfrozen = flows
    while True:
        # The tightest channel, or flow cap, fixes the rate of every unfrozen flow through
        # it. Those within a relative 1e-12 of it (floating-point rounding of equal shares)
        # are tight too, so equal shares freeze together and the order stays deterministic.
        if residual is None:
            fair = {c: capacity[c] / n for c, n in unfrozen_on.items()}
        else:
            fair = {c: residual[c] / n for c, n in unfrozen_on.items() if n > 0}
        share = min(fair.values())
        for f in unfrozen:
            if f.cap_bytes_per_s < share:
                share = f.cap_bytes_per_s
        tight = share * (1 + 1e-12)
        bottlenecks = {c for c, rate in fair.items() if rate <= tight}
        still = [
            f for f in unfrozen if bottlenecks.isdisjoint(f.channels) and f.cap_bytes_per_s > tight
        ]
        for f in unfrozen:  # the flows still unfrozen get their rate in a later round
            f.rate_bytes_per_s = share
        if not still:  # most components: every flow freezes in the first round
            return
        if residual is None:
            residual = {c: capacity[c] for c in unfrozen_on}
        for f in unfrozen:
            if not bottlenecks.isdisjoint(f.channels) or f.cap_bytes_per_s <= tight:
                for c in f.channels:
                    residual[c] -= share
                    unfrozen_on[c] -= 1
        unfrozen = still


class FlowNetwork:
    """Max-min fair bandwidth sharing among flows over capacity-limited channels.

    Runtime object: create one per simulation run.
    """

    def __init__(
        self,
        env: simpy.Environment,
        capacities_bytes_per_s: Sequence[float],
        records: RecordBuilder[FlowRecord],
    ) -> None:
        """Each flow's :class:`~palmsim.engine.records.FlowRecord` goes to ``records`` when
        the flow drains."""
        self.env = env
        self._capacity = list(capacities_bytes_per_s)
        self._append = records.append
        self._code = records.code
        self._flows_on: list[dict[int, _Flow]] = [{} for _ in self._capacity]
        # (earliest finish of the group's flows, unique sequence number, group)
        self._heap: list[tuple[float, int, _Group]] = []
        self._next_id = 0
        self._num_groups = 0
        self._timer_at = float("inf")
        self._touched: list[_Flow] = []  # flows whose component changed since the last flush
        self._flush_pending = False
        self._num_flushes = 0
        self._channel_stamp = [0] * len(self._capacity)  # the flush that last visited it
        # each component's flows' channels -> their max-min rates (see _flush)
        self._fair_rates: dict[tuple[object, ...], list[float]] = {}
        self.num_active = 0

    # ------------------------------------------------------------------ public

    def transfer(
        self,
        channels: tuple[int, ...],
        size_bytes: float,
        latency_s: float,
        *,
        category: str,
        src: int,
        dst: int,
        stage: int = -1,
        microbatch: int = -1,
        join: LastOf | None = None,
        cap_bytes_per_s: float = _INF,
    ) -> simpy.Event:
        """Start a flow now; return an event that fires when its last byte has arrived.

        A flow with no channels (same tile) or no bytes only pays ``latency_s``. With
        ``join``, the flow has no event of its own: its arrival is one of the join's, and the
        join is returned. It never moves faster than ``cap_bytes_per_s``.
        """
        env = self.env
        now: float = env.now
        event = _Arrival(env) if join is None else join
        flow: _Flow = _Flow(
            self._next_id,
            channels,
            size_bytes,
            latency_s,
            now,
            event,
            (category, src, dst, stage, microbatch),
            cap_bytes_per_s,
        )
        self._next_id += 1
        if not channels or size_bytes <= 0.0:
            self._drained(flow, now)
        else:
            flows_on = self._flows_on
            flow_id = flow.flow_id
            for c in channels:
                flows_on[c][flow_id] = flow
            self.num_active += 1
            self._touched.append(flow)
            if not self._flush_pending:
                self._schedule_flush()
        return event

    def record_closed_form(
        self,
        channels: tuple[int, ...],
        size_bytes: float,
        start_s: float,
        end_s: float,
        *,
        category: str,
        src: int,
        dst: int,
        stage: int = -1,
        microbatch: int = -1,
    ) -> None:
        """Record a flow whose arrival the caller derived in closed form, without simulating it.

        Only for channels no other flow can touch meanwhile (the caller's proof), e.g. a
        tile's private DRAM port; it takes the next flow id like any flow.
        """
        self._record(self._next_id, (category, src, dst, channels, stage), start_s, end_s,
                     size_bytes, microbatch)  # fmt: skip
        self._next_id += 1

    # ------------------------------------------------------------------ internals

    def _schedule_flush(self) -> None:
        """Make sure a flush runs at the end of this instant."""
        self._flush_pending = True
        flush = simpy.Event(self.env)
        flush._ok = True
        flush._value = None
        flush.callbacks.append(self._on_flush)
        self.env.schedule(flush, _FLUSH_PRIORITY)

    def _on_flush(self, _event: simpy.Event) -> None:
        self._flush_pending = False
        self._flush()

    def _flush(self) -> None:
        """Recompute, once each, the components of the flows touched since the last flush.

        For each component: advance its flows to now, give them max-min fair rates, and push
        one heap entry at its earliest completion.
        """
        touched = self._touched
        if not touched:
            return
        self._touched = []
        self._num_flushes += 1
        stamp = self._num_flushes
        now: float = self.env.now
        seed: _Flow
        other: _Flow
        f: _Flow
        group: _Group
        rate: float
        first_s: float
        finish_s: float
        flows_on = self._flows_on
        channel_stamp = self._channel_stamp
        capacity = self._capacity
        heap = self._heap
        num_groups = self._num_groups
        fair_rates = self._fair_rates
        for seed in touched:
            if seed.stamp == stamp:
                continue  # already in a component recomputed by this flush
            # The connected component of ``seed`` through shared channels. Its order does not
            # matter: max-min rates are order-independent and completions are sorted.
            seed.stamp = stamp
            component = [seed]
            for c in seed.channels:  # none visited yet, or seed would be stamped
                channel_stamp[c] = stamp
                on = flows_on[c]
                if len(on) > 1:
                    for other in on.values():
                        if other.stamp != stamp:
                            other.stamp = stamp
                            component.append(other)
            if len(component) == 1:  # a lone flow: its narrowest channel's capacity, or cap
                if seed.updated_s != now:  # no bytes moved if it was updated at this instant
                    seed.remaining_bytes = max(
                        0.0, seed.remaining_bytes - seed.rate_bytes_per_s * (now - seed.updated_s)
                    )
                    seed.updated_s = now
                if seed.group is not None:
                    seed.group.is_current = False
                channels = seed.channels
                rate = (
                    capacity[channels[0]]
                    if len(channels) == 1
                    else min([capacity[c] for c in channels])
                )
                if seed.cap_bytes_per_s < rate:
                    rate = seed.cap_bytes_per_s
                seed.rate_bytes_per_s = rate
                seed.finish_s = first_s = now + seed.remaining_bytes / rate
                seed.group = group = _Group(component)
                num_groups += 1
                heapq.heappush(heap, (first_s, num_groups, group))
                continue
            i = 1
            while i < len(component):
                for c in component[i].channels:
                    if channel_stamp[c] != stamp:
                        channel_stamp[c] = stamp
                        on = flows_on[c]
                        if len(on) > 1:
                            for other in on.values():
                                if other.stamp != stamp:
                                    other.stamp = stamp
                                    component.append(other)
                i += 1
            for f in component:
                if f.updated_s != now:
                    f.remaining_bytes = max(
                        0.0, f.remaining_bytes - f.rate_bytes_per_s * (now - f.updated_s)
                    )
                    f.updated_s = now
                if f.group is not None:
                    f.group.is_current = False
            # Rates depend only on the flows' channels and caps, in this order: a structure seen
            # before gets the rates its filling gave (a run repeats a few hundred of them).
            key = tuple([f.key for f in component])
            rates = fair_rates.get(key)
            if rates is None:
                _progressive_filling(component, capacity)
                rates = [f.rate_bytes_per_s for f in component]
                if len(fair_rates) >= _MAX_CACHED_RATES:
                    fair_rates.clear()
                fair_rates[key] = rates
            group = _Group(component)
            first_s = _INF
            for f, rate in zip(component, rates, strict=True):
                f.rate_bytes_per_s = rate
                f.finish_s = finish_s = now + f.remaining_bytes / rate
                f.group = group
                if finish_s < first_s:
                    first_s = finish_s
            num_groups += 1
            heapq.heappush(heap, (first_s, num_groups, group))
        self._num_groups = num_groups
        self._arm()

    def _arm(self) -> None:
        """Make sure a timer fires at the earliest pending completion."""
        heap = self._heap
        while heap and not heap[0][2].is_current:
            heapq.heappop(heap)
        if heap and heap[0][0] < self._timer_at:
            self._timer_at = heap[0][0]
            timer = self.env.timeout(max(0.0, heap[0][0] - self.env.now))
            timer.callbacks.append(self._on_timer)

    def _on_timer(self, _event: simpy.Event) -> None:
        self._flush()  # changes earlier in this instant move completion times: apply them first
        now: float = self.env.now
        limit_s: float
        group: _Group
        f: _Flow
        flow: _Flow
        if now >= self._timer_at - _TIME_EPS_S:
            self._timer_at = float("inf")
        limit_s = now + _TIME_EPS_S
        finished: list[_Flow] = []
        # The other flows of a finished flow's component: its group, current since the flush
        # above. They are what the finished flows' channels connect (the group is connected),
        # so recomputing them recomputes every piece the component falls into.
        others: list[_Flow] = []
        heap = self._heap
        while heap and heap[0][0] <= limit_s:
            group = heapq.heappop(heap)[2]
            if group.is_current:
                group.is_current = False
                for f in group.flows:
                    if f.finish_s <= limit_s:
                        finished.append(f)
                    else:
                        others.append(f)
        if not finished:
            self._arm()
            return
        if len(finished) > 1:
            finished.sort(key=_completion_order)
        flows_on = self._flows_on
        for flow in finished:
            flow.group = None  # the group lists its flows: no reference cycle outlives a flow
            flow_id = flow.flow_id
            for c in flow.channels:
                del flows_on[c][flow_id]
            self._drained(flow, now)
        self.num_active -= len(finished)
        if others:
            self._touched.extend(others)
            if not self._flush_pending:
                self._schedule_flush()
        else:
            self._arm()

    def _record(
        self,
        flow_id: Any,
        transfer: tuple,  # type: ignore[type-arg]
        start_s: float,
        end_s: float,
        size_bytes: float,
        microbatch: Any,
    ) -> None:
        """Append a FlowRecord; ``transfer`` is its coded fields' values (category, src, dst,
        channels, stage). (``Any`` and a bare ``tuple``: Cython would read ``int`` and
        ``tuple[...]`` as types other than the declaration's in flownet_c.pxd.)"""
        add_id, add_start, add_end, add_size, add_microbatch, add_code = self._append
        add_id(flow_id)
        add_start(start_s)
        add_end(end_s)
        add_size(size_bytes)
        add_microbatch(microbatch)
        add_code(self._code(transfer))

    def _drained(self, flow: _Flow, now: float) -> None:
        """The flow's last byte left ``now``: record it and fire its event when that byte
        arrives."""
        arrival_s: float = now + flow.latency_s  # the time SimPy schedules the event for
        category, src, dst, stage, microbatch = flow.meta
        self._record(flow.flow_id, (category, src, dst, flow.channels, stage), flow.start_s,
                     arrival_s, flow.size_bytes, microbatch)  # fmt: skip
        done = flow.done
        if isinstance(done, LastOf):
            done.add(flow.latency_s)
        else:  # trigger_in, inlined: one call less per flow
            done._ok = True
            done._value = None
            self.env.schedule(done, delay=flow.latency_s)
