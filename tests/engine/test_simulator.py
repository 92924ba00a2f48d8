"""Engine scenarios on hand-built plans and a fake ring chip, against closed forms."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from palmsim.config.specs import MappingSpec, RunSpec
from palmsim.engine.simulator import Simulator
from palmsim.errors import SimulationError
from palmsim.hardware.chip import Chip
from palmsim.mapping.communicators import ring_communicators
from palmsim.mapping.plan import (
    CollectiveStep,
    ComputeStep,
    MappingPlan,
    MemoryBreakdown,
    StageProgram,
)
from palmsim.mapping.schedule import gpipe, one_f_one_b
from tests.conftest import cluster_spec


@dataclass(frozen=True)
class _Channel:
    bandwidth_bytes_per_s: float


@dataclass(frozen=True)
class _Route:
    channels: tuple[int, ...]
    latency_s: float


class RingChip:
    """n tiles on a unidirectional ring: channel i joins tile i to tile i+1 (mod n)."""

    def __init__(self, n: int, bandwidth: float, hop_latency_s: float) -> None:
        self.n = n
        self.hop_latency_s = hop_latency_s
        self.channels = [_Channel(bandwidth) for _ in range(n)]

    def route(self, src: int, dst: int) -> _Route:
        hops = []
        t = src
        while t != dst:
            hops.append(t)
            t = (t + 1) % self.n
        return _Route(tuple(hops), len(hops) * self.hop_latency_s)

    def dram_route(self, tile: int, port: int, *, write: bool) -> _Route:
        raise AssertionError("no DRAM traffic in these plans")


def _compute(label: str, seconds: float) -> ComputeStep:
    return ComputeStep(label, seconds, 0.0, 0.0, 0.0, 0.0)


def _forward_only(*forward, steps=(("F", 0), ("B", 0))) -> StageProgram:
    """A one-stage program running ``forward`` once, with an empty backward and optimizer."""
    return StageProgram(
        stage=0,
        layers=(0, 1),
        forward=forward,
        backward=(),
        recompute=(),
        activation_bytes_per_microbatch=0.0,
        send_bytes=0.0,
        optimizer=_compute("opt", 0.0),
        steps=steps,
    )


def _plan(stage_programs, stage_tiles, m, *, schedule="gpipe", chip=None) -> MappingPlan:
    """A hand-made plan; ``chip`` routes its flat-ring collectives (None: no collectives)."""
    p = len(stage_programs)
    tp, dp = ring_communicators(chip.route, stage_tiles) if chip else ([], [])
    mem = MemoryBreakdown(0, 0, 0, 0, 0, 0)
    return MappingPlan(
        mapping=MappingSpec(pp=p, schedule=schedule),
        num_microbatches=m,
        stage_tiles=stage_tiles,
        programs=tuple(stage_programs),
        dram_port_of_tile=(),
        memory=tuple((t, mem) for rep in stage_tiles for st in rep for t in st),
        placement="test",
        model_flop_per_iteration=0.0,
        peak_flop_per_s=1.0,
        samples_per_iteration=m,
        tokens_per_iteration=m,
        communicators=(*tp, *dp),
    )


def _pipeline(p, m, tf, tb, schedule, act_bytes=0.0):
    sched = {"gpipe": gpipe, "1f1b": one_f_one_b}[schedule]
    programs = [
        StageProgram(
            stage=s,
            layers=(s, s + 1),
            forward=(_compute("f", tf),),
            backward=(_compute("b", tb),),
            recompute=(),
            activation_bytes_per_microbatch=act_bytes,
            send_bytes=0.0,
            optimizer=_compute("opt", 0.0),
            steps=sched(p, m, s),
        )
        for s in range(p)
    ]
    return _plan(programs, (tuple((s,) for s in range(p)),), m, schedule=schedule)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("p", "m"), [(1, 1), (3, 4), (4, 8), (5, 2)])
def test_uniform_pipeline_without_communication_takes_m_plus_p_minus_1_slots(schedule, p, m):
    """Uniform stages, free communication: iteration = (m + p - 1) * (t_f + t_b)."""
    tf, tb = 1.0, 2.0
    chip = RingChip(p, 1e9, 0.0)
    trace = Simulator(chip, _pipeline(p, m, tf, tb, schedule)).run()
    assert trace.end_time_s == pytest.approx((m + p - 1) * (tf + tb), rel=1e-12)
    # every stage ran every micro-batch forward and backward exactly once
    assert len([r for r in trace.intervals if r.category == "forward"]) == p * m
    assert len([r for r in trace.intervals if r.category == "backward"]) == p * m


def test_no_message_is_kept_after_it_was_sent_and_received():
    """Each pipeline message (a forward activation, a backward gradient: 2 (p - 1) m of
    them) has one sender and one receiver; once both took its event, the engine keeps
    nothing of it, so a run's mailboxes end empty."""
    sim = Simulator(RingChip(4, 1e9, 0.0), _pipeline(4, 8, 1.0, 2.0, "1f1b"))
    trace = sim.run()
    assert len([f for f in trace.flows if f.category == "p2p"]) == 2 * 3 * 8
    assert sim._mail == {}


