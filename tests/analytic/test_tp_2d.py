"""2-D tensor parallelism (``mapping.tp_2d``, ``serving.tp_2d``) on a Galaxy mesh against
closed forms by hand.

The Galaxy: 32 Wormhole chips in a 4x8 torus, each chip one unit, 4 Ethernet links of
bandwidth B per neighbour, one hop of latency alpha; rings run in both directions on half
the buffer each (``bidirectional_rings``). ``tp_2d = [8, 4]`` puts each group of 8 (TPA) on
a row of the torus and each group of 4 (TPB) on a column, so every collective is a ring
whose edges are one hop: ``steps/n * (S/2) / (4 B) + steps * alpha`` with ``steps`` 2(n-1)
for an all-reduce and n-1 for a reduce-scatter or an all-gather. On a T3000 (2x4 mesh, no
wrap-around) the rows are lines and the columns pairs of chips.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from palmsim.api import simulate, summarize_result
from palmsim.config.loader import load_hardware, load_mapping
from palmsim.config.specs import (
    DTYPE_BYTES,
    ExperimentSpec,
    HardwareSpec,
    InferenceSpec,
    MappingSpec,
    ModelSpec,
    RunSpec,
    SchedulerSpec,
    ServingSpec,
    SloSpec,
    TrafficSpec,
    TrainingSpec,
    WorkloadSpec,
)
from palmsim.engine.serving import ServingSimulator
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.inference import map_inference
from palmsim.mapping.plan import GroupKind
from palmsim.mapping.serving import ServingPlan, batch_shape, map_serving
from palmsim.workload.builders import embedding_block, head_block, layer_blocks

H, HEADS, KV, HD, FFN, LAYERS, VOCAB = 4096, 32, 8, 128, 8192, 2, 32000
A, B = 8, 4  # tt-metal's Galaxy mesh (8, 4): heads and MLP columns over 8, hidden over 4
USERS, PROMPT = 32, 16
E = DTYPE_BYTES["bf16"]  # activations
W = DTYPE_BYTES["bfp8"]  # weights and KV cache


def _model() -> ModelSpec:
    return ModelSpec(
        name="tiny-gqa",
        hidden_size=H,
        num_attention_heads=HEADS,
        num_key_value_heads=KV,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        hidden_act="silu",
        norm="rmsnorm",
        position_embedding="rope",
        use_bias=False,
        tie_word_embeddings=False,  # as Llama-3 70B
    )


def _experiment(
    hw: HardwareSpec, tp_2d: tuple[int, int] | None = (A, B), users: int = USERS
) -> ExperimentSpec:
    inference = InferenceSpec(
        prompt_len=PROMPT,
        output_len=2,
        batch=users,
        dtype="bf16",
        weight_dtype="bfp8",
        kv_dtype="bfp8",
        trace="all",
    )
    workload = WorkloadSpec(_model(), TrainingSpec(PROMPT, 1), "inference", inference)
    mapping = MappingSpec(tp=A * B, micro_batch_size=users, tp_2d=tp_2d)
    return ExperimentSpec(hw, workload, mapping, RunSpec())


def _galaxy(*, bandwidth: float | None = None, latency: float | None = None) -> HardwareSpec:
    return _with_chip_links("wormhole-galaxy", bandwidth=bandwidth, latency=latency)


def _with_chip_links(
    name: str, *, bandwidth: float | None = None, latency: float | None = None
) -> HardwareSpec:
    """Shipped config ``name`` with its chip-to-chip links' bandwidth or latency replaced."""
    hw = load_hardware(f"hw_configs/{name}.yaml")
    link = hw.wafer.inter_die
    link = dataclasses.replace(
        link,
        bandwidth_bytes_per_s=link.bandwidth_bytes_per_s if bandwidth is None else bandwidth,
        latency_s=link.latency_s if latency is None else latency,
    )
    return dataclasses.replace(hw, wafer=dataclasses.replace(hw.wafer, inter_die=link))


