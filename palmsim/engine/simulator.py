"""The event-driven simulation of one training iteration of a :class:`MappingPlan` on a chip.

Time unit: ``env.now`` is in **seconds**. SimPy itself is unit-less.

Every simulated tile runs its own SimPy process, executing its stage's schedule (from the plan)
step by step: compute steps hold the tile for the roofline time while their DRAM traffic moves
as contended flows; tensor-parallel collectives start when every tile of the group has
arrived; activations and gradients move between stages as point-to-point flows (the sender
computes on, or waits for its send to arrive where its program's ``send_blocks`` says so);
data-parallel gradient buckets are reduced when the program's ``grad_reduce`` says (in the
background of the last backward, after it, or after every backward) and the optimizer step
waits for them. The engine reads only the plan, never the user's options. All link and DRAM
traffic shares bandwidth max-min fairly (:mod:`palmsim.engine.flows`), so congestion between
collectives, pipeline transfers and DRAM traffic emerges rather than being assumed.

Collectives are ring algorithms at flow level: for a ring of ``n`` tiles each ring edge carries
``2(n-1)/n * S`` bytes (all-reduce) or ``(n-1)/n * S`` (reduce-scatter, all-gather), which is
what the ``2(n-1)`` (or ``n-1``) pipelined ring steps move over it (Patarasuk & Yuan 2009;
NCCL's ring, nccl-tests PERFORMANCE.md); each flow also pays its route latency once per ring
step and its communicator's startup (``system.collective_latency``) once per call, with any
reduce-scatter stalls (:meth:`~palmsim.mapping.plan.Communicator.fixed_time_s`), and never
runs faster than its senders put their own pieces onto the fabric
(:meth:`~palmsim.mapping.plan.Communicator.cap_bytes_per_s`). The plan's
communicators say which flows a group's collective starts (:mod:`palmsim.hardware.collectives`):
one per ring edge for a flat ring, whose uncontended time is the textbook
``startup + 2(n-1)/n * S/B + 2(n-1) * alpha``, two per link for a line of chips (the
line algorithm), or, for a GPU-cluster group spanning nodes, a share over NVLink and a share
over the NICs per member (one ring per local member).

Two kinds of traffic provably meet no other flow, and are timed in closed form instead of
being simulated (same results, far fewer events): a compute step's DRAM reads and writes on a
port private to its tile (a GPU's HBM), and the collectives of a communicator the plan marks
``exclusive`` (e.g. a TP group on a node's NVLinks). On a GPU cluster with symmetric
data-parallel replicas only replica 0's tiles run, and of its stages only TP rank 0 when
the ranks are symmetric too (``plan.simulated_tiles``). A compute step
waits for its compute time and its DRAM flows through one event (``LastOf``), and a ring
collective for its flows through one, each processed where the last of their events would be.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from heapq import heappop
from typing import Any, NamedTuple, Protocol

import numpy as np
import simpy

from palmsim.config.specs import RunSpec
from palmsim.engine.flows import FlowNetwork, LastOf, trigger_in
from palmsim.engine.records import (
    FlowRecord,
    IntervalRecord,
    MemoryRecord,
    RecordBuilder,
    Records,
    RunTrace,
    gc_paused,
)
from palmsim.errors import SimulationError, tile_list
from palmsim.hardware.collectives import RING_STEPS
from palmsim.mapping.plan import (
    CollectiveStep,
    Communicator,
    ComputeStep,
    GradBucketReady,
    GradReduce,
    GroupKind,
    MappingPlan,
    Phase,
    Step,
)

__all__ = [
    "PROGRESS_EVERY",
    "ChipLike",
    "Progress",
    "Simulator",
    "private_dram_drain_s",
    "private_dram_ports",
    "private_dram_step_s",
]

_INF = float("inf")

#: A progress callback: (done, total, text), as palmsim.report.export.write_run's.
Progress = Callable[[int, int, str], None]
#: Events between two progress reports of a run: seconds of simulation at the tens of
#: thousands of events a second benchmarks/run.py measures, one test of a counter per event.
PROGRESS_EVERY = 1 << 16


class _RouteLike(Protocol):
    @property
    def channels(self) -> tuple[int, ...]: ...

    @property
    def latency_s(self) -> float: ...


class ChipLike(Protocol):
    """What the engine needs of a chip (see :class:`palmsim.hardware.chip.Chip`)."""

    @property
    def channels(self) -> Sequence[Any]: ...

    def route(self, src: int, dst: int, /) -> _RouteLike: ...

    def dram_route(self, tile: int, port: int, *, write: bool) -> _RouteLike: ...


@dataclass(slots=True)
class _Collective:
    """One collective instance being assembled from its participants."""

    tiles: tuple[int, ...]
    kind: str
    size_bytes: float
    category: str
    stage: int
    microbatch: int
    arrived: int
    done: simpy.Event
    group_kind: str = GroupKind.TP


def _describe(activity: str | tuple[Any, ...]) -> str:
    """A tile's activity as text (see ``Simulator._activity``)."""
    if isinstance(activity, str):
        return activity
    stage, category, step, mb, group = activity
    if isinstance(step, CollectiveStep):
        return (
            f"stage {stage} {category} waits in {step.group.upper()} {step.kind} "
            f"{step.label} (micro-batch {mb}, group of {tile_list(group)})"
        )
    return f"stage {stage} {category} {step.label} micro-batch {mb}"


def private_dram_ports(
    chip: ChipLike, dram_port_of_tile: Iterable[tuple[int, int]]
) -> dict[int, tuple[int, float, float]]:
    """Tiles whose DRAM traffic meets no other flow: ``tile -> (channel, B/s, latency)``.

    A port is private to a tile when it is the home of no other used tile and both the
    tile's read and write routes are just the port's channel (HBM behind a GPU, ``per_tile``
    DRAM on a wafer). Only the tile's own compute steps, one at a time, then use the channel,
    so their two flows are timed in closed form (:func:`private_dram_step_s`).
    """
    users: dict[int, list[int]] = {}
    for tile, port in dram_port_of_tile:
        users.setdefault(port, []).append(tile)
    private: dict[int, tuple[int, float, float]] = {}
    for port, tiles in users.items():
        if len(tiles) > 1:
            continue
        (tile,) = tiles
        read = chip.dram_route(tile, port, write=False)
        write = chip.dram_route(tile, port, write=True)
        if len(read.channels) == 1 and read.channels == write.channels:
            (channel,) = read.channels
            bandwidth = chip.channels[channel].bandwidth_bytes_per_s
            assert read.latency_s == write.latency_s
            private[tile] = (channel, bandwidth, read.latency_s)
    return private


