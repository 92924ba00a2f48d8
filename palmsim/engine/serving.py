"""The event-driven simulation of a serving run: requests arrive, a router spreads them over
replicas, and each replica's scheduler runs iteration after iteration of continuous batching.

Time unit: ``env.now`` is in seconds.

Each iteration's batch runs on the replica's tiles as a one-pass plan
(:meth:`palmsim.mapping.serving.ServingPlan.iteration_plan`) through :class:`Simulator`, with
every compute step, TP collective, pipeline send and DRAM flow of that batch. Iterations whose
batch has the same shape (:class:`palmsim.mapping.serving.BatchShape`) on the same replica
have identical programs, so a shape is simulated once and its duration reused: a lookup, not
an extrapolation, since nothing else of the run shares the replica's channels. A replica of
several pipeline stages keeps up to ``pp`` batches in flight, as vLLM V1's batch queue does
(:meth:`ServingSimulator._replica`): each batch holds each stage for the span its shape's
simulation gives, after the batch before it. Where the
replicas' traffic *could* share channels (``ServingPlan.replicas_share_channels``, e.g. NoC
links between regions of a wafer) each replica is still costed alone; the summary says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import simpy

from palmsim.config.specs import RunSpec
from palmsim.engine.flows import FlowNetwork
from palmsim.engine.records import FlowRecord, RecordBuilder, Work
from palmsim.engine.simulator import (
    ChipLike,
    Progress,
    Simulator,
    private_dram_ports,
    private_dram_step_s,
)
from palmsim.errors import SimulationError
from palmsim.mapping.plan import ComputeStep, MappingPlan
from palmsim.mapping.serving import BatchShape, ServingPlan, batch_shape
from palmsim.serving.router import route
from palmsim.serving.scheduler import Entry, RequestState, Scheduler
from palmsim.serving.traffic import Request

__all__ = [
    "PROGRESS_EVERY_ITERATIONS",
    "IterationRecord",
    "QueueRecord",
    "RequestRecord",
    "ServingSimulator",
    "ServingTrace",
]

#: Iterations between two progress reports of a serving run: a fraction of a second at the
#: engine's rate (benchmarks/serving.py: 380,745 iterations in 21 s).
PROGRESS_EVERY_ITERATIONS = 4096


class RequestRecord(NamedTuple):
    """One request's life. Times in seconds from the start; -1 where it does not apply
    (a rejected request). ``status`` is ``finished`` or ``rejected``."""

    request_id: int
    replica: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    first_scheduled_s: float
    first_token_s: float
    finish_s: float
    num_preemptions: int
    status: str
    decode_replica: int  # disaggregated: the replica that decoded it; else -1
    kv_transfer_s: float  # disaggregated: time its KV cache took to move; else -1


class IterationRecord(NamedTuple):
    """One iteration of one replica: its batch and the state it left behind."""

    replica: int
    start_s: float
    end_s: float
    num_seqs: int
    num_tokens: int
    num_prefill_tokens: int  # new tokens of requests still in their prompt
    num_decode_seqs: int
    kv_blocks_used: int  # after the iteration's allocation, before its completions
    num_waiting: int  # after scheduling the iteration
    num_preemptions: int  # cumulative on this replica
    num_sampled: int  # requests that sampled a token
    num_finished: int  # requests this iteration finished


class QueueRecord(NamedTuple):
    """A replica's queue changed at ``time_s``: requests waiting and in the system (waiting
    or running)."""

    time_s: float
    replica: int
    num_waiting: int
    num_in_system: int


class _HostPipeline:
    """An iteration's segments run by a device the host feeds op by op (serving.trace):
    segment i ends at F_i = max(F_(i-1) + D_i, H_i), D_i its device time (simulated without
    host bound) and H_i the host's time to have issued its ops and those before it, h_i =
    its step's ``host_issued_s`` (the segment is a pass of its own to the mapper). A segment
    repeated r times (once a layer) from (F, H) ends at max(F + r D, H + h + (r-1) D, H + r h),
    the ends of the recurrence's maximum over the repeats, which is linear in them. Without
    host time (a traced iteration) the iteration lasts the sum of its segments'."""

    def __init__(self) -> None:
        self.end_s = 0.0
        self._issued_s = 0.0

    def add(self, device_s: float, host_s: float, repeats: int) -> None:
        if repeats <= 0:
            return
        start, issued = self.end_s, self._issued_s
        self.end_s = max(
            start + repeats * device_s,
            issued + host_s + (repeats - 1) * device_s,
            issued + repeats * host_s,
        )
        self._issued_s = issued + repeats * host_s