def _ring_s(kind: str, n: int, size_bytes: float, bandwidth: float, alpha: float) -> float:
    """One ring collective on one-hop edges, two directions on half the buffer each, 4
    links per neighbour; a reduce-scatter's partial sums pass ceil((n-1)/2) chips one way
    (tt-metal's ccl_common.cpp), so its chain is that many steps, an all-gather's n-1 and an
    all-reduce's both."""
    steps = 2 * (n - 1) if kind == "allreduce" else n - 1
    chain = math.ceil((n - 1) / 2)
    hops = {"reducescatter": chain, "allreduce": chain + n - 1}.get(kind, steps)
    return steps / n * (size_bytes / 2) / (4 * bandwidth) + hops * alpha


def _decode_layer_pieces(a: int, b: int, users: int) -> list[tuple[str, int, float]]:
    """A decode layer's collectives over one token per user, as the Galaxy demo runs them
    (palmsim.mapping.inference): (kind, group size: b for TPB, a for TPA, S in bytes). The
    users' rows fill whole 32-row tiles (the Wormhole configs' tile.matrix_tile_rows)."""
    row = -(-users // 32) * 32 * E  # one element per token, padded to whole tiles
    qkv = (HEADS // a + 2 * (KV // a)) * HD  # query heads + one K and one V head per tile
    return [
        ("allgather", b, b * row),  # the attention norm's sums of squares
        ("reducescatter", b, qkv * row),  # QKV partial sums, to users/b users per tile
        ("allgather", b, HEADS // a * HD * row),  # the attention outputs of all users
        ("allreduce", a, H // b * row),  # WO's partial sums
        ("allgather", b, b * row),  # the MLP norm's
        ("reducescatter", b, FFN // a * row),  # W1's partial sums
        ("reducescatter", b, FFN // a * row),  # W3's
        ("allgather", b, FFN // a * row),  # the activation, before W2
        ("allreduce", a, H // b * row),  # W2's partial sums
    ]


def _decode_layer_collectives_s(bandwidth: float, alpha: float, users: int = USERS) -> float:
    """The Galaxy's: every group a one-hop ring (:func:`_ring_s`)."""
    pieces = _decode_layer_pieces(A, B, users)
    return sum(_ring_s(kind, n, size, bandwidth, alpha) for kind, n, size in pieces)


def _ops_per_decode_step() -> int:
    """The kernels one decode step launches: every op of the layers, the embedding and the
    head (the workload's op graph, not the simulator)."""
    # the fused attention kernel inference runs by default (inference.attention_kernel)
    spec = TrainingSpec(seq_len=1, global_batch_size=1, dtype="bf16", attention_kernel="fused")
    layer = sum(op.kernels_fwd for b in layer_blocks(_model(), spec, 1, 1) for op in b.ops)
    ends = (embedding_block(_model(), spec, 1, 1), head_block(_model(), spec, 1, 1))
    return LAYERS * layer + sum(op.kernels_fwd for b in ends for op in b.ops)


def _tpot_s(hw: HardwareSpec, users: int = USERS) -> float:
    return float(summarize_result(simulate(_experiment(hw, users=users)))["tpot_s"])


def test_the_groups_are_the_rows_and_columns_of_the_torus():
    """Rank k's TPA group is the 8 chips of its mesh row, its TPB group the 4 of its column."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    chip = Chip.from_spec(hw)
    plan = map_inference(_experiment(hw), chip)
    tiles = plan.stage_tiles[0][0]
    for rank in range(A * B):
        groups = plan.groups(0, 0, rank)
        row, col = chip.tile_position(tiles[rank])
        assert sorted(chip.tile_position(t) for t in groups[GroupKind.TPA]) == [
            (row, c) for c in range(A)
        ]
        assert sorted(chip.tile_position(t) for t in groups[GroupKind.TPB]) == [
            (r, col) for r in range(B)
        ]
    kinds = {str(c.group) for c in plan.communicators}
    assert kinds == {"tpa", "tpb"}  # no 32-chip TP ring


def test_decode_collectives_cost_the_textbook_rings():
    """A decode step's collectives, layer by layer, on the rows and columns: the step on the
    real links minus the same step on links of 1e18 B/s and no latency (where they cost
    nothing) is LAYERS x the sum of the nine ring collectives' closed forms."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    bandwidth = hw.wafer.inter_die.bandwidth_bytes_per_s
    alpha = hw.wafer.inter_die.latency_s
    real = _tpot_s(hw)
    free = _tpot_s(_galaxy(bandwidth=1e18, latency=0.0))
    expected = LAYERS * _decode_layer_collectives_s(bandwidth, alpha)
    assert real - free == pytest.approx(expected, rel=1e-6)


def test_decode_collectives_on_a_2x4_mesh_are_a_line_per_row_and_a_ring_per_column():
    """A T3000 (2x4 mesh of chips, one link per neighbour, no wrap-around) with tp_2d
    [4, 2]: each TPA group is a row, a line of 4 that runs the line algorithm (each chip's
    piece passed hop by hop towards both ends), so its end links carry one ring edge's bytes,
    steps/n * S / B, and every step is one hop; each TPB group is a column of 2, whose two
    edges are the two directions of one link: steps/2 * S / B + steps * alpha. The step on
    the real links minus the step on free ones is LAYERS x their sum. tt-metal's
    reduce-scatters keep reduce_scatter_efficiency e of the link rate, an all-reduce's first
    half too: their reduce-scattered bytes take (1/e - 1) / B more; a chip sends its own
    gathered bytes at injection_efficiency i of it, which slows the column's (one chip's
    piece a flow) by (1/i - 1) / B, not the row's (its end links carry three chips' pieces,
    3 i >= 1)."""

    def t3000(bandwidth: float | None = None, latency: float | None = None) -> HardwareSpec:
        return _with_chip_links("wormhole-t3000", bandwidth=bandwidth, latency=latency)

    def tpot(hw: HardwareSpec) -> float:
        exp = _experiment(hw, tp_2d=(4, 2))
        exp = dataclasses.replace(exp, mapping=dataclasses.replace(exp.mapping, tp=8))
        return float(summarize_result(simulate(exp))["tpot_s"])

    hw = t3000()
    assert hw.wafer.inter_die_links == 1
    bandwidth, alpha = hw.wafer.inter_die.bandwidth_bytes_per_s, hw.wafer.inter_die.latency_s
    stall = 1 / hw.wafer.reduce_scatter_efficiency - 1
    injection = hw.wafer.injection_efficiency
    assert stall > 0 and 1 / 3 <= injection < 1
    expected = 0.0
    for kind, n, size in _decode_layer_pieces(4, 2, USERS):
        steps = 2 * (n - 1) if kind == "allreduce" else n - 1
        reduced = {"allreduce": 0.5, "reducescatter": 1.0}.get(kind, 0.0)
        slow = reduced * stall + (1 - reduced) * max(0.0, 1 / ((n - 1) * injection) - 1)
        expected += steps / n * size / bandwidth * (1 + slow) + steps * alpha
    real, free = tpot(hw), tpot(t3000(bandwidth=1e18, latency=0.0))
    assert real - free == pytest.approx(LAYERS * expected, rel=1e-6)


def test_per_chip_weights_and_cache_follow_the_2d_sharding():
    """Each chip holds 1/(a*b) = 1/32 of Q, K, V, O and the three MLP matrices, 1/b of each
    norm's weight (the residual stream is split over the hidden dimension), 1/32 of the
    embedding and the LM head (vocabulary-parallel) and the final norm; its KV cache is its
    one KV head (8 over 8 ranks) for its 8 users (32 over 4 ranks): 2 x LAYERS x 1 x HD x 8
    x bytes per token. The 1-D mapping (tp 32, one ring) replicates each KV head on 4 chips
    and keeps every user on each: 4x the cache."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    chip = Chip.from_spec(hw)
    plan = map_inference(_experiment(hw), chip)
    gemms = H * (HEADS + 2 * KV) * HD + HEADS * HD * H + 3 * H * FFN
    params = LAYERS * (gemms / (A * B) + 2 * H / B) + 2 * VOCAB * H / (A * B) + H
    weights = [breakdown.weights for _, breakdown in plan.memory]
    assert weights == [pytest.approx(params * W, rel=1e-12)] * A * B
    assert plan.inference is not None
    per_token = plan.inference.stages[0].kv_bytes_per_token
    assert per_token == pytest.approx(2 * LAYERS * (KV // A) * HD * (USERS // B) * W)
    one_ring = map_inference(_experiment(hw, tp_2d=None), chip)
    assert one_ring.inference is not None
    assert one_ring.inference.stages[0].kv_bytes_per_token == pytest.approx(4 * per_token)


@pytest.mark.parametrize(("placement", "share"), [("sequence", 1 / B), ("request", 1.0)])
def test_one_users_cache_split_by_sequence_or_kept_whole_on_its_group(placement, share):
    """One user on the 8 x 4 layout, whose 4 ranks of the second axis split the users:
    'sequence' spreads its cache over the 4 (each chip 1/4 of its tokens, WaferLLM's way),
    'request' keeps it whole on one (tt-metal's Galaxy demo, a user on its device group):
    per chip 2 x LAYERS x 1 KV head x HD x share x bytes per token."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    exp = _experiment(hw, users=1)
    inference = dataclasses.replace(exp.workload.inference, kv_placement=placement)
    exp = dataclasses.replace(exp, workload=dataclasses.replace(exp.workload, inference=inference))
    plan = map_inference(exp, Chip.from_spec(hw))
    assert plan.inference is not None
    per_token = plan.inference.stages[0].kv_bytes_per_token
    assert per_token == pytest.approx(2 * LAYERS * (KV // A) * HD * share * W)


def test_dram_bound_decode_on_the_mesh_is_weight_bytes_over_bandwidth_plus_collectives():
    """With 1 MiB of SRAM per chip and one user per column (batch 4) the step is
    DRAM-bound: the same fraction f = 1 - SRAM / stored of every weight lives in DRAM, and
    the step reads f x (layer weights + LM head) per chip plus the whole KV cache of its
    user and KV head (SRAM is full of weights) over the chip's 267 GB/s, each of its ops
    pays the 16.18 us op latency, and the collectives add their ring costs in series (they
    use the Ethernet links, not DRAM): f x read / BW + KV / BW + ops x op_latency +
    collectives."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    sram = 2**20
    hw = dataclasses.replace(hw, tile=dataclasses.replace(hw.tile, sram_capacity_bytes=sram))
    gemms = H * (HEADS + 2 * KV) * HD + HEADS * HD * H + 3 * H * FFN
    layer_params = gemms / (A * B) + 2 * H / B
    read = (LAYERS * layer_params + VOCAB * H / (A * B) + H) * W  # layers + head
    stored = read + VOCAB * H / (A * B) * W  # + the embedding table
    dram_fraction = 1 - sram / stored
    bandwidth = hw.dram.bandwidth_bytes_per_s
    assert bandwidth == pytest.approx(267e9)
    kv = 2 * LAYERS * (KV // A) * HD * 1 * W * PROMPT  # the cached prompt of one user
    link = hw.wafer.inter_die
    expected = (
        (dram_fraction * read + kv) / bandwidth
        + _ops_per_decode_step() * hw.tile.op_latency_s
        + LAYERS * _decode_layer_collectives_s(link.bandwidth_bytes_per_s, link.latency_s, B)
    )
    tpot = _tpot_s(hw, users=B)
    # 2%: the step also pays the 500 ns DRAM latency of each of its op runs and moves its
    # activations over DRAM too (SRAM is full of weights).
    assert tpot == pytest.approx(expected, rel=0.02)
    assert tpot > expected  # those extras only add


def test_a_2d_grid_that_does_not_fit_is_refused():
    """a*b must be tp, and the replicas must fit on the chips; tp_2d is an inference option
    (the rectangles themselves: tests/unit/test_schedule_placement.py)."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    chip = Chip.from_spec(hw)
    with pytest.raises(MappingError, match=r"a\*b = 16 is not tp = 32"):
        map_inference(_experiment(hw, tp_2d=(4, 4)), chip)
    three = _experiment(hw, tp_2d=(8, 4))
    mapping = dataclasses.replace(three.mapping, dp=2, micro_batch_size=USERS // 2)
    three = dataclasses.replace(three, mapping=mapping)
    with pytest.raises(MappingError, match="needs tp\\*dp = 32\\*2 = 64 tiles"):
        map_inference(three, chip)
    with pytest.raises(ConfigError, match="applies to inference only"):
        load_mapping([("m", {"tp": 32, "tp_2d": [8, 4]})], mode="training")
    with pytest.raises(ConfigError, match=r"\[a, b\] with a\*b = tp"):
        load_mapping([("m", {"tp": 32, "tp_2d": [8]})], mode="inference")
    assert load_mapping([("m", {"tp": 32, "tp_2d": [8, 4]})], mode="inference").tp_2d == (8, 4)
    # null is the option off, as a training run's resolved config writes it
    assert load_mapping([("m", {"tp_2d": None})], mode="training").tp_2d is None


def test_replicas_each_take_a_rectangle_of_chips():
    """tp 8 as [4, 2] over 4 replicas: the Galaxy's 4 x 8 chips cut into four 2 x 4 quarters
    (the snake of chips would put each replica on one row of 8), each TPA group a row of 4
    and each TPB group a column pair of its quarter. The quarters share no link and no DRAM,
    so each replica's decode step takes what one replica alone takes on the Galaxy."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    chip = Chip.from_spec(hw)

    def experiment(dp: int) -> ExperimentSpec:
        exp = _experiment(hw, tp_2d=(4, 2))
        mapping = dataclasses.replace(exp.mapping, tp=8, dp=dp, micro_batch_size=USERS // 4)
        inference = dataclasses.replace(exp.workload.inference, batch=USERS // 4 * dp)
        workload = dataclasses.replace(exp.workload, inference=inference)
        return dataclasses.replace(exp, mapping=mapping, workload=workload)

    plan = map_inference(experiment(4), chip)
    quarters = []
    for d, (tiles,) in enumerate(plan.stage_tiles):
        cells = sorted(chip.tile_position(t) for t in tiles)
        rows, cols = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
        assert len(rows) == 2 and len(cols) == 4 and rows[0] % 2 == 0 and cols[0] % 4 == 0
        assert cells == [(r, c) for r in rows for c in cols]
        quarters.append((rows[0], cols[0]))
        for rank in range(8):
            groups = plan.groups(d, 0, rank)
            row, col = chip.tile_position(tiles[rank])
            assert sorted(chip.tile_position(t) for t in groups[GroupKind.TPA]) == [
                (row, c) for c in cols
            ]
            assert sorted(chip.tile_position(t) for t in groups[GroupKind.TPB]) == [
                (r, col) for r in rows
            ]
    assert sorted(quarters) == [(0, 0), (0, 4), (2, 0), (2, 4)]
    four, one = (summarize_result(simulate(experiment(dp))) for dp in (4, 1))
    assert four["tpot_s"] == pytest.approx(one["tpot_s"], rel=1e-9)
    assert four["ttft_s"] == pytest.approx(one["ttft_s"], rel=1e-9)


def test_one_rank_along_the_second_axis_is_1d_tensor_parallelism():
    """``tp_2d = [8, 1]`` splits nothing over its second axis: each of the Galaxy's four rows
    is a data-parallel replica whose 8 chips run 1-D tensor parallelism, and the run takes
    the times of ``tp = 8`` without tp_2d (it had no TP ring to all-reduce on: an internal
    error). Being 1-D, it takes any tiles and pipeline stages, as tp without tp_2d does."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")

    def times(tp_2d: tuple[int, int] | None) -> tuple[float, float]:
        exp = _experiment(hw, tp_2d=tp_2d)
        mapping = dataclasses.replace(exp.mapping, tp=A, dp=4, micro_batch_size=USERS // 4)
        summary = summarize_result(simulate(dataclasses.replace(exp, mapping=mapping)))
        return summary["ttft_s"], summary["tpot_s"]

    assert times((A, 1)) == pytest.approx(times(None), rel=1e-12)
    # nor does it need a rectangle (16 chips in a snake over two rows) or refuse stages
    for layout in ({"dp": 2, "micro_batch_size": USERS // 2}, {"pp": 2}):
        runs = []
        for tp_2d in ((16, 1), None):
            exp = _experiment(hw, tp_2d=tp_2d)
            mapping = dataclasses.replace(exp.mapping, tp=16, **layout)
            runs.append(summarize_result(simulate(dataclasses.replace(exp, mapping=mapping))))
        assert runs[0]["tpot_s"] == pytest.approx(runs[1]["tpot_s"], rel=1e-12)


@pytest.mark.parametrize(("mode", "ranks_sharing"), [("split", B), ("replicated", 1)])
def test_a_prefill_attention_is_split_over_the_second_axis_or_run_whole_on_each_rank(
    mode, ranks_sharing
):
    """The fused attention core of a prefill over PROMPT tokens, causal, for the users on a
    chip's head shard: 4 x users x HEADS/A x HD x PROMPT(PROMPT+1)/2 FLOP per layer (QK^T
    and the product with V over the unmasked query-key pairs, the diagonal included).
    tt-metal's ring-distributed SDPA ('split') gives each of the B ranks of the second axis
    1/B of it; before it ('replicated') each computed all of it. Nothing else in the
    prefill changes."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    chip = Chip.from_spec(hw)

    def prefill_flop(prefill_attention_2d: str) -> float:
        exp = _experiment(hw)
        inference = dataclasses.replace(
            exp.workload.inference, prefill_attention_2d=prefill_attention_2d
        )
        workload = dataclasses.replace(exp.workload, inference=inference)
        plan = map_inference(dataclasses.replace(exp, workload=workload), chip)
        assert plan.inference is not None
        return sum(getattr(step, "flop", 0.0) for step in plan.inference.stages[0].prefill)

    core = 4 * USERS * (HEADS // A) * HD * PROMPT * (PROMPT + 1) / 2
    whole_minus_split = LAYERS * core * (1 - 1 / B)
    extra = prefill_flop(mode) - prefill_flop("split")
    assert extra == pytest.approx(whole_minus_split if ranks_sharing == 1 else 0.0, abs=1e-6)


# ----------------------------------------------------------------- palmsim serve


def _serving_plan(
    hw: HardwareSpec, tp_2d: tuple[int, int] | None = (A, B), **changes: object
) -> tuple[Chip, ServingPlan]:
    """A serving replica of the tiny model on ``hw`` with tp = A*B, replayed from a trace
    (no host dispatch), weights and cache in bfp8 as :func:`_experiment`."""
    spec = ServingSpec(
        traffic=TrafficSpec("poisson"),
        scheduler=SchedulerSpec(),
        slo=SloSpec(),
        tp=A * B,
        tp_2d=tp_2d,
        dtype="bf16",
        weight_dtype="bfp8",
        kv_dtype="bfp8",
        trace="all",
    )
    spec = dataclasses.replace(spec, **changes)
    chip = Chip.from_spec(hw)
    return chip, map_serving(spec, hw, _model(), chip)


def _decode_iteration_s(hw: HardwareSpec, users: int = USERS) -> float:
    """One serving iteration of ``users`` decodes, each with PROMPT tokens cached."""
    chip, plan = _serving_plan(hw)
    shape = batch_shape([(1, PROMPT, 1)] * users)
    return ServingSimulator(chip, plan, ()).iteration_time_s(0, shape)


def test_serving_decode_collectives_cost_the_textbook_rings():
    """``palmsim serve`` with ``serving.tp_2d = [8, 4]`` runs a layer's collectives as
    ``palmsim run`` does: an iteration of 32 decodes on the real links minus the same on
    links of 1e18 B/s and no latency is LAYERS x the nine ring collectives' closed forms
    (the embedding and the LM head add none)."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    link = hw.wafer.inter_die
    real = _decode_iteration_s(hw)
    free = _decode_iteration_s(_galaxy(bandwidth=1e18, latency=0.0))
    expected = LAYERS * _decode_layer_collectives_s(link.bandwidth_bytes_per_s, link.latency_s)
    assert real - free == pytest.approx(expected, rel=1e-6)


def test_serving_shards_weights_and_splits_every_requests_cache_over_the_second_axis():
    """Each chip of a 2-D replica holds the weights the inference mapping gives it (1/32 of
    every matrix, 1/B of each norm) and its one KV head (8 over A = 8 ranks) of 1/B of every
    request's tokens: 2 x LAYERS x 1 x HD x bytes / B per token. One token of a request
    over the replica is each KV head once, 2 x LAYERS x KV x HD x bytes, where the 1-D
    replica (tp 32, one ring) holds each KV head on 4 chips: 4x. An iteration's attention
    over the cache computes 1/B of its 4 x heads/A x HD FLOP per (new, cached) pair on
    each chip."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    _, plan = _serving_plan(hw)
    gemms = H * (HEADS + 2 * KV) * HD + HEADS * HD * H + 3 * H * FFN
    params = LAYERS * (gemms / (A * B) + 2 * H / B) + 2 * VOCAB * H / (A * B) + H
    assert plan.stages[0].breakdown.weights == pytest.approx(params * W, rel=1e-12)
    per_token = 2 * LAYERS * (KV // A) * HD * W / B
    assert plan.stages[0].kv_bytes_per_token == pytest.approx(per_token, rel=1e-12)
    assert plan.kv_bytes_per_token == pytest.approx(2 * LAYERS * KV * HD * W, rel=1e-12)
    _, one_ring = _serving_plan(hw, tp_2d=None)
    assert one_ring.kv_bytes_per_token == pytest.approx(4 * plan.kv_bytes_per_token, rel=1e-12)
    shape = batch_shape([(1, 100, 1), (1, 300, 1)])
    step = plan._kv_step(shape, plan.stages[0], "kv")
    assert step.flop == pytest.approx(4 * (HEADS // A) * HD * (100 + 300) / B, rel=1e-12)


def test_serving_replicas_each_take_a_rectangle_and_refusals_name_the_serving_keys():
    """Two replicas of tp 16 as [4, 4] take the Galaxy's two 4 x 4 halves, each TPA group a
    row of its half; a grid that is not tp, pipeline stages with it, a replica that does
    not fit, or more replicas than rectangles are refused naming serving.tp_2d and
    serving.replicas."""
    hw = load_hardware("hw_configs/wormhole-galaxy.yaml")
    chip, plan = _serving_plan(hw, tp_2d=(4, 4), tp=16, replicas=2)
    halves = []
    for (tiles,) in plan.replica_tiles:
        cells = [chip.tile_position(t) for t in tiles]
        rows, cols = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
        assert len(rows) == len(cols) == 4 and sorted(cells) == [(r, c) for r in rows for c in cols]
        assert [cells[k][0] for k in range(4)] == [rows[0]] * 4  # ranks 0-3: one TPA row
        halves.append(cols[0])
    assert sorted(halves) == [0, 4]
    with pytest.raises(MappingError, match=r"serving.tp_2d = \[4, 4\]: a\*b = 16 is not tp = 32"):
        _serving_plan(hw, tp_2d=(4, 4))
    with pytest.raises(MappingError, match=r"serving.tp_2d = \[8, 2\]: pipeline stages"):
        _serving_plan(hw, tp_2d=(8, 2), tp=16, pp=2)
    # a replica that does not fit is pointed to a larger grid, not to pipeline stages
    tight = SchedulerSpec(gpu_memory_utilization=1e-6)
    with pytest.raises(
        MappingError,
        match=r"use more tensor parallelism \(serving.tp with a larger serving.tp_2d\)",
    ):
        _serving_plan(hw, scheduler=tight)
    with pytest.raises(
        MappingError, match=r"tensor or pipeline parallelism \(serving.tp, serving.pp\)"
    ):
        _serving_plan(hw, tp_2d=None, scheduler=tight)
    # 5 x 6 = 30 of the 32 chips, but the 4 x 8 grid holds four 2 x 3 blocks (or 3 x 2)
    with pytest.raises(MappingError, match=r"serving.tp_2d needs replicas = 5 .* serving.replicas"):
        _serving_plan(hw, tp_2d=(3, 2), tp=6, replicas=5)