def test_1f1b_holds_at_most_p_minus_s_microbatches_and_gpipe_holds_m():
    p, m, act = 4, 8, 10.0
    chip = RingChip(p, 1e9, 0.0)
    for schedule, expected in (("1f1b", [p - s for s in range(p)]), ("gpipe", [m] * p)):
        trace = Simulator(chip, _pipeline(p, m, 1.0, 2.0, schedule, act)).run()
        for s in range(p):
            peak = max(r.activation_bytes for r in trace.memory if r.tile == s)
            assert peak == expected[s] * act, (schedule, s)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_ring_allreduce_matches_textbook(n):
    """All-reduce of S bytes on a ring of n tiles with link bandwidth B and hop latency a:
    2(n-1)/n * S/B + 2(n-1) * a (Patarasuk & Yuan 2009)."""
    size, bw, alpha = 64e6, 100e9, 1e-6
    chip = RingChip(n, bw, alpha)
    program = _forward_only(CollectiveStep("ar", "allreduce", size))
    trace = Simulator(chip, _plan([program], ((tuple(range(n)),),), 1, chip=chip)).run()
    expected = 2 * (n - 1) / n * size / bw + 2 * (n - 1) * alpha
    assert trace.end_time_s == pytest.approx(expected, rel=1e-9)
    assert sum(f.size_bytes for f in trace.flows) == pytest.approx(2 * (n - 1) * size, rel=1e-12)


def test_deadlock_names_the_stuck_tiles():
    """Stage 0 asks for micro-batch 0's gradient before sending its activations: deadlock."""
    programs = [
        StageProgram(
            stage=s,
            layers=(s, s + 1),
            forward=(_compute("f", 1.0),),
            backward=(_compute("b", 1.0),),
            recompute=(),
            activation_bytes_per_microbatch=0.0,
            send_bytes=0.0,
            optimizer=_compute("opt", 0.0),
            steps=steps,
        )
        for s, steps in enumerate([(("B", 0), ("F", 0)), (("F", 0), ("B", 0))])
    ]
    plan = _plan(programs, (((0,), (1,)),), 1)
    with pytest.raises(SimulationError, match=r"deadlock.*tile 0: stage 0 waits for gradients"):
        Simulator(RingChip(2, 1e9, 0.0), plan).run()


def test_until_reports_unfinished_work():
    plan = _pipeline(2, 4, 1.0, 2.0, "gpipe")
    with pytest.raises(SimulationError, match=r"reached until=3"):
        Simulator(RingChip(2, 1e9, 0.0), plan, RunSpec(until_s=3.0)).run()


