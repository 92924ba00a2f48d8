"""OperatorGraph: the whole model's forward DAG."""

from __future__ import annotations

from dataclasses import replace

import networkx as nx
import pytest

from palmsim.config.specs import ModelSpec, TrainingSpec, WorkloadSpec
from palmsim.errors import MappingError
from palmsim.workload.builders import model_flop_per_iteration, num_parameters
from palmsim.workload.graph import OperatorGraph

GPT = ModelSpec(
    name="gpt-small",
    hidden_size=768,
    num_attention_heads=12,
    num_key_value_heads=12,
    intermediate_size=3072,
    num_hidden_layers=4,
    vocab_size=50304,
    max_position_embeddings=1024,
    hidden_act="gelu",
    attention_dropout=0.1,
    hidden_dropout=0.1,
)
LLAMA = replace(
    GPT,
    name="llama-small",
    num_key_value_heads=4,
    hidden_act="silu",
    norm="rmsnorm",
    position_embedding="rope",
    use_bias=False,
    tie_word_embeddings=False,
    attention_dropout=0.0,
    hidden_dropout=0.0,
)
TRAIN = TrainingSpec(seq_len=1024, global_batch_size=8, dtype="bf16")


def test_node_count() -> None:
    """GPT: 4 embedding ops, 13 + 8 per layer, 3 head ops. Llama: 1, 10 + 5 per layer, 3."""
    assert len(OperatorGraph.from_spec(WorkloadSpec(GPT, TRAIN))) == 4 + 4 * 21 + 3
    assert len(OperatorGraph.from_spec(WorkloadSpec(LLAMA, TRAIN))) == 1 + 4 * 15 + 3


@pytest.mark.parametrize("model", [GPT, LLAMA], ids=["gpt", "llama"])
def test_graph_is_a_connected_dag_from_embedding_to_loss(model: ModelSpec) -> None:
    graph = OperatorGraph.from_spec(WorkloadSpec(model, TRAIN), micro_batch_size=2, tp=4)
    assert nx.is_directed_acyclic_graph(graph.graph)
    assert nx.is_weakly_connected(graph.graph)
    order = [node for node, _ in graph.topological_ops()]
    assert order[0] == ("embed", "word_embedding")
    assert order[-1] == ("head", "loss")
    position = {node: i for i, node in enumerate(order)}
    assert all(position[src] < position[dst] for src, dst, _ in graph.edges())


def test_totals_match_the_whole_model_sums() -> None:
    """At tp = 1 the graph's params are the model's; 3 × its GEMM forward is the model FLOP."""
    for model in (GPT, LLAMA):
        graph = OperatorGraph.from_spec(WorkloadSpec(model, TRAIN))
        assert graph.total("params") == num_parameters(model)
        flop = 3 * TRAIN.global_batch_size * graph.total("flop_fwd")
        assert flop == pytest.approx(model_flop_per_iteration(model, TRAIN), rel=1e-12)


def test_edges_carry_tensor_bytes() -> None:
    """Between layers and into the head flows one b·s·h tensor; QKV's split hands K and V on."""
    b, s, h, e, t = 2, 1024, 768, 2, 4
    graph = OperatorGraph.from_spec(WorkloadSpec(LLAMA, TRAIN), micro_batch_size=b, tp=t)
    edge_bytes = graph.graph.edges
    assert edge_bytes[(0, "mlp_residual"), (1, "norm1")]["bytes"] == e * b * s * h
    assert edge_bytes[(0, "mlp_residual"), (1, "attn_residual")]["bytes"] == e * b * s * h
    assert edge_bytes[(3, "mlp_residual"), ("head", "final_norm")]["bytes"] == e * b * s * h
    # 4 KV heads over 4 tiles: one V head of 64 per tile.
    assert edge_bytes[(0, "qkv_split"), (0, "context")]["bytes"] == e * b * s * 64
    assert edge_bytes[("head", "lm_head"), ("head", "loss")]["bytes"] == e * b * s * 50304 / t


def test_nodes_carry_ops_and_blocks() -> None:
    graph = OperatorGraph.from_spec(WorkloadSpec(GPT, TRAIN))
    assert graph.op((2, "fc1")).kind == "matmul"
    assert graph.graph.nodes[(2, "fc1")]["block"] == "mlp"
    assert graph.graph.nodes[("embed", "embed_dropout")]["block"] == "embed"


def test_total_rejects_unknown_attribute() -> None:
    graph = OperatorGraph.from_spec(WorkloadSpec(GPT, TRAIN))
    with pytest.raises(ValueError, match="unknown op attribute 'flops'"):
        graph.total("flops")


def test_indivisible_tp_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="tp=5 does not divide num_attention_heads=12"):
        OperatorGraph.from_spec(WorkloadSpec(GPT, TRAIN), tp=5)
