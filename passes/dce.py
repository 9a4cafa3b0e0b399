"""Dead code elimination: ``y = op(...)`` with ``y`` unread and not a graph output -> (nothing).

Removes, in every graph (subgraphs and function bodies included), the nodes none of
whose outputs is read by a node (a node inside a subgraph counts) or returned by a
graph, transitively; then the initializers nothing reads. Initializers that are also
graph inputs are interface and stay; model-local functions stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgec.ir.core import Graph, Model, Node, Value
from edgec.passmgr.base import Pass, PassContext, PassResult


@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove nodes whose outputs nobody reads, and unread initializers."""

    name: ClassVar[str] = "dce"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        sweep = _Sweep()
        sweep.graph(model.graph)
        for f in model.functions.values():
            sweep.graph(f.graph)
        initializers_removed = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for name, v in list(g.initializers.items()):
                if not v.has_uses() and not v.is_returned() and not v.is_graph_input():
                    g.remove_initializer(name)
                    initializers_removed += 1
        stats = {"nodes-removed": sweep.removed, "initializers-removed": initializers_removed}
        return PassResult(bool(sweep.removed or initializers_removed), stats)


class _Sweep:
    def __init__(self):
        self.removed = 0

    @staticmethod
    def is_live(v: Value) -> bool:
        # A value some graph returns (a subgraph may return one of an enclosing graph)
        # is live without a reader.
        return v.has_uses() or v.is_returned()

    def graph(self, graph: Graph) -> None:
        # Reverse topological order sees every reader before the node it reads from,
        # so one sweep removes dead chains whole.
        for node in reversed(graph):
            for sub in node.subgraphs():
                self.graph(sub)
            if not any(self.is_live(o) for o in node.outputs):
                self.discard(graph, node)
                self.removed += 1

    def discard(self, graph: Graph, node: Node) -> None:
        # The nodes of a dead node's subgraphs read values of enclosing scopes too, and
        # the subgraphs may return such values; dropping both releases them.
        for sub in node.subgraphs():
            sub.outputs.clear()
            for inner in reversed(sub):
                self.discard(sub, inner)
        graph.remove(node, safe=False)