@pytest.mark.parametrize(
    ("exclusive", "message"),
    [(False, r"transfer that never ends.*too close to 0"), (True, r"not finite.*too close to 0")],
)
def test_a_rate_too_close_to_zero_is_a_simulation_error_not_a_nan(exclusive, message):
    """1 GB over links of 1e-310 B/s (a denormal) takes longer than a float can say: the run
    stops with a SimulationError naming the cause, through the flow network (its flows never
    end) and in closed form (the time overflows), where its records would hold inf and NaN
    times."""
    chip = RingChip(4, 1e-310, 0.0)
    program = _forward_only(_compute("f", 0.5), CollectiveStep("ar", "allreduce", 1e9))
    plan = _plan([program], ((tuple(range(4)),),), 1, chip=chip)
    comms = tuple(dataclasses.replace(c, exclusive=exclusive) for c in plan.communicators)
    plan = dataclasses.replace(plan, communicators=comms)
    with pytest.raises(SimulationError, match=message):
        Simulator(chip, plan).run()


def test_same_plan_gives_identical_records():
    plan = _pipeline(3, 4, 1.0, 2.0, "1f1b")
    a = Simulator(RingChip(3, 1e9, 1e-9), plan).run()
    b = Simulator(RingChip(3, 1e9, 1e-9), plan).run()
    assert a.intervals == b.intervals and a.flows == b.flows and a.end_time_s == b.end_time_s


def test_until_names_the_collective_a_tile_waits_in():
    """A 4-tile all-reduce of 1 GB at 1 GB/s per link takes 1.5 s; stopped at 1 s, every
    tile is reported waiting in it, with its group."""
    chip = RingChip(4, 1e9, 0.0)
    program = _forward_only(_compute("f", 0.5), CollectiveStep("ar", "allreduce", 1e9))
    plan = _plan([program], ((tuple(range(4)),),), 1, chip=chip)
    with pytest.raises(
        SimulationError,
        match=r"tile 0: stage 0 forward waits in TP allreduce ar "
        r"\(micro-batch 0, group of tiles 0-3\)",
    ):
        Simulator(chip, plan, RunSpec(until_s=1.0)).run()


@pytest.mark.parametrize(("compute_s", "read", "write"), [(1e-3, 3e9, 1e9), (5e-3, 1e9, 3e9)])
def test_a_private_hbm_port_shares_read_and_write_max_min(compute_s, read, write):
    """A GPU's HBM port (2039 GB/s, 100 ns) carries only its own step's read and write: both
    get B/2 until the smaller drains at 2·min/B, then the larger has B alone and drains at
    (r+w)/B; each arrives 100 ns later, and the step lasts max(compute, (r+w)/B + 100 ns)."""
    chip = Chip.from_spec(cluster_spec(nodes=1, gpus=2))
    program = _forward_only(ComputeStep("f", compute_s, 0.0, 0.0, read, write), steps=(("F", 0),))
    plan = dataclasses.replace(_plan([program], (((0,),),), 1), dram_port_of_tile=((0, 0),))
    trace = Simulator(chip, plan).run()
    bw, lat = 2039e9, 100e-9
    ends = {f.dst == -1: f.end_s for f in trace.flows}  # True: the write
    assert ends[write < read] == pytest.approx(2 * min(read, write) / bw + lat, rel=1e-12)
    assert ends[write >= read] == pytest.approx((read + write) / bw + lat, rel=1e-12)
    (forward,) = [r for r in trace.intervals if r.category == "forward"]
    assert forward.end_s == pytest.approx(max(compute_s, (read + write) / bw + lat), rel=1e-12)


@pytest.mark.parametrize("launch_s", [10e-6, 0.9e-3])
def test_a_steps_serial_latency_runs_before_its_dram_traffic(launch_s):
    """A step of 1 ms (of which launch_s are its ops' fixed latency, serial_latency_s) reading
    1 GB over a private HBM port (2039 GB/s, 100 ns): the read starts after it, so the step
    lasts launch + max(1 ms - launch, 1 GB / B + 100 ns), not max(1 ms, ...)."""
    chip = Chip.from_spec(cluster_spec(nodes=1, gpus=2))
    step = ComputeStep(
        "f", 1e-3, 0.0, 0.0, 1e9, 0.0, launch_latency_s=launch_s, serial_latency_s=launch_s
    )
    program = _forward_only(step, steps=(("F", 0),))
    plan = dataclasses.replace(_plan([program], (((0,),),), 1), dram_port_of_tile=((0, 0),))
    trace = Simulator(chip, plan).run()
    read_s = 1e9 / 2039e9 + 100e-9
    (flow,) = trace.flows
    assert flow.start_s == pytest.approx(launch_s, rel=1e-12)
    assert flow.end_s == pytest.approx(launch_s + read_s, rel=1e-12)
    (forward,) = [r for r in trace.intervals if r.category == "forward"]
    assert forward.end_s == pytest.approx(launch_s + max(1e-3 - launch_s, read_s), rel=1e-12)


