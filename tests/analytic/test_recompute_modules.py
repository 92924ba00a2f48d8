"""Megatron-Core's selective recompute by module (palmsim.workload.recompute) against closed
forms derived by hand.

- ``layernorm`` frees the two norms' outputs, ``e·N·h`` each, saved by the GEMMs after them;
- ``mlp`` keeps the dense MLP's input only: SwiGLU's ``2f``-wide input and fc2's ``f``-wide
  input go, ``e·N·3f``; in fp8 the MLP keeps its bf16 input ``e·N·h`` (Megatron-Core's
  ``te_checkpoint`` saves the checkpointed function's argument) and its GEMMs' fp8 copies go;
- ``moe`` keeps the MoE layer's input, the normed ``e·N·h``, and nothing of its ops;
- ``mla_up_proj`` frees the up-projected queries, keys and values the attention core saved,
  ``e·N·a·(2·(d_nope + d_rope) + d_v)``;
- ``moe_act`` frees the experts' fc2 input, ``e·T·f_e`` for ``T`` routed slots;
- the recompute re-runs the named ops' forward FLOP, a recomputed MLP with its TP
  collectives and a recomputed MoE layer with its two all-to-alls.
"""

from __future__ import annotations

import pytest

from palmsim.api import load_experiment
from palmsim.errors import ConfigError, MappingError
from palmsim.hardware.chip import Chip
from palmsim.mapping.mapper import map_workload
from palmsim.mapping.plan import CollectiveKind, CollectiveStep, ComputeStep
from palmsim.workload.builders import hardware_flop_per_iteration, layer_kinds
from palmsim.workload.recompute import kept_bytes, recomputed_ops


def _layer(workload: str, *overrides: str):
    exp = load_experiment("dgx-h100", workload, overrides=overrides)
    (_, blocks) = layer_kinds(exp.workload.model, exp.workload.training, 1, 1)[-1]
    return exp, blocks


def test_llama_layernorm_and_mlp_recompute_keep_what_megatron_keeps() -> None:
    exp, blocks = _layer("llama2-7b")
    m, s = exp.workload.model, exp.workload.training.seq_len
    e, n, h, f = 2, s, m.hidden_size, m.intermediate_size  # bf16, one sample of s tokens
    everything = sum(op.saved_bytes for b in blocks for op in b.ops)
    assert kept_bytes(blocks, ("layernorm",)) == pytest.approx(everything - 2 * e * n * h)
    assert kept_bytes(blocks, ("mlp",)) == pytest.approx(everything - e * n * 3 * f)
    # the default module is the attention core, as palmsim's selective recompute always was
    core = sum(op.saved_bytes_selective for b in blocks for op in b.ops)
    assert kept_bytes(blocks, ("core_attn",)) == pytest.approx(core)
    assert [op.name for b in blocks for op in recomputed_ops(b, ("mlp",))] == [
        "fc1", "swiglu", "fc2",
    ]  # fmt: skip


def test_an_fp8_mlp_keeps_its_bf16_input() -> None:
    exp, blocks = _layer("llama2-7b", "training.dtype=fp8")
    m, s = exp.workload.model, exp.workload.training.seq_len
    e, n, h = 2, s, m.hidden_size
    everything = sum(op.saved_bytes for b in blocks for op in b.ops)
    mlp_saved = sum(op.saved_bytes for op in recomputed_ops(blocks[-1], ("mlp",)))
    assert blocks[-1].name == "mlp" and mlp_saved > 0
    assert kept_bytes(blocks, ("mlp",)) == pytest.approx(everything - mlp_saved + e * n * h)


def test_a_recomputed_moe_layer_keeps_its_normed_input() -> None:
    exp, blocks = _layer("deepseek-v3")
    m, s = exp.workload.model, exp.workload.training.seq_len
    e, n, h = 2, s, m.hidden_size
    rerun = {(b.name, op.name) for b in blocks for op in recomputed_ops(b, ("moe",))}
    outside = sum(op.saved_bytes for b in blocks for op in b.ops if (b.name, op.name) not in rerun)
    assert kept_bytes(blocks, ("moe",)) == pytest.approx(outside + e * n * h)


def test_deepseek_mla_up_proj_and_moe_act_free_their_outputs() -> None:
    exp, blocks = _layer("deepseek-v3")
    m, s = exp.workload.model, exp.workload.training.seq_len
    e, n, a = 2, s, m.num_attention_heads
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    everything = sum(op.saved_bytes for b in blocks for op in b.ops)
    freed = e * n * a * (2 * qk + m.v_head_dim)
    assert kept_bytes(blocks, ("mla_up_proj",)) == pytest.approx(everything - freed)
    slots = n * m.num_experts_per_tok  # one tile holds every expert: T = N·k
    assert kept_bytes(blocks, ("moe_act",)) == pytest.approx(
        everything - e * slots * m.moe_intermediate_size
    )
    names = [op.name for b in blocks for op in recomputed_ops(b, ("mla_up_proj",))]
    assert names == ["q_up", "kv_up", "rope"]


