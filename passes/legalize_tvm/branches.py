"""``sink-into-if``: what follows an ``If`` whose output shape depends on the branch taken
moves into both branches, up to values whose shape is the same whichever branch runs.

TVM 0.27's importer gives an ``If`` whose branches return different shapes an output of
unknown shape, and then refuses the first op after it ("emit_te now only supports Tensor
that has ShapeExpr shape"): Silero VAD picks its framing by an ``If`` on the run-time
sample rate (every second sample at 16 kHz, all of them at 8 kHz) and its STFT ``Pad``
comes next. Inside each branch every shape is known.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from edgec.ir.core import Graph, Model, Node, Value
from edgec.ir.shape_inference import infer_types
from edgec.ir.types import TensorType
from edgec.passmgr.base import Pass, PassContext, PassResult

from .common import ONNX_DOMAINS


def _known_shape(v: Value, symbols: set[str]) -> bool:
    """Whether ``v``'s inferred shape holds whichever branch ran: every dimension a number
    or a symbol of the graph's inputs (the batch), none of inference's own ``unk__``
    symbols (the dimensions on which the branches disagree)."""
    t = v.type
    if not isinstance(t, TensorType) or t.shape is None or t.shape.dims is None:
        return False
    return all(isinstance(d, int) or d in symbols for d in t.shape.dims)


def _input_symbols(graph: Graph) -> set[str]:
    symbols: set[str] = set()
    for v in graph.inputs:
        if isinstance(v.type, TensorType) and v.type.shape is not None and v.type.shape.dims:
            symbols.update(d for d in v.type.shape.dims if isinstance(d, str))
    return symbols


def _tail(if_node: Node, nodes: list[Node], symbols: set[str]) -> tuple[list[Node], list[Value]] | None:
    """The nodes to move (in graph order) and the values they hand back to the graph, or
    None where no such set exists: the smallest set holding every consumer of a value of
    unknown shape it produces (the If's outputs first), and every node between the If and
    those that it depends on; what it hands back all has known shapes and is no graph
    output of unknown shape."""
    position = {id(n): i for i, n in enumerate(nodes)}
    moved: dict[int, Node] = {}
    pending = [v for v in if_node.outputs if not _known_shape(v, symbols)]
    if not pending:
        return None
    while pending:
        v = pending.pop()
        if v.is_graph_output():
            return None  # the graph itself returns a shape that depends on the branch
        for consumer in v.consumers():
            if consumer.graph is not if_node.graph:
                return None  # read inside another node's subgraph
            if id(consumer) in moved:
                continue
            if consumer.subgraphs() or consumer.domain not in ONNX_DOMAINS:
                return None
            moved[id(consumer)] = consumer
            pending += [o for o in consumer.outputs if not _known_shape(o, symbols)]
            # Its other inputs computed from the If's outputs must move with it.
            stack = [i for i in consumer.inputs if i is not None]
            while stack:
                producer = stack.pop().producer()
                if (producer is None or producer is if_node or id(producer) in moved
                        or producer.graph is not if_node.graph
                        or position[id(producer)] < position[id(if_node)]):
                    continue
                if not _depends_on(producer, if_node):
                    continue
                if producer.subgraphs() or producer.domain not in ONNX_DOMAINS:
                    return None
                moved[id(producer)] = producer
                pending += [o for o in producer.outputs if not _known_shape(o, symbols)]
                stack += [i for i in producer.inputs if i is not None]
    tail = sorted(moved.values(), key=lambda n: position[id(n)])
    # The If's own outputs of known shape that the rest of the graph reads go through too.
    handed_back = [o for n in [if_node, *tail] for o in n.outputs
                   if o.is_graph_output() or any(id(c) not in moved for c in o.consumers())]
    if any(not _known_shape(o, symbols) for o in handed_back) or not handed_back:
        return None
    return tail, handed_back


def _depends_on(node: Node, if_node: Node) -> bool:
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n is if_node:
            return True
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack += [i.producer() for i in n.inputs if i is not None and i.producer() is not None]
    return False


def _copy_into(branch: Graph, if_node: Node, tail: list[Node], handed_back: list[Value],
               suffix: str) -> list[Value]:
    """Appends copies of ``tail`` to ``branch``, reading the branch's results where the
    originals read the If's outputs; returns the copies of ``handed_back``."""
    copies: dict[int, Value] = {id(o): r for o, r in zip(if_node.outputs, branch.outputs)}
    for node in tail:
        inputs = [None if v is None else copies.get(id(v), v) for v in node.inputs]
        outputs = [Value(None if not o.name else branch.unique_name(o.name + suffix))
                   for o in node.outputs]
        copy = Node(node.op_type, inputs, domain=node.domain,
                    attributes=[dataclasses.replace(a) for a in node.attributes.values()],
                    outputs=outputs, name=(node.name + suffix) if node.name else "",
                    doc_string=node.doc_string, metadata_props=node.metadata_props)
        branch.append(copy)
        for o, c in zip(node.outputs, copy.outputs):
            copies[id(o)] = c
    return [copies[id(v)] for v in handed_back]


@dataclass(frozen=True)
class SinkIntoIf(Pass):
    """``y = If(c, then: A, else: B); z = f(y)`` → ``z = If(c, then: f(A), else: f(B))``,
    where the shape of ``y`` depends on the branch and that of ``z`` does not.

    Legal always: only the branch taken runs, so computing ``f`` inside it gives the
    same values (ONNX ops are pure; each branch reads the weights of ``f`` from the
    enclosing graph, so none is copied). It moves the fewest nodes that reach values of
    one shape whichever branch runs (every dimension a number or an input's symbol); where
    none exist — a graph output's shape depends on the branch, or the tail holds a node
    with a subgraph — the If stays as it is. If nodes of the main graph only.
    """

    name: ClassVar[str] = "sink-into-if"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        symbols = _input_symbols(model.graph)
        sunk = moved = 0
        # Outermost first: a tail moved into a branch may follow an If there, which then
        # takes it on; the copies get their types from shape inference before that.
        graphs = [model.graph]
        while graphs:
            level_sunk = 0
            for graph in graphs:
                count, nodes = self._sink(graph, symbols)
                level_sunk += count
                moved += nodes
            sunk += level_sunk
            if level_sunk:
                infer_types(model, ctx.diagnostics)
            graphs = [sub for graph in graphs for node in graph for sub in node.subgraphs()]
        return PassResult(sunk > 0, {"ifs": sunk, "nodes-moved": moved})

    @staticmethod
    def _sink(graph: Graph, symbols: set[str]) -> tuple[int, int]:
        """Sinks the tails of ``graph``'s own If nodes; returns (Ifs, nodes moved)."""
        sunk = moved = 0
        for if_node in [n for n in graph if n.op_type == "If" and n.domain in ONNX_DOMAINS]:
            found = _tail(if_node, list(graph), symbols)
            if found is None:
                continue
            tail, handed_back = found
            then_branch, else_branch = if_node.attr("then_branch"), if_node.attr("else_branch")
            then_results = _copy_into(then_branch, if_node, tail, handed_back, "/then")
            else_results = _copy_into(else_branch, if_node, tail, handed_back, "/else")
            then_branch.outputs = then_results
            else_branch.outputs = else_results
            replacement = Node("If", list(if_node.inputs), domain=if_node.domain,
                               attributes={"then_branch": then_branch, "else_branch": else_branch},
                               outputs=[Value(graph.unique_name(v.name + "/if"), v.type)
                                        for v in handed_back],
                               name=if_node.name, doc_string=if_node.doc_string,
                               metadata_props=if_node.metadata_props)
            graph.insert_after(tail[-1], replacement)
            for old, new in zip(handed_back, replacement.outputs):
                graph.replace_value(old, new)
            for node in reversed(tail):
                graph.remove(node)
            graph.remove(if_node)
            graph.sort()
            sunk += 1
            moved += len(tail)
        return sunk, moved
