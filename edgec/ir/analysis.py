"""Graph analyses over a networkx view of an IR graph: order, cycles, reachability, dominators.

networkx is for analysis only; the IR's storage is edgec.ir.core. A view is built on
demand (nodes keyed by the IR `Node` objects, edges labelled by the value carried),
so it is never stale as long as it is not kept across mutations.
"""

from __future__ import annotations

import networkx as nx

from edgec.ir.core import Graph, Node, node_reads

# The single source used for dominator analysis: every graph input flows from it.
ENTRY = "<entry>"


def to_networkx(graph: Graph, *, with_entry: bool = False) -> nx.MultiDiGraph:
    """A directed multigraph: an edge producer -> consumer per value read.

    Reads by subgraphs (captured outer values) count as reads by the owning node.
    With ``with_entry``, an ``ENTRY`` node has an edge to every node that reads a
    graph input or initializer, or that reads nothing (constants).
    """
    g = nx.MultiDiGraph()
    producer = {id(o): n for n in graph for o in n.outputs}
    for node in graph:
        g.add_node(node)
    if with_entry:
        g.add_node(ENTRY)
    for node in graph:
        reads_produced = False
        for v in node_reads(node):
            if v is None:
                continue
            p = producer.get(id(v))
            if p is not None:
                g.add_edge(p, node, value=v.name)
                reads_produced = True
            elif with_entry:
                g.add_edge(ENTRY, node, value=v.name)
        if with_entry and not reads_produced and g.in_degree(node) == 0:
            g.add_edge(ENTRY, node, value=None)
    return g


def topological_order(graph: Graph) -> list[Node]:
    """Nodes in a topological order (raises networkx.NetworkXUnfeasible on a cycle)."""
    return list(nx.lexicographical_topological_sort(
        to_networkx(graph), key=_position_key(graph)))


def find_cycle(graph: Graph) -> list[Node]:
    """The nodes of one cycle, in order, or [] if the graph is acyclic."""
    try:
        edges = nx.find_cycle(to_networkx(graph))
    except nx.NetworkXNoCycle:
        return []
    return [e[0] for e in edges]


def reachable_from(graph: Graph, node: Node) -> set[Node]:
    """Every node that (transitively) reads an output of ``node``."""
    return set(nx.descendants(to_networkx(graph), node))


def ancestors_of(graph: Graph, node: Node) -> set[Node]:
    """Every node whose outputs ``node`` (transitively) depends on."""
    return set(nx.ancestors(to_networkx(graph), node))


def immediate_dominators(graph: Graph) -> dict[Node, Node | str]:
    """For each node, its immediate dominator (``ENTRY`` for nodes only the graph's
    inputs dominate). A node D dominates N when every path from the inputs to N
    passes through D: the region between them is single-entry, which is what a
    fusion of D..N needs."""
    g = to_networkx(graph, with_entry=True)
    idom = nx.immediate_dominators(nx.DiGraph(g), ENTRY)
    idom.pop(ENTRY, None)
    return idom


def _position_key(graph: Graph):
    pos = {id(n): i for i, n in enumerate(graph)}
    return lambda n: pos[id(n)]
