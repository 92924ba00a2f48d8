"""The resource guard: refuse an experiment too large to simulate before any work is done.

A legal input can be absurd in size (a wafer of 10^30 dies, a global batch of 10^12 samples).
The guard estimates what a run costs and refuses it with a one-line error naming the input
behind the estimate when it passes the run's budgets, ``run.max_events`` and
``run.max_memory`` (:class:`palmsim.config.specs.RunSpec`; the defaults are fitted to a
2-core, 24 GiB machine, both are overridable with ``--set``). It runs twice:

1. :func:`check_experiment`, on the specs alone, before the chip is elaborated or the
   workload mapped. Its estimate is a **lower bound**, so it never refuses a run that would
   fit, and it stops what would hang the mapper itself (e.g. 10^8 layers or 10^10
   micro-batches, whose schedules the mapper would build):

   - elaboration work: ``T`` tiles, each :data:`TILE_EVENTS` event-equivalents, and
     ``T x CHIP_BYTES_PER_TILE`` bytes (:mod:`palmsim.hardware.chip`; ``Chip.from_spec``
     checks the same tile limit before it builds a graph);
   - training: ``E >= 2 * m * L * t * r`` events, with ``m`` micro-batches per pipeline
     (``global_batch_size // (micro_batch_size * dp)``), ``L`` layers, ``t`` the TP ranks
     of a stage simulated and ``r`` the data-parallel replicas simulated (1 and 1 on a GPU
     cluster that may reduce symmetric ranks and replicas, else ``tp`` and ``dp``): in
     replica 0 every simulated tile of a stage runs a forward and a backward of every
     micro-batch through every layer it holds, at least one compute step each (the mapper
     never fuses two layers into one step), and each compute step is at least one SimPy
     event;
   - inference: ``E >= m * n_out * L * t * r`` (a prefill and ``n_out - 1`` decode passes
     of each micro-batch through every layer);
   - a mixture of experts: ``8 * ep * E_experts`` bytes, one layer's routing table.

2. :func:`check_plan`, on the :class:`MappingPlan` before simulating, with the step counts
   the engine will execute (:func:`plan_estimate`): per simulated tile, for each scheduled
   pass, one event per compute step plus one per DRAM flow it starts (a port shared with
   other tiles; a private port is timed in closed form), one per collective it joins and
   one per flow of it the tile sends (about one per ring of a ring collective; ``ep - 1`` in
   an expert-parallel all-to-all), and two per pipeline send (the flow and the receiver's
   mailbox). The events are an upper estimate: since a step's flows are joined in one
   event (``engine.flows.LastOf``), a flow costs the flow network's rate updates and
   completion timers instead, fewer than one event each (W1: 730 k estimated, 259 k
   simulated; GPU runs, whose HBM traffic is closed form, 1.5-2x). Records are one interval
   per compute step and collective wait, one flow record per DRAM read or write (on a
   private port too), collective flow and send, and one memory record per pass (W1: 724 k
   estimated, 703 k kept).

3. :class:`ServingBudget`, for ``palmsim serve``: its requests' bytes before any is
   generated, then, while it runs, its iterations projected from the requests that have
   arrived (a serving run's iterations depend on how its requests batch, so no lower bound
   before the run would be tight).

Memory is the records' bytes (:data:`BYTES_PER_RECORD`) plus the chip's. Both are estimates
of the dominant terms, not the interpreter's whole footprint.
"""

from __future__ import annotations

from dataclasses import dataclass

from palmsim.config.specs import ExperimentSpec, RunSpec
from palmsim.engine.records import ROW_BYTES
from palmsim.errors import MappingError
from palmsim.hardware.chip import (
    CHIP_BYTES_PER_TILE,
    TILE_EVENTS,
    Chip,
    check_tile_count,
    max_tiles,
)
from palmsim.mapping.plan import CollectiveStep, ComputeStep, MappingPlan, Step

__all__ = [
    "BYTES_PER_RECORD",
    "ROUTING_BYTES_PER_ENTRY",
    "SERVING_EVENTS_PER_ITERATION",
    "Estimate",
    "ServingBudget",
    "check_experiment",
    "check_layers",
    "check_plan",
    "plan_estimate",
    "spec_estimate",
]

