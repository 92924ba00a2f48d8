"""An analytical lower bound on a plan's iteration time, from the plan alone (no engine).

Every term below is a time the simulated iteration cannot beat, so their maximum is a true
lower bound (tests check it against simulation on many random cases):

- **A compute step** on tile ``t`` lasts at least ``max(compute_time_s, r / B_r, w / B_w,
  (r + w) / B_port)``: the engine holds the tile for ``compute_time_s`` while the step's ``r``
  DRAM bytes read and ``w`` bytes written flow over routes whose narrowest channels are
  ``B_r`` and ``B_w``, both through the tile's DRAM port of bandwidth ``B_port`` (reads and
  writes share it). A blocking ring collective (TP, or ZeRO-3's weight gathers) lasts at
  least its slowest ring edge's bytes over that edge's narrowest channel plus one route
  latency per ring step (this includes the all-gather of a scatter-gathered pipeline
  receive). **Ranks sharing a DRAM port:** a blocking collective ends at one event for all its
  members, and the next one of the same group starts once all have arrived, so the compute
  steps between two of them last at least ``max_P n_P·b / B_P`` over the group's ports ``P``
  (``n_P`` members on port ``P``, ``b`` DRAM bytes each), beside the tile's own time; a pass
  that follows another ending with such a collective counts its leading steps the same way
  (on the T-18B/TX8 search, snake-placed TP-8 groups put four ranks on a port: bound 52.5 ->
  62.2 s against 62.6 s simulated). Pipeline transfers, blocking (``mapping.p2p_overlap``
  false) or not, the overlapped DP reductions and the steps that skip the first micro-batch
  (PyTorch's gradient accumulation, ``from_microbatch`` 1) count 0, which only loosens the
  bound.
- **A pipeline** (one model chunk per stage): stage ``s`` starts micro-batch 0 only after every
  earlier stage has run its forward, ``Σ_{j<s} F_j``; it then runs ``m`` forwards, recomputes
  and backwards, ``m·(F_s + R_s + B_s)``, one after another on its tiles; after its last
  backward either every earlier stage still recomputes and back-propagates that micro-batch,
  ``Σ_{j<s} (R_j + B_j)``, or the stage runs its optimizer step ``O_s``::

      T >= Σ_{j<s} F_j + m·(F_s + R_s + B_s) + max(Σ_{j<s} (R_j + B_j), O_s)

- **A DRAM port** moves all the DRAM bytes of the tiles it serves: ``T >= Σ bytes / B_port``.

With interleaving (several chunks per stage) only the port bound and each stage's total work
``Σ_chunks m·(F + R + B) + O`` are used.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from palmsim.hardware.chip import Chip
from palmsim.hardware.collectives import RING_STEPS, collective_steps
from palmsim.mapping.plan import (
    CollectiveStep,
    Communicator,
    ComputeStep,
    GradBucketReady,
    MappingPlan,
    Step,
)

__all__ = ["iteration_lower_bound_s"]


def _narrowest_bandwidth(chip: Chip, channels: Sequence[int]) -> float:
    return min(chip.channels[c].bandwidth_bytes_per_s for c in channels)


def _ring_lower_bound_s(
    chip: Chip, comm: Communicator | None, kind: str, size_bytes: float
) -> float:
    """A ring collective of S bytes on ``comm``: each of its flows carries share·steps/n·S
    and pays its route's latency once per step, so it lasts at least the slowest flow's
    ``share·steps/n·S / B_narrowest + steps·latency`` (a ring fabric's flow: the ring
    fabric's steps, :func:`~palmsim.hardware.collectives.collective_steps`). No
    communicator: a group of one, 0."""
    if comm is None:
        return 0.0
    n = len(comm.members)
    steps = RING_STEPS[kind](n)
    edge_bytes = steps / n * size_bytes
    slowest = 0.0
    for f in comm.flows:
        if f.channels:
            time_s = f.share * edge_bytes / _narrowest_bandwidth(chip, f.channels)
            hops = collective_steps(kind, steps, ring_fabric=f.ring)[0]
            slowest = max(slowest, time_s + hops * f.latency_s)
    return slowest


def _steps_lower_bound_s(
    chip: Chip,
    tile: int,
    port_of: dict[int, int],
    steps: Sequence[Step],
    groups: dict[str, Communicator | None],
    entry: Communicator | None = None,
) -> float:
    """The tile's time for ``steps``; ``entry``: the barrier every member passed last before
    them (:func:`_closing_barrier`), or None."""
    port = port_of[tile]
    read_route = chip.dram_route(tile, port, write=False).channels
    write_route = chip.dram_route(tile, port, write=True).channels
    read_bw = _narrowest_bandwidth(chip, read_route)
    write_bw = _narrowest_bandwidth(chip, write_route)
    port_bw = _port_bandwidth(chip, port)

    def compute_s(step: ComputeStep) -> float:
        r, w = step.dram_read_bytes, step.dram_write_bytes
        return max(step.compute_time_s, r / read_bw, w / write_bw, (r + w) / port_bw)

    total = 0.0
    # The compute steps since the last barrier (a blocking collective every member waits for
    # from its start to its end): the tile's time for them, and their DRAM bytes per member.
    barrier = entry
    segment_s = segment_bytes = 0.0
    for step in steps:
        if isinstance(step, ComputeStep):
            if step.from_microbatch == 0:
                segment_s += compute_s(step)
                segment_bytes += step.dram_read_bytes + step.dram_write_bytes
            continue
        if not isinstance(step, CollectiveStep):
            continue
        comm = groups[step.group]
        if barrier is not None and comm is barrier:
            segment_s = max(segment_s, _shared_ports_s(chip, comm, port_of, segment_bytes))
        total += segment_s
        segment_s = segment_bytes = 0.0
        if step.prefetched:
            barrier = None  # in flight while earlier steps ran: it may cost the tile nothing
            continue
        # blocking: the tile waits for the ring
        ring_s = _ring_lower_bound_s(chip, comm, step.kind, step.size_bytes)
        # a compute step overlapping the collective runs alongside it (tp_overlap)
        total += max(ring_s, compute_s(step.overlap)) if step.overlap else ring_s
        barrier = comm if comm is not None and not step.overlap else None
    return total + segment_s


def _closing_barrier(
    passes: Sequence[Sequence[Step]], groups: dict[str, Communicator | None]
) -> Communicator | None:
    """The communicator whose blocking collective ends every one of a stage's ``passes``
    (nothing but gradient-bucket markers after it), or None. A pass then starts where the
    stage's previous pass ended, at that barrier: its members pass the mailbox and the send
    between them on their own, which only adds time. (A stage's first pass starts when its
    members start, each no earlier than the bound's head; that holds for it too.)"""
    closing: set[int] = set()
    found: Communicator | None = None
    for steps in passes:
        last = next((s for s in reversed(steps) if not isinstance(s, GradBucketReady)), None)
        if not isinstance(last, CollectiveStep) or last.prefetched or last.overlap:
            return None
        found = groups[last.group]
        if found is None:
            return None
        closing.add(id(found))
    return found if len(closing) == 1 else None


def _shared_ports_s(
    chip: Chip, comm: Communicator, port_of: dict[int, int], member_bytes: float
) -> float:
    """Between two blocking collectives of ``comm`` every member runs the same steps, from the
    first collective's end (one event releases them all) to its arrival at the second, which
    starts once all have arrived: the members sharing a DRAM port move their
    ``member_bytes`` each through it in that time."""
    sharing = Counter(port_of[t] for t in comm.members)
    return max(n * member_bytes / _port_bandwidth(chip, port) for port, n in sharing.items())


def _port_bandwidth(chip: Chip, port: int) -> float:
    return chip.channels[chip.dram_ports[port].channel].bandwidth_bytes_per_s


def _dram_bytes(steps: Sequence[Step]) -> float:
    computes = [s for s in steps if isinstance(s, ComputeStep) and s.from_microbatch == 0]
    computes += [s.overlap for s in steps if isinstance(s, CollectiveStep) and s.overlap]
    return sum(s.dram_read_bytes + s.dram_write_bytes for s in computes)


def iteration_lower_bound_s(plan: MappingPlan, chip: Chip) -> float:
    """A time the simulated iteration of ``plan`` on ``chip`` cannot beat [s]."""
    p, m = plan.num_stages, plan.num_microbatches
    port_of = dict(plan.dram_port_of_tile)
    chunks = plan.num_virtual_stages // p
    comms = {(str(c.group), c.members): c for c in plan.communicators}
    forward: list[float] = [0.0] * p
    redo_back: list[float] = [0.0] * p
    optimizer: list[float] = [0.0] * p
    stage_groups = [
        {
            str(kind): comms.get((str(kind), members))
            for kind, members in plan.groups(0, s, 0).items()
        }
        for s in range(p)
    ]
    passes = [(program.forward, program.recompute + program.backward) for program in plan.programs]
    entry = [
        _closing_barrier([steps for c in range(s, len(passes), p) for steps in passes[c]], groups)
        for s, groups in enumerate(stage_groups)
    ]
    for c, program in enumerate(plan.programs):
        s = c % p
        tile, groups = plan.stage_tiles[0][s][0], stage_groups[s]
        steps_forward, steps_back = passes[c]
        forward[s] += _steps_lower_bound_s(chip, tile, port_of, steps_forward, groups, entry[s])
        redo_back[s] += _steps_lower_bound_s(chip, tile, port_of, steps_back, groups, entry[s])
        optimizer[s] = _steps_lower_bound_s(chip, tile, port_of, (program.optimizer,), groups)
    bound = 0.0
    for s in range(p):
        work = m * (forward[s] + redo_back[s])
        if chunks == 1:
            head = sum(forward[:s])
            tail = max(sum(redo_back[:s]), optimizer[s])
        else:
            head, tail = 0.0, optimizer[s]
        bound = max(bound, head + work + tail)
    # every DRAM port moves the DRAM bytes of all its tiles
    port_bytes: dict[int, float] = defaultdict(float)
    for c, program in enumerate(plan.programs):
        per_tile = m * _dram_bytes(program.forward + program.recompute + program.backward)
        if c < p:  # the optimizer step once per physical stage
            per_tile += _dram_bytes((program.optimizer,))
        for replica in plan.stage_tiles:
            for tile in replica[c % p]:
                port_bytes[port_of[tile]] += per_tile
    for port, nbytes in port_bytes.items():
        bound = max(bound, nbytes / _port_bandwidth(chip, port))
    return bound