@pytest.mark.parametrize("compute_s", [0.5e-3, 5e-3])
def test_a_compute_step_overlapping_a_collective_hides_it(compute_s):
    """An all-reduce of 64 MB on a ring of 4 (100 GB/s, 1 µs hops) lasts
    T = 2·3/4·S/B + 6 µs = 0.966 ms. With a compute step of c run while it is in flight
    (tp_overlap's weight-gradient GEMM), the pass ends at max(c, T) and the tile's recorded
    wait is what the compute did not hide, max(0, T - c)."""
    n, size, bw, alpha = 4, 64e6, 100e9, 1e-6
    chip = RingChip(n, bw, alpha)
    ring_s = 2 * (n - 1) / n * size / bw + 2 * (n - 1) * alpha
    step = CollectiveStep("ar", "allreduce", size, overlap=_compute("wgrad", compute_s))
    trace = Simulator(chip, _plan([_forward_only(step)], ((tuple(range(n)),),), 1, chip=chip)).run()
    assert trace.end_time_s == pytest.approx(max(compute_s, ring_s), rel=1e-9)
    waits = [r for r in trace.intervals if r.category == "comm" and r.tile == 0]
    assert sum(r.end_s - r.start_s for r in waits) == pytest.approx(
        max(0.0, ring_s - compute_s), rel=1e-9, abs=1e-15
    )
    assert [r.label for r in trace.intervals if r.tile == 0 and r.category == "forward"] == [
        "wgrad"
    ]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_progress_counts_every_forward_and_backward_pass(monkeypatch, schedule):
    """A run reports its progress as passes done of 2 p m (each stage runs every
    micro-batch's forward and backward), never backwards, the last report all of them."""
    import palmsim.engine.simulator as engine

    monkeypatch.setattr(engine, "PROGRESS_EVERY", 1)  # a report after every event
    p, m = 4, 8
    heard: list[tuple[int, int, str]] = []
    sim = Simulator(
        RingChip(p, 1e9, 0.0),
        _pipeline(p, m, 1.0, 2.0, schedule),
        progress=lambda done, total, text: heard.append((done, total, text)),
    )
    assert sim.passes_in_all() == 2 * p * m
    trace = sim.run()
    assert {total for _, total, _ in heard} == {2 * p * m}
    done = [d for d, _, _ in heard]
    assert done == sorted(done) and done[0] < done[-1] == 2 * p * m
    assert len(heard) == trace.num_events + 1  # one per event and one at the end
    assert heard[-1][2] == f"t = {trace.end_time_s:.4g} s simulated"


def test_progress_of_an_inference_counts_prefill_and_decode_passes():
    """Inference: each of the 8 tiles (pp 2 x tp 2 x dp 2) runs a prefill and 4 decode passes
    of each of its replica's 2 micro-batches: 8 x 5 x 2 passes."""
    from palmsim.api import load_experiment, simulate

    experiment = load_experiment(
        "hw_configs/wormhole-t3000.yaml",
        "workloads/llama3-8b.yaml",
        overrides=[
            "workload.mode=inference",
            "model.num_hidden_layers=4",
            "inference.prompt_len=64",
            "inference.output_len=5",
            "inference.batch=8",
        ],
        mapping_flags={"pp": 2, "tp": 2, "dp": 2, "micro_batch_size": 2},
    )
    heard: list[tuple[int, int]] = []
    simulate(experiment, progress=lambda done, total, _: heard.append((done, total)))
    assert heard[-1] == (8 * 5 * 2, 8 * 5 * 2)