#: Bytes one record holds [B]: a run keeps its records as typed columns
#: (:class:`palmsim.engine.records.Records`), so a record is one row of its type's columns,
#: the sum of its numeric fields' widths plus one int32 code for the fields that take few
#: values together (:data:`~palmsim.engine.records.ROW_BYTES`): an interval 4 float64 + 3
#: int32 + the code = 48 B, a flow 3 float64 + 1 int64 + 1 int32 + the code = 40 B, a memory
#: sample 20 B. The estimate counts the widest, an interval's. The table the codes index
#: holds each distinct combination once (thousands per run), so it is not counted per record.
BYTES_PER_RECORD = max(ROW_BYTES.values())

#: Bytes of one entry of a mixture of experts' routing table [B]: a float64 load per source
#: rank and expert (:func:`palmsim.workload.moe.expert_loads`).
ROUTING_BYTES_PER_ENTRY = 8


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a run would cost: events (with elaboration work as event-equivalents), records
    and bytes, and the input the estimate grows with, for the message."""

    events: float
    records: float
    memory_bytes: float
    driver: str  # e.g. "training.global_batch_size=1000000 (31250 micro-batches)"


def spec_estimate(experiment: ExperimentSpec) -> Estimate:
    """A lower bound on the cost of ``experiment`` from its specs alone (module docstring)."""
    hw, workload, mapping = experiment.hardware, experiment.workload, experiment.mapping
    tiles = hw.num_tiles
    symmetric = hw.kind == "gpu_cluster" and experiment.run.symmetric_replicas
    replicas, ranks = (1, 1) if symmetric else (mapping.dp, mapping.tp)
    layers = workload.model.num_hidden_layers
    inference = workload.inference if workload.mode == "inference" else None
    if inference is not None:
        micro = max(1, inference.batch // max(1, mapping.dp * mapping.micro_batch_size))
        # a prefill pass per chunk of the prompt (inference.prefill_chunk_tokens), then a
        # decode pass per further token
        chunk, chunks = inference.prefill_passes()
        passes = micro * (chunks + inference.output_len - 1)
        driver = (
            f"inference.batch={inference.batch} x (inference.output_len="
            f"{inference.output_len} + {chunks - 1} further prefill chunks of "
            f"inference.prefill_chunk_tokens={chunk}) ({passes} passes per stage) over "
            f"model.num_hidden_layers={layers}"
        )
    else:
        batch = workload.training.global_batch_size
        micro = max(1, batch // max(1, mapping.dp * mapping.micro_batch_size))
        passes = 2 * micro
        driver = (
            f"training.global_batch_size={batch} ({micro} micro-batches of "
            f"{mapping.micro_batch_size} per replica) over model.num_hidden_layers={layers}"
        )
    steps = float(passes) * layers * ranks * replicas
    memory = steps * BYTES_PER_RECORD + tiles * CHIP_BYTES_PER_TILE
    # a mixture of experts: the mapper routes a layer's tokens by a table of
    # ep x num_experts float64 loads (workload.moe.expert_loads)
    routing = float(workload.model.num_experts) * max(1, mapping.ep) * ROUTING_BYTES_PER_ENTRY
    if routing > memory:
        driver = (
            f"model.num_experts={workload.model.num_experts} (a routing table of "
            f"{max(1, mapping.ep)} x {workload.model.num_experts} loads per layer)"
        )
    return Estimate(
        events=steps + tiles * TILE_EVENTS,
        records=steps,
        memory_bytes=memory + routing,
        driver=driver,
    )


def _pass_cost(
    steps: tuple[Step, ...], mb: int, shared_dram: bool, flows_per_member: dict[str, float]
) -> tuple[int, int]:
    """(events, records) of one pass of ``steps`` for micro-batch ``mb`` on one tile;
    ``flows_per_member``: a collective's flows per member, by group kind."""
    events = records = 0
    for step in steps:
        if isinstance(step, ComputeStep):
            if mb < step.from_microbatch:
                continue
            # A DRAM read or write is a flow record either way; on a private port it is timed
            # in closed form, so only a shared port's flows are events.
            reads = (step.dram_read_bytes > 0) + (step.lead_read_bytes > 0)
            dram = reads + (step.dram_write_bytes > 0)
            events += 1 + (dram if shared_dram else 0)
            records += 1 + dram
        elif isinstance(step, CollectiveStep):
            flows = round(flows_per_member.get(str(step.group), 0.0))
            events += 1 + flows
            records += 1 + flows
    return events, records


