"""MeshGEMM (WaferLLM's GEMM over a P x P mesh of cores, ``tile.mesh_gemm``) against closed
forms derived by hand: P steps, each ``step + Kt per_k + Kt Nt per_column + Mt Kt Nt per_mac``
for a core's ``Mt x Kt`` and ``Kt x Nt`` blocks."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from palmsim.config.loader import coarsen, load_hardware, spec_to_raw
from palmsim.config.specs import MeshGemmSpec, ModelSpec
from palmsim.hardware.compute import mesh_gemm_row_reduce_s, mesh_gemm_time_s
from palmsim.hardware.costs import op_pass_time_s
from palmsim.tile_cases import CannotExpressError, calibrate_tiles, predict
from palmsim.workload.builders import separate_projections
from palmsim.workload.ops import make_op, matmul_cost
from tests.conftest import wafer_spec

#: Costs chosen for the hand computations [s].
STEP_S, PER_K_S, PER_COLUMN_S, PER_MAC_S = 100e-9, 40e-9, 2e-9, 0.25e-9


def _mesh(rows: int = 1, cols: int = 1) -> MeshGemmSpec:
    return MeshGemmSpec(STEP_S, PER_K_S, PER_COLUMN_S, PER_MAC_S, mesh=(rows, cols))


def test_a_mesh_gemm_is_its_steps_times_a_step():
    """On 4 x 4 cores, C[8, 4] = A[8, 12] @ B[12, 4]: blocks Mt = 2, Kt = 3, Nt = 1, so 4 steps
    of 100 + 3 x 40 + 3 x 2 + 6 x 0.25 = 227.5 ns: 910 ns; three such products 2730 ns. A
    dimension the mesh does not divide rounds its block up: K = 13 gives Kt = 4."""

    def time_s(m: int, k: int, n: int, batch: int = 1) -> float:
        return mesh_gemm_time_s(
            m, k, n, batch=batch, mesh_rows=4, mesh_cols=4, step_s=STEP_S, per_k_s=PER_K_S,
            per_column_s=PER_COLUMN_S, per_mac_s=PER_MAC_S,
        )  # fmt: skip

    assert time_s(8, 12, 4) == pytest.approx(910e-9)
    assert time_s(8, 12, 4, batch=3) == pytest.approx(3 * 910e-9)
    step = 100 + 4 * 40 + 4 * 2 + 8 * 0.25
    assert time_s(8, 13, 4) == pytest.approx(4 * step * 1e-9)


def _tile(rows: int):
    return dataclasses.replace(wafer_spec().tile, mesh_gemm=_mesh(rows, rows))


def test_a_prefill_gemm_runs_as_a_mesh_gemm_and_a_decode_gemv_on_the_roofline():
    """On a tile of 8 x 8 cores: a 64-token product [64, 256] @ [256, 512] is a MeshGEMM of 8
    steps, Mt = 8, Kt = 32, Nt = 64 (its backward the two products dgrad [64, 512] @ [512,
    256] and wgrad [256, 64] @ [64, 512]); one token's (a decode step's GEMV, fewer rows than
    the mesh) is the roofline, 2 x 256 x 512 FLOP at the tile's 16 TFLOP/s."""
    tile = _tile(8)
    cost = matmul_cost(64, 256, 512, dtype_bytes=2, has_weight=True)
    op = make_op("fc1", "matmul", cost, params=256 * 512, dtype_bytes=2)

    def by_hand(mt: int, kt: int, nt: int) -> float:
        return 8 * (STEP_S + kt * PER_K_S + kt * nt * PER_COLUMN_S + mt * kt * nt * PER_MAC_S)

    time_s, launch_s, _ = op_pass_time_s(op, "F", op.flop_fwd, 0.0, 0.0, tile, 16e12, 2e12)
    assert launch_s == 0.0
    assert time_s == pytest.approx(by_hand(8, 32, 64))
    back_s, _, _ = op_pass_time_s(op, "B", op.flop_bwd, 0.0, 0.0, tile, 16e12, 2e12)
    assert back_s == pytest.approx(by_hand(8, 64, 32) + by_hand(32, 8, 64))
    gemv = make_op(
        "fc1", "matmul", matmul_cost(1, 256, 512, dtype_bytes=2, has_weight=True),
        params=256 * 512, dtype_bytes=2,
    )  # fmt: skip
    gemv_s, _, _ = op_pass_time_s(gemv, "F", gemv.flop_fwd, 0.0, 0.0, tile, 16e12, 2e12)
    assert gemv_s == pytest.approx(2 * 256 * 512 / 16e12)


