"""networkx analyses on small graphs: order, cycles, reachability, dominators."""

from __future__ import annotations

import networkx as nx
import pytest

from edgec.ir.analysis import (ENTRY, ancestors_of, find_cycle, immediate_dominators,
                               reachable_from, to_networkx, topological_order)
from edgec.ir.parser import parse_graph

DIAMOND = """
graph @g(%x: f32) -> (%d) {
  "a": %a = Relu(%x)
  "b": %b = Neg(%a)
  "c": %c = Exp(%a)
  "d": %d = Add(%b, %c)
}
"""


def by_name(graph):
    return {n.name: n for n in graph}


def test_topological_order_keeps_the_order_when_valid_and_fixes_it_otherwise():
    g = parse_graph(DIAMOND)
    assert [n.name for n in topological_order(g)] == ["a", "b", "c", "d"]
    g = parse_graph('graph @g(%x: f32) -> (%b) {\n "b": %b = Neg(%a)\n "a": %a = Relu(%x)\n}')
    assert [n.name for n in topological_order(g)] == ["a", "b"]


def test_find_cycle():
    assert find_cycle(parse_graph(DIAMOND)) == []
    g = parse_graph('graph @g(%x: f32) -> (%q) {\n "p": %p = Add(%x, %q)\n'
                    ' "q": %q = Neg(%p)\n "r": %r = Relu(%q)\n}')
    assert {n.name for n in find_cycle(g)} == {"p", "q"}
    with pytest.raises(nx.NetworkXUnfeasible):
        topological_order(g)


def test_reachability_and_ancestors():
    g = parse_graph(DIAMOND)
    n = by_name(g)
    assert reachable_from(g, n["a"]) == {n["b"], n["c"], n["d"]}
    assert reachable_from(g, n["d"]) == set()
    assert ancestors_of(g, n["d"]) == {n["a"], n["b"], n["c"]}


def test_dominators():
    g = parse_graph(DIAMOND)
    n = by_name(g)
    idom = immediate_dominators(g)
    assert idom[n["a"]] == ENTRY
    assert idom[n["b"]] is n["a"] and idom[n["c"]] is n["a"]
    assert idom[n["d"]] is n["a"]  # the diamond is a single-entry region from a to d


def test_dominators_with_two_entries():
    g = parse_graph('graph @g(%x: f32, %y: f32) -> (%s) {\n "a": %a = Relu(%x)\n'
                    ' "b": %b = Relu(%y)\n "s": %s = Add(%a, %b)\n}')
    n = by_name(g)
    assert immediate_dominators(g)[n["s"]] == ENTRY


def test_subgraph_captures_are_edges_of_the_owning_node():
    g = parse_graph("""
    graph @g(%c: bool, %x: f32) -> (%y) {
      "a": %a = Relu(%x)
      "if": %y = If(%c) {
        then_branch = graph @t() -> (%t) {
          %t = Neg(%a)
        },
        else_branch = graph @e() -> (%x) {
        }
      }
    }
    """)
    n = by_name(g)
    view = to_networkx(g)
    assert view.has_edge(n["a"], n["if"])
    assert reachable_from(g, n["a"]) == {n["if"]}