def plan_estimate(plan: MappingPlan, chip: Chip) -> Estimate:
    """The events and records the engine will produce for ``plan`` (module docstring)."""
    # A pass costs the same for every micro-batch from the largest ``from_microbatch`` on.
    every = [s for prog in plan.programs for s in (*prog.forward, *prog.backward)]
    settled = max((s.from_microbatch for s in every if isinstance(s, ComputeStep)), default=0)
    cache: dict[tuple[int, int, bool], tuple[int, int]] = {}
    # Every flow of a collective is a flow record (and a flow in the network): a ring has
    # about one per member and ring (NCCL's rings over several nodes: one per local GPU,
    # both directions on a bidirectional ring), an all-to-all of n members n - 1 per member
    # (pairwise exchange). Counted per member, the most of any communicator of the kind.
    flows_per_member: dict[str, float] = {}
    for comm in plan.communicators:
        per_member = len(comm.flows) / max(1, comm.num_arriving)
        kind = str(comm.group)
        flows_per_member[kind] = max(flows_per_member.get(kind, 0.0), per_member)

    def cost(steps: tuple[Step, ...], mb: int, shared: bool) -> tuple[int, int]:
        key = (id(steps), min(mb, settled), shared)
        if key not in cache:
            cache[key] = _pass_cost(steps, mb, shared, flows_per_member)
        return cache[key]

    users: dict[int, int] = {}
    for _, port in plan.dram_port_of_tile:
        users[port] = users.get(port, 0) + 1
    port_of = dict(plan.dram_port_of_tile)
    events = records = 0
    p = plan.num_stages
    for stages in plan.stage_tiles[: plan.simulated_replicas]:
        for stage, tiles in enumerate(stages):
            # One tile's cost; the stage's tiles run the same program (plan.StageProgram).
            shared = users.get(port_of.get(tiles[0], -1), 0) > 1
            tile_events = tile_records = 0
            program = plan.programs[stage]
            if plan.inference is not None:
                info = plan.inference.stages[stage]
                for steps in (info.prefill, *info.decode):
                    for mb in range(plan.num_microbatches):
                        e, r = cost(steps, mb, shared)
                        tile_events, tile_records = tile_events + e + 2, tile_records + r + 2
            else:
                chunks = program.step_chunks or (0,) * len(program.steps)
                for (phase, mb), chunk in zip(program.steps, chunks, strict=True):
                    work = plan.programs[chunk * p + stage]
                    passes = (work.forward,) if phase == "F" else (work.recompute, work.backward)
                    for steps in passes:
                        e, r = cost(steps, mb, shared)
                        tile_events, tile_records = tile_events + e + 2, tile_records + r + 2
            simulated = min(len(tiles), plan.simulated_ranks)
            events += tile_events * simulated
            records += tile_records * simulated
    tiles_total = chip.num_tiles
    return Estimate(
        events=float(events + tiles_total * TILE_EVENTS),
        records=float(records),
        memory_bytes=float(records * BYTES_PER_RECORD + tiles_total * CHIP_BYTES_PER_TILE),
        driver=(
            f"{len(plan.simulated_tiles)} simulated tiles x {plan.num_microbatches} "
            f"micro-batches x {sum(len(p.forward) + len(p.backward) for p in plan.programs)} "
            "steps per pass"
        ),
    )


def _refuse(estimate: Estimate, run: RunSpec, what: str) -> None:
    if estimate.events > run.max_events:
        raise MappingError(
            f"too large to simulate: {estimate.driver} {what} {estimate.events:.3g} SimPy "
            f"events, above run.max_events={run.max_events} (raise it with --set "
            "run.max_events=N, or shrink the input)"
        )
    if estimate.memory_bytes > run.max_memory_bytes:
        raise MappingError(
            f"too large to simulate: {estimate.driver} {what} "
            f"{estimate.memory_bytes / 2**30:.3g} GiB of records, above run.max_memory="
            f"{run.max_memory_bytes / 2**30:.3g} GiB (raise it with --set "
            "'run.max_memory=16 GiB', or shrink the input)"
        )


def check_experiment(experiment: ExperimentSpec) -> None:
    """Refuse ``experiment`` if even a lower bound on its cost passes the run's budgets.

    Raises:
        ConfigError: the chip has more tiles than the budgets allow (:func:`max_tiles`).
        MappingError: the lower bound passes ``run.max_events`` or ``run.max_memory``.
    """
    run = experiment.run
    where = dict(experiment.sources).get("hardware")
    check_tile_count(experiment.hardware, max_tiles(run.max_memory_bytes, run.max_events), where)
    _refuse(spec_estimate(experiment), experiment.run, "needs at least")


