"""Apply rewrite rules to a graph until none matches, with a worklist.

Rules are indexed by their root op type, so a node is only tried against the rules
that could start at it; after a rewrite only the new nodes and their readers go back
on the worklist. No rule ever rescans the whole graph: the cost is linear in the
number of nodes times the (small, fixed) size of the patterns.

A match is legal for the driver when every node it covers, except the root, has all
its outputs read only inside the match (the rewrite removes them: another reader
would keep them alive and the rewrite would duplicate work instead of removing it)
and returned by no graph. The rule's ``check`` then decides the rest.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edgec.ir.core import Attr, Graph, Model, Node, Value
from edgec.rewrite.pattern import Match, Op


class Builder:
    """Creates the nodes and constants of a rewrite, placed just before the match's root."""

    def __init__(self, graph: Graph, anchor: Node, model: Model):
        self.graph = graph
        self.model = model
        self.anchor = anchor
        self.created: list[Node] = []

    def op(self, op_type: str, inputs: Sequence[Value | None], attributes: dict[str, Any] | None = None,
           *, domain: str = "", name: str = "", type: Any = None) -> Value:
        if not name and self.anchor.name:
            name = f"{self.anchor.name}/{op_type}" if op_type != self.anchor.op_type else self.anchor.name
        node = Node(op_type, inputs, domain=domain, attributes=_attrs(attributes or {}), name=name)
        if type is not None:
            node.outputs[0].type = type
        self.graph.insert_before(self.anchor, node)
        self.created.append(node)
        return node.outputs[0]

    def constant(self, array: np.ndarray, name: str) -> Value:
        return self.graph.make_constant(np.ascontiguousarray(array), name)


def _attrs(attributes: dict[str, Any]) -> list[Attr]:
    return [a if isinstance(a, Attr) else Attr.infer(k, a) for k, a in attributes.items()]


Check = Callable[[Match, Model], "str | None"]
Rewrite = Callable[[Match, Builder], "Sequence[Value] | Value"]


@dataclass(frozen=True)
class Rule:
    """``pattern`` / ``check`` / ``rewrite``: a named, legal-only graph rewrite.

    ``check(match, model)`` returns None when the rewrite is legal, else the reason it
    is not. ``rewrite(match, builder)`` builds the replacement and returns the values
    that replace the root's outputs, in order (a single value for one output).
    ``shared_ok`` names pattern nodes whose outputs may have readers outside the
    match: the rewrite keeps them, so duplicating them is the point (or harmless).
    """

    name: str
    pattern: Op
    check: Check
    rewrite: Rewrite
    shared_ok: tuple[str, ...] = ()
    doc: str = ""


@dataclass
class RewriteDriver:
    """Runs ``rules`` over graphs; ``counts`` says how often each rule fired."""

    rules: Sequence[Rule]
    model: Model
    counts: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    max_rewrites_per_node: int = 8

    def run(self, graph: Graph) -> int:
        """Rewrite ``graph`` (not its subgraphs) to a fixed point; returns the rewrites made."""
        by_op: dict[str, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            by_op[rule.pattern.op_type].append(rule)
        # Last nodes first: a pattern is rooted at its last node, so the largest match
        # (LayerNorm with its γ and β, not the bare normalisation) is tried first.
        worklist: deque[Node] = deque(n for n in reversed(graph) if n.op_type in by_op)
        queued = {id(n) for n in worklist}
        budget = self.max_rewrites_per_node * (len(worklist) + 1)
        made = 0
        while worklist and made < budget:
            node = worklist.popleft()
            queued.discard(id(node))
            if node.graph is not graph:
                continue
            for rule in by_op.get(node.op_type, ()):
                match = rule.pattern.match(node)
                if match is None:
                    continue
                reason = self._structural_reason(match, rule, graph)
                if reason is None:
                    reason = rule.check(match, self.model)
                if reason is not None:
                    self.rejected[f"{rule.name}: {reason}"] += 1
                    continue
                touched = self._apply(match, rule, graph, self.model)
                made += 1
                self.counts[rule.name] += 1
                for n in touched:
                    if n.graph is graph and id(n) not in queued and n.op_type in by_op:
                        worklist.append(n)
                        queued.add(id(n))
                break
        return made

    @staticmethod
    def _structural_reason(match: Match, rule: Rule, graph: Graph) -> str | None:
        covered = {id(n) for n in match.covered}
        shared = {id(match.nodes[k]) for k in rule.shared_ok if k in match.nodes}
        for node in match.covered:
            if node.graph is not graph:
                return "the match spans graphs"
            if node.subgraphs():
                return "a matched node has subgraphs"
            # The root's outputs are replaced (`Graph.replace_value`), returns included.
            if node is match.root or id(node) in shared:
                continue
            for out in node.outputs:
                if out.is_returned():
                    return f"'{out.name}' is a graph output"
                if any(id(reader) not in covered for reader in out.consumers()):
                    return f"'{out.name}' has readers outside the match"
        return None

    @staticmethod
    def _apply(match: Match, rule: Rule, graph: Graph, model: Model) -> list[Node]:
        root = match.root
        builder = Builder(graph, root, model)
        replacements = rule.rewrite(match, builder)
        if isinstance(replacements, Value):
            replacements = [replacements]
        touched: list[Node] = list(builder.created)
        for old, new in zip(root.outputs, replacements):
            if new.type is None and old.type is not None:
                new.type = old.type
            touched.extend(old.consumers())
            graph.replace_value(old, new)
            touched.extend(new.consumers())
            producer = new.producer()
            if producer is not None:
                touched.append(producer)
        # Readers before producers; a pattern that reads one value twice (softmax's Exp,
        # read by the sum and the division) can free a node only after a later one goes.
        pending = list({id(n): n for n in reversed(match.covered)}.values())
        while True:
            dead = [n for n in pending if n.graph is graph
                    and not any(o.has_uses() or o.is_returned() for o in n.outputs)]
            if not dead:
                return touched
            for node in dead:
                for v in node.inputs:
                    if v is not None and v.producer() is not None:
                        touched.append(v.producer())
                graph.remove(node)
                pending.remove(node)


def replaceable_by(result: Value, x: Value) -> str | None:
    """Why ``result`` cannot simply become the existing value ``x``, or None: a graph
    output can take over x's name only when x is an ordinary intermediate value of the
    same graph (otherwise an Identity would be needed, which saves nothing)."""
    if result.is_graph_output() and (x.producer() is None or x.is_graph_output()
                                     or x.graph is not result.graph):
        return "the result is a graph output that the input cannot stand in for"
    return None
