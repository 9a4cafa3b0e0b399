"""IR core: use-def links stay right after every mutation."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.ir import Graph, Node, Shape, TensorType, Value, captured_values, node_reads
from edgec.ir.parser import parse_graph
from edgec.ir.types import DataType

F32 = TensorType(DataType.FLOAT, Shape((2,)))


def chain() -> tuple[Graph, Value, Node, Node, Node]:
    g = Graph("g")
    x = g.add_input(Value("x", F32))
    a = g.append(Node("Relu", [x], outputs=[Value("a")]))
    b = g.append(Node("Neg", [a.output], outputs=[Value("b")]))
    c = g.append(Node("Add", [a.output, b.output], outputs=[Value("c")]))
    g.outputs.append(c.output)
    return g, x, a, b, c


def test_construction_records_uses_and_producers():
    g, x, a, b, c = chain()
    assert x.uses() == [(a, 0)]
    assert a.output.uses() == [(b, 0), (c, 0)]
    assert a.output.producer() is a and a.output.index == 0
    assert b.output.consumers() == [c]
    assert x.is_graph_input() and c.output.is_graph_output()


def test_set_input_moves_the_use():
    g, x, a, b, c = chain()
    c.set_input(1, x)
    assert (c, 1) in x.uses() and b.output.uses() == []
    c.set_input(1, None)
    assert c.inputs[1] is None and (c, 1) not in x.uses()


def test_replace_all_uses_with():
    g, x, a, b, c = chain()
    a.output.replace_all_uses_with(x)
    assert a.output.uses() == []
    assert set(x.uses()) == {(a, 0), (b, 0), (c, 0)}
    assert b.inputs[0] is x and c.inputs[0] is x


def test_replace_value_keeps_graph_output_names():
    g, x, a, b, c = chain()
    g.replace_value(c.output, b.output)
    assert g.outputs == [b.output] and b.output.name == "c"
    assert c.output.name != "c"
    # A graph input cannot be renamed: an Identity keeps the output's name.
    g2, x2, *_ = chain()
    g2.replace_value(g2.outputs[0], x2)
    out = g2.outputs[0]
    assert out.name == "c" and out.producer().op_type == "Identity"
    assert out.producer().inputs[0] is x2 and x2.name == "x"


def test_hand_over_outputs_gives_every_slot_and_the_name_to_the_new_value():
    g, x, a, b, c = chain()
    g.outputs.append(c.output)  # returned twice
    cast = g.append(Node("Cast", [c.output], attributes={"to": 1}, outputs=[Value("t")]))
    g.hand_over_outputs(c.output, cast.output, "_fp16")
    assert g.outputs == [cast.output, cast.output] and cast.output.name == "c"
    assert c.output.name == "c_fp16" and not c.output.is_returned()
    assert c.output.uses() == [(cast, 0)]  # its readers still read it
    assert set(cast.output.returned_by()) == {(g, 0), (g, 1)}
    g.hand_over_outputs(a.output, x, "_unused")  # not returned: nothing changes
    assert a.output.name == "a" and x.name == "x"


def test_insert_before_and_after_keep_order_and_links():
    g, x, a, b, c = chain()
    before = Node("Abs", [x], outputs=[Value("p")])
    after = Node("Exp", [a.output], outputs=[Value("q")])
    g.insert_before(a, before)
    g.insert_after(a, after)
    assert [n.op_type for n in g] == ["Abs", "Relu", "Exp", "Neg", "Add"]
    assert (before, 0) in x.uses() and (after, 0) in a.output.uses()
    assert before.graph is g and len(g) == 5


def test_safe_remove_refuses_used_or_output_values():
    g, x, a, b, c = chain()
    with pytest.raises(ValueError, match="still used"):
        g.remove(a)
    with pytest.raises(ValueError, match="graph output"):
        g.remove(c)
    g.outputs[0] = b.output
    g.remove(c)
    assert c.is_erased() and c.graph is None
    assert a.output.uses() == [(b, 0)] and b.output.uses() == []
    g.remove(a, safe=False)  # leaves b reading a dangling value, on purpose
    assert x.uses() == [] and len(g) == 1


def test_removing_the_current_node_while_iterating():
    g, x, a, b, c = chain()
    g.outputs.clear()
    seen = []
    for node in reversed(list(g)):
        g.remove(node)
    g, x, a, b, c = chain()
    g.outputs.clear()
    for node in g:
        seen.append(node.op_type)
        g.remove(node, safe=False)
    assert seen == ["Relu", "Neg", "Add"] and len(g) == 0


def test_removing_the_next_node_while_iterating():
    g, x, a, b, c = chain()
    g.outputs.clear()
    seen = []
    for node in g:
        seen.append(node.op_type)
        if node is a:
            g.remove(b, safe=False)
    assert seen == ["Relu", "Add"]


def test_moving_a_node():
    g, x, a, b, c = chain()
    g.remove(c, safe=False)
    g.insert_before(a, c)
    c.set_inputs([a.output, b.output])
    assert [n.op_type for n in g] == ["Add", "Relu", "Neg"]
    assert not g.is_sorted()
    g.sort()
    assert [n.op_type for n in g] == ["Relu", "Neg", "Add"] and g.is_sorted()
    assert a.output.uses() == [(b, 0), (c, 0)]


def test_moving_a_node_while_iterating_visits_each_once():
    g, x, a, b, c = chain()
    seen = []
    for node in g:
        seen.append(node.op_type)
        if node is a:
            g.remove(a, safe=False)
            g.insert_after(c, a)
    # The iterator moves on from where the node was; the moved node comes again.
    assert seen == ["Relu", "Neg", "Add", "Relu"]
    assert [n.op_type for n in g] == ["Neg", "Add", "Relu"]


def test_sort_detects_cycles():
    g, x, a, b, c = chain()
    a.set_input(0, c.output)
    with pytest.raises(ValueError, match="cycle"):
        g.sort()


def test_subgraph_reads_of_outer_values_are_uses():
    g = parse_graph("""
    graph @main(%c: bool, %x: f32[2]) -> (%y) {
      %a = Relu(%x)
      %y = If(%c) {
        then_branch = graph @t() -> (%t) {
          %t = Neg(%a)
        },
        else_branch = graph @e() -> (%a) {
        }
      }
    }
    """)
    relu, if_node = g.nodes
    neg = if_node.attr("then_branch").nodes[0]
    assert (neg, 0) in relu.output.uses()
    # ... so replace_all_uses_with reaches into the body, and sort() sees the dependency.
    x = g.inputs[1]
    relu.output.replace_all_uses_with(x)
    assert neg.inputs[0] is x
    g2 = parse_graph("""
    graph @main(%c: bool, %x: f32[2]) -> (%y) {
      %y = If(%c) {
        then_branch = graph @t() -> (%t) {
          %t = Neg(%a)
        },
        else_branch = graph @e() -> (%x) {
        }
      }
      %a = Relu(%x)
    }
    """)
    assert not g2.is_sorted()
    g2.sort()
    assert [n.op_type for n in g2] == ["Relu", "If"]


def test_unique_name_avoids_every_name_in_the_model_scope():
    g, x, a, b, c = chain()
    assert g.unique_name("fresh") == "fresh"
    assert g.unique_name("fresh") != "fresh"
    name = g.unique_name("a")
    assert name not in {"x", "a", "b", "c", "fresh"}
    sub = Graph("body", inputs=[Value("inner", F32)])
    node = Node("If", [x], attributes={"then_branch": sub}, outputs=[Value("z")])
    g.append(node)
    g.invalidate_names()
    assert sub.unique_name("inner") != "inner"
    assert g.unique_name("inner") != "inner"


def test_make_constant_and_unnamed_outputs_get_names():
    g, x, *_ = chain()
    k = g.make_constant(np.ones(2, np.float32))
    assert k.is_initializer() and k.is_constant() and k.name == "const"
    n = g.append(Node("Mul", [x, k]))
    assert n.output.name == "mul_out"
    omitted = g.append(Node("Split", [x], outputs=[Value("s0"), Value("")]))
    assert omitted.outputs[1].name == ""


# --------------------------------------------------------------------------- graph outputs


def test_graph_output_slots_are_recorded_on_values_through_every_list_change():
    g, x, a, b, c = chain()
    assert c.output.returned_by() == [(g, 0)] and c.output.is_graph_output()
    assert not b.output.is_returned() and not b.output.is_graph_output()
    g.outputs.append(b.output)
    g.outputs.insert(0, a.output)
    assert g.outputs == [a.output, c.output, b.output]
    assert [v.returned_by() for v in g.outputs] == [[(g, 0)], [(g, 1)], [(g, 2)]]
    g.outputs[1] = a.output  # the same value in two slots
    assert a.output.returned_by() == [(g, 0), (g, 1)] and not c.output.is_returned()
    del g.outputs[0]
    assert a.output.returned_by() == [(g, 0)] and b.output.returned_by() == [(g, 1)]
    assert g.outputs.pop() is b.output and not b.output.is_returned()
    g.outputs.remove(a.output)
    assert g.outputs == [] and not a.output.is_returned()
    g.outputs = [c.output, b.output]
    g.outputs.reverse()
    assert b.output.returned_by() == [(g, 0)] and c.output.returned_by() == [(g, 1)]
    g.outputs[:] = [x]
    assert x.returned_by() == [(g, 0)] and not b.output.is_returned() and not c.output.is_returned()
    g.outputs += [a.output]
    g.outputs *= 2
    assert x.returned_by() == [(g, 0), (g, 2)] and a.output.returned_by() == [(g, 1), (g, 3)]
    g.outputs *= 0
    assert not x.is_returned() and not a.output.is_returned()
    g.outputs.append(x)
    g.outputs.clear()
    assert not x.is_returned()
    built = Graph("h", inputs=[Value("y", F32)], outputs=[x])
    assert x.returned_by() == [(built, 0)]
    with pytest.raises(IndexError):
        built.outputs[3] = x


IF_RETURNING_OUTER = """
graph @main(%c: bool, %x: f32[2]) -> (%y, %a) {
  %a = Relu(%x)
  %y = If(%c) {
    then_branch = graph @t() -> (%t) {
      %t = Neg(%a)
    },
    else_branch = graph @e() -> (%a) {
    }
  }
}
"""


def test_a_subgraph_returning_an_outer_value_is_recorded_on_it():
    g = parse_graph(IF_RETURNING_OUTER)
    relu, if_node = g.nodes
    then_branch, else_branch = if_node.attr("then_branch"), if_node.attr("else_branch")
    a = relu.output
    assert set(a.returned_by()) == {(g, 1), (else_branch, 0)}
    assert a.is_graph_output() and a.is_returned()
    t = then_branch.outputs[0]
    assert t.returned_by() == [(then_branch, 0)] and t.is_graph_output()
    # Returning an outer value is a read of it, as a node's use is.
    assert a in captured_values(else_branch) and a in captured_values(then_branch)
    assert [v for v in node_reads(if_node) if v is not None] == [g.inputs[0], a, a]


def test_replace_all_uses_with_retargets_subgraph_returns_and_keeps_the_interface():
    g = parse_graph(IF_RETURNING_OUTER)
    relu, if_node = g.nodes
    else_branch = if_node.attr("else_branch")
    x = g.inputs[1]
    relu.output.replace_all_uses_with(x)
    # The else branch returned %a from the enclosing scope: that slot follows the value;
    # the main graph's own output slot is interface and stays until asked.
    assert else_branch.outputs[0] is x and (else_branch, 0) in x.returned_by()
    assert g.outputs[1] is relu.output and relu.output.returned_by() == [(g, 1)]
    relu.output.replace_all_uses_with(x, replace_graph_outputs=True)
    assert g.outputs[1] is x and not relu.output.is_returned()
    g.remove(relu)
    assert [n.op_type for n in g] == ["If"]


def test_replace_value_of_a_graph_output_keeps_its_name_and_reaches_subgraphs():
    g = parse_graph(IF_RETURNING_OUTER)
    relu, if_node = g.nodes
    else_branch = if_node.attr("else_branch")
    abs_node = Node("Abs", [g.inputs[1]], outputs=[Value("m")])
    g.insert_before(relu, abs_node)
    g.replace_value(relu.output, abs_node.output)
    assert g.outputs[1] is abs_node.output and abs_node.output.name == "a"
    assert else_branch.outputs[0] is abs_node.output
    assert set(abs_node.output.returned_by()) == {(g, 1), (else_branch, 0)}
    assert relu.output.name != "a" and not relu.output.is_returned()
    g.remove(relu)


def test_removing_a_node_whose_output_a_graph_returns_is_refused():
    g = parse_graph(IF_RETURNING_OUTER)
    relu, if_node = g.nodes
    neg = if_node.attr("then_branch").nodes[0]
    neg.set_input(0, g.inputs[1])  # %a: no node reads it any more, but two graphs return it
    with pytest.raises(ValueError, match="is a graph output of graph '(main|e)', graph '(main|e)'"):
        g.remove(relu)
    g.outputs.pop()
    with pytest.raises(ValueError, match="graph output of graph 'e'"):
        g.remove(relu)
    # An unsafe removal leaves the slot holding the removed node's output, as it leaves uses.
    g.remove(relu, safe=False)
    assert if_node.attr("else_branch").outputs[0] is relu.output


def test_unused_initializers_that_a_subgraph_returns_are_kept():
    g = parse_graph("""
    graph @main(%c: bool, %x: f32[2]) -> (%y) {
      %y = If(%c) {
        then_branch = graph @t() -> (%x) {
        },
        else_branch = graph @e() -> (%x) {
        }
      }
    }
    """)
    w = g.make_constant(np.ones(2, np.float32), "w")
    if_node = g.nodes[0]
    for branch in if_node.subgraphs():
        branch.outputs[0] = w
    g.make_constant(np.zeros(2, np.float32), "dead")
    assert g.remove_unused_initializers() == 1
    assert list(g.initializers) == ["w"] and not w.has_uses() and w.is_returned()