def _plan(workload: str, flags: dict, *overrides: str):
    exp = load_experiment(
        "dgx-h100", workload,
        overrides=("hw.system.chips=[1, 8]", "training.global_batch_size=8", *overrides),
        mapping_flags={"pp": 1, "dp": 1, "micro_batch_size": 1, **flags},
    )  # fmt: skip
    return exp, map_workload(exp, Chip.from_spec(exp.hardware))


def test_a_recomputed_mlp_reruns_its_forward_and_its_tp_collectives() -> None:
    flags = {"tp": 2, "sequence_parallel": True, "recompute": "selective"}
    short = "model.num_hidden_layers=4"
    exp, plan = _plan("llama2-7b", {**flags, "recompute_modules": ("mlp",)}, short)
    _, forward_only = _plan("llama2-7b", {**flags, "recompute": "none"}, short)
    steps = plan.programs[0].recompute
    layers = exp.workload.model.num_hidden_layers
    compute = [st for st in steps if isinstance(st, ComputeStep)]
    assert len(compute) == layers  # one MLP step per layer, no attention core
    mlp_fwd = [
        st for st in forward_only.programs[0].forward
        if isinstance(st, ComputeStep) and st.block == "mlp"
    ]  # fmt: skip
    assert sum(st.flop for st in compute) == pytest.approx(sum(st.flop for st in mlp_fwd))
    kinds = [st.kind for st in steps if isinstance(st, CollectiveStep)]
    # sequence parallelism: each MLP re-runs its reduce-scatter and all-gather
    assert kinds.count(CollectiveKind.REDUCESCATTER) == layers
    assert kinds.count(CollectiveKind.ALLGATHER) == layers


def test_a_recomputed_moe_layer_reruns_its_all_to_alls() -> None:
    flags = {"tp": 1, "dp": 8, "ep": 8, "recompute": "selective"}
    exp = load_experiment(
        "dgx-h100", "mixtral-8x7b",
        overrides=("hw.system.chips=[1, 8]", "training.global_batch_size=8",
                   "model.num_hidden_layers=2"),
        mapping_flags={"pp": 1, "micro_batch_size": 1, **flags, "recompute_modules": ("moe",)},
    )  # fmt: skip
    plan = map_workload(exp, Chip.from_spec(exp.hardware))
    kinds = [st.kind for st in plan.programs[0].recompute if isinstance(st, CollectiveStep)]
    assert kinds.count(CollectiveKind.ALLTOALL) == 2 * 2  # dispatch and combine, 2 layers


def test_executed_flop_count_the_modules_forward() -> None:
    exp = load_experiment("dgx-h100", "llama2-7b")
    model, training = exp.workload.model, exp.workload.training
    base = hardware_flop_per_iteration(model, training, "none")
    with_mlp = hardware_flop_per_iteration(model, training, "selective", modules=("mlp",))
    _, blocks = _layer("llama2-7b")
    mlp = sum(op.flop_fwd for b in blocks for op in recomputed_ops(b, ("mlp",)))
    layers = model.num_hidden_layers
    assert with_mlp - base == pytest.approx(training.global_batch_size * layers * mlp)


def test_recompute_modules_are_checked() -> None:
    with pytest.raises(MappingError, match="recompute=full"):
        _plan("llama2-7b", {"tp": 1, "recompute": "full", "recompute_modules": ("mlp",)})
    with pytest.raises(MappingError, match=r"\['moe'\]: no op"):
        _plan("llama2-7b", {"tp": 1, "recompute": "selective", "recompute_modules": ("moe",)})
    with pytest.raises(ConfigError, match="did you mean 'mlp'"):
        load_experiment("dgx-h100", "llama2-7b", overrides=("mapping.recompute_modules=mpl",))


def test_validate_reads_the_recipes_modules() -> None:
    """Megatron-Bridge's DeepSeek-V3 presets name their modules (recompute_modules
    ["mla_up_proj", "mlp"] on H100); a case stating them runs selective recompute of those."""
    import yaml

    from palmsim.validate import NotRun, read_training_run

    path = "validation/moe_runs.yaml"
    with open(path) as f:
        cases = yaml.safe_load(f.read())["cases"]
    (case,) = [c for c in cases if c["id"] == "mbridge_2509_h100_deepseek_v3_1024gpu"]
    run = read_training_run(case, path)
    assert run is not None
    assert run.flags["recompute"] == "selective"
    assert run.flags["recompute_modules"] == ("mla_up_proj", "mlp")
    bad = {**case, "training": {**case["training"], "recompute_modules": "mla_up, mlp"}}
    with pytest.raises(NotRun, match="mla_up"):
        read_training_run(bad, path)
