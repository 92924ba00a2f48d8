"""OperatorGraph: the whole model's forward pass as a DAG of TP-local ops.

Nodes are ``(part, op name)`` with ``part`` the layer index (``0..L-1``), ``"embed"`` or
``"head"``; each node carries its :class:`~palmsim.workload.ops.Op` (attribute ``op``) and its
block's name (attribute ``block``). Edges carry the bytes of the tensor passed on one tile
(attribute ``bytes``). The graph is static: it is built once from a workload and never
changes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

import networkx as nx

from palmsim.config.specs import WorkloadSpec
from palmsim.workload.builders import (
    BLOCK_INPUT,
    Block,
    embedding_block,
    head_block,
    layer_blocks,
)
from palmsim.workload.ops import Op

__all__ = ["Node", "OperatorGraph"]

#: A node key: (layer index, or "embed" / "head"; op name).
Node = tuple[int | str, str]


class OperatorGraph:
    """The forward DAG of a whole model on one tile of a TP group, for one micro-batch.

    Build it with :meth:`from_spec`. ``graph`` is the underlying ``networkx.DiGraph``; treat it
    as read-only.
    """

    __slots__ = ("graph",)

    def __init__(self, graph: nx.DiGraph) -> None:
        self.graph = graph

    @classmethod
    def from_spec(
        cls, workload: WorkloadSpec, micro_batch_size: int = 1, tp: int = 1
    ) -> OperatorGraph:
        """Build the forward DAG: embedding, every layer's ``attn`` and ``mlp``, then the head.

        The head owns its weights only if they are untied (a tied matrix is counted once, in
        the embedding), so :meth:`total` of ``params`` at ``tp=1`` is the model's parameter
        count.

        Raises:
            MappingError: ``tp`` does not split the layers evenly.
        """
        model, training = workload.model, workload.training
        graph = nx.DiGraph()
        previous = _add_block(
            graph, "embed", embedding_block(model, training, micro_batch_size, tp)
        )
        attn, mlp = layer_blocks(model, training, micro_batch_size, tp)
        for layer in range(model.num_hidden_layers):
            previous = _add_block(graph, layer, attn, previous)
            previous = _add_block(graph, layer, mlp, previous)
        head = head_block(model, training, micro_batch_size, tp)
        _add_block(graph, "head", head, previous)
        # Our builders only wire producers to later consumers; a cycle is a bug here.
        assert nx.is_directed_acyclic_graph(graph), "operator graph has a cycle"
        return cls(graph)

    def __len__(self) -> int:
        """Number of ops."""
        return int(self.graph.number_of_nodes())

    def op(self, node: Node) -> Op:
        """The op at ``node``."""
        op: Op = self.graph.nodes[node]["op"]
        return op

    def total(self, attr: str) -> float:
        """Sum of the :class:`Op` field ``attr`` (e.g. ``"flop_fwd"``) over all ops.

        Raises:
            ValueError: ``attr`` is not a numeric field of :class:`Op`.
        """
        numeric = tuple(name for name in Op.field_names() if name not in ("name", "kind"))
        if attr not in numeric:
            raise ValueError(f"unknown op attribute {attr!r}; known: {', '.join(numeric)}")
        return float(sum(getattr(data["op"], attr) for _, data in self.graph.nodes(data=True)))

    def topological_ops(self) -> list[tuple[Node, Op]]:
        """``(node, op)`` pairs in a forward execution order (deterministic)."""
        return [(node, self.op(node)) for node in nx.topological_sort(self.graph)]

    def edges(self) -> Iterator[tuple[Node, Node, float]]:
        """``(producer, consumer, tensor bytes on the tile)`` for every edge."""
        for src, dst, size in self.graph.edges(data="bytes"):
            yield src, dst, float(size)


def _add_block(
    graph: nx.DiGraph, part: int | str, block: Block, previous: Hashable | None = None
) -> Node:
    """Add ``block``'s ops and edges under ``part``; wire its input to ``previous``.

    Returns:
        The node producing the block's output (its last op).
    """
    for op in block.ops:
        graph.add_node((part, op.name), op=op, block=block.name)
    for src, dst, size in block.edges:
        assert (part, dst) in graph, f"{block.name}: edge to unknown op {dst!r}"
        if src == BLOCK_INPUT:
            assert previous is not None, f"{block.name}: input edge without a previous block"
            graph.add_edge(previous, (part, dst), bytes=size)
        else:
            assert (part, src) in graph, f"{block.name}: edge from unknown op {src!r}"
            graph.add_edge((part, src), (part, dst), bytes=size)
    return (part, block.ops[-1].name)