def test_a_transposed_mesh_gemm_reduces_each_step_along_a_row():
    """Q K^T as WaferLLM's transposed MeshGEMM: after each step a row of cores reduces a 2 x 2
    block of fp16 scores (8 B) onto its root, the chains from both ends streaming through at
    1 ns a hop and 4 GB/s. The root is each of the row's cores once: on 4 cores the farthest
    core is 3, 2, 2, 3 hops away (10 ns), on 5 cores 4, 3, 2, 3, 4 (16 ns); the blocks add
    P x 8 B / 4 GB/s. So 10 + 4 x 2 = 18 ns on a 4 x 4 mesh (C[8, 8]), 16 + 5 x 2 = 26 ns on
    5 x 5 (C[10, 10]), three heads three times that; none without a link."""

    def reduce_s(p: int, m: int, batch: int = 1, bandwidth: float = 4e9) -> float:
        return mesh_gemm_row_reduce_s(
            m, m, batch=batch, mesh_rows=p, mesh_cols=p, element_bytes=2,
            link_latency_s=1e-9, link_bandwidth_bytes_per_s=bandwidth,
        )  # fmt: skip

    assert reduce_s(4, 8) == pytest.approx(18e-9)
    assert reduce_s(5, 10) == pytest.approx(26e-9)
    assert reduce_s(4, 8, batch=3) == pytest.approx(3 * 18e-9)
    assert reduce_s(4, 8, bandwidth=0.0) == 0.0


def test_only_the_scores_forward_runs_transposed():
    """On a 4 x 4 mesh whose cores are joined by 1 ns, 4 GB/s links, the attention's scores
    Q[8, 12] K^T (one head, fp16) cost the plain MeshGEMM (Mt = 2, Kt = 3, Nt = 2: 4 steps of
    100 + 3 x 40 + 6 x 2 + 12 x 0.25 ns) plus the row reductions above (18 ns); the context
    product of the same shape and the scores' backward pay no reduction."""
    tile = dataclasses.replace(
        wafer_spec().tile,
        mesh_gemm=dataclasses.replace(
            _mesh(4, 4), link_latency_s=1e-9, link_bandwidth_bytes_per_s=4e9
        ),
    )
    plain_s = 4 * (STEP_S + 3 * PER_K_S + 6 * PER_COLUMN_S + 12 * PER_MAC_S)

    def forward_s(name: str) -> float:
        op = make_op(name, "matmul", matmul_cost(8, 12, 8, dtype_bytes=2), dtype_bytes=2)
        return op_pass_time_s(op, "F", op.flop_fwd, 0.0, 0.0, tile, 16e12, 2e12)[0]

    assert forward_s("scores") == pytest.approx(plain_s + 18e-9)
    assert forward_s("context") == pytest.approx(plain_s)
    scores = make_op("scores", "matmul", matmul_cost(8, 12, 8, dtype_bytes=2), dtype_bytes=2)
    context = dataclasses.replace(scores, name="context")
    args = (0.0, 0.0, tile, 16e12, 2e12)
    assert op_pass_time_s(scores, "B", scores.flop_bwd, *args)[0] == pytest.approx(
        op_pass_time_s(context, "B", context.flop_bwd, *args)[0]
    )