def check_layers(layers: int, run: RunSpec | None = None) -> None:
    """Refuse a model too deep to simulate before anything is built for it (a case reader
    counts a model's parameters layer by layer): one pass through it is at least one event
    per layer, the lower bound of :func:`spec_estimate` for a single micro-batch, step and
    tile.

    Raises:
        MappingError: ``layers`` passes ``run.max_events`` (default :class:`RunSpec`'s).
    """
    run = run or RunSpec()
    driver = f"model.num_hidden_layers={layers}"
    _refuse(Estimate(float(layers), float(layers), 0.0, driver), run, "needs at least")


def check_plan(plan: MappingPlan, chip: Chip, run: RunSpec) -> Estimate:
    """Refuse ``plan`` if its estimated cost passes ``run``'s budgets; return the estimate.

    Raises:
        MappingError: the estimate passes ``run.max_events`` or ``run.max_memory``.
    """
    estimate = plan_estimate(plan, chip)
    _refuse(estimate, run, "needs about")
    return estimate


# ----------------------------------------------------------------------------- serving

#: What one serving iteration costs in the event budget: ``palmsim serve`` with 20,000 of
#: the default requests ran 381,471 iterations in 24.6 s on the 2-core machine the budgets
#: are fitted to (2026-12-06), 15.5k iterations/s against the 40k events/s of
#: ``run.max_events``: 2.5 events an iteration.
SERVING_EVENTS_PER_ITERATION = 2.5
#: Bytes a served request holds until the run ends: its Request, RequestState and
#: RequestRecord, 162 + 160 + 152 B (tracemalloc over 100,000 requests, CPython 3.11).
SERVING_REQUEST_BYTES = 474
#: Bytes of one IterationRecord: a 12-field tuple (152 B) and its two floats (48 B).
SERVING_ITERATION_BYTES = 200
#: Iterations between two projections of a serving run's cost (:class:`ServingBudget`).
SERVING_CHECK_STRIDE = 1024


@dataclass(frozen=True, slots=True)
class ServingBudget:
    """The budgets of a serving run of ``num_requests`` requests.

    A serving run's iterations are not known before it runs (they depend on how many
    requests share a batch), so the guard projects them while it runs: every
    :data:`SERVING_CHECK_STRIDE` iterations, the iterations so far times the requests over
    those that have arrived. Arrivals follow simulated time, so the projection depends on
    the inputs alone (a run is refused, or not, the same way every time); it is refused
    as soon as the projection passes ``run.max_events`` (at ``events_per_iteration`` each:
    :data:`SERVING_EVENTS_PER_ITERATION` on one stage, whose iterations repeat segments
    simulated once; a pipelined iteration is simulated whole, every layer's steps) or the
    records ``run.max_memory``. The projection is made every
    :data:`SERVING_CHECK_STRIDE` iterations of one stage's cost, so at every iteration of a
    deep pipeline.
    """

    num_requests: int
    max_iterations: float
    events_per_iteration: float = SERVING_EVENTS_PER_ITERATION

    @classmethod
    def of(
        cls,
        num_requests: int,
        run: RunSpec,
        events_per_iteration: float = SERVING_EVENTS_PER_ITERATION,
    ) -> ServingBudget:
        """The budget, or MappingError if the requests alone pass ``run.max_memory``."""
        held = num_requests * SERVING_REQUEST_BYTES
        driver = f"serving.traffic.num_requests={num_requests}"
        if held > run.max_memory_bytes:
            _refuse(Estimate(num_requests, num_requests, held, driver), run, "needs at least")
        by_memory = (run.max_memory_bytes - held) / SERVING_ITERATION_BYTES
        by_events = run.max_events / events_per_iteration
        return cls(num_requests, min(by_events, by_memory), events_per_iteration)

    def check(self, iterations: int, arrived: int, run: RunSpec) -> None:
        """Refuse the run if its projected iterations pass the budget (class docstring)."""
        scale = SERVING_EVENTS_PER_ITERATION / self.events_per_iteration
        if iterations % max(1, round(SERVING_CHECK_STRIDE * scale)):
            return
        projected = iterations * self.num_requests / max(arrived, 1)
        if projected > self.max_iterations:
            driver = (
                f"serving.traffic.num_requests={self.num_requests} ({iterations} iterations "
                f"for the first {arrived} requests)"
            )
            events = projected * self.events_per_iteration
            memory = self.num_requests * SERVING_REQUEST_BYTES + projected * SERVING_ITERATION_BYTES
            _refuse(Estimate(events, projected, memory, driver), run, "would need about")