class _Stages(NamedTuple):
    """One iteration's times through a replica's pipeline stages
    (:meth:`ServingSimulator._stages`)."""

    span_s: tuple[float, ...]  # each stage's first op to its last
    gap_s: tuple[float, ...]  # a stage's last op to the next one's first (its send)
    tail_s: float  # the last stage's last op to the iteration's end
    work: Work


@dataclass(frozen=True, slots=True)
class ServingTrace:
    """Everything a serving run produced."""

    requests: tuple[RequestRecord, ...]
    iterations: tuple[IterationRecord, ...]
    queue: tuple[QueueRecord, ...]
    end_time_s: float
    num_kv_blocks: int  # per replica
    num_replicas: int
    num_shapes_costed: int  # distinct segments (pp > 1: batch shapes) run through a Simulator
    num_closed_form: int  # iterations costed in closed form, with no Simulator
    wall_time_s: float
    metadata: dict[str, Any] = field(default_factory=dict)
    # every iteration's compute and flows, and the KV caches' hand-offs (their energy)
    work: Work = field(default_factory=Work)


class ServingSimulator:
    """Simulates ``requests`` served by ``plan`` on ``chip``; :meth:`run` returns a trace."""

    def __init__(
        self,
        chip: ChipLike,
        plan: ServingPlan,
        requests: Sequence[Request],
        run_spec: RunSpec | None = None,
        budget: Callable[[int, int], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        """``budget(iterations, arrived)`` is called after every iteration with the
        iterations so far and the requests that have arrived; it may raise to stop a run
        too large to finish (palmsim.guard.ServingBudget). ``progress(done, requests,
        text)`` hears the requests done (finished or rejected) every
        :data:`PROGRESS_EVERY_ITERATIONS` iterations and at the end."""
        self.chip = chip
        self.plan = plan
        self.requests = tuple(requests)
        self.run_spec = run_spec or RunSpec()
        self._budget = budget
        self._progress = progress
        self.env = simpy.Environment()
        spec = plan.serving
        self.num_replicas = len(plan.replica_tiles)
        self.num_prefill = spec.prefill_replicas
        self.schedulers = [
            Scheduler(
                spec.scheduler,
                plan.num_kv_blocks,
                prefill_only=r < self.num_prefill,
                shared_prefix_tokens=spec.traffic.shared_prefix_tokens,
                num_swap_blocks=plan.num_swap_blocks,
                groups=plan.kv_groups,
            )
            for r in range(self.num_replicas)
        ]
        # the serving report reads no flow records: the network's go to a builder never built
        self.network = FlowNetwork(
            self.env, [c.bandwidth_bytes_per_s for c in chip.channels], RecordBuilder(FlowRecord)
        )
        self._remaining = 0  # admitted requests not finished yet
        self._handoffs = 0
        self._wake: list[simpy.Event | None] = [None] * self.num_replicas
        self._arrivals_done = False
        self._slot_free: simpy.Event | None = None  # closed loop: a request in flight finished
        self._costs: dict[tuple[int, BatchShape], tuple[float, Work]] = {}
        self._num_closed_form = 0
        self._kinds = [c.kind for c in chip.channels]
        self._work = Work()
        # Per replica: (channel, bandwidth, latency) of its DRAM port when it is one tile
        # whose port no other tile of the replica uses (what the engine times in closed
        # form); else None.
        self._private: list[tuple[int, float, float] | None] = []
        for tiles in plan.replica_tiles:
            used = {t for stage in tiles for t in stage}
            ports = [tp for tp in plan.dram_port_of_tile if tp[0] in used]
            private = private_dram_ports(chip, ports)
            only = tiles[0][0]
            one_tile = len(tiles) == 1 and len(tiles[0]) == 1
            if one_tile and plan.is_segmented and only in private:
                self._private.append(private[only])
            else:
                self._private.append(None)
        self._segment_costs: dict[tuple[int, tuple[Any, ...]], tuple[float, Work]] = {}
        self._stage_costs: dict[tuple[int, BatchShape], _Stages] = {}
        self._in_flight = [0] * self.num_replicas  # batches in a replica's stages (pp > 1)
        self._states: list[RequestState] = []
        self._iterations: list[IterationRecord] = []
        self._queue: list[QueueRecord] = []

    # ------------------------------------------------------------------ cost

    def iteration_time_s(self, replica: int, shape: BatchShape) -> float:
        """Simulated duration of one iteration of ``shape`` on ``replica``
        (:meth:`_iteration`)."""
        return self._iteration(replica, shape)[0]

    def _iteration(self, replica: int, shape: BatchShape) -> tuple[float, Work]:
        """Simulated duration of one iteration of ``shape`` on ``replica``, and its work.

        On one pipeline stage, the iteration is a sequence of segments, each ending in a
        barrier (:meth:`ServingPlan.segments`), so its duration is the sum of theirs. On a
        one-tile replica whose DRAM port is its own (a GPU and its HBM) every segment is one
        compute step, timed in closed form as the engine times it
        (:func:`~palmsim.engine.simulator.private_dram_step_s`), with no Simulator. Otherwise
        each distinct segment is simulated once on the replica's tiles and looked up after.
        With several stages the whole iteration is simulated, once per shape.
        """
        plan = self.plan
        private = self._private[replica]
        if private is not None:
            self._num_closed_form += 1
            pipe = _HostPipeline()
            channel, bandwidth, latency_s = private
            flop = operand = dram = 0.0
            for _, steps, repeats in plan.segments(shape, 0):
                (step,) = steps
                assert isinstance(step, ComputeStep)
                pipe.add(
                    private_dram_step_s(step, bandwidth, latency_s), step.host_issued_s, repeats
                )
                # the step's work as the engine records it: its FLOP, its interval's bytes,
                # and its read and write flows over the port's one channel
                moved = step.dram_read_bytes + step.dram_write_bytes
                flop += repeats * step.flop
                operand += repeats * (step.sram_bytes + step.read_ahead_bytes + moved)
                dram += repeats * moved
            return pipe.end_s, Work(flop, operand, dram, {self._kinds[channel]: dram})
        key = (replica, shape)
        cached = self._costs.get(key)
        if cached is not None:
            return cached
        if plan.is_segmented:
            pipe = _HostPipeline()
            work = Work()
            for _, steps, repeats in plan.segments(shape, 0):
                seg_key = (replica, steps)
                seg = self._segment_costs.get(seg_key)
                if seg is None:
                    device = tuple(
                        dataclasses.replace(st, host_issued_s=0.0)
                        if isinstance(st, ComputeStep) and st.host_issued_s > 0
                        else st
                        for st in steps
                    )
                    seg = self._simulate(plan.segment_plan(replica, device))
                    self._segment_costs[seg_key] = seg
                host_s = max(
                    (st.host_issued_s for st in steps if isinstance(st, ComputeStep)), default=0.0
                )
                pipe.add(seg[0], host_s, repeats)
                work = work.plus(seg[1], repeats)
            cost = (pipe.end_s, work)
        else:
            cost = self._simulate(plan.iteration_plan(replica, shape))
        self._costs[key] = cost
        return cost

    def _stages(self, replica: int, shape: BatchShape) -> _Stages:
        """The stages' times of one iteration of ``shape`` on ``replica`` (``pp > 1``),
        simulated once per shape: each stage's span from its first op to its last, the gap
        to the next stage's first op (the activations' send), and the tail after the last
        stage's; in isolation they add up to the iteration's duration."""
        key = (replica, shape)
        cached = self._stage_costs.get(key)
        if cached is not None:
            return cached
        trace = Simulator(self.chip, self.plan.iteration_plan(replica, shape)).run()
        iv = trace.intervals
        stage, start, end = iv.column("stage"), iv.column("start_s"), iv.column("end_s")
        spans = []
        for s in range(self.plan.serving.pp):
            mine = stage == s
            spans.append((float(start[mine].min()), float(end[mine].max())))
        gaps = tuple(b[0] - a[1] for a, b in itertools.pairwise(spans))
        stages = _Stages(
            tuple(b - a for a, b in spans),
            gaps,
            trace.end_time_s - spans[-1][1],
            Work.of_trace(trace, self._kinds),
        )
        self._stage_costs[key] = stages
        return stages

    def _simulate(self, plan: MappingPlan) -> tuple[float, Work]:
        """Duration and work of a one-pass plan on the chip, simulated."""
        trace = Simulator(self.chip, plan).run()
        return trace.end_time_s, Work.of_trace(trace, self._kinds)

    # ------------------------------------------------------------------ run

    def run(self) -> ServingTrace:
        """Serve every request to completion (or ``run_spec.until_s``).

        Raises:
            SimulationError: requests unfinished at ``until_s``, or a replica that cannot
                make progress.
        """
        wall_start = time.perf_counter()
        env = self.env
        env.process(self._arrivals())
        for r in range(self.num_replicas):
            env.process(self._replica(r))
        until = self.run_spec.until_s
        if until is not None:
            env.run(until=until)
        else:
            env.run()
        if self._progress is not None:
            self._report_progress()
        unfinished = [s for s in self._states if not s.rejected and s.finish_s is None]
        if unfinished or len(self._states) < len(self.requests):
            shown = ", ".join(str(s.request.request_id) for s in unfinished[:8])
            raise SimulationError(
                f"reached until={until} s at t={env.now:.9g} s with "
                f"{len(unfinished) + len(self.requests) - len(self._states)} requests "
                f"unfinished (e.g. {shown or 'not yet arrived'})"
            )
        records = tuple(
            RequestRecord(
                s.request.request_id,
                s.replica,
                s.request.arrival_s,
                s.request.prompt_tokens,
                s.request.output_tokens,
                -1.0 if s.first_scheduled_s is None else s.first_scheduled_s,
                -1.0 if s.first_token_s is None else s.first_token_s,
                -1.0 if s.finish_s is None else s.finish_s,
                s.num_preemptions,
                "rejected" if s.rejected else "finished",
                s.decode_replica,
                -1.0
                if s.kv_transfer_end_s is None or s.kv_transfer_start_s is None
                else s.kv_transfer_end_s - s.kv_transfer_start_s,
            )
            for s in sorted(self._states, key=lambda s: s.request.request_id)
        )
        for sched in self.schedulers:
            assert sched.pool.num_used == 0, "KV blocks held after every request finished"
        return ServingTrace(
            requests=records,
            iterations=tuple(self._iterations),
            queue=tuple(self._queue),
            end_time_s=env.now,
            num_kv_blocks=self.plan.num_kv_blocks,
            num_replicas=self.num_replicas,
            num_shapes_costed=len(self._segment_costs)
            if self.plan.is_segmented
            else len(self._costs),
            num_closed_form=self._num_closed_form,
            wall_time_s=time.perf_counter() - wall_start,
            metadata={
                "replicas_share_channels": self.plan.replicas_share_channels,
                "kv_cache_groups": self.plan.kv_groups.num_groups,
                "num_swaps": sum(s.num_swaps for s in self.schedulers),
                "num_swapped_blocks": sum(s.num_swapped_blocks for s in self.schedulers),
            },
            work=self._work,
        )

    def _note_queue(self, replica: int) -> None:
        sched = self.schedulers[replica]
        self._queue.append(
            QueueRecord(self.env.now, replica, len(sched.waiting), sched.num_outstanding)
        )

    def _report_progress(self) -> None:
        """Tell ``progress`` the requests done: arrived, and finished or rejected."""
        assert self._progress is not None
        done = len(self._states) - self._remaining
        self._progress(done, len(self.requests), f"t = {self.env.now:.4g} s simulated")

    def _arrivals(self) -> Generator[simpy.Event, Any, None]:
        """SimPy process: releases each request at its arrival time to the routed replica.

        Yields timeouts; records the replica's queue after every admitted request."""
        env = self.env
        router = self.plan.serving.router
        traffic = self.plan.serving.traffic
        closed = traffic.arrival == "closed"
        for index, request in enumerate(self.requests):
            if closed:  # a client sends its next request when its last one has finished
                while self._remaining >= traffic.concurrency:
                    self._slot_free = env.event()
                    yield self._slot_free
                request = dataclasses.replace(request, arrival_s=env.now)
            else:
                delay = request.arrival_s - env.now
                if delay > 0:
                    yield env.timeout(delay)
            pool = self.schedulers[: self.num_prefill or self.num_replicas]
            replica = route(router, index, [s.num_outstanding for s in pool])
            state = RequestState(request, replica)
            self._states.append(state)
            if self.schedulers[replica].add(state):
                self._remaining += 1
                self._note_queue(replica)
                self._notify(replica)
        self._arrivals_done = True
        for r in range(self.num_replicas):
            self._notify(r)

    def _hand_off(self, state: RequestState) -> Generator[simpy.Event, Any, None]:
        """SimPy process: move a prefilled request's KV cache to a decode replica.

        Each tile of the prefill replica sends its share of the prompt's KV cache (its
        stage's layers, its KV heads) to the same stage and rank of the decode replica, as
        flows over the chip's routes sharing bandwidth with every other transfer in flight;
        the request joins the decode replica's queue when the last byte has arrived.
        Records the flows (category ``kv_transfer``)."""
        env = self.env
        decoders = self.schedulers[self.num_prefill :]
        index = route(
            self.plan.serving.router, self._handoffs, [s.num_outstanding for s in decoders]
        )
        self._handoffs += 1
        decode = self.num_prefill + index
        state.decode_replica = decode
        state.kv_transfer_start_s = env.now
        src_tiles = self.plan.replica_tiles[state.replica]
        dst_tiles = self.plan.replica_tiles[decode]
        done = []
        for s, (src_stage, dst_stage) in enumerate(zip(src_tiles, dst_tiles, strict=True)):
            size = self.plan.kv_bytes_held(s, state.num_computed)
            for src, dst in zip(src_stage, dst_stage, strict=True):
                path = self.chip.route(src, dst)
                kinds: dict[str, float] = {}
                for channel in path.channels:
                    kind = self._kinds[channel]
                    kinds[kind] = kinds.get(kind, 0.0) + size
                self._work = self._work.plus(Work(channel_bytes=kinds))
                done.append(
                    self.network.transfer(
                        path.channels,
                        size,
                        path.latency_s,
                        category="kv_transfer",
                        src=src,
                        dst=dst,
                        stage=s,
                    )
                )
        yield env.all_of(done)
        state.kv_transfer_end_s = env.now
        self.schedulers[decode].add(state)
        self._note_queue(decode)
        self._notify(decode)

    def _notify(self, replica: int) -> None:
        wake = self._wake[replica]
        if wake is not None and not wake.triggered:
            wake.succeed()

    def _replica(self, replica: int) -> Generator[simpy.Event, Any, None]:
        """SimPy process: one replica's scheduler loop.

        One stage: each iteration runs whole (simulated once per shape, :meth:`_iteration`)
        before the next is scheduled. Several stages (``pp > 1``): as vLLM V1's engine core
        runs them with a queue of ``pp`` batches (vllm/v1/engine/core.py,
        ``EngineCore.step_with_batch_queue``), while fewer than ``pp`` batches are in flight
        it schedules another from the requests not in one; a batch goes through the stages
        in order, holding each for its span (:meth:`_stages`) once the batch before it has
        left it, so consecutive batches overlap across stages, and its requests take their
        tokens when it leaves the last (:meth:`_land`). Yields those times or, when idle,
        the next arrival or landing; records IterationRecords (start: entering the first
        stage) and QueueRecords."""
        env = self.env
        sched = self.schedulers[replica]
        pp = self.plan.serving.pp
        free_s = [0.0] * pp  # when each stage has finished the batches sent to it
        empty_in_a_row = 0
        while True:
            entries = [] if self._in_flight[replica] >= pp else sched.schedule(env.now)
            swap_s = self._swap_s(sched)
            if not entries:
                stop, empty_in_a_row = yield from self._idle(replica, swap_s, empty_in_a_row)
                if stop:
                    return
                continue
            empty_in_a_row = 0
            self._note_queue(replica)
            shape = batch_shape(entries, self.plan.attention_kinds)
            before = (sched.pool.num_used, len(sched.waiting))
            if pp == 1:
                start_s = env.now
                duration_s, work = self._iteration(replica, shape)
                self._work = self._work.plus(work)
                yield env.timeout(duration_s + swap_s)
                self._close_iteration(replica, entries, shape, start_s, before)
                continue
            stages = self._stages(replica, shape)
            self._work = self._work.plus(stages.work)
            start_s = at_s = max(env.now + swap_s, free_s[0])
            for s, span_s in enumerate(stages.span_s):
                at_s = max(at_s, free_s[s])
                free_s[s] = at_s + span_s
                at_s = free_s[s] + (stages.gap_s[s] if s < pp - 1 else stages.tail_s)
            for entry in entries:
                entry.state.in_flight_tokens += entry.new_tokens
            self._in_flight[replica] += 1
            env.process(self._land(replica, entries, shape, start_s, at_s, before))

    def _swap_s(self, sched: Scheduler) -> float:
        """Swapping blocks out to and back in from host memory holds the iteration the last
        ``schedule()`` made (vLLM copies them before the step runs), one way after the
        other."""
        plan = self.plan
        return plan.swap_time_s(sched.swapped_out_blocks) + plan.swap_time_s(
            sched.swapped_in_blocks
        )

    def _idle(
        self, replica: int, swap_s: float, empty_in_a_row: int
    ) -> Generator[simpy.Event, Any, tuple[bool, int]]:
        """A replica's scheduler found nothing to run: after the swaps it made, wait for an
        arrival or a batch leaving its stages, or try again at once after a request preempted
        itself (which frees the whole cache). Returns whether the replica is done (nothing
        in flight, outstanding or to arrive) and the empty schedules in a row.

        Raises:
            SimulationError: twice in a row nothing could run with nothing in flight.
        """
        env, sched = self.env, self.schedulers[replica]
        if swap_s:
            yield env.timeout(swap_s)
        if not self._in_flight[replica]:
            if sched.num_outstanding:
                if empty_in_a_row >= 1:
                    raise SimulationError(
                        f"replica {replica} cannot schedule any of its "
                        f"{sched.num_outstanding} requests at t={env.now:.9g} s"
                    )
                return False, empty_in_a_row + 1
            if self._arrivals_done and self._remaining == 0:
                return True, empty_in_a_row
        wake = self._wake[replica] = env.event()
        yield wake
        return False, empty_in_a_row

    def _close_iteration(
        self,
        replica: int,
        entries: list[Entry],
        shape: BatchShape,
        start_s: float,
        before: tuple[int, int],
    ) -> None:
        """An iteration of ``entries`` that began at ``start_s`` ends now: its requests take
        their tokens (finished ones leave, prefilled ones hand off), and its IterationRecord
        is kept with the KV blocks used and requests waiting ``before`` it ran."""
        env, sched = self.env, self.schedulers[replica]
        in_prompt = [e for e in entries if e.cached_tokens < e.state.request.prompt_tokens]
        kv_used, waiting = before
        finished = sched.complete(entries, env.now)
        for state in finished:
            if state.finish_s is None:  # prefill done: its KV cache moves to a decoder
                env.process(self._hand_off(state))
            else:
                self._remaining -= 1
                slot = self._slot_free
                if slot is not None and not slot.triggered:
                    slot.succeed()
        if self._remaining == 0 and self._arrivals_done:
            for r in range(self.num_replicas):
                self._notify(r)
        self._iterations.append(
            IterationRecord(
                replica,
                start_s,
                env.now,
                len(entries),
                shape.num_tokens,
                sum(e.new_tokens for e in in_prompt),
                len(entries) - len(in_prompt),
                kv_used,
                waiting,
                sched.num_preemptions,
                shape.num_sampled,
                len(finished),
            )
        )
        self._note_queue(replica)
        if self._budget is not None:
            self._budget(len(self._iterations), len(self._states))
        if self._progress is not None and not len(self._iterations) % PROGRESS_EVERY_ITERATIONS:
            self._report_progress()

    def _land(
        self,
        replica: int,
        entries: list[Entry],
        shape: BatchShape,
        start_s: float,
        end_s: float,
        before: tuple[int, int],
    ) -> Generator[simpy.Event, Any, None]:
        """SimPy process: a batch of a pipelined replica leaves its last stage at ``end_s``."""
        yield self.env.timeout(end_s - self.env.now)
        self._in_flight[replica] -= 1
        for entry in entries:
            entry.state.in_flight_tokens -= entry.new_tokens
        self._close_iteration(replica, entries, shape, start_s, before)
        self._notify(replica)