def test_a_wafer_config_s_mesh_gemm_reduces_over_its_core_link():
    """The loader gives a wafer's MeshGEMM the link between its cores (chip.noc): the WSE-2's
    0.909 ns and 4.4 GB/s."""
    mesh = load_hardware("hw_configs/cerebras-wse2.yaml").tile.mesh_gemm
    assert mesh is not None
    assert (mesh.link_latency_s, mesh.link_bandwidth_bytes_per_s) == pytest.approx(
        (0.909e-9, 4.4e9)
    )


def test_a_region_of_cores_is_the_mesh_its_gemms_run_over():
    """A core's MeshGEMM costs are per core: coarsened to 2 x 2 regions they stay, and the
    mesh becomes the region's 2 x 2 cores, which a written spec (chip.unit_grid) keeps."""
    fine = dataclasses.replace(wafer_spec(dies=(1, 1)), tile=_tile(1))
    coarse = coarsen(fine, (2, 2))
    assert coarse.tile.mesh_gemm == _mesh(2, 2)
    raw = spec_to_raw(coarse)
    assert raw["chip"]["unit_grid"] == [2, 2]
    assert "mesh" not in raw["tile"]["mesh_gemm"]


def test_separate_projections_keep_the_flop_and_count_the_products():
    """WaferLLM multiplies Q, K and V apart, and gate and up: the fused QKV of 16 tokens,
    hidden 64 and MHA becomes 3 products of 64 columns (3 x 64 = 192), the SwiGLU fc1 of 256
    columns 2 of 128; FLOP and bytes unchanged. On a 4 x 4 mesh three products pay three
    times the step and register-load costs where the fused one pays them once: 2 x 4 x
    (100 + 16 x 40) ns more for Kt = 64 / 4 = 16 (their columns cost the same in all)."""
    from palmsim.config.specs import TrainingSpec
    from palmsim.workload.builders import layer_blocks

    model = ModelSpec(
        name="m", hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=128, vocab_size=32, hidden_act="silu",
        max_position_embeddings=64,
    )  # fmt: skip
    attn, mlp = layer_blocks(model, TrainingSpec(seq_len=16, global_batch_size=1), 1, 1)
    split_attn, split_mlp = (separate_projections(b, model) for b in (attn, mlp))
    qkv = {o.name: o for o in attn.ops}["qkv"]
    split_qkv = {o.name: o for o in split_attn.ops}["qkv"]
    assert qkv.gemm_shape == (1, 16, 64, 192)
    assert split_qkv.gemm_shape == (3, 16, 64, 64)
    assert {o.name: o for o in split_mlp.ops}["fc1"].gemm_shape == (2, 16, 64, 128)
    assert split_qkv.flop_fwd == qkv.flop_fwd and split_qkv.bytes_fwd == qkv.bytes_fwd
    tile = _tile(4)
    fused_s = op_pass_time_s(qkv, "F", qkv.flop_fwd, 0.0, 0.0, tile, 16e12, 2e12)[0]
    split_s = op_pass_time_s(split_qkv, "F", qkv.flop_fwd, 0.0, 0.0, tile, 16e12, 2e12)[0]
    assert split_s - fused_s == pytest.approx(2 * 4 * (STEP_S + 16 * PER_K_S))


def _gemm_case(p: int, m: int, k: int, n: int, time_ns: float) -> dict:
    return {
        "id": f"mesh_{p}_{m}_{k}_{n}",
        "hardware": {"hw_spec_ref": "cerebras_wse3", "system": {"chips": 1}},
        "model": {"name": "GEMM", "M": m, "K": k, "N": n},
        "scenario": {"phase": "GEMM microbenchmark", "core_grid": f"{p}x{p}", "dtype": "fp16"},
        "measured": {"time_ns": time_ns},
    }


