"""The IR verifier: structural invariants a pass must not break, as diagnostics naming the node.

Checked: every input is defined in scope (this graph or an enclosing one), nodes are
in topological order (and if not, whether there is a cycle), use-def links agree with
node inputs, value names are not defined twice, node domains are imported, graph
outputs are defined, and initializers carry data.
"""

from __future__ import annotations

from edgec.diagnostics import Diagnostic, Location
from edgec.ir.core import Graph, Model, Node, Value


def verify_model(model: Model, *, source: str | None = None) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    _verify_graph(model.graph, model.opset_imports, set(), set(), source, out, "graph")
    for f in model.functions.values():
        imports = f.opset_imports or model.opset_imports
        where = f"function '{f.domain}.{f.name}'"
        _verify_graph(f.graph, imports, set(), set(), source, out, where)
    return out


def verify_graph(graph: Graph, opset_imports: dict[str, int] | None = None, *,
                 source: str | None = None) -> list[Diagnostic]:
    """Verify one graph on its own (a subgraph's captured values are assumed defined)."""
    out: list[Diagnostic] = []
    outer_ids, outer_names = set(), set()
    g = graph
    while g.parent is not None and g.parent.graph is not None:
        g = g.parent.graph
        outer_ids.update(id(v) for v in _defined_values(g))
        outer_names.update(v.name for v in _defined_values(g) if v.name)
    _verify_graph(graph, opset_imports, outer_ids, outer_names, source, out, "graph")
    return out


def _defined_values(graph: Graph):
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs


def _verify_graph(graph: Graph, opset_imports: dict[str, int] | None, outer_ids: set[int],
                  outer_names: set[str], source: str | None, out: list[Diagnostic],
                  where: str) -> None:
    def error(message: str, obj: str | None = None, notes=()) -> None:
        label = obj if where == "graph" or obj is None else f"{obj} in {where}"
        out.append(Diagnostic.error(message, Location(path=source, obj=label or where),
                                    notes=notes, code="ir.verify"))

    defined: set[int] = set()
    names: dict[str, str] = {}

    def define(v: Value, by: str) -> None:
        defined.add(id(v))
        if not v.name:
            return
        if v.name in names:
            error(f"value '{v.name}' is defined twice: by {names[v.name]} and by {by}")
        elif v.name in outer_names:
            error(f"value '{v.name}' ({by}) shadows a value of an enclosing graph")
        names.setdefault(v.name, by)

    for v in graph.inputs:
        define(v, "a graph input")
    for name, v in graph.initializers.items():
        if v.const is None:
            error(f"initializer '{name}' has no data")
        if v.name != name:
            error(f"initializer registered as '{name}' is named '{v.name}'")
        if id(v) not in defined:
            define(v, "an initializer")

    produced_later = {id(o): n for n in graph for o in n.outputs}
    unsorted: list[tuple[Node, Value]] = []
    for node in graph:
        if node.graph is not graph:
            error("node's graph link is wrong", node.describe())
        if opset_imports is not None:
            domain = "" if node.domain == "ai.onnx" else node.domain
            if domain not in opset_imports and not (domain == "" and "ai.onnx" in opset_imports):
                imported = ", ".join(repr(d) for d in opset_imports) or "nothing"
                error(f"uses domain '{node.domain}', which the model does not import "
                      f"(it imports {imported})", node.describe())
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if (node, i) not in v._uses:
                error(f"input {i} ('{v.name}') is missing from that value's use list",
                      node.describe())
            if id(v) in defined or id(v) in outer_ids:
                continue
            if id(v) in produced_later:
                unsorted.append((node, v))
            else:
                error(f"reads '{v.name}', which no node, graph input or initializer defines",
                      node.describe())
        for sub in node.subgraphs():
            if sub.parent is not node:
                error("subgraph's parent link is wrong", node.describe())
            sub_where = f"subgraph '{sub.name}' of {node.describe()}"
            _verify_graph(sub, opset_imports, outer_ids | defined | set(produced_later),
                          outer_names | set(names), source, out, sub_where)
        for i, o in enumerate(node.outputs):
            if o.producer() is not node or o.index != i:
                error(f"output {i} ('{o.name}') does not point back at its producer",
                      node.describe())
            define(o, node.describe())
    for v in list(defined_values_with_uses(graph)):
        for user, i in v._uses:
            if user.is_erased() or i >= len(user.inputs) or user.inputs[i] is not v:
                error(f"value '{v.name}' lists a use by {user.describe()} (input {i}) that "
                      "does not read it")
    if unsorted:
        cycle = _find_cycle(graph)
        if cycle:
            path = " -> ".join(n.describe() for n in cycle + cycle[:1])
            error(f"the graph has a cycle: {path}", cycle[0].describe())
        else:
            node, v = unsorted[0]
            error(f"reads '{v.name}' before it is produced: nodes are not in topological order",
                  node.describe())
    for v in graph.outputs:
        if id(v) not in defined and id(v) not in outer_ids:
            error(f"graph output '{v.name}' is not defined in the graph")


def defined_values_with_uses(graph: Graph):
    for v in _defined_values(graph):
        if v._uses:
            yield v


def _find_cycle(graph: Graph) -> list[Node]:
    from edgec.ir.analysis import find_cycle
    return find_cycle(graph)
