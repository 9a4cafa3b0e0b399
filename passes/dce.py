"""Dead code elimination: ``y = op(...)`` with ``y`` unread and not a graph output -> (nothing).

Removes, in every graph (subgraphs and function bodies included), the nodes none of
whose outputs is read by a node (a node inside a subgraph counts) or returned by a
graph, transitively; then the initializers nothing reads. Initializers that are also
graph inputs are interface and stay; model-local functions stay.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from edgec.ir.core import Graph, Model, Node, Value
from edgec.passmgr.base import Pass, PassContext, PassResult


@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove nodes whose outputs nobody reads, and unread initializers."""

    name: ClassVar[str] = "dce"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graphs = list(model.all_graphs())
        # A subgraph may return a value of an enclosing graph directly; that is not a
        # node use, so such returns are counted here to keep their producers alive.
        returned: Counter[int] = Counter(id(v) for g in graphs for v in g.outputs)
        sweep = _Sweep(returned)
        sweep.graph(model.graph)
        for f in model.functions.values():
            sweep.graph(f.graph)
        initializers_removed = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for name, v in list(g.initializers.items()):
                if not v.has_uses() and not returned[id(v)] and not v.is_graph_input():
                    g.remove_initializer(name)
                    initializers_removed += 1
        stats = {"nodes-removed": sweep.removed, "initializers-removed": initializers_removed}
        return PassResult(bool(sweep.removed or initializers_removed), stats)


class _Sweep:
    def __init__(self, returned: Counter[int]):
        self.returned = returned
        self.removed = 0

    def is_live(self, v: Value) -> bool:
        return v.has_uses() or self.returned[id(v)] > 0

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
        # The nodes of a dead node's subgraphs read values of enclosing scopes too;
        # dropping them releases those uses (and the subgraphs' returns).
        for sub in node.subgraphs():
            for v in sub.outputs:
                self.returned[id(v)] -= 1
            for inner in reversed(sub):
                self.discard(sub, inner)
        graph.remove(node, safe=False)