def test_calibrate_tiles_recovers_the_mesh_gemm_costs_by_hand():
    """Five MeshGEMMs on a CS-3 timed at the costs above (P steps of step + Kt per_k + Kt Nt
    per_column + Mt Kt Nt per_mac, by hand) give those four costs back exactly, each a
    ``tile.mesh_gemm`` key; predict times a case at the config's costs by the same sum."""
    shapes = [
        (16, 16, 16, 16, (1, 1, 1)),
        (16, 128, 128, 128, (8, 8, 8)),
        (80, 160, 640, 80, (2, 8, 1)),
        (144, 144, 1152, 432, (1, 8, 3)),
        (720, 5760, 1440, 2160, (8, 2, 3)),
    ]
    cases = []
    for p, m, k, n, (mt, kt, nt) in shapes:
        step = STEP_S + kt * PER_K_S + kt * nt * PER_COLUMN_S + mt * kt * nt * PER_MAC_S
        cases.append(_gemm_case(p, m, k, n, p * step * 1e9))
    fits, _ = calibrate_tiles(cases, "hw_configs/cerebras-wse3.yaml")
    by_key = {f.key: f.value for f in fits}
    assert by_key == pytest.approx(
        {
            "tile.mesh_gemm.step": STEP_S,
            "tile.mesh_gemm.per_k": PER_K_S,
            "tile.mesh_gemm.per_column": PER_COLUMN_S,
            "tile.mesh_gemm.per_mac": PER_MAC_S,
        },
        rel=1e-9,
    )
    mesh = load_hardware("hw_configs/cerebras-wse3.yaml").tile.mesh_gemm
    assert mesh is not None
    step = mesh.step_s + 2 * mesh.per_k_s + 6 * mesh.per_column_s + 48 * mesh.per_mac_s
    case = copy.deepcopy(cases[-1])
    ((metric, _, predicted_ns),) = predict(case)
    assert metric == "time_ns"
    assert predicted_ns == pytest.approx(720 * step * 1e9, rel=1e-12)


def test_the_wse2_runs_the_wse3_mesh_gemm_at_half_its_simd_width():
    """The WSE-2's MeshGEMM costs are the WSE-3's fit, a multiply-accumulate's time doubled
    (a 4-wide FP16 SIMD unit against the WSE-3's 8)."""
    wse2 = load_hardware("hw_configs/cerebras-wse2.yaml").tile.mesh_gemm
    wse3 = load_hardware("hw_configs/cerebras-wse3.yaml").tile.mesh_gemm
    assert wse2 is not None and wse3 is not None
    assert wse2.per_mac_s == pytest.approx(2 * wse3.per_mac_s)
    assert (wse2.step_s, wse2.per_k_s, wse2.per_column_s) == (
        wse3.step_s,
        wse3.per_k_s,
        wse3.per_column_s,
    )
    assert wse2.mesh == wse3.mesh == (30, 30)  # the configs' regions of 30 x 30 cores


def test_a_wafer_gemv_runs_from_sram_and_a_gemm_too_large_for_it_is_named():
    """A one-row GEMM on 720x720 WSE-2 cores is no MeshGEMM (fewer rows than the grid): its
    2 x 8192 x 8192 FLOP over the 518,400 cores at 2.2 GFLOP/s x 0.70 (the WSE-2's fp16 rate
    and efficiency), its operands in the cores' SRAM (the wafer has no off-chip memory):
    168.1 ns. Operands beyond the cores' 720 x 720 x 48 KB = 24.8832 GB are named, not timed."""
    case = _gemm_case(720, 1, 8192, 8192, 1.0)
    case["hardware"]["hw_spec_ref"] = "cerebras_wse2"
    ((_, _, predicted_ns),) = predict(case)
    assert predicted_ns == pytest.approx(2 * 8192 * 8192 / 720**2 / (2.2e9 * 0.70) * 1e9)
    case["model"].update(M=1, K=10**7, N=10**7)
    with pytest.raises(CannotExpressError, match=r"exceed the 24\.8832 GB of SRAM"):
        predict(case)