def private_dram_drain_s(
    read_bytes: float, write_bytes: float, bandwidth: float
) -> tuple[float, float]:
    """When a step's read and write flows drain, started together on a channel of
    ``bandwidth`` B/s that nothing else uses: max-min sharing (Bertsekas & Gallager 6.5.2)
    gives each B/2 until the smaller, ``lo`` bytes, drains at ``2·lo/B``; the other then has
    B alone and drains at ``(lo + hi)/B``."""
    read, write = read_bytes, write_bytes
    if read > 0 and write > 0:
        read_drain_s = 2 * read / bandwidth if read <= write else (read + write) / bandwidth
        write_drain_s = 2 * write / bandwidth if write < read else (read + write) / bandwidth
        return read_drain_s, write_drain_s
    return read / bandwidth, write / bandwidth


def private_dram_step_s(step: ComputeStep, bandwidth: float, latency_s: float) -> float:
    """A compute step's duration on a tile with a private DRAM port (pure). A step that
    moves data first runs its ops' fixed serial latency (``serial_latency_s``, a tiled
    chip's op latency); then it lasts until the later of the rest of its compute time and
    each of its DRAM flows' arrival, the port latency after it drains
    (:func:`private_dram_drain_s`). What the flow network computes for these two flows,
    without simulating them."""
    read, write = step.dram_read_bytes, step.dram_write_bytes
    read_drain_s, write_drain_s = private_dram_drain_s(read, write, bandwidth)
    launch_s = step.serial_latency_s if read > 0 or write > 0 else 0.0
    delay_s = step.compute_time_s - launch_s
    if read > 0:
        delay_s = max(delay_s, read_drain_s + latency_s)
    if write > 0:
        delay_s = max(delay_s, write_drain_s + latency_s)
    return launch_s + delay_s


class _Seat(NamedTuple):
    """Where a tile process runs: its replica, stage, TP rank, tile and groups."""

    replica: int
    stage: int
    rank: int
    tile: int
    groups: dict[str, tuple[int, ...]]


class Simulator:
    """Simulates one iteration of ``plan`` on ``chip``; :meth:`run` returns a :class:`RunTrace`."""

    def __init__(
        self,
        chip: ChipLike,
        plan: MappingPlan,
        run_spec: RunSpec | None = None,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.chip = chip
        self.plan = plan
        self.run_spec = run_spec or RunSpec()
        # progress(passes done, passes in all, text) every PROGRESS_EVERY events and at the end
        self._progress = progress
        self._passes_done = 0
        self.env = simpy.Environment()
        # Records go field by field into typed columns (RecordBuilder.append)
        self._interval_records = RecordBuilder(IntervalRecord)
        self._flow_records = RecordBuilder(FlowRecord)
        self._memory_records = RecordBuilder(MemoryRecord)
        self.network = FlowNetwork(
            self.env, [c.bandwidth_bytes_per_s for c in chip.channels], self._flow_records
        )
        # (id(step), pass) -> an interval's FLOP, bytes and code of what ran (the plan keeps
        # its steps for the run, so their ids stay theirs); the code is taken when the first
        # such interval is recorded, in the order the records bring them
        self._interval_templates: dict[tuple[int, str], tuple[float, float, int]] = {}
        # each simulated tile's (read, write) route to its home DRAM port
        self._dram_routes = {
            tile: (
                chip.dram_route(tile, port, write=False),
                chip.dram_route(tile, port, write=True),
            )
            for tile, port in plan.dram_port_of_tile
        }
        self._mail: dict[tuple[Any, ...], simpy.Event] = {}
        self._collectives: dict[tuple[Any, ...], _Collective] = {}
        self._group_seq: dict[tuple[str, tuple[int, ...], int, str], int] = {}
        self._group_tail: dict[tuple[str, tuple[int, ...]], simpy.Event] = {}
        # collectives a tile started ahead (CollectiveStep.prefetch), by tile and the step's
        # typed identity (layer, op)
        self._prefetched: dict[tuple[int, int, str], simpy.Event] = {}
        # DRAM reads a tile's compute step started for a later one (ComputeStep.lead_read_bytes)
        self._lead_reads: dict[int, simpy.Event] = {}
        # exclusive groups' last end
        self._group_end_s: dict[tuple[str, tuple[int, ...]], float] = {}
        # What each tile is doing, for the deadlock message: a text, or on the hot paths the
        # parts of one (formatted by _describe only when a run gets stuck).
        self._activity: dict[int, str | tuple[Any, ...]] = {}
        self._finished: set[int] = set()
        # activation bytes each tile holds, and the compute of a tile that runs a forward and
        # a backward together (StageProgram.merge_forward_backward): one op at a time
        self._held: dict[int, float] = {}
        self._compute_locks: dict[int, simpy.Resource] = {}
        self._simulated = frozenset(plan.simulated_tiles)
        lead_reads = plan.inference is not None and plan.inference.lead_reads
        self._private_dram = {} if lead_reads else private_dram_ports(chip, plan.dram_port_of_tile)
        # (id(step), port bandwidth, latency) -> (launch, read drain, write drain, duration)
        self._private_timing: dict[tuple[int, float, float], tuple[float, ...]] = {}
        self._communicators: dict[tuple[str, tuple[int, ...]], Communicator] = {
            (str(c.group), c.members): c for c in plan.communicators
        }
        # each communicator's flows' narrowest channel bandwidth [B/s], by its id (the plan
        # keeps it for the run)
        self._narrowest: dict[int, list[float]] = {
            id(c): [
                min([chip.channels[ch].bandwidth_bytes_per_s for ch in f.channels], default=_INF)
                for f in c.flows
            ]
            for c in plan.communicators
        }

    # ------------------------------------------------------------------ run

    def run(self) -> RunTrace:
        """Simulate the iteration to completion (or ``run_spec.until_s``).

        Raises:
            SimulationError: some tile did not finish (deadlock, or ``until_s`` reached).
        """
        wall_start = time.perf_counter()
        plan = self.plan
        for replica, stages in enumerate(plan.stage_tiles[: plan.simulated_replicas]):
            for stage, tiles in enumerate(stages):
                for rank, tile in enumerate(tiles[: plan.simulated_ranks]):
                    if plan.inference is not None:
                        self.env.process(self._inference_process(replica, stage, rank, tile))
                    else:
                        self.env.process(self._tile_process(replica, stage, rank, tile))
        until = self.run_spec.until_s
        env = self.env
        num_events = 0
        num_tiles = len(self._simulated)
        # Stop when the last tile finishes: the flow network may still hold superseded
        # completion timers, which must not advance the clock past the iteration. The engine
        # makes no reference cycles per event, so the loop runs with the cyclic collector
        # paused (gc_paused: 40 % of W1's time otherwise).
        # The loop is SimPy's Environment.step (simpy 4) written out, without its two calls
        # per event (peek and step): the same events in the same order, an event that
        # failed (a process that raised) raising as it does there.
        finished, queue = self._finished, env._queue  # type: ignore[attr-defined]
        # the event count of the next progress report (never reached without a callback): a
        # comparison with a local per event
        report_at = PROGRESS_EVERY if self._progress is not None else -1
        with gc_paused():
            while len(finished) < num_tiles and queue:
                if until is not None and queue[0][0] > until:
                    break
                env._now, _, _, event = heappop(queue)  # type: ignore[attr-defined]
                callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    failure = event._value
                    raise type(failure)(*failure.args) from failure
                num_events += 1
                if num_events == report_at:
                    self._report_progress()
                    report_at += PROGRESS_EVERY
        if self._progress is not None:
            self._report_progress()
        stuck = sorted(self._simulated - self._finished)
        if stuck:
            shown = "; ".join(
                f"tile {t}: {_describe(self._activity.get(t, 'not started'))}" for t in stuck[:8]
            )
            more = f" (and {len(stuck) - 8} more)" if len(stuck) > 8 else ""
            if until is not None:
                reason = f"reached until={until} s"
            elif self.network.num_active:
                # flows still active with no event left: their rate is so near 0 that their
                # end lies past any float time, so no completion timer was ever set
                reason = (
                    "a transfer that never ends (a rate, bandwidth or efficiency of the "
                    "hardware too close to 0)"
                )
            else:
                reason = "deadlock"
            raise SimulationError(
                f"{reason} at t={env.now:.9g} s with {len(stuck)} tiles unfinished: {shown}{more}"
            )
        if not math.isfinite(env.now):
            # a duration overflowed: a rate, bandwidth or efficiency of the hardware so near 0
            # that some step or transfer takes longer than a float can say
            raise SimulationError(
                f"the simulated time is not finite (t={env.now}): a rate, bandwidth or "
                "efficiency of the hardware is too close to 0 for its steps to end"
            )
        intervals = self._interval_records.build()
        flows = self._flow_records.build()
        memory = self._memory_records.build()
        self._check_invariants(intervals, flows)
        return RunTrace(
            intervals=intervals,
            flows=flows,
            memory=memory,
            end_time_s=env.now,
            num_events=num_events,
            wall_time_s=time.perf_counter() - wall_start,
            metadata={"placement": plan.placement},
        )

    def _report_progress(self) -> None:
        """Tell ``progress`` the passes done of :meth:`passes_in_all` and the time reached."""
        assert self._progress is not None
        text = f"t = {self.env.now:.4g} s simulated"
        self._progress(self._passes_done, self.passes_in_all(), text)

    def passes_in_all(self) -> int:
        """The passes the simulated tiles run: a forward or backward of a micro-batch through
        a (virtual) stage in training, a prefill or decode pass of one in inference; the
        count :meth:`run` reports its progress in."""
        plan = self.plan
        tiles = [
            (stage, min(len(tiles), plan.simulated_ranks))
            for stages in plan.stage_tiles[: plan.simulated_replicas]
            for stage, tiles in enumerate(stages)
        ]
        if plan.inference is not None:
            per_tile = [
                (1 + len(info.decode)) * plan.num_microbatches for info in plan.inference.stages
            ]
        else:
            per_tile = [len(plan.programs[s].steps) for s in range(plan.num_stages)]
        return sum(per_tile[stage] * n for stage, n in tiles)

    def _check_invariants(
        self, intervals: Records[IntervalRecord], flows: Records[FlowRecord]
    ) -> None:
        """Programmer-error checks at the end of a run (Ciw's wrap-up invariants)."""
        assert self.network.num_active == 0, "flows still active after every tile finished"
        assert not self._prefetched, "a prefetched collective was never waited for"
        assert not self._lead_reads, "a read ahead was never waited for"
        assert not np.any(intervals.column("end_s") > self.env.now)
        assert not np.any(flows.column("end_s") > self.env.now)
        # each forward record's (tile, label, micro-batch) as one int64, sorted: no two equal
        forward = intervals.isin("category", ("forward",)) & (intervals.column("microbatch") >= 0)
        microbatch = intervals.column("microbatch")[forward].astype(np.int64)
        key = intervals.column("tile")[forward].astype(np.int64)
        key *= len(intervals.table("label"))
        key += intervals.codes("label")[forward]
        key *= int(microbatch.max(initial=0)) + 1
        key += microbatch
        key.sort()
        assert not np.any(key[1:] == key[:-1]), "an op ran more than once per micro-batch"

    # ------------------------------------------------------------------ processes

    def _tile_process(
        self, replica: int, stage: int, rank: int, tile: int
    ) -> Generator[simpy.Event, Any, None]:
        """SimPy process: one tile's whole iteration.

        Yields compute timeouts, flow-completion events, mailbox events and collective
        completions; records IntervalRecords, MemoryRecords and (through the network)
        FlowRecords.
        """
        plan = self.plan
        p = plan.num_stages
        program = plan.programs[stage]  # chunk 0; holds the stage's schedule and optimizer
        chunks = program.step_chunks or (0,) * len(program.steps)
        groups = plan.groups(replica, stage, rank)
        dp_group = groups[GroupKind.DP]
        # A chunk's gradients are complete after its last backward of the iteration.
        last_backward = {
            chunk: i
            for i, ((phase, _), chunk) in enumerate(zip(program.steps, chunks, strict=True))
            if phase == "B"
        }
        pending: list[simpy.Event] = []
        seat = _Seat(replica, stage, rank, tile, groups)
        self._held[tile] = 0.0
        entries = list(enumerate(zip(program.steps, chunks, strict=True)))
        merge = program.merge_forward_backward
        if merge:  # one forward's and one backward's compute take turns on the tile
            self._compute_locks[tile] = simpy.Resource(self.env, capacity=1)
        for gather in program.param_gathers_at_start:  # in flight before the first forward
            if len(groups[gather.group]) > 1:
                stream = "F" if merge else ""  # the forward's, as _run_steps counts them
                started = self._start(gather, groups[gather.group], tile, stage, 0, stream)
                self._prefetched[(tile, gather.layer, gather.op)] = started
        i = 0
        while i < len(entries):
            index, ((phase, mb), chunk) = entries[i]
            if merge and phase == "B" and i + 1 < len(entries) and entries[i + 1][1][0][0] == "F":
                # a steady-state pair: the backward of an earlier micro-batch, whose forward
                # has run, and the forward after it (Megatron-Core's combined 1F1B)
                _, ((_, f_mb), f_chunk) = entries[i + 1]
                backward = self.env.process(
                    self._backward_pass(
                        seat, mb, chunk, pending, last=index == last_backward[chunk]
                    )
                )
                forward = self.env.process(self._forward_pass(seat, f_mb, f_chunk))
                yield self.env.all_of([backward, forward])
                i += 2
                continue
            if phase == "F":
                yield from self._forward_pass(seat, mb, chunk)
            else:
                yield from self._backward_pass(
                    seat, mb, chunk, pending, last=index == last_backward[chunk]
                )
            i += 1
        if len(dp_group) > 1 and program.grad_reduce is GradReduce.AFTER_BACKWARD:
            # No overlap: every bucket is reduced after the whole backward pass.
            for chunk in sorted(set(chunks), reverse=True):
                for step in plan.programs[chunk * p + stage].backward:
                    if isinstance(step, GradBucketReady):
                        pending.append(self._reduce_bucket(step, groups, tile, stage, -1))
        if pending:
            self._activity[tile] = f"stage {stage} waits for its data-parallel gradient all-reduce"
            yield self.env.all_of(pending)
        self._activity[tile] = f"stage {stage} runs the optimizer step"
        yield from self._compute(program.optimizer, tile, stage, -1, "optimizer")
        if len(dp_group) > 1 and program.param_allgather_bytes > 0:
            self._activity[tile] = f"stage {stage} all-gathers its updated weights (ZeRO)"
            yield self._join(
                GroupKind.DP,
                dp_group,
                tile,
                "allgather",
                program.param_allgather_bytes,
                "dp_allgather",
                stage,
                -1,
            )
        edp_group = groups[GroupKind.EDP]
        if len(edp_group) > 1 and program.expert_param_allgather_bytes > 0:
            self._activity[tile] = f"stage {stage} all-gathers its updated experts (ZeRO)"
            yield self._join(
                GroupKind.EDP,
                edp_group,
                tile,
                "allgather",
                program.expert_param_allgather_bytes,
                "edp_allgather",
                stage,
                -1,
            )
        self._activity[tile] = "finished"
        self._finished.add(tile)

    def _forward_pass(self, seat: _Seat, mb: int, chunk: int) -> Generator[simpy.Event, Any, None]:
        """SimPy process step: the forward of micro-batch ``mb`` on model ``chunk``: wait for its
        activations, run it, hold its activations, send them on."""
        replica, stage, rank, tile, groups = seat
        plan = self.plan
        p, last_virtual = plan.num_stages, plan.num_virtual_stages - 1
        c = chunk * p + stage  # the virtual stage this step runs
        work = plan.programs[c]
        if c > 0:
            self._activity[tile] = f"stage {stage} waits for activations of micro-batch {mb}" + (
                f" (virtual stage {c})" if last_virtual >= p else ""
            )
            yield self._mailbox(("F", replica, c, rank, mb))
        yield from self._run_steps(work.forward, tile, groups, stage, mb, "forward", None)
        self._held[tile] += work.activation_bytes_per_microbatch
        self._record_memory(tile, self._held[tile])
        self._passes_done += 1
        if c < last_virtual:
            peer = plan.stage_tiles[replica][(c + 1) % p][rank]
            key = ("F", replica, c + 1, rank, mb)
            size = work.send_bytes
            sent = self._send(tile, peer, size, key, stage, mb)
            if plan.programs[stage].send_blocks:  # a send holds the tile until it has arrived
                self._activity[tile] = f"stage {stage} sends activations of mb {mb}"
                yield from self._wait(sent, tile, stage, mb, "forward.send", size, Phase.FORWARD)

    def _backward_pass(
        self, seat: _Seat, mb: int, chunk: int, pending: list[simpy.Event], *, last: bool
    ) -> Generator[simpy.Event, Any, None]:
        """SimPy process step: the backward of micro-batch ``mb`` on model ``chunk`` (``last``:
        the chunk's last of the iteration): wait for its gradients, recompute, run it
        (starting DP reductions into ``pending`` as the program's policy says), free its
        activations, send its input gradients back."""
        replica, stage, rank, tile, groups = seat
        plan = self.plan
        p, last_virtual = plan.num_stages, plan.num_virtual_stages - 1
        program = plan.programs[stage]
        c = chunk * p + stage
        work = plan.programs[c]
        if c < last_virtual:
            self._activity[tile] = f"stage {stage} waits for gradients of micro-batch {mb}" + (
                f" (virtual stage {c})" if last_virtual >= p else ""
            )
            yield self._mailbox(("B", replica, c, rank, mb))
        if work.recompute:
            yield from self._run_steps(work.recompute, tile, groups, stage, mb, "recompute", None)
        # ZeRO-2/3 keep a gradient shard only, so every backward reduces its buckets.
        data_parallel = len(groups[GroupKind.DP]) > 1
        overlap = last and data_parallel and program.grad_reduce is GradReduce.OVERLAP_BACKWARD
        every = data_parallel and program.grad_reduce is GradReduce.EVERY_BACKWARD
        buckets = pending if overlap or every else None
        yield from self._run_steps(work.backward, tile, groups, stage, mb, "backward", buckets)
        self._held[tile] -= work.activation_bytes_per_microbatch
        self._record_memory(tile, max(0.0, self._held[tile]))
        self._passes_done += 1
        if c > 0:
            peer = plan.stage_tiles[replica][(c - 1) % p][rank]
            prev_send = plan.programs[c - 1].send_bytes
            key = ("B", replica, c - 1, rank, mb)
            sent = self._send(tile, peer, prev_send, key, stage, mb)
            if program.send_blocks:
                self._activity[tile] = f"stage {stage} sends gradients of mb {mb}"
                yield from self._wait(
                    sent, tile, stage, mb, "backward.send", prev_send, Phase.BACKWARD
                )

    def _inference_process(
        self, replica: int, stage: int, rank: int, tile: int
    ) -> Generator[simpy.Event, Any, None]:
        """SimPy process: one tile's serving run (mode 'inference').

        Prefill of every micro-batch in order, then decode steps k = 1 .. output_len - 1, each
        a forward pass of every micro-batch through the pipeline. Activations go to the next
        stage as p2p flows; the last stage sends the sampled token ids back to the first,
        which starts the micro-batch's next decode step only once they have arrived, so
        micro-batches fill the pipeline (pipelined decode). Records intervals of category
        ``prefill``/``decode`` and the tile's KV-cache bytes after every pass.
        """
        plan = self.plan
        inf = plan.inference
        assert inf is not None
        info = inf.stages[stage]
        num_stages = plan.num_stages
        groups = plan.groups(replica, stage, rank)
        prompt_len = inf.prompt_len
        per_mb_token = info.kv_bytes_per_token / plan.num_microbatches
        passes: list[tuple[str, int, tuple[Step, ...], float]] = [
            ("prefill", 0, info.prefill, plan.programs[stage].send_bytes)
        ]
        passes += [
            ("decode", k, steps, inf.decode_send_bytes) for k, steps in enumerate(info.decode, 1)
        ]
        for category, k, steps, send_bytes in passes:
            for mb in range(plan.num_microbatches):
                if stage > 0:
                    self._activity[tile] = f"stage {stage} waits for {category} {k} of mb {mb}"
                    yield self._mailbox(("I", replica, stage, rank, mb, k))
                elif k > 0 and num_stages > 1:
                    self._activity[tile] = f"stage 0 waits for token {k} of micro-batch {mb}"
                    yield self._mailbox(("I", replica, 0, rank, mb, k))
                yield from self._run_steps(steps, tile, groups, stage, mb, category, None)
                tokens = prompt_len + k  # cached per request after this pass
                held = per_mb_token * (plan.num_microbatches * (tokens - 1) + mb + 1)
                if k == 0:
                    held = per_mb_token * prompt_len * (mb + 1)
                self._record_memory(tile, held)
                self._passes_done += 1
                if stage < num_stages - 1:
                    peer, size = plan.stage_tiles[replica][stage + 1][rank], send_bytes
                    key = ("I", replica, stage + 1, rank, mb, k)
                elif num_stages > 1 and k + 1 < inf.output_len:
                    peer, size = plan.stage_tiles[replica][0][rank], inf.token_send_bytes
                    key = ("I", replica, 0, rank, mb, k + 1)
                else:
                    continue
                sent = self._send(tile, peer, size, key, stage, mb)
                if plan.programs[stage].send_blocks:
                    self._activity[tile] = f"stage {stage} sends {category} {k} of mb {mb}"
                    yield from self._wait(sent, tile, stage, mb, f"{category}.send", size, category)
        self._activity[tile] = "finished"
        self._finished.add(tile)

    def _run_steps(
        self,
        steps: tuple[Step, ...],
        tile: int,
        groups: dict[str, tuple[int, ...]],
        stage: int,
        mb: int,
        category: str,
        dp_buckets: list[simpy.Event] | None,
    ) -> Generator[simpy.Event, Any, None]:
        """Run a pass's steps on ``tile``, whose group of each kind is ``groups``
        (:meth:`MappingPlan.groups`); with ``dp_buckets`` start DP reductions on markers.

        A stage that runs a forward and a backward together (merged 1F1B) counts each pass
        kind's collectives apart (``stream``), so that every member's n-th forward
        collective on a group is the same one whatever the two passes' interleaving."""
        stream, compute = "", self._compute
        if self.plan.programs[stage].merge_forward_backward:
            stream = "F" if category == "forward" else "B"
            compute = self._compute_in_turn
        start = self.env.now  # when the host starts issuing the pass (host_issued_s)
        for step in steps:
            if isinstance(step, ComputeStep):
                if mb < step.from_microbatch:
                    continue
                self._activity[tile] = (stage, category, step, mb, ())
                issued = start + step.host_issued_s if step.host_issued_s > 0 else 0.0
                yield from compute(step, tile, stage, mb, category, issued)
            elif isinstance(step, CollectiveStep):
                if step.first_microbatch_only and mb > 0:
                    continue
                group = groups[step.group]
                if len(group) < 2:
                    if step.overlap is not None:
                        yield from compute(step.overlap, tile, stage, mb, category)
                    continue
                if step.prefetched:  # started by an earlier step of the pass
                    done = self._prefetched.pop((tile, step.layer, step.op))
                else:
                    done = self._start(step, group, tile, stage, mb, stream)
                if step.overlap is not None:  # runs while the collective is in flight
                    self._activity[tile] = (stage, category, step.overlap, mb, ())
                    yield from compute(step.overlap, tile, stage, mb, category)
                self._activity[tile] = (stage, category, step, mb, group)
                # the tile's wait, after any overlapped compute
                label = f"{category}.{step.label}"
                yield from self._wait(done, tile, stage, mb, label, step.size_bytes, category, step)
                if step.prefetch is not None:  # in flight while the tile runs on
                    ahead = step.prefetch
                    key = (tile, ahead.layer, ahead.op)
                    self._prefetched[key] = self._start(ahead, group, tile, stage, mb, stream)
            elif isinstance(step, GradBucketReady):
                if dp_buckets is not None:
                    every = self.plan.programs[stage].grad_reduce is GradReduce.EVERY_BACKWARD
                    bucket_mb = mb if every else -1
                    dp_buckets.append(
                        self._reduce_bucket(step, groups, tile, stage, bucket_mb, stream)
                    )
            else:  # pragma: no cover - exhaustive over Step
                raise AssertionError(step)

    def _start(
        self,
        step: CollectiveStep,
        group: tuple[int, ...],
        tile: int,
        stage: int,
        mb: int,
        stream: str = "",
    ) -> simpy.Event:
        """Arrive at ``step``'s collective on ``group``; return its completion event."""
        category = f"{step.group}_{step.kind}"
        return self._join(
            step.group, group, tile, step.kind, step.size_bytes, category, stage, mb, stream
        )

    def _wait(
        self,
        done: simpy.Event,
        tile: int,
        stage: int,
        mb: int,
        label: str,
        size_bytes: float,
        phase: str,
        step: CollectiveStep | None = None,
    ) -> Generator[simpy.Event, Any, None]:
        """SimPy process step: hold ``tile`` until ``done`` (a collective ``step`` or a send
        it started) in pass ``phase``; records the wait as a ``comm`` interval labelled
        ``label``, with the step's typed identity."""
        start = self.env.now
        yield done
        if step is None:
            code = self._interval_records.code(("comm", label, phase, -1, "", label))
        else:
            template = self._interval_templates.get((id(step), phase))
            if template is None:
                # IntervalRecord's coded fields: category, label, phase, layer, block, op
                what = ("comm", label, phase, step.layer, step.block, f"{phase}.{step.op}")
                template = (0.0, size_bytes, self._interval_records.code(what))
                self._interval_templates[id(step), phase] = template
            code = template[2]
        self._append_interval(tile, start, stage, mb, 0.0, size_bytes, code)

    def _reduce_bucket(
        self,
        step: GradBucketReady,
        groups: dict[str, tuple[int, ...]],
        tile: int,
        stage: int,
        mb: int,
        stream: str = "",
    ) -> simpy.Event:
        """Start the data-parallel reduction of a gradient bucket (all-reduce, or ZeRO's
        reduce-scatter) over its group: DP, or EDP for routed experts' gradients."""
        category = f"{step.group}_{step.kind}"
        return self._join(
            step.group,
            groups[step.group],
            tile,
            step.kind,
            step.size_bytes,
            category,
            stage,
            mb,
            stream,
        )

    def _compute_in_turn(
        self,
        step: ComputeStep,
        tile: int,
        stage: int,
        mb: int,
        category: str,
        issued_at: float = 0.0,
    ) -> Generator[simpy.Event, Any, None]:
        """:meth:`_compute` on a tile that runs a forward and a backward together (merged
        1F1B): once the other pass's op has finished."""
        with self._compute_locks[tile].request() as turn:
            yield turn
            yield from self._compute(step, tile, stage, mb, category, issued_at)

    def _compute(
        self,
        step: ComputeStep,
        tile: int,
        stage: int,
        mb: int,
        category: str,
        issued_at: float = 0.0,
    ) -> Generator[simpy.Event, Any, None]:
        """Hold the tile for the step's roofline time while its DRAM traffic flows; with
        ``lead_read_bytes`` start the next prefetched step's weight reads, and with
        ``read_ahead_bytes`` also wait for those an earlier step started; then, a ``host``
        interval, until ``issued_at``, when the host has issued the step's last op
        (``host_issued_s``)."""
        env = self.env
        start = env.now
        awaited = None  # a read ahead this step waits for
        if step.read_ahead_bytes > 0 or step.lead_read_bytes > 0:  # no private DRAM port
            awaited = self._start_lead(step, tile, stage, mb)
        private = self._private_dram.get(tile)
        read_bytes, write_bytes = step.dram_read_bytes, step.dram_write_bytes
        if private is not None:
            yield env.timeout(self._private_dram_step_s(step, tile, stage, mb, private))
        elif read_bytes <= 0 and write_bytes <= 0:
            yield env.timeout(step.compute_time_s)
        else:
            # The ops' fixed latency runs in series: their data moves only once they run.
            serial_s = step.serial_latency_s
            if serial_s > 0:
                yield env.timeout(serial_s)
            # The step ends with the last of its compute time and its DRAM flows' arrivals:
            # one event where the last of them would be processed (LastOf), first the compute
            # time's, taken as env.timeout(compute_s) would be scheduled, then each flow's at
            # its drain.
            last = LastOf(env, 1 + (read_bytes > 0) + (write_bytes > 0))
            last.add(step.compute_time_s - serial_s)
            if read_bytes > 0:
                self._dram_flow(tile, read_bytes, stage, mb, write=False, join=last)
            if write_bytes > 0:
                self._dram_flow(tile, write_bytes, stage, mb, write=True, join=last)
            yield last
        if awaited is not None:
            yield awaited
        self._record_interval(step, tile, stage, mb, category, start)
        if env.now < issued_at:  # done before the host has issued the step's last op
            waited = env.now
            yield env.timeout(issued_at - waited)
            self._record_host_wait(step, tile, stage, mb, category, waited)

    def _start_lead(self, step: ComputeStep, tile: int, stage: int, mb: int) -> simpy.Event | None:
        """Start ``step``'s read ahead (``lead_read_bytes``, awaited by a later step of the
        tile); return the read ahead an earlier step started that ``step`` awaits, if any."""
        awaited = self._lead_reads.pop(tile) if step.read_ahead_bytes > 0 else None
        if step.lead_read_bytes > 0:
            flow = self._dram_flow(tile, step.lead_read_bytes, stage, mb, write=False)
            self._lead_reads[tile] = flow
        return awaited

    def _dram_flow(
        self,
        tile: int,
        nbytes: float,
        stage: int,
        mb: int,
        *,
        write: bool,
        join: LastOf | None = None,
    ) -> simpy.Event:
        """Start a flow of ``nbytes`` between ``tile`` and its DRAM port (a write or a read);
        its arrival is one of ``join``'s, or its own event."""
        route = self._dram_routes[tile][1 if write else 0]
        return self.network.transfer(
            route.channels,
            nbytes,
            route.latency_s,
            category="dram",
            src=tile if write else -1,
            dst=-1 if write else tile,
            stage=stage,
            microbatch=mb,
            join=join,
        )

    def _private_dram_step_s(
        self,
        step: ComputeStep,
        tile: int,
        stage: int,
        mb: int,
        private: tuple[int, float, float],
    ) -> float:
        """The step's duration on a tile with a private DRAM port (:func:`private_dram_step_s`);
        records its DRAM flows as the flow network would have timed them."""
        channel, bandwidth, latency_s = private
        start = self.env.now
        read, write = step.dram_read_bytes, step.dram_write_bytes
        # The same for every micro-batch: timed once per step and port (the plan keeps its
        # steps for the whole run, so their ids stay theirs).
        key = (id(step), bandwidth, latency_s)
        timing = self._private_timing.get(key)
        if timing is None:
            # The ops' fixed latency runs in series with the data movement.
            timing = self._private_timing[key] = (
                step.serial_latency_s if read > 0 or write > 0 else 0.0,
                *private_dram_drain_s(read, write, bandwidth),
                private_dram_step_s(step, bandwidth, latency_s),
            )
        launch_s, read_drain_s, write_drain_s, step_s = timing
        flows = ((read, read_drain_s, False), (write, write_drain_s, True))
        for nbytes, drain_s, is_write in flows:
            if nbytes > 0:
                self.network.record_closed_form(
                    (channel,),
                    nbytes,
                    start + launch_s,
                    start + (launch_s + (drain_s + latency_s)),
                    category="dram",
                    src=tile if is_write else -1,
                    dst=-1 if is_write else tile,
                    stage=stage,
                    microbatch=mb,
                )
        return step_s

    def _record_interval(
        self, step: ComputeStep, tile: int, stage: int, mb: int, category: str, start: float
    ) -> None:
        """Record the compute interval of ``step`` on ``tile`` from ``start`` to now."""
        template = self._interval_templates.get((id(step), category))
        if template is None:
            # IntervalRecord's coded fields: category, label, phase, layer, block, op
            what = (category, step.label, category, step.layer, step.block, step.op)
            template = (
                step.flop,
                step.sram_bytes
                + step.dram_read_bytes
                + step.read_ahead_bytes
                + step.dram_write_bytes,
                self._interval_records.code(what),
            )
            self._interval_templates[id(step), category] = template
        flop, nbytes, code = template
        self._append_interval(tile, start, stage, mb, flop, nbytes, code)

    def _record_host_wait(
        self, step: ComputeStep, tile: int, stage: int, mb: int, phase: str, start: float
    ) -> None:
        """Record ``tile``'s wait from ``start`` to now for the host to issue ``step``'s
        last op as a ``host`` interval of pass ``phase`` (label ``host.{label}``, op
        ``{phase}.{op}``, as a collective's wait is labelled by its pass)."""
        template = self._interval_templates.get((id(step), f"host.{phase}"))
        if template is None:
            label = f"host.{step.label}"
            what = ("host", label, phase, step.layer, step.block, f"{phase}.{step.op}")
            template = (0.0, 0.0, self._interval_records.code(what))
            self._interval_templates[id(step), f"host.{phase}"] = template
        self._append_interval(tile, start, stage, mb, 0.0, 0.0, template[2])

    def _append_interval(
        self,
        tile: int,
        start: float,
        stage: int,
        mb: int,
        flop: float,
        nbytes: float,
        code: int,
    ) -> None:
        """Append an IntervalRecord that ends now; ``code`` is what ran
        (``RecordBuilder.code`` of its coded fields)."""
        add_tile, add_start, add_end, add_stage, add_mb, add_flop, add_bytes, add_code = (
            self._interval_records.append
        )
        add_tile(tile)
        add_start(start)
        add_end(self.env.now)
        add_stage(stage)
        add_mb(mb)
        add_flop(flop)
        add_bytes(nbytes)
        add_code(code)

    def _record_memory(self, tile: int, activation_bytes: float) -> None:
        """Append a MemoryRecord: ``tile`` holds ``activation_bytes`` from now."""
        records = self._memory_records
        add_time, add_bytes, add_code = records.append
        add_time(self.env.now)
        add_bytes(activation_bytes)
        add_code(records.code(tile))

    # ------------------------------------------------------------------ communication

    def _mailbox(self, key: tuple[Any, ...]) -> simpy.Event:
        """The event signalling that the message ``key`` has arrived.

        A message has one sender and one receiver, each asking for its event once: the
        first creates it, the second takes it out of the table, so the table holds only
        messages in flight (it kept every message of the run: G1, 512 micro-batches, about
        200 MiB of events and keys).
        """
        event = self._mail.pop(key, None)
        if event is None:
            event = self._mail[key] = self.env.event()
        return event

    def _send(
        self, src: int, dst: int, size_bytes: float, key: tuple[Any, ...], stage: int, mb: int
    ) -> simpy.Event:
        """Start a point-to-point flow; its arrival triggers the receiver's mailbox event.

        Returns the flow's completion, for a sender that blocks on it (the program's
        ``send_blocks``, Megatron-LM's ``_communicate``: ``req.wait()`` on its isend, then a
        device synchronize). Simplification: no rendezvous, a send starts whether or not its
        receiver has posted the receive yet (that wait is only the receiver's mailbox).
        """
        route = self.chip.route(src, dst)
        done = self.network.transfer(
            route.channels,
            size_bytes,
            route.latency_s,
            category="p2p",
            src=src,
            dst=dst,
            stage=stage,
            microbatch=mb,
        )
        mailbox = self._mailbox(key)

        def deliver(_event: simpy.Event) -> None:
            mailbox.succeed()

        done.callbacks.append(deliver)
        return done

    def _join(
        self,
        group_kind: str,
        group: tuple[int, ...],
        tile: int,
        kind: str,
        size_bytes: float,
        category: str,
        stage: int,
        mb: int,
        stream: str = "",
    ) -> simpy.Event:
        """Arrive at the next collective of ``group``; return its completion event.

        Each member counts its own collectives on the group (of each ``stream``: the pass
        kind under merged 1F1B), so the n-th arrival of every member is the same collective.
        A collective starts once all members have arrived and the group's previous collective
        has finished (one communicator, one stream). Members
        that are not simulated (symmetric replicas) do not arrive; their arrival is implied.
        Groups of different kinds (``group_kind``) are different communicators even with the
        same members.
        """
        if len(group) == 1:
            done = self.env.event()
            done.succeed()
            return done
        seq_key = (group_kind, group, tile, stream)
        seq = self._group_seq.get(seq_key, 0)
        self._group_seq[seq_key] = seq + 1
        key = (group_kind, group, stream, seq)
        coll = self._collectives.get(key)
        if coll is None:
            coll = self._collectives[key] = _Collective(
                group, kind, size_bytes, category, stage, mb, 0, self.env.event(), group_kind
            )
        assert coll.kind == kind and coll.size_bytes == size_bytes, "collective mismatch in group"
        coll.arrived += 1
        comm = self._communicators[group_kind, group]
        if coll.arrived == comm.num_arriving:
            del self._collectives[key]
            if comm.exclusive:
                self._closed_form_ring(coll, comm)
            else:
                previous = self._group_tail.get((group_kind, group))
                self._group_tail[group_kind, group] = coll.done
                self._ring(coll, previous)
        return coll.done

    def _closed_form_ring(self, coll: _Collective, comm: Communicator) -> None:
        """Time a collective of an exclusive communicator without simulating its flows.

        Its flows meet no other flow (``Communicator.exclusive``), so each runs alone at its
        narrowest channel's bandwidth (or its cap, if less) and arrives the communicator's
        startup plus ``steps`` route latencies after it drains, exactly what the flow network
        would give; the collective starts when the group's previous one has ended and ends
        with its last flow. Records its flows; one event.
        """
        env = self.env
        now = env.now
        start = max(now, self._group_end_s.get((coll.group_kind, coll.tiles), now))
        n = len(coll.tiles)
        steps = RING_STEPS[coll.kind](n)
        edge_bytes = steps / n * coll.size_bytes
        arrivals = []
        for f, narrowest in zip(comm.flows, self._narrowest[id(comm)], strict=True):
            size = f.share * edge_bytes
            drain_s = 0.0
            if f.channels and size > 0:
                drain_s = size / min(narrowest, comm.cap_bytes_per_s(coll.kind, f, narrowest))
            fixed_s = comm.fixed_time_s(coll.kind, steps, f, size, narrowest)
            arrivals.append((f, size, start + drain_s + fixed_s))
        end = max([start] + [arrival for _, _, arrival in arrivals])
        # The event fires at now + (end - now), which rounding can put one ulp before ``end``:
        # no flow is recorded as arriving after the collective has ended.
        fire = now + (end - now)
        for f, size, arrival in arrivals:
            self.network.record_closed_form(
                f.channels,
                size,
                start,
                min(arrival, fire),
                category=coll.category,
                src=f.src,
                dst=f.dst,
                stage=coll.stage,
                microbatch=coll.microbatch,
            )
        self._group_end_s[coll.group_kind, coll.tiles] = end
        trigger_in(coll.done, end - now)

    def _ring(self, coll: _Collective, previous: simpy.Event | None) -> None:
        """Run a ring collective as its communicator's flows (module docstring), after the
        group's ``previous`` collective; ``coll.done`` fires when every flow has arrived.

        Callbacks in place of a SimPy process, with its events where they order anything: the
        flows start when an urgent event of this instant is processed (a process's first
        step) or when ``previous`` is (a process waiting for it); the last arrival, one
        event (:class:`LastOf`), triggers an event (an ``AllOf`` of the arrivals) whose
        processing triggers ``coll.done`` (the process's last step). One event per flow, the
        process's start and its end are saved.
        """
        env = self.env

        def start_flows(_event: simpy.Event | None) -> None:
            n = len(coll.tiles)
            steps = RING_STEPS[coll.kind](n)
            edge_bytes = steps / n * coll.size_bytes
            comm = self._communicators[coll.group_kind, coll.tiles]
            arrived = env.event()  # the AllOf of the flows' arrivals

            def on_last_arrival(_event: simpy.Event) -> None:
                arrived.succeed()

            def on_arrived(_event: simpy.Event) -> None:
                coll.done.succeed()

            arrived.callbacks.append(on_arrived)
            last = LastOf(env, len(comm.flows))
            last.callbacks.append(on_last_arrival)
            for f, narrowest in zip(comm.flows, self._narrowest[id(comm)], strict=True):
                self.network.transfer(
                    f.channels,
                    f.share * edge_bytes,
                    comm.fixed_time_s(coll.kind, steps, f, f.share * edge_bytes, narrowest),
                    category=coll.category,
                    src=f.src,
                    dst=f.dst,
                    stage=coll.stage,
                    microbatch=coll.microbatch,
                    join=last,
                    cap_bytes_per_s=comm.cap_bytes_per_s(coll.kind, f, narrowest),
                )

        def start(_event: simpy.Event) -> None:
            if previous is not None and not previous.processed:
                previous.callbacks.append(start_flows)
            else:
                start_flows(None)

        initialize = env.event()
        initialize._ok = True
        initialize._value = None
        initialize.callbacks.append(start)
        env.schedule(initialize, simpy.events.URGENT)
